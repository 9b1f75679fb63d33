//! Device tensors, uploads and read-backs, and the splitting of work into dispatches whose
//! storage bindings fit the device limits.
//!
//! # Layout of a packed tensor ([`GpuTensor`])
//! NCHW, four 8-bit values per u32 in little-endian byte order, each (n, c) plane of `H*W`
//! bytes padded to a multiple of 4 bytes (`plane_words = ceil(H*W / 4)` words). The padding
//! makes four consecutive output pixels of a plane one word, so conv invocations never share
//! an output word. When `H*W` is a multiple of 4 the buffer is plain NCHW bytes.
//!
//! # Splitting
//! Every kernel works on a linear range of items. [`plan`] cuts `[0, total)` into chunks such
//! that (a) each chunk's byte range in every storage buffer, widened down to the offset
//! alignment, fits the largest binding, and (b) its workgroups fit a 2-D dispatch. Each chunk
//! binds windows (`offset`, `size`) of the buffers and tells the kernel the window bases.

use super::device::{GpuContext, Pipeline, SplitLimits};
use super::kernels::WORKGROUP;
use crate::error::{Error, Result};
use crate::quant::QDtype;
use crate::shape::checked_numel;
use wgpu::util::DeviceExt;

/// A packed 8-bit tensor on the GPU (NCHW; see the module docs for the byte layout).
#[derive(Debug, Clone)]
pub struct GpuTensor {
    /// Shape `[N, C, H, W]`.
    pub dims: [usize; 4],
    /// Storage dtype of the bytes.
    pub dtype: QDtype,
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) device_id: usize,
}

/// A float32 tensor on the GPU (plain NCHW).
#[derive(Debug, Clone)]
pub struct GpuF32Tensor {
    /// Shape `[N, C, H, W]`.
    pub dims: [usize; 4],
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) device_id: usize,
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

    /// Size of the device buffer in bytes.
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

impl SplitLimits {
    /// The binding window covering bytes `[lo, hi)`: `(offset, size)`.
    pub(crate) fn window(&self, lo: u64, hi: u64) -> (u64, u64) {
        let offset = lo / self.align * self.align;
        let end = hi.div_ceil(4) * 4;
        (offset, (end - offset).max(4))
    }

    fn fits(&self, lo: u64, hi: u64) -> bool {
        self.window(lo, hi).1 <= self.max_binding
    }

    /// Largest workgroup count of one dispatch (a 2-D grid).
    fn max_groups(&self) -> u64 {
        let d = self.max_workgroups as u64;
        d * d
    }
}

/// Cuts items `[0, total)` into chunks whose storage windows (`ranges(begin, end)` gives the
/// byte range each storage binding needs) fit the binding limit and whose workgroups fit one
/// dispatch (`per_group` items per workgroup). `what` names the operation in errors.
pub(crate) fn plan(
    split: SplitLimits,
    total: u64,
    per_group: u64,
    what: &str,
    ranges: &dyn Fn(u64, u64) -> Vec<(u64, u64)>,
) -> Result<Vec<(u64, u64)>> {
    if total > u32::MAX as u64 {
        return Err(Error::DeviceLimit(format!(
            "{what}: {total} work items exceed the 2^32 item indices of squint's kernels"
        )));
    }
    let cap = split.max_groups() * per_group;
    let mut chunks = Vec::new();
    let mut begin = 0;
    while begin < total {
        let mut n = (total - begin).min(cap);
        loop {
            let r = ranges(begin, begin + n);
            if r.iter().all(|&(lo, hi)| split.fits(lo, hi)) {
                break;
            }
            if n == 1 {
                let need = r
                    .iter()
                    .map(|&(lo, hi)| split.window(lo, hi).1)
                    .max()
                    .unwrap_or(0);
                return Err(Error::DeviceLimit(format!(
                    "{what}: one work item needs a storage binding of {need} bytes, the device \
                     allows {} bytes per binding",
                    split.max_binding
                )));
            }
            n = n.div_ceil(2);
        }
        chunks.push((begin, begin + n));
        begin += n;
    }
    Ok(chunks)
}

