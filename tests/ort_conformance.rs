//! The ONNX backend conformance tests (onnx 1.22.0's node test data, vendored by
//! `scripts/fetch_onnx_conformance.py`) for the 8-bit ops of squint's ONNX Runtime reference
//! (`squint::cpu::reference::ort`): every output equals the expected tensor exactly.

use onnx_protobuf::{Message, ModelProto, NodeProto, TensorProto};
use squint::cpu::reference::ort::{conv, matmul, qdq};
use squint::quant::{QDtype, QParams};
use squint::shape::{ConvParams, ConvShape};
use std::path::{Path, PathBuf};

const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;
const INT32: i32 = 6;

/// A decoded TensorProto: dims, ONNX data type, and its elements as raw little-endian bytes.
struct T {
    dims: Vec<usize>,
    ty: i32,
    raw: Vec<u8>,
}

impl T {
    fn decode(t: &TensorProto) -> T {
        let dims = t.dims.iter().map(|&d| d as usize).collect();
        let raw = if !t.raw_data.is_empty() {
            t.raw_data.clone()
        } else {
            match t.data_type {
                FLOAT => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                UINT8 | INT8 => t.int32_data.iter().map(|&v| v as u8).collect(),
                INT32 => t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                other => panic!("data type {other} in {}", t.name),
            }
        };
        T {
            dims,
            ty: t.data_type,
            raw,
        }
    }
    fn dtype(&self) -> QDtype {
        match self.ty {
            UINT8 => QDtype::QUInt8,
            INT8 => QDtype::QInt8,
            other => panic!("not an 8-bit tensor: type {other}"),
        }
    }
    fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.ty, FLOAT);
        self.raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
    fn i32s(&self) -> Vec<i32> {
        assert_eq!(self.ty, INT32);
        self.raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
    /// The 8-bit elements as ints.
    fn ints(&self) -> Vec<i32> {
        let d = self.dtype();
        self.raw.iter().map(|&b| d.byte_to_int(b)).collect()
    }
}

struct Case {
    node: NodeProto,
    inputs: Vec<Option<T>>,
    output: T,
}

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/onnx_conformance")
        .join(name)
}

fn load(name: &str) -> Case {
    let d = dir(name);
    let model = ModelProto::parse_from_bytes(&std::fs::read(d.join("model.onnx")).unwrap())
        .unwrap_or_else(|e| panic!("{name}/model.onnx: {e}"));
    let node = model.graph.node[0].clone();
    let read = |file: &str| {
        let bytes = std::fs::read(d.join("test_data_set_0").join(file)).unwrap();
        T::decode(&TensorProto::parse_from_bytes(&bytes).unwrap())
    };
    // The data set holds one file per graph input, in order; optional node inputs the graph
    // does not feed are empty names.
    let mut k = 0;
    let inputs = node
        .input
        .iter()
        .map(|n| {
            (!n.is_empty()).then(|| {
                k += 1;
                read(&format!("input_{}.pb", k - 1))
            })
        })
        .collect();
    Case {
        node,
        inputs,
        output: read("output_0.pb"),
    }
}

impl Case {
    fn input(&self, i: usize) -> Option<&T> {
        self.inputs.get(i).and_then(|t| t.as_ref())
    }
    fn attr_i(&self, name: &str) -> Option<i64> {
        self.node
            .attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.i)
    }
    fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.node
            .attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.clone())
    }
    /// Scale and zero point inputs `s`, `z` as per-axis qparams (zero point 0 when absent).
    fn axis_qparams(&self, s: usize, z: usize, dtype: QDtype, rank: usize) -> qdq::AxisQParams {
        let scales = self.input(s).unwrap().f32s();
        let zero_points = match self.input(z) {
            Some(t) => t.ints(),
            None => vec![0; scales.len()],
        };
        let axis = self.attr_i("axis").unwrap_or(1);
        qdq::AxisQParams {
            scales,
            zero_points,
            axis: if axis < 0 { axis + rank as i64 } else { axis } as usize,
            dtype,
        }
    }
    fn qparams(&self, s: usize, z: usize) -> QParams {
        let zt = self.input(z).unwrap();
        QParams::new(self.input(s).unwrap().f32s()[0], zt.ints()[0], zt.dtype()).unwrap()
    }
    fn conv_shape(&self, x: &T, w: &T) -> ConvShape {
        let pads = self.attr_ints("pads").unwrap_or(vec![0; 4]);
        assert!(pads[0] == pads[2] && pads[1] == pads[3], "asymmetric pads");
        let pair = |name: &str| {
            let v = self.attr_ints(name).unwrap_or(vec![1, 1]);
            [v[0] as usize, v[1] as usize]
        };
        let params = ConvParams {
            stride: pair("strides"),
            padding: [pads[0] as usize, pads[1] as usize],
            dilation: pair("dilations"),
            groups: self.attr_i("group").unwrap_or(1) as usize,
        };
        let d4 = |d: &[usize]| -> [usize; 4] { d.try_into().unwrap() };
        ConvShape::new(d4(&x.dims), d4(&w.dims), params).unwrap()
    }
}

