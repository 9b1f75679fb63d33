//! Graph models in int8: prepare → calibrate → convert → run, like the conv chain
//! ([`crate::pipeline::PreparedModel`]) but over a [`Graph`].
//!
//! * [`prepare`]: [`PreparedGraph`], the observers and where PyTorch eager puts them.
//! * This module: [`QuantizedGraph`], its int8 nodes ([`QNode`]), conversion and the run loop.
//! * [`backend`]: the per-op interface ([`QBackend`]) a device implements; the run loop calls one
//!   method per node and never looks at the device. [`ReferenceBackend`] is the specification
//!   ([`crate::cpu::reference`]).
//! * [`gpu`]: [`GpuBackend`], the same ops on a [`crate::gpu::GpuContext`], bit for bit.
//!
//! ```
//! use squint::graph::{Activation, Conv2dOp, GraphBuilder, Op, Pool2dParams};
//! use squint::pipeline::qgraph::{PreparedGraph, ReferenceBackend};
//! use squint::pipeline::{ConvertOptions, QConfig};
//! use squint::shape::ConvParams;
//! use squint::tensor::Tensor;
//!
//! # fn main() -> squint::Result<()> {
//! let mut rng = squint::rng::Rng::new(0);
//! let mut b = GraphBuilder::new();
//! let x = b.input("x", &[1, 3, 8, 8])?;
//! let weight = Tensor::new(vec![3, 3, 3, 3], rng.normal_vec(81, 0.3))?;
//! let conv = Conv2dOp { weight, bias: None, params: ConvParams::default().padding(1), act: Activation::Relu };
//! let c = b.node("conv", Op::Conv2d(conv), &[x])?;
//! let s = b.node("add", Op::Add { act: Activation::None }, &[c, x])?;
//! let p = b.node("pool", Op::MaxPool2d(Pool2dParams::square(2)), &[s])?;
//! let graph = b.build(&[p])?;
//!
//! let mut prepared = PreparedGraph::new(graph, QConfig::qnnpack())?;
//! for _ in 0..3 {
//!     prepared.calibrate(&[Tensor::new(vec![1, 3, 8, 8], rng.uniform_vec(192))?])?;
//! }
//! let (quantized, _warnings) = prepared.convert(&ConvertOptions::default())?;
//! let input = Tensor::new(vec![1, 3, 8, 8], rng.uniform_vec(192))?;
//! let run = quantized.run(&mut ReferenceBackend::new(&quantized), &[input])?;
//! assert_eq!(run.outputs[0].dims, [1, 3, 4, 4]);
//! # Ok(()) }
//! ```

pub mod backend;
mod bytes;
mod format;
pub mod gpu;
pub mod prepare;
#[cfg(test)]
mod tests;

pub use backend::{FastCpuBackend, QBackend, QTensor, ReferenceBackend};
pub use gpu::GpuBackend;
pub use prepare::{has_observer, PreparedGraph};

use super::convert::ConvertOptions;
use super::qconfig::QConfig;
use super::quantized::{PointSource, QConv};
use crate::cpu;
use crate::cpu::reference::pool::{AvgOptions, MemoryFormat, Pool2dParams};
use crate::cpu::reference::{CpuCapability, QEngine};
use crate::error::{Error, Result};
use crate::graph::{Activation, Conv2dOp, Graph, LinearOp, Op, ValueId};
use crate::observers::weight_qparams;
use crate::quant::{self, Epilogue, QDtype, QParams, RequantFormula, WeightQParams};
use crate::tensor::Tensor;

/// The PyTorch engine whose formulas a qconfig's non-conv ops follow: `qnnpack` → QNNPACK,
/// `x86` and `fbgemm` → x86 (FBGEMM and ATen's kernels). `tflite` has none.
pub fn engine_of(qconfig: &QConfig) -> Result<QEngine> {
    engine_named(&qconfig.name)
}

fn engine_named(name: &str) -> Result<QEngine> {
    QEngine::parse(name).map_err(|_| {
        Error::InvalidParameter(format!(
            "qconfig '{name}' has no PyTorch engine for graph ops; use qnnpack, x86 or fbgemm"
        ))
    })
}

