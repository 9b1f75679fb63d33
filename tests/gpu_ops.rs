//! GPU backend behaviour: errors instead of panics, the splitting paths (forced with small
//! artificial limits) staying bit-exact, chaining without read-backs, concurrent use, and
//! adapter selection by backend.
//!
//! With no adapter the tests print why and pass, unless `SQUINT_REQUIRE_GPU=1`.

mod common;

use common::{gpu_contexts, variants, Rng};
use squint::cpu::reference;
use squint::gpu::{
    self, BackendChoice, DeviceOptions, DotChoice, GpuContext, GpuConv2d, GpuF32Tensor, GpuTensor,
    KernelOptions, StagingChoice,
};
use squint::quant::{
    dequantize_slice, quantize_slice, Epilogue, QDtype, QParams, QScheme, RequantFormula,
    WeightQParams,
};
use squint::shape::{ConvParams, ConvShape};
use squint::Error;

/// A conv problem with its CPU answer.
struct Problem {
    s: ConvShape,
    x: Vec<u8>,
    x_qp: QParams,
    w: Vec<i8>,
    w_qp: WeightQParams,
    epi: Epilogue,
    want: Vec<u8>,
}

fn problem(
    seed: u64,
    x_dims: [usize; 4],
    w_dims: [usize; 4],
    params: ConvParams,
    formula: RequantFormula,
) -> Problem {
    let mut rng = Rng::new(seed);
    let s = ConvShape::new(x_dims, w_dims, params).unwrap();
    let x_qp = QParams::new(0.02, 128, QDtype::QUInt8).unwrap();
    let w_qp = WeightQParams {
        scheme: QScheme::PerChannelAffine,
        scales: (0..s.c_out).map(|_| 0.001 + rng.unit() * 0.01).collect(),
        zero_points: (0..s.c_out).map(|o| (o % 5) as i32 - 2).collect(),
    };
    let bias: Vec<f32> = (0..s.c_out).map(|_| rng.unit() - 0.5).collect();
    let out = QParams::new(0.05, -3, QDtype::QInt8).unwrap();
    let epi = Epilogue::new(formula, x_qp.scale, &w_qp, Some(&bias), out, false, s.c_out).unwrap();
    let x: Vec<u8> = (0..s.input_len()).map(|_| rng.next() as u8).collect();
    let w: Vec<i8> = (0..s.weight_len()).map(|_| rng.next() as i8).collect();
    let want = reference::conv2d_quantized(&x, &x_qp, &w, &w_qp, &epi, &s).unwrap();
    Problem {
        s,
        x,
        x_qp,
        w,
        w_qp,
        epi,
        want,
    }
}

