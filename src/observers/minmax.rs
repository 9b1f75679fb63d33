//! `MinMaxObserver` and `MovingAverageMinMaxObserver`.
//!
//! Both keep a float32 `(min, max)` and hand it to `_calculate_qparams` unchanged.
//!
//! ```text
//! MinMax:          min = min(min, aminmax(x).min);  max = max(max, aminmax(x).max)
//! MovingAverage:   first batch:  (min, max) = aminmax(x)
//!                  later:        min = f32(min + f32(c * f32(bmin - min)))     (same for max)
//! ```
//!
//! `c` is the float32 averaging constant (PyTorch multiplies the float32 tensor by the Python
//! float, which is converted to float32 first). The moving average is an exponential filter:
//! after batches `b_1..b_n`, `min = (1-c)^(n-1) b_1 + sum_{k>=2} c (1-c)^(n-k) b_k`, up to
//! rounding; with `c = 1` it is the last batch's range.
//!
//! Rounding can leave the averaged `min` one ulp *above* the averaged `max` (e.g. `c = 1` and a
//! one-value batch: `min = 0 + (v - 0)` is exact, `max = M + (v - M)` is not). PyTorch keeps
//! that state and then fails an assertion in `calculate_qparams`; squint keeps the same raw
//! state (so later updates stay bit-exact) but reports the ordered pair
//! `(min(min, max), max(min, max))` from `min_max` and uses it for the qparams.

use super::{check_width, finite_min_max, Observer, ObserverConfig, ObserverKind};
use crate::error::Result;
use crate::quant::QParams;

/// PyTorch's `MinMaxObserver`: running min/max over every batch.
#[derive(Debug, Clone)]
pub struct MinMaxObserver {
    config: ObserverConfig,
    range: Option<(f32, f32)>,
    batches: usize,
}

impl MinMaxObserver {
    /// Builds the observer; `config.kind` must be [`ObserverKind::MinMax`].
    pub fn new(config: ObserverConfig) -> Result<Self> {
        config.check_kind(ObserverKind::MinMax)?;
        Ok(MinMaxObserver {
            config,
            range: None,
            batches: 0,
        })
    }
}

impl Observer for MinMaxObserver {
    fn observe(&mut self, x: &[f32], name: &str) -> Result<()> {
        let Some((bmin, bmax)) = finite_min_max(x, name)? else {
            return Ok(());
        };
        let (min, max) = match self.range {
            None => (bmin, bmax),
            Some((min, max)) => (bmin.min(min), bmax.max(max)),
        };
        check_width(min, max, &self.config.label, name)?;
        self.range = Some((min, max));
        self.batches += 1;
        Ok(())
    }

    fn batches_seen(&self) -> usize {
        self.batches
    }

    fn min_max(&self) -> Option<(f32, f32)> {
        self.range
    }

    fn qparams_range(&self) -> Option<(f32, f32)> {
        self.range
    }

    fn qparams(&self) -> Result<QParams> {
        let (min, max) = self.range.ok_or_else(|| self.config.uncalibrated())?;
        self.config.calculate(min, max)
    }

    fn config(&self) -> &ObserverConfig {
        &self.config
    }
}

/// PyTorch's `MovingAverageMinMaxObserver`: exponential moving average of the batch min/max.
#[derive(Debug, Clone)]
pub struct MovingAverageMinMaxObserver {
    config: ObserverConfig,
    range: Option<(f32, f32)>,
    batches: usize,
}

impl MovingAverageMinMaxObserver {
    /// Builds the observer; `config.kind` must be [`ObserverKind::MovingAverageMinMax`].
    pub fn new(config: ObserverConfig) -> Result<Self> {
        config.check_kind(ObserverKind::MovingAverageMinMax)?;
        Ok(MovingAverageMinMaxObserver {
            config,
            range: None,
            batches: 0,
        })
    }
}

impl Observer for MovingAverageMinMaxObserver {
    fn observe(&mut self, x: &[f32], name: &str) -> Result<()> {
        let Some((bmin, bmax)) = finite_min_max(x, name)? else {
            return Ok(());
        };
        let (min, max) = match self.range {
            None => (bmin, bmax),
            Some((min, max)) => {
                let c = self.config.averaging_constant;
                (min + c * (bmin - min), max + c * (bmax - max))
            }
        };
        // `bmin - min` can overflow for ranges near f32::MAX; keep the state finite.
        if !(min.is_finite() && max.is_finite()) {
            return Err(crate::error::Error::InvalidParameter(format!(
                "observer '{}': moving average overflowed float32 after tensor '{name}'",
                self.config.label
            )));
        }
        check_width(min, max, &self.config.label, name)?;
        self.range = Some((min, max));
        self.batches += 1;
        Ok(())
    }

    fn batches_seen(&self) -> usize {
        self.batches
    }

    fn min_max(&self) -> Option<(f32, f32)> {
        self.range.map(|(min, max)| (min.min(max), max.max(min)))
    }

    fn qparams_range(&self) -> Option<(f32, f32)> {
        self.min_max()
    }

    fn qparams(&self) -> Result<QParams> {
        let (min, max) = self.min_max().ok_or_else(|| self.config.uncalibrated())?;
        self.config.calculate(min, max)
    }

    fn config(&self) -> &ObserverConfig {
        &self.config
    }
}
