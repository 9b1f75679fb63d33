//! Adapter discovery: backend names ([`BackendChoice`], `WGPU_BACKEND`), the adapter filter
//! ([`DeviceOptions`]), what squint reports about an adapter ([`AdapterReport`]), and the
//! enumeration and ranking of adapters (discrete GPU first, GL last on a tie). Opens no device.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A graphics API wgpu can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// Vulkan (on a machine without a GPU: Mesa lavapipe).
    Vulkan,
    /// OpenGL / OpenGL ES through EGL (on a machine without a GPU: Mesa llvmpipe).
    Gl,
    /// Metal (macOS, iOS).
    Metal,
    /// Direct3D 12 (Windows).
    Dx12,
}

impl BackendChoice {
    /// Every backend, for help texts.
    pub const ALL: [BackendChoice; 4] = [
        BackendChoice::Vulkan,
        BackendChoice::Gl,
        BackendChoice::Metal,
        BackendChoice::Dx12,
    ];

    /// Parses a backend name as `WGPU_BACKEND` spells it (`vulkan`/`vk`, `gl`/`gles`/`opengl`,
    /// `metal`/`mtl`, `dx12`/`d3d12`), case-insensitively.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(BackendChoice::Vulkan),
            "gl" | "gles" | "opengl" => Ok(BackendChoice::Gl),
            "metal" | "mtl" => Ok(BackendChoice::Metal),
            "dx12" | "d3d12" => Ok(BackendChoice::Dx12),
            _ => Err(Error::UnknownName {
                kind: "GPU backend",
                name: s.to_string(),
                expected: "vulkan, gl, metal, dx12".into(),
            }),
        }
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Vulkan => "vulkan",
            BackendChoice::Gl => "gl",
            BackendChoice::Metal => "metal",
            BackendChoice::Dx12 => "dx12",
        }
    }

    /// The backend of a wgpu adapter, if it is one of the four.
    pub fn from_wgpu(b: wgpu::Backend) -> Option<Self> {
        match b {
            wgpu::Backend::Vulkan => Some(BackendChoice::Vulkan),
            wgpu::Backend::Gl => Some(BackendChoice::Gl),
            wgpu::Backend::Metal => Some(BackendChoice::Metal),
            wgpu::Backend::Dx12 => Some(BackendChoice::Dx12),
            _ => None,
        }
    }

    /// The wgpu backend flag of this backend.
    pub(crate) fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Gl => wgpu::Backends::GL,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
        }
    }
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which adapter to open.
///
/// With both fields `None`, the backends come from `WGPU_BACKEND` (a comma list, as wgpu
/// reads it) or else all of them, and the best adapter wins: discrete GPU, then integrated,
/// virtual, CPU, other; on a tie Vulkan/Metal/DX12 before GL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceOptions {
    /// Only this backend (overrides `WGPU_BACKEND`).
    pub backend: Option<BackendChoice>,
    /// Only adapters whose name contains this string, case-insensitively.
    pub adapter: Option<String>,
    /// The longest wait for the GPU before [`Error::Timeout`] (see
    /// [`GpuContext::set_wait_timeout`](super::GpuContext::set_wait_timeout)); `None`: `SQUINT_GPU_TIMEOUT_SECS`, else 300 s.
    pub wait_timeout: Option<Duration>,
}

impl DeviceOptions {
    fn backends(&self) -> (wgpu::Backends, String) {
        match self.backend {
            Some(b) => (b.backends(), b.name().to_string()),
            None => match wgpu::Backends::from_env() {
                Some(b) => (
                    b,
                    format!(
                        "{} (from WGPU_BACKEND={:?})",
                        backends_name(b),
                        std::env::var("WGPU_BACKEND").unwrap_or_default()
                    ),
                ),
                None => (wgpu::Backends::all(), "all".to_string()),
            },
        }
    }

    fn name_matches(&self, name: &str) -> bool {
        match &self.adapter {
            None => true,
            Some(f) => name.to_lowercase().contains(&f.to_lowercase()),
        }
    }
}

