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
// Work: an invocation computes two packed output words (8 consecutive pixels of one output
// plane; `PX8`: stride 1, dilation 1, output rows of at least 8 pixels, each kernel row from
// one 16-byte span, see `main8`) or one (4 pixels); the grid is (invocation groups of a
// plane, output channels, images), so the weights and the epilogue header a workgroup reads
// are the same for all its invocations. In the 4-pixel path, where a kernel
// row's inputs for 4 pixels of one output row span at most 12 bytes (`ROW`: dilation_w = 1,
// 3 * SW + KW <= 12, KW <= 8, output rows of at least 4 pixels), each kernel row costs two
// texel loads (or five word loads): the span from the first input column is aligned into
// words (funnel shifts, `span_bytes`), bytes outside the image replaced by z', and each byte
// unpacked once for the 4 outputs; a word across two output rows (`TWO`) sums both rows'
// spans and keeps each pixel's. Otherwise (dilation, wide strides or kernels) pixel by
// pixel, one byte load per tap.
//
// Written for CPU adapters as much as for GPUs: lavapipe and llvmpipe run 8 invocations as
// SIMD lanes, execute both sides of a branch that depends on the invocation, run a storage
// buffer load at per-invocation addresses as a loop over the lanes (texel loads are plain
// per-lane loads), and divide integers lane by lane. Hence no branch but the final store's,
// loops of constant trip counts (KH, KW: unrolled), the input and tables in textures there,
// and divisions as float estimates corrected exactly (`udiv`) or avoided by the grid.
//
// Buffers (storage windows bound by the host; indices are global and the window's base is
// subtracted). With XTEX (CPU adapters) the input, the weights and the epilogue are
// rgba32uint storage textures instead: vec4 i at texel (i % 2^log2_width, i >> log2_width).
// * `u` (uniform): the dispatch's first image and the geometry (`ConvDwDirectParams` in
//   `src/gpu/kernels.rs`; names and offsets checked by `kernel_contract.rs`).
// * `x` / `xt`: the packed input tensor (words from `u.x_base`; XTEX: a copy, 4 words per
//   texel).
// * `wts` / `wt`: the weights w - w_zp as i32, KWV vec4s (4 or 8 values, zero past KW) per
//   output channel and kernel row (from `u.w_base`).
// * `etab` / `et`: the epilogue: threshold pairs, PAIR_VEC4 vec4s per output channel
//   (SEARCH = 0, `threshold_pairs` in `src/gpu/ops.rs`), or the table of
//   `epilogue_table.wgsl`, E_VEC4 per channel (SEARCH = 1); from `u.etab_base`.
// * `y` (read_write): the packed output, `pixel_tiles` words per (n, o) plane (from
//   `u.y_base`).

override WG: u32 = 64u;
// Kernel height and width (at most 8), horizontal stride: constants, so that the loops over
// taps unroll and the row path's byte indices are constants.
override KH: u32 = 3u;
override KW: u32 = 3u;
// vec4s of weights per kernel row: (KW + 3) / 4.
override KWV: u32 = 1u;
override SW: u32 = 1u;
// 1: the row path (dilation_w == 1, 3 * SW + KW <= 12, KW <= 8, output rows of at least 4
// pixels); 0: pixel by pixel.
override ROW: u32 = 1u;
// 1 when a packed word (PX8: a pair of words) may hold pixels of two output rows (the row
// path then sums both).
override TWO: u32 = 0u;
// 1: the 8-pixel path (`main8`).
override PX8: u32 = 0u;
// 1 when the channel multiplier is 1 (output channel o reads input channel o).
override MULT: u32 = 1u;
// 0 when every channel's float estimate is within one level of its epilogue's
// (`StepTable::estimate_within_one_level`): its two thresholds then decide the level; 1: the
// table's search where they do not confirm it (whose loop body CPU adapters run for every
// output).
override SEARCH: u32 = 1u;
// 0x80808080 for qint8 input (bytes to the unsigned domain), else 0.
override FLIP: u32 = 0u;

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
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
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

