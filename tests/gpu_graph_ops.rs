//! `GpuBackend` against `ReferenceBackend`, bit for bit, on every adapter this process can
//! open (on a machine without a GPU: lavapipe through Vulkan and llvmpipe through GL): seeded
//! sweeps per op and engine, and whole graphs with every op kind. The relu, clip, concat, add
//! and linear checks also run the `FastCpuBackend` (its byte tables and its linear on the fast
//! conv; its pools are the reference's, its convs are checked in `tests/cpu_fast.rs`).
//!
//! Every case must give the same bytes on both backends, or an error on both. With no
//! adapter the tests print why and pass, unless `SQUINT_REQUIRE_GPU=1`.

mod common;

use common::{gpu_contexts, Rng};

use squint::cpu::reference::pool::{AvgOptions, MemoryFormat, Pool2dParams};
use squint::cpu::reference::{CpuCapability, QEngine};
use squint::gpu::GpuContext;
use squint::graph::{Activation, GraphBuilder, LinearOp, Op};
use squint::pipeline::qgraph::{
    FastCpuBackend, GpuBackend, PreparedGraph, QBackend, QLinear, QNode, QTensor, QuantizedGraph,
    ReferenceBackend,
};
use squint::pipeline::{ConvertOptions, QConfig};
use squint::quant::{QDtype, QParams};
use squint::tensor::Tensor;

const ENGINES: [QEngine; 2] = [QEngine::Qnnpack, QEngine::X86];

/// How PyTorch would store the tensor: both, half the time each (quantized convs return
/// channels-last tensors, and some ops round differently on them).
fn format(rng: &mut Rng) -> MemoryFormat {
    if rng.coin(0.5) {
        MemoryFormat::ChannelsLast
    } else {
        MemoryFormat::Contiguous
    }
}

/// A one-node graph converted for `engine`, to get its `ReferenceBackend`.
fn reference(engine: QEngine, isa: CpuCapability) -> ReferenceBackend {
    ReferenceBackend::new(&one_node(engine, isa))
}

/// A one-node graph converted for `engine` on the CPU capability `isa`.
fn one_node(engine: QEngine, isa: CpuCapability) -> QuantizedGraph {
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[1, 1, 2, 2]).unwrap();
    let y = b.node("r", Op::Activation(Activation::Relu), &[x]).unwrap();
    let g = b.build(&[y]).unwrap();
    let qc = match engine {
        QEngine::Qnnpack => QConfig::qnnpack(),
        QEngine::X86 => QConfig::x86(),
    };
    let mut p = PreparedGraph::new(g, qc).unwrap();
    p.calibrate(&[Tensor::new(vec![1, 1, 2, 2], vec![0.0, 1.0, -1.0, 0.5]).unwrap()])
        .unwrap();
    let (mut q, _) = p.convert(&ConvertOptions::default()).unwrap();
    q.set_isa(isa);
    assert_eq!(q.engine(), engine);
    q
}

fn dtype(rng: &mut Rng, engine: QEngine) -> QDtype {
    // The qnnpack engine is mostly quint8 (its qint8 paths are the generic kernels).
    let p = if engine == QEngine::Qnnpack { 0.8 } else { 0.5 };
    if rng.coin(p) {
        QDtype::QUInt8
    } else {
        QDtype::QInt8
    }
}

/// Qparams: power-of-two scales (ties), random ones, tiny ones (saturation), extreme zero
/// points.
fn qparams(rng: &mut Rng, d: QDtype) -> QParams {
    let r = d.full_range();
    let zp = match rng.usize(0, 4) {
        0 => r.min,
        1 => r.max,
        _ => rng.range(r.min as i64, r.max as i64) as i32,
    };
    let scale = match rng.usize(0, 3) {
        0 => 2f32.powi(-(rng.usize(0, 10) as i32)),
        1 => 1e-4 + rng.unit() * 1e-3,
        _ => 0.005 + rng.unit() * 0.2,
    };
    QParams::new(scale, zp, d).unwrap()
}

fn tensor(rng: &mut Rng, dims: &[usize], qp: QParams) -> QTensor {
    let n: usize = dims.iter().product();
    let data = match rng.usize(0, 3) {
        // Clustered at the extremes (saturating sums and outputs).
        0 => (0..n)
            .map(|_| if rng.coin(0.5) { 0 } else { 255 } ^ (rng.usize(0, 3) as u8))
            .collect(),
        _ => (0..n).map(|_| rng.usize(0, 255) as u8).collect(),
    };
    QTensor {
        data,
        dims: dims.to_vec(),
        qp,
    }
}

fn rand_tensor(rng: &mut Rng, dims: &[usize], d: QDtype) -> QTensor {
    let qp = qparams(rng, d);
    tensor(rng, dims, qp)
}

