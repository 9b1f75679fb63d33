//! `quantized::cat` and `torch.cat` on quantized tensors (contiguous layouts).
//!
//! PyTorch's `quantized_cat_impl` (`qconcat.cpp`) dequantizes every input to float
//! (`f32(s * (q - zp))`), concatenates, and quantizes the result with the output qparams
//! (`rne(f32(x * f32(1/s_out))) + zp_out`, clamped), the same for every engine and ISA.
//! `torch.cat` on quantized tensors (`cat_quantized_cpu`, `TensorShape.cpp`) gives the output
//! the first input's qparams: with shared qparams the ints pass through unchanged; otherwise
//! PyTorch warns ("All inputs of this cat operator must share the same quantization
//! parameters") and requantizes the other inputs as `quantized::cat` does.
//!
//! Channels-last inputs ([`cat_in`]): when **all** inputs are channels-last 4-d tensors and
//! `dim` is 1, ATen takes `qcat_nhwc_kernel` (`q/cpu/kernels/QuantizedOpKernels.cpp`), which
//! copies inputs that have the output qparams and requantizes the others pixel by pixel: the
//! first `floor(C_i / 8) * 8` channels of input `i` (AVX2 and AVX512 builds, which both run the
//! AVX2 kernel; none on `DEFAULT`) in vector code that dequantizes with a fused multiply-add,
//! `fma(s, q, f32(s * -zp))`, and quantizes with `f32(1 / f64(s_out))`, the rest as above.
//! Every other combination (mixed formats, other dims) takes the generic path.

use super::pool::MemoryFormat;
use super::{check_data, CpuCapability};
use crate::error::{Error, Result};
use crate::quant::{dequantize_one, quantize_one, QParams};

/// One input of a concatenation: stored bytes, sizes and qparams.
#[derive(Debug, Clone, Copy)]
pub struct CatInput<'a> {
    /// Stored bytes, contiguous (row-major).
    pub data: &'a [u8],
    /// Sizes.
    pub dims: &'a [usize],
    /// Quantization parameters.
    pub qp: &'a QParams,
}

