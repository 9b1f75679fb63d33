//! GEMM micro-kernels of the direct (implicit im2col) convs: one tile of up to 6 output
//! channels × 64 pixels per call, accumulators in registers, stored to a [`Tile`] / [`TileF`].
//!
//! * int8 (`Σ u8·s8` in wrapping int32, see the zero-point folding in [`crate::cpu::fast`]):
//!   [`gemm_i8_avx512`] (AVX-512 VNNI, zmm `vpdpbusd`), [`gemm_i8_avxvnni`] (AVX-VNNI, VEX
//!   ymm `vpdpbusd`), [`gemm_i8_avxvnni_evex`] (the same ymm tile with EVEX `vpdpbusd`, on
//!   AVX-512 VNNI + VL), [`gemm_i8_avx2`] (AVX2, exact `vpmaddwd` emulation without VNNI),
//!   [`gemm_i8_avx2_maddubs`] (AVX2 `vpmaddubsw`, for layers whose ranges rule out its int16
//!   saturation).
//! * f32 (one FMA per product, in the documented order): [`gemm_f32_avx512`] (AVX-512F) and
//!   [`gemm_f32_avx2`] (AVX2 + FMA).

use std::arch::x86_64::*;

use super::requant::{store_rows16_avx2, I8Rows};

/// Accumulator tile: up to 6 channels × 64 pixels (the callers' `int8::Tile`).
type Tile = [[i32; 64]; 6];
/// Float accumulator tile: up to 6 channels × 64 pixels (the callers' `float::TileF`).
type TileF = [[f32; 64]; 6];

/// The epilogue of a float GEMM tile whose pixels are consecutive outputs of each channel's
/// plane (a 1x1 conv over whole planes): channel `r`'s sums go, plus `bias[r]`, then clamped
/// as `F32Clamp::apply` (`vminps(vmaxps(y, lo), hi)`) where `clamp` is set, straight into
/// `dst + r·stride + [0, npx)`: the operations of the tile's separate epilogue
/// (`add_bias_runs_avx512`, the scalar loop) without the tile's store and reload (a
/// float MobileNetV2 spent 8% of its time in that epilogue).
pub(crate) struct TileRows {
    /// Channel 0's first output.
    pub dst: *mut f32,
    /// Floats from one channel's outputs to the next's.
    pub stride: usize,
    /// Outputs per channel (the tile's pixels).
    pub npx: usize,
    /// One bias per channel of the tile (0.0 for a conv without bias, as the epilogue adds).
    pub bias: [f32; 6],
    /// `(lo, hi)` of a fused clamp.
    pub clamp: Option<(f32, f32)>,
}

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
pub(crate) unsafe fn gemm_i8_avx512<const NR: usize, const MV: usize, const PNR: usize>(
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
        /// The sums go into `out` (see [`YmmOut`]).
        ///
        /// # Safety
        /// The features must be available; reads as for [`gemm_i8_avx512`] with 32-byte
        /// vectors; `out` as [`YmmOut`] requires.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name<const NR: usize, const MV: usize>(
            act: *const u8,
            offs: &[usize],
            cbs: usize,
            ncb: usize,
            w: *const u8,
            init: &[i32; 6],
            out: YmmOut,
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
                store_i8_ymm(acc, out);
            }
        }
    };
}

/// Where a ymm int8 GEMM tile puts its sums: into an accumulator tile (`Tile`: row `r`, pixels
/// `8v ..`), or, for a tile of 16 pixels (`MV = 2`), requantized straight into the output
/// (`Rows`, see [`I8Rows`]; the caller guarantees its ranges and constants as
/// [`store_rows16_avx2`] requires).
pub(crate) enum YmmOut<'a> {
    /// The accumulator tile.
    Tile(&'a mut Tile),
    /// The fused epilogue.
    Rows(&'a I8Rows<'a>),
}

