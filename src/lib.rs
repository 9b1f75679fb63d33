//! # squint — static quantization to int8
//!
//! PyTorch-exact static quantization: observers calibrate on the CPU, layers convert to int8
//! weights, int32 bias and a requantization epilogue, and the int8 conv runs on any GPU through
//! `wgpu`, bit-exact with a simple CPU reference.
//!
//! Module map (dependencies point one way):
//!
//! ```text
//! cli → pipeline → { observers, cpu, gpu } → quant (math), shape
//!                   io (npy, safetensors, golden cases)
//! ```
//!
//! * [`quant`]: qparams, quantize/dequantize, requantization formulas (pure math).
//! * [`shape`]: conv geometry and validation.
//! * [`observers`]: calibration statistics (MinMax, MovingAverageMinMax, Histogram, per-channel).
//! * [`cpu`]: the reference kernels every fast path is checked against.
//! * [`gpu`]: the wgpu backend (WGSL kernels in `shaders/`).
//! * [`io`]: `.npy` and `.safetensors` files, golden cases.

pub mod cli;
pub mod cpu;
pub mod error;
pub mod gpu;
pub mod io;
pub mod observers;
pub mod pipeline;
pub mod quant;
pub mod rng;
pub mod shape;
pub mod tensor;

pub use error::{Error, Result};
