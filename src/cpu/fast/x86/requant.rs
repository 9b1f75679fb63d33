//! The requantization epilogue ([`Epilogue::apply`]) vectorized, bit for bit identical to the
//! scalar code for every formula.
//!
//! * AVX-512 (F + BW + VL): the per-channel constants [`Requant512`], the `fixed_512!`,
//!   [`requant_rel_512!`] and [`pack4_512!`] macros that the fused kernels (here and in the
//!   sibling `depthwise` module) expand inline, and the row epilogues [`requant_row_avx512`]
//!   and [`requant_tile_avx512`].
//! * AVX2: [`requant_row_avx2`] (8 lanes, clamping each i32 result).
//! * Shared: the fixed-point (`MultiplyByQuantizedMultiplier`) constants and their derivation,
//!   [`FixedConsts`], and the NaN-aware `round_f32_to_i32` ([`round_clamp_512`],
//!   [`round_clamp_256`]).

use crate::cpu::fast::portable;
use crate::quant::{Epilogue, QDtype, RequantFormula};
use std::arch::x86_64::*;

/// `round_f32_to_i32` of the epilogue on 16 lanes: round half to even, clamp to ±1e9 (exact
/// integers in f32, so clamping before or after rounding is the same), NaN → 0.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn round_clamp_512(v: __m512) -> __m512i {
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    let c = _mm512_min_ps(
        _mm512_max_ps(v, _mm512_set1_ps(-1.0e9)),
        _mm512_set1_ps(1.0e9),
    );
    let r = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(c);
    _mm512_maskz_mov_epi32(!nan, r)
}

/// `round_f32_to_i32` on 8 lanes (see [`round_clamp_512`]).
#[inline]
#[target_feature(enable = "avx2")]
fn round_clamp_256(v: __m256) -> __m256i {
    let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    let c = _mm256_min_ps(
        _mm256_max_ps(v, _mm256_set1_ps(-1.0e9)),
        _mm256_set1_ps(1.0e9),
    );
    // `vcvtps2dq` rounds as MXCSR says: to nearest, ties to even, in every Rust program.
    let r = _mm256_cvtps_epi32(c);
    _mm256_andnot_si256(nan, r)
}

/// The scalar constants of the vectorized fixed-point epilogue of one channel, or `None` when
/// the record lies outside what [`Epilogue::new`] produces (then the scalar code runs).
///
/// # The vectorized `MultiplyByQuantizedMultiplier`
///
/// With `x = acc + bq` (wrapping), `a = x << ls` (wrapping, `ls` taken mod 32 like
/// `wrapping_shl`), `q` the Q0.31 multiplier and `e` the right shift
/// ([`crate::quant::multiply_by_quantized_multiplier`]):
///
/// * `SRDHM(a, q) = trunc((a·q + ν) / 2^31)` with `ν = 2^30` if `a·q ≥ 0`, else `1 − 2^30`.
///   For `a·q ≥ 0` the numerator is ≥ 0, so `trunc = floor = (a·q + 2^30) >> 31`. For
///   `a·q ≤ −1` the numerator `v = a·q + 1 − 2^30` is < 0, so
///   `trunc(v / 2^31) = ceil(v / 2^31) = floor((v + 2^31 − 1) / 2^31) = (a·q + 2^30) >> 31`.
///   Hence `SRDHM(a, q) = (a·q + 2^30) >> 31` (arithmetic shift of the exact 64-bit value) in
///   every case but the saturating one `a = q = i32::MIN`, excluded by requiring
///   `q ≠ i32::MIN` (`QuantizeMultiplier` gives `q < 2^31`). `|a·q| < 2^62`, so the sum does
///   not overflow i64, and the result fits i32. It is computed with `vpmuldq` on the even and
///   the odd i32 lanes: the wanted 32 bits are bits 31..62 of `p = a·q + 2^30`, i.e. the low
///   dword of `p >> 31` (logical shift suffices) for even lanes, the high dword of `p << 1`
///   for odd lanes.
/// * `RDBPOT(r, e) = (r >> e) + (r & m > (m >> 1) + (r < 0))`, `m = 2^e − 1`, for `e ≤ 31`;
///   `(r < 0)` is `−(r >> 31)` (arithmetic), so the threshold is `(m >> 1) − (r >> 31)`.
/// * `clamp(sat_add(y, zp), lo, hi) = clamp(y, lo − zp, hi − zp) + zp`: `sat_add(·, zp)` is
///   monotone and equals `y + zp` on `[lo − zp, hi − zp]` (no overflow there), so both sides
///   agree inside that interval and give `lo` (resp. `hi`) below (above) it. Requires
///   `lo − zp`, `hi − zp` to fit i32.
#[derive(Clone, Copy)]
struct FixedConsts {
    /// The int bias `bq` added to the accumulator.
    bias: i32,
    /// The left shift `ls`, taken mod 32.
    ls: i32,
    /// The Q0.31 multiplier `q` (never `i32::MIN`).
    q: i32,
    /// The right shift `e` (`0..=31`).
    rs: i32,
    /// `m = 2^e − 1`, the remainder mask of `RDBPOT`.
    mask: i32,
    /// The output clamp minus the zero point: `lo − zp` and `hi − zp`.
    lo: i32,
    hi: i32,
    /// The output zero point.
    zp: i32,
}

impl FixedConsts {
    /// The constants of output channel `o` of `epi` (a fixed-point epilogue), or `None` (see
    /// the type).
    fn new(epi: &Epilogue, o: usize) -> Option<Self> {
        let c = &epi.channels[o];
        let zp = epi.out.zero_point;
        let lo = i32::try_from(epi.clamp.min as i64 - zp as i64).ok()?;
        let hi = i32::try_from(epi.clamp.max as i64 - zp as i64).ok()?;
        let rs = c.fp_right_shift;
        if c.fp_multiplier == i32::MIN || !(0..=31).contains(&rs) {
            return None;
        }
        Some(FixedConsts {
            bias: c.bias_i32,
            // `wrapping_shl(ls as u32)` shifts by `ls mod 32`.
            ls: (c.fp_left_shift as u32 & 31) as i32,
            q: c.fp_multiplier,
            rs,
            mask: ((1i64 << rs) - 1) as i32,
            lo,
            hi,
            zp,
        })
    }
}

/// Which vector epilogue a channel runs (`pub(super)`: [`requant_rel_512!`] expands in the
/// sibling kernel modules too).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A float formula whose constants are finite (no NaN can arise): round (after
    /// `min(v, 1e9)` where needed); the packs clamp (see [`Requant512`]).
    Finite(RequantFormula),
    /// A float formula with an infinite constant: NaN-aware rounding, then the int clamp.
    NonFinite(RequantFormula),
    /// The integer fixed-point formula.
    Fixed,
}

