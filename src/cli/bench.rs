//! `squint bench`: int8 conv throughput on the CPU (reference and fast path), the GPU, and
//! float32 on the CPU, for a fixed set of shapes.
//!
//! GOPS = 2·N·Cout·Hout·Wout·(Cin/groups)·KH·KW / time. Each timing is the median of several
//! runs after a warm-up run; quote results as ratios measured in one run. On the GPU the
//! kernel time comes from timestamp queries where the adapter has them (the `detail` field
//! says which clock was used).

use serde::Serialize;
use squint::cpu::{
    self,
    fast::{FastConvOptions, PeakLoop},
};
use squint::error::Result;
use squint::gpu::{
    DeviceOptions, GpuContext, GpuConv2d, GpuConv2dF32, GpuPeak, KernelOptions, StagingChoice,
};
use squint::quant::{self, Epilogue, QDtype, QParams, QScheme, RequantFormula, WeightQParams};
use squint::rng::Rng;
use squint::shape::{ConvParams, ConvShape};
use squint::tensor::Tensor;
use std::time::Instant;

/// A benchmark shape.
#[derive(Debug, Clone, Serialize)]
pub struct BenchShape {
    /// Short name.
    pub name: &'static str,
    /// Input NCHW.
    pub x: [usize; 4],
    /// Weight OIHW.
    pub w: [usize; 4],
    /// Hyperparameters.
    pub params: ConvParams,
    /// Only worth running on real GPUs (skipped unless asked for).
    pub large: bool,
}

/// The standard shapes: (i) the forum conv, (ii)/(iii) ResNet-like 3x3 convs, (iv) a
/// depthwise conv, and one large shape for real GPUs.
pub fn standard_shapes() -> Vec<BenchShape> {
    vec![
        BenchShape {
            name: "forum 1x132x64x64 * 121x132x3x3",
            x: [1, 132, 64, 64],
            w: [121, 132, 3, 3],
            params: ConvParams::default(),
            large: false,
        },
        BenchShape {
            name: "1x64x56x56 * 64x64x3x3 p1",
            x: [1, 64, 56, 56],
            w: [64, 64, 3, 3],
            params: ConvParams::default().padding(1),
            large: false,
        },
        BenchShape {
            name: "1x256x14x14 * 256x256x3x3 p1",
            x: [1, 256, 14, 14],
            w: [256, 256, 3, 3],
            params: ConvParams::default().padding(1),
            large: false,
        },
        BenchShape {
            name: "depthwise 1x128x56x56 g128 3x3 p1",
            x: [1, 128, 56, 56],
            w: [128, 1, 3, 3],
            params: ConvParams::default().padding(1).groups(128),
            large: false,
        },
        BenchShape {
            name: "large 8x256x56x56 * 256x256x3x3 p1",
            x: [8, 256, 56, 56],
            w: [256, 256, 3, 3],
            params: ConvParams::default().padding(1),
            large: true,
        },
    ]
}

