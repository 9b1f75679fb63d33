// squint: shared WGSL, prepended to every kernel at pipeline creation.
//
// * Integer-emulated IEEE-754 binary32 arithmetic (`sf_*`): float values travel as their u32
//   bit patterns and every rounding is done with 32-bit integer operations, round to nearest,
//   ties to even, with subnormals, infinities and NaN handled as IEEE does.
// * TFLite fixed point (`fp_*`) with 32-bit integer operations only (GL has no shader-int64).
// * `linear_index`, the invocation index of a 1-D or 2-D dispatch.
//
// The requantization epilogue lives in `epilogue.wgsl`, which builds on this file.
//
// Why soft float. WGSL gives no portable guarantee for the float steps the PyTorch formulas
// round after each operation:
// * WGSL 15.7.5 "Reassociation and Fusion" allows an implementation to reassociate and to fuse
//   (e.g. contract `a * b + c` into one FMA); naga 30 emits no SPIR-V `NoContraction` and no
//   GLSL `precise`, and wgpu's Metal backend compiles with Metal's default fast math. oneDNN's
//   `f32(f32(acc*sx)*sw) + b` and `v*inv + zp` are exactly such patterns, and a compiler may
//   also hoist `sx*sw` out of a loop (reassociation).
// * `f32(i32)` need not round to nearest for |x| > 2^24, the rounding mode of `+ - *` is not
//   pinned to ties-to-even, and subnormals may be flushed (15.7.2-15.7.3).
// lavapipe happens to be exact (its fma is not fused), but a real GPU need not be. Every float
// step here is therefore integer code, which WGSL defines exactly (wrapping two's complement),
// so the results are bit-exact with the CPU reference on any adapter. The epilogue runs once per
// output (not per multiply-accumulate), so its cost is small next to the K-long dot products.
// The requantization kernels divide nothing: the host precomputes every reciprocal in the
// records; `sf_div` serves ONNX Runtime's average pool, which divides.

const SF_SIGN: u32 = 0x80000000u;
const SF_INF: u32 = 0x7f800000u;
const SF_QNAN: u32 = 0x7fc00000u;
// 1.0e9f: the reference clamps rounded floats to +-1e9 before converting to an int.
const SF_1E9: u32 = 0x4e6e6b28u;
const I32_MIN: i32 = -2147483647 - 1;
const I32_MAX: i32 = 2147483647;

// Full 32 x 32 -> 64-bit unsigned product as (lo, hi), with 16-bit limbs.
fn mul_u32_wide(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = lh + hl;
    let mid_carry = select(0u, 0x10000u, mid < lh);
    let lo = ll + (mid << 16u);
    let lo_carry = select(0u, 1u, lo < ll);
    let hi = hh + (mid >> 16u) + mid_carry + lo_carry;
    return vec2<u32>(lo, hi);
}

// (hi:lo) >> k for k in [0, 63]; the caller knows the result fits 32 bits.
fn u64_shr(hi: u32, lo: u32, k: u32) -> u32 {
    if (k == 0u) {
        return lo;
    }
    if (k < 32u) {
        return (lo >> k) | (hi << (32u - k));
    }
    return hi >> (k - 32u);
}

// Bit k (in [0, 63]) of (hi:lo).
fn u64_bit(hi: u32, lo: u32, k: u32) -> u32 {
    if (k >= 32u) {
        return (hi >> (k - 32u)) & 1u;
    }
    return (lo >> k) & 1u;
}

// Whether any bit below bit k (k in [0, 63]) of (hi:lo) is set.
fn u64_any_below(hi: u32, lo: u32, k: u32) -> bool {
    if (k == 0u) {
        return false;
    }
    if (k < 32u) {
        return (lo & ((1u << k) - 1u)) != 0u;
    }
    if (k == 32u) {
        return lo != 0u;
    }
    return lo != 0u || (hi & ((1u << (k - 32u)) - 1u)) != 0u;
}

