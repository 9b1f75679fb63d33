//! Depthwise-like conv kernels (`Cin/groups == 1`), driven by [`crate::cpu::fast`]'s
//! `depthwise` module.
//!
//! * Float rows: [`dw_avx512`] (AVX-512F) and [`dw_avx2`] (AVX2 + FMA), an FMA chain over the
//!   taps for `R` output rows at a time, stored as f32 or as exact i32.
//! * int8 on AVX-512 VNNI, four kernel columns per `vpdpbusd` lane, epilogue fused (the
//!   [`requant_rel_512!`] and [`pack4_512!`] macros of the `requant` module):
//!   [`dw_i8_flat`] (unit strides and column dilation, over a flat padded plane described by
//!   [`DwFlat`]) and [`dw_i8_channel`] (any stride or dilation, straight from the input with
//!   `vpermt2b`, so it also needs AVX-512 VBMI, see [`has_vbmi`]; geometry in [`DwGeom`]);
//!   on output rows of at most 32 pixels [`dw_i8_rows_avx512`] (VBMI too; geometry in
//!   [`DwRows`]), one or two zmm operand registers per input row, four output rows per step.
//! * int8 on ymm registers (AVX-VNNI, AVX-512 VNNI's EVEX form, AVX2's `vpmaddubsw` where
//!   exact), epilogue fused ([`finite_256!`], [`pack4_256!`]): [`dw_i8_flat_avxvnni`] (the
//!   flat layout), [`dw_i8_s2_avxvnni`] (column stride 2) and [`dw_i8_small_avxvnni`] (output
//!   rows of at most 8 pixels, straight from the input, geometry in [`DwSmall`]; its zmm
//!   form [`dw_i8_small_avx512`], two output rows per `vpdpbusd`, on AVX-512 VNNI).

use super::gemm::dpbusd_maddubs;
use super::requant::{
    finite_256, pack4_256, pack4_512, requant_rel_512, store_tail_bytes, Mode, Requant512,
};
use crate::quant::RequantFormula;
use std::arch::x86_64::*;

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
pub(crate) unsafe fn dw_avx512<const NV: usize, const R: usize, const I32: bool>(
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
pub(crate) unsafe fn dw_avx2<const NV: usize, const R: usize, const I32: bool>(
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

/// Int8 depthwise kernel on AVX2 over a *pair plane* (see `depthwise.rs`): every i32 of `p`
/// holds two i16 activations `(d[i], d[i + dw])` (`d = x − x_zp`), every i32 of `w` two i16
/// weights `(w'[t], w'[t + 1])` of adjacent kernel columns, so one `vpmaddwd` adds two taps of
/// 8 outputs exactly (|d|, |w'| ≤ 255: each pair sum fits easily). Accumulators wrap like
/// the reference's. Writes `acc` rows `r·os + [0, 8·(NV − 1) + tail)` as i32.
///
/// # Safety
/// avx2 must be available; reads `p + r·rs + off + [0, 8·NV)` for every `r < R` and `off` in
/// `offs`, writes `out + r·os + [0, 8·(NV − 1) + tail)` (`tail` in 1..=8).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dw_pairs_avx2<const NV: usize, const R: usize>(
    p: *const i32,
    rs: usize,
    offs: &[usize],
    w: &[i32],
    out: *mut i32,
    os: usize,
    tail: usize,
) {
    // SAFETY: the caller guarantees the target features and the memory ranges listed
    // in `# Safety`; every access below stays inside them.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); NV]; R];
        for (&off, &wt) in offs.iter().zip(w) {
            let wv = _mm256_set1_epi32(wt);
            for (r, accr) in acc.iter_mut().enumerate() {
                let q = p.add(r * rs + off);
                for (v, a) in accr.iter_mut().enumerate() {
                    let x = _mm256_loadu_si256(q.add(8 * v).cast());
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, wv));
                }
            }
        }
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let last = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail as i32), lane);
        let all = _mm256_set1_epi32(-1);
        for (r, accr) in acc.iter().enumerate() {
            for (v, &a) in accr.iter().enumerate() {
                let m = if v + 1 == NV { last } else { all };
                _mm256_maskstore_epi32(out.add(r * os + 8 * v), m, a);
            }
        }
    }
}

/// A 64-byte vector in memory (a `vpermt2b` index of the depthwise kernel).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Bytes64(pub [u8; 64]);

