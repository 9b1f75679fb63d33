//! QConfig: which observer watches activations, how weights are quantized, and which
//! requantization formula the converted layers use.

use crate::error::{Error, Result};
use crate::observers::{ObserverConfig, ObserverKind};
use crate::quant::{QDtype, QScheme, RequantFormula};
use serde::{Deserialize, Serialize};

/// A quantization configuration, like PyTorch's `QConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QConfig {
    /// Preset name or `custom`.
    pub name: String,
    /// Observer of every activation quantization point.
    pub activation: ObserverConfig,
    /// How weights are quantized (always qint8, observed with MinMax / PerChannelMinMax).
    pub weight_scheme: QScheme,
    /// Requantization formula of the converted convs.
    pub formula: RequantFormula,
}

impl QConfig {
    /// Names of the presets.
    pub const PRESETS: [&'static str; 4] = ["qnnpack", "x86", "fbgemm", "tflite"];

    /// PyTorch's `get_default_qconfig('qnnpack')`: HistogramObserver quint8 (full range),
    /// per-tensor symmetric qint8 weights, QNNPACK requantization.
    pub fn qnnpack() -> Self {
        QConfig {
            name: "qnnpack".into(),
            activation: ObserverConfig::new(ObserverKind::Histogram, QDtype::QUInt8),
            weight_scheme: QScheme::PerTensorSymmetric,
            formula: RequantFormula::Qnnpack,
        }
    }

    /// PyTorch's `get_default_qconfig('x86')`: HistogramObserver quint8 with reduce_range,
    /// per-channel symmetric qint8 weights, oneDNN requantization (the kernel the x86 engine
    /// runs on AVX512-VNNI machines).
    pub fn x86() -> Self {
        QConfig {
            name: "x86".into(),
            activation: ObserverConfig::new(ObserverKind::Histogram, QDtype::QUInt8)
                .reduce_range(true),
            weight_scheme: QScheme::PerChannelSymmetric,
            formula: RequantFormula::Onednn,
        }
    }

    /// PyTorch's `get_default_qconfig('fbgemm')`: like `x86` but with FBGEMM requantization.
    pub fn fbgemm() -> Self {
        QConfig {
            name: "fbgemm".into(),
            formula: RequantFormula::Fbgemm,
            ..Self::x86()
        }
    }

    /// TFLite-style: qint8 affine activations (MinMax), per-channel symmetric qint8 weights,
    /// integer-only fixed-point requantization.
    pub fn tflite() -> Self {
        QConfig {
            name: "tflite".into(),
            activation: ObserverConfig::new(ObserverKind::MinMax, QDtype::QInt8),
            weight_scheme: QScheme::PerChannelSymmetric,
            formula: RequantFormula::FixedPoint,
        }
    }

    /// A preset by name.
    pub fn preset(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "qnnpack" => Ok(Self::qnnpack()),
            "x86" | "onednn" => Ok(Self::x86()),
            "fbgemm" => Ok(Self::fbgemm()),
            "tflite" | "fixed-point" => Ok(Self::tflite()),
            _ => Err(Error::UnknownName {
                kind: "qconfig",
                name: name.to_string(),
                expected: Self::PRESETS.join(", "),
            }),
        }
    }

    /// The same qconfig with another activation observer kind (keeping dtype and range).
    pub fn with_observer(mut self, kind: ObserverKind) -> Self {
        self.activation.kind = kind;
        self
    }
}
