//! The command line end to end: `observe` against PyTorch's observers, `golden` on every public
//! case, `demo --json`, and quantize → run with a cross-check.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn squint() -> Command {
    Command::new(env!("CARGO_BIN_EXE_squint"))
}

fn golden() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    assert!(d.join("README.md").is_file(), "missing {}", d.display());
    d
}

fn gpu_required() -> bool {
    squint::gpu::testing::require_gpu()
}

fn has_gpu() -> bool {
    squint::gpu::testing::available()
}

/// The backends (`vulkan`, `gl`, ...) of the adapters this machine has, each once.
fn gpu_backends() -> Vec<String> {
    let mut v: Vec<String> = squint::gpu::list_adapters(&Default::default())
        .into_iter()
        .map(|a| a.backend)
        .collect();
    v.sort();
    v.dedup();
    v
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("squint runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn observe_agrees_with_every_pytorch_observer_configuration() {
    let dir = golden().join("observers");
    let q: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("qparams.json")).unwrap()).unwrap();
    let observers = q["observers"].as_object().unwrap();
    assert_eq!(observers.len(), 8);
    for (name, e) in observers {
        let o = &e["observer"];
        let mut cmd = squint();
        cmd.arg("observe").arg("--split-axis0");
        cmd.args([
            "--observer",
            match o["class"].as_str().unwrap() {
                "MinMaxObserver" => "minmax",
                "MovingAverageMinMaxObserver" => "moving-average",
                "HistogramObserver" => "histogram",
                c => panic!("unexpected class {c}"),
            },
        ]);
        cmd.args(["--dtype", o["dtype"].as_str().unwrap()]);
        if o["qscheme"].as_str().unwrap().contains("symmetric") {
            cmd.arg("--symmetric");
        }
        if o["reduce_range"].as_bool().unwrap() {
            cmd.arg("--reduce-range");
        }
        if let Some(c) = o.get("averaging_constant").and_then(Value::as_f64) {
            cmd.args(["--averaging-constant", &c.to_string()]);
        }
        cmd.arg(dir.join("batches.npy"));
        let out: Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
        let f = |v: &Value| v.as_f64().unwrap() as f32;
        assert_eq!(
            f(&out["scale"]).to_bits(),
            f(&e["scale"]).to_bits(),
            "{name} scale"
        );
        assert_eq!(out["zero_point"], e["zero_point"], "{name} zero point");
        assert_eq!(
            f(&out["min"]).to_bits(),
            f(&e["min_val"]).to_bits(),
            "{name} min"
        );
        assert_eq!(
            f(&out["max"]).to_bits(),
            f(&e["max_val"]).to_bits(),
            "{name} max"
        );
        assert_eq!(out["batches"], 4);
    }
}

#[test]
fn golden_reports_zero_mismatches_for_every_public_case_on_cpu_and_gpu() {
    let mut devices = vec![vec!["--device", "cpu"], vec!["--device", "cpu-fast"]];
    // Every backend this machine has (CI: Vulkan and GL), not an assumed list.
    let backends = gpu_backends();
    if backends.is_empty() {
        squint::gpu::testing::skip_or_fail("no adapter listed for the GPU golden run");
    }
    for b in &backends {
        devices.push(vec!["--device", "gpu", "--backend", b.as_str()]);
    }
    for d in devices {
        let mut cmd = squint();
        cmd.arg("golden").args(&d);
        for e in std::fs::read_dir(golden()).unwrap() {
            cmd.arg(e.unwrap().path());
        }
        let out = run_ok(&mut cmd);
        let cases = out
            .lines()
            .filter(|l| l.trim_end().ends_with(" ok"))
            .count();
        assert!(cases >= 13, "{d:?}: only {cases} cases ok:\n{out}");
        assert!(
            !out.contains("MISMATCH") && !out.contains("error"),
            "{d:?}:\n{out}"
        );
    }
}

