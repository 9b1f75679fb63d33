//! Property tests of the quantization math.

use proptest::prelude::*;
use squint::quant::{
    calculate_qparams, dequantize_one, f32_from_order_key, f32_order_key, inverse_scale,
    quantize_one, Epilogue, QDtype, QParams, QRange, QScheme, QuantizeSteps, RequantFormula,
    WeightQParams, EPS,
};

fn dtype() -> impl Strategy<Value = QDtype> {
    prop_oneof![Just(QDtype::QUInt8), Just(QDtype::QInt8)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn real_zero_is_exactly_representable(
        a in -1e4f32..1e4, b in -1e4f32..1e4, dt in dtype(), sym in any::<bool>(), rr in any::<bool>()
    ) {
        let (lo, hi) = (a.min(b), a.max(b));
        let qp = calculate_qparams(lo, hi, dt, sym, dt.observer_range(rr), false).unwrap();
        prop_assert!(qp.scale >= EPS && qp.scale.is_finite());
        // PyTorch's symmetric quint8 zero point is 128 even with reduce_range (0..127).
        prop_assert!(dt.observer_range(rr).contains(qp.zero_point) || (sym && rr && qp.zero_point == 128));
        prop_assert!(dt.full_range().contains(qp.zero_point));
        let q = quantize_one(0.0, inverse_scale(qp.scale), &qp);
        prop_assert_eq!(q, qp.zero_point);
        prop_assert_eq!(dequantize_one(q, &qp), 0.0);
    }

    #[test]
    fn observed_range_quantizes_inside_the_observer_range(
        a in -1e3f32..1e3, b in -1e3f32..1e3, dt in dtype(), rr in any::<bool>()
    ) {
        let (lo, hi) = (a.min(b), a.max(b));
        let r = dt.observer_range(rr);
        let qp = calculate_qparams(lo, hi, dt, false, r, false).unwrap();
        for x in [lo, hi, lo * 0.5 + hi * 0.5] {
            let q = quantize_one(x, inverse_scale(qp.scale), &qp);
            // One LSB of slack: the range ends may round outward by at most one step.
            prop_assert!(q >= r.min - 1 && q <= r.max + 1, "x {} -> q {} outside {:?}", x, q, r);
            let back = dequantize_one(q, &qp);
            prop_assert!((back - x).abs() <= qp.scale * 1.001 + 1e-6);
        }
    }

    #[test]
    fn quantize_of_dequantize_is_identity_on_ints(
        scale in 1e-6f32..10.0, zp_off in 0i32..256, dt in dtype(), q_off in 0i32..256
    ) {
        let full = dt.full_range();
        let zp = full.min + zp_off;
        let q = full.min + q_off;
        let qp = QParams::new(scale, zp, dt).unwrap();
        let x = dequantize_one(q, &qp);
        prop_assert_eq!(quantize_one(x, inverse_scale(scale), &qp), q);
    }

    #[test]
    fn quantize_always_lands_in_the_full_dtype_range(
        x in proptest::num::f32::NORMAL | proptest::num::f32::ZERO | proptest::num::f32::SUBNORMAL,
        scale in 1e-8f32..1e3, zp_off in 0i32..256, dt in dtype()
    ) {
        let full = dt.full_range();
        let qp = QParams::new(scale, full.min + zp_off, dt).unwrap();
        let q = quantize_one(x, inverse_scale(scale), &qp);
        prop_assert!(full.contains(q));
    }

    #[test]
    fn epilogue_output_stays_in_the_clamp(
        acc in any::<i32>(), formula in 0usize..4, sx in 1e-4f32..1.0, sw in 1e-4f32..1.0,
        sy in 1e-3f32..1.0, zp_off in 0i32..256, relu in any::<bool>(), b in -10f32..10.0
    ) {
        let out = QParams::new(sy, zp_off, QDtype::QUInt8).unwrap();
        let w = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, sw, 0);
        let epi = Epilogue::new(RequantFormula::ALL[formula], sx, &w, Some(&[b]), out, relu, 1).unwrap();
        let y = epi.apply(acc, 0);
        prop_assert!(epi.clamp.contains(y));
        if relu { prop_assert!(y >= zp_off); }
    }

    /// A ReLU or clip fused into a conv (`Epilogue::then_clamp`) gives the ints the epilogue
    /// then the clamp give, for any accumulator and any clamp range of the dtype; `None`
    /// exactly where the ranges do not overlap.
    #[test]
    fn then_clamp_equals_the_epilogue_followed_by_the_clamp(
        acc in any::<i32>(), formula in 0usize..4, sy in 1e-3f32..1.0, zp in 0i32..256,
        relu in any::<bool>(), b in -10f32..10.0, dt in dtype(), a in 0i32..256, c in 0i32..256
    ) {
        let full = dt.full_range();
        let zp = zp + full.min;
        let out = QParams::new(sy, zp, dt).unwrap();
        let w = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
        let epi = Epilogue::new(RequantFormula::ALL[formula], 0.02, &w, Some(&[b]), out, relu, 1).unwrap();
        let r = QRange { min: a.min(c) + full.min, max: a.max(c) + full.min };
        match epi.then_clamp(r) {
            Some(fused) => {
                prop_assert_eq!(fused.apply(acc, 0), r.clamp(epi.apply(acc, 0)));
                prop_assert!(fused.validate().is_ok());
            }
            None => prop_assert!(r.max < epi.clamp.min || r.min > epi.clamp.max),
        }
    }

    /// The GPU kernels requantize through `StepTable` (estimate, verify, else search); it must
    /// equal the formula on the whole accumulator domain: at random accumulators, at both
    /// sides of every threshold and at the domain's ends.
    #[test]
    fn step_table_equals_the_formula_on_the_accumulator_domain(
        formula in 0usize..4, sx in 1e-5f32..1.0, sw in 1e-5f32..1.0, sy in 1e-4f32..10.0,
        zp_off in 0i32..256, relu in any::<bool>(), b in -100f32..100.0, dt in dtype(),
        accs in proptest::collection::vec(any::<i32>(), 64)
    ) {
        let full = dt.full_range();
        let out = QParams::new(sy, full.min + zp_off, dt).unwrap();
        let w = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, sw, 0);
        let Ok(epi) = Epilogue::new(RequantFormula::ALL[formula], sx, &w, Some(&[b]), out, relu, 1)
        else { return Ok(()) };
        let t = epi.step_table(0);
        let near = t.estimate_within_one_level();
        let l = t.limit;
        prop_assert_eq!(l, epi.accumulator_limit(0));
        prop_assert!(t.thresholds.windows(2).all(|p| p[0] <= p[1]), "not sorted");
        let mut probes = vec![-l, l, 0];
        for &th in &t.thresholds {
            probes.extend([th - 1, th, th.saturating_add(1)]);
        }
        // Random accumulators, folded into the domain.
        probes.extend(accs.iter().map(|&a| if l == 0 { 0 } else { a % l }));
        for acc in probes {
            if acc < -l || acc > l { continue; }
            let want = epi.apply(acc, 0);
            prop_assert_eq!(t.lookup(acc), want, "lookup at {}", acc);
            prop_assert_eq!(t.search(acc), want, "search at {}", acc);
            if near {
                prop_assert_eq!(t.lookup_near(acc), want, "lookup_near at {}", acc);
            }
        }
        // Typical layers' tables qualify for the search-free lookup.
        if near_expected(&t) {
            prop_assert!(near, "{:?}", (t.slope, t.offset, t.base, t.top));
        }
    }
}