fn load_e(i: u32) -> vec4<u32> {
//#if XTEX
    let mask = (1u << u.etab_tex_log2_width) - 1u;
    return textureLoad(et, vec2<u32>(i & mask, i >> u.etab_tex_log2_width));
//#else
    return etab[i - u.etab_base];
//#endif
}

// Weights vec4 `i`.
fn load_w(i: u32) -> vec4<i32> {
//#if XTEX
    let mask = (1u << u.w_tex_log2_width) - 1u;
    return vec4<i32>(textureLoad(wt, vec2<u32>(i & mask, i >> u.w_tex_log2_width)));
//#else
    return wts[i - u.w_base];
//#endif
}

// Kernel row ky's weights (the second vec4 zero when KW <= 4) from vec4 `wq` of the channel.
fn weight_row(wq: u32, ky: u32) -> array<vec4<i32>, 2> {
    if (KWV == 1u) {
        return array<vec4<i32>, 2>(load_w(wq + ky), vec4<i32>(0));
    }
    return array<vec4<i32>, 2>(load_w(wq + 2u * ky), load_w(wq + 2u * ky + 1u));
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
    let mask = (1u << u.x_tex_log2_width) - 1u;
    return textureLoad(xt, vec2<u32>(j & mask, j >> u.x_tex_log2_width));
}

// Component k (0..3) of `t`.
fn pick(t: vec4<u32>, k: u32) -> u32 {
    return select(select(t.x, t.y, k == 1u), select(t.z, t.w, k == 3u), k >= 2u);
}
//#endif

// Input word `i` (a global word index, wrapping) in the unsigned domain; indices outside the
// input read some other word (only ever for bytes the caller replaces by z').
fn load_x(i: u32) -> u32 {
//#if XTEX
    return pick(load_texel(i32(i) >> 2u), i & 3u) ^ FLIP;
//#else
    return x[min(i - u.x_base, arrayLength(&x) - 1u)] ^ FLIP;
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
    let base = i32(h.z);
    let top = i32(h.w);
    let e = round(f32(acc) * bitcast<f32>(h.x) + bitcast<f32>(h.y));
    let k = clamp(i32(clamp(e, f32(base), f32(top))), base, top);
    // The pair (t_k, t_(k+1)) of level k (`threshold_pairs` in `src/gpu/ops.rs`).
    let i = u32(k - base);
    let v = load_e(c * PAIR_VEC4 + 2u + (i >> 1u));
    let pair = vec2<i32>(select(v.xy, v.zw, (i & 1u) == 1u));
    let down = acc < pair.x;
    let up = k < top && acc >= pair.y;
    return k - select(0, 1, down) + select(0, 1, up);
}

// vec4s per output channel of the threshold-pair table (SEARCH = 0).
const PAIR_VEC4: u32 = 130u;

// vec4s per output channel of the epilogue table bound (`etab` / `et`): the threshold pairs,
// or (SEARCH = 1) the table of `epilogue_table.wgsl`. Both start with the same two vec4s.
fn table_stride() -> u32 {
    return select(E_VEC4, PAIR_VEC4, SEARCH == 0u);
}

