// squint: 2-d max and average pooling of NCHW 8-bit tensors, appended to `common.wgsl`.
//
// * Max (`mode` 0): the max of the taps `(oy * sh + ky * dh - ph, ox * sw + kx * dw - pw)`;
//   taps outside the input are skipped, or (`clamp_taps`, QNNPACK) clamped into it. The host
//   has checked that every output has a tap.
// * Average (`mode` 1): the window is the rectangle of rows `[tab[2oy], tab[2oy+1])` and
//   columns `[tab[2ho+2ox], tab[2ho+2ox+1])` (clipped to the input by the host); with `s` the
//   sum of its stored ints and `n` its size, `acc = s - n * tap_zp`, then
//   `f = f32(acc) * m` with `m` the f32 bits at `tab[2ho + 2wo + oy * wo + ox]`, plus the f32
//   `add_f32` when `float_add`, then `v = rne(f) + post_add`, clamped to `[out_min, out_max]`.
//   Every float step is the integer-emulated binary32 of `common.wgsl` (round to nearest
//   even): the formulas of PyTorch's generic kernels and of QNNPACK, with the host choosing
//   the constants (see `src/gpu/graph_ops.rs`).
// * Float average (`mode` 2, ONNX Runtime's QLinearAveragePool): over the same window, the
//   float sum (from +0, row by row) of `f32(q - tap_zp) * scale_x`, divided by the divisor
//   (f32 bits at `tab[2ho + 2wo + oy * wo + ox]`), divided by `scale_y`, plus `add_f32`, then
//   `v = rne(.) + post_add`, clamped. Binary32 steps as above (`sf_div` included).
//
// Buffers: `params` (uniform; `u` its copy), `tab` (storage, read; average only, one word
// otherwise), `x` (storage, read: input bytes, four per word), `y` (storage, read_write:
// output bytes, four per word). Each invocation writes one output word (four outputs).

struct Params {
    total: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    mode: u32,
    signed_bytes: u32,
    clamp_taps: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    dh: u32,
    dw: u32,
    tap_zp: i32,
    float_add: u32,
    add_f32: u32,
    post_add: i32,
    out_min: i32,
    out_max: i32,
    scale_x: u32,
    scale_y: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// A copy of the uniforms, filled first by `main`: the pooling loops read most of them, and
// lavapipe (Mesa 22.3, LLVM 15) compiled a uniform read inside a loop as a per-lane gather in
// every iteration.
var<private> u: Params;
@group(0) @binding(1) var<storage, read> tab: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

fn value_at(i: u32) -> i32 {
    let v = (x[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
    if (u.signed_bytes != 0u) {
        return i32(v ^ 0x80u) - 128;
    }
    return i32(v);
}

fn max_at(base: u32, oy: u32, ox: u32) -> i32 {
    var best = -100000;
    for (var ky = 0u; ky < u.kh; ky = ky + 1u) {
        var iy = i32(oy * u.sh + ky * u.dh) - i32(u.ph);
        if (u.clamp_taps != 0u) {
            iy = clamp(iy, 0, i32(u.h) - 1);
        } else if (iy < 0 || iy >= i32(u.h)) {
            continue;
        }
        for (var kx = 0u; kx < u.kw; kx = kx + 1u) {
            var ix = i32(ox * u.sw + kx * u.dw) - i32(u.pw);
            if (u.clamp_taps != 0u) {
                ix = clamp(ix, 0, i32(u.w) - 1);
            } else if (ix < 0 || ix >= i32(u.w)) {
                continue;
            }
            best = max(best, value_at(base + u32(iy) * u.w + u32(ix)));
        }
    }
    return best;
}

// The window of output (oy, ox): rows [x, y), columns [z, w).
fn window(oy: u32, ox: u32) -> vec4<u32> {
    let cols = 2u * u.ho;
    return vec4<u32>(tab[2u * oy], tab[2u * oy + 1u], tab[cols + 2u * ox], tab[cols + 2u * ox + 1u]);
}

// The f32 bits of output (oy, ox)'s entry after the windows.
fn per_output(oy: u32, ox: u32) -> u32 {
    return tab[2u * u.ho + 2u * u.wo + oy * u.wo + ox];
}

fn avg_at(base: u32, oy: u32, ox: u32) -> i32 {
    let win = window(oy, ox);
    var s = 0;
    for (var iy = win.x; iy < win.y; iy = iy + 1u) {
        for (var ix = win.z; ix < win.w; ix = ix + 1u) {
            s = s + value_at(base + iy * u.w + ix);
        }
    }
    let n = i32((win.y - win.x) * (win.w - win.z));
    let acc = s - n * u.tap_zp;
    var f = sf_mul(sf_from_i32(acc), per_output(oy, ox));
    if (u.float_add != 0u) {
        f = sf_add(f, u.add_f32);
    }
    let v = sf_round_clamp(f) + u.post_add;
    return clamp(v, u.out_min, u.out_max);
}

fn avg_float_at(base: u32, oy: u32, ox: u32) -> i32 {
    let win = window(oy, ox);
    var s = 0u;
    for (var iy = win.x; iy < win.y; iy = iy + 1u) {
        for (var ix = win.z; ix < win.w; ix = ix + 1u) {
            let d = sf_from_i32(value_at(base + iy * u.w + ix) - u.tap_zp);
            s = sf_add(s, sf_mul(d, u.scale_x));
        }
    }
    let avg = sf_div(s, per_output(oy, ox));
    let f = sf_add(sf_div(avg, u.scale_y), u.add_f32);
    return clamp(sf_round_clamp(f) + u.post_add, u.out_min, u.out_max);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    u = params;
    let w = linear_index(wid, nwg, lid);
    if (w >= (u.total + 3u) / 4u) {
        return;
    }
    let out_plane = u.ho * u.wo;
    var word = 0u;
    for (var k = 0u; k < 4u; k = k + 1u) {
        let j = w * 4u + k;
        if (j < u.total) {
            let p = j / out_plane;
            let r = j - p * out_plane;
            let oy = r / u.wo;
            let ox = r - oy * u.wo;
            let base = p * u.h * u.w;
            var v: i32;
            if (u.mode == 0u) {
                v = max_at(base, oy, ox);
            } else if (u.mode == 1u) {
                v = avg_at(base, oy, ox);
            } else {
                v = avg_float_at(base, oy, ox);
            }
            word = word | ((u32(v) & 0xffu) << (8u * k));
        }
    }
    y[w] = word;
}