/// A table whose formula is close to affine over a wide range of levels: its estimate must
/// qualify for `lookup_near`.
fn near_expected(t: &squint::quant::StepTable) -> bool {
    t.top - t.base >= 16 && t.slope > 0.0 && t.slope < 1.0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The GPU quantize kernel decides levels with `QuantizeSteps` (integer key comparisons);
    /// it must equal `quantize_one` for every input bit pattern, NaN and infinities included.
    #[test]
    fn quantize_steps_equal_quantize_one_for_any_input(
        scale_bits in 0x0080_0000u32..0x7f00_0000, zp_off in 0i32..256, dt in dtype(),
        xs in proptest::collection::vec(any::<u32>(), 128)
    ) {
        let full = dt.full_range();
        let qp = QParams::new(f32::from_bits(scale_bits), full.min + zp_off, dt).unwrap();
        let steps = QuantizeSteps::new(&qp);
        let inv = inverse_scale(qp.scale);
        prop_assert_eq!(steps.thresholds.len() as i32, full.max - full.min);
        let mut probes: Vec<f32> = xs.iter().map(|&b| f32::from_bits(b)).collect();
        for &t in &steps.thresholds {
            probes.push(f32_from_order_key(t));
            probes.push(f32_from_order_key(t.wrapping_sub(1)));
        }
        probes.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN]);
        for x in probes {
            prop_assert_eq!(steps.level(x), quantize_one(x, inv, &qp), "x = {:e} ({:#x})", x, x.to_bits());
        }
    }

    #[test]
    fn f32_order_key_orders_like_the_floats(a in any::<u32>(), b in any::<u32>()) {
        let (x, y) = (f32::from_bits(a), f32::from_bits(b));
        prop_assume!(!x.is_nan() && !y.is_nan());
        prop_assert_eq!(f32_from_order_key(f32_order_key(x)).to_bits(), a);
        if x < y { prop_assert!(f32_order_key(x) < f32_order_key(y)); }
        if x == y && a == b { prop_assert_eq!(f32_order_key(x), f32_order_key(y)); }
    }
}

