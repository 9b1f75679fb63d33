//! The wgpu backend: device selection, WGSL kernels, buffers.
//!
//! * [`GpuContext::open`] picks an adapter ([`DeviceOptions`], `WGPU_BACKEND`), [`open_all`]
//!   opens every adapter (the tests and the CLI cross-check all of them), [`list_adapters`]
//!   reports them.
//! * Tensors live on the device as [`GpuTensor`] (packed 8-bit, four values per u32) and
//!   [`GpuF32Tensor`]; [`GpuContext::quantize`], [`GpuConv2d::run`] and
//!   [`GpuContext::dequantize`] chain without read-backs.
//! * [`conv2d_quantized`] and [`GpuContext::requantize`] have the exact contracts of their
//!   [`crate::cpu::reference`] counterparts and are tested against them byte for byte.
//!
//! Bit-exactness: the kernels (in `shaders/`) accumulate in exact wrapping i32 and do every
//! float step of quantize, dequantize and the requantization formulas in integer-emulated
//! IEEE binary32 (round to nearest even, subnormals kept), because WGSL permits fused
//! multiply-add contraction, reassociation, unspecified rounding of `f32(i32)` and subnormal
//! flushing; see `shaders/common.wgsl`. The fixed-point formula uses 32-bit operations only.
//!
//! wgpu validation errors, which panic by default, are captured with error scopes around every
//! operation and an uncaptured-error handler, and come back as [`crate::Error::Gpu`]. Work that
//! exceeds a binding or dispatch limit is split into several dispatches; only data that cannot
//! fit a buffer at all gives [`crate::Error::DeviceLimit`].

mod buffers;
mod device;
mod kernels;
mod ops;

pub use buffers::{GpuF32Tensor, GpuTensor};
pub use device::{
    list_adapters, open_all, AdapterReport, BackendChoice, DeviceOptions, GpuContext,
};
#[doc(hidden)]
pub use device::{DotChoice, InputChoice, KernelOptions, StagingChoice};
pub use ops::{conv2d_quantized, GpuConv2d};

#[cfg(test)]
mod tests;
