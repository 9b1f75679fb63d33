//! The converted [`QuantizedModel`] and its int8 layers ([`QConv`]), and the run paths:
//! quantize → int8 convs → dequantize on the CPU reference, the fast CPU path or a GPU.
//!
//! A converted model is consistent by construction: every conv's input qparams are the previous
//! point's output qparams, and each epilogue was derived from those qparams, the weights and the
//! bias. The fields are therefore private; [`PreparedModel::convert`](super::PreparedModel::convert)
//! and [`QuantizedModel::load`] build models, the accessors read them, and
//! [`QuantizedModel::set_input_qp`] is the one checked way to change a model's qparams.

use super::gpu_cache::GpuLayerCache;
use super::Device;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::quant::{self, Epilogue, QDtype, QParams, RequantFormula, WeightQParams};
use crate::shape::{checked_numel, ConvParams, ConvShape};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

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
///
/// Read-only: the epilogue is derived from the other fields, so they only change together, in
/// the converter and the loader, which check them.
#[derive(Debug, Clone)]
pub struct QConv {
    name: String,
    w_q: Vec<i8>,
    w_dims: [usize; 4],
    w_qp: WeightQParams,
    bias: Option<Vec<f32>>,
    params: ConvParams,
    relu: bool,
    in_qp: QParams,
    out_qp: QParams,
    epi: Epilogue,
    source: PointSource,
    /// See [`QConv::revision`].
    revision: u64,
}

/// A number no other layer contents of this process had: a layer's revision changes with its
/// contents (clones share it), so a backend's cache that holds a layer of the same revision
/// holds the same weights, qparams and epilogue without comparing them.
pub(crate) fn next_revision() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A converted model: quantize, int8 convs, dequantize.
pub struct QuantizedModel {
    qconfig: String,
    formula: RequantFormula,
    input_qp: QParams,
    input_source: PointSource,
    convs: Vec<QConv>,
    gpu_cache: GpuLayerCache,
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
            gpu_cache: GpuLayerCache::default(),
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
    /// Assembles a model from convs built by [`QConv::new`] with `formula`, chained: the first
    /// conv's input qparams are `input_qp`, each next conv's are the previous conv's output
    /// qparams. The converter and the file loader are the only callers.
    pub(super) fn from_chained_convs(
        qconfig: String,
        formula: RequantFormula,
        input_qp: QParams,
        input_source: PointSource,
        convs: Vec<QConv>,
    ) -> Self {
        debug_assert!(std::iter::once(input_qp)
            .chain(convs.iter().map(|c| c.out_qp))
            .zip(&convs)
            .all(|(qp, c)| qp == c.in_qp));
        QuantizedModel {
            qconfig,
            formula,
            input_qp,
            input_source,
            convs,
            gpu_cache: GpuLayerCache::default(),
        }
    }

    /// Name of the qconfig the model was converted with (e.g. `qnnpack`, `x86+fixed-point`).
    pub fn qconfig_name(&self) -> &str {
        &self.qconfig
    }

    /// Requantization formula of every conv.
    pub fn formula(&self) -> RequantFormula {
        self.formula
    }

    /// qparams of the input quantization point (`QuantStub`).
    pub fn input_qp(&self) -> QParams {
        self.input_qp
    }

    /// Where the input qparams came from.
    pub fn input_source(&self) -> PointSource {
        self.input_source
    }

    /// The convs in order.
    pub fn convs(&self) -> &[QConv] {
        &self.convs
    }

    /// qparams of the model output.
    pub fn output_qp(&self) -> QParams {
        self.convs.last().map_or(self.input_qp, |c| c.out_qp)
    }

