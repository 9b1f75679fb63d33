//! Unit tests of the observers: errors, degenerate batches, config handling.

use super::*;
use crate::quant::EPS;

fn cfg(kind: ObserverKind) -> ObserverConfig {
    ObserverConfig::new(kind, QDtype::QUInt8)
}

fn per_tensor_kinds() -> [ObserverKind; 3] {
    [
        ObserverKind::MinMax,
        ObserverKind::MovingAverageMinMax,
        ObserverKind::Histogram,
    ]
}

#[test]
fn nan_and_inf_are_rejected_and_leave_state_unchanged() {
    for kind in per_tensor_kinds() {
        let mut obs = cfg(kind).label("conv1.input").build().unwrap();
        obs.observe(&[0.5, -1.0, 2.0], "batch 0").unwrap();
        let before_range = obs.min_max();
        let before_q = obs.qparams().unwrap();
        let before_hist = obs.histogram().map(|h| h.to_vec());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err = obs
                .observe(&[0.0, 100.0, bad, -7.0], "batch 1")
                .unwrap_err();
            match err {
                Error::NonFinite { name, index, value } => {
                    assert_eq!(name, "batch 1");
                    assert_eq!(index, 2);
                    assert!(!value.is_finite());
                }
                other => panic!("{kind}: expected NonFinite, got {other:?}"),
            }
        }
        assert_eq!(obs.batches_seen(), 1, "{kind}");
        assert_eq!(obs.min_max(), before_range, "{kind}");
        assert_eq!(obs.qparams().unwrap(), before_q, "{kind}");
        assert_eq!(obs.histogram().map(|h| h.to_vec()), before_hist, "{kind}");
    }
}

#[test]
fn nan_in_first_batch_keeps_observer_uncalibrated() {
    for kind in per_tensor_kinds() {
        let mut obs = cfg(kind).build().unwrap();
        assert!(matches!(
            obs.observe(&[f32::NAN], "x"),
            Err(Error::NonFinite { .. })
        ));
        assert_eq!(obs.batches_seen(), 0);
        assert!(matches!(obs.qparams(), Err(Error::Uncalibrated { .. })));
    }
}

#[test]
fn uncalibrated_is_an_error_naming_the_label() {
    for kind in per_tensor_kinds() {
        let obs = cfg(kind).label("conv2.output").build().unwrap();
        assert_eq!(obs.min_max(), None);
        assert_eq!(obs.qparams_range(), None);
        match obs.qparams() {
            Err(Error::Uncalibrated { name }) => assert_eq!(name, "conv2.output"),
            other => panic!("{kind}: expected Uncalibrated, got {other:?}"),
        }
        // The explicit opt-in gives PyTorch's default.
        assert_eq!(
            obs.qparams_or_uncalibrated_default(),
            QParams::uncalibrated_default(QDtype::QUInt8)
        );
    }
    let pc = PerChannelMinMaxObserver::new(QDtype::QInt8, true, false).with_label("w");
    assert!(matches!(pc.qparams(), Err(Error::Uncalibrated { name }) if name == "w"));
    assert!(pc.min_max().is_none());
}

#[test]
fn empty_tensor_is_a_no_op() {
    for kind in per_tensor_kinds() {
        let mut obs = cfg(kind).build().unwrap();
        obs.observe(&[], "empty").unwrap();
        assert_eq!(obs.batches_seen(), 0);
        assert!(obs.qparams().is_err());
    }
}

#[test]
fn bad_averaging_constant_and_other_bad_configs() {
    for c in [0.0, -0.5, 1.5, f32::NAN, f32::INFINITY] {
        let r = cfg(ObserverKind::MovingAverageMinMax)
            .averaging_constant(c)
            .build();
        assert!(
            matches!(r, Err(Error::InvalidParameter(ref m)) if m.contains("averaging")),
            "c = {c}: {r:?}"
        );
    }
    assert!(cfg(ObserverKind::MovingAverageMinMax)
        .averaging_constant(1.0)
        .build()
        .is_ok());
    assert!(matches!(
        cfg(ObserverKind::Histogram).bins(0).build(),
        Err(Error::InvalidParameter(_))
    ));
    assert!(matches!(
        cfg(ObserverKind::Histogram).upsample_rate(0).build(),
        Err(Error::InvalidParameter(_))
    ));
    assert!(matches!(
        cfg(ObserverKind::Histogram)
            .bins(1 << 20)
            .upsample_rate(32)
            .build(),
        Err(Error::InvalidParameter(_))
    ));
    assert!(matches!(
        cfg(ObserverKind::PerChannelMinMax).build(),
        Err(Error::InvalidParameter(_))
    ));
    for (lo, hi) in [(5, 5), (10, 0), (-1, 255), (0, 256), (3, 200)] {
        assert!(
            matches!(
                cfg(ObserverKind::MinMax)
                    .quant_range(QRange { min: lo, max: hi })
                    .build(),
                Err(Error::InvalidParameter(_))
            ),
            "[{lo}, {hi}]"
        );
    }
    // A typed constructor refuses a config of another kind.
    assert!(MinMaxObserver::new(cfg(ObserverKind::Histogram)).is_err());
    assert!(HistogramObserver::new(cfg(ObserverKind::MinMax)).is_err());
}

