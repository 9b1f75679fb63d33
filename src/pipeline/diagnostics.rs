//! Per-point diagnostics, like PyTorch's Numeric Suite: how far each quantized activation is
//! from the float model, and advice when something looks wrong.
//!
//! For every quantization point (the quantized input, each conv output) squint compares the
//! dequantized int8 activation `y` with the float model's activation `x` at the same point:
//!
//! * SQNR in dB: `20·log10(‖x‖ / ‖x − y‖)` (∞ when equal);
//! * MSE: `mean((x − y)²)`;
//! * max |Δ| in output LSBs: `max|x − y| / scale`;
//! * clipped share: the fraction of float values outside the representable range
//!   `[(qmin − zp)·s − s/2, (qmax − zp)·s + s/2]`.

use super::model::{Layer, Model};
use super::quantized::{PointSource, QuantizedModel};
use super::Device;
use crate::error::{Error, Result};
use crate::observers::ObserverKind;
use crate::quant::QParams;
use crate::tensor::Tensor;
use serde::Serialize;

/// Error metrics of a quantized tensor against its float reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErrorMetrics {
    /// Mean squared error.
    pub mse: f64,
    /// Signal-to-quantization-noise ratio in dB.
    pub sqnr_db: f64,
    /// Largest absolute error.
    pub max_abs_err: f64,
}

/// Compares `y` with the reference `x`.
pub fn error_metrics(x: &[f32], y: &[f32]) -> ErrorMetrics {
    let (mut sig, mut noise, mut max) = (0f64, 0f64, 0f64);
    for (&a, &b) in x.iter().zip(y) {
        let d = a as f64 - b as f64;
        sig += (a as f64) * (a as f64);
        noise += d * d;
        max = max.max(d.abs());
    }
    let n = x.len().max(1) as f64;
    let sqnr_db = if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (sig / noise).log10()
    };
    ErrorMetrics {
        mse: noise / n,
        sqnr_db,
        max_abs_err: max,
    }
}

/// The diagnostics of one quantization point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointReport {
    /// Point name (`input`, or the conv's name).
    pub name: String,
    /// Its qparams.
    pub qparams: QParams,
    /// Where they came from.
    pub source: PointSource,
    /// Errors against the float model.
    pub metrics: ErrorMetrics,
    /// `max_abs_err / scale`.
    pub max_err_lsb: f64,
    /// Share of float values outside the representable range.
    pub clipped: f64,
    /// Range of the float activation.
    pub float_min: f32,
    /// Range of the float activation.
    pub float_max: f32,
    /// Advice.
    pub warnings: Vec<String>,
}

fn clipped_share(x: &[f32], qp: &QParams) -> f64 {
    let r = qp.dtype.full_range();
    // In i64: no overflow for any zero point (the fields of a model's qparams are public).
    let lo = (r.min as i64 - qp.zero_point as i64) as f32 * qp.scale - qp.scale * 0.5;
    let hi = (r.max as i64 - qp.zero_point as i64) as f32 * qp.scale + qp.scale * 0.5;
    let n = x.iter().filter(|&&v| v < lo || v > hi).count();
    n as f64 / x.len().max(1) as f64
}

/// Whether a few outliers stretch the range: the 99.9th percentile of |x| is under a quarter
/// of max |x|.
fn outlier_stretched(x: &[f32]) -> Option<(f32, f32)> {
    if x.len() < 1000 {
        return None;
    }
    let mut a: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let k = ((a.len() as f64) * 0.999) as usize;
    let (_, p, _) = a.select_nth_unstable_by(k.min(x.len() - 1), |p, q| p.total_cmp(q));
    let p = *p;
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    (max > 4.0 * p && p > 0.0).then_some((p, max))
}

