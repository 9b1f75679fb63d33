//! The f32 conv on the GPU: the float baseline that `squint bench` times the int8 kernels
//! against on the same adapter ("int8 faster than f32 on the GPU" is a claim about the same
//! device, not about a CPU float path).
//!
//! [`GpuConv2dF32`] mirrors the int8 layer's structure so that the comparison measures the
//! arithmetic and the bytes, not two different designs. A GEMM layer's input is repacked into
//! f32 quads (`conv_f32_pack.wgsl`, 4 channels per vec4 where the int8 quads hold 16), in a
//! texture on CPU adapters where it fits (as the int8 quads are: texel loads are much cheaper
//! there than buffer loads), then an implicit GEMM with the int8 kernel's register tile, 4
//! pixels x 8 channels per invocation, computes the output (`conv2d_f32_gemm.wgsl`; its
//! weights shared by subgroup broadcasts where the adapter has subgroups, as the int8
//! kernel's on CPU adapters). A
//! depthwise layer (one input and one output channel per group) reads the NCHW input itself,
//! as `conv2d_dw_direct.wgsl` reads the packed tensor (from a texture copy on CPU adapters), 4
//! pixels of a row per invocation (`conv2d_f32_dw.wgsl`).
//!
//! Float results are not bit-exact: WGSL lets the compiler fuse multiply-adds and pick the
//! summation order, so the tests bound each output's error by `(K + 1) · 2^-23 · Σ|x·w|`
//! (plus the bias) against the f64-accumulated [`crate::cpu::reference::conv2d_f32`]. Unlike
//! the int8 layer, this baseline does not split its work: a tensor larger than a binding, or
//! more workgroups than a dispatch takes, is an [`Error::DeviceLimit`].

use std::time::Duration;

use super::buffers::{
    check_dims, pass_durations, record, storage_buffer_init, timestamp_queries, Dispatch,
    GpuF32Tensor, Res, Slot, STORAGE_USAGE,
};
use super::context::GpuContext;
use super::conv_plan::{input_texture_copies, texture_rows};
use super::gate::Gated;
use super::kernels::{BStaging, ConvF32Params, Kernel};
use super::ops::{copy_into_texture, WeightTexture};
use super::pool::PooledTexture;
use crate::error::{Error, Result};
use crate::shape::{ConvParams, ConvShape};

/// Invocations per workgroup of the GEMM kernel (its `WG` override) and of the others.
const WG: u64 = 64;

/// An f32 conv layer on the GPU (weights and bias uploaded once, at construction).
#[derive(Debug)]
pub struct GpuConv2dF32 {
    device_id: u64,
    w_dims: [usize; 4],
    params: ConvParams,
    depthwise: bool,
    /// The layer's device objects (dropped inside the device's gate).
    res: Gated<Resources>,
}

/// The device objects of a [`GpuConv2dF32`].
#[derive(Debug)]
struct Resources {
    /// The weights: packed for the GEMM kernel ([`pack_gemm_weights`]) or in rows of vec4s for
    /// the depthwise kernel ([`dw_weight_rows`]).
    weights: wgpu::Buffer,
    /// The weights as a texture, where the adapter's kernels read textures and they fit.
    weights_tex: Option<WeightTexture>,
    bias: wgpu::Buffer,
}

/// The depthwise kernel's weights (OIHW with one input channel per group): per channel and
/// kernel row, the row's `kw` values in `ceil(kw / 4)` vec4s, zero past `kw`, so that a row is
/// one load for `kw <= 4` (`conv2d_f32_dw.wgsl`).
fn dw_weight_rows(w: &[f32], w_dims: [usize; 4]) -> Vec<f32> {
    let [o, _, kh, kw] = w_dims;
    let rw = 4 * kw.div_ceil(4);
    let mut rows = vec![0f32; o * kh * rw];
    for (dst, src) in rows.chunks_exact_mut(rw).zip(w.chunks_exact(kw)) {
        dst[..kw].copy_from_slice(src);
    }
    rows
}