/// Whether this CPU has AVX512-VBMI (`vpermt2b`), which the int8 depthwise kernel needs on top
/// of the `avx512-vnni` path.
pub(crate) fn has_vbmi() -> bool {
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
pub(crate) struct DwGeom<'a> {
    /// Input row length (bytes).
    pub w: usize,
    /// Output row length.
    pub w_out: usize,
    /// Output rows.
    pub h_out: usize,
    /// Row stride.
    pub sy: usize,
    /// Row dilation.
    pub dh: usize,
    /// Row padding (top).
    pub ph: usize,
    /// Per output row: the valid kernel rows `ky_lo .. ky_hi` (input row inside the image).
    pub rows: &'a [(u32, u32)],
    /// Per (chunk, column group): the first input column loaded ("load base").
    pub lb: &'a [usize],
    /// Per (chunk, column group): the byte mask of the load (columns inside the row).
    pub mask: &'a [u64],
    /// Per (chunk, column group): the `vpermt2b` index building the `vpdpbusd` operand.
    pub idx: &'a [Bytes64],
    /// `u = x ^ flip` maps stored bytes to u8 activations.
    pub flip: u8,
    /// The activation zero point in `u`.
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
pub(crate) unsafe fn dw_i8_channel<const NG: usize>(
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
        let smask: __mmask64 = super::low_bits(valid);
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

/// The layout of the flat plane of [`dw_i8_flat`], the padded input of one channel as u8
/// activations `u` (`x ^ flip`; `z` at padded positions) in rows of `wp = W + 2·pw` bytes,
/// with slack after it; flat output position `q = oy·wp + ox`.
pub(crate) struct DwFlat<'a> {
    /// Bytes between kernel rows (`dh·wp`).
    pub row_step: usize,
    /// Per block of 64 flat output positions: the runs of real outputs (block position,
    /// output offset, length), as `int8::segments` gives them; blocks without any are absent
    /// from the end.
    pub segs: &'a [Vec<(usize, usize, usize)>],
}

/// The in-lane byte shuffle of [`dw_i8_flat`] that restores position order after the packs:
/// byte `q` of each 128-bit lane takes byte `4·(q mod 4) + ⌊q/4⌋` (built at compile time).
static PHASE_ORDER: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut q = 0;
    while q < 64 {
        t[q] = (4 * (q % 4) + (q % 16) / 4) as u8;
        q += 1;
    }
    t
};

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
pub(crate) unsafe fn dw_i8_flat<const NG: usize>(
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
        let tr = _mm512_loadu_si512(PHASE_ORDER.as_ptr().cast());
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
                        let bits = super::low_bits(len);
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

/// Where the ymm flat int8 depthwise kernels put each block of 32 flat positions.
pub(crate) enum DwYmmOut<'a> {
    /// The raw accumulators, in position order (`32·blocks` values).
    Acc(&'a mut [i32]),
    /// The requantized bytes, in position order (`32·blocks` bytes): the channel's epilogue
    /// `k` ([`Requant512::ymm_tile_ready`], built with a bound of the accumulators) fused
    /// into the kernel, as [`dw_i8_flat`] does on 16 lanes.
    Bytes(&'a Requant512, &'a mut [u8]),
}

/// Defines the ymm flat int8 depthwise kernel (see [`dw_i8_flat`], of which it is the
/// 8-lane version) with the given `vpdpbusd` intrinsic.
macro_rules! dw_i8_flat_ymm {
    ($(#[$doc:meta])* $name:ident, $features:literal, $dpbusd:ident) => {
        $(#[$doc])*
        ///
        /// The flat positions go by blocks of 32, each computed as four phases `s < 4` of 8
        /// lanes (lane `l` of phase `s` is position `q0 + 4l + s`): the taps `4j .. 4j + 4`
        /// of kernel row `ky` of those 8 positions are the 32 bytes loaded at
        /// `q0 + s + ky·row_step + 4j`, a `vpdpbusd` operand as they are. The accumulators
        /// start at `init` (`−z·Σ w'`), so that `acc = Σ (u − z)·w'` exactly (wrapping int32).
        /// [`DwYmmOut::Acc`] stores them in position order (a 4 × 8 transpose);
        /// [`DwYmmOut::Bytes`] requantizes the four phases in the registers ([`finite_256!`],
        /// [`pack4_256!`]: the bytes of `requant_row_finite_avx2`), and one in-lane byte
        /// shuffle restores position order (128-bit lane `h` of the packs holds, at byte
        /// `4s + a`, phase `s`'s lane `4h + a`: position `16h + 4a + s`), so that no
        /// accumulator leaves the registers: on the 56×56 depthwise conv the separate pass
        /// over stored accumulators took about 30% of the int8 conv's time (70% of the
        /// kernel's own).
        ///
        /// # Safety
        /// The features must be available; `plane` readable for
        /// `32·blocks + 4·NG + (kh − 1)·row_step + 32` bytes; `out` holds `32·blocks` values;
        /// `wts` holds `kh·NG` words.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name<const NG: usize>(
            plane: *const u8,
            row_step: usize,
            blocks: usize,
            wts: &[i32],
            kh: usize,
            init: i32,
            out: DwYmmOut,
        ) {
            debug_assert!(wts.len() >= kh * NG);
            // SAFETY: the caller guarantees the features and the ranges listed above.
            unsafe {
                let init = _mm256_set1_epi32(init);
                // The four phases' accumulators of block `b`.
                macro_rules! block {
                    ($b:expr) => {{
                        let mut a = [init; 4];
                        let mut p = plane.add(32 * $b);
                        for ky in 0..kh {
                            for j in 0..NG {
                                let wv = _mm256_set1_epi32(*wts.get_unchecked(ky * NG + j));
                                for (s, av) in a.iter_mut().enumerate() {
                                    let u = _mm256_loadu_si256(p.add(s + 4 * j).cast());
                                    *av = $dpbusd(*av, u, wv);
                                }
                            }
                            p = p.add(row_step);
                        }
                        a
                    }};
                }
                match out {
                    DwYmmOut::Acc(acc) => {
                        debug_assert!(acc.len() >= 32 * blocks);
                        for b in 0..blocks {
                            let a = block!(b);
                            // Position order: 128-bit half h of phase s holds positions
                            // 16h + 4l + s (l < 4); a 4 × 4 transpose per half, then the
                            // halves.
                            let t0 = _mm256_unpacklo_epi32(a[0], a[1]);
                            let t1 = _mm256_unpacklo_epi32(a[2], a[3]);
                            let t2 = _mm256_unpackhi_epi32(a[0], a[1]);
                            let t3 = _mm256_unpackhi_epi32(a[2], a[3]);
                            let r0 = _mm256_unpacklo_epi64(t0, t1);
                            let r1 = _mm256_unpackhi_epi64(t0, t1);
                            let r2 = _mm256_unpacklo_epi64(t2, t3);
                            let r3 = _mm256_unpackhi_epi64(t2, t3);
                            let dst = acc.as_mut_ptr().add(32 * b);
                            let (lo, hi) = (
                                _mm256_permute2x128_si256::<0x20>,
                                _mm256_permute2x128_si256::<0x31>,
                            );
                            _mm256_storeu_si256(dst.cast(), lo(r0, r1));
                            _mm256_storeu_si256(dst.add(8).cast(), lo(r2, r3));
                            _mm256_storeu_si256(dst.add(16).cast(), hi(r0, r1));
                            _mm256_storeu_si256(dst.add(24).cast(), hi(r2, r3));
                        }
                    }
                    DwYmmOut::Bytes(k, bytes) => {
                        debug_assert!(bytes.len() >= 32 * blocks);
                        let Mode::Finite(formula) = k.mode else {
                            unreachable!("the caller checked ymm_tile_ready");
                        };
                        let order = _mm256_loadu_si256(PHASE_ORDER.as_ptr().cast());
                        // One loop per formula (the first two constant, so that the match
                        // in `finite_256!` folds away).
                        macro_rules! blocks {
                            ($formula:expr) => {
                                for b in 0..blocks {
                                    let a = block!(b);
                                    let y0 = finite_256!(k, $formula, a[0]);
                                    let y1 = finite_256!(k, $formula, a[1]);
                                    let y2 = finite_256!(k, $formula, a[2]);
                                    let y3 = finite_256!(k, $formula, a[3]);
                                    let v = pack4_256!(k, y0, y1, y2, y3);
                                    let v = _mm256_shuffle_epi8(v, order);
                                    _mm256_storeu_si256(bytes.as_mut_ptr().add(32 * b).cast(), v);
                                }
                            };
                        }
                        match formula {
                            RequantFormula::Qnnpack => blocks!(RequantFormula::Qnnpack),
                            RequantFormula::Fbgemm => blocks!(RequantFormula::Fbgemm),
                            f => blocks!(f),
                        }
                    }
                }
            }
        }
    };
}

/// Defines the ymm int8 depthwise kernel for column stride 2 (no column dilation, `kw ≤ 4`)
/// with the given `vpdpbusd` intrinsic.
macro_rules! dw_i8_s2_ymm {
    ($(#[$doc:meta])* $name:ident, $features:literal, $dpbusd:ident) => {
        $(#[$doc])*
        ///
        /// Over the padded plane of `u = x ^ flip` (`z` at padded positions, rows of `wp`
        /// bytes), output `(oy, ox)` of kernel row `ky` reads the four bytes at
        /// `oy·sy_step + ky·row_step + 2·ox`: the taps `kx < 4` (`w'` is 0 past `kw`), one
        /// `vpdpbusd` operand lane. Eight outputs `ox0 .. ox0 + 8` take their lanes from the
        /// 16 bytes at `2·ox0` (low 128 bits) and at `2·ox0 + 8` (high), one in-lane byte
        /// shuffle each (lane `j` of a half: bytes `2j .. 2j + 4`). Accumulators start at
        /// `init` (`−z·Σ w'`): `acc = Σ (u − z)·w'` exactly (wrapping int32), requantized
        /// in the registers with the channel's constants `k` ([`finite_256!`],
        /// [`pack4_256!`]) and stored as the `h_out × w_out` bytes at `out`. Four output rows
        /// per step share one pack (one row per step packed a quarter of a register:
        /// 144x56x56 stride 2 0.096 → 0.074 ms on AVX-VNNI, 0.118 → 0.096 on AVX2, one
        /// thread, Intel Xeon).
        ///
        /// # Safety
        /// The features must be available; `k` [`Requant512::ymm_tile_ready`] (built with a
        /// bound of the accumulators); `plane` readable for `(h_out − 1)·sy_step +
        /// (kh − 1)·row_step + 2·w_out + 24` bytes; `out` writable for `h_out·w_out` bytes;
        /// `wts` holds `kh` words.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name(
            plane: *const u8,
            (row_step, sy_step): (usize, usize),
            (h_out, w_out): (usize, usize),
            wts: &[i32],
            kh: usize,
            init: i32,
            k: &Requant512,
            out: *mut u8,
        ) {
            debug_assert!(wts.len() >= kh);
            let Mode::Finite(formula) = k.mode else {
                unreachable!("the caller checked ymm_tile_ready");
            };
            // SAFETY: the caller guarantees the features and the ranges listed above.
            unsafe {
                let init = _mm256_set1_epi32(init);
                let pat = _mm256_setr_epi8(
                    0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5,
                    6, 7, 6, 7, 8, 9,
                );
                // Row r of the packs' result: its 8 bytes at 8r (see `dw_i8_small_avxvnni`).
                let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                // One loop per formula (the first two constant, so that the match in
                // `finite_256!` folds away). Four output rows per step (rows past the last
                // repeat it: computed, not stored), so that one pack serves 32 outputs: one
                // row per step packed a quarter of a register.
                macro_rules! rows {
                    ($formula:expr) => {
                        for oy in (0..h_out).step_by(4) {
                            let rows = [0, 1, 2, 3]
                                .map(|i| plane.add((oy + i).min(h_out - 1) * sy_step));
                            for ox in (0..w_out).step_by(8) {
                                let mut a = [init; 4];
                                for ky in 0..kh {
                                    let wv = _mm256_set1_epi32(*wts.get_unchecked(ky));
                                    let at = ky * row_step + 2 * ox;
                                    for (r, ar) in a.iter_mut().enumerate() {
                                        let p = rows[r].add(at);
                                        let v = _mm256_loadu2_m128i(p.add(8).cast(), p.cast());
                                        *ar = $dpbusd(*ar, _mm256_shuffle_epi8(v, pat), wv);
                                    }
                                }
                                let y0 = finite_256!(k, $formula, a[0]);
                                let y1 = finite_256!(k, $formula, a[1]);
                                let y2 = finite_256!(k, $formula, a[2]);
                                let y3 = finite_256!(k, $formula, a[3]);
                                let v = pack4_256!(k, y0, y1, y2, y3);
                                let v = _mm256_permutevar8x32_epi32(v, order);
                                let (lo, hi) = (
                                    _mm256_castsi256_si128(v),
                                    _mm256_extracti128_si256::<1>(v),
                                );
                                let rb = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
                                for (i, &b) in rb.iter().enumerate().take(h_out - oy) {
                                    let d = out.add((oy + i) * w_out + ox);
                                    match w_out - ox {
                                        8.. => _mm_storel_epi64(d.cast(), b),
                                        n => store_tail_bytes(d, _mm256_castsi128_si256(b), n),
                                    }
                                }
                            }
                        }
                    };
                }
                match formula {
                    RequantFormula::Qnnpack => rows!(RequantFormula::Qnnpack),
                    RequantFormula::Fbgemm => rows!(RequantFormula::Fbgemm),
                    f => rows!(f),
                }
            }
        }
    };
}

dw_i8_s2_ymm!(
    /// The int8 depthwise conv of one output channel at column stride 2 on AVX-VNNI (VEX
    /// `vpdpbusd`).
    dw_i8_s2_avxvnni,
    "avx2,avxvnni",
    _mm256_dpbusd_avx_epi32
);

dw_i8_s2_ymm!(
    /// [`dw_i8_s2_avxvnni`] with EVEX `vpdpbusd` (AVX512-VNNI + VL).
    dw_i8_s2_avxvnni_evex,
    "avx2,avx512f,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32
);

dw_i8_s2_ymm!(
    /// [`dw_i8_s2_avxvnni`] on AVX2 with `vpmaddubsw` for `vpdpbusd` ([`dpbusd_maddubs`]):
    /// exact only where no int16 pair sum can saturate (the caller's `maddubs_exact`).
    dw_i8_s2_maddubs,
    "avx2",
    dpbusd_maddubs
);

/// Padded input rows the small-plane kernels ([`dw_i8_small_avxvnni`]) hold at most.
pub(crate) const SMALL_ROWS: usize = 32;

/// The rows of one channel's plane that the row kernels ([`dw_i8_small_avxvnni`] and
/// [`dw_i8_rows_avx512`]) read, as padded rows `yp` (input row `yp − ph`).
struct RowPlane {
    /// Input rows and their length.
    h: usize,
    w: usize,
    /// Padding rows above the input.
    ph: usize,
    /// Padded rows the outputs read: `(h_out − 1)·sy + (kh − 1)·dh + 1`.
    rows: usize,
    sy: usize,
    dh: usize,
    h_out: usize,
    w_out: usize,
}

impl RowPlane {
    /// `(ox, j, col)` for every output column `ox` and kernel column `j` of `s` whose input
    /// column `col` lies inside the row (the other taps read padding): the column tables of
    /// both row kernels.
    fn real_taps(s: &crate::shape::ConvShape) -> impl Iterator<Item = (usize, usize, u8)> + '_ {
        let p = &s.params;
        (0..s.w_out).flat_map(move |ox| {
            (0..s.kw).filter_map(move |j| {
                let col = (ox * p.stride[1] + j * p.dilation[1]) as isize - p.padding[1] as isize;
                (0..s.w as isize)
                    .contains(&col)
                    .then_some((ox, j, col as u8))
            })
        })
    }

    /// The rows of conv `s` (one input channel per group).
    fn new(s: &crate::shape::ConvShape) -> Self {
        let p = &s.params;
        RowPlane {
            h: s.h,
            w: s.w,
            ph: p.padding[0],
            rows: Self::rows(s),
            sy: p.stride[0],
            dh: p.dilation[0],
            h_out: s.h_out,
            w_out: s.w_out,
        }
    }

    /// Padded rows the outputs of `s` read.
    fn rows(s: &crate::shape::ConvShape) -> usize {
        (s.h_out - 1) * s.params.stride[0] + (s.kh - 1) * s.params.dilation[0] + 1
    }

    /// The padded rows (of those read) that are input rows.
    fn real(&self) -> std::ops::Range<usize> {
        self.ph.min(self.rows)..(self.ph + self.h).min(self.rows)
    }
}

/// The geometry of the small-plane int8 depthwise kernels ([`dw_i8_small_avxvnni`],
/// [`dw_i8_small_avx512`]):
/// output rows of at most 8 pixels, kernels of at most 4 columns, input rows of at most 16
/// bytes (every column a row's outputs read lies in one 16-byte load), and at most
/// [`SMALL_ROWS`] padded rows read.
pub(crate) struct DwSmall {
    /// The byte shuffle of a row: byte `4l + j` of 128-bit half `h` is the input column
    /// that kernel column `j` of output column `ox = 4h + l` reads, or `0x80` (a zero) where
    /// that column is padding, past the kernel or past the row.
    idx: [u8; 32],
    /// XORed into the shuffled row: `flip` at real columns (`u = x ^ flip`), `z` elsewhere.
    fix: [u8; 32],
    /// The zero point of `u` (every byte of a padding row).
    z: u8,
    /// The rows read.
    p: RowPlane,
}

impl DwSmall {
    /// The geometry of `s` with activations `u = x ^ flip` of zero point `z`, or `None`
    /// where the small-plane kernels do not apply (see [`DwSmall`]; column dilation is any).
    pub(crate) fn new(s: &crate::shape::ConvShape, flip: u8, z: u8) -> Option<Self> {
        if !Self::fits(s) {
            return None;
        }
        let (mut idx, mut fix) = ([0x80u8; 32], [z; 32]);
        for (ox, j, col) in RowPlane::real_taps(s) {
            let b = 16 * (ox / 4) + 4 * (ox % 4) + j;
            (idx[b], fix[b]) = (col, flip);
        }
        Some(DwSmall {
            idx,
            fix,
            z,
            p: RowPlane::new(s),
        })
    }

    /// Whether the small-plane kernels apply to `s` (see [`DwSmall`]).
    pub(crate) fn fits(s: &crate::shape::ConvShape) -> bool {
        s.w_out <= 8 && s.kw <= 4 && s.w <= 16 && RowPlane::rows(s) <= SMALL_ROWS
    }

    /// Bytes from the start of a plane that the kernels read: each input row's 16.
    pub(crate) fn reads(&self) -> usize {
        (self.p.h - 1) * self.p.w + 16
    }
}

/// The `vpdpbusd` operand rows of the small-plane kernels, one ymm register per padded input
/// row (see [`dw_i8_small_avxvnni`]): rows `..g.rows`, the only ones read; the padding rows
/// (`z` in every byte) written once, the input rows per channel ([`SmallRows::load`]; not
/// initialized whole: that was 32 stores per channel).
struct SmallRows {
    q: [std::mem::MaybeUninit<__m256i>; SMALL_ROWS],
    idx: __m256i,
    fix: __m256i,
    /// The padded rows that are input rows.
    real: std::ops::Range<usize>,
}

impl SmallRows {
    /// The rows of geometry `g`, padding rows written.
    ///
    /// # Safety
    /// avx2 must be available.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn new(g: &DwSmall) -> Self {
        let mut q = [std::mem::MaybeUninit::<__m256i>::uninit(); SMALL_ROWS];
        let real = g.p.real();
        let zq = _mm256_set1_epi8(g.z as i8);
        for (yp, qv) in q.iter_mut().enumerate().take(g.p.rows) {
            if !real.contains(&yp) {
                qv.write(zq);
            }
        }
        // SAFETY: `DwSmall`'s tables are 32 bytes each.
        let (idx, fix) = unsafe {
            (
                _mm256_loadu_si256(g.idx.as_ptr().cast()),
                _mm256_loadu_si256(g.fix.as_ptr().cast()),
            )
        };
        SmallRows { q, idx, fix, real }
    }

    /// Writes the input rows of the plane at `src`: each row's 16 bytes in both halves, one
    /// byte shuffle, one XOR.
    ///
    /// # Safety
    /// avx2 must be available; `src` readable for [`DwSmall::reads`] bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(&mut self, g: &DwSmall, src: *const u8) {
        let first = src.wrapping_sub(self.real.start * g.p.w);
        for yp in self.real.clone() {
            // SAFETY: input row `yp − ph < h` lies in the `reads` bytes at `src`; `yp <
            // g.p.rows ≤ SMALL_ROWS`.
            unsafe {
                let r = _mm256_broadcastsi128_si256(_mm_loadu_si128(first.add(yp * g.p.w).cast()));
                let v = _mm256_xor_si256(_mm256_shuffle_epi8(r, self.idx), self.fix);
                self.q.get_unchecked_mut(yp).write(v);
            }
        }
    }

    /// Padded row `i`.
    ///
    /// # Safety
    /// `i < g.p.rows` (written by [`SmallRows::new`] or [`SmallRows::load`]).
    #[inline(always)]
    unsafe fn row(&self, i: usize) -> __m256i {
        // SAFETY: guaranteed by the caller.
        unsafe { self.q.get_unchecked(i).assume_init() }
    }
}

