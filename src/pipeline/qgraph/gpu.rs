//! [`GpuBackend`]: the int8 ops of a [`QuantizedGraph`] on a [`GpuContext`], bit for bit
//! equal to [`ReferenceBackend`](super::ReferenceBackend).
//!
//! * conv2d: [`crate::gpu::conv2d_quantized`] with the conv's weights and epilogue.
//! * linear: the same GPU conv, 1x1 on `[rows, in, 1, 1]`, with the epilogue the reference
//!   builds (`Epilogue::new` with the engine's formula): the reference linear *is* that conv.
//! * relu, clip, concat, add: every output byte is a function of the stored input byte(s)
//!   only (for add, also of ATen's vector/scalar split on the x86 engine). The host evaluates
//!   the reference op on all 256 bytes (all 65536 byte pairs for add, once per path) and the
//!   GPU gathers through those tables ([`GpuContext::concat_bytes`],
//!   [`GpuContext::binary_bytes`]): the same technique as squint's GPU dequantize, exact by
//!   construction, including the reference's validation errors.
//! * max pool: integer max on the GPU, with QNNPACK's clamped taps or the generic kernel's
//!   skipped ones.
//! * avg pool and adaptive avg pool: integer window sums on the GPU, then the engine's float
//!   formula in integer-emulated binary32 (`shaders/graph_pool.wgsl`); the host computes each
//!   output position's window and f32 multiplier with the reference's expressions.
//!
//! Costs: [`QBackend`] hands bytes in and out, so through [`QuantizedGraph::run`] every op
//! uploads its inputs and reads its output back (one round trip per node).
//! [`GpuBackend::run_resident`] keeps the values of convs, and of the ReLUs, clips and adds
//! that follow them, on the device (queued, no waiting) and reads back only what the other
//! ops and the outputs need: the same bits. There a ReLU or clip that alone reads a conv's
//! output runs inside the conv, its clamp of the output ints merged into the epilogue's
//! (`Epilogue::then_clamp`): one pass over the tensor instead of two. A conv's or linear's
//! GPU layer (packed weights, epilogue table) is kept by node name and reused while it is
//! the same layer: the same revision ([`QConv::revision`]; a linear's epilogue, built per
//! call, is compared), else the same weights, epilogue and shape (a name alone does not
//! identify weights across graphs). The add's tables cost 65536 reference evaluations per
//! path on the host, once per (qparams, ReLU, path): the backend keeps them.

use super::backend::{clamped_slot, linear_as_conv, QBackend, QTensor};
use super::bytes::{clip_table, relu_table, AddTables, ConcatTables};
use super::{check_node_output, node_error, run_node, GraphRun, QLinear, QNode, QuantizedGraph};
use crate::cpu::reference::pool::{nhwc_multiplier, AvgOptions, MemoryFormat, Pool2dParams};
use crate::cpu::reference::{CpuCapability, QEngine};
use crate::error::{Error, Result};
use crate::gpu::{AvgPoolPlan, GpuContext, GpuConv2d, GpuTensor, LutInput};
use crate::pipeline::QConv;
use crate::quant::WeightQParams;
use crate::quant::{Epilogue, QDtype, QParams};
use crate::shape::ConvShape;
use crate::tensor::Tensor;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Runs a [`QuantizedGraph`]'s int8 ops on a GPU (see the module docs).
#[derive(Debug, Clone)]
pub struct GpuBackend {
    ctx: GpuContext,
    engine: QEngine,
    isa: CpuCapability,
    /// Each conv's or linear's GPU layer by node name, kept while the weights, epilogue and
    /// shape stay the same.
    layers: HashMap<String, Arc<CachedLayer>>,
    /// The adds' byte-pair tables (vector path, then scalar path).
    add_tables: AddTables,
    /// The concat inputs' byte tables.
    concat_tables: ConcatTables,
    /// The adds' tables uploaded for [`GpuBackend::run_resident`], by the host tables they
    /// hold (the same `Arc` as `add_tables` keeps).
    device_add_tables: Vec<(Arc<Vec<u8>>, GpuTensor)>,
}

