//! Helpers shared by the randomized and GPU integration tests: seeded test data (the crate's
//! SplitMix64) and every GPU adapter this process can open.
#![allow(dead_code)]

use squint::gpu::{testing, GpuContext};

/// Seeded test data: [`squint::rng::Rng`] with the draws the tests use.
pub struct Rng(squint::rng::Rng);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(squint::rng::Rng::new(seed))
    }

    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    /// Uniform in `lo..=hi`.
    pub fn usize(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as i64, hi as i64) as usize
    }

    /// Uniform in [0, 1) with 24 bits.
    pub fn unit(&mut self) -> f32 {
        self.0.uniform()
    }

    /// True with probability `p` (24-bit draw).
    pub fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    /// True with probability `p_true` (53-bit draw).
    pub fn coin(&mut self, p_true: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p_true
    }

    /// One element of `v`, uniformly.
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.usize(0, v.len() - 1)]
    }
}

/// Every adapter; empty (with a message) when none opens, unless `SQUINT_REQUIRE_GPU=1`
/// (the policy lives in `squint::gpu::testing`).
pub fn gpu_contexts() -> Vec<GpuContext> {
    testing::contexts()
}

/// Every kernel variant of `ctx`, printing (and in CI failing on) the ones left out.
pub fn variants(ctx: &GpuContext) -> Vec<(&'static str, GpuContext)> {
    testing::variants(ctx)
}
