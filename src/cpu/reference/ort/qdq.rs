//! `QuantizeLinear` and `DequantizeLinear` on 8-bit types, and MLAS's requantization of int32
//! accumulators.
//!
//! * quantize: `y = clamp(rne(f32(x / s)) + zp)` — a float **division** by the scale
//!   (`MlasQuantizeLinear`, `onnxruntime/core/mlas/lib/quantize.cpp`), where PyTorch multiplies
//!   by `f32(1 / s)`;
//! * dequantize: `x = f32(f32(q - zp) * s)` (`DequantizeLinear<T>::Compute`,
//!   `providers/cpu/quantization/quantize_linear.cc`), as PyTorch;
//! * requantize: `y = rne(clamp(f32(f32(acc) * m), qmin - zp, qmax - zp)) + zp`
//!   (`MlasRequantizeOutput`, `mlas/lib/quantize.cpp`).

use crate::error::{Error, Result};
use crate::quant::rne;
use crate::quant::{QDtype, QParams};

/// Per-tensor or per-axis quantization parameters of an ONNX tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisQParams {
    /// One scale, or one per index along `axis`.
    pub scales: Vec<f32>,
    /// One zero point, or one per index along `axis` (same length as `scales`).
    pub zero_points: Vec<i32>,
    /// The axis the per-axis vectors run along (ignored when per-tensor).
    pub axis: usize,
    /// The 8-bit element type.
    pub dtype: QDtype,
}

impl AxisQParams {
    /// Per-tensor qparams.
    pub fn per_tensor(qp: &QParams) -> Self {
        AxisQParams {
            scales: vec![qp.scale],
            zero_points: vec![qp.zero_point],
            axis: 0,
            dtype: qp.dtype,
        }
    }

    /// Checks the qparams against a tensor of sizes `dims` and returns, for each element, a
    /// function of its flat index giving its `QParams`.
    fn resolve(&self, dims: &[usize]) -> Result<impl Fn(usize) -> QParams + '_> {
        if self.scales.len() != self.zero_points.len() {
            return Err(Error::Shape(format!(
                "{} scales but {} zero points",
                self.scales.len(),
                self.zero_points.len()
            )));
        }
        for (&s, &z) in self.scales.iter().zip(&self.zero_points) {
            QParams::new(s, z, self.dtype)?;
        }
        let per_axis = self.scales.len() != 1;
        let (inner, len) = if per_axis {
            let Some(&len) = dims.get(self.axis) else {
                return Err(Error::Shape(format!(
                    "axis {} is out of range for shape {dims:?}",
                    self.axis
                )));
            };
            if len != self.scales.len() {
                return Err(Error::Shape(format!(
                    "{} scales for axis {} of size {len}",
                    self.scales.len(),
                    self.axis
                )));
            }
            (crate::shape::checked_numel(&dims[self.axis + 1..])?, len)
        } else {
            (1, 1)
        };
        Ok(move |i: usize| {
            let c = (i / inner) % len;
            QParams {
                scale: self.scales[c],
                zero_point: self.zero_points[c],
                dtype: self.dtype,
            }
        })
    }
}

/// MLAS's float-to-int conversion: round half to even (`_mm_cvtps_epi32` under the default
/// rounding mode, `std::nearbyintf`); NaN and values outside int32 give `i32::MIN`, the
/// "integer indefinite" the SSE/AVX conversions return.
#[inline]
pub fn cvtps_epi32(v: f32) -> i32 {
    if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        rne(v) as i32
    }
}

/// Quantizes one value as ORT: `clamp(rne(f32(x / scale)) + zp, qmin, qmax)`.
#[inline]
pub fn quantize_value(x: f32, qp: &QParams) -> u8 {
    quantize_scaled(x / qp.scale, qp)
}

/// Dequantizes one stored byte as ORT: `f32(f32(q - zp) * scale)`.
#[inline]
pub fn dequantize_value(b: u8, qp: &QParams) -> f32 {
    (qp.dtype.byte_to_int(b) - qp.zero_point) as f32 * qp.scale
}

/// `QuantizeLinear` of a float tensor of sizes `dims` (per-tensor, or per-axis along
/// `qp.axis`), returning stored bytes. NaN inputs are an error (ORT maps them to the zero
/// point on some paths and to `qmin` on others).
pub fn quantize_linear(x: &[f32], dims: &[usize], qp: &AxisQParams) -> Result<Vec<u8>> {
    super::super::check_data("QuantizeLinear input", x.len(), dims)?;
    check_no_nan(x)?;
    let at = qp.resolve(dims)?;
    Ok(x.iter()
        .enumerate()
        .map(|(i, &v)| quantize_value(v, &at(i)))
        .collect())
}

/// An error naming the first NaN of a `QuantizeLinear` input, if any.
pub fn check_no_nan(x: &[f32]) -> Result<()> {
    match x.iter().position(|v| v.is_nan()) {
        Some(index) => Err(Error::NonFinite {
            name: "QuantizeLinear input".into(),
            value: x[index],
            index,
        }),
        None => Ok(()),
    }
}

/// `DequantizeLinear` of stored bytes of sizes `dims` (per-tensor, or per-axis).
pub fn dequantize_linear(q: &[u8], dims: &[usize], qp: &AxisQParams) -> Result<Vec<f32>> {
    super::super::check_data("DequantizeLinear input", q.len(), dims)?;
    let at = qp.resolve(dims)?;
    Ok(q.iter()
        .enumerate()
        .map(|(i, &b)| dequantize_value(b, &at(i)))
        .collect())
}

/// ORT's requantization scale of a QLinear conv or matmul: `f32(f32(sx * sw) / sy)`
/// (`QLinearConv<T>::ComputeOutputScale`, `QLinearMatMul::Compute`).
#[inline]
pub fn output_scale(x_scale: f32, w_scale: f32, y_scale: f32) -> f32 {
    x_scale * w_scale / y_scale
}

/// `MlasRequantizeOutput` of one accumulator (bias already added):
/// `rne(clamp(f32(f32(acc) * scale), qmin - zp, qmax - zp)) + zp`, as a stored byte.
#[inline]
pub fn requantize_output(acc: i32, scale: f32, out: &QParams) -> u8 {
    quantize_scaled(acc as f32 * scale, out)
}

/// Clamps a float already divided by the output scale to `[qmin - zp, qmax - zp]`, rounds it
/// half to even and adds the zero point. Clamping in float first (as MLAS does) equals
/// clamping the rounded int, and keeps huge values and infinities in range.
#[inline]
fn quantize_scaled(v: f32, out: &QParams) -> u8 {
    let r = out.dtype.full_range();
    let v = v.clamp(
        (r.min - out.zero_point) as f32,
        (r.max - out.zero_point) as f32,
    );
    out.dtype.int_to_byte(rne(v) as i32 + out.zero_point)
}

/// Checks that `qp` is a valid 8-bit scale and zero point, naming the tensor in errors.
pub(crate) fn check_qparams(what: &str, qp: &QParams) -> Result<()> {
    QParams::new(qp.scale, qp.zero_point, qp.dtype)
        .map(|_| ())
        .map_err(|e| Error::InvalidParameter(format!("{what}: {e}")))
}
