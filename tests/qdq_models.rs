//! Already-quantized (QDQ) ONNX models from ONNX Runtime's `quantize_static`
//! (`scripts/gen_qdq_fixtures.py`): squint imports each and runs it with ORT's int8 formulas;
//! the output equals ORT's float32 output bit for bit.

mod common;

use squint::cpu::reference::ort::add::QLinearAddKernel;
use squint::cpu::reference::ort::pool::AvgPoolParams;
use squint::io::{npy, onnx_qdq};
use squint::pipeline::qdq::{run, run_reference, QdqBackend, QdqFastCpu, QdqGpu, QdqReference};
use squint::quant::{QDtype, QParams};
use std::path::{Path, PathBuf};

/// The `QLinearAdd` kernel of the ONNX Runtime that wrote the fixtures' outputs: every
/// fixture was written on x86-64 with AVX2 and FMA (each `meta.json` records the CPU's flags;
/// `fixtures_were_written_where_ort_adds_with_avx2` checks them), whatever CPU runs the tests:
/// on ARM, where ORT would run other add kernels, squint still reproduces these files.
fn fixture_add_kernel() -> QLinearAddKernel {
    QLinearAddKernel::Avx2
}

/// The fast CPU backend adding as the fixtures' ONNX Runtime did ([`fixture_add_kernel`]).
fn fast_cpu() -> QdqFastCpu {
    let mut b = QdqFastCpu::default();
    b.add = Some(fixture_add_kernel());
    b
}

#[test]
fn fixtures_were_written_where_ort_adds_with_avx2() {
    let mut metas = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().is_some_and(|n| n == "meta.json") {
                metas.push(p);
            }
        }
    }
    assert!(metas.len() >= 10, "{metas:?}");
    for p in metas {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let flags = meta["cpu_flags"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no cpu_flags", p.display()));
        for f in ["avx2", "fma"] {
            assert!(flags.iter().any(|v| v == f), "{}: no {f}", p.display());
        }
    }
}

/// The calibration batches of a fixture model (one graph input each).
fn calib_batches(model: &str) -> Vec<Vec<squint::tensor::Tensor<f32>>> {
    let calib = npy::read::<f32>(dir(model).join("calib.npy")).unwrap();
    calib
        .split_axis0()
        .unwrap()
        .into_iter()
        .map(|t| vec![t])
        .collect()
}

/// The ops ORT executed for the fixture in `sub` (its `meta.json`), then `model_qdq.onnx`
/// there run on the reference (ORT's `output.npy` bit for bit), the fast CPU path and every
/// GPU (the reference's ints); returns the model.
fn check_ort_fixture(model: &str, sub: &str) -> (onnx_qdq::QdqModel, serde_json::Value) {
    let d = dir(model);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join(sub).join("meta.json")).unwrap())
            .unwrap();
    let m = onnx_qdq::load(&d.join(sub).join("model_qdq.onnx")).unwrap();
    let x = npy::read::<f32>(d.join("input.npy")).unwrap();
    let xs = std::slice::from_ref(&x);
    let want = run_reference(&m, xs, fixture_add_kernel()).unwrap();
    let ort = npy::read::<f32>(d.join(sub).join("output.npy")).unwrap();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&want.outputs[0].data),
        bits(&ort.data),
        "{model}/{sub}"
    );
    let fast = run(&m, xs, &mut fast_cpu()).unwrap();
    assert_eq!(fast.values, want.values, "{model}/{sub}: cpu-fast");
    let mut pooled = fast_cpu();
    // The second run of a backend adds through byte-pair tables.
    for i in 0..2 {
        let got = pooled.run(&m, xs).unwrap();
        assert_eq!(
            got.values, want.values,
            "{model}/{sub}: cpu-fast on a pool, run {i}"
        );
    }
    for ctx in common::gpu_contexts() {
        let name = ctx.adapter_report().summary();
        let mut gpu = QdqGpu::new(ctx, fixture_add_kernel());
        let got = run(&m, xs, &mut gpu).unwrap();
        assert_eq!(got.values, want.values, "{model}/{sub}: {name}");
        check_resident(&mut gpu, &m, xs, &want, &format!("{model}/{sub} on {name}"));
    }
    (m, meta["executed_op_types"].clone())
}

