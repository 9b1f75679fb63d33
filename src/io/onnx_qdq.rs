//! Already-quantized ONNX models in the QDQ format (what ONNX Runtime's `quantize_static`
//! writes): float ops between `QuantizeLinear` / `DequantizeLinear` nodes → [`QdqModel`].
//!
//! The Q/DQ nodes are taken out, and what they say is kept beside the float graph:
//!
//! * `DequantizeLinear` of an initializer (a weight: int8/uint8, per-tensor or per-axis; a bias:
//!   int32) becomes a float initializer of the dequantized values (for the graph's shapes), and
//!   its ints, scales and zero points are kept for the node that reads it;
//! * a `QuantizeLinear` → `DequantizeLinear` pair on an activation disappears: its float value
//!   keeps the pair's qparams, and the DQ's readers read that value;
//! * the `QuantizeLinear` of a graph input gives the input's qparams, the final
//!   `DequantizeLinear` the output's.
//!
//! The float graph that remains is imported by [`super::onnx`] (names, dims, node order), so
//! every op has exactly the attributes the float importer accepts. Anything else, a dtype other
//! than 8-bit (int16, float8, int4), a Q without its DQ, a quantized value read as float, is an
//! error naming the node; nothing runs in float silently.

use super::onnx::{import_graph, parse_model};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op};
use crate::quant::{QDtype, QParams};
use onnx_protobuf::{NodeProto, TensorProto};
use std::collections::HashMap;
use std::path::Path;

#[path = "onnx_qdq_write.rs"]
pub(crate) mod write;
pub use write::{save, to_bytes};

const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;
const INT32: i32 = 6;

/// A conv's or gemm's quantized weight and int32 bias, as the QDQ model stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct QdqWeight {
    /// Stored bytes (u8 for uint8, two's-complement i8 for int8), in the ONNX layout. Shared
    /// and immutable: a backend that keeps a layer built from these bytes knows them
    /// unchanged when it still holds the same allocation (`Arc::ptr_eq`), without comparing
    /// them (a 1280x1000 classifier's 1.3 MB per run).
    pub data: std::sync::Arc<[u8]>,
    /// Element type.
    pub dtype: QDtype,
    /// One scale, or one per output channel.
    pub scales: Vec<f32>,
    /// One zero point, or one per output channel.
    pub zero_points: Vec<i32>,
    /// The int32 bias (scale `x_scale · w_scale`, zero point 0), if any.
    pub bias: Option<Vec<i32>>,
}

/// A QDQ model: the float graph (ops, names, dims) with the qparams of every activation and the
/// quantized weights of every conv and gemm.
#[derive(Debug, Clone)]
pub struct QdqModel {
    /// The float ops between the Q/DQ nodes.
    pub graph: Graph,
    /// Per value: its qparams (every value of a QDQ model is quantized).
    pub qparams: Vec<QParams>,
    /// Per node: the quantized weight and bias of a conv or gemm.
    pub weights: Vec<Option<QdqWeight>>,
}

/// Whether an ONNX model holds `QuantizeLinear` / `DequantizeLinear` nodes.
pub fn is_qdq(bytes: &[u8], path: &Path) -> Result<bool> {
    let m = parse_model(bytes, path)?;
    Ok(m.graph.as_ref().is_some_and(|g| {
        g.node
            .iter()
            .any(|n| n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear")
    }))
}

/// Reads a QDQ model.
pub fn load(path: &Path) -> Result<QdqModel> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, path)
}

/// A tensor of an 8-bit or 32-bit integer type, or float32, decoded.
enum Ints {
    Bytes(Vec<u8>, QDtype),
    I32(Vec<i32>),
    F32(Vec<f32>),
}

fn decode(t: &TensorProto) -> std::result::Result<(Vec<usize>, Ints), String> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dim in {:?}", t.dims)))
        .collect::<std::result::Result<_, _>>()?;
    let n = crate::shape::checked_numel(&dims).map_err(|e| e.to_string())?;
    let check = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(format!("{len} values for dims {dims:?}"))
        }
    };
    let raw = !t.raw_data.is_empty();
    let ints = match t.data_type {
        UINT8 | INT8 => {
            let dtype = if t.data_type == UINT8 {
                QDtype::QUInt8
            } else {
                QDtype::QInt8
            };
            let data: Vec<u8> = if raw {
                t.raw_data.clone()
            } else {
                t.int32_data.iter().map(|&v| v as u8).collect()
            };
            check(data.len())?;
            Ints::Bytes(data, dtype)
        }
        INT32 => {
            let data: Vec<i32> = if raw {
                t.raw_data
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            } else {
                t.int32_data.clone()
            };
            check(data.len())?;
            Ints::I32(data)
        }
        FLOAT => {
            let data: Vec<f32> = if raw {
                t.raw_data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            } else {
                t.float_data.clone()
            };
            check(data.len())?;
            Ints::F32(data)
        }
        other => {
            return Err(format!(
                "data type {other} is not supported in a QDQ model (squint runs 8-bit \
                 activations and weights with float32 scales and int32 biases)"
            ))
        }
    };
    Ok((dims, ints))
}

