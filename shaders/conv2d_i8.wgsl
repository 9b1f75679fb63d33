// squint: int8 conv2d with the requantization epilogue fused, appended to `common.wgsl` and
// `epilogue.wgsl`.
//
// acc[n, o, oy, ox] = sum_{i, ky, kx} (x - x_zp)[n, g*cig + i, oy*sh + ky*dh, ox*sw + kx*dw]
//                                     * (w - w_zp(o))[o, i, ky, kx]          (exact i32)
// then `requant(acc, o)`, and the output byte is stored packed. The sum is exact whenever its
// true value fits int32 (the host checks the worst case with `Epilogue::check_accumulator`):
// wrapping partial sums do not matter modulo 2^32.
//
// The input arrives repacked by `conv_pack.wgsl`: one u32 = 4 consecutive channels of a group
// at one padded pixel, in the signed domain x' with zero point z' (padding, and the channels
// rounding a group up to a multiple of 4, hold z'). The reduction runs over k4 = ceil(cig/4) *
// kh * kw steps (c4, ky, kx) of 4 channels each. Weights are packed the same way (raw int8, 0
// for the rounding channels), so one `dot4I8Packed` does 4 multiply-adds, and the zero points
// are applied once at the end:
//   acc = sum x'w - w_zp * sum x' - z' * sum w + K' * z' * w_zp          (K' = 4 * k4)
// (padded taps then contribute exactly 0). `sum w` per channel comes from `wmeta`; `sum x'` is
// only accumulated when the override `WZP` is 1 (some weight zero point is not 0).
//
// Register blocking. `MODE` 0: one invocation computes 8 output channels (two blocks of 4
// "lanes" of one group) x 4 consecutive output pixels of one plane (a "pixel tile", exactly one
// packed output word per channel): per step 4 x loads and 2 weight loads feed 32
// `dot4I8Packed`. `MODE` 1 (depthwise and other convs with < 4 output channels per group): 4
// lanes, each reading its own group's x, x 4 pixels.
// Work split: one workgroup = 64 consecutive pixel tiles of one (image, channel superblock), so
// the channels, their weights and the reduction loop are uniform across the workgroup: on SIMD
// adapters (lavapipe, llvmpipe) the weight loads are scalar and only the x loads vary per
// invocation. This (step, register tile) structure is what a later tiled kernel can stage
// through workgroup memory.
//
// Buffers:
// * `u` (uniform): the dispatch's workgroup range, conv geometry, window bases, z', output
//   zp and clamp.
// * `xq` (storage, read): the repacked input; image 0 is the first image of the current image
//   chunk. A window starting at word `u.xq_base`.
// * `wts` (storage, read): one vec4<u32> per (block of 4 output channels, step): lane j = the 4
//   packed int8 weights of channel j of the block. A window starting at vec4 `u.w_base`.
// * `epi` (storage, read): one `ChannelRequant` per output channel, window from `u.e_base`.
// * `wmeta` (storage, read): vec2<i32>(w_zp, sum of the channel's weights) per output channel,
//   window from `u.m_base`.
// * `y` (storage, read_write): packed output, four bytes per u32 little-endian, `ptiles` words
//   per (n, o) plane (plane bytes padded to a multiple of 4). A window from word `u.y_base`.
// Workgroups are numbered (n, superblock, pixel-tile group), the last fastest; `n` counts from
// the image chunk; a dispatch runs workgroups [wg_begin, wg_begin + wg_count). A superblock is
// two blocks of 4 channels of one group in `MODE` 0 (`spg` per group), one block in `MODE` 1.

override MODE: u32 = 0u;
override WZP: u32 = 0u;