fn dims4(rng: &mut Rng, max_hw: usize) -> Vec<usize> {
    vec![
        rng.usize(1, 3),
        rng.usize(1, 4),
        rng.usize(1, max_hw),
        rng.usize(1, max_hw),
    ]
}

/// Counts of one op's sweep on one adapter and engine.
#[derive(Default, Debug, Clone)]
struct Count {
    equal: usize,
    both_err: usize,
}

impl Count {
    fn check(&mut self, what: &str, gpu: squint::Result<Vec<u8>>, cpu: squint::Result<Vec<u8>>) {
        match (gpu, cpu) {
            (Ok(g), Ok(c)) => {
                if let Some(i) = g.iter().zip(&c).position(|(a, b)| a != b) {
                    panic!(
                        "{what}: element {i}: backend {} != reference {}",
                        g[i], c[i]
                    );
                }
                assert_eq!(g.len(), c.len(), "{what}: lengths");
                self.equal += 1;
            }
            (Err(_), Err(_)) => self.both_err += 1,
            (g, c) => panic!(
                "{what}: backend {:?} but reference {:?}",
                g.map(|_| ()),
                c.map(|_| ())
            ),
        }
    }

    /// `cases` cases ran, at least `min_equal` of them giving bytes on both.
    fn assert_ran(&self, what: &str, cases: usize, min_equal: usize) {
        eprintln!(
            "{what}: {} equal, {} errors on both",
            self.equal, self.both_err
        );
        assert_eq!(self.equal + self.both_err, cases, "{what}");
        assert!(self.equal >= min_equal, "{what}: only {} ran", self.equal);
    }
}

/// Runs `case` `cases` times per engine on every adapter.
/// The backends under test: every GPU adapter (`Some`), then the fast CPU backend (`None`).
fn backends() -> Vec<Option<GpuContext>> {
    gpu_contexts().into_iter().map(Some).chain([None]).collect()
}

fn backend_name(ctx: &Option<GpuContext>) -> String {
    ctx.as_ref().map_or("the fast CPU backend".into(), |c| {
        c.adapter_report().summary()
    })
}

/// The backend of [`backends`]' entry `ctx` for `engine` on the CPU capability `isa`.
fn backend(ctx: &Option<GpuContext>, engine: QEngine, isa: CpuCapability) -> Box<dyn QBackend> {
    match ctx {
        Some(ctx) => Box::new(GpuBackend::with_engine(ctx.clone(), engine, isa)),
        None => Box::new(FastCpuBackend::new(&one_node(engine, isa))),
    }
}

fn sweep(
    op: &str,
    seed: u64,
    cases: usize,
    min_equal: usize,
    mut case: impl FnMut(&mut Rng, QEngine, &mut dyn QBackend, &mut ReferenceBackend, &mut Count, &str),
) {
    for ctx in backends() {
        let name = backend_name(&ctx);
        for engine in ENGINES {
            let isa = CpuCapability::Avx2;
            let mut gpu = backend(&ctx, engine, isa);
            let gpu = gpu.as_mut();
            let mut cpu = reference(engine, isa);
            let mut rng = Rng::new(seed);
            let mut count = Count::default();
            for i in 0..cases {
                let what = format!("{op} {engine:?} case {i} on {name}");
                case(&mut rng, engine, gpu, &mut cpu, &mut count, &what);
            }
            count.assert_ran(&format!("{op} {engine:?} on {name}"), cases, min_equal);
        }
    }
}

#[test]
fn relu_and_clip_equal_the_reference() {
    sweep("relu", 1, 30, 30, |rng, e, g, c, n, what| {
        let d = dtype(rng, e);
        let dims = dims4(rng, 9);
        let x = rand_tensor(rng, &dims, d);
        n.check(what, g.relu(&x), c.relu(&x));
    });
    sweep("clip", 2, 40, 30, |rng, e, g, c, n, what| {
        let d = dtype(rng, e);
        let dims = dims4(rng, 9);
        let x = rand_tensor(rng, &dims, d);
        let lo = (rng.unit() - 0.7) * 4.0;
        let hi = if rng.coin(0.1) {
            lo - 0.5
        } else {
            lo + rng.unit() * 6.0
        };
        n.check(what, g.clip(&x, lo, hi), c.clip(&x, lo, hi));
    });
}

fn pool_params(rng: &mut Rng, dilation: bool) -> Pool2dParams {
    let kernel = [rng.usize(1, 4), rng.usize(1, 4)];
    let mut p = Pool2dParams::new(kernel);
    p.stride = [rng.usize(1, 3), rng.usize(1, 3)];
    p.padding = [rng.usize(0, kernel[0] / 2), rng.usize(0, kernel[1] / 2)];
    if dilation && rng.coin(0.3) {
        p.dilation = [rng.usize(1, 3), rng.usize(1, 3)];
    }
    p.ceil_mode = rng.coin(0.3);
    p
}

