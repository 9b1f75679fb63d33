//! Direct kernels for convs with one input channel per group (depthwise, any channel
//! multiplier): a GEMM with `K = KH·KW` would waste most of its lanes.
//!
//! # int8 on AVX512-VNNI
//!
//! When every `w' = w − ζ` is a valid i8 (symmetric weights always), `vpdpbusd` computes
//! `Σ u·w'` four kernel columns at a time, `u = x ^ flip` the u8 activations (as in the GEMM),
//! and the zero point folds into the accumulator's initial value:
//! `acc = Σ (u − z)·w' = Σ u·w' − z·Σ w'`, where every padded tap holds (or is made to hold)
//! `u = z` and so contributes 0, exactly as in the reference. The requantization epilogue
//! (every formula, fixed-point included) is fused: accumulators never leave the registers.
//!
//! * Unit strides and column dilation (`x86::dw_i8_flat`, the common 3×3 / 5×5 stride-1
//!   case): one padded plane per (batch, group) of `u` bytes, flat output positions
//!   `q = oy·Wp + ox` as in the GEMM (a vector spans several short rows), and four *phases*
//!   of 16 lanes per block of 64 positions so that each `vpdpbusd` operand is one plain load.
//! * Other strides and dilations (`x86::dw_i8_channel`, needs AVX512-VBMI): straight from the
//!   input, one `vpermt2b` per load builds the operand and substitutes `z` for padded columns;
//!   padded rows are skipped, their `−z·Σ w'` share left out of the initial value.
//! * Output planes of 64 pixels or fewer (7×7), one channel per group, with VBMI and kernels of
//!   at most 4 columns (`nhwc::depthwise_applies`): the channels in the lanes instead
//!   (`nhwc::depthwise_quads`, dispatched by `PackedConv2d`): the per-channel work of the two
//!   kernels above outweighs a channel's few multiply-adds there.
//!
//! # int8 on AVX-VNNI, and on AVX2 where `vpmaddubsw` cannot saturate
//!
//! The flat layout on ymm registers (`x86::dw_i8_flat_avxvnni`): blocks of 32 positions, four
//! phases of 8 lanes, requantized in the registers where every channel's formula is a float
//! one with finite constants (the AVX-512 path's operations and saturating packs on 8 lanes,
//! one in-lane shuffle to position order), the bytes of each flat position stored and the
//! real outputs' rows copied out; otherwise raw accumulators stored in position order (a
//! 4 × 8 transpose) and requantized per channel afterwards. On AVX2 without VNNI the same
//! kernel runs with `vpmaddubsw` + `vpmaddwd` by ones for `vpdpbusd` (`x86::dw_i8_flat_maddubs`) where the
//! call's activations and the weight lanes prove that no int16 pair sum can saturate
//! ([`maddubs_exact`], the GEMM's `PairBounds`: always for 7-bit activations, as PyTorch's x86
//! preset gives); otherwise the pair plane below. On the target depthwise shape both are
//! faster than the f32 kernel (one thread, Intel Xeon with AVX-VNNI: 1.65–1.74x with
//! AVX-VNNI, 1.26–1.29x with AVX2 and 7-bit activations; 1.12x and 0.95x before the epilogue
//! moved into the kernel and the plane's rows were copied as whole vectors).
//!
//! # int8 on AVX-VNNI, AVX2 and AVX-512 VNNI, small planes
//!
//! Output rows of at most 8 pixels from input rows of at most 16 bytes, `kw ≤ 4`
//! (`x86::DwSmall`: MobileNetV2's 7×7 outputs, at strides 1 and 2): `run_int8_rows` runs
//! `x86::dw_i8_small_avxvnni` (and its EVEX and `vpmaddubsw` forms) over a run of channels,
//! straight from the input into the output. Each input row becomes one ymm register of
//! `vpdpbusd` operands (one 16-byte load into both halves, one byte shuffle, one XOR that
//! puts `z` at padded taps), each output row the sum of `kh` `vpdpbusd`s of those registers,
//! four output rows requantized at a time in the registers; no padded plane, no stored
//! accumulator. On AVX-512 VNNI, `x86::dw_i8_small_avx512` puts two output rows in each zmm
//! `vpdpbusd` and runs before the channels-in-lanes quads. One thread, Intel Xeon, against the
//! f32 conv: 960x7x7 0.87x → 1.3–1.45x (AVX-VNNI), 0.71x → 1.1–1.2x (AVX2), 0.87x → 1.6–2.0x
//! (AVX-512 VNNI, 0.036 → 0.022 ms); 576x14x14 stride 2 1.0x → 2.0x (AVX-VNNI), 0.8x → 1.5x
//! (AVX2), 0.9x → 1.9–2.3x (AVX-512). The ymm kernels need every channel's epilogue to be a
//! float formula with finite constants, the zmm one takes any ([`small_ks`]).
//!
//! # int8 on AVX-512 VNNI + VBMI, rows of 9 to 32 pixels
//!
//! Output rows of at most 32 pixels from input rows of at most 64 bytes, `kw ≤ 4`, at most
//! 64 padded rows (`x86::DwRows`: MobileNetV2's 14×14 and 28×28 outputs, strides 1 and 2):
//! `x86::dw_i8_rows_avx512` through the same driver (`run_int8_rows`). Each input row becomes
//! one or two zmm registers of `vpdpbusd` operands once per channel (a masked load, one
//! `vpermb` per 16 outputs that also puts `z` at padded taps), each output row the sum of
//! `kh` `vpdpbusd`s of them, four output rows requantized per step in the registers and
//! stored with one masked store per 64 bytes (consecutive output rows are contiguous). It
//! runs before the flat and the per-channel (`x86::dw_i8_channel`) kernels: the first copied
//! every plane into a padded one, the second rebuilt an input row's operands for each output
//! row reading it and requantized one row at a time. One thread, Intel Xeon (Emerald Rapids),
//! against the f32 conv (whose direct 3×3 kernel had left int8 behind on these shapes):
//! 192x28x28 stride 2 0.63x → 1.35x (0.025 → 0.013 ms), 384x14x14 0.86x → 1.6x (0.035 →
//! 0.019), 576x14x14 0.77x → 1.6x, 192x28x28 1.18x → 1.7x, 144x56x56 stride 2 1.49x → 2.1x.
//!
//! Elsewhere, where the f32 kernel runs with the channels in the lanes (output planes of 64
//! pixels or fewer, 196 or fewer at strides above 1; see [`lanes_f32_preferred`]) and no
//! integer kernel runs, so does the int8 conv (`run_int8_lanes`): the inputs as `u − z` in
//! f32, the weights `w − ζ`, exact under the 2^24 bound of the last section, then each
//! channel's accumulators requantized. It runs the f32 kernel plus the conversions, so it
//! cannot beat the f32 conv, and is the fallback. Unit-stride small planes the small kernel
//! does not take run the flat kernel, which requantizes in its registers and copies short
//! rows as whole words.
//!
//! # int8 on AVX-VNNI and AVX2, column stride 2
//!
//! `x86::dw_i8_s2_avxvnni` (`kw ≤ 4`, no column dilation; on AVX2 with `vpmaddubsw` where
//! [`maddubs_exact`]): over the flat kernel's padded plane of `u`, the four bytes at
//! `2·ox` of a kernel row are output `ox`'s `vpdpbusd` operand lane (the taps `kx < 4`), so
//! eight outputs come from two 16-byte loads and one in-lane byte shuffle per kernel row;
//! requantized in the registers (four output rows per step, one pack for 32 outputs) and
//! stored straight into the output. One thread, Intel Xeon, against the f32 conv, on
//! MobileNetV2's stride-2 layers with inputs of 28x28 and more (the 14x14 one runs the
//! small-plane kernel): AVX-VNNI 1.65–3.06x, AVX2 1.23–2.28x (192x28x28 0.66x before).

//! # int8 on AVX2, exact for any range
//!
//! With unit column stride, a *pair plane* per (batch, group): the i32 at padded position `i`
//! holds the i16 pair `(d[i], d[i + dw])`, `d = x − x_zp` (0 at padded positions), and each
//! output channel's weights are i16 pairs `(w'[ky][2j], w'[ky][2j + 1])` (0 for the missing
//! column of an odd `kw`). One `vpmaddwd` then adds two taps of 8 outputs exactly, so a 3×3
//! kernel takes 6 multiply-adds per 8 outputs where the f32 path takes 9 FMAs
//! (`x86::dw_pairs_avx2`). Applies when
//! every `d` and `w'` fits an i16 (zero points inside the dtype ranges); the requantization
//! runs per output row afterwards. A 3×3 depthwise conv has only 9 multiply-adds per output,
//! so the per-output work around them (widening the input, requantizing the output: about as
//! many vector operations as the multiply-adds) decides its speed against f32, which has
//! neither: 0.8x of the f32 kernel on the target shape.
//!
//! With column stride 2 (no column dilation) the plane of `d` as i16, read as i32, is already
//! the pair plane of the even columns (`run_int8_pairs`), so strided layers with large outputs
//! run the same kernel: on an Intel Xeon with AVX-VNNI, one thread, MobileNetV2's stride-2
//! 96x112x112 layer 0.48 → 0.24 ms (2.1x the f32 conv, which it trailed at 0.9x when it ran
//! the f32 kernel on converted inputs), 144x56x56 0.17 → 0.12 ms (0.78x → 1.03–1.15x).
//!
//! # f32, and int8 elsewhere
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
use crate::shape::{ConvParams, ConvShape};

/// Elements of slack after a plane: the SIMD row kernels read whole vectors.
const SLACK: usize = 64;

/// One input image (`H × W`) of a depthwise conv, as [`Plane::prepare`] reads it.
#[derive(Clone, Copy)]
enum Image<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// Stored bytes, read as `(b ^ flip) − z` (exact in f32).
    Bytes { x: &'a [u8], flip: u8, z: i32 },
}

/// Geometry of the padded plane.
struct Plane {
    wp: usize,
    hp: usize,
    offs: Vec<usize>,
    /// The column phases of strided convs (see [`Phases`]); `None` at unit column stride.
    phases: Option<Phases>,
}

/// A padded plane of a conv with column stride `sx > 1` split by column phase (column mod
/// `sx`): phase `p` is the `hp × wq` matrix of the plane's columns `sx·i + p` (`wq = wp / sx`,
/// the plane's width being rounded up to a multiple of `sx`), the phases one after another.
/// Output `(oy, ox)` reads plane column `ox·sx + c` for the tap column offset `c = kx·dw`,
/// which is phase `c mod sx` at index `ox + c / sx`: each tap reads its outputs' inputs
/// contiguously, so the register-blocked unit-stride row kernels run strided convs too, with
/// the same FMA chain per output, in the same order (the same bits).
struct Phases {
    wq: usize,
    /// Per tap, its offset in the split plane (row step `sy·wq`).
    offs: Vec<usize>,
}

