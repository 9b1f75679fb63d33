//! Device tensors, uploads and read-backs, pooled allocations on a context, and the
//! recording of dispatches whose storage bindings fit the device limits.
//!
//! # Layout of a packed tensor ([`GpuTensor`])
//! NCHW, four 8-bit values per u32 in little-endian byte order, each (n, c) plane of `H*W`
//! bytes padded to a multiple of 4 bytes (`plane_words = ceil(H*W / 4)` words). The padding
//! makes four consecutive output pixels of a plane one word, so conv invocations never share
//! an output word. When `H*W` is a multiple of 4 the buffer is plain NCHW bytes.
//!
//! # Splitting
//! Every kernel works on a linear range of items. [`plan`](super::split::plan) cuts
//! `[0, total)` into chunks such that (a) each chunk's byte range in every storage buffer,
//! widened down to the offset alignment, fits the largest binding, and (b) its workgroups fit
//! a 2-D dispatch. Each chunk binds windows (`offset`, `size`) of the buffers and tells the
//! kernel the window bases.
//!
//! # Pooling and recording
//! Per-call buffers (tensors, scratch textures, read-back staging) come from the context's
//! pool (`pool.rs`), keyed by usage and size class, and go back to it when dropped, so steady-state
//! calls allocate nothing but a small uniform buffer. The dispatches of one operation are
//! recorded as one compute pass ([`record`]) with all their uniform records in one buffer.
//! Operations are recorded into the context's pending command encoder and submitted together
//! (see [`GpuContext::flush`]): a buffer returned to the pool may be handed out again while
//! commands that use it are still pending, which is safe because those commands run in
//! recording order. Data is therefore never written into pooled buffers with
//! `Queue::write_buffer` while work is pending (it would run before the pending commands).

use std::sync::Arc;

use super::context::GpuContext;
use super::kernels::{ITEMS_PER_INVOCATION, WORKGROUP};
use super::pipelines::Pipeline;
use super::pool::{size_class, PooledBuffer, PooledTexture};
use super::split::SplitLimits;
use crate::error::{Error, Result};
use crate::quant::QDtype;
use crate::shape::checked_numel;

/// A packed 8-bit tensor on the GPU (NCHW; see the module docs for the byte layout).
#[derive(Debug, Clone)]
pub struct GpuTensor {
    /// Shape `[N, C, H, W]`.
    pub dims: [usize; 4],
    /// Storage dtype of the bytes.
    pub dtype: QDtype,
    pub(crate) buffer: Arc<PooledBuffer>,
    pub(crate) device_id: u64,
}

/// A float32 tensor on the GPU (plain NCHW).
#[derive(Debug, Clone)]
pub struct GpuF32Tensor {
    /// Shape `[N, C, H, W]`.
    pub dims: [usize; 4],
    pub(crate) buffer: Arc<PooledBuffer>,
    pub(crate) device_id: u64,
}

impl GpuTensor {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Words per (n, c) plane: `ceil(H*W / 4)`.
    pub fn plane_words(&self) -> usize {
        plane_words(self.dims)
    }

    /// Size of the device buffer in bytes (pooled buffers are rounded up to a size class).
    pub fn byte_len(&self) -> u64 {
        self.buffer.size()
    }
}

impl GpuF32Tensor {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

pub(crate) fn plane_words(dims: [usize; 4]) -> usize {
    (dims[2] * dims[3]).div_ceil(4)
}

/// Bytes of a packed tensor buffer of shape `dims`.
pub(crate) fn packed_bytes(dims: [usize; 4]) -> u64 {
    (dims[0] * dims[1]) as u64 * plane_words(dims) as u64 * 4
}

pub(crate) fn check_dims(dims: [usize; 4], what: &str) -> Result<usize> {
    if dims.contains(&0) {
        return Err(Error::Shape(format!(
            "{what} shape {dims:?} has a zero-sized dimension"
        )));
    }
    checked_numel(&dims)
}

/// Workgroups for `items` one-item-per-invocation items.
pub(crate) fn groups_for(items: u64) -> u64 {
    items.div_ceil(WORKGROUP)
}

/// Workgroups for `items` items of an elementwise kernel (`ITEMS_PER_INVOCATION` each).
pub(crate) fn groups_for_elementwise(items: u64) -> u64 {
    items.div_ceil(WORKGROUP * ITEMS_PER_INVOCATION)
}

/// One storage binding of a dispatch: a window of `buffer`.
#[derive(Clone, Copy)]
pub(crate) struct Slot<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl<'a> Slot<'a> {
    /// The window of `buffer` covering bytes `[lo, hi)`.
    pub(crate) fn new(split: SplitLimits, buffer: &'a wgpu::Buffer, lo: u64, hi: u64) -> Self {
        let (offset, size) = split.window(lo, hi.min(buffer.size()));
        Slot {
            buffer,
            offset,
            size: size.min(buffer.size() - offset),
        }
    }

