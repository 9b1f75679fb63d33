//! ONNX Runtime's `quantize_static` as a squint preset: squint calibrates a float graph the
//! way ORT's quantizer does and builds the [`QdqModel`] ORT would write, which then runs with
//! ORT's int8 formulas on any [`super::qdq::QdqBackend`] (reference, fast CPU, GPU).
//!
//! What ORT 1.32's tooling does (`onnxruntime/quantization`, `quant_utils.py`,
//! `base_quantizer.py`, `calibrate.py`), reproduced here:
//!
//! * **Calibration** (`CalibrationMethod.MinMax`): the minimum and maximum of every tensor over
//!   each batch (`ReduceMin` / `ReduceMax` over all axes), merged over batches by min / max.
//! * **Activations** (`QuantType.QUInt8`, asymmetric): `rmin = min(min, 0)`,
//!   `rmax = max(max, 0)`, `scale = (rmax − rmin) / 255` in float64, stored as float32;
//!   `zero_point = round_half_even(0 − rmin / scale)` with the float64 scale. A scale below
//!   `f32::MIN_POSITIVE` (an all-zero tensor) becomes 1.0 with zero point 0.
//! * **Which tensors**: every graph input and node output. A ReLU or Clip after a conv, gemm
//!   or add is removed and its producer takes the activation's output qparams (squint's
//!   importer fused it: the fused value is the activation's output); `MaxPool`,
//!   `AveragePool` and `Flatten`/`Reshape` outputs take their input's qparams
//!   (`QDQDirect8BitOp`; `GlobalAveragePool` has its own).
//! * **Weights** (`QuantType.QInt8`, symmetric, per output channel or per tensor):
//!   `absmax = max(|min(w, 0)|, |max(w, 0)|)`, `scale = f32(2·absmax / (qmax − qmin))` in
//!   float64 with `[qmin, qmax] = [−64, 64]` under `reduce_range` (7 bits), else
//!   `[−127, 127]`; `q = clip(round_half_even(f32(w / scale)), qmin, qmax)`, zero point 0.
//! * **Bias**: `bias_scale = f32(x_scale · w_scale)`, `q = round_half_even(f64(b) /
//!   f64(bias_scale))` clipped to int32.
//!
//! The float graph's values come from squint's f32 kernels, not MLAS's: a calibrated minimum
//! or maximum can differ from ORT's in its last bits, and so can a scale; the weights (which
//! depend on the float weights only) are ORT's exactly. `tests/qdq_models.rs` compares both
//! with the models `quantize_static` wrote for the tiny ResNet and MobileNet.

use crate::error::{Error, Result};
use crate::graph::{Activation, Graph, NodeSpec, Op};
use crate::io::onnx_qdq::{QdqModel, QdqWeight};
use crate::quant::{QDtype, QParams};
use crate::tensor::Tensor;

/// The `quantize_static` arguments the preset follows (activations are always uint8,
/// weights int8 symmetric, calibration MinMax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrtQuantOptions {
    /// `per_channel`: one weight scale per output channel (else one per tensor).
    pub per_channel: bool,
    /// `reduce_range`: 7-bit weights (`[-64, 64]`), exact on every x86 instruction set.
    pub reduce_range: bool,
}

impl Default for OrtQuantOptions {
    /// Per-channel 7-bit weights: what ORT's documentation recommends on x86.
    fn default() -> Self {
        OrtQuantOptions {
            per_channel: true,
            reduce_range: true,
        }
    }
}

/// ORT's uint8 activation qparams of a tensor calibrated to `[min, max]`.
pub fn activation_qparams(min: f32, max: f32) -> Result<QParams> {
    if !min.is_finite() || !max.is_finite() || min > max {
        return Err(Error::InvalidParameter(format!(
            "calibrated range [{min}, {max}] is not a finite interval"
        )));
    }
    let (rmin, rmax) = (min.min(0.0) as f64, max.max(0.0) as f64);
    let scale = (rmax - rmin) / 255.0;
    if scale < f32::MIN_POSITIVE as f64 {
        return QParams::new(1.0, 0, QDtype::QUInt8);
    }
    let zp = (0.0 - rmin / scale).round_ties_even().clamp(0.0, 255.0) as i32;
    QParams::new(scale as f32, zp, QDtype::QUInt8)
}

