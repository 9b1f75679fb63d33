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
//!
//! The run loop ([`run`]) calls one [`QdqBackend`] method per node: [`QdqReference`] (the
//! scalar ops above, the specification), [`QdqFastCpu`] (convs and gemms on the SIMD conv) and
//! [`QdqGpu`] (every op on the GPU; `QLinearAveragePool`'s float steps in the GPU's
//! integer-emulated binary32, division included). The convs of both fast paths
//! use [`ort_epilogue`]: ORT's requantization written as a squint [`Epilogue`].
//! [`QdqGpu::run_resident`] keeps the convs' and adds' values on the device, reading back only
//! what the other ops and the outputs need: the same bits without a round trip per node.

mod gpu;

pub use gpu::QdqGpu;

use crate::cpu::fast::{FastConvOptions, PackedConv2d};
use crate::cpu::reference::cat::CatInput;
use crate::cpu::reference::ort::{self, add::QLinearAddKernel, conv::QWeight};
use crate::cpu::reference::pool::Pool2dParams;
use crate::error::{Error, Result};
use crate::graph::{Activation, Conv2dOp, Op};
use crate::io::onnx_qdq::{QdqModel, QdqWeight};
use crate::quant::{Epilogue, QDtype, QParams, QScheme, RequantFormula, WeightQParams};
use crate::shape::{ConvParams, ConvShape};
use crate::tensor::Tensor;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

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

/// One method per int8 op of a QDQ model, ONNX Runtime's formulas on some device; every
/// backend gives [`QdqReference`]'s bytes. Every op but the conv defaults to the reference's
/// ([`crate::cpu::reference::ort`]), which a backend overrides where it has its own kernel.
pub trait QdqBackend {
    /// The `QLinearAdd` kernel (of the ORT build) to reproduce.
    fn add_kernel(&self) -> QLinearAddKernel;
    /// `QLinearConv` / `QGemm` (a gemm as a 1x1 conv) of node `node` with its weight `w`.
    fn conv(
        &mut self,
        node: usize,
        w: &QdqWeight,
        x: &[u8],
        x_qp: &QParams,
        y_qp: &QParams,
        s: &ConvShape,
    ) -> Result<Vec<u8>>;
    /// `QLinearAdd` of two tensors of equal dims.
    fn add(
        &mut self,
        a: &[u8],
        a_qp: &QParams,
        b: &[u8],
        b_qp: &QParams,
        y_qp: &QParams,
    ) -> Result<Vec<u8>> {
        ort::add::qlinear_add(self.add_kernel(), a, a_qp, b, b_qp, y_qp)
    }
    /// `QLinearConcat`.
    fn concat(&mut self, xs: &[CatInput<'_>], axis: usize, y_qp: &QParams) -> Result<Vec<u8>> {
        Ok(ort::concat::qlinear_concat(xs, axis, y_qp)?.0)
    }
    /// 8-bit `MaxPool`.
    fn max_pool(
        &mut self,
        x: &[u8],
        d: [usize; 4],
        qp: &QParams,
        p: &Pool2dParams,
    ) -> Result<Vec<u8>> {
        Ok(ort::pool::max_pool(x, d, qp, p)?.0)
    }
    /// `QLinearAveragePool`.
    fn avg_pool(
        &mut self,
        x: &[u8],
        d: [usize; 4],
        x_qp: &QParams,
        p: &ort::pool::AvgPoolParams,
        y_qp: &QParams,
    ) -> Result<Vec<u8>> {
        Ok(ort::pool::qlinear_average_pool(x, d, x_qp, p, y_qp)?.0)
    }
    /// `QLinearGlobalAveragePool`.
    fn global_avg_pool(
        &mut self,
        x: &[u8],
        d: [usize; 4],
        x_qp: &QParams,
        y_qp: &QParams,
    ) -> Result<Vec<u8>> {
        ort::pool::qlinear_global_average_pool(x, d, x_qp, y_qp)
    }
}

/// The specification: [`crate::cpu::reference::ort`]'s scalar ops.
#[derive(Debug, Clone, Copy)]
pub struct QdqReference {
    /// The `QLinearAdd` kernel to reproduce.
    pub add: QLinearAddKernel,
}

impl QdqBackend for QdqReference {
    fn add_kernel(&self) -> QLinearAddKernel {
        self.add
    }
    fn conv(
        &mut self,
        _node: usize,
        w: &QdqWeight,
        x: &[u8],
        x_qp: &QParams,
        y_qp: &QParams,
        s: &ConvShape,
    ) -> Result<Vec<u8>> {
        ort::conv::qlinear_conv(x, x_qp, &weight(w), w.bias.as_deref(), y_qp, s)
    }
}

/// ORT's requantization of a conv as a squint [`Epilogue`]: the qnnpack record
/// `w` as an int8 weight with the same `w − ζ` everywhere: a uint8 weight's bytes XOR 0x80
/// (`w − 128` as i8) with zero points `ζ − 128`; an int8 weight as it is. The fast paths take
/// int8 weights with any zero points, so this runs uint8-weight convs there exactly.
pub fn as_int8_weight(w: &QdqWeight) -> Cow<'_, QdqWeight> {
    match w.dtype {
        QDtype::QInt8 => Cow::Borrowed(w),
        QDtype::QUInt8 => Cow::Owned(QdqWeight {
            data: w.data.iter().map(|&b| b ^ 0x80).collect(),
            dtype: QDtype::QInt8,
            scales: w.scales.clone(),
            zero_points: w.zero_points.iter().map(|&z| z - 128).collect(),
            bias: w.bias.clone(),
        }),
    }
}