#[test]
fn max_pool2d_equals_the_reference() {
    sweep("max_pool2d", 3, 60, 40, |rng, e, g, c, n, what| {
        let d = dtype(rng, e);
        let dims = dims4(rng, 11);
        let x = rand_tensor(rng, &dims, d);
        let p = pool_params(rng, true);
        n.check(what, g.max_pool2d(&x, &p), c.max_pool2d(&x, &p));
    });
}

#[test]
fn dilated_padded_max_pool2d_equals_the_reference() {
    // QNNPACK clamps taps into the input: with dilation a clamped tap can read a pixel outside
    // the true window, which the generic kernel skips.
    sweep("max_pool2d dilated", 8, 40, 30, |rng, _, g, c, n, what| {
        let dims = vec![
            rng.usize(1, 2),
            rng.usize(1, 3),
            rng.usize(5, 12),
            rng.usize(5, 12),
        ];
        let x = rand_tensor(rng, &dims, QDtype::QUInt8);
        let k = [rng.usize(2, 4), rng.usize(2, 4)];
        let mut p = Pool2dParams::new(k);
        p.stride = [rng.usize(1, 2), rng.usize(1, 2)];
        p.padding = [rng.usize(1, k[0] / 2), rng.usize(1, k[1] / 2)];
        p.dilation = [rng.usize(2, 3), rng.usize(2, 3)];
        n.check(what, g.max_pool2d(&x, &p), c.max_pool2d(&x, &p));
    });
}

#[test]
fn avg_pool2d_equals_the_reference() {
    sweep("avg_pool2d", 4, 60, 40, |rng, e, g, c, n, what| {
        let d = dtype(rng, e);
        let dims = dims4(rng, 11);
        let x = rand_tensor(rng, &dims, d);
        let p = pool_params(rng, false);
        let o = AvgOptions {
            count_include_pad: rng.coin(0.5),
            divisor_override: if rng.coin(0.2) {
                Some(rng.range(1, 12))
            } else {
                None
            },
        };
        let f = format(rng);
        n.check(
            what,
            g.avg_pool2d(&x, &p, &o, f),
            c.avg_pool2d(&x, &p, &o, f),
        );
    });
}

#[test]
fn adaptive_avg_pool2d_equals_the_reference() {
    sweep("adaptive_avg_pool2d", 5, 50, 45, |rng, e, g, c, n, what| {
        let d = dtype(rng, e);
        let dims = dims4(rng, 13);
        let x = rand_tensor(rng, &dims, d);
        let out = if rng.coin(0.4) {
            // Divisors of the input size (QNNPACK's path).
            let div = |v: usize, r: &mut Rng| {
                let ds: Vec<usize> = (1..=v).filter(|k| v.is_multiple_of(*k)).collect();
                r.pick(&ds)
            };
            [div(dims[2], rng), div(dims[3], rng)]
        } else {
            [rng.usize(1, dims[2] + 2), rng.usize(1, dims[3] + 2)]
        };
        let f = format(rng);
        n.check(
            what,
            g.adaptive_avg_pool2d(&x, out, f),
            c.adaptive_avg_pool2d(&x, out, f),
        );
    });
}

#[test]
fn adaptive_avg_pool2d_on_tie_prone_windows_equals_the_reference() {
    // Windows of 3x6, 5x6, ... (even sizes with odd factors): sums at exact .5 ties, where
    // the multiplier's two-step rounding `f32(f32(1/kh)/kw)` decides.
    sweep(
        "adaptive_avg_pool2d ties",
        9,
        30,
        30,
        |rng, e, g, c, n, what| {
            let d = dtype(rng, e);
            let (kh, kw) = (rng.pick(&[3, 5, 6, 7]), rng.pick(&[2, 6, 10, 3]));
            let (ho, wo) = (rng.usize(1, 3), rng.usize(1, 2));
            let dims = vec![rng.usize(1, 2), rng.usize(1, 6), kh * ho, kw * wo];
            let mut x = rand_tensor(rng, &dims, d);
            if rng.coin(0.5) {
                // Few distinct values: many sums land on ties.
                for v in &mut x.data {
                    *v = [0u8, 1, 3, 128, 255][(*v % 5) as usize];
                }
            }
            let out = [ho, wo];
            let f = format(rng);
            n.check(
                what,
                g.adaptive_avg_pool2d(&x, out, f),
                c.adaptive_avg_pool2d(&x, out, f),
            );
        },
    );
}