#[test]
fn demo_json_reports_rows_and_gpu_check() {
    let out: Value = serde_json::from_str(&run_ok(squint().args(["demo", "--json"]))).unwrap();
    let rows = out["rows"].as_array().unwrap();
    let row = |mode: &str, obs: Option<&str>, cal: bool| {
        rows.iter()
            .find(|r| {
                r["mode"] == mode
                    && r["calibrated"] == cal
                    && obs.is_none_or(|o| r["observer"] == o)
            })
            .unwrap_or_else(|| panic!("no row {mode} {obs:?}"))
    };
    let unc = row("static", None, false);
    assert_eq!(unc["input_scale"], 1.0);
    assert!(
        unc["mse"].as_f64().unwrap() > 0.1,
        "uncalibrated MSE is large"
    );
    let hist = row("static", Some("histogram"), true);
    let mse = hist["mse"].as_f64().unwrap();
    // PyTorch (torch 2.15, qnnpack default qconfig) measured 1.17e-4 on this experiment.
    assert!(
        mse < 2.0 * 1.17e-4 && mse > 1.17e-4 / 2.0,
        "histogram MSE {mse}"
    );
    let wo = row("weight-only", None, false)["mse"].as_f64().unwrap();
    assert!(wo < 2e-4, "weight-only MSE {wo}");
    let g = &out["gpu_check"];
    if gpu_required() || has_gpu() {
        assert_eq!(g["bit_exact"], true, "{g}");
        assert!(g["adapter"].is_string());
    } else {
        assert!(
            g["note"].as_str().unwrap().contains("mesa-vulkan-drivers"),
            "{g}"
        );
    }
}

fn write_calib(dir: &Path) -> PathBuf {
    // The golden e2e calibration stack, as a user would save it.
    let src = golden().join("e2e_two_conv/calib.npy");
    let dst = dir.join("calib.npy");
    std::fs::copy(src, &dst).unwrap();
    dst
}

#[test]
fn quantize_then_run_cross_checks_gpu_against_cpu_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let e2e = golden().join("e2e_two_conv");
    let calib = write_calib(tmp.path());
    let q = tmp.path().join("m.q.safetensors");
    let out = run_ok(
        squint()
            .args(["quantize", "--qconfig", "x86", "--report"])
            .args([
                "--model".as_ref(),
                e2e.join("model.json").as_os_str(),
                "--weights".as_ref(),
                e2e.join("model.safetensors").as_os_str(),
                "--calib".as_ref(),
                calib.as_os_str(),
                "--out".as_ref(),
                q.as_os_str(),
            ]),
    );
    assert!(out.contains("conv1") && out.contains("SQNR"), "{out}");
    assert!(
        out.contains("reduce_range is on"),
        "x86 preset warns about reduce_range:\n{out}"
    );
    let y = tmp.path().join("y.npy");
    let device = if gpu_required() || has_gpu() {
        "gpu"
    } else {
        "cpu-fast"
    };
    let out = run_ok(
        squint()
            .args(["run", "--cross-check", "--device", device, "--model"])
            .arg(&q)
            .arg("--input")
            .arg(e2e.join("x.npy"))
            .arg("--out")
            .arg(&y),
    );
    assert!(out.contains("bit-exact"), "{out}");
    let y = squint::io::npy::read::<f32>(&y).unwrap();
    assert_eq!(y.dims, vec![1, 8, 15, 15]);
}

#[test]
fn quantize_without_calibration_fails_naming_the_points_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let e2e = golden().join("e2e_two_conv");
    let q = tmp.path().join("m.q.safetensors");
    let out = squint()
        .args(["quantize", "--model"])
        .arg(e2e.join("model.json"))
        .arg("--weights")
        .arg(e2e.join("model.safetensors"))
        .arg("--out")
        .arg(&q)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("input, conv1, conv2"), "{err}");
    assert!(!q.exists());
}

#[test]
fn report_plots_histograms_with_observer_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let e2e = golden().join("e2e_two_conv");
    let calib = write_calib(tmp.path());
    let svg = tmp.path().join("h.svg");
    let out = run_ok(
        squint()
            .args(["report", "--observer", "minmax", "--model"])
            .arg(e2e.join("model.json"))
            .arg("--weights")
            .arg(e2e.join("model.safetensors"))
            .arg("--calib")
            .arg(&calib)
            .arg("--plot")
            .arg(&svg),
    );
    assert!(out.contains("input") && out.contains("conv2"), "{out}");
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.starts_with("<svg") || s.contains("<svg"));
    for name in ["minmax", "moving-average", "histogram"] {
        assert!(s.contains(name), "legend lacks {name}");
    }
}

