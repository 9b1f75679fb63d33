//! ONNX float models → [`Graph`].
//!
//! The file is decoded by the `onnx-protobuf` crate (rust-protobuf bindings of `onnx.proto`);
//! this module only maps ONNX nodes to squint's ops. What it accepts (default domain, opset
//! [`MIN_OPSET`]..=[`MAX_OPSET`], float32 tensors, static shapes):
//!
//! | ONNX | squint |
//! |---|---|
//! | `Conv` (weight and bias initializers, symmetric `pads`, `auto_pad` NOTSET) | [`Op::Conv2d`] |
//! | `BatchNormalization` whose input is a `Conv` output read by nothing else | folded into that conv (below) |
//! | `Relu` whose input is a `Conv`, `Add` or `Gemm` output read by nothing else | that op's fused ReLU |
//! | `Relu`, `Clip` (bounds from constant inputs) | [`Op::Activation`] |
//! | `Add` of two values (numpy broadcasting) | [`Op::Add`] |
//! | `Concat` | [`Op::Concat`] |
//! | `MaxPool` (`storage_order` 0), `AveragePool` | [`Op::MaxPool2d`], [`Op::AvgPool2d`] |
//! | `GlobalAveragePool` | [`Op::AdaptiveAvgPool2d`] to 1x1 |
//! | `Flatten`, `Reshape` (constant shape) | [`Op::Reshape`] |
//! | `Gemm` (`alpha` = `beta` = 1, `transA` = 0, constant B and C), `MatMul` by a constant | [`Op::Linear`] |
//! | `Identity`, `Dropout` (inference) | the same value |
//! | `Constant` | a constant for the nodes above |
//!
//! Anything else (an op, an attribute value, a dtype, a dynamic dimension) is an error naming
//! the node and its op; nothing is half-imported.
//!
//! **BatchNorm folding** is PyTorch's `fuse_conv_bn_weights`, in float32, operation by
//! operation: `r = 1 / sqrt(var + eps)`, `w' = w * (gamma * r)` per output channel,
//! `b' = ((b - mean) * r) * gamma + beta` (a conv without bias has `b = 0`).

use crate::error::{Error, Result};
use crate::graph::{
    Activation, Conv2dOp, Graph, GraphBuilder, LinearOp, Op, Pool2dParams, ValueId,
};
use crate::shape::ConvParams;
use crate::tensor::Tensor;
use onnx_protobuf::Message;
use onnx_protobuf::{AttributeProto, ModelProto, NodeProto, TensorProto};
use std::collections::HashMap;
use std::path::Path;

/// Oldest default-domain opset accepted.
pub const MIN_OPSET: i64 = 11;
/// Newest default-domain opset accepted.
pub const MAX_OPSET: i64 = 23;

/// Ops of already-quantized models (QDQ and QOperator formats), refused with their own message.
const QUANTIZED_OPS: [&str; 9] = [
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QLinearAdd",
    "QGemm",
];

const FLOAT: i32 = 1;
const INT64: i32 = 7;

/// Reads an ONNX float model.
pub fn load(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, path)
}

/// Decodes an ONNX float model from its bytes; `path` names it in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Graph> {
    let model = parse_model(bytes, path)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::format(path, "the model has no graph"))?;
    import_graph(graph, path)
}

/// Imports a float graph (the nodes [`from_bytes`] accepts).
pub(super) fn import_graph(g: &onnx_protobuf::GraphProto, path: &Path) -> Result<Graph> {
    Importer::new(g, path).run()
}

/// Decodes a model and checks its default-domain opset.
pub(super) fn parse_model(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| Error::format(path, format!("not a valid ONNX model: {e}")))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| Error::format(path, "the model imports no default-domain opset"))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(Error::format(
            path,
            format!("opset {opset} is not supported (squint reads opsets {MIN_OPSET} to {MAX_OPSET}); re-export with `torch.onnx.export(..., opset_version=17)`"),
        ));
    }
    // Other domains may be imported (`quant_pre_process` adds `ai.onnx.ml`); a node that uses
    // one is an error naming it (`Importer::node`).
    Ok(model)
}