impl Plane {
    fn new(s: &ConvShape) -> Self {
        let p = &s.params;
        let (sx, hp) = (p.stride[1], s.h + 2 * p.padding[0]);
        // Whole phases per row (the extra columns are padding no output reads: the last
        // output column reads `(Wout − 1)·sx + (KW − 1)·dw < W + 2·pw`).
        let wp = (s.w + 2 * p.padding[1]).next_multiple_of(sx);
        let (dh, dw) = (p.dilation[0], p.dilation[1]);
        let wq = wp / sx;
        let phases = (sx > 1).then(|| Phases {
            wq,
            offs: (0..s.kh * s.kw)
                .map(|t| {
                    let c = (t % s.kw) * dw;
                    (t / s.kw) * dh * wq + (c % sx) * hp * wq + c / sx
                })
                .collect(),
        });
        Plane {
            wp,
            hp,
            offs: (0..s.kh * s.kw)
                .map(|t| (t / s.kw) * dh * wp + (t % s.kw) * dw)
                .collect(),
            phases,
        }
    }

    /// The column phases of this geometry where path `isa` runs them (the SIMD paths).
    fn phased(&self, isa: Isa) -> Option<&Phases> {
        self.phases.as_ref().filter(|_| isa.is_x86_simd())
    }

    /// Writes `row`, the `W` values of input row `y`, into `buf` split by column phase (see
    /// [`Phases`]): the columns of the padded plane's row `y + ph` from column `pw`, as
    /// [`Plane::phased`] gives `phases` for path `isa` (a SIMD path). Writes no padded
    /// position, so a buffer zeroed once keeps its padding.
    fn put_row(
        &self,
        (isa, phases): (Isa, &Phases),
        s: &ConvShape,
        y: usize,
        row: &[f32],
        buf: &mut [f32],
    ) {
        assert!(isa.is_x86_simd());
        let (ph, pw) = (s.params.padding[0], s.params.padding[1]);
        let (sx, wq) = (s.params.stride[1], phases.wq);
        let at = |p: usize, idx: usize| (p * self.hp + y + ph) * wq + idx;
        if sx == 2 {
            return self.put_row_with((isa, phases), s, y, buf, |even, odd| {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: every non-portable path includes AVX2 (checked when chosen).
                unsafe {
                    split2_avx2(row, even, odd)
                };
                #[cfg(not(target_arch = "x86_64"))]
                split2(row, even, odd);
            });
        }
        for (x, &v) in row.iter().enumerate() {
            buf[at((x + pw) % sx, (x + pw) / sx)] = v;
        }
    }

    /// [`Plane::put_row`] at stride 2: `split(even, odd)` writes the even and odd input columns
    /// of row `y` into their phases' ranges of `buf` (`⌈W/2⌉` and `⌊W/2⌋` values).
    fn put_row_with(
        &self,
        (isa, phases): (Isa, &Phases),
        s: &ConvShape,
        y: usize,
        buf: &mut [f32],
        split: impl FnOnce(&mut [f32], &mut [f32]),
    ) {
        assert!(isa.is_x86_simd() && s.params.stride[1] == 2);
        let (ph, pw) = (s.params.padding[0], s.params.padding[1]);
        let at = |p: usize, idx: usize| (p * self.hp + y + ph) * phases.wq + idx;
        // Input column x is plane column x + pw: the even ones go to phase pw mod 2 from
        // index ⌊pw/2⌋, the odd ones to the other phase from ⌊(pw + 1)/2⌋.
        let (pe, po) = (pw % 2, 1 - pw % 2);
        let (ne, no) = (s.w.div_ceil(2), s.w / 2);
        let (ie, io) = (at(pe, pw / 2), at(po, pw.div_ceil(2)));
        // Two disjoint ranges of `buf` (different phases).
        let (even, odd) = if ie < io {
            let (a, b) = buf.split_at_mut(io);
            (&mut a[ie..ie + ne], &mut b[..no])
        } else {
            let (a, b) = buf.split_at_mut(ie);
            (&mut b[..ne], &mut a[io..io + no])
        };
        split(even, odd)
    }

    /// Writes the input image `src` into the layout [`channel`] reads on path `isa` and
    /// returns it. The padded plane, in `plane`; where [`Plane::phased`], its columns split
    /// by phase: on wide rows as each row is written (in `plane`: no pass over a padded
    /// plane), on narrow ones as a whole padded plane in one pass (into `phases`: a split
    /// call per row cost more than the pass). The buffers are zeroed on first use; later
    /// calls rewrite the same interior positions, so their padding stays zero.
    fn prepare<'a>(
        &self,
        isa: Isa,
        s: &ConvShape,
        src: Image,
        plane: &'a mut Vec<f32>,
        phases: &'a mut Vec<f32>,
        tmp: &mut Vec<f32>,
    ) -> &'a [f32] {
        /// Rows from this width up are split as they are written (one thread, 3x3 stride 2,
        /// AVX-512, against the whole-plane split: 96x112x112 220 → 165 µs, 144x56x56 75 →
        /// 73; 192x28x28 30 → 40, 576x14x14 40 → 62).
        const WIDE: usize = 48;
        if plane.is_empty() {
            *plane = vec![0.0; self.len()];
        }
        let (ph, pw) = (s.params.padding[0], s.params.padding[1]);
        match self.phased(isa) {
            Some(phases) if s.w >= WIDE => {
                tmp.resize(s.w, 0.0);
                for y in 0..s.h {
                    // Stride 2 from bytes: converted and split in one pass.
                    #[cfg(target_arch = "x86_64")]
                    if let (Image::Bytes { x, flip, z }, 2) = (src, s.params.stride[1]) {
                        let row = &x[y * s.w..][..s.w];
                        self.put_row_with((isa, phases), s, y, plane, |even, odd| {
                            // SAFETY: every non-portable path includes AVX2 (checked when
                            // chosen); the phases hold the row's halves (`put_row_with`).
                            unsafe { super::x86::bytes_to_f32_split2_avx2(row, flip, z, even, odd) }
                        });
                        continue;
                    }
                    let r = match src {
                        Image::F32(x) => &x[y * s.w..][..s.w],
                        Image::Bytes { x, flip, z } => {
                            bytes_to_f32(isa, &x[y * s.w..][..s.w], flip, z, tmp);
                            &tmp[..]
                        }
                    };
                    self.put_row((isa, phases), s, y, r, plane);
                }
                plane
            }
            phased => {
                let rows = plane[ph * self.wp + pw..].chunks_mut(self.wp).take(s.h);
                match src {
                    Image::F32(x) => {
                        for (dst, row) in rows.zip(x.chunks_exact(s.w)) {
                            dst[..s.w].copy_from_slice(row);
                        }
                    }
                    Image::Bytes { x, flip, z } => {
                        for (dst, row) in rows.zip(x.chunks_exact(s.w)) {
                            bytes_to_f32(isa, row, flip, z, &mut dst[..s.w]);
                        }
                    }
                }
                if phased.is_none() {
                    return plane;
                }
                let (n, sx) = (self.hp * self.wp, s.params.stride[1]);
                phases.resize(self.len(), 0.0);
                let q = n / sx;
                if sx == 2 {
                    let (even, odd) = phases[..n].split_at_mut(q);
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: every non-portable path includes AVX2 (checked when chosen).
                    unsafe {
                        split2_avx2(&plane[..n], even, odd)
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    split2(&plane[..n], even, odd);
                } else {
                    for (p, phase) in phases[..n].chunks_exact_mut(q).enumerate() {
                        for (d, &v) in phase.iter_mut().zip(plane[p..n].iter().step_by(sx)) {
                            *d = v;
                        }
                    }
                }
                phases
            }
        }
    }

    fn len(&self) -> usize {
        self.hp * self.wp + SLACK
    }

    /// Copies `src` (an `h × w` image) into the interior of `plane`, row by row with `f`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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

/// The two column phases of `row`: `even[i] = row[2i]`, `odd[i] = row[2i + 1]` (those that
/// exist; `even` holds `⌈len/2⌉` elements or more, `odd` `⌊len/2⌋` or more).
#[inline(always)]
fn split2(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    for ((e, o), p) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
        *e = p[0];
        *o = p[1];
    }
    if !row.len().is_multiple_of(2) {
        even[row.len() / 2] = row[row.len() - 1];
    }
}

/// [`split2`] compiled for AVX2 (its loop vectorizes into shuffles; an explicit two-load,
/// two-shuffle, two-permute loop measured 13% slower on the 144x56x56 stride-2 conv).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn split2_avx2(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    split2(row, even, odd)
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

