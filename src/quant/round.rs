//! `rne`: round to nearest, ties to even, of an `f32`, without a library call.
//!
//! `f32::round_ties_even` compiles to one instruction only where the target has SSE4.1's
//! `roundss` (or an equivalent); on the x86-64 baseline it is a call into a software `rintf`,
//! which was a fifth of a whole int8 forward pass on the CPU reference ops (an add
//! dequantizes, adds and requantizes every element). [`rne`] gives bit for bit the same
//! result in a few plain float operations, and loops over it vectorize.
//!
//! # Derivation
//! Let `a = |v|` and `T = 2^23`.
//! * If `a >= T` (or `v` is infinite), `v` is already an integer: every f32 of magnitude at
//!   least `2^23` is (its ulp is at least 1). Return `v`. A NaN fails `a < T` and is returned
//!   too.
//! * Else `a + T` lies in `[2^23, 2^24)`, where the f32 spacing is exactly 1, so the addition
//!   rounds `a` to an integer, to nearest with ties to even (the default rounding mode, which
//!   Rust never changes): `f32(a + T) = T + rne(a)`, as `T` is even. Subtracting `T` is exact
//!   (Sterbenz: both lie in `[2^23, 2^24]`), leaving `rne(a)`.
//! * `rne` is odd-symmetric, `rne(-a) = -rne(a)`, so the sign of `v` is copied back, which
//!   also keeps `rne(-0.3) = -0.0` as `round_ties_even` has it.
//!
//! Rust does not reassociate float arithmetic, so `(a + T) - T` is computed as written.
//! (`a + T` may round up to `2^24` itself, for `a` just below `2^23`: `2^24 - T = 2^23` is then
//! `rne(a)`, the even neighbour.) `rne` was checked once against `round_ties_even` on all 2^32
//! bit patterns (no difference); the tests check every half below `2^23` with its neighbours
//! and a stride through every pattern.

/// `rne(v)`: `v` rounded to the nearest integer, ties to even, bit for bit
/// `v.round_ties_even()` for every f32 (signed zeros, infinities and NaN included; see the
/// module docs for the derivation).
#[inline]
pub fn rne(v: f32) -> f32 {
    const T: f32 = 8_388_608.0; // 2^23
    let a = v.abs();
    if a < T {
        ((a + T) - T).copysign(v)
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::rne;

    fn same(v: f32) -> bool {
        rne(v).to_bits() == v.round_ties_even().to_bits()
            || (rne(v).is_nan() && v.round_ties_even().is_nan())
    }

    #[test]
    fn rne_equals_round_ties_even_on_halves_boundaries_and_specials() {
        let specials = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            0.49999997,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::EPSILON,
            8_388_607.5,
            -8_388_607.5,
            8_388_608.0,
            8_388_609.0,
            4_194_304.5,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        for v in specials {
            assert!(same(v), "{v}: {} vs {}", rne(v), v.round_ties_even());
        }
        // Every half-integer and its two neighbours below 2^23.
        for k in 0..(1u32 << 23) {
            let h = k as f32 + 0.5;
            for v in [
                h,
                f32::from_bits(h.to_bits() - 1),
                f32::from_bits(h.to_bits() + 1),
            ] {
                assert!(same(v) && same(-v), "{v}");
            }
        }
    }

    #[test]
    fn rne_equals_round_ties_even_on_a_stride_through_every_bit_pattern() {
        // 2^32 / 65_521 ≈ 65_550 patterns per offset, over many offsets: every exponent and
        // sign, with varied mantissas.
        for offset in 0..64u64 {
            let mut bits = offset * 1_009;
            while bits < 1 << 32 {
                let v = f32::from_bits(bits as u32);
                assert!(same(v), "{bits:#x}");
                bits += 65_521;
            }
        }
    }
}
