//! CPU tests of the conv geometry and of the work splitting ([`super::super::split::plan`]).

use proptest::prelude::*;

use super::*;
use crate::gpu::split::{plan, SplitLimits};
use crate::quant::QDtype;
use crate::shape::ConvParams;

/// The layout `pack_gemm_weights` (in `ops.rs`) gives a grouped conv.
fn gemm_layout(s: &ConvShape) -> ConvKernelLayout {
    let qg = s.c_in_per_group().div_ceil(16) as u64;
    ConvKernelLayout::Gemm {
        quads_per_group: qg,
        k_quads: (s.kh * s.kw) as u64 * qg,
        blocks_per_group: s.c_out_per_group().div_ceil(8) as u64,
    }
}

fn layout_for(s: &ConvShape, depthwise: bool) -> ConvKernelLayout {
    if depthwise {
        ConvKernelLayout::Depthwise
    } else {
        gemm_layout(s)
    }
}

#[allow(clippy::too_many_arguments)]
fn shape(
    n: usize,
    groups: usize,
    cig: usize,
    cog: usize,
    hw: [usize; 2],
    k: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
) -> Option<ConvShape> {
    let params = ConvParams {
        stride,
        padding: pad,
        dilation: dil,
        groups,
    };
    ConvShape::new(
        [n, groups * cig, hw[0], hw[1]],
        [groups * cog, cig, k[0], k[1]],
        params,
    )
    .ok()
}

/// A valid conv case: shape, whether it runs on the depthwise kernel, conv workgroup size.
///
/// Shapes are valid by construction (no filtering, so every generated case is exercised):
/// the input extent is the kernel's dilated extent minus the padding (at least 1) plus an
/// extra 0..10 rows or columns, so the output is never empty.
/// A conv case: shape, depthwise layout (else GEMM), pixel tiles and 8-channel blocks per
/// workgroup.
fn conv_case() -> impl Strategy<Value = (ConvShape, bool, u32, u32)> {
    (
        (1usize..4, 1usize..4, 1usize..40, 1usize..20),
        (1usize..4, 1usize..4),
        (1usize..3, 1usize..3),
        (0usize..3, 0usize..3),
        (1usize..3, 1usize..3),
        (0usize..10, 0usize..10),
        any::<bool>(),
        prop_oneof![Just(1u32), Just(2), Just(8), Just(64)],
        prop_oneof![Just(1u32), Just(2), Just(8)],
    )
        .prop_map(|((n, g, cig, cog), k, st, pad, dil, extra, dw, wg, bpw)| {
            let cig = if dw { 1 } else { cig };
            // The smallest input extent whose padded size holds the dilated kernel.
            let least = |k: usize, dil: usize, pad: usize| {
                (dil * (k - 1) + 1).saturating_sub(2 * pad).max(1)
            };
            let hw = [
                least(k.0, dil.0, pad.0) + extra.0,
                least(k.1, dil.1, pad.1) + extra.1,
            ];
            let s = shape(
                n,
                g,
                cig,
                cog,
                hw,
                [k.0, k.1],
                [st.0, st.1],
                [pad.0, pad.1],
                [dil.0, dil.1],
            )
            .expect("conv_case builds valid shapes");
            (s, dw, wg, bpw)
        })
}

/// Split limits to test with, sized relative to the largest binding window one work item
/// needs (so that a case neither always fails nor always fits in one dispatch).
#[derive(Clone, Copy, Debug)]
struct LimitsCase {
    align: u64,
    max_workgroups: u32,
    /// The binding limit is the one-item need times 2^slack_log.
    slack_log: u32,
}

impl LimitsCase {
    fn limits(&self, max_binding: u64) -> SplitLimits {
        SplitLimits {
            max_binding,
            max_workgroups: self.max_workgroups,
            align: self.align,
            max_buffer: 1 << 40,
        }
    }
}

fn limits_case() -> impl Strategy<Value = LimitsCase> {
    (prop_oneof![Just(32u64), Just(256)], 1u32..6, 0u32..8).prop_map(
        |(align, max_workgroups, slack_log)| LimitsCase {
            align,
            max_workgroups,
            slack_log,
        },
    )
}

/// The largest binding window (bytes, under `split`'s alignment) one item of `[0, total)`
/// needs.
fn largest_item_window(
    split: SplitLimits,
    total: u64,
    ranges: &dyn Fn(u64, u64) -> Vec<(u64, u64)>,
) -> u64 {
    (0..total)
        .flat_map(|i| ranges(i, i + 1))
        .map(|(lo, hi)| split.window(lo, hi).1)
        .max()
        .expect("at least one item")
}

