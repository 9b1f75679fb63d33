//! `quantized::add` and `quantized::add_relu` (what `FloatFunctional`/`QFunctional` `add` and
//! `add_relu` run after conversion), for two tensors of the same shape and dtype.
//!
//! * Engine `qnnpack`, quint8: QNNPACK's fixed-point add ([`QnnpackAddParams`]), rounding half
//!   away from zero; a fused ReLU raises the output minimum to the output zero point.
//! * Engine `x86` (and `qnnpack` with qint8 is **not** modeled: PyTorch sends it to XNNPACK):
//!   ATen's `qadd_kernel`: dequantize both inputs to float, add, ReLU in float, quantize with
//!   the output qparams (round half to even). Its vector path dequantizes with a fused
//!   multiply-add, `fma(s, q, f32(s * -zp))`, its scalar path with `f32(s * (q - zp))`; which
//!   elements take which path depends on the [`CpuCapability`] (see [`add`]) and, for
//!   channels-last tensors, on the memory order (see [`add_in`]).

use super::pool::MemoryFormat;
use super::{check_data, CpuCapability, QEngine};
use crate::error::{Error, Result};
use crate::quant::{quantize_one, QDtype, QParams, QnnpackAddParams};

/// `quantized::add(a, b, out.scale, out.zero_point)` (or `add_relu` when `relu`) of two tensors
/// of `a.len()` elements each, returning the stored output bytes (output dtype = input dtype).
///
/// For the x86 engine, ATen's `cpu_kernel_vec` runs the vector lambda on the first
/// `floor(n / 2L) * 2L` elements (`L` = [`CpuCapability::qadd_lanes`], 32 on AVX2 and AVX512) and the scalar lambda
/// on the rest; the two dequantize differently (see the module docs), so `isa` must be the
/// capability of the PyTorch build that is to be matched. The qnnpack engine ignores `isa`.
#[allow(clippy::too_many_arguments)]
pub fn add(
    engine: QEngine,
    isa: CpuCapability,
    a: &[u8],
    a_qp: &QParams,
    b: &[u8],
    b_qp: &QParams,
    out: &QParams,
    relu: bool,
) -> Result<Vec<u8>> {
    if a.len() != b.len() {
        return Err(Error::Shape(format!(
            "add: inputs have {} and {} elements; only equal shapes are supported",
            a.len(),
            b.len()
        )));
    }
    for qp in [a_qp, b_qp, out] {
        QParams::new(qp.scale, qp.zero_point, qp.dtype)?;
    }
    if a_qp.dtype != b_qp.dtype || a_qp.dtype != out.dtype {
        return Err(Error::InvalidParameter(format!(
            "add: dtypes must match (got {}, {} and output {})",
            a_qp.dtype, b_qp.dtype, out.dtype
        )));
    }
    match engine {
        QEngine::Qnnpack => add_qnnpack(a, a_qp, b, b_qp, out, relu),
        QEngine::X86 => Ok(add_x86(isa, a, a_qp, b, b_qp, out, relu)),
    }
}

/// How ATen's `TensorIterator` runs the x86 engine's `qadd_kernel` on two 4-d inputs of sizes
/// `dims` stored as `formats` (the output takes the first input's format,
/// `suggest_memory_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum X86AddPath {
    /// Both inputs are laid out alike: `cpu_kernel_vec` walks them in that memory order, the
    /// vector lambda on the first `floor(n / 2L) * 2L` elements, the scalar one on the rest.
    InOrder(MemoryFormat),
    /// The layouts differ (one NCHW, one NHWC, with more than one channel and more than one
    /// pixel): an input is strided along the innermost dimension, so `VectorizedLoop2d` takes
    /// `basic_loop`, the scalar lambda, for **every** element whatever the CPU (fixtures
    /// `add_mixed_probe_*`).
    AllScalar,
}

/// The [`X86AddPath`] of inputs of sizes `dims` stored as `formats`. One-channel tensors and
/// 1x1 planes are NCHW and NHWC at once, so their formats never differ.
pub fn x86_add_path(dims: &[usize], formats: [MemoryFormat; 2]) -> X86AddPath {
    let both_layouts = match dims {
        &[_, c, h, w] => c == 1 || h * w == 1,
        _ => true,
    };
    match (formats, both_layouts) {
        (_, true) => X86AddPath::InOrder(MemoryFormat::Contiguous),
        ([a, b], false) if a == b => X86AddPath::InOrder(a),
        _ => X86AddPath::AllScalar,
    }
}

