//! Prepare and calibrate a [`Graph`]: an observer at every quantization point, placed where
//! PyTorch eager static quantization places them.
//!
//! Placement (PyTorch eager after `fuse_modules`, with `QuantStub` at the inputs and
//! `FloatFunctional` for add and cat):
//!
//! | value | qparams |
//! |---|---|
//! | a graph input | its own observer (`QuantStub`) |
//! | output of Conv2d (+ fused ReLU), Linear (+ fused ReLU) | its own observer (the fused module's) |
//! | output of Add (+ ReLU), Concat | its own observer (`FloatFunctional.add` / `add_relu` / `cat`) |
//! | output of MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten/Reshape, ReLU, Clip | its input's: these run on quantized tensors without an observer |
//!
//! As in PyTorch 2.15 (and [`crate::pipeline::PreparedModel`]), the observer of a conv or
//! linear with a fused ReLU is fed twice per batch; only the moving-average observer notices.

use super::super::convert::ConvertOptions;
use super::super::qconfig::QConfig;
use super::super::quantized::PointSource;
use crate::error::{Error, Result};
use crate::graph::{Activation, Graph, Op, ValueId};
use crate::observers::Observer;
use crate::quant::{self, QParams};
use crate::tensor::Tensor;

/// Whether a node's output has its own observer (see the [module docs](self)).
pub fn has_observer(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv2d(_) | Op::Linear(_) | Op::Add { .. } | Op::Concat { .. }
    )
}

/// Fails for fused activations PyTorch eager has no quantized module for.
fn check_fusable(node: &crate::graph::Node) -> Result<()> {
    let act = match &node.op {
        Op::Conv2d(c) => c.act,
        Op::Linear(l) => l.act,
        Op::Add { act } => *act,
        _ => Activation::None,
    };
    if matches!(act, Activation::Clip { .. }) {
        return Err(Error::Graph {
            at: format!("node '{}' ({})", node.name, node.op.kind()),
            message:
                "a fused Clip/ReLU6 has no quantized PyTorch module; keep the Clip as its own node"
                    .into(),
        });
    }
    Ok(())
}

/// A graph with an observer at every quantization point, ready for calibration.
#[derive(Debug)]
pub struct PreparedGraph {
    pub(super) graph: Graph,
    pub(super) qconfig: QConfig,
    /// One entry per value: its observer, or `None` for values that inherit their qparams.
    pub(super) observers: Vec<Option<Box<dyn Observer>>>,
    batches: usize,
}

impl PreparedGraph {
    /// Places the observers (see the [module docs](self)).
    pub fn new(graph: Graph, qconfig: QConfig) -> Result<Self> {
        super::engine_of(&qconfig)?;
        let mut observers: Vec<Option<Box<dyn Observer>>> =
            (0..graph.values().len()).map(|_| None).collect();
        let build = |v: ValueId| {
            qconfig
                .activation
                .clone()
                .label(&graph.value(v).name)
                .build()
        };
        for &i in graph.inputs() {
            observers[i.0] = Some(build(i)?);
        }
        for n in graph.nodes() {
            check_fusable(n)?;
            if has_observer(&n.op) {
                observers[n.output.0] = Some(build(n.output)?);
            }
        }
        Ok(PreparedGraph {
            graph,
            qconfig,
            observers,
            batches: 0,
        })
    }

    /// The float graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The qconfig.
    pub fn qconfig(&self) -> &QConfig {
        &self.qconfig
    }

    /// Batches calibrated so far.
    pub fn batches_seen(&self) -> usize {
        self.batches
    }

    /// The quantization points with their observers, in value order.
    pub fn observers(&self) -> impl Iterator<Item = (&str, &dyn Observer)> {
        self.observers
            .iter()
            .enumerate()
            .filter_map(|(i, o)| Some((self.graph.values()[i].name.as_str(), o.as_deref()?)))
    }