/// `rne(f32(f32(acc + bias) · M)) + zp`, clamped, with ORT's int32 bias and ORT's scale
/// `M = f32(f32(sx·sw)/sy)` ([`ort::qdq::output_scale`]), which is `MlasRequantizeOutput`
/// (clamping before or after rounding gives the same ints). int8 weights only.
pub fn ort_epilogue(
    w: &QdqWeight,
    x_qp: &QParams,
    y_qp: &QParams,
    c_out: usize,
) -> Result<(WeightQParams, Epilogue)> {
    if w.dtype != QDtype::QInt8 {
        return Err(Error::InvalidParameter(
            "ort_epilogue takes int8 weights (see as_int8_weight)".into(),
        ));
    }
    let per_channel = w.scales.len() > 1;
    let affine = w.zero_points.iter().any(|&z| z != 0);
    let scheme = match (per_channel, affine) {
        (false, false) => QScheme::PerTensorSymmetric,
        (false, true) => QScheme::PerTensorAffine,
        (true, false) => QScheme::PerChannelSymmetric,
        (true, true) => QScheme::PerChannelAffine,
    };
    let w_qp = WeightQParams {
        scheme,
        scales: w.scales.clone(),
        zero_points: w.zero_points.clone(),
    };
    let mut epi = Epilogue::new(
        RequantFormula::Qnnpack,
        x_qp.scale,
        &w_qp,
        None,
        *y_qp,
        false,
        c_out,
    )?;
    for (o, ch) in epi.channels.iter_mut().enumerate() {
        let sw = w.scales[if per_channel { o } else { 0 }];
        ch.mult = ort::qdq::output_scale(x_qp.scale, sw, y_qp.scale);
        ch.bias_i32 = w.bias.as_ref().map_or(0, |b| b[o]);
    }
    Ok((w_qp, epi))
}

fn as_i8(b: &[u8]) -> Vec<i8> {
    b.iter().map(|&v| v as i8).collect()
}

/// What a cached conv layer (of [`QdqFastCpu`] or [`QdqGpu`]) was built for.
#[derive(Debug, Clone, PartialEq)]
struct LayerKey {
    w: QdqWeight,
    x_qp: QParams,
    y_qp: QParams,
    shape: ConvShape,
}

