#!/usr/bin/env python3
"""Golden fixtures for squint's int8 CPU reference of PyTorch eager's quantized ops.

Runs the real quantized PyTorch ops (engines `qnnpack` and `x86`) on seeded random inputs and
writes one JSON file per op family and engine under `tests/data/ops/`:

    {op}_{engine}.json = {"op", "engine", "torch_version", "cpu_capability", "cases": [...]}

Each case holds the attributes, the input ints (NCHW / row-major, quint8 as 0..255, whatever
the memory format), their qparams and memory format (`contiguous`, or `channels_last` for NHWC
storage; a 1x1-plane or one-channel tensor is both and is written `contiguous`), the weight
ints and qparams (linear), the float bias (linear) and the expected output ints, qparams and
memory format. Cases run on channels-last inputs say so with `"memory_format":
"channels_last"` (all inputs) or `"mixed"` (cat). Every scale is a float32 value (written as
the JSON double of that float32).

The x86-engine ops are also run with `ATEN_CPU_CAPABILITY=avx2` and `=default` (subprocesses)
to find out which results depend on the instruction set of the machine: each x86 file records
`isa_dependent_ops`, and for such ops the variants are written as
`{op}_x86_{capability}.json` (only the cases that differ are needed, but all are kept so the
reference's ISA model is checked as a whole).

Usage: python3 scripts/gen_op_fixtures.py [--out tests/data/ops]
Needs torch (CPU is enough). Single-threaded, deterministic.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)

ENGINES = ["qnnpack", "x86"]
CL = torch.channels_last


def f32(x):
    return float(np.float32(x))


def seed_for(op, idx):
    return zlib.crc32(f"{op}/{idx}".encode()) & 0x7FFFFFFF


def qt(ints, scale, zp):
    t = torch.tensor(np.asarray(ints, dtype=np.uint8))
    return torch._make_per_tensor_quantized_tensor(t, f32(scale), int(zp))


def rand_q(rng, shape, scale, zp, lo=0, hi=255):
    ints = rng.integers(lo, hi + 1, size=shape, dtype=np.int64).astype(np.uint8)
    return qt(ints, scale, zp)


def mem_format(q):
    """`channels_last` for a 4-d tensor stored NHWC (and not also plain contiguous, as 1x1 or
    one-channel tensors are), `contiguous` otherwise."""
    if q.dim() == 4 and not q.is_contiguous() and q.is_contiguous(memory_format=CL):
        return "channels_last"
    assert q.is_contiguous(), "only contiguous and channels-last tensors are recorded"
    return "contiguous"


def tdesc(q):
    assert q.qscheme() == torch.per_tensor_affine
    return {
        "memory_format": mem_format(q),
        "shape": list(q.shape),
        "scale": f32(q.q_scale()),
        "zero_point": int(q.q_zero_point()),
        "dtype": str(q.dtype).replace("torch.", ""),
        "ints": q.int_repr().contiguous().reshape(-1).tolist(),
    }


def rand_scale(rng, lo=0.004, hi=0.2):
    return f32(np.exp(rng.uniform(np.log(lo), np.log(hi))))


# ---------------------------------------------------------------- add / add_relu
def add_cases():
    shapes = [(1, 3, 5, 7), (2, 4, 9, 9), (1, 1, 1, 1), (1, 2, 11, 13), (1, 8, 8, 8), (3, 5, 1, 17)]
    cases = []
    idx = 0
    for relu in [False, True]:
        for k, shape in enumerate(shapes + shapes[:4]):
            rng = np.random.default_rng(seed_for("add", idx))
            kind = ["random", "pow2_ties", "saturate", "random", "equal", "pow2_ties",
                    "random", "saturate", "pow2_ties", "random"][k]
            if kind == "random":
                sa, sb, sy = rand_scale(rng), rand_scale(rng), rand_scale(rng)
            elif kind == "pow2_ties":
                sa = 2.0 ** -int(rng.integers(3, 7))
                sb = sa * 2.0 ** int(rng.integers(-1, 2))
                sy = sa * 2.0 ** int(rng.integers(1, 3))
            elif kind == "saturate":
                sa, sb = rand_scale(rng, 0.05, 0.2), rand_scale(rng, 0.05, 0.2)
                sy = rand_scale(rng, 0.004, 0.01)
            else:
                sa = sb = sy = rand_scale(rng)
            za, zb, zy = (int(rng.integers(0, 256)) for _ in range(3))
            a = rand_q(rng, shape, sa, za)
            b = rand_q(rng, shape, sb, zb)
            fn = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
            y = fn(a, b, f32(sy), zy)
            cases.append({
                "name": f"{'add_relu' if relu else 'add'}_{idx}_{kind}",
                "op": "add_relu" if relu else "add",
                "inputs": [tdesc(a), tdesc(b)],
                "attrs": {},
                "out": tdesc(y),
            })
            idx += 1
    return cases


def _x86_add_probe(rng):
    """Searches scales and zero points for which ATen's vector dequantization
    (fma(s, q, f32(s * -zp))) and its scalar one (f32(s * (q - zp))) give different add results;
    returns (sa, sb, sy, za, zb, zy, [(a, b), ...]) with the differing input pairs."""
    f = np.float32
    a = np.arange(256, dtype=np.int64)[:, None]
    b = np.arange(256, dtype=np.int64)[None, :]
    while True:
        sa, sb, sy = (rand_scale(rng) for _ in range(3))
        za, zb, zy = (int(rng.integers(0, 256)) for _ in range(3))
        c_s = (f(sa) * (a - za).astype(f) + f(sb) * (b - zb).astype(f)).astype(f)
        pa, pb = f(f(sa) * -f(za)), f(f(sb) * -f(zb))
        # f64 holds s*q + p exactly here (similar magnitudes), so one rounding = fma.
        da = (np.float64(f(sa)) * a + np.float64(pa)).astype(f)
        db = (np.float64(f(sb)) * b + np.float64(pb)).astype(f)
        c_v = (da + db).astype(f)
        inv = f(1.0) / f(sy)
        q = lambda c: np.clip(np.rint((c * inv).astype(f)).astype(np.int64) + zy, 0, 255)
        d = np.argwhere(q(c_s) != q(c_v))
        if len(d):
            return sa, sb, sy, za, zb, zy, [(int(i), int(j)) for i, j in d]


def add_isa_probe_cases():
    """Adds where the x86 engine's vector and scalar paths disagree: each tensor has 200
    elements (AVX512 runs the first 128 through the vector path, AVX2 the first 192, DEFAULT
    none) and holds a differing input pair at every 9th position, so both paths see it."""
    cases = []
    for idx in range(4):
        rng = np.random.default_rng(seed_for("add_isa_probe", idx))
        sa, sb, sy, za, zb, zy, pairs = _x86_add_probe(rng)
        shape = (1, 2, 10, 10)
        a = rng.integers(0, 256, size=200).astype(np.uint8)
        b = rng.integers(0, 256, size=200).astype(np.uint8)
        for k, pos in enumerate(range(0, 200, 9)):
            a[pos], b[pos] = pairs[k % len(pairs)]
        qa, qb = qt(a.reshape(shape), sa, za), qt(b.reshape(shape), sb, zb)
        relu = idx == 3
        fn = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
        y = fn(qa, qb, f32(sy), zy)
        op = "add_relu" if relu else "add"
        cases.append({
            "name": f"{op}_isa_probe_{idx}",
            "op": op,
            "inputs": [tdesc(qa), tdesc(qb)],
            "attrs": {},
            "out": tdesc(y),
        })
    return cases


# ---------------------------------------------------------------- cat
def cat_cases():
    cfgs = [
        # (shapes, dim, kind)
        ([(1, 3, 4, 5), (1, 5, 4, 5)], 1, "random"),
        ([(2, 2, 3, 3), (2, 1, 3, 3), (2, 4, 3, 3)], 1, "pow2_ties"),
        ([(1, 3, 4, 5), (1, 3, 4, 5)], 1, "saturate"),
        ([(1, 3, 2, 5), (1, 3, 6, 5)], 2, "random"),
        ([(1, 2, 3, 4), (1, 2, 3, 7)], 3, "random"),
        ([(1, 2, 3, 4), (2, 2, 3, 4)], 0, "random"),
        ([(1, 4, 5, 5), (1, 6, 5, 5)], 1, "equal"),
        ([(1, 4, 5, 5), (1, 6, 5, 5)], 1, "torch_cat"),
        ([(1, 3, 4, 5), (1, 2, 4, 5)], 1, "torch_cat_mixed"),
    ]
    cases = []
    for idx, (shapes, dim, kind) in enumerate(cfgs):
        rng = np.random.default_rng(seed_for("cat", idx))
        n = len(shapes)
        if kind == "pow2_ties":
            base = 2.0 ** -int(rng.integers(3, 7))
            scales = [base * 2.0 ** int(rng.integers(-1, 2)) for _ in range(n)]
            sy = base * 2.0
        elif kind == "saturate":
            scales = [rand_scale(rng, 0.05, 0.2) for _ in range(n)]
            sy = rand_scale(rng, 0.004, 0.01)
        elif kind in ("equal", "torch_cat"):
            s = rand_scale(rng)
            scales = [s] * n
            sy = s
        else:
            scales = [rand_scale(rng) for _ in range(n)]
            sy = rand_scale(rng)
        zps = [int(rng.integers(0, 256)) for _ in range(n)]
        zy = int(rng.integers(0, 256))
        if kind in ("equal", "torch_cat"):
            zps = [zps[0]] * n
            zy = zps[0]
        xs = [rand_q(rng, sh, s, z) for sh, s, z in zip(shapes, scales, zps)]
        if kind.startswith("torch_cat"):
            # Mixed qparams: torch.cat warns and requantizes to the first input's qparams.
            y = torch.cat(xs, dim=dim)
        else:
            y = torch.ops.quantized.cat(xs, dim=dim, scale=f32(sy), zero_point=zy)
        cases.append({
            "name": f"cat_{idx}_{kind}",
            "op": "torch_cat" if kind.startswith("torch_cat") else "cat",
            "inputs": [tdesc(x) for x in xs],
            "attrs": {"dim": dim},
            "out": tdesc(y),
        })
    return cases


# ---------------------------------------------------------------- pools
def pool_out(n, k, s, p, d, ceil):
    # PyTorch's pooling_output_shape
    num = n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    o = num // s + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


def max_pool_cases():
    cfgs = [
        # (shape, kernel, stride, padding, dilation, ceil_mode)
        ((1, 3, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1), False),
        ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), False),
        ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), True),
        ((1, 4, 10, 11), (3, 2), (1, 2), (1, 0), (2, 1), False),
        ((1, 2, 9, 10), (2, 3), (3, 2), (1, 1), (2, 2), True),
        ((1, 70, 5, 5), (3, 3), (1, 1), (1, 1), (1, 1), False),
        ((1, 1, 5, 6), (5, 6), (1, 1), (0, 0), (1, 1), False),
        ((1, 3, 6, 6), (2, 2), (2, 2), (1, 1), (1, 1), True),
    ]
    cases = []
    for idx, (shape, k, s, p, d, ceil) in enumerate(cfgs):
        rng = np.random.default_rng(seed_for("max_pool2d", idx))
        x = rand_q(rng, shape, rand_scale(rng), int(rng.integers(0, 256)))
        y = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil)
        cases.append({
            "name": f"max_pool2d_{idx}",
            "op": "max_pool2d",
            "inputs": [tdesc(x)],
            "attrs": {"kernel_size": list(k), "stride": list(s), "padding": list(p),
                      "dilation": list(d), "ceil_mode": ceil},
            "out": tdesc(y),
        })
    return cases


def avg_pool_cases():
    cfgs = [
        # (shape, kernel, stride, padding, ceil, count_include_pad, divisor_override)
        ((1, 3, 8, 8), (2, 2), (2, 2), (0, 0), False, True, None),
        ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), False, True, None),
        ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), False, False, None),
        ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1), True, True, None),
        ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1), True, False, None),
        ((1, 4, 10, 11), (3, 2), (1, 2), (1, 0), False, True, None),
        ((1, 2, 9, 10), (2, 3), (3, 2), (1, 1), True, False, None),
        ((1, 3, 6, 6), (2, 2), (2, 2), (0, 0), False, True, 3),
        ((1, 70, 5, 5), (3, 3), (1, 1), (1, 1), False, True, None),
        ((1, 1, 5, 6), (5, 6), (1, 1), (0, 0), False, True, None),
        ((1, 5, 4, 4), (2, 2), (1, 1), (0, 0), False, True, None),
        ((1, 3, 6, 6), (3, 3), (3, 3), (1, 1), True, True, 5),
    ]
    cases = []
    for idx, (shape, k, s, p, ceil, cip, div) in enumerate(cfgs):
        rng = np.random.default_rng(seed_for("avg_pool2d", idx))
        x = rand_q(rng, shape, rand_scale(rng), int(rng.integers(0, 256)))
        y = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=cip, divisor_override=div)
        cases.append({
            "name": f"avg_pool2d_{idx}",
            "op": "avg_pool2d",
            "inputs": [tdesc(x)],
            "attrs": {"kernel_size": list(k), "stride": list(s), "padding": list(p),
                      "ceil_mode": ceil, "count_include_pad": cip, "divisor_override": div},
            "out": tdesc(y),
        })
    return cases


def adaptive_avg_pool_cases():
    cfgs = [
        ((1, 3, 7, 7), (1, 1)),
        ((2, 5, 4, 6), (1, 1)),
        ((1, 70, 3, 3), (1, 1)),
        ((1, 4, 8, 8), (2, 2)),
        ((1, 3, 7, 9), (3, 4)),
        ((1, 2, 5, 5), (5, 5)),
        ((1, 2, 6, 4), (4, 3)),
        ((1, 16, 1, 1), (1, 1)),
        ((1, 3, 2, 2), (1, 1)),
    ]
    cases = []
    for idx, (shape, o) in enumerate(cfgs):
        rng = np.random.default_rng(seed_for("adaptive_avg_pool2d", idx))
        x = rand_q(rng, shape, rand_scale(rng), int(rng.integers(0, 256)))
        y = F.adaptive_avg_pool2d(x, o)
        cases.append({
            "name": f"adaptive_avg_pool2d_{idx}",
            "op": "adaptive_avg_pool2d",
            "inputs": [tdesc(x)],
            "attrs": {"output_size": list(o)},
            "out": tdesc(y),
        })
    return cases


# ---------------------------------------------------------------- linear
def linear_cases(engine):
    cfgs = [
        # (x_shape, out_features, per_channel, bias, relu, kind)
        ((4, 16), 8, False, True, False, "random"),
        ((3, 33), 5, False, False, False, "random"),
        ((2, 3, 20), 7, False, True, True, "random"),
        ((5, 64), 10, True, True, False, "random"),
        ((1, 7), 3, True, False, True, "random"),
        ((6, 24), 12, True, True, False, "pow2_ties"),
        ((2, 40), 4, False, True, False, "saturate"),
        ((3, 130), 9, True, True, True, "random"),
    ]
    cases = []
    for idx, (xs, o, pc, has_bias, relu, kind) in enumerate(cfgs):
        rng = np.random.default_rng(seed_for("linear", idx))
        k = xs[-1]
        if kind == "pow2_ties":
            sx = 2.0 ** -int(rng.integers(4, 7))
            sy = 2.0 ** -int(rng.integers(0, 3))
        elif kind == "saturate":
            sx = rand_scale(rng, 0.02, 0.05)
            sy = rand_scale(rng, 0.001, 0.003)
        else:
            sx, sy = rand_scale(rng), rand_scale(rng, 0.02, 0.5)
        zx, zy = int(rng.integers(0, 256)), int(rng.integers(0, 256))
        x = rand_q(rng, xs, sx, zx)
        w_ints = rng.integers(-128, 128, size=(o, k), dtype=np.int64).astype(np.int8)
        if pc:
            if kind == "pow2_ties":
                ws = [2.0 ** -int(rng.integers(5, 9)) for _ in range(o)]
            else:
                ws = [rand_scale(rng, 0.001, 0.02) for _ in range(o)]
            wz = [0] * o
            w = torch._make_per_channel_quantized_tensor(
                torch.tensor(w_ints), torch.tensor(ws, dtype=torch.float64),
                torch.tensor(wz, dtype=torch.int64), 0)
            wq = {"qscheme": "per_channel_affine", "scales": [f32(v) for v in ws],
                  "zero_points": wz}
        else:
            ws = 2.0 ** -int(rng.integers(5, 9)) if kind == "pow2_ties" else rand_scale(rng, 0.001, 0.02)
            w = torch._make_per_tensor_quantized_tensor(torch.tensor(w_ints), f32(ws), 0)
            wq = {"qscheme": "per_tensor_affine", "scales": [f32(ws)], "zero_points": [0]}
        bias = None
        if has_bias:
            bias = torch.tensor(rng.normal(0.0, 0.5, size=o).astype(np.float32))
            if kind == "pow2_ties":
                bias = torch.round(bias * 64) / 64
        packed = torch.ops.quantized.linear_prepack(w, bias)
        fn = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
        y = fn(x, packed, f32(sy), zy)
        wq.update({"shape": [o, k], "ints": w_ints.reshape(-1).tolist()})
        cases.append({
            "name": f"linear_{idx}_{'pc' if pc else 'pt'}_{kind}{'_relu' if relu else ''}",
            "op": "linear_relu" if relu else "linear",
            "inputs": [tdesc(x)],
            "weight": wq,
            "bias": None if bias is None else [float(v) for v in bias.tolist()],
            "attrs": {},
            "out": tdesc(y),
        })
    return cases


def _linear_formulas(acc, sx, sw, b, sy, zy):
    """The three requantization formulas PyTorch's engines use (see docs/ops.md), in float32."""
    f = np.float32
    acc = acc.astype(np.int64)
    sx, sy = f(sx), f(sy)
    sw, b = sw.astype(f), b.astype(f)
    s = (sw * sx).astype(f)
    bq = np.rint((b * (f(1) / s).astype(f)).astype(f)).astype(np.int64)
    m = (s * (f(1) / sy)).astype(f)
    qn = np.rint(((acc + bq).astype(f) * m).astype(f)).astype(np.int64) + zy
    s2 = (sx * sw).astype(f)
    m2 = (s2 / sy).astype(f)
    bf = (b / s2).astype(f)
    fb = np.rint(((acc.astype(f) + bf).astype(f) * m2).astype(f)).astype(np.int64) + zy
    inv = f(1) / sy
    on = np.rint(((((acc.astype(f) * sx).astype(f) * sw).astype(f) + b).astype(f) * inv
                  ).astype(f) + f(zy)).astype(np.int64)
    c = lambda v: np.clip(v, 0, 255)
    return c(qn), c(fb), c(on)


