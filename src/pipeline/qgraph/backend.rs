//! The per-op interface a device implements to run a [`QuantizedGraph`].
//!
//! The run loop ([`QuantizedGraph::run`]) calls one method per node with the node's int8
//! inputs; a backend returns the output's stored bytes (the output's dims and qparams are the
//! graph's). Each backend is checked against [`ReferenceBackend`], which calls the scalar
//! reference ops of [`crate::cpu::reference`] (the specification) with the graph's engine.

use super::{GraphRun, QLinear, QuantizedGraph};
use crate::cpu::fast::PackedConv2d;
use crate::cpu::reference::cat::CatInput;
use crate::cpu::reference::pool::{AvgOptions, MemoryFormat, Pool2dParams};
use crate::cpu::reference::{self as r, CpuCapability, QEngine};
use crate::error::{Error, Result};
use crate::pipeline::QConv;
use crate::quant::{Epilogue, QParams, WeightQParams};
use crate::shape::{ConvParams, ConvShape};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// An int8 tensor: stored bytes, dims and qparams.
#[derive(Debug, Clone, PartialEq)]
pub struct QTensor {
    /// Stored bytes (u8 for quint8), row-major.
    pub data: Vec<u8>,
    /// Dims, outermost first.
    pub dims: Vec<usize>,
    /// Quantization parameters.
    pub qp: QParams,
}

impl QTensor {
    /// The tensor as an input of the reference's cat.
    pub(super) fn cat_input(&self) -> CatInput<'_> {
        CatInput {
            data: &self.data,
            dims: &self.dims,
            qp: &self.qp,
        }
    }

    fn dims4(&self) -> Result<[usize; 4]> {
        <[usize; 4]>::try_from(self.dims.as_slice())
            .map_err(|_| Error::Shape(format!("expected a 4-D tensor, got {:?}", self.dims)))
    }
}

/// One method per int8 op. Inputs carry their qparams; `out` is the output's.
pub trait QBackend {
    /// Conv2d with the conv's epilogue (its input qparams are `x.qp`).
    fn conv2d(&mut self, conv: &QConv, x: &QTensor) -> Result<Vec<u8>>;
    /// Conv2d with `epi`, the conv's epilogue with a fused activation's clamp merged
    /// (`QuantizedGraph::run_outputs`), where the backend runs it so; `None` (the default):
    /// the graph then runs the conv and the activation apart.
    fn conv2d_clamped(
        &mut self,
        conv: &QConv,
        x: &QTensor,
        epi: &Epilogue,
    ) -> Result<Option<Vec<u8>>> {
        let _ = (conv, x, epi);
        Ok(None)
    }
    /// Linear on `[N, in]`.
    fn linear(&mut self, l: &QLinear, x: &QTensor, out: &QParams) -> Result<Vec<u8>>;
    /// Elementwise add (optionally + ReLU) of two tensors of equal dims that PyTorch stores as
    /// `formats` (see `cpu::reference::add::add_in`).
    fn add(
        &mut self,
        a: &QTensor,
        b: &QTensor,
        out: &QParams,
        relu: bool,
        formats: [MemoryFormat; 2],
    ) -> Result<Vec<u8>>;
    /// Concatenation along `axis`, requantized to `out`; `format` is channels-last when every
    /// input is (ATen's NHWC cat kernel then rounds differently, see `docs/ops.md`).
    fn concat(
        &mut self,
        xs: &[&QTensor],
        axis: usize,
        out: &QParams,
        format: MemoryFormat,
    ) -> Result<Vec<u8>>;
    /// Max pooling (qparams unchanged).
    fn max_pool2d(&mut self, x: &QTensor, p: &Pool2dParams) -> Result<Vec<u8>>;
    /// Average pooling (qparams unchanged) of a tensor PyTorch stores as `format`.
    fn avg_pool2d(
        &mut self,
        x: &QTensor,
        p: &Pool2dParams,
        o: &AvgOptions,
        format: MemoryFormat,
    ) -> Result<Vec<u8>>;
    /// Adaptive average pooling to `output` (qparams unchanged) of a tensor PyTorch stores as
    /// `format`.
    fn adaptive_avg_pool2d(
        &mut self,
        x: &QTensor,
        output: [usize; 2],
        format: MemoryFormat,
    ) -> Result<Vec<u8>>;
    /// ReLU (qparams unchanged).
    fn relu(&mut self, x: &QTensor) -> Result<Vec<u8>>;
    /// Clamp to `[min, max]` (qparams unchanged).
    fn clip(&mut self, x: &QTensor, min: f32, max: f32) -> Result<Vec<u8>>;
}

