//! `MatMulInteger`, `QLinearMatMul` and `QGemm`: `A [.., M, K] × B [.., K, N]`, batch dimensions equal
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

/// Attributes of `QGemm` (com.microsoft).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QGemmAttrs {
    /// `alpha`, folded into the output scale.
    pub alpha: f32,
    /// `transA`: A is stored `[K, M]`.
    pub trans_a: bool,
    /// `transB`: B is stored `[N, K]` (what ORT's QDQ fusion of a `Gemm` by a weight gives).
    pub trans_b: bool,
}

/// `QGemm`'s output: quantized with `y_scale` / `y_zero_point`, or float without them.
#[derive(Debug, Clone, PartialEq)]
pub enum QGemmOutput {
    /// Stored bytes of the output type, `[M, N]`.
    Quantized(Vec<u8>),
    /// `f32(f32(acc) * m)`, `[M, N]`.
    Float(Vec<f32>),
}

/// Transposes a row-major `[rows, cols]` byte matrix.
fn transpose(x: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| x[r * cols + c]))
        .collect()
}

/// `QGemm` (com.microsoft, `contrib_ops/cpu/quantization/quant_gemm.cc`): exact
/// `(A - za)(B - zb)` accumulators plus the int32 `c` (broadcast from `()`, `[N]`, `[1, N]`,
/// `[M, 1]` or `[M, N]`), scaled by `m[j] = f32(f32(alpha * sa) * sb[j])`, then
///
/// * with `y_qp`: `m[j] = f32(m[j] / sy)` and `MlasRequantizeOutput`;
/// * without: the float `f32(f32(acc) * m[j])`.
#[allow(clippy::too_many_arguments)]
pub fn qgemm(
    a: &[u8],
    a_dims: [usize; 2],
    a_qp: &QParams,
    b: &QWeight<'_>,
    b_dims: [usize; 2],
    c: Option<(&[i32], &[usize])>,
    attrs: &QGemmAttrs,
    y_qp: Option<&QParams>,
) -> Result<QGemmOutput> {
    check_qparams("QGemm a", a_qp)?;
    if let Some(y) = y_qp {
        check_qparams("QGemm y", y)?;
    }
    if b.scales.is_empty() || !attrs.alpha.is_finite() {
        return Err(Error::InvalidParameter(
            "QGemm: needs a b scale and a finite alpha".into(),
        ));
    }
    crate::cpu::reference::check_data("QGemm A", a.len(), &a_dims)?;
    crate::cpu::reference::check_data("QGemm B", b.data.len(), &b_dims)?;
    let (a_rm, [m, k]) = if attrs.trans_a {
        (transpose(a, a_dims[0], a_dims[1]), [a_dims[1], a_dims[0]])
    } else {
        (a.to_vec(), a_dims)
    };
    let (b_rm, [kb, n]) = if attrs.trans_b {
        (
            transpose(b.data, b_dims[0], b_dims[1]),
            [b_dims[1], b_dims[0]],
        )
    } else {
        (b.data.to_vec(), b_dims)
    };
    let b_rm = QWeight { data: &b_rm, ..*b };
    let (acc, _) = matmul_acc(&a_rm, &[m, k], a_qp.dtype, a_qp.zero_point, &b_rm, &[kb, n])?;
    let bias_at: Box<dyn Fn(usize, usize) -> i32> = match c {
        None => Box::new(|_, _| 0),
        Some((data, dims)) => {
            let numel = crate::shape::checked_numel(dims)?;
            let stride = match dims {
                _ if numel == 1 => (0, 0),
                [nn] | [1, nn] if *nn == n => (0, 1),
                [mm, 1] if *mm == m => (1, 0),
                [mm, nn] if *mm == m && *nn == n => (n, 1),
                _ => {
                    return Err(Error::Shape(format!(
                        "QGemm: C of shape {dims:?} does not broadcast to [{m}, {n}]"
                    )))
                }
            };
            if data.len() != numel {
                return Err(Error::Shape(format!(
                    "QGemm: C has {} values for shape {dims:?}",
                    data.len()
                )));
            }
            Box::new(move |i, j| data[i * stride.0 + j * stride.1])
        }
    };
    let scale = |j: usize| {
        let sb = if b.scales.len() == 1 {
            b.scales[0]
        } else {
            b.scales[j]
        };
        let s = attrs.alpha * a_qp.scale * sb;
        y_qp.map_or(s, |y| s / y.scale)
    };
    let with_bias = acc
        .iter()
        .enumerate()
        .map(|(idx, &v)| {
            let (i, j) = (idx / n, idx % n);
            v.checked_add(bias_at(i, j))
                .ok_or_else(|| Error::AccumulatorOverflow {
                    layer: None,
                    bound: v as i128 + bias_at(i, j) as i128,
                    limit: i32::MAX as i128,
                    k,
                })
                .map(|v| (v, scale(j)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(match y_qp {
        Some(y) => QGemmOutput::Quantized(
            with_bias
                .into_iter()
                .map(|(v, s)| super::qdq::requantize_output(v, s, y))
                .collect(),
        ),
        None => QGemmOutput::Float(with_bias.into_iter().map(|(v, s)| v as f32 * s).collect()),
    })
}