/// The end of a ymm int8 tile: the accumulators into `out`.
///
/// # Safety
/// avx2 must be available; `out` as [`YmmOut`] requires.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_i8_ymm<const NR: usize, const MV: usize>(acc: [[__m256i; MV]; NR], out: YmmOut) {
    // (`acc` by value: taken by reference, the kernels kept a copy of every accumulator in
    // memory, stored at every step of their loop.)
    match out {
        YmmOut::Rows(d) => {
            assert!(MV == 2, "the fused epilogue takes tiles of 16 pixels");
            // SAFETY: `MV = 2`, so each row is two vectors; the caller guarantees `d`.
            unsafe {
                let acc2 = std::slice::from_raw_parts(acc.as_ptr().cast::<[__m256i; 2]>(), NR);
                store_rows16_avx2(acc2, d)
            }
        }
        YmmOut::Tile(t) => {
            for (r, accr) in acc.iter().enumerate() {
                for (v, &x) in accr.iter().enumerate() {
                    // SAFETY: row r < NR ≤ 6 of the tile, lanes 8v .. 8v + 8 < 64.
                    unsafe { _mm256_storeu_si256(t[r].as_mut_ptr().add(8 * v).cast(), x) };
                }
            }
        }
    }
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

/// `vpdpbusd` from AVX2: `vpmaddubsw` (u8 × s8, adjacent products summed in **saturating**
/// int16), `vpmaddwd` by ones (the two int16 sums of each 32-bit lane into int32), `vpaddd`.
/// Equal to `vpdpbusd` only when no int16 pair sum `a0·w0 + a1·w1` leaves `[-32768, 32767]`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn dpbusd_maddubs(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(
        acc,
        _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)),
    )
}

gemm_i8_ymm!(
    /// The ymm tile on AVX2 without VNNI for layers whose ranges rule out saturation, with
    /// [`dpbusd_maddubs`] for `vpdpbusd` and the VNNI paths' 4-byte weight lanes. The caller
    /// proves that no pair sum saturates from the activations' maximum and the weights' pair
    /// sums (see `int8::PairBounds`), and uses [`gemm_i8_avx2`] otherwise; a saturating call
    /// is wrong, though memory-safe.
    gemm_i8_avx2_maddubs,
    "avx2",
    dpbusd_maddubs
);

/// The GEMM tile on AVX2 without VNNI, exact: each 32-bit activation lane `(a0, a1, a2, a3)`
/// (u8) is split into 16-bit halves `(a0, a2)` and `(a1, a3)`; weights are pre-split at pack
/// time into `(w0, w2)` and `(w1, w3)` (i16, sign-extended), layout `[t][cb][NR][2]` i32 words.
/// `vpmaddwd` then gives `a0·w0 + a2·w2` and `a1·w1 + a3·w3` exactly (|pair sum| ≤ 2·255·128),
/// unlike `vpmaddubsw`, whose int16 pair sums saturate.
///
/// The sums go into `out` (see [`YmmOut`]).
///
/// # Safety
/// avx2 must be available; reads as for [`gemm_i8_avx512`] with 32-byte vectors, and
/// `offs.len()·ncb·NR·8` weight bytes; `out` as [`YmmOut`] requires.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn gemm_i8_avx2<const NR: usize, const MV: usize>(
    act: *const u8,
    offs: &[usize],
    cbs: usize,
    ncb: usize,
    w: *const u8,
    init: &[i32; 6],
    out: YmmOut,
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
        store_i8_ymm(acc, out);
    }
}

