//! Float models: a sequence of conv2d (optionally with a fused ReLU) and ReLU layers between a
//! quantize point (PyTorch's `QuantStub`) and a dequantize point (`DeQuantStub`).
//!
//! Models are built in code with [`ModelBuilder`] or loaded from a description file (JSON) plus
//! a `.safetensors` state_dict, so `safetensors.torch.save_file(model.state_dict(), path)`
//! output loads directly:
//!
//! ```json
//! {"layers": [
//!   {"name": "conv1", "type": "conv2d", "in_channels": 3, "out_channels": 16, "kernel_size": 3,
//!    "padding": 1, "bias": true, "relu": true},
//!   {"name": "conv2", "type": "conv2d", "in_channels": 16, "out_channels": 8, "kernel_size": 3,
//!    "stride": 2}
//! ]}
//! ```
//! Weights are read from `<name>.weight` and `<name>.bias` (or `weight_key` / `bias_key`).
//! `relu: true` means a ReLU follows and is fused (one quantization point after it, as with
//! `torch.ao.quantization.fuse_modules`); a separate `{"type": "relu"}` layer is an unfused ReLU.

use crate::cpu::fast::{self, FastConvOptions};
use crate::error::{Error, Result};
use crate::io::safetensors::StFile;
use crate::shape::{ConvParams, ConvShape};
use crate::tensor::Tensor;
use serde_json::Value;
use std::path::Path;

/// A float conv2d layer.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatConv {
    /// Layer name (state_dict prefix).
    pub name: String,
    /// Weight, OIHW.
    pub weight: Tensor<f32>,
    /// Optional bias, one per output channel.
    pub bias: Option<Vec<f32>>,
    /// Stride, padding, dilation, groups.
    pub params: ConvParams,
    /// A ReLU follows and is fused (its quantization point is after the ReLU).
    pub relu: bool,
}

impl FloatConv {
    /// Weight dims `[O, I, KH, KW]`.
    ///
    /// # Panics
    /// If the weight is not 4-D. [`Model::validate`] (run by [`ModelBuilder::build`],
    /// [`Model::forward_points`] and `PreparedModel::new`) rejects such layers with
    /// [`Error::Shape`].
    pub fn weight_dims(&self) -> [usize; 4] {
        let d = &self.weight.dims;
        [d[0], d[1], d[2], d[3]]
    }
}

/// One layer of a float model.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// Conv2d, optionally with a fused ReLU.
    Conv(FloatConv),
    /// An unfused ReLU.
    Relu {
        /// Layer name.
        name: String,
    },
}

impl Layer {
    /// The layer's name.
    pub fn name(&self) -> &str {
        match self {
            Layer::Conv(c) => &c.name,
            Layer::Relu { name } => name,
        }
    }
}

/// A float model: `quantize → layers → dequantize`.
///
/// A `Model` is always valid (see [`Model::validate`]): it is only made by [`Model::new`],
/// [`ModelBuilder::build`] and the loaders, which validate it, and its layers cannot be
/// changed afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    layers: Vec<Layer>,
}

/// Builds a [`Model`] in code.
#[derive(Debug, Default)]
pub struct ModelBuilder {
    layers: Vec<Layer>,
}

impl ModelBuilder {
    /// Adds a conv2d layer (weight OIHW, optional bias) with an optionally fused ReLU.
    pub fn conv2d(
        mut self,
        name: &str,
        weight: Tensor<f32>,
        bias: Option<Vec<f32>>,
        params: ConvParams,
        relu: bool,
    ) -> Self {
        self.layers.push(Layer::Conv(FloatConv {
            name: name.to_string(),
            weight,
            bias,
            params,
            relu,
        }));
        self
    }

    /// Adds an unfused ReLU.
    pub fn relu(mut self, name: &str) -> Self {
        self.layers.push(Layer::Relu {
            name: name.to_string(),
        });
        self
    }

    /// Validates and returns the model.
    pub fn build(self) -> Result<Model> {
        let m = Model {
            layers: self.layers,
        };
        m.validate()?;
        Ok(m)
    }
}

fn pair_or_int(v: Option<&Value>, default: usize, what: &str, file: &Path) -> Result<[usize; 2]> {
    let bad = || {
        Error::format(
            file,
            format!("'{what}' must be an integer or a pair of integers"),
        )
    };
    match v {
        None => Ok([default, default]),
        Some(Value::Number(n)) => {
            let x = n.as_u64().ok_or_else(bad)? as usize;
            Ok([x, x])
        }
        Some(Value::Array(a)) if a.len() == 2 => Ok([
            a[0].as_u64().ok_or_else(bad)? as usize,
            a[1].as_u64().ok_or_else(bad)? as usize,
        ]),
        Some(_) => Err(bad()),
    }
}

