//! The host/shader contract: the `//#if` preprocessor's rules, every kernel variant's source
//! passing them, and every uniform record having the layout (size, field offsets, scalar types)
//! of the WGSL struct its kernel binds at binding 0, read from the source by naga; and rules on
//! every variant's naga IR: workgroup variables audited for write-before-read, no uniform read
//! inside a loop, private copies of uniforms filled first.

use super::*;

/// Every kernel variant the host can build: each kind with every flag combination.
fn all_kernels() -> Vec<Kernel> {
    let mut all = vec![
        Kernel::Quantize,
        Kernel::Dequantize,
        Kernel::Requantize,
        Kernel::SoftFloatTest,
        Kernel::GraphLut,
        Kernel::GraphAdd,
        Kernel::GraphPool,
        Kernel::Peak { dot4: false },
        Kernel::Peak { dot4: true },
    ];
    for xtex in [false, true] {
        all.push(Kernel::ConvPack { xtex });
        all.push(Kernel::ConvF32Pack { xtex });
        all.push(Kernel::ConvF32Gemm { xtex, sg: false });
        all.push(Kernel::ConvF32Gemm { xtex, sg: true });
        all.push(Kernel::ConvF32Dw { xtex, y4: false });
        all.push(Kernel::ConvF32Dw { xtex, y4: true });
        all.push(Kernel::ConvDw { xtex });
        all.push(Kernel::ConvDwDirect { xtex });
        all.push(Kernel::ConvGemmReduce { xtex });
        for packed in [false, true] {
            for b in [
                BStaging::Subgroup,
                BStaging::Shared,
                BStaging::Direct,
                BStaging::Tiled,
            ] {
                all.push(Kernel::ConvGemm(GemmVariant {
                    xtex,
                    b,
                    packed,
                    ksplit: false,
                }));
                // K slices run with staging that loads B quad by quad (one after another), or
                // with the tiled kernel (in parallel).
                if matches!(b, BStaging::Subgroup | BStaging::Direct | BStaging::Tiled) {
                    all.push(Kernel::ConvGemm(GemmVariant {
                        xtex,
                        b,
                        packed,
                        ksplit: true,
                    }));
                }
            }
        }
    }
    // A new kind of kernel must be added above: this match stops compiling until it is.
    for k in &all {
        match k {
            Kernel::Quantize
            | Kernel::Dequantize
            | Kernel::Requantize
            | Kernel::ConvPack { .. }
            | Kernel::ConvGemm(_)
            | Kernel::ConvGemmReduce { .. }
            | Kernel::ConvDw { .. }
            | Kernel::ConvDwDirect { .. }
            | Kernel::SoftFloatTest
            | Kernel::GraphLut
            | Kernel::GraphAdd
            | Kernel::GraphPool
            | Kernel::Peak { .. }
            | Kernel::ConvF32Pack { .. }
            | Kernel::ConvF32Gemm { .. }
            | Kernel::ConvF32Dw { .. } => {}
        }
    }
    all
}

/// The line and message of the [`Error::KernelSource`] that `preprocess` gives for `src`.
fn rejection(src: &str, flags: &[&str]) -> (Option<usize>, String) {
    match preprocess("test.wgsl", src, flags) {
        Err(Error::KernelSource {
            file,
            line,
            message,
        }) => {
            assert_eq!(file, "test.wgsl");
            (line, message)
        }
        other => panic!("expected a KernelSource error, got {other:?}"),
    }
}

#[test]
fn preprocess_keeps_the_enabled_branch_and_drops_the_directive_lines() {
    let src = "a\n//#if XTEX\nb\n//#else\nc\n//#endif\nd\n";
    assert_eq!(preprocess("t", src, &["XTEX"]).unwrap(), "a\nb\nd\n");
    assert_eq!(preprocess("t", src, &[]).unwrap(), "a\nc\nd\n");
    // Indented directives with trailing blanks are directives too.
    let indented = "a\n    //#if SG \n  b\n    //#endif\t\n";
    assert_eq!(preprocess("t", indented, &[]).unwrap(), "a\n");
}

