//! squint's reference of ONNX Runtime's quantized CPU ops (`squint::cpu::reference::ort`)
//! against fixtures made by onnxruntime itself (`scripts/gen_ort_op_fixtures.py`, files
//! `tests/data/ort_ops/{op}.json`): every output element must equal ORT's exactly (float
//! outputs bit for bit). Each file must hold cases and every case is checked.

use serde_json::Value;
use squint::cpu::reference::cat::CatInput;
use squint::cpu::reference::ort::add::{qlinear_add_broadcast, QLinearAddKernel};
use squint::cpu::reference::ort::{concat, conv, matmul, pool, qdq};
use squint::cpu::reference::pool::Pool2dParams;
use squint::quant::{QDtype, QParams};
use squint::shape::{ConvParams, ConvShape};
use std::path::Path;

/// A fixture tensor: element type name, sizes and elements (float32 as bit patterns).
struct T {
    dtype: String,
    dims: Vec<usize>,
    data: Vec<i64>,
}

impl T {
    fn parse(v: &Value) -> T {
        T {
            dtype: v["dtype"].as_str().unwrap().to_string(),
            dims: v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect(),
            data: v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect(),
        }
    }
    fn qdtype(&self) -> QDtype {
        match self.dtype.as_str() {
            "uint8" => QDtype::QUInt8,
            "int8" => QDtype::QInt8,
            other => panic!("not 8-bit: {other}"),
        }
    }
    fn bytes(&self) -> Vec<u8> {
        let d = self.qdtype();
        self.data.iter().map(|&v| d.int_to_byte(v as i32)).collect()
    }
    fn ints(&self) -> Vec<i32> {
        self.data.iter().map(|&v| v as i32).collect()
    }
    fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.dtype, "float32");
        self.data
            .iter()
            .map(|&v| f32::from_bits(v as u32))
            .collect()
    }
    fn dims4(&self) -> [usize; 4] {
        self.dims.as_slice().try_into().unwrap()
    }
}

struct Case {
    name: String,
    attrs: Value,
    inputs: Value,
    output: T,
}

impl Case {
    fn t(&self, name: &str) -> T {
        T::parse(&self.inputs[name])
    }
    fn has(&self, name: &str) -> bool {
        self.inputs.get(name).is_some()
    }
    /// Per-tensor qparams from the scale input `s` and zero point input `z`.
    fn qp(&self, s: &str, z: &str) -> QParams {
        let zt = self.t(z);
        QParams::new(self.t(s).f32s()[0], zt.ints()[0], zt.qdtype()).unwrap()
    }
    fn ints_attr(&self, name: &str) -> Vec<usize> {
        self.attrs[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    }
    fn int_attr(&self, name: &str, default: i64) -> i64 {
        self.attrs
            .get(name)
            .map_or(default, |v| v.as_i64().unwrap())
    }
    /// Whether the case ran ORT's channels-last (NHWC) variant of the op.
    fn channels_last(&self) -> bool {
        self.int_attr("channels_last", 0) != 0
    }
    /// The 4-d input `name` in NCHW order (transposed from NHWC for channels-last cases).
    fn nchw(&self, name: &str) -> T {
        let t = self.t(name);
        if !self.channels_last() {
            return t;
        }
        let [n, h, w, c] = t.dims4();
        let mut data = vec![0; t.data.len()];
        for (i, &v) in t.data.iter().enumerate() {
            let (ci, wi, hi, ni) = (i % c, (i / c) % w, (i / (c * w)) % h, i / (c * w * h));
            data[((ni * c + ci) * h + hi) * w + wi] = v;
        }
        T {
            dtype: t.dtype,
            dims: vec![n, c, h, w],
            data,
        }
    }
    /// A result computed in NCHW order, in the case's output layout.
    fn layout(&self, y: Vec<u8>, dims: [usize; 4]) -> Vec<u8> {
        if !self.channels_last() {
            return y;
        }
        let [_, c, h, w] = dims;
        let mut out = vec![0; y.len()];
        for (i, &v) in y.iter().enumerate() {
            let (wi, hi, ci, ni) = (i % w, (i / w) % h, (i / (w * h)) % c, i / (w * h * c));
            out[((ni * h + hi) * w + wi) * c + ci] = v;
        }
        out
    }
    fn conv_shape(&self, x: &T, w: &T) -> ConvShape {
        let pads = self.ints_attr("pads");
        assert!(pads[0] == pads[2] && pads[1] == pads[3]);
        let pair = |n: &str| -> [usize; 2] { self.ints_attr(n).try_into().unwrap() };
        let params = ConvParams {
            stride: pair("strides"),
            padding: [pads[0], pads[1]],
            dilation: pair("dilations"),
            groups: self.int_attr("group", 1) as usize,
        };
        ConvShape::new(x.dims4(), w.dims4(), params).unwrap()
    }
}

/// Loads `tests/data/ort_ops/{op}.json`: its CPU flags and cases.
fn load(op: &str) -> (Vec<String>, Vec<Case>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/ort_ops/{op}.json"));
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let flags = doc["cpu_flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    let cases: Vec<Case> = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            attrs: c["attrs"].clone(),
            inputs: c["inputs"].clone(),
            output: T::parse(&c["output"]),
        })
        .collect();
    assert!(!cases.is_empty(), "{op}.json has no cases");
    (flags, cases)
}

