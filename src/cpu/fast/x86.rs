//! x86-64 SIMD kernels (AVX-512 VNNI, AVX-VNNI, AVX2 + FMA, SSE2).
//!
//! Every function here is `unsafe` and `#[target_feature]`: callers must have checked the
//! features at run time (the [`super::Isa`] a conv was packed for is checked available when
//! packing), and must pass pointers valid for the reads and writes documented per function.

// The AVX-512 / AVX-VNNI intrinsics and target features are stable since Rust 1.89, above the
// crate's declared `rust-version` (1.85); the dependency tree already needs Rust >= 1.90, so
// the declared MSRV is not buildable anyway (it should be raised to 1.90).
#![allow(clippy::incompatible_msrv)]

use crate::quant::{Epilogue, QDtype, RequantFormula};
use std::arch::x86_64::*;

/// Accumulator tile: up to 6 channels × 64 pixels.
pub(super) type Tile = [[i32; 64]; 6];
/// Float accumulator tile: up to 6 channels × 64 pixels.
pub(super) type TileF = [[f32; 64]; 6];

/// int8 GEMM tile on AVX-512 VNNI: `out[r][16v + l] = Σ_{t, cb} Σ_{j<4} act[...]·w[...]`
/// `+ init[r]` (wrapping int32) for `NR` channels and `16·MV` pixels.
///
/// Activations: for tap `t` and channel block `cb`, the 16·MV lanes are the 4-byte groups at
/// `act + offs[t] + cb·cbs + 64·v`. Weights: `[t][cb][NR][4]` i8 from `w`.
///
/// # Safety
/// avx512f, avx512bw and avx512vnni must be available; every activation read
/// (`act + offs[t] + cb·cbs + [0, 64·MV)`) and the `offs.len()·ncb·NR·4` weight bytes must be
/// readable.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn gemm_i8_avx512<const NR: usize, const MV: usize>(
    act: *const u8,
    offs: &[usize],
    cbs: usize,
    ncb: usize,
    w: *const u8,
    out: &mut Tile,
    init: &[i32; 6],
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); MV]; NR];
        for (accr, &i) in acc.iter_mut().zip(init) {
            *accr = [_mm512_set1_epi32(i); MV];
        }
        let mut wp = w as *const i32;
        for &off in offs {
            let mut p = act.add(off);
            for _ in 0..ncb {
                let mut a = [_mm512_setzero_si512(); MV];
                for (v, av) in a.iter_mut().enumerate() {
                    *av = _mm512_loadu_si512(p.add(64 * v).cast());
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_epi32(wp.add(r).read_unaligned());
                    for v in 0..MV {
                        accr[v] = _mm512_dpbusd_epi32(accr[v], a[v], b);
                    }
                }
                wp = wp.add(NR);
                p = p.add(cbs);
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            for (v, &x) in accr.iter().enumerate() {
                _mm512_storeu_si512(out[r].as_mut_ptr().add(16 * v).cast(), x);
            }
        }
    }
}