#[test]
fn nested_sections_keep_a_line_only_when_every_enclosing_branch_is_enabled() {
    let src = "\
//#if SG
sg
//#else
//#if SHARED
shared
//#else
direct
//#endif
not_sg
//#endif
end
";
    assert_eq!(preprocess("t", src, &["SG"]).unwrap(), "sg\nend\n");
    // SHARED alone selects the inner branch; with SG the whole else branch is dropped.
    assert_eq!(
        preprocess("t", src, &["SHARED"]).unwrap(),
        "shared\nnot_sg\nend\n"
    );
    assert_eq!(
        preprocess("t", src, &["SG", "SHARED"]).unwrap(),
        "sg\nend\n"
    );
    assert_eq!(preprocess("t", src, &[]).unwrap(), "direct\nnot_sg\nend\n");
}

#[test]
fn preprocess_rejects_an_unknown_flag_in_an_if_line() {
    let (line, message) = rejection("a\n//#if XTEX\n//#if XTEXX\n//#endif\n//#endif\n", &[]);
    assert_eq!(line, Some(3));
    assert!(message.contains("unknown flag 'XTEXX'"), "{message}");
    assert!(message.contains("XTEX, PACKED, SG, SHARED"), "{message}");
}

#[test]
fn preprocess_rejects_an_unknown_requested_flag() {
    let (line, message) = rejection("a\n", &["XTEX", "SUBGROUPS"]);
    assert_eq!(line, None);
    assert!(message.contains("unknown flag 'SUBGROUPS'"), "{message}");
}

#[test]
fn preprocess_rejects_else_without_if() {
    let (line, message) = rejection("a\n//#if SG\n//#endif\n//#else\n", &[]);
    assert_eq!(line, Some(4));
    assert!(message.contains("`//#else` without `//#if`"), "{message}");
}

#[test]
fn preprocess_rejects_endif_without_if() {
    let (line, message) = rejection("a\n//#endif\n", &["SG"]);
    assert_eq!(line, Some(2));
    assert!(message.contains("`//#endif` without `//#if`"), "{message}");
}

#[test]
fn preprocess_rejects_a_second_else_in_one_section() {
    let src = "//#if SG\na\n//#else\nb\n//#else\nc\n//#endif\n";
    let (line, message) = rejection(src, &[]);
    assert_eq!(line, Some(5));
    assert!(message.contains("second `//#else`"), "{message}");
    assert!(message.contains("line 1"), "{message}");
    // An inner section's else does not count against the outer one.
    let nested = "//#if SG\n//#if XTEX\n//#else\n//#endif\n//#else\n//#endif\n";
    assert_eq!(preprocess("t", nested, &[]).unwrap(), "");
}

#[test]
fn preprocess_rejects_an_if_left_open_at_the_end_of_the_file() {
    let (line, message) = rejection("//#if SG\n//#endif\n//#if XTEX\n//#if SG\n//#endif\n", &[]);
    assert_eq!(line, Some(3));
    assert!(message.contains("not closed"), "{message}");
}

#[test]
fn preprocess_rejects_a_malformed_directive() {
    for bad in [
        "//#ifdef SG",
        "//#if",
        "//#if SG XTEX",
        "//#elif SG",
        "//#endif SG",
    ] {
        let src = format!("a\n{bad}\n");
        let (line, message) = rejection(&src, &[]);
        assert_eq!(line, Some(2), "{bad}");
        assert!(message.contains("malformed directive"), "{bad}: {message}");
    }
}

#[test]
fn the_error_message_names_the_file_and_the_line() {
    let err = preprocess("conv2d_gemm.wgsl", "a\n//#endif\n", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel source conv2d_gemm.wgsl, line 2: `//#endif` without `//#if`"
    );
}

#[test]
fn every_kernel_variant_source_preprocesses_without_error() {
    for kernel in all_kernels() {
        let source = kernel
            .source()
            .unwrap_or_else(|e| panic!("{kernel:?} (flags {:?}): {e}", kernel.flags()));
        assert!(source.contains("fn main"), "{kernel:?}: no entry point");
    }
}

