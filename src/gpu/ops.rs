//! The operations: quantize, dequantize, standalone requantize, and the int8 conv layer.
//!
//! Each operation records its dispatches (split to fit the device limits, see `buffers.rs`)
//! as one compute pass in its own command buffer, queued on the context and submitted with
//! the next read-back or [`GpuContext::flush`], so a chain such as quantize → conv → conv →
//! dequantize → read costs one submission and no read-back in between. Every call takes its
//! own scratch and output buffers from the context's pool, so several threads may run the same
//! [`GpuConv2d`] at once.
//!
//! # Conv kernels
//! [`GpuConv2d`] repacks its input with `conv_pack.wgsl` into quads (16 channels of one padded
//! pixel per vec4, in a texture on CPU adapters when it fits, else a buffer) and runs either
//! an implicit-GEMM kernel (every conv with more than one input channel per group:
//! `conv2d_gemm_tiled.wgsl` on GPUs, `conv2d_gemm.wgsl` on CPU adapters and where a tiled
//! workgroup's weights would exceed a binding) or the depthwise kernel `conv2d_dw.wgsl` (one
//! input channel per group), all with the requantization epilogue fused; see the shaders'
//! headers for the tiling. Depthwise convs of at most 8 kernel columns skip the repack: they
//! run on `conv2d_dw_direct.wgsl`, which reads the packed tensor itself (a texture copy of it
//! on CPU adapters), wherever one image's windows fit the bindings; the others (and every
//! depthwise conv with the hidden `dw_repacked` option) take the repacked path.

use std::sync::Arc;
use std::time::Duration;

use wgpu::util::DeviceExt;

use super::buffers::{
    check_dims, groups_for, groups_for_elementwise, packed_bytes, pass_durations, plane_words,
    read_back, record, storage_buffer_init, timestamp_queries, Dispatch, GpuF32Tensor, GpuTensor,
    Res, Slot, STORAGE_USAGE,
};
use super::context::GpuContext;
use super::conv_plan::{
    image_chunks, input_texture_copies, plane_workgroup, texture_rows, BandInput, ConvGeometry,
    ConvKernelLayout, InputDomain, KParallel, RowBand, ScratchLimits, ScratchPlan, TexelCopy, QUAD,
    TABLE_VEC4,
};
use super::gate::Gated;
use super::kernels::{
    BStaging, ConvDwDirectParams, ConvDwParams, ConvGemmParams, ConvPackParams, DequantizeParams,
    GemmVariant, Kernel, QuantizeParams, RequantizeParams,
};
use super::pipelines::{ConvPlan, Pipeline};
use super::pool::{Keep, PooledBuffer, PooledTexture};
use super::split::{plan, SplitLimits};
use crate::error::{Error, Result};
use crate::quant::{
    dequantize_one, inverse_scale, weight_abs_sums, ChannelRequant, Epilogue, QParams,
    QuantizeSteps, RequantFormula, StepTable, WeightQParams,
};
use crate::shape::{ConvParams, ConvShape};

/// Bytes of one `ChannelRequant` record.
const RECORD: u64 = std::mem::size_of::<ChannelRequant>() as u64;

/// Which way an elementwise kernel converts.
#[derive(Clone, Copy)]
enum Direction {
    /// Plain f32 in, packed 8-bit out (quantize).
    FloatToPacked,
    /// Packed 8-bit in, plain f32 out (dequantize).
    PackedToFloat,
}

/// One dispatch of an elementwise kernel: its items (packed words), the tensor geometry, and
/// the 4-byte-word offsets of its input and output windows.
struct Window {
    item_begin: u32,
    item_count: u32,
    plane: u32,
    plane_words: u32,
    in_base: u32,
    out_base: u32,
}

fn validate_qparams(qp: &QParams) -> Result<()> {
    QParams::new(qp.scale, qp.zero_point, qp.dtype).map(|_| ())
}

impl GpuContext {
    /// Quantizes a float tensor with per-tensor qparams, exactly as
    /// [`crate::quant::quantize_slice`] (PyTorch's `quantize_per_tensor`). The result stays on
    /// the GPU.
    pub fn quantize(&self, x: &GpuF32Tensor, qp: &QParams) -> Result<GpuTensor> {
        self.enter()?.quantize_here(x, qp)
    }

    fn quantize_here(&self, x: &GpuF32Tensor, qp: &QParams) -> Result<GpuTensor> {
        self.check_same(x.device_id, "quantize")?;
        validate_qparams(qp)?;
        let steps = QuantizeSteps::new(qp);
        let mut thresholds = [0u32; 256];
        thresholds[..steps.thresholds.len()].copy_from_slice(&steps.thresholds);
        // The scale of the kernel's float estimate (0 forces the table search, for tests).
        let inv_scale = if self.search_only() {
            0
        } else {
            inverse_scale(qp.scale).to_bits()
        };
        let out = self.elementwise(
            Kernel::Quantize,
            x.dims,
            &x.buffer,
            Direction::FloatToPacked,
            |w| QuantizeParams {
                item_begin: w.item_begin,
                item_count: w.item_count,
                plane: w.plane,
                plane_words: w.plane_words,
                x_base: w.in_base,
                y_base: w.out_base,
                inv_scale,
                zp: qp.zero_point,
                qmin: steps.qmin,
                qmax: steps.qmax,
                nan_q: steps.nan,
                _pad: 0,
                thresholds,
            },
        )?;
        Ok(GpuTensor {
            dims: x.dims,
            dtype: qp.dtype,
            buffer: out,
            device_id: self.id(),
        })
    }

    /// Dequantizes a packed tensor: `f32((q - zp) * scale)`, exactly as
    /// [`crate::quant::dequantize_slice`]. The result stays on the GPU.
    pub fn dequantize(&self, x: &GpuTensor, qp: &QParams) -> Result<GpuF32Tensor> {
        self.enter()?.dequantize_here(x, qp)
    }

    fn dequantize_here(&self, x: &GpuTensor, qp: &QParams) -> Result<GpuF32Tensor> {
        self.check_same(x.device_id, "dequantize")?;
        validate_qparams(qp)?;
        if qp.dtype != x.dtype {
            return Err(Error::InvalidParameter(format!(
                "dequantize: qparams are for {} but the tensor holds {}",
                qp.dtype, x.dtype
            )));
        }
        let mut values = [0u32; 256];
        for (b, v) in values.iter_mut().enumerate() {
            *v = dequantize_one(qp.dtype.byte_to_int(b as u8), qp).to_bits();
        }
        let out = self.elementwise(
            Kernel::Dequantize,
            x.dims,
            &x.buffer,
            Direction::PackedToFloat,
            |w| DequantizeParams {
                item_begin: w.item_begin,
                item_count: w.item_count,
                plane: w.plane,
                plane_words: w.plane_words,
                q_base: w.in_base,
                y_base: w.out_base,
                _pad: [0; 2],
                values,
            },
        )?;
        Ok(GpuF32Tensor {
            dims: x.dims,
            buffer: out,
            device_id: self.id(),
        })
    }

    /// Records an elementwise kernel between a plain f32 tensor and a packed 8-bit one of shape
    /// `dims`, reading `input`: items are the packed words (four values each), split into
    /// dispatches that fit the binding limits; `params` builds each dispatch's uniform from
    /// its [`Window`]. Returns the output buffer.
    fn elementwise<P: bytemuck::Pod>(
        &self,
        kernel: Kernel,
        dims: [usize; 4],
        input: &wgpu::Buffer,
        dir: Direction,
        params: impl Fn(Window) -> P,
    ) -> Result<Arc<PooledBuffer>> {
        let plane = (dims[2] * dims[3]) as u64;
        let pw = plane_words(dims) as u64;
        let total = (dims[0] * dims[1]) as u64 * pw;
        let split = self.split();
        // Byte ranges of the input and output windows of words [b, e).
        let ranges = |b: u64, e: u64| {
            let (p0, p1) = (b / pw, (e - 1) / pw);
            let f_lo = p0 * plane + (b % pw) * 4;
            let f_hi = p1 * plane + (((e - 1) % pw) * 4 + 4).min(plane);
            let (words, floats) = ((b * 4, e * 4), (f_lo * 4, f_hi * 4));
            match dir {
                Direction::FloatToPacked => vec![floats, words],
                Direction::PackedToFloat => vec![words, floats],
            }
        };
        let what = kernel.label();
        let chunks = plan(split, total, 64, what, &ranges)?;
        let (out_bytes, out_label) = match dir {
            Direction::FloatToPacked => (packed_bytes(dims), "squint packed tensor"),
            Direction::PackedToFloat => {
                (plane * (dims[0] * dims[1]) as u64 * 4, "squint f32 tensor")
            }
        };
        self.encode(what, |enc, _| {
            let pipe = self.pipeline(kernel, &[])?;
            let out = self.pooled_buffer(out_bytes, STORAGE_USAGE, out_label)?;
            let mut list = Vec::new();
            for &(b, e) in &chunks {
                let r = ranges(b, e);
                let ins = Slot::new(split, input, r[0].0, r[0].1);
                let outs = Slot::new(split, &out, r[1].0, r[1].1);
                let p = params(Window {
                    item_begin: b as u32,
                    item_count: (e - b) as u32,
                    plane: plane as u32,
                    plane_words: pw as u32,
                    in_base: ins.base(4),
                    out_base: outs.base(4),
                });
                list.push(Dispatch::new(
                    &pipe,
                    &p,
                    vec![Res::Buf(ins), Res::Buf(outs)],
                    groups_for_elementwise(e - b),
                ));
            }
            record(self, enc, &list, None)?;
            drop(list);
            Ok(out)
        })
    }

    /// Applies the epilogue to NCHW accumulators with `channels` channels of `plane` values
    /// each on the GPU, returning stored output bytes: the contract of
    /// [`crate::cpu::reference::requantize`] (same validation, same bytes).
    pub fn requantize(
        &self,
        acc: &[i32],
        epi: &Epilogue,
        channels: usize,
        plane: usize,
    ) -> Result<Vec<u8>> {
        self.enter()?.requantize_here(acc, epi, channels, plane)
    }

    fn requantize_here(
        &self,
        acc: &[i32],
        epi: &Epilogue,
        channels: usize,
        plane: usize,
    ) -> Result<Vec<u8>> {
        if epi.channels.len() != channels {
            return Err(Error::Shape(format!(
                "epilogue has {} channels, the tensor has {channels}",
                epi.channels.len()
            )));
        }
        if plane == 0 || channels == 0 || !acc.len().is_multiple_of(channels * plane) {
            return Err(Error::Shape(format!(
                "{} accumulators do not form [N, {channels}, {plane}]",
                acc.len()
            )));
        }
        if acc.is_empty() {
            return Ok(Vec::new());
        }
        let len = acc.len() as u64;
        if len > u32::MAX as u64 {
            return Err(Error::DeviceLimit(format!(
                "requantize: {len} accumulators exceed the 2^32 element indices of the kernel"
            )));
        }
        let (plane64, ch64) = (plane as u64, channels as u64);
        let total = len.div_ceil(4);
        let split = self.split();
        let ranges = |b: u64, e: u64| {
            let (i0, i1) = (b * 4, (e * 4).min(len) - 1);
            let (p0, p1) = (i0 / plane64, i1 / plane64);
            let (c0, c1) = (p0 % ch64, p1 % ch64);
            let (c_lo, c_hi) = if p1 - p0 >= ch64 || c1 < c0 {
                (0, ch64)
            } else {
                (c0, c1 + 1)
            };
            vec![
                (i0 * 4, (i1 + 1) * 4),
                (c_lo * RECORD, c_hi * RECORD),
                (b * 4, e * 4),
            ]
        };
        let chunks = plan(split, total, 64, "requantize", &ranges)?;
        let acc_buf = self.scoped("uploading accumulators", || {
            self.pooled_buffer_init(bytemuck::cast_slice(acc), "squint acc")
        })?;
        let epi_buf = self.scoped("uploading epilogue records", || {
            self.pooled_buffer_init(bytemuck::cast_slice(&epi.channels), "squint epilogue")
        })?;
        let out = self.encode("requantize", |enc, _| {
            let pipe = self.pipeline(Kernel::Requantize, &[("FORMULA", epi.formula.code())])?;
            let out = self.pooled_buffer(total * 4, STORAGE_USAGE, "squint requantized")?;
            let mut list = Vec::new();
            for &(b, e) in &chunks {
                let r = ranges(b, e);
                let a = Slot::new(split, &acc_buf, r[0].0, r[0].1);
                let es = Slot::new(split, &epi_buf, r[1].0, r[1].1);
                let ys = Slot::new(split, &out, r[2].0, r[2].1);
                let p = RequantizeParams {
                    item_begin: b as u32,
                    item_count: (e - b) as u32,
                    len: len as u32,
                    plane: plane as u32,
                    channels: channels as u32,
                    acc_base: a.base(4),
                    epi_base: es.base(RECORD),
                    y_base: ys.base(4),
                    out_zp: epi.out.zero_point,
                    out_lo: epi.clamp.min,
                    out_hi: epi.clamp.max,
                    _pad: 0,
                };
                list.push(Dispatch::new(
                    &pipe,
                    &p,
                    vec![Res::Buf(a), Res::Buf(es), Res::Buf(ys)],
                    groups_for(e - b),
                ));
            }
            record(self, enc, &list, None)?;
            drop(list);
            Ok(out)
        })?;
        let mut bytes = read_back(self, &out, total * 4)?;
        bytes.truncate(acc.len());
        Ok(bytes)
    }
}

