//! The fast CPU conv against the reference: a seeded randomized sweep, byte for byte, on every
//! ISA path this machine can run; plus error cases and the float conv.

mod common;

use common::Rng;
use squint::cpu::fast::{self, FastConvOptions, GemmLayout, Isa, PackedConv2d};
use squint::cpu::reference;
use squint::quant::{Epilogue, QDtype, QParams, QScheme, RequantFormula, WeightQParams};
use squint::shape::{ConvParams, ConvShape};
use squint::Error;

/// One random quantized conv problem.
struct Case {
    s: ConvShape,
    x: Vec<u8>,
    x_qp: QParams,
    w: Vec<i8>,
    w_qp: WeightQParams,
    epi: Epilogue,
    desc: String,
}

/// One of `fixed` (extremes) or a uniform value in `lo..=hi`.
fn pick_or_random(rng: &mut Rng, fixed: &[i32], lo: i64, hi: i64) -> i32 {
    let r = rng.range(lo, hi) as i32;
    if rng.chance(0.5) {
        rng.pick(fixed)
    } else {
        r
    }
}

fn random_shape(rng: &mut Rng) -> ConvShape {
    loop {
        let kh = rng.usize(1, 7);
        let kw = if rng.chance(0.7) { kh } else { rng.usize(1, 7) };
        let stride = [rng.usize(1, 3), rng.usize(1, 3)];
        let stride = if rng.chance(0.5) { [1, 1] } else { stride };
        let padding = [rng.usize(0, 3), rng.usize(0, 3)];
        let dilation = if rng.chance(0.6) {
            [1, 1]
        } else {
            [rng.usize(1, 3), rng.usize(1, 3)]
        };
        let (c_in, c_out, groups) = match rng.usize(0, 3) {
            0 | 1 => (rng.usize(1, 13), rng.usize(1, 15), 1),
            2 => {
                let g = rng.usize(2, 4);
                (g * rng.usize(1, 5), g * rng.usize(1, 7), g)
            }
            _ => {
                let c = rng.usize(1, 12);
                (c, c * rng.pick(&[1, 1, 2, 3]), c)
            }
        };
        let n = rng.usize(1, 3);
        let h = rng.usize(1, 19);
        let w = rng.usize(1, 23);
        let params = ConvParams {
            stride,
            padding,
            dilation,
            groups,
        };
        if let Ok(s) = ConvShape::new([n, c_in, h, w], [c_out, c_in / groups, kh, kw], params) {
            return s;
        }
    }
}

fn random_case(rng: &mut Rng) -> Case {
    let s = random_shape(rng);
    random_case_for(rng, s)
}

/// A random depthwise-like shape (one input channel per group) for the direct depthwise
/// kernels: wide rows (several 64-column blocks, partial blocks), every padding up to 3,
/// strides and dilations up to 3, kernels up to 7 (sometimes up to 16 columns), channel
/// counts that are not multiples of 16, channel multipliers.
fn random_dw_shape(rng: &mut Rng) -> ConvShape {
    loop {
        let kh = rng.usize(1, 7);
        let kw = match rng.usize(0, 9) {
            0 => rng.usize(8, 16),
            1..=3 => rng.usize(1, 7),
            _ => kh,
        };
        let stride = if rng.chance(0.5) {
            [1, 1]
        } else {
            [rng.usize(1, 3), rng.usize(1, 3)]
        };
        let dilation = if rng.chance(0.6) {
            [1, 1]
        } else {
            [rng.usize(1, 3), rng.usize(1, 3)]
        };
        let padding = [rng.usize(0, 3), rng.usize(0, 3)];
        let c = rng.pick(&[1, 2, 3, 5, 7, 16, 17]);
        let mult = rng.pick(&[1, 1, 1, 2, 3]);
        let n = rng.usize(1, 2);
        let h = rng.usize(1, 12);
        let w = if rng.chance(0.5) {
            rng.usize(1, 40)
        } else {
            rng.usize(60, 150)
        };
        let params = ConvParams {
            stride,
            padding,
            dilation,
            groups: c,
        };
        if let Ok(s) = ConvShape::new([n, c, h, w], [c * mult, 1, kh, kw], params) {
            return s;
        }
    }
}

fn random_case_for(rng: &mut Rng, s: ConvShape) -> Case {
    let x_dtype = if rng.chance(0.5) {
        QDtype::QUInt8
    } else {
        QDtype::QInt8
    };
    let x_zp = match x_dtype {
        QDtype::QUInt8 => pick_or_random(rng, &[0, 255, 128], 0, 255),
        QDtype::QInt8 => pick_or_random(rng, &[-128, 127, 0], -128, 127),
    };
    let x_qp = QParams {
        scale: 0.01 + rng.unit() * 0.1,
        zero_point: x_zp,
        dtype: x_dtype,
    };
    // Inputs: full range, or clustered around the zero point.
    let full = rng.chance(0.5);
    let x: Vec<u8> = (0..s.input_len())
        .map(|_| {
            let v = if full {
                rng.range(-128, 255)
            } else {
                x_zp as i64 + rng.range(-20, 20)
            };
            let r = x_dtype.full_range();
            x_dtype.int_to_byte((v as i32).clamp(r.min, r.max))
        })
        .collect();
    let scheme = rng.pick(&[
        QScheme::PerTensorSymmetric,
        QScheme::PerTensorAffine,
        QScheme::PerChannelSymmetric,
        QScheme::PerChannelAffine,
    ]);
    let nq = if scheme.is_per_channel() { s.c_out } else { 1 };
    let zps: Vec<i32> = (0..nq)
        .map(|_| {
            if scheme.is_symmetric() {
                0
            } else {
                pick_or_random(rng, &[-128, 127, 0], -128, 127)
            }
        })
        .collect();
    let scales: Vec<f32> = (0..nq).map(|_| 0.001 + rng.unit() * 0.02).collect();
    let w_qp = WeightQParams {
        scheme,
        scales,
        zero_points: zps,
    };
    let wide = rng.chance(0.5);
    let w: Vec<i8> = (0..s.weight_len())
        .map(|_| {
            if wide {
                rng.range(-128, 127) as i8
            } else {
                rng.range(-30, 30) as i8
            }
        })
        .collect();
    let formula = rng.pick(&RequantFormula::ALL);
    let out_dtype = if rng.chance(0.5) {
        QDtype::QUInt8
    } else {
        QDtype::QInt8
    };
    let out_zp = match out_dtype {
        QDtype::QUInt8 => pick_or_random(rng, &[0, 255], 0, 255),
        QDtype::QInt8 => pick_or_random(rng, &[-128, 127], -128, 127),
    };
    // Output scale: about the accumulator's spread, so that outputs are not all clamped.
    let spread =
        (s.k() as f32).sqrt() * if full { 60.0 } else { 12.0 } * if wide { 70.0 } else { 17.0 };
    let sw0 = w_qp.scale(0);
    let out_scale = x_qp.scale * sw0 * spread / (20.0 + rng.unit() * 100.0);
    let out = QParams {
        scale: out_scale,
        zero_point: out_zp,
        dtype: out_dtype,
    };
    let bias: Option<Vec<f32>> = rng.chance(0.6).then(|| {
        (0..s.c_out)
            .map(|_| (rng.unit() - 0.5) * 2.0 * out_scale * 100.0)
            .collect()
    });
    let relu = rng.chance(0.4);
    let epi = Epilogue::new(
        formula,
        x_qp.scale,
        &w_qp,
        bias.as_deref(),
        out,
        relu,
        s.c_out,
    )
    .expect("epilogue");
    let desc = format!(
        "x {:?} w {:?} {:?} | x {x_dtype} zp {x_zp} | w {scheme:?} zp {:?} | {formula} out {out_dtype} zp {out_zp} relu {relu} bias {}",
        s.input_dims(),
        s.weight_dims(),
        s.params,
        w_qp.zero_points,
        bias.is_some()
    );
    Case {
        s,
        x,
        x_qp,
        w,
        w_qp,
        epi,
        desc,
    }
}

fn same<T: PartialEq + std::fmt::Debug>(
    a: &squint::Result<Vec<T>>,
    b: &squint::Result<Vec<T>>,
) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        // An error equals only an error of the same variant with the same message.
        (Err(a), Err(b)) => {
            std::mem::discriminant(a) == std::mem::discriminant(b) && a.to_string() == b.to_string()
        }
        _ => false,
    }
}

fn first_diff<T: PartialEq + std::fmt::Debug>(a: &[T], b: &[T]) -> String {
    if a.len() != b.len() {
        return format!("lengths {} vs {}", a.len(), b.len());
    }
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("first difference at {i}: {:?} vs {:?}", a[i], b[i]),
        None => "no difference".into(),
    }
}

/// Prints the ISA paths this CPU cannot run (their sweeps run on another machine).
fn report_missing_isas() {
    let missing: Vec<_> = Isa::ALL.iter().filter(|i| !i.is_available()).collect();
    if missing.is_empty() {
        eprintln!("every ISA path runs on this CPU");
    } else {
        eprintln!("ISA paths this CPU cannot run (not checked here): {missing:?}");
    }
}

/// `SQUINT_REQUIRE_ISA=a,b` (CI: `neon-dotprod` under QEMU, see `.ci/aarch64`) fails the
/// tests where a named path does not run on this CPU, instead of leaving it unchecked.
#[test]
fn isa_detection_is_consistent() {
    if let Ok(names) = std::env::var("SQUINT_REQUIRE_ISA") {
        for name in names.split(',').filter(|n| !n.is_empty()) {
            let isa = Isa::parse(name.trim()).unwrap_or_else(|e| panic!("SQUINT_REQUIRE_ISA: {e}"));
            assert!(Isa::available().contains(&isa), "{isa}");
        }
    }
    let avail = Isa::available();
    assert!(avail.contains(&Isa::Portable));
    assert_eq!(avail[0].name(), fast::detected_isa());
    assert_eq!(Isa::detect(), avail[0]);
    eprintln!("ISA paths available: {avail:?}");
}