/// The name under which a backend keeps the layer of conv `name` run with `epi`, a fused
/// activation's clamp merged (`QBackend::conv2d_clamped`): apart from the conv's own layer,
/// and fixed by the conv's revision (its output qparams) and the clamp.
pub(super) fn clamped_slot(name: &str, epi: &Epilogue) -> String {
    format!("{name} clamped to {}..={}", epi.clamp.min, epi.clamp.max)
}

/// The specification: [`crate::cpu::reference`]'s scalar ops, PyTorch eager's formulas for
/// the graph's engine.
#[derive(Debug, Clone, Copy)]
pub struct ReferenceBackend {
    engine: QEngine,
    isa: CpuCapability,
}

impl ReferenceBackend {
    /// The reference for `graph`'s engine and CPU capability.
    pub fn new(graph: &QuantizedGraph) -> Self {
        ReferenceBackend {
            engine: graph.engine(),
            isa: graph.isa(),
        }
    }
}

impl QBackend for ReferenceBackend {
    fn conv2d(&mut self, conv: &QConv, x: &QTensor) -> Result<Vec<u8>> {
        conv.check_input_qp(&x.qp)?;
        let s = conv.shape(x.dims4()?)?;
        r::conv2d_quantized(&x.data, &x.qp, conv.w_q(), conv.w_qp(), conv.epi(), &s)
    }

    fn linear(&mut self, l: &QLinear, x: &QTensor, out: &QParams) -> Result<Vec<u8>> {
        let (y, _) = r::linear::linear(
            l.formula(),
            &x.data,
            &x.dims,
            &x.qp,
            l.w_q(),
            l.w_dims(),
            l.w_qp(),
            l.bias(),
            out,
            l.relu(),
        )?;
        Ok(y)
    }

    fn add(
        &mut self,
        a: &QTensor,
        b: &QTensor,
        out: &QParams,
        relu: bool,
        formats: [MemoryFormat; 2],
    ) -> Result<Vec<u8>> {
        if a.dims != b.dims {
            return Err(Error::Shape(format!(
                "add: dims {:?} and {:?} differ",
                a.dims, b.dims
            )));
        }
        r::add::add_in(
            formats,
            self.engine,
            self.isa,
            &a.dims,
            &a.data,
            &a.qp,
            &b.data,
            &b.qp,
            out,
            relu,
        )
    }

    fn concat(
        &mut self,
        xs: &[&QTensor],
        axis: usize,
        out: &QParams,
        format: MemoryFormat,
    ) -> Result<Vec<u8>> {
        let inputs: Vec<CatInput<'_>> = xs.iter().map(|x| x.cat_input()).collect();
        Ok(r::cat::cat_in(format, self.isa, &inputs, axis, out)?.0)
    }

    fn max_pool2d(&mut self, x: &QTensor, p: &Pool2dParams) -> Result<Vec<u8>> {
        Ok(r::pool::max_pool2d(self.engine, &x.data, x.dims4()?, &x.qp, p)?.0)
    }

    fn avg_pool2d(
        &mut self,
        x: &QTensor,
        p: &Pool2dParams,
        o: &AvgOptions,
        format: MemoryFormat,
    ) -> Result<Vec<u8>> {
        let dims = x.dims4()?;
        Ok(r::pool::avg_pool2d_in(format, self.engine, &x.data, dims, &x.qp, p, o)?.0)
    }

