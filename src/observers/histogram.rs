//! `HistogramObserver`: a running histogram and PyTorch's L2-error range search.
//!
//! # State
//!
//! The observer keeps the running `min`, `max` (float32) and `B` (= 2048) float32 bins that
//! cover `[min, max]` uniformly. Bins hold counts, or fractions of counts once an old histogram
//! has been remapped onto a wider range.
//!
//! # `histc(x, B, lo, hi)` (PyTorch's CPU kernel, linear interpolation)
//!
//! ```text
//! if lo == hi: lo, hi = f32(lo - 1), f32(hi + 1)      (computed in double, stored as float32)
//! for each x with lo <= x <= hi (others dropped):
//!     bin = trunc(f32(f32(f32(x - lo) * B) / f32(hi - lo)))      bin == B (x == hi) -> B - 1
//!     hist[bin] += 1                                               (float32)
//! ```
//!
//! # Feeding a batch with range `[bmin, bmax]`
//!
//! The first batch sets `min, max = bmin, bmax` and `hist = histc(x, B, min, max)`. A later
//! batch widens the range to `nmin = min(min, bmin)`, `nmax = max(max, bmax)` and bins the new
//! data on it: `upd = histc(x, B, nmin, nmax)`. The old histogram then has to move:
//!
//! * range unchanged: `hist = hist + upd`;
//! * the old range was a single value (`min == max`): all old mass `m = sum(hist)` sits at
//!   that value, so `hist = histc([min], B, nmin, nmax) * m + upd`;
//! * otherwise (`_upscale_histogram`): every old bin is split into `R` (= 16) sub-bins of mass
//!   `f32(hist[i] / R)`, each sub-bin is assigned to the new bin that contains its midpoint, and
//!   the masses are added up in float32 in sub-bin order (`bincount` with float weights):
//!
//!   ```text
//!   w    = f32(f32(max - min) / (B R))
//!   mid  = f32(linspace(min, max, B R + 1)[k] + f32(0.5 w))         k = 0 .. B R - 1
//!   edge = linspace(nmin, nmax, B + 1)
//!   bin  = clamp(searchsorted(edge, mid, side=right) - 1, 0, B - 1)
//!   hist = upd + remapped
//!   ```
//!
//!   `linspace(a, b, n)` is PyTorch's float32 kernel: `step = f32(f32(b - a) / (n - 1))`,
//!   element `i` is `fma(step, i, a)` for `i < n/2` and `fma(-step, n-1-i, b)` otherwise
//!   (one rounding each, see [`linspace_f32`]).
//!
//! # The L2 range search (`_non_linear_param_search`)
//!
//! The qparams do not use `[min, max]` but the sub-range `[sb, eb]` of bins that minimizes an
//! estimate of the quantization error when those bins are mapped onto `D` (= 256) destination
//! bins. The search shrinks the range from both ends by quantiles, in steps of 1e-5, always
//! moving the end that gives up more bins, and stops as soon as the error grows:
//!
//! ```text
//! csum = cumsum(hist)  (accumulated in double, stored as float32);  total = torch.sum(hist)
//! alpha, beta = 0, 1 (Python doubles); sb, eb = 0, B - 1; norm_min = inf
//! while alpha < beta:
//!     na, nb = alpha + 1e-5, beta - 1e-5
//!     l = first bin in [sb, eb) with csum[l] >= f32(na * total), else eb
//!     r = last bin in (sb, eb] with csum[r] <= f32(nb * total), else sb
//!     if l - sb > eb - r: (nsb, neb) = (l, eb); alpha = na   else: (nsb, neb) = (sb, r); beta = nb
//!     if (nsb, neb) == (sb, eb): continue
//!     norm = L2(nsb, neb); if norm > norm_min: break
//!     norm_min, sb, eb = norm, nsb, neb
//! bw = f32(f32(max - min) / B)
//! result = (f32(min + f32(bw * sb)), f32(min + f32(bw * (eb + 1))))
//! ```
//!
//! `csum` is non-decreasing, so `l` and `r` are found by binary search instead of PyTorch's
//! linear scans (same result, `O(log B)` per step).
//!
//! The error model (`_compute_quantization_error`): the mass of source bin `j` is spread
//! uniformly over `[begin_j, end_j)` (relative to the start of bin `s`) with density
//! `hist[j] / bw`; a destination bin of width `dw = bw (e - s + 1) / D` replaces every value by
//! its center, and the squared error of a uniform density over `[a, b]` around the center is
//! `density * (b^3 - a^3) / 3`. Source bin `j` overlaps destination bins `db..=de`:
//!
//! ```text
//! bw, dw (Python doubles): bw = (max - min) / B, dw = bw * (e - s + 1) / D;  dw == 0 -> error 0
//! begin = f32(f32(j - s) * f32(bw)),  end = f32(begin + f32(bw))
//! db = clamp(floor_div(begin, f32(dw)), 0, D - 1),  de = clamp(floor_div(end, f32(dw)), 0, D - 1)
//! h = f32(dw / 2);  density = f32(hist[j] / f32(bw))
//! norm(a, b) = f32(density * f32(f32(f32(f32(b*b)*b) - f32(f32(a*a)*a)) / 3))
//! err_j = f32(f32(norm(begin - f32(f32(db + 0.5) * f32(dw)), h)
//!                 + f32((de - db - 1) * f32(density * n0)))             n0 = norm(-h, h) / density
//!                 + norm(-h, end - f32(f32(de * f32(dw)) + h)))
//! L2(s, e) = torch.sum(err)       (float32, PyTorch's summation order, see `torch_sum`)
//! ```
//!
//! `floor_div` is PyTorch's (and Python's) floor division, `floor` of the exact quotient (see
//! [`floor_div`]). Every tensor operation is float32; Python scalars enter as doubles and are
//! rounded to float32 where they meet a tensor, exactly as above.

