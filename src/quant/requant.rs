//! Requantization: turning an int32 conv accumulator into an 8-bit output int.
//!
//! The epilogue of an int8 conv is data, not code: an [`Epilogue`] holds the formula, the output
//! qparams, the output clamp (which carries a fused ReLU) and one [`ChannelRequant`] record per
//! output channel with every constant the formula needs, precomputed on the host exactly as
//! PyTorch computes them. The CPU reference and the GPU kernels read the same records.
//!
//! With `acc = sum (x_q - x_zp) * (w_q - w_zp)` (exact int32), `sx`, `sw` (of the output
//! channel), `sy` the input, weight and output scales, `b` the float bias and `zp` the output
//! zero point:
//!
//! | formula | constants | output |
//! |---|---|---|
//! | qnnpack | `bq = rne(f32(b * f32(1/f32(sw*sx))))`, `M = f32(f32(sw*sx) * f32(1/sy))` | `rne(f32(f32(acc + bq) * M)) + zp` |
//! | fbgemm | `s = f32(sx*sw)`, `M = f32(s/sy)`, `bf = f32(b/s)` | `rne(f32(f32(f32(acc) + bf) * M)) + zp` |
//! | onednn | `sx`, `sw`, `b`, `inv = f32(1/sy)` | `rne(f32(f32(f32(f32(f32(acc)*sx)*sw) + b)*inv) + f32(zp)))` |
//! | fixed-point | `bq = rne(b / (sx*sw))` (f64), `(q, shift) = QuantizeMultiplier(sx*sw/sy)` (f64) | `MultiplyByQuantizedMultiplier(acc + bq, q, shift) + zp` |
//!
//! Every output is then clamped to the output clamp: the dtype's full range, with its lower
//! bound raised to `zp` when a ReLU is fused (PyTorch's `output_min = zero_point`; for oneDNN's
//! float ReLU post-op this gives the same ints).
//!
//! `fixed-point` is squint's integer-only mode (the TFLite scheme); it is *not* what any
//! PyTorch engine computes and differs from the float formulas near .5 ties.

use super::fixed_point::{multiply_by_quantized_multiplier, quantize_multiplier};
use super::qparams::{QParams, QRange, QScheme};
use super::rne;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which requantization formula the epilogue applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequantFormula {
    /// PyTorch's QNNPACK kernels (int32 bias, one float multiply).
    Qnnpack,
    /// PyTorch's FBGEMM kernels (float bias added to the float accumulator).
    Fbgemm,
    /// PyTorch's oneDNN kernels (engine `x86` on AVX512-VNNI machines).
    Onednn,
    /// Integer-only TFLite-style fixed point (Q0.31 multiplier and shift). Not a PyTorch formula.
    FixedPoint,
}

impl RequantFormula {
    /// Every formula, for sweeps and help texts.
    pub const ALL: [RequantFormula; 4] = [
        RequantFormula::Qnnpack,
        RequantFormula::Fbgemm,
        RequantFormula::Onednn,
        RequantFormula::FixedPoint,
    ];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            RequantFormula::Qnnpack => "qnnpack",
            RequantFormula::Fbgemm => "fbgemm",
            RequantFormula::Onednn => "onednn",
            RequantFormula::FixedPoint => "fixed-point",
        }
    }

    /// Parses a formula name (`qnnpack`, `fbgemm`, `onednn`/`x86`, `fixed-point`).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "qnnpack" => Ok(RequantFormula::Qnnpack),
            "fbgemm" => Ok(RequantFormula::Fbgemm),
            "onednn" | "x86" => Ok(RequantFormula::Onednn),
            "fixed-point" | "fixedpoint" | "integer" | "tflite" => Ok(RequantFormula::FixedPoint),
            _ => Err(Error::UnknownName {
                kind: "requantization formula",
                name: s.to_string(),
                expected: "qnnpack, fbgemm, onednn, fixed-point".into(),
            }),
        }
    }

    /// Small integer code shared with the GPU kernels.
    pub fn code(self) -> u32 {
        match self {
            RequantFormula::Qnnpack => 0,
            RequantFormula::Fbgemm => 1,
            RequantFormula::Onednn => 2,
            RequantFormula::FixedPoint => 3,
        }
    }
}

