//! Checks squint against golden cases produced by real PyTorch quantized ops
//! (format: `../shared/golden/README.md`).
//!
//! Three kinds of directory are recognised:
//! * a **conv case** (`params.json` with a `conv` key): squint recomputes, from the float files
//!   and `params.json`, the activation qparams (replaying the observer on the calibration
//!   batches, or on the saved histogram when the batches were left out), the weight qparams,
//!   the quantized input and weight, the int32 bias and accumulators, and the output ints with
//!   the case's `kernel_path` formula on the chosen device;
//! * an **observers** directory (`qparams.json`): every observer configuration is replayed on
//!   the batches and compared after each batch;
//! * an **end-to-end model** (`model.json` with per-engine directories): the model is loaded
//!   with [`Model::load`] (description and `model.safetensors`), and each engine's pipeline is
//!   run with the recorded activation qparams and compared layer by layer.
//!
//! Every comparison is exact: ints must be equal, scales equal as float32 bit patterns.

use super::{Device, Layer, Model};
use crate::cpu::reference;
use crate::error::{Error, Result};
use crate::io::npy;
use crate::observers::{weight_qparams, HistogramObserver, Observer, ObserverConfig, ObserverKind};
use crate::quant::{
    self, Epilogue, QDtype, QParams, QRange, QScheme, RequantFormula, WeightQParams,
};
use crate::shape::{ConvParams, ConvShape};
use crate::tensor::Tensor;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One comparison inside a case (e.g. `y_q`, `x qparams`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    /// What was compared.
    pub what: String,
    /// Number of elements (or values) compared.
    pub compared: usize,
    /// Number that differed.
    pub mismatches: usize,
    /// Largest absolute difference (in LSB for ints, 0/1 for qparams).
    pub max_abs_diff: i64,
}

/// The result of one golden case.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CaseReport {
    /// Case name (directory name, plus the engine or observer).
    pub name: String,
    /// Every comparison made.
    pub checks: Vec<Check>,
}

impl CaseReport {
    fn new(name: impl Into<String>) -> Self {
        CaseReport {
            name: name.into(),
            checks: Vec::new(),
        }
    }

    /// Total elements compared.
    pub fn compared(&self) -> usize {
        self.checks.iter().map(|c| c.compared).sum()
    }

    /// Total mismatches.
    pub fn mismatches(&self) -> usize {
        self.checks.iter().map(|c| c.mismatches).sum()
    }

    /// Largest |Δ| over all checks.
    pub fn max_abs_diff(&self) -> i64 {
        self.checks
            .iter()
            .map(|c| c.max_abs_diff)
            .max()
            .unwrap_or(0)
    }

    /// Whether everything matched.
    pub fn passed(&self) -> bool {
        self.mismatches() == 0 && !self.checks.is_empty()
    }

    fn ints<A: Copy + Into<i64>, B: Copy + Into<i64>>(
        &mut self,
        what: &str,
        ours: &[A],
        theirs: &[B],
    ) {
        let mut c = Check {
            what: what.to_string(),
            compared: ours.len().max(theirs.len()),
            mismatches: ours.len().abs_diff(theirs.len()),
            max_abs_diff: 0,
        };
        for (&a, &b) in ours.iter().zip(theirs) {
            let d = (a.into() - b.into()).abs();
            if d != 0 {
                c.mismatches += 1;
                c.max_abs_diff = c.max_abs_diff.max(d);
            }
        }
        self.checks.push(c);
    }

    fn qparams(&mut self, what: &str, ours: (f32, i32), theirs: (f32, i32)) {
        let scale_ok = ours.0.to_bits() == theirs.0.to_bits();
        let zp_diff = (ours.1 as i64 - theirs.1 as i64).abs();
        self.checks.push(Check {
            what: format!(
                "{what} qparams (squint {:e}/{}, torch {:e}/{})",
                ours.0, ours.1, theirs.0, theirs.1
            ),
            compared: 2,
            mismatches: usize::from(!scale_ok) + usize::from(zp_diff != 0),
            max_abs_diff: zp_diff.max(i64::from(!scale_ok)),
        });
    }

