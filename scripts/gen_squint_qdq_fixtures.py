#!/usr/bin/env python3
"""ONNX Runtime runs the QDQ models squint writes: the tiny float models quantized by
`squint quantize --qconfig ort` (squint's own `quantize_static`), then run by onnxruntime.

For each model in tests/data/models/{resnet_tiny,mobilenet_tiny}/ this script

1. runs `squint quantize --model model.onnx --calib calib.npy --qconfig ort --out ...`
   (per-channel 7-bit weights) and the same with `--qconfig ort-per-tensor`,
2. runs each written model with onnxruntime's CPU provider at its default optimization level
   (ORT_ENABLE_ALL, one thread) on `input.npy`, saving ORT's output and recording the op types
   of the graph ORT executed (they must be ORT's int8 kernels: QLinearConv, QLinearAdd, ...),

and writes tests/data/models/<name>/squint_<ort|ort-per-tensor>/:

    model_qdq.onnx   the QDQ model squint wrote
    ort_output.npy   ORT's output on ../input.npy, float32 (bits as ORT returned them)
    meta.json        versions, CPU flags, op types

Usage: cargo build --release && python3 scripts/gen_squint_qdq_fixtures.py [MODEL ...]
Needs onnx and onnxruntime (from PyPI).
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

from gen_ort_op_fixtures import cpu_flags  # same directory
from gen_qdq_int8_fixture import op_types  # same directory

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "tests", "data", "models")
SQUINT = os.path.join(HERE, "..", "target", "release", "squint")
MODELS = ["resnet_tiny", "mobilenet_tiny"]


def main(models):
    for name in models or MODELS:
        d = os.path.join(ROOT, name)
        x = np.load(os.path.join(d, "input.npy"))
        for preset in ["ort", "ort-per-tensor"]:
            out = os.path.join(d, "squint_" + preset)
            os.makedirs(out, exist_ok=True)
            model = os.path.join(out, "model_qdq.onnx")
            subprocess.run([SQUINT, "quantize", "--model", os.path.join(d, "model.onnx"),
                            "--calib", os.path.join(d, "calib.npy"), "--qconfig", preset,
                            "--out", model], check=True)
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            with tempfile.TemporaryDirectory() as tmp:
                optimized = os.path.join(tmp, "optimized.onnx")
                so.optimized_model_filepath = optimized
                s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
                y = s.run(None, {s.get_inputs()[0].name: x})[0]
                executed = op_types(onnx.load(optimized))
            np.save(os.path.join(out, "ort_output.npy"), y.astype(np.float32))
            meta = {
                "onnxruntime_version": ort.__version__,
                "onnx_version": onnx.__version__,
                "cpu_flags": cpu_flags(),
                "written_by": f"squint quantize --qconfig {preset} (../model.onnx, ../calib.npy)",
                "input": "../input.npy",
                "graph_optimization_level": "ORT_ENABLE_ALL (onnxruntime's default)",
                "qdq_op_types": op_types(onnx.load(model)),
                "executed_op_types": executed,
            }
            with open(os.path.join(out, "meta.json"), "w") as f:
                json.dump(meta, f, indent=1)
                f.write("\n")
            print(out, executed)


if __name__ == "__main__":
    main(sys.argv[1:])