#[test]
fn adaptive_avg_pool2d_rounds_its_multiplier_in_two_steps() {
    // A 7x10 qint8 window averaging -126.5: `f32(f32(1/7)/10)` gives -127, `f32(1/70)` -126.
    let qp = QParams::new(0.1, 0, QDtype::QInt8).unwrap();
    let data: Vec<u8> = (0..70)
        .map(|i| if i % 2 == 0 { 0x81 } else { 0x82 })
        .collect();
    let x = QTensor {
        data,
        dims: vec![1, 1, 7, 10],
        qp,
    };
    let mut runs = 0;
    for ctx in gpu_contexts() {
        for engine in ENGINES {
            let mut g = GpuBackend::with_engine(ctx.clone(), engine, CpuCapability::Avx2);
            let want = reference(engine, CpuCapability::Avx2)
                .adaptive_avg_pool2d(&x, [1, 1], MemoryFormat::Contiguous)
                .unwrap();
            assert_eq!(want, vec![(-127i8) as u8]);
            assert_eq!(
                g.adaptive_avg_pool2d(&x, [1, 1], MemoryFormat::Contiguous)
                    .unwrap(),
                want
            );
            runs += 1;
        }
    }
    assert_eq!(runs, 2 * gpu_contexts().len());
}

#[test]
fn concat_equals_the_reference() {
    sweep("concat", 6, 40, 35, |rng, e, g, c, n, what| {
        let d = dtype(rng, e);
        let rank = if rng.coin(0.3) { 2 } else { 4 };
        let base: Vec<usize> = (0..rank).map(|_| rng.usize(1, 6)).collect();
        let axis = rng.usize(0, rank - 1);
        let k = rng.usize(1, 3);
        let shared = qparams(rng, d);
        let xs: Vec<QTensor> = (0..k)
            .map(|_| {
                let mut dims = base.clone();
                dims[axis] = rng.usize(1, 5);
                let qp = if rng.coin(0.3) {
                    shared
                } else {
                    qparams(rng, d)
                };
                tensor(rng, &dims, qp)
            })
            .collect();
        let refs: Vec<&QTensor> = xs.iter().collect();
        let out = if rng.coin(0.3) {
            shared
        } else {
            qparams(rng, d)
        };
        let f = format(rng);
        n.check(
            what,
            g.concat(&refs, axis, &out, f),
            c.concat(&refs, axis, &out, f),
        );
    });
}

#[test]
fn channels_last_concat_along_channels_equals_the_reference() {
    // ATen's NHWC cat: vector and scalar formulas by channel position; up to 20 channels so
    // that both occur within one input.
    sweep("concat nhwc", 16, 30, 30, |rng, e, g, c, n, what| {
        let d = dtype(rng, e);
        let (b, h, w) = (rng.usize(1, 2), rng.usize(1, 5), rng.usize(1, 5));
        let k = rng.usize(1, 3);
        let xs: Vec<QTensor> = (0..k)
            .map(|_| {
                let qp = qparams(rng, d);
                let ch = rng.usize(1, 20);
                tensor(rng, &[b, ch, h, w], qp)
            })
            .collect();
        let refs: Vec<&QTensor> = xs.iter().collect();
        let out = qparams(rng, d);
        n.check(
            what,
            g.concat(&refs, 1, &out, MemoryFormat::ChannelsLast),
            c.concat(&refs, 1, &out, MemoryFormat::ChannelsLast),
        );
    });
}

#[test]
fn add_equals_the_reference_on_both_engines_and_every_capability() {
    for isa in [CpuCapability::Avx2, CpuCapability::Default] {
        for ctx in backends() {
            let name = backend_name(&ctx);
            for engine in ENGINES {
                let mut g = backend(&ctx, engine, isa);
                let mut c = reference(engine, isa);
                let mut rng = Rng::new(7);
                let mut n = Count::default();
                let cases = 30;
                for i in 0..cases {
                    let what = format!("add {engine:?} {isa:?} case {i} on {name}");
                    let d = dtype(&mut rng, engine);
                    // Sizes around ATen's 64-element vector blocks.
                    let dims = if rng.coin(0.5) {
                        vec![
                            rng.usize(1, 2),
                            rng.usize(1, 3),
                            rng.usize(1, 9),
                            rng.usize(1, 11),
                        ]
                    } else {
                        vec![1, rng.usize(60, 200)]
                    };
                    let a = rand_tensor(&mut rng, &dims, d);
                    let b = rand_tensor(&mut rng, &dims, d);
                    let out = qparams(&mut rng, d);
                    let relu = rng.coin(0.5);
                    // Both layouts alike, or mixed (the x86 engine's scalar path everywhere).
                    let f = [format(&mut rng), format(&mut rng)];
                    let want = c.add(&a, &b, &out, relu, f);
                    // Twice: the fast CPU backend builds its byte-pair tables on the second
                    // sight of the qparams.
                    let first = g.add(&a, &b, &out, relu, f);
                    assert_eq!(first.as_ref().ok(), want.as_ref().ok(), "{what}: first run");
                    n.check(&what, g.add(&a, &b, &out, relu, f), want);
                }
                let min = if engine == QEngine::Qnnpack { 15 } else { 28 };
                n.assert_ran(&format!("add {engine:?} {isa:?} on {name}"), cases, min);
            }
        }
    }
}

