//! [`GpuContext`] and its lifecycle: opening a device on an adapter ([`GpuContext::open`],
//! [`open_all`]), entering the device's gate, recording and submitting work, error scopes,
//! and recovery from device loss (reopening on the same adapter), with the testing hooks that
//! simulate loss and out-of-memory.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::adapter::{enumerate, no_adapter, AdapterReport, DeviceOptions};
use super::gate::{Gate, GateGuard};
use super::kernels::Kernel;
use super::pipelines::{
    compile_pipeline, ConvPlan, InputChoice, KernelOptions, Pipeline, PipelineCache,
};
use super::pool::{Keep, Pool, POOL_CAP};
use super::split::SplitLimits;
use crate::error::{Error, Result};

/// Opens every adapter `opts` selects (one context per adapter, best first): e.g. both
/// lavapipe (Vulkan) and llvmpipe (GL) on a machine without a GPU. Adapters whose device
/// cannot be created are skipped; `Err(NoAdapter)` if none opens.
pub fn open_all(opts: &DeviceOptions) -> Result<Vec<GpuContext>> {
    let (instance, adapters, seen, backends_desc) = enumerate(opts);
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for a in adapters {
        let name = a.get_info().name;
        match GpuContext::from_adapter(instance.clone(), a, opts) {
            Ok(c) => out.push(c),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    if out.is_empty() {
        return Err(no_adapter(
            opts,
            &backends_desc,
            &seen,
            &failures.join("; "),
        ));
    }
    Ok(out)
}

struct Inner {
    /// Unique among all devices this process opens (tensors carry it).
    id: u64,
    /// Dropped inside the gate (see `Drop for Inner`).
    device: ManuallyDrop<wgpu::Device>,
    /// The gate and settings of the adapter.
    shared: Arc<Shared>,
    /// Set by the device-lost callback (or when wgpu reports the device lost).
    lost: Arc<AtomicBool>,
    /// Makes the next operation fail as if it ran out of memory (testing hook).
    simulated_oom: AtomicBool,
    /// Dropped inside the gate (see `Drop for Inner`).
    queue: ManuallyDrop<wgpu::Queue>,
    report: AdapterReport,
    limits: wgpu::Limits,
    /// Errors that reached the uncaptured-error handler or the device-lost callback.
    uncaptured: Arc<Mutex<Vec<String>>>,
    /// Compiled pipelines.
    pipelines: PipelineCache,
    /// Free buffers and textures for reuse.
    pool: Arc<Pool>,
    /// Recorded command buffers not yet submitted (see [`GpuContext::flush`]).
    pending: Mutex<Vec<wgpu::CommandBuffer>>,
    /// Smallest subgroup size, when the device has subgroup operations.
    subgroup_min: Option<u32>,
    /// The device's own splitting limits.
    base_split: SplitLimits,
}

/// Where a context's device comes from, shared by all its clones: the adapter to reopen a lost
/// device on, and the device currently in use.
struct Home {
    /// Dropped under [`Gate::lifecycle`] (see `Drop for Home`).
    instance: ManuallyDrop<wgpu::Instance>,
    adapter: ManuallyDrop<wgpu::Adapter>,
    current: Mutex<Arc<Inner>>,
    /// Ids of the devices that were lost (to explain errors about tensors created on them).
    lost_ids: Mutex<Vec<u64>>,
    shared: Arc<Shared>,
}

/// What the devices of one adapter share with their [`Home`].
struct Shared {
    /// Serialises the use of the adapter's devices where the backend needs it.
    gate: Arc<Gate>,
    /// Longest wait for the GPU, nanoseconds (see [`GpuContext::set_wait_timeout`]).
    wait_timeout_ns: AtomicU64,
}

impl Shared {
    fn wait_timeout(&self) -> Duration {
        Duration::from_nanos(self.wait_timeout_ns.load(Ordering::Relaxed))
    }
}

/// Source of [`Inner::id`].
static NEXT_DEVICE_ID: AtomicU64 = AtomicU64::new(1);

/// Command buffers that are submitted automatically once this many are pending.
const MAX_PENDING: usize = 64;

/// An open GPU device with its queue and compiled pipelines. Cheap to clone (an `Arc`), and
/// `Send + Sync`: several threads may run kernels on one context at once.
///
/// # Device loss
/// When the device is lost (a driver reset, a removed GPU, [`GpuContext::simulate_device_loss`])
/// the operation that notices fails with [`Error::DeviceLost`], and the next call on this
/// context or any clone of it opens a fresh device on the same adapter (compiling the
/// pipelines again). Tensors and [`super::GpuConv2d`] layers created on the lost device are
/// gone with it: using one gives [`Error::DeviceLost`] again, so upload or build it anew
/// (a [`crate::pipeline::QuantizedModel`] rebuilds its layers by itself). After an
/// out-of-memory error the device stays in use and its cached buffers are released.
#[derive(Clone)]
pub struct GpuContext {
    inner: Arc<Inner>,
    home: Arc<Home>,
    split: SplitLimits,
    kernel: KernelOptions,
}

/// A [`GpuContext`] on its live device, inside the device's gate until dropped (see
/// [`GpuContext::enter`]).
pub(crate) struct Entered {
    ctx: GpuContext,
    // Declared last: dropped after `ctx`, which may drop a lost device.
    _guard: GateGuard,
}

impl std::ops::Deref for Entered {
    type Target = GpuContext;
    fn deref(&self) -> &GpuContext {
        &self.ctx
    }
}

/// A wait timeout in nanoseconds, at least 1 µs.
fn timeout_ns(t: Duration) -> u64 {
    t.as_nanos().clamp(1_000, u64::MAX as u128) as u64
}

/// The default of [`GpuContext::wait_timeout`]: `SQUINT_GPU_TIMEOUT_SECS`, else 300 s (a
/// software adapter may take minutes over a large batch).
fn default_wait_timeout() -> Duration {
    std::env::var("SQUINT_GPU_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(1e9)))
        .unwrap_or(Duration::from_secs(300))
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.inner.report.summary())
            .finish_non_exhaustive()
    }
}

impl GpuContext {
    /// Opens the best adapter `opts` selects (see [`DeviceOptions`]).
    ///
    /// Fails with [`Error::NoAdapter`], naming the backend and name filters and the adapters
    /// present, when none matches or none can create a device.
    pub fn open(opts: &DeviceOptions) -> Result<GpuContext> {
        let (instance, adapters, seen, backends_desc) = enumerate(opts);
        let mut failures = Vec::new();
        for a in adapters {
            let name = a.get_info().name;
            match GpuContext::from_adapter(instance.clone(), a, opts) {
                Ok(c) => return Ok(c),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        Err(no_adapter(
            opts,
            &backends_desc,
            &seen,
            &failures.join("; "),
        ))
    }

    fn from_adapter(
        instance: wgpu::Instance,
        adapter: wgpu::Adapter,
        opts: &DeviceOptions,
    ) -> Result<GpuContext> {
        let shared = Arc::new(Shared {
            gate: Gate::for_backend(adapter.get_info().backend),
            wait_timeout_ns: AtomicU64::new(timeout_ns(
                opts.wait_timeout.unwrap_or_else(default_wait_timeout),
            )),
        });
        let inner = {
            let _inside = shared.gate.enter();
            Arc::new(open_inner(&instance, &adapter, &shared)?)
        };
        let split = inner.base_split;
        Ok(GpuContext {
            inner: inner.clone(),
            home: Arc::new(Home {
                instance: ManuallyDrop::new(instance),
                adapter: ManuallyDrop::new(adapter),
                current: Mutex::new(inner),
                lost_ids: Mutex::new(Vec::new()),
                shared,
            }),
            split,
            kernel: KernelOptions::default(),
        })
    }

    /// Enters the device's gate (see [`Gate`]) and returns this context on the device
    /// currently in use: itself while its device is not lost, else on the device its clones
    /// have reopened, or on a device opened now. Every public operation starts here and keeps
    /// the returned value until it is done.
    pub(crate) fn enter(&self) -> Result<Entered> {
        let guard = self.home.shared.gate.enter();
        Ok(Entered {
            ctx: self.live()?,
            _guard: guard,
        })
    }

    /// See [`GpuContext::enter`] (without entering the gate).
    fn live(&self) -> Result<GpuContext> {
        if !self.inner.is_lost() {
            return Ok(self.clone());
        }
        let mut current = self.home.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_lost() {
            let old = current.id;
            let fresh = open_inner(&self.home.instance, &self.home.adapter, &self.home.shared)
                .map_err(|e| {
                    Error::DeviceLost(format!(
                        "{} was lost and could not be reopened: {e}",
                        self.inner.report.summary()
                    ))
                })?;
            *current = Arc::new(fresh);
            let mut ids = self.home.lost_ids.lock().unwrap_or_else(|p| p.into_inner());
            ids.push(old);
        }
        Ok(GpuContext {
            inner: current.clone(),
            home: self.home.clone(),
            split: self.split,
            kernel: self.kernel,
        })
    }

    /// Whether squint serialises the use of this device across threads (on backends whose
    /// wgpu implementation is not safe under concurrent calls: GL). Results never depend on
    /// it; only how much threads overlap does.
    pub fn serialises_threads(&self) -> bool {
        self.home.shared.gate.serial()
    }

    /// The longest squint waits for the GPU to finish submitted work (a read-back,
    /// [`GpuContext::finish`]) before giving up with [`Error::Timeout`]. Shared by every clone
    /// of this context. The default is 300 s, or `SQUINT_GPU_TIMEOUT_SECS` when set.
    pub fn wait_timeout(&self) -> Duration {
        self.home.shared.wait_timeout()
    }

    /// Sets [`GpuContext::wait_timeout`] for this context and all its clones (at least 1 µs).
    pub fn set_wait_timeout(&self, timeout: Duration) {
        self.home
            .shared
            .wait_timeout_ns
            .store(timeout_ns(timeout), Ordering::Relaxed);
    }

    /// Waits until the GPU has finished the work submitted so far, at most
    /// [`GpuContext::wait_timeout`]; `what` names the operation for errors.
    pub(crate) fn wait_idle(&self, what: &str) -> Result<()> {
        let timeout = self.wait_timeout();
        match self.inner.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(timeout),
        }) {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => Err(Error::Timeout(format!(
                "{what} on {}: the GPU did not finish within {timeout:?} (a hung or very slow \
                 device; raise the limit with set_wait_timeout, --gpu-timeout or \
                 SQUINT_GPU_TIMEOUT_SECS)",
                self.inner.report.summary()
            ))),
            Err(e) => Err(self.gpu_error(what, &e.to_string())),
        }
    }

    /// Whether the device in use was lost (the next operation reopens it).
    pub fn is_lost(&self) -> bool {
        self.home
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_lost()
    }
}

/// Requests a device on `adapter` with every limit and the optional features squint uses.
fn open_inner(
    instance: &wgpu::Instance,
    adapter: &wgpu::Adapter,
    shared: &Arc<Shared>,
) -> Result<Inner> {
    let report = AdapterReport::new(adapter, &instance.wgsl_language_features());
    let limits = adapter.limits();
    // Optional features: timestamps, for profiling.
    let wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
    let wanted = wanted | wgpu::Features::SUBGROUP;
    let features = adapter.features() & wanted;
    let desc = wgpu::DeviceDescriptor {
        label: Some("squint"),
        required_features: features,
        required_limits: limits.clone(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    };
    let (device, queue) = {
        let _one = Gate::lifecycle();
        pollster::block_on(adapter.request_device(&desc))
    }
    .map_err(|e| Error::Gpu(format!("request_device on {}: {e}", report.summary())))?;
    let uncaptured = Arc::new(Mutex::new(Vec::new()));
    let lost = Arc::new(AtomicBool::new(false));
    {
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.to_string());
        }));
        let sink = uncaptured.clone();
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            flag.store(true, Ordering::SeqCst);
            if reason != wgpu::DeviceLostReason::Destroyed {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("device lost ({reason:?}): {msg}"));
            }
        });
    }
    let split = SplitLimits {
        max_binding: limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size),
        max_workgroups: limits.max_compute_workgroups_per_dimension.max(1),
        align: (limits.min_storage_buffer_offset_alignment as u64)
            .max(32)
            .next_power_of_two(),
        max_buffer: limits.max_buffer_size,
    };
    let info = adapter.get_info();
    let subgroup_min = features
        .contains(wgpu::Features::SUBGROUP)
        .then_some(info.subgroup_min_size);
    Ok(Inner {
        id: NEXT_DEVICE_ID.fetch_add(1, Ordering::Relaxed),
        device: ManuallyDrop::new(device),
        shared: shared.clone(),
        lost,
        simulated_oom: AtomicBool::new(false),
        queue: ManuallyDrop::new(queue),
        report,
        limits,
        uncaptured,
        pipelines: PipelineCache::default(),
        pool: Pool::new(POOL_CAP, &shared.gate),
        pending: Mutex::new(Vec::new()),
        subgroup_min,
        base_split: split,
    })
}

