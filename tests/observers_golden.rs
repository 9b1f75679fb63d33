//! Observers against the PyTorch 2.15 golden vectors in `../shared/golden` (bit-exact).
//!
//! * `observers/`: 8 observer configurations fed 4 batches; min, max, scale, zero point after
//!   every batch, the final histograms and the L2 search results.
//! * the conv cases: the input (and output) HistogramObserver replayed on the saved calibration
//!   tensors, compared with the saved histograms, observer states and qparams.
//! * `e2e_two_conv/`: the model input observer for both engines.
//!
//! Every float comparison is exact (bit patterns for scales and histogram bins).

use ndarray::{Array1, ArrayD, Axis};
use ndarray_npy::read_npy;
use serde_json::Value;
use squint::observers::{HistogramObserver, Observer, ObserverConfig, ObserverKind};
use squint::quant::QDtype;
use std::path::{Path, PathBuf};

/// `../shared/golden` relative to the crate root; panics if it is missing so that the tests can
/// never pass vacuously.
fn golden() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    assert!(
        dir.join("README.md").is_file(),
        "golden vectors not found at {} (expected the shared/ checkout beside the repository)",
        dir.display()
    );
    dir
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_f32(path: &Path) -> ArrayD<f32> {
    read_npy(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn read_hist(path: &Path) -> Vec<f32> {
    let a: Array1<f32> =
        read_npy(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    a.to_vec()
}

/// The tensors along axis 0, each flattened in C order.
fn batches(a: &ArrayD<f32>) -> Vec<Vec<f32>> {
    a.axis_iter(Axis(0))
        .map(|b| b.iter().copied().collect())
        .collect()
}

/// A JSON double that holds a float32 value exactly (README). serde_json's default float parser
/// may be one double ulp off, which rounding to float32 absorbs; anything further off is not a
/// float32 value and fails.
fn f32_of(v: &Value, what: &str) -> f32 {
    let d = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {v}"));
    let f = d as f32;
    assert!(
        (f as f64 - d).abs() <= d.abs() * 4.0 * f64::EPSILON,
        "{what}: {d} is not a float32 value"
    );
    f
}

fn i32_of(v: &Value, what: &str) -> i32 {
    v.as_i64()
        .unwrap_or_else(|| panic!("{what}: not an integer: {v}")) as i32
}

/// The observer config described by a golden `observer` / `qconfig.activation` object.
fn config_of(o: &Value, label: &str) -> ObserverConfig {
    let kind = match o["class"].as_str().expect("observer class") {
        "MinMaxObserver" => ObserverKind::MinMax,
        "MovingAverageMinMaxObserver" => ObserverKind::MovingAverageMinMax,
        "HistogramObserver" => ObserverKind::Histogram,
        other => panic!("{label}: unexpected observer class {other}"),
    };
    let dtype = QDtype::parse(o["dtype"].as_str().expect("dtype")).unwrap();
    let symmetric = match o["qscheme"].as_str().expect("qscheme") {
        "per_tensor_symmetric" => true,
        "per_tensor_affine" => false,
        other => panic!("{label}: unexpected qscheme {other}"),
    };
    let mut c = ObserverConfig::new(kind, dtype)
        .symmetric(symmetric)
        .reduce_range(o["reduce_range"].as_bool().expect("reduce_range"))
        .label(label);
    if let Some(a) = o.get("averaging_constant") {
        c = c.averaging_constant(a.as_f64().unwrap() as f32);
    }
    if let Some(b) = o.get("bins") {
        c = c.bins(b.as_u64().unwrap() as usize);
    }
    if let Some(r) = o.get("upsample_rate") {
        c = c.upsample_rate(r.as_u64().unwrap() as usize);
    }
    if let Some(d) = o.get("dst_nbins") {
        assert_eq!(d.as_u64(), Some(256), "{label}: dst_nbins");
    }
    let q = c.qrange();
    assert_eq!(
        (q.min, q.max),
        (
            i32_of(&o["quant_min"], label),
            i32_of(&o["quant_max"], label)
        ),
        "{label}: observer range"
    );
    c
}

/// Collects mismatches so that one run reports all of them.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn f32_eq(&mut self, ctx: &str, got: f32, want: f32) {
        // Exact equality; the bit patterns are printed on failure.
        if got != want || got.is_sign_negative() != want.is_sign_negative() {
            self.0.push(format!(
                "{ctx}: got {got:e} ({:#010x}), want {want:e} ({:#010x})",
                got.to_bits(),
                want.to_bits()
            ));
        }
    }

    fn i32_eq(&mut self, ctx: &str, got: i32, want: i32) {
        if got != want {
            self.0.push(format!("{ctx}: got {got}, want {want}"));
        }
    }

    fn hist_eq(&mut self, ctx: &str, got: &[f32], want: &[f32]) {
        if got.len() != want.len() {
            self.0
                .push(format!("{ctx}: {} bins, want {}", got.len(), want.len()));
            return;
        }
        let bad: Vec<usize> = (0..got.len())
            .filter(|&i| got[i].to_bits() != want[i].to_bits())
            .collect();
        if let Some(&i) = bad.first() {
            self.0.push(format!(
                "{ctx}: {} of {} bins differ; first at {i}: got {:e}, want {:e}",
                bad.len(),
                got.len(),
                got[i],
                want[i]
            ));
        }
    }

    /// min_val, max_val, scale, zero_point of `obs` against a golden object with those keys.
    fn state_eq(&mut self, ctx: &str, obs: &dyn Observer, want: &Value) {
        let (lo, hi) = obs.min_max().expect("observer saw data");
        self.f32_eq(&format!("{ctx} min_val"), lo, f32_of(&want["min_val"], ctx));
        self.f32_eq(&format!("{ctx} max_val"), hi, f32_of(&want["max_val"], ctx));
        let qp = obs.qparams().expect("qparams");
        self.f32_eq(
            &format!("{ctx} scale"),
            qp.scale,
            f32_of(&want["scale"], ctx),
        );
        self.i32_eq(
            &format!("{ctx} zero_point"),
            qp.zero_point,
            i32_of(&want["zero_point"], ctx),
        );
    }

    fn check_hex(&mut self, ctx: &str, scale: f32, hex: Option<&Value>) {
        if let Some(h) = hex.and_then(Value::as_str) {
            let want = u32::from_str_radix(h.trim_start_matches("0x"), 16).unwrap();
            if scale.to_bits() != want {
                self.0.push(format!(
                    "{ctx}: scale bits {:#010x}, want {h}",
                    scale.to_bits()
                ));
            }
        }
    }

    fn finish(self, what: &str, checks: usize) {
        assert!(
            self.0.is_empty(),
            "{what}: {} mismatches:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
        assert!(checks > 0, "{what}: nothing was checked");
    }
}

/// The 8 observer configurations of `observers/qparams.json`, after every batch and at the end.
#[test]
fn observers_qparams_json() {
    let dir = golden().join("observers");
    let json = read_json(&dir.join("qparams.json"));
    let data = read_f32(&dir.join("batches.npy"));
    assert_eq!(data.shape(), &[4, 16, 1024]);
    let batches = batches(&data);
    let observers = json["observers"].as_object().expect("observers");
    assert_eq!(observers.len(), 8, "expected 8 observer configurations");

    let mut r = Report::default();
    let mut checks = 0;
    for (name, o) in observers {
        let cfg = config_of(&o["observer"], name);
        let mut obs = cfg.build().unwrap();
        let after = o["after_each_batch"].as_array().expect("after_each_batch");
        assert_eq!(after.len(), batches.len());
        for (i, (b, want)) in batches.iter().zip(after).enumerate() {
            obs.observe(b, &format!("batch {i}")).unwrap();
            r.state_eq(&format!("{name} after batch {i}"), obs.as_ref(), want);
            checks += 1;
        }
        assert_eq!(obs.batches_seen(), 4);
        r.state_eq(&format!("{name} final"), obs.as_ref(), o);
        r.check_hex(name, obs.qparams().unwrap().scale, o.get("scale_f32_hex"));
        if cfg.kind == ObserverKind::Histogram {
            let file = o["histogram_file"].as_str().expect("histogram_file");
            let want = read_hist(&dir.join(file));
            r.hist_eq(
                &format!("{name} histogram"),
                obs.histogram().unwrap(),
                &want,
            );
            let (lo, hi) = obs.qparams_range().unwrap();
            r.f32_eq(
                &format!("{name} search_min"),
                lo,
                f32_of(&o["search_min"], name),
            );
            r.f32_eq(
                &format!("{name} search_max"),
                hi,
                f32_of(&o["search_max"], name),
            );

            // Replaying the search from the saved histogram gives the same answer.
            let replay = HistogramObserver::from_state(
                cfg.clone(),
                f32_of(&o["min_val"], name),
                f32_of(&o["max_val"], name),
                want,
            )
            .unwrap();
            let (lo, hi) = replay.non_linear_param_search();
            r.f32_eq(
                &format!("{name} replay search_min"),
                lo,
                f32_of(&o["search_min"], name),
            );
            r.f32_eq(
                &format!("{name} replay search_max"),
                hi,
                f32_of(&o["search_max"], name),
            );
            let qp = replay.qparams().unwrap();
            r.f32_eq(
                &format!("{name} replay scale"),
                qp.scale,
                f32_of(&o["scale"], name),
            );
            r.i32_eq(
                &format!("{name} replay zero_point"),
                qp.zero_point,
                i32_of(&o["zero_point"], name),
            );
        }
        checks += 1;
    }
    r.finish("observers/qparams.json", checks);
}

/// Replays one HistogramObserver of a conv case: feeds `calib[b]` for every b, or restores the
/// saved histogram when there is no calibration file, and compares with the saved state.
fn replay_conv_observer(
    r: &mut Report,
    dir: &Path,
    case: &str,
    params: &Value,
    point: &str,
    calib_file: &str,
) {
    let ctx = format!("{case}.{point}");
    let state = &params["observer_state"][point];
    let cfg = config_of(&params["qconfig"]["activation"], &ctx);
    assert_eq!(
        cfg.reduce_range,
        case == "pointwise_1x1_fbgemm",
        "{ctx}: reduce_range"
    );
    let want_hist = read_hist(&dir.join(state["histogram_file"].as_str().unwrap()));
    let (min, max) = (
        f32_of(&state["min_val"], &ctx),
        f32_of(&state["max_val"], &ctx),
    );
    let calib_path = dir.join(calib_file);
    let obs = if calib_path.is_file() {
        let calib = read_f32(&calib_path);
        assert_eq!(calib.ndim(), 5, "{ctx}: calibration stack is B,N,C,H,W");
        let n = params["calibration"]["num_batches"].as_u64().unwrap() as usize;
        assert_eq!(calib.shape()[0], n, "{ctx}: number of calibration batches");
        let mut obs = HistogramObserver::new(cfg.clone()).unwrap();
        for (b, x) in batches(&calib).iter().enumerate() {
            obs.observe(x, &format!("{calib_file}[{b}]")).unwrap();
        }
        r.hist_eq(&format!("{ctx} histogram"), obs.histogram(), &want_hist);
        let (lo, hi) = obs.min_max().unwrap();
        r.f32_eq(&format!("{ctx} min_val"), lo, min);
        r.f32_eq(&format!("{ctx} max_val"), hi, max);
        obs
    } else {
        // Only forum_qnnpack leaves calib_y out (README); anything else is a broken checkout.
        assert_eq!(
            (case, point),
            ("forum_qnnpack", "y"),
            "{ctx}: {calib_file} is missing"
        );
        HistogramObserver::from_state(cfg.clone(), min, max, want_hist).unwrap()
    };
    let (lo, hi) = obs.non_linear_param_search();
    r.f32_eq(
        &format!("{ctx} search_min"),
        lo,
        f32_of(&state["search_min"], &ctx),
    );
    r.f32_eq(
        &format!("{ctx} search_max"),
        hi,
        f32_of(&state["search_max"], &ctx),
    );
    let qp = obs.qparams().unwrap();
    r.f32_eq(
        &format!("{ctx} scale"),
        qp.scale,
        f32_of(&params[format!("{point}_scale")], &ctx),
    );
    r.check_hex(&ctx, qp.scale, params.get(format!("{point}_scale_f32_hex")));
    r.i32_eq(
        &format!("{ctx} zero_point"),
        qp.zero_point,
        i32_of(&params[format!("{point}_zero_point")], &ctx),
    );
}

/// Input and output observers of the three conv golden cases.
#[test]
fn conv_case_observers() {
    let root = golden();
    let mut r = Report::default();
    let mut checks = 0;
    for case in ["small_s2_p1_bias", "pointwise_1x1_fbgemm", "forum_qnnpack"] {
        let dir = root.join(case);
        let params = read_json(&dir.join("params.json"));
        replay_conv_observer(&mut r, &dir, case, &params, "x", "calib_x.npy");
        replay_conv_observer(&mut r, &dir, case, &params, "y", "calib_y.npy");
        checks += 2;
    }
    r.finish("conv cases", checks);
}

/// The model-input observer of `e2e_two_conv` for both engines.
#[test]
fn e2e_input_observer() {
    let dir = golden().join("e2e_two_conv");
    let calib = read_f32(&dir.join("calib.npy"));
    assert_eq!(calib.shape(), &[8, 1, 3, 32, 32]);
    let calib = batches(&calib);
    let mut r = Report::default();
    let mut checks = 0;
    for (engine, reduce_range) in [("qnnpack", false), ("x86", true)] {
        let points = read_json(&dir.join(engine).join("points.json"));
        let input = &points["points"]["input"];
        let o = &input["observer"];
        let ctx = format!("e2e {engine} input");
        let cfg = config_of(o, &ctx);
        assert_eq!(cfg.reduce_range, reduce_range, "{ctx}: reduce_range");
        assert_eq!(o["calls_per_calibration_batch"].as_u64(), Some(1));
        let mut obs = cfg.build().unwrap();
        for (b, x) in calib.iter().enumerate() {
            obs.observe(x, &format!("calib[{b}]")).unwrap();
        }
        let want = read_hist(&dir.join(engine).join(o["histogram_file"].as_str().unwrap()));
        r.hist_eq(&format!("{ctx} histogram"), obs.histogram().unwrap(), &want);
        let (lo, hi) = obs.min_max().unwrap();
        r.f32_eq(&format!("{ctx} min_val"), lo, f32_of(&o["min_val"], &ctx));
        r.f32_eq(&format!("{ctx} max_val"), hi, f32_of(&o["max_val"], &ctx));
        let (lo, hi) = obs.qparams_range().unwrap();
        r.f32_eq(
            &format!("{ctx} search_min"),
            lo,
            f32_of(&o["search_min"], &ctx),
        );
        r.f32_eq(
            &format!("{ctx} search_max"),
            hi,
            f32_of(&o["search_max"], &ctx),
        );
        let qp = obs.qparams().unwrap();
        r.f32_eq(
            &format!("{ctx} scale"),
            qp.scale,
            f32_of(&input["scale"], &ctx),
        );
        r.check_hex(&ctx, qp.scale, input.get("scale_f32_hex"));
        r.i32_eq(
            &format!("{ctx} zero_point"),
            qp.zero_point,
            i32_of(&input["zero_point"], &ctx),
        );
        checks += 1;
    }
    r.finish("e2e_two_conv input", checks);
}

/// The e2e conv observers' saved histograms: replaying the L2 search on them gives the recorded
/// search range and qparams (the float conv outputs themselves are not replayed here; their
/// summation order is the conv kernels' business).
#[test]
fn e2e_conv_observers_replayed_from_saved_histograms() {
    let dir = golden().join("e2e_two_conv");
    let mut r = Report::default();
    let mut checks = 0;
    for engine in ["qnnpack", "x86"] {
        let points = read_json(&dir.join(engine).join("points.json"));
        for point in ["input", "conv1", "conv2"] {
            let p = &points["points"][point];
            let o = &p["observer"];
            let ctx = format!("e2e {engine} {point}");
            let cfg = config_of(o, &ctx);
            let hist = read_hist(&dir.join(engine).join(o["histogram_file"].as_str().unwrap()));
            let obs = HistogramObserver::from_state(
                cfg,
                f32_of(&o["min_val"], &ctx),
                f32_of(&o["max_val"], &ctx),
                hist,
            )
            .unwrap();
            let (lo, hi) = obs.non_linear_param_search();
            r.f32_eq(
                &format!("{ctx} search_min"),
                lo,
                f32_of(&o["search_min"], &ctx),
            );
            r.f32_eq(
                &format!("{ctx} search_max"),
                hi,
                f32_of(&o["search_max"], &ctx),
            );
            let qp = obs.qparams().unwrap();
            r.f32_eq(&format!("{ctx} scale"), qp.scale, f32_of(&p["scale"], &ctx));
            r.i32_eq(
                &format!("{ctx} zero_point"),
                qp.zero_point,
                i32_of(&p["zero_point"], &ctx),
            );
            checks += 1;
        }
    }
    r.finish("e2e_two_conv replay", checks);
}