#[test]
fn x86_add_takes_atens_vector_and_scalar_paths_like_the_reference() {
    // The pair of `cpu::reference::add`'s probe test: 44 on the vector path, 45 on the scalar.
    let qp = |bits: u32, zp| QParams::new(f32::from_bits(bits), zp, QDtype::QUInt8).unwrap();
    let (qa, qb, out) = (
        qp(0x3c8d_4593, 246),
        qp(0x3cba_e9c1, 249),
        qp(0x3d05_207a, 191),
    );
    let t = |v: u8, qp| QTensor {
        data: vec![v; 70],
        dims: vec![1, 70],
        qp,
    };
    let (a, b) = (t(171, qa), t(97, qb));
    let mut runs = 0;
    for ctx in backends() {
        for isa in [
            CpuCapability::Avx2,
            CpuCapability::Avx512,
            CpuCapability::Default,
        ] {
            let mut g = backend(&ctx, QEngine::X86, isa);
            // The fast CPU backend's tables come on the second run.
            g.add(&a, &b, &out, false, [MemoryFormat::Contiguous; 2])
                .unwrap();
            let y = g
                .add(&a, &b, &out, false, [MemoryFormat::Contiguous; 2])
                .unwrap();
            let want = reference(QEngine::X86, isa)
                .add(&a, &b, &out, false, [MemoryFormat::Contiguous; 2])
                .unwrap();
            assert_eq!(y, want, "{isa:?}");
            let scalar_from = if isa == CpuCapability::Default { 0 } else { 64 };
            assert!(y[..scalar_from].iter().all(|&q| q == 44), "{isa:?}: {y:?}");
            assert!(y[scalar_from..].iter().all(|&q| q == 45), "{isa:?}: {y:?}");
            // Channels-last 1x2x5x7: the scalar tail is the last NHWC positions, pixels 32..35
            // of both channels in NCHW order.
            let cl = [MemoryFormat::ChannelsLast; 2];
            let (a4, b4) = (
                QTensor {
                    dims: vec![1, 2, 5, 7],
                    ..a.clone()
                },
                QTensor {
                    dims: vec![1, 2, 5, 7],
                    ..b.clone()
                },
            );
            g.add(&a4, &b4, &out, false, cl).unwrap();
            let y = g.add(&a4, &b4, &out, false, cl).unwrap();
            let want = reference(QEngine::X86, isa)
                .add(&a4, &b4, &out, false, cl)
                .unwrap();
            assert_eq!(y, want, "{isa:?} channels-last");
            for (i, &q) in y.iter().enumerate() {
                let scalar = isa == CpuCapability::Default || i % 35 >= 32;
                assert_eq!(q, if scalar { 45 } else { 44 }, "{isa:?} channels-last {i}");
            }
            runs += 1;
        }
    }
    assert_eq!(runs, 3 * backends().len());
}

#[test]
fn lowered_binding_limits_split_the_work_and_keep_the_results() {
    let mut runs = 0;
    for full in gpu_contexts() {
        let ctx = full.with_split_limits(1024, 65535);
        for engine in ENGINES {
            let isa = CpuCapability::Avx2;
            let mut g = GpuBackend::with_engine(ctx.clone(), engine, isa);
            let mut c = reference(engine, isa);
            let mut rng = Rng::new(21);
            let qp = qparams(&mut rng, QDtype::QUInt8);
            // 6 planes of 323 bytes: several planes per dispatch, several dispatches.
            let x = tensor(&mut rng, &[2, 3, 17, 19], qp);
            let y = rand_tensor(&mut rng, &[2, 5, 17, 19], QDtype::QUInt8);
            let out = qparams(&mut rng, QDtype::QUInt8);
            let p = Pool2dParams::square(3).stride(2).padding(1);
            let o = AvgOptions::default();
            let mut n = Count::default();
            n.check("relu", g.relu(&x), c.relu(&x));
            n.check("clip", g.clip(&x, -0.1, 0.3), c.clip(&x, -0.1, 0.3));
            n.check("max", g.max_pool2d(&x, &p), c.max_pool2d(&x, &p));
            n.check(
                "avg",
                g.avg_pool2d(&x, &p, &o, MemoryFormat::ChannelsLast),
                c.avg_pool2d(&x, &p, &o, MemoryFormat::ChannelsLast),
            );
            n.check(
                "adaptive",
                g.adaptive_avg_pool2d(&x, [5, 4], MemoryFormat::Contiguous),
                c.adaptive_avg_pool2d(&x, [5, 4], MemoryFormat::Contiguous),
            );
            // Axis 1: 2584 bytes per outer index, more than a binding; axis 3: many rows.
            for axis in [0, 1, 3] {
                let z = if axis == 1 { y.clone() } else { x.clone() };
                n.check(
                    "concat",
                    g.concat(&[&x, &z], axis, &out, MemoryFormat::ChannelsLast),
                    c.concat(&[&x, &z], axis, &out, MemoryFormat::ChannelsLast),
                );
            }
            n.assert_ran(&format!("split {engine:?}"), 8, 8);
            // One plane larger than a binding cannot be cut.
            let big = rand_tensor(&mut rng, &[1, 1, 40, 40], QDtype::QUInt8);
            let r = g.max_pool2d(&big, &p);
            assert!(matches!(r, Err(squint::Error::DeviceLimit(_))), "{r:?}");
            // The add's tables (128 KiB) need a larger binding; its elements are then cut.
            let mut g =
                GpuBackend::with_engine(full.with_split_limits(1 << 18, 65535), engine, isa);
            let a = rand_tensor(&mut rng, &[1, 300_001], QDtype::QUInt8);
            let b = rand_tensor(&mut rng, &[1, 300_001], QDtype::QUInt8);
            let mut n = Count::default();
            n.check(
                "add",
                g.add(&a, &b, &out, false, [MemoryFormat::Contiguous; 2]),
                c.add(&a, &b, &out, false, [MemoryFormat::Contiguous; 2]),
            );
            n.assert_ran(&format!("split add {engine:?}"), 1, 1);
            runs += 1;
        }
    }
    assert_eq!(runs, 2 * gpu_contexts().len());
}

