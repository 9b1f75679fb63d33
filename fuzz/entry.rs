//! What each fuzz target does with its input, shared by the libFuzzer targets
//! (`fuzz_targets/*.rs`) and by the stable-cargo replay test (`tests/bad_inputs.rs`), so that
//! CI replays the corpora through exactly the code the fuzzers ran.
//!
//! Every function must return normally for every input: an `Err` is fine, a panic is a bug.
//! Each returns whether the input parsed, so tests can check that the seeds are valid files.
#![allow(dead_code)]

use squint::io::npy;
use squint::io::safetensors::StFile;
use squint::pipeline::{
    ConvertOptions, Device, Layer, Model, PreparedModel, QConfig, QuantizedModel,
};
use squint::shape::ConvShape;
use squint::tensor::Tensor;
use std::path::Path;

/// Float weights the `model_json` target resolves names against: `conv1`/`conv2` shaped as in
/// the golden end-to-end model (Conv2d(3,16,3), Conv2d(16,8,3), with biases), `dw` a depthwise
/// Conv2d(16,16,3,groups=16), `pw` a Conv2d(16,4,1), `big` a Conv2d(3,2,5), `i8w` an int8
/// tensor (wrong dtype).
pub const WEIGHTS: &[u8] = include_bytes!("fixtures/weights.safetensors");

/// Runs are skipped when a tensor would exceed this many elements (keeps executions fast and
/// memory small; the size checks themselves run on every input).
const MAX_RUN_ELEMENTS: usize = 1 << 16;

fn name() -> &'static Path {
    Path::new("fuzz-input")
}

/// `.npy` bytes through the reader of every element type.
pub fn npy(bytes: &[u8]) -> bool {
    let f = npy::read_bytes::<f32>(bytes, name()).is_ok();
    let u = npy::read_bytes::<u8>(bytes, name()).is_ok();
    let i = npy::read_bytes::<i8>(bytes, name()).is_ok();
    let w = npy::read_bytes::<i32>(bytes, name()).is_ok();
    f || u || i || w
}

/// `.safetensors` bytes: parse, look every tensor up as each dtype, and try them as the
/// weights of a one-conv model for every conv-shaped F32 tensor.
pub fn safetensors(bytes: &[u8]) -> bool {
    let Ok(st) = StFile::from_bytes(bytes, name()) else {
        return false;
    };
    for key in st.tensors.keys() {
        let _ = st.f32(key, name());
        let _ = st.i8(key, name());
        let _ = st.i32(key, name());
        if let Some(layer) = key.strip_suffix(".weight") {
            let desc = format!(r#"{{"layers": [{{"name": {layer:?}, "type": "conv2d"}}]}}"#);
            if let Ok(m) = Model::from_json_str(&desc, name(), &st, name()) {
                run_float(&m);
            }
        }
    }
    true
}

/// A model description (UTF-8 JSON) against [`WEIGHTS`]; a model that parses is run in float,
/// then converted with pinned qparams and run int8 on both CPU devices.
pub fn model_json(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let st = StFile::from_bytes(WEIGHTS, Path::new("weights.safetensors"))
        .expect("the fixture weights parse");
    let Ok(model) = Model::from_json_str(text, name(), &st, name()) else {
        return false;
    };
    run_float(&model);
    let points = model.points();
    if let Ok(p) = PreparedModel::new(model.clone(), QConfig::qnnpack()) {
        let opts = ConvertOptions {
            allow_uncalibrated: false,
            pinned: points
                .into_iter()
                .enumerate()
                .map(|(i, n)| (n, (0.01 + 0.005 * i as f32, (i as i32 * 37) % 256)))
                .collect(),
        };
        if let Ok((qm, _)) = p.convert(&opts) {
            run_quantized(&qm);
        }
    }
    true
}

/// A quantized model file; a model that loads is run on both CPU devices, which must agree.
pub fn quantized_model(bytes: &[u8]) -> bool {
    match QuantizedModel::from_bytes(bytes, name()) {
        Ok(qm) => {
            run_quantized(&qm);
            true
        }
        Err(_) => false,
    }
}

/// Dispatches on the target's name (the corpus directory's name).
pub fn by_target(target: &str, bytes: &[u8]) -> bool {
    match target {
        "npy" => npy(bytes),
        "safetensors" => safetensors(bytes),
        "model_json" => model_json(bytes),
        "quantized_model" => quantized_model(bytes),
        other => panic!("no fuzz target '{other}'"),
    }
}

/// A small deterministic input for a model whose first conv has `weight_dims` and `groups`.
fn input_for(weight_dims: [usize; 4], groups: usize) -> Option<Tensor<f32>> {
    let c = weight_dims[1].checked_mul(groups)?;
    let dims = vec![1, c, 8, 8];
    let n = c.checked_mul(64).filter(|&n| n <= MAX_RUN_ELEMENTS)?;
    let data = (0..n)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    Tensor::new(dims, data).ok()
}

/// Whether every layer's output stays small for `x` (so running is cheap).
fn small_enough(
    shapes: impl Iterator<Item = ([usize; 4], squint::shape::ConvParams)>,
    x: [usize; 4],
) -> bool {
    let mut d = x;
    for (w, params) in shapes {
        match ConvShape::new(d, w, params) {
            Ok(s) if s.output_len() <= MAX_RUN_ELEMENTS && s.macs() <= 1 << 22 => {
                d = s.output_dims()
            }
            Ok(_) => return false,
            // Errors are fine (and must be typed): let the model report them.
            Err(_) => return true,
        }
    }
    true
}

fn run_float(model: &Model) {
    let convs: Vec<_> = model
        .layers()
        .iter()
        .filter_map(|l| match l {
            Layer::Conv(c) => Some((c.weight_dims(), c.params)),
            Layer::Relu { .. } => None,
        })
        .collect();
    let Some(&(w0, p0)) = convs.first() else {
        return;
    };
    let Some(x) = input_for(w0, p0.groups) else {
        return;
    };
    if small_enough(convs.iter().copied(), [1, x.dims[1], 8, 8]) {
        let _ = model.forward(&x);
    }
}

fn run_quantized(qm: &QuantizedModel) {
    let Some(first) = qm.convs().first() else {
        let x = Tensor::new(vec![1, 1, 2, 2], vec![0.5, -0.25, 1.0, 0.0]).expect("valid dims");
        let _ = qm.run(&x, &Device::CpuReference);
        return;
    };
    let Some(x) = input_for(first.w_dims(), first.params().groups) else {
        return;
    };
    let shapes = qm.convs().iter().map(|c| (c.w_dims(), c.params()));
    if !small_enough(shapes, [1, x.dims[1], 8, 8]) {
        return;
    }
    let reference = qm.run(&x, &Device::CpuReference);
    let fast = qm.run(&x, &Device::Cpu);
    match (&reference, &fast) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "cpu-reference and cpu-fast disagree"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "cpu-reference and cpu-fast disagree on success: {:?} vs {:?}",
            reference.as_ref().err().map(ToString::to_string),
            fast.as_ref().err().map(ToString::to_string)
        ),
    }
}
