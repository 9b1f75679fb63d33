//! The `squint` command line.
//!
//! A module of the binary, not of the library (it needs the `cli` feature: clap, indicatif,
//! plotters). Each subcommand is a thin layer over the library: parse arguments, call the
//! pipeline, print; `demo` and `bench` are the two experiments only the binary runs. Errors print one line (`error: ...`) and exit with status 1.

mod bench;
mod commands;
mod demo;
mod plot;
mod progress;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// squint — static quantization to int8, PyTorch-exact, on any GPU.
///
/// Calibrate observers on the CPU, convert conv layers to int8, run them on a GPU through wgpu
/// (Vulkan, Metal, DX12, GL, or a software adapter such as Mesa lavapipe) and check every GPU
/// result against the CPU reference bit for bit.
#[derive(Debug, Parser)]
#[command(name = "squint", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check squint against golden reference vectors produced by real PyTorch quantized ops.
    ///
    /// Each DIR is a conv case (params.json), an observers directory (qparams.json) or an
    /// end-to-end model (model.json). Prints one line per case: name, elements compared,
    /// mismatches and max |Δ| in LSB. Exits 0 only if every case matches exactly.
    ///
    /// Example: squint golden ../shared/golden/*
    Golden(GoldenArgs),
    /// Feed .npy batches to an observer and print the qparams it chooses, as JSON.
    ///
    /// Example: squint observe --observer histogram --dtype quint8 batch0.npy batch1.npy
    Observe(ObserveArgs),
    /// List every GPU adapter wgpu can open, with the capabilities squint uses.
    Adapters(AdaptersArgs),
    /// The forum experiment: float vs weight-only vs static quantization with and without
    /// calibration, then a GPU-vs-CPU bit-exactness check and int8 conv timings.
    ///
    /// Runs with no arguments. Without a GPU adapter it runs the CPU part and says how to get
    /// a software adapter.
    Demo(DemoArgs),
    /// Calibrate a float model and convert it to int8 (prepare → calibrate → convert → save).
    ///
    /// Example: squint quantize --model model.onnx --calib calib.npy --qconfig x86
    ///          --out model.q.safetensors
    ///
    /// An ONNX model is a graph (ResNet/MobileNet-style CNNs: Conv with BatchNorm folded,
    /// ReLU, Add, Concat, pools, Flatten, Gemm); a JSON model is a conv chain:
    ///
    ///   squint quantize --model model.json --weights model.safetensors
    ///          --calib calib.npy --qconfig qnnpack --out model.q.safetensors --report
    Quantize(QuantizeArgs),
    /// Run a converted model on an input and write the dequantized output.
    ///
    /// Example: squint run --model model.q.safetensors --input x.npy --out y.npy --device gpu
    Run(RunArgs),
    /// Calibrate, convert and print per-point diagnostics (SQNR, MSE, clipping, advice);
    /// optionally plot each point's calibration histogram with the observers' ranges.
    ///
    /// For an ONNX graph every value gets a row; values computed without an observer (pools,
    /// flatten, relu, clip) name the point whose qparams they share.
    ///
    /// Example: squint report --model model.onnx --calib calib.npy --qconfig x86 --plot hist.svg
    ///
    ///          squint report --model model.json --weights model.safetensors --calib calib.npy
    Report(ReportArgs),
    /// Benchmark the int8 conv: float32 CPU, int8 CPU fast path and reference, int8 GPU and
    /// float32 GPU.
    ///
    /// Prints ms, GOPS (2·N·Cout·Hout·Wout·Cin/groups·KH·KW / time), the speed against float32
    /// on the same device ("vs f32": CPU paths against float32 cpu, GPU kernel timings against
    /// float32 gpu kernel) and the fraction of the peak of the instruction each path is built
    /// on, per shape and path. Quote results as ratios measured in one run, naming the machine.
    Bench(BenchArgs),
}