impl std::fmt::Display for RequantFormula {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Quantization parameters of a conv weight: one scale and zero point, or one per output channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightQParams {
    /// The scheme the weight was quantized with.
    pub scheme: QScheme,
    /// One scale (per-tensor) or one per output channel.
    pub scales: Vec<f32>,
    /// One zero point (per-tensor) or one per output channel.
    pub zero_points: Vec<i32>,
}

impl WeightQParams {
    /// Per-tensor weight qparams.
    pub fn per_tensor(scheme: QScheme, scale: f32, zero_point: i32) -> Self {
        WeightQParams {
            scheme,
            scales: vec![scale],
            zero_points: vec![zero_point],
        }
    }

    /// Scale of output channel `o`.
    ///
    /// # Panics
    /// If there is neither one scale nor one for channel `o` (see [`Self::check_channels`]).
    #[inline]
    pub fn scale(&self, o: usize) -> f32 {
        if self.scales.len() == 1 {
            self.scales[0]
        } else {
            self.scales[o]
        }
    }

    /// Zero point of output channel `o`.
    ///
    /// # Panics
    /// If there is neither one zero point nor one for channel `o` (see
    /// [`Self::check_channels`]).
    #[inline]
    pub fn zero_point(&self, o: usize) -> i32 {
        if self.zero_points.len() == 1 {
            self.zero_points[0]
        } else {
            self.zero_points[o]
        }
    }

    /// Checks that the per-channel vectors match `out_channels`.
    pub fn check_channels(&self, out_channels: usize) -> Result<()> {
        for (what, len) in [
            ("scales", self.scales.len()),
            ("zero points", self.zero_points.len()),
        ] {
            if len != 1 && len != out_channels {
                return Err(Error::Shape(format!(
                    "weight has {len} {what} but {out_channels} output channels"
                )));
            }
        }
        if let Some(s) = self.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::InvalidParameter(format!(
                "weight scale must be finite and > 0, got {s}"
            )));
        }
        Ok(())
    }
}

/// Per-output-channel constants of the epilogue. The layout is shared with the GPU kernels
/// (eight 32-bit words); fields a formula does not use are zero.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ChannelRequant {
    /// Integer bias added to the accumulator (qnnpack, fixed-point).
    pub bias_i32: i32,
    /// Float bias: `f32(b/s)` for fbgemm, `b` for onednn.
    pub bias_f32: f32,
    /// `M` for qnnpack and fbgemm; `sx` for onednn.
    pub mult: f32,
    /// `sw` for onednn.
    pub mult2: f32,
    /// `f32(1/sy)` for onednn.
    pub inv_out_scale: f32,
    /// Q0.31 multiplier (fixed-point).
    pub fp_multiplier: i32,
    /// Left shift before the high multiply (fixed-point).
    pub fp_left_shift: i32,
    /// Right shift after the high multiply (fixed-point).
    pub fp_right_shift: i32,
}

/// The requantization epilogue of one conv layer, described as data.
#[derive(Debug, Clone, PartialEq)]
pub struct Epilogue {
    /// The formula.
    pub formula: RequantFormula,
    /// Output qparams.
    pub out: QParams,
    /// Output clamp: the dtype range, lower bound raised to the zero point by a fused ReLU.
    pub clamp: QRange,
    /// One record per output channel.
    pub channels: Vec<ChannelRequant>,
}

fn round_f32_to_i32(v: f32) -> i32 {
    // The clamp keeps the conversion exact and far outside any 8-bit output range.
    rne(v).clamp(-1.0e9, 1.0e9) as i32
}

fn rne_to_i32_checked(v: f64, what: &str, o: usize) -> Result<i32> {
    let r = v.round_ties_even();
    if !(r >= i32::MIN as f64 && r <= i32::MAX as f64) {
        return Err(Error::InvalidParameter(format!(
            "quantized bias of output channel {o} ({what} = {v}) does not fit int32"
        )));
    }
    Ok(r as i32)
}

