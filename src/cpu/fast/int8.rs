//! The int8 blocked GEMM conv: weight panels, activation repacking, tiling and threads.

#[cfg(target_arch = "x86_64")]
use super::SinkPtr;
use super::{par_for, thread_count, Isa, PackedConv2d, SendPtr, Sink};
use crate::quant::{QDtype, QParams};
use crate::shape::ConvShape;

/// Accumulator tile (up to 6 channels × 64 pixels).
type Tile = [[i32; 64]; 6];

/// Where a ymm tile's fused epilogue stores (see [`ymm16_kernel`]).
#[cfg(target_arch = "x86_64")]
type Rows<'a> = super::x86::I8Rows<'a>;

/// Tile sizes of an ISA path: `(channels per tile, pixels per tile, weight bytes per lane)`.
fn tile_params(isa: Isa) -> (usize, usize, usize) {
    match isa {
        Isa::Avx512Vnni => (6, 64, 4),
        Isa::AvxVnni => (6, 16, 4),
        Isa::Avx2 => (4, 16, 8),
        Isa::NeonDot | Isa::Portable => (4, 16, 4),
    }
}

/// Packed weight panels of a GEMM conv.
///
/// Layout: `[group][channel tile][tap][Cin/4 block][nr][lane]`, where a lane is the four
/// weights `w[o][4cb + j][ky][kx]` (j < 4; 0 for padded channels) as 4 i8 (VNNI, portable) or
/// as two i32 words of sign-extended i16 pairs `(w0, w2), (w1, w3)` (AVX2). Channels past the
/// group's end are 0. When some weight zero point is not 0, each group has one more tile, the
/// all-one panel (channel 0 = 1 on every real tap, other channels 0) that computes `Σ_k u`.
pub(super) struct Panels {
    nr: usize,
    px: usize,
    /// Blocks of 4 input channels per group.
    ncb: usize,
    /// Real channel tiles per group.
    ctiles: usize,
    /// Tiles per group including the all-one panel.
    tiles_per_group: usize,
    /// Bytes per tile panel.
    panel_len: usize,
    data: Vec<u8>,
    /// AVX2 only: the same panels in 4-byte lanes for `vpmaddubsw`, with the bounds that say
    /// when it is exact.
    quads: Option<QuadPanels>,
    /// x86 paths, one group, symmetric weights: the weights of the channels-in-lanes
    /// kernel (`nhwc::pack`), for small output planes; packed on the first call that uses
    /// them (most layers never do).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) nhwc: Option<std::sync::OnceLock<super::Lines>>,
    /// `neon-dotprod` only: `128·Σ w` of every panel lane, `[group][tile][nr]` (wrapping),
    /// which the `sdot` kernel's `init` adds back (see [`Panels::kernel_init`]); empty on
    /// the other paths (never empty on `neon-dotprod`: every layer has a tile).
    sdot_bias: Vec<i32>,
}

/// The AVX2 path's second packing (see [`Panels::quads`]).
struct QuadPanels {
    panel_len: usize,
    data: Vec<u8>,
    bounds: PairBounds,
}

/// The largest positive and negative int16 pair sums `a0·w0 + a1·w1` a layer's weights allow
/// per unit of activation: `pos = max(w0, 0) + max(w1, 0)`, `neg = max(−w0, 0) + max(−w1, 0)`
/// over every pair `vpmaddubsw` adds (bytes 0-1 and 2-3 of each 4-byte lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct PairBounds {
    pub pos: u32,
    pub neg: u32,
}

impl PairBounds {
    pub(super) fn of(quads: impl Iterator<Item = [i8; 4]>) -> Self {
        let mut b = PairBounds::default();
        for q in quads {
            for pair in [[q[0], q[1]], [q[2], q[3]]] {
                let pos: u32 = pair.iter().map(|&w| w.max(0) as u32).sum();
                let neg: u32 = pair.iter().map(|&w| (w as i32).min(0).unsigned_abs()).sum();
                b.pos = b.pos.max(pos);
                b.neg = b.neg.max(neg);
            }
        }
        b
    }

    /// Whether `vpmaddubsw` is exact for u8 activations up to `act_max`: every pair sum lies
    /// in `[−act_max·neg, act_max·pos] ⊆ [−32768, 32767]`.
    pub(super) fn exact_for(self, act_max: u8) -> bool {
        act_max as u32 * self.pos <= i16::MAX as u32 && act_max as u32 * self.neg <= 32768
    }
}

