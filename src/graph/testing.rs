//! Graphs shared by squint's own tests (hidden from the docs).

use super::{Activation, Conv2dOp, Graph, GraphBuilder, LinearOp, Op, Pool2dParams, ValueId};
use crate::rng::Rng;
use crate::shape::ConvParams;
use crate::tensor::Tensor;

/// A square `k`×`k` conv from `i` to `o` channels (random weights and bias, "same" padding)
/// followed by `act`.
pub fn conv(rng: &mut Rng, o: usize, i: usize, k: usize, act: Activation) -> Op {
    Op::Conv2d(Conv2dOp {
        weight: Tensor::new(vec![o, i, k, k], rng.normal_vec(o * i * k * k, 0.3))
            .expect("the weight dims match"),
        bias: Some(rng.normal_vec(o, 0.1)),
        params: ConvParams::default().padding(k / 2),
        act,
    })
}

/// A chain of convs whose outputs go straight to activations, over a `2×3×hw×hw` input:
/// `c1` (3x3) → `clip1` (ReLU6 as a clip) → `c2` (1x1) → `relu` → `c3` (3x3) → `clip2` (to
/// [-1, 1]), and `add` of `clip2` and `clip1` (the output): what a GPU runs without leaving
/// the device, then an op on the host.
pub fn chain_graph(rng: &mut Rng, hw: usize) -> Graph {
    let node = |b: &mut GraphBuilder, name: &str, op: Op, inputs: &[ValueId]| {
        b.node(name, op, inputs).expect("a valid node")
    };
    let clip = |min, max| Op::Activation(Activation::Clip { min, max });
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[2, 3, hw, hw]).expect("a valid input");
    let c1 = node(&mut b, "c1", conv(rng, 8, 3, 3, Activation::None), &[x]);
    let k1 = node(&mut b, "clip1", clip(0.0, 6.0), &[c1]);
    let c2 = node(&mut b, "c2", conv(rng, 8, 8, 1, Activation::None), &[k1]);
    let r = node(&mut b, "relu", Op::Activation(Activation::Relu), &[c2]);
    let c3 = node(&mut b, "c3", conv(rng, 8, 8, 3, Activation::None), &[r]);
    let k2 = node(&mut b, "clip2", clip(-1.0, 1.0), &[c3]);
    let add = Op::Add {
        act: Activation::None,
    };
    let y = node(&mut b, "add", add, &[k2, k1]);
    b.build(&[y]).expect("a valid graph")
}

/// A residual block with pools, a concat and a head, over a `2×3×hw×hw` input: every op kind
/// (convs with and without a fused ReLU, add + ReLU, max and average pools, concat, clip, a
/// separate ReLU, adaptive average pool, flatten, linear + ReLU), nodes named `c1`, `c2`,
/// `add`, `mp`, `ap`, `cat`, `clip`, `relu`, `gap`, `flat`, `fc`.
pub fn block_graph(rng: &mut Rng, hw: usize) -> Graph {
    let node = |b: &mut GraphBuilder, name: &str, op: Op, inputs: &[ValueId]| {
        b.node(name, op, inputs).expect("a valid node")
    };
    let mut b = GraphBuilder::new();
    let x = b.input("x", &[2, 3, hw, hw]).expect("a valid input");
    let c1 = node(&mut b, "c1", conv(rng, 3, 3, 3, Activation::Relu), &[x]);
    let c2 = node(&mut b, "c2", conv(rng, 3, 3, 1, Activation::None), &[c1]);
    let add = Op::Add {
        act: Activation::Relu,
    };
    let s = node(&mut b, "add", add, &[c2, x]);
    let pool = Pool2dParams::square(3).stride(2).padding(1);
    let mp = node(&mut b, "mp", Op::MaxPool2d(pool), &[s]);
    let avg = Op::AvgPool2d {
        pool,
        count_include_pad: false,
        divisor_override: None,
    };
    let ap = node(&mut b, "ap", avg, &[c1]);
    let cat = node(&mut b, "cat", Op::Concat { axis: 1 }, &[mp, ap]);
    let clip = Op::Activation(Activation::Clip { min: 0.0, max: 2.0 });
    let clip = node(&mut b, "clip", clip, &[cat]);
    let relu = node(&mut b, "relu", Op::Activation(Activation::Relu), &[clip]);
    let gap = Op::AdaptiveAvgPool2d { output: [1, 1] };
    let gap = node(&mut b, "gap", gap, &[relu]);
    let flat = node(&mut b, "flat", Op::Flatten { start_dim: 1 }, &[gap]);
    let fc = Op::Linear(LinearOp {
        weight: Tensor::new(vec![5, 6], rng.normal_vec(30, 0.3)).expect("5x6"),
        bias: Some(rng.normal_vec(5, 0.1)),
        act: Activation::Relu,
    });
    let y = node(&mut b, "fc", fc, &[flat]);
    b.build(&[y]).expect("a valid graph")
}
