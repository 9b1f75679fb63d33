#!/usr/bin/env python3
"""Golden fixtures for squint's reference of ONNX Runtime's quantized CPU ops
(`squint::cpu::reference::ort`, checked by tests/ort_ops_golden.rs).

Each case is one single-node ONNX model (QLinear* ops of the default domain, the
com.microsoft ones for QLinearAdd / QLinearConcat / QLinearAveragePool /
QLinearGlobalAveragePool) run by onnxruntime's CPU execution provider, single-threaded, with
graph optimizations off. The data inputs (x, a, b) are graph inputs; weights, bias, scales and
zero points are initializers, as in a quantized model (ORT prepacks constant weights).

One JSON file per op in tests/data/ort_ops/:

    {op}.json = {"op", "onnxruntime_version", "cpu_flags", "cases": [...]}
    case      = {"name", "attrs": {name: int | [int]}, "inputs": {name: tensor},
                 "output": tensor}
    tensor    = {"dtype": "uint8" | "int8" | "int32" | "float32", "shape": [..],
                 "data": [..]}                     (float32 data as IEEE-754 bit patterns)

`cpu_flags` are the x86 flags of this machine that select MLAS kernels (avx2, fma,
avx512f, avx512_vnni, avxvnni). ISA note: ORT's u8s8 GEMM/conv kernels on AVX2 and AVX-512
without VNNI (`vpmaddubsw`) saturate int16 pair sums when int8 weights use the full range;
every int8 weight here is 7-bit ([-64, 63], what `reduce_range` gives), so the outputs are
the same on every x86 ISA. QLinearAdd's float order differs between the AVX2 and SSE2
kernels; the fixtures record the flags and the test picks the kernel from them.

Usage: python3 scripts/gen_ort_op_fixtures.py [--out tests/data/ort_ops]
Needs onnx and onnxruntime (from PyPI). Deterministic.
"""

import argparse
import json
import os
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

NP = {"uint8": np.uint8, "int8": np.int8, "int32": np.int32, "float32": np.float32}
ONNX_TYPE = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8,
             "int32": TensorProto.INT32, "float32": TensorProto.FLOAT}


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":")[1].split())
                    keep = ["sse2", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                            "avx_vnni"]
                    return [k for k in keep if k in have]
    except OSError:
        pass
    return []


def tensor_json(a):
    a = np.asarray(a)
    dt = str(a.dtype)
    data = a.view(np.uint32) if dt == "float32" else a
    return {"dtype": dt, "shape": list(a.shape), "data": data.reshape(-1).tolist()}


def run(op, inputs, consts, attrs, out_dtype, domain=""):
    """Runs a single `op` node: `inputs` (graph inputs) then `consts` (initializers), in the
    node's input order given by the dict orders and `order`."""
    names = list(inputs) + list(consts)
    return run_ordered(op, names, inputs, consts, attrs, out_dtype, domain)


def run_ordered(op, order, inputs, consts, attrs, out_dtype, domain=""):
    node = helper.make_node(op, [n if n else "" for n in order], ["y"], domain=domain, **attrs)
    g_in = [helper.make_tensor_value_info(n, ONNX_TYPE[str(np.asarray(v).dtype)],
                                          list(np.asarray(v).shape))
            for n, v in inputs.items()]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items()]
    g_out = [helper.make_tensor_value_info("y", ONNX_TYPE[out_dtype], None)]
    graph = helper.make_graph([node], op, g_in, g_out, inits)
    opsets = [helper.make_opsetid("", 21)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {n: np.asarray(v) for n, v in inputs.items()})[0]


def case(name, attrs, inputs, consts, y):
    all_in = {**inputs, **consts}
    return {"name": name, "attrs": attrs,
            "inputs": {n: tensor_json(v) for n, v in all_in.items()},
            "output": tensor_json(y)}


def rng_for(op, i):
    return np.random.default_rng(zlib.crc32(f"{op}/{i}".encode()))


def f32(x):
    return np.float32(x)


def qrange(dt):
    return (0, 255) if dt == "uint8" else (-128, 127)


def rand_q(rng, shape, dt, lo=None, hi=None):
    a, b = qrange(dt)
    lo = a if lo is None else lo
    hi = b if hi is None else hi
    return rng.integers(lo, hi + 1, size=shape).astype(NP[dt])


