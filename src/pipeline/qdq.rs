//! Running an already-quantized ONNX model ([`QdqModel`], from ONNX Runtime's
//! `quantize_static`) in int8 with ONNX Runtime's formulas ([`crate::cpu::reference::ort`]):
//! what ORT's CPU provider runs after its graph optimizations turn the Q/DQ pairs into
//! `QLinearConv`, `QLinearAdd`, `QLinearGlobalAveragePool`, `QGemm`, 8-bit `MaxPool`, ...
//!
//! | float op between Q/DQ | ORT's kernel | squint |
//! |---|---|---|
//! | Conv | QLinearConv (NHWC) | `ort::conv::qlinear_conv` |
//! | Gemm (`transB = 1`) | QGemm | the same requantized integer product, as a 1x1 `qlinear_conv` |
//! | Add | QLinearAdd | `ort::add::qlinear_add` with the kernel of this CPU |
//! | Concat | QLinearConcat | `ort::concat::qlinear_concat` |
//! | MaxPool | 8-bit MaxPool | `ort::pool::max_pool` (input and output qparams must agree) |
//! | AveragePool, GlobalAveragePool | QLinearAveragePool, QLinearGlobalAveragePool | `ort::pool` |
//! | Flatten, Reshape | on the 8-bit tensor | the same bytes (qparams must agree) |
//!
//! The graph input is quantized by `QuantizeLinear` and the outputs dequantized by
//! `DequantizeLinear`, as ORT does, so outputs are ORT's float32 bits.

use crate::cpu::reference::cat::CatInput;
use crate::cpu::reference::ort::{self, add::QLinearAddKernel, conv::QWeight};
use crate::error::{Error, Result};
use crate::graph::{Activation, Op};
use crate::io::onnx_qdq::{QdqModel, QdqWeight};
use crate::quant::QParams;
use crate::shape::{ConvParams, ConvShape};
use crate::tensor::Tensor;

/// The `MlasQLinearAdd` kernel ONNX Runtime runs on this CPU (see [`QLinearAddKernel`]).
pub fn native_add_kernel() -> QLinearAddKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            QLinearAddKernel::Avx2
        } else {
            QLinearAddKernel::Sse2
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    QLinearAddKernel::Raw
}

/// What [`run_reference`] returns.
#[derive(Debug, Clone)]
pub struct QdqRun {
    /// The stored bytes of every value, in value order.
    pub values: Vec<Vec<u8>>,
    /// The graph outputs, dequantized as `DequantizeLinear` does.
    pub outputs: Vec<Tensor<f32>>,
}

fn weight(w: &QdqWeight) -> QWeight<'_> {
    QWeight {
        data: &w.data,
        dtype: w.dtype,
        scales: &w.scales,
        zero_points: &w.zero_points,
    }
}

fn dims4(d: &[usize]) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(d).map_err(|_| Error::Shape(format!("expected 4-D, got {d:?}")))
}

fn same_qparams(x: &QParams, y: &QParams, op: &str) -> Result<()> {
    if x != y {
        return Err(Error::InvalidParameter(format!(
            "{op} with input qparams {x:?} and output qparams {y:?}: ORT runs it on the 8-bit \
             tensor only when they agree"
        )));
    }
    Ok(())
}

