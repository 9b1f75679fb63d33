//! prepare → calibrate → convert, and the converted [`QuantizedModel`].

use super::model::{Layer, Model};
use super::qconfig::QConfig;
use super::Device;
use crate::cpu;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuConv2d};
use crate::io::safetensors::{StFile, StTensor};
use crate::observers::{weight_qparams, Observer};
use crate::quant::{self, Epilogue, QDtype, QParams, RequantFormula, WeightQParams};
use crate::shape::{checked_numel, ConvParams, ConvShape};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A model with an observer at every activation quantization point.
#[derive(Debug)]
pub struct PreparedModel {
    model: Model,
    qconfig: QConfig,
    observers: Vec<(String, Box<dyn Observer>)>,
    batches: usize,
}

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
    /// Attaches an observer built from `qconfig.activation` to every quantization point.
    pub fn new(model: Model, qconfig: QConfig) -> Result<Self> {
        model.validate()?;
        let observers = model
            .points()
            .into_iter()
            .map(|p| {
                let cfg = qconfig.activation.clone().label(&p);
                Ok((p, cfg.build()?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PreparedModel {
            model,
            qconfig,
            observers,
            batches: 0,
        })
    }

    /// The float model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The qconfig.
    pub fn qconfig(&self) -> &QConfig {
        &self.qconfig
    }

    /// Calibration batches seen.
    pub fn batches_seen(&self) -> usize {
        self.batches
    }

    /// The observer of each point.
    pub fn observers(&self) -> impl Iterator<Item = (&str, &dyn Observer)> {
        self.observers.iter().map(|(n, o)| (n.as_str(), o.as_ref()))
    }

    /// Runs one float batch through the model, feeding every observer. As in PyTorch 2.15, the
    /// observer of a conv with a fused ReLU is called twice per batch (it is both the last child
    /// of the fused `Sequential` and a forward hook); this only matters for the moving-average
    /// observer.
    pub fn calibrate(&mut self, x: &Tensor<f32>) -> Result<()> {
        let (seen, _) = self.model.forward_points(x)?;
        let fused: Vec<bool> = std::iter::once(false)
            .chain(self.model.layers().iter().filter_map(|l| match l {
                Layer::Conv(c) => Some(c.relu),
                Layer::Relu { .. } => None,
            }))
            .collect();
        // Check every point first so that a bad batch changes no observer.
        for ((name, _), t) in self.observers.iter().zip(&seen) {
            quant::check_finite(&t.data, name)?;
        }
        for (((name, obs), t), twice) in self.observers.iter_mut().zip(&seen).zip(fused) {
            obs.observe(&t.data, name)?;
            if twice {
                obs.observe(&t.data, name)?;
            }
        }
        self.batches += 1;
        Ok(())
    }

    /// Calibrates on many batches, with a progress bar on stderr when `progress` is set.
    pub fn calibrate_all(&mut self, batches: &[Tensor<f32>], progress: bool) -> Result<()> {
        let bar = if progress && batches.len() > 1 {
            let b = indicatif::ProgressBar::new(batches.len() as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "calibrating {bar:30} {pos}/{len} batches ({elapsed})",
                )
                .expect("static template"),
            );
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        for b in batches {
            self.calibrate(b)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(())
    }

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
        let qm = QuantizedModel::from_parts(&self.model, &self.qconfig, &qps, &flags)?;
        Ok((qm, warnings))
    }
}

/// Where a point's qparams came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointSource {
    /// Its observer, after calibration.
    Observed,
    /// Pinned from outside.
    Pinned,
    /// PyTorch's default for an observer that saw no data (explicit opt-in).
    Uncalibrated,
}

/// A converted conv layer: int8 weights, bias and epilogue.
#[derive(Debug, Clone)]
pub struct QConv {
    /// Layer name.
    pub name: String,
    /// int8 weight, OIHW.
    pub w_q: Vec<i8>,
    /// Weight dims.
    pub w_dims: [usize; 4],
    /// Weight qparams.
    pub w_qp: WeightQParams,
    /// Float bias (the epilogue derives its constants from it).
    pub bias: Option<Vec<f32>>,
    /// Conv hyperparameters.
    pub params: ConvParams,
    /// Output clamped at the zero point (fused ReLU, or an unfused ReLU right after).
    pub relu: bool,
    /// Input qparams.
    pub in_qp: QParams,
    /// Output qparams.
    pub out_qp: QParams,
    /// Requantization epilogue.
    pub epi: Epilogue,
    /// Where the output qparams came from.
    pub source: PointSource,
}

/// A converted model: quantize, int8 convs, dequantize.
pub struct QuantizedModel {
    /// qconfig name.
    pub qconfig: String,
    /// Requantization formula of every conv.
    pub formula: RequantFormula,
    /// qparams of the input quantization point.
    pub input_qp: QParams,
    /// Where the input qparams came from.
    pub input_source: PointSource,
    /// The convs in order.
    pub convs: Vec<QConv>,
    gpu_cache: Mutex<Option<(u64, Arc<Vec<GpuConv2d>>)>>,
}

impl std::fmt::Debug for QuantizedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizedModel")
            .field("qconfig", &self.qconfig)
            .field("formula", &self.formula)
            .field("input_qp", &self.input_qp)
            .field("convs", &self.convs)
            .finish()
    }
}