fn weight<'a>(w: &'a T, bytes: &'a [u8], scales: &'a [f32], zps: &'a [i32]) -> conv::QWeight<'a> {
    conv::QWeight {
        data: bytes,
        dtype: w.qdtype(),
        scales,
        zero_points: zps,
    }
}

#[test]
fn quantize_linear_matches_ort_per_tensor_and_per_axis_with_ties() {
    for c in load("quantize_linear").1 {
        let x = c.t("x");
        let z = c.t("y_zero_point");
        let axis = c.int_attr("axis", 1);
        let qp = qdq::AxisQParams {
            scales: c.t("y_scale").f32s(),
            zero_points: z.ints(),
            axis: axis as usize,
            dtype: z.qdtype(),
        };
        let y = qdq::quantize_linear(&x.f32s(), &x.dims, &qp).unwrap();
        assert_eq!(y, c.output.bytes(), "{}", c.name);
    }
}

#[test]
fn dequantize_linear_matches_ort_bit_for_bit() {
    for c in load("dequantize_linear").1 {
        let x = c.t("x");
        let qp = qdq::AxisQParams {
            scales: c.t("x_scale").f32s(),
            zero_points: c.t("x_zero_point").ints(),
            axis: c.int_attr("axis", 1) as usize,
            dtype: x.qdtype(),
        };
        let y = qdq::dequantize_linear(&x.bytes(), &x.dims, &qp).unwrap();
        let bits: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = c.output.f32s().iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, want, "{}", c.name);
    }
}

#[test]
fn qlinear_conv_matches_ort_groups_strides_pads_dilation_per_channel_and_nhwc() {
    for c in load("qlinear_conv").1 {
        let (x, w) = (c.nchw("x"), c.t("w"));
        let (wb, ws, wz) = (w.bytes(), c.t("w_scale").f32s(), c.t("w_zero_point").ints());
        let bias = c.has("B").then(|| c.t("B").ints());
        let shape = c.conv_shape(&x, &w);
        let y = conv::qlinear_conv(
            &x.bytes(),
            &c.qp("x_scale", "x_zero_point"),
            &weight(&w, &wb, &ws, &wz),
            bias.as_deref(),
            &c.qp("y_scale", "y_zero_point"),
            &shape,
        )
        .unwrap();
        let dims = [shape.n, shape.c_out, shape.h_out, shape.w_out];
        assert_eq!(c.layout(y, dims), c.output.bytes(), "{}", c.name);
    }
}