impl Panels {
    /// Packs OIHW qint8 weights for `isa`.
    pub(super) fn pack(w: &[i8], s: &ConvShape, isa: Isa, ones: bool) -> Self {
        let (nr, px, lane) = tile_params(isa);
        let (cig, cog, g) = (s.c_in_per_group(), s.c_out_per_group(), s.params.groups);
        let taps = s.kh * s.kw;
        let ncb = cig.div_ceil(4);
        let ctiles = cog.div_ceil(nr);
        let tiles_per_group = ctiles + usize::from(ones);
        let k = s.k();
        // Every lane in layout order: (panel, t, cb, r) → its four weights.
        let lanes = (0..g * tiles_per_group).flat_map(|panel| {
            let (gi, ct) = (panel / tiles_per_group, panel % tiles_per_group);
            (0..taps * ncb * nr).map(move |i| {
                let (t, cb, r) = (i / (ncb * nr), i / nr % ncb, i % nr);
                std::array::from_fn(|j| {
                    let c = 4 * cb + j;
                    if c >= cig {
                        0
                    } else if ct == ctiles {
                        i8::from(r == 0)
                    } else if ct * nr + r < cog {
                        w[(gi * cog + ct * nr + r) * k + c * taps + t]
                    } else {
                        0
                    }
                })
            })
        });
        // `sdot` reads activations as `u − 128` (see `Panels::kernel_init`): the kernel's
        // sum lacks 128·Σw per lane.
        let sdot = isa == Isa::NeonDot;
        let mut sdot_bias = vec![0i32; if sdot { g * tiles_per_group * nr } else { 0 }];
        if sdot {
            for (i, l) in lanes.clone().enumerate() {
                let (panel, r) = (i / (taps * ncb * nr), i % nr);
                let sum: i32 = l.iter().map(|&v| v as i32).sum();
                let b = &mut sdot_bias[panel * nr + r];
                *b = b.wrapping_add(sum.wrapping_mul(128));
            }
        }
        let as_quads = |l: [i8; 4]| l.map(|v| v as u8);
        // AVX2's exact kernel: two i32 words of sign-extended i16 pairs (w0, w2), (w1, w3).
        let as_pairs = |l: [i8; 4]| -> [u8; 8] {
            let [a, b, c, d] = l.map(|v| (v as i16).to_le_bytes());
            [a[0], a[1], c[0], c[1], b[0], b[1], d[0], d[1]]
        };
        let (data, quads) = if lane == 4 {
            (lanes.flat_map(as_quads).collect(), None)
        } else {
            let quads = QuadPanels {
                panel_len: taps * ncb * nr * 4,
                data: lanes.clone().flat_map(as_quads).collect(),
                bounds: PairBounds::of(lanes.clone()),
            };
            (lanes.flat_map(as_pairs).collect(), Some(quads))
        };
        #[cfg(target_arch = "x86_64")]
        let nhwc = (isa.is_x86_simd() && g == 1 && !ones).then(std::sync::OnceLock::new);
        #[cfg(not(target_arch = "x86_64"))]
        let nhwc = None;
        Panels {
            nr,
            px,
            ncb,
            ctiles,
            tiles_per_group,
            panel_len: taps * ncb * nr * lane,
            data,
            quads,
            nhwc,
            sdot_bias,
        }
    }

    /// Whether the kernels are `neon-dotprod`'s `sdot` ones (signed activations, see
    /// [`Panels::kernel_init`]).
    fn sdot(&self) -> bool {
        !self.sdot_bias.is_empty()
    }

    /// The `init` that tile `tile` (of group `g`; `ctiles` is the all-one panel) passes to
    /// the GEMM kernel for folding constants `init`: the same, but for `neon-dotprod`, whose
    /// `sdot` kernel reads the activations as `s = u − 128` (stored `u ^ 0x80`, see
    /// [`Panels::act_bytes`]) and so computes `Σ s·w = Σ u·w − 128·Σ w`: there the init
    /// also holds `+128·Σ w` of each panel lane (wrapping, exact modulo 2^32 like every other
    /// term of the folding).
    fn kernel_init(&self, g: usize, tile: usize, init: [i32; 6]) -> [i32; 6] {
        if !self.sdot() {
            return init;
        }
        let bias = &self.sdot_bias[(g * self.tiles_per_group + tile) * self.nr..][..self.nr];
        std::array::from_fn(|r| bias.get(r).map_or(init[r], |&b| init[r].wrapping_add(b)))
    }

    /// The bytes the repack stores for `(z, flip)` of [`flip_and_z`] (the padding byte and
    /// the flip of every stored activation): the u8 activations, or for `neon-dotprod` their
    /// `sdot` form `u ^ 0x80` (`u − 128` as i8).
    fn act_bytes(&self, z: u8, flip: u8) -> (u8, u8) {
        if self.sdot() {
            (z ^ 0x80, flip ^ 0x80)
        } else {
            (z, flip)
        }
    }

    /// The largest u8 activation the kernels read for input `x` (the padding value, the zero
    /// point, too); `u8::MAX` without scanning where no kernel choice depends on it.
    pub(super) fn act_max(&self, x: &[u8], x_qp: &QParams) -> u8 {
        let (flip, z) = flip_and_z(x_qp);
        match &self.quads {
            Some(_) => act_max(x, flip, z as u8),
            None => u8::MAX,
        }
    }

    /// Whether input `x` runs on the AVX2 `vpmaddubsw` kernel.
    pub(super) fn uses_maddubs(&self, x: &[u8], x_qp: &QParams) -> bool {
        self.for_activations(self.act_max(x, x_qp)).2
    }

    /// The panels and kernel for u8 activations up to `act_max`: the AVX2 `vpmaddubsw`
    /// packing when [`PairBounds::exact_for`] proves it exact, else the default one.
    fn for_activations(&self, act_max: u8) -> (&[u8], usize, bool) {
        match &self.quads {
            Some(q) if q.bounds.exact_for(act_max) => (&q.data, q.panel_len, true),
            _ => (&self.data, self.panel_len, false),
        }
    }
}