#[test]
fn shape_and_parameter_errors_are_errors_not_panics() {
    for ctx in gpu_contexts() {
        let p = problem(
            1,
            [1, 4, 6, 6],
            [8, 4, 3, 3],
            ConvParams::default(),
            RequantFormula::Qnnpack,
        );
        // Input of the wrong length.
        let r = gpu::conv2d_quantized(&ctx, &p.x[1..], &p.x_qp, &p.w, &p.w_qp, &p.epi, &p.s);
        assert!(matches!(r, Err(Error::Shape(_))), "{r:?}");
        // Weight of the wrong length.
        let r = gpu::conv2d_quantized(&ctx, &p.x, &p.x_qp, &p.w[..10], &p.w_qp, &p.epi, &p.s);
        assert!(matches!(r, Err(Error::Shape(_))), "{r:?}");
        // A layer given an input with the wrong channel count.
        let layer = GpuConv2d::new(&ctx, &p.w, [8, 4, 3, 3], &p.w_qp, &p.epi, p.s.params).unwrap();
        let bad = ctx
            .upload_q(&[0u8; 3 * 36], [1, 3, 6, 6], QDtype::QUInt8)
            .unwrap();
        let r = layer.run(&ctx, &bad, &p.x_qp);
        assert!(matches!(r, Err(Error::Shape(_))), "{r:?}");
        // Kernel larger than the padded input.
        let tiny = ctx
            .upload_q(&[0u8; 4 * 4], [1, 4, 2, 2], QDtype::QUInt8)
            .unwrap();
        assert!(layer.run(&ctx, &tiny, &p.x_qp).is_err());
        // Input qparams of another dtype than the tensor.
        let xt = ctx.upload_q(&p.x, [1, 4, 6, 6], QDtype::QUInt8).unwrap();
        let qi8 = QParams::new(0.02, 0, QDtype::QInt8).unwrap();
        let r = layer.run(&ctx, &xt, &qi8);
        assert!(matches!(r, Err(Error::InvalidParameter(_))), "{r:?}");
        // Epilogue with the wrong channel count, weight shape mismatches, zero groups.
        let r = GpuConv2d::new(&ctx, &p.w, [4, 4, 3, 3], &p.w_qp, &p.epi, p.s.params);
        assert!(r.is_err());
        let r = GpuConv2d::new(
            &ctx,
            &p.w,
            [8, 4, 3, 3],
            &p.w_qp,
            &p.epi,
            ConvParams::default().groups(0),
        );
        assert!(matches!(r, Err(Error::InvalidParameter(_))), "{r:?}");
        let r = GpuConv2d::new(
            &ctx,
            &p.w,
            [8, 4, 3, 3],
            &p.w_qp,
            &p.epi,
            ConvParams::default().groups(3),
        );
        assert!(matches!(r, Err(Error::InvalidParameter(_))), "{r:?}");
        // Uploads and requantize validate like the CPU.
        assert!(matches!(
            ctx.upload_q(&[1, 2, 3], [1, 1, 2, 2], QDtype::QInt8),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            ctx.upload_f32(&[1.0; 4], [1, 1, 0, 4]),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            ctx.requantize(&[1, 2, 3], &p.epi, 8, 1),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            ctx.requantize(&[1; 16], &p.epi, 4, 4),
            Err(Error::Shape(_))
        ));
        // An accumulator that could overflow int32 is refused up front, as on the CPU:
        // K = 8192 * 9 taps of |x - 128| <= 128 times |w - 127| = 255.
        let s = ConvShape::new([1, 8192, 3, 3], [4, 8192, 3, 3], ConvParams::default()).unwrap();
        let wq = WeightQParams::per_tensor(QScheme::PerTensorAffine, 0.01, 127);
        let epi =
            Epilogue::new(RequantFormula::Fbgemm, 0.02, &wq, None, p.epi.out, false, 4).unwrap();
        let x = vec![0u8; s.input_len()];
        let big_w = vec![-128i8; s.weight_len()];
        let r = gpu::conv2d_quantized(&ctx, &x, &p.x_qp, &big_w, &wq, &epi, &s);
        assert!(matches!(r, Err(Error::AccumulatorOverflow { .. })), "{r:?}");
    }
}

