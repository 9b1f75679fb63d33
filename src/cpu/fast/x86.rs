//! x86-64 SIMD kernels (AVX-512 VNNI, AVX-VNNI, AVX2 + FMA, SSE2).
//!
//! Every function here is `unsafe` and `#[target_feature]`: callers must have checked the
//! features at run time (the [`super::Isa`] a conv was packed for is checked available when
//! packing), and must pass pointers valid for the reads and writes documented per function.

// The AVX-512 / AVX-VNNI intrinsics and target features are stable since Rust 1.89, above the
// crate's declared `rust-version` (1.85); the dependency tree already needs Rust >= 1.90, so
// the declared MSRV is not buildable anyway (it should be raised to 1.90).
#![allow(clippy::incompatible_msrv)]

use crate::quant::{Epilogue, QDtype, RequantFormula};
use std::arch::x86_64::*;

/// Accumulator tile: up to 6 channels × 64 pixels.
pub(super) type Tile = [[i32; 64]; 6];
/// Float accumulator tile: up to 6 channels × 64 pixels.
pub(super) type TileF = [[f32; 64]; 6];

/// int8 GEMM tile on AVX-512 VNNI: `out[r][16v + l] = Σ_{t, cb} Σ_{j<4} act[...]·w[...]`
/// `+ init[r]` (wrapping int32) for `NR` channels and `16·MV` pixels.
///
/// Activations: for tap `t` and channel block `cb`, the 16·MV lanes are the 4-byte groups at
/// `act + offs[t] + cb·cbs + 64·v`. Weights: `[t][cb][PNR][4]` i8 from `w`, of which the
/// first `NR ≤ PNR` channels are computed (a panel's last, partial tile runs with a smaller
/// `NR` instead of computing channels that do not exist).
///
/// # Safety
/// avx512f, avx512bw and avx512vnni must be available; every activation read
/// (`act + offs[t] + cb·cbs + [0, 64·MV)`) and the `offs.len()·ncb·PNR·4` weight bytes must
/// be readable; `NR ≤ PNR`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn gemm_i8_avx512<const NR: usize, const MV: usize, const PNR: usize>(
    act: *const u8,
    offs: &[usize],
    cbs: usize,
    ncb: usize,
    w: *const u8,
    out: &mut Tile,
    init: &[i32; 6],
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); MV]; NR];
        for (accr, &i) in acc.iter_mut().zip(init) {
            *accr = [_mm512_set1_epi32(i); MV];
        }
        let mut wp = w as *const i32;
        for &off in offs {
            let mut p = act.add(off);
            for _ in 0..ncb {
                let mut a = [_mm512_setzero_si512(); MV];
                for (v, av) in a.iter_mut().enumerate() {
                    *av = _mm512_loadu_si512(p.add(64 * v).cast());
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_epi32(wp.add(r).read_unaligned());
                    for v in 0..MV {
                        accr[v] = _mm512_dpbusd_epi32(accr[v], a[v], b);
                    }
                }
                wp = wp.add(PNR);
                p = p.add(cbs);
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            for (v, &x) in accr.iter().enumerate() {
                _mm512_storeu_si512(out[r].as_mut_ptr().add(16 * v).cast(), x);
            }
        }
    }
}

/// Defines a ymm GEMM tile (8 pixels per vector) with the given `vpdpbusd` intrinsic; see
/// [`gemm_i8_avx512`] for the semantics.
macro_rules! gemm_i8_ymm {
    ($(#[$doc:meta])* $name:ident, $features:literal, $dpbusd:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The features must be available; reads as for [`gemm_i8_avx512`] with 32-byte
        /// vectors.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name<const NR: usize, const MV: usize>(
            act: *const u8,
            offs: &[usize],
            cbs: usize,
            ncb: usize,
            w: *const u8,
            out: &mut Tile,
            init: &[i32; 6],
        ) {
            // SAFETY: the caller guarantees the target features and the memory ranges listed
            // in `# Safety`; every access below stays inside them.
            unsafe {
                let mut acc = [[_mm256_setzero_si256(); MV]; NR];
                for (accr, &i) in acc.iter_mut().zip(init) {
                    *accr = [_mm256_set1_epi32(i); MV];
                }
                let mut wp = w as *const i32;
                for &off in offs {
                    let mut p = act.add(off);
                    for _ in 0..ncb {
                        let mut a = [_mm256_setzero_si256(); MV];
                        for (v, av) in a.iter_mut().enumerate() {
                            *av = _mm256_loadu_si256(p.add(32 * v).cast());
                        }
                        for (r, accr) in acc.iter_mut().enumerate() {
                            let b = _mm256_set1_epi32(wp.add(r).read_unaligned());
                            for v in 0..MV {
                                accr[v] = $dpbusd(accr[v], a[v], b);
                            }
                        }
                        wp = wp.add(NR);
                        p = p.add(cbs);
                    }
                }
                for (r, accr) in acc.iter().enumerate() {
                    for (v, &x) in accr.iter().enumerate() {
                        _mm256_storeu_si256(out[r].as_mut_ptr().add(8 * v).cast(), x);
                    }
                }
            }
        }
    };
}

gemm_i8_ymm!(
    /// The GEMM tile with ymm registers and VEX `vpdpbusd` (AVX-VNNI).
    gemm_i8_avxvnni,
    "avx2,avxvnni",
    _mm256_dpbusd_avx_epi32
);