    /// Index of the window's first element of `elem` bytes (wrapping to u32 like the kernels'
    /// index arithmetic).
    pub(crate) fn base(&self, elem: u64) -> u32 {
        (self.offset / elem) as u32
    }
}

/// One binding of a dispatch after the uniform record: a storage window or a texture.
#[derive(Clone, Copy)]
pub(crate) enum Res<'a> {
    Buf(Slot<'a>),
    Tex(&'a wgpu::TextureView),
}

/// One planned dispatch: `groups` workgroups of `pipe` (laid out as a 2-D grid when one
/// dimension is not enough), its uniform record and its bindings 1, 2, ...
pub(crate) struct Dispatch<'a> {
    pub pipe: Arc<Pipeline>,
    pub uniform: Vec<u8>,
    pub res: Vec<Res<'a>>,
    pub groups: u64,
    /// An explicit grid of workgroups (x, y, z), which `groups` then counts; `None`: a 1-D
    /// or 2-D grid of `groups`.
    pub grid: Option<[u32; 3]>,
}

impl<'a> Dispatch<'a> {
    pub(crate) fn new<P: bytemuck::Pod>(
        pipe: &Arc<Pipeline>,
        params: &P,
        res: Vec<Res<'a>>,
        groups: u64,
    ) -> Self {
        Dispatch {
            pipe: pipe.clone(),
            uniform: bytemuck::bytes_of(params).to_vec(),
            res,
            groups,
            grid: None,
        }
    }

    /// A dispatch of the explicit grid `grid` of workgroups (each dimension within the
    /// device's limit).
    pub(crate) fn grid<P: bytemuck::Pod>(
        pipe: &Arc<Pipeline>,
        params: &P,
        res: Vec<Res<'a>>,
        grid: [u32; 3],
    ) -> Self {
        Dispatch {
            grid: Some(grid),
            ..Dispatch::new(
                pipe,
                params,
                res,
                grid.iter().map(|&g| u64::from(g)).product(),
            )
        }
    }
}

/// Records `list` into `enc` as one compute pass (writing the timestamps `ts` = (query set,
/// index at the beginning, index at the end) when given), all uniform records in one buffer.
pub(crate) fn record(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    list: &[Dispatch<'_>],
    ts: Option<(&wgpu::QuerySet, u32, u32)>,
) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let d = ctx.device();
    let align = (ctx.limits().min_uniform_buffer_offset_alignment as u64).max(16);
    let stride = |len: usize| (len as u64).div_ceil(align) * align;
    let mut bytes = Vec::new();
    let mut offsets = Vec::with_capacity(list.len());
    for item in list {
        offsets.push(bytes.len() as u64);
        bytes.extend_from_slice(&item.uniform);
        bytes.resize(
            offsets[offsets.len() - 1] as usize + stride(item.uniform.len()) as usize,
            0,
        );
    }
    let ubuf = buffer_with_data(ctx, &bytes, wgpu::BufferUsages::UNIFORM, "squint params")?;
    let groups: Vec<wgpu::BindGroup> = list
        .iter()
        .zip(&offsets)
        .map(|(item, &off)| {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &ubuf,
                    offset: off,
                    size: wgpu::BufferSize::new(item.uniform.len() as u64),
                }),
            }];
            for (i, r) in item.res.iter().enumerate() {
                let resource = match r {
                    Res::Buf(s) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: s.buffer,
                        offset: s.offset,
                        size: wgpu::BufferSize::new(s.size),
                    }),
                    Res::Tex(v) => wgpu::BindingResource::TextureView(v),
                };
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource,
                });
            }
            d.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &item.pipe.layout,
                entries: &entries,
            })
        })
        .collect();
    let timestamp_writes = ts.map(|(set, b, e)| wgpu::ComputePassTimestampWrites {
        query_set: set,
        beginning_of_pass_write_index: Some(b),
        end_of_pass_write_index: Some(e),
    });
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: None,
        timestamp_writes,
    });
    let max = ctx.split().max_workgroups as u64;
    for (item, bg) in list.iter().zip(&groups) {
        let n = item.groups.max(1);
        let gx = n.min(max);
        let gy = n.div_ceil(gx);
        let [x, y, z] = item.grid.unwrap_or([gx as u32, gy as u32, 1]);
        pass.set_pipeline(&item.pipe.pipeline);
        pass.set_bind_group(0, bg, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
    Ok(())
}

/// Records one dispatch (as its own compute pass).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn dispatch(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    pipe: &Arc<Pipeline>,
    uniform: &[u8],
    slots: Vec<Slot<'_>>,
    groups: u64,
) -> Result<()> {
    let item = Dispatch {
        pipe: pipe.clone(),
        uniform: uniform.to_vec(),
        res: slots.into_iter().map(Res::Buf).collect(),
        groups,
        grid: None,
    };
    record(ctx, enc, &[item], None)
}

