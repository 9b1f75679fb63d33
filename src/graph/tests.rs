use super::*;
use crate::shape::ConvParams;
use crate::tensor::Tensor;
use proptest::prelude::*;

fn spec(name: &str, op: Op, inputs: &[&str]) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        output: name.into(),
    }
}

fn relu() -> Op {
    Op::Activation(Activation::Relu)
}

fn add() -> Op {
    Op::Add {
        act: Activation::None,
    }
}

fn err_text(r: Result<Graph>) -> String {
    match r {
        Err(e @ Error::Graph { .. }) => e.to_string(),
        other => panic!("expected a graph error, got {other:?}"),
    }
}

#[test]
fn nodes_given_out_of_order_are_sorted_topologically_keeping_the_given_order_of_ties() {
    let nodes = vec![
        spec("sum", add(), &["a", "b"]),
        spec("b", relu(), &["x"]),
        spec("a", relu(), &["x"]),
    ];
    let g = Graph::new(&[("x", &[1, 2, 3, 3])], nodes, &["sum"]).unwrap();
    let names: Vec<&str> = g.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["b", "a", "sum"]);
    assert_eq!(g.value(g.find("sum").unwrap()).dims, [1, 2, 3, 3]);
}

#[test]
fn a_cycle_is_an_error_naming_its_nodes() {
    let nodes = vec![spec("a", add(), &["x", "b"]), spec("b", relu(), &["a"])];
    let msg = err_text(Graph::new(&[("x", &[1, 1, 2, 2])], nodes, &["b"]));
    assert!(msg.contains("cycle") && msg.contains("a, b"), "{msg}");
}

#[test]
fn malformed_graphs_are_errors_naming_the_node_and_its_op() {
    let x: &[(&str, &[usize])] = &[("x", &[1, 2, 4, 4])];
    let cases: Vec<(Vec<NodeSpec>, &[&str], &str)> =
        vec![
        (
            vec![spec("r", relu(), &["nope"])],
            &["r"],
            "node 'r' (Activation): input 'nope' is not defined",
        ),
        (
            vec![spec("r", relu(), &["x"]), spec("r2", relu(), &["x"])],
            &["zz"],
            "value 'zz'",
        ),
        (
            vec![spec("s", add(), &["x"])],
            &["s"],
            "node 's' (Add): takes 2 input(s), got 1",
        ),
        (
            vec![spec("x", relu(), &["x"])],
            &["x"],
            "value 'x': is produced more than once",
        ),
        (
            vec![spec("p", Op::MaxPool2d(Pool2dParams::square(5)), &["x"])],
            &["p"],
            "node 'p' (MaxPool2d): shape error: pooling: input 4x4 is too small for kernel [5, 5]",
        ),
        (
            vec![spec("p", Op::MaxPool2d(Pool2dParams::square(2).padding(2)), &["x"])],
            &["p"],
            "must be at most half the kernel",
        ),
        (
            vec![
                spec("p", Op::MaxPool2d(Pool2dParams::square(2)), &["x"]),
                spec("s", add(), &["x", "p"]),
            ],
            &["s"],
            "node 's' (Add): inputs of shapes",
        ),
        (
            vec![
                spec("p", Op::MaxPool2d(Pool2dParams::square(2)), &["x"]),
                spec("c", Op::Concat { axis: 1 }, &["x", "p"]),
            ],
            &["c"],
            "node 'c' (Concat): input 1 has shape",
        ),
        (
            vec![spec("f", Op::Flatten { start_dim: 4 }, &["x"])],
            &["f"],
            "node 'f' (Flatten)",
        ),
        (
            vec![spec("r", Op::Reshape { dims: vec![3, 11] }, &["x"])],
            &["r"],
            "cannot reshape",
        ),
        (
            vec![spec(
                "c",
                Op::Activation(Activation::Clip { min: 1.0, max: 0.0 }),
                &["x"],
            )],
            &["c"],
            "clip bounds",
        ),
    ];
    for (nodes, outs, want) in cases {
        let msg = err_text(Graph::new(x, nodes, outs));
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
    }
}

#[test]
fn a_linear_needs_a_2d_input_of_its_in_features() {
    let lin = Op::Linear(LinearOp {
        weight: Tensor::new(vec![3, 8], vec![0.0; 24]).unwrap(),
        bias: None,
        act: Activation::None,
    });
    let msg = err_text(Graph::new(
        &[("x", &[1, 2, 2, 2])],
        vec![spec("fc", lin.clone(), &["x"])],
        &["fc"],
    ));
    assert!(
        msg.contains("node 'fc' (Linear): input must be [N, 8]"),
        "{msg}"
    );
    let g = Graph::new(
        &[("x", &[1, 2, 2, 2])],
        vec![
            spec("flat", Op::Flatten { start_dim: 1 }, &["x"]),
            spec("fc", lin, &["flat"]),
        ],
        &["fc"],
    )
    .unwrap();
    assert_eq!(g.value(g.outputs()[0]).dims, [1, 3]);
}

