//! Reference conv2d kernels.
//!
//! * [`conv2d_f32`]: float conv, accumulated in f64 and rounded once to f32.
//! * [`conv2d_acc`]: int8 conv, exact accumulation of `(x_q - x_zp) * (w_q - w_zp)`, checked to
//!   fit int32.
//! * [`requantize`]: applies an [`Epilogue`] to int32 accumulators.
//! * [`conv2d_quantized`]: the three together, with the accumulator-overflow check up front.
//!
//! Quantized activations are passed as stored bytes plus their dtype (u8 for quint8,
//! two's-complement i8 for qint8); weights are qint8.

use crate::error::{Error, Result};
use crate::quant::{Epilogue, QDtype, QParams, WeightQParams};
use crate::shape::ConvShape;

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::Shape(format!(
            "{what} has {got} elements, the conv shape needs {want}"
        )));
    }
    Ok(())
}

/// Visits every (output index, input index, weight index) triple of the conv in a fixed
/// order; padded taps are skipped (they contribute a real 0).
#[inline]
fn for_each_tap(s: &ConvShape, mut f: impl FnMut(usize, usize, usize)) {
    let p = &s.params;
    let (cig, cog) = (s.c_in_per_group(), s.c_out_per_group());
    for n in 0..s.n {
        for o in 0..s.c_out {
            let g = o / cog;
            for oy in 0..s.h_out {
                for ox in 0..s.w_out {
                    let out_idx = ((n * s.c_out + o) * s.h_out + oy) * s.w_out + ox;
                    for i in 0..cig {
                        let c = g * cig + i;
                        for ky in 0..s.kh {
                            let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                - p.padding[0] as isize;
                            if iy < 0 || iy >= s.h as isize {
                                continue;
                            }
                            for kx in 0..s.kw {
                                let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                    - p.padding[1] as isize;
                                if ix < 0 || ix >= s.w as isize {
                                    continue;
                                }
                                let x_idx =
                                    ((n * s.c_in + c) * s.h + iy as usize) * s.w + ix as usize;
                                let w_idx = ((o * cig + i) * s.kh + ky) * s.kw + kx;
                                f(out_idx, x_idx, w_idx);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Float conv2d (cross-correlation, zero padding), accumulated in f64 and rounded once.
pub fn conv2d_f32(x: &[f32], w: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Result<Vec<f32>> {
    s.validate()?;
    check_len("input", x.len(), s.input_len())?;
    check_len("weight", w.len(), s.weight_len())?;
    if let Some(b) = bias {
        check_len("bias", b.len(), s.c_out)?;
    }
    let mut acc = vec![0f64; s.output_len()];
    for_each_tap(s, |o, xi, wi| acc[o] += x[xi] as f64 * w[wi] as f64);
    let plane = s.h_out * s.w_out;
    Ok(acc
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let b = bias.map_or(0.0, |b| b[(i / plane) % s.c_out] as f64);
            (a + b) as f32
        })
        .collect())
}

/// Exact int8 conv accumulators: `acc = sum (x_q - x_zp) * (w_q - w_zp)` per output, with
/// `w_zp` the zero point of the output channel. Fails if an accumulator leaves int32.
pub fn conv2d_acc(
    x: &[u8],
    x_qp: &QParams,
    w: &[i8],
    w_qp: &WeightQParams,
    s: &ConvShape,
) -> Result<Vec<i32>> {
    s.validate()?;
    check_len("input", x.len(), s.input_len())?;
    check_len("weight", w.len(), s.weight_len())?;
    w_qp.check_channels(s.c_out)?;
    let cog_k = s.k();
    let mut acc = vec![0i64; s.output_len()];
    // Differences and products fit i64 for any i32 zero points; a partial sum leaving i64
    // (only possible with zero points far outside the 8-bit ranges) is an overflow error.
    let mut wide = None;
    for_each_tap(s, |o, xi, wi| {
        let xv = x_qp.dtype.byte_to_int(x[xi]) as i64 - x_qp.zero_point as i64;
        let wv = w[wi] as i64 - w_qp.zero_point(wi / cog_k) as i64;
        match acc[o].checked_add(xv * wv) {
            Some(a) => acc[o] = a,
            None => wide = Some(acc[o] as i128 + (xv * wv) as i128),
        }
    });
    let overflow = |bound: i128| Error::AccumulatorOverflow {
        layer: None,
        bound,
        limit: i32::MAX as i128,
        k: s.k(),
    };
    if let Some(bound) = wide {
        return Err(overflow(bound));
    }
    acc.into_iter()
        .map(|a| i32::try_from(a).map_err(|_| overflow(a as i128)))
        .collect()
}

/// Applies the epilogue to NCHW accumulators with `channels` channels of `plane` elements each,
/// returning stored output bytes in the epilogue's output dtype.
pub fn requantize(acc: &[i32], epi: &Epilogue, channels: usize, plane: usize) -> Result<Vec<u8>> {
    epi.validate()?;
    if epi.channels.len() != channels {
        return Err(Error::Shape(format!(
            "epilogue has {} channels, the tensor has {channels}",
            epi.channels.len()
        )));
    }
    if plane == 0
        || !channels
            .checked_mul(plane)
            .is_some_and(|cp| acc.len().is_multiple_of(cp))
    {
        return Err(Error::Shape(format!(
            "{} accumulators do not form [N, {channels}, {plane}]",
            acc.len()
        )));
    }
    Ok(acc
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            epi.out
                .dtype
                .int_to_byte(epi.apply(a, (i / plane) % channels))
        })
        .collect())
}

/// The quantized conv: accumulator-overflow check, exact accumulation, requantization.
pub fn conv2d_quantized(
    x: &[u8],
    x_qp: &QParams,
    w: &[i8],
    w_qp: &WeightQParams,
    epi: &Epilogue,
    s: &ConvShape,
) -> Result<Vec<u8>> {
    s.validate()?;
    epi.check_accumulator(
        w,
        w_qp,
        x_qp.dtype.full_range(),
        x_qp.zero_point,
        s.k(),
        None,
    )?;
    let acc = conv2d_acc(x, x_qp, w, w_qp, s)?;
    requantize(&acc, epi, s.c_out, s.h_out * s.w_out)
}

/// Quantizes a weight tensor (OIHW, `per_channel` = one scale per output channel) to qint8
/// bytes with the given qparams, exactly as `quantize_per_tensor` / `quantize_per_channel`.
pub fn quantize_weight(w: &[f32], w_qp: &WeightQParams, out_channels: usize) -> Result<Vec<i8>> {
    w_qp.check_channels(out_channels)?;
    if out_channels == 0 || !w.len().is_multiple_of(out_channels) {
        return Err(Error::Shape(format!(
            "weight of {} values cannot have {out_channels} output channels",
            w.len()
        )));
    }
    crate::quant::check_finite(w, "weight")?;
    let k = w.len() / out_channels;
    Ok(w.iter()
        .enumerate()
        .map(|(i, &v)| {
            let o = i / k;
            let qp = QParams {
                scale: w_qp.scale(o),
                zero_point: w_qp.zero_point(o),
                dtype: QDtype::QInt8,
            };
            crate::quant::quantize_one(v, crate::quant::inverse_scale(qp.scale), &qp) as i8
        })
        .collect())
}
