//! Pooling on 8-bit tensors (NCHW): `QLinearAveragePool`, `QLinearGlobalAveragePool`
//! (com.microsoft) and `MaxPool` on uint8 / int8.
//!
//! * `QLinearGlobalAveragePool` (`MlasQLinearGlobalAveragePoolNchw`,
//!   `mlas/lib/qlgavgpool.cpp`): exact int32 `acc = Σ x - zx·N` over the `N = H·W` pixels,
//!   requantized by `MlasRequantizeOutput` with `m = f32(sx / f32(sy · f32(N)))`; ORT refuses
//!   `N >= 2^24` and `m` outside `[2^-32, 256)`.
//! * `QLinearAveragePool` (`contrib_ops/cpu/quantization/qlinear_pool.cc`): the input is
//!   dequantized to float (`f32(sx · f32(x - zx))`), each window summed in float32 row by row,
//!   divided by the count (`f32(sum / f32(count))`, count = `kh·kw` with `count_include_pad`,
//!   else the in-bounds taps), and quantized as `clamp(rne(f32(f32(avg / sy) + zy)))`. A
//!   window covering the whole unpadded image takes the global-pool path instead.
//! * `MaxPool`: the max of the in-bounds taps (ORT's generic pooling loops), exactly
//!   PyTorch's generic quantized max pool ([`max_pool2d`] with the x86 engine).
//!
//! ORT's channels-last variants (`channels_last = 1`, `NhwcMaxPool`) compute the same values
//! per element: transpose to NCHW, call these, transpose back (`docs/ort.md`).

use super::qdq::{check_qparams, dequantize_value, requantize_output};
use crate::cpu::reference::pool::{max_pool2d, Pool2dParams};
use crate::cpu::reference::{check_data, QEngine};
use crate::error::{Error, Result};
use crate::quant::rne;
use crate::quant::QParams;

/// `MaxPool` on an 8-bit NCHW tensor (floor mode): the max of the taps inside the input.
/// Returns the output bytes and sizes.
pub fn max_pool(
    x: &[u8],
    dims: [usize; 4],
    qp: &QParams,
    p: &Pool2dParams,
) -> Result<(Vec<u8>, [usize; 4])> {
    if p.ceil_mode {
        return Err(Error::InvalidParameter(
            "MaxPool: ceil_mode is not modeled for ORT".into(),
        ));
    }
    max_pool2d(QEngine::X86, x, dims, qp, p)
}

/// `QLinearGlobalAveragePool` of an NCHW tensor: one output per channel (`[N, C, 1, 1]`).
pub fn qlinear_global_average_pool(
    x: &[u8],
    dims: [usize; 4],
    x_qp: &QParams,
    y_qp: &QParams,
) -> Result<Vec<u8>> {
    check_qparams("QLinearGlobalAveragePool x", x_qp)?;
    check_qparams("QLinearGlobalAveragePool y", y_qp)?;
    check_data("QLinearGlobalAveragePool input", x.len(), &dims)?;
    let image = dims[2] * dims[3];
    let m = global_average_pool_scale(x_qp, y_qp, image)?;
    let bias = -(x_qp.zero_point as i64) * image as i64;
    x.chunks_exact(image)
        .map(|plane| {
            let sum: i64 = plane
                .iter()
                .map(|&b| x_qp.dtype.byte_to_int(b) as i64)
                .sum();
            let acc = i32::try_from(sum + bias).map_err(|_| Error::AccumulatorOverflow {
                layer: None,
                bound: (sum + bias) as i128,
                limit: i32::MAX as i128,
                k: image,
            })?;
            Ok(requantize_output(acc, m, y_qp))
        })
        .collect()
}

/// The multiplier `m = f32(sx / f32(sy · f32(N)))` of `QLinearGlobalAveragePool` over images of
/// `image` pixels, with ORT's checks (`CheckQLinearGlobalAveragePoolScaleAndSize`): `image` in
/// `1..2^24`, `m` in `[2^-32, 256)`.
pub fn global_average_pool_scale(x_qp: &QParams, y_qp: &QParams, image: usize) -> Result<f32> {
    if image == 0 || image >= 1 << 24 {
        return Err(Error::Shape(format!(
            "QLinearGlobalAveragePool: image of {image} pixels (ORT needs 1..2^24)"
        )));
    }
    let m = x_qp.scale / (y_qp.scale * image as f32);
    if !(2f32.powi(-32)..256.0).contains(&m) {
        return Err(Error::InvalidParameter(format!(
            "QLinearGlobalAveragePool: scale ratio {m} is outside ORT's range [2^-32, 256)"
        )));
    }
    Ok(m)
}

