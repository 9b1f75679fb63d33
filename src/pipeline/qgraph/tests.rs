use super::*;
use crate::graph::testing::conv;
use crate::graph::GraphBuilder;
use crate::pipeline::{Device, Model, PreparedModel};
use crate::rng::Rng;
use crate::shape::ConvParams;

fn batch(rng: &mut Rng, dims: &[usize]) -> Tensor<f32> {
    let n = dims.iter().product();
    Tensor::new(dims.to_vec(), rng.normal_vec(n, 1.0)).unwrap()
}

/// The shared test block (`graph::testing::block_graph`) on 8×8 images.
fn block_graph(rng: &mut Rng) -> Graph {
    crate::graph::testing::block_graph(rng, 8)
}

fn calibrated(g: Graph, qconfig: QConfig, rng: &mut Rng) -> PreparedGraph {
    let mut p = PreparedGraph::new(g, qconfig).unwrap();
    for _ in 0..3 {
        p.calibrate(&[batch(rng, &[2, 3, 8, 8])]).unwrap();
    }
    p
}

#[test]
fn observers_sit_where_pytorch_eager_puts_them_and_the_rest_inherit() {
    let mut rng = Rng::new(3);
    let p = calibrated(block_graph(&mut rng), QConfig::qnnpack(), &mut rng);
    let points: Vec<&str> = p.observers().map(|(n, _)| n).collect();
    assert_eq!(points, ["x", "c1", "c2", "add", "cat", "fc"]);
    let (q, warnings) = p.convert(&ConvertOptions::default()).unwrap();
    assert!(warnings.is_empty());
    let qp = |name: &str| q.qparams()[q.find(name).unwrap().0];
    assert_eq!(qp("mp"), qp("add"));
    assert_eq!(qp("ap"), qp("c1"));
    assert_eq!(qp("clip"), qp("cat"));
    assert_eq!(qp("gap"), qp("cat"));
    assert_eq!(qp("flat"), qp("cat"));
    // The cat has its own observer, which saw both of its inputs' ranges.
    let (_, cat) = p.observers().find(|(n, _)| *n == "cat").unwrap();
    assert_eq!(cat.batches_seen(), 3);
    assert!(q.sources()[q.find("mp").unwrap().0].is_none());
}

#[test]
fn every_node_equals_the_reference_op_called_directly() {
    for qconfig in [QConfig::qnnpack(), QConfig::x86()] {
        let mut rng = Rng::new(4);
        let p = calibrated(block_graph(&mut rng), qconfig, &mut rng);
        let (q, _) = p.convert(&ConvertOptions::default()).unwrap();
        let x = batch(&mut rng, &[2, 3, 8, 8]);
        let run = q.run(&mut ReferenceBackend::new(&q), &[x]).unwrap();
        let v = |name: &str| &run.values[q.find(name).unwrap().0];
        let e = q.engine();
        let (add, c2, xq) = (v("add"), v("c2"), v("x"));
        let want = cpu::reference::add::add(
            e,
            q.isa(),
            &c2.data,
            &c2.qp,
            &xq.data,
            &xq.qp,
            &add.qp,
            true,
        )
        .unwrap();
        assert_eq!(add.data, want);
        let mp = v("mp");
        let p = Pool2dParams::square(3).stride(2).padding(1);
        let want =
            cpu::reference::pool::max_pool2d(e, &add.data, [2, 3, 8, 8], &add.qp, &p).unwrap();
        assert_eq!(
            (mp.data.clone(), mp.dims.clone()),
            (want.0, want.1.to_vec())
        );
        // The int outputs are non-trivial: not all one value.
        let fc = v("fc");
        assert_eq!(fc.dims, [2, 5]);
        assert!(fc.data.iter().any(|&b| b != fc.data[0]));
        assert_eq!(run.outputs[0].dims, [2, 5]);
    }
}