def rand_scale(rng, lo=1e-3, hi=0.1):
    return f32(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def zp(rng, dt, edge=None):
    if edge is not None:
        return np.array(edge, dtype=NP[dt])
    a, b = qrange(dt)
    return np.array(rng.integers(a, b + 1), dtype=NP[dt])


# ---------------------------------------------------------------------------------------------
# Probes: inputs on which candidate formulas disagree, so that the fixtures pin the one ORT
# uses (emulated here in numpy float32; ORT's output decides).

def _fma32(a, b, c):
    """float32 fused multiply-add (exact product and sum in float64, one rounding; the
    product of a small int and a float32 is exact in float64)."""
    return (np.asarray(a, np.float64) * np.float64(b) + np.float64(c)).astype(np.float32)


def add_probe(rng, dt):
    """QLinearAdd qparams and input pairs on which the AVX2 (FMA), SSE2 and portable kernels'
    formulas do not all agree."""
    lo, hi = qrange(dt)
    grid = np.arange(lo, hi + 1, dtype=np.float32)
    A, B = [g.reshape(-1) for g in np.meshgrid(grid, grid)]
    while True:
        sa, sb, sc = [rand_scale(rng, 0.01, 0.1) for _ in range(3)]
        za, zb, zc = [int(rng.integers(lo, hi + 1)) for _ in range(3)]
        ra, rb = f32(sa / sc), f32(sb / sc)
        F = f32(f32(zc) - f32(f32(ra * f32(za)) + f32(rb * f32(zb))))
        avx = np.clip(np.rint(_fma32(A, ra, _fma32(B, rb, F))), lo, hi)
        sse = np.clip(np.rint(f32(F + f32(A * ra)) + f32(B * rb)), lo, hi)
        va, vb = f32(sa) * f32(A - za), f32(sb) * f32(B - zb)
        raw = np.clip(np.rint(f32(np.clip(f32(f32(va + vb) / sc), lo - zc, hi - zc)) + zc), lo, hi)
        idx = np.nonzero((avx != sse) | (avx != raw))[0]
        if len(idx) >= 4:
            idx = idx[:48]
            q = lambda v: np.asarray(v, dtype=NP[dt])
            return (A[idx].astype(NP[dt]), B[idx].astype(NP[dt]),
                    {"A_scale": np.asarray(sa), "A_zero_point": q(za),
                     "B_scale": np.asarray(sb), "B_zero_point": q(zb),
                     "C_scale": np.asarray(sc), "C_zero_point": q(zc)})


def add_scalar_probe(rng, dt):
    """QLinearAdd qparams, a scalar B and inputs A on which `fma(a, rA, F + b*rB)` rounded
    after the multiply differs from the fused `fma(a, rA, fma(b, rB, F))`."""
    lo, hi = qrange(dt)
    A = np.arange(lo, hi + 1, dtype=np.float32)
    while True:
        sa, sb, sc = [rand_scale(rng, 0.01, 0.1) for _ in range(3)]
        za, zb, zc = [int(rng.integers(lo, hi + 1)) for _ in range(3)]
        b = int(rng.integers(lo, hi + 1))
        ra, rb = f32(sa / sc), f32(sb / sc)
        F = f32(f32(zc) - _fma32(ra, f32(za), f32(rb * f32(zb))))
        split = np.clip(np.rint(_fma32(A, ra, f32(F + f32(f32(b) * rb)))), lo, hi)
        fused = np.clip(np.rint(_fma32(A, ra, _fma32(f32(b), rb, F))), lo, hi)
        idx = np.nonzero(split != fused)[0]
        if len(idx) >= 1:
            q = lambda v: np.asarray(v, dtype=NP[dt])
            a = np.concatenate([A[idx], A[:40 - len(idx[:8])]])[:40].astype(NP[dt])
            return (a, np.array([b], dtype=NP[dt]),
                    {"A_scale": np.asarray(sa), "A_zero_point": q(za),
                     "B_scale": np.asarray(sb), "B_zero_point": q(zb),
                     "C_scale": np.asarray(sc), "C_zero_point": q(zc)})


def add_broadcast_probe(rng, dt, a_shape, b_shape):
    """Random A, B of the given (broadcasting) shapes and qparams on which the AVX2 kernel's
    result depends on the operand order (ORT swaps A into B's place where A is the scalar of
    a span)."""
    lo, hi = qrange(dt)
    while True:
        a, b = rand_q(rng, a_shape, dt), rand_q(rng, b_shape, dt)
        sa, sb, sc = [rand_scale(rng, 0.01, 0.1) for _ in range(3)]
        za, zb, zc = [int(rng.integers(lo, hi + 1)) for _ in range(3)]
        A, B = [x.astype(np.float32) for x in np.broadcast_arrays(a, b)]

        def avx2(x, y, sx, sy, zx, zy):
            rx, ry = f32(sx / sc), f32(sy / sc)
            F = f32(f32(zc) - _fma32(rx, f32(zx), f32(ry * f32(zy))))
            return np.clip(np.rint(_fma32(x, rx, _fma32(y, ry, F))), lo, hi)

        if (avx2(A, B, sa, sb, za, zb) != avx2(B, A, sb, sa, zb, za)).any():
            q = lambda v: np.asarray(v, dtype=NP[dt])
            return a, b, {"A_scale": np.asarray(sa), "A_zero_point": q(za),
                          "B_scale": np.asarray(sb), "B_zero_point": q(zb),
                          "C_scale": np.asarray(sc), "C_zero_point": q(zc)}


def quantize_probe(rng, n):
    """A scale and floats x whose `rne(x / s)` and `rne(x * f32(1 / s))` differ."""
    while True:
        s = rand_scale(rng, 1e-3, 0.1)
        k = rng.integers(-120, 120, size=20000)
        x = ((k + 0.5) * np.float64(s)).astype(np.float32)
        x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, -np.inf)])
        d = np.rint(x / s) != np.rint(x * f32(f32(1) / s))
        if d.sum() >= n:
            return s, x[d][:n].astype(np.float32)


