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
    /// Workgroups per (image, channel block): the pixel tiles of a plane in workgroups.
    pub groups_per_plane: u64,
    /// Channel slots per group in the repacked input (16 per quad).
    pub slots_per_group: u64,
    /// Quads per padded input pixel.
    pub quads_per_pixel: u64,
    /// Channel blocks (of up to 8 output channels) over all groups.
    pub channel_blocks: u64,
    /// Weight vec4s of one channel block.
    pub weight_vec4s_per_block: u64,
}

impl ConvGeometry {
    /// The geometry of shape `s` run with `layout` and conv workgroups of `workgroup_size`.
    pub(crate) fn new(s: &ConvShape, layout: ConvKernelLayout, workgroup_size: u32) -> Self {
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
        let (slots_per_group, quads_per_pixel, channel_blocks, weight_vec4s_per_block) =
            match layout {
                ConvKernelLayout::Gemm {
                    quads_per_group,
                    k_quads,
                    blocks_per_group,
                } => (
                    16 * quads_per_group,
                    groups * quads_per_group,
                    groups * blocks_per_group,
                    k_quads * 8,
                ),
                ConvKernelLayout::Depthwise => (
                    c_in_per_group,
                    c_in.div_ceil(16),
                    c_out.div_ceil(CHANNELS_PER_BLOCK),
                    kh * kw,
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
            groups_per_plane: pixel_tiles.div_ceil(workgroup_size),
            slots_per_group,
            quads_per_pixel,
            channel_blocks,
            weight_vec4s_per_block,
        }
    }

    /// Quads of one repacked (padded) input image.
    pub(crate) fn quads_per_image(&self) -> u64 {
        self.padded_h * self.padded_w * self.quads_per_pixel
    }

    /// Conv workgroups per image (all channel blocks).
    pub(crate) fn workgroups_per_image(&self) -> u64 {
        self.channel_blocks * self.groups_per_plane
    }

    /// Border (padding) pixels of one padded image.
    pub(crate) fn border_pixels(&self) -> u64 {
        self.padded_h * self.padded_w - self.h * self.w
    }

    /// Output channels `[lo, hi)` of channel block `block`.
    pub(crate) fn block_channels(&self, block: u64) -> (u64, u64) {
        match self.layout {
            ConvKernelLayout::Gemm {
                blocks_per_group, ..
            } => {
                let (g, b) = (block / blocks_per_group, block % blocks_per_group);
                let base = g * self.c_out_per_group;
                (
                    base + b * CHANNELS_PER_BLOCK,
                    base + (b * CHANNELS_PER_BLOCK + CHANNELS_PER_BLOCK).min(self.c_out_per_group),
                )
            }
            ConvKernelLayout::Depthwise => (
                block * CHANNELS_PER_BLOCK,
                (block * CHANNELS_PER_BLOCK + CHANNELS_PER_BLOCK).min(self.c_out),
            ),
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
        let (blo, bhi) = if n0 == n1 {
            (cb0, cb1 + 1)
        } else {
            (0, self.channel_blocks)
        };
        let (c_lo, c_hi) = if n0 == n1 {
            (self.block_channels(cb0).0, self.block_channels(cb1).1)
        } else {
            (0, self.c_out)
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

    /// K as the GEMM kernel sums it: `16 * k_quads` (each group's input channels rounded up
    /// to 16, per tap), for the zero-point correction `K' * z' * w_zp`; 0 for depthwise.
    pub(crate) fn padded_k(&self) -> u64 {
        match self.layout {
            ConvKernelLayout::Gemm { k_quads, .. } => 16 * k_quads,
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
}

/// Where a conv call keeps its repacked input, and how many images each chunk repacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScratchPlan {
    /// Quads and input in textures (else the input tensor's buffer and a scratch buffer).
    pub use_textures: bool,
    /// Images repacked and convolved per chunk (at least 1).
    pub images_per_chunk: u64,
}

impl ScratchPlan {
    /// The plan for `images` images of `quads_per_image` quads each, whose packed input has
    /// `input_texels` quad-sized texels: textures when one image's quads and the whole input
    /// fit them, chunks whose quads fit the texture (or the scratch buffer) and whose quad
    /// indices fit u32. Fails when one image cannot fit.
    pub(crate) fn new(
        limits: ScratchLimits,
        quads_per_image: u64,
        input_texels: u64,
        images: u64,
    ) -> Result<Self> {
        let tex_cap = limits.tex_width as u64 * limits.tex_max_height as u64;
        let input_rows = texture_rows(input_texels, limits.tex_width.max(1) as u64);
        let use_textures = limits.textures
            && quads_per_image <= tex_cap
            && input_rows <= limits.tex_max_height as u64;
        if !use_textures && quads_per_image * QUAD > limits.max_buffer {
            return Err(Error::DeviceLimit(format!(
                "conv: one repacked input image needs {} bytes of scratch, the device's largest \
                 buffer is {} bytes",
                quads_per_image * QUAD,
                limits.max_buffer
            )));
        }
        let cap = if use_textures {
            tex_cap
        } else {
            (SCRATCH_CAP.min(limits.max_buffer) / QUAD).max(quads_per_image)
        }
        .min(MAX_QUAD_INDEX);
        let images_per_chunk = (cap / quads_per_image).clamp(1, images);
        if quads_per_image > MAX_QUAD_INDEX {
            return Err(Error::DeviceLimit(format!(
                "conv: one repacked input image has {quads_per_image} quads, more than the 2^31 \
                 indices of squint's kernels"
            )));
        }
        Ok(ScratchPlan {
            use_textures,
            images_per_chunk,
        })
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
