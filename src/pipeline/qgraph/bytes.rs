//! Byte tables of the int8 ops whose every output byte is a function of the stored input
//! byte (relu, clip, concat) or byte pair (add):
//! the host evaluates the reference op on all 256 bytes and maps the input through that table,
//! exact by construction (the reference's validation errors included). Shared by
//! [`GpuBackend`](super::GpuBackend) (which gathers through the tables on the GPU) and
//! [`FastCpuBackend`](super::FastCpuBackend) (which maps on the host: one table read per byte,
//! or a vectorized clamp where the table is one, instead of the reference's dequantize and
//! requantize per element). The tables are kept per qparams.

use super::backend::QTensor;
use crate::cpu::reference::pool::MemoryFormat;
use crate::cpu::reference::{self as r, CpuCapability, QEngine};
use crate::error::{Error, Result};
use crate::quant::{QDtype, QParams, QRange};
use std::borrow::Cow;
use std::sync::Arc;

/// Every stored byte, in order.
fn all_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

/// The 256 output bytes of a reference op run on [`all_bytes`].
fn table(v: Vec<u8>) -> Result<[u8; 256]> {
    <[u8; 256]>::try_from(v.as_slice()).map_err(|_| {
        Error::InvalidParameter(format!(
            "a byte table needs 256 entries, the op gave {}",
            v.len()
        ))
    })
}

/// ReLU's byte table for input qparams `qp`: the reference on every byte.
pub(super) fn relu_table(qp: &QParams) -> Result<[u8; 256]> {
    table(r::activation::relu(&all_bytes(), qp)?)
}

/// The byte table of a clamp to `[min, max]` (`hardtanh` of `engine`) for input qparams `qp`:
/// the reference on every byte.
pub(super) fn clip_table(engine: QEngine, qp: &QParams, min: f32, max: f32) -> Result<[u8; 256]> {
    table(r::activation::hardtanh(engine, &all_bytes(), qp, min, max)?)
}

/// The range `[lo, hi]` of `dtype`'s ints when `t` maps every stored byte to its int clamped
/// to that range (bytes read as unsigned for quint8, as signed for qint8): the table of a
/// ReLU or a clip, checked on all 256 entries.
pub(super) fn table_as_clamp(t: &[u8; 256], dtype: QDtype) -> Option<QRange> {
    let int = |b: u8| match dtype {
        QDtype::QUInt8 => i32::from(b),
        QDtype::QInt8 => i32::from(b as i8),
    };
    let full = dtype.full_range();
    let (lo, hi) = (
        int(t[full.min as u8 as usize]),
        int(t[full.max as u8 as usize]),
    );
    let is_clamp = lo <= hi && (0..=255u8).all(|b| int(t[b as usize]) == int(b).clamp(lo, hi));
    is_clamp.then_some(QRange { min: lo, max: hi })
}

/// `x` mapped through `t` on the host. A table that is a clamp of the stored bytes, as
/// unsigned (quint8) or as signed (qint8) ints (relu and clip always are), maps as that clamp,
/// which vectorizes (`vpmaxub`/`vpminub`): the same bytes, checked against the table on all
/// 256 entries first.
pub(super) fn map_on_host(x: &[u8], t: &[u8; 256]) -> Vec<u8> {
    use crate::cpu::fast::{par_bytes, wide};
    if let Some(r) = table_as_clamp(t, QDtype::QUInt8) {
        let (lo, hi) = (r.min as u8, r.max as u8);
        return par_bytes(x.len(), |s, out| {
            wide(&x[s..], out, |x, out| {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v.max(lo).min(hi);
                }
            })
        });
    }
    if let Some(r) = table_as_clamp(t, QDtype::QInt8) {
        let (lo, hi) = (r.min as i8, r.max as i8);
        return par_bytes(x.len(), |s, out| {
            wide(&x[s..], out, |x, out| {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = (v as i8).max(lo).min(hi) as u8;
                }
            })
        });
    }
    par_bytes(x.len(), |s, out| {
        for (o, &v) in out.iter_mut().zip(&x[s..]) {
            *o = t[v as usize];
        }
    })
}

