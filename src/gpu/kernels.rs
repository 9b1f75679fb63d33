//! The WGSL kernels: sources (from `shaders/`), binding lists and uniform records.
//!
//! Every kernel is `common.wgsl` (integer-emulated f32, fixed point, dispatch indexing), plus
//! `epilogue.wgsl` for the kernels that requantize, plus the kernel file. Binding 0 is always a
//! uniform record; the others are storage buffers, bound as windows (see `buffers.rs`), or
//! textures. Kernel files may contain `//#if FLAG`, `//#else` and `//#endif` lines: a tiny
//! preprocessor keeps the sections of the variant being compiled (features such as subgroups
//! or `dot4I8Packed` must not even appear in the source of a device without them).
//! The preprocessor is strict (known flags only, balanced sections, see [`preprocess`]), and
//! the tests in `kernel_contract.rs` check every variant's source against it.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};

/// A file of `shaders/`: its name (named in preprocessor errors) and its text.
macro_rules! shader {
    ($file:literal) => {
        ($file, include_str!(concat!("../../shaders/", $file)))
    };
}

/// A kernel source file: its name in `shaders/` and its text.
type ShaderFile = (&'static str, &'static str);

const COMMON: ShaderFile = shader!("common.wgsl");
const EPILOGUE: ShaderFile = shader!("epilogue.wgsl");
const EPILOGUE_TABLE: ShaderFile = shader!("epilogue_table.wgsl");
const CONV_COMMON: ShaderFile = shader!("conv_common.wgsl");
const QUANTIZE: ShaderFile = shader!("quantize.wgsl");
const DEQUANTIZE: ShaderFile = shader!("dequantize.wgsl");
const REQUANTIZE: ShaderFile = shader!("requantize.wgsl");
const CONV_PACK: ShaderFile = shader!("conv_pack.wgsl");
const CONV_DW_DIRECT: ShaderFile = shader!("conv2d_dw_direct.wgsl");
const UDIV: ShaderFile = shader!("udiv.wgsl");
const CONV_GEMM_COMMON: ShaderFile = shader!("conv_gemm_common.wgsl");
const CONV_GEMM: ShaderFile = shader!("conv2d_gemm.wgsl");
const CONV_GEMM_TILED: ShaderFile = shader!("conv2d_gemm_tiled.wgsl");
const CONV_GEMM_REDUCE: ShaderFile = shader!("conv2d_gemm_reduce.wgsl");
const CONV_DW: ShaderFile = shader!("conv2d_dw.wgsl");
const SOFTFLOAT_TEST: ShaderFile = shader!("softfloat_test.wgsl");
const GRAPH_LUT: ShaderFile = shader!("graph_lut.wgsl");
const GRAPH_ADD: ShaderFile = shader!("graph_add.wgsl");
const GRAPH_POOL: ShaderFile = shader!("graph_pool.wgsl");
const PEAK: ShaderFile = shader!("peak.wgsl");
const CONV_F32_COMMON: ShaderFile = shader!("conv_f32_common.wgsl");
const CONV_F32_PACK: ShaderFile = shader!("conv_f32_pack.wgsl");
const CONV_F32_GEMM: ShaderFile = shader!("conv2d_f32_gemm.wgsl");
const CONV_F32_DW: ShaderFile = shader!("conv2d_f32_dw.wgsl");

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
    /// `conv2d_gemm_tiled.wgsl`: a workgroup covers several channel blocks, and stages the A
    /// and B tiles of each K chunk in workgroup memory (GPUs).
    Tiled,
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
    /// A conv split along K, its partial sums in a sixth binding: with [`BStaging::Tiled`],
    /// parallel slices in one dispatch (finished by [`Kernel::ConvGemmReduce`]); with
    /// [`BStaging::Subgroup`] or [`BStaging::Direct`], one slice of a conv split by its input
    /// channels (`conv_plan::KSlice`), the sums kept between slices; never with
    /// [`BStaging::Shared`].
    pub ksplit: bool,
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
    /// The implicit-GEMM conv (classic or tiled).
    ConvGemm(GemmVariant),
    /// The second dispatch of a tiled GEMM conv run in parallel K slices: adds the slices'
    /// partial sums and runs the epilogue. Binds what the conv binds, the quads, weights and
    /// epilogue table as textures (`xtex`) or buffers.
    ConvGemmReduce {
        xtex: bool,
    },
    /// The depthwise conv on repacked quads, reading a texture (`xtex`) or a buffer.
    ConvDw {
        xtex: bool,
    },
    /// The depthwise conv read straight from the packed tensor (no repack), the input and
    /// epilogue table as textures (`xtex`) or buffers.
    ConvDwDirect {
        xtex: bool,
    },
    /// Only the unit tests dispatch it.
    #[cfg_attr(not(test), allow(dead_code))]
    SoftFloatTest,
    /// Gather through per-input byte tables (concat, ReLU, clamp).
    GraphLut,
    /// Elementwise binary op through 256x256 byte tables (add).
    GraphAdd,
    /// Max and average pooling.
    GraphPool,
    /// The adapter's peak: a register-only `dot4I8Packed` (`dot4`) or f32 `fma` loop.
    Peak {
        dot4: bool,
    },
    /// The f32 conv baseline's input repack into f32 quads (`conv_f32_pack.wgsl`), into a
    /// texture (`xtex`) or a buffer.
    ConvF32Pack {
        xtex: bool,
    },
    /// The f32 implicit-GEMM conv (`conv2d_f32_gemm.wgsl`), its quads and weights in
    /// textures (`xtex`) or buffers, the weights shared by subgroup broadcasts (`sg`) or
    /// loaded by every invocation.
    ConvF32Gemm {
        xtex: bool,
        sg: bool,
    },
    /// The f32 depthwise conv (`conv2d_f32_dw.wgsl`), reading the input from a texture copy
    /// and the weights from a texture (`xtex`) or both from buffers, storing one vec4 per
    /// invocation where output rows are whole vec4s (`y4`).
    ConvF32Dw {
        xtex: bool,
        y4: bool,
    },
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

