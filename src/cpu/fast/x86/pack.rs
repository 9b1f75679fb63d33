//! Activation repacking for the int8 and float kernels: byte interleaving into the 4-byte
//! `vpdpbusd` lanes ([`interleave4`] on SSE2, [`interleave4_avx512`] on AVX-512BW), row copies
//! into a padded plane ([`copy_rows_xor_avx512`], AVX-512BW) and the u8 → f32 conversion
//! of the float depthwise path ([`bytes_to_f32_avx512`], AVX-512BW). All of them map the
//! stored activation bytes `x` to u8 activations `u = x ^ flip` on the way (see the
//! zero-point folding in [`crate::cpu::fast`]).

use std::arch::x86_64::*;

/// Interleaves four byte rows into 4-byte lanes: `dst[4i + j] = src_j[i] ^ flip`, for
/// `i < n`.
///
/// # Safety
/// The four sources must be readable for `n` bytes and `dst` writable for `4n` bytes (SSE2 is
/// part of x86-64).
pub(crate) unsafe fn interleave4(src: [*const u8; 4], n: usize, flip: u8, dst: *mut u8) {
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

/// `dst[i] = ((src[i] ^ flip) as i32 − z) as f32`: u8 activations minus their zero point.
///
/// # Safety
/// avx512f and avx512bw must be available.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn bytes_to_f32_avx512(src: &[u8], flip: u8, z: i32, dst: &mut [f32]) {
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = ((b ^ flip) as i32 - z) as f32;
    }
}

/// [`bytes_to_f32_avx512`] on AVX2 (the same loop, vectorized by the compiler for ymm).
///
/// # Safety
/// avx2 must be available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn bytes_to_f32_avx2(src: &[u8], flip: u8, z: i32, dst: &mut [f32]) {
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = ((b ^ flip) as i32 - z) as f32;
    }
}

/// [`bytes_to_f32_avx2`] into the two column phases of the row:
/// `even[i] = f(src[2i])`, `odd[i] = f(src[2i + 1])`, `f(b) = ((b ^ flip) as i32 − z) as f32`,
/// 16 bytes per step (one byte shuffle separates the phases before the conversions).
///
/// # Safety
/// avx2 must be available; `even` must hold `⌈len/2⌉` values and `odd` `⌊len/2⌋`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn bytes_to_f32_split2_avx2(
    src: &[u8],
    flip: u8,
    z: i32,
    even: &mut [f32],
    odd: &mut [f32],
) {
    let n = src.len();
    assert!(even.len() >= n.div_ceil(2) && odd.len() >= n / 2);
    let body = n / 16 * 16;
    let f = |b: u8| ((b ^ flip) as i32 - z) as f32;
    // SAFETY: loads read `src[i .. i + 16]`, stores write `even/odd[i/2 .. i/2 + 8]`, with
    // `i + 16 ≤ body ≤ n` (lengths asserted above).
    unsafe {
        let fl = _mm_set1_epi8(flip as i8);
        let zv = _mm256_set1_epi32(z);
        let sep = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
        for i in (0..body).step_by(16) {
            let v = _mm_xor_si128(_mm_loadu_si128(src.as_ptr().add(i).cast()), fl);
            let v = _mm_shuffle_epi8(v, sep);
            let cvt =
                |x: __m128i| _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(x), zv));
            _mm256_storeu_ps(even.as_mut_ptr().add(i / 2), cvt(v));
            _mm256_storeu_ps(odd.as_mut_ptr().add(i / 2), cvt(_mm_srli_si128::<8>(v)));
        }
    }
    let (even, odd) = (&mut even[body / 2..], &mut odd[body / 2..]);
    let rest = &src[body..];
    for ((e, o), p) in even
        .iter_mut()
        .zip(odd.iter_mut())
        .zip(rest.chunks_exact(2))
    {
        *e = f(p[0]);
        *o = f(p[1]);
    }
    if !rest.len().is_multiple_of(2) {
        even[rest.len() / 2] = f(rest[rest.len() - 1]);
    }
}

/// `dst[i] = ((src[i] ^ flip) as i32 − z) as i16`: u8 activations minus their zero point
/// (the caller checked that they fit an i16).
///
/// # Safety
/// avx2 must be available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn bytes_to_i16_avx2(src: &[u8], flip: u8, z: i32, dst: &mut [i16]) {
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = ((b ^ flip) as i32 - z) as i16;
    }
}

