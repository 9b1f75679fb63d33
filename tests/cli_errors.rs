//! Bad inputs through the `squint` binary: every one exits with status 1 (a panic would be
//! 101) and prints exactly one line, `error: ...`, naming the problem; no output file appears.

mod hardening_support;

use hardening_support::*;
use squint::io::safetensors::{StFile, StTensor};
use squint::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn squint(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_squint"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the squint binary runs")
}

/// One row: the arguments, words the error line must contain (case-insensitive), and the
/// output files that must not exist afterwards.
struct Row {
    what: &'static str,
    args: Vec<String>,
    mentions: Vec<&'static str>,
    outputs: Vec<PathBuf>,
}

/// Checks one failing invocation; returns a description of what is wrong, if anything.
fn check(r: &Row) -> Option<String> {
    let out = squint(&r.args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let problem = if out.status.code() != Some(1) {
        Some(format!("exit status {:?}, expected 1", out.status.code()))
    } else if lines.len() != 1 {
        Some(format!("{} stderr lines, expected 1", lines.len()))
    } else if !lines[0].starts_with("error: ") {
        Some("stderr does not start with 'error: '".to_string())
    } else if let Some(m) = r
        .mentions
        .iter()
        .find(|m| !lines[0].to_lowercase().contains(&m.to_lowercase()))
    {
        Some(format!("the message lacks '{m}'"))
    } else {
        r.outputs
            .iter()
            .find(|p| p.exists())
            .map(|p| format!("{} was written", p.display()))
    };
    problem.map(|p| format!("{}: {p}\n    stderr: {}", r.what, stderr.trim_end()))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A safetensors file with a hand-written header.
fn st_raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

struct Files {
    fx: Fixture,
}

impl Files {
    fn new() -> Self {
        Files { fx: Fixture::new() }
    }

    fn p(&self, name: &str) -> String {
        s(&self.fx.path(name))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        s(&self.fx.write(name, bytes))
    }

    fn npy(&self, name: &str, dims: &[usize], data: &[f32]) -> String {
        self.write(name, &npy_f32(dims, data))
    }

    fn json(&self, name: &str, text: &str) -> String {
        self.write(name, text.as_bytes())
    }

    /// The fixture's quantized model with its metadata edited.
    fn qmodel(&self, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let path = self.fx.path(name);
        std::fs::copy(self.fx.path("model.q.safetensors"), &path).unwrap();
        edit_metadata(&path, edit);
        s(&path)
    }

    /// The fixture's weights with one tensor replaced.
    fn weights(&self, name: &str, key: &str, t: StTensor) -> String {
        let mut st = tiny_weights();
        st.tensors.insert(key.into(), t);
        let path = self.fx.path(name);
        st.write(&path).unwrap();
        s(&path)
    }

    /// `squint run --model M --input X --out OUT --device cpu` plus `extra`.
    fn run(&self, model: &str, input: &str, out: &str, extra: &[&str]) -> Vec<String> {
        let mut a = args(&["run", "--model", model, "--input", input, "--out", out]);
        a.extend(args(&["--device", "cpu"]));
        a.extend(args(extra));
        a
    }

    /// `squint quantize` of the tiny model with `model`/`weights` replaced when given.
    fn quantize(&self, model: Option<&str>, weights: Option<&str>, extra: &[&str]) -> Vec<String> {
        let model = model.map_or(self.p("model.json"), str::to_string);
        let weights = weights.map_or(self.p("weights.safetensors"), str::to_string);
        let mut a = args(&["quantize", "--model", &model, "--weights", &weights]);
        a.extend(args(&["--out", &self.p("q.out.safetensors")]));
        a.extend(args(extra));
        a
    }
}

fn conv1_json_with(key: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(TINY_JSON).unwrap();
    v["layers"][0][key] = serde_json::from_str(value).unwrap();
    v.to_string()
}

#[test]
fn every_bad_input_exits_1_with_one_error_line_and_writes_nothing() {
    let f = Files::new();
    let x = tiny_x(3);
    let x_bytes = npy_f32(&X_DIMS, &x.data);
    let qm = f.p("model.q.safetensors");
    let xin = f.p("x.npy");
    let y = f.p("y.npy");
    let calib = f.p("calib.npy");
    let q_out = f.fx.path("q.out.safetensors");
    let y_out = f.fx.path("y.npy");
    let mut x_nan = x.data.clone();
    x_nan[4] = f32::NAN;
    let mut x_inf = x.data.clone();
    x_inf[0] = f32::NEG_INFINITY;
    let mut calib_nan: Vec<f32> = (0..3).flat_map(|i| tiny_x(i).data).collect();
    calib_nan[200] = f32::NAN;
    let mut w_nan = values(108, 1);
    w_nan[5] = f32::NAN;
    let ones_model = r#"{"layers": [{"name": "conv1", "type": "conv2d"}]}"#;
    let ones_weights = {
        let path = f.fx.path("ones.safetensors");
        let mut st = StFile::default();
        st.tensors.insert(
            "conv1.weight".into(),
            StTensor::F32(Tensor::new(vec![1, 8192, 3, 3], vec![1.0; 8192 * 9]).unwrap()),
        );
        st.write(&path).unwrap();
        s(&path)
    };
    let pin_ones = f.json(
        "pin_ones.json",
        r#"{"input": {"scale": 0.01, "zero_point": 0}, "conv1": {"scale": 0.5, "zero_point": 0}}"#,
    );
    let overflow_qmodel = {
        let path = f.fx.path("q_overflow.safetensors");
        let mut st = StFile::read(f.fx.path("model.q.safetensors")).unwrap();
        st.tensors.insert(
            "conv1.weight_q".into(),
            StTensor::I8(Tensor::new(vec![4, 16384, 3, 3], vec![127; 4 * 16384 * 9]).unwrap()),
        );
        st.write(&path).unwrap();
        s(&path)
    };
    let y_ints = f.fx.path("y_ints.npy");

    let rows = vec![
        // ---- run: the input file
        Row {
            what: "truncated input .npy",
            args: f.run(
                &qm,
                &f.write("x_trunc.npy", &x_bytes[..x_bytes.len() - 7]),
                &y,
                &[],
            ),
            mentions: vec!["x_trunc.npy", "truncated"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "input that is not a .npy file",
            args: f.run(&qm, &f.write("x_text.npy", b"hello, not an array"), &y, &[]),
            mentions: vec!["x_text.npy", "not a valid .npy"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "input whose header nests brackets (found by fuzzing: hung the parser)",
            args: {
                let b = include_bytes!("data/fuzz/npy-timeout-nested-header.npy");
                f.run(&qm, &f.write("x_nested.npy", b), &y, &[])
            },
            mentions: vec!["x_nested.npy", "nested"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "int32 input",
            args: f.run(
                &qm,
                &f.write(
                    "x_i32.npy",
                    &npy_raw("<i4", false, "(1, 3, 6, 6)", &[0; 432]),
                ),
                &y,
                &[],
            ),
            mentions: vec!["x_i32.npy", "wrong dtype", "float32"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "3-D input",
            args: f.run(&qm, &f.npy("x_3d.npy", &[3, 6, 6], &x.data), &y, &[]),
            mentions: vec!["4-D", "[3, 6, 6]"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "input with a zero-sized dimension",
            args: f.run(&qm, &f.npy("x_0.npy", &[1, 3, 0, 6], &[]), &y, &[]),
            mentions: vec!["zero-sized"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "input with the wrong channel count",
            args: f.run(&qm, &f.npy("x_2ch.npy", &[1, 2, 6, 6], &[0.5; 72]), &y, &[]),
            mentions: vec!["conv1", "input channels"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "input smaller than the kernel",
            args: f.run(
                &qm,
                &f.npy("x_small.npy", &[1, 3, 2, 2], &[0.5; 12]),
                &y,
                &[],
            ),
            mentions: vec!["conv1", "exceeds the padded input"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "NaN in the input",
            args: f.run(&qm, &f.npy("x_nan.npy", &X_DIMS, &x_nan), &y, &[]),
            mentions: vec!["input", "NaN"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "-Inf in the input (fast CPU path)",
            args: {
                let mut a = f.run(&qm, &f.npy("x_inf.npy", &X_DIMS, &x_inf), &y, &[]);
                *a.last_mut().unwrap() = "cpu-fast".into();
                a
            },
            mentions: vec!["input", "inf"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "missing input file",
            args: f.run(&qm, &f.p("nope.npy"), &y, &[]),
            mentions: vec!["nope.npy"],
            outputs: vec![y_out.clone()],
        },
        // ---- run: the model file
        Row {
            what: "truncated quantized model",
            args: {
                let b = std::fs::read(&qm).unwrap();
                f.run(
                    &f.write("q_trunc.safetensors", &b[..b.len() - 9]),
                    &xin,
                    &y,
                    &[],
                )
            },
            mentions: vec!["q_trunc.safetensors", "safetensors"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "a float state_dict given as quantized model",
            args: f.run(&f.p("weights.safetensors"), &xin, &y, &[]),
            mentions: vec!["weights.safetensors", "squint.model"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "quantized model with corrupt metadata",
            args: f.run(
                &f.qmodel("q_meta.safetensors", |v| v["input_qp"] = "x".into()),
                &xin,
                &y,
                &[],
            ),
            mentions: vec!["q_meta.safetensors", "invalid 'squint.model'"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "quantized model with stride 0",
            args: f.run(
                &f.qmodel("q_stride.safetensors", |v| {
                    v["layers"][0]["params"]["stride"] = serde_json::json!([1, 0])
                }),
                &xin,
                &y,
                &[],
            ),
            mentions: vec!["conv1", "stride"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "quantized model with dilation 0",
            args: f.run(
                &f.qmodel("q_dil.safetensors", |v| {
                    v["layers"][1]["params"]["dilation"] = serde_json::json!([0, 0])
                }),
                &xin,
                &y,
                &[],
            ),
            mentions: vec!["conv2", "dilation"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "quantized model with groups not dividing the channels",
            args: f.run(
                &f.qmodel("q_groups.safetensors", |v| {
                    v["layers"][0]["params"]["groups"] = serde_json::json!(3)
                }),
                &xin,
                &y,
                &[],
            ),
            mentions: vec!["conv1", "groups"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "quantized model with an accumulator-overflow risk",
            args: f.run(&overflow_qmodel, &xin, &y, &[]),
            mentions: vec!["conv1", "overflow"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "output too large for host memory",
            args: f.run(
                &f.qmodel("q_huge.safetensors", |v| {
                    v["layers"][0]["params"]["padding"] = serde_json::json!([131072, 131072])
                }),
                &xin,
                &y,
                &[],
            ),
            mentions: vec!["conv1", "memory"],
            outputs: vec![y_out.clone()],
        },
        Row {
            what: "padding whose padded size overflows",
            args: f.run(
                &f.qmodel("q_pad.safetensors", |v| {
                    v["layers"][0]["params"]["padding"] =
                        serde_json::json!([4611686018427387904u64, 1])
                }),
                &xin,
                &y,
                &[],
            ),
            mentions: vec!["conv1", "too large"],
            outputs: vec![y_out.clone()],
        },
        // ---- run: the outputs
        Row {
            what: "output in a missing directory",
            args: f.run(&qm, &xin, &f.p("missing/y.npy"), &[]),
            mentions: vec!["missing/y.npy", "no such file"],
            outputs: vec![f.fx.path("missing")],
        },
        Row {
            what: "output path that is a directory",
            args: {
                std::fs::create_dir_all(f.fx.path("out_dir")).unwrap();
                f.run(&qm, &xin, &f.p("out_dir"), &[])
            },
            mentions: vec!["out_dir"],
            outputs: vec![],
        },
        Row {
            what: "unwritable --out-ints (the --out file is not left behind)",
            args: f.run(&qm, &xin, &y, &["--out-ints", &f.p("missing/yq.npy")]),
            mentions: vec!["missing/yq.npy"],
            outputs: vec![y_out.clone(), y_ints.clone()],
        },
        // ---- quantize: the weights file
        Row {
            what: "truncated weights",
            args: {
                let b = std::fs::read(f.fx.path("weights.safetensors")).unwrap();
                let w = f.write("w_trunc.safetensors", &b[..b.len() / 2]);
                f.quantize(None, Some(&w), &["--calib", &calib])
            },
            mentions: vec!["w_trunc.safetensors"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "weights file that is not safetensors",
            args: {
                let w = f.write("w_text.safetensors", b"{\"conv1.weight\": [1, 2]}");
                f.quantize(None, Some(&w), &["--calib", &calib])
            },
            mentions: vec!["w_text.safetensors", "safetensors"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "float16 weights",
            args: {
                let h =
                    r#"{"conv1.weight":{"dtype":"F16","shape":[4,3,3,3],"data_offsets":[0,216]}}"#;
                let w = f.write("w_f16.safetensors", &st_raw(h, &[0; 216]));
                f.quantize(None, Some(&w), &["--calib", &calib])
            },
            mentions: vec!["conv1.weight", "F16"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "int32 weights",
            args: {
                let t = StTensor::I32(Tensor::new(vec![4, 3, 3, 3], vec![1; 108]).unwrap());
                let w = f.weights("w_i32.safetensors", "conv1.weight", t);
                f.quantize(None, Some(&w), &["--calib", &calib])
            },
            mentions: vec!["conv1.weight", "expected F32"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "NaN in the weights",
            args: {
                let t = StTensor::F32(Tensor::new(vec![4, 3, 3, 3], w_nan.clone()).unwrap());
                let w = f.weights("w_nan.safetensors", "conv1.weight", t);
                f.quantize(None, Some(&w), &["--calib", &calib])
            },
            mentions: vec!["conv1.weight", "NaN"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "missing weight tensor",
            args: {
                let m = f.json("m_missing.json", r#"{"layers": [{"name": "conv9"}]}"#);
                f.quantize(Some(&m), None, &["--calib", &calib])
            },
            mentions: vec!["conv9.weight", "conv1.weight"],
            outputs: vec![q_out.clone()],
        },
        // ---- quantize: the model description
        Row {
            what: "model description that is not JSON",
            args: f.quantize(
                Some(&f.json("m_bad.json", "{\"layers\": [")),
                None,
                &["--calib", &calib],
            ),
            mentions: vec!["m_bad.json", "invalid JSON"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "stride 0 in the model description",
            args: f.quantize(
                Some(&f.json("m_s0.json", &conv1_json_with("stride", "0"))),
                None,
                &["--calib", &calib],
            ),
            mentions: vec!["conv1", "stride"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "dilation 0 in the model description",
            args: f.quantize(
                Some(&f.json("m_d0.json", &conv1_json_with("dilation", "[0, 1]"))),
                None,
                &["--calib", &calib],
            ),
            mentions: vec!["conv1", "dilation"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "groups not dividing out_channels",
            args: {
                let t = StTensor::F32(Tensor::new(vec![4, 1, 3, 3], vec![0.1; 36]).unwrap());
                let w = f.weights("w_g.safetensors", "conv1.weight", t);
                let json = conv1_json_with("groups", "3").replace("\"in_channels\":3,", "");
                f.quantize(
                    Some(&f.json("m_g.json", &json)),
                    Some(&w),
                    &["--calib", &calib],
                )
            },
            mentions: vec!["conv1", "groups", "out_channels"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "in_channels disagreeing with the weight",
            args: f.quantize(
                Some(&f.json("m_ic.json", &conv1_json_with("in_channels", "5"))),
                None,
                &["--calib", &calib],
            ),
            mentions: vec!["conv1", "in_channels"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "missing model description",
            args: f.quantize(Some(&f.p("nope.json")), None, &["--calib", &calib]),
            mentions: vec!["nope.json"],
            outputs: vec![q_out.clone()],
        },
        // ---- quantize: calibration data
        Row {
            what: "NaN in the calibration data",
            args: f.quantize(
                None,
                None,
                &["--calib", &f.npy("c_nan.npy", &[3, 1, 3, 6, 6], &calib_nan)],
            ),
            mentions: vec!["non-finite", "NaN"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "Inf in the calibration data",
            args: {
                let c = f.npy("c_inf.npy", &X_DIMS, &x_inf);
                f.quantize(None, None, &["--calib", &c])
            },
            mentions: vec!["non-finite", "inf"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "3-D calibration data",
            args: f.quantize(
                None,
                None,
                &["--calib", &f.npy("c_3d.npy", &[3, 6, 6], &x.data)],
            ),
            mentions: vec!["c_3d.npy", "NCHW"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "calibration data with the wrong channel count",
            args: f.quantize(
                None,
                None,
                &["--calib", &f.npy("c_2ch.npy", &[1, 2, 6, 6], &[0.1; 72])],
            ),
            mentions: vec!["conv1", "input channels"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "no calibration data",
            args: f.quantize(None, None, &[]),
            mentions: vec!["saw no calibration data", "input", "conv1", "conv2"],
            outputs: vec![q_out.clone()],
        },
        // ---- quantize: names and options
        Row {
            what: "unknown qconfig",
            args: f.quantize(None, None, &["--calib", &calib, "--qconfig", "tensorrt"]),
            mentions: vec!["unknown qconfig", "tensorrt", "qnnpack"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "unknown observer",
            args: f.quantize(None, None, &["--calib", &calib, "--observer", "maxmin"]),
            mentions: vec!["maxmin", "--observer", "histogram"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "per-channel observer for activations",
            args: f.quantize(
                None,
                None,
                &["--calib", &calib, "--observer", "per-channel-minmax"],
            ),
            mentions: vec!["per-channel-minmax"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "unknown requantization formula",
            args: f.quantize(None, None, &["--calib", &calib, "--formula", "magic"]),
            mentions: vec!["formula", "magic"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "pinned qparams that are not JSON",
            args: f.quantize(
                None,
                None,
                &["--calib", &calib, "--pin", &f.json("pin_bad.json", "[")],
            ),
            mentions: vec!["pin_bad.json", "invalid JSON"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "pinned scale 0",
            args: {
                let pin = f.json("pin0.json", r#"{"input": {"scale": 0, "zero_point": 0}}"#);
                f.quantize(None, None, &["--calib", &calib, "--pin", &pin])
            },
            mentions: vec!["input", "scale"],
            outputs: vec![q_out.clone()],
        },
        Row {
            what: "accumulator-overflow risk",
            args: {
                let m = f.json("m_ones.json", ones_model);
                f.quantize(Some(&m), Some(&ones_weights), &["--pin", &pin_ones])
            },
            mentions: vec!["conv1", "accumulator overflow"],
            outputs: vec![q_out.clone()],
        },
        // ---- quantize: the output
        Row {
            what: "quantize output in a missing directory",
            args: {
                let mut a = f.quantize(None, None, &["--calib", &calib]);
                let i = a.iter().position(|s| s == "--out").unwrap();
                a[i + 1] = f.p("missing2/q.safetensors");
                a
            },
            mentions: vec!["missing2/q.safetensors"],
            outputs: vec![f.fx.path("missing2")],
        },
        // ---- observe and report
        Row {
            what: "observe: NaN in a batch",
            args: args(&["observe", &f.npy("o_nan.npy", &X_DIMS, &x_nan)]),
            mentions: vec!["o_nan.npy", "NaN"],
            outputs: vec![],
        },
        Row {
            what: "observe: unknown dtype",
            args: args(&["observe", "--dtype", "int4", &xin]),
            mentions: vec!["int4", "--dtype"],
            outputs: vec![],
        },
        Row {
            what: "observe: averaging constant out of range",
            args: args(&[
                "observe",
                "--observer",
                "moving-average",
                "--averaging-constant",
                "2",
                &xin,
            ]),
            mentions: vec!["averaging constant"],
            outputs: vec![],
        },
        Row {
            what: "observe: splitting a 0-D array",
            args: args(&[
                "observe",
                "--split-axis0",
                &f.write("o_0d.npy", &npy_raw("<f4", false, "()", &[0; 4])),
            ]),
            mentions: vec!["0-D"],
            outputs: vec![],
        },
        Row {
            what: "observe: only empty batches",
            args: args(&[
                "observe",
                "--observer",
                "minmax",
                &f.npy("o_empty.npy", &[0, 4], &[]),
            ]),
            mentions: vec!["no data"],
            outputs: vec![],
        },
        Row {
            what: "report: plot into a missing directory",
            args: args(&[
                "report",
                "--model",
                &f.p("model.json"),
                "--weights",
                &f.p("weights.safetensors"),
                "--calib",
                &calib,
                "--plot",
                &f.p("missing3/h.svg"),
            ]),
            mentions: vec!["missing3/h.svg"],
            outputs: vec![f.fx.path("missing3")],
        },
        Row {
            what: "bench with more threads than the limit",
            args: args(&["bench", "--no-gpu", "--threads", "1000000"]),
            mentions: vec!["--threads", "1024", "1000000"],
            outputs: vec![],
        },
        Row {
            what: "bench with 0 threads",
            args: args(&["bench", "--no-gpu", "--threads", "0"]),
            mentions: vec!["--threads", "got 0"],
            outputs: vec![],
        },
        Row {
            what: "bench on an unknown ISA path",
            args: args(&["bench", "--no-gpu", "--isa", "avx3"]),
            mentions: vec![
                "avx3",
                "avx512-vnni, avx-vnni, avx2, neon-dotprod, portable",
            ],
            outputs: vec![],
        },
        Row {
            what: "bench --model with an unknown --isa",
            args: args(&["bench", "--no-gpu", "--isa", "sse9", "--model", "m.onnx"]),
            mentions: vec!["sse9", "avx2"],
            outputs: vec![],
        },
        Row {
            what: "unknown subcommand",
            args: args(&["quantise"]),
            mentions: vec!["quantise"],
            outputs: vec![],
        },
        Row {
            what: "a negative GPU timeout",
            args: args(&["adapters", "--gpu-timeout=-1"]),
            mentions: vec!["seconds"],
            outputs: vec![],
        },
        Row {
            what: "run on a float ONNX model instead of a converted one",
            args: args(&[
                "run",
                "--model",
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/data/models/resnet_tiny/model.onnx"
                ),
                "--input",
                &xin,
                "--out",
                &y,
                "--device",
                "cpu",
            ]),
            mentions: vec!["model.onnx", "squint quantize", "convert this one first"],
            outputs: vec![PathBuf::from(&y)],
        },
        Row {
            what: "a GPU timeout that is not a number",
            args: args(&[
                "run",
                "--gpu-timeout",
                "soon",
                "--model",
                &qm,
                "--input",
                &xin,
                "--out",
                &y,
            ]),
            mentions: vec!["seconds", "soon"],
            outputs: vec![PathBuf::from(&y)],
        },
    ];
    let failures: Vec<String> = rows.iter().filter_map(check).collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    let stray: Vec<String> =
        f.fx.files()
            .into_iter()
            .filter(|n| n.contains(".tmp"))
            .collect();
    assert!(stray.is_empty(), "temporary files left behind: {stray:?}");
}

#[test]
fn all_equal_data_quantizes_runs_and_plots() {
    let f = Files::new();
    let st = {
        let mut st = StFile::default();
        let t = |dims: Vec<usize>, v: f32| {
            let n = dims.iter().product();
            StTensor::F32(Tensor::new(dims, vec![v; n]).unwrap())
        };
        st.tensors
            .insert("conv1.weight".into(), t(vec![4, 3, 3, 3], 0.25));
        st.tensors.insert("conv1.bias".into(), t(vec![4], 0.25));
        st.tensors
            .insert("conv2.weight".into(), t(vec![2, 4, 1, 1], 0.25));
        st
    };
    let w = f.fx.path("flat.safetensors");
    st.write(&w).unwrap();
    let flat = f.npy("flat.npy", &[2, 1, 3, 6, 6], &[0.5; 216]);
    let x = f.npy("flat_x.npy", &X_DIMS, &[0.5; 108]);
    for qconfig in ["qnnpack", "x86", "tflite"] {
        let q = f.p(&format!("flat_{qconfig}.safetensors"));
        let y = f.p(&format!("flat_{qconfig}.npy"));
        let svg = f.p(&format!("flat_{qconfig}.svg"));
        let m = f.p("model.json");
        let w = s(&w);
        for a in [
            args(&[
                "quantize",
                "--model",
                &m,
                "--weights",
                &w,
                "--calib",
                &flat,
                "--qconfig",
                qconfig,
                "--out",
                &q,
                "--report",
            ]),
            args(&[
                "run",
                "--model",
                &q,
                "--input",
                &x,
                "--out",
                &y,
                "--device",
                "cpu",
                "--cross-check",
            ]),
            args(&[
                "report",
                "--model",
                &m,
                "--weights",
                &w,
                "--calib",
                &flat,
                "--qconfig",
                qconfig,
                "--plot",
                &svg,
            ]),
        ] {
            let out = squint(&a);
            assert!(
                out.status.success(),
                "{a:?}: {:?}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let y = squint::io::npy::read::<f32>(&y).unwrap();
        assert_eq!(y.dims, [1, 2, 4, 4]);
        assert!(y.data.iter().all(|v| v.is_finite()));
        assert!(Path::new(&svg).is_file());
    }
}

#[test]
fn output_too_large_for_the_gpu_is_a_device_limit_error() {
    let f = Files::new();
    let q = f.qmodel("q_huge.safetensors", |v| {
        v["layers"][0]["params"]["padding"] = serde_json::json!([16384, 16384])
    });
    let y = f.p("y.npy");
    let a = args(&[
        "run",
        "--model",
        &q,
        "--input",
        &f.p("x.npy"),
        "--out",
        &y,
        "--device",
        "gpu",
    ]);
    let out = squint(&a);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    if stderr.contains("no GPU adapter") {
        squint::gpu::testing::skip_or_fail(&stderr);
        return;
    }
    assert!(
        stderr.starts_with("error: device limit exceeded"),
        "{stderr}"
    );
    assert!(!Path::new(&y).exists());
}
