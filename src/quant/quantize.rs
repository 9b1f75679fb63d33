//! `quantize_per_tensor` and `dequantize`, exactly as PyTorch computes them.

use super::qparams::QParams;
use super::rne;
use crate::error::{Error, Result};

/// The float32 reciprocal PyTorch multiplies by: `f32(1 / scale)`.
#[inline]
pub fn inverse_scale(scale: f32) -> f32 {
    1.0 / scale
}

/// Quantizes one value: `q = clamp(rne(f32(x * inv_scale)) + zp, dtype_min, dtype_max)`.
///
/// PyTorch multiplies by the float32 reciprocal of the scale and does not divide; `x / scale`
/// differs for some inputs. The result always lies in the dtype's *full* range, even when the
/// qparams came from a reduced range. NaN maps to the zero point; callers reject NaN first
/// (see [`check_finite`]).
#[inline]
pub fn quantize_one(x: f32, inv_scale: f32, qp: &QParams) -> i32 {
    let r = rne(x * inv_scale);
    // Clamp in float first so that huge values cannot overflow the integer conversion; the
    // bound is far outside any 8-bit range, so the final clamp is unchanged.
    let r = r.clamp(-1.0e9, 1.0e9) as i64;
    let full = qp.dtype.full_range();
    (r + qp.zero_point as i64).clamp(full.min as i64, full.max as i64) as i32
}

/// Quantizes a slice to stored bytes (u8 for quint8, two's-complement i8 for qint8).
pub fn quantize_slice(x: &[f32], qp: &QParams) -> Vec<u8> {
    let inv = inverse_scale(qp.scale);
    x.iter()
        .map(|&v| qp.dtype.int_to_byte(quantize_one(v, inv, qp)))
        .collect()
}

/// Dequantizes one int: `f32((q - zp) * scale)`.
#[inline]
pub fn dequantize_one(q: i32, qp: &QParams) -> f32 {
    // In i64: `q - zp` cannot overflow, even for zero points outside the dtype's range.
    (q as i64 - qp.zero_point as i64) as f32 * qp.scale
}

/// Dequantizes stored bytes.
pub fn dequantize_slice(q: &[u8], qp: &QParams) -> Vec<f32> {
    q.iter()
        .map(|&b| dequantize_one(qp.dtype.byte_to_int(b), qp))
        .collect()
}

/// Returns an error naming `name` if `x` holds NaN or ±Inf.
pub fn check_finite(x: &[f32], name: &str) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite {
            name: name.to_string(),
            value: x[index],
            index,
        }),
    }
}
