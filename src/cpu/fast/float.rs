//! The fast f32 conv: direct (implicit im2col over phase planes), blocked f32 GEMM with FMA,
//! rayon; on small planes the channels-in-lanes kernels of `nhwc` (the same FMAs in the same
//! order, so the same bits).

use super::int8::{segments, Geometry};
use super::{depthwise, par_for, thread_count, FastConvOptions, GemmLayout, Grain, Isa, SendPtr};
use crate::error::{Error, Result};
use crate::shape::ConvShape;

/// Float accumulator tile (up to 6 channels × 64 pixels).
type TileF = [[f32; 64]; 6];

/// Channels per tile (every path).
const NR: usize = 6;

/// Pixels per tile of an ISA path.
fn pixels_per_tile(isa: Isa) -> usize {
    match isa {
        Isa::Avx512Vnni => 64,
        _ => 16,
    }
}

/// Where the fused epilogue of a float GEMM tile stores (x86: `x86::TileRows`; the other
/// paths run the caller's epilogue).
#[cfg(target_arch = "x86_64")]
type Rows = super::x86::TileRows;
#[cfg(not(target_arch = "x86_64"))]
type Rows = ();

/// Runs one f32 GEMM tile (see `x86::gemm_f32_avx512`): the first `nr ≤ NR` channels of a
/// panel, into `out`, or on x86 with `rows` through the fused epilogue into the output
/// (`rows` is `None` on the other paths).
///
/// # Safety
/// `isa` must be available; `act` readable at `offs[t] + c·cs + [0, npx rounded up to a
/// vector)`, `w` for a whole panel; `rows` as `x86::gemm_f32_avx512` requires.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_tile(
    isa: Isa,
    act: &[f32],
    offs: &[usize],
    cs: usize,
    nc: usize,
    w: &[f32],
    nr: usize,
    npx: usize,
    out: &mut TileF,
    rows: Option<&Rows>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::x86::*;
        let (a, wp) = (act.as_ptr(), w.as_ptr());
        // The kernel `$f::<nr, $mv>` (nr from 1 to NR).
        macro_rules! by_nr {
            ($f:ident, $mv:literal) => {
                match nr {
                    1 => $f::<1, $mv>(a, offs, cs, nc, wp, NR, out, rows),
                    2 => $f::<2, $mv>(a, offs, cs, nc, wp, NR, out, rows),
                    3 => $f::<3, $mv>(a, offs, cs, nc, wp, NR, out, rows),
                    4 => $f::<4, $mv>(a, offs, cs, nc, wp, NR, out, rows),
                    5 => $f::<5, $mv>(a, offs, cs, nc, wp, NR, out, rows),
                    _ => $f::<NR, $mv>(a, offs, cs, nc, wp, NR, out, rows),
                }
            };
        }
        // SAFETY: the ISA and every read range are guaranteed by the caller.
        unsafe {
            match (isa, npx.div_ceil(16), npx.div_ceil(8)) {
                (Isa::Avx512Vnni, 1, _) => by_nr!(gemm_f32_avx512, 1),
                (Isa::Avx512Vnni, 2, _) => by_nr!(gemm_f32_avx512, 2),
                (Isa::Avx512Vnni, 3, _) => by_nr!(gemm_f32_avx512, 3),
                (Isa::Avx512Vnni, _, _) => by_nr!(gemm_f32_avx512, 4),
                (Isa::Avx2 | Isa::AvxVnni, _, 1) => by_nr!(gemm_f32_avx2, 1),
                (Isa::Avx2 | Isa::AvxVnni, _, _) => by_nr!(gemm_f32_avx2, 2),
                (Isa::NeonDot | Isa::Portable, _, _) => {
                    assert!(rows.is_none(), "the fused epilogue is x86's");
                    super::portable::gemm_f32(act, offs, cs, nc, w, NR, npx, out)
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = rows;
    #[cfg(target_arch = "aarch64")]
    if isa == Isa::NeonDot {
        use super::aarch64::gemm_f32_neon;
        let (a, wp) = (act.as_ptr(), w.as_ptr());
        // The kernel `gemm_f32_neon::<nr, $mv>` (nr from 1 to NR).
        macro_rules! by_nr {
            ($mv:literal) => {
                match nr {
                    1 => gemm_f32_neon::<1, $mv>(a, offs, cs, nc, wp, NR, out),
                    2 => gemm_f32_neon::<2, $mv>(a, offs, cs, nc, wp, NR, out),
                    3 => gemm_f32_neon::<3, $mv>(a, offs, cs, nc, wp, NR, out),
                    4 => gemm_f32_neon::<4, $mv>(a, offs, cs, nc, wp, NR, out),
                    5 => gemm_f32_neon::<5, $mv>(a, offs, cs, nc, wp, NR, out),
                    _ => gemm_f32_neon::<NR, $mv>(a, offs, cs, nc, wp, NR, out),
                }
            };
        }
        // SAFETY: NEON is part of every AArch64 target with `std`; every read range is
        // guaranteed by the caller (whole vectors of 4 pixels).
        unsafe {
            match npx.div_ceil(4) {
                1 => by_nr!(1),
                2 => by_nr!(2),
                3 => by_nr!(3),
                _ => by_nr!(4),
            }
        }
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (nr, isa); // one portable kernel
        super::portable::gemm_f32(act, offs, cs, nc, w, NR, npx, out);
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::Shape(format!(
            "{what} has {got} elements, the conv shape needs {want}"
        )));
    }
    Ok(())
}

/// [`super::conv2d_f32`] on a given ISA path (errors if this CPU cannot run it): every path
/// gives the same bits. Meant for tests and benchmarks. Packs the weights on every call; a
/// layer run more than once packs them once with [`PackedConvF32`].
pub fn conv2d_f32_with_isa(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    opts: &FastConvOptions,
    isa: Isa,
) -> Result<Vec<f32>> {
    s.validate()?;
    PackedConvF32::new(w, s.weight_dims(), s.params, isa)?.run(x, s.input_dims(), bias, opts)
}

/// A float conv layer with its weights packed once for the fast kernels (the float
/// counterpart of [`super::PackedConv2d`]): [`PackedConvF32::run`] gives the same bits as
/// [`super::conv2d_f32`] on every ISA path.
#[derive(Debug, Clone)]
pub struct PackedConvF32 {
    isa: Isa,
    w_dims: [usize; 4],
    params: crate::shape::ConvParams,
    /// GEMM panels `[group][tile][tap][c][NR]`, or (depthwise-like convs) the OIHW weights.
    packed: Vec<f32>,
    /// On the x86 paths with one group: the weights of the channels-in-lanes kernel
    /// (`nhwc::pack_f32`), packed on the first call that uses it.
    #[cfg(target_arch = "x86_64")]
    nhwc: Option<std::sync::OnceLock<super::Lines>>,
    /// Depthwise-like convs: the weights of the channels-in-lanes kernel
    /// (`depthwise::pack_lanes`), packed on the first call that uses them.
    dw_lanes: std::sync::OnceLock<Vec<f32>>,
    /// Which GEMM layout runs (tests force each; only the x86 paths have a choice).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    gemm_layout: GemmLayout,
}

impl PackedConvF32 {
    /// Packs OIHW float weights `w` of shape `w_dims` for a conv with `params`, on `isa`.
    pub fn new(
        w: &[f32],
        w_dims: [usize; 4],
        params: crate::shape::ConvParams,
        isa: Isa,
    ) -> Result<Self> {
        isa.check_available()?;
        params.validate()?;
        if w_dims.contains(&0) {
            return Err(Error::Shape(format!(
                "weight shape {w_dims:?} has a zero-sized dimension"
            )));
        }
        let [c_out, cig, kh, kw] = w_dims;
        let n = crate::shape::checked_numel(&w_dims)?;
        check_len("weight", w.len(), n)?;
        if c_out % params.groups != 0 {
            return Err(Error::Shape(format!(
                "{c_out} output channels do not split into {} groups",
                params.groups
            )));
        }
        if cig == 1 {
            return Ok(PackedConvF32 {
                isa,
                w_dims,
                params,
                packed: w.to_vec(),
                #[cfg(target_arch = "x86_64")]
                nhwc: None,
                dw_lanes: std::sync::OnceLock::new(),
                gemm_layout: GemmLayout::Auto,
            });
        }
        let (g, cog, taps) = (params.groups, c_out / params.groups, kh * kw);
        let ctiles = cog.div_ceil(NR);
        let panel_len = taps * cig * NR;
        let mut panels = vec![0f32; g * ctiles * panel_len];
        // Read the weights in order; each lands at [tile][tap][c][r] of its group's panels.
        for (o, wo) in w.chunks_exact(cig * taps).enumerate() {
            let (gi, oc) = (o / cog, o % cog);
            let panel = &mut panels[(gi * ctiles + oc / NR) * panel_len..][..panel_len];
            let r = oc % NR;
            for (c, wc) in wo.chunks_exact(taps).enumerate() {
                for (t, &v) in wc.iter().enumerate() {
                    panel[(t * cig + c) * NR + r] = v;
                }
            }
        }
        Ok(PackedConvF32 {
            isa,
            w_dims,
            params,
            packed: panels,
            #[cfg(target_arch = "x86_64")]
            nhwc: (isa.is_x86_simd() && g == 1).then(std::sync::OnceLock::new),
            dw_lanes: std::sync::OnceLock::new(),
            gemm_layout: GemmLayout::Auto,
        })
    }

    /// The same layer with its GEMM layout forced (see [`GemmLayout`]; tests).
    #[doc(hidden)]
    pub fn with_gemm_layout(mut self, layout: GemmLayout) -> Self {
        self.gemm_layout = layout;
        self
    }

    /// The ISA path.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// [`PackedConvF32::run`] with each output then clamped by `clamp` as it is stored
    /// (`y.max(lo).min(hi)`, [`F32Clamp::apply`]), while it is in cache: the same values as
    /// clamping the returned tensor, without another pass over it (a ReLU or ReLU6 after a
    /// conv of a float model).
    pub fn run_clamped(
        &self,
        x: &[f32],
        x_dims: [usize; 4],
        bias: Option<&[f32]>,
        clamp: F32Clamp,
        opts: &FastConvOptions,
    ) -> Result<Vec<f32>> {
        let s = ConvShape::new(x_dims, self.w_dims, self.params)?;
        crate::tensor::check_host_alloc(s.output_len(), 4, "the conv output")?;
        let mut out = vec![0f32; s.output_len()];
        self.run_into_clamped(x, x_dims, bias, Some(clamp), opts, &mut out)?;
        Ok(out)
    }

    /// The conv of input `x` (NCHW, dims `x_dims`) plus `bias` (one per output channel).
    pub fn run(
        &self,
        x: &[f32],
        x_dims: [usize; 4],
        bias: Option<&[f32]>,
        opts: &FastConvOptions,
    ) -> Result<Vec<f32>> {
        let s = ConvShape::new(x_dims, self.w_dims, self.params)?;
        crate::tensor::check_host_alloc(s.output_len(), 4, "the conv output")?;
        let mut out = vec![0f32; s.output_len()];
        self.run_into(x, x_dims, bias, opts, &mut out)?;
        Ok(out)
    }

    /// [`PackedConvF32::run`] into the caller's buffer `out` (NCHW, exactly the output's
    /// length; every value is overwritten): a layer run again and again reuses one buffer
    /// instead of allocating and zeroing its output per call.
    pub fn run_into(
        &self,
        x: &[f32],
        x_dims: [usize; 4],
        bias: Option<&[f32]>,
        opts: &FastConvOptions,
        out: &mut [f32],
    ) -> Result<()> {
        self.run_into_clamped(x, x_dims, bias, None, opts, out)
    }

    /// [`PackedConvF32::run_into`], each output clamped by `clamp` (if any) as it is stored
    /// (see [`PackedConvF32::run_clamped`]).
    pub fn run_into_clamped(
        &self,
        x: &[f32],
        x_dims: [usize; 4],
        bias: Option<&[f32]>,
        clamp: Option<F32Clamp>,
        opts: &FastConvOptions,
        out: &mut [f32],
    ) -> Result<()> {
        opts.validate()?;
        let s = &ConvShape::new(x_dims, self.w_dims, self.params)?;
        check_len("input", x.len(), s.input_len())?;
        if let Some(b) = bias {
            check_len("bias", b.len(), s.c_out)?;
        }
        check_len("the output buffer", out.len(), s.output_len())?;
        let isa = self.isa;
        let cig = s.c_in_per_group();
        if cig == 1 {
            let opts = opts.for_work(s.macs(), Grain::F32Depthwise);
            let lanes_w = &self.dw_lanes;
            depthwise::run_f32(
                isa,
                x,
                &self.packed,
                lanes_w,
                bias,
                clamp,
                s,
                opts.threads,
                out,
            );
            return Ok(());
        }
        let opts = &opts.for_work(s.macs(), Grain::F32Gemm);
        let (g, cog) = (s.params.groups, s.c_out_per_group());
        let taps = s.kh * s.kw;
        let px = pixels_per_tile(isa);
        let ctiles = cog.div_ceil(NR);
        let panel_len = taps * cig * NR;
        let panels = &self.packed;
        let geo = Geometry::new(s, cig, px);
        #[cfg(target_arch = "x86_64")]
        if let Some(lock) = &self.nhwc {
            if self
                .gemm_layout
                .nhwc(|| super::nhwc::prefer_f32(s, geo.qtot, isa))
            {
                // (One group: weight (o, c, t) sits at [o / NR][t][c][o % NR] of the panels.)
                let w = lock.get_or_init(|| {
                    let at = |o: usize, c: usize, t: usize| {
                        self.packed[((o / NR * taps + t) * cig + c) * NR + o % NR]
                    };
                    super::nhwc::pack_f32(at, self.w_dims, isa)
                });
                super::nhwc::run_f32(isa, w, x, s, bias, clamp, opts.threads, out);
                return Ok(());
            }
        }
        // A 1x1 conv with unit strides and no padding over planes of whole vectors reads its
        // input where it lies: the planes would be copies of the channels (`cs = H·W`), and the
        // tiles read no position past `qtot = H·W` (whole vectors, no slack needed).
        let hw = s.h * s.w;
        let direct =
            taps == 1 && s.params.padding == [0, 0] && s.params.stride == [1, 1] && geo.qtot == hw;
        let buf_len = if direct {
            0
        } else {
            geo.planes * geo.plane + 64
        };
        let ptiles = geo.qtot.div_ceil(px);
        let nthreads = thread_count(opts.threads);
        let cchunks = if nthreads > 1 {
            (4 * nthreads).div_ceil(ptiles).clamp(1, ctiles)
        } else {
            1
        };
        let per_chunk = ctiles.div_ceil(cchunks);
        // Blocks of pixel tiles whose activations (about 64 KB: `pblock·px·cig` values) stay
        // in cache while every channel tile of the chunk runs over them, channel tiles outer:
        // the outputs are then written a plane at a time, where pixel tiles outer wrote a
        // tile's run into every plane in turn. With few input channels the tiles are short
        // and the scattered writes dominated (one thread, Intel Xeon, MobileNetV2's 16→96
        // conv on 112×112: 41 → 70–84 GFLOPS, 24→144 on 56×56 0.33 → 0.18–0.29 ms, with the
        // tile buffer zeroed once per block); with 256 input channels or more, one tile per
        // block (as before). At least `4·threads` blocks.
        let pblock = (256 / cig.max(1)).min(ptiles.div_ceil(4 * nthreads)).max(1);
        let pblocks = ptiles.div_ceil(pblock);
        let plane_out = s.h_out * s.w_out;
        let outp = SendPtr(out.as_mut_ptr());
        super::with_scratch(&super::SCRATCH_F32, buf_len, |buf| {
            for n in 0..s.n {
                for gi in 0..g {
                    let bufp = SendPtr(buf.as_mut_ptr());
                    par_for(opts.threads, if direct { 0 } else { geo.planes }, |pi| {
                        // SAFETY: plane `pi` is a disjoint range of `buf`, written by this task only.
                        let dst = unsafe { bufp.slice(pi * geo.plane, geo.plane) };
                        let (c, rows) = geo.copies(s, pi);
                        let ch = &x[(n * s.c_in + gi * cig + c) * s.h * s.w..][..s.h * s.w];
                        let sx = s.params.stride[1];
                        // Zeros between and after the copied runs (the rows come in order).
                        let mut done = 0;
                        for (pos, iy, ix0, count) in rows {
                            dst[done..pos].fill(0.0);
                            done = pos + count;
                            if sx == 1 {
                                dst[pos..pos + count]
                                    .copy_from_slice(&ch[iy * s.w + ix0..][..count]);
                            } else {
                                let row = &ch[iy * s.w..(iy + 1) * s.w];
                                super::gather_columns(row, ix0, sx, &mut dst[pos..pos + count]);
                            }
                        }
                        dst[done..].fill(0.0);
                    });
                    let (src, cs) = if direct {
                        (&x[(n * s.c_in + gi * cig) * hw..][..cig * hw], hw)
                    } else {
                        (&buf[..], geo.plane)
                    };
                    let pan = &panels[gi * ctiles * panel_len..];
                    par_for(opts.threads, pblocks * cchunks, |item| {
                        let (pb, chunk) = (item / cchunks, item % cchunks);
                        // The block's pixel tiles: first position, positions, output runs,
                        // and where a tile is one run of consecutive outputs per channel (a
                        // 1x1 conv over whole planes) its offset: the x86 kernels then add
                        // the bias, clamp and store it themselves.
                        let block: Vec<(usize, usize, Vec<_>, Option<usize>)> = (pb * pblock
                            ..((pb + 1) * pblock).min(ptiles))
                            .map(|pt| {
                                let (q0, npx) = (pt * px, px.min(geo.qtot - pt * px));
                                let segs = segments(q0, q0 + npx, geo.wrow, s.w_out, s.h_out);
                                let fused = match segs[..] {
                                    [(0, off, len)] if len == npx && isa.is_x86_simd() => Some(off),
                                    _ => None,
                                };
                                (q0, npx, segs, fused)
                            })
                            .filter(|(_, _, segs, _)| !segs.is_empty())
                            .collect();
                        // Every value read below is written by the kernel first.
                        let mut tile: TileF = [[0.0; 64]; 6];
                        for ct in chunk * per_chunk..((chunk + 1) * per_chunk).min(ctiles) {
                            let wpan = &pan[ct * panel_len..][..panel_len];
                            let nr = NR.min(cog - ct * NR);
                            let o0 = gi * cog + ct * NR;
                            let tile_bias: [f32; NR] = std::array::from_fn(|r| {
                                bias.map_or(0.0, |b| if r < nr { b[o0 + r] } else { 0.0 })
                            });
                            for &(q0, npx, ref segs, fused) in &block {
                                let act = &src[q0..];
                                #[cfg(target_arch = "x86_64")]
                                let rows = fused.map(|off| super::x86::TileRows {
                                    // SAFETY: in the output: channel o0's plane, at the run.
                                    dst: unsafe {
                                        outp.0.add((n * s.c_out + o0) * plane_out + off)
                                    },
                                    stride: plane_out,
                                    npx,
                                    bias: tile_bias,
                                    clamp: clamp.map(|c| (c.lo, c.hi)),
                                });
                                #[cfg(not(target_arch = "x86_64"))]
                                let rows: Option<Rows> = None;
                                // SAFETY: the ISA was checked; the buffer holds every plane plus
                                // slack, or the input every channel whose tiles read no slack; with
                                // `rows`, channels o0 + r (r < nr) of the tile's run are this
                                // task's outputs.
                                unsafe {
                                    gemm_tile(
                                        isa,
                                        act,
                                        &geo.offs,
                                        cs,
                                        cig,
                                        wpan,
                                        nr,
                                        npx,
                                        &mut tile,
                                        rows.as_ref(),
                                    )
                                };
                                if fused.is_some() {
                                    continue;
                                }
                                for (r, row) in tile.iter().enumerate().take(nr) {
                                    let (o, b) = (o0 + r, tile_bias[r]);
                                    let base = (n * s.c_out + o) * plane_out;
                                    #[cfg(target_arch = "x86_64")]
                                    if isa == Isa::Avx512Vnni {
                                        // SAFETY: the ISA was checked; the runs lie in the tile row
                                        // and in channel o's plane, written by this task only.
                                        unsafe {
                                            super::x86::add_bias_runs_avx512(
                                                row,
                                                segs,
                                                b,
                                                clamp.map(|c| (c.lo, c.hi)),
                                                outp.0.add(base),
                                            )
                                        };
                                        continue;
                                    }
                                    for &(at, off, len) in segs {
                                        // SAFETY: pixel tile pt × channel o is written by this task
                                        // only, inside the output.
                                        let dst = unsafe { outp.slice(base + off, len) };
                                        for (d, &a) in dst.iter_mut().zip(&row[at..at + len]) {
                                            *d = a + b;
                                        }
                                        // The run is in L1 now.
                                        if let Some(c) = clamp {
                                            c.apply_slice(dst);
                                        }
                                    }
                                }
                            }
                        }
                    });
                }
            }
        });
        Ok(())
    }
}

/// A clamp of float outputs to `[lo, hi]`, applied by [`PackedConvF32::run_clamped`] as each
/// output is stored: `m = if y > lo { y } else { lo }`, then `if m < hi { m } else { hi }`,
/// the semantics of x86's `maxps` / `minps` (a NaN becomes `lo`, as with `f32::max`, and −0
/// becomes +0 under `lo = 0`), the same in the scalar, auto-vectorized and intrinsic code.
/// A ReLU is `[0, +∞]`, a ReLU6 `[0, 6]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct F32Clamp {
    /// Lower bound.
    pub lo: f32,
    /// Upper bound.
    pub hi: f32,
}