#[test]
fn quantizelinear_per_tensor_and_per_axis_match_onnx() {
    for name in ["test_quantizelinear", "test_quantizelinear_axis"] {
        let c = load(name);
        let x = c.input(0).unwrap();
        let qp = c.axis_qparams(1, 2, c.output.dtype(), x.dims.len());
        let y = qdq::quantize_linear(&x.f32s(), &x.dims, &qp).unwrap();
        assert_eq!(y, c.output.raw, "{name}");
    }
}

#[test]
fn dequantizelinear_per_tensor_and_per_axis_match_onnx() {
    for name in ["test_dequantizelinear", "test_dequantizelinear_axis"] {
        let c = load(name);
        let x = c.input(0).unwrap();
        let qp = c.axis_qparams(1, 2, x.dtype(), x.dims.len());
        let y = qdq::dequantize_linear(&x.raw, &x.dims, &qp).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&c.output.f32s()), "{name}");
    }
}

#[test]
fn qlinearconv_matches_onnx() {
    let c = load("test_qlinearconv");
    let (x, w) = (c.input(0).unwrap(), c.input(3).unwrap());
    let w_scales = c.input(4).unwrap().f32s();
    let w_zps = c.input(5).unwrap().ints();
    let weight = conv::QWeight {
        data: &w.raw,
        dtype: w.dtype(),
        scales: &w_scales,
        zero_points: &w_zps,
    };
    let bias = c.input(8).map(|b| b.i32s());
    let y = conv::qlinear_conv(
        &x.raw,
        &c.qparams(1, 2),
        &weight,
        bias.as_deref(),
        &c.qparams(6, 7),
        &c.conv_shape(x, w),
    )
    .unwrap();
    assert_eq!(y, c.output.raw);
}

#[test]
fn convinteger_with_and_without_padding_matches_onnx() {
    for name in [
        "test_convinteger_with_padding",
        "test_convinteger_without_padding",
    ] {
        let c = load(name);
        let (x, w) = (c.input(0).unwrap(), c.input(1).unwrap());
        let x_zp = c.input(2).map_or(0, |t| t.ints()[0]);
        let w_zps = c.input(3).map_or(vec![0], |t| t.ints());
        let weight = conv::QWeight {
            data: &w.raw,
            dtype: w.dtype(),
            scales: &[],
            zero_points: &w_zps,
        };
        let y = conv::conv_integer(&x.raw, x.dtype(), x_zp, &weight, &c.conv_shape(x, w)).unwrap();
        assert_eq!(y, c.output.i32s(), "{name}");
    }
}

#[test]
fn qlinearmatmul_2d_3d_uint8_int8_match_onnx() {
    for name in [
        "test_qlinearmatmul_2D_uint8_float32",
        "test_qlinearmatmul_2D_int8_float32",
        "test_qlinearmatmul_3D_uint8_float32",
        "test_qlinearmatmul_3D_int8_float32",
    ] {
        let c = load(name);
        let (a, b) = (c.input(0).unwrap(), c.input(3).unwrap());
        let b_scales = c.input(4).unwrap().f32s();
        let b_zps = c.input(5).unwrap().ints();
        let weight = conv::QWeight {
            data: &b.raw,
            dtype: b.dtype(),
            scales: &b_scales,
            zero_points: &b_zps,
        };
        let y = matmul::qlinear_matmul(
            &a.raw,
            &a.dims,
            &c.qparams(1, 2),
            &weight,
            &b.dims,
            &c.qparams(6, 7),
        )
        .unwrap();
        assert_eq!(y, c.output.raw, "{name}");
    }
}

#[test]
fn matmulinteger_matches_onnx() {
    let c = load("test_matmulinteger");
    let (a, b) = (c.input(0).unwrap(), c.input(1).unwrap());
    let a_zp = c.input(2).map_or(0, |t| t.ints()[0]);
    let b_zps = c.input(3).map_or(vec![0], |t| t.ints());
    let weight = conv::QWeight {
        data: &b.raw,
        dtype: b.dtype(),
        scales: &[],
        zero_points: &b_zps,
    };
    let y = matmul::matmul_integer(&a.raw, &a.dims, a.dtype(), a_zp, &weight, &b.dims).unwrap();
    assert_eq!(y, c.output.i32s());
}