gemm_i8_ymm!(
    /// The same ymm tile with EVEX `vpdpbusd` (AVX512-VNNI + VL): the `avx-vnni` path on CPUs
    /// with AVX-512 VNNI but without AVX-VNNI (and how that path is tested there).
    gemm_i8_avxvnni_evex,
    "avx2,avx512f,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32
);

/// The GEMM tile on AVX2 without VNNI, exact: each 32-bit activation lane `(a0, a1, a2, a3)`
/// (u8) is split into 16-bit halves `(a0, a2)` and `(a1, a3)`; weights are pre-split at pack
/// time into `(w0, w2)` and `(w1, w3)` (i16, sign-extended), layout `[t][cb][NR][2]` i32 words.
/// `vpmaddwd` then gives `a0·w0 + a2·w2` and `a1·w1 + a3·w3` exactly (|pair sum| ≤ 2·255·128),
/// unlike `vpmaddubsw`, whose int16 pair sums saturate.
///
/// # Safety
/// avx2 must be available; reads as for [`gemm_i8_avx512`] with 32-byte vectors, and
/// `offs.len()·ncb·NR·8` weight bytes.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn gemm_i8_avx2<const NR: usize, const MV: usize>(
    act: *const u8,
    offs: &[usize],
    cbs: usize,
    ncb: usize,
    w: *const u8,
    out: &mut Tile,
    init: &[i32; 6],
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); MV]; NR];
        for (accr, &i) in acc.iter_mut().zip(init) {
            *accr = [_mm256_set1_epi32(i); MV];
        }
        let lo_bytes = _mm256_set1_epi16(0x00ff);
        let mut wp = w as *const i32;
        for &off in offs {
            let mut p = act.add(off);
            for _ in 0..ncb {
                let mut ae = [_mm256_setzero_si256(); MV];
                let mut ao = [_mm256_setzero_si256(); MV];
                for v in 0..MV {
                    let a = _mm256_loadu_si256(p.add(32 * v).cast());
                    ae[v] = _mm256_and_si256(a, lo_bytes);
                    ao[v] = _mm256_srli_epi16::<8>(a);
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let we = _mm256_set1_epi32(wp.add(2 * r).read_unaligned());
                    let wo = _mm256_set1_epi32(wp.add(2 * r + 1).read_unaligned());
                    for v in 0..MV {
                        let s = _mm256_add_epi32(
                            _mm256_madd_epi16(ae[v], we),
                            _mm256_madd_epi16(ao[v], wo),
                        );
                        accr[v] = _mm256_add_epi32(accr[v], s);
                    }
                }
                wp = wp.add(2 * NR);
                p = p.add(cbs);
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            for (v, &x) in accr.iter().enumerate() {
                _mm256_storeu_si256(out[r].as_mut_ptr().add(8 * v).cast(), x);
            }
        }
    }
}

/// Defines an f32 GEMM tile of `$lanes` pixels per vector from the vector intrinsics given:
/// `out[r][lanes·v + l] = fma chain over (t, c)` of `act[t][c][pixel]·w[t][c][r]`, in the
/// documented order (taps, then channels, one FMA each).
///
/// Activations: for tap `t` and channel `c`, the `lanes·MV` pixels are the f32 at
/// `act + offs[t] + c·cs + lanes·v` (offsets in elements). Weights: `[t][c][NR]` f32.
macro_rules! gemm_f32_tile {
    (
        $(#[$doc:meta])* $name:ident, $features:literal, $lanes:literal,
        $zero:ident, $load:ident, $set1:ident, $fma:ident, $store:ident
    ) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The features must be available; all reads in range as for [`gemm_i8_avx512`].
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name<const NR: usize, const MV: usize>(
            act: *const f32,
            offs: &[usize],
            cs: usize,
            nc: usize,
            w: *const f32,
            out: &mut TileF,
        ) {
            // SAFETY: the caller guarantees the target features and the memory ranges
            // listed in `# Safety`; every access below stays inside them.
            unsafe {
                let mut acc = [[$zero(); MV]; NR];
                let mut wp = w;
                for &off in offs {
                    let mut p = act.add(off);
                    for _ in 0..nc {
                        let mut a = [$zero(); MV];
                        for (v, av) in a.iter_mut().enumerate() {
                            *av = $load(p.add($lanes * v));
                        }
                        for (r, accr) in acc.iter_mut().enumerate() {
                            let b = $set1(*wp.add(r));
                            for v in 0..MV {
                                accr[v] = $fma(a[v], b, accr[v]);
                            }
                        }
                        wp = wp.add(NR);
                        p = p.add(cs);
                    }
                }
                for (r, accr) in acc.iter().enumerate() {
                    for (v, &x) in accr.iter().enumerate() {
                        $store(out[r].as_mut_ptr().add($lanes * v), x);
                    }
                }
            }
        }
    };
}

gemm_f32_tile!(
    /// f32 GEMM tile on AVX-512 (16 pixels per vector).
    gemm_f32_avx512,
    "avx512f",
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps
);

gemm_f32_tile!(
    /// f32 GEMM tile on AVX2 + FMA (8 pixels per vector).
    gemm_f32_avx2,
    "avx2,fma",
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps
);