impl LayerKey {
    fn matches(&self, w: &QdqWeight, x_qp: &QParams, y_qp: &QParams, s: &ConvShape) -> bool {
        // The same allocation holds the same bytes (they are immutable behind the `Arc`): no
        // byte comparison then, which for large weights cost more than their conv.
        let same_bytes = Arc::ptr_eq(&self.w.data, &w.data) || self.w.data == w.data;
        self.x_qp == *x_qp
            && self.y_qp == *y_qp
            && self.shape == *s
            && same_bytes
            && (
                self.w.dtype,
                &self.w.scales,
                &self.w.zero_points,
                &self.w.bias,
            ) == (w.dtype, &w.scales, &w.zero_points, &w.bias)
    }
}

/// The layer of node `node`: the cached one when it was built for the same weight, qparams
/// and shape, else `build` (given the int8 weight, [`as_int8_weight`], and ORT's epilogue)
/// makes one and the cache keeps it.
#[allow(clippy::too_many_arguments)]
fn cached_layer<'a, L>(
    layers: &'a mut HashMap<usize, (LayerKey, L)>,
    node: usize,
    w: &QdqWeight,
    x_qp: &QParams,
    y_qp: &QParams,
    s: &ConvShape,
    build: impl FnOnce(&[i8], &WeightQParams, &Epilogue) -> Result<L>,
) -> Result<&'a L> {
    if !layers
        .get(&node)
        .is_some_and(|(k, _)| k.matches(w, x_qp, y_qp, s))
    {
        let w8 = as_int8_weight(w);
        let (w_qp, epi) = ort_epilogue(&w8, x_qp, y_qp, s.c_out)?;
        let layer = build(&as_i8(&w8.data), &w_qp, &epi)?;
        let key = LayerKey {
            w: w.clone(),
            x_qp: *x_qp,
            y_qp: *y_qp,
            shape: *s,
        };
        layers.insert(node, (key, layer));
    }
    Ok(&layers[&node].1)
}

/// `QLinearAdd` as byte-pair tables: an element's sum depends on its two bytes and the
/// qparams alone (every kernel of `ort::add` computes each element on its own), so the
/// reference evaluated on all 65 536 pairs, `t[a << 8 | b]`, gives every sum of those qparams.
/// Kept per kernel and (a, b, y) qparams.
#[derive(Debug, Default)]
struct AddTables {
    tables: Vec<(AddKey, Vec<u8>)>,
    /// Keys seen once without a table (see [`AddTables::get`]).
    seen: Vec<AddKey>,
}

type AddKey = (QLinearAddKernel, [QParams; 3]);

impl AddTables {
    /// The table of these qparams, built now if `build_now` or on the second sight of its key
    /// (a model run again: its 65 536 reference evaluations cost more than a small add's
    /// elements); `None` when neither.
    fn get(
        &mut self,
        kernel: QLinearAddKernel,
        qps: [QParams; 3],
        build_now: bool,
    ) -> Result<Option<&[u8]>> {
        let key = (kernel, qps);
        if let Some(i) = self.tables.iter().position(|(k, _)| *k == key) {
            return Ok(Some(&self.tables[i].1));
        }
        if !build_now && !self.seen.contains(&key) {
            self.seen.push(key);
            return Ok(None);
        }
        let (pa, pb): (Vec<u8>, Vec<u8>) =
            (0..1usize << 16).map(|p| ((p >> 8) as u8, p as u8)).unzip();
        let [a, b, y] = qps;
        let t = ort::add::qlinear_add(kernel, &pa, &a, &pb, &b, &y)?;
        self.tables.push((key, t));
        Ok(self.tables.last().map(|(_, t)| t.as_slice()))
    }
}