/// `gpu.run_resident` (values kept on the device) gives `want`'s ints at every value and its
/// outputs' bits.
fn check_resident(
    gpu: &mut QdqGpu,
    m: &onnx_qdq::QdqModel,
    xs: &[squint::tensor::Tensor<f32>],
    want: &squint::pipeline::qdq::QdqRun,
    what: &str,
) {
    let got = gpu.run_resident_values(m, xs).unwrap();
    for (i, (g, w)) in got.values.iter().zip(&want.values).enumerate() {
        assert_eq!(g, w, "{what}, resident: value {}", m.graph.values()[i].name);
    }
    let bits = |v: &[squint::tensor::Tensor<f32>]| -> Vec<Vec<u32>> {
        v.iter()
            .map(|t| t.data.iter().map(|f| f.to_bits()).collect())
            .collect()
    };
    assert_eq!(bits(&got.outputs), bits(&want.outputs), "{what}, resident");
    let outputs = gpu.run_resident(m, xs).unwrap();
    assert_eq!(
        bits(&outputs),
        bits(&want.outputs),
        "{what}, resident outputs"
    );
}

/// The fixture models: a ResNet- and a MobileNet-shaped one from PyTorch, and the MobileNet
/// with ReLU6 (`Clip`) instead of ReLU (`scripts/gen_relu6_fixture.py`).
const MODELS: [&str; 3] = ["resnet_tiny", "mobilenet_tiny", "mobilenet_relu6_tiny"];

/// The fast CPU path's adds (byte-pair tables for 2^16 elements and more, the reference below)
/// equal the reference for each of ORT's add kernels, on every byte pair and on random bytes,
/// with qparams of both dtypes.
#[test]
fn fast_cpu_adds_equal_the_reference_for_every_kernel() {
    use squint::cpu::reference::ort::add::{qlinear_add, QLinearAddKernel};
    let n = 70_000;
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut byte = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 24) as u8
    };
    let (a, b): (Vec<u8>, Vec<u8>) = (0..n)
        .map(|i| {
            if i < 1 << 16 {
                ((i >> 8) as u8, i as u8)
            } else {
                (byte(), byte())
            }
        })
        .unzip();
    let qp = |scale, zp, dtype| QParams::new(scale, zp, dtype).unwrap();
    let cases = [
        [
            qp(0.05, 128, QDtype::QUInt8),
            qp(0.031, 3, QDtype::QUInt8),
            qp(0.07, 120, QDtype::QUInt8),
        ],
        [
            qp(0.5, 0, QDtype::QInt8),
            qp(0.002, -7, QDtype::QInt8),
            qp(0.3, 5, QDtype::QInt8),
        ],
    ];
    for kernel in [
        QLinearAddKernel::Avx2,
        QLinearAddKernel::Sse2,
        QLinearAddKernel::Raw,
    ] {
        let mut fast = fast_cpu();
        fast.add = Some(kernel);
        for [x, y, z] in cases {
            let want = qlinear_add(kernel, &a, &x, &b, &y, &z).unwrap();
            let got = QdqBackend::add(&mut fast, &a, &x, &b, &y, &z).unwrap();
            assert_eq!(got, want, "{kernel:?} {x:?} {y:?} {z:?}");
            // A small add: the reference on first sight, the table on the second.
            for i in 0..2 {
                let got = QdqBackend::add(&mut fast, &a[..100], &x, &b[..100], &y, &z);
                assert_eq!(got.unwrap(), want[..100], "{kernel:?}, small add, run {i}");
            }
        }
    }
}

fn dir(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(model)
}

#[test]
fn qdq_models_run_bit_for_bit_like_onnx_runtime() {
    for model in MODELS {
        let x = npy::read::<f32>(dir(model).join("input.npy")).unwrap();
        for tag in ["qdq_per_tensor", "qdq_per_channel"] {
            let d = dir(model).join(tag);
            let m = onnx_qdq::load(&d.join("model_qdq.onnx")).unwrap();
            let run = run_reference(&m, std::slice::from_ref(&x), fixture_add_kernel()).unwrap();
            let want = npy::read::<f32>(d.join("output.npy")).unwrap();
            let got = &run.outputs[0];
            assert_eq!(got.dims, want.dims, "{model} {tag}");
            let differ = got
                .data
                .iter()
                .zip(&want.data)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                differ,
                0,
                "{model} {tag}: {differ} of {} outputs differ",
                want.data.len()
            );
        }
    }
}