// (hi:lo) / 2^k rounded to nearest, ties to even (k >= 63 treated as 63; fine for the < 2^62
// values used here, which then round to 0).
fn u64_shr_rne(hi: u32, lo: u32, k: u32) -> u32 {
    if (k == 0u) {
        return lo;
    }
    let kk = min(k, 63u);
    var q = u64_shr(hi, lo, kk);
    let guard = u64_bit(hi, lo, kk - 1u);
    let sticky = u64_any_below(hi, lo, kk - 1u);
    if (guard == 1u && (sticky || (q & 1u) == 1u)) {
        q = q + 1u;
    }
    return q;
}

// f32(a), rounded to nearest even (exact for |a| <= 2^24).
fn sf_from_i32(a: i32) -> u32 {
    if (a == 0) {
        return 0u;
    }
    let neg = a < 0;
    let mag = select(u32(a), 0u - u32(a), neg);
    let sign = select(0u, SF_SIGN, neg);
    let top = 31u - countLeadingZeros(mag);
    var m: u32;
    if (top <= 23u) {
        m = mag << (23u - top);
    } else {
        m = u64_shr_rne(0u, mag, top - 23u);
    }
    // (biased exponent - 1) << 23 plus the mantissa with its implicit bit: a rounding carry
    // into bit 24 bumps the exponent by itself.
    return sign | (((top + 126u) << 23u) + m);
}

// A finite nonzero magnitude's mantissa, normalized to [2^23, 2^24), and its exponent
// (biased; below 1 for subnormals), the exponent as the bits of an i32.
fn sf_normalize(aa: u32) -> vec2<u32> {
    let e = i32(aa >> 23u);
    let m = aa & 0x7fffffu;
    if (e == 0) {
        let s = countLeadingZeros(m) - 8u;
        return vec2<u32>(m << s, u32(1 - i32(s)));
    }
    return vec2<u32>(m | 0x800000u, u32(e));
}

// IEEE binary32 a * b, round to nearest even, subnormals kept.
fn sf_mul(a: u32, b: u32) -> u32 {
    let sign = (a ^ b) & SF_SIGN;
    let aa = a & 0x7fffffffu;
    let bb = b & 0x7fffffffu;
    if (aa > SF_INF || bb > SF_INF) {
        return SF_QNAN;
    }
    if (aa == SF_INF) {
        if (bb == 0u) {
            return SF_QNAN;
        }
        return sign | SF_INF;
    }
    if (bb == SF_INF) {
        if (aa == 0u) {
            return SF_QNAN;
        }
        return sign | SF_INF;
    }
    if (aa == 0u || bb == 0u) {
        return sign;
    }
    let na = sf_normalize(aa);
    let nb = sf_normalize(bb);
    var ma = na.x;
    let ea = i32(na.y);
    let mb = nb.x;
    let eb = i32(nb.y);
    // ma, mb in [2^23, 2^24): the product is in [2^46, 2^48).
    let p = mul_u32_wide(ma, mb);
    let top = select(0, 1, p.y >= 0x8000u);
    var e = ea + eb - 127 + top;
    var sh = 23u + u32(top);
    if (e >= 255) {
        return sign | SF_INF;
    }
    if (e < 1) {
        // Subnormal result: shift further so that the exponent field is 0.
        sh = sh + u32(min(1 - e, 64));
        e = 1;
    }
    let m = u64_shr_rne(p.y, p.x, sh);
    let bits = (u32(e - 1) << 23u) + m;
    if (bits >= SF_INF) {
        return sign | SF_INF;
    }
    return sign | bits;
}