#[test]
fn conv_integer_matches_ort() {
    for c in load("conv_integer").1 {
        let (x, w) = (c.t("x"), c.t("w"));
        let xz = c.t("x_zero_point");
        let (wb, wz) = (w.bytes(), c.t("w_zero_point").ints());
        let y = conv::conv_integer(
            &x.bytes(),
            xz.qdtype(),
            xz.ints()[0],
            &weight(&w, &wb, &[], &wz),
            &c.conv_shape(&x, &w),
        )
        .unwrap();
        assert_eq!(y, c.output.ints(), "{}", c.name);
    }
}

#[test]
fn qlinear_matmul_matches_ort_2d_3d_per_column() {
    for c in load("qlinear_matmul").1 {
        let (a, b) = (c.t("a"), c.t("b"));
        let (bb, bs, bz) = (b.bytes(), c.t("b_scale").f32s(), c.t("b_zero_point").ints());
        let y = matmul::qlinear_matmul(
            &a.bytes(),
            &a.dims,
            &c.qp("a_scale", "a_zero_point"),
            &weight(&b, &bb, &bs, &bz),
            &b.dims,
            &c.qp("y_scale", "y_zero_point"),
        )
        .unwrap();
        assert_eq!(y, c.output.bytes(), "{}", c.name);
    }
}

#[test]
fn matmul_integer_matches_ort() {
    for c in load("matmul_integer").1 {
        let (a, b) = (c.t("a"), c.t("b"));
        let az = c.t("a_zero_point");
        let (bb, bz) = (b.bytes(), c.t("b_zero_point").ints());
        let y = matmul::matmul_integer(
            &a.bytes(),
            &a.dims,
            az.qdtype(),
            az.ints()[0],
            &weight(&b, &bb, &[], &bz),
            &b.dims,
        )
        .unwrap();
        assert_eq!(y, c.output.ints(), "{}", c.name);
    }
}

#[test]
fn qlinear_add_matches_ort_with_the_kernel_of_the_recorded_isa_and_broadcasting() {
    let (flags, cases) = load("qlinear_add");
    let has = |f: &str| flags.iter().any(|x| x == f);
    let kernel = if has("avx2") && has("fma") {
        QLinearAddKernel::Avx2
    } else {
        QLinearAddKernel::Sse2
    };
    for c in cases {
        let (a, b) = (c.t("A"), c.t("B"));
        let (y, dims) = qlinear_add_broadcast(
            kernel,
            &a.bytes(),
            &a.dims,
            &c.qp("A_scale", "A_zero_point"),
            &b.bytes(),
            &b.dims,
            &c.qp("B_scale", "B_zero_point"),
            &c.qp("C_scale", "C_zero_point"),
        )
        .unwrap();
        assert_eq!(dims, c.output.dims, "{}", c.name);
        assert_eq!(y, c.output.bytes(), "{} ({kernel:?})", c.name);
    }
}

#[test]
fn qlinear_concat_matches_ort_copy_and_requantized_inputs() {
    for c in load("qlinear_concat").1 {
        let n = (0..).take_while(|j| c.has(&format!("X{j}"))).count();
        let xs: Vec<T> = (0..n).map(|j| c.t(&format!("X{j}"))).collect();
        let bytes: Vec<Vec<u8>> = xs.iter().map(T::bytes).collect();
        let qps: Vec<QParams> = (0..n)
            .map(|j| c.qp(&format!("X{j}_scale"), &format!("X{j}_zero_point")))
            .collect();
        let inputs: Vec<CatInput<'_>> = (0..n)
            .map(|j| CatInput {
                data: &bytes[j],
                dims: &xs[j].dims,
                qp: &qps[j],
            })
            .collect();
        let axis = c.int_attr("axis", 1) as usize;
        let (y, dims) =
            concat::qlinear_concat(&inputs, axis, &c.qp("Y_scale", "Y_zero_point")).unwrap();
        assert_eq!(dims, c.output.dims, "{}", c.name);
        assert_eq!(y, c.output.bytes(), "{}", c.name);
    }
}

