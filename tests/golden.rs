//! squint against every public golden case, produced by real PyTorch quantized ops.
//!
//! The golden directory lives in `../shared/golden` beside the repository (CI lays it out the
//! same way). A missing directory fails the tests: they must never pass vacuously.

use squint::pipeline::{golden, Device};
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    assert!(
        dir.join("README.md").is_file(),
        "golden vectors not found at {} (expected ../shared/golden beside the repository)",
        dir.display()
    );
    dir
}

fn check(case: &str, device: &Device) {
    let reports =
        golden::run_dir(&golden_dir().join(case), device).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert!(!reports.is_empty(), "{case}: no reports");
    for r in reports {
        let failed: Vec<_> = r.checks.iter().filter(|c| c.mismatches > 0).collect();
        assert!(
            failed.is_empty() && r.compared() > 0,
            "{}: {} mismatches of {} compared: {failed:#?}",
            r.name,
            r.mismatches(),
            r.compared()
        );
    }
}

#[test]
fn small_s2_p1_bias_qnnpack_matches_pytorch_exactly() {
    check("small_s2_p1_bias", &Device::CpuReference);
}

#[test]
fn pointwise_1x1_fbgemm_reduce_range_matches_pytorch_exactly() {
    check("pointwise_1x1_fbgemm", &Device::CpuReference);
}

#[test]
fn forum_qnnpack_matches_pytorch_exactly() {
    check("forum_qnnpack", &Device::CpuReference);
}

#[test]
fn every_observer_configuration_matches_pytorch_after_each_batch() {
    check("observers", &Device::CpuReference);
}

#[test]
fn e2e_two_conv_both_engines_match_pytorch_with_recorded_qparams() {
    check("e2e_two_conv", &Device::CpuReference);
}

#[test]
fn golden_cases_match_on_the_fast_cpu_path() {
    for case in [
        "small_s2_p1_bias",
        "pointwise_1x1_fbgemm",
        "forum_qnnpack",
        "e2e_two_conv",
    ] {
        check(case, &Device::Cpu);
    }
}

#[test]
fn a_directory_that_is_not_a_golden_case_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = golden::run_dir(tmp.path(), &Device::CpuReference).unwrap_err();
    assert!(err.to_string().contains("not a golden case"), "{err}");
}
