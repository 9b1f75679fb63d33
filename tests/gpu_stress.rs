//! Many threads on one GPU device while the CPU is saturated: no panic, no error, every result
//! exact.
//!
//! wgpu's GL backend panics when its context lock waits too long, and Mesa llvmpipe holds that
//! lock while it compiles a pipeline (slow with a cold shader cache, as on every fresh machine)
//! or runs a long dispatch; squint serialises its use of such a device. This test makes that
//! situation as likely as it gets: on every adapter, 4 threads run one model through every
//! kernel variant (so pipelines are compiled while other threads dispatch and read back),
//! each thread building its own layers and dropping them, while 2 more threads keep both
//! cores busy. CI runs it with `MESA_SHADER_CACHE_DISABLE=true`.
//!
//! With no adapter the test prints why and passes, unless `SQUINT_REQUIRE_GPU=1`.

mod common;

use common::{gpu_contexts, variants, Rng};
use squint::pipeline::{ConvertOptions, Device, Model, PreparedModel, QConfig, QuantizedOutput};
use squint::shape::ConvParams;
use squint::tensor::Tensor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;

const WORKERS: usize = 4;
const LOADERS: usize = 2;
/// Runs per worker and kernel variant.
const ROUNDS: usize = 2;

fn random(rng: &mut Rng, dims: &[usize], lo: f32, hi: f32) -> Tensor<f32> {
    let n = dims.iter().product();
    Tensor::new(
        dims.to_vec(),
        (0..n).map(|_| lo + (hi - lo) * rng.unit()).collect(),
    )
    .unwrap()
}

/// A GEMM conv with ReLU, a depthwise conv and a 1x1 conv: every conv kernel.
fn model(rng: &mut Rng) -> Model {
    Model::builder()
        .conv2d(
            "stem",
            random(rng, &[16, 3, 3, 3], -0.5, 0.5),
            Some(random(rng, &[16], -0.1, 0.1).data),
            ConvParams::default().padding(1),
            true,
        )
        .conv2d(
            "dw",
            random(rng, &[16, 1, 3, 3], -0.5, 0.5),
            None,
            ConvParams::default().padding(1).groups(16),
            false,
        )
        .conv2d(
            "project",
            random(rng, &[8, 16, 1, 1], -0.5, 0.5),
            Some(random(rng, &[8], -0.1, 0.1).data),
            ConvParams::default(),
            false,
        )
        .build()
        .unwrap()
}

#[test]
fn many_threads_on_one_device_under_full_cpu_load_get_exact_results_without_panics() {
    let ctxs = gpu_contexts();
    let mut rng = Rng::new(0x5752_4553);
    let mut p = PreparedModel::new(model(&mut rng), QConfig::qnnpack()).unwrap();
    let batches: Vec<_> = (0..3)
        .map(|_| random(&mut rng, &[1, 3, 12, 12], 0.0, 1.0))
        .collect();
    p.calibrate_all(&batches, false).unwrap();
    let (qm, _) = p.convert(&ConvertOptions::default()).unwrap();
    // Inputs of several shapes (different buffer sizes and dispatch counts).
    let xs: Vec<_> = [[1, 3, 12, 12], [2, 3, 9, 17], [1, 3, 31, 7]]
        .iter()
        .map(|d| random(&mut rng, d, 0.0, 1.0))
        .collect();
    let want: Vec<QuantizedOutput> = xs
        .iter()
        .map(|x| qm.run(x, &Device::CpuReference).unwrap())
        .collect();

    for base in ctxs {
        let name = base.adapter_report().summary();
        let vs = variants(&base);
        let stop = AtomicBool::new(false);
        let spins = AtomicU64::new(0);
        let barrier = Barrier::new(WORKERS + LOADERS);
        let runs: usize = std::thread::scope(|s| {
            // Keep both cores busy for as long as the workers run.
            for _ in 0..LOADERS {
                s.spawn(|| {
                    barrier.wait();
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..100_000 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        }
                        spins.fetch_add(1, Ordering::Relaxed);
                    }
                    std::hint::black_box(x);
                });
            }
            let workers: Vec<_> = (0..WORKERS)
                .map(|t| {
                    let (qm, xs, want, vs, barrier, name) = (&qm, &xs, &want, &vs, &barrier, &name);
                    s.spawn(move || {
                        barrier.wait();
                        let mut n = 0;
                        for r in 0..ROUNDS * vs.len() {
                            // Threads walk the variants in different orders, so pipelines
                            // compile on one thread while the others dispatch.
                            let (vname, ctx) = &vs[(r + t * 3) % vs.len()];
                            // A fresh clone builds (and later drops) its own GPU layers.
                            let model = qm.clone();
                            let device = Device::Gpu(ctx.clone());
                            let i = (r + t) % xs.len();
                            let y = model.run(&xs[i], &device).unwrap_or_else(|e| {
                                panic!("{name} [{vname}] thread {t} run {r}: {e}")
                            });
                            assert!(
                                y == want[i],
                                "{name} [{vname}] thread {t} run {r}: result differs"
                            );
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let n = workers.into_iter().map(|h| h.join().unwrap()).sum();
            stop.store(true, Ordering::Relaxed);
            n
        });
        assert_eq!(runs, WORKERS * ROUNDS * vs.len(), "{name}");
        assert!(
            spins.load(Ordering::Relaxed) > 0,
            "{name}: the load threads did not run"
        );
        eprintln!(
            "{name}: {runs} exact runs from {WORKERS} threads over {} kernel variants, both \
             cores loaded",
            vs.len()
        );
    }
}
