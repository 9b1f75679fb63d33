//! The epilogue as a step function: an exact, float-free description of one output channel's
//! requantization, for kernels that cannot afford (or cannot trust) float arithmetic.
//!
//! # Derivation
//! For output channel `o`, write `f(acc) = Epilogue::apply(acc, o)`. Every formula is a
//! composition of non-decreasing maps of the accumulator, on the domain `D = [-L, L]` where no
//! integer step overflows (`L = (i32::MAX >> fp_left_shift) - |bias_i32|`):
//! * `acc + bias_i32` (no wrap on `D`), `f32(·)` (rounding is monotone), `+ bias_f32`,
//!   `× m` for a multiplier `m > 0` (monotone under round-to-nearest), `rne`, `+ zp`;
//! * fixed point: `<< left_shift` (no overflow on `D`), the saturating rounding doubling high
//!   multiply by a positive Q0.31 multiplier, the rounding right shift, `+ zp` (saturating);
//! * the final clamp to the output range.
//!
//! So `f` is non-decreasing on `D`, and it is fully described by its value at `-L`
//! (`base`), its value at `L` (`top`) and, for each level `k` in `(base, top]`, the smallest
//! accumulator that reaches it, `t_k = min { a in D : f(a) >= k }`:
//!
//! ```text
//! f(acc) = base + #{ k in (base, top] : t_k <= acc }      for every acc in D
//! ```
//!
//! There are at most 255 levels (8-bit outputs). [`Epilogue::check_accumulator`] guarantees,
//! before any kernel runs, that every accumulator the conv can produce lies in `D`
//! (`(max|x - x_zp| * sum|w - w_zp| + |bias_i32|) << left_shift <= i32::MAX`), so the table is
//! exact for all of them. The table is built here by binary search over `D` with the CPU
//! formula itself, so it inherits that formula's bits.
//!
//! # Estimate and verify
//! A kernel finds the level in two table reads: it estimates `k ≈ rne(slope * acc + offset)`
//! in ordinary float arithmetic (`slope`, `offset` approximate the formula's affine map),
//! clamps it to `[base, top]`, and accepts it when `t_k <= acc < t_(k+1)` (the bounds that
//! exist). Otherwise it binary-searches the table. The estimate only decides the speed; the
//! result is always the table's, whatever rounding, contraction or flushing the float estimate
//! suffered. [`StepTable::lookup`] is that procedure on the CPU.

use super::requant::{Epilogue, RequantFormula};
use super::rne;

/// One output channel's epilogue as a step function (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct StepTable {
    /// `f(-L)`: the level of the smallest accumulator of the domain.
    pub base: i32,
    /// `f(L)`: the level of the largest accumulator of the domain.
    pub top: i32,
    /// `thresholds[i] = t_(base + 1 + i)`: the smallest accumulator whose level is at least
    /// `base + 1 + i` (non-decreasing; `top - base` entries).
    pub thresholds: Vec<i32>,
    /// Estimate of the level: `rne(slope * acc + offset)` (a speed hint, never trusted).
    pub slope: f32,
    /// See `slope`.
    pub offset: f32,
    /// The domain bound `L`: the table describes accumulators in `[-L, L]`.
    pub limit: i32,
}

impl StepTable {
    /// The smallest accumulator of level at least `k`, for `k` in `(base, top]`. Outside the
    /// table (only for a table built by hand, or from an epilogue that is not monotone) a
    /// level below it is reached by every accumulator and one above it by none.
    #[inline]
    fn t(&self, k: i32) -> i32 {
        let i = k as i64 - self.base as i64 - 1;
        if i < 0 {
            return i32::MIN;
        }
        usize::try_from(i)
            .ok()
            .and_then(|i| self.thresholds.get(i))
            .copied()
            .unwrap_or(i32::MAX)
    }

    /// The level of `acc` (in `[-limit, limit]`) by estimate and verify, as the GPU kernels
    /// compute it; equals `Epilogue::apply(acc, o)`.
    pub fn lookup(&self, acc: i32) -> i32 {
        let e = rne(acc as f32 * self.slope + self.offset);
        if self.top < self.base {
            // Only for a table built by hand, or from an epilogue that is not monotone.
            return self.base;
        }
        let k = e.clamp(self.base as f32, self.top as f32) as i32;
        let lo_ok = k == self.base || self.t(k) <= acc;
        let hi_ok = k == self.top || acc < self.t(k + 1);
        if lo_ok && hi_ok {
            return k;
        }
        self.search(acc)
    }

