// squint: quantize f32 -> packed 8-bit (`quantize_per_tensor`), appended to `common.wgsl`.
//
// q = clamp(rne(f32(x * inv_scale)) + zp, qmin, qmax), with the product and the rounding done in
// integer-emulated binary32 (`sf_mul`, `sf_round_clamp`), so ties, huge values, -0, subnormals
// and NaN (-> zp) give exactly the CPU reference's bytes.
//
// Buffers:
// * `u` (uniform): the dispatch's item range, tensor geometry, window bases, qparams.
// * `x` (storage, read): f32 input as bit patterns, plain NCHW, a window starting at element
//   `u.x_base` of the whole tensor.
// * `y` (storage, read_write): packed output, four values per u32 in little-endian byte order;
//   each (n, c) plane holds `u.plane_words` words (the plane's bytes padded to a multiple of 4).
//   A window starting at word `u.y_base`.
// One invocation writes one output word (items are output words of the whole tensor).

struct Params {
    item_begin: u32,
    item_count: u32,
    plane: u32,
    plane_words: u32,
    x_base: u32,
    y_base: u32,
    inv_scale: u32,
    zp: i32,
    qmin: i32,
    qmax: i32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
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
    let word = u.item_begin + local;
    let plane = word / u.plane_words;
    let first = (word - plane * u.plane_words) * 4u;
    var packed = 0u;
    for (var b = 0u; b < 4u; b = b + 1u) {
        let pos = first + b;
        if (pos < u.plane) {
            let v = x[plane * u.plane + pos - u.x_base];
            let r = sf_round_clamp(sf_mul(v, u.inv_scale));
            let q = clamp(r + u.zp, u.qmin, u.qmax);
            packed = packed | ((u32(q) & 0xffu) << (8u * b));
        }
    }
    y[word - u.y_base] = packed;
}
