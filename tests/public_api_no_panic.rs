//! No panic is reachable from the public API: the constructors and entry points, driven with
//! arbitrary shapes and parameters (including values built by hand through public fields,
//! bypassing the checked constructors), return `Ok` or `Err`, never panic.
//!
//! Sizes stay small wherever a call would allocate what the shape asks for; huge values only go
//! to calls that must refuse them before allocating.

use proptest::prelude::*;
use squint::cpu::fast::{self, FastConvOptions, PackedConv2d};
use squint::cpu::reference;
use squint::observers::{
    weight_qparams, HistogramObserver, ObserverConfig, ObserverKind, PerChannelMinMaxObserver,
};
use squint::pipeline::{
    diagnostics, histograms, ConvertOptions, Device, Layer, Model, PreparedModel, QConfig,
};
use squint::quant::{
    calculate_qparams, dequantize_slice, multiply_by_quantized_multiplier, quantize_slice,
    rounding_divide_by_pot, ChannelRequant, Epilogue, QDtype, QParams, QRange, QScheme,
    QuantizeSteps, QuantizedMultiplier, RequantFormula, StepTable, WeightQParams,
};
use squint::shape::{ConvParams, ConvShape};
use squint::tensor::Tensor;
use squint::Result;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, failing the case (with `what` and the panic message) if it panics.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> std::result::Result<T, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        TestCaseError::fail(format!("{what} panicked: {msg}"))
    })
}

/// [`no_panic`] for a call whose result does not matter (only that it returned).
fn call<T>(what: &str, f: impl FnOnce() -> T) -> std::result::Result<(), TestCaseError> {
    no_panic(what, f).map(drop)
}

fn dtype() -> impl Strategy<Value = QDtype> {
    prop_oneof![Just(QDtype::QUInt8), Just(QDtype::QInt8)]
}

fn formula() -> impl Strategy<Value = RequantFormula> {
    prop::sample::select(RequantFormula::ALL.to_vec())
}

fn scheme() -> impl Strategy<Value = QScheme> {
    prop::sample::select(vec![
        QScheme::PerTensorAffine,
        QScheme::PerTensorSymmetric,
        QScheme::PerChannelSymmetric,
        QScheme::PerChannelAffine,
    ])
}

/// Any f32, with the special values well represented.
fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => -4.0f32..4.0,
        1 => Just(0.0f32),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::MIN_POSITIVE / 4.0),
        1 => Just(f32::MAX),
        1 => Just(-f32::MAX),
        1 => any::<f32>(),
    ]
}

/// Any i32, with the extremes well represented.
fn any_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => -300i32..300,
        1 => Just(i32::MIN),
        1 => Just(i32::MAX),
        1 => any::<i32>(),
    ]
}

/// A size that may be zero, small, or overflow-prone.
fn any_size() -> impl Strategy<Value = usize> + Clone {
    prop_oneof![
        4 => 0usize..5,
        1 => Just(1usize << 32),
        1 => Just(usize::MAX),
        1 => any::<usize>(),
    ]
}

/// A size small enough to run (0 included).
fn small() -> impl Strategy<Value = usize> + Clone {
    0usize..4
}

fn params(size: impl Strategy<Value = usize> + Clone) -> impl Strategy<Value = ConvParams> {
    (
        [size.clone(), size.clone()],
        [size.clone(), size.clone()],
        [size.clone(), size.clone()],
        size,
    )
        .prop_map(|(stride, padding, dilation, groups)| ConvParams {
            stride,
            padding,
            dilation,
            groups,
        })
}

/// qparams built by hand (any scale, any zero point).
fn raw_qparams() -> impl Strategy<Value = QParams> {
    (any_f32(), any_i32(), dtype()).prop_map(|(scale, zero_point, dtype)| QParams {
        scale,
        zero_point,
        dtype,
    })
}