/// The constants of one channel's epilogue on 16 lanes (scalars, broadcast where used: the
/// compiler keeps them in registers or folds them as `{1to16}` memory operands).
///
/// # How the vector epilogue clamps
///
/// The kernels do not clamp each i32 result: [`requant_rel_512!`] gives a value `y` (i32)
/// such that the stored byte is `clamp(y + zp', lo, hi)` (`zp'` the zero point where the
/// formula adds it after rounding, else 0), and [`pack4_512!`] computes that with saturating
/// packs: `packs_epi32` (i32 → i16, saturating), `adds_epi16(zp')`, `packus/packs_epi16`
/// (→ the dtype range, saturating), then `max/min` with the byte clamp. This is exact: for
/// `|zp'| ≤ 1024`, a saturated i16 (±32767) plus `zp'` stays beyond the byte range on the same
/// side, and saturation to the dtype range followed by the clamp (inside that range) equals
/// the clamp. The float formulas only need `min(v, 1e9)` before `vcvtps2dq` (which rounds to
/// nearest even): below −2^31 it returns `i32::MIN`, on the right side; `round(min(v, 1e9))`
/// and the scalar `clamp(round(v), ±1e9)` then give the same clamped output, NaN aside (no NaN
/// arises with finite constants; otherwise the [`Mode::NonFinite`] path reproduces the scalar
/// code literally).
///
/// The fields are `pub(super)` because the macros that read them ([`requant_rel_512!`],
/// [`pack4_512!`]) also expand in the sibling kernel modules; outside `x86` the type is opaque.
#[derive(Clone, Copy)]
pub(crate) struct Requant512 {
    /// Which formula runs, and how (see [`Mode`]).
    pub(super) mode: Mode,
    /// Whether the output dtype is quint8 (else qint8).
    pub(super) unsigned: bool,
    /// The int bias added to the accumulator (qnnpack, fixed-point), which a kernel may fold
    /// into its accumulator's initial value instead (read it with [`Requant512::int_bias`]).
    ibias: i32,
    /// The output clamp minimum (i32), for [`Mode::NonFinite`].
    pub(super) lo: i32,
    /// The output clamp maximum (i32), for [`Mode::NonFinite`].
    pub(super) hi: i32,
    /// The output zero point (i32), for [`Mode::NonFinite`].
    pub(super) zp: i32,
    /// The output zero point as f32 (the onednn formula adds it before rounding).
    pub(super) zpf: f32,
    /// `zp'` as i16 lanes (0 where the formula adds the zero point before rounding).
    pub(super) zp16: i16,
    /// The output clamp minimum as a byte.
    pub(super) bmin: i8,
    /// The output clamp maximum as a byte.
    pub(super) bmax: i8,
    /// The channel's int bias (`bias_i32`), added by [`requant_rel_512!`] when asked to.
    pub(super) bias_i: i32,
    /// The channel's float bias (`bias_f32`: fbgemm, onednn).
    pub(super) bias_f: f32,
    /// The channel's first float multiplier (`mult`).
    pub(super) mult: f32,
    /// The second float multiplier of the onednn formula (`mult2`).
    pub(super) mult2: f32,
    /// The inverse output scale of the onednn formula (`inv_out_scale`).
    pub(super) inv: f32,
    /// Fixed point: the Q0.31 multiplier `q`.
    pub(super) q: i32,
    /// Fixed point: `2^e − 1`, the remainder mask of `RDBPOT`.
    pub(super) rmask: i32,
    /// Fixed point: `(2^e − 1) >> 1`, the rounding threshold of `RDBPOT`.
    pub(super) rhalf: i32,
    /// Fixed point: the left shift count (mod 32).
    pub(super) ls: i32,
    /// Fixed point: the right shift count `e`.
    pub(super) rs: i32,
    /// Fixed point: `ls == 0` (the shift is skipped).
    pub(super) ls_zero: bool,
    /// Fixed point: `rs == 0` (no rounding shift).
    pub(super) rs_zero: bool,
    /// Fixed point: `RDBPOT(r, e) = (r + 2^(e−1) + (r >> 31)) >> e` cannot overflow (see
    /// [`Requant512::new`]); `rhalf + 1` is then `2^(e−1)`.
    pub(super) fast_round: bool,
    /// Float formulas: whether `min(v, 1e9)` is needed before the conversion (else `|v|` is
    /// known to stay below 2^30).
    pub(super) clamp_hi: bool,
}