/// A QDQ pattern squint cannot run exactly is an error naming the node: a 16-bit zero point,
/// an activation that is never quantized.
#[test]
fn unsupported_qdq_patterns_are_errors_naming_the_node() {
    use onnx_protobuf::{Message, ModelProto};
    let path = dir("resnet_tiny").join("qdq_per_tensor/model_qdq.onnx");
    let bytes = std::fs::read(&path).unwrap();
    assert!(onnx_qdq::is_qdq(&bytes, &path).unwrap());
    // int16 activations (QuantizeLinear with an INT16 zero point).
    let mut m = ModelProto::parse_from_bytes(&bytes).unwrap();
    let g = m.graph.as_mut().unwrap();
    let zp = g
        .initializer
        .iter_mut()
        .find(|t| t.name == "input_zero_point")
        .unwrap();
    zp.data_type = 5; // INT16
    zp.raw_data = vec![0, 0];
    let e = onnx_qdq::from_bytes(&m.write_to_bytes().unwrap(), &path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("QuantizeLinear") && e.contains("data type 5"),
        "{e}"
    );
    // A Conv output read directly as float (its QuantizeLinear removed).
    let mut m = ModelProto::parse_from_bytes(&bytes).unwrap();
    let g = m.graph.as_mut().unwrap();
    let q = g
        .node
        .iter()
        .position(|n| n.op_type == "QuantizeLinear" && n.input[0] == "/relu/Relu_output_0")
        .unwrap();
    let q_out = g.node[q].output[0].clone();
    g.node.remove(q);
    for n in g.node.iter_mut() {
        for s in n.input.iter_mut() {
            if *s == q_out {
                *s = "/relu/Relu_output_0".into();
            }
        }
    }
    let e = onnx_qdq::from_bytes(&m.write_to_bytes().unwrap(), &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/relu/Relu_output_0"), "{e}");
    // A float model is not a QDQ model.
    let float = dir("resnet_tiny").join("model.onnx");
    assert!(!onnx_qdq::is_qdq(&std::fs::read(&float).unwrap(), &float).unwrap());
}

/// `model_qdq.onnx` of `model`/`tag` with every int8 weight stored as uint8 (bytes and zero
/// points + 128): the same `w − ζ`, so the same model, the one ORT ran for `output.npy`.
fn with_uint8_weights(model: &str, tag: &str) -> onnx_qdq::QdqModel {
    use onnx_protobuf::{Message, ModelProto};
    use std::collections::HashSet;
    let path = dir(model).join(tag).join("model_qdq.onnx");
    let mut m = ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let mut shift: HashSet<String> = HashSet::new();
    for n in g.node.iter().filter(|n| n.op_type == "DequantizeLinear") {
        let is_int8_init = |name: &str| {
            g.initializer
                .iter()
                .any(|t| t.name == name && t.data_type == 3)
        };
        if is_int8_init(&n.input[0]) {
            shift.insert(n.input[0].clone());
            shift.insert(n.input[2].clone());
        }
    }
    assert!(!shift.is_empty(), "{model} {tag} has int8 weights");
    for t in g.initializer.iter_mut().filter(|t| shift.contains(&t.name)) {
        assert_eq!(t.data_type, 3, "{}", t.name);
        t.data_type = 2; // UINT8
        if t.raw_data.is_empty() {
            t.raw_data = t.int32_data.iter().map(|&v| v as u8).collect();
            t.int32_data.clear();
        }
        t.raw_data.iter_mut().for_each(|b| *b ^= 0x80);
    }
    onnx_qdq::from_bytes(&m.write_to_bytes().unwrap(), &path).unwrap()
}

/// uint8 weights (`quantize_static(weight_type=QUInt8)`) run on every device: the tiny models
/// with their weights stored as uint8 give ORT's output of the int8-weight models bit for bit
/// on the reference, and the reference's ints on the fast CPU path and every GPU.
#[test]
fn uint8_weight_qdq_models_run_exactly_on_every_device() {
    let gpus = common::gpu_contexts();
    for model in MODELS {
        let x = npy::read::<f32>(dir(model).join("input.npy")).unwrap();
        let xs = std::slice::from_ref(&x);
        for tag in ["qdq_per_tensor", "qdq_per_channel"] {
            let m = with_uint8_weights(model, tag);
            assert!(m
                .weights
                .iter()
                .flatten()
                .all(|w| w.dtype == squint::quant::QDtype::QUInt8));
            let want = run_reference(&m, xs, fixture_add_kernel()).unwrap();
            let ort = npy::read::<f32>(dir(model).join(tag).join("output.npy")).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&want.outputs[0].data),
                bits(&ort.data),
                "{model} {tag}"
            );
            let fast = run(&m, xs, &mut fast_cpu()).unwrap();
            assert_eq!(fast.values, want.values, "{model} {tag} cpu-fast");
            for ctx in &gpus {
                let name = ctx.adapter_report().summary();
                let mut gpu = QdqGpu::new(ctx.clone(), fixture_add_kernel());
                let got = run(&m, xs, &mut gpu).unwrap();
                assert_eq!(got.values, want.values, "{model} {tag} on {name}");
                check_resident(&mut gpu, &m, xs, &want, &format!("{model} {tag} on {name}"));
            }
        }
    }
}

