//! `report` on graph models: per-value diagnostics (float against int8 at every value) and the
//! calibration histograms of every quantization point, on the tiny ResNet of
//! `tests/data/models/` (`scripts/gen_model_fixtures.py`).

use squint::io::{npy, onnx};
use squint::pipeline::diagnostics::{diagnose_graph, error_metrics, PointReport};
use squint::pipeline::histograms::graph_point_histograms;
use squint::pipeline::qgraph::{PreparedGraph, QuantizedGraph, ReferenceBackend};
use squint::pipeline::{ConvertOptions, PointSource, QConfig};
use squint::tensor::Tensor;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/resnet_tiny")
}

fn calib() -> Vec<Vec<Tensor<f32>>> {
    let t = npy::read::<f32>(dir().join("calib.npy")).unwrap();
    t.split_axis0()
        .unwrap()
        .into_iter()
        .map(|b| vec![b])
        .collect()
}

fn input() -> Tensor<f32> {
    npy::read::<f32>(dir().join("input.npy")).unwrap()
}

/// The tiny ResNet on the x86 preset, calibrated on `calib` batches (none: uncalibrated).
fn prepared(batches: &[Vec<Tensor<f32>>]) -> PreparedGraph {
    let g = onnx::load(&dir().join("model_bn.onnx")).unwrap();
    let mut p = PreparedGraph::new(g, QConfig::x86()).unwrap();
    for b in batches {
        p.calibrate(b).unwrap();
    }
    p
}

fn report(q: &QuantizedGraph) -> Vec<PointReport> {
    diagnose_graph(
        q,
        &[input()],
        &mut ReferenceBackend::new(q),
        Some(QConfig::x86().activation.kind),
        QConfig::x86().activation.reduce_range,
    )
    .unwrap()
}

#[test]
fn graph_report_covers_every_value_and_names_the_point_an_inherited_value_shares() {
    let (q, _) = prepared(&calib())
        .convert(&ConvertOptions::default())
        .unwrap();
    let r = report(&q);
    let g = q.graph();
    assert_eq!(r.len(), g.inputs().len() + g.nodes().len());
    assert_eq!(r[0].name, "input");
    assert_eq!(r[0].op, "input");
    for (rep, node) in r[1..].iter().zip(g.nodes()) {
        assert_eq!(rep.name, g.value(node.output).name);
        assert_eq!(rep.op, node.op.kind());
        let own = q.sources()[node.output.0].is_some();
        assert_eq!(rep.inherits.is_none(), own, "{}", rep.name);
        if let Some(from) = &rep.inherits {
            // The named value has its own point, and the qparams are that point's.
            let p = r.iter().find(|p| &p.name == from).unwrap();
            assert!(p.inherits.is_none(), "{from} inherits too");
            assert_eq!(p.qparams, rep.qparams, "{}", rep.name);
        }
        assert_eq!(rep.source, PointSource::Observed);
    }
    let pool = r.iter().find(|p| p.op == "MaxPool2d").unwrap();
    assert_eq!(pool.inherits.as_deref(), Some("/relu/Relu_output_0"));
    // Calibrated on data like the input: every value is close to float.
    for p in &r {
        assert!(p.metrics.sqnr_db > 25.0, "{}: {:?}", p.name, p.metrics);
    }
    // The qconfig's reduce_range advice is given once, not per point.
    let notes = r
        .iter()
        .flat_map(|p| &p.warnings)
        .filter(|w| w.contains("reduce_range"))
        .count();
    assert_eq!(notes, 1);
}

#[test]
fn graph_report_metrics_are_those_of_the_int8_run_against_the_float_graph() {
    let (q, _) = prepared(&calib())
        .convert(&ConvertOptions::default())
        .unwrap();
    let r = report(&q);
    let float = q.graph().run_f32(&[input()]).unwrap();
    let run = q.run(&mut ReferenceBackend::new(&q), &[input()]).unwrap();
    let want = error_metrics(&float[0].data, &run.outputs[0].data);
    let last = r.last().unwrap();
    assert_eq!(last.name, "logits");
    assert_eq!(last.metrics, want);
    assert_eq!(
        last.max_err_lsb,
        want.max_abs_err / last.qparams.scale as f64
    );
    let (lo, hi) = float[0]
        .data
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert_eq!((last.float_min, last.float_max), (lo, hi));
}

#[test]
fn graph_report_of_an_uncalibrated_graph_warns_once_at_each_point_that_saw_no_data() {
    let opts = ConvertOptions {
        allow_uncalibrated: true,
        ..Default::default()
    };
    let (q, _) = prepared(&[]).convert(&opts).unwrap();
    let r = report(&q);
    let own: Vec<&PointReport> = r.iter().filter(|p| p.inherits.is_none()).collect();
    for p in &own {
        assert_eq!(p.source, PointSource::Uncalibrated);
        assert!(
            p.warnings.iter().any(|w| w.contains("never calibrated")),
            "{}: {:?}",
            p.name,
            p.warnings
        );
    }
    for p in r.iter().filter(|p| p.inherits.is_some()) {
        assert_eq!(p.source, PointSource::Uncalibrated);
        assert!(
            !p.warnings.iter().any(|w| w.contains("never calibrated")),
            "{}",
            p.name
        );
    }
    // The classic mistake shows: scale 1.0 at the input is far worse than calibrated.
    let (cal, _) = prepared(&calib())
        .convert(&ConvertOptions::default())
        .unwrap();
    let good = report(&cal);
    assert!(r[0].metrics.mse > 100.0 * good[0].metrics.mse);
    assert_eq!(r[0].qparams.scale, 1.0);
}

#[test]
fn graph_histograms_cover_every_quantization_point_with_its_calibration_range() {
    let batches = calib();
    let p = prepared(&batches);
    let qc = QConfig::x86();
    let h = graph_point_histograms(
        &p,
        qc.activation.dtype,
        qc.activation.reduce_range,
        &batches,
    )
    .unwrap();
    let names: Vec<&str> = p.observers().map(|(n, _)| n).collect();
    assert_eq!(h.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), names);
    // Each histogram spans exactly the float values the point took over the batches.
    let g = p.graph();
    for x in &h {
        let v = g.find(&x.name).unwrap();
        let (mut lo, mut hi) = (f32::MAX, f32::MIN);
        for b in &batches {
            g.run_f32_visit(b, |id, t| {
                if id == v {
                    for &e in &t.data {
                        (lo, hi) = (lo.min(e), hi.max(e));
                    }
                }
                Ok(())
            })
            .unwrap();
        }
        assert_eq!((x.min, x.max), (lo, hi), "{}", x.name);
        let kinds: Vec<&str> = x.ranges.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        assert_eq!(x.ranges[0], (kinds[0].to_string(), lo, hi));
    }
}