#[test]
fn pool_output_sizes_follow_pytorchs_formula_including_ceil_mode() {
    // (input, pool, expected) computed with PyTorch's pooling_output_shape.
    let cases = [
        (112, Pool2dParams::square(3).stride(2).padding(1), 56),
        (5, Pool2dParams::square(2), 2),
        (5, Pool2dParams::square(2).ceil_mode(true), 3),
        // ceil mode would start a last window in the right padding: PyTorch drops it.
        (5, Pool2dParams::square(2).padding(1).ceil_mode(true), 3),
        (
            6,
            Pool2dParams::square(3).stride(2).padding(1).ceil_mode(true),
            4,
        ),
        (7, Pool2dParams::square(3).stride(2).dilation(2), 2),
        (1, Pool2dParams::square(1), 1),
    ];
    for (input, pool, want) in cases {
        assert_eq!(
            pool.output_size(input, input).unwrap(),
            [want, want],
            "{input} {pool:?}"
        );
    }
}

#[test]
fn adaptive_ranges_cover_the_input_with_pytorchs_overlaps() {
    use crate::cpu::float_ops::adaptive_range;
    let r: Vec<_> = (0..3).map(|o| adaptive_range(o, 3, 5)).collect();
    assert_eq!(r, [0..2, 1..4, 3..5]);
    assert_eq!(adaptive_range(0, 1, 7), 0..7);
}

fn t(dims: &[usize], data: Vec<f32>) -> Tensor<f32> {
    Tensor::new(dims.to_vec(), data).unwrap()
}

#[test]
fn float_residual_block_equals_the_ops_done_by_hand() {
    // x -> conv 1x1 (w = 2, bias -1) -> relu -> add(x) -> maxpool 2 -> global avg -> flatten
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[1, 1, 2, 2]).unwrap();
    let conv = Op::Conv2d(Conv2dOp {
        weight: t(&[1, 1, 1, 1], vec![2.0]),
        bias: Some(vec![-1.0]),
        params: ConvParams::default(),
        act: Activation::Relu,
    });
    let c = b.node("conv", conv, &[x]).unwrap();
    let s = b.node("add", add(), &[c, x]).unwrap();
    let m = b
        .node("pool", Op::MaxPool2d(Pool2dParams::square(1)), &[s])
        .unwrap();
    let a = b
        .node("gap", Op::AdaptiveAvgPool2d { output: [1, 1] }, &[m])
        .unwrap();
    let f = b.node("flat", Op::Flatten { start_dim: 1 }, &[a]).unwrap();
    let g = b.build(&[f, s]).unwrap();
    let xs = [0.0, 1.0, 2.0, -3.0];
    let mut seen = Vec::new();
    let out = g
        .run_f32_visit(&[t(&[1, 1, 2, 2], xs.to_vec())], |v, y| {
            seen.push((g.value(v).name.clone(), y.data.clone()));
            Ok(())
        })
        .unwrap();
    let conv_y: Vec<f32> = xs.iter().map(|&v| (2.0 * v - 1.0f32).max(0.0)).collect();
    let sum: Vec<f32> = conv_y.iter().zip(&xs).map(|(a, b)| a + b).collect();
    assert_eq!(seen[1], ("conv".to_string(), conv_y));
    assert_eq!(seen[2].1, sum);
    assert_eq!(out[0].dims, [1, 1]);
    assert_eq!(out[0].data, [sum.iter().sum::<f32>() / 4.0]);
    assert_eq!(out[1].data, sum);
    assert_eq!(seen.len(), 6);
}

