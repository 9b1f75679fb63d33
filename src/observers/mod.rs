//! Observers: calibration statistics and the qparams they choose.
//!
//! An observer watches the float tensors that flow through one quantization point during
//! calibration and then proposes the qparams (`scale`, `zero_point`) for it. Every observer here
//! reproduces PyTorch 2.15's `torch.ao.quantization` observer of the same name **bit for bit**
//! (see `../shared/golden/README.md`, section "Exact numerics", and `tests/observers_golden.rs`).
//!
//! | observer | state | range that goes into `_calculate_qparams` |
//! |---|---|---|
//! | [`MinMaxObserver`] | running `min`, `max` | `(min, max)` |
//! | [`MovingAverageMinMaxObserver`] | exponential moving average of the batch min/max | `(min, max)` |
//! | [`HistogramObserver`] | running `min`, `max` and a 2048-bin histogram | the L2-optimal sub-range of the histogram |
//! | [`PerChannelMinMaxObserver`] | running min/max per output channel (axis 0) | per channel `(min_c, max_c)` |
//!
//! The qparams formula itself is [`calculate_qparams`] from [`crate::quant`]; observers only
//! choose the range and pass [`ObserverConfig::qrange`] along.
//!
//! # Differences from PyTorch, all deliberate
//!
//! * **Uncalibrated observers are an error.** PyTorch silently returns scale 1.0, zero point 0
//!   for an observer that never saw data (the "forum bug"). Here [`Observer::qparams`] returns
//!   [`Error::Uncalibrated`] naming the observer's label; the PyTorch default is only available
//!   through the explicit opt-in [`Observer::qparams_or_uncalibrated_default`].
//! * **NaN and ±Inf are rejected** with [`Error::NonFinite`] (PyTorch's HistogramObserver drops
//!   ±Inf with a warning and its min/max observers let NaN poison the state). A batch whose range
//!   width `max - min` overflows float32 is rejected with [`Error::InvalidParameter`]: PyTorch
//!   produces an infinite scale or NaN bins for it. In both cases the observer state is unchanged.
//! * **An explicit `quant_range` overrides `reduce_range`.** PyTorch halves a user-given
//!   `quant_min`/`quant_max` when `reduce_range=True` is also set; squint uses the given range as
//!   is (set the halved range yourself to get PyTorch's behaviour).
//! * An empty tensor is a no-op, as in PyTorch (it does not count as a batch).

mod histogram;
mod minmax;
mod per_channel;
pub(crate) mod torch_sum;

pub use histogram::HistogramObserver;
pub use minmax::{MinMaxObserver, MovingAverageMinMaxObserver};
pub use per_channel::PerChannelMinMaxObserver;

use crate::error::{Error, Result};
use crate::quant::{calculate_qparams, QDtype, QParams, QRange, QScheme, WeightQParams};
use serde::{Deserialize, Serialize};

/// A calibration observer for one per-tensor quantization point.
///
/// All implementations are deterministic and PyTorch-exact (see the module docs for the few
/// deliberate differences). Feed tensors with [`Observer::observe`], then ask for
/// [`Observer::qparams`].
pub trait Observer: Send + std::fmt::Debug {
    /// Feeds one tensor (flat f32 values, any shape).
    ///
    /// NaN/Inf gives [`Error::NonFinite`] naming `name` (the tensor), and a batch whose range
    /// width overflows float32 gives [`Error::InvalidParameter`]; in both cases the state is left
    /// unchanged. An empty slice is a no-op.
    fn observe(&mut self, x: &[f32], name: &str) -> Result<()>;

    /// Number of (non-empty) tensors observed so far.
    fn batches_seen(&self) -> usize;

    /// Running `(min, max)` of everything seen (for the moving average: the averaged values);
    /// `None` before any data.
    fn min_max(&self) -> Option<(f32, f32)>;

    /// The range that goes into `_calculate_qparams`: the L2 search result for the histogram
    /// observer, [`Observer::min_max`] for the others. `None` before any data.
    fn qparams_range(&self) -> Option<(f32, f32)>;

    /// The qparams PyTorch's `calculate_qparams()` returns for this state.
    ///
    /// Returns [`Error::Uncalibrated`] (naming [`ObserverConfig::label`]) if no data was seen.
    fn qparams(&self) -> Result<QParams>;