/// Generic int16 row (any stride) into int32 accumulators, wrapping: the portable path's
/// int8 row (inputs `x − z` and weights `w − ζ` both fit int16), in a loop compilers
/// vectorize with widening multiply-adds (NEON `smlal`; SSE2 `pmullw`/`pmulhw` pairs).
#[inline(always)]
fn row_i16_generic(
    plane: &[i16],
    base: usize,
    offs: &[usize],
    w: &[i16],
    sx: usize,
    acc: &mut [i32],
) {
    acc.fill(0);
    let n = acc.len();
    for (&off, &wt) in offs.iter().zip(w) {
        let (start, wt) = (base + off, i32::from(wt));
        if sx == 1 {
            for (d, &v) in acc.iter_mut().zip(&plane[start..start + n]) {
                *d = d.wrapping_add(wt * i32::from(v));
            }
        } else {
            for (i, d) in acc.iter_mut().enumerate() {
                *d = d.wrapping_add(wt * i32::from(plane[start + i * sx]));
            }
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
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
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
    // Strided columns on the SIMD paths: `plane` holds the padded plane split by column
    // phase (see `Phases`), so that the register-blocked row kernels below run them as
    // unit-stride rows (strided reads kept the row loop scalar). One thread, 3x3 stride 2
    // (`PackedConvF32::run`, AVX-512; AVX2 alike), from the strided generic row loop: 96
    // channels of 112x112 0.83 → 0.27 ms, 144 of 56x56 0.38 → 0.12, 192 of 28x28 0.16 →
    // 0.06, 576 of 14x14 0.18 → 0.09 (a padded plane split row by row into a buffer allocated
    // per channel: a split per 16-column row and the allocations cost more than the FMAs on
    // small planes), then 250 → 213 µs, 108 → 74, 59 → 29, 86 → 43 (the whole plane split
    // into a reused buffer), then 96x112x112 220 → 156 µs and 144x56x56 80 → 61 (rows of
    // 48 or more split as they are copied, without a padded plane: `Plane::prepare`).
    let (rows, row_step, row_offs, step) = match pl.phased(isa) {
        Some(ph) => (plane, sy * ph.wq, &ph.offs[..], 1),
        None => (plane, sy * pl.wp, offs, sx),
    };
    // The register-blocked SIMD rows: AVX-512 (16 lanes), AVX2 (8), and `neon-dotprod`'s
    // `fmla` (4).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if (isa.is_x86_simd() || isa == Isa::NeonDot) && step == 1 {
        let lanes = match isa {
            Isa::Avx512Vnni => 16,
            Isa::NeonDot => 4,
            _ => 8,
        };
        let max_off = row_offs.iter().copied().max().unwrap_or(0);
        let rs = row_step;
        // The bound that makes the unchecked SIMD reads below sound (whole vectors).
        assert!((s.h_out - 1) * rs + max_off + n.div_ceil(lanes) * lanes <= rows.len());
        for_each_block(s.h_out, n, lanes, |oy, r, c0, nv, tail| {
            // SAFETY: reads at (oy + i)·rs + off + c0 + [0, lanes·nv) lie in `rows`
            // (asserted above); writes at (oy + i)·n + c0 + [0, lanes·(nv − 1) + tail) stay
            // below Hout·Wout; the ISA was checked available (NEON is part of every AArch64
            // target with `std`).
            unsafe {
                let q = rows.as_ptr().add(oy * rs + c0);
                let o = out.as_mut_ptr().add(oy * n + c0);
                let offs = row_offs;
                #[cfg(target_arch = "x86_64")]
                if isa == Isa::Avx512Vnni {
                    use super::x86::dw_avx512;
                    dw_dispatch!(dw_avx512, I32; nv, r; q, rs, offs, w, bias, o, n, tail)
                } else {
                    use super::x86::dw_avx2;
                    dw_dispatch!(dw_avx2, I32; nv, r; q, rs, offs, w, bias, o, n, tail)
                }
                #[cfg(target_arch = "aarch64")]
                {
                    use super::aarch64::dw_neon;
                    dw_dispatch!(dw_neon, I32; nv, r; q, rs, offs, w, bias, o, n, tail)
                }
            }
        });
        return;
    }
    let mut acc = vec![0f32; n];
    for oy in 0..s.h_out {
        let base = oy * row_step;
        #[cfg(target_arch = "x86_64")]
        if isa.is_x86_simd() {
            // SAFETY: every non-portable path includes AVX2 and FMA (checked when chosen).
            unsafe { row_f32_generic_fma(rows, base, row_offs, w, step, &mut acc) };
        } else {
            row_f32_generic(rows, base, row_offs, w, step, &mut acc);
        }
        #[cfg(not(target_arch = "x86_64"))]
        row_f32_generic(rows, base, row_offs, w, step, &mut acc);
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
    if isa.is_x86_simd() {
        // SAFETY: every non-portable path includes AVX2.
        return unsafe { row_i32_generic_avx2(plane, base, offs, w, sx, acc) };
    }
    let _ = isa;
    row_i32_generic(plane, base, offs, w, sx, acc)
}

/// The tap pairs of the AVX2 int8 kernel ([`x86::dw_pairs_avx2`](super::x86)): per kernel row
/// `ky` and column pair `j` (columns `2j`, `2j + 1`; the second is absent, weight 0, when
/// `kw` is odd), the pair plane offset `ky·dh·Wp + 2j·dw`.
#[cfg(target_arch = "x86_64")]
fn pair_offsets(s: &ConvShape, pl: &Plane) -> Vec<usize> {
    let (dh, dw) = (s.params.dilation[0], s.params.dilation[1]);
    (0..s.kh)
        .flat_map(|ky| (0..s.kw.div_ceil(2)).map(move |j| ky * dh * pl.wp + 2 * j * dw))
        .collect()
}

/// The weights of output channel `o` as i16 pairs in the order of [`pair_offsets`]:
/// `(w'[ky][2j], w'[ky][2j + 1])`, low half first (`w' = w − ζ`, |w'| ≤ 255).
#[cfg(target_arch = "x86_64")]
fn pair_weights(wprime: &[i32], kh: usize, kw: usize) -> Vec<i32> {
    (0..kh)
        .flat_map(|ky| {
            (0..kw.div_ceil(2)).map(move |j| {
                let at = |kx: usize| if kx < kw { wprime[ky * kw + kx] } else { 0 };
                (at(2 * j) as i16 as u16 as i32) | ((at(2 * j + 1) as i16 as i32) << 16)
            })
        })
        .collect()
}

/// All output rows of one channel from the pair plane `plane` (i32 pairs; output row `oy`
/// starts at `oy·rs`, output column `ox` of tap pair `k` is `offs[k] + ox`): the exact i32
/// accumulators, `Hout·Wout` of them, into `out`.
#[cfg(target_arch = "x86_64")]
fn channel_pairs(
    s: &ConvShape,
    plane: &[i32],
    rs: usize,
    offs: &[usize],
    w: &[i32],
    out: &mut [i32],
) {
    const LANES: usize = 8;
    let n = s.w_out;
    // The bounds that make the unchecked SIMD accesses below sound (whole vectors read).
    assert!(out.len() >= s.h_out * n && w.len() >= offs.len());
    assert!(pairs_len(s, rs, offs) <= plane.len());
    for_each_block(s.h_out, n, LANES, |oy, r, c0, nv, tail| {
        // SAFETY: reads at (oy + i)·rs + off + c0 + [0, 8·nv) lie in `plane` (asserted
        // above); writes at (oy + i)·n + c0 + [0, 8·(nv − 1) + tail) stay below Hout·Wout;
        // every non-portable ISA includes AVX2 (checked when chosen).
        unsafe {
            use super::x86::*;
            let q = plane.as_ptr().add(oy * rs + c0);
            let o = out.as_mut_ptr().add(oy * n + c0);
            dw_dispatch!(dw_pairs_avx2; nv, r; q, rs, offs, w, o, n, tail)
        }
    });
}

/// The i32 values of a pair plane that [`channel_pairs`] reads (whole vectors of 8 outputs).
#[cfg(target_arch = "x86_64")]
fn pairs_len(s: &ConvShape, rs: usize, offs: &[usize]) -> usize {
    let max_off = offs.iter().copied().max().unwrap_or(0);
    (s.h_out - 1) * rs + max_off + s.w_out.div_ceil(8) * 8
}

/// The register blocks of the SIMD row kernels over an `h_out x n` output: up to 3 rows
/// (`oy`, `r`) by up to 4 vectors of `lanes` (`c0`, `nv`), the last vector holding `tail`
/// outputs (1..=lanes).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn for_each_block(
    h_out: usize,
    n: usize,
    lanes: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let step = 4 * lanes;
    let mut oy = 0;
    while oy < h_out {
        let r = (h_out - oy).min(3);
        for c0 in (0..n).step_by(step) {
            let nv = (n - c0).div_ceil(lanes).min(4);
            f(oy, r, c0, nv, (n - c0).min(step) - (nv - 1) * lanes);
        }
        oy += r;
    }
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

/// Column groups of four kernel columns (one `vpdpbusd` lane each) of the VNNI kernels: 1, 2
/// or 4 (three are padded to four; more are not supported).
fn column_groups(kw: usize) -> usize {
    match kw.div_ceil(4) {
        n @ (1 | 2) => n,
        n => n.max(4),
    }
}

/// Whether the flat kernel (`x86::dw_i8_flat`, `aarch64::dw_i8_flat_sdot`: unit strides and
/// column dilation) applies.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
fn flat_eligible(params: &ConvParams) -> bool {
    params.stride == [1, 1] && params.dilation[1] == 1
}

/// Whether the ymm stride-2 kernel (`x86::dw_i8_s2_avxvnni`: column stride 2, no column
/// dilation, one column group) applies.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn s2_eligible(params: &ConvParams, kw: usize) -> bool {
    params.stride[1] == 2 && params.dilation[1] == 1 && kw <= 4
}

/// Whether one of the VNNI depthwise kernels handles a conv with these hyperparameters and
/// kernel size, on this CPU: at most 4 column groups (`kw ≤ 16`), and either the flat kernel
/// (unit strides and column dilation; AVX512-VNNI, AVX-VNNI, AVX2 or `neon-dotprod`'s `sdot`),
/// or the AVX512-VNNI permutation kernel, which needs VBMI (`vpermt2b`) and must reach every
/// input column of a chunk of 16 outputs and one column group from a single 64-byte load:
/// `15·sx + (min(kw, 4) − 1)·dw ≤ 63`.
pub(super) fn vnni_eligible(isa: Isa, params: &ConvParams, kw: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let flat = flat_eligible(params);
        column_groups(kw) <= 4
            && match isa {
                Isa::Avx512Vnni => {
                    flat || (super::x86::has_vbmi()
                        && 15 * params.stride[1] + (kw.min(4) - 1) * params.dilation[1] <= 63)
                }
                // AVX2: `vpmaddubsw` for `vpdpbusd` where no pair can saturate (checked per
                // call by `maddubs_exact`), the pair-plane kernel otherwise. Column stride 2
                // without column dilation, `kw ≤ 4`: `x86::dw_i8_s2_avxvnni`.
                Isa::AvxVnni | Isa::Avx2 => flat || s2_eligible(params, kw),
                _ => false,
            }
    }
    // `neon-dotprod`: the flat kernel on `sdot`.
    #[cfg(target_arch = "aarch64")]
    {
        isa == Isa::NeonDot && column_groups(kw) <= 4 && flat_eligible(params)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (isa, params, kw);
        false
    }
}

/// Packs `w − ζ` (`wprime`, `[c_out][kh·kw]`, every value a valid i8) for the VNNI kernels:
/// per channel and kernel row, `⌈kw/4⌉` words of the four bytes `w'[ky][4j + i]` (0 past the
/// kernel).
pub(super) fn pack_vnni(wprime: &[i32], c_out: usize, kh: usize, kw: usize) -> Vec<i32> {
    let ng = column_groups(kw);
    let mut out = Vec::with_capacity(c_out * kh * ng);
    for row in wprime.chunks_exact(kw).take(c_out * kh) {
        for j in 0..ng {
            let bytes: [u8; 4] =
                std::array::from_fn(|i| row.get(4 * j + i).map_or(0, |&v| v as i8 as u8));
            out.push(i32::from_le_bytes(bytes));
        }
    }
    out
}

/// The column and row plan of the permutation kernel for one conv shape (see
/// `x86::DwGeom`).
#[cfg(target_arch = "x86_64")]
struct DwPlan {
    rows: Vec<(u32, u32)>,
    lb: Vec<usize>,
    mask: Vec<u64>,
    idx: Vec<super::x86::Bytes64>,
}

#[cfg(target_arch = "x86_64")]
impl DwPlan {
    /// The plan for `s` (which [`vnni_eligible`] accepted, not flat).
    ///
    /// Chunk `ci`, group `j`: every input column read is `ix = (16ci + l)·sx + (4j + i)·dw − pw`
    /// (`l < 16`, `i < 4`), at least `base = 16ci·sx + 4j·dw − pw`. Loading 64 bytes from
    /// `lb = max(base, 0)` covers every valid `ix` (`0 ≤ ix < w`), since
    /// `ix − lb ≤ 15·sx + 3·dw ≤ 63`. The load is masked to the row (`lb + p < w`).
    fn new(s: &ConvShape) -> Self {
        let p = &s.params;
        let (sy, sx) = (p.stride[0], p.stride[1]);
        let (dh, dw) = (p.dilation[0], p.dilation[1]);
        let (ph, pw) = (p.padding[0] as isize, p.padding[1] as isize);
        let ng = column_groups(s.kw);
        let chunks = s.w_out.div_ceil(16);
        let (mut lb, mut mask, mut idx) = (vec![], vec![], vec![]);
        for ci in 0..chunks {
            for j in 0..ng {
                let base = (16 * ci * sx + 4 * j * dw) as isize - pw;
                let l0 = base.max(0) as usize;
                let (l0, m) = if l0 < s.w {
                    let n = (s.w - l0).min(64);
                    (l0, if n == 64 { !0 } else { (1u64 << n) - 1 })
                } else {
                    (0, 0)
                };
                let mut v = super::x86::Bytes64([64; 64]);
                for l in 0..16 {
                    let ox = 16 * ci + l;
                    for i in 0..4 {
                        let kx = 4 * j + i;
                        let ix = (ox * sx + kx * dw) as isize - pw;
                        if ox < s.w_out && kx < s.kw && ix >= 0 && (ix as usize) < s.w {
                            let d = ix as usize - l0;
                            debug_assert!(d < 64);
                            v.0[4 * l + i] = d as u8;
                        }
                    }
                }
                lb.push(l0);
                mask.push(m);
                idx.push(v);
            }
        }
        let rows = (0..s.h_out)
            .map(|oy| {
                let valid = |ky: usize| {
                    let iy = (oy * sy + ky * dh) as isize - ph;
                    iy >= 0 && (iy as usize) < s.h
                };
                let lo = (0..s.kh).find(|&ky| valid(ky)).unwrap_or(s.kh);
                let hi = (lo..s.kh).find(|&ky| !valid(ky)).unwrap_or(s.kh);
                (lo as u32, hi.max(lo) as u32)
            })
            .collect();
        DwPlan {
            rows,
            lb,
            mask,
            idx,
        }
    }
}