/// One run of a concat's output: `block` input bytes per outer index, each mapped through
/// `table`.
#[derive(Debug, Clone)]
pub(super) struct ConcatPart<'a> {
    /// The run's stored input bytes, `outer * block` of them (outer index slowest).
    pub data: Cow<'a, [u8]>,
    /// Bytes per outer index.
    pub block: usize,
    /// Output byte of each stored input byte.
    pub table: [u8; 256],
}

/// The byte tables of concat inputs, kept across calls: an input's tables depend only on its
/// qparams, the output's, the CPU capability and, for ATen's channels-last cat, its channel
/// count, while computing them costs 256 reference evaluations per table (per channel for
/// the channels-last cat), more than a small input's bytes.
#[derive(Debug, Default, Clone)]
pub(super) struct ConcatTables {
    cache: Vec<(RunKey, Arc<Vec<Run>>)>,
}

/// What an input's table runs depend on.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RunKey {
    qp: QParams,
    out: QParams,
    isa: CpuCapability,
    /// The channel count of a channels-last cat along channels (`None`: one table).
    channels_last: Option<usize>,
}

/// Channels `c0..c1` of an input (`c1` is `usize::MAX` for a whole input's one table),
/// mapped through `table`.
#[derive(Debug, Clone)]
struct Run {
    c0: usize,
    c1: usize,
    table: [u8; 256],
}

/// At most this many inputs' tables are kept (then the cache starts over).
const MAX_KEPT: usize = 256;

impl ConcatTables {
    /// The concat of `xs` along `axis` into qparams `out`, stored as `format` (the
    /// reference's `cat_in` with the CPU capability `isa`), as runs of table-mapped bytes: the
    /// output is, for each outer index in turn, every part's block in order. Returns the parts
    /// and the outer count. Validates as the reference does (dims, byte counts, dtypes,
    /// qparams).
    ///
    /// A contiguous concat maps each input through one table. ATen's channels-last cat along
    /// channels maps a channel through the vector or the scalar formula depending on its
    /// position in its input: each input is split into the runs of channels that share one
    /// table (the reference on every byte of every channel).
    pub(super) fn parts<'a>(
        &mut self,
        xs: &[&'a QTensor],
        axis: usize,
        out: &QParams,
        format: MemoryFormat,
        isa: CpuCapability,
    ) -> Result<(Vec<ConcatPart<'a>>, usize)> {
        // The reference's checks of dims, byte counts, dtypes and qparams.
        let views: Vec<r::cat::CatInput<'_>> = xs.iter().map(|x| x.cat_input()).collect();
        r::cat::cat_dims(&views, axis)?;
        let first = xs[0];
        let rank = first.dims.len();
        let outer: usize = first.dims[..axis].iter().product();
        let inner: usize = first.dims[axis + 1..].iter().product();
        let nhwc = format == MemoryFormat::ChannelsLast && axis == 1 && rank == 4;
        let mut parts = Vec::new();
        for x in xs {
            let c = x.dims[axis];
            let key = RunKey {
                qp: x.qp,
                out: *out,
                isa,
                channels_last: nhwc.then_some(c),
            };
            let runs = self.runs(key)?;
            for r in runs.iter() {
                let (c0, c1) = (r.c0, r.c1.min(c));
                let data: Cow<'a, [u8]> = if c0 == 0 && c1 == c {
                    Cow::Borrowed(&x.data[..])
                } else {
                    (0..outer)
                        .flat_map(|b| {
                            x.data[(b * c + c0) * inner..(b * c + c1) * inner]
                                .iter()
                                .copied()
                        })
                        .collect::<Vec<u8>>()
                        .into()
                };
                parts.push(ConcatPart {
                    data,
                    block: (c1 - c0) * inner,
                    table: r.table,
                });
            }
        }
        Ok((parts, outer))
    }

    /// The table runs of `key`, computed with the reference and kept.
    fn runs(&mut self, key: RunKey) -> Result<Arc<Vec<Run>>> {
        if let Some((_, r)) = self.cache.iter().find(|(k, _)| *k == key) {
            return Ok(r.clone());
        }
        let runs = Arc::new(match key.channels_last {
            None => {
                // The reference on every stored byte (validates the qparams and dtypes too).
                let all = all_bytes();
                let one = r::cat::CatInput {
                    data: &all,
                    dims: &[256],
                    qp: &key.qp,
                };
                let table = table(r::cat::cat(&[one], 0, &key.out)?.0)?;
                vec![Run {
                    c0: 0,
                    c1: usize::MAX,
                    table,
                }]
            }
            Some(c) => channels_last_runs(key, c)?,
        });
        if self.cache.len() >= MAX_KEPT {
            self.cache.clear();
        }
        self.cache.push((key, runs.clone()));
        Ok(runs)
    }
}

