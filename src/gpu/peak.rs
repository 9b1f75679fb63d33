//! The adapter's peak throughput for `squint bench`: a register-only loop of `dot4I8Packed`
//! (the instruction the int8 conv kernels are built on where the language feature exists) or
//! of f32 `fma`, over enough invocations to fill the device (`shaders/peak.wgsl`).

use super::buffers::{groups_for, read_back, record, Dispatch, Res, Slot, STORAGE_USAGE};
use super::context::GpuContext;
use super::kernels::{Kernel, PeakParams};
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// A loop [`GpuContext::peak_gops`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuPeak {
    /// `dot4I8Packed`: four int8 products and their sum per call (8 operations, with the add).
    Dot4I8,
    /// f32 `fma` (2 operations).
    FmaF32,
}

impl GpuPeak {
    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            GpuPeak::Dot4I8 => "dot4I8Packed",
            GpuPeak::FmaF32 => "f32 fma",
        }
    }

    fn ops_per_step(self) -> u64 {
        match self {
            GpuPeak::Dot4I8 => 8,
            GpuPeak::FmaF32 => 2,
        }
    }
}

/// Invocations per dispatch (64 per workgroup): enough to fill a large GPU.
const INVOCATIONS: u64 = 1 << 18;
/// Chains per invocation (`peak.wgsl`).
const CHAINS: u64 = 8;

impl GpuContext {
    /// Runs one dispatch of `steps` steps per chain; returns its wall time (submission to the
    /// end of the read-back of 4 bytes).
    fn peak_run(&self, kind: GpuPeak, steps: u32) -> Result<Duration> {
        let ctx = &self.enter()?;
        let kernel = Kernel::Peak {
            dot4: kind == GpuPeak::Dot4I8,
        };
        let bytes = INVOCATIONS * 4;
        let out = ctx.pooled_buffer(bytes, STORAGE_USAGE, "squint peak output")?;
        let params = PeakParams {
            iters: steps,
            seed: 0x9e37_79b9,
            ..Default::default()
        };
        let t = Instant::now();
        ctx.encode("measuring the peak", |enc, _| {
            let pipe = ctx.pipeline(kernel, &[])?;
            let res = vec![Res::Buf(Slot::new(ctx.split(), &out, 0, bytes))];
            let list = vec![Dispatch::new(&pipe, &params, res, groups_for(INVOCATIONS))];
            record(ctx, enc, &list, None)
        })?;
        read_back(ctx, &out, 4)?;
        Ok(t.elapsed())
    }

    /// The throughput of `kind` on this adapter in GOPS (2 operations per multiply-add): the
    /// best of three dispatches of about `target` each, after one that compiles the kernel.
    /// `dot4I8Packed` needs the WGSL language feature (`AdapterReport::packed_int8_dot_product`).
    pub fn peak_gops(&self, kind: GpuPeak, target: Duration) -> Result<f64> {
        if kind == GpuPeak::Dot4I8 && !self.adapter_report().packed_int8_dot_product {
            return Err(Error::InvalidParameter(format!(
                "{} lacks dot4I8Packed",
                self.adapter_report().summary()
            )));
        }
        self.peak_run(kind, 1)?;
        // Double the steps until a dispatch takes a fifth of the target.
        let mut steps = 16u32;
        loop {
            let t = self.peak_run(kind, steps)?;
            if t * 5 >= target || steps >= 1 << 24 {
                let scale = target.as_secs_f64() / t.as_secs_f64().max(1e-6);
                steps = ((steps as f64 * scale) as u32).clamp(1, 1 << 26);
                break;
            }
            steps *= 2;
        }
        let mut best = 0f64;
        for _ in 0..3 {
            let t = self.peak_run(kind, steps)?.as_secs_f64().max(1e-9);
            let ops = INVOCATIONS * CHAINS * steps as u64 * kind.ops_per_step();
            best = best.max(ops as f64 / t / 1e9);
        }
        Ok(best)
    }
}
