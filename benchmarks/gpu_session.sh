#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool's `run`): a preflight, the GPU tests and the
# benchmarks, with everything they print saved under $OUT (or benchmarks/results/ when OUT is
# unset). Sized for one H100 or H200 lent for 15 minutes, so that a fix and a rerun fit: each
# part has a time limit and the limits add up to 6 minutes (preflight 25 s, pytest 180 s, bench
# 60 s, vs_pytorch 75 s, 20 s for the installs), and a part that overruns leaves its log so far.
# The preflight (benchmarks/gpu_preflight.py: versions, devices, NCCL, one RawKernel compiled
# and launched) stops the script when CUDA can't be reached, before any test spends time.
# The static readiness table (nvcc --resource-usage) and the roofline need no GPU: run
#   netspec bench --spec specs/alexnet.net --batch-size 128 --roofline
# on the development machine instead.
#
# The GPU machine has CuPy (cupy-cuda13x with nvidia-cuda-nvrtc), PyTorch, numpy, click,
# pillow, safetensors, tqdm, pytest, pytest-timeout and hypothesis, but no network and no lark.
# Carry lark as a wheel, prepared here first:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl lark==1.3.1
# then call run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=540), and
# commit what comes back (the .log and .json files) under benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
stamp=$(date +%Y-%m-%d)
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-')
tag="$stamp-${gpu:-gpu}"
# the real GPU, never the CPU emulator; slow tests (batch 128) run: seconds on a GPU
export PYTHONUNBUFFERED=1 NETSPEC_AUTOTUNE=0 NETSPEC_CUDA_EMULATE=0 NETSPEC_RUN_SLOW=1
timed() { local s=$1; shift; timeout --signal=INT --kill-after=10 "$s" "$@"; }
{
  echo "# $tag: preflight"; nvidia-smi -L
  timed 25 python3 benchmarks/gpu_preflight.py
} 2>&1 | tee "$out/$tag-preflight.log"
if ! grep -q "^preflight: ok" "$out/$tag-preflight.log"; then
  echo "gpu_session: the preflight failed (see $out/$tag-preflight.log); nothing else was run"
  exit 1
fi
{
  echo "# $tag: pytest -m gpu"
  timed 180 python3 -m pytest -m gpu -q -rs -p no:cacheprovider --durations=15 tests
} 2>&1 | tee "$out/$tag-pytest-gpu.log"
{
  echo "# $tag: netspec bench, alexnet, batch 128, cuda"
  timed 60 python3 -m netspec.cli bench --spec specs/alexnet.net --backend cuda \
      --batch-size 128 --iterations 5 --kernels
} 2>&1 | tee "$out/$tag-bench-cuda.log"
timed 75 python3 benchmarks/vs_pytorch.py --backends cuda --batch-size 128 \
    --out "$out/$tag-vs-pytorch.json" 2>&1 | tee "$out/$tag-vs-pytorch.log"