    /// Like [`Observer::qparams`], but returns PyTorch's uncalibrated default
    /// (scale 1.0, zero point 0) when no data was seen. This is the explicit opt-in to the
    /// behaviour behind the forum bug; prefer [`Observer::qparams`].
    fn qparams_or_uncalibrated_default(&self) -> QParams {
        match self.qparams() {
            Ok(qp) => qp,
            Err(e) => {
                // With data seen, the range is finite and ordered by construction (observe
                // rejects anything else), so `qparams` can only fail for "no data".
                debug_assert!(matches!(e, Error::Uncalibrated { .. }), "{e}");
                if !matches!(e, Error::Uncalibrated { .. }) {
                    log::warn!("{e}; using the uncalibrated default qparams");
                }
                QParams::uncalibrated_default(self.config().dtype)
            }
        }
    }

    /// The configuration the observer was built from.
    fn config(&self) -> &ObserverConfig;

    /// The histogram, for observers that keep one ([`HistogramObserver`]); `None` otherwise.
    fn histogram(&self) -> Option<&[f32]> {
        None
    }
}

/// Which observer algorithm a quantization point uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ObserverKind {
    /// `MinMaxObserver`: running min/max.
    #[serde(rename = "minmax")]
    MinMax,
    /// `MovingAverageMinMaxObserver`: exponential moving average of the batch min/max.
    #[serde(rename = "moving-average", alias = "moving-average-minmax")]
    MovingAverageMinMax,
    /// `HistogramObserver`: histogram plus L2-error range search.
    #[serde(rename = "histogram")]
    Histogram,
    /// `PerChannelMinMaxObserver` along axis 0 (weights); see [`PerChannelMinMaxObserver`].
    #[serde(rename = "per-channel-minmax")]
    PerChannelMinMax,
}

impl ObserverKind {
    /// Every kind, for help texts and sweeps.
    pub const ALL: [ObserverKind; 4] = [
        ObserverKind::MinMax,
        ObserverKind::MovingAverageMinMax,
        ObserverKind::Histogram,
        ObserverKind::PerChannelMinMax,
    ];

    /// Parses `minmax`, `moving-average` (or `moving-average-minmax`), `histogram`,
    /// `per-channel-minmax`. Case-insensitive; `_` may stand for `-`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "minmax" | "min-max" => Ok(ObserverKind::MinMax),
            "moving-average" | "moving-average-minmax" => Ok(ObserverKind::MovingAverageMinMax),
            "histogram" => Ok(ObserverKind::Histogram),
            "per-channel-minmax" => Ok(ObserverKind::PerChannelMinMax),
            _ => Err(Error::UnknownName {
                kind: "observer",
                name: s.to_string(),
                expected: "minmax, moving-average, histogram, per-channel-minmax".into(),
            }),
        }
    }

    /// The canonical name (accepted by [`ObserverKind::parse`]).
    pub fn name(self) -> &'static str {
        match self {
            ObserverKind::MinMax => "minmax",
            ObserverKind::MovingAverageMinMax => "moving-average",
            ObserverKind::Histogram => "histogram",
            ObserverKind::PerChannelMinMax => "per-channel-minmax",
        }
    }

    /// PyTorch's class name.
    pub fn torch_class(self) -> &'static str {
        match self {
            ObserverKind::MinMax => "MinMaxObserver",
            ObserverKind::MovingAverageMinMax => "MovingAverageMinMaxObserver",
            ObserverKind::Histogram => "HistogramObserver",
            ObserverKind::PerChannelMinMax => "PerChannelMinMaxObserver",
        }
    }
}

impl std::fmt::Display for ObserverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The largest `bins * upsample_rate` accepted: bin indices must be exact in float32, as they
/// are in PyTorch's float32 `linspace`/`histc` arithmetic.
pub const MAX_UPSAMPLED_BINS: usize = 1 << 24;

/// Configuration of one observer (PyTorch's observer constructor arguments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObserverConfig {
    /// The algorithm.
    pub kind: ObserverKind,
    /// Quantized dtype the qparams are for.
    pub dtype: QDtype,
    /// `per_tensor_symmetric` (true) or `per_tensor_affine` (false).
    pub symmetric: bool,
    /// Halve the observer range (quint8 0..=127, qint8 -64..=63), as fbgemm/x86 default qconfigs do.
    pub reduce_range: bool,
    /// Explicit `quant_min`/`quant_max`. Overrides `reduce_range` (see the module docs).
    pub quant_range: Option<QRange>,
    /// Moving-average constant `c` in (0, 1] (default 0.01; only the moving-average observer uses it).
    pub averaging_constant: f32,
    /// Histogram bins (default 2048; histogram observer only).
    pub bins: usize,
    /// Sub-bins per bin when an old histogram is remapped onto a wider range (default 16).
    pub upsample_rate: usize,
    /// Name used in error messages (e.g. the quantization point, `conv1.input`).
    pub label: String,
}