/// The runs of channels of one input of ATen's NHWC cat that share one byte table.
fn channels_last_runs(key: RunKey, c: usize) -> Result<Vec<Run>> {
    let probe: Vec<u8> = (0..c).flat_map(|_| 0..=255u8).collect();
    let dims = [1, c, 1, 256];
    let one = r::cat::CatInput {
        data: &probe,
        dims: &dims,
        qp: &key.qp,
    };
    let (t, _) = r::cat::cat_in(MemoryFormat::ChannelsLast, key.isa, &[one], 1, &key.out)?;
    let mut runs = Vec::new();
    let mut c0 = 0;
    while c0 < c {
        let tab = &t[c0 * 256..(c0 + 1) * 256];
        let mut c1 = c0 + 1;
        while c1 < c && &t[c1 * 256..(c1 + 1) * 256] == tab {
            c1 += 1;
        }
        runs.push(Run {
            c0,
            c1,
            table: table(tab.to_vec())?,
        });
        c0 = c1;
    }
    Ok(runs)
}

/// The concat of `parts` on the host: for each outer index, every part's block mapped
/// through its table (a copy where the table is the identity).
pub(super) fn concat_on_host(parts: &[ConcatPart<'_>], outer: usize) -> Vec<u8> {
    let identity: [u8; 256] = std::array::from_fn(|i| i as u8);
    let total: usize = parts.iter().map(|p| p.block).sum::<usize>() * outer;
    let mut y = Vec::with_capacity(total);
    for b in 0..outer {
        for p in parts {
            let src = &p.data[b * p.block..(b + 1) * p.block];
            if p.table == identity {
                y.extend_from_slice(src);
            } else {
                y.extend(src.iter().map(|&v| p.table[v as usize]));
            }
        }
    }
    y
}

/// What an add's byte-pair tables depend on.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AddKey {
    engine: QEngine,
    qps: [QParams; 3],
    relu: bool,
    isa: CpuCapability,
}

/// At most this many adds' tables (128 KiB each) are kept (then the cache starts over).
const MAX_ADD_KEPT: usize = 32;

/// An add as table lookups: element `i` of the output is
/// `tables[path * 65536 + a[i] * 256 + b[i]]`, with path 0 (the x86 engine's vector formula)
/// for elements whose memory position is below `split` and path 1 (its scalar formula)
/// after; the memory order is NHWC for a channels-last tensor of dims `nhwc`, NCHW otherwise.
#[derive(Debug, Clone)]
pub(super) struct AddPlan {
    /// The two 65536-byte tables (vector path, then scalar path; equal off the x86 engine).
    pub tables: Arc<Vec<u8>>,
    /// The first memory position of the scalar path (the element count when none is).
    pub split: usize,
    /// The dims of a channels-last tensor whose memory order decides the path.
    pub nhwc: Option<[usize; 4]>,
}