/// The largest u8 activation `v ^ flip` of `x`, or `z` (the padding) if larger: what decides
/// whether AVX2's `vpmaddubsw` is exact ([`PairBounds::exact_for`]). One pass over the input
/// per call, on whole ymm registers where AVX2 runs.
pub(super) fn act_max(x: &[u8], flip: u8, z: u8) -> u8 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        return unsafe { super::x86::max_xor_avx2(x, flip) }.max(z);
    }
    x.iter().fold(z, |m, &v| m.max(v ^ flip))
}

/// Whether the `avx-vnni` path uses the VEX encoding (else the EVEX one, see [`Isa::AvxVnni`]).
#[cfg(target_arch = "x86_64")]
pub(super) fn vex_vnni() -> bool {
    static VEX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VEX.get_or_init(|| std::arch::is_x86_feature_detected!("avxvnni"))
}

/// Runs one GEMM tile: `out[r][p]` for `r < nr`, `p < npx` (the SIMD paths compute whole
/// vectors: up to the next multiple of 16 or 8 pixels; the AVX512-VNNI path only the first
/// `nvalid` rows, the others may compute all `nr`).
///
/// # Safety
/// `isa` must be available; `act` must be readable at `offs[t] + cb·cbs + [0, 4·npx rounded up
/// to a vector)` for every tap and channel block, `w` for one whole panel (in the 4-byte lanes
/// of `vpmaddubsw` when `maddubs`, which needs [`PairBounds::exact_for`] the activations).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn gemm_tile(
    isa: Isa,
    act: &[u8],
    offs: &[usize],
    cbs: usize,
    ncb: usize,
    w: &[u8],
    nr: usize,
    nvalid: usize,
    npx: usize,
    maddubs: bool,
    out: &mut Tile,
    init: &[i32; 6],
) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::x86::*;
        let (a, wp) = (act.as_ptr(), w.as_ptr());
        // SAFETY: the ISA and every read range are guaranteed by the caller; the panel layout
        // matches the kernel (`tile_params`).
        unsafe {
            match (isa, npx.div_ceil(16), npx.div_ceil(8)) {
                (Isa::Avx512Vnni, mv, _) => {
                    // Only the `nvalid` channels that exist (the panels hold 6).
                    macro_rules! nr {
                        ($($nr:literal)*) => {
                            match (nvalid, mv) {
                                $(
                                    ($nr, 1) => gemm_i8_avx512::<$nr, 1, 6>,
                                    ($nr, 2) => gemm_i8_avx512::<$nr, 2, 6>,
                                    ($nr, 3) => gemm_i8_avx512::<$nr, 3, 6>,
                                    ($nr, _) => gemm_i8_avx512::<$nr, 4, 6>,
                                )*
                                (_, 1) => gemm_i8_avx512::<6, 1, 6>,
                                (_, 2) => gemm_i8_avx512::<6, 2, 6>,
                                (_, 3) => gemm_i8_avx512::<6, 3, 6>,
                                (_, _) => gemm_i8_avx512::<6, 4, 6>,
                            }
                        };
                    }
                    nr!(1 2 3 4 5)(a, offs, cbs, ncb, wp, out, init)
                }
                (Isa::AvxVnni, _, 1) if vex_vnni() => {
                    gemm_i8_avxvnni::<6, 1>(a, offs, cbs, ncb, wp, init, YmmOut::Tile(out))
                }
                (Isa::AvxVnni, _, 1) => {
                    gemm_i8_avxvnni_evex::<6, 1>(a, offs, cbs, ncb, wp, init, YmmOut::Tile(out))
                }
                (Isa::Avx2, _, 1) if maddubs => {
                    gemm_i8_avx2_maddubs::<4, 1>(a, offs, cbs, ncb, wp, init, YmmOut::Tile(out))
                }
                (Isa::Avx2, _, 1) => {
                    gemm_i8_avx2::<4, 1>(a, offs, cbs, ncb, wp, init, YmmOut::Tile(out))
                }
                // 16 pixels: the kernel the fused tiles run too.
                (Isa::AvxVnni | Isa::Avx2, _, _) => {
                    let k = ymm16_kernel(isa, maddubs).expect("a ymm path");
                    k(a, offs, cbs, ncb, wp, init, YmmOut::Tile(out))
                }
                (Isa::NeonDot | Isa::Portable, _, _) => {
                    super::portable::gemm_i8(act, offs, cbs, ncb, w, nr, npx, out, init)
                }
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    if isa == Isa::NeonDot {
        use super::aarch64::gemm_i8_sdot;
        let (a, wp) = (act.as_ptr(), w.as_ptr());
        // SAFETY: the ISA and every read range are guaranteed by the caller (whole vectors
        // of 4 pixels); the panels hold 4 channels (`tile_params`).
        unsafe {
            match npx.div_ceil(4) {
                1 => gemm_i8_sdot::<1>(a, offs, cbs, ncb, wp, out, init),
                2 => gemm_i8_sdot::<2>(a, offs, cbs, ncb, wp, out, init),
                3 => gemm_i8_sdot::<3>(a, offs, cbs, ncb, wp, out, init),
                _ => gemm_i8_sdot::<4>(a, offs, cbs, ncb, wp, out, init),
            }
        }
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (maddubs, nvalid, isa); // x86 only
        super::portable::gemm_i8(act, offs, cbs, ncb, w, nr, npx, out, init);
    }
}

/// One contiguous run of valid outputs inside a pixel tile: tile position, output offset
/// within the channel plane, length.
type Segment = (usize, usize, usize);

/// The valid output runs of flat positions `[q0, q1)` with rows of `wrow` positions of which
/// the first `w_out` are real outputs, `h_out` rows. Rows that continue each other in the
/// tile and in the output (`wrow = w_out`: no padding columns) form one run, so that a tile of
/// a 1×1 conv is one run: fewer, longer stores.
pub(super) fn segments(
    q0: usize,
    q1: usize,
    wrow: usize,
    w_out: usize,
    h_out: usize,
) -> Vec<Segment> {
    let mut segs = Vec::new();
    let mut q = q0;
    while q < q1 {
        let (oy, ox) = (q / wrow, q % wrow);
        if oy >= h_out {
            break;
        }
        let run = (wrow - ox).min(q1 - q);
        if ox < w_out {
            let (at, off, len) = (q - q0, oy * w_out + ox, run.min(w_out - ox));
            match segs.last_mut() {
                // Rows without padding continue each other: one run.
                Some((at0, off0, len0)) if *at0 + *len0 == at && *off0 + *len0 == off => {
                    *len0 += len
                }
                _ => segs.push((at, off, len)),
            }
        }
        q += run;
    }
    segs
}

/// `Some(off)` exactly where [`segments`]`(q0, q0 + npx, ..)` is the one run `(0, off, 16)`
/// of a 16-pixel tile, found without building the list (the fused ymm tiles' test, once per
/// pixel tile).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn one_run16(
    q0: usize,
    npx: usize,
    wrow: usize,
    w_out: usize,
    h_out: usize,
) -> Option<usize> {
    if npx != 16 {
        return None;
    }
    if wrow == w_out {
        // Rows without padding continue each other: one run while it stays in the plane.
        return (q0 + 16 <= h_out * w_out).then_some(q0);
    }
    let (oy, ox) = (q0 / wrow, q0 % wrow);
    (oy < h_out && ox + 16 <= w_out).then_some(oy * w_out + ox)
}