/// [`add`] of two tensors of sizes `dims` (ints given in NCHW order) that PyTorch stores as
/// `formats` (the output takes the first input's format).
///
/// ATen's `TensorIterator` runs `qadd_kernel` in memory order, so on channels-last 4-d tensors
/// the x86 engine's vector/scalar split falls on the first `floor(n / 2L) * 2L` elements in
/// **NHWC** order, not NCHW (fixtures `add_cl_probe_*`); inputs of different layouts take the
/// scalar path everywhere ([`X86AddPath`]). The qnnpack engine's add is elementwise with one
/// formula (it converts the second input to the first's layout), so formats do not matter there.
#[allow(clippy::too_many_arguments)]
pub fn add_in(
    formats: [MemoryFormat; 2],
    engine: QEngine,
    isa: CpuCapability,
    dims: &[usize],
    a: &[u8],
    a_qp: &QParams,
    b: &[u8],
    b_qp: &QParams,
    out: &QParams,
    relu: bool,
) -> Result<Vec<u8>> {
    check_data("add input a", a.len(), dims)?;
    check_data("add input b", b.len(), dims)?;
    if engine == QEngine::Qnnpack {
        return add(engine, isa, a, a_qp, b, b_qp, out, relu);
    }
    let [n, c, h, w] = match (dims, x86_add_path(dims, formats)) {
        (&[n, c, h, w], X86AddPath::InOrder(MemoryFormat::ChannelsLast)) => [n, c, h, w],
        (_, X86AddPath::AllScalar) => {
            return add(engine, CpuCapability::Default, a, a_qp, b, b_qp, out, relu)
        }
        _ => return add(engine, isa, a, a_qp, b, b_qp, out, relu),
    };
    // NCHW index of each element, in NHWC memory order.
    let order: Vec<usize> = (0..n)
        .flat_map(|bi| {
            (0..h * w).flat_map(move |p| (0..c).map(move |ci| (bi * c + ci) * h * w + p))
        })
        .collect();
    let gather = |x: &[u8]| order.iter().map(|&i| x[i]).collect::<Vec<u8>>();
    let ym = add(engine, isa, &gather(a), a_qp, &gather(b), b_qp, out, relu)?;
    let mut y = vec![0u8; ym.len()];
    for (&i, v) in order.iter().zip(ym) {
        y[i] = v;
    }
    Ok(y)
}

fn add_qnnpack(
    a: &[u8],
    a_qp: &QParams,
    b: &[u8],
    b_qp: &QParams,
    out: &QParams,
    relu: bool,
) -> Result<Vec<u8>> {
    if a_qp.dtype != QDtype::QUInt8 {
        return Err(Error::InvalidParameter(
            "add: engine qnnpack runs qint8 add in XNNPACK, which squint does not model".into(),
        ));
    }
    let (lo, hi) = (if relu { out.zero_point } else { 0 }, 255);
    if lo >= hi {
        return Err(Error::InvalidParameter(format!(
            "add_relu: QNNPACK refuses the output range [{lo}, {hi}] (output zero point 255)"
        )));
    }
    let p = QnnpackAddParams::new(
        a_qp.zero_point as u8,
        b_qp.zero_point as u8,
        a_qp.scale / out.scale,
        b_qp.scale / out.scale,
    )?;
    Ok(a.iter()
        .zip(b)
        .map(|(&x, &y)| (p.apply(x, y) + out.zero_point).clamp(lo, hi) as u8)
        .collect())
}

