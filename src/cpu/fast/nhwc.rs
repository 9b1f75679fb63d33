//! The GEMM convs with output channels in the vector lanes, for small output planes: int8
//! ([`run`], AVX-512 VNNI, AVX-VNNI, and AVX2 where `vpmaddubsw` is exact) and f32
//! ([`run_f32`], AVX-512 and AVX2); and the int8 depthwise conv on 7×7 output planes
//! ([`depthwise_quads`], AVX-512 VNNI with VBMI), which shares their epilogue.
//!
//! The direct convs of [`super::int8`] and [`super::float`] put 16 consecutive *flat* output
//! positions in each vector (rows of the padded width), so a plane whose rows are short wastes
//! lanes: on a 14×14 output with one column of padding each side, 2 of every 16 lanes hold
//! discarded positions (12.5%), and tiles of whole vectors round 196 outputs up to 224. Here
//! the vectors hold output channels (64 in 4 zmm; on AVX-VNNI and AVX2: 16 in 2 ymm, 12
//! accumulators of the 16 registers) and the
//! micro-kernel takes 6 output pixels, any 6: the reduction reads, for pixel `m` and tap `t`,
//! the input values of its input pixel (int8: 4-byte channel groups, `vpdpbusd` with a
//! broadcast operand; f32: one channel, `vfmadd231ps` with a broadcast), broadcast to every
//! lane, against one weight row of the tile's channels. No lane is wasted on padding: int8
//! blocks of 60 pixels fill their 6-pixel micro-tiles, and channels are rounded up to the
//! tile. The weights sit on whole cache lines ([`Lines`]).
//!
//! The int8 accumulator is the same folded sum as the flat kernel's (see the module docs of
//! [`super`]): `acc = Σ u·w − z·Σ w` (symmetric weights only: no `Σ u` term), `u` the u8
//! activations of a padded NHWC copy of the input (padding and the channels that round `Cin`
//! up to 4 hold `z`; their weights are 0 or their `(u − z)` is). The kernel leaves each
//! pixel's accumulators in a pixel row; on AVX-512 a block of rows is transposed (16×16
//! blocks in registers) into `[channel][pixel]`, which the AVX-512 epilogue
//! ([`super::x86::requant_tile_avx512`]) requantizes and stores as the flat kernel's tiles;
//! on the ymm paths (and where a channel needs the scalar epilogue) each channel's
//! accumulators are gathered into a row and requantized as the flat kernel's rows are.
//! The f32 kernel does the FMAs of the documented order (taps, then input channels) from 0,
//! as the flat one does, so both layouts give the same bits.
//!
//! Used when its lane efficiency beats the flat layout's by more than its extra costs (the NHWC
//! copy, the transposition, a micro-kernel slower per useful lane on larger planes), see
//! [`prefer`] and [`prefer_f32`]: int8 on 7×7 and 14×14 planes (ResNet's last two stages),
//! f32 on 7×7 to 28×28 planes.

use super::{par_for, Isa, Lines, PackedConv2d, SendPtr};
use crate::quant::QParams;
use crate::shape::ConvShape;

/// Output pixels per micro-kernel call.
const MR: usize = 6;
/// Output pixels per block (one requantization tile row).
const BLOCK: usize = 60;

/// Micro-tiles of the f32 kernel per work item (36 pixels).
const F32_RUN: usize = 6;

/// Output channels per weight row of the int8 kernel on `isa`: 64 (4 zmm) on AVX-512 VNNI, 16
/// (2 ymm) on AVX-VNNI and AVX2.
pub(super) fn int8_lanes(isa: Isa) -> usize {
    match isa {
        Isa::Avx512Vnni => 64,
        _ => 16,
    }
}

/// The weights for the kernel on `isa`: `[channel tile of nc][tap][Cin/4 block][nc
/// channels][4]` i8 ([`int8_lanes`] channels per tile), `w[o][4cb + j][tap]` (0 past `Cout` or
/// `Cin`).
pub(super) fn pack(w: &[i8], s: &ConvShape, isa: Isa) -> Lines {
    let nc = int8_lanes(isa);
    let (cin, cout) = (s.c_in, s.c_out);
    let taps = s.kh * s.kw;
    let ncb = cin.div_ceil(4);
    let tiles = cout.div_ceil(nc);
    let mut lines = Lines::zeroed(tiles * taps * ncb * nc * 4);
    let out = lines.bytes_mut();
    for o in 0..cout {
        let (tile, lane) = (o / nc, o % nc);
        for c in 0..cin {
            for t in 0..taps {
                let at = (((tile * taps + t) * ncb + c / 4) * nc + lane) * 4 + c % 4;
                out[at] = w[(o * cin + c) * taps + t] as u8;
            }
        }
    }
    lines
}

/// Whether the channels-in-lanes kernel should run shape `s` rather than the flat one whose
/// pixel tiles cover `qtot` flat positions with `nr` channels per tile, on `isa`: the fraction
/// of useful lanes of each, the NHWC one discounted by its measured speed per useful lane
/// against the flat kernel, which falls with the plane's size (one thread, AMD EPYC Zen 4/5
/// class, AVX-512 VNNI: 1.0x on 1x512x7x7, 0.96x on 1x256x14x14, 0.92x on 1x128x28x28, 0.85x
/// on 1x64x56x56): 10% off up to 256 output pixels, 20% beyond. So it runs 7×7 (+20%) and
/// 14×14 (+10%) planes.
pub(super) fn prefer(s: &ConvShape, qtot: usize, nr: usize, isa: Isa) -> bool {
    let plane = s.h_out * s.w_out;
    let flat = plane as f64 / qtot as f64 * channel_fill(s.c_out, nr);
    let slots = (plane / BLOCK) * BLOCK.div_ceil(MR) * MR + (plane % BLOCK).div_ceil(MR) * MR;
    let nhwc = plane as f64 / slots as f64 * channel_fill(s.c_out, int8_lanes(isa));
    let discount = if plane <= 256 { 0.9 } else { 0.8 };
    nhwc * discount > flat
}