/// Defines a ymm GEMM tile (8 pixels per vector) with the given `vpdpbusd` intrinsic; see
/// [`gemm_i8_avx512`] for the semantics.
macro_rules! gemm_i8_ymm {
    ($(#[$doc:meta])* $name:ident, $features:literal, $dpbusd:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The features must be available; reads as for [`gemm_i8_avx512`] with 32-byte
        /// vectors.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name<const NR: usize, const MV: usize>(
            act: *const u8,
            offs: &[usize],
            cbs: usize,
            ncb: usize,
            w: *const u8,
            out: &mut Tile,
            init: &[i32; 6],
        ) {
            // SAFETY: the caller guarantees the target features and the memory ranges listed
            // in `# Safety`; every access below stays inside them.
            unsafe {
                let mut acc = [[_mm256_setzero_si256(); MV]; NR];
                for (accr, &i) in acc.iter_mut().zip(init) {
                    *accr = [_mm256_set1_epi32(i); MV];
                }
                let mut wp = w as *const i32;
                for &off in offs {
                    let mut p = act.add(off);
                    for _ in 0..ncb {
                        let mut a = [_mm256_setzero_si256(); MV];
                        for (v, av) in a.iter_mut().enumerate() {
                            *av = _mm256_loadu_si256(p.add(32 * v).cast());
                        }
                        for (r, accr) in acc.iter_mut().enumerate() {
                            let b = _mm256_set1_epi32(wp.add(r).read_unaligned());
                            for v in 0..MV {
                                accr[v] = $dpbusd(accr[v], a[v], b);
                            }
                        }
                        wp = wp.add(NR);
                        p = p.add(cbs);
                    }
                }
                for (r, accr) in acc.iter().enumerate() {
                    for (v, &x) in accr.iter().enumerate() {
                        _mm256_storeu_si256(out[r].as_mut_ptr().add(8 * v).cast(), x);
                    }
                }
            }
        }
    };
}

gemm_i8_ymm!(
    /// The GEMM tile with ymm registers and VEX `vpdpbusd` (AVX-VNNI).
    gemm_i8_avxvnni,
    "avx2,avxvnni",
    _mm256_dpbusd_avx_epi32
);

gemm_i8_ymm!(
    /// The same ymm tile with EVEX `vpdpbusd` (AVX512-VNNI + VL): the `avx-vnni` path on CPUs
    /// with AVX-512 VNNI but without AVX-VNNI (and how that path is tested there).
    gemm_i8_avxvnni_evex,
    "avx2,avx512f,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32
);

/// The GEMM tile on AVX2 without VNNI, exact: each 32-bit activation lane `(a0, a1, a2, a3)`
/// (u8) is split into 16-bit halves `(a0, a2)` and `(a1, a3)`; weights are pre-split at pack
/// time into `(w0, w2)` and `(w1, w3)` (i16, sign-extended), layout `[t][cb][NR][2]` i32 words.
/// `vpmaddwd` then gives `a0·w0 + a2·w2` and `a1·w1 + a3·w3` exactly (|pair sum| ≤ 2·255·128),
/// unlike `vpmaddubsw`, whose int16 pair sums saturate.
///
/// # Safety
/// avx2 must be available; reads as for [`gemm_i8_avx512`] with 32-byte vectors, and
/// `offs.len()·ncb·NR·8` weight bytes.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn gemm_i8_avx2<const NR: usize, const MV: usize>(
    act: *const u8,
    offs: &[usize],
    cbs: usize,
    ncb: usize,
    w: *const u8,
    out: &mut Tile,
    init: &[i32; 6],
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); MV]; NR];
        for (accr, &i) in acc.iter_mut().zip(init) {
            *accr = [_mm256_set1_epi32(i); MV];
        }
        let lo_bytes = _mm256_set1_epi16(0x00ff);
        let mut wp = w as *const i32;
        for &off in offs {
            let mut p = act.add(off);
            for _ in 0..ncb {
                let mut ae = [_mm256_setzero_si256(); MV];
                let mut ao = [_mm256_setzero_si256(); MV];
                for v in 0..MV {
                    let a = _mm256_loadu_si256(p.add(32 * v).cast());
                    ae[v] = _mm256_and_si256(a, lo_bytes);
                    ao[v] = _mm256_srli_epi16::<8>(a);
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let we = _mm256_set1_epi32(wp.add(2 * r).read_unaligned());
                    let wo = _mm256_set1_epi32(wp.add(2 * r + 1).read_unaligned());
                    for v in 0..MV {
                        let s = _mm256_add_epi32(
                            _mm256_madd_epi16(ae[v], we),
                            _mm256_madd_epi16(ao[v], wo),
                        );
                        accr[v] = _mm256_add_epi32(accr[v], s);
                    }
                }
                wp = wp.add(2 * NR);
                p = p.add(cbs);
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            for (v, &x) in accr.iter().enumerate() {
                _mm256_storeu_si256(out[r].as_mut_ptr().add(8 * v).cast(), x);
            }
        }
    }
}