/// A GPU layer and what it was built for.
#[derive(Debug)]
struct CachedLayer {
    /// The revision of the conv or linear it was built from (`QConv::revision`).
    revision: u64,
    w: Vec<i8>,
    w_qp: WeightQParams,
    epi: Epilogue,
    shape: ConvShape,
    layer: GpuConv2d,
}

fn dims4(x: &QTensor) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(x.dims.as_slice())
        .map_err(|_| Error::Shape(format!("expected a 4-D tensor, got {:?}", x.dims)))
}

fn check_pool_input(x: &QTensor) -> Result<[usize; 4]> {
    let d = dims4(x)?;
    if d.contains(&0) {
        return Err(Error::Shape(format!(
            "pooling input {d:?} has a zero-sized dimension"
        )));
    }
    if x.data.len() != d.iter().product::<usize>() {
        return Err(Error::Shape(format!(
            "pooling input has {} bytes, dims {d:?} need {}",
            x.data.len(),
            d.iter().product::<usize>()
        )));
    }
    QParams::new(x.qp.scale, x.qp.zero_point, x.qp.dtype)?;
    Ok(d)
}

/// QNNPACK's average pooling (kernel `k`, no ceil mode): windows clipped to the input, padded
/// taps count as the zero point, one multiplier `f32(s / f32(s * f32(kh * kw)))`.
fn qnnpack_avg_plan(
    qp: &QParams,
    p: &Pool2dParams,
    hw: [usize; 2],
    out: [usize; 2],
) -> Result<AvgPoolPlan> {
    let pool_size = p.kernel[0] * p.kernel[1];
    if pool_size == 1 {
        return Err(Error::InvalidParameter(
            "avg_pool2d: QNNPACK refuses 1x1 pooling".into(),
        ));
    }
    if pool_size >= 1 << 24 {
        return Err(Error::InvalidParameter(format!(
            "avg_pool2d: QNNPACK needs fewer than 2^24 pooled elements, got {pool_size}"
        )));
    }
    let scale = qp.scale / (qp.scale * pool_size as f32);
    let ranges = |i: usize| -> Vec<[u32; 2]> {
        (0..out[i])
            .map(|o| {
                let s = (o * p.stride[i]) as i64 - p.padding[i] as i64;
                let e = s + p.kernel[i] as i64;
                [s.max(0) as u32, e.min(hw[i] as i64) as u32]
            })
            .collect()
    };
    Ok(AvgPoolPlan {
        rows: ranges(0),
        cols: ranges(1),
        multipliers: vec![scale; out[0] * out[1]],
        tap_zp: qp.zero_point,
        add: None,
        post_add: qp.zero_point,
        clamp: [0, 255],
    })
}

impl GpuBackend {
    /// The GPU layer of `name` for these weights, epilogue and shape, from the cache or built
    /// now after `check` passes. A cached layer of the same `revision` has the same weights
    /// and qparams, and the same epilogue where `epi_in_revision` (a conv's); else they are
    /// compared.
    #[allow(clippy::too_many_arguments)]
    fn layer(
        &mut self,
        (name, revision, epi_in_revision): (&str, u64, bool),
        w: &[i8],
        w_qp: &WeightQParams,
        epi: &Epilogue,
        s: &ConvShape,
        check: impl FnOnce() -> Result<()>,
    ) -> Result<Arc<CachedLayer>> {
        let fresh = self.layers.get(name).is_some_and(|c| {
            let same = c.revision == revision;
            (same || (c.w == w && c.w_qp == *w_qp))
                && ((same && epi_in_revision) || c.epi == *epi)
                && c.shape.weight_dims() == s.weight_dims()
                && c.shape.params == s.params
        });
        if !fresh {
            check()?;
            let layer = GpuConv2d::new(&self.ctx, w, s.weight_dims(), w_qp, epi, s.params)?;
            self.layers.insert(
                name.to_string(),
                Arc::new(CachedLayer {
                    revision,
                    w: w.to_vec(),
                    w_qp: w_qp.clone(),
                    epi: epi.clone(),
                    shape: *s,
                    layer,
                }),
            );
        }
        Ok(self.layers[name].clone())
    }