/// The output dims of a cat of `inputs` along `dim`, after checking them: at least one input,
/// `dim` in range, each input's bytes, dtype, qparams and other dims.
pub(crate) fn cat_dims(inputs: &[CatInput<'_>], dim: usize) -> Result<Vec<usize>> {
    let first = inputs
        .first()
        .ok_or_else(|| Error::Shape("cat: no inputs".into()))?;
    let rank = first.dims.len();
    if dim >= rank {
        return Err(Error::InvalidParameter(format!(
            "cat: dim {dim} is out of range for rank {rank}"
        )));
    }
    let mut out = first.dims.to_vec();
    out[dim] = 0;
    for (i, x) in inputs.iter().enumerate() {
        check_data(&format!("cat input {i}"), x.data.len(), x.dims)?;
        if x.qp.dtype != first.qp.dtype {
            return Err(Error::InvalidParameter(format!(
                "cat: input {i} is {}, input 0 is {}",
                x.qp.dtype, first.qp.dtype
            )));
        }
        QParams::new(x.qp.scale, x.qp.zero_point, x.qp.dtype)?;
        let same_other_dims = x.dims.len() == rank
            && x.dims
                .iter()
                .zip(first.dims)
                .enumerate()
                .all(|(d, (a, b))| d == dim || a == b);
        if !same_other_dims {
            return Err(Error::Shape(format!(
                "cat: input {i} has shape {:?}, input 0 has {:?} (only dim {dim} may differ)",
                x.dims, first.dims
            )));
        }
        out[dim] += x.dims[dim];
    }
    Ok(out)
}

/// Concatenates along `dim`, mapping each input value with `f(input index, value)`.
pub(crate) fn concat(
    inputs: &[CatInput<'_>],
    dim: usize,
    mut f: impl FnMut(usize, u8) -> u8,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let out_dims = cat_dims(inputs, dim)?;
    let outer: usize = out_dims[..dim].iter().product();
    let inner: usize = out_dims[dim + 1..].iter().product();
    let mut out = Vec::with_capacity(out_dims.iter().product());
    for o in 0..outer {
        for (i, x) in inputs.iter().enumerate() {
            let block = x.dims[dim] * inner;
            out.extend(x.data[o * block..(o + 1) * block].iter().map(|&v| f(i, v)));
        }
    }
    Ok((out, out_dims))
}

/// `quantized::cat(inputs, dim, out.scale, out.zero_point)`: requantizes every input to the
/// output qparams through float. Returns the output bytes and sizes. All inputs must share the
/// dtype (the output's must equal it) and every size but `dim`.
pub fn cat(inputs: &[CatInput<'_>], dim: usize, out: &QParams) -> Result<(Vec<u8>, Vec<usize>)> {
    QParams::new(out.scale, out.zero_point, out.dtype)?;
    if let Some(x) = inputs.iter().find(|x| x.qp.dtype != out.dtype) {
        return Err(Error::InvalidParameter(format!(
            "cat: output dtype {} differs from the inputs' {}",
            out.dtype, x.qp.dtype
        )));
    }
    let inv = 1.0f32 / out.scale;
    let dt = out.dtype;
    concat(inputs, dim, |i, v| {
        let x = dequantize_one(dt.byte_to_int(v), inputs[i].qp);
        dt.int_to_byte(quantize_one(x, inv, out))
    })
}

/// `torch.cat(inputs, dim)` on quantized tensors: the output takes the first input's qparams
/// and the inputs are requantized to them as in [`cat`] (the identity for inputs that already
/// have them). Returns the output bytes, sizes and qparams.
pub fn torch_cat(inputs: &[CatInput<'_>], dim: usize) -> Result<(Vec<u8>, Vec<usize>, QParams)> {
    let first = inputs
        .first()
        .ok_or_else(|| Error::Shape("cat: no inputs".into()))?;
    let qp = *first.qp;
    let (data, dims) = cat(inputs, dim, &qp)?;
    Ok((data, dims, qp))
}

/// Channels of one input that `qcat_nhwc_kernel`'s vector code requantizes: 32-lane blocks,
/// then 8-lane blocks (`Vectorized<quint8>` of the AVX2 kernel; the AVX512 build registers
/// none of its own, as the fixtures confirm), none on `DEFAULT`.
fn nhwc_cat_vector_channels(isa: CpuCapability, c: usize) -> usize {
    match isa {
        CpuCapability::Default => 0,
        CpuCapability::Avx2 | CpuCapability::Avx512 => c / 8 * 8,
    }
}

/// [`cat`] of inputs that PyTorch stores as `format` (all alike; the ints are given in NCHW
/// order either way): channels-last 4-d inputs concatenated along dim 1 take ATen's NHWC kernel,
/// whose vector part rounds differently (see the module docs), so `isa` must be the capability
/// of the PyTorch build to match. Anything else is [`cat`].
pub fn cat_in(
    format: MemoryFormat,
    isa: CpuCapability,
    inputs: &[CatInput<'_>],
    dim: usize,
    out: &QParams,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let nhwc = format == MemoryFormat::ChannelsLast
        && dim == 1
        && inputs.first().is_some_and(|x| x.dims.len() == 4);
    if !nhwc {
        return cat(inputs, dim, out);
    }
    // Validates everything (shapes, dtypes, qparams) as the contiguous path does.
    let (_, out_dims) = cat(inputs, dim, out)?;
    let [n, c_out, h, w]: [usize; 4] = out_dims[..].try_into().expect("4-d");
    let hw = h * w;
    let dt = out.dtype;
    let inv_scalar = 1.0f32 / out.scale;
    let inv_vector = (1.0f64 / out.scale as f64) as f32;
    let mut y = vec![0u8; n * c_out * hw];
    let mut c_base = 0;
    for x in inputs {
        let c_in = x.dims[1];
        let fast = x.qp.scale == out.scale && x.qp.zero_point == out.zero_point;
        let vec_end = nhwc_cat_vector_channels(isa, c_in);
        let premul = x.qp.scale * -(x.qp.zero_point as f32);
        for b in 0..n {
            for c in 0..c_in {
                for p in 0..hw {
                    let v = x.data[(b * c_in + c) * hw + p];
                    let o = &mut y[(b * c_out + c_base + c) * hw + p];
                    *o = if fast {
                        v
                    } else if c < vec_end {
                        let f = x.qp.scale.mul_add(dt.byte_to_int(v) as f32, premul);
                        dt.int_to_byte(quantize_one(f, inv_vector, out))
                    } else {
                        let f = dequantize_one(dt.byte_to_int(v), x.qp);
                        dt.int_to_byte(quantize_one(f, inv_scalar, out))
                    };
                }
            }
        }
        c_base += c_in;
    }
    Ok((y, out_dims))
}

/// [`torch_cat`] of inputs that PyTorch stores as `format` (see [`cat_in`]).
pub fn torch_cat_in(
    format: MemoryFormat,
    isa: CpuCapability,
    inputs: &[CatInput<'_>],
    dim: usize,
) -> Result<(Vec<u8>, Vec<usize>, QParams)> {
    let first = inputs
        .first()
        .ok_or_else(|| Error::Shape("cat: no inputs".into()))?;
    let qp = *first.qp;
    let (data, dims) = cat_in(format, isa, inputs, dim, &qp)?;
    Ok((data, dims, qp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QDtype;

    #[test]
    fn bad_inputs_are_errors() {
        let q = QParams::new(0.1, 0, QDtype::QUInt8).unwrap();
        let q2 = QParams::new(0.2, 0, QDtype::QUInt8).unwrap();
        let a = CatInput {
            data: &[1, 2],
            dims: &[1, 2],
            qp: &q,
        };
        let b = CatInput {
            data: &[1, 2, 3],
            dims: &[1, 3],
            qp: &q2,
        };
        assert!(cat(&[], 0, &q).is_err());
        assert!(cat(&[a, b], 0, &q).is_err()); // dim 1 differs
        assert!(cat(&[a, b], 2, &q).is_err()); // dim out of range
        let (y, d) = cat(&[a, b], 1, &q).unwrap();
        assert_eq!(d, vec![1, 5]);
        assert_eq!(y, vec![1, 2, 2, 4, 6]);
        let (y, _, qp) = torch_cat(&[a, b], 1).unwrap(); // requantized to input 0's qparams
        assert_eq!((y, qp), (vec![1, 2, 2, 4, 6], q));
        assert!(torch_cat(&[], 1).is_err());
        let short = CatInput {
            data: &[1],
            dims: &[1, 2],
            qp: &q,
        };
        assert!(cat(&[a, short], 0, &q).is_err());
    }

    #[test]
    fn nhwc_cat_vector_channels_round_differently() {
        // From fixture cat_cl_1_probe: q = 226 requantizes to 90 in the vector code (FMA
        // dequantization) and to 89 in the scalar code.
        let x_qp = QParams::new(f32::from_bits(0x3b8f_32ad), 135, QDtype::QUInt8).unwrap();
        let y_qp = QParams::new(f32::from_bits(0x3c29_3be4), 51, QDtype::QUInt8).unwrap();
        let data = vec![226u8; 13];
        let x = CatInput {
            data: &data,
            dims: &[1, 13, 1, 1],
            qp: &x_qp,
        };
        let run = |f, isa, dim| cat_in(f, isa, &[x, x], dim, &y_qp).unwrap().0;
        let cl = MemoryFormat::ChannelsLast;
        let y = run(cl, CpuCapability::Avx512, 1);
        // Per input: channels 0..8 vector, 8..13 scalar.
        let want: Vec<u8> = (0..26).map(|i| if i % 13 < 8 { 90 } else { 89 }).collect();
        assert_eq!(y, want);
        assert_eq!(run(cl, CpuCapability::Avx2, 1), want);
        // DEFAULT, contiguous inputs, or another dim: the scalar formula everywhere.
        assert!(run(cl, CpuCapability::Default, 1).iter().all(|&v| v == 89));
        let c = MemoryFormat::Contiguous;
        assert!(run(c, CpuCapability::Avx512, 1).iter().all(|&v| v == 89));
        assert!(run(cl, CpuCapability::Avx512, 0).iter().all(|&v| v == 89));
        // Inputs with the output's qparams are copied.
        let (y, _, qp) = torch_cat_in(cl, CpuCapability::Avx512, &[x, x], 1).unwrap();
        assert_eq!((y, qp), (vec![226; 26], x_qp));
    }
}
