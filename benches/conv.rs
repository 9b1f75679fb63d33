//! Conv benchmarks: the fast int8 conv (1 thread and all threads), the fast float conv, and the
//! int8 reference on the target shapes of the "Performance" issue. Throughput is reported as
//! `2 · MACs` elements per second (criterion's "elem/s" = ops/s, so "Gelem/s" = GOPS).
//!
//! Run with `cargo bench --bench conv`; a filter narrows it down, e.g.
//! `cargo bench --bench conv -- 'int8 1t'`.
//!
//! `vpdpbusd ceiling` is the single-thread int8 peak of this CPU (24 independent zmm
//! `vpdpbusd` chains, 128 ops each), measured in the same run so that the GOPS of the int8
//! conv can be quoted as a fraction of it. The depthwise shape also runs every requantization
//! formula (`int8 1t <formula>`); the other shapes use oneDNN's.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use squint::cpu::{fast, reference};
use squint::quant::{Epilogue, QDtype, QParams, QScheme, RequantFormula, WeightQParams};
use squint::shape::{ConvParams, ConvShape};
use std::hint::black_box;
use std::time::Duration;

/// The target shapes: (name, input dims, weight dims, params).
fn shapes() -> Vec<(&'static str, [usize; 4], [usize; 4], ConvParams)> {
    vec![
        (
            "i_1x132x64x64_121x132x3x3",
            [1, 132, 64, 64],
            [121, 132, 3, 3],
            ConvParams::default(),
        ),
        (
            "ii_1x64x56x56_64x64x3x3_p1",
            [1, 64, 56, 56],
            [64, 64, 3, 3],
            ConvParams::default().padding(1),
        ),
        (
            "iii_1x256x14x14_256x256x3x3_p1",
            [1, 256, 14, 14],
            [256, 256, 3, 3],
            ConvParams::default().padding(1),
        ),
        (
            "iv_dw_1x128x56x56_3x3_p1",
            [1, 128, 56, 56],
            [128, 1, 3, 3],
            ConvParams::default().padding(1).groups(128),
        ),
    ]
}

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