def linear_probe_cases():
    """Linear layers on which the qnnpack, fbgemm and onednn formulas give different ints
    (found by a seeded search with a NumPy model of the three), so the fixtures tell them
    apart: per-tensor and per-channel weights, with bias."""
    cases = []
    for idx, pc in enumerate([False, True, False, True]):
        rng = np.random.default_rng(seed_for("linear_probe", idx))
        while True:
            n, k, o = 16, int(rng.integers(8, 48)), 16
            sx, sy = rand_scale(rng), rand_scale(rng, 0.01, 0.2)
            zx, zy = int(rng.integers(0, 256)), int(rng.integers(0, 256))
            x = rng.integers(0, 256, size=(n, k)).astype(np.uint8)
            wi = rng.integers(-128, 128, size=(o, k)).astype(np.int8)
            sw = (np.array([rand_scale(rng, 0.001, 0.02) for _ in range(o)]) if pc
                  else np.full(o, rand_scale(rng, 0.001, 0.02))).astype(np.float32)
            b = rng.normal(0.0, 0.5, size=o).astype(np.float32)
            acc = (x.astype(np.int64) - zx) @ wi.astype(np.int64).T
            qn, fb, on = _linear_formulas(acc, sx, sw, b, sy, zy)
            if (qn != fb).any() and (fb != on).any():
                break
        qx = qt(x, sx, zx)
        if pc:
            w = torch._make_per_channel_quantized_tensor(
                torch.tensor(wi), torch.tensor(sw.astype(np.float64)),
                torch.zeros(o, dtype=torch.int64), 0)
            wq = {"qscheme": "per_channel_affine", "scales": [f32(v) for v in sw],
                  "zero_points": [0] * o}
        else:
            w = torch._make_per_tensor_quantized_tensor(torch.tensor(wi), f32(sw[0]), 0)
            wq = {"qscheme": "per_tensor_affine", "scales": [f32(sw[0])], "zero_points": [0]}
        bias = torch.tensor(b)
        y = torch.ops.quantized.linear(qx, torch.ops.quantized.linear_prepack(w, bias),
                                       f32(sy), zy)
        wq.update({"shape": [o, k], "ints": wi.reshape(-1).tolist()})
        cases.append({
            "name": f"linear_probe_{idx}_{'pc' if pc else 'pt'}",
            "op": "linear",
            "inputs": [tdesc(qx)],
            "weight": wq,
            "bias": [float(v) for v in b],
            "attrs": {},
            "out": tdesc(y),
        })
    return cases


