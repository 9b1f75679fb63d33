//! The int8 GEMM conv with output channels in the vector lanes, for small output planes on
//! AVX-512 VNNI.
//!
//! The direct conv of [`super::int8`] puts 16 consecutive *flat* output positions in each
//! vector (rows of the padded width), so a plane whose rows are short wastes lanes: on a 14×14
//! output with one column of padding each side, 2 of every 16 lanes hold discarded positions
//! (12.5%), and tiles of whole vectors round 196 outputs up to 224. Here the vectors hold 64
//! output channels (4 zmm) and the micro-kernel takes 6 output pixels, any 6: the reduction
//! reads, for pixel `m` and tap `t`, the 4-byte channel groups of its input pixel, broadcast
//! to every lane (`vpdpbusd` with a broadcast operand), against one 64-channel weight row per
//! group of 4 input channels. No lane is wasted on padding; a 64-pixel block wastes 2 of 66
//! pixel slots, and channels are rounded up to 64.
//!
//! The accumulator is the same folded sum as the flat kernel's (see the module docs of
//! [`super`]): `acc = Σ u·w − z·Σ w` (symmetric weights only: no `Σ u` term), `u` the u8
//! activations of a padded NHWC copy of the input (padding and the channels that round `Cin`
//! up to 4 hold `z`; their weights are 0 or their `(u − z)` is). The kernel leaves each
//! pixel's 64 accumulators in a pixel row; a 64-pixel block of rows is transposed (scatters)
//! into `[channel][pixel]`, which the AVX-512 epilogue ([`super::x86::requant_tile_avx512`])
//! requantizes and stores as the flat kernel's tiles.
//!
//! Used when its lane efficiency beats the flat layout's by more than its extra costs (the NHWC
//! copy, the transposition, a micro-kernel measured about 10% slower per useful lane), see
//! [`prefer`]: on 7×7 planes (ResNet's last stage: +15% on 1x512x7x7), not on 14×14 (a tie)
//! or larger planes.

use super::{par_for, PackedConv2d, SendPtr};
use crate::quant::QParams;
use crate::shape::ConvShape;

/// Output channels per weight row (4 zmm).
const NC: usize = 64;
/// Output pixels per micro-kernel call.
const MR: usize = 6;
/// Output pixels per block (one requantization tile row).
const BLOCK: usize = 64;

/// The weights for the kernel: `[channel tile of 64][tap][Cin/4 block][64 channels][4]` i8,
/// `w[o][4cb + j][tap]` (0 past `Cout` or `Cin`).
pub(super) fn pack(w: &[i8], s: &ConvShape) -> Vec<u8> {
    let (cin, cout) = (s.c_in, s.c_out);
    let taps = s.kh * s.kw;
    let ncb = cin.div_ceil(4);
    let tiles = cout.div_ceil(NC);
    let mut out = vec![0u8; tiles * taps * ncb * NC * 4];
    for o in 0..cout {
        let (tile, lane) = (o / NC, o % NC);
        for c in 0..cin {
            for t in 0..taps {
                let at = (((tile * taps + t) * ncb + c / 4) * NC + lane) * 4 + c % 4;
                out[at] = w[(o * cin + c) * taps + t] as u8;
            }
        }
    }
    out
}

/// Whether the channels-in-lanes kernel should run shape `s` rather than the flat one whose
/// pixel tiles cover `qtot` flat positions with `nr` channels per tile: the fraction of useful
/// lanes of each, the NHWC one discounted by 10% (measured, one thread, AMD EPYC Zen 4/5
/// class: on 1x256x14x14 3x3, 96% of its lanes useful against the flat layout's 87%, the two
/// ran at the same speed; on 1x512x7x7, 91% against 76%, it ran 15% faster).
pub(super) fn prefer(s: &ConvShape, qtot: usize, nr: usize) -> bool {
    let plane = s.h_out * s.w_out;
    let flat = plane as f64 / qtot as f64 * s.c_out as f64 / (s.c_out.div_ceil(nr) * nr) as f64;
    let slots = (plane / BLOCK) * BLOCK.div_ceil(MR) * MR + (plane % BLOCK).div_ceil(MR) * MR;
    let nhwc = plane as f64 / slots as f64 * s.c_out as f64 / (s.c_out.div_ceil(NC) * NC) as f64;
    nhwc * 0.9 > flat
}

/// Copies image `n` of `x` into `buf` as the padded NHWC u8 activations `u = x ^ flip`:
/// `[Hp][Wp][4·⌈Cin/4⌉]`, `z` at padded pixels and channels.
fn repack(x: &[u8], s: &ConvShape, n: usize, flip: u8, z: u8, buf: &mut [u8]) {
    let p = &s.params;
    let (ph, pw) = (p.padding[0], p.padding[1]);
    let wp = s.w + 2 * pw;
    let cpix = 4 * s.c_in.div_ceil(4);
    buf.fill(z);
    let plane = s.h * s.w;
    let img = &x[n * s.c_in * plane..][..s.c_in * plane];
    let zrow = vec![z ^ flip; s.w];
    let mut row4 = vec![0u8; 4 * s.w];
    for y in 0..s.h {
        for cb in 0..s.c_in.div_ceil(4) {
            let src: [*const u8; 4] = std::array::from_fn(|j| {
                let c = 4 * cb + j;
                if c < s.c_in {
                    img[c * plane + y * s.w..][..s.w].as_ptr()
                } else {
                    zrow.as_ptr()
                }
            });
            // SAFETY: each source row holds `s.w` bytes, `row4` 4·w.
            unsafe { super::x86::interleave4(src, s.w, flip, row4.as_mut_ptr()) };
            let base = ((y + ph) * wp + pw) * cpix + 4 * cb;
            for (xi, q) in row4.chunks_exact(4).enumerate() {
                buf[base + xi * cpix..][..4].copy_from_slice(q);
            }
        }
    }
}