/// The int8 depthwise conv on AVX512-VNNI (`lanes` from [`pack_vnni`]): parallel over
/// (batch, group) items, each output channel computed by `x86::dw_i8_flat` (over a padded
/// plane of the item's input channel, built once per item) or `x86::dw_i8_channel` (straight
/// from the input), with the epilogue fused.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn run_int8_vnni(
    pc: &PackedConv2d,
    wprime: &[i32],
    lanes: &[i32],
    x: &[u8],
    x_qp: &QParams,
    s: &ConvShape,
    threads: Option<usize>,
    out: super::SinkPtr,
) {
    use super::x86::{dw_i8_channel, dw_i8_flat, DwFlat, DwGeom};
    let (flip, z) = super::int8::flip_and_z(x_qp);
    let p = &s.params;
    let (kh, kw) = (s.kh, s.kw);
    let ng = column_groups(kw);
    let (g, cog) = (p.groups, s.c_out_per_group());
    let plane_in = s.h * s.w;
    let plane_out = s.h_out * s.w_out;
    let (isa, epi) = (pc.isa, &pc.epi);
    let ranges = item_ranges(s.n * g, threads);
    let flat = flat_eligible(p);
    // The flat layout: the padded plane, and the runs of real outputs per block of 64
    // flat positions.
    let (ph, pw) = (p.padding[0], p.padding[1]);
    let wp = s.w + 2 * pw;
    let hp = s.h + 2 * ph;
    let positions = s.h_out * wp;
    let segs: Vec<_> = if flat {
        (0..positions.div_ceil(64))
            .map(|b| {
                super::int8::segments(64 * b, positions.min(64 * b + 64), wp, s.w_out, s.h_out)
            })
            .collect()
    } else {
        Vec::new()
    };
    let row_step = p.dilation[0] * wp;
    // Every read of `dw_i8_flat` (see its `# Safety`).
    let flat_len = (hp * wp).max(64 * segs.len() + 4 * ng + (kh - 1) * row_step + 64);
    let fl = DwFlat {
        row_step,
        segs: &segs,
    };
    // The permutation kernel's plan.
    let plan = (!flat).then(|| DwPlan::new(s));
    let empty = DwPlan {
        rows: Vec::new(),
        lb: Vec::new(),
        mask: Vec::new(),
        idx: Vec::new(),
    };
    let pl = plan.as_ref().unwrap_or(&empty);
    let geom = DwGeom {
        w: s.w,
        w_out: s.w_out,
        h_out: s.h_out,
        sy: p.stride[0],
        dh: p.dilation[0],
        ph,
        rows: &pl.rows,
        lb: &pl.lb,
        mask: &pl.mask,
        idx: &pl.idx,
        flip,
        z: z as u8,
    };
    // Every read of the kernels lies in the item's input plane or the flat plane (asserted
    // once here).
    assert!(x.len() >= s.n * s.c_in * plane_in && lanes.len() >= s.c_out * kh * ng);
    // Per output channel, built once per input qparams and kept by the layer: the epilogue's
    // constants (`None` when some record is not covered by the vector epilogue: every channel
    // then takes the scalar one) and `−z·Σ w'` (the GEMM's `corr0`: `Σ w' = Σ w − K·ζ`),
    // the flat kernel's initial value. (Built per channel and call, they were 40% of a
    // 960x7x7 layer's time.)
    let cc = pc.call_consts(x_qp);
    let ks = cc.requant.as_deref();
    par_for(threads, ranges.len(), |task| {
        let mut pz = vec![0i32; kh + 1];
        let mut acc = Vec::new();
        // The flat plane: `z` at padded positions (written once), the interior rewritten
        // per item.
        let mut fplane = if flat {
            vec![z as u8; flat_len]
        } else {
            Vec::new()
        };
        for item in ranges[task].clone() {
            let (n, gi) = (item / g, item % g);
            let src = &x[(n * s.c_in + gi) * plane_in..][..plane_in];
            if flat {
                // SAFETY: the ISA was checked when packing.
                unsafe {
                    super::x86::copy_rows_xor_avx512(src, s.w, &mut fplane, ph * wp + pw, wp, flip)
                };
            }
            for o in gi * cog..(gi + 1) * cog {
                if !flat {
                    // pz[k] = −z·Σ_{ky < k} Σ_kx w'[ky][kx] (wrapping).
                    for (ky, row) in wprime[o * kh * kw..(o + 1) * kh * kw]
                        .chunks_exact(kw)
                        .enumerate()
                    {
                        let sum = row.iter().fold(0i32, |a, &v| a.wrapping_add(v));
                        pz[ky + 1] = pz[ky].wrapping_sub(z.wrapping_mul(sum));
                    }
                }
                let wts = &lanes[o * kh * ng..(o + 1) * kh * ng];
                let off = (n * s.c_out + o) * plane_out;
                // SAFETY: the ISA (and VBMI for the permutation kernel) was checked when
                // packing; the input plane of item (n, gi) is in `x` (asserted above), the
                // flat plane holds `flat_len` bytes; output channel o of batch n is written by
                // this task only, inside the output (`plane_out` elements from `off`; the
                // flat kernel's runs lie inside it by construction of `segments`).
                unsafe {
                    let k = ks.map(|ks| &ks[o]);
                    let (k, dst) = match (out, k) {
                        (super::SinkPtr::Bytes(b), Some(k)) => {
                            (Some(k), b.slice(off, plane_out).as_mut_ptr())
                        }
                        (super::SinkPtr::Acc(a), _) => {
                            (None, a.slice(off, plane_out).as_mut_ptr().cast())
                        }
                        // A record the vector epilogue does not cover: raw accumulators,
                        // then the scalar epilogue.
                        (_, None) => {
                            acc.resize(plane_out, 0i32);
                            (None, acc.as_mut_ptr().cast())
                        }
                    };
                    if flat {
                        let f = match ng {
                            1 => dw_i8_flat::<1>,
                            2 => dw_i8_flat::<2>,
                            _ => dw_i8_flat::<4>,
                        };
                        f(&fl, fplane.as_ptr(), wts, kh, cc.corr0[o], k, dst);
                    } else {
                        let f = match ng {
                            1 => dw_i8_channel::<1>,
                            2 => dw_i8_channel::<2>,
                            _ => dw_i8_channel::<4>,
                        };
                        f(&geom, src.as_ptr(), wts, &pz, k, dst);
                    }
                    if let (super::SinkPtr::Bytes(_), None) = (out, &k) {
                        out.write(|a, y| super::requant_row(isa, epi, o, a, y), &acc, off);
                    }
                }
            }
        }
    });
}