/// The flags a kernel source may test in `//#if FLAG` lines: those [`Kernel::source`] sets for
/// some variant. [`preprocess`] rejects any other, so a misspelt flag cannot silently drop (or
/// keep) a section.
pub(crate) const FLAGS: [&str; 7] = ["XTEX", "PACKED", "SG", "SHARED", "DOT4", "KSPLIT", "Y4"];

/// Keeps the lines of `src` (the text of the shader file `file`) whose enclosing `//#if FLAG`
/// sections are enabled by `flags`; the directive lines themselves are dropped.
///
/// Sections nest. Every line whose trimmed text starts with `//#` must be one of `//#if FLAG`
/// (`FLAG` one of [`FLAGS`]), `//#else` (at most one per section) or `//#endif`, and every
/// section must be closed in the same file; `flags` must hold only [`FLAGS`]. Anything else is an
/// [`Error::KernelSource`] naming the file, the line and the problem.
pub(crate) fn preprocess(file: &str, src: &str, flags: &[&str]) -> Result<String> {
    let fail = |line: Option<usize>, message: String| Error::KernelSource {
        file: file.to_string(),
        line,
        message,
    };
    let known = FLAGS.join(", ");
    if let Some(flag) = flags.iter().find(|f| !FLAGS.contains(f)) {
        return Err(fail(
            None,
            format!("unknown flag '{flag}' requested (known flags: {known})"),
        ));
    }
    /// An open `//#if` section.
    struct Section {
        /// Line number of its `//#if`.
        line: usize,
        /// The current branch is kept (before looking at the enclosing sections).
        on: bool,
        /// The enclosing sections are all kept.
        outer: bool,
        /// Its `//#else` was seen.
        in_else: bool,
    }
    let mut out = String::with_capacity(src.len());
    let mut stack: Vec<Section> = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let n = i + 1;
        let Some(directive) = line.trim().strip_prefix("//#") else {
            if stack.last().is_none_or(|s| s.on && s.outer) {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        };
        let words: Vec<&str> = directive.split_whitespace().collect();
        match words[..] {
            ["if", flag] => {
                if !FLAGS.contains(&flag) {
                    return Err(fail(
                        Some(n),
                        format!("`//#if {flag}`: unknown flag '{flag}' (known flags: {known})"),
                    ));
                }
                let outer = stack.last().is_none_or(|s| s.on && s.outer);
                stack.push(Section {
                    line: n,
                    on: flags.contains(&flag),
                    outer,
                    in_else: false,
                });
            }
            ["else"] => {
                let Some(top) = stack.last_mut() else {
                    return Err(fail(Some(n), "`//#else` without `//#if`".into()));
                };
                if top.in_else {
                    return Err(fail(
                        Some(n),
                        format!(
                            "second `//#else` in the section opened by the `//#if` at line {}",
                            top.line
                        ),
                    ));
                }
                top.in_else = true;
                top.on = !top.on;
            }
            ["endif"] => {
                if stack.pop().is_none() {
                    return Err(fail(Some(n), "`//#endif` without `//#if`".into()));
                }
            }
            _ => {
                return Err(fail(
                    Some(n),
                    format!(
                        "malformed directive `{}`; expected `//#if FLAG`, `//#else` or `//#endif`",
                        line.trim()
                    ),
                ))
            }
        }
    }
    match stack.last() {
        Some(open) => Err(fail(
            Some(open.line),
            "`//#if` not closed by an `//#endif` before the end of the file".into(),
        )),
        None => Ok(out),
    }
}

