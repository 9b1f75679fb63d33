#!/usr/bin/env python3
"""ONNX Runtime's QLinearConv (u8 activations, s8 weights) and float Conv on squint's bench
shapes, on this machine, for comparison with `squint bench` (issue 5's peer figures).

    pip install onnxruntime onnx numpy
    python3 benches/peers/ort_qlinearconv.py [--threads 1] [--runs 21] [--json]

`benches/peers/compare_ort.py` runs it beside `squint bench` in one run and prints ratios.

Prints one line per shape and path with the median time and GOPS
(2*N*Cout*Hout*Wout*(Cin/groups)*KH*KW / time), like `squint bench`.
"""
import argparse
import json
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SHAPES = [
    ("(i) forum 1x132x64x64 * 121x132x3x3", (1, 132, 64, 64), (121, 132, 3, 3), 0, 1),
    ("(ii) 1x64x56x56 * 64x64x3x3 p1", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    ("(iii) 1x256x14x14 * 256x256x3x3 p1", (1, 256, 14, 14), (256, 256, 3, 3), 1, 1),
    ("(iv) depthwise 1x128x56x56 g128 p1", (1, 128, 56, 56), (128, 1, 3, 3), 1, 128),
]


def model(x_shape, w_shape, pad, groups, quantized):
    rng = np.random.default_rng(7)
    attrs = dict(kernel_shape=list(w_shape[2:]), pads=[pad] * 4, group=groups)
    if quantized:
        w = rng.integers(-127, 128, size=w_shape, dtype=np.int8)
        b = rng.integers(-1000, 1000, size=(w_shape[0],), dtype=np.int32)
        inits = [
            numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
            numpy_helper.from_array(np.array(128, np.uint8), "xz"),
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
            numpy_helper.from_array(np.array(0, np.int8), "wz"),
            numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
            numpy_helper.from_array(np.array(128, np.uint8), "yz"),
            numpy_helper.from_array(b, "b"),
        ]
        node = helper.make_node(
            "QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], **attrs
        )
        elem = TensorProto.UINT8
    else:
        w = rng.standard_normal(w_shape).astype(np.float32)
        inits = [numpy_helper.from_array(w, "w")]
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
        elem = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", elem, list(x_shape))],
        [helper.make_tensor_value_info("y", elem, None)],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8  # opset 13's IR version: older ONNX Runtimes refuse the newest onnx's
    return m.SerializeToString()


def measure(threads, runs):
    """Median ms and GOPS of ORT's int8 and float32 conv on every shape: a list of dicts with
    `shape`, `path` (`ort int8` / `ort float32`), `ms`, `gops`."""
    out = []
    for name, xs, ws, pad, groups in SHAPES:
        n, c, h, w = xs
        co, cig, kh, kw = ws
        ho, wo = h + 2 * pad - kh + 1, w + 2 * pad - kw + 1
        ops = 2 * n * co * ho * wo * cig * kh * kw
        for quantized in (False, True):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(
                model(xs, ws, pad, groups, quantized), so, providers=["CPUExecutionProvider"]
            )
            rng = np.random.default_rng(1)
            x = (
                rng.integers(0, 256, size=xs, dtype=np.uint8)
                if quantized
                else rng.standard_normal(xs).astype(np.float32)
            )
            for _ in range(3):
                sess.run(None, {"x": x})
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                sess.run(None, {"x": x})
                times.append(time.perf_counter() - t0)
            t = sorted(times)[len(times) // 2]
            out.append({"shape": name, "path": "ort int8" if quantized else "ort float32",
                        "ms": t * 1e3, "gops": ops / t / 1e9})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args()
    results = measure(args.threads, args.runs)
    if args.json:
        print(json.dumps({"onnxruntime": ort.__version__, "threads": args.threads,
                          "results": results}, indent=1))
        return
    print(f"onnxruntime {ort.__version__}, {args.threads} thread(s), median of {args.runs} runs")
    for r in results:
        print(f"{r['shape']:38s} {r['path']:20s} {r['ms']:9.3f} ms {r['gops']:8.1f} GOPS")


if __name__ == "__main__":
    main()