/// f32 GEMM tile on AVX-512: `out[r][16v + l] = fma chain over (t, c)` of
/// `act[t][c][pixel]·w[t][c][r]`, in the documented order.
///
/// Activations: for tap `t` and channel `c`, the 16·MV pixels are the f32 at
/// `act + offs[t] + c·cs + 16·v` (offsets in elements). Weights: `[t][c][NR]` f32.
///
/// # Safety
/// avx512f must be available; all reads in range as for [`gemm_i8_avx512`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gemm_f32_avx512<const NR: usize, const MV: usize>(
    act: *const f32,
    offs: &[usize],
    cs: usize,
    nc: usize,
    w: *const f32,
    out: &mut TileF,
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); MV]; NR];
        let mut wp = w;
        for &off in offs {
            let mut p = act.add(off);
            for _ in 0..nc {
                let mut a = [_mm512_setzero_ps(); MV];
                for (v, av) in a.iter_mut().enumerate() {
                    *av = _mm512_loadu_ps(p.add(16 * v));
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*wp.add(r));
                    for v in 0..MV {
                        accr[v] = _mm512_fmadd_ps(a[v], b, accr[v]);
                    }
                }
                wp = wp.add(NR);
                p = p.add(cs);
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            for (v, &x) in accr.iter().enumerate() {
                _mm512_storeu_ps(out[r].as_mut_ptr().add(16 * v), x);
            }
        }
    }
}

/// f32 GEMM tile on AVX2 + FMA (8 pixels per vector); see [`gemm_f32_avx512`].
///
/// # Safety
/// avx2 and fma must be available; all reads in range.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_f32_avx2<const NR: usize, const MV: usize>(
    act: *const f32,
    offs: &[usize],
    cs: usize,
    nc: usize,
    w: *const f32,
    out: &mut TileF,
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); MV]; NR];
        let mut wp = w;
        for &off in offs {
            let mut p = act.add(off);
            for _ in 0..nc {
                let mut a = [_mm256_setzero_ps(); MV];
                for (v, av) in a.iter_mut().enumerate() {
                    *av = _mm256_loadu_ps(p.add(8 * v));
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let b = _mm256_set1_ps(*wp.add(r));
                    for v in 0..MV {
                        accr[v] = _mm256_fmadd_ps(a[v], b, accr[v]);
                    }
                }
                wp = wp.add(NR);
                p = p.add(cs);
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            for (v, &x) in accr.iter().enumerate() {
                _mm256_storeu_ps(out[r].as_mut_ptr().add(8 * v), x);
            }
        }
    }
}

/// `round_f32_to_i32` of the epilogue on 16 lanes: round half to even, clamp to ±1e9 (exact
/// integers in f32, so clamping before or after rounding is the same), NaN → 0.
#[inline]
#[target_feature(enable = "avx512f")]
fn round_clamp_512(v: __m512) -> __m512i {
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    let c = _mm512_min_ps(
        _mm512_max_ps(v, _mm512_set1_ps(-1.0e9)),
        _mm512_set1_ps(1.0e9),
    );
    let r = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(c);
    _mm512_maskz_mov_epi32(!nan, r)
}

