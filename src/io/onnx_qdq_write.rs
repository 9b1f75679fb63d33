//! [`QdqModel`] → an ONNX QDQ model, in the layout ONNX Runtime's `quantize_static` writes:
//! every activation `v` (graph input or node output) goes through
//! `QuantizeLinear` → `DequantizeLinear` before its readers; every conv or gemm weight is an
//! 8-bit initializer (`{node}_W_quantized`, per-tensor or per-axis 0) behind a
//! `DequantizeLinear`, its bias an int32 initializer with scale `f32(x_scale · w_scale)` behind
//! another; a graph output is the `DequantizeLinear` of `{v}_QuantizeLinear_Input`. The float
//! ops between them are `Conv`, `Gemm` (`transB = 1`), `Add`, `Concat`, `MaxPool`,
//! `AveragePool`, `GlobalAveragePool`, `Reshape` (opset 13, IR version 8). Reading the file
//! back with [`crate::io::onnx_qdq::from_bytes`] gives the same model, and ONNX Runtime runs it.

use crate::error::{Error, Result};
use crate::graph::{Activation, Op};
use crate::io::onnx_qdq::{QdqModel, QdqWeight};
use crate::quant::{QDtype, QParams};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{self, Value as Ty};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use std::path::Path;

const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;
const INT32: i32 = 6;
const INT64: i32 = 7;

/// Writes `m` to `path` as an ONNX QDQ model (see the module docs).
pub fn save(m: &QdqModel, path: &Path) -> Result<()> {
    let bytes = to_bytes(m)?;
    crate::io::write_atomic(path, &bytes)
}

