//! The operations: quantize, dequantize, standalone requantize, and the int8 conv layer.
//!
//! Each operation records its dispatches (split to fit the device limits, see `buffers.rs`)
//! into one command buffer and submits it without waiting, so a chain such as
//! quantize → conv → conv → dequantize runs in queue order with no read-back in between. Every
//! call allocates its own scratch, uniform and output buffers, so several threads may run the
//! same [`GpuConv2d`] at once.

use super::buffers::{
    check_dims, dispatch, groups_for, packed_bytes, plan, plane_words, read_back, storage_buffer,
    storage_buffer_init, GpuF32Tensor, GpuTensor, Slot,
};
use super::device::GpuContext;
use super::kernels::{
    ConvPackParams, ConvParamsGpu, DequantizeParams, Kernel, QuantizeParams, RequantizeParams,
};
use crate::error::{Error, Result};
use crate::quant::{inverse_scale, ChannelRequant, Epilogue, QDtype, QParams, WeightQParams};
use crate::shape::{ConvParams, ConvShape};

/// Bytes of one `ChannelRequant` record.
const RECORD: u64 = std::mem::size_of::<ChannelRequant>() as u64;

/// Upper bound of the i32 scratch buffer of one conv call (the padded, widened input), unless
/// a single image needs more.
const SCRATCH_CAP: u64 = 256 << 20;

fn validate_qparams(qp: &QParams) -> Result<()> {
    QParams::new(qp.scale, qp.zero_point, qp.dtype).map(|_| ())
}

impl GpuContext {
    /// Quantizes a float tensor with per-tensor qparams, exactly as
    /// [`crate::quant::quantize_slice`] (PyTorch's `quantize_per_tensor`). The result stays on
    /// the GPU.
    pub fn quantize(&self, x: &GpuF32Tensor, qp: &QParams) -> Result<GpuTensor> {
        self.check_same(x.device_id, "quantize")?;
        validate_qparams(qp)?;
        let dims = x.dims;
        let plane = (dims[2] * dims[3]) as u64;
        let pw = plane_words(dims) as u64;
        let total = (dims[0] * dims[1]) as u64 * pw;
        let split = self.split();
        let ranges = |b: u64, e: u64| {
            let (p0, p1) = (b / pw, (e - 1) / pw);
            let x_lo = p0 * plane + (b % pw) * 4;
            let x_hi = p1 * plane + (((e - 1) % pw) * 4 + 4).min(plane);
            vec![(x_lo * 4, x_hi * 4), (b * 4, e * 4)]
        };
        let chunks = plan(split, total, 64, "quantize", &ranges)?;
        let full = qp.dtype.full_range();
        self.scoped("quantize", || {
            let pipe = self.pipeline(Kernel::Quantize, &[])?;
            let out = storage_buffer(self, packed_bytes(dims), "squint packed tensor")?;
            let mut enc = self
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            for &(b, e) in &chunks {
                let r = ranges(b, e);
                let xs = Slot::new(split, &x.buffer, r[0].0, r[0].1);
                let ys = Slot::new(split, &out, r[1].0, r[1].1);
                let p = QuantizeParams {
                    item_begin: b as u32,
                    item_count: (e - b) as u32,
                    plane: plane as u32,
                    plane_words: pw as u32,
                    x_base: xs.base(4),
                    y_base: ys.base(4),
                    inv_scale: inverse_scale(qp.scale).to_bits(),
                    zp: qp.zero_point,
                    qmin: full.min,
                    qmax: full.max,
                    _pad: [0; 2],
                };
                dispatch(
                    self,
                    &mut enc,
                    &pipe,
                    bytemuck::bytes_of(&p),
                    &[xs, ys],
                    groups_for(e - b),
                );
            }
            self.queue().submit([enc.finish()]);
            Ok(GpuTensor {
                dims,
                dtype: qp.dtype,
                buffer: out,
                device_id: self.id(),
            })
        })
    }

