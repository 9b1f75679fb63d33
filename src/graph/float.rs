//! Float evaluation of a [`Graph`] on the CPU: the path calibration observes.
//!
//! Conv2d runs on the fast float conv (bit-identical on every ISA); every other op on the float
//! reference in [`crate::cpu::float_ops`]. Values are dropped as soon as their last reader has
//! run ([`BufferPlan::last_use`]).

use super::op::node_error;
use super::{Activation, BufferPlan, Graph, Node, Op, ValueId};
use crate::cpu::fast::{self, FastConvOptions};
use crate::cpu::float_ops::{self, PoolGeometry};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

impl Graph {
    /// Runs the graph in f32 and returns its outputs, on a worker of the current (or global)
    /// thread pool; a ReLU or clip that alone reads a conv's output is applied as the conv
    /// stores it (the same outputs as [`Graph::run_f32_visit`], which fuses nothing).
    pub fn run_f32(&self, inputs: &[Tensor<f32>]) -> Result<Vec<Tensor<f32>>> {
        // On a worker of the global (or current) pool, each conv forks from inside it: see
        // `cpu::fast::on_pool`.
        crate::cpu::fast::on_pool(None, || self.run_f32_impl(inputs, true, |_, _| Ok(())))
    }

    /// Runs the graph in f32, showing every value to `visit` as soon as it exists (graph inputs
    /// first, then each node's output in node order), and returns the graph outputs. This is
    /// how observers see a graph during calibration.
    pub fn run_f32_visit(
        &self,
        inputs: &[Tensor<f32>],
        mut visit: impl FnMut(ValueId, &Tensor<f32>) -> Result<()>,
    ) -> Result<Vec<Tensor<f32>>> {
        self.run_f32_with(inputs, |v, t| visit(v, t))
    }

    /// [`Graph::run_f32_visit`] whose `visit` may change each value before its readers see it
    /// (e.g. clamp it to a quantization range).
    pub fn run_f32_with(
        &self,
        inputs: &[Tensor<f32>],
        visit: impl FnMut(ValueId, &mut Tensor<f32>) -> Result<()>,
    ) -> Result<Vec<Tensor<f32>>> {
        self.run_f32_impl(inputs, false, visit)
    }

    /// [`Graph::run_f32_with`]; with `fuse`, a conv's output that only an activation reads
    /// (and that is not a graph output) is clamped as the conv stores it
    /// ([`fast::PackedConvF32::run_clamped`]) and the activation passes it on: the same
    /// outputs without another pass over the tensor, but `visit` then sees the conv's value
    /// clamped, so only runs that show no values to anyone fuse.
    fn run_f32_impl(
        &self,
        inputs: &[Tensor<f32>],
        fuse: bool,
        mut visit: impl FnMut(ValueId, &mut Tensor<f32>) -> Result<()>,
    ) -> Result<Vec<Tensor<f32>>> {
        self.check_inputs(inputs)?;
        let plan = BufferPlan::new(self);
        let packed = self.packed_convs()?;
        let (then, absorbed) = if fuse {
            self.fusable_activations()
        } else {
            (
                vec![None; self.nodes().len()],
                vec![false; self.nodes().len()],
            )
        };
        let mut live: Vec<Option<Tensor<f32>>> = vec![None; self.values().len()];
        // Buffers of dead values, for the next convs' outputs (see `Spare`).
        let mut spare = self.buffers.take(fuse);
        for (&id, x) in self.inputs().iter().zip(inputs) {
            crate::quant::check_finite(&x.data, &self.value(id).name)?;
            let mut x = x.clone();
            visit(id, &mut x)?;
            live[id.0] = Some(x);
        }
        for (step, node) in self.nodes().iter().enumerate() {
            let dims = self.value(node.output).dims.clone();
            // An activation, reshape or same-dims add whose first input is read for the last
            // time here reuses that input's buffer (same values as `eval_node`, no copy).
            let taken = match absorbed[step] {
                // Clamped by the conv before it: its buffer, as it is.
                true => live[node.inputs[0].0].take().map(|t| t.data),
                false => in_place(node, step, &plan, &mut live),
            };
            let data = match taken {
                Some(data) => data,
                None => {
                    let args: Vec<&Tensor<f32>> = node
                        .inputs
                        .iter()
                        .map(|v| {
                            live[v.0]
                                .as_ref()
                                .expect("inputs are live until their last reader")
                        })
                        .collect();
                    crate::tensor::check_host_alloc(
                        dims.iter().product(),
                        4,
                        &format!("the output of node '{}'", node.name),
                    )?;
                    let p = packed[step].as_ref();
                    eval_node_then(node, p, &args, &dims, then[step], &mut spare)
                        .map_err(|e| node_error(&node.name, node.op.kind(), e.to_string()))?
                }
            };
            let mut y = Tensor::new(dims, data)?;
            visit(node.output, &mut y)?;
            live[node.output.0] = Some(y);
            for v in &node.inputs {
                if plan.last_use[v.0] == Some(step) {
                    if let Some(t) = live[v.0].take() {
                        spare.keep(t.data);
                    }
                }
            }
        }
        let outputs = self
            .outputs()
            .iter()
            .map(|o| live[o.0].clone().expect("graph outputs stay live"))
            .collect();
        for t in live.into_iter().flatten() {
            spare.keep(t.data);
        }
        self.buffers.put(spare);
        Ok(outputs)
    }
}