impl F32Clamp {
    /// The clamped value (see [`F32Clamp`]).
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        let m = if v > self.lo { v } else { self.lo };
        if m < self.hi {
            m
        } else {
            self.hi
        }
    }

    /// [`F32Clamp::apply`] on every value of `ys`, in a loop that vectorizes (compiled for
    /// AVX-512 or AVX2 where the CPU has them: the baseline's SSE code, 4 lanes with NaN
    /// fix-ups, took a tenth of a float MobileNetV2 run).
    pub fn apply_slice(self, ys: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the feature was detected.
                return unsafe { self.apply_avx512(ys) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the feature was detected.
                return unsafe { self.apply_avx2(ys) };
            }
        }
        self.apply_generic(ys)
    }

    #[inline(always)]
    fn apply_generic(self, ys: &mut [f32]) {
        ys.iter_mut().for_each(|v| *v = self.apply(*v));
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn apply_avx512(self, ys: &mut [f32]) {
        self.apply_generic(ys)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn apply_avx2(self, ys: &mut [f32]) {
        self.apply_generic(ys)
    }
}

/// For each of `R` rows, the eight f64 lane sums of its dot product with `a` (see
/// `x86::dot_lanes_f64_avx512`: `acc[r][k] = Σ_j a[8j + k]·rows[r][8j + k]` over
/// `j < a.len() / 8`, in order of `j`), on the vectors of path `isa`: the same bits on every
/// path (`cpu::float_ops`'s tests check each against a scalar loop).
///
/// # Panics
/// If a row holds fewer than `a.len() / 8 · 8` values, or `isa` is not available.
pub(crate) fn dot_lanes_f64<const R: usize>(
    isa: Isa,
    a: &[f32],
    rows: [&[f32]; R],
) -> [[f64; 8]; R] {
    let body = a.len() / 8 * 8;
    assert!(rows.iter().all(|r| r.len() >= body) && isa.is_available());
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the path's features were checked available; the rows' lengths above.
        Isa::Avx512Vnni => return unsafe { super::x86::dot_lanes_f64_avx512(a, rows) },
        // SAFETY: as above (both paths include AVX2 and FMA).
        Isa::AvxVnni | Isa::Avx2 => return unsafe { super::x86::dot_lanes_f64_avx2(a, rows) },
        Isa::NeonDot | Isa::Portable => {}
    }
    let mut acc = [[0f64; 8]; R];
    for (i, x) in a[..body].chunks_exact(8).enumerate() {
        for (acc, row) in acc.iter_mut().zip(&rows) {
            for (k, (acc, &y)) in acc.iter_mut().zip(&row[8 * i..8 * i + 8]).enumerate() {
                *acc += x[k] as f64 * y as f64;
            }
        }
    }
    acc
}
