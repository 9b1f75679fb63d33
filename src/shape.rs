//! Conv2d geometry: hyperparameters, shape validation and output size.
//!
//! Layouts are PyTorch's: activations NCHW, weights OIHW with `I = in_channels / groups`.
//! Output size: `floor((H + 2p - d(k-1) - 1) / s) + 1`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Conv2d hyperparameters (PyTorch's `stride`, `padding`, `dilation`, `groups`), as (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvParams {
    /// Stride (sh, sw), each >= 1.
    pub stride: [usize; 2],
    /// Zero padding (ph, pw) added on both sides.
    pub padding: [usize; 2],
    /// Dilation (dh, dw), each >= 1.
    pub dilation: [usize; 2],
    /// Number of groups; divides both channel counts.
    pub groups: usize,
}

impl Default for ConvParams {
    fn default() -> Self {
        ConvParams {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl ConvParams {
    /// Builder: set both strides.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// Builder: set both paddings.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    /// Builder: set both dilations.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    /// Builder: set groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }

    /// Checks what can be checked without the tensor shapes: stride, dilation and groups are
    /// each at least 1.
    pub fn validate(&self) -> Result<()> {
        if self.stride.contains(&0) {
            return Err(Error::InvalidParameter(format!(
                "stride must be >= 1, got {:?}",
                self.stride
            )));
        }
        if self.dilation.contains(&0) {
            return Err(Error::InvalidParameter(format!(
                "dilation must be >= 1, got {:?}",
                self.dilation
            )));
        }
        if self.groups == 0 {
            return Err(Error::InvalidParameter("groups must be >= 1".into()));
        }
        Ok(())
    }
}

/// The full, validated geometry of one conv2d call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvShape {
    /// Batch size N.
    pub n: usize,
    /// Input channels C.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels O.
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Hyperparameters.
    pub params: ConvParams,
    /// Output height (derived).
    pub h_out: usize,
    /// Output width (derived).
    pub w_out: usize,
}

/// Largest element count squint accepts for one tensor (2^40): beyond it, the sizes are
/// surely an error and products could overflow.
pub const MAX_ELEMENTS: usize = 1 << 40;

/// Multiplies dimensions, failing on overflow or on more than [`MAX_ELEMENTS`].
pub fn checked_numel(dims: &[usize]) -> Result<usize> {
    let mut n: usize = 1;
    for &d in dims {
        n = n
            .checked_mul(d)
            .filter(|&v| v <= MAX_ELEMENTS)
            .ok_or_else(|| Error::Shape(format!("shape {dims:?} has too many elements")))?;
    }
    Ok(n)
}

impl ConvShape {
    /// Validates an input shape `[N, C, H, W]`, a weight shape `[O, I, KH, KW]` and the params,
    /// and derives the output size.
    pub fn new(x: [usize; 4], w: [usize; 4], params: ConvParams) -> Result<Self> {
        let [n, c_in, h, wd] = x;
        let [c_out, i, kh, kw] = w;
        let p = params;
        p.validate()?;
        if x.contains(&0) {
            return Err(Error::Shape(format!(
                "input shape {x:?} has a zero-sized dimension"
            )));
        }
        if w.contains(&0) {
            return Err(Error::Shape(format!(
                "weight shape {w:?} has a zero-sized dimension"
            )));
        }
        if c_in % p.groups != 0 || c_out % p.groups != 0 {
            return Err(Error::InvalidParameter(format!(
                "groups = {} must divide in_channels = {c_in} and out_channels = {c_out}",
                p.groups
            )));
        }
        // Checked: I and groups come from files and their product may overflow.
        if i.checked_mul(p.groups) != Some(c_in) {
            return Err(Error::Shape(format!(
                "weight {w:?} expects I * groups = {i} * {} input channels, input {x:?} has {c_in}",
                p.groups
            )));
        }
        checked_numel(&x)?;
        checked_numel(&w)?;
        let out = |size: usize, pad: usize, dil: usize, k: usize, s: usize, axis: &str| {
            let too_large = || {
                Error::Shape(format!(
                    "{axis}: input {size} with padding {pad}, kernel {k} and dilation {dil} is too large"
                ))
            };
            let padded = pad
                .checked_mul(2)
                .and_then(|p2| p2.checked_add(size))
                .filter(|&v| v <= MAX_ELEMENTS)
                .ok_or_else(too_large)?;
            let span = dil
                .checked_mul(k - 1)
                .and_then(|v| v.checked_add(1))
                .ok_or_else(too_large)?;
            if span > padded {
                return Err(Error::Shape(format!(
                    "kernel {axis} extent {span} (kernel {k}, dilation {dil}) exceeds the padded input {axis} {padded}"
                )));
            }
            Ok((padded - span) / s + 1)
        };
        let h_out = out(h, p.padding[0], p.dilation[0], kh, p.stride[0], "height")?;
        let w_out = out(wd, p.padding[1], p.dilation[1], kw, p.stride[1], "width")?;
        checked_numel(&[n, c_out, h_out, w_out])?;
        Ok(ConvShape {
            n,
            c_in,
            h,
            w: wd,
            c_out,
            kh,
            kw,
            params,
            h_out,
            w_out,
        })
    }

    /// Checks that a `ConvShape` whose fields were set by hand is one [`ConvShape::new`] would
    /// build: valid params and shapes, and the derived output size. Kernels call this before
    /// indexing, so an inconsistent shape is an error, not a panic or an out-of-bounds access.
    pub fn validate(&self) -> Result<()> {
        self.params.validate()?;
        if !self.c_in.is_multiple_of(self.params.groups) {
            return Err(Error::InvalidParameter(format!(
                "groups = {} must divide in_channels = {}",
                self.params.groups, self.c_in
            )));
        }
        let rebuilt = ConvShape::new(
            [self.n, self.c_in, self.h, self.w],
            [self.c_out, self.c_in / self.params.groups, self.kh, self.kw],
            self.params,
        )?;
        if rebuilt != *self {
            return Err(Error::Shape(format!(
                "conv shape has output {}x{}, its input, weight and params give {}x{}",
                self.h_out, self.w_out, rebuilt.h_out, rebuilt.w_out
            )));
        }
        Ok(())
    }

    /// Input shape `[N, C, H, W]`.
    pub fn input_dims(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }

    /// Weight shape `[O, I, KH, KW]`.
    pub fn weight_dims(&self) -> [usize; 4] {
        [self.c_out, self.c_in / self.params.groups, self.kh, self.kw]
    }

    /// Output shape `[N, O, Ho, Wo]`.
    pub fn output_dims(&self) -> [usize; 4] {
        [self.n, self.c_out, self.h_out, self.w_out]
    }

    /// Input channels per group.
    pub fn c_in_per_group(&self) -> usize {
        self.c_in / self.params.groups
    }

    /// Output channels per group.
    pub fn c_out_per_group(&self) -> usize {
        self.c_out / self.params.groups
    }

    /// Reduction length per output: `I * KH * KW`.
    pub fn k(&self) -> usize {
        self.c_in_per_group() * self.kh * self.kw
    }

    /// Number of input elements.
    pub fn input_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }

    /// Number of weight elements.
    pub fn weight_len(&self) -> usize {
        self.c_out * self.k()
    }

    /// Number of output elements.
    pub fn output_len(&self) -> usize {
        self.n * self.c_out * self.h_out * self.w_out
    }

    /// Multiply-accumulates of the conv: `N * O * Ho * Wo * K`; `2 *` this is the op count
    /// used for GOPS.
    pub fn macs(&self) -> u64 {
        // Saturating: both factors may reach 2^40.
        (self.output_len() as u64).saturating_mul(self.k() as u64)
    }
}