/// Float runs compute activations, reshapes and adds in the buffer of an input read for the
/// last time: every value of the run equals its node evaluated alone on copies of its inputs.
/// `run_f32` clamps a conv's output as the conv stores it where an activation alone reads it
/// (the chain graph's three convs); the outputs equal those of the run that shows every value
/// (nothing fused). Not fused: a conv with its own ReLU, a clip after a concat, a conv read
/// by two nodes or that is a graph output.
#[test]
fn fused_float_runs_give_the_outputs_of_unfused_runs() {
    let mut rng = crate::rng::Rng::new(11);
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[1, 3, 6, 6]).unwrap();
    let conv = |rng: &mut crate::rng::Rng| testing::conv(rng, 3, 3, 3, Activation::None);
    let c1 = b.node("c1", conv(&mut rng), &[x]).unwrap();
    let r1 = b
        .node("r1", Op::Activation(Activation::Relu), &[c1])
        .unwrap();
    let c2 = b.node("c2", conv(&mut rng), &[r1]).unwrap();
    let k2 = b
        .node("k2", Op::Activation(Activation::RELU6), &[c2])
        .unwrap();
    let add = Op::Add {
        act: Activation::None,
    };
    let s = b.node("s", add, &[k2, c2]).unwrap();
    let c3 = b.node("c3", conv(&mut rng), &[s]).unwrap();
    let r3 = b
        .node("r3", Op::Activation(Activation::Relu), &[c3])
        .unwrap();
    let shared = b.build(&[r3, c3]).unwrap();
    let graphs = [
        (testing::chain_graph(&mut rng, 9), 3),
        (testing::block_graph(&mut rng, 8), 0),
        (shared, 1),
    ];
    for (i, (g, fused)) in graphs.iter().enumerate() {
        let (then, absorbed) = g.fusable_activations();
        assert_eq!(then.iter().flatten().count(), *fused, "graph {i}");
        assert_eq!(absorbed.iter().filter(|&&a| a).count(), *fused, "graph {i}");
        let dims = g.value(g.inputs()[0]).dims.clone();
        let x = Tensor::new(dims.clone(), rng.normal_vec(dims.iter().product(), 2.0)).unwrap();
        let xs = std::slice::from_ref(&x);
        let want = g.run_f32_visit(xs, |_, _| Ok(())).unwrap();
        assert_eq!(g.run_f32(xs).unwrap(), want, "graph {i}");
    }
}

/// A float run reuses the buffers its graph's last run left (`RunBuffers`), and gives the
/// bits of a fresh clone's run (no kept buffers), run after run on new inputs, on graphs
/// whose values grow and shrink (the buffers are truncated and grown), and with concurrent
/// runs of one graph.
#[test]
fn float_runs_reusing_the_last_runs_buffers_give_a_fresh_graphs_bits() {
    let mut rng = crate::rng::Rng::new(23);
    let graphs = [
        testing::chain_graph(&mut rng, 9),
        testing::block_graph(&mut rng, 8),
    ];
    let bits = |t: &[Tensor<f32>]| -> Vec<u32> {
        t.iter()
            .flat_map(|t| t.data.iter().map(|v| v.to_bits()))
            .collect()
    };
    for (i, g) in graphs.iter().enumerate() {
        let dims = g.value(g.inputs()[0]).dims.clone();
        let n: usize = dims.iter().product();
        for round in 0..3 {
            let x = Tensor::new(dims.clone(), rng.normal_vec(n, 2.0)).unwrap();
            let xs = std::slice::from_ref(&x);
            let want = bits(&g.clone().run_f32(xs).unwrap());
            assert_eq!(
                bits(&g.run_f32(xs).unwrap()),
                want,
                "graph {i} round {round}"
            );
            assert!(g.buffers.kept() > 0, "graph {i}: the run kept no buffer");
            std::thread::scope(|sc| {
                let runs: Vec<_> = (0..3)
                    .map(|_| sc.spawn(|| g.run_f32(xs).unwrap()))
                    .collect();
                for r in runs {
                    assert_eq!(bits(&r.join().unwrap()), want, "graph {i} round {round}");
                }
            });
        }
    }
}

#[test]
fn float_values_computed_in_place_equal_each_node_evaluated_alone() {
    let mut rng = crate::rng::Rng::new(5);
    let graphs = [
        testing::block_graph(&mut rng, 8),
        testing::chain_graph(&mut rng, 9),
    ];
    for g in &graphs {
        let dims = g.value(g.inputs()[0]).dims.clone();
        let x = Tensor::new(dims.clone(), rng.normal_vec(dims.iter().product(), 1.0)).unwrap();
        let mut seen: Vec<Option<Tensor<f32>>> = vec![None; g.values().len()];
        g.run_f32_visit(std::slice::from_ref(&x), |v, y| {
            seen[v.0] = Some(y.clone());
            Ok(())
        })
        .unwrap();
        for node in g.nodes() {
            let args: Vec<&Tensor<f32>> = (node.inputs.iter())
                .map(|v| seen[v.0].as_ref().unwrap())
                .collect();
            let out = &g.value(node.output).dims;
            let want = float::eval_node(node, None, &args, out).unwrap();
            let got = &seen[node.output.0].as_ref().unwrap().data;
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same && got.len() == want.len(), "node '{}'", node.name);
        }
    }
}

