#!/usr/bin/env bash
# A real-GPU session, ready to go: the GPU tests and the benchmarks on whatever adapter the
# machine has, results written under $OUT. Made for a lent machine that cannot reach the
# package registries (so it cannot build): build here, carry the binaries, run there.
#
#   benches/real_gpu.sh prepare      # here: release binary + GPU test executables -> devrun/
#   benches/real_gpu.sh run          # there (with devrun/ carried): tests + benches -> $OUT
#
# `prepare` strips and xz-compresses the executables into devrun/ (ignored through
# .git/info/exclude; about 20 MiB, under the 64 MiB a device call carries) and, with --loaders,
# downloads the Vulkan/EGL loader packages into .gl/ for machines that lack them. `run` unpacks
# them, points the loaders at an NVIDIA driver when one is installed, makes the fixtures
# reachable at the path the test executables were built with, and writes
#   $OUT/adapters.json     every adapter wgpu sees
#   $OUT/tests.log         the GPU test executables' output, each test in its own process
#                          (SQUINT_REQUIRE_GPU=1: nothing skips)
#   $OUT/bench.json        squint bench --large --gpu-variants --json (every standard shape, 2 CPU
#                          threads, every GPU kernel variant)
#   $OUT/bench_models.json squint bench --model on the tiny ResNet and MobileNet (float, with
#                          calibration, and ORT's per-channel QDQ models)
#   $OUT/ort.md            squint vs ONNX Runtime on the machine's CPU, one thread (if ORT is
#                          there and SKIP_ORT is unset)
#   $OUT/summary.txt       the exit status of each step and the machine's CPU and GPU
# Record the figures in the README with the adapter's name.
set -uo pipefail
cd "$(dirname "$0")/.."
TESTS=(gpu_ops gpu_sweep gpu_stress gpu_graph_ops graph_models concurrency gpu_float_conv qdq_models)

prepare() {
  grep -qx '/devrun/' .git/info/exclude 2>/dev/null || echo /devrun/ >>.git/info/exclude
  rm -rf devrun && mkdir -p devrun
  cargo build --release --bin squint || return 1
  cp target/release/squint devrun/squint
  local exe
  for t in "${TESTS[@]}"; do
    exe=$(cargo test --release --no-run --test "$t" --message-format=json 2>/dev/null |
      python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])' | tail -1)
    [ -n "$exe" ] || { echo "could not build test $t" >&2; return 1; }
    cp "$exe" "devrun/test_$t"
  done
  strip devrun/* && xz -T0 -6 devrun/*
  echo "$PWD" >devrun/built_in
  if [ "${1:-}" = --loaders ]; then
    grep -qx '/.gl/' .git/info/exclude || echo /.gl/ >>.git/info/exclude
    mkdir -p .gl /tmp/amd64/partial
    local o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086
    apt-get $o update -qq && (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  fi
  du -sh devrun .gl 2>/dev/null
  echo "carry: devrun (and .gl); then run: bash benches/real_gpu.sh run"
}

# The fastest squint ISA path this CPU has (the names `--isa` takes).
best_isa() {
  local f
  f=$(grep -m1 '^flags' /proc/cpuinfo)
  case " $f " in
    *" avx512_vnni "*) echo avx512-vnni ;;
    *" avx_vnni "*) echo avx-vnni ;;
    *) echo avx2 ;;
  esac
}

run() {
  local out=${OUT:-gpu-results}
  mkdir -p "$out"
  local sum="$out/summary.txt"
  : >"$sum"
  # Loaders and driver (see the device notes): only where missing.
  if ! ldconfig -p | grep -q libvulkan.so.1 && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [ -e "$icd" ] && export VK_DRIVER_FILES=$icd \
    __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  mkdir -p -m700 /tmp/xdg && export XDG_RUNTIME_DIR=/tmp/xdg
  # The test executables read fixtures at the path they were built in.
  local built
  built=$(cat devrun/built_in)
  if [ "$built" != "$PWD" ] && [ ! -e "$built" ]; then
    mkdir -p "$(dirname "$built")" && ln -s "$PWD" "$built"
  fi
  for f in devrun/*.xz; do xz -dkf "$f"; done
  chmod +x devrun/squint devrun/test_*
  {
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) ($(nproc) cores)"
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
  } >>"$sum"
  devrun/squint adapters --json >"$out/adapters.json" 2>&1
  echo "adapters: exit $?" >>"$sum"
  : >"$out/tests.log"
  # Each test in a process of its own, so that a hang is pinned to one test and does not
  # mask the others; a GPU wait longer than 30 s is an error naming the operation.
  export SQUINT_GPU_TIMEOUT_SECS=30
  local name rc n fails hung
  for t in "${TESTS[@]}"; do
    n=0 fails=0 hung=0
    while read -r name; do
      n=$((n + 1))
      SQUINT_REQUIRE_GPU=1 timeout 90 "devrun/test_$t" "$name" --exact >>"$out/tests.log" 2>&1
      rc=$?
      if [ $rc -eq 124 ]; then
        hung=$((hung + 1)) && echo "TIMED OUT: $t::$name" >>"$sum"
      elif [ $rc -ne 0 ]; then
        fails=$((fails + 1)) && echo "FAILED: $t::$name (exit $rc)" >>"$sum"
      fi
    done < <("devrun/test_$t" --list 2>/dev/null | sed -n 's/: test$//p')
    echo "test $t: $n tests, $fails failed, $hung timed out" >>"$sum"
  done
  # The graph-op tests at once, threads sharing the device, on the tiled and the subgroup
  # GEMM kernel.
  for k in tiled subgroup; do
    SQUINT_TEST_KERNEL=$k SQUINT_REQUIRE_GPU=1 timeout 60 devrun/test_gpu_graph_ops \
      --test-threads 8 >>"$out/tests.log" 2>&1
    echo "test gpu_graph_ops, 8 threads, $k kernel: exit $?" >>"$sum"
  done
  timeout 300 devrun/squint bench --large --gpu-variants --json --runs 9 --threads 2 --backend vulkan \
    >"$out/bench.json" 2>>"$out/tests.log"
  echo "bench: exit $?" >>"$sum"
  {
    for m in resnet_tiny mobilenet_tiny; do
      d=tests/data/models/$m
      timeout 120 devrun/squint bench --json --runs 9 --backend vulkan --model "$d/model_bn.onnx" \
        --input "$d/input.npy" --calib "$d/calib.npy"
      # ORT's QDQ model: values on the device against a round trip per node.
      timeout 120 devrun/squint bench --json --runs 9 --backend vulkan \
        --model "$d/qdq_per_channel/model_qdq.onnx" --input "$d/input.npy"
    done
  } >"$out/bench_models.json" 2>>"$out/tests.log"
  echo "bench --model: exit $?" >>"$sum"
  # The lent machine's CPU against ONNX Runtime (its image has onnxruntime), one thread, the
  # best ISA path and AVX2: another CPU model for the README's table.
  if [ -z "${SKIP_ORT:-}" ] && python3 -c 'import onnxruntime, onnx' 2>/dev/null; then
    timeout 200 python3 benches/peers/compare_ort.py --squint devrun/squint --threads 1 \
      --rounds 3 --isa "$(best_isa)" --isa avx2 \
      >"$out/ort.md" 2>>"$out/tests.log"
    echo "compare_ort: exit $?" >>"$sum"
  fi
  cat "$sum"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) run ;;
  *) echo "usage: $0 prepare [--loaders] | run" >&2; exit 2 ;;
esac
