"""`bench` on the CUDA backend: timed with cupy.cuda.Event, not the host clock. On a CUDA
device, or on the CPU emulator where none answers (then the device is labelled "emulated on the
CPU" and the times are the emulation's)."""
from __future__ import annotations

import json

import pytest

from netspec.ir.build import build_graph
from netspec.runtime.cuda_backend import cuda_emulated, cuda_unavailable_reason

from test_timing import TINY, check_schema

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(cuda_unavailable_reason() is not None,
                                 reason=str(cuda_unavailable_reason()))]


def test_bench_cuda_events(root):
    from netspec.bench import bench
    graph = build_graph(root / TINY)
    res = bench(graph, "cuda", batch_size=8, iterations=3, warmup=1)
    doc = json.loads(json.dumps(res.to_json()))
    check_schema(doc, graph, 8)
    assert "CUDA events" in doc["timer"] and doc["kernels"]
    assert ("emulated on the CPU" in json.dumps(doc)) == cuda_emulated()
