//! The worked example (`examples/digits.rs`) as a test: on the held-out digits, squint's int8
//! model (its own calibration) scores what PyTorch's own int8 model scores, within one image,
//! and converting without calibration (scale 1.0 everywhere) collapses the accuracy.

#[path = "../examples/digits.rs"]
mod digits;

use squint::pipeline::QConfig;

#[test]
fn calibrated_int8_keeps_the_float_accuracy_and_uncalibrated_int8_loses_it() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits/pytorch.json"),
    )
    .unwrap();
    let torch: serde_json::Value = serde_json::from_str(&text).unwrap();
    for engine in ["x86", "qnnpack"] {
        let s = digits::evaluate(QConfig::preset(engine).unwrap()).unwrap();
        let one = 1.0 / s.images as f64;
        let torch_float = torch["float"].as_f64().unwrap();
        let torch_int8 = torch[format!("int8_{engine}")].as_f64().unwrap();
        eprintln!("{engine}: {s:?}, PyTorch float {torch_float} int8 {torch_int8}");
        assert!(
            (s.float - torch_float).abs() <= one,
            "{engine}: float {s:?}"
        );
        assert!(
            (s.int8 - torch_int8).abs() <= one + 1e-12,
            "{engine}: int8 {s:?}"
        );
        assert!(
            s.int8_uncalibrated < s.float - 0.2,
            "{engine}: uncalibrated {s:?}"
        );
    }
}

#[test]
fn the_digits_model_on_every_gpu_equals_the_cpu_reference_at_every_value() {
    for ctx in squint::gpu::testing::contexts() {
        let name = ctx.adapter_report().summary();
        let (total, differ) = digits::gpu_check(QConfig::x86(), ctx).unwrap();
        assert!(total > 100_000, "{total}");
        assert_eq!(differ, 0, "{name}: {differ} of {total} values differ");
    }
}

/// ONNX Runtime's QDQ models of the digits model (`scripts/quantize_digits_ort.py`) run by squint
/// score what ORT's own run scored (`examples/digits/ort.json`), and squint's own calibration
/// of the float model (x86 preset, the same calibration batches) is at least as accurate against
/// float as either, on the 540 held-out images.
#[test]
fn onnx_runtimes_digits_models_score_as_in_onnx_runtime_and_squint_calibrates_at_least_as_well() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits/ort.json"),
    )
    .unwrap();
    let ort: serde_json::Value = serde_json::from_str(&text).unwrap();
    let squint = digits::evaluate(QConfig::x86()).unwrap();
    for tag in ["per_tensor", "per_channel"] {
        let (acc, mse) = digits::evaluate_qdq(tag).unwrap();
        let want_acc = ort[tag]["accuracy"].as_f64().unwrap();
        let want_mse = ort[tag]["mse_vs_float"].as_f64().unwrap();
        // The same number of correct images.
        let n = squint.images as f64;
        assert_eq!((acc * n).round(), (want_acc * n).round(), "{tag}");
        // The MSE's float side is squint's float run (ORT's float model differs in the last
        // bits) and numpy averages in float32: equal to 1e-4.
        assert!(
            (mse - want_mse).abs() <= 1e-4 * want_mse,
            "{tag}: {mse} vs {want_mse}"
        );
        assert!(
            squint.int8_mse <= mse && squint.int8 >= acc,
            "{tag}: squint {squint:?} vs ORT accuracy {acc} MSE {mse}"
        );
    }
}
