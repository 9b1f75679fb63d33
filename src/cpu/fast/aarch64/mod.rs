//! AArch64 NEON kernels of the `neon-dotprod` path ([`super::Isa::NeonDot`]): the int8 GEMM
//! micro-kernel and the int8 depthwise kernel (unit strides) on `sdot`, the f32 GEMM
//! micro-kernel and f32 depthwise kernel (unit column stride) on `fmla`, and register-only
//! loops of both instructions for `squint bench`'s peaks. Everything else on AArch64 runs
//! the portable kernels, which compilers vectorize (the other int8 depthwise rows to
//! `smlal`, the f32 ones to `fmla`).
//!
//! `sdot` multiplies **signed** bytes by signed bytes (four products summed into each int32
//! lane, no saturation). The activations are u8 (`u`, see the module docs of `fast`), so the
//! repack stores them as `s = u ^ 0x80`, which read as i8 is `u − 128`, and the kernel computes
//!
//! ```text
//! Σ_k s_k·w_k = Σ_k u_k·w_k − 128·Σ_k w_k
//! ```
//!
//! The caller's `init` includes `+128·Σ_k w_k` of each panel lane (`Panels::kernel_init`), so
//! the tile holds `Σ u·w + init` exactly as on every other path (wrapping int32).
//!
//! `sdot`'s intrinsics (`vdotq_laneq_s32`) are not stable Rust yet; the kernel emits the
//! instruction with `asm!`, one instruction per statement, so the compiler still allocates
//! the registers and schedules the loads.

use std::arch::aarch64::*;
use std::arch::asm;

/// Accumulator chains of the peak loops (`sdot` has a latency of 3–4 cycles and issues on
/// two to four pipes: 16 independent chains keep every pipe busy).
pub(crate) const CHAINS: usize = 16;

/// `acc += Σ_{j<4} a[4i + j] · w[4L + j]` per int32 lane `i` (`sdot acc.4s, a.16b, w.4b[L]`).
#[inline(always)]
fn sdot_lane<const L: usize>(acc: int32x4_t, a: int8x16_t, w: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction; the callers run only where the dot-product
    // extension was detected (they are `#[target_feature(enable = "dotprod")]`).
    unsafe {
        match L {
            0 => asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[0]", inout(vreg) acc, in(vreg) a,
                      in(vreg) w, options(pure, nomem, nostack, preserves_flags)),
            1 => asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[1]", inout(vreg) acc, in(vreg) a,
                      in(vreg) w, options(pure, nomem, nostack, preserves_flags)),
            2 => asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[2]", inout(vreg) acc, in(vreg) a,
                      in(vreg) w, options(pure, nomem, nostack, preserves_flags)),
            _ => asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[3]", inout(vreg) acc, in(vreg) a,
                      in(vreg) w, options(pure, nomem, nostack, preserves_flags)),
        }
    }
    acc
}

/// The int8 GEMM tile of the `neon-dotprod` path: `out[r][p] = init[r] + Σ_{t, cb} Σ_{j<4}
/// s[offs[t] + cb·cbs + 4p + j] · w[t][cb][r][j]` (wrapping int32) for the 4 channels of a
/// panel and `4·MV` pixels, where `s` are the activation bytes read as i8 (stored
/// `u ^ 0x80`, see the module docs). Weights `[t][cb][4][4]` i8: one 16-byte vector per
/// (tap, block), channel `r` in lane `r`.
///
/// 4·MV int32x4 accumulators (16 for MV = 4), MV activation vectors and one weight vector
/// per step: 4·MV `sdot`s for MV + 1 loads.
///
/// # Safety
/// The CPU must have the dot-product extension; `act` must be readable at
/// `offs[t] + cb·cbs + [0, 16·MV)` for every tap `t` and block `cb < ncb`, `w` at
/// `[0, 16·offs.len()·ncb)`.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn gemm_i8_sdot<const MV: usize>(
    act: *const u8,
    offs: &[usize],
    cbs: usize,
    ncb: usize,
    w: *const u8,
    out: &mut [[i32; 64]; 6],
    init: &[i32; 6],
) {
    let mut acc: [[int32x4_t; MV]; 4] = std::array::from_fn(|r| [vdupq_n_s32(init[r]); MV]);
    let mut wp = w.cast::<i8>();
    for &off in offs {
        // SAFETY: the caller guarantees every read below (see # Safety).
        unsafe {
            let mut a = act.add(off).cast::<i8>();
            for _ in 0..ncb {
                let wv = vld1q_s8(wp);
                let av: [int8x16_t; MV] = std::array::from_fn(|v| vld1q_s8(a.add(16 * v)));
                for v in 0..MV {
                    acc[0][v] = sdot_lane::<0>(acc[0][v], av[v], wv);
                    acc[1][v] = sdot_lane::<1>(acc[1][v], av[v], wv);
                    acc[2][v] = sdot_lane::<2>(acc[2][v], av[v], wv);
                    acc[3][v] = sdot_lane::<3>(acc[3][v], av[v], wv);
                }
                wp = wp.add(16);
                a = a.add(cbs);
            }
        }
    }
    for (row, acc) in out.iter_mut().zip(&acc) {
        for (v, &lanes) in acc.iter().enumerate() {
            // SAFETY: 4·MV ≤ 16 ≤ 64 lanes per row.
            unsafe { vst1q_s32(row.as_mut_ptr().add(4 * v), lanes) };
        }
    }
}