/// A few buffers of dead values, reused for conv outputs: a conv overwrites every value of
/// its output (`PackedConvF32::run_into_clamped`), so a buffer whose capacity holds it is
/// truncated (or grown, zeroing only the values it lacks) and written, where a fresh output
/// was allocated and zeroed (a float MobileNetV2 spent 3.5% of its run in that `memset`, more
/// in page faults). At most [`Spare::MAX`] are kept, the largest by capacity (a buffer
/// truncated for a small value keeps its room for the next large one), so a run holds little
/// more than its live values.
///
/// A truncated buffer's values past its length stay initialized (truncating `f32`s writes
/// nothing), but safe code cannot take them back: growing it again zeroed them, 1.6 M values
/// per float MobileNetV2 run, 5.5% of it. In runs where only squint's own code holds the
/// values ([`Spare::restoring`]: no visitor), a truncated buffer is *lent*: its address,
/// capacity and former length are noted, and when the same allocation comes back
/// ([`Spare::keep`]) its length is restored without writing.
#[derive(Default)]
struct Spare {
    bufs: Vec<Vec<f32>>,
    /// Lent buffers: address, capacity, initialized length (only while restoring).
    lent: Vec<(usize, usize, usize)>,
    restoring: bool,
}

/// The [`Spare`] buffers of a graph's last float run, taken by the next run: its first
/// convs' outputs then reuse the last run's buffers instead of fresh zeroed ones (float
/// MobileNetV2, one thread, Intel Xeon: its 16x112x112 → 96 conv took 1.0 ms in the model
/// against 0.59 ms alone, the 4.8 MB output's `memset` and first writes). With [`Spare`]
/// choosing by capacity, the model's run went 8.3 → 7.9 ms (medians of 100 runs, 7 of 8
/// alternated rounds faster); lending truncated buffers and restoring their length (see
/// [`Spare`]) took off the 5.5% still spent zeroing regrown ones. The graph holds up to [`Spare::MAX`] buffers, its largest
/// values' (a few MB for one 224x224 image), as a runtime's arena does; a clone starts
/// without.
#[derive(Default)]
pub(super) struct RunBuffers(std::sync::Mutex<Spare>);

