//! The conv layer's work geometry: padded sizes, pixel tiles, channel blocks, and the byte
//! ranges each dispatch of the repack (`conv_pack.wgsl`) and conv (`conv2d_gemm.wgsl`,
//! `conv2d_dw.wgsl`) kernels touches, so that [`super::split::plan`] can cut the work into
//! dispatches that fit the binding limits. Pure integer logic, no wgpu calls, tested on the
//! CPU (unit tests and proptests below).

use crate::error::{Error, Result};
use crate::quant::QDtype;
use crate::shape::ConvShape;

/// Bytes of one quad (16 channel slots).
pub(crate) const QUAD: u64 = 16;

/// vec4s of one output channel's epilogue table (see `epilogue_table` in `ops.rs`).
pub(crate) const TABLE_VEC4: u64 = 66;

/// Upper bound of the repacked-input scratch buffer of one conv call (buffer mode), unless a
/// single image needs more.
pub(crate) const SCRATCH_CAP: u64 = 256 << 20;

/// Quad indices must stay below this (the kernels' index arithmetic is u32, with headroom).
const MAX_QUAD_INDEX: u64 = u32::MAX as u64 / 2;

/// Output pixels of one conv invocation (a pixel tile).
pub(crate) const PIXELS_PER_TILE: u64 = 4;

/// Output channels of one channel block.
pub(crate) const CHANNELS_PER_BLOCK: u64 = 8;

/// Which conv kernel a layer uses, with the GEMM kernel's weight layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConvKernelLayout {
    /// `conv2d_gemm.wgsl`: `quads_per_group` quads per group and tap, `k_quads` quads per
    /// output channel, `blocks_per_group` channel blocks of 8 per group.
    Gemm {
        quads_per_group: u64,
        k_quads: u64,
        blocks_per_group: u64,
    },
    /// `conv2d_dw.wgsl`: one input channel per group.
    Depthwise,
}

/// The integer geometry of one conv call (see [`ConvGeometry::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    pub layout: ConvKernelLayout,
    /// Input height and width.
    pub h: u64,
    pub w: u64,
    /// Zero padding rows (top and bottom each) and columns (left and right each).
    pub pad_h: u64,
    pub pad_w: u64,
    /// Padded input height and width.
    pub padded_h: u64,
    pub padded_w: u64,
    pub c_in: u64,
    pub c_out: u64,
    pub groups: u64,
    pub c_in_per_group: u64,
    pub c_out_per_group: u64,
    pub kh: u64,
    pub kw: u64,
    pub stride_h: u64,
    pub stride_w: u64,
    pub dilation_h: u64,
    pub dilation_w: u64,
    /// Output pixels per image plane, and output width.
    pub plane_out: u64,
    pub w_out: u64,
    /// Pixel tiles (4 output pixels each) per output plane.
    pub pixel_tiles: u64,
    /// Packed input words per channel plane.
    pub plane_words_in: u64,
    /// Conv workgroup size (pixel tiles per workgroup).
    pub workgroup_size: u64,
    /// 8-channel blocks per workgroup (GEMM; 1 for depthwise): a workgroup's channel block
    /// holds up to `8 · blocks_per_wg` output channels of one group.
    pub blocks_per_wg: u64,
    /// Workgroups per (image, channel block): the pixel tiles of a plane in workgroups.
    pub groups_per_plane: u64,
    /// Channel slots per group in the repacked input (16 per quad).
    pub slots_per_group: u64,
    /// Quads per padded input pixel.
    pub quads_per_pixel: u64,
    /// The workgroups' channel blocks over all groups (of up to `8 · blocks_per_wg` output
    /// channels of one group each).
    pub channel_blocks: u64,
    /// Weight vec4s of one 8-channel block.
    pub weight_vec4s_per_block: u64,
    /// The slice of the input channels this geometry covers: the whole layer unless the conv
    /// is split by its channels (see [`ConvGeometry::k_split_bands`]).
    pub k_slice: KSlice,
}

/// The tiled GEMM kernel splits K into parallel slices when a run has fewer workgroups than
/// this (and enough chunks). A GPU holds several workgroups per multiprocessor (an NVIDIA
/// H200 has 132), while one image of a 3x3 conv of 256 channels on 14x14 pixels is 16
/// workgroups of 18 chunks each, which run their K loops one chunk after another: on an
/// H200, 86 µs in the conv kernel unsplit, 22.5 µs in 9 slices (README, Benchmarks).
pub(crate) const PARALLEL_K_WORKGROUPS: u64 = 256;

/// The fewest chunks of K in an automatic parallel slice. Measured on an H200: slices of one
/// chunk ran that 3x3 256-channel conv in 38.5 µs against 31.6 µs for slices of two (layer
/// times), and a 3x3 64-channel conv on 56x56 pixels 7% faster.
pub(crate) const PARALLEL_K_MIN_CHUNKS: u64 = 2;

/// Parallel slices of K (see [`ConvGeometry::parallel_k`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KParallel {
    /// Slices per workgroup tile (at least 2).
    pub slices: u64,
    /// Quads per slice (a whole number of chunks; the last slice may hold fewer).
    pub slice_quads: u64,
}

impl KParallel {
    /// Bytes of the slices' partial sums for `images` images of `geometry`: a `vec4<i32>` per
    /// packed output word and slice.
    pub(crate) fn partial_bytes(&self, geometry: &ConvGeometry, images: u64) -> u64 {
        self.slices * images * geometry.c_out * geometry.pixel_tiles * 16
    }
}