/// Workgroups for `items` one-item-per-invocation items.
pub(crate) fn groups_for(items: u64) -> u64 {
    items.div_ceil(WORKGROUP)
}

/// One storage binding of a dispatch: a window of `buffer`.
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

/// Records one dispatch of `groups` workgroups of `pipe` (as a 2-D grid when one dimension
/// is not enough) with the uniform record `uniform` and the storage windows `slots`
/// (bindings 1, 2, ...).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    pipe: &Pipeline,
    uniform: &[u8],
    slots: &[Slot<'_>],
    groups: u64,
) {
    let d = ctx.device();
    let ubuf = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("squint params"),
        contents: uniform,
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: ubuf.as_entire_binding(),
    }];
    for (i, s) in slots.iter().enumerate() {
        entries.push(wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: s.buffer,
                offset: s.offset,
                size: wgpu::BufferSize::new(s.size),
            }),
        });
    }
    let bg = d.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipe.layout,
        entries: &entries,
    });
    let groups = groups.max(1);
    let max = ctx.split().max_workgroups as u64;
    let gx = groups.min(max);
    let gy = groups.div_ceil(gx);
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: None,
        timestamp_writes: None,
    });
    pass.set_pipeline(&pipe.pipeline);
    pass.set_bind_group(0, &bg, &[]);
    pass.dispatch_workgroups(gx as u32, gy as u32, 1);
}

/// A storage buffer of `size` bytes (at least 4), checked against the device's largest buffer.
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
    if size == bytes.len() as u64 {
        return Ok(ctx
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(what),
                contents: bytes,
                usage,
            }));
    }
    let mut padded = bytes.to_vec();
    padded.resize(size as usize, 0);
    Ok(ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(what),
            contents: &padded,
            usage,
        }))
}

/// Copies the first `size` bytes of `buffer` back to the host (waits for the queue).
pub(crate) fn read_back(ctx: &GpuContext, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
    let size = size.div_ceil(4) * 4;
    if size == 0 {
        return Ok(Vec::new());
    }
    let staging = ctx.scoped("reading a buffer back", || {
        let d = ctx.device();
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("squint read-back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = d.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        ctx.queue().submit([enc.finish()]);
        Ok(staging)
    })?;
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
    rx.recv()
        .map_err(|_| Error::Gpu("buffer mapping was abandoned".into()))?
        .map_err(|e| Error::Gpu(format!("mapping a read-back buffer: {e}")))?;
    let data = {
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("reading a mapped buffer: {e}")))?;
        view.to_vec()
    };
    staging.unmap();
    Ok(data)
}

impl GpuContext {
    /// Uploads a float32 tensor (NCHW).
    pub fn upload_f32(&self, x: &[f32], dims: [usize; 4]) -> Result<GpuF32Tensor> {
        let n = check_dims(dims, "f32 tensor")?;
        if x.len() != n {
            return Err(Error::Shape(format!(
                "{} values do not form the shape {dims:?} ({n} values)",
                x.len()
            )));
        }
        let buffer = self.scoped("uploading an f32 tensor", || {
            storage_buffer_init(self, bytemuck::cast_slice(x), "squint f32 tensor")
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
                storage_buffer_init(self, bytes, "squint packed tensor")
            } else {
                let mut padded = vec![0u8; dims[0] * dims[1] * pw];
                for (dst, src) in padded.chunks_mut(pw).zip(bytes.chunks(plane)) {
                    dst[..plane].copy_from_slice(src);
                }
                storage_buffer_init(self, &padded, "squint packed tensor")
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
        self.check_same(x.device_id, "read_f32")?;
        let raw = read_back(self, &x.buffer, x.numel() as u64 * 4)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub(crate) fn check_same(&self, id: usize, what: &str) -> Result<()> {
        if id != self.id() {
            return Err(Error::InvalidParameter(format!(
                "{what}: the tensor lives on another GPU device than this context"
            )));
        }
        Ok(())
    }
}