/// Defines an f32 GEMM tile of `$lanes` pixels per vector from the vector intrinsics given:
/// `out[r][lanes·v + l] = fma chain over (t, c)` of `act[t][c][pixel]·w[t][c][r]`, in the
/// documented order (taps, then channels, one FMA each).
///
/// Activations: for tap `t` and channel `c`, the `lanes·MV` pixels are the f32 at
/// `act + offs[t] + c·cs + lanes·v` (offsets in elements). Weights: `[t][c][NR]` f32.
///
/// With `$prefetch > 0` each step also prefetches the activations `$prefetch` channels
/// ahead. The channels are planes `cs` floats apart, 13–16 KiB for a 56x56 or 64x64 image, so
/// every step reads a new 4 KiB page, where the hardware prefetchers do not follow: on a Zen 4
/// core the AVX2 tile ran such shapes at 57–72% of its `vfmadd` peak and, with a prefetch 2
/// channels ahead, 75–83% (small planes unchanged; README, *Benchmarks*). Every line of the
/// span is prefetched (the AVX-512 tile's span is four lines; on an Intel Xeon it ran (i)
/// 9% faster 4 channels ahead than without).
macro_rules! gemm_f32_tile {
    (
        $(#[$doc:meta])* $name:ident, $features:literal, $lanes:literal, $prefetch:literal,
        $zero:ident, $load:ident, $set1:ident, $fma:ident, $store:ident, $add:ident,
        $max:ident, $min:ident, $store_first:ident
    ) => {
        $(#[$doc])*
        ///
        /// The first `NR` channels of panels of `pnr` channels per `(tap, c)` (a panel's last,
        /// partial tile computes only the channels that exist). The sums go into `out`, or
        /// with `rows` through its epilogue into the output (see [`TileRows`]).
        ///
        /// # Safety
        /// The features must be available; all reads in range as for [`gemm_i8_avx512`];
        /// `NR ≤ pnr`; with `rows`, `dst + r·stride + [0, npx)` writable for `r < NR` and
        /// `npx ≤ lanes·MV`.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name<const NR: usize, const MV: usize>(
            act: *const f32,
            offs: &[usize],
            cs: usize,
            nc: usize,
            w: *const f32,
            pnr: usize,
            out: &mut TileF,
            rows: Option<&TileRows>,
        ) {
            // SAFETY: the caller guarantees the target features and the memory ranges
            // listed in `# Safety`; every access below stays inside them.
            unsafe {
                let mut acc = [[$zero(); MV]; NR];
                let mut wp = w;
                for &off in offs {
                    let mut p = act.add(off);
                    for _ in 0..nc {
                        if $prefetch > 0 {
                            // The span `$prefetch` channels ahead (each of its lines, the last
                            // one too where the span is not aligned; past the last plane a
                            // prefetch reads nothing, and never faults).
                            let q = p.wrapping_add($prefetch * cs);
                            for o in (0..$lanes * MV).step_by(16) {
                                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(o).cast());
                            }
                            _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add($lanes * MV - 1).cast());
                        }
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
                        wp = wp.add(pnr);
                        p = p.add(cs);
                    }
                }
                let Some(d) = rows else {
                    for (r, accr) in acc.iter().enumerate() {
                        for (v, &x) in accr.iter().enumerate() {
                            $store(out[r].as_mut_ptr().add($lanes * v), x);
                        }
                    }
                    return;
                };
                let bounds = d.clamp.map(|(lo, hi)| ($set1(lo), $set1(hi)));
                for (r, accr) in acc.iter().enumerate() {
                    let b = $set1(d.bias[r]);
                    let row = d.dst.add(r * d.stride);
                    for (v, &x) in accr.iter().enumerate() {
                        let mut y = $add(x, b);
                        if let Some((lo, hi)) = bounds {
                            y = $min($max(y, lo), hi);
                        }
                        let n = d.npx.saturating_sub($lanes * v).min($lanes);
                        $store_first(row.add($lanes * v), y, n);
                    }
                }
            }
        }
    };
}

/// Stores the first `n ≤ 16` lanes of `v` at `p` (masked).
///
/// # Safety
/// avx512f must be available; `p + [0, n)` writable.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_first_ps512(p: *mut f32, v: __m512, n: usize) {
    // SAFETY: the store is masked to the `n` lanes the caller guarantees writable.
    unsafe { _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, v) }
}