/// A slice of the input channels, in whole quads of 16. GEMM: groups `[group_first, group_first
/// + groups)` of the layer's `all_groups` (the geometry's `groups`), each a conv of its own,
/// and in each a slice of the reduction, quads `[first, first + quads)` of each group's
/// `group_quads` quads per tap (input channels `16·first ..` of each group's
/// `group_channels`), at every tap; its repacked input holds `quads` quads per group and
/// pixel, and its conv reads the weights of those quads, skipping the others at each tap, and
/// adds partial sums when `quads < group_quads`. Depthwise: quads `[first, first + quads)` of
/// the `group_quads` quads per pixel (input channels `16·first ..` of `group_channels`), a conv
/// of its own on those channels and their output channels. Either way the slice's geometry
/// is that of a conv on its channels only, whose input is a copy of them (see
/// [`ConvGeometry::input_channel`]). The whole layer is `first = 0, quads = group_quads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KSlice {
    pub first: u64,
    pub quads: u64,
    pub group_quads: u64,
    pub group_channels: u64,
    /// GEMM: the slice's first group (0 for depthwise, whose slices count channels).
    pub group_first: u64,
    /// The layer's groups (depthwise: its input channels).
    pub all_groups: u64,
}

/// A band of output rows `[out_begin, out_end)` of one image, repacked and convolved on its
/// own when the image does not fit a binding (its repacked input, or its output): its conv
/// reads the padded input rows `[row_begin, row_begin + rows)`, the only ones the repack
/// writes, from a copy of the input rows they hold ([`BandInput`]), and writes its output
/// rows to a buffer of its own, copied into the output per channel (see
/// [`ConvGeometry::row_bands`]). Bands start at a multiple of 4 output pixels, so that each
/// one is whole packed output words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowBand {
    pub out_begin: u64,
    pub out_end: u64,
    /// First padded input row read.
    pub row_begin: u64,
    /// Padded input rows read.
    pub rows: u64,
}

/// The input rows of one [`RowBand`], copied out of the input tensor before the band is
/// repacked: per channel plane, the whole words `[first_byte, first_byte + 4·words)` of the
/// plane (copies must be 4-byte aligned), which hold the plane positions (`y·w + x`)
/// `[pos_begin, pos_end)` that the band's rows need (a few neighbours at either end are
/// copied too and skipped by the repack). The copy holds the channel planes one after the
/// other, `words` words each, so that one repack item's reads (one word of up to 16 channel
/// planes) span a window of the band's size rather than of the image's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BandInput {
    pub pos_begin: u64,
    pub pos_end: u64,
    pub first_byte: u64,
    pub words: u64,
}

impl ConvGeometry {
    /// The geometry of shape `s` run with `layout` and conv workgroups of `workgroup_size`
    /// pixel tiles by `blocks_per_wg` 8-channel blocks (GEMM only; depthwise workgroups have
    /// one block).
    pub(crate) fn new(
        s: &ConvShape,
        layout: ConvKernelLayout,
        workgroup_size: u32,
        blocks_per_wg: u32,
    ) -> Self {
        let p = &s.params;
        let (pad_h, pad_w) = (p.padding[0] as u64, p.padding[1] as u64);
        let (h, w) = (s.h as u64, s.w as u64);
        let c_in = s.c_in as u64;
        let c_out = s.c_out as u64;
        let groups = p.groups as u64;
        let c_in_per_group = s.c_in_per_group() as u64;
        let (kh, kw) = (s.kh as u64, s.kw as u64);
        let plane_out = (s.h_out * s.w_out) as u64;
        let pixel_tiles = plane_out.div_ceil(PIXELS_PER_TILE);
        let workgroup_size = workgroup_size as u64;
        let blocks_per_wg = match layout {
            ConvKernelLayout::Gemm { .. } => blocks_per_wg.max(1) as u64,
            ConvKernelLayout::Depthwise => 1,
        };
        let (slots_per_group, quads_per_pixel, channel_blocks, weight_vec4s_per_block, k_slice) =
            match layout {
                ConvKernelLayout::Gemm {
                    quads_per_group,
                    k_quads,
                    blocks_per_group,
                } => (
                    16 * quads_per_group,
                    groups * quads_per_group,
                    groups * blocks_per_group.div_ceil(blocks_per_wg),
                    k_quads * 8,
                    KSlice {
                        first: 0,
                        quads: quads_per_group,
                        group_quads: quads_per_group,
                        group_channels: c_in_per_group,
                        group_first: 0,
                        all_groups: groups,
                    },
                ),
                ConvKernelLayout::Depthwise => (
                    c_in_per_group,
                    c_in.div_ceil(16),
                    c_out.div_ceil(CHANNELS_PER_BLOCK),
                    kh * kw,
                    KSlice {
                        first: 0,
                        quads: c_in.div_ceil(16),
                        group_quads: c_in.div_ceil(16),
                        group_channels: c_in,
                        group_first: 0,
                        all_groups: c_in,
                    },
                ),
            };
        ConvGeometry {
            layout,
            h,
            w,
            pad_h,
            pad_w,
            padded_h: h + 2 * pad_h,
            padded_w: w + 2 * pad_w,
            c_in,
            c_out,
            groups,
            c_in_per_group,
            c_out_per_group: s.c_out_per_group() as u64,
            kh,
            kw,
            stride_h: p.stride[0] as u64,
            stride_w: p.stride[1] as u64,
            dilation_h: p.dilation[0] as u64,
            dilation_w: p.dilation[1] as u64,
            plane_out,
            w_out: s.w_out as u64,
            pixel_tiles,
            plane_words_in: (h * w).div_ceil(4),
            workgroup_size,
            blocks_per_wg,
            groups_per_plane: pixel_tiles.div_ceil(workgroup_size),
            slots_per_group,
            quads_per_pixel,
            channel_blocks,
            weight_vec4s_per_block,
            k_slice,
        }
    }