    fn floats(&mut self, what: &str, ours: &[f32], theirs: &[f32]) {
        let mismatches = ours
            .iter()
            .zip(theirs)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count()
            + ours.len().abs_diff(theirs.len());
        self.checks.push(Check {
            what: what.to_string(),
            compared: ours.len().max(theirs.len()),
            mismatches,
            max_abs_diff: i64::from(mismatches != 0),
        });
    }
}

fn golden_err(dir: &Path, message: impl Into<String>) -> Error {
    Error::Golden {
        case: dir.display().to_string(),
        message: message.into(),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))
}

fn get<'a>(v: &'a Value, key: &str, file: &Path) -> Result<&'a Value> {
    v.get(key)
        .ok_or_else(|| Error::format(file, format!("missing key '{key}'")))
}

fn f32_of(v: &Value, key: &str, file: &Path) -> Result<f32> {
    get(v, key, file)?
        .as_f64()
        .map(|x| x as f32)
        .ok_or_else(|| Error::format(file, format!("'{key}' is not a number")))
}

fn i64_of(v: &Value, key: &str, file: &Path) -> Result<i64> {
    get(v, key, file)?
        .as_i64()
        .ok_or_else(|| Error::format(file, format!("'{key}' is not an integer")))
}

fn str_of<'a>(v: &'a Value, key: &str, file: &Path) -> Result<&'a str> {
    get(v, key, file)?
        .as_str()
        .ok_or_else(|| Error::format(file, format!("'{key}' is not a string")))
}

fn pair(v: &Value, key: &str, file: &Path) -> Result<[usize; 2]> {
    let a = get(v, key, file)?
        .as_array()
        .filter(|a| a.len() == 2)
        .ok_or_else(|| Error::format(file, format!("'{key}' is not a pair")))?;
    let n = |x: &Value| {
        x.as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| Error::format(file, format!("'{key}' holds a non-integer")))
    };
    Ok([n(&a[0])?, n(&a[1])?])
}

/// Scalar-or-list of numbers as f32 / i32 vectors.
fn f32_list(v: &Value, key: &str, file: &Path) -> Result<Vec<f32>> {
    match get(v, key, file)? {
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::format(file, format!("'{key}' holds a non-number"))),
        x => Ok(vec![x
            .as_f64()
            .ok_or_else(|| Error::format(file, format!("'{key}' is not a number")))?
            as f32]),
    }
}

fn i32_list(v: &Value, key: &str, file: &Path) -> Result<Vec<i32>> {
    match get(v, key, file)? {
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_i64().map(|f| f as i32))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::format(file, format!("'{key}' holds a non-integer"))),
        x => Ok(vec![x
            .as_i64()
            .ok_or_else(|| Error::format(file, format!("'{key}' is not an integer")))?
            as i32]),
    }
}

/// Builds an [`ObserverConfig`] from a golden file's observer description
/// (`class`, `dtype`, `qscheme`, `reduce_range`, `averaging_constant`, `bins`, ...).
pub fn observer_config_from_json(v: &Value, file: &Path) -> Result<ObserverConfig> {
    let kind = match str_of(v, "class", file)? {
        "MinMaxObserver" => ObserverKind::MinMax,
        "MovingAverageMinMaxObserver" => ObserverKind::MovingAverageMinMax,
        "HistogramObserver" => ObserverKind::Histogram,
        "PerChannelMinMaxObserver" => ObserverKind::PerChannelMinMax,
        other => {
            return Err(Error::UnknownName {
                kind: "observer class",
                name: other.to_string(),
                expected: "MinMaxObserver, MovingAverageMinMaxObserver, HistogramObserver".into(),
            })
        }
    };
    let dtype = QDtype::parse(str_of(v, "dtype", file)?)?;
    let qscheme = str_of(v, "qscheme", file)?;
    let reduce_range = v
        .get("reduce_range")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut cfg = ObserverConfig::new(kind, dtype)
        .symmetric(qscheme.contains("symmetric"))
        .reduce_range(reduce_range);
    if let Some(c) = v.get("averaging_constant").and_then(Value::as_f64) {
        cfg = cfg.averaging_constant(c as f32);
    }
    // quant_min/max in the golden files are the derived observer range; they are custom only
    // when they differ from it.
    if let (Some(lo), Some(hi)) = (
        v.get("quant_min").and_then(Value::as_i64),
        v.get("quant_max").and_then(Value::as_i64),
    ) {
        let r = QRange {
            min: lo as i32,
            max: hi as i32,
        };
        if r != dtype.observer_range(reduce_range) {
            cfg = cfg.quant_range(r);
        }
    }
    if let Some(b) = v.get("bins").and_then(Value::as_u64) {
        cfg.bins = b as usize;
    }
    if let Some(u) = v.get("upsample_rate").and_then(Value::as_u64) {
        cfg.upsample_rate = u as usize;
    }
    Ok(cfg)
}

