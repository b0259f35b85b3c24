"""`bench` on the CUDA backend: timed with cupy.cuda.Event, not the host clock. Needs a CUDA
device; elsewhere it skips, saying why."""
from __future__ import annotations

import json

import pytest

from netspec.ir.build import build_graph

from test_timing import TINY, check_schema


def _why_no_gpu() -> str | None:
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'netspec[cuda12]' or '[cuda13]')"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:       # no driver, no device
        return f"no CUDA device answers ({type(e).__name__}: {e})"
    return None if n > 0 else "no CUDA device answers (0 devices)"


pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(_why_no_gpu() is not None, reason=str(_why_no_gpu()))]


def test_bench_cuda_events(root):
    from netspec.bench import bench
    graph = build_graph(root / TINY)
    res = bench(graph, "cuda", batch_size=8, iterations=3, warmup=1)
    doc = json.loads(json.dumps(res.to_json()))
    check_schema(doc, graph, 8)
    assert "CUDA events" in doc["timer"] and doc["kernels"]
