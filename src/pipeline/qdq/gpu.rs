//! [`QdqGpu`]: a QDQ model's int8 ops on a GPU, node by node ([`super::run`]) or with the
//! values kept on the device ([`QdqGpu::run_resident`]).

use super::{
    cached_layer, check_output_len, conv_args, dequantized_outputs, node_error, quantized_inputs,
    run_node, run_qparams, shift_back, AddTables, LayerKey, QdqBackend, QdqRun,
};
use crate::cpu::reference::cat::CatInput;
use crate::cpu::reference::ort::{self, add::QLinearAddKernel};
use crate::cpu::reference::pool::Pool2dParams;
use crate::error::{Error, Result};
use crate::gpu::{AvgPoolPlan, FloatAvgPoolPlan, GpuContext, GpuConv2d, GpuTensor, LutInput};
use crate::graph::{Activation, Op};
use crate::io::onnx_qdq::{QdqModel, QdqWeight};
use crate::pipeline::qgraph::gpu::Resident;
use crate::pipeline::qgraph::QTensor;
use crate::quant::{QDtype, QParams};
use crate::shape::ConvShape;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// The ops on a GPU: convs and gemms on the GPU conv with
/// [`ort_epilogue`](super::ort_epilogue); add and concat through byte tables the host computes
/// with the reference on every byte (pair), gathered on the GPU; max pool, global average
/// pool and `QLinearAveragePool` (a float sum of dequantized taps, divided twice: the
/// float-average mode of the pool kernel, in integer-emulated binary32) on the GPU's pool
/// kernels. [`QdqGpu::run_resident`] keeps the convs' and adds' values on the device.
#[derive(Debug)]
pub struct QdqGpu {
    ctx: GpuContext,
    add: QLinearAddKernel,
    /// The add's byte-pair tables, computed once per (a, b, y) qparams.
    add_tables: AddTables,
    /// Each conv's layer (weights and epilogue on the GPU), reused for the same weight,
    /// qparams and shape.
    layers: HashMap<usize, (LayerKey, GpuConv2d)>,
    /// The adds' tables on the device for [`QdqGpu::run_resident`], by (a, b, y) qparams.
    device_add_tables: Vec<([QParams; 3], GpuTensor)>,
}

impl QdqGpu {
    /// A backend on `ctx` reproducing ORT's `add` kernel.
    pub fn new(ctx: GpuContext, add: QLinearAddKernel) -> Self {
        QdqGpu {
            ctx,
            add,
            add_tables: AddTables::default(),
            layers: HashMap::new(),
            device_add_tables: Vec::new(),
        }
    }
}