/// The scales, zero points and dtype of a Q or DQ node (inputs 1 and 2, constants).
struct NodeQParams {
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    dtype: QDtype,
    /// Zero points of an int32 bias.
    int32: bool,
}

fn node_qparams(
    n: &NodeProto,
    consts: &HashMap<&str, &TensorProto>,
) -> std::result::Result<NodeQParams, String> {
    let get = |k: usize| -> std::result::Result<(Vec<usize>, Ints), String> {
        let name = n.input.get(k).filter(|s| !s.is_empty());
        let name = name.ok_or_else(|| {
            format!(
                "input {k} (the {}) is missing",
                ["", "scale", "zero point"][k]
            )
        })?;
        let t = consts
            .get(name.as_str())
            .ok_or_else(|| format!("input '{name}' must be a constant"))?;
        decode(t).map_err(|m| format!("'{name}': {m}"))
    };
    let scales = match get(1)?.1 {
        Ints::F32(v) => v,
        _ => return Err("the scale must be float32".into()),
    };
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(format!("scale {s} is not positive and finite"));
    }
    let (zero_points, dtype, int32) = match get(2)?.1 {
        Ints::Bytes(b, d) => (b.iter().map(|&v| d.byte_to_int(v)).collect(), d, false),
        Ints::I32(v) => (v, QDtype::QInt8, true),
        Ints::F32(_) => return Err("a float zero point is not supported".into()),
    };
    if zero_points.len() != scales.len() {
        return Err(format!(
            "{} scales but {} zero points",
            scales.len(),
            zero_points.len()
        ));
    }
    Ok(NodeQParams {
        scales,
        zero_points,
        dtype,
        int32,
    })
}

fn node_name(n: &NodeProto, i: usize) -> String {
    if n.name.is_empty() {
        format!("{}_{i}", n.op_type)
    } else {
        n.name.clone()
    }
}

