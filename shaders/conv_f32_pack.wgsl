// squint: repacks an NCHW f32 input (with XTEX, read from a texture copy of its buffer) into the f32 quads of `conv2d_f32_gemm.wgsl` (layout in
// `conv_f32_common.wgsl`): one invocation per quad (grid: quads of a padded row, rows,
// images), zeros for padding and for the channels
// that round a group up to 4.

//#if XTEX
@group(0) @binding(1) var xt: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(2) var xo: texture_storage_2d<rgba32uint, write>;
//#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> xp: array<vec4<f32>>;
//#endif

// Input float f (NCHW order); `log2w`: the input texture's log2 width (XTEX).
fn load_x(f: u32, log2w: u32) -> f32 {
//#if XTEX
    let t = textureLoad(xt, tex_index(f >> 2u, log2w));
    return bitcast<f32>(t[f & 3u]);
//#else
    return x[f];
//#endif
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Quad q of padded pixel (py, px) of image n: x = px * quads_per_pixel + q, y = py, z = n.
    let e = wid.x * 64u + lid;
    if (e >= u.items) {
        return;
    }
    let py = wid.y;
    let n = wid.z;
    let px = e / u.quads_per_pixel;
    let q = e - px * u.quads_per_pixel;
    let i = (n * u.padded_h + py) * u.items + e;
    let g = q / u.quads_per_group;
    let c0 = (q - g * u.quads_per_group) * 4u;
    var v = vec4<f32>(0.0);
    // Unsigned wrap-around makes the padding rows and columns fail the bounds tests.
    let iy = py - u.pad_h;
    let ix = px - u.pad_w;
    if (iy < u.h_in && ix < u.w_in) {
        let plane = u.h_in * u.w_in;
        let base = (n * u.c_in + g * u.c_in_per_group) * plane + iy * u.w_in + ix;
        // The uniforms the loop reads, read once (see `kernel_contract.rs`).
        let c_in_per_group = u.c_in_per_group;
        let log2w = u.x_log2_width;
        for (var l = 0u; l < 4u; l++) {
            if (c0 + l < c_in_per_group) {
                v[l] = load_x(base + (c0 + l) * plane, log2w);
            }
        }
    }
//#if XTEX
    textureStore(xo, tex_index(i, u.a_log2_width), bitcast<vec4<u32>>(v));
//#else
    xp[i] = v;
//#endif
}