impl ObserverConfig {
    /// A config with PyTorch's defaults: affine, no reduce_range, `c = 0.01`, 2048 bins,
    /// upsample rate 16, label = the kind's name.
    pub fn new(kind: ObserverKind, dtype: QDtype) -> Self {
        ObserverConfig {
            kind,
            dtype,
            symmetric: false,
            reduce_range: false,
            quant_range: None,
            averaging_constant: 0.01,
            bins: 2048,
            upsample_rate: 16,
            label: kind.name().to_string(),
        }
    }

    /// Sets `per_tensor_symmetric` (true) or `per_tensor_affine` (false).
    pub fn symmetric(mut self, symmetric: bool) -> Self {
        self.symmetric = symmetric;
        self
    }

    /// Sets `reduce_range`.
    pub fn reduce_range(mut self, reduce_range: bool) -> Self {
        self.reduce_range = reduce_range;
        self
    }

    /// Sets the moving-average constant.
    pub fn averaging_constant(mut self, c: f32) -> Self {
        self.averaging_constant = c;
        self
    }

    /// Sets an explicit `quant_min`/`quant_max` (overrides `reduce_range`).
    pub fn quant_range(mut self, range: QRange) -> Self {
        self.quant_range = Some(range);
        self
    }

    /// Sets the number of histogram bins.
    pub fn bins(mut self, bins: usize) -> Self {
        self.bins = bins;
        self
    }

    /// Sets the histogram upsample rate.
    pub fn upsample_rate(mut self, rate: usize) -> Self {
        self.upsample_rate = rate;
        self
    }

    /// Sets the label used in error messages.
    pub fn label(mut self, label: &str) -> Self {
        self.label = label.to_string();
        self
    }

    /// The observer range passed to `_calculate_qparams`: `quant_range` if given, else
    /// [`QDtype::observer_range`]`(reduce_range)`.
    pub fn qrange(&self) -> QRange {
        self.quant_range
            .unwrap_or_else(|| self.dtype.observer_range(self.reduce_range))
    }

    /// The qparams scheme (`PerTensorSymmetric` or `PerTensorAffine`).
    pub fn scheme(&self) -> QScheme {
        if self.symmetric {
            QScheme::PerTensorSymmetric
        } else {
            QScheme::PerTensorAffine
        }
    }

    /// Checks every parameter (PyTorch's constructor assertions, plus squint's limits):
    /// `averaging_constant` finite in (0, 1]; `bins >= 1`, `upsample_rate >= 1`,
    /// `bins * upsample_rate <= 2^24`; a custom `quant_range` with `min < max`, inside the
    /// dtype's range and containing 0.
    pub fn validate(&self) -> Result<()> {
        let c = self.averaging_constant;
        if !(c.is_finite() && c > 0.0 && c <= 1.0) {
            return Err(Error::InvalidParameter(format!(
                "observer '{}': averaging constant must be in (0, 1], got {c}",
                self.label
            )));
        }
        if self.bins == 0 || self.upsample_rate == 0 {
            return Err(Error::InvalidParameter(format!(
                "observer '{}': bins ({}) and upsample_rate ({}) must be >= 1",
                self.label, self.bins, self.upsample_rate
            )));
        }
        match self.bins.checked_mul(self.upsample_rate) {
            Some(n) if n <= MAX_UPSAMPLED_BINS => {}
            _ => {
                return Err(Error::InvalidParameter(format!(
                    "observer '{}': bins * upsample_rate = {} * {} exceeds 2^24",
                    self.label, self.bins, self.upsample_rate
                )))
            }
        }
        if let Some(r) = self.quant_range {
            let full = self.dtype.full_range();
            if !(r.min < r.max && full.contains(r.min) && full.contains(r.max)) {
                return Err(Error::InvalidParameter(format!(
                    "observer '{}': quant range [{}, {}] must satisfy min < max inside the {} \
                     range [{}, {}]",
                    self.label, r.min, r.max, self.dtype, full.min, full.max
                )));
            }
            if !r.contains(0) {
                return Err(Error::InvalidParameter(format!(
                    "observer '{}': quant range [{}, {}] must include 0",
                    self.label, r.min, r.max
                )));
            }
        }
        Ok(())
    }

