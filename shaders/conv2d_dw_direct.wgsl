// squint: depthwise int8 conv2d read straight from the packed tensor (no repack), with the
// requantization epilogue fused; appended to `epilogue_table.wgsl`.
//
// Output channel o of image n reads input plane (n, o / m) only (m = out_channels / groups, the
// channel multiplier), so every output is a sum of KH * KW byte-times-weight products and
// there is no reduction over channels. The input is the packed tensor itself: plane p holds
// its H * W bytes from word p * plane_words, pixel after pixel (rows are not word-aligned).
// Bytes are read in the unsigned domain x' = byte ^ FLIP (qint8 bytes XOR 0x80) with zero
// point z', and weights are the i32 values w - w_zp, so
//   acc[n, o, p] = sum_taps (x' - z') * (w - w_zp) = sum_taps x' * (w - w_zp) - z' * S(o),
// S(o) = sum_taps (w - w_zp) (the epilogue table's second vec4); taps in the padding read z'
// and add exactly 0. Products of a byte and a value in [-255, 255] summed in wrapping i32: the
// CPU reference's sum, bit for bit.
//
// Work: where output rows are a whole number of packed words (stride 1, dilation 1 across),
// an invocation computes NW of them (up to 28 pixels of one output row, `main_rows`), each
// kernel row from one span of the input row; elsewhere two packed output words (8
// consecutive pixels of one output plane; `PX8`: stride 1, dilation 1, output rows of at
// least 8 pixels, each kernel row from one 16-byte span, see `main8`) or one (4 pixels). The
// grid is (invocation groups of a plane, output channels, images), so the weights and the
// epilogue header a workgroup reads are the same for all its invocations; except with CPW > 1
// (small planes on CPU adapters), where a workgroup holds CPW whole planes, (1, channel
// groups, images). The epilogue is
// the formula's own f32 operations where they are exact (`FEXACT`), else thresholds.
//
// In the 4-pixel path, where a kernel row's inputs for 4 pixels of one output row span at
// most 12 bytes (`ROW`: dilation_w = 1, 3 * SW + KW <= 12, KW <= 8, output rows of at least
// 4 pixels), each kernel row costs two texel loads (or five word loads): the span from the
// first input column is aligned into words (funnel shifts, `span_bytes`), bytes outside the
// image replaced by z', and each byte unpacked once for the 4 outputs; a word across two
// output rows (`TWO`) sums both rows' spans and keeps each pixel's. Otherwise (dilation, wide
// strides or kernels) pixel by pixel, one byte load per tap.
//
// Written for CPU adapters as much as for GPUs: lavapipe and llvmpipe run 8 invocations as
// SIMD lanes, execute both sides of a branch that depends on the invocation, run a storage
// buffer load at per-invocation addresses as a loop over the lanes (texel loads are plain
// per-lane loads), read a uniform inside a loop as a per-lane gather, and divide integers
// lane by lane. Hence no branch but the final store's, loops of constant trip counts (KH,
// KW: unrolled), the input and tables in textures there, the uniforms that loops read
// copied once (`lu`), and divisions as float estimates corrected exactly (`udiv`) or
// avoided by the grid.
//
// Buffers (storage windows bound by the host; indices are global and the window's base is
// subtracted). With XTEX (CPU adapters) the input, the weights and the epilogue are
// rgba32uint storage textures instead: vec4 i at texel (i % 2^log2_width, i >> log2_width).
// * `u` (uniform): the dispatch's first image and the geometry (`ConvDwDirectParams` in
//   `src/gpu/kernels.rs`; names and offsets checked by `kernel_contract.rs`).
// * `x` / `xt`: the packed input tensor (words from `u.x_base`; XTEX: a copy, 4 words per
//   texel).
// * `wts` / `wt`: the weights w - w_zp as i16 pairs (`direct_depthwise_weights` in
//   `src/gpu/ops.rs`): per output channel, (KH + RPT - 1) / RPT vec4s of RPT kernel rows each
//   (2 rows of 4 values, or 1 of 8; zero past KW), from `u.w_base`.
// * `etab` / `et`: the epilogue: the float epilogue's one vec4 per output channel (FEXACT > 0,
//   `float_epilogue` in `src/gpu/ops.rs`), threshold pairs, PAIR_VEC4 vec4s per output
//   channel (SEARCH = 0, `threshold_pairs`: a header of one vec4, then the pairs), or the
//   table of `epilogue_table.wgsl`, E_VEC4 per channel (SEARCH = 1); from `u.etab_base`.
// * `y` (read_write): the packed output, `pixel_tiles` words per (n, o) plane (from
//   `u.y_base`).

