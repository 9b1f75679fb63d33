//! convert: a calibrated [`PreparedModel`] becomes a [`QuantizedModel`] (int8 weights, the
//! qparams each observer chose or that were pinned, one requantization epilogue per conv).

use super::model::{Layer, Model};
use super::prepare::PreparedModel;
use super::qconfig::QConfig;
use super::quantized::{PointSource, QConv, QuantizedModel};
use crate::cpu;
use crate::error::{Error, Result};
use crate::observers::weight_qparams;
use crate::quant::{QDtype, QParams};
use std::collections::BTreeMap;
use std::path::Path;

/// Options of [`PreparedModel::convert`].
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Use PyTorch's default (scale 1.0, zero point 0) for points that saw no data, instead of
    /// failing. This reproduces the classic mistake; a warning names each such point.
    pub allow_uncalibrated: bool,
    /// Activation qparams fixed from outside (point name → (scale, zero point)), e.g. from a
    /// calibration done elsewhere. Pinned points ignore their observer.
    pub pinned: BTreeMap<String, (f32, i32)>,
}

/// Reads pinned activation qparams from JSON: `{"input": {"scale": 0.03, "zero_point": 129}, ...}`.
/// PyTorch-style `points.json` files (`{"points": {...}}`) are accepted as well.
pub fn read_pinned_qparams(path: &Path) -> Result<BTreeMap<String, (f32, i32)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
    let obj = v.get("points").unwrap_or(&v).as_object().ok_or_else(|| {
        Error::format(
            path,
            "expected an object of point name → {scale, zero_point}",
        )
    })?;
    let mut out = BTreeMap::new();
    for (k, p) in obj {
        let scale = p.get("scale").and_then(|s| s.as_f64());
        let zp = p.get("zero_point").and_then(|s| s.as_i64());
        match (scale, zp) {
            (Some(s), Some(z)) => {
                out.insert(k.clone(), (s as f32, z as i32));
            }
            _ => {
                return Err(Error::format(
                    path,
                    format!("point '{k}' needs a numeric 'scale' and an integer 'zero_point'"),
                ))
            }
        }
    }
    Ok(out)
}

impl PreparedModel {
    /// Converts to a [`QuantizedModel`]. Fails, naming every point, if any point saw no
    /// calibration data and is not pinned, unless `opts.allow_uncalibrated` is set; returns the
    /// model and the warnings to show.
    pub fn convert(&self, opts: &ConvertOptions) -> Result<(QuantizedModel, Vec<String>)> {
        let mut warnings = Vec::new();
        let uncalibrated: Vec<String> = self
            .observers
            .iter()
            .filter(|(n, o)| o.batches_seen() == 0 && !opts.pinned.contains_key(n))
            .map(|(n, _)| n.to_string())
            .collect();
        if !uncalibrated.is_empty() && !opts.allow_uncalibrated {
            return Err(Error::UncalibratedPoints {
                points: uncalibrated,
            });
        }
        let mut qps = BTreeMap::new();
        let mut flags = BTreeMap::new();
        for (name, obs) in &self.observers {
            let qp = if let Some(&(s, z)) = opts.pinned.get(name) {
                flags.insert(name.clone(), PointSource::Pinned);
                QParams::new(s, z, self.qconfig.activation.dtype).map_err(|e| {
                    Error::InvalidParameter(format!("pinned qparams of '{name}': {e}"))
                })?
            } else if obs.batches_seen() == 0 {
                let qp = obs.qparams_or_uncalibrated_default();
                warnings.push(format!(
                    "warning: '{name}' saw no calibration data; using PyTorch's uncalibrated default scale {} / zero_point {} — expect large errors",
                    qp.scale, qp.zero_point
                ));
                flags.insert(name.clone(), PointSource::Uncalibrated);
                qp
            } else {
                flags.insert(name.clone(), PointSource::Observed);
                obs.qparams()?
            };
            qps.insert(name.clone(), qp);
        }
        let qm = quantize_layers(&self.model, &self.qconfig, &qps, &flags)?;
        Ok((qm, warnings))
    }
}

/// Quantizes every conv's weights and builds its epilogue from the points' qparams; an unfused
/// ReLU clamps the conv before it.
fn quantize_layers(
    model: &Model,
    qconfig: &QConfig,
    qps: &BTreeMap<String, QParams>,
    sources: &BTreeMap<String, PointSource>,
) -> Result<QuantizedModel> {
    let input_qp = qps["input"];
    let mut convs: Vec<QConv> = Vec::new();
    let mut cur_qp = input_qp;
    for l in model.layers() {
        match l {
            Layer::Conv(c) => {
                let [o, _, _, _] = c.weight_dims();
                let w_qp = weight_qparams(&c.weight.data, o, qconfig.weight_scheme, QDtype::QInt8)?;
                let w_q = cpu::reference::quantize_weight(&c.weight.data, &w_qp, o)?;
                let out_qp = qps[&c.name];
                let conv = QConv::new(
                    &c.name,
                    w_q,
                    c.weight_dims(),
                    w_qp,
                    c.bias.clone(),
                    c.params,
                    c.relu,
                    cur_qp,
                    out_qp,
                    qconfig.formula,
                    sources[&c.name],
                )?;
                cur_qp = out_qp;
                convs.push(conv);
            }
            Layer::Relu { name } => match convs.last_mut() {
                Some(prev) if !prev.relu() => prev.fuse_relu(qconfig.formula)?,
                Some(_) => {}
                None => {
                    return Err(Error::InvalidParameter(format!(
                        "ReLU '{name}' must follow a conv (a ReLU on the quantized input is not supported)"
                    )))
                }
            },
        }
    }
    Ok(QuantizedModel::from_chained_convs(
        qconfig.name.clone(),
        qconfig.formula,
        input_qp,
        sources["input"],
        convs,
    ))
}