/// Input geometry of one run: how the activation buffer is laid out.
///
/// The padded input (`Hp × Wp`, padding holding the activation zero point) is split into
/// `sh · sw` *phase planes* (plane `(py, px)` holds the padded positions `(y'·sh + py,
/// x'·sw + px)`, `Hph × Wph` with `Wph = ⌈Wp / sw⌉`), each with one plane per channel (block).
/// Output pixels are numbered in flat coordinates `q = oy·Wph + ox` (positions with
/// `ox ≥ Wout` are computed and discarded). Tap `(ky, kx)` of output `q` reads phase plane
/// `((ky·dh) mod sh, (kx·dw) mod sw)` at `q + ⌊ky·dh / sh⌋·Wph + ⌊kx·dw / sw⌋`: a constant
/// offset per tap, so 16 consecutive outputs read 16 consecutive positions, for every stride.
/// With stride 1 this is the plain padded image (implicit im2col).
pub(super) struct Geometry {
    /// Positions per output row in flat coordinates (`Wph`).
    pub wrow: usize,
    hph: usize,
    stride: [usize; 2],
    /// Channel (block) planes per phase.
    nplanes: usize,
    /// Pixel positions covered by tiles (a multiple of the vector width, 16 or the tile
    /// size if smaller; the last tile may be partial).
    pub qtot: usize,
    /// Positions per plane.
    pub plane: usize,
    /// Per tap: offset of the tap's first read, in positions from the buffer start.
    pub offs: Vec<usize>,
    /// Planes in the buffer (`phases · nplanes`).
    pub planes: usize,
}

/// One row copy into a plane: destination position, input row, first input column, count
/// (input columns `ix0 + i·sw`).
type RowCopy = (usize, usize, usize, usize);

impl Geometry {
    /// The buffer geometry for `s` with `nplanes` channel (block) planes per phase and tiles
    /// of `px` pixels.
    pub(super) fn new(s: &ConvShape, nplanes: usize, px: usize) -> Self {
        let p = &s.params;
        let (sy, sx) = (p.stride[0], p.stride[1]);
        let wp = s.w + 2 * p.padding[1];
        let hp = s.h + 2 * p.padding[0];
        let (wph, hph) = (wp.div_ceil(sx), hp.div_ceil(sy));
        // Whole vectors only (the last tile may be partial): rounding up to whole tiles would
        // compute up to a tile of discarded positions (on 14×14 outputs, 256 instead of 224).
        let qtot = (s.h_out * wph).div_ceil(px.min(16)) * px.min(16);
        let taps: Vec<(usize, usize)> = (0..s.kh * s.kw)
            .map(|t| {
                let (y, x) = ((t / s.kw) * p.dilation[0], (t % s.kw) * p.dilation[1]);
                ((y % sy) * sx + x % sx, (y / sy) * wph + x / sx)
            })
            .collect();
        let max_local = taps.iter().map(|t| t.1).max().unwrap_or(0);
        // Planes are `plane · 4` bytes apart (4-byte lanes or f32) and the kernels read one
        // vector from each plane in turn: with a stride that is a multiple of 4 KiB every
        // plane falls in the same L1 sets and 8 ways thrash (a 64x64 image is 16 KiB per
        // plane). An odd number of 64-byte lines per plane spreads 64 planes over all sets.
        let lines = ((hph * wph).max(qtot + max_local) * 4).div_ceil(64);
        let plane = (lines | 1) * 16;
        Geometry {
            wrow: wph,
            hph,
            stride: [sy, sx],
            nplanes,
            qtot,
            plane,
            offs: taps
                .iter()
                .map(|&(phase, local)| phase * nplanes * plane + local)
                .collect(),
            planes: sy * sx * nplanes,
        }
    }

