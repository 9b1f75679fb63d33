// squint: depthwise int8 conv2d (one input channel per group, any channel multiplier m =
// out_channels / groups) with the requantization epilogue fused, appended to
// `epilogue_table.wgsl` and `conv_common.wgsl` (bindings, loads, the epilogue store).
// Sections between `//#if FLAG` / `//#else` / `//#endif` are selected on the host before
// compilation.
//
// Output channel o reads input channel c = o / m only, so there is no reduction over channels
// and no dot product: every multiply-add is one byte of x times one weight. The input is
// repacked by `conv_pack.wgsl` with channels contiguous (no per-group padding, so nothing is
// wasted): one vec4<u32> "quad" holds 16 consecutive input channels of one padded pixel, in the
// unsigned domain x' (quint8 bytes as they are, qint8 bytes XOR 0x80) with zero point z'.
// Weights are stored as i16 values w - w_zp (range [-255, 255]), so
//   acc[n, o, p] = sum_taps (x' - z') * (w - w_zp) = sum_taps x' * (w - w_zp) - z' * S(o),
// S(o) = sum_taps (w - w_zp) (from `wmeta`); padded taps hold z' and add exactly 0. Every product
// is an unsigned byte times a 16-bit value (a `pmaddwd` on x86).
//
// Tiling: a workgroup computes WG pixel tiles (4 consecutive pixels of one output plane, one
// packed output word) x 8 consecutive output channels (a channel block) of one image; each
// invocation computes one pixel tile x the 8 channels (32 accumulators). Per tap an invocation
// reads the quad(s) holding the 8 input channels at each of its 4 pixels (one quad when m = 1,
// the `IDENT` override; at most two otherwise) and one vec4 of 8 weights. The epilogue runs
// per channel as a table lookup (`epilogue_table.wgsl`).
//
// Buffers (XTEX: the read-only operands are rgba32uint storage textures, vec4 i at texel
// (i % 2^log2_width, i >> log2_width); else storage buffers bound as windows):
// * `u` (uniform): the dispatch's workgroup range, geometry, window bases / texture widths,
//   z', output zero point and clamp.
// * `xt` / `xa`: input quads, index ((n * padded_h + py) * padded_w + px) * quads_per_pixel
//   + channel / 16 (texture width 2^quads_tex_log2_width; buffer window from `u.a_base`).
// * `wt` / `wts`: one vec4<u32> per (channel block, tap): word i = the i16 weights of
//   channels 2i (low half) and 2i + 1 (high half) of the block (texture width
//   2^w_tex_log2_width; buffer
//   window from `u.w_base`).
// * `et` / `etab`: the epilogue table of `epilogue_table.wgsl`, E_VEC4 vec4s per output
//   channel, whose second vec4 is (0, S(o), 0, 0) (texture width
//   2^etab_tex_log2_width; buffer window from
//   vec4 `u.etab_base`).
// * `y` (storage, read_write): packed output words, `pixel_tiles` per (n, o) plane, window from
//   `u.y_base`.
// Workgroups are numbered (n, channel block, pixel-tile group), the last fastest.
//
// Channel slices: where even one output row's repacked input exceeds a binding, the host
// repacks and convolves the input channels 16·quad_base .. by slices of whole quads (see
// `ConvGeometry::k_split_bands`): a slice's workgroups cover its output channels' blocks from
// `block_base` (`c_end` is its last channel + 1), and its quads hold only its channels.

override WG: u32 = 64u;
// 1 when the channel multiplier is 1 (channel o reads channel o).
override IDENT: u32 = 1u;