#[test]
fn a_conv_chain_as_a_graph_equals_the_conv_chain_pipeline_bit_for_bit() {
    let mut rng = Rng::new(5);
    let w1 = Tensor::new(vec![4, 3, 3, 3], rng.normal_vec(108, 0.3)).unwrap();
    let w2 = Tensor::new(vec![2, 4, 3, 3], rng.normal_vec(72, 0.3)).unwrap();
    let (b1, b2) = (rng.normal_vec(4, 0.1), rng.normal_vec(2, 0.1));
    let p1 = ConvParams::default().padding(1);
    let p2 = ConvParams::default().stride(2);
    let model = Model::builder()
        .conv2d("c1", w1.clone(), Some(b1.clone()), p1, true)
        .conv2d("c2", w2.clone(), Some(b2.clone()), p2, false)
        .build()
        .unwrap();
    let mut gb = GraphBuilder::new();
    let x = gb.input("input", &[1, 3, 9, 9]).unwrap();
    let mk = |weight, bias, params, act| {
        Op::Conv2d(Conv2dOp {
            weight,
            bias: Some(bias),
            params,
            act,
        })
    };
    let c1 = gb
        .node("c1", mk(w1, b1, p1, Activation::Relu), &[x])
        .unwrap();
    let c2 = gb
        .node("c2", mk(w2, b2, p2, Activation::None), &[c1])
        .unwrap();
    let graph = gb.build(&[c2]).unwrap();
    for qconfig in [QConfig::qnnpack(), QConfig::x86(), QConfig::fbgemm()] {
        let calib: Vec<Tensor<f32>> = (0..3).map(|_| batch(&mut rng, &[1, 3, 9, 9])).collect();
        let mut chain = PreparedModel::new(model.clone(), qconfig.clone()).unwrap();
        let mut pg = PreparedGraph::new(graph.clone(), qconfig.clone()).unwrap();
        for c in &calib {
            chain.calibrate(c).unwrap();
            pg.calibrate(std::slice::from_ref(c)).unwrap();
        }
        let (qm, _) = chain.convert(&ConvertOptions::default()).unwrap();
        let (qg, _) = pg.convert(&ConvertOptions::default()).unwrap();
        let x = batch(&mut rng, &[1, 3, 9, 9]);
        let want = qm.run(&x, &Device::CpuReference).unwrap();
        let got = qg.run(&mut ReferenceBackend::new(&qg), &[x]).unwrap();
        let out = &got.values[qg.find("c2").unwrap().0];
        assert_eq!(out.qp, want.qp, "{}", qconfig.name);
        assert_eq!(out.data, want.q.data, "{}", qconfig.name);
        assert_eq!(got.outputs[0].data, want.y.data);
    }
}

#[test]
fn converting_without_calibration_names_every_point() {
    let mut rng = Rng::new(6);
    let p = PreparedGraph::new(block_graph(&mut rng), QConfig::qnnpack()).unwrap();
    match p.convert(&ConvertOptions::default()) {
        Err(Error::UncalibratedPoints { points }) => {
            assert_eq!(points, ["x", "c1", "c2", "add", "cat", "fc"])
        }
        other => panic!("expected UncalibratedPoints, got {other:?}"),
    }
    let opts = ConvertOptions {
        allow_uncalibrated: true,
        ..Default::default()
    };
    let (q, warnings) = p.convert(&opts).unwrap();
    assert_eq!(warnings.len(), 6);
    assert_eq!(q.qparams()[0].scale, 1.0);
}

#[test]
fn pinning_names_values_and_refuses_values_without_an_observer() {
    let mut rng = Rng::new(7);
    let p = calibrated(block_graph(&mut rng), QConfig::qnnpack(), &mut rng);
    let pin = |name: &str| ConvertOptions {
        pinned: [(name.to_string(), (0.05f32, 3))].into_iter().collect(),
        ..Default::default()
    };
    let (q, _) = p.convert(&pin("add")).unwrap();
    let add = q.find("add").unwrap().0;
    assert_eq!(
        (q.qparams()[add].scale, q.qparams()[add].zero_point),
        (0.05, 3)
    );
    assert_eq!(q.qparams()[q.find("mp").unwrap().0], q.qparams()[add]);
    assert_eq!(q.sources()[add], Some(PointSource::Pinned));
    let e = p.convert(&pin("mp")).unwrap_err().to_string();
    assert!(e.contains("'mp' has no observer"), "{e}");
    let e = p.convert(&pin("nope")).unwrap_err().to_string();
    assert!(e.contains("'nope', which is not a value"), "{e}");
}

#[test]
fn a_bad_batch_changes_no_observer() {
    let mut rng = Rng::new(8);
    let mut p = calibrated(block_graph(&mut rng), QConfig::qnnpack(), &mut rng);
    let before: Vec<_> = p.observers().map(|(_, o)| o.min_max()).collect();
    let mut bad = batch(&mut rng, &[2, 3, 8, 8]);
    bad.data[5] = f32::NAN;
    assert!(matches!(p.calibrate(&[bad]), Err(Error::NonFinite { .. })));
    assert!(p.calibrate(&[batch(&mut rng, &[1, 3, 8, 8])]).is_err());
    let after: Vec<_> = p.observers().map(|(_, o)| o.min_max()).collect();
    assert_eq!(before, after);
    assert_eq!(p.batches_seen(), 3);
}

#[test]
fn tflite_and_fused_clip_are_refused_with_clear_errors() {
    let mut rng = Rng::new(9);
    let e = PreparedGraph::new(block_graph(&mut rng), QConfig::tflite()).unwrap_err();
    assert!(
        e.to_string()
            .contains("qconfig 'tflite' has no PyTorch engine"),
        "{e}"
    );
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[1, 3, 4, 4]).unwrap();
    let c = b
        .node("c", conv(&mut rng, 3, 3, 1, Activation::RELU6), &[x])
        .unwrap();
    let e = PreparedGraph::new(b.build(&[c]).unwrap(), QConfig::qnnpack()).unwrap_err();
    assert!(
        e.to_string().contains("node 'c' (Conv2d): a fused Clip"),
        "{e}"
    );
}