/// A converted one-linear graph (`[rows, k]` -> `[rows, o]`) and its linear node.
fn converted_linear(
    qc: QConfig,
    rows: usize,
    k: usize,
    o: usize,
    relu: bool,
    seed: u64,
) -> (squint::pipeline::qgraph::QuantizedGraph, QLinear) {
    let mut rng = squint::rng::Rng::new(seed);
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[rows, k]).unwrap();
    let fc = Op::Linear(LinearOp {
        weight: Tensor::new(vec![o, k], rng.normal_vec(o * k, 0.3)).unwrap(),
        bias: if seed.is_multiple_of(3) {
            None
        } else {
            Some(rng.normal_vec(o, 0.2))
        },
        act: if relu {
            Activation::Relu
        } else {
            Activation::None
        },
    });
    let y = b.node("fc", fc, &[x]).unwrap();
    let mut p = PreparedGraph::new(b.build(&[y]).unwrap(), qc).unwrap();
    for _ in 0..2 {
        let t = Tensor::new(vec![rows, k], rng.normal_vec(rows * k, 1.0)).unwrap();
        p.calibrate(&[t]).unwrap();
    }
    let (q, _) = p.convert(&ConvertOptions::default()).unwrap();
    let l = match &q.nodes()[0] {
        QNode::Linear(l) => l.clone(),
        other => panic!("expected a linear node, got {other:?}"),
    };
    (q, l)
}

