//! The quantized graph file: `.safetensors` with the int8 weights (`<node>.weight_q`) and float
//! biases (`<node>.bias`) of every conv and linear, and the graph — inputs, nodes with their
//! attributes, the qparams and source of every value — in the `squint.graph` metadata entry
//! (format `squint-quantized-graph-v2`).
//!
//! A conv chain saved by `QuantizedModel::save` (`squint-quantized-v1`, metadata
//! `squint.model`) is not a graph file; [`QuantizedGraph::load`] says so and
//! [`crate::pipeline::QuantizedModel::load`] reads it. Loading trusts nothing: the graph is
//! rebuilt and checked by [`Graph::new`], every qparam by [`QParams::new`], every layer by the
//! converter's own checks.

use super::super::quantized::PointSource;
use super::{QNode, QWeights, QuantizedGraph};
use crate::cpu::reference::pool::Pool2dParams;
use crate::cpu::reference::CpuCapability;
use crate::error::{Error, Result};
use crate::graph::{Activation, Conv2dOp, Graph, LinearOp, NodeSpec, Op};
use crate::io::safetensors::{StFile, StTensor};
use crate::quant::{QParams, RequantFormula, WeightQParams};
use crate::shape::ConvParams;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The format name written into every graph file.
pub const GRAPH_FORMAT: &str = "squint-quantized-graph-v2";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct SavedPool {
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
}

impl From<Pool2dParams> for SavedPool {
    fn from(p: Pool2dParams) -> Self {
        SavedPool {
            kernel: p.kernel,
            stride: p.stride,
            padding: p.padding,
            dilation: p.dilation,
            ceil_mode: p.ceil_mode,
        }
    }
}