    fn adaptive_avg_pool2d(
        &mut self,
        x: &QTensor,
        output: [usize; 2],
        format: MemoryFormat,
    ) -> Result<Vec<u8>> {
        let dims = x.dims4()?;
        Ok(r::pool::adaptive_avg_pool2d_in(format, self.engine, &x.data, dims, &x.qp, output)?.0)
    }

    fn relu(&mut self, x: &QTensor) -> Result<Vec<u8>> {
        r::activation::relu(&x.data, &x.qp)
    }

    fn clip(&mut self, x: &QTensor, min: f32, max: f32) -> Result<Vec<u8>> {
        r::activation::hardtanh(self.engine, &x.data, &x.qp, min, max)
    }
}

/// A linear as the conv the reference computes it with (`cpu::reference::linear`): 1x1 on
/// `[rows, in, 1, 1]` with the epilogue `Epilogue::new` builds for the engine's formula, after
/// the reference's checks of the input and weight. The GPU and fast CPU backends run it on
/// their convs.
pub(super) fn linear_as_conv(
    l: &QLinear,
    x: &QTensor,
    out: &QParams,
) -> Result<(ConvShape, Epilogue)> {
    QParams::new(x.qp.scale, x.qp.zero_point, x.qp.dtype)?;
    let [o, k] = l.w_dims();
    if l.w_q().len() != o * k {
        return Err(Error::Shape(format!(
            "linear weight has {} elements, dims {:?} need {}",
            l.w_q().len(),
            l.w_dims(),
            o * k
        )));
    }
    let (&last, lead) = x
        .dims
        .split_last()
        .ok_or_else(|| Error::Shape("linear: the input has no dimensions".into()))?;
    if last != k {
        return Err(Error::Shape(format!(
            "linear: input {:?} has {last} features, the weight {:?} expects {k}",
            x.dims,
            l.w_dims()
        )));
    }
    let rows: usize = lead.iter().product();
    if rows == 0 || o == 0 || k == 0 {
        return Err(Error::Shape(format!(
            "linear: input {:?} / weight {:?} has a zero-sized dimension",
            x.dims,
            l.w_dims()
        )));
    }
    if x.data.len() != rows * k {
        return Err(Error::Shape(format!(
            "linear input has {} bytes, dims {:?} need {}",
            x.data.len(),
            x.dims,
            rows * k
        )));
    }
    let s = ConvShape::new([rows, k, 1, 1], [o, k, 1, 1], ConvParams::default())?;
    let epi = Epilogue::new(
        l.formula(),
        x.qp.scale,
        l.w_qp(),
        l.bias(),
        *out,
        l.relu(),
        o,
    )?;
    Ok((s, epi))
}

/// The fast CPU path, bit-identical to [`ReferenceBackend`]:
/// * convs on [`crate::cpu::fast`] (blocked SIMD int8 GEMM, multithreaded, bit-identical to
///   the reference on every ISA), and linears as the 1x1 conv the reference computes them
///   with (`linear_as_conv`);
/// * relu, clip and concat through byte tables of the reference (each stored input byte
///   mapped to its output byte), add through tables of byte pairs (see `qgraph::bytes`),
///   shared with the GPU backend;
/// * pools on the reference.
///
/// Each conv's and linear's weights are packed on first use and reused while its weights,
/// qparams, epilogue and geometry stay the same (found by the layer's revision; one backend
/// may run several graphs), and the tables are kept per qparams: keep the backend across
/// runs, as a runtime keeps its layers.
#[derive(Debug)]
pub struct FastCpuBackend {
    reference: ReferenceBackend,
    opts: crate::cpu::fast::FastConvOptions,
    layers: HashMap<String, PackedLayer>,
    concat_tables: super::bytes::ConcatTables,
    add_tables: super::bytes::AddTables,
}