#[test]
fn known_flags_are_exactly_those_the_variants_set_and_the_shaders_test() {
    let mut set: Vec<&str> = all_kernels().into_iter().flat_map(Kernel::flags).collect();
    set.sort_unstable();
    set.dedup();
    let mut known = FLAGS.to_vec();
    known.sort_unstable();
    assert_eq!(set, known, "flags set by the variants vs FLAGS");
    let files = all_kernels().into_iter().flat_map(Kernel::files);
    let tested: Vec<&str> = files
        .flat_map(|(_, src)| src.lines())
        .filter_map(|l| l.trim().strip_prefix("//#if "))
        .map(str::trim)
        .collect();
    for flag in FLAGS {
        assert!(tested.contains(&flag), "no shader tests `//#if {flag}`");
    }
}

/// One field of a uniform record, or one run of padding fields (names starting with `_`).
#[derive(Debug, Clone, PartialEq)]
struct Field {
    name: String,
    offset: usize,
    size: usize,
    /// `u32`, `i32` or `f32` (of the scalars it holds); `pad` for padding.
    scalar: &'static str,
}

/// The layout of a uniform record on one side of the contract.
#[derive(Debug)]
struct Layout {
    name: String,
    size: usize,
    fields: Vec<Field>,
}

impl Layout {
    /// `fields` with each run of consecutive padding fields (`_pad: [u32; 2]` on one side,
    /// `_pad0: u32, _pad1: u32` on the other) merged into one.
    fn merged(fields: Vec<Field>) -> Vec<Field> {
        let mut out: Vec<Field> = Vec::new();
        for f in fields {
            if f.name.starts_with('_') {
                if let Some(last) = out.last_mut().filter(|l| l.scalar == "pad") {
                    last.size = f.offset + f.size - last.offset;
                    continue;
                }
                out.push(Field {
                    name: "_pad".into(),
                    scalar: "pad",
                    ..f
                });
            } else {
                out.push(f);
            }
        }
        out
    }
}

/// The WGSL scalar type a Rust field of a uniform record holds.
trait WgslScalar {
    const NAME: &'static str;
}
impl WgslScalar for u32 {
    const NAME: &'static str = "u32";
}
impl WgslScalar for i32 {
    const NAME: &'static str = "i32";
}
impl WgslScalar for f32 {
    const NAME: &'static str = "f32";
}
impl<T: WgslScalar, const N: usize> WgslScalar for [T; N] {
    const NAME: &'static str = T::NAME;
}

fn scalar_of<T: WgslScalar>(_: &T) -> &'static str {
    T::NAME
}

/// The layout of a Rust uniform record. Every field must be listed: the destructuring `let`
/// does not compile otherwise.
macro_rules! rust_layout {
    ($t:ident { $($f:ident),* $(,)? }) => {{
        let value: $t = Zeroable::zeroed();
        let $t { $($f: _),* } = value;
        Layout {
            name: stringify!($t).to_string(),
            size: std::mem::size_of::<$t>(),
            fields: Layout::merged(vec![$(Field {
                name: stringify!($f).to_string(),
                offset: std::mem::offset_of!($t, $f),
                size: std::mem::size_of_val(&value.$f),
                scalar: scalar_of(&value.$f),
            }),*]),
        }
    }};
}