    /// [`crate::gpu::conv2d_quantized`] on host bytes through the layer cache (see
    /// [`GpuBackend::layer`]).
    #[allow(clippy::too_many_arguments)]
    fn conv_cached(
        &mut self,
        key: (&str, u64, bool),
        x: &[u8],
        x_qp: &QParams,
        w: &[i8],
        w_qp: &WeightQParams,
        epi: &Epilogue,
        s: &ConvShape,
    ) -> Result<Vec<u8>> {
        let check = || crate::gpu::check_conv2d_args(x, x_qp, w, w_qp, epi, s);
        let c = self.layer(key, w, w_qp, epi, s, check)?;
        crate::gpu::conv2d_quantized_with(&self.ctx, &c.layer, x, x_qp, s)
    }

    /// A backend on `ctx` for `graph`'s engine and CPU capability.
    pub fn new(ctx: GpuContext, graph: &QuantizedGraph) -> Self {
        Self::with_engine(ctx, graph.engine(), graph.isa())
    }

    /// A backend on `ctx` reproducing engine `engine` on a CPU with capability `isa`.
    pub fn with_engine(ctx: GpuContext, engine: QEngine, isa: CpuCapability) -> Self {
        GpuBackend {
            ctx,
            engine,
            isa,
            layers: HashMap::new(),
            add_tables: AddTables::default(),
            concat_tables: ConcatTables::default(),
            device_add_tables: Vec::new(),
        }
    }

    /// The device.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    fn max_pool_here(&self, x: &QTensor, p: &Pool2dParams) -> Result<Vec<u8>> {
        let d = check_pool_input(x)?;
        p.output_size(d[2], d[3])?;
        let qnnpack =
            self.engine == QEngine::Qnnpack && x.qp.dtype == QDtype::QUInt8 && !p.ceil_mode;
        if qnnpack && p.kernel == [1, 1] {
            return Err(Error::InvalidParameter(
                "max_pool2d: QNNPACK refuses 1x1 pooling".into(),
            ));
        }
        self.ctx
            .max_pool2d_bytes(&x.data, d, x.qp.dtype, p, qnnpack)
    }
}

impl QBackend for GpuBackend {
    fn conv2d(&mut self, conv: &QConv, x: &QTensor) -> Result<Vec<u8>> {
        conv.check_input_qp(&x.qp)?;
        let s = conv.shape(dims4(x)?)?;
        self.conv_cached(
            (conv.name(), conv.revision(), true),
            &x.data,
            &x.qp,
            conv.w_q(),
            conv.w_qp(),
            conv.epi(),
            &s,
        )
    }

    fn linear(&mut self, l: &QLinear, x: &QTensor, out: &QParams) -> Result<Vec<u8>> {
        let (s, epi) = linear_as_conv(l, x, out)?;
        let [o, k] = l.w_dims();
        // A linear has no name: its slot is its size (a collision only rebuilds the layer).
        let slot = format!("linear {o}x{k}");
        let key = (slot.as_str(), l.revision(), false);
        self.conv_cached(key, &x.data, &x.qp, l.w_q(), l.w_qp(), &epi, &s)
    }

