// squint: the f32 conv kernels' uniform, shared by `conv_f32_pack.wgsl`,
// `conv2d_f32_gemm.wgsl` and `conv2d_f32_dw.wgsl` (the float baseline of `squint bench`, see
// `src/gpu/float_conv.rs`). With XTEX the input's copy, the quads and the GEMM weights are
// rgba32uint storage textures holding the f32 bits (vec4 i at texel (i % 2^log2_width,
// i >> log2_width)), read and written through `bitcast`, as the int8 kernels read theirs on
// CPU adapters. Float results are not bit-exact across adapters (WGSL allows fused
// multiply-adds and any summation order the compiler picks); the tests bound the error.
//
// Layout of the GEMM kernel's repacked input ("f32 quads", the float analogue of the int8
// quads of `conv_pack.wgsl`): one vec4<f32> holds 4 channels of one group at one padded pixel,
// quad index ((n * padded_h + py) * padded_w + px) * quads_per_pixel + g * quads_per_group + q;
// padding and the channels that round a group up to 4 are 0.

// The host side is `ConvF32Params` in `src/gpu/kernels.rs`.
struct Params {
    items: u32, // pack: quads per padded row (the grid's x extent in invocations)
    c_in: u32,
    h_in: u32,
    w_in: u32,
    c_out: u32,
    h_out: u32,
    w_out: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    dil_h: u32,
    dil_w: u32,
    c_in_per_group: u32,
    c_out_per_group: u32,
    quads_per_group: u32, // ceil(c_in_per_group / 4)
    quads_per_pixel: u32, // groups * quads_per_group
    padded_h: u32, // padded rows the conv reads: (h_out - 1) * stride_h + (kh - 1) * dil_h + 1
    padded_w: u32,
    blocks_per_group: u32, // ceil(c_out_per_group / 8)
    pixel_tiles: u32, // ceil(h_out * w_out / 4)
    a_log2_width: u32, // XTEX: log2 width of the quads texture
    w_log2_width: u32, // XTEX: log2 width of the weights texture
    x_log2_width: u32, // XTEX: log2 width of the input's texture copy (the NCHW floats, 4 per texel)
    col_tiles: u32, // depthwise: 4-pixel tiles per output row, ceil(w_out / 4)
    col_tiles_rcp: f32, // depthwise: f32(1 / col_tiles), for `udiv`
}

@group(0) @binding(0) var<uniform> u: Params;

//#if XTEX
// The texel of vec4 i in a texture 2^log2w texels wide.
fn tex_index(i: u32, log2w: u32) -> vec2<u32> {
    return vec2<u32>(i & ((1u << log2w) - 1u), i >> log2w);
}
//#endif

// Dispatches are explicit 3-D grids (x the work along a plane or row, y the channel quad or
// block, z the image), so that no invocation divides to find them: CPU adapters run integer
// divisions lane by lane.

// The (row, column) of output pixel p + 1 given p's `c` (the plane's last pixel stays put: the
// 4 pixels of a tile past the plane's end are read clamped to it).
fn next_pixel(c: vec2<u32>, p: u32) -> vec2<u32> {
    if (p + 1u >= u.h_out * u.w_out) {
        return c;
    }
    if (c.y + 1u == u.w_out) {
        return vec2<u32>(c.x + 1u, 0u);
    }
    return vec2<u32>(c.x, c.y + 1u);
}

// The quad of the top-left tap of output pixels p0 .. p0 + 3 (clamped to the plane) of image
// n, at quad offset `q` of a pixel, from one division.
fn tile_quads(p0: u32, n: u32, q: u32) -> vec4<u32> {
    let pc = min(p0, u.h_out * u.w_out - 1u);
    let oy = pc / u.w_out;
    let c0 = vec2<u32>(oy, pc - oy * u.w_out);
    let c1 = next_pixel(c0, p0);
    let c2 = next_pixel(c1, p0 + 1u);
    let c3 = next_pixel(c2, p0 + 2u);
    let oys = vec4<u32>(c0.x, c1.x, c2.x, c3.x);
    let oxs = vec4<u32>(c0.y, c1.y, c2.y, c3.y);
    return ((vec4<u32>(n * u.padded_h) + oys * u.stride_h) * u.padded_w + oxs * u.stride_w)
        * u.quads_per_pixel + vec4<u32>(q);
}