    /// The geometry of the slice of `ng` groups from `g0` and, in each, `quads` quads from
    /// `first` (GEMM; depthwise: of `quads` quads of channels from `first`, the groups
    /// unused): a conv on those quads' input channels (up to `16 · quads` per group), whose
    /// repacked input has `quads` quads per group and pixel, whose kernel walks
    /// `kh · kw · quads` quads, and whose workgroups cover the slice's groups' channel blocks;
    /// the weights stay those of the whole layer. `self` is the whole layer's geometry.
    pub(crate) fn slice(&self, (g0, ng): (u64, u64), (first, quads): (u64, u64)) -> ConvGeometry {
        let ConvKernelLayout::Gemm {
            quads_per_group,
            blocks_per_group,
            ..
        } = self.layout
        else {
            return self.channel_slice(first, quads);
        };
        debug_assert!(quads >= 1 && first + quads <= quads_per_group);
        debug_assert!(ng >= 1 && g0 + ng <= self.groups);
        let whole = self.k_slice.group_channels;
        let c_in_per_group = (16 * quads).min(whole - 16 * first);
        ConvGeometry {
            c_in: ng * c_in_per_group,
            c_in_per_group,
            groups: ng,
            layout: ConvKernelLayout::Gemm {
                quads_per_group: quads,
                k_quads: self.kh * self.kw * quads,
                blocks_per_group,
            },
            slots_per_group: 16 * quads,
            quads_per_pixel: ng * quads,
            channel_blocks: ng * (self.channel_blocks / self.groups),
            k_slice: KSlice {
                first,
                quads,
                group_quads: quads_per_group,
                group_channels: whole,
                group_first: g0,
                all_groups: self.groups,
            },
            ..*self
        }
    }

    /// The geometry of the depthwise conv on input quads `[first, first + quads)` (input
    /// channels `16·first ..`) and their output channels: its workgroups cover only those
    /// channels' blocks (see [`ConvGeometry::out_channels`]).
    fn channel_slice(&self, first: u64, quads: u64) -> ConvGeometry {
        let whole = self.k_slice.group_channels;
        debug_assert!(quads >= 1 && 16 * (first + quads) < whole + 16);
        let c_in = (16 * quads).min(whole - 16 * first);
        ConvGeometry {
            c_in,
            groups: c_in,
            slots_per_group: 1,
            quads_per_pixel: quads,
            channel_blocks: (c_in * self.c_out_per_group).div_ceil(CHANNELS_PER_BLOCK),
            k_slice: KSlice {
                first,
                quads,
                group_quads: self.k_slice.group_quads,
                group_channels: whole,
                group_first: 0,
                all_groups: whole,
            },
            ..*self
        }
    }

    /// Whether this geometry covers only a slice of the input channels.
    pub(crate) fn is_k_sliced(&self) -> bool {
        self.k_slice.quads < self.k_slice.group_quads || self.groups < self.k_slice.all_groups
    }

    /// Whether this GEMM geometry sums only part of each group's K (its conv adds partial
    /// sums between slices).
    pub(crate) fn sums_partially(&self) -> bool {
        matches!(self.layout, ConvKernelLayout::Gemm { .. })
            && self.k_slice.quads < self.k_slice.group_quads
    }

    /// The output channels `[lo, hi)` this geometry computes: all of them, or a depthwise
    /// slice's (its input channels' outputs; `16·first·m` is a whole number of 8-channel
    /// blocks, so slices share no block).
    pub(crate) fn out_channels(&self) -> (u64, u64) {
        match self.layout {
            ConvKernelLayout::Depthwise if self.is_k_sliced() => {
                let m = self.c_out_per_group;
                let lo = 16 * self.k_slice.first * m;
                (lo, lo + self.c_in * m)
            }
            _ => (0, self.c_out),
        }
    }

    /// The layer's input channel that this geometry's input channel `j` is: `j` itself, or
    /// for a K slice, its `j % c_in_per_group`-th channel of group `j / c_in_per_group`.
    pub(crate) fn input_channel(&self, j: u64) -> u64 {
        if !self.is_k_sliced() {
            return j;
        }
        if self.layout == ConvKernelLayout::Depthwise {
            return 16 * self.k_slice.first + j;
        }
        let g = self.k_slice.group_first + j / self.c_in_per_group;
        g * self.k_slice.group_channels + 16 * self.k_slice.first + j % self.c_in_per_group
    }

    /// The row bands of one image (as [`ConvGeometry::row_bands`]) and, when even the
    /// fewest rows do not fit `limits`, the split of the input channels that makes them fit
    /// ([`KSlice`]): the geometries of the slices (one, the whole layer, when no split is
    /// needed), and the bands of the widest slice, which every slice runs. GEMM: the most
    /// whole groups per slice that fit (convs of their own), else slices of every group's
    /// quads, else of one group's quads at a time; those keep 4-byte partial sums per output
    /// value between the slices of a group, bound as windows 4 times the output's, so the
    /// output span allowed is a quarter of `limits.output_bytes`. Depthwise: slices of its
    /// quads of channels. A single quad of a single group cannot be split: its error is that
    /// of the row bands.
    pub(crate) fn k_split_bands(
        &self,
        limits: BandLimits,
    ) -> Result<(Vec<ConvGeometry>, Vec<RowBand>)> {
        let err = match self.row_bands(limits.quads, limits.output_bytes) {
            Ok(bands) => return Ok((vec![*self], bands)),
            Err(e) => e,
        };
        let (groups, quads) = match self.layout {
            ConvKernelLayout::Gemm { .. } => (self.groups, self.k_slice.group_quads),
            ConvKernelLayout::Depthwise => (1, self.k_slice.group_quads),
        };
        // The bands of the slice of `ng` groups × `nq` quads, partial sums bound as windows 4
        // times the output's when it sums part of each group's K.
        let bands_of = |ng: u64, nq: u64| {
            let slice = self.slice((0, ng), (0, nq));
            let out = match slice.sums_partially() {
                true => limits.output_bytes / 4,
                false => limits.output_bytes,
            };
            slice.row_bands(limits.quads, out)
        };
        // The largest n in [1, max] for which `fits(n)` (false for larger n than any that
        // fails), if any.
        let largest = |max: u64, fits: &dyn Fn(u64) -> bool| {
            if !fits(1) {
                return None;
            }
            let (mut lo, mut hi) = (1, max);
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if fits(mid) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            Some(lo)
        };
        // Whole groups first (convs of their own, no partial sums), then slices of K with
        // every group or, failing that, one group at a time.
        let whole_groups = (groups > 1)
            .then(|| largest(groups - 1, &|ng| bands_of(ng, quads).is_ok()))
            .flatten()
            .map(|ng| (ng, quads));
        let quads_of = |ng: u64| {
            (quads > 1)
                .then(|| largest(quads - 1, &|nq| bands_of(ng, nq).is_ok()))
                .flatten()
                .map(|nq| (ng, nq))
        };
        let Some((ng, nq)) = whole_groups
            .or_else(|| quads_of(groups))
            .or_else(|| (groups > 1).then(|| quads_of(1)).flatten())
        else {
            return Err(err);
        };
        let mut slices = Vec::new();
        for g0 in (0..groups).step_by(ng as usize) {
            for q0 in (0..quads).step_by(nq as usize) {
                slices.push(self.slice((g0, ng.min(groups - g0)), (q0, nq.min(quads - q0))));
            }
        }
        Ok((slices, bands_of(ng, nq)?))
    }