/// ORT's symmetric int8 quantization of `w` (`[c_out, ...]`, row-major) with `bias` (one per
/// output channel) for an input scale `x_scale`.
pub fn quantize_weight(
    w: &Tensor<f32>,
    bias: Option<&[f32]>,
    x_scale: f32,
    opts: OrtQuantOptions,
) -> Result<QdqWeight> {
    crate::quant::check_finite(&w.data, "weight")?;
    let c_out = *w.dims.first().unwrap_or(&0);
    if c_out == 0 || !w.data.len().is_multiple_of(c_out) {
        return Err(Error::Shape(format!("weight dims {:?}", w.dims)));
    }
    let (qmin, qmax) = if opts.reduce_range {
        (-64i32, 64i32)
    } else {
        (-127, 127)
    };
    let per = w.data.len() / c_out;
    let blocks: Vec<&[f32]> = if opts.per_channel {
        w.data.chunks_exact(per).collect()
    } else {
        vec![&w.data[..]]
    };
    let scales: Vec<f32> = blocks
        .iter()
        .map(|b| {
            let lo = b.iter().copied().fold(0f32, f32::min);
            let hi = b.iter().copied().fold(0f32, f32::max);
            let absmax = lo.abs().max(hi.abs()) as f64;
            let s = 2.0 * absmax / (qmax - qmin) as f64;
            if s < f32::MIN_POSITIVE as f64 {
                1.0
            } else {
                s as f32
            }
        })
        .collect();
    let scale_of = |i: usize| scales[if opts.per_channel { i / per } else { 0 }];
    let data: Vec<u8> = w
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| ((v / scale_of(i)).round_ties_even() as i32).clamp(qmin, qmax) as i8 as u8)
        .collect();
    let bias = match bias {
        None => None,
        Some(b) => {
            crate::quant::check_finite(b, "bias")?;
            if b.len() != c_out {
                return Err(Error::Shape(format!(
                    "{} bias values for {c_out} output channels",
                    b.len()
                )));
            }
            Some(
                b.iter()
                    .enumerate()
                    .map(|(o, &v)| {
                        let s = x_scale * scales[if opts.per_channel { o } else { 0 }];
                        (v as f64 / s as f64)
                            .round_ties_even()
                            .clamp(i32::MIN as f64, i32::MAX as f64) as i32
                    })
                    .collect(),
            )
        }
    };
    Ok(QdqWeight {
        data: data.into(),
        dtype: QDtype::QInt8,
        scales: scales.clone(),
        zero_points: vec![0; scales.len()],
        bias,
    })
}