impl Drop for Home {
    fn drop(&mut self) {
        let _one = Gate::lifecycle();
        // SAFETY: dropped exactly once, here; the other fields do not use them.
        unsafe {
            ManuallyDrop::drop(&mut self.adapter);
            ManuallyDrop::drop(&mut self.instance);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Everything that holds device objects goes inside the gate.
        let _inside = self.shared.gate.enter();
        self.pool.clear();
        self.pipelines.clear();
        self.pending
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let _one = Gate::lifecycle();
        // SAFETY: dropped exactly once, here; `self` is being dropped and its other fields
        // do not use them.
        unsafe {
            ManuallyDrop::drop(&mut self.queue);
            ManuallyDrop::drop(&mut self.device);
        }
    }
}

impl Inner {
    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Whether the device is lost, after letting wgpu notice: a device that became invalid
    /// (destroyed, or lost while work was queued) is reported lost by a poll once its queue
    /// drains. Called on the error paths only (it waits for the queue, and up to 40 ms more
    /// when the device is not lost).
    fn check_lost(&self) -> bool {
        // Another thread's poll may have taken the lost callback and not yet run it: give it
        // a few milliseconds. The first poll waits for the queue, at most the wait timeout (a
        // hung device is not lost, and must not hang the error path).
        let mut poll = wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(self.shared.wait_timeout()),
        };
        for _ in 0..20 {
            if self.is_lost() {
                return true;
            }
            let _ = self.device.poll(poll);
            poll = wgpu::PollType::Poll;
            if self.is_lost() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

impl GpuContext {
    /// The adapter this context runs on.
    pub fn adapter_report(&self) -> &AdapterReport {
        &self.inner.report
    }

    /// The device limits (the adapter's: squint requests all of them).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The same device, with the host-side splitting limits lowered to at most
    /// `max_binding_bytes` per storage binding and `max_workgroups_per_dimension` workgroups
    /// per dispatch dimension. Results are unchanged, only split into more dispatches: this
    /// exists to test the splitting paths with small tensors. A lowered binding limit also
    /// makes the conv kernels read their repacked input from a (split) buffer instead of a
    /// texture.
    pub fn with_split_limits(
        &self,
        max_binding_bytes: u64,
        max_workgroups_per_dimension: u32,
    ) -> GpuContext {
        let mut c = self.clone();
        c.split.max_binding = c
            .split
            .max_binding
            .min(max_binding_bytes.max(c.split.align));
        c.split.max_workgroups = c
            .split
            .max_workgroups
            .min(max_workgroups_per_dimension.max(1));
        // Textures are not bound as buffer windows: read the repacked conv input from a
        // buffer so that its windows are split too.
        if c.split.max_binding < self.inner.base_split.max_binding {
            c.kernel.input = InputChoice::Buffer;
        }
        c
    }

    /// The same device, with the largest buffer squint allocates lowered to
    /// `max_buffer_bytes` (at least 4 KiB) and the conv input read from buffers. Results are
    /// unchanged: this exists to test the conv's row bands (one image whose repacked input
    /// exceeds the largest buffer runs band by band) with small tensors. Tensors larger than
    /// the lowered limit are refused as they would be on such a device.
    pub fn with_max_buffer(&self, max_buffer_bytes: u64) -> GpuContext {
        let mut c = self.clone();
        c.split.max_buffer = c.split.max_buffer.min(max_buffer_bytes.max(4096));
        c.split.max_binding = c.split.max_binding.min(c.split.max_buffer);
        c.kernel.input = InputChoice::Buffer;
        c
    }

    /// Every conv kernel variant this adapter can run, named: the default choice first, then
    /// each forced alternative it supports (results must not depend on the choice). Tests use
    /// it to sweep every path.
    #[doc(hidden)]
    pub fn kernel_variants(&self) -> Vec<(&'static str, GpuContext)> {
        self.kernel_variants_with_dropped().0
    }

    /// [`GpuContext::kernel_variants`], and the variants left out with the reason.
    #[doc(hidden)]
    #[allow(clippy::type_complexity)]
    pub fn kernel_variants_with_dropped(
        &self,
    ) -> (Vec<(&'static str, GpuContext)>, Vec<(&'static str, String)>) {
        let forced = KernelOptions::forced_variants();
        let mut kept = vec![("default", self.clone())];
        let mut dropped = Vec::new();
        // Variants the adapter lacks (e.g. subgroups on GL) are errors, and left out.
        for (name, o) in forced {
            match self.with_kernel_options(o) {
                Ok(c) => kept.push((name, c)),
                Err(e) => dropped.push((name, e.to_string())),
            }
        }
        (kept, dropped)
    }

    /// The same device with kernel selection overrides (for tests and benchmarks: every
    /// variant gives the same bytes). Fails when the adapter cannot run the variant asked for.
    #[doc(hidden)]
    pub fn with_kernel_options(&self, opts: KernelOptions) -> Result<GpuContext> {
        let mut c = self.clone();
        c.kernel = opts;
        if c.split.max_binding < c.inner.base_split.max_binding {
            // Lowered binding limits split buffer windows; keep the conv input in buffers.
            c.kernel.input = InputChoice::Buffer;
        }
        c.conv_plan()?;
        Ok(c)
    }

    /// The conv kernel choices for this context's adapter and options.
    pub(crate) fn conv_plan(&self) -> Result<ConvPlan> {
        ConvPlan::for_adapter(
            &self.inner.report,
            &self.inner.limits,
            self.inner.subgroup_min,
            self.kernel,
        )
    }

    /// Submits the recorded work that is still pending. Operations (quantize, conv,
    /// dequantize, ...) record their commands and are submitted together, at the latest when
    /// a result is read back, so that a chain of layers costs one submission; `flush` submits
    /// now (useful before measuring, or to start the GPU early).
    pub fn flush(&self) -> Result<()> {
        self.enter()?
            .submit_with("submitting pending work", |_| Ok(()))
    }

    /// Submits the pending work and waits until the GPU has finished everything submitted.
    pub fn finish(&self) -> Result<()> {
        let ctx = self.enter()?;
        ctx.submit_with("submitting pending work", |_| Ok(()))?;
        ctx.wait_idle("waiting for the GPU")
    }

    /// Records one operation into its own command buffer (inside error scopes) and queues it
    /// for the next submission. `f` may hand scratch resources to `keep`: they return to the
    /// pool only once the command buffer is queued.
    pub(crate) fn encode<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut wgpu::CommandEncoder, &mut Keep) -> Result<T>,
    ) -> Result<T> {
        let mut keep = Keep::default();
        let r = self.scoped(what, || {
            let mut enc = self
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            let r = f(&mut enc, &mut keep)?;
            let cb = enc.finish();
            let mut p = self.lock_pending();
            p.push(cb);
            if p.len() >= MAX_PENDING {
                self.queue().submit(p.drain(..));
            }
            Ok(r)
        });
        drop(keep);
        r
    }