impl Kernel {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kernel::Quantize => "squint quantize",
            Kernel::Dequantize => "squint dequantize",
            Kernel::Requantize => "squint requantize",
            Kernel::ConvPack { .. } => "squint conv_pack",
            Kernel::ConvGemm(_) => "squint conv2d_gemm",
            Kernel::ConvGemmReduce { .. } => "squint conv2d_gemm_reduce",
            Kernel::ConvDw { .. } => "squint conv2d_dw",
            Kernel::ConvDwDirect { .. } => "squint conv2d_dw_direct",
            Kernel::SoftFloatTest => "squint softfloat_test",
            Kernel::GraphLut => "squint graph_lut",
            Kernel::GraphAdd => "squint graph_add",
            Kernel::GraphPool => "squint graph_pool",
            Kernel::Peak { .. } => "squint peak",
            Kernel::ConvF32Pack { .. } => "squint conv_f32_pack",
            Kernel::ConvF32Gemm { .. } => "squint conv2d_f32_gemm",
            Kernel::ConvF32Dw { .. } => "squint conv2d_f32_dw",
        }
    }

    /// The `//#if` flags of this variant (all in [`FLAGS`]).
    pub(crate) fn flags(self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        match self {
            Kernel::Quantize
            | Kernel::Dequantize
            | Kernel::Requantize
            | Kernel::SoftFloatTest
            | Kernel::GraphLut
            | Kernel::GraphAdd
            | Kernel::GraphPool => {}
            Kernel::Peak { dot4 } => {
                if dot4 {
                    flags.push("DOT4");
                }
            }
            Kernel::ConvPack { xtex }
            | Kernel::ConvDw { xtex }
            | Kernel::ConvDwDirect { xtex }
            | Kernel::ConvF32Pack { xtex } => {
                if xtex {
                    flags.push("XTEX");
                }
            }
            Kernel::ConvF32Dw { xtex, y4 } => {
                if xtex {
                    flags.push("XTEX");
                }
                if y4 {
                    flags.push("Y4");
                }
            }
            Kernel::ConvF32Gemm { xtex, sg } => {
                if xtex {
                    flags.push("XTEX");
                }
                if sg {
                    flags.push("SG");
                }
            }
            Kernel::ConvGemmReduce { xtex } => {
                if xtex {
                    flags.push("XTEX");
                }
                flags.push("KSPLIT");
            }
            Kernel::ConvGemm(v) => {
                if v.xtex {
                    flags.push("XTEX");
                }
                if v.packed {
                    flags.push("PACKED");
                }
                if v.ksplit {
                    flags.push("KSPLIT");
                }
                match v.b {
                    BStaging::Subgroup => flags.push("SG"),
                    BStaging::Shared => flags.push("SHARED"),
                    BStaging::Direct | BStaging::Tiled => {}
                }
            }
        }
        flags
    }

    /// The shader files this kernel is made of, in order.
    fn files(self) -> &'static [ShaderFile] {
        match self {
            Kernel::Quantize => &[COMMON, QUANTIZE],
            Kernel::Dequantize => &[COMMON, DEQUANTIZE],
            Kernel::Requantize => &[COMMON, EPILOGUE, REQUANTIZE],
            Kernel::ConvPack { .. } => &[COMMON, CONV_PACK],
            Kernel::ConvGemm(GemmVariant {
                b: BStaging::Tiled, ..
            }) => &[
                EPILOGUE_TABLE,
                CONV_COMMON,
                CONV_GEMM_COMMON,
                CONV_GEMM_TILED,
            ],
            Kernel::ConvGemm(_) => &[EPILOGUE_TABLE, CONV_COMMON, CONV_GEMM_COMMON, CONV_GEMM],
            Kernel::ConvGemmReduce { .. } => &[
                EPILOGUE_TABLE,
                CONV_COMMON,
                CONV_GEMM_COMMON,
                CONV_GEMM_REDUCE,
            ],
            Kernel::ConvDw { .. } => &[EPILOGUE_TABLE, CONV_COMMON, CONV_DW],
            Kernel::ConvDwDirect { .. } => &[EPILOGUE_TABLE, UDIV, CONV_DW_DIRECT],
            Kernel::SoftFloatTest => &[COMMON, SOFTFLOAT_TEST],
            Kernel::GraphLut => &[COMMON, GRAPH_LUT],
            Kernel::GraphAdd => &[COMMON, GRAPH_ADD],
            Kernel::GraphPool => &[COMMON, GRAPH_POOL],
            Kernel::Peak { .. } => &[COMMON, PEAK],
            Kernel::ConvF32Pack { .. } => &[CONV_F32_COMMON, CONV_F32_PACK],
            Kernel::ConvF32Gemm { .. } => &[CONV_F32_COMMON, CONV_F32_GEMM],
            Kernel::ConvF32Dw { .. } => &[CONV_F32_COMMON, UDIV, CONV_F32_DW],
        }
    }

    /// The WGSL source of this variant: its files, each preprocessed with [`Kernel::flags`],
    /// joined by newlines. Fails (with [`Error::KernelSource`]) only on a malformed shader file.
    pub(crate) fn source(self) -> Result<String> {
        let flags = self.flags();
        let parts = self
            .files()
            .iter()
            .map(|(file, src)| preprocess(file, src, &flags))
            .collect::<Result<Vec<_>>>()?;
        Ok(parts.join("\n"))
    }

    pub(crate) fn bindings(self) -> &'static [Binding] {
        use Binding::*;
        match self {
            Kernel::Quantize
            | Kernel::Dequantize
            | Kernel::SoftFloatTest
            | Kernel::ConvF32Pack { xtex: false } => &[Uniform, Read, Write],
            Kernel::ConvF32Pack { xtex: true } => &[Uniform, Texture, StorageTexture],
            Kernel::ConvF32Gemm { xtex: false, .. } | Kernel::ConvF32Dw { xtex: false, .. } => {
                &[Uniform, Read, Read, Read, Write]
            }
            Kernel::ConvF32Gemm { xtex: true, .. } | Kernel::ConvF32Dw { xtex: true, .. } => {
                &[Uniform, Texture, Texture, Read, Write]
            }
            Kernel::ConvPack { xtex: false } => &[Uniform, Read, Write],
            Kernel::ConvPack { xtex: true } => &[Uniform, Texture, StorageTexture],
            Kernel::Requantize | Kernel::GraphLut | Kernel::GraphPool => {
                &[Uniform, Read, Read, Write]
            }
            Kernel::GraphAdd | Kernel::ConvDwDirect { xtex: false } => {
                &[Uniform, Read, Read, Read, Write]
            }
            Kernel::ConvDwDirect { xtex: true } => &[Uniform, Texture, Texture, Texture, Write],
            Kernel::Peak { .. } => &[Uniform, Write],
            Kernel::ConvGemm(GemmVariant {
                xtex: false,
                ksplit: true,
                ..
            })
            | Kernel::ConvGemmReduce { xtex: false } => &[Uniform, Read, Read, Read, Write, Write],
            Kernel::ConvGemm(GemmVariant {
                xtex: true,
                ksplit: true,
                ..
            })
            | Kernel::ConvGemmReduce { xtex: true } => {
                &[Uniform, Texture, Texture, Texture, Write, Write]
            }
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
    /// First work item of this dispatch.
    pub item_begin: u32,
    /// Work items in this dispatch.
    pub item_count: u32,
    /// Values per (n, c) plane (`H * W`).
    pub plane: u32,
    /// Packed words per (n, c) plane (`ceil(H * W / 4)`).
    pub plane_words: u32,
    /// First f32 of the input window.
    pub x_base: u32,
    /// First word of the output window.
    pub y_base: u32,
    /// f32 bits of the quantize scale's inverse, the float estimate's factor (0: table search
    /// only).
    pub inv_scale: u32,
    /// Output zero point.
    pub zp: i32,
    /// Smallest output level.
    pub qmin: i32,
    /// Largest output level.
    pub qmax: i32,
    /// The level NaN quantizes to.
    pub nan_q: i32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: u32,
    /// `QuantizeSteps::thresholds` (`qmax - qmin` keys), zero-padded to 256.
    pub thresholds: [u32; 256],
}

