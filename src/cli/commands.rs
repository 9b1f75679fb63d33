//! Subcommand implementations.

use super::*;
use super::{bench, demo, plot, progress};
use serde_json::json;
use squint::error::Result;
use squint::gpu::{self, BackendChoice, DeviceOptions};
use squint::io::npy;
use squint::observers::{Observer, ObserverConfig, ObserverKind, PerChannelMinMaxObserver};
use squint::pipeline::qgraph::{
    FastCpuBackend, GpuBackend, PreparedGraph, QuantizedGraph, ReferenceBackend,
};
use squint::pipeline::{
    diagnostics, histograms, ConvertOptions, Model, PreparedModel, QConfig, QuantizedModel,
};
use squint::pipeline::{golden, Device};
use squint::quant::QDtype;
use squint::tensor::Tensor;
use std::process::ExitCode;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Golden(a) => cmd_golden(a),
        Command::Observe(a) => cmd_observe(a),
        Command::Adapters(a) => cmd_adapters(a),
        Command::Demo(a) => cmd_demo(a),
        Command::Quantize(a) => cmd_quantize(a),
        Command::Run(a) => cmd_run(a),
        Command::Report(a) => cmd_report(a),
        Command::Bench(a) => cmd_bench(a),
    }
}

impl GpuArgs {
    /// The library's device options.
    pub fn options(&self) -> DeviceOptions {
        DeviceOptions {
            backend: self.backend.map(|b| match b {
                BackendArg::Vulkan => BackendChoice::Vulkan,
                BackendArg::Gl => BackendChoice::Gl,
                BackendArg::Metal => BackendChoice::Metal,
                BackendArg::Dx12 => BackendChoice::Dx12,
            }),
            adapter: self.adapter.clone(),
            wait_timeout: self.gpu_timeout,
        }
    }
}

fn open_device(kind: DeviceKind, gpu: &GpuArgs) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::CpuReference),
        DeviceKind::CpuFast => Ok(Device::Cpu),
        DeviceKind::Gpu => Device::open_gpu(&gpu.options()),
    }
}