/// The padded row (`oy·sy`) of each output row of each group of `N` output rows of `g`, the
/// rows past the last repeating it (computed, not stored), and the number of groups.
fn row_groups<const N: usize>(g: &DwSmall) -> ([[usize; N]; SMALL_ROWS], usize) {
    let mut grp = [[0usize; N]; SMALL_ROWS];
    let n = g.p.h_out.div_ceil(N);
    for (gi, r) in grp.iter_mut().enumerate().take(n) {
        *r = std::array::from_fn(|i| (N * gi + i).min(g.p.h_out - 1) * g.p.sy);
    }
    (grp, n)
}

/// Defines the small-plane ymm int8 depthwise kernel with the given `vpdpbusd` intrinsic.
macro_rules! dw_i8_small_ymm {
    ($(#[$doc:meta])* $name:ident, $features:literal, $dpbusd:ident) => {
        $(#[$doc])*
        ///
        /// Channel `c < init.len()` reads its plane at `src + c·src_step`, its `kh` weight
        /// words at `wts[c·kh..]` (the four `w'` bytes of each kernel row, 0 past the
        /// kernel) and writes its `h_out × w_out` bytes at `out + c·out_step`. Each input row
        /// becomes one vector of `vpdpbusd` operands, lane `ox` (`< 8`) the four activations
        /// that kernel columns `0..4` of output column `ox` read: the row's 16 bytes loaded
        /// into both 128-bit halves, one byte shuffle ([`DwSmall`]'s `idx`, zeros at padding)
        /// and one XOR (`fix`: `u = x ^ flip`, `z` at padding); padding rows are `z` in every
        /// byte. Output row `oy` is then `Σ_ky vpdpbusd(row oy·sy + ky·dh, w'[ky])` from
        /// `init[c]` (`−z·Σ w'`: padded taps read `z` and add nothing, so `acc = Σ (u − z)·w'`
        /// exactly, wrapping int32), four output rows at a time, requantized in the registers
        /// with `ks[c]` ([`finite_256!`], [`pack4_256!`]) and stored row by row: no padded
        /// plane, no stored accumulators, one load, shuffle and XOR per input row. One call
        /// runs many channels (a call per channel, with its prologue, cost a tenth of the
        /// time).
        ///
        /// # Safety
        /// The features must be available; every `ks[c]` [`Requant512::ymm_tile_ready`]
        /// (built with a bound of the accumulators), all with the formula of `ks[0]`;
        /// `ks.len() ≥ init.len()`, `wts.len() ≥ kh·init.len()`; for every channel, `src +
        /// c·src_step` readable for [`DwSmall::reads`] bytes (its `h × w` plane, rows read
        /// whole as 16 bytes) and `out + c·out_step` writable for `h_out·w_out` bytes.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name(
            g: &DwSmall,
            (src, src_step): (*const u8, usize),
            wts: &[i32],
            kh: usize,
            init: &[i32],
            ks: &[Requant512],
            (out, out_step): (*mut u8, usize),
        ) {
            let nc = init.len();
            debug_assert!(wts.len() >= kh * nc && ks.len() >= nc && g.p.rows <= SMALL_ROWS);
            debug_assert!(g.p.rows > (g.p.h_out - 1) * g.p.sy + (kh - 1) * g.p.dh);
            if nc == 0 {
                return;
            }
            let Mode::Finite(formula) = ks[0].mode else {
                unreachable!("the caller checked ymm_tile_ready");
            };
            // SAFETY: the caller guarantees the features and the ranges listed above; every
            // index of `q` is below `g.p.rows ≤ SMALL_ROWS` (its construction).
            unsafe {
                // Row r of the packs' result: its 8 bytes at 8r (lane order of `pack4_256!`
                // is rows within each 128-bit half, columns 4h .. 4h + 4 in half h).
                let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                let (h_out, w_out) = (g.p.h_out, g.p.w_out);
                let mut q = SmallRows::new(g);
                let (grp, ngrp) = row_groups::<4>(g);
                let grp = &grp[..ngrp];
                // One loop per formula (the first two constant, so that the match in
                // `finite_256!` folds away) and for `kh = 3` (unrolled).
                macro_rules! channels {
                    ($formula:expr, $kh:expr) => {
                        for c in 0..nc {
                            let (src, out) = (src.add(c * src_step), out.add(c * out_step));
                            let (wts, k) = (wts.get_unchecked(c * kh..), ks.get_unchecked(c));
                            q.load(g, src);
                            let row = |i: usize| q.row(i);
                            let a0 = _mm256_set1_epi32(*init.get_unchecked(c));
                            for (gi, r) in grp.iter().enumerate() {
                                let oy = 4 * gi;
                                let mut a = [a0; 4];
                                for ky in 0..$kh {
                                    let wv = _mm256_set1_epi32(*wts.get_unchecked(ky));
                                    let o = ky * g.p.dh;
                                    a[0] = $dpbusd(a[0], row(r[0] + o), wv);
                                    a[1] = $dpbusd(a[1], row(r[1] + o), wv);
                                    a[2] = $dpbusd(a[2], row(r[2] + o), wv);
                                    a[3] = $dpbusd(a[3], row(r[3] + o), wv);
                                }
                                let y0 = finite_256!(k, $formula, a[0]);
                                let y1 = finite_256!(k, $formula, a[1]);
                                let y2 = finite_256!(k, $formula, a[2]);
                                let y3 = finite_256!(k, $formula, a[3]);
                                let v = pack4_256!(k, y0, y1, y2, y3);
                                let v = _mm256_permutevar8x32_epi32(v, order);
                                let (lo, hi) = (
                                    _mm256_castsi256_si128(v),
                                    _mm256_extracti128_si256::<1>(v),
                                );
                                let rb =
                                    [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
                                for (i, &b) in rb.iter().enumerate().take(h_out - oy) {
                                    let oyr = oy + i;
                                    let d = out.add(oyr * w_out);
                                    // Eight bytes where they stay inside the plane (the next
                                    // row's store overwrites the excess), else exactly
                                    // `w_out`.
                                    if w_out == 8 || (w_out >= 4 && oyr + 1 < h_out) {
                                        _mm_storel_epi64(d.cast(), b);
                                    } else {
                                        store_tail_bytes(d, _mm256_castsi128_si256(b), w_out);
                                    }
                                }
                            }
                        }
                    };
                    ($formula:expr) => {
                        match kh {
                            3 => channels!($formula, 3),
                            _ => channels!($formula, kh),
                        }
                    };
                }
                match formula {
                    RequantFormula::Qnnpack => channels!(RequantFormula::Qnnpack),
                    RequantFormula::Fbgemm => channels!(RequantFormula::Fbgemm),
                    f => channels!(f),
                }
            }
        }
    };
}

dw_i8_small_ymm!(
    /// The int8 depthwise conv of a run of output channels with small output planes (rows
    /// of at most 8 pixels, see [`DwSmall`]) on AVX-VNNI (VEX `vpdpbusd`), straight from the
    /// input.
    dw_i8_small_avxvnni,
    "avx2,avxvnni",
    _mm256_dpbusd_avx_epi32
);

dw_i8_small_ymm!(
    /// [`dw_i8_small_avxvnni`] with EVEX `vpdpbusd` (AVX512-VNNI + VL).
    dw_i8_small_avxvnni_evex,
    "avx2,avx512f,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32
);

dw_i8_small_ymm!(
    /// [`dw_i8_small_avxvnni`] on AVX2 with `vpmaddubsw` for `vpdpbusd` ([`dpbusd_maddubs`]):
    /// exact only where no int16 pair sum can saturate (the caller's `maddubs_exact`).
    dw_i8_small_maddubs,
    "avx2",
    dpbusd_maddubs
);

/// The output byte order of [`dw_i8_small_avx512`]'s packs: dword `2r` (`2r + 1`) of the
/// result is output row `r`'s columns `0..4` (`4..8`). The packs leave in 128-bit lane `2h`
/// (`2h + 1`), at dword `j`, columns `0..4` (`4..8`) of row `2j + h` (row pair `j`'s half `h`).
const SMALL_ROWS_ORDER: [i32; 16] = {
    let mut t = [0i32; 16];
    let mut r = 0;
    while r < 8 {
        let (j, h) = (r as i32 / 2, r as i32 % 2);
        t[2 * r] = 8 * h + j;
        t[2 * r + 1] = 8 * h + 4 + j;
        r += 1;
    }
    t
};

/// The small-plane int8 depthwise kernel on zmm registers (AVX-512 VNNI): the operations of
/// [`dw_i8_small_avxvnni`] with two output rows per `vpdpbusd` (the ymm operand rows of
/// rows `oy` and `oy + 1` in the two halves), eight output rows per step, every epilogue
/// record requantized in the registers ([`requant_rel_512!`], [`pack4_512!`]: the fixed-point
/// formula and non-finite constants too) and each row stored with one masked byte store. Half
/// the `vpdpbusd`s and epilogue operations of the ymm kernel per output.
///
/// # Safety
/// avx2, avx512f, avx512bw, avx512vl and avx512vnni must be available; as
/// [`dw_i8_small_avxvnni`] otherwise (every `ks[c]` any record, any formula).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn dw_i8_small_avx512(
    g: &DwSmall,
    (src, src_step): (*const u8, usize),
    wts: &[i32],
    kh: usize,
    init: &[i32],
    ks: &[Requant512],
    (out, out_step): (*mut u8, usize),
) {
    let nc = init.len();
    debug_assert!(wts.len() >= kh * nc && ks.len() >= nc && g.p.rows <= SMALL_ROWS);
    debug_assert!(g.p.rows > (g.p.h_out - 1) * g.p.sy + (kh - 1) * g.p.dh);
    // SAFETY: the caller guarantees the features and the ranges listed above; every index
    // of `q` is below `g.p.rows ≤ SMALL_ROWS` (its construction); the masked stores write
    // `w_out` bytes of each output row only.
    unsafe {
        let order = _mm512_loadu_si512(SMALL_ROWS_ORDER.as_ptr().cast());
        let (h_out, w_out) = (g.p.h_out, g.p.w_out);
        let row_mask = (1u64 << w_out) - 1;
        let mut q = SmallRows::new(g);
        let (grp, ngrp) = row_groups::<8>(g);
        let grp = &grp[..ngrp];
        for c in 0..nc {
            let (src, out) = (src.add(c * src_step), out.add(c * out_step));
            let (wts, k) = (wts.get_unchecked(c * kh..), ks.get_unchecked(c));
            q.load(g, src);
            let row = |i: usize| q.row(i);
            let pair = |a: usize, b: usize| {
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(row(a)), row(b))
            };
            let a0 = _mm512_set1_epi32(init.get_unchecked(c).wrapping_add(k.int_bias()));
            for (gi, r) in grp.iter().enumerate() {
                let oy = 8 * gi;
                let mut a = [a0; 4];
                for ky in 0..kh {
                    let wv = _mm512_set1_epi32(*wts.get_unchecked(ky));
                    let o = ky * g.p.dh;
                    a[0] = _mm512_dpbusd_epi32(a[0], pair(r[0] + o, r[1] + o), wv);
                    a[1] = _mm512_dpbusd_epi32(a[1], pair(r[2] + o, r[3] + o), wv);
                    a[2] = _mm512_dpbusd_epi32(a[2], pair(r[4] + o, r[5] + o), wv);
                    a[3] = _mm512_dpbusd_epi32(a[3], pair(r[6] + o, r[7] + o), wv);
                }
                let y0 = requant_rel_512!(k, a[0], false);
                let y1 = requant_rel_512!(k, a[1], false);
                let y2 = requant_rel_512!(k, a[2], false);
                let y3 = requant_rel_512!(k, a[3], false);
                let v = _mm512_permutexvar_epi32(order, pack4_512!(k, y0, y1, y2, y3));
                for i in 0..8.min(h_out - oy) {
                    // Row i's bytes are bytes 8i .. 8i + w_out of `v`.
                    let d = out.add((oy + i) * w_out).wrapping_sub(8 * i);
                    _mm512_mask_storeu_epi8(d.cast(), row_mask << (8 * i), v);
                }
            }
        }
    }
}