use super::torch_sum::torch_sum_f32;
use super::{check_width, finite_min_max, Observer, ObserverConfig, ObserverKind};
use crate::error::{Error, Result};
use crate::quant::QParams;

/// Number of destination bins of the L2 search: `2^8` for both 8-bit dtypes (PyTorch's
/// `dst_nbins`, independent of `reduce_range`).
pub const DST_NBINS: usize = 256;

/// PyTorch's `HistogramObserver`.
#[derive(Debug, Clone)]
pub struct HistogramObserver {
    config: ObserverConfig,
    range: Option<(f32, f32)>,
    hist: Vec<f32>,
    batches: usize,
}

impl HistogramObserver {
    /// Builds the observer; `config.kind` must be [`ObserverKind::Histogram`].
    pub fn new(config: ObserverConfig) -> Result<Self> {
        config.check_kind(ObserverKind::Histogram)?;
        let hist = vec![0.0; config.bins];
        Ok(HistogramObserver {
            config,
            range: None,
            hist,
            batches: 0,
        })
    }

    /// Restores a saved state (running `min`, `max` and the histogram), e.g. to replay the L2
    /// search on a histogram saved by PyTorch. The restored observer counts as having seen one
    /// batch and can keep observing.
    ///
    /// Errors: [`Error::Shape`] if `hist.len() != config.bins`; [`Error::InvalidParameter`] for a
    /// non-histogram config, a non-finite or inverted range, or a bin that is negative or
    /// non-finite.
    pub fn from_state(config: ObserverConfig, min: f32, max: f32, hist: Vec<f32>) -> Result<Self> {
        let mut obs = HistogramObserver::new(config)?;
        if hist.len() != obs.config.bins {
            return Err(Error::Shape(format!(
                "observer '{}': histogram has {} bins, the config has {}",
                obs.config.label,
                hist.len(),
                obs.config.bins
            )));
        }
        if !(min.is_finite() && max.is_finite() && min <= max) {
            return Err(Error::InvalidParameter(format!(
                "observer '{}': saved range [{min}, {max}] must be finite with min <= max",
                obs.config.label
            )));
        }
        check_width(min, max, &obs.config.label, "saved state")?;
        if let Some((i, v)) = hist
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(Error::InvalidParameter(format!(
                "observer '{}': histogram bin {i} is {v}; bins must be finite and >= 0",
                obs.config.label
            )));
        }
        obs.range = Some((min, max));
        obs.hist = hist;
        obs.batches = 1;
        Ok(obs)
    }

    /// The `bins` histogram bins over `[min, max]` (all zero before any data).
    pub fn histogram(&self) -> &[f32] {
        &self.hist
    }

    /// PyTorch's `_non_linear_param_search()`: the sub-range of `[min, max]` that minimizes the
    /// L2 quantization error estimate (see the module docs). Before any data it returns
    /// PyTorch's initial state `(+inf, -inf)`.
    pub fn non_linear_param_search(&self) -> (f32, f32) {
        let Some((min, max)) = self.range else {
            return (f32::INFINITY, f32::NEG_INFINITY);
        };
        let bins = self.hist.len();
        let bin_width = (max - min) / bins as f32;

        let total = torch_sum_f32(&self.hist) as f64;
        let mut acc = 0.0f64;
        let csum: Vec<f32> = self
            .hist
            .iter()
            .map(|&h| {
                acc += h as f64;
                acc as f32
            })
            .collect();

        let mut l2 = L2Search::new(&self.hist, min, max);
        let stepsize = 1e-5f64;
        let (mut alpha, mut beta) = (0.0f64, 1.0f64);
        let (mut start, mut end) = (0usize, bins - 1);
        let mut norm_min = f64::INFINITY;
        while alpha < beta {
            let next_alpha = alpha + stepsize;
            let next_beta = beta - stepsize;
            let lo_thr = (next_alpha * total) as f32;
            let hi_thr = (next_beta * total) as f32;
            // l = start; while l < end && csum[l] < lo_thr: l += 1
            let l = start + csum[start..end].partition_point(|&c| c < lo_thr);
            // r = end; while r > start && csum[r] > hi_thr: r -= 1
            let r = start + csum[start + 1..=end].partition_point(|&c| c <= hi_thr);

            let (mut next_start, mut next_end) = (start, end);
            if l - start > end - r {
                next_start = l;
                alpha = next_alpha;
            } else {
                next_end = r;
                beta = next_beta;
            }
            if next_start == start && next_end == end {
                continue;
            }
            let norm = l2.error(next_start, next_end);
            if norm > norm_min {
                break;
            }
            norm_min = norm;
            start = next_start;
            end = next_end;
        }
        let lo = min + bin_width * start as f32;
        let hi = min + bin_width * (end + 1) as f32;
        // `bw * B` may round above `max - min`; next to f32::MAX that would overflow to +inf
        // (PyTorch then returns an infinite scale). Keep the range finite instead.
        (lo, if hi.is_finite() { hi } else { max })
    }

    /// Adds the batch `x` with range `[bmin, bmax]` to the state (see the module docs).
    fn combine(&mut self, x: &[f32], bmin: f32, bmax: f32, min: f32, max: f32) {
        let bins = self.hist.len();
        let nmin = bmin.min(min);
        let nmax = bmax.max(max);
        let mut upd = vec![0.0f32; bins];
        histc(x, nmin, nmax, &mut upd);
        if nmin == min && nmax == max {
            for (h, u) in self.hist.iter_mut().zip(&upd) {
                *h += *u;
            }
        } else if min == max {
            let mass = torch_sum_f32(&self.hist);
            let mut one = vec![0.0f32; bins];
            histc(&[min], nmin, nmax, &mut one);
            for ((h, o), u) in self.hist.iter_mut().zip(&one).zip(&upd) {
                *h = *o * mass + *u;
            }
        } else {
            let remapped = upscale(&self.hist, self.config.upsample_rate, min, max, nmin, nmax);
            for ((h, r), u) in self.hist.iter_mut().zip(&remapped).zip(&upd) {
                *h = *u + *r;
            }
        }
        self.range = Some((nmin, nmax));
    }
}