/// The pair plane of the AVX2 int8 depthwise kernel: `p[i] = (d[i], d[i + dw])` as the low
/// and high i16 halves of an i32, for every `i < p.len()` (`d` holds `p.len() + dw` values).
///
/// # Safety
/// avx2 must be available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn pair_plane_avx2(d: &[i16], dw: usize, p: &mut [i32]) {
    let (lo, hi) = (&d[..p.len()], &d[dw..dw + p.len()]);
    for ((v, &a), &b) in p.iter_mut().zip(lo).zip(hi) {
        *v = (a as u16 as i32) | ((b as i32) << 16);
    }
}

/// Copies the rows of `src` (`w` bytes each) into `dst` at `at + y·stride`, xored with
/// `flip`, 64 bytes at a time.
///
/// # Safety
/// avx512f and avx512bw must be available.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn copy_rows_xor_avx512(
    src: &[u8],
    w: usize,
    dst: &mut [u8],
    at: usize,
    stride: usize,
    flip: u8,
) {
    let f = _mm512_set1_epi8(flip as i8);
    let h = src.len() / w;
    if w <= 64 && h > 0 {
        // Rows of one vector (the depthwise planes of small images): one mask, no slicing.
        assert!(at + (h - 1) * stride + w <= dst.len());
        let m: __mmask64 = super::low_bits(w);
        let (s0, d0) = (src.as_ptr(), dst.as_mut_ptr().wrapping_add(at));
        for y in 0..h {
            // SAFETY: row y is `w` bytes of `src` and of `dst` (asserted above), the accesses
            // masked to them.
            unsafe {
                let v = _mm512_maskz_loadu_epi8(m, s0.add(y * w).cast());
                _mm512_mask_storeu_epi8(d0.add(y * stride).cast(), m, _mm512_xor_si512(v, f));
            }
        }
        return;
    }
    for (y, row) in src.chunks_exact(w).enumerate() {
        let d = &mut dst[at + y * stride..][..w];
        let mut i = 0;
        // SAFETY: every access is masked to `[i, w)`, inside `row` and `d`.
        unsafe {
            while i < w {
                let rem = (w - i).min(64);
                let m: __mmask64 = super::low_bits(rem);
                let v = _mm512_maskz_loadu_epi8(m, row.as_ptr().add(i).cast());
                _mm512_mask_storeu_epi8(d.as_mut_ptr().add(i).cast(), m, _mm512_xor_si512(v, f));
                i += rem;
            }
        }
    }
}

/// [`copy_rows_xor_avx512`] on AVX2 ([`copy_rows_strided_xor_avx2`]).
///
/// # Safety
/// avx2 must be available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn copy_rows_xor_avx2(
    src: &[u8],
    w: usize,
    dst: &mut [u8],
    at: usize,
    stride: usize,
    flip: u8,
) {
    let h = src.len() / w;
    if h == 0 {
        return;
    }
    assert!(at + (h - 1) * stride + w <= dst.len());
    // SAFETY: row y reads `src[y·w ..][..w]` and writes `dst[at + y·stride ..][..w]`, inside
    // both slices (asserted above); they cannot overlap (one is borrowed mutably).
    unsafe {
        let d = dst.as_mut_ptr().add(at);
        copy_rows_strided_xor_avx2(src.as_ptr(), w, d, stride, w, h, flip)
    }
}