    /// Plane `pi`: its channel (block) index, and the row copies that fill it from the input
    /// (positions not covered hold padding), in position order. With unit column stride,
    /// copies that continue each other in both the input and the plane (whole rows of an
    /// input without column padding, as a 1x1 conv's) merge into one: a copy's `count` may
    /// then exceed the row, its columns continuing into the next input rows.
    pub(super) fn copies(
        &self,
        s: &ConvShape,
        pi: usize,
    ) -> (usize, impl Iterator<Item = RowCopy> + '_) {
        let (ph, pw) = (s.params.padding[0], s.params.padding[1]);
        let [sy, sx] = self.stride;
        let phase = pi / self.nplanes;
        let (py, px) = (phase / sx, phase % sx);
        // Phase columns x' with pw <= x'·sx + px < pw + w.
        let x_lo = pw.saturating_sub(px).div_ceil(sx);
        let x_hi = self.wrow.min((pw + s.w).saturating_sub(px).div_ceil(sx));
        let (h, w, wrow) = (s.h, s.w, self.wrow);
        // Unit strides without column padding: every input row lands whole, right after the
        // previous one, so the rows merge into one copy of the image (found without walking
        // them: this runs per plane, and a 1x1 conv has a plane per four channels).
        let whole = sy == 1 && sx == 1 && pw == 0;
        let single = whole.then_some((ph * wrow, 0, 0, h * w));
        let mut rows = (0..if x_lo < x_hi && !whole { self.hph } else { 0 })
            .filter_map(move |yq| {
                let y = yq * sy + py;
                (y >= ph && y < ph + h)
                    .then(|| (yq * wrow + x_lo, y - ph, x_lo * sx + px - pw, x_hi - x_lo))
            })
            .peekable();
        let merged = std::iter::from_fn(move || {
            let (pos, iy, ix0, mut count) = rows.next()?;
            while let Some(&(p2, iy2, ix2, c2)) = rows.peek() {
                if sx != 1 || p2 != pos + count || iy2 * w + ix2 != iy * w + ix0 + count {
                    break;
                }
                count += c2;
                rows.next();
            }
            Some((pos, iy, ix0, count))
        });
        (pi % self.nplanes, single.into_iter().chain(merged))
    }
}

/// Repacks the input of batch `n`, group `g` into `buf` (`[planes][plane][4]` bytes): u8
/// activations (`^ flip`), four channels per lane, `z` at padded positions and channels.
#[allow(clippy::too_many_arguments)]
fn repack(
    x: &[u8],
    s: &ConvShape,
    n: usize,
    g: usize,
    geo: &Geometry,
    z: u8,
    flip: u8,
    buf: &mut [u8],
    threads: Option<usize>,
) {
    let cig = s.c_in_per_group();
    let plane_bytes = geo.plane * 4;
    let sx = s.params.stride[1];
    let chan = |c: usize| -> Option<&[u8]> {
        (c < cig).then(|| {
            let base = (n * s.c_in + g * cig + c) * s.h * s.w;
            &x[base..base + s.h * s.w]
        })
    };
    // The source of padded channels (a merged copy may span every row).
    let zrow = vec![z ^ flip; if cig.is_multiple_of(4) { 0 } else { s.h * s.w }];
    let bufp = SendPtr(buf.as_mut_ptr());
    par_for(threads, geo.planes, |pi| {
        // SAFETY: plane `pi` is the disjoint range [pi·plane_bytes, (pi+1)·plane_bytes) of
        // `buf` (which holds `planes` planes), written by this task only.
        let dst = unsafe { bufp.slice(pi * plane_bytes, plane_bytes) };
        let (cb, rows) = geo.copies(s, pi);
        let chans: [Option<&[u8]>; 4] = std::array::from_fn(|j| chan(4 * cb + j));
        let mut gathered: [Vec<u8>; 4] = Default::default();
        if sx > 1 {
            for t in &mut gathered {
                t.resize(s.w, 0);
            }
        }
        // `z` between and after the copied runs (the rows come in order), each byte written
        // once.
        let mut done = 0;
        for (pos, iy, ix0, count) in rows {
            dst[4 * done..4 * pos].fill(z);
            done = pos + count;
            let src: [&[u8]; 4] = std::array::from_fn(|j| {
                let ch = chans[j].unwrap_or(&zrow[..]);
                if sx == 1 {
                    &ch[iy * s.w + ix0..][..count]
                } else {
                    &ch[iy * s.w..(iy + 1) * s.w]
                }
            });
            let src: [&[u8]; 4] = if sx == 1 {
                src
            } else {
                for (t, row) in gathered.iter_mut().zip(src) {
                    super::gather_columns(row, ix0, sx, &mut t[..count]);
                }
                std::array::from_fn(|j| &gathered[j][..count])
            };
            interleave(src, flip, &mut dst[4 * pos..4 * (pos + count)]);
        }
        dst[4 * done..].fill(z);
    });
}

