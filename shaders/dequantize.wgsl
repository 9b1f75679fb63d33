// squint: dequantize packed 8-bit -> f32, appended to `common.wgsl`.
//
// x = f32(q - zp) * scale takes 256 values at most: the host computes them with the CPU
// formula (`dequantize_one`) and the kernel looks them up by stored byte, so no float
// arithmetic runs on the GPU and subnormal results are kept exactly.
//
// Buffers:
// * `u` (uniform): the dispatch's item range, tensor geometry, window bases, the 256 values.
// * `q` (storage, read): packed input, four values per u32 little-endian; each (n, c) plane
//   holds `u.plane_words` words. A window starting at word `u.q_base`.
// * `y` (storage, read_write): f32 output as bit patterns, plain NCHW, a window starting at
//   element `u.y_base`.
// Items are the input words of the whole tensor (each gives up to four f32); every invocation
// handles ITEMS_PER of them (`item_index`).

struct Params {
    item_begin: u32,
    item_count: u32,
    plane: u32,
    plane_words: u32,
    q_base: u32,
    y_base: u32,
    _pad0: u32,
    _pad1: u32,
    // The f32 bits of the value of stored byte b, at values[b / 4][b % 4].
    values: array<vec4<u32>, 64>,
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
    // The uniforms the loops read, read once (see `kernel_contract.rs`); the values table is
    // read at each byte's index.
    let item_count = u.item_count;
    let item_begin = u.item_begin;
    let plane_words = u.plane_words;
    let q_base = u.q_base;
    let plane_len = u.plane;
    let y_base = u.y_base;
    for (var j = 0u; j < ITEMS_PER; j = j + 1u) {
        let local = item_index(wid, nwg, lid, j);
        if (local >= item_count) {
            return;
        }
        let word_index = item_begin + local;
        let plane = word_index / plane_words;
        let first = (word_index - plane * plane_words) * 4u;
        let word = q[word_index - q_base];
        for (var b = 0u; b < 4u; b = b + 1u) {
            let pos = first + b;
            if (pos < plane_len) {
                let v = (word >> (8u * b)) & 0xffu;
                y[plane * plane_len + pos - y_base] = u.values[v >> 2u][v & 3u];
            }
        }
    }
}
