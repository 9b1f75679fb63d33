#!/usr/bin/env python3
"""squint against ONNX Runtime on the CPU, measured in one run: `squint bench` (int8 fast path
and float32, one or more ISA paths) and ONNX Runtime's QLinearConv / Conv
(`ort_qlinearconv.py`) on the same shapes, alternated for `--rounds` rounds; each figure is the
median over rounds of each round's median (`--stat best`: the best round's median, for machines
whose speed jumps between two levels for seconds at a time, where the median of a few rounds
compares one side's fast rounds with the other's slow ones). Prints a Markdown table of GOPS and ratios headed by
the CPU's model name and flags (quote it as it is: these machines are shared and noisy).

    cargo build --release
    pip install onnxruntime onnx numpy
    python3 benches/peers/compare_ort.py --threads 1 --isa avx512-vnni --isa avx2 \
        [--act-bits 7 --act-bits 8] [--json]

On ARM: `--isa neon-dotprod --isa portable` (ONNX Runtime's wheels run its ARM kernels).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import ort_qlinearconv  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def cpu_name():
    """The CPU's model name and the flags that choose squint's ISA paths: x86's `flags` line,
    or AArch64's `Features` (`asimddp`: the dot product of `neon-dotprod`; `i8mm`) with the
    implementer and part numbers where Linux gives no model name."""
    flags, name, part = set(), "unknown CPU", {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and name == "unknown CPU":
                    name = value
                elif key in ("flags", "Features"):
                    flags = set(value.split())
                elif key in ("CPU implementer", "CPU part"):
                    part.setdefault(key, value)
    except OSError:
        pass
    if name == "unknown CPU" and part:
        name = "ARM CPU " + ", ".join(f"{k.lower()} {v}" for k, v in part.items())
    known = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimd", "asimddp", "i8mm")
    isa = [f for f in known if f in flags]
    return f"{name} ({os.cpu_count()} cores; {', '.join(isa) or 'no AVX2 or NEON'})"


def squint_bench(exe, threads, runs, isa, act_bits):
    cmd = [exe, "bench", "--no-gpu", "--no-reference", "--json", "--threads", str(threads),
           "--runs", str(runs), "--act-bits", str(act_bits)] + (["--isa", isa] if isa else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rep = json.loads(out)
    return rep["cpu_isa"], [r for r in rep["results"]
                            if r["path"] in ("float32 cpu", "int8 cpu fast")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--squint", default=os.path.join(ROOT, "target", "release", "squint"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=11, help="timed runs per path and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--isa", action="append", help="squint ISA path (repeatable; default: best)")
    ap.add_argument("--act-bits", type=int, action="append", choices=(7, 8),
                    help="squint's int8 input range (repeatable; default 7: PyTorch's x86 "
                         "preset; 8 is full range, where AVX2 needs squint's exact kernel)")
    ap.add_argument("--stat", choices=("median", "best"), default="median",
                    help="per path, the median over rounds of each round's median GOPS, or the "
                         "best round's (robust where the machine's speed jumps between levels)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    # (ISA path, activation bits) per squint run; ORT's speed does not depend on the values.
    isas = [(isa, bits) for isa in (a.isa or [None]) for bits in (a.act_bits or [7])]
    shapes = [s[0] for s in ort_qlinearconv.SHAPES]
    gops = {}  # (shape index, path) -> [GOPS per round]
    names = {}
    for _ in range(a.rounds):
        for isa, bits in isas:
            name, res = squint_bench(a.squint, a.threads, a.runs, isa, bits)
            name += "" if bits == 7 else f", {bits}-bit input"
            names[isa, bits] = name
            by_shape = list(dict.fromkeys(r["shape"] for r in res))
            for r in res:
                i = by_shape.index(r["shape"])
                path = ("squint int8 " if r["path"] == "int8 cpu fast" else "squint f32 ") + name
                gops.setdefault((i, path), []).append(r["gops"])
        for r in ort_qlinearconv.measure(a.threads, a.runs):
            i = shapes.index(r["shape"])
            gops.setdefault((i, r["path"]), []).append(r["gops"])
    stat = statistics.median if a.stat == "median" else max
    med = {k: stat(v) for k, v in gops.items()}
    head = (f"{cpu_name()}; onnxruntime {ort_qlinearconv.ort.__version__}; {a.threads} thread(s); "
            f"{'median' if a.stat == 'median' else 'best'} of {a.rounds} rounds x {a.runs} runs "
            "(each round: the median run)")
    if a.json:
        print(json.dumps({"machine": head, "gops": [
            {"shape": shapes[i], "path": p, "gops": g} for (i, p), g in sorted(med.items())]},
            indent=1))
        return
    print(head + "\n")
    cols = []
    for key in isas:
        n = names[key]
        cols.append((f"squint int8 {n}", "ort int8"))
        # (f32 does not depend on the int8 input's range: once per ISA path.)
        if key[1] == isas[0][1]:
            cols.append((f"squint f32 {n}", "ort float32"))
    print("| shape | " + " | ".join(f"{s} | {o} | ratio" for s, o in cols) + " |")
    print("|---" * (1 + 3 * len(cols)) + "|")
    for i, s in enumerate(shapes):
        cells = []
        for sq, o in cols:
            x, y = med.get((i, sq), float("nan")), med.get((i, o), float("nan"))
            cells.append(f"{x:.1f} | {y:.1f} | {x / y:.2f}x")
        print(f"| {s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