    /// Replaces the input qparams, e.g. to match the producer of the model's input. The new
    /// qparams are checked as the converter checks them (finite positive scale, zero point in
    /// range, the model's activation dtype), the first conv's epilogue is rebuilt for them and
    /// its accumulator bounds are checked again, and GPU layers are rebuilt on the next run. On
    /// error the model is unchanged.
    pub fn set_input_qp(&mut self, qp: QParams) -> Result<()> {
        let qp = QParams::new(qp.scale, qp.zero_point, qp.dtype)
            .map_err(|e| Error::InvalidParameter(format!("input qparams: {e}")))?;
        if qp.dtype != self.input_qp.dtype {
            return Err(Error::InvalidParameter(format!(
                "input qparams: dtype {} differs from the model's activation dtype {}",
                qp.dtype, self.input_qp.dtype
            )));
        }
        if let Some(first) = self.convs.first() {
            let rebuilt = QConv::new(
                &first.name,
                first.w_q.clone(),
                first.w_dims,
                first.w_qp.clone(),
                first.bias.clone(),
                first.params,
                first.relu,
                qp,
                first.out_qp,
                self.formula,
                first.source,
            )?;
            self.convs[0] = rebuilt;
        }
        self.input_qp = qp;
        self.gpu_cache.clear();
        Ok(())
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
                out.push((name.to_string(), output_of(&cur, dims, qp)?));
            }
            let s = c.shape(dims)?;
            cur = device.conv2d_quantized(&cur, &qp, &c.w_q, &c.w_qp, &c.epi, &s)?;
            dims = s.output_dims();
            qp = c.out_qp;
            name = &c.name;
        }
        out.push((name.to_string(), output_of(&cur, dims, qp)?));
        Ok(out)
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
        let layers = self.gpu_cache.layers(ctx, &self.convs)?;
        let xf = ctx.upload_f32(&x.data, dims)?;
        let mut cur = ctx.quantize(&xf, &self.input_qp)?;
        let mut qp = self.input_qp;
        let mut name = "input";
        let mut out = Vec::new();
        for (c, g) in self.convs.iter().zip(layers.iter()) {
            if all_points {
                out.push((
                    name.to_string(),
                    output_of(&ctx.read_q(&cur)?, cur.dims, qp)?,
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
}

fn output_of(q: &[u8], dims: [usize; 4], qp: QParams) -> Result<QuantizedOutput> {
    Ok(QuantizedOutput {
        q: Tensor::new(dims.to_vec(), q.to_vec())?,
        qp,
        y: Tensor::new(dims.to_vec(), quant::dequantize_slice(q, &qp))?,
    })
}

impl QConv {
    /// Checks the parts of a layer against each other and derives its epilogue: weight dims
    /// and length, conv hyperparameters, weight and input qparams, and the int32 accumulator
    /// bounds.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
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
            revision: next_revision(),
        })
    }

    /// Clamps the output at the zero point (an unfused ReLU right after this conv), rebuilding
    /// the epilogue. On error the layer is unchanged.
    pub(super) fn fuse_relu(&mut self, formula: RequantFormula) -> Result<()> {
        self.epi = Epilogue::new(
            formula,
            self.in_qp.scale,
            &self.w_qp,
            self.bias.as_deref(),
            self.out_qp,
            true,
            self.w_dims[0],
        )?;
        self.relu = true;
        self.revision = next_revision();
        Ok(())
    }

    /// The conv geometry for an input of `dims`, with the layer named in errors.
    pub fn shape(&self, dims: [usize; 4]) -> Result<ConvShape> {
        ConvShape::new(dims, self.w_dims, self.params)
            .map_err(|e| Error::Shape(format!("layer '{}': {e}", self.name)))
    }

    /// Layer name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// int8 weight, OIHW.
    pub fn w_q(&self) -> &[i8] {
        &self.w_q
    }

    /// Weight dims (OIHW).
    pub fn w_dims(&self) -> [usize; 4] {
        self.w_dims
    }

    /// Weight qparams.
    pub fn w_qp(&self) -> &WeightQParams {
        &self.w_qp
    }

    /// Float bias (the epilogue derives its constants from it).
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Conv hyperparameters.
    pub fn params(&self) -> ConvParams {
        self.params
    }

    /// Whether the output is clamped at the zero point (fused ReLU, or an unfused ReLU right
    /// after).
    pub fn relu(&self) -> bool {
        self.relu
    }

    /// Input qparams.
    pub fn in_qp(&self) -> QParams {
        self.in_qp
    }

    /// Output qparams.
    pub fn out_qp(&self) -> QParams {
        self.out_qp
    }

    /// Requantization epilogue.
    pub fn epi(&self) -> &Epilogue {
        &self.epi
    }

    /// Where the output qparams came from.
    pub fn source(&self) -> PointSource {
        self.source
    }

    /// An error unless `x_qp` are the input qparams this layer was converted for (its epilogue
    /// holds them).
    pub fn check_input_qp(&self, x_qp: &QParams) -> Result<()> {
        if *x_qp != self.in_qp {
            return Err(Error::InvalidParameter(format!(
                "conv '{}' was converted for input qparams {:?}, got {:?}",
                self.name, self.in_qp, x_qp
            )));
        }
        Ok(())
    }

    /// A process-unique number of this layer's contents: two layers of one revision (a layer
    /// and its clones) have the same weights, qparams and epilogue. Backends key their packed
    /// layers by it, so that finding a layer does not compare its weights.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}