// IEEE binary32 a + b, round to nearest even, subnormals kept.
fn sf_add(a: u32, b: u32) -> u32 {
    let aa = a & 0x7fffffffu;
    let bb = b & 0x7fffffffu;
    if (aa > SF_INF || bb > SF_INF) {
        return SF_QNAN;
    }
    if (aa == SF_INF) {
        if (bb == SF_INF && a != b) {
            return SF_QNAN;
        }
        return a;
    }
    if (bb == SF_INF) {
        return b;
    }
    if (aa == 0u) {
        if (bb == 0u) {
            // +0 + -0 = +0; -0 + -0 = -0.
            return a & b;
        }
        return b;
    }
    if (bb == 0u) {
        return a;
    }
    var x = a;
    var y = b;
    if (bb > aa) {
        x = b;
        y = a;
    }
    let xa = x & 0x7fffffffu;
    let ya = y & 0x7fffffffu;
    let sign = x & SF_SIGN;
    var ex = i32(xa >> 23u);
    var mx = xa & 0x7fffffu;
    if (ex == 0) {
        ex = 1;
    } else {
        mx = mx | 0x800000u;
    }
    var ey = i32(ya >> 23u);
    var my = ya & 0x7fffffu;
    if (ey == 0) {
        ey = 1;
    } else {
        my = my | 0x800000u;
    }
    // Three extra low bits: guard, round, sticky.
    mx = mx << 3u;
    my = my << 3u;
    let d = u32(ex - ey);
    if (d != 0u) {
        if (d >= 27u) {
            my = select(0u, 1u, my != 0u);
        } else {
            let lost = my & ((1u << d) - 1u);
            my = (my >> d) | select(0u, 1u, lost != 0u);
        }
    }
    var m: u32;
    var e = ex;
    if (((x ^ y) & SF_SIGN) == 0u) {
        m = mx + my;
        if (m >= 0x8000000u) {
            m = (m >> 1u) | (m & 1u);
            e = e + 1;
        }
    } else {
        m = mx - my;
        if (m == 0u) {
            return 0u;
        }
        let lz = countLeadingZeros(m) - 5u;
        let s = min(lz, u32(e - 1));
        m = m << s;
        e = e - i32(s);
    }
    let low = m & 7u;
    m = m >> 3u;
    if (low > 4u || (low == 4u && (m & 1u) == 1u)) {
        m = m + 1u;
    }
    let bits = (u32(e - 1) << 23u) + m;
    if (bits >= SF_INF) {
        return sign | SF_INF;
    }
    return sign | bits;
}

// IEEE binary32 a / b, round to nearest even, subnormals kept: the 26 leading bits of the
// mantissa quotient by restoring division (the remainder is the sticky bit), then rounded
// like `sf_mul`.
fn sf_div(a: u32, b: u32) -> u32 {
    let sign = (a ^ b) & SF_SIGN;
    let aa = a & 0x7fffffffu;
    let bb = b & 0x7fffffffu;
    if (aa > SF_INF || bb > SF_INF) {
        return SF_QNAN;
    }
    if (aa == SF_INF) {
        if (bb == SF_INF) {
            return SF_QNAN;
        }
        return sign | SF_INF;
    }
    if (bb == SF_INF) {
        return sign;
    }
    if (bb == 0u) {
        if (aa == 0u) {
            return SF_QNAN;
        }
        return sign | SF_INF;
    }
    if (aa == 0u) {
        return sign;
    }
    let na = sf_normalize(aa);
    let nb = sf_normalize(bb);
    var ma = na.x;
    let ea = i32(na.y);
    let mb = nb.x;
    let eb = i32(nb.y);
    // ma, mb in [2^23, 2^24). Make ma / mb lie in [1, 2).
    var e = ea - eb + 127;
    if (ma < mb) {
        ma = ma << 1u;
        e = e - 1;
    }
    // q: 26 quotient bits (q in [2^25, 2^26)); r: the remainder, below 2 mb < 2^25.
    var q = 0u;
    var r = ma;
    for (var i = 0u; i < 26u; i++) {
        q = q << 1u;
        if (r >= mb) {
            r = r - mb;
            q = q | 1u;
        }
        r = r << 1u;
    }
    let sticky = r != 0u;
    if (e >= 255) {
        return sign | SF_INF;
    }
    var sh = 2u;
    if (e < 1) {
        // Subnormal result: shift further so that the exponent field is 0.
        sh = sh + u32(min(1 - e, 30));
        e = 1;
    }
    var m = 0u;
    if (sh <= 26u) {
        m = q >> sh;
        let rem = q & ((1u << sh) - 1u);
        let half = 1u << (sh - 1u);
        if (rem > half || (rem == half && (sticky || (m & 1u) == 1u))) {
            m = m + 1u;
        }
    }
    // sh > 26: q < 2^26 <= half, below half a unit: rounds to 0.
    let bits = (u32(e - 1) << 23u) + m;
    if (bits >= SF_INF) {
        return sign | SF_INF;
    }
    return sign | bits;
}