/// Copies `h` rows of `w` bytes from `src + y·src_stride` to `dst + y·dst_stride`, xored with
/// `flip`: ymm loads and stores, the last one of a row overlapping the one before it rather
/// than a byte loop (the compiler's loop ran a 56-byte row's last 24 bytes one at a time,
/// a quarter of the time of the int8 depthwise kernel it feeds), 16-, 8- and 4-byte ones for
/// shorter rows (a 7×7 plane's rows cost as much as the kernel one byte at a time); nothing
/// outside the rows is read or written.
///
/// # Safety
/// avx2 must be available; every row readable at `src` and writable at `dst`, the two
/// disjoint.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn copy_rows_strided_xor_avx2(
    src: *const u8,
    src_stride: usize,
    dst: *mut u8,
    dst_stride: usize,
    w: usize,
    h: usize,
    flip: u8,
) {
    // SAFETY: every access lies in `[0, w)` of a row (the caller's ranges).
    unsafe {
        let f = _mm256_set1_epi8(flip as i8);
        let f16 = _mm_set1_epi8(flip as i8);
        let f8 = u64::from_ne_bytes([flip; 8]);
        for y in 0..h {
            let (s, d) = (src.add(y * src_stride), dst.add(y * dst_stride));
            // (Macros, not closures: closures are not reliably inlined into target-feature
            // code.)
            macro_rules! put32 {
                ($i:expr) => {{
                    let v = _mm256_loadu_si256(s.add($i).cast());
                    _mm256_storeu_si256(d.add($i).cast(), _mm256_xor_si256(v, f));
                }};
            }
            macro_rules! put16 {
                ($i:expr) => {{
                    let v = _mm_loadu_si128(s.add($i).cast());
                    _mm_storeu_si128(d.add($i).cast(), _mm_xor_si128(v, f16));
                }};
            }
            macro_rules! put4 {
                ($i:expr) => {{
                    let v = s.add($i).cast::<u32>().read_unaligned();
                    d.add($i).cast::<u32>().write_unaligned(v ^ f8 as u32);
                }};
            }
            macro_rules! put8 {
                ($i:expr) => {{
                    let v = s.add($i).cast::<u64>().read_unaligned();
                    d.add($i).cast::<u64>().write_unaligned(v ^ f8);
                }};
            }
            if w >= 32 {
                let mut i = 0;
                while i + 32 <= w {
                    put32!(i);
                    i += 32;
                }
                if i < w {
                    put32!(w - 32);
                }
            } else if w >= 16 {
                put16!(0);
                put16!(w - 16);
            } else if w >= 8 {
                put8!(0);
                put8!(w - 8);
            } else if w >= 4 {
                put4!(0);
                put4!(w - 4);
            } else {
                for i in 0..w {
                    *d.add(i) = *s.add(i) ^ flip;
                }
            }
        }
    }
}

/// `n` planes of `h × w` 32-bit values (`planes[(c·h + y)·w + x]`: the int8 NHWC copy's
/// quads of 4 channels, or f32 channels) written pixel by pixel: value `c` of pixel `(y, x)`
/// to `dst + y·row + x·pixel + 4·c` (bytes); 16 pixels × 16 planes at a time through one
/// 16×16 transposition, each pixel's 16 values with one masked store (64 contiguous bytes),
/// where one 4-byte store per value had been the padded NHWC copies' hot spot.
///
/// # Safety
/// avx512f must be available; `planes` holds `n·h·w` values; for every `y < h`, `x < w`,
/// `dst + y·row + x·pixel + [0, 4·n)` is writable.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn planes_to_pixels_avx512(
    planes: &[u32],
    n: usize,
    (h, w): (usize, usize),
    dst: *mut u8,
    row: usize,
    pixel: usize,
) {
    let plane = h * w;
    debug_assert!(planes.len() >= n * plane);
    // SAFETY: the caller guarantees the feature and the destination ranges; the loads are
    // masked to the row's `nx` pixels of planes below `n`, the stores to the pixel's `nc`
    // values.
    unsafe {
        for y in 0..h {
            for x0 in (0..w).step_by(16) {
                let nx = (w - x0).min(16);
                let lm = super::low_bits(nx) as __mmask16;
                for c0 in (0..n).step_by(16) {
                    let nc = (n - c0).min(16);
                    let r: [__m512i; 16] = std::array::from_fn(|i| match i < nc {
                        true => {
                            let at = planes.as_ptr().add((c0 + i) * plane + y * w + x0);
                            _mm512_maskz_loadu_epi32(lm, at.cast())
                        }
                        false => _mm512_setzero_si512(),
                    });
                    let t = super::gemm::transpose16_epi32(r);
                    let sm = super::low_bits(nc) as __mmask16;
                    for (x, &tx) in t.iter().enumerate().take(nx) {
                        let at = dst.add(y * row + (x0 + x) * pixel + 4 * c0);
                        _mm512_mask_storeu_epi32(at.cast(), sm, tx);
                    }
                }
            }
        }
    }
}

