//! The host/shader contract: the `//#if` preprocessor's rules, and every kernel variant's source
//! passing them.

use super::*;

/// Every kernel variant the host can build: each kind with every flag combination.
fn all_kernels() -> Vec<Kernel> {
    let mut all = vec![
        Kernel::Quantize,
        Kernel::Dequantize,
        Kernel::Requantize,
        Kernel::SoftFloatTest,
    ];
    for xtex in [false, true] {
        all.push(Kernel::ConvPack { xtex });
        all.push(Kernel::ConvDw { xtex });
        for packed in [false, true] {
            for b in [BStaging::Subgroup, BStaging::Shared, BStaging::Direct] {
                all.push(Kernel::ConvGemm(GemmVariant { xtex, b, packed }));
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
            | Kernel::ConvDw { .. }
            | Kernel::SoftFloatTest => {}
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