/// Uniform of `dequantize.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct DequantizeParams {
    /// First work item of this dispatch.
    pub item_begin: u32,
    /// Work items in this dispatch.
    pub item_count: u32,
    /// Values per (n, c) plane (`H * W`).
    pub plane: u32,
    /// Packed words per (n, c) plane (`ceil(H * W / 4)`).
    pub plane_words: u32,
    /// First word of the packed input window.
    pub q_base: u32,
    /// First f32 of the output window.
    pub y_base: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: [u32; 2],
    /// The f32 bits of `dequantize_one` for each stored byte value.
    pub values: [u32; 256],
}

/// Uniform of `requantize.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct RequantizeParams {
    /// First work item of this dispatch.
    pub item_begin: u32,
    /// Work items in this dispatch.
    pub item_count: u32,
    /// Accumulators in the tensor.
    pub len: u32,
    /// Values per (n, c) plane (`H * W`).
    pub plane: u32,
    /// Channels (one epilogue record each).
    pub channels: u32,
    /// First accumulator of the accumulator window.
    pub acc_base: u32,
    /// First `ChannelRequant` record of the epilogue window.
    pub epi_base: u32,
    /// First word of the output window.
    pub y_base: u32,
    /// Output zero point.
    pub out_zp: i32,
    /// Output clamp, lower bound (raised to the zero point by a fused ReLU).
    pub out_lo: i32,
    /// Output clamp, upper bound.
    pub out_hi: i32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: u32,
}