impl Model {
    /// Starts a builder.
    pub fn builder() -> ModelBuilder {
        ModelBuilder::default()
    }

    /// A model of `layers`, validated (see [`Model::validate`]).
    pub fn new(layers: Vec<Layer>) -> Result<Model> {
        let m = Model { layers };
        m.validate()?;
        Ok(m)
    }

    /// The layers in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Checks names, shapes (4-D weights holding as many values as their dims say, no
    /// zero-sized dimension, groups dividing the output channels, one bias value per output
    /// channel) and finiteness of the weights. Every constructor runs it, and so does every
    /// entry point that runs a model.
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::InvalidParameter(
                "a model needs at least one layer".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for l in &self.layers {
            if !seen.insert(l.name().to_string()) || l.name() == "input" {
                return Err(Error::InvalidParameter(format!(
                    "layer name '{}' is used twice or reserved",
                    l.name()
                )));
            }
            if let Layer::Conv(c) = l {
                if c.weight.dims.len() != 4 {
                    return Err(Error::Shape(format!(
                        "{}.weight must be 4-D (OIHW), got {:?}",
                        c.name, c.weight.dims
                    )));
                }
                if c.weight.dims.contains(&0) {
                    return Err(Error::Shape(format!(
                        "{}.weight has a zero-sized dimension: {:?}",
                        c.name, c.weight.dims
                    )));
                }
                let numel = crate::shape::checked_numel(&c.weight.dims)
                    .map_err(|e| Error::Shape(format!("{}.weight: {e}", c.name)))?;
                if numel != c.weight.data.len() {
                    return Err(Error::Shape(format!(
                        "{}.weight has {} values for dims {:?} ({numel} expected)",
                        c.name,
                        c.weight.data.len(),
                        c.weight.dims
                    )));
                }
                c.params
                    .validate()
                    .map_err(|e| Error::InvalidParameter(format!("layer '{}': {e}", c.name)))?;
                if !c.weight.dims[0].is_multiple_of(c.params.groups) {
                    return Err(Error::InvalidParameter(format!(
                        "layer '{}': groups = {} must divide out_channels = {}",
                        c.name, c.params.groups, c.weight.dims[0]
                    )));
                }
                crate::quant::check_finite(&c.weight.data, &format!("{}.weight", c.name))?;
                if let Some(b) = &c.bias {
                    if b.len() != c.weight.dims[0] {
                        return Err(Error::Shape(format!(
                            "{}.bias has {} values, the weight has {} output channels",
                            c.name,
                            b.len(),
                            c.weight.dims[0]
                        )));
                    }
                    crate::quant::check_finite(b, &format!("{}.bias", c.name))?;
                }
            }
        }
        Ok(())
    }

    /// Loads a model description (JSON) and its float weights (`.safetensors` state_dict).
    pub fn load(description: &Path, weights: &Path) -> Result<Model> {
        let text = std::fs::read_to_string(description).map_err(|e| Error::io(description, e))?;
        Self::from_json_str(&text, description, &StFile::read(weights)?, weights)
    }