/// Usage of tensor and scratch storage buffers.
pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl GpuContext {
    /// A buffer of at least `size` bytes with `usage`, from the pool or new. Its contents are
    /// undefined.
    pub(crate) fn pooled_buffer(
        &self,
        size: u64,
        usage: wgpu::BufferUsages,
        what: &str,
    ) -> Result<Arc<PooledBuffer>> {
        let size = size.max(4).div_ceil(4) * 4;
        let max = self.split().max_buffer;
        if size > max {
            return Err(Error::DeviceLimit(format!(
                "{what} needs a buffer of {size} bytes, the device's largest buffer is {max} bytes"
            )));
        }
        let class = size_class(size).min(max / 4 * 4).max(size);
        let pool = self.pool();
        let buffer = match pool.take_buffer(class, usage) {
            Some(b) => b,
            None => self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(what),
                size: class,
                usage,
                mapped_at_creation: false,
            }),
        };
        Ok(Arc::new(PooledBuffer::new(buffer, pool)))
    }

    /// A pooled storage buffer holding `bytes` (the rest of it undefined), written through the
    /// queue after submitting the pending work (so that the write cannot overtake pending
    /// commands that still use a reused buffer's previous contents).
    pub(crate) fn pooled_buffer_init(&self, bytes: &[u8], what: &str) -> Result<Arc<PooledBuffer>> {
        let b = self.pooled_buffer(bytes.len() as u64, STORAGE_USAGE, what)?;
        if bytes.len().is_multiple_of(4) {
            self.write_after_pending(&b, bytes)?;
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().div_ceil(4) * 4, 0);
            self.write_after_pending(&b, &padded)?;
        }
        Ok(b)
    }

    /// An rgba32uint storage texture of `width` x `height` texels, from the pool or new.
    pub(crate) fn pooled_texture(&self, width: u32, height: u32) -> PooledTexture {
        let pool = self.pool();
        let texture = pool.take_texture(width, height).unwrap_or_else(|| {
            self.device().create_texture(&wgpu::TextureDescriptor {
                label: Some("squint conv quads"),
                size: wgpu::Extent3d {
                    width,
                    height,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Uint,
                usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            })
        });
        PooledTexture::new(texture, pool)
    }
}

/// A storage buffer of `size` bytes (at least 4), checked against the device's largest buffer.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn storage_buffer(ctx: &GpuContext, size: u64, what: &str) -> Result<wgpu::Buffer> {
    let size = size.max(4).div_ceil(4) * 4;
    if size > ctx.split().max_buffer {
        return Err(Error::DeviceLimit(format!(
            "{what} needs a buffer of {size} bytes, the device's largest buffer is {} bytes",
            ctx.split().max_buffer
        )));
    }
    Ok(ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(what),
        size,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    }))
}

