//! Direct kernels for convs with one input channel per group (depthwise, any channel
//! multiplier): a GEMM with `K = KH·KW` would waste most of its lanes.
//!
//! Per (batch, group): a padded plane of the group's input channel, zero at padded positions;
//! then per output channel of the group and output row, for each tap `t = (ky, kx)` in
//! row-major order, `acc[ox] = fma(plane[(oy·sh + ky·dh)·Wp + ox·sw + kx·dw], w[t], acc[ox])`.
//!
//! * f32: the documented order of the float conv, then `+ bias`.
//! * int8: the plane holds `x − x_zp` and the weights `w − ζ`, as f32. Every product and every
//!   partial sum is an integer of magnitude ≤ `max|x − x_zp| · Σ_t |w − ζ|`; when that bound is
//!   ≤ 2^24 (always, for zero points inside the dtype ranges: 49 taps · 255 · 255 < 2^24) all
//!   of them are exact in f32, so the f32 FMA kernel computes the exact accumulator. Otherwise
//!   an int32 kernel (wrapping multiply-add) runs instead.

use super::{par_for, Isa, PackedConv2d, SendPtr, Sink};
use crate::quant::QParams;
use crate::shape::ConvShape;

/// Elements of slack after a plane: the SIMD row kernels read whole vectors.
const SLACK: usize = 64;

/// Geometry of the padded plane.
struct Plane {
    wp: usize,
    hp: usize,
    offs: Vec<usize>,
}