/// Window geometry of `QLinearAveragePool` (2-D, no dilation, floor mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPoolParams {
    /// Window `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`, each >= 1.
    pub stride: [usize; 2],
    /// ONNX pads `[top, left, bottom, right]`, each smaller than the kernel.
    pub pads: [usize; 4],
    /// Divide by the whole window (pads included) instead of the in-bounds taps.
    pub count_include_pad: bool,
}

/// The windows of `QLinearAveragePool` (floor mode): per output row its input row range,
/// per output column its input column range (both half-open, clipped to the input), and per
/// output position (row-major) the count it divides by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvgPoolWindows {
    /// Input rows `[start, end)` of each output row.
    pub rows: Vec<[usize; 2]>,
    /// Input columns `[start, end)` of each output column.
    pub cols: Vec<[usize; 2]>,
    /// The divisor of each output: `kh·kw` with `count_include_pad`, else the window's size.
    pub counts: Vec<usize>,
}

/// The windows `QLinearAveragePool` averages over on an `h x w` plane, or `None` when the
/// kernel covers the whole unpadded image and ORT takes the global-pool path
/// ([`qlinear_global_average_pool`]). Errors for windows that do not fit.
pub fn average_pool_windows(
    [h, w]: [usize; 2],
    p: &AvgPoolParams,
) -> Result<Option<AvgPoolWindows>> {
    let mut out_hw = [0usize; 2];
    for (i, &size) in [h, w].iter().enumerate() {
        let (k, s) = (p.kernel[i], p.stride[i]);
        let (head, tail) = (p.pads[i], p.pads[i + 2]);
        if k == 0 || s == 0 || head >= k || tail >= k || size + head + tail < k {
            return Err(Error::InvalidParameter(format!(
                "QLinearAveragePool: kernel {:?}, stride {:?}, pads {:?} do not fit a {h}x{w} \
                 input",
                p.kernel, p.stride, p.pads
            )));
        }
        out_hw[i] = (size + head + tail - k) / s + 1;
    }
    if p.kernel == [h, w] && p.pads == [0; 4] {
        return Ok(None);
    }
    let window = |o: usize, i: usize, size: usize| {
        let start = (o * p.stride[i]) as i64 - p.pads[i] as i64;
        let end = (start + p.kernel[i] as i64).min(size as i64);
        [start.max(0) as usize, end as usize]
    };
    let rows: Vec<[usize; 2]> = (0..out_hw[0]).map(|o| window(o, 0, h)).collect();
    let cols: Vec<[usize; 2]> = (0..out_hw[1]).map(|o| window(o, 1, w)).collect();
    let counts = rows
        .iter()
        .flat_map(|r| {
            cols.iter().map(move |c| {
                if p.count_include_pad {
                    p.kernel[0] * p.kernel[1]
                } else {
                    (r[1] - r[0]) * (c[1] - c[0])
                }
            })
        })
        .collect();
    Ok(Some(AvgPoolWindows { rows, cols, counts }))
}

/// `QLinearAveragePool` of an NCHW tensor; returns the output bytes and sizes.
pub fn qlinear_average_pool(
    x: &[u8],
    dims: [usize; 4],
    x_qp: &QParams,
    p: &AvgPoolParams,
    y_qp: &QParams,
) -> Result<(Vec<u8>, [usize; 4])> {
    check_qparams("QLinearAveragePool x", x_qp)?;
    check_qparams("QLinearAveragePool y", y_qp)?;
    check_data("QLinearAveragePool input", x.len(), &dims)?;
    if dims.contains(&0) {
        return Err(Error::Shape(format!(
            "QLinearAveragePool: input {dims:?} has a zero-sized dimension"
        )));
    }
    let [n, c, h, w] = dims;
    let Some(win) = average_pool_windows([h, w], p)? else {
        let y = qlinear_global_average_pool(x, dims, x_qp, y_qp)?;
        return Ok((y, [n, c, 1, 1]));
    };
    let (ho, wo) = (win.rows.len(), win.cols.len());
    let mut y = Vec::with_capacity(n * c * ho * wo);
    for plane in x.chunks_exact(h * w) {
        for (oy, &[h0, h1]) in win.rows.iter().enumerate() {
            for (ox, &[w0, w1]) in win.cols.iter().enumerate() {
                let mut sum = 0f32;
                for row in plane[h0 * w..h1 * w].chunks_exact(w) {
                    for &b in &row[w0..w1] {
                        sum += dequantize_value(b, x_qp);
                    }
                }
                let avg = sum / win.counts[oy * wo + ox] as f32;
                let r = y_qp.dtype.full_range();
                let q = rne(avg / y_qp.scale + y_qp.zero_point as f32);
                y.push(y_qp.dtype.int_to_byte(r.clamp(q.clamp(-1e9, 1e9) as i32)));
            }
        }
    }
    Ok((y, [n, c, ho, wo]))
}
