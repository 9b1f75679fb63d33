//! Fast CPU convolutions: an int8 conv bit-exact with [`super::reference`], and a fast float conv.
//!
//! # The int8 conv
//!
//! The reference computes, for every output, `acc = Σ_k (x_k − x_zp) · (w_k − w_zp)` over the
//! `K = Cin/groups · KH · KW` taps (padded taps contribute 0), then requantizes `acc` with an
//! [`Epilogue`]. The fast path computes the very same `acc` in a different, SIMD-friendly way
//! (gemmlowp style), then applies the same epilogue, vectorized but operation for operation
//! identical.
//!
//! ## Zero-point folding
//!
//! `vpdpbusd` (AVX512-VNNI / AVX-VNNI) multiplies **unsigned** bytes by **signed** bytes and adds
//! groups of four products into int32 lanes, without saturation. Map the activations to u8:
//!
//! ```text
//! quint8:  u = x            (stored byte),        z = x_zp
//! qint8:   u = x + 128      (stored byte ^ 0x80), z = x_zp + 128
//! so that  x − x_zp = u − z,   u ∈ [0, 255],   z ∈ [0, 255]   (x_zp inside the dtype range)
//! ```
//!
//! The weights stay the stored qint8 bytes `w` (always a valid s8, whatever the zero point).
//! With `w_zp = ζ` the zero point of the output channel:
//!
//! ```text
//! acc = Σ_k (u_k − z)(w_k − ζ)
//!     = Σ_k u_k·w_k  −  z·Σ_k w_k  −  ζ·Σ_k u_k  +  K·z·ζ
//!       └─ GEMM ─┘     └ packed ┘     └ row sum ┘    └ const ┘
//! ```
//!
//! * `Σ u·w` is the int8 GEMM (`M` = output pixels, `N` = output channels, `K`), computed by
//!   `vpdpbusd` (or an exact emulation on AVX2, or scalar code).
//! * `Σ_k w_k` per output channel is computed once, when the weights are packed.
//! * `Σ_k u_k` per output pixel (the activation "row sum") is only needed when some `ζ ≠ 0`
//!   (per-tensor affine weights); it is computed by the same GEMM kernel with an extra panel of
//!   all-one weights.
//! * Padded taps: the activation buffer holds `u = z` there, so `(u − z) = 0` exactly as in the
//!   reference, and the identity above (a sum over all `K` taps) stays exact.
//! * Channel padding (K is padded to a multiple of 4 by padding the input channels of a group):
//!   the padded weights are 0 in every panel (also the all-one panel), so those lanes add 0 to
//!   every term.
//!
//! All of this is evaluated in **wrapping** int32 arithmetic: the identity holds over the
//! integers, hence modulo 2^32, and the true `acc` fits int32 (the overflow check guarantees it
//! in [`PackedConv2d::run`]; [`PackedConv2d::run_acc`] falls back to the reference when the
//! worst case does not fit), so the wrapped result is the exact `acc`, even though intermediate
//! terms like `Σ u·w` may themselves wrap.
//!
//! ## Layout and kernels
//!
//! The conv runs *direct* (implicit im2col, no `K × M` matrix is built): each group's input is
//! repacked once per call into `[phase][Cin/4][Hph·Wph + slack][4]` bytes (four channels
//! interleaved per 32-bit lane, spatially padded with `z`). For stride 1 there is one phase,
//! the padded image; stride `(sh, sw)` splits the padded image into `sh·sw` phase planes by
//! row and column residue. Output pixels are enumerated in flat coordinates `q = oy·Wph + ox`
//! (the `Wph − Wout` extra columns per row are computed and discarded), so that for every tap
//! `(ky, kx)` the 16 lanes of one vector are 64 contiguous bytes at a constant offset (see
//! `int8::Geometry`).
//!
//! The AVX512-VNNI micro-kernel keeps 6 output channels × 4 zmm (64 pixels) = 24 int32
//! accumulators, loads 4 activation vectors per step of 4 `k`, and broadcasts 4 weight bytes per
//! channel; `vpdpbusd`'s 4-cycle latency needs ≥ 8–12 independent accumulators, 24 leave
//! headroom. The accumulators start at the folding constant `−z·Σw + K·z·ζ`. Weights are
//! packed at [`PackedConv2d::new`] into panels `[group][channel tile][tap][Cin/4][6][4]`. Work
//! is split over (batch, group, pixel tiles, channel-tile chunks) with rayon; the epilogue
//! ([`Epilogue::apply`], vectorized with the same float operations in the same order and the
//! same rounding, and for `fixed-point` with an exact 64-bit-lane emulation of the integer
//! formula; see `x86::requant::Requant512` in `x86/requant.rs`) is fused into the output
//! write. Pixel tiles are balanced whole vectors (the last tile is not padded to 64 pixels),
//! and a channel tile with fewer than 6 real channels runs a narrower kernel.
//!
//! Depthwise-like convs (`Cin/groups == 1`) use direct kernels instead (see the `depthwise`
//! module): on AVX512-VNNI, four kernel columns per `vpdpbusd` lane (same folding, with
//! `w − ζ` as the s8 weights when they fit), the epilogue fused; on AVX-VNNI the same with ymm
//! (unit strides), and on AVX2 with `vpmaddubsw` where no pair can saturate, else an exact
//! `vpmaddwd` kernel on i16 pairs; otherwise an f32 FMA kernel on `x − x_zp` and `w − ζ`,
//! exact because every partial sum is an integer of magnitude ≤ 2^24; an int32 kernel beyond
//! that. On `neon-dotprod` unit-stride convs run an `sdot` flat kernel (see *AArch64*
//! below). The portable path (and `neon-dotprod`'s other depthwise convs) multiplies
//! `x − x_zp` and `w − ζ` as int16 into int32 sums, in row loops compilers vectorize (where
//! the weights fit int16, as int8 weights always do): its f32 kernel would call
//! `f32::mul_add`, a library routine on targets without FMA.
//!
//! ISA paths, chosen at run time: `avx512-vnni` (zmm `vpdpbusd`), `avx-vnni` (ymm `vpdpbusd`,
//! VEX-encoded; EVEX-encoded on AVX512-VNNI CPUs without AVX-VNNI, which is how the path is
//! tested there), `avx2`, `neon-dotprod` (AArch64 with the dot-product extension: the int8
//! GEMM and unit-stride depthwise convs on `sdot`, the f32 GEMM and unit-stride depthwise
//! convs on `fmla`, see below; every other kernel as `portable`), and `portable` (plain
//! Rust). [`PackedConv2d::with_isa`] forces one, for tests and benchmarks (`squint
//! bench --isa avx2`).
//!
//! ## AArch64: `sdot` on shifted activations
//!
//! NEON's `sdot` multiplies signed bytes by signed bytes (4 products per int32 lane, 16 per
//! instruction, no saturation); Armv8.6's mixed-sign `usdot` is not on most ARM CPUs in use.
//! So the repack stores `s = u ^ 0x80` (`u − 128` read as i8, padding included) and the
//! panels' folding constants gain `128·Σ w` per lane: `Σ s·w + 128·Σ w = Σ u·w`, the same
//! GEMM term as on every path (the all-one row-sum panel likewise), exact in wrapping int32.
//! The micro-kernel keeps 4 channels × 16 pixels in 16 accumulators, one weight vector
//! (4 channels × 4 bytes) per step, each channel's bytes picked by `sdot`'s lane index (see
//! the `aarch64` module). Depthwise convs with unit strides and column dilation run the x86
//! flat kernel's scheme on `sdot` (`aarch64::dw_i8_flat_sdot`: the padded plane holds
//! `u ^ 0x80`, the initial value `(128 − z)·Σ w'`). The kernels run on x86 CI under
//! user-mode QEMU (`.ci/aarch64`), checked bit for bit against the reference by the same
//! sweeps.
//!
//! ## AVX2: `vpmaddubsw` only where it cannot saturate
//!
//! Without VNNI, the fast instruction is `vpmaddubsw`: u8 × s8 products, **adjacent pairs
//! summed in saturating int16**, then `vpmaddwd` by ones and `vpaddd` (ONNX Runtime's,
//! oneDNN's and FBGEMM's AVX2 kernels; with full-range activations and weights a pair sum
//! reaches 2·255·127 = 64770 and saturates, which is why PyTorch's x86 preset uses 7-bit
//! activations and ONNX Runtime recommends 7-bit weights there). squint stays exact: when the
//! weights are packed it records, over every pair the instruction adds, the largest sum of the
//! positive weights `P` and of the negative ones' magnitudes `N`; a call whose u8 activations
//! (and zero point, the padding value) reach at most `A` runs `vpmaddubsw` only if
//! `A·P ≤ 32767` and `A·N ≤ 32768`, which bounds every pair sum inside int16. That holds for
//! every 7-bit input (`A ≤ 127`: `127·256 = 32512`) and for weights whose pairs sum to at most
//! 128 in magnitude. Otherwise it runs the exact emulation: u8 and s8 split into even/odd 16-bit
//! halves and `vpmaddwd`, whose pair sums ≤ 2·255·128 cannot saturate (the weights are packed
//! both ways). [`PackedConv2d::kernel_name`] says which one a call takes.
//!
//! # The float conv
//!
//! [`conv2d_f32`]: the same direct structure (phase planes, one plane per input channel) with
//! an f32 GEMM micro-kernel using FMA (6 channels × 4 zmm of 16 pixels on AVX-512, 6 × 2 ymm on
//! AVX2, 6 × 4 NEON vectors of 4 on `neon-dotprod`); depthwise-like convs use a direct row
//! kernel. Summation order, identical on every ISA path (the portable path uses
//! `f32::mul_add`), so that all paths give the same bits: for each output,
//! `acc = 0; for (ky, kx) in row-major order { for ci in group { acc = fma(x, w, acc) } }`, with
//! padded taps included as `fma(0, w, acc)`, then `y = acc + bias` (one f32 add). The f64
//! reference sums the same products exactly and rounds once, so results differ from it in the
//! last bits (relative error ≲ K·2^-24 of Σ|x·w|).

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod add;
mod depthwise;
mod float;
mod int8;
#[cfg(target_arch = "x86_64")]
mod nhwc;
mod peak;
mod portable;
mod quantize;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::error::{Error, Result};
use crate::quant::{weight_abs_sums, Epilogue, QParams, WeightQParams};
use crate::shape::{ConvParams, ConvShape};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use add::qlinear_add_avx2;
pub(crate) use float::dot_lanes_f64;
pub use float::{conv2d_f32_with_isa, F32Clamp, PackedConvF32};
pub use peak::PeakLoop;
pub(crate) use quantize::wide;
pub use quantize::{quantize_slice, quantize_slice_ort};