impl Clone for QuantizedModel {
    fn clone(&self) -> Self {
        QuantizedModel {
            qconfig: self.qconfig.clone(),
            formula: self.formula,
            input_qp: self.input_qp,
            input_source: self.input_source,
            convs: self.convs.clone(),
            gpu_cache: Mutex::new(None),
        }
    }
}

/// The result of running a quantized model.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedOutput {
    /// Output ints as stored bytes, NCHW.
    pub q: Tensor<u8>,
    /// Output qparams.
    pub qp: QParams,
    /// Dequantized output (`DeQuantStub`).
    pub y: Tensor<f32>,
}

impl QuantizedModel {
    fn from_parts(
        model: &Model,
        qconfig: &QConfig,
        qps: &BTreeMap<String, QParams>,
        sources: &BTreeMap<String, PointSource>,
    ) -> Result<Self> {
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
                    Some(prev) if !prev.relu => {
                        prev.relu = true;
                        prev.rebuild_epilogue(qconfig.formula)?;
                    }
                    Some(_) => {}
                    None => {
                        return Err(Error::InvalidParameter(format!(
                            "ReLU '{name}' must follow a conv (a ReLU on the quantized input is not supported)"
                        )))
                    }
                },
            }
        }
        Ok(QuantizedModel {
            qconfig: qconfig.name.clone(),
            formula: qconfig.formula,
            input_qp,
            input_source: sources["input"],
            convs,
            gpu_cache: Mutex::new(None),
        })
    }

    /// qparams of the model output.
    pub fn output_qp(&self) -> QParams {
        self.convs.last().map_or(self.input_qp, |c| c.out_qp)
    }

    /// Runs the model on `device`: quantize the float input, run every int8 conv, dequantize.
    /// On a GPU everything stays on the device between the single upload and the single read;
    /// the layers' weights are uploaded once per device and cached.
    pub fn run(&self, x: &Tensor<f32>, device: &Device) -> Result<QuantizedOutput> {
        let mut points = self.run_path(x, device, false)?;
        points
            .pop()
            .map(|(_, out)| out)
            .ok_or_else(|| Error::Gpu("the model run returned no output".into()))
    }

    /// Runs the model exactly as [`QuantizedModel::run`] does on `device` (on a GPU: GPU
    /// quantize, the chained convs, GPU dequantize) and also reads back every quantization
    /// point on the way: `input`, then each conv. The last entry is what `run` returns, bit
    /// for bit; reading the intermediate points back changes nothing that is computed. Used
    /// for diagnostics and cross-checks.
    pub fn run_points(
        &self,
        x: &Tensor<f32>,
        device: &Device,
    ) -> Result<Vec<(String, QuantizedOutput)>> {
        self.run_path(x, device, true)
    }

    /// The one implementation of [`QuantizedModel::run`] and [`QuantizedModel::run_points`]:
    /// returns every point when `all_points`, else only the output.
    fn run_path(
        &self,
        x: &Tensor<f32>,
        device: &Device,
        all_points: bool,
    ) -> Result<Vec<(String, QuantizedOutput)>> {
        let dims = x.dims4("input")?;
        quant::check_finite(&x.data, "input")?;
        // Validate every shape (and the host allocations) before any work.
        let mut d = dims;
        for c in &self.convs {
            let s = c.shape(d)?;
            crate::tensor::check_host_alloc(
                s.output_len(),
                8,
                &format!("the output of layer '{}'", c.name),
            )?;
            d = s.output_dims();
        }
        match device {
            Device::Gpu(ctx) => self.run_gpu(x, dims, ctx, all_points),
            _ => self.run_host(x, dims, device, all_points),
        }
    }

    /// CPU devices: host quantize, one conv after the other, host dequantize.
    fn run_host(
        &self,
        x: &Tensor<f32>,
        mut dims: [usize; 4],
        device: &Device,
        all_points: bool,
    ) -> Result<Vec<(String, QuantizedOutput)>> {
        let mut cur = quant::quantize_slice(&x.data, &self.input_qp);
        let mut qp = self.input_qp;
        let mut name = "input";
        let mut out = Vec::new();
        for c in &self.convs {
            if all_points {
                out.push((name.to_string(), self.output_of(&cur, dims, qp)?));
            }
            let s = c.shape(dims)?;
            cur = device.conv2d_quantized(&cur, &qp, &c.w_q, &c.w_qp, &c.epi, &s)?;
            dims = s.output_dims();
            qp = c.out_qp;
            name = &c.name;
        }
        out.push((name.to_string(), self.output_of(&cur, dims, qp)?));
        Ok(out)
    }

    fn output_of(&self, q: &[u8], dims: [usize; 4], qp: QParams) -> Result<QuantizedOutput> {
        Ok(QuantizedOutput {
            q: Tensor::new(dims.to_vec(), q.to_vec())?,
            qp,
            y: Tensor::new(dims.to_vec(), quant::dequantize_slice(q, &qp))?,
        })
    }

    fn gpu_layers(&self, ctx: &GpuContext) -> Result<Arc<Vec<GpuConv2d>>> {
        let mut cache = self.gpu_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, layers)) = cache.as_ref() {
            // Layers built on a lost device are rebuilt on the reopened one.
            if *id == ctx.id() {
                return Ok(layers.clone());
            }
        }
        let layers = Arc::new(
            self.convs
                .iter()
                .map(|c| GpuConv2d::new(ctx, &c.w_q, c.w_dims, &c.w_qp, &c.epi, c.params))
                .collect::<Result<Vec<_>>>()?,
        );
        *cache = Some((ctx.id(), layers.clone()));
        Ok(layers)
    }

    /// A GPU: upload, GPU quantize, the chained convs, GPU dequantize, one read-back (plus
    /// one per intermediate point when `all_points`).
    fn run_gpu(
        &self,
        x: &Tensor<f32>,
        dims: [usize; 4],
        ctx: &GpuContext,
        all_points: bool,
    ) -> Result<Vec<(String, QuantizedOutput)>> {
        let ctx = &ctx.enter()?;
        let layers = self.gpu_layers(ctx)?;
        let xf = ctx.upload_f32(&x.data, dims)?;
        let mut cur = ctx.quantize(&xf, &self.input_qp)?;
        let mut qp = self.input_qp;
        let mut name = "input";
        let mut out = Vec::new();
        for (c, g) in self.convs.iter().zip(layers.iter()) {
            if all_points {
                out.push((
                    name.to_string(),
                    self.output_of(&ctx.read_q(&cur)?, cur.dims, qp)?,
                ));
            }
            cur = g.run(ctx, &cur, &qp)?;
            qp = c.out_qp;
            name = &c.name;
        }
        let yf = ctx.dequantize(&cur, &qp)?;
        let q = ctx.read_q(&cur)?;
        let y = ctx.read_f32(&yf)?;
        out.push((
            name.to_string(),
            QuantizedOutput {
                q: Tensor::new(cur.dims.to_vec(), q)?,
                qp,
                y: Tensor::new(cur.dims.to_vec(), y)?,
            },
        ));
        Ok(out)
    }

    /// Saves the converted model as `.safetensors`: int8 weights (`<layer>.weight_q`), float
    /// bias (`<layer>.bias`), int32 bias as the formula quantizes it (`<layer>.bias_q`, for
    /// inspection), and every qparam in the `squint.model` metadata entry (JSON).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut f = StFile::default();
        let mut layers = Vec::new();
        for c in &self.convs {
            f.tensors.insert(
                format!("{}.weight_q", c.name),
                StTensor::I8(Tensor::new(c.w_dims.to_vec(), c.w_q.clone())?),
            );
            if let Some(b) = &c.bias {
                f.tensors.insert(
                    format!("{}.bias", c.name),
                    StTensor::F32(Tensor::new(vec![b.len()], b.clone())?),
                );
            }
            f.tensors.insert(
                format!("{}.bias_q", c.name),
                StTensor::I32(Tensor::new(
                    vec![c.epi.channels.len()],
                    c.epi.channels.iter().map(|ch| ch.bias_i32).collect(),
                )?),
            );
            layers.push(SavedConv {
                name: c.name.clone(),
                params: c.params,
                relu: c.relu,
                w_qp: c.w_qp.clone(),
                out_qp: c.out_qp,
                source: c.source,
            });
        }
        let meta = SavedModel {
            format: FORMAT.to_string(),
            qconfig: self.qconfig.clone(),
            formula: self.formula,
            input_qp: self.input_qp,
            input_source: self.input_source,
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
            in_qp = conv.out_qp;
            convs.push(conv);
        }
        Ok(QuantizedModel {
            qconfig: meta.qconfig,
            formula: meta.formula,
            input_qp,
            input_source: meta.input_source,
            convs,
            gpu_cache: Mutex::new(None),
        })
    }
}

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

