//! The GPU availability policy of squint's own tests, in one place (hidden from the docs).
//!
//! Tests that need a GPU open it here. Without an adapter they skip with a message, unless
//! `SQUINT_REQUIRE_GPU=1` (set by `.ci/run`), which makes them fail: CI must run the GPU
//! tests, not skip them. The kernel-variant list of [`variants`] also fails there when a
//! variant that Mesa's software adapters support is missing.

use super::adapter::DeviceOptions;
use super::context::{open_all, GpuContext};
use super::pipelines::{KernelOptions, StagingChoice};

/// Whether `SQUINT_REQUIRE_GPU=1`: GPU tests must then fail rather than skip.
pub fn require_gpu() -> bool {
    std::env::var("SQUINT_REQUIRE_GPU").as_deref() == Ok("1")
}

/// The GEMM kernel staging `SQUINT_TEST_KERNEL` asks every test context for (`tiled`,
/// `subgroup`, `shared` or `direct`): lets a software adapter run the whole suite on the tiled
/// kernel (the default on GPUs), and a GPU on the others.
fn test_kernel(c: GpuContext) -> GpuContext {
    let staging = match std::env::var("SQUINT_TEST_KERNEL").as_deref() {
        Ok("") | Err(_) => return c,
        Ok("tiled") => StagingChoice::Tiled,
        Ok("subgroup") => StagingChoice::Subgroup,
        Ok("shared") => StagingChoice::Shared,
        Ok("direct") => StagingChoice::Direct,
        Ok(other) => panic!(
            "SQUINT_TEST_KERNEL={other:?}: expected tiled, subgroup, shared, direct or nothing"
        ),
    };
    let o = KernelOptions {
        staging,
        ..KernelOptions::default()
    };
    c.with_kernel_options(o)
        .unwrap_or_else(|e| panic!("SQUINT_TEST_KERNEL: {e}"))
}

/// Every adapter; empty (with a message on stderr) when none opens, or a panic when
/// [`require_gpu`].
pub fn contexts() -> Vec<GpuContext> {
    match open_all(&DeviceOptions::default()) {
        Ok(v) => v.into_iter().map(test_kernel).collect(),
        Err(e) => {
            skip_or_fail(&e.to_string());
            Vec::new()
        }
    }
}

/// The best adapter, as [`GpuContext::open`] picks it; `None` as in [`contexts`].
pub fn best() -> Option<GpuContext> {
    match GpuContext::open(&DeviceOptions::default()) {
        Ok(c) => Some(test_kernel(c)),
        Err(e) => {
            skip_or_fail(&e.to_string());
            None
        }
    }
}

/// Whether the best adapter opens (without failing when it does not): for tests that pick a
/// device name for the command line.
pub fn available() -> bool {
    GpuContext::open(&DeviceOptions::default()).is_ok()
}

/// A test found no GPU because of `why`: panics when [`require_gpu`], else prints that the GPU
/// part is skipped.
pub fn skip_or_fail(why: &str) {
    assert!(
        !require_gpu(),
        "SQUINT_REQUIRE_GPU=1 and no GPU adapter opened: {why}"
    );
    eprintln!("skipping the GPU part: {why}");
}

/// The kernel variants that Mesa's software adapters are known to run, by backend (see
/// `../shared/wgpu-on-software-adapters.md`): lavapipe (Vulkan) all of them, llvmpipe (GL) all
/// but subgroup staging.
fn software_adapter_lacks(backend: &str, variant: &str) -> bool {
    backend == "gl" && variant == "subgroup staging"
}

/// [`GpuContext::kernel_variants`], printing the variants the adapter cannot run; on Mesa's
/// software adapters with [`require_gpu`], a missing variant that they support is a panic
/// (a regression in variant selection would otherwise silently shrink every sweep).
pub fn variants(ctx: &GpuContext) -> Vec<(&'static str, GpuContext)> {
    let (kept, dropped) = ctx.kernel_variants_with_dropped();
    let r = ctx.adapter_report();
    for (name, why) in &dropped {
        eprintln!("{}: kernel variant '{name}' not run: {why}", r.summary());
        let software = r.name.starts_with("llvmpipe");
        assert!(
            !(require_gpu() && software && !software_adapter_lacks(&r.backend, name)),
            "SQUINT_REQUIRE_GPU=1: {} supports the kernel variant '{name}', but it was dropped: \
             {why}",
            r.summary()
        );
    }
    kept
}