// The reference's `v.round_ties_even().clamp(-1e9, 1e9) as i32` (NaN gives 0).
fn sf_round_clamp(a: u32) -> i32 {
    let aa = a & 0x7fffffffu;
    if (aa > SF_INF) {
        return 0;
    }
    var mag: u32;
    if (aa >= SF_1E9) {
        mag = 1000000000u;
    } else {
        let e = i32(aa >> 23u) - 127;
        if (e < -1) {
            mag = 0u;
        } else {
            let m = (aa & 0x7fffffu) | 0x800000u;
            if (e >= 23) {
                mag = m << u32(e - 23);
            } else {
                mag = u64_shr_rne(0u, m, u32(23 - e));
            }
        }
    }
    return select(i32(mag), -i32(mag), (a & SF_SIGN) != 0u);
}

// gemmlowp SaturatingRoundingDoublingHighMul with a 64-bit product built from 16-bit limbs.
fn fp_srdhm(a: i32, b: i32) -> i32 {
    if (a == I32_MIN && b == I32_MIN) {
        return I32_MAX;
    }
    let neg = (a < 0) != (b < 0);
    let ua = select(u32(a), 0u - u32(a), a < 0);
    let ub = select(u32(b), 0u - u32(b), b < 0);
    let p = mul_u32_wide(ua, ub);
    // ab >= 0: (|ab| + 2^30) >> 31.  ab < 0: -((|ab| + 2^30 - 1) >> 31) (division truncates).
    let negative = neg && (p.x | p.y) != 0u;
    let nudge = select(0x40000000u, 0x3fffffffu, negative);
    let lo = p.x + nudge;
    let hi = p.y + select(0u, 1u, lo < p.x);
    let q = (hi << 1u) | (lo >> 31u);
    return select(i32(q), -i32(q), negative);
}

// gemmlowp RoundingDivideByPOT, exponent in [0, 31].
fn fp_rdbpot(x: i32, exponent: u32) -> i32 {
    let mask = i32((1u << exponent) - 1u);
    let remainder = x & mask;
    let threshold = (mask >> 1u) + select(0, 1, x < 0);
    return (x >> exponent) + select(0, 1, remainder > threshold);
}

// TFLite MultiplyByQuantizedMultiplier (left shift wraps, like the reference).
fn fp_mbqm(x: i32, multiplier: i32, left_shift: i32, right_shift: i32) -> i32 {
    let shifted = x << u32(left_shift & 31);
    return fp_rdbpot(fp_srdhm(shifted, multiplier), u32(right_shift & 31));
}

fn sat_add_i32(a: i32, b: i32) -> i32 {
    let s = a + b;
    if (((a ^ s) & (b ^ s)) < 0) {
        return select(I32_MAX, I32_MIN, a < 0);
    }
    return s;
}

// Linear invocation index of a 1-D or 2-D dispatch of 64-wide workgroups.
fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 64u + lid;
}

// Items per invocation of the elementwise kernels (quantize, dequantize; `ITEMS_PER_INVOCATION`
// on the host): invocation `lid` of workgroup w handles items (w * 4 + j) * 64 + lid, j < 4.
// Consecutive lanes take consecutive items (coalesced on GPUs, one vector on CPU adapters),
// and each invocation does enough work to amortize its cost on CPU adapters.
const ITEMS_PER: u32 = 4u;

// Item j of this invocation (see ITEMS_PER).
fn item_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, j: u32) -> u32 {
    return ((wid.y * nwg.x + wid.x) * ITEMS_PER + j) * 64u + lid;
}