/// Decodes a QDQ model from its bytes; `path` names it in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<QdqModel> {
    let model = parse_model(bytes, path)?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::format(path, "the model has no graph"))?;
    let consts: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let at = |n: &NodeProto, i: usize, m: String| Error::Graph {
        at: format!("node '{}' ({})", node_name(n, i), n.op_type),
        message: m,
    };
    // Pass 1: constant DQs (weights, biases) and activation Q/DQ pairs.
    let mut float_inits: Vec<TensorProto> = Vec::new();
    let mut const_dq: HashMap<String, (Ints, NodeQParams)> = HashMap::new();
    let mut act_q: HashMap<String, (String, QParams)> = HashMap::new(); // q value -> (float, qp)
    let mut alias: HashMap<String, String> = HashMap::new(); // DQ output -> float value
    let mut qps: HashMap<String, QParams> = HashMap::new(); // float value -> qparams
    let mut removed = vec![false; g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        if !matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear") {
            continue;
        }
        removed[i] = true;
        let q = node_qparams(n, &consts).map_err(|m| at(n, i, m))?;
        let input = n.input.first().cloned().unwrap_or_default();
        let output = n.output.first().cloned().unwrap_or_default();
        let per_tensor = |q: &NodeQParams| -> std::result::Result<QParams, String> {
            if q.scales.len() != 1 || q.int32 {
                return Err("an activation needs one 8-bit scale and zero point".into());
            }
            QParams::new(q.scales[0], q.zero_points[0], q.dtype).map_err(|e| e.to_string())
        };
        match (n.op_type.as_str(), consts.get(input.as_str())) {
            ("DequantizeLinear", Some(t)) => {
                let (dims, ints) = decode(t).map_err(|m| at(n, i, format!("'{input}': {m}")))?;
                let axis = n
                    .attribute
                    .iter()
                    .find(|a| a.name == "axis")
                    .map_or(1, |a| a.i);
                if q.scales.len() > 1 && axis != 0 {
                    return Err(at(
                        n,
                        i,
                        format!("per-axis qparams along axis {axis}: only axis 0 is supported"),
                    ));
                }
                let dq: Vec<f32> = match &ints {
                    Ints::Bytes(b, d) => b
                        .iter()
                        .enumerate()
                        .map(|(k, &v)| {
                            let c = if q.scales.len() == 1 {
                                0
                            } else {
                                k * q.scales.len() / b.len()
                            };
                            (d.byte_to_int(v) - q.zero_points[c]) as f32 * q.scales[c]
                        })
                        .collect(),
                    Ints::I32(v) => v
                        .iter()
                        .enumerate()
                        .map(|(k, &x)| {
                            let c = if q.scales.len() == 1 {
                                0
                            } else {
                                k * q.scales.len() / v.len()
                            };
                            (x - q.zero_points[c]) as f32 * q.scales[c]
                        })
                        .collect(),
                    Ints::F32(_) => {
                        return Err(at(n, i, "dequantizes a float tensor".into()));
                    }
                };
                let mut t = TensorProto::new();
                t.name = output.clone();
                t.dims = dims.iter().map(|&d| d as i64).collect();
                t.data_type = FLOAT;
                t.float_data = dq;
                float_inits.push(t);
                const_dq.insert(output, (ints, q));
            }
            ("QuantizeLinear", _) => {
                let qp = per_tensor(&q).map_err(|m| at(n, i, m))?;
                qps.insert(input.clone(), qp);
                act_q.insert(output, (input, qp));
            }
            ("DequantizeLinear", None) => {
                let qp = per_tensor(&q).map_err(|m| at(n, i, m))?;
                let (float, qp_q) = act_q.get(&input).cloned().ok_or_else(|| {
                    at(
                        n,
                        i,
                        format!("'{input}' is not the output of a QuantizeLinear before it"),
                    )
                })?;
                if qp_q != qp {
                    return Err(at(
                        n,
                        i,
                        format!("its qparams {qp:?} differ from its QuantizeLinear's {qp_q:?}"),
                    ));
                }
                alias.insert(output, float);
            }
            _ => unreachable!("matched above"),
        }
    }
    // Pass 2: the float graph, reading through the aliases.
    let resolve = |s: &str| alias.get(s).cloned().unwrap_or_else(|| s.to_string());
    let mut fg = g.clone();
    fg.node = g
        .node
        .iter()
        .zip(&removed)
        .filter(|(_, r)| !**r)
        .map(|(n, _)| {
            let mut n = n.clone();
            for s in n.input.iter_mut() {
                *s = resolve(s);
            }
            n
        })
        .collect();
    fg.initializer = g
        .initializer
        .iter()
        .filter(|t| !const_dq.contains_key(&t.name))
        .cloned()
        .chain(float_inits)
        .collect();
    // Graph outputs: the float value a final DequantizeLinear reads.
    for o in fg.output.iter_mut() {
        o.name = resolve(&o.name);
    }
    let graph = import_graph(&fg, path)?;
    // Per value: qparams; per node: weights.
    let mut qparams = Vec::with_capacity(graph.values().len());
    for v in graph.values() {
        let qp = qps.get(&v.name).copied().ok_or_else(|| Error::Graph {
            at: format!("value '{}'", v.name),
            message: "has no QuantizeLinear: squint runs QDQ models whose every activation is \
                      quantized"
                .into(),
        })?;
        qparams.push(qp);
    }
    let mut weights = Vec::with_capacity(graph.nodes().len());
    for node in graph.nodes() {
        // The float importer names unnamed nodes by their index in the float graph.
        let src = fg
            .node
            .iter()
            .enumerate()
            .find(|(i, n)| node_name(n, *i) == node.name);
        let w = match (&node.op, src) {
            (Op::Conv2d(_) | Op::Linear(_), Some((i, n))) => {
                let input = |k: usize| n.input.get(k).map(|s| s.as_str()).unwrap_or("");
                let (ints, q) = const_dq.get(input(1)).ok_or_else(|| {
                    at(
                        n,
                        i,
                        "the weight is not a DequantizeLinear of a constant".into(),
                    )
                })?;
                let Ints::Bytes(data, dtype) = ints else {
                    return Err(at(n, i, "the weight is not 8-bit".into()));
                };
                let bias = match const_dq.get(input(2)) {
                    Some((Ints::I32(b), _)) => Some(b.clone()),
                    Some(_) => return Err(at(n, i, "the bias is not int32".into())),
                    None if input(2).is_empty() => None,
                    None => {
                        return Err(at(
                            n,
                            i,
                            "a float bias is not supported (ORT quantizes it to int32)".into(),
                        ))
                    }
                };
                Some(QdqWeight {
                    data: data.as_slice().into(),
                    dtype: *dtype,
                    scales: q.scales.clone(),
                    zero_points: q.zero_points.clone(),
                    bias,
                })
            }
            _ => None,
        };
        weights.push(w);
    }
    Ok(QdqModel {
        graph,
        qparams,
        weights,
    })
}