/// A storage buffer holding `bytes` (padded with zeros to a multiple of 4, at least 4 bytes).
pub(crate) fn storage_buffer_init(
    ctx: &GpuContext,
    bytes: &[u8],
    what: &str,
) -> Result<wgpu::Buffer> {
    let size = (bytes.len() as u64).max(4).div_ceil(4) * 4;
    if size > ctx.split().max_buffer {
        return Err(Error::DeviceLimit(format!(
            "{what} needs a buffer of {size} bytes, the device's largest buffer is {} bytes",
            ctx.split().max_buffer
        )));
    }
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    buffer_with_data(ctx, bytes, usage, what)
}

/// A new buffer holding `bytes`, zero-padded to a multiple of 4 (at least 4 bytes), filled
/// through a mapping at creation. Unlike wgpu's `create_buffer_init`, which panics when the
/// mapping fails (as it does on a lost device), this returns an error.
pub(crate) fn buffer_with_data(
    ctx: &GpuContext,
    bytes: &[u8],
    usage: wgpu::BufferUsages,
    what: &str,
) -> Result<wgpu::Buffer> {
    let size = (bytes.len() as u64).max(4).div_ceil(4) * 4;
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(what),
        size,
        usage,
        mapped_at_creation: true,
    });
    {
        let mut view = buffer
            .get_mapped_range_mut(..)
            .map_err(|e| ctx.gpu_error(&format!("filling the buffer '{what}'"), &e.to_string()))?;
        view.slice(..bytes.len()).copy_from_slice(bytes);
        // The padding of a buffer mapped at creation is zero-initialized.
    }
    buffer.unmap();
    Ok(buffer)
}

