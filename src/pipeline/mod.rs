//! The static-quantization pipeline: prepare → calibrate → convert → run, diagnostics, and
//! golden-case checks.
//!
//! One concern per module:
//!
//! * [`model`]: the float model ([`Model`], [`ModelBuilder`], JSON + safetensors loading).
//! * [`qconfig`]: observer, weight scheme and requantization formula presets ([`QConfig`]).
//! * [`prepare`]: [`PreparedModel`], observers at every point, calibration.
//! * [`convert`]: [`PreparedModel::convert`], [`ConvertOptions`], pinned qparams.
//! * [`quantized`]: [`QuantizedModel`], its layers ([`QConv`]) and the run paths on every
//!   [`Device`]; the GPU layer cache lives beside it, and `save`/`load` (the
//!   `squint-quantized-v1` file format) in a private module.
//! * [`cross_check`], [`diagnostics`], [`histograms`]: device vs CPU reference, quantized vs
//!   float, calibration histograms.
//! * [`golden`]: checks against PyTorch's golden vectors.
//!
//! ```no_run
//! use squint::pipeline::{Device, Model, PreparedModel, QConfig, ConvertOptions};
//! # fn demo(model: Model, calib: Vec<squint::tensor::Tensor<f32>>, x: squint::tensor::Tensor<f32>) -> squint::Result<()> {
//! let mut prepared = PreparedModel::new(model, QConfig::qnnpack())?;
//! prepared.calibrate_all_with(&calib, |done, total| eprintln!("{done}/{total}"))?;
//! let (quantized, warnings) = prepared.convert(&ConvertOptions::default())?;
//! let y = quantized.run(&x, &Device::CpuReference)?;
//! # Ok(()) }
//! ```

pub mod convert;
pub mod cross_check;
pub mod device;
pub mod diagnostics;
mod format;
pub mod golden;
mod gpu_cache;
pub mod histograms;
pub mod model;
pub mod ort_preset;
pub mod prepare;
pub mod qconfig;
pub mod qdq;
pub mod qgraph;
pub mod quantized;

pub use convert::{read_pinned_qparams, ConvertOptions};
pub use device::Device;
pub use model::{Layer, Model, ModelBuilder};
pub use prepare::PreparedModel;
pub use qconfig::QConfig;
pub use quantized::{PointSource, QConv, QuantizedModel, QuantizedOutput};
