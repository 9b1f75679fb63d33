//! `squint demo`: the forum experiment that motivates squint.
//!
//! A `Conv2d(132, 121, 3, bias=False)` with kaiming-normal (fan_out) weights on a
//! `1x132x64x64` input drawn from U[0, 1). PyTorch users who convert such a layer without
//! running calibration data get MSE ≈ 0.5, because both activation observers never saw a
//! tensor and fall back to scale 1.0 / zero point 0; weight-only quantization gives ≈ 1e-4.
//! The demo shows every variant side by side, then checks the GPU against the CPU reference
//! bit for bit and times the int8 conv.

use serde::Serialize;
use squint::cpu::{self, fast::FastConvOptions};
use squint::error::Result;
use squint::gpu::{DeviceOptions, GpuContext};
use squint::observers::{weight_qparams, ObserverKind};
use squint::pipeline::diagnostics::error_metrics;
use squint::pipeline::{ConvertOptions, Device, Model, PreparedModel, QConfig, QuantizedModel};
use squint::quant::{dequantize_one, QDtype, QParams, QScheme};
use squint::rng::Rng;
use squint::shape::{ConvParams, ConvShape};
use squint::tensor::Tensor;
use std::time::Instant;

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Random seed.
    pub seed: u64,
    /// Calibration batches.
    pub calib_batches: usize,
    /// GPU selection; `None` skips the GPU part.
    pub gpu: Option<DeviceOptions>,
    /// Timed runs per path (the median is reported).
    pub timing_runs: usize,
    /// Show a progress bar during calibration.
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 0,
            calib_batches: 8,
            gpu: Some(DeviceOptions::default()),
            timing_runs: 5,
            progress: false,
        }
    }
}

/// One row of the demo table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoRow {
    /// `float`, `weight-only` or `static`.
    pub mode: String,
    /// Activation observer (static rows).
    pub observer: Option<String>,
    /// Whether calibration data was run.
    pub calibrated: bool,
    /// MSE against the float conv.
    pub mse: f64,
    /// SQNR against the float conv, dB.
    pub sqnr_db: f64,
    /// Input qparams (static rows).
    pub input_scale: Option<f32>,
    /// Input zero point (static rows).
    pub input_zero_point: Option<i32>,
    /// Output qparams (static rows).
    pub output_scale: Option<f32>,
    /// Output zero point (static rows).
    pub output_zero_point: Option<i32>,
}

/// GPU-vs-CPU check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuCheck {
    /// Adapter name and backend, when one opened.
    pub adapter: Option<String>,
    /// Whether the GPU output ints equal the CPU reference's (None if no GPU).
    pub bit_exact: Option<bool>,
    /// Number of differing output ints.
    pub mismatches: usize,
    /// Why there is no GPU result, if so.
    pub note: Option<String>,
}

/// One timing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    /// What was timed.
    pub path: String,
    /// Median milliseconds.
    pub ms: f64,
    /// 2·MACs / time, in GOPS.
    pub gops: f64,
}

/// Everything the demo measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoReport {
    /// Input dims.
    pub input: [usize; 4],
    /// Weight dims.
    pub weight: [usize; 4],
    /// Calibration batches.
    pub calib_batches: usize,
    /// The table.
    pub rows: Vec<DemoRow>,
    /// GPU check.
    pub gpu_check: GpuCheck,
    /// Timings of the int8 conv.
    pub timings: Vec<Timing>,
}

