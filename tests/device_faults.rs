//! Device faults (issue 6, item 3): a lost device or an out-of-memory error during a run
//! surfaces as an error — never a panic, never wrong bytes — and the process stays usable: the
//! next call reopens a lost device (and a `QuantizedModel` rebuilds its layers on it).
//!
//! Device loss is real as far as wgpu and the driver know: `simulate_device_loss` calls
//! wgpu's `Device::destroy`. Out-of-memory is simulated at squint's error-capture layer
//! (software adapters allocate host memory lazily, so a real one cannot be provoked safely).

mod common;
mod hardening_support;

use common::gpu_contexts;

use hardening_support::*;
use squint::pipeline::{Device, QConfig, QuantizedModel, QuantizedOutput};
use squint::quant::{QDtype, QParams};
use squint::tensor::Tensor;
use squint::Error;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The tiny model, an input, and its output on the CPU reference.
fn model_input_expected() -> (QuantizedModel, Tensor<f32>, QuantizedOutput) {
    let qm = tiny_quantized(QConfig::qnnpack());
    let x = Tensor::new(vec![2, 3, 12, 10], values(2 * 3 * 12 * 10, 77)).unwrap();
    let expected = qm.run(&x, &Device::CpuReference).unwrap();
    (qm, x, expected)
}

#[test]
fn a_model_run_after_device_loss_reopens_the_device_and_gives_the_same_bytes() {
    let (qm, x, expected) = model_input_expected();
    for ctx in gpu_contexts() {
        let name = ctx.adapter_report().summary();
        let device = Device::Gpu(ctx.clone());
        assert!(qm.run(&x, &device).unwrap() == expected, "{name}: before");
        for round in 0..2 {
            ctx.simulate_device_loss().unwrap();
            assert!(ctx.is_lost(), "{name}: the loss was not noticed");
            let y = qm
                .run(&x, &device)
                .unwrap_or_else(|e| panic!("{name}, round {round}: run after loss: {e}"));
            assert!(
                y == expected,
                "{name}, round {round}: result differs after reopening"
            );
        }
    }
}

#[test]
fn tensors_and_layers_from_a_lost_device_give_device_lost_errors() {
    let qp = QParams::new(0.05, 3, QDtype::QUInt8).unwrap();
    let data: Vec<f32> = values(2 * 5 * 7, 5);
    for ctx in gpu_contexts() {
        let name = ctx.adapter_report().summary();
        let xf = ctx.upload_f32(&data, [1, 2, 5, 7]).unwrap();
        let q = ctx.quantize(&xf, &qp).unwrap();
        let before = ctx.read_q(&q).unwrap();
        ctx.simulate_device_loss().unwrap();
        let checks: Vec<(&str, squint::Result<()>)> = vec![
            ("read_q", ctx.read_q(&q).map(drop)),
            ("quantize", ctx.quantize(&xf, &qp).map(drop)),
            ("dequantize", ctx.dequantize(&q, &qp).map(drop)),
            ("read_f32", ctx.read_f32(&xf).map(drop)),
        ];
        for (what, r) in checks {
            match r {
                Err(Error::DeviceLost(msg)) => {
                    assert!(msg.contains("before it was lost"), "{name} {what}: {msg}")
                }
                other => panic!("{name} {what}: expected DeviceLost, got {other:?}"),
            }
        }
        // Uploading again works on the reopened device, with the same bytes.
        let xf = ctx.upload_f32(&data, [1, 2, 5, 7]).unwrap();
        let q = ctx.quantize(&xf, &qp).unwrap();
        assert_eq!(ctx.read_q(&q).unwrap(), before, "{name}");
        assert!(
            !ctx.is_lost(),
            "{name}: the device in use is the reopened one"
        );
    }
}

