"""`bench` on the CUDA backend: timed with cupy.cuda.Event, not the host clock. On a CUDA
device, or on the CPU emulator where none answers (then the device is labelled "emulated on the
CPU" and the times are the emulation's)."""
from __future__ import annotations

import json

import numpy as np
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


@pytest.mark.skipif(not cuda_emulated(), reason="host calls are counted by the CUDA emulator")
def test_command_prints_the_emulators_counters(root):
    """`netspec bench --backend cuda` reports one training step's counted host calls and
    issue 26's bounds on them, JSON and table: the batch crosses as uint8 (once per physical
    device) with its header and noise words within 1 KiB a device, plus the labels; nothing
    comes back; no host sync; the step (dropout included) is one graph launch."""
    from click.testing import CliRunner

    from netspec.cli.bench import bench as bench_cmd
    graph = build_graph(root / TINY)
    args = ["--spec", str(root / TINY), "--backend", "cuda", "--batch-size", "2",
            "--iterations", "1", "--warmup", "1"]
    r = CliRunner().invoke(bench_cmd, [*args, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    c, bounds = doc["host_counters"], doc["host_counter_bounds"]
    u8 = 2 * int(np.prod(graph.input_shape))
    devices = 2                      # the emulator's two devices, one logical GPU on each
    assert devices * u8 < c["h2d_bytes"] <= devices * (u8 + 1024) + 2 * 4
    assert c["d2h_bytes"] == 0 and c["syncs"] == 0
    assert (c["graph_launches"], c["launches"], c["device_copies"]) == (1, 0, 0)
    assert set(bounds) == {"h2d_bytes", "d2h_bytes", "syncs", "graph_launches", "launches"}
    assert bounds["h2d_bytes"]["max"] == devices * (u8 + 1024) + 2 * 4
    assert all(b["met"] for b in bounds.values())
    r = CliRunner().invoke(bench_cmd, args)
    assert r.exit_code == 0, r.output
    assert "emulated, counted by the CUDA emulator" in r.output and "host syncs" in r.output
    assert "issue 26's bounds (emulated): h2d_bytes <= " in r.output
    assert "NOT met" not in r.output
