// squint: depthwise f32 conv2d (one input and one output channel per group), the float
// counterpart of `conv2d_dw_direct.wgsl`: it reads the NCHW input itself (no repack; XTEX: a
// texture copy of its buffer, 4 floats per texel), each invocation computing 4 consecutive
// output pixels of one row of one channel.
// * SPAN (undilated rows, 3 * SW + KW <= 13 for the column stride SW): each kernel row's
//   3 * SW + KW input columns are read once, as the texels that hold them from the row's
//   first column rounded down to a texel, and shared by the 4 pixels. Where that column's
//   lane in its texel is the same for every invocation (input rows a whole number of texels:
//   R0 = -pad_w mod 4) the values are picked at constant indices, 3 texels for KW = 3 and
//   SW <= 2; else (R0 = 4) 4 texels, and each value picked by selects on the lane.
// * Otherwise every tap reads its 4 pixels' inputs.
// Rows and columns outside the input (padding) read 0. Grid: x the 4-pixel tiles of the
// plane (rows of `col_tiles`), y the channel, z the image.
//
// Weights (`dw_weight_rows` in `src/gpu/float_conv.rs`): per channel and kernel row, the row's
// KW values in RW = ceil(KW / 4) vec4s, zero past KW (vec4 (c * KH + ky) * RW + j), in a
// texture with XTEX (from `u.w_log2_width`), else a buffer: the channel is the workgroup's,
// and lavapipe (Mesa 22.3) runs a storage-buffer load as a loop over the lanes, one per
// element (nine per invocation for 3x3 read as floats, three as vec4 rows), where a texel load
// is a plain load per lane. Bias: one f32 per channel. Output: plain NCHW f32, stored as one
// vec4 per invocation with Y4 (output rows a whole number of vec4s: one store, where lavapipe
// runs one lane loop per stored element), else as 4 floats.

override KH: u32 = 3u;
override KW: u32 = 3u;
override SPAN: u32 = 0u;
// The column stride (SPAN).
override SW: u32 = 1u;
// The lane of a SPAN row's first input column in its texel when it is the same for every
// invocation (0 to 3), else 4.
override R0: u32 = 4u;
// Vec4s per kernel row of the weights: ceil(KW / 4).
override RW: u32 = 1u;

//#if XTEX
@group(0) @binding(1) var xt: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(2) var wt: texture_storage_2d<rgba32uint, read>;
//#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wts: array<vec4<f32>>;
//#endif
@group(0) @binding(3) var<storage, read> bias: array<f32>;
//#if Y4
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;
//#else
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
//#endif

// The uniforms read inside the loops over kernel rows, copied once per invocation by `main`:
// lavapipe (Mesa 22.3, LLVM 15) compiled a uniform read inside a loop as a per-lane gather
// (8 bounds-checked scalar loads) in every iteration (`conv2d_dw_direct.wgsl` measured it).
struct LoopUniforms {
    stride_h: u32,
    stride_w: u32,
    dil_h: u32,
    dil_w: u32,
    pad_h: u32,
    pad_w: u32,
    h_in: u32,
    w_in: u32,
    x_log2_width: u32,
    w_log2_width: u32,
}

var<private> lu: LoopUniforms;

// Input float f (NCHW order).
fn load_x(f: u32) -> f32 {
//#if XTEX
    let t = textureLoad(xt, tex_index(f >> 2u, lu.x_log2_width));
    return bitcast<f32>(t[f & 3u]);
//#else
    return x[f];
//#endif
}

// Weights vec4 i.
fn load_w(i: u32) -> vec4<f32> {
//#if XTEX
    return bitcast<vec4<f32>>(textureLoad(wt, tex_index(i, lu.w_log2_width)));
//#else
    return wts[i];
//#endif
}

