// squint: implicit-GEMM int8 conv2d, one 8-channel block per workgroup (CPU adapters, and
// GPUs when forced), appended to `epilogue_table.wgsl`, `conv_common.wgsl` and
// `conv_gemm_common.wgsl` (the GEMM view, buffers, uniform, register tile and epilogue).
//
// Tiling.
// * Workgroup tile: 4 * WG output pixels (WG pixel tiles of one output plane) x 8 output
//   channels (a channel block of one group), for one image. The K loop runs over all k_quads
//   quads; B is staged per chunk of TKQ quads (SHARED) or per quad.
// * B staging (one of three, chosen on the host):
//   - SG (subgroups of at least 8 lanes): lane j of each subgroup loads channel j's quad and
//     the 8 quads reach every lane by `subgroupBroadcast` (registers, no barrier);
//   - SHARED: the workgroup stages TKQ quads x 8 channels of B in `var<workgroup>` memory
//     between two barriers (TKQ is an override chosen from the workgroup storage limit);
//   - DIRECT: every invocation loads the 8 quads itself (CPU adapters without subgroups:
//     there workgroup memory is ordinary memory read through a per-lane loop, slower than a
//     texture load, and barriers are coroutine switches).
// * A is read directly (each A quad of an invocation is used by that invocation only).
// Why these sizes: on lavapipe/llvmpipe (8 SIMD lanes of 32 bits, 32 vector registers) the
// 4 x 8 register tile measured best (4 x 4, 2 x 8, 3 x 8, 4 x 6 and 5 x 8 were 5-25% slower:
// fewer accumulators reload operands more often, more spill). The workgroup size WG (from the
// invocation limit; 8, one SIMD batch, on CPU adapters) and the chunk TKQ (from the workgroup
// storage limit) are overrides.

override WG: u32 = 64u;
override TKQ: u32 = 16u;

//#if SHARED
var<workgroup> wtile: array<vec4<u32>, TKQ * 8u>;
//#endif

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
//#if SG
    @builtin(subgroup_invocation_id) sl: u32,