/// Options of the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// CPU threads for the fast paths (None: all cores).
    pub threads: Option<usize>,
    /// GPU selection; None skips the GPU.
    pub gpu: Option<DeviceOptions>,
    /// Include the large shape.
    pub large: bool,
    /// Timed runs per path.
    pub runs: usize,
    /// Run the (slow) CPU reference where it takes less than this many MACs.
    pub reference_max_macs: u64,
    /// ISA path of the fast CPU kernels (None: the fastest this CPU has).
    pub isa: Option<cpu::fast::Isa>,
    /// Activation bits of the int8 input: 7 (values 0..=127, as PyTorch's x86 / fbgemm
    /// presets quantize with `reduce_range`) or 8 (0..=255).
    pub act_bits: u32,
    /// Also time every GPU kernel variant the adapter can run (for tuning; results are the
    /// same bytes).
    pub gpu_variants: bool,
    /// Only the shapes whose name contains one of these (case-insensitive; a match includes
    /// the large shape); empty: every shape (the large one with `large`).
    pub shapes: Vec<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            threads: None,
            gpu: Some(DeviceOptions::default()),
            large: false,
            runs: 5,
            reference_max_macs: 1 << 30,
            isa: None,
            act_bits: 7,
            gpu_variants: false,
            shapes: Vec::new(),
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Shape name.
    pub shape: String,
    /// Path name (`float32 cpu`, `int8 cpu fast`, `int8 cpu reference`, `int8 gpu kernel
    /// (timestamps)` (GPU time of the layer from timestamp queries; `int8 gpu kernel (wall)`
    /// where the device has none), `int8 gpu conv + read-back`, `int8 gpu end-to-end`
    /// (upload, conv, read-back)).
    pub path: String,
    /// Median milliseconds.
    pub ms: f64,
    /// Giga-operations per second.
    pub gops: f64,
    /// Detail (ISA, threads, adapter).
    pub detail: String,
    /// The register-only loop of the instruction this path is built on (CPU paths).
    pub peak_loop: Option<String>,
    /// That loop's GOPS on this machine, per thread times the threads used.
    pub peak_gops: Option<f64>,
    /// `gops / peak_gops`.
    pub fraction_of_peak: Option<f64>,
    /// How many times faster than float32 on the same device this path is: CPU paths against
    /// `float32 cpu`, the GPU kernel timings against `float32 gpu kernel` (see
    /// [`same_device_f32`]); `None` for the other paths (read-backs, parts of a kernel).
    pub vs_f32: Option<f64>,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// CPU ISA path of the fast kernels.
    pub cpu_isa: String,
    /// Threads used by the fast CPU paths.
    pub threads: usize,
    /// Adapter, if any.
    pub adapter: Option<String>,
    /// Why the GPU was skipped, if so.
    pub gpu_note: Option<String>,
    /// Per-thread GOPS of each instruction loop measured (see [`cpu::fast::PeakLoop`]).
    pub cpu_peaks: Vec<(String, f64)>,
    /// GOPS of the adapter's register-only loops (`dot4I8Packed` where the adapter has it,
    /// f32 `fma`), see [`GpuPeak`].
    pub gpu_peaks: Vec<(String, f64)>,
    /// Results.
    pub results: Vec<BenchResult>,
}

/// Median of the values `f` measures itself, after a warm-up call.
/// The median of `t` (not empty).
fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn median_value(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    f()?; // warm-up
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        t.push(f()?);
    }
    Ok(median(t))
}

fn median_ms(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(t))
}