# ---------------------------------------------------------------- activations, flatten
def activation_cases():
    cfgs = [
        ("relu", {}, (1, 3, 5, 7)),
        ("relu", {}, (2, 70, 3)),
        ("relu6", {}, (1, 4, 6, 6)),
        ("relu6", {}, (2, 3, 5, 7)),
        ("hardtanh", {"min_val": -1.0, "max_val": 1.0}, (1, 3, 5, 7)),
        ("hardtanh", {"min_val": -0.35, "max_val": 2.3}, (1, 2, 9, 9)),
        ("hardtanh", {"min_val": 0.0, "max_val": 6.0}, (1, 2, 9, 9)),
        ("clamp", {"min_val": -0.5, "max_val": 0.75}, (1, 3, 5, 7)),
        ("flatten", {"start_dim": 1}, (2, 3, 4, 5)),
        ("reshape", {"shape": [3, -1]}, (1, 3, 4, 5)),
        ("relu6", {"via": "torch.ops.quantized.relu6"}, (1, 5, 7, 3)),
    ]
    cases = []
    for idx, (op, attrs, shape) in enumerate(cfgs):
        rng = np.random.default_rng(seed_for("activation", idx))
        s = rand_scale(rng, 0.01, 0.1)
        if idx == 3:
            s = 0.0234375  # 6/s = 256: relu6's bound saturates
        z = int(rng.integers(0, 256))
        x = rand_q(rng, shape, s, z)
        if op == "relu":
            y = torch.relu(x)
        elif op == "relu6" and attrs:
            y = torch.ops.quantized.relu6(x)
        elif op == "relu6":
            y = F.relu6(x)
        elif op == "hardtanh":
            y = F.hardtanh(x, attrs["min_val"], attrs["max_val"])
        elif op == "clamp":
            y = torch.clamp(x, attrs["min_val"], attrs["max_val"])
        elif op == "flatten":
            y = torch.flatten(x, attrs["start_dim"])
        else:
            y = x.reshape(attrs["shape"])
        cases.append({"name": f"{op}_{idx}", "op": op, "inputs": [tdesc(x)], "attrs": attrs,
                      "out": tdesc(y)})
    return cases


