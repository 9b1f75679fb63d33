//! `max_pool2d`, `avg_pool2d` and `adaptive_avg_pool2d` on quantized NCHW tensors.
//!
//! The output keeps the input's qparams. Formulas (details and sources in `docs/ops.md`):
//!
//! * max pool, generic kernel (engine x86; qnnpack with `ceil_mode` or qint8): the max of the
//!   window's taps inside the input; padding never wins.
//! * max pool, QNNPACK (engine qnnpack, quint8, no `ceil_mode`): every tap's coordinate is
//!   clamped into the input (`min(max(i, 0), size - 1)`), so a tap in the padding reads the
//!   nearest edge pixel. With dilation this can pick a pixel outside the true window.
//! * avg pool, generic kernel (`avg_pool2d_out_frame`): `sum = Σ(q) - n_valid*zp` (int),
//!   `m = f32(f64(sx/sy) / divisor)`, `y = clamp(rne(f32(f32(sum) * m) + f32(zp)))`.
//! * avg pool, QNNPACK (engine qnnpack, quint8, no `ceil_mode`): padded taps count as the zero
//!   point, the divisor is always `kh*kw` (`count_include_pad` and `divisor_override` are
//!   ignored), `acc = Σ(q - zp)`, `y = rne(f32(f32(acc) * s)) + zp` with
//!   `s = f32(sx / f32(sy * f32(kh*kw)))` (`q8avgpool/*-sse2.c`, float32 requantization).
//! * adaptive avg pool, generic: windows `[floor(o*I/O), ceil((o+1)*I/O))`,
//!   `y = rne(f32(f32(Σq) * r))` with `r = f32(f32(f32(1/kd)/kh)/kw)` (`kd = 1`), no zero point
//!   correction and no clamp.
//! * adaptive avg pool, QNNPACK (engine qnnpack, quint8, output size dividing the input size,
//!   output != input): QNNPACK average pooling with kernel = stride = input/output, no padding.

use super::{check_data, QEngine};
use crate::error::{Error, Result};
use crate::quant::rne;
use crate::quant::{QDtype, QParams};

/// How PyTorch stores a quantized NCHW tensor in memory. The x86 engine's (and the fallback
/// paths') average pools round differently on each: ATen's NCHW kernels add the zero point
/// before rounding, its NHWC kernels (`qavg_pool2d_nhwc_kernel`,
/// `qadaptive_avg_pool2d_nhwc_kernel`, `q/cpu/kernels/QuantizedOpKernels.cpp`) after. Quantized
/// convs return channels-last tensors, so the pools after them take the NHWC kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemoryFormat {
    /// Row-major NCHW.
    #[default]
    Contiguous,
    /// NHWC in memory (`torch.channels_last`).
    ChannelsLast,
}

/// The NHWC kernels' rounding: `acc = Σ q - zx·size` over the window's valid taps,
/// `m = f32(1 / divisor)` (input and output scale are equal), then `quantize_val(1/m, zy, acc)`:
/// `clamp(rne(f32(acc · f32(1 / f32(1/m)))) + zy)`.
fn nhwc_average(acc: i64, divisor: i64, zp: i32, full: crate::quant::QRange) -> i32 {
    let v = rne(acc as f32 * nhwc_multiplier(divisor)) as i64 + zp as i64;
    v.clamp(full.min as i64, full.max as i64) as i32
}

/// The multiplier of ATen's NHWC average pools for `divisor`: `quantize_val(1/m, ..)` with
/// `m = f32(1 / divisor)` multiplies by `f32(1 / f32(1/m))`.
pub fn nhwc_multiplier(divisor: i64) -> f32 {
    let m = 1.0f32 / divisor as f32;
    1.0f32 / (1.0f32 / m)
}

/// Geometry of a 2-d pooling window, as (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Window size, each >= 1.
    pub kernel: [usize; 2],
    /// Stride, each >= 1 (PyTorch's default is the kernel size).
    pub stride: [usize; 2],
    /// Implicit padding on both sides, each at most half the kernel size.
    pub padding: [usize; 2],
    /// Dilation (max pooling only; must be `[1, 1]` for average pooling).
    pub dilation: [usize; 2],
    /// Use `ceil` instead of `floor` for the output size.
    pub ceil_mode: bool,
}

impl Pool2dParams {
    /// A `k`x`k` window with stride `k`, no padding, no dilation, floor mode.
    pub fn new(kernel: [usize; 2]) -> Self {
        Pool2dParams {
            kernel,
            stride: kernel,
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
        }
    }