#[test]
fn unknown_kind() {
    match ObserverKind::parse("percentile") {
        Err(Error::UnknownName { kind, name, .. }) => {
            assert_eq!(kind, "observer");
            assert_eq!(name, "percentile");
        }
        other => panic!("expected UnknownName, got {other:?}"),
    }
    for k in ObserverKind::ALL {
        assert_eq!(ObserverKind::parse(k.name()).unwrap(), k);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{}\"", k.name()));
        assert_eq!(serde_json::from_str::<ObserverKind>(&json).unwrap(), k);
    }
    assert_eq!(
        ObserverKind::parse("Moving_Average_MinMax").unwrap(),
        ObserverKind::MovingAverageMinMax
    );
    assert_eq!(
        ObserverKind::parse("moving-average").unwrap(),
        ObserverKind::MovingAverageMinMax
    );
}

#[test]
fn config_defaults_and_qrange() {
    let c = ObserverConfig::new(ObserverKind::Histogram, QDtype::QUInt8);
    assert!(!c.symmetric && !c.reduce_range && c.quant_range.is_none());
    assert_eq!(
        (c.averaging_constant, c.bins, c.upsample_rate),
        (0.01, 2048, 16)
    );
    assert_eq!(c.label, "histogram");
    assert_eq!(c.qrange(), QRange { min: 0, max: 255 });
    assert_eq!(
        c.clone().reduce_range(true).qrange(),
        QRange { min: 0, max: 127 }
    );
    let q = ObserverConfig::new(ObserverKind::MinMax, QDtype::QInt8).reduce_range(true);
    assert_eq!(q.qrange(), QRange { min: -64, max: 63 });
    let custom = c
        .clone()
        .reduce_range(true)
        .quant_range(QRange { min: 0, max: 15 });
    assert_eq!(custom.qrange(), QRange { min: 0, max: 15 });
    let json = serde_json::to_string(&custom).unwrap();
    assert_eq!(
        serde_json::from_str::<ObserverConfig>(&json).unwrap(),
        custom
    );
}

/// README examples: constant 0.7 -> scale 0.7/255, zp 0; all zeros -> scale eps, zp 0;
/// all negative -> zp = qmax. Every observer, every dtype.
#[test]
fn constant_zero_and_negative_batches() {
    for kind in per_tensor_kinds() {
        // Constant 0.7 (fed twice: the histogram's "range unchanged" path).
        let mut obs = cfg(kind).build().unwrap();
        obs.observe(&[0.7; 100], "c").unwrap();
        obs.observe(&[0.7; 10], "c").unwrap();
        assert_eq!(obs.min_max(), Some((0.7, 0.7)), "{kind}");
        assert_eq!(obs.qparams_range(), Some((0.7, 0.7)), "{kind}");
        let qp = obs.qparams().unwrap();
        assert_eq!(qp.scale.to_bits(), (0.7f32 / 255.0).to_bits(), "{kind}");
        assert_eq!(qp.zero_point, 0, "{kind}");
        if let Some(h) = obs.histogram() {
            assert_eq!(h.iter().sum::<f32>(), 110.0);
            assert_eq!(h[1024], 110.0); // widened [-0.3, 1.7]: 0.7 sits in the middle bin
        }

        // All zeros.
        let mut obs = cfg(kind).build().unwrap();
        obs.observe(&[0.0; 64], "z").unwrap();
        let qp = obs.qparams().unwrap();
        assert_eq!((qp.scale, qp.zero_point), (EPS, 0), "{kind}");

        // All negative: zero point = qmax (affine), for the full and the reduced range.
        for (rr, qmax) in [(false, 255), (true, 127)] {
            let mut obs = cfg(kind).reduce_range(rr).build().unwrap();
            obs.observe(&[-3.0, -1.0, -2.5, -0.25], "n").unwrap();
            let qp = obs.qparams().unwrap();
            assert_eq!(qp.zero_point, qmax, "{kind} rr={rr}");
            assert!(qp.scale > 0.0);
        }

        // Symmetric qint8: zero point 0 whatever the data.
        let mut obs = ObserverConfig::new(kind, QDtype::QInt8)
            .symmetric(true)
            .build()
            .unwrap();
        obs.observe(&[-3.0, -1.0], "n").unwrap();
        assert_eq!(obs.qparams().unwrap().zero_point, 0);
    }
}