/// `--isa NAME` (squint bench): every path's name parses back to it where this CPU runs it,
/// is refused naming the available paths where it does not, and unknown names list them all.
#[test]
fn isa_names_parse_to_available_paths_only() {
    for isa in Isa::ALL {
        match Isa::parse(isa.name()) {
            Ok(p) => {
                assert!(isa.is_available());
                assert_eq!(p, isa);
            }
            Err(e) => {
                assert!(!isa.is_available(), "{isa}: {e}");
                assert!(matches!(e, Error::InvalidParameter(_)), "{e:?}");
                assert!(e.to_string().contains("portable"), "{e}");
            }
        }
    }
    let e = Isa::parse("avx3").unwrap_err();
    assert!(matches!(e, Error::UnknownName { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("avx512-vnni, avx-vnni, avx2, neon-dotprod, portable"),
        "{e}"
    );
}

#[test]
fn randomized_sweep_matches_reference_on_every_isa() {
    // `SQUINT_FAST_SEED=n` explores other cases.
    let seed = std::env::var("SQUINT_FAST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c0de_2024);
    let mut rng = Rng::new(seed);
    let isas = Isa::available();
    report_missing_isas();
    let threads = [Some(1), Some(2), None];
    let mut checked = 0;
    // Cases whose reference result is an error (e.g. an accumulator bound) check the error
    // path only: count them, so that a generator drifting into errors cannot hollow the sweep.
    let mut errors = 0;
    // Which AVX2 kernel each case ran: both must be exercised.
    let mut avx2_kernels = std::collections::BTreeMap::new();
    // `SQUINT_FAST_CASES=n` runs a longer sweep.
    let cases = std::env::var("SQUINT_FAST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(220);
    for case_no in 0..cases {
        let c = random_case(&mut rng);
        let want = reference::conv2d_quantized(&c.x, &c.x_qp, &c.w, &c.w_qp, &c.epi, &c.s);
        let want_acc = reference::conv2d_acc(&c.x, &c.x_qp, &c.w, &c.w_qp, &c.s);
        errors += usize::from(want.is_err());
        for (i, &isa) in isas.iter().enumerate() {
            let opts = FastConvOptions::splitting_small(threads[(case_no + i) % threads.len()]);
            let p =
                PackedConv2d::with_isa(&c.w, c.s.weight_dims(), &c.w_qp, &c.epi, c.s.params, isa)
                    .expect("pack");
            if isa == Isa::Avx2 {
                *avx2_kernels
                    .entry(p.kernel_name(&c.x, &c.x_qp))
                    .or_insert(0) += 1;
            }
            let got = p.run(&c.x, c.s.input_dims(), &c.x_qp, &opts);
            if !same(&got, &want) {
                let detail = match (&got, &want) {
                    (Ok(g), Ok(w)) => first_diff(g, w),
                    _ => format!("{got:?} vs {want:?}"),
                };
                panic!("case {case_no} on {isa} ({opts:?}): {}\n{detail}", c.desc);
            }
            let got_acc = p.run_acc(&c.x, c.s.input_dims(), &c.x_qp, &opts);
            if !same(&got_acc, &want_acc) {
                let detail = match (&got_acc, &want_acc) {
                    (Ok(g), Ok(w)) => first_diff(g, w),
                    _ => format!("{:?} vs {:?}", got_acc.is_ok(), want_acc.is_ok()),
                };
                panic!("case {case_no} acc on {isa}: {}\n{detail}", c.desc);
            }
            checked += 1;
        }
        if case_no % 7 == 0 {
            let got = fast::conv2d_quantized(
                &c.x,
                &c.x_qp,
                &c.w,
                &c.w_qp,
                &c.epi,
                &c.s,
                &FastConvOptions::default(),
            );
            assert!(
                same(&got, &want),
                "case {case_no} (conv2d_quantized): {}",
                c.desc
            );
        }
    }
    eprintln!(
        "{checked} (case, ISA) pairs bit-exact on {isas:?}; {errors} of {cases} cases are errors"
    );
    assert_eq!(checked, cases * isas.len());
    if isas.contains(&Isa::Avx2) {
        eprintln!("AVX2 kernels: {avx2_kernels:?}");
        for k in ["avx2 vpmaddubsw", "avx2 vpmaddwd"] {
            let n = avx2_kernels.get(k).copied().unwrap_or(0);
            assert!(n * 10 >= cases, "only {n} of {cases} cases ran {k}");
        }
    }
    assert!(
        errors * 10 <= cases,
        "{errors} of {cases} cases have an error as their reference result: the sweep checks too \
         few values"
    );
}

/// The four target shapes, shrunk spatially, on every path (exercises the real tile sizes).
/// AVX2's `vpmaddubsw` sums two u8·s8 products in saturating int16: squint uses it only where
/// `act_max · (pair sum of positive weights) ≤ 32767` and `act_max · (pair sum of negative
/// weights) ≤ 32768`. At and just past both bounds, and far past them (where `vpmaddubsw`
/// would saturate), the result equals the reference, and the kernel is the one the bound says.
#[test]
fn avx2_uses_vpmaddubsw_exactly_where_no_pair_can_saturate() {
    if !Isa::Avx2.is_available() {
        eprintln!("no AVX2: nothing to check");
        return;
    }
    let s = ConvShape::new([1, 8, 6, 6], [5, 8, 3, 3], ConvParams::default().padding(1)).unwrap();
    let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
    // (weight pair, activation byte, vpmaddubsw expected)
    let cases: [((i8, i8), u8, bool); 8] = [
        ((64, 64), 255, true),     // 255·128 = 32640
        ((64, 65), 255, false),    // 255·129 = 32895 > 32767
        ((-64, -64), 255, true),   // −32640
        ((-128, -1), 255, false),  // −32895 < −32768
        ((127, 127), 255, false),  // would saturate: 64770
        ((127, 127), 129, true),   // 129·254 = 32766
        ((127, 127), 130, false),  // 33020
        ((-128, -128), 128, true), // −32768 exactly
    ];
    for ((w0, w1), a, fast_expected) in cases {
        // Every 4-byte lane holds the pair twice; other weights 0.
        let w: Vec<i8> = (0..s.weight_len())
            .map(|i| {
                let c = (i / 9) % 8;
                if c % 2 == 0 {
                    w0
                } else {
                    w1
                }
            })
            .collect();
        let x_qp = QParams::new(0.02, 0, QDtype::QUInt8).unwrap();
        let x = vec![a; s.input_len()];
        let epi = simple_epi(&s, &w_qp);
        let p =
            PackedConv2d::with_isa(&w, s.weight_dims(), &w_qp, &epi, s.params, Isa::Avx2).unwrap();
        let kernel = p.kernel_name(&x, &x_qp);
        let want_kernel = if fast_expected {
            "avx2 vpmaddubsw"
        } else {
            "avx2 vpmaddwd"
        };
        assert_eq!(kernel, want_kernel, "pair ({w0}, {w1}), activation {a}");
        let want = reference::conv2d_acc(&x, &x_qp, &w, &w_qp, &s).unwrap();
        let got = p
            .run_acc(&x, s.input_dims(), &x_qp, &FastConvOptions::with_threads(1))
            .unwrap();
        assert_eq!(got, want, "pair ({w0}, {w1}), activation {a}");
    }
}

/// The AVX2 int8 depthwise conv runs the flat `vpmaddubsw` kernel exactly where no pair of
/// taps can saturate int16 (the GEMM's bound, over the kernel's 4-tap weight lanes), and the
/// exact `vpmaddwd` pair-plane kernel otherwise: at and just past the bound, the result
/// equals the reference and the kernel is the one the bound says.
#[test]
fn avx2_depthwise_uses_vpmaddubsw_exactly_where_no_pair_can_saturate() {
    if !Isa::Avx2.is_available() {
        eprintln!("no AVX2: nothing to check");
        return;
    }
    let s = ConvShape::new(
        [2, 3, 9, 21],
        [3, 1, 3, 3],
        ConvParams::default().padding(1).groups(3),
    )
    .unwrap();
    let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
    // (taps (0, 1) of every kernel row, largest activation byte, vpmaddubsw expected)
    let cases: [((i8, i8), u8, bool); 6] = [
        ((127, 127), 129, true),    // 129·254 = 32766
        ((127, 127), 130, false),   // 33020
        ((-128, -128), 128, true),  // −32768 exactly
        ((-128, -128), 129, false), // −33024
        ((100, -100), 255, true),   // 25500 either way
        ((127, 2), 255, false),     // 255·129 = 32895
    ];
    let mut rng = Rng::new(5);
    for (i, ((w0, w1), a, fast_expected)) in cases.into_iter().enumerate() {
        // Taps 0 and 1 of each kernel row are the pair; tap 2 pairs with the lane's zero.
        let w: Vec<i8> = (0..s.weight_len()).map(|j| [w0, w1, 1][j % 3]).collect();
        let x_qp = QParams::new(0.02, 0, QDtype::QUInt8).unwrap();
        // Activations up to `a`, the largest present.
        let mut x: Vec<u8> = (0..s.input_len())
            .map(|_| (rng.next() % (a as u64 + 1)) as u8)
            .collect();
        x[7] = a;
        let epi = simple_epi(&s, &w_qp);
        let p =
            PackedConv2d::with_isa(&w, s.weight_dims(), &w_qp, &epi, s.params, Isa::Avx2).unwrap();
        let want_kernel = if fast_expected {
            "avx2 depthwise vpmaddubsw"
        } else {
            "avx2 depthwise vpmaddwd"
        };
        assert_eq!(p.kernel_name(&x, &x_qp), want_kernel, "case {i}");
        let want = reference::conv2d_acc(&x, &x_qp, &w, &w_qp, &s).unwrap();
        let got = p
            .run_acc(&x, s.input_dims(), &x_qp, &FastConvOptions::with_threads(1))
            .unwrap();
        assert_eq!(got, want, "case {i}");
        let bytes = reference::conv2d_quantized(&x, &x_qp, &w, &w_qp, &epi, &s).unwrap();
        let got = p
            .run(&x, s.input_dims(), &x_qp, &FastConvOptions::with_threads(1))
            .unwrap();
        assert_eq!(got, bytes, "case {i}");
    }
}

/// A packed layer caches its per-call constants for the last input qparams: called with
/// alternating input qparams (zero points, dtypes), every call equals the reference.
#[test]
fn one_packed_layer_called_with_changing_input_qparams_matches_reference() {
    let mut rng = Rng::new(91);
    let s = ConvShape::new(
        [1, 20, 9, 11],
        [13, 20, 3, 3],
        ConvParams::default().padding(1),
    )
    .unwrap();
    let w_qp = WeightQParams {
        scheme: QScheme::PerChannelAffine,
        scales: (0..13).map(|o| 0.002 + o as f32 * 1e-4).collect(),
        zero_points: (0..13).map(|o| o % 3 - 1).collect(),
    };
    let w: Vec<i8> = (0..s.weight_len()).map(|_| rng.next() as i8).collect();
    let x: Vec<u8> = (0..s.input_len()).map(|_| rng.next() as u8).collect();
    let epi = simple_epi(&s, &w_qp);
    let qps = [
        QParams::new(0.02, 0, QDtype::QUInt8).unwrap(),
        QParams::new(0.02, 131, QDtype::QUInt8).unwrap(),
        QParams::new(0.02, -7, QDtype::QInt8).unwrap(),
    ];
    for isa in Isa::available() {
        let p = PackedConv2d::with_isa(&w, s.weight_dims(), &w_qp, &epi, s.params, isa).unwrap();
        for round in 0..2 {
            for x_qp in &qps {
                let want = reference::conv2d_quantized(&x, x_qp, &w, &w_qp, &epi, &s).unwrap();
                let got = p
                    .run(&x, s.input_dims(), x_qp, &FastConvOptions::with_threads(1))
                    .unwrap();
                assert_eq!(got, want, "{isa}, round {round}, {x_qp:?}");
            }
        }
    }
}

/// The channels-in-lanes int8 GEMM (small planes; AVX-512 VNNI: 64 channels per tile,
/// AVX-VNNI and AVX2: 16) forced on shapes that exercise its edges: partial pixel blocks and
/// micro-tiles, output channels not a multiple of the tile, input channels not a multiple of
/// 4, strides, dilations, asymmetric kernels, batches, every requantization formula; each
/// equals the reference on every x86 path (AVX2 runs it on the narrow data, where
/// `vpmaddubsw` is exact, and the flat exact kernel on full-range data).
#[test]
fn channels_in_lanes_gemm_matches_reference() {
    let isas: Vec<Isa> = [Isa::Avx512Vnni, Isa::AvxVnni, Isa::Avx2]
        .into_iter()
        .filter(|i| i.is_available())
        .collect();
    if isas.is_empty() {
        eprintln!("no VNNI path: nothing to check");
        return;
    }
    let mut rng = Rng::new(123);
    let cases = [
        (
            [1, 256, 14, 14],
            [256, 256, 3, 3],
            ConvParams::default().padding(1),
        ),
        (
            [2, 13, 7, 9],
            [70, 13, 3, 3],
            ConvParams::default().padding(1),
        ),
        (
            [1, 5, 11, 10],
            [3, 5, 2, 3],
            ConvParams::default().stride(2).padding(1),
        ),
        (
            [2, 32, 9, 9],
            [130, 32, 3, 3],
            ConvParams::default().dilation(2).padding(2),
        ),
        ([1, 64, 8, 8], [64, 64, 1, 1], ConvParams::default()),
        // Rows of 17 pixels (a last group of one) and 18 channel blocks (16 + 2) in the
        // NHWC copy's 16×16 and 8×8 transpositions (17 = 16 + 1 = 8 + 8 + 1).
        (
            [1, 70, 3, 17],
            [20, 70, 3, 3],
            ConvParams::default().padding(1),
        ),
        (
            [1, 7, 5, 23],
            [65, 7, 5, 1],
            ConvParams {
                stride: [1, 3],
                padding: [2, 0],
                dilation: [1, 1],
                groups: 1,
            },
        ),
    ];
    // Full-range data, and data within ±2 of the zero points with an output scale that makes
    // every unit of the accumulator count (the epilogue multiplier near 0.7).
    let runs = cases.into_iter().flat_map(|c| [(c, false), (c, true)]);
    for (i, ((xd, wd, params), narrow)) in runs.enumerate() {
        let s = ConvShape::new(xd, wd, params).unwrap();
        let w: Vec<i8> = (0..s.weight_len())
            .map(|_| {
                if narrow {
                    (rng.next() % 7) as i8 - 3
                } else {
                    rng.next() as i8
                }
            })
            .collect();
        let x_raw: Vec<u8> = (0..s.input_len()).map(|_| rng.next() as u8).collect();
        let w_qp = WeightQParams {
            scheme: QScheme::PerChannelSymmetric,
            scales: (0..s.c_out).map(|o| 0.0005 + o as f32 * 1e-5).collect(),
            zero_points: vec![0; s.c_out],
        };
        let bias: Vec<f32> = (0..s.c_out).map(|_| rng.unit() - 0.5).collect();
        for (f, formula) in RequantFormula::ALL.into_iter().enumerate() {
            let x_qp = [
                QParams::new(0.02, 3, QDtype::QUInt8).unwrap(),
                QParams::new(0.02, -9, QDtype::QInt8).unwrap(),
            ][f % 2];
            let x: Vec<u8> = if narrow {
                let z = x_qp.zero_point;
                let stored = |v: i32| x_qp.dtype.int_to_byte(v);
                x_raw
                    .iter()
                    .map(|&r| stored(z + (r % 5) as i32 - 2))
                    .collect()
            } else {
                x_raw.clone()
            };
            let (out_scale, out_zp) = if narrow { (1.5e-5, 128) } else { (0.3, 5) };
            let out = QParams::new(out_scale, out_zp, QDtype::QUInt8).unwrap();
            // (Narrow: a bias of a few output units, so that outputs do not saturate.)
            let bias: Vec<f32> = match narrow {
                true => bias.iter().map(|b| b * 40.0 * out_scale).collect(),
                false => bias.clone(),
            };
            let epi = Epilogue::new(
                formula,
                x_qp.scale,
                &w_qp,
                Some(&bias),
                out,
                f == 1,
                s.c_out,
            )
            .unwrap();
            let want = reference::conv2d_quantized(&x, &x_qp, &w, &w_qp, &epi, &s).unwrap();
            let layouts = [GemmLayout::Nhwc, GemmLayout::Flat, GemmLayout::Auto];
            for (&isa, layout) in isas
                .iter()
                .flat_map(|i| layouts.iter().map(move |l| (i, *l)))
            {
                let p = PackedConv2d::with_isa(&w, wd, &w_qp, &epi, params, isa)
                    .unwrap()
                    .with_gemm_layout(layout);
                for threads in [1, 2] {
                    let got = p
                        .run(
                            &x,
                            xd,
                            &x_qp,
                            &FastConvOptions::splitting_small(Some(threads)),
                        )
                        .unwrap();
                    assert!(
                        got == want,
                        "case {i}, {isa}, {formula:?}, {layout:?}, {threads} threads: first \
                         difference at {:?}",
                        got.iter().zip(&want).position(|(a, b)| a != b)
                    );
                }
            }
        }
    }
}

/// The int8 depthwise conv with the channels in the lanes (AVX-512 VNNI with VBMI, one
/// channel per group, small planes: `nhwc::depthwise_quads`), forced on, forced off and
/// chosen, equals the reference: MobileNet's 7×7 and 14×14 layers, strides 1 and 2, kernels
/// of 1 to 4 columns and 1 to 5 rows, row dilation, paddings of up to 3 columns (quads mostly
/// of padding), channel counts that fill no tile of 64 or 16, two images, qint8 and quint8
/// inputs, random epilogues and weight schemes, one and two threads.
#[test]
fn channels_in_lanes_depthwise_matches_reference() {
    #[cfg(target_arch = "x86_64")]
    let vbmi = std::arch::is_x86_feature_detected!("avx512vbmi");
    #[cfg(not(target_arch = "x86_64"))]
    let vbmi = false;
    if !Isa::Avx512Vnni.is_available() || !vbmi {
        eprintln!("no AVX-512 VNNI with VBMI: the channels-in-lanes depthwise conv does not run");
        return;
    }
    let dw =
        |c: usize, hw: [usize; 2], k: [usize; 2], stride: usize, pad: [usize; 2], dh: usize| {
            let params = ConvParams {
                stride: [stride, stride],
                padding: pad,
                dilation: [dh, 1],
                groups: c,
            };
            ConvShape::new([1 + c % 2, c, hw[0], hw[1]], [c, 1, k[0], k[1]], params).unwrap()
        };
    let shapes = [
        dw(960, [7, 7], [3, 3], 1, [1, 1], 1),
        dw(576, [14, 14], [3, 3], 2, [1, 1], 1),
        dw(96, [14, 14], [3, 3], 1, [1, 1], 1),
        dw(70, [9, 11], [5, 4], 1, [2, 3], 1),
        dw(17, [8, 6], [2, 1], 2, [0, 0], 1),
        dw(33, [10, 5], [4, 2], 1, [1, 0], 2),
        dw(5, [3, 20], [1, 3], 2, [0, 2], 1),
    ];
    let mut rng = Rng::new(0xd0_0d);
    for (i, s) in shapes.into_iter().enumerate() {
        for round in 0..3 {
            let c = random_case_for(&mut rng, s);
            let want = reference::conv2d_quantized(&c.x, &c.x_qp, &c.w, &c.w_qp, &c.epi, &s);
            for layout in [GemmLayout::Nhwc, GemmLayout::Flat, GemmLayout::Auto] {
                let p = PackedConv2d::with_isa(
                    &c.w,
                    s.weight_dims(),
                    &c.w_qp,
                    &c.epi,
                    s.params,
                    Isa::Avx512Vnni,
                )
                .unwrap()
                .with_gemm_layout(layout);
                for threads in [1, 2] {
                    let opts = FastConvOptions::splitting_small(Some(threads));
                    let got = p.run(&c.x, s.input_dims(), &c.x_qp, &opts);
                    assert!(
                        same(&got, &want),
                        "shape {i} round {round} ({}), {layout:?}, {threads} threads: {}",
                        c.desc,
                        match (&got, &want) {
                            (Ok(g), Ok(w)) => first_diff(g, w),
                            _ => format!("{got:?} vs {want:?}"),
                        }
                    );
                }
            }
        }
    }
}

/// The small-plane int8 depthwise kernels (output rows of at most 8 pixels, input rows of at
/// most 16 bytes, `kw ≤ 4`: `x86::dw_i8_small_avxvnni` and its EVEX and `vpmaddubsw` forms,
/// `x86::dw_i8_small_avx512`) equal the reference on every x86 ISA that runs them: AVX-512
/// VNNI (zmm, every epilogue record, before the channels-in-lanes quads), AVX-VNNI, and AVX2
/// on 7-bit activations (where `vpmaddubsw` is
/// exact; 8-bit ones take the exact fallbacks). MobileNet's 7×7 outputs at strides 1 and 2,
/// rows of 8 outputs (whole 8-byte stores) and of 1 to 3 (byte stores), output rows not a
/// multiple of the kernel's four, one output row, 5-row kernels, row dilation, paddings
/// beyond the kernel's reach, 16-byte input rows, channel multipliers, one to three images
/// (the input's last planes read from a copy), random epilogues and weight schemes, one and
/// two threads.
#[test]
fn small_plane_int8_depthwise_matches_reference_on_every_ymm_isa() {
    let isas: Vec<Isa> = [Isa::Avx512Vnni, Isa::AvxVnni, Isa::Avx2]
        .into_iter()
        .filter(|i| i.is_available())
        .collect();
    if isas.is_empty() {
        eprintln!("no AVX2: the small-plane depthwise kernels do not run");
        return;
    }
    let shapes = [
        dw_shape(960, 1, 1, [7, 7], [3, 3], 1)([1, 1], 1),
        dw_shape(576, 1, 2, [14, 14], [3, 3], 2)([1, 1], 1),
        dw_shape(24, 1, 3, [8, 8], [3, 3], 1)([1, 1], 1),
        dw_shape(16, 1, 2, [16, 16], [3, 3], 2)([1, 1], 1),
        dw_shape(13, 1, 2, [3, 3], [3, 3], 1)([1, 1], 1),
        dw_shape(7, 1, 1, [5, 2], [2, 2], 1)([1, 0], 1),
        dw_shape(9, 1, 2, [1, 7], [1, 3], 1)([0, 1], 1),
        dw_shape(11, 1, 1, [9, 7], [5, 3], 1)([2, 1], 1),
        dw_shape(10, 1, 2, [12, 6], [3, 4], 1)([2, 2], 2),
        dw_shape(6, 1, 1, [4, 5], [2, 2], 1)([3, 3], 1),
        dw_shape(5, 2, 2, [7, 7], [3, 3], 1)([1, 1], 1),
        dw_shape(4, 3, 1, [13, 13], [3, 3], 2)([1, 1], 1),
        dw_shape(19, 1, 2, [6, 9], [4, 4], 2)([1, 1], 1),
    ];
    int8_depthwise_matches_reference_on(&isas, &shapes, 0x5a_a11);
}

/// The int8 depthwise kernel for output rows of 9 to 32 pixels (`x86::dw_i8_rows_avx512`,
/// AVX-512 VNNI + VBMI: one or two vectors per row, input rows of at most 64 bytes, `kw ≤ 4`,
/// at most 64 padded rows) equals the reference, and so does every other ISA on the same
/// shapes: MobileNetV2's 14×14 and 28×28 outputs at strides 1 and 2; rows of exactly 16 and
/// 32 outputs (a pack's rows fill the 64-byte store), of 9, 12, 15, 17 and 28; 64-byte input
/// rows; 64 padded rows (the most it holds) and 65 (the other kernels); output rows not a
/// multiple of four (a two-vector step whose second pack is past the last row) and one
/// output row; row and column dilation with unequal strides; a 5×4 kernel with paddings
/// beyond its reach; one-column kernels; channel multipliers; one to three images; random
/// epilogues (every formula) and weight schemes, 7- and 8-bit activations, one and two
/// threads.
#[test]
fn int8_depthwise_on_rows_of_up_to_32_pixels_matches_reference() {
    let isas = Isa::available();
    if !Isa::Avx512Vnni.is_available() {
        eprintln!("no AVX-512 VNNI: the row depthwise kernel does not run");
    }
    let dilated = |w: usize, dil: [usize; 2], st: [usize; 2]| {
        let params = ConvParams {
            stride: st,
            padding: [2, 2],
            dilation: dil,
            groups: 6,
        };
        ConvShape::new([2, 6, 20, w], [6, 1, 3, 3], params).unwrap()
    };
    let shapes = [
        dw_shape(384, 1, 1, [14, 14], [3, 3], 1)([1, 1], 1),
        dw_shape(192, 1, 2, [28, 28], [3, 3], 2)([1, 1], 1),
        dw_shape(192, 1, 1, [28, 28], [3, 3], 1)([1, 1], 1),
        dw_shape(144, 1, 1, [56, 56], [3, 3], 2)([1, 1], 1),
        dw_shape(17, 1, 3, [16, 16], [3, 3], 1)([1, 1], 1),
        dw_shape(9, 1, 1, [11, 9], [3, 3], 1)([1, 1], 1),
        dw_shape(6, 1, 2, [5, 64], [1, 4], 4)([0, 0], 1),
        dw_shape(6, 1, 2, [9, 64], [3, 3], 2)([1, 1], 1),
        dw_shape(5, 1, 1, [62, 12], [3, 3], 1)([1, 1], 1),
        dw_shape(5, 1, 1, [63, 12], [3, 3], 1)([1, 1], 1),
        dw_shape(5, 1, 1, [62, 30], [3, 3], 1)([1, 1], 1),
        dw_shape(3, 1, 2, [13, 17], [3, 1], 1)([1, 0], 1),
        dilated(14, [2, 2], [2, 1]),
        dilated(14, [1, 3], [3, 1]),
        dilated(40, [3, 2], [1, 2]),
        dw_shape(5, 2, 2, [14, 14], [3, 3], 1)([1, 1], 1),
        dw_shape(5, 3, 1, [28, 28], [3, 3], 1)([1, 1], 1),
        dw_shape(7, 1, 1, [10, 13], [5, 4], 1)([3, 3], 1),
        dw_shape(8, 1, 2, [3, 12], [3, 3], 1)([0, 1], 1),
        dw_shape(4, 1, 1, [6, 15], [2, 1], 1)([0, 0], 2),
    ];
    int8_depthwise_matches_reference_on(&isas, &shapes, 0x16_c015);
}

/// A depthwise shape: `c` groups of `mult` output channels, `n` images of `hw`, kernel `k`,
/// stride `st` both ways; then padding and row dilation.
fn dw_shape(
    c: usize,
    mult: usize,
    n: usize,
    hw: [usize; 2],
    k: [usize; 2],
    st: usize,
) -> impl Fn([usize; 2], usize) -> ConvShape {
    move |pad: [usize; 2], dh: usize| {
        let params = ConvParams {
            stride: [st, st],
            padding: pad,
            dilation: [dh, 1],
            groups: c,
        };
        ConvShape::new([n, c, hw[0], hw[1]], [c * mult, 1, k[0], k[1]], params).unwrap()
    }
}

/// Four random cases per shape (rounds 0 and 1 on 7-bit activations) on every ISA of
/// `isas`, one and two threads, equal to the reference.
fn int8_depthwise_matches_reference_on(isas: &[Isa], shapes: &[ConvShape], seed: u64) {
    let mut rng = Rng::new(seed);
    for (i, &s) in shapes.iter().enumerate() {
        for round in 0..4 {
            let mut c = random_case_for(&mut rng, s);
            // Rounds 0 and 1: 7-bit activations `u = x ^ flip ≤ 127` (PyTorch's x86 preset),
            // where AVX2 runs `vpmaddubsw`.
            if round < 2 {
                let dtype = c.x_qp.dtype;
                let seven = |b: u8| match dtype {
                    QDtype::QUInt8 => b & 0x7f,
                    _ => b | 0x80,
                };
                c.x.iter_mut().for_each(|b| *b = seven(*b));
                c.x_qp.zero_point = match dtype {
                    QDtype::QUInt8 => c.x_qp.zero_point.min(127),
                    _ => c.x_qp.zero_point.min(-1),
                };
            }
            let want = reference::conv2d_quantized(&c.x, &c.x_qp, &c.w, &c.w_qp, &c.epi, &s);
            for &isa in isas {
                let p =
                    PackedConv2d::with_isa(&c.w, s.weight_dims(), &c.w_qp, &c.epi, s.params, isa)
                        .unwrap();
                for threads in [1, 2] {
                    let opts = FastConvOptions::splitting_small(Some(threads));
                    let got = p.run(&c.x, s.input_dims(), &c.x_qp, &opts);
                    assert!(
                        same(&got, &want),
                        "shape {i} round {round} ({}), {isa}, {threads} threads: {}",
                        c.desc,
                        match (&got, &want) {
                            (Ok(g), Ok(w)) => first_diff(g, w),
                            _ => format!("{got:?} vs {want:?}"),
                        }
                    );
                }
            }
        }
    }
}

#[test]
fn target_like_shapes_match_reference() {
    let mut rng = Rng::new(77);
    let shapes = [
        ([1, 132, 12, 12], [121, 132, 3, 3], ConvParams::default()),
        (
            [1, 64, 14, 15],
            [64, 64, 3, 3],
            ConvParams::default().padding(1),
        ),
        (
            [1, 256, 7, 7],
            [256, 256, 3, 3],
            ConvParams::default().padding(1),
        ),
        (
            [1, 128, 9, 70],
            [128, 1, 3, 3],
            ConvParams::default().padding(1).groups(128),
        ),
        (
            [2, 32, 17, 17],
            [48, 32, 3, 3],
            ConvParams::default().stride(2).padding(1),
        ),
        ([1, 40, 9, 9], [24, 40, 1, 1], ConvParams::default()),
    ];
    for (xd, wd, params) in shapes {
        let s = ConvShape::new(xd, wd, params).unwrap();
        for (x_dtype, x_zp, w_zp) in [(QDtype::QUInt8, 3, 0), (QDtype::QInt8, -5, 7)] {
            let x: Vec<u8> = (0..s.input_len()).map(|_| rng.next() as u8).collect();
            let w: Vec<i8> = (0..s.weight_len()).map(|_| rng.next() as i8).collect();
            let x_qp = QParams::new(0.05, x_zp, x_dtype).unwrap();
            let w_qp = WeightQParams::per_tensor(QScheme::PerTensorAffine, 0.01, w_zp);
            let out = QParams::new(0.05 * 0.01 * 2000.0, 10, QDtype::QUInt8).unwrap();
            for formula in RequantFormula::ALL {
                let epi = Epilogue::new(formula, 0.05, &w_qp, None, out, false, s.c_out).unwrap();
                let want = reference::conv2d_quantized(&x, &x_qp, &w, &w_qp, &epi, &s).unwrap();
                for isa in Isa::available() {
                    let p = PackedConv2d::with_isa(&w, wd, &w_qp, &epi, params, isa).unwrap();
                    for threads in [Some(1), Some(2)] {
                        let got = p
                            .run(&x, xd, &x_qp, &FastConvOptions::splitting_small(threads))
                            .unwrap();
                        assert!(
                            got == want,
                            "{xd:?} {wd:?} {formula} {isa}: {}",
                            first_diff(&got, &want)
                        );
                    }
                }
            }
        }
    }
}

/// A subnormal output scale makes `1/sy` infinite: the epilogue then meets inf and NaN
/// (`0 · inf`); every path must clamp and round them as the scalar code does.
#[test]
fn non_finite_requant_intermediates_match() {
    let s = ConvShape::new([1, 5, 6, 6], [7, 5, 3, 3], ConvParams::default().padding(1)).unwrap();
    let mut rng = Rng::new(3);
    let x: Vec<u8> = (0..s.input_len())
        .map(|_| (rng.next() % 3) as u8 + 9)
        .collect();
    let w: Vec<i8> = (0..s.weight_len())
        .map(|_| (rng.next() % 3) as i8 - 1)
        .collect();
    let x_qp = QParams::new(0.1, 10, QDtype::QUInt8).unwrap();
    let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.1, 0);
    let out = QParams {
        scale: 1.0e-44,
        zero_point: 3,
        dtype: QDtype::QInt8,
    };
    for formula in [
        RequantFormula::Qnnpack,
        RequantFormula::Fbgemm,
        RequantFormula::Onednn,
    ] {
        let epi = Epilogue::new(formula, 0.1, &w_qp, None, out, false, s.c_out).unwrap();
        let want = reference::conv2d_quantized(&x, &x_qp, &w, &w_qp, &epi, &s).unwrap();
        for isa in Isa::available() {
            let p =
                PackedConv2d::with_isa(&w, s.weight_dims(), &w_qp, &epi, s.params, isa).unwrap();
            let got = p
                .run(&x, s.input_dims(), &x_qp, &FastConvOptions::default())
                .unwrap();
            assert_eq!(got, want, "{formula} on {isa}");
        }
    }
}

fn simple_epi(s: &ConvShape, w_qp: &WeightQParams) -> Epilogue {
    let out = QParams::new(1.0, 0, QDtype::QUInt8).unwrap();
    Epilogue::new(RequantFormula::Fbgemm, 0.1, w_qp, None, out, false, s.c_out).unwrap()
}

#[test]
fn wrong_input_length_is_an_error() {
    let s = ConvShape::new([1, 4, 5, 5], [3, 4, 3, 3], ConvParams::default()).unwrap();
    let w = vec![1i8; s.weight_len()];
    let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.1, 0);
    let epi = simple_epi(&s, &w_qp);
    let x_qp = QParams::new(0.1, 0, QDtype::QUInt8).unwrap();
    let x = vec![0u8; s.input_len() - 1];
    let opts = FastConvOptions::default();
    for isa in Isa::available() {
        let p = PackedConv2d::with_isa(&w, s.weight_dims(), &w_qp, &epi, s.params, isa).unwrap();
        assert!(matches!(
            p.run(&x, s.input_dims(), &x_qp, &opts),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            p.run_acc(&x, s.input_dims(), &x_qp, &opts),
            Err(Error::Shape(_))
        ));
        // Input channels that do not match the weight.
        let bad = [1, 5, 5, 5];
        assert!(p.run(&[0u8; 125], bad, &x_qp, &opts).is_err());
    }
    assert!(fast::conv2d_quantized(&x, &x_qp, &w, &w_qp, &epi, &s, &opts).is_err());
    // Wrong weight length, wrong epilogue size.
    assert!(PackedConv2d::new(&w[1..], s.weight_dims(), &w_qp, &epi, s.params).is_err());
    let epi2 = Epilogue {
        channels: epi.channels[..2].to_vec(),
        ..epi.clone()
    };
    assert!(PackedConv2d::new(&w, s.weight_dims(), &w_qp, &epi2, s.params).is_err());
    // Float conv length checks.
    let xf = vec![0f32; s.input_len() - 1];
    let wf = vec![0f32; s.weight_len()];
    assert!(fast::conv2d_f32(&xf, &wf, None, &s, &opts).is_err());
}

#[test]
fn accumulator_overflow_risk_is_an_error() {
    // K = 1024·6·6 = 36864 taps of |w − ζ| = 255 with |x − x_zp| up to 255: 2.4e9 > i32::MAX.
    let s = ConvShape::new([1, 1024, 6, 6], [2, 1024, 6, 6], ConvParams::default()).unwrap();
    let w = vec![-128i8; s.weight_len()];
    let w_qp = WeightQParams::per_tensor(QScheme::PerTensorAffine, 0.01, 127);
    let epi = simple_epi(&s, &w_qp);
    let x_qp = QParams::new(0.1, 0, QDtype::QUInt8).unwrap();
    let full = vec![255u8; s.input_len()];
    let small = vec![3u8; s.input_len()];
    let opts = FastConvOptions::default();
    let want = epi
        .check_accumulator(&w, &w_qp, x_qp.dtype.full_range(), 0, s.k(), None)
        .unwrap_err()
        .to_string();
    for isa in Isa::available() {
        let p = PackedConv2d::with_isa(&w, s.weight_dims(), &w_qp, &epi, s.params, isa).unwrap();
        let e = p.run(&small, s.input_dims(), &x_qp, &opts).unwrap_err();
        assert!(matches!(e, Error::AccumulatorOverflow { .. }), "{e}");
        assert_eq!(e.to_string(), want);
        // run_acc: the real accumulators overflow only for the full input.
        assert!(matches!(
            p.run_acc(&full, s.input_dims(), &x_qp, &opts),
            Err(Error::AccumulatorOverflow { .. })
        ));
        let acc = p.run_acc(&small, s.input_dims(), &x_qp, &opts).unwrap();
        assert_eq!(
            acc,
            reference::conv2d_acc(&small, &x_qp, &w, &w_qp, &s).unwrap()
        );
    }
    let e = fast::conv2d_quantized(&small, &x_qp, &w, &w_qp, &epi, &s, &opts).unwrap_err();
    assert!(matches!(e, Error::AccumulatorOverflow { .. }));
}

/// A layer checks its accumulator bound per input qparams: one that passed for a small input
/// offset (zero point 128: |x − x_zp| ≤ 128) still refuses a larger one (zero point 0: 255)
/// after it, and still runs the small one.
#[test]
fn accumulator_check_passed_for_one_input_zero_point_still_refuses_a_riskier_one() {
    // K = 36864 taps of |w − ζ| = 255: 128 · 255 · K = 1.2e9 fits int32, 255 · 255 · K not.
    let s = ConvShape::new([1, 1024, 6, 6], [2, 1024, 6, 6], ConvParams::default()).unwrap();
    let w = vec![-128i8; s.weight_len()];
    let w_qp = WeightQParams::per_tensor(QScheme::PerTensorAffine, 0.01, 127);
    let epi = simple_epi(&s, &w_qp);
    let centred = QParams::new(0.1, 128, QDtype::QUInt8).unwrap();
    let edge = QParams::new(0.1, 0, QDtype::QUInt8).unwrap();
    let x = vec![130u8; s.input_len()];
    let opts = FastConvOptions::default();
    for isa in Isa::available() {
        let p = PackedConv2d::with_isa(&w, s.weight_dims(), &w_qp, &epi, s.params, isa).unwrap();
        let want = fast::conv2d_quantized(&x, &centred, &w, &w_qp, &epi, &s, &opts).unwrap();
        assert_eq!(p.run(&x, s.input_dims(), &centred, &opts).unwrap(), want);
        let e = p.run(&x, s.input_dims(), &edge, &opts).unwrap_err();
        assert!(
            matches!(e, Error::AccumulatorOverflow { .. }),
            "{isa:?}: {e}"
        );
        assert_eq!(p.run(&x, s.input_dims(), &centred, &opts).unwrap(), want);
        assert!(p.run(&x, s.input_dims(), &edge, &opts).is_err());
    }
}

#[test]
fn out_of_range_input_zero_point_matches_reference() {
    let s = ConvShape::new([1, 3, 5, 5], [2, 3, 3, 3], ConvParams::default().padding(1)).unwrap();
    let w: Vec<i8> = (0..s.weight_len()).map(|i| (i % 7) as i8 - 3).collect();
    let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.1, 0);
    let epi = simple_epi(&s, &w_qp);
    let x: Vec<u8> = (0..s.input_len()).map(|i| (i * 37) as u8).collect();
    let x_qp = QParams {
        scale: 0.1,
        zero_point: 300,
        dtype: QDtype::QUInt8,
    };
    let p = PackedConv2d::new(&w, s.weight_dims(), &w_qp, &epi, s.params).unwrap();
    let opts = FastConvOptions::default();
    assert!(same(
        &p.run(&x, s.input_dims(), &x_qp, &opts),
        &reference::conv2d_quantized(&x, &x_qp, &w, &w_qp, &epi, &s)
    ));
    assert!(same(
        &p.run_acc(&x, s.input_dims(), &x_qp, &opts),
        &reference::conv2d_acc(&x, &x_qp, &w, &w_qp, &s)
    ));
}

/// Strided f32 depthwise convs with rows of 28 outputs or more (the SIMD paths split the
/// plane by column phase, here with several vectors per row, plane widths that are not a
/// multiple of the stride, and a stride of 3): the same bits on every ISA path as the
/// portable one, and within rounding of the reference.
#[test]
fn strided_float_depthwise_on_wide_rows_is_identical_across_isas() {
    let mut rng = Rng::new(0x005e_edd5);
    let cases = [
        // (channels, multiplier, h, w, kernel, stride, dilation, padding)
        (3, 1, 9, 60, [3, 3], [2, 2], [1, 1], [1, 1]),
        (2, 2, 7, 90, [3, 5], [1, 3], [1, 2], [0, 2]),
        (4, 1, 5, 61, [1, 4], [2, 2], [2, 1], [1, 0]),
    ];
    for (case_no, &(c, m, h, w, k, stride, dilation, padding)) in cases.iter().enumerate() {
        let params = ConvParams {
            stride,
            padding,
            dilation,
            groups: c,
        };
        let s = ConvShape::new([1, c, h, w], [c * m, 1, k[0], k[1]], params).unwrap();
        assert!(s.w_out >= 28, "case {case_no}: {} outputs a row", s.w_out);
        let x: Vec<f32> = (0..s.input_len()).map(|_| rng.unit() * 2.0 - 1.0).collect();
        let wt: Vec<f32> = (0..s.weight_len()).map(|_| rng.unit() - 0.5).collect();
        let want = reference::conv2d_f32(&x, &wt, None, &s).unwrap();
        let opts = FastConvOptions::with_threads(1);
        let portable = fast::conv2d_f32_with_isa(&x, &wt, None, &s, &opts, Isa::Portable).unwrap();
        for (&g, &r) in portable.iter().zip(&want) {
            assert!((g - r).abs() <= 1e-5, "case {case_no}: {g} vs {r}");
        }
        for isa in Isa::available() {
            let got = fast::conv2d_f32_with_isa(&x, &wt, None, &s, &opts, isa).unwrap();
            assert!(
                got.iter()
                    .zip(&portable)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "case {case_no}: {isa} differs from the portable path ({s:?})"
            );
        }
    }
}

#[test]
fn float_conv_matches_reference_and_is_identical_across_isas() {
    let mut rng = Rng::new(0xf10a7);
    let mut shapes: Vec<ConvShape> = (0..80).map(|_| random_shape(&mut rng)).collect();
    // 1x1 convs over planes of whole vectors, which read their input in place (two images, two
    // groups), and one whose plane is not.
    let one_by_one = |x: [usize; 4], c_out: usize, groups: usize| {
        let params = ConvParams::default().groups(groups);
        ConvShape::new(x, [c_out, x[1] / groups, 1, 1], params).unwrap()
    };
    shapes.extend([
        one_by_one([2, 8, 56, 56], 16, 1),
        one_by_one([1, 6, 32, 48], 4, 2),
        one_by_one([1, 5, 45, 45], 7, 1),
    ]);
    for (case_no, s) in shapes.into_iter().enumerate() {
        let (x, w, bias) = random_f32_layer(&mut rng, &s);
        let want = reference::conv2d_f32(&x, &w, bias.as_deref(), &s).unwrap();
        let mut first: Option<Vec<f32>> = None;
        for (i, isa) in Isa::available().into_iter().enumerate() {
            let opts =
                FastConvOptions::splitting_small([Some(1), Some(2), None][(case_no + i) % 3]);
            let got = fast::conv2d_f32_with_isa(&x, &w, bias.as_deref(), &s, &opts, isa).unwrap();
            // |error| <= K · 2^-23 · Σ|x·w| + |bias|·2^-24; |x|, |w| <= 1.
            let tol = s.k() as f32 * 1.2e-7 * (s.k() as f32 * 0.5 + 1.0) + 1e-6;
            for (j, (&g, &r)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - r).abs() <= tol,
                    "case {case_no} {isa} at {j}: {g} vs {r} ({:?})",
                    s
                );
            }
            // A layer packed once gives the same bits, call after call.
            let packed = fast::PackedConvF32::new(&w, s.weight_dims(), s.params, isa).unwrap();
            for _ in 0..2 {
                let again = packed
                    .run(&x, s.input_dims(), bias.as_deref(), &opts)
                    .unwrap();
                assert!(
                    again
                        .iter()
                        .zip(&got)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "case {case_no} {isa}: the packed layer differs ({s:?})"
                );
            }
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "case {case_no}: {isa} differs from the first path ({:?})",
                    s
                ),
            }
        }
    }
}

