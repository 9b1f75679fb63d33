//! ONNX Runtime's quantized CPU ops (the ops its graph optimizations turn a QDQ model into),
//! as plain scalar code.
//!
//! * [`qdq`]: `QuantizeLinear`, `DequantizeLinear` (per-tensor and per-axis) and MLAS's
//!   requantization of int32 accumulators ([`qdq::requantize_output`]).
//! * [`conv`]: `QLinearConv` and `ConvInteger` (2-D).
//! * [`matmul`]: `MatMulInteger`, `QLinearMatMul` and `QGemm` (com.microsoft).
//! * [`add`]: `QLinearAdd` (com.microsoft), with the instruction-set-dependent float order.
//! * [`concat`](mod@concat): `QLinearConcat` (com.microsoft).
//! * [`pool`]: `QLinearAveragePool`, `QLinearGlobalAveragePool` (com.microsoft), `MaxPool` on
//!   8-bit tensors.
//!
//! Every formula, with the ONNX Runtime source it comes from and how it differs from
//! PyTorch's (`docs/ops.md`), is in `docs/ort.md`. Tensors are stored bytes (u8 for uint8,
//! two's-complement i8 for int8) with their [`QDtype`](crate::quant::QDtype), row-major.
//! `tests/ort_conformance.rs` checks the ops against the ONNX backend conformance data.

pub mod add;
pub mod concat;
pub mod conv;
pub mod matmul;
pub mod pool;
pub mod qdq;

#[cfg(test)]
mod tests {
    use super::conv::QWeight;
    use super::*;
    use crate::cpu::reference::cat::CatInput;
    use crate::error::Error;
    use crate::quant::{QDtype, QParams};
    use crate::shape::{ConvParams, ConvShape};

    fn u8qp(scale: f32, zero_point: i32) -> QParams {
        QParams {
            scale,
            zero_point,
            dtype: QDtype::QUInt8,
        }
    }

    #[test]
    fn bad_shapes_and_qparams_are_typed_errors_not_panics() {
        let qp = u8qp(0.1, 3);
        let axis = |scales: Vec<f32>, zero_points: Vec<i32>, axis| qdq::AxisQParams {
            scales,
            zero_points,
            axis,
            dtype: QDtype::QUInt8,
        };
        // data / shape mismatch, axis out of range, per-axis length, zero point range, NaN
        assert!(qdq::quantize_linear(&[1.0; 5], &[2, 3], &axis(vec![0.1], vec![0], 0)).is_err());
        assert!(
            qdq::quantize_linear(&[1.0; 6], &[2, 3], &axis(vec![0.1; 3], vec![0; 3], 2)).is_err()
        );
        assert!(
            qdq::quantize_linear(&[1.0; 6], &[2, 3], &axis(vec![0.1; 2], vec![0; 2], 1)).is_err()
        );
        assert!(qdq::quantize_linear(&[1.0; 6], &[2, 3], &axis(vec![0.1], vec![300], 0)).is_err());
        assert!(
            qdq::quantize_linear(&[f32::NAN; 6], &[2, 3], &axis(vec![0.1], vec![0], 0)).is_err()
        );
        assert!(qdq::dequantize_linear(&[0; 6], &[2, 3], &axis(vec![0.0], vec![0], 0)).is_err());

        let s = ConvShape::new([1, 2, 4, 4], [3, 2, 3, 3], ConvParams::default()).unwrap();
        let w = [0u8; 54];
        let weight = |scales: &'static [f32], zps: &'static [i32]| QWeight {
            data: &w,
            dtype: QDtype::QInt8,
            scales,
            zero_points: zps,
        };
        let x = [0u8; 32];
        let conv = |wt: &QWeight<'_>, bias: Option<&[i32]>, y: &QParams| {
            conv::qlinear_conv(&x, &qp, wt, bias, y, &s)
        };
        assert!(conv(&weight(&[0.1, 0.2], &[0]), None, &qp).is_err());
        assert!(conv(&weight(&[], &[0]), None, &qp).is_err());
        assert!(conv(&weight(&[0.1], &[0]), Some(&[1, 2]), &qp).is_err());
        assert!(conv(&weight(&[0.1], &[200]), None, &qp).is_err());
        assert!(conv(&weight(&[0.1], &[0]), None, &u8qp(-1.0, 0)).is_err());
        assert!(matches!(
            conv(&weight(&[0.1], &[0]), Some(&[i32::MAX; 3]), &qp),
            Ok(_) | Err(Error::AccumulatorOverflow { .. })
        ));
        assert!(conv::qlinear_conv(&x[..31], &qp, &weight(&[0.1], &[0]), None, &qp, &s).is_err());

        let b = QWeight {
            data: &[0u8; 6],
            dtype: QDtype::QUInt8,
            scales: &[0.1],
            zero_points: &[0],
        };
        assert!(matmul::qlinear_matmul(&[0; 8], &[2, 4], &qp, &b, &[3, 2], &qp).is_err());
        assert!(matmul::qlinear_matmul(&[0; 6], &[6], &qp, &b, &[3, 2], &qp).is_err());
        assert!(
            matmul::matmul_integer(&[0; 6], &[2, 3], QDtype::QUInt8, 0, &b, &[2, 3, 1]).is_err()
        );

        let k = add::QLinearAddKernel::Avx2;
        assert!(add::qlinear_add(k, &[0; 3], &qp, &[0; 2], &qp, &qp).is_err());
        let s8 = QParams {
            dtype: QDtype::QInt8,
            ..qp
        };
        assert!(add::qlinear_add(k, &[0; 2], &qp, &[0; 2], &s8, &qp).is_err());

        let dims = [1usize, 2];
        let c = CatInput {
            data: &[0, 1],
            dims: &dims,
            qp: &qp,
        };
        assert!(concat::qlinear_concat(&[c], 2, &qp).is_err());
        assert!(concat::qlinear_concat(&[], 0, &qp).is_err());
        assert!(concat::qlinear_concat(&[c], 1, &s8).is_err());

        let p = pool::AvgPoolParams {
            kernel: [3, 3],
            stride: [1, 1],
            pads: [0; 4],
            count_include_pad: false,
        };
        assert!(pool::qlinear_average_pool(&[0; 4], [1, 1, 2, 2], &qp, &p, &qp).is_err());
        assert!(pool::qlinear_average_pool(&[], [1, 1, 0, 4], &qp, &p, &qp).is_err());
        let p3 = pool::AvgPoolParams {
            pads: [3, 0, 0, 0],
            ..p
        };
        assert!(pool::qlinear_average_pool(&[0; 16], [1, 1, 4, 4], &qp, &p3, &qp).is_err());
        assert!(pool::qlinear_global_average_pool(&[], [1, 1, 0, 0], &qp, &qp).is_err());
        assert!(
            pool::qlinear_global_average_pool(&[0; 4], [1, 1, 2, 2], &qp, &u8qp(1e-5, 0)).is_err()
        );
    }

    #[test]
    fn quantize_linear_divides_by_the_scale_and_rounds_ties_to_even() {
        let qp = u8qp(0.5, 10);
        // 1.25 / 0.5 = 2.5 → 2; 1.75 / 0.5 = 3.5 → 4; far values saturate
        let y = qdq::quantize_linear(
            &[1.25, 1.75, -1e30, 1e30],
            &[4],
            &qdq::AxisQParams::per_tensor(&qp),
        )
        .unwrap();
        assert_eq!(y, vec![12, 14, 0, 255]);
    }
}