/// The largest explicit thread count the fast kernels accept (see [`FastConvOptions::threads`]).
pub const MAX_THREADS: usize = 1024;

/// Options of the fast CPU kernels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FastConvOptions {
    /// Worker threads: `None` = the current rayon pool (outside any, the global one: one per
    /// core by default); `Some(1)` runs on the calling thread; `Some(n)` runs on a cached
    /// local pool of `n` threads (built by [`pool_builder`]: pinned), for `n` in
    /// `1..=`[`MAX_THREADS`] (other counts are an [`Error::InvalidParameter`]).
    pub threads: Option<usize>,
    /// Split every conv across the threads, however small. By default (`false`) a conv with
    /// less work than two threads run faster than one (a measured number of multiply-adds per
    /// kernel family: 20 M for the int8 GEMM convs, 8 M for the f32 ones, 1.5 M and 1.2 M for
    /// the int8 and f32 depthwise convs; a sixteenth of that for a caller on a worker of the
    /// pool, see [`on_pool`]) runs on the calling thread alone; tests set this to cover the
    /// parallel partitioning on small shapes. Results never depend on it.
    pub split_small: bool,
}

impl FastConvOptions {
    /// Options with an explicit thread count.
    pub fn with_threads(threads: usize) -> Self {
        FastConvOptions {
            threads: Some(threads),
            split_small: false,
        }
    }

    /// Options with the thread count `threads` (`None`: the global pool) that split every
    /// conv across them, however small (see [`FastConvOptions::split_small`]).
    pub fn splitting_small(threads: Option<usize>) -> Self {
        FastConvOptions {
            threads,
            split_small: true,
        }
    }

    /// Checks the thread count (`1..=`[`MAX_THREADS`]) and builds the local thread pool it
    /// needs, so that the kernels never fail for it later. A pool the system cannot create
    /// (e.g. too many threads for its limits) is an [`Error::InvalidParameter`] too. Every
    /// fast kernel calls this first.
    pub fn validate(&self) -> Result<()> {
        match self.threads {
            None | Some(1) => Ok(()),
            Some(t) if t == 0 || t > MAX_THREADS => Err(Error::InvalidParameter(format!(
                "thread count must be between 1 and {MAX_THREADS}, got {t}"
            ))),
            Some(t) => pool(t).map(drop),
        }
    }

    /// The options a conv of `macs` multiply-adds of the kernel family `grain` runs with: one
    /// thread (the calling one) under the family's [`Grain`] (unless `split_small`), these
    /// options otherwise. Waking a pool from outside and joining it costs tens of
    /// microseconds on a loaded or virtual machine (measured: a 1x32x7x7 int8 conv took 2.6
    /// µs on one thread and 28–40 µs on two), more than a small layer's whole run. A caller
    /// that already runs on a worker of the pool (a whole model run by [`on_pool`]) forks
    /// and joins for far less (the idle worker steals half the work, or the caller runs it
    /// itself), so its grain is [`IN_POOL_GRAIN_DIVISOR`] times smaller. The result never
    /// depends on the thread count.
    fn for_work(&self, macs: u64, grain: Grain) -> FastConvOptions {
        if self.split_small || thread_count(self.threads) <= 1 {
            return self.clone();
        }
        let grain = if on_a_worker(self.threads) {
            grain as u64 / IN_POOL_GRAIN_DIVISOR
        } else {
            grain as u64
        };
        if macs < grain {
            FastConvOptions::with_threads(1)
        } else {
            self.clone()
        }
    }
}

/// How much smaller a kernel family's grain (see [`FastConvOptions::split_small`]) is for a
/// caller already on a worker of the pool its work runs in. Measured on the MobileNetV2-shaped 224x224 model (`bench --model --threads 2`,
/// each conv forked from a worker), the int8 run took 3.7 ms with the grains of an outside
/// caller, 3.1 ms with a quarter of them, 2.8–3.0 ms with a sixteenth, a sixty-fourth or
/// none (one thread: 3.8 ms); a sixteenth still keeps the smallest layers (a 1x32x7x7 conv)
/// on the calling thread.
pub const IN_POOL_GRAIN_DIVISOR: u64 = 16;

/// Whether the calling thread is a worker of the pool that `threads` (see
/// [`FastConvOptions::threads`]) runs on.
fn on_a_worker(threads: Option<usize>) -> bool {
    match threads {
        None => rayon::current_thread_index().is_some(),
        Some(1) => false,
        Some(t) => pool(t).is_ok_and(|p| p.current_thread_index().is_some()),
    }
}

/// Runs `f` on a worker of the pool that `threads` (see [`FastConvOptions::threads`]) runs
/// on, or on the calling thread where that is one already (or `threads` is one). Every
/// parallel loop `f` starts on that pool then forks and joins from inside it, which costs a
/// fraction of a join from outside (see [`IN_POOL_GRAIN_DIVISOR`]): a model's run calls
/// its ops this way (see `FastCpuBackend::run`). While `f` runs, the pool's other workers
/// spin for its forks rather than sleep (`with_spinning_workers`; `SQUINT_SPIN=0`: not).
/// A pool that cannot be built runs `f` here.
pub fn on_pool<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> R {
    match threads {
        Some(1) => f(),
        None if rayon::current_thread_index().is_some() => with_spinning_workers(f),
        // The current pool (the global one outside any pool).
        None => rayon::scope(|_| with_spinning_workers(f)),
        Some(t) => match pool(t) {
            Ok(p) => p.install(|| with_spinning_workers(f)),
            Err(_) => f(),
        },
    }
}

/// Runs `f` on this worker while the pool's other workers wait for its parallel loops by
/// spinning rather than sleeping, as ONNX Runtime's workers do during a run (unless the
/// environment variable `SQUINT_SPIN` is `0`). A sleeping rayon worker takes 22–40 µs to
/// pick up a fork, a spinning one under a microsecond (measured from inside a pool of two
/// after idle gaps of 20 µs to 5 ms, 2-vCPU KVM guest, Intel Xeon; rayon's workers fall
/// asleep about 20 µs after their last job): the int8 convs of a MobileNetV2 take 15–80 µs
/// each, and with sleeping workers its run on two threads was no faster than on one.
///
/// Each other worker runs a spinner (a broadcast job of a scope around `f`) that executes
/// the pool's jobs (`rayon::yield_now`) until `f` returns, or until it has found no job for
/// [`SPIN_IDLE`]: a spinner may start inside a worker's wait for some other job, which
/// cannot resume beneath it, and the bound keeps that from waiting on `f` (or forever, where
/// `f` waits on it). One such region at a time in the process (a run that finds another
/// spinning runs without); the spinning costs CPU time while `f` runs, nothing after.
fn with_spinning_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static SPINNING: AtomicBool = AtomicBool::new(false);
    let disabled = turned_off("SQUINT_SPIN");
    if disabled || rayon::current_num_threads() < 2 || SPINNING.swap(true, Ordering::AcqRel) {
        return f();
    }
    /// Stores its value into its flag when dropped (a panic's unwinding included).
    struct SetOnDrop<'a>(&'a AtomicBool, bool);
    impl Drop for SetOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(self.1, Ordering::Release);
        }
    }
    // Frees the region after the scope, which waits for every spinner.
    let _region = SetOnDrop(&SPINNING, false);
    let done = AtomicBool::new(false);
    let me = rayon::current_thread_index();
    rayon::in_place_scope(|s| {
        s.spawn_broadcast(|_, ctx| {
            // This worker runs `f`; a worker that takes its broadcast after `f` returned
            // finds `done` set and returns at once.
            if Some(ctx.index()) != me {
                spin_for_jobs(&done);
            }
        });
        let _done = SetOnDrop(&done, true);
        f()
    })
}