/// Uniform of `conv_pack.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct ConvPackParams {
    /// First work item of this dispatch.
    pub item_begin: u32,
    /// Work items in this dispatch.
    pub item_count: u32,
    /// Interior items of the chunk (input words x quads per pixel); border items follow.
    pub n_interior: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Packed input words per (n, c) plane (`ceil(h * w / 4)`).
    pub plane_words: u32,
    /// Padded input height (`h + 2 * pad_h`).
    pub padded_h: u32,
    /// Padded input width (`w + 2 * pad_w`).
    pub padded_w: u32,
    /// Zero padding rows, top and bottom each.
    pub pad_h: u32,
    /// Zero padding columns, left and right each.
    pub pad_w: u32,
    /// Input channels.
    pub c_in: u32,
    /// Input channels per group.
    pub c_in_per_group: u32,
    /// Groups.
    pub groups: u32,
    /// Quad channel slots per group in the repacked input (GEMM: `c_in_per_group` rounded up to
    /// 16; depthwise: `c_in_per_group`).
    pub slots_per_group: u32,
    /// Quads (16 channel slots each) per padded input pixel.
    pub quads_per_pixel: u32,
    /// First image of the chunk in the input tensor.
    pub img_begin: u32,
    /// First word of the packed input window (buffer mode).
    pub x_base: u32,
    /// Log2 of the input texture's width (texture mode).
    pub x_tex_log2_width: u32,
    /// First quad of the repacked-quads window (buffer mode).
    pub q_base: u32,
    /// Log2 of the repacked-quads texture's width (texture mode).
    pub quads_tex_log2_width: u32,
    /// 0x80 or 0: XORed into every input byte to reach the kernel's byte domain (signed for
    /// `dot4I8Packed`, else unsigned).
    pub flip: u32,
    /// The input zero point in the kernel's domain as a byte: fills padding and the slots
    /// rounding a group up.
    pub pad_byte: u32,
    /// First padded row written: the band's (0 without bands, see `conv_plan::RowBand`).
    pub row_begin: u32,
    /// Padded rows written from `row_begin` (`padded_h` without bands); quads of other rows
    /// are skipped.
    pub band_rows: u32,
    /// Plane position (`y * w + x`) of byte 0 of each input plane: 0, or for a band the
    /// first byte copied (`conv_plan::BandInput::first_byte`).
    pub pos_shift: u32,
    /// Plane positions written: `[pos_begin, pos_end)` (the whole plane without bands).
    pub pos_begin: u32,
    /// End of the plane positions written.
    pub pos_end: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: u32,
}

