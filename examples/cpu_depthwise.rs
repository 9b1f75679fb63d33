//! CPU time of the int8 depthwise conv against the f32 one on MobileNetV2's depthwise shapes
//! (3x3, one image, one thread), on every ISA path this CPU runs: goal 3 of the benchmarks
//! ("int8 faster than f32 on every shape, on every ISA") checked shape by shape, where
//! `squint bench` times one depthwise shape. Both layers are packed once and write into a
//! reused buffer, as in `squint bench`; int8 runs on 7-bit activations (PyTorch's x86 preset)
//! unless `SQUINT_ACT_BITS=8`; each figure is the median of 41 runs (`SQUINT_ROUNDS`), the two paths alternated
//! in rounds so that a noisy neighbour slows both.
//!
//! `cargo run --release --example cpu_depthwise [-- FILTER...]`: only the rows whose
//! "isa shape" (e.g. `avx2 960x7x7 s1`) contains every FILTER.
use squint::cpu::fast::{FastConvOptions, Isa, PackedConv2d, PackedConvF32};
use squint::quant::{Epilogue, QDtype, QParams, QScheme, RequantFormula, WeightQParams};
use squint::shape::{ConvParams, ConvShape};
use std::time::Instant;

#[path = "common/mobilenet_v2_depthwise.rs"]
mod mobilenet_v2_depthwise;

fn main() -> squint::Result<()> {
    let bits: u32 = std::env::var("SQUINT_ACT_BITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let rounds: usize = std::env::var("SQUINT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(41);
    let filters: Vec<String> = std::env::args().skip(1).collect();
    let opts = FastConvOptions::with_threads(1);
    println!("one thread, {bits}-bit activations; ms are medians of {rounds} runs");
    println!("| isa | shape | int8 kernel | int8 ms | f32 ms | int8 vs f32 |");
    println!("|---|---|---|---|---|---|");
    for isa in Isa::available() {
        let mut worst = f64::INFINITY;
        for (c, hw, st) in mobilenet_v2_depthwise::LAYERS {
            let name = format!("{isa} {c}x{hw}x{hw} s{st}");
            if !filters.iter().all(|f| name.contains(f.as_str())) {
                continue;
            }
            let p = ConvParams::default().padding(1).stride(st).groups(c);
            let s = ConvShape::new([1, c, hw, hw], [c, 1, 3, 3], p)?;
            let wf: Vec<f32> = (0..s.weight_len())
                .map(|i| ((i * 37 % 200) as f32 - 100.0) * 0.01)
                .collect();
            let w: Vec<i8> = wf.iter().map(|&v| (v * 100.0) as i8).collect();
            let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
            let x_qp = QParams::new(1.0 / ((1 << bits) - 1) as f32, 0, QDtype::QUInt8)?;
            let out_qp = QParams::new(0.05, 128, QDtype::QUInt8)?;
            let epi = Epilogue::new(
                RequantFormula::Fbgemm,
                x_qp.scale,
                &w_qp,
                None,
                out_qp,
                true,
                c,
            )?;
            let q = PackedConv2d::with_isa(&w, s.weight_dims(), &w_qp, &epi, p, isa)?;
            let f = PackedConvF32::new(&wf, s.weight_dims(), p, isa)?;
            let x: Vec<u8> = (0..s.input_len())
                .map(|i| ((i * 13) % (1 << bits)) as u8)
                .collect();
            let xf: Vec<f32> = x.iter().map(|&v| v as f32 * x_qp.scale).collect();
            let (mut yq, mut yf) = (vec![0u8; s.output_len()], vec![0f32; s.output_len()]);
            let (mut tq, mut tf) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let t = Instant::now();
                q.run_into(&x, s.input_dims(), &x_qp, &opts, &mut yq)?;
                tq.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                f.run_into(&xf, s.input_dims(), None, &opts, &mut yf)?;
                tf.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let (mq, mf) = (median(tq), median(tf));
            worst = worst.min(mf / mq);
            let kernel = q.kernel_name(&x, &x_qp);
            println!(
                "| {isa} | {c}x{hw}x{hw} s{st} | {kernel} | {mq:.4} | {mf:.4} | {:.2}x |",
                mf / mq
            );
        }
        if worst.is_finite() {
            println!("| {isa} | **slowest ratio** | | | | {worst:.2}x |");
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