/// Padded input rows the row kernel [`dw_i8_rows_avx512`] holds at most (64 rows of one or
/// two zmm registers, 4 or 8 KB of stack).
pub(crate) const ROWS_MAX: usize = 64;

/// The geometry of [`dw_i8_rows_avx512`]: output rows of at most 32 pixels (`nv` vectors of
/// 16), kernels of at most 4 columns, input rows of at most 64 bytes (one masked load each),
/// any stride and dilation, and at most [`ROWS_MAX`] padded rows read (MobileNetV2's 14×14
/// and 28×28 outputs, at strides 1 and 2).
pub(crate) struct DwRows {
    /// Vectors of 16 outputs per row: 1 (`w_out ≤ 16`) or 2.
    pub(crate) nv: usize,
    /// The byte permutations of a row (`vpermb`), one per vector `v`: byte `4·l + j` is the
    /// input column that kernel column `j` of output column `ox = 16v + l` reads, where bit
    /// `4·l + j` of `take[v]` is set; the other bytes (padding, past the kernel or past the
    /// row) take `z`.
    idx: [Bytes64; 2],
    take: [u64; 2],
    /// The output byte order after [`pack4_512!`] of the vectors `j < 4` (row `⌊j/nv⌋`,
    /// vector `j mod nv`): byte `r·w_out + ox` (`ox = 16v + 4i + a`) is byte `16i + 4j + a`,
    /// `j = r·nv + v`, of the packs.
    order: Bytes64,
    /// `u = x ^ flip`, and the zero point of `u` (every byte of a padding row).
    flip: u8,
    z: u8,
    /// The rows read.
    p: RowPlane,
}