/// An ONNX graph end to end: quantize (own calibration) → run on the CPU; the tiny ResNet's
/// output ints equal PyTorch eager's (x86 engine) and a v2 graph file is written.
#[test]
fn quantize_and_run_an_onnx_resnet_matches_pytorch_eager() {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/resnet_tiny");
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("r.q.safetensors");
    let (y, yi) = (tmp.path().join("y.npy"), tmp.path().join("yi.npy"));
    let out = run_ok(
        squint()
            .args(["quantize", "--qconfig", "x86", "--model"])
            .arg(d.join("model_bn.onnx"))
            .arg("--calib")
            .arg(d.join("calib.npy"))
            .arg("--out")
            .arg(&q),
    );
    assert!(out.contains("12 nodes, 10 quantization points"), "{out}");
    run_ok(
        squint()
            .args(["run", "--device", "cpu", "--model"])
            .arg(&q)
            .arg("--input")
            .arg(d.join("input.npy"))
            .arg("--out")
            .arg(&y)
            .arg("--out-ints")
            .arg(&yi),
    );
    let got = squint::io::npy::read::<u8>(&yi).unwrap();
    let want = squint::io::npy::read::<u8>(d.join("x86/fc.npy")).unwrap();
    assert_eq!(got, want);
    // On every GPU backend, with every value cross-checked against the CPU reference.
    if gpu_required() || has_gpu() {
        for backend in gpu_backends() {
            let out = run_ok(
                squint()
                    .args([
                        "run",
                        "--device",
                        "gpu",
                        "--cross-check",
                        "--backend",
                        &backend,
                    ])
                    .arg("--model")
                    .arg(&q)
                    .arg("--input")
                    .arg(d.join("input.npy"))
                    .arg("--out")
                    .arg(&y)
                    .arg("--out-ints")
                    .arg(&yi),
            );
            assert!(out.contains("0 ints differ, bit-exact"), "{backend}: {out}");
            assert_eq!(squint::io::npy::read::<u8>(&yi).unwrap(), want, "{backend}");
        }
    }
    assert_eq!(squint::io::npy::read::<f32>(&y).unwrap().dims, [2, 10]);
    // An ONNX model with --weights is refused, and nothing is written.
    let bad = tmp.path().join("bad.q.safetensors");
    let o = squint()
        .args(["quantize", "--weights", "w.safetensors", "--model"])
        .arg(d.join("model_bn.onnx"))
        .arg("--calib")
        .arg(d.join("calib.npy"))
        .arg("--out")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("drop --weights"));
    assert!(!bad.exists());
}

