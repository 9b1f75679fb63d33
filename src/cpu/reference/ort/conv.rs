//! `QLinearConv` and `ConvInteger` (2-D, NCHW, weights OIHW).
//!
//! Both accumulate `Σ (x - zx)(w - zw)` exactly in int32 ([`conv2d_acc`]). `QLinearConv` then
//! adds the int32 bias and requantizes with MLAS's float formula
//! ([`requantize_output`]) and the scale
//! [`output_scale`] of the output channel. The accumulation is exact
//! on every MLAS path except the u8s8 `vpmaddubsw` kernels (AVX2, AVX-512 without VNNI), which
//! saturate int16 pair sums with full-range int8 weights: see `docs/ort.md`.

use super::qdq::{check_qparams, output_scale, requantize_output};
use crate::cpu::reference::conv2d_acc;
use crate::error::{Error, Result};
use crate::quant::{QDtype, QParams, QScheme, WeightQParams};
use crate::shape::ConvShape;

/// An 8-bit ONNX weight (or second operand): stored bytes, element type, and one scale and
/// zero point or one per output channel (conv) / output column (matmul).
#[derive(Debug, Clone, Copy)]
pub struct QWeight<'a> {
    /// Stored bytes (u8 for uint8, two's-complement i8 for int8).
    pub data: &'a [u8],
    /// Element type.
    pub dtype: QDtype,
    /// One scale or one per output channel (unused by the `*Integer` ops).
    pub scales: &'a [f32],
    /// One zero point or one per output channel.
    pub zero_points: &'a [i32],
}

impl QWeight<'_> {
    /// The weight as int8 bytes with [`WeightQParams`], for [`conv2d_acc`]: a uint8 weight
    /// `w` with zero point `z` becomes `w - 128` with zero point `z - 128`, which leaves every
    /// difference `w - z` unchanged.
    pub(crate) fn as_i8(&self, channels: usize) -> Result<(Vec<i8>, WeightQParams)> {
        let range = self.dtype.full_range();
        if let Some(z) = self.zero_points.iter().find(|z| !range.contains(**z)) {
            return Err(Error::InvalidParameter(format!(
                "weight zero point {z} is outside the {} range",
                self.dtype
            )));
        }
        let shift = match self.dtype {
            QDtype::QUInt8 => 128,
            QDtype::QInt8 => 0,
        };
        let w = self
            .data
            .iter()
            .map(|&b| (self.dtype.byte_to_int(b) - shift) as i8)
            .collect();
        let scales = if self.scales.is_empty() {
            vec![1.0]
        } else {
            self.scales.to_vec()
        };
        let qp = WeightQParams {
            scheme: if scales.len() == 1 && self.zero_points.len() == 1 {
                QScheme::PerTensorAffine
            } else {
                QScheme::PerChannelAffine
            },
            scales,
            zero_points: self.zero_points.iter().map(|z| z - shift).collect(),
        };
        qp.check_channels(channels)?;
        Ok((w, qp))
    }
}

/// `ConvInteger`: the exact int32 accumulators `Σ (x - zx)(w - zw)` (NCHW), with `x` of
/// element type `x_dtype` and zero point `x_zero_point`. Weight scales are ignored.
pub fn conv_integer(
    x: &[u8],
    x_dtype: QDtype,
    x_zero_point: i32,
    w: &QWeight<'_>,
    s: &ConvShape,
) -> Result<Vec<i32>> {
    let x_qp = QParams::new(1.0, x_zero_point, x_dtype)?;
    let (w8, w_qp) = w.as_i8(s.c_out)?;
    conv2d_acc(x, &x_qp, &w8, &w_qp, s)
}

/// `QLinearConv`: accumulators as [`conv_integer`], plus the int32 `bias` of the output
/// channel, requantized by `MlasRequantizeOutput` with the channel's scale
/// `f32(f32(sx * sw) / sy)`; returns stored output bytes (NCHW).
///
/// The element types are ORT's: uint8 activations with uint8 or int8 weights, int8
/// activations with int8 weights; the output has the input's type.
pub fn qlinear_conv(
    x: &[u8],
    x_qp: &QParams,
    w: &QWeight<'_>,
    bias: Option<&[i32]>,
    y_qp: &QParams,
    s: &ConvShape,
) -> Result<Vec<u8>> {
    check_qparams("QLinearConv x", x_qp)?;
    check_qparams("QLinearConv y", y_qp)?;
    if y_qp.dtype != x_qp.dtype || (x_qp.dtype == QDtype::QInt8 && w.dtype != QDtype::QInt8) {
        return Err(Error::InvalidParameter(format!(
            "QLinearConv: ORT has no kernel for x {}, w {}, y {}",
            x_qp.dtype, w.dtype, y_qp.dtype
        )));
    }
    if w.scales.is_empty() {
        return Err(Error::InvalidParameter(
            "QLinearConv: no weight scale".into(),
        ));
    }
    if let Some(b) = bias {
        if b.len() != s.c_out {
            return Err(Error::Shape(format!(
                "QLinearConv: bias has {} values for {} output channels",
                b.len(),
                s.c_out
            )));
        }
    }
    let acc = conv_integer(x, x_qp.dtype, x_qp.zero_point, w, s)?;
    let plane = s.h_out * s.w_out;
    requantize_channels(&acc, s.c_out, plane, x_qp.scale, w.scales, bias, y_qp)
}

/// Adds the bias of each channel and requantizes: `acc` is `[.., channels, plane]` with one
/// scale and bias per channel (or one for all when `w_scales` has one value).
pub(crate) fn requantize_channels(
    acc: &[i32],
    channels: usize,
    plane: usize,
    x_scale: f32,
    w_scales: &[f32],
    bias: Option<&[i32]>,
    y_qp: &QParams,
) -> Result<Vec<u8>> {
    let scales: Vec<f32> = w_scales
        .iter()
        .map(|&sw| output_scale(x_scale, sw, y_qp.scale))
        .collect();
    acc.iter()
        .enumerate()
        .map(|(i, &a)| {
            let c = (i / plane) % channels;
            let a = match bias {
                Some(b) => a
                    .checked_add(b[c])
                    .ok_or_else(|| Error::AccumulatorOverflow {
                        layer: None,
                        bound: a as i128 + b[c] as i128,
                        limit: i32::MAX as i128,
                        k: 0,
                    })?,
                None => a,
            };
            let m = if scales.len() == 1 {
                scales[0]
            } else {
                scales[c]
            };
            Ok(requantize_output(a, m, y_qp))
        })
        .collect()
}