/// `round_f32_to_i32` of the epilogue on 16 lanes: round half to even, clamp to ±1e9 (exact
/// integers in f32, so clamping before or after rounding is the same), NaN → 0.
#[inline]
#[target_feature(enable = "avx512f")]
fn round_clamp_512(v: __m512) -> __m512i {
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
    let r = _mm256_cvtps_epi32(_mm256_round_ps::<
        { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
    >(c));
    _mm256_andnot_si256(nan, r)
}

/// The scalar constants of the vectorized fixed-point epilogue of one channel, or `None` when
/// the record lies outside what [`Epilogue::new`] produces (then the scalar code runs).
///
/// # The vectorized `MultiplyByQuantizedMultiplier`
///
/// With `x = acc + bq` (wrapping), `a = x << ls` (wrapping, `ls` taken mod 32 like
/// `wrapping_shl`), `q` the Q0.31 multiplier and `e` the right shift
/// ([`crate::quant::fixed_point`]):
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
    bias: i32,
    ls: i32,
    q: i32,
    rs: i32,
    mask: i32,
    lo: i32,
    hi: i32,
    zp: i32,
}

impl FixedConsts {
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

/// Which vector epilogue a channel runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
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
#[derive(Clone, Copy)]
pub(super) struct Requant512 {
    mode: Mode,
    /// Whether the output dtype is quint8 (else qint8).
    unsigned: bool,
    /// The int bias added to the accumulator (qnnpack, fixed-point), which a kernel may fold
    /// into its accumulator's initial value instead.
    ibias: i32,
    /// The output clamp and zero point (i32), for [`Mode::NonFinite`].
    lo: i32,
    hi: i32,
    zp: i32,
    zpf: f32,
    /// `zp'` as i16 lanes (0 where the formula adds the zero point before rounding).
    zp16: i16,
    /// The output clamp as bytes.
    bmin: i8,
    bmax: i8,
    bias_i: i32,
    bias_f: f32,
    mult: f32,
    mult2: f32,
    inv: f32,
    /// Fixed point: `q`, `2^e − 1`, `(2^e − 1) >> 1`, and the shift counts.
    q: i32,
    rmask: i32,
    rhalf: i32,
    ls: i32,
    rs: i32,
    ls_zero: bool,
    rs_zero: bool,
    /// Fixed point: `RDBPOT(r, e) = (r + 2^(e−1) + (r >> 31)) >> e` cannot overflow (see
    /// [`Requant512::new`]); `rhalf + 1` is then `2^(e−1)`.
    fast_round: bool,
    /// Float formulas: whether `min(v, 1e9)` is needed before the conversion (else `|v|` is
    /// known to stay below 2^30).
    clamp_hi: bool,
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
    pub(super) fn new(epi: &Epilogue, o: usize, acc_bound: u64) -> Option<Self> {
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
    pub(super) fn int_bias(&self) -> i32 {
        self.ibias
    }
}

/// The fixed-point `MultiplyByQuantizedMultiplier(x)` on 16 lanes, `x = acc (+ bq)` (see
/// [`FixedConsts`] for the derivation), without the zero point and the clamp:
/// `fixed_512!(k: &Requant512, x: __m512i) -> __m512i`.
///
/// A macro rather than a function so that it is always inlined into the (target-feature)
/// kernels (`#[inline(always)]` cannot be combined with `#[target_feature]`, and closures or
/// plain `#[inline]` functions were seen not to be). Needs avx512f.
macro_rules! fixed_512 {
    ($k:expr, $x:expr) => {{
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
/// inlined (see [`fixed_512!`]); needs avx512f.
macro_rules! requant_rel_512 {
    ($k:expr, $a:expr, $bias:expr) => {{
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
            Mode::Fixed => fixed_512!(k, ai),
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
/// `y0[4i .. 4i + 4]`, `y1[..]`, `y2[..]`, `y3[..]` (the in-lane order of the packs).
macro_rules! pack4_512 {
    ($k:expr, $y0:expr, $y1:expr, $y2:expr, $y3:expr) => {{
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

/// [`Epilogue::apply`] for output channel `o` on 16 lanes at a time ([`requant_rel_512!`],
/// [`pack4_512!`]), then the byte store; identical to the scalar code for every formula.
///
/// # Safety
/// avx512f, avx512bw and avx512vl must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn requant_row_avx512(epi: &Epilogue, o: usize, acc: &[i32], out: &mut [u8]) {
    // SAFETY: the caller guarantees the target features; every access below stays inside
    // `acc` and `out` (masked to the valid lanes).
    unsafe {
        let n = acc.len().min(out.len());
        let Some(k) = Requant512::new(epi, o, u64::MAX) else {
            return super::portable::requant_row(epi, o, &acc[..n], &mut out[..n]);
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
            let m: __mmask64 = if rem == 64 { !0 } else { (1u64 << rem) - 1 };
            _mm512_mask_storeu_epi8(out.as_mut_ptr().add(i).cast(), m, bytes);
            i += rem;
        }
    }
}

/// Requantizes one tile row `row` (≤ 64 accumulators of one output channel) with the
/// channel's constants `k` (like [`requant_row_avx512`]) and stores the runs `segs` (tile
/// position `at`, output offset `off` from `out`, length) straight from the register, with
/// masked stores (no temporary, no copies).
///
/// # Safety
/// avx512f, avx512bw and avx512vl must be available; every run must satisfy
/// `at + len ≤ row.len() ≤ 64` and lie in the output (`out + off .. out + off + len`). The
/// masked stores address `out + off − at`, possibly outside the output, but only the `len`
/// bytes of the run are accessed.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn requant_segments_avx512(
    k: &Requant512,
    row: &[i32],
    segs: &[(usize, usize, usize)],
    out: *mut u8,
) {
    // SAFETY: the caller guarantees the target features and the ranges; loads are masked to
    // `row`.
    unsafe {
        let n = row.len().min(64);
        let mut y = [_mm512_setzero_si512(); 4];
        for (j, yj) in y.iter_mut().enumerate() {
            let left = n.saturating_sub(16 * j).min(16);
            let m: __mmask16 = ((1u32 << left) - 1) as u16;
            let a = _mm512_maskz_loadu_epi32(m, row.as_ptr().add(16 * j));
            *yj = requant_rel_512!(k, a, true);
        }
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let bytes = _mm512_permutexvar_epi32(order, pack4_512!(k, y[0], y[1], y[2], y[3]));
        for &(at, off, len) in segs {
            debug_assert!(at + len <= n);
            let bits = if len >= 64 { !0u64 } else { (1u64 << len) - 1 };
            _mm512_mask_storeu_epi8(out.add(off).wrapping_sub(at).cast(), bits << at, bytes);
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
/// [`Epilogue::apply`] for output channel `o`, 8 lanes at a time (see [`requant_row_avx512`]).
///
/// # Safety
/// avx2 must be available.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn requant_row_avx2(epi: &Epilogue, o: usize, acc: &[i32], out: &mut [u8]) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let n = acc.len().min(out.len());
        let fixed = match epi.formula {
            RequantFormula::FixedPoint => match FixedConsts::new(epi, o) {
                Some(f) => Some(f),
                None => return super::portable::requant_row(epi, o, &acc[..n], &mut out[..n]),
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
        let mut tmp = [0i32; 8];
        for i in (0..body).step_by(8) {
            let a = _mm256_loadu_si256(acc.as_ptr().add(i).cast());
            if let Some(f) = &fixed {
                let y = fixed_256(f, a);
                _mm256_storeu_si256(tmp.as_mut_ptr().cast(), y);
                for (d, &t) in out[i..i + 8].iter_mut().zip(&tmp) {
                    *d = t as u8;
                }
                continue;
            }
            let y = match epi.formula {
                RequantFormula::Qnnpack => {
                    let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a, bias_i)), mult);
                    _mm256_add_epi32(round_clamp_256(v), zp)
                }
                RequantFormula::Fbgemm => {
                    let v = _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(a), bias_f), mult);
                    _mm256_add_epi32(round_clamp_256(v), zp)
                }
                _ => {
                    let mut v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), mult);
                    v = _mm256_mul_ps(v, mult2);
                    v = _mm256_add_ps(v, bias_f);
                    v = _mm256_mul_ps(v, inv);
                    v = _mm256_add_ps(v, zpf);
                    round_clamp_256(v)
                }
            };
            let y = _mm256_max_epi32(_mm256_min_epi32(y, hi), lo);
            _mm256_storeu_si256(tmp.as_mut_ptr().cast(), y);
            for (d, &t) in out[i..i + 8].iter_mut().zip(&tmp) {
                *d = t as u8;
            }
        }
        super::portable::requant_row(epi, o, &acc[body..n], &mut out[body..n]);
    }
}

/// Interleaves four byte rows into 4-byte lanes: `dst[4i + j] = src_j[i] ^ flip`, for
/// `i < n`.
///
/// # Safety
/// The four sources must be readable for `n` bytes and `dst` writable for `4n` bytes (SSE2 is
/// part of x86-64).
pub(super) unsafe fn interleave4(src: [*const u8; 4], n: usize, flip: u8, dst: *mut u8) {
    let f = _mm_set1_epi8(flip as i8);
    let mut i = 0;
    // SAFETY: every access is below n (sources) or 4n (destination), as the caller guarantees.
    unsafe {
        while i + 16 <= n {
            let r0 = _mm_xor_si128(_mm_loadu_si128(src[0].add(i).cast()), f);
            let r1 = _mm_xor_si128(_mm_loadu_si128(src[1].add(i).cast()), f);
            let r2 = _mm_xor_si128(_mm_loadu_si128(src[2].add(i).cast()), f);
            let r3 = _mm_xor_si128(_mm_loadu_si128(src[3].add(i).cast()), f);
            let ab_lo = _mm_unpacklo_epi8(r0, r1);
            let ab_hi = _mm_unpackhi_epi8(r0, r1);
            let cd_lo = _mm_unpacklo_epi8(r2, r3);
            let cd_hi = _mm_unpackhi_epi8(r2, r3);
            let d = dst.add(4 * i);
            _mm_storeu_si128(d.cast(), _mm_unpacklo_epi16(ab_lo, cd_lo));
            _mm_storeu_si128(d.add(16).cast(), _mm_unpackhi_epi16(ab_lo, cd_lo));
            _mm_storeu_si128(d.add(32).cast(), _mm_unpacklo_epi16(ab_hi, cd_hi));
            _mm_storeu_si128(d.add(48).cast(), _mm_unpackhi_epi16(ab_hi, cd_hi));
            i += 16;
        }
        while i < n {
            for (j, s) in src.iter().enumerate() {
                *dst.add(4 * i + j) = *s.add(i) ^ flip;
            }
            i += 1;
        }
    }
}

/// Depthwise kernel on AVX-512: `R` output rows × `NV` vectors of 16 columns. For row `r`,
/// lane `l` of vector `v`: `acc = fma chain over t of p[r·rs + offs[t] + 16v + l] · w[t]`
/// (taps in order, from 0), then `acc + bias`, stored at `out[r·os + 16v + l]` as f32, or as
/// i32 (truncating; the caller guarantees exact integers) when `I32` is set. Only the first
/// `tail` lanes of the last vector are stored.
///
/// # Safety
/// avx512f must be available; `p` readable at `r·rs + offs[t] + [0, 16·NV)` for every row and
/// tap; `out` writable at `r·os + [0, 16·(NV−1) + tail)`; `1 <= tail <= 16`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dw_avx512<const NV: usize, const R: usize, const I32: bool>(
    p: *const f32,
    rs: usize,
    offs: &[usize],
    w: &[f32],
    bias: f32,
    out: *mut f32,
    os: usize,
    tail: usize,
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        for (&off, &wt) in offs.iter().zip(w) {
            let wv = _mm512_set1_ps(wt);
            for (r, accr) in acc.iter_mut().enumerate() {
                let q = p.add(r * rs + off);
                for (v, a) in accr.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(q.add(16 * v)), wv, *a);
                }
            }
        }
        let b = _mm512_set1_ps(bias);
        let last: __mmask16 = ((1u32 << tail) - 1) as u16;
        for (r, accr) in acc.iter().enumerate() {
            for (v, &a) in accr.iter().enumerate() {
                let y = _mm512_add_ps(a, b);
                let m = if v + 1 == NV { last } else { 0xffff };
                let d = out.add(r * os + 16 * v);
                if I32 {
                    _mm512_mask_storeu_epi32(d.cast(), m, _mm512_cvttps_epi32(y));
                } else {
                    _mm512_mask_storeu_ps(d, m, y);
                }
            }
        }
    }
}

/// Depthwise kernel on AVX2 + FMA (8 lanes per vector); see [`dw_avx512`] (`tail` in 1..=8).
///
/// # Safety
/// avx2 and fma must be available; ranges as for [`dw_avx512`] with 8-lane vectors.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dw_avx2<const NV: usize, const R: usize, const I32: bool>(
    p: *const f32,
    rs: usize,
    offs: &[usize],
    w: &[f32],
    bias: f32,
    out: *mut f32,
    os: usize,
    tail: usize,
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); NV]; R];
        for (&off, &wt) in offs.iter().zip(w) {
            let wv = _mm256_set1_ps(wt);
            for (r, accr) in acc.iter_mut().enumerate() {
                let q = p.add(r * rs + off);
                for (v, a) in accr.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(8 * v)), wv, *a);
                }
            }
        }
        let b = _mm256_set1_ps(bias);
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let last = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail as i32), lane);
        let all = _mm256_set1_epi32(-1);
        for (r, accr) in acc.iter().enumerate() {
            for (v, &a) in accr.iter().enumerate() {
                let y = _mm256_add_ps(a, b);
                let m = if v + 1 == NV { last } else { all };
                let d = out.add(r * os + 8 * v);
                if I32 {
                    _mm256_maskstore_epi32(d.cast(), m, _mm256_cvttps_epi32(y));
                } else {
                    _mm256_maskstore_ps(d, m, y);
                }
            }
        }
    }
}