/// Whether the environment variable `name` turns its feature off (is `0`).
fn turned_off(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim() == "0")
}

/// How long a spinner of [`with_spinning_workers`] polls without finding a job before it
/// returns (and its worker may sleep): longer than the gaps between a model's parallel
/// loops (an elementwise op, a small conv run on one thread), short against a run.
const SPIN_IDLE: std::time::Duration = std::time::Duration::from_micros(500);

/// Executes the pool's jobs until `done` is set or none was found for [`SPIN_IDLE`]. Between
/// two looks for a job it pauses 16 times (`spin_loop`, a few hundred nanoseconds): each
/// look reads the other workers' deques, whose owners write them at every fork.
fn spin_for_jobs(done: &AtomicBool) {
    let mut last = std::time::Instant::now();
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            last = std::time::Instant::now();
        } else if last.elapsed() > SPIN_IDLE {
            return;
        } else {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
        }
    }
}

/// The least work, in multiply-adds, that two threads run faster than one, per kernel family
/// (see [`FastConvOptions::for_work`]): 25–50 µs of one thread's work. Measured on a 2-core
/// AMD EPYC (Zen 4) with AVX-512 VNNI by timing 3x3 convs from 7x7 to 112x112 planes on one
/// and two threads (`squint bench --threads 2` against `--threads 1`, and the same sweep
/// over channel counts). On slower ISAs (AVX2 runs at about half the rate) the same work
/// takes longer, so they split no later than they should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum Grain {
    /// The int8 GEMM convs (about 400 multiply-adds per ns on one AVX-512 VNNI thread): a
    /// 1x64x14x14 conv, 64 outputs, 7.2 M, lost on two threads, 1x32x56x56, 29 M, won.
    Int8Gemm = 20_000_000,
    /// The f32 GEMM convs (about 110 per ns): 1x64x14x14 and 1x32x28x28 convs, 7.2 M, tied
    /// or lost on two threads.
    F32Gemm = 8_000_000,
    /// The int8 depthwise convs (about 60 per ns): 128 channels of 28x28 (0.9 M) lost or tied
    /// on two threads, 256 channels of 28x28 (1.8 M) won.
    Int8Depthwise = 1_500_000,
    /// The f32 depthwise convs (about 30 per ns).
    F32Depthwise = 1_200_000,
}

/// An instruction-set path of the fast kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512 with VNNI (zmm `vpdpbusd`); needs avx512f, avx512bw, avx512vl, avx512vnni, fma.
    Avx512Vnni,
    /// ymm `vpdpbusd`: AVX-VNNI (VEX encoding; needs avxvnni, avx2, fma), or, on CPUs with
    /// AVX512-VNNI but no AVX-VNNI, the same kernel with the EVEX encoding (avx512vl).
    AvxVnni,
    /// AVX2 + FMA (exact `vpmaddwd` emulation of the u8×s8 dot product).
    Avx2,
    /// AArch64 NEON with the dot-product extension (`sdot`, Armv8.2-A and later: Cortex-A76+,
    /// Neoverse N1+, Apple M1+): the int8 GEMM and unit-stride depthwise convs on `sdot`, the
    /// f32 GEMM and unit-stride depthwise convs on `fmla`, everything else as the portable
    /// path.
    NeonDot,
    /// Scalar code, any CPU.
    Portable,
}

impl Isa {
    /// Every path, fastest first.
    pub const ALL: [Isa; 5] = [
        Isa::Avx512Vnni,
        Isa::AvxVnni,
        Isa::Avx2,
        Isa::NeonDot,
        Isa::Portable,
    ];

    /// The name reported by [`detected_isa`].
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::AvxVnni => "avx-vnni",
            Isa::Avx2 => "avx2",
            Isa::NeonDot => "neon-dotprod",
            Isa::Portable => "portable",
        }
    }

    /// Whether this is one of the x86 SIMD paths (AVX-512 VNNI, AVX-VNNI, AVX2), whose
    /// kernels share layouts and helpers that the other paths do not have.
    pub(crate) fn is_x86_simd(self) -> bool {
        matches!(self, Isa::Avx512Vnni | Isa::AvxVnni | Isa::Avx2)
    }

    /// Parses a path name ([`Isa::name`]: `avx512-vnni`, `avx-vnni`, `avx2`, `neon-dotprod`,
    /// `portable`) and
    /// checks that this CPU can run it.
    pub fn parse(name: &str) -> Result<Isa> {
        let isa = Isa::ALL
            .into_iter()
            .find(|i| i.name() == name)
            .ok_or_else(|| Error::UnknownName {
                kind: "ISA path",
                name: name.to_string(),
                expected: Isa::ALL.map(Isa::name).join(", "),
            })?;
        isa.check_available()?;
        Ok(isa)
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && (std::arch::is_x86_feature_detected!("avxvnni")
                        || (std::arch::is_x86_feature_detected!("avx512f")
                            && std::arch::is_x86_feature_detected!("avx512vl")
                            && std::arch::is_x86_feature_detected!("avx512vnni")))
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every path this CPU can run, fastest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The fastest path this CPU can run (detected once).
    pub fn detect() -> Isa {
        if let Some(&isa) = Isa::ALL.get(ISA_OVERRIDE.load(Ordering::Relaxed) as usize) {
            return isa;
        }
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            Isa::ALL
                .into_iter()
                .find(|i| i.is_available())
                .unwrap_or(Isa::Portable)
        })
    }

    /// Makes this path the one [`Isa::detect`] returns for the rest of the process (after
    /// checking that this CPU runs it): every layer packed afterwards without an explicit
    /// path uses it, a whole model's convs included. For benchmarks (`squint bench --model
    /// --isa avx2` times a model on the AVX2 kernels of an AVX-512 machine), as PyTorch's
    /// `ATEN_CPU_CAPABILITY` and oneDNN's `ONEDNN_MAX_CPU_ISA` are; layers already packed keep
    /// their path. Results never depend on the path.
    pub fn set_process_default(self) -> Result<()> {
        self.check_available()?;
        let i = Isa::ALL
            .iter()
            .position(|&i| i == self)
            .expect("every path is in ALL");
        ISA_OVERRIDE.store(i as u8, Ordering::Relaxed);
        Ok(())
    }

    fn check_available(self) -> Result<()> {
        if self.is_available() {
            Ok(())
        } else {
            Err(Error::InvalidParameter(format!(
                "ISA path '{}' is not supported by this CPU (available: {})",
                self.name(),
                Isa::available()
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The index in [`Isa::ALL`] of the path set by [`Isa::set_process_default`] (none: past the
/// end).
static ISA_OVERRIDE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);

/// The ISA path the fast kernels use on this CPU: `"avx512-vnni"`, `"avx-vnni"`, `"avx2"`, `"neon-dotprod"` or
/// `"portable"`.
pub fn detected_isa() -> &'static str {
    Isa::detect().name()
}

/// Runs `f(i)` for `i in 0..n`, in parallel according to `threads` (see
/// [`FastConvOptions::threads`]).
fn par_for(threads: Option<usize>, n: usize, f: impl Fn(usize) + Sync + Send) {
    match threads {
        _ if n <= 1 => (0..n).for_each(f),
        Some(1) => (0..n).for_each(f),
        None => (0..n).into_par_iter().for_each(f),
        // The pool was built by `FastConvOptions::validate`; were it missing, the work runs
        // on the calling thread (same results: they never depend on the thread count).
        Some(t) => match pool(t) {
            Ok(p) => p.install(|| (0..n).into_par_iter().for_each(f)),
            Err(_) => (0..n).for_each(f),
        },
    }
}

/// The chunk of [`par_bytes`]: 4 KiB. With the pool's workers spinning during a model run
/// (see [`on_pool`]), MobileNetV2's int8 adds (8–75 KB each) took 0.23–0.25 ms in all on two
/// threads with 4 KiB chunks, 0.27–0.28 with 8 KiB and 0.34–0.43 with 32 KiB (one thread:
/// 0.33; 2-vCPU KVM guest, Intel Xeon, three alternated runs each).
pub const PAR_BYTES_CHUNK: usize = 1 << 12;

/// `n` bytes, each chunk `out[start..start + len]` written by `f(start, chunk)` (which must
/// write every byte of its chunk; they start zeroed), in chunks of [`PAR_BYTES_CHUNK`] split
/// across the current pool's threads where the caller is one of its workers (a model run by
/// [`on_pool`]) and there are at least two chunks, else in one call on this thread. For
/// elementwise ops between a model's convs (byte-table maps and gathers), which would
/// otherwise leave the other threads idle.
pub fn par_bytes(n: usize, f: impl Fn(usize, &mut [u8]) + Sync + Send) -> Vec<u8> {
    const CHUNK: usize = PAR_BYTES_CHUNK;
    let mut out = vec![0u8; n];
    let workers = rayon::current_thread_index().is_some() && rayon::current_num_threads() > 1;
    if workers && n >= 2 * CHUNK {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, c)| f(i * CHUNK, c));
    } else {
        f(0, &mut out);
    }
    out
}

/// The number of threads `threads` stands for.
fn thread_count(threads: Option<usize>) -> usize {
    match threads {
        Some(t) => t.max(1),
        None => rayon::current_num_threads(),
    }
}

/// A rayon pool builder of `t` worker threads named `squint-conv-{i}`, each pinned to a CPU
/// of its own where this thread may run on at least `t` CPUs: worker `i` to the `i`-th of
/// them (unpinned otherwise, or where the environment variable `SQUINT_PIN_THREADS` is
/// `0`). Every local pool of the fast kernels (see [`FastConvOptions::threads`]) is built
/// this way, and the `squint` tool builds its global pool so.
///
/// Why pin: rayon's idle workers sleep, and Linux wakes a sleeping worker on the CPU of the
/// thread that wakes it when it deems that cheap, so an unpinned pool of two often ends up
/// with both workers on one CPU, taking turns, while the other CPU idles (seen with `perf
/// sched timehist` on a 2-vCPU KVM guest, Intel Xeon: `squint bench --threads 2` then ran
/// its convs at one thread's speed or below, and not only at first: once paired, the
/// workers stayed paired for the rest of the run). Pinned, the same bench in alternation
/// with unpinned runs: 1x256x14x14 3x3 int8 0.22–0.28 ms against 0.42–0.43, f32 0.83–1.12
/// against 1.56–1.72; 1x64x56x56 int8 0.23–0.41 against 0.47–0.71. ONNX Runtime's workers
/// spin rather than sleep, so stay on their CPUs; OpenMP runtimes pin with
/// `OMP_PROC_BIND`. A pinned worker cannot move off a CPU that another busy process
/// shares; results never depend on it.
pub fn pool_builder(t: usize) -> rayon::ThreadPoolBuilder {
    let disabled = turned_off("SQUINT_PIN_THREADS");
    let cpus = pin_plan(t, disabled, core_affinity::get_core_ids());
    rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .thread_name(|i| format!("squint-conv-{i}"))
        .start_handler(move |i| {
            if let Some(&cpu) = cpus.as_ref().and_then(|c| c.get(i)) {
                // A failure leaves the worker unpinned: slower at worst, same results.
                core_affinity::set_for_current(cpu);
            }
        })
}

/// The CPUs the `t` workers of a pool are pinned to, worker `i` to the `i`-th (see
/// [`pool_builder`]): the first `t` of `cpus` (those this thread may run on), where there
/// are at least `t` and pinning is not `disabled`.
fn pin_plan(
    t: usize,
    disabled: bool,
    cpus: Option<Vec<core_affinity::CoreId>>,
) -> Option<Vec<core_affinity::CoreId>> {
    let cpus = cpus.filter(|c| !disabled && c.len() >= t)?;
    Some(cpus[..t].to_vec())
}

/// A cached local rayon pool of `t` threads ([`pool_builder`]); an error if the system
/// cannot create it.
fn pool(t: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&t) {
        return Ok(p.clone());
    }
    let p = pool_builder(t).build().map_err(|e| {
        Error::InvalidParameter(format!("cannot start a pool of {t} CPU threads: {e}"))
    })?;
    let p = Arc::new(p);
    pools.insert(t, p.clone());
    Ok(p)
}

/// A raw pointer that may cross threads. Every use writes a region no other task touches (the
/// callers document why).
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: the pointer is only dereferenced on disjoint regions by the tasks of one parallel
// loop, while the owning buffer outlives the loop.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The mutable slice `[off, off + len)` of the buffer.
    ///
    /// # Safety
    /// The range must lie inside the buffer, and no other live reference may overlap it.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, off: usize, len: usize) -> &mut [T] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(off), len) }
    }
}