    /// Whether the estimate `rne(slope * acc + offset)`, clamped to `[base, top]`, lies within
    /// one level of the step function's level for every accumulator of the domain, even with
    /// a float error of up to `2^-20 * (|slope * acc| + |offset| + 1)` (many ULPs: f32
    /// multiply and add, fused or not, are within half an ULP each). Then the level is the
    /// estimate moved by at most one step by its two thresholds ([`StepTable::lookup_near`]),
    /// and no search is needed.
    ///
    /// Level `k`'s accumulators are `[t_k, t_(k+1) - 1]` (from `-L` for `base`, to `L` for
    /// `top`); the estimate is non-decreasing (`slope >= 0`), so it suffices that at `t_k` it
    /// exceeds `k - 1.5` and at `t_(k+1) - 1` stays below `k + 1.5`, by the error bound
    /// (round to nearest can then only give `k - 1`, `k` or `k + 1`, and clamping to
    /// `[base, top]` only moves it closer).
    pub fn estimate_within_one_level(&self) -> bool {
        let (slope, offset) = (self.slope as f64, self.offset as f64);
        if !(slope.is_finite() && offset.is_finite() && slope >= 0.0) || self.top < self.base {
            return false;
        }
        let bounds = |acc: i64| {
            let e = slope * acc as f64 + offset;
            let err = 2f64.powi(-20) * ((slope * acc as f64).abs() + offset.abs() + 1.0);
            (e - err, e + err)
        };
        let limit = self.limit as i64;
        (self.base..=self.top).all(|k| {
            let lo = if k == self.base {
                -limit
            } else {
                self.t(k) as i64
            };
            let hi = if k == self.top {
                limit
            } else {
                self.t(k + 1) as i64 - 1
            };
            if lo > hi {
                // A level no accumulator reaches (a duplicate threshold).
                return true;
            }
            (k == self.base || bounds(lo).0 > k as f64 - 1.5)
                && (k == self.top || bounds(hi).1 < k as f64 + 1.5)
        })
    }

    /// The level of `acc` (in `[-limit, limit]`) from the estimate and its two thresholds
    /// alone, as `conv2d_dw_direct.wgsl` computes it where [`StepTable::estimate_within_one_level`]
    /// holds (then it equals `Epilogue::apply(acc, o)`; otherwise it need not).
    pub fn lookup_near(&self, acc: i32) -> i32 {
        let e = rne(acc as f32 * self.slope + self.offset);
        if self.top < self.base {
            return self.base;
        }
        let k = e.clamp(self.base as f32, self.top as f32) as i32;
        let down = k > self.base && acc < self.t(k);
        let up = k < self.top && acc >= self.t(k + 1);
        k - i32::from(down) + i32::from(up)
    }