#[test]
fn a_saved_graph_loads_and_runs_to_the_same_ints() {
    for qconfig in [QConfig::qnnpack(), QConfig::x86()] {
        let mut rng = Rng::new(10);
        let p = calibrated(block_graph(&mut rng), qconfig, &mut rng);
        let (q, _) = p.convert(&ConvertOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.safetensors");
        q.save(&path).unwrap();
        assert!(QuantizedGraph::is_graph_file(&path).unwrap());
        let back = QuantizedGraph::load(&path).unwrap();
        assert_eq!(back.qparams(), q.qparams());
        assert_eq!(back.sources(), q.sources());
        let x = batch(&mut rng, &[2, 3, 8, 8]);
        let a = q
            .run(&mut ReferenceBackend::new(&q), std::slice::from_ref(&x))
            .unwrap();
        let b = back.run(&mut ReferenceBackend::new(&back), &[x]).unwrap();
        assert_eq!(a.values, b.values);
        assert_eq!(a.outputs, b.outputs);
    }
}

#[test]
fn a_conv_chain_file_is_a_clear_error_for_the_graph_loader() {
    let mut rng = Rng::new(11);
    let w = Tensor::new(vec![2, 3, 1, 1], rng.normal_vec(6, 0.3)).unwrap();
    let model = Model::builder()
        .conv2d("c", w, None, ConvParams::default(), false)
        .build()
        .unwrap();
    let mut pm = PreparedModel::new(model, QConfig::qnnpack()).unwrap();
    pm.calibrate(&batch(&mut rng, &[1, 3, 4, 4])).unwrap();
    let (qm, _) = pm.convert(&ConvertOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.safetensors");
    qm.save(&path).unwrap();
    assert!(!QuantizedGraph::is_graph_file(&path).unwrap());
    let e = QuantizedGraph::load(&path).unwrap_err().to_string();
    assert!(e.contains("conv-chain model (squint-quantized-v1)"), "{e}");
}

#[test]
fn corrupted_graph_files_are_errors_not_panics() {
    let mut rng = Rng::new(12);
    let p = calibrated(block_graph(&mut rng), QConfig::qnnpack(), &mut rng);
    let (q, _) = p.convert(&ConvertOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.safetensors");
    q.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let mut errors = 0;
    for i in 0..400 {
        let mut b = bytes.clone();
        if i % 4 == 0 {
            b.truncate(rng.below(b.len()));
        } else {
            // Mostly inside the JSON header, where the graph is.
            let k = rng.below(b.len().min(4096));
            b[k] = rng.next_u64() as u8;
        }
        let r = std::panic::catch_unwind(|| {
            QuantizedGraph::from_bytes(&b, std::path::Path::new("g.safetensors"))
        });
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("loading panicked (case {i})"),
        }
    }
    assert!(errors > 100, "{errors}");
}

/// An add of a conv output (channels-last in PyTorch) and the graph input (contiguous) records
/// both layouts, and on the x86 engine runs ATen's scalar path on every element: the result is
/// the reference add with the `DEFAULT` capability, whatever the ISA the graph reproduces.
#[test]
fn add_of_a_conv_output_and_the_input_runs_the_scalar_path() {
    let mut rng = Rng::new(41);
    let g = block_graph(&mut rng);
    let mut p = PreparedGraph::new(g, QConfig::x86()).unwrap();
    for _ in 0..3 {
        p.calibrate(&[batch(&mut rng, &[2, 3, 8, 8])]).unwrap();
    }
    let (q, _) = p.convert(&ConvertOptions::default()).unwrap();
    let i = q
        .graph()
        .nodes()
        .iter()
        .position(|n| n.name == "add")
        .unwrap();
    let QNode::Add { formats, relu } = q.nodes()[i] else {
        panic!("not an add: {:?}", q.nodes()[i]);
    };
    assert_eq!(
        formats,
        [MemoryFormat::ChannelsLast, MemoryFormat::Contiguous]
    );
    let run = q
        .run(
            &mut ReferenceBackend::new(&q),
            &[batch(&mut rng, &[2, 3, 8, 8])],
        )
        .unwrap();
    let node = &q.graph().nodes()[i];
    let (a, b) = (&run.values[node.inputs[0].0], &run.values[node.inputs[1].0]);
    let want = cpu::reference::add::add(
        QEngine::X86,
        CpuCapability::Default,
        &a.data,
        &a.qp,
        &b.data,
        &b.qp,
        &q.qparams()[node.output.0],
        relu,
    )
    .unwrap();
    assert_eq!(run.values[node.output.0].data, want);
}