impl Epilogue {
    /// Builds the epilogue for a conv with input scale `in_scale`, weight qparams `w`, optional
    /// float bias (one per output channel), output qparams `out`, and an optional fused ReLU.
    pub fn new(
        formula: RequantFormula,
        in_scale: f32,
        w: &WeightQParams,
        bias: Option<&[f32]>,
        out: QParams,
        relu: bool,
        out_channels: usize,
    ) -> Result<Self> {
        w.check_channels(out_channels)?;
        if !(in_scale.is_finite() && in_scale > 0.0) {
            return Err(Error::InvalidParameter(format!(
                "input scale must be finite and > 0, got {in_scale}"
            )));
        }
        // Validates the output qparams.
        QParams::new(out.scale, out.zero_point, out.dtype)?;
        if let Some(b) = bias {
            if b.len() != out_channels {
                return Err(Error::Shape(format!(
                    "bias has {} values but the conv has {out_channels} output channels",
                    b.len()
                )));
            }
            crate::quant::check_finite(b, "bias")?;
        }
        let sx = in_scale;
        let sy = out.scale;
        let mut channels = Vec::with_capacity(out_channels);
        for o in 0..out_channels {
            let sw = w.scale(o);
            let b = bias.map_or(0.0, |b| b[o]);
            let mut c = ChannelRequant::default();
            match formula {
                RequantFormula::Qnnpack => {
                    let s = sw * sx;
                    let inv_s = 1.0f32 / s;
                    c.bias_i32 = rne_to_i32_checked((b * inv_s) as f64, "b / (sw*sx)", o)?;
                    c.mult = s * (1.0f32 / sy);
                }
                RequantFormula::Fbgemm => {
                    let s = sx * sw;
                    c.mult = s / sy;
                    c.bias_f32 = if bias.is_some() { b / s } else { 0.0 };
                }
                RequantFormula::Onednn => {
                    c.mult = sx;
                    c.mult2 = sw;
                    c.bias_f32 = b;
                    c.inv_out_scale = 1.0f32 / sy;
                }
                RequantFormula::FixedPoint => {
                    let s = sx as f64 * sw as f64;
                    c.bias_i32 = rne_to_i32_checked(b as f64 / s, "b / (sx*sw)", o)?;
                    let qm = quantize_multiplier(s / sy as f64);
                    if qm.left_shift() > 30 {
                        return Err(Error::InvalidParameter(format!(
                            "requantization multiplier sx*sw/sy = {} of output channel {o} is too large for fixed point",
                            s / sy as f64
                        )));
                    }
                    c.fp_multiplier = qm.multiplier;
                    c.fp_left_shift = qm.left_shift();
                    c.fp_right_shift = qm.right_shift();
                }
            }
            channels.push(c);
        }
        let full = out.dtype.full_range();
        let clamp = if relu {
            QRange {
                min: full.min.max(out.zero_point),
                max: full.max,
            }
        } else {
            full
        };
        Ok(Epilogue {
            formula,
            out,
            clamp,
            channels,
        })
    }

    /// This epilogue followed by a clamp of its output ints to `r` (a ReLU's or a clip's on
    /// the same qparams), as one epilogue: the clamp narrowed to the intersection, since
    /// `clamp(clamp(y, a, b), lo, hi) = clamp(y, max(a, lo), min(b, hi))` for every `y`
    /// where the two ranges overlap. `None` where they do not (every output would then be
    /// one constant, which a clamp range cannot express).
    pub fn then_clamp(&self, r: QRange) -> Option<Epilogue> {
        let clamp = QRange {
            min: self.clamp.min.max(r.min),
            max: self.clamp.max.min(r.max),
        };
        (clamp.min <= clamp.max).then(|| Epilogue {
            clamp,
            ..self.clone()
        })
    }

    /// Checks what the kernels rely on in an epilogue whose public fields were set by hand
    /// (one from [`Epilogue::new`] always passes): a clamp range with `min <= max` inside the
    /// output dtype's range, and for `fixed-point` a left shift in `0..=30` and a right shift
    /// in `0..=31`. Other unusual records (an output zero point outside the dtype's range, any
    /// multiplier) are allowed: every kernel computes them alike. The kernels call this before
    /// running, so that a bad epilogue is an [`Error::InvalidParameter`], not a panic.
    pub fn validate(&self) -> Result<()> {
        let full = self.out.dtype.full_range();
        let c = self.clamp;
        if !(c.min <= c.max && full.contains(c.min) && full.contains(c.max)) {
            return Err(Error::InvalidParameter(format!(
                "epilogue clamp [{}, {}] must satisfy min <= max inside the {} range",
                c.min, c.max, self.out.dtype
            )));
        }
        if self.formula == RequantFormula::FixedPoint {
            if let Some((o, ch)) = self.channels.iter().enumerate().find(|(_, ch)| {
                !(0..=30).contains(&ch.fp_left_shift) || !(0..=31).contains(&ch.fp_right_shift)
            }) {
                return Err(Error::InvalidParameter(format!(
                    "epilogue channel {o}: fixed-point shifts << {} >> {} (left shift 0..=30, \
                     right shift 0..=31)",
                    ch.fp_left_shift, ch.fp_right_shift
                )));
            }
        }
        Ok(())
    }

