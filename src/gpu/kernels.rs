//! The WGSL kernels: sources (from `shaders/`), binding lists and uniform records.
//!
//! Every kernel is `common.wgsl` (integer-emulated f32, fixed point, dispatch indexing), plus
//! `epilogue.wgsl` for the kernels that requantize, plus the kernel file. Binding 0 is always a
//! uniform record; the others are storage buffers, bound as windows (see `buffers.rs`), or
//! textures. Kernel files may contain `//#if FLAG`, `//#else` and `//#endif` lines: a tiny
//! preprocessor keeps the sections of the variant being compiled (features such as subgroups
//! or `dot4I8Packed` must not even appear in the source of a device without them).

use bytemuck::{Pod, Zeroable};

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const EPILOGUE: &str = include_str!("../../shaders/epilogue.wgsl");
const EPILOGUE_TABLE: &str = include_str!("../../shaders/epilogue_table.wgsl");
const CONV_COMMON: &str = include_str!("../../shaders/conv_common.wgsl");
const QUANTIZE: &str = include_str!("../../shaders/quantize.wgsl");
const DEQUANTIZE: &str = include_str!("../../shaders/dequantize.wgsl");
const REQUANTIZE: &str = include_str!("../../shaders/requantize.wgsl");
const CONV_PACK: &str = include_str!("../../shaders/conv_pack.wgsl");
const CONV_GEMM: &str = include_str!("../../shaders/conv2d_gemm.wgsl");
const CONV_DW: &str = include_str!("../../shaders/conv2d_dw.wgsl");
const SOFTFLOAT_TEST: &str = include_str!("../../shaders/softfloat_test.wgsl");

/// Workgroup size of the element-wise kernels (`@workgroup_size(64)`).
pub(crate) const WORKGROUP: u64 = 64;

/// Items per invocation of the elementwise kernels (`ITEMS_PER` in `common.wgsl`).
pub(crate) const ITEMS_PER_INVOCATION: u64 = 4;

/// How the GEMM kernel gets the B (weight) tile of a K chunk to its invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum BStaging {
    /// One load per subgroup lane, then `subgroupBroadcast` (subgroups of at least 8 lanes).
    Subgroup,
    /// Staged in workgroup memory between barriers.
    Shared,
    /// Every invocation loads the tile itself.
    Direct,
}

/// A compiled variant of the GEMM conv kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct GemmVariant {
    /// A (the repacked input), B (the weights) and the epilogue records are read-only
    /// storage textures (else storage buffers).
    pub xtex: bool,
    /// B staging.
    pub b: BStaging,
    /// `dot4I8Packed` on signed bytes (else the unsigned-times-signed fallback).
    pub packed: bool,
}

/// A kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    Quantize,
    Dequantize,
    Requantize,
    /// Input repacking into quads, texture to texture (`xtex`) or buffer to buffer.
    ConvPack {
        xtex: bool,
    },
    /// The tiled implicit-GEMM conv.
    ConvGemm(GemmVariant),
    /// The depthwise conv, reading a texture (`xtex`) or a buffer.
    ConvDw {
        xtex: bool,
    },
    /// Only the unit tests dispatch it.
    #[cfg_attr(not(test), allow(dead_code))]
    SoftFloatTest,
}

/// How a binding is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    Uniform,
    Read,
    Write,
    /// A read-only `texture_storage_2d<rgba32uint, read>` (lavapipe and llvmpipe inline its
    /// loads, unlike sampled-texture fetches).
    Texture,
    /// A write-only `texture_storage_2d<rgba32uint, write>`.
    StorageTexture,
}

/// Keeps the lines of `src` whose enclosing `//#if FLAG` sections are enabled by `flags`.
pub(crate) fn preprocess(src: &str, flags: &[&str]) -> String {
    let mut out = String::with_capacity(src.len());
    // Per open section: (this branch is kept, the enclosing section is kept).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.last().is_none_or(|&(on, outer)| on && outer);
    for line in src.lines() {
        let t = line.trim();
        if let Some(flag) = t.strip_prefix("//#if ") {
            let outer = active(&stack);
            stack.push((flags.contains(&flag.trim()), outer));
        } else if t == "//#else" {
            if let Some(top) = stack.last_mut() {
                top.0 = !top.0;
            }
        } else if t == "//#endif" {
            stack.pop();
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

impl Kernel {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kernel::Quantize => "squint quantize",
            Kernel::Dequantize => "squint dequantize",
            Kernel::Requantize => "squint requantize",
            Kernel::ConvPack { .. } => "squint conv_pack",
            Kernel::ConvGemm(_) => "squint conv2d_gemm",
            Kernel::ConvDw { .. } => "squint conv2d_dw",
            Kernel::SoftFloatTest => "squint softfloat_test",
        }
    }

    pub(crate) fn source(self) -> String {
        let mut flags = Vec::new();
        let parts: &[&str] = match self {
            Kernel::Quantize => &[COMMON, QUANTIZE],
            Kernel::Dequantize => &[COMMON, DEQUANTIZE],
            Kernel::Requantize => &[COMMON, EPILOGUE, REQUANTIZE],
            Kernel::ConvPack { xtex } => {
                if xtex {
                    flags.push("XTEX");
                }
                &[COMMON, CONV_PACK]
            }
            Kernel::ConvGemm(v) => {
                if v.xtex {
                    flags.push("XTEX");
                }
                if v.packed {
                    flags.push("PACKED");
                }
                match v.b {
                    BStaging::Subgroup => flags.push("SG"),
                    BStaging::Shared => flags.push("SHARED"),
                    BStaging::Direct => {}
                }
                &[EPILOGUE_TABLE, CONV_COMMON, CONV_GEMM]
            }
            Kernel::ConvDw { xtex } => {
                if xtex {
                    flags.push("XTEX");
                }
                &[EPILOGUE_TABLE, CONV_COMMON, CONV_DW]
            }
            Kernel::SoftFloatTest => &[COMMON, SOFTFLOAT_TEST],
        };
        preprocess(&parts.join("\n"), &flags)
    }

    pub(crate) fn bindings(self) -> &'static [Binding] {
        use Binding::*;
        match self {
            Kernel::Quantize | Kernel::Dequantize | Kernel::SoftFloatTest => {
                &[Uniform, Read, Write]
            }
            Kernel::ConvPack { xtex: false } => &[Uniform, Read, Write],
            Kernel::ConvPack { xtex: true } => &[Uniform, Texture, StorageTexture],
            Kernel::Requantize => &[Uniform, Read, Read, Write],
            Kernel::ConvGemm(GemmVariant { xtex: false, .. }) | Kernel::ConvDw { xtex: false } => {
                &[Uniform, Read, Read, Read, Write]
            }
            Kernel::ConvGemm(GemmVariant { xtex: true, .. }) | Kernel::ConvDw { xtex: true } => {
                &[Uniform, Texture, Texture, Texture, Write]
            }
        }
    }
}