/// On every x86 path the float GEMM's two layouts (flat positions or output channels in the
/// lanes: 64 on AVX-512, 16 on AVX2) give the same bits, on random shapes (strides, dilation,
/// padding, channel counts off 16 and 64), on the small planes where the channels-in-lanes
/// layout is chosen, and on 1×1 convs that it runs straight from the NCHW input (strides 1
/// and 2, planes below and above a run of 36 pixels and off 16, output channels off 64, two
/// images; one with padding, which takes the NHWC copy), unclamped and clamped (the
/// transposing epilogue's bias and clamp: equal to the unclamped output clamped).
#[test]
fn float_gemm_layouts_give_identical_bits() {
    let isas: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|&i| i != Isa::Portable)
        .collect();
    if isas.is_empty() {
        eprintln!("skipped: no x86 fast path on this CPU (the portable one has one layout)");
        return;
    }
    let mut rng = Rng::new(0xf1a7);
    let mut shapes: Vec<ConvShape> = (0..60)
        .map(|_| random_shape(&mut rng))
        .filter(|s| s.params.groups == 1 && s.c_in_per_group() > 1)
        .collect();
    for (c, hw) in [(70, 7), (130, 5), (21, 6)] {
        let p = ConvParams::default().padding(1);
        shapes.push(ConvShape::new([2, c, hw, hw], [c, c, 3, 3], p).unwrap());
    }
    let one = ConvParams::default();
    for (xd, co, p) in [
        ([1, 160, 7, 7], 96, one),
        ([2, 40, 14, 14], 64, one),
        ([1, 33, 9, 11], 70, one.stride(2)),
        ([1, 24, 5, 6], 17, one),
        ([1, 20, 6, 6], 64, one.padding(1)),
    ] {
        shapes.push(ConvShape::new(xd, [co, xd[1], 1, 1], p).unwrap());
    }
    assert!(shapes.len() > 20, "too few one-group shapes drawn");
    let clamp = fast::F32Clamp { lo: -0.1, hi: 0.3 };
    for (i, s) in shapes.iter().enumerate() {
        let (x, w, bias) = random_f32_layer(&mut rng, s);
        let mut outs = Vec::new();
        for &isa in &isas {
            for layout in [GemmLayout::Flat, GemmLayout::Nhwc, GemmLayout::Auto] {
                let p = fast::PackedConvF32::new(&w, s.weight_dims(), s.params, isa)
                    .unwrap()
                    .with_gemm_layout(layout);
                let opts = FastConvOptions::with_threads(1 + i % 2);
                let got = p.run(&x, s.input_dims(), bias.as_deref(), &opts).unwrap();
                let mut clamped = vec![f32::NAN; s.output_len()];
                let (xd, b) = (s.input_dims(), bias.as_deref());
                p.run_into_clamped(&x, xd, b, Some(clamp), &opts, &mut clamped)
                    .unwrap();
                outs.push((format!("{isa} {layout:?}"), got, clamped));
            }
        }
        let want_clamped: Vec<f32> = outs[0].1.iter().map(|&v| clamp.apply(v)).collect();
        for (what, got, clamped) in &outs {
            assert!(
                got.iter()
                    .zip(&outs[0].1)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "case {i} ({s:?}): {what} differs from {}",
                outs[0].0
            );
            assert!(
                clamped
                    .iter()
                    .zip(&want_clamped)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "case {i} ({s:?}): {what} clamped differs from the clamped output",
            );
        }
    }
}

