//! Unit tests of the GPU backend's building blocks: the integer-emulated float and fixed-point
//! arithmetic of `shaders/common.wgsl` against the CPU (Rust's IEEE f32 and
//! `crate::quant::fixed_point`), and the splitting planner. The end-to-end sweeps are in
//! `tests/gpu_sweep.rs` and `tests/gpu_ops.rs`.

use super::buffers::{read_back, storage_buffer, storage_buffer_init, Slot};
use super::kernels::{Kernel, TestParams};
use super::split::plan;
use super::*;
use crate::quant::{rounding_divide_by_pot, saturating_rounding_doubling_high_mul};

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn u32(&mut self) -> u32 {
        self.next() as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % n as u64) as u32
    }
}

fn contexts() -> Vec<GpuContext> {
    testing::contexts()
}

/// Result words per operand pair of `softfloat_test.wgsl`.
const WORDS: usize = 9;

fn run_test_kernel(ctx: &GpuContext, pairs: &[(u32, u32)]) -> Vec<[u32; WORDS]> {
    let flat: Vec<u32> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    let total = pairs.len() as u64;
    let split = ctx.split();
    let out = ctx
        .scoped("softfloat test", || {
            let pipe = ctx.pipeline(Kernel::SoftFloatTest, &[])?;
            let inb = storage_buffer_init(ctx, bytemuck::cast_slice(&flat), "test in")?;
            let out = storage_buffer(ctx, total * 4 * WORDS as u64, "test out")?;
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            let chunks = plan(split, total, 64, "test", &|_, e| {
                vec![(0, e * 8), (0, e * 4 * WORDS as u64)]
            })?;
            for (b, e) in chunks {
                let p = TestParams {
                    item_begin: b as u32,
                    item_count: (e - b) as u32,
                    _pad: [0; 2],
                };
                let slots = vec![
                    Slot::new(split, &inb, 0, e * 8),
                    Slot::new(split, &out, 0, e * 4 * WORDS as u64),
                ];
                buffers::dispatch(
                    ctx,
                    &mut enc,
                    &pipe,
                    bytemuck::bytes_of(&p),
                    slots,
                    buffers::groups_for(e - b),
                )?;
            }
            ctx.queue().submit([enc.finish()]);
            Ok(out)
        })
        .unwrap();
    let bytes = read_back(ctx, &out, total * 4 * WORDS as u64).unwrap();
    bytemuck::cast_slice::<u8, u32>(&bytes)
        .chunks_exact(WORDS)
        .map(|c| c.try_into().unwrap())
        .collect()
}

fn special_f32() -> Vec<u32> {
    let mut v: Vec<u32> = vec![
        0,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        1,
        0x8000_0001,
        0x007f_ffff,
        0x0080_0000,
        0x0080_0001,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x3f80_0000,
        0x3f00_0000,
        0xbf00_0000,
        0x3fc0_0000,
        0x4020_0000,
        0xc020_0000,
        0x4e6e_6b28,
        0x4e6e_6b27,
        0x4e6e_6b29,
        0xce6e_6b28,
        0x4b00_0000,
        0x4b00_0001,
        0x4affffff,
        0x3effffff,
        0x3f000001,
        0x0040_0000,
    ];
    for x in [
        0.5f32,
        1.5,
        2.5,
        3.5,
        -0.5,
        -1.5,
        -2.5,
        1e-38,
        1e38,
        3.0e38,
        1.0 / 3.0,
        0.1,
        255.5,
        -128.5,
        8388607.5,
        16777216.0,
        16777217.0,
        1e9,
        -1e9,
        2.1e9,
        1e-45,
        6e-39,
    ] {
        v.push(x.to_bits());
    }
    v
}