    fn add(
        &mut self,
        a: &QTensor,
        b: &QTensor,
        out: &QParams,
        relu: bool,
        formats: [MemoryFormat; 2],
    ) -> Result<Vec<u8>> {
        let plan = self
            .add_tables
            .plan(self.engine, self.isa, a, b, out, relu, formats, true)?
            .ok_or_else(|| Error::InvalidParameter("add: no byte tables".into()))?;
        // The vector/scalar split is by memory position: lay channels-last tensors out NHWC
        // for the GPU (a host permutation of bytes; the arithmetic stays on the GPU).
        match plan.nhwc {
            Some(d) => {
                let (pa, pb) = (to_nhwc(&a.data, d), to_nhwc(&b.data, d));
                let y = self.ctx.binary_bytes(&pa, &pb, &plan.tables, plan.split)?;
                Ok(from_nhwc(&y, d))
            }
            None => self
                .ctx
                .binary_bytes(&a.data, &b.data, &plan.tables, plan.split),
        }
    }

    fn concat(
        &mut self,
        xs: &[&QTensor],
        axis: usize,
        out: &QParams,
        format: MemoryFormat,
    ) -> Result<Vec<u8>> {
        let (parts, outer) = self.concat_tables.parts(xs, axis, out, format, self.isa)?;
        let inputs: Vec<LutInput<'_>> = parts
            .iter()
            .map(|p| LutInput {
                data: &p.data,
                block: p.block,
                table: &p.table,
            })
            .collect();
        self.ctx.concat_bytes(&inputs, outer)
    }

    fn max_pool2d(&mut self, x: &QTensor, p: &Pool2dParams) -> Result<Vec<u8>> {
        self.max_pool_here(x, p)
    }

    fn avg_pool2d(
        &mut self,
        x: &QTensor,
        p: &Pool2dParams,
        o: &AvgOptions,
        format: MemoryFormat,
    ) -> Result<Vec<u8>> {
        let d = check_pool_input(x)?;
        if p.dilation != [1, 1] {
            return Err(Error::InvalidParameter(format!(
                "avg_pool2d has no dilation, got {:?}",
                p.dilation
            )));
        }
        if o.divisor_override == Some(0) {
            return Err(Error::InvalidParameter(
                "avg_pool2d: divisor_override must not be 0".into(),
            ));
        }
        let [_, _, h, w] = d;
        let [ho, wo] = p.output_size(h, w)?;
        let qp = &x.qp;
        let plan = if self.engine == QEngine::Qnnpack && qp.dtype == QDtype::QUInt8 && !p.ceil_mode
        {
            qnnpack_avg_plan(qp, p, [h, w], [ho, wo])?
        } else {
            // The generic kernel: (clipped range, unclipped-with-padding size) per axis.
            let ranges = |i: usize, out: usize, size: usize| -> Result<Vec<([u32; 2], i64)>> {
                (0..out)
                    .map(|oi| {
                        let s = (oi * p.stride[i]) as i64 - p.padding[i] as i64;
                        let e = (s + p.kernel[i] as i64).min((size + p.padding[i]) as i64);
                        let pool = e - s;
                        let (s, e) = (s.max(0), e.min(size as i64));
                        if e <= s {
                            return Err(Error::InvalidParameter(format!(
                                "avg_pool2d: output index {oi} has its window entirely in the \
                                 padding"
                            )));
                        }
                        Ok(([s as u32, e as u32], pool))
                    })
                    .collect()
            };
            let (rows, cols) = (ranges(0, ho, h)?, ranges(1, wo, w)?);
            let mut multipliers = Vec::with_capacity(ho * wo);
            for (ry, py) in &rows {
                for (rx, px) in &cols {
                    let size = (ry[1] - ry[0]) as i64 * (rx[1] - rx[0]) as i64;
                    let divide = match o.divisor_override {
                        Some(dv) => dv,
                        None if o.count_include_pad => py * px,
                        None => size,
                    };
                    multipliers.push(match format {
                        MemoryFormat::ChannelsLast => nhwc_multiplier(divide),
                        MemoryFormat::Contiguous => (1.0f64 / divide as f64) as f32,
                    });
                }
            }
            let full = qp.dtype.full_range();
            if format == MemoryFormat::ChannelsLast {
                // ATen's NHWC kernel: Σ(q - zp) over the valid taps, rounded, then + zp.
                return self.ctx.avg_pool2d_bytes(
                    &x.data,
                    d,
                    qp.dtype,
                    &AvgPoolPlan {
                        rows: rows.iter().map(|r| r.0).collect(),
                        cols: cols.iter().map(|r| r.0).collect(),
                        multipliers,
                        tap_zp: qp.zero_point,
                        add: None,
                        post_add: qp.zero_point,
                        clamp: [full.min, full.max],
                    },
                );
            }
            AvgPoolPlan {
                rows: rows.iter().map(|r| r.0).collect(),
                cols: cols.iter().map(|r| r.0).collect(),
                multipliers,
                tap_zp: qp.zero_point,
                add: Some(qp.zero_point as f32),
                post_add: 0,
                clamp: [full.min, full.max],
            }
        };
        self.ctx.avg_pool2d_bytes(&x.data, d, qp.dtype, &plan)
    }

