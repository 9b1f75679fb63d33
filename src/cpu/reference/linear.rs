//! `quantized::linear` / `linear_relu` (`torch.ao.nn.quantized.Linear`, `LinearReLU`).
//!
//! A linear layer is a 1x1 conv over `N = prod(leading sizes)` rows: the accumulator is the
//! exact `Σ (x - x_zp)(w - w_zp)` and the epilogue is the conv's ([`Epilogue`]), with the
//! engine's formula ([`linear_formula`]): QNNPACK's for engine `qnnpack` (int32 bias, one
//! float multiply), FBGEMM's for engine `x86` (PyTorch packs linear weights for FBGEMM on that
//! engine; float bias added to the float accumulator). A fused ReLU clamps at the output zero
//! point.
//!
//! FBGEMM's accumulator depends on the machine: with AVX512-VNNI (`vpdpbusd`) it is exact;
//! on AVX2 and AVX512 without VNNI its kernels multiply u8 activations by s8 weights with
//! `vpmaddubsw`, which sums each pair of products in **saturating int16** before widening
//! ([`Accumulation::SaturatingPairs`]). PyTorch's x86/fbgemm qconfigs use `reduce_range=True`
//! (7-bit activations) so that the saturation cannot happen; full-range activations give
//! results that differ between machines.

use super::{check_data, conv2d_quantized, requantize, QEngine};
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

/// How the int32 accumulator of a linear layer is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accumulation {
    /// Exact `Σ (x - x_zp)(w - w_zp)` (QNNPACK; FBGEMM with AVX512-VNNI).
    Exact,
    /// FBGEMM without VNNI (AVX2, AVX512): the raw products `x_u8 * w_s8` of inputs `2m` and
    /// `2m + 1` are summed in saturating int16 (`vpmaddubsw`), those sums in int32, and the
    /// zero-point terms are corrected exactly:
    ///
    /// ```text
    /// acc = Σ_m sat16(x[2m]w[2m] + x[2m+1]w[2m+1]) - x_zp Σ w - w_zp Σ x + K x_zp w_zp
    /// ```
    SaturatingPairs,
}

impl Accumulation {
    /// The accumulation of FBGEMM running with instruction set `isa` (`AVX512_VNNI`, `AVX512`,
    /// `AVX2`; as recorded in the fixtures' `fbgemm_isa`).
    pub fn for_fbgemm_isa(isa: &str) -> crate::error::Result<Self> {
        match isa.to_ascii_uppercase().as_str() {
            "AVX512_VNNI" | "AVX512_E1" => Ok(Accumulation::Exact),
            "AVX2" | "AVX512" => Ok(Accumulation::SaturatingPairs),
            _ => Err(Error::UnknownName {
                kind: "FBGEMM instruction set",
                name: isa.to_string(),
                expected: "AVX512_VNNI, AVX512, AVX2".into(),
            }),
        }
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
    linear_with(
        formula,
        Accumulation::Exact,
        x,
        x_dims,
        x_qp,
        w,
        w_dims,
        w_qp,
        bias,
        out,
        relu,
    )
}

/// [`linear`] with an explicit [`Accumulation`] (`SaturatingPairs` needs quint8 input).
#[allow(clippy::too_many_arguments)]
pub fn linear_with(
    formula: RequantFormula,
    accumulation: Accumulation,
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
    if accumulation == Accumulation::Exact {
        let y = conv2d_quantized(x, x_qp, w, w_qp, &epi, &s)?;
        return Ok((y, out_dims));
    }
    if x_qp.dtype != crate::quant::QDtype::QUInt8 {
        return Err(Error::InvalidParameter(
            "linear: FBGEMM's saturating accumulation takes quint8 activations".into(),
        ));
    }
    w_qp.check_channels(o)?;
    epi.check_accumulator(w, w_qp, x_qp.dtype.full_range(), x_qp.zero_point, k, None)?;
    let x_zp = x_qp.zero_point as i64;
    let mut acc = Vec::with_capacity(rows * o);
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        let x_sum: i64 = xr.iter().map(|&v| v as i64).sum();
        for c in 0..o {
            let wr = &w[c * k..(c + 1) * k];
            let w_zp = w_qp.zero_point(c) as i64;
            let mut raw: i64 = 0;
            for (xp, wp) in xr.chunks(2).zip(wr.chunks(2)) {
                let pair: i32 = xp.iter().zip(wp).map(|(&a, &b)| a as i32 * b as i32).sum();
                raw += pair.clamp(i16::MIN as i32, i16::MAX as i32) as i64;
            }
            let w_sum: i64 = wr.iter().map(|&v| v as i64).sum();
            let a = raw - x_zp * w_sum - w_zp * x_sum + k as i64 * x_zp * w_zp;
            acc.push(i32::try_from(a).map_err(|_| Error::AccumulatorOverflow {
                layer: None,
                bound: a as i128,
                limit: i32::MAX as i128,
                k,
            })?);
        }
    }
    Ok((requantize(&acc, &epi, o, 1)?, out_dims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{QDtype, QScheme};

    #[test]
    fn saturating_pairs_clip_each_pair_to_int16() {
        // x = [255, 255], w = [127, 127]: exact 64770, one saturated pair 32767.
        let xq = QParams::new(1.0, 0, QDtype::QUInt8).unwrap();
        let out = QParams::new(1000.0, 0, QDtype::QUInt8).unwrap();
        let wq = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 1.0, 0);
        let f = RequantFormula::Fbgemm;
        let run = |a| {
            linear_with(
                f,
                a,
                &[255, 255],
                &[1, 2],
                &xq,
                &[127, 127],
                [1, 2],
                &wq,
                None,
                &out,
                false,
            )
            .unwrap()
            .0
        };
        assert_eq!(run(Accumulation::Exact), vec![65]); // 64.77
        assert_eq!(run(Accumulation::SaturatingPairs), vec![33]); // 32.767
        assert!(Accumulation::for_fbgemm_isa("AVX512_VNNI").unwrap() == Accumulation::Exact);
        assert!(Accumulation::for_fbgemm_isa("SSE").is_err());
    }

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