#[test]
fn float_avg_pool_divides_by_the_window_clipped_as_pytorch_does() {
    // 1x1x3x3 of ones, 3x3 window, stride 1, padding 1: the corner window holds 4 inputs and
    // 5 padding cells.
    let g = |count_include_pad, divisor_override| {
        let mut b = GraphBuilder::new();
        let x = b.input("x", &[1, 1, 3, 3]).unwrap();
        let op = Op::AvgPool2d {
            pool: Pool2dParams::square(3).stride(1).padding(1),
            count_include_pad,
            divisor_override,
        };
        let y = b.node("avg", op, &[x]).unwrap();
        let g = b.build(&[y]).unwrap();
        g.run_f32(&[t(&[1, 1, 3, 3], vec![1.0; 9])]).unwrap()[0]
            .data
            .clone()
    };
    assert_eq!(g(true, None)[0], 4.0 / 9.0);
    assert_eq!(g(true, None)[4], 1.0);
    assert_eq!(g(false, None)[0], 1.0);
    assert_eq!(g(false, Some(2))[0], 2.0);
}

#[test]
fn float_concat_interleaves_channels_per_batch() {
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[2, 1, 1, 2]).unwrap();
    let y = b.input("y", &[2, 2, 1, 2]).unwrap();
    let c = b.node("cat", Op::Concat { axis: 1 }, &[x, y]).unwrap();
    let g = b.build(&[c]).unwrap();
    let out = g
        .run_f32(&[
            t(&[2, 1, 1, 2], vec![1.0, 2.0, 3.0, 4.0]),
            t(
                &[2, 2, 1, 2],
                vec![5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0],
            ),
        ])
        .unwrap();
    assert_eq!(out[0].dims, [2, 3, 1, 2]);
    assert_eq!(
        out[0].data,
        [1.0, 2.0, 5.0, 6.0, 7.0, 8.0, 3.0, 4.0, 9.0, 10.0, 11.0, 12.0]
    );
}

#[test]
fn float_run_rejects_wrong_inputs_without_panicking() {
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[1, 1, 2, 2]).unwrap();
    let r = b.node("r", relu(), &[x]).unwrap();
    let g = b.build(&[r]).unwrap();
    assert!(matches!(g.run_f32(&[]), Err(Error::Graph { .. })));
    assert!(matches!(
        g.run_f32(&[t(&[1, 1, 1, 4], vec![0.0; 4])]),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        g.run_f32(&[t(&[1, 1, 2, 2], vec![0.0, f32::NAN, 0.0, 0.0])]),
        Err(Error::NonFinite { .. })
    ));
}