/// `round_f32_to_i32` on 8 lanes (see [`round_clamp_512`]).
#[inline]
#[target_feature(enable = "avx2")]
fn round_clamp_256(v: __m256) -> __m256i {
    let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    let c = _mm256_min_ps(
        _mm256_max_ps(v, _mm256_set1_ps(-1.0e9)),
        _mm256_set1_ps(1.0e9),
    );
    let r = _mm256_cvtps_epi32(_mm256_round_ps::<
        { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
    >(c));
    _mm256_andnot_si256(nan, r)
}

/// The broadcast constants of one channel's epilogue.
struct Requant512 {
    formula: RequantFormula,
    /// No NaN can arise (see [`requant_row_avx512`]): clamp in the float domain instead.
    finite: bool,
    /// The output clamp as floats, relative to the zero point for qnnpack and fbgemm (which
    /// add it after rounding).
    lo_f: __m512,
    hi_f: __m512,
    lo: __m512i,
    hi: __m512i,
    zp: __m512i,
    zpf: __m512,
    bias_i: __m512i,
    bias_f: __m512,
    mult: __m512,
    mult2: __m512,
    inv: __m512,
}

/// [`Epilogue::apply`] (float formulas) on 16 accumulators, clamped.
#[inline]
#[target_feature(enable = "avx512f")]
fn requant_512(k: &Requant512, a: __m512i) -> __m512i {
    if k.finite {
        // round(clamp(v, lo', hi')) == clamp(round(clamp(v, ±1e9)), lo', hi') for the integer
        // bounds lo', hi' (|lo'|, |hi'| < 1e9): rounding is monotone.
        let clamp_round = |v: __m512| {
            _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_min_ps(_mm512_max_ps(v, k.lo_f), k.hi_f),
            )
        };
        return match k.formula {
            RequantFormula::Qnnpack => {
                let v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a, k.bias_i)), k.mult);
                _mm512_add_epi32(clamp_round(v), k.zp)
            }
            RequantFormula::Fbgemm => {
                let v = _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(a), k.bias_f), k.mult);
                _mm512_add_epi32(clamp_round(v), k.zp)
            }
            _ => {
                let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(a), k.mult);
                v = _mm512_mul_ps(v, k.mult2);
                v = _mm512_add_ps(v, k.bias_f);
                v = _mm512_mul_ps(v, k.inv);
                v = _mm512_add_ps(v, k.zpf);
                clamp_round(v)
            }
        };
    }
    let y = match k.formula {
        RequantFormula::Qnnpack => {
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a, k.bias_i)), k.mult);
            _mm512_add_epi32(round_clamp_512(v), k.zp)
        }
        RequantFormula::Fbgemm => {
            let v = _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(a), k.bias_f), k.mult);
            _mm512_add_epi32(round_clamp_512(v), k.zp)
        }
        _ => {
            let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(a), k.mult);
            v = _mm512_mul_ps(v, k.mult2);
            v = _mm512_add_ps(v, k.bias_f);
            v = _mm512_mul_ps(v, k.inv);
            v = _mm512_add_ps(v, k.zpf);
            round_clamp_512(v)
        }
    };
    _mm512_max_epi32(_mm512_min_epi32(y, k.hi), k.lo)
}