#[test]
fn minmax_and_moving_average_formulas() {
    let mut mm = cfg(ObserverKind::MinMax).build().unwrap();
    let mut ma = cfg(ObserverKind::MovingAverageMinMax)
        .averaging_constant(0.5)
        .build()
        .unwrap();
    for obs in [&mut mm, &mut ma] {
        obs.observe(&[-1.0, 2.0], "a").unwrap();
        obs.observe(&[-3.0, 1.0], "b").unwrap();
        assert_eq!(obs.batches_seen(), 2);
    }
    assert_eq!(mm.min_max(), Some((-3.0, 2.0)));
    // min = -1 + 0.5 * (-3 - -1) = -2; max = 2 + 0.5 * (1 - 2) = 1.5
    assert_eq!(ma.min_max(), Some((-2.0, 1.5)));
    let qp = mm.qparams().unwrap();
    assert_eq!(qp.scale, 5.0f32 / 255.0);
    assert_eq!(qp.zero_point, 153); // 0 - rne(-3 / (5/255)) = rne(153.0)
}

#[test]
fn range_overflow_is_rejected() {
    for kind in per_tensor_kinds() {
        let mut obs = cfg(kind).build().unwrap();
        obs.observe(&[-3.0e38], "a").unwrap();
        assert!(matches!(
            obs.observe(&[3.0e38], "b"),
            Err(Error::InvalidParameter(_))
        ));
        assert_eq!(obs.batches_seen(), 1);
        assert_eq!(obs.min_max(), Some((-3.0e38, -3.0e38)));
    }
}

#[test]
fn histogram_mass_and_single_value_history() {
    // First batch constant (min == max), second batch widens: old mass moves with histc([min]).
    let mut obs = HistogramObserver::new(cfg(ObserverKind::Histogram).bins(8)).unwrap();
    obs.observe(&[1.0; 5], "a").unwrap();
    obs.observe(&[0.0, 2.0], "b").unwrap();
    // [0, 2] in 8 bins: 0 -> bin 0, 2 -> bin 7, the five 1.0 -> bin 4.
    assert_eq!(obs.histogram(), &[1.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 1.0]);
    // Range widening through the upsampled remap keeps the total mass.
    obs.observe(&[-2.0, 3.5, 0.25], "c").unwrap();
    let total: f64 = obs.histogram().iter().map(|&v| v as f64).sum();
    assert_eq!(total, 10.0);
    assert_eq!(obs.min_max(), Some((-2.0, 3.5)));
    assert_eq!(obs.batches_seen(), 3);
}

#[test]
fn from_state_validates_and_replays() {
    let c = cfg(ObserverKind::Histogram).bins(4);
    assert!(matches!(
        HistogramObserver::from_state(c.clone(), 0.0, 1.0, vec![1.0; 3]),
        Err(Error::Shape(_))
    ));
    assert!(HistogramObserver::from_state(c.clone(), 1.0, 0.0, vec![1.0; 4]).is_err());
    assert!(HistogramObserver::from_state(c.clone(), 0.0, 1.0, vec![1.0, -1.0, 0.0, 0.0]).is_err());
    assert!(HistogramObserver::from_state(c.clone(), 0.0, f32::INFINITY, vec![1.0; 4]).is_err());
    let mut obs = HistogramObserver::new(c.clone()).unwrap();
    obs.observe(&[0.1, 0.2, 0.9, 0.4, 0.3], "x").unwrap();
    let (lo, hi) = obs.min_max().unwrap();
    let replay = HistogramObserver::from_state(c, lo, hi, obs.histogram().to_vec()).unwrap();
    assert_eq!(
        replay.non_linear_param_search(),
        obs.non_linear_param_search()
    );
    assert_eq!(replay.qparams().unwrap(), obs.qparams().unwrap());
}