/// A converted linear layer: int8 weights `[out, in]`, float bias, the requantization formula
/// of its engine (see `docs/ops.md`).
#[derive(Debug, Clone)]
pub struct QLinear {
    w_q: Vec<i8>,
    w_dims: [usize; 2],
    w_qp: WeightQParams,
    bias: Option<Vec<f32>>,
    relu: bool,
    formula: RequantFormula,
    /// See [`QLinear::revision`].
    revision: u64,
}

impl QLinear {
    /// A process-unique number of this layer's weights and bias (as [`QConv::revision`]).
    pub fn revision(&self) -> u64 {
        self.revision
    }
    /// The int8 weights, `[out, in]` row-major.
    pub fn w_q(&self) -> &[i8] {
        &self.w_q
    }
    /// `[out_features, in_features]`.
    pub fn w_dims(&self) -> [usize; 2] {
        self.w_dims
    }
    /// The weight qparams.
    pub fn w_qp(&self) -> &WeightQParams {
        &self.w_qp
    }
    /// The float bias.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }
    /// Whether a ReLU is fused.
    pub fn relu(&self) -> bool {
        self.relu
    }
    /// The requantization formula.
    pub fn formula(&self) -> RequantFormula {
        self.formula
    }
}

/// One int8 node.
#[derive(Debug, Clone)]
pub enum QNode {
    /// A conv with its epilogue (the conv chain's [`QConv`]).
    Conv2d(QConv),
    /// A linear layer.
    Linear(QLinear),
    /// `quantized::add` / `add_relu`.
    Add {
        /// ReLU fused.
        relu: bool,
        /// How PyTorch stores the two inputs (the output takes the first's); the x86
        /// engine's vector/scalar split follows memory order, and inputs of different
        /// layouts take its scalar path everywhere (`cpu::reference::add::X86AddPath`).
        formats: [MemoryFormat; 2],
    },
    /// `quantized::cat` along `axis`.
    Concat {
        /// The axis.
        axis: usize,
        /// Channels-last when every input is (and the axis is 1).
        format: MemoryFormat,
    },
    /// Max pooling.
    MaxPool2d(Pool2dParams),
    /// Average pooling of an input PyTorch stores as the [`MemoryFormat`].
    AvgPool2d(Pool2dParams, AvgOptions, MemoryFormat),
    /// Adaptive average pooling to `[h, w]` of an input PyTorch stores as the [`MemoryFormat`].
    AdaptiveAvgPool2d([usize; 2], MemoryFormat),
    /// Flatten / reshape: the ints are unchanged.
    Reshape,
    /// Quantized ReLU.
    Relu,
    /// Quantized hardtanh / clamp.
    Clip {
        /// Lower bound (float).
        min: f32,
        /// Upper bound (float).
        max: f32,
    },
}

/// A converted graph: the float graph (names, dims, order), the qparams of every value and one
/// int8 node per graph node.
#[derive(Debug, Clone)]
pub struct QuantizedGraph {
    graph: Graph,
    qconfig: String,
    formula: RequantFormula,
    engine: QEngine,
    isa: CpuCapability,
    qps: Vec<QParams>,
    sources: Vec<Option<PointSource>>,
    nodes: Vec<QNode>,
    /// [`QuantizedGraph::fused_epilogues`], made on first use (the graph's nodes and qparams
    /// do not change after conversion).
    fused: std::sync::OnceLock<Vec<Option<Epilogue>>>,
}

/// What [`QuantizedGraph::run`] returns.
#[derive(Debug, Clone)]
pub struct GraphRun {
    /// The int8 tensor of every value, in value order.
    pub values: Vec<QTensor>,
    /// The graph outputs, dequantized.
    pub outputs: Vec<Tensor<f32>>,
}

/// A conv's or linear's int8 weights and their qparams.
pub(crate) type QWeights = (Vec<i8>, WeightQParams);

impl PreparedGraph {
    /// Converts: qparams for every value, int8 weights, an epilogue per conv. Fails with
    /// [`Error::UncalibratedPoints`] naming every point that saw no data, unless pinned or
    /// `opts.allow_uncalibrated`.
    pub fn convert(&self, opts: &ConvertOptions) -> Result<(QuantizedGraph, Vec<String>)> {
        let (qps, sources, warnings) = self.point_qparams(opts)?;
        let mut weights = Vec::with_capacity(self.graph.nodes().len());
        for n in self.graph.nodes() {
            let w = match &n.op {
                Op::Conv2d(Conv2dOp { weight, .. }) | Op::Linear(LinearOp { weight, .. }) => {
                    let out = weight.dims[0];
                    let w_qp = weight_qparams(
                        &weight.data,
                        out,
                        self.qconfig.weight_scheme,
                        QDtype::QInt8,
                    )?;
                    let w_q = cpu::reference::quantize_weight(&weight.data, &w_qp, out)?;
                    Some((w_q, w_qp))
                }
                _ => None,
            };
            weights.push(w);
        }
        let q = QuantizedGraph::assemble(
            self.graph.clone(),
            self.qconfig.name.clone(),
            self.qconfig.formula,
            CpuCapability::Avx2,
            qps,
            sources,
            weights,
        )?;
        Ok((q, warnings))
    }
}