/// [`Epilogue::apply`] for output channel `o` on 16 lanes at a time, then the byte store; the
/// float formulas use the same operations in the same order (no FMA contraction), so results
/// are identical. The fixed-point formula runs scalar.
///
/// # Safety
/// avx512f, avx512bw and avx512vl must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn requant_row_avx512(epi: &Epilogue, o: usize, acc: &[i32], out: &mut [u8]) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let n = acc.len().min(out.len());
        if epi.formula == RequantFormula::FixedPoint {
            return super::portable::requant_row(epi, o, &acc[..n], &mut out[..n]);
        }
        let c = &epi.channels[o];
        let lo = _mm512_set1_epi32(epi.clamp.min);
        let hi = _mm512_set1_epi32(epi.clamp.max);
        let zp = _mm512_set1_epi32(epi.out.zero_point);
        let zpf = _mm512_set1_ps(epi.out.zero_point as f32);
        let bias_i = _mm512_set1_epi32(c.bias_i32);
        let bias_f = _mm512_set1_ps(c.bias_f32);
        let mult = _mm512_set1_ps(c.mult);
        let mult2 = _mm512_set1_ps(c.mult2);
        let inv = _mm512_set1_ps(c.inv_out_scale);
        // NaN needs an infinite constant (`0·inf`, or `inf·0` after an overflow to inf), so
        // with finite constants (non-zero where they multiply) the NaN check can go.
        let onednn = epi.formula == RequantFormula::Onednn;
        let finite = c.mult.is_finite()
            && c.bias_f32.is_finite()
            && (!onednn
                || (c.mult2.is_finite()
                    && c.mult2 != 0.0
                    && c.inv_out_scale.is_finite()
                    && c.inv_out_scale != 0.0));
        let shift = if onednn { 0 } else { epi.out.zero_point };
        let k = Requant512 {
            formula: epi.formula,
            finite,
            lo_f: _mm512_set1_ps((epi.clamp.min - shift) as f32),
            hi_f: _mm512_set1_ps((epi.clamp.max - shift) as f32),
            lo,
            hi,
            zp,
            zpf,
            bias_i,
            bias_f,
            mult,
            mult2,
            inv,
        };
        // Restores output order after the in-lane packs: dword d of the result is dword
        // 4·(d mod 4) + d/4 of the packed vector.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let unsigned = epi.out.dtype == QDtype::QUInt8;
        let mut i = 0;
        while i < n {
            let rem = (n - i).min(64);
            let mut y = [_mm512_setzero_si512(); 4];
            for (j, yj) in y.iter_mut().enumerate() {
                let left = rem.saturating_sub(16 * j).min(16);
                let m: __mmask16 = ((1u32 << left) - 1) as u16;
                *yj = requant_512(
                    &k,
                    _mm512_maskz_loadu_epi32(m, acc.as_ptr().add(i + 16 * j)),
                );
            }
            // The clamped values lie in the dtype range, so the saturating packs are exact and
            // store them as `int_to_byte` does. (Packs rather than `vpmovdb`, whose memory
            // form is slow on AMD.)
            let packed = if unsigned {
                _mm512_packus_epi16(
                    _mm512_packus_epi32(y[0], y[1]),
                    _mm512_packus_epi32(y[2], y[3]),
                )
            } else {
                _mm512_packs_epi16(
                    _mm512_packs_epi32(y[0], y[1]),
                    _mm512_packs_epi32(y[2], y[3]),
                )
            };
            let bytes = _mm512_permutexvar_epi32(order, packed);
            let m: __mmask64 = if rem == 64 { !0 } else { (1u64 << rem) - 1 };
            _mm512_mask_storeu_epi8(out.as_mut_ptr().add(i).cast(), m, bytes);
            i += rem;
        }
    }
}

/// [`Epilogue::apply`] for output channel `o`, 8 lanes at a time (see [`requant_row_avx512`]).
///
/// # Safety
/// avx2 must be available.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn requant_row_avx2(epi: &Epilogue, o: usize, acc: &[i32], out: &mut [u8]) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let n = acc.len().min(out.len());
        let body = if epi.formula == RequantFormula::FixedPoint {
            0
        } else {
            n / 8 * 8
        };
        let c = &epi.channels[o];
        let lo = _mm256_set1_epi32(epi.clamp.min);
        let hi = _mm256_set1_epi32(epi.clamp.max);
        let zp = _mm256_set1_epi32(epi.out.zero_point);
        let zpf = _mm256_set1_ps(epi.out.zero_point as f32);
        let bias_i = _mm256_set1_epi32(c.bias_i32);
        let bias_f = _mm256_set1_ps(c.bias_f32);
        let mult = _mm256_set1_ps(c.mult);
        let mult2 = _mm256_set1_ps(c.mult2);
        let inv = _mm256_set1_ps(c.inv_out_scale);
        let mut tmp = [0i32; 8];
        for i in (0..body).step_by(8) {
            let a = _mm256_loadu_si256(acc.as_ptr().add(i).cast());
            let y = match epi.formula {
                RequantFormula::Qnnpack => {
                    let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a, bias_i)), mult);
                    _mm256_add_epi32(round_clamp_256(v), zp)
                }
                RequantFormula::Fbgemm => {
                    let v = _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(a), bias_f), mult);
                    _mm256_add_epi32(round_clamp_256(v), zp)
                }
                _ => {
                    let mut v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), mult);
                    v = _mm256_mul_ps(v, mult2);
                    v = _mm256_add_ps(v, bias_f);
                    v = _mm256_mul_ps(v, inv);
                    v = _mm256_add_ps(v, zpf);
                    round_clamp_256(v)
                }
            };
            let y = _mm256_max_epi32(_mm256_min_epi32(y, hi), lo);
            _mm256_storeu_si256(tmp.as_mut_ptr().cast(), y);
            for (d, &t) in out[i..i + 8].iter_mut().zip(&tmp) {
                *d = t as u8;
            }
        }
        super::portable::requant_row(epi, o, &acc[body..n], &mut out[body..n]);
    }
}