impl Requant512 {
    /// The constants of output channel `o`, or `None` when the vector code cannot reproduce
    /// the record (the scalar code runs instead): a fixed-point record outside what
    /// [`Epilogue::new`] produces (see [`FixedConsts::new`]), an output zero point beyond
    /// ±1024 or a clamp outside the output dtype's range (invalid qparams).
    ///
    /// `acc_bound` bounds `|acc|` (`u64::MAX`: unknown); two shortcuts depend on it.
    ///
    /// * Float formulas: when `|v| < 2^30` for every `|acc| ≤ acc_bound` — `v` bounded by
    ///   the same expression in f64 on the absolute values of the constants, times
    ///   `1 + 2^-20` to cover the at most five f32 roundings — `vcvtps2dq` needs no
    ///   `min(v, 1e9)` first.
    /// * Fixed point with `e ≥ 1`: `RDBPOT(r, e)` rounds half away from zero, that is
    ///   `⌊(r + 2^(e−1)) / 2^e⌋` for `r ≥ 0` (the remainder exceeds `2^(e−1) − 1`) and
    ///   `⌊(r + 2^(e−1) − 1) / 2^e⌋` for `r < 0` (it must exceed `2^(e−1)`): both are
    ///   `(r + 2^(e−1) + (r >> 31)) >> e`, 4 operations instead of 6, provided the sum does
    ///   not overflow. With `x = (acc + bq) << ls`, `|r| = |SRDHM(x, q)| ≤ |x| + 1`, so
    ///   `(acc_bound + |bq|)·2^ls + 2 + 2^(e−1) < 2^31` is enough (and for `r < 0` the sum is
    ///   at least `−2^31`).
    pub(crate) fn new(epi: &Epilogue, o: usize, acc_bound: u64) -> Option<Self> {
        let c = &epi.channels[o];
        let zp = epi.out.zero_point;
        let full = epi.out.dtype.full_range();
        if !(-1024..=1024).contains(&zp)
            || epi.clamp.min < full.min
            || epi.clamp.max > full.max
            || epi.clamp.min > epi.clamp.max
        {
            return None;
        }
        let onednn = epi.formula == RequantFormula::Onednn;
        let fixed = match epi.formula {
            RequantFormula::FixedPoint => Some(FixedConsts::new(epi, o)?),
            _ => None,
        };
        // NaN needs an infinite constant (`0·inf`, or `inf·0` after an overflow to inf), so
        // with finite constants (non-zero where they multiply) the NaN check can go.
        let finite = c.mult.is_finite()
            && c.bias_f32.is_finite()
            && (!onednn
                || (c.mult2.is_finite()
                    && c.mult2 != 0.0
                    && c.inv_out_scale.is_finite()
                    && c.inv_out_scale != 0.0));
        let mode = match (fixed, finite) {
            (Some(_), _) => Mode::Fixed,
            (None, true) => Mode::Finite(epi.formula),
            (None, false) => Mode::NonFinite(epi.formula),
        };
        let zp_after = match mode {
            Mode::Fixed => zp,
            Mode::Finite(f) if f != RequantFormula::Onednn => zp,
            _ => 0,
        };
        let ibias = match epi.formula {
            RequantFormula::Qnnpack | RequantFormula::FixedPoint => c.bias_i32,
            _ => 0,
        };
        let f = fixed.unwrap_or(FixedConsts {
            bias: 0,
            ls: 0,
            q: 0,
            rs: 0,
            mask: 0,
            lo: 0,
            hi: 0,
            zp,
        });
        let a = acc_bound as f64;
        let v_bound = match epi.formula {
            RequantFormula::Qnnpack => (a + (c.bias_i32 as f64).abs()) * (c.mult as f64).abs(),
            RequantFormula::Fbgemm => (a + (c.bias_f32 as f64).abs()) * (c.mult as f64).abs(),
            _ => {
                let v = a * (c.mult as f64).abs() * (c.mult2 as f64).abs();
                (v + (c.bias_f32 as f64).abs()) * (c.inv_out_scale as f64).abs() + zp.abs() as f64
            }
        } * (1.0 + 1.0 / (1u64 << 20) as f64);
        // (Also clamps when the bound is NaN.)
        let clamp_hi = v_bound.is_nan() || v_bound >= (1u64 << 30) as f64;
        let fast_round = f.rs >= 1
            && ((acc_bound as u128 + (f.bias as i64).unsigned_abs() as u128) << f.ls)
                + 2
                + (1u128 << (f.rs - 1))
                < 1u128 << 31;
        Some(Requant512 {
            mode,
            fast_round,
            clamp_hi,
            unsigned: epi.out.dtype == QDtype::QUInt8,
            ibias,
            lo: epi.clamp.min,
            hi: epi.clamp.max,
            zp,
            zpf: zp as f32,
            zp16: zp_after as i16,
            bmin: epi.clamp.min as i8,
            bmax: epi.clamp.max as i8,
            bias_i: c.bias_i32,
            bias_f: c.bias_f32,
            mult: c.mult,
            mult2: c.mult2,
            inv: c.inv_out_scale,
            q: f.q,
            rmask: f.mask,
            rhalf: f.mask >> 1,
            ls: f.ls,
            rs: f.rs,
            ls_zero: f.ls == 0,
            rs_zero: f.rs == 0,
        })
    }

    /// The int bias that [`requant_rel_512!`] adds to the accumulator when asked to (0 for
    /// the formulas without one): a kernel may add it to its accumulators' initial value
    /// instead (the same wrapping sum).
    pub(crate) fn int_bias(&self) -> i32 {
        self.ibias
    }
}

/// The fixed-point `MultiplyByQuantizedMultiplier(x)` on 16 lanes, `x = acc (+ bq)` (see
/// [`FixedConsts`] for the derivation), without the zero point and the clamp:
/// `fixed_512!(k: &Requant512, x: __m512i) -> __m512i`.
///
/// A macro rather than a function so that it is always inlined into the (target-feature)
/// kernels (`#[inline(always)]` cannot be combined with `#[target_feature]`, and closures or
/// plain `#[inline]` functions were seen not to be). Needs avx512f and
/// `std::arch::x86_64::*` in scope.
macro_rules! fixed_512 {
    ($k:expr, $x:expr) => {{
        use $crate::cpu::fast::x86::requant::Requant512;
        let (k, x): (&Requant512, __m512i) = ($k, $x);
        let x = if k.ls_zero {
            x
        } else {
            _mm512_sll_epi32(x, _mm_cvtsi32_si128(k.ls))
        };
        let half = _mm512_set1_epi64(1 << 30);
        let even = _mm512_add_epi64(_mm512_mul_epi32(x, _mm512_set1_epi32(k.q)), half);
        let odd = _mm512_add_epi64(
            _mm512_mul_epi32(_mm512_srli_epi64::<32>(x), _mm512_set1_epi32(k.q)),
            half,
        );
        let r = _mm512_mask_blend_epi32(
            0xaaaa,
            _mm512_srli_epi64::<31>(even),
            _mm512_slli_epi64::<1>(odd),
        );
        if k.rs_zero {
            r
        } else if k.fast_round {
            let rounded = _mm512_add_epi32(
                _mm512_add_epi32(r, _mm512_set1_epi32(k.rhalf + 1)),
                _mm512_srai_epi32::<31>(r),
            );
            _mm512_sra_epi32(rounded, _mm_cvtsi32_si128(k.rs))
        } else {
            let threshold =
                _mm512_sub_epi32(_mm512_set1_epi32(k.rhalf), _mm512_srai_epi32::<31>(r));
            let up =
                _mm512_cmpgt_epi32_mask(_mm512_and_si512(r, _mm512_set1_epi32(k.rmask)), threshold);
            let sh = _mm512_sra_epi32(r, _mm_cvtsi32_si128(k.rs));
            _mm512_mask_sub_epi32(sh, up, sh, _mm512_set1_epi32(-1))
        }
    }};
}