/// Runs the benchmark. A thread count outside `1..=`[`cpu::fast::MAX_THREADS`], or one the
/// system cannot start, is an [`squint::Error::InvalidParameter`] before anything runs.
pub fn run_bench(
    opts: &BenchOptions,
    mut progress: impl FnMut(&BenchResult),
) -> Result<BenchReport> {
    let fopts = FastConvOptions {
        threads: opts.threads,
        split_small: false,
    };
    fopts.validate()?;
    if !(7..=8).contains(&opts.act_bits) {
        return Err(squint::Error::InvalidParameter(format!(
            "activation bits must be 7 or 8, got {}",
            opts.act_bits
        )));
    }
    let threads = opts.threads.unwrap_or_else(rayon::current_num_threads);
    let isa = opts.isa.unwrap_or_else(cpu::fast::Isa::detect);
    let (ctx, gpu_note) = match opts.gpu.as_ref().map(GpuContext::open) {
        None => (None, Some("skipped (--no-gpu)".to_string())),
        Some(Ok(c)) => (Some(c), None),
        Some(Err(e)) => (None, Some(e.to_string())),
    };
    let adapter = ctx.as_ref().map(|c| {
        let r = c.adapter_report();
        format!("{} ({})", r.name, r.backend)
    });
    let mut results = Vec::new();
    let peaks = Peaks::default();
    let mut gpu_peaks = Vec::new();
    if let Some(ctx) = &ctx {
        for kind in [GpuPeak::Dot4I8, GpuPeak::FmaF32] {
            if kind == GpuPeak::Dot4I8 && !ctx.adapter_report().packed_int8_dot_product {
                continue;
            }
            let g = ctx.peak_gops(kind, std::time::Duration::from_millis(100))?;
            gpu_peaks.push((kind.name().to_string(), g));
        }
    }
    let gpu_peak = |kind: GpuPeak| {
        gpu_peaks
            .iter()
            .find(|(k, _)| k == kind.name())
            .map(|p| PathPeak::Gpu(kind, p.1))
    };
    let mut rng = Rng::new(42);
    for shape in selected_shapes(opts)? {
        let s = ConvShape::new(shape.x, shape.w, shape.params)?;
        let ops = 2.0 * s.macs() as f64;
        let x: Vec<f32> = rng.uniform_vec(s.input_len());
        let w: Vec<f32> = rng.normal_vec(s.weight_len(), 0.05);
        let xqp = QParams::new(
            1.0 / ((1u32 << opts.act_bits) - 1) as f32,
            0,
            QDtype::QUInt8,
        )?;
        let x_q = quant::quantize_slice(&x, &xqp);
        let w_qp = WeightQParams::per_tensor(QScheme::PerTensorSymmetric, 0.002, 0);
        let w_q = cpu::reference::quantize_weight(&w, &w_qp, s.c_out)?;
        let out = QParams::new(0.05, 128, QDtype::QUInt8)?;
        let epi = Epilogue::new(
            RequantFormula::Qnnpack,
            xqp.scale,
            &w_qp,
            None,
            out,
            false,
            s.c_out,
        )?;
        let mut push = |path: &str, ms: f64, detail: String, peak: Option<PathPeak>| {
            let gops = ops / (ms * 1e-3) / 1e9;
            let (peak_name, peak_gops) = match peak {
                Some(PathPeak::Cpu(l)) => (Some(l.name()), Some(peaks.get(l)? * threads as f64)),
                Some(PathPeak::Gpu(kind, g)) => (Some(kind.name()), Some(g)),
                None => (None, None),
            };
            let r = BenchResult {
                shape: shape.name.to_string(),
                path: path.to_string(),
                ms,
                gops,
                detail,
                peak_loop: peak_name.map(str::to_string),
                peak_gops,
                fraction_of_peak: peak_gops.map(|p| gops / p),
                vs_f32: None,
            };
            progress(&r);
            results.push(r);
            Ok::<(), squint::Error>(())
        };
        // Both CPU paths pack their weights once, as a model's layers do, and write into one
        // output buffer, as a runtime's preallocated (arena) outputs are: allocating and
        // zeroing the output is not timed. Their runs are timed on the pool's workers (see
        // `cpu::fast::on_pool`), as a model's ops run: a call from outside the pool would
        // also time waking it (tens of microseconds on a virtual machine), every run.
        let packed_f32 = cpu::fast::PackedConvF32::new(&w, shape.w, shape.params, isa)?;
        let mut y_f32 = vec![0f32; s.output_len()];
        let ms = cpu::fast::on_pool(opts.threads, || {
            median_ms(opts.runs, || {
                packed_f32.run_into(&x, shape.x, None, &fopts, &mut y_f32)
            })
        })?;
        push(
            "float32 cpu",
            ms,
            format!("{isa}, {threads} threads"),
            PeakLoop::f32(isa).map(PathPeak::Cpu),
        )?;
        let packed =
            cpu::fast::PackedConv2d::with_isa(&w_q, shape.w, &w_qp, &epi, shape.params, isa)?;
        let mut y_q = vec![0u8; s.output_len()];
        let ms = cpu::fast::on_pool(opts.threads, || {
            median_ms(opts.runs, || {
                packed.run_into(&x_q, shape.x, &xqp, &fopts, &mut y_q)
            })
        })?;
        let kernel = packed.kernel_name(&x_q, &xqp);
        let bits = opts.act_bits;
        push(
            "int8 cpu fast",
            ms,
            format!("{kernel}, {bits}-bit input, {threads} threads"),
            packed.peak_loop(&x_q, &xqp).map(PathPeak::Cpu),
        )?;
        if s.macs() <= opts.reference_max_macs {
            let ms = median_ms(1, || {
                cpu::reference::conv2d_quantized(&x_q, &xqp, &w_q, &w_qp, &epi, &s).map(|_| ())
            })?;
            push("int8 cpu reference", ms, "1 thread".into(), None)?;
        }
        if let Some(ctx) = &ctx {
            let layer = GpuConv2d::new(ctx, &w_q, shape.w, &w_qp, &epi, shape.params)?;
            let xg = ctx.upload_q(&x_q, shape.x, xqp.dtype)?;
            let name = adapter.clone().unwrap_or_default();
            let kernel = if layer.is_depthwise() {
                "depthwise kernel"
            } else {
                "GEMM kernel"
            };
            let (ms, how) = gpu_layer_ms(ctx, &layer, &xg, &xqp, opts.runs)?;
            let path = if ctx.has_timestamps() {
                "int8 gpu kernel (timestamps)"
            } else {
                "int8 gpu kernel (wall)"
            };
            let peak = gpu_peak(GpuPeak::Dot4I8);
            push(path, ms, format!("{name}; {kernel}; {how}"), peak)?;
            // The same time in its two passes, where the run allows (see `run_timed_parts`).
            // A depthwise conv that reads the packed input has no repack (zero).
            if let Some([repack, conv]) = gpu_parts_ms(ctx, &layer, &xg, &xqp, opts.runs)? {
                if repack > 0.0 {
                    let detail = format!("{name}; conv_pack.wgsl in a pass of its own");
                    push("int8 gpu repack alone (timestamps)", repack, detail, None)?;
                }
                let how = match repack > 0.0 {
                    true => "in a pass of its own",
                    false => "reading the packed input, no repack",
                };
                let detail = format!("{name}; {kernel} {how}");
                push("int8 gpu conv alone (timestamps)", conv, detail, peak)?;
            }
            if opts.gpu_variants {
                for (variant, vctx) in gpu_variant_contexts(ctx) {
                    let layer = GpuConv2d::new(&vctx, &w_q, shape.w, &w_qp, &epi, shape.params)?;
                    let (ms, how) = gpu_layer_ms(&vctx, &layer, &xg, &xqp, opts.runs)?;
                    let path = format!("int8 gpu kernel [{variant}]");
                    push(&path, ms, format!("{name}; {how}"), peak)?;
                }
            }
            let ms = median_ms(opts.runs, || {
                ctx.read_q(&layer.run(ctx, &xg, &xqp)?).map(|_| ())
            })?;
            push(
                "int8 gpu conv + read-back",
                ms,
                format!("{name}; {kernel}"),
                None,
            )?;
            let ms = median_ms(opts.runs, || {
                let xg = ctx.upload_q(&x_q, shape.x, xqp.dtype)?;
                ctx.read_q(&layer.run(ctx, &xg, &xqp)?).map(|_| ())
            })?;
            push("int8 gpu end-to-end", ms, format!("{name}; {kernel}"), None)?;
            // The float baseline on the same adapter, timed the same way. It does not split
            // its work: where it exceeds the device's limits, its row is left out (said on
            // stderr), the int8 rows stand.
            match f32_gpu_ms(ctx, &w, &x, &shape, opts.runs) {
                Ok((ms, kernel, how)) => {
                    let path = match ctx.has_timestamps() {
                        true => "float32 gpu kernel (timestamps)",
                        false => "float32 gpu kernel (wall)",
                    };
                    let detail = format!("{name}; {kernel}; {how}");
                    push(path, ms, detail, gpu_peak(GpuPeak::FmaF32))?;
                }
                Err(squint::Error::DeviceLimit(m)) => {
                    eprintln!("{}: no float32 gpu row: {m}", shape.name);
                }
                Err(e) => return Err(e),
            }
        }
    }
    for i in 0..results.len() {
        results[i].vs_f32 = same_device_f32(&results, &results[i]).map(|f| f / results[i].ms);
    }
    Ok(BenchReport {
        cpu_isa: isa.to_string(),
        threads,
        adapter,
        gpu_note,
        cpu_peaks: peaks.measured(),
        gpu_peaks,
        results,
    })
}

