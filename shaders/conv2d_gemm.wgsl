// squint: tiled implicit-GEMM int8 conv2d with the requantization epilogue fused, appended to
// `epilogue_table.wgsl` and `conv_common.wgsl` (bindings, loads, the epilogue store).
// Sections between `//#if FLAG` / `//#else` / `//#endif` are selected on the host (see
// `kernels.rs`) before compilation.
//
// GEMM view, per image n and group g: C[M = output pixels, N = output channels of g] =
// A[M, K] * B[K, N], K = kh * kw * (input channels of g rounded up to 16), computed exactly in
// wrapping i32 (the host checks with `Epilogue::check_accumulator` that the true sum fits):
//   acc[n, o, p] = sum_k (x'[n, p, k] - z') * (w[o, k] - w_zp(o))
//                = sum x'w - w_zp * sum x' - z' * sum w + K' * z' * w_zp        (K' = 16 * k_quads)
// x' is the input in the kernel's domain with zero point z' (signed bytes for `dot4I8Packed`,
// unsigned bytes for the fallback), padding and the channels that round a group up to 16 hold
// z' (so they add exactly 0), and `sum x'` is only accumulated when the override `WZP` is 1.
//
// A is never materialised: `conv_pack.wgsl` repacks the input once into "quads" (16 channels of
// one group at one padded pixel, one vec4<u32>), and the kernel reads A on the fly (implicit
// im2col) at the tap offsets. B is packed on the host the same way, one vec4 per (channel,
// quad). The K loop walks quads in (ky, kx, quad) order; one quad is 4 steps of 4 MACs.
//
// Tiling.
// * Workgroup tile: TM = 4 * WG output pixels (WG pixel tiles of 4 consecutive pixels of one
//   output plane) x TN = 8 output channels (a channel block of one group), for one image.
//   The K loop runs over all k_quads quads; B is staged per chunk of TKQ quads (SHARED) or per
//   quad.
// * Register tile: each invocation computes 4 pixels x 8 channels (32 i32 accumulators
//   a<pixel><channel>): per quad it reads 4 A quads (one per pixel) and 8 B quads, and each A
//   word feeds 8 dot products, each B word 4. One pixel tile is exactly one packed output word
//   per channel, so invocations never share an output word.
// * B staging (one of three, chosen on the host):
//   - SG (subgroups of at least 8 lanes): lane j of each subgroup loads channel j's quad and
//     the 8 quads reach every lane by `subgroupBroadcast` (registers, no barrier);
//   - SHARED: the workgroup stages TKQ quads x 8 channels of B in `var<workgroup>` memory
//     between two barriers (TKQ is an override chosen from the workgroup storage limit);
//   - DIRECT: every invocation loads the 8 quads itself (CPU adapters without subgroups:
//     there workgroup memory is ordinary memory read through a per-lane loop, slower than a
//     texture load, and barriers are coroutine switches).
// * A is read directly (each A quad of an invocation is used by that invocation only).
// Why these sizes: on lavapipe/llvmpipe (8 SIMD lanes of 32 bits, 32 vector registers) 4 x 8
// measured best (4 x 4, 2 x 8, 3 x 8, 4 x 6 and 5 x 8 were 5-25% slower: fewer accumulators
// reload operands more often, more spill); on GPUs it is a common register tile. The register
// tile is fixed by the code; the workgroup size WG (from the invocation limit; 8, one SIMD
// batch, on CPU adapters) and the chunk TKQ (from the workgroup storage limit) are overrides.
//
// Buffers (XTEX: the read-only operands are rgba32uint storage textures, vec4 i at texel
// (i % 2^log2_width, i >> log2_width); else storage buffers bound as windows):
// * `u` (uniform): the dispatch's workgroup range, the conv geometry, window bases / texture
//   widths, z', K', output zero point and clamp.
// * `xt` / `xa`: A quads, quad index ((n * padded_h + py) * padded_w + px) * quads_per_pixel
//   + g * quads_per_group + quad for chunk image n at padded pixel (py, px) (texture width
//   2^quads_tex_log2_width; buffer window from `u.a_base`).
// * `wt` / `wts`: B, one vec4 per (channel block, quad, lane j of the block) (texture width
//   2^w_tex_log2_width; buffer window from `u.w_base`).
// * `et` / `etab`: the epilogue table of `epilogue_table.wgsl`, E_VEC4 vec4s per output
//   channel, whose second vec4 is (w_zp, sum of the channel's weights, 0, 0) (texture width
//   2^etab_tex_log2_width; buffer window from vec4 `u.etab_base`).
// * `y` (storage, read_write): the packed output, `pixel_tiles` words per (n, o) plane, four
//   pixels per word, window from word `u.y_base`.
// Workgroups are numbered (n, channel block, pixel-tile group), the last fastest, `n` counting
// from the image chunk; a dispatch runs workgroups [wg_begin, wg_begin + wg_count) laid out as
// a 2-D grid.