/// int8 activations in a chain whose every value has one reader: ONNX Runtime fuses the whole
/// model into its (uint8) int8 kernels (`scripts/gen_qdq_int8_fixture.py` records the ops it
/// executed), and squint's int8 run equals ORT's output bit for bit on every device.
#[test]
fn int8_activation_chains_run_bit_for_bit_like_onnx_runtime() {
    let (m, executed) = check_ort_fixture("chain_int8", "qdq_int8");
    let executed = executed.as_object().unwrap();
    assert!(!executed.contains_key("Conv") && executed.contains_key("com.microsoft::QLinearConv"));
    assert!(m.qparams.iter().all(|q| q.dtype == QDtype::QInt8));
}

/// A model with int8 activations and a value read twice is refused before anything runs,
/// naming the value: ORT on x86 runs the nodes around it as float ops squint cannot reproduce
/// bit for bit.
#[test]
fn int8_activation_qdq_models_are_refused_naming_the_value() {
    use onnx_protobuf::{Message, ModelProto};
    let path = dir("resnet_tiny").join("qdq_per_tensor/model_qdq.onnx");
    let mut m = ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let zp = g
        .initializer
        .iter_mut()
        .find(|t| t.name == "/relu/Relu_output_0_zero_point")
        .unwrap();
    // INT8: the stem's output and the max pool's (its qparams), which the first block's conv
    // and its residual add both read, now have int8 activations.
    zp.data_type = 3;
    zp.raw_data = vec![0];
    zp.int32_data.clear();
    let qdq = onnx_qdq::from_bytes(&m.write_to_bytes().unwrap(), &path).unwrap();
    let x = npy::read::<f32>(dir("resnet_tiny").join("input.npy")).unwrap();
    let e = run_reference(&qdq, &[x], fixture_add_kernel())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("value '/maxpool/MaxPool_output_0'")
            && e.contains("read 2 times")
            && e.contains("QUInt8"),
        "{e}"
    );
}

/// The fast CPU path and every GPU adapter, node by node and with the values kept on the
/// device, give the reference's ints at every value of both QDQ models, hence ORT's output;
/// one backend of each kind runs all the models in turn (its per-node caches must not carry a
/// layer or table over to another model).
#[test]
fn qdq_models_give_the_same_ints_on_cpu_fast_and_every_gpu() {
    let gpus = common::gpu_contexts();
    let mut fast_cpu = fast_cpu();
    let mut gpu_backends: Vec<QdqGpu> = gpus
        .iter()
        .map(|c| QdqGpu::new(c.clone(), fixture_add_kernel()))
        .collect();
    for model in MODELS {
        let x = npy::read::<f32>(dir(model).join("input.npy")).unwrap();
        let xs = std::slice::from_ref(&x);
        for tag in ["qdq_per_tensor", "qdq_per_channel"] {
            let m = onnx_qdq::load(&dir(model).join(tag).join("model_qdq.onnx")).unwrap();
            let want = run_reference(&m, xs, fixture_add_kernel()).unwrap();
            let fast = run(&m, xs, &mut fast_cpu).unwrap();
            assert_eq!(fast.values, want.values, "{model} {tag} cpu-fast");
            for (ctx, backend) in gpus.iter().zip(&mut gpu_backends) {
                let name = ctx.adapter_report().summary();
                let got = run(&m, xs, backend).unwrap();
                for (i, (g, w)) in got.values.iter().zip(&want.values).enumerate() {
                    assert_eq!(
                        g,
                        w,
                        "{model} {tag} on {name}: value {}",
                        m.graph.values()[i].name
                    );
                }
                check_resident(backend, &m, xs, &want, &format!("{model} {tag} on {name}"));
            }
        }
    }
}