/// Convs on the fast CPU path ([`PackedConv2d`], packed once per node, with [`ort_epilogue`];
/// uint8 weights through [`as_int8_weight`]); adds of ORT's AVX2 kernel in vectors
/// ([`crate::cpu::fast::qlinear_add_avx2`], where the CPU has AVX2 and FMA), of the other
/// kernels through byte-pair tables of the reference (for adds of 2^16 elements or more, or
/// qparams seen before); the other ops on the reference. A packed layer is reused only for
/// the same weight, qparams and shape (one backend may run several models).
#[derive(Debug, Default)]
pub struct QdqFastCpu {
    /// The `QLinearAdd` kernel to reproduce.
    pub add: Option<QLinearAddKernel>,
    layers: HashMap<usize, (LayerKey, PackedConv2d)>,
    add_tables: AddTables,
    /// The previous [`QdqFastCpu::run_outputs`]' value buffers, which its convs write into.
    spare: Vec<Vec<u8>>,
}

impl QdqFastCpu {
    /// Runs `m` on `inputs` ([`run`]) on a worker of the current (or global) thread pool, so
    /// that each conv forks and joins from inside it (`crate::cpu::fast::on_pool`): the same
    /// results as `run(m, inputs, self)`.
    pub fn run(&mut self, m: &QdqModel, inputs: &[Tensor<f32>]) -> Result<QdqRun> {
        crate::cpu::fast::on_pool(None, || run(m, inputs, self))
    }

    /// [`QdqFastCpu::run`]'s graph outputs only, as a runtime computes them: the stored
    /// values are kept for the next call, whose convs write their outputs into them rather
    /// than into newly allocated and zeroed buffers (on a MobileNetV2, a tenth of an int8 run
    /// went to zeroing and faulting in fresh output pages). The same outputs as `run`.
    pub fn run_outputs(
        &mut self,
        m: &QdqModel,
        inputs: &[Tensor<f32>],
    ) -> Result<Vec<Tensor<f32>>> {
        let r = self.run(m, inputs)?;
        self.spare = r.values;
        Ok(r.outputs)
    }

    /// A buffer of `n` bytes for a conv's output (whose every byte the conv overwrites): the
    /// shortest spare one that holds `n` bytes, cut to them, or a new one.
    fn output_buffer(&mut self, n: usize) -> Vec<u8> {
        let best = (self.spare.iter().enumerate())
            .filter(|(_, v)| v.len() >= n)
            .min_by_key(|(_, v)| v.len())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut v = self.spare.swap_remove(i);
                v.truncate(n);
                v
            }
            None => vec![0; n],
        }
    }
}