fn bench_conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let all = fast::FastConvOptions::default();
    let one = fast::FastConvOptions::with_threads(1);
    eprintln!("fast path ISA: {}", fast::detected_isa());
    for (name, xd, wd, params) in shapes() {
        let s = ConvShape::new(xd, wd, params).expect("shape");
        group.throughput(Throughput::Elements(2 * s.macs()));
        let x = bytes(s.input_len(), 1);
        let w: Vec<i8> = bytes(s.weight_len(), 2)
            .into_iter()
            .map(|b| b as i8)
            .collect();
        let x_qp = QParams::new(0.02, 128, QDtype::QUInt8).expect("qparams");
        let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.005, 0);
        let out = QParams::new(0.5, 0, QDtype::QUInt8).expect("qparams");
        let bias = vec![0.1f32; s.c_out];
        let epi = Epilogue::new(
            RequantFormula::Onednn,
            x_qp.scale,
            &w_qp,
            Some(&bias),
            out,
            true,
            s.c_out,
        )
        .expect("epilogue");
        let packed =
            fast::PackedConv2d::new(&w, wd, &w_qp, &epi, params).expect("packing the weights");
        let xf: Vec<f32> = x.iter().map(|&b| (b as f32 - 128.0) * 0.02).collect();
        let wf: Vec<f32> = w.iter().map(|&v| v as f32 * 0.005).collect();

        group.bench_function(BenchmarkId::new("int8 1t", name), |b| {
            b.iter(|| black_box(packed.run(black_box(&x), xd, &x_qp, &one).unwrap()))
        });
        if params.groups > 1 {
            for formula in RequantFormula::ALL {
                let epi =
                    Epilogue::new(formula, x_qp.scale, &w_qp, Some(&bias), out, true, s.c_out)
                        .expect("epilogue");
                let packed = fast::PackedConv2d::new(&w, wd, &w_qp, &epi, params)
                    .expect("packing the weights");
                let id = BenchmarkId::new(format!("int8 1t {formula}"), name);
                group.bench_function(id, |b| {
                    b.iter(|| black_box(packed.run(black_box(&x), xd, &x_qp, &one).unwrap()))
                });
            }
        }
        group.bench_function(BenchmarkId::new("int8 all", name), |b| {
            b.iter(|| black_box(packed.run(black_box(&x), xd, &x_qp, &all).unwrap()))
        });
        // Float weights packed once too, as the int8 ones (and as `squint bench` does).
        let packed_f32 =
            fast::PackedConvF32::new(&wf, wd, params, fast::Isa::detect()).expect("packing");
        group.bench_function(BenchmarkId::new("f32 1t", name), |b| {
            b.iter(|| {
                black_box(
                    packed_f32
                        .run(black_box(&xf), xd, Some(&bias), &one)
                        .unwrap(),
                )
            })
        });
        group.bench_function(BenchmarkId::new("f32 all", name), |b| {
            b.iter(|| {
                black_box(
                    packed_f32
                        .run(black_box(&xf), xd, Some(&bias), &all)
                        .unwrap(),
                )
            })
        });
    }
    group.finish();

    // The depthwise conv on every ISA path this CPU has, one thread, int8 (7-bit activations,
    // as `squint bench` runs it, so that AVX2 may use `vpmaddubsw`) against f32.
    {
        let mut group = c.benchmark_group("depthwise isa");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        let params = ConvParams::default().padding(1).groups(128);
        let s = ConvShape::new([1, 128, 56, 56], [128, 1, 3, 3], params).expect("shape");
        group.throughput(Throughput::Elements(2 * s.macs()));
        let x: Vec<u8> = bytes(s.input_len(), 5).iter().map(|b| b & 127).collect();
        let w: Vec<i8> = bytes(s.weight_len(), 6).iter().map(|&b| b as i8).collect();
        let x_qp = QParams::new(0.02, 64, QDtype::QUInt8).expect("qparams");
        let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.005, 0);
        let out = QParams::new(0.05, 128, QDtype::QUInt8).expect("qparams");
        let epi = Epilogue::new(RequantFormula::Fbgemm, 0.02, &w_qp, None, out, false, 128)
            .expect("epilogue");
        let xf: Vec<f32> = x.iter().map(|&b| (b as f32 - 64.0) * 0.02).collect();
        let wf: Vec<f32> = w.iter().map(|&v| v as f32 * 0.005).collect();
        for isa in fast::Isa::available() {
            let p = fast::PackedConv2d::with_isa(&w, s.weight_dims(), &w_qp, &epi, params, isa)
                .expect("packing");
            group.bench_function(BenchmarkId::new("int8", isa), |b| {
                b.iter(|| black_box(p.run(black_box(&x), s.input_dims(), &x_qp, &one).unwrap()))
            });
            let pf = fast::PackedConvF32::new(&wf, s.weight_dims(), params, isa).expect("packing");
            group.bench_function(BenchmarkId::new("f32", isa), |b| {
                b.iter(|| black_box(pf.run(black_box(&xf), s.input_dims(), None, &one).unwrap()))
            });
        }
        group.finish();
    }

    // The GEMM's two layouts, one thread, on small planes (what `nhwc::prefer` and
    // `nhwc::prefer_f32` choose between): flat positions or output channels in the lanes; int8
    // on AVX-512 VNNI, AVX-VNNI and AVX2 (7-bit activations: `vpmaddubsw`), f32 on AVX-512 and
    // AVX2.
    if fast::Isa::Avx512Vnni.is_available() {
        let mut group = c.benchmark_group("gemm layout");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for (c_io, hw) in [(256usize, 14usize), (512, 7), (128, 28), (64, 56)] {
            let params = ConvParams::default().padding(1);
            let s = ConvShape::new([1, c_io, hw, hw], [c_io, c_io, 3, 3], params).expect("shape");
            group.throughput(Throughput::Elements(2 * s.macs()));
            let x: Vec<u8> = bytes(s.input_len(), 3)
                .into_iter()
                .map(|b| b & 127)
                .collect();
            let w: Vec<i8> = bytes(s.weight_len(), 4)
                .into_iter()
                .map(|b| b as i8)
                .collect();
            let x_qp = QParams::new(0.02, 0, QDtype::QUInt8).expect("qparams");
            let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.005, 0);
            let out = QParams::new(0.5, 0, QDtype::QUInt8).expect("qparams");
            let epi = Epilogue::new(RequantFormula::Fbgemm, 0.02, &w_qp, None, out, false, c_io)
                .expect("epilogue");
            let x86 = [fast::Isa::Avx512Vnni, fast::Isa::AvxVnni, fast::Isa::Avx2];
            let layouts = [fast::GemmLayout::Flat, fast::GemmLayout::Nhwc];
            let int8 = x86.iter().flat_map(|i| layouts.map(|l| (*i, l)));
            for (isa, layout) in int8.filter(|(i, _)| i.is_available()) {
                let p = fast::PackedConv2d::with_isa(&w, s.weight_dims(), &w_qp, &epi, params, isa)
                    .expect("packing")
                    .with_gemm_layout(layout);
                let id = BenchmarkId::new(
                    format!("int8 {isa} {layout:?}"),
                    format!("1x{c_io}x{hw}x{hw}"),
                );
                group.bench_function(id, |b| {
                    b.iter(|| black_box(p.run(black_box(&x), s.input_dims(), &x_qp, &one).unwrap()))
                });
            }
            let xf: Vec<f32> = x.iter().map(|&b| b as f32 / 64.0 - 1.0).collect();
            let wf: Vec<f32> = w.iter().map(|&b| b as f32 / 128.0).collect();
            for (isa, layout) in [
                (fast::Isa::Avx512Vnni, fast::GemmLayout::Flat),
                (fast::Isa::Avx512Vnni, fast::GemmLayout::Nhwc),
                (fast::Isa::Avx2, fast::GemmLayout::Flat),
                (fast::Isa::Avx2, fast::GemmLayout::Nhwc),
            ] {
                let p = fast::PackedConvF32::new(&wf, s.weight_dims(), params, isa)
                    .expect("packing")
                    .with_gemm_layout(layout);
                let id = BenchmarkId::new(
                    format!("f32 {isa} {layout:?}"),
                    format!("1x{c_io}x{hw}x{hw}"),
                );
                group.bench_function(id, |b| {
                    b.iter(|| black_box(p.run(black_box(&xf), s.input_dims(), None, &one).unwrap()))
                });
            }
        }
        group.finish();
    }

    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vnni") {
        let mut group = c.benchmark_group("ceiling");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_secs(1));
        const ITERS: u64 = 100_000;
        group.throughput(Throughput::Elements(ITERS * 24 * 128));
        group.bench_function("vpdpbusd ceiling", |b| {
            // SAFETY: AVX512-VNNI was detected (it implies avx512f).
            b.iter(|| unsafe { vpdpbusd_loop(black_box(ITERS)) })
        });
        group.finish();
    }

    // The reference is slow: one small shape only.
    let mut group = c.benchmark_group("conv reference");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(1));
    let (xd, wd, params) = (
        [1, 32, 16, 16],
        [32, 32, 3, 3],
        ConvParams::default().padding(1),
    );
    let s = ConvShape::new(xd, wd, params).expect("shape");
    group.throughput(Throughput::Elements(2 * s.macs()));
    let x = bytes(s.input_len(), 3);
    let w: Vec<i8> = bytes(s.weight_len(), 4)
        .into_iter()
        .map(|b| b as i8)
        .collect();
    let x_qp = QParams::new(0.02, 128, QDtype::QUInt8).expect("qparams");
    let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.005, 0);
    let out = QParams::new(0.5, 0, QDtype::QUInt8).expect("qparams");
    let epi = Epilogue::new(
        RequantFormula::Fbgemm,
        0.02,
        &w_qp,
        None,
        out,
        false,
        s.c_out,
    )
    .expect("epilogue");
    let packed = fast::PackedConv2d::new(&w, wd, &w_qp, &epi, params).expect("packing");
    group.bench_function("int8 reference 1x32x16x16_32x32x3x3", |b| {
        b.iter(|| {
            black_box(
                reference::conv2d_quantized(black_box(&x), &x_qp, &w, &w_qp, &epi, &s).unwrap(),
            )
        })
    });
    group.bench_function("int8 fast 1t 1x32x16x16_32x32x3x3", |b| {
        b.iter(|| black_box(packed.run(black_box(&x), xd, &x_qp, &one).unwrap()))
    });
    group.finish();
}

/// `iters` rounds of 24 independent zmm `vpdpbusd` (enough chains to cover its latency): the
/// int8 throughput ceiling of one core.
///
/// # Safety
/// avx512f and avx512vnni must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn vpdpbusd_loop(iters: u64) -> [i32; 16] {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_si512(); 24];
    let a = _mm512_set1_epi32(0x0102_0304);
    let b = _mm512_set1_epi32(0x0101_0101);
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm512_dpbusd_epi32(*r, a, b);
        }
        // Keeps the loop from being folded.
        std::arch::asm!("", options(nomem, nostack));
    }
    let mut sum = acc[0];
    for &r in &acc[1..] {
        sum = _mm512_add_epi32(sum, r);
    }
    // SAFETY: a 64-byte vector is 16 i32.
    unsafe { std::mem::transmute::<__m512i, [i32; 16]>(sum) }
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);
