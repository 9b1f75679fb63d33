//! One `QuantizedModel` run from several threads at once — on one shared GPU device (per-call
//! buffers, the weight cache filled by whichever thread comes first) and on the CPU devices —
//! gives exactly the single-threaded results.

mod hardening_support;

use hardening_support::*;
use squint::pipeline::{Device, QConfig, QuantizedModel, QuantizedOutput};
use squint::tensor::Tensor;
use std::sync::Barrier;

const THREADS: usize = 4;
const RUNS_PER_THREAD: usize = 3;

/// Opens the GPU; `None` (with a message) when no adapter opens, unless SQUINT_REQUIRE_GPU=1.
fn gpu_device() -> Option<Device> {
    squint::gpu::testing::best().map(Device::Gpu)
}

/// Inputs of different shapes, so concurrent calls need buffers of different sizes.
fn inputs() -> Vec<Tensor<f32>> {
    [[1, 3, 6, 6], [2, 3, 16, 16], [1, 3, 24, 20], [3, 3, 9, 7]]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let n = d.iter().product();
            Tensor::new(d.to_vec(), values(n, 100 + i as u64)).unwrap()
        })
        .collect()
}

/// Runs `jobs` (device, input index) from `THREADS` threads that start together; every result
/// must equal `expected[input index]`. Returns how many runs were checked.
fn hammer(
    qm: &QuantizedModel,
    jobs: &[Vec<(&Device, usize)>],
    xs: &[Tensor<f32>],
    expected: &[QuantizedOutput],
) -> usize {
    let barrier = Barrier::new(jobs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|list| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    for &(device, i) in list {
                        let y = qm
                            .run(&xs[i], device)
                            .unwrap_or_else(|e| panic!("{device:?} input {i}: {e}"));
                        assert!(y == expected[i], "{device:?} input {i}: result differs");
                    }
                    list.len()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

#[test]
fn one_quantized_model_run_from_many_threads_gives_the_single_threaded_results() {
    let xs = inputs();
    let mut devices = vec![Device::CpuReference, Device::Cpu];
    devices.extend(gpu_device());
    for qconfig in [QConfig::qnnpack(), QConfig::tflite()] {
        let trained = tiny_quantized(qconfig.clone());
        // Single-threaded reference results on the CPU reference device.
        let expected: Vec<QuantizedOutput> = xs
            .iter()
            .map(|x| trained.run(x, &Device::CpuReference).unwrap())
            .collect();
        for device in &devices {
            // A fresh clone has an empty GPU weight cache: the threads race to fill it.
            let qm = trained.clone();
            let jobs: Vec<Vec<(&Device, usize)>> = (0..THREADS)
                .map(|t| {
                    (0..RUNS_PER_THREAD)
                        .map(|r| (device, (t + r) % xs.len()))
                        .collect()
                })
                .collect();
            let n = hammer(&qm, &jobs, &xs, &expected);
            assert_eq!(n, THREADS * RUNS_PER_THREAD);
        }
        // Every device at once, from one model: threads alternate devices run by run.
        let qm = trained.clone();
        let jobs: Vec<Vec<(&Device, usize)>> = (0..THREADS)
            .map(|t| {
                (0..RUNS_PER_THREAD * devices.len())
                    .map(|r| (&devices[(t + r) % devices.len()], (t * 7 + r) % xs.len()))
                    .collect()
            })
            .collect();
        let n = hammer(&qm, &jobs, &xs, &expected);
        assert_eq!(
            n,
            THREADS * RUNS_PER_THREAD * devices.len(),
            "{}",
            qconfig.name
        );
    }
}

/// Threads that each open every adapter, run on it and drop it, all at once and again, get
/// the single-threaded results: device creation and destruction across threads. On an
/// NVIDIA H200 this deadlocked inside the driver before squint serialised them; Mesa's
/// adapters never did, so only a real GPU (`benches/real_gpu.sh` runs this file) can catch
/// that regression. Each device compiles its pipelines anew: 2 rounds keep it short.
#[test]
fn threads_that_each_open_use_and_drop_their_own_devices_get_exact_results() {
    if gpu_device().is_none() {
        return;
    }
    const ROUNDS: usize = 2;
    let xs = inputs();
    let qm = tiny_quantized(QConfig::qnnpack());
    let expected: Vec<QuantizedOutput> = xs
        .iter()
        .map(|x| qm.run(x, &Device::CpuReference).unwrap())
        .collect();
    let barrier = Barrier::new(THREADS);
    let runs: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (barrier, qm, xs, expected) = (&barrier, &qm, &xs, &expected);
                s.spawn(move || {
                    barrier.wait();
                    let mut runs = 0;
                    for r in 0..ROUNDS {
                        // Opened here, dropped at the end of the iteration.
                        for ctx in squint::gpu::testing::contexts() {
                            let name = ctx.adapter_report().summary();
                            let device = Device::Gpu(ctx);
                            let i = (t + r) % xs.len();
                            let y = qm
                                .clone()
                                .run(&xs[i], &device)
                                .unwrap_or_else(|e| panic!("{name}, input {i}: {e}"));
                            assert!(y == expected[i], "{name}, input {i}: result differs");
                            runs += 1;
                        }
                    }
                    runs
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let adapters = squint::gpu::testing::contexts().len();
    assert_eq!(runs, THREADS * ROUNDS * adapters);
}

#[test]
fn errors_in_one_thread_do_not_disturb_the_others() {
    let xs = inputs();
    let mut devices = vec![Device::Cpu];
    devices.extend(gpu_device());
    let trained = tiny_quantized(QConfig::qnnpack());
    let expected: Vec<QuantizedOutput> = xs
        .iter()
        .map(|x| trained.run(x, &Device::CpuReference).unwrap())
        .collect();
    let bad = Tensor::new(vec![1, 2, 6, 6], vec![0.0; 72]).unwrap();
    for device in &devices {
        let qm = trained.clone();
        let barrier = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (qm, xs, expected, bad, barrier) = (&qm, &xs, &expected, &bad, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for r in 0..RUNS_PER_THREAD {
                        if t % 2 == 0 {
                            let e = qm.run(bad, device).unwrap_err();
                            assert!(matches!(e, squint::Error::Shape(_)), "{e}");
                        } else {
                            let i = (t + r) % xs.len();
                            assert!(qm.run(&xs[i], device).unwrap() == expected[i]);
                        }
                    }
                });
            }
        });
    }
}