impl DwRows {
    /// The geometry of `s` with activations `u = x ^ flip` of zero point `z`, or `None`
    /// where [`dw_i8_rows_avx512`] does not apply (see [`DwRows`]).
    pub(crate) fn new(s: &crate::shape::ConvShape, flip: u8, z: u8) -> Option<Self> {
        if !Self::fits(s) {
            return None;
        }
        let nv = s.w_out.div_ceil(16);
        let (mut idx, mut take) = ([[0u8; 64]; 2], [0u64; 2]);
        for (ox, j, col) in RowPlane::real_taps(s) {
            let (v, l) = (ox / 16, ox % 16);
            idx[v][4 * l + j] = col;
            take[v] |= 1 << (4 * l + j);
        }
        let mut order = [0u8; 64];
        for r in 0..4 / nv {
            for ox in 0..s.w_out {
                let (j, i, a) = (r * nv + ox / 16, ox % 16 / 4, ox % 4);
                order[r * s.w_out + ox] = (16 * i + 4 * j + a) as u8;
            }
        }
        Some(DwRows {
            nv,
            idx: idx.map(Bytes64),
            take,
            order: Bytes64(order),
            flip,
            z,
            p: RowPlane::new(s),
        })
    }

    /// Whether [`dw_i8_rows_avx512`] applies to `s` (see [`DwRows`]).
    pub(crate) fn fits(s: &crate::shape::ConvShape) -> bool {
        s.w_out <= 32 && s.kw <= 4 && s.w <= 64 && RowPlane::rows(s) <= ROWS_MAX
    }
}

/// The int8 depthwise conv of a run of channels with output rows of at most `16·NV` pixels
/// on AVX-512 VNNI + VBMI ([`DwRows`], `NV = g.nv`), straight from the input into the
/// output: per channel, every input row becomes `NV` zmm registers of `vpdpbusd` operands (one
/// masked load, one XOR, one `vpermb` per vector that also puts `z` at padded taps; padding
/// rows hold `z` in every byte, written once), then each output row is the sum of `kh`
/// `vpdpbusd`s of those rows against the broadcast weight words, four output rows requantized
/// at a time in the registers ([`requant_rel_512!`], [`pack4_512!`]: every formula), put in
/// row order with one `vpermb` per pack and stored with one masked store per pack (its
/// `4/NV` rows of `w_out ≤ 16·NV` bytes are contiguous). With `init[c] = −z·Σ w'` every tap
/// contributes `(u − z)·w'`, padded ones 0: the exact accumulator (wrapping int32), as in
/// [`dw_i8_small_avx512`], of which this is the form for rows of 9 to 32 pixels (where
/// [`dw_i8_channel`] rebuilt each input row's operands for every output row that reads it
/// and requantized rows one by one, and [`dw_i8_flat`] copied every plane into a padded one).
///
/// Channel `c` reads the `h × w` plane at `src + c·src_step` and writes the `h_out × w_out`
/// plane at `out + c·out_step`; `wts[c·kh + ky]` holds the four bytes `w'[ky][0..4]` (0 past
/// the kernel), `ks[c]` its epilogue.
///
/// # Safety
/// avx2, avx512f, avx512bw, avx512vl, avx512vnni and avx512vbmi must be available; `NV`
/// equal to `g.nv`; every channel's input plane readable (`h·w` bytes) and output plane
/// writable (`h_out·w_out` bytes); `wts` holds `kh·nc` words, `ks` `nc` records
/// (`nc = init.len()`), and `kh` is the geometry's.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(crate) unsafe fn dw_i8_rows_avx512<const NV: usize>(
    g: &DwRows,
    (src, src_step): (*const u8, usize),
    wts: &[i32],
    kh: usize,
    init: &[i32],
    ks: &[Requant512],
    (out, out_step): (*mut u8, usize),
) {
    let nc = init.len();
    debug_assert!(NV == g.nv && (NV == 1 || NV == 2));
    debug_assert!(wts.len() >= kh * nc && ks.len() >= nc && g.p.rows <= ROWS_MAX);
    debug_assert!(g.p.rows > (g.p.h_out - 1) * g.p.sy + (kh - 1) * g.p.dh);
    // Output rows per pack (and per store).
    let rpp = 4 / NV;
    // SAFETY: the caller guarantees the features and the ranges listed above; the loads are
    // masked to each input row, the stores to the output rows of the step; every index of
    // `q` is below `g.p.rows ≤ ROWS_MAX` (padded row `oy·sy + ky·dh` of an output row
    // `oy < h_out`), written before it is read (padding rows here, input rows per channel).
    unsafe {
        let ix: [__m512i; NV] =
            std::array::from_fn(|v| _mm512_loadu_si512(g.idx[v].0.as_ptr().cast()));
        let order = _mm512_loadu_si512(g.order.0.as_ptr().cast());
        let (flip, zv) = (_mm512_set1_epi8(g.flip as i8), _mm512_set1_epi8(g.z as i8));
        let (h_out, w_out) = (g.p.h_out, g.p.w_out);
        let load_mask = super::low_bits(g.p.w);
        let mut q = [[std::mem::MaybeUninit::<__m512i>::uninit(); NV]; ROWS_MAX];
        let real = g.p.real();
        for (yp, qv) in q.iter_mut().enumerate().take(g.p.rows) {
            if !real.contains(&yp) {
                qv.iter_mut().for_each(|v| _ = v.write(zv));
            }
        }
        for c in 0..nc {
            let (src, out) = (src.add(c * src_step), out.add(c * out_step));
            let (wts, k) = (wts.get_unchecked(c * kh..), ks.get_unchecked(c));
            let first = src.wrapping_sub(real.start * g.p.w);
            for yp in real.clone() {
                let r = _mm512_maskz_loadu_epi8(load_mask, first.add(yp * g.p.w).cast());
                let r = _mm512_xor_si512(r, flip);
                let qr = q.get_unchecked_mut(yp);
                for v in 0..NV {
                    qr[v].write(_mm512_mask_permutexvar_epi8(zv, g.take[v], ix[v], r));
                }
            }
            let row = |i: usize, v: usize| q.get_unchecked(i)[v].assume_init();
            let a0 = _mm512_set1_epi32(init.get_unchecked(c).wrapping_add(k.int_bias()));
            for oy in (0..h_out).step_by(4) {
                // Rows past the last repeat it (computed, not stored).
                let r: [usize; 4] = std::array::from_fn(|i| (oy + i).min(h_out - 1) * g.p.sy);
                // Accumulator `i·NV + v`: output row `oy + i`, vector `v`.
                let mut a = [[a0; NV]; 4];
                for ky in 0..kh {
                    let wv = _mm512_set1_epi32(*wts.get_unchecked(ky));
                    let o = ky * g.p.dh;
                    for (ai, ri) in a.iter_mut().zip(r) {
                        for (v, av) in ai.iter_mut().enumerate() {
                            *av = _mm512_dpbusd_epi32(*av, row(ri + o, v), wv);
                        }
                    }
                }
                let a: &[__m512i] = a.as_flattened();
                for (p, a) in a.chunks_exact(4).enumerate() {
                    let y0 = requant_rel_512!(k, a[0], false);
                    let y1 = requant_rel_512!(k, a[1], false);
                    let y2 = requant_rel_512!(k, a[2], false);
                    let y3 = requant_rel_512!(k, a[3], false);
                    let v = _mm512_permutexvar_epi8(order, pack4_512!(k, y0, y1, y2, y3));
                    let oy = oy + p * rpp;
                    if oy < h_out {
                        let m = super::low_bits(rpp.min(h_out - oy) * w_out);
                        _mm512_mask_storeu_epi8(out.add(oy * w_out).cast(), m, v);
                    }
                }
            }
        }
    }
}

dw_i8_flat_ymm!(
    /// The flat int8 depthwise conv of one output channel on AVX-VNNI (VEX `vpdpbusd`), unit
    /// strides and column dilation: raw accumulators of every flat position.
    dw_i8_flat_avxvnni,
    "avx2,avxvnni",
    _mm256_dpbusd_avx_epi32
);

dw_i8_flat_ymm!(
    /// [`dw_i8_flat_avxvnni`] with EVEX `vpdpbusd` (AVX512-VNNI + VL): the `avx-vnni` path on
    /// CPUs without AVX-VNNI.
    dw_i8_flat_avxvnni_evex,
    "avx2,avx512f,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32
);

dw_i8_flat_ymm!(
    /// [`dw_i8_flat_avxvnni`] on AVX2 with `vpmaddubsw` for `vpdpbusd` ([`dpbusd_maddubs`]):
    /// exact only when no int16 pair sum can saturate, which the caller proves from the
    /// weights' pair sums and the activations' maximum (`int8::PairBounds`).
    dw_i8_flat_maddubs,
    "avx2",
    dpbusd_maddubs
);