impl QdqBackend for QdqGpu {
    fn add_kernel(&self) -> QLinearAddKernel {
        self.add
    }
    fn conv(
        &mut self,
        node: usize,
        w: &QdqWeight,
        x: &[u8],
        x_qp: &QParams,
        y_qp: &QParams,
        s: &ConvShape,
    ) -> Result<Vec<u8>> {
        let ctx = self.ctx.clone();
        let layer = self.layer(node, w, x_qp, y_qp, s)?;
        crate::gpu::conv2d_quantized_with(&ctx, layer, x, x_qp, s)
    }
    fn add(
        &mut self,
        a: &[u8],
        a_qp: &QParams,
        b: &[u8],
        b_qp: &QParams,
        y_qp: &QParams,
    ) -> Result<Vec<u8>> {
        let qps = [*a_qp, *b_qp, *y_qp];
        let t = self.add_tables_for(qps)?;
        self.ctx.binary_bytes(a, b, &t, a.len())
    }
    fn concat(&mut self, xs: &[CatInput<'_>], axis: usize, y_qp: &QParams) -> Result<Vec<u8>> {
        let all: Vec<u8> = (0..=255u8).collect();
        let first = xs
            .first()
            .ok_or_else(|| Error::Shape("concat: no inputs".into()))?;
        let outer: usize = first.dims[..axis].iter().product();
        let mut tables = Vec::with_capacity(xs.len());
        for x in xs {
            let one = CatInput {
                data: &all,
                dims: &[256],
                qp: x.qp,
            };
            let t = ort::concat::qlinear_concat(&[one], 0, y_qp)?.0;
            tables.push(
                <[u8; 256]>::try_from(t.as_slice())
                    .map_err(|_| Error::Gpu("a byte table does not have 256 entries".into()))?,
            );
        }
        let inputs: Vec<LutInput<'_>> = xs
            .iter()
            .zip(&tables)
            .map(|(x, t)| LutInput {
                data: x.data,
                block: x.dims[axis..].iter().product(),
                table: t,
            })
            .collect();
        self.ctx.concat_bytes(&inputs, outer)
    }
    fn max_pool(
        &mut self,
        x: &[u8],
        d: [usize; 4],
        qp: &QParams,
        p: &Pool2dParams,
    ) -> Result<Vec<u8>> {
        // ORT's max pool ignores padded taps: the generic kernel's skipped taps.
        self.ctx.max_pool2d_bytes(x, d, qp.dtype, p, false)
    }
    fn avg_pool(
        &mut self,
        x: &[u8],
        d: [usize; 4],
        x_qp: &QParams,
        p: &ort::pool::AvgPoolParams,
        y_qp: &QParams,
    ) -> Result<Vec<u8>> {
        ort::qdq::check_qparams("QLinearAveragePool x", x_qp)?;
        ort::qdq::check_qparams("QLinearAveragePool y", y_qp)?;
        let Some(win) = ort::pool::average_pool_windows([d[2], d[3]], p)? else {
            return self.global_avg_pool(x, d, x_qp, y_qp);
        };
        let r = y_qp.dtype.full_range();
        let range = |v: &[[usize; 2]]| v.iter().map(|&[a, b]| [a as u32, b as u32]).collect();
        // The float sum of dequantized taps, / count, / sy, + zy, rounded: ORT's formula in
        // the GPU's integer-emulated binary32.
        let plan = FloatAvgPoolPlan {
            rows: range(&win.rows),
            cols: range(&win.cols),
            divisors: win.counts.iter().map(|&c| c as f32).collect(),
            tap_zp: x_qp.zero_point,
            x_scale: x_qp.scale,
            y_scale: y_qp.scale,
            add: y_qp.zero_point as f32,
            post_add: 0,
            clamp: [r.min, r.max],
        };
        self.ctx.float_avg_pool2d_bytes(x, d, x_qp.dtype, &plan)
    }
    fn global_avg_pool(
        &mut self,
        x: &[u8],
        d: [usize; 4],
        x_qp: &QParams,
        y_qp: &QParams,
    ) -> Result<Vec<u8>> {
        ort::qdq::check_qparams("QLinearGlobalAveragePool x", x_qp)?;
        ort::qdq::check_qparams("QLinearGlobalAveragePool y", y_qp)?;
        let m = ort::pool::global_average_pool_scale(x_qp, y_qp, d[2] * d[3])?;
        let r = y_qp.dtype.full_range();
        // (Σ x − zx·N) · m, rounded, + zy: the reference's exact int32 sum, then
        // MlasRequantizeOutput.
        let plan = AvgPoolPlan {
            rows: vec![[0, d[2] as u32]],
            cols: vec![[0, d[3] as u32]],
            multipliers: vec![m],
            tap_zp: x_qp.zero_point,
            add: None,
            post_add: y_qp.zero_point,
            clamp: [r.min, r.max],
        };
        self.ctx.avg_pool2d_bytes(x, d, x_qp.dtype, &plan)
    }
}

impl QdqGpu {
    /// Runs `m` on float `inputs` on this backend's device and returns its outputs,
    /// dequantized as `DequantizeLinear` does: bit for bit [`super::run`]'s outputs on this
    /// backend (hence ONNX Runtime's), without a round trip per node. Convs and gemms of 4-D
    /// values (`QLinearConv`) and adds of two values of the same dims (`QLinearAdd`, one of
    /// them on the device) read and write device tensors, queued without waiting; every other
    /// op (pools, concat, gemm, reshape, broadcast adds) runs as [`QdqBackend`] does, on
    /// inputs read back where they are on the device only, and its output is uploaded when a
    /// conv or add needs it. Only the graph's outputs and the host ops' inputs are read back.
    pub fn run_resident(
        &mut self,
        m: &QdqModel,
        inputs: &[Tensor<f32>],
    ) -> Result<Vec<Tensor<f32>>> {
        let qparams = run_qparams(m)?;
        let mut values = self.resident_values(m, &qparams, inputs)?;
        let ctx = self.ctx.clone();
        for o in m.graph.outputs() {
            (values[o.0].as_mut())
                .expect("graph outputs are computed")
                .host(&ctx)?;
        }
        // Only the outputs' bytes are read (the other values may be on the device only).
        let bytes: Vec<&[u8]> = (values.iter())
            .map(|v| {
                v.as_ref()
                    .and_then(|v| v.host.as_ref())
                    .map_or(&[][..], |t| &t.data)
            })
            .collect();
        dequantized_outputs(m, &qparams, &bytes)
    }

