//! Graph models: a DAG of named values, each produced by one node (or a graph input) and
//! consumed by any number of nodes.
//!
//! A [`Graph`] is built from nodes in any order ([`Graph::new`], as an ONNX file lists them) or
//! with a [`GraphBuilder`]; either way it is checked once, up front:
//!
//! * every value has exactly one producer (a graph input or one node), and every name is unique;
//! * the nodes form no cycle: they are kept in a topological order (Kahn's algorithm, ties
//!   broken by the order given, so a chain keeps its order);
//! * every node's inputs fit its op: the output dims of every value are inferred
//!   ([`Op::output_dims`]) and a misfit is an [`Error::Graph`] naming the node and its op.
//!
//! Nothing here runs on a device: [`plan`] computes when each value dies and which buffer it
//! can reuse, [`float`] evaluates the graph in f32 on the CPU (the calibration path).
//!
//! ```
//! use squint::graph::{Activation, GraphBuilder, Op, Pool2dParams};
//! use squint::tensor::Tensor;
//!
//! # fn main() -> squint::Result<()> {
//! let mut b = GraphBuilder::new();
//! let x = b.input("x", &[1, 4, 8, 8])?;
//! let p = b.node("pool", Op::MaxPool2d(Pool2dParams::square(2)), &[x])?;
//! let y = b.node("sum", Op::Add { act: Activation::Relu }, &[p, p])?;
//! let g = b.build(&[y])?;
//! assert_eq!(g.value(y).dims, [1, 4, 4, 4]);
//! let out = g.run_f32(&[Tensor::new(vec![1, 4, 8, 8], vec![1.0; 256])?])?;
//! assert!(out[0].data.iter().all(|&v| v == 2.0));
//! # Ok(()) }
//! ```

pub mod float;
mod op;
pub mod plan;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;

pub use op::{Activation, Conv2dOp, LinearOp, Op, Pool2dParams};
pub use plan::BufferPlan;

use crate::error::{Error, Result};
use op::node_error;
use std::collections::HashMap;

/// Index of a value in its [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

/// A named tensor of the graph and its inferred dims.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// Unique name.
    pub name: String,
    /// Dims, outermost first.
    pub dims: Vec<usize>,
}

/// One node: an op applied to input values, giving one output value.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique name (PyTorch module path or ONNX node name).
    pub name: String,
    /// The operator.
    pub op: Op,
    /// Input values, in the op's order.
    pub inputs: Vec<ValueId>,
    /// The output value.
    pub output: ValueId,
}

/// A node as given to [`Graph::new`]: values referred to by name.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// The operator.
    pub op: Op,
    /// Names of the input values.
    pub inputs: Vec<String>,
    /// Name of the output value.
    pub output: String,
}

/// A checked DAG in topological order. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    values: Vec<Value>,
    nodes: Vec<Node>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    /// Each conv's float weights packed for the fast kernels, built on the first float run.
    packed: float::PackedConvs,
    /// The buffers a float run left, for the next run's outputs.
    buffers: float::RunBuffers,
}

impl Graph {
    /// Builds and checks a graph from named inputs (with dims), nodes in any order and the names
    /// of its outputs.
    pub fn new(
        inputs: &[(&str, &[usize])],
        nodes: Vec<NodeSpec>,
        outputs: &[&str],
    ) -> Result<Self> {
        let mut b = GraphBuilder::new();
        for (name, dims) in inputs {
            b.input(name, dims)?;
        }
        // Producer of every node output, to order the nodes.
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if b.ids.contains_key(n.output.as_str()) || producer.insert(&n.output, i).is_some() {
                return Err(value_error(&n.output, "is produced more than once"));
            }
        }
        // Kahn's algorithm; among ready nodes, the one given first goes first.
        let mut missing: Vec<usize> = nodes
            .iter()
            .map(|n| {
                n.inputs
                    .iter()
                    .filter(|v| producer.contains_key(v.as_str()))
                    .count()
            })
            .collect();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for v in &n.inputs {
                if producer.contains_key(v.as_str()) {
                    consumers.entry(v).or_default().push(i);
                }
            }
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..nodes.len()).filter(|&i| missing[i] == 0).collect();
        let mut order = Vec::with_capacity(nodes.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &c in consumers
                .get(nodes[i].output.as_str())
                .into_iter()
                .flatten()
            {
                missing[c] -= 1;
                if missing[c] == 0 {
                    ready.insert(c);
                }
            }
        }
        if order.len() < nodes.len() {
            let stuck: Vec<&str> = (0..nodes.len())
                .filter(|&i| missing[i] > 0)
                .map(|i| nodes[i].name.as_str())
                .collect();
            return Err(Error::Graph {
                at: "graph".into(),
                message: format!("the nodes form a cycle through: {}", stuck.join(", ")),
            });
        }
        let mut slots: Vec<Option<NodeSpec>> = nodes.into_iter().map(Some).collect();
        for i in order {
            let n = slots[i].take().expect("each node is ordered once");
            let ids = n
                .inputs
                .iter()
                .map(|v| {
                    b.ids.get(v.as_str()).copied().ok_or_else(|| {
                        node_error(&n.name, n.op.kind(), format!("input '{v}' is not defined"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            b.node_named(&n.name, n.op, &ids, &n.output)?;
        }
        let outs = outputs
            .iter()
            .map(|o| {
                b.ids
                    .get(*o)
                    .copied()
                    .ok_or_else(|| value_error(o, "is a graph output but is never produced"))
            })
            .collect::<Result<Vec<_>>>()?;
        b.build(&outs)
    }

    /// Every value: graph inputs first, then node outputs in node order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// One value.
    ///
    /// # Panics
    /// If `id` is not a value of this graph.
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0]
    }

    /// The nodes, in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The graph inputs.
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    /// An error unless `inputs` are one tensor per graph input, each of its input's dims.
    pub fn check_inputs(&self, inputs: &[crate::tensor::Tensor<f32>]) -> Result<()> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::Graph {
                at: "graph".into(),
                message: format!("takes {} input(s), got {}", self.inputs.len(), inputs.len()),
            });
        }
        for (&id, x) in self.inputs.iter().zip(inputs) {
            let v = self.value(id);
            if x.dims != v.dims {
                return Err(Error::Shape(format!(
                    "graph input '{}' must have dims {:?}, got {:?}",
                    v.name, v.dims, x.dims
                )));
            }
        }
        Ok(())
    }

    /// The graph outputs.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// The value named `name`, if any.
    pub fn find(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name).map(ValueId)
    }

    /// The activations that alone read their producer's output: pairs (producer, activation)
    /// of node indices where node `activation` is an [`Op::Activation`] whose input comes from
    /// node `producer` with `producer_ok(op)`, is read by it alone and is not a graph output.
    /// What a runtime can fuse into the producer (a float run's convs, ORT's quantizer).
    pub fn sole_activation_readers(
        &self,
        producer_ok: impl Fn(&Op) -> bool,
    ) -> Vec<(usize, usize)> {
        let consumers = self.consumers();
        let mut producer = vec![None; self.values.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            producer[node.output.0] = Some(i);
        }
        let mut pairs = Vec::new();
        for (j, node) in self.nodes.iter().enumerate() {
            let (Op::Activation(_), [v]) = (&node.op, node.inputs.as_slice()) else {
                continue;
            };
            let Some(i) = producer[v.0] else { continue };
            if producer_ok(&self.nodes[i].op) && consumers[v.0] == [j] && !self.outputs.contains(v)
            {
                pairs.push((i, j));
            }
        }
        pairs
    }

    /// For each value, the nodes (indices into [`Self::nodes`]) that read it.
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut c = vec![Vec::new(); self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for v in &n.inputs {
                if c[v.0].last() != Some(&i) {
                    c[v.0].push(i);
                }
            }
        }
        c
    }
}