/// Arguments of `squint bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print JSON (`results`: shape, path, ms, gops, vs_f32, peak_loop, peak_gops,
    /// fraction_of_peak).
    #[arg(long)]
    pub json: bool,
    /// CPU threads for the fast paths (default: all cores). Each worker is pinned to a CPU of
    /// its own (SQUINT_PIN_THREADS=0: not), and the timed runs keep the other workers
    /// spinning for work, as a model's run does (SQUINT_SPIN=0: not).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed runs per path (median reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// ISA path of the fast CPU kernels: avx512-vnni, avx-vnni, avx2 (x86-64), neon-dotprod
    /// (AArch64 with the dot-product extension) or portable (default: the fastest this CPU
    /// has). `--isa avx2` measures the AVX2 kernels on an AVX-512 machine; with --model,
    /// every layer of the model runs on that path.
    #[arg(long)]
    pub isa: Option<String>,
    /// Also run the large shape (8x256x56x56), meant for real GPUs.
    #[arg(long)]
    pub large: bool,
    /// Skip the GPU.
    #[arg(long)]
    pub no_gpu: bool,
    /// Activation bits of the int8 conv input: 7 (0..=127, PyTorch's x86 preset with
    /// reduce_range, which lets AVX2 use `vpmaddubsw` exactly) or 8 (0..=255).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(7..=8))]
    pub act_bits: u32,
    /// Skip the (slow, single-threaded) int8 CPU reference.
    #[arg(long)]
    pub no_reference: bool,
    /// Also time every GPU conv kernel variant the adapter can run (dot product, weight
    /// staging, input source, the tiled kernel's workgroup sizes): which is fastest here.
    /// Every variant computes the same bytes.
    #[arg(long)]
    pub gpu_variants: bool,
    /// Only the shapes whose name contains this (case-insensitive, repeatable), e.g.
    /// `--shape forum`, `--shape depthwise`, `--shape large` (the large shape needs no
    /// `--large` then).
    #[arg(long = "shape", value_name = "NAME")]
    pub shapes: Vec<String>,
    /// Benchmark a whole ONNX model instead of the conv shapes: float vs int8 (CPU reference,
    /// fast CPU path, GPU unless --no-gpu) latency of one forward pass. Needs --input; calibrates on --calib (or the
    /// input).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Input of --model (.npy, float32, the model's input dims).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Calibration batches of --model (.npy; default: the input).
    #[arg(long, num_args = 1..)]
    pub calib: Vec<PathBuf>,
    /// QConfig preset of --model (also ort and ort-per-tensor: ONNX Runtime's
    /// quantize_static and int8 formulas).
    #[arg(long, default_value = "x86")]
    pub qconfig: String,
    /// GPU selection.
    #[command(flatten)]
    pub gpu: GpuArgs,
}

/// Arguments of `squint demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Random seed of weights, input and calibration batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of calibration batches.
    #[arg(long, default_value_t = 8)]
    pub calib_batches: usize,
    /// Skip the GPU part.
    #[arg(long)]
    pub no_gpu: bool,
    /// GPU selection.
    #[command(flatten)]
    pub gpu: GpuArgs,
}

/// Float-model inputs shared by `quantize` and `report`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The float model: an ONNX file (`torch.onnx.export` of a CNN in eval mode; its
    /// initializers are the weights), or a JSON conv chain (layers with name, type,
    /// hyperparameters) with --weights.
    #[arg(long)]
    pub model: PathBuf,
    /// Float weights of a JSON model: a PyTorch state_dict saved with
    /// safetensors.torch.save_file (an ONNX model carries its own).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Calibration batches (.npy, float32): NCHW files are one batch each, BNCHW stacks are
    /// split along axis 0.
    #[arg(long, num_args = 1..)]
    pub calib: Vec<PathBuf>,
    /// QConfig preset: qnnpack, x86, fbgemm (PyTorch's defaults) or tflite (qint8, per-channel,
    /// fixed-point requantization). For a float ONNX model in `report`, also ort (ONNX
    /// Runtime's quantize_static: MinMax, uint8 activations, 7-bit per-channel int8 weights,
    /// ORT's int8 formulas) and ort-per-tensor.
    #[arg(long, default_value = "qnnpack")]
    pub qconfig: String,
    /// Override the preset's activation observer.
    #[arg(long, value_enum)]
    pub observer: Option<ObserverArg>,
    /// Override the preset's requantization formula (qnnpack, fbgemm, onednn, fixed-point).
    #[arg(long)]
    pub formula: Option<String>,
    /// Pin activation qparams from JSON ({"input": {"scale": s, "zero_point": z}, ...}).
    #[arg(long)]
    pub pin: Option<PathBuf>,
    /// Convert even if some point saw no calibration data, with PyTorch's default scale 1.0 /
    /// zero point 0 (the classic mistake; a warning names each point).
    #[arg(long)]
    pub allow_uncalibrated: bool,
}

/// Arguments of `squint quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The float model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output: the converted model (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Print diagnostics on the first calibration batch (or --input).
    #[arg(long)]
    pub report: bool,
    /// Evaluation input for --report.
    #[arg(long)]
    pub input: Option<PathBuf>,
}

/// Arguments of `squint run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A converted model written by `squint quantize`, an ONNX Runtime QDQ model, or a float
    /// ONNX model with --qconfig ort.
    #[arg(long)]
    pub model: PathBuf,
    /// Float input, NCHW float32 .npy.
    #[arg(long)]
    pub input: PathBuf,
    /// Output: dequantized float32 .npy.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the output ints (uint8 / int8 .npy).
    #[arg(long)]
    pub out_ints: Option<PathBuf>,
    /// Where to run.
    #[arg(long, value_enum, default_value = "gpu")]
    pub device: DeviceKind,
    /// Run on the GPU and on the CPU reference and report bit-exactness.
    #[arg(long)]
    pub cross_check: bool,
    /// For a float ONNX model: quantize it in memory as ONNX Runtime's quantize_static would
    /// (ort: per-channel 7-bit weights; ort-per-tensor) on --calib, then run it with ORT's
    /// int8 formulas.
    #[arg(long)]
    pub qconfig: Option<String>,
    /// Calibration batches of --qconfig (.npy, float32).
    #[arg(long, num_args = 1..)]
    pub calib: Vec<PathBuf>,
    /// GPU selection.
    #[command(flatten)]
    pub gpu: GpuArgs,
}

