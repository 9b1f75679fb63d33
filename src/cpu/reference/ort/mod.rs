//! ONNX Runtime's quantized CPU ops (the ops its graph optimizations turn a QDQ model into),
//! as plain scalar code.
//!
//! * [`qdq`]: `QuantizeLinear`, `DequantizeLinear` (per-tensor and per-axis) and MLAS's
//!   requantization of int32 accumulators ([`qdq::requantize_output`]).
//! * [`conv`]: `QLinearConv` and `ConvInteger` (2-D).
//! * [`matmul`]: `MatMulInteger` and `QLinearMatMul`.
//! * [`add`]: `QLinearAdd` (com.microsoft), with the instruction-set-dependent float order.
//! * [`concat`]: `QLinearConcat` (com.microsoft).
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