/// The fraction of useful lanes when `c_out` channels are rounded up to tiles of `tile`.
fn channel_fill(c_out: usize, tile: usize) -> f64 {
    c_out as f64 / (c_out.div_ceil(tile) * tile) as f64
}

/// Copies image `n` of `x` into `buf` as the padded NHWC u8 activations `u = x ^ flip`:
/// `[Hp][Wp][4·⌈Cin/4⌉]`, `z` at padded pixels and channels. Each block of 4 channels is
/// interleaved into quads first, then the quads are written pixel by pixel through 16×16
/// transpositions where `avx512` (the layer's path is AVX-512 VNNI), else 8×8 ones (AVX2).
fn repack(x: &[u8], s: &ConvShape, n: usize, (flip, z): (u8, u8), avx512: bool, buf: &mut [u8]) {
    let p = &s.params;
    let (ph, pw) = (p.padding[0], p.padding[1]);
    let wp = s.w + 2 * pw;
    let ncb = s.c_in.div_ceil(4);
    let cpix = 4 * ncb;
    fill_padding(buf, s, cpix, z);
    let plane = s.h * s.w;
    let img = &x[n * s.c_in * plane..][..s.c_in * plane];
    let zplane = vec![z ^ flip; plane];
    // The quads of every channel block, `[cb][y][x]` (each written before it is read).
    super::with_scratch(&super::SCRATCH_U32, ncb * plane, |quads| {
        for (cb, q) in quads.chunks_exact_mut(plane).enumerate() {
            let src: [&[u8]; 4] = std::array::from_fn(|j| {
                let c = 4 * cb + j;
                match c < s.c_in {
                    true => &img[c * plane..][..plane],
                    false => &zplane[..],
                }
            });
            super::int8::interleave(src, flip, bytemuck::cast_slice_mut(q));
        }
        // The image's pixels: from pixel (ph, pw) to the end of pixel (ph + h − 1, pw + w − 1).
        let interior = &mut buf[(ph * wp + pw) * cpix..][..((s.h - 1) * wp + s.w) * cpix];
        let (at, row) = (interior.as_mut_ptr(), wp * cpix);
        // SAFETY: the layer's path was checked when packing (AVX-512 VNNI where `avx512`, else
        // AVX-VNNI or AVX2: AVX2 at least); pixel (y, x) of the image lies at y·wp·cpix +
        // x·cpix in `interior`, `cpix = 4·ncb` bytes each.
        unsafe {
            match avx512 {
                true => super::x86::planes_to_pixels_avx512(quads, ncb, (s.h, s.w), at, row, cpix),
                false => super::x86::planes_to_pixels_avx2(quads, ncb, (s.h, s.w), at, row, cpix),
            }
        };
    });
}

/// Sets the padding of a padded NHWC image `buf` of shape `s`'s input (`[Hp][Wp][pix]`, `pix`
/// values per pixel) to `v`: the border pixels, and whatever follows the image in `buf`. The
/// interior pixels are left as they are (each copy writes every value of them).
fn fill_padding<T: Copy>(buf: &mut [T], s: &ConvShape, pix: usize, v: T) {
    let (ph, pw) = (s.params.padding[0], s.params.padding[1]);
    let wp = s.w + 2 * pw;
    let row = wp * pix;
    let (top, interior) = buf.split_at_mut(ph * row);
    top.fill(v);
    let (interior, rest) = interior.split_at_mut(s.h * row);
    for r in interior.chunks_exact_mut(row) {
        r[..pw * pix].fill(v);
        r[(pw + s.w) * pix..].fill(v);
    }
    rest.fill(v);
}

/// The conv of `pc` on input `x` (qparams `x_qp`) into the stored output bytes `out`, with the
/// kernel's weights `w` ([`pack`]), the folding constants `corr0` and, where every channel has
/// them, the AVX-512 epilogue constants `ks` of every output channel (else each channel's
/// row is requantized as the flat kernel's are).
///
/// Requires an x86 path (the layer's ISA: AVX-512 VNNI, AVX-VNNI, or AVX2 where the caller
/// proved `vpmaddubsw` exact for this input), one group and symmetric weights.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    pc: &PackedConv2d,
    w: &Lines,
    x: &[u8],
    x_qp: &QParams,
    s: &ConvShape,
    corr0: &[i32],
    ks: Option<&[super::x86::Requant512]>,
    threads: Option<usize>,
    out: &mut [u8],
) {
    use super::x86::{
        gemm_nhwc_avx2_maddubs, gemm_nhwc_avx512, gemm_nhwc_avxvnni, gemm_nhwc_avxvnni_evex,
    };
    debug_assert!(s.params.groups == 1);
    let outp = SendPtr(out.as_mut_ptr());
    let args = (pc, w, x, x_qp, s, corr0, threads);
    match (pc.isa, ks) {
        (Isa::Avx512Vnni, Some(ks)) => run_with::<64>(by_m!(gemm_nhwc_avx512), args, &|px, b| {
            // [channel][pixel of the block], 6 spare rows for the epilogue's whole tiles.
            with_dw_scratch(|sc| tile_epilogue_avx512(ks, s, px, b, &outp, &mut sc.tr))
        }),
        (Isa::Avx512Vnni, None) => run_with::<64>(by_m!(gemm_nhwc_avx512), args, &|px, b| {
            rows_epilogue(pc, s, px, b, &outp)
        }),
        (Isa::Avx2, _) => run_with::<16>(by_m!(gemm_nhwc_avx2_maddubs), args, &|px, b| {
            rows_epilogue(pc, s, px, b, &outp)
        }),
        _ => {
            let kernels: [I8Kernel<16>; MR] = match super::int8::vex_vnni() {
                true => by_m!(gemm_nhwc_avxvnni),
                false => by_m!(gemm_nhwc_avxvnni_evex),
            };
            run_with::<16>(kernels, args, &|px, b| rows_epilogue(pc, s, px, b, &outp))
        }
    }
}

/// The micro-kernel `$k::<M>` of each pixel count `M` in `1..=MR`.
macro_rules! by_m {
    ($k:ident) => {
        [$k::<1>, $k::<2>, $k::<3>, $k::<4>, $k::<5>, $k::<6>]
    };
}
use by_m;

