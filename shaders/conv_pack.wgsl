// squint: conv input preparation, appended to `common.wgsl`.
//
// Repacks a packed 8-bit activation so that one u32 holds 4 consecutive input channels of one
// pixel (the conv's reduction runs over channels, so one word is 4 reduction steps), in the
// signed domain x' (quint8 bytes are XORed with 0x80, i.e. x' = x - 128, with zero point
// z' = zp - 128; qint8 bytes are taken as they are, z' = zp), and materialises the conv's zero
// padding: padded pixels and the channels that round each group up to a multiple of 4 hold
// z', so that `x' - z'` is 0 there, as a padded tap contributes a real 0. Plain tensor
// reshaping: kernels know nothing of models.
//
// Buffers:
// * `u` (uniform): the dispatch's item range, geometry, window bases, zero-point byte.
// * `x` (storage, read): packed input, four values per u32 little-endian; each (n, c) plane
//   holds `u.plane_words` words. A window starting at word `u.x_base`.
// * `xq` (storage, read_write): output words indexed `((n * groups + g) * c4pg + c4) * hp * wp
//   + py * wp + px`, byte b = channel `g * cig + 4 * c4 + b` at padded pixel (py, px); image
//   `n` counts from input image `u.img_begin`. A window starting at word `u.xq_base`.
// One invocation writes one `xq` word (items are `xq` words).

struct Params {
    item_begin: u32,
    item_count: u32,
    h: u32,
    w: u32,
    plane_words: u32,
    hp: u32,
    wp: u32,
    ph: u32,
    pw: u32,
    c_in: u32,
    cig: u32,
    groups: u32,
    c4pg: u32,
    img_begin: u32,
    x_base: u32,
    xq_base: u32,
    flip: u32,
    zbyte: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;

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
    let hpwp = u.hp * u.wp;
    let plane4 = e / hpwp;
    let r = e - plane4 * hpwp;
    let py = r / u.wp;
    let px = r - py * u.wp;
    let ng = plane4 / u.c4pg;
    let c4 = plane4 - ng * u.c4pg;
    let n = ng / u.groups;
    let g = ng - n * u.groups;
    // Unsigned compares also reject the rows and columns before the input (wrap-around).
    let iy = py - u.ph;
    let ix = px - u.pw;
    let inside = iy < u.h && ix < u.w;
    let pos = iy * u.w + ix;
    let sh = 8u * (pos & 3u);
    let first_plane = (u.img_begin + n) * u.c_in + g * u.cig;
    var packed = 0u;
    for (var b = 0u; b < 4u; b = b + 1u) {
        let c = c4 * 4u + b;
        var byte = u.zbyte;
        if (inside && c < u.cig) {
            let word = x[(first_plane + c) * u.plane_words + pos / 4u - u.x_base];
            byte = ((word >> sh) & 0xffu) ^ u.flip;
        }
        packed = packed | (byte << (8u * b));
    }
    xq[e - u.xq_base] = packed;
}