/// The ONNX QDQ model of `m`, encoded.
pub fn to_bytes(m: &QdqModel) -> Result<Vec<u8>> {
    let g = &m.graph;
    let mut w = Writer::default();
    let outputs: Vec<usize> = g.outputs().iter().map(|v| v.0).collect();
    // The float name each op writes, and the name readers read (the DQ output).
    let float_name = |i: usize| {
        let v = &g.values()[i].name;
        if outputs.contains(&i) {
            format!("{v}_QuantizeLinear_Input")
        } else {
            v.clone()
        }
    };
    let read_name = |i: usize| {
        let v = &g.values()[i].name;
        if outputs.contains(&i) {
            v.clone()
        } else {
            format!("{v}_DequantizeLinear_Output")
        }
    };
    let mut inputs = Vec::new();
    for &id in g.inputs() {
        let v = g.value(id);
        inputs.push(value_info(&float_name(id.0), &v.dims));
        w.qdq(
            &v.name,
            &float_name(id.0),
            &read_name(id.0),
            &m.qparams[id.0],
        );
    }
    for (k, node) in g.nodes().iter().enumerate() {
        let at = |msg: String| Error::Graph {
            at: format!("node '{}' ({})", node.name, node.op.kind()),
            message: msg,
        };
        let x = read_name(node.inputs[0].0);
        let out = float_name(node.output.0);
        let weight = |op: &str| {
            m.weights[k]
                .as_ref()
                .ok_or_else(|| at(format!("a {op} needs its quantized weight")))
        };
        let x_scale = m.qparams[node.inputs[0].0].scale;
        match &node.op {
            Op::Conv2d(c) => {
                no_activation(&c.act).map_err(at)?;
                let qw = weight("conv")?;
                let p = &c.params;
                let (wname, bname) = w.weight(&node.name, qw, &c.weight.dims, x_scale);
                let mut ins = vec![x, wname];
                ins.extend(bname);
                let [kh, kw] = [c.weight.dims[2] as i64, c.weight.dims[3] as i64];
                w.node(
                    "Conv",
                    &node.name,
                    ins,
                    &out,
                    vec![
                        ints("kernel_shape", &[kh, kw]),
                        ints("strides", &pair(p.stride)),
                        ints("pads", &pads(p.padding)),
                        ints("dilations", &pair(p.dilation)),
                        int("group", p.groups as i64),
                    ],
                );
            }
            Op::Linear(l) => {
                no_activation(&l.act).map_err(at)?;
                let qw = weight("gemm")?;
                let (wname, bname) = w.weight(&node.name, qw, &l.weight.dims, x_scale);
                let mut ins = vec![x, wname];
                ins.extend(bname);
                w.node("Gemm", &node.name, ins, &out, vec![int("transB", 1)]);
            }
            Op::Add { act } => {
                no_activation(act).map_err(at)?;
                let b = read_name(node.inputs[1].0);
                w.node("Add", &node.name, vec![x, b], &out, vec![]);
            }
            Op::Concat { axis } => {
                let ins = node.inputs.iter().map(|v| read_name(v.0)).collect();
                w.node(
                    "Concat",
                    &node.name,
                    ins,
                    &out,
                    vec![int("axis", *axis as i64)],
                );
            }
            Op::MaxPool2d(p) | Op::AvgPool2d { pool: p, .. } => {
                let mut attrs = vec![
                    ints("kernel_shape", &pair(p.kernel)),
                    ints("strides", &pair(p.stride)),
                    ints("pads", &pads(p.padding)),
                    int("ceil_mode", p.ceil_mode as i64),
                ];
                let op = match &node.op {
                    Op::AvgPool2d {
                        count_include_pad,
                        divisor_override,
                        ..
                    } => {
                        if divisor_override.is_some() || p.dilation != [1, 1] {
                            return Err(at("ONNX's AveragePool has no divisor override or \
                                           dilation here"
                                .into()));
                        }
                        attrs.push(int("count_include_pad", *count_include_pad as i64));
                        "AveragePool"
                    }
                    _ => {
                        attrs.push(ints("dilations", &pair(p.dilation)));
                        "MaxPool"
                    }
                };
                w.node(op, &node.name, vec![x], &out, attrs);
            }
            Op::AdaptiveAvgPool2d { output: [1, 1] } => {
                w.node("GlobalAveragePool", &node.name, vec![x], &out, vec![]);
            }
            Op::Reshape { dims } => {
                let shape = format!("{}_shape", node.name);
                let mut t = TensorProto::new();
                t.name = shape.clone();
                t.dims = vec![dims.len() as i64];
                t.data_type = INT64;
                t.int64_data = dims.iter().map(|&d| d as i64).collect();
                w.init.push(t);
                w.node("Reshape", &node.name, vec![x, shape], &out, vec![]);
            }
            other => {
                return Err(at(format!(
                    "{} has no place in a QDQ model squint writes",
                    other.kind()
                )))
            }
        }
        let v = &g.value(node.output).name;
        w.qdq(
            v,
            &out,
            &read_name(node.output.0),
            &m.qparams[node.output.0],
        );
    }
    let mut graph = GraphProto::new();
    graph.name = "squint_qdq".into();
    graph.input = inputs;
    graph.output = g
        .outputs()
        .iter()
        .map(|&id| value_info(&read_name(id.0), &g.value(id).dims))
        .collect();
    graph.node = w.nodes;
    graph.initializer = w.init;
    let mut opset = OperatorSetIdProto::new();
    opset.version = 13;
    let mut model = ModelProto::new();
    model.ir_version = 8;
    model.producer_name = "squint".into();
    model.producer_version = env!("CARGO_PKG_VERSION").into();
    model.opset_import = vec![opset];
    model.graph = Some(graph).into();
    model
        .write_to_bytes()
        .map_err(|e| Error::InvalidParameter(format!("encoding the ONNX model: {e}")))
}

fn no_activation(act: &Activation) -> std::result::Result<(), String> {
    match act {
        Activation::None => Ok(()),
        _ => Err(
            "a fused activation has no place in a QDQ model (ORT's quantizer removes it \
                  into the producer's quantization range)"
                .into(),
        ),
    }
}

/// ONNX's `[top, left, bottom, right]` pads of symmetric padding.
fn pads(p: [usize; 2]) -> [i64; 4] {
    [p[0] as i64, p[1] as i64, p[0] as i64, p[1] as i64]
}

fn pair(v: [usize; 2]) -> [i64; 2] {
    [v[0] as i64, v[1] as i64]
}

/// Nodes and initializers being written.
#[derive(Default)]
struct Writer {
    nodes: Vec<NodeProto>,
    init: Vec<TensorProto>,
}