/// qparams as `QParams::new` accepts them.
fn valid_qparams() -> impl Strategy<Value = QParams> {
    (0.001f32..1.0, 0i32..256, dtype()).prop_map(|(scale, off, dtype)| {
        QParams::new(scale, dtype.full_range().min + off, dtype).unwrap()
    })
}

/// Weight qparams built by hand: 0 to 4 scales and zero points of any value.
fn raw_wqp() -> impl Strategy<Value = WeightQParams> {
    (
        scheme(),
        prop::collection::vec(any_f32(), 0..4),
        prop::collection::vec(any_i32(), 0..4),
    )
        .prop_map(|(scheme, scales, zero_points)| WeightQParams {
            scheme,
            scales,
            zero_points,
        })
}

/// A per-channel record built by hand.
fn raw_channel() -> impl Strategy<Value = ChannelRequant> {
    (
        any_i32(),
        [any_f32(), any_f32(), any_f32(), any_f32()],
        (any_i32(), -2i32..40, -2i32..40),
    )
        .prop_map(|(bias_i32, f, i)| ChannelRequant {
            bias_i32,
            bias_f32: f[0],
            mult: f[1],
            mult2: f[2],
            inv_out_scale: f[3],
            fp_multiplier: i.0,
            fp_left_shift: i.1,
            fp_right_shift: i.2,
        })
}

/// An epilogue built by hand through its public fields.
fn raw_epilogue() -> impl Strategy<Value = Epilogue> {
    (
        formula(),
        raw_qparams(),
        (any_i32(), any_i32()),
        prop::collection::vec(raw_channel(), 0..4),
    )
        .prop_map(|(formula, out, (min, max), channels)| Epilogue {
            formula,
            out,
            clamp: QRange { min, max },
            channels,
        })
}

/// A tensor built by hand: rank 0 to 5, small dims, and a data length that may not match.
fn raw_tensor() -> impl Strategy<Value = Tensor<f32>> {
    (
        prop::collection::vec(small(), 0..6),
        0usize..100,
        any::<bool>(),
    )
        .prop_map(|(dims, len, matching)| {
            let n = if matching {
                dims.iter().product::<usize>()
            } else {
                len
            };
            Tensor {
                dims,
                data: (0..n).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect(),
            }
        })
}

/// A 4-D input of `c` channels (or a raw tensor).
fn input(c: usize) -> impl Strategy<Value = Tensor<f32>> {
    prop_oneof![
        3 => (1usize..3, 1usize..6, 1usize..6).prop_map(move |(n, h, w)| {
            let len = n * c * h * w;
            Tensor::new(
                vec![n, c, h, w],
                (0..len).map(|i| ((i * 37) % 11) as f32 * 0.2 - 1.0).collect(),
            )
            .unwrap()
        }),
        1 => raw_tensor(),
    ]
}

/// Layers built by hand through their public fields: conv and ReLU layers with weights of any
/// rank, lengths that may not match their dims, small params (zero included), names that may
/// repeat.
fn raw_layers() -> impl Strategy<Value = Vec<Layer>> {
    let conv = (
        prop::sample::select(vec!["a", "b", "c", "input"]),
        prop_oneof![
            3 => (1usize..4, 1usize..4, 1usize..3, 1usize..3).prop_map(|(o, i, kh, kw)| {
                Tensor::new(
                    vec![o, i, kh, kw],
                    (0..o * i * kh * kw).map(|v| (v % 5) as f32 * 0.1 - 0.2).collect(),
                )
                .unwrap()
            }),
            1 => raw_tensor(),
        ],
        prop::option::of(prop::collection::vec(-1.0f32..1.0, 0..4)),
        params(0usize..3),
        any::<bool>(),
    )
        .prop_map(|(name, weight, bias, params, relu)| {
            Layer::Conv(squint::pipeline::model::FloatConv {
                name: name.to_string(),
                weight,
                bias,
                params,
                relu,
            })
        });
    let layer = prop_oneof![
        3 => conv,
        1 => prop::sample::select(vec!["r1", "r2", "a"]).prop_map(|n| Layer::Relu { name: n.into() }),
    ];
    prop::collection::vec(layer, 0..4)
}