/// Plans `[0, total)` under `case`: first with a binding limit just below the largest
/// one-item window (must fail with `DeviceLimit`), then with that window times
/// `2^slack_log` (must succeed). Returns the limits and chunks of the successful plan.
fn plan_both_ways(
    case: LimitsCase,
    total: u64,
    per_group: u64,
    ranges: &dyn Fn(u64, u64) -> Vec<(u64, u64)>,
) -> (SplitLimits, Vec<(u64, u64)>) {
    let need = largest_item_window(case.limits(u64::MAX), total, ranges);
    let tight = case.limits(need - 1);
    let r = plan(tight, total, per_group, "test", ranges);
    assert!(
        matches!(r, Err(crate::Error::DeviceLimit(_))),
        "a limit below one item's window {need} must fail, got {r:?}"
    );
    let split = case.limits(need << case.slack_log);
    let chunks = plan(split, total, per_group, "test", ranges)
        .expect("a limit that holds every single item must plan");
    assert_partition(&chunks, total);
    (split, chunks)
}

fn within(inner: (u64, u64), outer: (u64, u64)) -> bool {
    outer.0 <= inner.0 && inner.1 <= outer.1
}

/// Checks that `chunks` partition `[0, total)` in order.
fn assert_partition(chunks: &[(u64, u64)], total: u64) {
    let mut next = 0;
    for &(b, e) in chunks {
        assert_eq!(b, next, "chunks are contiguous");
        assert!(e > b, "chunks are not empty");
        next = e;
    }
    assert_eq!(next, total, "chunks cover every item");
}

#[test]
fn block_channels_partition_output_channels() {
    for (groups, cog) in [(1, 1), (1, 8), (1, 9), (3, 5), (2, 17), (4, 16), (2, 70)] {
        for bpw in [1, 2, 8] {
            let s = shape(1, groups, 3, cog, [5, 5], [3, 3], [1, 1], [1, 1], [1, 1]).unwrap();
            let geo = ConvGeometry::new(&s, gemm_layout(&s), 64, bpw);
            let (mut next, mut next_block) = (0, 0);
            for b in 0..geo.channel_blocks {
                let (lo, hi) = geo.block_channels(b);
                assert_eq!(lo, next);
                assert!(hi > lo && hi - lo <= CHANNELS_PER_BLOCK * bpw as u64);
                next = hi;
                // Its weight blocks: the 8-channel blocks of exactly these channels.
                let (wlo, whi) = geo.weight_blocks(b);
                assert_eq!(wlo, next_block);
                assert_eq!(whi - wlo, (hi - lo).div_ceil(CHANNELS_PER_BLOCK));
                next_block = whi;
            }
            assert_eq!(next, geo.c_out);
            assert_eq!(next_block, groups as u64 * (cog as u64).div_ceil(8));
        }
    }
}

#[test]
fn border_rows_count_padding_pixels() {
    let s = shape(1, 1, 4, 4, [3, 5], [3, 3], [1, 1], [2, 1], [1, 1]).unwrap();
    let geo = ConvGeometry::new(&s, gemm_layout(&s), 64, 1);
    let mut per_row = vec![0u64; geo.padded_h as usize];
    for i in 0..geo.border_pixels() {
        per_row[geo.border_row(i) as usize] += 1;
    }
    for (r, &count) in per_row.iter().enumerate() {
        let r = r as u64;
        let interior = r >= geo.pad_h && r < geo.pad_h + geo.h;
        let want = if interior {
            2 * geo.pad_w
        } else {
            geo.padded_w
        };
        assert_eq!(count, want, "row {r}");
    }
}