    fn adaptive_avg_pool2d(
        &mut self,
        x: &QTensor,
        output: [usize; 2],
        format: MemoryFormat,
    ) -> Result<Vec<u8>> {
        let d = check_pool_input(x)?;
        let [_, _, h, w] = d;
        let [ho, wo] = output;
        if ho == 0 || wo == 0 {
            return Err(Error::Shape(format!(
                "adaptive_avg_pool2d: output size {output:?} has a zero"
            )));
        }
        let qp = &x.qp;
        let qnnpack = self.engine == QEngine::Qnnpack
            && qp.dtype == QDtype::QUInt8
            && [h, w] != [ho, wo]
            && h % ho == 0
            && w % wo == 0;
        let plan = if qnnpack {
            let p = Pool2dParams::new([h / ho, w / wo]);
            qnnpack_avg_plan(qp, &p, [h, w], [ho, wo])?
        } else {
            // PyTorch's start_index / end_index, in float as the reference computes them.
            let start =
                |o: usize, out: usize, inp: usize| ((o * inp) as f32 / out as f32).floor() as usize;
            let end = |o: usize, out: usize, inp: usize| {
                (((o + 1) * inp) as f32 / out as f32).ceil() as usize
            };
            let range = |o: usize, out: usize, inp: usize| {
                [start(o, out, inp) as u32, end(o, out, inp) as u32]
            };
            let rows: Vec<[u32; 2]> = (0..ho).map(|o| range(o, ho, h)).collect();
            let cols: Vec<[u32; 2]> = (0..wo).map(|o| range(o, wo, w)).collect();
            if format == MemoryFormat::ChannelsLast {
                // ATen's NHWC kernel: Σ(q - zp) over the window, rounded, then + zp.
                let mut multipliers = Vec::with_capacity(ho * wo);
                for ry in &rows {
                    for rx in &cols {
                        let size = (ry[1] - ry[0]) as i64 * (rx[1] - rx[0]) as i64;
                        multipliers.push(nhwc_multiplier(size));
                    }
                }
                let full = qp.dtype.full_range();
                let plan = AvgPoolPlan {
                    rows,
                    cols,
                    multipliers,
                    tap_zp: qp.zero_point,
                    add: None,
                    post_add: qp.zero_point,
                    clamp: [full.min, full.max],
                };
                return self.ctx.avg_pool2d_bytes(&x.data, d, qp.dtype, &plan);
            }
            let kdr = 1.0f32;
            let mut multipliers = Vec::with_capacity(ho * wo);
            for ry in &rows {
                let kdhr = kdr / (ry[1] - ry[0]) as f32;
                for rx in &cols {
                    multipliers.push(kdhr / (rx[1] - rx[0]) as f32);
                }
            }
            AvgPoolPlan {
                rows,
                cols,
                multipliers,
                tap_zp: 0,
                add: None,
                post_add: 0,
                clamp: [i32::MIN, i32::MAX],
            }
        };
        self.ctx.avg_pool2d_bytes(&x.data, d, qp.dtype, &plan)
    }