// Element r (0 to 3) of (a, b, c, d).
fn pick4(a: f32, b: f32, c: f32, d: f32, r: u32) -> f32 {
    return select(select(a, b, r == 1u), select(c, d, r == 3u), r >= 2u);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    lu = LoopUniforms(u.stride_h, u.stride_w, u.dil_h, u.dil_w, u.pad_h, u.pad_w, u.h_in, u.w_in,
        u.x_log2_width, u.w_log2_width);
    let i = wid.x * 64u + lid;
    if (i >= u.h_out * u.col_tiles) {
        return;
    }
    // (i < 2^23: at most 65535 workgroups of 64 along x.)
    let oy = udiv(i, u.col_tiles, u.col_tiles_rcp);
    let ox0 = (i - oy * u.col_tiles) * 4u;
    let c = wid.y;
    let plane = wid.z * u.c_out + c;
    let xs = plane * lu.h_in * lu.w_in;
    var acc = vec4<f32>(0.0);
    for (var ky = 0u; ky < KH; ky++) {
        // Unsigned wrap-around makes the padding rows and columns fail the bounds tests.
        let iy = oy * lu.stride_h + ky * lu.dil_h - lu.pad_h;
        let row_ok = iy < lu.h_in;
        let rb = xs + iy * lu.w_in;
        let wb = (c * KH + ky) * RW;
        if (SPAN == 1u) {
            // The row's weights (KW <= 10: at most 3 vec4s).
            var wr: array<vec4<f32>, 3>;
            for (var j = 0u; j < RW; j++) {
                wr[j] = load_w(wb + j);
            }
            // Input columns c0 .. c0 + 3 * SW + KW - 1 of the row.
            let c0 = ox0 * SW - lu.pad_w;
            var v: array<f32, 13>;
//#if XTEX
            // The first column's float index, -3 or more (arithmetic: a texel before the
            // tensor's first is read as garbage, and masked).
            let f0 = i32(rb) + i32(ox0 * SW) - i32(lu.pad_w);
            let t0 = u32(f0 >> 2u);
            var win: array<f32, 16>;
            // The texels that hold the span: (R0 + 3 * SW + KW - 1) / 4 + 1 of them where R0 is
            // known.
            let nt = select(4u, (R0 + 3u * SW + KW - 1u) / 4u + 1u, R0 < 4u);
            for (var t = 0u; t < nt; t++) {
                let tx = bitcast<vec4<f32>>(textureLoad(xt, tex_index(t0 + t, lu.x_log2_width)));
                win[4u * t] = tx.x;
                win[4u * t + 1u] = tx.y;
                win[4u * t + 2u] = tx.z;
                win[4u * t + 3u] = tx.w;
            }
            for (var j = 0u; j < 3u * SW + KW; j++) {
                var val: f32;
                if (R0 < 4u) {
                    val = win[j + R0];
                } else {
                    let r = u32(f0 & 3);
                    val = pick4(win[j], win[j + 1u], win[j + 2u], win[j + 3u], r);
                }
                v[j] = select(0.0, val, row_ok && c0 + j < lu.w_in);
            }
//#else
            for (var j = 0u; j < 3u * SW + KW; j++) {
                let ok = row_ok && c0 + j < lu.w_in;
                v[j] = select(0.0, x[select(0u, rb + c0 + j, ok)], ok);
            }
//#endif
            for (var kx = 0u; kx < KW; kx++) {
                let wk = wr[kx / 4u][kx % 4u];
                acc += vec4<f32>(v[kx], v[kx + SW], v[kx + 2u * SW], v[kx + 3u * SW]) * wk;
            }
        } else {
            for (var kx = 0u; kx < KW; kx++) {
                let ix = (vec4<u32>(ox0) + vec4<u32>(0u, 1u, 2u, 3u)) * lu.stride_w
                    + vec4<u32>(kx * lu.dil_w - lu.pad_w);
                let ok = vec4<bool>(row_ok) & (ix < vec4<u32>(lu.w_in));
                let f = select(vec4<u32>(0u), vec4<u32>(rb) + ix, ok);
                let xv = vec4<f32>(load_x(f.x), load_x(f.y), load_x(f.z), load_x(f.w));
                let wk = load_w(wb + kx / 4u)[kx % 4u];
                acc += select(vec4<f32>(0.0), xv, ok) * wk;
            }
        }
    }
    let w_out = u.w_out;
    let ys = (plane * u.h_out + oy) * w_out + ox0;
    let out = acc + vec4<f32>(bias[c]);
//#if Y4
    y[ys >> 2u] = out;
//#else
    for (var q = 0u; q < 4u; q++) {
        if (ox0 + q < w_out) {
            y[ys + q] = out[q];
        }
    }
//#endif
}