/// How the weights are laid out for the kernels.
enum Kind {
    /// `Cin/groups == 1`: direct per-channel kernel; `(w − ζ)` per (output channel, tap),
    /// wrapping int32.
    Depthwise {
        /// `[c_out][kh*kw]`.
        wprime: Vec<i32>,
        /// For the VNNI kernels (AVX512-VNNI, AVX-VNNI, and AVX2's `vpmaddubsw` version; when
        /// `depthwise::vnni_eligible` and every `w − ζ` is a valid i8): per output channel and
        /// kernel row, 1, 2 or 4 lanes of four `w − ζ` bytes along the row (0 past the kernel).
        vnni: Option<Vec<i32>>,
        /// The int16 pair bounds of the `vnni` lanes (AVX2's `vpmaddubsw` runs where they
        /// prove it exact for a call's activations: `depthwise::maddubs_exact`); computed per
        /// call, they were a quarter of a 960x7x7 layer's time.
        pairs: int8::PairBounds,
        /// The weights of the channels-in-lanes kernel (`nhwc::pack_depthwise`, from `vnni`),
        /// for small output planes on AVX-512 VNNI; packed on the first call that uses them.
        #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
        nhwc: std::sync::OnceLock<Vec<i32>>,
        /// The `w − ζ` as f32 for the channels-in-lanes f32 kernel (`depthwise::pack_lanes`),
        /// which runs the small planes on AVX2 and AVX-VNNI; packed on the first call that
        /// uses them.
        lanes_f32: std::sync::OnceLock<Vec<f32>>,
    },
    /// The blocked GEMM.
    Gemm(int8::Panels),
}

/// Prepacked int8 conv weights for one layer: packed once (at convert time) and reused for
/// every call. Holds the layer's epilogue too.
pub struct PackedConv2d {
    w_dims: [usize; 4],
    params: ConvParams,
    isa: Isa,
    epi: Epilogue,
    w_qp: WeightQParams,
    /// The stored weights (OIHW), for the fallback paths.
    weights: Vec<i8>,
    /// `Σ_k |w − ζ|` per output channel (the overflow bound of [`Epilogue::check_accumulator`]).
    sum_abs: Vec<i128>,
    /// `Σ_k w` per output channel, wrapped to int32.
    wsum: Vec<i32>,
    /// `ζ` per output channel.
    wzp: Vec<i32>,
    /// Whether some `ζ ≠ 0`.
    any_wzp: bool,
    kind: Kind,
    /// The GEMM's per-call constants for the last input qparams (a model's layer sees the
    /// same ones every call).
    call_cache: Mutex<Option<(QParams, Arc<CallConsts>)>>,
    /// The largest input offset bound (`QRange::max_offset` of the input qparams) the
    /// accumulator check has passed for, 0 before the first: every channel's bound grows with
    /// it, so the check passes for every smaller one too (see [`PackedConv2d::run_into`]).
    checked_offset: AtomicU64,
    /// Which GEMM layout runs (tests force each; only AVX-512 VNNI has a choice).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    gemm_layout: GemmLayout,
}

/// One 64-byte cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A buffer of whole cache lines: the packed weights of the channels-in-lanes kernels, whose
/// 64-byte rows are read with zmm loads that must not straddle two lines (measured: up to 7% of
/// the f32 kernel's time on a 28×28 plane).
#[derive(Debug, Clone)]
pub(crate) struct Lines(Vec<Line>);

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Lines {
    /// `bytes` zero bytes (rounded up to a line).
    pub(super) fn zeroed(bytes: usize) -> Lines {
        Lines(vec![Line([0; 64]); bytes.div_ceil(64)])
    }

    /// The buffer as bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `Line` is 64 plain bytes (`repr(C)`, no padding).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 64) }
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; every bit pattern is a valid `Line`.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 64) }
    }

    /// The buffer as f32 values (64-byte aligned, so 4-byte aligned).
    pub(super) fn f32s(&self) -> &[f32] {
        // SAFETY: the lines are 64-byte aligned and hold whole f32s; every bit pattern is an f32.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 16) }
    }

    pub(super) fn f32s_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `f32s`.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 16) }
    }
}

/// The GEMM conv's layout: flat output positions in the lanes (the default), or output
/// channels in the lanes (`nhwc`, one group; int8: the x86 paths, on AVX2 where `vpmaddubsw`
/// is exact, and symmetric weights only; f32: AVX-512 and AVX2), chosen per call by lane
/// efficiency (`Auto`) or forced (for tests and benchmarks). The int8 depthwise conv on
/// AVX-512 VNNI follows it too: channel by channel (`Flat`) or channels in the lanes
/// (`Nhwc`, `nhwc::depthwise_quads`, where it applies), chosen by output plane size (`Auto`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemmLayout {
    /// The layout that wastes fewer lanes on the call's shape.
    #[default]
    Auto,
    /// Always the flat layout.
    Flat,
    /// The channels-in-lanes layout wherever it applies.
    Nhwc,
}

