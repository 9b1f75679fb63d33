//! The operators of a graph, their attributes and their output shapes.
//!
//! Every operator has one output. Shapes follow PyTorch: activations are NCHW, a conv weight is
//! OIHW, a linear weight is `[out_features, in_features]`.
//!
//! Pooling output sizes are PyTorch's `pooling_output_shape` ([`Pool2dParams::output_size`]).
//! Adaptive average pooling to `O` outputs averages input rows `floor(o*I/O) .. ceil((o+1)*I/O)`
//! for each output row `o` (`adaptive_avg_pool2d`).

use crate::error::Error;
use crate::shape::{checked_numel, ConvParams, ConvShape};
use crate::tensor::Tensor;

pub use crate::cpu::reference::pool::Pool2dParams;

/// An elementwise clamp applied after an op (fused) or on its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// Nothing.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)`: ReLU6 is `Clip { min: 0, max: 6 }`, PyTorch's `Hardtanh` and
    /// ONNX's `Clip` in general.
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound (`>= min`).
        max: f32,
    },
}

impl Activation {
    /// ReLU6.
    pub const RELU6: Activation = Activation::Clip { min: 0.0, max: 6.0 };

    /// Applies the activation to one value: a ReLU clamps to `[0, +∞]`, a clip to
    /// `[min, max]`, as [`crate::cpu::fast::F32Clamp`] (a NaN gives the lower bound, −0
    /// under a ReLU +0), the kernels' fused clamp.
    pub fn apply(self, v: f32) -> f32 {
        match self.clamp() {
            None => v,
            Some(c) => c.apply(v),
        }
    }

    /// The clamp this activation is (`None` for no activation).
    pub fn clamp(self) -> Option<crate::cpu::fast::F32Clamp> {
        use crate::cpu::fast::F32Clamp;
        match self {
            Activation::None => None,
            Activation::Relu => Some(F32Clamp {
                lo: 0.0,
                hi: f32::INFINITY,
            }),
            Activation::Clip { min, max } => Some(F32Clamp { lo: min, hi: max }),
        }
    }

    /// Applies the activation to every value of `ys` in place: [`Activation::apply`] with the
    /// match taken once, so that the loop vectorizes (a per-value match kept it scalar, a
    /// tenth of a float MobileNetV2 forward pass).
    pub fn apply_slice(self, ys: &mut [f32]) {
        if let Some(c) = self.clamp() {
            c.apply_slice(ys);
        }
    }

