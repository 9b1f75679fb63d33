//! Byte-level GPU ops for graph models: gather through byte tables (concatenation, ReLU,
//! clamp), binary byte tables (add), max and average pooling.
//!
//! The kernels know nothing of models or engines: they take stored bytes, dims and integer
//! constants (byte tables, window rectangles, f32 bit patterns). Every `*_bytes` op uploads its
//! inputs, runs one dispatch and reads the output back; [`GpuContext::map_tensor`] and
//! [`GpuContext::binary_tensors`] read and write device tensors, queued without waiting. No float arithmetic runs on the GPU: the byte
//! tables are computed on the host with the CPU formula, and the average pools' float steps
//! use the integer-emulated binary32 of `shaders/common.wgsl`.
//!
//! Work whose buffers exceed the device's storage binding limit is cut on the host into
//! pieces that fit (element ranges, outer indices of a concatenation, planes of a pool), each
//! its own dispatch; only a piece that cannot be cut further and does not fit (one pooled
//! plane, the add's two 64 KiB tables) gives [`Error::DeviceLimit`].

use super::buffers::{
    groups_for, packed_bytes, read_back, record, Dispatch, GpuTensor, Res, Slot, STORAGE_USAGE,
};
use super::context::GpuContext;
use super::kernels::{GraphAddParams, GraphLutParams, GraphPoolParams, Kernel};
use super::pool::PooledBuffer;
use crate::cpu::reference::pool::Pool2dParams;
use crate::error::{Error, Result};
use crate::quant::QDtype;
use std::sync::Arc;

/// One input of [`GpuContext::concat_bytes`]: its stored bytes, its elements per outer index,
/// and the table its bytes go through.
#[derive(Debug, Clone, Copy)]
pub struct LutInput<'a> {
    /// Stored bytes, `outer * block` of them.
    pub data: &'a [u8],
    /// Elements per outer index (the input's size along the axis times the inner size).
    pub block: usize,
    /// Output byte of each stored input byte.
    pub table: &'a [u8; 256],
}

/// The windows and constants of [`GpuContext::avg_pool2d_bytes`]. With `s` the sum of the
/// stored ints of the window (rows `rows[oy]`, columns `cols[ox]`, half-open, inside the
/// input) and `n` its size, the output is
/// `clamp(rne(f32(f32(s - n * tap_zp) * multipliers[oy * wo + ox]) [+ add]) + post_add, clamp)`
/// with every float step rounded to nearest even in binary32, `[+ add]` an f32 addition when
/// `add` is given.
#[derive(Debug, Clone, PartialEq)]
pub struct AvgPoolPlan {
    /// Row range `[start, end)` of each output row.
    pub rows: Vec<[u32; 2]>,
    /// Column range `[start, end)` of each output column.
    pub cols: Vec<[u32; 2]>,
    /// The f32 multiplier of each output position, row-major.
    pub multipliers: Vec<f32>,
    /// Subtracted from the sum once per tap.
    pub tap_zp: i32,
    /// Added in float before rounding.
    pub add: Option<f32>,
    /// Added after rounding.
    pub post_add: i32,
    /// Output clamp `[min, max]` (inclusive).
    pub clamp: [i32; 2],
}

/// The windows and constants of [`GpuContext::float_avg_pool2d_bytes`], ONNX Runtime's
/// `QLinearAveragePool`: over the window of [`AvgPoolPlan`], the float sum (from +0, row by
/// row) of `f32(f32(q - tap_zp) * x_scale)`, then
/// `clamp(rne(f32(f32(sum / divisors[oy * wo + ox]) / y_scale) + add) + post_add, clamp)`,
/// every float step rounded to nearest even in binary32.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatAvgPoolPlan {
    /// Row range `[start, end)` of each output row.
    pub rows: Vec<[u32; 2]>,
    /// Column range `[start, end)` of each output column.
    pub cols: Vec<[u32; 2]>,
    /// The divisor of each output position, row-major.
    pub divisors: Vec<f32>,
    /// Subtracted from every tap's stored int.
    pub tap_zp: i32,
    /// Every tap's multiplier (the input scale).
    pub x_scale: f32,
    /// The average's divisor (the output scale).
    pub y_scale: f32,
    /// Added in float before rounding.
    pub add: f32,
    /// Added after rounding.
    pub post_add: i32,
    /// Output clamp `[min, max]` (inclusive).
    pub clamp: [i32; 2],
}

