#!/usr/bin/env python3
"""QDQ fixtures: the tiny float models quantized by ONNX Runtime's own tooling, and ORT's output.

For each model in tests/data/models/{resnet_tiny,mobilenet_tiny}/ this script

1. runs `onnxruntime.quantization.quant_pre_process` on `model.onnx` (BatchNorm already
   folded by the exporter; shape inference + ORT's basic optimizations),
2. runs `quantize_static` on it: QDQ format, MinMax calibration on the model's `calib.npy`
   batches (the same data squint's own calibration uses), uint8 activations, int8 weights with
   `reduce_range=True` (7-bit weights: ORT's u8s8 kernels are exact on every x86 ISA), once
   per-tensor and once per-channel,
3. runs the QDQ model with onnxruntime's CPU provider at its default optimization level
   (ORT_ENABLE_ALL, one thread) on `input.npy`, saving the output and the optimized model ORT
   actually executed (`SessionOptions.optimized_model_filepath`), and records the op types of
   both models,

and writes tests/data/models/<name>/qdq_<per_tensor|per_channel>/:

    model_qdq.onnx          the QDQ model (what a user hands to squint)
    model_ort_optimized.onnx  ORT's optimized graph (the reference's op list; may hold
                            com.microsoft ops and CPU-specific layouts)
    output.npy              ORT's output on ../input.npy, float32 (bits as ORT returned them)
    output_no_fusion.npy    ORT's output with graph optimizations off (QDQ simulated in float:
                            for comparison only, not the reference)
    meta.json               versions, CPU flags, quantization options, op types

Usage: python3 scripts/gen_qdq_fixtures.py [MODEL ...]   (default: both tiny models)
Needs onnx and onnxruntime (from PyPI). Deterministic (MinMax calibration, one thread).
"""

import collections
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from gen_ort_op_fixtures import cpu_flags  # same directory

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "models")
MODELS = ["resnet_tiny", "mobilenet_tiny"]


class Batches(CalibrationDataReader):
    def __init__(self, name, batches):
        self.name = name
        self.it = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self.it, None)


def op_types(path):
    m = onnx.load(path)
    c = collections.Counter(
        (n.domain + "::" if n.domain else "") + n.op_type for n in m.graph.node)
    return dict(sorted(c.items()))


def session(path, level, optimized_path=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main(models):
    for name in models or MODELS:
        d = os.path.join(ROOT, name)
        calib = np.load(os.path.join(d, "calib.npy"))
        x = np.load(os.path.join(d, "input.npy"))
        input_name = onnx.load(os.path.join(d, "model.onnx")).graph.input[0].name
        with tempfile.TemporaryDirectory() as tmp:
            pre = os.path.join(tmp, "pre.onnx")
            quant_pre_process(os.path.join(d, "model.onnx"), pre, skip_symbolic_shape=True)
            for per_channel in [False, True]:
                out = os.path.join(d, "qdq_per_channel" if per_channel else "qdq_per_tensor")
                os.makedirs(out, exist_ok=True)
                qdq = os.path.join(out, "model_qdq.onnx")
                opts = dict(quant_format="QDQ", activation_type="QUInt8",
                            weight_type="QInt8", per_channel=per_channel, reduce_range=True,
                            calibrate_method="MinMax")
                quantize_static(pre, qdq, Batches(input_name, list(calib)),
                                quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, per_channel=per_channel,
                                reduce_range=True, calibrate_method=CalibrationMethod.MinMax)
                optimized = os.path.join(out, "model_ort_optimized.onnx")
                y = session(qdq, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized) \
                    .run(None, {input_name: x})[0]
                y_sim = session(qdq, ort.GraphOptimizationLevel.ORT_DISABLE_ALL) \
                    .run(None, {input_name: x})[0]
                np.save(os.path.join(out, "output.npy"), y.astype(np.float32))
                np.save(os.path.join(out, "output_no_fusion.npy"), y_sim.astype(np.float32))
                float_y = np.load(os.path.join(d, "float_output.npy"))
                meta = {
                    "onnxruntime_version": ort.__version__,
                    "onnx_version": onnx.__version__,
                    "cpu_flags": cpu_flags(),
                    "source_model": "model.onnx",
                    "pre_process": "quant_pre_process(skip_symbolic_shape=True)",
                    "quantize_static": opts,
                    "calibration_data": "../calib.npy (one batch per leading index)",
                    "input": "../input.npy",
                    "graph_optimization_level": "ORT_ENABLE_ALL (onnxruntime's default)",
                    "qdq_op_types": op_types(qdq),
                    "optimized_op_types": op_types(optimized),
                    "max_abs_diff_vs_float": float(np.abs(y - float_y).max()),
                    "mse_vs_float": float(((y - float_y) ** 2).mean()),
                    "fused_vs_no_fusion_elements_differing": int((y != y_sim).sum()),
                }
                with open(os.path.join(out, "meta.json"), "w") as f:
                    json.dump(meta, f, indent=1)
                    f.write("\n")
                print(out, meta["optimized_op_types"], meta["max_abs_diff_vs_float"])


if __name__ == "__main__":
    main(sys.argv[1:])