/// A converted int8 conv layer on the GPU. The weights (packed for the layer's kernel: four
/// int8 K-values per u32, 16 per vec4, in blocks of 8 output channels; or, for depthwise
/// layers, i16 `w - w_zp` values), per-channel weight sums and epilogue records are uploaded
/// once, at construction.
#[derive(Debug)]
pub struct GpuConv2d {
    device_id: u64,
    w_dims: [usize; 4],
    params: ConvParams,
    /// The conv kernel and its weight layout.
    layout: ConvKernelLayout,
    wzp: bool,
    /// The layer's device objects (dropped inside the device's gate).
    res: Gated<LayerResources>,
    epi: Epilogue,
    /// `Σ|w − w_zp|` per output channel, for the accumulator check of every run.
    sum_abs: Vec<i128>,
}

/// The device objects of a [`GpuConv2d`].
#[derive(Debug)]
struct LayerResources {
    weights: wgpu::Buffer,
    /// Depthwise layers of at most 8 columns: the resources of the kernel that reads the
    /// packed tensor (`conv2d_dw_direct.wgsl`).
    direct: Option<DirectDepthwise>,
    /// The weights again as a read-only storage texture (for the texture kernels).
    weights_tex: Option<WeightTexture>,
    /// The epilogue table (`epilogue_table`): `TABLE_VEC4` vec4s per output channel.
    etab: wgpu::Buffer,
    /// The epilogue table again as a texture (for the texture kernels).
    etab_tex: Option<WeightTexture>,
    /// Where the plan allows the float epilogue and the layer's accumulators are exact in
    /// f32 ([`float_epilogue`]): the epilogue table with float headers ([`float_table`]), its
    /// texture (where `etab_tex` is one), and the kernels' `FEXACT`.
    float_etab: Option<(wgpu::Buffer, Option<WeightTexture>, u32)>,
}

/// The resources of `conv2d_dw_direct.wgsl`, each with its texture copy where the device
/// allows (for the texture kernel).
#[derive(Debug)]
struct DirectDepthwise {
    /// See [`direct_depthwise_weights`].
    weights: (wgpu::Buffer, Option<WeightTexture>),
    /// Where every channel's estimate is within one level of its epilogue's
    /// ([`crate::quant::StepTable::estimate_within_one_level`]) and the table fits a buffer:
    /// the epilogue as threshold pairs ([`threshold_pairs`]), one texel read per output and
    /// no search.
    pairs: Option<(wgpu::Buffer, Option<WeightTexture>)>,
    /// Where the formula's own f32 operations are exact on the adapter ([`float_epilogue`]):
    /// their constants (one texel per channel, no table) and the kernel's `FEXACT`.
    float: Option<((wgpu::Buffer, Option<WeightTexture>), u32)>,
}

/// The header vec4s of the float epilogue (`FEXACT` in `epilogue_table.wgsl`), one per output
/// channel: `M`, the bias (f32 bits for FBGEMM, i32 for QNNPACK), the output clamp's bounds
/// minus the zero point as the low and high i16 of one word, and the output zero point
/// (`conv2d_dw_direct.wgsl` puts the weight sum there); with the kernels' `FEXACT` (1: FBGEMM,
/// 2: QNNPACK).
///
/// The kernel then computes `rne(f32(f32(f32(acc) + b) * M))` (FBGEMM) or
/// `rne(f32(f32(acc + b) * M))` (QNNPACK), clamps and adds the zero point: the CPU
/// reference's operations ([`Epilogue::apply`]) in the same order. Where the adapter's f32
/// addition, multiplication and integer conversion are correctly rounded to nearest even
/// (lavapipe: LLVM's IEEE arithmetic; see [`super::pipelines::ConvPlan::float_epilogue`] for
/// where it is used), an addition followed by a multiplication leaves nothing to fuse, and
/// each result is the reference's bit for bit, provided the accumulators are exact in f32:
/// `None` unless every channel's accumulators (plus the QNNPACK bias) stay below 2^24 in
/// magnitude, from
/// `max |x' - z'| <= 255` times the channel's `sum |w - w_zp|` (`abs_sums`). `None` also for
/// the other formulas (oneDNN's has multiplies followed by additions, which a compiler may
/// fuse; fixed point is integer) and for `M` outside `[2^-126, 2^100]` in magnitude (then a
/// denormal flushed to zero, as GPUs may, cannot change a rounded level).
fn float_epilogue(epi: &Epilogue, abs_sums: &[i128]) -> Option<(Vec<u32>, u32)> {
    let code = match epi.formula {
        RequantFormula::Fbgemm => 1,
        RequantFormula::Qnnpack => 2,
        _ => return None,
    };
    let zp = epi.out.zero_point;
    let bounds = |v: i32| (v - zp) as i16 as u16 as u32;
    let word2 = bounds(epi.clamp.min) | bounds(epi.clamp.max) << 16;
    let mut words = Vec::with_capacity(epi.channels.len() * 4);
    for (c, &a) in epi.channels.iter().zip(abs_sums) {
        let m = c.mult.abs();
        let bias = match code {
            1 => c.bias_f32.to_bits(),
            _ => c.bias_i32 as u32,
        };
        let reach = 255 * a
            + if code == 2 {
                (c.bias_i32 as i128).abs()
            } else {
                0
            };
        let finite = c.bias_f32.is_finite() || code == 2;
        if !(finite && m >= f32::MIN_POSITIVE && m <= 2f32.powi(100) && reach < 1 << 24) {
            return None;
        }
        words.extend([c.mult.to_bits(), bias, word2, zp as u32]);
    }
    Some((words, code))
}

/// The epilogue table of [`epilogue_table`] with each channel's header vec4 replaced by the
/// float epilogue's (`headers`, 4 words per channel): for the conv kernels' `FEXACT`, whose
/// `pack_levels` then reads the header and the weight-sum vec4 only.
fn float_table(table: &[u32], headers: &[u32]) -> Vec<u32> {
    let mut words = table.to_vec();
    let per = TABLE_VEC4 as usize * 4;
    for (chunk, h) in words.chunks_mut(per).zip(headers.chunks(4)) {
        chunk[..4].copy_from_slice(h);
    }
    words
}

/// vec4s per output channel of [`threshold_pairs`].
const PAIR_VEC4: u64 = 129;

/// The epilogue of `conv2d_dw_direct.wgsl` where every estimate is within one level: per
/// output channel, [`PAIR_VEC4`] vec4s: one header (the estimate's slope and offset of
/// [`epilogue_table`], `base` and `top` as the low and high i16 of one word, and the weight
/// sum), then for each level k from `base` to `top` the pair `(t_k, t_(k+1))` (k's smallest
/// accumulator and k + 1's; `i32::MIN` below `base`'s, `i32::MAX` above `top`'s), two pairs
/// per vec4. One texel for the header and the weight sum, where the table of
/// [`epilogue_table`] takes two: a texel read fewer per invocation.
fn threshold_pairs(steps: &[StepTable], table: &[u32]) -> Vec<u32> {
    let per = TABLE_VEC4 as usize * 4;
    let mut words = Vec::with_capacity(steps.len() * PAIR_VEC4 as usize * 4);
    for (t, head) in steps.iter().zip(table.chunks(per)) {
        let start = words.len();
        // Output levels are bytes (at most [-128, 255]).
        let (base, top) = (t.base as i16 as u16 as u32, t.top as i16 as u16 as u32);
        words.extend([head[0], head[1], base | top << 16, head[5]]);
        let th = |k: i32| match k - t.base - 1 {
            i if i < 0 => i32::MIN,
            i => t.thresholds.get(i as usize).copied().unwrap_or(i32::MAX),
        };
        for k in t.base..=t.top {
            let hi = if k == t.top { i32::MAX } else { th(k + 1) };
            words.extend([th(k) as u32, hi as u32]);
        }
        words.resize(start + PAIR_VEC4 as usize * 4, 0);
    }
    words
}

/// Weights as an rgba32uint texture: vec4 i at texel (i % 2^log2_width, i >> log2_width).
#[derive(Debug)]
pub(crate) struct WeightTexture {
    _texture: wgpu::Texture,
    pub(crate) view: wgpu::TextureView,
    pub(crate) log2_width: u32,
}

impl WeightTexture {
    /// `None` when the device's texture limits cannot hold `words`.
    pub(crate) fn new(
        ctx: &GpuContext,
        words: &[u32],
        tex_width: u32,
        max_height: u32,
    ) -> Option<Self> {
        let texels = words.len().div_ceil(4).max(1) as u64;
        if tex_width == 0 {
            return None;
        }
        // A narrower texture for small weights, so that little memory is wasted.
        let width = (texels.next_power_of_two().min(tex_width as u64)) as u32;
        let height = texels.div_ceil(width as u64);
        if height > max_height as u64 {
            return None;
        }
        let mut data = words.to_vec();
        data.resize((width as u64 * height * 4) as usize, 0);
        let texture = ctx.device().create_texture_with_data(
            ctx.queue(),
            &wgpu::TextureDescriptor {
                label: Some("squint conv weights"),
                size: wgpu::Extent3d {
                    width,
                    height: height as u32,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Uint,
                usage: wgpu::TextureUsages::STORAGE_BINDING,
                view_formats: &[],
            },
            wgpu::util::TextureDataOrder::LayerMajor,
            bytemuck::cast_slice(&data),
        );
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        Some(WeightTexture {
            _texture: texture,
            view,
            log2_width: width.trailing_zeros(),
        })
    }
}

/// The conv kernels' epilogue table (`shaders/epilogue_table.wgsl`): per output channel o,
/// `TABLE_VEC4` vec4s: (bits of the f32 slope, bits of the f32 offset, base, top), then
/// (`meta[o]`, 0, 0), then the `top - base` thresholds of `steps[o]` (the channel's
/// [`Epilogue::step_table`]), zero-padded to 256.
///
/// With `search_only` the estimate is the constant `base`, so nearly every value takes the
/// table search (to test that path).
fn epilogue_table(steps: &[StepTable], meta: &[[i32; 2]], search_only: bool) -> Vec<u32> {
    let mut words = Vec::with_capacity(meta.len() * TABLE_VEC4 as usize * 4);
    for (t, m) in steps.iter().zip(meta) {
        // The estimate is only a speed hint; keep it finite.
        let (slope, offset) = if t.slope.is_finite() && t.offset.is_finite() && !search_only {
            (t.slope, t.offset)
        } else {
            (0.0, t.base as f32)
        };
        words.extend([
            slope.to_bits(),
            offset.to_bits(),
            t.base as u32,
            t.top as u32,
            m[0] as u32,
            m[1] as u32,
            0,
            0,
        ]);
        let start = words.len();
        words.extend(t.thresholds.iter().map(|&v| v as u32));
        words.resize(start + (TABLE_VEC4 as usize - 2) * 4, 0);
    }
    words
}

/// The GEMM kernel's weight layout: vec4 ((block * k_quads + q) * 8 + lane) holds the 16
/// K-values of quad q (tap (ky, kx) = q / quads_per_group, input channels
/// 16 * (q % quads_per_group) ..) of channel `lane` of channel block `block` (channels rounding
/// a group up to 16, and channels past the group, are 0).
fn pack_gemm_weights(w: &[i8], w_dims: [usize; 4], groups: usize) -> (Vec<u32>, ConvKernelLayout) {
    let [c_out, c_in_per_group, kh, kw] = w_dims;
    let taps = kh * kw;
    let c_out_per_group = c_out / groups;
    let quads_per_group = c_in_per_group.div_ceil(16);
    let k_quads = taps * quads_per_group;
    let blocks_per_group = c_out_per_group.div_ceil(8);
    let mut packed = vec![0u32; groups * blocks_per_group * k_quads * 8 * 4];
    for g in 0..groups {
        for b in 0..blocks_per_group {
            let block = g * blocks_per_group + b;
            for lane in 0..8 {
                let in_group = b * 8 + lane;
                if in_group >= c_out_per_group {
                    continue;
                }
                let o = g * c_out_per_group + in_group;
                for tap in 0..taps {
                    for i in 0..c_in_per_group {
                        let (quad_in_tap, slot) = (i / 16, i % 16);
                        let q = tap * quads_per_group + quad_in_tap;
                        let byte = w[(o * c_in_per_group + i) * taps + tap] as u8 as u32;
                        packed[((block * k_quads + q) * 8 + lane) * 4 + slot / 4] |=
                            byte << (8 * (slot % 4));
                    }
                }
            }
        }
    }
    let layout = ConvKernelLayout::Gemm {
        quads_per_group: quads_per_group as u64,
        k_quads: k_quads as u64,
        blocks_per_group: blocks_per_group as u64,
    };
    (packed, layout)
}

/// The depthwise kernel's weight layout: vec4 (ob * taps + tap) holds the i16 values
/// `w - w_zp` of output channels 8 * ob + 2i (low half of word i) and 8 * ob + 2i + 1 (high
/// half) at `tap`.
fn pack_depthwise_weights(w: &[i8], w_dims: [usize; 4], w_qp: &WeightQParams) -> Vec<u32> {
    let [c_out, _, kh, kw] = w_dims;
    let taps = kh * kw;
    let mut packed = vec![0u32; c_out.div_ceil(8) * taps * 4];
    for o in 0..c_out {
        let zp = w_qp.zero_point(o);
        for tap in 0..taps {
            let v = (w[o * taps + tap] as i32 - zp) as i16 as u16 as u32;
            packed[((o / 8) * taps + tap) * 4 + (o % 8) / 2] |= v << (16 * (o % 2));
        }
    }
    packed
}

/// The rows-of-words path of `conv2d_dw_direct.wgsl` (stride 1, dilation 1, output rows a
/// whole number of packed words): each invocation computes `words` consecutive words of one
/// output row, `segments` invocations per row, each kernel row from `span_words` aligned words
/// read from `span_texels` texels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DwRowPath {
    pub words: u64,
    pub segments: u64,
    pub span_words: u64,
    pub span_texels: u64,
}

