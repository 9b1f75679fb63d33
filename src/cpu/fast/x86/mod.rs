//! x86-64 SIMD kernels (AVX-512 VNNI, AVX-VNNI, AVX2 + FMA, SSE2), one concern per module:
//!
//! * [`gemm`]: the int8 and f32 GEMM micro-kernels of the direct convs;
//! * [`requant`]: the vectorized requantization epilogue (AVX-512 and AVX2);
//! * [`depthwise`]: the depthwise-like conv kernels (f32 rows; int8 on AVX-512 VNNI and,
//!   flat layout only, AVX-VNNI);
//! * [`dot`]: the f64 lane sums of the float classifier's dot products;
//! * [`pack`]: activation repacking (byte interleaving, padded-plane copies, u8 → f32);
//! * [`peak`]: register-only loops of the kernels' instructions, for `squint bench`'s peaks.
//!
//! The kernels are re-exported here, so the callers in [`crate::cpu::fast`] use them as
//! `x86::name`. (They are `pub(crate)` in their private modules, hence reachable from
//! `cpu::fast` only, through these re-exports.)
//!
//! Every kernel here is `unsafe` and `#[target_feature]` (or, like [`interleave4`], needs only
//! SSE2, part of x86-64): callers must have checked the features at run time (the
//! [`super::Isa`] a conv was packed for is checked available when packing), and must pass
//! pointers valid for the reads and writes documented per function.

/// The mask of the first `n` lanes of a 64-lane (byte) vector op: `n` low bits set, every
/// bit from 64 on.
#[inline(always)]
pub(super) fn low_bits(n: usize) -> u64 {
    if n >= 64 {
        !0
    } else {
        (1u64 << n) - 1
    }
}

mod depthwise;
mod dot;
mod gemm;
mod pack;
pub(super) mod peak;
mod requant;

pub(super) use depthwise::{
    dw3x3_f32_avx512, dw_avx2, dw_avx512, dw_f32_lanes_avx2, dw_f32_lanes_avx512, dw_i8_channel,
    dw_i8_flat, dw_i8_flat_avxvnni, dw_i8_flat_avxvnni_evex, dw_i8_flat_maddubs, dw_i8_rows_avx512,
    dw_i8_s2_avxvnni, dw_i8_s2_avxvnni_evex, dw_i8_s2_maddubs, dw_i8_small_avx512,
    dw_i8_small_avxvnni, dw_i8_small_avxvnni_evex, dw_i8_small_maddubs, dw_pairs_avx2,
    dw_quads_avx512, dw_quads_row_avx512, has_vbmi, Bytes64, DwFlat, DwGeom, DwRows, DwSmall,
    DwYmmOut, LanesGeom,
};
pub(super) use dot::{dot_lanes_f64_avx2, dot_lanes_f64_avx512};
pub(super) use gemm::{
    gemm_f32_avx2, gemm_f32_avx512, gemm_f32_nhwc_avx2, gemm_f32_nhwc_avx512, gemm_i8_avx2,
    gemm_i8_avx2_maddubs, gemm_i8_avx512, gemm_i8_avxvnni, gemm_i8_avxvnni_evex,
    gemm_nhwc_avx2_maddubs, gemm_nhwc_avx512, gemm_nhwc_avxvnni, gemm_nhwc_avxvnni_evex,
    nhwc_f32_out_avx2, nhwc_f32_out_avx512, transpose_pixels_avx512, TileRows, YmmOut,
};
pub(super) use pack::{
    add_bias_runs_avx512, bytes_to_f32_avx2, bytes_to_f32_avx512, bytes_to_f32_split2_avx2,
    bytes_to_i16_avx2, copy_rows_strided_xor_avx2, copy_rows_xor_avx2, copy_rows_xor_avx512,
    interleave4, interleave4_avx512, max_xor_avx2, pair_plane_avx2, planes_to_pixels_avx2,
    planes_to_pixels_avx512, qlinear_add_avx2,
};
pub(super) use requant::{
    requant_row_avx2, requant_row_avx512, requant_row_cached_avx2, requant_tile_avx2,
    requant_tile_avx512, I8Rows, Requant512, RunMask,
};
