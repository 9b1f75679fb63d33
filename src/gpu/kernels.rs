//! The WGSL kernels: sources (from `shaders/`), binding lists and uniform records.
//!
//! Every kernel is `common.wgsl` (integer-emulated f32, fixed point, dispatch indexing), plus
//! `epilogue.wgsl` for the kernels that requantize, plus the kernel file. Binding 0 is always a
//! uniform record; the others are storage buffers, bound as windows (see `buffers.rs`).

use bytemuck::{Pod, Zeroable};

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const EPILOGUE: &str = include_str!("../../shaders/epilogue.wgsl");
const QUANTIZE: &str = include_str!("../../shaders/quantize.wgsl");
const DEQUANTIZE: &str = include_str!("../../shaders/dequantize.wgsl");
const REQUANTIZE: &str = include_str!("../../shaders/requantize.wgsl");
const CONV_PACK: &str = include_str!("../../shaders/conv_pack.wgsl");
const CONV2D: &str = include_str!("../../shaders/conv2d_i8.wgsl");
const SOFTFLOAT_TEST: &str = include_str!("../../shaders/softfloat_test.wgsl");

/// Workgroup size of every kernel (`@workgroup_size(64)`).
pub(crate) const WORKGROUP: u64 = 64;

/// A kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    Quantize,
    Dequantize,
    Requantize,
    ConvPack,
    Conv2d,
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
}

impl Kernel {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kernel::Quantize => "squint quantize",
            Kernel::Dequantize => "squint dequantize",
            Kernel::Requantize => "squint requantize",
            Kernel::ConvPack => "squint conv_pack",
            Kernel::Conv2d => "squint conv2d_i8",
            Kernel::SoftFloatTest => "squint softfloat_test",
        }
    }

    pub(crate) fn source(self) -> String {
        let parts: &[&str] = match self {
            Kernel::Quantize => &[COMMON, QUANTIZE],
            Kernel::Dequantize => &[COMMON, DEQUANTIZE],
            Kernel::Requantize => &[COMMON, EPILOGUE, REQUANTIZE],
            Kernel::ConvPack => &[COMMON, CONV_PACK],
            Kernel::Conv2d => &[COMMON, EPILOGUE, CONV2D],
            Kernel::SoftFloatTest => &[COMMON, SOFTFLOAT_TEST],
        };
        parts.join("\n")
    }

    pub(crate) fn bindings(self) -> &'static [Binding] {
        use Binding::*;
        match self {
            Kernel::Quantize | Kernel::Dequantize | Kernel::ConvPack | Kernel::SoftFloatTest => {
                &[Uniform, Read, Write]
            }
            Kernel::Requantize => &[Uniform, Read, Read, Write],
            Kernel::Conv2d => &[Uniform, Read, Read, Read, Read, Write],
        }
    }
}

/// Uniform of `quantize.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
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
    pub _pad: [u32; 2],
}

/// Uniform of `dequantize.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct DequantizeParams {
    pub item_begin: u32,
    pub item_count: u32,
    pub plane: u32,
    pub plane_words: u32,
    pub q_base: u32,
    pub y_base: u32,
    pub scale: u32,
    pub zp: i32,
    pub signed_bytes: u32,
    pub _pad: [u32; 3],
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
    pub c4pg: u32,
    pub img_begin: u32,
    pub x_base: u32,
    pub xq_base: u32,
    pub flip: u32,
    pub zbyte: u32,
    pub _pad: [u32; 2],
}

/// Uniform of `conv2d_i8.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct ConvParamsGpu {
    pub wg_begin: u32,
    pub wg_count: u32,
    pub gpp: u32,
    pub ptiles: u32,
    pub sblocks: u32,
    pub spg: u32,
    pub cbpg: u32,
    pub plane_out: u32,
    pub w_out: u32,
    pub c_out: u32,
    pub cog: u32,
    pub kh: u32,
    pub kw: u32,
    pub k4: u32,
    pub c4pg: u32,
    pub groups: u32,
    pub hp: u32,
    pub wp: u32,
    pub sh: u32,
    pub sw: u32,
    pub dh: u32,
    pub dw: u32,
    pub n_begin: u32,
    pub xq_base: u32,
    pub w_base: u32,
    pub e_base: u32,
    pub m_base: u32,
    pub y_base: u32,
    pub xz: i32,
    pub out_zp: i32,
    pub out_lo: i32,
    pub out_hi: i32,
}

/// Uniform of `softfloat_test.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct TestParams {
    pub item_begin: u32,
    pub item_count: u32,
    pub _pad: [u32; 2],
}