/// Stores the first `n ≤ 8` lanes of `v` at `p` (`vmaskmovps` below 8).
///
/// # Safety
/// avx2 must be available; `p + [0, n)` writable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_first_ps256(p: *mut f32, v: __m256, n: usize) {
    // SAFETY: a full store when `n = 8`, else masked to the `n` lanes the caller guarantees
    // writable (lane `l` stored where mask lane `l` has its top bit set: `l < n`).
    unsafe {
        if n >= 8 {
            _mm256_storeu_ps(p, v)
        } else {
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes);
            _mm256_maskstore_ps(p, m, v)
        }
    }
}

macro_rules! gemm_nhwc_i8_tile {
    ($(#[$doc:meta])* $name:ident, $features:literal, $lanes:literal, $vecs:literal,
     $vzero:ident, $load:ident, $store:ident, $set1:ident, $dpbusd:ident) => {
        $(#[$doc])*
        ///
        /// Every pixel's sums start from `init` (one value per channel) and are stored into
        /// `acc[m]`. Only the first `M ≤ 6` pixels are computed (a block's last, partial
        /// micro-tile); the other rows of `acc` are left as they are.
        ///
        /// # Safety
        /// The features must be available; every activation read (`act + pix[m] + taps[t] +
        /// [0, 4·ncb)`, `m < M`) and the `taps.len()·ncb` weight rows (4 bytes per channel)
        /// must be readable.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name<const M: usize>(
            act: *const u8,
            pix: &[usize; 6],
            taps: &[usize],
            ncb: usize,
            w: *const u8,
            init: &[i32; $lanes * $vecs],
            acc: &mut [[i32; $lanes * $vecs]; 6],
        ) {
            // SAFETY: the caller guarantees the target features and the ranges listed above.
            unsafe {
                let mut r = [[$vzero(); $vecs]; M];
                for rm in r.iter_mut() {
                    for (v, x) in rm.iter_mut().enumerate() {
                        *x = $load(init.as_ptr().add($lanes * v).cast());
                    }
                }
                let mut wp = w;
                for &t in taps {
                    let p: [*const u8; M] = std::array::from_fn(|m| act.add(pix[m] + t));
                    for cb in 0..ncb {
                        let b: [_; $vecs] =
                            std::array::from_fn(|v| $load(wp.add(4 * $lanes * v).cast()));
                        for (m, rm) in r.iter_mut().enumerate() {
                            let a = $set1(p[m].add(4 * cb).cast::<i32>().read_unaligned());
                            for v in 0..$vecs {
                                rm[v] = $dpbusd(rm[v], a, b[v]);
                            }
                        }
                        wp = wp.add(4 * $lanes * $vecs);
                    }
                }
                for (rm, am) in r.iter().zip(acc.iter_mut()) {
                    for (v, &x) in rm.iter().enumerate() {
                        $store(am.as_mut_ptr().add($lanes * v).cast(), x);
                    }
                }
            }
        }
    };
}

gemm_nhwc_i8_tile!(
    /// The channels-in-lanes int8 GEMM tile on AVX-512 VNNI (see `cpu::fast::nhwc`): 6 output
    /// pixels × 64 output channels (4 zmm), `acc[m][16v + i] = init[16v + i] + Σ_t Σ_cb u·w`
    /// (wrapping), where
    /// for pixel `m`, tap `t` and channel block `cb` the 4 activation bytes at
    /// `act + pix[m] + taps[t] + 4·cb` are broadcast to every lane and multiplied with the
    /// 64-channel weight row `w[(t·ncb + cb)·256 ..]` (`t` counting from the first of `taps`).
    gemm_nhwc_avx512,
    "avx512f,avx512vnni",
    16,
    4,
    _mm512_setzero_si512,
    _mm512_loadu_si512,
    _mm512_storeu_si512,
    _mm512_set1_epi32,
    _mm512_dpbusd_epi32
);

gemm_nhwc_i8_tile!(
    /// [`gemm_nhwc_avx512`] on AVX-VNNI: 6 output pixels × 16 output channels (2 ymm, 12
    /// accumulators of the 16 registers, VEX `vpdpbusd`), weight rows of 16 channels.
    gemm_nhwc_avxvnni,
    "avx2,avxvnni",
    8,
    2,
    _mm256_setzero_si256,
    _mm256_loadu_si256,
    _mm256_storeu_si256,
    _mm256_set1_epi32,
    _mm256_dpbusd_avx_epi32
);

gemm_nhwc_i8_tile!(
    /// [`gemm_nhwc_avxvnni`] on AVX2 without VNNI, with [`dpbusd_maddubs`] for `vpdpbusd`: the
    /// caller proves that no `vpmaddubsw` pair sum saturates (see `int8::PairBounds`), and runs
    /// the flat exact kernel otherwise; a saturating call is wrong, though memory-safe.
    gemm_nhwc_avx2_maddubs,
    "avx2",
    8,
    2,
    _mm256_setzero_si256,
    _mm256_loadu_si256,
    _mm256_storeu_si256,
    _mm256_set1_epi32,
    dpbusd_maddubs
);

gemm_nhwc_i8_tile!(
    /// [`gemm_nhwc_avxvnni`] with EVEX `vpdpbusd` (AVX512-VNNI + VL): the `avx-vnni` path on
    /// CPUs without the VEX encoding.
    gemm_nhwc_avxvnni_evex,
    "avx2,avx512f,avx512vl,avx512vnni",
    8,
    2,
    _mm256_setzero_si256,
    _mm256_loadu_si256,
    _mm256_storeu_si256,
    _mm256_set1_epi32,
    _mm256_dpbusd_epi32
);

macro_rules! gemm_f32_nhwc_tile {
    ($(#[$doc:meta])* $name:ident, $features:literal, $lanes:literal, $vecs:literal,
     $vzero:ident, $load:ident, $set1:ident, $fma:ident, $store:ident) => {
        $(#[$doc])*
        ///
        /// Only the first `M ≤ 6` pixels are computed (a run's last, partial micro-tile); the
        /// other rows of `acc` are left as they are.
        ///
        /// Input channel `c` of a pixel lies `c·cs` values after its first (`cs = 1` in an
        /// NHWC image, the plane's size where a 1×1 conv reads the NCHW input itself).
        ///
        /// # Safety
        /// The features must be available; every activation read (`act + pix[m] + taps[t] +
        /// c·cs`, `c < cin`, `m < M`) and the `taps.len()·cin` weight rows must be readable.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name<const M: usize>(
            act: *const f32,
            pix: &[usize; 6],
            taps: &[usize],
            cin: usize,
            cs: usize,
            w: *const f32,
            acc: &mut [[f32; $lanes * $vecs]; 6],
        ) {
            // SAFETY: the caller guarantees the target features and the ranges listed above.
            unsafe {
                let mut r = [[$vzero(); $vecs]; M];
                let mut wp = w;
                for &t in taps {
                    let p: [*const f32; M] = std::array::from_fn(|m| act.add(pix[m] + t));
                    for c in 0..cin {
                        let b: [_; $vecs] = std::array::from_fn(|v| $load(wp.add($lanes * v)));
                        let off = c * cs;
                        for (m, rm) in r.iter_mut().enumerate() {
                            let a = $set1(*p[m].add(off));
                            for v in 0..$vecs {
                                rm[v] = $fma(a, b[v], rm[v]);
                            }
                        }
                        wp = wp.add($lanes * $vecs);
                    }
                }
                for (rm, am) in r.iter().zip(acc.iter_mut()) {
                    for (v, &x) in rm.iter().enumerate() {
                        $store(am.as_mut_ptr().add($lanes * v), x);
                    }
                }
            }
        }
    };
}

/// Both f32 GEMM tiles of one ISA: the flat one ([`gemm_f32_tile`]) and the channels-in-lanes
/// one ([`gemm_f32_nhwc_tile`]), from the same vector intrinsics.
macro_rules! gemm_f32_tiles {
    ($(#[$fdoc:meta])* $flat:ident, $(#[$ndoc:meta])* $nhwc:ident, $features:literal,
     $lanes:literal, $vecs:literal, $prefetch:literal, $($intrinsic:ident),+;
     $($epilogue:ident),+) => {
        gemm_f32_tile!(
            $(#[$fdoc])* $flat, $features, $lanes, $prefetch, $($intrinsic),+, $($epilogue),+
        );
        gemm_f32_nhwc_tile!($(#[$ndoc])* $nhwc, $features, $lanes, $vecs, $($intrinsic),+);
    };
}

gemm_f32_tiles!(
    /// f32 GEMM tile on AVX-512 (16 pixels per vector; prefetching the four lines of the span
    /// 4 channels ahead: (i) 8.6 → 7.8 ms, one thread, Intel Xeon, medians of 5 alternated
    /// runs; the first and last lines 2 channels ahead, as on AVX2, left two of four lines
    /// to the hardware).
    gemm_f32_avx512,
    /// The channels-in-lanes f32 GEMM tile on AVX-512 (see `cpu::fast::nhwc`): 6 output
    /// pixels × 64 output channels (4 zmm), `acc[m][i] = fma(a, w, acc[m][i])` for each tap
    /// `t` (in the order of `taps`) and each input channel `c < cin` (in order), where `a` is
    /// the activation at `act + pix[m] + taps[t] + c·cs`, broadcast to every lane, and `w` the
    /// 64-channel weight row `w[(t·cin + c)·64 ..]`: the documented order of the f32 conv,
    /// from `+0.0`; the sums are stored into `acc[m]`.
    gemm_f32_nhwc_avx512,
    "avx512f",
    16,
    4,
    4,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps;
    _mm512_add_ps,
    _mm512_max_ps,
    _mm512_min_ps,
    store_first_ps512
);

gemm_f32_tiles!(
    /// f32 GEMM tile on AVX2 + FMA (8 pixels per vector; prefetching 2 channels ahead).
    gemm_f32_avx2,
    /// [`gemm_f32_nhwc_avx512`] on AVX2 + FMA: 6 output pixels × 16 output channels (2 ymm, 12
    /// accumulators of the 16 registers), weight rows of 16 channels.
    gemm_f32_nhwc_avx2,
    "avx2,fma",
    8,
    2,
    2,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps;
    _mm256_add_ps,
    _mm256_max_ps,
    _mm256_min_ps,
    store_first_ps256
);

/// Transposes the first `npx ≤ 64` pixel rows of the first `nch ≤ 64` channel accumulators
/// (`src[p][c]`) into `dst[c][p]`, by 16×16 blocks transposed in registers (two unpack stages
/// within 128-bit lanes, two lane shuffles across them): the blocks that hold a pixel below
/// `npx` and a channel below `nch` (lanes past them hold whatever those blocks held).
///
/// # Safety
/// avx512f must be available.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose_pixels_avx512(
    src: &[[i32; 64]; 66],
    dst: &mut [[i32; 64]; 70],
    npx: usize,
    nch: usize,
) {
    // SAFETY: the caller guarantees the target feature; every load reads row 16pb + i < 64 at
    // column 16cb + [0, 16) and every store writes row 16cb + j < 64 at columns 16pb + [0, 16).
    unsafe {
        for pb in 0..npx.div_ceil(16).min(4) {
            for cb in 0..nch.div_ceil(16).min(4) {
                let r: [__m512i; 16] = std::array::from_fn(|i| {
                    _mm512_loadu_si512(src[16 * pb + i].as_ptr().add(16 * cb).cast())
                });
                for (c, v) in transpose16_epi32(r).into_iter().enumerate() {
                    _mm512_storeu_si512(dst[16 * cb + c].as_mut_ptr().add(16 * pb).cast(), v);
                }
            }
        }
    }
}

/// The 16×16 transposition of 32-bit lanes: lane `i` of output `c` is lane `c` of input `i`
/// (two unpack stages within 128-bit lanes, two lane shuffles across them).
///
/// # Safety
/// avx512f must be available.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose16_epi32(r: [__m512i; 16]) -> [__m512i; 16] {
    // u[g][k], 128-bit lane L: element 4L + k of rows 4g .. 4g + 4.
    let u: [[__m512i; 4]; 4] = std::array::from_fn(|g| {
        let (r0, r1, r2, r3) = (r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
        let (a, b) = (_mm512_unpacklo_epi32(r0, r1), _mm512_unpackhi_epi32(r0, r1));
        let (c, d) = (_mm512_unpacklo_epi32(r2, r3), _mm512_unpackhi_epi32(r2, r3));
        [
            _mm512_unpacklo_epi64(a, c),
            _mm512_unpackhi_epi64(a, c),
            _mm512_unpacklo_epi64(b, d),
            _mm512_unpackhi_epi64(b, d),
        ]
    });
    let mut out = [_mm512_setzero_si512(); 16];
    for k in 0..4 {
        let (g0, g1, g2, g3) = (u[0][k], u[1][k], u[2][k], u[3][k]);
        let v0 = _mm512_shuffle_i32x4::<0x88>(g0, g1);
        let v1 = _mm512_shuffle_i32x4::<0xDD>(g0, g1);
        let w0 = _mm512_shuffle_i32x4::<0x88>(g2, g3);
        let w1 = _mm512_shuffle_i32x4::<0xDD>(g2, g3);
        out[k] = _mm512_shuffle_i32x4::<0x88>(v0, w0);
        out[4 + k] = _mm512_shuffle_i32x4::<0x88>(v1, w1);
        out[8 + k] = _mm512_shuffle_i32x4::<0xDD>(v0, w0);
        out[12 + k] = _mm512_shuffle_i32x4::<0xDD>(v1, w1);
    }
    out
}

/// The epilogue of the channels-in-lanes f32 GEMM on AVX-512 ([`gemm_f32_nhwc_avx512`]'s
/// accumulator rows, one per pixel, 64 channels each): for channel `j < nch` and pixel
/// `i < count`, `out[j·stride + i] = clamp(rows[64·i + j] + bias[j])`
/// ([`crate::cpu::fast::F32Clamp`]'s `max` then `min`; the `+ bias` always, `+0.0` without
/// one, as the scalar code), 16 pixels × 16 channels at a time through one 16×16
/// transposition, each channel's pixels stored with one masked store. The scalar loop read
/// each accumulator with a 256-byte stride.
///
/// # Safety
/// avx512f must be available; `rows` holds `64·count` values, `bias` `nch ≤ 64`; `out +
/// j·stride + [0, count)` writable for every `j < nch`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn nhwc_f32_out_avx512(
    rows: &[f32],
    count: usize,
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    out: *mut f32,
    stride: usize,
) {
    let nch = bias.len();
    debug_assert!(rows.len() >= 64 * count && nch <= 64 && count >= 1);
    // SAFETY: the caller guarantees the feature and the ranges above; rows past `count` are
    // read as the last one (not stored), the stores are masked to `count` pixels.
    unsafe {
        let bounds = clamp.map(|(lo, hi)| (_mm512_set1_ps(lo), _mm512_set1_ps(hi)));
        for p0 in (0..count).step_by(16) {
            let np = (count - p0).min(16);
            let m: __mmask16 = ((1u32 << np) - 1) as __mmask16;
            for c0 in (0..nch).step_by(16) {
                let r: [__m512i; 16] = std::array::from_fn(|i| {
                    let p = p0 + i.min(np - 1);
                    _mm512_loadu_si512(rows.as_ptr().add(64 * p + c0).cast())
                });
                let t = transpose16_epi32(r);
                for (j, &tj) in t.iter().enumerate().take(nch - c0) {
                    let c = c0 + j;
                    let mut y = _mm512_add_ps(_mm512_castsi512_ps(tj), _mm512_set1_ps(bias[c]));
                    if let Some((lo, hi)) = bounds {
                        y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
                    }
                    _mm512_mask_storeu_ps(out.add(c * stride + p0), m, y);
                }
            }
        }
    }
}

/// The 8×8 transposition of f32 lanes: lane `i` of output `c` is lane `c` of input `i`
/// (unpacks and shuffles within 128-bit lanes, then one lane permutation across them).
///
/// # Safety
/// avx must be available.
#[inline]
#[target_feature(enable = "avx")]
pub(crate) unsafe fn transpose8_ps(r: [__m256; 8]) -> [__m256; 8] {
    // s[h][k]: lane L of 128-bit half j holds element k + 4j of row 4h + L.
    let s: [[__m256; 4]; 2] = std::array::from_fn(|h| {
        let (r0, r1, r2, r3) = (r[4 * h], r[4 * h + 1], r[4 * h + 2], r[4 * h + 3]);
        let (a, b) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
        let (c, d) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
        [
            _mm256_shuffle_ps::<0x44>(a, c),
            _mm256_shuffle_ps::<0xEE>(a, c),
            _mm256_shuffle_ps::<0x44>(b, d),
            _mm256_shuffle_ps::<0xEE>(b, d),
        ]
    });
    std::array::from_fn(|c| match c < 4 {
        true => _mm256_permute2f128_ps::<0x20>(s[0][c], s[1][c]),
        false => _mm256_permute2f128_ps::<0x31>(s[0][c - 4], s[1][c - 4]),
    })
}

/// [`nhwc_f32_out_avx512`] on AVX2 ([`gemm_f32_nhwc_avx2`]'s rows of 16 channels): for
/// channel `j < nch` and pixel `i < count`, `out[j·stride + i] = clamp(rows[16·i + j] +
/// bias[j])`, 8 pixels × 8 channels at a time through one 8×8 transposition, each channel's
/// pixels stored with one (masked, for a last partial group) store.
///
/// # Safety
/// avx2 must be available; `rows` holds `16·count` values, `bias` `nch ≤ 16`; `out +
/// j·stride + [0, count)` writable for every `j < nch`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn nhwc_f32_out_avx2(
    rows: &[f32],
    count: usize,
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    out: *mut f32,
    stride: usize,
) {
    let nch = bias.len();
    debug_assert!(rows.len() >= 16 * count && nch <= 16 && count >= 1);
    // SAFETY: the caller guarantees the feature and the ranges above; rows past `count` are
    // read as the last one (not stored), the stores cover `count` pixels only.
    unsafe {
        let bounds = clamp.map(|(lo, hi)| (_mm256_set1_ps(lo), _mm256_set1_ps(hi)));
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for p0 in (0..count).step_by(8) {
            let np = (count - p0).min(8);
            let m = _mm256_cmpgt_epi32(_mm256_set1_epi32(np as i32), lanes);
            for c0 in (0..nch).step_by(8) {
                let r: [__m256; 8] = std::array::from_fn(|i| {
                    let p = p0 + i.min(np - 1);
                    _mm256_loadu_ps(rows.as_ptr().add(16 * p + c0))
                });
                let t = transpose8_ps(r);
                for (j, &tj) in t.iter().enumerate().take(nch - c0) {
                    let c = c0 + j;
                    let mut y = _mm256_add_ps(tj, _mm256_set1_ps(bias[c]));
                    if let Some((lo, hi)) = bounds {
                        y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
                    }
                    let dst = out.add(c * stride + p0);
                    match np {
                        8 => _mm256_storeu_ps(dst, y),
                        _ => _mm256_maskstore_ps(dst, m, y),
                    }
                }
            }
        }
    }
}