/// [`Epilogue::apply`] on 16 accumulators, up to the zero point and the clamp (see
/// [`Requant512`]): `requant_rel_512!(k: &Requant512, a: __m512i, bias: bool) -> __m512i`,
/// `bias` telling whether to add the int bias ([`Requant512::int_bias`]) here (else the
/// kernel folded it into `a`). The float formulas use the same operations in the same order
/// (no FMA contraction; `vcvtdq2ps` rounds to nearest even like `as f32`, `vcvtps2dq` with
/// `{rn-sae}` like `round_ties_even`), the fixed-point one [`fixed_512!`]. A macro, always
/// inlined (see [`fixed_512!`]); needs avx512f and `std::arch::x86_64::*` in scope.
macro_rules! requant_rel_512 {
    ($k:expr, $a:expr, $bias:expr) => {{
        use $crate::cpu::fast::x86::requant::{round_clamp_512, Mode, Requant512};
        use $crate::quant::RequantFormula;
        let (k, a): (&Requant512, __m512i) = ($k, $a);
        let ai = if $bias {
            _mm512_add_epi32(a, _mm512_set1_epi32(k.bias_i))
        } else {
            a
        };
        // `vcvtps2dq`, after `min(v, 1e9)` unless `|v| < 2^30` is known.
        macro_rules! round {
            ($v:expr) => {{
                let v = $v;
                let v = if k.clamp_hi {
                    _mm512_min_ps(v, _mm512_set1_ps(1.0e9))
                } else {
                    v
                };
                _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v)
            }};
        }
        match k.mode {
            Mode::Fixed => $crate::cpu::fast::x86::requant::fixed_512!(k, ai),
            Mode::Finite(formula) => match formula {
                RequantFormula::Qnnpack => round!(_mm512_mul_ps(
                    _mm512_cvtepi32_ps(ai),
                    _mm512_set1_ps(k.mult)
                )),
                RequantFormula::Fbgemm => {
                    round!(_mm512_mul_ps(
                        _mm512_add_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(k.bias_f)),
                        _mm512_set1_ps(k.mult)
                    ))
                }
                _ => {
                    let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(k.mult));
                    v = _mm512_mul_ps(v, _mm512_set1_ps(k.mult2));
                    v = _mm512_add_ps(v, _mm512_set1_ps(k.bias_f));
                    v = _mm512_mul_ps(v, _mm512_set1_ps(k.inv));
                    v = _mm512_add_ps(v, _mm512_set1_ps(k.zpf));
                    round!(v)
                }
            },
            Mode::NonFinite(formula) => {
                // The scalar code literally, clamp included.
                let y = match formula {
                    RequantFormula::Qnnpack => {
                        let v = _mm512_mul_ps(_mm512_cvtepi32_ps(ai), _mm512_set1_ps(k.mult));
                        _mm512_add_epi32(round_clamp_512(v), _mm512_set1_epi32(k.zp))
                    }
                    RequantFormula::Fbgemm => {
                        let v = _mm512_mul_ps(
                            _mm512_add_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(k.bias_f)),
                            _mm512_set1_ps(k.mult),
                        );
                        _mm512_add_epi32(round_clamp_512(v), _mm512_set1_epi32(k.zp))
                    }
                    _ => {
                        let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(k.mult));
                        v = _mm512_mul_ps(v, _mm512_set1_ps(k.mult2));
                        v = _mm512_add_ps(v, _mm512_set1_ps(k.bias_f));
                        v = _mm512_mul_ps(v, _mm512_set1_ps(k.inv));
                        v = _mm512_add_ps(v, _mm512_set1_ps(k.zpf));
                        round_clamp_512(v)
                    }
                };
                _mm512_max_epi32(
                    _mm512_min_epi32(y, _mm512_set1_epi32(k.hi)),
                    _mm512_set1_epi32(k.lo),
                )
            }
        }
    }};
}

/// The stored bytes of four vectors of [`requant_rel_512!`] results (see [`Requant512`]):
/// `pack4_512!(k, y0, y1, y2, y3) -> __m512i`, holding in 128-bit lane `i` the bytes of
/// `y0[4i .. 4i + 4]`, `y1[..]`, `y2[..]`, `y3[..]` (the in-lane order of the packs). Needs
/// avx512bw and `std::arch::x86_64::*` in scope.
macro_rules! pack4_512 {
    ($k:expr, $y0:expr, $y1:expr, $y2:expr, $y3:expr) => {{
        use $crate::cpu::fast::x86::requant::Requant512;
        let k: &Requant512 = $k;
        let a = _mm512_adds_epi16(_mm512_packs_epi32($y0, $y1), _mm512_set1_epi16(k.zp16));
        let b = _mm512_adds_epi16(_mm512_packs_epi32($y2, $y3), _mm512_set1_epi16(k.zp16));
        if k.unsigned {
            _mm512_min_epu8(
                _mm512_max_epu8(_mm512_packus_epi16(a, b), _mm512_set1_epi8(k.bmin)),
                _mm512_set1_epi8(k.bmax),
            )
        } else {
            _mm512_min_epi8(
                _mm512_max_epi8(_mm512_packs_epi16(a, b), _mm512_set1_epi8(k.bmin)),
                _mm512_set1_epi8(k.bmax),
            )
        }
    }};
}

// Path-based scope for the macros, so that the sibling kernel modules can import them (and
// the macros can name each other by path).
pub(super) use {fixed_512, pack4_512, requant_rel_512};

/// [`Epilogue::apply`] for output channel `o` on 16 lanes at a time ([`requant_rel_512!`],
/// [`pack4_512!`]), then the byte store; identical to the scalar code for every formula.
///
/// # Safety
/// avx512f, avx512bw and avx512vl must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn requant_row_avx512(epi: &Epilogue, o: usize, acc: &[i32], out: &mut [u8]) {
    // SAFETY: the caller guarantees the target features; every access below stays inside
    // `acc` and `out` (masked to the valid lanes).
    unsafe {
        let n = acc.len().min(out.len());
        let Some(k) = Requant512::new(epi, o, u64::MAX) else {
            return portable::requant_row(epi, o, &acc[..n], &mut out[..n]);
        };
        // Restores output order after the in-lane packs: dword d of the result is dword
        // 4·(d mod 4) + d/4 of the packed vector.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let mut i = 0;
        while i < n {
            let rem = (n - i).min(64);
            let mut y = [_mm512_setzero_si512(); 4];
            for (j, yj) in y.iter_mut().enumerate() {
                let left = rem.saturating_sub(16 * j).min(16);
                let m: __mmask16 = ((1u32 << left) - 1) as u16;
                let a = _mm512_maskz_loadu_epi32(m, acc.as_ptr().add(i + 16 * j));
                *yj = requant_rel_512!(&k, a, true);
            }
            let bytes = _mm512_permutexvar_epi32(order, pack4_512!(&k, y[0], y[1], y[2], y[3]));
            let m: __mmask64 = super::low_bits(rem);
            _mm512_mask_storeu_epi8(out.as_mut_ptr().add(i).cast(), m, bytes);
            i += rem;
        }
    }
}

/// One valid run of a tile row in [`requant_tile_avx512`]: the byte mask of its tile
/// positions and the offset (in bytes, possibly negative) of tile position 0 from the
/// channel's output base, so that a masked 64-byte store at `base + shift` writes exactly
/// the run.
#[derive(Clone, Copy)]
pub(crate) struct RunMask {
    /// Tile positions of the run (`len` bits from `at`).
    pub(crate) bits: u64,
    /// `off − at`: where tile position 0 would land.
    pub(crate) shift: isize,
}