/// The int8 depthwise conv of `pc` (`w − ζ` per channel and tap in `wprime`; the lanes of
/// [`pack_vnni`] when an AVX512-VNNI kernel applies) into `sink`.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_int8(
    pc: &PackedConv2d,
    wprime: &[i32],
    vnni: Option<&[i32]>,
    pairs: super::int8::PairBounds,
    lanes_w: &std::sync::OnceLock<Vec<f32>>,
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
    let isa = pc.isa;
    let bound = PackedConv2d::max_dx(x_qp) * pc.sum_abs.iter().copied().max().unwrap_or(0);
    let exact_f32 = bound <= 1 << 24;
    let (dtype, zp) = (x_qp.dtype, x_qp.zero_point);
    let flip: u8 = if dtype == crate::quant::QDtype::QInt8 {
        0x80
    } else {
        0
    };
    let z = zp + if flip != 0 { 128 } else { 0 };
    let ranges = item_ranges(s.n * g, opts.threads);
    // The ymm `vpdpbusd` kernels where they run: the `vnni` lanes exist (unit strides, or
    // column stride 2 with `kw ≤ 4`), on AVX-VNNI, or on AVX2 where `vpmaddubsw` cannot
    // saturate; the flat kernel at unit strides, `run_int8_s2` at column stride 2.
    #[cfg(target_arch = "x86_64")]
    let ymm_dot = match (vnni, isa) {
        (Some(l), Isa::AvxVnni) => Some(l),
        (Some(l), Isa::Avx2) if maddubs_exact(pairs, x, x_qp) => Some(l),
        _ => None,
    };
    #[cfg(target_arch = "x86_64")]
    let flat = ymm_dot.filter(|_| flat_eligible(&s.params));
    // Small output planes (on AVX-512 VNNI too: `small_ks`), then column stride 2 on the
    // ymm paths, where the epilogue runs in the kernel's registers.
    #[cfg(target_arch = "x86_64")]
    if let (Some(lanes), super::SinkPtr::Bytes(_)) = (ymm_dot.or(vnni), out) {
        let cc = pc.call_consts(x_qp);
        if let Some(ks) = small_ks(pc, &cc, s, ymm_dot.is_some()) {
            let (flip, z) = super::int8::flip_and_z(x_qp);
            if let Some(geo) = super::x86::DwSmall::new(s, flip, z as u8) {
                let k = (&geo, geo.reads(), small_kernel(isa));
                return run_int8_rows(k, lanes, &cc, ks, x, s, opts.threads, out);
            }
        }
        // Rows of 9 to 32 pixels on AVX-512 VNNI + VBMI.
        if let (Isa::Avx512Vnni, Some(ks), true) =
            (isa, cc.requant.as_deref(), super::x86::has_vbmi())
        {
            let (flip, z) = super::int8::flip_and_z(x_qp);
            if let Some(geo) = super::x86::DwRows::new(s, flip, z as u8) {
                use super::x86::dw_i8_rows_avx512 as rows;
                let kernel: RowsKernel<_> = if geo.nv == 1 { rows::<1> } else { rows::<2> };
                let k = (&geo, s.h * s.w, kernel);
                return run_int8_rows(k, lanes, &cc, ks, x, s, opts.threads, out);
            }
        }
        if let (Some(ks), Some(_), false) =
            (cc.requant_ymm.as_deref(), ymm_dot, flat_eligible(&s.params))
        {
            return run_int8_s2(pc, lanes, &cc, ks, x, x_qp, s, opts.threads, out);
        }
    }
    // AVX2 and AVX-VNNI on small planes the flat kernel does not run (strided ones): the f32
    // channels-in-lanes kernel (exact here). Where the flat kernel runs it is faster since
    // it requantizes in its registers and copies short rows as whole words (960x7x7, one
    // thread, AVX-VNNI: 0.064 → 0.044 ms).
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::AvxVnni)
        && flat.is_none()
        && exact_f32
        && s.c_out_per_group() == 1
        && lanes_f32_preferred(isa, s)
    {
        let cc = pc.call_consts(x_qp);
        let wl = lanes_w.get_or_init(|| {
            let wf: Vec<f32> = wprime.iter().map(|&v| v as f32).collect();
            pack_lanes(&wf, s.c_out, taps, isa)
        });
        return run_int8_lanes(pc, &cc, wl, x, (flip, z), s, opts.threads, out);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (lanes_w, pairs);
    #[cfg(target_arch = "x86_64")]
    if let (Some(lanes), Isa::Avx512Vnni) = (vnni, isa) {
        return run_int8_vnni(pc, wprime, lanes, x, x_qp, s, opts.threads, out);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(lanes) = flat {
        return run_int8_flat(pc, lanes, x, x_qp, s, opts.threads, out);
    }
    #[cfg(target_arch = "aarch64")]
    if let (Some(lanes), Isa::NeonDot) = (vnni, isa) {
        return run_int8_flat(pc, lanes, x, x_qp, s, opts.threads, out);
    }
    let _ = vnni;
    // The layer's cached call constants (the ymm paths' vector epilogue: `requant_with`).
    let cc = pc.call_consts(x_qp);
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::AvxVnni)
        && (sx == 1 || (sx == 2 && s.params.dilation[1] == 1))
        && PackedConv2d::max_dx(x_qp) <= i16::MAX as i128
        && wprime.iter().all(|v| v.unsigned_abs() <= i16::MAX as u32)
    {
        return run_int8_pairs(pc, &cc, wprime, x, (flip, z), s, opts.threads, out);
    }
    // The portable path: exact int16 products into int32, where the weights fit int16 (the
    // inputs `x − z` always do). Its f32 row would run `mul_add`, a library call where the
    // target has no FMA, and even with one converts and requantizes the same values.
    let w16: Option<Vec<i16>> = match isa {
        Isa::NeonDot | Isa::Portable => wprime.iter().map(|&v| i16::try_from(v).ok()).collect(),
        _ => None,
    };
    // The f32 path's weights (`w − ζ`), built only where it runs (the kernels above take
    // their own layouts).
    let wf: Vec<f32> = match (&w16, exact_f32) {
        (None, true) => wprime.iter().map(|&v| v as f32).collect(),
        _ => Vec::new(),
    };
    par_for(opts.threads, ranges.len(), |task| {
        // Planes and accumulators are reused across the task's items: the padding of a
        // plane stays zero, only its interior is rewritten.
        let (mut planef, mut phases, mut tmp) = (Vec::new(), Vec::new(), Vec::new());
        let (mut planei, mut plane16) = (Vec::new(), Vec::new());
        let mut acc = vec![0i32; plane_out];
        for item in ranges[task].clone() {
            let (n, gi) = (item / g, item % g);
            let src = &x[(n * s.c_in + gi) * s.h * s.w..][..s.h * s.w];
            if let Some(w16) = &w16 {
                if plane16.is_empty() {
                    plane16 = vec![0i16; pl.len()];
                }
                // x − z lies in [-255, 255]: exact in int16.
                pl.fill(s, src, &mut plane16, |b| (dtype.byte_to_int(b) - zp) as i16);
                for o in gi * cog..(gi + 1) * cog {
                    let w = &w16[o * taps..(o + 1) * taps];
                    for (oy, row) in acc.chunks_exact_mut(s.w_out).enumerate() {
                        row_i16_generic(&plane16, oy * sy * pl.wp, &pl.offs, w, sx, row);
                    }
                    let requant = |a: &[i32], y: &mut [u8]| pc.requant_with(&cc, o, a, y);
                    // SAFETY: output channel o of batch n belongs to this task only.
                    unsafe { out.write(requant, &acc, (n * s.c_out + o) * plane_out) };
                }
            } else if exact_f32 {
                let image = Image::Bytes { x: src, flip, z };
                let input = pl.prepare(isa, s, image, &mut planef, &mut phases, &mut tmp);
                for o in gi * cog..(gi + 1) * cog {
                    let accf: &mut [f32] = bytemuck::cast_slice_mut(&mut acc[..]);
                    channel::<true>(isa, s, &pl, input, &wf[o * taps..(o + 1) * taps], 0.0, accf);
                    let requant = |a: &[i32], y: &mut [u8]| pc.requant_with(&cc, o, a, y);
                    // SAFETY: as above.
                    unsafe { out.write(requant, &acc, (n * s.c_out + o) * plane_out) };
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
                    let requant = |a: &[i32], y: &mut [u8]| pc.requant_with(&cc, o, a, y);
                    // SAFETY: as above.
                    unsafe { out.write(requant, &acc, (n * s.c_out + o) * plane_out) };
                }
            }
        }
    });
}

/// The int16 pair bounds of the weight lanes `lanes` ([`pack_vnni`]), see `int8::PairBounds`.
pub(super) fn pair_bounds(lanes: &[i32]) -> super::int8::PairBounds {
    let quads = lanes.iter().map(|w| w.to_le_bytes().map(|b| b as i8));
    super::int8::PairBounds::of(quads)
}

/// Whether AVX2's `vpmaddubsw` computes the VNNI kernels' `vpdpbusd` exactly for input `x`:
/// no pair of weight lanes with bounds `pairs` ([`pair_bounds`]) can leave int16 with the
/// largest u8 activation of `x` (or its zero point, the padding).
pub(super) fn maddubs_exact(pairs: super::int8::PairBounds, x: &[u8], x_qp: &QParams) -> bool {
    let (flip, z) = super::int8::flip_and_z(x_qp);
    pairs.exact_for(super::int8::act_max(x, flip, z as u8))
}

/// The epilogue constants of every channel for the small-plane kernels
/// (`x86::dw_i8_small_avxvnni`, `x86::dw_i8_small_avx512`) where they run conv `s` (bytes
/// out): the `vnni` lanes exist, the shape fits `x86::DwSmall`, and either AVX-512 VNNI (the
/// zmm kernel, every epilogue record), or the ymm kernels where every channel's formula is a
/// float one with finite constants and `ymm_dot` (the caller found that the ymm `vpdpbusd`
/// kernels run this input: AVX-VNNI, or AVX2 where [`maddubs_exact`], decided once per
/// call). On AVX-512 VNNI they run before the channels-in-lanes quads (one thread, Intel
/// Xeon: 960x7x7 0.036 → 0.022 ms, 576x14x14 stride 2 0.034 → 0.015 ms).
#[cfg(target_arch = "x86_64")]
pub(super) fn small_ks<'a>(
    pc: &PackedConv2d,
    cc: &'a super::CallConsts,
    s: &ConvShape,
    ymm_dot: bool,
) -> Option<&'a [super::x86::Requant512]> {
    let vnni = matches!(&pc.kind, super::Kind::Depthwise { vnni: Some(_), .. });
    if !vnni || !super::x86::DwSmall::fits(s) {
        return None;
    }
    match pc.isa {
        Isa::Avx512Vnni => cc.requant.as_deref(),
        Isa::AvxVnni | Isa::Avx2 if ymm_dot => cc.requant_ymm.as_deref(),
        _ => None,
    }
}

/// The int8 depthwise conv on AVX-VNNI, on AVX2 where [`maddubs_exact`], and on
/// `neon-dotprod` (unit strides and column dilation, every `w − ζ` an i8: the lanes of
/// [`pack_vnni`]): per (batch, group) the flat padded plane of `u = x ^ flip` (`z` at padded
/// positions, as for `x86::dw_i8_flat`; for `sdot`, signed bytes `u ^ 0x80`, see the
/// `aarch64` module), then per output channel the flat kernel's accumulators of every flat
/// position (blocks of 32 positions on x86, 16 on NEON), requantized in one pass over the
/// flat positions, and the real outputs' rows copied out (`SinkPtr::write_rows`: +12% on AVX2
/// and +19% on AVX-VNNI against gathering the rows' accumulators before requantizing them).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[allow(clippy::too_many_arguments)]
fn run_int8_flat(
    pc: &PackedConv2d,
    lanes: &[i32],
    x: &[u8],
    x_qp: &QParams,
    s: &ConvShape,
    threads: Option<usize>,
    out: super::SinkPtr,
) {
    let p = &s.params;
    let (kh, kw) = (s.kh, s.kw);
    let ng = column_groups(kw);
    let (g, cog) = (p.groups, s.c_out_per_group());
    let (ph, pw) = (p.padding[0], p.padding[1]);
    let (wp, hp) = (s.w + 2 * pw, s.h + 2 * ph);
    let plane_in = s.h * s.w;
    let plane_out = s.h_out * s.w_out;
    // Positions per block of the kernel.
    const BLOCK: usize = if cfg!(target_arch = "x86_64") { 32 } else { 16 };
    let blocks = (s.h_out * wp).div_ceil(BLOCK);
    let row_step = p.dilation[0] * wp;
    // Every read of the kernel (see its `# Safety`).
    let flat_len = (hp * wp).max(BLOCK * blocks + 4 * ng + (kh - 1) * row_step + BLOCK);
    #[cfg(target_arch = "aarch64")]
    let kernel = match ng {
        1 => super::aarch64::dw_i8_flat_sdot::<1>,
        2 => super::aarch64::dw_i8_flat_sdot::<2>,
        _ => super::aarch64::dw_i8_flat_sdot::<4>,
    };
    #[cfg(target_arch = "x86_64")]
    use super::x86::{dw_i8_flat_avxvnni, dw_i8_flat_avxvnni_evex, dw_i8_flat_maddubs};
    #[cfg(target_arch = "x86_64")]
    let kernel = match (pc.isa, super::int8::vex_vnni(), ng) {
        (Isa::Avx2, _, 1) => dw_i8_flat_maddubs::<1>,
        (Isa::Avx2, _, 2) => dw_i8_flat_maddubs::<2>,
        (Isa::Avx2, _, _) => dw_i8_flat_maddubs::<4>,
        (_, true, 1) => dw_i8_flat_avxvnni::<1>,
        (_, true, 2) => dw_i8_flat_avxvnni::<2>,
        (_, true, _) => dw_i8_flat_avxvnni::<4>,
        (_, false, 1) => dw_i8_flat_avxvnni_evex::<1>,
        (_, false, 2) => dw_i8_flat_avxvnni_evex::<2>,
        (_, false, _) => dw_i8_flat_avxvnni_evex::<4>,
    };
    assert!(x.len() >= s.n * s.c_in * plane_in && lanes.len() >= s.c_out * kh * ng);
    let (flip, z) = super::int8::flip_and_z(x_qp);
    // `sdot` reads signed bytes: the plane holds `u ^ 0x80` (`u − 128`).
    let sdot = cfg!(target_arch = "aarch64");
    let (flip, zb) = match sdot {
        true => (flip ^ 0x80, z as u8 ^ 0x80),
        false => (flip, z as u8),
    };
    // Per output channel, cached by the layer per input qparams: the kernel's initial value
    // `−z·Σ w'` (the GEMM's `corr0`; padded taps read `z` and add (z − z)·w' = 0), and the
    // epilogue's vector constants where every channel has them (else `requant_row`'s own).
    let cc = pc.call_consts(x_qp);
    #[cfg(target_arch = "x86_64")]
    let ks_ymm = match out {
        super::SinkPtr::Bytes(_) => cc.requant_ymm.as_deref(),
        super::SinkPtr::Acc(_) => None,
    };
    let ranges = item_ranges(s.n * g, threads);
    par_for(threads, ranges.len(), |task| {
        // `z` at padded positions (written once), the interior rewritten per item.
        let mut plane = vec![zb; flat_len];
        let mut flat_acc = vec![0i32; BLOCK * blocks];
        let mut bytes = vec![0u8; BLOCK * blocks];
        for item in ranges[task].clone() {
            let (n, gi) = (item / g, item % g);
            let src = &x[(n * s.c_in + gi) * plane_in..][..plane_in];
            // SAFETY: both x86 paths here have AVX2 (checked when packing).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                super::x86::copy_rows_xor_avx2(src, s.w, &mut plane, ph * wp + pw, wp, flip)
            };
            #[cfg(target_arch = "aarch64")]
            for (row, dst) in src
                .chunks_exact(s.w)
                .zip(plane[ph * wp + pw..].chunks_mut(wp))
            {
                for (d, &v) in dst.iter_mut().zip(row) {
                    *d = v ^ flip;
                }
            }
            for o in gi * cog..(gi + 1) * cog {
                let wts = &lanes[o * kh * ng..(o + 1) * kh * ng];
                // `sdot`'s sums lack `128·Σ w'` (the lanes' bytes, 0 past the kernel).
                let shift = || -> i32 {
                    let bytes = wts.iter().flat_map(|w| w.to_le_bytes());
                    bytes.map(|b| b as i8 as i32).sum::<i32>().wrapping_mul(128)
                };
                let init = match sdot {
                    true => cc.corr0[o].wrapping_add(shift()),
                    false => cc.corr0[o],
                };
                let base = (n * s.c_out + o) * plane_out;
                let geo = (wp, s.h_out, s.w_out);
                // The epilogue in the kernel where the channel has ymm constants: bytes.
                #[cfg(target_arch = "x86_64")]
                if let Some(ks) = ks_ymm {
                    // SAFETY: as below; `bytes` holds BLOCK values per block, the constants
                    // are the layer's (`requant_ymm`: every channel `ymm_tile_ready`), and
                    // output channel o of batch n belongs to this task only.
                    unsafe {
                        let dst = super::x86::DwYmmOut::Bytes(&ks[o], &mut bytes);
                        kernel(plane.as_ptr(), row_step, blocks, wts, kh, init, dst);
                        out.write_byte_rows(&bytes, geo, base);
                    }
                    continue;
                }
                #[cfg(target_arch = "x86_64")]
                let dst = super::x86::DwYmmOut::Acc(&mut flat_acc);
                #[cfg(target_arch = "aarch64")]
                let dst = &mut flat_acc;
                // SAFETY: the ISA was checked when packing; the plane holds `flat_len` bytes,
                // `flat_acc` BLOCK values per block, `wts` kh·ng words.
                unsafe { kernel(plane.as_ptr(), row_step, blocks, wts, kh, init, dst) };
                // SAFETY: output channel o of batch n belongs to this task only.
                unsafe {
                    let requant = |a: &[i32], y: &mut [u8]| pc.requant_with(&cc, o, a, y);
                    out.write_rows(requant, &flat_acc, geo, base, &mut bytes)
                };
            }
        }
    });
}