/// One row of the *quad image* of the channels-in-lanes int8 depthwise conv (see
/// `cpu::fast::nhwc::depthwise_quads`), for 16 channels: for output column `ox < nq`, the 16
/// dwords stored at `dst + ox·stride` are, per channel `i`, the four activation bytes its row
/// `rows[i]` gives the kernel columns `0..4` of that output: byte `j` of dword `i` is
/// `rows[i][idx[4·ox + j]] ^ flip` where bit `4·ox + j` of `take` is set, else `z` (padding).
/// One `vpermb` per channel builds its dwords, one 16×16 transposition puts the channels in
/// the lanes.
///
/// # Safety
/// avx512f, avx512bw and avx512vbmi must be available; each `rows[i]` readable for `w ≤ 64`
/// bytes; every index of `idx` whose `take` bit is set below `w`; `nq ≤ 16`; `dst + ox·stride`
/// writable for 64 bytes for each `ox < nq`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub(crate) unsafe fn dw_quads_row_avx512(
    rows: &[*const u8; 16],
    w: usize,
    idx: &Bytes64,
    take: u64,
    flip: u8,
    z: u8,
    nq: usize,
    dst: *mut u8,
    stride: usize,
) {
    // SAFETY: the caller guarantees the features and the ranges above; the loads are masked
    // to the row.
    unsafe {
        let lm: __mmask64 = super::low_bits(w);
        let (f, zv) = (_mm512_set1_epi8(flip as i8), _mm512_set1_epi8(z as i8));
        let ix = _mm512_loadu_si512(idx.0.as_ptr().cast());
        let q: [__m512i; 16] = std::array::from_fn(|i| {
            let r = _mm512_xor_si512(_mm512_maskz_loadu_epi8(lm, rows[i].cast()), f);
            _mm512_mask_permutexvar_epi8(zv, take, ix, r)
        });
        for (ox, v) in super::gemm::transpose16_epi32(q)
            .into_iter()
            .enumerate()
            .take(nq)
        {
            _mm512_storeu_si512(dst.add(ox * stride).cast(), v);
        }
    }
}

/// The channels-in-lanes int8 depthwise tile on AVX-512 VNNI: for each output pixel `m` of
/// `pix` (the byte offset of its first kernel row's quads in the quad image `q`, see
/// [`dw_quads_row_avx512`]) and each of the 64 channels of the tile,
/// `acc[m][c] = init[c] + Σ_{ky < KH} Σ_{j<4} u·w'` (wrapping), one `vpdpbusd` per kernel row
/// and 16 channels: the quad of kernel row `ky` at `q + pix[m] + rows[ky] + 4c` against the
/// weight dword `w[64·ky + c]` (the row's four `w − ζ` bytes, 0 past the kernel).
///
/// # Safety
/// avx512f, avx512bw and avx512vnni must be available; every quad read (256 bytes from
/// `q + pix[m] + rows[ky]`) readable, `w` holding `64·KH` dwords, `acc` at least `pix.len()`
/// rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dw_quads_avx512<const KH: usize>(
    q: *const u8,
    pix: &[usize],
    rows: &[usize; KH],
    w: *const i32,
    init: &[i32; 64],
    acc: &mut [[i32; 64]],
) {
    // SAFETY: the caller guarantees the features and the ranges above.
    unsafe {
        let wv: [[__m512i; 4]; KH] = std::array::from_fn(|ky| {
            std::array::from_fn(|v| _mm512_loadu_si512(w.add(64 * ky + 16 * v).cast()))
        });
        let iv: [__m512i; 4] =
            std::array::from_fn(|v| _mm512_loadu_si512(init.as_ptr().add(16 * v).cast()));
        // Two pixels at a time: eight independent accumulator chains.
        let mut pairs = pix.chunks_exact(2).zip(acc.chunks_exact_mut(2));
        for (pp, out) in &mut pairs {
            let (mut a, mut b) = (iv, iv);
            for ky in 0..KH {
                let (ba, bb) = (q.add(pp[0] + rows[ky]), q.add(pp[1] + rows[ky]));
                for v in 0..4 {
                    let ua = _mm512_loadu_si512(ba.add(64 * v).cast());
                    let ub = _mm512_loadu_si512(bb.add(64 * v).cast());
                    a[v] = _mm512_dpbusd_epi32(a[v], ua, wv[ky][v]);
                    b[v] = _mm512_dpbusd_epi32(b[v], ub, wv[ky][v]);
                }
            }
            for v in 0..4 {
                _mm512_storeu_si512(out[0].as_mut_ptr().add(16 * v).cast(), a[v]);
                _mm512_storeu_si512(out[1].as_mut_ptr().add(16 * v).cast(), b[v]);
            }
        }
        if pix.len() % 2 == 1 {
            let (p, out) = (pix[pix.len() - 1], &mut acc[pix.len() - 1]);
            let mut a = iv;
            for ky in 0..KH {
                let base = q.add(p + rows[ky]);
                for v in 0..4 {
                    let u = _mm512_loadu_si512(base.add(64 * v).cast());
                    a[v] = _mm512_dpbusd_epi32(a[v], u, wv[ky][v]);
                }
            }
            for (v, &x) in a.iter().enumerate() {
                _mm512_storeu_si512(out.as_mut_ptr().add(16 * v).cast(), x);
            }
        }
    }
}

/// The geometry of [`dw_f32_lanes_avx512`]: a padded plane `hp × wp` (input `h × w` at row
/// `ph`, column `pw`), outputs `h_out × w_out` at strides `sy`, `sx`, and the taps' offsets in
/// the padded plane (`ky·dh·wp + kx·dw` pixels, in tap order).
pub(crate) struct LanesGeom<'a> {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) ph: usize,
    pub(crate) pw: usize,
    pub(crate) wp: usize,
    pub(crate) h_out: usize,
    pub(crate) w_out: usize,
    pub(crate) sy: usize,
    pub(crate) sx: usize,
    pub(crate) offs: &'a [usize],
}

/// The f32 depthwise conv of 16 channels (one input channel each) with the channels in the
/// lanes, for small output planes: the channel-by-channel kernels put a row of the plane in
/// a vector, 7 of 16 lanes on a 7-column plane. Channel `l < nch` reads its `h × w` plane at
/// `src + l·plane_in` and writes its `h_out × w_out` plane at `dst + l·plane_out`.
///
/// 1. The input goes into `xin` with the channels in the lanes (`[hp·wp][16]`, 16×16
///    transpositions of 16 pixels of the 16 channels; the padded positions are left as they
///    are: the caller zeroes `xin` once).
/// 2. Each output pixel of the 16 channels: the FMA chain over the taps in order from `+0.0`
///    (weights `wts[t·16 + l]`), then `+ bias[l]`: per lane, the operations of
///    [`dw_avx512`] on the same values, so the same bits. Eight pixels at a time (eight
///    independent chains). Into `obuf` (`[h_out·w_out rounded up to 16][16]`).
/// 3. Back to one plane per channel (transpositions again), the first `nch` channels stored.
///
/// # Safety
/// avx512f must be available; the planes readable and writable as above; `xin` holds
/// `hp·wp·16` values with `hp ≥ (h_out − 1)·sy + max tap row + 1` rows (every tap of every
/// output inside it), `obuf` `16·⌈h_out·w_out / 16⌉·16` values; `wts` holds `offs.len()·16`
/// values; `nch ≤ 16`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dw_f32_lanes_avx512(
    src: *const f32,
    plane_in: usize,
    nch: usize,
    g: &LanesGeom,
    wts: &[f32],
    bias: &[f32],
    xin: &mut [f32],
    obuf: &mut [f32],
    dst: *mut f32,
    plane_out: usize,
) {
    use super::gemm::transpose16_epi32;
    assert!(bias.len() >= 16);
    // SAFETY: guaranteed by the caller (see `# Safety`).
    unsafe {
        // 1. Channels into lanes, 16 pixels of a row at a time.
        for y in 0..g.h {
            for x0 in (0..g.w).step_by(16) {
                let n = 16.min(g.w - x0);
                let m: __mmask16 = ((1u32 << n) - 1) as u16;
                let rows: [__m512i; 16] = std::array::from_fn(|l| {
                    if l < nch {
                        let p = src.add(l * plane_in + y * g.w + x0);
                        _mm512_castps_si512(_mm512_maskz_loadu_ps(m, p))
                    } else {
                        _mm512_setzero_si512()
                    }
                });
                let px = transpose16_epi32(rows);
                let at = ((y + g.ph) * g.wp + g.pw + x0) * 16;
                store_first(&px, n, |j, v| {
                    _mm512_storeu_si512(xin.as_mut_ptr().add(at + 16 * j).cast(), v)
                });
            }
        }
        // 2. Eight output pixels at a time (eight chains of FMAs; four: 960x7x7 +10%).
        const PX: usize = 8;
        let np = g.h_out * g.w_out;
        let xp = xin.as_ptr();
        let b = _mm512_loadu_ps(bias.as_ptr());
        let base = |p: usize| ((p / g.w_out) * g.sy * g.wp + (p % g.w_out) * g.sx) * 16;
        let mut p = 0;
        while p < np {
            let k = PX.min(np - p);
            let bases: [usize; PX] = std::array::from_fn(|i| base(p + i.min(k - 1)));
            let mut acc = [_mm512_setzero_ps(); PX];
            for (t, &off) in g.offs.iter().enumerate() {
                let wv = _mm512_loadu_ps(wts.as_ptr().add(16 * t));
                for (a, &q) in acc.iter_mut().zip(&bases) {
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(xp.add(q + 16 * off)), wv, *a);
                }
            }
            for (i, a) in acc.iter().enumerate().take(k) {
                _mm512_storeu_ps(obuf.as_mut_ptr().add(16 * (p + i)), _mm512_add_ps(*a, b));
            }
            p += k;
        }
        // 3. Back to planes, 16 pixels at a time.
        for p0 in (0..np).step_by(16) {
            let n = 16.min(np - p0);
            let m: __mmask16 = ((1u32 << n) - 1) as u16;
            let px: [__m512i; 16] = std::array::from_fn(|j| {
                _mm512_loadu_si512(obuf.as_ptr().add(16 * (p0 + j)).cast())
            });
            let ch = transpose16_epi32(px);
            for (l, v) in ch.iter().enumerate().take(nch) {
                _mm512_mask_storeu_ps(dst.add(l * plane_out + p0), m, _mm512_castsi512_ps(*v));
            }
        }
    }
}