/// A random f32 input in [-1, 1), weights in [-0.5, 0.5) and, half the time, a bias.
fn random_f32_layer(rng: &mut Rng, s: &ConvShape) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let x: Vec<f32> = (0..s.input_len()).map(|_| rng.unit() * 2.0 - 1.0).collect();
    let w: Vec<f32> = (0..s.weight_len()).map(|_| rng.unit() - 0.5).collect();
    let bias: Option<Vec<f32>> = rng
        .chance(0.5)
        .then(|| (0..s.c_out).map(|_| rng.unit() - 0.5).collect());
    (x, w, bias)
}

/// 40 random shapes, a `c`-channel 3x3 conv on a 7x7 plane (the channels-in-lanes layout) and
/// a 16-channel depthwise conv.
fn random_shapes_with_small_planes(rng: &mut Rng, c: usize) -> Vec<ConvShape> {
    let mut shapes: Vec<ConvShape> = (0..40).map(|_| random_shape(rng)).collect();
    let p1 = ConvParams::default().padding(1);
    shapes.push(ConvShape::new([1, c, 7, 7], [c, c, 3, 3], p1).unwrap());
    shapes.push(ConvShape::new([1, 16, 9, 9], [16, 1, 3, 3], p1.groups(16)).unwrap());
    shapes
}

