//! Where quantized kernels run: the CPU reference, the fast CPU path, or a GPU.

use crate::cpu;
use crate::error::Result;
use crate::gpu::{self, DeviceOptions, GpuContext};
use crate::quant::{Epilogue, QParams, WeightQParams};
use crate::shape::ConvShape;

/// A device that runs quantized convs.
#[derive(Clone)]
pub enum Device {
    /// The CPU reference kernels (plain loops; the specification).
    CpuReference,
    /// The fast CPU path (blocked int8 GEMM, SIMD, multithreaded).
    Cpu,
    /// A wgpu adapter.
    Gpu(GpuContext),
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Device {
    /// Opens a GPU device with the given options.
    pub fn open_gpu(opts: &DeviceOptions) -> Result<Self> {
        Ok(Device::Gpu(GpuContext::open(opts)?))
    }

    /// A one-line description (`cpu-reference`, `cpu (avx512-vnni)`, or the adapter).
    pub fn describe(&self) -> String {
        match self {
            Device::CpuReference => "cpu-reference".to_string(),
            Device::Cpu => format!("cpu ({})", cpu::fast::detected_isa()),
            Device::Gpu(ctx) => {
                let r = ctx.adapter_report();
                format!("gpu: {} ({})", r.name, r.backend)
            }
        }
    }

    /// Runs one quantized conv with the same contract as
    /// [`cpu::reference::conv2d_quantized`].
    pub fn conv2d_quantized(
        &self,
        x: &[u8],
        x_qp: &QParams,
        w: &[i8],
        w_qp: &WeightQParams,
        epi: &Epilogue,
        s: &ConvShape,
    ) -> Result<Vec<u8>> {
        s.validate()?;
        epi.validate()?;
        match self {
            Device::CpuReference => cpu::reference::conv2d_quantized(x, x_qp, w, w_qp, epi, s),
            Device::Cpu => cpu::fast::conv2d_quantized(
                x,
                x_qp,
                w,
                w_qp,
                epi,
                s,
                &cpu::fast::FastConvOptions::default(),
            ),
            Device::Gpu(ctx) => gpu::conv2d_quantized(ctx, x, x_qp, w, w_qp, epi, s),
        }
    }
}