# ---------------------------------------------------------------- channels-last (NHWC) inputs
# Quantized convs return channels-last tensors, and ATen sends those to NHWC kernels of their
# own (`q/cpu/kernels/QuantizedOpKernels.cpp`). Each case below runs the op on
# `x.contiguous(memory_format=torch.channels_last)` and says so with
# `"memory_format": "channels_last"` ("mixed" when only some inputs are); the ints are still
# written in NCHW order, and every tensor records its own `memory_format`.
def to_cl(q):
    return q.contiguous(memory_format=CL)


def from_memory_order(mem, shape):
    """NCHW ints of a channels-last tensor whose memory (NHWC order) holds `mem`."""
    n, c, h, w = shape
    return np.asarray(mem).reshape(n, h, w, c).transpose(0, 3, 1, 2)


def _window_stats(shape, k, s, p, ceil, cip, div):
    """(size, divisor) of every avg-pool output window, as (N*C, Ho, Wo)-broadcastable
    arrays, from float avg pools of ones (exact)."""
    ones = torch.ones((1, 1) + tuple(shape[2:]))
    size = F.avg_pool2d(ones, k, s, p, ceil_mode=ceil, count_include_pad=False,
                        divisor_override=1)[0, 0].numpy().astype(np.int64)
    if div:
        divisor = np.full_like(size, div)
    elif cip:
        frac = F.avg_pool2d(ones, k, s, p, ceil_mode=ceil, count_include_pad=True)[0, 0].numpy()
        divisor = np.rint(size / frac).astype(np.int64)
    else:
        divisor = size
    return size, divisor