/// Uniform of `quantize.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct QuantizeParams {
    pub item_begin: u32,
    pub item_count: u32,
    pub plane: u32,
    pub plane_words: u32,
    pub x_base: u32,
    pub y_base: u32,
    pub inv_scale: u32,
    pub zp: i32,
    pub qmin: i32,
    pub qmax: i32,
    pub nan_q: i32,
    pub _pad: u32,
    /// `QuantizeSteps::thresholds` (`qmax - qmin` keys), zero-padded to 256.
    pub thresholds: [u32; 256],
}

/// Uniform of `dequantize.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct DequantizeParams {
    pub item_begin: u32,
    pub item_count: u32,
    pub plane: u32,
    pub plane_words: u32,
    pub q_base: u32,
    pub y_base: u32,
    pub _pad: [u32; 2],
    /// The f32 bits of `dequantize_one` for each stored byte value.
    pub values: [u32; 256],
}

/// Uniform of `requantize.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct RequantizeParams {
    pub item_begin: u32,
    pub item_count: u32,
    pub len: u32,
    pub plane: u32,
    pub channels: u32,
    pub acc_base: u32,
    pub epi_base: u32,
    pub y_base: u32,
    pub out_zp: i32,
    pub out_lo: i32,
    pub out_hi: i32,
    pub _pad: u32,
}

/// Uniform of `conv_pack.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct ConvPackParams {
    pub item_begin: u32,
    pub item_count: u32,
    pub n_interior: u32,
    pub h: u32,
    pub w: u32,
    pub plane_words: u32,
    pub hp: u32,
    pub wp: u32,
    pub ph: u32,
    pub pw: u32,
    pub c_in: u32,
    pub cig: u32,
    pub groups: u32,
    pub sg: u32,
    pub qp: u32,
    pub img_begin: u32,
    pub x_base: u32,
    pub x_tws: u32,
    pub q_base: u32,
    pub tws: u32,
    pub flip: u32,
    pub zbyte: u32,
    pub _pad: [u32; 2],
}

/// Uniform of `conv2d_gemm.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct ConvGemmParams {
    pub wg_begin: u32,
    pub wg_count: u32,
    pub gpp: u32,
    pub ptiles: u32,
    pub nblocks: u32,
    pub cbpg: u32,
    pub plane_out: u32,
    pub w_out: u32,
    pub c_out: u32,
    pub cog: u32,
    pub kw: u32,
    pub kq: u32,
    pub qg: u32,
    pub qp: u32,
    pub hp: u32,
    pub wp: u32,
    pub sh: u32,
    pub sw: u32,
    pub step_kx: u32,
    pub step_ky: u32,
    pub n_begin: u32,
    pub a_base: u32,
    pub tws: u32,
    pub w_base: u32,
    pub b_tws: u32,
    pub e_base: u32,
    pub y_base: u32,
    pub xz: i32,
    pub kext: i32,
    pub out_zp: i32,
    pub out_lo: i32,
    pub out_hi: i32,
    pub e_tws: u32,
    pub _pad: [u32; 3],
}

/// Uniform of `conv2d_dw.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct ConvDwParams {
    pub wg_begin: u32,
    pub wg_count: u32,
    pub gpp: u32,
    pub ptiles: u32,
    pub nblocks: u32,
    pub plane_out: u32,
    pub w_out: u32,
    pub c_out: u32,
    pub mult: u32,
    pub kw: u32,
    pub taps: u32,
    pub qp: u32,
    pub hp: u32,
    pub wp: u32,
    pub sh: u32,
    pub sw: u32,
    pub step_x: u32,
    pub step_y: u32,
    pub n_begin: u32,
    pub a_base: u32,
    pub tws: u32,
    pub w_base: u32,
    pub b_tws: u32,
    pub e_base: u32,
    pub y_base: u32,
    pub xz: i32,
    pub out_zp: i32,
    pub out_lo: i32,
    pub out_hi: i32,
    pub e_tws: u32,
    pub _pad: [u32; 2],
}

/// Uniform of `softfloat_test.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct TestParams {
    pub item_begin: u32,
    pub item_count: u32,
    pub _pad: [u32; 2],
}