/// `dst[i] = ((src[i] ^ flip) as i32 − z) as f32`: u8 activations minus their zero point.
///
/// # Safety
/// avx512f and avx512bw must be available.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn bytes_to_f32_avx512(src: &[u8], flip: u8, z: i32, dst: &mut [f32]) {
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = ((b ^ flip) as i32 - z) as f32;
    }
}

/// A 64-byte vector in memory (a `vpermt2b` index of the depthwise kernel).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Bytes64(pub [u8; 64]);

/// Whether this CPU has AVX512-VBMI (`vpermt2b`), which the int8 depthwise kernel needs on top
/// of the `avx512-vnni` path.
pub(super) fn has_vbmi() -> bool {
    static VBMI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VBMI.get_or_init(|| std::arch::is_x86_feature_detected!("avx512vbmi"))
}

/// The geometry of one channel of the int8 depthwise kernel [`dw_i8_channel`] (built by
/// `depthwise::DwPlan`). Column chunk `ci` covers outputs `16·ci .. 16·ci + 16` of a row;
/// for chunk `ci` and column group `j` (kernel columns `4j .. 4j + 4`), entry `ci·NG + j` of
/// `lb`, `mask`, `idx` gives the first input column loaded, the load mask (bytes inside the
/// row), and the byte permutation that builds the `vpdpbusd` operand: byte `4l + i` is input
/// column `(16·ci + l)·sx + (4j + i)·dw − pw`, as index `column − lb`, or 64 + (anything) to
/// select the zero-point vector when that column is padding (or the kernel column or the
/// output column does not exist).
pub(super) struct DwGeom<'a> {
    /// Input row length (bytes).
    pub w: usize,
    pub w_out: usize,
    pub h_out: usize,
    pub sy: usize,
    pub dh: usize,
    pub ph: usize,
    /// Per output row: the valid kernel rows `ky_lo .. ky_hi` (input row inside the image).
    pub rows: &'a [(u32, u32)],
    pub lb: &'a [usize],
    pub mask: &'a [u64],
    pub idx: &'a [Bytes64],
    /// `u = x ^ flip` maps stored bytes to u8 activations; `z` is the zero point in `u`.
    pub flip: u8,
    pub z: u8,
}

