//! ONNX import: models are built here with the protobuf types, encoded to bytes and imported.

use super::*;
use crate::graph::Op;
use crate::io::onnx_qdq::write::{int, ints};
use crate::rng::Rng;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{self, Value as Ty};
use onnx_protobuf::{
    attribute_proto::AttributeType, GraphProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

fn float_tensor(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = FLOAT;
    // Half the tensors as raw little-endian bytes, half as float_data: both encodings occur.
    if data.len().is_multiple_of(2) {
        t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    } else {
        t.float_data = data;
    }
    t
}

fn int64_tensor(name: &str, data: Vec<i64>) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = vec![data.len() as i64];
    t.data_type = INT64;
    t.int64_data = data;
    t
}

fn float(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v;
    a
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = format!("/{output}/{op}");
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = vec![output.into()];
    n.attribute = attrs;
    n
}

fn value_info(name: &str, dims: &[Dimension]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = dims.to_vec();
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

fn dim(v: i64) -> Dimension {
    let mut d = Dimension::new();
    d.value = Some(dimension::Value::DimValue(v));
    d
}

fn model(
    input: ValueInfoProto,
    nodes: Vec<NodeProto>,
    init: Vec<TensorProto>,
    output: &str,
    opset: i64,
) -> Vec<u8> {
    let mut g = GraphProto::new();
    g.input = vec![input];
    g.node = nodes;
    g.initializer = init;
    g.output = vec![value_info(output, &[])];
    let mut op = OperatorSetIdProto::new();
    op.version = opset;
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.opset_import = vec![op];
    m.graph = Some(g).into();
    m.write_to_bytes().unwrap()
}

fn import(bytes: &[u8]) -> Result<Graph> {
    from_bytes(bytes, Path::new("m.onnx"))
}

/// A small ResNet-style model: conv-BN-ReLU stem, max pool, a 1x1 conv branch added back with
/// ReLU, global average pool, flatten, Gemm head.
fn resnet_like(rng: &mut Rng) -> (Vec<NodeProto>, Vec<TensorProto>) {
    let mut t = |name: &str, dims: &[i64], std: f32| {
        let n = dims.iter().product::<i64>() as usize;
        float_tensor(name, dims, rng.normal_vec(n, std))
    };
    let mut init = vec![
        t("w1", &[4, 3, 3, 3], 0.3),
        t("b1", &[4], 0.1),
        t("gamma", &[4], 1.0),
        t("beta", &[4], 0.1),
        t("mean", &[4], 0.1),
        t("w2", &[4, 4, 1, 1], 0.3),
        t("fc_w", &[5, 4], 0.3),
        t("fc_b", &[5], 0.1),
    ];
    init.push(float_tensor("var", &[4], vec![0.5, 1.0, 2.0, 0.25]));
    let nodes = vec![
        node(
            "Conv",
            &["x", "w1", "b1"],
            "c1",
            vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])],
        ),
        node(
            "BatchNormalization",
            &["c1", "gamma", "beta", "mean", "var"],
            "bn1",
            vec![float("epsilon", 1e-5)],
        ),
        node("Relu", &["bn1"], "r1", vec![]),
        node(
            "MaxPool",
            &["r1"],
            "p1",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ),
        node("Conv", &["p1", "w2"], "c2", vec![]),
        node("Add", &["c2", "p1"], "s", vec![]),
        node("Relu", &["s"], "r2", vec![]),
        node("GlobalAveragePool", &["r2"], "gap", vec![]),
        node("Flatten", &["gap"], "flat", vec![int("axis", 1)]),
        node(
            "Gemm",
            &["flat", "fc_w", "fc_b"],
            "y",
            vec![int("transB", 1)],
        ),
    ];
    (nodes, init)
}

#[test]
fn a_resnet_style_model_imports_with_bn_folded_and_relus_fused() {
    let mut rng = Rng::new(1);
    let (nodes, init) = resnet_like(&mut rng);
    let bytes = model(
        value_info("x", &[dim(1), dim(3), dim(8), dim(8)]),
        nodes,
        init.clone(),
        "y",
        17,
    );
    let g = import(&bytes).unwrap();
    let kinds: Vec<&str> = g.nodes().iter().map(|n| n.op.kind()).collect();
    assert_eq!(
        kinds,
        [
            "Conv2d",
            "MaxPool2d",
            "Conv2d",
            "Add",
            "AdaptiveAvgPool2d",
            "Reshape",
            "Linear"
        ]
    );
    let Op::Conv2d(stem) = &g.nodes()[0].op else {
        unreachable!()
    };
    assert_eq!(stem.act, Activation::Relu);
    assert_eq!(stem.params.padding, [1, 1]);
    assert!(matches!(
        g.nodes()[3].op,
        Op::Add {
            act: Activation::Relu
        }
    ));
    assert_eq!(g.value(g.outputs()[0]).dims, [1, 5]);
    assert_eq!(g.value(g.nodes()[0].output).name, "r1");

    // The folded stem equals conv then batch norm computed in f64 (up to float rounding).
    let get = |name: &str| match tensor(init.iter().find(|t| t.name == name).unwrap()).unwrap() {
        Const::F32(t) => t.data,
        _ => unreachable!(),
    };
    let (w1, b1, gamma, beta, mean, var) = (
        get("w1"),
        get("b1"),
        get("gamma"),
        get("beta"),
        get("mean"),
        get("var"),
    );
    for o in 0..4 {
        let r = 1.0 / (var[o] as f64 + 1e-5).sqrt();
        let want_b = (b1[o] as f64 - mean[o] as f64) * r * gamma[o] as f64 + beta[o] as f64;
        assert!((stem.bias.as_ref().unwrap()[o] as f64 - want_b).abs() < 1e-5);
        for k in 0..27 {
            let want = w1[o * 27 + k] as f64 * gamma[o] as f64 * r;
            assert!(
                (stem.weight.data[o * 27 + k] as f64 - want).abs() < 1e-5 * want.abs().max(1.0)
            );
        }
    }
    let x = Tensor::new(vec![1, 3, 8, 8], rng.uniform_vec(192)).unwrap();
    let y = g.run_f32(&[x]).unwrap();
    assert_eq!(y[0].dims, [1, 5]);
}