#[test]
fn forced_splitting_stays_bit_exact() {
    let ctxs = gpu_contexts();
    let problems = [
        // Regular conv: split over images, channel blocks and pixel tiles.
        problem(
            2,
            [3, 4, 13, 11],
            [12, 4, 3, 3],
            ConvParams::default().padding(1),
            RequantFormula::Onednn,
        ),
        // Depthwise, strided and dilated.
        problem(
            3,
            [2, 6, 11, 11],
            [12, 1, 3, 3],
            ConvParams::default()
                .groups(6)
                .stride(2)
                .dilation(2)
                .padding(2),
            RequantFormula::FixedPoint,
        ),
        // Grouped 1x1.
        problem(
            4,
            [3, 8, 9, 7],
            [16, 2, 1, 1],
            ConvParams::default().groups(4),
            RequantFormula::Fbgemm,
        ),
        // Several workgroups per output plane (a partial last one), partial channel blocks,
        // more than one quad of input channels: its workgroups need more than 9 KiB of input.
        problem(
            7,
            [2, 21, 29, 23],
            [11, 21, 3, 3],
            ConvParams::default().padding(1),
            RequantFormula::Qnnpack,
        ),
    ];
    for base in &ctxs {
        let name = base.adapter_report().summary();
        // The smallest limit holds the epilogue tables of one channel block (8 x 1056 bytes).
        for (limit, wgs) in [(9216u64, 1u32), (9216, 2), (16384, 1), (1 << 20, 1)] {
            let split = base.with_split_limits(limit, wgs);
            for (variant, ctx) in variants(&split) {
                for (i, p) in problems.iter().enumerate() {
                    // Where one image's repacked input or output windows exceed a binding
                    // (problem 3's repacking reads 16 input planes of 668 bytes per quad, and
                    // problem 1 run by the GEMM kernel has workgroups that read 15 padded rows
                    // of 1440 bytes), the conv runs by row bands, down to the smallest, and
                    // then by slices of its groups: for problem 1 on the GEMM kernel, 2 output
                    // rows read 7 padded rows of 90 quads (10080 bytes), more than a 9 KiB
                    // binding.
                    let r = gpu::conv2d_quantized(&ctx, &p.x, &p.x_qp, &p.w, &p.w_qp, &p.epi, &p.s);
                    let got = r.unwrap_or_else(|e| {
                        panic!("{name}, {variant}: problem {i}, limit {limit}: {e}")
                    });
                    assert!(
                        got == p.want,
                        "{name}, {variant}: problem {i} with binding limit {limit} and {wgs} \
                         workgroups per dimension differs from the CPU at index {:?}",
                        got.iter().zip(&p.want).position(|(a, b)| a != b)
                    );
                }
            }
            let ctx = split;
            // Quantize, dequantize and requantize split as well.
            let mut rng = Rng::new(9);
            let dims = [3, 5, 17, 19];
            let n: usize = dims.iter().product();
            let x: Vec<f32> = (0..n).map(|_| (rng.unit() - 0.5) * 10.0).collect();
            let qp = QParams::new(0.037, 5, QDtype::QInt8).unwrap();
            let q = ctx
                .read_q(
                    &ctx.quantize(&ctx.upload_f32(&x, dims).unwrap(), &qp)
                        .unwrap(),
                )
                .unwrap();
            assert_eq!(
                q,
                quantize_slice(&x, &qp),
                "{name}: quantize, limit {limit}"
            );
            let f = ctx
                .read_f32(
                    &ctx.dequantize(&ctx.upload_q(&q, dims, qp.dtype).unwrap(), &qp)
                        .unwrap(),
                )
                .unwrap();
            let want = dequantize_slice(&q, &qp);
            assert!(
                f.len() == want.len()
                    && f.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: dequantize, limit {limit}"
            );
            let p = &problems[0];
            let acc: Vec<i32> = (0..3 * 12 * 50).map(|_| rng.next() as i32 >> 8).collect();
            assert_eq!(
                ctx.requantize(&acc, &p.epi, 12, 50).unwrap(),
                reference::requantize(&acc, &p.epi, 12, 50).unwrap(),
                "{name}: requantize, limit {limit}"
            );
        }
    }
}

/// The tiled GEMM kernel (workgroups of several channel blocks, A and B staged in workgroup
/// memory), forced at its default workgroup, a smaller and an odd one: several channel tiles per group with a partial last one, several
/// pixel groups with a partial last one, K chunks with a tail and K shorter than a chunk,
/// strides, dilation and groups; equal to the reference bit for bit.
#[test]
fn tiled_kernel_matches_the_reference_across_tile_edges() {
    let problems = [
        // 2 groups of 70 output channels (a tile of 64 and one of 6); 20 input channels per
        // group (2 quads per tap, 18 K quads); 81 output pixels per plane.
        problem(
            11,
            [2, 40, 9, 9],
            [140, 20, 3, 3],
            ConvParams::default().groups(2).padding(1),
            RequantFormula::Qnnpack,
        ),
        // Strided and dilated; 3 input channels (1 quad per tap), 9 output channels.
        problem(
            12,
            [1, 3, 23, 19],
            [9, 3, 3, 3],
            ConvParams::default().stride(2).dilation(2).padding(2),
            RequantFormula::Fbgemm,
        ),
        // 1x1 with 100 input channels (7 K quads: fewer than one chunk), 130 output channels.
        problem(
            13,
            [1, 100, 7, 5],
            [130, 100, 1, 1],
            ConvParams::default(),
            RequantFormula::FixedPoint,
        ),
    ];
    // Each workgroup is a pipeline compiled anew (seconds on a software adapter): the
    // default, a smaller one and an odd one (chunks of 2 quads).
    let tiles = [None, Some([8, 4]), Some([3, 2])];
    for base in gpu_contexts() {
        let name = base.adapter_report().summary();
        for tile in tiles {
            let o = KernelOptions {
                staging: StagingChoice::Tiled,
                tile,
                ..KernelOptions::default()
            };
            let ctx = base.with_kernel_options(o).unwrap();
            for (i, p) in problems.iter().enumerate() {
                let got = gpu::conv2d_quantized(&ctx, &p.x, &p.x_qp, &p.w, &p.w_qp, &p.epi, &p.s)
                    .unwrap_or_else(|e| panic!("{name}, tile {tile:?}: problem {i}: {e}"));
                assert!(
                    got == p.want,
                    "{name}, tile {tile:?}: problem {i} differs from the CPU at index {:?}",
                    got.iter().zip(&p.want).position(|(a, b)| a != b)
                );
            }
        }
    }
}

