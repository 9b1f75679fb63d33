// squint: depthwise f32 conv2d (one input and one output channel per group), the float
// counterpart of the int8 depthwise kernels. It reads the input repacked by
// `conv_f32_pack.wgsl` as one group of all the channels (4 consecutive channels per quad,
// padding included, so no bounds tests): each invocation computes 4 consecutive output pixels
// of one plane x the 4 channels of one quad, one vec4 multiply-add per pixel and tap (4 A
// loads and 1 B load per 16 multiply-adds). Grid: pixel tiles, channel quads, images.
// Weights: one vec4 per (channel quad, tap), taps in (ky, kx) order, 0 past the last channel.
// Bias: one f32 per channel. Output: plain NCHW f32.

//#if XTEX
@group(0) @binding(1) var xt: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(2) var wt: texture_storage_2d<rgba32uint, read>;
//#else
@group(0) @binding(1) var<storage, read> xp: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> wts: array<vec4<f32>>;
//#endif
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Quad i of the repacked input.
fn load_a(i: u32) -> vec4<f32> {
//#if XTEX
    return bitcast<vec4<f32>>(textureLoad(xt, tex_index(i, u.a_log2_width)));
//#else
    return xp[i];
//#endif
}

// Weight vec4 i.
fn load_b(i: u32) -> vec4<f32> {
//#if XTEX
    return bitcast<vec4<f32>>(textureLoad(wt, tex_index(i, u.w_log2_width)));
//#else
    return wts[i];
//#endif
}

// Stores channel l of the quad (if it exists) for the pixels `p` inside the plane; `v` holds
// the 4 pixels' values.
fn store(c: u32, v: vec4<f32>, n: u32, p: vec4<u32>) {
    if (c >= u.c_out) {
        return;
    }
    let plane = u.h_out * u.w_out;
    let base = (n * u.c_out + c) * plane;
    let out = v + vec4<f32>(bias[c]);
    for (var q = 0u; q < 4u; q++) {
        if (p[q] < plane) {
            y[base + p[q]] = out[q];
        }
    }
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Grid: x the group of 64 pixel tiles, y the channel quad, z the image.
    let pt = wid.x * 64u + lid;
    if (pt >= u.pixel_tiles) {
        return;
    }
    let cq = wid.y;
    let n = wid.z;
    let p0 = pt * 4u;
    let p = vec4<u32>(p0) + vec4<u32>(0u, 1u, 2u, 3u);
    let a = tile_quads(p0, n, cq);
    // acc<q>: pixel q, lane l for channel 4 * cq + l.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var b = cq * u.kh * u.kw;
    for (var ky = 0u; ky < u.kh; ky++) {
        for (var kx = 0u; kx < u.kw; kx++) {
            let at = a + vec4<u32>((ky * u.dil_h * u.padded_w + kx * u.dil_w) * u.quads_per_pixel);
            let wv = load_b(b);
            b += 1u;
            acc0 += load_a(at.x) * wv;
            acc1 += load_a(at.y) * wv;
            acc2 += load_a(at.z) * wv;
            acc3 += load_a(at.w) * wv;
        }
    }
    let c0 = cq * 4u;
    store(c0, vec4<f32>(acc0.x, acc1.x, acc2.x, acc3.x), n, p);
    store(c0 + 1u, vec4<f32>(acc0.y, acc1.y, acc2.y, acc3.y), n, p);
    store(c0 + 2u, vec4<f32>(acc0.z, acc1.z, acc2.z, acc3.z), n, p);
    store(c0 + 3u, vec4<f32>(acc0.w, acc1.w, acc2.w, acc3.w), n, p);
}
