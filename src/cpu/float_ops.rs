//! Float reference of the graph ops other than conv (the conv's is [`super::reference::conv2d_f32`]
//! and its fast path): the calibration path of graph models, simplest code.
//!
//! Sums are accumulated in f64 and rounded to f32 once, like the float conv reference, so the
//! result does not depend on the summation order. Layouts are NCHW; shapes are checked by the
//! caller's op ([`crate::graph::Op::output_dims`]) and again here by length.

use crate::cpu::fast::Isa;
use crate::error::{Error, Result};

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::Shape(format!(
            "{what} has {got} elements, expected {want}"
        )));
    }
    Ok(())
}

/// The input rows `start..end` a pooling output row `o` covers: the window starts at
/// `o*stride - pad` and spans `kernel` taps `dilation` apart; taps outside `0..len` are padding.
fn window_taps(o: usize, k: usize, s: usize, p: usize, d: usize) -> impl Iterator<Item = isize> {
    let start = (o * s) as isize - p as isize;
    (0..k).map(move |t| start + (t * d) as isize)
}

/// 2-D pooling geometry for [`max_pool2d`] and [`avg_pool2d`]: `[n, c, h, w]` in, `[oh, ow]`
/// out, kernel, stride, padding and dilation per axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Input dims NCHW.
    pub input: [usize; 4],
    /// Output height and width.
    pub output: [usize; 2],
    /// Window size.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Padding on both sides.
    pub padding: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
}

impl PoolGeometry {
    fn output_len(&self) -> usize {
        self.input[0] * self.input[1] * self.output[0] * self.output[1]
    }
}

