//! `QLinearAdd` (com.microsoft): `MlasQLinearAdd` (`onnxruntime/core/mlas/lib/qladd.cpp`).
//!
//! With `rA = f32(sA / sC)` and `rB = f32(sB / sC)`, the x86 kernels compute, per element,
//!
//! * AVX2 (`MlasQLinearAddKernelAvx2Helper`, `intrinsics/avx2/qladd_avx2.cpp`):
//!   `fma(a, rA, fma(b, rB, F))` with `F = f32(zC - fma(rA, zA, f32(rB * zB)))`. The source
//!   writes `F = zC - (rA*zA + rB*zB)` and, for a scalar B, `F + b*rB` with separate
//!   `_mm256_mul_ps` / `_mm256_add_ps`; the compiler contracts both into FMAs (that file is
//!   built with `-mfma`), which the probe fixtures `qlinear_add_*probe*` confirm: the
//!   uncontracted formulas miss some of their outputs. A scalar B therefore gives the same
//!   formula as a full B.
//! * SSE2 (`MlasQLinearAddKernelHelper`, `qladd.cpp`, built without FMA):
//!   `f32(f32(F + f32(a * rA)) + f32(b * rB))` with `F = f32(zC - f32(f32(rA zA) + f32(rB zB)))`;
//!   with a scalar B, `f32(F' + f32(a * rA))` with `F' = f32(F + f32(b * rB))` (not checked
//!   against ORT: this machine runs the AVX2 kernel);
//!
//! then `_mm*_cvtps_epi32` (round half to even) and saturating packs to 8 bits. The portable
//! C++ path (`MlasQLinearAddKernelRawHelper`) is different again:
//! `rne(f32(clamp(f32(f32(sA (a - zA)) + f32(sB (b - zB))) / sC) + zC))`.

use super::qdq::{check_qparams, cvtps_epi32};
use crate::cpu::reference::check_data;
use crate::error::{Error, Result};
use crate::quant::rne;
use crate::quant::{QDtype, QParams};

/// Which `MlasQLinearAdd` kernel ORT dispatched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QLinearAddKernel {
    /// x86-64 with AVX2 and FMA3 (`MlasQLinearAddU8KernelAvx2`; AVX-512 machines run it too).
    Avx2,
    /// x86-64 without AVX2 (SSE2 kernel of `qladd.cpp`).
    Sse2,
    /// The portable C++ kernel (`MlasQLinearAddKernelRawHelper`), used where MLAS has no
    /// vector kernel and, on ARM, when the scale ratios leave the fixed-point range.
    Raw,
}

/// `QLinearAdd` of two flat tensors with equal element counts, or with one of them a single
/// element: [`qlinear_add_broadcast`] of 1-d tensors. Returns stored bytes of `c_qp`'s type.
pub fn qlinear_add(
    kernel: QLinearAddKernel,
    a: &[u8],
    a_qp: &QParams,
    b: &[u8],
    b_qp: &QParams,
    c_qp: &QParams,
) -> Result<Vec<u8>> {
    qlinear_add_broadcast(kernel, a, &[a.len()], a_qp, b, &[b.len()], b_qp, c_qp).map(|(y, _)| y)
}

/// `QLinearAdd` of `a` (sizes `a_dims`) and `b` (`b_dims`) with ONNX (numpy) broadcasting;
/// returns the stored output bytes (`c_qp`'s type; all three types must match) and sizes.
///
/// ORT calls `MlasQLinearAdd` once per span of the output's innermost non-trivial axis
/// (`BroadcastLooper`, `qlinear_binary_op.cc`): an operand of size 1 along that axis is a
/// scalar for the span and is passed in B's place — when it is A, the operands are swapped,
/// which changes the float order of the kernels.
#[allow(clippy::too_many_arguments)]
pub fn qlinear_add_broadcast(
    kernel: QLinearAddKernel,
    a: &[u8],
    a_dims: &[usize],
    a_qp: &QParams,
    b: &[u8],
    b_dims: &[usize],
    b_qp: &QParams,
    c_qp: &QParams,
) -> Result<(Vec<u8>, Vec<usize>)> {
    for (what, qp) in [("a", a_qp), ("b", b_qp), ("c", c_qp)] {
        check_qparams(&format!("QLinearAdd {what}"), qp)?;
    }
    if a_qp.dtype != b_qp.dtype || a_qp.dtype != c_qp.dtype {
        return Err(Error::InvalidParameter(format!(
            "QLinearAdd: types differ (a {}, b {}, c {})",
            a_qp.dtype, b_qp.dtype, c_qp.dtype
        )));
    }
    check_data("QLinearAdd A", a.len(), a_dims)?;
    check_data("QLinearAdd B", b.len(), b_dims)?;
    let rank = a_dims.len().max(b_dims.len());
    // Sizes right-aligned to the output rank (missing leading axes have size 1).
    let aligned = |d: &[usize]| -> Vec<usize> {
        std::iter::repeat_n(1, rank - d.len())
            .chain(d.iter().copied())
            .collect()
    };
    let (ad, bd) = (aligned(a_dims), aligned(b_dims));
    let out: Vec<usize> = ad
        .iter()
        .zip(&bd)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y || y == 1 => Ok(x),
            (1, _) => Ok(y),
            _ => Err(Error::Shape(format!(
                "QLinearAdd: shapes {a_dims:?} and {b_dims:?} do not broadcast"
            ))),
        })
        .collect::<Result<_>>()?;
    let (a_scalar, b_scalar) = match out.iter().rposition(|&d| d > 1) {
        Some(ax) => (ad[ax] == 1, bd[ax] == 1),
        None => (false, false),
    };
    // Row-major strides of an operand in the output's index space (0 along broadcast axes).
    let strides = |d: &[usize]| -> Vec<usize> {
        let mut st = vec![0; rank];
        let mut acc = 1;
        for ax in (0..rank).rev() {
            st[ax] = if d[ax] == 1 { 0 } else { acc };
            acc *= d[ax];
        }
        st
    };
    let (sa, sb) = (strides(&ad), strides(&bd));
    let swap = a_scalar && !b_scalar;
    let k = if swap {
        AddConsts::new(kernel, b_qp, a_qp, c_qp, a_scalar)
    } else {
        AddConsts::new(kernel, a_qp, b_qp, c_qp, b_scalar)
    };
    let n = crate::shape::checked_numel(&out)?;
    let y = (0..n)
        .map(|i| {
            let (mut rem, mut ia, mut ib) = (i, 0, 0);
            for ax in (0..rank).rev() {
                let idx = rem % out[ax];
                rem /= out[ax];
                ia += idx * sa[ax];
                ib += idx * sb[ax];
            }
            if swap {
                k.apply(b[ib], a[ia])
            } else {
                k.apply(a[ia], b[ib])
            }
        })
        .collect();
    Ok((y, out))
}