    /// Padded input rows read by output rows `[out_begin, out_end)` (non-empty): from row
    /// `out_begin · stride_h`, `(out_end − 1 − out_begin) · stride_h + (kh − 1) · dilation_h + 1`
    /// rows.
    fn rows_read(&self, out_begin: u64, out_end: u64) -> (u64, u64) {
        let first = out_begin * self.stride_h;
        let last = (out_end - 1) * self.stride_h + (self.kh - 1) * self.dilation_h;
        (first, last + 1 - first)
    }

    /// Packed output bytes that one conv workgroup's writes span for `rows` output rows of
    /// one image: a pixel tile in each plane of a channel block.
    pub(crate) fn output_span_bytes(&self, rows: u64) -> u64 {
        let planes = self.c_out.min(CHANNELS_PER_BLOCK * self.blocks_per_wg);
        planes * (rows * self.w_out).div_ceil(PIXELS_PER_TILE) * 4
    }

    /// Output rows of one band: the most whose repacked input fits `max_quads` quads and
    /// whose output span ([`ConvGeometry::output_span_bytes`]) fits `max_out_bytes`, a
    /// multiple of `4 / gcd(w_out, 4)` (so that each band starts on a packed output word), cut
    /// into bands covering the output plane. A band of that minimum that does not fit is a
    /// [`Error::DeviceLimit`].
    pub(crate) fn row_bands(&self, max_quads: u64, max_out_bytes: u64) -> Result<Vec<RowBand>> {
        let h_out = self.plane_out / self.w_out;
        let unit = 4 / gcd(self.w_out, 4);
        let row_quads = self.padded_w * self.quads_per_pixel;
        let quads = |r: u64| self.rows_read(0, r.min(h_out)).1 * row_quads;
        let fits =
            |r: u64| quads(r) <= max_quads && self.output_span_bytes(r.min(h_out)) <= max_out_bytes;
        if !fits(unit) {
            let rows = unit.min(h_out);
            return Err(Error::DeviceLimit(format!(
                "conv: {rows} output rows need {} repacked quads and output windows of {} \
                 bytes, more than the {max_quads} quads and {max_out_bytes} bytes of a binding",
                quads(rows),
                self.output_span_bytes(rows)
            )));
        }
        // The rows read grow with the band: find the largest multiple of `unit` that fits.
        let (mut lo, mut hi) = (1, h_out.div_ceil(unit));
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(mid * unit) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let per_band = lo * unit;
        Ok((0..h_out)
            .step_by(per_band as usize)
            .map(|out_begin| {
                let out_end = (out_begin + per_band).min(h_out);
                let (row_begin, rows) = self.rows_read(out_begin, out_end);
                RowBand {
                    out_begin,
                    out_end,
                    row_begin,
                    rows,
                }
            })
            .collect())
    }

    /// The geometry of the conv of band `b` (of a one-image chunk): its repacked rows as the
    /// padded image, its output rows as the output plane (written to a buffer of its own,
    /// `pixel_tiles` words per channel, then copied into place from word
    /// [`ConvGeometry::band_output_word`] of each plane).
    pub(crate) fn band(&self, b: &RowBand) -> ConvGeometry {
        let plane_out = (b.out_end - b.out_begin) * self.w_out;
        let pixel_tiles = plane_out.div_ceil(PIXELS_PER_TILE);
        ConvGeometry {
            padded_h: b.rows,
            plane_out,
            pixel_tiles,
            groups_per_plane: pixel_tiles.div_ceil(self.workgroup_size),
            ..*self
        }
    }

    /// The packed output word of each plane where band `b`'s output starts.
    pub(crate) fn band_output_word(&self, b: &RowBand) -> u64 {
        b.out_begin * self.w_out / PIXELS_PER_TILE
    }

    /// The input of band `b`: the unpadded input rows its padded rows hold, copied per
    /// channel into a buffer of its own (see [`BandInput`]).
    pub(crate) fn band_input(&self, b: &RowBand) -> BandInput {
        let in_begin = b.row_begin.saturating_sub(self.pad_h).min(self.h);
        let in_end = (b.row_begin + b.rows)
            .saturating_sub(self.pad_h)
            .min(self.h);
        let first_byte = in_begin * self.w / 4 * 4;
        let end_byte = (in_end * self.w).div_ceil(4) * 4;
        BandInput {
            pos_begin: in_begin * self.w,
            pos_end: in_end * self.w,
            first_byte,
            // No rows of the input (a band of padding only): nothing to copy.
            words: if in_begin < in_end {
                (end_byte - first_byte) / 4
            } else {
                0
            },
        }
    }