/// The conv of `pc` on input `x` (qparams `x_qp`) into the stored output bytes `out`, with the
/// kernel's weights `w` ([`pack`]), the folding constants `corr0` and the epilogue constants
/// `ks` of every output channel.
///
/// Requires AVX-512 VNNI (the layer's ISA), one group and symmetric weights.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    pc: &PackedConv2d,
    w: &[u8],
    x: &[u8],
    x_qp: &QParams,
    s: &ConvShape,
    corr0: &[i32],
    ks: &[super::x86::Requant512],
    threads: Option<usize>,
    out: &mut [u8],
) {
    use super::x86::{gemm_nhwc_avx512, requant_tile_avx512, transpose_pixels_avx512, RunMask};
    debug_assert!(s.params.groups == 1 && pc.isa == super::Isa::Avx512Vnni);
    let p = &s.params;
    let (flip, zi) = super::int8::flip_and_z(x_qp);
    let (hp, wp) = (s.h + 2 * p.padding[0], s.w + 2 * p.padding[1]);
    let ncb = s.c_in.div_ceil(4);
    let cpix = 4 * ncb;
    let taps: Vec<usize> = (0..s.kh * s.kw)
        .map(|t| ((t / s.kw) * p.dilation[0] * wp + (t % s.kw) * p.dilation[1]) * cpix)
        .collect();
    let plane_out = s.h_out * s.w_out;
    let blocks = plane_out.div_ceil(BLOCK);
    let tiles = s.c_out.div_ceil(NC);
    let tile_len = taps.len() * ncb * NC * 4;
    // One image's copy at a time; blocks × channel tiles in parallel.
    let mut buf = vec![0u8; hp * wp * cpix + 64];
    let outp = SendPtr(out.as_mut_ptr());
    for n in 0..s.n {
        repack(x, s, n, flip, zi as u8, &mut buf);
        let act = &buf[..];
        par_for(threads, blocks * tiles, |item| {
            let outp = &outp; // (the whole `Send` wrapper, not its pointer field)
            let (b, tile) = (item / tiles, item % tiles);
            let p0 = b * BLOCK;
            let npx = BLOCK.min(plane_out - p0);
            let o0 = tile * NC;
            let nch = NC.min(s.c_out - o0);
            let mut init = [0i32; NC];
            init[..nch].copy_from_slice(&corr0[o0..o0 + nch]);
            // Pixel rows of the block's accumulators, 6 per micro-tile.
            let mut px = [init; BLOCK + MR];
            let wt = &w[tile * tile_len..][..tile_len];
            // The input pixel of each output pixel of the block (past its end: the last one,
            // whose results are not stored).
            let pix: [usize; BLOCK + MR] = std::array::from_fn(|m| {
                let q = p0 + m.min(npx - 1);
                let (oy, ox) = (q / s.w_out, q % s.w_out);
                (oy * p.stride[0] * wp + ox * p.stride[1]) * cpix
            });
            // (Blocking the taps so that a chunk's weights stay in L1, every micro-tile per
            // chunk, measured slower on the 14x14 layer: the whole reduction per micro-tile.)
            for m0 in (0..npx).step_by(MR) {
                let tile_px: &mut [[i32; NC]; MR] =
                    (&mut px[m0..m0 + MR]).try_into().expect("6 pixel rows");
                let pm: &[usize; MR] = pix[m0..m0 + MR].try_into().expect("6 pixels");
                // SAFETY: the ISA was checked when packing; every read lies in the padded copy
                // (pixel and tap offsets inside the padded image, `cpix` bytes each) and in the
                // tile's weights.
                unsafe { gemm_nhwc_avx512(act.as_ptr(), pm, &taps, ncb, wt.as_ptr(), tile_px) };
            }
            // [channel][pixel of the block], 6 spare rows for the epilogue's whole tiles.
            let mut acc = [[0i32; BLOCK]; NC + MR];
            // SAFETY: the ISA was checked when packing.
            unsafe { transpose_pixels_avx512(&px[..npx], &mut acc) };
            let runs = [RunMask::new(0, p0, npx)];
            for r in (0..nch).step_by(MR) {
                let rows: &[[i32; BLOCK]; MR] =
                    acc[r..r + MR].try_into().expect("6 rows of the block");
                let o = o0 + r;
                let k = &ks[o..o + MR.min(nch - r)];
                // SAFETY: the ISA was checked when packing; the run (pixels p0 .. p0 + npx of
                // each channel's plane) lies in the output, written by this task only.
                unsafe {
                    requant_tile_avx512(
                        k,
                        rows,
                        &runs,
                        outp.0.add((n * s.c_out + o) * plane_out),
                        plane_out,
                    )
                };
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::ConvParams;

    /// The layout choice follows the measured crossover: channels in lanes on 7×7 planes, the
    /// flat layout on 14×14 and larger.
    #[test]
    fn channels_in_lanes_is_preferred_on_small_planes_only() {
        for (c, hw, want) in [
            (512, 7, true),
            (256, 14, false),
            (128, 28, false),
            (64, 56, false),
        ] {
            let s = ConvShape::new(
                [1, c, hw, hw],
                [c, c, 3, 3],
                ConvParams::default().padding(1),
            )
            .unwrap();
            let qtot = super::super::int8::Geometry::new(&s, c / 4, 64).qtot;
            assert_eq!(prefer(&s, qtot, 6), want, "{c}x{hw}x{hw}");
        }
    }
}
