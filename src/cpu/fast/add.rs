//! `QLinearAdd` as ONNX Runtime's AVX2 kernel computes it (`MlasQLinearAddU8KernelAvx2` /
//! `S8`, what ORT runs on every x86-64 CPU with AVX2 and FMA, AVX-512 ones included),
//! vectorized: each element is `cvtps(fma(a, ra, fma(b, rb, fixed)))` clamped to the dtype's
//! range, the float operations of the reference ([`ort::add`](crate::cpu::reference::ort::add),
//! `QLinearAddKernel::Avx2`) with its constants ([`avx2_constants`]), so the same bytes.

#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
use super::par_bytes;
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
use crate::cpu::reference::ort::add::avx2_constants;
use crate::cpu::reference::ort::add::{qlinear_add, QLinearAddKernel};
use crate::error::{Error, Result};
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
use crate::quant::QDtype;
use crate::quant::QParams;

/// `QLinearAdd` of `a` and `b` (equal lengths, the three dtypes equal) with ORT's AVX2 kernel:
/// the bytes of `ort::add::qlinear_add(QLinearAddKernel::Avx2, ..)`, 32 elements per step
/// where this CPU has AVX2 and FMA (`None` otherwise: the caller runs another path), split
/// across the pool's threads inside a model run ([`par_bytes`]). The same errors as the
/// reference for invalid qparams or dtypes.
pub fn qlinear_add_avx2(
    a: &[u8],
    a_qp: &QParams,
    b: &[u8],
    b_qp: &QParams,
    c_qp: &QParams,
) -> Result<Option<Vec<u8>>> {
    // The reference's checks of the qparams and dtypes (on no elements).
    qlinear_add(QLinearAddKernel::Avx2, &[], a_qp, &[], b_qp, c_qp)?;
    if a.len() != b.len() {
        return Err(Error::Shape(format!(
            "QLinearAdd: {} and {} elements (the vector kernel adds equal lengths)",
            a.len(),
            b.len()
        )));
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let k = avx2_constants(a_qp, b_qp, c_qp);
        let signed = c_qp.dtype == QDtype::QInt8;
        return Ok(Some(par_bytes(a.len(), |start, out| {
            let n = out.len();
            // SAFETY: AVX2 and FMA were detected; `a` and `b` hold `n` bytes from `start`.
            unsafe {
                super::x86::qlinear_add_avx2(&a[start..start + n], &b[start..], signed, k, out)
            }
        })));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte pair (65 536 elements, then 7 more through the scalar tail), for quint8 and
    /// qint8, with scale ratios that saturate, that leave the int32 range (`cvtps` gives
    /// `i32::MIN`), that round at ties, and zero points at the extremes: the reference's bytes.
    #[test]
    fn vector_add_equals_the_reference_kernel_on_every_byte_pair() {
        let (a, b): (Vec<u8>, Vec<u8>) = (0..(1usize << 16) + 7)
            .map(|p| ((p >> 8) as u8, (p as u8).wrapping_mul(7)))
            .unzip();
        let qp = |s: f32, z: i32, d: QDtype| QParams::new(s, z, d).unwrap();
        let cases = [
            (0.02, 3, 0.03, 250, 0.05, 128),
            (0.1, 0, 0.1, 255, 0.0004, 0),
            (1.0, 128, 0.5, 128, 1.0, 128),
            (3.0e7, 0, 1.0, 0, 1.0e-3, 7),
            (0.013, 17, 0.029, 131, 0.021, 99),
        ];
        let mut ran = false;
        for (sa, za, sb, zb, sc, zc) in cases {
            for d in [QDtype::QUInt8, QDtype::QInt8] {
                let shift = |z: i32| if d == QDtype::QInt8 { z - 128 } else { z };
                let (aq, bq, cq) = (
                    qp(sa, shift(za), d),
                    qp(sb, shift(zb), d),
                    qp(sc, shift(zc), d),
                );
                let want = qlinear_add(QLinearAddKernel::Avx2, &a, &aq, &b, &bq, &cq).unwrap();
                if let Some(got) = qlinear_add_avx2(&a, &aq, &b, &bq, &cq).unwrap() {
                    ran = true;
                    let diff = got.iter().zip(&want).position(|(g, w)| g != w);
                    assert!(diff.is_none(), "{d} {sa} {sb} {sc}: element {diff:?}");
                }
            }
        }
        if !ran {
            eprintln!("no AVX2 + FMA: the vector kernel did not run");
        }
    }

    /// Unequal lengths and invalid qparams are errors, not panics.
    #[test]
    fn vector_add_refuses_what_the_reference_refuses() {
        let q = QParams::new(0.1, 0, QDtype::QUInt8).unwrap();
        assert!(matches!(
            qlinear_add_avx2(&[1, 2], &q, &[1], &q, &q),
            Err(Error::Shape(_))
        ));
        let bad = QParams {
            scale: f32::NAN,
            ..q
        };
        assert!(qlinear_add_avx2(&[1], &bad, &[1], &q, &q).is_err());
        let s8 = QParams::new(0.1, 0, QDtype::QInt8).unwrap();
        assert!(qlinear_add_avx2(&[1], &q, &[1], &s8, &q).is_err());
    }
}