/// The tiled GEMM kernel with K in parallel slices (a conv dispatch storing each slice's
/// partial sums, a reduce dispatch adding them and running the epilogue): two slices (the
/// last shorter), one slice per chunk, the automatic choice, with `dot4I8Packed` (signed
/// bytes, so a nonzero input zero point in the kernel's domain) and the fallback, with an odd
/// workgroup (chunks of 2 quads); weight zero points, groups, batches, strides; equal to the
/// reference bit for bit.
#[test]
fn tiled_kernel_in_parallel_k_slices_matches_the_reference() {
    let problems = [
        // 36 K quads (5 chunks of 8); 40 output channels (a tile of 32 and one of 8).
        problem(
            21,
            [1, 64, 6, 6],
            [40, 64, 3, 3],
            ConvParams::default().padding(1),
            RequantFormula::Qnnpack,
        ),
        // 2 groups of 35 output channels, 20 input channels each (18 K quads per group).
        problem(
            22,
            [1, 40, 9, 9],
            [70, 20, 3, 3],
            ConvParams::default().groups(2).padding(1),
            RequantFormula::Fbgemm,
        ),
        // 2 images, strided, 3 input quads per tap (27 K quads).
        problem(
            23,
            [2, 48, 11, 7],
            [24, 48, 3, 3],
            ConvParams::default().stride(2),
            RequantFormula::FixedPoint,
        ),
    ];
    let cases = [
        (None, Some(2), DotChoice::Auto),
        (None, Some(u32::MAX), DotChoice::Packed),
        (None, None, DotChoice::Packed),
        (Some([3, 2]), Some(u32::MAX), DotChoice::Auto),
    ];
    for base in gpu_contexts() {
        let name = base.adapter_report().summary();
        for (tile, k_slices, dot) in cases {
            let o = KernelOptions {
                staging: StagingChoice::Tiled,
                tile,
                k_slices,
                dot,
                ..KernelOptions::default()
            };
            let ctx =
                (base.with_kernel_options(o)).unwrap_or_else(|e| panic!("{name}, {o:?}: {e}"));
            for (i, p) in problems.iter().enumerate() {
                let got = gpu::conv2d_quantized(&ctx, &p.x, &p.x_qp, &p.w, &p.w_qp, &p.epi, &p.s)
                    .unwrap_or_else(|e| panic!("{name}, {o:?}: problem {i}: {e}"));
                assert!(
                    got == p.want,
                    "{name}, {o:?}: problem {i} differs from the CPU at index {:?}",
                    got.iter().zip(&p.want).position(|(a, b)| a != b)
                );
            }
        }
    }
}

