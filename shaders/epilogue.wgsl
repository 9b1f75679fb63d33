// squint: the requantization epilogue of `requantize.wgsl` (the conv kernels read the step tables of
// `epilogue_table.wgsl`, built on the host from the same `Epilogue`),
// prepended (after `common.wgsl`) at pipeline creation.
//
// `requant(acc, ch)` implements `Epilogue::apply` of `src/quant/requant.rs` for every formula,
// bit-exactly: the float formulas use the integer-emulated binary32 arithmetic of
// `common.wgsl` (see there why), the fixed-point formula the 32-bit-only gemmlowp routines.
//
// Contract with the including kernel: it declares `epi: array<ChannelRequant>` (storage, read:
// one record per output channel, possibly a window of them) and a uniform `u` with i32 fields
// `out_zp` (output zero point), `out_lo`, `out_hi` (output clamp, a fused ReLU raises `out_lo`).

// The requantization formula, `RequantFormula::code()`: 0 qnnpack, 1 fbgemm, 2 onednn,
// 3 fixed-point. A pipeline-overridable constant, so each pipeline holds one formula.
override FORMULA: u32 = 0u;

// `ChannelRequant`, eight 32-bit words; float fields are read as their bit patterns.
// Which fields a formula reads, and their meaning, depend on the formula (see
// `ChannelRequant` in `src/quant/requant.rs`).
struct ChannelRequant {
    bias_i32: i32, // integer bias added to the accumulator (qnnpack, fixed-point)
    bias_f32: u32, // float bias: f32(b / s) for fbgemm, b for onednn
    mult: u32, // first multiplier: M for qnnpack and fbgemm, the input scale sx for onednn
    mult2: u32, // second multiplier: the weight scale sw for onednn (unused otherwise)
    inv_out_scale: u32, // f32(1 / sy) for onednn
    fp_multiplier: i32, // Q0.31 multiplier (fixed-point)
    fp_left_shift: i32, // left shift before the high multiply (fixed-point)
    fp_right_shift: i32, // right shift after the high multiply (fixed-point)
}

// `Epilogue::apply`: accumulator -> clamped output int.
fn requant_with(acc: i32, c: ChannelRequant, zp: i32, lo: i32, hi: i32) -> i32 {
    var y: i32;
    if (FORMULA == 0u) {
        y = sf_round_clamp(sf_mul(sf_from_i32(acc + c.bias_i32), c.mult)) + zp;
    } else if (FORMULA == 1u) {
        y = sf_round_clamp(sf_mul(sf_add(sf_from_i32(acc), c.bias_f32), c.mult)) + zp;
    } else if (FORMULA == 2u) {
        var v = sf_mul(sf_from_i32(acc), c.mult);
        v = sf_mul(v, c.mult2);
        v = sf_add(v, c.bias_f32);
        v = sf_mul(v, c.inv_out_scale);
        v = sf_add(v, sf_from_i32(zp));
        y = sf_round_clamp(v);
    } else {
        y = sat_add_i32(
            fp_mbqm(acc + c.bias_i32, c.fp_multiplier, c.fp_left_shift, c.fp_right_shift),
            zp,
        );
    }
    return clamp(y, lo, hi);
}

// Requantizes `acc` of the channel whose record is `epi[ch]` (window-relative index).
fn requant(acc: i32, ch: u32) -> i32 {
    return requant_with(acc, epi[ch], u.out_zp, u.out_lo, u.out_hi);
}
