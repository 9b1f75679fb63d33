//! QNNPACK's integer requantization for elementwise add.
//!
//! Pure fixed point, computed from float32 scale ratios exactly as PyTorch's bundled QNNPACK
//! does (`qnnpack/src/qnnpack/requantization.h`, `pytorch_qnnp_compute_add_quantization_params`;
//! kernel `q8vadd/sse2.c`). It rounds half **away from zero**, unlike PyTorch's float paths,
//! which round half to even. (QNNPACK's average pooling used to be fixed point too; the version
//! PyTorch ships now requantizes in float32, see `cpu::reference::pool`.) See `docs/ops.md`.

use crate::error::{Error, Result};

/// Fixed-point constants of QNNPACK's quantized add, `y = a*sa/sy + b*sb/sy` in ints.
///
/// With `ra = f32(sa / sy)`, `rb = f32(sb / sy)` and `e` the unbiased binary exponent of
/// `max(ra, rb)`: `shift = 21 - e`, `ma = rne(ra * 2^shift)`, `mb = rne(rb * 2^shift)`
/// (so the larger multiplier lies in `[2^21, 2^22)`), and
/// `acc = ma*(a - za) + mb*(b - zb)` (exact in int32),
/// `y = round_half_away(acc / 2^shift) + zy`, clamped to the output range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QnnpackAddParams {
    /// Multiplier of input A.
    pub a_multiplier: u32,
    /// Multiplier of input B.
    pub b_multiplier: u32,
    /// `-(ma*za + mb*zb)`, wrapped to int32 as QNNPACK stores it.
    pub zero_point_product: i32,
    /// Right shift, in `13..=31`.
    pub shift: u32,
}

impl QnnpackAddParams {
    /// Computes the constants from the input zero points and the float32 scale ratios
    /// `a_output_scale = f32(sa/sy)`, `b_output_scale = f32(sb/sy)`.
    ///
    /// QNNPACK's operator refuses ratios outside `[2^-14, 2^8)` (PyTorch then raises "failed
    /// to create QNNPACK Add operator"); its parameter code further assumes the larger ratio is
    /// at least `2^-10` (a shift of at most 31; below that the C code shifts by 32 or more,
    /// which is undefined). Both are [`Error::InvalidParameter`] here.
    pub fn new(a_zp: u8, b_zp: u8, a_output_scale: f32, b_output_scale: f32) -> Result<Self> {
        let lo = f32::from_bits(((127 - 14) as u32) << 23); // 2^-14
        for (what, r) in [("A", a_output_scale), ("B", b_output_scale)] {
            if !(r >= lo && r < 256.0) {
                return Err(Error::InvalidParameter(format!(
                    "QNNPACK add: {what}-to-output scale ratio {r} is outside [2^-14, 2^8)"
                )));
            }
        }
        let max = a_output_scale.max(b_output_scale);
        let exponent = (max.to_bits() >> 23) as i32 - 127;
        let shift = 21 - exponent;
        if !(13..=31).contains(&shift) {
            return Err(Error::InvalidParameter(format!(
                "QNNPACK add: the larger scale ratio {max} needs a shift of {shift}, outside \
                 QNNPACK's supported 13..=31 (ratio >= 2^-10)"
            )));
        }
        let scale_multiplier = f32::from_bits(((shift + 127) as u32) << 23);
        let a_multiplier = (a_output_scale * scale_multiplier).round_ties_even() as i32 as u32;
        let b_multiplier = (b_output_scale * scale_multiplier).round_ties_even() as i32 as u32;
        let zero_point_product = (a_multiplier
            .wrapping_mul(a_zp as u32)
            .wrapping_add(b_multiplier.wrapping_mul(b_zp as u32)))
        .wrapping_neg() as i32;
        Ok(QnnpackAddParams {
            a_multiplier,
            b_multiplier,
            zero_point_product,
            shift: shift as u32,
        })
    }

    /// The requantized sum **before** the output zero point and clamp are applied:
    /// `round_half_away((zpp + ma*a + mb*b) / 2^shift)`.
    #[inline]
    pub fn apply(&self, a: u8, b: u8) -> i32 {
        let acc = self
            .zero_point_product
            .wrapping_add((a as u32).wrapping_mul(self.a_multiplier) as i32)
            .wrapping_add((b as u32).wrapping_mul(self.b_multiplier) as i32);
        let mask = ((1u64 << self.shift) - 1) as u32 as i32;
        let threshold = mask >> 1;
        let rem = (acc & mask) - (acc < 0) as i32;
        (acc >> self.shift) + (rem > threshold) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_rounds_half_away_from_zero() {
        // ratios 0.5 and 0.5: shift = 22, multipliers 2^21.
        let p = QnnpackAddParams::new(0, 0, 0.5, 0.5).unwrap();
        assert_eq!(p.shift, 22);
        assert_eq!(p.apply(1, 0), 1); // 0.5 -> 1
        assert_eq!(p.apply(3, 0), 2); // 1.5 -> 2
        assert_eq!(p.apply(5, 0), 3); // 2.5 -> 3 (even rounding would give 2)
        let p = QnnpackAddParams::new(10, 0, 0.5, 0.5).unwrap();
        assert_eq!(p.apply(5, 0), -3); // -2.5 -> -3
        assert_eq!(p.apply(7, 0), -2); // -1.5 -> -2
    }

    #[test]
    fn add_rejects_ratios_qnnpack_rejects() {
        assert!(QnnpackAddParams::new(0, 0, 256.0, 1.0).is_err());
        assert!(QnnpackAddParams::new(0, 0, 1e-6, 1.0).is_err()); // below 2^-14
        assert!(QnnpackAddParams::new(0, 0, 1e-4, 1.0).is_ok());
        assert!(QnnpackAddParams::new(0, 0, 1e-4, 1e-4).is_err()); // shift would exceed 31
        assert!(QnnpackAddParams::new(0, 0, f32::NAN, 1.0).is_err());
    }
}