fn special_i32() -> Vec<u32> {
    let mut v = vec![
        0u32,
        1,
        u32::MAX,
        i32::MIN as u32,
        i32::MAX as u32,
        (i32::MIN + 1) as u32,
        1 << 24,
        (1 << 24) + 1,
        (1 << 24) + 3,
        (-(1i32 << 24) - 1) as u32,
        1 << 30,
        (1 << 30) + 1,
        (-(1i32 << 30)) as u32,
        0x7fff_ff80,
        0x7fff_ffc0,
        0x7fff_ffbf,
    ];
    for s in 25..31 {
        v.push((1u32 << s) + (1 << (s - 24)));
        v.push((1u32 << s) + 3 * (1 << (s - 25)));
        v.push(((1i32 << s) + (1 << (s - 25))).wrapping_neg() as u32);
    }
    v
}

/// Random floats spread over all exponents, with partners of nearby exponents (so additions
/// really round), plus the special values.
fn float_pairs(rng: &mut SplitMix, n: usize) -> Vec<(u32, u32)> {
    let sp = special_f32();
    let mut pairs = Vec::new();
    for &a in &sp {
        for &b in &sp {
            pairs.push((a, b));
        }
    }
    while pairs.len() < n {
        let a = rng.u32();
        let b = match rng.below(5) {
            0 => rng.u32(),
            1 => {
                // Nearby exponent, random sign and mantissa.
                let e = ((a >> 23) & 0xff) as i32 + rng.below(60) as i32 - 30;
                let e = e.clamp(0, 254) as u32;
                (rng.u32() & 0x807f_ffff) | (e << 23)
            }
            2 => {
                // Product lands near the subnormal range.
                let e = 254u32.saturating_sub((a >> 23) & 0xff).min(254);
                (rng.u32() & 0x807f_ffff) | (e.saturating_sub(rng.below(40)) << 23)
            }
            3 => {
                // Quotient lands near the subnormal range (or overflows).
                let e = ((a >> 23) & 0xff) + 100 + rng.below(50);
                let e = if rng.below(2) == 0 {
                    e.min(254)
                } else {
                    (e - 100).saturating_sub(130)
                };
                (rng.u32() & 0x807f_ffff) | (e.min(254) << 23)
            }
            _ => sp[rng.below(sp.len() as u32) as usize],
        };
        pairs.push((a, b));
    }
    pairs
}

fn same_f32(got: u32, want: f32) -> bool {
    if want.is_nan() {
        f32::from_bits(got).is_nan()
    } else {
        got == want.to_bits()
    }
}

#[test]
fn soft_float_and_fixed_point_match_the_cpu() {
    let mut rng = SplitMix(0x5eed_0001);
    let mut pairs = float_pairs(&mut rng, 200_000);
    let si = special_i32();
    for &a in &si {
        for &b in &si {
            pairs.push((a, b));
        }
        for _ in 0..40 {
            pairs.push((a, rng.u32()));
            pairs.push((rng.u32(), a));
        }
    }
    for _ in 0..20_000 {
        // Small-magnitude ints with Q0.31-like multipliers.
        let a = (rng.u32() >> rng.below(31)) as i32;
        let a = if rng.below(2) == 0 {
            a
        } else {
            a.wrapping_neg()
        };
        pairs.push((a as u32, (1u32 << 30) | (rng.u32() >> 2)));
    }
    for ctx in contexts() {
        let name = ctx.adapter_report().summary();
        let res = run_test_kernel(&ctx, &pairs);
        let mut bad = 0;
        for (&(a, b), r) in pairs.iter().zip(&res) {
            let (fa, fb) = (f32::from_bits(a), f32::from_bits(b));
            let (ia, ib) = (a as i32, b as i32);
            let want_round = fa.round_ties_even().clamp(-1.0e9, 1.0e9) as i32;
            let checks = [
                ("mul", same_f32(r[0], fa * fb), r[0], (fa * fb).to_bits()),
                ("add", same_f32(r[1], fa + fb), r[1], (fa + fb).to_bits()),
                (
                    "from_i32",
                    r[2] == (ia as f32).to_bits(),
                    r[2],
                    (ia as f32).to_bits(),
                ),
                ("round", r[3] as i32 == want_round, r[3], want_round as u32),
                (
                    "srdhm",
                    r[4] as i32 == saturating_rounding_doubling_high_mul(ia, ib),
                    r[4],
                    saturating_rounding_doubling_high_mul(ia, ib) as u32,
                ),
                (
                    "rdbpot",
                    r[5] as i32 == rounding_divide_by_pot(ia, (b & 31) as i32),
                    r[5],
                    rounding_divide_by_pot(ia, (b & 31) as i32) as u32,
                ),
                (
                    "sat_add",
                    r[6] as i32 == ia.saturating_add(ib),
                    r[6],
                    ia.saturating_add(ib) as u32,
                ),
                (
                    "mul_lo",
                    r[7] == (a as u64 * b as u64) as u32,
                    r[7],
                    (a as u64 * b as u64) as u32,
                ),
                ("div", same_f32(r[8], fa / fb), r[8], (fa / fb).to_bits()),
            ];
            for (op, ok, got, want) in checks {
                if !ok {
                    bad += 1;
                    if bad <= 20 {
                        eprintln!(
                            "{name}: {op}({a:#010x}, {b:#010x}) = {got:#010x}, want {want:#010x}"
                        );
                    }
                }
            }
        }
        assert_eq!(
            bad, 0,
            "{name}: {bad} mismatches of the emulated arithmetic"
        );
        eprintln!("{name}: {} operand pairs exact", pairs.len());
    }
}

