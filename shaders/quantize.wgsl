// squint: quantize f32 -> packed 8-bit (`quantize_per_tensor`), appended to `common.wgsl`.
//
// q = clamp(rne(f32(x * inv_scale)) + zp, qmin, qmax) is a non-decreasing step function of x
// (NaN aside), so the host describes it exactly by the smallest input reaching each level
// (`QuantizeSteps`, as order-preserving u32 keys of the f32 bits). The kernel estimates the
// level with plain float arithmetic, keeps it when the keys confirm it (exact integer
// comparisons), and binary-searches the keys otherwise: ties, huge values, -0, subnormals and
// NaN (-> the clamped zero point) give exactly the CPU reference's bytes, whatever the GPU's
// float rounding, contraction or flushing.
//
// Buffers:
// * `u` (uniform): the dispatch's item range, tensor geometry, window bases, the step table.
// * `x` (storage, read): f32 input as bit patterns, plain NCHW, a window starting at element
//   `u.x_base` of the whole tensor.
// * `y` (storage, read_write): packed output, four values per u32 in little-endian byte order;
//   each (n, c) plane holds `u.plane_words` words (the plane's bytes padded to a multiple of 4).
//   A window starting at word `u.y_base`.
// Items are the output words of the whole tensor (four values each); every invocation handles
// ITEMS_PER of them (`item_index`).

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
    nan_q: i32,
    _pad0: u32,
    // Key of the smallest input of level qmin + 1 + i, at thresholds[i / 4][i % 4].
    thresholds: array<vec4<u32>, 64>,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

// The scalars `level` reads, copied once per invocation by `main` (its binary search is a
// loop: lavapipe compiled a uniform read inside a loop as a per-lane gather in every
// iteration; the thresholds are read at per-invocation indices, a gather anyway).
struct LevelUniforms {
    inv_scale: u32,
    zp: i32,
    qmin: i32,
    qmax: i32,
    nan_q: i32,
}

var<private> lq: LevelUniforms;

// Threshold i.
fn thr(i: u32) -> u32 {
    return u.thresholds[i >> 2u][i & 3u];
}

// The order-preserving key of the f32 with bits b (see `f32_order_key`).
fn order_key(b: u32) -> u32 {
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// The quantized level of the f32 with bits b.
fn level(b: u32) -> i32 {
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return lq.nan_q;
    }
    let key = order_key(b);
    let e = round(bitcast<f32>(b) * bitcast<f32>(lq.inv_scale)) + f32(lq.zp);
    let k = clamp(i32(clamp(e, f32(lq.qmin), f32(lq.qmax))), lq.qmin, lq.qmax);
    let lo_ok = k == lq.qmin || thr(u32(k - lq.qmin - 1)) <= key;
    let hi_ok = k == lq.qmax || key < thr(u32(k - lq.qmin));
    if (lo_ok && hi_ok) {
        return k;
    }
    var lo = lq.qmin;
    var hi = lq.qmax;
    while (lo < hi) {
        let mid = lo + (hi - lo + 1) / 2;
        if (thr(u32(mid - lq.qmin - 1)) <= key) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    lq = LevelUniforms(u.inv_scale, u.zp, u.qmin, u.qmax, u.nan_q);
    // The uniforms the loops read, read once (see `kernel_contract.rs`).
    let item_count = u.item_count;
    let item_begin = u.item_begin;
    let plane_words = u.plane_words;
    let x_base = u.x_base;
    let plane_len = u.plane;
    let y_base = u.y_base;
    for (var j = 0u; j < ITEMS_PER; j = j + 1u) {
        let local = item_index(wid, nwg, lid, j);
        if (local >= item_count) {
            return;
        }
        let word = item_begin + local;
        let plane = word / plane_words;
        let first = (word - plane * plane_words) * 4u;
        var packed = 0u;
        for (var b = 0u; b < 4u; b = b + 1u) {
            let pos = first + b;
            if (pos < plane_len) {
                let v = x[plane * plane_len + pos - x_base];
                let q = level(v);
                packed = packed | ((u32(q) & 0xffu) << (8u * b));
            }
        }
        y[word - y_base] = packed;
    }
}