/// Feeds each slice of axis 0 of `batches` to a fresh observer built from `cfg`.
fn replay(cfg: &ObserverConfig, batches: Tensor<f32>, name: &str) -> Result<Box<dyn Observer>> {
    let mut obs = cfg.build()?;
    for (i, b) in batches.split_axis0()?.into_iter().enumerate() {
        obs.observe(&b.data, &format!("{name} batch {i}"))?;
    }
    Ok(obs)
}

/// Runs every golden case found in `dir` on `device`.
pub fn run_dir(dir: &Path, device: &Device) -> Result<Vec<CaseReport>> {
    if dir.join("model.json").is_file() {
        run_e2e(dir, device)
    } else if dir.join("qparams.json").is_file() {
        run_observers(dir)
    } else if dir.join("params.json").is_file() {
        Ok(vec![run_conv_case(dir, device)?])
    } else {
        Err(golden_err(
            dir,
            "not a golden case: no params.json, qparams.json or model.json",
        ))
    }
}

fn case_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

fn weight_scheme(name: &str) -> Result<QScheme> {
    match name {
        "per_tensor_symmetric" => Ok(QScheme::PerTensorSymmetric),
        "per_tensor_affine" => Ok(QScheme::PerTensorAffine),
        "per_channel_symmetric" => Ok(QScheme::PerChannelSymmetric),
        "per_channel_affine" => Ok(QScheme::PerChannelAffine),
        other => Err(Error::UnknownName {
            kind: "weight qscheme",
            name: other.to_string(),
            expected:
                "per_tensor_symmetric, per_tensor_affine, per_channel_symmetric, per_channel_affine"
                    .into(),
        }),
    }
}

