//! `quantized::linear` / `linear_relu` (`torch.ao.nn.quantized.Linear`, `LinearReLU`).
//!
//! A linear layer is a 1x1 conv over `N = prod(leading sizes)` rows: the accumulator is the
//! exact `Σ (x - x_zp)(w - w_zp)` and the epilogue is the conv's ([`Epilogue`]), with the
//! engine's formula ([`linear_formula`]): QNNPACK's for engine `qnnpack` (int32 bias, one
//! float multiply), FBGEMM's for engine `x86` (PyTorch packs linear weights for FBGEMM on that
//! engine; float bias added to the float accumulator). A fused ReLU clamps at the output zero
//! point.

use super::{check_data, conv2d_quantized, QEngine};
use crate::error::{Error, Result};
use crate::quant::{Epilogue, QParams, RequantFormula, WeightQParams};
use crate::shape::{ConvParams, ConvShape};

/// The requantization formula of `quantized::linear` on each engine.
pub fn linear_formula(engine: QEngine) -> RequantFormula {
    match engine {
        QEngine::Qnnpack => RequantFormula::Qnnpack,
        QEngine::X86 => RequantFormula::Fbgemm,
    }
}

/// Quantized linear `y = x W^T + b` with `x` of sizes `[..., K]` (quint8 or qint8 bytes),
/// `W` qint8 of sizes `[O, K]` (per-tensor, or per-channel along `O`), optional float bias of
/// `O` values, output qparams `out` and an optional fused ReLU. Returns the output bytes and
/// sizes `[..., O]`.
///
/// Fails with [`Error::AccumulatorOverflow`] when some input could leave int32 in the
/// accumulator (checked on the weights before anything runs), and with shape errors on
/// mismatched sizes.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    formula: RequantFormula,
    x: &[u8],
    x_dims: &[usize],
    x_qp: &QParams,
    w: &[i8],
    w_dims: [usize; 2],
    w_qp: &WeightQParams,
    bias: Option<&[f32]>,
    out: &QParams,
    relu: bool,
) -> Result<(Vec<u8>, Vec<usize>)> {
    check_data("linear input", x.len(), x_dims)?;
    check_data("linear weight", w.len(), &w_dims)?;
    QParams::new(x_qp.scale, x_qp.zero_point, x_qp.dtype)?;
    let [o, k] = w_dims;
    let (&last, lead) = x_dims
        .split_last()
        .ok_or_else(|| Error::Shape("linear: the input has no dimensions".into()))?;
    if last != k {
        return Err(Error::Shape(format!(
            "linear: input {x_dims:?} has {last} features, the weight {w_dims:?} expects {k}"
        )));
    }
    let rows: usize = lead.iter().product();
    let mut out_dims = lead.to_vec();
    out_dims.push(o);
    if rows == 0 || o == 0 || k == 0 {
        return Err(Error::Shape(format!(
            "linear: input {x_dims:?} / weight {w_dims:?} has a zero-sized dimension"
        )));
    }
    let s = ConvShape::new([rows, k, 1, 1], [o, k, 1, 1], ConvParams::default())?;
    let epi = Epilogue::new(formula, x_qp.scale, w_qp, bias, *out, relu, o)?;
    // NCHW with H = W = 1 is exactly [rows, O] row-major.
    let y = conv2d_quantized(x, x_qp, w, w_qp, &epi, &s)?;
    Ok((y, out_dims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{QDtype, QScheme};

    #[test]
    fn bad_inputs_are_errors() {
        let xq = QParams::new(0.1, 3, QDtype::QUInt8).unwrap();
        let wq = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
        let f = RequantFormula::Fbgemm;
        let lin = |x: &[u8], xd: &[usize], w: &[i8], wd: [usize; 2], b: Option<&[f32]>| {
            linear(f, x, xd, &xq, w, wd, &wq, b, &xq, false)
        };
        assert!(lin(&[1, 2], &[1, 2], &[1, 2], [1, 2], None).is_ok());
        assert!(lin(&[1, 2], &[1, 2], &[1, 2, 3], [1, 3], None).is_err());
        assert!(lin(&[1, 2], &[2, 2], &[1, 2], [1, 2], None).is_err());
        assert!(lin(&[], &[], &[1, 2], [1, 2], None).is_err());
        assert!(lin(&[1, 2], &[1, 2], &[1, 2], [1, 2], Some(&[0.0, 1.0])).is_err());
        let pc = WeightQParams {
            scheme: QScheme::PerChannelSymmetric,
            scales: vec![0.1, 0.2, 0.3],
            zero_points: vec![0; 3],
        };
        assert!(linear(
            f,
            &[1, 2],
            &[1, 2],
            &xq,
            &[1, 2],
            [1, 2],
            &pc,
            None,
            &xq,
            false
        )
        .is_err());
        // K large enough that the int32 accumulator could overflow.
        let k = 70_000;
        let x = vec![255u8; k];
        let w = vec![-128i8; k];
        let zq = QParams::new(0.1, 0, QDtype::QUInt8).unwrap();
        let r = linear(f, &x, &[1, k], &zq, &w, [1, k], &wq, None, &zq, false);
        assert!(matches!(r, Err(Error::AccumulatorOverflow { .. })));
    }
}