/// A conv's packed layer and what it was packed from.
#[derive(Debug)]
struct PackedLayer {
    /// The revision of the layer it was packed from (`QConv::revision`).
    revision: u64,
    w: Vec<i8>,
    w_qp: WeightQParams,
    epi: Epilogue,
    w_dims: [usize; 4],
    params: ConvParams,
    layer: PackedConv2d,
}

impl FastCpuBackend {
    /// The fast path for `graph`'s engine and CPU capability, with default threads.
    pub fn new(graph: &QuantizedGraph) -> Self {
        FastCpuBackend {
            reference: ReferenceBackend::new(graph),
            opts: Default::default(),
            layers: HashMap::new(),
            concat_tables: Default::default(),
            add_tables: Default::default(),
        }
    }

    /// These options for its convs (threads, splitting), checked.
    pub fn with_options(mut self, opts: crate::cpu::fast::FastConvOptions) -> Result<Self> {
        opts.validate()?;
        self.opts = opts;
        Ok(self)
    }

    /// [`FastCpuBackend::run`]'s outputs through [`QuantizedGraph::run_outputs`]: each ReLU
    /// or clip that alone reads a conv's output runs inside the conv (its clamp in the
    /// epilogue), the same outputs without a pass over those tensors.
    pub fn run_outputs(
        &mut self,
        graph: &QuantizedGraph,
        inputs: &[Tensor<f32>],
    ) -> Result<Vec<Tensor<f32>>> {
        crate::cpu::fast::on_pool(self.opts.threads, || graph.run_outputs(self, inputs))
    }

    /// Runs `graph` on `inputs` ([`QuantizedGraph::run`]) on a worker of the thread pool its
    /// convs run on (`crate::cpu::fast::on_pool`), so that each conv forks and joins from
    /// inside the pool: smaller layers split across the threads than when each conv is
    /// called from outside (MobileNetV2-shaped 224x224 int8 on 2 threads: 3.7 → 2.9 ms).
    /// The results are those of `graph.run(self, inputs)`.
    pub fn run(&mut self, graph: &QuantizedGraph, inputs: &[Tensor<f32>]) -> Result<GraphRun> {
        crate::cpu::fast::on_pool(self.opts.threads, || graph.run(self, inputs))
    }

    /// The packed layer in `slot` (a conv's name), packed now from these weights, qparams,
    /// epilogue and geometry if it holds none or was packed from others; `epi_in_revision`:
    /// layers of one `revision` have the same epilogue.
    #[allow(clippy::too_many_arguments)]
    fn packed(
        &mut self,
        slot: &str,
        revision: u64,
        w: &[i8],
        w_dims: [usize; 4],
        w_qp: &WeightQParams,
        epi: &Epilogue,
        params: ConvParams,
        epi_in_revision: bool,
    ) -> Result<&PackedConv2d> {
        // A layer of the same revision has the same weights and qparams: no need to compare
        // them (megabytes per call on a real model); a conv's revision covers its epilogue
        // too (`epi_in_revision`), a linear's epilogue is built per call from its input and
        // output qparams.
        let fresh = self.layers.get(slot).is_some_and(|c| {
            let same = c.revision == revision;
            (same || (c.w == w && c.w_qp == *w_qp))
                && ((same && epi_in_revision) || c.epi == *epi)
                && c.w_dims == w_dims
                && c.params == params
        });
        if !fresh {
            let layer = PackedConv2d::new(w, w_dims, w_qp, epi, params)?;
            self.layers.insert(
                slot.to_string(),
                PackedLayer {
                    revision,
                    w: w.to_vec(),
                    w_qp: w_qp.clone(),
                    epi: epi.clone(),
                    w_dims,
                    params,
                    layer,
                },
            );
        }
        Ok(&self.layers[slot].layer)
    }
}