    /// The repack items of band `b`, read from its [`BandInput`] (a one-image chunk whose
    /// channel planes are `input.words` words): interior items (every word of the band's
    /// input) and border items (the padding pixels of the band's rows), each a range of item
    /// indices, border items counted from `input.words · quads_per_pixel` as the shader
    /// numbers them.
    pub(crate) fn band_repack_items(&self, b: &RowBand, input: &BandInput) -> [(u64, u64); 2] {
        let qpp = self.quads_per_pixel;
        let (y0, y1) = (b.row_begin, b.row_begin + b.rows);
        // Border pixels are numbered row by row (`border_row` is non-decreasing): the first
        // whose row is at least y0, and the first at least y1.
        let nb = self.border_pixels();
        let first_at = |row: u64| {
            let (mut lo, mut hi) = (0, nb);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if self.border_row(mid) < row {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        let n_int = input.words * qpp;
        [
            (0, n_int),
            (n_int + first_at(y0) * qpp, n_int + first_at(y1) * qpp),
        ]
    }

    /// Byte ranges of the repack items `[begin, end)` of band `b` (as
    /// [`ConvGeometry::repack_ranges`]): the band input's words (all channel planes of the
    /// words read), and the band's quads of the padded rows written.
    pub(crate) fn band_repack_ranges(
        &self,
        b: &RowBand,
        input: &BandInput,
        begin: u64,
        end: u64,
    ) -> Vec<(u64, u64)> {
        let qpp = self.quads_per_pixel;
        let n_int = input.words * qpp;
        let row_of = |pos: u64| pos / self.w + self.pad_h;
        let clamp_pos = |pos: u64| pos.clamp(input.pos_begin, input.pos_end - 1);
        // Interior items: words k0..=k1 of every channel plane of the band input, written to
        // the padded rows of their positions; border items: their padding pixels' rows.
        let (mut x, mut rows) = ((0, 4), (u64::MAX, 0));
        if begin < n_int {
            let (k0, k1) = (begin / qpp, (end.min(n_int) - 1) / qpp);
            x = (k0 * 4, ((self.c_in - 1) * input.words + k1 + 1) * 4);
            rows = (
                row_of(clamp_pos(input.first_byte + 4 * k0)),
                row_of(clamp_pos(input.first_byte + 4 * k1 + 3)),
            );
        }
        if end > n_int {
            let (b0, b1) = (begin.max(n_int) - n_int, end - 1 - n_int);
            rows = (
                rows.0.min(self.border_row(b0 / qpp)),
                rows.1.max(self.border_row(b1 / qpp)),
            );
        }
        let row_quads = self.padded_w * qpp;
        let clamp = |r: u64| r.clamp(b.row_begin, b.row_begin + b.rows - 1) - b.row_begin;
        let quads = (clamp(rows.0) * row_quads, (clamp(rows.1) + 1) * row_quads);
        vec![x, (quads.0 * QUAD, quads.1 * QUAD)]
    }

    /// Quads of one repacked (padded) input image.
    pub(crate) fn quads_per_image(&self) -> u64 {
        self.padded_h * self.padded_w * self.quads_per_pixel
    }

    /// Conv workgroups per image (all channel blocks).
    pub(crate) fn workgroups_per_image(&self) -> u64 {
        self.channel_blocks * self.groups_per_plane
    }

    /// The parallel K slices of the tiled GEMM kernel for a run of `images` images with
    /// chunks of `tkq` quads (see `conv_gemm_common.wgsl`): `None` when the conv runs unsplit.
    ///
    /// `forced` asks for that many slices (at most one per chunk; 1 runs unsplit). Otherwise
    /// a conv with fewer than [`PARALLEL_K_WORKGROUPS`] workgroups is split into enough
    /// slices to reach that many, each of at least [`PARALLEL_K_MIN_CHUNKS`] chunks. The
    /// chunks are then shared out evenly, so that no slice is empty.
    pub(crate) fn parallel_k(
        &self,
        images: u64,
        tkq: u64,
        forced: Option<u32>,
    ) -> Option<KParallel> {
        let ConvKernelLayout::Gemm { k_quads, .. } = self.layout else {
            return None;
        };
        let chunks = k_quads.div_ceil(tkq.max(1));
        let workgroups = images * self.workgroups_per_image();
        let wanted = match forced {
            Some(n) => u64::from(n).min(chunks),
            None if workgroups == 0 || workgroups >= PARALLEL_K_WORKGROUPS => 1,
            None => PARALLEL_K_WORKGROUPS
                .div_ceil(workgroups)
                .min(chunks / PARALLEL_K_MIN_CHUNKS),
        };
        if wanted < 2 {
            return None;
        }
        let per_slice = chunks.div_ceil(wanted);
        Some(KParallel {
            slices: chunks.div_ceil(per_slice),
            slice_quads: per_slice * tkq,
        })
    }

    /// The 8-channel weight blocks `[lo, hi)` (GEMM; the block itself for depthwise) of
    /// (the workgroups') channel block `block`: those of its channels, consecutive.
    pub(crate) fn weight_blocks(&self, block: u64) -> (u64, u64) {
        match self.layout {
            ConvKernelLayout::Gemm {
                blocks_per_group, ..
            } => {
                let per_group = self.channel_blocks / self.groups;
                let (g, b) = (block / per_group, block % per_group);
                let g = g + self.k_slice.group_first;
                let first = g * blocks_per_group + b * self.blocks_per_wg;
                (
                    first,
                    first
                        + self
                            .blocks_per_wg
                            .min(blocks_per_group - b * self.blocks_per_wg),
                )
            }
            ConvKernelLayout::Depthwise => {
                let b = self.out_channels().0 / CHANNELS_PER_BLOCK + block;
                (b, b + 1)
            }
        }
    }

    /// The largest weight and epilogue-table windows (bytes, before alignment) of one
    /// workgroup's channel block: with several blocks per workgroup they may exceed a small
    /// binding where one block's would not.
    pub(crate) fn channel_window_bytes(&self) -> u64 {
        (0..self.channel_blocks)
            .map(|b| {
                let (wlo, whi) = self.weight_blocks(b);
                let (clo, chi) = self.block_channels(b);
                ((whi - wlo) * self.weight_vec4s_per_block).max((chi - clo) * TABLE_VEC4) * 16
            })
            .max()
            .unwrap_or(0)
    }

    /// Border (padding) pixels of one padded image.
    pub(crate) fn border_pixels(&self) -> u64 {
        self.padded_h * self.padded_w - self.h * self.w
    }

    /// Output channels `[lo, hi)` of (the workgroups') channel block `block`.
    pub(crate) fn block_channels(&self, block: u64) -> (u64, u64) {
        match self.layout {
            ConvKernelLayout::Gemm { .. } => {
                let per_group = self.channel_blocks / self.groups;
                let (g, b) = (block / per_group, block % per_group);
                let g = g + self.k_slice.group_first;
                let (base, width) = (
                    g * self.c_out_per_group,
                    CHANNELS_PER_BLOCK * self.blocks_per_wg,
                );
                (
                    base + b * width,
                    base + (b * width + width).min(self.c_out_per_group),
                )
            }
            ConvKernelLayout::Depthwise => {
                let (lo, hi) = self.out_channels();
                (
                    lo + block * CHANNELS_PER_BLOCK,
                    (lo + block * CHANNELS_PER_BLOCK + CHANNELS_PER_BLOCK).min(hi),
                )
            }
        }
    }

    /// Padded input rows `[first, last]` the output pixel tiles `first_tile..=last_tile` of
    /// one plane read.
    pub(crate) fn input_rows_of_tiles(&self, first_tile: u64, last_tile: u64) -> (u64, u64) {
        let last_px = self.plane_out - 1;
        let r0 = ((first_tile * 4).min(last_px) / self.w_out) * self.stride_h;
        let r1 = ((last_tile * 4 + 3).min(last_px) / self.w_out) * self.stride_h
            + (self.kh - 1) * self.dilation_h;
        (r0, r1.min(self.padded_h - 1))
    }

    /// Quad range `[lo, hi)` of padded rows `first..=last` of chunk image `img`.
    fn quad_rows(&self, img: u64, first: u64, last: u64) -> (u64, u64) {
        let row = self.padded_w * self.quads_per_pixel;
        (
            (img * self.padded_h + first) * row,
            (img * self.padded_h + last + 1) * row,
        )
    }

    /// Quad range `[lo, hi)` of whole chunk images `first..=last`.
    fn quad_images(&self, first: u64, last: u64) -> (u64, u64) {
        let img = self.quads_per_image();
        (first * img, (last + 1) * img)
    }

    /// Splits a conv workgroup index of a chunk into (image, channel block, workgroup of the
    /// plane).
    pub(crate) fn decode_workgroup(&self, index: u64) -> (u64, u64, u64) {
        (
            index / self.workgroups_per_image(),
            (index / self.groups_per_plane) % self.channel_blocks,
            index % self.groups_per_plane,
        )
    }

    /// Byte ranges the conv workgroups `[begin, end)` of the chunk starting at image
    /// `chunk_first_image` bind: repacked quads, weights, epilogue table, output.
    pub(crate) fn conv_ranges(
        &self,
        chunk_first_image: u64,
        begin: u64,
        end: u64,
    ) -> Vec<(u64, u64)> {
        let wg = self.workgroup_size;
        let (n0, cb0, g0) = self.decode_workgroup(begin);
        let (n1, cb1, g1) = self.decode_workgroup(end - 1);
        let pt0 = g0 * wg;
        let pt1 = (g1 * wg + wg).min(self.pixel_tiles) - 1;
        let quads = if (n0, cb0) == (n1, cb1) {
            let (r0, r1) = self.input_rows_of_tiles(pt0, pt1);
            self.quad_rows(n0, r0, r1)
        } else {
            self.quad_images(n0, n1)
        };
        let last = self.channel_blocks - 1;
        let (blo, bhi) = if n0 == n1 {
            (self.weight_blocks(cb0).0, self.weight_blocks(cb1).1)
        } else {
            (self.weight_blocks(0).0, self.weight_blocks(last).1)
        };
        let (c_lo, c_hi) = if n0 == n1 {
            (self.block_channels(cb0).0, self.block_channels(cb1).1)
        } else {
            (self.block_channels(0).0, self.block_channels(last).1)
        };
        let y_lo = ((chunk_first_image + n0) * self.c_out + self.block_channels(cb0).0)
            * self.pixel_tiles
            + pt0;
        let y_hi = ((chunk_first_image + n1) * self.c_out + self.block_channels(cb1).1 - 1)
            * self.pixel_tiles
            + pt1
            + 1;
        let wblock = self.weight_vec4s_per_block;
        vec![
            (quads.0 * QUAD, quads.1 * QUAD),
            (blo * wblock * 16, bhi * wblock * 16),
            (c_lo * TABLE_VEC4 * 16, c_hi * TABLE_VEC4 * 16),
            (y_lo * 4, y_hi * 4),
        ]
    }

    /// Repack items of interior (input) pixels in a chunk of `images` images.
    pub(crate) fn interior_items(&self, images: u64) -> u64 {
        images * self.plane_words_in * self.quads_per_pixel
    }

    /// All repack items (interior then border) of a chunk of `images` images.
    pub(crate) fn repack_items(&self, images: u64) -> u64 {
        self.interior_items(images) + images * self.border_pixels() * self.quads_per_pixel
    }

    /// Byte ranges of repack interior items `[begin, end)` of the chunk starting at image
    /// `chunk_first_image`: packed input words, repacked quads.
    pub(crate) fn interior_ranges(
        &self,
        chunk_first_image: u64,
        begin: u64,
        end: u64,
    ) -> Vec<(u64, u64)> {
        let qpp = self.quads_per_pixel;
        let per_img = self.plane_words_in * qpp;
        let (n0, n1) = (begin / per_img, (end - 1) / per_img);
        let x_lo = (chunk_first_image + n0) * self.c_in * self.plane_words_in * 4;
        let x_hi = (chunk_first_image + n1 + 1) * self.c_in * self.plane_words_in * 4;
        let q = if n0 == n1 {
            // Padded rows of input words k0 (first pixel) to k1 (last pixel).
            let (k0, k1) = ((begin % per_img) / qpp, ((end - 1) % per_img) / qpp);
            let plane_in = self.h * self.w;
            let row = |pos: u64| pos.min(plane_in - 1) / self.w + self.pad_h;
            self.quad_rows(n0, row(k0 * 4), row(k1 * 4 + 3))
        } else {
            self.quad_images(n0, n1)
        };
        vec![(x_lo, x_hi), (q.0 * QUAD, q.1 * QUAD)]
    }

    /// Padded row of the i-th border pixel of an image (as `border_pixel` in the shader: rows
    /// above, the margins of the input rows, rows below).
    pub(crate) fn border_row(&self, i: u64) -> u64 {
        let top = self.pad_h * self.padded_w;
        let mid = self.h * 2 * self.pad_w;
        if i < top {
            i / self.padded_w
        } else if i < top + mid {
            self.pad_h + (i - top) / (2 * self.pad_w)
        } else {
            self.pad_h + self.h + (i - top - mid) / self.padded_w
        }
    }

    /// Byte ranges of repack border items `[begin, end)` (counted from the first border item):
    /// a dummy input window, repacked quads.
    pub(crate) fn border_ranges(&self, begin: u64, end: u64) -> Vec<(u64, u64)> {
        let qpp = self.quads_per_pixel;
        let per_img = self.border_pixels() * qpp;
        let (n0, n1) = (begin / per_img, (end - 1) / per_img);
        let q = if n0 == n1 {
            let r0 = self.border_row((begin % per_img) / qpp);
            let r1 = self.border_row(((end - 1) % per_img) / qpp);
            self.quad_rows(n0, r0, r1)
        } else {
            self.quad_images(n0, n1)
        };
        vec![(0, 4), (q.0 * QUAD, q.1 * QUAD)]
    }

    /// Byte ranges of repack items `[begin, end)` of a chunk of `images` images starting at
    /// `chunk_first_image` (interior items first, then border items).
    pub(crate) fn repack_ranges(
        &self,
        chunk_first_image: u64,
        images: u64,
        begin: u64,
        end: u64,
    ) -> Vec<(u64, u64)> {
        let n_int = self.interior_items(images);
        if end <= n_int {
            self.interior_ranges(chunk_first_image, begin, end)
        } else if begin >= n_int {
            self.border_ranges(begin - n_int, end - n_int)
        } else {
            let (i, o) = (
                self.interior_ranges(chunk_first_image, begin, n_int),
                self.border_ranges(0, end - n_int),
            );
            vec![i[0], (i[1].0.min(o[1].0), i[1].1.max(o[1].1))]
        }
    }

    /// Quad-index steps of the conv kernels' tap walk (wrapping u32, as the kernels add
    /// them): `(next_tap, next_row)`. GEMM: after the `quads_per_group` quads of one tap, to
    /// the first quad of the next tap of the kernel row; depthwise: from one tap to the next.
    /// Both: after a row of `kw` taps, from there to the first tap of the next kernel row.
    pub(crate) fn tap_steps(&self) -> (u32, u32) {
        let qpp = self.quads_per_pixel;
        let tap = self.dilation_w * qpp;
        let next_row = (self.dilation_h * self.padded_w * qpp).wrapping_sub(self.kw * tap) as u32;
        match self.layout {
            ConvKernelLayout::Gemm {
                quads_per_group, ..
            } => (tap.wrapping_sub(quads_per_group) as u32, next_row),
            ConvKernelLayout::Depthwise => (tap as u32, next_row),
        }
    }

    /// K as the GEMM kernel sums it over all its K slices: `16 * k_quads` of the whole layer
    /// (each group's input channels rounded up to 16, per tap), for the zero-point correction
    /// `K' * z' * w_zp`; 0 for depthwise.
    pub(crate) fn padded_k(&self) -> u64 {
        match self.layout {
            ConvKernelLayout::Gemm { .. } => 16 * self.kh * self.kw * self.k_slice.group_quads,
            ConvKernelLayout::Depthwise => 0,
        }
    }
}

/// How the conv kernels see input bytes: a stored byte XOR `flip` is the byte in the kernel's
/// domain (signed bytes for `dot4I8Packed`, unsigned otherwise), in which the input's zero
/// point is `zero_point`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InputDomain {
    /// 0x80 or 0: XORed into every input byte by the repack kernel.
    pub flip: u32,
    /// The input zero point in the kernel's domain (`z'`).
    pub zero_point: i32,
}

impl InputDomain {
    /// The domain for an input of `dtype` with zero point `zero_point`, read by a kernel on
    /// `signed` bytes.
    pub(crate) fn new(dtype: QDtype, zero_point: i32, signed: bool) -> Self {
        let (flip, zero_point) = match (dtype, signed) {
            (QDtype::QUInt8, true) => (0x80u32, zero_point - 128),
            (QDtype::QUInt8, false) => (0, zero_point),
            (QDtype::QInt8, true) => (0, zero_point),
            (QDtype::QInt8, false) => (0x80, zero_point + 128),
        };
        InputDomain { flip, zero_point }
    }