/// `run_into` overwrites every value of a caller's buffer that holds garbage, giving `run`'s
/// result, on every ISA path (random shapes: GEMM, grouped and depthwise; the channels-in-lanes
/// layouts too), and refuses a buffer of the wrong length.
#[test]
fn run_into_overwrites_every_output_of_a_garbage_buffer() {
    let mut rng = Rng::new(0x1270);
    for (i, s) in random_shapes_with_small_planes(&mut rng, 64)
        .into_iter()
        .enumerate()
    {
        let c = random_case_for(&mut rng, s);
        let s = &c.s;
        let xf: Vec<f32> = (0..s.input_len()).map(|_| rng.unit() * 2.0 - 1.0).collect();
        let wf: Vec<f32> = (0..s.weight_len()).map(|_| rng.unit() - 0.5).collect();
        let opts = FastConvOptions::with_threads(1 + i % 2);
        for isa in Isa::available() {
            let p = PackedConv2d::with_isa(&c.w, s.weight_dims(), &c.w_qp, &c.epi, s.params, isa)
                .unwrap();
            let want = p.run(&c.x, s.input_dims(), &c.x_qp, &opts).unwrap();
            let mut buf = vec![0xa5u8; s.output_len()];
            p.run_into(&c.x, s.input_dims(), &c.x_qp, &opts, &mut buf)
                .unwrap();
            assert!(buf == want, "case {i} {isa} int8 ({})", c.desc);
            let mut short = vec![0u8; s.output_len() - 1];
            let e = p.run_into(&c.x, s.input_dims(), &c.x_qp, &opts, &mut short);
            assert!(matches!(e, Err(squint::Error::Shape(_))), "{e:?}");

            let pf = fast::PackedConvF32::new(&wf, s.weight_dims(), s.params, isa).unwrap();
            let want = pf.run(&xf, s.input_dims(), None, &opts).unwrap();
            let mut buf = vec![f32::NAN; s.output_len()];
            pf.run_into(&xf, s.input_dims(), None, &opts, &mut buf)
                .unwrap();
            assert!(
                buf.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "case {i} {isa} f32 ({s:?})"
            );
            let mut long = vec![0f32; s.output_len() + 1];
            let e = pf.run_into(&xf, s.input_dims(), None, &opts, &mut long);
            assert!(matches!(e, Err(squint::Error::Shape(_))), "{e:?}");
        }
    }
}

