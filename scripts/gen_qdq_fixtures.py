#!/usr/bin/env python3
"""Already-quantized (QDQ) ONNX models made by ONNX Runtime, with ONNX Runtime's own output,
for squint's QDQ import (tests/qdq_models.rs).

For the tiny ResNet and MobileNet of tests/data/models/ (scripts/gen_model_fixtures.py), as
a user would: `quant_pre_process`, then `quantize_static` (QDQ format, MinMax calibration on
the model's calib.npy batches, uint8 activations, int8 weights with `reduce_range` (7-bit
weights: ORT's u8s8 kernels on AVX2 and non-VNNI AVX-512 use `vpmaddubsw`, which saturates
with full-range weights; 7-bit weights are exact on every x86 ISA), per-tensor and
per-channel). ORT's CPU provider then runs each QDQ model on input.npy with its default graph
optimizations (which turn the Q/DQ pairs into QLinearConv, QLinearAdd, ... kernels).

Writes tests/data/models/<model>/qdq_<pt|pc>/:
    model.onnx      the QDQ model
    ort_output.npy  ORT's float32 output on ../input.npy
    meta.json       onnxruntime version, CPU flags, the op types of ORT's optimized graph

Usage: python3 scripts/gen_qdq_fixtures.py   (needs onnx, onnxruntime, numpy from PyPI)
"""
import json
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "models")
MODELS = ["resnet_tiny", "mobilenet_tiny"]


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [x for x in ("avx2", "fma", "avx512f", "avx512_vnni", "avxvnni") if x in have]
    except OSError:
        pass
    return []


class Reader(CalibrationDataReader):
    def __init__(self, name, batches):
        self.it = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self.it, None)


def session(path, opt_path=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if opt_path:
        so.optimized_model_filepath = opt_path
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    for m in MODELS:
        d = os.path.join(ROOT, m)
        calib = np.load(os.path.join(d, "calib.npy")).astype(np.float32)
        x = np.load(os.path.join(d, "input.npy")).astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            pre = os.path.join(tmp, "pre.onnx")
            quant_pre_process(os.path.join(d, "model.onnx"), pre)
            name = onnx.load(pre).graph.input[0].name
            for tag, per_channel in [("pt", False), ("pc", True)]:
                out = os.path.join(d, f"qdq_{tag}")
                os.makedirs(out, exist_ok=True)
                q = os.path.join(out, "model.onnx")
                quantize_static(pre, q, Reader(name, calib), quant_format=QuantFormat.QDQ,
                                per_channel=per_channel, reduce_range=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
                opt = os.path.join(tmp, f"opt_{tag}.onnx")
                y = session(q, opt).run(None, {name: x})[0].astype(np.float32)
                np.save(os.path.join(out, "ort_output.npy"), y)
                ops = sorted({n.op_type for n in onnx.load(opt).graph.node})
                meta = {"onnxruntime_version": ort.__version__, "cpu_flags": cpu_flags(),
                        "per_channel": per_channel, "reduce_range": True,
                        "optimized_ops": ops}
                with open(os.path.join(out, "meta.json"), "w") as f:
                    json.dump(meta, f, indent=1)
                print(m, tag, ops)


if __name__ == "__main__":
    main()