/// Max pooling: each output is the largest input in its window; padding is `-inf` (never
/// chosen unless the window holds only padding, which the output size formula rules out).
pub fn max_pool2d(x: &[f32], g: &PoolGeometry) -> Result<Vec<f32>> {
    let [n, c, h, w] = g.input;
    check_len("max_pool2d input", x.len(), n * c * h * w)?;
    let mut out = Vec::with_capacity(g.output_len());
    for plane in x.chunks_exact(h * w) {
        for oy in 0..g.output[0] {
            for ox in 0..g.output[1] {
                let mut m = f32::NEG_INFINITY;
                for iy in window_taps(oy, g.kernel[0], g.stride[0], g.padding[0], g.dilation[0]) {
                    for ix in window_taps(ox, g.kernel[1], g.stride[1], g.padding[1], g.dilation[1])
                    {
                        if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                            m = m.max(plane[iy as usize * w + ix as usize]);
                        }
                    }
                }
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// The divisor of one average-pooling window (PyTorch's CPU `avg_pool2d`): the window clipped
/// to the padded input counts when `count_include_pad`, the window clipped to the input
/// otherwise; `divisor_override` replaces both. Also returns the window clipped to the input,
/// as `(y0..y1, x0..x1)`; it is empty when the window lies entirely in the padding.
pub fn avg_pool_window(
    g: &PoolGeometry,
    oy: usize,
    ox: usize,
    count_include_pad: bool,
    divisor_override: Option<usize>,
) -> (usize, [std::ops::Range<usize>; 2]) {
    let clip = |o: usize, axis: usize, len: usize| {
        let (k, s, p) = (g.kernel[axis], g.stride[axis], g.padding[axis]);
        let start = (o * s) as isize - p as isize;
        let end_padded = (start + k as isize).min((len + p) as isize);
        let pad_span = (end_padded - start) as usize;
        let (a, b) = (
            start.max(0) as usize,
            end_padded.min(len as isize).max(0) as usize,
        );
        (pad_span, a..b.max(a))
    };
    let (ph, ry) = clip(oy, 0, g.input[2]);
    let (pw, rx) = clip(ox, 1, g.input[3]);
    let divisor = match divisor_override {
        Some(d) => d,
        None if count_include_pad => ph * pw,
        None => ry.len() * rx.len(),
    };
    (divisor, [ry, rx])
}

/// Average pooling (no dilation): the sum over each window divided by
/// [`avg_pool_window`]'s divisor; a window entirely in the padding gives 0.
pub fn avg_pool2d(
    x: &[f32],
    g: &PoolGeometry,
    count_include_pad: bool,
    divisor_override: Option<usize>,
) -> Result<Vec<f32>> {
    let [n, c, h, w] = g.input;
    check_len("avg_pool2d input", x.len(), n * c * h * w)?;
    let mut out = Vec::with_capacity(g.output_len());
    for plane in x.chunks_exact(h * w) {
        for oy in 0..g.output[0] {
            for ox in 0..g.output[1] {
                let (div, [ry, rx]) =
                    avg_pool_window(g, oy, ox, count_include_pad, divisor_override);
                if ry.is_empty() || rx.is_empty() || div == 0 {
                    out.push(0.0);
                    continue;
                }
                let sum: f64 = ry
                    .flat_map(|y| rx.clone().map(move |xx| plane[y * w + xx] as f64))
                    .sum();
                out.push((sum / div as f64) as f32);
            }
        }
    }
    Ok(out)
}

/// The input range adaptive pooling averages for output `o` of `out` over `len` inputs:
/// `floor(o*len/out) .. ceil((o+1)*len/out)`.
pub fn adaptive_range(o: usize, out: usize, len: usize) -> std::ops::Range<usize> {
    (o * len / out)..((o + 1) * len).div_ceil(out)
}

/// Adaptive average pooling of NCHW `input` to `output` (height, width): each output the f64
/// sum of its window in row-major order (from −0.0, as `Iterator::sum`), divided by the
/// window's size, rounded to f32.
pub fn adaptive_avg_pool2d(x: &[f32], input: [usize; 4], output: [usize; 2]) -> Result<Vec<f32>> {
    let [n, c, h, w] = input;
    check_len("adaptive_avg_pool2d input", x.len(), n * c * h * w)?;
    let hw = h * w;
    if output != [1, 1] || hw == 0 {
        return Ok(adaptive_windows(x, input, output));
    }
    // Global pooling: sixteen planes at a time, each plane's sum in its own order (the same
    // bits as the windows), so sixteen independent chains of adds instead of one waiting on
    // each add (1280 planes of 7x7, one thread: 33 µs; eight at a time 22, sixteen 16).
    const PLANES: usize = 16;
    let mut out = Vec::with_capacity(n * c);
    let mut groups = x.chunks_exact(PLANES * hw);
    for g in &mut groups {
        let planes: [&[f32]; PLANES] = std::array::from_fn(|k| &g[k * hw..(k + 1) * hw]);
        let mut acc = [-0.0f64; PLANES];
        for i in 0..hw {
            for (acc, plane) in acc.iter_mut().zip(&planes) {
                *acc += plane[i] as f64;
            }
        }
        out.extend(acc.iter().map(|&s| (s / hw as f64) as f32));
    }
    for plane in groups.remainder().chunks_exact(hw) {
        let sum: f64 = plane.iter().map(|&v| v as f64).sum();
        out.push((sum / hw as f64) as f32);
    }
    Ok(out)
}

/// [`adaptive_avg_pool2d`] window by window (`x` already checked).
fn adaptive_windows(x: &[f32], input: [usize; 4], output: [usize; 2]) -> Vec<f32> {
    let [n, c, h, w] = input;
    let mut out = Vec::with_capacity(n * c * output[0] * output[1]);
    for plane in x.chunks_exact(h * w) {
        for oy in 0..output[0] {
            for ox in 0..output[1] {
                let (ry, rx) = (
                    adaptive_range(oy, output[0], h),
                    adaptive_range(ox, output[1], w),
                );
                let count = ry.len() * rx.len();
                let sum: f64 = ry
                    .flat_map(|y| rx.clone().map(move |xx| plane[y * w + xx] as f64))
                    .sum();
                out.push((sum / count as f64) as f32);
            }
        }
    }
    out
}

/// Concatenation along `axis` of tensors whose dims agree elsewhere: `outer` is the product of
/// the dims before `axis`, and each input contributes its `inner = dims[axis..].product()`
/// elements per outer index.
pub fn concat<T: Copy>(inputs: &[&[T]], inner: &[usize], outer: usize) -> Result<Vec<T>> {
    if inputs.len() != inner.len() {
        return Err(Error::Shape(format!(
            "concat: {} inputs but {} inner sizes",
            inputs.len(),
            inner.len()
        )));
    }
    for (i, (x, &n)) in inputs.iter().zip(inner).enumerate() {
        check_len(&format!("concat input {i}"), x.len(), outer * n)?;
    }
    let mut out = Vec::with_capacity(inputs.iter().map(|x| x.len()).sum());
    for o in 0..outer {
        for (x, &n) in inputs.iter().zip(inner) {
            out.extend_from_slice(&x[o * n..(o + 1) * n]);
        }
    }
    Ok(out)
}

/// `sum_i a[i] * b[i]` in f64: eight partial sums of the products `i ≡ k (mod 8)` in input
/// order, added in order, then the remaining products. Eight independent chains vectorize
/// (one chain in input order waited on each add: the float classifier of a MobileNetV2,
/// 1000 × 1280, took 8% of the model's run); every product is exact in f64, so only the
/// order of f64 additions changes, far below an f32 ulp of the result.
pub fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    dot_rows_f64(Isa::detect(), &a[..n], [&b[..n]])[0]
}

/// [`dot_f64`] of `a` with each of `R` rows as long as `a`: the same operations in the same
/// order per row (the same bits), the rows' chains interleaved. One row's eight partial sums
/// are one vector of f64, one chain of dependent adds; `R` rows give `R` independent chains
/// and read `a` once (the lane sums in the CPU's vectors: `cpu::fast::dot_lanes_f64`).
fn dot_rows_f64<const R: usize>(isa: Isa, a: &[f32], rows: [&[f32]; R]) -> [f64; R] {
    let (n, body) = (a.len(), a.len() / 8 * 8);
    let acc = crate::cpu::fast::dot_lanes_f64(isa, a, rows);
    let mut out = [0f64; R];
    for ((o, acc), row) in out.iter_mut().zip(&acc).zip(&rows) {
        let tail: f64 = a[body..]
            .iter()
            .zip(&row[body..n])
            .map(|(&x, &y)| x as f64 * y as f64)
            .sum();
        *o = acc.iter().sum::<f64>() + tail;
    }
    out
}

/// `y[n][o] = sum_i x[n][i] * w[o][i] + b[o]` for `x` of shape `[batch, in]`, `w` of
/// `[out, in]`, each sum in f64 ([`dot_f64`]'s bits, `ROWS` outputs at a time). Called on a
/// worker of a thread pool (a model run, `cpu::fast::on_pool`) with 2^18 multiply-adds or
/// more, the outputs are split across the pool's threads (each computed as on one thread: the
/// same values).
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    batch: usize,
    out: usize,
) -> Result<Vec<f32>> {
    if out == 0 || w.is_empty() || !w.len().is_multiple_of(out) {
        return Err(Error::Shape(format!(
            "linear weight has {} elements, not a non-zero multiple of {out} outputs",
            w.len()
        )));
    }
    let inp = w.len() / out;
    check_len("linear input", x.len(), batch * inp)?;
    if let Some(b) = bias {
        check_len("linear bias", b.len(), out)?;
    }
    let job = |start: usize| LinearJob {
        isa: Isa::detect(),
        x,
        w,
        bias,
        inp,
        out,
        start,
    };
    let mut y = vec![0f32; batch * out];
    let on_worker = rayon::current_thread_index().is_some() && rayon::current_num_threads() > 1;
    if on_worker && batch * w.len() >= 1 << 18 {
        use rayon::prelude::*;
        const CHUNK: usize = 64;
        y.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, y)| linear_block(&job(c * CHUNK), y));
    } else {
        linear_block(&job(0), &mut y);
    }
    Ok(y)
}

