// squint: conv input preparation, appended to `common.wgsl`. Sections between `//#if FLAG` /
// `//#else` / `//#endif` are selected on the host before compilation.
//
// Repacks a packed 8-bit NCHW activation into "quads" for `conv2d_gemm.wgsl` and
// `conv2d_dw.wgsl`: one vec4<u32> holds 16 channel slots of one padded pixel, byte b of word k
// being slot 4k + b. Slots are assigned per group: slot s of a pixel belongs to group
// g = s / S and is channel g * C + (s % S) of the input when s % S < C (S = `slots_per_group`,
// C = `c_in_per_group`). With S = 16 * ceil(C / 16) every group starts on a quad (the GEMM
// layout); with S = C the channels are simply contiguous (the depthwise layout). The conv's
// zero padding is materialised: padded pixels and the slots past a group's channels hold the
// zero-point byte, so that `x' - z'` is 0 there, as a padded tap contributes a real 0. Bytes
// are XORed with `u.flip` to reach the kernel's domain (signed for `dot4I8Packed`, unsigned
// otherwise). Plain tensor reshaping: kernels know nothing of models.
//
// Two kinds of items, in one dispatch:
// * [0, u.n_interior): interior. Item (n, k, q): input word k of every plane (4 consecutive input pixels,
//   which may continue on the next row) for the 16 slots of quad q: 16 word loads give the 4
//   quads of those pixels (a 4 x 4 byte transpose per word of the quads). Byte b of word k is
//   plane position 4k + b + pos_shift, written when in [pos_begin, pos_end).
// * [u.n_interior, ...): border. Item n_interior + (n, b, q): quad q of the b-th padded pixel
//   outside the input, all zero point.
//
// Buffers:
// * `params` (uniform; `u` its private copy): the dispatch's item range and kind, geometry,
//   window bases, flip and pad byte.
// * `xt` (read-only storage texture rgba32uint; XTEX) or `x` (storage, read): the packed input,
//   four values per u32 little-endian, `plane_words` words per (n, c) plane; the texture is a
//   copy of the tensor's buffer, word i at texel i / 4 = (t % 2^x_tex_log2_width,
//   t >> x_tex_log2_width), component
//   i % 4; the buffer is a window from word `u.x_base`. Image n counts from `u.img_begin`.
//   For a band of rows (one image too large for the scratch) the input is a copy of the
//   band's input rows, `plane_words` words per channel from plane position `pos_shift`.
// * `qt` (write-only storage texture rgba32uint; XTEX) or `xq` (storage, read_write,
//   array<vec4<u32>>): quad ((n * band_rows + py - row_begin) * padded_w + px) *
//   quads_per_pixel + q for the padded rows py of the band [row_begin, row_begin + band_rows)
//   (the whole padded image, row_begin = 0 and band_rows = padded_h, unless one image's quads
//   do not fit the scratch: then the host repacks and convolves it band by band of rows);
//   texel i is at (i % 2^quads_tex_log2_width, i >> quads_tex_log2_width); the buffer is a
//   window from quad `u.q_base`.