    /// A `k`x`k` window with stride `k` (PyTorch's defaults for `MaxPool2d(k)`).
    pub fn square(k: usize) -> Self {
        Self::new([k, k])
    }
    /// Builder: both strides.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// Builder: both paddings.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    /// Builder: both dilations.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    /// Builder: ceil mode.
    pub fn ceil_mode(mut self, c: bool) -> Self {
        self.ceil_mode = c;
        self
    }

    /// Output size `[h_out, w_out]` for an `h`x`w` input (PyTorch's `pooling_output_shape`),
    /// after the checks of `pool2d_shape_check`: positive kernel, stride and dilation, padding
    /// at most half the kernel, and an output of at least 1x1.
    pub fn output_size(&self, h: usize, w: usize) -> Result<[usize; 2]> {
        let mut out = [0; 2];
        for (i, &n) in [h, w].iter().enumerate() {
            let (k, s, p, d) = (
                self.kernel[i],
                self.stride[i],
                self.padding[i],
                self.dilation[i],
            );
            if k == 0 || s == 0 || d == 0 {
                return Err(Error::InvalidParameter(format!(
                    "pooling: kernel {:?}, stride {:?} and dilation {:?} must be >= 1",
                    self.kernel, self.stride, self.dilation
                )));
            }
            if p > k / 2 {
                return Err(Error::InvalidParameter(format!(
                    "pooling: padding {:?} must be at most half the kernel {:?}",
                    self.padding, self.kernel
                )));
            }
            let (n, k, s, p, d) = (n as i64, k as i64, s as i64, p as i64, d as i64);
            let num = n + 2 * p - d * (k - 1) - 1 + if self.ceil_mode { s - 1 } else { 0 };
            let mut o = num.div_euclid(s) + 1;
            if self.ceil_mode && (o - 1) * s >= n + p {
                o -= 1;
            }
            if o < 1 {
                return Err(Error::Shape(format!(
                    "pooling: input {h}x{w} is too small for kernel {:?} (dilation {:?}, \
                     padding {:?}): output size would be {o}",
                    self.kernel, self.dilation, self.padding
                )));
            }
            out[i] = o as usize;
        }
        Ok(out)
    }
}

fn check_input(x: &[u8], dims: [usize; 4], qp: &QParams) -> Result<()> {
    check_data("pooling input", x.len(), &dims)?;
    if dims.contains(&0) {
        return Err(Error::Shape(format!(
            "pooling input {dims:?} has a zero-sized dimension"
        )));
    }
    QParams::new(qp.scale, qp.zero_point, qp.dtype)?;
    Ok(())
}

/// `F.max_pool2d` on a quantized NCHW tensor. Returns the output bytes (same qparams) and the
/// output shape. The engine matters (see the module docs): QNNPACK clamps taps into the input.
pub fn max_pool2d(
    engine: QEngine,
    x: &[u8],
    dims: [usize; 4],
    qp: &QParams,
    p: &Pool2dParams,
) -> Result<(Vec<u8>, [usize; 4])> {
    check_input(x, dims, qp)?;
    let [n, c, h, w] = dims;
    let [ho, wo] = p.output_size(h, w)?;
    let qnnpack = engine == QEngine::Qnnpack && qp.dtype == QDtype::QUInt8 && !p.ceil_mode;
    if qnnpack && p.kernel == [1, 1] {
        return Err(Error::InvalidParameter(
            "max_pool2d: QNNPACK refuses 1x1 pooling".into(),
        ));
    }
    let dt = qp.dtype;
    let mut out = Vec::with_capacity(n * c * ho * wo);
    for plane in x.chunks_exact(h * w) {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut best: Option<i32> = None;
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let iy =
                            (oy * p.stride[0] + ky * p.dilation[0]) as i64 - p.padding[0] as i64;
                        let ix =
                            (ox * p.stride[1] + kx * p.dilation[1]) as i64 - p.padding[1] as i64;
                        let (iy, ix) = if qnnpack {
                            (iy.clamp(0, h as i64 - 1), ix.clamp(0, w as i64 - 1))
                        } else if iy < 0 || iy >= h as i64 || ix < 0 || ix >= w as i64 {
                            continue;
                        } else {
                            (iy, ix)
                        };
                        let v = dt.byte_to_int(plane[iy as usize * w + ix as usize]);
                        best = Some(best.map_or(v, |b| b.max(v)));
                    }
                }
                let v = best.ok_or_else(|| {
                    Error::InvalidParameter(format!(
                        "max_pool2d: output ({oy}, {ox}) has no tap inside the {h}x{w} input"
                    ))
                })?;
                out.push(dt.int_to_byte(v));
            }
        }
    }
    Ok((out, [n, c, ho, wo]))
}