/// A fast CPU backend keeps each conv's packed layer between runs, and knows a weight unchanged
/// by its shared allocation: a model's clone (same allocations) reuses the layers, while a
/// weight edited in place (`Arc::make_mut` copies the shared bytes first) is packed again, so
/// the next run gives the edited model's ints.
#[test]
fn cpu_fast_backend_repacks_a_weight_edited_between_runs() {
    let model = MODELS[0];
    let mut m = onnx_qdq::load(&dir(model).join("qdq_per_tensor").join("model_qdq.onnx")).unwrap();
    let x = npy::read::<f32>(dir(model).join("input.npy")).unwrap();
    let xs = std::slice::from_ref(&x);
    let mut fast = fast_cpu();
    let before = run(&m, xs, &mut fast).unwrap();
    assert_eq!(
        before.values,
        run_reference(&m, xs, fixture_add_kernel()).unwrap().values
    );
    let twin = m.clone();
    assert_eq!(run(&twin, xs, &mut fast).unwrap().values, before.values);
    let node = m.weights.iter().position(|w| w.is_some()).expect("a conv");
    let w = m.weights[node].as_mut().unwrap();
    for b in std::sync::Arc::make_mut(&mut w.data).iter_mut() {
        *b = b.wrapping_add(7);
    }
    assert!(!std::sync::Arc::ptr_eq(
        &w.data,
        &twin.weights[node].as_ref().unwrap().data
    ));
    let want = run_reference(&m, xs, fixture_add_kernel()).unwrap();
    assert_ne!(
        want.values, before.values,
        "the edit changes the model's ints"
    );
    assert_eq!(run(&m, xs, &mut fast).unwrap().values, want.values);
}