/// A single conv golden case.
pub fn run_conv_case(dir: &Path, device: &Device) -> Result<CaseReport> {
    let pj = dir.join("params.json");
    let p = read_json(&pj)?;
    let mut rep = CaseReport::new(case_name(dir));
    let conv = get(&p, "conv", &pj)?;
    let params = ConvParams {
        stride: pair(conv, "stride", &pj)?,
        padding: pair(conv, "padding", &pj)?,
        dilation: pair(conv, "dilation", &pj)?,
        groups: i64_of(conv, "groups", &pj)? as usize,
    };
    let formula = RequantFormula::parse(str_of(&p, "kernel_path", &pj)?)?;
    let x = npy::read::<f32>(dir.join("x.npy"))?;
    let w = npy::read::<f32>(dir.join("w.npy"))?;
    let s = ConvShape::new(x.dims4("x.npy")?, w.dims4("w.npy")?, params)?;
    let bias = if dir.join("b.npy").is_file() {
        Some(npy::read_expect::<f32>(dir.join("b.npy"), &[s.c_out])?.data)
    } else {
        None
    };

    // Activation qparams: replay the observer where the data allows.
    let act = get(get(&p, "qconfig", &pj)?, "activation", &pj)?;
    let act_cfg = observer_config_from_json(act, &pj)?;
    let x_dtype = QDtype::parse(str_of(&p, "x_dtype", &pj)?)?;
    let y_dtype = QDtype::parse(str_of(&p, "y_dtype", &pj)?)?;
    let torch_x = (
        f32_of(&p, "x_scale", &pj)?,
        i64_of(&p, "x_zero_point", &pj)? as i32,
    );
    let torch_y = (
        f32_of(&p, "y_scale", &pj)?,
        i64_of(&p, "y_zero_point", &pj)? as i32,
    );
    let x_qp = if dir.join("calib_x.npy").is_file() {
        let obs = replay(
            &act_cfg,
            npy::read::<f32>(dir.join("calib_x.npy"))?,
            "calib_x",
        )?;
        let qp = obs.qparams()?;
        rep.qparams("x", (qp.scale, qp.zero_point), torch_x);
        qp
    } else {
        QParams::new(torch_x.0, torch_x.1, x_dtype)?
    };
    let state = p.get("observer_state");
    let y_qp = if dir.join("calib_y.npy").is_file() {
        let obs = replay(
            &act_cfg,
            npy::read::<f32>(dir.join("calib_y.npy"))?,
            "calib_y",
        )?;
        let qp = obs.qparams()?;
        rep.qparams("y", (qp.scale, qp.zero_point), torch_y);
        qp
    } else if let (Some(sy), true) = (
        state.and_then(|s| s.get("y")),
        dir.join("obs_y_hist.npy").is_file(),
    ) {
        let hist = npy::read::<f32>(dir.join("obs_y_hist.npy"))?;
        let obs = HistogramObserver::from_state(
            act_cfg.clone(),
            f32_of(sy, "min_val", &pj)?,
            f32_of(sy, "max_val", &pj)?,
            hist.data,
        )?;
        let qp = obs.qparams()?;
        rep.qparams(
            "y (from saved histogram)",
            (qp.scale, qp.zero_point),
            torch_y,
        );
        qp
    } else {
        QParams::new(torch_y.0, torch_y.1, y_dtype)?
    };

    // Weight qparams and ints.
    let scheme = weight_scheme(str_of(&p, "w_qscheme", &pj)?)?;
    let w_qp = weight_qparams(&w.data, s.c_out, scheme, QDtype::QInt8)?;
    let torch_ws = f32_list(&p, "w_scale", &pj)?;
    let torch_wzp = i32_list(&p, "w_zero_point", &pj)?;
    if torch_ws.len() != torch_wzp.len() {
        return Err(golden_err(
            dir,
            format!(
                "{} weight scales but {} weight zero points",
                torch_ws.len(),
                torch_wzp.len()
            ),
        ));
    }
    for (i, (&ts, &tz)) in torch_ws.iter().zip(&torch_wzp).enumerate() {
        let what = if torch_ws.len() == 1 {
            "w".to_string()
        } else {
            format!("w[{i}]")
        };
        rep.qparams(&what, (w_qp.scale(i), w_qp.zero_point(i)), (ts, tz));
    }
    let w_q = reference::quantize_weight(&w.data, &w_qp, s.c_out)?;
    let torch_wq = npy::read_expect::<i8>(dir.join("w_q.npy"), &w.dims)?;
    rep.ints("w_q", &w_q, &torch_wq.data);

    // Quantized input.
    let x_q = quant::quantize_slice(&x.data, &x_qp);
    let torch_xq = npy::read_expect::<u8>(dir.join("x_q.npy"), &x.dims)?;
    rep.ints("x_q", &x_q, &torch_xq.data);

    // Epilogue, bias and accumulators.
    let epi = Epilogue::new(
        formula,
        x_qp.scale,
        &w_qp,
        bias.as_deref(),
        y_qp,
        false,
        s.c_out,
    )?;
    if dir.join("b_q_qnnpack.npy").is_file() {
        let bq = npy::read_expect::<i32>(dir.join("b_q_qnnpack.npy"), &[s.c_out])?;
        let q = Epilogue::new(
            RequantFormula::Qnnpack,
            x_qp.scale,
            &w_qp,
            bias.as_deref(),
            y_qp,
            false,
            s.c_out,
        )?;
        let ours: Vec<i32> = q.channels.iter().map(|c| c.bias_i32).collect();
        rep.ints("b_q (qnnpack)", &ours, &bq.data);
    }
    if dir.join("acc_i32.npy").is_file() {
        let acc = reference::conv2d_acc(&x_q, &x_qp, &w_q, &w_qp, &s)?;
        let torch_acc = npy::read_expect::<i32>(dir.join("acc_i32.npy"), &s.output_dims())?;
        rep.ints("acc_i32", &acc, &torch_acc.data);
    }

    // Output ints on the device.
    let y_q = device.conv2d_quantized(&x_q, &x_qp, &w_q, &w_qp, &epi, &s)?;
    let torch_yq = npy::read_expect::<u8>(dir.join("y_q.npy"), &s.output_dims())?;
    let ours: Vec<i32> = y_q.iter().map(|&b| y_qp.dtype.byte_to_int(b)).collect();
    rep.ints(
        &format!("y_q ({formula}, {})", device.describe()),
        &ours,
        &torch_yq.data,
    );
    Ok(rep)
}