/// A random DAG: `n` nodes, each reading one or two earlier values of equal shape (ReLU, Add,
/// or Concat then a 1x1 max pool to bring the size back), plus some graph outputs.
fn random_graph() -> impl Strategy<Value = Graph> {
    (
        1usize..4,
        proptest::collection::vec((0u8..3, any::<u32>(), any::<u32>()), 1..24),
        any::<u64>(),
    )
        .prop_map(|(channels, picks, out_seed)| {
            let mut b = GraphBuilder::new();
            let x = b.input("x", &[1, channels, 3, 3]).unwrap();
            let mut same: Vec<ValueId> = vec![x];
            let mut all = vec![x];
            for (i, (kind, a, c)) in picks.into_iter().enumerate() {
                let u = same[a as usize % same.len()];
                let v = same[c as usize % same.len()];
                let name = format!("n{i}");
                let id = match kind {
                    0 => b.node(&name, relu(), &[u]).unwrap(),
                    1 => b.node(&name, add(), &[u, v]).unwrap(),
                    _ => {
                        let cat = b.node(&name, Op::Concat { axis: 1 }, &[u, v]).unwrap();
                        all.push(cat);
                        let w = Tensor::new(
                            vec![channels, 2 * channels, 1, 1],
                            vec![0.5; 2 * channels * channels],
                        )
                        .unwrap();
                        let conv = Op::Conv2d(Conv2dOp {
                            weight: w,
                            bias: None,
                            params: ConvParams::default(),
                            act: Activation::None,
                        });
                        b.node(&format!("{name}.proj"), conv, &[cat]).unwrap()
                    }
                };
                same.push(id);
                all.push(id);
            }
            let last = *all.last().unwrap();
            let extra = all[(out_seed as usize) % all.len()];
            let outs = if extra == last {
                vec![last]
            } else {
                vec![last, extra]
            };
            b.build(&outs).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn buffer_plan_never_shares_a_slot_between_live_values(g in random_graph()) {
        let plan = BufferPlan::new(&g);
        let n_nodes = g.nodes().len();
        // Live range of each value as [birth, death] in steps; inputs are born at step 0,
        // node i's output at step i + 1; a value dies after its last reader's step.
        let birth = |v: usize| if v < g.inputs().len() { 0 } else {
            1 + g.nodes().iter().position(|n| n.output.0 == v).unwrap()
        };
        let death = |v: usize| if g.outputs().iter().any(|o| o.0 == v) { n_nodes + 1 } else {
            match plan.last_use[v] { Some(i) => i + 1, None => birth(v) }
        };
        for a in 0..g.values().len() {
            let len = g.values()[a].dims.iter().product::<usize>();
            prop_assert!(plan.slot_len[plan.slot[a]] >= len);
            for b in a + 1..g.values().len() {
                if plan.slot[a] == plan.slot[b] {
                    let (ra, rb) = ((birth(a), death(a)), (birth(b), death(b)));
                    // Sharing is allowed only if one dies strictly before the other is born.
                    prop_assert!(ra.1 < rb.0 || rb.1 < ra.0,
                        "values {a} {ra:?} and {b} {rb:?} share slot {}", plan.slot[a]);
                }
            }
        }
        prop_assert!(plan.slot_len.len() <= g.values().len());
    }

    #[test]
    fn graph_new_from_shuffled_nodes_equals_the_builders_graph(g in random_graph(), seed in any::<u64>()) {
        let mut specs: Vec<NodeSpec> = g.nodes().iter().map(|n| NodeSpec {
            name: n.name.clone(),
            op: n.op.clone(),
            inputs: n.inputs.iter().map(|v| g.value(*v).name.clone()).collect(),
            output: g.value(n.output).name.clone(),
        }).collect();
        let mut rng = crate::rng::Rng::new(seed);
        for i in (1..specs.len()).rev() {
            specs.swap(i, rng.below(i + 1));
        }
        let outs: Vec<&str> = g.outputs().iter().map(|o| g.value(*o).name.as_str()).collect();
        let x = g.value(g.inputs()[0]);
        let h = Graph::new(&[(x.name.as_str(), &x.dims)], specs, &outs).unwrap();
        // Same values by name with the same dims, and a valid topological order.
        for v in g.values() {
            prop_assert_eq!(&h.value(h.find(&v.name).unwrap()).dims, &v.dims);
        }
        let mut defined = vec![false; h.values().len()];
        for &i in h.inputs() { defined[i.0] = true; }
        for n in h.nodes() {
            prop_assert!(n.inputs.iter().all(|v| defined[v.0]));
            defined[n.output.0] = true;
        }
        let x = Tensor::new(x.dims.clone(), (0..x.dims.iter().product::<usize>()).map(|i| i as f32 - 7.0).collect()).unwrap();
        prop_assert_eq!(g.run_f32(std::slice::from_ref(&x)).unwrap(), h.run_f32(&[x]).unwrap());
    }
}

#[test]
fn a_chain_reuses_two_buffers() {
    let mut b = GraphBuilder::new();
    let mut v = b.input("x", &[1, 4, 8, 8]).unwrap();
    for i in 0..10 {
        v = b.node(&format!("r{i}"), relu(), &[v]).unwrap();
    }
    let g = b.build(&[v]).unwrap();
    let plan = BufferPlan::new(&g);
    assert_eq!(plan.slot_len, [256, 256]);
    assert_eq!(plan.total_len(), 512);
}

/// ONNX (numpy) broadcasting: right-aligned axes equal or 1; each output element reads the
/// element its broadcast index names.
#[test]
fn broadcast_shapes_and_indices_follow_numpy() {
    use super::op::{broadcast_dims, broadcast_indices};
    assert_eq!(
        broadcast_dims(&[2, 3, 4, 4], &[2, 3, 1, 1]),
        Some(vec![2, 3, 4, 4])
    );
    assert_eq!(
        broadcast_dims(&[3, 1, 1], &[2, 1, 4, 5]),
        Some(vec![2, 3, 4, 5])
    );
    assert_eq!(broadcast_dims(&[2, 3], &[3, 2]), None);
    assert_eq!(broadcast_indices(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(broadcast_indices(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
    assert_eq!(
        broadcast_indices(&[2, 3], &[2, 3]),
        (0..6).collect::<Vec<_>>()
    );
}