#[test]
fn linear_equals_the_reference_for_every_formula() {
    let ctxs = backends();
    let mut rng = Rng::new(31);
    let mut counts = vec![Count::default(); 3];
    let cases = 12;
    for i in 0..cases {
        for (qi, qc) in [QConfig::qnnpack(), QConfig::x86(), QConfig::fbgemm()]
            .into_iter()
            .enumerate()
        {
            let (rows, k, o) = (rng.usize(1, 7), rng.usize(1, 70), rng.usize(1, 19));
            let (q, l) = converted_linear(qc, rows, k, o, rng.coin(0.5), 100 + i as u64);
            let mut c = ReferenceBackend::new(&q);
            // The converted input qparams, or random ones (ties, saturation).
            let xqp = if rng.coin(0.5) {
                q.qparams()[0]
            } else {
                qparams(&mut rng, q.qparams()[0].dtype)
            };
            let out = if rng.coin(0.5) {
                q.qparams()[1]
            } else {
                qparams(&mut rng, QDtype::QUInt8)
            };
            let x = tensor(&mut rng, &[rows, k], xqp);
            for ctx in &ctxs {
                let mut g: Box<dyn QBackend> = match ctx {
                    Some(ctx) => Box::new(GpuBackend::new(ctx.clone(), &q)),
                    None => Box::new(FastCpuBackend::new(&q)),
                };
                let what = format!(
                    "linear {} case {i} on {}",
                    q.qconfig_name(),
                    backend_name(ctx)
                );
                counts[qi].check(&what, g.linear(&l, &x, &out), c.linear(&l, &x, &out));
            }
        }
    }
    for (qi, n) in counts.iter().enumerate() {
        n.assert_ran(
            &format!("linear qconfig {qi}"),
            cases * ctxs.len(),
            cases * ctxs.len() * 3 / 4,
        );
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    for ctx in gpu_contexts() {
        let mut g = GpuBackend::with_engine(ctx.clone(), QEngine::X86, CpuCapability::Avx2);
        let qp = QParams::new(0.1, 3, QDtype::QUInt8).unwrap();
        let x = QTensor {
            data: vec![1; 12],
            dims: vec![1, 1, 3, 4],
            qp,
        };
        let short = QTensor {
            data: vec![1; 11],
            ..x.clone()
        };
        let flat = QTensor {
            dims: vec![12],
            ..x.clone()
        };
        let p = Pool2dParams::square(2);
        assert!(g.max_pool2d(&short, &p).is_err());
        assert!(g.max_pool2d(&flat, &p).is_err());
        assert!(g.max_pool2d(&x, &Pool2dParams::square(5)).is_err());
        assert!(g
            .avg_pool2d(
                &short,
                &p,
                &AvgOptions::default(),
                MemoryFormat::ChannelsLast
            )
            .is_err());
        assert!(g
            .adaptive_avg_pool2d(&x, [0, 1], MemoryFormat::Contiguous)
            .is_err());
        assert!(g.relu(&short).is_err() || g.relu(&short).unwrap().len() == 11);
        assert!(g
            .add(&x, &short, &qp, false, [MemoryFormat::ChannelsLast; 2])
            .is_err());
        assert!(g
            .concat(&[&x, &flat], 0, &qp, MemoryFormat::Contiguous)
            .is_err());
        assert!(g.concat(&[&x], 4, &qp, MemoryFormat::ChannelsLast).is_err());
        assert!(g.concat(&[], 0, &qp, MemoryFormat::Contiguous).is_err());
        let bad = QParams { scale: 0.0, ..qp };
        let xb = QTensor {
            qp: bad,
            ..x.clone()
        };
        assert!(g.relu(&xb).is_err());
        assert!(g.max_pool2d(&xb, &p).is_err());
        assert!(g
            .avg_pool2d(&xb, &p, &AvgOptions::default(), MemoryFormat::Contiguous)
            .is_err());
    }
}

/// Values on the device larger than one storage binding (128 KiB bindings, which the add's
/// two tables just fit; 147 456-byte tensors): their maps and adds go through the host, the
/// convs run by row bands; every value equal to the reference.
#[test]
fn resident_values_larger_than_a_binding_equal_the_reference() {
    for qc in [QConfig::x86(), QConfig::qnnpack()] {
        let mut rng = squint::rng::Rng::new(21);
        let g = squint::graph::testing::chain_graph(&mut rng, 96);
        let mut p = PreparedGraph::new(g, qc).unwrap();
        let dims = [2, 3, 96, 96];
        let batch = |r: &mut squint::rng::Rng| {
            Tensor::new(dims.to_vec(), r.normal_vec(dims.iter().product(), 1.0)).unwrap()
        };
        p.calibrate(&[batch(&mut rng)]).unwrap();
        let (q, _) = p.convert(&ConvertOptions::default()).unwrap();
        let x = [batch(&mut rng)];
        let want = q.run(&mut ReferenceBackend::new(&q), &x).unwrap();
        for ctx in gpu_contexts() {
            let small = ctx.with_split_limits(1 << 17, 65535);
            let got = GpuBackend::new(small, &q)
                .run_resident_values(&q, &x)
                .unwrap();
            assert!(
                got.values == want.values && got.outputs == want.outputs,
                "{}",
                ctx.adapter_report().summary()
            );
        }
    }
}

/// `run_resident` runs a ReLU or clip inside the conv before it (the epilogue's clamp
/// narrowed) where nothing else reads the conv's output: the chain's three activations, and
/// neither activation of a graph whose conv outputs also feed an add or are graph outputs;
/// the outputs equal the reference's either way, on every adapter.
#[test]
fn activations_fuse_into_their_convs_on_the_device_with_the_same_outputs() {
    use squint::graph::testing::{chain_graph, conv};
    let shared = |rng: &mut squint::rng::Rng, hw: usize| {
        let mut b = GraphBuilder::new();
        let x = b.input("x", &[2, 3, hw, hw]).unwrap();
        let c1 = conv(rng, 8, 3, 3, Activation::None);
        let c1 = b.node("c1", c1, &[x]).unwrap();
        let clip = Op::Activation(Activation::Clip { min: 0.0, max: 6.0 });
        let k = b.node("clip", clip, &[c1]).unwrap();
        let add = Op::Add {
            act: Activation::None,
        };
        let s = b.node("add", add, &[k, c1]).unwrap();
        let c2 = b
            .node("c2", conv(rng, 8, 8, 1, Activation::None), &[s])
            .unwrap();
        let relu = Op::Activation(Activation::Relu);
        let r = b.node("relu", relu, &[c2]).unwrap();
        b.build(&[r, c2]).unwrap()
    };
    let ctxs = gpu_contexts();
    for (qc, build, fused) in [
        (
            QConfig::x86(),
            chain_graph as fn(&mut _, usize) -> _,
            &["clip1", "relu", "clip2"][..],
        ),
        (QConfig::qnnpack(), chain_graph, &["clip1", "relu", "clip2"]),
        (QConfig::fbgemm(), shared, &[]),
    ] {
        let mut rng = squint::rng::Rng::new(31);
        let mut p = PreparedGraph::new(build(&mut rng, 9), qc.clone()).unwrap();
        let batch = |r: &mut squint::rng::Rng| {
            Tensor::new(vec![2, 3, 9, 9], r.normal_vec(2 * 3 * 81, 1.0)).unwrap()
        };
        for _ in 0..2 {
            p.calibrate(&[batch(&mut rng)]).unwrap();
        }
        let (q, _) = p.convert(&ConvertOptions::default()).unwrap();
        let x = [batch(&mut rng)];
        let want = q.run(&mut ReferenceBackend::new(&q), &x).unwrap();
        assert_eq!(q.fused_activations(), fused, "{}", qc.name);
        // The fast CPU path fuses them too; the reference runs them apart.
        let cpu = FastCpuBackend::new(&q).run_outputs(&q, &x).unwrap();
        assert!(cpu == want.outputs, "{}: fast CPU", qc.name);
        let reference = q.run_outputs(&mut ReferenceBackend::new(&q), &x).unwrap();
        assert!(reference == want.outputs, "{}: reference", qc.name);
        for ctx in &ctxs {
            let mut backend = GpuBackend::new(ctx.clone(), &q);
            let got = backend.run_resident(&q, &x).unwrap();
            assert!(
                got == want.outputs,
                "{}: {}",
                qc.name,
                ctx.adapter_report().summary()
            );
        }
    }
}

/// Whole graphs on every adapter, node by node through [`GpuBackend`]'s round trips and with
/// the values kept on the device (`run_resident`): the residual block of every op kind, and
/// a chain of convs into clips, a ReLU and an add (the device's own byte-table maps and
/// byte-pair add, on planes whose sizes are and are not multiples of 4; 2x8x9x9 takes the
/// host add, its x86 vector/scalar split falling inside the tensor); every value equal to the
/// reference.
#[test]
fn whole_graphs_equal_the_reference_value_for_value() {
    let ctxs = gpu_contexts();
    let mut graphs = 0;
    let block = squint::graph::testing::block_graph;
    let chain = squint::graph::testing::chain_graph;
    for (qc, hw, seed, build) in [
        (
            QConfig::qnnpack(),
            8,
            11,
            block as fn(&mut squint::rng::Rng, usize) -> _,
        ),
        (QConfig::x86(), 8, 12, block),
        (QConfig::fbgemm(), 9, 13, block),
        (QConfig::qnnpack(), 7, 14, block),
        (QConfig::x86(), 9, 15, chain),
        (QConfig::x86(), 8, 17, chain),
        (QConfig::qnnpack(), 8, 16, chain),
    ] {
        let name = qc.name.clone();
        let mut rng = squint::rng::Rng::new(seed);
        let g = build(&mut rng, hw);
        let mut p = PreparedGraph::new(g, qc).unwrap();
        let dims = [2, 3, hw, hw];
        let batch = |r: &mut squint::rng::Rng| {
            Tensor::new(dims.to_vec(), r.normal_vec(dims.iter().product(), 1.0)).unwrap()
        };
        for _ in 0..3 {
            p.calibrate(&[batch(&mut rng)]).unwrap();
        }
        let (q, _) = p.convert(&ConvertOptions::default()).unwrap();
        let x = batch(&mut rng);
        let want = q
            .run(&mut ReferenceBackend::new(&q), std::slice::from_ref(&x))
            .unwrap();
        for ctx in &ctxs {
            let mut backend = GpuBackend::new(ctx.clone(), &q);
            let x = std::slice::from_ref(&x);
            let got = q.run(&mut backend, x).unwrap();
            let resident = backend.run_resident_values(&q, x).unwrap();
            assert_eq!(resident.outputs, want.outputs, "{name}");
            for values in [&got.values, &resident.values] {
                assert_eq!(values.len(), q.graph().values().len());
                for (i, (a, b)) in values.iter().zip(&want.values).enumerate() {
                    assert_eq!(
                        a,
                        b,
                        "{name}: value '{}' on {}",
                        q.graph().values()[i].name,
                        ctx.adapter_report().summary()
                    );
                }
            }
            assert_eq!(got.outputs, want.outputs);
            assert_eq!(backend.run_resident(&q, x).unwrap(), want.outputs);
            graphs += 1;
        }
    }
    assert_eq!(graphs, 7 * ctxs.len());
}