// The host side is `ConvDwParams` in `src/gpu/kernels.rs` (field docs there; names and
// offsets are checked by `kernel_contract.rs`).
struct Params {
    wg_begin: u32,
    wg_count: u32,
    plane_workgroups: u32, // workgroups per (image, channel block)
    pixel_tiles: u32, // 4-pixel tiles per output plane
    channel_blocks: u32, // 8-channel blocks over all groups
    plane_out: u32,
    w_out: u32,
    c_out: u32,
    channel_multiplier: u32, // output channels per input channel
    kw: u32,
    taps: u32,
    quads_per_pixel: u32,
    padded_h: u32,
    padded_w: u32,
    stride_h: u32,
    stride_w: u32,
    step_x: u32, // quad step from a tap to the next tap
    step_y: u32, // quad step after a kernel row to the next row (wrapping)
    n_begin: u32,
    a_base: u32, // first quad of the quads buffer window
    quads_tex_log2_width: u32, // log2 width of the quads texture
    w_base: u32, // first vec4 of the weights buffer window
    w_tex_log2_width: u32, // log2 width of the weights texture
    etab_base: u32, // first vec4 of the epilogue-table buffer window
    y_base: u32, // first word of the output window
    x_zero_point: i32, // z': input zero point in the kernel's byte domain
    out_zp: i32,
    out_lo: i32,
    out_hi: i32,
    etab_tex_log2_width: u32, // log2 width of the epilogue-table texture
    block_base: u32, // first channel block of a channel slice (0 without one)
    quad_base: u32, // first input quad of a channel slice (its repacked quads start there)
    c_end: u32, // end of a channel slice's output channels (c_out without one)
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> u: Params;

fn bytes_u8(x: u32) -> vec4<i32> {
    return vec4<i32>(i32(x & 0xffu), i32((x >> 8u) & 0xffu), i32((x >> 16u) & 0xffu),
        i32(x >> 24u));
}

// Word k (0..7) of two consecutive quads.
fn word_of(t0: vec4<u32>, t1: vec4<u32>, k: u32) -> u32 {
    let t = select(t0, t1, k >= 4u);
    let k4 = k & 3u;
    return select(select(t.x, t.y, k4 == 1u), select(t.z, t.w, k4 == 3u), k4 >= 2u);
}

// The 8 input bytes (channels of the block's outputs) at one pixel: lanes 0..3 and 4..7.
struct Px {
    lo: vec4<i32>,
    hi: vec4<i32>,
}

fn gather(a: u32, half: u32, r: array<u32, 8>, two: bool) -> Px {
    let t0 = load_a(a);
    if (IDENT == 1u) {
        let lo = select(t0.x, t0.z, half == 1u);
        let hi = select(t0.y, t0.w, half == 1u);
        return Px(bytes_u8(lo), bytes_u8(hi));
    }
    var t1 = t0;
    if (two) {
        t1 = load_a(a + 1u);
    }
    var v: array<i32, 8>;
    for (var j = 0u; j < 8u; j++) {
        v[j] = i32((word_of(t0, t1, r[j] >> 2u) >> ((r[j] & 3u) * 8u)) & 0xffu);
    }
    return Px(vec4<i32>(v[0], v[1], v[2], v[3]), vec4<i32>(v[4], v[5], v[6], v[7]));
}

// Output channel o0 + j (if it exists): the zero-point correction of the 4 pixels' sums `v`,
// the epilogue, and the store of the packed word.
fn finish(j: u32, v: vec4<i32>, o0: u32, nch: u32, px_ok: vec4<bool>, plane0: u32, pt: u32) {
    if (j >= nch) {
        return;
    }
    let c = o0 + j;
    let acc = v - vec4<i32>(u.x_zero_point * i32(load_e(c * E_VEC4 + 1u).y));
    store_channel(c, acc, px_ok, plane0, pt);
}

fn w_lo16(w: vec4<u32>) -> vec4<i32> {
    return (vec4<i32>(w) << vec4<u32>(16u)) >> vec4<u32>(16u);
}

fn w_hi16(w: vec4<u32>) -> vec4<i32> {
    return vec4<i32>(w) >> vec4<u32>(16u);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    read_load_uniforms();
    let place = workgroup_place(wid, nwg);
    if (place.w == 0u) {
        return;
    }
    let ptg = place.x;
    let ob = place.y + u.block_base;
    let n = place.z;
    let o0 = ob * 8u;

    // Input channel of each output channel (clamped past the slice's last one), relative to
    // the first quad read.
    let c_end = u.c_end;
    let multiplier = u.channel_multiplier;
    let c0 = min(o0, c_end - 1u) / multiplier;
    let tq0 = c0 / 16u;
    var r: array<u32, 8>;
    for (var j = 0u; j < 8u; j++) {
        r[j] = min(o0 + j, c_end - 1u) / multiplier - tq0 * 16u;
    }
    let two = r[7] >= 16u;
    let half = (o0 / 8u) & 1u;

    let lanes = vec4<u32>(0u, 1u, 2u, 3u);
    let pt = ptg * WG + lid;
    let p = vec4<u32>(pt * 4u) + lanes;
    let pc = min(p, vec4<u32>(u.plane_out - 1u));
    let oy = pc / vec4<u32>(u.w_out);
    let ox = pc - oy * u.w_out;
    let a = ((vec4<u32>(n * u.padded_h) + oy * u.stride_h) * u.padded_w + ox * u.stride_w)
        * u.quads_per_pixel + tq0 - u.quad_base;

    var a0 = vec4<i32>(0);
    var a1 = vec4<i32>(0);
    var a2 = vec4<i32>(0);
    var a3 = vec4<i32>(0);
    var b0 = vec4<i32>(0);
    var b1 = vec4<i32>(0);
    var b2 = vec4<i32>(0);
    var b3 = vec4<i32>(0);
    let wq = ob * u.taps;
    var off = 0u;
    var kx = 0u;
    // The uniforms the loop reads, read once (as `read_load_uniforms` reads the loads').
    let taps = u.taps;
    let step_x = u.step_x;
    let step_y = u.step_y;
    let kw = u.kw;
    for (var tap = 0u; tap < taps; tap++) {
        let w = load_b(wq + tap);
        // Channels 0..3 and 4..7 of the block: words 0, 1 and 2, 3 of `w`.
        let wl4 = vec4<i32>(w_lo16(w).xy, w_hi16(w).xy).xzyw;
        let wh4 = vec4<i32>(w_lo16(w).zw, w_hi16(w).zw).xzyw;
        let x0 = gather(a.x + off, half, r, two);
        let x1 = gather(a.y + off, half, r, two);
        let x2 = gather(a.z + off, half, r, two);
        let x3 = gather(a.w + off, half, r, two);
        a0 += x0.lo * wl4;
        a1 += x1.lo * wl4;
        a2 += x2.lo * wl4;
        a3 += x3.lo * wl4;
        b0 += x0.hi * wh4;
        b1 += x1.hi * wh4;
        b2 += x2.hi * wh4;
        b3 += x3.hi * wh4;
        off += step_x;
        kx += 1u;
        if (kx == kw) {
            kx = 0u;
            off += step_y;
        }
    }

    // The epilogue.
    if (pt < u.pixel_tiles) {
        let px_ok = p < vec4<u32>(u.plane_out);
        let plane0 = (u.n_begin + n) * u.c_out;
        let nch = min(8u, u.c_end - o0);
        finish(0u, vec4<i32>(a0.x, a1.x, a2.x, a3.x), o0, nch, px_ok, plane0, pt);
        finish(1u, vec4<i32>(a0.y, a1.y, a2.y, a3.y), o0, nch, px_ok, plane0, pt);
        finish(2u, vec4<i32>(a0.z, a1.z, a2.z, a3.z), o0, nch, px_ok, plane0, pt);
        finish(3u, vec4<i32>(a0.w, a1.w, a2.w, a3.w), o0, nch, px_ok, plane0, pt);
        finish(4u, vec4<i32>(b0.x, b1.x, b2.x, b3.x), o0, nch, px_ok, plane0, pt);
        finish(5u, vec4<i32>(b0.y, b1.y, b2.y, b3.y), o0, nch, px_ok, plane0, pt);
        finish(6u, vec4<i32>(b0.z, b1.z, b2.z, b3.z), o0, nch, px_ok, plane0, pt);
        finish(7u, vec4<i32>(b0.w, b1.w, b2.w, b3.w), o0, nch, px_ok, plane0, pt);
    }
}