impl QuantizedGraph {
    /// Builds the int8 nodes from the float graph (structure, dims, biases), the qparams of
    /// every value and the int8 weights of every conv and linear (`None` for other nodes).
    /// Checks what a converter guarantees: inherited qparams equal their input's, every conv's
    /// epilogue fits its qparams and weights.
    pub(crate) fn assemble(
        graph: Graph,
        qconfig: String,
        formula: RequantFormula,
        isa: CpuCapability,
        qps: Vec<QParams>,
        sources: Vec<Option<PointSource>>,
        weights: Vec<Option<QWeights>>,
    ) -> Result<Self> {
        let engine = engine_named(&qconfig)?;
        let g = &graph;
        if qps.len() != g.values().len() || sources.len() != qps.len() {
            return Err(Error::Shape(format!(
                "{} qparams for {} values",
                qps.len(),
                g.values().len()
            )));
        }
        if weights.len() != g.nodes().len() {
            return Err(Error::Shape(format!(
                "{} weight entries for {} nodes",
                weights.len(),
                g.nodes().len()
            )));
        }
        let formats = memory_formats(g);
        let mut nodes = Vec::with_capacity(g.nodes().len());
        for (n, w) in g.nodes().iter().zip(weights) {
            let at = || format!("node '{}' ({})", n.name, n.op.kind());
            let in_qp = qps[n.inputs[0].0];
            let out_qp = qps[n.output.0];
            let in_format = formats[n.inputs[0].0];
            if !has_observer(&n.op) && out_qp != in_qp {
                return Err(Error::Graph {
                    at: at(),
                    message: format!(
                        "its output keeps its input's qparams {in_qp:?}, got {out_qp:?}"
                    ),
                });
            }
            let missing = || Error::Graph {
                at: at(),
                message: "has no int8 weights".into(),
            };
            let q = match &n.op {
                Op::Conv2d(c) => {
                    let (w_q, w_qp) = w.ok_or_else(missing)?;
                    let dims = <[usize; 4]>::try_from(c.weight.dims.as_slice())
                        .map_err(|_| Error::Shape(format!("{}: weight must be 4-D", at())))?;
                    QNode::Conv2d(QConv::new(
                        &n.name,
                        w_q,
                        dims,
                        w_qp,
                        c.bias.clone(),
                        c.params,
                        c.act == Activation::Relu,
                        in_qp,
                        out_qp,
                        formula,
                        sources[n.output.0].unwrap_or(PointSource::Observed),
                    )?)
                }
                Op::Linear(l) => {
                    let (w_q, w_qp) = w.ok_or_else(missing)?;
                    let dims = <[usize; 2]>::try_from(l.weight.dims.as_slice())
                        .map_err(|_| Error::Shape(format!("{}: weight must be 2-D", at())))?;
                    if w_q.len() != dims[0] * dims[1] {
                        return Err(Error::Shape(format!(
                            "{}: {} weights for dims {dims:?}",
                            at(),
                            w_q.len()
                        )));
                    }
                    w_qp.check_channels(dims[0])?;
                    QNode::Linear(QLinear {
                        w_q,
                        w_dims: dims,
                        w_qp,
                        bias: l.bias.clone(),
                        relu: l.act == Activation::Relu,
                        formula: cpu::reference::linear::linear_formula(engine),
                        revision: super::quantized::next_revision(),
                    })
                }
                Op::Add { .. } if g.value(n.inputs[0]).dims != g.value(n.inputs[1]).dims => {
                    return Err(Error::Graph {
                        at: at(),
                        message: "a broadcasting add has no PyTorch eager int8 counterpart \
                                  here (FloatFunctional.add takes equal shapes); it runs in \
                                  ONNX Runtime QDQ models and with --qconfig ort"
                            .into(),
                    })
                }
                Op::Add { act } => QNode::Add {
                    relu: *act == Activation::Relu,
                    formats: [in_format, formats[n.inputs[1].0]],
                },
                Op::Concat { axis } => QNode::Concat {
                    axis: *axis,
                    format: formats[n.output.0],
                },
                Op::MaxPool2d(p) => QNode::MaxPool2d(*p),
                Op::AvgPool2d {
                    pool,
                    count_include_pad,
                    divisor_override,
                } => QNode::AvgPool2d(
                    *pool,
                    AvgOptions {
                        count_include_pad: *count_include_pad,
                        divisor_override: divisor_override.map(|d| d as i64),
                    },
                    in_format,
                ),
                Op::AdaptiveAvgPool2d { output } => QNode::AdaptiveAvgPool2d(*output, in_format),
                Op::Flatten { .. } | Op::Reshape { .. } => QNode::Reshape,
                Op::Activation(Activation::Relu) => QNode::Relu,
                Op::Activation(Activation::Clip { min, max }) => QNode::Clip {
                    min: *min,
                    max: *max,
                },
                Op::Activation(Activation::None) => QNode::Reshape,
            };
            nodes.push(q);
        }
        Ok(QuantizedGraph {
            graph,
            qconfig,
            formula,
            engine,
            isa,
            qps,
            sources,
            nodes,
            fused: Default::default(),
        })
    }
}