fn value_error(name: &str, message: &str) -> Error {
    Error::Graph {
        at: format!("value '{name}'"),
        message: message.into(),
    }
}

/// Builds a [`Graph`] node by node; each node may only read values defined before it, so the
/// order given is topological by construction.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    values: Vec<Value>,
    nodes: Vec<Node>,
    inputs: Vec<ValueId>,
    ids: HashMap<String, ValueId>,
    node_names: std::collections::HashSet<String>,
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    fn add_value(&mut self, name: &str, dims: Vec<usize>) -> Result<ValueId> {
        if self.ids.contains_key(name) {
            return Err(value_error(name, "is produced more than once"));
        }
        let id = ValueId(self.values.len());
        self.values.push(Value {
            name: name.into(),
            dims,
        });
        self.ids.insert(name.into(), id);
        Ok(id)
    }

    /// A value defined so far.
    pub fn value(&self, id: ValueId) -> Option<&Value> {
        self.values.get(id.0)
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, dims: &[usize]) -> Result<ValueId> {
        op::check_dims(dims).map_err(|m| value_error(name, &m))?;
        let id = self.add_value(name, dims.to_vec())?;
        self.inputs.push(id);
        Ok(id)
    }

    /// Adds node `name` whose output value is also called `name`.
    pub fn node(&mut self, name: &str, op: Op, inputs: &[ValueId]) -> Result<ValueId> {
        self.node_named(name, op, inputs, name)
    }

    /// Adds node `name` with output value `output`.
    pub fn node_named(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[ValueId],
        output: &str,
    ) -> Result<ValueId> {
        if !self.node_names.insert(name.to_string()) {
            return Err(node_error(
                name,
                op.kind(),
                "another node has the same name",
            ));
        }
        let dims: Vec<&[usize]> = inputs
            .iter()
            .map(|v| {
                self.values
                    .get(v.0)
                    .map(|v| v.dims.as_slice())
                    .ok_or_else(|| node_error(name, op.kind(), format!("unknown input {v:?}")))
            })
            .collect::<Result<_>>()?;
        let out_dims = op
            .output_dims(&dims)
            .map_err(|m| node_error(name, op.kind(), m))?;
        let output = self.add_value(output, out_dims)?;
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs: inputs.to_vec(),
            output,
        });
        Ok(output)
    }

    /// Finishes the graph with the given outputs.
    pub fn build(self, outputs: &[ValueId]) -> Result<Graph> {
        if outputs.is_empty() {
            return Err(Error::Graph {
                at: "graph".into(),
                message: "a graph needs at least one output".into(),
            });
        }
        if self.inputs.is_empty() {
            return Err(Error::Graph {
                at: "graph".into(),
                message: "a graph needs at least one input".into(),
            });
        }
        if let Some(o) = outputs.iter().find(|o| o.0 >= self.values.len()) {
            return Err(Error::Graph {
                at: "graph".into(),
                message: format!("output {o:?} is not a value of this graph"),
            });
        }
        Ok(Graph {
            values: self.values,
            nodes: self.nodes,
            inputs: self.inputs,
            outputs: outputs.to_vec(),
            packed: Default::default(),
            buffers: Default::default(),
        })
    }
}