/// A constant tensor: float32 data, or int64 (shapes).
#[derive(Debug, Clone)]
enum Const {
    F32(Tensor<f32>),
    I64(Vec<i64>),
}

struct Importer<'a> {
    g: &'a onnx_protobuf::GraphProto,
    path: &'a Path,
    /// Constants by name; a constant squint cannot read is an error only where it is used.
    consts: HashMap<String, std::result::Result<Const, String>>,
    /// How many nodes read each value (a graph output counts as a reader).
    readers: HashMap<&'a str, usize>,
    /// The one node that reads a value, for values read once.
    sole_reader: HashMap<&'a str, usize>,
    absorbed: Vec<bool>,
    alias: HashMap<String, String>,
    b: GraphBuilder,
    ids: HashMap<String, ValueId>,
}

fn node_name(n: &NodeProto, i: usize) -> String {
    if n.name.is_empty() {
        format!("{}_{i}", n.op_type)
    } else {
        n.name.clone()
    }
}

impl<'a> Importer<'a> {
    fn new(g: &'a onnx_protobuf::GraphProto, path: &'a Path) -> Self {
        let mut consts = HashMap::new();
        for t in &g.initializer {
            consts.insert(
                t.name.clone(),
                tensor(t).map_err(|m| format!("initializer '{}': {m}", t.name)),
            );
        }
        let mut readers: HashMap<&str, usize> = HashMap::new();
        let mut sole_reader = HashMap::new();
        for (i, n) in g.node.iter().enumerate() {
            for v in n.input.iter().filter(|v| !v.is_empty()) {
                *readers.entry(v.as_str()).or_default() += 1;
                sole_reader.insert(v.as_str(), i);
            }
        }
        for o in &g.output {
            *readers.entry(o.name.as_str()).or_default() += 1;
        }
        Importer {
            g,
            path,
            consts,
            readers,
            sole_reader,
            absorbed: vec![false; g.node.len()],
            alias: HashMap::new(),
            b: GraphBuilder::new(),
            ids: HashMap::new(),
        }
    }

