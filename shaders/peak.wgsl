// squint: the adapter's peak for `squint bench`, appended to `common.wgsl`: a register-only
// loop of `dot4I8Packed` (flag DOT4: four int8 products and their sum per call) or of f32
// `fma`, eight independent chains per invocation, no memory traffic but one word written at
// the end (so that nothing is optimized away).
//
// Buffers:
// * `u` (uniform): steps per chain, a seed.
// * `y` (storage, read_write): one word per invocation.
// Each step of a chain feeds the next (the accumulator is an operand), so no compiler can hoist
// the work out of the loop; chains and invocations give the parallelism.

struct Params {
    iters: u32,
    seed: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = linear_index(wid, nwg, lid);
    let b = u.seed * 2654435761u + w;
    // The trip count read once: lavapipe compiled the loop condition's uniform read as a
    // per-lane gather in every iteration, which held the f32 `fma` loop 11% below this one.
    let iters = u.iters;
//#if DOT4
    var a0 = i32(w);
    var a1 = a0 + 1;
    var a2 = a0 + 2;
    var a3 = a0 + 3;
    var a4 = a0 + 4;
    var a5 = a0 + 5;
    var a6 = a0 + 6;
    var a7 = a0 + 7;
    for (var i = 0u; i < iters; i = i + 1u) {
        a0 = a0 + dot4I8Packed(bitcast<u32>(a0), b);
        a1 = a1 + dot4I8Packed(bitcast<u32>(a1), b);
        a2 = a2 + dot4I8Packed(bitcast<u32>(a2), b);
        a3 = a3 + dot4I8Packed(bitcast<u32>(a3), b);
        a4 = a4 + dot4I8Packed(bitcast<u32>(a4), b);
        a5 = a5 + dot4I8Packed(bitcast<u32>(a5), b);
        a6 = a6 + dot4I8Packed(bitcast<u32>(a6), b);
        a7 = a7 + dot4I8Packed(bitcast<u32>(a7), b);
    }
    y[w] = bitcast<u32>(a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7);
//#else
    let m = 0.999 + f32(b & 0xffu) * 1e-6;
    let c = f32(w) * 1e-3;
    var a0 = c;
    var a1 = c + 1.0;
    var a2 = c + 2.0;
    var a3 = c + 3.0;
    var a4 = c + 4.0;
    var a5 = c + 5.0;
    var a6 = c + 6.0;
    var a7 = c + 7.0;
    for (var i = 0u; i < iters; i = i + 1u) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a4 = fma(a4, m, c);
        a5 = fma(a5, m, c);
        a6 = fma(a6, m, c);
        a7 = fma(a7, m, c);
    }
    y[w] = bitcast<u32>(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7);
//#endif
}