impl Writer {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: Vec<String>,
        out: &str,
        a: Vec<AttributeProto>,
    ) {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = name.into();
        n.input = inputs;
        n.output = vec![out.into()];
        n.attribute = a;
        self.nodes.push(n);
    }

    /// `QuantizeLinear(float) → DequantizeLinear → read` with `qp`, its scale and zero point
    /// named after the value `v`.
    fn qdq(&mut self, v: &str, float: &str, read: &str, qp: &QParams) {
        let (scale, zp) = (format!("{v}_scale"), format!("{v}_zero_point"));
        self.init.push(f32_tensor(&scale, &[], &[qp.scale]));
        self.init.push(byte_tensor(
            &zp,
            &[],
            qp.dtype,
            &[qp.dtype.int_to_byte(qp.zero_point)],
        ));
        let q = format!("{v}_QuantizeLinear_Output");
        self.node(
            "QuantizeLinear",
            &format!("{v}_QuantizeLinear"),
            vec![float.into(), scale.clone(), zp.clone()],
            &q,
            vec![],
        );
        self.node(
            "DequantizeLinear",
            &format!("{v}_DequantizeLinear"),
            vec![q, scale, zp],
            read,
            vec![],
        );
    }

    /// The weight (and bias) of node `name` behind `DequantizeLinear`s: the names the op
    /// reads.
    fn weight(
        &mut self,
        name: &str,
        qw: &QdqWeight,
        dims: &[usize],
        x_scale: f32,
    ) -> (String, Option<String>) {
        let per_axis = qw.scales.len() > 1;
        let c = [qw.scales.len() as i64];
        let sdims: &[i64] = if per_axis { &c } else { &[] };
        let (q, s, z, out) = (
            format!("{name}_W_quantized"),
            format!("{name}_W_scale"),
            format!("{name}_W_zero_point"),
            format!("{name}_W"),
        );
        let wdims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        self.init.push(byte_tensor(&q, &wdims, qw.dtype, &qw.data));
        self.init.push(f32_tensor(&s, sdims, &qw.scales));
        let zps: Vec<u8> = qw
            .zero_points
            .iter()
            .map(|&v| qw.dtype.int_to_byte(v))
            .collect();
        self.init.push(byte_tensor(&z, sdims, qw.dtype, &zps));
        let axis = if per_axis {
            vec![int("axis", 0)]
        } else {
            vec![]
        };
        self.node(
            "DequantizeLinear",
            &format!("{name}_W_DequantizeLinear"),
            vec![q, s, z],
            &out,
            axis.clone(),
        );
        let bias = qw.bias.as_ref().map(|b| {
            let (q, s, z, out) = (
                format!("{name}_B_quantized"),
                format!("{name}_B_scale"),
                format!("{name}_B_zero_point"),
                format!("{name}_B"),
            );
            let mut t = TensorProto::new();
            t.name = q.clone();
            t.dims = vec![b.len() as i64];
            t.data_type = INT32;
            t.int32_data = b.clone();
            self.init.push(t);
            let scales: Vec<f32> = qw.scales.iter().map(|&ws| x_scale * ws).collect();
            self.init.push(f32_tensor(&s, sdims, &scales));
            let mut zt = TensorProto::new();
            zt.name = z.clone();
            zt.dims = sdims.to_vec();
            zt.data_type = INT32;
            zt.int32_data = vec![0; qw.scales.len()];
            self.init.push(zt);
            self.node(
                "DequantizeLinear",
                &format!("{name}_B_DequantizeLinear"),
                vec![q, s, z],
                &out,
                axis,
            );
            out
        });
        (out, bias)
    }
}

fn f32_tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = FLOAT;
    t.float_data = v.to_vec();
    t
}

fn byte_tensor(name: &str, dims: &[i64], dtype: QDtype, bytes: &[u8]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = match dtype {
        QDtype::QUInt8 => UINT8,
        QDtype::QInt8 => INT8,
    };
    t.raw_data = bytes.to_vec();
    t
}

/// An INTS attribute.
pub(crate) fn ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

/// An INT attribute.
pub(crate) fn int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = dims
        .iter()
        .map(|&d| {
            let mut x = Dimension::new();
            x.value = Some(dimension::Value::DimValue(d as i64));
            x
        })
        .collect();
    let mut t = type_proto::Tensor::new();
    t.elem_type = FLOAT;
    t.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(Ty::TensorType(t));
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = Some(ty).into();
    v
}
