//! The f32 conv baseline on the GPU (`GpuConv2dF32`, what `squint bench` times the int8
//! kernels against on the same adapter): every output within the float error bound of the
//! f64-accumulated CPU reference, on every adapter, for GEMM and depthwise layers of every
//! geometry; bad arguments give typed errors.
//!
//! The bound: a sum of K products in f32 (any order, fused or not) is within
//! `K * 2^-24 * Σ|x·w|` of the exact sum (plus the bias's rounding); the tests allow twice
//! that. A wrong tap, channel or pixel misses it by orders of magnitude.

mod common;

use common::{gpu_contexts, Rng};
use squint::cpu::reference;
use squint::gpu::{GpuContext, GpuConv2dF32, InputChoice, KernelOptions, StagingChoice};
use squint::shape::{ConvParams, ConvShape};
use squint::Error;

fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.unit() * 2.0 - 1.0).collect()
}

/// Every adapter, each three times: with its default input (textures on CPU adapters) and
/// weight loads (subgroup broadcasts where it has subgroups), with storage buffers (the
/// default on GPUs), and with every invocation loading its weights.
fn contexts() -> Vec<(String, GpuContext)> {
    let mut all = Vec::new();
    for ctx in gpu_contexts() {
        let name = ctx.adapter_report().summary();
        let buffers = KernelOptions {
            input: InputChoice::Buffer,
            ..KernelOptions::default()
        };
        let b = ctx.with_kernel_options(buffers).unwrap();
        all.push((format!("{name} [buffers]"), b));
        let direct = KernelOptions {
            staging: StagingChoice::Direct,
            ..KernelOptions::default()
        };
        let d = ctx.with_kernel_options(direct).unwrap();
        all.push((format!("{name} [direct weight loads]"), d));
        all.push((name, ctx));
    }
    all
}

/// Runs one layer on every adapter and checks each output against the reference's bound.
fn check(seed: u64, x_dims: [usize; 4], w_dims: [usize; 4], params: ConvParams, bias: bool) {
    let s = ConvShape::new(x_dims, w_dims, params).expect("valid shape");
    let mut rng = Rng::new(seed);
    let x = values(&mut rng, s.input_len());
    let w = values(&mut rng, s.weight_len());
    let b = bias.then(|| values(&mut rng, s.c_out));
    let want = reference::conv2d_f32(&x, &w, b.as_deref(), &s).unwrap();
    let ax: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let aw: Vec<f32> = w.iter().map(|v| v.abs()).collect();
    let mag = reference::conv2d_f32(&ax, &aw, None, &s).unwrap();
    let k = s.k() as f64;
    let plane = s.h_out * s.w_out;
    for (name, ctx) in contexts() {
        let layer = GpuConv2dF32::new(&ctx, &w, w_dims, b.as_deref(), params).unwrap();
        let xg = ctx.upload_f32(&x, x_dims).unwrap();
        let y = layer.run(&ctx, &xg).unwrap();
        assert_eq!(y.dims, s.output_dims(), "{name}");
        let got = ctx.read_f32(&y).unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
            let bias_mag = b.as_ref().map_or(0.0, |b| b[(i / plane) % s.c_out].abs()) as f64;
            let bound = 2.0 * (k + 1.0) * f64::from(f32::EPSILON) / 2.0
                * (mag[i] as f64 + bias_mag)
                + f64::from(f32::MIN_POSITIVE);
            let err = (g as f64 - r as f64).abs();
            assert!(
                err <= bound,
                "{name}: {x_dims:?} * {w_dims:?} {params:?}: output {i} is {g}, the reference \
                 {r} (error {err:e}, bound {bound:e})"
            );
        }
    }
}

#[test]
fn gemm_f32_conv_matches_the_reference_with_padding_and_odd_sizes() {
    check(
        1,
        [1, 3, 9, 11],
        [8, 3, 3, 3],
        ConvParams::default().padding(1),
        true,
    );
    check(
        2,
        [1, 32, 8, 8],
        [40, 32, 1, 1],
        ConvParams::default(),
        false,
    );
}

#[test]
fn gemm_f32_conv_matches_the_reference_with_stride_batch_and_partial_blocks() {
    check(
        3,
        [2, 20, 7, 7],
        [13, 20, 3, 3],
        ConvParams::default().stride(2).padding(1),
        true,
    );
}

#[test]
fn gemm_f32_conv_matches_the_reference_with_groups_and_dilation() {
    let p = ConvParams::default().groups(4).dilation(2).padding(2);
    check(4, [1, 16, 12, 10], [24, 4, 3, 3], p, true);
    // A channel multiplier of 2: one input channel per group, but not depthwise.
    check(
        5,
        [1, 8, 10, 10],
        [16, 1, 3, 3],
        ConvParams::default().groups(8),
        false,
    );
}

#[test]
fn depthwise_f32_conv_matches_the_reference() {
    let p = ConvParams::default().groups(12).padding(1);
    check(6, [2, 12, 15, 13], [12, 1, 3, 3], p, true);
    let p = ConvParams {
        stride: [2, 1],
        padding: [2, 1],
        dilation: [2, 1],
        groups: 6,
    };
    check(7, [1, 6, 17, 9], [6, 1, 5, 3], p, false);
}

