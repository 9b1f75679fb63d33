// squint: what the implicit-GEMM int8 conv kernels share, appended after
// `epilogue_table.wgsl` and `conv_common.wgsl` (bindings, loads, the epilogue store) and before
// the kernel: `conv2d_gemm.wgsl` (one 8-channel block per workgroup; CPU adapters) or
// `conv2d_gemm_tiled.wgsl` (workgroup tiles staged in workgroup memory; GPUs). Sections
// between `//#if FLAG` / `//#else` / `//#endif` are selected on the host (see `kernels.rs`)
// before compilation.
//
//
// Split along K (KSPLIT in `conv2d_gemm.wgsl`, with SG or DIRECT staging): when even one
// output row's repacked input exceeds a binding, the host repacks and convolves slices of
// the groups (from `group_base`, convs of their own) and, where one group is still too much,
// slices of each group's quads, one at a time (see `ConvGeometry::k_split_bands`). The
// dispatch of a slice of quads sums its quads (the weights of the others are skipped at each
// tap: `w_first`, `w_tap_skip`) and, with `k_pass`, adds the partial sums of the group's
// earlier slices from `part` (binding 5, one vec4<i32> per packed output word, indexed like
// `y` from `p_base`); the last slice adds the zero-point terms of the whole K and runs the
// epilogue. The sums are exact: every term is the same wrapping i32 arithmetic as without the
// split, only added in another order.
//
// Parallel K slices (KSPLIT in `conv2d_gemm_tiled.wgsl`): when one image's GEMM has too few
// workgroups to fill a GPU, each workgroup tile runs as `k_slices` workgroups, slice s summing
// quads [s * slice_quads, (s + 1) * slice_quads) of K, all in one dispatch. Each stores its
// sums (with the w_zp * sum x' term of its quads, `k_pass` 0) at vec4 `s * slice_words` + the
// word's index in `part`; `conv2d_gemm_reduce.wgsl` then adds the slices of each output word
// in slice order, adds the zero-point terms of the whole K and runs the epilogue. Exact for
// the same reason.
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
//
// Register tile (both kernels): each invocation computes 4 consecutive output pixels of one
// plane (a pixel tile, exactly one packed output word per channel, so invocations never share
// an output word) x the 8 output channels of one channel block: 8 vec4<i32> accumulators, one
// per channel, lane q for pixel q. Per quad it reads 4 A quads (one per pixel) and 8 B quads,
// and each A word feeds 8 dot products, each B word 4 (`quad4`).
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