impl RunMask {
    /// The run at tile position `at`, output offset `off`, `len` long (`at + len ≤ 64`).
    pub(crate) fn new(at: usize, off: usize, len: usize) -> Self {
        debug_assert!(at + len <= 64);
        let bits = super::low_bits(len);
        RunMask {
            bits: bits << at,
            shift: off as isize - at as isize,
        }
    }
}

/// Requantizes the first `ks.len()` rows of a GEMM tile (row `r`: 64 accumulators of the
/// output channel whose constants are `ks[r]`, like [`requant_row_avx512`]) and stores the
/// valid runs `runs` of each row straight from the register with masked stores, row `r` at
/// `out + r·stride`. One call per tile: the loads are whole rows (the lanes past the valid
/// runs are computed and never stored) and the run masks are built once for all rows.
///
/// # Safety
/// avx512f, avx512bw and avx512vl must be available; `ks.len() ≤ 6`; every run must lie in
/// the output of every row (`out + r·stride + shift + [bits]`). The masked stores address
/// `out + r·stride + shift`, possibly outside the output, but only the run's bytes are
/// accessed.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn requant_tile_avx512(
    ks: &[Requant512],
    tile: &[[i32; 64]; 6],
    runs: &[RunMask],
    mut out: *mut u8,
    stride: usize,
) {
    // SAFETY: the caller guarantees the target features and the ranges; the loads read
    // whole tile rows.
    unsafe {
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        for (k, row) in ks.iter().zip(tile) {
            let a = row.as_ptr();
            let y0 = requant_rel_512!(k, _mm512_loadu_si512(a.cast()), true);
            let y1 = requant_rel_512!(k, _mm512_loadu_si512(a.add(16).cast()), true);
            let y2 = requant_rel_512!(k, _mm512_loadu_si512(a.add(32).cast()), true);
            let y3 = requant_rel_512!(k, _mm512_loadu_si512(a.add(48).cast()), true);
            let bytes = _mm512_permutexvar_epi32(order, pack4_512!(k, y0, y1, y2, y3));
            for run in runs {
                _mm512_mask_storeu_epi8(out.wrapping_offset(run.shift).cast(), run.bits, bytes);
            }
            out = out.wrapping_add(stride);
        }
    }
}

/// The fixed-point epilogue on 8 lanes (see [`FixedConsts`]; AVX2 has no 64-bit arithmetic
/// shift, but only bits 31..62 of each product are kept, which logical shifts reach too).
#[inline]
#[target_feature(enable = "avx2")]
fn fixed_256(f: &FixedConsts, a: __m256i) -> __m256i {
    let x = _mm256_sll_epi32(
        _mm256_add_epi32(a, _mm256_set1_epi32(f.bias)),
        _mm_cvtsi32_si128(f.ls),
    );
    let q = _mm256_set1_epi32(f.q);
    let half = _mm256_set1_epi64x(1 << 30);
    let even = _mm256_add_epi64(_mm256_mul_epi32(x, q), half);
    let odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64::<32>(x), q), half);
    let r = _mm256_blend_epi32::<0xaa>(_mm256_srli_epi64::<31>(even), _mm256_slli_epi64::<1>(odd));
    let mask = _mm256_set1_epi32(f.mask);
    let threshold = _mm256_sub_epi32(_mm256_set1_epi32(f.mask >> 1), _mm256_srai_epi32::<31>(r));
    let up = _mm256_cmpgt_epi32(_mm256_and_si256(r, mask), threshold);
    // `up` is −1 where the quotient rounds away from zero.
    let y = _mm256_sub_epi32(_mm256_sra_epi32(r, _mm_cvtsi32_si128(f.rs)), up);
    let y = _mm256_min_epi32(
        _mm256_max_epi32(y, _mm256_set1_epi32(f.lo)),
        _mm256_set1_epi32(f.hi),
    );
    _mm256_add_epi32(y, _mm256_set1_epi32(f.zp))
}

/// Stores the 8 lanes of `y` (each inside the output dtype's range: `[-128, 127]` when
/// `signed`, else `[0, 255]`) as 8 bytes at `dst`: the two's-complement low byte of each, as
/// `int_to_byte` writes it. Two packs, no saturation (the values are in range).
///
/// # Safety
/// avx2 must be available and `dst..dst + 8` writable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store8_bytes(y: __m256i, signed: bool, dst: *mut u8) {
    let w16 = _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y));
    let b = if signed {
        _mm_packs_epi16(w16, w16)
    } else {
        _mm_packus_epi16(w16, w16)
    };
    // SAFETY: guaranteed by the caller.
    unsafe { _mm_storel_epi64(dst.cast(), b) };
}

/// [`store8_bytes`] of four vectors: 32 bytes at `dst`, in lane order.
///
/// # Safety
/// avx2 must be available and `dst..dst + 32` writable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store32_bytes(y: [__m256i; 4], signed: bool, dst: *mut u8) {
    // In-lane packs interleave the 128-bit halves; the dword permute restores lane order.
    let a = _mm256_packs_epi32(y[0], y[1]);
    let b = _mm256_packs_epi32(y[2], y[3]);
    let bytes = if signed {
        _mm256_packs_epi16(a, b)
    } else {
        _mm256_packus_epi16(a, b)
    };
    let fixed = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: guaranteed by the caller.
    unsafe { _mm256_storeu_si256(dst.cast(), fixed) };
}

/// The float formulas of [`Mode::Finite`] on 8 lanes: i32 accumulators `a` of channel `k` to
/// rounded i32 levels (before the zero point, packs and clamp), as [`requant_rel_512!`] does
/// on 16 (`min(v, 1e9)` first where `k.clamp_hi`). A macro, not a function or closure, so that
/// it inlines into the target-feature code of its callers.
macro_rules! finite_256 {
    ($k:expr, $formula:expr, $a:expr) => {{
        use $crate::cpu::fast::x86::requant::Requant512;
        use $crate::quant::RequantFormula;
        let (k, a): (&Requant512, __m256i) = ($k, $a);
        let v = match $formula {
            RequantFormula::Qnnpack => _mm256_mul_ps(
                _mm256_cvtepi32_ps(_mm256_add_epi32(a, _mm256_set1_epi32(k.bias_i))),
                _mm256_set1_ps(k.mult),
            ),
            RequantFormula::Fbgemm => _mm256_mul_ps(
                _mm256_add_ps(_mm256_cvtepi32_ps(a), _mm256_set1_ps(k.bias_f)),
                _mm256_set1_ps(k.mult),
            ),
            _ => {
                let mut v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), _mm256_set1_ps(k.mult));
                v = _mm256_mul_ps(v, _mm256_set1_ps(k.mult2));
                v = _mm256_add_ps(v, _mm256_set1_ps(k.bias_f));
                v = _mm256_mul_ps(v, _mm256_set1_ps(k.inv));
                _mm256_add_ps(v, _mm256_set1_ps(k.zpf))
            }
        };
        let v = if k.clamp_hi {
            _mm256_min_ps(v, _mm256_set1_ps(1.0e9))
        } else {
            v
        };
        // `vcvtps2dq` rounds as MXCSR says: to nearest, ties to even, in every Rust program
        // (the `vroundps` before it was a tenth of this epilogue).
        _mm256_cvtps_epi32(v)
    }};
}

