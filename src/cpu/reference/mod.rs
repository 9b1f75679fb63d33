//! Reference kernels: the simplest, obviously-correct code in the crate.
//!
//! * [`conv2d_f32`], [`conv2d_acc`], [`requantize`], [`conv2d_quantized`],
//!   [`quantize_weight`]: the conv2d reference (see the `conv` section below).
//! * [`add`]: `quantized::add` / `add_relu`.
//! * [`cat`]: `quantized::cat` and `torch.cat` on quantized tensors.
//! * [`pool`]: `max_pool2d`, `avg_pool2d`, `adaptive_avg_pool2d` on quantized tensors.
//! * [`linear`]: `quantized::linear` / `linear_relu`.
//! * [`activation`]: relu, relu6, hardtanh / clamp, flatten / reshape.
//! * [`ort`]: ONNX Runtime's quantized CPU ops (QuantizeLinear, QLinearConv, QLinearMatMul,
//!   QLinearAdd, ...), bit for bit; formulas in `docs/ort.md`.
//!
//! The non-conv ops reproduce PyTorch eager's quantized CPU ops bit for bit, for the engines
//! `qnnpack` and `x86` ([`QEngine`]); where a result depends on the instruction set the x86
//! build dispatched to, the functions take a [`CpuCapability`]. The formulas, with the PyTorch
//! source they come from, are in `docs/ops.md`; `tests/ops_golden.rs` checks them against
//! fixtures made by real PyTorch (`scripts/gen_op_fixtures.py`).
//!
//! Quantized activations are passed as stored bytes plus their [`QParams`](crate::quant::QParams)
//! (u8 for quint8, two's-complement i8 for qint8), with shapes as PyTorch's contiguous
//! (row-major, NCHW) sizes.

pub mod activation;
pub mod add;
pub mod cat;
mod conv;
pub mod linear;
pub mod ort;
pub mod pool;

pub use conv::{conv2d_acc, conv2d_f32, conv2d_quantized, quantize_weight, requantize};

use crate::error::{Error, Result};

/// PyTorch's quantized engine (`torch.backends.quantized.engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QEngine {
    /// `qnnpack`: PyTorch's bundled QNNPACK where it has a kernel for the op (quint8), the
    /// generic ATen kernels otherwise.
    Qnnpack,
    /// `x86`: FBGEMM / oneDNN for linear and conv, the generic (vectorized) ATen kernels for
    /// the other ops.
    X86,
}

impl QEngine {
    /// The engine's name in PyTorch.
    pub fn name(self) -> &'static str {
        match self {
            QEngine::Qnnpack => "qnnpack",
            QEngine::X86 => "x86",
        }
    }

    /// Parses `qnnpack`, `x86` or `fbgemm` (PyTorch's older x86 engine: the same FBGEMM
    /// linear and the same ATen kernels for the other ops, so the same formulas).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "qnnpack" => Ok(QEngine::Qnnpack),
            "x86" | "fbgemm" => Ok(QEngine::X86),
            _ => Err(Error::UnknownName {
                kind: "quantized engine",
                name: s.to_string(),
                expected: "qnnpack, x86, fbgemm".into(),
            }),
        }
    }
}

/// The ATen CPU capability PyTorch dispatched to (`torch.backends.cpu.get_cpu_capability()`,
/// overridable with the `ATEN_CPU_CAPABILITY` environment variable).
///
/// Only the x86 engine's quantized add depends on it (see [`add::add`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuCapability {
    /// `DEFAULT`: no vector kernels; every element takes the scalar path.
    Default,
    /// `AVX2`.
    Avx2,
    /// `AVX512` (quantized kernels registered without an AVX512 variant run their AVX2 one).
    Avx512,
}

impl CpuCapability {
    /// Parses PyTorch's capability string (`DEFAULT`, `AVX2`, `AVX512`, any case).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "DEFAULT" => Ok(CpuCapability::Default),
            "AVX2" => Ok(CpuCapability::Avx2),
            "AVX512" => Ok(CpuCapability::Avx512),
            _ => Err(Error::UnknownName {
                kind: "CPU capability",
                name: s.to_string(),
                expected: "DEFAULT, AVX2, AVX512".into(),
            }),
        }
    }

    /// Lanes of the `Vectorized<c10::quint8>` that ATen's quantized add kernel (`qadd_kernel`,
    /// `QuantizedOpKernels.cpp`) runs with, or `None` when its arithmetic is the scalar one
    /// (`DEFAULT`).
    ///
    /// `qadd_stub` is registered with `REGISTER_DISPATCH`, which leaves the AVX512 slot empty,
    /// so an AVX512 machine runs the AVX2 kernel: 32 lanes on both (the fixtures confirm it).
    pub fn qadd_lanes(self) -> Option<usize> {
        match self {
            CpuCapability::Default => None,
            CpuCapability::Avx2 | CpuCapability::Avx512 => Some(32),
        }
    }
}

/// Fails unless `data` holds exactly the elements `dims` describes; returns that count.
pub(crate) fn check_data(what: &str, data_len: usize, dims: &[usize]) -> Result<usize> {
    let n = crate::shape::checked_numel(dims)?;
    if n != data_len {
        return Err(Error::Shape(format!(
            "{what} has {data_len} elements, its shape {dims:?} needs {n}"
        )));
    }
    Ok(n)
}