/// The GEMM kernel's weights: one vec4 per (group, 8-channel block, K quad, lane), K quads in
/// (ky, kx, 4-channel quad) order, zeros past the group's channels.
fn pack_gemm_weights(w: &[f32], w_dims: [usize; 4], groups: usize) -> Vec<f32> {
    let [o, i, kh, kw] = w_dims;
    let opg = o / groups;
    let blocks = opg.div_ceil(8);
    let qpg = i.div_ceil(4);
    let k_quads = kh * kw * qpg;
    let mut out = vec![0f32; groups * blocks * k_quads * 8 * 4];
    for g in 0..groups {
        for oc in 0..opg {
            let (bl, lane) = (oc / 8, oc % 8);
            let c = g * opg + oc;
            for ky in 0..kh {
                for kx in 0..kw {
                    for ic in 0..i {
                        let kq = (ky * kw + kx) * qpg + ic / 4;
                        let at = (((g * blocks + bl) * k_quads + kq) * 8 + lane) * 4 + ic % 4;
                        out[at] = w[((c * i + ic) * kh + ky) * kw + kx];
                    }
                }
            }
        }
    }
    out
}

impl GpuConv2dF32 {
    /// Uploads a float conv layer: `w` (OIHW, shape `w_dims`), an optional bias of one value
    /// per output channel, and the conv hyperparameters. Validates everything that does not
    /// depend on the input.
    pub fn new(
        ctx: &GpuContext,
        w: &[f32],
        w_dims: [usize; 4],
        bias: Option<&[f32]>,
        params: ConvParams,
    ) -> Result<Self> {
        let ctx = &ctx.enter()?;
        params.validate()?;
        let n = check_dims(w_dims, "weight")?;
        if w.len() != n {
            return Err(Error::Shape(format!(
                "weight has {} elements, the shape {w_dims:?} needs {n}",
                w.len()
            )));
        }
        let [o, i, _, _] = w_dims;
        if o % params.groups != 0 {
            return Err(Error::Shape(format!(
                "{o} output channels are not divisible by {} groups",
                params.groups
            )));
        }
        let zeros;
        let bias = match bias {
            Some(b) if b.len() != o => {
                return Err(Error::Shape(format!(
                    "bias has {} values, the layer has {o} output channels",
                    b.len()
                )))
            }
            Some(b) => b,
            None => {
                zeros = vec![0f32; o];
                &zeros
            }
        };
        let depthwise = i == 1 && o == params.groups;
        let weights = match depthwise {
            true => dw_weight_rows(w, w_dims),
            false => pack_gemm_weights(w, w_dims, params.groups),
        };
        let bytes = std::mem::size_of_val(weights.as_slice()) as u64;
        if bytes > ctx.split().max_binding {
            return Err(Error::DeviceLimit(format!(
                "f32 conv weights: {bytes} bytes exceed the device's largest storage binding ({} \
                 bytes); the f32 baseline does not split its work",
                ctx.split().max_binding
            )));
        }
        let plan = ctx.conv_plan()?;
        let res = ctx.scoped("uploading f32 conv weights", || {
            let bits: &[u32] = bytemuck::cast_slice(&weights);
            Ok(Resources {
                weights: storage_buffer_init(
                    ctx,
                    bytemuck::cast_slice(bits),
                    "squint f32 weights",
                )?,
                weights_tex: match plan.textures {
                    true => WeightTexture::new(ctx, bits, plan.tex_width, plan.tex_max_height),
                    false => None,
                },
                bias: storage_buffer_init(ctx, bytemuck::cast_slice(bias), "squint f32 bias")?,
            })
        })?;
        Ok(GpuConv2dF32 {
            device_id: ctx.id(),
            w_dims,
            params,
            depthwise,
            res: Gated::new(res, ctx.gate()),
        })
    }