impl GemmLayout {
    /// Whether the channels-in-lanes layout runs, `prefer` deciding for `Auto`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn nhwc(self, prefer: impl FnOnce() -> bool) -> bool {
        match self {
            GemmLayout::Auto => prefer(),
            GemmLayout::Flat => false,
            GemmLayout::Nhwc => true,
        }
    }
}

/// Constants of the int8 GEMM conv that depend only on the input qparams: the folding
/// constant `−z·Σw + K·z·ζ` per output channel, and on AVX-512 VNNI the epilogue constants per
/// output channel (`None` when some channel needs the scalar epilogue).
pub(super) struct CallConsts {
    pub(super) corr0: Vec<i32>,
    #[cfg(target_arch = "x86_64")]
    pub(super) requant: Option<Vec<x86::Requant512>>,
    /// The same constants on the ymm paths (AVX-VNNI, AVX2), for their GEMM tiles'
    /// epilogue (`x86::requant_tile_avx2`); `None` elsewhere or where a channel's formula is
    /// not a float one with finite constants.
    #[cfg(target_arch = "x86_64")]
    pub(super) requant_ymm: Option<Vec<x86::Requant512>>,
}

impl std::fmt::Debug for PackedConv2d {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedConv2d")
            .field("w_dims", &self.w_dims)
            .field("params", &self.params)
            .field("isa", &self.isa)
            .field("formula", &self.epi.formula)
            .field(
                "kind",
                &match self.kind {
                    Kind::Depthwise { .. } => "depthwise",
                    Kind::Gemm(_) => "gemm",
                },
            )
            .finish()
    }
}

impl PackedConv2d {
    /// Packs the qint8 weights `w` (OIHW, `w_dims`) of a conv with hyperparameters `params` and
    /// requantization epilogue `epi`, for the fastest ISA path of this CPU.
    pub fn new(
        w: &[i8],
        w_dims: [usize; 4],
        w_qp: &WeightQParams,
        epi: &Epilogue,
        params: ConvParams,
    ) -> Result<Self> {
        Self::with_isa(w, w_dims, w_qp, epi, params, Isa::detect())
    }

    /// Like [`Self::new`], for a given ISA path (errors if this CPU cannot run it). Meant for
    /// tests and benchmarks.
    pub fn with_isa(
        w: &[i8],
        w_dims: [usize; 4],
        w_qp: &WeightQParams,
        epi: &Epilogue,
        params: ConvParams,
        isa: Isa,
    ) -> Result<Self> {
        isa.check_available()?;
        epi.validate()?;
        let [c_out, cig, kh, kw] = w_dims;
        if w_dims.contains(&0) {
            return Err(Error::Shape(format!(
                "weight shape {w_dims:?} has a zero-sized dimension"
            )));
        }
        // A 1-pixel input with enough padding validates params and the weight shape.
        params.validate()?;
        let too_large = || Error::Shape(format!("weight shape {w_dims:?} is too large"));
        let probe = [
            1,
            cig.checked_mul(params.groups).ok_or_else(too_large)?,
            kh,
            kw,
        ];
        let mut p = params;
        p.padding = [
            params.padding[0].max(params.dilation[0].checked_mul(kh).ok_or_else(too_large)?),
            params.padding[1].max(params.dilation[1].checked_mul(kw).ok_or_else(too_large)?),
        ];
        let s = ConvShape::new(probe, w_dims, p)?;
        if w.len() != s.weight_len() {
            return Err(Error::Shape(format!(
                "weight has {} elements, its shape {w_dims:?} needs {}",
                w.len(),
                s.weight_len()
            )));
        }
        w_qp.check_channels(c_out)?;
        if epi.channels.len() != c_out {
            return Err(Error::Shape(format!(
                "epilogue has {} channels, the conv has {c_out} output channels",
                epi.channels.len()
            )));
        }
        let k = s.k();
        let wzp: Vec<i32> = (0..c_out).map(|o| w_qp.zero_point(o)).collect();
        let sum_abs = weight_abs_sums(w, w_qp, c_out, k);
        let wsum: Vec<i32> = w
            .chunks_exact(k)
            .map(|row| row.iter().map(|&v| v as i64).sum::<i64>() as i32)
            .collect();
        let any_wzp = wzp.iter().any(|&z| z != 0);
        let kind = if cig == 1 {
            let taps = kh * kw;
            let mut wprime = Vec::with_capacity(c_out * taps);
            for (o, row) in w.chunks_exact(taps).enumerate() {
                wprime.extend(row.iter().map(|&v| (v as i32).wrapping_sub(wzp[o])));
            }
            let vnni = (depthwise::vnni_eligible(isa, &params, kw)
                && wprime.iter().all(|&v| i8::try_from(v).is_ok()))
            .then(|| depthwise::pack_vnni(&wprime, c_out, kh, kw));
            let pairs = vnni
                .as_deref()
                .map_or_else(Default::default, depthwise::pair_bounds);
            Kind::Depthwise {
                wprime,
                vnni,
                pairs,
                nhwc: std::sync::OnceLock::new(),
                lanes_f32: std::sync::OnceLock::new(),
            }
        } else {
            Kind::Gemm(int8::Panels::pack(w, &s, isa, any_wzp))
        };
        Ok(PackedConv2d {
            w_dims,
            params,
            isa,
            epi: epi.clone(),
            w_qp: w_qp.clone(),
            weights: w.to_vec(),
            sum_abs,
            wsum,
            wzp,
            any_wzp,
            kind,
            call_cache: Mutex::new(None),
            checked_offset: AtomicU64::new(0),
            gemm_layout: GemmLayout::Auto,
        })
    }

    /// The ISA path this packing runs on.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The weight shape `[O, I, KH, KW]`.
    pub fn weight_dims(&self) -> [usize; 4] {
        self.w_dims
    }

    /// The conv hyperparameters.
    pub fn params(&self) -> ConvParams {
        self.params
    }

    /// The requantization epilogue.
    pub fn epilogue(&self) -> &Epilogue {
        &self.epi
    }

    fn shape(&self, x: &[u8], x_dims: [usize; 4]) -> Result<ConvShape> {
        let s = ConvShape::new(x_dims, self.w_dims, self.params)?;
        if x.len() != s.input_len() {
            return Err(Error::Shape(format!(
                "input has {} elements, the conv shape needs {}",
                x.len(),
                s.input_len()
            )));
        }
        Ok(s)
    }

    /// Whether the input zero point lies in its dtype's range (the fast paths need it; other
    /// inputs go to the reference).
    fn zp_in_range(x_qp: &QParams) -> bool {
        x_qp.dtype.full_range().contains(x_qp.zero_point)
    }

    /// The same layer with its int8 GEMM layout forced (see [`GemmLayout`]; tests).
    #[doc(hidden)]
    pub fn with_gemm_layout(mut self, layout: GemmLayout) -> Self {
        self.gemm_layout = layout;
        self
    }

    /// The [`CallConsts`] of input qparams `x_qp`, cached for the last qparams seen.
    fn call_consts(&self, x_qp: &QParams) -> Arc<CallConsts> {
        let mut cache = self.call_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((qp, c)) = cache.as_ref() {
            if qp == x_qp {
                return c.clone();
            }
        }
        let (_, zi) = int8::flip_and_z(x_qp);
        let k = self.k() as i32;
        let corr0 = (0..self.wsum.len())
            .map(|o| {
                (zi.wrapping_mul(self.wsum[o]))
                    .wrapping_neg()
                    .wrapping_add(k.wrapping_mul(zi).wrapping_mul(self.wzp[o]))
            })
            .collect();
        let c = Arc::new(CallConsts {
            corr0,
            #[cfg(target_arch = "x86_64")]
            requant: match self.isa {
                Isa::Avx512Vnni => (0..self.wsum.len())
                    .map(|o| x86::Requant512::new(&self.epi, o, self.acc_bound(x_qp, o)))
                    .collect(),
                _ => None,
            },
            #[cfg(target_arch = "x86_64")]
            requant_ymm: match self.isa {
                Isa::AvxVnni | Isa::Avx2 => (0..self.wsum.len())
                    .map(|o| {
                        x86::Requant512::new(&self.epi, o, self.acc_bound(x_qp, o))
                            .filter(|k| k.ymm_tile_ready())
                    })
                    .collect(),
                _ => None,
            },
        });
        *cache = Some((*x_qp, c.clone()));
        c
    }

    /// Requantizes the accumulators `acc` of output channel `o` into stored bytes `out` (as
    /// `requant_row`), with the layer's cached call constants `cc` where the path has a vector
    /// epilogue for every channel (AVX2, AVX-VNNI: `CallConsts::requant_ymm`; building them
    /// per row cost more than rows under 256 values save).
    fn requant_with(&self, cc: &CallConsts, o: usize, acc: &[i32], out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(ks) = cc.requant_ymm.as_deref() {
            // SAFETY: ymm constants exist on the AVX2 and AVX-VNNI paths only (checked when
            // packing), built for the layer's accumulator bound (`acc_bound`).
            return unsafe { x86::requant_row_cached_avx2(&ks[o], acc, out) };
        }
        let _ = cc;
        requant_row(self.isa, &self.epi, o, acc, out)
    }

