// squint: implicit-GEMM int8 conv2d for GPUs, workgroup tiles of A and B staged in workgroup
// memory, appended to `epilogue_table.wgsl`, `conv_common.wgsl` and `conv_gemm_common.wgsl`
// (the GEMM view, buffers, uniform, register tile and epilogue).
//
// Tiling.
// * Workgroup tile: TP pixel tiles (4 * TP output pixels of one plane) x BPT channel blocks
//   (8 * BPT output channels of one group), for one image; WG = TP * BPT invocations.
//   Invocation (i, j) = (lid / BPT, lid % BPT) computes pixel tile i x channel block j (the
//   register tile of `conv_gemm_common.wgsl`).
// * The K loop runs over chunks of TKQ quads. For each, the workgroup copies the chunk's A
//   (4 * TP pixels x TKQ quads) and B (8 * BPT channels x TKQ quads) into workgroup memory
//   between two barriers; then every invocation reads its 4 A quads and 8 B quads per quad
//   from there. Each A quad loaded from memory is used by BPT invocations and each B quad by
//   TP, where `conv2d_gemm.wgsl` reloads A for every block of 8 channels.
// * Quads past k_quads (past the slice's end with KSPLIT) are 0 in both tiles (they add 0 to
//   the products and to the sums of x'); weight blocks past the group's last are read as its last and their results dropped.
// * Copy order: consecutive invocations copy consecutive quads of one pixel (contiguous in the
//   repacked input within a tap) and consecutive channels of one quad (contiguous in B).
//   WG is a multiple of TKQ, so each invocation copies A quads of one fixed chunk position
//   `lid % TKQ` and follows that quad's (ky, kx, qq) through the taps incrementally.
// * Workgroup-memory layout, padded against bank conflicts for the reads of one subgroup
//   (which spans few pixel tiles and all BPT channel blocks): A as [quad][pixel tile][5]
//   (4 pixels and a pad), B as [quad][channel block][9] (8 channels and a pad).
// * KSPLIT: parallel slices of K (see `conv_gemm_common.wgsl`). Workgroup w of the dispatch
//   is slice w % k_slices of workgroup tile w / k_slices, and sums only the chunks of its
//   slice (`slice_quads`, a multiple of TKQ); `conv2d_gemm_reduce.wgsl` finishes.
// TP, BPT and TKQ are overrides chosen on the host (`GemmTile` in `pipelines.rs`; by default
// 128 pixels x 32 channels, 8 quads per chunk). On an NVIDIA H200 (Vulkan) this kernel ran
// the 8-image 256-channel 3x3 conv of `squint bench --large` at 75% of the adapter's measured
// `dot4I8Packed` peak, where `conv2d_gemm.wgsl` reached 47% (README, Benchmarks).

override WG: u32 = 128u;
override TP: u32 = 32u;
override BPT: u32 = 4u;
override TKQ: u32 = 8u;

// Chunk A: quad qi, pixel tile i, pixel q at ta[(qi * TP + i) * 5 + q].
var<workgroup> ta: array<vec4<u32>, TKQ * TP * 5u>;
// Chunk B: quad qi, channel block j, lane l at tb[(qi * BPT + j) * 9 + l].
var<workgroup> tb: array<vec4<u32>, TKQ * BPT * 9u>;
// The A quad of each tile pixel's top-left tap.
var<workgroup> pbase: array<u32, TP * 4u>;

// Carries a quad index `qq` past the quads of one tap into the tap (kx, ky) it lies in.
fn walk_taps(qq: ptr<function, u32>, kx: ptr<function, u32>, ky: ptr<function, u32>) {
    while (*qq >= lt.quads_per_group) {
        *qq -= lt.quads_per_group;
        *kx += 1u;
        if (*kx == lt.kw) {
            *kx = 0u;
            *ky += 1u;
        }
    }
}

// The uniforms the loop over K reads (here and in `walk_taps`), copied once per invocation
// as `read_load_uniforms` copies the loads' (lavapipe compiled a uniform read inside a loop
// as a per-lane gather in every iteration).
struct LoopUniforms {
    quads_per_group: u32,
    kw: u32,
    blocks_per_group: u32,
    k_quads: u32,
}

var<private> lt: LoopUniforms;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    read_load_uniforms();
    lt = LoopUniforms(u.quads_per_group, u.kw, u.blocks_per_group, u.k_quads);
//#if KSPLIT
    // Slice s of the tile numbered wl / k_slices (see `workgroup_place`), and its quads.
    let wl = wid.y * nwg.x + wid.x;
    let s = wl % u.k_slices;
    let place = workgroup_place(vec3<u32>(wl / u.k_slices, 0u, 0u), nwg);
    let q_lo = s * u.slice_quads;
    let q_hi = min(q_lo + u.slice_quads, u.k_quads);
//#else
    let place = workgroup_place(wid, nwg);
    let q_lo = 0u;
    let q_hi = u.k_quads;