/// Options of `avg_pool2d` beyond the window geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AvgOptions {
    /// Count padded positions in the divisor (PyTorch's default: true).
    pub count_include_pad: bool,
    /// Divide by this instead of the window size (must not be 0).
    pub divisor_override: Option<i64>,
}

/// QNNPACK average pooling of one NCHW tensor with no `ceil_mode` (the caller checked
/// geometry): padded taps count as the zero point, divisor `kh*kw`.
fn avg_pool_qnnpack(
    x: &[u8],
    dims: [usize; 4],
    qp: &QParams,
    p: &Pool2dParams,
    out_hw: [usize; 2],
) -> Result<Vec<u8>> {
    let [_, _, h, w] = dims;
    let [ho, wo] = out_hw;
    let pool_size = p.kernel[0] * p.kernel[1];
    if pool_size == 1 {
        return Err(Error::InvalidParameter(
            "avg_pool2d: QNNPACK refuses 1x1 pooling".into(),
        ));
    }
    if pool_size >= 1 << 24 {
        return Err(Error::InvalidParameter(format!(
            "avg_pool2d: QNNPACK needs fewer than 2^24 pooled elements, got {pool_size}"
        )));
    }
    // input_scale / (output_scale * (float)pooling_size), input and output qparams equal.
    let scale = qp.scale / (qp.scale * pool_size as f32);
    let zp = qp.zero_point;
    let mut out = Vec::with_capacity(x.len() / (h * w) * ho * wo);
    for plane in x.chunks_exact(h * w) {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc: i32 = 0;
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let iy = (oy * p.stride[0] + ky) as i64 - p.padding[0] as i64;
                        let ix = (ox * p.stride[1] + kx) as i64 - p.padding[1] as i64;
                        if iy >= 0 && iy < h as i64 && ix >= 0 && ix < w as i64 {
                            acc += plane[iy as usize * w + ix as usize] as i32 - zp;
                        }
                    }
                }
                // _mm_cvtps_epi32 (round half to even), saturating adds, clamp to [0, 255].
                let v = rne(acc as f32 * scale) as i32;
                out.push((v + zp).clamp(0, 255) as u8);
            }
        }
    }
    Ok(out)
}

/// `F.avg_pool2d` on a quantized NCHW tensor (dilation must be 1). Returns the output bytes
/// (same qparams) and the output shape. See the module docs for the engines' formulas.
pub fn avg_pool2d(
    engine: QEngine,
    x: &[u8],
    dims: [usize; 4],
    qp: &QParams,
    p: &Pool2dParams,
    opt: &AvgOptions,
) -> Result<(Vec<u8>, [usize; 4])> {
    avg_pool2d_in(MemoryFormat::Contiguous, engine, x, dims, qp, p, opt)
}

