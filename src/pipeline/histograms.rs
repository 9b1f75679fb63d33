//! Calibration histograms with the range each observer chooses for every quantization point
//! (the data behind `squint report --plot`, which draws them as SVG).

use super::model::Model;
use super::qgraph::{has_observer, PreparedGraph};
use crate::error::{Error, Result};
use crate::graph::ValueId;
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
    histograms_of(model.points(), dtype, reduce_range, calib.len(), |i| {
        Ok(model.forward_points(&calib[i])?.0)
    })
}

/// [`point_histograms`] for a graph model: every quantization point of `prepared` (the values
/// with an observer), calibrated on `calib` (one tensor per graph input in each batch).
pub fn graph_point_histograms(
    prepared: &PreparedGraph,
    dtype: QDtype,
    reduce_range: bool,
    calib: &[Vec<Tensor<f32>>],
) -> Result<Vec<PointHistogram>> {
    let g = prepared.graph();
    let observed: Vec<ValueId> = g
        .inputs()
        .iter()
        .copied()
        .chain(
            g.nodes()
                .iter()
                .filter(|n| has_observer(&n.op))
                .map(|n| n.output),
        )
        .collect();
    let names = observed.iter().map(|&v| g.value(v).name.clone()).collect();
    histograms_of(names, dtype, reduce_range, calib.len(), |i| {
        let mut seen: Vec<Option<Tensor<f32>>> = vec![None; observed.len()];
        g.run_f32_visit(&calib[i], |v, t| {
            if let Some(k) = observed.iter().position(|&o| o == v) {
                seen[k] = Some(t.clone());
            }
            Ok(())
        })?;
        seen.into_iter()
            .zip(&observed)
            .map(|(t, &v)| {
                t.ok_or_else(|| Error::Uncalibrated {
                    name: g.value(v).name.clone(),
                })
            })
            .collect()
    })
}

/// The observers of [`point_histograms`] on `points`, fed batch by batch: `forward(i)` returns
/// batch `i`'s float tensor at every point, in point order.
fn histograms_of(
    points: Vec<String>,
    dtype: QDtype,
    reduce_range: bool,
    batches: usize,
    mut forward: impl FnMut(usize) -> Result<Vec<Tensor<f32>>>,
) -> Result<Vec<PointHistogram>> {
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
    for b in 0..batches {
        let seen = forward(b)?;
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
