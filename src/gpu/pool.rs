//! The per-context pool of buffers and textures: per-call buffers (tensors, scratch textures,
//! read-back staging) are lent by [`Pool`], keyed by usage and size class, and return to it
//! when dropped (inside the device's gate); [`Keep`] holds an operation's scratch loans until
//! its command buffer is queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::gate::Gate;

/// Most bytes the buffer pool of a context keeps free.
pub(crate) const POOL_CAP: u64 = 512 << 20;

/// The size a pooled buffer of at least `size` bytes gets: multiples of 256 bytes up to
/// 4 KiB, then quarter steps between powers of two (at most 25% slack).
pub(crate) fn size_class(size: u64) -> u64 {
    let size = size.max(4).div_ceil(4) * 4;
    if size <= 4096 {
        return size.div_ceil(256) * 256;
    }
    let step = 1u64 << (63 - size.leading_zeros() - 2);
    size.div_ceil(step) * step
}

/// Free buffers and textures of one context, for reuse across calls.
#[derive(Debug)]
pub(crate) struct Pool {
    state: Mutex<PoolState>,
    /// Most bytes kept free.
    cap: u64,
    /// The device's gate: loans return (and surplus entries are dropped) inside it.
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct PoolState {
    buffers: HashMap<(u64, u32), Vec<wgpu::Buffer>>,
    textures: HashMap<(u32, u32), Vec<wgpu::Texture>>,
    bytes: u64,
}

/// Free entries kept per key.
const POOL_PER_KEY: usize = 8;

impl Pool {
    /// An empty pool keeping at most `cap` bytes, returning loans inside `gate`.
    pub(crate) fn new(cap: u64, gate: &Arc<Gate>) -> Arc<Pool> {
        Arc::new(Pool {
            state: Mutex::new(PoolState::default()),
            cap,
            gate: gate.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free buffer of exactly `size` bytes and `usage`, if one is kept.
    pub(crate) fn take_buffer(&self, size: u64, usage: wgpu::BufferUsages) -> Option<wgpu::Buffer> {
        let mut st = self.lock();
        let b = st.buffers.get_mut(&(size, usage.bits()))?.pop()?;
        st.bytes -= size;
        Some(b)
    }

    /// Keeps `b` for reuse unless the pool is full.
    fn put_buffer(&self, b: wgpu::Buffer) {
        let size = b.size();
        let mut st = self.lock();
        if st.bytes + size > self.cap {
            return;
        }
        let list = st.buffers.entry((size, b.usage().bits())).or_default();
        if list.len() < POOL_PER_KEY {
            list.push(b);
            st.bytes += size;
        }
    }

    /// A free `w` x `h` texture, if one is kept.
    pub(crate) fn take_texture(&self, w: u32, h: u32) -> Option<wgpu::Texture> {
        let mut st = self.lock();
        let t = st.textures.get_mut(&(w, h))?.pop()?;
        st.bytes -= w as u64 * h as u64 * 16;
        Some(t)
    }

    /// Keeps `t` for reuse unless the pool is full.
    fn put_texture(&self, t: wgpu::Texture) {
        let (w, h) = (t.width(), t.height());
        let size = w as u64 * h as u64 * 16;
        let mut st = self.lock();
        if st.bytes + size > self.cap {
            return;
        }
        let list = st.textures.entry((w, h)).or_default();
        if list.len() < POOL_PER_KEY {
            list.push(t);
            st.bytes += size;
        }
    }

    /// Drops every free entry.
    pub(crate) fn clear(&self) {
        let mut st = self.lock();
        st.buffers.clear();
        st.textures.clear();
        st.bytes = 0;
    }

    /// Bytes held by free entries.
    pub(crate) fn free_bytes(&self) -> u64 {
        self.lock().bytes
    }
}

/// A buffer on loan from a [`Pool`]; it goes back when dropped (inside the device's gate,
/// like the buffer's own drop when the pool is full or gone).
pub(crate) struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    pool: Weak<Pool>,
    gate: Arc<Gate>,
}

impl PooledBuffer {
    /// Lends `buffer` (from `pool` or new): it goes back to `pool` when dropped.
    pub(crate) fn new(buffer: wgpu::Buffer, pool: &Arc<Pool>) -> Self {
        PooledBuffer {
            buffer: Some(buffer),
            pool: Arc::downgrade(pool),
            gate: pool.gate.clone(),
        }
    }
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBuffer")
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for PooledBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.buffer
            .as_ref()
            .expect("a pooled buffer is present until dropped")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let _inside = self.gate.enter();
        if let (Some(b), Some(pool)) = (self.buffer.take(), self.pool.upgrade()) {
            pool.put_buffer(b);
        }
        // Else the buffer (if any) drops here, inside the gate.
    }
}

/// An rgba32uint texture on loan from a [`Pool`], with its view (returned and dropped inside
/// the device's gate, like [`PooledBuffer`]).
pub(crate) struct PooledTexture {
    texture: Option<wgpu::Texture>,
    view: Option<wgpu::TextureView>,
    pool: Weak<Pool>,
    gate: Arc<Gate>,
}

impl PooledTexture {
    /// Lends `texture` (from `pool` or new) with a default view: it goes back to `pool` when
    /// dropped.
    pub(crate) fn new(texture: wgpu::Texture, pool: &Arc<Pool>) -> Self {
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        PooledTexture {
            texture: Some(texture),
            view: Some(view),
            pool: Arc::downgrade(pool),
            gate: pool.gate.clone(),
        }
    }

    /// The texture.
    pub(crate) fn texture(&self) -> &wgpu::Texture {
        self.texture
            .as_ref()
            .expect("a pooled texture is present until dropped")
    }

    /// Its default view.
    pub(crate) fn view(&self) -> &wgpu::TextureView {
        self.view
            .as_ref()
            .expect("a pooled texture's view is present until dropped")
    }
}

impl Drop for PooledTexture {
    fn drop(&mut self) {
        let _inside = self.gate.enter();
        self.view = None;
        if let (Some(t), Some(pool)) = (self.texture.take(), self.pool.upgrade()) {
            pool.put_texture(t);
        }
    }
}

/// Scratch resources of a recorded operation, kept until its command buffer is queued.
#[derive(Default)]
pub(crate) struct Keep {
    buffers: Vec<Arc<PooledBuffer>>,
    textures: Vec<PooledTexture>,
}

impl Keep {
    /// Keeps `b` until the command buffer is queued.
    pub(crate) fn buffer(&mut self, b: Arc<PooledBuffer>) {
        self.buffers.push(b);
    }

    /// Keeps `t` until the command buffer is queued.
    pub(crate) fn texture(&mut self, t: PooledTexture) {
        self.textures.push(t);
    }
}
