// squint: gather through per-input byte tables (concatenation with requantization, ReLU,
// clamp), appended to `common.wgsl`.
//
// Every output byte is `lut_i[x_i[src]]`: the host computes each input's 256-entry table with
// the CPU formula (`quantize_one(dequantize_one(q))` for a concatenation, `min(max(q, lo), hi)`
// for ReLU and clamp), so no float arithmetic runs on the GPU.
//
// Buffers:
// * `params` (uniform; `u` its private copy): the output size, the output elements per outer
//   index, the input count.
// * `tab` (storage, read): per input i, words `4i..4i+3` = (first byte of the input in `x`,
//   its elements per outer index, the first output element of its block within an outer
//   index, unused); then, from word `4 * n_inputs`, 64 words per input: its table, four
//   output bytes per word, little-endian.
// * `x` (storage, read): the inputs' stored bytes, one after the other, four per word.
// * `y` (storage, read_write): the output bytes, four per word.
// Each invocation writes one output word (four outputs).

struct Params {
    total: u32,
    out_block: u32,
    n_inputs: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// A copy of the uniforms, filled first by `main`: lavapipe (Mesa 22.3, LLVM 15) compiled a
// uniform read inside a loop as a per-lane gather in every iteration, and this kernel's loops
// read them (`kernel_contract.rs` checks that no kernel reads a uniform inside a loop).
var<private> u: Params;
@group(0) @binding(1) var<storage, read> tab: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

fn byte_at(i: u32) -> u32 {
    return (x[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

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
    var word = 0u;
    for (var b = 0u; b < 4u; b = b + 1u) {
        let j = w * 4u + b;
        if (j < u.total) {
            let o = j / u.out_block;
            let r = j - o * u.out_block;
            var i = 0u;
            loop {
                if (i + 1u >= u.n_inputs || r < tab[(i + 1u) * 4u + 2u]) {
                    break;
                }
                i = i + 1u;
            }
            let src = tab[i * 4u] + o * tab[i * 4u + 1u] + (r - tab[i * 4u + 2u]);
            let v = byte_at(src);
            let t = tab[u.n_inputs * 4u + i * 64u + (v >> 2u)];
            word = word | (((t >> ((v & 3u) * 8u)) & 0xffu) << (8u * b));
        }
    }
    y[w] = word;
}