impl DwRowPath {
    /// The path for output rows of `row_words` words and a `kh` x `kw` kernel (`kw <= 8`):
    /// the words per invocation (1 to 7) that read the fewest texels per output row, counting
    /// the input spans, the header and weights, one epilogue texel per output (those of a
    /// row's shorter last segment included: they are computed too) and one for the
    /// invocation itself.
    pub(crate) fn new(row_words: u64, kh: u64, kw: u64) -> DwRowPath {
        let path = |words: u64| {
            let span_words = (4 * words + kw - 2) / 4 + 1;
            DwRowPath {
                words,
                segments: row_words.div_ceil(words),
                span_words,
                span_texels: (span_words + 7) / 4,
            }
        };
        let weights = kh.div_ceil(dw_rows_per_vec4(kw as usize) as u64);
        let texels =
            |r: &DwRowPath| r.segments * (kh * r.span_texels + 1 + weights + 4 * r.words + 1);
        (1..=7.min(row_words.max(1)))
            .map(path)
            .min_by_key(|r| (texels(r), u64::MAX - r.words))
            .unwrap_or_else(|| path(1))
    }
}

/// Kernel rows per weights vec4 of `conv2d_dw_direct.wgsl`: two rows of four i16 (`kw <= 4`)
/// or one of eight.
fn dw_rows_per_vec4(kw: usize) -> usize {
    if kw <= 4 {
        2
    } else {
        1
    }
}

/// The weights of `conv2d_dw_direct.wgsl` (one input channel per group, `kw <= 8`): per
/// output channel, `kh / dw_rows_per_vec4(kw)` vec4s (rounded up) of the kernel rows'
/// `w - w_zp` (in [-255, 255]) as i16, each row in a slot of 4 or 8 (zeros after it), two
/// i16 per word, the lower first.
fn direct_depthwise_weights(w: &[i8], w_dims: [usize; 4], w_qp: &WeightQParams) -> Vec<u32> {
    let [c_out, _, kh, kw] = w_dims;
    let rows = dw_rows_per_vec4(kw);
    let (slot, per_channel) = (8 / rows, kh.div_ceil(rows) * 8);
    let mut halves = vec![0u16; c_out * per_channel];
    for (i, &v) in w.iter().enumerate() {
        let (o, tap) = (i / (kh * kw), i % (kh * kw));
        let at = o * per_channel + tap / kw * slot + tap % kw;
        halves[at] = (v as i32 - w_qp.zero_point(o)) as i16 as u16;
    }
    (halves.chunks(2))
        .map(|p| u32::from(p[0]) | u32::from(p[1]) << 16)
        .collect()
}

impl GpuConv2d {
    /// Converts a layer: `w` is the qint8 weight (OIHW, shape `w_dims`) with qparams `w_qp`,
    /// `epi` the requantization epilogue (one record per output channel), `params` the conv
    /// hyperparameters. Validates everything that does not depend on the input. Layers with
    /// one input channel per group use the depthwise kernel, all others the GEMM kernel.
    pub fn new(
        ctx: &GpuContext,
        w: &[i8],
        w_dims: [usize; 4],
        w_qp: &WeightQParams,
        epi: &Epilogue,
        params: ConvParams,
    ) -> Result<Self> {
        let ctx = &ctx.enter()?;
        let n = check_dims(w_dims, "weight")?;
        if w.len() != n {
            return Err(Error::Shape(format!(
                "weight has {} elements, the shape {w_dims:?} needs {n}",
                w.len()
            )));
        }
        if params.stride.contains(&0) || params.dilation.contains(&0) || params.groups == 0 {
            return Err(Error::InvalidParameter(format!(
                "stride {:?}, dilation {:?} and groups {} must all be >= 1",
                params.stride, params.dilation, params.groups
            )));
        }
        let [c_out, cig, kh, kw] = w_dims;
        let groups = params.groups;
        if !c_out.is_multiple_of(groups) {
            return Err(Error::InvalidParameter(format!(
                "groups = {groups} must divide out_channels = {c_out}"
            )));
        }
        w_qp.check_channels(c_out)?;
        if epi.channels.len() != c_out {
            return Err(Error::Shape(format!(
                "epilogue has {} channels, the weight has {c_out} output channels",
                epi.channels.len()
            )));
        }
        let k = cig * kh * kw;
        let plan_k = ctx.conv_plan()?;
        let depthwise = cig == 1 && plan_k.depthwise;
        let (packed, layout) = if depthwise {
            (
                pack_depthwise_weights(w, w_dims, w_qp),
                ConvKernelLayout::Depthwise,
            )
        } else {
            pack_gemm_weights(w, w_dims, groups)
        };
        let meta: Vec<[i32; 2]> = (0..c_out)
            .map(|o| {
                // Wrapping like the kernel's arithmetic (only the total modulo 2^32 matters).
                let zp = w_qp.zero_point(o);
                let taps = &w[o * k..(o + 1) * k];
                if depthwise {
                    let s = taps
                        .iter()
                        .fold(0i32, |a, &v| a.wrapping_add(v as i32 - zp));
                    [0, s]
                } else {
                    let s = taps.iter().fold(0i32, |a, &v| a.wrapping_add(v as i32));
                    [zp, s]
                }
            })
            .collect();
        let wzp = (0..c_out).any(|o| w_qp.zero_point(o) != 0);
        let sum_abs = weight_abs_sums(w, w_qp, c_out, k);
        let steps: Vec<StepTable> = (0..c_out).map(|o| epi.step_table(o)).collect();
        let table = epilogue_table(&steps, &meta, plan_k.search_only);
        // Every channel's estimate within one level: threshold pairs, no search (see
        // `DirectDepthwise::pairs`).
        let near_levels =
            !plan_k.search_only && steps.iter().all(StepTable::estimate_within_one_level);
        let float_headers = match plan_k.float_epilogue {
            true => float_epilogue(epi, &sum_abs),
            false => None,
        };
        let res = ctx.scoped("uploading conv weights", || {
            let weights_tex = if plan_k.textures {
                WeightTexture::new(ctx, &packed, plan_k.tex_width, plan_k.tex_max_height)
            } else {
                None
            };
            // A buffer and (for the texture kernels) a texture of `words`; `None` where the
            // buffer would exceed the device's largest (the layer then runs without them).
            let both = |words: &[u32], label: &str| -> Result<_> {
                if words.len() as u64 * 4 > ctx.split().max_buffer {
                    return Ok(None);
                }
                let buffer = storage_buffer_init(ctx, bytemuck::cast_slice(words), label)?;
                let texture = match plan_k.textures {
                    true => WeightTexture::new(ctx, words, plan_k.tex_width, plan_k.tex_max_height),
                    false => None,
                };
                Ok(Some((buffer, texture)))
            };
            // The direct depthwise kernel's resources (its threshold pairs where every estimate
            // is within one level).
            let direct = match depthwise && kw <= 8 {
                true => {
                    let weights = direct_depthwise_weights(w, w_dims, w_qp);
                    match both(&weights, "squint depthwise weights")? {
                        Some(weights) => Some(DirectDepthwise {
                            weights,
                            pairs: match near_levels {
                                true => both(
                                    &threshold_pairs(&steps, &table),
                                    "squint depthwise epilogue",
                                )?,
                                false => None,
                            },
                            // The float headers with the weight sum in place of the zero
                            // point (which the kernel's uniform holds).
                            float: match &float_headers {
                                Some((headers, code)) => {
                                    let mut words = headers.clone();
                                    for (h, m) in words.chunks_mut(4).zip(&meta) {
                                        h[3] = m[1] as u32;
                                    }
                                    both(&words, "squint depthwise float epilogue")?
                                        .map(|r| (r, *code))
                                }
                                None => None,
                            },
                        }),
                        None => None,
                    }
                }
                false => None,
            };
            Ok(LayerResources {
                weights: storage_buffer_init(
                    ctx,
                    bytemuck::cast_slice(&packed),
                    "squint conv weights",
                )?,
                direct,
                etab_tex: match weights_tex {
                    Some(_) => {
                        WeightTexture::new(ctx, &table, plan_k.tex_width, plan_k.tex_max_height)
                    }
                    None => None,
                },
                weights_tex,
                etab: storage_buffer_init(
                    ctx,
                    bytemuck::cast_slice(&table),
                    "squint conv epilogue",
                )?,
                float_etab: match float_headers {
                    Some((headers, code)) => {
                        let words = float_table(&table, &headers);
                        let buffer = storage_buffer_init(
                            ctx,
                            bytemuck::cast_slice(&words),
                            "squint conv float epilogue",
                        )?;
                        let texture = match plan_k.textures {
                            true => WeightTexture::new(
                                ctx,
                                &words,
                                plan_k.tex_width,
                                plan_k.tex_max_height,
                            ),
                            false => None,
                        };
                        Some((buffer, texture, code))
                    }
                    _ => None,
                },
            })
        })?;
        Ok(GpuConv2d {
            device_id: ctx.id(),
            w_dims,
            params,
            layout,
            wzp,
            res: Gated::new(res, ctx.gate()),
            epi: epi.clone(),
            sum_abs,
        })
    }

    /// Weight shape `[O, I, KH, KW]`.
    pub fn weight_dims(&self) -> [usize; 4] {
        self.w_dims
    }

    /// Conv hyperparameters.
    pub fn params(&self) -> ConvParams {
        self.params
    }

    /// The epilogue (its `out` qparams describe the output tensor).
    pub fn epilogue(&self) -> &Epilogue {
        &self.epi
    }

    /// Whether the layer runs on the depthwise kernel (else the GEMM kernel).
    pub fn is_depthwise(&self) -> bool {
        matches!(self.layout, ConvKernelLayout::Depthwise)
    }

    /// The output shape for an input of shape `x_dims` (validates the geometry).
    pub fn output_shape(&self, x_dims: [usize; 4]) -> Result<ConvShape> {
        ConvShape::new(x_dims, self.w_dims, self.params)
    }

    /// Runs the conv on a packed input with qparams `x_qp` (its dtype must be `x.dtype`).
    /// Checks the worst-case accumulator bound first, as the CPU reference does. The output,
    /// in the epilogue's output dtype, stays on the GPU; the work is queued on the context and
    /// submitted with the next read-back or [`GpuContext::flush`].
    pub fn run(&self, ctx: &GpuContext, x: &GpuTensor, x_qp: &QParams) -> Result<GpuTensor> {
        let ctx = &ctx.enter()?;
        let s = self.check_run(ctx, x, x_qp)?;
        self.encode(ctx, x, x_qp, &s)
    }

    /// Like [`GpuConv2d::run`], and measures the GPU time of the layer (input repacking and
    /// conv kernel) with timestamp queries: waits for the GPU. The time is `None` when the
    /// device has no `TIMESTAMP_QUERY`.
    pub fn run_timed(
        &self,
        ctx: &GpuContext,
        x: &GpuTensor,
        x_qp: &QParams,
    ) -> Result<(GpuTensor, Option<Duration>)> {
        let (y, t) = self.run_with_timestamps(ctx, x, x_qp, false)?;
        Ok((y, t.map(|t| t[0])))
    }

    /// Like [`GpuConv2d::run_timed`], with the input repacking and the conv kernel timed
    /// apart, each in a compute pass of its own: `[repack, conv]` (a depthwise conv that
    /// reads the packed tensor has no repack: zero). `None` without
    /// `TIMESTAMP_QUERY`, and where the run takes several chunks of images or row bands (whose
    /// repacks reuse one scratch buffer, so they cannot all run first).
    #[doc(hidden)]
    pub fn run_timed_parts(
        &self,
        ctx: &GpuContext,
        x: &GpuTensor,
        x_qp: &QParams,
    ) -> Result<(GpuTensor, Option<[Duration; 2]>)> {
        let (y, t) = self.run_with_timestamps(ctx, x, x_qp, true)?;
        Ok((y, t.and_then(|t| Some([t[0], t.get(1).copied()?]))))
    }

    /// A run timed by timestamp queries: the whole layer, or (`parts`, where possible) the
    /// repack and the conv kernel apart.
    fn run_with_timestamps(
        &self,
        ctx: &GpuContext,
        x: &GpuTensor,
        x_qp: &QParams,
        parts: bool,
    ) -> Result<(GpuTensor, Option<Vec<Duration>>)> {
        let ctx = &ctx.enter()?;
        let s = self.check_run(ctx, x, x_qp)?;
        if !ctx.has_timestamps() {
            return Ok((self.encode(ctx, x, x_qp, &s)?, None));
        }
        let (qs, resolve) = timestamp_queries(ctx, 4);
        let timing = Timing {
            set: &qs,
            resolve: &resolve,
            parts,
        };
        let (y, timed) = self.encode_with(ctx, x, x_qp, &s, Some(timing))?;
        let passes = pass_durations(ctx, &resolve, 2)?;
        let pass = |p: usize| passes[p];
        let times = match timed {
            Timed::Nothing => Vec::new(),
            Timed::Whole => vec![pass(0)],
            Timed::Apart => vec![pass(0), pass(1)],
            // No repack: zero, where the parts are asked for.
            Timed::ConvOnly if parts => vec![Duration::ZERO, pass(0)],
            Timed::ConvOnly => vec![pass(0)],
        };
        Ok((y, Some(times)))
    }