/// A float conv clamped as it stores its outputs (`run_clamped`: a fused ReLU / ReLU6) gives
/// the conv's outputs then clamped, on every ISA path and GEMM layout (flat, channels in
/// lanes, depthwise), split across threads or not; a clamp that cuts nothing changes nothing.
#[test]
fn clamped_float_convs_equal_the_conv_then_the_clamp_on_every_path() {
    let mut rng = Rng::new(0xc1a3);
    let shapes = random_shapes_with_small_planes(&mut rng, 70);
    let clamps = [
        fast::F32Clamp {
            lo: 0.0,
            hi: f32::INFINITY,
        },
        fast::F32Clamp { lo: 0.0, hi: 0.6 },
        fast::F32Clamp { lo: -0.3, hi: 0.4 },
        fast::F32Clamp {
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
        },
    ];
    for (i, s) in shapes.iter().enumerate() {
        let (x, w, bias) = random_f32_layer(&mut rng, s);
        let opts = FastConvOptions::splitting_small(Some(1 + i % 2));
        for isa in Isa::available() {
            for layout in [GemmLayout::Flat, GemmLayout::Nhwc, GemmLayout::Auto] {
                let p = fast::PackedConvF32::new(&w, s.weight_dims(), s.params, isa)
                    .unwrap()
                    .with_gemm_layout(layout);
                let plain = p.run(&x, s.input_dims(), bias.as_deref(), &opts).unwrap();
                for c in clamps {
                    let got = p
                        .run_clamped(&x, s.input_dims(), bias.as_deref(), c, &opts)
                        .unwrap();
                    let want: Vec<f32> = plain.iter().map(|&v| c.apply(v)).collect();
                    assert_eq!(got, want, "case {i} ({s:?}) {isa} {layout:?} {c:?}");
                }
            }
        }
    }
}

