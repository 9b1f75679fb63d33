// squint: dequantize packed 8-bit -> f32, appended to `common.wgsl`.
//
// x = f32(q - zp) * scale, the int-to-float conversion (exact: |q - zp| <= 255) and the product
// done in integer-emulated binary32 (`sf_from_i32`, `sf_mul`), so subnormal results are kept
// exactly as the CPU computes them.
//
// Buffers:
// * `u` (uniform): the dispatch's item range, tensor geometry, window bases, qparams.
// * `q` (storage, read): packed input, four values per u32 little-endian; each (n, c) plane
//   holds `u.plane_words` words. A window starting at word `u.q_base`.
// * `y` (storage, read_write): f32 output as bit patterns, plain NCHW, a window starting at
//   element `u.y_base`.
// One invocation writes one f32 (items are output elements of the whole tensor).

struct Params {
    item_begin: u32,
    item_count: u32,
    plane: u32,
    plane_words: u32,
    q_base: u32,
    y_base: u32,
    scale: u32,
    zp: i32,
    signed_bytes: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let local = linear_index(wid, nwg, lid);
    if (local >= u.item_count) {
        return;
    }
    let e = u.item_begin + local;
    let plane = e / u.plane;
    let pos = e - plane * u.plane;
    let word = q[plane * u.plane_words + pos / 4u - u.q_base];
    let sh = 8u * (pos & 3u);
    var v: i32;
    if (u.signed_bytes != 0u) {
        v = i32(word << (24u - sh)) >> 24u;
    } else {
        v = i32((word >> sh) & 0xffu);
    }
    y[e - u.y_base] = sf_mul(sf_from_i32(v - u.zp), u.scale);
}
