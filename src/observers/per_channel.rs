//! `PerChannelMinMaxObserver` along axis 0, for conv weights.
//!
//! A weight of shape `(O, ...)` stored flat in C order is `O` contiguous rows of `len / O`
//! values. The observer keeps a running min/max per row:
//!
//! ```text
//! min_c = min(min_c, min(x[c, :]));  max_c = max(max_c, max(x[c, :]))
//! ```
//!
//! and `calculate_qparams` applies PyTorch's `_calculate_qparams` to each channel, exactly the
//! per-tensor formula (`per_channel_symmetric`: `scale_c = max(f32(max(-min_neg, max_pos) /
//! 127.5), eps)`, zero point 0 for qint8; `per_channel_affine`: the affine formula).

use crate::error::{Error, Result};
use crate::quant::{calculate_qparams, QDtype, QScheme, WeightQParams};

/// PyTorch's `PerChannelMinMaxObserver(ch_axis=0)`.
#[derive(Debug, Clone)]
pub struct PerChannelMinMaxObserver {
    dtype: QDtype,
    symmetric: bool,
    reduce_range: bool,
    label: String,
    min: Vec<f32>,
    max: Vec<f32>,
    batches: usize,
}

impl PerChannelMinMaxObserver {
    /// A per-channel observer (`per_channel_symmetric` if `symmetric`, else
    /// `per_channel_affine`), label `per-channel-minmax`.
    pub fn new(dtype: QDtype, symmetric: bool, reduce_range: bool) -> Self {
        PerChannelMinMaxObserver {
            dtype,
            symmetric,
            reduce_range,
            label: "per-channel-minmax".to_string(),
            min: Vec::new(),
            max: Vec::new(),
            batches: 0,
        }
    }

    /// Sets the label used in error messages.
    pub fn with_label(mut self, label: &str) -> Self {
        self.label = label.to_string();
        self
    }

    /// The label used in error messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The qparams scheme (`PerChannelSymmetric` or `PerChannelAffine`).
    pub fn scheme(&self) -> QScheme {
        if self.symmetric {
            QScheme::PerChannelSymmetric
        } else {
            QScheme::PerChannelAffine
        }
    }

    /// Number of tensors observed so far.
    pub fn batches_seen(&self) -> usize {
        self.batches
    }

    /// Feeds one tensor of `channels` rows (axis 0).
    ///
    /// Errors: [`Error::Shape`] if `x` is empty, `channels` is 0, `x.len()` is not a multiple of
    /// `channels`, or `channels` differs from an earlier call; [`Error::NonFinite`] for NaN/Inf.
    /// On error the state is unchanged.
    pub fn observe(&mut self, x: &[f32], channels: usize, name: &str) -> Result<()> {
        if channels == 0 || x.is_empty() || !x.len().is_multiple_of(channels) {
            return Err(Error::Shape(format!(
                "observer '{}': tensor '{name}' with {} values cannot be split into {channels} \
                 channels",
                self.label,
                x.len()
            )));
        }
        if self.batches > 0 && self.min.len() != channels {
            return Err(Error::Shape(format!(
                "observer '{}': tensor '{name}' has {channels} channels, earlier ones had {}",
                self.label,
                self.min.len()
            )));
        }
        crate::quant::check_finite(x, name)?;
        let per = x.len() / channels;
        let (mut min, mut max) = if self.batches == 0 {
            (
                vec![f32::INFINITY; channels],
                vec![f32::NEG_INFINITY; channels],
            )
        } else {
            (self.min.clone(), self.max.clone())
        };
        for (c, row) in x.chunks_exact(per).enumerate() {
            let (lo, hi) = row
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            min[c] = min[c].min(lo);
            max[c] = max[c].max(hi);
            super::check_width(min[c], max[c], &self.label, name)?;
        }
        self.min = min;
        self.max = max;
        self.batches += 1;
        Ok(())
    }

    /// Running per-channel `(min, max)`; `None` before any data.
    pub fn min_max(&self) -> Option<(&[f32], &[f32])> {
        (self.batches > 0).then_some((self.min.as_slice(), self.max.as_slice()))
    }

    /// Per-channel qparams; [`Error::Uncalibrated`] (naming the label) if no data was seen.
    pub fn qparams(&self) -> Result<WeightQParams> {
        if self.batches == 0 {
            return Err(Error::Uncalibrated {
                name: self.label.clone(),
            });
        }
        let qrange = self.dtype.observer_range(self.reduce_range);
        let mut scales = Vec::with_capacity(self.min.len());
        let mut zero_points = Vec::with_capacity(self.min.len());
        for (&lo, &hi) in self.min.iter().zip(&self.max) {
            let qp = calculate_qparams(lo, hi, self.dtype, self.symmetric, qrange, false)?;
            scales.push(qp.scale);
            zero_points.push(qp.zero_point);
        }
        Ok(WeightQParams {
            scheme: self.scheme(),
            scales,
            zero_points,
        })
    }
}
