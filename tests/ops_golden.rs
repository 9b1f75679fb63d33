//! squint's int8 reference of PyTorch eager's quantized ops against fixtures made by real
//! PyTorch (`scripts/gen_op_fixtures.py`, files `tests/data/ops/{op}_{engine}[_{isa}].json`).
//! ISA variants: `_avx2` / `_default` were made with `ATEN_CPU_CAPABILITY` set, `_fbgemm_avx2`
//! with `FBGEMM_ENABLE_INSTRUCTIONS=AVX2`; each file records the ISA it was made with.
//!
//! Every output int of every case must equal PyTorch's: no tolerance. Each file must hold at
//! least one case and every case must be checked; the per-file counts are printed.
//!
//! Cases with `"memory_format": "channels_last"` ran on channels-last (NHWC) tensors in PyTorch
//! and are checked with the reference's `_in(MemoryFormat::ChannelsLast, ..)` functions;
//! `"mixed"` (some inputs channels-last) and absent mean the contiguous kernels. Each file must
//! hold channels-last cases for the pool, add and cat families.

use serde_json::Value;
use squint::cpu::reference::pool::MemoryFormat;
use squint::cpu::reference::{activation, add, cat, linear, pool, CpuCapability, QEngine};
use squint::quant::{QDtype, QParams, QScheme, WeightQParams};
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ops")
}