/// Arguments of `squint report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The float model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Evaluation input (default: the first calibration batch).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Draw each point's calibration histogram with the range each observer chooses (SVG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Where kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// The CPU reference kernels.
    Cpu,
    /// The fast CPU path (SIMD, multithreaded).
    CpuFast,
    /// A GPU adapter through wgpu.
    Gpu,
}

/// GPU selection options, accepted by every subcommand that runs kernels.
#[derive(Debug, Clone, Args)]
pub struct GpuArgs {
    /// Graphics backend to use (default: WGPU_BACKEND, else all).
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// Use the adapter whose name contains this (case-insensitive) substring.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Give up with an error when the GPU has not finished after this many seconds (a hung
    /// device). Default: SQUINT_GPU_TIMEOUT_SECS, else 300.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub gpu_timeout: Option<std::time::Duration>,
}

/// Parses `--gpu-timeout`: positive seconds, fractions allowed.
fn parse_timeout(s: &str) -> std::result::Result<std::time::Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(std::time::Duration::from_secs_f64(v)),
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

/// Backends on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Vulkan (Linux, Windows, Android; Mesa lavapipe is a software Vulkan driver).
    Vulkan,
    /// OpenGL / GLES (Mesa llvmpipe is a software GL driver).
    Gl,
    /// Metal (macOS, iOS).
    Metal,
    /// Direct3D 12 (Windows).
    Dx12,
}

/// Arguments of `squint golden`.
#[derive(Debug, Args)]
pub struct GoldenArgs {
    /// Golden directories.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where the quantized convs run.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
    /// GPU selection.
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// Print every comparison, not just one line per case.
    #[arg(long, short)]
    pub verbose: bool,
}

/// Observer kinds on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObserverArg {
    /// Running min and max (MinMaxObserver).
    Minmax,
    /// Exponential moving average of each batch's min and max (MovingAverageMinMaxObserver).
    MovingAverage,
    /// 2048-bin histogram with PyTorch's L2 range search (HistogramObserver).
    Histogram,
    /// Per-channel (axis 0) min and max, for weights (PerChannelMinMaxObserver).
    PerChannelMinmax,
}

/// Quantized dtypes on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// Unsigned 8-bit, 0..255.
    Quint8,
    /// Signed 8-bit, -128..127.
    Qint8,
}

/// Arguments of `squint observe`.
#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// The observer.
    #[arg(long, value_enum, default_value = "histogram")]
    pub observer: ObserverArg,
    /// The quantized dtype.
    #[arg(long, value_enum, default_value = "quint8")]
    pub dtype: DtypeArg,
    /// Symmetric qparams (zero point 0 for qint8, 128 for quint8).
    #[arg(long)]
    pub symmetric: bool,
    /// Halve the quantized range (0..127 / -64..63), as PyTorch's x86/fbgemm defaults do.
    #[arg(long)]
    pub reduce_range: bool,
    /// Averaging constant of the moving-average observer.
    #[arg(long, default_value_t = 0.01)]
    pub averaging_constant: f32,
    /// Treat each slice along axis 0 of each file as one batch.
    #[arg(long)]
    pub split_axis0: bool,
    /// float32 .npy files, fed in order.
    #[arg(required = true)]
    pub batches: Vec<PathBuf>,
}

/// Arguments of `squint adapters`.
#[derive(Debug, Args)]
pub struct AdaptersArgs {
    /// GPU selection (filters the list).
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Entry point of the binary: parses arguments, runs, prints errors as one line.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    start_global_pool();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line, even when a message (e.g. a wgpu validation error) spans several.
            let text = e.to_string();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("error: {}", lines.join(" "));
            std::process::ExitCode::from(1)
        }
    }
}

/// Builds rayon's global pool, which the CPU paths use where `--threads` is not given, with
/// its workers pinned as the library's local pools are (see `cpu::fast::pool_builder`): as
/// many as rayon would start (`RAYON_NUM_THREADS`, else one per CPU this process may use).
fn start_global_pool() {
    let t = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // This fails only where the global pool exists already, which then stays as it is.
    let _ = squint::cpu::fast::pool_builder(t).build_global();
}

/// Prints `--help` / `--version` as clap does; prints any other command-line error as one line
/// (`error: ...`, clap's lines joined) and exits with status 1, like every other error.
fn usage_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .collect();
    let line = parts.join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    eprintln!("error: {line} (see --help)");
    std::process::ExitCode::from(1)
}
