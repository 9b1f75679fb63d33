// squint: implicit-GEMM f32 conv2d, the float counterpart of the int8 `conv2d_gemm.wgsl` with
// the same register tile and the same loads: each invocation computes 4 consecutive output
// pixels of one plane x the 8 output channels of one channel block. Per quad of K it loads 4 A
// vec4s (4 channels of each pixel, from `conv_f32_pack.wgsl`'s quads) and 8 B vec4s and does
// 128 multiply-adds, where the int8 kernel does 512 with the same loads (16 channels per
// vec4). Workgroups: WG pixel tiles of one (image, channel block). SG: lane j of each subgroup
// loads channel j's B vec4 and `subgroupBroadcast` hands all 8 to every lane (subgroups of at
// least 8 lanes; the host chooses it as for the int8 kernel).
//
// Weights: one vec4 per (channel block, K quad, lane j of the block), K quads in
// (ky, kx, quad) order; channels past the group's last and the channels that round a group up
// to 4 are 0. Bias: one f32 per output channel. Output: plain NCHW f32.

override WG: u32 = 64u;

//#if XTEX
@group(0) @binding(1) var xt: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(2) var wt: texture_storage_2d<rgba32uint, read>;
//#else
@group(0) @binding(1) var<storage, read> xp: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> wts: array<vec4<f32>>;
//#endif
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// The uniforms the loops over K read, copied once per invocation by `main`: lavapipe (Mesa
// 22.3, LLVM 15) compiled a uniform read inside a loop as a per-lane gather (8 bounds-checked
// scalar loads) in every iteration (as in the int8 kernels).
struct LoopUniforms {
    a_log2_width: u32,
    w_log2_width: u32,
    kh: u32,
    kw: u32,
    dil_h: u32,
    dil_w: u32,
    padded_w: u32,
    quads_per_pixel: u32,
    quads_per_group: u32,
}

var<private> lu: LoopUniforms;

// Quad i of the repacked input.
fn load_a(i: u32) -> vec4<f32> {
//#if XTEX
    return bitcast<vec4<f32>>(textureLoad(xt, tex_index(i, lu.a_log2_width)));
//#else
    return xp[i];
//#endif
}

// Weight vec4 i.
fn load_b(i: u32) -> vec4<f32> {
//#if XTEX
    return bitcast<vec4<f32>>(textureLoad(wt, tex_index(i, lu.w_log2_width)));
//#else
    return wts[i];
//#endif
}

// The 4 pixels' products with one channel's B vec4 `w`.
fn dot4px(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, w: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(x0, w), dot(x1, w), dot(x2, w), dot(x3, w));
}

// Stores channel j of the block (if it exists) for the pixels `p` inside the plane.
fn store(j: u32, acc: vec4<f32>, c0: u32, nch: u32, n: u32, p: vec4<u32>) {
    if (j >= nch) {
        return;
    }
    let c = c0 + j;
    let plane = u.h_out * u.w_out;
    let base = (n * u.c_out + c) * plane;
    let v = acc + vec4<f32>(bias[c]);
    for (var q = 0u; q < 4u; q++) {
        if (p[q] < plane) {
            y[base + p[q]] = v[q];
        }
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
//#if SG
    @builtin(subgroup_invocation_id) sl: u32,
//#endif
) {
    lu = LoopUniforms(u.a_log2_width, u.w_log2_width, u.kh, u.kw, u.dil_h, u.dil_w, u.padded_w,
        u.quads_per_pixel, u.quads_per_group);
    // Grid: x the group of WG pixel tiles, y the channel block (over all groups), z the image.
    let cb = wid.y;
    let n = wid.z;
    let g = cb / u.blocks_per_group;
    let bl = cb - g * u.blocks_per_group;

    // The 4 output pixels of this invocation and the quad of each one's top-left tap.
    let p0 = (wid.x * WG + lid) * 4u;
    let p = vec4<u32>(p0) + vec4<u32>(0u, 1u, 2u, 3u);
    let a = tile_quads(p0, n, g * u.quads_per_group);

    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0);
    var c5 = vec4<f32>(0.0);
    var c6 = vec4<f32>(0.0);
    var c7 = vec4<f32>(0.0);
    let k_quads = u.kh * u.kw * u.quads_per_group;
//#if SG
    // Lane j of each subgroup loads channel j's B vec4; `subgroupBroadcast` gives every lane
    // all 8 (one load per lane instead of 8, as in the int8 kernel's SG staging).
    var b = cb * k_quads * 8u + min(sl, 7u);
//#else
    var b = cb * k_quads * 8u;
//#endif
    for (var ky = 0u; ky < lu.kh; ky++) {
        for (var kx = 0u; kx < lu.kw; kx++) {
            let t = (ky * lu.dil_h * lu.padded_w + kx * lu.dil_w) * lu.quads_per_pixel;
            let at = a + vec4<u32>(t);
            for (var q = 0u; q < lu.quads_per_group; q++) {
                let x0 = load_a(at.x + q);
                let x1 = load_a(at.y + q);
                let x2 = load_a(at.z + q);
                let x3 = load_a(at.w + q);
//#if SG
                let wv = load_b(b);
                c0 += dot4px(x0, x1, x2, x3, subgroupBroadcast(wv, 0u));
                c1 += dot4px(x0, x1, x2, x3, subgroupBroadcast(wv, 1u));
                c2 += dot4px(x0, x1, x2, x3, subgroupBroadcast(wv, 2u));
                c3 += dot4px(x0, x1, x2, x3, subgroupBroadcast(wv, 3u));
                c4 += dot4px(x0, x1, x2, x3, subgroupBroadcast(wv, 4u));
                c5 += dot4px(x0, x1, x2, x3, subgroupBroadcast(wv, 5u));
                c6 += dot4px(x0, x1, x2, x3, subgroupBroadcast(wv, 6u));
                c7 += dot4px(x0, x1, x2, x3, subgroupBroadcast(wv, 7u));
//#else
                c0 += dot4px(x0, x1, x2, x3, load_b(b));
                c1 += dot4px(x0, x1, x2, x3, load_b(b + 1u));
                c2 += dot4px(x0, x1, x2, x3, load_b(b + 2u));
                c3 += dot4px(x0, x1, x2, x3, load_b(b + 3u));
                c4 += dot4px(x0, x1, x2, x3, load_b(b + 4u));
                c5 += dot4px(x0, x1, x2, x3, load_b(b + 5u));
                c6 += dot4px(x0, x1, x2, x3, load_b(b + 6u));
                c7 += dot4px(x0, x1, x2, x3, load_b(b + 7u));
//#endif
                b += 8u;
            }
        }
    }

    let ch0 = g * u.c_out_per_group + bl * 8u;
    let nch = min(8u, u.c_out_per_group - bl * 8u);
    store(0u, c0, ch0, nch, n, p);
    store(1u, c1, ch0, nch, n, p);
    store(2u, c2, ch0, nch, n, p);
    store(3u, c3, ch0, nch, n, p);
    store(4u, c4, ch0, nch, n, p);
    store(5u, c5, ch0, nch, n, p);
    store(6u, c6, ch0, nch, n, p);
    store(7u, c7, ch0, nch, n, p);
}
