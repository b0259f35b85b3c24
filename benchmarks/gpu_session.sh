#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool's `run`): the GPU tests, the static readiness
# table and the benchmarks, with everything they print saved under $OUT (or benchmarks/results/
# when OUT is unset). Sized for one NVIDIA H200 lent for 15 minutes: each part has a time limit,
# so the whole script ends within about 8 minutes (pytest 300 s, roofline 30 s, bench 60 s,
# vs_pytorch 75 s) and a part that overruns leaves its log so far.
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
  echo "# $tag: pytest -m gpu"; nvidia-smi -L
  timed 300 python3 -m pytest -m gpu -q -rs -p no:cacheprovider --durations=15 tests
} 2>&1 | tee "$out/$tag-pytest-gpu.log"
{
  echo "# $tag: static readiness (nvcc --resource-usage, sm_90) and roofline, alexnet batch 128"
  timed 30 python3 -m netspec.cli bench --spec specs/alexnet.net --batch-size 128 --roofline
} 2>&1 | tee "$out/$tag-roofline.log"
{
  echo "# $tag: netspec bench, alexnet, batch 128, cuda"
  timed 60 python3 -m netspec.cli bench --spec specs/alexnet.net --backend cuda \
      --batch-size 128 --iterations 5 --kernels
} 2>&1 | tee "$out/$tag-bench-cuda.log"
timed 75 python3 benchmarks/vs_pytorch.py --backends cuda --batch-size 128 \
    --out "$out/$tag-vs-pytorch.json" 2>&1 | tee "$out/$tag-vs-pytorch.log"