/// The pool kernel's table: the row and column ranges (checked non-empty and inside the
/// `h x w` input), then the f32 bits of each output's `per_output` value.
fn window_table(
    what: &str,
    rows: &[[u32; 2]],
    cols: &[[u32; 2]],
    per_output: &[f32],
    [h, w]: [usize; 2],
) -> Result<Vec<u32>> {
    let (ho, wo) = (rows.len(), cols.len());
    if ho == 0 || wo == 0 || per_output.len() != ho * wo {
        return Err(Error::Shape(format!(
            "{what}: {ho} rows, {wo} columns and {} per-output values do not form a plan",
            per_output.len()
        )));
    }
    let fits = |r: &[u32; 2], size: usize| r[0] < r[1] && r[1] as usize <= size;
    if !rows.iter().all(|r| fits(r, h)) || !cols.iter().all(|r| fits(r, w)) {
        return Err(Error::InvalidParameter(format!(
            "{what}: a window is empty or leaves the {h}x{w} input"
        )));
    }
    let mut tab: Vec<u32> = Vec::with_capacity(2 * (ho + wo) + ho * wo);
    tab.extend(rows.iter().flatten());
    tab.extend(cols.iter().flatten());
    tab.extend(per_output.iter().map(|m| m.to_bits()));
    Ok(tab)
}

/// Queues one dispatch of `kernel` (`what` it does, for errors) with the uniform `params`,
/// reading `inputs` (buffers and the bytes of each bound) and writing a new buffer of `bytes`
/// bytes (returned), one invocation per output word; the inputs are kept until the work is
/// queued.
fn queue_bytes_op<P: bytemuck::Pod>(
    ctx: &GpuContext,
    (kernel, what): (Kernel, &str),
    params: &P,
    inputs: &[(&Arc<PooledBuffer>, u64)],
    bytes: u64,
) -> Result<Arc<PooledBuffer>> {
    let split = ctx.split();
    ctx.encode(what, |enc, keep| {
        let pipe = ctx.pipeline(kernel, &[])?;
        let out = ctx.pooled_buffer(bytes, STORAGE_USAGE, "squint packed tensor")?;
        let mut res: Vec<Res<'_>> = (inputs.iter())
            .map(|&(b, n)| Res::Buf(Slot::new(split, b, 0, n)))
            .collect();
        res.push(Res::Buf(Slot::new(split, &out, 0, bytes)));
        let list = vec![Dispatch::new(&pipe, params, res, groups_for(bytes / 4))];
        record(ctx, enc, &list, None)?;
        drop(list);
        for &(b, _) in inputs {
            keep.buffer(b.clone());
        }
        Ok(out)
    })
}

fn pack_bytes(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.resize(b.len().div_ceil(4).max(1) * 4, 0);
    v
}

fn to_u32(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::DeviceLimit(format!(
            "{what}: {n} exceeds the 2^32 indices of squint's kernels"
        ))
    })
}