/// The stored bytes of four vectors of [`finite_256!`] results, the 8-lane [`pack4_512!`]:
/// `pack4_256!(k, y0, y1, y2, y3) -> __m256i`, holding in 128-bit lane `i` the bytes of
/// `y0[4i .. 4i + 4]`, `y1[..]`, `y2[..]`, `y3[..]` (the in-lane order of the packs), the
/// zero point added and the clamp applied by the saturating packs (see [`Requant512`]).
/// Needs avx2 and `std::arch::x86_64::*` in scope.
macro_rules! pack4_256 {
    ($k:expr, $y0:expr, $y1:expr, $y2:expr, $y3:expr) => {{
        let k: &$crate::cpu::fast::x86::requant::Requant512 = $k;
        let zp16 = _mm256_set1_epi16(k.zp16);
        let a = _mm256_adds_epi16(_mm256_packs_epi32($y0, $y1), zp16);
        let b = _mm256_adds_epi16(_mm256_packs_epi32($y2, $y3), zp16);
        let (bmin, bmax) = (_mm256_set1_epi8(k.bmin), _mm256_set1_epi8(k.bmax));
        if k.unsigned {
            _mm256_min_epu8(_mm256_max_epu8(_mm256_packus_epi16(a, b), bmin), bmax)
        } else {
            _mm256_min_epi8(_mm256_max_epi8(_mm256_packs_epi16(a, b), bmin), bmax)
        }
    }};
}

// Path-based scope, as above, for the ymm depthwise kernel.
pub(super) use {finite_256, pack4_256};

/// The `8·j`-th to `8·j + 7`-th of the `rem` accumulators at `src` (lanes past `rem` read as
/// 0, and never accessed: `vpmaskmovd`), for a row's tail without copying it.
///
/// # Safety
/// avx2 must be available; `src .. src + rem` readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_tail8(src: *const i32, rem: usize, j: usize) -> __m256i {
    let left = rem as i32 - 8 * j as i32;
    let mask = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(left),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    // SAFETY: only the lanes below `rem` are accessed (guaranteed readable by the caller).
    unsafe { _mm256_maskload_epi32(src.wrapping_add(8 * j), mask) }
}

/// Stores the first `len < 32` bytes of `v` at `dst`, by pieces of 16 and 8 bytes, then the
/// last 4 to 7 as two overlapping 4-byte stores, or 1 to 3 single bytes (no call:
/// `copy_from_slice` of a variable length calls `memcpy`, 14% of a small-plane depthwise conv
/// on these paths).
///
/// # Safety
/// avx2 must be available; `dst .. dst + len` writable.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn store_tail_bytes(dst: *mut u8, v: __m256i, len: usize) {
    debug_assert!(len < 32);
    // SAFETY: every store below lies in `dst .. dst + len`.
    unsafe {
        let mut off = 0;
        let mut cur = _mm256_castsi256_si128(v);
        if len >= 16 {
            _mm_storeu_si128(dst.cast(), cur);
            cur = _mm256_extracti128_si256::<1>(v);
            off = 16;
        }
        if len - off >= 8 {
            _mm_storel_epi64(dst.add(off).cast(), cur);
            cur = _mm_srli_si128::<8>(cur);
            off += 8;
        }
        // The last `rem < 8` bytes are the low bytes of `q`.
        let (rem, q) = (len - off, _mm_cvtsi128_si64(cur) as u64);
        if rem >= 4 {
            dst.add(off).cast::<u32>().write_unaligned(q as u32);
            let last = (q >> (8 * (rem - 4))) as u32;
            dst.add(off + rem - 4).cast::<u32>().write_unaligned(last);
        } else {
            for i in 0..rem {
                *dst.add(off + i) = (q >> (8 * i)) as u8;
            }
        }
    }
}

/// [`requant_row_avx2`] for a float formula whose constants are finite ([`Mode::Finite`]):
/// the operations of [`requant_rel_512!`] on 8 lanes (no NaN can arise; `min(v, 1e9)` before
/// rounding, `vcvtps2dq` after `vroundps` to nearest even, as the scalar code), and the
/// saturating packs of [`pack4_512!`] for the zero point and the clamp (see [`Requant512`]),
/// 32 accumulators per step, the tail as one more step ([`load_tail8`], [`store_tail_bytes`]).
///
/// # Safety
/// avx2 must be available.
#[target_feature(enable = "avx2")]
unsafe fn requant_row_finite_avx2(
    k: &Requant512,
    formula: RequantFormula,
    acc: &[i32],
    out: &mut [u8],
) {
    // SAFETY: the caller guarantees the target feature; loads and stores stay inside the
    // `body` first elements of `acc` and `out`.
    unsafe {
        let n = acc.len().min(out.len());
        let body = n / 32 * 32;
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        // (Macros, not closures: closures are not reliably inlined into target-feature code.)
        // The tail (< 32 accumulators) as one more step: masked loads (0 past the row), its
        // bytes stored by pieces.
        let rem = n - body;
        macro_rules! rows {
            (|$a:ident| $y:expr) => {{
                for i in (0..body + 32).step_by(32) {
                    let tail = i >= body;
                    if tail && rem == 0 {
                        break;
                    }
                    let src = acc.as_ptr().wrapping_add(i);
                    let mut y = [_mm256_setzero_si256(); 4];
                    for (j, yj) in y.iter_mut().enumerate() {
                        let $a = if tail {
                            load_tail8(src, rem, j)
                        } else {
                            _mm256_loadu_si256(src.add(8 * j).cast())
                        };
                        *yj = $y;
                    }
                    let bytes = pack4_256!(k, y[0], y[1], y[2], y[3]);
                    let bytes = _mm256_permutevar8x32_epi32(bytes, order);
                    if tail {
                        store_tail_bytes(out.as_mut_ptr().add(i), bytes, rem);
                    } else {
                        _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), bytes);
                    }
                }
            }};
        }
        // One loop per formula (a constant in the first two, so the match folds away).
        match formula {
            RequantFormula::Qnnpack => rows!(|a| finite_256!(k, RequantFormula::Qnnpack, a)),
            RequantFormula::Fbgemm => rows!(|a| finite_256!(k, RequantFormula::Fbgemm, a)),
            f => rows!(|a| finite_256!(k, f, a)),
        }
    }
}