/// The int8 depthwise conv at column stride 2 on AVX-VNNI, and on AVX2 where
/// [`maddubs_exact`] (`lanes` from [`pack_vnni`], one column group, every channel's epilogue
/// `ks` ready for the ymm registers): per (batch, group) the padded plane of `u = x ^ flip`
/// (`z` at padded positions, as for the flat kernel), then `x86::dw_i8_s2_avxvnni` per output
/// channel, straight into the output. One thread, Intel Xeon: MobileNetV2's stride-2 layers
/// ran the f32 channels-in-lanes kernel on converted inputs (576x14x14 0.060 ms, 0.66x the
/// f32 conv) or the pairs kernel (144x56x56 0.124 ms, 1.0x).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn run_int8_s2(
    pc: &PackedConv2d,
    lanes: &[i32],
    cc: &super::CallConsts,
    ks: &[super::x86::Requant512],
    x: &[u8],
    x_qp: &QParams,
    s: &ConvShape,
    threads: Option<usize>,
    out: super::SinkPtr,
) {
    use super::x86::{dw_i8_s2_avxvnni, dw_i8_s2_avxvnni_evex, dw_i8_s2_maddubs};
    let p = &s.params;
    let kh = s.kh;
    let (g, cog) = (p.groups, s.c_out_per_group());
    let (ph, pw) = (p.padding[0], p.padding[1]);
    let (wp, hp) = (s.w + 2 * pw, s.h + 2 * ph);
    let (plane_in, plane_out) = (s.h * s.w, s.h_out * s.w_out);
    let (row_step, sy_step) = (p.dilation[0] * wp, p.stride[0] * wp);
    // Every read of the kernel (its `# Safety`).
    let len = (hp * wp).max((s.h_out - 1) * sy_step + (kh - 1) * row_step + 2 * s.w_out + 24);
    assert!(s2_eligible(p, s.kw) && lanes.len() >= s.c_out * kh && ks.len() >= s.c_out);
    assert!(x.len() >= s.n * s.c_in * plane_in);
    let kernel = match (pc.isa, super::int8::vex_vnni()) {
        (Isa::Avx2, _) => dw_i8_s2_maddubs,
        (_, true) => dw_i8_s2_avxvnni,
        (_, false) => dw_i8_s2_avxvnni_evex,
    };
    let super::SinkPtr::Bytes(y) = out else {
        unreachable!("the caller checked a byte output");
    };
    let (flip, z) = super::int8::flip_and_z(x_qp);
    let ranges = item_ranges(s.n * g, threads);
    par_for(threads, ranges.len(), |task| {
        // `z` at padded positions (written once), the interior rewritten per item.
        let mut plane = vec![z as u8; len];
        for item in ranges[task].clone() {
            let (n, gi) = (item / g, item % g);
            let src = &x[(n * s.c_in + gi) * plane_in..][..plane_in];
            // SAFETY: both paths here have AVX2 (checked when packing).
            unsafe { super::x86::copy_rows_xor_avx2(src, s.w, &mut plane, ph * wp + pw, wp, flip) };
            for o in gi * cog..(gi + 1) * cog {
                // SAFETY: the ISA was checked when packing; the plane holds every byte the
                // kernel reads (`len`), `lanes` kh words per channel, `ks[o]` is ready for
                // the ymm registers (`requant_ymm`); output channel o of batch n lies in the
                // output and belongs to this task only.
                unsafe {
                    let y = &y; // (the whole `Send` wrapper, not its pointer field)
                    let dst = y.0.add((n * s.c_out + o) * plane_out);
                    let w = &lanes[o * kh..(o + 1) * kh];
                    let geo = (s.h_out, s.w_out);
                    let init = cc.corr0[o];
                    kernel(
                        plane.as_ptr(),
                        (row_step, sy_step),
                        geo,
                        w,
                        kh,
                        init,
                        &ks[o],
                        dst,
                    )
                };
            }
        }
    });
}

/// The kernels [`run_int8_rows`] drives (`x86::dw_i8_small_avx512` and its ymm forms over
/// `x86::DwSmall`, `x86::dw_i8_rows_avx512` over `x86::DwRows`): a run of channels,
/// straight from the input into the output, the arguments of `x86::dw_i8_small_avx512`.
#[cfg(target_arch = "x86_64")]
type RowsKernel<G> = unsafe fn(
    &G,
    (*const u8, usize),
    &[i32],
    usize,
    &[i32],
    &[super::x86::Requant512],
    (*mut u8, usize),
);

/// The small-plane kernel of `isa` (see [`run_int8_rows`]).
#[cfg(target_arch = "x86_64")]
fn small_kernel(isa: Isa) -> RowsKernel<super::x86::DwSmall> {
    use super::x86::{
        dw_i8_small_avx512, dw_i8_small_avxvnni, dw_i8_small_avxvnni_evex, dw_i8_small_maddubs,
    };
    match (isa, super::int8::vex_vnni()) {
        (Isa::Avx2, _) => dw_i8_small_maddubs,
        (Isa::Avx512Vnni, _) => dw_i8_small_avx512,
        (_, true) => dw_i8_small_avxvnni,
        (_, false) => dw_i8_small_avxvnni_evex,
    }
}

/// The int8 depthwise conv on the row kernels that read the input in place and write the
/// output directly (`lanes` from [`pack_vnni`], one column group; `ks` the epilogue records
/// the kernel takes; `reads` the bytes from a plane's start that it reads):
/// * small output planes (`x86::DwSmall`: rows of at most 8 pixels, `kw ≤ 4`, input rows of
///   at most 16 bytes; MobileNetV2's 7×7 outputs): `x86::dw_i8_small_avx512` on AVX-512
///   VNNI, `x86::dw_i8_small_avxvnni` (or its EVEX or `vpmaddubsw` form) on the ymm paths
///   ([`small_kernel`]); the flat kernel copied each plane into a padded one and its output
///   rows out of another (960x7x7, one thread, Intel Xeon with AVX-VNNI: 0.87x the f32 conv);
/// * rows of at most 32 pixels on AVX-512 VNNI + VBMI (`x86::DwRows`, MobileNetV2's 14×14
///   and 28×28 outputs): `x86::dw_i8_rows_avx512`.
///
/// One kernel call per run of channels of one image; nothing is built per channel but the
/// kernel's row vectors. The input's last planes, whose last rows' loads would pass its end
/// (`reads` beyond the plane), are read from a copy.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn run_int8_rows<G: Sync>(
    (geo, reads, kernel): (&G, usize, RowsKernel<G>),
    lanes: &[i32],
    cc: &super::CallConsts,
    ks: &[super::x86::Requant512],
    x: &[u8],
    s: &ConvShape,
    threads: Option<usize>,
    out: super::SinkPtr,
) {
    let kh = s.kh;
    let (g, cog) = (s.params.groups, s.c_out_per_group());
    let (plane_in, plane_out) = (s.h * s.w, s.h_out * s.w_out);
    assert!(s.kw <= 4 && lanes.len() >= s.c_out * kh && ks.len() >= s.c_out);
    assert!(x.len() >= s.n * s.c_in * plane_in && reads >= plane_in);
    let super::SinkPtr::Bytes(y) = out else {
        unreachable!("the caller checked a byte output");
    };
    // Item `i` (batch `i / g`, group `i % g`; one input channel per group) has its plane at
    // `i·plane_in`; the items below `fit` are read in place, the others (the input's last
    // planes) from a copy.
    let fit = match x.len().checked_sub(reads) {
        Some(room) => room / plane_in + 1,
        None => 0,
    };
    let ranges = item_ranges(s.n * g, threads);
    par_for(threads, ranges.len(), |task| {
        let y = &y; // (the whole `Send` wrapper, not its pointer field)
        let mut copy = Vec::new();
        let r = ranges[task].clone();
        let mut i = r.start;
        while i < r.end {
            let (n, gi) = (i / g, i % g);
            // One call for the run of items of one image read in place (`cog == 1`: item
            // `i`'s output plane is plane `i`), else one per item for its `cog` channels.
            let (src, src_step, end) = if i >= fit {
                copy.clear();
                copy.extend_from_slice(&x[i * plane_in..(i + 1) * plane_in]);
                copy.resize(reads, 0);
                (copy.as_ptr(), 0, i + 1)
            } else if cog == 1 {
                (
                    x[i * plane_in..].as_ptr(),
                    plane_in,
                    r.end.min((n + 1) * g).min(fit),
                )
            } else {
                (x[i * plane_in..].as_ptr(), 0, i + 1)
            };
            let (o0, o1) = (gi * cog, (gi + end - i) * cog);
            // SAFETY: the ISA was checked when packing (and VBMI by the caller of the row
            // kernel); every plane read lies in the input (items below `fit`) or in `copy`
            // (`reads` bytes); `lanes` holds kh words per channel; `ks` holds what the kernel
            // needs (`small_ks`: ymm-ready records on the ymm paths, any on AVX-512), all of
            // the layer's formula; output channels o0..o1
            // of batch n lie in the output
            // (`o1 ≤ c_out`: the run stays in image n) and belong to this task only.
            unsafe {
                let dst = y.0.add((n * s.c_out + o0) * plane_out);
                kernel(
                    geo,
                    (src, src_step),
                    &lanes[o0 * kh..o1 * kh],
                    kh,
                    &cc.corr0[o0..o1],
                    &ks[o0..o1],
                    (dst, plane_out),
                )
            };
            i = end;
        }
    });
}