    fn run(mut self) -> Result<Graph> {
        for vi in &self.g.input {
            if self.consts.contains_key(&vi.name) {
                continue; // old exporters list initializers as inputs too
            }
            let dims = input_dims(vi)
                .map_err(|m| Error::format(self.path, format!("graph input '{}': {m}", vi.name)))?;
            let id = self.b.input(&vi.name, &dims)?;
            self.ids.insert(vi.name.clone(), id);
        }
        for i in 0..self.g.node.len() {
            if !self.absorbed[i] {
                let n = &self.g.node[i];
                self.node(i).map_err(|m| Error::Graph {
                    at: format!("node '{}' ({})", node_name(n, i), n.op_type),
                    message: m,
                })?;
            }
        }
        let outputs = self
            .g
            .output
            .iter()
            .map(|o| {
                self.value(&o.name).map_err(|m| Error::Graph {
                    at: format!("graph output '{}'", o.name),
                    message: m,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.b.build(&outputs)
    }

    fn resolve<'s>(&'s self, name: &'s str) -> &'s str {
        let mut n = name;
        while let Some(a) = self.alias.get(n) {
            n = a;
        }
        n
    }

    fn value(&self, name: &str) -> std::result::Result<ValueId, String> {
        let name = self.resolve(name);
        self.ids.get(name).copied().ok_or_else(|| {
            if self.consts.contains_key(name) {
                format!("input '{name}' is a constant; squint needs a computed value here")
            } else {
                format!("input '{name}' is not defined")
            }
        })
    }

    fn constant(&self, name: &str) -> std::result::Result<&Const, String> {
        match self.consts.get(self.resolve(name)) {
            Some(Ok(c)) => Ok(c),
            Some(Err(m)) => Err(m.clone()),
            None => Err(format!(
                "input '{name}' must be a constant (an initializer or a Constant node)"
            )),
        }
    }

    fn f32_const(&self, name: &str) -> std::result::Result<&Tensor<f32>, String> {
        match self.constant(name)? {
            Const::F32(t) => Ok(t),
            Const::I64(..) => Err(format!("constant '{name}' must be float32")),
        }
    }

    /// The node that alone reads `value` if it has op `op_type`, and nothing else reads it.
    fn sole_reader_of(&self, value: &str, op_type: &str) -> Option<usize> {
        if self.readers.get(value) != Some(&1) {
            return None;
        }
        let i = *self.sole_reader.get(value)?;
        (self.g.node[i].op_type == op_type && !self.absorbed[i]).then_some(i)
    }

    /// Absorbs a ReLU that alone reads `out`; returns the activation and the final output name.
    fn fuse_relu(&mut self, out: &'a str) -> (Activation, &'a str) {
        match self.sole_reader_of(out, "Relu") {
            Some(j) => {
                self.absorbed[j] = true;
                (Activation::Relu, self.g.node[j].output[0].as_str())
            }
            None => (Activation::None, out),
        }
    }

    fn add(
        &mut self,
        i: usize,
        op: Op,
        inputs: &[&str],
        output: &str,
    ) -> std::result::Result<(), String> {
        let ids = inputs
            .iter()
            .map(|v| self.value(v))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let name = node_name(&self.g.node[i], i);
        let id = self
            .b
            .node_named(&name, op, &ids, output)
            .map_err(|e| match e {
                Error::Graph { message, .. } => message,
                e => e.to_string(),
            })?;
        self.ids.insert(output.to_string(), id);
        Ok(())
    }

    fn node(&mut self, i: usize) -> std::result::Result<(), String> {
        let g = self.g;
        let n = &g.node[i];
        if QUANTIZED_OPS.contains(&n.op_type.as_str()) {
            return Err(format!(
                "this model is already quantized ({} is an ONNX Runtime QDQ / QOperator op): \
                 `squint quantize` takes float models, and running already-quantized models as \
                 they are is not supported yet",
                n.op_type
            ));
        }
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(format!("domain '{}' is not supported", n.domain));
        }
        if n.output.len() != 1 && !matches!(n.op_type.as_str(), "Dropout" | "BatchNormalization") {
            return Err(format!("expected 1 output, got {}", n.output.len()));
        }
        let attrs = Attrs(&n.attribute);
        let input = |k: usize| -> std::result::Result<&str, String> {
            n.input
                .get(k)
                .map(|s| s.as_str())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("input {k} is missing"))
        };
        let out = n.output[0].as_str();
        match n.op_type.as_str() {
            "Constant" => {
                attrs.only(&["value"])?;
                let t = attrs
                    .get("value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or("only a tensor `value` is supported")?;
                self.consts.insert(out.to_string(), Ok(tensor(t)?));
            }
            "Identity" | "Dropout" => {
                if n.input.iter().skip(1).any(|s| !s.is_empty()) {
                    return Err(
                        "ratio and training_mode inputs are not supported (export in eval mode)"
                            .into(),
                    );
                }
                if n.output.len() > 1 && self.readers.contains_key(n.output[1].as_str()) {
                    return Err(
                        "the dropout mask output is read; only inference is supported".into(),
                    );
                }
                let src = input(0)?.to_string();
                if let Some(c) = self.consts.get(&src).cloned() {
                    self.consts.insert(out.to_string(), c);
                } else {
                    self.alias.insert(out.to_string(), src);
                }
            }
            "Conv" => {
                attrs.only(&[
                    "kernel_shape",
                    "strides",
                    "pads",
                    "dilations",
                    "group",
                    "auto_pad",
                ])?;
                if let Some(p) = attrs.string("auto_pad")? {
                    if p != "NOTSET" {
                        return Err(format!(
                            "auto_pad '{p}' is not supported; export with explicit pads"
                        ));
                    }
                }
                let mut weight = self.f32_const(input(1)?)?.clone();
                if weight.dims.len() != 4 {
                    return Err(format!(
                        "only 2-D convs (4-D weights) are supported, got weight {:?}",
                        weight.dims
                    ));
                }
                if let Some(k) = attrs.ints("kernel_shape")? {
                    if k != [weight.dims[2] as i64, weight.dims[3] as i64] {
                        return Err(format!(
                            "kernel_shape {k:?} does not match weight {:?}",
                            weight.dims
                        ));
                    }
                }
                let mut bias = match n.input.get(2).filter(|s| !s.is_empty()) {
                    Some(b) => Some(self.f32_const(b)?.data.clone()),
                    None => None,
                };
                let params = ConvParams {
                    stride: attrs.pair("strides", 1)?,
                    padding: attrs.pads()?,
                    dilation: attrs.pair("dilations", 1)?,
                    groups: attrs.usize("group", 1)?,
                };
                let mut conv_out = out;
                if let Some(j) = self.sole_reader_of(out, "BatchNormalization") {
                    let bn = &g.node[j];
                    fold_batch_norm(self, bn, &mut weight, &mut bias).map_err(|m| {
                        format!("folding BatchNormalization '{}': {m}", node_name(bn, j))
                    })?;
                    self.absorbed[j] = true;
                    conv_out = bn.output[0].as_str();
                }
                let (act, fused_out) = self.fuse_relu(conv_out);
                let op = Op::Conv2d(Conv2dOp {
                    weight,
                    bias,
                    params,
                    act,
                });
                self.add(i, op, &[input(0)?], fused_out)?;
            }
            "BatchNormalization" => {
                return Err("a BatchNormalization must directly follow a Conv whose output nothing else reads (it is folded into the conv)".into());
            }
            "Relu" => self.add(i, Op::Activation(Activation::Relu), &[input(0)?], out)?,
            "Clip" => {
                attrs.only(&[])?;
                let bound = |k: usize| -> std::result::Result<Option<f32>, String> {
                    match n.input.get(k).filter(|s| !s.is_empty()) {
                        None => Ok(None),
                        Some(name) => match self.f32_const(name)?.data.as_slice() {
                            [v] => Ok(Some(*v)),
                            d => Err(format!(
                                "clip bound '{name}' must be a scalar, got {} values",
                                d.len()
                            )),
                        },
                    }
                };
                let act = match (bound(1)?, bound(2)?) {
                    (Some(min), Some(max)) => Activation::Clip { min, max },
                    (Some(0.0), None) => Activation::Relu,
                    (None, None) => return Err("a Clip without bounds is not supported".into()),
                    _ => return Err("a Clip needs both bounds (or only min = 0)".into()),
                };
                self.add(i, Op::Activation(act), &[input(0)?], out)?;
            }
            "Add" => {
                attrs.only(&[])?;
                let (act, fused_out) = self.fuse_relu(out);
                self.add(i, Op::Add { act }, &[input(0)?, input(1)?], fused_out)?;
            }
            "Concat" => {
                attrs.only(&["axis"])?;
                let axis = attrs.int("axis").ok_or("attribute 'axis' is required")?;
                let rank = self.rank(input(0)?)?;
                let axis = normalize_axis(axis, rank)?;
                let ins: Vec<&str> = n.input.iter().map(|s| s.as_str()).collect();
                self.add(i, Op::Concat { axis }, &ins, out)?;
            }
            "MaxPool" | "AveragePool" => {
                let max = n.op_type == "MaxPool";
                let allowed: &[&str] = if max {
                    &[
                        "kernel_shape",
                        "strides",
                        "pads",
                        "dilations",
                        "ceil_mode",
                        "auto_pad",
                        "storage_order",
                    ]
                } else {
                    &[
                        "kernel_shape",
                        "strides",
                        "pads",
                        "dilations",
                        "ceil_mode",
                        "auto_pad",
                        "count_include_pad",
                    ]
                };
                attrs.only(allowed)?;
                if let Some(p) = attrs.string("auto_pad")? {
                    if p != "NOTSET" {
                        return Err(format!(
                            "auto_pad '{p}' is not supported; export with explicit pads"
                        ));
                    }
                }
                if attrs.usize("storage_order", 0)? != 0 {
                    return Err("storage_order 1 (column major) is not supported".into());
                }
                let kernel = attrs.pair("kernel_shape", 0)?;
                if kernel.contains(&0) {
                    return Err("attribute 'kernel_shape' is required".into());
                }
                let pool = Pool2dParams {
                    kernel,
                    stride: attrs.pair("strides", 1)?,
                    padding: attrs.pads()?,
                    dilation: attrs.pair("dilations", 1)?,
                    ceil_mode: attrs.usize("ceil_mode", 0)? != 0,
                };
                let op = if max {
                    Op::MaxPool2d(pool)
                } else {
                    Op::AvgPool2d {
                        pool,
                        count_include_pad: attrs.usize("count_include_pad", 0)? != 0,
                        divisor_override: None,
                    }
                };
                self.add(i, op, &[input(0)?], out)?;
            }
            "GlobalAveragePool" => {
                attrs.only(&[])?;
                self.add(
                    i,
                    Op::AdaptiveAvgPool2d { output: [1, 1] },
                    &[input(0)?],
                    out,
                )?;
            }
            "Flatten" => {
                attrs.only(&["axis"])?;
                let dims = self.dims(input(0)?)?;
                let axis = normalize_axis(attrs.int("axis").unwrap_or(1), dims.len() + 1)?;
                let dims = vec![dims[..axis].iter().product(), dims[axis..].iter().product()];
                self.add(i, Op::Reshape { dims }, &[input(0)?], out)?;
            }
            "Reshape" => {
                attrs.only(&["allowzero"])?;
                if attrs.usize("allowzero", 0)? != 0 {
                    return Err("allowzero 1 is not supported".into());
                }
                let shape = match self.constant(input(1)?)? {
                    Const::I64(v) => v.clone(),
                    Const::F32(_) => return Err("the shape input must be int64".into()),
                };
                let dims = reshape_dims(&self.dims(input(0)?)?, &shape)?;
                self.add(i, Op::Reshape { dims }, &[input(0)?], out)?;
            }
            "Gemm" => {
                attrs.only(&["alpha", "beta", "transA", "transB"])?;
                if attrs.float("alpha", 1.0) != 1.0 || attrs.float("beta", 1.0) != 1.0 {
                    return Err("only alpha = beta = 1 is supported".into());
                }
                if attrs.usize("transA", 0)? != 0 {
                    return Err("transA = 1 is not supported".into());
                }
                let b = self.f32_const(input(1)?)?;
                let weight = if attrs.usize("transB", 0)? != 0 {
                    b.clone()
                } else {
                    transpose(b)?
                };
                let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
                    None => None,
                    Some(c) => {
                        let c = self.f32_const(c)?;
                        if c.data.len() != weight.dims[0] {
                            return Err(format!(
                                "bias C must have one value per output ({}), got shape {:?}",
                                weight.dims[0], c.dims
                            ));
                        }
                        Some(c.data.clone())
                    }
                };
                let (act, fused_out) = self.fuse_relu(out);
                self.add(
                    i,
                    Op::Linear(LinearOp { weight, bias, act }),
                    &[input(0)?],
                    fused_out,
                )?;
            }
            "MatMul" => {
                attrs.only(&[])?;
                let weight = transpose(self.f32_const(input(1)?)?)?;
                self.add(
                    i,
                    Op::Linear(LinearOp {
                        weight,
                        bias: None,
                        act: Activation::None,
                    }),
                    &[input(0)?],
                    out,
                )?;
            }
            other => return Err(format!("op '{other}' is not supported")),
        }
        Ok(())
    }

    fn dims(&self, v: &str) -> std::result::Result<Vec<usize>, String> {
        let id = self.value(v)?;
        Ok(self.b.value(id).map(|v| v.dims.clone()).unwrap_or_default())
    }

    fn rank(&self, v: &str) -> std::result::Result<usize, String> {
        Ok(self.dims(v)?.len())
    }
}

fn fold_batch_norm(
    imp: &Importer<'_>,
    bn: &NodeProto,
    weight: &mut Tensor<f32>,
    bias: &mut Option<Vec<f32>>,
) -> std::result::Result<(), String> {
    let attrs = Attrs(&bn.attribute);
    attrs.only(&["epsilon", "momentum", "training_mode", "spatial"])?;
    if attrs.usize("training_mode", 0)? != 0 {
        return Err("training_mode is not supported".into());
    }
    if bn.input.len() != 5 {
        return Err(format!("expected 5 inputs, got {}", bn.input.len()));
    }
    let eps = attrs.float("epsilon", 1e-5);
    let c = weight.dims[0];
    let get = |k: usize| -> std::result::Result<&[f32], String> {
        let t = imp.f32_const(&bn.input[k])?;
        if t.data.len() != c {
            return Err(format!(
                "'{}' has {} values for {c} channels",
                bn.input[k],
                t.data.len()
            ));
        }
        Ok(&t.data)
    };
    let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
    let per_channel = weight.data.len() / c;
    let b = bias.get_or_insert_with(|| vec![0.0; c]);
    for o in 0..c {
        let r = 1.0f32 / (var[o] + eps).sqrt();
        let scale = gamma[o] * r;
        for w in &mut weight.data[o * per_channel..(o + 1) * per_channel] {
            *w *= scale;
        }
        b[o] = ((b[o] - mean[o]) * r) * gamma[o] + beta[o];
    }
    Ok(())
}

fn transpose(t: &Tensor<f32>) -> std::result::Result<Tensor<f32>, String> {
    let [r, c] = <[usize; 2]>::try_from(t.dims.as_slice())
        .map_err(|_| format!("the weight must be 2-D, got {:?}", t.dims))?;
    let data = (0..c)
        .flat_map(|j| (0..r).map(move |i| t.data[i * c + j]))
        .collect();
    Tensor::new(vec![c, r], data).map_err(|e| e.to_string())
}

fn normalize_axis(axis: i64, rank: usize) -> std::result::Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// ONNX Reshape's shape semantics (allowzero = 0): `0` copies the input's dim, one `-1` is
/// inferred.
fn reshape_dims(input: &[usize], shape: &[i64]) -> std::result::Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut dims = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (k, &s) in shape.iter().enumerate() {
        match s {
            0 => dims.push(*input.get(k).ok_or(format!(
                "shape {shape:?}: 0 at {k} has no input dim to copy"
            ))?),
            -1 if infer.is_none() => {
                infer = Some(k);
                dims.push(1);
            }
            s if s > 0 => dims.push(s as usize),
            _ => return Err(format!("shape {shape:?} is not supported")),
        }
    }
    let known: usize = dims.iter().product();
    if let Some(k) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {shape:?}"));
        }
        dims[k] = total / known;
    }
    Ok(dims)
}