/// The shapes `opts` selects (see [`BenchOptions::shapes`]); an error naming the shapes when
/// a filter matches none.
fn selected_shapes(opts: &BenchOptions) -> Result<Vec<BenchShape>> {
    let all = standard_shapes();
    if opts.shapes.is_empty() {
        return Ok(all.into_iter().filter(|s| opts.large || !s.large).collect());
    }
    let matches = |s: &BenchShape, f: &str| s.name.to_lowercase().contains(&f.to_lowercase());
    if let Some(f) = opts
        .shapes
        .iter()
        .find(|f| !all.iter().any(|s| matches(s, f)))
    {
        let names: Vec<&str> = all.iter().map(|s| s.name).collect();
        return Err(squint::Error::InvalidParameter(format!(
            "--shape {f:?} matches no benchmark shape; the shapes are: {}",
            names.join("; ")
        )));
    }
    Ok(all
        .into_iter()
        .filter(|s| opts.shapes.iter().any(|f| matches(s, f)))
        .collect())
}

/// GPU time of one run of `layer` (input repacking + conv kernel), the median of `runs`:
/// timestamp queries where the device has them, else the wall time of the work and its wait;
/// with how it was measured.
fn gpu_layer_ms(
    ctx: &GpuContext,
    layer: &GpuConv2d,
    x: &squint::gpu::GpuTensor,
    x_qp: &QParams,
    runs: usize,
) -> Result<(f64, &'static str)> {
    gpu_timed_ms(ctx, runs, || Ok(layer.run_timed(ctx, x, x_qp)?.1))
}