    /// Parses a model description from a JSON string, taking weights from `st`.
    pub fn from_json_str(
        text: &str,
        desc_path: &Path,
        st: &StFile,
        weights_path: &Path,
    ) -> Result<Model> {
        let file = desc_path;
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::format(file, format!("invalid JSON: {e}")))?;
        let layers = v
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::format(file, "missing 'layers' list"))?;
        let mut b = Model::builder();
        for (i, l) in layers.iter().enumerate() {
            let name = l
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("layer{i}"));
            let kind = l.get("type").and_then(Value::as_str).unwrap_or("conv2d");
            match kind.to_ascii_lowercase().as_str() {
                "conv2d" | "conv" => {
                    let wkey = l
                        .get("weight_key")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{name}.weight"));
                    let weight = st.f32(&wkey, weights_path)?.clone();
                    let [o, wi, kh, kw] = weight.dims4(&wkey)?;
                    let params = ConvParams {
                        stride: pair_or_int(l.get("stride"), 1, "stride", file)?,
                        padding: pair_or_int(l.get("padding"), 0, "padding", file)?,
                        dilation: pair_or_int(l.get("dilation"), 1, "dilation", file)?,
                        groups: l.get("groups").and_then(Value::as_u64).unwrap_or(1) as usize,
                    };
                    if let Some(mode) = l.get("padding_mode").and_then(Value::as_str) {
                        if mode != "zeros" {
                            return Err(Error::format(
                                file,
                                format!("layer '{name}': padding_mode '{mode}' is not supported (only 'zeros')"),
                            ));
                        }
                    }
                    // Declared hyperparameters must agree with the weight.
                    let expect = |key: &str, got: usize| -> Result<()> {
                        if let Some(x) = l.get(key).and_then(Value::as_u64) {
                            if x as usize != got {
                                return Err(Error::Shape(format!(
                                    "layer '{name}': {key} = {x} but the weight '{wkey}' has shape {:?}",
                                    weight.dims
                                )));
                            }
                        }
                        Ok(())
                    };
                    expect("out_channels", o)?;
                    if params.groups == 0 {
                        return Err(Error::InvalidParameter(format!(
                            "layer '{name}': groups must be >= 1"
                        )));
                    }
                    let c_in = wi.checked_mul(params.groups).ok_or_else(|| {
                        Error::InvalidParameter(format!(
                            "layer '{name}': groups = {} is too large for the weight '{wkey}' of shape {:?}",
                            params.groups, weight.dims
                        ))
                    })?;
                    expect("in_channels", c_in)?;
                    let ks = pair_or_int(l.get("kernel_size"), kh, "kernel_size", file)?;
                    if ks != [kh, kw] {
                        return Err(Error::Shape(format!(
                            "layer '{name}': kernel_size {ks:?} but the weight '{wkey}' has shape {:?}",
                            weight.dims
                        )));
                    }
                    let has_bias = l.get("bias").and_then(Value::as_bool);
                    let bkey = l
                        .get("bias_key")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{name}.bias"));
                    let bias = match has_bias {
                        Some(false) => None,
                        Some(true) => Some(st.f32(&bkey, weights_path)?.data.clone()),
                        None => st.f32(&bkey, weights_path).ok().map(|t| t.data.clone()),
                    };
                    let relu = l.get("relu").and_then(Value::as_bool).unwrap_or(false);
                    b = b.conv2d(&name, weight, bias, params, relu);
                }
                "relu" => b = b.relu(&name),
                other => {
                    return Err(Error::format(
                        file,
                        format!("layer '{name}': unsupported type '{other}' (conv2d, relu)"),
                    ))
                }
            }
        }
        b.build()
    }

    /// The names of the activation quantization points, in order: `input`, then every conv's
    /// output (after its fused ReLU). An unfused ReLU keeps its input's qparams (it is a clamp
    /// at the zero point in the quantized model) and has no point of its own.
    pub fn points(&self) -> Vec<String> {
        std::iter::once("input".to_string())
            .chain(self.layers.iter().filter_map(|l| match l {
                Layer::Conv(c) => Some(c.name.clone()),
                Layer::Relu { .. } => None,
            }))
            .collect()
    }

    /// Float forward pass on the CPU. Returns, for each point of [`Self::points`], the float
    /// tensor an observer at that point sees, and the final output (after trailing ReLUs).
    pub fn forward_points(&self, x: &Tensor<f32>) -> Result<(Vec<Tensor<f32>>, Tensor<f32>)> {
        self.validate()?;
        crate::quant::check_finite(&x.data, "input")?;
        let mut cur = x.clone();
        let mut cur_dims = x.dims4("input")?;
        let mut seen = vec![cur.clone()];
        let opts = FastConvOptions::default();
        for l in &self.layers {
            match l {
                Layer::Conv(c) => {
                    let s = ConvShape::new(cur_dims, c.weight_dims(), c.params)
                        .map_err(|e| Error::Shape(format!("layer '{}': {e}", c.name)))?;
                    crate::tensor::check_host_alloc(
                        s.output_len(),
                        8,
                        &format!("the output of layer '{}'", c.name),
                    )?;
                    let mut y =
                        fast::conv2d_f32(&cur.data, &c.weight.data, c.bias.as_deref(), &s, &opts)?;
                    if c.relu {
                        y.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                    cur_dims = s.output_dims();
                    cur = Tensor::new(cur_dims.to_vec(), y)?;
                    seen.push(cur.clone());
                }
                Layer::Relu { .. } => cur.data.iter_mut().for_each(|v| *v = v.max(0.0)),
            }
        }
        Ok((seen, cur))
    }

    /// Float forward pass, output only.
    pub fn forward(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        Ok(self.forward_points(x)?.1)
    }
}
