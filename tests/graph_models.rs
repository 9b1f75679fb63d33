//! Whole graph models against PyTorch eager static quantization: `tests/data/models/` holds a
//! tiny ResNet and a tiny MobileNetV2-style model (`scripts/gen_model_fixtures.py`, see
//! `docs/models.md`), exported to ONNX with their BatchNorms (`model_bn.onnx`), quantized by
//! PyTorch 2.15 on the qnnpack and x86 engines, with the ints of every quantization point.
//!
//! squint imports the ONNX file (folding BN as `fuse_conv_bn_weights`), pins PyTorch's qparams
//! at the observed points, converts and runs on the CPU reference: every weight int, every
//! qparam and every int of every point (observed or inherited) must equal PyTorch's.

use serde_json::Value;
use squint::cpu::fast::FastConvOptions;
use squint::cpu::reference::CpuCapability;
use squint::io::{npy, onnx};
use squint::pipeline::qgraph::{
    FastCpuBackend, GpuBackend, PreparedGraph, QNode, ReferenceBackend,
};
use squint::pipeline::{ConvertOptions, QConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn dir(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(model)
}

fn points(model: &str, engine: &str) -> Value {
    let p = dir(model).join(engine).join("points.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// Checks one model on one engine with PyTorch's qparams pinned; returns the number of ints
/// compared.
fn check_pinned(model: &str, engine: &str) -> usize {
    let meta = points(model, engine);
    let graph = onnx::load(&dir(model).join("model_bn.onnx")).unwrap();
    let pts = meta["points"].as_array().unwrap();
    let mut pinned = BTreeMap::new();
    for p in pts.iter().filter(|p| p["observer"].as_bool().unwrap()) {
        let name = p["onnx_value_bn"].as_str().unwrap().to_string();
        let scale = p["scale"].as_f64().unwrap() as f32;
        let zp = p["zero_point"].as_i64().unwrap() as i32;
        pinned.insert(name, (scale, zp));
    }
    let prepared = PreparedGraph::new(graph, QConfig::preset(engine).unwrap()).unwrap();
    // Every observed point of squint is one of PyTorch's, and vice versa.
    let ours: Vec<&str> = prepared.observers().map(|(n, _)| n).collect();
    let theirs: Vec<&str> = pinned.keys().map(|s| s.as_str()).collect();
    let mut ours_sorted = ours.clone();
    ours_sorted.sort();
    assert_eq!(ours_sorted, theirs, "{model}/{engine}: observed points");
    let opts = ConvertOptions {
        pinned,
        ..Default::default()
    };
    let (mut q, warnings) = prepared.convert(&opts).unwrap();
    assert!(warnings.is_empty());
    q.set_isa(CpuCapability::parse(meta["cpu_capability"].as_str().unwrap()).unwrap());

    let x = npy::read::<f32>(dir(model).join("input.npy")).unwrap();
    let run = q
        .run(&mut ReferenceBackend::new(&q), std::slice::from_ref(&x))
        .unwrap();
    // The fast CPU path gives the same ints at every value.
    let fast = q
        .run(&mut FastCpuBackend::new(&q), std::slice::from_ref(&x))
        .unwrap();
    assert_eq!(fast.values, run.values, "{model}/{engine}: fast CPU path");
    // Its outputs with the activations fused into the convs (where any are apart): the same.
    let fused = FastCpuBackend::new(&q)
        .run_outputs(&q, std::slice::from_ref(&x))
        .unwrap();
    assert_eq!(fused, run.outputs, "{model}/{engine}: fast CPU, fused");
    // Run on a worker of a 2-thread pool, every conv split across both threads.
    let split = FastConvOptions::splitting_small(Some(2));
    let on_pool = FastCpuBackend::new(&q)
        .with_options(split)
        .unwrap()
        .run(&q, std::slice::from_ref(&x))
        .unwrap();
    assert_eq!(
        on_pool.values, run.values,
        "{model}/{engine}: fast CPU on a pool"
    );
    // And every GPU adapter.
    for ctx in squint::gpu::testing::contexts() {
        let name = ctx.adapter_report().summary();
        let mut backend = GpuBackend::new(ctx, &q);
        let gpu = q.run(&mut backend, std::slice::from_ref(&x)).unwrap();
        assert_eq!(gpu.values, run.values, "{model}/{engine}: {name}");
        // Values kept on the device between nodes: the same ints at every value.
        let x = std::slice::from_ref(&x);
        let resident = backend.run_resident_values(&q, x).unwrap();
        assert_eq!(
            (&resident.values, &resident.outputs),
            (&run.values, &run.outputs),
            "{model}/{engine}: {name}, resident"
        );
        let outputs = backend.run_resident(&q, x).unwrap();
        assert_eq!(
            outputs, run.outputs,
            "{model}/{engine}: {name}, resident outputs"
        );
    }
    let mut compared = 0;
    for p in pts {
        let name = p["name"].as_str().unwrap();
        let value = p["onnx_value_bn"].as_str().unwrap();
        let id = q
            .find(value)
            .unwrap_or_else(|| panic!("{model}/{engine}: no value {value}"));
        let got = &run.values[id.0];
        let want =
            npy::read::<u8>(dir(model).join(engine).join(p["file"].as_str().unwrap())).unwrap();
        assert_eq!(got.dims, want.dims, "{model}/{engine}/{name}: dims");
        assert_eq!(
            (got.qp.scale, got.qp.zero_point),
            (
                p["scale"].as_f64().unwrap() as f32,
                p["zero_point"].as_i64().unwrap() as i32
            ),
            "{model}/{engine}/{name}: qparams"
        );
        let diff = got
            .data
            .iter()
            .zip(&want.data)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            diff,
            0,
            "{model}/{engine}/{name}: {diff} of {} ints differ from PyTorch",
            want.data.len()
        );
        compared += want.data.len();

        // Weights: the same int8 weights and scales as PyTorch's converted module.
        if let Some(w) = p.get("weight") {
            let node = q
                .graph()
                .nodes()
                .iter()
                .position(|n| n.output == id)
                .unwrap();
            let (w_q, scales): (&[i8], Vec<f32>) = match &q.nodes()[node] {
                QNode::Conv2d(c) => (c.w_q(), c.w_qp().scales.clone()),
                QNode::Linear(l) => (l.w_q(), l.w_qp().scales.clone()),
                other => panic!("{name}: a weight on {other:?}"),
            };
            let want_w =
                npy::read::<i8>(dir(model).join(engine).join(w["file"].as_str().unwrap())).unwrap();
            let want_scales: Vec<f32> = w["scales"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(
                scales, want_scales,
                "{model}/{engine}/{name}: weight scales"
            );
            assert_eq!(
                w_q,
                want_w.data.as_slice(),
                "{model}/{engine}/{name}: weights"
            );
        }
    }
    let want_out = npy::read::<f32>(dir(model).join(engine).join("output.npy")).unwrap();
    assert_eq!(
        run.outputs[0].data, want_out.data,
        "{model}/{engine}: output"
    );
    compared
}

#[test]
fn resnet_tiny_equals_pytorch_eager_at_every_point_with_pytorchs_qparams() {
    for engine in ["qnnpack", "x86"] {
        let n = check_pinned("resnet_tiny", engine);
        assert!(n > 10_000, "{n}");
    }
}

#[test]
fn mobilenet_tiny_equals_pytorch_eager_at_every_point_with_pytorchs_qparams() {
    for engine in ["qnnpack", "x86"] {
        let n = check_pinned("mobilenet_tiny", engine);
        assert!(n > 10_000, "{n}");
    }
}

/// squint's own calibration (HistogramObserver on the calibration batches) against PyTorch's:
/// returns (ints within ±1 of PyTorch's, ints compared, points whose qparams equal PyTorch's,
/// points).
fn check_own_calibration(model: &str, engine: &str) -> (usize, usize, usize, usize) {
    let meta = points(model, engine);
    let graph = onnx::load(&dir(model).join("model_bn.onnx")).unwrap();
    let mut prepared = PreparedGraph::new(graph, QConfig::preset(engine).unwrap()).unwrap();
    let calib = npy::read::<f32>(dir(model).join("calib.npy"))
        .unwrap()
        .split_axis0()
        .unwrap();
    for b in calib {
        prepared.calibrate(&[b]).unwrap();
    }
    let (mut q, _) = prepared.convert(&ConvertOptions::default()).unwrap();
    q.set_isa(CpuCapability::parse(meta["cpu_capability"].as_str().unwrap()).unwrap());
    let x = npy::read::<f32>(dir(model).join("input.npy")).unwrap();
    let run = q.run(&mut ReferenceBackend::new(&q), &[x]).unwrap();
    let (mut close, mut total, mut same_qp, mut n_points) = (0, 0, 0, 0);
    for p in meta["points"].as_array().unwrap() {
        let id = q.find(p["onnx_value_bn"].as_str().unwrap()).unwrap();
        let got = &run.values[id.0];
        let want =
            npy::read::<u8>(dir(model).join(engine).join(p["file"].as_str().unwrap())).unwrap();
        close += got
            .data
            .iter()
            .zip(&want.data)
            .filter(|(a, b)| (**a as i32 - **b as i32).abs() <= 1)
            .count();
        total += want.data.len();
        n_points += 1;
        if (got.qp.scale, got.qp.zero_point)
            == (
                p["scale"].as_f64().unwrap() as f32,
                p["zero_point"].as_i64().unwrap() as i32,
            )
        {
            same_qp += 1;
        }
    }
    (close, total, same_qp, n_points)
}

#[test]
fn with_its_own_calibration_squint_is_within_one_lsb_of_pytorch_on_999_per_mille() {
    for model in ["resnet_tiny", "mobilenet_tiny"] {
        for engine in ["qnnpack", "x86"] {
            let (close, total, same_qp, points) = check_own_calibration(model, engine);
            eprintln!(
                "{model}/{engine}: {close}/{total} ints within ±1, {same_qp}/{points} points with PyTorch's qparams"
            );
            assert!(
                close * 1000 >= total * 999,
                "{model}/{engine}: {close}/{total}"
            );
        }
    }
}

/// One GPU backend, and one fast CPU backend, runs two conversions of the same model in turn
/// (same node names, other qparams and epilogues, and the fast CPU path's other weights where
/// they differ): its layer cache must rebuild (repack) a layer whose weights or epilogue
/// changed, so each run equals its own reference at every value.
#[test]
fn backends_reused_across_conversions_rebuild_changed_layers() {
    let contexts = squint::gpu::testing::contexts();
    let model = "resnet_tiny";
    let convert = |calib_batches: usize| {
        let graph = onnx::load(&dir(model).join("model_bn.onnx")).unwrap();
        let mut prepared = PreparedGraph::new(graph, QConfig::preset("qnnpack").unwrap()).unwrap();
        let calib = npy::read::<f32>(dir(model).join("calib.npy"))
            .unwrap()
            .split_axis0()
            .unwrap();
        for b in calib.into_iter().take(calib_batches) {
            prepared.calibrate(&[b]).unwrap();
        }
        prepared.convert(&ConvertOptions::default()).unwrap().0
    };
    let (q1, q2) = (convert(1), convert(4));
    let x = npy::read::<f32>(dir(model).join("input.npy")).unwrap();
    let xs = std::slice::from_ref(&x);
    let want1 = q1.run(&mut ReferenceBackend::new(&q1), xs).unwrap();
    let want2 = q2.run(&mut ReferenceBackend::new(&q2), xs).unwrap();
    assert_ne!(want1.values, want2.values, "the two conversions differ");
    let mut fast = FastCpuBackend::new(&q1);
    for (i, (q, want)) in [(&q1, &want1), (&q2, &want2), (&q1, &want1), (&q1, &want1)]
        .into_iter()
        .enumerate()
    {
        let got = q.run(&mut fast, xs).unwrap();
        assert_eq!(got.values, want.values, "fast CPU backend, run {i}");
    }
    for ctx in contexts {
        let mut g = GpuBackend::new(ctx, &q1);
        for (q, want) in [(&q1, &want1), (&q2, &want2), (&q1, &want1)] {
            assert_eq!(q.run(&mut g, xs).unwrap().values, want.values);
        }
    }
}

/// A broadcasting add has no PyTorch eager int8 counterpart: converting a graph with one for a
/// PyTorch preset is an error naming the node (the float graph and the `ort` preset take it).
#[test]
fn broadcasting_adds_are_refused_by_pytorch_presets_naming_the_node() {
    let graph = onnx::load(&dir("bcast_add").join("model.onnx")).unwrap();
    let mut prepared = PreparedGraph::new(graph, QConfig::preset("x86").unwrap()).unwrap();
    let calib = npy::read::<f32>(dir("bcast_add").join("calib.npy"))
        .unwrap()
        .split_axis0()
        .unwrap();
    for b in calib {
        prepared.calibrate(&[b]).unwrap();
    }
    let e = prepared
        .convert(&ConvertOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("add1") && e.contains("broadcasting add"), "{e}");
}