/// [`planes_to_pixels_avx512`] on AVX2: 8 pixels × 8 planes at a time through one 8×8
/// transposition, each pixel's 8 values with one (masked, for a last partial group of
/// planes) 32-byte store.
///
/// # Safety
/// avx2 must be available; ranges as for [`planes_to_pixels_avx512`].
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn planes_to_pixels_avx2(
    planes: &[u32],
    n: usize,
    (h, w): (usize, usize),
    dst: *mut u8,
    row: usize,
    pixel: usize,
) {
    let plane = h * w;
    debug_assert!(planes.len() >= n * plane);
    // SAFETY: the caller guarantees the feature and the destination ranges; the loads are
    // masked to the row's `nx` pixels of planes below `n`, the stores to the pixel's `nc`
    // values.
    unsafe {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for y in 0..h {
            for x0 in (0..w).step_by(8) {
                let nx = (w - x0).min(8);
                let lm = _mm256_cmpgt_epi32(_mm256_set1_epi32(nx as i32), lanes);
                for c0 in (0..n).step_by(8) {
                    let nc = (n - c0).min(8);
                    let r: [__m256; 8] = std::array::from_fn(|i| match i < nc {
                        true => {
                            let at = planes.as_ptr().add((c0 + i) * plane + y * w + x0);
                            _mm256_castsi256_ps(_mm256_maskload_epi32(at.cast(), lm))
                        }
                        false => _mm256_setzero_ps(),
                    });
                    let t = super::gemm::transpose8_ps(r);
                    let sm = _mm256_cmpgt_epi32(_mm256_set1_epi32(nc as i32), lanes);
                    for (x, &tx) in t.iter().enumerate().take(nx) {
                        let at = dst.add(y * row + (x0 + x) * pixel + 4 * c0);
                        _mm256_maskstore_epi32(at.cast(), sm, _mm256_castps_si256(tx));
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
pub(crate) unsafe fn interleave4_avx512(src: [*const u8; 4], n: usize, flip: u8, dst: *mut u8) {
    // SAFETY: every access is below n (sources) or 4n (destination), as the caller guarantees;
    // the last step masks its loads and stores to that range.
    unsafe {
        let f = _mm512_set1_epi8(flip as i8);
        let mut i = 0;
        while i < n {
            let rem = (n - i).min(64);
            let lm: __mmask64 = super::low_bits(rem);
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

/// `dst[off + i] = row[at + i] + b` for `i < len`, for every run `(at, off, len)` of a float
/// GEMM tile row (one f32 add per output, as the scalar epilogue), 16 lanes at a time; with
/// `clamp = Some((lo, hi))` each sum is then clamped as `F32Clamp::apply` does: `vmaxps(y,
/// lo)` is `y > lo ? y : lo`, `vminps(m, hi)` is `m < hi ? m : hi`.
///
/// # Safety
/// avx512f must be available; every run must have `at + len ≤ row.len()` and
/// `dst + off .. dst + off + len` writable.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn add_bias_runs_avx512(
    row: &[f32],
    runs: &[(usize, usize, usize)],
    b: f32,
    clamp: Option<(f32, f32)>,
    dst: *mut f32,
) {
    match clamp {
        // SAFETY: forwarded from the caller.
        None => unsafe { add_bias_runs_with::<false>(row, runs, b, (0.0, 0.0), dst) },
        Some(c) => unsafe { add_bias_runs_with::<true>(row, runs, b, c, dst) },
    }
}

/// [`add_bias_runs_avx512`], clamping when `CLAMP`.
///
/// # Safety
/// As [`add_bias_runs_avx512`].
#[target_feature(enable = "avx512f")]
unsafe fn add_bias_runs_with<const CLAMP: bool>(
    row: &[f32],
    runs: &[(usize, usize, usize)],
    b: f32,
    (lo, hi): (f32, f32),
    dst: *mut f32,
) {
    let bv = _mm512_set1_ps(b);
    let (lov, hiv) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    for &(at, off, len) in runs {
        debug_assert!(at + len <= row.len());
        let mut i = 0;
        // SAFETY: every access is masked to `[i, len)` of the run, inside `row` and `dst`.
        unsafe {
            while i < len {
                let rem = (len - i).min(16);
                let m: __mmask16 = ((1u32 << rem) - 1) as u16;
                let v = _mm512_maskz_loadu_ps(m, row.as_ptr().add(at + i));
                let mut y = _mm512_add_ps(v, bv);
                if CLAMP {
                    y = _mm512_min_ps(_mm512_max_ps(y, lov), hiv);
                }
                _mm512_mask_storeu_ps(dst.add(off + i), m, y);
                i += rem;
            }
        }
    }
}

/// `QLinearAdd` with ORT's AVX2 kernel (see `cpu::fast::add`): for each element,
/// `cvtps(fma(a, ra, fma(b, rb, fixed)))` (`k = [ra, rb, fixed]`) saturated to qint8 (`signed`)
/// or quint8 by the packs (which equals the clamp, `i32::MIN` included), 32 per step, the tail
/// through the reference's element (`ort::add::avx2_element`).
///
/// # Safety
/// avx2 and fma must be available; `a` and `b` hold at least `out.len()` bytes.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn qlinear_add_avx2(
    a: &[u8],
    b: &[u8],
    signed: bool,
    k: [f32; 3],
    out: &mut [u8],
) {
    let n = out.len();
    assert!(a.len() >= n && b.len() >= n);
    let (ra, rb, fixed) = (
        _mm256_set1_ps(k[0]),
        _mm256_set1_ps(k[1]),
        _mm256_set1_ps(k[2]),
    );
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    // SAFETY: 8-byte loads at i + 8q < n for q < 4 (i + 32 ≤ n), a 32-byte store at i.
    unsafe {
        let widen = |p: *const u8| {
            let v = _mm_loadl_epi64(p.cast());
            _mm256_cvtepi32_ps(if signed {
                _mm256_cvtepi8_epi32(v)
            } else {
                _mm256_cvtepu8_epi32(v)
            })
        };
        let mut i = 0;
        while i + 32 <= n {
            let y: [__m256i; 4] = std::array::from_fn(|q| {
                let (fa, fb) = (
                    widen(a.as_ptr().add(i + 8 * q)),
                    widen(b.as_ptr().add(i + 8 * q)),
                );
                _mm256_cvtps_epi32(_mm256_fmadd_ps(fa, ra, _mm256_fmadd_ps(fb, rb, fixed)))
            });
            let (lo, hi) = (
                _mm256_packs_epi32(y[0], y[1]),
                _mm256_packs_epi32(y[2], y[3]),
            );
            let bytes = if signed {
                _mm256_packs_epi16(lo, hi)
            } else {
                _mm256_packus_epi16(lo, hi)
            };
            _mm256_storeu_si256(
                out.as_mut_ptr().add(i).cast(),
                _mm256_permutevar8x32_epi32(bytes, order),
            );
            i += 32;
        }
        let dtype = if signed {
            crate::quant::QDtype::QInt8
        } else {
            crate::quant::QDtype::QUInt8
        };
        for j in i..n {
            out[j] = crate::cpu::reference::ort::add::avx2_element(dtype, a[j], b[j], k);
        }
    }
}

/// The largest `v ^ flip` of `x` (0 for an empty `x`): 128 bytes per step, the tail byte by
/// byte (the scalar fold, which the compiler ran 16 bytes per step).
///
/// # Safety
/// avx2 must be available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn max_xor_avx2(x: &[u8], flip: u8) -> u8 {
    let mut chunks = x.chunks_exact(128);
    // SAFETY: every load reads 32 bytes of a 128-byte chunk of `x`.
    let lanes = unsafe {
        let f = _mm256_set1_epi8(flip as i8);
        let mut m = [_mm256_setzero_si256(); 4];
        for c in &mut chunks {
            for (i, mi) in m.iter_mut().enumerate() {
                let v = _mm256_loadu_si256(c.as_ptr().add(32 * i).cast());
                *mi = _mm256_max_epu8(*mi, _mm256_xor_si256(v, f));
            }
        }
        let m = _mm256_max_epu8(_mm256_max_epu8(m[0], m[1]), _mm256_max_epu8(m[2], m[3]));
        let mut b = [0u8; 32];
        _mm256_storeu_si256(b.as_mut_ptr().cast(), m);
        b
    };
    let tail = chunks.remainder().iter().map(|&v| v ^ flip);
    lanes.into_iter().chain(tail).max().unwrap_or(0)
}