    /// The byte padding and rounding slots are filled with: `z'` as a byte of the kernel's
    /// domain (so that `x' - z'` is 0 there).
    pub(crate) fn pad_byte(&self) -> u32 {
        self.zero_point as u32 & 0xff
    }
}

/// The workgroup size for `items` invocations per output plane (the grid's x dimension covers a
/// plane, the others pick the plane): the size in `1..=limit` that launches the fewest lanes,
/// counting a workgroup as its size rounded up to whole batches of `lanes` plus one batch of
/// overhead (the smallest such size). A fixed size wastes up to a workgroup per plane: 392
/// invocations (a 56x56 plane at 8 pixels each) in workgroups of 64 launch 448; in two of 196,
/// 400 (measured on lavapipe: the depthwise conv (iv) 11% faster).
pub(crate) fn plane_workgroup(items: u64, lanes: u32, limit: u32) -> u32 {
    let lanes = u64::from(lanes.max(1));
    let cost = |wg: u64| items.div_ceil(wg) * (wg.div_ceil(lanes) * lanes + lanes);
    (1..=u64::from(limit.max(1)))
        .min_by_key(|&wg| (cost(wg), wg))
        .unwrap_or(1) as u32
}

/// Texture rows (a multiple of 16) that hold `texels` texels in rows of `width`.
pub(crate) fn texture_rows(texels: u64, width: u64) -> u64 {
    texels.div_ceil(width).div_ceil(16) * 16
}

/// The device limits that decide where a conv call keeps its repacked input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScratchLimits {
    /// Whether the conv kernels may read textures (the kernel choice allows it and the layer
    /// has its weights and epilogue table as textures).
    pub textures: bool,
    /// Texture width (a power of two, or 0) and height limit.
    pub tex_width: u32,
    pub tex_max_height: u32,
    /// The device's largest buffer, bytes.
    pub max_buffer: u64,
    /// The largest storage binding, bytes (a band's quads and input fit one).
    pub max_binding: u64,
}