/// Runs the float model and the quantized model (on a CPU `device`) on `x` and reports every
/// point. `observer` is the activation observer used in calibration, for advice.
pub fn diagnose(
    model: &Model,
    qm: &QuantizedModel,
    x: &Tensor<f32>,
    device: &Device,
    observer: Option<ObserverKind>,
    reduce_range: bool,
) -> Result<Vec<PointReport>> {
    let (mut float_points, _) = model.forward_points(x)?;
    // Conv outputs followed by an unfused ReLU are compared after the ReLU, as the quantized
    // conv clamps at the zero point.
    let mut conv_idx = 0;
    for (i, l) in model.layers().iter().enumerate() {
        if let Layer::Conv(_) = l {
            conv_idx += 1;
            if matches!(model.layers().get(i + 1), Some(Layer::Relu { .. })) {
                float_points[conv_idx]
                    .data
                    .iter_mut()
                    .for_each(|v| *v = v.max(0.0));
            }
        }
    }
    let q_points = qm.run_points(x, device)?;
    if q_points.len() != float_points.len() {
        return Err(Error::InvalidParameter(format!(
            "the quantized model has {} quantization points, the float model {}: they do not \
             describe the same network",
            q_points.len(),
            float_points.len()
        )));
    }
    let mut out = Vec::new();
    for ((name, q), f) in q_points.iter().zip(&float_points) {
        let source = if name == "input" {
            qm.input_source()
        } else {
            qm.convs()
                .iter()
                .find(|c| c.name() == name)
                .map_or(PointSource::Observed, |c| c.source())
        };
        let metrics = error_metrics(&f.data, &q.y.data);
        let clipped = clipped_share(&f.data, &q.qp);
        let (float_min, float_max) = f
            .data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let mut warnings = Vec::new();
        if source == PointSource::Uncalibrated {
            warnings.push(format!(
                "'{name}' was never calibrated: scale {} / zero point {} is PyTorch's default, not a measured range; run calibration batches",
                q.qp.scale, q.qp.zero_point
            ));
        }
        if clipped > 0.01 {
            warnings.push(format!(
                "{:.1}% of '{name}' is clipped at the range ends: calibrate on data like the evaluation data, or use a wider-range observer (minmax)",
                clipped * 100.0
            ));
        }
        if !matches!(observer, Some(ObserverKind::Histogram)) {
            if let Some((p, max)) = outlier_stretched(&f.data) {
                warnings.push(format!(
                    "the range of '{name}' is stretched by a few outliers (99.9% of |x| ≤ {p:.3}, max {max:.3}): try the histogram observer"
                ));
            }
        }
        if reduce_range {
            warnings.push(format!(
                "reduce_range is on: '{name}' uses 7 of its 8 bits (needed by FBGEMM's int16 accumulation, not by qnnpack, oneDNN or GPUs)"
            ));
        }
        out.push(PointReport {
            name: name.clone(),
            qparams: q.qp,
            source,
            max_err_lsb: metrics.max_abs_err / q.qp.scale as f64,
            metrics,
            clipped,
            float_min,
            float_max,
            warnings,
        });
    }
    Ok(out)
}

/// Formats reports as a table.
pub fn format_table(reports: &[PointReport]) -> String {
    let mut s = format!(
        "{:<12} {:>12} {:>5} {:>10} {:>10} {:>11} {:>9} {:>8}  {}\n",
        "point", "scale", "zp", "SQNR dB", "MSE", "max|Δ| LSB", "clipped", "source", "float range"
    );
    for r in reports {
        s += &format!(
            "{:<12} {:>12.6e} {:>5} {:>10.2} {:>10.3e} {:>11.2} {:>8.3}% {:>8}  [{:.4}, {:.4}]\n",
            r.name,
            r.qparams.scale,
            r.qparams.zero_point,
            r.metrics.sqnr_db,
            r.metrics.mse,
            r.max_err_lsb,
            r.clipped * 100.0,
            match r.source {
                PointSource::Observed => "observed",
                PointSource::Pinned => "pinned",
                PointSource::Uncalibrated => "UNCALIB",
            },
            r.float_min,
            r.float_max
        );
    }
    for r in reports {
        for w in &r.warnings {
            s += &format!("warning: {w}\n");
        }
    }
    s
}
