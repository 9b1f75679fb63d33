// squint: elementwise binary op through a 256 x 256 byte table (quantized add / add_relu),
// appended to `common.wgsl`.
//
// The output of a quantized add depends only on the two stored input bytes (and, for the x86
// engine, on whether the element takes ATen's vector or scalar path): the host computes the
// 65536-entry tables with the CPU formula, so no float arithmetic runs on the GPU.
//
// Buffers:
// * `params` (uniform; `u` its private copy): the element count and the first element that
//   uses table 1 (ATen's scalar tail; elements below it use table 0).
// * `tab` (storage, read): table t's entry for bytes (a, b) is byte `t * 65536 + a * 256 + b`,
//   four per word, little-endian.
// * `a`, `b` (storage, read): the inputs' stored bytes, four per word.
// * `y` (storage, read_write): the output bytes, four per word.
// Each invocation writes one output word (four outputs).

struct Params {
    total: u32,
    split: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// A copy of the uniforms, filled first by `main`: lavapipe (Mesa 22.3, LLVM 15) compiled a
// uniform read inside a loop as a per-lane gather in every iteration, and this kernel's loops
// read them (`kernel_contract.rs` checks that no kernel reads a uniform inside a loop).
var<private> u: Params;
@group(0) @binding(1) var<storage, read> tab: array<u32>;
@group(0) @binding(2) var<storage, read> a: array<u32>;
@group(0) @binding(3) var<storage, read> b: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<u32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    u = params;
    let w = linear_index(wid, nwg, lid);
    if (w >= (u.total + 3u) / 4u) {
        return;
    }
    let wa = a[w];
    let wb = b[w];
    var word = 0u;
    for (var k = 0u; k < 4u; k = k + 1u) {
        let j = w * 4u + k;
        if (j < u.total) {
            let va = (wa >> (8u * k)) & 0xffu;
            let vb = (wb >> (8u * k)) & 0xffu;
            var idx = va * 256u + vb;
            if (j >= u.split) {
                idx = idx + 65536u;
            }
            let t = tab[idx >> 2u];
            word = word | (((t >> ((idx & 3u) * 8u)) & 0xffu) << (8u * k));
        }
    }
    y[w] = word;
}