/// A micro-kernel of [`run`]: up to 6 pixels × `NC` channels (see `x86::gemm_nhwc_avx512`);
/// [`run_with`] takes one per pixel count, so that a block's last micro-tile computes only
/// its pixels (a 7×7 plane is 8 micro-tiles of 6 and one of 1; a 1×1 one, a classifier's,
/// one of 1).
type I8Kernel<const NC: usize> = unsafe fn(
    *const u8,
    &[usize; MR],
    &[usize],
    usize,
    *const u8,
    &[i32; NC],
    &mut [[i32; NC]; MR],
);

/// The arguments of [`run_with`]: layer, weights, input, input qparams, shape, folding
/// constants, threads.
type RunArgs<'a> = (
    &'a PackedConv2d,
    &'a Lines,
    &'a [u8],
    &'a QParams,
    &'a ConvShape,
    &'a [i32],
    Option<usize>,
);

/// One block of work: image `n`, output pixels `[p0, p0 + npx)`, channels `[o0, o0 + nch)`.
#[derive(Clone, Copy)]
struct Block {
    n: usize,
    p0: usize,
    npx: usize,
    o0: usize,
    nch: usize,
}

/// The epilogue of one block: its accumulators, a pixel row each (`BLOCK + MR` rows, the
/// block's first `npx` real).
type I8Epilogue<'a, const NC: usize> = dyn Fn(&[[i32; NC]; BLOCK + MR], Block) + Sync + 'a;

/// [`run`] with `NC` output channels per weight row, `kernels` (by pixel count), and
/// `epilogue` per block.
fn run_with<const NC: usize>(
    kernels: [I8Kernel<NC>; MR],
    (pc, w, x, x_qp, s, corr0, threads): RunArgs<'_>,
    epilogue: &I8Epilogue<'_, NC>,
) {
    let p = &s.params;
    let (flip, zi) = super::int8::flip_and_z(x_qp);
    let (hp, wp) = (s.h + 2 * p.padding[0], s.w + 2 * p.padding[1]);
    let ncb = s.c_in.div_ceil(4);
    let cpix = 4 * ncb;
    let taps: Vec<usize> = (0..s.kh * s.kw)
        .map(|t| ((t / s.kw) * p.dilation[0] * wp + (t % s.kw) * p.dilation[1]) * cpix)
        .collect();
    let plane_out = s.h_out * s.w_out;
    let blocks = plane_out.div_ceil(BLOCK);
    let tiles = s.c_out.div_ceil(NC);
    let w = w.bytes();
    let tile_len = taps.len() * ncb * NC * 4;
    debug_assert_eq!(int8_lanes(pc.isa), NC);
    // One image's copy at a time; channel tiles × blocks in parallel, the blocks of one
    // tile consecutive (one weight panel in L2 at a time, as in `run_f32_with`).
    // (Each byte of the copy is written before it is read: the padding by `repack`.)
    super::with_scratch(&super::SCRATCH_U8, hp * wp * cpix + 64, |buf| {
        for n in 0..s.n {
            repack(x, s, n, (flip, zi as u8), pc.isa == Isa::Avx512Vnni, buf);
            let act = &buf[..];
            par_for(threads, blocks * tiles, |item| {
                let (b, tile) = (item % blocks, item / blocks);
                let p0 = b * BLOCK;
                let npx = BLOCK.min(plane_out - p0);
                let o0 = tile * NC;
                let nch = NC.min(s.c_out - o0);
                let mut init = [0i32; NC];
                init[..nch].copy_from_slice(&corr0[o0..o0 + nch]);
                let wt = &w[tile * tile_len..][..tile_len];
                // The input pixel of each output pixel of the block (past its end: the last one,
                // whose results are not stored).
                let pix: [usize; BLOCK + MR] = pixel_offsets(p0, npx, s.w_out, |oy, ox| {
                    (oy * p.stride[0] * wp + ox * p.stride[1]) * cpix
                });
                // Pixel rows of the block's accumulators, 6 per micro-tile (this thread's; every
                // row the epilogue stores is written here first).
                with_px_scratch::<NC, _>(|px| {
                    // (Blocking the taps so that a chunk's weights stay in L1, every micro-tile per
                    // chunk, measured slower on the 14x14 layer: the whole reduction per
                    // micro-tile.)
                    for m0 in (0..npx).step_by(MR) {
                        let tile_px: &mut [[i32; NC]; MR] =
                            (&mut px[m0..m0 + MR]).try_into().expect("6 pixel rows");
                        let pm: &[usize; MR] = pix[m0..m0 + MR].try_into().expect("6 pixels");
                        // SAFETY: the ISA was checked when packing; every read lies in the padded
                        // copy (pixel and tap offsets inside the padded image, `cpix` bytes each)
                        // and in the tile's weights.
                        let kernel = kernels[(npx - m0).min(MR) - 1];
                        unsafe {
                            kernel(act.as_ptr(), pm, &taps, ncb, wt.as_ptr(), &init, tile_px)
                        };
                    }
                    epilogue(
                        px,
                        Block {
                            n,
                            p0,
                            npx,
                            o0,
                            nch,
                        },
                    );
                });
            });
        }
    });
}

/// `at(oy, ox)` of output pixels `p0 .. p0 + npx` (rows of `w_out`), the last one repeated
/// up to `N`: counted along the rows (a division per pixel was 8% of a small depthwise conv).
fn pixel_offsets<const N: usize>(
    p0: usize,
    npx: usize,
    w_out: usize,
    at: impl Fn(usize, usize) -> usize,
) -> [usize; N] {
    debug_assert!(npx >= 1 && npx <= N);
    let mut pix = [0; N];
    let (mut oy, mut ox) = (p0 / w_out, p0 % w_out);
    for v in &mut pix[..npx] {
        *v = at(oy, ox);
        ox += 1;
        if ox == w_out {
            (oy, ox) = (oy + 1, 0);
        }
    }
    let last = pix[npx - 1];
    pix[npx..].fill(last);
    pix
}