    fn relu(&mut self, x: &QTensor) -> Result<Vec<u8>> {
        self.ctx.map_bytes(&x.data, &relu_table(&x.qp)?)
    }

    fn clip(&mut self, x: &QTensor, min: f32, max: f32) -> Result<Vec<u8>> {
        let t = clip_table(self.engine, &x.qp, min, max)?;
        self.ctx.map_bytes(&x.data, &t)
    }
}

/// A value of [`GpuBackend::run_resident`] (and of
/// [`crate::pipeline::qdq::QdqGpu::run_resident`]): its dims and qparams, and its bytes on the
/// device, on the host or both (each made from the other when first needed).
pub(crate) struct Resident {
    pub(crate) dims: Vec<usize>,
    pub(crate) qp: QParams,
    pub(crate) dev: Option<GpuTensor>,
    pub(crate) host: Option<QTensor>,
}

impl Resident {
    /// A value on the device only.
    pub(crate) fn on_device(dims: Vec<usize>, qp: QParams, dev: GpuTensor) -> Resident {
        Resident {
            dims,
            qp,
            dev: Some(dev),
            host: None,
        }
    }

    /// A value on the host only.
    pub(crate) fn on_host(t: QTensor) -> Resident {
        Resident {
            dims: t.dims.clone(),
            qp: t.qp,
            dev: None,
            host: Some(t),
        }
    }

    /// The value's bytes on the host, read back now if they are only on the device.
    pub(crate) fn host(&mut self, ctx: &GpuContext) -> Result<&QTensor> {
        if self.host.is_none() {
            let t = self
                .dev
                .as_ref()
                .expect("a value is on the device or the host");
            self.host = Some(QTensor {
                data: ctx.read_q(t)?,
                dims: self.dims.clone(),
                qp: self.qp,
            });
        }
        Ok(self.host.as_ref().expect("set above"))
    }

    /// The value on the device, uploaded now if it is only on the host (4-D values only).
    pub(crate) fn dev(&mut self, ctx: &GpuContext) -> Result<GpuTensor> {
        if let Some(t) = &self.dev {
            return Ok(t.clone());
        }
        let h = self
            .host
            .as_ref()
            .expect("a value is on the device or the host");
        let t = ctx.upload_q(&h.data, dims4(h)?, self.qp.dtype)?;
        self.dev = Some(t.clone());
        Ok(t)
    }
}

impl GpuBackend {
    /// Runs `q` on this backend's device and returns its outputs, dequantized: bit for bit
    /// [`QuantizedGraph::run`]'s outputs on this backend, without the round trip per node.
    /// Convs, and the ReLUs, clips and adds of values on the device (adds where one path of
    /// ATen's covers the whole tensor), read and write device tensors, queued without
    /// waiting; every other op runs as [`QBackend`] does, on inputs read back when they are
    /// on the device only, and its output is uploaded when a conv needs it. Only the graph's
    /// outputs and the host ops' inputs are read back. A ReLU or clip that alone reads a
    /// conv's output runs inside the conv ([`QuantizedGraph::fused_activations`]).
    pub fn run_resident(
        &mut self,
        q: &QuantizedGraph,
        inputs: &[Tensor<f32>],
    ) -> Result<Vec<Tensor<f32>>> {
        let mut values = self.resident_values(q, inputs, true)?;
        let ctx = self.ctx.clone();
        (q.graph.outputs().iter())
            .map(|o| {
                let t = (values[o.0].as_mut())
                    .expect("graph outputs are computed")
                    .host(&ctx)?;
                Tensor::new(
                    t.dims.clone(),
                    crate::quant::dequantize_slice(&t.data, &t.qp),
                )
            })
            .collect()
    }