fn cmd_golden(a: GoldenArgs) -> Result<ExitCode> {
    let device = open_device(a.device, &a.gpu)?;
    println!("device: {}", device.describe());
    println!(
        "{:<44} {:>10} {:>10} {:>8}",
        "case", "compared", "mismatch", "max|Δ|"
    );
    let mut all_ok = true;
    for dir in &a.dirs {
        if !dir.is_dir() && dir.exists() {
            // A shell glob such as ../shared/golden/* also matches the README.
            println!("{:<44} skipped (not a directory)", dir.display());
            continue;
        }
        match golden::run_dir(dir, &device) {
            Ok(reports) => {
                for r in reports {
                    all_ok &= r.passed();
                    println!(
                        "{:<44} {:>10} {:>10} {:>8}  {}",
                        r.name,
                        r.compared(),
                        r.mismatches(),
                        r.max_abs_diff(),
                        if r.passed() { "ok" } else { "MISMATCH" }
                    );
                    if a.verbose || !r.passed() {
                        for c in &r.checks {
                            println!(
                                "    {:<60} {:>8} {:>8} {:>6}",
                                c.what, c.compared, c.mismatches, c.max_abs_diff
                            );
                        }
                    }
                }
            }
            Err(e) => {
                all_ok = false;
                println!("{:<44} error: {e}", dir.display());
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn cmd_observe(a: ObserveArgs) -> Result<ExitCode> {
    let dtype = match a.dtype {
        DtypeArg::Quint8 => QDtype::QUInt8,
        DtypeArg::Qint8 => QDtype::QInt8,
    };
    let mut batches = Vec::new();
    for path in &a.batches {
        let t = npy::read::<f32>(path)?;
        let name = path.display().to_string();
        if a.split_axis0 {
            for (i, b) in t.split_axis0()?.into_iter().enumerate() {
                batches.push((format!("{name}[{i}]"), b));
            }
        } else {
            batches.push((name, t));
        }
    }
    if a.observer == ObserverArg::PerChannelMinmax {
        let mut obs = PerChannelMinMaxObserver::new(dtype, a.symmetric, a.reduce_range);
        for (name, b) in &batches {
            let channels = *b.dims.first().unwrap_or(&1);
            obs.observe(&b.data, channels, name)?;
        }
        let qp = obs.qparams()?;
        let (mins, maxs) = obs
            .min_max()
            .map(|(a, b)| (a.to_vec(), b.to_vec()))
            .unwrap_or_default();
        let out = json!({
            "observer": "per-channel-minmax",
            "dtype": dtype.name(),
            "qscheme": qp.scheme.name(),
            "batches": batches.len(),
            "scale": qp.scales,
            "zero_point": qp.zero_points,
            "min": mins,
            "max": maxs,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("JSON of plain values")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let kind = match a.observer {
        ObserverArg::Minmax => ObserverKind::MinMax,
        ObserverArg::MovingAverage => ObserverKind::MovingAverageMinMax,
        ObserverArg::Histogram => ObserverKind::Histogram,
        ObserverArg::PerChannelMinmax => unreachable!("handled above"),
    };
    let cfg = ObserverConfig::new(kind, dtype)
        .symmetric(a.symmetric)
        .reduce_range(a.reduce_range)
        .averaging_constant(a.averaging_constant)
        .label("observe");
    let mut obs: Box<dyn Observer> = cfg.build()?;
    for (name, b) in &batches {
        obs.observe(&b.data, name)?;
    }
    let qp = obs.qparams()?;
    // `qparams` succeeded, so the observer saw data and both ranges exist.
    let no_data = || squint::Error::InvalidParameter("the observer saw no data".into());
    let (min, max) = obs.min_max().ok_or_else(no_data)?;
    let (search_min, search_max) = obs.qparams_range().ok_or_else(no_data)?;
    let out = json!({
        "observer": kind.name(),
        "dtype": dtype.name(),
        "symmetric": a.symmetric,
        "reduce_range": a.reduce_range,
        "batches": batches.len(),
        "scale": qp.scale,
        "scale_f32_hex": format!("{:#010x}", qp.scale.to_bits()),
        "zero_point": qp.zero_point,
        "min": min,
        "max": max,
        "range_min": search_min,
        "range_max": search_max,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).expect("JSON of plain values")
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_adapters(a: AdaptersArgs) -> Result<ExitCode> {
    let list = gpu::list_adapters(&a.gpu.options());
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).expect("JSON of plain values")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        return Err(squint::Error::NoAdapter {
            detail: String::new(),
        });
    }
    let yn = |b: bool| if b { "yes" } else { "no" };
    for (i, r) in list.iter().enumerate() {
        println!(
            "[{i}] {} — backend {}, type {}, driver {} {}",
            r.name, r.backend, r.device_type, r.driver, r.driver_info
        );
        println!(
            "    packed int8 dot: {}, shader-int64: {}, subgroups: {}, timestamp queries: {}",
            yn(r.packed_int8_dot_product),
            yn(r.shader_int64),
            yn(r.subgroups),
            yn(r.timestamp_query)
        );
        println!(
            "    max storage binding {} MiB, max buffer {} MiB, max workgroups/dim {}, max invocations/workgroup {}, workgroup storage {} KiB",
            r.max_storage_buffer_binding_size >> 20,
            r.max_buffer_size >> 20,
            r.max_compute_workgroups_per_dimension,
            r.max_compute_invocations_per_workgroup,
            r.max_compute_workgroup_storage_size >> 10
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn observer_kind(a: ObserverArg) -> Result<ObserverKind> {
    match a {
        ObserverArg::Minmax => Ok(ObserverKind::MinMax),
        ObserverArg::MovingAverage => Ok(ObserverKind::MovingAverageMinMax),
        ObserverArg::Histogram => Ok(ObserverKind::Histogram),
        ObserverArg::PerChannelMinmax => Err(squint::Error::InvalidParameter(
            "per-channel-minmax observes weights, not activations".into(),
        )),
    }
}

/// Reads calibration files: 4-D files are one batch, 5-D stacks are split along axis 0.
fn load_batches(paths: &[PathBuf]) -> Result<Vec<Tensor<f32>>> {
    let mut out = Vec::new();
    for p in paths {
        let t = npy::read::<f32>(p)?;
        match t.dims.len() {
            4 => out.push(t),
            5 => out.extend(t.split_axis0()?),
            _ => {
                return Err(squint::Error::format(
                    p,
                    format!(
                        "calibration data must be NCHW or BNCHW, got shape {:?}",
                        t.dims
                    ),
                ))
            }
        }
    }
    Ok(out)
}

struct Calibrated {
    model: Model,
    qconfig: QConfig,
    batches: Vec<Tensor<f32>>,
    quantized: QuantizedModel,
}

fn is_onnx(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// ONNX Runtime's `quantize_static` options of `--qconfig ort` / `ort-per-tensor`.
fn ort_preset(name: &str) -> Option<squint::pipeline::ort_preset::OrtQuantOptions> {
    use squint::pipeline::ort_preset::OrtQuantOptions;
    match name {
        "ort" => Some(OrtQuantOptions::default()),
        "ort-per-tensor" => Some(OrtQuantOptions {
            per_channel: false,
            ..OrtQuantOptions::default()
        }),
        _ => None,
    }
}

/// The float ONNX model `path` (`bytes`) quantized in memory with ORT's preset `opts` on
/// `batches`, with a progress bar.
fn ort_preset_model(
    path: &std::path::Path,
    bytes: &[u8],
    batches: &[Tensor<f32>],
    opts: squint::pipeline::ort_preset::OrtQuantOptions,
) -> Result<squint::io::onnx_qdq::QdqModel> {
    let graph = squint::io::onnx::from_bytes(bytes, path)?;
    let batches: Vec<Vec<Tensor<f32>>> = batches.iter().map(|b| vec![b.clone()]).collect();
    progress::with_bar(batches.len(), |step| {
        squint::pipeline::ort_preset::quantize(&graph, &batches, opts, step)
    })
}

fn qconfig_of(a: &ModelArgs) -> Result<QConfig> {
    if ort_preset(&a.qconfig).is_some() {
        return Err(squint::Error::InvalidParameter(format!(
            "--qconfig {} quantizes a float ONNX model as ONNX Runtime's quantize_static \
             would: use it with `squint quantize --out model_qdq.onnx`, `run`, `report` or \
             `bench` on an ONNX model",
            a.qconfig
        )));
    }
    let mut qconfig = QConfig::preset(&a.qconfig)?;
    if let Some(o) = a.observer {
        qconfig = qconfig.with_observer(observer_kind(o)?);
    }
    if let Some(f) = &a.formula {
        qconfig.formula = squint::quant::RequantFormula::parse(f)?;
        qconfig.name = format!("{}+{}", qconfig.name, qconfig.formula);
    }
    Ok(qconfig)
}

fn convert_options(a: &ModelArgs) -> Result<ConvertOptions> {
    Ok(ConvertOptions {
        allow_uncalibrated: a.allow_uncalibrated,
        pinned: match &a.pin {
            Some(p) => squint::pipeline::read_pinned_qparams(p)?,
            None => Default::default(),
        },
    })
}

fn calibrate_and_convert(a: &ModelArgs) -> Result<Calibrated> {
    if is_onnx(&a.model) {
        return Err(squint::Error::InvalidParameter(
            "this command reads JSON conv chains only; ONNX graph models go to `squint quantize` and `squint run`".into(),
        ));
    }
    let weights = a.weights.as_ref().ok_or_else(|| {
        squint::Error::InvalidParameter(
            "a JSON model needs --weights (a safetensors state_dict)".into(),
        )
    })?;
    let model = Model::load(&a.model, weights)?;
    let qconfig = qconfig_of(a)?;
    let batches = load_batches(&a.calib)?;
    let mut prepared = PreparedModel::new(model.clone(), qconfig.clone())?;
    progress::calibrate_with_bar(&mut prepared, &batches)?;
    let (quantized, warnings) = prepared.convert(&convert_options(a)?)?;
    for w in warnings {
        eprintln!("{w}");
    }
    Ok(Calibrated {
        model,
        qconfig,
        batches,
        quantized,
    })
}

fn eval_input(input: &Option<PathBuf>, batches: &[Tensor<f32>]) -> Result<Tensor<f32>> {
    match input {
        Some(p) => npy::read::<f32>(p),
        None => batches.first().cloned().ok_or_else(|| {
            squint::Error::InvalidParameter(
                "diagnostics need --input or at least one --calib batch".into(),
            )
        }),
    }
}

fn cmd_demo(a: DemoArgs) -> Result<ExitCode> {
    let opts = demo::DemoOptions {
        seed: a.seed,
        calib_batches: a.calib_batches,
        gpu: (!a.no_gpu).then(|| a.gpu.options()),
        progress: !a.json,
        ..Default::default()
    };
    let report = demo::run_demo(&opts)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("plain data serialises")
        );
    } else {
        print!("{}", demo::format_demo(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// An ONNX graph, calibrated (observers where PyTorch eager puts them) and converted.
struct CalibratedGraph {
    prepared: PreparedGraph,
    qconfig: QConfig,
    batches: Vec<Tensor<f32>>,
    quantized: QuantizedGraph,
}

fn calibrate_and_convert_graph(m: &ModelArgs) -> Result<CalibratedGraph> {
    if m.weights.is_some() {
        return Err(squint::Error::InvalidParameter(
            "an ONNX model carries its weights: drop --weights".into(),
        ));
    }
    if m.observer.is_some() || m.formula.is_some() {
        return Err(squint::Error::InvalidParameter(
            "--observer and --formula are not available for graph models yet; use a --qconfig preset".into(),
        ));
    }
    let graph = squint::io::onnx::load(&m.model)?;
    let qconfig = qconfig_of(m)?;
    let batches = load_batches(&m.calib)?;
    let mut prepared = PreparedGraph::new(graph, qconfig.clone())?;
    progress::calibrate_graph_with_bar(&mut prepared, &batches)?;
    let (quantized, warnings) = prepared.convert(&convert_options(m)?)?;
    for w in warnings {
        eprintln!("{w}");
    }
    Ok(CalibratedGraph {
        prepared,
        qconfig,
        batches,
        quantized,
    })
}

impl CalibratedGraph {
    /// Per-value diagnostics on `input` (default: the first calibration batch), on the CPU
    /// reference.
    fn diagnose(&self, input: &Option<PathBuf>) -> Result<Vec<diagnostics::PointReport>> {
        let x = eval_input(input, &self.batches)?;
        diagnostics::diagnose_graph(
            &self.quantized,
            &[x],
            &mut ReferenceBackend::new(&self.quantized),
            Some(self.qconfig.activation.kind),
            self.qconfig.activation.reduce_range,
        )
    }
}

/// `squint quantize` of an ONNX graph: import, calibrate, convert, save as a graph file.
/// `squint quantize --qconfig ort --out model_qdq.onnx`: squint's `quantize_static`, written
/// as an ONNX QDQ model (which squint, and ONNX Runtime, run with ORT's formulas).
fn cmd_quantize_ort(
    a: QuantizeArgs,
    opts: squint::pipeline::ort_preset::OrtQuantOptions,
) -> Result<ExitCode> {
    if !is_onnx(&a.out) {
        return Err(squint::Error::InvalidParameter(format!(
            "--qconfig {} writes an ONNX QDQ model: give --out a .onnx path",
            a.model.qconfig
        )));
    }
    if a.report {
        return Err(squint::Error::InvalidParameter(
            "--report with --qconfig ort: run `squint report --qconfig ort` instead".into(),
        ));
    }
    let path = &a.model.model;
    let bytes = std::fs::read(path).map_err(|e| squint::Error::io(path, e))?;
    let batches = load_batches(&a.model.calib)?;
    let m = ort_preset_model(path, &bytes, &batches, opts)?;
    squint::io::onnx_qdq::save(&m, &a.out)?;
    println!(
        "wrote {} (an ONNX QDQ model: {} nodes, qconfig {}, {} calibration batches)",
        a.out.display(),
        m.graph.nodes().len(),
        a.model.qconfig,
        batches.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_quantize_graph(a: QuantizeArgs) -> Result<ExitCode> {
    if let Some(opts) = ort_preset(&a.model.qconfig) {
        return cmd_quantize_ort(a, opts);
    }
    let c = calibrate_and_convert_graph(&a.model)?;
    if a.report {
        print!("{}", diagnostics::format_table(&c.diagnose(&a.input)?));
    }
    let quantized = &c.quantized;
    quantized.save(&a.out)?;
    println!(
        "wrote {} ({} nodes, {} quantization points, qconfig {}, {} calibration batches)",
        a.out.display(),
        quantized.graph().nodes().len(),
        quantized.sources().iter().flatten().count(),
        c.qconfig.name,
        c.batches.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_quantize(a: QuantizeArgs) -> Result<ExitCode> {
    if is_onnx(&a.model.model) {
        return cmd_quantize_graph(a);
    }
    let c = calibrate_and_convert(&a.model)?;
    if a.report {
        let x = eval_input(&a.input, &c.batches)?;
        let r = diagnostics::diagnose(
            &c.model,
            &c.quantized,
            &x,
            &Device::Cpu,
            Some(c.qconfig.activation.kind),
            c.qconfig.activation.reduce_range,
        )?;
        print!("{}", diagnostics::format_table(&r));
    }
    c.quantized.save(&a.out)?;
    println!(
        "wrote {} ({} conv layers, qconfig {}, {} calibration batches)",
        a.out.display(),
        c.quantized.convs().len(),
        c.qconfig.name,
        c.batches.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints how many ints of the graph values `got` (on `device`) differ from the CPU
/// reference's `want`; false (with an error line naming the first differing value) when any
/// does.
fn cross_check_values(
    device: &str,
    got: &[&[u8]],
    want: &[&[u8]],
    values: &[squint::graph::Value],
) -> bool {
    let mut first = None;
    let mut differ_total = 0;
    for (i, (g, c)) in got.iter().zip(want).enumerate() {
        let differ =
            g.iter().zip(c.iter()).filter(|(a, b)| a != b).count() + g.len().abs_diff(c.len());
        differ_total += differ;
        if differ > 0 && first.is_none() {
            first = Some(values[i].name.clone());
        }
    }
    println!(
        "cross-check {device} vs cpu-reference: {} values, {differ_total} ints differ{}",
        got.len(),
        if differ_total == 0 { ", bit-exact" } else { "" }
    );
    if let Some(name) = first {
        eprintln!(
            "error: cross-check failed: {device} differs from the CPU reference first at '{name}'; nothing written"
        );
        return false;
    }
    true
}

/// `squint run` of an ONNX model: an already-quantized (QDQ) model runs with ONNX Runtime's
/// int8 formulas on the CPU; a float model must be converted first.
fn cmd_run_qdq(a: RunArgs) -> Result<ExitCode> {
    use squint::io::onnx_qdq;
    use squint::pipeline::qdq;
    let bytes = std::fs::read(&a.model).map_err(|e| squint::Error::io(&a.model, e))?;
    let m = if onnx_qdq::is_qdq(&bytes, &a.model)? {
        if a.qconfig.is_some() || !a.calib.is_empty() {
            return Err(squint::Error::InvalidParameter(
                "a QDQ model carries its qparams: drop --qconfig and --calib".into(),
            ));
        }
        onnx_qdq::from_bytes(&bytes, &a.model)?
    } else {
        if let Some(q) = a.qconfig.as_deref().filter(|q| ort_preset(q).is_none()) {
            return Err(squint::Error::InvalidParameter(format!(
                "`squint run --qconfig` takes ort or ort-per-tensor (ONNX Runtime's \
                 quantize_static), got '{q}'; PyTorch's presets go through `squint quantize`"
            )));
        }
        let opts = a.qconfig.as_deref().and_then(ort_preset).ok_or_else(|| {
            squint::Error::format(
                &a.model,
                "a float ONNX model: `squint run` takes an already-quantized (QDQ) model or a \
                 model converted by `squint quantize` (.safetensors); convert this one first, \
                 or run it with --qconfig ort --calib calib.npy (ONNX Runtime's \
                 quantize_static, in memory)",
            )
        })?;
        if a.calib.is_empty() {
            return Err(squint::Error::InvalidParameter(
                "--qconfig ort needs --calib (calibration batches)".into(),
            ));
        }
        ort_preset_model(&a.model, &bytes, &load_batches(&a.calib)?, opts)?
    };
    let x = npy::read::<f32>(&a.input)?;
    let xs = std::slice::from_ref(&x);
    let add = qdq::native_add_kernel();
    let (run, device) = match a.device {
        DeviceKind::Cpu => (
            qdq::run_reference(&m, xs, add)?,
            "cpu-reference".to_string(),
        ),
        DeviceKind::CpuFast => (
            qdq::QdqFastCpu::default().run(&m, xs)?,
            "cpu-fast".to_string(),
        ),
        DeviceKind::Gpu => {
            let ctx = squint::gpu::GpuContext::open(&a.gpu.options())?;
            let name = ctx.adapter_report().summary();
            // The values stay on the device between convs and adds; every value is read
            // back at the end (for --cross-check and --out-ints).
            let mut gpu = qdq::QdqGpu::new(ctx, add);
            (gpu.run_resident_values(&m, xs)?, name)
        }
    };
    if a.cross_check {
        let want = qdq::run_reference(&m, xs, add)?;
        let got: Vec<&[u8]> = run.values.iter().map(|v| v.as_slice()).collect();
        let want: Vec<&[u8]> = want.values.iter().map(|v| v.as_slice()).collect();
        if !cross_check_values(&device, &got, &want, m.graph.values()) {
            return Ok(ExitCode::from(1));
        }
    }
    let out = &run.outputs[0];
    let out_id = m.graph.outputs()[0];
    npy::write(&a.out, out)?;
    if let Some(p) = &a.out_ints {
        let t = Tensor::new(out.dims.clone(), run.values[out_id.0].clone())?;
        if let Err(e) = npy::write(p, &t) {
            let _ = std::fs::remove_file(&a.out);
            return Err(e);
        }
    }
    let qp = m.qparams[out_id.0];
    println!(
        "wrote {} {:?} with ONNX Runtime's int8 formulas on {device} ({} nodes; output scale {} \
         zero point {})",
        a.out.display(),
        out.dims,
        m.graph.nodes().len(),
        qp.scale,
        qp.zero_point
    );
    Ok(ExitCode::SUCCESS)
}

/// `squint run` of a graph file.
fn cmd_run_graph(a: RunArgs) -> Result<ExitCode> {
    let q = QuantizedGraph::load(&a.model)?;
    let x = npy::read::<f32>(&a.input)?;
    let (run, device) = match a.device {
        DeviceKind::Cpu => (
            q.run(&mut ReferenceBackend::new(&q), std::slice::from_ref(&x))?,
            "cpu-reference".to_string(),
        ),
        DeviceKind::CpuFast => (
            FastCpuBackend::new(&q).run(&q, std::slice::from_ref(&x))?,
            "cpu-fast".to_string(),
        ),
        DeviceKind::Gpu => {
            let ctx = squint::gpu::GpuContext::open(&a.gpu.options())?;
            let name = ctx.adapter_report().summary();
            // The values stay on the device between nodes; every value is read back at the
            // end (for --cross-check and --out-ints).
            let mut gpu = GpuBackend::new(ctx, &q);
            (gpu.run_resident_values(&q, std::slice::from_ref(&x))?, name)
        }
    };
    if a.cross_check {
        // Every value of the graph against the CPU reference, bit for bit.
        let want = q.run(&mut ReferenceBackend::new(&q), std::slice::from_ref(&x))?;
        let got: Vec<&[u8]> = run.values.iter().map(|v| v.data.as_slice()).collect();
        let want: Vec<&[u8]> = want.values.iter().map(|v| v.data.as_slice()).collect();
        if !cross_check_values(&device, &got, &want, q.graph().values()) {
            return Ok(ExitCode::from(1));
        }
    }
    let out = &run.outputs[0];
    let out_id = q.graph().outputs()[0];
    let ints = &run.values[out_id.0];
    npy::write(&a.out, out)?;
    if let Some(p) = &a.out_ints {
        let t = Tensor::new(ints.dims.clone(), ints.data.clone())?;
        if let Err(e) = npy::write(p, &t) {
            let _ = std::fs::remove_file(&a.out);
            return Err(e);
        }
    }
    println!(
        "wrote {} {:?} on {device} ({} nodes; output scale {} zero point {})",
        a.out.display(),
        out.dims,
        q.graph().nodes().len(),
        ints.qp.scale,
        ints.qp.zero_point
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_run(a: RunArgs) -> Result<ExitCode> {
    if is_onnx(&a.model) {
        return cmd_run_qdq(a);
    }
    if QuantizedGraph::is_graph_file(&a.model)? {
        return cmd_run_graph(a);
    }
    let qm = QuantizedModel::load(&a.model)?;
    let x = npy::read::<f32>(&a.input)?;
    let device = open_device(a.device, &a.gpu)?;
    let y = if a.cross_check {
        // The output written is the one that was checked: cross_check runs the model exactly
        // as `run` does and returns that output.
        let cc = squint::pipeline::cross_check::cross_check(&qm, &x, &device)?;
        for c in &cc.points {
            println!(
                "cross-check {:<12} {} vs cpu-reference: {} of {} ints differ (max |Δ| {}), {} \
                 dequantized f32 differ{}",
                c.name,
                device.describe(),
                c.mismatches,
                c.compared,
                c.max_abs_diff,
                c.f32_mismatches,
                if c.bit_exact() {
                    " bit-exact"
                } else {
                    " MISMATCH"
                }
            );
        }
        if let Some(first) = cc.first_difference() {
            eprintln!(
                "error: cross-check failed: {} differs from the CPU reference first at point '{}'; \
                 nothing written",
                device.describe(),
                first.name
            );
            return Ok(ExitCode::from(1));
        }
        cc.output
    } else {
        qm.run(&x, &device)?
    };
    npy::write(&a.out, &y.y)?;
    if let Some(p) = &a.out_ints {
        let written = match y.qp.dtype {
            QDtype::QUInt8 => npy::write(p, &y.q),
            QDtype::QInt8 => Tensor::new(
                y.q.dims.clone(),
                y.q.data.iter().map(|&b| b as i8).collect(),
            )
            .and_then(|t| npy::write(p, &t)),
        };
        if let Err(e) = written {
            // All or nothing: do not leave --out behind when --out-ints fails.
            let _ = std::fs::remove_file(&a.out);
            return Err(e);
        }
    }
    println!(
        "wrote {} {:?} on {} (output scale {} zero point {})",
        a.out.display(),
        y.y.dims,
        device.describe(),
        y.qp.scale,
        y.qp.zero_point
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints `reports` as JSON or as the table under `title`.
fn print_reports(reports: &[diagnostics::PointReport], json: bool, title: &str) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(reports).expect("plain data serialises")
        );
    } else {
        println!("{title}");
        print!("{}", diagnostics::format_table(reports));
    }
}

fn cmd_report(a: ReportArgs) -> Result<ExitCode> {
    if is_onnx(&a.model.model) {
        let path = &a.model.model;
        let bytes = std::fs::read(path).map_err(|e| squint::Error::io(path, e))?;
        if squint::io::onnx_qdq::is_qdq(&bytes, path)? {
            return cmd_report_qdq(a, &bytes);
        }
        if let Some(opts) = ort_preset(&a.model.qconfig) {
            return cmd_report_ort_preset(a, &bytes, opts);
        }
        return cmd_report_graph(a);
    }
    let c = calibrate_and_convert(&a.model)?;
    let x = eval_input(&a.input, &c.batches)?;
    let r = diagnostics::diagnose(
        &c.model,
        &c.quantized,
        &x,
        &Device::Cpu,
        Some(c.qconfig.activation.kind),
        c.qconfig.activation.reduce_range,
    )?;
    let title = format!(
        "qconfig {} ({} calibration batches)",
        c.qconfig.name,
        c.batches.len()
    );
    print_reports(&r, a.json, &title);
    if let Some(path) = &a.plot {
        let h = histograms::point_histograms(
            &c.model,
            c.qconfig.activation.dtype,
            c.qconfig.activation.reduce_range,
            &c.batches,
        )?;
        plot::plot_svg(path, &h)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `squint report --qconfig ort` of a float ONNX model: squint's quantize_static in memory,
/// then the QDQ report.
fn cmd_report_ort_preset(
    a: ReportArgs,
    bytes: &[u8],
    opts: squint::pipeline::ort_preset::OrtQuantOptions,
) -> Result<ExitCode> {
    if a.plot.is_some() {
        return Err(squint::Error::InvalidParameter(
            "--plot draws the observers of PyTorch's presets: drop it with --qconfig ort".into(),
        ));
    }
    let batches = load_batches(&a.model.calib)?;
    let m = ort_preset_model(&a.model.model, bytes, &batches, opts)?;
    let x = eval_input(&a.input, &batches)?;
    let r = diagnostics::diagnose_qdq(&m, &[x])?;
    let title = format!(
        "qconfig {} (ONNX Runtime's quantize_static, {} calibration batches): float ops \
         against ONNX Runtime's int8 formulas",
        a.model.qconfig,
        batches.len()
    );
    print_reports(&r, a.json, &title);
    Ok(ExitCode::SUCCESS)
}

/// `squint report` of an already-quantized (QDQ) model: its float ops (dequantized weights)
/// against ONNX Runtime's int8 formulas at every value, on `--input`.
fn cmd_report_qdq(a: ReportArgs, bytes: &[u8]) -> Result<ExitCode> {
    if !a.model.calib.is_empty() || a.plot.is_some() {
        return Err(squint::Error::InvalidParameter(
            "a QDQ model carries its qparams: drop --calib and --plot".into(),
        ));
    }
    let input = a.input.as_ref().ok_or_else(|| {
        squint::Error::InvalidParameter("report on a QDQ model needs --input".into())
    })?;
    let m = squint::io::onnx_qdq::from_bytes(bytes, &a.model.model)?;
    let x = npy::read::<f32>(input)?;
    let r = diagnostics::diagnose_qdq(&m, &[x])?;
    let title = "an ONNX Runtime QDQ model: float ops (dequantized weights) against ONNX \
                 Runtime's int8 formulas; every value's qparams come from the model";
    print_reports(&r, a.json, title);
    Ok(ExitCode::SUCCESS)
}

/// `squint report` of an ONNX graph: every value (each node's output), on the CPU reference.
fn cmd_report_graph(a: ReportArgs) -> Result<ExitCode> {
    let c = calibrate_and_convert_graph(&a.model)?;
    let r = c.diagnose(&a.input)?;
    let title = format!(
        "qconfig {} ({} calibration batches, engine {}); values without a quantization point of \
         their own share their input's qparams",
        c.qconfig.name,
        c.batches.len(),
        c.quantized.engine().name()
    );
    print_reports(&r, a.json, &title);
    if let Some(path) = &a.plot {
        let batches: Vec<Vec<Tensor<f32>>> = c.batches.iter().map(|b| vec![b.clone()]).collect();
        let h = histograms::graph_point_histograms(
            &c.prepared,
            c.qconfig.activation.dtype,
            c.qconfig.activation.reduce_range,
            &batches,
        )?;
        plot::plot_svg(path, &h)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_bench(a: BenchArgs) -> Result<ExitCode> {
    let max = squint::cpu::fast::MAX_THREADS;
    if let Some(t) = a.threads.filter(|&t| t == 0 || t > max) {
        return Err(squint::Error::InvalidParameter(format!(
            "--threads must be between 1 and {max}, got {t}"
        )));
    }
    let isa = a
        .isa
        .as_deref()
        .map(squint::cpu::fast::Isa::parse)
        .transpose()?;
    if let Some(model) = &a.model {
        // Every layer of the model is packed after this, on that path.
        if let Some(isa) = isa {
            isa.set_process_default()?;
        }
        let input = a
            .input
            .as_ref()
            .ok_or_else(|| squint::Error::InvalidParameter("bench --model needs --input".into()))?;
        let x = npy::read::<f32>(input)?;
        let calib = if a.calib.is_empty() {
            vec![x.clone()]
        } else {
            load_batches(&a.calib)?
        };
        let gpu = (!a.no_gpu).then(|| a.gpu.options());
        let bytes = std::fs::read(model).map_err(|e| squint::Error::io(model, e))?;
        let qdq = squint::io::onnx_qdq::is_qdq(&bytes, model)?;
        let ort = ort_preset(&a.qconfig);
        let (runs, reference) = (a.runs.max(1), !a.no_reference);
        let bench = || {
            if qdq {
                let m = squint::io::onnx_qdq::from_bytes(&bytes, model)?;
                bench::run_qdq_bench(&m, &x, runs, reference, gpu.as_ref())
            } else if let Some(opts) = ort {
                let m = ort_preset_model(model, &bytes, &calib, opts)?;
                bench::run_qdq_bench(&m, &x, runs, reference, gpu.as_ref())
            } else {
                bench::run_graph_bench(
                    squint::io::onnx::from_bytes(&bytes, model)?,
                    &x,
                    &calib,
                    QConfig::preset(&a.qconfig)?,
                    runs,
                    reference,
                    gpu.as_ref(),
                )
            }
        };
        // Every CPU path of the model (float and int8) runs on the current rayon pool: with
        // --threads, a pool of that many threads.
        let threads = a.threads.unwrap_or_else(rayon::current_num_threads);
        let results = match a.threads {
            Some(t) => {
                squint::cpu::fast::FastConvOptions::with_threads(t).validate()?;
                // A pool of exactly `t` workers (one included: the model's ops run on the
                // current pool), pinned as the fast kernels' own pools are.
                squint::cpu::fast::pool_builder(t)
                    .build()
                    .map_err(|e| {
                        squint::Error::InvalidParameter(format!(
                            "cannot create a pool of {t} threads: {e}"
                        ))
                    })?
                    .install(bench)?
            }
            None => bench()?,
        };
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "model": model,
                    "input_dims": x.dims,
                    "threads": threads,
                    "isa": squint::cpu::fast::detected_isa(),
                    "results": results
                }))
                .expect("plain data serialises")
            );
        } else {
            let what = if qdq {
                "an ONNX Runtime QDQ model".to_string()
            } else if ort.is_some() {
                format!(
                    "qconfig {} (ONNX Runtime's quantize_static and formulas)",
                    a.qconfig
                )
            } else {
                format!("qconfig {}", a.qconfig)
            };
            println!(
                "{} on {:?}, {what} (median of {runs} runs, {threads} CPU threads, {} kernels):",
                model.display(),
                x.dims,
                squint::cpu::fast::detected_isa(),
            );
            let w = results.iter().map(|r| r.path.len()).max().unwrap_or(0);
            for r in &results {
                println!("  {:<w$} {:>10.3} ms", r.path, r.ms);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut opts = bench::BenchOptions {
        threads: a.threads,
        gpu: (!a.no_gpu).then(|| a.gpu.options()),
        large: a.large,
        runs: a.runs.max(1),
        isa,
        act_bits: a.act_bits,
        gpu_variants: a.gpu_variants,
        shapes: a.shapes.clone(),
        ..Default::default()
    };
    if a.no_reference {
        opts.reference_max_macs = 0;
    }
    let json = a.json;
    let report = bench::run_bench(&opts, |r| {
        if !json {
            eprintln!(
                "  {:<38} {:<28} {:>9.3} ms {:>8.1} GOPS",
                r.shape, r.path, r.ms, r.gops
            );
        }
    })?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("plain data serialises")
        );
    } else {
        print!("\n{}", bench::format_bench(&report));
    }
    Ok(ExitCode::SUCCESS)
}