impl RunBuffers {
    /// The buffers kept (none while another run holds them), for a run that restores lent
    /// buffers or not (see [`Spare`]).
    fn take(&self, restoring: bool) -> Spare {
        let bufs = std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()).bufs);
        Spare {
            bufs,
            lent: Vec::new(),
            restoring,
        }
    }

    /// Keeps the buffers of `spare` for the next run.
    fn put(&self, spare: Spare) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).bufs = spare.bufs;
    }

    /// How many buffers are kept (tests).
    #[cfg(test)]
    pub(super) fn kept(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).bufs.len()
    }
}

impl Clone for RunBuffers {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for RunBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunBuffers")
    }
}

impl PartialEq for RunBuffers {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Spare {
    const MAX: usize = 4;

    /// Keeps `buf` if it is among the [`Spare::MAX`] largest (by capacity), its length
    /// restored first where it is a lent buffer (see [`Spare`]).
    fn keep(&mut self, mut buf: Vec<f32>) {
        let at = (buf.as_ptr() as usize, buf.capacity());
        if let Some(i) = self.lent.iter().position(|&(p, c, _)| (p, c) == at) {
            let (_, _, init) = self.lent.swap_remove(i);
            if init > buf.len() {
                // SAFETY: only restoring runs lend (`take`), and in them a value's buffer is
                // never freed before it comes back here (values are kept at their last use
                // or at the run's end; graph outputs are copies), so an allocation with the
                // lent address and capacity is the lent one: its first `init` values were
                // initialized `f32`s, which the truncation and later writes left initialized.
                unsafe { buf.set_len(init) };
            }
        }
        self.bufs.push(buf);
        if self.bufs.len() > Self::MAX {
            let smallest = (0..self.bufs.len())
                .min_by_key(|&i| self.bufs[i].capacity())
                .expect("not empty");
            self.bufs.swap_remove(smallest);
        }
    }

    /// A buffer of `len` initialized values: the kept one of least length that holds them
    /// (truncated; lent where restoring), else the longest one whose capacity holds them
    /// (grown, zeroing only the values it lacks), else a fresh zeroed one.
    fn take(&mut self, len: usize) -> Vec<f32> {
        let fit = (0..self.bufs.len())
            .filter(|&i| self.bufs[i].len() >= len)
            .min_by_key(|&i| self.bufs[i].len())
            .or_else(|| {
                (0..self.bufs.len())
                    .filter(|&i| self.bufs[i].capacity() >= len)
                    .max_by_key(|&i| self.bufs[i].len())
            });
        match fit {
            Some(i) => {
                let mut b = self.bufs.swap_remove(i);
                if self.restoring && b.len() > len {
                    self.lent.push((b.as_ptr() as usize, b.capacity(), b.len()));
                }
                b.resize(len, 0.0);
                b
            }
            None => vec![0f32; len],
        }
    }
}

fn pool_geometry(x: &[usize], y: &[usize], p: &super::Pool2dParams) -> PoolGeometry {
    PoolGeometry {
        input: [x[0], x[1], x[2], x[3]],
        output: [y[2], y[3]],
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
    }
}

/// The output of `node` (step `step` of `plan`) computed in its first input's buffer, taken
/// from `live`, where the node is an activation, a flatten or reshape, or an add of two
/// inputs of the same dims, and that input is read for the last time here (and is not also
/// its second input); `None` otherwise (nothing taken). The same values as [`eval_node_then`] without an activation.
fn in_place(
    node: &Node,
    step: usize,
    plan: &BufferPlan,
    live: &mut [Option<Tensor<f32>>],
) -> Option<Vec<f32>> {
    let first = node.inputs[0];
    let dies = plan.last_use[first.0] == Some(step);
    let second = node.inputs.get(1).copied();
    let fits = match &node.op {
        Op::Activation(_) | Op::Flatten { .. } | Op::Reshape { .. } => true,
        Op::Add { .. } => second.is_some_and(|b| {
            b != first
                && live[b.0].as_ref().map(|t| &t.dims) == live[first.0].as_ref().map(|t| &t.dims)
        }),
        _ => false,
    };
    if !dies || !fits {
        return None;
    }
    let mut y = live[first.0].take()?.data;
    match &node.op {
        Op::Activation(a) => a.apply_slice(&mut y),
        Op::Add { act } => {
            let b = live[second?.0].as_ref()?;
            for (a, &b) in y.iter_mut().zip(&b.data) {
                *a += b;
            }
            act.apply_slice(&mut y);
        }
        _ => {}
    }
    Some(y)
}

/// The float weights of a graph's convs packed once for the fast kernels
/// ([`fast::PackedConvF32`]), one slot per node, filled on the graph's first float run.
/// Derived from the nodes, so it never makes two graphs differ.
#[derive(Default, Clone)]
pub(super) struct PackedConvs(std::sync::OnceLock<Vec<Option<fast::PackedConvF32>>>);

impl std::fmt::Debug for PackedConvs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PackedConvs")
    }
}

