//! Bad inputs through the library: every one gives a specific, typed error (never a panic), and
//! nothing is left half-written. Also replays the fuzz corpora (`fuzz/corpus/*`) through the
//! same entry points the fuzz targets use, so CI replays them with stable cargo.

mod hardening_support;

#[path = "../fuzz/entry.rs"]
mod fuzz_entry;

use hardening_support::*;
use squint::cpu::{
    self,
    fast::{FastConvOptions, PackedConv2d},
};
use squint::io::npy;
use squint::io::safetensors::{StFile, StTensor};
use squint::pipeline::model::FloatConv;
use squint::pipeline::read_pinned_qparams;
use squint::pipeline::{
    ConvertOptions, Device, Layer, Model, PreparedModel, QConfig, QuantizedModel,
};
use squint::quant::{Epilogue, QDtype, QParams, QRange, QScheme, RequantFormula, WeightQParams};
use squint::shape::{ConvParams, ConvShape};
use squint::tensor::Tensor;
use squint::{Error, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The name of an error's variant, so that table rows can expect one.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::Shape(_) => "Shape",
        Error::InvalidParameter(_) => "InvalidParameter",
        Error::NonFinite { .. } => "NonFinite",
        Error::Uncalibrated { .. } => "Uncalibrated",
        Error::UncalibratedPoints { .. } => "UncalibratedPoints",
        Error::AccumulatorOverflow { .. } => "AccumulatorOverflow",
        Error::Io { .. } => "Io",
        Error::Format { .. } => "Format",
        Error::UnknownName { .. } => "UnknownName",
        Error::NoAdapter { .. } => "NoAdapter",
        Error::Gpu(_) => "Gpu",
        Error::DeviceLost(_) => "DeviceLost",
        Error::DeviceLimit(_) => "DeviceLimit",
        Error::Timeout(_) => "Timeout",
        Error::KernelSource { .. } => "KernelSource",
        Error::Graph { .. } => "Graph",
        Error::Golden { .. } => "Golden",
    }
}

type Run<'a> = Box<dyn Fn() -> Result<()> + 'a>;

/// One row: what is wrong, the error variant expected, words the message must contain.
struct Row<'a> {
    what: &'static str,
    kind: &'static str,
    mentions: &'static [&'static str],
    run: Run<'a>,
}

fn row<'a>(
    what: &'static str,
    kind: &'static str,
    mentions: &'static [&'static str],
    run: impl Fn() -> Result<()> + 'a,
) -> Row<'a> {
    Row {
        what,
        kind,
        mentions,
        run: Box::new(run),
    }
}