    /// [`GpuBackend::run_resident`] with every value read back at the end (no activation
    /// fused, so that each has its own value): [`QuantizedGraph::run`]'s [`GraphRun`] bit for
    /// bit, with one read-back per value instead of an upload and a read-back per node (what
    /// `squint run --device gpu` uses, whose `--cross-check` compares every value).
    pub fn run_resident_values(
        &mut self,
        q: &QuantizedGraph,
        inputs: &[Tensor<f32>],
    ) -> Result<GraphRun> {
        let ctx = self.ctx.clone();
        let values: Vec<QTensor> = (self.resident_values(q, inputs, false)?.into_iter())
            .map(|v| v.expect("every value is computed").host(&ctx).cloned())
            .collect::<Result<_>>()?;
        let outputs = q.dequantized_outputs(&values, |t| Some(t))?;
        Ok(GraphRun { values, outputs })
    }

    /// Every value of `q` run on `inputs` (see [`GpuBackend::run_resident`]); with `fuse`,
    /// each ReLU or clip of [`QuantizedGraph::fused_activations`] runs inside its conv, and
    /// the conv's own output (read by nothing else) is left uncomputed (`None`).
    fn resident_values(
        &mut self,
        q: &QuantizedGraph,
        inputs: &[Tensor<f32>],
        fuse: bool,
    ) -> Result<Vec<Option<Resident>>> {
        let g = &q.graph;
        let mut values: Vec<Option<Resident>> = (q.quantized_inputs(inputs)?.into_iter())
            .map(|v| v.map(Resident::on_host))
            .collect();
        let fused_epilogues = q.fused_epilogues(fuse);
        let mut i = 0;
        while i < g.nodes().len() {
            let (node, qn) = (&g.nodes()[i], &q.nodes[i]);
            let fused = fused_epilogues.get(i).and_then(Option::as_ref);
            // A fused activation's output is the conv's, clamped.
            let last = &g.nodes()[i + usize::from(fused.is_some())];
            let out = q.qps[last.output.0];
            let dims = g.value(last.output).dims.clone();
            let v = self
                .resident_node(&mut values, &node.inputs, qn, out, dims, fused)
                .map_err(|e| node_error(node, e))?;
            if let Some(h) = &v.host {
                check_node_output(last, h.data.len(), &v.dims)?;
            }
            values[last.output.0] = Some(v);
            i += 1 + usize::from(fused.is_some());
        }
        Ok(values)
    }

    /// The add of `inputs` (see [`QBackend::add`]) on the device, where both are there with the
    /// same 4-D dims and one path of ATen's adds every element (no vector/scalar split inside
    /// the tensor, as for every tensor whose size is a multiple of the vector loop's step):
    /// then the memory order does not matter. `None` otherwise.
    fn add_on_device(
        &mut self,
        values: &[Option<Resident>],
        inputs: &[crate::graph::ValueId],
        out: QParams,
        relu: bool,
        formats: [MemoryFormat; 2],
    ) -> Result<Option<GpuTensor>> {
        let (a, b) = (&values[inputs[0].0], &values[inputs[1].0]);
        let (Some(a), Some(b)) = (a, b) else {
            return Ok(None);
        };
        let (Some(ta), Some(tb)) = (&a.dev, &b.dev) else {
            return Ok(None);
        };
        if a.dims != b.dims {
            return Ok(None);
        }
        let qps = [a.qp, b.qp, out];
        let (engine, isa) = (self.engine, self.isa);
        let Some(plan) =
            (self.add_tables).plan_for(engine, isa, &a.dims, qps, relu, formats, true)?
        else {
            return Ok(None);
        };
        let n: usize = a.dims.iter().product();
        if plan.split != 0 && plan.split < n {
            return Ok(None);
        }
        let second = plan.split == 0;
        let kept = (self.device_add_tables.iter()).find(|(t, _)| Arc::ptr_eq(t, &plan.tables));
        let tables = match kept {
            Some((_, t)) => t.clone(),
            None => {
                let dims = [1, 1, 1, plan.tables.len()];
                let t = self.ctx.upload_q(&plan.tables, dims, QDtype::QUInt8)?;
                if self.device_add_tables.len() >= 16 {
                    self.device_add_tables.clear();
                }
                self.device_add_tables
                    .push((plan.tables.clone(), t.clone()));
                t
            }
        };
        let y = (self.ctx).binary_tensors((ta, tb), &tables, second, out.dtype)?;
        Ok(Some(y))
    }