/// Interleaves four byte rows into 4-byte lanes: `dst[4i + j] = src_j[i] ^ flip`, for
/// `i < n`.
///
/// # Safety
/// The four sources must be readable for `n` bytes and `dst` writable for `4n` bytes (SSE2 is
/// part of x86-64).
pub(super) unsafe fn interleave4(src: [*const u8; 4], n: usize, flip: u8, dst: *mut u8) {
    let f = _mm_set1_epi8(flip as i8);
    let mut i = 0;
    // SAFETY: every access is below n (sources) or 4n (destination), as the caller guarantees.
    unsafe {
        while i + 16 <= n {
            let r0 = _mm_xor_si128(_mm_loadu_si128(src[0].add(i).cast()), f);
            let r1 = _mm_xor_si128(_mm_loadu_si128(src[1].add(i).cast()), f);
            let r2 = _mm_xor_si128(_mm_loadu_si128(src[2].add(i).cast()), f);
            let r3 = _mm_xor_si128(_mm_loadu_si128(src[3].add(i).cast()), f);
            let ab_lo = _mm_unpacklo_epi8(r0, r1);
            let ab_hi = _mm_unpackhi_epi8(r0, r1);
            let cd_lo = _mm_unpacklo_epi8(r2, r3);
            let cd_hi = _mm_unpackhi_epi8(r2, r3);
            let d = dst.add(4 * i);
            _mm_storeu_si128(d.cast(), _mm_unpacklo_epi16(ab_lo, cd_lo));
            _mm_storeu_si128(d.add(16).cast(), _mm_unpackhi_epi16(ab_lo, cd_lo));
            _mm_storeu_si128(d.add(32).cast(), _mm_unpacklo_epi16(ab_hi, cd_hi));
            _mm_storeu_si128(d.add(48).cast(), _mm_unpackhi_epi16(ab_hi, cd_hi));
            i += 16;
        }
        while i < n {
            for (j, s) in src.iter().enumerate() {
                *dst.add(4 * i + j) = *s.add(i) ^ flip;
            }
            i += 1;
        }
    }
}

