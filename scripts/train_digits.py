#!/usr/bin/env python3
"""The worked example's model: a small residual CNN trained on scikit-learn's `load_digits`
(8x8 images of handwritten digits, shipped inside the package), exported to ONNX.

Writes examples/digits/:
    model.onnx    float model for batches of 32, with its BatchNorms (TorchScript exporter, opset 17,
                  training=PRESERVE so that squint folds BN exactly as PyTorch's fuse_modules)
    calib.npy     float32 [8, 32, 1, 8, 8]: 8 calibration batches from the training split
    test_x.npy    float32 [N, 1, 8, 8]: the held-out split
    test_y.npy    int32 [N]: its labels
    pytorch.json  accuracies PyTorch itself gets: float, and eager static int8 (x86 and
                  qnnpack engines, calibrated on calib.npy)

Deterministic (fixed seeds, one thread). Run: python3 scripts/train_digits.py
"""
import io
import json
import os

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

torch.manual_seed(0)
torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(__file__), "..", "examples", "digits")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.add = nn.quantized.FloatFunctional()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, 10)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.add.add_relu(self.bn2(self.conv2(y)), y)
        y = self.pool(y)
        y = self.relu3(self.conv3(y))
        y = self.fc(self.flatten(self.gap(y)))
        return self.dequant(y)


def main():
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1]
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    for epoch in range(25):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    xe = torch.from_numpy(x_te)

    def acc(m):
        with torch.no_grad():
            return float((m(xe).argmax(1).numpy() == y_te).mean())

    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    calib = x_tr[rng.permutation(len(x_tr))[:256]].reshape(8, 32, 1, 8, 8)
    np.save(os.path.join(OUT, "calib.npy"), calib)
    np.save(os.path.join(OUT, "test_x.npy"), x_te)
    np.save(os.path.join(OUT, "test_y.npy"), y_te.astype(np.int32))

    f = io.BytesIO()
    torch.onnx.export(model, (xe[:32],), f, dynamo=False, do_constant_folding=True,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      training=torch.onnx.TrainingMode.PRESERVE)
    with open(os.path.join(OUT, "model.onnx"), "wb") as o:
        o.write(f.getvalue())

    result = {"torch": torch.__version__, "float": acc(model)}
    for engine in ["x86", "qnnpack"]:
        import copy
        torch.backends.quantized.engine = engine
        m = copy.deepcopy(model)
        m.qconfig = torch.ao.quantization.get_default_qconfig(engine)
        torch.ao.quantization.fuse_modules(
            m, [["conv1", "bn1", "relu1"], ["conv2", "bn2"], ["conv3", "relu3"]], inplace=True)
        torch.ao.quantization.prepare(m, inplace=True)
        with torch.no_grad():
            for b in calib:
                m(torch.from_numpy(b))
        torch.ao.quantization.convert(m, inplace=True)
        result[f"int8_{engine}"] = acc(m)
    with open(os.path.join(OUT, "pytorch.json"), "w") as o:
        json.dump(result, o, indent=1)
    print(result)


if __name__ == "__main__":
    main()