/// The three float constants of `MlasQLinearAddU8KernelAvx2` / `S8` for an elementwise call
/// with operands `a`, `b` and output `c` (in that order: no broadcast, no swap):
/// `[ra, rb, fixed]`, each element being `cvtps(fma(a, ra, fma(b, rb, fixed)))` clamped to the
/// dtype's range (see [`QLinearAddKernel::Avx2`]). For fast paths that vectorize that kernel.
pub fn avx2_constants(a_qp: &QParams, b_qp: &QParams, c_qp: &QParams) -> [f32; 3] {
    let k = AddConsts::new(QLinearAddKernel::Avx2, a_qp, b_qp, c_qp, false);
    [k.ra, k.rb, k.fixed]
}

/// One element of `MlasQLinearAddU8KernelAvx2` / `S8` (all three dtypes `dtype`), with the
/// constants of [`avx2_constants`]: `cvtps(fma(a, ra, fma(b, rb, fixed)))` clamped to the
/// dtype's range, as a stored byte.
pub fn avx2_element(dtype: QDtype, qa: u8, qb: u8, [ra, rb, fixed]: [f32; 3]) -> u8 {
    let (av, bv) = (dtype.byte_to_int(qa) as f32, dtype.byte_to_int(qb) as f32);
    let v = cvtps_epi32(av.mul_add(ra, bv.mul_add(rb, fixed)));
    dtype.int_to_byte(dtype.full_range().clamp(v))
}

/// The constants of one `MlasQLinearAdd` call, with its operands in ORT's order (first, second).
struct AddConsts {
    kernel: QLinearAddKernel,
    first: QParams,
    second: QParams,
    out: QParams,
    /// The second operand is one value for the whole span (`IsScalarB`).
    scalar_second: bool,
    ra: f32,
    rb: f32,
    fixed: f32,
}

impl AddConsts {
    fn new(
        kernel: QLinearAddKernel,
        first: &QParams,
        second: &QParams,
        out: &QParams,
        scalar_second: bool,
    ) -> Self {
        let (ra, rb) = (first.scale / out.scale, second.scale / out.scale);
        let (za, zb) = (first.zero_point as f32, second.zero_point as f32);
        let zc = out.zero_point as f32;
        let fixed = match kernel {
            QLinearAddKernel::Avx2 => zc - ra.mul_add(za, rb * zb),
            _ => zc - (ra * za + rb * zb),
        };
        AddConsts {
            kernel,
            first: *first,
            second: *second,
            out: *out,
            scalar_second,
            ra,
            rb,
            fixed,
        }
    }

    fn apply(&self, qa: u8, qb: u8) -> u8 {
        let (a, b) = (
            self.first.dtype.byte_to_int(qa),
            self.second.dtype.byte_to_int(qb),
        );
        let (av, bv) = (a as f32, b as f32);
        let (ra, rb, fixed) = (self.ra, self.rb, self.fixed);
        let range = self.out.dtype.full_range();
        let store = |v: f32| self.out.dtype.int_to_byte(range.clamp(cvtps_epi32(v)));
        match self.kernel {
            QLinearAddKernel::Avx2 => avx2_element(self.out.dtype, qa, qb, [ra, rb, fixed]),
            QLinearAddKernel::Sse2 if self.scalar_second => store((fixed + bv * rb) + av * ra),
            QLinearAddKernel::Sse2 => store((fixed + av * ra) + bv * rb),
            QLinearAddKernel::Raw => {
                let va = self.first.scale * (a - self.first.zero_point) as f32;
                let vb = self.second.scale * (b - self.second.zero_point) as f32;
                let lo = (range.min - self.out.zero_point) as f32;
                let hi = (range.max - self.out.zero_point) as f32;
                let v = ((va + vb) / self.out.scale).clamp(lo, hi);
                let zc = self.out.zero_point as f32;
                self.out.dtype.int_to_byte(rne(v + zc) as i32)
            }
        }
    }
}