/// Uniform of `conv2d_gemm.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct ConvGemmParams {
    /// First workgroup of this dispatch (numbered image, channel block, pixel-tile group; the
    /// last fastest).
    pub wg_begin: u32,
    /// Workgroups in this dispatch.
    pub wg_count: u32,
    /// Workgroups per (image, channel block): the output plane's pixel tiles in workgroups.
    pub plane_workgroups: u32,
    /// Pixel tiles (4 output pixels, one packed word) per output plane.
    pub pixel_tiles: u32,
    /// The workgroups' channel blocks over all groups (up to 8 output channels each, or
    /// `8 · BPT` for the tiled kernel; see `ConvGeometry::channel_blocks`).
    pub channel_blocks: u32,
    /// 8-channel blocks per group (the weights' layout).
    pub blocks_per_group: u32,
    /// Output pixels per plane.
    pub plane_out: u32,
    /// Output width.
    pub w_out: u32,
    /// Output channels.
    pub c_out: u32,
    /// Output channels per group.
    pub c_out_per_group: u32,
    /// Kernel width.
    pub kw: u32,
    /// Weight quads per output channel (`kh * kw * quads_per_group`).
    pub k_quads: u32,
    /// Quads per group and tap (`ceil(c_in_per_group / 16)`).
    pub quads_per_group: u32,
    /// Quads (16 channel slots each) per padded input pixel.
    pub quads_per_pixel: u32,
    /// Padded input height (`h + 2 * pad_h`).
    pub padded_h: u32,
    /// Padded input width (`w + 2 * pad_w`).
    pub padded_w: u32,
    /// Vertical stride.
    pub stride_h: u32,
    /// Horizontal stride.
    pub stride_w: u32,
    /// Quad-index step (wrapping) from the end of one tap's quads to the next tap of the kernel
    /// row.
    pub step_kx: u32,
    /// Quad-index step (wrapping) from the end of a kernel row to the next row's first tap.
    pub step_ky: u32,
    /// First image of the chunk in the output tensor.
    pub n_begin: u32,
    /// First quad of the repacked-quads window (buffer mode).
    pub a_base: u32,
    /// Log2 of the repacked-quads texture's width (texture mode).
    pub quads_tex_log2_width: u32,
    /// First vec4 of the weights window (buffer mode).
    pub w_base: u32,
    /// Log2 of the weights texture's width (texture mode).
    pub w_tex_log2_width: u32,
    /// First vec4 of the epilogue-table window (buffer mode).
    pub etab_base: u32,
    /// First word of the output window.
    pub y_base: u32,
    /// The input zero point in the kernel's byte domain (`z'`, see `flip`).
    pub x_zero_point: i32,
    /// K as the kernel sums it (`16 * k_quads`, groups rounded up to 16 channels per tap): the
    /// `K' * z' * w_zp` term of the zero-point correction.
    pub k_padded: i32,
    /// Output zero point.
    pub out_zp: i32,
    /// Output clamp, lower bound (raised to the zero point by a fused ReLU).
    pub out_lo: i32,
    /// Output clamp, upper bound.
    pub out_hi: i32,
    /// Log2 of the epilogue-table texture's width (texture mode).
    pub etab_tex_log2_width: u32,
    /// B quads per channel of a block (the whole K: `kh * kw * quads_per_group` of the layer,
    /// which `k_quads` and `quads_per_group` are a slice of when the conv is split along K).
    pub w_block_quads: u32,
    /// B index of a K slice's first quad in its block (0 for the whole K).
    pub w_first: u32,
    /// B index step after each tap past the quads outside the K slice (0 for the whole K).
    pub w_tap_skip: u32,
    /// K slices (`ksplit` variant): bit 0 adds the earlier slices' partial sums, bit 1 (the
    /// last slice) adds the zero-point terms and runs the epilogue; else keeps the sums.
    pub k_pass: u32,
    /// First vec4 of the partial-sums window (`ksplit` variant).
    pub p_base: u32,
    /// The first group of a slice of groups (`conv2d_gemm.wgsl`; 0 for the whole layer).
    pub group_base: u32,
    /// Parallel K slices per workgroup tile (`ksplit` variant of the tiled kernel, and its
    /// reduce; else 1).
    pub k_slices: u32,
    /// Quads of K per parallel slice, a multiple of the tiled kernel's chunk (`ksplit` variant
    /// of the tiled kernel).
    pub slice_quads: u32,
    /// Output words of the dispatch: the vec4s of each slice's partial sums (parallel slices).
    pub slice_words: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: [u32; 2],
}

