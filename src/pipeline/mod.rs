//! The static-quantization pipeline: prepare → calibrate → convert → run, diagnostics, and
//! golden-case checks.
//!
//! ```no_run
//! use squint::pipeline::{Device, Model, PreparedModel, QConfig, ConvertOptions};
//! # fn demo(model: Model, calib: Vec<squint::tensor::Tensor<f32>>, x: squint::tensor::Tensor<f32>) -> squint::Result<()> {
//! let mut prepared = PreparedModel::new(model, QConfig::qnnpack())?;
//! prepared.calibrate_all(&calib, true)?;
//! let (quantized, warnings) = prepared.convert(&ConvertOptions::default())?;
//! let y = quantized.run(&x, &Device::CpuReference)?;
//! # Ok(()) }
//! ```

pub mod bench;
pub mod cross_check;
pub mod demo;
pub mod device;
pub mod diagnostics;
pub mod golden;
pub mod model;
pub mod plot;
pub mod qconfig;
pub mod quantized;

pub use device::Device;
pub use model::{Layer, Model, ModelBuilder};
pub use qconfig::QConfig;
pub use quantized::{ConvertOptions, PreparedModel, QuantizedModel, QuantizedOutput};
