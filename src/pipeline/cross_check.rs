//! Cross-checks: a quantized model on one device against the CPU reference, layer by layer.
//!
//! Integer kernels leave no room for tolerance: every quantization point's ints must be equal.

use super::quantized::QuantizedModel;
use super::Device;
use crate::error::Result;
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
}

impl PointCheck {
    /// Whether the point is bit-exact.
    pub fn bit_exact(&self) -> bool {
        self.mismatches == 0
    }
}

/// Runs `qm` on `device` (each layer's output read back so that it can be compared) and on the
/// CPU reference, and compares every point.
pub fn cross_check(
    qm: &QuantizedModel,
    x: &Tensor<f32>,
    device: &Device,
) -> Result<Vec<PointCheck>> {
    let ours = qm.run_points_cpu(x, device)?;
    let reference = qm.run_points_cpu(x, &Device::CpuReference)?;
    Ok(ours
        .iter()
        .zip(&reference)
        .map(|((name, a), (_, b))| {
            let dt = a.qp.dtype;
            let mut c = PointCheck {
                name: name.clone(),
                compared: b.q.data.len(),
                mismatches: a.q.data.len().abs_diff(b.q.data.len()),
                max_abs_diff: 0,
            };
            for (&p, &q) in a.q.data.iter().zip(&b.q.data) {
                let d = (dt.byte_to_int(p) - dt.byte_to_int(q)).abs();
                if d != 0 {
                    c.mismatches += 1;
                    c.max_abs_diff = c.max_abs_diff.max(d);
                }
            }
            c
        })
        .collect())
}