/// The GPU time of the f32 conv of `w` on input `x` ([`gpu_timed_ms`]), its kernel's name and
/// how it was measured.
fn f32_gpu_ms(
    ctx: &GpuContext,
    w: &[f32],
    x: &[f32],
    shape: &BenchShape,
    runs: usize,
) -> Result<(f64, &'static str, &'static str)> {
    let layer = GpuConv2dF32::new(ctx, w, shape.w, None, shape.params)?;
    let xg = ctx.upload_f32(x, shape.x)?;
    let kernel = match layer.is_depthwise() {
        true => "f32 depthwise kernel",
        false => "f32 GEMM kernel",
    };
    let (ms, how) = gpu_timed_ms(ctx, runs, || Ok(layer.run_timed(ctx, &xg)?.1))?;
    Ok((ms, kernel, how))
}

/// GPU time of one call of `run_timed` (a layer's run, returning its timestamp-query time
/// where the device has them), the median of `runs`: the timestamps where given, else the wall
/// time of the call and the wait for the GPU; with how it was measured.
fn gpu_timed_ms(
    ctx: &GpuContext,
    runs: usize,
    mut run_timed: impl FnMut() -> Result<Option<std::time::Duration>>,
) -> Result<(f64, &'static str)> {
    // Warm-up: at least 500 ms of runs. A real GPU raises its clocks under load only
    // gradually: on an H200, with 100 ms of warm-up, the same kernel and shape timed 2.19 ms
    // right after the CPU paths and 0.60 ms a few seconds of GPU work later; with 500 ms, the
    // first timing matched the later ones.
    let start = Instant::now();
    while start.elapsed().as_millis() < 500 {
        run_timed()?;
        ctx.finish()?;
    }
    if ctx.has_timestamps() {
        let ms = median_value(runs, || {
            Ok(run_timed()?.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3))
        })?;
        Ok((ms, "GPU timestamp queries"))
    } else {
        let ms = median_ms(runs, || {
            run_timed()?;
            ctx.finish()
        })?;
        Ok((ms, "wall time (no timestamp queries)"))
    }
}