def requant_probe(rng):
    """Scales (sa, sb, sy) where `f32(f32(sa * sb) / sy)` differs from `f32(sa * f32(sb / sy))`
    and accumulators whose requantization differs between the two."""
    while True:
        sa, sb, sy = rand_scale(rng, 0.01, 0.05), rand_scale(rng, 1e-3, 2e-2), rand_scale(rng, 0.02, 0.2)
        m1, m2 = f32(f32(sa * sb) / sy), f32(sa * f32(sb / sy))
        if m1 == m2:
            continue
        acc = np.arange(-4000, 4001)
        d = np.rint(f32(acc.astype(np.float32) * m1)) != np.rint(f32(acc.astype(np.float32) * m2))
        d &= np.abs(np.rint(acc * np.float64(m1))) < 100
        if d.sum() >= 2:
            return sa, sb, sy, acc[d][:16]



def gen_quantize():
    cases = []
    specs = [("uint8", [2, 3, 4, 5], None), ("int8", [2, 3, 4, 5], None),
             ("uint8", [2, 3, 4, 5], 1), ("int8", [3, 7], 0), ("uint8", [64], None),
             ("int8", [2, 4, 3], 2)]
    for i, (dt, shape, axis) in enumerate(specs):
        rng = rng_for("quantize", i)
        n = shape[axis] if axis is not None else 1
        scales = np.array([rand_scale(rng) for _ in range(n)], dtype=np.float32)
        zps = np.array([zp(rng, dt) for _ in range(n)], dtype=NP[dt])
        x = rng.normal(0, 3, size=shape).astype(np.float32)
        # exact ties k + 0.5 (in units of the scale) and values far out of range
        flat = x.reshape(-1)
        s0 = scales.reshape(-1)[0]
        flat[: len(flat) // 4] = (rng.integers(-200, 200, size=len(flat) // 4) + 0.5) * s0
        flat[-2:] = [1e6, -1e6]
        if axis is None:
            scales, zps = scales.reshape(()), zps.reshape(())
        attrs = {} if axis is None else {"axis": axis}
        y = run("QuantizeLinear", {"x": x}, {"y_scale": scales, "y_zero_point": zps}, attrs, dt)
        cases.append(case(f"quantize_{i}_{dt}_{'axis' + str(axis) if axis is not None else 'tensor'}",
                          attrs, {"x": x}, {"y_scale": scales, "y_zero_point": zps}, y))
    for i, dt in enumerate(["uint8", "int8"]):
        s, x = quantize_probe(rng_for("quantize_probe", i), 24)
        consts = {"y_scale": np.asarray(s), "y_zero_point": np.asarray(0 if dt == "int8" else 128, NP[dt])}
        y = run("QuantizeLinear", {"x": x}, consts, {}, dt)
        cases.append(case(f"quantize_probe_{i}_{dt}_division_vs_reciprocal", {}, {"x": x}, consts, y))
    return cases


def gen_dequantize():
    cases = []
    specs = [("uint8", [2, 3, 4, 5], None), ("int8", [2, 3, 4, 5], 1), ("int8", [5, 6], 0)]
    for i, (dt, shape, axis) in enumerate(specs):
        rng = rng_for("dequantize", i)
        n = shape[axis] if axis is not None else 1
        scales = np.array([rand_scale(rng) for _ in range(n)], dtype=np.float32)
        zps = np.array([zp(rng, dt) for _ in range(n)], dtype=NP[dt])
        if axis is None:
            scales, zps = scales.reshape(()), zps.reshape(())
        x = rand_q(rng, shape, dt)
        attrs = {} if axis is None else {"axis": axis}
        consts = {"x_scale": scales, "x_zero_point": zps}
        y = run("DequantizeLinear", {"x": x}, consts, attrs, "float32")
        cases.append(case(f"dequantize_{i}_{dt}", attrs, {"x": x}, consts, y))
    return cases


def conv_specs():
    # (x dtype, w dtype, N, C, H, W, O, k, stride, pad, dilation, groups, per_channel, bias)
    return [
        ("uint8", "int8", 1, 3, 8, 8, 4, 3, 1, 1, 1, 1, False, True),
        ("uint8", "int8", 2, 4, 9, 7, 6, 3, 2, 1, 1, 1, True, True),
        ("uint8", "int8", 1, 8, 8, 8, 8, 3, 1, 1, 1, 8, True, True),      # depthwise
        ("uint8", "int8", 1, 6, 10, 10, 4, 3, 1, 2, 2, 2, True, False),   # groups, dilation
        ("uint8", "uint8", 1, 3, 7, 7, 5, 3, 1, 0, 1, 1, False, True),
        ("uint8", "uint8", 1, 4, 6, 6, 4, 1, 1, 0, 1, 1, True, True),     # 1x1, u8 per-channel
        ("int8", "int8", 1, 3, 8, 8, 4, 3, 1, 1, 1, 1, False, True),
        ("int8", "int8", 1, 4, 8, 6, 4, 3, 2, 1, 1, 4, True, True),       # s8 depthwise
        ("uint8", "int8", 1, 16, 5, 5, 32, 1, 1, 0, 1, 1, True, True),
        ("uint8", "int8", 1, 3, 12, 12, 8, 5, 2, 2, 1, 1, True, True),
    ]


def gen_qlinear_conv():
    cases = []
    for i, (xd, wd, n, c, h, w, o, k, s, p, d, g, pc, has_bias) in enumerate(conv_specs()):
        rng = rng_for("qlinear_conv", i)
        x = rand_q(rng, [n, c, h, w], xd)
        # 7-bit int8 weights: exact on every x86 ISA (see the module docs)
        wshape = [o, c // g, k, k]
        wq = rand_q(rng, wshape, wd, *((-64, 63) if wd == "int8" else (None, None)))
        nw = o if pc else 1
        w_scale = np.array([rand_scale(rng, 1e-3, 2e-2) for _ in range(nw)], dtype=np.float32)
        w_zp = np.array([0 if wd == "int8" else int(rng.integers(100, 156))
                         for _ in range(nw)], dtype=NP[wd])
        if not pc:
            w_scale, w_zp = w_scale.reshape(()), w_zp.reshape(())
        x_zp = zp(rng, xd, edge=[0, 255, None, None][i % 4] if xd == "uint8" else None)
        consts = {"x_scale": rand_scale(rng, 0.01, 0.05), "x_zero_point": x_zp,
                  "w": wq, "w_scale": w_scale, "w_zero_point": w_zp,
                  "y_scale": rand_scale(rng, 0.02, 0.2), "y_zero_point": zp(rng, xd)}
        if has_bias:
            consts["B"] = rng.integers(-3000, 3000, size=[o]).astype(np.int32)
        attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4,
                 "dilations": [d, d], "group": g}
        order = ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale",
                 "y_zero_point"] + (["B"] if has_bias else [])
        consts = {kk: np.asarray(v) for kk, v in consts.items()}
        y = run_ordered("QLinearConv", order, {"x": x}, consts, attrs, xd)
        cases.append(case(f"qlinear_conv_{i}_{xd}_{wd}_g{g}_s{s}_p{p}_d{d}{'_pc' if pc else ''}",
                          attrs, {"x": x}, consts, y))
        if i in (1, 2, 7):
            # the channels-last com.microsoft QLinearConv that ORT's layout optimization
            # substitutes (x and y NHWC, w OIHW)
            attrs_cl = {**attrs, "channels_last": 1}
            x_cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            y = run_ordered("QLinearConv", order, {"x": x_cl}, consts, attrs_cl, xd,
                            domain="com.microsoft")
            cases.append(case(f"qlinear_conv_{i}_channels_last", attrs_cl, {"x": x_cl},
                              consts, y))
    flags = cpu_flags()
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        # Full-range int8 weights against large activations: int16 pair sums of up to
        # 2 * 255 * 128 that `vpmaddubsw` (AVX2, AVX-512 without VNNI) would saturate. Only
        # made where the VNNI kernels (exact int32 accumulation) run.
        rng = rng_for("qlinear_conv_full_range", 0)
        x = rng.integers(240, 256, size=[1, 8, 6, 6]).astype(np.uint8)
        wq = rng.choice(np.array([-128, 127], dtype=np.int8), size=[4, 8, 3, 3])
        wq[:2] = -128
        consts = {"x_scale": np.asarray(f32(0.02)), "x_zero_point": np.asarray(0, np.uint8),
                  "w": wq, "w_scale": np.asarray(f32(0.001)),
                  "w_zero_point": np.asarray(0, np.int8),
                  "y_scale": np.asarray(f32(0.5)), "y_zero_point": np.asarray(128, np.uint8)}
        attrs = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1] * 4,
                 "dilations": [1, 1], "group": 1}
        order = ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale",
                 "y_zero_point"]
        y = run_ordered("QLinearConv", order, {"x": x}, consts, attrs, "uint8")
        cases.append(case("qlinear_conv_full_range_weights_vnni_only", attrs, {"x": x}, consts, y))
    return cases