/// `run_outputs` writes each conv's output into the previous run's buffers: the same outputs
/// as the reference on every call, for inputs that alternate (stale bytes of the other
/// input's run would show), and on a model with other value sizes in between.
#[test]
fn cpu_fast_run_outputs_reusing_buffers_equals_the_reference() {
    let bits = |ts: &[squint::tensor::Tensor<f32>]| {
        ts.iter()
            .map(|t| t.data.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    let mut fast = fast_cpu();
    let mut checked = 0;
    for model in MODELS {
        let m = onnx_qdq::load(&dir(model).join("qdq_per_tensor").join("model_qdq.onnx")).unwrap();
        let x = npy::read::<f32>(dir(model).join("input.npy")).unwrap();
        let mut y = x.clone();
        y.data.iter_mut().for_each(|v| *v = 0.5 - *v);
        for input in [&x, &y, &x, &y] {
            let xs = std::slice::from_ref(input);
            let want = run_reference(&m, xs, fixture_add_kernel()).unwrap();
            let got = fast.run_outputs(&m, xs).unwrap();
            assert_eq!(bits(&got), bits(&want.outputs), "{model}");
            checked += 1;
        }
    }
    assert!(checked >= 8);
}

/// `report` on a QDQ model: a row per value, every value's qparams the model's own, and the
/// int8 values close to the float ops (whose values are clamped to their quantization ranges,
/// where `quantize_static` put the ReLUs it removed).
#[test]
fn qdq_report_covers_every_value_with_the_models_qparams() {
    use squint::pipeline::diagnostics::diagnose_qdq;
    use squint::pipeline::PointSource;
    let m = onnx_qdq::load(&dir("resnet_tiny").join("qdq_per_channel/model_qdq.onnx")).unwrap();
    let x = npy::read::<f32>(dir("resnet_tiny").join("input.npy")).unwrap();
    let r = diagnose_qdq(&m, &[x]).unwrap();
    assert_eq!(r.len(), m.graph.inputs().len() + m.graph.nodes().len());
    for (rep, v) in r.iter().zip(
        m.graph
            .inputs()
            .iter()
            .copied()
            .chain(m.graph.nodes().iter().map(|n| n.output)),
    ) {
        assert_eq!(rep.name, m.graph.value(v).name);
        assert_eq!(rep.qparams, m.qparams[v.0]);
        assert_eq!(rep.source, PointSource::Pinned);
        assert!(
            rep.metrics.sqnr_db > 20.0,
            "{}: {:?}",
            rep.name,
            rep.metrics
        );
    }
}

/// ONNX Runtime's `QLinearAveragePool` on the GPU (float sums and two divisions in the GPU's
/// integer-emulated binary32) equals the reference on random windows, pads, strides,
/// `count_include_pad`, dtypes and qparams, scales chosen to make ties common.
#[test]
fn qlinear_average_pool_on_the_gpu_equals_the_reference() {
    let gpus = common::gpu_contexts();
    let mut rng = common::Rng::new(0xa7_9001);
    let scales = [1.0f32, 0.5, 0.25, 2.0, 0.1, 0.0123, 3.7, 1.0 / 3.0];
    let mut cases = Vec::new();
    while cases.len() < 60 {
        let (h, w) = (rng.usize(1, 12), rng.usize(1, 12));
        let kernel = [rng.usize(1, h.min(5)), rng.usize(1, w.min(5))];
        let pads = [
            rng.usize(0, kernel[0] - 1),
            rng.usize(0, kernel[1] - 1),
            rng.usize(0, kernel[0] - 1),
            rng.usize(0, kernel[1] - 1),
        ];
        let p = AvgPoolParams {
            kernel,
            stride: [rng.usize(1, 3), rng.usize(1, 3)],
            pads,
            count_include_pad: rng.coin(0.5),
        };
        let dtype = if rng.coin(0.5) {
            QDtype::QUInt8
        } else {
            QDtype::QInt8
        };
        let r = dtype.full_range();
        let qp = |rng: &mut common::Rng| {
            let z = rng.range(r.min as i64, r.max as i64) as i32;
            QParams::new(rng.pick(&scales), z, dtype).unwrap()
        };
        let (x_qp, y_qp) = (qp(&mut rng), qp(&mut rng));
        let d = [rng.usize(1, 2), rng.usize(1, 4), h, w];
        let x: Vec<u8> = (0..d.iter().product::<usize>())
            .map(|_| rng.usize(0, 255) as u8)
            .collect();
        cases.push((x, d, x_qp, p, y_qp));
    }
    let add = fixture_add_kernel();
    for ctx in &gpus {
        let name = ctx.adapter_report().summary();
        let mut gpu = QdqGpu::new(ctx.clone(), add);
        for (i, (x, d, x_qp, p, y_qp)) in cases.iter().enumerate() {
            let want = QdqReference { add }.avg_pool(x, *d, x_qp, p, y_qp).unwrap();
            let got = gpu.avg_pool(x, *d, x_qp, p, y_qp).unwrap();
            assert_eq!(got, want, "{name}, case {i}: {d:?} {p:?} {x_qp:?} {y_qp:?}");
        }
    }
}

/// The `ort` preset (`squint::pipeline::ort_preset`) quantizes the float tiny models as
/// `quantize_static` did for the fixtures (MinMax on `calib.npy`, uint8 activations, 7-bit
/// int8 weights, per-tensor and per-channel): the same weights, scales and zero points bit for
/// bit; the same activation zero points, and scales within a few float32 ulps (squint's float
/// convs are not MLAS's, so a calibrated range can differ in its last bits); at least 99.9 %
/// of the ints of all values (99 % of each) within 1 of what ORT's own model gives, on the
/// reference and the fast CPU path.
#[test]
fn ort_preset_quantizes_like_quantize_static() {
    use squint::pipeline::ort_preset::{quantize, OrtQuantOptions};
    for model in MODELS {
        let g = squint::io::onnx::load(&dir(model).join("model.onnx")).unwrap();
        let batches = calib_batches(model);
        let x = npy::read::<f32>(dir(model).join("input.npy")).unwrap();
        let xs = std::slice::from_ref(&x);
        for (tag, per_channel) in [("qdq_per_tensor", false), ("qdq_per_channel", true)] {
            let opts = OrtQuantOptions {
                per_channel,
                reduce_range: true,
            };
            let ours = quantize(&g, &batches, opts, |_, _| {}).unwrap();
            let theirs = onnx_qdq::load(&dir(model).join(tag).join("model_qdq.onnx")).unwrap();
            let what = format!("{model} {tag}");
            // Weights, by node name.
            for (node, w) in ours.graph.nodes().iter().zip(&ours.weights) {
                let Some(w) = w else { continue };
                let j = theirs
                    .graph
                    .nodes()
                    .iter()
                    .position(|n| n.name == node.name)
                    .unwrap_or_else(|| panic!("{what}: ORT's model has no node {}", node.name));
                let t = theirs.weights[j].as_ref().unwrap();
                assert_eq!(w.data, t.data, "{what} {}: weight ints", node.name);
                assert_eq!(w.scales, t.scales, "{what} {}: weight scales", node.name);
                assert_eq!(w.zero_points, t.zero_points, "{what} {}", node.name);
                let (b, tb) = (w.bias.as_ref().unwrap(), t.bias.as_ref().unwrap());
                let off = b.iter().zip(tb).map(|(p, q)| (p - q).abs()).max().unwrap();
                assert!(off <= 1, "{what} {}: biases differ by {off}", node.name);
            }
            // Activations, by value name (ORT renames the output).
            let ours_run = run_reference(&ours, xs, fixture_add_kernel()).unwrap();
            let theirs_run = run_reference(&theirs, xs, fixture_add_kernel()).unwrap();
            let fast = run(&ours, xs, &mut fast_cpu()).unwrap();
            assert_eq!(fast.values, ours_run.values, "{what}: cpu-fast");
            let mut pairs: Vec<(usize, usize)> = ours
                .graph
                .values()
                .iter()
                .enumerate()
                .filter_map(|(i, v)| theirs.graph.find(&v.name).map(|j| (i, j.0)))
                .collect();
            pairs.push((ours.graph.outputs()[0].0, theirs.graph.outputs()[0].0));
            assert!(pairs.len() >= ours.graph.values().len() - 1, "{what}");
            let (mut total, mut close) = (0, 0);
            for (i, j) in pairs {
                let name = &ours.graph.values()[i].name;
                let (a, b) = (ours.qparams[i], theirs.qparams[j]);
                assert_eq!(a.zero_point, b.zero_point, "{what} {name}");
                assert!(
                    (a.scale / b.scale - 1.0).abs() <= 1e-6,
                    "{what} {name}: scale {} vs ORT's {}",
                    a.scale,
                    b.scale
                );
                let diffs: Vec<i32> = ours_run.values[i]
                    .iter()
                    .zip(&theirs_run.values[j])
                    .map(|(p, q)| (*p as i32 - *q as i32).abs())
                    .collect();
                let within1 = diffs.iter().filter(|&&d| d <= 1).count();
                assert!(
                    within1 * 100 >= diffs.len() * 99,
                    "{what} {name}: {within1} of {} ints within 1 of ORT's",
                    diffs.len()
                );
                total += diffs.len();
                close += within1;
            }
            assert!(
                close * 1000 >= total * 999,
                "{what}: {close} of {total} ints within 1 of ORT's"
            );
        }
    }
}

/// The QDQ models `squint quantize --qconfig ort` writes run in ONNX Runtime with its int8
/// kernels (`scripts/gen_squint_qdq_fixtures.py` records the ops ORT executed): squint runs
/// the committed files to ORT's output bit for bit on every device. Writing today's preset
/// model and reading it back gives the same qparams, weights and ints.
#[test]
fn qdq_models_squint_writes_run_in_onnx_runtime_bit_for_bit() {
    use squint::pipeline::ort_preset::{quantize, OrtQuantOptions};
    let gpus = common::gpu_contexts();
    for model in MODELS {
        let x = npy::read::<f32>(dir(model).join("input.npy")).unwrap();
        let xs = std::slice::from_ref(&x);
        for (tag, per_channel) in [("squint_ort", true), ("squint_ort-per-tensor", false)] {
            let what = format!("{model} {tag}");
            let d = dir(model).join(tag);
            let meta: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(d.join("meta.json")).unwrap())
                    .unwrap();
            let executed = meta["executed_op_types"].as_object().unwrap();
            assert!(
                executed.contains_key("com.microsoft::QLinearConv"),
                "{what}"
            );
            for float_op in ["Conv", "Add", "Gemm", "AveragePool", "GlobalAveragePool"] {
                assert!(
                    !executed.contains_key(float_op),
                    "{what}: ORT ran {float_op} in float"
                );
            }
            let m = onnx_qdq::load(&d.join("model_qdq.onnx")).unwrap();
            let want = run_reference(&m, xs, fixture_add_kernel()).unwrap();
            let ort = npy::read::<f32>(d.join("ort_output.npy")).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&want.outputs[0].data), bits(&ort.data), "{what}");
            let fast = run(&m, xs, &mut fast_cpu()).unwrap();
            assert_eq!(fast.values, want.values, "{what} cpu-fast");
            for ctx in &gpus {
                let got = run(&m, xs, &mut QdqGpu::new(ctx.clone(), fixture_add_kernel()));
                let name = ctx.adapter_report().summary();
                assert_eq!(got.unwrap().values, want.values, "{what} on {name}");
            }
            // Today's preset, written and read back.
            let g = squint::io::onnx::load(&dir(model).join("model.onnx")).unwrap();
            let batches = calib_batches(model);
            let opts = OrtQuantOptions {
                per_channel,
                reduce_range: true,
            };
            let today = quantize(&g, &batches, opts, |_, _| {}).unwrap();
            let path = d.join("model_qdq.onnx");
            let back = onnx_qdq::from_bytes(&onnx_qdq::to_bytes(&today).unwrap(), &path).unwrap();
            assert_eq!(back.qparams, today.qparams, "{what}");
            assert_eq!(back.weights, today.weights, "{what}");
            let a = run_reference(&today, xs, fixture_add_kernel()).unwrap();
            let b = run_reference(&back, xs, fixture_add_kernel()).unwrap();
            assert_eq!(a.values, b.values, "{what}");
        }
    }
}