impl QBackend for FastCpuBackend {
    fn conv2d(&mut self, conv: &QConv, x: &QTensor) -> Result<Vec<u8>> {
        if x.qp != conv.in_qp() {
            return self.reference.conv2d(conv, x);
        }
        let opts = self.opts.clone();
        let (w, w_dims, params) = (conv.w_q(), conv.w_dims(), conv.params());
        let rev = conv.revision();
        let epi = conv.epi();
        self.packed(conv.name(), rev, w, w_dims, conv.w_qp(), epi, params, true)?
            .run(&x.data, x.dims4()?, &x.qp, &opts)
    }
    fn conv2d_clamped(
        &mut self,
        conv: &QConv,
        x: &QTensor,
        epi: &Epilogue,
    ) -> Result<Option<Vec<u8>>> {
        if x.qp != conv.in_qp() {
            return Ok(None);
        }
        let opts = self.opts.clone();
        let (w, w_dims, params) = (conv.w_q(), conv.w_dims(), conv.params());
        // Kept apart from the conv's own layer, named by the clamp (fixed by the revision).
        let slot = clamped_slot(conv.name(), epi);
        let layer = self.packed(
            &slot,
            conv.revision(),
            w,
            w_dims,
            conv.w_qp(),
            epi,
            params,
            true,
        )?;
        layer.run(&x.data, x.dims4()?, &x.qp, &opts).map(Some)
    }
    fn linear(&mut self, l: &QLinear, x: &QTensor, out: &QParams) -> Result<Vec<u8>> {
        let (s, epi) = linear_as_conv(l, x, out)?;
        let [o, k] = l.w_dims();
        // A linear has no name: its slot is its size (a collision only repacks the layer).
        let slot = format!("linear {o}x{k}");
        let opts = self.opts.clone();
        self.packed(
            &slot,
            l.revision(),
            l.w_q(),
            s.weight_dims(),
            l.w_qp(),
            &epi,
            s.params,
            false,
        )?
        .run(&x.data, s.input_dims(), &x.qp, &opts)
    }
    fn add(
        &mut self,
        a: &QTensor,
        b: &QTensor,
        out: &QParams,
        relu: bool,
        formats: [MemoryFormat; 2],
    ) -> Result<Vec<u8>> {
        let (engine, isa) = (self.reference.engine, self.reference.isa);
        match self
            .add_tables
            .plan(engine, isa, a, b, out, relu, formats, false)?
        {
            Some(plan) => Ok(super::bytes::add_on_host(&a.data, &b.data, &plan)),
            None => self.reference.add(a, b, out, relu, formats),
        }
    }
    fn concat(
        &mut self,
        xs: &[&QTensor],
        axis: usize,
        out: &QParams,
        format: MemoryFormat,
    ) -> Result<Vec<u8>> {
        let isa = self.reference.isa;
        let (parts, outer) = self.concat_tables.parts(xs, axis, out, format, isa)?;
        Ok(super::bytes::concat_on_host(&parts, outer))
    }
    fn max_pool2d(&mut self, x: &QTensor, p: &Pool2dParams) -> Result<Vec<u8>> {
        self.reference.max_pool2d(x, p)
    }
    fn avg_pool2d(
        &mut self,
        x: &QTensor,
        p: &Pool2dParams,
        o: &AvgOptions,
        format: MemoryFormat,
    ) -> Result<Vec<u8>> {
        self.reference.avg_pool2d(x, p, o, format)
    }
    fn adaptive_avg_pool2d(
        &mut self,
        x: &QTensor,
        output: [usize; 2],
        format: MemoryFormat,
    ) -> Result<Vec<u8>> {
        self.reference.adaptive_avg_pool2d(x, output, format)
    }
    fn relu(&mut self, x: &QTensor) -> Result<Vec<u8>> {
        let t = super::bytes::relu_table(&x.qp)?;
        Ok(super::bytes::map_on_host(&x.data, &t))
    }
    fn clip(&mut self, x: &QTensor, min: f32, max: f32) -> Result<Vec<u8>> {
        let t = super::bytes::clip_table(self.reference.engine, &x.qp, min, max)?;
        Ok(super::bytes::map_on_host(&x.data, &t))
    }
}
