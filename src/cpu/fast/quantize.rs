//! Per-tensor quantization of a float slice in a loop the compiler vectorizes, bit for bit
//! equal to the reference [`crate::quant::quantize_slice`].
//!
//! The reference computes `clamp(i64(clamp(rne(x * inv), ±1e9)) + zp, dtype range)`; the i64
//! steps keep it scalar. Here the clamp to the dtype range happens in f32, before adding the
//! zero point: with `lo = min - zp` and `hi = max - zp` (exact in f32 when both lie within
//! ±2^24), `clamp(r, lo, hi) + zp` equals `clamp(r + zp, min, max)` for every integer-valued
//! `r` (which `rne` gives for finite inputs), ±∞ lands on the bounds as the reference's 1e9
//! clamp does, and NaN, which the reference turns into 0 (then the clamped zero point), is
//! replaced by 0 first. Zero points so far outside the dtype that `lo` or `hi` leave ±2^24
//! take the reference.
//!
//! Both loops run compiled for the widest vectors of the CPU (`wide`), in chunks of 4 KiB
//! (`PAR_BYTES_CHUNK`) across the pool's threads inside a model run (`par_bytes`).

use crate::quant::{inverse_scale, quantize_slice as reference, rne, QParams};

/// The stored bytes of `x` quantized with `qp` (see the module docs): equal to
/// [`crate::quant::quantize_slice`].
pub fn quantize_slice(x: &[f32], qp: &QParams) -> Vec<u8> {
    let full = qp.dtype.full_range();
    let zp = qp.zero_point as i64;
    let (lo, hi) = (full.min as i64 - zp, full.max as i64 - zp);
    const EXACT: i64 = 1 << 24;
    if lo.abs() > EXACT || hi.abs() > EXACT {
        return reference(x, qp);
    }
    let inv = inverse_scale(qp.scale);
    let (lo, hi, zp) = (lo as f32, hi as f32, qp.zero_point);
    let body = move |x: &[f32], out: &mut [u8]| {
        for (o, &v) in out.iter_mut().zip(x) {
            let r = rne(v * inv);
            let r = if r.is_nan() { 0.0 } else { r };
            let r = if r < lo { lo } else { r };
            let r = if r > hi { hi } else { r };
            // SAFETY: `r` is finite and within [lo, hi] ⊂ (-2^25, 2^25): it converts exactly.
            let q = unsafe { r.to_int_unchecked::<i32>() };
            // The byte of the level (two's complement for qint8, as `QDtype::int_to_byte`).
            *o = q.wrapping_add(zp) as u8;
        }
    };
    super::par_bytes(x.len(), |start, out| wide(&x[start..], out, body))
}

/// `body(x, out)` compiled for the widest vectors this CPU has (AVX-512, AVX2, or the
/// baseline): the same operations, so the same bits, in wider lanes (the baseline's
/// divisions and roundings made the graph input's quantization 4% of an int8 MobileNetV2).
/// For elementwise loops the compiler vectorizes.
pub(crate) fn wide<T, U>(x: &[T], out: &mut [U], body: impl Fn(&[T], &mut [U])) {
    #[cfg(target_arch = "x86_64")]
    {
        // Tests: at most this width (2: AVX-512, 1: AVX2, 0: the baseline).
        #[cfg(test)]
        let widest = tests::WIDEST.with(|w| w.get());
        #[cfg(not(test))]
        let widest = 2;
        #[target_feature(enable = "avx512f,avx512bw")]
        fn avx512<T, U>(x: &[T], out: &mut [U], body: impl Fn(&[T], &mut [U])) {
            body(x, out)
        }
        #[target_feature(enable = "avx2")]
        fn avx2<T, U>(x: &[T], out: &mut [U], body: impl Fn(&[T], &mut [U])) {
            body(x, out)
        }
        if widest >= 2
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the features were detected.
            return unsafe { avx512(x, out, body) };
        }
        if widest >= 1 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { avx2(x, out, body) };
        }
    }
    body(x, out)
}