    fn validate(self) -> std::result::Result<(), String> {
        match self {
            Activation::Clip { min, max }
                if !(min.is_finite() && max.is_finite() && min <= max) =>
            {
                Err(format!(
                    "clip bounds must be finite with min <= max, got [{min}, {max}]"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A float conv2d with its weights, optionally followed by a fused activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dOp {
    /// Weight, OIHW.
    pub weight: Tensor<f32>,
    /// Optional bias, one per output channel.
    pub bias: Option<Vec<f32>>,
    /// Stride, padding, dilation, groups.
    pub params: ConvParams,
    /// Fused activation.
    pub act: Activation,
}

impl Conv2dOp {
    /// The conv's shape for an input of dims `x`.
    pub fn shape(&self, x: &[usize]) -> std::result::Result<ConvShape, String> {
        let x4 = dims4(x, "input")?;
        let w4 = dims4(&self.weight.dims, "weight")?;
        if let Some(b) = &self.bias {
            if b.len() != w4[0] {
                return Err(format!(
                    "bias has {} elements for {} output channels",
                    b.len(),
                    w4[0]
                ));
            }
        }
        ConvShape::new(x4, w4, self.params).map_err(|e| e.to_string())
    }
}

/// A float linear layer `y = x W^T + b` on `[N, in_features]`, with a fused activation.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearOp {
    /// Weight, `[out_features, in_features]`.
    pub weight: Tensor<f32>,
    /// Optional bias, one per output feature.
    pub bias: Option<Vec<f32>>,
    /// Fused activation.
    pub act: Activation,
}

/// One operator of a graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Conv2d with a fused activation (BatchNorm already folded in).
    Conv2d(Conv2dOp),
    /// Elementwise sum of two tensors of equal shape, then an activation (`add_relu`).
    Add {
        /// Fused activation.
        act: Activation,
    },
    /// Concatenation along `axis` (1 = channels for NCHW).
    Concat {
        /// The axis.
        axis: usize,
    },
    /// Max pooling over NCHW; padding counts as `-inf`.
    MaxPool2d(Pool2dParams),
    /// Average pooling over NCHW (no dilation).
    AvgPool2d {
        /// Window geometry (`dilation` must be 1).
        pool: Pool2dParams,
        /// Padding elements count in the divisor.
        count_include_pad: bool,
        /// A fixed divisor instead of the window size.
        divisor_override: Option<usize>,
    },
    /// Adaptive average pooling of NCHW to `output` (height, width); `[1, 1]` is global.
    AdaptiveAvgPool2d {
        /// Output height and width.
        output: [usize; 2],
    },
    /// Flattens dims `start_dim..` into one (`torch.flatten(x, start_dim)`).
    Flatten {
        /// The first dim flattened.
        start_dim: usize,
    },
    /// Reinterprets the data with new dims of the same element count.
    Reshape {
        /// The new dims.
        dims: Vec<usize>,
    },
    /// Linear (Gemm, MatMul with constant weights) with a fused activation.
    Linear(LinearOp),
    /// A standalone activation.
    Activation(Activation),
}

impl Op {
    /// The operator's name, as in error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "Conv2d",
            Op::Add { .. } => "Add",
            Op::Concat { .. } => "Concat",
            Op::MaxPool2d(_) => "MaxPool2d",
            Op::AvgPool2d { .. } => "AvgPool2d",
            Op::AdaptiveAvgPool2d { .. } => "AdaptiveAvgPool2d",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Linear(_) => "Linear",
            Op::Activation(_) => "Activation",
        }
    }

    /// How many inputs the op takes (`None`: one or more).
    pub fn arity(&self) -> Option<usize> {
        match self {
            Op::Add { .. } => Some(2),
            Op::Concat { .. } => None,
            _ => Some(1),
        }
    }

    /// The output dims for inputs of dims `inputs`, or why the op cannot take them.
    pub fn output_dims(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        match self.arity() {
            Some(n) if inputs.len() != n => {
                return Err(format!("takes {n} input(s), got {}", inputs.len()))
            }
            None if inputs.is_empty() => return Err("takes at least one input".into()),
            _ => {}
        }
        let x = inputs[0];
        let dims = match self {
            Op::Conv2d(c) => {
                c.act.validate()?;
                c.shape(x)?.output_dims().to_vec()
            }
            Op::Add { act } => {
                act.validate()?;
                broadcast_dims(x, inputs[1]).ok_or_else(|| {
                    format!(
                        "inputs of shapes {x:?} and {:?} do not broadcast (ONNX / numpy rules)",
                        inputs[1]
                    )
                })?
            }
            Op::Concat { axis } => {
                if *axis >= x.len() {
                    return Err(format!("axis {axis} is out of range for rank {}", x.len()));
                }
                let mut out = x.to_vec();
                for (i, d) in inputs.iter().enumerate().skip(1) {
                    let same_rest = d.len() == x.len()
                        && d.iter()
                            .zip(x)
                            .enumerate()
                            .all(|(a, (u, v))| a == *axis || u == v);
                    if !same_rest {
                        return Err(format!(
                            "input {i} has shape {d:?}, incompatible with {x:?} outside axis {axis}"
                        ));
                    }
                    out[*axis] = out[*axis]
                        .checked_add(d[*axis])
                        .ok_or("concatenated size overflows")?;
                }
                out
            }
            Op::MaxPool2d(p) => pool_dims(x, p)?,
            Op::AvgPool2d {
                pool,
                divisor_override,
                ..
            } => {
                if pool.dilation != [1, 1] {
                    return Err(format!(
                        "average pooling has no dilation, got {:?}",
                        pool.dilation
                    ));
                }
                if *divisor_override == Some(0) {
                    return Err("divisor_override must be >= 1".into());
                }
                pool_dims(x, pool)?
            }
            Op::AdaptiveAvgPool2d { output } => {
                let [n, c, h, w] = dims4(x, "input")?;
                if output.contains(&0) || h == 0 || w == 0 {
                    return Err(format!(
                        "input {h}x{w} and output {output:?} must be non-empty"
                    ));
                }
                vec![n, c, output[0], output[1]]
            }
            Op::Flatten { start_dim } => {
                if *start_dim >= x.len() {
                    return Err(format!(
                        "start_dim {start_dim} is out of range for rank {}",
                        x.len()
                    ));
                }
                let rest = checked_numel(&x[*start_dim..]).map_err(|e| e.to_string())?;
                let mut out = x[..*start_dim].to_vec();
                out.push(rest);
                out
            }
            Op::Reshape { dims } => {
                let (a, b) = (
                    checked_numel(x).map_err(|e| e.to_string())?,
                    checked_numel(dims).map_err(|e| e.to_string())?,
                );
                if a != b {
                    return Err(format!(
                        "cannot reshape {x:?} ({a} elements) to {dims:?} ({b} elements)"
                    ));
                }
                dims.clone()
            }
            Op::Linear(l) => {
                l.act.validate()?;
                let [o, i] = <[usize; 2]>::try_from(l.weight.dims.as_slice()).map_err(|_| {
                    format!("weight must be 2-D [out, in], got {:?}", l.weight.dims)
                })?;
                if x.len() != 2 || x[1] != i {
                    return Err(format!(
                        "input must be [N, {i}] for a weight [{o}, {i}], got {x:?}"
                    ));
                }
                if let Some(b) = &l.bias {
                    if b.len() != o {
                        return Err(format!("bias has {} elements for {o} outputs", b.len()));
                    }
                }
                vec![x[0], o]
            }
            Op::Activation(a) => {
                a.validate()?;
                x.to_vec()
            }
        };
        check_dims(&dims)?;
        Ok(dims)
    }
}

/// Checks that `dims` has elements and not too many: empty tensors are not supported.
pub(crate) fn check_dims(dims: &[usize]) -> std::result::Result<(), String> {
    checked_numel(dims).map_err(|e| e.to_string())?;
    if dims.contains(&0) {
        return Err(format!(
            "shape {dims:?} is empty; empty tensors are not supported"
        ));
    }
    Ok(())
}

fn dims4(d: &[usize], what: &str) -> std::result::Result<[usize; 4], String> {
    <[usize; 4]>::try_from(d).map_err(|_| format!("{what} must be 4-D (NCHW), got {d:?}"))
}

fn pool_dims(x: &[usize], p: &Pool2dParams) -> std::result::Result<Vec<usize>, String> {
    let [n, c, h, w] = dims4(x, "input")?;
    let [oh, ow] = p.output_size(h, w).map_err(|e| e.to_string())?;
    Ok(vec![n, c, oh, ow])
}

/// An error about node `node` running op `op`.
pub(crate) fn node_error(node: &str, op: &str, message: impl Into<String>) -> Error {
    Error::Graph {
        at: format!("node '{node}' ({op})"),
        message: message.into(),
    }
}

/// The shape two tensors broadcast to under ONNX's (numpy's) rules: right-aligned, each axis
/// equal or 1 in one of them; `None` when they do not broadcast.
pub fn broadcast_dims(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |d: &[usize], i: usize| {
        let lead = rank - d.len();
        if i < lead {
            1
        } else {
            d[i - lead]
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// For each element of the `out` shape (row-major), the flat index of the element of a tensor
/// of shape `d` that broadcasts to it.
pub fn broadcast_indices(d: &[usize], out: &[usize]) -> Vec<usize> {
    let lead = out.len() - d.len();
    let mut strides = vec![0usize; out.len()];
    let mut s = 1;
    for i in (0..d.len()).rev() {
        strides[lead + i] = if d[i] == 1 { 0 } else { s };
        s *= d[i];
    }
    let n: usize = out.iter().product();
    let mut idx = vec![0usize; out.len()];
    (0..n)
        .map(|_| {
            let flat = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
            for k in (0..out.len()).rev() {
                idx[k] += 1;
                if idx[k] < out[k] {
                    break;
                }
                idx[k] = 0;
            }
            flat
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Activation;

    #[test]
    fn apply_slice_equals_apply_on_every_value() {
        let xs = [
            -7.0f32,
            -0.0,
            0.0,
            0.5,
            5.999,
            6.0,
            6.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -1e-40,
        ];
        let acts = [
            Activation::None,
            Activation::Relu,
            Activation::RELU6,
            Activation::Clip {
                min: -1.0,
                max: 2.0,
            },
        ];
        for act in acts {
            let mut ys = xs.to_vec();
            act.apply_slice(&mut ys);
            for (&x, &y) in xs.iter().zip(&ys) {
                assert_eq!(y.to_bits(), act.apply(x).to_bits(), "{act:?} on {x}");
            }
        }
    }
}