    /// `K = Cin/groups · KH · KW`.
    fn k(&self) -> usize {
        self.w_dims[1] * self.w_dims[2] * self.w_dims[3]
    }

    /// A bound on `|acc|` of output channel `o` (`max|x − x_zp|·Σ|w − ζ|`), saturated to u64.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn acc_bound(&self, x_qp: &QParams, o: usize) -> u64 {
        u64::try_from(Self::max_dx(x_qp) * self.sum_abs[o]).unwrap_or(u64::MAX)
    }

    /// `max |x − x_zp|` over the input dtype's range.
    fn max_dx(x_qp: &QParams) -> i128 {
        x_qp.dtype.full_range().max_offset(x_qp.zero_point)
    }

    /// The quantized conv: same contract as [`crate::cpu::reference::conv2d_quantized`] (input
    /// stored bytes `x` of shape `x_dims` with qparams `x_qp`; output stored bytes in
    /// `epi.out.dtype`, NCHW), including the accumulator-overflow check. Bit-exact with it.
    pub fn run(
        &self,
        x: &[u8],
        x_dims: [usize; 4],
        x_qp: &QParams,
        opts: &FastConvOptions,
    ) -> Result<Vec<u8>> {
        let s = self.shape(x, x_dims)?;
        crate::tensor::check_host_alloc(s.output_len(), 1, "the conv output")?;
        let mut out = vec![0u8; s.output_len()];
        self.run_into(x, x_dims, x_qp, opts, &mut out)?;
        Ok(out)
    }

    /// [`PackedConv2d::run`] into the caller's buffer `out` (the stored output bytes, NCHW, of
    /// exactly the output's length; every byte is overwritten): a layer run again and again
    /// reuses one buffer instead of allocating and zeroing its output per call.
    pub fn run_into(
        &self,
        x: &[u8],
        x_dims: [usize; 4],
        x_qp: &QParams,
        opts: &FastConvOptions,
        out: &mut [u8],
    ) -> Result<()> {
        opts.validate()?;
        let s = self.shape(x, x_dims)?;
        if out.len() != s.output_len() {
            return Err(Error::Shape(format!(
                "the output buffer has {} bytes, the conv output {}",
                out.len(),
                s.output_len()
            )));
        }
        if !Self::zp_in_range(x_qp) {
            let y = crate::cpu::reference::conv2d_quantized(
                x,
                x_qp,
                &self.weights,
                &self.w_qp,
                &self.epi,
                &s,
            )?;
            out.copy_from_slice(&y);
            return Ok(());
        }
        // The check once per larger input offset bound (it is a loop over the channels in
        // i128, a few percent of a small layer's run).
        let range = x_qp.dtype.full_range();
        let offset = u64::try_from(range.max_offset(x_qp.zero_point)).unwrap_or(u64::MAX);
        if offset > self.checked_offset.load(Ordering::Relaxed) {
            (self.epi).check_accumulator_sums(
                &self.sum_abs,
                range,
                x_qp.zero_point,
                s.k(),
                None,
            )?;
            self.checked_offset.fetch_max(offset, Ordering::Relaxed);
        }
        self.dispatch(x, x_qp, &s, opts, Sink::Bytes(out));
        Ok(())
    }

    /// The exact int32 accumulators only (no epilogue), NCHW: same contract and result as
    /// [`crate::cpu::reference::conv2d_acc`] (an error when an accumulator leaves int32). When
    /// the worst case could overflow, this defers to the reference.
    pub fn run_acc(
        &self,
        x: &[u8],
        x_dims: [usize; 4],
        x_qp: &QParams,
        opts: &FastConvOptions,
    ) -> Result<Vec<i32>> {
        opts.validate()?;
        let s = self.shape(x, x_dims)?;
        let worst = self.sum_abs.iter().copied().max().unwrap_or(0) * Self::max_dx(x_qp);
        if !Self::zp_in_range(x_qp) || worst > i32::MAX as i128 {
            return crate::cpu::reference::conv2d_acc(x, x_qp, &self.weights, &self.w_qp, &s);
        }
        let mut out = vec![0i32; s.output_len()];
        self.dispatch(x, x_qp, &s, opts, Sink::Acc(&mut out));
        Ok(out)
    }

    /// The micro-kernel input `x` runs on: the ISA path's name, and on AVX2 whether the GEMM
    /// takes `vpmaddubsw` (where the activations' maximum and the weights' pair sums rule out
    /// its int16 saturation) or the exact `vpmaddwd` emulation; e.g. `avx2 vpmaddubsw`. (For
    /// depthwise convs, the instruction of the integer kernels where they run; some shapes
    /// take other kernels, e.g. small strided planes without them the f32 channels-in-lanes
    /// one on AVX2 and AVX-VNNI, see `depthwise`.)
    pub fn kernel_name(&self, x: &[u8], x_qp: &QParams) -> String {
        match &self.kind {
            Kind::Gemm(p) if self.isa == Isa::Avx2 => match p.uses_maddubs(x, x_qp) {
                true => "avx2 vpmaddubsw".into(),
                false => "avx2 vpmaddwd".into(),
            },
            Kind::Depthwise {
                vnni: Some(_),
                pairs,
                ..
            } if self.isa == Isa::Avx2 => match depthwise::maddubs_exact(*pairs, x, x_qp) {
                true => "avx2 depthwise vpmaddubsw".into(),
                false => "avx2 depthwise vpmaddwd".into(),
            },
            Kind::Depthwise { vnni, .. } if self.isa == Isa::NeonDot => match vnni {
                Some(_) => "neon-dotprod depthwise sdot".into(),
                None => "neon-dotprod depthwise (portable int16)".into(),
            },
            Kind::Depthwise { .. } => format!("{} depthwise", self.isa),
            Kind::Gemm(_) => self.isa.to_string(),
        }
    }

    /// The register-only loop of the instruction input `x` runs on ([`PeakLoop`]): the GEMM's
    /// int8 instruction, the AVX-512 VNNI depthwise kernels' `vpdpbusd`, or the FMA of the
    /// other x86 depthwise kernels (which compute in f32); `None` on the portable path and
    /// for `neon-dotprod`'s strided depthwise convs (the portable int16 rows).
    pub fn peak_loop(&self, x: &[u8], x_qp: &QParams) -> Option<PeakLoop> {
        match &self.kind {
            Kind::Gemm(p) => PeakLoop::int8(self.isa, p.uses_maddubs(x, x_qp)),
            Kind::Depthwise {
                vnni: Some(_),
                pairs,
                ..
            } => PeakLoop::int8(
                self.isa,
                self.isa == Isa::Avx2 && depthwise::maddubs_exact(*pairs, x, x_qp),
            ),
            // `neon-dotprod` runs the portable depthwise rows (int16 products).
            Kind::Depthwise { vnni: None, .. } if self.isa == Isa::NeonDot => None,
            Kind::Depthwise { vnni: None, .. } => PeakLoop::f32(self.isa),
        }
    }

    fn dispatch(&self, x: &[u8], x_qp: &QParams, s: &ConvShape, opts: &FastConvOptions, out: Sink) {
        match &self.kind {
            Kind::Depthwise {
                wprime,
                vnni,
                pairs,
                nhwc,
                lanes_f32,
            } => {
                let opts = &opts.for_work(s.macs(), Grain::Int8Depthwise);
                // Small output planes on AVX-512 VNNI: the channels in the lanes, unless
                // the small-plane zmm kernel runs them (`depthwise::small_ks`, faster).
                #[cfg(target_arch = "x86_64")]
                let out = match (out, vnni) {
                    (Sink::Bytes(y), Some(lanes))
                        if nhwc::depthwise_applies(s, self.isa)
                            && self.gemm_layout.nhwc(|| {
                                nhwc::depthwise_prefer(s)
                                    && depthwise::small_ks(self, &self.call_consts(x_qp), s, false)
                                        .is_none()
                            }) =>
                    {
                        let w = nhwc.get_or_init(|| nhwc::pack_depthwise(lanes, s.c_out, s.kh));
                        let cc = self.call_consts(x_qp);
                        let ks = cc.requant.as_deref();
                        let t = opts.threads;
                        return nhwc::depthwise_quads(self, w, x, x_qp, s, &cc.corr0, ks, t, y);
                    }
                    (out, _) => out,
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = nhwc;
                depthwise::run_int8(
                    self,
                    wprime,
                    vnni.as_deref(),
                    *pairs,
                    lanes_f32,
                    x,
                    x_qp,
                    s,
                    opts,
                    out,
                )
            }
            Kind::Gemm(p) => {
                let opts = &opts.for_work(s.macs(), Grain::Int8Gemm);
                int8::run(self, p, x, x_qp, s, opts, out)
            }
        }
    }
}