impl Plane {
    fn new(s: &ConvShape) -> Self {
        let p = &s.params;
        let wp = s.w + 2 * p.padding[1];
        Plane {
            wp,
            hp: s.h + 2 * p.padding[0],
            offs: (0..s.kh * s.kw)
                .map(|t| (t / s.kw) * p.dilation[0] * wp + (t % s.kw) * p.dilation[1])
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.hp * self.wp + SLACK
    }

    /// Copies `src` (an `h × w` image) into the interior of `plane`, row by row with `f`.
    fn fill_rows<T>(
        &self,
        s: &ConvShape,
        src: &[u8],
        plane: &mut [T],
        f: impl Fn(&[u8], &mut [T]),
    ) {
        let (ph, pw) = (s.params.padding[0], s.params.padding[1]);
        for (y, row) in src.chunks_exact(s.w).enumerate() {
            f(row, &mut plane[(y + ph) * self.wp + pw..][..s.w]);
        }
    }

    /// Copies `src` (an `h × w` image) into the interior of `plane`, mapped by `f`.
    fn fill<T: Copy, U: Copy>(
        &self,
        s: &ConvShape,
        src: &[U],
        plane: &mut [T],
        f: impl Fn(U) -> T,
    ) {
        let (ph, pw) = (s.params.padding[0], s.params.padding[1]);
        for (y, row) in src.chunks_exact(s.w).enumerate() {
            let dst = &mut plane[(y + ph) * self.wp + pw..][..s.w];
            for (d, &v) in dst.iter_mut().zip(row) {
                *d = f(v);
            }
        }
    }
}

/// Generic f32 row (any stride): `acc[ox] = fma chain over t`.
#[inline(always)]
fn row_f32_generic(
    plane: &[f32],
    base: usize,
    offs: &[usize],
    w: &[f32],
    sx: usize,
    acc: &mut [f32],
) {
    acc.fill(0.0);
    let n = acc.len();
    for (&off, &wt) in offs.iter().zip(w) {
        let start = base + off;
        if sx == 1 {
            for (d, &v) in acc.iter_mut().zip(&plane[start..start + n]) {
                *d = v.mul_add(wt, *d);
            }
        } else {
            for (i, d) in acc.iter_mut().enumerate() {
                *d = plane[start + i * sx].mul_add(wt, *d);
            }
        }
    }
}

/// Generic int32 row (any stride), wrapping.
#[inline(always)]
fn row_i32_generic(
    plane: &[i32],
    base: usize,
    offs: &[usize],
    w: &[i32],
    sx: usize,
    acc: &mut [i32],
) {
    acc.fill(0);
    for (&off, &wt) in offs.iter().zip(w) {
        let start = base + off;
        for (i, d) in acc.iter_mut().enumerate() {
            *d = d.wrapping_add(wt.wrapping_mul(plane[start + i * sx]));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_f32_generic_fma(
    plane: &[f32],
    base: usize,
    offs: &[usize],
    w: &[f32],
    sx: usize,
    acc: &mut [f32],
) {
    row_f32_generic(plane, base, offs, w, sx, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_i32_generic_avx2(
    plane: &[i32],
    base: usize,
    offs: &[usize],
    w: &[i32],
    sx: usize,
    acc: &mut [i32],
) {
    row_i32_generic(plane, base, offs, w, sx, acc)
}

/// Calls `$f::<NV, R, [extra const]>` for runtime `nv` in 1..=4 and `r` in 1..=3.
#[cfg(target_arch = "x86_64")]
macro_rules! dw_dispatch {
    ($f:ident $(, $c:ident)?; $nv:expr, $r:expr; $($arg:expr),*) => {
        match ($nv, $r) {
            (1, 1) => $f::<1, 1 $(, $c)?>($($arg),*),
            (2, 1) => $f::<2, 1 $(, $c)?>($($arg),*),
            (3, 1) => $f::<3, 1 $(, $c)?>($($arg),*),
            (_, 1) => $f::<4, 1 $(, $c)?>($($arg),*),
            (1, 2) => $f::<1, 2 $(, $c)?>($($arg),*),
            (2, 2) => $f::<2, 2 $(, $c)?>($($arg),*),
            (3, 2) => $f::<3, 2 $(, $c)?>($($arg),*),
            (_, 2) => $f::<4, 2 $(, $c)?>($($arg),*),
            (1, _) => $f::<1, 3 $(, $c)?>($($arg),*),
            (2, _) => $f::<2, 3 $(, $c)?>($($arg),*),
            (3, _) => $f::<3, 3 $(, $c)?>($($arg),*),
            (_, _) => $f::<4, 3 $(, $c)?>($($arg),*),
        }
    };
}

/// All output rows of one channel: `out[oy·Wout + ox] = (fma chain over the taps) + bias`,
/// stored as f32, or as i32 (truncated: exact integers) when `I32`. `out` holds `Hout·Wout`
/// elements.
fn channel<const I32: bool>(
    isa: Isa,
    s: &ConvShape,
    pl: &Plane,
    plane: &[f32],
    w: &[f32],
    bias: f32,
    out: &mut [f32],
) {
    let (sy, sx) = (s.params.stride[0], s.params.stride[1]);
    let (n, offs) = (s.w_out, &pl.offs[..]);
    assert!(out.len() >= s.h_out * n && w.len() >= offs.len());
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Portable && sx == 1 {
        let lanes = if isa == Isa::Avx512Vnni { 16 } else { 8 };
        let max_off = offs.iter().copied().max().unwrap_or(0);
        // The bound that makes the unchecked SIMD reads below sound (whole vectors).
        assert!((s.h_out - 1) * sy * pl.wp + max_off + n.div_ceil(lanes) * lanes <= plane.len());
        let rs = sy * pl.wp;
        let step = 4 * lanes;
        let mut oy = 0;
        while oy < s.h_out {
            let r = (s.h_out - oy).min(3);
            for c0 in (0..n).step_by(step) {
                let nv = (n - c0).div_ceil(lanes).min(4);
                let tail = (n - c0).min(step) - (nv - 1) * lanes;
                // SAFETY: reads at (oy + i)·rs + off + c0 + [0, 16·nv) lie in `plane`
                // (asserted above); writes at (oy + i)·n + c0 + [0, lanes·(nv − 1) + tail)
                // stay below Hout·Wout; the ISA was checked available.
                unsafe {
                    use super::x86::*;
                    let q = plane.as_ptr().add(oy * rs + c0);
                    let o = out.as_mut_ptr().add(oy * n + c0);
                    if isa == Isa::Avx512Vnni {
                        dw_dispatch!(dw_avx512, I32; nv, r; q, rs, offs, w, bias, o, n, tail)
                    } else {
                        dw_dispatch!(dw_avx2, I32; nv, r; q, rs, offs, w, bias, o, n, tail)
                    }
                }
            }
            oy += r;
        }
        return;
    }
    let mut acc = vec![0f32; n];
    for oy in 0..s.h_out {
        let base = oy * sy * pl.wp;
        #[cfg(target_arch = "x86_64")]
        if isa != Isa::Portable {
            // SAFETY: every non-portable path includes AVX2 and FMA (checked when chosen).
            unsafe { row_f32_generic_fma(plane, base, offs, w, sx, &mut acc) };
        } else {
            row_f32_generic(plane, base, offs, w, sx, &mut acc);
        }
        #[cfg(not(target_arch = "x86_64"))]
        row_f32_generic(plane, base, offs, w, sx, &mut acc);
        for (d, &a) in out[oy * n..(oy + 1) * n].iter_mut().zip(&acc) {
            let y = a + bias;
            *d = if I32 {
                // SAFETY: an exact integer of magnitude <= 2^24 (module docs).
                f32::from_bits(unsafe { y.to_int_unchecked::<i32>() } as u32)
            } else {
                y
            };
        }
    }
}

fn row_i32(
    isa: Isa,
    plane: &[i32],
    base: usize,
    offs: &[usize],
    w: &[i32],
    sx: usize,
    acc: &mut [i32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Portable {
        // SAFETY: every non-portable path includes AVX2.
        return unsafe { row_i32_generic_avx2(plane, base, offs, w, sx, acc) };
    }
    let _ = isa;
    row_i32_generic(plane, base, offs, w, sx, acc)
}

/// Splits `items` work items into contiguous ranges, one per task (`threads` tasks, a few
/// per thread for balance).
fn item_ranges(items: usize, threads: Option<usize>) -> Vec<std::ops::Range<usize>> {
    let tasks = match super::thread_count(threads) {
        1 => 1,
        t => (4 * t).min(items),
    }
    .max(1);
    (0..tasks)
        .map(|i| items * i / tasks..items * (i + 1) / tasks)
        .collect()
}

/// Packs `w − ζ` (`wprime`, `[c_out][kh·kw]`) for [`vnni_channel`]: per channel, lanes
/// `[j < ⌈kh/4⌉][kx]` of the four bytes `w'[4j + i][kx]` (i < 4; 0 past the kernel).
pub(super) fn pack_vnni(wprime: &[i32], c_out: usize, kh: usize, kw: usize) -> Vec<i32> {
    let groups = kh.div_ceil(4);
    let mut out = Vec::with_capacity(c_out * groups * kw);
    for o in 0..c_out {
        for j in 0..groups {
            for kx in 0..kw {
                let bytes: [u8; 4] = std::array::from_fn(|i| {
                    let ky = 4 * j + i;
                    if ky < kh {
                        wprime[(o * kh + ky) * kw + kx] as i8 as u8
                    } else {
                        0
                    }
                });
                out.push(i32::from_le_bytes(bytes));
            }
        }
    }
    out
}

/// Geometry of the row-interleaved plane of the VNNI depthwise kernel (stride 1).
///
/// `P` is the padded u8 plane (`u = x ^ flip`, `z` at padding), with extra `z` rows below.
/// `R[y][x]` holds the four bytes `P[y + i·dh][x]`, i < 4, so that one `vpdpbusd` lane
/// multiplies four kernel rows at once: output `(oy, ox)` is
/// `Σ_j Σ_kx dot4(R[oy + 4j·dh][ox + kx·dw], w'[4j..4j+4][kx])`.
struct VnniPlane {
    wp: usize,
    /// Rows of `R`.
    ry: usize,
    /// Rows of `P`.
    py: usize,
    /// Byte offsets of the `⌈kh/4⌉·kw` lanes' reads in `R`.
    offs: Vec<usize>,
}

impl VnniPlane {
    fn new(s: &ConvShape) -> Self {
        let p = &s.params;
        let wp = s.w + 2 * p.padding[1];
        let hp = s.h + 2 * p.padding[0];
        let (dh, dw) = (p.dilation[0], p.dilation[1]);
        let groups = s.kh.div_ceil(4);
        let ry = s.h_out + 4 * (groups - 1) * dh;
        VnniPlane {
            wp,
            ry,
            py: hp.max(ry + 3 * dh),
            offs: (0..groups)
                .flat_map(|j| (0..s.kw).map(move |kx| (4 * j * dh * wp + kx * dw) * 4))
                .collect(),
        }
    }

    /// Bytes of `R`, with slack for whole-vector reads past a row's end.
    fn r_len(&self) -> usize {
        (self.ry * self.wp + 16) * 4
    }
}

/// The VNNI depthwise conv of one input channel: fills `p` (stored bytes, padded) and `r`
/// (row-interleaved `u`) from `src`, then writes the exact accumulators of output channels `o_range` through `emit`.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
fn vnni_channel(
    s: &ConvShape,
    vp: &VnniPlane,
    src: &[u8],
    flip: u8,
    p: &mut [u8],
    r: &mut [u8],
    lanes: &[i32],
    init: impl Fn(usize) -> i32,
    o_range: std::ops::Range<usize>,
    acc: &mut [i32],
    mut emit: impl FnMut(usize, &[i32]),
) {
    let (ph, pw) = (s.params.padding[0], s.params.padding[1]);
    let dh = s.params.dilation[0];
    let wp = vp.wp;
    // P holds stored bytes (`z ^ flip` at padding, which stays from the first fill; the
    // interior is rewritten); the interleave applies `^ flip`.
    for (y, row) in src.chunks_exact(s.w).enumerate() {
        p[(y + ph) * wp + pw..][..s.w].copy_from_slice(row);
    }
    for y in 0..vp.ry {
        let rows: [&[u8]; 4] = std::array::from_fn(|i| &p[(y + i * dh) * wp..][..wp]);
        super::int8::interleave(rows, flip, &mut r[y * wp * 4..(y + 1) * wp * 4]);
    }
    let n = s.w_out;
    let nl = vp.offs.len();
    // The bounds that make the unchecked reads and writes below sound: every read is at most
    // (h_out − 1)·wp·4 + max(offs) + 4·(n rounded up to 16) ≤ r.len().
    let max_off = vp.offs.iter().copied().max().unwrap_or(0);
    assert!((s.h_out - 1) * wp * 4 + max_off + n.div_ceil(16) * 64 <= r.len());
    assert!(acc.len() >= s.h_out * n && lanes.len() >= o_range.end * nl);
    for o in o_range {
        let w = &lanes[o * nl..(o + 1) * nl];
        let c = init(o);
        let mut oy = 0;
        while oy < s.h_out {
            let rows = (s.h_out - oy).min(3);
            for c0 in (0..n).step_by(64) {
                let nv = (n - c0).div_ceil(16).min(4);
                let tail = (n - c0).min(64) - (nv - 1) * 16;
                // SAFETY: reads and writes are in range (asserted above); the VNNI packing is
                // only chosen on AVX512-VNNI CPUs.
                unsafe {
                    use super::x86::dw_vnni_avx512;
                    let q = r.as_ptr().add((oy * wp + c0) * 4);
                    let d = acc.as_mut_ptr().add(oy * n + c0);
                    let offs = &vp.offs[..];
                    dw_dispatch!(dw_vnni_avx512; nv, rows; q, wp * 4, offs, w, c, d, n, tail)
                }
            }
            oy += rows;
        }
        emit(o, &acc[..s.h_out * n]);
    }
}

/// The int8 depthwise conv of `pc` (`w − ζ` per channel and tap in `wprime`; the VNNI lanes
/// when that kernel applies) into `sink`.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_int8(
    pc: &PackedConv2d,
    wprime: &[i32],
    vnni: Option<&[i32]>,
    x: &[u8],
    x_qp: &QParams,
    s: &ConvShape,
    opts: &super::FastConvOptions,
    sink: Sink,
) {
    let pl = Plane::new(s);
    let taps = s.kh * s.kw;
    let (g, cog) = (s.params.groups, s.c_out_per_group());
    let (sy, sx) = (s.params.stride[0], s.params.stride[1]);
    let plane_out = s.h_out * s.w_out;
    let out = sink.ptr();
    let (isa, epi) = (pc.isa, &pc.epi);
    let bound = PackedConv2d::max_dx(x_qp) * pc.sum_abs.iter().copied().max().unwrap_or(0);
    let exact_f32 = bound <= 1 << 24;
    let wf: Vec<f32> = wprime.iter().map(|&v| v as f32).collect();
    let (dtype, zp) = (x_qp.dtype, x_qp.zero_point);
    let flip: u8 = if dtype == crate::quant::QDtype::QInt8 {
        0x80
    } else {
        0
    };
    let z = zp + if flip != 0 { 128 } else { 0 };
    let ranges = item_ranges(s.n * g, opts.threads);
    #[cfg(target_arch = "x86_64")]
    if let Some(lanes) = vnni {
        let vp = VnniPlane::new(s);
        // Folding: acc = Σ u·w' − z·Σ w' (padded taps hold u = z).
        let init = |o: usize| {
            let sum: i32 = wprime[o * taps..(o + 1) * taps]
                .iter()
                .fold(0i32, |a, &v| a.wrapping_add(v));
            z.wrapping_mul(sum).wrapping_neg()
        };
        par_for(opts.threads, ranges.len(), |task| {
            let mut p = vec![z as u8 ^ flip; vp.py * vp.wp];
            let mut r = vec![0u8; vp.r_len()];
            let mut acc = vec![0i32; plane_out];
            for item in ranges[task].clone() {
                let (n, gi) = (item / g, item % g);
                let src = &x[(n * s.c_in + gi) * s.h * s.w..][..s.h * s.w];
                vnni_channel(
                    s,
                    &vp,
                    src,
                    flip,
                    &mut p,
                    &mut r,
                    lanes,
                    init,
                    gi * cog..(gi + 1) * cog,
                    &mut acc,
                    // SAFETY: output channel o of batch n belongs to this task only.
                    |o, a| unsafe { out.write(isa, epi, o, a, (n * s.c_out + o) * plane_out) },
                );
            }
        });
        return;
    }
    let _ = vnni;
    par_for(opts.threads, ranges.len(), |task| {
        // Planes and accumulators are reused across the task's items: the padding of a
        // plane stays zero, only its interior is rewritten.
        let mut planef = Vec::new();
        let mut planei = Vec::new();
        let mut acc = vec![0i32; plane_out];
        for item in ranges[task].clone() {
            let (n, gi) = (item / g, item % g);
            let src = &x[(n * s.c_in + gi) * s.h * s.w..][..s.h * s.w];
            if exact_f32 {
                if planef.is_empty() {
                    planef = vec![0f32; pl.len()];
                }
                pl.fill_rows(s, src, &mut planef, |row, dst| {
                    bytes_to_f32(isa, row, flip, z, dst)
                });
                for o in gi * cog..(gi + 1) * cog {
                    let accf: &mut [f32] = bytemuck::cast_slice_mut(&mut acc[..]);
                    channel::<true>(
                        isa,
                        s,
                        &pl,
                        &planef,
                        &wf[o * taps..(o + 1) * taps],
                        0.0,
                        accf,
                    );
                    // SAFETY: output channel o of batch n belongs to this task only.
                    unsafe { out.write(isa, epi, o, &acc, (n * s.c_out + o) * plane_out) };
                }
            } else {
                if planei.is_empty() {
                    planei = vec![0i32; pl.len()];
                }
                pl.fill(s, src, &mut planei, |b| dtype.byte_to_int(b) - zp);
                for o in gi * cog..(gi + 1) * cog {
                    let w = &wprime[o * taps..(o + 1) * taps];
                    for (oy, row) in acc.chunks_exact_mut(s.w_out).enumerate() {
                        row_i32(isa, &planei, oy * sy * pl.wp, &pl.offs, w, sx, row);
                    }
                    // SAFETY: as above.
                    unsafe { out.write(isa, epi, o, &acc, (n * s.c_out + o) * plane_out) };
                }
            }
        }
    });
}

/// `dst[i] = ((src[i] ^ flip) as i32 − z) as f32`.
fn bytes_to_f32(isa: Isa, src: &[u8], flip: u8, z: i32, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni {
        // SAFETY: the ISA was checked available.
        return unsafe { super::x86::bytes_to_f32_avx512(src, flip, z, dst) };
    }
    let _ = isa;
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = ((b ^ flip) as i32 - z) as f32;
    }
}

/// The f32 depthwise conv (one input channel per group): `out` is NCHW.
pub(super) fn run_f32(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    threads: Option<usize>,
    out: &mut [f32],
) {
    let pl = Plane::new(s);
    let taps = s.kh * s.kw;
    let (g, cog) = (s.params.groups, s.c_out_per_group());
    let plane_out = s.h_out * s.w_out;
    let outp = SendPtr(out.as_mut_ptr());
    let ranges = item_ranges(s.n * g, threads);
    par_for(threads, ranges.len(), |task| {
        let mut plane = vec![0f32; pl.len()];
        for item in ranges[task].clone() {
            let (n, gi) = (item / g, item % g);
            pl.fill(
                s,
                &x[(n * s.c_in + gi) * s.h * s.w..][..s.h * s.w],
                &mut plane,
                |v| v,
            );
            for o in gi * cog..(gi + 1) * cog {
                // SAFETY: output channel o of batch n belongs to this task only.
                let dst = unsafe { outp.slice((n * s.c_out + o) * plane_out, plane_out) };
                let b = bias.map_or(0.0, |b| b[o]);
                channel::<false>(isa, s, &pl, &plane, &w[o * taps..(o + 1) * taps], b, dst);
            }
        }
    });
}