def _avg_nchw_vs_nhwc(x, zp, k, s, p, ceil, cip, div):
    """Number of outputs on which the NCHW rounding (`rne(f32(f32(acc) m) + zp)`) and the NHWC
    one (`rne(f32(acc m)) + zp`) differ, for int input x (N, C, H, W)."""
    f = np.float32
    size, divisor = _window_stats(x.shape, k, s, p, ceil, cip, div)
    sums = F.avg_pool2d(torch.tensor(x, dtype=torch.float64), k, s, p, ceil_mode=ceil,
                        count_include_pad=False, divisor_override=1).numpy().astype(np.int64)
    acc = sums - size * zp
    m = (f(1) / divisor.astype(f)).astype(f)
    nchw = np.clip(np.rint(((acc.astype(f) * m).astype(f) + f(zp)).astype(f)), 0, 255)
    nhwc = np.clip(np.rint((acc.astype(f) * m).astype(f)) + zp, 0, 255)
    return int((nchw != nhwc).sum())


def avg_pool_cl_cases():
    """Channels-last avg pools on both kernels' paths (the NHWC kernel vectorizes 8 channels at
    a time on AVX2, 16 on AVX512, scalar rest), with odd zero points and small input ranges so
    that many windows end in ties; inputs are redrawn (at most 200 times) until the NCHW and
    NHWC roundings differ somewhere, which needs an even divisor (odd ones never tie)."""
    cfgs = [
        # (shape, kernel, stride, padding, ceil, count_include_pad, divisor_override)
        ((1, 3, 8, 8), (2, 2), (2, 2), (0, 0), False, True, None),
        ((1, 13, 5, 7), (3, 3), (2, 2), (1, 1), False, True, None),
        ((1, 13, 5, 7), (3, 3), (2, 2), (1, 1), False, False, None),
        ((2, 5, 5, 7), (3, 3), (2, 2), (1, 1), True, True, None),
        ((1, 19, 5, 7), (3, 3), (2, 2), (1, 1), True, False, None),
        ((1, 24, 5, 7), (3, 2), (1, 2), (1, 0), False, True, None),
        ((1, 7, 9, 10), (2, 3), (3, 2), (1, 1), True, False, None),
        ((1, 16, 6, 6), (2, 2), (2, 2), (0, 0), False, True, 3),
        ((1, 70, 3, 3), (3, 3), (1, 1), (1, 1), False, True, None),
        ((1, 9, 6, 6), (3, 3), (3, 3), (1, 1), True, True, 5),
        ((1, 21, 5, 6), (5, 2), (1, 2), (2, 1), False, False, None),
        ((1, 32, 4, 4), (2, 2), (1, 1), (0, 0), False, True, 6),
    ]
    cases = []
    for idx, (shape, k, s, p, ceil, cip, div) in enumerate(cfgs):
        rng = np.random.default_rng(seed_for("avg_pool2d_cl", idx))
        for attempt in range(200):
            zp = int(rng.integers(1, 128)) * 2 - 1  # odd
            lo = int(rng.integers(0, 200))
            x = rng.integers(lo, lo + 12, size=shape)
            if idx == 0 and attempt == 0:
                x = rng.integers(0, 256, size=shape)  # one unconstrained case
                break
            if _avg_nchw_vs_nhwc(x, zp, k, s, p, ceil, cip, div) > 0:
                break
        q = to_cl(qt(x, rand_scale(rng), zp))
        y = F.avg_pool2d(q, k, s, p, ceil_mode=ceil, count_include_pad=cip, divisor_override=div)
        cases.append({
            "name": f"avg_pool2d_cl_{idx}",
            "op": "avg_pool2d",
            "memory_format": "channels_last",
            "inputs": [tdesc(q)],
            "attrs": {"kernel_size": list(k), "stride": list(s), "padding": list(p),
                      "ceil_mode": ceil, "count_include_pad": cip, "divisor_override": div},
            "out": tdesc(y),
        })
    return cases


