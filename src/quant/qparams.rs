//! Quantized dtypes, ranges and PyTorch's `_calculate_qparams`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The smallest scale an observer returns: `torch.finfo(torch.float32).eps` = 2^-23.
pub const EPS: f32 = f32::EPSILON;

/// An 8-bit quantized dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QDtype {
    /// Unsigned 8-bit, 0..=255 (`torch.quint8`).
    QUInt8,
    /// Signed 8-bit, -128..=127 (`torch.qint8`).
    QInt8,
}

impl QDtype {
    /// Full storage range of the dtype (quantizing always clamps to this).
    pub fn full_range(self) -> QRange {
        match self {
            QDtype::QUInt8 => QRange { min: 0, max: 255 },
            QDtype::QInt8 => QRange {
                min: -128,
                max: 127,
            },
        }
    }

    /// The observer range: the full range, or the halved one with `reduce_range`
    /// (quint8 0..=127, qint8 -64..=63), as PyTorch's observers compute it.
    pub fn observer_range(self, reduce_range: bool) -> QRange {
        match (self, reduce_range) {
            (d, false) => d.full_range(),
            (QDtype::QUInt8, true) => QRange { min: 0, max: 127 },
            (QDtype::QInt8, true) => QRange { min: -64, max: 63 },
        }
    }

    /// Name as PyTorch spells it.
    pub fn name(self) -> &'static str {
        match self {
            QDtype::QUInt8 => "quint8",
            QDtype::QInt8 => "qint8",
        }
    }

    /// Parse `quint8` / `qint8` (also `uint8` / `int8`).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "quint8" | "uint8" | "u8" => Ok(QDtype::QUInt8),
            "qint8" | "int8" | "i8" => Ok(QDtype::QInt8),
            _ => Err(Error::UnknownName {
                kind: "dtype",
                name: s.to_string(),
                expected: "quint8, qint8".into(),
            }),
        }
    }

    /// Reads one stored byte as the integer it represents.
    #[inline]
    pub fn byte_to_int(self, b: u8) -> i32 {
        match self {
            QDtype::QUInt8 => b as i32,
            QDtype::QInt8 => b as i8 as i32,
        }
    }

    /// Stores an integer already inside [`Self::full_range`] as one byte.
    #[inline]
    pub fn int_to_byte(self, v: i32) -> u8 {
        debug_assert!(self.full_range().contains(v));
        v as u8
    }
}