/// The int8 depthwise conv of one output channel on AVX512-VNNI + VBMI, without any padded or
/// interleaved plane: for each 16-column chunk and output row,
///
/// ```text
/// acc = init[row] + Σ_{valid ky} Σ_j dot4(P(row·sy + ky·dh − ph, j), w'[ky][4j .. 4j + 4])
/// ```
///
/// where `P(iy, j)` is the masked load of input row `iy` at column `lb`, xored with `flip`,
/// permuted with `vpermt2b` against the zero-point vector (see [`DwGeom`]), and the weights
/// `wts[ky·NG + j]` hold the four bytes `w'[ky][4j + i] = w − ζ` (0 past the kernel). With
/// `init[row] = −z·Σ_{valid ky} Σ_kx w'[ky][kx]` (`pz[hi] − pz[lo]`, `pz` the prefix sums of
/// `−z·rowsum`), every valid kernel row contributes `Σ_kx (u − z)·w'`, padded columns
/// `(z − z)·w' = 0`, padded rows nothing: the exact accumulator (wrapping int32, whose true
/// value fits). It is then requantized with [`requant_rel_512!`] and [`pack4_512!`] and stored as
/// bytes, or stored as
/// is when `k` is `None`.
///
/// Columns go by blocks of up to four chunks (64 outputs: four independent accumulators per
/// row, one 64-byte store), rows one by one inside a block, so that the block's permutation
/// vectors stay in registers.
///
/// # Safety
/// avx512f, avx512bw, avx512vl, avx512vnni and avx512vbmi must be available; `x` must be
/// readable for the `h × w` input plane the geometry was built for (every row `iy` read is
/// inside it, and loads are masked to the row); `out` writable for `h_out·w_out` bytes (i32
/// when `k` is `None`); `wts` holds `kh·NG` words and `pz` `kh + 1`, with `kh ≥ ky_hi` for
/// every row; the geometry has `NG` column groups.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) unsafe fn dw_i8_channel<const NG: usize>(
    g: &DwGeom,
    x: *const u8,
    wts: &[i32],
    pz: &[i32],
    k: Option<&Requant512>,
    out: *mut u8,
) {
    let chunks = g.w_out.div_ceil(16);
    let k = k.copied();
    // SAFETY: forwarded from the caller; every block lies inside the row (`c0 < w_out`).
    unsafe {
        for c0 in (0..chunks).step_by(4) {
            match chunks - c0 {
                1 => dw_i8_block::<NG, 1>(g, x, wts, pz, k, out, c0),
                2 => dw_i8_block::<NG, 2>(g, x, wts, pz, k, out, c0),
                3 => dw_i8_block::<NG, 3>(g, x, wts, pz, k, out, c0),
                _ => dw_i8_block::<NG, 4>(g, x, wts, pz, k, out, c0),
            }
        }
    }
}

