//! GPU time of the depthwise int8 conv on MobileNetV2's depthwise shapes (3x3, one image):
//! the kernel that reads the packed tensor (the default) against the repack and the kernel on
//! repacked quads, and against the f32 depthwise conv on the same adapter (`GpuConv2dF32`,
//! the baseline of `squint bench`'s "vs f32"), in one run, medians of 15 runs each: the
//! compute passes by timestamp queries, and the wall time of the conv and the read-back of
//! its output (which includes the copy of the input into a texture that both make on CPU
//! adapters). Needs an adapter
//! with timestamp queries; pick one with `WGPU_BACKEND` (e.g. `vulkan` for lavapipe).
//!
//! `cargo run --release --example gpu_depthwise`
use squint::gpu::{DeviceOptions, GpuContext, GpuConv2d, GpuConv2dF32, KernelOptions};
use squint::quant::{Epilogue, QDtype, QParams, QScheme, RequantFormula, WeightQParams};
use squint::shape::{ConvParams, ConvShape};
use std::time::{Duration, Instant};

#[path = "common/mobilenet_v2_depthwise.rs"]
mod mobilenet_v2_depthwise;

fn main() {
    let ctx = GpuContext::open(&DeviceOptions::default()).expect("a GPU adapter");
    let rep = ctx
        .with_kernel_options(KernelOptions {
            dw_repacked: true,
            ..Default::default()
        })
        .unwrap();
    println!("{}", ctx.adapter_report().summary());
    let (mut td, mut tr, mut wd, mut wr, mut tf) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (c, hw, st) in mobilenet_v2_depthwise::LAYERS {
        let p = ConvParams::default().padding(1).stride(st).groups(c);
        let s = ConvShape::new([1, c, hw, hw], [c, 1, 3, 3], p).unwrap();
        let w: Vec<i8> = (0..s.weight_len())
            .map(|i| (i * 37 % 200) as i8 - 100)
            .collect();
        let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
        let x_qp = QParams::new(0.02, 0, QDtype::QUInt8).unwrap();
        let out = QParams::new(0.1, 0, QDtype::QUInt8).unwrap();
        let epi = Epilogue::new(RequantFormula::Fbgemm, 0.02, &w_qp, None, out, true, c).unwrap();
        let layer = GpuConv2d::new(&ctx, &w, s.weight_dims(), &w_qp, &epi, p).unwrap();
        let x: Vec<u8> = (0..s.input_len()).map(|i| (i * 13) as u8).collect();
        let xt = ctx.upload_q(&x, s.input_dims(), QDtype::QUInt8).unwrap();
        let time = |cx: &GpuContext| {
            let mut v: Vec<Duration> = (0..15)
                .map(|_| {
                    let (_, t) = layer.run_timed(cx, &xt, &x_qp).unwrap();
                    t.expect("timestamp queries")
                })
                .collect();
            v.sort();
            v[7].as_secs_f64() * 1e3
        };
        let wall = |cx: &GpuContext| {
            let mut v: Vec<Duration> = (0..15)
                .map(|_| {
                    let t = Instant::now();
                    cx.read_q(&layer.run(cx, &xt, &x_qp).unwrap()).unwrap();
                    t.elapsed()
                })
                .collect();
            v.sort();
            v[7].as_secs_f64() * 1e3
        };
        let (d, r) = (time(&ctx), time(&rep));
        let (dw, rw) = (wall(&ctx), wall(&rep));
        let f = time_f32(&ctx, &s, &w, p);
        (td, tr, wd, wr, tf) = (td + d, tr + r, wd + dw, wr + rw, tf + f);
        println!(
            "{c}x{hw}x{hw} s{st}: passes direct {d:.3} ms, repacked {r:.3} ms, {:.2}x; \
             with read-back {dw:.3} / {rw:.3} ms, {:.2}x; f32 {f:.3} ms, int8 {:.2}x faster",
            r / d,
            rw / dw,
            f / d
        );
    }
    println!(
        "sum: passes direct {td:.3} ms, repacked {tr:.3} ms, {:.2}x; with read-back \
         {wd:.3} / {wr:.3} ms, {:.2}x; f32 {tf:.3} ms, int8 {:.2}x faster",
        tr / td,
        wr / wd,
        tf / td
    );
}

/// Median GPU time (timestamps, 15 runs) of the f32 depthwise conv of shape `s`, with the int8
/// layer's weights as floats.
fn time_f32(ctx: &GpuContext, s: &ConvShape, w: &[i8], p: ConvParams) -> f64 {
    let wf: Vec<f32> = w.iter().map(|&v| f32::from(v) * 0.01).collect();
    let layer = GpuConv2dF32::new(ctx, &wf, s.weight_dims(), None, p).unwrap();
    let x: Vec<f32> = (0..s.input_len())
        .map(|i| (i % 251) as f32 * 0.02)
        .collect();
    let xt = ctx.upload_f32(&x, s.input_dims()).unwrap();
    let mut v: Vec<Duration> = (0..15)
        .map(|_| {
            layer
                .run_timed(ctx, &xt)
                .unwrap()
                .1
                .expect("timestamp queries")
        })
        .collect();
    v.sort();
    v[7].as_secs_f64() * 1e3
}