fn input_dims(vi: &onnx_protobuf::ValueInfoProto) -> std::result::Result<Vec<usize>, String> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
    use onnx_protobuf::type_proto::Value as Ty;
    let t = match vi.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Ty::TensorType(t)) => t,
        _ => return Err("must be a tensor".into()),
    };
    if t.elem_type != FLOAT {
        return Err(format!(
            "must be float32 (ONNX type 1), got type {}",
            t.elem_type
        ));
    }
    let shape = t.shape.as_ref().ok_or("has no shape")?;
    shape
        .dim
        .iter()
        .enumerate()
        .map(|(k, d)| match &d.value {
            Some(Dim::DimValue(v)) if *v > 0 => Ok(*v as usize),
            Some(Dim::DimParam(p)) => Err(format!(
                "dimension {k} is dynamic ('{p}'); squint needs static shapes: export without dynamic_axes"
            )),
            _ => Err(format!("dimension {k} is unknown or not positive")),
        })
        .collect()
}

fn tensor(t: &TensorProto) -> std::result::Result<Const, String> {
    if !t.external_data.is_empty() {
        return Err("external data is not supported; save the model in one file".into());
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dim in {:?}", t.dims)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let n = crate::shape::checked_numel(&dims).map_err(|e| e.to_string())?;
    let raw = |size: usize| -> std::result::Result<Option<&[u8]>, String> {
        if t.raw_data.is_empty() {
            return Ok(None);
        }
        if t.raw_data.len() != n * size {
            return Err(format!(
                "raw data has {} bytes for {n} elements",
                t.raw_data.len()
            ));
        }
        Ok(Some(&t.raw_data))
    };
    match t.data_type {
        FLOAT => {
            let data: Vec<f32> = match raw(4)? {
                Some(r) => r
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                None => t.float_data.clone(),
            };
            if data.len() != n {
                return Err(format!("{} values for dims {dims:?}", data.len()));
            }
            if let Some(k) = data.iter().position(|v| !v.is_finite()) {
                return Err(format!(
                    "holds a non-finite value ({}) at flat index {k}",
                    data[k]
                ));
            }
            Ok(Const::F32(Tensor { dims, data }))
        }
        INT64 => {
            let data: Vec<i64> = match raw(8)? {
                Some(r) => r
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
                None => t.int64_data.clone(),
            };
            if data.len() != n {
                return Err(format!("{} values for dims {dims:?}", data.len()));
            }
            Ok(Const::I64(data))
        }
        other => Err(format!(
            "data type {other} is not supported (float32 = 1 and int64 = 7 are)"
        )),
    }
}

/// A node's attributes.
struct Attrs<'a>(&'a [AttributeProto]);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }
    /// Fails on any attribute not in `allowed`.
    fn only(&self, allowed: &[&str]) -> std::result::Result<(), String> {
        match self.0.iter().find(|a| !allowed.contains(&a.name.as_str())) {
            Some(a) => Err(format!("attribute '{}' is not supported", a.name)),
            None => Ok(()),
        }
    }
    fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|a| a.i)
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
    fn usize(&self, name: &str, default: usize) -> std::result::Result<usize, String> {
        match self.int(name) {
            None => Ok(default),
            Some(v) => {
                usize::try_from(v).map_err(|_| format!("attribute '{name}' = {v} must be >= 0"))
            }
        }
    }
    fn string(&self, name: &str) -> std::result::Result<Option<String>, String> {
        self.get(name)
            .map(|a| {
                String::from_utf8(a.s.clone())
                    .map_err(|_| format!("attribute '{name}' is not UTF-8"))
            })
            .transpose()
    }
    fn ints(&self, name: &str) -> std::result::Result<Option<Vec<i64>>, String> {
        Ok(self.get(name).map(|a| a.ints.clone()))
    }
    /// A 2-D attribute (`strides`, `dilations`, `kernel_shape`), `default` when absent.
    fn pair(&self, name: &str, default: usize) -> std::result::Result<[usize; 2], String> {
        match self.ints(name)? {
            None => Ok([default, default]),
            Some(v) => match v.as_slice() {
                [a, b] if *a >= 0 && *b >= 0 => Ok([*a as usize, *b as usize]),
                _ => Err(format!(
                    "attribute '{name}' must be two non-negative values, got {v:?}"
                )),
            },
        }
    }
    /// ONNX pads `[top, left, bottom, right]`, which must be symmetric.
    fn pads(&self) -> std::result::Result<[usize; 2], String> {
        match self.ints("pads")? {
            None => Ok([0, 0]),
            Some(v) => match v.as_slice() {
                [t, l, b, r] if t == b && l == r && *t >= 0 && *l >= 0 => {
                    Ok([*t as usize, *l as usize])
                }
                _ => Err(format!(
                    "pads {v:?} are not supported: squint needs symmetric, non-negative padding"
                )),
            },
        }
    }
}

#[cfg(test)]
#[path = "onnx_tests.rs"]
mod tests;