impl std::fmt::Display for QDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An inclusive integer range `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QRange {
    /// Smallest value.
    pub min: i32,
    /// Largest value.
    pub max: i32,
}

impl QRange {
    /// Whether `v` lies in the range.
    #[inline]
    pub fn contains(self, v: i32) -> bool {
        (self.min..=self.max).contains(&v)
    }

    /// Clamp `v` into the range. Never panics: for an inverted range (`min > max`, only
    /// possible through the public fields) the result is `max`.
    #[inline]
    pub fn clamp(self, v: i32) -> i32 {
        v.max(self.min).min(self.max)
    }

    /// The largest `|v − zp|` over the range: how far a value can lie from zero point `zp`.
    #[inline]
    pub fn max_offset(self, zp: i32) -> i128 {
        (zp as i128 - self.min as i128)
            .abs()
            .max((self.max as i128 - zp as i128).abs())
    }
}

/// How qparams are derived from a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QScheme {
    /// `torch.per_tensor_affine`: scale from the whole range, zero point anywhere.
    PerTensorAffine,
    /// `torch.per_tensor_symmetric`: range symmetric around 0, zero point 0 (qint8) or 128 (quint8).
    PerTensorSymmetric,
    /// `torch.per_channel_symmetric` along axis 0 (weights).
    PerChannelSymmetric,
    /// `torch.per_channel_affine` along axis 0 (weights).
    PerChannelAffine,
}

impl QScheme {
    /// Whether the scheme is symmetric.
    pub fn is_symmetric(self) -> bool {
        matches!(
            self,
            QScheme::PerTensorSymmetric | QScheme::PerChannelSymmetric
        )
    }

    /// Whether the scheme has one scale per output channel.
    pub fn is_per_channel(self) -> bool {
        matches!(
            self,
            QScheme::PerChannelSymmetric | QScheme::PerChannelAffine
        )
    }

    /// Name as PyTorch spells it.
    pub fn name(self) -> &'static str {
        match self {
            QScheme::PerTensorAffine => "per_tensor_affine",
            QScheme::PerTensorSymmetric => "per_tensor_symmetric",
            QScheme::PerChannelSymmetric => "per_channel_symmetric",
            QScheme::PerChannelAffine => "per_channel_affine",
        }
    }
}

/// Per-tensor quantization parameters: `real = (q - zero_point) * scale`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    /// The float32 step between consecutive ints.
    pub scale: f32,
    /// The int that represents real 0.0.
    pub zero_point: i32,
    /// The storage dtype.
    pub dtype: QDtype,
}

impl QParams {
    /// Builds qparams, checking that the scale is finite and positive and the zero point is in
    /// the dtype's range.
    pub fn new(scale: f32, zero_point: i32, dtype: QDtype) -> Result<Self> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::InvalidParameter(format!(
                "scale must be finite and > 0, got {scale}"
            )));
        }
        if !dtype.full_range().contains(zero_point) {
            return Err(Error::InvalidParameter(format!(
                "zero point {zero_point} is outside the {dtype} range"
            )));
        }
        Ok(QParams {
            scale,
            zero_point,
            dtype,
        })
    }

    /// PyTorch's qparams of an observer that never saw data: scale 1.0, zero point 0.
    /// Only reachable through an explicit opt-in (see the observers module).
    pub fn uncalibrated_default(dtype: QDtype) -> Self {
        QParams {
            scale: 1.0,
            zero_point: 0,
            dtype,
        }
    }
}

/// PyTorch's `_calculate_qparams(min_val, max_val)` for a per-tensor (or one channel's) range.
///
/// `qrange` is the observer range (possibly reduced, or user-given). `custom_qrange` is true when
/// the user passed `quant_min`/`quant_max` explicitly (it changes the symmetric quint8 zero point
/// from 128 to `(qmin + qmax) / 2`, as in PyTorch).
///
/// ```text
/// min_neg = min(min, 0); max_pos = max(max, 0)
/// affine:    scale = max(f32((max_pos - min_neg) / f32(qmax - qmin)), eps)
///            zp    = clamp(qmin - rne(f32(min_neg / scale)), qmin, qmax)
/// symmetric: scale = max(f32(max(-min_neg, max_pos) / f32((qmax - qmin) / 2)), eps)
///            zp    = 0 (qint8) or 128 (quint8)
/// ```
///
/// The caller must handle the "never saw data" case (min = +inf, max = -inf) before calling:
/// this function returns an error for non-finite or inverted ranges.
pub fn calculate_qparams(
    min: f32,
    max: f32,
    dtype: QDtype,
    symmetric: bool,
    qrange: QRange,
    custom_qrange: bool,
) -> Result<QParams> {
    if !min.is_finite() || !max.is_finite() {
        return Err(Error::InvalidParameter(format!(
            "cannot compute qparams from a non-finite range [{min}, {max}]"
        )));
    }
    if min > max {
        return Err(Error::InvalidParameter(format!(
            "cannot compute qparams: min {min} > max {max}"
        )));
    }
    if qrange.min >= qrange.max {
        return Err(Error::InvalidParameter(format!(
            "quant_min {} must be < quant_max {}",
            qrange.min, qrange.max
        )));
    }
    let full = dtype.full_range();
    if qrange.min < full.min || qrange.max > full.max {
        return Err(Error::InvalidParameter(format!(
            "quant range [{}, {}] exceeds the {dtype} range [{}, {}]",
            qrange.min, qrange.max, full.min, full.max
        )));
    }
    let min_neg = min.min(0.0);
    let max_pos = max.max(0.0);
    let (qmin, qmax) = (qrange.min, qrange.max);
    if symmetric {
        let amax = (-min_neg).max(max_pos);
        let half = ((qmax - qmin) as f64 / 2.0) as f32;
        let scale = (amax / half).max(EPS);
        let zero_point = match dtype {
            QDtype::QInt8 => 0,
            QDtype::QUInt8 if custom_qrange => (qmin + qmax).div_euclid(2),
            QDtype::QUInt8 => 128,
        };
        Ok(QParams {
            scale,
            zero_point,
            dtype,
        })
    } else {
        let scale = ((max_pos - min_neg) / (qmax - qmin) as f32).max(EPS);
        let shift = (min_neg / scale).round_ties_even();
        // |min_neg / scale| <= qmax - qmin (<= 255), so the cast is exact.
        let zero_point = (qmin - shift as i32).clamp(qmin, qmax);
        Ok(QParams {
            scale,
            zero_point,
            dtype,
        })
    }
}