    /// Whether the layer runs on the depthwise kernel (one input and one output channel per
    /// group), else the GEMM kernel.
    pub fn is_depthwise(&self) -> bool {
        self.depthwise
    }

    /// The output shape for an input of shape `x_dims` (validates the geometry).
    pub fn output_shape(&self, x_dims: [usize; 4]) -> Result<ConvShape> {
        ConvShape::new(x_dims, self.w_dims, self.params)
    }

    /// Runs the conv; the output stays on the GPU, the work is queued on the context.
    pub fn run(&self, ctx: &GpuContext, x: &GpuF32Tensor) -> Result<GpuF32Tensor> {
        Ok(self.run_inner(ctx, x, false)?.0)
    }

    /// Like [`GpuConv2dF32::run`], and measures the GPU time of the layer (its dispatches in
    /// one compute pass: repack and conv, or the depthwise conv) with timestamp queries: waits for the GPU. The time is `None` when
    /// the device has no `TIMESTAMP_QUERY`.
    pub fn run_timed(
        &self,
        ctx: &GpuContext,
        x: &GpuF32Tensor,
    ) -> Result<(GpuF32Tensor, Option<Duration>)> {
        self.run_inner(ctx, x, true)
    }

    /// The uniform record for input `s`.
    fn params_for(&self, s: &ConvShape) -> ConvF32Params {
        let p = self.params;
        let (g, cipg) = (p.groups, s.c_in_per_group());
        let qpg = cipg.div_ceil(4);
        let u = |v: usize| v as u32;
        ConvF32Params {
            items: 0,
            c_in: u(s.c_in),
            h_in: u(s.h),
            w_in: u(s.w),
            c_out: u(s.c_out),
            h_out: u(s.h_out),
            w_out: u(s.w_out),
            kh: u(s.kh),
            kw: u(s.kw),
            stride_h: u(p.stride[0]),
            stride_w: u(p.stride[1]),
            pad_h: u(p.padding[0]),
            pad_w: u(p.padding[1]),
            dil_h: u(p.dilation[0]),
            dil_w: u(p.dilation[1]),
            c_in_per_group: u(cipg),
            c_out_per_group: u(s.c_out_per_group()),
            quads_per_group: u(qpg),
            quads_per_pixel: u(g * qpg),
            padded_h: u((s.h_out - 1) * p.stride[0] + (s.kh - 1) * p.dilation[0] + 1),
            padded_w: u((s.w_out - 1) * p.stride[1] + (s.kw - 1) * p.dilation[1] + 1),
            blocks_per_group: u(s.c_out_per_group().div_ceil(8)),
            pixel_tiles: u((s.h_out * s.w_out).div_ceil(4)),
            col_tiles: u(s.w_out.div_ceil(4)),
            col_tiles_rcp: 1.0 / s.w_out.div_ceil(4) as f32,
            ..Default::default()
        }
    }

