//! Integer-only requantization (gemmlowp / TensorFlow Lite).
//!
//! A real multiplier `m` in (0, 1) (or larger) is written as `q * 2^shift` with `q` in [0.5, 1)
//! stored as a Q0.31 int32. Applying it to an int32 `x` needs only integer operations:
//!
//! ```text
//! y = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << left_shift, q), right_shift)
//! SRDHM(a, b)  = (a*b + (a*b >= 0 ? 2^30 : 1 - 2^30)) / 2^31     (64-bit product, division truncates)
//!                 saturating the single overflow case a == b == i32::MIN to i32::MAX
//! RDBPOT(x, e) = (x >> e) + ((x & mask) > (mask >> 1) + (x < 0)),  mask = 2^e - 1
//! ```
//!
//! SRDHM rounds half away from zero; RDBPOT rounds half away from zero as well. This is the
//! classic TFLite reference (`MultiplyByQuantizedMultiplier`), so it differs from PyTorch's float
//! formulas near .5 ties: squint's `fixed-point` requantization mode is tested against this
//! module, not against PyTorch.

/// A real multiplier as TFLite's `QuantizeMultiplier` encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizedMultiplier {
    /// Q0.31 mantissa in [2^30, 2^31 - 1], or 0 for a zero multiplier.
    pub multiplier: i32,
    /// Power-of-two exponent: positive shifts left, negative shifts right.
    pub shift: i32,
}

impl QuantizedMultiplier {
    /// Left shift applied before the high multiply (`max(shift, 0)`).
    pub fn left_shift(self) -> i32 {
        self.shift.max(0)
    }

    /// Right shift applied after the high multiply (`max(-shift, 0)`, saturating).
    pub fn right_shift(self) -> i32 {
        self.shift.saturating_neg().max(0)
    }
}

/// TFLite's `QuantizeMultiplier(double)`: `m = q * 2^shift`, `q` rounded half away from zero
/// to Q0.31. Multipliers below 2^-31 become 0. Non-finite or negative input gives 0.
pub fn quantize_multiplier(m: f64) -> QuantizedMultiplier {
    if !(m.is_finite() && m > 0.0) {
        return QuantizedMultiplier {
            multiplier: 0,
            shift: 0,
        };
    }
    let (q, mut shift) = frexp(m);
    let mut q_fixed = (q * (1u64 << 31) as f64).round() as i64; // round half away from zero
    if q_fixed == 1i64 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        shift = 0;
        q_fixed = 0;
    }
    QuantizedMultiplier {
        multiplier: q_fixed as i32,
        shift,
    }
}

/// `frexp`: `m = q * 2^e` with `q` in [0.5, 1) for finite positive `m`.
fn frexp(m: f64) -> (f64, i32) {
    let bits = m.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    if exp_bits == 0 {
        // Subnormal: scale up first.
        let (q, e) = frexp(m * (1u64 << 54) as f64);
        return (q, e - 54);
    }
    let e = exp_bits - 1022;
    let q = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (q, e)
}

/// gemmlowp's `SaturatingRoundingDoublingHighMul`.
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp's `RoundingDivideByPOT`: `x / 2^exponent`, rounding half away from zero. The
/// exponent is meant to lie in `0..=31` (gemmlowp asserts it); others are clamped into it.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let exponent = exponent.clamp(0, 31);
    let mask: i32 = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// TFLite's `MultiplyByQuantizedMultiplier(x, q, shift)`. The left shift wraps like the C++
/// code's int32 multiply; the converter rejects layers where it could overflow.
#[inline]
pub fn multiply_by_quantized_multiplier(x: i32, m: QuantizedMultiplier) -> i32 {
    let shifted = x.wrapping_shl(m.left_shift() as u32);
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(shifted, m.multiplier),
        m.right_shift(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_multiplier_matches_tflite_examples() {
        // 0.5 = 0.5 * 2^0 -> q = 2^30, shift 0
        assert_eq!(
            quantize_multiplier(0.5),
            QuantizedMultiplier {
                multiplier: 1 << 30,
                shift: 0
            }
        );
        // 0.25 = 0.5 * 2^-1
        assert_eq!(quantize_multiplier(0.25).shift, -1);
        // 1.0 = 0.5 * 2^1
        assert_eq!(quantize_multiplier(1.0).shift, 1);
        // a mantissa that rounds up to 2^31 is renormalised
        let m = quantize_multiplier(1.0 - 1e-12);
        assert_eq!(m.multiplier, 1 << 30);
        assert_eq!(m.shift, 1);
        assert_eq!(quantize_multiplier(0.0).multiplier, 0);
        assert_eq!(quantize_multiplier(1e-12).multiplier, 0);
    }

    #[test]
    fn rounding_divide_by_pot_rounds_half_away_from_zero() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(4, 1), 2);
        assert_eq!(rounding_divide_by_pot(6, 2), 2);
        assert_eq!(rounding_divide_by_pot(-6, 2), -2);
        assert_eq!(rounding_divide_by_pot(7, 0), 7);
    }

    #[test]
    fn double_rounding_matches_tflite_reference() {
        // 0.3 = 0.6 * 2^-1: SRDHM(1, 0.6*2^31) rounds 0.6 up to 1, then 1/2 rounds away to 1.
        assert_eq!(
            multiply_by_quantized_multiplier(1, quantize_multiplier(0.3)),
            1
        );
        assert_eq!(
            multiply_by_quantized_multiplier(-1, quantize_multiplier(0.3)),
            -1
        );
        assert_eq!(
            multiply_by_quantized_multiplier(10, quantize_multiplier(0.3)),
            3
        );
    }

    #[test]
    fn srdhm_saturates_the_single_overflow_case() {
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(1 << 30, 1 << 30),
            1 << 29
        );
    }

    #[test]
    fn multiply_by_quantized_multiplier_approximates_the_real_product() {
        for &m in &[0.3_f64, 0.0071, 0.9999, 1.7, 0.5] {
            let qm = quantize_multiplier(m);
            for &x in &[0, 1, -1, 100, -100, 12345, -54321, 1 << 20] {
                let y = multiply_by_quantized_multiplier(x, qm) as f64;
                // Two roundings (SRDHM, then RoundingDivideByPOT) can add up to one LSB.
                assert!(
                    (y - x as f64 * m).abs() <= 1.0 + 1e-6 * (x as f64).abs(),
                    "{m} {x} {y}"
                );
            }
        }
    }
}