/// The byte-pair tables of adds, kept across calls: the output byte of an add is a function of
/// the two stored input bytes and of the formula path (ATen's vector or scalar loop, by
/// memory position), so the reference evaluated on all 65536 pairs, once per path, gives it
/// exactly. Building costs 131072 reference evaluations, about one add of that many elements.
#[derive(Debug, Default, Clone)]
pub(super) struct AddTables {
    kept: Vec<(AddKey, Arc<Vec<u8>>)>,
    /// Keys seen once without tables (see [`AddTables::plan`]).
    seen: Vec<AddKey>,
}

impl AddTables {
    /// The table plan of the add `a + b` (engine `engine`, CPU capability `isa`) into `out`,
    /// with the inputs stored as `formats`, after the reference's checks of the inputs. With
    /// `eager` the tables are built on first use; otherwise only when they pay: for an add of
    /// at least 131072 elements, or one whose qparams were seen before (a model run again),
    /// and `None` (run the reference) the first time.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan(
        &mut self,
        engine: QEngine,
        isa: CpuCapability,
        a: &QTensor,
        b: &QTensor,
        out: &QParams,
        relu: bool,
        formats: [MemoryFormat; 2],
        eager: bool,
    ) -> Result<Option<AddPlan>> {
        if a.dims != b.dims {
            return Err(Error::Shape(format!(
                "add: dims {:?} and {:?} differ",
                a.dims, b.dims
            )));
        }
        let n: usize = a.dims.iter().product();
        if a.data.len() != n || b.data.len() != n {
            return Err(Error::Shape(format!(
                "add: inputs have {} and {} bytes, dims {:?} need {n}",
                a.data.len(),
                b.data.len(),
                a.dims
            )));
        }
        let qps = [a.qp, b.qp, *out];
        self.plan_for(engine, isa, &a.dims, qps, relu, formats, eager)
    }

    /// [`AddTables::plan`] for inputs of `dims` (both) without their bytes; `qps` are the
    /// inputs' and the output's qparams.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan_for(
        &mut self,
        engine: QEngine,
        isa: CpuCapability,
        dims: &[usize],
        qps: [QParams; 3],
        relu: bool,
        formats: [MemoryFormat; 2],
        eager: bool,
    ) -> Result<Option<AddPlan>> {
        let n: usize = dims.iter().product();
        let [aq, bq, out] = qps;
        // Inputs of different layouts take the scalar path everywhere (x86 engine).
        let (format, isa) = match r::add::x86_add_path(dims, formats) {
            r::add::X86AddPath::InOrder(f) => (f, isa),
            r::add::X86AddPath::AllScalar => (MemoryFormat::Contiguous, CpuCapability::Default),
        };
        let lanes = match engine {
            QEngine::X86 => isa.qadd_lanes(),
            QEngine::Qnnpack => None,
        };
        let split = lanes.map_or(n, |l| n / (2 * l) * (2 * l));
        let key = AddKey {
            engine,
            qps,
            relu,
            isa,
        };
        let tables = match self.kept.iter().find(|(k, _)| *k == key) {
            Some((_, t)) => t.clone(),
            None => {
                if !eager && n < 1 << 17 && !self.seen.contains(&key) {
                    if self.seen.len() >= MAX_KEPT {
                        self.seen.clear();
                    }
                    self.seen.push(key);
                    return Ok(None);
                }
                let (pa, pb): (Vec<u8>, Vec<u8>) =
                    (0..1usize << 16).map(|p| ((p >> 8) as u8, p as u8)).unzip();
                let run = |isa| r::add::add(engine, isa, &pa, &aq, &pb, &bq, &out, relu);
                let tables = match lanes {
                    Some(lanes) => {
                        // 65536 is a multiple of 2 * lanes: every pair takes the vector path.
                        debug_assert_eq!((1 << 16) % (2 * lanes), 0);
                        let mut t = run(isa)?;
                        t.extend(run(CpuCapability::Default)?);
                        t
                    }
                    None => {
                        let t = run(isa)?;
                        [t.clone(), t].concat()
                    }
                };
                let t = Arc::new(tables);
                if self.kept.len() >= MAX_ADD_KEPT {
                    self.kept.clear();
                }
                self.kept.push((key, t.clone()));
                t
            }
        };
        let nhwc = match (format, <[usize; 4]>::try_from(dims)) {
            (MemoryFormat::ChannelsLast, Ok(d)) if split < n => Some(d),
            _ => None,
        };
        Ok(Some(AddPlan {
            tables,
            split,
            nhwc,
        }))
    }
}

