//! `quantized::cat` and `torch.cat` on quantized tensors (contiguous layouts).
//!
//! PyTorch's `quantized_cat_impl` (`qconcat.cpp`) dequantizes every input to float
//! (`f32(s * (q - zp))`), concatenates, and quantizes the result with the output qparams
//! (`rne(f32(x * f32(1/s_out))) + zp_out`, clamped), the same for every engine and ISA.
//! `torch.cat` on quantized tensors (`cat_quantized_cpu`, `TensorShape.cpp`) gives the output
//! the first input's qparams: with shared qparams the ints pass through unchanged; otherwise
//! PyTorch warns ("All inputs of this cat operator must share the same quantization
//! parameters") and requantizes the other inputs as `quantized::cat` does.

use super::check_data;
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

fn cat_dims(inputs: &[CatInput<'_>], dim: usize) -> Result<Vec<usize>> {
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
fn concat(
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
}