fn add_x86(
    isa: CpuCapability,
    a: &[u8],
    a_qp: &QParams,
    b: &[u8],
    b_qp: &QParams,
    out: &QParams,
    relu: bool,
) -> Vec<u8> {
    let n = a.len();
    let vec_end = isa.qadd_lanes().map_or(0, |l| n / (2 * l) * (2 * l));
    let inv = 1.0f32 / out.scale;
    let dt = a_qp.dtype;
    // Vector path: `s * q + f32(s * -zp)` with one rounding (FMA).
    let premul = |qp: &QParams| qp.scale * -(qp.zero_point as f32);
    let (pa, pb) = (premul(a_qp), premul(b_qp));
    (0..n)
        .map(|i| {
            let (qa, qb) = (dt.byte_to_int(a[i]), dt.byte_to_int(b[i]));
            let (da, db) = if i < vec_end {
                (
                    a_qp.scale.mul_add(qa as f32, pa),
                    b_qp.scale.mul_add(qb as f32, pb),
                )
            } else {
                (
                    a_qp.scale * (qa - a_qp.zero_point) as f32,
                    b_qp.scale * (qb - b_qp.zero_point) as f32,
                )
            };
            let mut c = da + db;
            if relu {
                c = c.max(0.0);
            }
            dt.int_to_byte(quantize_one(c, inv, out))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qp(scale: f32, zp: i32) -> QParams {
        QParams::new(scale, zp, QDtype::QUInt8).unwrap()
    }

    #[test]
    fn errors_instead_of_panics() {
        let (a, b) = (qp(0.1, 3), qp(0.2, 4));
        let isa = CpuCapability::Avx512;
        for e in [QEngine::Qnnpack, QEngine::X86] {
            assert!(add(e, isa, &[1, 2], &a, &[1], &b, &a, false).is_err());
            let bad = QParams { scale: 0.0, ..a };
            assert!(add(e, isa, &[1], &bad, &[1], &b, &a, false).is_err());
            let i8qp = QParams::new(0.1, 0, QDtype::QInt8).unwrap();
            assert!(add(e, isa, &[1], &i8qp, &[1], &b, &a, false).is_err());
        }
        // QNNPACK: ratio out of range, and add_relu with output zero point 255.
        assert!(add(
            QEngine::Qnnpack,
            isa,
            &[1],
            &qp(1000.0, 0),
            &[1],
            &b,
            &a,
            false
        )
        .is_err());
        assert!(add(
            QEngine::Qnnpack,
            isa,
            &[1],
            &a,
            &[1],
            &b,
            &qp(0.1, 255),
            true
        )
        .is_err());
        assert!(add(QEngine::X86, isa, &[1], &a, &[1], &b, &qp(0.1, 255), true).is_ok());
    }

    #[test]
    fn x86_vector_and_scalar_paths_differ_on_a_probe_pair() {
        // From fixture add_isa_probe_0 (PyTorch: 44 on the vector path, 45 on the scalar one).
        let a = qp(f32::from_bits(0x3c8d_4593), 246);
        let b = qp(f32::from_bits(0x3cba_e9c1), 249);
        let y = qp(f32::from_bits(0x3d05_207a), 191);
        let run = |isa, n| {
            add(
                QEngine::X86,
                isa,
                &vec![171; n],
                &a,
                &vec![97; n],
                &b,
                &y,
                false,
            )
        };
        // 70 elements with 32 lanes: the first 64 take the vector path, the last 6 the scalar.
        let v = run(CpuCapability::Avx512, 70).unwrap();
        assert!(v[..64].iter().all(|&q| q == 44) && v[64..].iter().all(|&q| q == 45));
        assert_eq!(run(CpuCapability::Avx2, 70).unwrap(), v);
        assert!(run(CpuCapability::Default, 70)
            .unwrap()
            .iter()
            .all(|&q| q == 45));
    }

    #[test]
    fn x86_split_runs_in_memory_order_on_channels_last() {
        // As above, 70 elements: the vector path takes the first 64 in memory order. On a
        // channels-last [1, 35, 1, 2] tensor memory position p*35 + c holds NCHW index 2c + p,
        // so the scalar tail is (p = 1, c >= 29): NCHW indices 59, 61, .., 69.
        let a = qp(f32::from_bits(0x3c8d_4593), 246);
        let b = qp(f32::from_bits(0x3cba_e9c1), 249);
        let y = qp(f32::from_bits(0x3d05_207a), 191);
        let dims = [1, 35, 1, 2];
        let run = |format: MemoryFormat, engine| {
            add_in(
                [format; 2],
                engine,
                CpuCapability::Avx512,
                &dims,
                &[171; 70],
                &a,
                &[97; 70],
                &b,
                &y,
                false,
            )
            .unwrap()
        };
        let v = run(MemoryFormat::ChannelsLast, QEngine::X86);
        for (i, &q) in v.iter().enumerate() {
            let tail = i >= 59 && i % 2 == 1;
            assert_eq!(q, if tail { 45 } else { 44 }, "element {i}");
        }
        let c = run(MemoryFormat::Contiguous, QEngine::X86);
        assert!(c[..64].iter().all(|&q| q == 44) && c[64..].iter().all(|&q| q == 45));
        assert_eq!(
            run(MemoryFormat::ChannelsLast, QEngine::Qnnpack),
            run(MemoryFormat::Contiguous, QEngine::Qnnpack)
        );
        // Inputs of different layouts take the scalar path everywhere, whatever the CPU.
        let (cl, nchw) = (MemoryFormat::ChannelsLast, MemoryFormat::Contiguous);
        for formats in [[cl, nchw], [nchw, cl]] {
            let m = add_in(
                formats,
                QEngine::X86,
                CpuCapability::Avx512,
                &dims,
                &[171; 70],
                &a,
                &[97; 70],
                &b,
                &y,
                false,
            )
            .unwrap();
            assert!(m.iter().all(|&q| q == 45), "{formats:?}");
        }
        // One-channel tensors and 1x1 planes have one layout: their formats never differ.
        assert_eq!(
            x86_add_path(&[1, 1, 5, 5], [cl, nchw]),
            X86AddPath::InOrder(nchw)
        );
        assert_eq!(
            x86_add_path(&[2, 9, 1, 1], [nchw, cl]),
            X86AddPath::InOrder(nchw)
        );
        assert_eq!(
            x86_add_path(&[2, 9, 2, 1], [nchw, cl]),
            X86AddPath::AllScalar
        );
        assert_eq!(x86_add_path(&[2, 9], [cl, cl]), X86AddPath::InOrder(nchw));
        assert!(add_in(
            [MemoryFormat::ChannelsLast; 2],
            QEngine::X86,
            CpuCapability::Avx512,
            &[1, 35, 1, 1],
            &[171; 70],
            &a,
            &[97; 70],
            &b,
            &y,
            false
        )
        .is_err());
    }

    #[test]
    fn empty_is_empty() {
        let a = qp(0.1, 3);
        let r = add(
            QEngine::X86,
            CpuCapability::Avx2,
            &[],
            &a,
            &[],
            &a,
            &a,
            true,
        )
        .unwrap();
        assert!(r.is_empty());
    }
}
