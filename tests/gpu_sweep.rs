//! Seeded randomized sweeps: every GPU kernel against the CPU reference, byte for byte, on
//! every adapter this process can open (on a machine without a GPU: lavapipe through Vulkan
//! and llvmpipe through GL).
//!
//! With no adapter the tests print why and pass, unless `SQUINT_REQUIRE_GPU=1`, which makes
//! them fail with the `NoAdapter` message.

mod common;

use common::{gpu_contexts, variants, Rng};
use std::time::Instant;

use squint::cpu::reference;
use squint::gpu;
use squint::quant::{
    dequantize_slice, quantize_slice, Epilogue, QDtype, QParams, QScheme, RequantFormula,
    WeightQParams,
};
use squint::shape::{ConvParams, ConvShape};

fn dtype(rng: &mut Rng) -> QDtype {
    if rng.coin(0.5) {
        QDtype::QUInt8
    } else {
        QDtype::QInt8
    }
}

fn random_zp(rng: &mut Rng, d: QDtype) -> i32 {
    let r = d.full_range();
    rng.range(r.min as i64, r.max as i64) as i32
}

/// A power of two 2^-e, so that products of scales are exact and `acc * M` lands on .5 ties.
fn pow2(e: i32) -> f32 {
    2f32.powi(-e)
}

struct ConvCase {
    desc: String,
    s: ConvShape,
    x: Vec<u8>,
    x_qp: QParams,
    w: Vec<i8>,
    w_qp: WeightQParams,
    bias: Option<Vec<f32>>,
    out: QParams,
    relu: bool,
}

