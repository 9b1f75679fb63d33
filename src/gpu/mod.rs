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
//! Conv kernels (see `shaders/conv_gemm_common.wgsl`, `conv2d_gemm_tiled.wgsl`,
//! `conv2d_gemm.wgsl`, `conv2d_dw.wgsl`, `conv_pack.wgsl`): the input is repacked into
//! 16-channel "quads" (in textures on CPU adapters when they fit, else buffers), then an
//! implicit-GEMM kernel (4 pixels x 8 channels per invocation; `dot4I8Packed` where the WGSL
//! language feature exists, a plain integer fallback otherwise and on CPU adapters, where it
//! is faster) or, for one input channel per group, a depthwise kernel computes the int32 sums
//! and requantizes them in the same pass. Depthwise convs of kernels up to 8 columns wide
//! skip the repack: `conv2d_dw_direct.wgsl` reads the packed tensor (8 or 4 pixels of one
//! channel per invocation). The GEMM kernel on GPUs is the tiled one (a
//! workgroup covers several 8-channel blocks and stages both operands in workgroup memory);
//! on CPU adapters, the classic one (one 8-channel block per workgroup, weights staged by
//! subgroup broadcast, workgroup memory or direct loads). [`GpuConv2d::run_timed`] measures a layer with timestamp queries.
//!
//! Host side: pipelines and bind group layouts are compiled once per context; per-call
//! buffers and textures come from a pool and return to it when dropped; each operation
//! records its dispatches as one compute pass, and operations are submitted together with the
//! next read-back or [`GpuContext::flush`] (a chain of layers is one submission, with no
//! CPU-GPU round trip in between).
//!
//! Bit-exactness: WGSL permits fused multiply-add contraction, reassociation, unspecified
//! rounding of `f32(i32)` and subnormal flushing, so no result depends on GPU float
//! arithmetic. The kernels (in `shaders/`) accumulate in exact wrapping i32; dequantize looks
//! up the 256 values the CPU formula gives; quantize decides levels by integer comparisons
//! against [`crate::quant::QuantizeSteps`]; [`GpuContext::requantize`] does every float step
//! in integer-emulated IEEE binary32 (round to nearest even, subnormals kept; see
//! `shaders/common.wgsl`); the conv kernels requantize through each channel's exact step table
//! ([`crate::quant::StepTable`], `shaders/epilogue_table.wgsl`): a float estimate of the
//! output level, verified against the table and replaced by a table search when wrong (the
//! direct depthwise kernel, where the host proves the estimate within one level, moves it by
//! at most one level by its two thresholds instead: [`crate::quant::StepTable::lookup_near`]).
//! One exception, on CPU adapters only (lavapipe, whose f32 arithmetic is LLVM's, correctly
//! rounded to nearest even): the direct depthwise kernel computes the FBGEMM and QNNPACK
//! formulas in f32 as the CPU reference does (an addition, then a multiplication: nothing to
//! fuse), where every accumulator is exact in f32; tested on ties.
//!
//! # Files
//! * `adapter.rs`: backend names, [`DeviceOptions`], [`AdapterReport`], adapter enumeration and
//!   ranking, [`list_adapters`] (opens no device).
//! * `context.rs`: [`GpuContext`] and its lifecycle: opening ([`open_all`]), the gate, recording
//!   and submission, error scopes, device-loss recovery, testing hooks.
//! * `pipelines.rs`: kernel overrides ([`KernelOptions`]), the conv kernel choices of an
//!   adapter, pipeline compilation and the per-device pipeline cache.
//! * `pool.rs`: the per-context pool of buffers and textures, and the loans an operation keeps.
//! * `buffers.rs`: [`GpuTensor`], [`GpuF32Tensor`], uploads, read-backs, binding windows and
//!   dispatch recording.
//! * `ops.rs`: quantize, dequantize, requantize and [`GpuConv2d`] (weight packing, encoding).
//! * `float_conv.rs`: [`GpuConv2dF32`], the f32 conv that `squint bench` compares the int8
//!   kernels with on the same adapter (`conv_f32_pack.wgsl`, `conv2d_f32_gemm.wgsl`,
//!   `conv2d_f32_dw.wgsl`; not bit-exact, its error bounded in the tests).
//! * `graph_ops.rs`: the byte-level ops of graph models ([`GpuContext::concat_bytes`],
//!   [`GpuContext::map_bytes`], [`GpuContext::binary_bytes`], [`GpuContext::max_pool2d_bytes`],
//!   [`GpuContext::avg_pool2d_bytes`]; kernels `graph_lut.wgsl`, `graph_add.wgsl`,
//!   `graph_pool.wgsl`): byte tables computed on the host, integer-emulated f32 for averages.
//! * `conv_plan.rs` (tests in `conv_plan_tests.rs`): the conv's integer geometry and the byte
//!   ranges of its dispatches (pure, CPU-tested).
//! * `split.rs`: the split limits and the planner that cuts work into fitting dispatches (pure).
//! * `kernels.rs` (contract test in `kernel_contract.rs`): WGSL sources, bindings and the
//!   uniform structs shared with `shaders/*.wgsl`.
//! * `gate.rs`: the per-adapter gate that serialises backends unsafe under concurrent calls,
//!   and the process-wide lock around device creation and destruction.
//! * `testing.rs`: the GPU availability policy of squint's own tests (hidden).
//! * `tests.rs`: GPU unit tests of the kernels' integer-emulated arithmetic and the splitting.
//!
//! wgpu validation errors, which panic by default, are captured with error scopes around every
//! operation and an uncaptured-error handler, and come back as [`crate::Error::Gpu`]; a lost
//! device comes back as [`crate::Error::DeviceLost`] and is reopened by the next call (see
//! [`GpuContext`]'s "Device loss"). Work that
//! exceeds a binding or dispatch limit is split into several dispatches. A conv image whose
//! repacked input or output does not fit (the scratch buffer, a binding) runs by bands of output
//! rows: each band's input rows are copied out, repacked and convolved, and its output copied
//! into place, exactly as the whole image would be (`conv_plan::RowBand`; tested with lowered
//! limits, and on a 1x3x12000x12000 image whose 2.1 GiB of quads exceed lavapipe's largest
//! buffer). Where even a band of the fewest rows reads more than a binding (thousands of input
//! channels and a wide image), the conv is also split by its input channels
//! (`conv_plan::KSlice`): a GEMM conv by whole groups, else along its reduction, each slice of
//! the groups' input quads repacked and convolved in turn, adding exact i32 partial sums until
//! the last runs the epilogue; a depthwise conv by slices of its channels. Only data that
//! cannot be split that far (a band of the fewest rows of one quad of one group still too
//! large for a binding, a tensor larger than a buffer) gives [`crate::Error::DeviceLimit`].

mod adapter;
mod buffers;
mod context;
mod conv_plan;
mod float_conv;
mod gate;
mod graph_ops;
mod kernels;
mod ops;
mod peak;
mod pipelines;
mod pool;
mod split;
#[doc(hidden)]
pub mod testing;

pub use adapter::{list_adapters, AdapterReport, BackendChoice, DeviceOptions};
pub use buffers::{GpuF32Tensor, GpuTensor};
pub use context::{open_all, GpuContext};
pub use float_conv::GpuConv2dF32;
pub use graph_ops::{AvgPoolPlan, FloatAvgPoolPlan, LutInput};
pub use ops::{
    check_conv2d_args, check_conv2d_layer_args, conv2d_quantized, conv2d_quantized_with, GpuConv2d,
};
pub use peak::GpuPeak;
#[doc(hidden)]
pub use pipelines::{DotChoice, InputChoice, KernelOptions, StagingChoice};

#[cfg(test)]
mod tests;