    fn check_run(&self, ctx: &GpuContext, x: &GpuTensor, x_qp: &QParams) -> Result<ConvShape> {
        ctx.check_same(self.device_id, "GpuConv2d::run (layer)")?;
        ctx.check_same(x.device_id, "GpuConv2d::run (input)")?;
        validate_qparams(x_qp)?;
        if x_qp.dtype != x.dtype {
            return Err(Error::InvalidParameter(format!(
                "conv input qparams are for {} but the tensor holds {}",
                x_qp.dtype, x.dtype
            )));
        }
        let s = ConvShape::new(x.dims, self.w_dims, self.params)?;
        self.epi.check_accumulator_sums(
            &self.sum_abs,
            x_qp.dtype.full_range(),
            x_qp.zero_point,
            s.k(),
            None,
        )?;
        Ok(s)
    }

    /// Records the conv of `x` (shape `s`, qparams `x_qp`) as one compute pass: per chunk of
    /// images, the repack of the input into quads, then the conv kernel with its fused
    /// epilogue.
    fn encode(
        &self,
        ctx: &GpuContext,
        x: &GpuTensor,
        x_qp: &QParams,
        s: &ConvShape,
    ) -> Result<GpuTensor> {
        Ok(self.encode_with(ctx, x, x_qp, s, None)?.0)
    }

    /// [`GpuConv2d::encode`], timed with `timing` when given (the whole layer in one pass, or
    /// with `timing.parts` where possible the repacks and the convs in a pass each), and what
    /// was timed.
    fn encode_with(
        &self,
        ctx: &GpuContext,
        x: &GpuTensor,
        x_qp: &QParams,
        s: &ConvShape,
        timing: Option<Timing<'_>>,
    ) -> Result<(GpuTensor, Timed)> {
        if let Some(run) = self.encode_direct(ctx, x, x_qp, s, timing)? {
            return Ok(run);
        }
        let geometry_for = |k: &ConvPlan| {
            let (wg_tiles, wg_blocks) = match self.layout {
                ConvKernelLayout::Gemm { .. } => k.gemm_workgroup(),
                ConvKernelLayout::Depthwise => (k.wg, 1),
            };
            ConvGeometry::new(s, self.layout, wg_tiles, wg_blocks)
        };
        let mut kernels = ctx.conv_plan()?;
        let mut geometry = geometry_for(&kernels);
        // A tiled workgroup's weights or epilogue table exceeding a binding (bindings of a few
        // KiB): the kernel with one channel block per workgroup.
        let split = ctx.split();
        if kernels.staging == BStaging::Tiled
            && split.window(0, geometry.channel_window_bytes()).1 > split.max_binding
        {
            kernels = kernels.without_tiles();
            geometry = geometry_for(&kernels);
        }
        let domain = InputDomain::new(x.dtype, x_qp.zero_point, self.reads_signed_bytes(&kernels));
        let mut scratch = self.plan_scratch(ctx, &kernels, &geometry, x);
        // One image too large for the scratch: bands of output rows, each with its geometry
        // per slice of the input channels (one unless even the fewest rows exceed a binding).
        let plan_bands = |geometry: &ConvGeometry, scratch: &ScratchPlan| match scratch.bands {
            Some(limits) => geometry.k_split_bands(limits),
            None => Ok((vec![*geometry], Vec::new())),
        };
        let mut bands = plan_bands(&geometry, &scratch);
        // A GEMM split by channels (or that cannot be split with its kernel's workgroups):
        // the kernel and staging that take slices (a group base, skipped weight quads),
        // planned again.
        let gemm = matches!(self.layout, ConvKernelLayout::Gemm { .. });
        let sliced = bands.as_ref().map_or(true, |(slices, _)| slices.len() > 1);
        if gemm && sliced && kernels.for_k_split() != kernels {
            kernels = kernels.for_k_split();
            geometry = geometry_for(&kernels);
            scratch = self.plan_scratch(ctx, &kernels, &geometry, x);
            bands = plan_bands(&geometry, &scratch);
        }
        // The channel slices of the whole image (which the repacks use), and each band's conv
        // geometry per slice. Slices of a group's quads add partial sums; slices of whole
        // groups (and a depthwise conv's) are convs of their own.
        let (k_slices, rows) = bands?;
        let ksplit = k_slices.iter().any(ConvGeometry::sums_partially);
        let bands: Vec<(RowBand, Vec<ConvGeometry>)> = (rows.into_iter())
            .map(|b| (b, k_slices.iter().map(|g| g.band(&b)).collect()))
            .collect();
        // The scratch holds a chunk of images, or the largest band (of the widest slice).
        let scratch_quads = match bands.iter().map(|(_, g)| g[0].quads_per_image()).max() {
            Some(band_quads) => band_quads,
            None => scratch.images_per_chunk * geometry.quads_per_image(),
        };
        // A conv split along K keeps a vec4<i32> of partial sums per packed output word of
        // its largest band.
        let partial_bytes = (bands.iter())
            .filter(|_| ksplit)
            .map(|(_, g)| geometry.c_out * g[0].pixel_tiles * 16)
            .max();
        // The tiled kernel on one chunk of few workgroups: K in parallel slices, a conv and a
        // reduce dispatch (see `ConvGeometry::parallel_k`), where their bindings fit.
        let images = s.n as u64;
        let kpar = match kernels.staging {
            BStaging::Tiled if bands.is_empty() && images <= scratch.images_per_chunk => {
                let tkq = u64::from(kernels.tile.tkq);
                (geometry.parallel_k(images, tkq, kernels.k_slices))
                    .filter(|k| parallel_k_fits(ctx.split(), &geometry, images, k))
            }
            _ => None,
        };
        let partial_bytes = match kpar {
            Some(k) => Some(k.partial_bytes(&geometry, images)),
            None => partial_bytes,
        };
        let output_dims = s.output_dims();
        ctx.encode("conv2d", |encoder, keep| {
            let sums = ksplit || kpar.is_some();
            let fexact = self.float_code(&kernels, scratch.use_textures);
            let pipelines = self.pipelines(ctx, &kernels, scratch.use_textures, sums, fexact)?;
            let reduce = match kpar {
                Some(_) => Some(ctx.pipeline(
                    Kernel::ConvGemmReduce {
                        xtex: scratch.use_textures,
                    },
                    &[("FEXACT", fexact)],
                )?),
                None => None,
            };
            let output = ctx.pooled_buffer(
                packed_bytes(output_dims),
                STORAGE_USAGE,
                "squint packed tensor",
            )?;
            let quads = RepackedQuads::allocate(ctx, &kernels, &scratch, scratch_quads)?;
            let input = ConvInput::prepare(ctx, encoder, x, &kernels, scratch.use_textures);
            let band_runs = BandRun::prepare(ctx, encoder, x, &geometry, &bands)?;
            let partial = match partial_bytes {
                Some(bytes) => {
                    Some(ctx.pooled_buffer(bytes, STORAGE_USAGE, "squint conv partial sums")?)
                }
                None => None,
            };
            let call = ConvCall {
                layer: self,
                split: ctx.split(),
                geometry: &geometry,
                domain,
                use_textures: scratch.use_textures,
                quads_tex_log2_width: kernels.tex_width.trailing_zeros(),
                quads: &quads,
                input: &input,
                output: &output,
                partial: None,
                fexact,
            };
            let mut dispatches = Vec::new();
            let chunks = image_chunks(s.n as u64, scratch.images_per_chunk).count();
            if bands.is_empty() {
                for (first_image, images) in image_chunks(s.n as u64, scratch.images_per_chunk) {
                    call.push_repack(&pipelines.pack, first_image, images, &mut dispatches)?;
                    match (kpar, &reduce, &partial) {
                        (Some(k), Some(reduce), Some(partial)) => {
                            let conv = (&pipelines.conv, reduce);
                            call.push_parallel_k(conv, partial, k, images, &mut dispatches);
                        }
                        _ => {
                            call.push_conv(&pipelines.conv, first_image, images, &mut dispatches)?
                        }
                    }
                }
            }
            for run in &band_runs {
                // Each slice (one without the split) repacked, then convolved; a slice of a
                // group's quads adds the sums of the group's earlier ones, the last finishes.
                for (k, slice) in run.slices.iter().enumerate() {
                    let ks = slice.k_slice;
                    let band_call = ConvCall {
                        geometry: slice,
                        output: &run.output,
                        partial: partial.as_deref().map(|p| {
                            let pass = KPass {
                                add_earlier: ks.first > 0,
                                last: ks.first + ks.quads == ks.group_quads,
                            };
                            (p, pass)
                        }),
                        ..call
                    };
                    let repack_call = ConvCall {
                        geometry: &k_slices[k],
                        ..call
                    };
                    let input = &run.inputs[k];
                    repack_call.push_band_repack(&pipelines.pack, run, input, &mut dispatches)?;
                    band_call.push_conv(&pipelines.conv, 0, 1, &mut dispatches)?;
                }
            }
            let passes = match timing {
                // One chunk and no bands: every repack may run before every conv, each set
                // timed in a pass of its own.
                Some(t) if t.parts && bands.is_empty() && chunks == 1 => {
                    let (repack, conv): (Vec<_>, Vec<_>) = dispatches
                        .into_iter()
                        .partition(|d| Arc::ptr_eq(&d.pipe, &pipelines.pack));
                    record(ctx, encoder, &repack, Some((t.set, 0, 1)))?;
                    record(ctx, encoder, &conv, Some((t.set, 2, 3)))?;
                    encoder.resolve_query_set(t.set, 0..4, t.resolve, 0);
                    Timed::Apart
                }
                Some(t) => {
                    record(ctx, encoder, &dispatches, Some((t.set, 0, 1)))?;
                    drop(dispatches);
                    encoder.resolve_query_set(t.set, 0..2, t.resolve, 0);
                    Timed::Whole
                }
                None => {
                    record(ctx, encoder, &dispatches, None)?;
                    drop(dispatches);
                    Timed::Nothing
                }
            };
            for run in band_runs {
                run.copy_output(encoder, &geometry, &output);
                for input in run.inputs {
                    keep.buffer(input);
                }
                keep.buffer(run.output);
            }
            quads.keep_until_queued(keep);
            input.keep_until_queued(keep);
            if let Some(partial) = partial {
                keep.buffer(partial);
            }
            Ok((self.output_tensor(ctx, output_dims, output), passes))
        })
    }