/// A timestamp query set of `count` queries (two per timed pass: its beginning and end) and
/// the buffer it resolves to (8 bytes per query).
pub(crate) fn timestamp_queries(ctx: &GpuContext, count: u32) -> (wgpu::QuerySet, wgpu::Buffer) {
    let d = ctx.device();
    let set = d.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("squint timestamps"),
        ty: wgpu::QueryType::Timestamp,
        count,
    });
    let resolve = d.create_buffer(&wgpu::BufferDescriptor {
        label: Some("squint timestamps"),
        size: 8 * u64::from(count),
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    (set, resolve)
}

/// The durations of passes `0..passes` timed into the queries resolved to `resolve` (pass p
/// between queries 2p and 2p + 1; see [`timestamp_queries`]): waits for the GPU.
pub(crate) fn pass_durations(
    ctx: &GpuContext,
    resolve: &wgpu::Buffer,
    passes: usize,
) -> Result<Vec<std::time::Duration>> {
    let raw = read_back(ctx, resolve, 16 * passes as u64)?;
    let at = |i: usize| u64::from_le_bytes(raw[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    let period = f64::from(ctx.queue().get_timestamp_period());
    Ok((0..passes)
        .map(|p| {
            let ns = at(2 * p + 1).saturating_sub(at(2 * p)) as f64 * period;
            std::time::Duration::from_nanos(ns.round() as u64)
        })
        .collect())
}

/// Copies the first `size` bytes of `buffer` back to the host: submits the pending work with
/// the copy and waits for the queue.
pub(crate) fn read_back(ctx: &GpuContext, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
    let size = size.div_ceil(4) * 4;
    if size == 0 {
        return Ok(Vec::new());
    }
    let staging = ctx.pooled_buffer(
        size,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        "squint read-back",
    )?;
    ctx.submit_with("reading a buffer back", |enc| {
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        Ok(())
    })?;
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, ..size, move |r| {
        let _ = tx.send(r);
    });
    if let Err(e) = ctx.wait_idle("waiting for a read-back") {
        // Cancel the pending mapping, so that the staging buffer can go back to the pool.
        staging.unmap();
        return Err(e);
    }
    rx.recv()
        .map_err(|_| ctx.gpu_error("reading back", "the buffer mapping was abandoned"))?
        .map_err(|e| ctx.gpu_error("mapping a read-back buffer", &e.to_string()))?;
    if ctx.snapshot_lost() {
        // The work this read waited for may not have run.
        return Err(ctx.gpu_error("reading back", "the device was lost"));
    }
    let data = {
        let view = staging
            .get_mapped_range(..size)
            .map_err(|e| ctx.gpu_error("reading a mapped buffer", &e.to_string()))?;
        view.to_vec()
    };
    staging.unmap();
    Ok(data)
}

impl GpuContext {
    /// Uploads a float32 tensor (NCHW).
    pub fn upload_f32(&self, x: &[f32], dims: [usize; 4]) -> Result<GpuF32Tensor> {
        self.enter()?.upload_f32_here(x, dims)
    }

    fn upload_f32_here(&self, x: &[f32], dims: [usize; 4]) -> Result<GpuF32Tensor> {
        let n = check_dims(dims, "f32 tensor")?;
        if x.len() != n {
            return Err(Error::Shape(format!(
                "{} values do not form the shape {dims:?} ({n} values)",
                x.len()
            )));
        }
        let buffer = self.scoped("uploading an f32 tensor", || {
            self.pooled_buffer_init(bytemuck::cast_slice(x), "squint f32 tensor")
        })?;
        Ok(GpuF32Tensor {
            dims,
            buffer,
            device_id: self.id(),
        })
    }

    /// Uploads a quantized tensor given as stored bytes (u8 for quint8, two's-complement i8
    /// for qint8), NCHW.
    pub fn upload_q(&self, bytes: &[u8], dims: [usize; 4], dtype: QDtype) -> Result<GpuTensor> {
        self.enter()?.upload_q_here(bytes, dims, dtype)
    }

    fn upload_q_here(&self, bytes: &[u8], dims: [usize; 4], dtype: QDtype) -> Result<GpuTensor> {
        let n = check_dims(dims, "quantized tensor")?;
        if bytes.len() != n {
            return Err(Error::Shape(format!(
                "{} bytes do not form the shape {dims:?} ({n} values)",
                bytes.len()
            )));
        }
        let plane = dims[2] * dims[3];
        let pw = plane_words(dims) * 4;
        let buffer = self.scoped("uploading a quantized tensor", || {
            if pw == plane {
                self.pooled_buffer_init(bytes, "squint packed tensor")
            } else {
                let mut padded = vec![0u8; dims[0] * dims[1] * pw];
                for (dst, src) in padded.chunks_mut(pw).zip(bytes.chunks(plane)) {
                    dst[..plane].copy_from_slice(src);
                }
                self.pooled_buffer_init(&padded, "squint packed tensor")
            }
        })?;
        Ok(GpuTensor {
            dims,
            dtype,
            buffer,
            device_id: self.id(),
        })
    }

    /// Reads a quantized tensor back as stored bytes (NCHW, the CPU reference's convention).
    /// Waits for all work queued before.
    pub fn read_q(&self, x: &GpuTensor) -> Result<Vec<u8>> {
        self.enter()?.read_q_here(x)
    }

    fn read_q_here(&self, x: &GpuTensor) -> Result<Vec<u8>> {
        self.check_same(x.device_id, "read_q")?;
        let raw = read_back(self, &x.buffer, packed_bytes(x.dims))?;
        let plane = x.dims[2] * x.dims[3];
        let pw = x.plane_words() * 4;
        if pw == plane {
            let mut raw = raw;
            raw.truncate(x.numel());
            return Ok(raw);
        }
        let mut out = Vec::with_capacity(x.numel());
        for chunk in raw.chunks(pw).take(x.dims[0] * x.dims[1]) {
            out.extend_from_slice(&chunk[..plane]);
        }
        Ok(out)
    }

    /// Reads a float32 tensor back. Waits for all work queued before.
    pub fn read_f32(&self, x: &GpuF32Tensor) -> Result<Vec<f32>> {
        self.enter()?.read_f32_here(x)
    }

    fn read_f32_here(&self, x: &GpuF32Tensor) -> Result<Vec<f32>> {
        self.check_same(x.device_id, "read_f32")?;
        let raw = read_back(self, &x.buffer, x.numel() as u64 * 4)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub(crate) fn check_same(&self, id: u64, what: &str) -> Result<()> {
        if id != self.id() && self.was_lost(id) {
            return Err(Error::DeviceLost(format!(
                "{what}: the tensor or layer was created on {} before it was lost",
                self.adapter_report().summary()
            )));
        }
        if id != self.id() {
            return Err(Error::InvalidParameter(format!(
                "{what}: the tensor lives on another GPU device than this context"
            )));
        }
        Ok(())
    }
}