/// Float depthwise convs on small planes (where AVX-512 puts 16 channels in the lanes): the
/// bits of the portable path on every ISA path, for channel counts around the blocks of 16,
/// rows around 16 columns, strides, dilations, paddings, odd kernels, batches, bias or none,
/// clamped or not, split across threads or not, into an output full of garbage.
#[test]
fn small_plane_float_depthwise_is_identical_across_isas() {
    let cases = [
        // (batch, channels, h, w, kernel, stride, dilation, padding)
        (1, 960, 7, 7, [3, 3], [1, 1], [1, 1], [1, 1]),
        (2, 17, 14, 14, [3, 3], [2, 2], [1, 1], [1, 1]),
        (1, 16, 16, 16, [5, 5], [1, 1], [1, 1], [2, 2]),
        (1, 33, 9, 17, [3, 5], [1, 2], [2, 1], [2, 0]),
        (1, 1, 3, 4, [1, 1], [1, 1], [1, 1], [0, 0]),
        (2, 15, 11, 5, [2, 3], [2, 1], [1, 2], [0, 1]),
        // Strided with 196 and 182 outputs (13x14 from an odd input width): channels in
        // the lanes on AVX2 since the kernel's weights are packed once (AVX-512 reads these
        // 3x3 stride-2 ones straight from the input).
        (1, 19, 28, 28, [3, 3], [2, 2], [1, 1], [1, 1]),
        (1, 24, 26, 27, [3, 3], [2, 2], [1, 1], [1, 1]),
    ];
    float_depthwise_is_identical_across_isas(&mut Rng::new(0xd7a9e5), &cases);
}

/// 3x3 float depthwise convs with padding 1, which AVX-512 reads straight from the input
/// (stride 2 with rows of 6 outputs or more, stride 1 with 14 or more:
/// `x86::dw3x3_f32_avx512`): the bits of the portable path on
/// every ISA path, for rows of one vector exactly, with a tail, several blocks of four
/// vectors, odd widths and heights, one or two input rows (padding rows below), batches,
/// bias or none, clamped or not, split across threads or not.
#[test]
fn float_3x3_depthwise_straight_from_the_input_is_identical_across_isas() {
    let (k, s1, s2, d1, p1) = ([3, 3], [1, 1], [2, 2], [1, 1], [1, 1]);
    let cases = [
        // (batch, channels, h, w, kernel, stride, dilation, padding)
        (1, 3, 112, 112, k, s1, d1, p1),
        (2, 4, 14, 14, k, s1, d1, p1),
        (1, 3, 20, 70, k, s1, d1, p1),
        (1, 2, 1, 16, k, s1, d1, p1),
        (1, 2, 2, 32, k, s1, d1, p1),
        (2, 5, 9, 17, k, s1, d1, p1),
        (1, 5, 112, 112, k, s2, d1, p1),
        (2, 3, 33, 141, k, s2, d1, p1),
        (1, 3, 17, 32, k, s2, d1, p1),
        (1, 4, 1, 40, k, s2, d1, p1),
        (1, 2, 2, 12, k, s2, d1, p1),
        (2, 7, 9, 11, k, s2, d1, p1),
        (1, 3, 30, 256, k, s2, d1, p1),
    ];
    float_depthwise_is_identical_across_isas(&mut Rng::new(0x35_3232), &cases);
}

/// One float depthwise case: (batch, channels, h, w, kernel, stride, dilation, padding).
type DepthwiseCase = (
    usize,
    usize,
    usize,
    usize,
    [usize; 2],
    [usize; 2],
    [usize; 2],
    [usize; 2],
);

/// Each case on random inputs, weights and biases: the portable path within rounding of the
/// reference, and every ISA path (1 and 2 threads) the portable path's bits, without and with
/// a bias and a clamp, into an output full of NaNs.
fn float_depthwise_is_identical_across_isas(rng: &mut Rng, cases: &[DepthwiseCase]) {
    for (case_no, &(n, c, h, w, k, stride, dilation, padding)) in cases.iter().enumerate() {
        let params = ConvParams {
            stride,
            padding,
            dilation,
            groups: c,
        };
        let s = ConvShape::new([n, c, h, w], [c, 1, k[0], k[1]], params).unwrap();
        let x: Vec<f32> = (0..s.input_len()).map(|_| rng.unit() * 2.0 - 1.0).collect();
        let wt: Vec<f32> = (0..s.weight_len()).map(|_| rng.unit() - 0.5).collect();
        let bias: Vec<f32> = (0..c).map(|_| rng.unit() - 0.5).collect();
        let clamp = fast::F32Clamp { lo: -0.2, hi: 0.3 };
        for (with_bias, with_clamp) in [(false, false), (true, false), (true, true)] {
            let b = with_bias.then_some(&bias[..]);
            let run = |isa: Isa, threads: usize| {
                let p = fast::PackedConvF32::new(&wt, s.weight_dims(), params, isa).unwrap();
                let opts = FastConvOptions::splitting_small(Some(threads));
                let mut out = vec![f32::NAN; s.output_len()];
                let c = with_clamp.then_some(clamp);
                p.run_into_clamped(&x, s.input_dims(), b, c, &opts, &mut out)
                    .unwrap();
                out
            };
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let portable = run(Isa::Portable, 1);
            // The portable path within rounding of the reference (|x| <= 1, |w| <= 0.5).
            let mut reference = reference::conv2d_f32(&x, &wt, b, &s).unwrap();
            if with_clamp {
                reference.iter_mut().for_each(|v| *v = clamp.apply(*v));
            }
            for (j, (&g, &r)) in portable.iter().zip(&reference).enumerate() {
                assert!((g - r).abs() <= 1e-5, "case {case_no} at {j}: {g} vs {r}");
            }
            let want = bits(&portable);
            for isa in Isa::available() {
                for threads in [1, 2] {
                    assert_eq!(
                        bits(&run(isa, threads)),
                        want,
                        "case {case_no} {isa} ({threads} threads, bias {with_bias}, \
                         clamp {with_clamp})"
                    );
                }
            }
        }
    }
}

/// A packed float layer refuses bad weights and inputs with typed errors, not panics.
#[test]
fn packed_float_layer_refuses_bad_shapes() {
    let isa = Isa::detect();
    let p = ConvParams::default();
    let e = fast::PackedConvF32::new(&[0.0; 10], [2, 3, 3, 3], p, isa).unwrap_err();
    assert!(matches!(e, Error::Shape(_)), "{e:?}");
    let e = fast::PackedConvF32::new(&[], [0, 3, 3, 3], p, isa).unwrap_err();
    assert!(matches!(e, Error::Shape(_)), "{e:?}");
    let e = fast::PackedConvF32::new(&[0.0; 54], [3, 3, 3, 2], p.groups(2), isa).unwrap_err();
    assert!(matches!(e, Error::Shape(_)), "{e:?}");
    let layer = fast::PackedConvF32::new(&[0.5; 54], [2, 3, 3, 3], p, isa).unwrap();
    let opts = FastConvOptions::default();
    // Input channels that do not match the weights; too few input values; a short bias.
    assert!(layer.run(&[0.0; 64], [1, 4, 4, 4], None, &opts).is_err());
    assert!(layer.run(&[0.0; 47], [1, 3, 4, 4], None, &opts).is_err());
    assert!(layer
        .run(&[0.0; 48], [1, 3, 4, 4], Some(&[1.0]), &opts)
        .is_err());
    let y = layer
        .run(&[1.0; 48], [1, 3, 4, 4], Some(&[1.0, 2.0]), &opts)
        .unwrap();
    assert_eq!(y.len(), 2 * 2 * 2);
    assert!(y[..4].iter().all(|&v| v == 0.5 * 27.0 + 1.0), "{y:?}");
}

/// Weight zero points far outside int8 (the reference accepts any int32): the depthwise path
/// leaves its exact-f32 kernel for the int32 one, the GEMM's row-sum correction wraps.
#[test]
fn huge_weight_zero_points_match_reference() {
    let mut rng = Rng::new(99);
    let cases = [
        (
            [2, 6, 9, 11],
            [6, 1, 3, 3],
            ConvParams::default().padding(1).groups(6),
        ),
        (
            [1, 4, 9, 11],
            [8, 1, 3, 2],
            ConvParams::default().stride(2).groups(4),
        ),
        ([1, 8, 7, 9], [5, 8, 3, 3], ConvParams::default().padding(2)),
    ];
    for (xd, wd, params) in cases {
        let s = ConvShape::new(xd, wd, params).unwrap();
        let x: Vec<u8> = (0..s.input_len()).map(|_| rng.next() as u8).collect();
        let w: Vec<i8> = (0..s.weight_len()).map(|_| rng.next() as i8).collect();
        let x_qp = QParams::new(0.05, 17, QDtype::QUInt8).unwrap();
        let w_qp = WeightQParams {
            scheme: QScheme::PerChannelAffine,
            scales: vec![0.01; s.c_out],
            zero_points: (0..s.c_out).map(|o| 100_000 - 37_000 * o as i32).collect(),
        };
        let out = QParams::new(2000.0, 3, QDtype::QInt8).unwrap();
        for formula in [RequantFormula::Fbgemm, RequantFormula::Qnnpack] {
            let epi = Epilogue::new(formula, 0.05, &w_qp, None, out, false, s.c_out).unwrap();
            let want = reference::conv2d_quantized(&x, &x_qp, &w, &w_qp, &epi, &s);
            let want_acc = reference::conv2d_acc(&x, &x_qp, &w, &w_qp, &s);
            assert!(
                want.is_ok() && want_acc.is_ok(),
                "{xd:?} {wd:?}: the case must not overflow"
            );
            for isa in Isa::available() {
                let p = PackedConv2d::with_isa(&w, wd, &w_qp, &epi, params, isa).unwrap();
                let opts = FastConvOptions::default();
                assert!(
                    same(&p.run(&x, xd, &x_qp, &opts), &want),
                    "{xd:?} {wd:?} {isa}"
                );
                assert!(
                    same(&p.run_acc(&x, xd, &x_qp, &opts), &want_acc),
                    "{xd:?} {isa}"
                );
            }
        }
    }
}