impl GpuContext {
    /// Uploads `inputs` (bytes or words), runs `kernel` once over `out_len` output bytes (one
    /// invocation per output word) and reads the output back.
    fn run_bytes<P: bytemuck::Pod>(
        &self,
        kernel: Kernel,
        what: &str,
        params: &P,
        inputs: &[&[u8]],
        out_len: usize,
    ) -> Result<Vec<u8>> {
        let ctx = &self.enter()?;
        let split = ctx.split();
        let out_bytes = (out_len.div_ceil(4).max(1) * 4) as u64;
        let padded: Vec<Vec<u8>> = inputs.iter().map(|b| pack_bytes(b)).collect();
        for len in padded.iter().map(|b| b.len() as u64).chain([out_bytes]) {
            if len > split.max_binding {
                return Err(Error::DeviceLimit(format!(
                    "{what}: a buffer of {len} bytes exceeds the device's storage binding limit \
                     of {} bytes",
                    split.max_binding
                )));
            }
        }
        let bufs = ctx.scoped(&format!("{what}: uploading"), || {
            padded
                .iter()
                .map(|b| ctx.pooled_buffer_init(b, "squint graph op input"))
                .collect::<Result<Vec<_>>>()
        })?;
        let out = ctx.encode(what, |enc, _| {
            let pipe = ctx.pipeline(kernel, &[])?;
            let out = ctx.pooled_buffer(out_bytes, STORAGE_USAGE, "squint graph op output")?;
            let mut res: Vec<Res<'_>> = bufs
                .iter()
                .zip(&padded)
                .map(|(b, p)| Res::Buf(Slot::new(split, b, 0, p.len() as u64)))
                .collect();
            res.push(Res::Buf(Slot::new(split, &out, 0, out_bytes)));
            let list = vec![Dispatch::new(&pipe, params, res, groups_for(out_bytes / 4))];
            record(ctx, enc, &list, None)?;
            drop(list);
            Ok(out)
        })?;
        let mut bytes = read_back(ctx, &out, out_bytes)?;
        bytes.truncate(out_len);
        Ok(bytes)
    }

    /// The largest piece (bytes, a multiple of 4) one binding takes.
    fn piece_bytes(&self) -> usize {
        (self.split().max_binding.min(usize::MAX as u64) as usize / 4 * 4).max(4)
    }

    /// Maps every byte of `x` through `table`: `y[i] = table[x[i]]`.
    pub fn map_bytes(&self, x: &[u8], table: &[u8; 256]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(x.len());
        for piece in x.chunks(self.piece_bytes()) {
            let input = LutInput {
                data: piece,
                block: piece.len(),
                table,
            };
            out.extend(self.concat_once(&[input], 1)?);
        }
        Ok(out)
    }