#[test]
fn a_relu_read_by_two_nodes_is_not_fused_and_identity_passes_through() {
    let init = vec![float_tensor("w", &[2, 2, 1, 1], vec![1.0, 0.0, 0.0, 1.0])];
    let nodes = vec![
        node("Conv", &["x", "w"], "c", vec![]),
        node("Identity", &["c"], "i", vec![]),
        node("Relu", &["i"], "r", vec![]),
        node("Add", &["r", "c"], "y", vec![]),
    ];
    let g = import(&model(
        value_info("x", &[dim(1), dim(2), dim(2), dim(2)]),
        nodes,
        init,
        "y",
        13,
    ))
    .unwrap();
    let kinds: Vec<&str> = g.nodes().iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["Conv2d", "Activation", "Add"]);
}

#[test]
fn reshape_with_a_constant_shape_and_matmul_import() {
    let mut shape = TensorProto::new();
    shape.data_type = INT64;
    shape.dims = vec![2];
    shape.raw_data = [1i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut value = AttributeProto::new();
    value.name = "value".into();
    value.type_ = AttributeType::TENSOR.into();
    value.t = Some(shape).into();
    let nodes = vec![
        node("Constant", &[], "shape", vec![value]),
        node("Reshape", &["x", "shape"], "flat", vec![]),
        node("MatMul", &["flat", "w"], "y", vec![]),
    ];
    let init = vec![float_tensor("w", &[8, 3], vec![0.5; 24])];
    let g = import(&model(
        value_info("x", &[dim(1), dim(2), dim(2), dim(2)]),
        nodes,
        init,
        "y",
        17,
    ))
    .unwrap();
    assert_eq!(g.value(g.nodes()[0].output).dims, [1, 8]);
    let Op::Linear(l) = &g.nodes()[1].op else {
        unreachable!()
    };
    assert_eq!(l.weight.dims, [3, 8]);
    let y = g
        .run_f32(&[Tensor::new(vec![1, 2, 2, 2], vec![1.0; 8]).unwrap()])
        .unwrap();
    assert_eq!(y[0].data, [4.0; 3]);
}

#[test]
fn unsupported_models_are_errors_naming_the_node_and_op() {
    let x = || value_info("x", &[dim(1), dim(2), dim(4), dim(4)]);
    let w = || vec![float_tensor("w", &[2, 2, 1, 1], vec![1.0; 4])];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            model(
                x(),
                vec![node("Sigmoid", &["x"], "y", vec![])],
                vec![],
                "y",
                17,
            ),
            "node '/y/Sigmoid' (Sigmoid): op 'Sigmoid' is not supported",
        ),
        (
            model(
                x(),
                vec![node(
                    "Conv",
                    &["x", "w"],
                    "y",
                    vec![ints("pads", &[0, 0, 1, 1])],
                )],
                w(),
                "y",
                17,
            ),
            "(Conv): pads [0, 0, 1, 1] are not supported",
        ),
        (
            model(
                x(),
                vec![node("Conv", &["x", "w"], "y", vec![int("foo", 1)])],
                w(),
                "y",
                17,
            ),
            "attribute 'foo' is not supported",
        ),
        (
            model(
                x(),
                vec![node("Conv", &["x", "nope"], "y", vec![])],
                w(),
                "y",
                17,
            ),
            "input 'nope' must be a constant",
        ),
        (
            model(
                x(),
                vec![node("Add", &["x", "w"], "y", vec![])],
                w(),
                "y",
                17,
            ),
            "input 'w' is a constant",
        ),
        (
            model(x(), vec![node("Relu", &["x"], "y", vec![])], vec![], "y", 9),
            "opset 9 is not supported",
        ),
        (
            model(
                value_info(
                    "x",
                    &[dim(1), dim(2), dim(4), {
                        let mut d = Dimension::new();
                        d.value = Some(dimension::Value::DimParam("w".into()));
                        d
                    }],
                ),
                vec![node("Relu", &["x"], "y", vec![])],
                vec![],
                "y",
                17,
            ),
            "dimension 3 is dynamic ('w')",
        ),
        (
            model(
                x(),
                vec![node(
                    "BatchNormalization",
                    &["x", "w", "w", "w", "w"],
                    "y",
                    vec![],
                )],
                w(),
                "y",
                17,
            ),
            "must directly follow a Conv",
        ),
        (
            model(
                x(),
                vec![node("MaxPool", &["x"], "y", vec![])],
                vec![],
                "y",
                17,
            ),
            "'kernel_shape' is required",
        ),
        (
            model(
                x(),
                vec![node("Relu", &["x"], "z", vec![])],
                vec![],
                "y",
                17,
            ),
            "graph output 'y'",
        ),
        (
            model(
                x(),
                vec![node("Reshape", &["x", "s"], "y", vec![])],
                vec![int64_tensor("s", vec![3, -1])],
                "y",
                17,
            ),
            "(Reshape): cannot reshape [1, 2, 4, 4] to [3, -1]",
        ),
        (
            model(
                x(),
                vec![
                    node("QuantizeLinear", &["x", "s", "z"], "q", vec![]),
                    node("DequantizeLinear", &["q", "s", "z"], "y", vec![]),
                ],
                vec![float_tensor("s", &[], vec![0.1])],
                "y",
                17,
            ),
            "(QuantizeLinear): this model is already quantized",
        ),
        (
            model(
                x(),
                vec![{
                    let mut n = node("Relu", &["x"], "y", vec![]);
                    n.domain = "com.microsoft".into();
                    n
                }],
                vec![],
                "y",
                17,
            ),
            "(Relu): domain 'com.microsoft' is not supported",
        ),
        (b"not an onnx file at all".to_vec(), "m.onnx"),
    ];
    for (bytes, want) in cases {
        let e = import(&bytes).expect_err(want).to_string();
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
}