impl Observer for HistogramObserver {
    fn observe(&mut self, x: &[f32], name: &str) -> Result<()> {
        let Some((bmin, bmax)) = finite_min_max(x, name)? else {
            return Ok(());
        };
        match self.range {
            None => {
                check_width(bmin, bmax, &self.config.label, name)?;
                self.hist.fill(0.0);
                histc(x, bmin, bmax, &mut self.hist);
                self.range = Some((bmin, bmax));
            }
            Some((min, max)) => {
                check_width(bmin.min(min), bmax.max(max), &self.config.label, name)?;
                self.combine(x, bmin, bmax, min, max);
            }
        }
        self.batches += 1;
        Ok(())
    }

    fn batches_seen(&self) -> usize {
        self.batches
    }

    fn min_max(&self) -> Option<(f32, f32)> {
        self.range
    }

    fn qparams_range(&self) -> Option<(f32, f32)> {
        self.range.map(|_| self.non_linear_param_search())
    }

    fn qparams(&self) -> Result<QParams> {
        let (lo, hi) = self
            .qparams_range()
            .ok_or_else(|| self.config.uncalibrated())?;
        self.config.calculate(lo, hi)
    }

    fn config(&self) -> &ObserverConfig {
        &self.config
    }

    fn histogram(&self) -> Option<&[f32]> {
        Some(&self.hist)
    }
}

