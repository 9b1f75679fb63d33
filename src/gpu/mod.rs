//! The wgpu backend: device selection, WGSL kernels, buffers.