override WG: u32 = 64u;
// Kernel height and width (at most 8), horizontal stride: constants, so that the loops over
// taps unroll and the row path's byte indices are constants.
override KH: u32 = 3u;
override KW: u32 = 3u;
// Kernel rows per weights vec4: 2 (KW <= 4) or 1.
override RPT: u32 = 2u;
override SW: u32 = 1u;
// 1: the row path (dilation_w == 1, 3 * SW + KW <= 12, KW <= 8, output rows of at least 4
// pixels); 0: pixel by pixel.
override ROW: u32 = 1u;
// 1 when a packed word (PX8: a pair of words) may hold pixels of two output rows (the row
// path then sums both).
override TWO: u32 = 0u;
// 1: the 8-pixel path (`main8`).
override PX8: u32 = 0u;
// Words (4 pixels each, 1..=7) per invocation of the rows-of-words path (`main_rows`: stride
// 1, dilation 1, output rows a whole number of words, CPU adapters); 0: not that path.
override NW: u32 = 0u;
// Aligned words of a kernel row's span in `main_rows` (the span's 4 * NW + KW - 1 bytes:
// (4 * NW + KW - 2) / 4 + 1, at most 9), and the input texels (XTEX) or words / 4 (buffers)
// read for them ((NA + 7) / 4, at most 4: the first word may be any of its texel's).
override NA: u32 = 8u;
override SPAN_T: u32 = 3u;
// 1 when the channel multiplier is 1 (output channel o reads input channel o).
override MULT: u32 = 1u;
// Output channels (planes) per workgroup: 1, or, on small planes of the 8- and 4-pixel paths,
// as many as a workgroup holds (lane l computes invocation l mod `plane_invocations` of the
// workgroup's plane l / `plane_invocations`): lavapipe pays a fixed cost per workgroup, a
// large part of the time of one workgroup per 7x7 or 14x14 plane (those layers ran 24-26%
// faster with it; README, *The f32 depthwise GPU kernel*).
override CPW: u32 = 1u;
// 0 when every channel's float estimate is within one level of its epilogue's
// (`StepTable::estimate_within_one_level`): its two thresholds then decide the level; 1: the
// table's search where they do not confirm it (whose loop body CPU adapters run for every
// output).
override SEARCH: u32 = 1u;
// 0x80808080 for qint8 input (bytes to the unsigned domain), else 0.
override FLIP: u32 = 0u;
// FEXACT (`epilogue_table.wgsl`) > 0: the float epilogue, with the weight sum S(o) in its
// header's last word and the output zero point in `u`; 0: the thresholds (SEARCH).