/// The f32 GEMM tile of the `neon-dotprod` path: `out[r][p] = Σ_{t, c} act[offs[t] + c·cs +
/// p] · w[(t·nc + c)·pnr + r]` for the first `NR` channels and `4·MV` pixels, each sum in the
/// order of every path (`acc = fma(x, w, acc)` over taps, then channels, from 0; `fmla` is
/// fused like `vfmadd` and `f32::mul_add`), so that every path gives the same bits.
///
/// `NR·MV` float32x4 accumulators (24 for 6 × 4), MV activation vectors per step, each
/// weight a scalar operand of `fmla` (by element).
///
/// # Safety
/// `act` must be readable at `offs[t] + c·cs + [0, 4·MV)` for every tap `t` and `c < nc`,
/// `w` at `[0, offs.len()·nc·pnr)`; `NR ≤ pnr` and `NR ≤ 6`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn gemm_f32_neon<const NR: usize, const MV: usize>(
    act: *const f32,
    offs: &[usize],
    cs: usize,
    nc: usize,
    w: *const f32,
    pnr: usize,
    out: &mut [[f32; 64]; 6],
) {
    let mut acc = [[vdupq_n_f32(0.0); MV]; NR];
    let mut wp = w;
    for &off in offs {
        // SAFETY: the caller guarantees every read below (see # Safety).
        unsafe {
            let mut p = act.add(off);
            for _ in 0..nc {
                let a: [float32x4_t; MV] = std::array::from_fn(|v| vld1q_f32(p.add(4 * v)));
                for (r, accr) in acc.iter_mut().enumerate() {
                    let b = *wp.add(r);
                    for v in 0..MV {
                        accr[v] = vfmaq_n_f32(accr[v], a[v], b);
                    }
                }
                wp = wp.add(pnr);
                p = p.add(cs);
            }
        }
    }
    for (row, acc) in out.iter_mut().zip(&acc) {
        for (v, &lanes) in acc.iter().enumerate() {
            // SAFETY: 4·MV ≤ 16 ≤ 64 lanes per row.
            unsafe { vst1q_f32(row.as_mut_ptr().add(4 * v), lanes) };
        }
    }
}

/// The int8 depthwise conv of one output channel with unit strides and column dilation on
/// `sdot`, over a flat padded plane of `sdot` bytes (`u ^ 0x80`, see the module docs), as
/// the x86 `dw_i8_flat_avxvnni` kernel does with `vpdpbusd`: the flat positions go by blocks
/// of 16, each computed as four *phases* `s < 4` of 4 lanes (lane `l` of phase `s` is
/// position `q0 + 4l + s`), so that taps `4j .. 4j + 4` of kernel row `ky` of those 4
/// positions are the 16 bytes loaded at `q0 + s + ky·row_step + 4j`, an `sdot` operand as
/// they are, against the row's 4 weights `w − ζ` (one word of `wts`, 0 past the kernel). The
/// accumulators start at `init` (`(128 − z)·Σ w'`: the padded taps read `z − 128` and the
/// shift's `−128·Σ w'` is added back), so that `acc = Σ (u − z)·w'` exactly (wrapping
/// int32), and are stored in position order (a 4 × 4 transpose) to `acc[0 .. 16·blocks]`.
///
/// # Safety
/// The CPU must have the dot-product extension; `plane` readable for
/// `16·blocks + 4·NG + (kh − 1)·row_step + 16` bytes; `acc` holds `16·blocks` values; `wts`
/// holds `kh·NG` words.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn dw_i8_flat_sdot<const NG: usize>(
    plane: *const u8,
    row_step: usize,
    blocks: usize,
    wts: &[i32],
    kh: usize,
    init: i32,
    acc: &mut [i32],
) {
    assert!(acc.len() >= 16 * blocks && wts.len() >= kh * NG);
    let init = vdupq_n_s32(init);
    for b in 0..blocks {
        let mut a = [init; 4];
        // SAFETY: the caller guarantees every read (see # Safety); the stores stay inside
        // `acc` (checked above).
        unsafe {
            let mut p = plane.add(16 * b).cast::<i8>();
            for ky in 0..kh {
                for j in 0..NG {
                    let wv = vreinterpretq_s8_s32(vdupq_n_s32(wts[ky * NG + j]));
                    for (s, av) in a.iter_mut().enumerate() {
                        *av = sdot_lane::<0>(*av, vld1q_s8(p.add(s + 4 * j)), wv);
                    }
                }
                p = p.add(row_step);
            }
            // Row l of the transpose: positions 4l .. 4l + 3 (phase s's lane l).
            let t0 = vtrn1q_s32(a[0], a[1]);
            let t1 = vtrn2q_s32(a[0], a[1]);
            let t2 = vtrn1q_s32(a[2], a[3]);
            let t3 = vtrn2q_s32(a[2], a[3]);
            let r = |x: int32x4_t| vreinterpretq_s64_s32(x);
            let back = |x: int64x2_t| vreinterpretq_s32_s64(x);
            let dst = acc.as_mut_ptr().add(16 * b);
            vst1q_s32(dst, back(vtrn1q_s64(r(t0), r(t2))));
            vst1q_s32(dst.add(4), back(vtrn1q_s64(r(t1), r(t3))));
            vst1q_s32(dst.add(8), back(vtrn2q_s64(r(t0), r(t2))));
            vst1q_s32(dst.add(12), back(vtrn2q_s64(r(t1), r(t3))));
        }
    }
}