    /// Validates the config and builds the observer.
    ///
    /// [`ObserverKind::PerChannelMinMax`] is not a per-tensor observer and gives
    /// [`Error::InvalidParameter`]: use [`PerChannelMinMaxObserver`] directly.
    pub fn build(&self) -> Result<Box<dyn Observer>> {
        Ok(match self.kind {
            ObserverKind::MinMax => Box::new(MinMaxObserver::new(self.clone())?),
            ObserverKind::MovingAverageMinMax => {
                Box::new(MovingAverageMinMaxObserver::new(self.clone())?)
            }
            ObserverKind::Histogram => Box::new(HistogramObserver::new(self.clone())?),
            ObserverKind::PerChannelMinMax => {
                return Err(Error::InvalidParameter(format!(
                    "observer '{}': per-channel-minmax is not a per-tensor observer; use \
                     PerChannelMinMaxObserver (or weight_qparams) for weights",
                    self.label
                )))
            }
        })
    }

    /// Validates the config and checks that its kind is `kind` (typed constructors).
    pub(crate) fn check_kind(&self, kind: ObserverKind) -> Result<()> {
        self.validate()?;
        if self.kind != kind {
            return Err(Error::InvalidParameter(format!(
                "observer '{}': a {} config cannot build a {}",
                self.label,
                self.kind.name(),
                kind.torch_class()
            )));
        }
        Ok(())
    }

    /// `_calculate_qparams(min, max)` with this config's dtype, scheme and range.
    pub(crate) fn calculate(&self, min: f32, max: f32) -> Result<QParams> {
        calculate_qparams(
            min,
            max,
            self.dtype,
            self.symmetric,
            self.qrange(),
            self.quant_range.is_some(),
        )
    }

    /// The [`Error::Uncalibrated`] error for this observer.
    pub(crate) fn uncalibrated(&self) -> Error {
        Error::Uncalibrated {
            name: self.label.clone(),
        }
    }
}

/// One pass over `x`: rejects NaN/Inf (naming `name` and the first bad index) and returns
/// `aminmax(x)`, or `None` for an empty slice.
pub(crate) fn finite_min_max(x: &[f32], name: &str) -> Result<Option<(f32, f32)>> {
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    let mut all_finite = true;
    for &v in x {
        all_finite &= v.is_finite();
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !all_finite {
        crate::quant::check_finite(x, name)?;
    }
    Ok(if x.is_empty() { None } else { Some((lo, hi)) })
}

/// Rejects a range whose width `max - min` is not finite in float32.
pub(crate) fn check_width(min: f32, max: f32, label: &str, name: &str) -> Result<()> {
    if (max - min).is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidParameter(format!(
            "observer '{label}': range [{min}, {max}] after tensor '{name}' is wider than float32 \
             can represent; its qparams would be infinite"
        )))
    }
}

/// Weight qparams as PyTorch's default weight observers compute them.
///
/// `w` is the flat weight (OIHW, so axis 0 = output channel), `out_channels` its first
/// dimension. Per-tensor schemes use [`MinMaxObserver`] (`per_tensor_symmetric` is PyTorch's
/// `default_weight_observer` with qint8); per-channel schemes use [`PerChannelMinMaxObserver`]
/// along axis 0 (`default_per_channel_weight_observer` with `per_channel_symmetric`). No
/// `reduce_range`.
pub fn weight_qparams(
    w: &[f32],
    out_channels: usize,
    scheme: QScheme,
    dtype: QDtype,
) -> Result<WeightQParams> {
    if out_channels == 0 || w.is_empty() || !w.len().is_multiple_of(out_channels) {
        return Err(Error::Shape(format!(
            "weight with {} values cannot be split into {out_channels} output channels",
            w.len()
        )));
    }
    if scheme.is_per_channel() {
        let mut obs =
            PerChannelMinMaxObserver::new(dtype, scheme.is_symmetric(), false).with_label("weight");
        obs.observe(w, out_channels, "weight")?;
        obs.qparams()
    } else {
        let mut obs = MinMaxObserver::new(
            ObserverConfig::new(ObserverKind::MinMax, dtype)
                .symmetric(scheme.is_symmetric())
                .label("weight"),
        )?;
        obs.observe(w, "weight")?;
        let qp = obs.qparams()?;
        Ok(WeightQParams::per_tensor(scheme, qp.scale, qp.zero_point))
    }
}

#[cfg(test)]
mod tests;
