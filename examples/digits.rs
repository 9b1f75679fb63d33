//! The worked example: a small residual CNN trained in PyTorch on scikit-learn's `load_digits`
//! (`scripts/train_digits.py`), exported to ONNX, quantized by squint, and scored on the
//! held-out split — float, int8 calibrated, and int8 *uncalibrated* (the classic mistake:
//! every scale left at PyTorch's default 1.0).
//!
//! ```sh
//! cargo run --release --example digits
//! ```

use squint::io::{npy, onnx, onnx_qdq};
use squint::pipeline::qdq;
use squint::pipeline::qgraph::{GpuBackend, PreparedGraph, QuantizedGraph, ReferenceBackend};
use squint::pipeline::{ConvertOptions, QConfig};
use squint::tensor::Tensor;
use std::path::{Path, PathBuf};

/// Accuracies on the held-out split.
#[derive(Debug, Clone, Copy)]
pub struct Scores {
    /// Float32 model.
    pub float: f64,
    /// Int8, calibrated on the calibration batches.
    pub int8: f64,
    /// Int8 converted without calibration (scale 1.0, zero point 0 everywhere).
    pub int8_uncalibrated: f64,
    /// MSE of the calibrated int8 logits against the float logits.
    pub int8_mse: f64,
    /// Test images.
    pub images: usize,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits")
}

/// The test split cut into batches of the model's batch size (the last one padded with its
/// first image), with the number of real images in each.
fn batches(x: &Tensor<f32>, batch: usize) -> squint::Result<Vec<(Tensor<f32>, usize)>> {
    let per = x.dims[1..].iter().product::<usize>();
    let n = x.dims[0];
    let mut out = Vec::new();
    for start in (0..n).step_by(batch) {
        let real = batch.min(n - start);
        let mut data = x.data[start * per..(start + real) * per].to_vec();
        for _ in real..batch {
            data.extend_from_slice(&x.data[start * per..(start + 1) * per]);
        }
        let mut dims = x.dims.clone();
        dims[0] = batch;
        out.push((Tensor::new(dims, data)?, real));
    }
    Ok(out)
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap_or(0)
}

/// The logits of every real test image, row after row.
fn logits(
    run: impl Fn(&Tensor<f32>) -> squint::Result<Tensor<f32>>,
    test: &[(Tensor<f32>, usize)],
) -> squint::Result<(Vec<f32>, usize)> {
    let mut out = Vec::new();
    let mut classes = 0;
    for (x, real) in test {
        let l = run(x)?;
        classes = l.dims[1];
        out.extend_from_slice(&l.data[..real * classes]);
    }
    Ok((out, classes))
}

fn accuracy_of((l, classes): &(Vec<f32>, usize), labels: &[i32]) -> f64 {
    let correct = l
        .chunks_exact(*classes)
        .zip(labels)
        .filter(|(row, &y)| argmax(row) as i32 == y)
        .count();
    correct as f64 / labels.len() as f64
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64
}

/// Imports, calibrates, converts and scores the digits model with `qconfig`.
pub fn evaluate(qconfig: QConfig) -> squint::Result<Scores> {
    let graph = onnx::load(&dir().join("model.onnx"))?;
    let batch = graph.value(graph.inputs()[0]).dims[0];
    let x = npy::read::<f32>(dir().join("test_x.npy"))?;
    let labels = npy::read::<i32>(dir().join("test_y.npy"))?.data;
    let test = batches(&x, batch)?;
    let calib = npy::read::<f32>(dir().join("calib.npy"))?.split_axis0()?;

    let float_logits = logits(
        |x| Ok(graph.run_f32(std::slice::from_ref(x))?.remove(0)),
        &test,
    )?;
    let mut prepared = PreparedGraph::new(graph, qconfig)?;
    let run_int8 = |q: &QuantizedGraph| {
        logits(
            |x| {
                Ok(
                    q.run(&mut ReferenceBackend::new(q), std::slice::from_ref(x))?
                        .outputs
                        .remove(0),
                )
            },
            &test,
        )
    };
    // The classic mistake first: convert before any calibration data went through.
    let uncalibrated = ConvertOptions {
        allow_uncalibrated: true,
        ..Default::default()
    };
    let (q_uncal, _warnings) = prepared.convert(&uncalibrated)?;
    let int8_uncalibrated = accuracy_of(&run_int8(&q_uncal)?, &labels);
    for b in calib {
        prepared.calibrate(&[b])?;
    }
    let (q, _) = prepared.convert(&ConvertOptions::default())?;
    let int8_logits = run_int8(&q)?;
    Ok(Scores {
        float: accuracy_of(&float_logits, &labels),
        int8: accuracy_of(&int8_logits, &labels),
        int8_uncalibrated,
        int8_mse: mse(&int8_logits.0, &float_logits.0),
        images: labels.len(),
    })
}