/// Where a conv call keeps its repacked input, and how many images each chunk repacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScratchPlan {
    /// Quads and input in textures (else the input tensor's buffer and a scratch buffer).
    pub use_textures: bool,
    /// Images repacked and convolved per chunk (at least 1).
    pub images_per_chunk: u64,
    /// When one image does not fit (its quads the scratch or a binding, or its output a
    /// binding): each image runs by bands of output rows ([`ConvGeometry::row_bands`]) of at
    /// most this many quads and output bytes (and `images_per_chunk` is 1).
    pub bands: Option<BandLimits>,
}

/// The most quads and packed output bytes of one [`RowBand`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BandLimits {
    pub quads: u64,
    pub output_bytes: u64,
}

impl ScratchPlan {
    /// The plan for `images` images of `quads_per_image` quads each, whose conv workgroups'
    /// writes span `out_span` bytes ([`ConvGeometry::output_span_bytes`]) and whose packed
    /// input has `input_texels` quad-sized texels: textures when one image's quads and the
    /// whole input fit them, chunks whose quads fit the texture (or the scratch buffer) and
    /// whose quad indices fit u32; when one image does not fit (its quads the texture and
    /// the scratch buffer, a binding or the indices, or its output span a binding), bands of
    /// rows of each image.
    pub(crate) fn new(
        limits: ScratchLimits,
        quads_per_image: u64,
        out_span: u64,
        input_texels: u64,
        images: u64,
    ) -> Self {
        let tex_cap = limits.tex_width as u64 * limits.tex_max_height as u64;
        let input_rows = texture_rows(input_texels, limits.tex_width.max(1) as u64);
        let use_textures = limits.textures
            && quads_per_image <= tex_cap
            && input_rows <= limits.tex_max_height as u64;
        // A band's quads, and so its input (at most one byte per channel slot), fit one
        // binding: each repack item's reads (one word of up to 16 channel planes) then fit a
        // window, as do the conv's writes (a pixel tile of 8 channel planes).
        let band_quads =
            (SCRATCH_CAP.min(limits.max_buffer).min(limits.max_binding) / QUAD).min(MAX_QUAD_INDEX);
        if out_span > limits.max_binding || (!use_textures && quads_per_image > band_quads) {
            return ScratchPlan {
                use_textures: false,
                images_per_chunk: 1,
                bands: Some(BandLimits {
                    quads: band_quads,
                    output_bytes: limits.max_binding,
                }),
            };
        }
        let cap = if use_textures {
            tex_cap
        } else {
            SCRATCH_CAP.min(limits.max_buffer) / QUAD
        }
        .min(MAX_QUAD_INDEX);
        ScratchPlan {
            use_textures,
            images_per_chunk: (cap / quads_per_image).clamp(1, images),
            bands: None,
        }
    }
}