impl QConv {
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        w_q: Vec<i8>,
        w_dims: [usize; 4],
        w_qp: WeightQParams,
        bias: Option<Vec<f32>>,
        params: ConvParams,
        relu: bool,
        in_qp: QParams,
        out_qp: QParams,
        formula: RequantFormula,
        source: PointSource,
    ) -> Result<Self> {
        if w_dims.contains(&0) {
            return Err(Error::Shape(format!(
                "weight of '{name}' has a zero-sized dimension: {w_dims:?}"
            )));
        }
        let k = checked_numel(&w_dims[1..])?;
        if checked_numel(&w_dims)? != w_q.len() {
            return Err(Error::Shape(format!(
                "weight of '{name}' has {} values for dims {w_dims:?}",
                w_q.len()
            )));
        }
        params.validate()?;
        if !w_dims[0].is_multiple_of(params.groups) {
            return Err(Error::InvalidParameter(format!(
                "groups = {} must divide out_channels = {}",
                params.groups, w_dims[0]
            )));
        }
        w_qp.check_channels(w_dims[0])?;
        let q8 = QDtype::QInt8.full_range();
        if let Some(z) = w_qp.zero_points.iter().find(|&&z| !q8.contains(z)) {
            return Err(Error::InvalidParameter(format!(
                "weight zero point {z} is outside the qint8 range"
            )));
        }
        QParams::new(in_qp.scale, in_qp.zero_point, in_qp.dtype)?;
        let epi = Epilogue::new(
            formula,
            in_qp.scale,
            &w_qp,
            bias.as_deref(),
            out_qp,
            relu,
            w_dims[0],
        )?;
        epi.check_accumulator(
            &w_q,
            &w_qp,
            in_qp.dtype.full_range(),
            in_qp.zero_point,
            k,
            Some(name),
        )?;
        Ok(QConv {
            name: name.to_string(),
            w_q,
            w_dims,
            w_qp,
            bias,
            params,
            relu,
            in_qp,
            out_qp,
            epi,
            source,
        })
    }

    fn rebuild_epilogue(&mut self, formula: RequantFormula) -> Result<()> {
        self.epi = Epilogue::new(
            formula,
            self.in_qp.scale,
            &self.w_qp,
            self.bias.as_deref(),
            self.out_qp,
            self.relu,
            self.w_dims[0],
        )?;
        Ok(())
    }

    /// The conv geometry for an input of `dims`, with the layer named in errors.
    pub fn shape(&self, dims: [usize; 4]) -> Result<ConvShape> {
        ConvShape::new(dims, self.w_dims, self.params)
            .map_err(|e| Error::Shape(format!("layer '{}': {e}", self.name)))
    }
}