struct Q {
    dims: Vec<usize>,
    qp: QParams,
    data: Vec<u8>,
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn pair(v: &Value) -> [usize; 2] {
    let u = usizes(v);
    [u[0], u[1]]
}

fn qtensor(v: &Value) -> Q {
    let dtype = QDtype::parse(v["dtype"].as_str().unwrap()).unwrap();
    let qp = QParams::new(
        v["scale"].as_f64().unwrap() as f32,
        v["zero_point"].as_i64().unwrap() as i32,
        dtype,
    )
    .unwrap();
    let data = v["ints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| dtype.int_to_byte(x.as_i64().unwrap() as i32))
        .collect();
    Q {
        dims: usizes(&v["shape"]),
        qp,
        data,
    }
}

fn dims4(d: &[usize]) -> [usize; 4] {
    d.try_into().expect("4-d tensor")
}

/// The memory format the case's op ran on: channels-last only when every input was.
fn case_format(case: &Value) -> MemoryFormat {
    match case["memory_format"].as_str() {
        Some("channels_last") => MemoryFormat::ChannelsLast,
        None | Some("mixed") => MemoryFormat::Contiguous,
        Some(f) => panic!("unknown memory_format {f}"),
    }
}

/// The memory format of one recorded tensor.
fn tensor_format(t: &Value) -> MemoryFormat {
    match t["memory_format"].as_str() {
        Some("channels_last") => MemoryFormat::ChannelsLast,
        Some("contiguous") => MemoryFormat::Contiguous,
        f => panic!("unknown tensor memory_format {f:?}"),
    }
}

/// The memory format PyTorch's output has (recorded per tensor): an add's is its first
/// input's (`suggest_memory_format`); otherwise channels-last after
/// channels-last inputs (all of them, for cat), contiguous otherwise. Tensors with one
/// channel or a 1x1 plane are both and are recorded as contiguous.
fn expected_out_format(case: &Value) -> &'static str {
    if matches!(case["op"].as_str(), Some("add" | "add_relu")) {
        return match tensor_format(&case["inputs"][0]) {
            MemoryFormat::ChannelsLast => "channels_last",
            MemoryFormat::Contiguous => "contiguous",
        };
    }
    let dims = usizes(&case["out"]["shape"]);
    let ambiguous = dims.len() == 4 && (dims[1] == 1 || dims[2] * dims[3] == 1);
    if case_format(case) == MemoryFormat::ChannelsLast && !ambiguous {
        "channels_last"
    } else {
        "contiguous"
    }
}

/// Runs one case; returns (output bytes, output dims, output qparams).
fn run_case(
    engine: QEngine,
    isa: CpuCapability,
    acc: linear::Accumulation,
    case: &Value,
) -> (Vec<u8>, Vec<usize>, QParams) {
    let op = case["op"].as_str().unwrap();
    let inputs: Vec<Q> = case["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(qtensor)
        .collect();
    let out = qtensor(&case["out"]);
    let a = &case["attrs"];
    let x = &inputs[0];
    let format = case_format(case);
    match op {
        "add" | "add_relu" => {
            let b = &inputs[1];
            let y = add::add_in(
                [
                    tensor_format(&case["inputs"][0]),
                    tensor_format(&case["inputs"][1]),
                ],
                engine,
                isa,
                &x.dims,
                &x.data,
                &x.qp,
                &b.data,
                &b.qp,
                &out.qp,
                op == "add_relu",
            )
            .unwrap();
            (y, x.dims.clone(), out.qp)
        }
        "cat" | "torch_cat" => {
            let ins: Vec<cat::CatInput> = inputs
                .iter()
                .map(|q| cat::CatInput {
                    data: &q.data,
                    dims: &q.dims,
                    qp: &q.qp,
                })
                .collect();
            let dim = a["dim"].as_u64().unwrap() as usize;
            if op == "cat" {
                let (y, d) = cat::cat_in(format, isa, &ins, dim, &out.qp).unwrap();
                (y, d, out.qp)
            } else {
                let (y, d, qp) = cat::torch_cat_in(format, isa, &ins, dim).unwrap();
                if inputs.iter().all(|q| q.qp == qp) && format == MemoryFormat::Contiguous {
                    // Shared qparams: the ints pass through.
                    let outer: usize = d[..dim].iter().product();
                    let mut copied = Vec::new();
                    for o in 0..outer {
                        for q in &inputs {
                            let block = q.data.len() / outer;
                            copied.extend_from_slice(&q.data[o * block..(o + 1) * block]);
                        }
                    }
                    assert_eq!(copied, y);
                }
                (y, d, qp)
            }
        }
        "max_pool2d" | "avg_pool2d" => {
            let p = pool::Pool2dParams {
                kernel: pair(&a["kernel_size"]),
                stride: pair(&a["stride"]),
                padding: pair(&a["padding"]),
                dilation: if op == "max_pool2d" {
                    pair(&a["dilation"])
                } else {
                    [1, 1]
                },
                ceil_mode: a["ceil_mode"].as_bool().unwrap(),
            };
            let (y, d) = if op == "max_pool2d" {
                // Max is exact: the NHWC kernel (`qmaxpool_2d_nhwc_kernel`) gives the same ints.
                pool::max_pool2d(engine, &x.data, dims4(&x.dims), &x.qp, &p).unwrap()
            } else {
                let o = pool::AvgOptions {
                    count_include_pad: a["count_include_pad"].as_bool().unwrap(),
                    divisor_override: a["divisor_override"].as_i64(),
                };
                pool::avg_pool2d_in(format, engine, &x.data, dims4(&x.dims), &x.qp, &p, &o).unwrap()
            };
            (y, d.to_vec(), x.qp)
        }
        "adaptive_avg_pool2d" => {
            let (y, d) = pool::adaptive_avg_pool2d_in(
                format,
                engine,
                &x.data,
                dims4(&x.dims),
                &x.qp,
                pair(&a["output_size"]),
            )
            .unwrap();
            (y, d.to_vec(), x.qp)
        }
        "linear" | "linear_relu" => {
            let w = &case["weight"];
            let scheme = match w["qscheme"].as_str().unwrap() {
                "per_tensor_affine" => QScheme::PerTensorAffine,
                "per_channel_affine" => QScheme::PerChannelAffine,
                s => panic!("unknown qscheme {s}"),
            };
            let w_qp = WeightQParams {
                scheme,
                scales: w["scales"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect(),
                zero_points: w["zero_points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap() as i32)
                    .collect(),
            };
            let wi: Vec<i8> = w["ints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap() as i8)
                .collect();
            let bias: Option<Vec<f32>> = case["bias"]
                .as_array()
                .map(|b| b.iter().map(|v| v.as_f64().unwrap() as f32).collect());
            let (y, d) = linear::linear_with(
                linear::linear_formula(engine),
                acc,
                &x.data,
                &x.dims,
                &x.qp,
                &wi,
                pair(&w["shape"]),
                &w_qp,
                bias.as_deref(),
                &out.qp,
                op == "linear_relu",
            )
            .unwrap();
            (y, d, out.qp)
        }
        "relu" => (
            activation::relu(&x.data, &x.qp).unwrap(),
            x.dims.clone(),
            x.qp,
        ),
        "relu6" => (
            activation::relu6(engine, &x.data, &x.qp).unwrap(),
            x.dims.clone(),
            x.qp,
        ),
        "hardtanh" | "clamp" => {
            let f = if op == "clamp" {
                activation::clamp
            } else {
                activation::hardtanh
            };
            let y = f(
                engine,
                &x.data,
                &x.qp,
                a["min_val"].as_f64().unwrap() as f32,
                a["max_val"].as_f64().unwrap() as f32,
            )
            .unwrap();
            (y, x.dims.clone(), x.qp)
        }
        "flatten" => {
            let d = activation::flatten(
                x.data.len(),
                &x.dims,
                a["start_dim"].as_u64().unwrap() as usize,
            )
            .unwrap();
            (x.data.clone(), d, x.qp)
        }
        "reshape" => {
            let nd: Vec<i64> = a["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            let d = activation::reshape(x.data.len(), &x.dims, &nd).unwrap();
            (x.data.clone(), d, x.qp)
        }
        other => panic!("fixture op '{other}' is not known to this test"),
    }
}

/// Checks every case of one fixture file; returns the number of cases checked.
fn check_file(path: &Path) -> usize {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let engine = QEngine::parse(doc["engine"].as_str().unwrap()).unwrap();
    let isa = CpuCapability::parse(doc["cpu_capability"].as_str().unwrap()).unwrap();
    // The x86 engine's linear runs in FBGEMM, whose accumulation depends on its own ISA.
    let acc = match engine {
        QEngine::X86 => {
            linear::Accumulation::for_fbgemm_isa(doc["fbgemm_isa"].as_str().unwrap()).unwrap()
        }
        QEngine::Qnnpack => linear::Accumulation::Exact,
    };
    let cases = doc["cases"].as_array().unwrap();
    assert!(!cases.is_empty(), "{}: no cases", path.display());
    let mut failures = Vec::new();
    let mut channels_last = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        if case_format(case) == MemoryFormat::ChannelsLast {
            channels_last += 1;
        }
        assert_eq!(
            case["out"]["memory_format"].as_str().unwrap(),
            expected_out_format(case),
            "{}: {name}: output memory format",
            path.display()
        );
        let (y, dims, qp) = run_case(engine, isa, acc, case);
        let want = qtensor(&case["out"]);
        assert_eq!(dims, want.dims, "{}: {name}: output shape", path.display());
        assert_eq!(qp, want.qp, "{}: {name}: output qparams", path.display());
        let bad = y.iter().zip(&want.data).filter(|(a, b)| a != b).count();
        if bad > 0 || y.len() != want.data.len() {
            failures.push(format!("{name}: {bad} of {} ints differ", want.data.len()));
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} of {} cases differ from PyTorch: {failures:#?}",
        path.display(),
        failures.len(),
        cases.len()
    );
    eprintln!(
        "{}: {} cases bit-exact ({channels_last} channels-last)",
        path.display(),
        cases.len()
    );
    let fam = doc["op"].as_str().unwrap();
    if CHANNELS_LAST_FAMILIES.contains(&fam) {
        assert!(
            channels_last >= 5,
            "{}: only {channels_last} channels-last cases",
            path.display()
        );
    }
    cases.len()
}

/// Families whose fixtures must include channels-last cases.
const CHANNELS_LAST_FAMILIES: [&str; 5] = [
    "add",
    "cat",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
];

const FAMILIES: [&str; 7] = [
    "add",
    "cat",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "linear",
    "activation",
];

fn check_family(fam: &str) {
    let mut total = 0;
    let mut files = 0;
    for engine in ["qnnpack", "x86"] {
        let path = data_dir().join(format!("{fam}_{engine}.json"));
        assert!(path.exists(), "missing fixture {}", path.display());
        total += check_file(&path);
        files += 1;
    }
    // ISA variants of the x86 engine, written only where PyTorch's results depend on it.
    for isa in ["avx2", "default", "fbgemm_avx2"] {
        let path = data_dir().join(format!("{fam}_x86_{isa}.json"));
        if path.exists() {
            total += check_file(&path);
            files += 1;
        }
    }
    assert!(
        files >= 2 && total >= 2 * 5,
        "{fam}: only {total} cases checked"
    );
}

#[test]
fn add_matches_pytorch() {
    check_family("add");
}

#[test]
fn cat_matches_pytorch() {
    check_family("cat");
}

#[test]
fn max_pool2d_matches_pytorch() {
    check_family("max_pool2d");
}

#[test]
fn avg_pool2d_matches_pytorch() {
    check_family("avg_pool2d");
}

#[test]
fn adaptive_avg_pool2d_matches_pytorch() {
    check_family("adaptive_avg_pool2d");
}

#[test]
fn linear_matches_pytorch() {
    check_family("linear");
}

#[test]
fn activations_match_pytorch() {
    check_family("activation");
}

#[test]
fn every_fixture_file_is_checked() {
    // A fixture file no test reads would be dead weight: every file must belong to a family.
    for entry in std::fs::read_dir(data_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".json") {
            continue;
        }
        let known = FAMILIES.iter().any(|f| {
            [
                "qnnpack",
                "x86",
                "x86_avx2",
                "x86_default",
                "x86_fbgemm_avx2",
            ]
            .iter()
            .any(|e| name == format!("{f}_{e}.json"))
        });
        assert!(known, "fixture {name} is not checked by any test");
    }
}
