//! Register-only loops of the instructions the fast kernels are built on (see
//! [`crate::cpu::fast::PeakLoop`]): 12 independent accumulators, no memory traffic, so that a
//! loop runs at the core's issue rate for that instruction.

use std::arch::x86_64::*;

/// Independent accumulator chains: enough to cover the latency of every loop below (4–5
/// cycles) on two pipes.
pub(crate) const CHAINS: usize = 12;

macro_rules! peak_loop {
    ($(#[$doc:meta])* $name:ident, $features:literal, $vec:ty, $zero:expr, $reduce:ident,
     |$seed:ident| $splat:expr, |$acc:ident, $a:ident, $b:ident| $step:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The features must be available.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name(iters: u64, seed: i32) -> i64 {
            let $a: $vec = {
                let $seed = seed;
                std::hint::black_box($splat)
            };
            let $b: $vec = {
                let $seed = seed.wrapping_mul(7) | 1;
                std::hint::black_box($splat)
            };
            let mut accs: [$vec; CHAINS] = [$zero; CHAINS];
            for _ in 0..iters {
                for $acc in accs.iter_mut() {
                    *$acc = $step;
                }
            }
            $reduce(&accs)
        }
    };
}

/// The lanes of SIMD vectors `accs` (`__m256i`, `__m512`, …: plain 32-bit lanes, no padding).
fn lanes<T, L: Copy>(accs: &[T]) -> &[L] {
    // SAFETY: every vector type used here is a plain array of 4-byte lanes, at least as aligned
    // as `L`, so its bytes are valid `L`s.
    unsafe {
        std::slice::from_raw_parts(
            accs.as_ptr().cast::<L>(),
            std::mem::size_of_val(accs) / std::mem::size_of::<L>(),
        )
    }
}

fn sum_words<T>(accs: &[T]) -> i64 {
    lanes::<T, i32>(accs).iter().map(|&v| v as i64).sum()
}

fn sum_floats<T>(accs: &[T]) -> i64 {
    lanes::<T, f32>(accs).iter().map(|&v| v as i64).sum()
}

peak_loop!(
    /// zmm `vpdpbusd`: 64 u8·s8 products per instruction.
    dpbusd_zmm, "avx512f,avx512bw,avx512vnni", __m512i, _mm512_setzero_si512(),
    sum_words, |s| _mm512_set1_epi32(s),
    |acc, a, b| _mm512_dpbusd_epi32(*acc, a, b)
);

peak_loop!(
    /// ymm `vpdpbusd` (EVEX; the VEX form issues alike): 32 products per instruction.
    dpbusd_ymm, "avx2,avx512f,avx512vl,avx512vnni", __m256i, _mm256_setzero_si256(),
    sum_words, |s| _mm256_set1_epi32(s),
    |acc, a, b| _mm256_dpbusd_epi32(*acc, a, b)
);

peak_loop!(
    /// ymm `vpdpbusd`, VEX-encoded (AVX-VNNI).
    dpbusd_ymm_vex, "avx2,avxvnni", __m256i, _mm256_setzero_si256(),
    sum_words, |s| _mm256_set1_epi32(s),
    |acc, a, b| _mm256_dpbusd_avx_epi32(*acc, a, b)
);

peak_loop!(
    /// AVX2 `vpmaddubsw` + `vpmaddwd` by ones + `vpaddd`: 32 products per step.
    maddubs_ymm, "avx2", __m256i, _mm256_setzero_si256(),
    sum_words, |s| _mm256_set1_epi32(s & 0x3f3f_3f3f),
    // The accumulator feeds the multiply, so the compiler cannot hoist it out of the loop.
    |acc, a, b| _mm256_add_epi32(
        a,
        _mm256_madd_epi16(_mm256_maddubs_epi16(*acc, b), _mm256_set1_epi16(1))
    )
);

peak_loop!(
    /// AVX2's exact emulation: two `vpmaddwd` and two `vpaddd` per 32 products.
    maddwd_ymm, "avx2", __m256i, _mm256_setzero_si256(),
    sum_words, |s| _mm256_set1_epi32(s & 0x00ff_00ff),
    |acc, a, b| _mm256_add_epi32(
        a,
        _mm256_add_epi32(_mm256_madd_epi16(*acc, b), _mm256_madd_epi16(*acc, a))
    )
);

peak_loop!(
    /// zmm `vfmadd` (f32): 16 multiply-adds per instruction.
    fma_zmm, "avx512f", __m512, _mm512_setzero_ps(),
    sum_floats, |s| _mm512_set1_ps(s as f32 * 1e-9),
    |acc, a, b| _mm512_fmadd_ps(a, b, *acc)
);

peak_loop!(
    /// ymm `vfmadd` (f32): 8 multiply-adds per instruction.
    fma_ymm, "avx2,fma", __m256, _mm256_setzero_ps(),
    sum_floats, |s| _mm256_set1_ps(s as f32 * 1e-9),
    |acc, a, b| _mm256_fmadd_ps(a, b, *acc)
);