    /// [`QdqGpu::run_resident`] with every value read back at the end: [`super::run`]'s
    /// [`QdqRun`] bit for bit, with one read-back per value instead of an upload and a
    /// read-back per node (what `squint run --device gpu` uses, whose `--cross-check`
    /// compares every value).
    pub fn run_resident_values(&mut self, m: &QdqModel, inputs: &[Tensor<f32>]) -> Result<QdqRun> {
        let qparams = run_qparams(m)?;
        let ctx = self.ctx.clone();
        let mut values: Vec<Vec<u8>> = (self.resident_values(m, &qparams, inputs)?.into_iter())
            .map(|v| Ok(v.expect("every value is computed").host(&ctx)?.data.clone()))
            .collect::<Result<_>>()?;
        let outputs = {
            let bytes: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            dequantized_outputs(m, &qparams, &bytes)?
        };
        shift_back(m, &mut values);
        Ok(QdqRun { values, outputs })
    }

    /// Every value of `m` run on `inputs` with the activation qparams `qparams` (see
    /// [`QdqGpu::run_resident`]).
    fn resident_values(
        &mut self,
        m: &QdqModel,
        qparams: &[QParams],
        inputs: &[Tensor<f32>],
    ) -> Result<Vec<Option<Resident>>> {
        let g = &m.graph;
        let mut values: Vec<Option<Resident>> = (quantized_inputs(m, qparams, inputs)?)
            .into_iter()
            .enumerate()
            .map(|(id, v)| {
                v.map(|data| {
                    Resident::on_host(QTensor {
                        data,
                        dims: g.values()[id].dims.clone(),
                        qp: qparams[id],
                    })
                })
            })
            .collect();
        for (i, node) in g.nodes().iter().enumerate() {
            let v = (self.resident_node(m, qparams, i, &mut values))
                .map_err(|e| node_error(m, i, e))?;
            if let Some(h) = &v.host {
                check_output_len(m, i, h.data.len())?;
            }
            values[node.output.0] = Some(v);
        }
        Ok(values)
    }

