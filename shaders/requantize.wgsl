// squint: standalone requantization of int32 accumulators, appended to `common.wgsl` and
// `epilogue.wgsl` (the same `requant` as the conv epilogue).
//
// Same contract as `cpu::reference::requantize`: NCHW accumulators with `u.channels` channels
// of `u.plane` values; output stored bytes of the epilogue's output dtype.
//
// Buffers:
// * `params` (uniform; `u` its private copy): the dispatch's item range, geometry, window
//   bases, output zp and clamp.
// * `acc` (storage, read): i32 accumulators, flat, a window starting at element `u.acc_base`.
// * `epi` (storage, read): one `ChannelRequant` record per channel, a window starting at record
//   `u.epi_base`.
// * `y` (storage, read_write): output bytes, flat (no plane padding), four per u32
//   little-endian, a window starting at word `u.y_base`.
// One invocation writes one output word (four consecutive flat elements).

struct Params {
    item_begin: u32,
    item_count: u32,
    len: u32,
    plane: u32,
    channels: u32,
    acc_base: u32,
    epi_base: u32,
    y_base: u32,
    out_zp: i32,
    out_lo: i32,
    out_hi: i32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// A copy of the uniforms, filled first by `main`: lavapipe (Mesa 22.3, LLVM 15) compiled a
// uniform read inside a loop as a per-lane gather in every iteration, and this kernel's loops
// read them (`kernel_contract.rs` checks that no kernel reads a uniform inside a loop).
var<private> u: Params;
@group(0) @binding(1) var<storage, read> acc: array<i32>;
@group(0) @binding(2) var<storage, read> epi: array<ChannelRequant>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

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
    let word = u.item_begin + local;
    var packed = 0u;
    for (var b = 0u; b < 4u; b = b + 1u) {
        let i = word * 4u + b;
        if (i < u.len) {
            let ch = (i / u.plane) % u.channels;
            let r = requant(acc[i - u.acc_base], ch - u.epi_base);
            packed = packed | ((u32(r) & 0xffu) << (8u * b));
        }
    }
    y[word - u.y_base] = packed;
}