def gen_conv_integer():
    cases = []
    for i, (xd, wd, n, c, h, w, o, k, s, p, d, g, pc, _) in enumerate(conv_specs()[:6]):
        rng = rng_for("conv_integer", i)
        x = rand_q(rng, [n, c, h, w], xd)
        wq = rand_q(rng, [o, c // g, k, k], wd, *((-64, 63) if wd == "int8" else (None, None)))
        consts = {"w": wq, "x_zero_point": zp(rng, xd),
                  "w_zero_point": np.array(0 if wd == "int8" else 128, dtype=NP[wd])}
        attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4,
                 "dilations": [d, d], "group": g}
        consts = {kk: np.asarray(v) for kk, v in consts.items()}
        y = run_ordered("ConvInteger", ["x", "w", "x_zero_point", "w_zero_point"], {"x": x},
                        consts, attrs, "int32")
        cases.append(case(f"conv_integer_{i}_{xd}_{wd}", attrs, {"x": x}, consts, y))
    return cases


def gen_qlinear_matmul():
    cases = []
    specs = [("uint8", "int8", [4, 16], [16, 8], False), ("uint8", "uint8", [5, 9], [9, 7], False),
             ("int8", "int8", [2, 3, 12], [12, 5], False), ("uint8", "int8", [2, 6, 8], [2, 8, 4], False),
             ("uint8", "int8", [7, 32], [32, 16], True), ("int8", "int8", [3, 20], [20, 6], True)]
    for i, (ad, bd, ash, bsh, pc) in enumerate(specs):
        rng = rng_for("qlinear_matmul", i)
        a = rand_q(rng, ash, ad)
        b = rand_q(rng, bsh, bd, *((-64, 63) if bd == "int8" else (None, None)))
        ncol = bsh[-1]
        b_scale = np.array([rand_scale(rng, 1e-3, 2e-2) for _ in range(ncol if pc else 1)],
                           dtype=np.float32)
        b_zp = np.array([0 if bd == "int8" else 128] * (ncol if pc else 1), dtype=NP[bd])
        if not pc:
            b_scale, b_zp = b_scale.reshape(()), b_zp.reshape(())
        consts = {"a_scale": rand_scale(rng, 0.01, 0.05), "a_zero_point": zp(rng, ad),
                  "b": b, "b_scale": b_scale, "b_zero_point": b_zp,
                  "y_scale": rand_scale(rng, 0.02, 0.2), "y_zero_point": zp(rng, ad)}
        consts = {kk: np.asarray(v) for kk, v in consts.items()}
        order = ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale",
                 "y_zero_point"]
        y = run_ordered("QLinearMatMul", order, {"a": a}, consts, {}, ad)
        cases.append(case(f"qlinear_matmul_{i}_{ad}_{bd}{'_pc' if pc else ''}", {}, {"a": a},
                          consts, y))
    # accumulators on which the order of the scale product matters: A's rows sum to their
    # magnitudes (K = 32 uint8 values, zero point 0).
    for i in range(2):
        sa, sb, sy, accs = requant_probe(rng_for("qlinear_matmul_probe", i))
        rows = []
        for acc in accs:
            v = abs(int(acc))
            row = [min(255, max(0, v - 255 * j)) for j in range(32)]
            rows.append(row)
        a = np.array(rows, dtype=np.uint8)
        # column 0 of B is ones (accumulator |acc|), column 1 minus ones (-|acc|)
        b = np.ones([32, 2], dtype=np.int8)
        b[:, 1] = -1
        consts = {"a_scale": np.asarray(sa), "a_zero_point": np.asarray(0, np.uint8),
                  "b": b, "b_scale": np.asarray(sb), "b_zero_point": np.asarray(0, np.int8),
                  "y_scale": np.asarray(sy), "y_zero_point": np.asarray(128, np.uint8)}
        order = ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale",
                 "y_zero_point"]
        y = run_ordered("QLinearMatMul", order, {"a": a}, consts, {}, "uint8")
        cases.append(case(f"qlinear_matmul_probe_{i}_scale_order", {}, {"a": a}, consts, y))
    return cases


