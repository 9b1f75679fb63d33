//! `QLinearAdd` (com.microsoft): `MlasQLinearAdd` (`onnxruntime/core/mlas/lib/qladd.cpp`).
//!
//! With `rA = f32(sA / sC)` and `rB = f32(sB / sC)`, the x86 kernels compute, per element,
//!
//! * AVX2 (`MlasQLinearAddKernelAvx2Helper`, `intrinsics/avx2/qladd_avx2.cpp`):
//!   `fma(a, rA, fma(b, rB, F))` with `F = f32(zC - fma(rA, zA, f32(rB * zB)))`. The source
//!   writes `F = zC - (rA*zA + rB*zB)` and, for a scalar B, `F + b*rB` with separate
//!   `_mm256_mul_ps` / `_mm256_add_ps`; the compiler contracts both into FMAs (that file is
//!   built with `-mfma`), which the probe fixtures `qlinear_add_*probe*` confirm: the
//!   uncontracted formulas miss some of their outputs. A scalar B therefore gives the same
//!   formula as a full B.
//! * SSE2 (`MlasQLinearAddKernelHelper`, `qladd.cpp`, built without FMA):
//!   `f32(f32(F + f32(a * rA)) + f32(b * rB))` with `F = f32(zC - f32(f32(rA zA) + f32(rB zB)))`;
//!   with a scalar B, `f32(F' + f32(a * rA))` with `F' = f32(F + f32(b * rB))` (not checked
//!   against ORT: this machine runs the AVX2 kernel);
//!
//! then `_mm*_cvtps_epi32` (round half to even) and saturating packs to 8 bits. The portable
//! C++ path (`MlasQLinearAddKernelRawHelper`) is different again:
//! `rne(f32(clamp(f32(f32(sA (a - zA)) + f32(sB (b - zB))) / sC) + zC))`.

use super::qdq::{check_qparams, cvtps_epi32};
use crate::error::{Error, Result};
use crate::quant::QParams;

/// Which `MlasQLinearAdd` kernel ORT dispatched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QLinearAddKernel {
    /// x86-64 with AVX2 and FMA3 (`MlasQLinearAddU8KernelAvx2`; AVX-512 machines run it too).
    Avx2,
    /// x86-64 without AVX2 (SSE2 kernel of `qladd.cpp`).
    Sse2,
    /// The portable C++ kernel (`MlasQLinearAddKernelRawHelper`), used where MLAS has no
    /// vector kernel and, on ARM, when the scale ratios leave the fixed-point range.
    Raw,
}

/// `QLinearAdd` of two tensors with equal element counts, or with one of them a single
/// element (ORT's scalar broadcast: a scalar A is swapped into B's place, the op being
/// symmetric). Returns stored bytes of `c_qp`'s type; all three types must match.
pub fn qlinear_add(
    kernel: QLinearAddKernel,
    a: &[u8],
    a_qp: &QParams,
    b: &[u8],
    b_qp: &QParams,
    c_qp: &QParams,
) -> Result<Vec<u8>> {
    for (what, qp) in [("a", a_qp), ("b", b_qp), ("c", c_qp)] {
        check_qparams(&format!("QLinearAdd {what}"), qp)?;
    }
    if a_qp.dtype != b_qp.dtype || a_qp.dtype != c_qp.dtype {
        return Err(Error::InvalidParameter(format!(
            "QLinearAdd: types differ (a {}, b {}, c {})",
            a_qp.dtype, b_qp.dtype, c_qp.dtype
        )));
    }
    let (a, a_qp, b, b_qp) = if a.len() == 1 && b.len() != 1 {
        (b, b_qp, a, a_qp)
    } else {
        (a, a_qp, b, b_qp)
    };
    let scalar_b = b.len() == 1 && a.len() != 1;
    if !scalar_b && a.len() != b.len() {
        return Err(Error::Shape(format!(
            "QLinearAdd: inputs of {} and {} elements; squint supports equal shapes and a \
             single-element operand",
            a.len(),
            b.len()
        )));
    }
    let int = |q: u8, qp: &QParams| qp.dtype.byte_to_int(q);
    let range = c_qp.dtype.full_range();
    let store = |v: f32| c_qp.dtype.int_to_byte(range.clamp(cvtps_epi32(v)));
    let (ra, rb) = (a_qp.scale / c_qp.scale, b_qp.scale / c_qp.scale);
    let zc = c_qp.zero_point as f32;
    let (za, zb) = (a_qp.zero_point as f32, b_qp.zero_point as f32);
    let fixed = match kernel {
        QLinearAddKernel::Avx2 => zc - ra.mul_add(za, rb * zb),
        _ => zc - (ra * za + rb * zb),
    };
    let b_at = |i: usize| int(b[if scalar_b { 0 } else { i }], b_qp) as f32;
    Ok(a.iter()
        .enumerate()
        .map(|(i, &qa)| {
            let av = int(qa, a_qp) as f32;
            match kernel {
                QLinearAddKernel::Avx2 => store(av.mul_add(ra, b_at(i).mul_add(rb, fixed))),
                QLinearAddKernel::Sse2 if scalar_b => store((fixed + b_at(0) * rb) + av * ra),
                QLinearAddKernel::Sse2 => store((fixed + av * ra) + b_at(i) * rb),
                QLinearAddKernel::Raw => {
                    let va = a_qp.scale * (int(qa, a_qp) - a_qp.zero_point) as f32;
                    let ib = int(b[if scalar_b { 0 } else { i }], b_qp);
                    let vb = b_qp.scale * (ib - b_qp.zero_point) as f32;
                    let lo = (range.min - c_qp.zero_point) as f32;
                    let hi = (range.max - c_qp.zero_point) as f32;
                    let v = ((va + vb) / c_qp.scale).clamp(lo, hi);
                    c_qp.dtype.int_to_byte((v + zc).round_ties_even() as i32)
                }
            }
        })
        .collect())
}
