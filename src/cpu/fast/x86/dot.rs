//! The f64 lane sums of the float classifier's dot products (`cpu::float_ops::linear`).

use std::arch::x86_64::*;

/// For each of `R` rows, the eight lane sums `acc[r][k] = Σ_j a[8j + k]·rows[r][8j + k]` over
/// `j < a.len() / 8`, each in f64 and in order of `j`, starting from `+0.0` (the partial sums
/// of `cpu::float_ops::dot_f64`). A product of two f32 is exact in f64, so the FMA here gives
/// the bits of a multiply then an add. One zmm of sums per row: `R` independent chains.
///
/// # Safety
/// avx512f must be available; every row holds `a.len() / 8 · 8` values or more.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_lanes_f64_avx512<const R: usize>(
    a: &[f32],
    rows: [&[f32]; R],
) -> [[f64; 8]; R] {
    let mut acc = [_mm512_setzero_pd(); R];
    // SAFETY: reads of 8 values at 8j < a.len() / 8 · 8, inside `a` and every row.
    unsafe {
        for j in 0..a.len() / 8 {
            let x = _mm512_cvtps_pd(_mm256_loadu_ps(a.as_ptr().add(8 * j)));
            for (acc, row) in acc.iter_mut().zip(&rows) {
                let y = _mm512_cvtps_pd(_mm256_loadu_ps(row.as_ptr().add(8 * j)));
                *acc = _mm512_fmadd_pd(x, y, *acc);
            }
        }
    }
    let mut out = [[0f64; 8]; R];
    for (o, acc) in out.iter_mut().zip(acc) {
        // SAFETY: 8 f64 into an array of 8.
        unsafe { _mm512_storeu_pd(o.as_mut_ptr(), acc) };
    }
    out
}

/// [`dot_lanes_f64_avx512`] in two ymm of sums per row (lanes 0–3 and 4–7).
///
/// # Safety
/// avx2 and fma must be available; every row holds `a.len() / 8 · 8` values or more.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_lanes_f64_avx2<const R: usize>(
    a: &[f32],
    rows: [&[f32]; R],
) -> [[f64; 8]; R] {
    let mut acc = [[_mm256_setzero_pd(); 2]; R];
    // SAFETY: as in `dot_lanes_f64_avx512`.
    unsafe {
        for j in 0..a.len() / 8 {
            let p = a.as_ptr().add(8 * j);
            let x = [
                _mm256_cvtps_pd(_mm_loadu_ps(p)),
                _mm256_cvtps_pd(_mm_loadu_ps(p.add(4))),
            ];
            for (acc, row) in acc.iter_mut().zip(&rows) {
                let q = row.as_ptr().add(8 * j);
                let y = [
                    _mm256_cvtps_pd(_mm_loadu_ps(q)),
                    _mm256_cvtps_pd(_mm_loadu_ps(q.add(4))),
                ];
                acc[0] = _mm256_fmadd_pd(x[0], y[0], acc[0]);
                acc[1] = _mm256_fmadd_pd(x[1], y[1], acc[1]);
            }
        }
    }
    let mut out = [[0f64; 8]; R];
    for (o, acc) in out.iter_mut().zip(acc) {
        // SAFETY: 2 × 4 f64 into an array of 8.
        unsafe {
            _mm256_storeu_pd(o.as_mut_ptr(), acc[0]);
            _mm256_storeu_pd(o.as_mut_ptr().add(4), acc[1]);
        }
    }
    out
}