/// Median GPU times (ms) of the input repack and of the conv kernel of `layer`, each in a
/// compute pass of its own (`GpuConv2d::run_timed_parts`; right after [`gpu_layer_ms`], so
/// warm); `None` where the device or the run does not allow it.
fn gpu_parts_ms(
    ctx: &GpuContext,
    layer: &GpuConv2d,
    x: &squint::gpu::GpuTensor,
    x_qp: &QParams,
    runs: usize,
) -> Result<Option<[f64; 2]>> {
    let mut parts = Vec::new();
    for _ in 0..runs.max(1) {
        match layer.run_timed_parts(ctx, x, x_qp)?.1 {
            Some(t) => parts.push(t.map(|d| d.as_secs_f64() * 1e3)),
            None => return Ok(None),
        }
    }
    let part = |i: usize| median(parts.iter().map(|p| p[i]).collect());
    Ok(Some([part(0), part(1)]))
}

/// The tiled GEMM kernel's workgroups (`[pixel tiles, channel blocks]`) that
/// `squint bench --gpu-variants` times besides the default.
const BENCH_TILES: [[u32; 2]; 5] = [[8, 4], [8, 8], [16, 4], [16, 8], [32, 8]];

/// The parallel K slices of the tiled kernel that `squint bench --gpu-variants` times besides
/// the automatic choice (1: never split).
const BENCH_K_SLICES: [u32; 5] = [1, 2, 4, 8, 16];

/// Every kernel variant `ctx`'s adapter can run besides its default (see
/// [`GpuContext::kernel_variants`]), the tiled kernel's other workgroups and other parallel K
/// slices, named.
fn gpu_variant_contexts(ctx: &GpuContext) -> Vec<(String, GpuContext)> {
    let mut v: Vec<(String, GpuContext)> = ctx
        .kernel_variants()
        .into_iter()
        .skip(1)
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    for [tp, bpt] in BENCH_TILES {
        let o = KernelOptions {
            tile: Some([tp, bpt]),
            ..KernelOptions::default()
        };
        if let Ok(c) = ctx.with_kernel_options(o) {
            v.push((format!("tiles {}px x {}ch", 4 * tp, 8 * bpt), c));
        }
    }
    for k in BENCH_K_SLICES {
        let o = KernelOptions {
            staging: StagingChoice::Tiled,
            k_slices: Some(k),
            ..KernelOptions::default()
        };
        if let Ok(c) = ctx.with_kernel_options(o) {
            let name = match k {
                1 => "tiles, K unsplit".to_string(),
                k => format!("tiles, K in up to {k} parallel slices"),
            };
            v.push((name, c));
        }
    }
    v
}

/// The peak a path's fraction is of.
#[derive(Clone, Copy)]
enum PathPeak {
    /// A CPU loop, per thread (times the threads used).
    Cpu(PeakLoop),
    /// One of the adapter's loops and its GOPS.
    Gpu(GpuPeak, f64),
}

/// Per-thread peaks of the instruction loops, each measured once per run, when first needed.
#[derive(Default)]
struct Peaks(std::cell::RefCell<Vec<(PeakLoop, f64)>>);

impl Peaks {
    fn get(&self, l: PeakLoop) -> Result<f64> {
        if let Some(&(_, g)) = self.0.borrow().iter().find(|(k, _)| *k == l) {
            return Ok(g);
        }
        let g = l.measure(std::time::Duration::from_millis(40))?;
        self.0.borrow_mut().push((l, g));
        Ok(g)
    }

    fn measured(&self) -> Vec<(String, f64)> {
        self.0
            .borrow()
            .iter()
            .map(|(l, g)| (l.name().to_string(), *g))
            .collect()
    }
}

/// The milliseconds of the float32 path on the same device as `r` (same shape): `float32
/// cpu` for the CPU paths (`float32 cpu`, `int8 cpu ...`), `float32 gpu kernel` for the GPU
/// kernel timings (`int8 gpu kernel ...`, of the whole layer; not its parts, nor the paths
/// that include transfers); `None` for the others or where that path was not measured.
pub fn same_device_f32(results: &[BenchResult], r: &BenchResult) -> Option<f64> {
    let base = if r.path.starts_with("float32 cpu") || r.path.starts_with("int8 cpu") {
        "float32 cpu"
    } else if r.path.starts_with("float32 gpu kernel") || r.path.starts_with("int8 gpu kernel") {
        "float32 gpu kernel"
    } else {
        return None;
    };
    results
        .iter()
        .find(|o| o.shape == r.shape && o.path.starts_with(base))
        .map(|o| o.ms)
}

