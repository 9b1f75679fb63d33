//! `MatMulInteger` and `QLinearMatMul`: `A [.., M, K] × B [.., K, N]`, batch dimensions equal
//! or `B` two-dimensional (shared by every batch).
//!
//! The accumulators `Σ (a - za)(b - zb)` are exact int32; `QLinearMatMul` requantizes them
//! like `QLinearConv`, with the scale `f32(f32(sa * sb) / sy)` of the output column
//! (`QLinearMatMul::Compute`, `providers/cpu/quantization/quantize_linear_matmul.cc`).

use super::conv::{requantize_channels, QWeight};
use super::qdq::check_qparams;
use crate::error::{Error, Result};
use crate::quant::{QDtype, QParams};

/// The matmul geometry: batch count, M, K, N, and whether `B` is shared by every batch.
fn geometry(a_dims: &[usize], b_dims: &[usize]) -> Result<(usize, usize, usize, usize, bool)> {
    let bad = || {
        Error::Shape(format!(
            "matmul of {a_dims:?} and {b_dims:?}: squint needs A [.., M, K] and B [K, N] or \
             B with A's batch dimensions"
        ))
    };
    if a_dims.len() < 2 || b_dims.len() < 2 {
        return Err(bad());
    }
    let (ab, am) = a_dims.split_at(a_dims.len() - 2);
    let (bb, bm) = b_dims.split_at(b_dims.len() - 2);
    if am[1] != bm[0] || !(bb.is_empty() || bb == ab) {
        return Err(bad());
    }
    let batch = crate::shape::checked_numel(ab)?;
    Ok((batch, am[0], am[1], bm[1], bb.is_empty()))
}

/// Exact accumulators of `(A - za) × (B - zb)`, row-major `[.., M, N]`, with `zb` one zero
/// point or one per column of `B`.
fn matmul_acc(
    a: &[u8],
    a_dims: &[usize],
    a_dtype: QDtype,
    a_zero_point: i32,
    b: &QWeight<'_>,
    b_dims: &[usize],
) -> Result<(Vec<i32>, usize)> {
    let (batch, m, k, n, shared) = geometry(a_dims, b_dims)?;
    crate::cpu::reference::check_data("matmul A", a.len(), a_dims)?;
    crate::cpu::reference::check_data("matmul B", b.data.len(), b_dims)?;
    QParams::new(1.0, a_zero_point, a_dtype)?;
    let (b8, b_qp) = b.as_i8(n)?;
    let mut out = Vec::with_capacity(batch * m * n);
    for bi in 0..batch {
        let b_off = if shared { 0 } else { bi * k * n };
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0i64;
                for p in 0..k {
                    let av = a_dtype.byte_to_int(a[(bi * m + i) * k + p]) - a_zero_point;
                    let bv = b8[b_off + p * n + j] as i32 - b_qp.zero_point(j);
                    acc += av as i64 * bv as i64;
                }
                out.push(i32::try_from(acc).map_err(|_| Error::AccumulatorOverflow {
                    layer: None,
                    bound: acc as i128,
                    limit: i32::MAX as i128,
                    k,
                })?);
            }
        }
    }
    Ok((out, n))
}

/// `MatMulInteger`: exact int32 `(A - za) × (B - zb)`, `zb` per tensor or per column.
pub fn matmul_integer(
    a: &[u8],
    a_dims: &[usize],
    a_dtype: QDtype,
    a_zero_point: i32,
    b: &QWeight<'_>,
    b_dims: &[usize],
) -> Result<Vec<i32>> {
    matmul_acc(a, a_dims, a_dtype, a_zero_point, b, b_dims).map(|(acc, _)| acc)
}

/// `QLinearMatMul`: the accumulators of [`matmul_integer`] requantized by
/// `MlasRequantizeOutput` with the column's scale `f32(f32(sa * sb) / sy)`; stored bytes of
/// `y_qp`'s type.
pub fn qlinear_matmul(
    a: &[u8],
    a_dims: &[usize],
    a_qp: &QParams,
    b: &QWeight<'_>,
    b_dims: &[usize],
    y_qp: &QParams,
) -> Result<Vec<u8>> {
    check_qparams("QLinearMatMul a", a_qp)?;
    check_qparams("QLinearMatMul y", y_qp)?;
    if b.scales.is_empty() {
        return Err(Error::InvalidParameter("QLinearMatMul: no b scale".into()));
    }
    let (acc, n) = matmul_acc(a, a_dims, a_qp.dtype, a_qp.zero_point, b, b_dims)?;
    // Columns play the part of conv output channels, with a "plane" of one element.
    requantize_channels(&acc, n, 1, a_qp.scale, b.scales, None, y_qp)
}
