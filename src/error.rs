//! The crate-wide error type.
//!
//! Every fallible operation in squint returns [`Result`]. Variants carry the numbers a user needs
//! to understand what went wrong (shapes, limits, names) so that the message alone is actionable.

use std::path::PathBuf;

/// Result alias used throughout squint.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in squint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A shape is inconsistent or invalid (wrong rank, mismatched channels, zero-sized, ...).
    #[error("shape error: {0}")]
    Shape(String),

    /// A hyperparameter (stride, dilation, groups, averaging constant, ...) is invalid.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),

    /// A tensor fed to an observer or a quantizer holds NaN or Inf.
    #[error("tensor '{name}' holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// Name of the tensor (e.g. `conv1.input`, `batch 3`).
        name: String,
        /// The offending value.
        value: f32,
        /// Flat index of the first non-finite value.
        index: usize,
    },

    /// An observer was asked for qparams before it saw any data.
    #[error(
        "observer '{name}' has seen no data, so it has no qparams (PyTorch would silently use \
         scale 1.0, zero_point 0); run calibration batches through it first, or opt in explicitly \
         to the uncalibrated default"
    )]
    Uncalibrated {
        /// Name of the quantization point or observer.
        name: String,
    },

    /// Converting a model while some quantization points saw no calibration data.
    #[error(
        "cannot convert: {} quantization point(s) saw no calibration data: {}; feed calibration \
         batches first, or opt in to PyTorch's uncalibrated default (scale 1.0, zero_point 0)",
        points.len(),
        points.join(", ")
    )]
    UncalibratedPoints {
        /// Every point that saw no data.
        points: Vec<String>,
    },

    /// The int32 accumulator (plus bias) could overflow for some input.
    #[error(
        "int32 accumulator overflow risk{}: worst case |acc| = {bound} > {limit} \
         (K = {k} taps per output); split the layer or use a smaller input range",
        layer.as_ref().map(|l| format!(" in '{l}'")).unwrap_or_default()
    )]
    AccumulatorOverflow {
        /// The layer, when known.
        layer: Option<String>,
        /// Worst-case absolute accumulator value.
        bound: i128,
        /// The limit (i32::MAX).
        limit: i128,
        /// Reduction length Cin/groups * KH * KW.
        k: usize,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file's content is malformed or does not hold what was expected.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A name (qconfig, observer, formula, backend, ...) is not known.
    #[error("unknown {kind} '{name}'; expected one of: {expected}")]
    UnknownName {
        /// What kind of name (e.g. "observer").
        kind: &'static str,
        /// The name given.
        name: String,
        /// The accepted names.
        expected: String,
    },

    /// No GPU adapter could be opened.
    #[error("no GPU adapter found{detail}. For a software adapter on Debian/Ubuntu run `apt-get install -y mesa-vulkan-drivers libvulkan1` (Vulkan, lavapipe), or choose `--backend gl` (Mesa llvmpipe)")]
    NoAdapter {
        /// Extra detail (backend filter, adapter name filter).
        detail: String,
    },

    /// The GPU reported an error (validation, out of memory, an internal error).
    #[error("GPU error: {0}")]
    Gpu(String),

    /// The GPU device was lost (driver reset, removed GPU, destroyed device). The context
    /// reopens the device on its next call; tensors and layers created on the lost device
    /// must be created again.
    #[error(
        "GPU device lost: {0}; the next call reopens the device (tensors and layers created \
         on the lost device must be created again)"
    )]
    DeviceLost(String),

    /// A kernel's WGSL source breaks the rules of squint's `//#if FLAG` preprocessor (an unknown
    /// flag, an unbalanced section): a bug in squint, caught before anything is compiled.
    #[error(
        "kernel source {file}{}: {message}",
        line.map(|l| format!(", line {l}")).unwrap_or_default()
    )]
    KernelSource {
        /// The shader file.
        file: String,
        /// The line, counted from 1 (none when the requested flags are at fault).
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },

    /// The data does not fit a device limit and cannot be split.
    #[error("device limit exceeded: {0}")]
    DeviceLimit(String),

    /// The GPU did not finish submitted work within the context's wait timeout (a hung or
    /// very slow device). The work may still complete; the context stays usable.
    #[error("GPU timeout: {0}")]
    Timeout(String),

    /// A graph model is malformed: a node's inputs do not fit its op, a value is missing or
    /// produced twice, the nodes form a cycle.
    #[error("graph: {at}: {message}")]
    Graph {
        /// Where: `node 'name' (Op)`, `value 'name'` or `graph`.
        at: String,
        /// What is wrong.
        message: String,
    },

    /// A golden-case comparison could not be carried out.
    #[error("golden case '{case}': {message}")]
    Golden {
        /// Case name.
        case: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Shorthand for a [`Error::Format`] error.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Shorthand for an [`Error::Io`] error.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