/// The chunks `(first image, images)` of `images` images, `per_chunk` at a time.
pub(crate) fn image_chunks(images: u64, per_chunk: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..images)
        .step_by(per_chunk.max(1) as usize)
        .map(move |first| (first, per_chunk.min(images - first)))
}

/// One buffer-to-texture copy of the conv input: `rows` rows of `width` texels, from byte
/// `byte_offset` of the buffer to texture row `first_row`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TexelCopy {
    pub byte_offset: u64,
    pub first_row: u64,
    pub width: u64,
    pub rows: u64,
}

/// The copies that put `texels` quad-sized texels into a texture `width` texels wide, row
/// by row: the whole rows, then the partial last row.
pub(crate) fn input_texture_copies(texels: u64, width: u64) -> Vec<TexelCopy> {
    let (full_rows, rest) = (texels / width, texels % width);
    let mut copies = Vec::new();
    if full_rows > 0 {
        copies.push(TexelCopy {
            byte_offset: 0,
            first_row: 0,
            width,
            rows: full_rows,
        });
    }
    if rest > 0 {
        copies.push(TexelCopy {
            byte_offset: full_rows * width * QUAD,
            first_row: full_rows,
            width: rest,
            rows: 1,
        });
    }
    copies
}

#[cfg(test)]
#[path = "conv_plan_tests.rs"]
mod tests;

/// Greatest common divisor.
fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