impl QuantizedGraph {
    /// The float graph (names, dims, node order).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    /// The qconfig preset it was converted with.
    pub fn qconfig_name(&self) -> &str {
        &self.qconfig
    }
    /// The requantization formula of the convs.
    pub fn formula(&self) -> RequantFormula {
        self.formula
    }
    /// The PyTorch engine whose formulas the non-conv ops follow.
    pub fn engine(&self) -> QEngine {
        self.engine
    }
    /// The CPU capability whose PyTorch results the x86 engine's add reproduces (default
    /// AVX2, which AVX-512 machines also run; see `docs/ops.md`).
    pub fn isa(&self) -> CpuCapability {
        self.isa
    }
    /// Reproduce PyTorch's results on a machine with capability `isa` (x86 engine's add).
    pub fn set_isa(&mut self, isa: CpuCapability) {
        self.isa = isa;
    }
    /// The qparams of every value, in value order.
    pub fn qparams(&self) -> &[QParams] {
        &self.qps
    }
    /// Where each value's qparams came from; `None` for values that inherit them.
    pub fn sources(&self) -> &[Option<PointSource>] {
        &self.sources
    }
    /// The int8 nodes, one per graph node, in node order.
    pub fn nodes(&self) -> &[QNode] {
        &self.nodes
    }

    /// Quantizes the float inputs, runs every node on `backend` and dequantizes the outputs.
    pub fn run(&self, backend: &mut dyn QBackend, inputs: &[Tensor<f32>]) -> Result<GraphRun> {
        let values: Vec<QTensor> = (self.run_values(backend, inputs, false)?.into_iter())
            .map(|v| v.expect("every value is computed"))
            .collect();
        let outputs = self.dequantized_outputs(&values, |t| Some(t))?;
        Ok(GraphRun { values, outputs })
    }

    /// [`QuantizedGraph::run`]'s outputs, with each ReLU or clip of
    /// [`QuantizedGraph::fused_activations`] run inside its conv where `backend` can
    /// ([`QBackend::conv2d_clamped`]): the same outputs, one pass over each such tensor
    /// instead of two, and the convs' own outputs (read by nothing else) not kept.
    pub fn run_outputs(
        &self,
        backend: &mut dyn QBackend,
        inputs: &[Tensor<f32>],
    ) -> Result<Vec<Tensor<f32>>> {
        let values = self.run_values(backend, inputs, true)?;
        self.dequantized_outputs(&values, |t| t.as_ref())
    }