/// Replays every observer configuration of an observers directory.
pub fn run_observers(dir: &Path) -> Result<Vec<CaseReport>> {
    let qj = dir.join("qparams.json");
    let q = read_json(&qj)?;
    let batches = npy::read::<f32>(dir.join("batches.npy"))?.split_axis0()?;
    let observers = get(&q, "observers", &qj)?
        .as_object()
        .ok_or_else(|| Error::format(&qj, "'observers' is not an object"))?;
    let mut reports = Vec::new();
    for (name, entry) in observers {
        let cfg = observer_config_from_json(get(entry, "observer", &qj)?, &qj)?.label(name);
        let mut rep = CaseReport::new(format!("{}/{name}", case_name(dir)));
        let mut obs = cfg.build()?;
        let steps = get(entry, "after_each_batch", &qj)?
            .as_array()
            .ok_or_else(|| Error::format(&qj, "'after_each_batch' is not a list"))?;
        for (i, b) in batches.iter().enumerate() {
            obs.observe(&b.data, &format!("batch {i}"))?;
            if let Some(step) = steps.get(i) {
                check_observer_state(
                    &mut rep,
                    &format!("after batch {i}"),
                    obs.as_ref(),
                    step,
                    &qj,
                )?;
            }
        }
        check_observer_state(&mut rep, "final", obs.as_ref(), entry, &qj)?;
        if let Some(file) = entry.get("histogram_file").and_then(Value::as_str) {
            let hist = npy::read::<f32>(dir.join(file))?;
            let mut ours = HistogramObserver::new(cfg.clone())?;
            for b in &batches {
                ours.observe(&b.data, "batch")?;
            }
            rep.floats("histogram", ours.histogram(), &hist.data);
            let (lo, hi) = ours.non_linear_param_search();
            rep.floats(
                "search range",
                &[lo, hi],
                &[
                    f32_of(entry, "search_min", &qj)?,
                    f32_of(entry, "search_max", &qj)?,
                ],
            );
        }
        reports.push(rep);
    }
    Ok(reports)
}

fn check_observer_state(
    rep: &mut CaseReport,
    when: &str,
    obs: &dyn Observer,
    expect: &Value,
    file: &Path,
) -> Result<()> {
    let (lo, hi) = obs
        .min_max()
        .ok_or_else(|| Error::format(file, "observer saw no data"))?;
    rep.floats(
        &format!("{when} min/max"),
        &[lo, hi],
        &[
            f32_of(expect, "min_val", file)?,
            f32_of(expect, "max_val", file)?,
        ],
    );
    let qp = obs.qparams()?;
    rep.qparams(
        when,
        (qp.scale, qp.zero_point),
        (
            f32_of(expect, "scale", file)?,
            i64_of(expect, "zero_point", file)? as i32,
        ),
    );
    Ok(())
}

/// The engines of an end-to-end case: the golden-only `engines` list of `model.json` (the
/// model itself, its `layers`, is read by [`Model::load`]).
fn e2e_engines(mj: &Path) -> Result<Vec<String>> {
    let meta = read_json(mj)?;
    Ok(get(&meta, "engines", mj)?
        .as_array()
        .ok_or_else(|| Error::format(mj, "'engines' is not a list"))?
        .iter()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect())
}