/// Runs `m` on float `inputs` with ONNX Runtime's int8 formulas, `add` being the
/// `QLinearAdd` kernel to reproduce ([`native_add_kernel`] for this CPU's ORT).
pub fn run_reference(
    m: &QdqModel,
    inputs: &[Tensor<f32>],
    add: QLinearAddKernel,
) -> Result<QdqRun> {
    let g = &m.graph;
    if inputs.len() != g.inputs().len() {
        return Err(Error::Graph {
            at: "graph".into(),
            message: format!("takes {} input(s), got {}", g.inputs().len(), inputs.len()),
        });
    }
    let mut values: Vec<Option<Vec<u8>>> = vec![None; g.values().len()];
    for (&id, x) in g.inputs().iter().zip(inputs) {
        let v = g.value(id);
        if x.dims != v.dims {
            return Err(Error::Shape(format!(
                "graph input '{}' must have dims {:?}, got {:?}",
                v.name, v.dims, x.dims
            )));
        }
        let qp = m.qparams[id.0];
        let axis = ort::qdq::AxisQParams {
            scales: vec![qp.scale],
            zero_points: vec![qp.zero_point],
            axis: 0,
            dtype: qp.dtype,
        };
        values[id.0] = Some(ort::qdq::quantize_linear(&x.data, &x.dims, &axis)?);
    }
    for (i, node) in g.nodes().iter().enumerate() {
        let at = |e: Error| Error::Graph {
            at: format!("node '{}' ({})", node.name, node.op.kind()),
            message: e.to_string(),
        };
        let arg = |k: usize| -> &[u8] {
            values[node.inputs[k].0]
                .as_deref()
                .expect("inputs come first")
        };
        let xd = &g.value(node.inputs[0]).dims;
        let xq = &m.qparams[node.inputs[0].0];
        let yq = &m.qparams[node.output.0];
        let yd = &g.value(node.output).dims;
        let need_weight = || {
            m.weights[i]
                .as_ref()
                .ok_or_else(|| Error::InvalidParameter("the node has no quantized weight".into()))
        };
        let y = (|| -> Result<Vec<u8>> {
            match &node.op {
                Op::Conv2d(c) => {
                    if c.act != Activation::None {
                        return Err(Error::InvalidParameter(
                            "a fused activation after a quantized conv is not supported".into(),
                        ));
                    }
                    let w = need_weight()?;
                    let wd = dims4(&c.weight.dims)?;
                    let s = ConvShape::new(dims4(xd)?, wd, c.params)?;
                    ort::conv::qlinear_conv(arg(0), xq, &weight(w), w.bias.as_deref(), yq, &s)
                }
                Op::Linear(l) => {
                    if l.act != Activation::None {
                        return Err(Error::InvalidParameter(
                            "a fused activation after a quantized gemm is not supported".into(),
                        ));
                    }
                    let w = need_weight()?;
                    let [o, k] = [l.weight.dims[0], l.weight.dims[1]];
                    let rows: usize = xd[..xd.len() - 1].iter().product();
                    let s = ConvShape::new([rows, k, 1, 1], [o, k, 1, 1], ConvParams::default())?;
                    ort::conv::qlinear_conv(arg(0), xq, &weight(w), w.bias.as_deref(), yq, &s)
                }
                Op::Add {
                    act: Activation::None,
                } => {
                    let bq = &m.qparams[node.inputs[1].0];
                    ort::add::qlinear_add(add, arg(0), xq, arg(1), bq, yq)
                }
                Op::Concat { axis } => {
                    let ins: Vec<CatInput<'_>> = node
                        .inputs
                        .iter()
                        .enumerate()
                        .map(|(k, v)| CatInput {
                            data: arg(k),
                            dims: &g.value(*v).dims,
                            qp: &m.qparams[v.0],
                        })
                        .collect();
                    Ok(ort::concat::qlinear_concat(&ins, *axis, yq)?.0)
                }
                Op::MaxPool2d(p) => {
                    same_qparams(xq, yq, "MaxPool")?;
                    Ok(ort::pool::max_pool(arg(0), dims4(xd)?, xq, p)?.0)
                }
                Op::AvgPool2d {
                    pool,
                    count_include_pad,
                    divisor_override: None,
                } if !pool.ceil_mode && pool.dilation == [1, 1] => {
                    let p = ort::pool::AvgPoolParams {
                        kernel: pool.kernel,
                        stride: pool.stride,
                        pads: [
                            pool.padding[0],
                            pool.padding[1],
                            pool.padding[0],
                            pool.padding[1],
                        ],
                        count_include_pad: *count_include_pad,
                    };
                    Ok(ort::pool::qlinear_average_pool(arg(0), dims4(xd)?, xq, &p, yq)?.0)
                }
                Op::AdaptiveAvgPool2d { output: [1, 1] } => {
                    ort::pool::qlinear_global_average_pool(arg(0), dims4(xd)?, xq, yq)
                }
                Op::Reshape { .. } => {
                    same_qparams(xq, yq, "Flatten/Reshape")?;
                    Ok(arg(0).to_vec())
                }
                other => Err(Error::InvalidParameter(format!(
                    "{} is not an op squint runs with ONNX Runtime's int8 formulas",
                    other.kind()
                ))),
            }
        })()
        .map_err(at)?;
        if y.len() != yd.iter().product::<usize>() {
            return Err(at(Error::Shape(format!(
                "{} values for dims {yd:?}",
                y.len()
            ))));
        }
        values[node.output.0] = Some(y);
    }
    let values: Vec<Vec<u8>> = values
        .into_iter()
        .map(|v| v.expect("every value is computed"))
        .collect();
    let outputs = g
        .outputs()
        .iter()
        .map(|o| {
            let qp = m.qparams[o.0];
            let data = values[o.0]
                .iter()
                .map(|&b| ort::qdq::dequantize_value(b, &qp))
                .collect();
            Tensor::new(g.value(*o).dims.clone(), data)
        })
        .collect::<Result<_>>()?;
    Ok(QdqRun { values, outputs })
}
