//! Scalar kernels: the `portable` ISA path, and scalar tails of the SIMD paths.
//!
//! Same data layouts and the same arithmetic as the SIMD kernels (wrapping int32; f32 with
//! `mul_add`, in the same order), so every path gives the same results.

use crate::quant::Epilogue;

/// Scalar int8 GEMM tile: `out[r][p] = Σ_{t, cb} Σ_{j<4} act[offs[t] + cb·cbs + 4p + j] ·
/// w[t][cb][r][j] + init[r]` (wrapping int32), for `nr` channels and `npx` pixels. Weights `[t][cb][nr][4]`.
///
/// Panics (never reads out of bounds) if a slice is too short.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_i8(
    act: &[u8],
    offs: &[usize],
    cbs: usize,
    ncb: usize,
    w: &[u8],
    nr: usize,
    npx: usize,
    out: &mut [[i32; 64]; 6],
    init: &[i32; 6],
) {
    for (row, &i) in out.iter_mut().zip(init).take(nr) {
        row[..npx].fill(i);
    }
    let mut wi = 0;
    for &off in offs {
        for cb in 0..ncb {
            let a = &act[off + cb * cbs..][..4 * npx];
            for (r, row) in out.iter_mut().enumerate().take(nr) {
                let wr = &w[wi + 4 * r..][..4];
                let (w0, w1, w2, w3) = (
                    wr[0] as i8 as i32,
                    wr[1] as i8 as i32,
                    wr[2] as i8 as i32,
                    wr[3] as i8 as i32,
                );
                for (o, px) in row[..npx].iter_mut().zip(a.chunks_exact(4)) {
                    let s = px[0] as i32 * w0
                        + px[1] as i32 * w1
                        + px[2] as i32 * w2
                        + px[3] as i32 * w3;
                    *o = o.wrapping_add(s);
                }
            }
            wi += 4 * nr;
        }
    }
}

/// Scalar f32 GEMM tile, same order as the SIMD kernels: for each pixel,
/// `acc = 0; for t { for c { acc = mul_add(x, w, acc) } }`. Weights `[t][c][nr]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_f32(
    act: &[f32],
    offs: &[usize],
    cs: usize,
    nc: usize,
    w: &[f32],
    nr: usize,
    npx: usize,
    out: &mut [[f32; 64]; 6],
) {
    for row in out.iter_mut().take(nr) {
        row[..npx].fill(0.0);
    }
    let mut wi = 0;
    for &off in offs {
        for c in 0..nc {
            let a = &act[off + c * cs..][..npx];
            for (r, row) in out.iter_mut().enumerate().take(nr) {
                let wv = w[wi + r];
                for (o, &x) in row[..npx].iter_mut().zip(a) {
                    *o = x.mul_add(wv, *o);
                }
            }
            wi += nr;
        }
    }
}

/// `out[i] = epi.out.dtype.int_to_byte(epi.apply(acc[i], o))`.
pub(super) fn requant_row(epi: &Epilogue, o: usize, acc: &[i32], out: &mut [u8]) {
    for (d, &a) in out.iter_mut().zip(acc) {
        *d = epi.out.dtype.int_to_byte(epi.apply(a, o));
    }
}

/// Scalar `dst[4i + j] = src[j][i] ^ flip`.
#[allow(dead_code)]
pub(super) fn interleave4(src: [&[u8]; 4], flip: u8, dst: &mut [u8]) {
    for (i, d) in dst.chunks_exact_mut(4).enumerate() {
        for (j, s) in src.iter().enumerate() {
            d[j] = s[i] ^ flip;
        }
    }
}