    /// Every value of the graph run on `backend` (see [`QuantizedGraph::run_outputs`] for
    /// `fuse`; a fused conv's own output is `None`).
    fn run_values(
        &self,
        backend: &mut dyn QBackend,
        inputs: &[Tensor<f32>],
        fuse: bool,
    ) -> Result<Vec<Option<QTensor>>> {
        let g = &self.graph;
        let mut values = self.quantized_inputs(inputs)?;
        let fused = self.fused_epilogues(fuse);
        let mut i = 0;
        while i < g.nodes().len() {
            let (node, q) = (&g.nodes()[i], &self.nodes[i]);
            let args: Vec<&QTensor> = node
                .inputs
                .iter()
                .map(|v| values[v.0].as_ref().expect("inputs come first"))
                .collect();
            let clamped = match (q, fused.get(i).and_then(Option::as_ref)) {
                (QNode::Conv2d(c), Some(epi)) => backend.conv2d_clamped(c, args[0], epi),
                _ => Ok(None),
            };
            let clamped = clamped.map_err(|e| node_error(node, e))?;
            // A fused activation's output is its conv's, clamped.
            let step = 1 + usize::from(clamped.is_some());
            let last = &g.nodes()[i + step - 1];
            let data = match clamped {
                Some(data) => data,
                None => run_node(backend, q, &args, &self.qps[node.output.0])
                    .map_err(|e| node_error(node, e))?,
            };
            let dims = g.value(last.output).dims.clone();
            check_node_output(last, data.len(), &dims)?;
            let qp = self.qps[last.output.0];
            values[last.output.0] = Some(QTensor { data, dims, qp });
            i += step;
        }
        Ok(values)
    }

    /// The graph's outputs dequantized from `values` (`get`: a computed value).
    fn dequantized_outputs<T>(
        &self,
        values: &[T],
        get: impl Fn(&T) -> Option<&QTensor>,
    ) -> Result<Vec<Tensor<f32>>> {
        (self.graph.outputs().iter())
            .map(|o| {
                let t = get(&values[o.0]).expect("graph outputs are computed");
                Tensor::new(t.dims.clone(), quant::dequantize_slice(&t.data, &t.qp))
            })
            .collect()
    }

    /// The names of the ReLU and clip nodes that run inside the conv before them in
    /// [`QuantizedGraph::run_outputs`] and [`GpuBackend::run_resident`] (where the backend
    /// can), in node order: each that alone reads a conv's output (which is no graph output),
    /// keeps its input's qparams and whose byte table is a clamp of the ints, the clamp then
    /// merged into the conv's epilogue (`Epilogue::then_clamp`: the same ints).
    pub fn fused_activations(&self) -> Vec<String> {
        let nodes = self.graph.nodes();
        (self.fused_epilogues(true).iter().enumerate())
            .filter(|(_, e)| e.is_some())
            .map(|(i, _)| nodes[i + 1].name.clone())
            .collect()
    }

    /// Per node: for a conv whose output only the next node reads, where that node is a ReLU
    /// or clip that keeps its input's qparams and whose byte table is a clamp of the ints
    /// (and the output is no graph output), the conv's epilogue with that clamp merged
    /// (`Epilogue::then_clamp`: the same ints as the conv then the activation); `None`
    /// elsewhere, and where the activation's table is an error (the unfused node then
    /// reports it). Made once per graph. Without `fuse`, empty (every node runs apart).
    pub(crate) fn fused_epilogues(&self, fuse: bool) -> &[Option<Epilogue>] {
        match fuse {
            true => self.fused.get_or_init(|| self.make_fused_epilogues()),
            false => &[],
        }
    }

    /// [`QuantizedGraph::fused_epilogues`], computed.
    fn make_fused_epilogues(&self) -> Vec<Option<Epilogue>> {
        let (g, n) = (&self.graph, self.graph.nodes().len());
        let mut uses = vec![0usize; g.values().len()];
        for v in (g.nodes().iter().flat_map(|n| &n.inputs)).chain(g.outputs()) {
            uses[v.0] += 1;
        }
        let fused = |i: usize| -> Option<Epilogue> {
            let (node, next) = (&g.nodes()[i], g.nodes().get(i + 1)?);
            let QNode::Conv2d(conv) = &self.nodes[i] else {
                return None;
            };
            let qp = self.qps[node.output.0];
            let alone = next.inputs == [node.output] && uses[node.output.0] == 1;
            if !alone || self.qps[next.output.0] != qp {
                return None;
            }
            let table = match &self.nodes[i + 1] {
                QNode::Relu => bytes::relu_table(&qp).ok()?,
                QNode::Clip { min, max } => bytes::clip_table(self.engine, &qp, *min, *max).ok()?,
                _ => return None,
            };
            conv.epi()
                .then_clamp(bytes::table_as_clamp(&table, qp.dtype)?)
        };
        // A fused activation is no conv: the node after it starts afresh.
        let mut out: Vec<Option<Epilogue>> = vec![None; n];
        let mut i = 0;
        while i < n {
            out[i] = fused(i);
            i += 1 + usize::from(out[i].is_some());
        }
        out
    }