fn conv_case(rng: &mut Rng, idx: usize) -> ConvCase {
    loop {
        let kh = rng.usize(1, 7);
        let kw = if rng.coin(0.7) { kh } else { rng.usize(1, 7) };
        let stride = [rng.usize(1, 3), rng.usize(1, 3)];
        let padding = [rng.usize(0, 3), rng.usize(0, 3)];
        let dilation = if rng.coin(0.6) {
            [1, 1]
        } else {
            [rng.usize(1, 3), rng.usize(1, 3)]
        };
        let kind = rng.usize(0, 2);
        let (groups, cig, cog) = match kind {
            0 => (1, rng.usize(1, 9), rng.usize(1, 13)),
            1 => (rng.usize(2, 4), rng.usize(1, 5), rng.usize(1, 9)),
            _ => {
                // Depthwise (channel multiplier 1 or 2).
                let c = rng.usize(1, 12);
                (c, 1, rng.usize(1, 2))
            }
        };
        let (c_in, c_out) = (groups * cig, groups * cog);
        let n = rng.usize(1, 3);
        let span_h = dilation[0] * (kh - 1) + 1;
        let span_w = dilation[1] * (kw - 1) + 1;
        let h = span_h.saturating_sub(2 * padding[0]).max(1) + rng.usize(0, 9);
        let wd = span_w.saturating_sub(2 * padding[1]).max(1) + rng.usize(0, 9);
        let params = ConvParams {
            stride,
            padding,
            dilation,
            groups,
        };
        let Ok(s) = ConvShape::new([n, c_in, h, wd], [c_out, cig, kh, kw], params) else {
            continue;
        };
        let xd = dtype(rng);
        let ties = rng.coin(0.5);
        let (sx, sw_base, sy) = if ties {
            // Powers of two with M = sx*sw/sy = 2^-(1..4): many exact .5 ties.
            let (sx, sw) = (pow2(rng.range(2, 8) as i32), pow2(rng.range(4, 9) as i32));
            (sx, sw, sx * sw * pow2(-(rng.range(1, 4) as i32)))
        } else {
            (
                0.002 + rng.unit() * 0.05,
                0.001 + rng.unit() * 0.02,
                0.01 + rng.unit() * 0.3,
            )
        };
        let x_qp = QParams::new(sx, random_zp(rng, xd), xd).unwrap();
        let scheme = rng.pick(&[
            QScheme::PerTensorSymmetric,
            QScheme::PerTensorAffine,
            QScheme::PerChannelSymmetric,
            QScheme::PerChannelAffine,
        ]);
        let w_qp = if scheme.is_per_channel() {
            WeightQParams {
                scheme,
                scales: (0..c_out)
                    .map(|_| {
                        if ties {
                            sw_base * pow2(rng.range(-1, 1) as i32)
                        } else {
                            0.001 + rng.unit() * 0.02
                        }
                    })
                    .collect(),
                zero_points: (0..c_out)
                    .map(|_| {
                        if scheme == QScheme::PerChannelAffine {
                            rng.range(-12, 12) as i32
                        } else {
                            0
                        }
                    })
                    .collect(),
            }
        } else {
            let zp = if scheme == QScheme::PerTensorAffine {
                rng.range(-20, 20) as i32
            } else {
                0
            };
            WeightQParams::per_tensor(scheme, sw_base, zp)
        };
        let od = dtype(rng);
        let out = QParams::new(sy, random_zp(rng, od), od).unwrap();
        let bias = rng.coin(0.6).then(|| {
            (0..c_out)
                .map(|_| {
                    if ties && rng.coin(0.5) {
                        // Multiples of sx*sw/2: exact in every formula, and on ties.
                        rng.range(-400, 400) as f32 * 0.5 * sx * sw_base
                    } else {
                        (rng.unit() - 0.5) * 2.0
                    }
                })
                .collect()
        });
        let relu = rng.coin(0.4);
        let x = (0..s.input_len()).map(|_| rng.next() as u8).collect();
        // Small weights keep many outputs inside the 8-bit range (not clamped).
        let amp = rng.pick(&[127i64, 31, 7, 2]);
        let w = (0..s.weight_len())
            .map(|_| rng.range(-amp, amp) as i8)
            .collect();
        let desc = format!(
            "case #{idx}: x [{n},{c_in},{h},{wd}] {xd} zp {} scale {sx:e}, w [{c_out},{cig},{kh},{kw}] \
             {} zp {:?}, stride {stride:?} padding {padding:?} dilation {dilation:?} groups \
             {groups}, out {od} zp {} scale {sy:e}, bias {}, relu {relu}, ties {ties}",
            x_qp.zero_point,
            scheme.name(),
            &w_qp.zero_points[..w_qp.zero_points.len().min(4)],
            out.zero_point,
            bias.is_some(),
        );
        return ConvCase {
            desc,
            s,
            x,
            x_qp,
            w,
            w_qp,
            bias,
            out,
            relu,
        };
    }
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// The conv sweep's cases in two halves (even and odd case numbers), one test each, so that
/// the test harness runs them on two threads: most of their time is the software adapters'
/// single-threaded pipeline compiles (one per kernel specialization, with a cold shader cache).
const SWEEP_PARTS: usize = 2;

#[test]
fn conv_sweep_even_cases_match_cpu_reference_on_every_adapter() {
    conv_sweep(0);
}

#[test]
fn conv_sweep_odd_cases_match_cpu_reference_on_every_adapter() {
    conv_sweep(1);
}

/// Runs the sweep's cases whose number is `part` modulo [`SWEEP_PARTS`] on every adapter and
/// kernel variant (the cases and their strength checks are those of the whole sweep).
fn conv_sweep(part: usize) {
    let ctxs = gpu_contexts();
    if ctxs.is_empty() {
        return;
    }
    let mut rng = Rng::new(0x5157_1e55_c0de_0001);
    let mut cases: Vec<ConvCase> = (0..150).map(|i| conv_case(&mut rng, i)).collect();
    // Larger ones, sized so that no tile is full: output pixels not a multiple of the
    // workgroup tile (4 x 64) nor of 4, several workgroups per plane, channels not a multiple
    // of the 8-channel block, input channels per group not a multiple of the 16-channel quad;
    // GEMM and depthwise (channel multiplier 1 and 2), strided and dilated.
    let large: [([usize; 4], [usize; 4], ConvParams); 8] = [
        (
            [2, 24, 19, 23],
            [20, 24, 3, 3],
            ConvParams::default().padding(1),
        ),
        (
            [1, 37, 33, 29],
            [19, 37, 3, 3],
            ConvParams::default().padding(1),
        ),
        ([1, 130, 9, 70], [67, 130, 1, 1], ConvParams::default()),
        (
            [2, 20, 40, 23],
            [12, 10, 3, 3],
            ConvParams::default().padding(2).dilation(2).groups(2),
        ),
        (
            [1, 16, 45, 45],
            [24, 16, 3, 3],
            ConvParams::default().stride(2).padding(1),
        ),
        (
            [2, 40, 31, 17],
            [40, 1, 5, 5],
            ConvParams::default().padding(2).groups(40),
        ),
        (
            [1, 24, 35, 30],
            [48, 1, 3, 3],
            ConvParams::default().stride(2).padding(1).groups(24),
        ),
        (
            [1, 9, 61, 3],
            [9, 1, 3, 1],
            ConvParams::default().padding(1).groups(9),
        ),
    ];
    for (i, (xd, wd, p)) in large.into_iter().enumerate() {
        let idx = 150 + i;
        let mut c = conv_case(&mut rng, idx);
        c.s = ConvShape::new(xd, wd, p).unwrap();
        c.x = (0..c.s.input_len()).map(|_| rng.next() as u8).collect();
        c.w = (0..c.s.weight_len())
            .map(|_| rng.range(-31, 31) as i8)
            .collect();
        let o = c.s.c_out;
        if c.w_qp.scales.len() > 1 {
            c.w_qp.scales.resize(o, c.w_qp.scales[0]);
            c.w_qp.zero_points.resize(o, c.w_qp.zero_points[0]);
        }
        c.bias = c.bias.map(|_| (0..o).map(|_| rng.unit() - 0.5).collect());
        c.desc = format!(
            "case #{idx}: x {xd:?} {} zp {}, w {wd:?} {} zp {:?}, {p:?}, out {} zp {}, bias {}, \
             relu {}",
            c.x_qp.dtype,
            c.x_qp.zero_point,
            c.w_qp.scheme.name(),
            &c.w_qp.zero_points[..c.w_qp.zero_points.len().min(4)],
            c.out.dtype,
            c.out.zero_point,
            c.bias.is_some(),
            c.relu
        );
        cases.push(c);
    }
    // CPU reference once per case and formula.
    let mut expected = Vec::new();
    let mut skipped = 0;
    let (mut outputs, mut unclamped, mut disagreements) = (0usize, 0usize, 0usize);
    for c in &cases {
        let mut per = Vec::new();
        for f in RequantFormula::ALL {
            let epi = Epilogue::new(
                f,
                c.x_qp.scale,
                &c.w_qp,
                c.bias.as_deref(),
                c.out,
                c.relu,
                c.s.c_out,
            );
            match epi {
                Ok(epi) => {
                    let y = reference::conv2d_quantized(&c.x, &c.x_qp, &c.w, &c.w_qp, &epi, &c.s)
                        .unwrap_or_else(|e| panic!("CPU reference failed on {}: {e}", c.desc));
                    per.push(Some((epi, y)));
                }
                Err(_) => {
                    // e.g. a fixed-point multiplier out of range: the converter rejects it.
                    skipped += 1;
                    per.push(None);
                }
            }
        }
        // How strong the sweep is: outputs strictly inside the clamp, and outputs where the
        // formulas disagree (they differ only near .5 ties).
        if let Some(Some((epi, y0))) = per.first() {
            outputs += y0.len();
            unclamped += y0
                .iter()
                .filter(|&&b| {
                    let v = epi.out.dtype.byte_to_int(b);
                    v > epi.clamp.min && v < epi.clamp.max
                })
                .count();
            for other in per.iter().skip(1).flatten() {
                assert_eq!(y0.len(), other.1.len(), "{}", c.desc);
                disagreements += y0.iter().zip(&other.1).filter(|(a, b)| a != b).count();
            }
        }
        expected.push(per);
    }
    eprintln!(
        "sweep: {outputs} outputs per formula, {unclamped} strictly inside the clamp, {disagreements} \
         (output, formula) pairs where a formula differs from qnnpack"
    );
    // The sweep's strength, asserted: few (case, formula) pairs without an epilogue, most
    // outputs not clamped, and the formulas' differences reached.
    let pairs = cases.len() * RequantFormula::ALL.len();
    assert!(
        skipped * 10 <= pairs,
        "{skipped} of {pairs} (case, formula) pairs skipped"
    );
    assert!(
        unclamped * 2 >= outputs,
        "only {unclamped} of {outputs} outputs inside the clamp"
    );
    assert!(disagreements > 0, "no output where the formulas differ");
    for base in &ctxs {
        for (vi, (variant, ctx)) in variants(base).into_iter().enumerate() {
            let name = format!("{} [{variant}]", ctx.adapter_report().summary());
            let t = Instant::now();
            let mut runs = 0;
            for (ci, (c, per)) in cases.iter().zip(&expected).enumerate() {
                // The default variant runs every case of the part; the others every third
                // random case and all the large ones (to bound the test time).
                if ci % SWEEP_PARTS != part || (vi > 0 && ci < 150 && ci % 3 != vi % 3) {
                    continue;
                }
                for (f, e) in RequantFormula::ALL.iter().zip(per) {
                    let Some((epi, want)) = e else { continue };
                    let got = gpu::conv2d_quantized(&ctx, &c.x, &c.x_qp, &c.w, &c.w_qp, epi, &c.s)
                        .unwrap_or_else(|e| panic!("formula {f} on {name}: {}: {e}", c.desc));
                    if let Some(i) = first_diff(&got, want) {
                        let plane = c.s.h_out * c.s.w_out;
                        panic!(
                            "formula {f} on {name}: {}: first differing output index {i} \
                             (n {}, c {}, y {}, x {}): gpu {:?} cpu {:?} ({} outputs)",
                            c.desc,
                            i / (plane * c.s.c_out),
                            (i / plane) % c.s.c_out,
                            (i % plane) / c.s.w_out,
                            i % c.s.w_out,
                            got.get(i),
                            want.get(i),
                            want.len()
                        );
                    }
                    runs += 1;
                }
            }
            eprintln!(
                "{name}: {runs} conv runs (part {part} of {SWEEP_PARTS} of {} cases x formulas) \
                 bit-exact in {:.2?}",
                cases.len(),
                t.elapsed()
            );
            // The default variant runs every pair of the part with an epilogue; the others
            // about a third of its random cases and every large one of it.
            let min_runs = if vi == 0 {
                expected
                    .iter()
                    .skip(part)
                    .step_by(SWEEP_PARTS)
                    .map(|per| per.iter().flatten().count())
                    .sum()
            } else {
                (150 / 3 + large.len()) * RequantFormula::ALL.len() * 9 / 10 / SWEEP_PARTS
            };
            assert!(
                runs >= min_runs,
                "{name}: only {runs} conv runs (at least {min_runs})"
            );
        }
    }
}

fn random_epilogue(rng: &mut Rng, f: RequantFormula, channels: usize) -> Option<Epilogue> {
    let ties = rng.coin(0.5);
    let sx = if ties {
        pow2(rng.range(2, 8) as i32)
    } else {
        0.001 + rng.unit() * 0.1
    };
    let sw: Vec<f32> = (0..channels)
        .map(|_| {
            if ties {
                pow2(rng.range(3, 9) as i32)
            } else {
                0.0005 + rng.unit() * 0.02
            }
        })
        .collect();
    let sy = if ties {
        sx * sw[0] * pow2(-(rng.range(0, 5) as i32))
    } else {
        // From tiny to large multipliers.
        sx * sw[0] * (0.05 + rng.unit() * 40.0)
    };
    let w = WeightQParams {
        scheme: QScheme::PerChannelSymmetric,
        scales: sw,
        zero_points: vec![0; channels],
    };
    let od = dtype(rng);
    let out = QParams::new(sy, random_zp(rng, od), od).ok()?;
    let bias: Option<Vec<f32>> = rng
        .coin(0.6)
        .then(|| (0..channels).map(|_| (rng.unit() - 0.5) * 20.0).collect());
    Epilogue::new(f, sx, &w, bias.as_deref(), out, rng.coin(0.3), channels).ok()
}

fn random_acc(rng: &mut Rng) -> i32 {
    match rng.usize(0, 7) {
        0 => rng.next() as i32,
        1 => rng.pick(&[
            i32::MIN,
            i32::MAX,
            i32::MIN + 1,
            i32::MAX - 1,
            0,
            1,
            -1,
            (1 << 24) + 1,
            -(1 << 24) - 1,
            (1 << 24) + 3,
            1 << 30,
            -(1 << 30),
        ]),
        2 => ((1i64 << 24) + rng.range(0, 1 << 30)) as i32 * if rng.coin(0.5) { 1 } else { -1 },
        3 => rng.range(-300, 300) as i32,
        4 => rng.range(-100_000, 100_000) as i32,
        5 => rng.range(-(1 << 20), 1 << 20) as i32 * 2 + 1,
        _ => rng.range(-5_000_000, 5_000_000) as i32,
    }
}

#[test]
fn requantize_sweep_matches_cpu_reference_on_every_adapter() {
    let ctxs = gpu_contexts();
    if ctxs.is_empty() {
        return;
    }
    let mut rng = Rng::new(0x5157_1e55_c0de_0002);
    let mut cases = Vec::new();
    let mut rejected = 0;
    for i in 0..120 {
        let f = RequantFormula::ALL[i % 4];
        let channels = rng.usize(1, 9);
        let plane = rng.usize(1, 13);
        let n = if i.is_multiple_of(20) {
            60
        } else {
            rng.usize(1, 3)
        };
        let Some(epi) = random_epilogue(&mut rng, f, channels) else {
            // A multiplier the formula cannot represent (the converter rejects it too).
            rejected += 1;
            continue;
        };
        let acc: Vec<i32> = (0..n * channels * plane)
            .map(|_| random_acc(&mut rng))
            .collect();
        let want = reference::requantize(&acc, &epi, channels, plane).unwrap();
        cases.push((f, channels, plane, epi, acc, want));
    }
    assert!(
        rejected <= 12,
        "{rejected} of 120 random epilogues rejected: the sweep is too weak"
    );
    for ctx in &ctxs {
        let name = ctx.adapter_report().summary();
        let t = Instant::now();
        for (f, channels, plane, epi, acc, want) in &cases {
            let got = ctx.requantize(acc, epi, *channels, *plane).unwrap();
            if let Some(i) = first_diff(&got, want) {
                panic!(
                    "requantize, formula {f} on {name}: channels {channels} plane {plane} \
                     out {:?} clamp {:?}: first differing index {i}: acc {} gpu {:?} cpu {:?} \
                     record {:?}",
                    epi.out,
                    epi.clamp,
                    acc[i],
                    got.get(i),
                    want.get(i),
                    epi.channels[(i / plane) % channels]
                );
            }
        }
        eprintln!(
            "{name}: {} requantize cases bit-exact in {:.2?}",
            cases.len(),
            t.elapsed()
        );
    }
}

fn interesting_f32(rng: &mut Rng, scale: f32) -> f32 {
    match rng.usize(0, 9) {
        // Exactly on a .5 tie of x * inv_scale (scale is a power of two here or not).
        0 | 1 => (rng.range(-300, 300) as f32 + 0.5) * scale,
        2 => rng.pick(&[
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            1e30,
            -1e30,
            3e9,
            -3e9,
            f32::MIN_POSITIVE,
            1e-40,
            -1e-40,
        ]),
        3 => f32::from_bits(rng.next() as u32),
        4 => (rng.unit() - 0.5) * 1e6 * scale,
        _ => (rng.unit() - 0.5) * 400.0 * scale,
    }
}

#[test]
fn quantize_and_dequantize_sweep_match_cpu_on_every_adapter() {
    let ctxs = gpu_contexts();
    if ctxs.is_empty() {
        return;
    }
    let mut rng = Rng::new(0x5157_1e55_c0de_0003);
    let mut cases = Vec::new();
    for i in 0..60 {
        let dims = [
            rng.usize(1, 3),
            rng.usize(1, 5),
            rng.usize(1, 11),
            rng.usize(1, 11),
        ];
        let d = dtype(&mut rng);
        let scale = match i % 3 {
            0 => pow2(rng.range(-3, 12) as i32),
            1 => 0.001 + rng.unit() * 0.2,
            _ => f32::from_bits(rng.range(0x0080_0000, 0x4000_0000) as u32),
        };
        let qp = QParams::new(scale, random_zp(&mut rng, d), d).unwrap();
        let n: usize = dims.iter().product();
        let x: Vec<f32> = (0..n).map(|_| interesting_f32(&mut rng, scale)).collect();
        let q: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        cases.push((dims, qp, x, q));
    }
    // The default kernels, and the step-table search forced (no float estimate).
    let variants: Vec<_> = ctxs
        .iter()
        .flat_map(|c| {
            variants(c)
                .into_iter()
                .filter(|(v, _)| *v == "default" || v.starts_with("step tables"))
                .map(|(v, ctx)| (format!("{} [{v}]", c.adapter_report().summary()), ctx))
        })
        .collect();
    assert_eq!(
        variants.len(),
        2 * ctxs.len(),
        "both variants on every adapter"
    );
    for (name, ctx) in variants {
        for (dims, qp, x, q) in &cases {
            let xt = ctx.upload_f32(x, *dims).unwrap();
            let got = ctx.read_q(&ctx.quantize(&xt, qp).unwrap()).unwrap();
            let want = quantize_slice(x, qp);
            if let Some(i) = first_diff(&got, &want) {
                panic!(
                    "quantize on {name}: dims {dims:?} {qp:?}: first differing index {i}: x {:e} \
                     ({:#010x}) gpu {:?} cpu {:?}",
                    x[i],
                    x[i].to_bits(),
                    got.get(i),
                    want.get(i)
                );
            }
            let qt = ctx.upload_q(q, *dims, qp.dtype).unwrap();
            let got = ctx.read_f32(&ctx.dequantize(&qt, qp).unwrap()).unwrap();
            let want = dequantize_slice(q, qp);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(got.len(), want.len(), "dequantize on {name}: dims {dims:?}");
            if let Some(i) = bits(&got)
                .iter()
                .zip(bits(&want))
                .position(|(a, b)| *a != b)
            {
                panic!(
                    "dequantize on {name}: dims {dims:?} {qp:?}: first differing index {i}: q {} \
                     gpu {:e} cpu {:e}",
                    q[i], got[i], want[i]
                );
            }
        }
        eprintln!(
            "{name}: {} quantize/dequantize cases bit-exact",
            cases.len()
        );
    }
}