    /// Node `i` of [`QdqGpu::resident_values`] on `values` (its inputs computed).
    fn resident_node(
        &mut self,
        m: &QdqModel,
        qparams: &[QParams],
        i: usize,
        values: &mut [Option<Resident>],
    ) -> Result<Resident> {
        let ctx = self.ctx.clone();
        let node = &m.graph.nodes()[i];
        let (x_qp, y_qp) = (qparams[node.inputs[0].0], qparams[node.output.0]);
        let dims = m.graph.value(node.output).dims.clone();
        match &node.op {
            Op::Conv2d(c) => {
                let (w, s) = conv_args(m, i, c)?;
                let x = values[node.inputs[0].0]
                    .as_mut()
                    .expect("inputs come first");
                let xt = x.dev(&ctx)?;
                let y = self.layer(i, w, &x_qp, &y_qp, &s)?.run(&ctx, &xt, &x_qp)?;
                if y.dims.as_slice() != dims {
                    return Err(Error::Shape(format!(
                        "the conv gave dims {:?}, the graph expects {dims:?}",
                        y.dims
                    )));
                }
                return Ok(Resident::on_device(dims, y_qp, y));
            }
            Op::Add {
                act: Activation::None,
            } => {
                let qps = [x_qp, qparams[node.inputs[1].0], y_qp];
                let ab = [node.inputs[0].0, node.inputs[1].0];
                if let Some(y) = self.add_on_device(values, ab, qps, &dims)? {
                    return Ok(Resident::on_device(dims, y_qp, y));
                }
            }
            _ => {}
        }
        // A host op: its inputs read back where they are on the device only.
        for v in &node.inputs {
            (values[v.0].as_mut())
                .expect("inputs come first")
                .host(&ctx)?;
        }
        let args: Vec<&[u8]> = (node.inputs.iter())
            .map(|v| {
                let r = values[v.0].as_ref().expect("inputs come first");
                r.host.as_ref().expect("read back above").data.as_slice()
            })
            .collect();
        let data = run_node(m, qparams, i, &args, self)?;
        Ok(Resident::on_host(QTensor {
            data,
            dims,
            qp: y_qp,
        }))
    }

    /// `QLinearAdd` of values `a` and `b` (qparams `qps`: a, b, y) on the device, where they
    /// and the output (`y_dims`) have the same 4-D dims and one of them is there (the other
    /// is uploaded): every element is its byte pair's entry in the add's table. `None`
    /// otherwise (the host path then runs it, or reports what is wrong with it).
    fn add_on_device(
        &mut self,
        values: &mut [Option<Resident>],
        [a, b]: [usize; 2],
        qps: [QParams; 3],
        y_dims: &[usize],
    ) -> Result<Option<GpuTensor>> {
        let (Some(ra), Some(rb)) = (&values[a], &values[b]) else {
            return Ok(None);
        };
        let same = ra.dims == rb.dims && ra.dims == y_dims;
        if !same || ra.dims.len() != 4 || (ra.dev.is_none() && rb.dev.is_none()) {
            return Ok(None);
        }
        let ctx = self.ctx.clone();
        let mut dev = |v: usize| values[v].as_mut().expect("inputs come first").dev(&ctx);
        let (ta, tb) = (dev(a)?, dev(b)?);
        let kept = self.device_add_tables.iter().find(|(k, _)| *k == qps);
        let tables = match kept {
            Some((_, t)) => t.clone(),
            None => {
                let t = self.add_tables_for(qps)?;
                let t = ctx.upload_q(&t, [1, 1, 1, t.len()], QDtype::QUInt8)?;
                if self.device_add_tables.len() >= 16 {
                    self.device_add_tables.clear();
                }
                self.device_add_tables.push((qps, t.clone()));
                t
            }
        };
        Ok(Some(ctx.binary_tensors(
            (&ta, &tb),
            &tables,
            false,
            qps[2].dtype,
        )?))
    }

    /// The add's byte-pair table of qparams `qps` (a, b, y) twice: the binary kernel's two
    /// halves (for operands split at an element) are both this one.
    fn add_tables_for(&mut self, qps: [QParams; 3]) -> Result<Vec<u8>> {
        let t = (self.add_tables.get(self.add, qps, true)?)
            .ok_or_else(|| Error::Gpu("the add's byte-pair table was not built".into()))?;
        Ok([t, t].concat())
    }

    /// The GPU layer of conv node `node` (built with [`super::ort_epilogue`], cached while
    /// its weight, qparams and shape stay the same).
    fn layer(
        &mut self,
        node: usize,
        w: &QdqWeight,
        x_qp: &QParams,
        y_qp: &QParams,
        s: &ConvShape,
    ) -> Result<&GpuConv2d> {
        let ctx = &self.ctx;
        cached_layer(&mut self.layers, node, w, x_qp, y_qp, s, |w8, w_qp, epi| {
            crate::gpu::check_conv2d_layer_args(None, x_qp, w8, w_qp, epi, s)?;
            GpuConv2d::new(ctx, w8, s.weight_dims(), w_qp, epi, s.params)
        })
    }
}