/// The stored bytes of `x` quantized as ONNX Runtime's per-tensor `QuantizeLinear`:
/// `rne(clamp(x / scale, qmin − zp, qmax − zp)) + zp`, the formula of
/// `cpu::reference::ort::qdq::quantize_value`, in a loop that vectorizes; equal to it on
/// every value (NaN, which ORT's graphs refuse first, gives the zero point in both).
pub fn quantize_slice_ort(x: &[f32], qp: &QParams) -> Vec<u8> {
    let full = qp.dtype.full_range();
    let (zp, scale) = (qp.zero_point, qp.scale);
    let (lo, hi) = ((full.min - zp) as f32, (full.max - zp) as f32);
    let body = move |x: &[f32], out: &mut [u8]| {
        for (o, &v) in out.iter_mut().zip(x) {
            // NaN passes both clamps, as through the reference's `f32::clamp`, then converts
            // to 0.
            let r = rne(v / scale);
            let r = if r < lo { lo } else { r };
            let r = if r > hi { hi } else { r };
            let r = if r.is_nan() { 0.0 } else { r };
            // SAFETY: `r` is 0 or within [lo, hi]: finite and far inside the i32 range.
            let q = unsafe { r.to_int_unchecked::<i32>() };
            *o = q.wrapping_add(zp) as u8;
        }
    };
    super::par_bytes(x.len(), |start, out| wide(&x[start..], out, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// The widest vectors `wide` may use on this thread (see there).
        pub(super) static WIDEST: std::cell::Cell<u8> = const { std::cell::Cell::new(2) };
    }
    use crate::cpu::reference::ort::qdq::quantize_value as ort_value;
    use crate::quant::QDtype;

    /// Random bit patterns (NaN, ±∞, subnormals, huge values included), values near every
    /// rounding tie and clamp bound, for scales from tiny to huge and zero points inside and
    /// outside the dtype's range: the same bytes as the reference.
    #[test]
    fn fast_quantize_equals_the_reference_on_every_kind_of_value() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut x: Vec<f32> = (0..20_000).map(|_| f32::from_bits(next() as u32)).collect();
        for i in -600..600 {
            let t = i as f32 * 0.5;
            x.extend([t, t.next_up(), t.next_down(), -t]);
        }
        x.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN,
        ]);
        let scales = [1e-30, 1e-6, 0.0123, 0.5, 1.0, 3.0, 1e6];
        let zps = [
            0,
            3,
            127,
            128,
            255,
            -128,
            -7,
            1_000,
            -70_000,
            1 << 25,
            -(1 << 25),
        ];
        let mut checked = 0;
        for dtype in [QDtype::QUInt8, QDtype::QInt8] {
            for &scale in &scales {
                for &zp in &zps {
                    let qp = QParams {
                        scale,
                        zero_point: zp,
                        dtype,
                    };
                    // Values scaled so that every scale sees ties and clamp bounds.
                    let xs: Vec<f32> = x.iter().map(|&v| v * scale).chain(x.clone()).collect();
                    // PyTorch's formula, and ONNX Runtime's.
                    let ort = |xs: &[f32], qp: &QParams| -> Vec<u8> {
                        xs.iter().map(|&v| ort_value(v, qp)).collect()
                    };
                    let pairs: [(Fn2, Fn2, &str); 2] = [
                        (quantize_slice, reference, "pytorch"),
                        (quantize_slice_ort, ort, "ort"),
                    ];
                    // ORT's zero points lie in the dtype's range (its reference asserts so).
                    let ort_zp = dtype.full_range().contains(zp);
                    for (fast, slow, what) in pairs.into_iter().take(1 + ort_zp as usize) {
                        let want = slow(&xs, &qp);
                        // Every vector width this CPU has, and the baseline.
                        for widest in 0..3 {
                            WIDEST.with(|w| w.set(widest));
                            let got = fast(&xs, &qp);
                            if let Some(i) = (0..xs.len()).find(|&i| got[i] != want[i]) {
                                panic!(
                                    "{what} {qp:?} (width {widest}): x = {} ({:#x}): fast {} \
                                     reference {}",
                                    xs[i],
                                    xs[i].to_bits(),
                                    got[i],
                                    want[i]
                                );
                            }
                        }
                        checked += xs.len();
                    }
                }
            }
        }
        assert!(checked > 1_500_000);
    }

    type Fn2 = fn(&[f32], &QParams) -> Vec<u8>;
}