/// One channel of a 3x3 f32 depthwise conv with stride `S` (1 or 2) in both directions,
/// padding 1 and no dilation, straight from the input plane `x` (`h × w`, row-major) into
/// `out` (`⌈h/S⌉ × ⌈w/S⌉`): no padded or phase-split copy of the plane and, on small planes,
/// no transposition into lanes (on MobileNetV2's depthwise layers those cost more than the
/// FMAs). Output `(oy, ox)` reads input columns `S·ox − 1 + kx`. Per 16 outputs from column
/// `ox₀` and input row:
///
/// * `S = 1`: three loads, from columns `ox₀ − 1`, `ox₀`, `ox₀ + 1`, each masked to the
///   columns inside the row;
/// * `S = 2`: two loads of 32 columns from `2·ox₀`, whose even lanes (`vpermt2ps`) are the
///   `kx = 1` column, odd lanes the `kx = 2` one, and the odd lanes moved up one lane
///   (`valignd`, the lane before from the previous vector or the padding) the `kx = 0` one.
///
/// Rows and columns outside the plane read `+0.0` (masked-off lanes are neither read nor
/// faulted; rows off the plane are zero vectors) and still take their FMA:
/// `acc = fma(x, w[t], acc)` over the taps `t = 3·ky + kx` in order from `+0.0`, then
/// `acc + bias`, then with `clamp = Some((lo, hi))` `vminps(vmaxps(y, lo), hi)`: per output,
/// the operations of [`dw_avx512`] over the padded plane and of `F32Clamp::apply`, so the
/// same bits. Four vectors (64 outputs) of a row at a time.
///
/// # Safety
/// avx512f must be available.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dw3x3_f32_avx512<const S: usize>(
    x: &[f32],
    h: usize,
    w: usize,
    wt: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    out: &mut [f32],
) {
    assert!(S == 1 || S == 2);
    let (h_out, w_out) = (h.div_ceil(S), w.div_ceil(S));
    assert!(x.len() >= h * w && wt.len() >= 9 && out.len() >= h_out * w_out && w > 0);
    let nvec = w_out.div_ceil(16);
    let mut v0 = 0;
    while v0 < nvec {
        let nv = (nvec - v0).min(4);
        // SAFETY: avx512f is available (the caller); the block's reads and writes are in
        // range (see `dw3x3_block`).
        unsafe {
            match nv {
                1 => dw3x3_block::<S, 1>(x, h, w, v0, wt, bias, clamp, out),
                2 => dw3x3_block::<S, 2>(x, h, w, v0, wt, bias, clamp, out),
                3 => dw3x3_block::<S, 3>(x, h, w, v0, wt, bias, clamp, out),
                _ => dw3x3_block::<S, 4>(x, h, w, v0, wt, bias, clamp, out),
            }
        }
        v0 += nv;
    }
}

/// Output columns `16·v0 .. 16·(v0 + NV)` (those that exist) of every output row of
/// [`dw3x3_f32_avx512`].
///
/// # Safety
/// avx512f must be available; the lengths as asserted by [`dw3x3_f32_avx512`];
/// `16·v0 < ⌈w/S⌉`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn dw3x3_block<const S: usize, const NV: usize>(
    x: &[f32],
    h: usize,
    w: usize,
    v0: usize,
    wt: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    out: &mut [f32],
) {
    let (h_out, w_out) = (h.div_ceil(S), w.div_ceil(S));
    // The lanes `l` whose input column `c0 + l` lies in `[0, w)`.
    let cols = |c0: isize| -> __mmask16 {
        let first = |n: isize| ((1u32 << n.clamp(0, 16)) - 1) as u16;
        first(w as isize - c0) & !first(-c0)
    };
    // Stride 1: per vector and kernel column, the load from column 16·(v0 + v) + kx − 1.
    // Stride 2: per vector, the two loads from columns 32·(v0 + v) and 32·(v0 + v) + 16.
    let in_mask: [[__mmask16; 3]; NV] = std::array::from_fn(|v| {
        let c = (16 * (v0 + v)) as isize;
        match S {
            1 => [cols(c - 1), cols(c), cols(c + 1)],
            _ => [cols(2 * c), cols(2 * c + 16), 0],
        }
    });
    let out_mask: [__mmask16; NV] = std::array::from_fn(|v| {
        let n = w_out.saturating_sub(16 * (v0 + v)).min(16);
        ((1u32 << n) - 1) as u16
    });
    let (c0, xp, op) = (16 * S * v0, x.as_ptr(), out.as_mut_ptr());
    // SAFETY: loads are masked to the columns `[0, w)` of rows `iy < h` (`x` holds `h·w`; the
    // addresses of masked-off lanes, before a row's start or after its end, are neither read
    // nor faulted, and are formed with wrapping arithmetic); the column before the block
    // (`c0 − 1`, read at stride 2 when `v0 > 0`) exists since `16·v0 < ⌈w/2⌉`; stores are
    // masked to the output columns `< w_out` of rows `< h_out`.
    unsafe {
        let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let wv: [__m512; 9] = std::array::from_fn(|t| _mm512_set1_ps(wt[t]));
        let b = _mm512_set1_ps(bias);
        for oy in 0..h_out {
            let mut acc = [_mm512_setzero_ps(); NV];
            for ky in 0..3 {
                let iy = (S * oy + ky).wrapping_sub(1);
                let taps = &wv[3 * ky..3 * ky + 3];
                if iy >= h {
                    // A padding row: `+0.0` times each weight, as over the padded plane.
                    let z = _mm512_setzero_ps();
                    for a in acc.iter_mut() {
                        for &t in taps {
                            *a = _mm512_fmadd_ps(z, t, *a);
                        }
                    }
                    continue;
                }
                let row = xp.wrapping_add(iy * w + c0);
                if S == 1 {
                    for (v, a) in acc.iter_mut().enumerate() {
                        for (kx, &t) in taps.iter().enumerate() {
                            let q = row.wrapping_add(16 * v + kx).wrapping_sub(1);
                            *a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(in_mask[v][kx], q), t, *a);
                        }
                    }
                    continue;
                }
                let mut prev = if v0 == 0 {
                    _mm512_setzero_si512()
                } else {
                    _mm512_set1_epi32((*row.sub(1)).to_bits() as i32)
                };
                for (v, a) in acc.iter_mut().enumerate() {
                    let lo = _mm512_maskz_loadu_ps(in_mask[v][0], row.wrapping_add(32 * v));
                    let hi = _mm512_maskz_loadu_ps(in_mask[v][1], row.wrapping_add(32 * v + 16));
                    let even = _mm512_permutex2var_ps(lo, ie, hi);
                    let odd = _mm512_castps_si512(_mm512_permutex2var_ps(lo, io, hi));
                    let left = _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(odd, prev));
                    prev = odd;
                    *a = _mm512_fmadd_ps(left, taps[0], *a);
                    *a = _mm512_fmadd_ps(even, taps[1], *a);
                    *a = _mm512_fmadd_ps(_mm512_castsi512_ps(odd), taps[2], *a);
                }
            }
            for (v, &a) in acc.iter().enumerate() {
                let mut y = _mm512_add_ps(a, b);
                if let Some((lo, hi)) = clamp {
                    y = _mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(lo)), _mm512_set1_ps(hi));
                }
                _mm512_mask_storeu_ps(op.add(oy * w_out + 16 * (v0 + v)), out_mask[v], y);
            }
        }
    }
}

/// `store(j, v[j])` for `j < n ≤ L`, with the count a constant in each arm: a loop over a
/// variable count of consecutive vector stores from an array compiles to a `memcpy` call (11%
/// of a 960x7x7 depthwise conv on AVX2).
#[inline(always)]
fn store_first<T: Copy, const L: usize>(v: &[T; L], n: usize, mut store: impl FnMut(usize, T)) {
    macro_rules! upto {
        ($($k:literal)*) => {
            match n {
                $($k => {
                    for (j, &x) in v.iter().enumerate().take($k) {
                        store(j, x);
                    }
                })*
                _ => {
                    for (j, &x) in v.iter().enumerate().take(n) {
                        store(j, x);
                    }
                }
            }
        };
    }
    upto!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

/// The 8×8 transposition of f32 lanes: lane `i` of output `c` is lane `c` of input `i`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8_ps(r: [__m256; 8]) -> [__m256; 8] {
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // s[4h + j]: rows 4h .. 4h + 4, elements j, j + 4 of each 128-bit half.
    let s: [__m256; 8] = std::array::from_fn(|i| {
        let (h, j) = (i / 4, i % 4);
        let (a, b) = (t[4 * h + j / 2], t[4 * h + j / 2 + 2]);
        if j % 2 == 0 {
            _mm256_shuffle_ps::<0x44>(a, b)
        } else {
            _mm256_shuffle_ps::<0xEE>(a, b)
        }
    });
    std::array::from_fn(|c| {
        if c < 4 {
            _mm256_permute2f128_ps::<0x20>(s[c], s[4 + c])
        } else {
            _mm256_permute2f128_ps::<0x31>(s[c - 4], s[c])
        }
    })
}