#[test]
fn device_loss_while_other_threads_run_gives_errors_or_exact_results_never_panics() {
    const LOSSES: usize = 4;
    let (qm, x, expected) = model_input_expected();
    for ctx in gpu_contexts() {
        let name = ctx.adapter_report().summary();
        let device = Device::Gpu(ctx.clone());
        let done = AtomicBool::new(false);
        let exact = AtomicUsize::new(0);
        let lost = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                let (qm, x, device, expected) = (&qm, &x, &device, &expected);
                let (done, exact, lost, name) = (&done, &exact, &lost, &name);
                s.spawn(move || {
                    while !done.load(Ordering::SeqCst) {
                        match qm.run(x, device) {
                            Ok(y) => {
                                assert!(y == *expected, "{name}: a run returned wrong bytes");
                                exact.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(Error::DeviceLost(_)) => {
                                lost.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => panic!("{name}: unexpected error: {e}"),
                        }
                    }
                });
            }
            // Each loss comes after the runners have recovered from the previous one (an
            // exact run since), a few milliseconds into the next runs.
            for round in 0..LOSSES {
                let seen = exact.load(Ordering::SeqCst);
                let start = Instant::now();
                while exact.load(Ordering::SeqCst) == seen {
                    assert!(
                        start.elapsed() < Duration::from_secs(60),
                        "{name}: no exact run within 60 s after loss {round}"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis(1 + 3 * round as u64));
                ctx.simulate_device_loss().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        let (exact, lost) = (exact.into_inner(), lost.into_inner());
        eprintln!("{name}: {exact} exact runs, {lost} DeviceLost errors");
        assert!(exact >= LOSSES, "{name}");
        // Usable afterwards.
        let y: QuantizedOutput = qm.run(&x, &device).unwrap();
        assert!(y == expected, "{name}: after the losses");
    }
}

#[test]
fn out_of_memory_is_an_error_that_releases_cached_buffers_and_the_next_call_succeeds() {
    let (qm, x, expected) = model_input_expected();
    for ctx in gpu_contexts() {
        let name = ctx.adapter_report().summary();
        let device = Device::Gpu(ctx.clone());
        assert!(qm.run(&x, &device).unwrap() == expected, "{name}");
        assert!(ctx.cached_buffer_bytes() > 0, "{name}: nothing pooled");
        ctx.simulate_out_of_memory().unwrap();
        match qm.run(&x, &device) {
            Err(Error::Gpu(msg)) => {
                assert!(msg.contains("Out of Memory"), "{name}: {msg}");
                assert!(msg.contains("released its cached buffers"), "{name}: {msg}");
            }
            other => panic!("{name}: expected an out-of-memory error, got {other:?}"),
        }
        assert!(
            !ctx.is_lost(),
            "{name}: out-of-memory must not count as a loss"
        );
        assert!(
            qm.run(&x, &device).unwrap() == expected,
            "{name}: after OOM"
        );
    }
}

/// A conv model big enough that the GPU needs milliseconds for it (about 0.6 GOP).
fn slow_model_and_input() -> (QuantizedModel, Tensor<f32>) {
    use squint::pipeline::{ConvertOptions, Model, PreparedModel};
    use squint::shape::ConvParams;
    let (c, hw) = (48, 64);
    let w = Tensor::new(vec![c, c, 3, 3], values(c * c * 9, 31)).unwrap();
    let model = Model::builder()
        .conv2d("conv", w, None, ConvParams::default().padding(1), false)
        .build()
        .unwrap();
    let x = Tensor::new(vec![1, c, hw, hw], values(c * hw * hw, 32)).unwrap();
    let mut p = PreparedModel::new(model, QConfig::qnnpack()).unwrap();
    p.calibrate(&x).unwrap();
    (p.convert(&ConvertOptions::default()).unwrap().0, x)
}

#[test]
fn a_wait_longer_than_the_timeout_is_a_timeout_error_and_the_context_stays_usable() {
    let (qm, x) = slow_model_and_input();
    let expected = qm.run(&x, &Device::Cpu).unwrap();
    for ctx in gpu_contexts() {
        let name = ctx.adapter_report().summary();
        let device = Device::Gpu(ctx.clone());
        // Compile and upload first, so that the timed call only waits for the kernels.
        assert!(qm.run(&x, &device).unwrap() == expected, "{name}: warm-up");
        // No GPU finishes a 0.6 GOP conv in a microsecond: the wait gives up. (A loaded
        // machine only makes the GPU slower, and the test surer.) Mesa's GL driver runs the
        // work inside the submission itself, before any wait: there the run may complete.
        ctx.set_wait_timeout(Duration::from_micros(1));
        let started = Instant::now();
        match qm.run(&x, &device) {
            Err(e) => {
                assert!(matches!(e, Error::Timeout(_)), "{name}: {e}");
                assert!(e.to_string().contains("did not finish"), "{name}: {e}");
            }
            Ok(y) => {
                assert!(
                    ctx.adapter_report().backend == "gl",
                    "{name}: a 1 µs wait did not time out"
                );
                assert!(y == expected, "{name}: result differs");
                eprintln!("{name}: the work ran inside the submission; no wait to time out");
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: the timeout did not bound the wait"
        );
        // The context is still usable, and its results exact.
        ctx.set_wait_timeout(Duration::from_secs(300));
        for _ in 0..2 {
            let y = qm
                .run(&x, &device)
                .unwrap_or_else(|e| panic!("{name}: after: {e}"));
            assert!(y == expected, "{name}: result differs after a timeout");
        }
    }
}