/// The end-to-end two-conv model: each engine's pipeline with the recorded activation qparams.
///
/// The model (layers, hyperparameters, float weights and biases) is loaded and validated by
/// [`Model::load`]; an unfused ReLU layer is an error (a golden model fuses its ReLUs, and
/// each conv's fused ReLU is taken from the engine's `relu_fused`, as PyTorch recorded it).
pub fn run_e2e(dir: &Path, device: &Device) -> Result<Vec<CaseReport>> {
    let mj = dir.join("model.json");
    let model = Model::load(&mj, &dir.join("model.safetensors"))?;
    let engines = e2e_engines(&mj)?;
    let x = npy::read::<f32>(dir.join("x.npy"))?;
    let mut reports = Vec::new();
    for engine in engines {
        let edir: PathBuf = dir.join(&engine);
        let pj = edir.join("points.json");
        let points_json = read_json(&pj)?;
        let points = get(&points_json, "points", &pj)?;
        let mut rep = CaseReport::new(format!("{}/{engine}", case_name(dir)));
        let input = get(points, "input", &pj)?;
        let in_qp = QParams::new(
            f32_of(input, "scale", &pj)?,
            i64_of(input, "zero_point", &pj)? as i32,
            QDtype::parse(str_of(input, "dtype", &pj)?)?,
        )?;
        // The input observer sees exactly the calibration batches: replay it.
        if let Some(obs_json) = input.get("observer") {
            let cfg = observer_config_from_json(obs_json, &pj)?;
            let obs = replay(&cfg, npy::read::<f32>(dir.join("calib.npy"))?, "calib")?;
            let qp = obs.qparams()?;
            rep.qparams(
                "input (calibrated)",
                (qp.scale, qp.zero_point),
                (in_qp.scale, in_qp.zero_point),
            );
        }
        let mut cur = quant::quantize_slice(&x.data, &in_qp);
        let mut cur_qp = in_qp;
        let mut cur_dims = x.dims4("x.npy")?;
        let torch_xq = npy::read_expect::<u8>(edir.join("x_q.npy"), &x.dims)?;
        rep.ints("x_q", &cur, &torch_xq.data);
        for layer in model.layers() {
            let Layer::Conv(conv) = layer else {
                let msg = format!("layer '{}': an unfused ReLU is not supported", layer.name());
                return Err(golden_err(dir, msg));
            };
            let name = conv.name.as_str();
            let pt = get(points, name, &pj)?;
            let w = &conv.weight;
            let bias = conv.bias.as_deref();
            let s = ConvShape::new(cur_dims, conv.weight_dims(), conv.params)?;
            let scheme = weight_scheme(str_of(pt, "weight_qscheme", &pj)?)?;
            let w_qp = weight_qparams(&w.data, s.c_out, scheme, QDtype::QInt8)?;
            let ts = f32_list(pt, "weight_scale", &pj)?;
            let tz = i32_list(pt, "weight_zero_point", &pj)?;
            let torch_w = WeightQParams {
                scheme,
                scales: ts,
                zero_points: tz,
            };
            let mismatched = (0..s.c_out)
                .filter(|&o| {
                    w_qp.scale(o).to_bits() != torch_w.scale(o).to_bits()
                        || w_qp.zero_point(o) != torch_w.zero_point(o)
                })
                .count();
            rep.checks.push(Check {
                what: format!("{name} weight qparams"),
                compared: s.c_out,
                mismatches: mismatched,
                max_abs_diff: i64::from(mismatched != 0),
            });
            let w_q = reference::quantize_weight(&w.data, &w_qp, s.c_out)?;
            let torch_wq =
                npy::read_expect::<i8>(edir.join(str_of(pt, "weight_int_file", &pj)?), &w.dims)?;
            rep.ints(&format!("{name} w_q"), &w_q, &torch_wq.data);
            let out_qp = QParams::new(
                f32_of(pt, "scale", &pj)?,
                i64_of(pt, "zero_point", &pj)? as i32,
                QDtype::parse(str_of(pt, "dtype", &pj)?)?,
            )?;
            let formula = RequantFormula::parse(str_of(pt, "kernel_path", &pj)?)?;
            let relu = pt
                .get("relu_fused")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let epi = Epilogue::new(formula, cur_qp.scale, &w_qp, bias, out_qp, relu, s.c_out)?;
            if pt.get("bias_q_qnnpack").is_some() {
                let theirs = i32_list(pt, "bias_q_qnnpack", &pj)?;
                let ours: Vec<i32> = epi.channels.iter().map(|c| c.bias_i32).collect();
                rep.ints(&format!("{name} b_q (qnnpack)"), &ours, &theirs);
            }
            let y = device.conv2d_quantized(&cur, &cur_qp, &w_q, &w_qp, &epi, &s)?;
            let torch_y =
                npy::read_expect::<u8>(edir.join(str_of(pt, "int_file", &pj)?), &s.output_dims())?;
            rep.ints(
                &format!(
                    "{name} y_q ({formula}{}, {})",
                    if relu { "+relu" } else { "" },
                    device.describe()
                ),
                &y,
                &torch_y.data,
            );
            cur = y;
            cur_qp = out_qp;
            cur_dims = s.output_dims();
        }
        reports.push(rep);
    }
    Ok(reports)
}
