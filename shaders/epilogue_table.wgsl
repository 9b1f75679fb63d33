// squint: the requantization epilogue of the conv kernels, as an exact table lookup (see
// `src/quant/step.rs` for the derivation), appended after `common.wgsl`.
//
// Every formula is a non-decreasing step function of the accumulator on the domain the host
// guarantees, so one output channel's epilogue is fully described by its lowest and highest
// levels (`base`, `top`) and the smallest accumulator reaching each level in between. The
// kernel estimates the level with plain float arithmetic (whatever its rounding, contraction or
// flushing), clamps it to [base, top], and keeps it only when the table confirms it
// (t[k] <= acc < t[k + 1]); otherwise it binary-searches the table. The result is therefore
// exactly the CPU formula's, and costs two table reads in the common case instead of the
// integer-emulated float code of `epilogue.wgsl`.
//
// Contract with the including kernel: it defines `load_e(i: u32) -> vec4<u32>`, vec4 `i` of
// the epilogue table, laid out per output channel c as E_VEC4 vec4s:
//   E_VEC4 * c:      (bits of f32 slope, bits of f32 offset, base, top)
//   E_VEC4 * c + 1:  (weight zero point or 0, weight sum, 0, 0)   (kernel-specific)
//   E_VEC4 * c + 2 + i / 4, component i % 4:  t[base + 1 + i], for i < top - base

const E_VEC4: u32 = 66u;

// The float epilogue (`float_epilogue` in `src/gpu/ops.rs`): 1 for FBGEMM's formula
// rne(f32(f32(f32(acc) + b) * M)), 2 for QNNPACK's rne(f32(f32(acc + b) * M)), each then
// clamped and offset by the output zero point: the CPU reference's operations in its order,
// on accumulators below 2^24 (exact in f32), used only where f32 operations are correctly
// rounded to nearest even (CPU adapters under Vulkan; an addition followed by a
// multiplication leaves nothing to fuse). The header vec4 of channel c is then
// (bits of M, bits of b (f32 for FBGEMM, i32 for QNNPACK), the clamp's bounds minus the zero
// point as the low and high i16, the output zero point (this table; the direct depthwise
// kernel's holds the weight sum there)). 0: the estimate and the thresholds.
override FEXACT: u32 = 0u;

// The float epilogue's levels of the 4 accumulators `v` (header `h`, output zero point `zp`).
fn float_levels(v: vec4<i32>, h: vec4<u32>, zp: i32) -> vec4<i32> {
    var x: vec4<f32>;
    if (FEXACT == 1u) {
        x = vec4<f32>(v) + bitcast<f32>(h.y);
    } else {
        x = vec4<f32>(v + bitcast<i32>(h.y));
    }
    let lo = f32((i32(h.z) << 16u) >> 16u);
    let hi = f32(i32(h.z) >> 16u);
    return vec4<i32>(clamp(round(x * bitcast<f32>(h.x)), vec4<f32>(lo), vec4<f32>(hi))) + zp;
}

// Threshold i (the smallest accumulator of level base + 1 + i) of channel c.
fn e_threshold(c: u32, i: u32) -> i32 {
    let t = load_e(c * E_VEC4 + 2u + (i >> 2u));
    let j = i & 3u;
    return i32(select(select(t.x, t.y, j == 1u), select(t.z, t.w, j == 3u), j >= 2u));
}

// The requantized (clamped) output level of `acc` in channel c, whose header vec4 is `h`.
fn requant_step(acc: i32, c: u32, h: vec4<u32>) -> i32 {
    let base = i32(h.z);
    let top = i32(h.w);
    let e = round(f32(acc) * bitcast<f32>(h.x) + bitcast<f32>(h.y));
    let k = clamp(i32(clamp(e, f32(base), f32(top))), base, top);
    let lo_ok = k == base || e_threshold(c, u32(k - base - 1)) <= acc;
    let hi_ok = k == top || acc < e_threshold(c, u32(k - base));
    if (lo_ok && hi_ok) {
        return k;
    }
    var lo = base;
    var hi = top;
    while (lo < hi) {
        let mid = lo + (hi - lo + 1) / 2;
        if (e_threshold(c, u32(mid - base - 1)) <= acc) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

// Requantizes the 4 pixels `v` of output channel `c` (header `h`) into one packed output word:
// byte q is pixel q's output (0 for pixels past the end of the plane).
fn pack_levels(v: vec4<i32>, c: u32, h: vec4<u32>, px_ok: vec4<bool>) -> u32 {
    var r: vec4<u32>;
    if (FEXACT > 0u) {
        r = vec4<u32>(float_levels(v, h, i32(h.w))) & vec4<u32>(0xffu);
    } else {
        r = vec4<u32>(
            u32(requant_step(v.x, c, h)),
            u32(requant_step(v.y, c, h)),
            u32(requant_step(v.z, c, h)),
            u32(requant_step(v.w, c, h)),
        ) & vec4<u32>(0xffu);
    }
    let b = select(vec4<u32>(0u), r, px_ok) << vec4<u32>(0u, 8u, 16u, 24u);
    return b.x | b.y | b.z | b.w;
}