impl From<SavedPool> for Pool2dParams {
    fn from(p: SavedPool) -> Self {
        Pool2dParams {
            kernel: p.kernel,
            stride: p.stride,
            padding: p.padding,
            dilation: p.dilation,
            ceil_mode: p.ceil_mode,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum SavedOp {
    Conv2d {
        params: ConvParams,
        relu: bool,
        w_qp: WeightQParams,
    },
    Linear {
        relu: bool,
        w_qp: WeightQParams,
    },
    Add {
        relu: bool,
    },
    Concat {
        axis: usize,
    },
    MaxPool2d {
        pool: SavedPool,
    },
    AvgPool2d {
        pool: SavedPool,
        count_include_pad: bool,
        divisor_override: Option<usize>,
    },
    AdaptiveAvgPool2d {
        output: [usize; 2],
    },
    Reshape {
        dims: Vec<usize>,
    },
    Relu,
    Clip {
        min: f32,
        max: f32,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedNode {
    name: String,
    op: SavedOp,
    inputs: Vec<String>,
    output: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedValue {
    name: String,
    qp: QParams,
    source: Option<PointSource>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedInput {
    name: String,
    dims: Vec<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedGraph {
    format: String,
    qconfig: String,
    formula: RequantFormula,
    isa: String,
    inputs: Vec<SavedInput>,
    outputs: Vec<String>,
    values: Vec<SavedValue>,
    nodes: Vec<SavedNode>,
}

fn isa_name(isa: CpuCapability) -> &'static str {
    match isa {
        CpuCapability::Default => "DEFAULT",
        CpuCapability::Avx2 => "AVX2",
        CpuCapability::Avx512 => "AVX512",
    }
}

impl QuantizedGraph {
    /// Saves the converted graph: int8 weights and float biases as tensors, the graph, qparams and
    /// sources in the `squint.graph` metadata (format `squint-quantized-graph-v2`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let g = &self.graph;
        let name = |v: crate::graph::ValueId| g.value(v).name.clone();
        let mut f = StFile::default();
        let mut nodes = Vec::new();
        for (n, q) in g.nodes().iter().zip(&self.nodes) {
            let mut weights = |w_q: &[i8], dims: Vec<usize>, bias: Option<&[f32]>| -> Result<()> {
                f.tensors.insert(
                    format!("{}.weight_q", n.name),
                    StTensor::I8(Tensor::new(dims, w_q.to_vec())?),
                );
                if let Some(b) = bias {
                    f.tensors.insert(
                        format!("{}.bias", n.name),
                        StTensor::F32(Tensor::new(vec![b.len()], b.to_vec())?),
                    );
                }
                Ok(())
            };
            let op = match (q, &n.op) {
                (QNode::Conv2d(c), _) => {
                    weights(c.w_q(), c.w_dims().to_vec(), c.bias())?;
                    SavedOp::Conv2d {
                        params: c.params(),
                        relu: c.relu(),
                        w_qp: c.w_qp().clone(),
                    }
                }
                (QNode::Linear(l), _) => {
                    weights(l.w_q(), l.w_dims().to_vec(), l.bias())?;
                    SavedOp::Linear {
                        relu: l.relu(),
                        w_qp: l.w_qp().clone(),
                    }
                }
                (QNode::Add { relu, .. }, _) => SavedOp::Add { relu: *relu },
                (QNode::Concat { axis, .. }, _) => SavedOp::Concat { axis: *axis },
                (QNode::MaxPool2d(p), _) => SavedOp::MaxPool2d { pool: (*p).into() },
                (
                    QNode::AvgPool2d(..),
                    Op::AvgPool2d {
                        pool,
                        count_include_pad,
                        divisor_override,
                    },
                ) => SavedOp::AvgPool2d {
                    pool: (*pool).into(),
                    count_include_pad: *count_include_pad,
                    divisor_override: *divisor_override,
                },
                (QNode::AdaptiveAvgPool2d(o, _), _) => SavedOp::AdaptiveAvgPool2d { output: *o },
                (QNode::Reshape, _) => SavedOp::Reshape {
                    dims: g.value(n.output).dims.clone(),
                },
                (QNode::Relu, _) => SavedOp::Relu,
                (QNode::Clip { min, max }, _) => SavedOp::Clip {
                    min: *min,
                    max: *max,
                },
                (q, op) => unreachable!("node {q:?} was converted from {op:?}"),
            };
            nodes.push(SavedNode {
                name: n.name.clone(),
                op,
                inputs: n.inputs.iter().map(|&v| name(v)).collect(),
                output: name(n.output),
            });
        }
        let meta = SavedGraph {
            format: GRAPH_FORMAT.into(),
            qconfig: self.qconfig.clone(),
            formula: self.formula,
            isa: isa_name(self.isa).into(),
            inputs: g
                .inputs()
                .iter()
                .map(|&v| SavedInput {
                    name: name(v),
                    dims: g.value(v).dims.clone(),
                })
                .collect(),
            outputs: g.outputs().iter().map(|&v| name(v)).collect(),
            values: g
                .values()
                .iter()
                .zip(&self.qps)
                .zip(&self.sources)
                .map(|((v, qp), source)| SavedValue {
                    name: v.name.clone(),
                    qp: *qp,
                    source: *source,
                })
                .collect(),
            nodes,
        };
        f.metadata.insert(
            "squint.graph".into(),
            serde_json::to_string(&meta).expect("plain data serialises"),
        );
        f.write(path)
    }

    /// Loads a graph saved by [`Self::save`].
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_st_file(&StFile::read(path)?, path)
    }

    /// Parses the bytes of a file written by [`Self::save`]; `path_for_errors` names it.
    pub fn from_bytes(bytes: &[u8], path_for_errors: &Path) -> Result<Self> {
        Self::from_st_file(
            &StFile::from_bytes(bytes, path_for_errors)?,
            path_for_errors,
        )
    }

    /// Whether the file's metadata holds a graph (format v2) rather than a conv chain (v1).
    pub fn is_graph_file(path: &Path) -> Result<bool> {
        Ok(StFile::read(path)?.metadata.contains_key("squint.graph"))
    }

    fn from_st_file(f: &StFile, path: &Path) -> Result<Self> {
        let Some(meta_s) = f.metadata.get("squint.graph") else {
            let message = if f.metadata.contains_key("squint.model") {
                "this is a conv-chain model (squint-quantized-v1), not a graph; load it with QuantizedModel::load (squint run reads both)"
            } else {
                "no 'squint.graph' metadata: not a squint quantized graph"
            };
            return Err(Error::format(path, message));
        };
        let meta: SavedGraph = serde_json::from_str(meta_s)
            .map_err(|e| Error::format(path, format!("invalid 'squint.graph' metadata: {e}")))?;
        if meta.format != GRAPH_FORMAT {
            return Err(Error::format(
                path,
                format!(
                    "unsupported format '{}', expected '{GRAPH_FORMAT}'",
                    meta.format
                ),
            ));
        }
        let bad = |m: String| Error::format(path, m);
        let isa = CpuCapability::parse(&meta.isa).map_err(|e| bad(e.to_string()))?;
        // The float graph, with each weight the float value its int8 weight stands for.
        let mut specs = Vec::with_capacity(meta.nodes.len());
        let mut weights: Vec<(String, QWeights)> = Vec::new();
        for n in meta.nodes {
            let mut int8 = |w_qp: &WeightQParams| -> Result<(Tensor<f32>, Option<Vec<f32>>)> {
                let w = f.i8(&format!("{}.weight_q", n.name), path)?;
                let out = *w
                    .dims
                    .first()
                    .ok_or_else(|| bad(format!("node '{}': a 0-D weight", n.name)))?;
                w_qp.check_channels(out)
                    .map_err(|e| bad(format!("node '{}': {e}", n.name)))?;
                let per = w.data.len() / out.max(1);
                let data = w
                    .data
                    .iter()
                    .enumerate()
                    .map(|(i, &q)| {
                        let c = if w_qp.scales.len() == 1 {
                            0
                        } else {
                            i / per.max(1)
                        };
                        (q as i32 - w_qp.zero_points[c]) as f32 * w_qp.scales[c]
                    })
                    .collect();
                let bias = match f.tensors.get(&format!("{}.bias", n.name)) {
                    Some(_) => Some(f.f32(&format!("{}.bias", n.name), path)?.data.clone()),
                    None => None,
                };
                weights.push((n.name.clone(), (w.data.clone(), w_qp.clone())));
                Ok((Tensor::new(w.dims.clone(), data)?, bias))
            };
            let relu_act = |r: bool| {
                if r {
                    Activation::Relu
                } else {
                    Activation::None
                }
            };
            let op = match &n.op {
                SavedOp::Conv2d { params, relu, w_qp } => {
                    let (weight, bias) = int8(w_qp)?;
                    Op::Conv2d(Conv2dOp {
                        weight,
                        bias,
                        params: *params,
                        act: relu_act(*relu),
                    })
                }
                SavedOp::Linear { relu, w_qp } => {
                    let (weight, bias) = int8(w_qp)?;
                    Op::Linear(LinearOp {
                        weight,
                        bias,
                        act: relu_act(*relu),
                    })
                }
                SavedOp::Add { relu } => Op::Add {
                    act: relu_act(*relu),
                },
                SavedOp::Concat { axis } => Op::Concat { axis: *axis },
                SavedOp::MaxPool2d { pool } => Op::MaxPool2d((*pool).into()),
                SavedOp::AvgPool2d {
                    pool,
                    count_include_pad,
                    divisor_override,
                } => Op::AvgPool2d {
                    pool: (*pool).into(),
                    count_include_pad: *count_include_pad,
                    divisor_override: *divisor_override,
                },
                SavedOp::AdaptiveAvgPool2d { output } => Op::AdaptiveAvgPool2d { output: *output },
                SavedOp::Reshape { dims } => Op::Reshape { dims: dims.clone() },
                SavedOp::Relu => Op::Activation(Activation::Relu),
                SavedOp::Clip { min, max } => Op::Activation(Activation::Clip {
                    min: *min,
                    max: *max,
                }),
            };
            specs.push(NodeSpec {
                name: n.name,
                op,
                inputs: n.inputs,
                output: n.output,
            });
        }
        let inputs: Vec<(&str, &[usize])> = meta
            .inputs
            .iter()
            .map(|i| (i.name.as_str(), i.dims.as_slice()))
            .collect();
        let outputs: Vec<&str> = meta.outputs.iter().map(|s| s.as_str()).collect();
        let graph = Graph::new(&inputs, specs, &outputs).map_err(|e| bad(e.to_string()))?;
        // Qparams and sources in the rebuilt graph's value order.
        let mut qps = Vec::with_capacity(graph.values().len());
        let mut sources = Vec::with_capacity(graph.values().len());
        for v in graph.values() {
            let saved = meta
                .values
                .iter()
                .find(|s| s.name == v.name)
                .ok_or_else(|| bad(format!("value '{}' has no qparams", v.name)))?;
            let qp = QParams::new(saved.qp.scale, saved.qp.zero_point, saved.qp.dtype)
                .map_err(|e| bad(format!("qparams of '{}': {e}", v.name)))?;
            qps.push(qp);
            sources.push(saved.source);
        }
        let node_weights = graph
            .nodes()
            .iter()
            .map(|n| {
                weights
                    .iter()
                    .position(|(name, _)| *name == n.name)
                    .map(|i| weights[i].1.clone())
            })
            .collect();
        QuantizedGraph::assemble(
            graph,
            meta.qconfig,
            meta.formula,
            isa,
            qps,
            sources,
            node_weights,
        )
        .map_err(|e| bad(e.to_string()))
    }
}
