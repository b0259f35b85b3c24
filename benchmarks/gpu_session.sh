#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool's `run`): the GPU tests and the benchmarks,
# with everything they print saved under $OUT (or benchmarks/results/ when OUT is unset).
#
# The GPU machine has CuPy, PyTorch, numpy, click, pillow, safetensors, tqdm, pytest and
# hypothesis, but no network and no lark. Carry lark as a wheel, prepared here first:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl lark==1.3.1
# then call run(command="bash benchmarks/gpu_session.sh", carry=[".whl"]), and commit what
# comes back (the .log and .json files) under benchmarks/results/.
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
export PYTHONUNBUFFERED=1 NETSPEC_AUTOTUNE=0
{
  echo "# $tag: pytest -m gpu"; nvidia-smi -L
  python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests
} 2>&1 | tee "$out/$tag-pytest-gpu.log"
{
  echo "# $tag: netspec bench, alexnet, batch 128, cuda"
  python3 -m netspec.cli bench --spec specs/alexnet.net --backend cuda --batch-size 128 \
      --iterations 10 --kernels
} 2>&1 | tee "$out/$tag-bench-cuda.log"
python3 benchmarks/vs_pytorch.py --backends cuda --batch-size 128 \
    --out "$out/$tag-vs-pytorch.json" 2>&1 | tee "$out/$tag-vs-pytorch.log"
