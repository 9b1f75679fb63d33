#!/usr/bin/env python3
"""Vendors the ONNX backend node tests that squint's ORT reference ops must pass.

Downloads the onnx 1.22.0 wheel from PyPI (`pip download onnx==1.22.0 --no-deps`; later
releases generate the test data at test time instead of shipping it) and copies
`onnx/backend/test/data/node/<name>/` (model.onnx + test_data_set_0/*.pb) for each name in
SUPPORTED into tests/data/onnx_conformance/<name>/. UNSUPPORTED lists the tests of the same
ops that squint does not run (float8, int4/int2, int16, blocked quantization, float16 scales).

Usage: python3 scripts/fetch_onnx_conformance.py [--wheel path/to/onnx-1.22.0-*.whl]
"""
import argparse
import glob
import os
import shutil
import subprocess
import tempfile
import zipfile

SUPPORTED = [
    "test_quantizelinear",
    "test_quantizelinear_axis",
    "test_dequantizelinear",
    "test_dequantizelinear_axis",
    "test_qlinearconv",
    "test_convinteger_with_padding",
    "test_convinteger_without_padding",
    "test_qlinearmatmul_2D_uint8_float32",
    "test_qlinearmatmul_2D_int8_float32",
    "test_qlinearmatmul_3D_uint8_float32",
    "test_qlinearmatmul_3D_int8_float32",
    "test_matmulinteger",
]

# Same ops, types squint does not run (an error naming the node, never a float fallback).
UNSUPPORTED = [
    "test_quantizelinear_blocked_asymmetric", "test_quantizelinear_blocked_symmetric",
    "test_quantizelinear_e4m3fn", "test_quantizelinear_e5m2", "test_quantizelinear_float4e2m1",
    "test_quantizelinear_int16", "test_quantizelinear_uint16", "test_quantizelinear_int4",
    "test_quantizelinear_uint4", "test_quantizelinear_int2", "test_quantizelinear_uint2",
    "test_dequantizelinear_blocked", "test_dequantizelinear_e4m3fn",
    "test_dequantizelinear_e4m3fn_float16", "test_dequantizelinear_e4m3fn_zero_point",
    "test_dequantizelinear_e5m2", "test_dequantizelinear_float4e2m1",
    "test_dequantizelinear_int16", "test_dequantizelinear_uint16", "test_dequantizelinear_int4",
    "test_dequantizelinear_uint4", "test_dequantizelinear_int2", "test_dequantizelinear_uint2",
    "test_qlinearmatmul_2D_int8_float16", "test_qlinearmatmul_2D_uint8_float16",
    "test_qlinearmatmul_3D_int8_float16", "test_qlinearmatmul_3D_uint8_float16",
]

PREFIX = "onnx/backend/test/data/node/"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", help="an already downloaded onnx-1.22.0 wheel")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "data", "onnx_conformance"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            subprocess.run(["pip", "download", "onnx==1.22.0", "--no-deps", "-q", "-d", tmp],
                           check=True)
            wheel = glob.glob(os.path.join(tmp, "onnx-1.22.0-*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            for name in SUPPORTED:
                dest = os.path.join(args.out, name)
                shutil.rmtree(dest, ignore_errors=True)
                members = [m for m in z.namelist()
                           if m.startswith(PREFIX + name + "/") and not m.endswith("/")]
                if not members:
                    raise SystemExit(f"{name} is not in {wheel}")
                for m in members:
                    path = os.path.join(dest, m[len(PREFIX + name + "/"):])
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(z.read(m))
                print(name, len(members), "files")


if __name__ == "__main__":
    main()