/// The report as a table with each path's speed against float32 on the same device
/// ([`BenchResult::vs_f32`]) and the fraction of the peak of the instruction it is built on.
pub fn format_bench(r: &BenchReport) -> String {
    let mut s = format!(
        "cpu: {} ({} threads); gpu: {}\n",
        r.cpu_isa,
        r.threads,
        r.adapter
            .clone()
            .or_else(|| r.gpu_note.clone())
            .unwrap_or_default(),
    );
    if !r.cpu_peaks.is_empty() {
        let peaks: Vec<String> = r
            .cpu_peaks
            .iter()
            .map(|(l, g)| format!("{l} {g:.1} GOPS"))
            .collect();
        s += &format!(
            "cpu peaks per thread (register-only loops): {}\n",
            peaks.join(", ")
        );
    }
    if !r.gpu_peaks.is_empty() {
        let peaks: Vec<String> = r
            .gpu_peaks
            .iter()
            .map(|(l, g)| format!("{l} {g:.1} GOPS"))
            .collect();
        s += &format!("gpu peaks (register-only loops): {}\n", peaks.join(", "));
    }
    s += &format!(
        "\n{:<38} {:<28} {:>10} {:>9} {:>9} {:>7}\n",
        "shape", "path", "ms", "GOPS", "vs f32", "% peak"
    );
    for res in &r.results {
        let vs = res.vs_f32.map_or(String::new(), |v| format!("{v:.2}x"));
        let peak = res
            .fraction_of_peak
            .map_or(String::new(), |f| format!("{:.0}%", f * 100.0));
        s += &format!(
            "{:<38} {:<28} {:>10.3} {:>9.1} {:>9} {:>7}\n",
            res.shape, res.path, res.ms, res.gops, vs, peak
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library's own check behind `--threads` (the command line refuses first, see
    /// tests/cli_errors.rs): a thread count over the limit is a typed error, not a panic.
    #[test]
    fn benchmark_with_more_threads_than_the_limit_is_invalid_parameter() {
        let opts = BenchOptions {
            threads: Some(1_000_000),
            gpu: None,
            ..Default::default()
        };
        let e = run_bench(&opts, |_| {}).expect_err("1000000 threads must be refused");
        let msg = e.to_string().to_lowercase();
        assert!(
            matches!(e, squint::Error::InvalidParameter(_)),
            "expected InvalidParameter, got {e:?}"
        );
        for m in ["thread count", "1000000"] {
            assert!(msg.contains(m), "the message lacks '{m}': {msg}");
        }
    }
}

/// One path of a whole-model benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct GraphBenchResult {
    /// What ran (`float32 cpu`, `int8 cpu-reference`, `int8 cpu-fast`).
    pub path: String,
    /// Median milliseconds of one forward pass.
    pub ms: f64,
}

/// Whole-model latency of `graph` on `input`: float on the CPU, int8 on the CPU reference
/// (with `reference`), the fast CPU path and (with `gpu`) a GPU, after calibrating on `calib`
/// with `qconfig`. The CPU paths use the current rayon pool's threads.
pub fn run_graph_bench(
    graph: squint::graph::Graph,
    input: &Tensor<f32>,
    calib: &[Tensor<f32>],
    qconfig: squint::pipeline::QConfig,
    runs: usize,
    reference: bool,
    gpu: Option<&DeviceOptions>,
) -> Result<Vec<GraphBenchResult>> {
    use squint::pipeline::qgraph::{FastCpuBackend, GpuBackend, PreparedGraph, ReferenceBackend};
    let x = std::slice::from_ref(input);
    let mut out = vec![GraphBenchResult {
        path: "float32 cpu".into(),
        ms: median_ms(runs, || graph.run_f32(x).map(|_| ()))?,
    }];
    let mut prepared = PreparedGraph::new(graph, qconfig)?;
    for b in calib {
        prepared.calibrate(std::slice::from_ref(b))?;
    }
    let (q, _) = prepared.convert(&squint::pipeline::ConvertOptions::default())?;
    if reference {
        out.push(GraphBenchResult {
            path: "int8 cpu-reference".into(),
            ms: median_ms(runs, || {
                q.run(&mut ReferenceBackend::new(&q), x).map(|_| ())
            })?,
        });
    }
    // One backend for every run, as a runtime keeps its layers: the first (untimed) run
    // packs the weights. The outputs only, as a runtime computes them: each ReLU or clip
    // that alone reads a conv's output runs inside the conv.
    let mut fast = FastCpuBackend::new(&q);
    fast.run_outputs(&q, x)?;
    out.push(GraphBenchResult {
        path: "int8 cpu-fast".into(),
        ms: median_ms(runs, || fast.run_outputs(&q, x).map(|_| ()))?,
    });
    if let Some(opts) = gpu {
        let ctx = GpuContext::open(opts)?;
        let summary = ctx.adapter_report().summary();
        let mut backend = GpuBackend::new(ctx, &q);
        // One untimed run compiles the pipelines. The values stay on the device between
        // nodes; the node-by-node run (a read-back per node) is timed beside it.
        backend.run_resident(&q, x)?;
        out.push(GraphBenchResult {
            path: format!("int8 gpu ({summary})"),
            ms: median_ms(runs, || backend.run_resident(&q, x).map(|_| ()))?,
        });
        out.push(GraphBenchResult {
            path: format!("int8 gpu node by node ({summary})"),
            ms: median_ms(runs, || q.run(&mut backend, x).map(|_| ()))?,
        });
    }
    Ok(out)
}

/// Whole-model latency of an already-quantized (QDQ) model on `input`: its float ops with the
/// dequantized weights on the CPU, and ONNX Runtime's int8 formulas on the CPU reference, the
/// fast CPU path and (with `gpu`) a GPU.
pub fn run_qdq_bench(
    m: &squint::io::onnx_qdq::QdqModel,
    input: &Tensor<f32>,
    runs: usize,
    reference: bool,
    gpu: Option<&DeviceOptions>,
) -> Result<Vec<GraphBenchResult>> {
    use squint::pipeline::qdq::{self, native_add_kernel, QdqFastCpu, QdqGpu, QdqReference};
    let x = std::slice::from_ref(input);
    let add = native_add_kernel();
    let mut out = vec![GraphBenchResult {
        path: "float32 cpu (dequantized weights)".into(),
        ms: median_ms(runs, || m.graph.run_f32(x).map(|_| ()))?,
    }];
    if reference {
        out.push(GraphBenchResult {
            path: "int8 cpu-reference (ORT formulas)".into(),
            ms: median_ms(runs, || {
                qdq::run(m, x, &mut QdqReference { add }).map(|_| ())
            })?,
        });
    }
    // The outputs only, as a runtime computes them: each run writes its convs' outputs into
    // the previous run's buffers (the first, untimed, run allocates them).
    let mut fast = QdqFastCpu::default();
    out.push(GraphBenchResult {
        path: "int8 cpu-fast (ORT formulas)".into(),
        ms: median_ms(runs, || fast.run_outputs(m, x).map(|_| ()))?,
    });
    if let Some(opts) = gpu {
        let ctx = GpuContext::open(opts)?;
        let summary = ctx.adapter_report().summary();
        let mut backend = QdqGpu::new(ctx, add);
        // One untimed run compiles the pipelines and builds the layers. The values stay on
        // the device between convs and adds; the node-by-node run (a read-back per node) is
        // timed beside it.
        backend.run_resident(m, x)?;
        out.push(GraphBenchResult {
            path: format!("int8 gpu ({summary})"),
            ms: median_ms(runs, || backend.run_resident(m, x).map(|_| ()))?,
        });
        out.push(GraphBenchResult {
            path: format!("int8 gpu node by node ({summary})"),
            ms: median_ms(runs, || qdq::run(m, x, &mut backend).map(|_| ()))?,
        });
    }
    Ok(out)
}
