//! The quantized model file: `.safetensors` with int8 weights, float and int32 biases, and
//! every qparam in the `squint.model` metadata entry (format `squint-quantized-v1`).
//!
//! Loading trusts nothing in the file: every layer goes through the same checks as a freshly
//! converted one.

use super::quantized::{PointSource, QConv, QuantizedModel};
use crate::error::{Error, Result};
use crate::io::safetensors::{StFile, StTensor};
use crate::quant::{QParams, RequantFormula, WeightQParams};
use crate::shape::ConvParams;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::path::Path;

const FORMAT: &str = "squint-quantized-v1";

#[derive(Debug, Serialize, Deserialize)]
struct SavedConv {
    name: String,
    params: ConvParams,
    relu: bool,
    w_qp: WeightQParams,
    out_qp: QParams,
    source: PointSource,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedModel {
    format: String,
    qconfig: String,
    formula: RequantFormula,
    input_qp: QParams,
    input_source: PointSource,
    layers: Vec<SavedConv>,
}

impl QuantizedModel {
    /// Saves the converted model as `.safetensors`: int8 weights (`<layer>.weight_q`), float
    /// bias (`<layer>.bias`), int32 bias as the formula quantizes it (`<layer>.bias_q`, for
    /// inspection), and every qparam in the `squint.model` metadata entry (JSON).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut f = StFile::default();
        let mut layers = Vec::new();
        for c in self.convs() {
            f.tensors.insert(
                format!("{}.weight_q", c.name()),
                StTensor::I8(Tensor::new(c.w_dims().to_vec(), c.w_q().to_vec())?),
            );
            if let Some(b) = c.bias() {
                f.tensors.insert(
                    format!("{}.bias", c.name()),
                    StTensor::F32(Tensor::new(vec![b.len()], b.to_vec())?),
                );
            }
            f.tensors.insert(
                format!("{}.bias_q", c.name()),
                StTensor::I32(Tensor::new(
                    vec![c.epi().channels.len()],
                    c.epi().channels.iter().map(|ch| ch.bias_i32).collect(),
                )?),
            );
            layers.push(SavedConv {
                name: c.name().to_string(),
                params: c.params(),
                relu: c.relu(),
                w_qp: c.w_qp().clone(),
                out_qp: c.out_qp(),
                source: c.source(),
            });
        }
        let meta = SavedModel {
            format: FORMAT.to_string(),
            qconfig: self.qconfig_name().to_string(),
            formula: self.formula(),
            input_qp: self.input_qp(),
            input_source: self.input_source(),
            layers,
        };
        f.metadata.insert(
            "squint.model".into(),
            serde_json::to_string(&meta).expect("plain data serialises"),
        );
        f.write(path)
    }

    /// Loads a model saved by [`Self::save`]; runs without the float weights.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_st_file(&StFile::read(path)?, path)
    }

    /// Parses the bytes of a file written by [`Self::save`], with the same checks and errors
    /// as [`Self::load`]; `path_for_errors` names the source in messages.
    pub fn from_bytes(bytes: &[u8], path_for_errors: &Path) -> Result<Self> {
        Self::from_st_file(
            &StFile::from_bytes(bytes, path_for_errors)?,
            path_for_errors,
        )
    }

    fn from_st_file(f: &StFile, path: &Path) -> Result<Self> {
        let meta_s = f.metadata.get("squint.model").ok_or_else(|| {
            Error::format(path, "no 'squint.model' metadata: not a squint quantized model (float state_dicts go to `squint quantize`)")
        })?;
        let meta: SavedModel = serde_json::from_str(meta_s)
            .map_err(|e| Error::format(path, format!("invalid 'squint.model' metadata: {e}")))?;
        if meta.format != FORMAT {
            return Err(Error::format(
                path,
                format!("unsupported format '{}', expected '{FORMAT}'", meta.format),
            ));
        }
        // Everything in the metadata is untrusted: validate it as the converter would have.
        let input_qp = QParams::new(
            meta.input_qp.scale,
            meta.input_qp.zero_point,
            meta.input_qp.dtype,
        )
        .map_err(|e| Error::format(path, format!("input qparams: {e}")))?;
        let mut convs = Vec::new();
        let mut in_qp = input_qp;
        for l in meta.layers {
            let w = f.i8(&format!("{}.weight_q", l.name), path)?;
            let w_dims = w.dims4(&format!("{}.weight_q", l.name))?;
            let bias = match f.tensors.get(&format!("{}.bias", l.name)) {
                Some(_) => Some(f.f32(&format!("{}.bias", l.name), path)?.data.clone()),
                None => None,
            };
            let conv = QConv::new(
                &l.name,
                w.data.clone(),
                w_dims,
                l.w_qp,
                bias,
                l.params,
                l.relu,
                in_qp,
                l.out_qp,
                meta.formula,
                l.source,
            )
            .map_err(|e| Error::format(path, format!("layer '{}': {e}", l.name)))?;
            in_qp = conv.out_qp();
            convs.push(conv);
        }
        Ok(QuantizedModel::from_chained_convs(
            meta.qconfig,
            meta.formula,
            input_qp,
            meta.input_source,
            convs,
        ))
    }
}