    /// The level of `acc` by binary search only.
    pub fn search(&self, acc: i32) -> i32 {
        let (mut lo, mut hi) = (self.base, self.top);
        while lo < hi {
            // In i64: `hi - lo` may exceed i32 in a table built by hand.
            let mid = (lo as i64 + (hi as i64 - lo as i64 + 1) / 2) as i32;
            if self.t(mid) <= acc {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
}

impl Epilogue {
    /// The accumulator domain bound `L` of output channel `o` (see the module docs): the
    /// largest `|acc|` that [`Epilogue::check_accumulator`] can let through.
    pub fn accumulator_limit(&self, o: usize) -> i32 {
        let c = &self.channels[o];
        let shifted = i32::MAX >> c.fp_left_shift.clamp(0, 31);
        (shifted as i64 - (c.bias_i32 as i64).abs()).max(0) as i32
    }

    /// An affine approximation `level ≈ slope * acc + offset` of output channel `o`'s formula
    /// (before rounding and clamping).
    fn affine(&self, o: usize) -> (f64, f64) {
        let c = &self.channels[o];
        let zp = self.out.zero_point as f64;
        match self.formula {
            RequantFormula::Qnnpack => {
                let s = c.mult as f64;
                (s, c.bias_i32 as f64 * s + zp)
            }
            RequantFormula::Fbgemm => {
                let s = c.mult as f64;
                (s, c.bias_f32 as f64 * s + zp)
            }
            RequantFormula::Onednn => {
                let inv = c.inv_out_scale as f64;
                (
                    c.mult as f64 * c.mult2 as f64 * inv,
                    c.bias_f32 as f64 * inv + zp,
                )
            }
            RequantFormula::FixedPoint => {
                let shift = c.fp_left_shift - c.fp_right_shift - 31;
                let s = c.fp_multiplier as f64 * 2f64.powi(shift);
                (s, c.bias_i32 as f64 * s + zp)
            }
        }
    }

    /// Output channel `o`'s epilogue as a [`StepTable`], built with [`Epilogue::apply`] itself.
    pub fn step_table(&self, o: usize) -> StepTable {
        let limit = self.accumulator_limit(o) as i64;
        let f = |a: i64| self.apply(a as i32, o);
        let (base, top) = (f(-limit), f(limit));
        let (slope, offset) = self.affine(o);
        let mut thresholds = Vec::with_capacity((top - base).max(0) as usize);
        // Invariant: f(lo) < k.
        let mut lo = -limit;
        for k in base + 1..=top {
            // Bracket t_k around the estimate, galloping outwards: f(lo) < k <= f(hi).
            let guess = if slope.is_finite() && slope > 0.0 {
                let g = ((k as f64 - 0.5 - offset) / slope).ceil();
                if g.is_finite() {
                    (g.clamp(-(limit as f64), limit as f64)) as i64
                } else {
                    lo + 1
                }
            } else {
                lo + 1
            };
            let mut hi = limit;
            let g = guess.clamp(lo + 1, limit);
            let mut step = 1i64;
            if f(g) >= k {
                hi = g;
                loop {
                    let cand = g - step;
                    if cand <= lo {
                        break;
                    }
                    if f(cand) < k {
                        lo = cand;
                        break;
                    }
                    hi = cand;
                    step *= 2;
                }
            } else {
                lo = g;
                loop {
                    let cand = g + step;
                    if cand >= limit {
                        break;
                    }
                    if f(cand) >= k {
                        hi = cand;
                        break;
                    }
                    lo = cand;
                    step *= 2;
                }
            }
            let t = first_reaching(lo, hi, |a| f(a) >= k);
            thresholds.push(t as i32);
            lo = t - 1;
        }
        StepTable {
            base,
            top,
            thresholds,
            slope: slope as f32,
            offset: offset as f32,
            limit: limit as i32,
        }
    }
}

/// The smallest `a` in `(lo, hi]` for which `reached(a)`, by bisection, given that `reached`
/// is false at `lo`, true at `hi` and monotone in between.
fn first_reaching(mut lo: i64, mut hi: i64, reached: impl Fn(i64) -> bool) -> i64 {
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reached(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The order-preserving map from `f32` to `u32`: `a < b` (as floats, with `-0 < +0`) if and
/// only if `key(a) < key(b)`, for all non-NaN values. Comparing keys is exact integer
/// arithmetic, which is how the GPU kernels compare floats they must not trust float
/// arithmetic on.
#[inline]
pub fn f32_order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The inverse of [`f32_order_key`].
#[inline]
pub fn f32_from_order_key(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 {
        k & 0x7fff_ffff
    } else {
        !k
    })
}

/// Per-tensor quantization ([`super::quantize_one`]) as a step function of the input, for
/// kernels that must not trust float arithmetic. `quantize_one` is non-decreasing in `x`
/// (a product with `1/scale > 0`, `rne`, a clamp), so for non-NaN `x`
///
/// ```text
/// q(x) = qmin + #{ i : thresholds[i] <= f32_order_key(x) }
/// ```
///
/// where `thresholds[i]` is the key of the smallest float whose level is at least
/// `qmin + 1 + i`; NaN quantizes to `nan` (the zero point, clamped). Built with
/// `quantize_one` itself, by binary search over the keys from `-inf` to `+inf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizeSteps {
    /// The lowest level (the dtype's minimum).
    pub qmin: i32,
    /// The highest level (the dtype's maximum).
    pub qmax: i32,
    /// `qmax - qmin` keys, non-decreasing.
    pub thresholds: Vec<u32>,
    /// The level of NaN inputs.
    pub nan: i32,
}

impl QuantizeSteps {
    /// The step table of quantization with `qp`.
    pub fn new(qp: &super::QParams) -> Self {
        let inv = super::inverse_scale(qp.scale);
        let f = |k: u32| super::quantize_one(f32_from_order_key(k), inv, qp);
        let full = qp.dtype.full_range();
        let (lo_key, hi_key) = (
            f32_order_key(f32::NEG_INFINITY),
            f32_order_key(f32::INFINITY),
        );
        let mut thresholds = Vec::with_capacity((full.max - full.min) as usize);
        // Invariant: f(lo) < level <= f(hi).
        let mut lo = lo_key;
        for level in full.min + 1..=full.max {
            let t = first_reaching(lo as i64, hi_key as i64, |k| f(k as u32) >= level);
            thresholds.push(t as u32);
            lo = t as u32 - 1;
        }
        QuantizeSteps {
            qmin: full.min,
            qmax: full.max,
            thresholds,
            nan: super::quantize_one(f32::NAN, inv, qp),
        }
    }

    /// The level of `x` from the table alone (binary search); equals
    /// `quantize_one(x, inverse_scale(scale), qp)`.
    pub fn level(&self, x: f32) -> i32 {
        if x.is_nan() {
            return self.nan;
        }
        let key = f32_order_key(x);
        self.qmin + self.thresholds.partition_point(|&t| t <= key) as i32
    }
}