//#endif
    if (place.w == 0u) {
        return;
    }
    let ptg = place.x;
    let cb = place.y;
    let n = place.z;
    // This workgroup's channel blocks: blocks [bl0, bl0 + BPT) of group g (8-channel blocks
    // within the group; the weights of block b of group g are block g * blocks_per_group + b).
    let tiles_per_group = (u.blocks_per_group + BPT - 1u) / BPT;
    let g = cb / tiles_per_group;
    let bl0 = (cb - g * tiles_per_group) * BPT;

    // Top-left-tap A quad of each of the tile's pixels (clamped to the plane for reading).
    let last = u.plane_out - 1u;
    let w_out = u.w_out;
    let row0 = n * u.padded_h;
    let stride_h = u.stride_h;
    let stride_w = u.stride_w;
    let padded_w = u.padded_w;
    let quads_per_pixel = u.quads_per_pixel;
    let group_quad = g * u.quads_per_group;
    for (var e = lid; e < TP * 4u; e += WG) {
        let pc = min(ptg * TP * 4u + e, last);
        let oy = pc / w_out;
        let ox = pc - oy * w_out;
        pbase[e] = ((row0 + oy * stride_h) * padded_w + ox * stride_w) * quads_per_pixel
            + group_quad;
    }
    workgroupBarrier();

    // Copy roles. A: chunk position qa = lid % TKQ, pixels lid / TKQ + r * (WG / TKQ); its
    // quad's tap walk (qq, kx, ky) and offset `off` from the top-left tap.
    let qa = lid % TKQ;
    let tap_step = u.quads_per_group + u.step_kx; // quads from one tap to the next (wrapping)
    let row_step = u.kw * tap_step + u.step_ky; // from one kernel row to the next (wrapping)
    // The tap (kx, ky) and quad qq of K quad q_lo + qa (what `walk_taps` gives from 0).
    let taps = (q_lo + qa) / u.quads_per_group;
    var qq = q_lo + qa - taps * u.quads_per_group;
    var ky = taps / u.kw;
    var kx = taps - ky * u.kw;

    // This invocation's register tile.
    let i = lid / BPT;
    let j = lid % BPT;
    var c0 = vec4<i32>(0);
    var c1 = vec4<i32>(0);
    var c2 = vec4<i32>(0);
    var c3 = vec4<i32>(0);
    var c4 = vec4<i32>(0);
    var c5 = vec4<i32>(0);
    var c6 = vec4<i32>(0);
    var c7 = vec4<i32>(0);
    var sums = vec4<i32>(0);

    for (var q0 = q_lo; q0 < q_hi; q0 += TKQ) {
        workgroupBarrier();
        // Stage A: TKQ quads of the 4 * TP pixels.
        let qa_live = q0 + qa < q_hi;
        let off = ky * row_step + kx * tap_step + qq;
        for (var px = lid / TKQ; px < TP * 4u; px += WG / TKQ) {
            var v = vec4<u32>(0u);
            if (qa_live) {
                v = load_a(pbase[px] + off);
            }
            ta[(qa * TP + px / 4u) * 5u + px % 4u] = v;
        }
        // Stage B: TKQ quads of the 8 * BPT channels.
        // Channel cw of the tile at chunk quad qb; its weight block clamped to the group's.
        for (var e = lid; e < TKQ * 8u * BPT; e += WG) {
            let qb = e / (8u * BPT);
            let cw = e % (8u * BPT);
            let blk = g * lt.blocks_per_group + min(bl0 + cw / 8u, lt.blocks_per_group - 1u);
            var v = vec4<u32>(0u);
            if (q0 + qb < q_hi) {
                v = load_b((blk * lt.k_quads + q0 + qb) * 8u + cw % 8u);
            }
            tb[(qb * BPT + cw / 8u) * 9u + cw % 8u] = v;
        }
        // Advance this invocation's A quad by TKQ through the taps.
        qq += TKQ;
        walk_taps(&qq, &kx, &ky);
        workgroupBarrier();
        for (var qi = 0u; qi < TKQ; qi++) {
            let xb = (qi * TP + i) * 5u;
            let x0 = ta[xb];
            let x1 = ta[xb + 1u];
            let x2 = ta[xb + 2u];
            let x3 = ta[xb + 3u];
            let wb = (qi * BPT + j) * 9u;
            c0 += quad4(x0, x1, x2, x3, tb[wb]);
            c1 += quad4(x0, x1, x2, x3, tb[wb + 1u]);
            c2 += quad4(x0, x1, x2, x3, tb[wb + 2u]);
            c3 += quad4(x0, x1, x2, x3, tb[wb + 3u]);
            c4 += quad4(x0, x1, x2, x3, tb[wb + 4u]);
            c5 += quad4(x0, x1, x2, x3, tb[wb + 5u]);
            c6 += quad4(x0, x1, x2, x3, tb[wb + 6u]);
            c7 += quad4(x0, x1, x2, x3, tb[wb + 7u]);
            if (WZP == 1u) {
                sums += vec4<i32>(xsum(x0), xsum(x1), xsum(x2), xsum(x3));
            }
        }
    }

    // Zero points and the epilogue: requantize, pack the 4 pixels of each channel in a word
    // (KSPLIT: store the slice's sums).
    let pt = ptg * TP + i;
    let bl = bl0 + j;
    if (pt < u.pixel_tiles && bl < u.blocks_per_group) {
//#if KSPLIT
        finish_tile(c0, c1, c2, c3, c4, c5, c6, c7, sums, n, g, bl, pt, s * u.slice_words);
//#else
        finish_tile(c0, c1, c2, c3, c4, c5, c6, c7, sums, n, g, bl, pt, 0u);
//#endif
    }
}