/// Depthwise kernel on AVX-512: `R` output rows × `NV` vectors of 16 columns. For row `r`,
/// lane `l` of vector `v`: `acc = fma chain over t of p[r·rs + offs[t] + 16v + l] · w[t]`
/// (taps in order, from 0), then `acc + bias`, stored at `out[r·os + 16v + l]` as f32, or as
/// i32 (truncating; the caller guarantees exact integers) when `I32` is set. Only the first
/// `tail` lanes of the last vector are stored.
///
/// # Safety
/// avx512f must be available; `p` readable at `r·rs + offs[t] + [0, 16·NV)` for every row and
/// tap; `out` writable at `r·os + [0, 16·(NV−1) + tail)`; `1 <= tail <= 16`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dw_avx512<const NV: usize, const R: usize, const I32: bool>(
    p: *const f32,
    rs: usize,
    offs: &[usize],
    w: &[f32],
    bias: f32,
    out: *mut f32,
    os: usize,
    tail: usize,
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        for (&off, &wt) in offs.iter().zip(w) {
            let wv = _mm512_set1_ps(wt);
            for (r, accr) in acc.iter_mut().enumerate() {
                let q = p.add(r * rs + off);
                for (v, a) in accr.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(q.add(16 * v)), wv, *a);
                }
            }
        }
        let b = _mm512_set1_ps(bias);
        let last: __mmask16 = ((1u32 << tail) - 1) as u16;
        for (r, accr) in acc.iter().enumerate() {
            for (v, &a) in accr.iter().enumerate() {
                let y = _mm512_add_ps(a, b);
                let m = if v + 1 == NV { last } else { 0xffff };
                let d = out.add(r * os + 16 * v);
                if I32 {
                    _mm512_mask_storeu_epi32(d.cast(), m, _mm512_cvttps_epi32(y));
                } else {
                    _mm512_mask_storeu_ps(d, m, y);
                }
            }
        }
    }
}

/// Depthwise kernel on AVX2 + FMA (8 lanes per vector); see [`dw_avx512`] (`tail` in 1..=8).
///
/// # Safety
/// avx2 and fma must be available; ranges as for [`dw_avx512`] with 8-lane vectors.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dw_avx2<const NV: usize, const R: usize, const I32: bool>(
    p: *const f32,
    rs: usize,
    offs: &[usize],
    w: &[f32],
    bias: f32,
    out: *mut f32,
    os: usize,
    tail: usize,
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); NV]; R];
        for (&off, &wt) in offs.iter().zip(w) {
            let wv = _mm256_set1_ps(wt);
            for (r, accr) in acc.iter_mut().enumerate() {
                let q = p.add(r * rs + off);
                for (v, a) in accr.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(8 * v)), wv, *a);
                }
            }
        }
        let b = _mm256_set1_ps(bias);
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let last = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail as i32), lane);
        let all = _mm256_set1_epi32(-1);
        for (r, accr) in acc.iter().enumerate() {
            for (v, &a) in accr.iter().enumerate() {
                let y = _mm256_add_ps(a, b);
                let m = if v + 1 == NV { last } else { all };
                let d = out.add(r * os + 8 * v);
                if I32 {
                    _mm256_maskstore_epi32(d.cast(), m, _mm256_cvttps_epi32(y));
                } else {
                    _mm256_maskstore_ps(d, m, y);
                }
            }
        }
    }
}

/// `dst[i] = ((src[i] ^ flip) as i32 − z) as f32`: u8 activations minus their zero point.
///
/// # Safety
/// avx512f and avx512bw must be available.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn bytes_to_f32_avx512(src: &[u8], flip: u8, z: i32, dst: &mut [f32]) {
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = ((b ^ flip) as i32 - z) as f32;
    }
}

/// Depthwise int8 kernel on AVX512-VNNI: `R` output rows × `NV` vectors of 16 columns. Lane
/// `l` of vector `v` of row `r`: `init + Σ_i dot4(rp[r·rs + offs[i] + 4·(16v + l)], w[i])`
/// (wrapping int32; `rp` is the row-interleaved u8 plane, offsets in bytes), stored at
/// `out[r·os + 16v + l]`; only the first `tail` lanes of the last vector are stored.
///
/// # Safety
/// avx512f and avx512vnni must be available; `rp` readable at `r·rs + offs[i] + [0, 64·NV)`,
/// `out` writable at `r·os + [0, 16·(NV−1) + tail)`; `1 <= tail <= 16`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) unsafe fn dw_vnni_avx512<const NV: usize, const R: usize>(
    rp: *const u8,
    rs: usize,
    offs: &[usize],
    w: &[i32],
    init: i32,
    out: *mut i32,
    os: usize,
    tail: usize,
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm512_set1_epi32(init); NV]; R];
        for (&off, &wt) in offs.iter().zip(w) {
            let wv = _mm512_set1_epi32(wt);
            for (r, accr) in acc.iter_mut().enumerate() {
                let q = rp.add(r * rs + off);
                for (v, a) in accr.iter_mut().enumerate() {
                    *a = _mm512_dpbusd_epi32(*a, _mm512_loadu_si512(q.add(64 * v).cast()), wv);
                }
            }
        }
        let last: __mmask16 = ((1u32 << tail) - 1) as u16;
        for (r, accr) in acc.iter().enumerate() {
            for (v, &a) in accr.iter().enumerate() {
                let m = if v + 1 == NV { last } else { 0xffff };
                _mm512_mask_storeu_epi32(out.add(r * os + 16 * v).cast(), m, a);
            }
        }
    }
}

