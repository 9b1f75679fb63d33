//! Kernel selection and the per-device pipeline cache: the hidden kernel overrides
//! ([`KernelOptions`]), the concrete conv kernel choices they give on an adapter
//! ([`ConvPlan`]), and compiled pipelines with their explicit bind group layouts, compiled once
//! per device and key ([`PipelineCache`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::adapter::AdapterReport;
use super::kernels::{BStaging, Binding, Kernel};
use crate::error::{Error, Result};

/// A compiled compute pipeline and its explicit bind group layout.
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

/// A pipeline cache key: the kernel and its override constants.
type PipelineKey = (Kernel, Vec<(&'static str, u32)>);

/// The compiled pipelines of one device, by kernel and override constants.
#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
}

impl PipelineCache {
    /// The cache map. A panic in another thread cannot leave it inconsistent (entries are
    /// inserted whole), so a poisoned lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PipelineKey, Arc<Pipeline>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pipeline of `kernel` with `overrides`, from the cache or made by `compile` and
    /// cached. `compile` runs outside the lock: another thread may compile the same one
    /// meanwhile; the first to insert wins, both are valid.
    pub(crate) fn get_or_compile(
        &self,
        kernel: Kernel,
        overrides: &[(&'static str, u32)],
        compile: impl FnOnce() -> Result<Pipeline>,
    ) -> Result<Arc<Pipeline>> {
        let key = (kernel, overrides.to_vec());
        if let Some(p) = self.lock().get(&key) {
            return Ok(p.clone());
        }
        let p = Arc::new(compile()?);
        Ok(self.lock().entry(key).or_insert(p).clone())
    }

    /// Drops every pipeline (inside the device's gate, see `Drop for Inner` in `context.rs`).
    pub(crate) fn clear(&mut self) {
        self.map
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Which `dot4I8Packed` path the conv kernels use (a hidden testing and benchmarking option).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DotChoice {
    /// `dot4I8Packed` on GPUs that have the language feature; the fallback on CPU adapters,
    /// where it is faster (lavapipe and llvmpipe expand `dot4I8Packed` into shifts and
    /// 32-bit multiplies, while the fallback's unsigned bytes let LLVM use `pmaddwd`).
    #[default]
    Auto,
    /// Always `dot4I8Packed` (an error where the language feature is missing).
    Packed,
    /// Always the fallback (plain shifts and integer multiply-adds).
    Fallback,
}

/// How the GEMM conv kernel stages its weight tile (a hidden testing option).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StagingChoice {
    /// Subgroup broadcasts where subgroups of at least 8 lanes exist, else workgroup memory on
    /// GPUs and direct loads on CPU adapters.
    #[default]
    Auto,
    /// Subgroup broadcasts (an error without subgroups of at least 8 lanes).
    Subgroup,
    /// Workgroup memory.
    Shared,
    /// Direct loads by every invocation.
    Direct,
    /// The tiled kernel: A and B tiles in workgroup memory, several channel blocks per
    /// workgroup.
    Tiled,
}

/// Where the conv kernels read the repacked input from (a hidden testing option).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InputChoice {
    /// On CPU adapters a texture when it fits the texture size limits (lavapipe and llvmpipe
    /// inline storage-texture loads), else a storage buffer; on GPUs a storage buffer
    /// (measured faster on an NVIDIA H200 for every conv shape of `squint bench`).
    #[default]
    Auto,
    /// Always a storage buffer (split into windows like every other buffer).
    Buffer,
    /// A texture when it fits the texture size limits, also on GPUs.
    Texture,
}

/// Kernel selection overrides, for tests and benchmarks; the defaults pick the fastest
/// variant the adapter supports. Results never depend on them.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelOptions {
    /// Dot product path.
    pub dot: DotChoice,
    /// Weight tile staging of the GEMM kernel.
    pub staging: StagingChoice,
    /// Repacked input source.
    pub input: InputChoice,
    /// Run depthwise convs through the GEMM kernel instead of the depthwise kernels.
    pub no_depthwise: bool,
    /// Run depthwise convs on the kernel that reads repacked quads (`conv2d_dw.wgsl`) instead
    /// of the one that reads the packed tensor (`conv2d_dw_direct.wgsl`).
    pub dw_repacked: bool,
    /// Give the step-table kernels (conv epilogue, quantize) a useless float estimate, so that
    /// nearly every value takes the table search: tests that path.
    pub search_only: bool,
    /// Requantize by the step tables' thresholds even where the float epilogue applies (see
    /// [`ConvPlan::float_epilogue`]): every conv kernel.
    pub thresholds_only: bool,
    /// The tiled GEMM kernel's workgroup `[pixel tiles, channel blocks]` (forces that kernel);
    /// `None`: [`GemmTile::DEFAULT`] where the tiled kernel is used.
    pub tile: Option<[u32; 2]>,
    /// Parallel K slices of the tiled GEMM kernel: that many (at most one per chunk of K; 1
    /// never splits); `None`: split convs of few workgroups (see `ConvGeometry::parallel_k`).
    pub k_slices: Option<u32>,
}

/// The workgroup of the tiled GEMM kernel (`conv2d_gemm_tiled.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GemmTile {
    /// Pixel tiles (of 4 output pixels) per workgroup (TP).
    pub pixel_tiles: u32,
    /// 8-channel blocks per workgroup (BPT).
    pub blocks: u32,
    /// Quads per K chunk staged in workgroup memory (TKQ): a power of two dividing
    /// `pixel_tiles * blocks`.
    pub tkq: u32,
}

impl GemmTile {
    /// 128 pixels x 32 channels, 128 invocations. In a `squint bench --gpu-variants` run on an
    /// NVIDIA H200, against 64 x 64: as fast on (i), 5-6% faster on (ii) and the 8-image
    /// batch, 2% slower on (iii); 128 x 64 was 6% faster on the batch but 30% slower on (i)
    /// and (iii), smaller workgroups slower everywhere.
    pub(crate) const DEFAULT: [u32; 2] = [32, 4];

    /// The tile `[pixel tiles, blocks]` with the largest chunk (at most 8 quads) whose
    /// workgroup memory (A, B with their pads, and the pixel bases) fits half of `storage`
    /// bytes; `None` when the workgroup exceeds `max_invocations` or not even one quad fits.
    fn new([tp, bpt]: [u32; 2], max_invocations: u32, storage: u32) -> Option<GemmTile> {
        let wg = tp.checked_mul(bpt)?;
        if tp == 0 || bpt == 0 || wg > max_invocations {
            return None;
        }
        let bytes = |tkq: u32| (tkq * (tp * 5 + bpt * 9) * 16 + tp * 16) as u64;
        let tkq = [8, 4, 2, 1]
            .into_iter()
            .find(|&k| wg % k == 0 && bytes(k) <= storage as u64 / 2)?;
        Some(GemmTile {
            pixel_tiles: tp,
            blocks: bpt,
            tkq,
        })
    }

    /// Invocations per workgroup.
    pub(crate) fn wg(&self) -> u32 {
        self.pixel_tiles * self.blocks
    }
}

/// The concrete conv kernel choices of a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvPlan {
    /// The GEMM kernel uses `dot4I8Packed` (signed bytes), else the integer fallback.
    pub packed: bool,
    /// How the GEMM kernel stages its weight tile.
    pub staging: BStaging,
    /// The conv kernels may read their operands from textures (when they fit).
    pub textures: bool,
    /// Layers with one input channel per group use a depthwise kernel.
    pub depthwise: bool,
    /// The depthwise kernel reads the packed tensor (`conv2d_dw_direct.wgsl`) where its
    /// bindings fit, rather than repacked quads (`conv2d_dw.wgsl`).
    pub dw_direct: bool,
    /// See [`KernelOptions::search_only`].
    pub search_only: bool,
    /// The direct depthwise kernel may requantize with the formula's own f32 operations
    /// (`float_epilogue` in `ops.rs`): on CPU adapters under Vulkan (lavapipe), whose f32
    /// operations are LLVM's, correctly rounded to nearest even. Not on GPUs: Vulkan requires
    /// f32 addition, multiplication and conversion correctly rounded but leaves the rounding
    /// mode to the implementation, and no self-check of the device's mode exists yet.
    pub float_epilogue: bool,
    /// Workgroup size of the conv kernels.
    pub wg: u32,
    /// The adapter is a CPU (lavapipe, llvmpipe): the kernel choices measured there (the
    /// direct depthwise kernel's rows of words, larger workgroups).
    pub cpu: bool,
    /// The lanes that run together (8 on CPU adapters: one SIMD batch; 32 on GPUs: a warp,
    /// half a wavefront) and the largest workgroup (256 on CPU adapters, 64 on GPUs as
    /// before it was sized to the work), for kernels that size their workgroups to their
    /// work ([`super::conv_plan::plane_workgroup`]).
    pub lanes: u32,
    pub wg_limit: u32,
    /// Quads per K chunk staged in workgroup memory.
    pub tkq: u32,
    /// The tiled GEMM kernel's workgroup (used when `staging` is [`BStaging::Tiled`]).
    pub tile: GemmTile,
    /// See [`KernelOptions::k_slices`].
    pub k_slices: Option<u32>,
    /// The adapter has subgroups of 8 to `wg` lanes.
    pub subgroups: bool,
    /// Texture width (a power of two) and height limit.
    pub tex_width: u32,
    pub tex_max_height: u32,
}