/// Where results go: requantized bytes, or raw accumulators.
enum Sink<'a> {
    /// Stored output bytes (epilogue applied).
    Bytes(&'a mut [u8]),
    /// Raw int32 accumulators.
    Acc(&'a mut [i32]),
}

/// The shareable form of a [`Sink`] for parallel tasks.
#[derive(Clone, Copy)]
enum SinkPtr {
    Bytes(SendPtr<u8>),
    Acc(SendPtr<i32>),
}

impl Sink<'_> {
    fn ptr(self) -> SinkPtr {
        match self {
            Sink::Bytes(b) => SinkPtr::Bytes(SendPtr(b.as_mut_ptr())),
            Sink::Acc(a) => SinkPtr::Acc(SendPtr(a.as_mut_ptr())),
        }
    }
}

impl SinkPtr {
    /// Writes the exact accumulators `acc` of one output channel to the flat output positions
    /// `[off, off + acc.len())` (for a byte sink, requantized by `requant`: the channel's
    /// epilogue, accumulators to bytes of the same length).
    ///
    /// # Safety
    /// The range must lie in the output buffer and be written by no other task.
    #[inline]
    unsafe fn write(self, requant: impl FnOnce(&[i32], &mut [u8]), acc: &[i32], off: usize) {
        match self {
            SinkPtr::Bytes(p) => {
                // SAFETY: guaranteed by the caller.
                let out = unsafe { p.slice(off, acc.len()) };
                requant(acc, out);
            }
            SinkPtr::Acc(p) => {
                // SAFETY: guaranteed by the caller.
                unsafe { p.slice(off, acc.len()) }.copy_from_slice(acc);
            }
        }
    }

    /// Writes one output channel from the flat accumulators of its plane: output row `y` is
    /// `flat[y·stride ..][..width]`, `y < rows` (rows of the padded width). Stored bytes are
    /// requantized by `requant` (the channel's epilogue: accumulators to bytes, same length)
    /// in one pass over the flat positions into `bytes`, then copied row by row (the few
    /// padded positions cost less than gathering the rows' accumulators first); raw
    /// accumulators are copied row by row.
    ///
    /// # Safety
    /// The channel's plane, `rows·width` values from `base`, must lie in the output and belong
    /// to the caller; `flat` holds `(rows − 1)·stride + width` values at least, and `bytes` as
    /// many.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    unsafe fn write_rows(
        self,
        requant: impl FnOnce(&[i32], &mut [u8]),
        flat: &[i32],
        (stride, rows, width): (usize, usize, usize),
        base: usize,
        bytes: &mut [u8],
    ) {
        let len = (rows - 1) * stride + width;
        match self {
            SinkPtr::Bytes(_) => {
                requant(&flat[..len], &mut bytes[..len]);
                // SAFETY: guaranteed by the caller.
                unsafe { self.write_byte_rows(bytes, (stride, rows, width), base) }
            }
            SinkPtr::Acc(p) => {
                for y in 0..rows {
                    // SAFETY: guaranteed by the caller.
                    unsafe { p.slice(base + y * width, width) }
                        .copy_from_slice(&flat[y * stride..][..width]);
                }
            }
        }
    }

    /// Writes one output channel's bytes from the flat plane of its requantized outputs
    /// (`bytes`, row `y` at `y·stride`, as in [`SinkPtr::write_rows`]), row by row; raw
    /// accumulators have no bytes to write, so an `Acc` sink writes nothing.
    ///
    /// # Safety
    /// As [`SinkPtr::write_rows`]; `bytes` holds `(rows − 1)·stride + width` values at least.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    unsafe fn write_byte_rows(
        self,
        bytes: &[u8],
        (stride, rows, width): (usize, usize, usize),
        base: usize,
    ) {
        debug_assert!(matches!(self, SinkPtr::Bytes(_)));
        if let SinkPtr::Bytes(p) = self {
            assert!(rows == 0 || bytes.len() >= (rows - 1) * stride + width);
            // Rows of vectors on AVX2 (a `memcpy` call per short row cost 3–4% of the int8
            // depthwise conv on 56×56 planes).
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 checked; the rows of `bytes` are inside it (asserted), those of
                // the output guaranteed by the caller, and the two are distinct buffers.
                let d = unsafe { p.slice(base, rows * width) }.as_mut_ptr();
                let s = bytes.as_ptr();
                unsafe { x86::copy_rows_strided_xor_avx2(s, stride, d, width, width, rows, 0) };
                return;
            }
            for y in 0..rows {
                // SAFETY: guaranteed by the caller.
                unsafe { p.slice(base + y * width, width) }
                    .copy_from_slice(&bytes[y * stride..][..width]);
            }
        }
    }

    /// Writes the valid runs `segs` (tile position, output offset from `base`, length) of one
    /// tile row `row` (≤ 64 exact accumulators of output channel `o`). The whole row is
    /// requantized at once, then copied run by run.
    ///
    /// # Safety
    /// Every run must lie in the output buffer and be written by no other task.
    #[inline]
    unsafe fn write_segments(
        self,
        isa: Isa,
        epi: &Epilogue,
        o: usize,
        row: &[i32],
        segs: &[(usize, usize, usize)],
        base: usize,
    ) {
        match self {
            SinkPtr::Bytes(p) => {
                let mut bytes = [0u8; 64];
                let n = row.len().min(64);
                requant_row(isa, epi, o, &row[..n], &mut bytes[..n]);
                for &(at, off, len) in segs {
                    // SAFETY: guaranteed by the caller.
                    unsafe { p.slice(base + off, len) }.copy_from_slice(&bytes[at..at + len]);
                }
            }
            SinkPtr::Acc(p) => {
                for &(at, off, len) in segs {
                    // SAFETY: guaranteed by the caller.
                    unsafe { p.slice(base + off, len) }.copy_from_slice(&row[at..at + len]);
                }
            }
        }
    }
}

/// A per-thread scratch buffer, reused across calls (large allocations would otherwise be
/// fresh, page-faulting memory on every call). Re-entrant calls on the same thread (a rayon
/// worker stealing another conv) get a fresh buffer.
fn with_scratch<T: Copy + Default + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, T::default());
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![T::default(); len]),
    })
}