def gen_qgemm():
    cases = []
    # (a dtype, b dtype, M, K, N, transA, transB, C shape, per-column, alpha, quantized output)
    specs = [("uint8", "int8", 2, 32, 10, 0, 1, [10], False, 1.0, True),
             ("uint8", "int8", 3, 24, 8, 0, 1, [8], True, 1.0, True),
             ("int8", "int8", 4, 16, 6, 1, 0, [4, 6], True, 1.0, True),
             ("uint8", "uint8", 2, 20, 5, 0, 1, None, False, 0.5, True),
             ("uint8", "int8", 3, 16, 7, 0, 1, [3, 1], True, 1.5, True),
             ("uint8", "int8", 2, 32, 10, 0, 1, [10], True, 1.0, False)]
    for i, (ad, bd, m, k, n, ta, tb, csh, pc, alpha, quant) in enumerate(specs):
        rng = rng_for("qgemm", i)
        a = rand_q(rng, [k, m] if ta else [m, k], ad)
        b = rand_q(rng, [n, k] if tb else [k, n], bd, *((-64, 63) if bd == "int8" else (None, None)))
        b_scale = np.array([rand_scale(rng, 1e-3, 2e-2) for _ in range(n if pc else 1)],
                           dtype=np.float32)
        b_zp = np.array([0 if bd == "int8" else 128] * (n if pc else 1), dtype=NP[bd])
        if not pc:
            b_scale, b_zp = b_scale.reshape(()), b_zp.reshape(())
        consts = {"a_scale": np.asarray(rand_scale(rng, 0.01, 0.05)), "a_zero_point": zp(rng, ad),
                  "B": b, "b_scale": b_scale, "b_zero_point": b_zp}
        order = ["A", "a_scale", "a_zero_point", "B", "b_scale", "b_zero_point"]
        if csh is not None:
            consts["C"] = rng.integers(-3000, 3000, size=csh).astype(np.int32)
        order.append("C" if csh is not None else "")
        if quant:
            consts["y_scale"] = np.asarray(rand_scale(rng, 0.02, 0.2))
            consts["y_zero_point"] = zp(rng, ad)
            order += ["y_scale", "y_zero_point"]
        attrs = {"alpha": float(alpha), "transA": ta, "transB": tb}
        y = run_ordered("QGemm", order, {"A": a}, consts, attrs, ad if quant else "float32",
                        domain="com.microsoft")
        cases.append(case(f"qgemm_{i}_{ad}_{bd}_ta{ta}_tb{tb}{'_pc' if pc else ''}"
                          f"{'' if quant else '_float'}", attrs, {"A": a}, consts, y))
    return cases