// The host side is `ConvPackParams` in `src/gpu/kernels.rs` (field docs there; names and
// offsets are checked by `kernel_contract.rs`).
struct Params {
    item_begin: u32,
    item_count: u32,
    n_interior: u32, // interior items; border items follow
    h: u32,
    w: u32,
    plane_words: u32,
    padded_h: u32,
    padded_w: u32,
    pad_h: u32,
    pad_w: u32,
    c_in: u32,
    c_in_per_group: u32,
    groups: u32,
    slots_per_group: u32, // channel slots per group in a pixel's quads
    quads_per_pixel: u32,
    img_begin: u32,
    x_base: u32, // first word of the input buffer window
    x_tex_log2_width: u32, // log2 width of the input texture
    q_base: u32, // first quad of the quads buffer window
    quads_tex_log2_width: u32, // log2 width of the quads texture
    flip: u32, // 0x80 or 0, XORed into input bytes (kernel byte domain)
    pad_byte: u32, // z' as a byte: fills padding and group-rounding slots
    row_begin: u32, // first padded row of the band written (0 without bands)
    band_rows: u32, // padded rows of the band written (padded_h without bands)
    pos_shift: u32, // plane position of the input planes' first byte (band input: its first)
    pos_begin: u32, // plane positions [pos_begin, pos_end) are written (without bands: the plane)
    pos_end: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// A copy of the uniforms, filled first by `main`: lavapipe (Mesa 22.3, LLVM 15) compiled a
// uniform read inside a loop as a per-lane gather in every iteration, and this kernel's loops
// read them (`kernel_contract.rs` checks that no kernel reads a uniform inside a loop).
var<private> u: Params;
//#if XTEX
@group(0) @binding(1) var xt: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(2) var qt: texture_storage_2d<rgba32uint, write>;
//#else
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> xq: array<vec4<u32>>;
//#endif

// Input word i (absolute index in the tensor).
fn load_word(i: u32) -> u32 {
//#if XTEX
    let t = i >> 2u;
    let mask = (1u << u.x_tex_log2_width) - 1u;
    let v = textureLoad(xt, vec2<u32>(t & mask, t >> u.x_tex_log2_width));
    let c = i & 3u;
    return select(select(v.x, v.y, c == 1u), select(v.z, v.w, c == 3u), c >= 2u);
//#else
    return x[i - u.x_base];
//#endif
}

// Stores the quad of image n's padded pixel (py, px), slot quad q, when row py is in the band
// [row_begin, row_begin + band_rows), at the band's row py - row_begin.
fn store_pixel_quad(n: u32, py: u32, px: u32, q: u32, v: vec4<u32>) {
    if (py < u.row_begin || py - u.row_begin >= u.band_rows) {
        return;
    }
    store_quad(((n * u.band_rows + py - u.row_begin) * u.padded_w + px) * u.quads_per_pixel + q, v);
}

fn store_quad(i: u32, v: vec4<u32>) {
//#if XTEX
    let mask = (1u << u.quads_tex_log2_width) - 1u;
    textureStore(qt, vec2<u32>(i & mask, i >> u.quads_tex_log2_width), v);
//#else
    xq[i - u.q_base] = v;
//#endif
}

// The padded pixel of the b-th border pixel of an image (rows above, then the left and right
// margins of the input rows, then rows below).
fn border_pixel(b: u32) -> vec2<u32> {
    let top = u.pad_h * u.padded_w;
    if (b < top) {
        return vec2<u32>(b / u.padded_w, b % u.padded_w);
    }
    let side = 2u * u.pad_w;
    let mid = u.h * side;
    if (b < top + mid) {
        let r = (b - top) / side;
        let c = (b - top) - r * side;
        return vec2<u32>(u.pad_h + r, select(u.w + c, c, c < u.pad_w));
    }
    let rest = b - top - mid;
    return vec2<u32>(u.pad_h + u.h + rest / u.padded_w, rest % u.padded_w);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    u = params;
    let local = linear_index(wid, nwg, lid);
    if (local >= u.item_count) {
        return;
    }
    let zfill = u.pad_byte * 0x01010101u;
    if (u.item_begin + local >= u.n_interior) {
        let e = u.item_begin + local - u.n_interior;
        let q = e % u.quads_per_pixel;
        let r = e / u.quads_per_pixel;
        let nb = u.padded_h * u.padded_w - u.h * u.w;
        let n = r / nb;
        let px = border_pixel(r - n * nb);
        store_pixel_quad(n, px.x, px.y, q, vec4<u32>(zfill));
        return;
    }
    let e = u.item_begin + local;
    let q = e % u.quads_per_pixel;
    let r = e / u.quads_per_pixel;
    let n = r / u.plane_words;
    let k = r - n * u.plane_words;
    // The 16 slots of quad q: word j of the 4 output quads (one per pixel) gets byte m of
    // slot 4j + m from input word k of that slot's channel.
    let img = (u.img_begin + n) * u.c_in;
    var quads: array<vec4<u32>, 4>;
    // Slot q * 16 + 4j + m is slot i of group g: one division for the first, then counted
    // (CPU adapters divide integers lane by lane).
    var g = (q * 16u) / u.slots_per_group;
    var i = q * 16u - g * u.slots_per_group;
    for (var j = 0u; j < 4u; j++) {
        // Bytes: b[m] = the input word of slot 4j + m (4 pixels), or the pad byte x 4.
        var b: array<u32, 4>;
        for (var m = 0u; m < 4u; m++) {
            var v = zfill;
            if (g < u.groups && i < u.c_in_per_group) {
                v = load_word((img + g * u.c_in_per_group + i) * u.plane_words + k)
                    ^ (u.flip * 0x01010101u);
            }
            b[m] = v;
            i += 1u;
            let wrap = i == u.slots_per_group;
            g = select(g, g + 1u, wrap);
            i = select(i, 0u, wrap);
        }
        // Transpose: pixel p's word j = byte p of b[0], b[1], b[2], b[3].
        for (var p = 0u; p < 4u; p++) {
            let sh = 8u * p;
            quads[p][j] = ((b[0] >> sh) & 0xffu) | (((b[1] >> sh) & 0xffu) << 8u)
                | (((b[2] >> sh) & 0xffu) << 16u) | (((b[3] >> sh) & 0xffu) << 24u);
        }
    }
    // Plane position pos = k * 4 + p + pos_shift is input pixel (iy, ix): one division for
    // the first, then counted.
    let pos0 = k * 4u + u.pos_shift;
    var iy = pos0 / u.w;
    var ix = pos0 - iy * u.w;
    for (var p = 0u; p < 4u; p++) {
        let pos = pos0 + p;
        if (pos >= u.pos_begin && pos < u.pos_end) {
            store_pixel_quad(n, iy + u.pad_h, ix + u.pad_w, q, quads[p]);
        }
        ix += 1u;
        let wrap = ix == u.w;
        iy = select(iy, iy + 1u, wrap);
        ix = select(ix, 0u, wrap);
    }
}