#[test]
fn images_larger_than_the_largest_buffer_run_by_row_bands() {
    // With a 16 KiB buffer limit each image's repacked input (16 bytes per padded pixel and
    // 16-channel quad) exceeds the largest buffer, so the conv repacks and convolves it band
    // by band of output rows; the output must equal the CPU reference exactly.
    let problems = [
        // GEMM, odd output width (bands of a multiple of 4 rows), two bands per image.
        problem(
            21,
            [2, 3, 40, 37],
            [4, 3, 3, 3],
            ConvParams::default().padding(1),
            RequantFormula::Onednn,
        ),
        // Depthwise, strided and dilated: bands read overlapping input rows.
        problem(
            22,
            [2, 6, 31, 29],
            [12, 1, 3, 3],
            ConvParams::default()
                .groups(6)
                .stride(2)
                .dilation(2)
                .padding(2),
            RequantFormula::FixedPoint,
        ),
        // Grouped GEMM with two quads per group and an even output width (bands of any
        // number of rows): three bands.
        problem(
            23,
            [1, 40, 16, 20],
            [8, 20, 3, 3],
            ConvParams::default().padding(1).groups(2),
            RequantFormula::Fbgemm,
        ),
        // Asymmetric kernel and stride, no padding.
        problem(
            24,
            [1, 5, 45, 33],
            [6, 5, 5, 2],
            ConvParams::default().stride(3),
            RequantFormula::Qnnpack,
        ),
    ];
    for base in gpu_contexts() {
        let name = base.adapter_report().summary();
        let small = base.with_max_buffer(16 << 10);
        for (limits, ctx) in [
            ("16 KiB buffers", small.clone()),
            ("and 13 KiB bindings", small.with_split_limits(13 << 10, 2)),
        ] {
            for (variant, ctx) in variants(&ctx) {
                for (i, p) in problems.iter().enumerate() {
                    // Run by the GEMM kernel, the depthwise problem has 6 quads per pixel (one
                    // per group): the smallest band (4 rows) reads 11 padded rows of 198 quads,
                    // more than the 1024 quads of a 16 KiB buffer, so it runs by slices of
                    // its groups too.
                    let r = gpu::conv2d_quantized(&ctx, &p.x, &p.x_qp, &p.w, &p.w_qp, &p.epi, &p.s);
                    let got = r.unwrap_or_else(|e| {
                        panic!("{name}, {variant}, {limits}: problem {i}: {e}")
                    });
                    assert!(
                        got == p.want,
                        "{name}, {variant}, {limits}: problem {i} differs from the CPU at index {:?}",
                        got.iter().zip(&p.want).position(|(a, b)| a != b)
                    );
                }
            }
        }
    }
}

/// A real image beyond the device's largest buffer: 1 x 3 x 12000 x 12000 repacks into 2.1 GiB
/// of quads (16 bytes per padded pixel), more than lavapipe's 2047 MiB buffers, and runs by
/// row bands, equal to the fast CPU path. Slow on a software adapter (half a minute and
/// about 2 GiB of memory), so run on demand:
/// `cargo test --release --test gpu_ops -- --ignored beyond_the_largest_buffer`.
#[test]
#[ignore]
fn an_image_beyond_the_largest_buffer_runs_on_the_device() {
    let p = {
        let mut rng = Rng::new(31);
        let s = ConvShape::new(
            [1, 3, 12000, 12000],
            [4, 3, 3, 3],
            ConvParams::default().padding(1),
        )
        .unwrap();
        let x_qp = QParams::new(0.02, 128, QDtype::QUInt8).unwrap();
        let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
        let out = QParams::new(0.05, -3, QDtype::QInt8).unwrap();
        let epi = Epilogue::new(
            RequantFormula::Fbgemm,
            x_qp.scale,
            &w_qp,
            None,
            out,
            false,
            4,
        )
        .unwrap();
        let x: Vec<u8> = (0..s.input_len()).map(|_| rng.next() as u8).collect();
        let w: Vec<i8> = (0..s.weight_len()).map(|_| rng.next() as i8).collect();
        let want = squint::cpu::fast::conv2d_quantized(
            &x,
            &x_qp,
            &w,
            &w_qp,
            &epi,
            &s,
            &Default::default(),
        )
        .unwrap();
        Problem {
            s,
            x,
            x_qp,
            w,
            w_qp,
            epi,
            want,
        }
    };
    for ctx in gpu_contexts() {
        let name = ctx.adapter_report().summary();
        let got = gpu::conv2d_quantized(&ctx, &p.x, &p.x_qp, &p.w, &p.w_qp, &p.epi, &p.s)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == p.want, "{name}: differs from the CPU");
    }
}