/// ONNX Runtime's QDQ model of the digits model (`scripts/quantize_digits_ort.py`, `tag`
/// `per_tensor` or `per_channel`) run by squint with ORT's int8 formulas: accuracy on the
/// held-out split and the MSE of its logits against the float model's.
pub fn evaluate_qdq(tag: &str) -> squint::Result<(f64, f64)> {
    let graph = onnx::load(&dir().join("model.onnx"))?;
    let m = onnx_qdq::load(&dir().join(format!("model_qdq_{tag}.onnx")))?;
    let batch = m.graph.value(m.graph.inputs()[0]).dims[0];
    let test = batches(&npy::read::<f32>(dir().join("test_x.npy"))?, batch)?;
    let labels = npy::read::<i32>(dir().join("test_y.npy"))?.data;
    let float_logits = logits(
        |x| Ok(graph.run_f32(std::slice::from_ref(x))?.remove(0)),
        &test,
    )?;
    let add = qdq::native_add_kernel();
    let q_logits = logits(
        |x| {
            Ok(qdq::run_reference(&m, std::slice::from_ref(x), add)?
                .outputs
                .remove(0))
        },
        &test,
    )?;
    Ok((
        accuracy_of(&q_logits, &labels),
        mse(&q_logits.0, &float_logits.0),
    ))
}

/// Calibrates and converts with `qconfig`, then runs every test batch on the GPU `ctx` and on
/// the CPU reference; returns how many int8 output values there were and how many differ.
pub fn gpu_check(qconfig: QConfig, ctx: squint::gpu::GpuContext) -> squint::Result<(usize, usize)> {
    let graph = onnx::load(&dir().join("model.onnx"))?;
    let batch = graph.value(graph.inputs()[0]).dims[0];
    let test = batches(&npy::read::<f32>(dir().join("test_x.npy"))?, batch)?;
    let mut prepared = PreparedGraph::new(graph, qconfig)?;
    for b in npy::read::<f32>(dir().join("calib.npy"))?.split_axis0()? {
        prepared.calibrate(&[b])?;
    }
    let (q, _) = prepared.convert(&ConvertOptions::default())?;
    let mut gpu = GpuBackend::new(ctx, &q);
    let (mut total, mut differ) = (0, 0);
    for (x, _) in &test {
        let x = std::slice::from_ref(x);
        let (g, c) = (
            q.run(&mut gpu, x)?,
            q.run(&mut ReferenceBackend::new(&q), x)?,
        );
        for (a, b) in g.values.iter().zip(&c.values) {
            total += b.data.len();
            differ += a.data.iter().zip(&b.data).filter(|(u, v)| u != v).count();
        }
    }
    Ok((total, differ))
}

#[allow(dead_code)]
fn main() -> squint::Result<()> {
    for name in ["x86", "qnnpack"] {
        let s = evaluate(QConfig::preset(name)?)?;
        println!(
            "qconfig {name:<8} {} test images: float {:.2} %, int8 {:.2} % (logits MSE {:.4}), int8 without calibration {:.2} %",
            s.images,
            100.0 * s.float,
            100.0 * s.int8,
            s.int8_mse,
            100.0 * s.int8_uncalibrated
        );
    }
    for tag in ["per_tensor", "per_channel"] {
        let (acc, mse) = evaluate_qdq(tag)?;
        println!(
            "ONNX Runtime QDQ {tag:<11} (run by squint): int8 {:.2} % (logits MSE {mse:.4})",
            100.0 * acc
        );
    }
    match squint::gpu::GpuContext::open(&Default::default()) {
        Ok(ctx) => {
            let name = ctx.adapter_report().summary();
            let (total, differ) = gpu_check(QConfig::x86(), ctx)?;
            println!("GPU {name}: {differ} of {total} int8 values differ from the CPU reference");
        }
        Err(e) => println!("GPU check skipped: {e}"),
    }
    Ok(())
}