// The host side is `ConvGemmParams` in `src/gpu/kernels.rs` (field docs there; names and
// offsets are checked by `kernel_contract.rs`).
struct Params {
    wg_begin: u32,
    wg_count: u32,
    plane_workgroups: u32, // workgroups per (image, channel block)
    pixel_tiles: u32, // 4-pixel tiles per output plane
    channel_blocks: u32, // the workgroups' channel blocks over all groups
    blocks_per_group: u32, // 8-channel blocks per group
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
    w_block_quads: u32, // B quads per channel of a block: the whole K (kh * kw * group quads)
    w_first: u32, // B index of a K slice's first quad in its block (8 * its first group quad)
    w_tap_skip: u32, // B index step past the group quads outside a K slice, after each tap
    k_pass: u32, // KSPLIT: bit 0 adds the earlier slices' partial sums, bit 1 finishes
    p_base: u32, // KSPLIT: first vec4 of the partial-sums window
    group_base: u32, // the first group of a slice of groups (`conv2d_gemm.wgsl` only)
    k_slices: u32, // KSPLIT, tiled kernel: parallel K slices per output tile
    slice_quads: u32, // KSPLIT, tiled kernel: quads per parallel K slice
    slice_words: u32, // KSPLIT, tiled kernel: vec4s per slice in the partial sums
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> u: Params;

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

// One quad of one output channel (B quad `w`) for the 4 pixels' A quads: 16 MACs per pixel.
fn quad4(x0: vec4<u32>, x1: vec4<u32>, x2: vec4<u32>, x3: vec4<u32>, w: vec4<u32>) -> vec4<i32> {
    return vec4<i32>(
        dd(x0.x, w.x) + dd(x0.y, w.y) + dd(x0.z, w.z) + dd(x0.w, w.w),
        dd(x1.x, w.x) + dd(x1.y, w.y) + dd(x1.z, w.z) + dd(x1.w, w.w),
        dd(x2.x, w.x) + dd(x2.y, w.y) + dd(x2.z, w.z) + dd(x2.w, w.w),
        dd(x3.x, w.x) + dd(x3.y, w.y) + dd(x3.z, w.z) + dd(x3.w, w.w),
    );
}

// The epilogue vec4s of a block's 8 output channels: channel j's header `h[j]` and second
// vec4 `m[j]` (weight zero point, weight sum); a block of fewer channels repeats its last.
struct BlockEpilogue {
    h: array<vec4<u32>, 8>,
    m: array<vec4<u32>, 8>,
}

// The first output channel and the channel count (at most 8) of block `bl` of group g.
fn block_channels(g: u32, bl: u32) -> vec2<u32> {
    return vec2<u32>(g * u.c_out_per_group + bl * 8u, min(8u, u.c_out_per_group - bl * 8u));
}

// Channel j's vec4 of the block's epilogue at vec4 `k` of its table entry (0: header, 1:
// weight terms), read by this invocation.
fn block_vec4(b: vec2<u32>, j: u32, k: u32) -> vec4<u32> {
    return load_e((b.x + min(j, b.y - 1u)) * E_VEC4 + k);
}

// Output channel j of the block (if it exists): zero-point corrections of the 4 pixels'
// sums `v`, the epilogue, and the store of the packed word (with KSPLIT, of partial sums at
// vec4 `po` past the word's index). The channel's epilogue vec4s are `e`'s where `preread`
// (a constant at each call), else read here, when needed.
fn finish(j: u32, v: vec4<i32>, sums: vec4<i32>, c0: u32, nch: u32, px_ok: vec4<bool>, plane0: u32,
    pt: u32, po: u32, e: BlockEpilogue, preread: bool) {
    if (j >= nch) {
        return;
    }
    let c = c0 + j;
    var mv = e.m[j];
    if (!preread) {
        mv = load_e(c * E_VEC4 + 1u);
    }
    let m = vec2<i32>(mv.xy);
    var acc = v;
    if (WZP == 1u) {
        acc = acc - m.x * sums;
    }
//#if KSPLIT
    // One slice of K: add the earlier slices' sums (same wrapping i32 terms, in another
    // order), and keep the total for the next slice unless this one is the last.
    let pi = (plane0 + c) * u.pixel_tiles + pt - u.p_base + po;
    if ((u.k_pass & 1u) != 0u) {
        acc += part[pi];
    }
    if ((u.k_pass & 2u) == 0u) {
        part[pi] = acc;
        return;
    }
//#endif
    let z = u.x_zero_point;
    acc = acc + vec4<i32>(u.k_padded * z * m.x - z * m.y);
    if (preread) {
        store_channel_h(c, e.h[j], acc, px_ok, plane0, pt);
    } else {
        store_channel(c, acc, px_ok, plane0, pt);
    }
}

// The epilogue of an invocation's register tile: accumulators c<j> (channel j of block `bl`
// of group g, lane q for pixel q of tile `pt` of chunk image n) and the pixels' sums of x';
// `po`: see `finish`.
fn finish_tile(c0: vec4<i32>, c1: vec4<i32>, c2: vec4<i32>, c3: vec4<i32>, c4: vec4<i32>,
    c5: vec4<i32>, c6: vec4<i32>, c7: vec4<i32>, sums: vec4<i32>, n: u32, g: u32, bl: u32,
    pt: u32, po: u32) {
    let empty = array<vec4<u32>, 8>();
    let e = BlockEpilogue(empty, empty);
    tile_epilogue(c0, c1, c2, c3, c4, c5, c6, c7, sums, n, g, bl, pt, po, e, false);
}

// `finish_tile` with the block's epilogue vec4s `e` already read (subgroup staging).
fn finish_tile_with(c0: vec4<i32>, c1: vec4<i32>, c2: vec4<i32>, c3: vec4<i32>,
    c4: vec4<i32>, c5: vec4<i32>, c6: vec4<i32>, c7: vec4<i32>, sums: vec4<i32>, n: u32, g: u32,
    bl: u32, pt: u32, po: u32, e: BlockEpilogue) {
    tile_epilogue(c0, c1, c2, c3, c4, c5, c6, c7, sums, n, g, bl, pt, po, e, true);
}

// `finish` for the tile's 8 channels (`e`, `preread`: see `finish`).
fn tile_epilogue(c0: vec4<i32>, c1: vec4<i32>, c2: vec4<i32>, c3: vec4<i32>, c4: vec4<i32>,
    c5: vec4<i32>, c6: vec4<i32>, c7: vec4<i32>, sums: vec4<i32>, n: u32, g: u32, bl: u32,
    pt: u32, po: u32, e: BlockEpilogue, preread: bool) {
    let p = vec4<u32>(pt * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    let px_ok = p < vec4<u32>(u.plane_out);
    let plane0 = (u.n_begin + n) * u.c_out;
    let b = block_channels(g, bl);
    let ch0 = b.x;
    let nch = b.y;
    finish(0u, c0, sums, ch0, nch, px_ok, plane0, pt, po, e, preread);
    finish(1u, c1, sums, ch0, nch, px_ok, plane0, pt, po, e, preread);
    finish(2u, c2, sums, ch0, nch, px_ok, plane0, pt, po, e, preread);
    finish(3u, c3, sums, ch0, nch, px_ok, plane0, pt, po, e, preread);
    finish(4u, c4, sums, ch0, nch, px_ok, plane0, pt, po, e, preread);
    finish(5u, c5, sums, ch0, nch, px_ok, plane0, pt, po, e, preread);
    finish(6u, c6, sums, ch0, nch, px_ok, plane0, pt, po, e, preread);
    finish(7u, c7, sums, ch0, nch, px_ok, plane0, pt, po, e, preread);
}