def gen_matmul_integer():
    cases = []
    for i, (ad, bd, ash, bsh) in enumerate([("uint8", "int8", [4, 16], [16, 8]),
                                            ("uint8", "uint8", [2, 3, 9], [9, 7]),
                                            ("int8", "int8", [5, 10], [10, 3])]):
        rng = rng_for("matmul_integer", i)
        a = rand_q(rng, ash, ad)
        b = rand_q(rng, bsh, bd)
        consts = {"b": b, "a_zero_point": zp(rng, ad), "b_zero_point": zp(rng, bd)}
        consts = {kk: np.asarray(v) for kk, v in consts.items()}
        y = run_ordered("MatMulInteger", ["a", "b", "a_zero_point", "b_zero_point"], {"a": a},
                        consts, {}, "int32")
        cases.append(case(f"matmul_integer_{i}_{ad}_{bd}", {}, {"a": a}, consts, y))
    return cases


def gen_qlinear_add():
    cases = []
    # (dtype, a shape, b shape); sizes with vector tails, a scalar B, a scalar A
    specs = [("uint8", [1, 8, 5, 5], [1, 8, 5, 5]), ("uint8", [37], [37]),
             ("int8", [2, 4, 6, 6], [2, 4, 6, 6]), ("uint8", [3, 70], [1]),
             ("int8", [1], [45]), ("uint8", [1000], [1000]), ("int8", [257], [257]),
             ("uint8", [4, 64], [4, 64])]
    for i, (dt, ash, bsh) in enumerate(specs):
        rng = rng_for("qlinear_add", i)
        a, b = rand_q(rng, ash, dt), rand_q(rng, bsh, dt)
        consts = {"A_scale": rand_scale(rng, 0.01, 0.1), "A_zero_point": zp(rng, dt),
                  "B_scale": rand_scale(rng, 0.01, 0.1), "B_zero_point": zp(rng, dt),
                  "C_scale": rand_scale(rng, 0.01, 0.1), "C_zero_point": zp(rng, dt)}
        if i == 7:  # equal scales: many exact ties
            consts["B_scale"] = consts["A_scale"]
            consts["C_scale"] = f32(consts["A_scale"] * 2)
        consts = {kk: np.asarray(v) for kk, v in consts.items()}
        order = ["A", "A_scale", "A_zero_point", "B", "B_scale", "B_zero_point", "C_scale",
                 "C_zero_point"]
        y = run_ordered("QLinearAdd", order, {"A": a, "B": b}, consts, {}, dt,
                        domain="com.microsoft")
        cases.append(case(f"qlinear_add_{i}_{dt}_{len(a.reshape(-1))}x{len(b.reshape(-1))}",
                          {}, {"A": a, "B": b}, consts, y))
    order = ["A", "A_scale", "A_zero_point", "B", "B_scale", "B_zero_point", "C_scale",
             "C_zero_point"]
    for i, dt in enumerate(["uint8", "int8", "uint8", "int8"]):
        a, b, consts = add_probe(rng_for("qlinear_add_probe", i), dt)
        y = run_ordered("QLinearAdd", order, {"A": a, "B": b}, consts, {}, dt,
                        domain="com.microsoft")
        cases.append(case(f"qlinear_add_probe_{i}_{dt}_kernels_disagree", {},
                          {"A": a, "B": b}, consts, y))
    for i, dt in enumerate(["uint8", "int8", "uint8"]):
        a, b, consts = add_scalar_probe(rng_for("qlinear_add_scalar_probe", i), dt)
        if i == 2:  # scalar A: ORT swaps the operands
            a, b = b, a
            consts = {"A_scale": consts["B_scale"], "A_zero_point": consts["B_zero_point"],
                      "B_scale": consts["A_scale"], "B_zero_point": consts["A_zero_point"],
                      "C_scale": consts["C_scale"], "C_zero_point": consts["C_zero_point"]}
        y = run_ordered("QLinearAdd", order, {"A": a, "B": b}, consts, {}, dt,
                        domain="com.microsoft")
        cases.append(case(f"qlinear_add_scalar_probe_{i}_{dt}", {}, {"A": a, "B": b}, consts, y))
    shapes = [([1, 4, 6, 6], [1, 4, 1, 1]), ([1, 4, 1, 1], [1, 4, 6, 6]),
              ([2, 3, 5, 5], [1, 1, 5, 5]), ([2, 3, 4], [4]), ([3, 1], [1, 5]),
              ([2, 1, 4, 4], [2, 3, 1, 1])]
    for i, (ash, bsh) in enumerate(shapes):
        dt = ["uint8", "int8"][i % 2]
        a, b, consts = add_broadcast_probe(rng_for("qlinear_add_broadcast", i), dt, ash, bsh)
        y = run_ordered("QLinearAdd", order, {"A": a, "B": b}, consts, {}, dt,
                        domain="com.microsoft")
        cases.append(case(f"qlinear_add_broadcast_{i}_{dt}", {}, {"A": a, "B": b}, consts, y))
    return cases