#[test]
fn step_table_of_a_typical_layer_has_a_threshold_per_level_and_a_good_estimate() {
    let out = QParams::new(0.05, 128, QDtype::QUInt8).unwrap();
    let w = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
    for formula in RequantFormula::ALL {
        let epi = Epilogue::new(formula, 0.02, &w, Some(&[0.3]), out, false, 1).unwrap();
        let t = epi.step_table(0);
        assert_eq!((t.base, t.top), (0, 255), "{formula}");
        assert_eq!(t.thresholds.len(), 255, "{formula}");
        assert!(
            t.estimate_within_one_level(),
            "{formula}: the search-free lookup"
        );
        // A useless estimate, or one off by more than a level somewhere, does not qualify.
        let flat = squint::quant::StepTable {
            slope: 0.0,
            ..t.clone()
        };
        assert!(
            !flat.estimate_within_one_level(),
            "{formula}: flat estimate"
        );
        let shifted = squint::quant::StepTable {
            offset: t.offset + 1.2,
            ..t.clone()
        };
        assert!(
            !shifted.estimate_within_one_level(),
            "{formula}: shifted estimate"
        );
        assert!(
            (-60_000..60_000).any(|acc| shifted.lookup_near(acc) != epi.apply(acc, 0)),
            "{formula}: the shifted estimate misses somewhere"
        );
        for acc in (-60_000..60_000).step_by(3) {
            assert_eq!(t.lookup_near(acc), epi.apply(acc, 0), "{formula}: {acc}");
        }
        // The estimate alone is right except near rounding ties (and, for fixed point, where
        // its two roundings differ from one): the table lookup rarely has to search.
        let mut right = 0;
        for acc in (-60_000..60_000).step_by(7) {
            let e = (acc as f32 * t.slope + t.offset)
                .round_ties_even()
                .clamp(0.0, 255.0) as i32;
            right += i32::from(e == epi.apply(acc, 0));
        }
        assert!(
            right * 100 >= 99 * (120_000 / 7),
            "{formula}: estimate right {right}"
        );
    }
}