/// Runs `c` on every ISA path (threads alternating) against the reference, `run` and
/// `run_acc`.
/// Checks one case on every ISA path; returns whether its reference result is a value (not an
/// error).
fn check_case(c: &Case, case_no: usize, what: &str) -> bool {
    let want = reference::conv2d_quantized(&c.x, &c.x_qp, &c.w, &c.w_qp, &c.epi, &c.s);
    let want_acc = reference::conv2d_acc(&c.x, &c.x_qp, &c.w, &c.w_qp, &c.s);
    for (i, isa) in Isa::available().into_iter().enumerate() {
        let opts = FastConvOptions::splitting_small([Some(1), Some(2)][(case_no + i) % 2]);
        let p = PackedConv2d::with_isa(&c.w, c.s.weight_dims(), &c.w_qp, &c.epi, c.s.params, isa)
            .expect("pack");
        let got = p.run(&c.x, c.s.input_dims(), &c.x_qp, &opts);
        if !same(&got, &want) {
            let detail = match (&got, &want) {
                (Ok(g), Ok(w)) => first_diff(g, w),
                _ => format!("{got:?} vs {want:?}"),
            };
            panic!(
                "{what} case {case_no} on {isa} ({opts:?}): {}\n{detail}",
                c.desc
            );
        }
        let got_acc = p.run_acc(&c.x, c.s.input_dims(), &c.x_qp, &opts);
        if !same(&got_acc, &want_acc) {
            let detail = match (&got_acc, &want_acc) {
                (Ok(g), Ok(w)) => first_diff(g, w),
                _ => format!("{:?} vs {:?}", got_acc.is_ok(), want_acc.is_ok()),
            };
            panic!("{what} case {case_no} acc on {isa}: {}\n{detail}", c.desc);
        }
    }
    want.is_ok()
}

/// The direct depthwise kernels (AVX512-VNNI + VBMI: the permutation kernel for any stride
/// and dilation, the unit-stride kernel; the f32 and int32 fallbacks elsewhere) on random
/// depthwise shapes, every formula, dtype and weight scheme. `SQUINT_FAST_DW_CASES=n` runs a
/// longer sweep, `SQUINT_FAST_SEED=n` other cases.
#[test]
fn depthwise_sweep_matches_reference_on_every_isa() {
    let seed: u64 = std::env::var("SQUINT_FAST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0xd3b7_4a11);
    let mut rng = Rng::new(seed ^ 0x00de_9744);
    let cases = std::env::var("SQUINT_FAST_DW_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160);
    report_missing_isas();
    let mut values = 0;
    for case_no in 0..cases {
        let s = random_dw_shape(&mut rng);
        let c = random_case_for(&mut rng, s);
        values += usize::from(check_case(&c, case_no, "depthwise"));
    }
    eprintln!("depthwise: {values} of {cases} cases compared values (the rest errors)");
    assert!(
        values * 10 >= cases * 9,
        "only {values} of {cases} cases compared values"
    );
}

/// The vectorized epilogues over a wide range of multipliers `sx·sw/sy`: fixed point in
/// `[2^-24, 2^6]` (right shifts up to 24 and 0, left shifts up to 6), the float formulas in
/// `[2^-24, 2^40]` (far beyond int32 before the clamp, so that the vector code must clamp
/// before converting, and around the bound where it may skip that), with large accumulators,
/// on a depthwise conv and on GEMM convs (1×1 and 3×3).
#[test]
fn requant_multipliers_match_reference() {
    let mut rng = Rng::new(0xf1ed);
    let shapes = [
        (
            [1, 5, 6, 70],
            [5, 1, 3, 3],
            ConvParams::default().padding(1).groups(5),
        ),
        ([1, 8, 5, 9], [7, 8, 1, 1], ConvParams::default()),
        ([1, 6, 7, 7], [9, 6, 3, 3], ConvParams::default().padding(1)),
    ];
    let (mut case_no, mut rejected, mut values) = (0, 0, 0);
    for (xd, wd, params) in shapes {
        let s = ConvShape::new(xd, wd, params).unwrap();
        for (formula, log2m) in (-24..=6).map(|m| (RequantFormula::FixedPoint, m)).chain(
            (-24..=40).step_by(2).flat_map(|m| {
                [
                    RequantFormula::Qnnpack,
                    RequantFormula::Fbgemm,
                    RequantFormula::Onednn,
                ]
                .map(|f| (f, m))
            }),
        ) {
            for (x_dtype, x_zp) in [(QDtype::QUInt8, 0), (QDtype::QInt8, -3)] {
                let x: Vec<u8> = (0..s.input_len()).map(|_| rng.next() as u8).collect();
                let w: Vec<i8> = (0..s.weight_len()).map(|_| rng.next() as i8).collect();
                let x_qp = QParams::new(0.5, x_zp, x_dtype).unwrap();
                let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.25, 0);
                // sy = sx·sw / m, with a mantissa that is not a power of two.
                let m = 2f64.powi(log2m) * (1.0 + rng.unit() as f64 * 0.9);
                let (out_dtype, out_zp) = if rng.chance(0.5) {
                    (QDtype::QUInt8, rng.range(0, 255) as i32)
                } else {
                    (QDtype::QInt8, rng.range(-128, 127) as i32)
                };
                let out = QParams::new((0.125 / m) as f32, out_zp, out_dtype).unwrap();
                let bias: Vec<f32> = (0..s.c_out).map(|_| (rng.unit() - 0.5) * 40.0).collect();
                let relu = rng.chance(0.5);
                let Ok(epi) =
                    Epilogue::new(formula, x_qp.scale, &w_qp, Some(&bias), out, relu, s.c_out)
                else {
                    // A multiplier the formula cannot represent: the converter rejects it too.
                    rejected += 1;
                    continue;
                };
                let c = Case {
                    s,
                    x,
                    x_qp,
                    w,
                    w_qp,
                    desc: format!(
                        "{xd:?} {wd:?} {formula} m = {m} out {out_dtype} zp {out_zp} relu {relu}"
                    ),
                    epi,
                };
                values += usize::from(check_case(&c, case_no, "multiplier"));
                case_no += 1;
            }
        }
    }
    eprintln!("multipliers: {case_no} cases ({values} compared values), {rejected} rejected");
    assert!(case_no > 500, "only {case_no} cases");
    assert!(rejected * 20 <= case_no, "{rejected} epilogues rejected");
    assert!(
        values * 10 >= case_no * 9,
        "only {values} of {case_no} compared values"
    );
}

/// Epilogue records the vector code does not take (an output zero point beyond its range, a
/// fixed-point multiplier of `i32::MIN`) fall back to the scalar epilogue, with the same
/// results.
#[test]
fn unusual_epilogue_records_match_reference() {
    let mut rng = Rng::new(0xabc);
    let shapes = [
        (
            [1, 3, 5, 20],
            [3, 1, 3, 3],
            ConvParams::default().padding(1).groups(3),
        ),
        ([1, 4, 5, 9], [5, 4, 3, 3], ConvParams::default()),
    ];
    for (xd, wd, params) in shapes {
        let s = ConvShape::new(xd, wd, params).unwrap();
        let x: Vec<u8> = (0..s.input_len()).map(|_| rng.next() as u8 % 8).collect();
        let w: Vec<i8> = (0..s.weight_len()).map(|_| rng.next() as i8 % 4).collect();
        let x_qp = QParams::new(0.5, 2, QDtype::QUInt8).unwrap();
        let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.25, 0);
        let out = QParams::new(0.5, 3, QDtype::QInt8).unwrap();
        for formula in RequantFormula::ALL {
            let base = Epilogue::new(formula, 0.5, &w_qp, None, out, false, s.c_out).unwrap();
            let mut far_zp = base.clone();
            far_zp.out.zero_point = -2000;
            let mut odd_q = base.clone();
            for ch in &mut odd_q.channels {
                ch.fp_multiplier = i32::MIN;
            }
            for epi in [far_zp, odd_q] {
                let c = Case {
                    s,
                    x: x.clone(),
                    x_qp,
                    w: w.clone(),
                    w_qp: w_qp.clone(),
                    desc: format!("{xd:?} {formula} {:?}", epi.out),
                    epi,
                };
                check_case(&c, 0, "unusual epilogue");
            }
        }
    }
}

/// `squint bench`'s peaks: every loop of an ISA this CPU runs measures a positive, finite
/// throughput; the others are an error, not a crash; each fast path names the loop of its
/// kernel's instruction.
#[test]
fn peak_loops_measure_where_available_and_match_the_kernels() {
    use fast::PeakLoop;
    let all = [
        PeakLoop::DpbusdZmm,
        PeakLoop::DpbusdYmm,
        PeakLoop::MaddubsYmm,
        PeakLoop::MaddwdYmm,
        PeakLoop::FmaZmm,
        PeakLoop::FmaYmm,
    ];
    let runnable: Vec<PeakLoop> = Isa::available()
        .into_iter()
        .flat_map(|i| {
            [
                PeakLoop::int8(i, true),
                PeakLoop::int8(i, false),
                PeakLoop::f32(i),
            ]
        })
        .flatten()
        .collect();
    for l in all {
        match l.measure(std::time::Duration::from_millis(1)) {
            Ok(g) => assert!(g.is_finite() && g > 0.0, "{l}: {g}"),
            Err(e) => {
                assert!(!runnable.contains(&l), "{l} should run here: {e}");
                assert!(e.to_string().contains(l.name()), "{e}");
            }
        }
    }
    assert_eq!(PeakLoop::int8(Isa::Portable, false), None);
    // The loop a packed conv reports is the one of its ISA path and kernel.
    let s = ConvShape::new([1, 8, 6, 6], [4, 8, 3, 3], ConvParams::default()).unwrap();
    let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
    let epi = simple_epi(&s, &w_qp);
    let (w, x) = (vec![3i8; s.weight_len()], vec![7u8; s.input_len()]);
    let x_qp = QParams::new(0.02, 0, QDtype::QUInt8).unwrap();
    for isa in Isa::available() {
        let p = PackedConv2d::with_isa(&w, s.weight_dims(), &w_qp, &epi, s.params, isa).unwrap();
        let want = PeakLoop::int8(isa, p.kernel_name(&x, &x_qp) == "avx2 vpmaddubsw");
        assert_eq!(p.peak_loop(&x, &x_qp), want, "{isa}");
    }
}