#[test]
fn convs_whose_fewest_rows_exceed_a_binding_run_split_by_input_channels() {
    // With 40 KiB bindings (2560 quads) even one band of the fewest output rows reads more
    // repacked quads than a binding holds, so the conv runs by slices of its input channels:
    // whole groups (convs of their own), else slices of each group's input quads keeping i32
    // partial sums between them, and depthwise convs by slices of their channels; the output
    // must equal the CPU exactly.
    let problems = [
        // 5 quads of input channels: one output row reads 3 padded rows of 302 pixels, 4530
        // quads; slices of 2, 2 and 1 quads (1812 quads per row).
        problem(
            41,
            [1, 70, 5, 300],
            [6, 70, 3, 3],
            ConvParams::default().padding(1),
            RequantFormula::Fbgemm,
        ),
        // Two groups of 3 quads (40 channels): bands of 2 rows read 4 padded rows, 6048
        // quads; slices of one quad, the last of 8 channels per group.
        problem(
            42,
            [1, 80, 4, 250],
            [10, 40, 3, 3],
            ConvParams::default().padding(1).groups(2),
            RequantFormula::Qnnpack,
        ),
        // Strided and dilated, 4 quads: one output row reads 5 padded rows; slices of 2.
        problem(
            43,
            [1, 50, 9, 200],
            [5, 50, 3, 3],
            ConvParams::default().stride(2).dilation(2).padding(2),
            RequantFormula::Onednn,
        ),
        // Depthwise, 48 channels (3 quads): one output row reads 3 padded rows, 2718 quads;
        // slices of 32 and 16 channels.
        problem(
            44,
            [1, 48, 5, 300],
            [48, 1, 3, 3],
            ConvParams::default().padding(1).groups(48),
            RequantFormula::Fbgemm,
        ),
        // 8 groups of one quad (8 channels): one output row reads 3 padded rows, 7248 quads;
        // slices of 2 whole groups, no partial sums.
        problem(
            46,
            [1, 64, 5, 300],
            [24, 8, 3, 3],
            ConvParams::default().padding(1).groups(8),
            RequantFormula::Qnnpack,
        ),
        // 4 groups of 3 quads: one group is too much, so one group at a time by 2 quads and 1.
        problem(
            47,
            [1, 160, 4, 250],
            [36, 40, 3, 3],
            ConvParams::default().padding(1).groups(4),
            RequantFormula::Fbgemm,
        ),
        // Depthwise with 2 output channels per input channel, 40 channels: bands of 2 rows
        // read 4 padded rows, 3024 quads; slices of 32 and 8 input channels.
        problem(
            45,
            [1, 40, 4, 250],
            [80, 1, 3, 3],
            ConvParams::default().padding(1).groups(40),
            RequantFormula::FixedPoint,
        ),
    ];
    for base in gpu_contexts() {
        let name = base.adapter_report().summary();
        let ctx = base.with_split_limits(40 << 10, 65535);
        for (variant, ctx) in variants(&ctx) {
            for (i, p) in problems.iter().enumerate() {
                let r = gpu::conv2d_quantized(&ctx, &p.x, &p.x_qp, &p.w, &p.w_qp, &p.epi, &p.s);
                let got = r.unwrap_or_else(|e| panic!("{name}, {variant}: problem {i}: {e}"));
                assert!(
                    got == p.want,
                    "{name}, {variant}: problem {i} differs from the CPU at index {:?}",
                    got.iter().zip(&p.want).position(|(a, b)| a != b)
                );
            }
        }
    }
}

#[test]
fn data_that_cannot_be_split_far_enough_is_a_device_limit_error() {
    for base in gpu_contexts() {
        // One output row (the smallest row band) reads 3 input rows of 4000 pixels, 192000
        // bytes of repacked quads, which a 9 KiB binding cannot hold, and its 2 input
        // channels are one quad: K cannot be split either.
        let ctx = base.with_split_limits(9216, 65535);
        let p = problem(
            5,
            [1, 2, 3, 4000],
            [4, 2, 3, 3],
            ConvParams::default(),
            RequantFormula::Qnnpack,
        );
        let r = gpu::conv2d_quantized(&ctx, &p.x, &p.x_qp, &p.w, &p.w_qp, &p.epi, &p.s);
        match r {
            Err(Error::DeviceLimit(msg)) => assert!(msg.contains("9216 bytes"), "{msg}"),
            other => panic!("expected DeviceLimit, got {other:?}"),
        }
    }
}

