//! Quantization math: dtypes, qparams, quantize/dequantize, requantization formulas.
//!
//! This module is pure arithmetic. It knows nothing of observers, models or devices, and every
//! other module builds on it. The formulas are the ones PyTorch 2.15 uses, verified bit for bit
//! against its quantized ops (see `../shared/golden/README.md` and the crate README).
//!
//! # Notation
//! `f32(...)` means "rounded to float32 after each operation" and `rne` means round to nearest,
//! ties to even. Every function here documents its formula in that notation.

mod fixed_point;
mod qnnpack;
mod qparams;
mod quantize;
mod requant;
mod round;
mod step;

pub use fixed_point::{
    multiply_by_quantized_multiplier, quantize_multiplier, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul, QuantizedMultiplier,
};
pub use qnnpack::QnnpackAddParams;
pub use qparams::{calculate_qparams, QDtype, QParams, QRange, QScheme, EPS};
pub use quantize::{
    check_finite, dequantize_one, dequantize_slice, inverse_scale, quantize_one, quantize_slice,
};
pub use requant::{weight_abs_sums, ChannelRequant, Epilogue, RequantFormula, WeightQParams};
pub use round::rne;
pub use step::{f32_from_order_key, f32_order_key, QuantizeSteps, StepTable};