override WZP: u32 = 0u;
override WG: u32 = 64u;
override TKQ: u32 = 16u;

// The host side is `ConvGemmParams` in `src/gpu/kernels.rs` (field docs there; names and
// offsets are checked by `kernel_contract.rs`).
struct Params {
    wg_begin: u32,
    wg_count: u32,
    plane_workgroups: u32, // workgroups per (image, channel block)
    pixel_tiles: u32, // 4-pixel tiles per output plane
    channel_blocks: u32, // 8-channel blocks over all groups
    blocks_per_group: u32,
    plane_out: u32,
    w_out: u32,
    c_out: u32,
    c_out_per_group: u32,
    kw: u32,
    k_quads: u32,
    quads_per_group: u32,
    quads_per_pixel: u32,
    padded_h: u32,
    padded_w: u32,
    stride_h: u32,
    stride_w: u32,
    step_kx: u32, // quad step after a tap to the next tap (wrapping)
    step_ky: u32, // quad step after a kernel row to the next row (wrapping)
    n_begin: u32,
    a_base: u32, // first quad of the quads buffer window
    quads_tex_log2_width: u32, // log2 width of the quads texture
    w_base: u32, // first vec4 of the weights buffer window
    w_tex_log2_width: u32, // log2 width of the weights texture
    etab_base: u32, // first vec4 of the epilogue-table buffer window
    y_base: u32, // first word of the output window
    x_zero_point: i32, // z': input zero point in the kernel's byte domain
    k_padded: i32, // K' = 16 * k_quads, for the K' * z' * w_zp correction
    out_zp: i32,
    out_lo: i32,
    out_hi: i32,
    etab_tex_log2_width: u32, // log2 width of the epilogue-table texture
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> u: Params;

//#if SHARED
var<workgroup> wtile: array<vec4<u32>, TKQ * 8u>;
//#endif

//#if PACKED
// One A word (4 signed bytes) dot one B word.
fn dd(x: u32, w: u32) -> i32 {
    return dot4I8Packed(x, w);
}

// Sum of the 16 signed bytes of an A quad.
fn xsum(x: vec4<u32>) -> i32 {
    let ones = 0x01010101u;
    return dot4I8Packed(x.x, ones) + dot4I8Packed(x.y, ones) + dot4I8Packed(x.z, ones)
        + dot4I8Packed(x.w, ones);
}
//#else
// Fallback without `dot4I8Packed`: 4 unsigned A bytes times 4 sign-extended B bytes, every
// product a plain i32 multiply of two small values (x86 compilers turn it into `pmaddwd`).
fn dd(x: u32, w: u32) -> i32 {
    let v = i32(w);
    return i32(x & 0xffu) * ((v << 24u) >> 24u) + i32((x >> 8u) & 0xffu) * ((v << 16u) >> 24u)
        + i32((x >> 16u) & 0xffu) * ((v << 8u) >> 24u) + i32(x >> 24u) * (v >> 24u);
}

// Sum of the 16 unsigned bytes of an A quad.
fn xsum(x: vec4<u32>) -> i32 {
    let lo = (x & vec4<u32>(0x00ff00ffu)) + ((x >> vec4<u32>(8u)) & vec4<u32>(0x00ff00ffu));
    let h = lo.x + lo.y + lo.z + lo.w;
    return i32((h & 0xffffu) + (h >> 16u));
}
//#endif

// Output channel j of the block (if it exists): zero-point corrections of the 4 pixels'
// sums `v`, the epilogue, and the store of the packed word.
fn finish(j: u32, v: vec4<i32>, sums: vec4<i32>, c0: u32, nch: u32, px_ok: vec4<bool>, plane0: u32,
    pt: u32) {
    if (j >= nch) {
        return;
    }
    let c = c0 + j;
    let m = vec2<i32>(load_e(c * E_VEC4 + 1u).xy);
    let z = u.x_zero_point;
    var acc = v + vec4<i32>(u.k_padded * z * m.x - z * m.y);
    if (WZP == 1u) {
        acc = acc - m.x * sums;
    }
    store_channel(c, acc, px_ok, plane0, pt);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
//#if SG
    @builtin(subgroup_invocation_id) sl: u32,
//#endif
) {
    // Uniform across the workgroup (so no invocation leaves before a barrier or broadcast).
    let wl = wid.y * nwg.x + wid.x;
    if (wl >= u.wg_count) {
        return;
    }
    let wg = u.wg_begin + wl;
    let ptg = wg % u.plane_workgroups;
    let t = wg / u.plane_workgroups;
    let cb = t % u.channel_blocks;
    let n = t / u.channel_blocks;
    let g = cb / u.blocks_per_group;
    let bl = cb - g * u.blocks_per_group;
    let lanes = vec4<u32>(0u, 1u, 2u, 3u);

    // The 4 output pixels of this invocation's tile (clamped for reading) and the A quad of
    // each one's top-left tap.
    let pt = ptg * WG + lid;
    let p = vec4<u32>(pt * 4u) + lanes;
    let pc = min(p, vec4<u32>(u.plane_out - 1u));
    let oy = pc / vec4<u32>(u.w_out);
    let ox = pc - oy * u.w_out;
    let a = ((vec4<u32>(n * u.padded_h) + oy * u.stride_h) * u.padded_w + ox * u.stride_w)
        * u.quads_per_pixel + g * u.quads_per_group;

    // Accumulator a<q><j>: pixel q, channel j of the block; s<q>: sum of x' of pixel q.
    var a00 = 0; var a01 = 0; var a02 = 0; var a03 = 0; var a04 = 0; var a05 = 0; var a06 = 0; var a07 = 0;
    var a10 = 0; var a11 = 0; var a12 = 0; var a13 = 0; var a14 = 0; var a15 = 0; var a16 = 0; var a17 = 0;
    var a20 = 0; var a21 = 0; var a22 = 0; var a23 = 0; var a24 = 0; var a25 = 0; var a26 = 0; var a27 = 0;
    var a30 = 0; var a31 = 0; var a32 = 0; var a33 = 0; var a34 = 0; var a35 = 0; var a36 = 0; var a37 = 0;
    var s0 = 0;
    var s1 = 0;
    var s2 = 0;
    var s3 = 0;
    // B index of this block's first quad (per lane with subgroups: lane j loads channel j);
    // `off` follows the quad (ky, kx, qq) through the taps.
    let wq = cb * u.k_quads * 8u;
//#if SG
    var wi = wq + min(sl, 7u);
//#else
    var wi = wq;
//#endif
    var off = 0u;
    var qq = 0u;
    var kx = 0u;
    for (var q = 0u; q < u.k_quads; q++) {
//#if SG
        let wv = load_b(wi);
        let w0 = subgroupBroadcast(wv, 0u);
        let w1 = subgroupBroadcast(wv, 1u);
        let w2 = subgroupBroadcast(wv, 2u);
        let w3 = subgroupBroadcast(wv, 3u);
        let w4 = subgroupBroadcast(wv, 4u);
        let w5 = subgroupBroadcast(wv, 5u);
        let w6 = subgroupBroadcast(wv, 6u);
        let w7 = subgroupBroadcast(wv, 7u);
//#else
//#if SHARED
        // Stage the next TKQ quads of B (a uniform condition: every invocation reaches the
        // barriers).
        let qi = q % TKQ;
        if (qi == 0u) {
            let qn = min(TKQ, u.k_quads - q);
            workgroupBarrier();
            for (var e = lid; e < qn * 8u; e += WG) {
                wtile[e] = load_b(wi + e);
            }
            workgroupBarrier();
        }
        let tb = qi * 8u;
        let w0 = wtile[tb];
        let w1 = wtile[tb + 1u];
        let w2 = wtile[tb + 2u];
        let w3 = wtile[tb + 3u];
        let w4 = wtile[tb + 4u];
        let w5 = wtile[tb + 5u];
        let w6 = wtile[tb + 6u];
        let w7 = wtile[tb + 7u];
//#else
        let w0 = load_b(wi);
        let w1 = load_b(wi + 1u);
        let w2 = load_b(wi + 2u);
        let w3 = load_b(wi + 3u);
        let w4 = load_b(wi + 4u);
        let w5 = load_b(wi + 5u);
        let w6 = load_b(wi + 6u);
        let w7 = load_b(wi + 7u);
//#endif
//#endif
        wi += 8u;
        let x0 = load_a(a.x + off);
        let x1 = load_a(a.y + off);
        let x2 = load_a(a.z + off);
        let x3 = load_a(a.w + off);
        // The register tile, one step (4 MACs per output) per byte group of the quads.
        // Step 0: byte group x of every quad.
        a00 += dd(x0.x, w0.x); a10 += dd(x1.x, w0.x); a20 += dd(x2.x, w0.x); a30 += dd(x3.x, w0.x);
        a01 += dd(x0.x, w1.x); a11 += dd(x1.x, w1.x); a21 += dd(x2.x, w1.x); a31 += dd(x3.x, w1.x);
        a02 += dd(x0.x, w2.x); a12 += dd(x1.x, w2.x); a22 += dd(x2.x, w2.x); a32 += dd(x3.x, w2.x);
        a03 += dd(x0.x, w3.x); a13 += dd(x1.x, w3.x); a23 += dd(x2.x, w3.x); a33 += dd(x3.x, w3.x);
        a04 += dd(x0.x, w4.x); a14 += dd(x1.x, w4.x); a24 += dd(x2.x, w4.x); a34 += dd(x3.x, w4.x);
        a05 += dd(x0.x, w5.x); a15 += dd(x1.x, w5.x); a25 += dd(x2.x, w5.x); a35 += dd(x3.x, w5.x);
        a06 += dd(x0.x, w6.x); a16 += dd(x1.x, w6.x); a26 += dd(x2.x, w6.x); a36 += dd(x3.x, w6.x);
        a07 += dd(x0.x, w7.x); a17 += dd(x1.x, w7.x); a27 += dd(x2.x, w7.x); a37 += dd(x3.x, w7.x);
        // Step 1: byte group y of every quad.
        a00 += dd(x0.y, w0.y); a10 += dd(x1.y, w0.y); a20 += dd(x2.y, w0.y); a30 += dd(x3.y, w0.y);
        a01 += dd(x0.y, w1.y); a11 += dd(x1.y, w1.y); a21 += dd(x2.y, w1.y); a31 += dd(x3.y, w1.y);
        a02 += dd(x0.y, w2.y); a12 += dd(x1.y, w2.y); a22 += dd(x2.y, w2.y); a32 += dd(x3.y, w2.y);
        a03 += dd(x0.y, w3.y); a13 += dd(x1.y, w3.y); a23 += dd(x2.y, w3.y); a33 += dd(x3.y, w3.y);
        a04 += dd(x0.y, w4.y); a14 += dd(x1.y, w4.y); a24 += dd(x2.y, w4.y); a34 += dd(x3.y, w4.y);
        a05 += dd(x0.y, w5.y); a15 += dd(x1.y, w5.y); a25 += dd(x2.y, w5.y); a35 += dd(x3.y, w5.y);
        a06 += dd(x0.y, w6.y); a16 += dd(x1.y, w6.y); a26 += dd(x2.y, w6.y); a36 += dd(x3.y, w6.y);
        a07 += dd(x0.y, w7.y); a17 += dd(x1.y, w7.y); a27 += dd(x2.y, w7.y); a37 += dd(x3.y, w7.y);
        // Step 2: byte group z of every quad.
        a00 += dd(x0.z, w0.z); a10 += dd(x1.z, w0.z); a20 += dd(x2.z, w0.z); a30 += dd(x3.z, w0.z);
        a01 += dd(x0.z, w1.z); a11 += dd(x1.z, w1.z); a21 += dd(x2.z, w1.z); a31 += dd(x3.z, w1.z);
        a02 += dd(x0.z, w2.z); a12 += dd(x1.z, w2.z); a22 += dd(x2.z, w2.z); a32 += dd(x3.z, w2.z);
        a03 += dd(x0.z, w3.z); a13 += dd(x1.z, w3.z); a23 += dd(x2.z, w3.z); a33 += dd(x3.z, w3.z);
        a04 += dd(x0.z, w4.z); a14 += dd(x1.z, w4.z); a24 += dd(x2.z, w4.z); a34 += dd(x3.z, w4.z);
        a05 += dd(x0.z, w5.z); a15 += dd(x1.z, w5.z); a25 += dd(x2.z, w5.z); a35 += dd(x3.z, w5.z);
        a06 += dd(x0.z, w6.z); a16 += dd(x1.z, w6.z); a26 += dd(x2.z, w6.z); a36 += dd(x3.z, w6.z);
        a07 += dd(x0.z, w7.z); a17 += dd(x1.z, w7.z); a27 += dd(x2.z, w7.z); a37 += dd(x3.z, w7.z);
        // Step 3: byte group w of every quad.
        a00 += dd(x0.w, w0.w); a10 += dd(x1.w, w0.w); a20 += dd(x2.w, w0.w); a30 += dd(x3.w, w0.w);
        a01 += dd(x0.w, w1.w); a11 += dd(x1.w, w1.w); a21 += dd(x2.w, w1.w); a31 += dd(x3.w, w1.w);
        a02 += dd(x0.w, w2.w); a12 += dd(x1.w, w2.w); a22 += dd(x2.w, w2.w); a32 += dd(x3.w, w2.w);
        a03 += dd(x0.w, w3.w); a13 += dd(x1.w, w3.w); a23 += dd(x2.w, w3.w); a33 += dd(x3.w, w3.w);
        a04 += dd(x0.w, w4.w); a14 += dd(x1.w, w4.w); a24 += dd(x2.w, w4.w); a34 += dd(x3.w, w4.w);
        a05 += dd(x0.w, w5.w); a15 += dd(x1.w, w5.w); a25 += dd(x2.w, w5.w); a35 += dd(x3.w, w5.w);
        a06 += dd(x0.w, w6.w); a16 += dd(x1.w, w6.w); a26 += dd(x2.w, w6.w); a36 += dd(x3.w, w6.w);
        a07 += dd(x0.w, w7.w); a17 += dd(x1.w, w7.w); a27 += dd(x2.w, w7.w); a37 += dd(x3.w, w7.w);
        if (WZP == 1u) {
            s0 += xsum(x0);
            s1 += xsum(x1);
            s2 += xsum(x2);
            s3 += xsum(x3);
        }
        off += 1u;
        qq += 1u;
        if (qq == u.quads_per_group) {
            qq = 0u;
            off += u.step_kx;
            kx += 1u;
            if (kx == u.kw) {
                kx = 0u;
                off += u.step_ky;
            }
        }
    }

    // Zero points and the epilogue: requantize, pack the 4 pixels of each channel in a word.
    if (pt < u.pixel_tiles) {
        let px_ok = p < vec4<u32>(u.plane_out);
        let plane0 = (u.n_begin + n) * u.c_out;
        let sums = vec4<i32>(s0, s1, s2, s3);
        let nch = min(8u, u.c_out_per_group - bl * 8u);
        let c0 = g * u.c_out_per_group + bl * 8u;
        finish(0u, vec4<i32>(a00, a10, a20, a30), sums, c0, nch, px_ok, plane0, pt);
        finish(1u, vec4<i32>(a01, a11, a21, a31), sums, c0, nch, px_ok, plane0, pt);
        finish(2u, vec4<i32>(a02, a12, a22, a32), sums, c0, nch, px_ok, plane0, pt);
        finish(3u, vec4<i32>(a03, a13, a23, a33), sums, c0, nch, px_ok, plane0, pt);
        finish(4u, vec4<i32>(a04, a14, a24, a34), sums, c0, nch, px_ok, plane0, pt);
        finish(5u, vec4<i32>(a05, a15, a25, a35), sums, c0, nch, px_ok, plane0, pt);
        finish(6u, vec4<i32>(a06, a16, a26, a36), sums, c0, nch, px_ok, plane0, pt);
        finish(7u, vec4<i32>(a07, a17, a27, a37), sums, c0, nch, px_ok, plane0, pt);
    }
}