#[test]
fn chain_without_read_backs_matches_cpu() {
    for ctx in gpu_contexts() {
        let mut rng = Rng::new(11);
        let dims = [2, 6, 12, 10];
        let n: usize = dims.iter().product();
        let x: Vec<f32> = (0..n).map(|_| (rng.unit() - 0.3) * 4.0).collect();
        let q_in = QParams::new(0.03, 100, QDtype::QUInt8).unwrap();
        let mid = QParams::new(0.05, 7, QDtype::QUInt8).unwrap();
        let out = QParams::new(0.04, -5, QDtype::QInt8).unwrap();
        let w1_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0);
        let w2_qp = WeightQParams {
            scheme: QScheme::PerChannelSymmetric,
            scales: (0..5).map(|o| 0.004 + o as f32 * 0.001).collect(),
            zero_points: vec![0; 5],
        };
        let s1 = ConvShape::new(dims, [8, 6, 3, 3], ConvParams::default().padding(1)).unwrap();
        let s2 = ConvShape::new(
            s1.output_dims(),
            [5, 8, 3, 3],
            ConvParams::default().stride(2),
        )
        .unwrap();
        let s3 = ConvShape::new(
            s2.output_dims(),
            [10, 1, 3, 3],
            ConvParams::default().padding(1).groups(5),
        )
        .unwrap();
        let w3_qp = WeightQParams::per_tensor(QScheme::PerTensorAffine, 0.02, 3);
        let w3: Vec<i8> = (0..s3.weight_len())
            .map(|_| (rng.next() % 41) as i8 - 20)
            .collect();
        let e3 = Epilogue::new(
            RequantFormula::Fbgemm,
            out.scale,
            &w3_qp,
            None,
            out,
            true,
            10,
        )
        .unwrap();
        let w1: Vec<i8> = (0..s1.weight_len()).map(|_| rng.next() as i8).collect();
        let w2: Vec<i8> = (0..s2.weight_len()).map(|_| rng.next() as i8).collect();
        let e1 = Epilogue::new(
            RequantFormula::Qnnpack,
            q_in.scale,
            &w1_qp,
            None,
            mid,
            true,
            8,
        )
        .unwrap();
        let b2: Vec<f32> = (0..5).map(|i| i as f32 * 0.1 - 0.2).collect();
        let e2 = Epilogue::new(
            RequantFormula::Onednn,
            mid.scale,
            &w2_qp,
            Some(&b2),
            out,
            false,
            5,
        )
        .unwrap();
        // CPU chain.
        let cq = quantize_slice(&x, &q_in);
        let c1 = reference::conv2d_quantized(&cq, &q_in, &w1, &w1_qp, &e1, &s1).unwrap();
        let c2 = reference::conv2d_quantized(&c1, &mid, &w2, &w2_qp, &e2, &s2).unwrap();
        let c3 = reference::conv2d_quantized(&c2, &out, &w3, &w3_qp, &e3, &s3).unwrap();
        let want = dequantize_slice(&c3, &out);
        // GPU chain: one read-back at the end.
        let l1 = GpuConv2d::new(&ctx, &w1, s1.weight_dims(), &w1_qp, &e1, s1.params).unwrap();
        let l2 = GpuConv2d::new(&ctx, &w2, s2.weight_dims(), &w2_qp, &e2, s2.params).unwrap();
        let t = ctx
            .quantize(&ctx.upload_f32(&x, dims).unwrap(), &q_in)
            .unwrap();
        let t = l1.run(&ctx, &t, &q_in).unwrap();
        let t = l2.run(&ctx, &t, &mid).unwrap();
        assert_eq!(t.dims, s2.output_dims());
        assert_eq!(t.dtype, QDtype::QInt8);
        let l3 = GpuConv2d::new(&ctx, &w3, s3.weight_dims(), &w3_qp, &e3, s3.params).unwrap();
        assert!(l3.is_depthwise() && !l2.is_depthwise());
        let t = l3.run(&ctx, &t, &out).unwrap();
        let y = ctx.read_f32(&ctx.dequantize(&t, &out).unwrap()).unwrap();
        let name = ctx.adapter_report().summary();
        assert!(
            y.len() == want.len() && y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: chained result differs from the CPU chain"
        );
    }
}

#[test]
fn one_layer_runs_on_several_threads_at_once() {
    for ctx in gpu_contexts() {
        let p = problem(
            6,
            [2, 8, 14, 14],
            [16, 8, 3, 3],
            ConvParams::default().padding(1),
            RequantFormula::Fbgemm,
        );
        let layer =
            GpuConv2d::new(&ctx, &p.w, p.s.weight_dims(), &p.w_qp, &p.epi, p.s.params).unwrap();
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..3 {
                        let xt = ctx.upload_q(&p.x, p.s.input_dims(), p.x_qp.dtype).unwrap();
                        let y = layer.run(&ctx, &xt, &p.x_qp).unwrap();
                        assert_eq!(ctx.read_q(&y).unwrap(), p.want);
                    }
                });
            }
        });
    }
}