thread_local! {
    static SCRATCH_U8: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCRATCH_F32: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCRATCH_U32: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `dst[i] = row[ix0 + sx·i]` for every `i < dst.len()`: the columns that a strided conv's
/// input repack copies from one input row. Stride 2 runs a loop over whole pairs that
/// vectorizes (compiled for AVX2 where the CPU has it; a plain copy, the same values on every
/// path): the scalar strided loop was a third of the float stem conv's time (3x224x224,
/// stride 2).
///
/// # Panics
/// If `row` holds fewer than `ix0 + sx·(dst.len() − 1) + 1` values.
fn gather_columns<T: Copy>(row: &[T], ix0: usize, sx: usize, dst: &mut [T]) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    assert!(row.len() > ix0 + sx * (n - 1));
    if sx == 2 {
        /// `dst[i] = src[2i]`, `src` holding `2·dst.len() − 1` values or more.
        #[inline(always)]
        fn pairs<T: Copy>(src: &[T], dst: &mut [T]) {
            let whole = (src.len() / 2).min(dst.len());
            for (d, p) in dst[..whole].iter_mut().zip(src.chunks_exact(2)) {
                *d = p[0];
            }
            // At most one more: the last column, without its pair.
            if let Some(d) = dst.get_mut(whole) {
                *d = src[2 * whole];
            }
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn pairs_avx2<T: Copy>(src: &[T], dst: &mut [T]) {
            pairs(src, dst)
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the feature was detected.
            return unsafe { pairs_avx2(&row[ix0..], dst) };
        }
        return pairs(&row[ix0..], dst);
    }
    for (d, i) in dst.iter_mut().zip((ix0..).step_by(sx)) {
        *d = row[i];
    }
}

/// Requantizes the accumulators `acc` of output channel `o` into stored bytes, exactly as
/// `epi.out.dtype.int_to_byte(epi.apply(a, o))`.
fn requant_row(isa: Isa, epi: &Epilogue, o: usize, acc: &[i32], out: &mut [u8]) {
    debug_assert_eq!(acc.len(), out.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` was checked available when the conv was packed.
        Isa::Avx512Vnni => unsafe { x86::requant_row_avx512(epi, o, acc, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above (both paths include AVX2).
        Isa::Avx2 | Isa::AvxVnni => unsafe { x86::requant_row_avx2(epi, o, acc, out) },
        _ => portable::requant_row(epi, o, acc, out),
    }
}

/// The fast quantized conv with the same contract as
/// [`crate::cpu::reference::conv2d_quantized`], bit-exact with it. Packs the weights on every
/// call: layers run repeatedly should use a [`PackedConv2d`].
pub fn conv2d_quantized(
    x: &[u8],
    x_qp: &QParams,
    w: &[i8],
    w_qp: &WeightQParams,
    epi: &Epilogue,
    s: &ConvShape,
    opts: &FastConvOptions,
) -> Result<Vec<u8>> {
    opts.validate()?;
    s.validate()?;
    if w.len() != s.weight_len() {
        return Err(Error::Shape(format!(
            "weight has {} elements, the conv shape needs {}",
            w.len(),
            s.weight_len()
        )));
    }
    // Same check, same order of errors as the reference.
    epi.check_accumulator(
        w,
        w_qp,
        x_qp.dtype.full_range(),
        x_qp.zero_point,
        s.k(),
        None,
    )?;
    PackedConv2d::new(w, s.weight_dims(), w_qp, epi, s.params)?.run(x, s.input_dims(), x_qp, opts)
}

/// Fast float conv2d (cross-correlation, zero padding; NCHW/OIHW like the reference): implicit
/// im2col, blocked f32 GEMM with FMA, multithreaded. Used for calibration and as the float
/// baseline. The summation order is documented in the [module docs](self); results may differ
/// from the f64 [`crate::cpu::reference::conv2d_f32`] in the last bits, but are identical on
/// every ISA path and thread count.
pub fn conv2d_f32(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    opts: &FastConvOptions,
) -> Result<Vec<f32>> {
    conv2d_f32_with_isa(x, w, bias, s, opts, Isa::detect())
}

#[cfg(test)]
mod tests {
    use super::{on_pool, FastConvOptions, Grain, IN_POOL_GRAIN_DIVISOR};
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn convs_under_a_grain_run_on_the_calling_thread_unless_split_small() {
        let grains = [
            Grain::Int8Gemm,
            Grain::F32Gemm,
            Grain::Int8Depthwise,
            Grain::F32Depthwise,
        ];
        for grain in grains {
            let g = grain as u64;
            // `None` (the global pool) stands for one thread on a one-core machine.
            let global = (rayon::current_num_threads() > 1).then_some(None);
            for threads in [Some(Some(2)), Some(Some(3)), global].into_iter().flatten() {
                let opts = FastConvOptions {
                    threads,
                    split_small: false,
                };
                let one = FastConvOptions::with_threads(1);
                assert_eq!(opts.for_work(g - 1, grain), one, "{grain:?} {threads:?}");
                assert_eq!(opts.for_work(0, grain), one, "{grain:?} {threads:?}");
                assert_eq!(opts.for_work(g, grain), opts, "{grain:?} {threads:?}");
                let split = FastConvOptions::splitting_small(threads);
                assert_eq!(split.for_work(g - 1, grain), split, "{grain:?} {threads:?}");
            }
            let one = FastConvOptions::with_threads(1);
            assert_eq!(one.for_work(u64::MAX, grain), one);
        }
    }

    #[test]
    fn convs_forked_from_a_worker_of_their_pool_split_at_a_smaller_grain() {
        let g = Grain::Int8Gemm as u64;
        let small = g / IN_POOL_GRAIN_DIVISOR;
        let opts = FastConvOptions::with_threads(2);
        let one = FastConvOptions::with_threads(1);
        // Outside the pool: the full grain.
        assert_eq!(opts.for_work(small, Grain::Int8Gemm), one);
        // On a worker of that pool: the smaller one, not below it.
        let (at, under) = on_pool(Some(2), || {
            (
                opts.for_work(small, Grain::Int8Gemm),
                opts.for_work(small - 1, Grain::Int8Gemm),
            )
        });
        assert_eq!((at, under), (opts.clone(), one.clone()));
        // A worker of another pool is outside this one.
        let other = on_pool(Some(3), || opts.for_work(small, Grain::Int8Gemm));
        assert_eq!(other, one);
        // `None` runs on the current pool, whichever it is.
        let global = FastConvOptions::default();
        let inside = on_pool(Some(3), || global.for_work(small, Grain::Int8Gemm));
        assert_eq!(inside, global);
    }

    /// Each byte is written by the call of its chunk, at its offset, on a pool's worker (in
    /// parallel chunks) as on a plain thread (one call), for sizes around the chunk bounds.
    #[test]
    fn par_bytes_gives_each_byte_its_value_in_chunks_or_not() {
        let f = |start: usize, out: &mut [u8]| {
            for (j, o) in out.iter_mut().enumerate() {
                *o = ((start + j) * 31 % 251) as u8;
            }
        };
        let two = 2 * super::PAR_BYTES_CHUNK;
        for n in [0, 1, two - 1, two, two + 1, 100_001] {
            let want: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            assert_eq!(super::par_bytes(n, f), want, "{n} bytes");
            assert_eq!(
                on_pool(Some(2), || super::par_bytes(n, f)),
                want,
                "{n} on a pool"
            );
        }
    }

    #[test]
    fn on_pool_runs_on_a_worker_of_the_pool_the_threads_name() {
        assert_eq!(on_pool(Some(1), rayon::current_thread_index), None);
        assert!(on_pool(Some(2), || super::on_a_worker(Some(2))));
        assert!(!on_pool(Some(2), || super::on_a_worker(Some(3))));
        assert!(on_pool(None, || super::on_a_worker(None)));
        // Already on a worker: runs here, nested calls included.
        assert!(on_pool(Some(2), || on_pool(
            Some(2),
            || super::on_a_worker(Some(2))
        )));
    }

    #[test]
    fn pin_plan_takes_the_first_cpus_only_where_there_are_enough() {
        use core_affinity::CoreId;
        let cpus: Vec<CoreId> = [3, 5, 9].map(|id| CoreId { id }).to_vec();
        let ids = |p: Option<Vec<CoreId>>| p.map(|c| c.iter().map(|c| c.id).collect::<Vec<_>>());
        assert_eq!(
            ids(super::pin_plan(2, false, Some(cpus.clone()))),
            Some(vec![3, 5])
        );
        assert_eq!(
            ids(super::pin_plan(3, false, Some(cpus.clone()))),
            Some(vec![3, 5, 9])
        );
        assert_eq!(ids(super::pin_plan(4, false, Some(cpus.clone()))), None);
        assert_eq!(ids(super::pin_plan(2, true, Some(cpus))), None);
        assert_eq!(ids(super::pin_plan(1, false, None)), None);
    }

    /// Linux and Android only: there a thread's affinity mask reads back as set (Windows
    /// reads the process's mask, macOS has affinity hints only).
    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn pool_workers_each_run_on_their_own_cpu() {
        let Some(cpus) = core_affinity::get_core_ids() else {
            return; // no affinity on this platform: nothing is pinned
        };
        let t = cpus.len().min(4);
        let pool = super::pool_builder(t).build().expect("a pool");
        let masks = pool.broadcast(|_| core_affinity::get_core_ids().unwrap_or_default());
        let pinned = std::env::var("SQUINT_PIN_THREADS").map_or(true, |v| v.trim() != "0");
        for (i, mask) in masks.iter().enumerate() {
            let mask: Vec<usize> = mask.iter().map(|c| c.id).collect();
            match pinned {
                true => assert_eq!(mask, [cpus[i].id], "worker {i} of {t}"),
                false => assert_eq!(mask.len(), cpus.len(), "worker {i} unpinned"),
            }
        }
    }

    /// Runs `work` loops of 64 items on the pool of `on_pool`, each item summing its index;
    /// the total of every loop.
    fn loops_on_pool(threads: Option<usize>, work: usize) -> u64 {
        on_pool(threads, || {
            let total = AtomicU64::new(0);
            for _ in 0..work {
                super::par_for(None, 64, |i| {
                    total.fetch_add(i as u64, Ordering::Relaxed);
                });
            }
            total.into_inner()
        })
    }

    #[test]
    fn on_pool_with_spinning_workers_runs_every_loop_and_survives_a_panic() {
        let want = 10 * (0..64u64).sum::<u64>();
        assert_eq!(loops_on_pool(Some(2), 10), want);
        let panicked = std::panic::catch_unwind(|| on_pool(Some(2), || panic!("inside f")));
        assert!(panicked.is_err(), "the panic reaches the caller");
        // The spinners stopped and the region was freed: later runs go on as before.
        assert_eq!(loops_on_pool(Some(2), 10), want);
        assert_eq!(loops_on_pool(None, 10), want);
    }

    #[test]
    fn concurrent_and_nested_runs_on_one_pool_all_finish() {
        // Runs that start on several workers at once (one of them spins its pool's other
        // workers, whose spinners may start inside the others' waits) and runs nested in
        // them: each returns, with its own loops' total.
        let want = 3 * (0..64u64).sum::<u64>();
        let pool = super::pool(2).expect("a pool of two");
        let totals: Vec<u64> = pool.install(|| {
            use rayon::prelude::*;
            (0..8)
                .into_par_iter()
                .map(|k| match k % 2 {
                    0 => loops_on_pool(None, 3),
                    _ => on_pool(None, || loops_on_pool(None, 3)),
                })
                .collect()
        });
        assert_eq!(totals, vec![want; 8]);
    }
}