impl KernelOptions {
    /// Every forced alternative to the default choices, named (see
    /// [`GpuContext::kernel_variants`](super::GpuContext::kernel_variants)).
    pub(crate) fn forced_variants() -> [(&'static str, KernelOptions); 13] {
        let d = KernelOptions::default();
        [
            (
                "dot4I8Packed",
                KernelOptions {
                    dot: DotChoice::Packed,
                    ..d
                },
            ),
            (
                "fallback dot (no dot4I8Packed)",
                KernelOptions {
                    dot: DotChoice::Fallback,
                    ..d
                },
            ),
            (
                "subgroup staging",
                KernelOptions {
                    staging: StagingChoice::Subgroup,
                    ..d
                },
            ),
            (
                "workgroup-memory staging",
                KernelOptions {
                    staging: StagingChoice::Shared,
                    ..d
                },
            ),
            (
                "direct staging",
                KernelOptions {
                    staging: StagingChoice::Direct,
                    ..d
                },
            ),
            (
                "workgroup tiles",
                KernelOptions {
                    staging: StagingChoice::Tiled,
                    ..d
                },
            ),
            (
                "workgroup tiles, K in parallel slices of one chunk",
                KernelOptions {
                    staging: StagingChoice::Tiled,
                    k_slices: Some(u32::MAX),
                    ..d
                },
            ),
            (
                "buffer input",
                KernelOptions {
                    input: InputChoice::Buffer,
                    ..d
                },
            ),
            (
                "texture input",
                KernelOptions {
                    input: InputChoice::Texture,
                    ..d
                },
            ),
            (
                "depthwise on repacked quads",
                KernelOptions {
                    dw_repacked: true,
                    ..d
                },
            ),
            (
                "thresholds (no float epilogue)",
                KernelOptions {
                    thresholds_only: true,
                    ..d
                },
            ),
            (
                "GEMM for depthwise",
                KernelOptions {
                    no_depthwise: true,
                    ..d
                },
            ),
            (
                "step tables searched (no float estimate)",
                KernelOptions {
                    search_only: true,
                    ..d
                },
            ),
        ]
    }
}

impl ConvPlan {
    /// This plan with the classic GEMM kernel in place of the tiled one (subgroup staging
    /// where the adapter has subgroups, else workgroup memory).
    pub(crate) fn without_tiles(self) -> ConvPlan {
        ConvPlan {
            staging: if self.subgroups {
                BStaging::Subgroup
            } else {
                BStaging::Shared
            },
            ..self
        }
    }