    /// Dequantizes a packed tensor: `f32((q - zp) * scale)`, exactly as
    /// [`crate::quant::dequantize_slice`]. The result stays on the GPU.
    pub fn dequantize(&self, x: &GpuTensor, qp: &QParams) -> Result<GpuF32Tensor> {
        self.check_same(x.device_id, "dequantize")?;
        validate_qparams(qp)?;
        if qp.dtype != x.dtype {
            return Err(Error::InvalidParameter(format!(
                "dequantize: qparams are for {} but the tensor holds {}",
                qp.dtype, x.dtype
            )));
        }
        let dims = x.dims;
        let plane = (dims[2] * dims[3]) as u64;
        let pw = plane_words(dims) as u64;
        let total = x.numel() as u64;
        let split = self.split();
        let ranges = |b: u64, e: u64| {
            let (p0, p1) = (b / plane, (e - 1) / plane);
            let q_lo = p0 * pw + (b % plane) / 4;
            let q_hi = p1 * pw + ((e - 1) % plane) / 4 + 1;
            vec![(q_lo * 4, q_hi * 4), (b * 4, e * 4)]
        };
        let chunks = plan(split, total, 64, "dequantize", &ranges)?;
        self.scoped("dequantize", || {
            let pipe = self.pipeline(Kernel::Dequantize, &[])?;
            let out = storage_buffer(self, total * 4, "squint f32 tensor")?;
            let mut enc = self
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            for &(b, e) in &chunks {
                let r = ranges(b, e);
                let qs = Slot::new(split, &x.buffer, r[0].0, r[0].1);
                let ys = Slot::new(split, &out, r[1].0, r[1].1);
                let p = DequantizeParams {
                    item_begin: b as u32,
                    item_count: (e - b) as u32,
                    plane: plane as u32,
                    plane_words: pw as u32,
                    q_base: qs.base(4),
                    y_base: ys.base(4),
                    scale: qp.scale.to_bits(),
                    zp: qp.zero_point,
                    signed_bytes: u32::from(qp.dtype == QDtype::QInt8),
                    _pad: [0; 3],
                };
                dispatch(
                    self,
                    &mut enc,
                    &pipe,
                    bytemuck::bytes_of(&p),
                    &[qs, ys],
                    groups_for(e - b),
                );
            }
            self.queue().submit([enc.finish()]);
            Ok(GpuF32Tensor {
                dims,
                buffer: out,
                device_id: self.id(),
            })
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
        let out = self.scoped("requantize", || {
            let pipe = self.pipeline(Kernel::Requantize, &[("FORMULA", epi.formula.code())])?;
            let acc_buf = storage_buffer_init(self, bytemuck::cast_slice(acc), "squint acc")?;
            let epi_buf =
                storage_buffer_init(self, bytemuck::cast_slice(&epi.channels), "squint epilogue")?;
            let out = storage_buffer(self, total * 4, "squint requantized")?;
            let mut enc = self
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
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
                dispatch(
                    self,
                    &mut enc,
                    &pipe,
                    bytemuck::bytes_of(&p),
                    &[a, es, ys],
                    groups_for(e - b),
                );
            }
            self.queue().submit([enc.finish()]);
            Ok(out)
        })?;
        let mut bytes = read_back(self, &out, total * 4)?;
        bytes.truncate(acc.len());
        Ok(bytes)
    }
}

/// A converted int8 conv layer on the GPU: weights (packed four input channels per u32,
/// blocked by 4 output channels), per-channel weight sums and epilogue records are uploaded
/// once, at construction.
#[derive(Debug)]
pub struct GpuConv2d {
    device_id: usize,
    w_dims: [usize; 4],
    params: ConvParams,
    mode: u32,
    wzp: bool,
    cblocks: usize,
    cbpg: usize,
    weights: wgpu::Buffer,
    wmeta: wgpu::Buffer,
    records: wgpu::Buffer,
    epi: Epilogue,
    w_qp: WeightQParams,
    w_host: Vec<i8>,
}

impl GpuConv2d {
    /// Converts a layer: `w` is the qint8 weight (OIHW, shape `w_dims`) with qparams `w_qp`,
    /// `epi` the requantization epilogue (one record per output channel), `params` the conv
    /// hyperparameters. Validates everything that does not depend on the input.
    pub fn new(
        ctx: &GpuContext,
        w: &[i8],
        w_dims: [usize; 4],
        w_qp: &WeightQParams,
        epi: &Epilogue,
        params: ConvParams,
    ) -> Result<Self> {
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
        let c4pg = cig.div_ceil(4);
        let k4 = c4pg * kh * kw;
        let cog = c_out / groups;
        // Mode 0: blocks of 4 channels inside one group, sharing each input word.
        // Mode 1: each lane its own group (fewer than 4 output channels per group).
        let (mode, cbpg, cblocks) = if cog >= 4 {
            (0u32, cog.div_ceil(4), groups * cog.div_ceil(4))
        } else {
            (1u32, 0, c_out.div_ceil(4))
        };
        let lane_channel = |cb: usize, j: usize| -> Option<usize> {
            if mode == 0 {
                let (g, b) = (cb / cbpg, cb % cbpg);
                (b * 4 + j < cog).then_some(g * cog + b * 4 + j)
            } else {
                (cb * 4 + j < c_out).then_some(cb * 4 + j)
            }
        };
        // Weight of output channel o at reduction step t = (c4, ky, kx), channel 4*c4 + b of
        // the group (None for the channels rounding the group up to a multiple of 4).
        let tap = |o: usize, t: usize, b: usize| -> Option<i32> {
            let (c4, r) = (t / (kh * kw), t % (kh * kw));
            let i = c4 * 4 + b;
            (i < cig).then(|| w[o * k + i * kh * kw + r] as i32)
        };
        // One vec4<u32> per (block, step): lane j = the 4 packed int8 weights of channel j.
        let mut packed = vec![0u32; cblocks * k4 * 4];
        for cb in 0..cblocks {
            for j in 0..4 {
                let Some(o) = lane_channel(cb, j) else {
                    continue;
                };
                for t in 0..k4 {
                    for b in 0..4 {
                        let byte = tap(o, t, b).unwrap_or(0) as u8 as u32;
                        packed[(cb * k4 + t) * 4 + j] |= byte << (8 * b);
                    }
                }
            }
        }
        let meta: Vec<[i32; 2]> = (0..c_out)
            .map(|o| {
                // Wrapping like the kernel's arithmetic (only the total modulo 2^32 matters).
                let sum = w[o * k..(o + 1) * k]
                    .iter()
                    .fold(0i32, |a, &v| a.wrapping_add(v as i32));
                [w_qp.zero_point(o), sum]
            })
            .collect();
        let wzp = (0..c_out).any(|o| w_qp.zero_point(o) != 0);
        let (weights, wmeta, records) = ctx.scoped("uploading conv weights", || {
            Ok((
                storage_buffer_init(ctx, bytemuck::cast_slice(&packed), "squint conv weights")?,
                storage_buffer_init(ctx, bytemuck::cast_slice(&meta), "squint conv weight sums")?,
                storage_buffer_init(
                    ctx,
                    bytemuck::cast_slice(&epi.channels),
                    "squint conv epilogue",
                )?,
            ))
        })?;
        Ok(GpuConv2d {
            device_id: ctx.id(),
            w_dims,
            params,
            mode,
            wzp,
            cblocks,
            cbpg,
            weights,
            wmeta,
            records,
            epi: epi.clone(),
            w_qp: w_qp.clone(),
            w_host: w.to_vec(),
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

    /// The output shape for an input of shape `x_dims` (validates the geometry).
    pub fn output_shape(&self, x_dims: [usize; 4]) -> Result<ConvShape> {
        ConvShape::new(x_dims, self.w_dims, self.params)
    }

    /// Runs the conv on a packed input with qparams `x_qp` (its dtype must be `x.dtype`).
    /// Checks the worst-case accumulator bound first, as the CPU reference does. The output,
    /// in the epilogue's output dtype, stays on the GPU; nothing is waited for.
    pub fn run(&self, ctx: &GpuContext, x: &GpuTensor, x_qp: &QParams) -> Result<GpuTensor> {
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
        self.epi.check_accumulator(
            &self.w_host,
            &self.w_qp,
            x_qp.dtype.full_range(),
            x_qp.zero_point,
            s.k(),
            None,
        )?;
        self.encode(ctx, x, x_qp, &s)
    }

    fn encode(
        &self,
        ctx: &GpuContext,
        x: &GpuTensor,
        x_qp: &QParams,
        s: &ConvShape,
    ) -> Result<GpuTensor> {
        let split = ctx.split();
        let p = &s.params;
        let (hp, wp) = (s.h + 2 * p.padding[0], s.w + 2 * p.padding[1]);
        let hpwp = (hp * wp) as u64;
        let c_in = s.c_in as u64;
        let c_out = s.c_out as u64;
        let groups = p.groups as u64;
        let (cig, cog) = (s.c_in_per_group() as u64, s.c_out_per_group() as u64);
        let c4pg = cig.div_ceil(4);
        let k4 = c4pg * (s.kh * s.kw) as u64;
        let plane_out = (s.h_out * s.w_out) as u64;
        let ptiles = plane_out.div_ceil(4);
        let pw_in = plane_words(x.dims) as u64;
        let cblocks = self.cblocks as u64;
        let cbpg = self.cbpg as u64;
        let mode = self.mode;
        // Signed-domain input zero point and the XOR that takes quint8 bytes there.
        let (xz, flip) = match x.dtype {
            QDtype::QUInt8 => (x_qp.zero_point - 128, 0x80u32),
            QDtype::QInt8 => (x_qp.zero_point, 0),
        };

        // Image chunks for the scratch buffer.
        let planes4 = groups * c4pg;
        let per_image = planes4 * hpwp * 4;
        if per_image > split.max_buffer {
            return Err(Error::DeviceLimit(format!(
                "conv: one repacked input image needs {per_image} bytes of scratch, the \
                 device's largest buffer is {} bytes",
                split.max_buffer
            )));
        }
        let cap = SCRATCH_CAP.min(split.max_buffer).max(per_image);
        let nc = ((cap / per_image) as usize).clamp(1, s.n);

        // Output channels of a block, and its range of groups.
        let block_out = |cb: u64| -> (u64, u64) {
            if mode == 0 {
                let (g, b) = (cb / cbpg, cb % cbpg);
                (g * cog + b * 4, g * cog + (b * 4 + 4).min(cog))
            } else {
                (cb * 4, (cb * 4 + 4).min(c_out))
            }
        };
        let block_groups = |cb: u64| -> (u64, u64) {
            let (lo, hi) = block_out(cb);
            (lo / cog, (hi - 1) / cog + 1)
        };
        let w_out = s.w_out as u64;
        let (sh, dh, kh) = (p.stride[0] as u64, p.dilation[0] as u64, s.kh as u64);
        let row_of = |pt: u64, q: u64| ((pt * 4 + q).min(plane_out - 1) / w_out) * sh;
        let wp64 = wp as u64;
        // The conv's items are workgroups: (n, superblock, group of 64 pixel tiles). A
        // superblock is 2 blocks of one group in mode 0, 1 block in mode 1.
        let gpp = ptiles.div_ceil(64);
        let spg = cbpg.div_ceil(2);
        let sblocks = if mode == 0 { groups * spg } else { cblocks };
        let sb_blocks = |sb: u64| -> (u64, u64) {
            if mode == 0 {
                let (g, i) = (sb / spg, sb % spg);
                let first = g * cbpg + 2 * i;
                (first, (first + 1).min(g * cbpg + cbpg - 1))
            } else {
                (sb, sb)
            }
        };
        let conv_ranges = |n_base: u64, b: u64, e: u64| {
            let dec = |wg: u64| {
                let ptg = wg % gpp;
                let t = wg / gpp;
                (t / sblocks, t % sblocks, ptg)
            };
            let (n0, sb0, g0) = dec(b);
            let (n1, sb1, g1) = dec(e - 1);
            let (cb0, cb1) = (sb_blocks(sb0).0, sb_blocks(sb1).1);
            let (pt0, pt1) = (g0 * 64, (g1 * 64 + 63).min(ptiles - 1));
            let plane4 = |n: u64, g: u64| (n * groups + g) * c4pg;
            let xq = if (n0, sb0) == (n1, sb1) {
                let (g_lo, g_hi) = block_groups(cb0);
                (
                    plane4(n0, g_lo) * hpwp + row_of(pt0, 0) * wp64,
                    (plane4(n0, g_hi) - 1) * hpwp + (row_of(pt1, 3) + (kh - 1) * dh + 1) * wp64,
                )
            } else {
                (
                    plane4(n0, block_groups(cb0).0) * hpwp,
                    plane4(n1, block_groups(cb1).1) * hpwp,
                )
            };
            let (blo, bhi) = if n0 == n1 {
                (cb0, cb1 + 1)
            } else {
                (0, cblocks)
            };
            let (c_lo, c_hi) = if n0 == n1 {
                (block_out(cb0).0, block_out(cb1).1)
            } else {
                (0, c_out)
            };
            let y_lo = ((n_base + n0) * c_out + block_out(cb0).0) * ptiles + pt0;
            let y_hi = ((n_base + n1) * c_out + block_out(cb1).1 - 1) * ptiles + pt1 + 1;
            vec![
                (xq.0 * 4, xq.1 * 4),
                (blo * k4 * 16, bhi * k4 * 16),
                (c_lo * RECORD, c_hi * RECORD),
                (c_lo * 8, c_hi * 8),
                (y_lo * 4, y_hi * 4),
            ]
        };

        let out_dims = s.output_dims();
        ctx.scoped("conv2d", || {
            let pack_pipe = ctx.pipeline(Kernel::ConvPack, &[])?;
            let conv_pipe = ctx.pipeline(
                Kernel::Conv2d,
                &[
                    ("FORMULA", self.epi.formula.code()),
                    ("MODE", mode),
                    ("WZP", u32::from(self.wzp)),
                ],
            )?;
            let out = storage_buffer(ctx, packed_bytes(out_dims), "squint packed tensor")?;
            let scratch = storage_buffer(ctx, nc as u64 * per_image, "squint conv scratch")?;
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            let mut n_begin = 0usize;
            while n_begin < s.n {
                let n_end = (n_begin + nc).min(s.n);
                let imgs = (n_end - n_begin) as u64;
                let img0 = n_begin as u64;
                // 1. Repack the input images of this chunk (4 channels per word, padded).
                let pack_ranges = |b: u64, e: u64| {
                    let dec = |i: u64| {
                        let p4 = i / hpwp;
                        let (ng, c4) = (p4 / c4pg, p4 % c4pg);
                        (ng / groups, ng % groups, c4)
                    };
                    let (n0, g0, c0) = dec(b);
                    let (n1, g1, c1) = dec(e - 1);
                    let lo = (img0 + n0) * c_in + g0 * cig + c0 * 4;
                    let hi = (img0 + n1) * c_in + g1 * cig + (c1 * 4 + 4).min(cig);
                    vec![(lo * pw_in * 4, hi * pw_in * 4), (b * 4, e * 4)]
                };
                for (b, e) in plan(
                    split,
                    imgs * planes4 * hpwp,
                    64,
                    "conv input repacking",
                    &pack_ranges,
                )? {
                    let r = pack_ranges(b, e);
                    let xs = Slot::new(split, &x.buffer, r[0].0, r[0].1);
                    let qs = Slot::new(split, &scratch, r[1].0, r[1].1);
                    let prm = ConvPackParams {
                        item_begin: b as u32,
                        item_count: (e - b) as u32,
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
                        c4pg: c4pg as u32,
                        img_begin: n_begin as u32,
                        x_base: xs.base(4),
                        xq_base: qs.base(4),
                        flip,
                        zbyte: xz as u32 & 0xff,
                        _pad: [0; 2],
                    };
                    dispatch(
                        ctx,
                        &mut enc,
                        &pack_pipe,
                        bytemuck::bytes_of(&prm),
                        &[xs, qs],
                        groups_for(e - b),
                    );
                }
                // 2. The conv with its fused epilogue.
                let ranges = |b: u64, e: u64| conv_ranges(img0, b, e);
                for (b, e) in plan(split, imgs * sblocks * gpp, 1, "conv2d", &ranges)? {
                    let r = ranges(b, e);
                    let xs = Slot::new(split, &scratch, r[0].0, r[0].1);
                    let ws = Slot::new(split, &self.weights, r[1].0, r[1].1);
                    let es = Slot::new(split, &self.records, r[2].0, r[2].1);
                    let ms = Slot::new(split, &self.wmeta, r[3].0, r[3].1);
                    let ys = Slot::new(split, &out, r[4].0, r[4].1);
                    let prm = ConvParamsGpu {
                        wg_begin: b as u32,
                        wg_count: (e - b) as u32,
                        gpp: gpp as u32,
                        ptiles: ptiles as u32,
                        sblocks: sblocks as u32,
                        spg: spg as u32,
                        cbpg: cbpg as u32,
                        plane_out: plane_out as u32,
                        w_out: s.w_out as u32,
                        c_out: c_out as u32,
                        cog: cog as u32,
                        kh: s.kh as u32,
                        kw: s.kw as u32,
                        k4: k4 as u32,
                        c4pg: c4pg as u32,
                        groups: groups as u32,
                        hp: hp as u32,
                        wp: wp as u32,
                        sh: p.stride[0] as u32,
                        sw: p.stride[1] as u32,
                        dh: p.dilation[0] as u32,
                        dw: p.dilation[1] as u32,
                        n_begin: n_begin as u32,
                        xq_base: xs.base(4),
                        w_base: ws.base(16),
                        e_base: es.base(RECORD),
                        m_base: ms.base(8),
                        y_base: ys.base(4),
                        xz,
                        out_zp: self.epi.out.zero_point,
                        out_lo: self.epi.clamp.min,
                        out_hi: self.epi.clamp.max,
                    };
                    dispatch(
                        ctx,
                        &mut enc,
                        &conv_pipe,
                        bytemuck::bytes_of(&prm),
                        &[xs, ws, es, ms, ys],
                        e - b,
                    );
                }
                n_begin = n_end;
            }
            ctx.queue().submit([enc.finish()]);
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
    let xt = ctx.upload_q(x, s.input_dims(), x_qp.dtype)?;
    let layer = GpuConv2d::new(ctx, w, s.weight_dims(), w_qp, epi, s.params)?;
    let y = layer.run(ctx, &xt, x_qp)?;
    ctx.read_q(&y)
}