impl QdqBackend for QdqFastCpu {
    fn add_kernel(&self) -> QLinearAddKernel {
        self.add.unwrap_or_else(native_add_kernel)
    }
    fn add(
        &mut self,
        a: &[u8],
        a_qp: &QParams,
        b: &[u8],
        b_qp: &QParams,
        y_qp: &QParams,
    ) -> Result<Vec<u8>> {
        let kernel = self.add_kernel();
        // ORT's AVX2 kernel (every x86-64 CPU with AVX2 and FMA) in vectors, where this CPU
        // runs them.
        if kernel == QLinearAddKernel::Avx2 && a.len() == b.len() {
            if let Some(y) = crate::cpu::fast::qlinear_add_avx2(a, a_qp, b, b_qp, y_qp)? {
                return Ok(y);
            }
        }
        let big = a.len() >= 1 << 16;
        match self.add_tables.get(kernel, [*a_qp, *b_qp, *y_qp], big)? {
            Some(t) if a.len() == b.len() => Ok(crate::cpu::fast::par_bytes(a.len(), |s, out| {
                for ((o, &x), &y) in out.iter_mut().zip(&a[s..]).zip(&b[s..]) {
                    *o = t[usize::from(x) << 8 | usize::from(y)];
                }
            })),
            _ => ort::add::qlinear_add(kernel, a, a_qp, b, b_qp, y_qp),
        }
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
        crate::tensor::check_host_alloc(s.output_len(), 1, "the conv output")?;
        let mut y = self.output_buffer(s.output_len());
        let layer = cached_layer(&mut self.layers, node, w, x_qp, y_qp, s, |w8, w_qp, epi| {
            PackedConv2d::new(w8, s.weight_dims(), w_qp, epi, s.params)
        })?;
        layer.run_into(x, s.input_dims(), x_qp, &FastConvOptions::default(), &mut y)?;
        Ok(y)
    }
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

/// Refuses a model with int8 (signed) activations unless ONNX Runtime runs it in int8
/// throughout, naming the first value that keeps it from doing so.
///
/// ONNX Runtime's CPU provider on x86 runs int8 activations through its uint8 kernels: its
/// `QDQS8ToU8Transformer` shifts a `QuantizeLinear`/`DequantizeLinear` pair to uint8 (data and
/// zero point + 128, the same `x − zx` everywhere, hence the same results as squint's int8
/// formulas) only where the pair has a single reader, and its selectors refuse int8 inputs
/// for `QLinearConv` on x86 and mixed types for every op. So when a value is read by more than
/// one node (a residual branch), the nodes around it stay float ops between
/// `DequantizeLinear` and `QuantizeLinear` (ORT 1.32 on the tiny MobileNet: 6 of 12 convs,
/// both adds and the average pool), whose MLAS float arithmetic squint cannot reproduce bit for
/// bit; it refuses those models rather than answer differently (4 of that MobileNet's 20
/// logits would differ). A chain whose every value has one reader is fused entirely and runs
/// exactly (`tests/data/models/chain_int8`). `QuantType.QUInt8` activations, ORT's default,
/// are exact in every graph.
fn refuse_int8_activations(m: &QdqModel) -> Result<()> {
    let g = &m.graph;
    let mut readers = vec![0usize; g.values().len()];
    for node in g.nodes() {
        for v in &node.inputs {
            readers[v.0] += 1;
        }
    }
    for v in g.outputs() {
        readers[v.0] += 1;
    }
    let shared = g
        .values()
        .iter()
        .zip(&m.qparams)
        .zip(&readers)
        .find(|((_, qp), &r)| qp.dtype == QDtype::QInt8 && r > 1);
    match shared {
        None => Ok(()),
        Some(((v, _), r)) => Err(Error::Graph {
            at: format!("value '{}'", v.name),
            message: format!(
                "is quantized to int8 and read {r} times: ONNX Runtime on x86 moves only the \
                 int8 Q/DQ pairs with one reader to its uint8 kernels and runs the nodes around \
                 this one as float ops, whose float rounding squint cannot reproduce bit for \
                 bit; quantize with activation_type=QuantType.QUInt8 (ORT's default)"
            ),
        }),
    }
}

/// Runs `m` on float `inputs` with ONNX Runtime's int8 formulas on the CPU reference, `add`
/// being the `QLinearAdd` kernel to reproduce ([`native_add_kernel`] for this CPU's ORT).
pub fn run_reference(
    m: &QdqModel,
    inputs: &[Tensor<f32>],
    add: QLinearAddKernel,
) -> Result<QdqRun> {
    run(m, inputs, &mut QdqReference { add })
}

/// Runs `m` on float `inputs`, every int8 op on `backend`.
pub fn run(m: &QdqModel, inputs: &[Tensor<f32>], backend: &mut dyn QdqBackend) -> Result<QdqRun> {
    let qparams = run_qparams(m)?;
    let mut r = run_model(m, &qparams, inputs, backend)?;
    shift_back(m, &mut r.values);
    Ok(r)
}

/// The activation qparams `m` runs with, after refusing a model ONNX Runtime would not run
/// in int8 throughout ([`refuse_int8_activations`]): its own, or, where it has int8
/// activations, ORT's `QDQS8ToU8Transformer`'s: every int8 activation (each has one reader
/// here) runs as uint8 with its zero point + 128. Most formulas only see `x − zx` and give the
/// same ints shifted by 128, but a zero point added in float before rounding
/// (QLinearAveragePool's) does not, so squint runs the model ORT runs, then shifts back
/// ([`shift_back`]; dequantized outputs are the same either way).
fn run_qparams(m: &QdqModel) -> Result<Cow<'_, [QParams]>> {
    refuse_int8_activations(m)?;
    if !m.qparams.iter().any(|q| q.dtype == QDtype::QInt8) {
        return Ok(Cow::Borrowed(&m.qparams));
    }
    let shifted = (m.qparams.iter())
        .map(|q| match q.dtype {
            QDtype::QInt8 => QParams::new(q.scale, q.zero_point + 128, QDtype::QUInt8),
            QDtype::QUInt8 => Ok(*q),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Cow::Owned(shifted))
}

/// The stored bytes of values run with [`run_qparams`] as `m`'s own: int8 ones shifted back.
fn shift_back(m: &QdqModel, values: &mut [Vec<u8>]) {
    for (v, q) in values.iter_mut().zip(&m.qparams) {
        if q.dtype == QDtype::QInt8 {
            v.iter_mut().for_each(|b| *b ^= 0x80);
        }
    }
}

/// The graph inputs quantized as `QuantizeLinear` does (`qparams`: one per value), by value.
fn quantized_inputs(
    m: &QdqModel,
    qparams: &[QParams],
    inputs: &[Tensor<f32>],
) -> Result<Vec<Option<Vec<u8>>>> {
    let g = &m.graph;
    g.check_inputs(inputs)?;
    let mut values: Vec<Option<Vec<u8>>> = vec![None; g.values().len()];
    for (&id, x) in g.inputs().iter().zip(inputs) {
        // `ort::qdq::quantize_linear`'s bytes (per tensor), vectorized.
        ort::qdq::check_no_nan(&x.data)?;
        values[id.0] = Some(crate::cpu::fast::quantize_slice_ort(
            &x.data,
            &qparams[id.0],
        ));
    }
    Ok(values)
}

/// The error of node `i` of `m`, naming it.
fn node_error(m: &QdqModel, i: usize, e: Error) -> Error {
    let node = &m.graph.nodes()[i];
    Error::Graph {
        at: format!("node '{}' ({})", node.name, node.op.kind()),
        message: e.to_string(),
    }
}

/// Checks that node `i`'s output has as many bytes as its dims hold.
fn check_output_len(m: &QdqModel, i: usize, len: usize) -> Result<()> {
    let yd = &m.graph.value(m.graph.nodes()[i].output).dims;
    if len != yd.iter().product::<usize>() {
        return Err(node_error(
            m,
            i,
            Error::Shape(format!("{len} values for dims {yd:?}")),
        ));
    }
    Ok(())
}

/// The graph outputs of `values` (bytes of `qparams`), dequantized as `DequantizeLinear`
/// does.
fn dequantized_outputs(
    m: &QdqModel,
    qparams: &[QParams],
    values: &[&[u8]],
) -> Result<Vec<Tensor<f32>>> {
    (m.graph.outputs().iter())
        .map(|o| {
            let qp = qparams[o.0];
            let data = (values[o.0].iter())
                .map(|&b| ort::qdq::dequantize_value(b, &qp))
                .collect();
            Tensor::new(m.graph.value(*o).dims.clone(), data)
        })
        .collect()
}

/// [`run`] of `m` with the activation qparams `qparams` (one per value) in place of its own.
fn run_model(
    m: &QdqModel,
    qparams: &[QParams],
    inputs: &[Tensor<f32>],
    backend: &mut dyn QdqBackend,
) -> Result<QdqRun> {
    let mut values = quantized_inputs(m, qparams, inputs)?;
    for (i, node) in m.graph.nodes().iter().enumerate() {
        let args: Vec<&[u8]> = (node.inputs.iter())
            .map(|v| values[v.0].as_deref().expect("inputs come first"))
            .collect();
        let y = run_node(m, qparams, i, &args, backend).map_err(|e| node_error(m, i, e))?;
        check_output_len(m, i, y.len())?;
        values[node.output.0] = Some(y);
    }
    let values: Vec<Vec<u8>> = (values.into_iter())
        .map(|v| v.expect("every value is computed"))
        .collect();
    let bytes: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let outputs = dequantized_outputs(m, qparams, &bytes)?;
    Ok(QdqRun { values, outputs })
}

/// Node `i`'s weight and conv shape (`QLinearConv`, input dims from the graph; a conv with a
/// fused activation is not one of ORT's int8 ops).
fn conv_args<'m>(m: &'m QdqModel, i: usize, c: &Conv2dOp) -> Result<(&'m QdqWeight, ConvShape)> {
    if c.act != Activation::None {
        return Err(Error::InvalidParameter(
            "a fused activation after a quantized conv is not supported".into(),
        ));
    }
    let w = (m.weights[i].as_ref())
        .ok_or_else(|| Error::InvalidParameter("the node has no quantized weight".into()))?;
    let xd = &m.graph.value(m.graph.nodes()[i].inputs[0]).dims;
    let s = ConvShape::new(dims4(xd)?, dims4(&c.weight.dims)?, c.params)?;
    Ok((w, s))
}

