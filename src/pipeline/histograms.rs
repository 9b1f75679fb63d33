//! Calibration histograms with the range each observer chooses for every quantization point
//! (the data behind `squint report --plot`, which draws them as SVG).

use super::model::Model;
use crate::error::{Error, Result};
use crate::observers::{HistogramObserver, Observer, ObserverConfig, ObserverKind};
use crate::quant::QDtype;
use crate::tensor::Tensor;

/// One point's calibration histogram and the ranges observers choose for it.
#[derive(Debug, Clone, PartialEq)]
pub struct PointHistogram {
    /// Point name.
    pub name: String,
    /// Histogram range.
    pub min: f32,
    /// Histogram range.
    pub max: f32,
    /// Bin counts (2048 bins over [min, max]).
    pub hist: Vec<f32>,
    /// (observer, range min, range max) that goes into the qparams formula.
    pub ranges: Vec<(String, f32, f32)>,
}

/// Calibrates MinMax, MovingAverageMinMax and Histogram observers on every point of `model`
/// and returns each point's histogram with the three ranges.
pub fn point_histograms(
    model: &Model,
    dtype: QDtype,
    reduce_range: bool,
    calib: &[Tensor<f32>],
) -> Result<Vec<PointHistogram>> {
    let points = model.points();
    let cfg = |k| ObserverConfig::new(k, dtype).reduce_range(reduce_range);
    let mut hist: Vec<HistogramObserver> = points
        .iter()
        .map(|p| HistogramObserver::new(cfg(ObserverKind::Histogram).label(p)))
        .collect::<Result<_>>()?;
    let mut others: Vec<Vec<Box<dyn Observer>>> = points
        .iter()
        .map(|p| {
            [ObserverKind::MinMax, ObserverKind::MovingAverageMinMax]
                .into_iter()
                .map(|k| cfg(k).label(p).build())
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    for b in calib {
        let (seen, _) = model.forward_points(b)?;
        for (i, t) in seen.iter().enumerate() {
            hist[i].observe(&t.data, &points[i])?;
            for o in &mut others[i] {
                o.observe(&t.data, &points[i])?;
            }
        }
    }
    let mut out = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let (min, max) = hist[i]
            .min_max()
            .ok_or_else(|| Error::Uncalibrated { name: p.clone() })?;
        let mut ranges = Vec::new();
        for o in &others[i] {
            let (lo, hi) = o
                .qparams_range()
                .ok_or_else(|| Error::Uncalibrated { name: p.clone() })?;
            ranges.push((o.config().kind.name().to_string(), lo, hi));
        }
        let (lo, hi) = hist[i].non_linear_param_search();
        ranges.push(("histogram".to_string(), lo, hi));
        out.push(PointHistogram {
            name: p.clone(),
            min,
            max,
            hist: hist[i].histogram().to_vec(),
            ranges,
        });
    }
    Ok(out)
}