#[test]
fn planner_respects_binding_and_dispatch_limits() {
    let split = super::split::SplitLimits {
        max_binding: 1024,
        max_workgroups: 2,
        align: 256,
        max_buffer: 1 << 30,
    };
    // 4 bytes per item, linear: 1024-byte windows hold at most 256 items (fewer when the
    // window start is not aligned); a dispatch holds 2*2*64 = 256 items.
    let chunks = plan(split, 10_000, 64, "t", &|b, e| {
        vec![(b * 4 + 100, e * 4 + 100)]
    })
    .unwrap();
    assert_eq!(chunks.first().unwrap().0, 0);
    assert_eq!(chunks.last().unwrap().1, 10_000);
    for w in chunks.windows(2) {
        assert_eq!(w[0].1, w[1].0);
    }
    for &(b, e) in &chunks {
        assert!(e - b <= 256);
        assert!(split.window(b * 4 + 100, e * 4 + 100).1 <= 1024);
    }
    // A single item needing more than a binding is a device-limit error.
    let err = plan(split, 4, 64, "t", &|_, _| vec![(0, 4096)]).unwrap_err();
    assert!(matches!(err, crate::Error::DeviceLimit(_)), "{err}");
}

#[test]
fn backend_names_parse() {
    for b in BackendChoice::ALL {
        assert_eq!(BackendChoice::parse(b.name()).unwrap(), b);
    }
    assert_eq!(BackendChoice::parse("VK").unwrap(), BackendChoice::Vulkan);
    assert_eq!(BackendChoice::parse("opengl").unwrap(), BackendChoice::Gl);
    assert!(BackendChoice::parse("cuda").is_err());
}

/// `squint bench`'s GPU peaks: on every adapter the f32 `fma` loop, and the `dot4I8Packed` loop
/// where the language feature exists, measure a positive, finite throughput; without the
/// feature the `dot4I8Packed` loop is a typed error.
#[test]
fn peak_loops_run_on_every_adapter() {
    for ctx in contexts() {
        let name = ctx.adapter_report().summary();
        let t = std::time::Duration::from_millis(2);
        let fma = ctx.peak_gops(GpuPeak::FmaF32, t).unwrap();
        assert!(fma.is_finite() && fma > 0.0, "{name}: {fma}");
        match ctx.peak_gops(GpuPeak::Dot4I8, t) {
            Ok(g) => {
                assert!(ctx.adapter_report().packed_int8_dot_product, "{name}");
                assert!(g.is_finite() && g > 0.0, "{name}: {g}");
            }
            Err(e) => {
                assert!(!ctx.adapter_report().packed_int8_dot_product, "{name}: {e}");
                assert!(matches!(e, crate::Error::InvalidParameter(_)), "{e:?}");
            }
        }
    }
}