/// [`avg_pool2d`] of a tensor PyTorch stores as `format` (the ints are given NCHW either way):
/// on a channels-last tensor the generic (non-QNNPACK) path rounds as [`MemoryFormat`] says.
pub fn avg_pool2d_in(
    format: MemoryFormat,
    engine: QEngine,
    x: &[u8],
    dims: [usize; 4],
    qp: &QParams,
    p: &Pool2dParams,
    opt: &AvgOptions,
) -> Result<(Vec<u8>, [usize; 4])> {
    check_input(x, dims, qp)?;
    if p.dilation != [1, 1] {
        return Err(Error::InvalidParameter(format!(
            "avg_pool2d has no dilation, got {:?}",
            p.dilation
        )));
    }
    if opt.divisor_override == Some(0) {
        return Err(Error::InvalidParameter(
            "avg_pool2d: divisor_override must not be 0".into(),
        ));
    }
    let [n, c, h, w] = dims;
    let [ho, wo] = p.output_size(h, w)?;
    let out_dims = [n, c, ho, wo];
    if engine == QEngine::Qnnpack && qp.dtype == QDtype::QUInt8 && !p.ceil_mode {
        return Ok((avg_pool_qnnpack(x, dims, qp, p, [ho, wo])?, out_dims));
    }
    let dt = qp.dtype;
    let full = dt.full_range();
    let zp = qp.zero_point;
    // input.q_scale() / output.q_scale() in double: exactly 1, the output keeps the input's
    // qparams.
    let scale_factor = 1.0f64;
    let mut out = Vec::with_capacity(n * c * ho * wo);
    for plane in x.chunks_exact(h * w) {
        for oy in 0..ho {
            for ox in 0..wo {
                let hs = (oy * p.stride[0]) as i64 - p.padding[0] as i64;
                let ws = (ox * p.stride[1]) as i64 - p.padding[1] as i64;
                let he = (hs + p.kernel[0] as i64).min((h + p.padding[0]) as i64);
                let we = (ws + p.kernel[1] as i64).min((w + p.padding[1]) as i64);
                let pool_size = (he - hs) * (we - ws);
                let (hs, ws) = (hs.max(0), ws.max(0));
                let (he, we) = (he.min(h as i64), we.min(w as i64));
                let size = (he - hs) * (we - ws);
                if size <= 0 {
                    return Err(Error::InvalidParameter(format!(
                        "avg_pool2d: output ({oy}, {ox}) has its window entirely in the padding"
                    )));
                }
                let divide = match opt.divisor_override {
                    Some(d) => d,
                    None if opt.count_include_pad => pool_size,
                    None => size,
                };
                let mut sum: i64 = 0;
                for iy in hs..he {
                    for ix in ws..we {
                        sum += dt.byte_to_int(plane[iy as usize * w + ix as usize]) as i64;
                    }
                }
                let sum = sum - size * zp as i64;
                if format == MemoryFormat::ChannelsLast {
                    out.push(dt.int_to_byte(nhwc_average(sum, divide, zp, full)));
                    continue;
                }
                let multiplier = (scale_factor / divide as f64) as f32;
                let v = rne(sum as f32 * multiplier + zp as f32);
                let v = v.clamp(full.min as f32, full.max as f32) as i32;
                out.push(dt.int_to_byte(v));
            }
        }
    }
    Ok((out, out_dims))
}

/// `F.adaptive_avg_pool2d(x, [oh, ow])` on a quantized NCHW tensor. Returns the output bytes
/// (same qparams) and the output shape.
pub fn adaptive_avg_pool2d(
    engine: QEngine,
    x: &[u8],
    dims: [usize; 4],
    qp: &QParams,
    output_size: [usize; 2],
) -> Result<(Vec<u8>, [usize; 4])> {
    adaptive_avg_pool2d_in(MemoryFormat::Contiguous, engine, x, dims, qp, output_size)
}

