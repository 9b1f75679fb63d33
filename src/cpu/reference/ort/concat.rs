//! `QLinearConcat` (com.microsoft, `contrib_ops/cpu/quantization/qlinear_concat.cc`).
//!
//! An input whose scale and zero point equal the output's is copied; any other input maps
//! through a 256-entry table built by `QlinearBuildLookupTable`
//! (`qlinear_lookup_table.cc`): `y = MlasQuantizeLinear(f32(sx * f32(x - zx)); sy, zy)`, i.e.
//! [`quantize_value`] of [`dequantize_value`] — one rounding of a float *division* by `sy`,
//! where PyTorch's `quantized::cat` multiplies by `f32(1 / sy)`.

use super::qdq::{check_qparams, dequantize_value, quantize_value};
use crate::cpu::reference::cat::{concat, CatInput};
use crate::error::{Error, Result};
use crate::quant::QParams;

/// `QLinearConcat` of `inputs` along `axis` with output qparams `y_qp`; returns the stored
/// output bytes and sizes. All element types must equal the output's.
pub fn qlinear_concat(
    inputs: &[CatInput<'_>],
    axis: usize,
    y_qp: &QParams,
) -> Result<(Vec<u8>, Vec<usize>)> {
    check_qparams("QLinearConcat y", y_qp)?;
    if let Some(x) = inputs.iter().find(|x| x.qp.dtype != y_qp.dtype) {
        return Err(Error::InvalidParameter(format!(
            "QLinearConcat: an input is {}, the output {}",
            x.qp.dtype, y_qp.dtype
        )));
    }
    concat(inputs, axis, |i, v| {
        let qp = inputs[i].qp;
        if qp.scale == y_qp.scale && qp.zero_point == y_qp.zero_point {
            v
        } else {
            quantize_value(dequantize_value(v, qp), y_qp)
        }
    })
}