/// Node `i` of `m` on `backend`, its inputs' bytes `args` (activation qparams `qparams`).
fn run_node(
    m: &QdqModel,
    qparams: &[QParams],
    i: usize,
    args: &[&[u8]],
    backend: &mut dyn QdqBackend,
) -> Result<Vec<u8>> {
    let g = &m.graph;
    let node = &g.nodes()[i];
    let arg = |k: usize| args[k];
    let xd = &g.value(node.inputs[0]).dims;
    let xq = &qparams[node.inputs[0].0];
    let yq = &qparams[node.output.0];
    let need_weight = || {
        m.weights[i]
            .as_ref()
            .ok_or_else(|| Error::InvalidParameter("the node has no quantized weight".into()))
    };
    match &node.op {
        Op::Conv2d(c) => {
            let (w, s) = conv_args(m, i, c)?;
            backend.conv(i, w, arg(0), xq, yq, &s)
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
            backend.conv(i, w, arg(0), xq, yq, &s)
        }
        Op::Add {
            act: Activation::None,
        } => {
            let bq = &qparams[node.inputs[1].0];
            let bd = &g.value(node.inputs[1]).dims;
            if xd != bd {
                // Broadcasting: ORT's BroadcastLooper on the host reference, for
                // every backend (its operand swap decides the float order).
                let kernel = backend.add_kernel();
                return Ok(ort::add::qlinear_add_broadcast(
                    kernel,
                    arg(0),
                    xd,
                    xq,
                    arg(1),
                    bd,
                    bq,
                    yq,
                )?
                .0);
            }
            backend.add(arg(0), xq, arg(1), bq, yq)
        }
        Op::Concat { axis } => {
            let ins: Vec<CatInput<'_>> = node
                .inputs
                .iter()
                .enumerate()
                .map(|(k, v)| CatInput {
                    data: arg(k),
                    dims: &g.value(*v).dims,
                    qp: &qparams[v.0],
                })
                .collect();
            backend.concat(&ins, *axis, yq)
        }
        Op::MaxPool2d(p) => {
            same_qparams(xq, yq, "MaxPool")?;
            backend.max_pool(arg(0), dims4(xd)?, xq, p)
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
            backend.avg_pool(arg(0), dims4(xd)?, xq, &p, yq)
        }
        Op::AdaptiveAvgPool2d { output: [1, 1] } => {
            backend.global_avg_pool(arg(0), dims4(xd)?, xq, yq)
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
}
