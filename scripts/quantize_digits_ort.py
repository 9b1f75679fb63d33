#!/usr/bin/env python3
"""The digits example's model quantized by ONNX Runtime, for the comparison in the README.

Takes examples/digits/model.onnx (scripts/train_digits.py) and its calibration batches, runs
ONNX Runtime's `quant_pre_process` and `quantize_static` (QDQ, MinMax, uint8 activations, int8
weights with `reduce_range`, per-tensor and per-channel), and scores each QDQ model with ORT's
CPU provider on the held-out split. Writes examples/digits/model_qdq_<per_tensor|per_channel>.onnx
and examples/digits/ort.json: accuracy, and the MSE of the logits against the float model's,
for each. The example (examples/digits.rs) runs the same QDQ models in squint.

Usage: python3 scripts/quantize_digits_ort.py   (needs onnx, onnxruntime, numpy from PyPI)
"""
import json
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

D = os.path.join(os.path.dirname(__file__), "..", "examples", "digits")


class Reader(CalibrationDataReader):
    def __init__(self, name, batches):
        self.it = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self.it, None)


def logits(path, name, x, batch):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(x), batch):
        b = x[i:i + batch]
        real = len(b)
        if real < batch:  # pad with the batch's first image, as the example does
            b = np.concatenate([b, np.repeat(b[:1], batch - real, axis=0)])
        out.append(s.run(None, {name: b})[0][:real])
    return np.concatenate(out)


def main():
    calib = np.load(os.path.join(D, "calib.npy")).astype(np.float32)
    x = np.load(os.path.join(D, "test_x.npy")).astype(np.float32)
    y = np.load(os.path.join(D, "test_y.npy"))
    batch = calib.shape[1]
    result = {"onnxruntime_version": ort.__version__, "images": int(len(y))}
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(os.path.join(D, "model.onnx"), pre)
        name = onnx.load(pre).graph.input[0].name
        f = logits(os.path.join(D, "model.onnx"), name, x, batch)
        result["float_accuracy"] = float((f.argmax(1) == y).mean())
        for tag, pc in [("per_tensor", False), ("per_channel", True)]:
            q = os.path.join(D, f"model_qdq_{tag}.onnx")
            quantize_static(pre, q, Reader(name, calib), quant_format=QuantFormat.QDQ,
                            per_channel=pc, reduce_range=True,
                            calibrate_method=CalibrationMethod.MinMax,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            l = logits(q, name, x, batch)
            result[tag] = {"accuracy": float((l.argmax(1) == y).mean()),
                           "mse_vs_float": float(((l - f) ** 2).mean())}
    with open(os.path.join(D, "ort.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