/// One channel's row epilogue on the ymm paths with its constants built by the caller (a
/// layer caches them per input qparams): [`requant_row_finite_avx2`], the bytes of
/// [`requant_row_avx2`] at any length (building the constants per row cost more than rows
/// under 256 values save).
///
/// # Safety
/// avx2 must be available; `k` must be [`Requant512::ymm_tile_ready`], built with a bound
/// of the accumulators in `acc`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn requant_row_cached_avx2(k: &Requant512, acc: &[i32], out: &mut [u8]) {
    let Mode::Finite(formula) = k.mode else {
        unreachable!("the caller checked ymm_tile_ready");
    };
    // SAFETY: guaranteed by the caller.
    unsafe { requant_row_finite_avx2(k, formula, acc, out) }
}

impl Requant512 {
    /// Whether [`requant_tile_avx2`] runs this channel: a float formula with finite constants.
    pub(crate) fn ymm_tile_ready(&self) -> bool {
        matches!(self.mode, Mode::Finite(_))
    }
}

/// The epilogue of one GEMM tile on the ymm paths (AVX-VNNI, AVX2): rows `r < ks.len()` of
/// `tile` (channel `r` with constants `ks[r]`, each [`Requant512::ymm_tile_ready`]), pixels
/// `..npx`, requantized 16 at a time and stored to the runs `(at, off, len)` of each row
/// (`out + r·stride + off`). The same bytes as [`requant_row_avx2`] per row (the operations of
/// [`requant_row_finite_avx2`] on 16 lanes), in one call per tile with the constants built
/// once per layer call: the per-row calls, constants and run copies took a fifth of an
/// int8 MobileNetV2 run on these paths, whose tiles are 16 pixels wide.
///
/// # Safety
/// avx2 must be available; `ks.len() ≤ 6`, `npx ≤ 64`; every run lies in `..npx` of the row
/// and `out + r·stride + off .. + len` is writable for each row `r` and run.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn requant_tile_avx2(
    ks: &[Requant512],
    tile: &[[i32; 64]; 6],
    npx: usize,
    runs: &[(usize, usize, usize)],
    out: *mut u8,
    stride: usize,
) {
    // Whole 16-pixel chunks, each one run where it lands (a 1x1 conv's tiles, or any tile
    // inside one output row): stored straight from the register.
    let direct = runs.iter().all(|&(at, _, len)| at % 16 == 0 && len == 16);
    // One loop per formula (every channel of a layer has its epilogue's formula; the first
    // two constant, so that the match in `finite_256!` folds away).
    macro_rules! rows {
        ($formula:expr) => {
            for (r, (k, row)) in ks.iter().zip(tile).enumerate() {
                let Mode::Finite(formula) = k.mode else {
                    unreachable!("the caller checked ymm_tile_ready");
                };
                debug_assert!(formula == $formula);
                let dst = out.wrapping_add(r * stride);
                // SAFETY: 16-value chunks of the 64-value row; the stores as below.
                unsafe {
                    if direct {
                        for &(at, off, _) in runs {
                            let y = requant16_avx2(k, $formula, row.as_ptr().add(at));
                            // SAFETY: guaranteed by the caller (the run lies in the row's
                            // outputs).
                            _mm_storeu_si128(dst.add(off).cast(), y);
                        }
                        continue;
                    }
                    let mut bytes = [0u8; 64];
                    for c in (0..npx).step_by(16) {
                        let y = requant16_avx2(k, $formula, row.as_ptr().add(c));
                        _mm_storeu_si128(bytes.as_mut_ptr().add(c).cast(), y);
                    }
                    for &(at, off, len) in runs {
                        debug_assert!(at + len <= npx);
                        // SAFETY: guaranteed by the caller (the run lies in the row's outputs).
                        std::ptr::copy_nonoverlapping(bytes.as_ptr().add(at), dst.add(off), len);
                    }
                }
            }
        };
    }
    let Some(first) = ks.first() else {
        return;
    };
    let Mode::Finite(formula) = first.mode else {
        unreachable!("the caller checked ymm_tile_ready");
    };
    match formula {
        RequantFormula::Qnnpack => rows!(RequantFormula::Qnnpack),
        RequantFormula::Fbgemm => rows!(RequantFormula::Fbgemm),
        f => rows!(f),
    }
}

/// 16 accumulators at `acc` requantized with `k` and `formula` (finite constants), as 16
/// bytes in order: [`requant16_regs_avx2`] on the two vectors there.
///
/// # Safety
/// avx2 must be available; `acc .. acc + 16` readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn requant16_avx2(k: &Requant512, formula: RequantFormula, acc: *const i32) -> __m128i {
    // SAFETY: the caller guarantees the 16 values.
    let (a0, a1) = unsafe {
        (
            _mm256_loadu_si256(acc.cast()),
            _mm256_loadu_si256(acc.add(8).cast()),
        )
    };
    requant16_regs_avx2(k, formula, a0, a1)
}

/// The 16 accumulators `a0` (first 8) and `a1` (next 8) requantized with `k` and `formula`
/// (finite constants), as 16 bytes in order: [`requant_row_finite_avx2`]'s operations on two
/// vectors.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn requant16_regs_avx2(
    k: &Requant512,
    formula: RequantFormula,
    a0: __m256i,
    a1: __m256i,
) -> __m128i {
    let (y0, y1) = (finite_256!(k, formula, a0), finite_256!(k, formula, a1));
    // i16 lanes [y0 0..4, y1 0..4 | y0 4..8, y1 4..8], the zero point added with saturation.
    let a = _mm256_adds_epi16(_mm256_packs_epi32(y0, y1), _mm256_set1_epi16(k.zp16));
    let (lo, hi) = (_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
    let (bmin, bmax) = (_mm_set1_epi8(k.bmin), _mm_set1_epi8(k.bmax));
    let bytes = if k.unsigned {
        _mm_min_epu8(_mm_max_epu8(_mm_packus_epi16(lo, hi), bmin), bmax)
    } else {
        _mm_min_epi8(_mm_max_epi8(_mm_packs_epi16(lo, hi), bmin), bmax)
    };
    // Dwords [y0 0..4, y1 0..4, y0 4..8, y1 4..8] to [y0 0..4, y0 4..8, y1 0..4, y1 4..8].
    _mm_shuffle_epi32::<0b11_01_10_00>(bytes)
}

/// Where a ymm int8 GEMM tile of 16 pixels stores its outputs itself: the pixels are one run
/// of 16 consecutive outputs in each channel's plane (a 1×1 conv's tiles; a 3×3 conv's tiles
/// inside one output row), and every channel's constants are [`Requant512::ymm_tile_ready`].
/// Channel `r < ks.len()` of the tile goes, requantized ([`requant16_regs_avx2`]: the bytes
/// [`requant_tile_avx2`] stores), to `dst + r·stride + [0, 16)`, from the registers: no
/// tile store and reload, and no call per tile for the epilogue (on MobileNetV2's 1×1
/// expansions, K = 16 to 32, the separate epilogue took longer than the GEMM).
pub(crate) struct I8Rows<'a> {
    /// Channel 0's first output.
    pub dst: *mut u8,
    /// Bytes from one channel's outputs to the next's.
    pub stride: usize,
    /// The constants of the tile's channels (those that exist: at most the tile's).
    pub ks: &'a [Requant512],
}