/// The Rust record the host writes to binding 0 of `kernel`.
fn rust_uniform(kernel: Kernel) -> Layout {
    match kernel {
        Kernel::Quantize => rust_layout!(QuantizeParams {
            item_begin,
            item_count,
            plane,
            plane_words,
            x_base,
            y_base,
            inv_scale,
            zp,
            qmin,
            qmax,
            nan_q,
            _pad,
            thresholds,
        }),
        Kernel::Dequantize => rust_layout!(DequantizeParams {
            item_begin,
            item_count,
            plane,
            plane_words,
            q_base,
            y_base,
            _pad,
            values,
        }),
        Kernel::Requantize => rust_layout!(RequantizeParams {
            item_begin,
            item_count,
            len,
            plane,
            channels,
            acc_base,
            epi_base,
            y_base,
            out_zp,
            out_lo,
            out_hi,
            _pad,
        }),
        Kernel::ConvPack { .. } => rust_layout!(ConvPackParams {
            item_begin,
            item_count,
            n_interior,
            h,
            w,
            plane_words,
            padded_h,
            padded_w,
            pad_h,
            pad_w,
            c_in,
            c_in_per_group,
            groups,
            slots_per_group,
            quads_per_pixel,
            img_begin,
            x_base,
            x_tex_log2_width,
            q_base,
            quads_tex_log2_width,
            flip,
            pad_byte,
            row_begin,
            band_rows,
            pos_shift,
            pos_begin,
            pos_end,
            _pad,
        }),
        Kernel::ConvGemm(_) | Kernel::ConvGemmReduce { .. } => rust_layout!(ConvGemmParams {
            wg_begin,
            wg_count,
            plane_workgroups,
            pixel_tiles,
            channel_blocks,
            blocks_per_group,
            plane_out,
            w_out,
            c_out,
            c_out_per_group,
            kw,
            k_quads,
            quads_per_group,
            quads_per_pixel,
            padded_h,
            padded_w,
            stride_h,
            stride_w,
            step_kx,
            step_ky,
            n_begin,
            a_base,
            quads_tex_log2_width,
            w_base,
            w_tex_log2_width,
            etab_base,
            y_base,
            x_zero_point,
            k_padded,
            out_zp,
            out_lo,
            out_hi,
            etab_tex_log2_width,
            w_block_quads,
            w_first,
            w_tap_skip,
            k_pass,
            p_base,
            group_base,
            k_slices,
            slice_quads,
            slice_words,
            _pad,
        }),
        Kernel::ConvDw { .. } => rust_layout!(ConvDwParams {
            wg_begin,
            wg_count,
            plane_workgroups,
            pixel_tiles,
            channel_blocks,
            plane_out,
            w_out,
            c_out,
            channel_multiplier,
            kw,
            taps,
            quads_per_pixel,
            padded_h,
            padded_w,
            stride_h,
            stride_w,
            step_x,
            step_y,
            n_begin,
            a_base,
            quads_tex_log2_width,
            w_base,
            w_tex_log2_width,
            etab_base,
            y_base,
            x_zero_point,
            out_zp,
            out_lo,
            out_hi,
            etab_tex_log2_width,
            block_base,
            quad_base,
            c_end,
            _pad,
        }),
        Kernel::ConvDwDirect { .. } => rust_layout!(ConvDwDirectParams {
            n_begin,
            pixel_tiles,
            plane_out,
            w_out,
            c_out,
            channel_multiplier,
            c_in,
            h,
            w,
            plane_words,
            stride_h,
            dilation_h,
            dilation_w,
            pad_h,
            pad_w,
            x_base,
            w_base,
            etab_base,
            y_base,
            x_zero_point,
            w_out_rcp,
            m_rcp,
            x_tex_log2_width,
            w_tex_log2_width,
            etab_tex_log2_width,
            row_segments,
            segments_rcp,
            out_zero_point,
            plane_invocations,
            plane_invocations_rcp,
            _pad0,
            _pad1,
        }),
        Kernel::SoftFloatTest => rust_layout!(TestParams {
            item_begin,
            item_count,
            _pad,
        }),
        Kernel::GraphLut => rust_layout!(GraphLutParams {
            total,
            out_block,
            n_inputs,
            _pad,
        }),
        Kernel::GraphAdd => rust_layout!(GraphAddParams { total, split, _pad }),
        Kernel::ConvF32Pack { .. } | Kernel::ConvF32Gemm { .. } | Kernel::ConvF32Dw { .. } => {
            rust_layout!(ConvF32Params {
                items,
                c_in,
                h_in,
                w_in,
                c_out,
                h_out,
                w_out,
                kh,
                kw,
                stride_h,
                stride_w,
                pad_h,
                pad_w,
                dil_h,
                dil_w,
                c_in_per_group,
                c_out_per_group,
                quads_per_group,
                quads_per_pixel,
                padded_h,
                padded_w,
                blocks_per_group,
                pixel_tiles,
                a_log2_width,
                w_log2_width,
                x_log2_width,
                col_tiles,
                col_tiles_rcp,
            })
        }
        Kernel::Peak { .. } => rust_layout!(PeakParams {
            iters,
            seed,
            _pad0,
            _pad1,
        }),
        Kernel::GraphPool => rust_layout!(GraphPoolParams {
            total,
            h,
            w,
            ho,
            wo,
            mode,
            signed_bytes,
            clamp_taps,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            tap_zp,
            float_add,
            add_f32,
            post_add,
            out_min,
            out_max,
            scale_x,
            scale_y,
        }),
    }
}

