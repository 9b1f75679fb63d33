// squint: self-test kernel for the integer-emulated arithmetic of `common.wgsl` (used by the
// unit tests only), appended to `common.wgsl`.
//
// Buffers:
// * `u` (uniform): item range.
// * `ab` (storage, read): operand pairs (a, b) as u32, two words per item.
// * `out` (storage, read_write): nine words per item: sf_mul(a, b), sf_add(a, b),
//   sf_from_i32(a), sf_round_clamp(a), fp_srdhm(a, b), fp_rdbpot(a, b & 31),
//   sat_add_i32(a, b), the low word of the 64-bit product a * b, and sf_div(a, b).

struct Params {
    item_begin: u32,
    item_count: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> ab: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

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
    let i = u.item_begin + local;
    let a = ab[2u * i];
    let b = ab[2u * i + 1u];
    out[9u * i] = sf_mul(a, b);
    out[9u * i + 1u] = sf_add(a, b);
    out[9u * i + 2u] = sf_from_i32(i32(a));
    out[9u * i + 3u] = u32(sf_round_clamp(a));
    out[9u * i + 4u] = u32(fp_srdhm(i32(a), i32(b)));
    out[9u * i + 5u] = u32(fp_rdbpot(i32(a), b & 31u));
    out[9u * i + 6u] = u32(sat_add_i32(i32(a), i32(b)));
    out[9u * i + 7u] = mul_u32_wide(a, b).x;
    out[9u * i + 8u] = sf_div(a, b);
}