    /// Records a depthwise conv on the kernel that reads the packed tensor itself
    /// (`conv2d_dw_direct.wgsl`, no repack), timed like [`GpuConv2d::encode_with`] (the conv
    /// alone, in one pass). `None`
    /// (nothing recorded) for other layers, where the context's plan asks for the kernel on
    /// repacked quads, where one image's input or output or the layer's tables exceed a
    /// binding (such images run by row bands on the other kernel), where the grid exceeds the
    /// device's workgroup limit, or where the kernel's float divisions would not be exact.
    fn encode_direct(
        &self,
        ctx: &GpuContext,
        x: &GpuTensor,
        x_qp: &QParams,
        s: &ConvShape,
        timing: Option<Timing<'_>>,
    ) -> Result<Option<(GpuTensor, Timed)>> {
        let Some(direct) = &self.res.direct else {
            return Ok(None);
        };
        let (dw_weights, dw_weights_tex) = &direct.weights;
        let kernels = ctx.conv_plan()?;
        // The epilogue: the float one, threshold pairs, or the table the search reads.
        let float = direct.float.as_ref().filter(|_| kernels.float_epilogue);
        let (table, table_tex, table_vec4) = match (float, &direct.pairs) {
            (Some(((b, t), _)), _) => (b, t, 1),
            (None, Some((b, t))) => (b, t, PAIR_VEC4),
            (None, None) => (&self.res.etab, &self.res.etab_tex, TABLE_VEC4),
        };
        // The kernel's byte offsets are u32.
        if !kernels.dw_direct || packed_bytes(x.dims) >= 1 << 31 {
            return Ok(None);
        }
        let (c_out, kh) = (s.c_out as u64, s.kh as u64);
        let plane_out = (s.h_out * s.w_out) as u64;
        let pixel_tiles = plane_out.div_ceil(4);
        let p = self.params;
        let (kw, sw) = (s.kw as u32, p.stride[1] as u32);
        // The kernel's paths (see its header): rows of words, 8 pixels per invocation, else 4
        // (the 4-pixel row path or pixel by pixel). Rows of words on CPU adapters, where they
        // were measured (an invocation per 28 pixels: 3.5x fewer than the 8-pixel path, too
        // few to fill a GPU on small layers).
        let whole_words = sw == 1 && p.dilation[1] == 1 && s.w_out.is_multiple_of(4);
        let rows = match kernels.cpu && whole_words {
            true => Some(DwRowPath::new(s.w_out as u64 / 4, s.kh as u64, s.kw as u64)),
            false => None,
        };
        let px8 = rows.is_none() && sw == 1 && p.dilation[1] == 1 && s.w_out >= 8;
        let row = p.dilation[1] == 1 && 3 * sw + kw <= 12 && s.w_out >= 4;
        let two = match px8 {
            true => !s.w_out.is_multiple_of(8),
            false => row && !s.w_out.is_multiple_of(4),
        };
        // Invocations per output plane.
        let per_plane = match rows {
            Some(r) => s.h_out as u64 * r.segments,
            None if px8 => pixel_tiles.div_ceil(2),
            None => pixel_tiles,
        };
        // On CPU adapters, as many planes per workgroup as one holds where a plane fills at
        // most half of one (the 8- and 4-pixel paths on small planes): lavapipe pays a fixed
        // cost per workgroup (`CPW` in the kernel). Otherwise workgroups sized to the plane.
        let limit = u64::from(kernels.wg_limit);
        let cpw = match kernels.cpu && rows.is_none() && 2 * per_plane <= limit {
            true => (limit / per_plane).min(c_out),
            false => 1,
        };
        let wg = match cpw > 1 {
            true => cpw * per_plane,
            false => u64::from(plane_workgroup(per_plane, kernels.lanes, kernels.wg_limit)),
        };
        // (1 when cpw > 1: cpw · per_plane ≥ per_plane.)
        let plane_workgroups = per_plane.div_ceil(wg);
        let in_plane_bytes = plane_words(x.dims) as u64 * 4;
        let m = c_out / s.c_in as u64;
        let split = ctx.split();
        // The grid's dimensions within the device's limit, and the kernel's float division
        // exact (`udiv`: quotients of numbers below 2^23).
        let max = u64::from(split.max_workgroups);
        if plane_workgroups > max || c_out > max || plane_out >= 1 << 23 || c_out >= 1 << 23 {
            return Ok(None);
        }
        // Byte ranges of the input, weights, epilogue table and output that images [b, e)
        // read or write.
        let ranges = |b: u64, e: u64| {
            vec![
                (
                    b * s.c_in as u64 * in_plane_bytes,
                    e * s.c_in as u64 * in_plane_bytes,
                ),
                (0, c_out * 16 * kh.div_ceil(dw_rows_per_vec4(s.kw) as u64)),
                (0, c_out * table_vec4 * 16),
                (b * c_out * pixel_tiles * 4, e * c_out * pixel_tiles * 4),
            ]
        };
        // Chunks of images whose windows fit the bindings (and at most `max` images).
        let Ok(chunks) = plan(split, s.n as u64, 1, "depthwise conv2d", &ranges) else {
            return Ok(None);
        };
        if chunks.iter().any(|&(b, e)| e - b > max) {
            return Ok(None);
        }
        let domain = InputDomain::new(x.dtype, x_qp.zero_point, false);
        // On CPU adapters the input (copied), the weights and the epilogue as textures, where
        // they fit.
        let width = u64::from(kernels.tex_width);
        let texels = packed_bytes(x.dims).div_ceil(QUAD);
        let textures = match (table_tex, dw_weights_tex) {
            (Some(e), Some(w))
                if kernels.textures
                    && texture_rows(texels, width) <= u64::from(kernels.tex_max_height) =>
            {
                Some((w, e))
            }
            _ => None,
        };
        let overrides = [
            ("WG", wg as u32),
            ("KH", s.kh as u32),
            ("KW", kw),
            ("RPT", dw_rows_per_vec4(s.kw) as u32),
            ("SW", sw),
            ("ROW", u32::from(row)),
            ("MULT", u32::from(m == 1)),
            ("SEARCH", u32::from(direct.pairs.is_none())),
            ("FEXACT", float.map_or(0, |f| f.1)),
            ("TWO", u32::from(two)),
            ("PX8", u32::from(px8)),
            ("NW", rows.map_or(0, |r| r.words as u32)),
            ("NA", rows.map_or(1, |r| r.span_words as u32)),
            ("SPAN_T", rows.map_or(1, |r| r.span_texels as u32)),
            ("FLIP", domain.flip * 0x0101_0101),
            ("CPW", cpw as u32),
        ];
        let output_dims = s.output_dims();
        let run = ctx.encode("depthwise conv2d", |encoder, keep| {
            let xtex = textures.is_some();
            let pipe = ctx.pipeline(Kernel::ConvDwDirect { xtex }, &overrides)?;
            let input = ConvInput::prepare(ctx, encoder, x, &kernels, xtex);
            let output = ctx.pooled_buffer(
                packed_bytes(output_dims),
                STORAGE_USAGE,
                "squint packed tensor",
            )?;
            let dispatches: Vec<Dispatch<'_>> = (chunks.iter())
                .map(|&(b, e)| {
                    let r = ranges(b, e);
                    let (xs, x_base, x_tex_log2_width) = input.binding(split, r[0]);
                    let (ws, w_base, w_tex_log2_width, es, etab_base, etab_tex_log2_width) =
                        match textures {
                            Some((w, e)) => (
                                Res::Tex(&w.view),
                                0,
                                w.log2_width,
                                Res::Tex(&e.view),
                                0,
                                e.log2_width,
                            ),
                            None => {
                                let ws = Slot::new(split, dw_weights, r[1].0, r[1].1);
                                let es = Slot::new(split, table, r[2].0, r[2].1);
                                (Res::Buf(ws), ws.base(16), 0, Res::Buf(es), es.base(16), 0)
                            }
                        };
                    let ys = Slot::new(split, &output, r[3].0, r[3].1);
                    let params = ConvDwDirectParams {
                        n_begin: b as u32,
                        pixel_tiles: pixel_tiles as u32,
                        plane_out: plane_out as u32,
                        w_out: s.w_out as u32,
                        c_out: c_out as u32,
                        channel_multiplier: m as u32,
                        c_in: s.c_in as u32,
                        h: s.h as u32,
                        w: s.w as u32,
                        plane_words: (in_plane_bytes / 4) as u32,
                        stride_h: p.stride[0] as u32,
                        dilation_h: p.dilation[0] as u32,
                        dilation_w: p.dilation[1] as u32,
                        pad_h: p.padding[0] as u32,
                        pad_w: p.padding[1] as u32,
                        x_base,
                        w_base,
                        etab_base,
                        y_base: ys.base(4),
                        x_zero_point: domain.zero_point,
                        w_out_rcp: (1.0 / s.w_out as f64) as f32,
                        m_rcp: (1.0 / m as f64) as f32,
                        x_tex_log2_width,
                        w_tex_log2_width,
                        etab_tex_log2_width,
                        row_segments: rows.map_or(1, |r| r.segments as u32),
                        segments_rcp: rows.map_or(1.0, |r| (1.0 / r.segments as f64) as f32),
                        out_zero_point: self.epi.out.zero_point,
                        plane_invocations: per_plane as u32,
                        plane_invocations_rcp: (1.0 / per_plane as f64) as f32,
                        _pad0: 0,
                        _pad1: 0,
                    };
                    let res = vec![xs, ws, es, Res::Buf(ys)];
                    let grid = [
                        plane_workgroups as u32,
                        c_out.div_ceil(cpw) as u32,
                        (e - b) as u32,
                    ];
                    Dispatch::grid(&pipe, &params, res, grid)
                })
                .collect();
            let passes = match timing {
                Some(t) => {
                    record(ctx, encoder, &dispatches, Some((t.set, 0, 1)))?;
                    encoder.resolve_query_set(t.set, 0..2, t.resolve, 0);
                    Timed::ConvOnly
                }
                None => {
                    record(ctx, encoder, &dispatches, None)?;
                    Timed::Nothing
                }
            };
            drop(dispatches);
            input.keep_until_queued(keep);
            Ok((self.output_tensor(ctx, output_dims, output), passes))
        })?;
        Ok(Some(run))
    }

    /// The layer's output of shape `dims` held in `buffer` (in the epilogue's output dtype).
    fn output_tensor(
        &self,
        ctx: &GpuContext,
        dims: [usize; 4],
        buffer: Arc<PooledBuffer>,
    ) -> GpuTensor {
        GpuTensor {
            dims,
            dtype: self.epi.out.dtype,
            buffer,
            device_id: ctx.id(),
        }
    }

    /// Whether the layer's conv kernel reads signed bytes (`dot4I8Packed`) rather than
    /// unsigned ones.
    fn reads_signed_bytes(&self, kernels: &ConvPlan) -> bool {
        matches!(self.layout, ConvKernelLayout::Gemm { .. }) && kernels.packed
    }

    /// Where a run on input `x` keeps its repacked input, and how many images per chunk.
    fn plan_scratch(
        &self,
        ctx: &GpuContext,
        kernels: &ConvPlan,
        geometry: &ConvGeometry,
        x: &GpuTensor,
    ) -> ScratchPlan {
        let limits = ScratchLimits {
            textures: kernels.textures
                && self.res.weights_tex.is_some()
                && self.res.etab_tex.is_some(),
            tex_width: kernels.tex_width,
            tex_max_height: kernels.tex_max_height,
            max_buffer: ctx.split().max_buffer,
            max_binding: ctx.split().max_binding,
        };
        ScratchPlan::new(
            limits,
            geometry.quads_per_image(),
            geometry.output_span_bytes(geometry.plane_out / geometry.w_out),
            packed_bytes(x.dims).div_ceil(QUAD),
            x.dims[0] as u64,
        )
    }

    /// The kernels' `FEXACT` for a run with `kernels` (textures or not): the float epilogue's
    /// code where the plan allows it and the layer has its table (as a texture too, where the
    /// run reads textures), else 0.
    fn float_code(&self, kernels: &ConvPlan, use_textures: bool) -> u32 {
        match &self.res.float_etab {
            Some((_, tex, code)) if kernels.float_epilogue && (!use_textures || tex.is_some()) => {
                *code
            }
            _ => 0,
        }
    }

    /// The repack and conv pipelines of this layer for the context's kernel choices (for the
    /// slices of a conv split along K with `ksplit`, with the epilogue's `fexact`).
    fn pipelines(
        &self,
        ctx: &GpuContext,
        kernels: &ConvPlan,
        use_textures: bool,
        ksplit: bool,
        fexact: u32,
    ) -> Result<ConvPipelines> {
        let fexact = ("FEXACT", fexact);
        let pack = ctx.pipeline(Kernel::ConvPack { xtex: use_textures }, &[])?;
        let conv = match self.layout {
            ConvKernelLayout::Gemm { .. } => {
                let kernel = Kernel::ConvGemm(GemmVariant {
                    xtex: use_textures,
                    b: kernels.staging,
                    packed: kernels.packed,
                    ksplit,
                });
                let wzp = ("WZP", u32::from(self.wzp));
                match kernels.staging {
                    BStaging::Tiled => {
                        let t = kernels.tile;
                        let overrides = [
                            wzp,
                            fexact,
                            ("WG", t.wg()),
                            ("TP", t.pixel_tiles),
                            ("BPT", t.blocks),
                            ("TKQ", t.tkq),
                        ];
                        ctx.pipeline(kernel, &overrides)?
                    }
                    _ => {
                        let overrides = [wzp, fexact, ("WG", kernels.wg), ("TKQ", kernels.tkq)];
                        ctx.pipeline(kernel, &overrides)?
                    }
                }
            }
            ConvKernelLayout::Depthwise => {
                let c_out_per_group = self.w_dims[0] / self.params.groups;
                ctx.pipeline(
                    Kernel::ConvDw { xtex: use_textures },
                    &[
                        fexact,
                        ("WG", kernels.wg),
                        ("IDENT", u32::from(c_out_per_group == 1)),
                    ],
                )?
            }
        };
        Ok(ConvPipelines { pack, conv })
    }
}

/// What a conv run's timestamp queries measured.
#[derive(Clone, Copy)]
enum Timed {
    /// Nothing (no timing asked for).
    Nothing,
    /// The whole layer, in one pass (queries 0 and 1).
    Whole,
    /// The repack (queries 0 and 1) and the conv (2 and 3), each in a pass of its own.
    Apart,
    /// The conv of a layer without a repack, in one pass (queries 0 and 1).
    ConvOnly,
}

/// The timestamp queries of a timed conv run: a query set of 4 and the buffer it resolves to;
/// `parts` asks for the repack and the conv kernel in passes of their own.
#[derive(Clone, Copy)]
struct Timing<'q> {
    set: &'q wgpu::QuerySet,
    resolve: &'q wgpu::Buffer,
    parts: bool,
}

/// One band of one image, run on its own (see `conv_plan::RowBand`): its input rows copied
/// out of the input tensor, and the buffer its conv writes, copied into place afterwards.
struct BandRun<'g> {
    image: u64,
    band: RowBand,
    /// The band's conv geometry ([`ConvGeometry::band`]) per slice of K (one without the
    /// split).
    slices: &'g [ConvGeometry],
    input: BandInput,
    /// The copy of the band's input rows per slice of K (of the slice's channels).
    inputs: Vec<Arc<PooledBuffer>>,
    output: Arc<PooledBuffer>,
}

impl<'g> BandRun<'g> {
    /// Every band of every image of `x` (none without bands), their input rows' copies
    /// recorded on `encoder`.
    fn prepare(
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        geometry: &ConvGeometry,
        bands: &'g [(RowBand, Vec<ConvGeometry>)],
    ) -> Result<Vec<Self>> {
        let images = if bands.is_empty() {
            0
        } else {
            x.dims[0] as u64
        };
        let plane_bytes = geometry.plane_words_in * 4;
        let mut runs = Vec::new();
        for image in 0..images {
            for (band, slices) in bands {
                let input = geometry.band_input(band);
                let bytes = input.words * 4;
                let mut inputs = Vec::new();
                for slice in slices {
                    let buffer = ctx.pooled_buffer(
                        slice.c_in * bytes,
                        STORAGE_USAGE,
                        "squint conv band input",
                    )?;
                    for j in 0..slice.c_in * u64::from(bytes > 0) {
                        let c = slice.input_channel(j);
                        let src = (image * geometry.c_in + c) * plane_bytes + input.first_byte;
                        encoder.copy_buffer_to_buffer(&x.buffer, src, &buffer, j * bytes, bytes);
                    }
                    inputs.push(buffer);
                }
                let output = ctx.pooled_buffer(
                    geometry.c_out * slices[0].pixel_tiles * 4,
                    STORAGE_USAGE,
                    "squint conv band output",
                )?;
                runs.push(BandRun {
                    image,
                    band: *band,
                    slices,
                    input,
                    inputs,
                    output,
                });
            }
        }
        Ok(runs)
    }