// floor(a / d) for a < 2^23 and d >= 1, `rcp` = f32(1 / d): a float estimate within 2 of the
// quotient (|a * rcp - a / d| < 2^-22 * a / d), corrected exactly by the remainder's sign and
// size. Vector floats instead of an integer division, which CPU adapters run lane by lane.
fn udiv(a: u32, d: u32, rcp: f32) -> u32 {
    var q = u32(f32(a) * rcp);
    var r = i32(a) - i32(q * d);
    let di = i32(d);
    for (var i = 0; i < 2; i++) {
        q = select(q, q - 1u, r < 0);
        r = select(r, r + di, r < 0);
        q = select(q, q + 1u, r >= di);
        r = select(r, r - di, r >= di);
    }
    return q;
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
    let cx0 = ox0 * i32(SW) - i32(u.pad_w);
    let first = vec4<i32>(0, 4, 8, 12);
    let lo = clamp(vec4<i32>(clamp(-cx0, 0, 16)) - first, vec4<i32>(0), vec4<i32>(4));
    let hi = clamp(vec4<i32>(clamp(i32(u.w) - cx0, 0, 16)) - first, vec4<i32>(0), vec4<i32>(4));
    return vec4<u32>(
        low_bytes(hi.x) & ~low_bytes(lo.x),
        low_bytes(hi.y) & ~low_bytes(lo.y),
        low_bytes(hi.z) & ~low_bytes(lo.z),
        low_bytes(hi.w) & ~low_bytes(lo.w),
    );
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
    let h = i32(u.h);
    let iy = i32(oy * u.stride_h + ky * u.dilation_h) - i32(u.pad_h);
    let row_ok = iy >= 0 && iy < h;
    let b = xplane + u32(clamp(iy, 0, h - 1)) * u.w + u32(ox0 * i32(SW) - i32(u.pad_w));
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
    if (SEARCH == 1u) {
        return pack_levels(v, c, h, px_ok);
    }
    let l = vec4<i32>(level_near(v.x, c, h), level_near(v.y, c, h), level_near(v.z, c, h),
        level_near(v.w, c, h));
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
    return Channel((n * u.c_in + c) * u.plane_words * 4u, o * KH * KWV);
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
    for (var ky = 0u; ky < KH; ky++) {
        let wr = weight_row(wq, ky);
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
    let e = load_e(o * table_stride());
    let zs = vec4<i32>(z * i32(load_e(o * table_stride() + 1u).y));
    let w0 = requantize(lo - zs, o, e, p0);
    let w1 = requantize(hi - zs, o, e, p0 + 4u);
    let out = t * u.pixel_tiles + 2u * i - u.y_base;
    if (2u * i < u.pixel_tiles) {
        y[out] = w0;
    }
    if (2u * i + 1u < u.pixel_tiles) {
        y[out + 1u] = w1;
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // No branch depends on the invocation but the final store's, and every loop has a
    // constant trip count: CPU adapters run both sides of a divergent branch.
    // The grid: (word groups of a plane, output channels, images).
    let o = wid.y;
    let n = u.n_begin + wid.z;
    if (PX8 == 1u) {
        main8(o, n, wid.x * WG + lid);
        return;
    }
    let t = n * u.c_out + o; // output plane
    let pt = wid.x * WG + lid;
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
        for (var ky = 0u; ky < KH; ky++) {
            let wr = weight_row(wq, ky);
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
        let h = i32(u.h);
        for (var ky = 0u; ky < KH; ky++) {
            let wr = weight_row(wq, ky);
            let iy = vec4<i32>(oy * u.stride_h + ky * u.dilation_h) - i32(u.pad_h);
            let row_ok = (iy >= vec4<i32>(0)) & (iy < vec4<i32>(h));
            for (var kx = 0u; kx < KW; kx++) {
                let wv = weight(wr, kx);
                let ix = vec4<i32>(ox * SW + kx * u.dilation_w) - i32(u.pad_w);
                let ok = row_ok & (ix >= vec4<i32>(0)) & (ix < vec4<i32>(i32(u.w)));
                let bi = xplane + vec4<u32>(max(iy, vec4<i32>(0))) * u.w
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
    let e = load_e(o * table_stride());
    let zs = z * i32(load_e(o * table_stride() + 1u).y);
    let word = requantize(acc - vec4<i32>(zs), o, e, p0);
    if (pt < u.pixel_tiles) {
        y[t * u.pixel_tiles + pt - u.y_base] = word;
    }
}