#[test]
fn histogram_search_before_data() {
    let obs = HistogramObserver::new(cfg(ObserverKind::Histogram)).unwrap();
    assert_eq!(
        obs.non_linear_param_search(),
        (f32::INFINITY, f32::NEG_INFINITY)
    );
    assert_eq!(obs.histogram().len(), 2048);
}

#[test]
fn per_channel_observer() {
    // Two channels of 3 values.
    let w = [-1.0, 0.5, 0.25, 0.1, 0.2, 0.3];
    let mut pc = PerChannelMinMaxObserver::new(QDtype::QInt8, true, false);
    pc.observe(&w, 2, "w").unwrap();
    let (mins, maxs) = pc.min_max().unwrap();
    assert_eq!(mins, &[-1.0, 0.1]);
    assert_eq!(maxs, &[0.5, 0.3]);
    let q = pc.qparams().unwrap();
    assert_eq!(q.scheme, QScheme::PerChannelSymmetric);
    assert_eq!(q.scales, vec![1.0f32 / 127.5, 0.3f32 / 127.5]);
    assert_eq!(q.zero_points, vec![0, 0]);
    // Shape errors leave the state unchanged.
    assert!(matches!(pc.observe(&w, 4, "w"), Err(Error::Shape(_))));
    assert!(matches!(pc.observe(&w, 3, "w"), Err(Error::Shape(_))));
    assert!(matches!(pc.observe(&[], 2, "w"), Err(Error::Shape(_))));
    assert!(matches!(
        pc.observe(&[0.0, f32::NAN], 2, "w"),
        Err(Error::NonFinite { .. })
    ));
    assert_eq!(pc.batches_seen(), 1);
    pc.observe(&[2.0, 0.0, 0.0, 0.0, 0.0, 0.0], 2, "w").unwrap();
    assert_eq!(pc.min_max().unwrap().1, &[2.0, 0.3]);
    assert_eq!(pc.min_max().unwrap().0, &[-1.0, 0.0]);
}

#[test]
fn weight_qparams_schemes() {
    let w: Vec<f32> = (0..24).map(|i| (i as f32 - 10.0) / 7.0).collect();
    let pt = weight_qparams(&w, 4, QScheme::PerTensorSymmetric, QDtype::QInt8).unwrap();
    assert_eq!(pt.scales.len(), 1);
    assert_eq!(pt.scales[0], (13.0f32 / 7.0) / 127.5);
    assert_eq!(pt.zero_points, vec![0]);
    let pc = weight_qparams(&w, 4, QScheme::PerChannelSymmetric, QDtype::QInt8).unwrap();
    assert_eq!(pc.scales.len(), 4);
    assert_eq!(pc.scheme, QScheme::PerChannelSymmetric);
    pc.check_channels(4).unwrap();
    let pa = weight_qparams(&w, 4, QScheme::PerChannelAffine, QDtype::QInt8).unwrap();
    assert_eq!(pa.scheme, QScheme::PerChannelAffine);
    assert!(pa.zero_points.iter().any(|&z| z != 0));
    assert!(matches!(
        weight_qparams(&w, 5, QScheme::PerTensorSymmetric, QDtype::QInt8),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        weight_qparams(&w, 0, QScheme::PerTensorSymmetric, QDtype::QInt8),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        weight_qparams(&[], 1, QScheme::PerTensorSymmetric, QDtype::QInt8),
        Err(Error::Shape(_))
    ));
}

#[test]
fn moving_average_rounding_inversion_is_ordered() {
    // c = 1: min = 0 + (v - 0) = v exactly, max = M + (v - M) rounds one ulp below v.
    let mut obs = cfg(ObserverKind::MovingAverageMinMax)
        .averaging_constant(1.0)
        .build()
        .unwrap();
    obs.observe(&[3.4940171, 0.0], "a").unwrap();
    obs.observe(&[-0.3631391], "b").unwrap();
    let (lo, hi) = obs.min_max().unwrap();
    assert!(lo < hi, "{lo} {hi}");
    assert_eq!(hi, -0.3631391);
    assert_eq!(obs.qparams_range(), Some((lo, hi)));
    let qp = obs.qparams().unwrap();
    assert_eq!(qp.zero_point, 255);
}