    /// Runs one float batch (one tensor per graph input) and feeds every observer. A batch that
    /// fails (wrong dims, NaN, a non-finite intermediate) changes no observer.
    pub fn calibrate(&mut self, inputs: &[Tensor<f32>]) -> Result<()> {
        let mut seen: Vec<(ValueId, Tensor<f32>)> = Vec::new();
        let observed = |v: ValueId| self.observers[v.0].is_some();
        self.graph.run_f32_visit(inputs, |v, t| {
            if observed(v) {
                quant::check_finite(&t.data, &self.graph.value(v).name)?;
                seen.push((v, t.clone()));
            }
            Ok(())
        })?;
        let twice: Vec<ValueId> = self
            .graph
            .nodes()
            .iter()
            .filter(|n| match &n.op {
                Op::Conv2d(c) => c.act == Activation::Relu,
                Op::Linear(l) => l.act == Activation::Relu,
                _ => false,
            })
            .map(|n| n.output)
            .collect();
        for (v, t) in seen {
            let name = self.graph.value(v).name.clone();
            let obs = self.observers[v.0]
                .as_mut()
                .expect("only observed values are kept");
            obs.observe(&t.data, &name)?;
            if twice.contains(&v) {
                obs.observe(&t.data, &name)?;
            }
        }
        self.batches += 1;
        Ok(())
    }

    /// Calibrates on every batch (each a list with one tensor per graph input), reporting
    /// `(done, total)` after each.
    pub fn calibrate_all_with(
        &mut self,
        batches: &[Vec<Tensor<f32>>],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<()> {
        for (i, b) in batches.iter().enumerate() {
            self.calibrate(b)?;
            progress(i + 1, batches.len());
        }
        Ok(())
    }

    /// The qparams of every value: observed (or pinned by value name, or PyTorch's uncalibrated
    /// default if `opts.allow_uncalibrated`), then inherited along the graph. Also returns where
    /// each observed point's qparams came from and the warnings for uncalibrated points.
    #[allow(clippy::type_complexity)]
    pub(super) fn point_qparams(
        &self,
        opts: &ConvertOptions,
    ) -> Result<(Vec<QParams>, Vec<Option<PointSource>>, Vec<String>)> {
        let dtype = self.qconfig.activation.dtype;
        let names: Vec<&str> = self
            .graph
            .values()
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        if let Some(p) = opts.pinned.keys().find(|p| !names.contains(&p.as_str())) {
            return Err(Error::InvalidParameter(format!(
                "pinned qparams name '{p}', which is not a value of the graph"
            )));
        }
        let uncalibrated: Vec<String> = self
            .observers()
            .filter(|(n, o)| o.batches_seen() == 0 && !opts.pinned.contains_key(*n))
            .map(|(n, _)| n.to_string())
            .collect();
        if !uncalibrated.is_empty() && !opts.allow_uncalibrated {
            return Err(Error::UncalibratedPoints {
                points: uncalibrated,
            });
        }
        let mut warnings = Vec::new();
        let mut qps: Vec<Option<QParams>> = vec![None; names.len()];
        let mut sources = vec![None; names.len()];
        for (i, obs) in self.observers.iter().enumerate() {
            let Some(obs) = obs else { continue };
            let name = names[i];
            let (qp, source) = if let Some(&(s, z)) = opts.pinned.get(name) {
                let qp = QParams::new(s, z, dtype).map_err(|e| {
                    Error::InvalidParameter(format!("pinned qparams of '{name}': {e}"))
                })?;
                (qp, PointSource::Pinned)
            } else if obs.batches_seen() == 0 {
                let qp = obs.qparams_or_uncalibrated_default();
                warnings.push(format!(
                    "warning: '{name}' saw no calibration data; using PyTorch's uncalibrated default scale {} / zero_point {} — expect large errors",
                    qp.scale, qp.zero_point
                ));
                (qp, PointSource::Uncalibrated)
            } else {
                (obs.qparams()?, PointSource::Observed)
            };
            qps[i] = Some(qp);
            sources[i] = Some(source);
        }
        for n in self.graph.nodes() {
            if qps[n.output.0].is_none() {
                if let Some(&(s, z)) = opts.pinned.get(names[n.output.0]) {
                    return Err(Error::InvalidParameter(format!(
                        "'{}' has no observer (its {} keeps its input's qparams), so its qparams ({s}, {z}) cannot be pinned",
                        names[n.output.0],
                        n.op.kind()
                    )));
                }
                qps[n.output.0] = qps[n.inputs[0].0];
            }
        }
        let qps = qps
            .into_iter()
            .map(|q| q.expect("every value is an input or a node output"))
            .collect();
        Ok((qps, sources, warnings))
    }
}