    /// This plan for the slices of a GEMM conv split by its input channels (see
    /// [`super::conv_plan::ConvGeometry::k_split_bands`]): the classic GEMM kernel, which
    /// starts at a slice's first group, with staging that loads the weights quad by quad
    /// (subgroups where the adapter has them, else direct), which can skip the quads outside a
    /// slice.
    pub(crate) fn for_k_split(self) -> ConvPlan {
        ConvPlan {
            staging: match self.staging {
                BStaging::Direct => BStaging::Direct,
                _ if self.subgroups => BStaging::Subgroup,
                _ => BStaging::Direct,
            },
            ..self
        }
    }

    /// The GEMM kernel's workgroup: pixel tiles and 8-channel blocks (see
    /// [`super::conv_plan::ConvGeometry::new`]).
    pub(crate) fn gemm_workgroup(&self) -> (u32, u32) {
        match self.staging {
            BStaging::Tiled => (self.tile.pixel_tiles, self.tile.blocks),
            _ => (self.wg, 1),
        }
    }

    /// The conv kernel choices for an adapter (`report`, the device's `limits`, its smallest
    /// subgroup size when it has subgroups) under the overrides `o`. Fails when `o` forces a
    /// variant the adapter cannot run.
    pub(crate) fn for_adapter(
        r: &AdapterReport,
        l: &wgpu::Limits,
        subgroup_min: Option<u32>,
        o: KernelOptions,
    ) -> Result<ConvPlan> {
        let cpu = r.device_type == "cpu";
        let packed = match o.dot {
            DotChoice::Auto => r.packed_int8_dot_product && !cpu,
            DotChoice::Packed if !r.packed_int8_dot_product => {
                return Err(Error::Gpu(format!(
                    "{} lacks the WGSL language feature packed_4x8_integer_dot_product",
                    r.summary()
                )))
            }
            DotChoice::Packed => true,
            DotChoice::Fallback => false,
        };
        // Workgroup size: 64 invocations on GPUs; one SIMD batch (8) on CPU adapters, where
        // the size does not change the speed of a workgroup but a smaller one wastes fewer
        // invocations on the partial last workgroup of each output plane (measured on
        // lavapipe: 8 is as fast as 64 per invocation, 3-20% faster per layer).
        let wg_max = l
            .max_compute_invocations_per_workgroup
            .min(l.max_compute_workgroup_size_x);
        let wg = if cpu { 8 } else { 64 }.min(wg_max / 8 * 8).max(8);
        let subgroups = subgroup_min.is_some_and(|m| (8..=wg).contains(&m));
        let tile = GemmTile::new(
            o.tile.unwrap_or(GemmTile::DEFAULT),
            wg_max,
            l.max_compute_workgroup_storage_size,
        );
        let staging = match o.staging {
            _ if o.tile.is_some() || o.staging == StagingChoice::Tiled => match tile {
                Some(_) => BStaging::Tiled,
                None => {
                    return Err(Error::Gpu(format!(
                        "{} cannot run the tiled GEMM kernel with workgroup {:?} (at most {wg_max} \
                         invocations, {} bytes of workgroup storage)",
                        r.summary(),
                        o.tile.unwrap_or(GemmTile::DEFAULT),
                        l.max_compute_workgroup_storage_size
                    )))
                }
            },
            // CPU adapters: the classic kernel (see `conv2d_gemm.wgsl` on why).
            StagingChoice::Auto if cpu && subgroups => BStaging::Subgroup,
            StagingChoice::Auto if cpu => BStaging::Direct,
            StagingChoice::Auto if tile.is_some() => BStaging::Tiled,
            StagingChoice::Auto if subgroups => BStaging::Subgroup,
            StagingChoice::Auto => BStaging::Shared,
            StagingChoice::Subgroup if !subgroups => {
                return Err(Error::Gpu(format!(
                    "{} has no subgroups of 8 to {wg} lanes",
                    r.summary()
                )))
            }
            StagingChoice::Subgroup => BStaging::Subgroup,
            StagingChoice::Shared => BStaging::Shared,
            StagingChoice::Direct => BStaging::Direct,
            StagingChoice::Tiled => unreachable!("handled by the first arm"),
        };
        // Chunk of B in workgroup memory: 8 channels x TKQ quads of 16 bytes, at most half
        // the workgroup storage and at most 32 quads.
        let tkq = (l.max_compute_workgroup_storage_size / 2 / 128).clamp(1, 32);
        let dim = l.max_texture_dimension_2d;
        let tex_width = if dim == 0 {
            0
        } else {
            1u32 << (31 - dim.min(4096).leading_zeros())
        };
        Ok(ConvPlan {
            packed,
            staging,
            // The conv kernels bind three read-only storage textures.
            textures: (o.input == InputChoice::Texture || (o.input == InputChoice::Auto && cpu))
                && tex_width >= 64
                && l.max_storage_textures_per_shader_stage >= 3,
            depthwise: !o.no_depthwise,
            dw_direct: !o.dw_repacked,
            search_only: o.search_only,
            float_epilogue: cpu && r.backend == "vulkan" && !o.thresholds_only && !o.search_only,
            wg,
            cpu,
            lanes: if cpu { 8 } else { 32 },
            wg_limit: wg_max.min(if cpu { 256 } else { 64 }),
            tkq,
            // The classic kernel's geometry when the tiled one is not used.
            tile: tile.unwrap_or(GemmTile {
                pixel_tiles: wg,
                blocks: 1,
                tkq,
            }),
            k_slices: o.k_slices,
            subgroups,
            tex_width,
            tex_max_height: dim,
        })
    }
}

/// Compiles `kernel` on `d` with the override constants `overrides`, with its explicit bind
/// group layout (errors surface through the caller's error scopes).
pub(crate) fn compile_pipeline(
    d: &wgpu::Device,
    kernel: Kernel,
    overrides: &[(&'static str, u32)],
) -> Result<Pipeline> {
    let source = kernel.source()?;
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(kernel.label()),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    };
    let module = d.create_shader_module(desc);
    let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
        .bindings()
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match b {
                Binding::Texture => wgpu::BindingType::StorageTexture {
                    access: wgpu::StorageTextureAccess::ReadOnly,
                    format: wgpu::TextureFormat::Rgba32Uint,
                    view_dimension: wgpu::TextureViewDimension::D2,
                },
                Binding::StorageTexture => wgpu::BindingType::StorageTexture {
                    access: wgpu::StorageTextureAccess::WriteOnly,
                    format: wgpu::TextureFormat::Rgba32Uint,
                    view_dimension: wgpu::TextureViewDimension::D2,
                },
                b => wgpu::BindingType::Buffer {
                    ty: match b {
                        Binding::Uniform => wgpu::BufferBindingType::Uniform,
                        Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        _ => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
            },
            count: None,
        })
        .collect();
    let layout = d.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(kernel.label()),
        entries: &entries,
    });
    let pl = d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(kernel.label()),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let constants: Vec<(&str, f64)> = overrides.iter().map(|&(k, v)| (k, v as f64)).collect();
    let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(kernel.label()),
        layout: Some(&pl),
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants,
            // Every workgroup variable of squint's kernels is written before it is read (the
            // audit is in `AUDITED_WORKGROUP_VARIABLES`, `kernel_contract.rs`), so wgpu's
            // zeroing pass is dead work. It is not free: on GL, naga zeroes a workgroup array
            // with one invocation and an array constructor, and llvmpipe (GL) took 9.4 s
            // (against 1.1 s without it) to build the tiled GEMM kernel, whose tiles hold
            // 1,568 vec4s; on GPUs it is a pass over workgroup memory at every workgroup's
            // start.
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    Ok(Pipeline { pipeline, layout })
}
