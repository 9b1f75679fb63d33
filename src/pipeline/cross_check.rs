//! Cross-checks: a quantized model on one device against the CPU reference, point by point.
//!
//! The device runs the model exactly as [`QuantizedModel::run`] does (on a GPU: GPU quantize,
//! the chained convs, GPU dequantize), reading every quantization point back on the way
//! ([`QuantizedModel::run_points`]); the output it checks is the output a caller gets.
//! Integer kernels leave no room for tolerance: every point's ints must be equal, and the
//! dequantized output's f32 bits too.

use super::quantized::{QuantizedModel, QuantizedOutput};
use super::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use serde::Serialize;

/// Bit-exactness of one quantization point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointCheck {
    /// Point name (`input`, or a conv).
    pub name: String,
    /// Ints compared.
    pub compared: usize,
    /// Ints that differ.
    pub mismatches: usize,
    /// Largest |Δ| in LSB.
    pub max_abs_diff: i32,
    /// Dequantized values whose f32 bits differ.
    pub f32_mismatches: usize,
}

impl PointCheck {
    /// Whether the point is bit-exact (ints and dequantized f32 bits).
    pub fn bit_exact(&self) -> bool {
        self.mismatches == 0 && self.f32_mismatches == 0
    }
}

/// The result of [`cross_check`]: the model's output on the device (what
/// [`QuantizedModel::run`] returns there) and the comparison of every point.
#[derive(Debug, Clone)]
pub struct CrossCheck {
    /// The output on the checked device.
    pub output: QuantizedOutput,
    /// Every point, in model order (`input` first, the output last).
    pub points: Vec<PointCheck>,
}

impl CrossCheck {
    /// Whether every point is bit-exact.
    pub fn bit_exact(&self) -> bool {
        self.points.iter().all(PointCheck::bit_exact)
    }

    /// The first point, in model order, that differs from the reference.
    pub fn first_difference(&self) -> Option<&PointCheck> {
        self.points.iter().find(|p| !p.bit_exact())
    }
}

/// Runs `qm` on `device` as [`QuantizedModel::run`] does, and on the CPU reference, and
/// compares every point.
pub fn cross_check(qm: &QuantizedModel, x: &Tensor<f32>, device: &Device) -> Result<CrossCheck> {
    let mut ours = qm.run_points(x, device)?;
    let reference = qm.run_points(x, &Device::CpuReference)?;
    let points = compare_points(&ours, &reference)?;
    let (_, output) = ours
        .pop()
        .ok_or_else(|| Error::InvalidParameter("the model run returned no points".into()))?;
    Ok(CrossCheck { output, points })
}

/// Compares two runs' points (as [`QuantizedModel::run_points`] returns them). Two runs of one
/// model have the same points with the same shapes: anything else is an error, not a count.
pub fn compare_points(
    ours: &[(String, QuantizedOutput)],
    reference: &[(String, QuantizedOutput)],
) -> Result<Vec<PointCheck>> {
    if ours.len() != reference.len() {
        return Err(Error::Shape(format!(
            "cross-check: {} points against the reference's {}",
            ours.len(),
            reference.len()
        )));
    }
    let mut out = Vec::with_capacity(ours.len());
    for ((name, a), (ref_name, b)) in ours.iter().zip(reference) {
        if name != ref_name || a.q.dims != b.q.dims || a.y.dims != b.y.dims || a.qp != b.qp {
            return Err(Error::Shape(format!(
                "cross-check: point '{name}' {:?} {:?} does not correspond to the reference's \
                 '{ref_name}' {:?} {:?}",
                a.q.dims, a.qp, b.q.dims, b.qp
            )));
        }
        let dt = a.qp.dtype;
        let mut c = PointCheck {
            name: name.clone(),
            compared: b.q.data.len(),
            mismatches: 0,
            max_abs_diff: 0,
            f32_mismatches: 0,
        };
        if a.q.data.len() != b.q.data.len() || a.y.data.len() != b.y.data.len() {
            return Err(Error::Shape(format!(
                "cross-check: point '{name}' holds {} ints and {} floats, the reference {} and {}",
                a.q.data.len(),
                a.y.data.len(),
                b.q.data.len(),
                b.y.data.len()
            )));
        }
        for (&p, &q) in a.q.data.iter().zip(&b.q.data) {
            let d = (dt.byte_to_int(p) - dt.byte_to_int(q)).abs();
            if d != 0 {
                c.mismatches += 1;
                c.max_abs_diff = c.max_abs_diff.max(d);
            }
        }
        c.f32_mismatches =
            a.y.data
                .iter()
                .zip(&b.y.data)
                .filter(|(p, q)| p.to_bits() != q.to_bits())
                .count();
        out.push(c);
    }
    Ok(out)
}
