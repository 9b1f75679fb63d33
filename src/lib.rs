//! # squint — static quantization to int8
//!
//! PyTorch-exact static quantization: observers calibrate on the CPU, layers convert to int8
//! weights, int32 bias and a requantization epilogue, and the int8 conv runs on any GPU through
//! `wgpu`, bit-exact with a simple CPU reference.
//!
//! The library pipeline — prepare → calibrate → convert → run → cross-check:
//!
//! ```
//! use squint::pipeline::{cross_check, ConvertOptions, Device, Model, PreparedModel, QConfig};
//! use squint::shape::ConvParams;
//! use squint::tensor::Tensor;
//!
//! # fn main() -> squint::Result<()> {
//! let mut rng = squint::rng::Rng::new(0);
//! // A float model: Conv2d(3, 4, 3, padding=1) + ReLU (or `Model::load(json, safetensors)`).
//! let w = Tensor::new(vec![4, 3, 3, 3], rng.normal_vec(108, 0.3))?;
//! let conv = ConvParams::default().padding(1);
//! let model = Model::builder().conv2d("conv1", w, Some(vec![0.1; 4]), conv, true).build()?;
//! let mut batch = || Tensor::new(vec![1, 3, 8, 8], rng.uniform_vec(192));
//! let (calib, x) = (vec![batch()?, batch()?], batch()?);
//!
//! // Prepare: an observer at every quantization point; calibrate on float batches.
//! let mut prepared = PreparedModel::new(model, QConfig::qnnpack())?;
//! prepared.calibrate_all_with(&calib, |done, total| println!("calibrated {done}/{total}"))?;
//! // Convert: int8 weights, qparams, one requantization epilogue per conv.
//! let (quantized, warnings) = prepared.convert(&ConvertOptions::default())?;
//! assert!(warnings.is_empty());
//! // Run (here on the fast CPU path; `Device::open_gpu(&Default::default())?` for a GPU) …
//! let y = quantized.run(&x, &Device::Cpu)?;
//! assert_eq!(y.y.dims, [1, 4, 8, 8]);
//! // … and cross-check every quantization point against the CPU reference, bit for bit.
//! let check = cross_check::cross_check(&quantized, &x, &Device::Cpu)?;
//! assert!(check.bit_exact());
//! # Ok(()) }
//! ```
//!
//! Module map (dependencies point one way):
//!
//! ```text
//! pipeline → { io, graph, observers, cpu, gpu } → quant (math), shape
//! io::onnx → graph → cpu (float evaluation)
//! ```
//!
//! * [`quant`]: qparams, quantize/dequantize, requantization formulas (pure math).
//! * [`shape`]: conv geometry and validation.
//! * [`observers`]: calibration statistics (MinMax, MovingAverageMinMax, Histogram, per-channel).
//! * [`cpu`]: the reference kernels every fast path is checked against.
//! * [`gpu`]: the wgpu backend (WGSL kernels in `shaders/`).
//! * [`graph`]: graph models (a DAG of named values), shapes, buffer plan, float evaluation.
//! * [`io`]: `.npy`, `.safetensors` and ONNX files.
//! * [`pipeline`]: prepare, calibrate, convert, run, diagnostics, golden checks; graph models
//!   in [`pipeline::qgraph`].
//!
//! The `squint` command line (`squint demo`, `quantize`, `run`, `report`, `bench`, …) is the
//! crate's binary, built with the default `cli` feature; it is not part of this API. Depend on
//! the engine alone with `squint = { version = "0.1", default-features = false }` (no clap,
//! indicatif or plotters).

pub mod cpu;
pub mod error;
pub mod gpu;
pub mod graph;
pub mod io;
pub mod observers;
pub mod pipeline;
pub mod quant;
pub mod rng;
pub mod shape;
pub mod tensor;

pub use error::{Error, Result};

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