    /// Requantizes one accumulator of output channel `o` to an output int (in the output dtype's
    /// range, already clamped).
    ///
    /// # Panics
    /// If `o` is not below `channels.len()`.
    #[inline]
    pub fn apply(&self, acc: i32, o: usize) -> i32 {
        let c = &self.channels[o];
        let zp = self.out.zero_point;
        let y = match self.formula {
            RequantFormula::Qnnpack => {
                round_f32_to_i32(acc.wrapping_add(c.bias_i32) as f32 * c.mult).saturating_add(zp)
            }
            RequantFormula::Fbgemm => {
                round_f32_to_i32((acc as f32 + c.bias_f32) * c.mult).saturating_add(zp)
            }
            RequantFormula::Onednn => {
                let mut v = acc as f32 * c.mult;
                v *= c.mult2;
                v += c.bias_f32;
                v *= c.inv_out_scale;
                v += zp as f32;
                round_f32_to_i32(v)
            }
            RequantFormula::FixedPoint => {
                let qm = super::fixed_point::QuantizedMultiplier {
                    multiplier: c.fp_multiplier,
                    shift: c.fp_left_shift.saturating_sub(c.fp_right_shift),
                };
                multiply_by_quantized_multiplier(acc.wrapping_add(c.bias_i32), qm)
                    .saturating_add(zp)
            }
        };
        self.clamp.clamp(y)
    }

    /// Checks that no accumulator (plus integer bias, plus the fixed-point left shift) can leave
    /// int32, for any input int in `in_range` with zero point `in_zp`.
    ///
    /// `weights` is the int8 weight (OIHW, `k` = I*KH*KW values per output channel) with zero
    /// points `w`. The bound is exact worst case: `max|x - x_zp| * sum|w - w_zp| + |bias|`.
    pub fn check_accumulator(
        &self,
        weights: &[i8],
        w: &WeightQParams,
        in_range: QRange,
        in_zp: i32,
        k: usize,
        layer: Option<&str>,
    ) -> Result<()> {
        w.check_channels(self.channels.len())?;
        let sum_abs = weight_abs_sums(weights, w, self.channels.len(), k);
        self.check_accumulator_sums(&sum_abs, in_range, in_zp, k, layer)
    }

    /// [`Epilogue::check_accumulator`] from the per-channel `sum|w - w_zp|` of
    /// [`weight_abs_sums`] (computed once, when a layer is packed): same bound, same error.
    pub fn check_accumulator_sums(
        &self,
        sum_abs: &[i128],
        in_range: QRange,
        in_zp: i32,
        k: usize,
        layer: Option<&str>,
    ) -> Result<()> {
        self.validate()?;
        let max_dx = in_range.max_offset(in_zp);
        let limit = i32::MAX as i128;
        for (c, &sum_abs) in self.channels.iter().zip(sum_abs) {
            // Saturating, as `sum_abs` may hold any value; the shift is 0..=30 for a valid
            // epilogue (`Epilogue::new` sets 0 for the float formulas).
            let shift = c.fp_left_shift.clamp(0, 30);
            let bound = max_dx
                .saturating_mul(sum_abs)
                .saturating_add((c.bias_i32 as i128).abs())
                .saturating_mul(1i128 << shift);
            if bound > limit {
                return Err(Error::AccumulatorOverflow {
                    layer: layer.map(str::to_string),
                    bound,
                    limit,
                    k,
                });
            }
        }
        Ok(())
    }
}

/// `sum_k |w - w_zp|` per output channel of an int8 weight (OIHW, `k` values per channel, zero
/// points `w`): the weight side of the accumulator bound. Channels past the data sum to 0, and
/// channels without a zero point in `w` (which [`WeightQParams::check_channels`] rejects) use 0.
pub fn weight_abs_sums(weights: &[i8], w: &WeightQParams, channels: usize, k: usize) -> Vec<i128> {
    (0..channels)
        .map(|o| {
            let wzp = match w.zero_points.as_slice() {
                [z] => *z,
                zps => zps.get(o).copied().unwrap_or(0),
            } as i128;
            o.checked_mul(k)
                .and_then(|start| weights.get(start..start.checked_add(k)?))
                .unwrap_or(&[])
                .iter()
                .map(|&v| (v as i128 - wzp).abs())
                .sum()
        })
        .collect()
}