/// A model that is valid for inputs of 2 channels: a chain of convs (with or without bias,
/// fused or unfused ReLUs) whose channels agree.
fn valid_layers() -> impl Strategy<Value = Vec<Layer>> {
    let spec = (
        1usize..4,
        1usize..3,
        0usize..2,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    prop::collection::vec(spec, 1..4).prop_map(|specs| {
        let mut b = Model::builder();
        let mut c = 2;
        for (i, (o, k, pad, bias, relu, unfused)) in specs.into_iter().enumerate() {
            let n = o * c * k * k;
            let w = Tensor::new(
                vec![o, c, k, k],
                (0..n).map(|v| ((v * 7) % 9) as f32 * 0.1 - 0.4).collect(),
            )
            .unwrap();
            let bias = bias.then(|| (0..o).map(|v| v as f32 * 0.05).collect());
            let p = ConvParams::default().padding(pad);
            b = b.conv2d(&format!("conv{i}"), w, bias, p, relu);
            if unfused {
                b = b.relu(&format!("relu{i}"));
            }
            c = o;
        }
        b.build().unwrap().layers().to_vec()
    })
}

/// A conv geometry `(input dims, weight dims, params)`, valid or not.
fn geometry() -> impl Strategy<Value = ([usize; 4], [usize; 4], ConvParams)> {
    let valid = (
        (1usize..3, 1usize..3, 1usize..4, 1usize..4),
        (1usize..7, 1usize..7, 1usize..4, 1usize..4),
        (1usize..3, 0usize..3, 1usize..3),
    )
        .prop_map(|((n, g, cig, cog), (h, w, kh, kw), (s, pad, d))| {
            let p = ConvParams::default()
                .groups(g)
                .stride(s)
                .padding(pad)
                .dilation(d);
            ([n, g * cig, h, w], [g * cog, cig, kh, kw], p)
        });
    let raw = (
        [small(), small(), small(), small()],
        [small(), small(), small(), small()],
        params(small()),
    );
    prop_oneof![3 => valid, 1 => raw]
}

fn qconfig() -> impl Strategy<Value = QConfig> {
    prop::sample::select(QConfig::PRESETS.to_vec()).prop_map(|n| QConfig::preset(n).unwrap())
}

fn threads() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        Just(None),
        Just(Some(1)),
        Just(Some(2)),
        Just(Some(0)),
        Just(Some(fast::MAX_THREADS + 1)),
        Just(Some(usize::MAX)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn tensor_constructors_and_accessors_never_panic(
        dims in prop::collection::vec(any_size(), 0..6), len in 0usize..64
    ) {
        let t = no_panic("Tensor::new", || Tensor::new(dims.clone(), vec![0u8; len]))?;
        let raw = Tensor { dims, data: vec![0u8; len] };
        call("Tensor::dims4", || raw.dims4("x").map(drop))?;
        // Only split tensors whose dims the constructor accepted (a hand-built tensor of dims
        // [1, 2^40] and no data splits into 0 chunks, which is fine, but costs nothing).
        if let Ok(t) = t {
            call("Tensor::split_axis0", || t.split_axis0().map(drop))?;
        }
        call("Tensor::split_axis0 (raw)", || raw.clone().split_axis0().map(drop))?;
    }

    #[test]
    fn conv_geometry_never_panics(
        x in [any_size(), any_size(), any_size(), any_size()],
        w in [any_size(), any_size(), any_size(), any_size()],
        p in params(any_size()),
        fields in prop::collection::vec(any_size(), 9),
    ) {
        call("ConvParams::validate", || p.validate())?;
        if let Ok(s) = no_panic("ConvShape::new", || ConvShape::new(x, w, p))? {
            call("ConvShape accessors", || {
                (s.input_len(), s.weight_len(), s.output_len(), s.k(), s.macs(), s.weight_dims())
            })?;
            call("ConvShape::validate (of a built shape)", || s.validate())?;
        }
        let raw = ConvShape {
            n: fields[0], c_in: fields[1], h: fields[2], w: fields[3], c_out: fields[4],
            kh: fields[5], kw: fields[6], params: p, h_out: fields[7], w_out: fields[8],
        };
        call("ConvShape::validate (hand-built)", || raw.validate())?;
    }

    #[test]
    fn qparams_and_quantize_never_panic(
        scale in any_f32(), zp in any_i32(), dt in dtype(), raw in raw_qparams(),
        min in any_f32(), max in any_f32(), sym in any::<bool>(), custom in any::<bool>(),
        r in (any_i32(), any_i32()), xs in prop::collection::vec(any_f32(), 0..16),
        bytes in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        call("QParams::new", || QParams::new(scale, zp, dt))?;
        call("calculate_qparams", || {
            calculate_qparams(min, max, dt, sym, QRange { min: r.0, max: r.1 }, custom)
        })?;
        call("quantize_slice (hand-built qparams)", || quantize_slice(&xs, &raw))?;
        call("dequantize_slice (hand-built qparams)", || dequantize_slice(&bytes, &raw))?;
        call("QuantizeSteps::new (hand-built qparams)", || QuantizeSteps::new(&raw).level(min))?;
        call("QRange::clamp", || QRange { min: r.0, max: r.1 }.clamp(zp))?;
        call("QRange::max_offset", || QRange { min: r.0, max: r.1 }.max_offset(zp))?;
        let m = QuantizedMultiplier { multiplier: r.0, shift: r.1 };
        call("multiply_by_quantized_multiplier", || multiply_by_quantized_multiplier(zp, m))?;
        call("rounding_divide_by_pot", || rounding_divide_by_pot(zp, r.1))?;
        let table = StepTable {
            base: r.0,
            top: r.1,
            thresholds: xs.iter().map(|&v| v as i32).collect(),
            slope: scale,
            offset: min,
            limit: zp,
        };
        call("StepTable::lookup (hand-built)", || (table.lookup(zp), table.search(r.0)))?;
    }

    #[test]
    fn epilogue_constructor_and_requantization_never_panic(
        f in formula(), in_scale in any_f32(), wqp in raw_wqp(),
        bias in prop::option::of(prop::collection::vec(any_f32(), 0..4)),
        out in raw_qparams(), relu in any::<bool>(), channels in 0usize..4,
        raw in raw_epilogue(), acc in any_i32(), o in 0usize..4,
        accs in prop::collection::vec(any_i32(), 0..12), plane in any_size(),
        wq in prop::collection::vec(any::<i8>(), 0..12), in_zp in any_i32(), k in any_size(),
    ) {
        let built = no_panic("Epilogue::new", || {
            Epilogue::new(f, in_scale, &wqp, bias.as_deref(), out, relu, channels)
        })?;
        for epi in built.into_iter().chain([raw]) {
            call("Epilogue::validate", || epi.validate())?;
            call("reference::requantize", || {
                reference::requantize(&accs, &epi, epi.channels.len(), plane).map(drop)
            })?;
            call("Epilogue::check_accumulator", || {
                epi.check_accumulator(&wq, &wqp, out.dtype.full_range(), in_zp, k, None)
            })?;
            if o < epi.channels.len() && epi.validate().is_ok() {
                call("Epilogue::apply", || epi.apply(acc, o))?;
                call("Epilogue::step_table", || epi.step_table(o).lookup(acc))?;
            }
        }
    }

    #[test]
    fn observers_never_panic(
        kind in prop::sample::select(ObserverKind::ALL.to_vec()), dt in dtype(),
        sym in any::<bool>(), rr in any::<bool>(),
        qr in prop::option::of((any_i32(), any_i32())), c in any_f32(),
        bins in prop_oneof![0usize..300, Just(usize::MAX)], up in prop_oneof![0usize..20, Just(usize::MAX)],
        batches in prop::collection::vec(prop::collection::vec(any_f32(), 0..24), 0..4),
        channels in any_size(), scheme in scheme(),
        state in (any_f32(), any_f32(), prop::collection::vec(any_f32(), 0..8)),
    ) {
        let mut cfg = ObserverConfig::new(kind, dt)
            .symmetric(sym)
            .reduce_range(rr)
            .averaging_constant(c)
            .bins(bins)
            .upsample_rate(up);
        if let Some((a, b)) = qr {
            cfg = cfg.quant_range(QRange { min: a, max: b });
        }
        if let Ok(mut obs) = no_panic("ObserverConfig::build", || cfg.build())? {
            for b in &batches {
                let _ = no_panic("Observer::observe", || obs.observe(b, "batch"))?;
            }
            call("Observer::qparams", || obs.qparams().map(drop))?;
            call("Observer::qparams_or_uncalibrated_default", || {
                obs.qparams_or_uncalibrated_default()
            })?;
        }
        let (min, max, hist) = state;
        let h_cfg = ObserverConfig::new(ObserverKind::Histogram, dt).bins(hist.len().max(1));
        if let Ok(h) = no_panic("HistogramObserver::from_state", || {
            HistogramObserver::from_state(h_cfg, min, max, hist.clone())
        })? {
            call("HistogramObserver::non_linear_param_search", || h.non_linear_param_search())?;
        }
        let mut pc = PerChannelMinMaxObserver::new(dt, sym, rr);
        for b in &batches {
            call("PerChannelMinMaxObserver::observe", || pc.observe(b, channels, "w").map(drop))?;
        }
        call("PerChannelMinMaxObserver::qparams", || pc.qparams().map(drop))?;
        if let Some(b) = batches.first() {
            call("weight_qparams", || weight_qparams(b, channels, scheme, dt).map(drop))?;
        }
    }

    #[test]
    fn conv_kernels_never_panic_on_mismatched_inputs(
        (x, w, p) in geometry(),
        raw_out in [small(), small()],
        hand_built in prop::bool::weighted(0.2),
        dx in prop_oneof![4 => Just(1usize), 1 => 0usize..3],
        dw in prop_oneof![4 => Just(1usize), 1 => 0usize..3],
        bias in prop::option::of(prop::collection::vec(any_f32(), 0..4)),
        x_qp in prop_oneof![2 => valid_qparams(), 1 => raw_qparams()],
        wqp in prop_oneof![
            2 => (0.001f32..0.1).prop_map(|s| WeightQParams::per_tensor(QScheme::PerTensorSymmetric, s, 0)),
            1 => raw_wqp(),
        ],
        epi in raw_epilogue(),
        good_qp in valid_qparams(), f in formula(), threads in threads(),
    ) {
        // The shape: from the constructor, or hand-built with any output size.
        let s = match ConvShape::new(x, w, p) {
            Ok(s) if !hand_built => s,
            _ => ConvShape {
                n: x[0], c_in: x[1], h: x[2], w: x[3], c_out: w[0], kh: w[2], kw: w[3],
                params: p, h_out: raw_out[0], w_out: raw_out[1],
            },
        };
        let xlen = (x.iter().product::<usize>() + dx).saturating_sub(1);
        let wlen = (w.iter().product::<usize>() + dw).saturating_sub(1);
        let xf: Vec<f32> = (0..xlen).map(|i| i as f32 * 0.5).collect();
        let wf: Vec<f32> = (0..wlen).map(|i| 0.25 - i as f32 * 0.125).collect();
        let xq: Vec<u8> = (0..xlen).map(|i| (i * 13) as u8).collect();
        let wq: Vec<i8> = (0..wlen).map(|i| (i * 7) as i8).collect();
        let opts = FastConvOptions::splitting_small(threads);
        // Also with an epilogue built properly for the weight, so that the kernels get past it.
        let good_epi = Epilogue::new(
            f, good_qp.scale, &WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.01, 0),
            None, good_qp, false, w[0],
        ).ok();
        call("reference::conv2d_f32", || reference::conv2d_f32(&xf, &wf, bias.as_deref(), &s).map(drop))?;
        call("reference::conv2d_acc", || reference::conv2d_acc(&xq, &x_qp, &wq, &wqp, &s).map(drop))?;
        call("fast::conv2d_f32", || fast::conv2d_f32(&xf, &wf, bias.as_deref(), &s, &opts).map(drop))?;
        call("reference::quantize_weight", || reference::quantize_weight(&wf, &wqp, w[0]).map(drop))?;
        for e in [Some(epi), good_epi].into_iter().flatten() {
            call("reference::conv2d_quantized", || {
                reference::conv2d_quantized(&xq, &x_qp, &wq, &wqp, &e, &s).map(drop)
            })?;
            call("fast::conv2d_quantized", || {
                fast::conv2d_quantized(&xq, &x_qp, &wq, &wqp, &e, &s, &opts).map(drop)
            })?;
            for d in [Device::CpuReference, Device::Cpu] {
                call("Device::conv2d_quantized", || {
                    d.conv2d_quantized(&xq, &x_qp, &wq, &wqp, &e, &s).map(drop)
                })?;
            }
            if let Ok(pc) = no_panic("PackedConv2d::new", || PackedConv2d::new(&wq, w, &wqp, &e, p))? {
                call("PackedConv2d::run", || pc.run(&xq, x, &x_qp, &opts).map(drop))?;
                call("PackedConv2d::run_acc", || pc.run_acc(&xq, x, &x_qp, &opts).map(drop))?;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn hand_built_models_never_panic_from_prepare_to_run(
        layers in prop_oneof![2 => valid_layers(), 1 => raw_layers()], qc in qconfig(),
        x in input(2), allow in any::<bool>(),
        zp in any_i32(), scale in any_f32(),
    ) {
        let Ok(model) = no_panic("Model::new", || Model::new(layers))? else {
            return Ok(());
        };
        call("Model::validate", || model.validate())?;
        call("Model::forward", || model.forward(&x).map(drop))?;
        call("histograms::point_histograms", || {
            histograms::point_histograms(&model, qc.activation.dtype, false, std::slice::from_ref(&x)).map(drop)
        })?;
        let Ok(mut pm) = no_panic("PreparedModel::new", || PreparedModel::new(model.clone(), qc.clone()))? else {
            return Ok(());
        };
        let _ = no_panic("PreparedModel::calibrate", || pm.calibrate(&x))?;
        let opts = ConvertOptions { allow_uncalibrated: allow, ..Default::default() };
        let Ok((mut qm, _)) = no_panic("PreparedModel::convert", || pm.convert(&opts))? else {
            return Ok(());
        };
        for d in [Device::CpuReference, Device::Cpu] {
            call("QuantizedModel::run", || qm.run(&x, &d).map(drop))?;
            call("QuantizedModel::run_points", || qm.run_points(&x, &d).map(drop))?;
            call("diagnostics::diagnose", || {
                diagnostics::diagnose(&model, &qm, &x, &d, None, false).map(drop)
            })?;
        }
        // QParams has public fields: any hand-built value must give an error or a result, and a
        // refused one leaves a model that still runs.
        let mut qp = qm.input_qp();
        qp.zero_point = zp;
        qp.scale = scale;
        call("QuantizedModel::set_input_qp", || qm.set_input_qp(qp))?;
        for d in [Device::CpuReference, Device::Cpu] {
            call("QuantizedModel::run (hand-edited qparams)", || qm.run(&x, &d).map(drop))?;
        }
    }

    #[test]
    fn thread_counts_are_checked_before_running(threads in threads()) {
        let opts = FastConvOptions::splitting_small(threads);
        let r: Result<()> = no_panic("FastConvOptions::validate", || opts.validate())?;
        let in_bounds = threads.is_none_or(|t| (1..=fast::MAX_THREADS).contains(&t));
        prop_assert_eq!(r.is_ok(), in_bounds, "{:?}", r);
    }
}