/// The mask of the first `n` of 8 lanes (`n ≤ 8`), for `vmaskmovps`.
#[inline]
#[target_feature(enable = "avx2")]
fn first_lanes(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// [`dw_f32_lanes_avx512`] on AVX2 + FMA: 8 channels in the lanes (`nch ≤ 8`, `xin`
/// `[hp·wp][8]`, `obuf` `8·⌈h_out·w_out / 8⌉·8` values, `wts` `offs.len()·8`), per lane the
/// operations of [`dw_avx2`] (the same bits).
///
/// # Safety
/// avx2 and fma must be available; as [`dw_f32_lanes_avx512`] with 8 lanes.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dw_f32_lanes_avx2(
    src: *const f32,
    plane_in: usize,
    nch: usize,
    g: &LanesGeom,
    wts: &[f32],
    bias: &[f32],
    xin: &mut [f32],
    obuf: &mut [f32],
    dst: *mut f32,
    plane_out: usize,
) {
    assert!(bias.len() >= 8);
    // SAFETY: guaranteed by the caller (see `# Safety`).
    unsafe {
        for y in 0..g.h {
            for x0 in (0..g.w).step_by(8) {
                let n = 8.min(g.w - x0);
                let m = first_lanes(n);
                let rows: [__m256; 8] = std::array::from_fn(|l| {
                    if l < nch {
                        _mm256_maskload_ps(src.add(l * plane_in + y * g.w + x0), m)
                    } else {
                        _mm256_setzero_ps()
                    }
                });
                let px = transpose8_ps(rows);
                let at = ((y + g.ph) * g.wp + g.pw + x0) * 8;
                store_first(&px, n, |j, v| {
                    _mm256_storeu_ps(xin.as_mut_ptr().add(at + 8 * j), v)
                });
            }
        }
        const PX: usize = 8;
        let np = g.h_out * g.w_out;
        let xp = xin.as_ptr();
        let b = _mm256_loadu_ps(bias.as_ptr());
        let base = |p: usize| ((p / g.w_out) * g.sy * g.wp + (p % g.w_out) * g.sx) * 8;
        let mut p = 0;
        while p < np {
            let k = PX.min(np - p);
            let bases: [usize; PX] = std::array::from_fn(|i| base(p + i.min(k - 1)));
            let mut acc = [_mm256_setzero_ps(); PX];
            for (t, &off) in g.offs.iter().enumerate() {
                let wv = _mm256_loadu_ps(wts.as_ptr().add(8 * t));
                for (a, &q) in acc.iter_mut().zip(&bases) {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(q + 8 * off)), wv, *a);
                }
            }
            for (i, a) in acc.iter().enumerate().take(k) {
                _mm256_storeu_ps(obuf.as_mut_ptr().add(8 * (p + i)), _mm256_add_ps(*a, b));
            }
            p += k;
        }
        for p0 in (0..np).step_by(8) {
            let m = first_lanes(8.min(np - p0));
            let px: [__m256; 8] =
                std::array::from_fn(|j| _mm256_loadu_ps(obuf.as_ptr().add(8 * (p0 + j))));
            let ch = transpose8_ps(px);
            for (l, v) in ch.iter().enumerate().take(nch) {
                _mm256_maskstore_ps(dst.add(l * plane_out + p0), m, *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{Epilogue, QDtype, QParams, QScheme, WeightQParams};
    use crate::rng::Rng;

    /// The sums of the ymm depthwise kernels, by scalar code: output `(oy, ox)` of a plane
    /// with rows of `wp` bytes, kernel row `ky` at `oy·sy_step + ky·wp + sx·ox`, four taps.
    fn sums(plane: &[u8], wts: &[i32], init: i32, geo: [usize; 5]) -> Vec<i32> {
        let [h_out, w_out, sy_step, wp, sx] = geo;
        let mut acc = Vec::new();
        for oy in 0..h_out {
            for ox in 0..w_out {
                let mut a = init;
                for (ky, w) in wts.iter().enumerate() {
                    for (i, wb) in w.to_le_bytes().iter().enumerate() {
                        let u = plane[oy * sy_step + ky * wp + sx * ox + i] as i32;
                        a = a.wrapping_add(u * *wb as i8 as i32);
                    }
                }
                acc.push(a);
            }
        }
        acc
    }

    /// Every `vpdpbusd` encoding of the ymm depthwise kernels this CPU runs (VEX with
    /// AVX-VNNI, EVEX with AVX512-VNNI, `vpmaddubsw` on AVX2 with 7-bit activations) gives the
    /// scalar sums, and the bytes of the scalar epilogue, for every float formula. The
    /// dispatcher runs one encoding per machine (VEX where AVX-VNNI exists), so the sweeps
    /// through the public API cover only that one; this covers the others.
    #[test]
    fn ymm_depthwise_kernels_match_scalar_code_in_every_encoding() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return; // no ymm path on this CPU
        }
        let vex = std::arch::is_x86_feature_detected!("avxvnni");
        let evex = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni");
        let mut rng = Rng::new(11);
        let (wp, hp, kh) = (20, 11, 3);
        // Full 7-bit activations (no `vpmaddubsw` pair can saturate: 2·127·128 < 2^15) and
        // full-range weights, requantized coarsely; then small ones with a unit multiplier, so
        // that an accumulator off by one changes its byte.
        let cases = [(128, 127, -1234i32, 0.5, 3.0), (4, 3, -20, 0.0002, 0.002)];
        let formulas = [
            RequantFormula::Qnnpack,
            RequantFormula::Fbgemm,
            RequantFormula::Onednn,
        ];
        for ((umax, wmax, init, out_scale, bias), formula) in
            cases.into_iter().flat_map(|c| formulas.map(|f| (c, f)))
        {
            let plane: Vec<u8> = (0..hp * wp + 96).map(|_| rng.below(umax) as u8).collect();
            let wts: Vec<i32> = (0..kh)
                .map(|_| {
                    let b = [0, 1, 2].map(|_| rng.range_i32(-wmax - 1, wmax) as i8 as u8);
                    i32::from_le_bytes([b[0], b[1], b[2], 0])
                })
                .collect();
            let bound = (umax * 128 * 3 * kh) as u64 + init.unsigned_abs() as u64;
            let out_qp = QParams::new(out_scale, 128, QDtype::QUInt8).unwrap();
            let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
            let epi = Epilogue::new(formula, 0.02, &w_qp, Some(&[bias]), out_qp, false, 1).unwrap();
            let k = Requant512::new(&epi, 0, bound).unwrap();
            assert!(k.ymm_tile_ready());
            let bytes =
                |acc: &[i32]| -> Vec<u8> { acc.iter().map(|&a| epi.apply(a, 0) as u8).collect() };
            // Column stride 2, row stride 2: 5 x 7 outputs (the last row chunk of 8 partial).
            let (h_out, w_out) = (5, 7);
            let acc = sums(&plane, &wts, init, [h_out, w_out, 2 * wp, wp, 2]);
            type S2 = unsafe fn(
                *const u8,
                (usize, usize),
                (usize, usize),
                &[i32],
                usize,
                i32,
                &Requant512,
                *mut u8,
            );
            let mut s2: Vec<(&str, S2)> = vec![("maddubs", dw_i8_s2_maddubs)];
            if vex {
                s2.push(("vex", dw_i8_s2_avxvnni));
            }
            if evex {
                s2.push(("evex", dw_i8_s2_avxvnni_evex));
            }
            for (name, f) in s2 {
                let mut out = vec![0u8; h_out * w_out];
                // SAFETY: the features were checked; the plane holds every byte read
                // (4·2·wp + 2·wp + 2·7 + 24 < hp·wp + 96).
                unsafe {
                    f(
                        plane.as_ptr(),
                        (wp, 2 * wp),
                        (h_out, w_out),
                        &wts,
                        kh,
                        init,
                        &k,
                        out.as_mut_ptr(),
                    )
                };
                assert_eq!(out, bytes(&acc), "stride 2, {name}, {formula:?}");
            }
            // The small-plane kernel, two channels: 11 x 16 inputs (rows of 16 bytes), stride
            // 2, no padding: 5 x 7 outputs; the second channel's plane one row further on.
            let geo = {
                let p = crate::shape::ConvParams::default().stride(2);
                let s = crate::shape::ConvShape::new([1, 1, 11, 16], [1, 1, 3, 3], p).unwrap();
                DwSmall::new(&s, 0, 0).unwrap()
            };
            let (h_out, w_out) = (5, 7);
            let mut want = sums(&plane, &wts, init, [h_out, w_out, 32, 16, 2]);
            want.extend(sums(&plane[16..], &wts, init, [h_out, w_out, 32, 16, 2]));
            type Small = unsafe fn(
                &DwSmall,
                (*const u8, usize),
                &[i32],
                usize,
                &[i32],
                &[Requant512],
                (*mut u8, usize),
            );
            let mut small: Vec<(&str, Small)> = vec![("maddubs", dw_i8_small_maddubs)];
            if vex {
                small.push(("vex", dw_i8_small_avxvnni));
            }
            if evex {
                small.push(("evex", dw_i8_small_avxvnni_evex));
            }
            let wts2 = [wts.clone(), wts.clone()].concat();
            let ks = [k, k];
            for (name, f) in small {
                let mut out = vec![0u8; 2 * h_out * w_out];
                // SAFETY: the features were checked; each channel reads 16 + 10·16 + 16 bytes
                // of the plane at most, and writes its 35 output bytes.
                unsafe {
                    f(
                        &geo,
                        (plane.as_ptr(), 16),
                        &wts2,
                        kh,
                        &[init, init],
                        &ks,
                        (out.as_mut_ptr(), h_out * w_out),
                    )
                };
                assert_eq!(out, bytes(&want), "small planes, {name}, {formula:?}");
            }
            // The flat kernel: two blocks of 32 flat positions, unit strides.
            let acc = sums(&plane, &wts, init, [1, 64, 0, wp, 1]);
            type Flat = unsafe fn(*const u8, usize, usize, &[i32], usize, i32, DwYmmOut);
            let mut flat: Vec<(&str, Flat)> = vec![("maddubs", dw_i8_flat_maddubs::<1>)];
            if vex {
                flat.push(("vex", dw_i8_flat_avxvnni::<1>));
            }
            if evex {
                flat.push(("evex", dw_i8_flat_avxvnni_evex::<1>));
            }
            for (name, f) in flat {
                let (mut raw, mut out) = (vec![0i32; 64], vec![0u8; 64]);
                // SAFETY: as above (64 + 4 + 2·wp + 32 bytes read).
                unsafe {
                    f(
                        plane.as_ptr(),
                        wp,
                        2,
                        &wts,
                        kh,
                        init,
                        DwYmmOut::Acc(&mut raw),
                    );
                    f(
                        plane.as_ptr(),
                        wp,
                        2,
                        &wts,
                        kh,
                        init,
                        DwYmmOut::Bytes(&k, &mut out),
                    );
                }
                assert_eq!(raw, acc, "flat sums, {name}");
                assert_eq!(out, bytes(&acc), "flat bytes, {name}, {formula:?}");
            }
        }
    }
}
