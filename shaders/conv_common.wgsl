// squint: what the conv kernels (`conv2d_gemm.wgsl`, `conv2d_gemm_tiled.wgsl`,
// `conv2d_dw.wgsl`) share, appended after `epilogue_table.wgsl` and before the kernel, which
// declares the uniform `u` (with the fields used here: the log2 texture widths
// `quads_tex_log2_width`, `w_tex_log2_width`, `etab_tex_log2_width`, the buffer window bases
// `a_base`, `w_base`, `etab_base`, `y_base`, `pixel_tiles`, and the workgroup numbering
// `wg_begin`, `wg_count`, `plane_workgroups`, `channel_blocks`).
//
// Bindings: 1 the input quads, 2 the packed weights, 3 the epilogue table, as rgba32uint
// storage textures (XTEX: vec4 i at texel (i % 2^width_log2, i >> width_log2)) or as storage
// buffer windows; 4 the packed output (four pixels per word); 5 (KSPLIT, GEMM) the partial
// sums of a conv split along K.

//#if XTEX
@group(0) @binding(1) var xt: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(2) var wt: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(3) var et: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(4) var<storage, read_write> y: array<u32>;
//#else
@group(0) @binding(1) var<storage, read> xa: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> wts: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> etab: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> y: array<u32>;
//#endif
//#if KSPLIT
@group(0) @binding(5) var<storage, read_write> part: array<vec4<i32>>;
//#endif

// The uniforms the loads below read, copied once per invocation by `read_load_uniforms` (the
// first statement of every kernel that appends this file): lavapipe (Mesa 22.3, LLVM 15)
// compiled a uniform read inside a loop as a per-lane gather (8 bounds-checked scalar loads)
// in every iteration.
struct LoadUniforms {
    quads_tex_log2_width: u32,
    w_tex_log2_width: u32,
    etab_tex_log2_width: u32,
    a_base: u32,
    w_base: u32,
    etab_base: u32,
}

var<private> lu: LoadUniforms;

fn read_load_uniforms() {
    lu = LoadUniforms(u.quads_tex_log2_width, u.w_tex_log2_width, u.etab_tex_log2_width,
        u.a_base, u.w_base, u.etab_base);
}

// The A quad with (chunk-relative) index i.
fn load_a(i: u32) -> vec4<u32> {
//#if XTEX
    let mask = (1u << lu.quads_tex_log2_width) - 1u;
    return textureLoad(xt, vec2<u32>(i & mask, i >> lu.quads_tex_log2_width));
//#else
    return xa[i - lu.a_base];
//#endif
}

// The B (weight) vec4 with index i.
fn load_b(i: u32) -> vec4<u32> {
//#if XTEX
    let mask = (1u << lu.w_tex_log2_width) - 1u;
    return textureLoad(wt, vec2<u32>(i & mask, i >> lu.w_tex_log2_width));
//#else
    return wts[i - lu.w_base];
//#endif
}

// Vec4 i of the epilogue table.
fn load_e(i: u32) -> vec4<u32> {
//#if XTEX
    let mask = (1u << lu.etab_tex_log2_width) - 1u;
    return textureLoad(et, vec2<u32>(i & mask, i >> lu.etab_tex_log2_width));
//#else
    return etab[i - lu.etab_base];
//#endif
}

// This workgroup's place in the dispatch (`wid`, `nwg`: its id and the grid's size): x the
// pixel-tile group of the plane, y the channel block, z the image of the chunk, and w 1 when
// the workgroup lies in the dispatch's range [wg_begin, wg_begin + wg_count) (the 2-D grid
// may hold more), else 0. Uniform across the workgroup: a kernel that returns when w is 0
// leaves no invocation before a barrier or broadcast.
fn workgroup_place(wid: vec3<u32>, nwg: vec3<u32>) -> vec4<u32> {
    let wl = wid.y * nwg.x + wid.x;
    let wg = u.wg_begin + wl;
    let t = wg / u.plane_workgroups;
    return vec4<u32>(wg % u.plane_workgroups, t % u.channel_blocks, t / u.channel_blocks,
        select(0u, 1u, wl < u.wg_count));
}

// Requantizes the 4 pixels' accumulators `acc` of output channel c and stores them as the
// packed output word `pt` of plane `plane0 + c` (bytes of pixels past the plane's end are 0).
fn store_channel(c: u32, acc: vec4<i32>, px_ok: vec4<bool>, plane0: u32, pt: u32) {
    store_channel_h(c, load_e(c * E_VEC4), acc, px_ok, plane0, pt);
}

// `store_channel` with channel c's epilogue header `h` already read.
fn store_channel_h(c: u32, h: vec4<u32>, acc: vec4<i32>, px_ok: vec4<bool>, plane0: u32,
    pt: u32) {
    y[(plane0 + c) * u.pixel_tiles + pt - u.y_base] = pack_levels(acc, c, h, px_ok);
}