/// `dst[4i + j] = src[j][i] ^ flip`.
pub(super) fn interleave(src: [&[u8]; 4], flip: u8, dst: &mut [u8]) {
    let n = dst.len() / 4;
    assert!(src.iter().all(|r| r.len() >= n));
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let avx512 = *AVX512.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
        });
        let (s, d) = (src.map(|r| r.as_ptr()), dst.as_mut_ptr());
        // SAFETY: each source holds n bytes and dst 4n (checked above); AVX-512 was detected.
        unsafe {
            if avx512 {
                super::x86::interleave4_avx512(s, n, flip, d)
            } else {
                super::x86::interleave4(s, n, flip, d)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    super::portable::interleave4(src, flip, dst);
}

/// `(flip, z)`: stored activation bytes map to u8 activations `u = x ^ flip`, and `z` is the
/// zero point in `u` (see the module docs of `fast`).
pub(super) fn flip_and_z(x_qp: &QParams) -> (u8, i32) {
    let flip: u8 = if x_qp.dtype == QDtype::QInt8 { 0x80 } else { 0 };
    (flip, x_qp.zero_point + if flip != 0 { 128 } else { 0 })
}

/// A ymm GEMM tile kernel of 16 pixels (`x86::gemm_i8_avxvnni` and its kin), writing into an
/// accumulator tile or through the fused epilogue (`x86::YmmOut`).
#[cfg(target_arch = "x86_64")]
type Ymm16Kernel =
    unsafe fn(*const u8, &[usize], usize, usize, *const u8, &[i32; 6], super::x86::YmmOut);

/// The 16-pixel kernel of a ymm path (`None` on the others), for [`gemm_tile`] and the fused
/// tiles alike; the fused tiles choose it once per layer call, so that the loop over a pixel
/// tile's channel tiles is only kernel calls (on MobileNetV2's 1×1 expansions, with K = 16 to 32, the loop's own work
/// had taken a quarter of the conv).
#[cfg(target_arch = "x86_64")]
fn ymm16_kernel(isa: Isa, maddubs: bool) -> Option<Ymm16Kernel> {
    use super::x86::*;
    match isa {
        Isa::AvxVnni if vex_vnni() => Some(gemm_i8_avxvnni::<6, 2>),
        Isa::AvxVnni => Some(gemm_i8_avxvnni_evex::<6, 2>),
        Isa::Avx2 if maddubs => Some(gemm_i8_avx2_maddubs::<4, 2>),
        Isa::Avx2 => Some(gemm_i8_avx2::<4, 2>),
        Isa::Avx512Vnni | Isa::NeonDot | Isa::Portable => None,
    }
}

/// The int8 GEMM conv of `pc` on input `x` into `sink`.
pub(super) fn run(
    pc: &PackedConv2d,
    p: &Panels,
    x: &[u8],
    x_qp: &QParams,
    s: &ConvShape,
    opts: &super::FastConvOptions,
    sink: Sink,
) {
    let isa = pc.isa;
    let (flip, zi) = flip_and_z(x_qp);
    let z = zi as u8;
    // The folding constants −z·Σw + K·z·ζ (wrapping) and the AVX-512 epilogue constants of
    // every channel (`None` when some channel needs the scalar epilogue: then every row takes
    // it), cached per input qparams.
    let cc = pc.call_consts(x_qp);
    let corr0 = &cc.corr0;
    #[cfg(target_arch = "x86_64")]
    let consts = match sink {
        Sink::Bytes(_) => cc.requant.as_ref(),
        _ => None,
    };
    #[cfg(target_arch = "x86_64")]
    let ks_ymm = cc.requant_ymm.as_deref();
    let geo = Geometry::new(s, p.ncb, p.px);
    // AVX2: `vpmaddubsw` where the activations' range rules out its saturation.
    let (pdata, panel_len, maddubs) = p.for_activations(p.act_max(x, x_qp));
    // The bytes the kernels read (u8 activations, or `sdot`'s i8 form).
    let (kz, kflip) = p.act_bytes(z, flip);
    // Small planes: the channels-in-lanes kernel, where it wastes fewer lanes (on AVX2 only
    // where `vpmaddubsw` is exact).
    #[cfg(target_arch = "x86_64")]
    let sink = match (sink, &p.nhwc) {
        (Sink::Bytes(out), Some(packed))
            if (isa != Isa::Avx2 || maddubs)
                && pc
                    .gemm_layout
                    .nhwc(|| super::nhwc::prefer(s, geo.qtot, p.nr, isa)) =>
        {
            let w = packed.get_or_init(|| super::nhwc::pack(&pc.weights, s, isa));
            let ks = consts.map(|k| &k[..]);
            return super::nhwc::run(pc, w, x, x_qp, s, corr0, ks, opts.threads, out);
        }
        (sink, ..) => sink,
    };
    let offs: Vec<usize> = geo.offs.iter().map(|o| o * 4).collect();
    let cbs = geo.plane * 4;
    let ptiles = geo.qtot.div_ceil(p.px);
    let nthreads = thread_count(opts.threads);
    let cchunks = if nthreads > 1 {
        (4 * nthreads).div_ceil(ptiles).clamp(1, p.ctiles)
    } else {
        1
    };
    let per_chunk = p.ctiles.div_ceil(cchunks);
    let cog = s.c_out_per_group();
    let plane_out = s.h_out * s.w_out;
    let out = sink.ptr();
    let epi = &pc.epi;
    // The ymm paths' tiles of 16 pixels with the fused epilogue (`x86::I8Rows`), where every
    // channel's constants are ready and no weight zero point needs the row sums.
    #[cfg(target_arch = "x86_64")]
    let fused: Option<Ymm16Kernel> = match (ks_ymm, out, pc.any_wzp) {
        (Some(_), SinkPtr::Bytes(_), false) => ymm16_kernel(isa, maddubs),
        _ => None,
    };
    // Slack: a SIMD kernel reads whole vectors (up to the tile size) past any offset.
    let len = geo.planes * geo.plane * 4 + 64 * 4;
    super::with_scratch(&super::SCRATCH_U8, len, |buf| {
        for n in 0..s.n {
            for g in 0..s.params.groups {
                repack(x, s, n, g, &geo, kz, kflip, buf, opts.threads);
                let buf = &buf[..];
                let panels = &pdata[g * p.tiles_per_group * panel_len..];
                // Each channel tile's kernel `init` (the folding constants of its channels that
                // exist), once per group rather than per tile.
                let inits: Vec<[i32; 6]> = (0..p.ctiles)
                    .map(|ct| {
                        let o0 = g * cog + ct * p.nr;
                        let nvalid = p.nr.min(cog - ct * p.nr);
                        let c = std::array::from_fn(|r| if r < nvalid { corr0[o0 + r] } else { 0 });
                        p.kernel_init(g, ct, c)
                    })
                    .collect();
                par_for(opts.threads, ptiles * cchunks, |item| {
                    let (pt, chunk) = (item / cchunks, item % cchunks);
                    // Balanced tiles of whole vectors (e.g. 13 vectors as 4 + 3 + 3 + 3 rather
                    // than 4 + 4 + 4 + 1: a narrow tile reloads every weight for few pixels).
                    let unit = p.px.min(16);
                    let nvec = geo.qtot / unit;
                    let q0 = unit * (nvec * pt / ptiles);
                    let npx = unit * (nvec * (pt + 1) / ptiles) - q0;
                    let act = &buf[q0 * 4..];
                    let ct_end = ((chunk + 1) * per_chunk).min(p.ctiles);
                    // A tile that is one run of 16 outputs per channel, on a ymm path: each
                    // channel tile's kernel requantizes and stores its outputs itself.
                    #[cfg(target_arch = "x86_64")]
                    if let (Some(kern), Some(ks), SinkPtr::Bytes(b), Some(off)) = (
                        fused,
                        ks_ymm,
                        out,
                        one_run16(q0, npx, geo.wrow, s.w_out, s.h_out),
                    ) {
                        for ct in chunk * per_chunk..ct_end {
                            let o0 = g * cog + ct * p.nr;
                            let nvalid = p.nr.min(cog - ct * p.nr);
                            let rows = Rows {
                                // SAFETY: in the output: channel o0's plane, at the run.
                                dst: unsafe { b.0.add((n * s.c_out + o0) * plane_out + off) },
                                stride: plane_out,
                                ks: &ks[o0..o0 + nvalid],
                            };
                            let w = &panels[ct * panel_len..][..panel_len];
                            // SAFETY: as below (`fused` is the ymm kernel of this path and
                            // tile size, 16 pixels); channels o0 + r (r < nvalid) of the run
                            // are this task's outputs.
                            unsafe {
                                kern(
                                    act.as_ptr(),
                                    &offs,
                                    cbs,
                                    p.ncb,
                                    w.as_ptr(),
                                    &inits[ct],
                                    super::x86::YmmOut::Rows(&rows),
                                )
                            };
                        }
                        return;
                    }
                    let segs = segments(q0, q0 + npx, geo.wrow, s.w_out, s.h_out);
                    if segs.is_empty() {
                        return;
                    }
                    // The runs as store masks, once per tile, where the AVX-512 epilogue runs.
                    #[cfg(target_arch = "x86_64")]
                    let runs: Option<Vec<super::x86::RunMask>> = consts.map(|_| {
                        segs.iter()
                            .map(|&(at, off, len)| super::x86::RunMask::new(at, off, len))
                            .collect()
                    });
                    let mut tile: Tile = [[0; 64]; 6];
                    let mut rowsum = [0i32; 64];
                    if pc.any_wzp {
                        let w = &panels[p.ctiles * panel_len..][..panel_len];
                        let init = p.kernel_init(g, p.ctiles, [0; 6]);
                        // SAFETY: the ISA was checked when packing; the buffer holds every
                        // plane plus slack past the last tile (see `Geometry::new`); `maddubs`
                        // only where `for_activations` proved it exact.
                        unsafe {
                            gemm_tile(
                                isa, act, &offs, cbs, p.ncb, w, p.nr, 1, npx, maddubs, &mut tile,
                                &init,
                            )
                        };
                        rowsum = tile[0];
                    }
                    for ct in chunk * per_chunk..ct_end {
                        let o0 = g * cog + ct * p.nr;
                        let nvalid = p.nr.min(cog - ct * p.nr);
                        let init = &inits[ct];
                        let w = &panels[ct * panel_len..][..panel_len];
                        // SAFETY: as above.
                        unsafe {
                            gemm_tile(
                                isa, act, &offs, cbs, p.ncb, w, p.nr, nvalid, npx, maddubs,
                                &mut tile, init,
                            )
                        };
                        let base = (n * s.c_out + o0) * plane_out;
                        if pc.any_wzp {
                            for (r, row) in tile.iter_mut().enumerate().take(nvalid) {
                                let zeta = pc.wzp[o0 + r];
                                for (a, &rs) in row[..npx].iter_mut().zip(&rowsum) {
                                    *a = a.wrapping_sub(zeta.wrapping_mul(rs));
                                }
                            }
                        }
                        #[cfg(target_arch = "x86_64")]
                        if let (Some(ks), Some(runs), SinkPtr::Bytes(b)) = (consts, &runs, out) {
                            // SAFETY: as below; the ISA was checked when packing, the runs lie
                            // inside each row's plane (`segments`), and `base` inside the
                            // output.
                            unsafe {
                                super::x86::requant_tile_avx512(
                                    &ks[o0..o0 + nvalid],
                                    &tile,
                                    runs,
                                    b.0.add(base),
                                    plane_out,
                                )
                            };
                            continue;
                        }
                        #[cfg(target_arch = "x86_64")]
                        if let (Some(ks), SinkPtr::Bytes(b)) = (ks_ymm, out) {
                            // SAFETY: the ISA (AVX2 or AVX-VNNI, both with AVX2) was checked
                            // when packing; every channel's constants are ready (`requant_ymm`);
                            // the runs lie inside each row's plane (`segments`) and `base`
                            // inside the output, written by this task only.
                            unsafe {
                                super::x86::requant_tile_avx2(
                                    &ks[o0..o0 + nvalid],
                                    &tile,
                                    npx,
                                    &segs,
                                    b.0.add(base),
                                    plane_out,
                                )
                            };
                            continue;
                        }
                        for (r, row) in tile.iter().enumerate().take(nvalid) {
                            // SAFETY: the output positions of pixel tile `pt` and channel
                            // `o0 + r` are written by this task only (tiles and channel chunks
                            // are disjoint), and lie inside the output (`segments` keeps
                            // oy < h_out, ox < w_out).
                            unsafe {
                                out.write_segments(
                                    isa,
                                    epi,
                                    o0 + r,
                                    &row[..npx],
                                    &segs,
                                    base + r * plane_out,
                                )
                            };
                        }
                    }
                });
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{act_max, one_run16, segments};

    /// `one_run16` names a tile's run exactly where `segments` finds the one run `(0, off, 16)`:
    /// every 16-pixel tile start of planes with and without padding columns, tiles crossing
    /// rows, the plane's end and past it, and tiles of other sizes.
    #[test]
    fn one_run16_agrees_with_segments_on_every_tile() {
        let mut seen = [0usize; 2];
        for (w_out, pad) in [
            (1, 0),
            (7, 0),
            (7, 2),
            (14, 2),
            (16, 0),
            (16, 1),
            (56, 2),
            (17, 3),
        ] {
            let wrow = w_out + pad;
            for h_out in [1, 2, 5] {
                for q0 in 0..wrow * (h_out + 1) + 20 {
                    for npx in [16, 32] {
                        let want = match segments(q0, q0 + npx, wrow, w_out, h_out)[..] {
                            [(0, off, 16)] if npx == 16 => Some(off),
                            _ => None,
                        };
                        assert_eq!(
                            one_run16(q0, npx, wrow, w_out, h_out),
                            want,
                            "q0 {q0} npx {npx} wrow {wrow} w_out {w_out} h_out {h_out}"
                        );
                        seen[usize::from(want.is_some())] += 1;
                    }
                }
            }
        }
        assert!(seen[0] > 100 && seen[1] > 100, "{seen:?}");
    }
    use crate::rng::Rng;

    /// The activations' maximum (AVX2 where the CPU has it: 128-byte steps, then the tail)
    /// equals the scalar fold on every length around the step, both flips, and with the
    /// padding value the largest.
    #[test]
    fn activation_maximum_matches_the_scalar_fold() {
        let mut rng = Rng::new(0xac7);
        for len in (0..300).chain([1023, 4096 + 77]) {
            let x: Vec<u8> = (0..len).map(|_| rng.below(200) as u8).collect();
            for flip in [0u8, 0x80] {
                for z in [0u8, 3, 250] {
                    let want = x.iter().fold(z, |m, &v| m.max(v ^ flip));
                    assert_eq!(act_max(&x, flip, z), want, "len {len} flip {flip} z {z}");
                }
            }
            // The largest value in the last byte, then in the first.
            if len > 0 {
                let mut y = x.clone();
                y[len - 1] = 255;
                assert_eq!(act_max(&y, 0, 0), 255, "last of {len}");
                y[len - 1] = 0;
                y[0] = 254;
                assert_eq!(act_max(&y, 0, 0), 254, "first of {len}");
            }
        }
    }
}