    /// Records the copy of the band's output (`pixel_tiles` words of the band per channel)
    /// into its rows of the packed output `output` of the whole conv (`geometry`).
    fn copy_output(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        geometry: &ConvGeometry,
        output: &wgpu::Buffer,
    ) {
        let bytes = self.slices[0].pixel_tiles * 4;
        for c in 0..geometry.c_out {
            let plane = (self.image * geometry.c_out + c) * geometry.pixel_tiles;
            let dst = (plane + geometry.band_output_word(&self.band)) * 4;
            encoder.copy_buffer_to_buffer(&self.output, c * bytes, output, dst, bytes);
        }
    }
}

/// The two pipelines of a conv run.
struct ConvPipelines {
    /// `conv_pack.wgsl`.
    pack: Arc<Pipeline>,
    /// `conv2d_gemm.wgsl` or `conv2d_dw.wgsl`.
    conv: Arc<Pipeline>,
}

/// Where one conv run writes its repacked input quads: a pooled texture, or a pooled scratch
/// buffer bound as windows.
enum RepackedQuads {
    Texture(PooledTexture),
    Buffer(Arc<PooledBuffer>),
}

impl RepackedQuads {
    /// Storage for `chunk_quads` quads (one chunk of images, or one band).
    fn allocate(
        ctx: &GpuContext,
        kernels: &ConvPlan,
        scratch: &ScratchPlan,
        chunk_quads: u64,
    ) -> Result<Self> {
        if scratch.use_textures {
            let width = kernels.tex_width;
            let height = texture_rows(chunk_quads, width as u64).min(kernels.tex_max_height as u64);
            Ok(RepackedQuads::Texture(
                ctx.pooled_texture(width, height as u32),
            ))
        } else {
            Ok(RepackedQuads::Buffer(ctx.pooled_buffer(
                chunk_quads * QUAD,
                STORAGE_USAGE,
                "squint conv quads",
            )?))
        }
    }

    /// The binding covering quad bytes `bytes`, and the index of its first quad (the kernels
    /// subtract it; 0 for the texture, which is bound whole).
    fn binding(&self, split: SplitLimits, bytes: (u64, u64)) -> (Res<'_>, u32) {
        match self {
            RepackedQuads::Texture(texture) => (Res::Tex(texture.view()), 0),
            RepackedQuads::Buffer(buffer) => {
                let window = Slot::new(split, buffer, bytes.0, bytes.1);
                let base = window.base(QUAD);
                (Res::Buf(window), base)
            }
        }
    }

    /// Hands the storage to `keep`, so that it returns to the pool once the commands are queued.
    fn keep_until_queued(self, keep: &mut Keep) {
        match self {
            RepackedQuads::Texture(texture) => keep.texture(texture),
            RepackedQuads::Buffer(buffer) => keep.buffer(buffer),
        }
    }
}

/// The conv input as the repack kernel reads it: the tensor's buffer (bound as windows), or a
/// copy in a texture (image loads are much cheaper than buffer loads on CPU adapters).
enum ConvInput<'a> {
    Buffer(&'a wgpu::Buffer),
    Texture {
        texture: PooledTexture,
        log2_width: u32,
    },
}

impl<'a> ConvInput<'a> {
    /// The input `x`, copied into a pooled texture (recorded on `encoder`) when
    /// `use_textures`.
    fn prepare(
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        x: &'a GpuTensor,
        kernels: &ConvPlan,
        use_textures: bool,
    ) -> Self {
        if !use_textures {
            return ConvInput::Buffer(&x.buffer);
        }
        let width = kernels.tex_width as u64;
        let texels = packed_bytes(x.dims).div_ceil(QUAD);
        let texture = ctx.pooled_texture(width as u32, texture_rows(texels, width) as u32);
        for copy in input_texture_copies(texels, width) {
            copy_into_texture(encoder, &x.buffer, texture.texture(), width, copy);
        }
        ConvInput::Texture {
            texture,
            log2_width: width.trailing_zeros(),
        }
    }

    /// The binding covering input bytes `bytes`, the index of its first word (0 for the
    /// texture), and the texture's log2 width (0 for the buffer).
    fn binding(&self, split: SplitLimits, bytes: (u64, u64)) -> (Res<'_>, u32, u32) {
        match self {
            ConvInput::Texture {
                texture,
                log2_width,
            } => (Res::Tex(texture.view()), 0, *log2_width),
            ConvInput::Buffer(buffer) => {
                let window = Slot::new(split, buffer, bytes.0, bytes.1);
                let base = window.base(4);
                (Res::Buf(window), base, 0)
            }
        }
    }

    /// Hands a texture copy to `keep`, so that it returns to the pool once the commands are
    /// queued.
    fn keep_until_queued(self, keep: &mut Keep) {
        if let ConvInput::Texture { texture, .. } = self {
            keep.texture(texture);
        }
    }
}

/// Records `copy` from `buffer` (rows of `width` quad-sized texels) into `texture`.
pub(crate) fn copy_into_texture(
    encoder: &mut wgpu::CommandEncoder,
    buffer: &wgpu::Buffer,
    texture: &wgpu::Texture,
    width: u64,
    copy: TexelCopy,
) {
    encoder.copy_buffer_to_texture(
        wgpu::TexelCopyBufferInfo {
            buffer,
            layout: wgpu::TexelCopyBufferLayout {
                offset: copy.byte_offset,
                bytes_per_row: Some((width * QUAD) as u32),
                rows_per_image: None,
            },
        },
        wgpu::TexelCopyTextureInfo {
            texture,
            mip_level: 0,
            origin: wgpu::Origin3d {
                x: 0,
                y: copy.first_row as u32,
                z: 0,
            },
            aspect: wgpu::TextureAspect::All,
        },
        wgpu::Extent3d {
            width: copy.width as u32,
            height: copy.rows as u32,
            depth_or_array_layers: 1,
        },
    );
}

/// The storage windows of one conv dispatch: the first element index of each buffer window
/// (0 for textures) and the log2 widths of the textures (0 for buffers).
struct ConvWindows<'a> {
    bindings: Vec<Res<'a>>,
    quads_base: u32,
    weights_base: u32,
    weights_tex_log2_width: u32,
    etab_base: u32,
    etab_tex_log2_width: u32,
    output_base: u32,
    /// First vec4 of the partial-sums window (0 without).
    partial_base: u32,
}

/// What one repack dispatch reads and writes: the chunk's images, or one band of an image.
struct RepackSpan {
    /// First image of the chunk in the input read (0 for a band's input copy).
    first_image: u64,
    /// Interior items of the chunk (border items follow).
    n_interior: u64,
    /// Words per channel plane of the input read.
    plane_words: u64,
    /// Plane position of each input plane's byte 0, and the positions written `[begin, end)`.
    pos: (u64, u64, u64),
    /// Padded rows written: first, count.
    rows: (u64, u64),
}

/// Everything one conv run's dispatches are built from.
struct ConvCall<'a> {
    layer: &'a GpuConv2d,
    split: SplitLimits,
    geometry: &'a ConvGeometry,
    domain: InputDomain,
    use_textures: bool,
    /// Log2 width of the quads texture (passed whether or not the quads are in one).
    quads_tex_log2_width: u32,
    quads: &'a RepackedQuads,
    input: &'a ConvInput<'a>,
    output: &'a PooledBuffer,
    /// For a slice of a conv split along K: the partial sums' buffer (indexed like the
    /// output, a `vec4<i32>` per packed word) and what this slice does with them.
    partial: Option<(&'a PooledBuffer, KPass)>,
    /// The kernels' `FEXACT`: above 0, the layer's float epilogue table is bound.
    fexact: u32,
}

/// Whether a run of `images` images (from image 0) of `geometry` in the parallel K slices `k`
/// takes one conv and one reduce dispatch: every binding (the operands, the output and the
/// slices' partial sums) in one window, every workgroup in one dispatch.
fn parallel_k_fits(
    split: SplitLimits,
    geometry: &ConvGeometry,
    images: u64,
    k: &KParallel,
) -> bool {
    let tiles = images * geometry.workgroups_per_image();
    let partial = k.partial_bytes(geometry, images);
    let mut ranges = geometry.conv_ranges(0, 0, tiles);
    ranges.push((0, partial));
    let max_groups = u64::from(split.max_workgroups).pow(2);
    partial <= split.max_buffer
        && tiles * k.slices <= max_groups
        && (ranges.iter()).all(|&(lo, hi)| split.window(lo, hi).1 <= split.max_binding)
}

/// What the conv of one slice of K does with the partial sums of the others.
#[derive(Clone, Copy, Debug)]
struct KPass {
    /// Adds the sums the earlier slices left (all but the first slice).
    add_earlier: bool,
    /// Finishes: adds the zero-point terms and runs the epilogue (the last slice); else
    /// keeps the sums for the next slice.
    last: bool,
}

impl KPass {
    /// The kernel's `k_pass` bits.
    fn bits(self) -> u32 {
        u32::from(self.add_earlier) | (u32::from(self.last) << 1)
    }
}

impl<'a> ConvCall<'a> {
    /// Appends the repack dispatches of the chunk of `images` images from `first_image`:
    /// interior items (input words), then, with padding, border items.
    fn push_repack(
        &self,
        pipeline: &Arc<Pipeline>,
        first_image: u64,
        images: u64,
        dispatches: &mut Vec<Dispatch<'a>>,
    ) -> Result<()> {
        let geometry = self.geometry;
        let ranges = |b: u64, e: u64| geometry.repack_ranges(first_image, images, b, e);
        let items = geometry.repack_items(images);
        let span = RepackSpan {
            first_image,
            n_interior: geometry.interior_items(images),
            plane_words: geometry.plane_words_in,
            pos: (0, 0, geometry.h * geometry.w),
            rows: (0, geometry.padded_h),
        };
        for (begin, end) in plan(self.split, items, 64, "conv input repacking", &ranges)? {
            let r = ranges(begin, end);
            let input = self.input.binding(self.split, r[0]);
            dispatches.push(self.repack_dispatch(pipeline, &span, (begin, end), input, &r));
        }
        Ok(())
    }

    /// Appends the repack dispatches of band run `run` (reading `input_buffer`, its input
    /// rows' copy for this call's slice of K, see [`BandInput`]): its interior items, then its
    /// border items; the shader writes only the band's rows.
    fn push_band_repack(
        &self,
        pipeline: &Arc<Pipeline>,
        run: &'a BandRun<'_>,
        input_buffer: &'a Arc<PooledBuffer>,
        dispatches: &mut Vec<Dispatch<'a>>,
    ) -> Result<()> {
        let (band, input) = (&run.band, &run.input);
        let geometry = self.geometry;
        let span = RepackSpan {
            first_image: 0,
            n_interior: input.words * geometry.quads_per_pixel,
            plane_words: input.words,
            pos: (input.first_byte, input.pos_begin, input.pos_end),
            rows: (band.row_begin, band.rows),
        };
        for (lo, hi) in geometry.band_repack_items(band, input) {
            if lo == hi {
                continue;
            }
            let ranges = |b: u64, e: u64| geometry.band_repack_ranges(band, input, lo + b, lo + e);
            for (begin, end) in plan(self.split, hi - lo, 64, "conv input repacking", &ranges)? {
                let r = ranges(begin, end);
                let window = Slot::new(self.split, input_buffer, r[0].0, r[0].1);
                let x_base = window.base(4);
                let items = (lo + begin, lo + end);
                let input = (Res::Buf(window), x_base, 0);
                dispatches.push(self.repack_dispatch(pipeline, &span, items, input, &r));
            }
        }
        Ok(())
    }

    /// The repack dispatch of items `[items.0, items.1)` of `span`, reading `input` (binding,
    /// first word, texture log2 width), whose byte ranges (input, quads) are `r`.
    fn repack_dispatch(
        &self,
        pipeline: &Arc<Pipeline>,
        span: &RepackSpan,
        (begin, end): (u64, u64),
        (input, x_base, x_tex_log2_width): (Res<'a>, u32, u32),
        r: &[(u64, u64)],
    ) -> Dispatch<'a> {
        let geometry = self.geometry;
        let (quads, q_base) = self.quads.binding(self.split, r[1]);
        let params = ConvPackParams {
            item_begin: begin as u32,
            item_count: (end - begin) as u32,
            n_interior: span.n_interior as u32,
            h: geometry.h as u32,
            w: geometry.w as u32,
            plane_words: span.plane_words as u32,
            padded_h: geometry.padded_h as u32,
            padded_w: geometry.padded_w as u32,
            pad_h: geometry.pad_h as u32,
            pad_w: geometry.pad_w as u32,
            c_in: geometry.c_in as u32,
            c_in_per_group: geometry.c_in_per_group as u32,
            groups: geometry.groups as u32,
            slots_per_group: geometry.slots_per_group as u32,
            quads_per_pixel: geometry.quads_per_pixel as u32,
            img_begin: span.first_image as u32,
            x_base,
            x_tex_log2_width,
            q_base,
            quads_tex_log2_width: self.quads_tex_log2_width,
            flip: self.domain.flip,
            pad_byte: self.domain.pad_byte(),
            row_begin: span.rows.0 as u32,
            band_rows: span.rows.1 as u32,
            pos_shift: span.pos.0 as u32,
            pos_begin: span.pos.1 as u32,
            pos_end: span.pos.2 as u32,
            _pad: 0,
        };
        Dispatch::new(
            pipeline,
            &params,
            vec![input, quads],
            groups_for(end - begin),
        )
    }