    /// One node of [`GpuBackend::run_resident`] on `values` (its `inputs` computed), its
    /// output of qparams `out` and dims `dims`.
    fn resident_node(
        &mut self,
        values: &mut [Option<Resident>],
        inputs: &[crate::graph::ValueId],
        qn: &QNode,
        out: QParams,
        dims: Vec<usize>,
        fused: Option<&Epilogue>,
    ) -> Result<Resident> {
        let ctx = self.ctx.clone();
        let on_device = |dev: GpuTensor| Resident::on_device(dims.clone(), out, dev);
        if let (QNode::Add { relu, formats }, [_, _]) = (qn, inputs) {
            if let Some(y) = self.add_on_device(values, inputs, out, *relu, *formats)? {
                return Ok(on_device(y));
            }
        }
        let x = values[inputs[0].0].as_mut().expect("inputs come first");
        let table = match qn {
            QNode::Conv2d(conv) => {
                conv.check_input_qp(&x.qp)?;
                let xt = x.dev(&ctx)?;
                let s = conv.shape(xt.dims)?;
                // A fused clamp's layer is kept apart (`clamped_slot`).
                let (name, epi) = match fused {
                    Some(e) => (Cow::Owned(clamped_slot(conv.name(), e)), e),
                    None => (Cow::Borrowed(conv.name()), conv.epi()),
                };
                let key = (name.as_ref(), conv.revision(), true);
                let layer = self.layer(key, conv.w_q(), conv.w_qp(), epi, &s, || Ok(()))?;
                let y = layer.layer.run(&ctx, &xt, &x.qp)?;
                if y.dims.as_slice() != dims {
                    return Err(Error::Shape(format!(
                        "the conv gave dims {:?}, the graph expects {dims:?}",
                        y.dims
                    )));
                }
                return Ok(on_device(y));
            }
            QNode::Relu if x.dev.is_some() => Some(relu_table(&x.qp)?),
            QNode::Clip { min, max } if x.dev.is_some() => {
                Some(clip_table(self.engine, &x.qp, *min, *max)?)
            }
            _ => None,
        };
        if let Some(table) = table {
            let xt = x.dev(&ctx)?;
            return Ok(on_device(ctx.map_tensor(&xt, &table)?));
        }
        // A host op: its inputs read back where they are on the device only.
        for v in inputs {
            values[v.0]
                .as_mut()
                .expect("inputs come first")
                .host(&ctx)?;
        }
        let args: Vec<&QTensor> = (inputs.iter())
            .map(|v| {
                let r = values[v.0].as_ref().expect("inputs come first");
                r.host.as_ref().expect("read back above")
            })
            .collect();
        let data = run_node(self, qn, &args, &out)?;
        Ok(Resident::on_host(QTensor {
            data,
            dims,
            qp: out,
        }))
    }
}

/// NCHW bytes to NHWC.
fn to_nhwc(x: &[u8], [n, c, h, w]: [usize; 4]) -> Vec<u8> {
    let hw = h * w;
    let mut y = Vec::with_capacity(x.len());
    for b in 0..n {
        for p in 0..hw {
            for ch in 0..c {
                y.push(x[(b * c + ch) * hw + p]);
            }
        }
    }
    y
}

/// NHWC bytes back to NCHW.
fn from_nhwc(y: &[u8], [n, c, h, w]: [usize; 4]) -> Vec<u8> {
    let hw = h * w;
    let mut x = vec![0u8; y.len()];
    let mut i = 0;
    for b in 0..n {
        for p in 0..hw {
            for ch in 0..c {
                x[(b * c + ch) * hw + p] = y[i];
                i += 1;
            }
        }
    }
    x
}
