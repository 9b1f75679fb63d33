//! The peak of the instruction a fast kernel is built on, measured on the calling thread: a
//! register-only loop (`x86::peak`), so that `squint bench` can print each path's fraction of
//! what its instruction allows on this machine (issue 13's "peaks in the same run").

use super::Isa;
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// A register-only loop of one instruction sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeakLoop {
    /// zmm `vpdpbusd` (AVX-512 VNNI): 64 u8·s8 products per instruction.
    DpbusdZmm,
    /// ymm `vpdpbusd` (AVX-VNNI, or EVEX on AVX-512 VNNI): 32 products per instruction.
    DpbusdYmm,
    /// ymm `vpmaddubsw` + `vpmaddwd` + `vpaddd` (AVX2 where no pair can saturate): 32 products.
    MaddubsYmm,
    /// ymm 2 × `vpmaddwd` + 2 × `vpaddd` (AVX2's exact emulation): 32 products.
    MaddwdYmm,
    /// zmm `vfmadd` (f32, AVX-512F): 16 multiply-adds per instruction.
    FmaZmm,
    /// ymm `vfmadd` (f32, AVX2 + FMA): 8 multiply-adds per instruction.
    FmaYmm,
    /// NEON `sdot` (AArch64 dot-product extension): 16 i8·i8 products per instruction.
    SdotNeon,
    /// NEON `fmla` on 4 f32 lanes: 4 multiply-adds per instruction.
    FmlaNeon,
}

impl PeakLoop {
    /// A short name (`vpdpbusd zmm`, …).
    pub fn name(self) -> &'static str {
        match self {
            PeakLoop::DpbusdZmm => "vpdpbusd zmm",
            PeakLoop::DpbusdYmm => "vpdpbusd ymm",
            PeakLoop::MaddubsYmm => "vpmaddubsw ymm",
            PeakLoop::MaddwdYmm => "vpmaddwd ymm",
            PeakLoop::FmaZmm => "vfmadd zmm",
            PeakLoop::FmaYmm => "vfmadd ymm",
            PeakLoop::SdotNeon => "sdot",
            PeakLoop::FmlaNeon => "fmla",
        }
    }

    /// Operations (2 per multiply-add) one step of one accumulator chain performs.
    fn ops_per_step(self) -> u64 {
        match self {
            PeakLoop::DpbusdZmm => 128,
            PeakLoop::DpbusdYmm | PeakLoop::MaddubsYmm | PeakLoop::MaddwdYmm => 64,
            PeakLoop::FmaZmm | PeakLoop::SdotNeon => 32,
            PeakLoop::FmaYmm => 16,
            PeakLoop::FmlaNeon => 8,
        }
    }

    /// The int8 loop of a GEMM kernel on `isa` (`maddubs`: AVX2's `vpmaddubsw` kernel); `None`
    /// for the portable path.
    pub fn int8(isa: Isa, maddubs: bool) -> Option<PeakLoop> {
        match isa {
            Isa::Avx512Vnni => Some(PeakLoop::DpbusdZmm),
            Isa::AvxVnni => Some(PeakLoop::DpbusdYmm),
            Isa::Avx2 if maddubs => Some(PeakLoop::MaddubsYmm),
            Isa::Avx2 => Some(PeakLoop::MaddwdYmm),
            Isa::NeonDot => Some(PeakLoop::SdotNeon),
            Isa::Portable => None,
        }
    }

    /// The f32 FMA loop of `isa`'s float kernels; `None` for the portable path.
    pub fn f32(isa: Isa) -> Option<PeakLoop> {
        match isa {
            Isa::Avx512Vnni => Some(PeakLoop::FmaZmm),
            Isa::AvxVnni | Isa::Avx2 => Some(PeakLoop::FmaYmm),
            Isa::NeonDot => Some(PeakLoop::FmlaNeon),
            Isa::Portable => None,
        }
    }

    /// Runs `iters` steps of every chain; returns a value depending on the result.
    fn run(self, iters: u64) -> Result<i64> {
        #[cfg(target_arch = "x86_64")]
        {
            use super::x86::peak as p;
            let has = |f: &str| match f {
                "vnni512" => Isa::Avx512Vnni.is_available(),
                "avxvnni" => std::arch::is_x86_feature_detected!("avxvnni"),
                "vnni256" => Isa::AvxVnni.is_available(),
                "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
                _ => Isa::Avx2.is_available(),
            };
            let seed = 0x0102_0304;
            // SAFETY: each loop runs only where its features were detected.
            let r = unsafe {
                match self {
                    PeakLoop::DpbusdZmm if has("vnni512") => p::dpbusd_zmm(iters, seed),
                    PeakLoop::DpbusdYmm if has("avxvnni") => p::dpbusd_ymm_vex(iters, seed),
                    PeakLoop::DpbusdYmm if has("vnni256") => p::dpbusd_ymm(iters, seed),
                    PeakLoop::MaddubsYmm if has("avx2") => p::maddubs_ymm(iters, seed),
                    PeakLoop::MaddwdYmm if has("avx2") => p::maddwd_ymm(iters, seed),
                    PeakLoop::FmaZmm if has("avx512f") => p::fma_zmm(iters, seed),
                    PeakLoop::FmaYmm if has("avx2") => p::fma_ymm(iters, seed),
                    _ => return Err(self.unavailable()),
                }
            };
            Ok(r)
        }
        #[cfg(target_arch = "aarch64")]
        {
            use super::aarch64::peak as p;
            let seed = 0x0102_0304;
            // SAFETY: `sdot` runs only where the dot-product extension was detected; NEON is
            // part of every AArch64 target Rust supports with `std`.
            let r = unsafe {
                match self {
                    PeakLoop::SdotNeon if Isa::NeonDot.is_available() => p::sdot(iters, seed),
                    PeakLoop::FmlaNeon => p::fmla(iters, seed),
                    _ => return Err(self.unavailable()),
                }
            };
            Ok(r)
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let _ = iters;
            Err(self.unavailable())
        }
    }

    fn unavailable(self) -> Error {
        Error::InvalidParameter(format!("this CPU cannot run {}", self.name()))
    }

    /// The loop's throughput on the calling thread, in GOPS (2 operations per multiply-add):
    /// the best of five runs of about `target` each.
    pub fn measure(self, target: Duration) -> Result<f64> {
        #[cfg(target_arch = "x86_64")]
        let chains = super::x86::peak::CHAINS as u64;
        #[cfg(target_arch = "aarch64")]
        let chains = super::aarch64::CHAINS as u64;
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let chains = 1;
        // Calibrate: double the steps until a run takes a tenth of the target.
        let mut iters = 1u64 << 12;
        loop {
            let t = Instant::now();
            std::hint::black_box(self.run(iters)?);
            if t.elapsed() * 10 >= target || iters >= 1 << 40 {
                let per_iter = t.elapsed().as_secs_f64() / iters as f64;
                iters = ((target.as_secs_f64() / per_iter.max(1e-12)) as u64).max(1);
                break;
            }
            iters *= 2;
        }
        let mut best = 0f64;
        for _ in 0..5 {
            let t = Instant::now();
            std::hint::black_box(self.run(iters)?);
            let s = t.elapsed().as_secs_f64().max(1e-9);
            best = best.max((iters * chains * self.ops_per_step()) as f64 / s / 1e9);
        }
        Ok(best)
    }
}

impl std::fmt::Display for PeakLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