def gen_qlinear_concat():
    cases = []
    specs = [("uint8", [[1, 3, 4, 4], [1, 5, 4, 4]], 1, False),
             ("uint8", [[2, 2, 3, 3], [2, 4, 3, 3], [2, 1, 3, 3]], 1, True),
             ("int8", [[1, 3, 4, 4], [1, 2, 4, 4]], 1, False),
             ("uint8", [[2, 5], [2, 3]], 1, False)]
    for i, (dt, shapes, axis, same_first) in enumerate(specs):
        rng = rng_for("qlinear_concat", i)
        y_scale, y_zp = rand_scale(rng, 0.01, 0.1), zp(rng, dt)
        inputs, consts, order = {}, {"Y_scale": np.asarray(y_scale), "Y_zero_point": y_zp}, \
            ["Y_scale", "Y_zero_point"]
        for j, sh in enumerate(shapes):
            inputs[f"X{j}"] = rand_q(rng, sh, dt)
            same = same_first and j == 0
            consts[f"X{j}_scale"] = np.asarray(y_scale if same else rand_scale(rng, 0.01, 0.1))
            consts[f"X{j}_zero_point"] = y_zp if same else zp(rng, dt)
            order += [f"X{j}", f"X{j}_scale", f"X{j}_zero_point"]
        y = run_ordered("QLinearConcat", order, inputs, consts, {"axis": axis}, dt,
                        domain="com.microsoft")
        cases.append(case(f"qlinear_concat_{i}_{dt}_{len(shapes)}", {"axis": axis}, inputs,
                          consts, y))
    return cases


def gen_qlinear_average_pool():
    cases = []
    # (dtype, shape, kernel, stride, pads, count_include_pad)
    specs = [("uint8", [1, 3, 8, 8], 2, 2, [0, 0, 0, 0], 0),
             ("uint8", [1, 4, 7, 7], 3, 1, [1, 1, 1, 1], 0),
             ("uint8", [2, 2, 7, 9], 3, 2, [1, 1, 1, 1], 1),
             ("int8", [1, 3, 6, 6], 3, 1, [1, 0, 1, 0], 0),
             ("int8", [1, 2, 5, 5], 2, 1, [0, 0, 1, 1], 1),
             ("uint8", [1, 4, 5, 5], 5, 1, [0, 0, 0, 0], 0),   # whole image: global path
             ("uint8", [1, 4, 8, 8], 2, 2, [0, 0, 0, 0], 0),   # exact ties, odd zero point
             ("int8", [1, 4, 8, 8], 2, 2, [0, 0, 0, 0], 0)]
    for i, (dt, sh, k, s, pads, cip) in enumerate(specs):
        rng = rng_for("qlinear_average_pool", i)
        x = rand_q(rng, sh, dt)
        consts = {"x_scale": rand_scale(rng, 0.01, 0.1), "x_zero_point": zp(rng, dt),
                  "y_scale": rand_scale(rng, 0.01, 0.1), "y_zero_point": zp(rng, dt)}
        if i >= 6:
            # power-of-two scales make every average exact: quarters, so half the windows are
            # ties, and an odd output zero point separates `rne(v + zy)` from `rne(v) + zy`
            consts.update(x_scale=f32(0.0625), y_scale=f32(0.0625),
                          y_zero_point=np.asarray(1 if dt == "int8" else 127, NP[dt]))
        consts = {kk: np.asarray(v) for kk, v in consts.items()}
        attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": pads,
                 "count_include_pad": cip}
        order = ["x", "x_scale", "x_zero_point", "y_scale", "y_zero_point"]
        y = run_ordered("QLinearAveragePool", order, {"x": x}, consts, attrs, dt,
                        domain="com.microsoft")
        cases.append(case(f"qlinear_average_pool_{i}_{dt}_k{k}_s{s}_cip{cip}", attrs,
                          {"x": x}, consts, y))
        if i in (1, 2, 5, 6):
            attrs_cl = {**attrs, "channels_last": 1}
            x_cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            y = run_ordered("QLinearAveragePool", order, {"x": x_cl}, consts, attrs_cl, dt,
                            domain="com.microsoft")
            cases.append(case(f"qlinear_average_pool_{i}_channels_last", attrs_cl,
                              {"x": x_cl}, consts, y))
    return cases