fn median_ms(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut t = Vec::new();
    for _ in 0..runs.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

fn static_row(
    qm: &QuantizedModel,
    x: &Tensor<f32>,
    y_float: &Tensor<f32>,
    observer: &str,
    calibrated: bool,
) -> Result<DemoRow> {
    let y = qm.run(x, &Device::Cpu)?;
    let m = error_metrics(&y_float.data, &y.y.data);
    Ok(DemoRow {
        mode: "static".into(),
        observer: Some(observer.into()),
        calibrated,
        mse: m.mse,
        sqnr_db: m.sqnr_db,
        input_scale: Some(qm.input_qp().scale),
        input_zero_point: Some(qm.input_qp().zero_point),
        output_scale: Some(qm.output_qp().scale),
        output_zero_point: Some(qm.output_qp().zero_point),
    })
}

/// Runs the demo.
pub fn run_demo(opts: &DemoOptions) -> Result<DemoReport> {
    let x_dims = [1, 132, 64, 64];
    let w_dims = [121, 132, 3, 3];
    let mut rng = Rng::new(opts.seed);
    // kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (O * KH * KW)).
    let std = (2.0f32 / (121.0 * 9.0)).sqrt();
    let w = Tensor::new(w_dims.to_vec(), rng.normal_vec(121 * 132 * 9, std))?;
    let numel = x_dims.iter().product();
    let x = Tensor::new(x_dims.to_vec(), rng.uniform_vec(numel))?;
    let calib: Vec<Tensor<f32>> = (0..opts.calib_batches)
        .map(|_| Tensor::new(x_dims.to_vec(), rng.uniform_vec(numel)))
        .collect::<Result<_>>()?;
    let model = Model::builder()
        .conv2d("conv", w.clone(), None, ConvParams::default(), false)
        .build()?;
    let s = ConvShape::new(x_dims, w_dims, ConvParams::default())?;
    let fopts = FastConvOptions::default();
    let y_float = Tensor::new(
        s.output_dims().to_vec(),
        cpu::fast::conv2d_f32(&x.data, &w.data, None, &s, &fopts)?,
    )?;

    let mut rows = vec![DemoRow {
        mode: "float".into(),
        observer: None,
        calibrated: false,
        mse: 0.0,
        sqnr_db: f64::INFINITY,
        input_scale: None,
        input_zero_point: None,
        output_scale: None,
        output_zero_point: None,
    }];

    // Weight-only: int8 weights dequantized, float activations.
    let wqp = weight_qparams(&w.data, 121, QScheme::PerTensorSymmetric, QDtype::QInt8)?;
    let wq = cpu::reference::quantize_weight(&w.data, &wqp, 121)?;
    let wqp0 = QParams {
        scale: wqp.scale(0),
        zero_point: wqp.zero_point(0),
        dtype: QDtype::QInt8,
    };
    let w_deq: Vec<f32> = wq
        .iter()
        .map(|&v| dequantize_one(v as i32, &wqp0))
        .collect();
    let y_wo = cpu::fast::conv2d_f32(&x.data, &w_deq, None, &s, &fopts)?;
    let m = error_metrics(&y_float.data, &y_wo);
    rows.push(DemoRow {
        mode: "weight-only".into(),
        observer: None,
        calibrated: false,
        mse: m.mse,
        sqnr_db: m.sqnr_db,
        input_scale: None,
        input_zero_point: None,
        output_scale: None,
        output_zero_point: None,
    });

    // Static, without calibration (explicit opt-in to PyTorch's default).
    let prepared = PreparedModel::new(model.clone(), QConfig::qnnpack())?;
    let (qm, _warnings) = prepared.convert(&ConvertOptions {
        allow_uncalibrated: true,
        ..Default::default()
    })?;
    rows.push(static_row(&qm, &x, &y_float, "histogram", false)?);

    // Static, calibrated, per observer.
    let mut hist_model = None;
    for kind in [
        ObserverKind::MinMax,
        ObserverKind::MovingAverageMinMax,
        ObserverKind::Histogram,
    ] {
        let mut p = PreparedModel::new(model.clone(), QConfig::qnnpack().with_observer(kind))?;
        if opts.progress {
            super::progress::calibrate_with_bar(&mut p, &calib)?;
        } else {
            p.calibrate_all(&calib, false)?;
        }
        let (qm, _) = p.convert(&ConvertOptions::default())?;
        rows.push(static_row(&qm, &x, &y_float, kind.name(), true)?);
        if kind == ObserverKind::Histogram {
            hist_model = Some(qm);
        }
    }
    let qm = hist_model.expect("histogram row ran");

    // Timings of the int8 conv on the CPU.
    let c = &qm.convs()[0];
    let x_q = squint::quant::quantize_slice(&x.data, &qm.input_qp());
    let gops = |ms: f64| 2.0 * s.macs() as f64 / (ms * 1e-3) / 1e9;
    let mut timings = Vec::new();
    let mut y_ref = Vec::new();
    let ms = median_ms(1, || {
        y_ref =
            cpu::reference::conv2d_quantized(&x_q, &qm.input_qp(), c.w_q(), c.w_qp(), c.epi(), &s)?;
        Ok(())
    })?;
    timings.push(Timing {
        path: "int8 cpu reference".into(),
        ms,
        gops: gops(ms),
    });
    let ms = median_ms(opts.timing_runs, || {
        cpu::fast::conv2d_quantized(&x_q, &qm.input_qp(), c.w_q(), c.w_qp(), c.epi(), &s, &fopts)
            .map(|_| ())
    })?;
    timings.push(Timing {
        path: format!("int8 cpu fast ({})", cpu::fast::detected_isa()),
        ms,
        gops: gops(ms),
    });
    let ms = median_ms(opts.timing_runs, || {
        cpu::fast::conv2d_f32(&x.data, &w.data, None, &s, &fopts).map(|_| ())
    })?;
    timings.push(Timing {
        path: "float32 cpu".into(),
        ms,
        gops: gops(ms),
    });

    // GPU check and timing.
    let mut gpu_check = GpuCheck {
        adapter: None,
        bit_exact: None,
        mismatches: 0,
        note: None,
    };
    match opts.gpu.as_ref().map(GpuContext::open) {
        None => gpu_check.note = Some("GPU part skipped (--no-gpu)".into()),
        Some(Err(e)) => gpu_check.note = Some(e.to_string()),
        Some(Ok(ctx)) => {
            let r = ctx.adapter_report();
            gpu_check.adapter = Some(format!("{} ({})", r.name, r.backend));
            let dev = Device::Gpu(ctx.clone());
            let y_gpu = qm.run(&x, &dev)?;
            let mismatches = y_gpu
                .q
                .data
                .iter()
                .zip(&y_ref)
                .filter(|(a, b)| a != b)
                .count()
                + y_gpu.q.data.len().abs_diff(y_ref.len());
            gpu_check.bit_exact = Some(mismatches == 0);
            gpu_check.mismatches = mismatches;
            let layer = squint::gpu::GpuConv2d::new(
                &ctx,
                c.w_q(),
                c.w_dims(),
                c.w_qp(),
                c.epi(),
                c.params(),
            )?;
            let xg = ctx.upload_q(&x_q, x_dims, qm.input_qp().dtype)?;
            // Warm-up (pipeline creation), then time conv + read-back.
            ctx.read_q(&layer.run(&ctx, &xg, &qm.input_qp())?)?;
            let ms = median_ms(opts.timing_runs, || {
                ctx.read_q(&layer.run(&ctx, &xg, &qm.input_qp())?)
                    .map(|_| ())
            })?;
            timings.push(Timing {
                path: format!("int8 gpu conv + read-back ({})", r.name),
                ms,
                gops: gops(ms),
            });
            let ms = median_ms(opts.timing_runs, || qm.run(&x, &dev).map(|_| ()))?;
            timings.push(Timing {
                path: "int8 gpu end to end (upload f32, quantize, conv, dequantize, read)".into(),
                ms,
                gops: gops(ms),
            });
        }
    }
    Ok(DemoReport {
        input: x_dims,
        weight: w_dims,
        calib_batches: opts.calib_batches,
        rows,
        gpu_check,
        timings,
    })
}

/// The demo as a human-readable table.
pub fn format_demo(r: &DemoReport) -> String {
    let mut s = format!(
        "Conv2d(132, 121, 3, bias=False), input {:?} ~ U[0,1), kaiming-normal fan_out weights, {} calibration batches\n\n",
        r.input, r.calib_batches
    );
    s += &format!(
        "{:<12} {:<22} {:>11} {:>9}   {:>20}   {:>20}\n",
        "mode", "observer", "MSE", "SQNR dB", "input scale / zp", "output scale / zp"
    );
    let qp = |sc: Option<f32>, zp: Option<i32>| match (sc, zp) {
        (Some(sc), Some(zp)) => format!("{sc:>12.6e} / {zp:<3}"),
        _ => "-".into(),
    };
    for row in &r.rows {
        let obs = match (&row.observer, row.calibrated) {
            (Some(o), true) => o.to_string(),
            (Some(_), false) => "none (NOT calibrated)".into(),
            (None, _) => "-".into(),
        };
        s += &format!(
            "{:<12} {:<22} {:>11.4e} {:>9.2}   {:>20}   {:>20}\n",
            row.mode,
            obs,
            row.mse,
            row.sqnr_db,
            qp(row.input_scale, row.input_zero_point),
            qp(row.output_scale, row.output_zero_point)
        );
    }
    s += "\nThe uncalibrated row is the classic mistake: no data reached the observers, so PyTorch's default\nscale 1.0 / zero point 0 quantizes U[0,1) inputs to just 0 and 1. squint refuses to convert\nsuch a model unless asked to (`--allow-uncalibrated`).\n\n";
    match (&r.gpu_check.adapter, r.gpu_check.bit_exact) {
        (Some(a), Some(ok)) => {
            s += &format!(
                "GPU check (histogram model) on {a}: {}\n",
                if ok {
                    "bit-exact with the CPU reference".to_string()
                } else {
                    format!("{} MISMATCHES", r.gpu_check.mismatches)
                }
            )
        }
        _ => {
            s += &format!(
                "GPU check: skipped — {}\n",
                r.gpu_check.note.as_deref().unwrap_or("no adapter")
            )
        }
    }
    s += "\nint8 conv timings (median):\n";
    for t in &r.timings {
        s += &format!("  {:<70} {:>9.2} ms {:>8.1} GOPS\n", t.path, t.ms, t.gops);
    }
    s
}