/// The operands of [`linear_block`].
#[derive(Clone, Copy)]
struct LinearJob<'a> {
    /// The vectors of the lane sums (`cpu::fast::dot_lanes_f64`).
    isa: Isa,
    x: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    inp: usize,
    out: usize,
    /// The flat index (in `[batch, out]`) of the block's first output.
    start: usize,
}

/// Rows of `w` that [`linear_block`] multiplies with one input row at a time (one
/// run, the 1000 × 1280 classifier, AVX-512: 4 rows 181 µs, 8 rows 120, 16 rows 106; AVX2
/// 180, 167, 129: more loads in flight).
const ROWS: usize = 16;

/// Outputs `start..start + y.len()` of [`linear`]'s flat `[batch, out]` result, [`ROWS`] at
/// a time where that many rows of `w` meet the same input row.
fn linear_block(job: &LinearJob, y: &mut [f32]) {
    let LinearJob {
        isa,
        x,
        w,
        bias,
        inp,
        out,
        start,
    } = *job;
    let b = |o: usize| bias.map_or(0.0, |b| b[o] as f64);
    let row = |o: usize| &w[o * inp..][..inp];
    let mut i = 0;
    while i < y.len() {
        let (n, o) = ((start + i) / out, (start + i) % out);
        let xr = &x[n * inp..][..inp];
        if i + ROWS <= y.len() && o + ROWS <= out {
            let d = dot_rows_f64(isa, xr, std::array::from_fn::<_, ROWS, _>(|k| row(o + k)));
            for (k, d) in d.into_iter().enumerate() {
                y[i + k] = (d + b(o + k)) as f32;
            }
            i += ROWS;
        } else {
            y[i] = (dot_rows_f64(isa, xr, [row(o)])[0] + b(o)) as f32;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::linear;
    use crate::cpu::fast::Isa;

    /// A linear large enough to split across a pool's threads gives, bit for bit, the values
    /// of one thread; every output here (random data) equals the f64 sum in input order
    /// rounded to f32, which the eight partial sums of `dot_f64` reorder.
    #[test]
    fn linear_split_across_a_pool_equals_one_thread_bit_for_bit() {
        // (Outputs not a multiple of four, inputs not a multiple of eight.)
        let (batch, inp, out) = (2, 701, 203);
        let mut rng = crate::rng::Rng::new(3);
        let x = rng.normal_vec(batch * inp, 1.0);
        let w = rng.normal_vec(out * inp, 0.1);
        let b = rng.normal_vec(out, 0.1);
        let one = linear(&x, &w, Some(&b), batch, out).unwrap();
        let pooled =
            crate::cpu::fast::on_pool(Some(2), || linear(&x, &w, Some(&b), batch, out).unwrap());
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&pooled), bits(&one));
        for (i, &y) in one.iter().enumerate() {
            let (n, o) = (i / out, i % out);
            let dot: f64 = (0..inp)
                .map(|k| x[n * inp + k] as f64 * w[o * inp + k] as f64)
                .sum();
            assert_eq!(y, (dot + b[o] as f64) as f32, "output {i}");
            // Blocks of rows (and the single rows of the tail), the bits of the documented
            // order.
            let row = (&x[n * inp..][..inp], &w[o * inp..][..inp]);
            let want = (eight_sums(row.0, row.1) + b[o] as f64) as f32;
            assert_eq!(y.to_bits(), want.to_bits(), "output {i}");
        }
    }

    /// Global average pooling, sixteen planes at a time, gives the bits of the window-by-window
    /// loop (plane counts around multiples of sixteen, signed zeros, large and tiny values
    /// whose order of addition matters).
    #[test]
    fn global_average_pool_gives_the_bits_of_the_window_loop() {
        let mut rng = crate::rng::Rng::new(5);
        for (n, c, h, w) in [(1, 17, 7, 7), (2, 8, 3, 5), (1, 3, 1, 1), (1, 33, 2, 2)] {
            let mut x = rng.normal_vec(n * c * h * w, 1.0);
            for (i, v) in x.iter_mut().enumerate() {
                *v *= [1.0, 1e8, 1e-8, -3.0][i % 4];
            }
            // One plane of negative zeros (its sum is −0.0).
            x[..h * w].fill(-0.0);
            let dims = [n, c, h, w];
            let got = super::adaptive_avg_pool2d(&x, dims, [1, 1]).unwrap();
            let want = super::adaptive_windows(&x, dims, [1, 1]);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{dims:?}");
        }
    }

    /// `dot_f64`'s order, one product at a time: eight partial sums of the products
    /// `i ≡ k (mod 8)` in input order, added in order, then the remaining products.
    fn eight_sums(a: &[f32], b: &[f32]) -> f64 {
        let body = a.len() / 8 * 8;
        let mut acc = [0f64; 8];
        for i in 0..body {
            acc[i % 8] += a[i] as f64 * b[i] as f64;
        }
        let tail: f64 = (body..a.len()).map(|i| a[i] as f64 * b[i] as f64).sum();
        acc.iter().sum::<f64>() + tail
    }

    /// The vectorized lane sums of every ISA path, one row or sixteen at a time, give the bits
    /// of the scalar order (random products: another order of the f64 additions changes the
    /// last bits of most sums).
    #[test]
    fn dot_rows_give_the_bits_of_the_scalar_order_on_every_isa() {
        let mut rng = crate::rng::Rng::new(11);
        for len in [0, 7, 8, 9, 64, 701] {
            let a = rng.normal_vec(len, 1.0);
            let rows: Vec<Vec<f32>> = (0..16).map(|_| rng.normal_vec(len, 0.1)).collect();
            let want: Vec<u64> = rows.iter().map(|r| eight_sums(&a, r).to_bits()).collect();
            for isa in Isa::available() {
                let one = super::dot_rows_f64(isa, &a, [&rows[3][..]]);
                assert_eq!(one[0].to_bits(), want[3], "{isa}, length {len}");
                let all =
                    super::dot_rows_f64(isa, &a, std::array::from_fn::<_, 16, _>(|r| &rows[r][..]));
                let got: Vec<u64> = all.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{isa}, length {len}");
            }
        }
    }
}