def gen_qlinear_global_average_pool():
    cases = []
    for i, (dt, sh) in enumerate([("uint8", [1, 8, 7, 7]), ("uint8", [2, 3, 4, 5]),
                                  ("int8", [1, 16, 3, 3]), ("uint8", [1, 4, 16, 16])]):
        rng = rng_for("qlinear_global_average_pool", i)
        x = rand_q(rng, sh, dt)
        consts = {"x_scale": rand_scale(rng, 0.01, 0.1), "x_zero_point": zp(rng, dt),
                  "y_scale": rand_scale(rng, 0.01, 0.1), "y_zero_point": zp(rng, dt)}
        consts = {kk: np.asarray(v) for kk, v in consts.items()}
        order = ["x", "x_scale", "x_zero_point", "y_scale", "y_zero_point"]
        y = run_ordered("QLinearGlobalAveragePool", order, {"x": x}, consts,
                        {"channels_last": 0}, dt, domain="com.microsoft")
        cases.append(case(f"qlinear_global_average_pool_{i}_{dt}", {}, {"x": x}, consts, y))
        x_cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        y = run_ordered("QLinearGlobalAveragePool", order, {"x": x_cl}, consts,
                        {"channels_last": 1}, dt, domain="com.microsoft")
        cases.append(case(f"qlinear_global_average_pool_{i}_channels_last",
                          {"channels_last": 1}, {"x": x_cl}, consts, y))
    return cases


def gen_max_pool():
    cases = []
    specs = [("uint8", [1, 3, 8, 8], 2, 2, 0, 1), ("uint8", [1, 2, 7, 7], 3, 2, 1, 1),
             ("int8", [2, 2, 9, 9], 3, 1, 1, 2), ("int8", [1, 3, 6, 6], 2, 1, 0, 1)]
    for i, (dt, sh, k, s, p, d) in enumerate(specs):
        rng = rng_for("max_pool", i)
        x = rand_q(rng, sh, dt)
        attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4,
                 "dilations": [d, d]}
        y = run_ordered("MaxPool", ["x"], {"x": x}, {}, attrs, dt)
        cases.append(case(f"max_pool_{i}_{dt}_k{k}_s{s}_p{p}_d{d}", attrs, {"x": x}, {}, y))
        # com.microsoft NhwcMaxPool, what ORT's layout optimization substitutes
        x_cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        y = run_ordered("NhwcMaxPool", ["x"], {"x": x_cl}, {}, attrs, dt, domain="com.microsoft")
        cases.append(case(f"max_pool_{i}_nhwc", {**attrs, "channels_last": 1}, {"x": x_cl},
                          {}, y))
    return cases


GENERATORS = {
    "quantize_linear": gen_quantize,
    "dequantize_linear": gen_dequantize,
    "qlinear_conv": gen_qlinear_conv,
    "conv_integer": gen_conv_integer,
    "qlinear_matmul": gen_qlinear_matmul,
    "matmul_integer": gen_matmul_integer,
    "qgemm": gen_qgemm,
    "qlinear_add": gen_qlinear_add,
    "qlinear_concat": gen_qlinear_concat,
    "qlinear_average_pool": gen_qlinear_average_pool,
    "qlinear_global_average_pool": gen_qlinear_global_average_pool,
    "max_pool": gen_max_pool,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "data", "ort_ops"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for op, gen in GENERATORS.items():
        doc = {"op": op, "onnxruntime_version": ort.__version__, "onnx_version": onnx.__version__,
               "cpu_flags": cpu_flags(), "cases": gen()}
        path = os.path.join(args.out, f"{op}.json")
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        print(f"{path}: {len(doc['cases'])} cases")


if __name__ == "__main__":
    main()