/// Broadcasting adds (`[n, c, h, w] + [n, c, 1, 1]`, and the broadcast operand first, which
/// ORT's BroadcastLooper swaps into B's place): ORT fuses both into `QLinearAdd`
/// (`scripts/gen_qdq_bcast_fixture.py`), and squint's output equals ORT's bit for bit on every
/// device (the broadcasting add itself runs on the host reference for every backend).
#[test]
fn broadcasting_adds_run_bit_for_bit_like_onnx_runtime() {
    // bcast_add_out: both adds (A broadcast, then B) are the output, and ORT runs them in
    // NHWC between its Transposes, where its broadcast spans differ from NCHW's.
    for model in ["bcast_add", "bcast_add_out"] {
        let (_, executed) = check_ort_fixture(model, "qdq");
        assert_eq!(executed["com.microsoft::QLinearAdd"], 2, "{model}");
        assert!(
            !executed.as_object().unwrap().contains_key("Add"),
            "{model}"
        );
    }
    let d = dir("bcast_add");
    let x = npy::read::<f32>(d.join("input.npy")).unwrap();
    let xs = std::slice::from_ref(&x);
    // The float model imports with its broadcasting adds, and the `ort` preset runs it.
    let g = squint::io::onnx::load(&d.join("model.onnx")).unwrap();
    let y = g.run_f32(xs).unwrap();
    assert_eq!(y[0].dims, vec![2, 10]);
    let q = squint::pipeline::ort_preset::quantize(
        &g,
        &calib_batches("bcast_add"),
        squint::pipeline::ort_preset::OrtQuantOptions::default(),
        |_, _| {},
    )
    .unwrap();
    run_reference(&q, xs, fixture_add_kernel()).unwrap();
}