#[test]
fn uncalibrated_default_is_pytorchs_scale_one_zero_point_zero() {
    let qp = QParams::uncalibrated_default(QDtype::QUInt8);
    assert_eq!((qp.scale, qp.zero_point), (1.0, 0));
}

#[test]
fn golden_readme_qparams_examples_hold() {
    let r = QDtype::QUInt8.full_range();
    let c = calculate_qparams(0.7, 0.7, QDtype::QUInt8, false, r, false).unwrap();
    assert_eq!((c.scale, c.zero_point), (0.7f32 / 255.0, 0));
    let z = calculate_qparams(0.0, 0.0, QDtype::QUInt8, false, r, false).unwrap();
    assert_eq!((z.scale, z.zero_point), (EPS, 0));
    let n = calculate_qparams(-3.0, -1.0, QDtype::QUInt8, false, r, false).unwrap();
    assert_eq!(n.zero_point, 255);
    let s = calculate_qparams(
        -2.0,
        1.0,
        QDtype::QInt8,
        true,
        QDtype::QInt8.full_range(),
        false,
    )
    .unwrap();
    assert_eq!((s.scale, s.zero_point), (2.0f32 / 127.5, 0));
    let su = calculate_qparams(-2.0, 1.0, QDtype::QUInt8, true, r, false).unwrap();
    assert_eq!(su.zero_point, 128);
    let custom = calculate_qparams(
        -2.0,
        1.0,
        QDtype::QUInt8,
        true,
        QRange { min: 0, max: 100 },
        true,
    )
    .unwrap();
    assert_eq!(custom.zero_point, 50);
}

#[test]
fn calculate_qparams_rejects_bad_ranges() {
    let r = QDtype::QUInt8.full_range();
    assert!(calculate_qparams(
        f32::INFINITY,
        f32::NEG_INFINITY,
        QDtype::QUInt8,
        false,
        r,
        false
    )
    .is_err());
    assert!(calculate_qparams(1.0, 0.0, QDtype::QUInt8, false, r, false).is_err());
    assert!(calculate_qparams(f32::NAN, 0.0, QDtype::QUInt8, false, r, false).is_err());
    assert!(calculate_qparams(
        0.0,
        1.0,
        QDtype::QUInt8,
        false,
        QRange { min: 0, max: 300 },
        true
    )
    .is_err());
}

#[test]
fn qparams_new_rejects_invalid_scale_and_zero_point() {
    assert!(QParams::new(0.0, 0, QDtype::QUInt8).is_err());
    assert!(QParams::new(f32::NAN, 0, QDtype::QUInt8).is_err());
    assert!(QParams::new(1.0, 256, QDtype::QUInt8).is_err());
    assert!(QParams::new(1.0, -129, QDtype::QInt8).is_err());
}

#[test]
fn accumulator_overflow_risk_is_an_error() {
    // K = 70000 taps of weight -128 with quint8 input zp 0: 255*128*70000 > i32::MAX.
    let k = 70_000;
    let w = vec![-128i8; k];
    let wq = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
    let out = QParams::new(0.1, 0, QDtype::QUInt8).unwrap();
    let epi = Epilogue::new(RequantFormula::Qnnpack, 0.01, &wq, None, out, false, 1).unwrap();
    let err = epi
        .check_accumulator(&w, &wq, QDtype::QUInt8.full_range(), 0, k, Some("big"))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("overflow") && msg.contains("big"), "{msg}");
    // A small K is fine.
    epi.check_accumulator(&w[..100], &wq, QDtype::QUInt8.full_range(), 0, 100, None)
        .unwrap();
}

#[test]
fn bias_that_does_not_fit_int32_is_an_error() {
    let wq = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 1e-6, 0);
    let out = QParams::new(0.1, 0, QDtype::QUInt8).unwrap();
    let err = Epilogue::new(
        RequantFormula::Qnnpack,
        1e-6,
        &wq,
        Some(&[1e9]),
        out,
        false,
        1,
    );
    assert!(err.is_err());
}
