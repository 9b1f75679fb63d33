//! `torch.sum` of a contiguous float32 vector, in PyTorch's exact summation order.
//!
//! PyTorch's CPU sum (`cascade_sum` in `aten/src/ATen/native/cpu/SumKernel.cpp`) accumulates in
//! float32 (the op-math type of float), so the *order* of the additions decides the last bits.
//! The histogram observer feeds two such sums into comparisons (`total` of the histogram and
//! the L2 error of each candidate range), so squint reproduces the order:
//!
//! ```text
//! x is read as V = n / L vectors of L lanes (L = 16 with PyTorch's AVX-512 kernels), plus a
//! scalar tail of n - V*L values.
//! row_sum(V vectors):      rows of 4 vectors (ilp factor 4), R = V / 4 rows
//!   multi_row_sum(R rows): 4 levels of accumulators acc[level][k] (k = vector within the row),
//!                          p = max(4, ceil_log2(R) / 4); every 2^p rows acc[0] is added into
//!                          acc[1] (and on up while the row counter is a multiple of 2^(j*p)),
//!                          leftover rows go into acc[0], then acc[0] += acc[1] + acc[2] + acc[3]
//!   leftover vectors (V mod 4) are added to acc[0][0]; then s = ((a0 + a1) + a2) + a3, lane-wise
//! total = ((0 + tail values in order) + s[0]) + s[1] + ... + s[L-1]
//! ```
//!
//! Vectors shorter than `L` take the scalar path: the same `row_sum` with one-lane "vectors".
//! Every `+` is a float32 addition.

/// Lanes of PyTorch's `Vectorized<float>` on the AVX-512 machine the golden vectors came from.
pub const LANES: usize = 16;

const ILP: usize = 4;
const LEVELS: usize = 4;

/// `c10::CeilLog2` as used by the sum kernel (`x <= 2` gives 1).
fn ceil_log2(x: usize) -> u32 {
    if x <= 2 {
        1
    } else {
        usize::BITS - (x - 1).leading_zeros()
    }
}

#[inline]
fn add_into<const N: usize>(acc: &mut [f32; N], v: &[f32; N]) {
    for (a, b) in acc.iter_mut().zip(v) {
        *a += *b;
    }
}

/// `multi_row_sum<acc, 4>`: the cascade over `rows` rows of 4 "vectors" of `N` lanes each.
fn multi_row_sum<const N: usize>(
    load: &impl Fn(usize) -> [f32; N],
    rows: usize,
) -> [[f32; N]; ILP] {
    let level_power = 4u32.max(ceil_log2(rows) / LEVELS as u32);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = [[[0.0f32; N]; ILP]; LEVELS];
    let mut i = 0usize;
    while i + level_step <= rows {
        for _ in 0..level_step {
            for (k, a) in acc[0].iter_mut().enumerate() {
                add_into(a, &load(i * ILP + k));
            }
            i += 1;
        }
        for j in 1..LEVELS {
            let (lower, upper) = acc.split_at_mut(j);
            for (lo, up) in lower[j - 1].iter_mut().zip(upper[0].iter_mut()) {
                add_into(up, lo);
                *lo = [0.0; N];
            }
            let mask = level_mask << (j as u32 * level_power);
            if i & mask != 0 {
                break;
            }
        }
    }
    while i < rows {
        for (k, a) in acc[0].iter_mut().enumerate() {
            add_into(a, &load(i * ILP + k));
        }
        i += 1;
    }
    let (first, rest) = acc.split_at_mut(1);
    for level in rest.iter() {
        for (a, u) in first[0].iter_mut().zip(level) {
            add_into(a, u);
        }
    }
    acc[0]
}

/// `row_sum<acc>`: sums `size` "vectors" of `N` lanes.
fn row_sum<const N: usize>(load: &impl Fn(usize) -> [f32; N], size: usize) -> [f32; N] {
    let rows = size / ILP;
    let mut partial = multi_row_sum(load, rows);
    for i in rows * ILP..size {
        add_into(&mut partial[0], &load(i));
    }
    let mut s = partial[0];
    for p in &partial[1..] {
        add_into(&mut s, p);
    }
    s
}

/// `torch.sum(x)` for a contiguous float32 vector, bit-exact with PyTorch's CPU kernel
/// (single thread, AVX-512 dispatch).
pub fn torch_sum_f32(x: &[f32]) -> f32 {
    let n = x.len();
    if n < LANES {
        let [s] = row_sum(&|i: usize| [x[i]], n);
        return s;
    }
    let vectors = n / LANES;
    let lanes = row_sum(
        &|i: usize| -> [f32; LANES] {
            x[i * LANES..(i + 1) * LANES]
                .try_into()
                .expect("slice of LANES values")
        },
        vectors,
    );
    let mut acc = 0.0f32;
    for &v in &x[vectors * LANES..] {
        acc += v;
    }
    for v in lanes {
        acc += v;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_for_integers() {
        let x: Vec<f32> = (0..2048).map(|i| (i % 7) as f32).collect();
        let expect: f64 = x.iter().map(|&v| v as f64).sum();
        assert_eq!(torch_sum_f32(&x) as f64, expect);
        for n in [0usize, 1, 5, 15, 16, 17, 63, 64, 65, 1000, 4099] {
            let x: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
            let expect: f64 = x.iter().map(|&v| v as f64).sum();
            assert_eq!(torch_sum_f32(&x) as f64, expect, "n = {n}");
        }
    }

    #[test]
    fn order_is_not_sequential() {
        // 1 followed by many tiny values: a sequential float32 sum loses every tiny value,
        // the lane-wise cascade keeps them (they add up in separate accumulators first).
        let mut x = vec![2.0f32.powi(-24); 2048];
        x[0] = 1.0;
        let sequential = x.iter().fold(0.0f32, |a, &v| a + v);
        assert_eq!(sequential, 1.0);
        assert!(torch_sum_f32(&x) > 1.0);
    }
}
