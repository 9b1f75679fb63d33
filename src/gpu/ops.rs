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
//! pixel per vec4, in a texture when it fits, else a buffer) and runs either the tiled
//! implicit-GEMM kernel `conv2d_gemm.wgsl` (every conv with more than one input channel per
//! group) or the depthwise kernel `conv2d_dw.wgsl` (one input channel per group), both with
//! the requantization epilogue fused; see the shaders' headers for the tiling.

use std::time::Duration;

use wgpu::util::DeviceExt;

use super::buffers::{
    check_dims, groups_for, groups_for_elementwise, packed_bytes, plane_words, read_back, record,
    storage_buffer_init, Dispatch, GpuF32Tensor, GpuTensor, Res, Slot, STORAGE_USAGE,
};
use super::context::GpuContext;
use super::conv_plan::{ConvGeometry, ConvKernelLayout, QUAD, TABLE_VEC4};
use super::gate::Gated;
use super::kernels::{
    ConvDwParams, ConvGemmParams, ConvPackParams, DequantizeParams, GemmVariant, Kernel,
    QuantizeParams, RequantizeParams,
};
use super::pipelines::ConvPlan;
use super::split::plan;
use crate::error::{Error, Result};
use crate::quant::{
    dequantize_one, inverse_scale, weight_abs_sums, ChannelRequant, Epilogue, QDtype, QParams,
    QuantizeSteps, WeightQParams,
};
use crate::shape::{ConvParams, ConvShape};

/// Bytes of one `ChannelRequant` record.
const RECORD: u64 = std::mem::size_of::<ChannelRequant>() as u64;

/// Upper bound of the repacked-input scratch buffer of one conv call (buffer mode), unless a
/// single image needs more.
const SCRATCH_CAP: u64 = 256 << 20;

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
    ) -> Result<std::sync::Arc<super::pool::PooledBuffer>> {
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

/// Which conv kernel a layer uses, with its weight layout.
#[derive(Debug, Clone, Copy)]
enum LayerKind {
    /// `conv2d_gemm.wgsl`: `qg` quads per group and tap, `kq` quads per output, `cbpg`
    /// channel blocks of 8 per group.
    Gemm { qg: usize, kq: usize, cbpg: usize },
    /// `conv2d_dw.wgsl` (one input channel per group).
    Depthwise,
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
    kind: LayerKind,
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
    /// The weights again as a read-only storage texture (for the texture kernels).
    weights_tex: Option<WeightTexture>,
    /// The epilogue table (`epilogue_table`): `TABLE_VEC4` vec4s per output channel.
    etab: wgpu::Buffer,
    /// The epilogue table again as a texture (for the texture kernels).
    etab_tex: Option<WeightTexture>,
}

/// Weights as an rgba32uint texture: vec4 i at texel (i % 2^tws, i >> tws).
#[derive(Debug)]
struct WeightTexture {
    _texture: wgpu::Texture,
    view: wgpu::TextureView,
    tws: u32,
}

impl WeightTexture {
    /// `None` when the device's texture limits cannot hold `words`.
    fn new(ctx: &GpuContext, words: &[u32], tex_width: u32, max_height: u32) -> Option<Self> {
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
            tws: width.trailing_zeros(),
        })
    }
}