/// The depthwise kernel where input rows are whole texels (each span's first column at the
/// same lane of its texel for every invocation: pad_w mod 4 = 0, 3, 2, 1), with kernel rows
/// of one, two and three weight vec4s (KW = 3, 5, 7, 9, 10), column strides 1 to 3 (the
/// span of 4 pixels' inputs up to its 13 columns), and output rows of whole vec4s (one vec4
/// store per invocation) or not.
#[test]
fn depthwise_f32_conv_on_rows_of_whole_texels_matches_the_reference() {
    let p = |pad: [usize; 2], groups| ConvParams {
        padding: pad,
        groups,
        ..ConvParams::default()
    };
    let strided = |sw: usize, pad: [usize; 2], groups| ConvParams {
        stride: [1, sw],
        ..p(pad, groups)
    };
    check(
        17,
        [1, 4, 10, 16],
        [4, 1, 3, 3],
        strided(2, [1, 1], 4),
        true,
    );
    check(
        18,
        [2, 2, 6, 24],
        [2, 1, 3, 3],
        strided(3, [1, 1], 2),
        false,
    );
    check(19, [1, 2, 5, 20], [2, 1, 1, 7], strided(2, [0, 3], 2), true);
    check(11, [1, 8, 12, 16], [8, 1, 3, 3], p([1, 1], 8), true);
    check(12, [2, 4, 9, 8], [4, 1, 3, 3], p([0, 0], 4), false);
    check(13, [1, 4, 7, 12], [4, 1, 3, 5], p([1, 2], 4), true);
    check(14, [1, 3, 6, 20], [3, 1, 2, 7], p([0, 3], 3), false);
    check(15, [1, 2, 5, 24], [2, 1, 1, 9], p([0, 4], 2), true);
    check(16, [1, 2, 4, 16], [2, 1, 3, 10], p([1, 5], 2), true);
}

/// The depthwise kernel's per-tap path: strided or dilated columns, and kernels wider than
/// the shared span (10 columns).
#[test]
fn depthwise_f32_conv_with_strided_dilated_or_wide_rows_matches_the_reference() {
    let p = ConvParams::default().groups(5).stride(2).padding(1);
    check(8, [2, 5, 13, 14], [5, 1, 3, 3], p, true);
    let p = ConvParams {
        stride: [1, 1],
        padding: [0, 3],
        dilation: [1, 2],
        groups: 4,
    };
    check(9, [1, 4, 9, 30], [4, 1, 2, 5], p, false);
    let p = ConvParams {
        padding: [0, 5],
        groups: 3,
        ..ConvParams::default()
    };
    check(10, [1, 3, 5, 20], [3, 1, 1, 11], p, true);
}

#[test]
fn f32_conv_layer_arguments_are_checked() {
    for ctx in gpu_contexts() {
        let p = ConvParams::default();
        let w = vec![0f32; 8 * 3 * 3 * 3];
        let e = GpuConv2dF32::new(&ctx, &w[1..], [8, 3, 3, 3], None, p).unwrap_err();
        assert!(matches!(e, Error::Shape(_)), "{e}");
        let e = GpuConv2dF32::new(&ctx, &w, [8, 3, 3, 3], Some(&[0.0; 7]), p).unwrap_err();
        assert!(matches!(e, Error::Shape(_)), "{e}");
        let e = GpuConv2dF32::new(&ctx, &w, [8, 3, 3, 3], None, p.groups(3)).unwrap_err();
        assert!(matches!(e, Error::Shape(_)), "{e}");
        let e = GpuConv2dF32::new(&ctx, &w, [8, 3, 3, 3], None, p.stride(0)).unwrap_err();
        assert!(matches!(e, Error::InvalidParameter(_)), "{e}");
        // An input of the wrong channel count, or smaller than the kernel.
        let layer = GpuConv2dF32::new(&ctx, &w, [8, 3, 3, 3], None, p).unwrap();
        let x = ctx.upload_f32(&[0.0; 4 * 25], [1, 4, 5, 5]).unwrap();
        assert!(matches!(layer.run(&ctx, &x), Err(Error::Shape(_))));
        let x = ctx.upload_f32(&[0.0; 3 * 4], [1, 3, 2, 2]).unwrap();
        assert!(layer.run(&ctx, &x).is_err());
    }
}

/// Work beyond a binding or a dispatch's workgroups is a `DeviceLimit` error (the f32
/// baseline does not split), not a panic, and the layer still runs where it fits.
#[test]
fn f32_conv_beyond_the_device_limits_is_a_device_limit_error() {
    for ctx in gpu_contexts() {
        let p = ConvParams::default().padding(1);
        let w = vec![0.5f32; 8 * 8 * 3 * 3];
        let x = vec![1.0f32; 8 * 32 * 32];
        for (small, what) in [
            (ctx.with_split_limits(4096, 65535), "binding"),
            (ctx.with_split_limits(1 << 30, 2), "workgroups"),
        ] {
            let layer = GpuConv2dF32::new(&small, &w, [8, 8, 3, 3], None, p).unwrap();
            let xg = small.upload_f32(&x, [1, 8, 32, 32]).unwrap();
            let e = layer.run(&small, &xg).unwrap_err();
            assert!(matches!(e, Error::DeviceLimit(_)), "{what}: {e}");
            assert!(e.to_string().contains("f32 conv"), "{e}");
            let y = layer.run(&ctx, &ctx.upload_f32(&x, [1, 8, 32, 32]).unwrap());
            assert_eq!(ctx.read_f32(&y.unwrap()).unwrap().len(), 8 * 32 * 32);
        }
    }
}