    /// Appends the conv dispatches (kernel with fused epilogue) of the chunk of `images`
    /// images from `first_image`.
    fn push_conv(
        &self,
        pipeline: &Arc<Pipeline>,
        first_image: u64,
        images: u64,
        dispatches: &mut Vec<Dispatch<'a>>,
    ) -> Result<()> {
        let geometry = self.geometry;
        // With partial sums: their window, 4 bytes per output byte.
        let ranges = |b: u64, e: u64| {
            let mut r = geometry.conv_ranges(first_image, b, e);
            if self.partial.is_some() {
                r.push((r[3].0 * 4, r[3].1 * 4));
            }
            r
        };
        let workgroups = images * geometry.workgroups_per_image();
        for (begin, end) in plan(self.split, workgroups, 1, "conv2d", &ranges)? {
            let windows = self.conv_windows(&ranges(begin, end));
            let (wg_begin, wg_count) = (begin as u32, (end - begin) as u32);
            let dispatch = match self.geometry.layout {
                ConvKernelLayout::Gemm { .. } => {
                    let params = self.gemm_params(first_image, wg_begin, wg_count, &windows);
                    Dispatch::new(pipeline, &params, windows.bindings, end - begin)
                }
                ConvKernelLayout::Depthwise => {
                    let params = self.depthwise_params(first_image, wg_begin, wg_count, &windows);
                    Dispatch::new(pipeline, &params, windows.bindings, end - begin)
                }
            };
            dispatches.push(dispatch);
        }
        Ok(())
    }

    /// Appends the two dispatches of a conv of `images` images (the whole run, one binding
    /// window each, see [`parallel_k_fits`]) in the parallel K slices `k`: the tiled kernel
    /// storing each slice's sums in `partial`, then the reduce kernel (`pipes`: the two).
    fn push_parallel_k(
        &self,
        (conv, reduce): (&Arc<Pipeline>, &Arc<Pipeline>),
        partial: &'a PooledBuffer,
        k: KParallel,
        images: u64,
        dispatches: &mut Vec<Dispatch<'a>>,
    ) {
        let g = self.geometry;
        let tiles = images * g.workgroups_per_image();
        let mut windows = self.conv_operand_windows(&g.conv_ranges(0, 0, tiles));
        let partial = Slot::new(self.split, partial, 0, k.partial_bytes(g, images));
        windows.bindings.push(Res::Buf(partial));
        let mut params = self.gemm_params(0, 0, tiles as u32, &windows);
        params.k_slices = k.slices as u32;
        params.slice_quads = k.slice_quads as u32;
        params.slice_words = (images * g.c_out * g.pixel_tiles) as u32;
        let words = params.slice_words as u64;
        let bindings = windows.bindings;
        dispatches.push(Dispatch::new(
            conv,
            &params,
            bindings.clone(),
            tiles * k.slices,
        ));
        dispatches.push(Dispatch::new(reduce, &params, bindings, words.div_ceil(64)));
    }

    /// The bindings of a conv dispatch whose byte ranges (quads, weights, epilogue table,
    /// output) are `r`: textures when the run uses them, else buffer windows.
    fn conv_windows(&self, r: &[(u64, u64)]) -> ConvWindows<'a> {
        let mut windows = self.conv_operand_windows(r);
        if let Some((partial, _)) = self.partial {
            let window = Slot::new(self.split, partial, r[4].0, r[4].1);
            windows.partial_base = window.base(16);
            windows.bindings.push(Res::Buf(window));
        }
        windows
    }

    /// [`ConvCall::conv_windows`] but the partial sums.
    fn conv_operand_windows(&self, r: &[(u64, u64)]) -> ConvWindows<'a> {
        let (quads, quads_base) = self.quads.binding(self.split, r[0]);
        let output = Slot::new(self.split, self.output, r[3].0, r[3].1);
        let output_base = output.base(4);
        let res = &self.layer.res;
        // The float epilogue's table where the kernels run it (see `GpuConv2d::float_code`).
        let (etab, etab_tex) = match &res.float_etab {
            Some((b, t, _)) if self.fexact > 0 => (b, t),
            _ => (&res.etab, &res.etab_tex),
        };
        match (self.use_textures, &res.weights_tex, etab_tex) {
            (true, Some(weights), Some(etab)) => ConvWindows {
                bindings: vec![
                    quads,
                    Res::Tex(&weights.view),
                    Res::Tex(&etab.view),
                    Res::Buf(output),
                ],
                quads_base,
                weights_base: 0,
                weights_tex_log2_width: weights.log2_width,
                etab_base: 0,
                etab_tex_log2_width: etab.log2_width,
                output_base,
                partial_base: 0,
            },
            _ => {
                let weights = Slot::new(self.split, &res.weights, r[1].0, r[1].1);
                let etab = Slot::new(self.split, etab, r[2].0, r[2].1);
                let (weights_base, etab_base) = (weights.base(16), etab.base(16));
                ConvWindows {
                    bindings: vec![quads, Res::Buf(weights), Res::Buf(etab), Res::Buf(output)],
                    quads_base,
                    weights_base,
                    weights_tex_log2_width: 0,
                    etab_base,
                    etab_tex_log2_width: 0,
                    output_base,
                    partial_base: 0,
                }
            }
        }
    }

    /// The uniform of a `conv2d_gemm.wgsl` dispatch.
    fn gemm_params(
        &self,
        first_image: u64,
        wg_begin: u32,
        wg_count: u32,
        windows: &ConvWindows<'_>,
    ) -> ConvGemmParams {
        let g = self.geometry;
        let ConvKernelLayout::Gemm {
            quads_per_group,
            k_quads,
            blocks_per_group,
        } = g.layout
        else {
            unreachable!("gemm_params of a depthwise layer")
        };
        let (step_kx, step_ky) = g.tap_steps();
        let epi = &self.layer.epi;
        let slice = g.k_slice;
        ConvGemmParams {
            wg_begin,
            wg_count,
            plane_workgroups: g.groups_per_plane as u32,
            pixel_tiles: g.pixel_tiles as u32,
            channel_blocks: g.channel_blocks as u32,
            blocks_per_group: blocks_per_group as u32,
            plane_out: g.plane_out as u32,
            w_out: g.w_out as u32,
            c_out: g.c_out as u32,
            c_out_per_group: g.c_out_per_group as u32,
            kw: g.kw as u32,
            k_quads: k_quads as u32,
            quads_per_group: quads_per_group as u32,
            quads_per_pixel: g.quads_per_pixel as u32,
            padded_h: g.padded_h as u32,
            padded_w: g.padded_w as u32,
            stride_h: g.stride_h as u32,
            stride_w: g.stride_w as u32,
            step_kx,
            step_ky,
            n_begin: first_image as u32,
            a_base: windows.quads_base,
            quads_tex_log2_width: self.quads_tex_log2_width,
            w_base: windows.weights_base,
            w_tex_log2_width: windows.weights_tex_log2_width,
            etab_base: windows.etab_base,
            y_base: windows.output_base,
            x_zero_point: self.domain.zero_point,
            k_padded: g.padded_k() as i32,
            out_zp: epi.out.zero_point,
            out_lo: epi.clamp.min,
            out_hi: epi.clamp.max,
            etab_tex_log2_width: windows.etab_tex_log2_width,
            w_block_quads: (g.kh * g.kw * slice.group_quads) as u32,
            w_first: (8 * slice.first) as u32,
            w_tap_skip: (8 * (slice.group_quads - slice.quads)) as u32,
            k_pass: self.partial.map_or(0, |(_, pass)| pass.bits()),
            p_base: windows.partial_base,
            group_base: slice.group_first as u32,
            k_slices: 1,
            slice_quads: k_quads as u32,
            slice_words: 0,
            _pad: [0; 2],
        }
    }

    /// The uniform of a `conv2d_dw.wgsl` dispatch.
    fn depthwise_params(
        &self,
        first_image: u64,
        wg_begin: u32,
        wg_count: u32,
        windows: &ConvWindows<'_>,
    ) -> ConvDwParams {
        let g = self.geometry;
        let (step_x, step_y) = g.tap_steps();
        let epi = &self.layer.epi;
        ConvDwParams {
            wg_begin,
            wg_count,
            plane_workgroups: g.groups_per_plane as u32,
            pixel_tiles: g.pixel_tiles as u32,
            channel_blocks: g.channel_blocks as u32,
            plane_out: g.plane_out as u32,
            w_out: g.w_out as u32,
            c_out: g.c_out as u32,
            channel_multiplier: g.c_out_per_group as u32,
            kw: g.kw as u32,
            taps: (g.kh * g.kw) as u32,
            quads_per_pixel: g.quads_per_pixel as u32,
            padded_h: g.padded_h as u32,
            padded_w: g.padded_w as u32,
            stride_h: g.stride_h as u32,
            stride_w: g.stride_w as u32,
            step_x,
            step_y,
            n_begin: first_image as u32,
            a_base: windows.quads_base,
            quads_tex_log2_width: self.quads_tex_log2_width,
            w_base: windows.weights_base,
            w_tex_log2_width: windows.weights_tex_log2_width,
            etab_base: windows.etab_base,
            y_base: windows.output_base,
            x_zero_point: self.domain.zero_point,
            out_zp: epi.out.zero_point,
            out_lo: epi.clamp.min,
            out_hi: epi.clamp.max,
            etab_tex_log2_width: windows.etab_tex_log2_width,
            block_base: g.weight_blocks(0).0 as u32,
            quad_base: g.k_slice.first as u32,
            c_end: g.out_channels().1 as u32,
            _pad: 0,
        }
    }
}

/// The checks of [`conv2d_quantized`] (and of the CPU reference, in its order): a consistent
/// shape, input and weight lengths, per-channel qparams, the accumulator bound.
pub fn check_conv2d_args(
    x: &[u8],
    x_qp: &QParams,
    w: &[i8],
    w_qp: &WeightQParams,
    epi: &Epilogue,
    s: &ConvShape,
) -> Result<()> {
    check_conv2d_layer_args(Some(x.len()), x_qp, w, w_qp, epi, s)
}

/// [`check_conv2d_args`] for a layer built before its input exists: the input's length is
/// checked only when given (a device tensor's dims are checked when the layer runs).
pub fn check_conv2d_layer_args(
    x_len: Option<usize>,
    x_qp: &QParams,
    w: &[i8],
    w_qp: &WeightQParams,
    epi: &Epilogue,
    s: &ConvShape,
) -> Result<()> {
    let checked = ConvShape::new(s.input_dims(), s.weight_dims(), s.params)?;
    if checked != *s {
        return Err(Error::Shape(format!(
            "inconsistent conv shape {s:?} (derived: {checked:?})"
        )));
    }
    let lengths = [
        ("input", x_len, s.input_len()),
        ("weight", Some(w.len()), s.weight_len()),
    ];
    for (what, got, want) in lengths {
        if let Some(got) = got.filter(|&g| g != want) {
            return Err(Error::Shape(format!(
                "{what} has {got} elements, the conv shape needs {want}"
            )));
        }
    }
    w_qp.check_channels(s.c_out)?;
    epi.check_accumulator(
        w,
        w_qp,
        x_qp.dtype.full_range(),
        x_qp.zero_point,
        s.k(),
        None,
    )?;
    Ok(())
}

/// One-shot GPU conv with the contract of [`crate::cpu::reference::conv2d_quantized`]:
/// validates the shape, checks the accumulator bound, uploads, runs, reads the output bytes
/// back (stored bytes of the epilogue's output dtype, NCHW).
pub fn conv2d_quantized(
    ctx: &GpuContext,
    x: &[u8],
    x_qp: &QParams,
    w: &[i8],
    w_qp: &WeightQParams,
    epi: &Epilogue,
    s: &ConvShape,
) -> Result<Vec<u8>> {
    check_conv2d_args(x, x_qp, w, w_qp, epi, s)?;
    // One critical section for the whole call (the gate is re-entrant).
    let ctx = &ctx.enter()?;
    let layer = GpuConv2d::new(ctx, w, s.weight_dims(), w_qp, epi, s.params)?;
    run_layer_bytes(ctx, &layer, x, x_qp, s)
}

/// [`conv2d_quantized`] with a layer built before (for the same weights, qparams and shape):
/// the arguments' checks, then the upload of `x`, the conv and the read-back.
pub fn conv2d_quantized_with(
    ctx: &GpuContext,
    layer: &GpuConv2d,
    x: &[u8],
    x_qp: &QParams,
    s: &ConvShape,
) -> Result<Vec<u8>> {
    if x.len() != s.input_len() {
        return Err(Error::Shape(format!(
            "input has {} elements, the conv shape needs {}",
            x.len(),
            s.input_len()
        )));
    }
    if layer.weight_dims() != s.weight_dims() || layer.params() != s.params {
        return Err(Error::Shape(format!(
            "the layer is for weights {:?}, the conv shape {s:?}",
            layer.weight_dims()
        )));
    }
    let ctx = &ctx.enter()?;
    run_layer_bytes(ctx, layer, x, x_qp, s)
}

fn run_layer_bytes(
    ctx: &GpuContext,
    layer: &GpuConv2d,
    x: &[u8],
    x_qp: &QParams,
    s: &ConvShape,
) -> Result<Vec<u8>> {
    let xt = ctx.upload_q(x, s.input_dims(), x_qp.dtype)?;
    let y = layer.run(ctx, &xt, x_qp)?;
    ctx.read_q(&y)
}

#[cfg(test)]
mod tests {
    use super::super::{testing, InputChoice, KernelOptions};
    use super::*;
    use crate::quant::{QDtype, QScheme, RequantFormula};