/// The scalar type a WGSL type is made of (`u32` for `array<vec4<u32>, 64>`).
fn wgsl_scalar(module: &naga::Module, ty: naga::Handle<naga::Type>) -> &'static str {
    use naga::{ScalarKind, TypeInner};
    let scalar = match module.types[ty].inner {
        TypeInner::Scalar(s) | TypeInner::Vector { scalar: s, .. } => s,
        TypeInner::Matrix { scalar: s, .. } => s,
        TypeInner::Array { base, .. } => return wgsl_scalar(module, base),
        _ => return "other",
    };
    match (scalar.kind, scalar.width) {
        (ScalarKind::Uint, 4) => "u32",
        (ScalarKind::Sint, 4) => "i32",
        (ScalarKind::Float, 4) => "f32",
        _ => "other",
    }
}

/// `kernel`'s WGSL source parsed by naga (a parse error panics, naming the kernel and the line).
fn parse_kernel(kernel: Kernel) -> naga::Module {
    let source = kernel.source().unwrap();
    naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{kernel:?}: {}", e.emit_to_string(&source)))
}

/// The layout of the struct `kernel`'s WGSL source binds at `@group(0) @binding(0)` as
/// `var<uniform>`, by naga's reflection.
fn wgsl_uniform(kernel: Kernel) -> Layout {
    let module = parse_kernel(kernel);
    let binding0 = naga::ResourceBinding {
        group: 0,
        binding: 0,
    };
    let uniforms: Vec<_> = module
        .global_variables
        .iter()
        .map(|(_, g)| g)
        .filter(|g| g.space == naga::AddressSpace::Uniform)
        .collect();
    assert!(
        uniforms.len() == 1 && uniforms[0].binding == Some(binding0),
        "{kernel:?}: expected one var<uniform>, at group 0 binding 0: {uniforms:?}"
    );
    let ty = &module.types[uniforms[0].ty];
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("{kernel:?}: the uniform is not a struct: {ty:?}");
    };
    let fields = members
        .iter()
        .map(|m| Field {
            name: m.name.clone().unwrap_or_default(),
            offset: m.offset as usize,
            size: module.types[m.ty].inner.size(module.to_ctx()) as usize,
            scalar: wgsl_scalar(&module, m.ty),
        })
        .collect();
    Layout {
        name: ty.name.clone().unwrap_or_default(),
        size: *span as usize,
        fields: Layout::merged(fields),
    }
}

/// What differs between the Rust and the WGSL layout of one record, as a printable report
/// (empty when they agree). Fields are compared by position (offset, size, scalar type), and
/// a name both sides have must be at the same offset on both.
fn layout_diff(rust: &Layout, wgsl: &Layout) -> String {
    let mut problems = Vec::new();
    if rust.size != wgsl.size {
        problems.push(format!(
            "size: Rust {} bytes, WGSL {} bytes",
            rust.size, wgsl.size
        ));
    }
    let row = |f: Option<&Field>| match f {
        Some(f) => format!(
            "{:<12} @{:<5} {:>5}B {}",
            f.name, f.offset, f.size, f.scalar
        ),
        None => "-".into(),
    };
    let mut table = Vec::new();
    for i in 0..rust.fields.len().max(wgsl.fields.len()) {
        let (r, w) = (rust.fields.get(i), wgsl.fields.get(i));
        let differs = match (r, w) {
            (Some(r), Some(w)) => r.offset != w.offset || r.size != w.size || r.scalar != w.scalar,
            _ => true,
        };
        if differs {
            problems.push(format!("field {i}: Rust {} vs WGSL {}", row(r), row(w)));
        }
        let mark = if differs { "  <-- differs" } else { "" };
        table.push(format!("  {i:>3}  {:<34} | {}{mark}", row(r), row(w)));
    }
    for r in rust.fields.iter().filter(|f| f.scalar != "pad") {
        if let Some(w) = wgsl.fields.iter().find(|w| w.name == r.name) {
            if w.offset != r.offset {
                problems.push(format!(
                    "'{}' is at offset {} in Rust but {} in WGSL",
                    r.name, r.offset, w.offset
                ));
            }
        }
    }
    if problems.is_empty() {
        return String::new();
    }
    format!(
        "{} (Rust) vs {} (WGSL):\n  {}\n       {:<34} | WGSL\n{}",
        rust.name,
        wgsl.name,
        problems.join("\n  "),
        "Rust",
        table.join("\n")
    )
}