thread_local! {
    /// The pixel rows of [`run_with`]'s blocks, `(BLOCK + MR) · 64` values (zeroed once per
    /// thread; stale values between blocks only reach lanes that are not stored).
    static PX_SCRATCH: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` with this thread's pixel rows of `NC ≤ 64` channels (fresh ones on a re-entrant call).
fn with_px_scratch<const NC: usize, R>(f: impl FnOnce(&mut [[i32; NC]; BLOCK + MR]) -> R) -> R {
    fn rows<const NC: usize>(v: &mut Vec<i32>) -> &mut [[i32; NC]; BLOCK + MR] {
        v.resize((BLOCK + MR) * 64, 0);
        let (chunks, _) = v.as_chunks_mut::<NC>();
        (&mut chunks[..BLOCK + MR])
            .try_into()
            .expect("BLOCK + MR rows")
    }
    PX_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(rows(&mut v)),
        Err(_) => f(rows(&mut Vec::new())),
    })
}

/// The AVX-512 epilogue of block `b`: its pixel rows transposed (16×16 blocks in registers)
/// into `acc` as `[channel][pixel]` and requantized 6 channels at a time (`ks`: every output
/// channel's constants) into the consecutive outputs `p0 .. p0 + npx` of each channel's plane.
///
/// Requires AVX-512 (the layer's ISA path, checked when packing).
fn tile_epilogue_avx512(
    ks: &[super::x86::Requant512],
    s: &ConvShape,
    px: &[[i32; 64]; BLOCK + MR],
    b: Block,
    outp: &SendPtr<u8>,
    acc: &mut [[i32; 64]; 64 + MR],
) {
    use super::x86::{requant_tile_avx512, transpose_pixels_avx512, RunMask};
    let plane_out = s.h_out * s.w_out;
    // SAFETY: the ISA was checked when packing.
    unsafe { transpose_pixels_avx512(px, acc, b.npx, b.nch) };
    let runs = [RunMask::new(0, b.p0, b.npx)];
    for r in (0..b.nch).step_by(MR) {
        let rows: &[[i32; 64]; MR] = acc[r..r + MR].try_into().expect("6 rows of the block");
        let o = b.o0 + r;
        let k = &ks[o..o + MR.min(b.nch - r)];
        // SAFETY: the ISA was checked when packing; the run (pixels p0 .. p0 + npx of each
        // channel's plane) lies in the output, written by this task only.
        unsafe {
            requant_tile_avx512(
                k,
                rows,
                &runs,
                outp.0.add((b.n * s.c_out + o) * plane_out),
                plane_out,
            )
        };
    }
}

/// The epilogue of block `b` channel by channel: its pixels' accumulators gathered into a
/// row, requantized as the flat kernel's rows are (`requant_row`), into the consecutive
/// outputs `p0 .. p0 + npx` of each channel's plane.
fn rows_epilogue<const NC: usize>(
    pc: &PackedConv2d,
    s: &ConvShape,
    px: &[[i32; NC]; BLOCK + MR],
    b: Block,
    outp: &SendPtr<u8>,
) {
    let plane_out = s.h_out * s.w_out;
    let mut row = [0i32; BLOCK];
    for o in b.o0..b.o0 + b.nch {
        for (a, pixel) in row[..b.npx].iter_mut().zip(px) {
            *a = pixel[o - b.o0];
        }
        // SAFETY: pixels p0 .. p0 + npx of channel o lie in the output, written by this task
        // only.
        let dst = unsafe { outp.slice((b.n * s.c_out + o) * plane_out + b.p0, b.npx) };
        super::requant_row(pc.isa, &pc.epi, o, &row[..b.npx], dst);
    }
}

/// Whether the channels-in-lanes int8 depthwise conv ([`depthwise_quads`]) runs shape `s` on
/// `isa`: AVX-512 VNNI with VBMI (`vpermb`), one input and one output channel per group, at
/// most 4 kernel columns without column dilation and 5 kernel rows, input rows of 64 bytes
/// or fewer and output rows of 16 pixels or fewer (one vector of quads per row).
pub(super) fn depthwise_applies(s: &ConvShape, isa: Isa) -> bool {
    isa == Isa::Avx512Vnni
        && super::x86::has_vbmi()
        && s.c_in == s.params.groups
        && s.c_out == s.c_in
        && s.kw <= 4
        && s.kh <= 5
        && s.params.dilation[1] == 1
        && s.w <= 64
        && s.w_out <= 16
}

/// Whether [`depthwise_quads`] should run rather than the channel-by-channel kernels, where it
/// applies: output planes of 64 pixels or fewer (7×7), where the per-channel work around each
/// channel's few multiply-adds (its padded plane, one masked store per output row)
/// outweighs them. Measured, one thread, AVX-512 VNNI, 3x3 layers, channel by channel →
/// channels in the lanes: 960 channels of 7×7 30 → 20 µs, 576 of 14×14 stride 2 (7×7
/// outputs) 28 → 17 µs, but 576 of 14×14 33 → 41 µs (the epilogue's transpositions).
pub(super) fn depthwise_prefer(s: &ConvShape) -> bool {
    s.h_out * s.w_out <= 64
}

/// The weights of [`depthwise_quads`]: `[channel tile of 64][kernel row][64]` dwords, channel
/// `o`'s word of kernel row `ky` from `lanes` (`depthwise::pack_vnni`: one word per channel and
/// kernel row when `kw ≤ 4`), 0 past `Cout`.
pub(super) fn pack_depthwise(lanes: &[i32], c_out: usize, kh: usize) -> Vec<i32> {
    let tiles = c_out.div_ceil(64);
    let mut out = vec![0i32; tiles * kh * 64];
    for o in 0..c_out {
        for ky in 0..kh {
            out[((o / 64) * kh + ky) * 64 + o % 64] = lanes[o * kh + ky];
        }
    }
    out
}

/// The int8 depthwise conv (one channel per group) with the channels in the lanes, into the
/// stored output bytes `out`, for small output planes (see [`depthwise_applies`]).
///
/// Per image, a *quad image*: for each padded input row `yp` and output column `ox`, for every
/// channel the four u8 activations (`x ^ flip`) that kernel columns `0..4` of that output read,
/// `z` at padded positions (the zero point of `u`), one dword per channel and channels
/// consecutive ([`x86::dw_quads_row_avx512`](super::x86::dw_quads_row_avx512): one `vpermb`
/// per channel row, then a 16×16 transposition). Then per block of 60 output pixels and tile
/// of 64 channels, one `vpdpbusd` per kernel row and 16 channels
/// ([`x86::dw_quads_avx512`](super::x86::dw_quads_avx512)) from the initial value
/// `−z·Σ w'` (`corr0`: padded taps hold `z`, so `Σ (u − z)·w'` is the reference's
/// accumulator, as in the flat kernel), and the GEMM's channels-in-lanes epilogue (transposed
/// back, requantized with `ks`, or row by row where some channel needs the scalar epilogue).
/// The quads of stride-2 rows hold only the columns their outputs read.
///
/// Requires [`depthwise_applies`], every `w − ζ` a valid i8, `w` from [`pack_depthwise`].
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise_quads(
    pc: &PackedConv2d,
    w: &[i32],
    x: &[u8],
    x_qp: &QParams,
    s: &ConvShape,
    corr0: &[i32],
    ks: Option<&[super::x86::Requant512]>,
    threads: Option<usize>,
    out: &mut [u8],
) {
    use super::x86::{dw_quads_avx512, dw_quads_row_avx512, Bytes64};
    debug_assert!(depthwise_applies(s, pc.isa));
    let p = &s.params;
    let (ph, pw) = (p.padding[0], p.padding[1]);
    let (sy, sx, dh) = (p.stride[0], p.stride[1], p.dilation[0]);
    let hp = s.h + 2 * ph;
    let (c, kh, w_out) = (s.c_in, s.kh, s.w_out);
    let tiles = c.div_ceil(64);
    // Bytes per quad-image pixel: every channel (rounded to whole tiles) a dword.
    let qstride = tiles * 64 * 4;
    let (flip, z) = super::int8::flip_and_z(x_qp);
    // Byte j of output column ox's quad: input column ox·sx + j − pw, where inside the row.
    let mut idx = Bytes64([0; 64]);
    let mut take = 0u64;
    for ox in 0..w_out {
        for j in 0..4 {
            let col = (ox * sx + j) as isize - pw as isize;
            if (0..s.w as isize).contains(&col) {
                idx.0[4 * ox + j] = col as u8;
                take |= 1 << (4 * ox + j);
            }
        }
    }
    let (plane_in, plane_out) = (s.h * s.w, s.h_out * s.w_out);
    let blocks = plane_out.div_ceil(BLOCK);
    let row_bytes = w_out * qstride;
    let rows: Vec<usize> = (0..kh).map(|ky| ky * dh * row_bytes).collect();
    let outp = SendPtr(out.as_mut_ptr());
    // The quad image of one image (rows of padding: `z` in every byte), reused across calls.
    super::with_scratch(&super::SCRATCH_U8, hp * row_bytes, |qbuf| {
        qbuf[..ph * row_bytes].fill(z as u8);
        qbuf[(ph + s.h) * row_bytes..].fill(z as u8);
        for n in 0..s.n {
            let img = &x[n * c * plane_in..][..c * plane_in];
            let qp = SendPtr(qbuf.as_mut_ptr());
            let groups16 = c.div_ceil(16);
            par_for(threads, groups16, |g16| {
                // (The whole `Sync` wrapper, not its pointer field.)
                let qp = &qp;
                let c0 = 16 * g16;
                // Channels past the last read its plane again (their lanes are not stored).
                let planes: [*const u8; 16] =
                    std::array::from_fn(|i| img[(c0 + i).min(c - 1) * plane_in..].as_ptr());
                for iy in 0..s.h {
                    // (Row iy of each plane: inside it, iy < h.)
                    let rows_in: [*const u8; 16] =
                        std::array::from_fn(|i| planes[i].wrapping_add(iy * s.w));
                    // SAFETY: VBMI and the ISA were checked (`depthwise_applies`); each row holds
                    // `w` bytes; `idx` takes columns below `w`; the quads of row iy + ph, channels
                    // c0.., are written by this task only, inside the quad image.
                    unsafe {
                        dw_quads_row_avx512(
                            &rows_in,
                            s.w,
                            &idx,
                            take,
                            flip,
                            z as u8,
                            w_out,
                            qp.0.add((iy + ph) * row_bytes + 4 * c0),
                            qstride,
                        )
                    };
                }
            });
            let q = &qbuf[..];
            par_for(threads, blocks * tiles, |item| {
                let (b, tile) = (item / tiles, item % tiles);
                let p0 = b * BLOCK;
                let npx = BLOCK.min(plane_out - p0);
                let o0 = tile * 64;
                let nch = 64.min(c - o0);
                let pix: [usize; BLOCK] =
                    pixel_offsets(p0, npx, w_out, |oy, ox| (oy * sy * w_out + ox) * qstride);
                let pix = &pix[..npx];
                let mut init = [0i32; 64];
                init[..nch].copy_from_slice(&corr0[o0..o0 + nch]);
                let wt = w[tile * kh * 64..][..kh * 64].as_ptr();
                let qt = q[4 * o0..].as_ptr();
                with_dw_scratch(|sc| {
                    let px = &mut sc.px[..npx];
                    // SAFETY: the ISA was checked; every quad read lies in the quad image (rows
                    // oy·sy + ky·dh < hp, columns < w_out, 256 bytes of the tile's channels).
                    unsafe {
                        match kh {
                            1 => dw_quads_avx512::<1>(qt, pix, &[rows[0]], wt, &init, px),
                            2 => dw_quads_avx512::<2>(qt, pix, &[rows[0], rows[1]], wt, &init, px),
                            3 => {
                                let r = [rows[0], rows[1], rows[2]];
                                dw_quads_avx512::<3>(qt, pix, &r, wt, &init, px)
                            }
                            4 => {
                                let r = [rows[0], rows[1], rows[2], rows[3]];
                                dw_quads_avx512::<4>(qt, pix, &r, wt, &init, px)
                            }
                            _ => {
                                let r = [rows[0], rows[1], rows[2], rows[3], rows[4]];
                                dw_quads_avx512::<5>(qt, pix, &r, wt, &init, px)
                            }
                        }
                    };
                    let blk = Block {
                        n,
                        p0,
                        npx,
                        o0,
                        nch,
                    };
                    match ks {
                        Some(ks) => tile_epilogue_avx512(ks, s, &sc.px, blk, &outp, &mut sc.tr),
                        None => rows_epilogue(pc, s, &sc.px, blk, &outp),
                    }
                });
            });
        }
    });
}

/// The per-thread arrays of [`depthwise_quads`]' work items (zeroed once per thread; stale
/// values between items only reach lanes that are not stored).
struct DwScratch {
    px: [[i32; 64]; BLOCK + MR],
    tr: [[i32; 64]; 64 + MR],
}

thread_local! {
    static DW_SCRATCH: std::cell::RefCell<Option<Box<DwScratch>>> =
        const { std::cell::RefCell::new(None) };
}

/// `f` with this thread's [`DwScratch`] (a fresh one on a re-entrant call).
fn with_dw_scratch<R>(f: impl FnOnce(&mut DwScratch) -> R) -> R {
    let fresh = || {
        Box::new(DwScratch {
            px: [[0; 64]; BLOCK + MR],
            tr: [[0; 64]; 64 + MR],
        })
    };
    DW_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(v.get_or_insert_with(fresh)),
        Err(_) => f(&mut fresh()),
    })
}

/// Output channels per weight row of the f32 kernel on `isa` (4 zmm or 2 ymm).
pub(super) fn f32_lanes(isa: Isa) -> usize {
    match isa {
        Isa::Avx512Vnni => 64,
        _ => 16,
    }
}

/// The float weights for [`run_f32`] on `isa`: `[channel tile][tap][Cin][channel of the tile]`
/// ([`f32_lanes`] channels per tile), weight `w(o, c, tap)` of a layer of dims `w_dims` (one
/// group; 0 past `Cout`).
pub(super) fn pack_f32(
    w: impl Fn(usize, usize, usize) -> f32,
    w_dims: [usize; 4],
    isa: Isa,
) -> Lines {
    let nc = f32_lanes(isa);
    let [cout, cin, kh, kw] = w_dims;
    let taps = kh * kw;
    let mut lines = Lines::zeroed(cout.div_ceil(nc) * taps * cin * nc * 4);
    let out = lines.f32s_mut();
    for o in 0..cout {
        let (tile, lane) = (o / nc, o % nc);
        for t in 0..taps {
            for c in 0..cin {
                out[((tile * taps + t) * cin + c) * nc + lane] = w(o, c, t);
            }
        }
    }
    lines
}

/// Whether the channels-in-lanes f32 kernel should run shape `s` rather than the flat one
/// whose pixel tiles cover `qtot` flat positions (whose last channel tile computes only the
/// channels that exist): the fraction of useful lanes of each, the channels-in-lanes one
/// discounted by 5%. Measured in one criterion run (one thread, AMD EPYC Zen 4/5 class,
/// AVX-512 / AVX2, channels in lanes against flat): 1x256x14x14 +26% / +13%, 1x512x7x7
/// +21% / +24%, 1x128x28x28 +8% / +12%, 1x64x56x56 -4% / -2% (flat kept there); on the 62×62
/// plane of 121 channels, whose rounding to 64 or 16 lanes wastes 5%, flat is 5% faster.
///
/// A 1×1 conv without padding ([`reads_nchw`]) skips the NHWC copy, and its transposing
/// epilogue (`x86::nhwc_f32_out_avx512` / `nhwc_f32_out_avx2`) costs about `e` input
/// channels' worth of multiply-adds per output: the channels-in-lanes kernel runs where
/// `K / (a·nhwc) + e < K / flat` (`K` the input channels, `nhwc` and `flat` the lane
/// fractions above; `a` the channels-in-lanes kernel's higher rate at equal fill): `a = 1.1,
/// e = 21` on AVX-512, `a = 1.2, e = 25` on the ymm paths. Each fitted on MobileNetV2's 1×1
/// convs with both layouts timed (one thread, Intel Xeon, Emerald Rapids), where it picks
/// the faster layout, or one within 3% of it, on each of the 34. AVX-512: every 7×7 one
/// (576→160 0.084 → 0.068 ms, 960→320 0.26 → 0.19) and the 14×14 ones with 64 outputs
/// (384→64 0.078 → 0.060), flat for the 14×14 expansions (64→384: 0.069 flat, 0.081 channels
/// in lanes) and every larger plane. AVX2: every 7×7 one (960→160 0.25 → 0.19 ms), the 14×14
/// ones from 192 or more channels (384→64 0.137 → 0.118, 576→96 0.29 → 0.27), flat for the
/// 14×14 expansions (64→384: 0.13 flat, 0.15 channels in lanes) and every larger plane.
pub(super) fn prefer_f32(s: &ConvShape, qtot: usize, isa: Isa) -> bool {
    let nc = f32_lanes(isa);
    let plane = s.h_out * s.w_out;
    let flat = plane as f64 / qtot as f64;
    let nhwc = plane as f64 / (plane.div_ceil(MR) * MR) as f64 * channel_fill(s.c_out, nc);
    if reads_nchw(s) {
        let k = s.c_in as f64;
        let (a, e) = match isa {
            Isa::Avx512Vnni => (1.1, 21.0),
            _ => (1.2, 25.0),
        };
        return k / (a * nhwc) + e < k / flat;
    }
    nhwc * 0.95 > flat
}

/// Whether the channels-in-lanes f32 conv reads the NCHW input itself (a 1×1 conv without
/// padding: input channel `c` of a pixel lies `c·H·W` values after its first) rather than a
/// padded NHWC copy.
fn reads_nchw(s: &ConvShape) -> bool {
    s.kh == 1 && s.kw == 1 && s.params.padding == [0, 0]
}

/// The f32 conv of `x` with the weights `w` ([`pack_f32`]) plus `bias` into `out` (NCHW): per
/// output pixel and channel the same FMAs in the same order as the flat kernel, so the same
/// bits, then `+ bias` (0 without one).
///
/// Requires `isa` (the layer's, an x86 path: AVX-512 or AVX2) and one group.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_f32(
    isa: Isa,
    w: &Lines,
    x: &[f32],
    s: &ConvShape,
    bias: Option<&[f32]>,
    clamp: Option<super::F32Clamp>,
    threads: Option<usize>,
    out: &mut [f32],
) {
    use super::x86::{gemm_f32_nhwc_avx2, gemm_f32_nhwc_avx512};
    debug_assert!(s.params.groups == 1 && isa.is_x86_simd());
    let w = w.f32s();
    match isa {
        Isa::Avx512Vnni => {
            let k = by_m!(gemm_f32_nhwc_avx512);
            run_f32_with::<64>(k, w, x, s, bias, clamp, threads, out)
        }
        _ => run_f32_with::<16>(
            by_m!(gemm_f32_nhwc_avx2),
            w,
            x,
            s,
            bias,
            clamp,
            threads,
            out,
        ),
    }
}