struct Params {
    wg_begin: u32,
    wg_count: u32,
    gpp: u32,
    ptiles: u32,
    sblocks: u32,
    spg: u32,
    cbpg: u32,
    plane_out: u32,
    w_out: u32,
    c_out: u32,
    cog: u32,
    kh: u32,
    kw: u32,
    k4: u32,
    c4pg: u32,
    groups: u32,
    hp: u32,
    wp: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    n_begin: u32,
    xq_base: u32,
    w_base: u32,
    e_base: u32,
    m_base: u32,
    y_base: u32,
    xz: i32,
    out_zp: i32,
    out_lo: i32,
    out_hi: i32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> xq: array<u32>;
@group(0) @binding(2) var<storage, read> wts: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> epi: array<ChannelRequant>;
@group(0) @binding(4) var<storage, read> wmeta: array<vec2<i32>>;
@group(0) @binding(5) var<storage, read_write> y: array<u32>;

const ONES: u32 = 0x01010101u;

// One x word against the 4 lanes' weight words.
fn dot4x4(x: u32, w: vec4<u32>) -> vec4<i32> {
    return vec4<i32>(
        dot4I8Packed(x, w.x),
        dot4I8Packed(x, w.y),
        dot4I8Packed(x, w.z),
        dot4I8Packed(x, w.w),
    );
}

// Lane j's x word against lane j's weight word.
fn dot4_lanes(x: vec4<u32>, w: vec4<u32>) -> vec4<i32> {
    return vec4<i32>(
        dot4I8Packed(x.x, w.x),
        dot4I8Packed(x.y, w.y),
        dot4I8Packed(x.z, w.z),
        dot4I8Packed(x.w, w.w),
    );
}

fn sum4_lanes(x: vec4<u32>) -> vec4<i32> {
    return dot4_lanes(x, vec4<u32>(ONES));
}

// Per-lane zero-point terms of channels `ch`: (w_zp, K' * z' * w_zp - z' * sum w).
fn corrections(ch: vec4<u32>, z: i32) -> array<vec4<i32>, 2> {
    let cc = min(ch, vec4<u32>(u.c_out - 1u)) - u.m_base;
    let m0 = wmeta[cc.x];
    let m1 = wmeta[cc.y];
    let m2 = wmeta[cc.z];
    let m3 = wmeta[cc.w];
    let wz = vec4<i32>(m0.x, m1.x, m2.x, m3.x);
    let kext = i32(u.k4 * 4u);
    let corr = kext * z * wz - z * vec4<i32>(m0.y, m1.y, m2.y, m3.y);
    return array<vec4<i32>, 2>(wz, corr);
}

// Requantizes the 4 pixels `v` of output channel `c` and stores them as one word (bytes of
// pixels past the end of the plane are 0).
fn store_channel(ok: bool, c: u32, v: vec4<i32>, px_ok: vec4<bool>, plane0: u32, pt: u32) {
    if (!ok) {
        return;
    }
    var packed = 0u;
    for (var q = 0u; q < 4u; q = q + 1u) {
        if (px_ok[q]) {
            let r = requant(v[q], c - u.e_base);
            packed = packed | ((u32(r) & 0xffu) << (8u * q));
        }
    }
    y[(plane0 + c) * u.ptiles + pt - u.y_base] = packed;
}

fn store_block(ok: vec4<bool>, ch: vec4<u32>, a0: vec4<i32>, a1: vec4<i32>, a2: vec4<i32>,
               a3: vec4<i32>, px_ok: vec4<bool>, plane0: u32, pt: u32) {
    store_channel(ok.x, ch.x, vec4<i32>(a0.x, a1.x, a2.x, a3.x), px_ok, plane0, pt);
    store_channel(ok.y, ch.y, vec4<i32>(a0.y, a1.y, a2.y, a3.y), px_ok, plane0, pt);
    store_channel(ok.z, ch.z, vec4<i32>(a0.z, a1.z, a2.z, a3.z), px_ok, plane0, pt);
    store_channel(ok.w, ch.w, vec4<i32>(a0.w, a1.w, a2.w, a3.w), px_ok, plane0, pt);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let wl = wid.y * nwg.x + wid.x;
    if (wl >= u.wg_count) {
        return;
    }
    // Uniform across the workgroup: image, superblock, pixel-tile group.
    let wg = u.wg_begin + wl;
    let ptg = wg % u.gpp;
    let t = wg / u.gpp;
    let sbi = t % u.sblocks;
    let n = t / u.sblocks;
    let pt = ptg * 64u + lid;
    let hpwp = u.hp * u.wp;
    let lanes = vec4<u32>(0u, 1u, 2u, 3u);
    let z = u.xz;

    // Channels of the lanes (block A, and block B in MODE 0), the first weight vec4 of each
    // block, and the first xq plane of each lane's group.
    var ch_a: vec4<u32>;
    var ok_a: vec4<bool>;
    var ch_b = vec4<u32>(0u);
    var ok_b = vec4<bool>(false);
    var wi_a: u32;
    var wi_b: u32;
    var gbase: vec4<u32>;
    if (MODE == 0u) {
        let g = sbi / u.spg;
        let bl = (sbi - g * u.spg) * 2u;
        let local_ch = vec4<u32>(bl * 4u) + lanes;
        ok_a = local_ch < vec4<u32>(u.cog);
        ok_b = local_ch + 4u < vec4<u32>(u.cog);
        ch_a = vec4<u32>(g * u.cog) + local_ch;
        ch_b = ch_a + 4u;
        let cb = g * u.cbpg + bl;
        wi_a = cb * u.k4 - u.w_base;
        // Without a second block, read the first one's weights again (results unused).
        wi_b = select(wi_a, wi_a + u.k4, bl + 1u < u.cbpg);
        gbase = vec4<u32>((n * u.groups + g) * u.c4pg * hpwp);
    } else {
        ch_a = vec4<u32>(sbi * 4u) + lanes;
        ok_a = ch_a < vec4<u32>(u.c_out);
        wi_a = sbi * u.k4 - u.w_base;
        wi_b = wi_a;
        let g = min(ch_a, vec4<u32>(u.c_out - 1u)) / vec4<u32>(u.cog);
        gbase = (vec4<u32>(n * u.groups) + g) * (u.c4pg * hpwp);
    }

    // The 4 output pixels (clamped for reading; the tail of a plane is not stored) and the
    // offset of each one's top-left tap inside a plane.
    let p = vec4<u32>(pt * 4u) + lanes;
    let pc = min(p, vec4<u32>(u.plane_out - 1u));
    let oy = pc / vec4<u32>(u.w_out);
    let ox = pc - oy * u.w_out;
    let xpix = oy * (u.sh * u.wp) + ox * u.sw;

    // a_q / b_q: accumulators of pixel q, one lane per channel of block A / B.
    // s_q: sums of x' (only with WZP): MODE 0 keeps the 4 pixels' sums in s0, MODE 1 keeps
    // pixel q's sums per lane in s_q.
    var a0 = vec4<i32>(0);
    var a1 = vec4<i32>(0);
    var a2 = vec4<i32>(0);
    var a3 = vec4<i32>(0);
    var b0 = vec4<i32>(0);
    var b1 = vec4<i32>(0);
    var b2 = vec4<i32>(0);
    var b3 = vec4<i32>(0);
    var s0 = vec4<i32>(0);
    var s1 = vec4<i32>(0);
    var s2 = vec4<i32>(0);
    var s3 = vec4<i32>(0);

    // One flat loop over the steps (c4, ky, kx); `off` follows the tap's offset in a plane.
    let row_adj = u.dh * u.wp - u.kw * u.dw;
    let chan_adj = hpwp - u.kh * u.dh * u.wp;
    var off = 0u;
    var kx = 0u;
    var ky = 0u;
    if (MODE == 0u) {
        let base = vec4<u32>(gbase.x - u.xq_base) + xpix;
        for (var step = 0u; step < u.k4; step = step + 1u) {
            let o = base + off;
            let x0 = xq[o.x];
            let x1 = xq[o.y];
            let x2 = xq[o.z];
            let x3 = xq[o.w];
            let wa = wts[wi_a + step];
            a0 = a0 + dot4x4(x0, wa);
            a1 = a1 + dot4x4(x1, wa);
            a2 = a2 + dot4x4(x2, wa);
            a3 = a3 + dot4x4(x3, wa);
            let wb = wts[wi_b + step];
            b0 = b0 + dot4x4(x0, wb);
            b1 = b1 + dot4x4(x1, wb);
            b2 = b2 + dot4x4(x2, wb);
            b3 = b3 + dot4x4(x3, wb);
            if (WZP == 1u) {
                s0 = s0 + sum4_lanes(vec4<u32>(x0, x1, x2, x3));
            }
            kx = kx + 1u;
            off = off + u.dw;
            if (kx == u.kw) {
                kx = 0u;
                ky = ky + 1u;
                off = off + row_adj;
                if (ky == u.kh) {
                    ky = 0u;
                    off = off + chan_adj;
                }
            }
        }
    } else {
        let base0 = gbase + (xpix.x - u.xq_base);
        let base1 = gbase + (xpix.y - u.xq_base);
        let base2 = gbase + (xpix.z - u.xq_base);
        let base3 = gbase + (xpix.w - u.xq_base);
        for (var step = 0u; step < u.k4; step = step + 1u) {
            let q0 = base0 + off;
            let q1 = base1 + off;
            let q2 = base2 + off;
            let q3 = base3 + off;
            let x0 = vec4<u32>(xq[q0.x], xq[q0.y], xq[q0.z], xq[q0.w]);
            let x1 = vec4<u32>(xq[q1.x], xq[q1.y], xq[q1.z], xq[q1.w]);
            let x2 = vec4<u32>(xq[q2.x], xq[q2.y], xq[q2.z], xq[q2.w]);
            let x3 = vec4<u32>(xq[q3.x], xq[q3.y], xq[q3.z], xq[q3.w]);
            let w = wts[wi_a + step];
            a0 = a0 + dot4_lanes(x0, w);
            a1 = a1 + dot4_lanes(x1, w);
            a2 = a2 + dot4_lanes(x2, w);
            a3 = a3 + dot4_lanes(x3, w);
            if (WZP == 1u) {
                s0 = s0 + sum4_lanes(x0);
                s1 = s1 + sum4_lanes(x1);
                s2 = s2 + sum4_lanes(x2);
                s3 = s3 + sum4_lanes(x3);
            }
            kx = kx + 1u;
            off = off + u.dw;
            if (kx == u.kw) {
                kx = 0u;
                ky = ky + 1u;
                off = off + row_adj;
                if (ky == u.kh) {
                    ky = 0u;
                    off = off + chan_adj;
                }
            }
        }
    }

    // Zero points.
    let ca = corrections(ch_a, z);
    a0 = a0 + ca[1];
    a1 = a1 + ca[1];
    a2 = a2 + ca[1];
    a3 = a3 + ca[1];
    if (WZP == 1u) {
        if (MODE == 0u) {
            a0 = a0 - ca[0] * s0.x;
            a1 = a1 - ca[0] * s0.y;
            a2 = a2 - ca[0] * s0.z;
            a3 = a3 - ca[0] * s0.w;
        } else {
            a0 = a0 - ca[0] * s0;
            a1 = a1 - ca[0] * s1;
            a2 = a2 - ca[0] * s2;
            a3 = a3 - ca[0] * s3;
        }
    }
    if (MODE == 0u) {
        let cb = corrections(ch_b, z);
        b0 = b0 + cb[1];
        b1 = b1 + cb[1];
        b2 = b2 + cb[1];
        b3 = b3 + cb[1];
        if (WZP == 1u) {
            b0 = b0 - cb[0] * s0.x;
            b1 = b1 - cb[0] * s0.y;
            b2 = b2 - cb[0] * s0.z;
            b3 = b3 - cb[0] * s0.w;
        }
    }

    // Epilogue: requantize, pack the 4 pixels of each channel into one word.
    if (pt < u.ptiles) {
        let px_ok = p < vec4<u32>(u.plane_out);
        let plane0 = (u.n_begin + n) * u.c_out;
        store_block(ok_a, ch_a, a0, a1, a2, a3, px_ok, plane0, pt);
        if (MODE == 0u) {
            store_block(ok_b, ch_b, b0, b1, b2, b3, px_ok, plane0, pt);
        }
    }
}