def adaptive_avg_pool_cl_cases():
    cfgs = [
        ((1, 3, 7, 7), (1, 1)),
        ((2, 13, 4, 4), (1, 1)),
        ((1, 70, 3, 3), (1, 1)),
        ((1, 24, 2, 2), (1, 1)),
        ((1, 9, 8, 8), (2, 2)),
        ((1, 17, 5, 7), (3, 4)),
        ((1, 8, 6, 4), (4, 3)),
        ((1, 11, 5, 5), (5, 5)),
        ((1, 16, 4, 6), (3, 5)),
    ]
    cases = []
    for idx, (shape, o) in enumerate(cfgs):
        rng = np.random.default_rng(seed_for("adaptive_avg_pool2d_cl", idx))
        zp = int(rng.integers(1, 128)) * 2 - 1
        lo = int(rng.integers(0, 200))
        x = rng.integers(lo, lo + 12, size=shape) if idx else rng.integers(0, 256, size=shape)
        q = to_cl(qt(x, rand_scale(rng), zp))
        y = F.adaptive_avg_pool2d(q, o)
        cases.append({
            "name": f"adaptive_avg_pool2d_cl_{idx}",
            "op": "adaptive_avg_pool2d",
            "memory_format": "channels_last",
            "inputs": [tdesc(q)],
            "attrs": {"output_size": list(o)},
            "out": tdesc(y),
        })
    return cases


def max_pool_cl_cases():
    cfgs = [
        ((1, 3, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1), False),
        ((2, 13, 5, 7), (3, 3), (2, 2), (1, 1), (1, 1), True),
        ((1, 20, 7, 6), (3, 2), (1, 2), (1, 0), (2, 1), False),
        ((1, 70, 3, 3), (3, 3), (1, 1), (1, 1), (1, 1), False),
        ((1, 9, 7, 8), (2, 3), (3, 2), (1, 1), (2, 2), True),
    ]
    cases = []
    for idx, (shape, k, s, p, d, ceil) in enumerate(cfgs):
        rng = np.random.default_rng(seed_for("max_pool2d_cl", idx))
        q = to_cl(rand_q(rng, shape, rand_scale(rng), int(rng.integers(0, 256))))
        y = F.max_pool2d(q, k, s, p, d, ceil_mode=ceil)
        cases.append({
            "name": f"max_pool2d_cl_{idx}",
            "op": "max_pool2d",
            "memory_format": "channels_last",
            "inputs": [tdesc(q)],
            "attrs": {"kernel_size": list(k), "stride": list(s), "padding": list(p),
                      "dilation": list(d), "ceil_mode": ceil},
            "out": tdesc(y),
        })
    return cases


def add_cl_cases():
    """Channels-last adds: the x86 kernel splits vector / scalar by memory (NHWC) position, so
    the probe pairs are placed every 9th memory position of 200-element tensors; with NCHW
    positions the tail would be other elements. Plus plain random ones (sizes not multiples of
    64)."""
    cases = []
    shapes = [(1, 3, 5, 7), (2, 5, 3, 3), (1, 13, 3, 5)]
    for idx, shape in enumerate(shapes):
        rng = np.random.default_rng(seed_for("add_cl", idx))
        sa, sb, sy = rand_scale(rng), rand_scale(rng), rand_scale(rng)
        za, zb, zy = (int(rng.integers(0, 256)) for _ in range(3))
        a, b = to_cl(rand_q(rng, shape, sa, za)), to_cl(rand_q(rng, shape, sb, zb))
        relu = idx == 1
        fn = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
        op = "add_relu" if relu else "add"
        cases.append({"name": f"{op}_cl_{idx}", "op": op, "memory_format": "channels_last",
                      "inputs": [tdesc(a), tdesc(b)], "attrs": {},
                      "out": tdesc(fn(a, b, f32(sy), zy))})
    for idx in range(3):
        rng = np.random.default_rng(seed_for("add_cl_probe", idx))
        sa, sb, sy, za, zb, zy, pairs = _x86_add_probe(rng)
        shape = [(1, 8, 5, 5), (2, 4, 5, 5), (1, 40, 1, 5)][idx]
        a = rng.integers(0, 256, size=200).astype(np.uint8)
        b = rng.integers(0, 256, size=200).astype(np.uint8)
        for k, pos in enumerate(range(0, 200, 9)):
            a[pos], b[pos] = pairs[k % len(pairs)]
        qa = to_cl(qt(from_memory_order(a, shape), sa, za))
        qb = to_cl(qt(from_memory_order(b, shape), sb, zb))
        relu = idx == 2
        fn = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
        op = "add_relu" if relu else "add"
        cases.append({"name": f"{op}_cl_probe_{idx}", "op": op,
                      "memory_format": "channels_last", "inputs": [tdesc(qa), tdesc(qb)],
                      "attrs": {}, "out": tdesc(fn(qa, qb, f32(sy), zy))})
    return cases


