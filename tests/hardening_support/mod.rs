//! Fixtures shared by the hardening tests (`bad_inputs`, `cli_errors`, `concurrency`): a tiny
//! conv model written to disk, and hand-made `.npy` / `.safetensors` bytes, valid and broken.
#![allow(dead_code)]

use squint::io::safetensors::{StFile, StTensor};
use squint::pipeline::{ConvertOptions, Model, PreparedModel, QConfig, QuantizedModel};
use squint::shape::ConvParams;
use squint::tensor::Tensor;
use std::path::{Path, PathBuf};

/// Deterministic values in [-1, 1) (a 64-bit LCG; no dependency on the crate's RNG).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The bytes of a `.npy` file (version 1.0) with a hand-written header, so that any header,
/// valid or not, can be made. `shape` is a Python tuple such as `"(1, 3, 6, 6)"`.
pub fn npy_raw(descr: &str, fortran: bool, shape: &str, payload: &[u8]) -> Vec<u8> {
    let fortran = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}")
            .into_bytes();
    let unpadded = 10 + header.len() + 1;
    header.resize(header.len() + (64 - unpadded % 64) % 64, b' ');
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header);
    out.extend_from_slice(payload);
    out
}

/// Python tuple syntax for `dims`.
pub fn tuple(dims: &[usize]) -> String {
    match dims {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A valid float32 `.npy` file.
pub fn npy_f32(dims: &[usize], data: &[f32]) -> Vec<u8> {
    npy_raw("<f4", false, &tuple(dims), bytemuck::cast_slice(data))
}

/// Input shape of the tiny model.
pub const X_DIMS: [usize; 4] = [1, 3, 6, 6];

/// The tiny model's description: `Conv2d(3, 4, 3) + ReLU`, then `Conv2d(4, 2, 1)`.
pub const TINY_JSON: &str = r#"{"layers": [
  {"name": "conv1", "type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3,
   "bias": true, "relu": true},
  {"name": "conv2", "type": "conv2d", "in_channels": 4, "out_channels": 2, "kernel_size": 1,
   "bias": false}
]}"#;

/// The tiny model's float weights.
pub fn tiny_weights() -> StFile {
    let mut f = StFile::default();
    let t = |dims: Vec<usize>, seed| {
        let n = dims.iter().product();
        StTensor::F32(Tensor::new(dims, values(n, seed)).unwrap())
    };
    f.tensors
        .insert("conv1.weight".into(), t(vec![4, 3, 3, 3], 1));
    f.tensors.insert("conv1.bias".into(), t(vec![4], 2));
    f.tensors
        .insert("conv2.weight".into(), t(vec![2, 4, 1, 1], 3));
    f
}

/// An input (or a calibration batch) of the tiny model.
pub fn tiny_x(seed: u64) -> Tensor<f32> {
    Tensor::new(X_DIMS.to_vec(), values(X_DIMS.iter().product(), seed)).unwrap()
}

/// The tiny model, loaded through the description parser.
pub fn tiny_model() -> Model {
    Model::from_json_str(
        TINY_JSON,
        Path::new("tiny.json"),
        &tiny_weights(),
        Path::new("tiny.safetensors"),
    )
    .unwrap()
}

/// The tiny model calibrated on four batches and converted with `qconfig`.
pub fn tiny_quantized(qconfig: QConfig) -> QuantizedModel {
    let mut p = PreparedModel::new(tiny_model(), qconfig).unwrap();
    let batches: Vec<_> = (10..14).map(tiny_x).collect();
    p.calibrate_all(&batches, false).unwrap();
    p.convert(&ConvertOptions::default()).unwrap().0
}

/// A one-layer model `Conv2d(c_in, 1, k)` whose weights are all 1.0 and whose qparams are
/// pinned: with `c_in * k * k` large enough, its int32 accumulator can overflow.
pub fn all_ones_model(c_in: usize, k: usize) -> Model {
    Model::builder()
        .conv2d(
            "conv1",
            Tensor::new(vec![1, c_in, k, k], vec![1.0; c_in * k * k]).unwrap(),
            None,
            ConvParams::default(),
            false,
        )
        .build()
        .unwrap()
}

/// Converts `model` without calibration data, every point pinned to scale 0.01 / zp 0.
pub fn convert_pinned(model: Model, qconfig: QConfig) -> squint::Result<QuantizedModel> {
    let points = model.points();
    let p = PreparedModel::new(model, qconfig)?;
    let opts = ConvertOptions {
        allow_uncalibrated: false,
        pinned: points.into_iter().map(|n| (n, (0.01, 0))).collect(),
    };
    Ok(p.convert(&opts)?.0)
}

/// Rewrites the `squint.model` metadata of a saved quantized model.
pub fn edit_metadata(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut f = StFile::read(path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&f.metadata["squint.model"]).unwrap();
    edit(&mut v);
    f.metadata
        .insert("squint.model".into(), serde_json::to_string(&v).unwrap());
    f.write(path).unwrap();
}

/// Files of the tiny model in a directory.
pub struct Fixture {
    /// Holds the files.
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// Writes `model.json`, `weights.safetensors`, `x.npy`, `calib.npy` (BNCHW, 3 batches)
    /// and `model.q.safetensors` (converted with qnnpack).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("model.json"), TINY_JSON).unwrap();
        tiny_weights().write(p.join("weights.safetensors")).unwrap();
        std::fs::write(p.join("x.npy"), npy_f32(&X_DIMS, &tiny_x(7).data)).unwrap();
        let calib: Vec<f32> = (20..23).flat_map(|s| tiny_x(s).data).collect();
        let mut cdims = vec![3];
        cdims.extend(X_DIMS);
        std::fs::write(p.join("calib.npy"), npy_f32(&cdims, &calib)).unwrap();
        tiny_quantized(QConfig::qnnpack())
            .save(&p.join("model.q.safetensors"))
            .unwrap();
        Fixture { dir }
    }

    /// A path in the fixture's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` to `name` and returns its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Names of the files in the directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Asserts that no write left a temporary file behind.
    pub fn assert_no_temporary_files(&self) {
        let stray: Vec<String> = self
            .files()
            .into_iter()
            .filter(|f| f.contains(".tmp"))
            .collect();
        assert!(stray.is_empty(), "temporary files left behind: {stray:?}");
    }
}