/// The add of `plan` on the host (`a`, `b`: stored bytes in NCHW order).
pub(super) fn add_on_host(a: &[u8], b: &[u8], plan: &AddPlan) -> Vec<u8> {
    let t = &plan.tables[..];
    let pair = |i: usize| (a[i] as usize) << 8 | b[i] as usize;
    match plan.nhwc {
        None => crate::cpu::fast::par_bytes(a.len(), |s, out| {
            for (j, o) in out.iter_mut().enumerate() {
                let i = s + j;
                *o = t[usize::from(i >= plan.split) << 16 | pair(i)];
            }
        }),
        Some([n, c, h, w]) => {
            // NCHW element i = (bi · c + ci) · hw + p sits at NHWC position (bi · hw + p) · c + ci.
            let hw = h * w;
            let mut y = Vec::with_capacity(a.len());
            for bi in 0..n {
                for ci in 0..c {
                    for p in 0..hw {
                        let (i, pos) = ((bi * c + ci) * hw + p, (bi * hw + p) * c + ci);
                        y.push(t[usize::from(pos >= plan.split) << 16 | pair(i)]);
                    }
                }
            }
            y
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QDtype;

    /// Clamp tables (unsigned and signed, the fast path) and other tables (the lookup) map
    /// every byte as the table says.
    #[test]
    fn map_on_host_equals_the_table_lookup_for_clamps_and_other_tables() {
        let x: Vec<u8> = (0..=255u8)
            .chain((0..1000).map(|i| (i * 97 % 256) as u8))
            .collect();
        let mut tables: Vec<[u8; 256]> = Vec::new();
        for (lo, hi) in [(0u8, 255u8), (3, 200), (128, 128), (0, 0), (255, 255)] {
            tables.push(std::array::from_fn(|b| (b as u8).clamp(lo, hi)));
        }
        for (lo, hi) in [(-128i8, 127i8), (-5, 90), (0, 0), (-128, -100)] {
            tables.push(std::array::from_fn(|b| {
                ((b as u8 as i8).clamp(lo, hi)) as u8
            }));
        }
        // Not clamps: a shift, a reversal, and a clamp with one entry changed.
        tables.push(std::array::from_fn(|b| (b as u8).wrapping_add(1)));
        tables.push(std::array::from_fn(|b| 255 - b as u8));
        let mut t: [u8; 256] = std::array::from_fn(|b| (b as u8).clamp(10, 20));
        t[15] = 16;
        tables.push(t);
        // Large inputs on a pool's worker map in parallel chunks.
        let big: Vec<u8> = (0..200_003).map(|i| (i * 7 % 256) as u8).collect();
        for (i, t) in tables.iter().enumerate() {
            let want: Vec<u8> = x.iter().map(|&v| t[v as usize]).collect();
            assert_eq!(map_on_host(&x, t), want, "table {i}");
            let want: Vec<u8> = big.iter().map(|&v| t[v as usize]).collect();
            let got = crate::cpu::fast::on_pool(Some(2), || map_on_host(&big, t));
            assert_eq!(got, want, "table {i}, in parallel chunks");
        }
    }

    fn tensor(dims: &[usize], qp: QParams, seed: usize) -> QTensor {
        let n: usize = dims.iter().product();
        QTensor {
            data: (0..n).map(|i| ((i * 37 + seed * 11) % 256) as u8).collect(),
            dims: dims.to_vec(),
            qp,
        }
    }

    /// An add of 2^17 elements or more (tables built at once), gathered in parallel chunks on a
    /// pool's worker, equals the reference, on the x86 engine (its vector and scalar formula
    /// paths, by memory position) contiguous and channels-last, and on qnnpack's.
    #[test]
    fn adds_gathered_in_parallel_chunks_equal_the_reference() {
        let dims = [1, 9, 130, 130];
        let qp = |s, z| QParams::new(s, z, QDtype::QUInt8).unwrap();
        let (a, b) = (
            tensor(&dims, qp(0.05, 128), 1),
            tensor(&dims, qp(0.031, 3), 2),
        );
        let out = qp(0.07, 120);
        let cl = MemoryFormat::ChannelsLast;
        let cases = [
            (QEngine::X86, [MemoryFormat::Contiguous; 2], false),
            (QEngine::X86, [cl, cl], true),
            (QEngine::Qnnpack, [MemoryFormat::Contiguous; 2], true),
        ];
        for (engine, formats, relu) in cases {
            let isa = CpuCapability::Avx2;
            let mut tables = AddTables::default();
            let plan = tables
                .plan(engine, isa, &a, &b, &out, relu, formats, false)
                .unwrap()
                .expect("an add this large builds its tables at once");
            let got = crate::cpu::fast::on_pool(Some(2), || add_on_host(&a.data, &b.data, &plan));
            let want = r::add::add_in(
                formats, engine, isa, &dims, &a.data, &a.qp, &b.data, &b.qp, &out, relu,
            )
            .unwrap();
            assert_eq!(got, want, "{engine:?} {formats:?}");
        }
    }

    /// One `ConcatTables` across calls whose inputs share qparams but not channel counts or
    /// formats: a kept table must never serve another key (each call equals the reference).
    #[test]
    fn kept_concat_tables_serve_only_their_own_channel_count_format_and_capability() {
        let qps = [
            QParams::new(0.5, 3, QDtype::QUInt8).unwrap(),
            QParams::new(0.0371, 128, QDtype::QUInt8).unwrap(),
        ];
        let out = QParams::new(0.25, 7, QDtype::QUInt8).unwrap();
        let mut kept = ConcatTables::default();
        let calls: [(usize, MemoryFormat, CpuCapability); 6] = [
            (3, MemoryFormat::ChannelsLast, CpuCapability::Avx2),
            (20, MemoryFormat::ChannelsLast, CpuCapability::Avx2),
            (20, MemoryFormat::Contiguous, CpuCapability::Avx2),
            (20, MemoryFormat::ChannelsLast, CpuCapability::Default),
            (3, MemoryFormat::ChannelsLast, CpuCapability::Avx2),
            (9, MemoryFormat::ChannelsLast, CpuCapability::Avx512),
        ];
        for (i, (c, format, isa)) in calls.into_iter().enumerate() {
            let xs = [
                tensor(&[2, c, 3, 2], qps[0], i),
                tensor(&[2, 17, 3, 2], qps[1], i + 1),
            ];
            let refs: Vec<&QTensor> = xs.iter().collect();
            let (parts, outer) = kept.parts(&refs, 1, &out, format, isa).unwrap();
            let got = concat_on_host(&parts, outer);
            let inputs: Vec<r::cat::CatInput<'_>> = xs.iter().map(|x| x.cat_input()).collect();
            let (want, _) = r::cat::cat_in(format, isa, &inputs, 1, &out).unwrap();
            assert_eq!(got, want, "call {i}: {c} channels, {format:?}, {isa:?}");
        }
    }
}