/// Uniform of `conv2d_dw.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct ConvDwParams {
    /// First workgroup of this dispatch (numbered image, channel block, pixel-tile group; the
    /// last fastest).
    pub wg_begin: u32,
    /// Workgroups in this dispatch.
    pub wg_count: u32,
    /// Workgroups per (image, channel block): the output plane's pixel tiles in workgroups.
    pub plane_workgroups: u32,
    /// Pixel tiles (4 output pixels, one packed word) per output plane.
    pub pixel_tiles: u32,
    /// Channel blocks (up to 8 output channels) over all groups.
    pub channel_blocks: u32,
    /// Output pixels per plane.
    pub plane_out: u32,
    /// Output width.
    pub w_out: u32,
    /// Output channels.
    pub c_out: u32,
    /// Output channels per input channel (per group).
    pub channel_multiplier: u32,
    /// Kernel width.
    pub kw: u32,
    /// Kernel taps (`kh * kw`).
    pub taps: u32,
    /// Quads (16 channel slots each) per padded input pixel.
    pub quads_per_pixel: u32,
    /// Padded input height (`h + 2 * pad_h`).
    pub padded_h: u32,
    /// Padded input width (`w + 2 * pad_w`).
    pub padded_w: u32,
    /// Vertical stride.
    pub stride_h: u32,
    /// Horizontal stride.
    pub stride_w: u32,
    /// Quad-index step from one tap to the next of the kernel row.
    pub step_x: u32,
    /// Quad-index step (wrapping) from the end of a kernel row to the next row's first tap.
    pub step_y: u32,
    /// First image of the chunk in the output tensor.
    pub n_begin: u32,
    /// First quad of the repacked-quads window (buffer mode).
    pub a_base: u32,
    /// Log2 of the repacked-quads texture's width (texture mode).
    pub quads_tex_log2_width: u32,
    /// First vec4 of the weights window (buffer mode).
    pub w_base: u32,
    /// Log2 of the weights texture's width (texture mode).
    pub w_tex_log2_width: u32,
    /// First vec4 of the epilogue-table window (buffer mode).
    pub etab_base: u32,
    /// First word of the output window.
    pub y_base: u32,
    /// The input zero point in the kernel's byte domain (`z'`, see `flip`).
    pub x_zero_point: i32,
    /// Output zero point.
    pub out_zp: i32,
    /// Output clamp, lower bound (raised to the zero point by a fused ReLU).
    pub out_lo: i32,
    /// Output clamp, upper bound.
    pub out_hi: i32,
    /// Log2 of the epilogue-table texture's width (texture mode).
    pub etab_tex_log2_width: u32,
    /// First channel block of a channel slice (`conv_plan::KSlice`; 0 without one).
    pub block_base: u32,
    /// First input quad of a channel slice: its repacked quads start there (0 without one).
    pub quad_base: u32,
    /// End of a channel slice's output channels (`c_out` without one).
    pub c_end: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: u32,
}

/// Uniform of `softfloat_test.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct TestParams {
    /// First work item of this dispatch.
    pub item_begin: u32,
    /// Work items in this dispatch.
    pub item_count: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: [u32; 2],
}

/// Uniform of the f32 conv kernels (`conv_f32_common.wgsl`; see `float_conv.rs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct ConvF32Params {
    /// Invocations with work (repack, depthwise) or workgroups with work (GEMM).
    pub items: u32,
    /// Input channels.
    pub c_in: u32,
    /// Input height.
    pub h_in: u32,
    /// Input width.
    pub w_in: u32,
    /// Output channels.
    pub c_out: u32,
    /// Output height.
    pub h_out: u32,
    /// Output width.
    pub w_out: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Vertical stride.
    pub stride_h: u32,
    /// Horizontal stride.
    pub stride_w: u32,
    /// Rows of zero padding above.
    pub pad_h: u32,
    /// Columns of zero padding on the left.
    pub pad_w: u32,
    /// Vertical dilation.
    pub dil_h: u32,
    /// Horizontal dilation.
    pub dil_w: u32,
    /// Input channels per group.
    pub c_in_per_group: u32,
    /// Output channels per group.
    pub c_out_per_group: u32,
    /// f32 quads (4 channels) per group: `ceil(c_in_per_group / 4)`.
    pub quads_per_group: u32,
    /// f32 quads per padded pixel: `groups * quads_per_group`.
    pub quads_per_pixel: u32,
    /// Padded rows the conv reads.
    pub padded_h: u32,
    /// Padded columns the conv reads.
    pub padded_w: u32,
    /// 8-channel blocks per group.
    pub blocks_per_group: u32,
    /// 4-pixel tiles per output plane.
    pub pixel_tiles: u32,
    /// Log2 width of the quads texture (textures only).
    pub a_log2_width: u32,
    /// Log2 width of the weights texture (textures only).
    pub w_log2_width: u32,
    /// Log2 width of the input's texture copy (textures only).
    pub x_log2_width: u32,
    /// 4-pixel tiles per output row (depthwise).
    pub col_tiles: u32,
    /// `f32(1 / col_tiles)`, for `udiv` (depthwise).
    pub col_tiles_rcp: f32,
}

/// Uniform of `peak.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct PeakParams {
    /// Steps per chain.
    pub iters: u32,
    /// Seed of the operands.
    pub seed: u32,
    /// Padding to 16 bytes.
    pub _pad0: u32,
    /// Padding to 16 bytes.
    pub _pad1: u32,
}