#[test]
fn an_unreadable_initializer_is_an_error_only_where_it_is_used() {
    let mut odd = TensorProto::new();
    odd.name = "unused".into();
    odd.data_type = 10; // float16
    odd.dims = vec![1];
    odd.raw_data = vec![0, 0];
    let g = import(&model(
        value_info("x", &[dim(1), dim(1), dim(2), dim(2)]),
        vec![node("Relu", &["x"], "y", vec![])],
        vec![odd.clone()],
        "y",
        17,
    ));
    assert!(g.is_ok());
    let e = import(&model(
        value_info("x", &[dim(1), dim(1), dim(2), dim(2)]),
        vec![node("Conv", &["x", "unused"], "y", vec![])],
        vec![odd],
        "y",
        17,
    ))
    .unwrap_err();
    assert!(
        e.to_string().contains("data type 10 is not supported"),
        "{e}"
    );
}

#[test]
fn reshape_dims_follow_onnx_semantics() {
    assert_eq!(reshape_dims(&[2, 3, 4], &[0, -1]), Ok(vec![2, 12]));
    assert_eq!(reshape_dims(&[2, 3, 4], &[-1]), Ok(vec![24]));
    assert!(reshape_dims(&[2, 3, 4], &[-1, -1]).is_err());
    assert!(reshape_dims(&[2, 3, 4], &[5, -1]).is_err());
}

#[test]
fn truncated_and_corrupted_models_are_errors_not_panics() {
    let mut rng = Rng::new(2);
    let (nodes, init) = resnet_like(&mut rng);
    let bytes = model(
        value_info("x", &[dim(1), dim(3), dim(8), dim(8)]),
        nodes,
        init,
        "y",
        17,
    );
    let mut errors = 0;
    let mut check = |b: &[u8]| {
        let r = std::panic::catch_unwind(|| import(b));
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("import panicked on {} bytes", b.len()),
        }
    };
    for len in (0..bytes.len()).step_by(7) {
        check(&bytes[..len]);
    }
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            let i = rng.below(b.len());
            b[i] = rng.next_u64() as u8;
        }
        check(&b);
    }
    // Almost every truncation is malformed; the check above is not vacuous.
    assert!(errors > bytes.len() / 7 / 2, "{errors}");
}

/// `quant_pre_process` (ONNX Runtime) adds an `ai.onnx.ml` opset import that no node uses: the
/// model still imports; only a node in another domain is refused.
#[test]
fn an_unused_extra_opset_domain_is_accepted() {
    let bytes = model(
        value_info("x", &[dim(1), dim(2), dim(4), dim(4)]),
        vec![node("Relu", &["x"], "y", vec![])],
        vec![],
        "y",
        17,
    );
    let mut m = ModelProto::parse_from_bytes(&bytes).unwrap();
    let mut ml = OperatorSetIdProto::new();
    ml.domain = "ai.onnx.ml".into();
    ml.version = 3;
    m.opset_import.push(ml);
    let g = import(&m.write_to_bytes().unwrap()).unwrap();
    assert_eq!(g.nodes().len(), 1);
}
