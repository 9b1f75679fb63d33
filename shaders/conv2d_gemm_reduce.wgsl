// squint: the second dispatch of a GEMM conv whose K runs in parallel slices (KSPLIT in
// `conv2d_gemm_tiled.wgsl`), appended to `epilogue_table.wgsl`, `conv_common.wgsl` and
// `conv_gemm_common.wgsl` (KSPLIT: the partial sums at binding 5). Same bindings and uniform as
// the conv dispatch; the quads and weights are bound but not read.
//
// Invocation r (of `slice_words`, the output words of the dispatch) finishes output word
// p_base + r: it adds the k_slices partial sums part[s * slice_words + r] in slice order
// (each already holds its quads' -w_zp * sum x' term), adds the zero-point terms of the whole
// K and runs the epilogue, as `finish` does for an unsplit conv. Wrapping i32 throughout:
// the same terms as the unsplit kernel in another order, so the same bits.

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    read_load_uniforms();
    let r = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (r >= u.slice_words) {
        return;
    }
    var acc = vec4<i32>(0);
    let slices = u.k_slices;
    let slice_words = u.slice_words;
    for (var s = 0u; s < slices; s++) {
        acc += part[s * slice_words + r];
    }
    // The word's place: packed word pt of plane (image, channel c).
    let word = u.p_base + r;
    let plane = word / u.pixel_tiles;
    let pt = word - plane * u.pixel_tiles;
    let c = plane % u.c_out;
    let p = vec4<u32>(pt * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    let px_ok = p < vec4<u32>(u.plane_out);
    let m = vec2<i32>(load_e(c * E_VEC4 + 1u).xy);
    let z = u.x_zero_point;
    acc = acc + vec4<i32>(u.k_padded * z * m.x - z * m.y);
    store_channel(c, acc, px_ok, plane - c, pt);
}