#[test]
fn every_uniform_record_matches_the_wgsl_struct_at_binding_0() {
    // Each distinct difference once, with the variants that show it.
    let mut failures: Vec<(String, Vec<Kernel>)> = Vec::new();
    for kernel in all_kernels() {
        assert_eq!(kernel.bindings()[0], Binding::Uniform, "{kernel:?}");
        let diff = layout_diff(&rust_uniform(kernel), &wgsl_uniform(kernel));
        if diff.is_empty() {
            continue;
        }
        match failures.iter_mut().find(|(d, _)| *d == diff) {
            Some((_, kernels)) => kernels.push(kernel),
            None => failures.push((diff, vec![kernel])),
        }
    }
    let report: Vec<String> = failures
        .iter()
        .map(|(diff, kernels)| format!("{kernels:?}:\n{diff}"))
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n\n"));
}

#[test]
fn layout_diff_reports_a_moved_field_and_a_size_change() {
    let field = |name: &str, offset: usize| Field {
        name: name.into(),
        offset,
        size: 4,
        scalar: "u32",
    };
    let rust = Layout {
        name: "R".into(),
        size: 16,
        fields: vec![field("a", 0), field("b", 4), field("c", 8), field("d", 12)],
    };
    let same = Layout {
        name: "W".into(),
        size: 16,
        fields: rust.fields.clone(),
    };
    assert_eq!(layout_diff(&rust, &same), "");
    // Same offsets and sizes by position, but two fields swapped: only the names reveal it.
    let swapped = Layout {
        name: "W".into(),
        size: 16,
        fields: vec![field("a", 0), field("c", 4), field("b", 8), field("d", 12)],
    };
    let diff = layout_diff(&rust, &swapped);
    assert!(
        diff.contains("'b' is at offset 4 in Rust but 8 in WGSL"),
        "{diff}"
    );
    let longer = Layout {
        name: "W".into(),
        size: 32,
        fields: vec![field("a", 0), field("b", 4), field("c", 16), field("d", 20)],
    };
    let diff = layout_diff(&rust, &longer);
    assert!(
        diff.contains("size: Rust 16 bytes, WGSL 32 bytes"),
        "{diff}"
    );
    assert!(diff.contains("field 2:"), "{diff}");
}

/// The workgroup variables of the kernels, by kernel label, each checked by reading its
/// kernel to be written before any invocation reads it (pipelines compile without wgpu's
/// zero-initialization, see `compile_pipeline`):
/// * `conv2d_gemm.wgsl` (SHARED), `wtile`: each chunk's first `qn * 8` vec4s are written
///   between two barriers, and the quads read (`q % TKQ < qn`) lie in them;
/// * `conv2d_gemm_tiled.wgsl`: `pbase` (all `TP * 4` entries written, then a barrier); `ta`
///   and `tb` (every (chunk quad, pixel) and (chunk quad, channel) slot written between the
///   chunk's barriers, WG being a multiple of TKQ; the pads, `ta`'s fifth and `tb`'s ninth
///   vec4 of each group, are never read).
const AUDITED_WORKGROUP_VARIABLES: &[(&str, &str)] = &[
    ("squint conv2d_gemm", "wtile"),
    ("squint conv2d_gemm", "ta"),
    ("squint conv2d_gemm", "tb"),
    ("squint conv2d_gemm", "pbase"),
];

