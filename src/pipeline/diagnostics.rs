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
use super::qgraph::{QBackend, QuantizedGraph};
use super::quantized::{PointSource, QuantizedModel};
use super::Device;
use crate::error::{Error, Result};
use crate::observers::ObserverKind;
use crate::quant::{self, QParams};
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
    /// Value name (`input`, or the conv's name in a conv chain; the ONNX value name in a graph).
    pub name: String,
    /// The op that computes it (`input` for model inputs).
    pub op: String,
    /// Its qparams.
    pub qparams: QParams,
    /// Where they came from (for an inherited value, where its point's came from).
    pub source: PointSource,
    /// The quantization point whose qparams this value shares, when it has none of its own
    /// (max/avg pools, flatten, relu, clip run on quantized tensors without an observer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inherits: Option<String>,
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
    let advice = Advice { observer };
    let reports = q_points
        .iter()
        .zip(&float_points)
        .map(|((name, q), f)| {
            let source = if name == "input" {
                qm.input_source()
            } else {
                qm.convs()
                    .iter()
                    .find(|c| c.name() == name)
                    .map_or(PointSource::Observed, |c| c.source())
            };
            let op = if name == "input" { "input" } else { "Conv2d" };
            point_report(
                name,
                op,
                &q.qp,
                Origin::Own(source),
                &f.data,
                &q.y.data,
                &advice,
            )
        })
        .collect();
    Ok(with_range_note(reports, reduce_range))
}

/// Adds the `reduce_range` advice once, to the first point: it is a property of the qconfig,
/// not of any one point.
fn with_range_note(mut reports: Vec<PointReport>, reduce_range: bool) -> Vec<PointReport> {
    if let (true, Some(first)) = (reduce_range, reports.first_mut()) {
        first.warnings.push(
            "reduce_range is on: every activation uses 7 of its 8 bits (needed by FBGEMM's int16 accumulation, not by qnnpack, oneDNN or GPUs)".into(),
        );
    }
    reports
}

/// What the calibration was, for advice.
struct Advice {
    observer: Option<ObserverKind>,
}

/// Where a value's qparams come from.
enum Origin<'a> {
    /// Its own quantization point.
    Own(PointSource),
    /// The point of the named value (ops that run on quantized tensors without an observer).
    Inherited(&'a str, PointSource),
}

/// The diagnostics of one value: its float activation `f` against the dequantized int8 `y`.
fn point_report(
    name: &str,
    op: &str,
    qp: &QParams,
    origin: Origin<'_>,
    f: &[f32],
    y: &[f32],
    advice: &Advice,
) -> PointReport {
    let metrics = error_metrics(f, y);
    let clipped = clipped_share(f, qp);
    let (float_min, float_max) = f
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (source, inherits) = match origin {
        Origin::Own(s) => (s, None),
        Origin::Inherited(from, s) => (s, Some(from.to_string())),
    };
    let mut warnings = Vec::new();
    // Advice on the range belongs to the point that chose it, not to every value sharing it.
    if inherits.is_none() {
        if source == PointSource::Uncalibrated {
            warnings.push(format!(
                "'{name}' was never calibrated: scale {} / zero point {} is PyTorch's default, not a measured range; run calibration batches",
                qp.scale, qp.zero_point
            ));
        }
        if clipped > 0.01 {
            warnings.push(format!(
                "{:.1}% of '{name}' is clipped at the range ends: calibrate on data like the evaluation data, or use a wider-range observer (minmax)",
                clipped * 100.0
            ));
        }
        if !matches!(advice.observer, Some(ObserverKind::Histogram)) {
            if let Some((p, max)) = outlier_stretched(f) {
                warnings.push(format!(
                    "the range of '{name}' is stretched by a few outliers (99.9% of |x| ≤ {p:.3}, max {max:.3}): try the histogram observer"
                ));
            }
        }
    }
    PointReport {
        name: name.to_string(),
        op: op.to_string(),
        qparams: *qp,
        source,
        inherits,
        max_err_lsb: metrics.max_abs_err / qp.scale as f64,
        metrics,
        clipped,
        float_min,
        float_max,
        warnings,
    }
}