    #[test]
    fn depthwise_convs_read_the_packed_tensor_unless_told_to_repack() {
        for base in testing::contexts() {
            let ctx = &base.enter().unwrap();
            let p = ConvParams::default().padding(1).stride(2).groups(6);
            let s = ConvShape::new([2, 6, 9, 10], [12, 1, 3, 3], p).unwrap();
            let w: Vec<i8> = (0..s.weight_len())
                .map(|i| (i as i32 * 37 % 255 - 127) as i8)
                .collect();
            let w_qp = WeightQParams::per_tensor(QScheme::PerTensorAffine, 0.01, 2);
            let x_qp = QParams::new(0.02, 3, QDtype::QInt8).unwrap();
            let out = QParams::new(0.05, -4, QDtype::QInt8).unwrap();
            let epi =
                Epilogue::new(RequantFormula::Fbgemm, 0.02, &w_qp, None, out, false, 12).unwrap();
            let layer = GpuConv2d::new(ctx, &w, s.weight_dims(), &w_qp, &epi, p).unwrap();
            let x: Vec<u8> = (0..s.input_len()).map(|i| (i * 91 % 256) as u8).collect();
            let xt = ctx.upload_q(&x, s.input_dims(), x_qp.dtype).unwrap();
            let (direct, _) = (layer.encode_direct(ctx, &xt, &x_qp, &s, None).unwrap())
                .expect("the direct kernel runs it");
            let o = KernelOptions {
                dw_repacked: true,
                ..KernelOptions::default()
            };
            let repacking = base.with_kernel_options(o).unwrap();
            let repacking = &repacking.enter().unwrap();
            let none = layer
                .encode_direct(repacking, &xt, &x_qp, &s, None)
                .unwrap();
            assert!(none.is_none(), "dw_repacked: the repacked path");
            let repacked = layer.run(repacking, &xt, &x_qp).unwrap();
            assert_eq!(ctx.read_q(&direct).unwrap(), ctx.read_q(&repacked).unwrap());
            // Timed apart: no repack on the direct kernel, a repack on the other.
            if ctx.has_timestamps() {
                let (_, t) = layer.run_timed_parts(ctx, &xt, &x_qp).unwrap();
                let [repack, conv] = t.expect("timestamps");
                assert!(repack.is_zero() && !conv.is_zero(), "{repack:?} {conv:?}");
                let (_, t) = layer.run_timed_parts(repacking, &xt, &x_qp).unwrap();
                let [repack, conv] = t.expect("timestamps");
                assert!(!repack.is_zero() && !conv.is_zero(), "{repack:?} {conv:?}");
            }
        }
    }

    /// Each path of `conv2d_dw_direct.wgsl`, against the CPU reference: 8 pixels per
    /// invocation (rows a multiple of 8 wide, or words across two rows), the 4-pixel row path
    /// (aligned, across rows, stride 2 and 3), pixel by pixel (dilation, a span over 12
    /// bytes, rows under 4 pixels), the widest kernel, a channel multiplier of 3, both input
    /// dtypes, weight zero points and a padding wider than the kernel's reach.
    #[test]
    fn every_path_of_the_direct_depthwise_kernel_matches_the_reference() {
        let cp = |stride, padding, dilation| ConvParams {
            stride,
            padding,
            dilation: [dilation; 2],
            groups: 1,
        };
        // Stride 1 across, dilation 1 across and output rows of whole words: rows of words
        // (cases 0, 2 and 11 to 14: one or several segments per row, a shorter last one,
        // spans of 4 texels, vertical stride or dilation); rows of other widths: the 8-pixel
        // path (across two rows: 1, 9), the 4-pixel row path, or pixel by pixel.
        let cases: [([usize; 4], [usize; 2], ConvParams); 15] = [
            ([2, 5, 9, 16], [3, 3], ConvParams::default().padding(1)),
            ([1, 4, 7, 21], [3, 3], ConvParams::default().padding(1)),
            ([1, 3, 11, 12], [5, 5], ConvParams::default().padding(2)),
            (
                [1, 4, 9, 14],
                [3, 3],
                ConvParams::default().padding(1).stride(2),
            ),
            ([1, 4, 10, 21], [3, 3], cp([1, 3], [0, 0], 1)),
            (
                [1, 3, 12, 13],
                [3, 3],
                ConvParams::default().padding(2).dilation(2),
            ),
            ([1, 3, 9, 30], [3, 5], cp([1, 3], [1, 1], 1)),
            ([2, 3, 8, 3], [3, 3], ConvParams::default().padding(1)),
            ([1, 2, 6, 19], [2, 8], cp([1, 1], [0, 3], 1)),
            ([1, 2, 7, 9], [3, 3], ConvParams::default().padding(1)),
            ([1, 3, 5, 11], [1, 1], cp([1, 1], [0, 5], 1)),
            ([2, 3, 5, 44], [3, 3], ConvParams::default().padding(1)),
            ([1, 3, 4, 59], [2, 8], cp([1, 1], [1, 2], 1)),
            ([1, 2, 9, 20], [3, 3], cp([2, 1], [1, 1], 1)),
            (
                [1, 3, 10, 16],
                [3, 3],
                ConvParams {
                    stride: [1, 1],
                    padding: [2, 1],
                    dilation: [2, 1],
                    groups: 1,
                },
            ),
        ];
        // Input, weights and epilogue as textures (CPU adapters) and as buffers (GPUs).
        let buffers = KernelOptions {
            input: InputChoice::Buffer,
            ..KernelOptions::default()
        };
        let contexts = testing::contexts().into_iter().flat_map(|c| {
            let b = c.with_kernel_options(buffers).unwrap();
            [c, b]
        });
        for base in contexts {
            let ctx = &base.enter().unwrap();
            for (i, (x_dims, [kh, kw], p)) in cases.into_iter().enumerate() {
                let c = x_dims[1];
                // Channel multiplier 3 in the case with 2 channels, else 1.
                let m = if c == 2 { 3 } else { 1 };
                let p = p.groups(c);
                let s = ConvShape::new(x_dims, [c * m, 1, kh, kw], p).unwrap();
                let w: Vec<i8> = (0..s.weight_len())
                    .map(|j| ((j * 53 + i * 7) % 255) as i8)
                    .collect();
                let zps = (0..c * m).map(|o| (o as i32 % 5) - 2).collect();
                let w_qp = WeightQParams {
                    scheme: QScheme::PerChannelAffine,
                    scales: vec![0.004; c * m],
                    zero_points: zps,
                };
                let dtype = [QDtype::QUInt8, QDtype::QInt8][i % 2];
                let x_qp = QParams::new(0.03, [7, -5][i % 2], dtype).unwrap();
                let out = QParams::new(0.08, 3, QDtype::QUInt8).unwrap();
                let epi =
                    Epilogue::new(RequantFormula::Fbgemm, 0.03, &w_qp, None, out, false, c * m)
                        .unwrap();
                let x: Vec<u8> = (0..s.input_len()).map(|j| (j * 97 + i) as u8).collect();
                let want = crate::cpu::reference::conv2d_quantized(&x, &x_qp, &w, &w_qp, &epi, &s)
                    .unwrap();
                let layer = GpuConv2d::new(ctx, &w, s.weight_dims(), &w_qp, &epi, p).unwrap();
                let xt = ctx.upload_q(&x, s.input_dims(), dtype).unwrap();
                let (y, _) = (layer.encode_direct(ctx, &xt, &x_qp, &s, None).unwrap())
                    .unwrap_or_else(|| panic!("case {i}: not on the direct kernel"));
                assert_eq!(ctx.read_q(&y).unwrap(), want, "case {i}: {s:?}");
            }
        }
    }

    #[test]
    fn the_float_epilogue_rounds_ties_and_sums_as_the_reference() {
        // M = 0.5 exactly (input scale 0.5, weight scale 0.25, output scale 0.25): every odd
        // accumulator of channel 0 (bias 0) is a tie, which round-to-nearest-even decides.
        // Channel 1 (weight scale 2^-10, M = 2^-9): its bias over `sx * sw` (0.0375 / 2^-11
        // = 76.8) is not exact in f32 and is added to accumulators of up to about 2^16 that
        // stay within the output range, where f32 rounds the sum. As a depthwise conv (the
        // direct kernel) and as the same conv with zero weights across channels (GEMM).
        let taps = |o: usize| (0..9).map(move |j| if o == 0 { 1 } else { [127, -128, 101][j % 3] });
        let dw = ConvParams::default().padding(1).groups(2);
        let gemm = ConvParams::default().padding(1);
        let w_dw: Vec<i8> = taps(0).chain(taps(1)).collect();
        let zeros = || std::iter::repeat_n(0, 9);
        let w_gemm: Vec<i8> = (taps(0).chain(zeros()).chain(zeros()).chain(taps(1))).collect();
        let w_qp = WeightQParams {
            scheme: QScheme::PerChannelSymmetric,
            scales: vec![0.25, 2f32.powi(-10)],
            zero_points: vec![0, 0],
        };
        let x_qp = QParams::new(0.5, 3, QDtype::QUInt8).unwrap();
        let out = QParams::new(0.25, 128, QDtype::QUInt8).unwrap();
        // Channel 0's inputs small (its levels within the output range), channel 1's large.
        let x: Vec<u8> = (0..240)
            .map(|j| (j * 37 % if j < 120 { 16 } else { 256 }) as u8)
            .collect();
        for base in testing::contexts() {
            let ctx = &base.enter().unwrap();
            let float = ctx.conv_plan().unwrap().float_epilogue;
            for formula in [RequantFormula::Fbgemm, RequantFormula::Qnnpack] {
                let bias = [0.0, 0.0375];
                let epi = Epilogue::new(formula, 0.5, &w_qp, Some(&bias), out, false, 2).unwrap();
                assert_eq!(epi.channels[0].mult, 0.5);
                let mut got = Vec::new();
                for (w, p, c_in) in [(&w_dw, dw, 1), (&w_gemm, gemm, 2)] {
                    let s = ConvShape::new([1, 2, 6, 20], [2, c_in, 3, 3], p).unwrap();
                    let want =
                        crate::cpu::reference::conv2d_quantized(&x, &x_qp, w, &w_qp, &epi, &s)
                            .unwrap();
                    let layer = GpuConv2d::new(ctx, w, s.weight_dims(), &w_qp, &epi, p).unwrap();
                    let xt = ctx.upload_q(&x, s.input_dims(), x_qp.dtype).unwrap();
                    let y = match &layer.res.direct {
                        Some(direct) => {
                            assert_eq!(direct.float.is_some(), float, "{formula:?}");
                            let run = layer.encode_direct(ctx, &xt, &x_qp, &s, None).unwrap();
                            run.unwrap().0
                        }
                        None => {
                            assert_eq!(layer.res.float_etab.is_some(), float, "{formula:?}");
                            layer.run(ctx, &xt, &x_qp).unwrap()
                        }
                    };
                    assert_eq!(ctx.read_q(&y).unwrap(), want, "{formula:?} {p:?}");
                    got.push(want);
                }
                assert_eq!(got[0], got[1], "the same conv");
            }
        }
    }

    #[test]
    fn the_row_path_reads_the_fewest_texels_per_output_row() {
        let path = |words, segments, span_words, span_texels| DwRowPath {
            words,
            segments,
            span_words,
            span_texels,
        };
        // A 56-pixel row (14 words) in two invocations of 28 pixels, each kernel row from 8
        // aligned words in 3 texels (30 bytes from any byte of a texel).
        assert_eq!(DwRowPath::new(14, 3, 3), path(7, 2, 8, 3));
        // 11 words: 6 and 5 (7 and 4 would compute 3 words in vain).
        assert_eq!(DwRowPath::new(11, 3, 3), path(6, 2, 7, 3));
        // 8 columns: 35 bytes, 9 words, 4 texels.
        assert_eq!(DwRowPath::new(7, 2, 8), path(7, 1, 9, 4));
        assert_eq!(DwRowPath::new(1, 3, 3), path(1, 1, 2, 2));
        for row_words in 1..64 {
            for kw in 1..=8 {
                let r = DwRowPath::new(row_words, 3, kw);
                assert!((1..=7).contains(&r.words) && r.words * r.segments >= row_words);
                // The span's bytes within its aligned words, and those words plus the next,
                // from any word of the first texel, within the texels read.
                assert!(r.span_words * 4 >= 4 * r.words + kw - 1 && r.span_words <= 9);
                assert!(r.span_texels * 4 >= r.span_words + 4 && r.span_texels <= 4);
            }
        }
    }

    /// `udiv` of `conv2d_dw_direct.wgsl`, step for step in f32 and wrapping u32/i32.
    fn udiv(a: u32, d: u32) -> u32 {
        let rcp = (1.0 / d as f64) as f32;
        let mut q = (a as f32 * rcp) as u32;
        let mut r = (a as i32).wrapping_sub(q.wrapping_mul(d) as i32);
        let di = d as i32;
        for _ in 0..2 {
            if r < 0 {
                q = q.wrapping_sub(1);
                r += di;
            }
            if r >= di {
                q += 1;
                r -= di;
            }
        }
        q
    }

    #[test]
    fn float_estimated_division_is_exact_below_2_pow_23() {
        let mut divisors: Vec<u32> = (1..=1024).collect();
        divisors.extend([
            3000,
            4095,
            4096,
            4097,
            65535,
            1 << 20,
            (1 << 23) - 1,
            1 << 23,
        ]);
        let top = (1u32 << 23) - 1;
        for &d in &divisors {
            // Around every multiple of d near the top and bottom of the range, and a stride
            // through the middle.
            let mut a_values: Vec<u32> = (0..2000).chain(top - 2000..=top).collect();
            a_values.extend((0..=top).step_by(d as usize * 7 + 1));
            for k in [
                1u32,
                2,
                3,
                top / d,
                (top / d).saturating_sub(1),
                top / d / 2,
            ] {
                let m = k.saturating_mul(d);
                a_values.extend(
                    [m.saturating_sub(1), m, m.saturating_add(1)]
                        .into_iter()
                        .filter(|&a| a <= top),
                );
            }
            for a in a_values {
                assert_eq!(udiv(a, d), a / d, "{a} / {d}");
            }
        }
    }
}
