//! Activations that act on the stored ints of a quantized tensor, and reshapes.
//!
//! The output keeps the input's qparams.
//!
//! * `relu`: `max(q, zp)`.
//! * `relu6` (`torch.ops.quantized.relu6`, `F.relu6`), `hardtanh`, `clamp`: PyTorch quantizes
//!   the float bounds with the input's qparams (`quantize_val`: `rne(f32(v * f32(1/s))) + zp`,
//!   clamped to the dtype) and clamps the ints: `min(max(q, lo), hi)`. Engine `qnnpack` (quint8)
//!   runs the same clamp in QNNPACK, which refuses `lo > hi` (only reachable via `clamp`).
//! * `flatten` / `reshape`: the ints and qparams pass through.

use super::{check_data, QEngine};
use crate::error::{Error, Result};
use crate::quant::{inverse_scale, quantize_one, QDtype, QParams};

fn check(x: &[u8], qp: &QParams) -> Result<()> {
    QParams::new(qp.scale, qp.zero_point, qp.dtype)?;
    let _ = x;
    Ok(())
}

/// Quantized `relu`: `max(q, zp)` elementwise.
pub fn relu(x: &[u8], qp: &QParams) -> Result<Vec<u8>> {
    check(x, qp)?;
    let dt = qp.dtype;
    Ok(x.iter()
        .map(|&b| dt.int_to_byte(dt.byte_to_int(b).max(qp.zero_point)))
        .collect())
}

/// Quantized `torch.clamp(x, min_val, max_val)`: clamps the ints to the quantized bounds,
/// `min(max(q, lo), hi)` (so `hi` wins when `lo > hi`, as in PyTorch's generic kernel). On the
/// qnnpack engine (quint8) QNNPACK's clamp operator refuses `lo > hi`: an error here too.
pub fn clamp(
    engine: QEngine,
    x: &[u8],
    qp: &QParams,
    min_val: f32,
    max_val: f32,
) -> Result<Vec<u8>> {
    check(x, qp)?;
    if !(min_val.is_finite() && max_val.is_finite()) {
        return Err(Error::InvalidParameter(format!(
            "clamp: bounds [{min_val}, {max_val}] must be finite"
        )));
    }
    let inv = inverse_scale(qp.scale);
    let lo = quantize_one(min_val, inv, qp);
    let hi = quantize_one(max_val, inv, qp);
    if engine == QEngine::Qnnpack && qp.dtype == QDtype::QUInt8 && lo > hi {
        return Err(Error::InvalidParameter(format!(
            "clamp: QNNPACK refuses the quantized range [{lo}, {hi}]"
        )));
    }
    let dt = qp.dtype;
    Ok(x.iter()
        .map(|&b| dt.int_to_byte(dt.byte_to_int(b).max(lo).min(hi)))
        .collect())
}

/// Quantized `hardtanh(x, min_val, max_val)`: [`clamp`], after PyTorch's check that
/// `min_val <= max_val` ("min_val cannot be greater than max_val").
pub fn hardtanh(
    engine: QEngine,
    x: &[u8],
    qp: &QParams,
    min_val: f32,
    max_val: f32,
) -> Result<Vec<u8>> {
    if min_val > max_val {
        return Err(Error::InvalidParameter(format!(
            "hardtanh: min_val {min_val} is greater than max_val {max_val}"
        )));
    }
    clamp(engine, x, qp, min_val, max_val)
}

/// Quantized `relu6` (`torch.ops.quantized.relu6`, what `F.relu6` runs on a quantized
/// tensor): [`hardtanh`] with bounds 0 and 6.
pub fn relu6(engine: QEngine, x: &[u8], qp: &QParams) -> Result<Vec<u8>> {
    hardtanh(engine, x, qp, 0.0, 6.0)
}

/// `reshape` / `view` / `flatten` of a quantized tensor: checks the element count (one `-1`
/// entry in `new_dims` is inferred) and returns the new sizes; the bytes and qparams are
/// unchanged.
pub fn reshape(data_len: usize, dims: &[usize], new_dims: &[i64]) -> Result<Vec<usize>> {
    let n = check_data("reshape input", data_len, dims)?;
    let mut out = Vec::with_capacity(new_dims.len());
    let mut infer = None;
    let mut known: usize = 1;
    for (i, &d) in new_dims.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(0);
            }
            d if d >= 0 => {
                known = known.checked_mul(d as usize).ok_or_else(|| {
                    Error::Shape(format!("reshape: {new_dims:?} has too many elements"))
                })?;
                out.push(d as usize);
            }
            _ => {
                return Err(Error::Shape(format!(
                    "reshape: invalid target shape {new_dims:?}"
                )))
            }
        }
    }
    if let Some(i) = infer {
        if known == 0 || !n.is_multiple_of(known) {
            return Err(Error::Shape(format!(
                "reshape: cannot infer -1 in {new_dims:?} for {n} elements"
            )));
        }
        out[i] = n / known;
    } else if known != n {
        return Err(Error::Shape(format!(
            "reshape: shape {new_dims:?} does not hold {n} elements"
        )));
    }
    Ok(out)
}

/// `torch.flatten(x, start_dim)` (`end_dim = -1`): the new sizes.
pub fn flatten(data_len: usize, dims: &[usize], start_dim: usize) -> Result<Vec<usize>> {
    check_data("flatten input", data_len, dims)?;
    if dims.is_empty() {
        return Ok(vec![1]);
    }
    if start_dim >= dims.len() {
        return Err(Error::InvalidParameter(format!(
            "flatten: start_dim {start_dim} out of range for rank {}",
            dims.len()
        )));
    }
    let mut out = dims[..start_dim].to_vec();
    out.push(dims[start_dim..].iter().product());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_errors() {
        let qp = QParams::new(0.1, 10, QDtype::QUInt8).unwrap();
        assert_eq!(relu(&[3, 10, 200], &qp).unwrap(), vec![10, 10, 200]);
        // relu6 bound: 6/0.1 + 10 = 70.
        assert_eq!(
            relu6(QEngine::X86, &[3, 50, 200], &qp).unwrap(),
            vec![10, 50, 70]
        );
        assert!(hardtanh(QEngine::X86, &[1], &qp, 1.0, -1.0).is_err());
        assert!(hardtanh(QEngine::X86, &[1], &qp, f32::NAN, 1.0).is_err());
        // Equal quantized bounds are fine on both engines.
        for e in [QEngine::Qnnpack, QEngine::X86] {
            assert_eq!(hardtanh(e, &[1, 50], &qp, 0.0, 0.01).unwrap(), vec![10, 10]);
        }
        // clamp with min > max: QNNPACK refuses, the generic kernel returns the upper bound.
        assert!(clamp(QEngine::Qnnpack, &[1], &qp, 1.0, -1.0).is_err());
        assert_eq!(
            clamp(QEngine::X86, &[1, 50], &qp, 1.0, -1.0).unwrap(),
            vec![0, 0]
        );
    }

    #[test]
    fn reshapes() {
        assert_eq!(reshape(60, &[1, 3, 4, 5], &[3, -1]).unwrap(), vec![3, 20]);
        assert!(reshape(60, &[1, 3, 4, 5], &[7, -1]).is_err());
        assert!(reshape(60, &[1, 3, 4, 5], &[-1, -1]).is_err());
        assert!(reshape(59, &[1, 3, 4, 5], &[60]).is_err());
        assert_eq!(flatten(120, &[2, 3, 4, 5], 1).unwrap(), vec![2, 60]);
        assert!(flatten(120, &[2, 3, 4, 5], 4).is_err());
    }
}