/// Per-value diagnostics of a graph model: runs the float graph and the int8 graph (on
/// `backend`, normally [`ReferenceBackend`](super::qgraph::ReferenceBackend)) on `inputs` and reports every value, graph inputs
/// first, then each node's output in node order. Values whose op runs on quantized tensors
/// without an observer (pools, flatten, relu, clip) report the point whose qparams they share
/// in [`PointReport::inherits`]; advice is given once, at that point.
pub fn diagnose_graph(
    q: &QuantizedGraph,
    inputs: &[Tensor<f32>],
    backend: &mut dyn QBackend,
    observer: Option<ObserverKind>,
    reduce_range: bool,
) -> Result<Vec<PointReport>> {
    let g = q.graph();
    let mut float: Vec<Option<Tensor<f32>>> = vec![None; g.values().len()];
    g.run_f32_visit(inputs, |v, t| {
        float[v.0] = Some(t.clone());
        Ok(())
    })?;
    let run = q.run(backend, inputs)?;
    // The value whose point each value's qparams come from.
    let mut point: Vec<usize> = (0..g.values().len()).collect();
    for n in g.nodes() {
        if q.sources()[n.output.0].is_none() {
            if let Some(first) = n.inputs.first() {
                point[n.output.0] = point[first.0];
            }
        }
    }
    let mut op: Vec<&str> = vec!["input"; g.values().len()];
    for n in g.nodes() {
        op[n.output.0] = n.op.kind();
    }
    let advice = Advice { observer };
    let order = g
        .inputs()
        .iter()
        .copied()
        .chain(g.nodes().iter().map(|n| n.output));
    let reports = order
        .map(|v| {
            let f = float[v.0].as_ref().ok_or_else(|| {
                Error::InvalidParameter(format!(
                    "the float graph computed no value '{}'",
                    g.value(v).name
                ))
            })?;
            let qv = &run.values[v.0];
            let y = quant::dequantize_slice(&qv.data, &qv.qp);
            let p = point[v.0];
            let source = q.sources()[p].unwrap_or(PointSource::Observed);
            let origin = if p == v.0 {
                Origin::Own(source)
            } else {
                Origin::Inherited(&g.values()[p].name, source)
            };
            Ok(point_report(
                &g.value(v).name,
                op[v.0],
                &qv.qp,
                origin,
                &f.data,
                &y,
                &advice,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(with_range_note(reports, reduce_range))
}

/// Per-value diagnostics of an already-quantized (QDQ) model: its float ops with the
/// dequantized weights against ONNX Runtime's int8 formulas ([`super::qdq::run_reference`]) at
/// every value. Every value has the qparams the model's Q/DQ nodes give it, reported as
/// [`PointSource::Pinned`]. The float run clamps each value to its quantization range (without
/// rounding), as the model's `QuantizeLinear` does: that clamp is where `quantize_static` put
/// the ReLUs it removed.
pub fn diagnose_qdq(
    m: &crate::io::onnx_qdq::QdqModel,
    inputs: &[Tensor<f32>],
) -> Result<Vec<PointReport>> {
    let g = &m.graph;
    let mut float: Vec<Option<Tensor<f32>>> = vec![None; g.values().len()];
    g.run_f32_with(inputs, |v, t| {
        let qp = m.qparams[v.0];
        let r = qp.dtype.full_range();
        let lo = (r.min - qp.zero_point) as f32 * qp.scale;
        let hi = (r.max - qp.zero_point) as f32 * qp.scale;
        t.data.iter_mut().for_each(|x| *x = x.clamp(lo, hi));
        float[v.0] = Some(t.clone());
        Ok(())
    })?;
    let run = super::qdq::run_reference(m, inputs, super::qdq::native_add_kernel())?;
    let mut op: Vec<&str> = vec!["input"; g.values().len()];
    for n in g.nodes() {
        op[n.output.0] = n.op.kind();
    }
    let advice = Advice { observer: None };
    g.inputs()
        .iter()
        .copied()
        .chain(g.nodes().iter().map(|n| n.output))
        .map(|v| {
            let f = float[v.0].as_ref().ok_or_else(|| {
                Error::InvalidParameter(format!(
                    "the float graph computed no value '{}'",
                    g.value(v).name
                ))
            })?;
            let qp = m.qparams[v.0];
            let y = quant::dequantize_slice(&run.values[v.0], &qp);
            Ok(point_report(
                &g.value(v).name,
                op[v.0],
                &qp,
                Origin::Own(PointSource::Pinned),
                &f.data,
                &y,
                &advice,
            ))
        })
        .collect()
}

/// Formats reports as a table.
pub fn format_table(reports: &[PointReport]) -> String {
    let w = reports.iter().map(|r| r.name.len()).fold(12, usize::max);
    let ow = reports.iter().map(|r| r.op.len()).fold(6, usize::max);
    let mut s = format!(
        "{:<w$} {:<ow$} {:>12} {:>5} {:>10} {:>10} {:>11} {:>9} {:>8}  {}\n",
        "point",
        "op",
        "scale",
        "zp",
        "SQNR dB",
        "MSE",
        "max|Δ| LSB",
        "clipped",
        "source",
        "float range"
    );
    for r in reports {
        s += &format!(
            "{:<w$} {:<ow$} {:>12.6e} {:>5} {:>10.2} {:>10.3e} {:>11.2} {:>8.3}% {:>8}  [{:.4}, {:.4}]",
            r.name,
            r.op,
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
        if let Some(from) = &r.inherits {
            s += &format!("  (qparams of {from})");
        }
        s.push('\n');
    }
    for r in reports {
        for w in &r.warnings {
            s += &format!("warning: {w}\n");
        }
    }
    s
}