/// Uniform of `graph_lut.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct GraphLutParams {
    /// Output elements.
    pub total: u32,
    /// Output elements per outer index (the inputs' blocks together).
    pub out_block: u32,
    /// Number of inputs (each with a record and a table).
    pub n_inputs: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: u32,
}

/// Uniform of `graph_add.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct GraphAddParams {
    /// Elements.
    pub total: u32,
    /// First element that uses table 1 (elements below use table 0).
    pub split: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: [u32; 2],
}

/// Uniform of `graph_pool.wgsl` (see the shader for the meaning of each field).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct GraphPoolParams {
    /// Output elements.
    pub total: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Output height.
    pub ho: u32,
    /// Output width.
    pub wo: u32,
    /// 0: max, 1: average, 2: float average (ONNX Runtime's).
    pub mode: u32,
    /// The stored bytes are qint8 (else quint8).
    pub signed_bytes: u32,
    /// Max: clamp taps into the input (QNNPACK) instead of skipping them.
    pub clamp_taps: u32,
    /// Max: kernel height.
    pub kh: u32,
    /// Max: kernel width.
    pub kw: u32,
    /// Max: stride (rows).
    pub sh: u32,
    /// Max: stride (columns).
    pub sw: u32,
    /// Max: padding (rows).
    pub ph: u32,
    /// Max: padding (columns).
    pub pw: u32,
    /// Max: dilation (rows).
    pub dh: u32,
    /// Max: dilation (columns).
    pub dw: u32,
    /// Average: subtracted from the sum once per tap.
    pub tap_zp: i32,
    /// Average: add `add_f32` in float before rounding.
    pub float_add: u32,
    /// Average: f32 bits added before rounding when `float_add`.
    pub add_f32: u32,
    /// Average: added after rounding.
    pub post_add: i32,
    /// Average: output clamp, lower bound.
    pub out_min: i32,
    /// Average: output clamp, upper bound.
    pub out_max: i32,
    /// Float average: f32 bits of the input scale.
    pub scale_x: u32,
    /// Float average: f32 bits of the output scale.
    pub scale_y: u32,
}

#[cfg(test)]
#[path = "kernel_contract.rs"]
mod kernel_contract;

/// Uniform of `conv2d_dw_direct.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct ConvDwDirectParams {
    /// First image of this dispatch (whose grid is word groups x output channels x images).
    pub n_begin: u32,
    /// Packed words (4 output pixels) per output plane.
    pub pixel_tiles: u32,
    /// Output pixels per plane.
    pub plane_out: u32,
    /// Output width.
    pub w_out: u32,
    /// Output channels.
    pub c_out: u32,
    /// Output channels per input channel.
    pub channel_multiplier: u32,
    /// Input channels.
    pub c_in: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Packed words per input plane.
    pub plane_words: u32,
    /// Vertical stride.
    pub stride_h: u32,
    /// Vertical dilation.
    pub dilation_h: u32,
    /// Horizontal dilation.
    pub dilation_w: u32,
    /// Top padding.
    pub pad_h: u32,
    /// Left padding.
    pub pad_w: u32,
    /// First word of the input window.
    pub x_base: u32,
    /// First i32 of the weights window.
    pub w_base: u32,
    /// First vec4 of the epilogue-table window.
    pub etab_base: u32,
    /// First word of the output window.
    pub y_base: u32,
    /// The input zero point in the unsigned byte domain (`z'`).
    pub x_zero_point: i32,
    /// `1 / w_out` rounded to f32.
    pub w_out_rcp: f32,
    /// `1 / channel_multiplier` rounded to f32.
    pub m_rcp: f32,
    /// Log2 of the input texture's width (texture mode).
    pub x_tex_log2_width: u32,
    /// Log2 of the weights texture's width (texture mode).
    pub w_tex_log2_width: u32,
    /// Log2 of the epilogue-table texture's width (texture mode).
    pub etab_tex_log2_width: u32,
    /// Invocations per output row (the row path, `NW > 0`).
    pub row_segments: u32,
    /// `1 / row_segments` rounded to f32.
    pub segments_rcp: f32,
    /// The output zero point (the float epilogue).
    pub out_zero_point: i32,
    /// Invocations per output plane (`CPW > 1`: the workgroup's lanes go by planes of this
    /// many).
    pub plane_invocations: u32,
    /// `1 / plane_invocations` rounded to f32.
    pub plane_invocations_rcp: f32,
    /// Padding to a multiple of 16 bytes.
    pub _pad0: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad1: u32,
}