/// [`adaptive_avg_pool2d`] of a tensor PyTorch stores as `format` (the ints are given NCHW
/// either way): on a channels-last tensor the generic path rounds as [`MemoryFormat`] says.
pub fn adaptive_avg_pool2d_in(
    format: MemoryFormat,
    engine: QEngine,
    x: &[u8],
    dims: [usize; 4],
    qp: &QParams,
    output_size: [usize; 2],
) -> Result<(Vec<u8>, [usize; 4])> {
    check_input(x, dims, qp)?;
    let [n, c, h, w] = dims;
    let [ho, wo] = output_size;
    if ho == 0 || wo == 0 {
        return Err(Error::Shape(format!(
            "adaptive_avg_pool2d: output size {output_size:?} has a zero"
        )));
    }
    let out_dims = [n, c, ho, wo];
    let qnnpack = engine == QEngine::Qnnpack
        && qp.dtype == QDtype::QUInt8
        && [h, w] != [ho, wo]
        && h % ho == 0
        && w % wo == 0;
    if qnnpack {
        let k = [h / ho, w / wo];
        let p = Pool2dParams::new(k);
        return Ok((avg_pool_qnnpack(x, dims, qp, &p, [ho, wo])?, out_dims));
    }
    // start_index / end_index compute in float: floor(f32(o*I)/O), ceil(f32((o+1)*I)/O).
    let start = |o: usize, out: usize, inp: usize| ((o * inp) as f32 / out as f32).floor() as usize;
    let end =
        |o: usize, out: usize, inp: usize| (((o + 1) * inp) as f32 / out as f32).ceil() as usize;
    let dt = qp.dtype;
    let kdr = 1.0f32; // f32(1.0 / kD) with kD = 1 for 2-d pooling
    let mut out = Vec::with_capacity(n * c * ho * wo);
    for plane in x.chunks_exact(h * w) {
        for oy in 0..ho {
            let (hs, he) = (start(oy, ho, h), end(oy, ho, h));
            let kdhr = kdr / (he - hs) as f32;
            for ox in 0..wo {
                let (ws, we) = (start(ox, wo, w), end(ox, wo, w));
                let kdhwr = kdhr / (we - ws) as f32;
                let mut sum: i64 = 0;
                for iy in hs..he {
                    for ix in ws..we {
                        sum += dt.byte_to_int(plane[iy * w + ix]) as i64;
                    }
                }
                if format == MemoryFormat::ChannelsLast {
                    let size = ((he - hs) * (we - ws)) as i64;
                    let acc = sum - size * qp.zero_point as i64;
                    out.push(dt.int_to_byte(nhwc_average(
                        acc,
                        size,
                        qp.zero_point,
                        dt.full_range(),
                    )));
                    continue;
                }
                // No clamp in PyTorch either: the mean of in-range ints stays in range.
                let v = rne(sum as f32 * kdhwr) as i32;
                out.push(dt.int_to_byte(v));
            }
        }
    }
    Ok((out, out_dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qp() -> QParams {
        QParams::new(0.1, 3, QDtype::QUInt8).unwrap()
    }

    #[test]
    fn output_size_matches_pytorch() {
        let mut p = Pool2dParams::new([3, 3]);
        p.stride = [2, 2];
        p.padding = [1, 1];
        assert_eq!(p.output_size(7, 9).unwrap(), [4, 5]);
        p.ceil_mode = true;
        assert_eq!(p.output_size(7, 9).unwrap(), [4, 5]);
        assert_eq!(p.output_size(8, 8).unwrap(), [5, 5]);
        p.padding = [0, 0];
        assert_eq!(p.output_size(8, 8).unwrap(), [4, 4]);
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let x = [0u8; 16];
        let d = [1, 1, 4, 4];
        for e in [QEngine::Qnnpack, QEngine::X86] {
            let mut p = Pool2dParams::new([2, 2]);
            p.padding = [2, 2];
            assert!(max_pool2d(e, &x, d, &qp(), &p).is_err());
            let o = AvgOptions::default();
            assert!(avg_pool2d(e, &x, d, &qp(), &p, &o).is_err());
            let p = Pool2dParams::new([5, 5]);
            assert!(max_pool2d(e, &x, d, &qp(), &p).is_err());
            let mut p = Pool2dParams::new([0, 2]);
            assert!(max_pool2d(e, &x, d, &qp(), &p).is_err());
            p.kernel = [2, 2];
            p.stride = [0, 1];
            assert!(avg_pool2d(e, &x, d, &qp(), &p, &o).is_err());
            let p = Pool2dParams::new([2, 2]);
            let o = AvgOptions {
                count_include_pad: true,
                divisor_override: Some(0),
            };
            assert!(avg_pool2d(e, &x, d, &qp(), &p, &o).is_err());
            assert!(max_pool2d(e, &x[..15], d, &qp(), &p).is_err());
            assert!(adaptive_avg_pool2d(e, &x, d, &qp(), [0, 1]).is_err());
            assert!(adaptive_avg_pool2d(e, &[], [1, 0, 4, 4], &qp(), [1, 1]).is_err());
        }
        // QNNPACK refuses 1x1 windows; the generic kernels do not.
        let p = Pool2dParams::new([1, 1]);
        assert!(max_pool2d(QEngine::Qnnpack, &x, d, &qp(), &p).is_err());
        assert!(max_pool2d(QEngine::X86, &x, d, &qp(), &p).is_ok());
        let o = AvgOptions::default();
        assert!(avg_pool2d(QEngine::Qnnpack, &x, d, &qp(), &p, &o).is_err());
        assert!(avg_pool2d(QEngine::X86, &x, d, &qp(), &p, &o).is_ok());
    }

    #[test]
    fn dilated_window_with_no_tap_inside_is_an_error() {
        // k=2, d=5, p=1 on a 1x3 row: taps at -1 and 4 both fall outside for ox = 0.
        let x = [1u8, 2, 3];
        let mut p = Pool2dParams::new([1, 2]);
        p.padding = [0, 1];
        p.dilation = [1, 5];
        p.stride = [1, 1];
        let r = max_pool2d(QEngine::X86, &x, [1, 1, 1, 3], &qp(), &p);
        assert!(r.is_err() || r.unwrap().1[3] == 0);
    }
}
