//! Property tests of the observers: qparams invariants for arbitrary finite batches.

use proptest::prelude::*;
use squint::observers::{HistogramObserver, Observer, ObserverConfig, ObserverKind};
use squint::quant::{dequantize_one, inverse_scale, quantize_one, QDtype, QParams, QRange};

/// A finite value: mostly moderate magnitudes, sometimes tiny or large ones, and exact zeros.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -10.0f32..10.0,
        1 => -1.0e-30f32..1.0e-30,
        1 => -1.0e6f32..1.0e6,
        1 => Just(0.0f32),
    ]
}

/// One batch: 1..300 values, sometimes shifted to be all positive or all negative, sometimes
/// constant.
fn batch() -> impl Strategy<Value = Vec<f32>> {
    (prop::collection::vec(value(), 1..300), 0u8..5, value()).prop_map(|(v, mode, c)| match mode {
        0 => v.into_iter().map(f32::abs).collect(),
        1 => v.into_iter().map(|x| -x.abs()).collect(),
        2 => vec![c; v.len()],
        _ => v,
    })
}

fn config() -> impl Strategy<Value = ObserverConfig> {
    (
        prop_oneof![
            Just(ObserverKind::MinMax),
            Just(ObserverKind::MovingAverageMinMax),
            Just(ObserverKind::Histogram),
        ],
        prop_oneof![Just(QDtype::QUInt8), Just(QDtype::QInt8)],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(0.01f32), Just(0.5), Just(1.0)],
        prop_oneof![3 => Just(None), 1 => Just(Some(QRange { min: 0, max: 15 }))],
    )
        .prop_map(|(kind, dtype, symmetric, rr, c, custom)| {
            let mut cfg = ObserverConfig::new(kind, dtype)
                .symmetric(symmetric)
                .reduce_range(rr)
                .averaging_constant(c);
            if let (Some(r), QDtype::QUInt8) = (custom, dtype) {
                cfg = cfg.quant_range(r);
            }
            cfg
        })
}

fn check_qparams(qp: &QParams, cfg: &ObserverConfig) -> Result<(), TestCaseError> {
    let q = cfg.qrange();
    prop_assert!(qp.scale.is_finite() && qp.scale > 0.0, "scale {}", qp.scale);
    // The zero point lies in the observer range, except PyTorch's fixed 128 for symmetric
    // quint8 (which stays 128 with reduce_range); always in the dtype's full range.
    prop_assert!(cfg.dtype.full_range().contains(qp.zero_point));
    if cfg.symmetric && cfg.dtype == QDtype::QUInt8 && cfg.quant_range.is_none() {
        prop_assert_eq!(qp.zero_point, 128);
    } else {
        prop_assert!(
            q.contains(qp.zero_point),
            "zero point {} outside [{}, {}]",
            qp.zero_point,
            q.min,
            q.max
        );
    }
    prop_assert_eq!(qp.dtype, cfg.dtype);
    // Real 0.0 is exactly representable: it quantizes to the zero point and comes back as 0.0.
    let inv = inverse_scale(qp.scale);
    let z = quantize_one(0.0, inv, qp);
    prop_assert_eq!(z, qp.zero_point);
    prop_assert_eq!(dequantize_one(z, qp), 0.0);
    // quantize(dequantize(q)) == q for every int of the dtype.
    let full = cfg.dtype.full_range();
    for v in full.min..=full.max {
        prop_assert_eq!(quantize_one(dequantize_one(v, qp), inv, qp), v);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn qparams_invariants(cfg in config(), batches in prop::collection::vec(batch(), 1..4)) {
        let mut obs = cfg.build().unwrap();
        prop_assert!(obs.qparams().is_err());
        for (i, b) in batches.iter().enumerate() {
            obs.observe(b, "x").unwrap();
            prop_assert_eq!(obs.batches_seen(), i + 1);
            let (lo, hi) = obs.min_max().unwrap();
            prop_assert!(lo <= hi, "min {} > max {}", lo, hi);
            let (slo, shi) = obs.qparams_range().unwrap();
            prop_assert!(slo <= shi, "search min {} > max {}", slo, shi);
            let qp = obs.qparams().unwrap();
            check_qparams(&qp, &cfg)?;
            prop_assert_eq!(obs.qparams_or_uncalibrated_default(), qp);
        }
        if cfg.kind == ObserverKind::MinMax {
            let all = batches.iter().flatten();
            let lo = all.clone().fold(f32::INFINITY, |a, &v| a.min(v));
            let hi = all.fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            prop_assert_eq!(obs.min_max(), Some((lo, hi)));
        }
    }

    #[test]
    fn histogram_single_batch_mass(b in batch(), bins in prop_oneof![Just(2048usize), 1usize..64]) {
        let cfg = ObserverConfig::new(ObserverKind::Histogram, QDtype::QUInt8).bins(bins);
        let mut obs = HistogramObserver::new(cfg).unwrap();
        obs.observe(&b, "x").unwrap();
        let total: f64 = obs.histogram().iter().map(|&v| v as f64).sum();
        prop_assert_eq!(total, b.len() as f64);
        prop_assert!(obs.histogram().iter().all(|&v| v >= 0.0 && v.fract() == 0.0));
        // The search range stays inside the observed range (up to the last bin's rounding).
        let (lo, hi) = obs.min_max().unwrap();
        let (slo, shi) = obs.qparams_range().unwrap();
        prop_assert!(slo >= lo && slo <= shi);
        let tol = (hi - lo).abs() * 1e-5 + hi.abs() * 1e-6;
        prop_assert!(shi <= hi + tol, "search max {} beyond max {}", shi, hi);
    }

    #[test]
    fn histogram_mass_is_kept_across_batches(batches in prop::collection::vec(batch(), 2..5)) {
        // Remapping moves mass between bins but never loses it: the total equals the number of
        // values up to float32 rounding of the fractional sub-bin masses.
        let cfg = ObserverConfig::new(ObserverKind::Histogram, QDtype::QUInt8);
        let mut obs = HistogramObserver::new(cfg).unwrap();
        let mut n = 0usize;
        for b in &batches {
            obs.observe(b, "x").unwrap();
            n += b.len();
        }
        let total: f64 = obs.histogram().iter().map(|&v| v as f64).sum();
        prop_assert!((total - n as f64).abs() <= 1e-4 * n as f64, "total {} for {} values", total, n);
    }
}