/// The int8 depthwise conv on AVX2 with unit column stride, or column stride 2 without
/// column dilation, when every `d = x − x_zp` and every `w' = w − ζ` fits an i16 (always, for
/// zero points inside the dtype ranges): per (batch, group) a pair plane of `d` (module
/// docs), then [`channel_pairs`] and the requantization of each output channel. A pair sum
/// `d₀·w'₀ + d₁·w'₁` is below `2·32767² < 2^31`, exact, and `run`'s accumulator-overflow check
/// keeps the sums exact.
///
/// At column stride 2 the padded plane of `d` as i16 (its width even, [`Plane::new`]) read as
/// i32 *is* the pair plane of the even columns: i32 `k` of a row holds `(d[2k], d[2k + 1])`,
/// and output column `ox` reads columns `2ox + 2j`, `2ox + 2j + 1` for tap pair `j`, i32
/// `ox + j`; nothing is built besides the plane (stride 2 MobileNetV2 layers ran the f32
/// kernel on converted inputs before, slower than the f32 conv).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn run_int8_pairs(
    pc: &PackedConv2d,
    cc: &super::CallConsts,
    wprime: &[i32],
    x: &[u8],
    (flip, z): (u8, i32),
    s: &ConvShape,
    threads: Option<usize>,
    out: super::SinkPtr,
) {
    let pl = Plane::new(s);
    let taps = s.kh * s.kw;
    let (g, cog) = (s.params.groups, s.c_out_per_group());
    let plane_out = s.h_out * s.w_out;
    let (sy, sx) = (s.params.stride[0], s.params.stride[1]);
    let (dh, dw) = (s.params.dilation[0], s.params.dilation[1]);
    // Stride 2: the plane of `d` read as i32 (see above); the row step and offsets in i32.
    let direct = sx == 2;
    assert!(sx == 1 || (direct && dw == 1 && pl.wp.is_multiple_of(2)));
    let (rs, offs) = match direct {
        true => {
            let half = pl.wp / 2;
            let offs =
                (0..s.kh).flat_map(|ky| (0..s.kw.div_ceil(2)).map(move |j| ky * dh * half + j));
            (sy * half, offs.collect())
        }
        false => (sy * pl.wp, pair_offsets(s, &pl)),
    };
    let len = pairs_len(s, rs, &offs).max(pl.len());
    let wpairs: Vec<Vec<i32>> = (0..s.c_out)
        .map(|o| pair_weights(&wprime[o * taps..(o + 1) * taps], s.kh, s.kw))
        .collect();
    let ranges = item_ranges(s.n * g, threads);
    par_for(threads, ranges.len(), |task| {
        // The padding of `d` stays zero across items; only its interior is rewritten (at
        // stride 2 `d` is `pairs` itself, read as i16).
        let mut d = vec![0i16; if direct { 0 } else { pl.len() + dw }];
        let mut pairs = vec![0i32; len];
        let mut acc = vec![0i32; plane_out];
        for item in ranges[task].clone() {
            let (n, gi) = (item / g, item % g);
            let src = &x[(n * s.c_in + gi) * s.h * s.w..][..s.h * s.w];
            // SAFETY (all): every non-portable ISA includes AVX2 (checked when chosen).
            let fill = |row: &[u8], dst: &mut [i16]| unsafe {
                super::x86::bytes_to_i16_avx2(row, flip, z, dst)
            };
            if direct {
                pl.fill_rows(s, src, bytemuck::cast_slice_mut(&mut pairs), fill);
            } else {
                pl.fill_rows(s, src, &mut d, fill);
                unsafe { super::x86::pair_plane_avx2(&d, dw, &mut pairs) };
            }
            for (o, w) in wpairs.iter().enumerate().skip(gi * cog).take(cog) {
                channel_pairs(s, &pairs, rs, &offs, w, &mut acc);
                let requant = |a: &[i32], y: &mut [u8]| pc.requant_with(cc, o, a, y);
                // SAFETY: output channel o of batch n belongs to this task only.
                unsafe { out.write(requant, &acc, (n * s.c_out + o) * plane_out) };
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
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86_simd() {
        // SAFETY: every non-portable path includes AVX2 (checked when chosen).
        return unsafe { super::x86::bytes_to_f32_avx2(src, flip, z, dst) };
    }
    let _ = isa;
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = ((b ^ flip) as i32 - z) as f32;
    }
}

/// The f32 depthwise conv (one input channel per group): `out` is NCHW.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_f32(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    lanes_w: &std::sync::OnceLock<Vec<f32>>,
    bias: Option<&[f32]>,
    clamp: Option<super::F32Clamp>,
    s: &ConvShape,
    threads: Option<usize>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && direct_3x3_applies(s) {
        return run_f32_3x3(x, w, bias, clamp, s, threads, out);
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86_simd() && s.c_out_per_group() == 1 && lanes_f32_preferred(isa, s) {
        let wl = lanes_w.get_or_init(|| pack_lanes(w, s.c_out, s.kh * s.kw, isa));
        return run_f32_lanes(isa, x, wl, bias, clamp, s, threads, out);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = lanes_w;
    let pl = Plane::new(s);
    let taps = s.kh * s.kw;
    let (g, cog) = (s.params.groups, s.c_out_per_group());
    let plane_out = s.h_out * s.w_out;
    let outp = SendPtr(out.as_mut_ptr());
    let ranges = item_ranges(s.n * g, threads);
    par_for(threads, ranges.len(), |task| {
        let (mut plane, mut phases, mut tmp) = (Vec::new(), Vec::new(), Vec::new());
        for item in ranges[task].clone() {
            let (n, gi) = (item / g, item % g);
            let src = &x[(n * s.c_in + gi) * s.h * s.w..][..s.h * s.w];
            let input = pl.prepare(isa, s, Image::F32(src), &mut plane, &mut phases, &mut tmp);
            for o in gi * cog..(gi + 1) * cog {
                // SAFETY: output channel o of batch n belongs to this task only.
                let dst = unsafe { outp.slice((n * s.c_out + o) * plane_out, plane_out) };
                let b = bias.map_or(0.0, |b| b[o]);
                let w = &w[o * taps..(o + 1) * taps];
                channel::<false>(isa, s, &pl, input, w, b, dst);
                // The plane was just written (in L2).
                if let Some(c) = clamp {
                    c.apply_slice(dst);
                }
            }
        }
    });
}

/// Whether [`run_f32_3x3`] runs `s` on AVX-512: a 3x3 depthwise conv (one channel per group)
/// with padding 1, no dilation and strides 1 with rows of 14 outputs or more, or 2 with rows
/// of 6 or more. One thread, Intel Xeon, medians of 400 runs, MobileNetV2's layers against
/// the paths before: stride 2, 96x112x112 0.56 → 0.23 ms and 144x56x56 0.12 → 0.078 (split
/// planes), 192x28x28 0.055 → 0.017 and 576x14x14 0.034 → 0.026 (channels in lanes); stride
/// 1, 32x112x112 0.31 → 0.20, 144x56x56 0.35 → 0.24, 192x28x28 0.118 → 0.074 (padded
/// planes), 384x14x14 0.073 → 0.040 and 576x14x14 0.10 → 0.069 (channels in lanes). Below
/// those rows the channels in the lanes were faster or even: 960x7x7 0.062 against 0.094,
/// 960x8x8 stride 2 0.021 against 0.028, 960x10x10 and 960x12x12 at unit stride either way
/// in repeated runs.
#[cfg(target_arch = "x86_64")]
fn direct_3x3_applies(s: &ConvShape) -> bool {
    let p = &s.params;
    let shape = (s.kh, s.kw) == (3, 3)
        && p.padding == [1, 1]
        && p.dilation == [1, 1]
        && s.c_in_per_group() == 1
        && s.c_out_per_group() == 1;
    shape
        && match p.stride {
            [1, 1] => s.w_out >= 14,
            [2, 2] => s.w_out >= 6,
            _ => false,
        }
}

/// [`run_f32`] of a conv where [`direct_3x3_applies`], on AVX-512: each channel straight from
/// its input plane (`x86::dw3x3_f32_avx512`, the clamp fused),
/// without the padded or phase-split copy of the plane, or the transpositions of the
/// channels-in-lanes kernel, that cost more than the FMAs.
#[cfg(target_arch = "x86_64")]
fn run_f32_3x3(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    clamp: Option<super::F32Clamp>,
    s: &ConvShape,
    threads: Option<usize>,
    out: &mut [f32],
) {
    let (plane_in, plane_out) = (s.h * s.w, s.h_out * s.w_out);
    let sx = s.params.stride[1];
    assert!(s.h_out == s.h.div_ceil(sx) && s.w_out == s.w.div_ceil(sx));
    assert!(x.len() >= s.n * s.c_in * plane_in && w.len() >= s.c_out * 9);
    let kernel = match sx {
        1 => super::x86::dw3x3_f32_avx512::<1>,
        _ => super::x86::dw3x3_f32_avx512::<2>,
    };
    let clamp = clamp.map(|c| (c.lo, c.hi));
    let outp = SendPtr(out.as_mut_ptr());
    let ranges = item_ranges(s.n * s.c_out, threads);
    par_for(threads, ranges.len(), |task| {
        for item in ranges[task].clone() {
            let o = item % s.c_out;
            // SAFETY: output plane `item` (batch item / C, channel o) belongs to this task.
            let dst = unsafe { outp.slice(item * plane_out, plane_out) };
            let src = &x[item * plane_in..][..plane_in];
            let b = bias.map_or(0.0, |b| b[o]);
            // SAFETY: the path's ISA (AVX-512) was checked available when chosen.
            unsafe { kernel(src, s.h, s.w, &w[o * 9..][..9], b, clamp, dst) };
        }
    });
}

/// A kernel of [`run_f32_lanes`] (see `x86::dw_f32_lanes_avx512`).
#[cfg(target_arch = "x86_64")]
type LanesKernel = unsafe fn(
    *const f32,
    usize,
    usize,
    &super::x86::LanesGeom,
    &[f32],
    &[f32],
    &mut [f32],
    &mut [f32],
    *mut f32,
    usize,
);

/// Whether the f32 depthwise conv on path `isa` runs with the channels in the lanes
/// ([`run_f32_lanes`]), for the small planes whose rows fill few lanes of a vector. One
/// thread, 3x3, channel by channel → channels in lanes (output allocation included):
/// AVX-512 (16 lanes), 960x7x7 46 → 26 µs, 576x14x14 51 → 41, 384x14x14 32 → 27, stride 2
/// 576x14x14 40 → 24: input planes of 256 pixels or fewer. AVX2 (8 lanes, a row of 7 or 14
/// fills more of them): 960x7x7 40 → 31, stride 2 576x14x14 35 → 32, but 576x14x14 55 → 62,
/// 384x14x14 36 → 41: output planes of 64 pixels or fewer. Since the kernel's weights are
/// packed once and its rows stored without a `memcpy` call, strided convs with output planes
/// of 196 pixels or fewer too (stride 2 192x28x28: 28.5 → 18.8 µs on AVX-512, 27.7 → 24.5 on
/// AVX2; at 28x28 outputs, 144x56x56 stride 2, channel by channel stays faster: 66 against
/// 72).
#[cfg(target_arch = "x86_64")]
fn lanes_f32_preferred(isa: Isa, s: &ConvShape) -> bool {
    let strided_small = s.params.stride != [1, 1] && s.h_out * s.w_out <= 196;
    match isa {
        Isa::Avx512Vnni => s.h * s.w <= 256 || strided_small,
        _ => s.h_out * s.w_out <= 64 || strided_small,
    }
}

/// The f32 depthwise conv (one input channel and one output channel per group) by blocks of
/// channels in the lanes of the path's vectors (16 in `x86::dw_f32_lanes_avx512`, 8 in
/// `x86::dw_f32_lanes_avx2`): the same bits as [`run_f32`]'s channel-by-channel kernels, per
/// lane the same operations.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
fn run_f32_lanes(
    isa: Isa,
    x: &[f32],
    wl: &[f32],
    bias: Option<&[f32]>,
    clamp: Option<super::F32Clamp>,
    s: &ConvShape,
    threads: Option<usize>,
    out: &mut [f32],
) {
    let pl = Plane::new(s);
    let (c, taps) = (s.c_out, s.kh * s.kw);
    let (plane_in, plane_out) = (s.h * s.w, s.h_out * s.w_out);
    assert!(
        s.c_in == c
            && s.params.groups == c
            && x.len() >= s.n * c * plane_in
            && out.len() >= s.n * c * plane_out
    );
    let geom = lanes_geom(s, &pl);
    let (lanes, kernel) = lanes_kernel(isa);
    let blocks = c.div_ceil(lanes);
    assert!(wl.len() >= blocks * taps * lanes);
    let outp = SendPtr(out.as_mut_ptr());
    let ranges = item_ranges(s.n * blocks, threads);
    par_for(threads, ranges.len(), |task| {
        let mut xin = vec![0f32; pl.hp * pl.wp * lanes];
        let mut obuf = vec![0f32; plane_out.next_multiple_of(lanes) * lanes];
        let mut b = vec![0f32; lanes];
        let outp = &outp;
        for item in ranges[task].clone() {
            let (n, c0) = (item / blocks, item % blocks * lanes);
            let nch = lanes.min(c - c0);
            let wts = &wl[c0 * taps..][..taps * lanes];
            for (l, v) in b.iter_mut().enumerate() {
                *v = if l < nch {
                    bias.map_or(0.0, |b| b[c0 + l])
                } else {
                    0.0
                };
            }
            let base = (n * c + c0) * plane_out;
            // SAFETY: the path's ISA (AVX-512, or AVX2 + FMA) was checked when the layer was
            // packed; channels c0 .. c0 + nch of image n lie in `x` and `out` (asserted
            // above), and this item's output planes are written by this task only; the
            // buffers have the sizes the kernel needs (`hp` covers every tap of every output:
            // the conv's geometry).
            unsafe {
                kernel(
                    x[(n * c + c0) * plane_in..].as_ptr(),
                    plane_in,
                    nch,
                    &geom,
                    wts,
                    &b,
                    &mut xin,
                    &mut obuf,
                    outp.0.add(base),
                    plane_out,
                )
            };
            if let Some(cl) = clamp {
                // SAFETY: as above.
                cl.apply_slice(unsafe { outp.slice(base, nch * plane_out) });
            }
        }
    });
}

/// The geometry of the channels-in-lanes kernels for shape `s` and its padded plane `pl`.
#[cfg(target_arch = "x86_64")]
fn lanes_geom<'a>(s: &ConvShape, pl: &'a Plane) -> super::x86::LanesGeom<'a> {
    super::x86::LanesGeom {
        h: s.h,
        w: s.w,
        ph: s.params.padding[0],
        pw: s.params.padding[1],
        wp: pl.wp,
        h_out: s.h_out,
        w_out: s.w_out,
        sy: s.params.stride[0],
        sx: s.params.stride[1],
        offs: &pl.offs,
    }
}

/// Channels per block and the channels-in-lanes kernel of path `isa` (AVX-512: 16, AVX2: 8).
#[cfg(target_arch = "x86_64")]
fn lanes_kernel(isa: Isa) -> (usize, LanesKernel) {
    match isa {
        Isa::Avx512Vnni => (16, super::x86::dw_f32_lanes_avx512 as LanesKernel),
        _ => (8, super::x86::dw_f32_lanes_avx2 as LanesKernel),
    }
}

/// The weights `w` (`taps` per channel, `c` channels) of the channels-in-lanes kernels on path
/// `isa`: per block of [`lanes_kernel`] channels, `[t][lane]`, 0 past the last channel. Packed
/// once per layer (its `OnceLock`): gathering them per call took 15% of a 960x7x7 conv.
#[cfg(target_arch = "x86_64")]
pub(super) fn pack_lanes(w: &[f32], c: usize, taps: usize, isa: Isa) -> Vec<f32> {
    let lanes = lanes_kernel(isa).0;
    let mut out = vec![0f32; c.div_ceil(lanes) * taps * lanes];
    for (o, wo) in w.chunks_exact(taps).take(c).enumerate() {
        for (t, &v) in wo.iter().enumerate() {
            out[((o / lanes) * taps + t) * lanes + o % lanes] = v;
        }
    }
    out
}

/// The int8 depthwise conv (one input and one output channel per group) through the f32
/// channels-in-lanes kernel, on the small planes where it is preferred (see
/// [`lanes_f32_preferred`]): per block of channels, the inputs as `u − z` in f32 (0 at padded
/// positions, as the kernel pads), the weights `w' = w − ζ` (`wl`, from [`pack_lanes`]), no
/// bias; every product and partial sum is an integer of magnitude at most 2^24 (the caller
/// checked the bound), so the f32 sums are the exact accumulators, which are then
/// requantized: six channels per call of the GEMM's tile epilogue (`x86::requant_tile_avx2`,
/// the layer's cached constants) on planes of 64 outputs or fewer, else channel by channel.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn run_int8_lanes(
    pc: &PackedConv2d,
    cc: &super::CallConsts,
    wl: &[f32],
    x: &[u8],
    (flip, z): (u8, i32),
    s: &ConvShape,
    threads: Option<usize>,
    out: super::SinkPtr,
) {
    let pl = Plane::new(s);
    let (c, taps) = (s.c_out, s.kh * s.kw);
    let (plane_in, plane_out) = (s.h * s.w, s.h_out * s.w_out);
    assert!(s.c_in == c && s.params.groups == c && x.len() >= s.n * c * plane_in);
    let geom = lanes_geom(s, &pl);
    let (lanes, kernel) = lanes_kernel(pc.isa);
    let blocks = c.div_ceil(lanes);
    assert!(wl.len() >= blocks * taps * lanes);
    let ks_tile = cc.requant_ymm.as_deref().filter(|_| plane_out <= 64);
    let ranges = item_ranges(s.n * blocks, threads);
    par_for(threads, ranges.len(), |task| {
        let mut xin = vec![0f32; pl.hp * pl.wp * lanes];
        let mut obuf = vec![0f32; plane_out.next_multiple_of(lanes) * lanes];
        let b = vec![0f32; lanes];
        let (mut xf, mut accf) = (vec![0f32; lanes * plane_in], vec![0f32; lanes * plane_out]);
        let mut acc = vec![0i32; plane_out];
        for item in ranges[task].clone() {
            let (n, c0) = (item / blocks, item % blocks * lanes);
            let nch = lanes.min(c - c0);
            let wts = &wl[c0 * taps..][..taps * lanes];
            let src = &x[(n * c + c0) * plane_in..][..nch * plane_in];
            bytes_to_f32(pc.isa, src, flip, z, &mut xf[..nch * plane_in]);
            // SAFETY: the path's ISA (AVX-512, or AVX2 + FMA) was checked when the layer was
            // packed; `xf` holds the `nch` input planes and `accf` the `nch` output planes;
            // the buffers have the sizes the kernel needs (as in `run_f32_lanes`).
            unsafe {
                kernel(
                    xf.as_ptr(),
                    plane_in,
                    nch,
                    &geom,
                    wts,
                    &b,
                    &mut xin,
                    &mut obuf,
                    accf.as_mut_ptr(),
                    plane_out,
                )
            };
            // Planes of 64 outputs or fewer into stored bytes: six channels per call of the
            // GEMM's tile epilogue, with the layer's cached constants.
            if let (Some(ks), super::SinkPtr::Bytes(b)) = (ks_tile, out) {
                let runs = [(0, 0, plane_out)];
                for r0 in (0..nch).step_by(6) {
                    let nr = 6.min(nch - r0);
                    let mut tile = [[0i32; 64]; 6];
                    let planes = accf.chunks_exact(plane_out).skip(r0).take(nr);
                    for (row, a) in tile.iter_mut().zip(planes) {
                        // SAFETY: exact integers, |a| ≤ 2^24 (checked by the caller).
                        row.iter_mut()
                            .zip(a)
                            .for_each(|(d, &v)| *d = unsafe { v.to_int_unchecked::<i32>() });
                    }
                    let o = c0 + r0;
                    // SAFETY: AVX2 (both ymm paths) was checked when packing; every channel's
                    // constants are ready (`requant_ymm`); the run is each of channels
                    // o .. o + nr's whole plane, written by this task only.
                    unsafe {
                        super::x86::requant_tile_avx2(
                            &ks[o..o + nr],
                            &tile,
                            plane_out,
                            &runs,
                            b.0.add((n * c + o) * plane_out),
                            plane_out,
                        )
                    };
                }
                continue;
            }
            for (l, a) in accf.chunks_exact(plane_out).take(nch).enumerate() {
                // SAFETY: exact integers, |a| ≤ 2^24 (checked by the caller): in range.
                acc.iter_mut()
                    .zip(a)
                    .for_each(|(d, &v)| *d = unsafe { v.to_int_unchecked::<i32>() });
                let o = c0 + l;
                let requant = |a: &[i32], y: &mut [u8]| pc.requant_with(cc, o, a, y);
                // SAFETY: output channel o of batch n belongs to this task only.
                unsafe { out.write(requant, &acc, (n * c + o) * plane_out) };
            }
        }
    });
}