/// The f32 depthwise kernel of the `neon-dotprod` path (unit column stride): `R` output rows ×
/// `NV` vectors of 4 columns, as the x86 `dw_avx2` kernel. For row `r`, lane `l` of vector
/// `v`: `acc = fma chain over t of p[r·rs + offs[t] + 4v + l] · w[t]` (taps in order, from 0,
/// as on every path), then `acc + bias`, stored at `out[r·os + 4v + l]` as f32, or as i32
/// (truncating; the caller guarantees exact integers) when `I32` is set. Only the first
/// `tail` lanes of the last vector are stored.
///
/// # Safety
/// `p` readable at `r·rs + offs[t] + [0, 4·NV)` for every row and tap; `out` writable at
/// `r·os + [0, 4·(NV−1) + tail)`; `1 <= tail <= 4`; `w` holds `offs.len()` weights.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dw_neon<const NV: usize, const R: usize, const I32: bool>(
    p: *const f32,
    rs: usize,
    offs: &[usize],
    w: &[f32],
    bias: f32,
    out: *mut f32,
    os: usize,
    tail: usize,
) {
    let mut acc = [[vdupq_n_f32(0.0); NV]; R];
    for (&off, &wt) in offs.iter().zip(w) {
        for (r, accr) in acc.iter_mut().enumerate() {
            // SAFETY: the caller guarantees the reads (see # Safety).
            let q = unsafe { p.add(r * rs + off) };
            for (v, a) in accr.iter_mut().enumerate() {
                *a = vfmaq_n_f32(*a, unsafe { vld1q_f32(q.add(4 * v)) }, wt);
            }
        }
    }
    let b = vdupq_n_f32(bias);
    for (r, accr) in acc.iter().enumerate() {
        for (v, &a) in accr.iter().enumerate() {
            let y = vaddq_f32(a, b);
            let mut lanes = [0f32; 4];
            if I32 {
                let t = vcvtq_s32_f32(y);
                // SAFETY: a local array of 4 lanes.
                unsafe { vst1q_s32(lanes.as_mut_ptr().cast(), t) };
            } else {
                // SAFETY: as above.
                unsafe { vst1q_f32(lanes.as_mut_ptr(), y) };
            }
            let n = if v + 1 == NV { tail } else { 4 };
            // SAFETY: the caller guarantees the writes (see # Safety).
            let d = unsafe { std::slice::from_raw_parts_mut(out.add(r * os + 4 * v), n) };
            d.copy_from_slice(&lanes[..n]);
        }
    }
}

/// Register-only loops of the kernels' instructions, for `squint bench`'s peaks (see
/// `fast::peak`): `CHAINS` independent accumulators, `iters` steps each.
pub(crate) mod peak {
    use super::*;

    /// `sdot` on 16 bytes (16 multiply-adds per instruction); returns the lanes' sum.
    ///
    /// # Safety
    /// The CPU must have the dot-product extension.
    #[target_feature(enable = "neon,dotprod")]
    pub(crate) unsafe fn sdot(iters: u64, seed: i32) -> i64 {
        let a = std::hint::black_box(vreinterpretq_s8_s32(vdupq_n_s32(seed)));
        let b = std::hint::black_box(vreinterpretq_s8_s32(vdupq_n_s32(seed.wrapping_mul(7) | 1)));
        let mut accs = [vdupq_n_s32(0); CHAINS];
        for _ in 0..iters {
            for acc in accs.iter_mut() {
                *acc = sdot_lane::<1>(*acc, a, b);
            }
        }
        accs.iter().map(|&v| vaddlvq_s32(v)).sum()
    }

    /// f32 `fmla` on 4 lanes (4 multiply-adds per instruction); returns the lanes' sum,
    /// truncated.
    ///
    /// # Safety
    /// NEON must be available (it is on every AArch64 Linux, macOS and Windows target).
    #[target_feature(enable = "neon")]
    pub(crate) unsafe fn fmla(iters: u64, seed: i32) -> i64 {
        let a = std::hint::black_box(vdupq_n_f32(1.0 + seed as f32 * 1e-9));
        let b = std::hint::black_box(vdupq_n_f32(0.999_999));
        let mut accs = [vdupq_n_f32(0.0); CHAINS];
        for _ in 0..iters {
            for acc in accs.iter_mut() {
                *acc = vfmaq_f32(*acc, a, b);
            }
        }
        accs.iter().map(|&v| vaddvq_f32(v) as i64).sum()
    }
}