/// A micro-kernel of [`run_f32`]: up to 6 pixels × `NC` channels (see
/// `x86::gemm_f32_nhwc_avx512`), one per pixel count as for [`I8Kernel`].
type F32Kernel<const NC: usize> =
    unsafe fn(*const f32, &[usize; MR], &[usize], usize, usize, *const f32, &mut [[f32; NC]; MR]);

/// [`run_f32`] with `NC` output channels per weight row (64 on AVX-512, 16 on AVX2, see
/// [`f32_lanes`]) and `kernels` (by pixel count).
#[allow(clippy::too_many_arguments)]
fn run_f32_with<const NC: usize>(
    kernels: [F32Kernel<NC>; MR],
    w: &[f32],
    x: &[f32],
    s: &ConvShape,
    bias: Option<&[f32]>,
    clamp: Option<super::F32Clamp>,
    threads: Option<usize>,
    out: &mut [f32],
) {
    let p = &s.params;
    let (ph, pw) = (p.padding[0], p.padding[1]);
    let (hp, wp) = (s.h + 2 * ph, s.w + 2 * pw);
    let cin = s.c_in;
    let plane_out = s.h_out * s.w_out;
    let plane_in = s.h * s.w;
    // A 1×1 conv without padding reads the NCHW image itself ([`reads_nchw`]); the others a
    // padded NHWC copy (on MobileNetV2's 7×7 1×1 convs, one thread, Intel Xeon, the copy
    // cost the path 10–25%).
    let direct = reads_nchw(s);
    let (cs, row_step, pixel) = match direct {
        true => (plane_in, s.w, 1),
        false => (1, wp * cin, cin),
    };
    let taps: Vec<usize> = (0..s.kh * s.kw)
        .map(|t| (t / s.kw) * p.dilation[0] * row_step + (t % s.kw) * p.dilation[1] * pixel)
        .collect();
    // Work items: channel tiles × runs of `F32_RUN` micro-tiles, the runs of one tile
    // consecutive: each micro-tile streams its tile's whole weight panel (`tile_len` floats,
    // 590 KB on a 3x3 conv of 256 input channels), so that consecutive items share one panel
    // in L2, where cycling through every tile's panels per run (2.4 MB on 256 output
    // channels) missed L2 (1x256x14x14 3x3: 80% → 90% of the `vfmadd` peak, one thread,
    // Intel Xeon).
    let runs = plane_out.div_ceil(MR * F32_RUN);
    let tiles = s.c_out.div_ceil(NC);
    let tile_len = taps.len() * cin * NC;
    // The padded NHWC copy of one image at a time (unless `direct`); channel tiles × runs in
    // parallel.
    let outp = SendPtr(out.as_mut_ptr());
    let len = if direct { 0 } else { hp * wp * cin };
    super::with_scratch(&super::SCRATCH_F32, len, |buf| {
        for n in 0..s.n {
            let img = &x[n * cin * plane_in..][..cin * plane_in];
            if !direct {
                fill_padding(buf, s, cin, 0.0);
                // The image's pixels, from pixel (ph, pw) on, `cin` values each.
                let interior = &mut buf[(ph * wp + pw) * cin..][..((s.h - 1) * wp + s.w) * cin];
                // SAFETY: the layer's path was checked when packing (AVX-512 for 64 channels
                // per row, AVX2 at least for 16); pixel (y, x) lies at (y·wp + x)·cin in
                // `interior`, `cin` values each.
                unsafe {
                    let (at, planes) = (interior.as_mut_ptr().cast(), bytemuck::cast_slice(img));
                    let (row, pixel, hw) = (4 * wp * cin, 4 * cin, (s.h, s.w));
                    match NC {
                        64 => super::x86::planes_to_pixels_avx512(planes, cin, hw, at, row, pixel),
                        _ => super::x86::planes_to_pixels_avx2(planes, cin, hw, at, row, pixel),
                    }
                };
            }
            let act = if direct { img } else { &buf[..] };
            par_for(threads, runs * tiles, |item| {
                let outp = &outp; // (the whole `Send` wrapper, not its pointer field)
                let (r, tile) = (item % runs, item / runs);
                let o0 = tile * NC;
                let nch = NC.min(s.c_out - o0);
                let wt = &w[tile * tile_len..][..tile_len];
                let first = r * MR * F32_RUN;
                let count = (MR * F32_RUN).min(plane_out - first);
                // The run's accumulators, a pixel row each (this thread's; every row read below
                // is written first).
                let mut scratch = F32_SCRATCH.with_borrow_mut(std::mem::take);
                scratch.resize(MR * F32_RUN * 64, 0.0);
                let (px, _) = scratch.as_chunks_mut::<NC>();
                let px = &mut px[..MR * F32_RUN];
                for m0 in (0..count).step_by(MR) {
                    // The input pixel of each output pixel (past the plane: the last one, whose
                    // results are not stored).
                    let pm: [usize; MR] =
                        pixel_offsets(first + m0, (count - m0).min(MR), s.w_out, |oy, ox| {
                            oy * p.stride[0] * row_step + ox * p.stride[1] * pixel
                        });
                    let acc: &mut [[f32; NC]; MR] =
                        (&mut px[m0..m0 + MR]).try_into().expect("6 pixel rows");
                    // SAFETY: the ISA was checked when packing; every read lies in the padded copy
                    // or the image (pixel and tap offsets inside it, `cin` values `cs` apart each)
                    // and in the tile's weights.
                    let kernel = kernels[(count - m0).min(MR) - 1];
                    unsafe { kernel(act.as_ptr(), &pm, &taps, cin, cs, wt.as_ptr(), acc) };
                }
                // Channel by channel, the run's pixels are consecutive outputs: the rows
                // transposed back (16×16 blocks on AVX-512, 8×8 on AVX2), bias and clamp fused.
                let b: [f32; NC] = std::array::from_fn(|j| match (bias, j < nch) {
                    (Some(b), true) => b[o0 + j],
                    _ => 0.0,
                });
                let (b, rows) = (&b[..nch], px.as_flattened());
                let bounds = clamp.map(|c| (c.lo, c.hi));
                // SAFETY: the ISA was checked when packing (AVX-512 for 64 channels per row, AVX2
                // at least for 16); `px` holds the run's `count` pixel rows of NC channels;
                // channels o0 .. o0 + nch, pixels first .. first + count lie in the output,
                // written by this task only.
                unsafe {
                    let out = outp.0.add((n * s.c_out + o0) * plane_out + first);
                    match NC {
                        64 => {
                            super::x86::nhwc_f32_out_avx512(rows, count, b, bounds, out, plane_out)
                        }
                        _ => super::x86::nhwc_f32_out_avx2(rows, count, b, bounds, out, plane_out),
                    }
                };
                F32_SCRATCH.set(scratch);
            });
        }
    });
}