#[test]
fn backend_selection_reports_the_backend_asked_for() {
    let any = gpu_contexts();
    if any.is_empty() {
        return;
    }
    for b in [BackendChoice::Vulkan, BackendChoice::Gl] {
        let opts = DeviceOptions {
            backend: Some(b),
            adapter: None,
            ..Default::default()
        };
        match GpuContext::open(&opts) {
            Ok(ctx) => {
                let r = ctx.adapter_report();
                assert_eq!(r.backend, b.name(), "{r:?}");
                assert_eq!(r.backend_choice(), Some(b));
                // Every listed adapter is of that backend, and the report serialises.
                for a in gpu::list_adapters(&opts) {
                    assert_eq!(a.backend, b.name());
                    let json = serde_json::to_string(&a).unwrap();
                    assert!(json.contains("max_storage_buffer_binding_size"), "{json}");
                }
                eprintln!("{b}: {}", r.summary());
            }
            Err(e) => {
                assert!(matches!(e, Error::NoAdapter { .. }), "{e}");
                assert!(e.to_string().contains(b.name()), "{e}");
                eprintln!("{b}: not available here: {e}");
            }
        }
    }
    // A name filter that matches nothing names the filter in the error.
    let opts = DeviceOptions {
        backend: None,
        adapter: Some("no-such-adapter-zz9".into()),
        ..Default::default()
    };
    let e = GpuContext::open(&opts).unwrap_err();
    assert!(matches!(e, Error::NoAdapter { .. }), "{e}");
    assert!(e.to_string().contains("no-such-adapter-zz9"), "{e}");
    // A case-insensitive substring of a real name selects it.
    let name = any[0].adapter_report().name.to_uppercase();
    let opts = DeviceOptions {
        backend: None,
        adapter: Some(name[..name.len().min(6)].to_string()),
        ..Default::default()
    };
    assert!(GpuContext::open(&opts).is_ok());
}

#[test]
fn timestamps_pooling_and_flush() {
    for ctx in gpu_contexts() {
        let name = ctx.adapter_report().summary();
        let p = problem(
            8,
            [1, 16, 20, 20],
            [8, 16, 3, 3],
            ConvParams::default().padding(1),
            RequantFormula::Qnnpack,
        );
        let layer =
            GpuConv2d::new(&ctx, &p.w, p.s.weight_dims(), &p.w_qp, &p.epi, p.s.params).unwrap();
        let xt = ctx.upload_q(&p.x, p.s.input_dims(), p.x_qp.dtype).unwrap();
        let (y, t) = layer.run_timed(&ctx, &xt, &p.x_qp).unwrap();
        assert_eq!(ctx.read_q(&y).unwrap(), p.want, "{name}");
        assert_eq!(t.is_some(), ctx.has_timestamps(), "{name}");
        if let Some(t) = t {
            assert!(t.as_nanos() > 0 && t.as_secs() < 60, "{name}: {t:?}");
        }
        // The repack and the conv kernel timed apart: the same bytes, two positive times.
        let (y, parts) = layer.run_timed_parts(&ctx, &xt, &p.x_qp).unwrap();
        assert_eq!(ctx.read_q(&y).unwrap(), p.want, "{name}: timed in parts");
        assert_eq!(parts.is_some(), ctx.has_timestamps(), "{name}");
        for t in parts.into_iter().flatten() {
            assert!(t.as_nanos() > 0 && t.as_secs() < 60, "{name}: {parts:?}");
        }
        // Dropped outputs go back to the pool and are reused.
        drop(y);
        ctx.flush().unwrap();
        let cached = ctx.cached_buffer_bytes();
        assert!(cached > 0, "{name}");
        for _ in 0..3 {
            let y = layer.run(&ctx, &xt, &p.x_qp).unwrap();
            assert_eq!(ctx.read_q(&y).unwrap(), p.want, "{name}");
        }
        assert!(ctx.cached_buffer_bytes() <= cached, "{name}: the pool grew");
        ctx.release_cached_buffers();
        assert_eq!(ctx.cached_buffer_bytes(), 0, "{name}");
        // Several layers queued before one read-back (one submission).
        let ys: Vec<GpuTensor> = (0..5)
            .map(|_| layer.run(&ctx, &xt, &p.x_qp).unwrap())
            .collect();
        for y in &ys {
            assert_eq!(ctx.read_q(y).unwrap(), p.want, "{name}");
        }
    }
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<GpuContext>();
    check::<GpuConv2d>();
    check::<GpuTensor>();
    check::<GpuF32Tensor>();
}