struct Params {
    n_begin: u32, // first image of the dispatch
    pixel_tiles: u32, // packed words per output plane
    plane_out: u32,
    w_out: u32,
    c_out: u32,
    channel_multiplier: u32, // output channels per input channel
    c_in: u32,
    h: u32,
    w: u32,
    plane_words: u32, // packed words per input plane
    stride_h: u32,
    dilation_h: u32,
    dilation_w: u32,
    pad_h: u32,
    pad_w: u32,
    x_base: u32, // first word of the input window
    w_base: u32, // first i32 of the weights window
    etab_base: u32, // first vec4 of the epilogue-table window
    y_base: u32, // first word of the output window
    x_zero_point: i32, // z': the input zero point in the unsigned domain
    w_out_rcp: f32, // f32(1 / w_out), for `udiv`
    m_rcp: f32, // f32(1 / channel_multiplier), for `udiv`
    x_tex_log2_width: u32, // log2 width of the input texture (XTEX)
    w_tex_log2_width: u32, // log2 width of the weights texture (XTEX)
    etab_tex_log2_width: u32, // log2 width of the epilogue-table texture (XTEX)
    row_segments: u32, // invocations per output row (NW > 0)
    segments_rcp: f32, // f32(1 / row_segments), for `udiv`
    out_zero_point: i32, // the output zero point (FEXACT > 0)
    plane_invocations: u32, // invocations per output plane (CPW > 1)
    plane_invocations_rcp: f32, // f32(1 / plane_invocations), for `udiv`
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> u: Params;
//#if XTEX
@group(0) @binding(1) var xt: texture_storage_2d<rgba32uint, read>;
//#else
@group(0) @binding(1) var<storage, read> x: array<u32>;
//#endif
//#if XTEX
@group(0) @binding(2) var wt: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(3) var et: texture_storage_2d<rgba32uint, read>;
//#else
@group(0) @binding(2) var<storage, read> wts: array<vec4<i32>>;
@group(0) @binding(3) var<storage, read> etab: array<vec4<u32>>;
//#endif
@group(0) @binding(4) var<storage, read_write> y: array<u32>;

// The uniforms read inside loops (over kernel rows and the epilogue's search), copied once per
// invocation by `main`: lavapipe (Mesa 22.3, LLVM 15) compiled a uniform read inside a loop as
// a per-lane gather (8 bounds-checked scalar loads) in every iteration, which was a fifth of
// the rows-of-words path's time on (iv).
struct LoopUniforms {
    h: u32,
    w: u32,
    stride_h: u32,
    dilation_h: u32,
    dilation_w: u32,
    pad_h: u32,
    pad_w: u32,
    x_base: u32,
    w_base: u32,
    etab_base: u32,
    x_tex_log2_width: u32,
    w_tex_log2_width: u32,
    etab_tex_log2_width: u32,
}

var<private> lu: LoopUniforms;

fn load_e(i: u32) -> vec4<u32> {
//#if XTEX
    let mask = (1u << lu.etab_tex_log2_width) - 1u;
    return textureLoad(et, vec2<u32>(i & mask, i >> lu.etab_tex_log2_width));
//#else
    return etab[i - lu.etab_base];
//#endif
}

// Weights vec4 `i`.
fn load_w(i: u32) -> vec4<i32> {
//#if XTEX
    let mask = (1u << lu.w_tex_log2_width) - 1u;
    return vec4<i32>(textureLoad(wt, vec2<u32>(i & mask, i >> lu.w_tex_log2_width)));
//#else
    return wts[i - lu.w_base];
//#endif
}

// The i16 pairs of `p` as four i32.
fn halves(v: vec2<i32>) -> vec4<i32> {
    return vec4<i32>((v.x << 16u) >> 16u, v.x >> 16u, (v.y << 16u) >> 16u, v.y >> 16u);
}

// The weights vec4 that holds kernel row ky, from the channel's vec4s at `wq`: read for the
// first row it holds (ky a constant once the loops unroll), else `t` (the vec4 read before).
fn weights_for_row(wq: u32, ky: u32, t: vec4<i32>) -> vec4<i32> {
    if (ky % RPT == 0u) {
        return load_w(wq + ky / RPT);
    }
    return t;
}

// Kernel row ky's weights (the second vec4 zero when KW <= 4) from its weights vec4 `t`.
fn weight_row(t: vec4<i32>, ky: u32) -> array<vec4<i32>, 2> {
    if (RPT == 2u) {
        return array<vec4<i32>, 2>(halves(select(t.xy, t.zw, (ky & 1u) == 1u)), vec4<i32>(0));
    }
    return array<vec4<i32>, 2>(halves(t.xy), halves(t.zw));
}

// Weight kx (0..7) of a kernel row's two vec4s.
fn weight(w: array<vec4<i32>, 2>, kx: u32) -> i32 {
    let v = w[kx >> 2u];
    let k = kx & 3u;
    return select(select(v.x, v.y, k == 1u), select(v.z, v.w, k == 3u), k >= 2u);
}

//#if XTEX
// Texel `i` of the input copy (4 words); out of the texture for a negative `i`.
fn load_texel(i: i32) -> vec4<u32> {
    let j = u32(i);
    let mask = (1u << lu.x_tex_log2_width) - 1u;
    return textureLoad(xt, vec2<u32>(j & mask, j >> lu.x_tex_log2_width));
}
//#endif

// Component k (0..3) of `t`.
fn pick(t: vec4<u32>, k: u32) -> u32 {
    return select(select(t.x, t.y, k == 1u), select(t.z, t.w, k == 3u), k >= 2u);
}

// Input word `i` (a global word index, wrapping) in the unsigned domain; indices outside the
// input read some other word (only ever for bytes the caller replaces by z').
fn load_x(i: u32) -> u32 {
//#if XTEX
    return pick(load_texel(i32(i) >> 2u), i & 3u) ^ FLIP;
//#else
    return x[min(i - lu.x_base, arrayLength(&x) - 1u)] ^ FLIP;
//#endif
}

// Input words q .. q + 4 (q a global word index, wrapping; -1 for the word before the
// first), in the unsigned domain: words q .. q + 3 and q + 4.
struct Span {
    w: vec4<u32>,
    e: u32,
}

fn load_span(q: u32) -> Span {
//#if XTEX
    // Two texels, the 5 words from word q & 3 of the first.
    let i = i32(q) >> 2u;
    let t0 = load_texel(i);
    let t1 = load_texel(i + 1);
    let k = q & 3u;
    let v = vec4<u32>(
        pick(t0, k),
        pick(vec4<u32>(t0.yzw, t1.x), k),
        pick(vec4<u32>(t0.zw, t1.xy), k),
        pick(vec4<u32>(t0.w, t1.xyz), k),
    );
    return Span(v ^ vec4<u32>(FLIP), pick(t1, k) ^ FLIP);
//#else
    return Span(vec4<u32>(load_x(q), load_x(q + 1u), load_x(q + 2u), load_x(q + 3u)),
        load_x(q + 4u));
//#endif
}

// `StepTable::lookup_near`: the level of `acc` in channel c (header `h`) from the float
// estimate moved by at most one step by its two thresholds (exact where the host checked that
// the estimate is within one level; thresholds past the table's ends are read clamped and
// ignored).
fn level_near(acc: i32, c: u32, h: vec4<u32>) -> i32 {
    let base = (i32(h.z) << 16u) >> 16u;
    let top = i32(h.z) >> 16u;
    let e = round(f32(acc) * bitcast<f32>(h.x) + bitcast<f32>(h.y));
    let k = clamp(i32(clamp(e, f32(base), f32(top))), base, top);
    // The pair (t_k, t_(k+1)) of level k (`threshold_pairs` in `src/gpu/ops.rs`).
    let i = u32(k - base);
    let v = load_e(c * PAIR_VEC4 + 1u + (i >> 1u));
    let pair = vec2<i32>(select(v.xy, v.zw, (i & 1u) == 1u));
    let down = acc < pair.x;
    let up = k < top && acc >= pair.y;
    return k - select(0, 1, down) + select(0, 1, up);
}

// vec4s per output channel of the threshold-pair table (SEARCH = 0).
const PAIR_VEC4: u32 = 129u;

// vec4s per output channel of the epilogue table bound (`etab` / `et`): the threshold pairs,
// or (SEARCH = 1) the table of `epilogue_table.wgsl`.
fn table_stride() -> u32 {
    if (FEXACT > 0u) {
        return 1u;
    }
    return select(E_VEC4, PAIR_VEC4, SEARCH == 0u);
}

// The epilogue header of output channel o (the float epilogue's: see `requantize`; the
// threshold pairs': slope, offset, base and top as i16, weight sum; the table's: slope,
// offset, base, top) and the weight sum S(o) (the table's: from its second vec4).
struct Header {
    h: vec4<u32>,
    s: i32,
}

fn header(o: u32) -> Header {
    let h = load_e(o * table_stride());
    if (FEXACT > 0u || SEARCH == 0u) {
        return Header(h, i32(h.w));
    }
    return Header(h, i32(load_e(o * table_stride() + 1u).y));
}

// Bytes r/8 .. r/8 + 3 of the 8 bytes (lo, hi), r in {0, 8, 16, 24}.
fn funnel(lo: u32, hi: u32, r: u32) -> u32 {
    return (lo >> r) | ((hi << 1u) << (31u - r));
}

// Bytes 0 .. k - 1 of a word set (k in 0..=4).
fn low_bytes(k: i32) -> u32 {
    return select(0u, 0xffffffffu >> (32u - 8u * u32(k)), k > 0);
}

// The byte masks of the 16-byte row span of output column ox0 (bytes 4k .. 4k + 3 in word
// k; byte j is input column ox0 * SW - pad_w + j): set where the column lies in the image.
fn column_masks(ox0: i32) -> vec4<u32> {
    let cx0 = ox0 * i32(SW) - i32(lu.pad_w);
    return vec4<u32>(col_mask(cx0, 0u), col_mask(cx0, 1u), col_mask(cx0, 2u), col_mask(cx0, 3u));
}

// Byte j (0..15) of the aligned words `a`.
fn byte16(a: vec4<u32>, j: u32) -> i32 {
    let v = select(select(a.x, a.y, j >= 4u), select(a.z, a.w, j >= 12u), j >= 8u);
    return i32((v >> ((j & 3u) * 8u)) & 0xffu);
}

// The 16-byte span of kernel row ky for output row oy from output column ox0 (byte j: input
// column ox0 * SW - pad_w + j), aligned into 4 words by funnel shifts, the bytes of columns
// outside the image (`cols`, from `column_masks`) and of a row outside it replaced by z'
// (`zq`: its byte in each lane).
fn span_bytes(xplane: u32, oy: u32, ox0: i32, cols: vec4<u32>, ky: u32, zq: u32) -> vec4<u32> {
    let h = i32(lu.h);
    let iy = i32(oy * lu.stride_h + ky * lu.dilation_h) - i32(lu.pad_h);
    let row_ok = iy >= 0 && iy < h;
    let b = xplane + u32(clamp(iy, 0, h - 1)) * lu.w + u32(ox0 * i32(SW) - i32(lu.pad_w));
    // Word of the span's first byte: an arithmetic shift, so that a column left of the first
    // plane's first byte gives word -1 (wrapping), whose next word is word 0.
    let sp = load_span(u32(i32(b) >> 2u));
    let r = (b & 3u) * 8u;
    let m = select(vec4<u32>(0u), cols, vec4<bool>(row_ok));
    let a = vec4<u32>(funnel(sp.w.x, sp.w.y, r), funnel(sp.w.y, sp.w.z, r),
        funnel(sp.w.z, sp.w.w, r), funnel(sp.w.w, sp.e, r));
    return (a & m) | (vec4<u32>(zq) & ~m);
}

// Kernel row ky's sums for 4 pixels on output row oy from output column ox0 (columns past the
// row's end give values the caller drops), the row's weights `wr`; the span's first
// 3 * SW + KW <= 12 bytes are read.
fn row_sums(
    xplane: u32,
    oy: u32,
    ox0: i32,
    cols: vec4<u32>,
    ky: u32,
    wr: array<vec4<i32>, 2>,
    zq: u32,
) -> vec4<i32> {
    let k = span_bytes(xplane, oy, ox0, cols, ky, zq);
    var acc = vec4<i32>(0);
    for (var kx = 0u; kx < KW; kx++) {
        let v = vec4<i32>(byte16(k, kx), byte16(k, SW + kx), byte16(k, 2u * SW + kx),
            byte16(k, 3u * SW + kx));
        acc += v * weight(wr, kx);
    }
    return acc;
}

// The packed output word of the 4 pixels from p0 of channel c (epilogue header `h`), whose
// accumulators are `v` (bytes of pixels past the plane's end are 0).
fn requantize(v: vec4<i32>, c: u32, h: vec4<u32>, p0: u32) -> u32 {
    let px_ok = vec4<u32>(p0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(u.plane_out);
    var l: vec4<i32>;
    if (FEXACT > 0u) {
        l = float_levels(v, h, u.out_zero_point);
    } else if (SEARCH == 1u) {
        return pack_levels(v, c, h, px_ok);
    } else {
        l = vec4<i32>(level_near(v.x, c, h), level_near(v.y, c, h), level_near(v.z, c, h),
            level_near(v.w, c, h));
    }
    let b = select(vec4<u32>(0u), vec4<u32>(l) & vec4<u32>(0xffu), px_ok);
    return b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
}

// The 8-pixel path's sums of kernel row ky for 8 pixels on output row oy from output column
// ox0 (stride 1; columns past the row's end give values the caller drops): pixels 0..3 and
// 4..7, from the span's first 7 + KW <= 15 bytes.
fn row_sums8(
    xplane: u32,
    oy: u32,
    ox0: i32,
    cols: vec4<u32>,
    ky: u32,
    wr: array<vec4<i32>, 2>,
    zq: u32,
) -> array<vec4<i32>, 2> {
    let k = span_bytes(xplane, oy, ox0, cols, ky, zq);
    var lo = vec4<i32>(0);
    var hi = vec4<i32>(0);
    for (var kx = 0u; kx < KW; kx++) {
        let wv = weight(wr, kx);
        lo += vec4<i32>(byte16(k, kx), byte16(k, kx + 1u), byte16(k, kx + 2u),
            byte16(k, kx + 3u)) * wv;
        hi += vec4<i32>(byte16(k, kx + 4u), byte16(k, kx + 5u), byte16(k, kx + 6u),
            byte16(k, kx + 7u)) * wv;
    }
    return array<vec4<i32>, 2>(lo, hi);
}

// Where output channel o of image n reads: the byte offset of its input plane (u32
// arithmetic, wrapping: a negative column offset from it wraps and is masked) and its first
// weights vec4.
struct Channel {
    xplane: u32,
    wq: u32,
}

fn channel(o: u32, n: u32) -> Channel {
    var c = o;
    if (MULT == 0u) {
        c = udiv(o, u.channel_multiplier, u.m_rcp);
    }
    return Channel((n * u.c_in + c) * u.plane_words * 4u, o * ((KH + RPT - 1u) / RPT));
}

// The 8-pixel path (`PX8`: stride 1, dilation 1, KW <= 8, output rows of at least 8 pixels):
// invocation i computes output words 2i and 2i + 1, each kernel row from one 16-byte span
// (two texel loads), the weights and epilogue header read once for 8 pixels.
fn main8(o: u32, n: u32, i: u32) {
    let t = n * u.c_out + o;
    let pairs = (u.pixel_tiles + 1u) / 2u;
    let p0 = min(i, pairs - 1u) * 8u;
    let ch = channel(o, n);
    let xplane = ch.xplane;
    let wq = ch.wq;
    let z = u.x_zero_point;
    let zq = u32(z) * 0x01010101u;
    // Pixel j at output column ox0 + j of row oy0, or (TWO: rows not a multiple of 8 pixels
    // wide) at column ox0 + j - w_out of row oy0 + 1.
    let oy0 = udiv(p0, u.w_out, u.w_out_rcp);
    let ox0 = i32(p0 - oy0 * u.w_out);
    let ox1 = ox0 - i32(u.w_out);
    let next_lo = vec4<i32>(0, 1, 2, 3) + ox0 >= vec4<i32>(i32(u.w_out));
    let next_hi = vec4<i32>(4, 5, 6, 7) + ox0 >= vec4<i32>(i32(u.w_out));
    let cols0 = column_masks(ox0);
    let cols1 = column_masks(ox1);
    var lo = vec4<i32>(0);
    var hi = vec4<i32>(0);
    var wt = vec4<i32>(0);
    for (var ky = 0u; ky < KH; ky++) {
        wt = weights_for_row(wq, ky, wt);
        let wr = weight_row(wt, ky);
        let s0 = row_sums8(xplane, oy0, ox0, cols0, ky, wr, zq);
        if (TWO == 1u) {
            let s1 = row_sums8(xplane, oy0 + 1u, ox1, cols1, ky, wr, zq);
            lo += select(s0[0], s1[0], next_lo);
            hi += select(s0[1], s1[1], next_hi);
        } else {
            lo += s0[0];
            hi += s0[1];
        }
    }
    let hd = header(o);
    let zs = vec4<i32>(z * hd.s);
    let w0 = requantize(lo - zs, o, hd.h, p0);
    let w1 = requantize(hi - zs, o, hd.h, p0 + 4u);
    let out = t * u.pixel_tiles + 2u * i - u.y_base;
    if (2u * i < u.pixel_tiles) {
        y[out] = w0;
    }
    if (2u * i + 1u < u.pixel_tiles) {
        y[out + 1u] = w1;
    }
}

// Word m (a constant) of the words `w` from word k (0..3, not constant): word k + m.
fn pick_word(w: array<u32, 16>, k: u32, m: u32) -> u32 {
    return pick(vec4<u32>(w[m], w[m + 1u], w[m + 2u], w[m + 3u]), k);
}

// Aligned span word j (a constant) from the words `w` read from the span's first word's
// (k: its index in `w`, r: the first byte's bit offset), masked by `m` (z' outside).
fn aligned(w: array<u32, 16>, k: u32, r: u32, j: u32, m: u32, zq: u32) -> u32 {
    let v = funnel(pick_word(w, k, j), pick_word(w, k, j + 1u), r);
    return (v & m) | (zq & ~m);
}

// Texel j of the input copy from texel t when j < SPAN_T (a constant comparison), else 0;
// buffers: input words q + 4j .. q + 4j + 3. In the unsigned domain.
fn span_part(t: i32, q: u32, j: u32) -> vec4<u32> {
    if (j >= SPAN_T) {
        return vec4<u32>(0u);
    }
//#if XTEX
    return load_texel(t + i32(j)) ^ vec4<u32>(FLIP);
//#else
    let i = q + 4u * j;
    return vec4<u32>(load_x(i), load_x(i + 1u), load_x(i + 2u), load_x(i + 3u));
//#endif
}

// The span of kernel row ky for output row oy from output column ox0 (byte i: input column
// ox0 - pad_w + i) as aligned words (the first NA are used), the bytes of columns outside
// the image (`cols`) and of a row outside it replaced by z' (`zq`). SPAN_T texels (or
// 4 * SPAN_T words) are read from the span's first word's. Written without loops over
// arrays: every index is a constant, so the arrays stay in registers.
fn span_words(
    xplane: u32,
    oy: u32,
    ox0: i32,
    cols: array<u32, 9>,
    ky: u32,
    zq: u32,
) -> array<u32, 9> {
    let h = i32(lu.h);
    let iy = i32(oy * lu.stride_h + ky * lu.dilation_h) - i32(lu.pad_h);
    let row_ok = iy >= 0 && iy < h;
    let b = xplane + u32(clamp(iy, 0, h - 1)) * lu.w + u32(ox0 - i32(lu.pad_w));
    // Word of the span's first byte: an arithmetic shift, so that a column left of the first
    // plane's first byte gives word -1 (wrapping).
    let q = u32(i32(b) >> 2u);
    let t = i32(q) >> 2u;
//#if XTEX
    let k = q & 3u;
//#else
    let k = 0u;
//#endif
    let t0 = span_part(t, q, 0u);
    let t1 = span_part(t, q, 1u);
    let t2 = span_part(t, q, 2u);
    let t3 = span_part(t, q, 3u);
    let w = array<u32, 16>(t0.x, t0.y, t0.z, t0.w, t1.x, t1.y, t1.z, t1.w, t2.x, t2.y, t2.z,
        t2.w, t3.x, t3.y, t3.z, t3.w);
    let r = (b & 3u) * 8u;
    let ok = select(0u, 0xffffffffu, row_ok);
    return array<u32, 9>(
        aligned(w, k, r, 0u, cols[0] & ok, zq),
        aligned(w, k, r, 1u, cols[1] & ok, zq),
        aligned(w, k, r, 2u, cols[2] & ok, zq),
        aligned(w, k, r, 3u, cols[3] & ok, zq),
        aligned(w, k, r, 4u, cols[4] & ok, zq),
        aligned(w, k, r, 5u, cols[5] & ok, zq),
        aligned(w, k, r, 6u, cols[6] & ok, zq),
        aligned(w, k, r, 7u, cols[7] & ok, zq),
        aligned(w, k, r, 8u, cols[8] & ok, zq),
    );
}

// Byte i (a constant) of the aligned span words `a`.
fn span_byte(a: array<u32, 9>, i: u32) -> i32 {
    return i32((a[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu);
}

// Kernel row ky's sums (weights `wr`) for the 4 pixels of the invocation's word j (a
// constant; 0 for j >= NW).
fn word_sums(a: array<u32, 9>, j: u32, wr: array<vec4<i32>, 2>) -> vec4<i32> {
    var acc = vec4<i32>(0);
    if (j >= NW) {
        return acc;
    }
    for (var kx = 0u; kx < KW; kx++) {
        let i = 4u * j + kx;
        acc += vec4<i32>(span_byte(a, i), span_byte(a, i + 1u), span_byte(a, i + 2u),
            span_byte(a, i + 3u)) * weight(wr, kx);
    }
    return acc;
}

// The byte mask of the span's word j (a constant) for the span from input column cx0: set
// where the column lies in the image.
fn col_mask(cx0: i32, j: u32) -> u32 {
    let first = i32(4u * j);
    let lo = clamp(clamp(-cx0, 0, 36) - first, 0, 4);
    let hi = clamp(clamp(i32(lu.w) - cx0, 0, 36) - first, 0, 4);
    return low_bytes(hi) & ~low_bytes(lo);
}

// Stores output word j (a constant) of the rows-of-words path: `v` its accumulators, `p0` the
// invocation's first pixel, `out` its first word's index in `y`, `ok` whether the
// invocation is in the grid, `rest` the pixels from p0 to the row's end.
fn store_word(v: vec4<i32>, o: u32, hd: Header, p0: u32, out: u32, ok: bool, rest: u32, j: u32) {
    if (j >= NW) {
        return;
    }
    let word = requantize(v - vec4<i32>(u.x_zero_point * hd.s), o, hd.h, p0 + 4u * j);
    if (ok && 4u * j < rest) {
        y[out + j] = word;
    }
}

// Rows of words (`NW` > 0: stride 1, dilation 1, KW <= 8, output rows a whole number of
// words): invocation i computes NW consecutive words of one output row (segment
// i % row_segments of row i / row_segments; a row's last segment may be shorter and stores
// fewer), each kernel row from one span of 4 * NW + KW - 1 bytes, so that no word is
// computed twice and the span's texels, the weights and the header are read once for up to
// 28 pixels.
fn main_rows(o: u32, n: u32, i: u32) {
    let t = n * u.c_out + o;
    let rows = u.plane_out / u.w_out;
    let ic = min(i, rows * u.row_segments - 1u);
    let oy = udiv(ic, u.row_segments, u.segments_rcp);
    let ox0 = (ic - oy * u.row_segments) * 4u * NW;
    let ch = channel(o, n);
    let zq = u32(u.x_zero_point) * 0x01010101u;
    let cx0 = i32(ox0) - i32(lu.pad_w);
    let cols = array<u32, 9>(col_mask(cx0, 0u), col_mask(cx0, 1u), col_mask(cx0, 2u),
        col_mask(cx0, 3u), col_mask(cx0, 4u), col_mask(cx0, 5u), col_mask(cx0, 6u),
        col_mask(cx0, 7u), col_mask(cx0, 8u));
    var a0 = vec4<i32>(0);
    var a1 = vec4<i32>(0);
    var a2 = vec4<i32>(0);
    var a3 = vec4<i32>(0);
    var a4 = vec4<i32>(0);
    var a5 = vec4<i32>(0);
    var a6 = vec4<i32>(0);
    var wt = vec4<i32>(0);
    for (var ky = 0u; ky < KH; ky++) {
        wt = weights_for_row(ch.wq, ky, wt);
        let wr = weight_row(wt, ky);
        let a = span_words(ch.xplane, oy, i32(ox0), cols, ky, zq);
        a0 += word_sums(a, 0u, wr);
        a1 += word_sums(a, 1u, wr);
        a2 += word_sums(a, 2u, wr);
        a3 += word_sums(a, 3u, wr);
        a4 += word_sums(a, 4u, wr);
        a5 += word_sums(a, 5u, wr);
        a6 += word_sums(a, 6u, wr);
    }
    let hd = header(o);
    let p0 = oy * u.w_out + ox0;
    let out = t * u.pixel_tiles + p0 / 4u - u.y_base;
    let ok = i < rows * u.row_segments;
    let rest = u.w_out - ox0;
    store_word(a0, o, hd, p0, out, ok, rest, 0u);
    store_word(a1, o, hd, p0, out, ok, rest, 1u);
    store_word(a2, o, hd, p0, out, ok, rest, 2u);
    store_word(a3, o, hd, p0, out, ok, rest, 3u);
    store_word(a4, o, hd, p0, out, ok, rest, 4u);
    store_word(a5, o, hd, p0, out, ok, rest, 5u);
    store_word(a6, o, hd, p0, out, ok, rest, 6u);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // No branch depends on the invocation but the final store's, and every loop has a
    // constant trip count: CPU adapters run both sides of a divergent branch.
    // The grid: (word groups of a plane, output channels, images), or with CPW > 1 (1, groups
    // of CPW output channels, images).
    lu = LoopUniforms(u.h, u.w, u.stride_h, u.dilation_h, u.dilation_w, u.pad_h, u.pad_w,
        u.x_base, u.w_base, u.etab_base, u.x_tex_log2_width, u.w_tex_log2_width,
        u.etab_tex_log2_width);
    var o = wid.y;
    var pt = wid.x * WG + lid;
    if (CPW > 1u) {
        // (One workgroup along x.) Lanes past the workgroup's last plane, or past the last
        // channel, compute the last channel's first invocation and store nothing: their
        // invocation index is past every plane's.
        let k = udiv(lid, u.plane_invocations, u.plane_invocations_rcp);
        let oc = wid.y * CPW + k;
        let valid = k < CPW && oc < u.c_out;
        o = select(u.c_out - 1u, oc, valid);
        pt = select(u.pixel_tiles, lid - k * u.plane_invocations, valid);
    }
    let n = u.n_begin + wid.z;
    if (NW > 0u) {
        main_rows(o, n, pt);
        return;
    }
    if (PX8 == 1u) {
        main8(o, n, pt);
        return;
    }
    let t = n * u.c_out + o; // output plane
    let ptc = min(pt, u.pixel_tiles - 1u);
    let ch = channel(o, n);
    let xplane = ch.xplane;
    let wq = ch.wq;
    let z = u.x_zero_point;
    let zq = u32(z) * 0x01010101u;
    let p0 = ptc * 4u;
    let lanes = vec4<u32>(0u, 1u, 2u, 3u);
    var acc = vec4<i32>(0);
    if (ROW == 1u) {
        // Pixel j at output column ox0 + j of row oy0, or (TWO: output rows not a multiple
        // of 4 pixels wide, at least 4) at column ox0 + j - w_out of row oy0 + 1.
        let oy0 = udiv(p0, u.w_out, u.w_out_rcp);
        let ox0 = i32(p0 - oy0 * u.w_out);
        let next = vec4<i32>(lanes) + ox0 >= vec4<i32>(i32(u.w_out));
        let ox1 = ox0 - i32(u.w_out);
        let cols0 = column_masks(ox0);
        let cols1 = column_masks(ox1);
        var wt = vec4<i32>(0);
    for (var ky = 0u; ky < KH; ky++) {
            wt = weights_for_row(wq, ky, wt);
        let wr = weight_row(wt, ky);
            let s0 = row_sums(xplane, oy0, ox0, cols0, ky, wr, zq);
            if (TWO == 1u) {
                let s1 = row_sums(xplane, oy0 + 1u, ox1, cols1, ky, wr, zq);
                acc += select(s0, s1, next);
            } else {
                acc += s0;
            }
        }
    } else {
        // Pixel by pixel, one byte load per tap (pixels past the plane's end are computed on
        // its last pixel and not stored).
        let p = min(vec4<u32>(p0) + lanes, vec4<u32>(u.plane_out - 1u));
        let oy = vec4<u32>(
            udiv(p.x, u.w_out, u.w_out_rcp),
            udiv(p.y, u.w_out, u.w_out_rcp),
            udiv(p.z, u.w_out, u.w_out_rcp),
            udiv(p.w, u.w_out, u.w_out_rcp),
        );
        let ox = p - oy * u.w_out;
        let h = i32(lu.h);
        var wt = vec4<i32>(0);
    for (var ky = 0u; ky < KH; ky++) {
            wt = weights_for_row(wq, ky, wt);
        let wr = weight_row(wt, ky);
            let iy = vec4<i32>(oy * lu.stride_h + ky * lu.dilation_h) - i32(lu.pad_h);
            let row_ok = (iy >= vec4<i32>(0)) & (iy < vec4<i32>(h));
            for (var kx = 0u; kx < KW; kx++) {
                let wv = weight(wr, kx);
                let ix = vec4<i32>(ox * SW + kx * lu.dilation_w) - i32(lu.pad_w);
                let ok = row_ok & (ix >= vec4<i32>(0)) & (ix < vec4<i32>(i32(lu.w)));
                let bi = xplane + vec4<u32>(max(iy, vec4<i32>(0))) * lu.w
                    + vec4<u32>(max(ix, vec4<i32>(0)));
                let v = vec4<i32>(
                    i32((load_x(bi.x >> 2u) >> ((bi.x & 3u) * 8u)) & 0xffu),
                    i32((load_x(bi.y >> 2u) >> ((bi.y & 3u) * 8u)) & 0xffu),
                    i32((load_x(bi.z >> 2u) >> ((bi.z & 3u) * 8u)) & 0xffu),
                    i32((load_x(bi.w >> 2u) >> ((bi.w & 3u) * 8u)) & 0xffu),
                );
                acc += select(vec4<i32>(z), v, ok) * wv;
            }
        }
    }
    let hd = header(o);
    let word = requantize(acc - vec4<i32>(z * hd.s), o, hd.h, p0);
    if (pt < u.pixel_tiles) {
        y[t * u.pixel_tiles + pt - u.y_base] = word;
    }
}