/// Stores the first `rows.ks.len()` rows of a ymm tile's 16-pixel accumulators `acc` through
/// [`I8Rows`]'s epilogue.
///
/// # Safety
/// avx2 must be available; `rows` as [`I8Rows`] requires (`dst + r·stride + [0, 16)` writable,
/// every constant ready); `rows.ks.len() ≤ acc.len()`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn store_rows16_avx2(acc: &[[__m256i; 2]], rows: &I8Rows) {
    let Some(first) = rows.ks.first() else {
        return;
    };
    // (A silent return here would leave the outputs unwritten.)
    let Mode::Finite(formula) = first.mode else {
        unreachable!("the caller checked ymm_tile_ready");
    };
    // One loop per formula, as in `requant_tile_avx2` (every channel of a layer has the same).
    macro_rules! rows {
        ($formula:expr) => {
            for (r, (k, a)) in rows.ks.iter().zip(acc).enumerate() {
                debug_assert!(k.mode == Mode::Finite($formula));
                let y = requant16_regs_avx2(k, $formula, a[0], a[1]);
                // SAFETY: guaranteed by the caller.
                unsafe { _mm_storeu_si128(rows.dst.add(r * rows.stride).cast(), y) };
            }
        };
    }
    match formula {
        RequantFormula::Qnnpack => rows!(RequantFormula::Qnnpack),
        RequantFormula::Fbgemm => rows!(RequantFormula::Fbgemm),
        f => rows!(f),
    }
}

/// [`Epilogue::apply`] for output channel `o`, 8 lanes at a time (see [`requant_row_avx512`]).
///
/// # Safety
/// avx2 must be available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn requant_row_avx2(epi: &Epilogue, o: usize, acc: &[i32], out: &mut [u8]) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let n = acc.len().min(out.len());
        // Long rows of a float formula with finite constants: the packed epilogue of the
        // AVX-512 path on 8 lanes (its constants cost more to build than a short row saves).
        if n >= 256 {
            if let Some(k) = Requant512::new(epi, o, u64::MAX) {
                if let Mode::Finite(formula) = k.mode {
                    return requant_row_finite_avx2(&k, formula, &acc[..n], &mut out[..n]);
                }
            }
        }
        let fixed = match epi.formula {
            RequantFormula::FixedPoint => match FixedConsts::new(epi, o) {
                Some(f) => Some(f),
                None => return portable::requant_row(epi, o, &acc[..n], &mut out[..n]),
            },
            _ => None,
        };
        let body = n / 8 * 8;
        let c = &epi.channels[o];
        let lo = _mm256_set1_epi32(epi.clamp.min);
        let hi = _mm256_set1_epi32(epi.clamp.max);
        let zp = _mm256_set1_epi32(epi.out.zero_point);
        let zpf = _mm256_set1_ps(epi.out.zero_point as f32);
        let bias_i = _mm256_set1_epi32(c.bias_i32);
        let bias_f = _mm256_set1_ps(c.bias_f32);
        let mult = _mm256_set1_ps(c.mult);
        let mult2 = _mm256_set1_ps(c.mult2);
        let inv = _mm256_set1_ps(c.inv_out_scale);
        let signed = epi.out.dtype == crate::quant::QDtype::QInt8;
        // One loop per formula (the dispatch stays out of the loop), 8 lanes per step.
        // 32 lanes per step where possible (one 32-byte store), then 8.
        let body32 = n / 32 * 32;
        macro_rules! lanes {
            (|$a:ident| $y:expr) => {{
                let f = |$a: __m256i| $y;
                for i in (0..body32).step_by(32) {
                    let ld = |k: usize| _mm256_loadu_si256(acc.as_ptr().add(i + 8 * k).cast());
                    let (y0, y1, y2, y3) = (f(ld(0)), f(ld(1)), f(ld(2)), f(ld(3)));
                    store32_bytes([y0, y1, y2, y3], signed, out.as_mut_ptr().add(i));
                }
                for i in (body32..body).step_by(8) {
                    let $a = _mm256_loadu_si256(acc.as_ptr().add(i).cast());
                    store8_bytes($y, signed, out.as_mut_ptr().add(i));
                }
                // The tail (< 8 accumulators) as one more step, 0 past the row (the padding's
                // results are dropped): a scalar tail was 5% of an int8 model's time on these
                // paths, whose depthwise planes are 7 or 14 columns wide.
                if n > body {
                    let $a = load_tail8(acc.as_ptr().add(body), n - body, 0);
                    let mut bytes = [0u8; 8];
                    store8_bytes($y, signed, bytes.as_mut_ptr());
                    let v = _mm256_castsi128_si256(_mm_loadl_epi64(bytes.as_ptr().cast()));
                    store_tail_bytes(out.as_mut_ptr().add(body), v, n - body);
                }
            }};
        }
        let clamp = |y: __m256i| _mm256_max_epi32(_mm256_min_epi32(y, hi), lo);
        match (&fixed, epi.formula) {
            (Some(f), _) => lanes!(|a| fixed_256(f, a)),
            (None, RequantFormula::Qnnpack) => lanes!(|a| {
                let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a, bias_i)), mult);
                clamp(_mm256_add_epi32(round_clamp_256(v), zp))
            }),
            (None, RequantFormula::Fbgemm) => lanes!(|a| {
                let v = _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(a), bias_f), mult);
                clamp(_mm256_add_epi32(round_clamp_256(v), zp))
            }),
            (None, _) => lanes!(|a| {
                let mut v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), mult);
                v = _mm256_mul_ps(v, mult2);
                v = _mm256_add_ps(v, bias_f);
                v = _mm256_mul_ps(v, inv);
                v = _mm256_add_ps(v, zpf);
                clamp(round_clamp_256(v))
            }),
        }
    }
}