//#endif
) {
    read_load_uniforms();
    let place = workgroup_place(wid, nwg);
    if (place.w == 0u) {
        return;
    }
    let ptg = place.x;
    let cb = place.y;
    let n = place.z;
    let g = cb / u.blocks_per_group;
    let bl = cb - g * u.blocks_per_group;
    // The layer's group (a slice of groups starts at `group_base`).
    let gg = g + u.group_base;
    let lanes = vec4<u32>(0u, 1u, 2u, 3u);

    // The 4 output pixels of this invocation's tile (clamped for reading) and the A quad of
    // each one's top-left tap.
    let pt = ptg * WG + lid;
    let p = vec4<u32>(pt * 4u) + lanes;
    let pc = min(p, vec4<u32>(u.plane_out - 1u));
    let oy = pc / vec4<u32>(u.w_out);
    let ox = pc - oy * u.w_out;
    let a = ((vec4<u32>(n * u.padded_h) + oy * u.stride_h) * u.padded_w + ox * u.stride_w)
        * u.quads_per_pixel + g * u.quads_per_group;

    // Accumulator c<j>: channel j of the block, lane q for pixel q; sums: sum of x' per pixel.
    var c0 = vec4<i32>(0);
    var c1 = vec4<i32>(0);
    var c2 = vec4<i32>(0);
    var c3 = vec4<i32>(0);
    var c4 = vec4<i32>(0);
    var c5 = vec4<i32>(0);
    var c6 = vec4<i32>(0);
    var c7 = vec4<i32>(0);
    var sums = vec4<i32>(0);
    // B index of this block's first quad (per lane with subgroups: lane j loads channel j;
    // for a K slice, its first quad, the others' skipped after each tap: SHARED staging loads
    // consecutive quads, so the host runs slices with SG or DIRECT staging); `off` follows
    // the quad (ky, kx, qq) through the taps.
    let wq = (gg * u.blocks_per_group + bl) * u.w_block_quads * 8u + u.w_first;
//#if SG
    var wi = wq + min(sl, 7u);
//#else
    var wi = wq;
//#endif
    var off = 0u;
    var qq = 0u;
    var kx = 0u;
    // The uniforms the loop reads, read once (as `read_load_uniforms` reads the loads').
    let k_quads = u.k_quads;
    let quads_per_group = u.quads_per_group;
    let step_kx = u.step_kx;
    let step_ky = u.step_ky;
    let w_tap_skip = u.w_tap_skip;
    let kw = u.kw;
    for (var q = 0u; q < k_quads; q++) {
//#if SG
        let wv = load_b(wi);
        let w0 = subgroupBroadcast(wv, 0u);
        let w1 = subgroupBroadcast(wv, 1u);
        let w2 = subgroupBroadcast(wv, 2u);
        let w3 = subgroupBroadcast(wv, 3u);
        let w4 = subgroupBroadcast(wv, 4u);
        let w5 = subgroupBroadcast(wv, 5u);
        let w6 = subgroupBroadcast(wv, 6u);
        let w7 = subgroupBroadcast(wv, 7u);
//#else
//#if SHARED
        // Stage the next TKQ quads of B (a uniform condition: every invocation reaches the
        // barriers).
        let qi = q % TKQ;
        if (qi == 0u) {
            let qn = min(TKQ, k_quads - q);
            workgroupBarrier();
            for (var e = lid; e < qn * 8u; e += WG) {
                wtile[e] = load_b(wi + e);
            }
            workgroupBarrier();
        }
        let tb = qi * 8u;
        let w0 = wtile[tb];
        let w1 = wtile[tb + 1u];
        let w2 = wtile[tb + 2u];
        let w3 = wtile[tb + 3u];
        let w4 = wtile[tb + 4u];
        let w5 = wtile[tb + 5u];
        let w6 = wtile[tb + 6u];
        let w7 = wtile[tb + 7u];
//#else
        let w0 = load_b(wi);
        let w1 = load_b(wi + 1u);
        let w2 = load_b(wi + 2u);
        let w3 = load_b(wi + 3u);
        let w4 = load_b(wi + 4u);
        let w5 = load_b(wi + 5u);
        let w6 = load_b(wi + 6u);
        let w7 = load_b(wi + 7u);
//#endif
//#endif
        wi += 8u;
        let x0 = load_a(a.x + off);
        let x1 = load_a(a.y + off);
        let x2 = load_a(a.z + off);
        let x3 = load_a(a.w + off);
        c0 += quad4(x0, x1, x2, x3, w0);
        c1 += quad4(x0, x1, x2, x3, w1);
        c2 += quad4(x0, x1, x2, x3, w2);
        c3 += quad4(x0, x1, x2, x3, w3);
        c4 += quad4(x0, x1, x2, x3, w4);
        c5 += quad4(x0, x1, x2, x3, w5);
        c6 += quad4(x0, x1, x2, x3, w6);
        c7 += quad4(x0, x1, x2, x3, w7);
        if (WZP == 1u) {
            sums += vec4<i32>(xsum(x0), xsum(x1), xsum(x2), xsum(x3));
        }
        off += 1u;
        qq += 1u;
        if (qq == quads_per_group) {
            qq = 0u;
            off += step_kx;
            wi += w_tap_skip;
            kx += 1u;
            if (kx == kw) {
                kx = 0u;
                off += step_ky;
            }
        }
    }

    // Zero points and the epilogue: requantize, pack the 4 pixels of each channel in a word.
//#if SG
    // The block's epilogue vec4s: lane j reads channel j's two and the subgroup shares them
    // (CPU adapters run each read as a load per lane: 2 instead of 16 per invocation).
    let b = block_channels(gg, bl);
    let hv = block_vec4(b, min(sl, 7u), 0u);
    let mv = block_vec4(b, min(sl, 7u), 1u);
    let e = BlockEpilogue(
        array<vec4<u32>, 8>(subgroupBroadcast(hv, 0u), subgroupBroadcast(hv, 1u),
            subgroupBroadcast(hv, 2u), subgroupBroadcast(hv, 3u), subgroupBroadcast(hv, 4u),
            subgroupBroadcast(hv, 5u), subgroupBroadcast(hv, 6u), subgroupBroadcast(hv, 7u)),
        array<vec4<u32>, 8>(subgroupBroadcast(mv, 0u), subgroupBroadcast(mv, 1u),
            subgroupBroadcast(mv, 2u), subgroupBroadcast(mv, 3u), subgroupBroadcast(mv, 4u),
            subgroupBroadcast(mv, 5u), subgroupBroadcast(mv, 6u), subgroupBroadcast(mv, 7u)),
    );
    if (pt < u.pixel_tiles) {
        finish_tile_with(c0, c1, c2, c3, c4, c5, c6, c7, sums, n, gg, bl, pt, 0u, e);
    }
//#else
    if (pt < u.pixel_tiles) {
        finish_tile(c0, c1, c2, c3, c4, c5, c6, c7, sums, n, gg, bl, pt, 0u);
    }
//#endif
}