thread_local! {
    /// The pixel rows of [`run_f32_with`]'s work items, `MR · F32_RUN · 64` values (taken and
    /// put back by each item, so that a nested call gets a fresh one).
    static F32_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::ConvParams;

    /// The layout choice follows the measured crossover on every x86 path (AVX-512 VNNI: 64
    /// channels per row, flat tiles of 64 pixels by 6 channels; AVX-VNNI: 16, 16 by 6; AVX2:
    /// 16, 16 by 4): channels in lanes on 7×7 and 14×14 planes, the flat layout on 28×28 and
    /// larger.
    #[test]
    fn channels_in_lanes_is_preferred_on_small_planes_only() {
        for (c, hw, want) in [
            (512, 7, true),
            (256, 14, true),
            (128, 28, false),
            (64, 56, false),
        ] {
            let s = ConvShape::new(
                [1, c, hw, hw],
                [c, c, 3, 3],
                ConvParams::default().padding(1),
            )
            .unwrap();
            let paths = [
                (Isa::Avx512Vnni, 64, 6),
                (Isa::AvxVnni, 16, 6),
                (Isa::Avx2, 16, 4),
            ];
            for (isa, px, nr) in paths {
                let qtot = super::super::int8::Geometry::new(&s, c / 4, px).qtot;
                assert_eq!(prefer(&s, qtot, nr, isa), want, "{isa}: {c}x{hw}x{hw}");
            }
        }
    }

    /// The float layout rule of 1×1 convs read straight from NCHW picks the layout measured
    /// faster on MobileNetV2's 1×1 convs (one thread, Intel Xeon), on AVX-512 (64 channels
    /// per row, flat tiles of 64 pixels) and AVX2 (16, 16): channels in lanes on every 7×7
    /// plane and on the 14×14 projections (on AVX-512 only those to 64 channels: 96 fill
    /// 75% of two 64-lane rows), flat on the 14×14 expansions and larger planes.
    #[test]
    fn float_1x1_layout_follows_the_measured_mobilenet_choices() {
        for (c_in, hw, c_out, avx512, avx2) in [
            (960, 7, 160, true, true),
            (160, 7, 960, true, true),
            (320, 7, 1280, true, true),
            (384, 14, 64, true, true),
            (192, 14, 64, true, true),
            (576, 14, 96, false, true),
            (384, 14, 96, false, true),
            (64, 14, 384, false, false),
            (96, 14, 576, false, false),
            (32, 28, 192, false, false),
            (144, 56, 24, false, false),
            (24, 56, 144, false, false),
        ] {
            let s = ConvShape::new(
                [1, c_in, hw, hw],
                [c_out, c_in, 1, 1],
                ConvParams::default(),
            )
            .unwrap();
            for (isa, px, want) in [(Isa::Avx512Vnni, 64, avx512), (Isa::Avx2, 16, avx2)] {
                let qtot = super::super::int8::Geometry::new(&s, c_in, px).qtot;
                let got = prefer_f32(&s, qtot, isa);
                assert_eq!(got, want, "{c_in}x{hw}x{hw} -> {c_out} {isa}");
            }
        }
    }

    /// The float layout choice follows its measured speeds on both paths: channels in lanes on
    /// the 7×7 to 28×28 planes of ResNet's stages, the flat layout on 56×56 and on the 62×62
    /// plane of 121 channels (whose rounding to 64 or 16 lanes wastes 5%).
    #[test]
    fn float_channels_in_lanes_is_preferred_on_planes_up_to_28x28() {
        for (c, hw, c_out, pad, want) in [
            (512, 7, 512, 1, true),
            (256, 14, 256, 1, true),
            (128, 28, 128, 1, true),
            (64, 56, 64, 1, false),
            (132, 64, 121, 0, false),
        ] {
            let p = ConvParams::default().padding(pad);
            let s = ConvShape::new([1, c, hw, hw], [c_out, c, 3, 3], p).unwrap();
            for (isa, px) in [(Isa::Avx512Vnni, 64), (Isa::Avx2, 16)] {
                let qtot = super::super::int8::Geometry::new(&s, c, px).qtot;
                assert_eq!(prefer_f32(&s, qtot, isa), want, "{c}x{hw}x{hw} {isa}");
            }
        }
    }
}