/// The chunks `c0 .. c0 + NV` of every output row (see [`dw_i8_channel`]).
///
/// # Safety
/// As for [`dw_i8_channel`], with `c0 + NV ≤ ⌈w_out / 16⌉`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn dw_i8_block<const NG: usize, const NV: usize>(
    g: &DwGeom,
    x: *const u8,
    wts: &[i32],
    pz: &[i32],
    k: Option<Requant512>,
    out: *mut u8,
    c0: usize,
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed in
    // `# Safety`; loads are masked to the row, stores to the valid output columns.
    unsafe {
        // The int bias is folded into the accumulators (bytes only).
        let bias = k.map_or(0, |k| k.int_bias());
        let zv = _mm512_set1_epi8(g.z as i8);
        let fv = _mm512_set1_epi8(g.flip as i8);
        let col0 = 16 * c0;
        let valid = (g.w_out - col0).min(16 * NV);
        let smask: __mmask64 = if valid == 64 { !0 } else { (1u64 << valid) - 1 };
        // (Plain loops: closures, e.g. in `array::from_fn`, are not reliably inlined into
        // target-feature code.)
        let mut idx = [[_mm512_setzero_si512(); NG]; NV];
        let mut lm = [[0 as __mmask64; NG]; NV];
        let mut lb = [[0usize; NG]; NV];
        for v in 0..NV {
            for j in 0..NG {
                let at = (c0 + v) * NG + j;
                idx[v][j] = _mm512_load_si512(g.idx[at].0.as_ptr().cast());
                lm[v][j] = g.mask[at];
                lb[v][j] = g.lb[at];
            }
        }
        // Restores output order after the in-lane packs (see `requant_row_avx512`).
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let row_step = g.dh * g.w;
        for oy in 0..g.h_out {
            let (lo, hi) = g.rows[oy];
            let (lo, hi) = (lo as usize, hi as usize);
            let init = pz[hi].wrapping_sub(pz[lo]).wrapping_add(bias);
            let mut acc = [_mm512_set1_epi32(init); NV];
            // Input row of kernel row `lo` (inside the image when `lo < hi`).
            let mut rowp = if lo < hi {
                x.add((oy * g.sy + lo * g.dh - g.ph) * g.w)
            } else {
                x
            };
            for ky in lo..hi {
                for j in 0..NG {
                    let wv = _mm512_set1_epi32(wts[ky * NG + j]);
                    for v in 0..NV {
                        let u = _mm512_xor_si512(
                            _mm512_maskz_loadu_epi8(lm[v][j], rowp.add(lb[v][j]).cast()),
                            fv,
                        );
                        let p = _mm512_permutex2var_epi8(u, idx[v][j], zv);
                        acc[v] = _mm512_dpbusd_epi32(acc[v], p, wv);
                    }
                }
                rowp = rowp.add(row_step);
            }
            let o = oy * g.w_out + col0;
            match &k {
                None => {
                    for (v, &a) in acc.iter().enumerate() {
                        let m = (smask >> (16 * v)) as __mmask16;
                        _mm512_mask_storeu_epi32(out.cast::<i32>().add(o + 16 * v).cast(), m, a);
                    }
                }
                Some(k) => {
                    let mut y = [_mm512_setzero_si512(); 4];
                    for v in 0..NV {
                        y[v] = requant_rel_512!(k, acc[v], false);
                    }
                    let bytes =
                        _mm512_permutexvar_epi32(order, pack4_512!(k, y[0], y[1], y[2], y[3]));
                    _mm512_mask_storeu_epi8(out.add(o).cast(), smask, bytes);
                }
            }
        }
    }
}