impl PartialEq for PackedConvs {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Graph {
    /// The activations a run that shows no values can fuse into the convs before them: per
    /// node, the activation to apply after a conv (`then`), and whether an activation node
    /// only passes on its input (`absorbed`). An activation is fused where its input comes
    /// from a conv without an activation of its own, is read by it alone and is not a graph
    /// output.
    pub(super) fn fusable_activations(&self) -> (Vec<Option<Activation>>, Vec<bool>) {
        let n = self.nodes().len();
        let (mut then, mut absorbed) = (vec![None; n], vec![false; n]);
        let plain_conv = |op: &Op| matches!(op, Op::Conv2d(c) if c.act == Activation::None);
        for (i, j) in self.sole_activation_readers(plain_conv) {
            if let Op::Activation(a) = self.nodes()[j].op {
                then[i] = Some(a);
                absorbed[j] = true;
            }
        }
        (then, absorbed)
    }

    /// Each node's packed conv (`None` for other ops), packed on first use.
    fn packed_convs(&self) -> Result<&[Option<fast::PackedConvF32>]> {
        if let Some(p) = self.packed.0.get() {
            return Ok(p);
        }
        let isa = fast::Isa::detect();
        let packed = self
            .nodes()
            .iter()
            .map(|n| match &n.op {
                Op::Conv2d(c) => {
                    let d = <[usize; 4]>::try_from(c.weight.dims.as_slice())
                        .map_err(|_| node_error(&n.name, n.op.kind(), "the weight is not 4-D"))?;
                    fast::PackedConvF32::new(&c.weight.data, d, c.params, isa)
                        .map(Some)
                        .map_err(|e| node_error(&n.name, n.op.kind(), e.to_string()))
                }
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.packed.0.get_or_init(|| packed))
    }
}

/// One node on already-checked dims (the graph inferred `out_dims` from the inputs' dims).
#[cfg(test)]
pub(super) fn eval_node(
    node: &Node,
    packed: Option<&fast::PackedConvF32>,
    args: &[&Tensor<f32>],
    out_dims: &[usize],
) -> Result<Vec<f32>> {
    eval_node_then(node, packed, args, out_dims, None, &mut Spare::default())
}

/// `eval_node` (the tests' entry), a conv's output then passed through `then` (the activation node fused into
/// it, `Graph::fusable_activations`: only for convs without an activation of their own).
fn eval_node_then(
    node: &Node,
    packed: Option<&fast::PackedConvF32>,
    args: &[&Tensor<f32>],
    out_dims: &[usize],
    then: Option<Activation>,
    spare: &mut Spare,
) -> Result<Vec<f32>> {
    let x = args[0];
    let y = match &node.op {
        Op::Conv2d(c) => {
            let s = c.shape(&x.dims).map_err(Error::Shape)?;
            let opts = FastConvOptions::default();
            let (bias, dims) = (c.bias.as_deref(), s.input_dims());
            let act = match (c.act, then) {
                (a, None) | (Activation::None, Some(a)) => a,
                _ => {
                    return Err(Error::Graph {
                        at: format!("node '{}'", node.name),
                        message: "an activation was fused into a conv that has one".into(),
                    })
                }
            };
            match packed {
                Some(p) => {
                    let mut y = spare.take(s.output_len());
                    p.run_into_clamped(&x.data, dims, bias, act.clamp(), &opts, &mut y)?;
                    y
                }
                None => {
                    let mut y = fast::conv2d_f32(&x.data, &c.weight.data, bias, &s, &opts)?;
                    act.apply_slice(&mut y);
                    y
                }
            }
        }
        Op::Add { act } if args[1].dims == x.dims => {
            let mut y: Vec<f32> = x
                .data
                .iter()
                .zip(&args[1].data)
                .map(|(&a, &b)| a + b)
                .collect();
            act.apply_slice(&mut y);
            y
        }
        Op::Add { act } => {
            let out = super::op::broadcast_dims(&x.dims, &args[1].dims).ok_or_else(|| {
                Error::Shape(format!(
                    "add: shapes {:?} and {:?} do not broadcast",
                    x.dims, args[1].dims
                ))
            })?;
            let (ia, ib) = (
                super::op::broadcast_indices(&x.dims, &out),
                super::op::broadcast_indices(&args[1].dims, &out),
            );
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| act.apply(x.data[i] + args[1].data[j]))
                .collect()
        }
        Op::Concat { axis } => {
            let outer: usize = x.dims[..*axis].iter().product();
            let inner: Vec<usize> = args
                .iter()
                .map(|t| t.dims[*axis..].iter().product())
                .collect();
            let data: Vec<&[f32]> = args.iter().map(|t| t.data.as_slice()).collect();
            float_ops::concat(&data, &inner, outer)?
        }
        Op::MaxPool2d(p) => float_ops::max_pool2d(&x.data, &pool_geometry(&x.dims, out_dims, p))?,
        Op::AvgPool2d {
            pool,
            count_include_pad,
            divisor_override,
        } => float_ops::avg_pool2d(
            &x.data,
            &pool_geometry(&x.dims, out_dims, pool),
            *count_include_pad,
            *divisor_override,
        )?,
        Op::AdaptiveAvgPool2d { output } => float_ops::adaptive_avg_pool2d(
            &x.data,
            [x.dims[0], x.dims[1], x.dims[2], x.dims[3]],
            *output,
        )?,
        Op::Flatten { .. } | Op::Reshape { .. } => x.data.clone(),
        Op::Linear(l) => {
            let mut y = float_ops::linear(
                &x.data,
                &l.weight.data,
                l.bias.as_deref(),
                x.dims[0],
                l.weight.dims[0],
            )?;
            l.act.apply_slice(&mut y);
            y
        }
        Op::Activation(a) => {
            let mut y = x.data.clone();
            a.apply_slice(&mut y);
            y
        }
    };
    Ok(y)
}

#[cfg(test)]
mod spare_tests {
    use super::Spare;

    /// A spare buffer truncated for a small value gets its length back when it is kept again
    /// in a restoring run, with the values it held; elsewhere (runs that show values to a
    /// visitor) it stays truncated, and a buffer that was not lent is kept as it is.
    #[test]
    fn lent_buffers_get_their_length_back_only_in_restoring_runs() {
        for restoring in [true, false] {
            let mut s = Spare {
                restoring,
                ..Spare::default()
            };
            s.keep((0..100).map(|v| v as f32).collect());
            let mut b = s.take(10);
            assert_eq!(b.len(), 10);
            b[3] = -1.0;
            s.keep(b);
            let b = s.take(100);
            assert_eq!(b.len(), 100, "restoring: {restoring}");
            assert_eq!(b[3], -1.0);
            let want = if restoring { 99.0 } else { 0.0 };
            assert_eq!(b[99], want, "restoring: {restoring}");
            s.keep(vec![1.0; 5]);
            assert!(s.bufs.iter().any(|v| v.len() == 5) && s.lent.is_empty());
        }
    }
}