    fn run_inner(
        &self,
        ctx: &GpuContext,
        x: &GpuF32Tensor,
        timed: bool,
    ) -> Result<(GpuF32Tensor, Option<Duration>)> {
        let ctx = &ctx.enter()?;
        ctx.check_same(self.device_id, "GpuConv2dF32::run (layer)")?;
        ctx.check_same(x.device_id, "GpuConv2dF32::run (input)")?;
        let s = self.output_shape(x.dims)?;
        let mut u = self.params_for(&s);
        let split = ctx.split();
        let limit = |what: &str, detail: String| {
            Error::DeviceLimit(format!(
                "f32 conv {what}: {detail}; the f32 baseline does not split its work"
            ))
        };
        let fits = |bytes: u64, what: &str| match bytes > split.max_binding {
            true => Err(limit(
                what,
                format!(
                    "{bytes} bytes exceed the device's largest storage binding ({} bytes)",
                    split.max_binding
                ),
            )),
            false => Ok(()),
        };
        // Each dispatch is one explicit 3-D grid of workgroups.
        let grid = |g: [u64; 3], what: &str| {
            let max = u64::from(split.max_workgroups);
            match g.iter().any(|&d| d > max) {
                true => Err(limit(
                    what,
                    format!("a grid of {g:?} workgroups exceeds the device's {max} per dimension"),
                )),
                false => Ok(g.map(|d| d as u32)),
            }
        };
        let y_bytes = s.output_len() as u64 * 4;
        fits(s.input_len() as u64 * 4, "input")?;
        fits(y_bytes, "output")?;
        let (n, tiles) = (s.n as u64, u64::from(u.pixel_tiles));
        let plan = ctx.conv_plan()?;
        let width = u64::from(plan.tex_width.max(1));
        let max_rows = u64::from(plan.tex_max_height);
        let rows = |texels: u64| texture_rows(texels, width).min(max_rows);
        // The input as a texture copy, on adapters whose kernels read textures, where it fits.
        let x_texels = (s.input_len() as u64).div_ceil(4);
        let x_tex_ok = plan.textures
            && x_texels.div_ceil(width) <= max_rows
            && x.buffer.size() >= x_texels * 16;
        let query = (timed && ctx.has_timestamps()).then(|| timestamp_queries(ctx, 2));
        let res = &*self.res;
        // The depthwise kernel: undilated rows whose 4 pixels' inputs span at most 13 columns
        // read each kernel row's span once, from a constant lane of its first texel where input
        // rows are whole texels; output rows of whole vec4s are stored as vec4s.
        let (kh, kw) = (s.kh as u32, s.kw as u32);
        let sw = self.params.stride[1];
        let span = u32::from(self.params.dilation[1] == 1 && sw <= 4 && 3 * sw + s.kw <= 13);
        // (Only the span reads the stride as a constant.)
        let sw = if span == 1 { sw as u32 } else { 1 };
        let r0 = match span == 1 && s.w % 4 == 0 {
            true => (4 - (self.params.padding[1] % 4) as u32) % 4,
            false => 4,
        };
        let y4 = s.w_out % 4 == 0;
        let dw_grid = match self.depthwise {
            true => Some(grid(
                [
                    (u64::from(u.h_out) * u64::from(u.col_tiles)).div_ceil(WG),
                    s.c_out as u64,
                    n,
                ],
                "depthwise kernel",
            )?),
            false => None,
        };
        // The GEMM kernel: its quads and weights in textures where the layer's weights are
        // one and the quads fit.
        u.items = u.quads_per_pixel * u.padded_w;
        let row_quads = u64::from(u.items);
        let quads = n * u64::from(u.padded_h) * row_quads;
        let weights_tex = res
            .weights_tex
            .as_ref()
            .filter(|_| !self.depthwise && x_tex_ok && quads.div_ceil(width) <= max_rows);
        if !self.depthwise && weights_tex.is_none() {
            fits(quads * 16, "repacked input")?;
        }
        let xtex = match self.depthwise {
            true => x_tex_ok && res.weights_tex.is_some(),
            false => weights_tex.is_some(),
        };
        if xtex {
            u.a_log2_width = plan.tex_width.trailing_zeros();
            u.x_log2_width = plan.tex_width.trailing_zeros();
        }
        let dw_weights_tex = res.weights_tex.as_ref().filter(|_| self.depthwise && xtex);
        if let Some(w) = weights_tex.or(dw_weights_tex) {
            u.w_log2_width = w.log2_width;
        }
        let gemm_grids = match self.depthwise {
            true => None,
            false => {
                let pack = grid([row_quads.div_ceil(WG), u64::from(u.padded_h), n], "repack")?;
                let blocks = self.params.groups as u64 * u64::from(u.blocks_per_group);
                Some((pack, grid([tiles.div_ceil(WG), blocks, n], "GEMM kernel")?))
            }
        };
        let y = ctx.encode("running an f32 conv", |enc, keep| {
            let y = ctx.pooled_buffer(y_bytes, STORAGE_USAGE, "squint f32 tensor")?;
            let x_slot = Slot::new(split, &x.buffer, 0, s.input_len() as u64 * 4);
            let y_slot = Slot::new(split, &y, 0, y_bytes);
            let b_slot = Slot::new(split, &res.bias, 0, res.bias.size());
            let w_slot = Slot::new(split, &res.weights, 0, res.weights.size());
            let mut textures: Vec<PooledTexture> = Vec::new();
            if xtex {
                let xt = ctx.pooled_texture(plan.tex_width, rows(x_texels) as u32);
                for copy in input_texture_copies(x_texels, width) {
                    copy_into_texture(enc, &x.buffer, xt.texture(), width, copy);
                }
                textures.push(xt);
                if !self.depthwise {
                    textures.push(ctx.pooled_texture(plan.tex_width, rows(quads) as u32));
                }
            }
            let mut buffer = None;
            let mut list = Vec::new();
            if let Some(g) = dw_grid {
                let pipe = ctx.pipeline(
                    Kernel::ConvF32Dw { xtex, y4 },
                    &[
                        ("KH", kh),
                        ("KW", kw),
                        ("SPAN", span),
                        ("SW", sw),
                        ("R0", r0),
                        ("RW", kw.div_ceil(4)),
                    ],
                )?;
                let (x_in, w_in) = match (textures.first(), dw_weights_tex) {
                    (Some(t), Some(w)) => (Res::Tex(t.view()), Res::Tex(&w.view)),
                    _ => (Res::Buf(x_slot), Res::Buf(w_slot)),
                };
                let res = vec![x_in, w_in, Res::Buf(b_slot), Res::Buf(y_slot)];
                list.push(Dispatch::grid(&pipe, &u, res, g));
            }
            if let Some((pack_grid, conv_grid)) = gemm_grids {
                let pack_pipe = ctx.pipeline(Kernel::ConvF32Pack { xtex }, &[])?;
                // Subgroup broadcasts of the weights where the adapter has subgroups, unless
                // the int8 kernels are forced to load their weights directly or through
                // workgroup memory (the f32 kernel then loads them directly).
                let sg =
                    plan.subgroups && !matches!(plan.staging, BStaging::Direct | BStaging::Shared);
                let conv_pipe = ctx.pipeline(Kernel::ConvF32Gemm { xtex, sg }, &[])?;
                let (x_in, quads_in, weights) = match weights_tex {
                    Some(w) => {
                        let (xt, qt) = (textures[0].view(), textures[1].view());
                        (Res::Tex(xt), Res::Tex(qt), Res::Tex(&w.view))
                    }
                    None => {
                        let b = buffer.insert(ctx.pooled_buffer(
                            quads * 16,
                            STORAGE_USAGE,
                            "squint f32 quads",
                        )?);
                        let q = Slot::new(split, b, 0, quads * 16);
                        (Res::Buf(x_slot), Res::Buf(q), Res::Buf(w_slot))
                    }
                };
                list.push(Dispatch::grid(
                    &pack_pipe,
                    &u,
                    vec![x_in, quads_in],
                    pack_grid,
                ));
                let res = vec![quads_in, weights, Res::Buf(b_slot), Res::Buf(y_slot)];
                list.push(Dispatch::grid(&conv_pipe, &u, res, conv_grid));
            }
            let ts = query.as_ref().map(|(set, _)| (set, 0, 1));
            record(ctx, enc, &list, ts)?;
            drop(list);
            if let Some((set, resolve)) = &query {
                enc.resolve_query_set(set, 0..2, resolve, 0);
            }
            for t in textures {
                keep.texture(t);
            }
            if let Some(b) = buffer {
                keep.buffer(b);
            }
            Ok(y)
        })?;
        let t = match &query {
            Some((_, resolve)) => Some(pass_durations(ctx, resolve, 1)?[0]),
            None => None,
        };
        Ok((
            GpuF32Tensor {
                dims: s.output_dims(),
                buffer: y,
                device_id: ctx.id(),
            },
            t,
        ))
    }
}