#[test]
fn plan_rejects_an_item_that_cannot_fit() {
    let split = SplitLimits {
        max_binding: 64,
        max_workgroups: 4,
        align: 32,
        max_buffer: 1 << 20,
    };
    let r = plan(split, 10, 1, "test", &|b, e| vec![(b * 128, e * 128)]);
    assert!(matches!(r, Err(crate::Error::DeviceLimit(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every (image, output channel, pixel tile) belongs to exactly one conv workgroup, and
    /// the workgroup's output, input-row and channel ranges contain what it computes.
    #[test]
    fn conv_workgroups_cover_every_output_once((s, dw, wg, bpw) in conv_case()) {
        let geo = ConvGeometry::new(&s, layout_for(&s, dw), wg, bpw);
        let n = s.n as u64;
        let mut seen = vec![0u8; (n * geo.c_out * geo.pixel_tiles) as usize];
        for i in 0..n * geo.workgroups_per_image() {
            let (img, block, g) = geo.decode_workgroup(i);
            let r = geo.conv_ranges(0, i, i + 1);
            let (c_lo, c_hi) = geo.block_channels(block);
            let tiles = g * geo.workgroup_size..((g + 1) * geo.workgroup_size).min(geo.pixel_tiles);
            for c in c_lo..c_hi {
                for t in tiles.clone() {
                    let word = (img * geo.c_out + c) * geo.pixel_tiles + t;
                    seen[word as usize] += 1;
                    prop_assert!(within((word * 4, word * 4 + 4), r[3]));
                }
                prop_assert!(within((c * TABLE_VEC4 * 16, (c + 1) * TABLE_VEC4 * 16), r[2]));
            }
            let (wlo, whi) = geo.weight_blocks(block);
            let wb = geo.weight_vec4s_per_block * 16;
            prop_assert!(within((wlo * wb, whi * wb), r[1]));
            for t in tiles {
                for px in t * 4..(t * 4 + 4).min(geo.plane_out) {
                    let (oy, ox) = (px / geo.w_out, px % geo.w_out);
                    for ky in 0..geo.kh {
                        let row = oy * geo.stride_h + ky * geo.dilation_h;
                        for kx in 0..geo.kw {
                            let col = ox * geo.stride_w + kx * geo.dilation_w;
                            let q = ((img * geo.padded_h + row) * geo.padded_w + col)
                                * geo.quads_per_pixel;
                            let need = (q * QUAD, (q + geo.quads_per_pixel) * QUAD);
                            prop_assert!(within(need, r[0]));
                        }
                    }
                }
            }
        }
        prop_assert!(seen.iter().all(|&k| k == 1));
    }

    /// The conv split partitions the workgroups of a chunk; every dispatch fits the
    /// workgroup-count and binding limits, and its ranges contain those of its workgroups.
    #[test]
    fn conv_split_fits_limits((s, dw, wg, bpw) in conv_case(), case in limits_case(), first in 0u64..3) {
        let geo = ConvGeometry::new(&s, layout_for(&s, dw), wg, bpw);
        let total = s.n as u64 * geo.workgroups_per_image();
        let ranges = |b: u64, e: u64| geo.conv_ranges(first, b, e);
        let (split, chunks) = plan_both_ways(case, total, 1, &ranges);
        let max_groups = split.max_workgroups as u64 * split.max_workgroups as u64;
        for &(b, e) in &chunks {
            prop_assert!(e - b <= max_groups);
            let r = ranges(b, e);
            for &(lo, hi) in &r {
                prop_assert!(split.window(lo, hi).1 <= split.max_binding);
            }
            for i in b..e {
                for (one, all) in ranges(i, i + 1).iter().zip(&r) {
                    prop_assert!(within(*one, *all));
                }
            }
        }
    }

    /// Repack items: interior and border items partition the chunk's padded pixels, each
    /// item's quads lie in its ranges, and a split respects the binding limit.
    #[test]
    fn repack_ranges_partition_and_fit((s, dw, wg, bpw) in conv_case(), case in limits_case(), first in 0u64..3) {
        let geo = ConvGeometry::new(&s, layout_for(&s, dw), wg, bpw);
        let images = s.n as u64;
        let qpp = geo.quads_per_pixel;
        let total = geo.repack_items(images);
        prop_assert_eq!(
            total - geo.interior_items(images),
            images * (geo.padded_h * geo.padded_w - geo.h * geo.w) * qpp
        );
        // Every padded pixel is written by the interior (through its input word) or the border.
        let mut hit = vec![0u8; (images * geo.padded_h * geo.padded_w) as usize];
        let n_int = geo.interior_items(images);
        for i in 0..total {
            let r = geo.repack_ranges(first, images, i, i + 1);
            if i < n_int {
                if !i.is_multiple_of(qpp) {
                    continue;
                }
                let per_img = geo.plane_words_in * qpp;
                let (img, word) = (i / per_img, (i % per_img) / qpp);
                prop_assert!(within(((first + img) * geo.c_in * geo.plane_words_in * 4, (first + img + 1) * geo.c_in * geo.plane_words_in * 4), r[0]));
                for px in word * 4..(word * 4 + 4).min(geo.h * geo.w) {
                    let (y, x) = (px / geo.w + geo.pad_h, px % geo.w + geo.pad_w);
                    let p = (img * geo.padded_h + y) * geo.padded_w + x;
                    hit[p as usize] += 1;
                    prop_assert!(within((p * qpp * QUAD, (p + 1) * qpp * QUAD), r[1]));
                }
            } else if (i - n_int).is_multiple_of(qpp) {
                let per_img = geo.border_pixels() * qpp;
                let j = i - n_int;
                let (img, b) = (j / per_img, (j % per_img) / qpp);
                let row = geo.border_row(b);
                let lo = ((img * geo.padded_h + row) * geo.padded_w) * qpp * QUAD;
                let hi = ((img * geo.padded_h + row + 1) * geo.padded_w) * qpp * QUAD;
                prop_assert!(within((lo, hi), r[1]));
            }
        }
        // Border pixels of an image: each padded row gets its padding pixels.
        for img in 0..images {
            for row in 0..geo.padded_h {
                let interior_row = row >= geo.pad_h && row < geo.pad_h + geo.h;
                let covered = (0..geo.padded_w)
                    .filter(|&x| hit[((img * geo.padded_h + row) * geo.padded_w + x) as usize] == 1)
                    .count() as u64;
                let want = if interior_row { geo.w } else { 0 };
                prop_assert_eq!(covered, want);
            }
        }
        prop_assert!(hit.iter().all(|&k| k <= 1));
        let ranges = |b: u64, e: u64| geo.repack_ranges(first, images, b, e);
        let (split, chunks) = plan_both_ways(case, total, 64, &ranges);
        for &(b, e) in &chunks {
            prop_assert!(e - b <= 64 * split.max_workgroups as u64 * split.max_workgroups as u64);
            let r = ranges(b, e);
            for &(lo, hi) in &r {
                prop_assert!(split.window(lo, hi).1 <= split.max_binding);
            }
            for i in b..e {
                let one = ranges(i, i + 1);
                // Every item's quads lie in the dispatch's quad window; an interior item's
                // input words in its input window (border items bind a dummy input word).
                prop_assert!(within(one[1], r[1]));
                if i < n_int {
                    prop_assert!(within(one[0], r[0]));
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Row bands of one image: they partition the output rows in order, each starts on a
    /// packed output word and fits the cap; the band's conv reads only the band's quads and
    /// writes the band's output words (all bands together: every word of the image once);
    /// the band's repack items write every quad of the band's rows exactly once, inside
    /// their ranges. In half the GEMM cases with several quads per group, all of this for a
    /// slice of K (a conv on some of each group's quads).
    #[test]
    fn row_bands_cover_the_image_and_fit((s, dw, wg, bpw) in conv_case(), frac in 0.0f64..1.0, frac2 in 0.0f64..1.0, slice in (0.0f64..2.0, 0.0f64..1.0)) {
        let whole = ConvGeometry::new(&s, layout_for(&s, dw), wg, bpw);
        let geo = match whole.layout {
            ConvKernelLayout::Gemm { quads_per_group: qg, .. } if qg > 1 && slice.0 < 1.0 => {
                let first = ((qg as f64 * slice.0) as u64).min(qg - 1);
                let quads = 1 + ((qg - first - 1) as f64 * slice.1) as u64;
                whole.slice((0, whole.groups), (first, quads))
            }
            _ => whole,
        };
        let h_out = geo.plane_out / geo.w_out;
        let row_quads = geo.padded_w * geo.quads_per_pixel;
        let min_rows = ((4 / gcd(geo.w_out, 4)).min(h_out) - 1) * geo.stride_h
            + (geo.kh - 1) * geo.dilation_h + 1;
        let min_quads = min_rows * row_quads;
        let cap = min_quads + ((geo.quads_per_image() - min_quads) as f64 * frac) as u64;
        let min_span = geo.output_span_bytes((4 / gcd(geo.w_out, 4)).min(h_out));
        let span_cap = min_span + ((geo.output_span_bytes(h_out) - min_span) as f64 * frac2) as u64;
        let bands = geo.row_bands(cap, span_cap).unwrap();
        prop_assert_eq!(bands[0].out_begin, 0);
        prop_assert_eq!(bands.last().unwrap().out_end, h_out);
        let mut words = vec![0u8; (geo.c_out * geo.pixel_tiles) as usize];
        for (i, b) in bands.iter().enumerate() {
            if i > 0 {
                prop_assert_eq!(b.out_begin, bands[i - 1].out_end);
            }
            prop_assert!(b.out_begin < b.out_end);
            prop_assert_eq!((b.out_begin * geo.w_out) % 4, 0);
            prop_assert!(b.rows * row_quads <= cap);
            prop_assert!(geo.output_span_bytes(b.out_end - b.out_begin) <= span_cap);
            let bg = geo.band(b);
            let band_bytes = bg.quads_per_image() * QUAD;
            // The band's conv writes its own output (image 0, `pixel_tiles` words per channel),
            // each workgroup within the span.
            for w in 0..bg.workgroups_per_image() {
                let r = bg.conv_ranges(0, w, w + 1);
                prop_assert!(within(r[0], (0, band_bytes)));
                prop_assert!(within(r[3], (0, geo.c_out * bg.pixel_tiles * 4)));
                prop_assert!(r[3].1 - r[3].0 <= span_cap);
            }
            // Copied into the output: each (channel, tile) of its rows, as `copy_band_outputs`.
            for c in 0..geo.c_out {
                for t in 0..bg.pixel_tiles {
                    let word = c * geo.pixel_tiles + geo.band_output_word(b) + t;
                    words[word as usize] += 1;
                }
            }
            // Repack: simulate the shader's stores, reading the band's input copy.
            let qpp = geo.quads_per_pixel;
            let input = geo.band_input(b);
            let copy_bytes = geo.c_in * input.words * 4;
            let mut hit = vec![0u8; (b.rows * geo.padded_w) as usize];
            let [interior, border] = geo.band_repack_items(b, &input);
            prop_assert_eq!(interior, (0, input.words * qpp));
            let store = |y: u64, x: u64, item: u64, hit: &mut Vec<u8>| -> Result<(), TestCaseError> {
                if y < b.row_begin || y >= b.row_begin + b.rows {
                    return Ok(());
                }
                let p = (y - b.row_begin) * geo.padded_w + x;
                hit[p as usize] += 1;
                let r = geo.band_repack_ranges(b, &input, item, item + 1);
                prop_assert!(within((p * qpp * QUAD, (p + 1) * qpp * QUAD), r[1]));
                prop_assert!(within(r[1], (0, band_bytes)));
                Ok(())
            };
            for item in (interior.0..interior.1).step_by(qpp as usize) {
                let word = item / qpp;
                let r = geo.band_repack_ranges(b, &input, item, item + qpp);
                prop_assert!(within(r[0], (0, copy_bytes)));
                for c in 0..geo.c_in {
                    let at = (c * input.words + word) * 4;
                    prop_assert!(within((at, at + 4), r[0]));
                }
                for byte in 0..4 {
                    let pos = input.first_byte + 4 * word + byte;
                    if pos >= input.pos_begin && pos < input.pos_end {
                        store(pos / geo.w + geo.pad_h, pos % geo.w + geo.pad_w, item, &mut hit)?;
                    }
                }
            }
            for item in (border.0..border.1).step_by(qpp as usize) {
                let (y, x) = border_pixel(&geo, (item - interior.1) / qpp);
                store(y, x, item, &mut hit)?;
            }
            // Any split of the band's items into dispatches covers each item's ranges.
            let all = geo.band_repack_ranges(b, &input, 0, border.1.max(1));
            prop_assert!(within(all[1], (0, band_bytes)));
            prop_assert!(hit.iter().all(|&k| k == 1), "band {:?}: {:?}", b, hit);
        }
        prop_assert!(words.iter().all(|&k| k == 1));
    }
}

/// Every stored byte, read in the kernel's domain (`byte ^ flip`, signed or unsigned) minus
/// the domain's zero point, is the stored value minus the input zero point; the pad byte is
/// the zero point itself.
#[test]
fn input_domain_preserves_differences_to_the_zero_point() {
    for dtype in [QDtype::QUInt8, QDtype::QInt8] {
        let range = dtype.full_range();
        let (lo, hi) = (range.min, range.max);
        for signed in [false, true] {
            let kernel_value = |b: u32| {
                if signed {
                    b as u8 as i8 as i32
                } else {
                    b as u8 as i32
                }
            };
            for zp in lo..=hi {
                let d = InputDomain::new(dtype, zp, signed);
                assert!(d.flip == 0 || d.flip == 0x80);
                assert_eq!(
                    kernel_value(d.pad_byte()),
                    d.zero_point,
                    "{dtype:?} {signed} {zp}"
                );
                for b in 0..=255u8 {
                    assert_eq!(
                        kernel_value(b as u32 ^ d.flip) - d.zero_point,
                        dtype.byte_to_int(b) - zp,
                        "{dtype:?} signed={signed} zp={zp} byte={b}"
                    );
                }
            }
        }
    }
}

#[test]
fn texture_rows_round_up_to_16() {
    assert_eq!(texture_rows(1, 64), 16);
    assert_eq!(texture_rows(64 * 16, 64), 16);
    assert_eq!(texture_rows(64 * 16 + 1, 64), 32);
    assert_eq!(texture_rows(0, 64), 0);
}

#[test]
fn input_texture_copies_cover_every_texel_once() {
    for width in [1u64, 4, 64] {
        for texels in 0..200u64 {
            let copies = input_texture_copies(texels, width);
            let mut covered = 0;
            for c in &copies {
                assert!(c.rows > 0 && c.width > 0 && c.width <= width);
                // Row-major: the copy starts at texel first_row * width of the buffer.
                assert_eq!(c.byte_offset, c.first_row * width * QUAD);
                assert_eq!(c.first_row * width, covered, "copies are contiguous");
                covered += c.width * c.rows;
            }
            assert_eq!(covered, texels, "width {width}, {texels} texels");
        }
    }
}

#[test]
fn image_chunks_partition_the_batch() {
    for images in 1..20u64 {
        for per_chunk in 1..25u64 {
            let chunks: Vec<_> = image_chunks(images, per_chunk).collect();
            let mut next = 0;
            for &(first, count) in &chunks {
                assert_eq!(first, next);
                assert!(count >= 1 && count <= per_chunk);
                next += count;
            }
            assert_eq!(next, images);
            assert_eq!(chunks.len() as u64, images.div_ceil(per_chunk));
        }
    }
}

#[test]
fn scratch_plan_prefers_textures_and_fits_every_chunk() {
    let limits = ScratchLimits {
        textures: true,
        tex_width: 64,
        tex_max_height: 32,
        max_buffer: 1 << 20,
        max_binding: 1 << 20,
    };
    // Fits the 64 x 32 texture: textures, as many images as fit.
    let p = ScratchPlan::new(limits, 100, 400, 10, 50);
    assert_eq!(
        p,
        ScratchPlan {
            use_textures: true,
            images_per_chunk: 20,
            bands: None,
        }
    );
    // Without textures: scratch-buffer chunks of at most max_buffer bytes.
    let no_tex = ScratchLimits {
        textures: false,
        ..limits
    };
    let p = ScratchPlan::new(no_tex, 100, 400, 10, 10_000);
    assert!(!p.use_textures);
    assert_eq!(p.images_per_chunk, (1 << 20) / QUAD / 100);
    // An input too large for the texture falls back to buffers.
    let p = ScratchPlan::new(limits, 100, 400, 64 * 33, 5);
    assert!(!p.use_textures);
    assert_eq!(p.images_per_chunk, 5);
    // One image larger than the largest buffer (and than the texture) runs by row bands of
    // at most the buffer (which is also the largest binding here).
    let banded = ScratchPlan {
        use_textures: false,
        images_per_chunk: 1,
        bands: Some(BandLimits {
            quads: (1 << 20) / QUAD,
            output_bytes: 1 << 20,
        }),
    };
    assert_eq!(
        ScratchPlan::new(limits, (1 << 20) / QUAD + 1, 400, 10, 3),
        banded
    );
    // So does one whose output windows exceed a binding, even with textures.
    assert_eq!(ScratchPlan::new(limits, 100, (1 << 20) + 4, 10, 3), banded);
    // A binding smaller than the buffer caps the bands' quads.
    let small_binding = ScratchLimits {
        max_binding: 1 << 16,
        ..no_tex
    };
    let p = ScratchPlan::new(small_binding, (1 << 16) / QUAD + 1, 400, 10, 3);
    assert_eq!(p.bands.map(|b| b.quads), Some((1 << 16) / QUAD));
    let p = ScratchPlan::new(small_binding, (1 << 16) / QUAD, 400, 10, 3);
    assert_eq!((p.bands, p.images_per_chunk), (None, 3));
}

/// The padded pixel (row, column) of the b-th border pixel, as `border_pixel` in
/// `conv_pack.wgsl`.
fn border_pixel(geo: &ConvGeometry, b: u64) -> (u64, u64) {
    let top = geo.pad_h * geo.padded_w;
    if b < top {
        return (b / geo.padded_w, b % geo.padded_w);
    }
    let side = 2 * geo.pad_w;
    let mid = geo.h * side;
    if b < top + mid {
        let (r, c) = ((b - top) / side, (b - top) % side);
        return (geo.pad_h + r, if c < geo.pad_w { c } else { geo.w + c });
    }
    let rest = b - top - mid;
    (geo.pad_h + geo.h + rest / geo.padded_w, rest % geo.padded_w)
}

#[test]
fn a_band_that_cannot_fit_is_a_device_limit_error() {
    let s = shape(1, 1, 3, 4, [40, 37], [3, 3], [1, 1], [1, 1], [1, 1]).unwrap();
    let geo = ConvGeometry::new(&s, gemm_layout(&s), 8, 1);
    // 4 output rows (37 is odd) read 6 padded rows of 39 quads, and write 4 planes of
    // 37 words.
    assert!(geo.row_bands(6 * 39, 4 * 37 * 4).is_ok());
    for r in [
        geo.row_bands(6 * 39 - 1, 1 << 20),
        geo.row_bands(1 << 20, 4 * 37 * 4 - 1),
    ] {
        assert!(
            matches!(&r, Err(crate::Error::DeviceLimit(m))
                if m.contains("234 repacked quads and output windows of 592 bytes")),
            "{r:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Walking the taps as the kernels do (GEMM: `quads_per_group` quads per tap, +1 each,
    /// then `next_tap`; depthwise: `next_tap` per tap; both `next_row` after `kw` taps), in
    /// wrapping u32, reaches the quad of every tap of an output pixel.
    #[test]
    fn tap_steps_walk_the_kernel_window((s, dw, wg, bpw) in conv_case()) {
        let geo = ConvGeometry::new(&s, layout_for(&s, dw), wg, bpw);
        let (next_tap, next_row) = geo.tap_steps();
        let per_tap = match geo.layout {
            ConvKernelLayout::Gemm { quads_per_group, .. } => quads_per_group,
            ConvKernelLayout::Depthwise => 0,
        };
        let qpp = geo.quads_per_pixel;
        // The pixel the last output pixel's window starts at, and a group offset.
        let last = geo.plane_out - 1;
        let (oy, ox) = (last / geo.w_out, last % geo.w_out);
        let start = ((oy * geo.stride_h) * geo.padded_w + ox * geo.stride_w) * qpp;
        let mut off = start as u32;
        for ky in 0..geo.kh {
            for kx in 0..geo.kw {
                let want = ((oy * geo.stride_h + ky * geo.dilation_h) * geo.padded_w
                    + ox * geo.stride_w + kx * geo.dilation_w) * qpp;
                prop_assert_eq!(off, want as u32);
                off = off.wrapping_add(per_tap as u32).wrapping_add(next_tap);
            }
            off = off.wrapping_add(next_row);
        }
        if let ConvKernelLayout::Gemm { k_quads, .. } = geo.layout {
            prop_assert_eq!(geo.padded_k(), 16 * k_quads);
            prop_assert_eq!(k_quads, geo.kh * geo.kw * per_tap);
        }
    }
}

#[test]
fn k_split_slices_cover_each_groups_quads_once_and_their_bands_fit() {
    // (groups, channels per group, input width, quads per band): one output row of these
    // 3x3 convs reads more quads than the limit, so K is split.
    for (groups, cig, w, quads) in [(1, 70, 300, 2560), (2, 40, 250, 2560), (1, 33, 64, 400)] {
        let s = shape(1, groups, cig, 6, [5, w], [3, 3], [1, 1], [1, 1], [1, 1]).unwrap();
        let geo = ConvGeometry::new(&s, gemm_layout(&s), 8, 1);
        let limits = BandLimits {
            quads,
            output_bytes: 1 << 20,
        };
        assert!(
            geo.row_bands(quads, 1 << 20).is_err(),
            "{s:?} needs no split"
        );
        let (slices, bands) = geo.k_split_bands(limits).unwrap();
        assert!(slices.len() > 1, "{s:?}");
        // The slices walk each group's quads in order; their channels are each input channel
        // exactly once, and their repacked input holds just their quads.
        let group_quads = cig.div_ceil(16) as u64;
        let (mut next, mut seen) = (0, vec![0; s.c_in]);
        for g in &slices {
            assert_eq!(g.k_slice.first, next);
            next += g.k_slice.quads;
            assert_eq!(g.quads_per_pixel, groups as u64 * g.k_slice.quads);
            assert_eq!(
                g.padded_k(),
                geo.padded_k(),
                "the correction is the whole K's"
            );
            for j in 0..g.c_in {
                seen[g.input_channel(j) as usize] += 1;
            }
        }
        assert_eq!(next, group_quads);
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
        // Every slice's bands fit the quads, the first (widest) tightest; the partial sums
        // keep the output windows within a quarter of the limit.
        for b in &bands {
            for g in &slices {
                assert!(g.band(b).quads_per_image() <= quads);
                assert!(g.output_span_bytes(b.out_end - b.out_begin) * 4 <= 1 << 20);
            }
        }
        // The slices are as wide as fits: one more quad per slice would not.
        let wider = geo.slice(
            (0, groups as u64),
            (0, (slices[0].k_slice.quads + 1).min(group_quads)),
        );
        assert!(slices[0].k_slice.quads == group_quads || wider.row_bands(quads, 1 << 18).is_err());
    }
    // Depthwise: slices of whole quads of channels, each with its own output channels (whole
    // channel blocks, in order) and weight blocks.
    for m in [1, 2, 3] {
        let s = shape(1, 40, 1, m, [5, 300], [3, 3], [1, 1], [1, 1], [1, 1]).unwrap();
        let geo = ConvGeometry::new(&s, ConvKernelLayout::Depthwise, 8, 1);
        let limits = BandLimits {
            quads: 2560,
            output_bytes: 1 << 20,
        };
        let (slices, _) = geo.k_split_bands(limits).unwrap();
        assert_eq!(slices.len(), 2, "m = {m}");
        let (mut next_out, mut next_in) = (0, 0);
        for g in &slices {
            let (lo, hi) = g.out_channels();
            assert_eq!((lo, lo % CHANNELS_PER_BLOCK), (next_out, 0));
            assert_eq!(hi - lo, g.c_in * m as u64);
            assert_eq!(g.block_channels(0).0, lo);
            assert_eq!(g.block_channels(g.channel_blocks - 1).1, hi);
            assert_eq!(g.weight_blocks(0).0, lo / CHANNELS_PER_BLOCK);
            for j in 0..g.c_in {
                assert_eq!(g.input_channel(j), next_in + j);
            }
            next_in += g.c_in;
            next_out = hi;
        }
        assert_eq!((next_in, next_out), (40, 40 * m as u64));
    }
    // Groups of one quad cannot be split: the row bands' error.
    let s = shape(1, 1, 2, 4, [3, 4000], [3, 3], [1, 1], [0, 0], [1, 1]).unwrap();
    let geo = ConvGeometry::new(&s, gemm_layout(&s), 8, 1);
    let limits = BandLimits {
        quads: 576,
        output_bytes: 1 << 20,
    };
    assert!(matches!(
        geo.k_split_bands(limits),
        Err(crate::Error::DeviceLimit(_))
    ));
}

#[test]
fn k_split_takes_whole_groups_first_then_quads_of_one_group() {
    let limits = BandLimits {
        quads: 2560,
        output_bytes: 1 << 20,
    };
    // (groups, channels per group, width, slices, groups per slice, quads per slice):
    // 8 groups of one quad: slices of 2 whole groups (1812 quads per row), no partial sums;
    // 4 groups of 3 quads: one group of 3 quads is too much, every group's single quad too,
    // so one group at a time by 2 quads and 1.
    for (groups, cig, w, n, ng, nq) in [(8, 8, 300, 4, 2, 1), (4, 40, 250, 8, 1, 2)] {
        let s = shape(1, groups, cig, 9, [5, w], [3, 3], [1, 1], [1, 1], [1, 1]).unwrap();
        let geo = ConvGeometry::new(&s, gemm_layout(&s), 8, 1);
        let (slices, _) = geo.k_split_bands(limits).unwrap();
        assert_eq!(slices.len(), n, "{s:?}");
        assert_eq!((slices[0].groups, slices[0].k_slice.quads), (ng, nq));
        let group_quads = cig.div_ceil(16) as u64;
        // Every input channel once; every output channel's block once per slice of its
        // group's quads, from the slice's first group on.
        let mut seen_in = vec![0; s.c_in];
        let mut seen_out = vec![0; s.c_out];
        for g in &slices {
            assert_eq!(g.sums_partially(), group_quads > nq);
            for j in 0..g.c_in {
                seen_in[g.input_channel(j) as usize] += 1;
            }
            for b in 0..g.channel_blocks {
                let (lo, hi) = g.block_channels(b);
                let (wlo, whi) = g.weight_blocks(b);
                assert_eq!((whi - wlo, lo / 9), (1, g.k_slice.group_first + b / 2));
                for o in lo..hi {
                    seen_out[o as usize] += 1;
                }
            }
        }
        assert!(seen_in.iter().all(|&k| k == 1), "{seen_in:?}");
        let per = group_quads.div_ceil(nq);
        assert!(seen_out.iter().all(|&k| k == per), "{seen_out:?}");
    }
}

#[test]
fn parallel_k_splits_few_workgroups_into_slices_of_whole_chunks_none_empty() {
    let slices = |s: &ConvShape, images: u64, forced: Option<u32>| {
        // The tiled kernel's default workgroup: 32 pixel tiles x 4 channel blocks, 8 quads.
        let geo = ConvGeometry::new(s, gemm_layout(s), 32, 4);
        geo.parallel_k(images, 8, forced)
            .map(|k| (k.slices, k.slice_quads))
    };
    // (iii) of `squint bench`: 16 workgroups of 144 quads (18 chunks) -> 9 slices of 2 chunks.
    let iii = shape(1, 1, 256, 256, [14, 14], [3, 3], [1, 1], [1, 1], [1, 1]).unwrap();
    assert_eq!(slices(&iii, 1, None), Some((9, 16)));
    // 8 images are 128 workgroups: 2 slices; 16 are enough workgroups, unsplit.
    assert_eq!(slices(&iii, 8, None), Some((2, 72)));
    assert_eq!(slices(&iii, 16, None), None);
    // Forced: one slice never splits; more slices than chunks is one chunk each; 4 slices of
    // 18 chunks are 5 chunks each, so only 4 slices (the last of 3 chunks).
    assert_eq!(slices(&iii, 16, Some(1)), None);
    assert_eq!(slices(&iii, 1, Some(u32::MAX)), Some((18, 8)));
    assert_eq!(slices(&iii, 1, Some(4)), Some((4, 40)));
    assert_eq!(slices(&iii, 1, Some(7)), Some((6, 24)));
    // 18 quads, 3 chunks: too few for 2 automatic slices of 2 chunks, unsplit unless forced.
    let short = shape(1, 1, 24, 64, [8, 8], [3, 3], [1, 1], [1, 1], [1, 1]).unwrap();
    assert_eq!(slices(&short, 1, None), None);
    assert_eq!(slices(&short, 1, Some(16)), Some((3, 8)));
    // Every split covers K exactly, no slice empty.
    for images in 1..4 {
        for forced in [None, Some(2), Some(3), Some(5), Some(u32::MAX)] {
            for s in [&iii, &short] {
                if let Some((n, q)) = slices(s, images, forced) {
                    let ConvKernelLayout::Gemm { k_quads, .. } = gemm_layout(s) else {
                        unreachable!()
                    };
                    assert!(n >= 2 && q % 8 == 0, "{s:?}");
                    assert!((n - 1) * q < k_quads && n * q >= k_quads, "{s:?} {n} {q}");
                }
            }
        }
    }
    // Depthwise convs never split.
    let dw = shape(1, 32, 1, 1, [8, 8], [3, 3], [1, 1], [1, 1], [1, 1]).unwrap();
    let geo = ConvGeometry::new(&dw, ConvKernelLayout::Depthwise, 8, 1);
    assert_eq!(geo.parallel_k(1, 8, Some(4)), None);
}

#[test]
fn plane_workgroups_launch_few_idle_lanes() {
    // A 56x56 plane at 8 pixels per invocation: two workgroups of 196 (one idle lane in each
    // last batch of 8), not seven of 64 (56 idle invocations).
    assert_eq!(plane_workgroup(392, 8, 256), 196);
    // A plane that fits a workgroup takes one.
    assert_eq!(plane_workgroup(40, 8, 256), 40);
    assert_eq!(plane_workgroup(3, 8, 256), 3);
    // The device limit and warps of 32.
    assert_eq!(plane_workgroup(392, 8, 64), 56);
    assert_eq!(plane_workgroup(392, 32, 256), 196);
    assert_eq!(plane_workgroup(1568, 8, 256), 224);
    for items in 1..2000u64 {
        for (lanes, limit) in [(8, 256), (32, 256), (8, 64), (32, 1024)] {
            let wg = u64::from(plane_workgroup(items, lanes, limit));
            assert!((1..=u64::from(limit)).contains(&wg));
            // Never more idle lanes than a batch per workgroup plus a workgroup.
            let launched = items.div_ceil(wg) * wg.div_ceil(lanes.into()) * u64::from(lanes);
            assert!(
                launched - items < wg + items.div_ceil(wg) * u64::from(lanes),
                "{items}"
            );
        }
    }
}