/// Copies the rows of `src` (`w` bytes each) into `dst` at `at + y·stride`, xored with
/// `flip`, 64 bytes at a time.
///
/// # Safety
/// avx512f and avx512bw must be available.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn copy_rows_xor_avx512(
    src: &[u8],
    w: usize,
    dst: &mut [u8],
    at: usize,
    stride: usize,
    flip: u8,
) {
    let f = _mm512_set1_epi8(flip as i8);
    for (y, row) in src.chunks_exact(w).enumerate() {
        let d = &mut dst[at + y * stride..][..w];
        let mut i = 0;
        // SAFETY: every access is masked to `[i, w)`, inside `row` and `d`.
        unsafe {
            while i < w {
                let rem = (w - i).min(64);
                let m: __mmask64 = if rem == 64 { !0 } else { (1u64 << rem) - 1 };
                let v = _mm512_maskz_loadu_epi8(m, row.as_ptr().add(i).cast());
                _mm512_mask_storeu_epi8(d.as_mut_ptr().add(i).cast(), m, _mm512_xor_si512(v, f));
                i += rem;
            }
        }
    }
}

/// The layout of the flat plane of [`dw_i8_flat`], the padded input of one channel as u8
/// activations `u` (`x ^ flip`; `z` at padded positions) in rows of `wp = W + 2·pw` bytes,
/// with slack after it; flat output position `q = oy·wp + ox`.
pub(super) struct DwFlat<'a> {
    /// Bytes between kernel rows (`dh·wp`).
    pub row_step: usize,
    /// Per block of 64 flat output positions: the runs of real outputs (block position,
    /// output offset, length), as `int8::segments` gives them; blocks without any are absent
    /// from the end.
    pub segs: &'a [Vec<(usize, usize, usize)>],
}

/// The int8 depthwise conv of one output channel with unit strides and column dilation
/// (`sy = sx = dw = 1`) on AVX512-VNNI, over a flat padded plane (see [`DwFlat`]).
///
/// Output `(oy, ox)` is flat position `q = oy·wp + ox`; positions with `ox ≥ Wout` are
/// computed and dropped, as in the GEMM, so a block of 64 positions spans several short rows
/// (on 14×14 outputs, 16·14 positions instead of 14 blocks of 64 lanes for 14 outputs). The
/// block is computed as four *phases* `s < 4` of 16 lanes, lane `l` of phase `s` being
/// position `q0 + 4l + s`. Its taps `4j .. 4j + 4` of kernel row `ky` read plane bytes
/// `q0 + 4l + s + ky·dh·wp + 4j + i` (`i < 4`): bytes `4l .. 4l + 4` of the 64 bytes loaded
/// at `q0 + s + ky·dh·wp + 4j`, so one plain load per (phase, group, kernel row) is the
/// `vpdpbusd` operand, with no shuffle. Padded taps read `u = z`, hence
/// `acc = init + Σ u·w' = Σ (u − z)·w'` with `init = −z·Σ w'` (plus the int bias folded in
/// when requantizing): the exact accumulator, wrapping int32.
///
/// After the epilogue ([`requant_rel_512!`]), the packs ([`pack4_512!`]) leave in 128-bit
/// lane `k` the bytes `[y0[4k .. 4k + 4], y1[..], y2[..], y3[..]]`: byte `4s + a` is
/// position `16k + 4a + s`, so the in-lane shuffle `q ← 4·(q mod 4) + ⌊q/4⌋` restores
/// position order; each run is then stored with a masked store. Accumulators (`k = None`)
/// are stored through a small buffer.
///
/// # Safety
/// avx512f, avx512bw, avx512vl and avx512vnni must be available; `plane` readable for
/// `64·segs.len() + 4·NG + (kh − 1)·row_step` bytes (block `b` reads up to byte
/// `64·b + 3 + 4·(NG − 1) + (kh − 1)·row_step + 63`); `out` writable at every run
/// (bytes, or i32 when `k` is `None`); `wts` holds `kh·NG` words; every run has
/// `at + len ≤ 64`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn dw_i8_flat<const NG: usize>(
    f: &DwFlat,
    plane: *const u8,
    wts: &[i32],
    kh: usize,
    init: i32,
    k: Option<&Requant512>,
    out: *mut u8,
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed in
    // `# Safety`. The masked stores address `out + off − at`, possibly outside the output,
    // but only the run's bytes are accessed.
    unsafe {
        let k = k.copied();
        let init = _mm512_set1_epi32(init.wrapping_add(k.map_or(0, |k| k.int_bias())));
        let mut tr = [0u8; 64];
        for (q, t) in tr.iter_mut().enumerate() {
            *t = (4 * (q % 4) + (q % 16) / 4) as u8;
        }
        let tr = _mm512_loadu_si512(tr.as_ptr().cast());
        for (b, segs) in f.segs.iter().enumerate() {
            let mut acc = [init; 4];
            let mut p = plane.add(64 * b);
            for ky in 0..kh {
                for j in 0..NG {
                    let wv = _mm512_set1_epi32(wts[ky * NG + j]);
                    for (s, a) in acc.iter_mut().enumerate() {
                        let u = _mm512_loadu_si512(p.add(s + 4 * j).cast());
                        *a = _mm512_dpbusd_epi32(*a, u, wv);
                    }
                }
                p = p.add(f.row_step);
            }
            match &k {
                None => {
                    let mut t = [0i32; 64];
                    for (s, &a) in acc.iter().enumerate() {
                        _mm512_storeu_si512(t[16 * s..].as_mut_ptr().cast(), a);
                    }
                    for &(at, off, len) in segs {
                        let dst = out.cast::<i32>().add(off);
                        for c in 0..len {
                            let q = at + c;
                            *dst.add(c) = t[16 * (q % 4) + q / 4];
                        }
                    }
                }
                Some(k) => {
                    let y0 = requant_rel_512!(k, acc[0], false);
                    let y1 = requant_rel_512!(k, acc[1], false);
                    let y2 = requant_rel_512!(k, acc[2], false);
                    let y3 = requant_rel_512!(k, acc[3], false);
                    let bytes = _mm512_shuffle_epi8(pack4_512!(k, y0, y1, y2, y3), tr);
                    for &(at, off, len) in segs {
                        let bits = if len >= 64 { !0u64 } else { (1u64 << len) - 1 };
                        _mm512_mask_storeu_epi8(
                            out.add(off).wrapping_sub(at).cast(),
                            bits << at,
                            bytes,
                        );
                    }
                }
            }
        }
    }
}