/// `torch.histc(x, bins = hist.len(), min = lo, max = hi)` added into `hist` (see the module
/// docs). `lo == hi` widens the range to `[lo - 1, hi + 1]`.
pub fn histc(x: &[f32], lo: f32, hi: f32, hist: &mut [f32]) {
    let bins = hist.len();
    if bins == 0 {
        return;
    }
    let (lo, hi) = if lo == hi {
        ((lo as f64 - 1.0) as f32, (hi as f64 + 1.0) as f32)
    } else {
        (lo, hi)
    };
    let width = hi - lo;
    let nb = bins as f32;
    let last = bins - 1;
    for &v in x {
        if !(v >= lo && v <= hi) {
            continue;
        }
        // v >= lo, so the quotient is >= 0 and truncation is `as usize` (saturating).
        let pos = ((v - lo) * nb / width) as usize;
        hist[pos.min(last)] += 1.0;
    }
}

/// PyTorch's float32 `linspace(a, b, n)` (CPU kernel): `step = f32(f32(b - a) / (n - 1))`,
/// element `i` is `fma(step, i, a)` for `i < n / 2` and `fma(-step, n - 1 - i, b)` otherwise,
/// each with a single rounding. The first element is exactly `a`, the last exactly `b`.
pub fn linspace_f32(a: f32, b: f32, n: usize) -> Vec<f32> {
    match n {
        0 => return Vec::new(),
        1 => return vec![a],
        _ => {}
    }
    let step = (b - a) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, a)
            } else {
                (-step).mul_add((n - 1 - i) as f32, b)
            }
        })
        .collect()
}

/// `torch.bucketize(v, edges, right=True)`: PyTorch's binary search for the first edge `> v`
/// (the same probes as PyTorch, so the result matches even on a non-monotone `edges`).
fn upper_bound(edges: &[f32], v: f32) -> usize {
    let (mut start, mut end) = (0usize, edges.len());
    while start < end {
        let mid = start + ((end - start) >> 1);
        // PyTorch's test is `!(edges[mid] > v)`: anything but "greater" moves right.
        match edges[mid].partial_cmp(&v) {
            Some(std::cmp::Ordering::Greater) => end = mid,
            _ => start = mid + 1,
        }
    }
    start
}

/// `_upscale_histogram`: the old histogram over `[min, max]` remapped onto `hist.len()` bins over
/// `[nmin, nmax]` through `rate` sub-bins per bin (see the module docs).
fn upscale(hist: &[f32], rate: usize, min: f32, max: f32, nmin: f32, nmax: f32) -> Vec<f32> {
    let bins = hist.len();
    let n = bins * rate;
    let sub_width = (max - min) / n as f32;
    let half = 0.5f32 * sub_width;
    let points = linspace_f32(min, max, n + 1);
    let edges = linspace_f32(nmin, nmax, bins + 1);
    let rate_f = rate as f32;
    let mut out = vec![0.0f32; bins];
    for (k, &p) in points[..n].iter().enumerate() {
        let mid = p + half;
        let b = (upper_bound(&edges, mid) as isize - 1).clamp(0, bins as isize - 1) as usize;
        out[b] += hist[k / rate] / rate_f;
    }
    out
}

/// PyTorch's `torch.div(a, b, rounding_mode='floor')` for float32 (`c10::div_floor_floating`):
///
/// ```text
/// b == 0: a / b
/// mod = fmod(a, b); div = f32(f32(a - mod) / b); if mod != 0 and (b < 0) != (mod < 0): div -= 1
/// div != 0: fd = floor(div); if div - fd > 0.5: fd += 1; result fd
/// div == 0: copysign(0, a / b)
/// ```
///
/// This is `floor` of the *exact* quotient `a / b` whenever `|a / b| < 2^21`, which the fast path
/// uses: `q = f32(a / b)` lies within half an ulp of the exact quotient, so if `q` is not an
/// integer no integer lies between them and `floor(q)` is exact; if `q` is an integer `k`, the
/// exact quotient is below `k` iff `a < k b` (`b > 0`), checked exactly in double (`k b` has at
/// most 21 + 24 significant bits).
pub fn floor_div(a: f32, b: f32) -> f32 {
    if b > 0.0 {
        let q = a / b;
        if q.abs() < (1u32 << 21) as f32 {
            let f = q.floor();
            if q != f {
                return f;
            }
            // q is an integer: exact floor is f or f - 1. A zero result keeps the sign PyTorch
            // gives it (copysign(0, a / b)); it only matters through the clamp that follows.
            let r = if (a as f64) < f as f64 * b as f64 {
                f - 1.0
            } else {
                f
            };
            if r == 0.0 {
                return 0.0f32.copysign(q);
            }
            return r;
        }
    }
    floor_div_reference(a, b)
}

/// PyTorch's `c10::div_floor_floating`, literally (see [`floor_div`]).
pub fn floor_div_reference(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return a / b;
    }
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut fd = div.floor();
        if div - fd > 0.5 {
            fd += 1.0;
        }
        fd
    } else {
        0.0f32.copysign(a / b)
    }
}

