#!/usr/bin/env python3
"""A QDQ model with int8 (signed) activations that ONNX Runtime runs in int8 throughout.

ORT's x86 CPU provider converts an int8 QuantizeLinear -> DequantizeLinear pair to uint8
(`QDQS8ToU8Transformer`) only when the pair has a single reader; a value read twice keeps int8
and the nodes around it stay float ops. A straight chain (every value read once) is therefore
fused entirely into ORT's uint8 kernels, and its result is the int8 model's, shifted by 128.

This script builds such a chain as a float ONNX model with onnx.helper (random weights,
numpy seed 7): Conv 3->8 3x3 p1 + Relu, MaxPool 2x2, Conv 8->16 3x3 p1 + Relu, Conv 16->8
1x1, AveragePool 2x2, Conv 8->8 3x3 p1 + Relu, GlobalAveragePool, Flatten, Gemm 8->10;
quantizes it with `quantize_static` (QDQ, MinMax, QInt8 activations and weights, per-channel,
reduce_range) on random calibration batches, runs it with ORT (ORT_ENABLE_ALL, one thread),
and writes tests/data/models/chain_int8/:

    model.onnx               the float model
    calib.npy, input.npy     calibration batches [4, 2, 3, 16, 16] and the input [2, 3, 16, 16]
    qdq_int8/model_qdq.onnx  the QDQ model (int8 activations)
    qdq_int8/output.npy      ORT's output
    qdq_int8/meta.json       versions, CPU flags, the op types ORT executed (no float op)

Usage: python3 scripts/gen_qdq_int8_fixture.py   (needs onnx, onnxruntime, numpy)
"""

import collections
import json
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)

from gen_ort_op_fixtures import cpu_flags  # same directory

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "models",
                   "chain_int8")


def op_types(m):
    c = collections.Counter((n.domain + "::" if n.domain else "") + n.op_type for n in m.graph.node)
    return dict(sorted(c.items()))


def fc_head(rng, nodes, inits, pooled):
    """Flatten the N x 8 x 1 x 1 value `pooled` and a Gemm to 10 `logits`."""
    nodes.append(helper.make_node("Flatten", [pooled], ["flat"], name="flatten", axis=1))
    w = rng.normal(0, 0.3, (10, 8)).astype(np.float32)
    b = rng.normal(0, 0.1, (10,)).astype(np.float32)
    inits.extend([numpy_helper.from_array(w, "fc.w"), numpy_helper.from_array(b, "fc.b")])
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1))


def finish(name, nodes, inits, input_shape, output, output_shape):
    """The checked opset-13 model of a graph with one float input and one float output."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build(rng):
    inits, nodes = [], []

    def conv(name, x, cin, cout, k, pad, relu):
        w = rng.normal(0, 1.0 / np.sqrt(cin * k * k), (cout, cin, k, k)).astype(np.float32)
        b = rng.normal(0, 0.1, (cout,)).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, name + ".w"), numpy_helper.from_array(b, name + ".b")])
        out = name + "_out"
        nodes.append(helper.make_node("Conv", [x, name + ".w", name + ".b"], [out], name=name,
                                      kernel_shape=[k, k], pads=[pad] * 4))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [name + "_relu"], name=name + "_relu"))
            out = name + "_relu"
        return out

    x = conv("conv1", "input", 3, 8, 3, 1, True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool1"], name="pool1", kernel_shape=[2, 2],
                                  strides=[2, 2]))
    x = conv("conv2", "pool1", 8, 16, 3, 1, True)
    x = conv("conv3", x, 16, 8, 1, 0, False)
    nodes.append(helper.make_node("AveragePool", [x], ["pool2"], name="pool2",
                                  kernel_shape=[2, 2], strides=[2, 2]))
    x = conv("conv4", "pool2", 8, 8, 3, 1, True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    fc_head(rng, nodes, inits, "gap")
    return finish("chain_int8", nodes, inits, [2, 3, 16, 16], "logits", [2, 10])


class Batches(CalibrationDataReader):
    def __init__(self, batches):
        self.it = iter([{"input": b} for b in batches])

    def get_next(self):
        return next(self.it, None)


def record(qdq, x, out_dir, quantize_static_opts):
    """Runs the QDQ model `qdq` with ORT (ORT_ENABLE_ALL, one thread) on `x` and writes
    `output.npy` and `meta.json` (versions, CPU flags, options, the op types ORT executed)
    to `out_dir`."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        y = ort.InferenceSession(qdq, so, providers=["CPUExecutionProvider"]).run(
            None, {"input": x})[0]
        executed = op_types(onnx.load(so.optimized_model_filepath))
    np.save(os.path.join(out_dir, "output.npy"), y.astype(np.float32))
    meta = {
        "onnxruntime_version": ort.__version__,
        "onnx_version": onnx.__version__,
        "cpu_flags": cpu_flags(),
        "quantize_static": quantize_static_opts,
        "calibration_data": "../calib.npy (one batch per leading index)",
        "input": "../input.npy",
        "qdq_op_types": op_types(onnx.load(qdq)),
        "executed_op_types": executed,
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(executed)


def main():
    rng = np.random.default_rng(7)
    os.makedirs(os.path.join(OUT, "qdq_int8"), exist_ok=True)
    model = build(rng)
    float_path = os.path.join(OUT, "model.onnx")
    onnx.save(model, float_path)
    calib = rng.normal(0, 1, (4, 2, 3, 16, 16)).astype(np.float32)
    x = rng.normal(0, 1, (2, 3, 16, 16)).astype(np.float32)
    np.save(os.path.join(OUT, "calib.npy"), calib)
    np.save(os.path.join(OUT, "input.npy"), x)
    qdq = os.path.join(OUT, "qdq_int8", "model_qdq.onnx")
    quantize_static(float_path, qdq, Batches(list(calib)), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True, reduce_range=True, calibrate_method=CalibrationMethod.MinMax)
    record(qdq, x, os.path.join(OUT, "qdq_int8"),
           dict(quant_format="QDQ", activation_type="QInt8", weight_type="QInt8",
                per_channel=True, reduce_range=True, calibrate_method="MinMax"))


if __name__ == "__main__":
    main()
