#!/usr/bin/env python3
"""Whole-model latency, squint against ONNX Runtime on the CPU, measured in one run.

Builds a MobileNetV2-shaped float ONNX model (the torchvision layer plan: stem, 17 inverted
residual blocks, 1x1 head, global pool, classifier; seeded random weights with BatchNorm
folded into conv biases, ReLU6 as Clip(0, 6)), random input and calibration batches, then
alternates for `--rounds` rounds:

* ONNX Runtime float32 (`Conv`), and int8: the model quantized by ORT's own
  `quantize_static` (QDQ, u8 activations, s8 weights, per tensor, 7-bit weights with
  `reduce_range` as ORT's documentation recommends on x86 and as squint's `ort-per-tensor`
  preset quantizes: the same model; ORT fuses it into `QLinearConv`);
* `squint bench --model` (float32, and int8 with `--qconfig x86`, PyTorch's formulas, and
  `--qconfig ort-per-tensor`, ONNX Runtime's `quantize_static` and formulas reproduced by
  squint: like ORT, it removes each ReLU6 into its conv's output range and runs no `Clip`).

Each figure is the median over rounds of each round's median (`--stat best`: the best round's
median, for machines whose speed jumps between two levels for seconds at a time). Prints a Markdown table headed by
the CPU's name and flags (quote it as it is: these machines are shared and noisy).

    cargo build --release
    pip install onnxruntime onnx numpy
    python3 benches/peers/compare_ort_model.py --threads 1 [--size 224] [--isa avx2] [--json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)

sys.path.insert(0, os.path.dirname(__file__))
from compare_ort import cpu_name  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")

# torchvision's MobileNetV2: (expansion t, output channels c, repeats n, first stride s).
PLAN = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
        (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2(size, relu6=True, seed=0):
    """A MobileNetV2-shaped float model with random weights (BN folded: conv + bias), its
    activations ReLU6 (`Clip(0, 6)`) or, with `relu6=False`, ReLU."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    count = [0]

    def name(p):
        count[0] += 1
        return f"{p}{count[0]}"

    def conv(x, cin, cout, k, stride, groups, act):
        w = name("w")
        b = name("b")
        fan_in = cin // groups * k * k
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in))
            .astype(np.float32), w))
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(cout) * 0.05).astype(np.float32), b))
        y = name("conv")
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4,
                                      group=groups))
        if act and not relu6:
            z = name("relu")
            nodes.append(helper.make_node("Relu", [y], [z]))
            return z
        if act:
            z = name("relu6")
            lo, hi = name("lo"), name("hi")
            inits.append(numpy_helper.from_array(np.array(0.0, np.float32), lo))
            inits.append(numpy_helper.from_array(np.array(6.0, np.float32), hi))
            nodes.append(helper.make_node("Clip", [y, lo, hi], [z]))
            return z
        return y

    x = conv("input", 3, 32, 3, 2, 1, True)
    cin = 32
    for t, c, n, s in PLAN:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            h = x if t == 1 else conv(x, cin, hidden, 1, 1, 1, True)
            h = conv(h, hidden, hidden, 3, stride, hidden, True)
            h = conv(h, hidden, c, 1, 1, 1, False)
            if stride == 1 and cin == c:
                y = name("add")
                nodes.append(helper.make_node("Add", [x, h], [y]))
                h = y
            x, cin = h, c
    x = conv(x, cin, 1280, 1, 1, 1, True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1))
    inits.append(numpy_helper.from_array(
        (rng.standard_normal((1000, 1280)) * np.sqrt(1.0 / 1280)).astype(np.float32), "fc_w"))
    inits.append(numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "mobilenet_v2_shaped",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class Reader(CalibrationDataReader):
    def __init__(self, batches):
        self.it = iter([{"input": b} for b in batches])

    def get_next(self):
        return next(self.it, None)


def ort_ms(path, x, threads, runs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {"input": x}
    for _ in range(3):
        sess.run(None, feed)
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def squint_ms(exe, model, x, calib, threads, runs, qconfig, isa=None):
    cmd = [exe, "bench", "--model", model, "--input", x, "--calib", calib, "--no-gpu",
           "--no-reference", "--json", "--threads", str(threads), "--runs", str(runs),
           "--qconfig", qconfig] + (["--isa", isa] if isa else [])
    rep = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {r["path"]: r["ms"] for r in rep["results"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--squint", default=os.path.join(ROOT, "target", "release", "squint"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=224, help="input height and width")
    ap.add_argument("--runs", type=int, default=11, help="timed runs per path and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--relu", action="store_true", help="ReLU instead of ReLU6")
    ap.add_argument("--isa", action="append", default=[],
                    help="also time squint on this ISA path (repeatable: avx2, avx-vnni, ...)")
    ap.add_argument("--stat", choices=("median", "best"), default="median",
                    help="per path, the median over rounds of each round's median, or the best "
                         "round's (robust where the machine's speed jumps between levels)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (1, 3, a.size, a.size)).astype(np.float32)
    calib = [rng.uniform(-1, 1, (1, 3, a.size, a.size)).astype(np.float32) for _ in range(4)]
    with tempfile.TemporaryDirectory() as d:
        fp32 = os.path.join(d, "model.onnx")
        int8 = os.path.join(d, "model_ort_qdq.onnx")
        onnx.save(mobilenet_v2(a.size, relu6=not a.relu), fp32)
        quantize_static(fp32, int8, Reader(calib), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=False, reduce_range=True)
        xp, cp = os.path.join(d, "x.npy"), os.path.join(d, "calib.npy")
        np.save(xp, x)
        np.save(cp, np.stack(calib))
        rows = {}
        for _ in range(a.rounds):
            got = {
                "ort float32": ort_ms(fp32, x, a.threads, a.runs),
                "ort int8 (quantize_static, QLinearConv)": ort_ms(int8, x, a.threads, a.runs),
            }
            for isa in [None] + a.isa:
                tag = f" --isa {isa}" if isa else ""
                for qc in ("x86", "ort-per-tensor"):
                    s = squint_ms(a.squint, fp32, xp, cp, a.threads, a.runs, qc, isa)
                    for path, ms in s.items():
                        if path.startswith("float32"):
                            got.setdefault(f"squint float32{tag}", ms)
                        else:
                            got[f"squint {path} --qconfig {qc}{tag}"] = ms
            for k, v in got.items():
                rows.setdefault(k, []).append(v)
    stat = statistics.median if a.stat == "median" else min
    med = {k: stat(v) for k, v in rows.items()}
    if a.json:
        print(json.dumps({"cpu": cpu_name(), "threads": a.threads, "size": a.size,
                          "relu6": not a.relu,
                          "onnxruntime": ort.__version__, "ms": med}, indent=2))
        return
    base = med["ort float32"]
    act = "ReLU" if a.relu else "ReLU6"
    print(f"{cpu_name()}; onnxruntime {ort.__version__}; MobileNetV2-shaped ({act}), "
          f"1x3x{a.size}x{a.size}; {a.threads} thread(s); {a.stat} of {a.rounds} rounds x "
          f"{a.runs} runs (each round: the median run)\n")
    print("| path | ms | vs ORT float32 |")
    print("|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} | {base / v:.2f}x |")


if __name__ == "__main__":
    main()
