#!/usr/bin/env python3
"""A QDQ model with broadcasting adds, quantized and run by ONNX Runtime.

Builds a float ONNX model with onnx.helper (numpy seed 11): Conv 3->8 3x3 p1 + Relu (r1),
GlobalAveragePool (g1), Add(r1, g1) (B broadcast over H, W), Conv 8->8 3x3 p1 + Relu (r2),
GlobalAveragePool (g2), Add(g2, r2) (A broadcast: ORT swaps it into B's place), GlobalAveragePool,
Flatten, Gemm 8->10; quantizes it with `quantize_static` (QDQ, MinMax, QUInt8 activations,
QInt8 per-channel weights, reduce_range) and runs it with ORT (ORT_ENABLE_ALL, one thread).
Writes tests/data/models/bcast_add/: model.onnx, calib.npy [4, 2, 3, 16, 16], input.npy,
qdq/model_qdq.onnx, qdq/output.npy, qdq/meta.json (the op types ORT executed); and the same
files in tests/data/models/bcast_add_out/ for `build_out` (both broadcasting adds at the
output, run by ORT in NHWC).

Usage: python3 scripts/gen_qdq_bcast_fixture.py   (needs onnx, onnxruntime, numpy)
"""

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)

from gen_qdq_int8_fixture import Batches, fc_head, finish, op_types, record  # same directory

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "models",
                   "bcast_add")


def build(rng):
    inits, nodes = [], []

    def conv(name, x, cin, cout):
        w = rng.normal(0, 1.0 / np.sqrt(cin * 9), (cout, cin, 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.1, (cout,)).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, name + ".w"), numpy_helper.from_array(b, name + ".b")])
        nodes.append(helper.make_node("Conv", [x, name + ".w", name + ".b"], [name + "_out"],
                                      name=name, kernel_shape=[3, 3], pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [name + "_out"], [name + "_relu"], name=name + "_relu"))
        return name + "_relu"

    r1 = conv("conv1", "input", 3, 8)
    nodes.append(helper.make_node("GlobalAveragePool", [r1], ["g1"], name="gap1"))
    nodes.append(helper.make_node("Add", [r1, "g1"], ["a1"], name="add1"))
    r2 = conv("conv2", "a1", 8, 8)
    nodes.append(helper.make_node("GlobalAveragePool", [r2], ["g2"], name="gap2"))
    nodes.append(helper.make_node("Add", ["g2", r2], ["a2"], name="add2"))
    nodes.append(helper.make_node("GlobalAveragePool", ["a2"], ["g3"], name="gap3"))
    fc_head(rng, nodes, inits, "g3")
    return finish("bcast_add", nodes, inits, [2, 3, 16, 16], "logits", [2, 10])


def build_out(rng):
    """Conv 3->8 3x3 p1, g = GlobalAveragePool, Add(g, c) (A broadcast), Add(., g) (B
    broadcast) as the graph output: ORT runs both QLinearAdds in NHWC (between its
    Transposes), and the output shows them directly."""
    w = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (8,)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "c.w"), numpy_helper.from_array(b, "c.b")]
    nodes = [
        helper.make_node("Conv", ["input", "c.w", "c.b"], ["c"], name="conv",
                         kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
        helper.make_node("Add", ["g", "c"], ["a"], name="add_a_broadcast"),
        helper.make_node("Add", ["a", "g"], ["out"], name="add_b_broadcast"),
    ]
    return finish("bcast_add_out", nodes, inits, [2, 3, 8, 8], "out", [2, 8, 8, 8])


def write(out, model, calib, x):
    os.makedirs(os.path.join(out, "qdq"), exist_ok=True)
    float_path = os.path.join(out, "model.onnx")
    onnx.save(model, float_path)
    np.save(os.path.join(out, "calib.npy"), calib)
    np.save(os.path.join(out, "input.npy"), x)
    qdq = os.path.join(out, "qdq", "model_qdq.onnx")
    quantize_static(float_path, qdq, Batches(list(calib)), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, reduce_range=True, calibrate_method=CalibrationMethod.MinMax)
    record(qdq, x, os.path.join(out, "qdq"),
           dict(quant_format="QDQ", activation_type="QUInt8", weight_type="QInt8",
                per_channel=True, reduce_range=True, calibrate_method="MinMax"))


def main():
    rng = np.random.default_rng(11)
    model = build(rng)
    calib = rng.normal(0, 1, (4, 2, 3, 16, 16)).astype(np.float32)
    x = rng.normal(0, 1, (2, 3, 16, 16)).astype(np.float32)
    write(OUT, model, calib, x)
    rng = np.random.default_rng(5)
    model = build_out(rng)
    calib = rng.normal(0, 1, (4, 2, 3, 8, 8)).astype(np.float32)
    x = rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32)
    write(OUT + "_out", model, calib, x)


if __name__ == "__main__":
    main()