/// The conv kernels' epilogue table (`shaders/epilogue_table.wgsl`): per output channel o,
/// `TABLE_VEC4` vec4s: (bits of the f32 slope, bits of the f32 offset, base, top), then
/// (`meta[o]`, 0, 0), then the `top - base` thresholds of [`Epilogue::step_table`], zero-padded
/// to 256.
///
/// With `search_only` the estimate is the constant `base`, so nearly every value takes the
/// table search (to test that path).
fn epilogue_table(epi: &Epilogue, meta: &[[i32; 2]], search_only: bool) -> Vec<u32> {
    let mut words = Vec::with_capacity(meta.len() * TABLE_VEC4 as usize * 4);
    for (o, m) in meta.iter().enumerate() {
        let t = epi.step_table(o);
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

/// The GEMM kernel's weight layout: vec4 ((cb * kq + q) * 8 + j) holds the 16 K-values of
/// quad q (tap (ky, kx) = q / qg, input channels 16 * (q % qg) ..) of channel j of channel
/// block cb (channels rounding a group up to 16, and channels past the group, are 0).
fn pack_gemm_weights(w: &[i8], w_dims: [usize; 4], groups: usize) -> (Vec<u32>, LayerKind) {
    let [c_out, cig, kh, kw] = w_dims;
    let cog = c_out / groups;
    let qg = cig.div_ceil(16);
    let kq = kh * kw * qg;
    let cbpg = cog.div_ceil(8);
    let mut packed = vec![0u32; groups * cbpg * kq * 8 * 4];
    for g in 0..groups {
        for b in 0..cbpg {
            let cb = g * cbpg + b;
            for j in 0..8 {
                let l = b * 8 + j;
                if l >= cog {
                    continue;
                }
                let o = g * cog + l;
                for tap in 0..kh * kw {
                    for i in 0..cig {
                        let (qq, r) = (i / 16, i % 16);
                        let q = tap * qg + qq;
                        let byte = w[(o * cig + i) * kh * kw + tap] as u8 as u32;
                        packed[((cb * kq + q) * 8 + j) * 4 + r / 4] |= byte << (8 * (r % 4));
                    }
                }
            }
        }
    }
    (packed, LayerKind::Gemm { qg, kq, cbpg })
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
        let (packed, kind) = if depthwise {
            (
                pack_depthwise_weights(w, w_dims, w_qp),
                LayerKind::Depthwise,
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
        let table = epilogue_table(epi, &meta, plan_k.search_only);
        let res = ctx.scoped("uploading conv weights", || {
            let weights_tex = if plan_k.textures {
                WeightTexture::new(ctx, &packed, plan_k.tex_width, plan_k.tex_max_height)
            } else {
                None
            };
            Ok(LayerResources {
                weights: storage_buffer_init(
                    ctx,
                    bytemuck::cast_slice(&packed),
                    "squint conv weights",
                )?,
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
            })
        })?;
        Ok(GpuConv2d {
            device_id: ctx.id(),
            w_dims,
            params,
            kind,
            wzp,
            res: Gated::new(res, ctx.gate()),
            epi: epi.clone(),
            sum_abs: weight_abs_sums(w, w_qp, c_out, k),
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
        matches!(self.kind, LayerKind::Depthwise)
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
        self.encode(ctx, x, x_qp, &s, None)
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
        let ctx = &ctx.enter()?;
        let s = self.check_run(ctx, x, x_qp)?;
        if !ctx.has_timestamps() {
            return Ok((self.encode(ctx, x, x_qp, &s, None)?, None));
        }
        let d = ctx.device();
        let qs = d.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("squint conv timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("squint timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let y = self.encode(ctx, x, x_qp, &s, Some((&qs, &resolve)))?;
        let raw = read_back(ctx, &resolve, 16)?;
        let t0 = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
        let t1 = u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes"));
        let ns = t1.saturating_sub(t0) as f64 * ctx.queue().get_timestamp_period() as f64;
        Ok((y, Some(Duration::from_nanos(ns.round() as u64))))
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

    fn encode(
        &self,
        ctx: &GpuContext,
        x: &GpuTensor,
        x_qp: &QParams,
        s: &ConvShape,
        timing: Option<(&wgpu::QuerySet, &wgpu::Buffer)>,
    ) -> Result<GpuTensor> {
        let plan_k: ConvPlan = ctx.conv_plan()?;
        let split = ctx.split();
        let layout = match self.kind {
            LayerKind::Gemm { qg, kq, cbpg } => ConvKernelLayout::Gemm {
                quads_per_group: qg as u64,
                k_quads: kq as u64,
                blocks_per_group: cbpg as u64,
            },
            LayerKind::Depthwise => ConvKernelLayout::Depthwise,
        };
        let geo = ConvGeometry::new(s, layout, plan_k.wg);
        let p = &s.params;
        let (hp, wp) = (geo.padded_h, geo.padded_w);
        let (c_in, c_out, groups) = (geo.c_in, geo.c_out, geo.groups);
        let (cig, cog) = (geo.c_in_per_group, geo.c_out_per_group);
        let (kh, kw) = (geo.kh, geo.kw);
        let (sh, sw, dh, dw) = (geo.stride_h, geo.stride_w, geo.dilation_h, geo.dilation_w);
        let (plane_out, w_out, ptiles) = (geo.plane_out, geo.w_out, geo.pixel_tiles);
        let pw_in = geo.plane_words_in;
        let gpp = geo.groups_per_plane;
        let (sg, quads_per_pixel, nblocks) =
            (geo.slots_per_group, geo.quads_per_pixel, geo.channel_blocks);
        // The kernel's input domain: signed bytes for `dot4I8Packed`, else unsigned.
        let signed = matches!(self.kind, LayerKind::Gemm { .. }) && plan_k.packed;
        let (flip, xz) = match (x.dtype, signed) {
            (QDtype::QUInt8, true) => (0x80u32, x_qp.zero_point - 128),
            (QDtype::QUInt8, false) => (0, x_qp.zero_point),
            (QDtype::QInt8, true) => (0, x_qp.zero_point),
            (QDtype::QInt8, false) => (0x80, x_qp.zero_point + 128),
        };

        // Image chunks: the repacked images of a chunk fit the texture (or scratch buffer), and
        // their quad indices fit u32.
        let quads_img = geo.quads_per_image();
        let tex_cap = plan_k.tex_width as u64 * plan_k.tex_max_height as u64;
        let in_rows = packed_bytes(x.dims)
            .div_ceil(QUAD)
            .div_ceil(plan_k.tex_width.max(1) as u64)
            .div_ceil(16)
            * 16;
        let use_tex = plan_k.textures
            && quads_img <= tex_cap
            && in_rows <= plan_k.tex_max_height as u64
            && self.res.weights_tex.is_some()
            && self.res.etab_tex.is_some();
        if !use_tex && quads_img * QUAD > split.max_buffer {
            return Err(Error::DeviceLimit(format!(
                "conv: one repacked input image needs {} bytes of scratch, the device's largest \
                 buffer is {} bytes",
                quads_img * QUAD,
                split.max_buffer
            )));
        }
        let cap = if use_tex {
            tex_cap
        } else {
            (SCRATCH_CAP.min(split.max_buffer) / QUAD).max(quads_img)
        }
        .min(u32::MAX as u64 / 2);
        let nc = (cap / quads_img).clamp(1, s.n as u64);
        if quads_img > u32::MAX as u64 / 2 {
            return Err(Error::DeviceLimit(format!(
                "conv: one repacked input image has {quads_img} quads, more than the 2^31 \
                 indices of squint's kernels"
            )));
        }

        let out_dims = s.output_dims();
        let wg_count_per_img = geo.workgroups_per_image();

        ctx.encode("conv2d", |enc, keep| {
            let pack_pipe = ctx.pipeline(Kernel::ConvPack { xtex: use_tex }, &[])?;
            let conv_pipe = match self.kind {
                LayerKind::Gemm { .. } => ctx.pipeline(
                    Kernel::ConvGemm(GemmVariant {
                        xtex: use_tex,
                        b: plan_k.staging,
                        packed: plan_k.packed,
                    }),
                    &[
                        ("WZP", u32::from(self.wzp)),
                        ("WG", plan_k.wg),
                        ("TKQ", plan_k.tkq),
                    ],
                )?,
                LayerKind::Depthwise => ctx.pipeline(
                    Kernel::ConvDw { xtex: use_tex },
                    &[("WG", plan_k.wg), ("IDENT", u32::from(cog == 1))],
                )?,
            };
            let out = ctx.pooled_buffer(
                packed_bytes(out_dims),
                STORAGE_USAGE,
                "squint packed tensor",
            )?;
            let chunk_quads = nc * quads_img;
            let (tex, scratch) = if use_tex {
                let w = plan_k.tex_width;
                let h = (chunk_quads.div_ceil(w as u64) as u32).div_ceil(16) * 16;
                (
                    Some(ctx.pooled_texture(w, h.min(plan_k.tex_max_height))),
                    None,
                )
            } else {
                (
                    None,
                    Some(ctx.pooled_buffer(
                        chunk_quads * QUAD,
                        STORAGE_USAGE,
                        "squint conv quads",
                    )?),
                )
            };
            let tws = plan_k.tex_width.trailing_zeros();
            // The input tensor copied into a texture (the pack reads it with image loads,
            // which are much cheaper than buffer loads on CPU adapters).
            let x_tex = if use_tex {
                let iw = plan_k.tex_width as u64;
                let texels = packed_bytes(x.dims).div_ceil(QUAD);
                let rows = texels.div_ceil(iw);
                let t = ctx.pooled_texture(iw as u32, (rows as u32).div_ceil(16) * 16);
                let full = texels / iw;
                let rest = texels % iw;
                let copy = |enc: &mut wgpu::CommandEncoder, offset: u64, y: u64, w: u64, h: u64| {
                    enc.copy_buffer_to_texture(
                        wgpu::TexelCopyBufferInfo {
                            buffer: &x.buffer,
                            layout: wgpu::TexelCopyBufferLayout {
                                offset,
                                bytes_per_row: Some((iw * QUAD) as u32),
                                rows_per_image: None,
                            },
                        },
                        wgpu::TexelCopyTextureInfo {
                            texture: t.texture(),
                            mip_level: 0,
                            origin: wgpu::Origin3d {
                                x: 0,
                                y: y as u32,
                                z: 0,
                            },
                            aspect: wgpu::TextureAspect::All,
                        },
                        wgpu::Extent3d {
                            width: w as u32,
                            height: h as u32,
                            depth_or_array_layers: 1,
                        },
                    );
                };
                if full > 0 {
                    copy(enc, 0, 0, iw, full);
                }
                if rest > 0 {
                    copy(enc, full * iw * QUAD, full, rest, 1);
                }
                Some((t, iw.trailing_zeros()))
            } else {
                None
            };
            // The repacked quads: the texture, or the byte window `w` of the scratch buffer
            // (with its base in quads).
            let quads = |w: (u64, u64)| match (&tex, &scratch) {
                (Some(t), _) => (Res::Tex(t.view()), 0),
                (None, Some(sb)) => {
                    let qs = Slot::new(split, sb, w.0, w.1);
                    let base = qs.base(QUAD);
                    (Res::Buf(qs), base)
                }
                (None, None) => unreachable!("a texture or a scratch buffer exists"),
            };
            let mut list = Vec::new();
            let mut n_begin = 0u64;
            while n_begin < s.n as u64 {
                let n_end = (n_begin + nc).min(s.n as u64);
                let imgs = n_end - n_begin;
                let img0 = n_begin;
                // 1. Repack the input images of this chunk into quads: interior items
                //    (input words) and, with padding, border items.
                let both = |b: u64, e: u64| geo.repack_ranges(img0, imgs, b, e);
                let n_int = geo.interior_items(imgs);
                let total = geo.repack_items(imgs);
                for (b, e) in plan(split, total, 64, "conv input repacking", &both)? {
                    let r = both(b, e);
                    let (xres, x_base, x_tws) = match &x_tex {
                        Some((t, tws_in)) => (Res::Tex(t.view()), 0, *tws_in),
                        None => {
                            let xs = Slot::new(split, &x.buffer, r[0].0, r[0].1);
                            let base = xs.base(4);
                            (Res::Buf(xs), base, 0)
                        }
                    };
                    let (qres, q_base) = quads(r[1]);
                    let prm = ConvPackParams {
                        item_begin: b as u32,
                        item_count: (e - b) as u32,
                        n_interior: n_int as u32,
                        h: s.h as u32,
                        w: s.w as u32,
                        plane_words: pw_in as u32,
                        hp: hp as u32,
                        wp: wp as u32,
                        ph: p.padding[0] as u32,
                        pw: p.padding[1] as u32,
                        c_in: c_in as u32,
                        cig: cig as u32,
                        groups: groups as u32,
                        sg: sg as u32,
                        qp: quads_per_pixel as u32,
                        img_begin: img0 as u32,
                        x_base,
                        x_tws,
                        q_base,
                        tws,
                        flip,
                        zbyte: xz as u32 & 0xff,
                        _pad: [0; 2],
                    };
                    list.push(Dispatch::new(
                        &pack_pipe,
                        &prm,
                        vec![xres, qres],
                        groups_for(e - b),
                    ));
                }
                // 2. The conv with its fused epilogue.
                let ranges = |b: u64, e: u64| geo.conv_ranges(img0, b, e);
                for (b, e) in plan(split, imgs * wg_count_per_img, 1, "conv2d", &ranges)? {
                    let r = ranges(b, e);
                    let (ares, a_base) = quads(r[0]);
                    let ys = Slot::new(split, &out, r[3].0, r[3].1);
                    let y_base = ys.base(4);
                    let (res, w_base, b_tws, e_base, e_tws) =
                        match (use_tex, &self.res.weights_tex, &self.res.etab_tex) {
                            (true, Some(wt), Some(et)) => (
                                vec![ares, Res::Tex(&wt.view), Res::Tex(&et.view), Res::Buf(ys)],
                                0,
                                wt.tws,
                                0,
                                et.tws,
                            ),
                            _ => {
                                let ws = Slot::new(split, &self.res.weights, r[1].0, r[1].1);
                                let es = Slot::new(split, &self.res.etab, r[2].0, r[2].1);
                                let (w_base, e_base) = (ws.base(16), es.base(16));
                                (
                                    vec![ares, Res::Buf(ws), Res::Buf(es), Res::Buf(ys)],
                                    w_base,
                                    0,
                                    e_base,
                                    0,
                                )
                            }
                        };
                    let item = match self.kind {
                        LayerKind::Gemm { qg, kq, cbpg } => {
                            let (qg, kq) = (qg as u64, kq as u64);
                            let prm = ConvGemmParams {
                                wg_begin: b as u32,
                                wg_count: (e - b) as u32,
                                gpp: gpp as u32,
                                ptiles: ptiles as u32,
                                nblocks: nblocks as u32,
                                cbpg: cbpg as u32,
                                plane_out: plane_out as u32,
                                w_out: w_out as u32,
                                c_out: c_out as u32,
                                cog: cog as u32,
                                kw: kw as u32,
                                kq: kq as u32,
                                qg: qg as u32,
                                qp: quads_per_pixel as u32,
                                hp: hp as u32,
                                wp: wp as u32,
                                sh: sh as u32,
                                sw: sw as u32,
                                step_kx: (dw * quads_per_pixel).wrapping_sub(qg) as u32,
                                step_ky: (dh * wp * quads_per_pixel)
                                    .wrapping_sub(kw * dw * quads_per_pixel)
                                    as u32,
                                n_begin: n_begin as u32,
                                a_base,
                                tws,
                                w_base,
                                b_tws,
                                e_base,
                                y_base,
                                xz,
                                kext: (16 * kq) as i32,
                                out_zp: self.epi.out.zero_point,
                                out_lo: self.epi.clamp.min,
                                out_hi: self.epi.clamp.max,
                                e_tws,
                                _pad: [0; 3],
                            };
                            Dispatch::new(&conv_pipe, &prm, res, e - b)
                        }
                        LayerKind::Depthwise => {
                            let prm = ConvDwParams {
                                wg_begin: b as u32,
                                wg_count: (e - b) as u32,
                                gpp: gpp as u32,
                                ptiles: ptiles as u32,
                                nblocks: nblocks as u32,
                                plane_out: plane_out as u32,
                                w_out: w_out as u32,
                                c_out: c_out as u32,
                                mult: cog as u32,
                                kw: kw as u32,
                                taps: (kh * kw) as u32,
                                qp: quads_per_pixel as u32,
                                hp: hp as u32,
                                wp: wp as u32,
                                sh: sh as u32,
                                sw: sw as u32,
                                step_x: (dw * quads_per_pixel) as u32,
                                step_y: (dh * wp * quads_per_pixel)
                                    .wrapping_sub(kw * dw * quads_per_pixel)
                                    as u32,
                                n_begin: n_begin as u32,
                                a_base,
                                tws,
                                w_base,
                                b_tws,
                                e_base,
                                y_base,
                                xz,
                                out_zp: self.epi.out.zero_point,
                                out_lo: self.epi.clamp.min,
                                out_hi: self.epi.clamp.max,
                                e_tws,
                                _pad: [0; 2],
                            };
                            Dispatch::new(&conv_pipe, &prm, res, e - b)
                        }
                    };
                    list.push(item);
                }
                n_begin = n_end;
            }
            let ts = timing.map(|(qs, _)| (qs, 0, 1));
            record(ctx, enc, &list, ts)?;
            drop(list);
            if let Some((qs, resolve)) = timing {
                enc.resolve_query_set(qs, 0..2, resolve, 0);
            }
            if let Some(t) = tex {
                keep.texture(t);
            }
            if let Some((t, _)) = x_tex {
                keep.texture(t);
            }
            if let Some(b) = scratch {
                keep.buffer(b);
            }
            Ok(GpuTensor {
                dims: out_dims,
                dtype: self.epi.out.dtype,
                buffer: out,
                device_id: ctx.id(),
            })
        })
    }
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
    let checked = ConvShape::new(s.input_dims(), s.weight_dims(), s.params)?;
    if checked != *s {
        return Err(Error::Shape(format!(
            "inconsistent conv shape {s:?} (derived: {checked:?})"
        )));
    }
    for (what, got, want) in [
        ("input", x.len(), s.input_len()),
        ("weight", w.len(), s.weight_len()),
    ] {
        if got != want {
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
    // One critical section for the whole call (the gate is re-entrant).
    let ctx = &ctx.enter()?;
    let xt = ctx.upload_q(x, s.input_dims(), x_qp.dtype)?;
    let layer = GpuConv2d::new(ctx, w, s.weight_dims(), w_qp, epi, s.params)?;
    let y = layer.run(ctx, &xt, x_qp)?;
    ctx.read_q(&y)
}