/// `squint bench --json --runs 1 ARGS --model` on the tiny MobileNet and its input: the
/// report, and the path of each result.
fn bench_tiny_mobilenet(args: &[&str]) -> (Value, Vec<String>) {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/mobilenet_tiny");
    let out = run_ok(
        squint()
            .args(["bench", "--json", "--runs", "1"])
            .args(args)
            .arg("--model")
            .arg(d.join("model_bn.onnx"))
            .arg("--input")
            .arg(d.join("input.npy"))
            .arg("--calib")
            .arg(d.join("calib.npy")),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let paths = (v["results"].as_array().unwrap().iter())
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    (v, paths)
}

#[test]
fn bench_of_an_onnx_model_times_float_and_int8_paths() {
    let (v, paths) = bench_tiny_mobilenet(&["--no-gpu"]);
    assert_eq!(
        paths,
        ["float32 cpu", "int8 cpu-reference", "int8 cpu-fast"]
    );
    assert!(v["results"][2]["ms"].as_f64().unwrap() > 0.0);
    // --threads runs every CPU path on that many threads (and says so); --no-reference
    // drops the reference row.
    let (v, paths) = bench_tiny_mobilenet(&["--no-gpu", "--threads", "1", "--no-reference"]);
    assert_eq!(v["threads"], 1);
    assert_eq!(paths, ["float32 cpu", "int8 cpu-fast"]);
    // With a GPU: the run with the values on the device, and node by node.
    if !has_gpu() {
        assert!(!gpu_required(), "SQUINT_REQUIRE_GPU=1 and no GPU adapter");
        return;
    }
    let (_, paths) = bench_tiny_mobilenet(&["--no-reference"]);
    assert_eq!(paths.len(), 4, "{paths:?}");
    assert!(paths[2].starts_with("int8 gpu ("), "{paths:?}");
    assert!(paths[3].starts_with("int8 gpu node by node ("), "{paths:?}");
}

/// `--pin` on a graph names ONNX values: with PyTorch's qparams pinned at every observed point,
/// the MobileNet's output ints from the command line equal PyTorch eager's (x86 engine).
#[test]
fn quantize_an_onnx_mobilenet_with_pytorchs_qparams_pinned_matches_pytorch() {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/mobilenet_tiny");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("x86/points.json")).unwrap()).unwrap();
    let mut pins = serde_json::Map::new();
    for p in meta["points"].as_array().unwrap() {
        if p["observer"].as_bool().unwrap() {
            pins.insert(
                p["onnx_value_bn"].as_str().unwrap().to_string(),
                serde_json::json!({"scale": p["scale"], "zero_point": p["zero_point"]}),
            );
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let pin = tmp.path().join("pin.json");
    std::fs::write(&pin, Value::Object(pins).to_string()).unwrap();
    let (q, y, yi) = (
        tmp.path().join("m.q.safetensors"),
        tmp.path().join("y.npy"),
        tmp.path().join("yi.npy"),
    );
    run_ok(
        squint()
            .args(["quantize", "--qconfig", "x86", "--model"])
            .arg(d.join("model_bn.onnx"))
            .arg("--calib")
            .arg(d.join("calib.npy"))
            .arg("--pin")
            .arg(&pin)
            .arg("--out")
            .arg(&q),
    );
    run_ok(
        squint()
            .args(["run", "--device", "cpu-fast", "--model"])
            .arg(&q)
            .arg("--input")
            .arg(d.join("input.npy"))
            .arg("--out")
            .arg(&y)
            .arg("--out-ints")
            .arg(&yi),
    );
    let got = squint::io::npy::read::<u8>(&yi).unwrap();
    let want = squint::io::npy::read::<u8>(d.join("x86/fc.npy")).unwrap();
    assert_eq!(got, want);
    // The file holds exactly the pinned qparams, marked as pinned.
    let g = squint::pipeline::qgraph::QuantizedGraph::load(&q).unwrap();
    let mut pinned = 0;
    for p in meta["points"].as_array().unwrap() {
        if !p["observer"].as_bool().unwrap() {
            continue;
        }
        let id = g.find(p["onnx_value_bn"].as_str().unwrap()).unwrap();
        let qp = g.qparams()[id.0];
        assert_eq!(qp.scale, p["scale"].as_f64().unwrap() as f32);
        assert_eq!(qp.zero_point, p["zero_point"].as_i64().unwrap() as i32);
        assert_eq!(
            g.sources()[id.0],
            Some(squint::pipeline::PointSource::Pinned)
        );
        pinned += 1;
    }
    assert_eq!(pinned, 17);
}

/// `report` and `quantize --report` on an ONNX graph: a row per value naming the point an
/// inherited value shares, JSON with every value, and a histogram panel per quantization point.
#[test]
fn report_on_an_onnx_graph_covers_every_value_and_plots_every_point() {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/resnet_tiny");
    let tmp = tempfile::tempdir().unwrap();
    let svg = tmp.path().join("h.svg");
    let base = || {
        let mut c = squint();
        c.args(["report", "--qconfig", "x86", "--model"])
            .arg(d.join("model_bn.onnx"))
            .arg("--calib")
            .arg(d.join("calib.npy"))
            .arg("--input")
            .arg(d.join("input.npy"));
        c
    };
    let table = run_ok(base().arg("--plot").arg(&svg));
    assert!(
        table.contains("/maxpool/MaxPool_output_0")
            && table.contains("(qparams of /relu/Relu_output_0)"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&run_ok(base().arg("--json"))).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 13, "the input and 12 nodes");
    assert_eq!(rows[12]["name"], "logits");
    assert!(rows[12]["metrics"]["sqnr_db"].as_f64().unwrap() > 25.0);
    let s = std::fs::read_to_string(&svg).unwrap();
    for point in ["input", "/layer1/Relu_output_0", "logits"] {
        assert!(s.contains(point), "no panel for {point}");
    }
    assert!(
        !s.contains("/maxpool/MaxPool_output_0"),
        "a pool has no observer"
    );
    // quantize --report prints the same table before writing the file.
    let q = tmp.path().join("r.q.safetensors");
    let out = run_ok(
        squint()
            .args(["quantize", "--qconfig", "x86", "--report", "--model"])
            .arg(d.join("model_bn.onnx"))
            .arg("--calib")
            .arg(d.join("calib.npy"))
            .arg("--out")
            .arg(&q),
    );
    assert!(out.contains("(qparams of /relu/Relu_output_0)"), "{out}");
    assert!(q.exists());
}

/// `squint run` on an already-quantized (QDQ) ONNX model from ONNX Runtime: the output is
/// ONNX Runtime's, bit for bit, on the CPU reference, the fast CPU path and every GPU.
#[test]
fn run_on_a_qdq_onnx_model_gives_onnx_runtimes_output() {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/mobilenet_tiny");
    let tmp = tempfile::tempdir().unwrap();
    let y = tmp.path().join("y.npy");
    let out = run_ok(
        squint()
            .args(["run", "--device", "cpu", "--model"])
            .arg(d.join("qdq_per_channel/model_qdq.onnx"))
            .arg("--input")
            .arg(d.join("input.npy"))
            .arg("--out")
            .arg(&y),
    );
    assert!(out.contains("ONNX Runtime's int8 formulas"), "{out}");
    let got = squint::io::npy::read::<f32>(&y).unwrap();
    let want = squint::io::npy::read::<f32>(d.join("qdq_per_channel/output.npy")).unwrap();
    assert_eq!(got.dims, want.dims);
    assert!(got
        .data
        .iter()
        .zip(&want.data)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // The fast CPU path and every GPU, every value cross-checked against the reference.
    let mut devices = vec![("cpu-fast".to_string(), None)];
    if gpu_required() || has_gpu() {
        devices.extend(
            gpu_backends()
                .into_iter()
                .map(|b| ("gpu".to_string(), Some(b))),
        );
    }
    for (device, backend) in devices {
        let mut c = squint();
        c.args(["run", "--cross-check", "--device", &device, "--model"])
            .arg(d.join("qdq_per_channel/model_qdq.onnx"))
            .arg("--input")
            .arg(d.join("input.npy"))
            .arg("--out")
            .arg(&y);
        if let Some(b) = &backend {
            c.args(["--backend", b]);
        }
        let out = run_ok(&mut c);
        assert!(
            out.contains("0 ints differ, bit-exact"),
            "{device} {backend:?}: {out}"
        );
        let got = squint::io::npy::read::<f32>(&y).unwrap();
        assert!(got
            .data
            .iter()
            .zip(&want.data)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

/// `squint bench --model` on a QDQ model times its float ops and ORT's int8 formulas on the
/// CPU reference and the fast CPU path.
#[test]
fn bench_model_times_a_qdq_model() {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/resnet_tiny");
    let out = run_ok(
        squint()
            .args(["bench", "--json", "--no-gpu", "--runs", "1", "--model"])
            .arg(d.join("qdq_per_tensor/model_qdq.onnx"))
            .arg("--input")
            .arg(d.join("input.npy")),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let paths: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "float32 cpu (dequantized weights)",
            "int8 cpu-reference (ORT formulas)",
            "int8 cpu-fast (ORT formulas)"
        ]
    );
    for r in v["results"].as_array().unwrap() {
        assert!(r["ms"].as_f64().unwrap() > 0.0);
    }
}

/// `squint bench --model --isa P` runs the model's layers on path P (its JSON names it), for
/// every path this CPU runs (an unknown path: `tests/cli_errors.rs`).
#[test]
fn bench_model_runs_on_the_isa_path_asked_for() {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/mobilenet_tiny");
    let bench = |isa: &str| {
        let mut c = squint();
        c.args([
            "bench",
            "--json",
            "--no-gpu",
            "--no-reference",
            "--runs",
            "1",
        ])
        .args(["--isa", isa, "--model"])
        .arg(d.join("model.onnx"))
        .arg("--input")
        .arg(d.join("input.npy"));
        c
    };
    for isa in squint::cpu::fast::Isa::available() {
        let out = run_ok(&mut bench(isa.name()));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["isa"], isa.name());
        assert_eq!(v["results"].as_array().unwrap().len(), 2, "{out}");
    }
}

/// `squint report` on a QDQ model needs `--input` (no calibration: the model carries its
/// qparams) and prints a JSON row per value.
#[test]
fn report_on_a_qdq_model_needs_an_input_and_covers_every_value() {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/resnet_tiny");
    let model = d.join("qdq_per_tensor/model_qdq.onnx");
    let o = squint()
        .arg("report")
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--input"));
    let out = run_ok(
        squint()
            .args(["report", "--json", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(d.join("input.npy")),
    );
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 13, "the input and 12 nodes");
    assert_eq!(rows[0]["source"], "pinned");
}

/// `--qconfig ort` quantizes a float ONNX model in memory as ONNX Runtime's `quantize_static`
/// would and runs it with ORT's formulas: `run` (the GPU cross-checked against the reference,
/// the output within one step of ORT's own QDQ model's), `report` (a row per value), `bench`
/// and `quantize` (an ONNX QDQ file that `run` gives the same output for); a non-.onnx
/// `--out` and a missing `--calib` are clear errors that write nothing.
#[test]
fn qconfig_ort_quantizes_a_float_onnx_model_like_quantize_static() {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/resnet_tiny");
    let tmp = tempfile::tempdir().unwrap();
    let y = tmp.path().join("y.npy");
    let device = if gpu_required() || has_gpu() {
        "gpu"
    } else {
        "cpu-fast"
    };
    let out = run_ok(
        squint()
            .args([
                "run",
                "--cross-check",
                "--device",
                device,
                "--qconfig",
                "ort",
            ])
            .arg("--model")
            .arg(d.join("model.onnx"))
            .arg("--calib")
            .arg(d.join("calib.npy"))
            .arg("--input")
            .arg(d.join("input.npy"))
            .arg("--out")
            .arg(&y),
    );
    assert!(out.contains("0 ints differ, bit-exact"), "{out}");
    let got = squint::io::npy::read::<f32>(&y).unwrap();
    let ort = squint::io::npy::read::<f32>(d.join("qdq_per_channel/output.npy")).unwrap();
    let step = 0.05; // the logits' scale is about 0.046
    assert!(got
        .data
        .iter()
        .zip(&ort.data)
        .all(|(a, b)| (a - b).abs() <= step));
    let out = run_ok(
        squint()
            .args(["report", "--json", "--qconfig", "ort-per-tensor", "--model"])
            .arg(d.join("model.onnx"))
            .arg("--calib")
            .arg(d.join("calib.npy")),
    );
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 13, "the input and 12 nodes");
    let out = run_ok(
        squint()
            .args([
                "bench",
                "--json",
                "--no-gpu",
                "--runs",
                "1",
                "--qconfig",
                "ort",
            ])
            .arg("--model")
            .arg(d.join("model.onnx"))
            .arg("--input")
            .arg(d.join("input.npy")),
    );
    assert!(out.contains("int8 cpu-fast (ORT formulas)"), "{out}");
    // `quantize` writes the QDQ model; `run` on it gives the in-memory preset's output.
    let file = tmp.path().join("m_qdq.onnx");
    run_ok(
        squint()
            .args(["quantize", "--qconfig", "ort", "--model"])
            .arg(d.join("model.onnx"))
            .arg("--calib")
            .arg(d.join("calib.npy"))
            .arg("--out")
            .arg(&file),
    );
    let y2 = tmp.path().join("y2.npy");
    run_ok(
        squint()
            .args(["run", "--device", device, "--model"])
            .arg(&file)
            .arg("--input")
            .arg(d.join("input.npy"))
            .arg("--out")
            .arg(&y2),
    );
    let from_file = squint::io::npy::read::<f32>(&y2).unwrap();
    assert_eq!(from_file.data, got.data);
    for args in [
        vec!["quantize", "--qconfig", "ort", "--calib"],
        vec!["run", "--qconfig", "ort", "--input"],
    ] {
        let o = squint()
            .args(&args)
            .arg(d.join(if args[0] == "run" {
                "input.npy"
            } else {
                "calib.npy"
            }))
            .arg("--model")
            .arg(d.join("model.onnx"))
            .args(["--out"])
            .arg(tmp.path().join("never"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("--qconfig ort"),
            "{err}"
        );
        assert!(!tmp.path().join("never").exists());
    }
    // A PyTorch preset is not a `run` option.
    let o = squint()
        .args(["run", "--qconfig", "x86", "--model"])
        .arg(d.join("model.onnx"))
        .arg("--calib")
        .arg(d.join("calib.npy"))
        .arg("--input")
        .arg(d.join("input.npy"))
        .arg("--out")
        .arg(tmp.path().join("never"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("takes ort or ort-per-tensor"),
        "{err}"
    );
    assert!(!tmp.path().join("never").exists());
}

/// `--shape` runs only the shapes asked for, and `--gpu-variants` times every GPU conv kernel
/// variant besides the default (the tiled kernel's workgroups too); a `--shape` that matches
/// nothing is an error that names the shapes.
#[test]
fn bench_times_every_gpu_kernel_variant_of_the_shapes_asked_for() {
    let out = squint()
        .args(["bench", "--no-gpu", "--shape", "nosuch"])
        .output()
        .expect("squint runs");
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{msg}");
    assert!(
        msg.contains("\"nosuch\" matches no benchmark shape") && msg.contains("depthwise 1x128"),
        "{msg}"
    );
    if !has_gpu() {
        squint::gpu::testing::skip_or_fail("no adapter for bench --gpu-variants");
        return;
    }
    let out = run_ok(squint().args([
        "bench",
        "--json",
        "--runs",
        "1",
        "--no-reference",
        "--gpu-variants",
        "--shape",
        "DEPTHWISE",
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let results = r["results"].as_array().unwrap();
    assert!(results
        .iter()
        .all(|x| x["shape"].as_str().unwrap().starts_with("depthwise")));
    let paths: Vec<&str> = results
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    for want in [
        "int8 gpu kernel [workgroup tiles]",
        "int8 gpu kernel [texture input]",
        "int8 gpu kernel [GEMM for depthwise]",
        "int8 gpu kernel [tiles 32px x 32ch]",
        "int8 gpu kernel [tiles 128px x 64ch]",
        "int8 gpu kernel [workgroup tiles, K in parallel slices of one chunk]",
        "int8 gpu kernel [tiles, K unsplit]",
        "int8 gpu kernel [tiles, K in up to 4 parallel slices]",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    // The float baseline on the same adapter, and every kernel timing's speed against it
    // (the CPU paths' against float32 cpu; none for read-backs).
    let row = |prefix: &str| {
        results
            .iter()
            .find(|x| x["path"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} row in {paths:?}"))
    };
    let ms = |r: &Value| r["ms"].as_f64().unwrap();
    let f32_gpu = row("float32 gpu kernel");
    assert_eq!(f32_gpu["peak_loop"], "f32 fma");
    assert_eq!(f32_gpu["vs_f32"].as_f64(), Some(1.0));
    for (path, base) in [
        ("int8 gpu kernel (", f32_gpu),
        ("int8 gpu kernel [texture input]", f32_gpu),
        ("int8 cpu fast", row("float32 cpu")),
    ] {
        let r = row(path);
        let want = ms(base) / ms(r);
        let got = r["vs_f32"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9 * want, "{path}: {got} vs {want}");
    }
    assert!(row("int8 gpu end-to-end")["vs_f32"].is_null());
}