/// Calibrates `graph` on `batches` (each a list of graph inputs) the way ORT's MinMax
/// calibrator does and quantizes it as `quantize_static` would with `opts`: the QDQ model
/// ORT would write, to run with [`super::qdq::run`]. `progress(done, total)` follows the
/// batches.
pub fn quantize(
    graph: &Graph,
    batches: &[Vec<Tensor<f32>>],
    opts: OrtQuantOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<QdqModel> {
    if batches.is_empty() {
        return Err(Error::InvalidParameter(
            "the ort preset needs calibration data (at least one batch)".into(),
        ));
    }
    let fused = with_removable_activations_fused(graph)?;
    let graph = &fused;
    let n = graph.values().len();
    let mut ranges: Vec<Option<(f32, f32)>> = vec![None; n];
    for (i, inputs) in batches.iter().enumerate() {
        graph.run_f32_visit(inputs, |id, t| {
            let lo = t.data.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = t.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let r = &mut ranges[id.0];
            *r = Some(match *r {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
            Ok(())
        })?;
        progress(i + 1, batches.len());
    }
    let mut qparams: Vec<Option<QParams>> = vec![None; n];
    for &id in graph.inputs() {
        qparams[id.0] = Some(qparams_of(graph, &ranges, id.0)?);
    }
    let mut weights = Vec::with_capacity(graph.nodes().len());
    for node in graph.nodes() {
        let out = node.output.0;
        let inherited = matches!(
            node.op,
            Op::MaxPool2d(_) | Op::AvgPool2d { .. } | Op::Reshape { .. }
        );
        qparams[out] = Some(if inherited {
            qparams[node.inputs[0].0].expect("inputs come first")
        } else {
            qparams_of(graph, &ranges, out)?
        });
        let x_scale = qparams[node.inputs[0].0].expect("inputs come first").scale;
        let at = |e: Error| Error::Graph {
            at: format!("node '{}' ({})", node.name, node.op.kind()),
            message: e.to_string(),
        };
        weights.push(match &node.op {
            Op::Conv2d(c) => {
                Some(quantize_weight(&c.weight, c.bias.as_deref(), x_scale, opts).map_err(at)?)
            }
            Op::Linear(l) => {
                Some(quantize_weight(&l.weight, l.bias.as_deref(), x_scale, opts).map_err(at)?)
            }
            _ => None,
        });
    }
    let qparams: Vec<QParams> = qparams
        .into_iter()
        .map(|q| q.expect("every value is an input or a node output"))
        .collect();
    Ok(QdqModel {
        graph: without_activations(graph)?,
        qparams,
        weights,
    })
}

/// `graph` with the fused ReLU / Clip of its convs, gemms and adds removed, as ORT's quantizer
/// removes them (`QDQRemovableActivation`): the fused value was calibrated after the
/// activation, and the requantization's clamp to its range does the rest. ORT removes an
/// activation whatever its bounds, and so does squint: where the quantized range reaches
/// past a bound (a `Clip(0.5, 6)`, whose range starts at 0 as every range holds 0; or a
/// negative minimum that rounds to a slightly lower zero point), the int8 model keeps values
/// beyond it, as ORT's own model does (checked with `quantize_static` on a `Clip(0.5, 6)`).
fn without_activations(graph: &Graph) -> Result<Graph> {
    let name = |id: crate::graph::ValueId| graph.value(id).name.clone();
    let mut nodes = Vec::with_capacity(graph.nodes().len());
    for node in graph.nodes() {
        let mut op = node.op.clone();
        let act = match &mut op {
            Op::Conv2d(c) => Some(&mut c.act),
            Op::Linear(l) => Some(&mut l.act),
            Op::Add { act } => Some(act),
            _ => None,
        };
        if let Some(act) = act {
            *act = Activation::None;
        }
        nodes.push(NodeSpec {
            name: node.name.clone(),
            op,
            inputs: node.inputs.iter().map(|&v| name(v)).collect(),
            output: name(node.output),
        });
    }
    let g = rebuilt(graph, nodes)?;
    let same_order = g
        .values()
        .iter()
        .zip(graph.values())
        .all(|(a, b)| a.name == b.name);
    if !same_order || g.values().len() != graph.values().len() {
        return Err(Error::Graph {
            at: "graph".into(),
            message: "rebuilding it without activations changed its value order".into(),
        });
    }
    Ok(g)
}

/// `graph` with each standalone ReLU or Clip that ORT's quantizer removes fused into the conv,
/// gemm or add before it, as squint's importer fuses a conv's ReLU. ORT removes an activation
/// (`QDQRemovableActivation`, `try_replacing_upstream_output`) whose input is read by it
/// alone and is neither a graph input nor a graph output: the producer's output takes the
/// activation's output name and qparams, calibrated after the activation. squint's importer
/// keeps a `Clip` (ReLU6) as its own node, as PyTorch eager has no fused quantized module for
/// it; this is where the ORT preset fuses it. Activations after other ops (or after an op
/// with a fused activation already) stay, and [`super::qdq`] refuses them naming the node.
fn with_removable_activations_fused(graph: &Graph) -> Result<Graph> {
    // fused[p]: the activation node fused into node p. (A graph input has no producer.)
    let mut fused: Vec<Option<usize>> = vec![None; graph.nodes().len()];
    let mut absorbed = vec![false; graph.nodes().len()];
    let fusable = |op: &Op| match op {
        Op::Conv2d(c) => c.act == Activation::None,
        Op::Linear(l) => l.act == Activation::None,
        Op::Add { act } => *act == Activation::None,
        _ => false,
    };
    for (p, i) in graph.sole_activation_readers(fusable) {
        fused[p] = Some(i);
        absorbed[i] = true;
    }
    if !absorbed.contains(&true) {
        return Ok(graph.clone());
    }
    let name = |id: crate::graph::ValueId| graph.value(id).name.clone();
    let mut nodes = Vec::with_capacity(graph.nodes().len());
    for (j, node) in graph.nodes().iter().enumerate() {
        if absorbed[j] {
            continue;
        }
        let mut op = node.op.clone();
        let mut output = name(node.output);
        if let Some(a) = fused[j] {
            let act_node = &graph.nodes()[a];
            let Op::Activation(act) = act_node.op else {
                unreachable!("only activations are fused")
            };
            match &mut op {
                Op::Conv2d(c) => c.act = act,
                Op::Linear(l) => l.act = act,
                Op::Add { act: a } => *a = act,
                _ => unreachable!("only convs, gemms and adds take an activation"),
            }
            output = name(act_node.output);
        }
        nodes.push(NodeSpec {
            name: node.name.clone(),
            op,
            inputs: node.inputs.iter().map(|&v| name(v)).collect(),
            output,
        });
    }
    rebuilt(graph, nodes)
}

/// A graph of `nodes` with `graph`'s inputs and outputs.
fn rebuilt(graph: &Graph, nodes: Vec<NodeSpec>) -> Result<Graph> {
    let name = |id: crate::graph::ValueId| graph.value(id).name.clone();
    let inputs: Vec<(String, Vec<usize>)> = graph
        .inputs()
        .iter()
        .map(|&v| (name(v), graph.value(v).dims.clone()))
        .collect();
    let inputs: Vec<(&str, &[usize])> = inputs
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let outputs: Vec<String> = graph.outputs().iter().map(|&v| name(v)).collect();
    let outputs: Vec<&str> = outputs.iter().map(|s| s.as_str()).collect();
    Graph::new(&inputs, nodes, &outputs)
}

fn qparams_of(graph: &Graph, ranges: &[Option<(f32, f32)>], id: usize) -> Result<QParams> {
    let name = &graph.values()[id].name;
    let (lo, hi) = ranges[id].ok_or_else(|| Error::Graph {
        at: format!("value '{name}'"),
        message: "saw no calibration data".into(),
    })?;
    activation_qparams(lo, hi).map_err(|e| Error::Graph {
        at: format!("value '{name}'"),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain graph's three activations each follow a conv read by nothing else: each is
    /// fused (the conv's output takes the activation's name), and the float outputs equal the
    /// unfused graph's. An activation whose input has another reader, is a
    /// graph output or comes from another op stays, and running it with ORT's formulas is an
    /// error naming it.
    #[test]
    fn activations_ort_removes_fuse_into_their_producer_and_no_others() {
        use crate::graph::testing::{block_graph, chain_graph, conv};
        use crate::graph::GraphBuilder;
        let mut rng = crate::rng::Rng::new(7);
        let g = chain_graph(&mut rng, 6);
        let f = with_removable_activations_fused(&g).unwrap();
        let kinds: Vec<(&str, Activation)> = f
            .nodes()
            .iter()
            .map(|n| match &n.op {
                Op::Conv2d(c) => (f.value(n.output).name.as_str(), c.act),
                op => (f.value(n.output).name.as_str(), op_act(op)),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("clip1", Activation::RELU6),
                ("relu", Activation::Relu),
                (
                    "clip2",
                    Activation::Clip {
                        min: -1.0,
                        max: 1.0
                    }
                ),
                ("add", Activation::None),
            ]
        );
        let x = Tensor::new(vec![2, 3, 6, 6], rng.normal_vec(216, 2.0)).unwrap();
        let xs = std::slice::from_ref(&x);
        assert_eq!(f.run_f32(xs).unwrap(), g.run_f32(xs).unwrap());

        // A conv read by its clip and by another node, a conv that is a graph output, a
        // clip after a concat and a relu after a clip: nothing fused.
        let mut b = GraphBuilder::new();
        let x = b.input("x", &[1, 3, 4, 4]).unwrap();
        let c1 = b
            .node("c1", conv(&mut rng, 3, 3, 1, Activation::None), &[x])
            .unwrap();
        let k1 = b
            .node("k1", Op::Activation(Activation::RELU6), &[c1])
            .unwrap();
        let add = Op::Add {
            act: Activation::None,
        };
        let s = b.node("s", add, &[k1, c1]).unwrap();
        let c2 = b
            .node("c2", conv(&mut rng, 3, 3, 1, Activation::None), &[s])
            .unwrap();
        let r = b
            .node("r", Op::Activation(Activation::Relu), &[c2])
            .unwrap();
        let two = b.build(&[r, c2]).unwrap();
        assert_eq!(with_removable_activations_fused(&two).unwrap(), two);
        let g = block_graph(&mut rng, 6);
        let f = with_removable_activations_fused(&g).unwrap();
        assert_eq!(f, g, "the clip after a concat and the relu after it stay");
        let x = Tensor::new(vec![2, 3, 6, 6], rng.normal_vec(216, 1.0)).unwrap();
        let m = quantize(
            &g,
            &[vec![x.clone()]],
            OrtQuantOptions::default(),
            |_, _| {},
        )
        .unwrap();
        let e = crate::pipeline::qdq::run_reference(
            &m,
            &[x],
            crate::pipeline::qdq::native_add_kernel(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'clip'"), "{e}");
    }

    fn op_act(op: &Op) -> Activation {
        match op {
            Op::Activation(a) | Op::Add { act: a } => *a,
            Op::Linear(l) => l.act,
            _ => Activation::None,
        }
    }

    #[test]
    fn activation_qparams_follow_compute_scale_zp() {
        // rmin = -1, rmax = 3: scale 4/255 (float64, stored as f32), zp = round(255/4).
        let qp = activation_qparams(-1.0, 3.0).unwrap();
        assert_eq!(qp.scale, (4.0f64 / 255.0) as f32);
        assert_eq!(qp.zero_point, 64);
        // The range always holds 0; an all-zero tensor gets scale 1, zero point 0.
        assert_eq!(activation_qparams(2.0, 5.0).unwrap().zero_point, 0);
        let z = activation_qparams(0.0, 0.0).unwrap();
        assert_eq!((z.scale, z.zero_point), (1.0, 0));
        assert!(activation_qparams(f32::NAN, 1.0).is_err());
        assert!(activation_qparams(0.0, f32::INFINITY).is_err());
    }

    #[test]
    fn weights_are_symmetric_with_reduce_range_and_biases_use_the_product_scale() {
        let w = Tensor::new(vec![2, 2], vec![1.0, -0.5, 0.0, 0.0]).unwrap();
        let opts = OrtQuantOptions {
            per_channel: true,
            reduce_range: true,
        };
        let q = quantize_weight(&w, Some(&[0.25, 1.0]), 0.5, opts).unwrap();
        assert_eq!(q.scales, vec![(2.0f64 / 128.0) as f32, 1.0]);
        assert_eq!(q.data[..], [64, (-32i8) as u8, 0, 0]);
        assert_eq!(q.zero_points, vec![0, 0]);
        // bias / (0.5 · scale): 0.25 / (0.5/64) = 32; 1.0 / 0.5 = 2.
        assert_eq!(q.bias, Some(vec![32, 2]));
        let full = OrtQuantOptions {
            per_channel: false,
            reduce_range: false,
        };
        let q = quantize_weight(&w, None, 0.5, full).unwrap();
        assert_eq!(q.scales, vec![(2.0f64 / 254.0) as f32]);
        assert_eq!(q.data[0], 127);
        assert!(quantize_weight(&w, Some(&[1.0]), 0.5, full).is_err());
    }

    #[test]
    fn no_calibration_data_is_an_error() {
        let mut b = crate::graph::GraphBuilder::new();
        let x = b.input("x", &[1, 1, 2, 2]).unwrap();
        let y = b
            .node(
                "relu",
                Op::Add {
                    act: Activation::None,
                },
                &[x, x],
            )
            .unwrap();
        let g = b.build(&[y]).unwrap();
        let e = quantize(&g, &[], OrtQuantOptions::default(), |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("calibration data"), "{e}");
    }
}