def add_mixed_cases():
    """Adds of one channels-last and one contiguous input: TensorIterator finds an input strided
    along the innermost dimension and runs the scalar lambda everywhere (`basic_loop`), whatever
    the CPU. One-channel tensors and 1x1 planes are both layouts at once (the vector path runs
    as for contiguous tensors). Probe pairs sit at every 9th element, as in the other probes."""
    cases = []
    cfgs = [
        # (shape, a channels-last, b channels-last, relu)
        ((1, 8, 5, 5), True, False, False),
        ((2, 4, 5, 5), False, True, False),
        ((1, 40, 1, 5), True, False, True),
        ((1, 1, 10, 20), True, False, False),
        ((2, 100, 1, 1), False, True, False),
    ]
    for idx, (shape, a_cl, b_cl, relu) in enumerate(cfgs):
        rng = np.random.default_rng(seed_for("add_mixed_probe", idx))
        sa, sb, sy, za, zb, zy, pairs = _x86_add_probe(rng)
        a = rng.integers(0, 256, size=200).astype(np.uint8)
        b = rng.integers(0, 256, size=200).astype(np.uint8)
        for k, pos in enumerate(range(0, 200, 9)):
            a[pos], b[pos] = pairs[k % len(pairs)]
        qa, qb = qt(a.reshape(shape), sa, za), qt(b.reshape(shape), sb, zb)
        qa, qb = (to_cl(qa) if a_cl else qa), (to_cl(qb) if b_cl else qb)
        fn = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
        op = "add_relu" if relu else "add"
        cases.append({"name": f"{op}_mixed_probe_{idx}", "op": op, "memory_format": "mixed",
                      "inputs": [tdesc(qa), tdesc(qb)], "attrs": {},
                      "out": tdesc(fn(qa, qb, f32(sy), zy))})
    return cases


def _cat_fma_probe(rng):
    """Scale and zero points for which the vector dequantization (fma(s, q, f32(s * -zp))) and
    the scalar one (f32(s * (q - zp))) requantize some q differently: (s, zp, sy, zy, [q...])."""
    f = np.float32
    q = np.arange(256, dtype=np.int64)
    while True:
        s, sy = rand_scale(rng), rand_scale(rng)
        zp, zy = int(rng.integers(0, 256)), int(rng.integers(0, 256))
        d_s = (f(s) * (q - zp).astype(f)).astype(f)
        d_v = (np.float64(f(s)) * q + np.float64(f(f(s) * -f(zp)))).astype(f)
        inv_s = f(1.0) / f(sy)
        inv_v = f(1.0 / np.float64(f(sy)))
        qs = np.clip(np.rint((d_s * inv_s).astype(f)).astype(np.int64) + zy, 0, 255)
        qv = np.clip(np.rint((d_v * inv_v).astype(f)).astype(np.int64) + zy, 0, 255)
        diff = np.nonzero(qs != qv)[0]
        if len(diff):
            return s, zp, sy, zy, [int(v) for v in diff]


def cat_cl_cases():
    """Channels-last cats: all inputs channels-last along dim 1 take `qcat_nhwc_kernel`
    (vectorized requantization of channel blocks, scalar rest); other dims and mixed memory
    formats take the generic path."""
    cases = []
    cfgs = [
        # (shapes, dim, formats ("c"/"cl" per input), kind)
        ([(1, 3, 4, 5), (1, 13, 4, 5)], 1, "cl", "random"),
        ([(1, 13, 3, 3), (1, 21, 3, 3), (1, 40, 3, 3)], 1, "cl", "probe"),
        ([(2, 5, 3, 3), (2, 9, 3, 3)], 1, "cl", "torch_cat"),
        ([(1, 11, 3, 4), (1, 6, 3, 4)], 1, "cl", "torch_cat_mixed"),
        ([(1, 11, 3, 4), (1, 6, 3, 4)], 1, "cl", "first_equal"),
        ([(1, 5, 3, 4), (1, 7, 3, 4)], 1, ["cl", "c"], "random"),
        ([(1, 9, 2, 4), (1, 9, 3, 4)], 2, "cl", "random"),
        ([(1, 6, 3, 4), (1, 6, 3, 2)], 3, ["c", "cl"], "random"),
    ]
    for idx, (shapes, dim, fmts, kind) in enumerate(cfgs):
        rng = np.random.default_rng(seed_for("cat_cl", idx))
        n = len(shapes)
        fmts = [fmts] * n if isinstance(fmts, str) else fmts
        if kind == "probe":
            s, zp, sy, zy, qs = _cat_fma_probe(rng)
            scales, zps = [s] * n, [zp] * n
            ints = [rng.choice(qs, size=sh) for sh in shapes]
        else:
            scales = [rand_scale(rng) for _ in range(n)]
            zps = [int(rng.integers(0, 256)) for _ in range(n)]
            sy, zy = rand_scale(rng), int(rng.integers(0, 256))
            if kind == "torch_cat":
                scales, zps = [scales[0]] * n, [zps[0]] * n
            if kind == "first_equal":
                sy, zy = scales[0], zps[0]
            ints = [rng.integers(0, 256, size=sh) for sh in shapes]
        xs = [qt(i, sc, z) for i, sc, z in zip(ints, scales, zps)]
        xs = [to_cl(x) if f_ == "cl" else x for x, f_ in zip(xs, fmts)]
        if kind.startswith("torch_cat"):
            y = torch.cat(xs, dim=dim)
        else:
            y = torch.ops.quantized.cat(xs, dim=dim, scale=f32(sy), zero_point=zy)
        cases.append({
            "name": f"cat_cl_{idx}_{kind}",
            "op": "torch_cat" if kind.startswith("torch_cat") else "cat",
            "memory_format": "channels_last" if set(fmts) == {"cl"} else "mixed",
            "inputs": [tdesc(x) for x in xs],
            "attrs": {"dim": dim},
            "out": tdesc(y),
        })
    return cases