#[test]
fn workgroup_variables_are_only_those_audited_for_write_before_read() {
    let mut seen: std::collections::BTreeSet<&(&str, &str)> = Default::default();
    for kernel in all_kernels() {
        let module = parse_kernel(kernel);
        for (_, g) in module.global_variables.iter() {
            if g.space != naga::AddressSpace::WorkGroup {
                continue;
            }
            let name = g.name.clone().unwrap_or_default();
            let key = AUDITED_WORKGROUP_VARIABLES
                .iter()
                .find(|&&(label, var)| label == kernel.label() && var == name);
            assert!(
                key.is_some(),
                "{kernel:?} declares the workgroup variable {:?}: pipelines compile without \
                 zero-initializing workgroup memory, so check that every invocation writes it \
                 before any reads it, then add it to AUDITED_WORKGROUP_VARIABLES",
                name
            );
            seen.extend(key);
        }
    }
    // The list names no variable that no kernel has any more.
    for key in AUDITED_WORKGROUP_VARIABLES {
        assert!(seen.contains(key), "{key:?} is in no kernel");
    }
}

/// Whether statement `s` of function `f` stores into the global variable `g`.
fn stores_into(
    f: &naga::Function,
    s: &naga::Statement,
    g: naga::Handle<naga::GlobalVariable>,
) -> bool {
    matches!(s, naga::Statement::Store { pointer, .. }
        if matches!(f.expressions[*pointer], naga::Expression::GlobalVariable(h) if h == g))
}

/// Whether function `f` stores into the global variable `g` at its top level.
fn stores_global(f: &naga::Function, g: naga::Handle<naga::GlobalVariable>) -> bool {
    f.body.iter().any(|s| stores_into(f, s, g))
}

#[test]
fn private_copies_of_uniforms_are_filled_before_the_entry_points_first_branch_or_loop() {
    // Kernels copy the uniforms their loops read into private variables (lavapipe compiled a
    // uniform read inside a loop as a per-lane gather in every iteration). A copy read before
    // it is filled holds zeros, so each must be filled before the entry point's first branch
    // or loop: by a store, or by a call of a function that stores it (`read_load_uniforms`).
    let mut privates = 0;
    for kernel in all_kernels() {
        let module = parse_kernel(kernel);
        let entry = &module.entry_points[0].function;
        let prefix: Vec<&naga::Statement> = entry
            .body
            .iter()
            .take_while(|s| {
                matches!(
                    s,
                    naga::Statement::Emit(_)
                        | naga::Statement::Store { .. }
                        | naga::Statement::Call { .. }
                )
            })
            .collect();
        for (h, g) in module.global_variables.iter() {
            if g.space != naga::AddressSpace::Private {
                continue;
            }
            privates += 1;
            let filled = prefix.iter().any(|s| match s {
                naga::Statement::Call { function, .. } => {
                    stores_global(&module.functions[*function], h)
                }
                _ => stores_into(entry, s, h),
            });
            assert!(
                filled,
                "{kernel:?}: the private variable {:?} is not filled before the entry point's \
                 first branch or loop",
                g.name
            );
        }
    }
    // The kernels that copy uniforms (the conv kernels) are among the variants.
    assert!(privates > 0);
}

/// The uniform `e` (an expression of `f`) loads, when it loads one at a constant place: a
/// member or a constant-index element of a `var<uniform>` (a table read at a per-invocation
/// index is a gather on every adapter, wherever it is read).
fn uniform_loaded(
    module: &naga::Module,
    f: &naga::Function,
    e: naga::Handle<naga::Expression>,
) -> Option<String> {
    let naga::Expression::Load { pointer } = f.expressions[e] else {
        return None;
    };
    let (mut p, mut member) = (pointer, None);
    loop {
        match f.expressions[p] {
            naga::Expression::AccessIndex { base, index } => {
                member = Some(index);
                p = base;
            }
            naga::Expression::Access { base, index } => {
                if !matches!(
                    f.expressions[index],
                    naga::Expression::Literal(_) | naga::Expression::Constant(_)
                ) {
                    return None;
                }
                p = base;
            }
            naga::Expression::GlobalVariable(g) => {
                let var = &module.global_variables[g];
                if var.space != naga::AddressSpace::Uniform {
                    return None;
                }
                let field = match (&module.types[var.ty].inner, member) {
                    (naga::TypeInner::Struct { members, .. }, Some(i)) => {
                        members[i as usize].name.clone().unwrap_or_default()
                    }
                    _ => String::new(),
                };
                return Some(format!("{}.{field}", var.name.clone().unwrap_or_default()));
            }
            _ => return None,
        }
    }
}