#[test]
fn qlinear_average_pool_matches_ort_pads_count_include_pad_and_nhwc() {
    for c in load("qlinear_average_pool").1 {
        let x = c.nchw("x");
        let p = pool::AvgPoolParams {
            kernel: c.ints_attr("kernel_shape").try_into().unwrap(),
            stride: c.ints_attr("strides").try_into().unwrap(),
            pads: c.ints_attr("pads").try_into().unwrap(),
            count_include_pad: c.int_attr("count_include_pad", 0) != 0,
        };
        let (y, dims) = pool::qlinear_average_pool(
            &x.bytes(),
            x.dims4(),
            &c.qp("x_scale", "x_zero_point"),
            &p,
            &c.qp("y_scale", "y_zero_point"),
        )
        .unwrap();
        assert_eq!(c.layout(y, dims), c.output.bytes(), "{}", c.name);
    }
}

#[test]
fn qlinear_global_average_pool_matches_ort_nchw_and_nhwc() {
    for c in load("qlinear_global_average_pool").1 {
        let x = c.nchw("x");
        let y = pool::qlinear_global_average_pool(
            &x.bytes(),
            x.dims4(),
            &c.qp("x_scale", "x_zero_point"),
            &c.qp("y_scale", "y_zero_point"),
        )
        .unwrap();
        assert_eq!(y, c.output.bytes(), "{}", c.name);
    }
}

#[test]
fn max_pool_and_nhwc_max_pool_on_8_bit_tensors_match_ort_with_dilation_and_pads() {
    for c in load("max_pool").1 {
        let x = c.nchw("x");
        let pads = c.ints_attr("pads");
        assert!(pads[0] == pads[2] && pads[1] == pads[3]);
        let p = Pool2dParams {
            kernel: c.ints_attr("kernel_shape").try_into().unwrap(),
            stride: c.ints_attr("strides").try_into().unwrap(),
            padding: [pads[0], pads[1]],
            dilation: c.ints_attr("dilations").try_into().unwrap(),
            ceil_mode: false,
        };
        let qp = QParams::new(1.0, 0, x.qdtype()).unwrap();
        let (y, dims) = pool::max_pool(&x.bytes(), x.dims4(), &qp, &p).unwrap();
        assert_eq!(c.layout(y, dims), c.output.bytes(), "{}", c.name);
    }
}

#[test]
fn qgemm_matches_ort_transposes_bias_broadcast_alpha_and_float_output() {
    use matmul::{qgemm, QGemmAttrs, QGemmOutput};
    for c in load("qgemm").1 {
        let (a, b) = (c.t("A"), c.t("B"));
        let (bb, bs, bz) = (b.bytes(), c.t("b_scale").f32s(), c.t("b_zero_point").ints());
        let bias = c.has("C").then(|| c.t("C"));
        let bias_ints = bias.as_ref().map(T::ints);
        let attrs = QGemmAttrs {
            alpha: c.attrs["alpha"].as_f64().unwrap() as f32,
            trans_a: c.int_attr("transA", 0) != 0,
            trans_b: c.int_attr("transB", 0) != 0,
        };
        let y_qp = c.has("y_scale").then(|| c.qp("y_scale", "y_zero_point"));
        let y = qgemm(
            &a.bytes(),
            a.dims.as_slice().try_into().unwrap(),
            &c.qp("a_scale", "a_zero_point"),
            &weight(&b, &bb, &bs, &bz),
            b.dims.as_slice().try_into().unwrap(),
            bias_ints
                .as_deref()
                .map(|d| (d, bias.as_ref().unwrap().dims.as_slice())),
            &attrs,
            y_qp.as_ref(),
        )
        .unwrap();
        match y {
            QGemmOutput::Quantized(q) => assert_eq!(q, c.output.bytes(), "{}", c.name),
            QGemmOutput::Float(f) => {
                let bits: Vec<u32> = f.iter().map(|v| v.to_bits()).collect();
                let want: Vec<u32> = c.output.f32s().iter().map(|v| v.to_bits()).collect();
                assert_eq!(bits, want, "{}", c.name);
            }
        }
    }
}