/// [`interleave4`] with AVX-512 (64 positions per step), then the SSE2 version for the rest.
///
/// # Safety
/// avx512f and avx512bw must be available; ranges as for [`interleave4`].
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn interleave4_avx512(src: [*const u8; 4], n: usize, flip: u8, dst: *mut u8) {
    // SAFETY: every access is below n (sources) or 4n (destination), as the caller guarantees;
    // the last step masks its loads and stores to that range.
    unsafe {
        let f = _mm512_set1_epi8(flip as i8);
        let mut i = 0;
        while i < n {
            let rem = (n - i).min(64);
            let lm: __mmask64 = if rem == 64 { !0 } else { (1u64 << rem) - 1 };
            let mut r = [_mm512_setzero_si512(); 4];
            for (rj, s) in r.iter_mut().zip(src) {
                *rj = _mm512_xor_si512(_mm512_maskz_loadu_epi8(lm, s.add(i).cast()), f);
            }
            // Per 128-bit lane k, q_m holds positions 16k + 4m .. 16k + 4m + 3.
            let ab_lo = _mm512_unpacklo_epi8(r[0], r[1]);
            let ab_hi = _mm512_unpackhi_epi8(r[0], r[1]);
            let cd_lo = _mm512_unpacklo_epi8(r[2], r[3]);
            let cd_hi = _mm512_unpackhi_epi8(r[2], r[3]);
            let q0 = _mm512_unpacklo_epi16(ab_lo, cd_lo);
            let q1 = _mm512_unpackhi_epi16(ab_lo, cd_lo);
            let q2 = _mm512_unpacklo_epi16(ab_hi, cd_hi);
            let q3 = _mm512_unpackhi_epi16(ab_hi, cd_hi);
            // 4×4 transpose of 128-bit lanes: out_k = [q0.k, q1.k, q2.k, q3.k].
            let t0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(q0, q1);
            let t1 = _mm512_shuffle_i32x4::<0b01_00_01_00>(q2, q3);
            let t2 = _mm512_shuffle_i32x4::<0b11_10_11_10>(q0, q1);
            let t3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(q2, q3);
            let out = [
                _mm512_shuffle_i32x4::<0b10_00_10_00>(t0, t1),
                _mm512_shuffle_i32x4::<0b11_01_11_01>(t0, t1),
                _mm512_shuffle_i32x4::<0b10_00_10_00>(t2, t3),
                _mm512_shuffle_i32x4::<0b11_01_11_01>(t2, t3),
            ];
            let d = dst.add(4 * i);
            for (k, &v) in out.iter().enumerate() {
                // Output bytes 64k .. 64k + 63 of this step; 4·rem are valid.
                let valid = (4 * rem).saturating_sub(64 * k).min(64);
                if valid == 64 {
                    _mm512_storeu_si512(d.add(64 * k).cast(), v);
                } else if valid > 0 {
                    _mm512_mask_storeu_epi8(d.add(64 * k).cast(), (1u64 << valid) - 1, v);
                }
            }
            i += rem;
        }
    }
}