FAMILIES = {
    "add": lambda e: add_cases() + add_isa_probe_cases() + add_cl_cases() + add_mixed_cases(),
    "cat": lambda e: cat_cases() + cat_cl_cases(),
    "max_pool2d": lambda e: max_pool_cases() + max_pool_cl_cases(),
    "avg_pool2d": lambda e: avg_pool_cases() + avg_pool_cl_cases(),
    "adaptive_avg_pool2d": lambda e: adaptive_avg_pool_cases() + adaptive_avg_pool_cl_cases(),
    "linear": lambda e: linear_cases(e) + linear_probe_cases(),
    "activation": lambda e: activation_cases(),
}


def fbgemm_isa():
    """The instruction set FBGEMM (the x86 engine's linear) runs with: FBGEMM picks it itself
    (ATEN_CPU_CAPABILITY does not apply), and FBGEMM_ENABLE_INSTRUCTIONS overrides it."""
    env = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS")
    if env:
        return {"AVX512_E1": "AVX512_VNNI"}.get(env, env)
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        return "unknown"
    if "avx512_vnni" in flags:
        return "AVX512_VNNI"
    if all(f in flags for f in ["avx512f", "avx512bw", "avx512dq", "avx512vl"]):
        return "AVX512"
    return "AVX2" if "avx2" in flags else "unknown"


def generate(out_dir, engines, suffix=""):
    os.makedirs(out_dir, exist_ok=True)
    cap = torch.backends.cpu.get_cpu_capability()
    written = {}
    for engine in engines:
        torch.backends.quantized.engine = engine
        for fam, gen in FAMILIES.items():
            doc = {
                "op": fam,
                "engine": engine,
                "torch_version": torch.__version__,
                "cpu_capability": cap,
                "fbgemm_isa": fbgemm_isa(),
                "cases": gen(engine),
            }
            path = os.path.join(out_dir, f"{fam}_{engine}{suffix}.json")
            with open(path, "w") as f:
                json.dump(doc, f, separators=(",", ":"))
                f.write("\n")
            written[(fam, engine)] = doc
    return written


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "ops"))
    ap.add_argument("--only-x86-to", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only_x86_to:
        generate(args.only_x86_to, ["x86"])
        return
    native = generate(args.out, ENGINES)
    # ISA sweep of the x86 engine: the same cases under other ATen CPU capabilities.
    variants = {}
    for cap in ["avx2", "default", "fbgemm_avx2"]:
        with tempfile.TemporaryDirectory() as tmp:
            if cap == "fbgemm_avx2":
                # FBGEMM without VNNI: u8*s8 pair products summed in saturating int16.
                env = dict(os.environ, FBGEMM_ENABLE_INSTRUCTIONS="AVX2")
            else:
                env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
            subprocess.run([sys.executable, __file__, "--only-x86-to", tmp], check=True, env=env)
            for fam in FAMILIES:
                with open(os.path.join(tmp, f"{fam}_x86.json")) as f:
                    variants[(fam, cap)] = json.load(f)
    for fam in FAMILIES:
        doc = native[(fam, "x86")]
        dependent = {}
        for cap in ["avx2", "default", "fbgemm_avx2"]:
            v = variants[(fam, cap)]
            diff = [c["name"] for c, d in zip(doc["cases"], v["cases"]) if c["out"] != d["out"]]
            if diff:
                key = f"FBGEMM {v['fbgemm_isa']}" if cap.startswith("fbgemm") else v["cpu_capability"]
                dependent[key] = diff
        doc["isa_dependent_cases"] = dependent
        with open(os.path.join(args.out, f"{fam}_x86.json"), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        if dependent:
            for cap in ["avx2", "default", "fbgemm_avx2"]:
                if cap.startswith("fbgemm") and not any(k.startswith("FBGEMM") for k in dependent):
                    continue
                if not cap.startswith("fbgemm") and set(dependent) <= {"FBGEMM AVX2"}:
                    continue
                v = variants[(fam, cap)]
                v["isa_dependent_cases"] = dependent
                with open(os.path.join(args.out, f"{fam}_x86_{cap}.json"), "w") as f:
                    json.dump(v, f, separators=(",", ":"))
                    f.write("\n")
        print(f"{fam}: x86 results differing by ISA: {dependent or 'none'}")


if __name__ == "__main__":
    main()