    /// The graph inputs checked (count, dims, finite values) and quantized, at their values'
    /// places; every other value `None`.
    fn quantized_inputs(&self, inputs: &[Tensor<f32>]) -> Result<Vec<Option<QTensor>>> {
        let g = &self.graph;
        g.check_inputs(inputs)?;
        let mut values: Vec<Option<QTensor>> = vec![None; g.values().len()];
        for (&id, x) in g.inputs().iter().zip(inputs) {
            let v = g.value(id);
            quant::check_finite(&x.data, &v.name)?;
            let qp = self.qps[id.0];
            values[id.0] = Some(QTensor {
                // Bit-equal to `quant::quantize_slice`, vectorized.
                data: crate::cpu::fast::quantize_slice(&x.data, &qp),
                dims: v.dims.clone(),
                qp,
            });
        }
        Ok(values)
    }

    /// The value named `name`.
    pub fn find(&self, name: &str) -> Option<ValueId> {
        self.graph.find(name)
    }
}

/// How PyTorch eager stores each value of a quantized graph in memory (it changes how some
/// ops round, see [`MemoryFormat`]): quantized convs return channels-last tensors; add keeps
/// its first input's format (`suggest_memory_format`), concat along channels of channels-last
/// tensors stays channels-last (`qcat_nhwc`), pools and activations keep their input's; graph
/// inputs (`QuantStub`), reshapes and linears are contiguous.
pub fn memory_formats(g: &Graph) -> Vec<MemoryFormat> {
    let mut f = vec![MemoryFormat::Contiguous; g.values().len()];
    for n in g.nodes() {
        let first = f[n.inputs[0].0];
        f[n.output.0] = match &n.op {
            Op::Conv2d(_) => MemoryFormat::ChannelsLast,
            Op::Add { .. }
            | Op::MaxPool2d(_)
            | Op::AvgPool2d { .. }
            | Op::AdaptiveAvgPool2d { .. }
            | Op::Activation(_) => first,
            Op::Concat { axis } => {
                let all_cl = n
                    .inputs
                    .iter()
                    .all(|v| f[v.0] == MemoryFormat::ChannelsLast);
                if *axis == 1 && all_cl {
                    MemoryFormat::ChannelsLast
                } else {
                    MemoryFormat::Contiguous
                }
            }
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Linear(_) => MemoryFormat::Contiguous,
        };
    }
    f
}

/// `e` as an error of `node`, naming it and its op.
fn node_error(node: &crate::graph::Node, e: Error) -> Error {
    Error::Graph {
        at: format!("node '{}' ({})", node.name, node.op.kind()),
        message: e.to_string(),
    }
}

/// An error unless a backend's output of `len` values fits `node`'s output dims.
fn check_node_output(node: &crate::graph::Node, len: usize, dims: &[usize]) -> Result<()> {
    if len != dims.iter().product::<usize>() {
        return Err(Error::Graph {
            at: format!("node '{}' ({})", node.name, node.op.kind()),
            message: format!("the backend returned {len} values for dims {dims:?}"),
        });
    }
    Ok(())
}

fn run_node(b: &mut dyn QBackend, q: &QNode, args: &[&QTensor], out: &QParams) -> Result<Vec<u8>> {
    let x = args[0];
    match q {
        QNode::Conv2d(c) => b.conv2d(c, x),
        QNode::Linear(l) => b.linear(l, x, out),
        QNode::Add { relu, formats } => b.add(x, args[1], out, *relu, *formats),
        QNode::Concat { axis, format } => b.concat(args, *axis, out, *format),
        QNode::MaxPool2d(p) => b.max_pool2d(x, p),
        QNode::AvgPool2d(p, o, f) => b.avg_pool2d(x, p, o, *f),
        QNode::AdaptiveAvgPool2d(o, f) => b.adaptive_avg_pool2d(x, *o, *f),
        QNode::Reshape => Ok(x.data.clone()),
        QNode::Relu => b.relu(x),
        QNode::Clip { min, max } => b.clip(x, *min, *max),
    }
}