/// The uniform reads inside loops of `block` (of function `f`; `in_loop` whether the block
/// lies in one), as descriptions; `reads` tells which functions read a uniform at a constant
/// place, themselves or through their calls.
fn uniform_reads_in_loops(
    module: &naga::Module,
    f: &naga::Function,
    block: &naga::Block,
    in_loop: bool,
    reads: &[bool],
    found: &mut Vec<String>,
) {
    for s in block.iter() {
        match s {
            naga::Statement::Emit(range) if in_loop => {
                let name = f.name.clone().unwrap_or_default();
                for e in range.clone() {
                    if let Some(field) = uniform_loaded(module, f, e) {
                        found.push(format!("`{field}` in `{name}`"));
                    }
                }
            }
            naga::Statement::Call { function, .. } if in_loop && reads[function.index()] => {
                let callee = module.functions[*function].name.clone().unwrap_or_default();
                let name = f.name.clone().unwrap_or_default();
                found.push(format!(
                    "a call of `{callee}` (which reads uniforms) in `{name}`"
                ));
            }
            naga::Statement::Block(b) => {
                uniform_reads_in_loops(module, f, b, in_loop, reads, found)
            }
            naga::Statement::If { accept, reject, .. } => {
                uniform_reads_in_loops(module, f, accept, in_loop, reads, found);
                uniform_reads_in_loops(module, f, reject, in_loop, reads, found);
            }
            naga::Statement::Switch { cases, .. } => {
                for c in cases {
                    uniform_reads_in_loops(module, f, &c.body, in_loop, reads, found);
                }
            }
            naga::Statement::Loop {
                body, continuing, ..
            } => {
                uniform_reads_in_loops(module, f, body, true, reads, found);
                uniform_reads_in_loops(module, f, continuing, true, reads, found);
            }
            _ => {}
        }
    }
}

/// Whether `block` of `f` emits a uniform load at a constant place or calls a function that
/// `reads`.
fn block_reads_uniform(module: &naga::Module, f: &naga::Function, reads: &[bool]) -> bool {
    let mut found = Vec::new();
    // Every statement as if in a loop: then each uniform read is reported.
    uniform_reads_in_loops(module, f, &f.body, true, reads, &mut found);
    !found.is_empty()
}

#[test]
fn no_kernel_reads_a_uniform_inside_a_loop() {
    // lavapipe (Mesa 22.3, LLVM 15) compiled a uniform read inside a loop as a per-lane gather
    // (8 bounds-checked scalar loads) in every iteration: a fifth of the depthwise kernel's
    // time. Kernels read such uniforms before their loops (`let`s, or private copies).
    let mut failures = Vec::new();
    for kernel in all_kernels() {
        let module = parse_kernel(kernel);
        // Which functions read uniforms, through their calls too (to a fixed point).
        let mut reads = vec![false; module.functions.len()];
        loop {
            let next: Vec<bool> = module
                .functions
                .iter()
                .map(|(_, f)| block_reads_uniform(&module, f, &reads))
                .collect();
            if next == reads {
                break;
            }
            reads = next;
        }
        let mut found = Vec::new();
        for (_, f) in module.functions.iter() {
            uniform_reads_in_loops(&module, f, &f.body, false, &reads, &mut found);
        }
        let entry = &module.entry_points[0].function;
        uniform_reads_in_loops(&module, entry, &entry.body, false, &reads, &mut found);
        found.sort();
        found.dedup();
        if !found.is_empty() {
            failures.push(format!("{}: {}", kernel.label(), found.join(", ")));
        }
    }
    failures.sort();
    failures.dedup();
    assert!(
        failures.is_empty(),
        "uniform reads inside loops:\n{}",
        failures.join("\n")
    );
}