    /// Submits the pending command buffers followed by one recorded by `f`.
    pub(crate) fn submit_with(
        &self,
        what: &str,
        f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        self.scoped(what, || {
            let mut enc = self
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            f(&mut enc)?;
            let cb = enc.finish();
            let mut p = self.lock_pending();
            p.push(cb);
            self.queue().submit(p.drain(..));
            Ok(())
        })
    }

    /// Writes `bytes` at the start of `buffer` through the queue, after submitting the
    /// pending work (a queue write runs before the command buffers of the next submission, and
    /// pending ones may still use a pooled buffer's previous contents).
    pub(crate) fn write_after_pending(&self, buffer: &wgpu::Buffer, bytes: &[u8]) -> Result<()> {
        let mut p = self.lock_pending();
        if !p.is_empty() {
            self.queue().submit(p.drain(..));
        }
        self.queue().write_buffer(buffer, 0, bytes);
        Ok(())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<wgpu::CommandBuffer>> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The gate of this context's adapter (see [`Gate`]).
    pub(crate) fn gate(&self) -> &Arc<Gate> {
        &self.inner.shared.gate
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.inner.pool
    }

    /// Drops the buffers and textures kept for reuse (they are reallocated when needed).
    pub fn release_cached_buffers(&self) {
        let _inside = self.home.shared.gate.enter();
        self.inner.pool.clear();
    }

    /// Bytes of device memory held by free pooled buffers and textures.
    pub fn cached_buffer_bytes(&self) -> u64 {
        self.inner.pool.free_bytes()
    }

    /// Whether the device can write timestamps (`TIMESTAMP_QUERY`).
    pub fn has_timestamps(&self) -> bool {
        self.inner
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Destroys the device in use, as a driver reset or a removed GPU would: the operations
    /// in flight on it fail, and the next call reopens it. For testing recovery from device
    /// loss (wgpu's `Device::destroy`, a real loss as far as wgpu and the driver know).
    #[doc(hidden)]
    pub fn simulate_device_loss(&self) -> Result<()> {
        let ctx = self.enter()?;
        ctx.inner.device.destroy();
        // wgpu reports a destroyed device lost once its queue has drained, from a poll.
        ctx.inner.check_lost();
        Ok(())
    }

    /// Makes the next operation on the device in use fail as if the device ran out of memory,
    /// after it ran (software adapters allocate host memory lazily, so a real device
    /// out-of-memory cannot be provoked safely in a test). For testing the recovery path.
    #[doc(hidden)]
    pub fn simulate_out_of_memory(&self) -> Result<()> {
        self.enter()?
            .inner
            .simulated_oom
            .store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Whether two contexts share one device (clones, and contexts derived with the
    /// `with_*` methods, do; a reopened device counts as the same).
    pub fn same_device(&self, other: &GpuContext) -> bool {
        Arc::ptr_eq(&self.home, &other.home)
    }

    /// The identity of the device in use, to check that tensors belong to it.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// Whether the kernel options ask for the step-table search without float estimates.
    pub(crate) fn search_only(&self) -> bool {
        self.kernel.search_only
    }

    /// Whether the device of this snapshot (not necessarily the one in use) was lost.
    pub(crate) fn snapshot_lost(&self) -> bool {
        self.inner.is_lost()
    }

    /// Whether `id` names a device of this context that was lost.
    pub(crate) fn was_lost(&self, id: u64) -> bool {
        (id == self.inner.id && self.inner.is_lost())
            || self
                .home
                .lost_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&id)
    }

    /// The error for a failure `msg` while doing `what`: [`Error::DeviceLost`] when the device
    /// is lost, else [`Error::Gpu`].
    pub(crate) fn gpu_error(&self, what: &str, msg: &str) -> Error {
        let text = format!("{what} on {}: {msg}", self.inner.report.summary());
        if self.inner.check_lost() {
            Error::DeviceLost(text)
        } else {
            Error::Gpu(text)
        }
    }

    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    pub(crate) fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    pub(crate) fn split(&self) -> SplitLimits {
        self.split
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes; any error wgpu
    /// reports (or that reached the uncaptured handler meanwhile) becomes [`Error::Gpu`].
    pub(crate) fn scoped<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let d = &self.inner.device;
        let oom = d.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = d.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = d.push_error_scope(wgpu::ErrorFilter::Validation);
        // A panic inside wgpu (or squint's recording code) must not skip popping the scopes
        // nor unwind through the caller: it becomes an error.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            Err(Error::Gpu(format!(
                "{what} on {}: wgpu panicked: {msg}",
                self.inner.report.summary()
            )))
        });
        let errs = [
            pollster::block_on(validation.pop()),
            pollster::block_on(internal.pop()),
            pollster::block_on(oom.pop()),
        ];
        let mut oom = errs
            .iter()
            .any(|e| matches!(e, Some(wgpu::Error::OutOfMemory { .. })));
        let mut msgs: Vec<String> = errs.into_iter().flatten().map(|e| e.to_string()).collect();
        if self.inner.simulated_oom.swap(false, Ordering::SeqCst) {
            oom = true;
            msgs.push("Out of Memory (simulated)".into());
        }
        msgs.append(
            &mut self
                .inner
                .uncaptured
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if !msgs.is_empty() && self.inner.check_lost() {
            // Whatever wgpu said (often only that some object is invalid), the cause is this.
            msgs.insert(0, "the device was lost".into());
            return Err(self.gpu_error(what, &msgs.join("; ")));
        }
        if oom {
            // Give the memory squint holds back; the device itself stays usable.
            self.inner.pool.clear();
            msgs.push("squint released its cached buffers; retry, or use smaller batches".into());
        }
        if !msgs.is_empty() {
            return Err(self.gpu_error(what, &msgs.join("; ")));
        }
        r
    }

    /// The pipeline of `kernel` with the given override constants, compiled on first use
    /// (inside error scopes).
    pub(crate) fn pipeline(
        &self,
        kernel: Kernel,
        overrides: &[(&'static str, u32)],
    ) -> Result<Arc<Pipeline>> {
        self.inner.pipelines.get_or_compile(kernel, overrides, || {
            self.scoped(&format!("compiling the {kernel:?} kernel"), || {
                compile_pipeline(self.device(), kernel, overrides)
            })
        })
    }
}