    /// Maps every stored byte of `x` through `table` on the device, without a read-back: a
    /// tensor of `x`'s dims and dtype holding `table[x]` (the padding bytes that end its
    /// planes too, which no kernel reads). Queued like a conv (see [`GpuConv2d::run`]); a
    /// tensor larger than one storage binding is mapped on the way through the host.
    ///
    /// [`GpuConv2d::run`]: super::GpuConv2d::run
    pub fn map_tensor(&self, x: &GpuTensor, table: &[u8; 256]) -> Result<GpuTensor> {
        let ctx = &self.enter()?;
        ctx.check_same(x.device_id, "map_tensor")?;
        let bytes = packed_bytes(x.dims);
        let split = ctx.split();
        if bytes > split.max_binding || bytes > u32::MAX as u64 {
            let y = self.map_bytes(&self.read_q(x)?, table)?;
            return self.upload_q(&y, x.dims, x.dtype);
        }
        // One input: its bytes from 0, all of them one block, then its table.
        let mut meta: Vec<u32> = vec![0, bytes as u32, 0, 0];
        meta.extend((table.chunks_exact(4)).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        let meta = ctx.pooled_buffer_init(bytemuck::cast_slice(&meta), "squint lut table")?;
        let p = GraphLutParams {
            total: bytes as u32,
            out_block: bytes as u32,
            n_inputs: 1,
            _pad: 0,
        };
        let inputs = [(&meta, 4 * 68), (&x.buffer, bytes)];
        let what = "mapping a tensor through a byte table";
        let buffer = queue_bytes_op(ctx, (Kernel::GraphLut, what), &p, &inputs, bytes)?;
        Ok(GpuTensor {
            dims: x.dims,
            dtype: x.dtype,
            buffer,
            device_id: x.device_id,
        })
    }

    /// Concatenates `inputs` block by block: for each of the `outer` outer indices, input 0's
    /// block of elements, then input 1's, ..., each byte mapped through its input's table.
    pub fn concat_bytes(&self, inputs: &[LutInput<'_>], outer: usize) -> Result<Vec<u8>> {
        if inputs.is_empty() {
            return Err(Error::Shape("concat: no inputs".into()));
        }
        for (i, x) in inputs.iter().enumerate() {
            if x.data.len() != outer.saturating_mul(x.block) {
                return Err(Error::Shape(format!(
                    "concat: input {i} has {} bytes, {outer} blocks of {} need {}",
                    x.data.len(),
                    x.block,
                    outer.saturating_mul(x.block)
                )));
            }
        }
        let row: usize = inputs.iter().map(|x| x.block).sum();
        let meta = inputs.len() * 68 * 4;
        let piece = self.piece_bytes();
        if row == 0 || outer == 0 {
            return Ok(Vec::new());
        }
        if row <= piece && meta <= piece {
            // Whole outer indices per dispatch.
            let rows = piece / row;
            let mut out = Vec::with_capacity(outer * row);
            for o0 in (0..outer).step_by(rows) {
                let o1 = (o0 + rows).min(outer);
                let sub: Vec<LutInput<'_>> = inputs
                    .iter()
                    .map(|x| LutInput {
                        data: &x.data[o0 * x.block..o1 * x.block],
                        ..*x
                    })
                    .collect();
                out.extend(self.concat_once(&sub, o1 - o0)?);
            }
            return Ok(out);
        }
        // One outer index does not fit: map each input's block on its own.
        let mut out = Vec::with_capacity(outer * row);
        for o in 0..outer {
            for x in inputs {
                out.extend(self.map_bytes(&x.data[o * x.block..(o + 1) * x.block], x.table)?);
            }
        }
        Ok(out)
    }

    /// [`GpuContext::concat_bytes`] as one dispatch.
    fn concat_once(&self, inputs: &[LutInput<'_>], outer: usize) -> Result<Vec<u8>> {
        let mut meta: Vec<u32> = Vec::with_capacity(inputs.len() * 68);
        let mut data = Vec::new();
        let mut cum = 0usize;
        for (i, x) in inputs.iter().enumerate() {
            if x.data.len() != outer * x.block {
                return Err(Error::Shape(format!(
                    "concat: input {i} has {} bytes, {outer} blocks of {} need {}",
                    x.data.len(),
                    x.block,
                    outer * x.block
                )));
            }
            meta.extend([
                to_u32(data.len(), "concat input bytes")?,
                to_u32(x.block, "concat block")?,
                to_u32(cum, "concat block")?,
                0,
            ]);
            data.extend_from_slice(x.data);
            cum += x.block;
        }
        for x in inputs {
            meta.extend(
                x.table
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        let total = outer * cum;
        if total == 0 {
            return Ok(Vec::new());
        }
        let p = GraphLutParams {
            total: to_u32(total, "concat output")?,
            out_block: to_u32(cum, "concat block")?,
            n_inputs: to_u32(inputs.len(), "concat inputs")?,
            _pad: 0,
        };
        self.run_bytes(
            Kernel::GraphLut,
            "concat",
            &p,
            &[bytemuck::cast_slice(&meta), &data],
            total,
        )
    }

    /// Elementwise `y[i] = tables[t][a[i] * 256 + b[i]]` with `t = 0` for `i < split`, else 1.
    /// `tables` holds two tables of 65536 bytes.
    pub fn binary_bytes(&self, a: &[u8], b: &[u8], tables: &[u8], split: usize) -> Result<Vec<u8>> {
        if a.len() != b.len() {
            return Err(Error::Shape(format!(
                "binary op: inputs have {} and {} elements",
                a.len(),
                b.len()
            )));
        }
        if tables.len() != 2 << 16 {
            return Err(Error::InvalidParameter(format!(
                "binary op: expected two tables of 65536 bytes, got {} bytes",
                tables.len()
            )));
        }
        let piece = self.piece_bytes();
        let mut out = Vec::with_capacity(a.len());
        for begin in (0..a.len()).step_by(piece) {
            let end = (begin + piece).min(a.len());
            let p = GraphAddParams {
                total: to_u32(end - begin, "binary op")?,
                split: to_u32(split.clamp(begin, end) - begin, "binary op")?,
                _pad: [0; 2],
            };
            let (a, b) = (&a[begin..end], &b[begin..end]);
            out.extend(self.run_bytes(
                Kernel::GraphAdd,
                "add",
                &p,
                &[tables, a, b],
                end - begin,
            )?);
        }
        Ok(out)
    }

    /// Elementwise `y = tables[t][a * 256 + b]` on the device over every stored byte of two
    /// tensors of the same dims (the padding bytes that end their planes too, which no kernel
    /// reads), one table for all: `t = 1` when `second`, else 0; `y` holds `dtype` values.
    /// `tables`: the two 65536-byte tables as a `[1, 1, 1, 131072]` tensor (uploaded once,
    /// used by every add of their qparams). Queued like [`GpuContext::map_tensor`]; tensors
    /// larger than one storage binding go through the host.
    pub fn binary_tensors(
        &self,
        (a, b): (&GpuTensor, &GpuTensor),
        tables: &GpuTensor,
        second: bool,
        dtype: QDtype,
    ) -> Result<GpuTensor> {
        let ctx = &self.enter()?;
        for t in [a, b, tables] {
            ctx.check_same(t.device_id, "binary_tensors")?;
        }
        if a.dims != b.dims || tables.dims != [1, 1, 1, 2 << 16] {
            return Err(Error::Shape(format!(
                "binary op: inputs of dims {:?} and {:?}, tables of dims {:?} ([1, 1, 1, \
                 131072] expected)",
                a.dims, b.dims, tables.dims
            )));
        }
        let (bytes, table_bytes) = (packed_bytes(a.dims), packed_bytes(tables.dims));
        let split = ctx.split();
        let fits = |n: u64| n <= split.max_binding && n <= u32::MAX as u64;
        if !fits(bytes) || !fits(table_bytes) {
            let (ha, hb) = (self.read_q(a)?, self.read_q(b)?);
            let at = if second { 0 } else { ha.len() };
            let y = self.binary_bytes(&ha, &hb, &self.read_q(tables)?, at)?;
            return self.upload_q(&y, a.dims, dtype);
        }
        let p = GraphAddParams {
            total: bytes as u32,
            split: if second { 0 } else { bytes as u32 },
            _pad: [0; 2],
        };
        let inputs = [
            (&tables.buffer, table_bytes),
            (&a.buffer, bytes),
            (&b.buffer, bytes),
        ];
        let what = "adding two tensors through byte-pair tables";
        let buffer = queue_bytes_op(ctx, (Kernel::GraphAdd, what), &p, &inputs, bytes)?;
        Ok(GpuTensor {
            dims: a.dims,
            dtype,
            buffer,
            device_id: a.device_id,
        })
    }

    /// Max pooling of NCHW stored bytes `x` (`dims`, `dtype`) with window `p`: taps outside
    /// the input are skipped, or clamped into it when `clamp_taps` (QNNPACK). Fails when some
    /// output has no tap inside the input.
    pub fn max_pool2d_bytes(
        &self,
        x: &[u8],
        dims: [usize; 4],
        dtype: QDtype,
        p: &Pool2dParams,
        clamp_taps: bool,
    ) -> Result<Vec<u8>> {
        let [n, c, h, w] = dims;
        check_len(x, dims)?;
        let [ho, wo] = p.output_size(h, w)?;
        if !clamp_taps {
            let has_tap = |o: usize, i: usize, size: usize| {
                (0..p.kernel[i]).any(|k| {
                    let v = (o * p.stride[i] + k * p.dilation[i]) as i64 - p.padding[i] as i64;
                    v >= 0 && v < size as i64
                })
            };
            let bad_y = (0..ho).find(|&o| !has_tap(o, 0, h));
            let bad_x = (0..wo).find(|&o| !has_tap(o, 1, w));
            if let (Some(oy), _) | (_, Some(oy)) = (bad_y, bad_x) {
                return Err(Error::InvalidParameter(format!(
                    "max_pool2d: output row or column {oy} has no tap inside the {h}x{w} input"
                )));
            }
        }
        let total = n * c * ho * wo;
        let u = |v: usize| to_u32(v, "max_pool2d");
        let params = GraphPoolParams {
            total: u(total)?,
            h: u(h)?,
            w: u(w)?,
            ho: u(ho)?,
            wo: u(wo)?,
            mode: 0,
            signed_bytes: (dtype == QDtype::QInt8) as u32,
            clamp_taps: clamp_taps as u32,
            kh: u(p.kernel[0])?,
            kw: u(p.kernel[1])?,
            sh: u(p.stride[0])?,
            sw: u(p.stride[1])?,
            ph: u(p.padding[0])?,
            pw: u(p.padding[1])?,
            dh: u(p.dilation[0])?,
            dw: u(p.dilation[1])?,
            ..Default::default()
        };
        // Coordinates are i32 in the kernel.
        let reach = |i: usize| (ho.max(wo)) * p.stride[i] + p.kernel[i] * p.dilation[i];
        if reach(0).max(reach(1)) > i32::MAX as usize || x.len() > u32::MAX as usize {
            return Err(Error::DeviceLimit(
                "max_pool2d: coordinates exceed the kernel's 32-bit indices".into(),
            ));
        }
        self.pool_pieces("max_pool2d", x, dims, [ho, wo], params, &[0; 4])
    }

    /// Runs the pool kernel over as many whole planes per dispatch as the binding limit takes.
    fn pool_pieces(
        &self,
        what: &str,
        x: &[u8],
        dims: [usize; 4],
        out_hw: [usize; 2],
        mut params: GraphPoolParams,
        tab: &[u8],
    ) -> Result<Vec<u8>> {
        let (plane_in, plane_out) = (dims[2] * dims[3], out_hw[0] * out_hw[1]);
        let planes = dims[0] * dims[1];
        let piece = self.piece_bytes();
        let per = (piece / plane_in).min(piece / plane_out);
        if per == 0 {
            return Err(Error::DeviceLimit(format!(
                "{what}: one {}x{} plane exceeds the device's storage binding limit of {} bytes",
                dims[2],
                dims[3],
                self.split().max_binding
            )));
        }
        let mut out = Vec::with_capacity(planes * plane_out);
        for p0 in (0..planes).step_by(per) {
            let p1 = (p0 + per).min(planes);
            let total = (p1 - p0) * plane_out;
            params.total = to_u32(total, what)?;
            let xs = &x[p0 * plane_in..p1 * plane_in];
            out.extend(self.run_bytes(Kernel::GraphPool, what, &params, &[tab, xs], total)?);
        }
        Ok(out)
    }

    /// Average pooling of NCHW stored bytes `x` (`dims`, `dtype`) as `plan` describes (see
    /// [`AvgPoolPlan`]).
    pub fn avg_pool2d_bytes(
        &self,
        x: &[u8],
        dims: [usize; 4],
        dtype: QDtype,
        plan: &AvgPoolPlan,
    ) -> Result<Vec<u8>> {
        let [n, c, h, w] = dims;
        check_len(x, dims)?;
        let (ho, wo) = (plan.rows.len(), plan.cols.len());
        let tab = window_table(
            "avg_pool2d",
            &plan.rows,
            &plan.cols,
            &plan.multipliers,
            [h, w],
        )?;
        // The kernel sums in i32: |q - tap_zp| <= 255 + |tap_zp| per tap.
        let max_rows = plan.rows.iter().map(|r| (r[1] - r[0]) as u64).max();
        let max_cols = plan.cols.iter().map(|r| (r[1] - r[0]) as u64).max();
        let taps = max_rows.unwrap_or(0) * max_cols.unwrap_or(0);
        if taps * (255 + plan.tap_zp.unsigned_abs() as u64) > i32::MAX as u64 {
            return Err(Error::DeviceLimit(format!(
                "avg_pool2d: windows of {taps} taps may overflow the kernel's 32-bit sums"
            )));
        }
        let total = n * c * ho * wo;
        let u = |v: usize| to_u32(v, "avg_pool2d");
        let params = GraphPoolParams {
            total: u(total)?,
            h: u(h)?,
            w: u(w)?,
            ho: u(ho)?,
            wo: u(wo)?,
            mode: 1,
            signed_bytes: (dtype == QDtype::QInt8) as u32,
            tap_zp: plan.tap_zp,
            float_add: plan.add.is_some() as u32,
            add_f32: plan.add.unwrap_or(0.0).to_bits(),
            post_add: plan.post_add,
            out_min: plan.clamp[0],
            out_max: plan.clamp[1],
            ..Default::default()
        };
        if x.len() > u32::MAX as usize {
            return Err(Error::DeviceLimit(
                "avg_pool2d: the input exceeds the kernel's 32-bit indices".into(),
            ));
        }
        let tab = bytemuck::cast_slice(&tab);
        self.pool_pieces("avg_pool2d", x, dims, [ho, wo], params, tab)
    }

    /// ONNX Runtime's float average pooling of NCHW stored bytes `x` (`dims`, `dtype`) as
    /// `plan` describes (see [`FloatAvgPoolPlan`]).
    pub fn float_avg_pool2d_bytes(
        &self,
        x: &[u8],
        dims: [usize; 4],
        dtype: QDtype,
        plan: &FloatAvgPoolPlan,
    ) -> Result<Vec<u8>> {
        let [n, c, h, w] = dims;
        check_len(x, dims)?;
        let (ho, wo) = (plan.rows.len(), plan.cols.len());
        let tab = window_table(
            "float_avg_pool2d",
            &plan.rows,
            &plan.cols,
            &plan.divisors,
            [h, w],
        )?;
        if x.len() > u32::MAX as usize {
            return Err(Error::DeviceLimit(
                "float_avg_pool2d: the input exceeds the kernel's 32-bit indices".into(),
            ));
        }
        let u = |v: usize| to_u32(v, "float_avg_pool2d");
        let params = GraphPoolParams {
            total: u(n * c * ho * wo)?,
            h: u(h)?,
            w: u(w)?,
            ho: u(ho)?,
            wo: u(wo)?,
            mode: 2,
            signed_bytes: (dtype == QDtype::QInt8) as u32,
            tap_zp: plan.tap_zp,
            add_f32: plan.add.to_bits(),
            post_add: plan.post_add,
            out_min: plan.clamp[0],
            out_max: plan.clamp[1],
            scale_x: plan.x_scale.to_bits(),
            scale_y: plan.y_scale.to_bits(),
            ..Default::default()
        };
        let tab = bytemuck::cast_slice(&tab);
        self.pool_pieces("float_avg_pool2d", x, dims, [ho, wo], params, tab)
    }
}

fn check_len(x: &[u8], dims: [usize; 4]) -> Result<()> {
    let n = super::buffers::check_dims(dims, "pooling input")?;
    if x.len() != n {
        return Err(Error::Shape(format!(
            "pooling: {} bytes do not form the shape {dims:?}",
            x.len()
        )));
    }
    Ok(())
}