/// Comma list of the backends in `b`.
fn backends_name(b: wgpu::Backends) -> String {
    let mut names = Vec::new();
    for (flag, name) in [
        (wgpu::Backends::VULKAN, "vulkan"),
        (wgpu::Backends::GL, "gl"),
        (wgpu::Backends::METAL, "metal"),
        (wgpu::Backends::DX12, "dx12"),
        (wgpu::Backends::BROWSER_WEBGPU, "webgpu"),
    ] {
        if b.contains(flag) {
            names.push(name);
        }
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// What squint knows about an adapter: identity and the capabilities it uses or may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterReport {
    /// Adapter name (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)").
    pub name: String,
    /// Backend: "vulkan", "gl", "metal", "dx12" (or wgpu's name for another one).
    pub backend: String,
    /// Device type: "discrete", "integrated", "virtual", "cpu" or "other".
    pub device_type: String,
    /// Driver name.
    pub driver: String,
    /// Driver details (version).
    pub driver_info: String,
    /// The WGSL language feature `packed_4x8_integer_dot_product` (`dot4I8Packed`). A fixed
    /// property of naga, not a per-adapter probe: backends without a native instruction get a
    /// polyfill.
    pub packed_int8_dot_product: bool,
    /// `SHADER_INT64` (squint does not need it: its 64-bit products are emulated).
    pub shader_int64: bool,
    /// `SUBGROUP` operations.
    pub subgroups: bool,
    /// `TIMESTAMP_QUERY`.
    pub timestamp_query: bool,
    /// Largest storage buffer binding, bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, bytes.
    pub max_buffer_size: u64,
    /// Largest workgroup count in one dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Largest workgroup (invocations).
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroup shared memory, bytes.
    pub max_compute_workgroup_storage_size: u32,
}

impl AdapterReport {
    /// The report of `adapter`; `lang` is the instance's WGSL language features.
    pub(crate) fn new(adapter: &wgpu::Adapter, lang: &wgpu::WgslLanguageFeatures) -> Self {
        let info = adapter.get_info();
        let f = adapter.features();
        let l = adapter.limits();
        AdapterReport {
            name: info.name.clone(),
            backend: BackendChoice::from_wgpu(info.backend)
                .map(|b| b.name().to_string())
                .unwrap_or_else(|| format!("{:?}", info.backend).to_lowercase()),
            device_type: match info.device_type {
                wgpu::DeviceType::DiscreteGpu => "discrete",
                wgpu::DeviceType::IntegratedGpu => "integrated",
                wgpu::DeviceType::VirtualGpu => "virtual",
                wgpu::DeviceType::Cpu => "cpu",
                wgpu::DeviceType::Other => "other",
            }
            .to_string(),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            packed_int8_dot_product: lang
                .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct),
            shader_int64: f.contains(wgpu::Features::SHADER_INT64),
            subgroups: f.contains(wgpu::Features::SUBGROUP),
            timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
        }
    }

    /// The backend as a [`BackendChoice`], if it is one of the four.
    pub fn backend_choice(&self) -> Option<BackendChoice> {
        BackendChoice::parse(&self.backend).ok()
    }

    /// One line: `name (backend, device type)`.
    pub fn summary(&self) -> String {
        format!("{} ({}, {})", self.name, self.backend, self.device_type)
    }
}

/// Sort key of an adapter, best first: device type (discrete GPU, integrated, virtual, CPU,
/// other), then backend (Vulkan/Metal/DX12 before GL).
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let t = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let b = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    };
    (t, b)
}

/// A wgpu instance for `backends`, reading wgpu's other settings from the environment.
fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// The adapters `opts` selects, best first, with their instance, the names of every adapter
/// present (for errors) and a description of the backends searched.
pub(crate) fn enumerate(
    opts: &DeviceOptions,
) -> (wgpu::Instance, Vec<wgpu::Adapter>, Vec<String>, String) {
    let (backends, backends_desc) = opts.backends();
    let (instance, all) = {
        let _one = super::gate::Gate::lifecycle();
        let instance = new_instance(backends);
        let all = pollster::block_on(instance.enumerate_adapters(backends));
        (instance, all)
    };
    let mut seen = Vec::new();
    let mut kept = Vec::new();
    for a in all {
        let info = a.get_info();
        let in_backends = BackendChoice::from_wgpu(info.backend)
            .map(|b| backends.contains(b.backends()))
            .unwrap_or(false);
        seen.push(format!("{} ({:?})", info.name, info.backend));
        if in_backends && opts.name_matches(&info.name) {
            kept.push(a);
        }
    }
    kept.sort_by_key(|a| rank(&a.get_info()));
    (instance, kept, seen, backends_desc)
}

/// The [`Error::NoAdapter`] for `opts`: the filters, the adapters present and why none
/// opened.
pub(crate) fn no_adapter(
    opts: &DeviceOptions,
    backends_desc: &str,
    seen: &[String],
    why: &str,
) -> Error {
    let mut detail = format!(" (backends: {backends_desc}");
    if let Some(f) = &opts.adapter {
        detail.push_str(&format!("; adapter name filter: {f:?}"));
    }
    if seen.is_empty() {
        detail.push_str("; no adapter enumerated");
    } else {
        detail.push_str(&format!("; adapters present: {}", seen.join(", ")));
    }
    if !why.is_empty() {
        detail.push_str(&format!("; {why}"));
    }
    detail.push(')');
    Error::NoAdapter { detail }
}

/// Lists the adapters `opts` selects, best first (the order
/// [`GpuContext::open`](super::GpuContext::open) tries them).
pub fn list_adapters(opts: &DeviceOptions) -> Vec<AdapterReport> {
    let (instance, adapters, _, _) = enumerate(opts);
    let lang = instance.wgsl_language_features();
    adapters
        .iter()
        .map(|a| AdapterReport::new(a, &lang))
        .collect()
}