/// `_compute_quantization_error` with the pieces that do not depend on the candidate range
/// precomputed.
struct L2Search {
    /// `f32(hist[j] / f32(bw))`.
    density: Vec<f32>,
    /// `bw = (max - min) / B` as a Python double.
    bw: f64,
    /// Scratch space for the per-bin errors.
    err: Vec<f32>,
}

impl L2Search {
    fn new(hist: &[f32], min: f32, max: f32) -> Self {
        let bw = (max as f64 - min as f64) / hist.len() as f64;
        let bwf = bw as f32;
        L2Search {
            density: hist.iter().map(|&h| h / bwf).collect(),
            bw,
            err: vec![0.0; hist.len()],
        }
    }

    /// The L2 error estimate of quantizing bins `s..=e` onto [`DST_NBINS`] bins (module docs).
    fn error(&mut self, s: usize, e: usize) -> f64 {
        let dw = self.bw * (e - s + 1) as f64 / DST_NBINS as f64;
        if dw == 0.0 {
            return 0.0;
        }
        let bwf = self.bw as f32;
        let dwf = dw as f32;
        let h = (dw / 2.0) as f32;
        let nh = (-dw / 2.0) as f32;
        let top = (DST_NBINS - 1) as f32;
        let cube = |v: f32| v * v * v;
        let h3 = cube(h);
        let nh3 = cube(nh);
        let n0 = (h3 - nh3) / 3.0;
        for (j, (out, &density)) in self.err.iter_mut().zip(&self.density).enumerate() {
            let begin = (j as f32 - s as f32) * bwf;
            let end = begin + bwf;
            let db = floor_div(begin, dwf).clamp(0.0, top);
            let de = floor_div(end, dwf).clamp(0.0, top);
            let delta_begin = begin - (db + 0.5) * dwf;
            let first = density * ((h3 - cube(delta_begin)) / 3.0);
            let middle = (de - db - 1.0) * (density * n0);
            let delta_end = end - (de * dwf + h);
            let last = density * ((cube(delta_end) - nh3) / 3.0);
            let mut acc = 0.0f32;
            acc += first;
            acc += middle;
            acc += last;
            *out = acc;
        }
        torch_sum_f32(&self.err) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_div_fast_path_matches_reference() {
        // Deterministic xorshift over a wide spread of magnitudes, plus near-integer quotients.
        let mut s = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..200_000 {
            let r = next();
            let b = f32::from_bits(0x3000_0000 + (r as u32 % 0x1800_0000)); // ~5e-10 .. ~3e4
            let k = ((r >> 32) % 600) as f32 - 300.0;
            let jitter = ((r >> 48) % 5) as i32 - 2;
            let a0 = k * b;
            let a = f32::from_bits((a0.to_bits() as i32 + jitter) as u32);
            let fast = floor_div(a, b);
            let reference = floor_div_reference(a, b);
            assert_eq!(
                fast.to_bits(),
                reference.to_bits(),
                "a = {a:e}, b = {b:e}: fast {fast}, reference {reference}"
            );
        }
        assert_eq!(floor_div(1.0, 0.0), f32::INFINITY);
        assert_eq!(floor_div(-0.5, 1.0), -1.0);
    }

    #[test]
    fn linspace_endpoints_and_symmetry() {
        let v = linspace_f32(-3.7, 4.1, 32769);
        assert_eq!(v[0], -3.7);
        assert_eq!(v[32768], 4.1);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(linspace_f32(1.0, 2.0, 1), vec![1.0]);
        assert_eq!(linspace_f32(0.0, 1.0, 5), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn histc_edges() {
        let mut h = vec![0.0f32; 4];
        histc(&[0.0, 0.25, 0.5, 0.999, 1.0, 1.5, -0.1], 0.0, 1.0, &mut h);
        assert_eq!(h, vec![1.0, 1.0, 1.0, 2.0]);
        let mut h = vec![0.0f32; 4];
        histc(&[0.7, 0.7], 0.7, 0.7, &mut h); // widened to [-0.3, 1.7]: 0.7 is the midpoint
        assert_eq!(h, vec![0.0, 0.0, 2.0, 0.0]);
    }

    #[test]
    fn upper_bound_is_searchsorted_right() {
        let e = [0.0f32, 1.0, 1.0, 2.0];
        assert_eq!(upper_bound(&e, -1.0), 0);
        assert_eq!(upper_bound(&e, 0.0), 1);
        assert_eq!(upper_bound(&e, 1.0), 3);
        assert_eq!(upper_bound(&e, 5.0), 4);
    }
}