/// Runs every row (catching panics so that one bad row does not hide the others) and fails
/// listing every row that did not give its error.
fn check_table(rows: Vec<Row<'_>>) {
    let mut failures = Vec::new();
    for r in &rows {
        match catch_unwind(AssertUnwindSafe(|| (r.run)())) {
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: PANICKED: {msg}", r.what));
            }
            Ok(Ok(())) => failures.push(format!("{}: succeeded, expected {}", r.what, r.kind)),
            Ok(Err(e)) => {
                let text = e.to_string();
                let lower = text.to_lowercase();
                if kind(&e) != r.kind {
                    failures.push(format!(
                        "{}: got {} ({text}), expected {}",
                        r.what,
                        kind(&e),
                        r.kind
                    ));
                } else if let Some(m) = r
                    .mentions
                    .iter()
                    .find(|m| !lower.contains(&m.to_lowercase()))
                {
                    failures.push(format!("{}: message lacks '{m}': {text}", r.what));
                } else if text.contains('\n') {
                    failures.push(format!("{}: message spans several lines: {text}", r.what));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn p(name: &str) -> &Path {
    Path::new(name)
}

/// Parses a model description against `st`.
fn parse(json: &str, st: &StFile) -> Result<Model> {
    Model::from_json_str(json, p("m.json"), st, p("w.safetensors"))
}

/// The tiny model's description with one key of conv1 set to a JSON value.
fn conv1_with(key: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(TINY_JSON).unwrap();
    v["layers"][0][key] = serde_json::from_str(value).unwrap();
    v.to_string()
}

/// The tiny weights with one tensor replaced.
fn weights_with(name: &str, t: StTensor) -> StFile {
    let mut st = tiny_weights();
    st.tensors.insert(name.into(), t);
    st
}

fn f32t(dims: &[usize], data: Vec<f32>) -> StTensor {
    StTensor::F32(Tensor::new(dims.to_vec(), data).unwrap())
}

/// Runs the tiny quantized model on `x` on both CPU devices.
fn run_tiny(qm: &QuantizedModel, x: &Tensor<f32>) -> Result<()> {
    for d in [Device::CpuReference, Device::Cpu] {
        qm.run(x, &d)?;
    }
    Ok(())
}

/// A copy of the fixture's quantized model with its metadata edited, loaded.
fn load_edited(fx: &Fixture, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Result<()> {
    let path = fx.path(name);
    std::fs::copy(fx.path("model.q.safetensors"), &path).unwrap();
    edit_metadata(&path, edit);
    QuantizedModel::load(&path).map(drop)
}

/// A copy of the fixture's quantized model with one tensor replaced, loaded.
fn load_with_tensor(fx: &Fixture, name: &str, key: &str, t: StTensor) -> Result<()> {
    let path = fx.path(name);
    let mut f = StFile::read(fx.path("model.q.safetensors")).unwrap();
    f.tensors.insert(key.into(), t);
    f.write(&path).unwrap();
    QuantizedModel::load(&path).map(drop)
}

/// A one-layer model `Conv2d(1, 1, 1)` with `padding` on a 1x1x1x1 input.
fn padded_1x1(padding: usize) -> Model {
    Model::builder()
        .conv2d(
            "conv1",
            Tensor::new(vec![1, 1, 1, 1], vec![0.5]).unwrap(),
            None,
            ConvParams::default().padding(padding),
            false,
        )
        .build()
        .unwrap()
}

/// A one-conv model made by [`Model::new`] (which validates it), with weight `weight`.
fn hand_built_model(weight: Tensor<f32>) -> squint::Result<Model> {
    Model::new(vec![Layer::Conv(FloatConv {
        name: "conv1".into(),
        weight,
        bias: None,
        params: ConvParams::default(),
        relu: false,
    })])
}

/// quint8 input qparams, per-tensor weight qparams and a one-channel epilogue, all valid.
fn unit_conv_qparams() -> Result<(QParams, WeightQParams, Epilogue)> {
    let qp = QParams::new(0.1, 0, QDtype::QUInt8)?;
    let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.1, 0);
    let epi = Epilogue::new(RequantFormula::Qnnpack, 0.1, &w_qp, None, qp, false, 1)?;
    Ok((qp, w_qp, epi))
}

fn one_pixel() -> Tensor<f32> {
    Tensor::new(vec![1, 1, 1, 1], vec![0.25]).unwrap()
}

fn with_value(mut t: Tensor<f32>, index: usize, v: f32) -> Tensor<f32> {
    t.data[index] = v;
    t
}

#[test]
fn every_bad_input_gives_its_specific_typed_error_without_panicking() {
    let fx = Fixture::new();
    let fx = &fx;
    let x = tiny_x(5);
    let valid_npy = npy_f32(&X_DIMS, &x.data);
    let valid_st = std::fs::read(fx.path("weights.safetensors")).unwrap();
    let qm = tiny_quantized(QConfig::qnnpack());
    let qm = &qm;
    let st = tiny_weights();
    let st = &st;
    let rows = vec![
        // ---- .npy files
        row(
            "truncated .npy",
            "Format",
            &["npy.npy", "truncated"],
            || npy::read_bytes::<f32>(&valid_npy[..valid_npy.len() - 5], p("npy.npy")).map(drop),
        ),
        row(".npy cut inside its header", "Format", &["h.npy"], || {
            npy::read_bytes::<f32>(&valid_npy[..40], p("h.npy")).map(drop)
        }),
        row(
            ".npy with a corrupt magic",
            "Format",
            &["m.npy", "not a valid .npy"],
            || {
                let mut b = valid_npy.clone();
                b[1] = b'X';
                npy::read_bytes::<f32>(&b, p("m.npy")).map(drop)
            },
        ),
        row(
            ".npy with a corrupt header dict",
            "Format",
            &["d.npy"],
            || {
                let b = npy_raw("<f4", false, "(1, 3,, 6)", &[]);
                npy::read_bytes::<f32>(&b, p("d.npy")).map(drop)
            },
        ),
        row(
            ".npy with extra bytes after the data",
            "Format",
            &["unexpected bytes"],
            || {
                let mut b = valid_npy.clone();
                b.extend([0; 4]);
                npy::read_bytes::<f32>(&b, p("x.npy")).map(drop)
            },
        ),
        row(
            ".npy of int32 read as float32",
            "Format",
            &["wrong dtype", "float32"],
            || {
                let b = npy_raw("<i4", false, "(2, 2)", &[0; 16]);
                npy::read_bytes::<f32>(&b, p("i.npy")).map(drop)
            },
        ),
        row(
            ".npy of float64 read as float32",
            "Format",
            &["wrong dtype"],
            || {
                let b = npy_raw("<f8", false, "(2,)", &[0; 16]);
                npy::read_bytes::<f32>(&b, p("f8.npy")).map(drop)
            },
        ),
        row(
            "big-endian .npy",
            "Format",
            &["wrong dtype", "big-endian"],
            || {
                let b = npy_raw(">f4", false, "(2,)", &[0; 8]);
                npy::read_bytes::<f32>(&b, p("be.npy")).map(drop)
            },
        ),
        row(
            ".npy whose element count overflows",
            "Format",
            &["o.npy"],
            || {
                let b = npy_raw("<f4", false, "(4611686018427387904, 8)", &[0; 8]);
                npy::read_bytes::<f32>(&b, p("o.npy")).map(drop)
            },
        ),
        row(
            ".npy claiming 2^40 elements it does not hold",
            "Format",
            &["big.npy"],
            || {
                let b = npy_raw("|u1", false, "(1099511627776,)", &[0; 8]);
                npy::read_bytes::<u8>(&b, p("big.npy")).map(drop)
            },
        ),
        row(
            ".npy header longer than numpy.load accepts",
            "Format",
            &["numpy.load"],
            || {
                let b = npy_raw("<f4", false, &format!("(1,{})", " ".repeat(20_000)), &[]);
                npy::read_bytes::<f32>(&b, p("long.npy")).map(drop)
            },
        ),
        row(".npy of a structured dtype", "Format", &["nested"], || {
            let b = npy_raw("[('a', '<f4')]", false, "(1,)", &[0; 4]);
            npy::read_bytes::<f32>(&b, p("rec.npy")).map(drop)
        }),
        row("missing .npy file", "Io", &["nope.npy"], || {
            npy::read::<f32>(fx.path("nope.npy")).map(drop)
        }),
        // ---- .safetensors files
        row(
            "truncated .safetensors",
            "Format",
            &["w.st", "safetensors"],
            || StFile::from_bytes(&valid_st[..valid_st.len() - 3], p("w.st")).map(drop),
        ),
        row("empty .safetensors", "Format", &["e.st"], || {
            StFile::from_bytes(&[], p("e.st")).map(drop)
        }),
        row(
            ".safetensors with a corrupt JSON header",
            "Format",
            &["c.st"],
            || {
                let mut b = valid_st.clone();
                b[9] = b'#';
                StFile::from_bytes(&b, p("c.st")).map(drop)
            },
        ),
        row(
            ".safetensors whose header length is huge",
            "Format",
            &["h.st"],
            || {
                let mut b = valid_st.clone();
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                StFile::from_bytes(&b, p("h.st")).map(drop)
            },
        ),
        row(
            ".safetensors whose shape overflows",
            "Format",
            &["s.st"],
            || {
                let h = br#"{"t":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,8]}}"#;
                let mut b = (h.len() as u64).to_le_bytes().to_vec();
                b.extend(h);
                b.extend([0; 8]);
                StFile::from_bytes(&b, p("s.st")).map(drop)
            },
        ),
        row(
            "float16 weights",
            "Format",
            &["conv1.weight", "F16"],
            || {
                let h = br#"{"conv1.weight":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#;
                let mut b = (h.len() as u64).to_le_bytes().to_vec();
                b.extend(h);
                b.extend([0; 4]);
                StFile::from_bytes(&b, p("f16.st")).map(drop)
            },
        ),
        row(
            "int32 weights where float32 is expected",
            "Format",
            &["conv1.weight", "expected F32"],
            || {
                let w = StTensor::I32(Tensor::new(vec![4, 3, 3, 3], vec![1; 108]).unwrap());
                parse(TINY_JSON, &weights_with("conv1.weight", w)).map(drop)
            },
        ),
        // ---- model descriptions
        row(
            "model description that is not JSON",
            "Format",
            &["m.json", "invalid JSON"],
            || parse("{\"layers\": [", st).map(drop),
        ),
        row(
            "model description without layers",
            "Format",
            &["layers"],
            || parse("{}", st).map(drop),
        ),
        row(
            "model description with no layer",
            "InvalidParameter",
            &["at least one layer"],
            || parse(r#"{"layers": []}"#, st).map(drop),
        ),
        row("unknown layer type", "Format", &["maxpool"], || {
            parse(r#"{"layers": [{"name": "p", "type": "maxpool"}]}"#, st).map(drop)
        }),
        row("missing weight tensor", "Format", &["convX.weight"], || {
            parse(r#"{"layers": [{"name": "convX"}]}"#, st).map(drop)
        }),
        row("3-D conv weight", "Shape", &["conv1.weight", "4-D"], || {
            parse(
                TINY_JSON,
                &weights_with("conv1.weight", f32t(&[4, 3, 9], vec![0.1; 108])),
            )
            .map(drop)
        }),
        row(
            "weight with a zero-sized dimension",
            "Shape",
            &["zero-sized"],
            || {
                let w = weights_with("conv1.weight", f32t(&[4, 0, 3, 3], vec![]));
                parse(&TINY_JSON.replace("\"in_channels\": 3,", ""), &w).map(drop)
            },
        ),
        row(
            "in_channels disagreeing with the weight",
            "Shape",
            &["in_channels"],
            || parse(&conv1_with("in_channels", "5"), st).map(drop),
        ),
        row(
            "kernel_size disagreeing with the weight",
            "Shape",
            &["kernel_size"],
            || parse(&conv1_with("kernel_size", "5"), st).map(drop),
        ),
        row("bias of the wrong length", "Shape", &["conv1.bias"], || {
            parse(
                TINY_JSON,
                &weights_with("conv1.bias", f32t(&[3], vec![0.0; 3])),
            )
            .map(drop)
        }),
        row(
            "stride 0 in a model description",
            "InvalidParameter",
            &["conv1", "stride"],
            || parse(&conv1_with("stride", "0"), st).map(drop),
        ),
        row(
            "dilation 0 in a model description",
            "InvalidParameter",
            &["dilation"],
            || parse(&conv1_with("dilation", "[1, 0]"), st).map(drop),
        ),
        row(
            "groups 0 in a model description",
            "InvalidParameter",
            &["groups"],
            || parse(&conv1_with("groups", "0"), st).map(drop),
        ),
        row(
            "groups not dividing out_channels",
            "InvalidParameter",
            &["groups", "out_channels"],
            || {
                let w = f32t(&[4, 1, 3, 3], vec![0.1; 36]);
                let json = conv1_with("groups", "3");
                parse(
                    &json.replace("\"in_channels\":3,", ""),
                    &weights_with("conv1.weight", w),
                )
                .map(drop)
            },
        ),
        row(
            "groups whose channel product overflows",
            "InvalidParameter",
            &["groups"],
            || parse(&conv1_with("groups", "9223372036854775807"), st).map(drop),
        ),
        row("negative stride", "Format", &["stride"], || {
            parse(&conv1_with("stride", "-1"), st).map(drop)
        }),
        row(
            "unsupported padding mode",
            "Format",
            &["padding_mode"],
            || parse(&conv1_with("padding_mode", "\"reflect\""), st).map(drop),
        ),
        row(
            "NaN in a weight",
            "NonFinite",
            &["conv1.weight", "NaN"],
            || {
                let mut w = values(108, 1);
                w[17] = f32::NAN;
                parse(
                    TINY_JSON,
                    &weights_with("conv1.weight", f32t(&[4, 3, 3, 3], w)),
                )
                .map(drop)
            },
        ),
        row("Inf in a bias", "NonFinite", &["conv1.bias", "inf"], || {
            let b = vec![0.0, f32::INFINITY, 0.0, 0.0];
            parse(TINY_JSON, &weights_with("conv1.bias", f32t(&[4], b))).map(drop)
        }),
        row(
            "a million CPU threads",
            "InvalidParameter",
            &["thread count", "1024", "1000000"],
            || {
                let s = ConvShape::new([1, 1, 4, 4], [1, 1, 1, 1], ConvParams::default())?;
                let opts = squint::cpu::fast::FastConvOptions::with_threads(1_000_000);
                squint::cpu::fast::conv2d_f32(&[0.0; 16], &[1.0], None, &s, &opts).map(drop)
            },
        ),
        row(
            "zero CPU threads",
            "InvalidParameter",
            &["thread count", "got 0"],
            || {
                let s = ConvShape::new([1, 1, 4, 4], [1, 1, 1, 1], ConvParams::default())?;
                let opts = squint::cpu::fast::FastConvOptions::with_threads(0);
                squint::cpu::fast::conv2d_f32(&[0.0; 16], &[1.0], None, &s, &opts).map(drop)
            },
        ),
        // ---- calibration
        row(
            "NaN in calibration data",
            "NonFinite",
            &["input", "NaN"],
            || {
                let mut pm = PreparedModel::new(tiny_model(), QConfig::qnnpack())?;
                pm.calibrate(&with_value(tiny_x(1), 3, f32::NAN))
            },
        ),
        row(
            "-Inf in calibration data",
            "NonFinite",
            &["input", "inf"],
            || {
                let mut pm = PreparedModel::new(tiny_model(), QConfig::x86())?;
                pm.calibrate(&with_value(tiny_x(1), 0, f32::NEG_INFINITY))
            },
        ),
        row("5-D calibration batch", "Shape", &["4-D"], || {
            let mut pm = PreparedModel::new(tiny_model(), QConfig::qnnpack())?;
            pm.calibrate(&Tensor::new(vec![1, 1, 3, 6, 6], vec![0.0; 108]).unwrap())
        }),
        row(
            "calibration batch of the wrong channel count",
            "Shape",
            &["conv1", "input channels"],
            || {
                let mut pm = PreparedModel::new(tiny_model(), QConfig::qnnpack())?;
                pm.calibrate(&Tensor::new(vec![1, 2, 6, 6], vec![0.0; 72]).unwrap())
            },
        ),
        row(
            "conversion without calibration",
            "UncalibratedPoints",
            &["input", "conv1", "conv2"],
            || {
                PreparedModel::new(tiny_model(), QConfig::qnnpack())?
                    .convert(&ConvertOptions::default())
                    .map(drop)
            },
        ),
        // ---- running a quantized model
        row("3-D input", "Shape", &["input", "4-D"], || {
            run_tiny(qm, &Tensor::new(vec![3, 6, 6], x.data.clone()).unwrap())
        }),
        row(
            "input with a zero-sized dimension",
            "Shape",
            &["zero-sized"],
            || run_tiny(qm, &Tensor::new(vec![1, 3, 0, 6], vec![]).unwrap()),
        ),
        row(
            "input channels not matching the weight",
            "Shape",
            &["conv1", "input channels"],
            || run_tiny(qm, &Tensor::new(vec![1, 2, 6, 6], vec![0.0; 72]).unwrap()),
        ),
        row(
            "kernel larger than the padded input",
            "Shape",
            &["conv1", "exceeds the padded input"],
            || run_tiny(qm, &Tensor::new(vec![1, 3, 2, 6], vec![0.0; 36]).unwrap()),
        ),
        row("NaN in the input", "NonFinite", &["input", "NaN"], || {
            run_tiny(qm, &with_value(x.clone(), 9, f32::NAN))
        }),
        row("Inf in the input", "NonFinite", &["input", "inf"], || {
            run_tiny(qm, &with_value(x.clone(), 0, f32::INFINITY))
        }),
        row(
            "padding so large the padded size overflows",
            "Shape",
            &["too large"],
            || {
                let qm = convert_pinned(padded_1x1(usize::MAX / 2), QConfig::qnnpack())?;
                qm.run(&one_pixel(), &Device::CpuReference).map(drop)
            },
        ),
        row(
            "output too large for host memory (CPU)",
            "DeviceLimit",
            &["conv1", "memory"],
            || {
                let qm = convert_pinned(padded_1x1(1 << 17), QConfig::qnnpack())?;
                run_tiny(&qm, &one_pixel())
            },
        ),
        row(
            "float output too large for host memory (calibration)",
            "DeviceLimit",
            &["conv1"],
            || PreparedModel::new(padded_1x1(1 << 17), QConfig::qnnpack())?.calibrate(&one_pixel()),
        ),
        // ---- conv geometry
        row("stride 0", "InvalidParameter", &["stride"], || {
            ConvShape::new([1, 3, 6, 6], [4, 3, 3, 3], ConvParams::default().stride(0)).map(drop)
        }),
        row("dilation 0", "InvalidParameter", &["dilation"], || {
            ConvShape::new(
                [1, 3, 6, 6],
                [4, 3, 3, 3],
                ConvParams::default().dilation(0),
            )
            .map(drop)
        }),
        row(
            "groups not dividing in_channels",
            "InvalidParameter",
            &["groups"],
            || {
                ConvShape::new([1, 3, 6, 6], [4, 1, 3, 3], ConvParams::default().groups(2))
                    .map(drop)
            },
        ),
        row(
            "kernel larger than the padded input (geometry)",
            "Shape",
            &["kernel width"],
            || {
                ConvShape::new([1, 3, 6, 2], [4, 3, 3, 5], ConvParams::default().padding(1))
                    .map(drop)
            },
        ),
        row(
            "dilated kernel span larger than any input",
            "Shape",
            &["exceeds the padded input"],
            || {
                let params = ConvParams::default().dilation(usize::MAX / 2);
                ConvShape::new([1, 3, 6, 6], [4, 3, 3, 3], params).map(drop)
            },
        ),
        row(
            "input element count overflowing",
            "Shape",
            &["too many elements"],
            || {
                ConvShape::new(
                    [1 << 32, 1 << 32, 1, 1],
                    [1, 1 << 32, 1, 1],
                    ConvParams::default(),
                )
                .map(drop)
            },
        ),
        row(
            "weight I * groups overflowing",
            "Shape",
            &["input channels"],
            || {
                let params = ConvParams::default().groups(1 << 62);
                ConvShape::new([1, 1 << 62, 1, 1], [1 << 62, 1 << 2, 1, 1], params).map(drop)
            },
        ),
        row(
            "tensor dims whose element count overflows",
            "Shape",
            &["too many elements"],
            || Tensor::<u8>::new(vec![1 << 32, 1 << 32], vec![]).map(drop),
        ),
        // ---- accumulator overflow
        row(
            "accumulator-overflow risk at conversion",
            "AccumulatorOverflow",
            &["conv1", "overflow"],
            || convert_pinned(all_ones_model(8192, 3), QConfig::qnnpack()).map(drop),
        ),
        // ---- names
        row(
            "unknown qconfig",
            "UnknownName",
            &["qconfig", "nope", "qnnpack"],
            || QConfig::preset("nope").map(drop),
        ),
        row(
            "unknown observer",
            "UnknownName",
            &["observer", "maxmin", "histogram"],
            || squint::observers::ObserverKind::parse("maxmin").map(drop),
        ),
        row(
            "unknown requantization formula",
            "UnknownName",
            &["formula", "fancy"],
            || RequantFormula::parse("fancy").map(drop),
        ),
        row("unknown dtype", "UnknownName", &["dtype", "int4"], || {
            QDtype::parse("int4").map(drop)
        }),
        // ---- pinned qparams
        row(
            "pinned qparams that are not JSON",
            "Format",
            &["pin.json", "invalid JSON"],
            || read_pinned_qparams(&fx.write("pin.json", b"{")).map(drop),
        ),
        row(
            "pinned qparams without a zero point",
            "Format",
            &["input", "zero_point"],
            || read_pinned_qparams(&fx.write("pin2.json", br#"{"input": {"scale": 1}}"#)).map(drop),
        ),
        row(
            "pinned scale 0",
            "InvalidParameter",
            &["input", "scale"],
            || {
                let pm = PreparedModel::new(tiny_model(), QConfig::qnnpack())?;
                let pinned = ["input", "conv1", "conv2"].map(|n| (n.to_string(), (0.0, 0)));
                let opts = ConvertOptions {
                    allow_uncalibrated: false,
                    pinned: pinned.into_iter().collect(),
                };
                pm.convert(&opts).map(drop)
            },
        ),
        // ---- quantized model files
        row(
            "quantized model that is a float state_dict",
            "Format",
            &["squint.model"],
            || QuantizedModel::load(&fx.path("weights.safetensors")).map(drop),
        ),
        row(
            "quantized model with corrupt metadata",
            "Format",
            &["invalid 'squint.model'"],
            || load_edited(fx, "q1.st", |v| v["layers"] = serde_json::json!("x")),
        ),
        row(
            "quantized model of an unknown format version",
            "Format",
            &["unsupported format"],
            || {
                load_edited(fx, "q2.st", |v| {
                    v["format"] = serde_json::json!("squint-quantized-v9")
                })
            },
        ),
        row(
            "quantized model with input scale 0",
            "Format",
            &["input qparams", "scale"],
            || {
                load_edited(fx, "q3.st", |v| {
                    v["input_qp"]["scale"] = serde_json::json!(0.0)
                })
            },
        ),
        row(
            "quantized model with an infinite input scale",
            "Format",
            &["scale"],
            || {
                load_edited(fx, "q4.st", |v| {
                    v["input_qp"]["scale"] = serde_json::json!(1e39)
                })
            },
        ),
        row(
            "quantized model with an input zero point out of range",
            "Format",
            &["zero point"],
            || {
                load_edited(fx, "q5.st", |v| {
                    v["input_qp"]["zero_point"] = serde_json::json!(i32::MIN)
                })
            },
        ),
        row(
            "quantized model with an output zero point out of range",
            "Format",
            &["conv1", "zero point"],
            || {
                load_edited(fx, "q6.st", |v| {
                    v["layers"][0]["out_qp"]["zero_point"] = serde_json::json!(4096)
                })
            },
        ),
        row(
            "quantized model with a weight zero point out of range",
            "Format",
            &["conv1", "zero point"],
            || {
                load_edited(fx, "q7.st", |v| {
                    v["layers"][0]["w_qp"]["zero_points"] = serde_json::json!([i32::MAX])
                })
            },
        ),
        row(
            "quantized model with too few weight scales",
            "Format",
            &["conv1", "scales"],
            || {
                load_edited(fx, "q8.st", |v| {
                    v["layers"][0]["w_qp"]["scales"] = serde_json::json!([0.1, 0.1])
                })
            },
        ),
        row(
            "quantized model with stride 0",
            "Format",
            &["conv1", "stride"],
            || {
                load_edited(fx, "q9.st", |v| {
                    v["layers"][0]["params"]["stride"] = serde_json::json!([0, 1])
                })
            },
        ),
        row(
            "quantized model with groups 0",
            "Format",
            &["conv2", "groups"],
            || {
                load_edited(fx, "q10.st", |v| {
                    v["layers"][1]["params"]["groups"] = serde_json::json!(0)
                })
            },
        ),
        row(
            "quantized model with a missing layer tensor",
            "Format",
            &["convZ.weight_q"],
            || {
                load_edited(fx, "q11.st", |v| {
                    v["layers"][1]["name"] = serde_json::json!("convZ")
                })
            },
        ),
        row(
            "quantized model with float weights",
            "Format",
            &["conv1.weight_q", "expected I8"],
            || {
                load_with_tensor(
                    fx,
                    "q12.st",
                    "conv1.weight_q",
                    f32t(&[4, 3, 3, 3], vec![0.0; 108]),
                )
            },
        ),
        row(
            "quantized model with a weight of zero-sized dims",
            "Format",
            &["conv1", "zero-sized"],
            || {
                let w =
                    StTensor::I8(Tensor::new(vec![0, 1 << 30, 1 << 30, 1 << 30], vec![]).unwrap());
                load_with_tensor(fx, "q13.st", "conv1.weight_q", w)
            },
        ),
        row(
            "quantized model with a NaN bias",
            "Format",
            &["conv1", "NaN"],
            || load_with_tensor(fx, "q14.st", "conv1.bias", f32t(&[4], vec![f32::NAN; 4])),
        ),
        row(
            "quantized model with an accumulator-overflow risk",
            "Format",
            &["conv1", "overflow"],
            || {
                let w = StTensor::I8(
                    Tensor::new(vec![4, 16384, 3, 3], vec![127; 4 * 16384 * 9]).unwrap(),
                );
                load_with_tensor(fx, "q15.st", "conv1.weight_q", w)
            },
        ),
        row(
            "quantized model whose layers do not chain",
            "Shape",
            &["conv2", "input channels"],
            || {
                let path = fx.path("q16.st");
                let mut f = StFile::read(fx.path("model.q.safetensors")).unwrap();
                f.tensors.insert(
                    "conv2.weight_q".into(),
                    StTensor::I8(Tensor::new(vec![2, 5, 1, 1], vec![1; 10]).unwrap()),
                );
                f.write(&path).unwrap();
                run_tiny(&QuantizedModel::load(&path)?, &x)
            },
        ),
        // ---- values built by hand through public fields, and thread counts
        row(
            "hand-built model with a 2-D weight",
            "Shape",
            &["conv1.weight", "4-D"],
            || {
                hand_built_model(Tensor::new(vec![2, 2], vec![0.5; 4]).unwrap())?
                    .forward(&one_pixel())
                    .map(drop)
            },
        ),
        row(
            "hand-built model whose weight data does not match its dims",
            "Shape",
            &["conv1.weight", "values"],
            || {
                let w = Tensor {
                    dims: vec![1, 1, 2, 2],
                    data: vec![0.5],
                };
                hand_built_model(w)?.forward(&one_pixel()).map(drop)
            },
        ),
        row(
            "fast conv with more threads than the limit",
            "InvalidParameter",
            &["thread count", "1024"],
            || {
                let s = ConvShape::new([1, 1, 1, 1], [1, 1, 1, 1], ConvParams::default())?;
                let opts = FastConvOptions::with_threads(1_000_000);
                cpu::fast::conv2d_f32(&[1.0], &[1.0], None, &s, &opts).map(drop)
            },
        ),
        row(
            "fast conv with 0 threads",
            "InvalidParameter",
            &["thread count"],
            || {
                let s = ConvShape::new([1, 1, 1, 1], [1, 1, 1, 1], ConvParams::default())?;
                let opts = FastConvOptions::with_threads(0);
                cpu::fast::conv2d_f32(&[1.0], &[1.0], None, &s, &opts).map(drop)
            },
        ),
        // `squint bench` is part of the binary, not the library: its thread-count row lives in
        // src/cli/bench.rs (unit test) and tests/cli_errors.rs ("bench with more threads than
        // the limit").
        row(
            "hand-built conv shape with a wrong output size",
            "Shape",
            &["output"],
            || {
                let mut s = ConvShape::new([1, 1, 2, 2], [1, 1, 1, 1], ConvParams::default())?;
                s.h_out = 3;
                cpu::reference::conv2d_f32(&[0.0; 4], &[1.0], None, &s).map(drop)
            },
        ),
        row(
            "hand-built conv shape with groups 0",
            "InvalidParameter",
            &["groups"],
            || {
                let mut s = ConvShape::new([1, 1, 1, 1], [1, 1, 1, 1], ConvParams::default())?;
                s.params.groups = 0;
                let (qp, w_qp, epi) = unit_conv_qparams()?;
                cpu::reference::conv2d_quantized(&[0], &qp, &[1], &w_qp, &epi, &s).map(drop)
            },
        ),
        row(
            "hand-built epilogue with an inverted clamp",
            "InvalidParameter",
            &["clamp"],
            || {
                let (_, _, mut epi) = unit_conv_qparams()?;
                epi.clamp = QRange { min: 10, max: 5 };
                cpu::reference::requantize(&[0], &epi, 1, 1).map(drop)
            },
        ),
        row(
            "requantize with channels * plane overflowing",
            "Shape",
            &["accumulators"],
            || {
                let (_, _, epi) = unit_conv_qparams()?;
                cpu::reference::requantize(&[0], &epi, 1, usize::MAX).map(drop)
            },
        ),
        row(
            "reference accumulators with a weight zero point of i32::MIN",
            "AccumulatorOverflow",
            &["overflow"],
            || {
                let (qp, _, _) = unit_conv_qparams()?;
                let w_qp = WeightQParams::per_tensor(QScheme::PerTensorAffine, 0.1, i32::MIN);
                let s = ConvShape::new([1, 1, 1, 1], [1, 1, 1, 1], ConvParams::default())?;
                cpu::reference::conv2d_acc(&[1], &qp, &[1], &w_qp, &s).map(drop)
            },
        ),
        row(
            "accumulator check with no weight zero point",
            "Shape",
            &["zero points"],
            || {
                let (qp, mut w_qp, epi) = unit_conv_qparams()?;
                w_qp.zero_points.clear();
                epi.check_accumulator(&[1], &w_qp, qp.dtype.full_range(), 0, 1, None)
            },
        ),
        row(
            "packed weight whose I * groups overflows",
            "Shape",
            &["too large"],
            || {
                let (_, w_qp, epi) = unit_conv_qparams()?;
                let params = ConvParams::default().groups(4);
                PackedConv2d::new(&[1], [4, 1 << 62, 1, 1], &w_qp, &epi, params).map(drop)
            },
        ),
        // ---- unwritable outputs
        row(
            "npy output in a missing directory",
            "Io",
            &["no-such-dir"],
            || npy::write(fx.path("no-such-dir/y.npy"), &x),
        ),
        row(
            "npy output path that is a directory",
            "Io",
            &["adir"],
            || {
                std::fs::create_dir_all(fx.path("adir")).unwrap();
                npy::write(fx.path("adir"), &x)
            },
        ),
        row(
            "quantized model saved into a missing directory",
            "Io",
            &["missing"],
            || qm.save(&fx.path("missing/q.safetensors")),
        ),
        row(
            "output path with no file name",
            "Format",
            &["file name"],
            || npy::write(Path::new("/"), &x),
        ),
    ];
    check_table(rows);
    // Nothing half-written: no temporary file is left behind by any failed write.
    fx.assert_no_temporary_files();
}

#[test]
fn failed_save_leaves_the_previous_output_intact() {
    let fx = Fixture::new();
    let out = fx.path("y.npy");
    std::fs::write(&out, b"previous").unwrap();
    // The write fails after the temporary file is complete, before the rename.
    squint::io::fail_next_rename_on_this_thread();
    let err = npy::write(&out, &tiny_x(1)).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    fx.assert_no_temporary_files();
    // The hook fired once: the next write succeeds.
    npy::write(&out, &tiny_x(1)).unwrap();
    assert_ne!(std::fs::read(&out).unwrap(), b"previous");
}

#[test]
fn concurrent_writes_of_one_path_never_mix_their_bytes() {
    let fx = Fixture::new();
    let out = fx.path("y.bin");
    let payloads: Vec<Vec<u8>> = (0..4u8).map(|t| vec![t; 1 << 20]).collect();
    std::thread::scope(|s| {
        for p in &payloads {
            let (out, payloads) = (&out, &payloads);
            s.spawn(move || {
                for _ in 0..8 {
                    squint::io::write_atomic(out, p).unwrap();
                    let got = std::fs::read(out).unwrap();
                    assert!(payloads.contains(&got), "mixed or partial file");
                }
            });
        }
    });
    fx.assert_no_temporary_files();
}

#[test]
fn all_equal_tensors_calibrate_convert_and_run() {
    for qconfig in [QConfig::qnnpack(), QConfig::x86(), QConfig::tflite()] {
        for value in [0.0f32, 0.5, -3.0] {
            // All-equal weights and bias, all-equal calibration data and input.
            let mut st = tiny_weights();
            st.tensors
                .insert("conv1.weight".into(), f32t(&[4, 3, 3, 3], vec![value; 108]));
            st.tensors
                .insert("conv1.bias".into(), f32t(&[4], vec![value; 4]));
            st.tensors
                .insert("conv2.weight".into(), f32t(&[2, 4, 1, 1], vec![value; 8]));
            let model = parse(TINY_JSON, &st).unwrap();
            let mut pm = PreparedModel::new(model.clone(), qconfig.clone()).unwrap();
            let flat = Tensor::new(X_DIMS.to_vec(), vec![value; 108]).unwrap();
            pm.calibrate_all(&[flat.clone(), flat.clone()], false)
                .unwrap();
            let (qm, warnings) = pm.convert(&ConvertOptions::default()).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            let y = qm.run(&flat, &Device::CpuReference).unwrap();
            let fast = qm.run(&flat, &Device::Cpu).unwrap();
            assert_eq!(y, fast, "{} value {value}", qconfig.name);
            assert!(y.y.data.iter().all(|v| v.is_finite()));
            let float = model.forward(&flat).unwrap();
            let max_err = float
                .data
                .iter()
                .zip(&y.y.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                max_err <= 2.0 * y.qp.scale + 1e-6,
                "{} value {value}: max error {max_err} vs scale {}",
                qconfig.name,
                y.qp.scale
            );
        }
    }
}

#[test]
fn accumulator_overflow_is_refused_before_running_on_any_device() {
    // Just under the bound converts; just over it does not.
    let ok = convert_pinned(all_ones_model(8192, 2), QConfig::qnnpack()).unwrap();
    let x = Tensor::new(vec![1, 8192, 2, 2], vec![1.0; 8192 * 4]).unwrap();
    ok.run(&x, &Device::CpuReference).unwrap();
    let err = convert_pinned(all_ones_model(8192, 3), QConfig::qnnpack()).unwrap_err();
    match err {
        Error::AccumulatorOverflow {
            bound, limit, k, ..
        } => {
            assert!(bound > limit);
            assert_eq!(k, 8192 * 9);
        }
        other => panic!("expected AccumulatorOverflow, got {other}"),
    }
}

fn corpus_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_root().join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

const TARGETS: [&str; 4] = ["npy", "safetensors", "model_json", "quantized_model"];

#[test]
fn fuzz_corpora_replay_without_panics() {
    let mut panicked = Vec::new();
    let mut counts = Vec::new();
    for target in TARGETS {
        let files = corpus(target);
        for (path, bytes) in &files {
            if catch_unwind(|| fuzz_entry::by_target(target, bytes)).is_err() {
                panicked.push(path.display().to_string());
            }
        }
        counts.push(format!("{target}: {}", files.len()));
    }
    assert!(panicked.is_empty(), "panicked on: {panicked:?}");
    eprintln!("replayed {}", counts.join(", "));
}

#[test]
fn seed_corpora_hold_valid_files_for_every_target() {
    // The seeds must reach past the parsers' first checks: valid files of every kind.
    let name = p("seed");
    let npys = corpus("npy");
    assert!(npys
        .iter()
        .any(|(_, b)| npy::read_bytes::<f32>(b, name).is_ok()));
    assert!(npys
        .iter()
        .any(|(_, b)| npy::read_bytes::<u8>(b, name).is_ok()));
    assert!(npys
        .iter()
        .any(|(_, b)| npy::read_bytes::<i8>(b, name).is_ok()));
    assert!(npys
        .iter()
        .any(|(_, b)| npy::read_bytes::<i32>(b, name).is_ok()));
    for target in TARGETS {
        let parsed = corpus(target)
            .iter()
            .filter(|(_, b)| fuzz_entry::by_target(target, b))
            .count();
        assert!(parsed >= 1, "no seed of {target} parses");
    }
    // The golden model description parses against the fixture weights.
    let golden = std::fs::read(corpus_root().join("model_json/golden_e2e_two_conv.json")).unwrap();
    assert!(fuzz_entry::model_json(&golden));
}

// ---- Regressions found by the fuzzers (inputs under tests/data/fuzz/).

/// `cargo fuzz run npy`, out-of-memory: a version-2 preamble declaring a 4 GiB header made the
/// `.npy` parser allocate 4 GiB before noticing that the file holds 140 bytes.
#[test]
fn npy_header_longer_than_the_file_is_refused_before_allocating() {
    let bytes = include_bytes!("data/fuzz/npy-oom-header-length.npy");
    let err = npy::read_bytes::<f32>(bytes, p("oom.npy")).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(
        err.to_string().contains("ends inside its .npy header"),
        "{err}"
    );
    // The same for every declared length past the end, in both header-length widths.
    for (version, len_bytes) in [(1u8, 2usize), (2, 4), (3, 4)] {
        let mut b = b"\x93NUMPY".to_vec();
        b.extend([version, 0]);
        b.extend(&[0xff; 4][..len_bytes]);
        b.extend(b"{'descr': '<f4'");
        let err = npy::read_bytes::<f32>(&b, p("h.npy")).unwrap_err();
        assert!(err.to_string().contains("ends inside"), "v{version}: {err}");
    }
}

/// `cargo fuzz run npy`, timeout: a 130-byte header with nested `{`/`(` made the header parser
/// (pest, backtracking) take tens of seconds — exponential in the nesting depth, so a crafted
/// file could hang squint. Plain NumPy headers never nest, so such headers are refused first.
#[test]
fn npy_header_with_nested_brackets_is_refused_quickly() {
    let bytes = include_bytes!("data/fuzz/npy-timeout-nested-header.npy");
    let start = std::time::Instant::now();
    let err = npy::read_bytes::<f32>(bytes, p("slow.npy")).unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("nested"), "{err}");
    assert!(elapsed.as_secs_f64() < 5.0, "took {elapsed:?}");
    // Deeper nesting must not take longer.
    let deep = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': (1,{}), }}",
        "{{'d': (1,".repeat(40)
    );
    let b = npy_raw_header(&deep);
    let start = std::time::Instant::now();
    assert!(npy::read_bytes::<f32>(&b, p("deep.npy")).is_err());
    assert!(
        start.elapsed().as_secs_f64() < 5.0,
        "took {:?}",
        start.elapsed()
    );
}

/// A version-1.0 `.npy` file whose header is exactly `dict` (padded), and no data.
fn npy_raw_header(dict: &str) -> Vec<u8> {
    let mut header = dict.as_bytes().to_vec();
    header.resize(
        header.len() + (64 - (10 + header.len() + 1) % 64) % 64,
        b' ',
    );
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header);
    out
}