/// [`interleave4`] with AVX-512 (64 positions per step), then the SSE2 version for the rest.
///
/// # Safety
/// avx512f and avx512bw must be available; ranges as for [`interleave4`].
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn interleave4_avx512(src: [*const u8; 4], n: usize, flip: u8, dst: *mut u8) {
    // SAFETY: every access is below n (sources) or 4n (destination), as the caller guarantees;
    // the last step masks its loads and stores to that range.
    unsafe {
        let f = _mm512_set1_epi8(flip as i8);
        let mut i = 0;
        while i < n {
            let rem = (n - i).min(64);
            let lm: __mmask64 = if rem == 64 { !0 } else { (1u64 << rem) - 1 };
            let mut r = [_mm512_setzero_si512(); 4];
            for (rj, s) in r.iter_mut().zip(src) {
                *rj = _mm512_xor_si512(_mm512_maskz_loadu_epi8(lm, s.add(i).cast()), f);
            }
            // Per 128-bit lane k, q_m holds positions 16k + 4m .. 16k + 4m + 3.
            let ab_lo = _mm512_unpacklo_epi8(r[0], r[1]);
            let ab_hi = _mm512_unpackhi_epi8(r[0], r[1]);
            let cd_lo = _mm512_unpacklo_epi8(r[2], r[3]);
            let cd_hi = _mm512_unpackhi_epi8(r[2], r[3]);
            let q0 = _mm512_unpacklo_epi16(ab_lo, cd_lo);
            let q1 = _mm512_unpackhi_epi16(ab_lo, cd_lo);
            let q2 = _mm512_unpacklo_epi16(ab_hi, cd_hi);
            let q3 = _mm512_unpackhi_epi16(ab_hi, cd_hi);
            // 4×4 transpose of 128-bit lanes: out_k = [q0.k, q1.k, q2.k, q3.k].
            let t0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(q0, q1);
            let t1 = _mm512_shuffle_i32x4::<0b01_00_01_00>(q2, q3);
            let t2 = _mm512_shuffle_i32x4::<0b11_10_11_10>(q0, q1);
            let t3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(q2, q3);
            let out = [
                _mm512_shuffle_i32x4::<0b10_00_10_00>(t0, t1),
                _mm512_shuffle_i32x4::<0b11_01_11_01>(t0, t1),
                _mm512_shuffle_i32x4::<0b10_00_10_00>(t2, t3),
                _mm512_shuffle_i32x4::<0b11_01_11_01>(t2, t3),
            ];
            let d = dst.add(4 * i);
            for (k, &v) in out.iter().enumerate() {
                // Output bytes 64k .. 64k + 63 of this step; 4·rem are valid.
                let valid = (4 * rem).saturating_sub(64 * k).min(64);
                if valid == 64 {
                    _mm512_storeu_si512(d.add(64 * k).cast(), v);
                } else if valid > 0 {
                    _mm512_mask_storeu_epi8(d.add(64 * k).cast(), (1u64 << valid) - 1, v);
                }
            }
            i += rem;
        }
    }
}
