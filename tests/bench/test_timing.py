"""netspec/bench/timing.py: `bench` on the tiny net, numpy and opencl (PoCL), few iterations.
Only the result's structure and arithmetic are checked, never a speed: speed goals are
benchmarks (benchmarks/vs_pytorch.py), not tests."""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from netspec.bench import bench
from netspec.cli.bench import bench as bench_cmd
from netspec.ir.build import build_graph

TINY = "examples/tiny-alexnet.net"
BATCH = 4


def _backends():
    out = ["numpy", "cpu"]
    try:
        from netspec.runtime.opencl_backend import find_device
        if find_device() is not None:
            out.append("opencl")
    except ImportError:
        pass
    return out


def expected_flops(layer, direction: str, batch: int) -> int:
    """The flop rule, restated from the IR: 2·MACs·N forward; backward the weight gradient
    and, unless the layer reads the network's input, the data gradient."""
    if direction == "update" or not layer.macs:
        return 0
    reads_data = all(name == "data" for name in layer.inputs)
    if direction == "forward":
        passes = 1
    elif layer.weighted:
        passes = 1 if reads_data else 2
    else:
        passes = 0 if reads_data else 1
    return 2 * layer.macs * batch * passes


def check_schema(doc: dict, graph, batch: int) -> None:
    assert doc["format"] == "netspec-bench/1"
    assert doc["batch_size"] == batch and doc["network"] == graph.name
    rows = {(r["layer"], r["direction"]): r for r in doc["rows"]}
    body = graph.compute_layers[:-1]
    for layer in body:
        assert (layer.name, "forward") in rows, layer.name
        # a layer reading the network's input with no weights has no backward
        if layer.weighted or any(n != "data" for n in layer.inputs):
            assert (layer.name, "backward") in rows, layer.name
    assert ("sgd", "update") in rows
    for key, r in rows.items():
        assert r["ms"] > 0, key
        if key[0] != "sgd":
            want = expected_flops(graph.layer(key[0]), key[1], batch)
            assert r["flops"] == want, key
            if want:
                assert r["gflops"] == pytest.approx(want / (r["ms"] * 1e6), rel=1e-9)
            else:
                assert r["gflops"] is None
    assert math.isclose(sum(r["share"] for r in rows.values()), 1.0, rel_tol=1e-6)
    assert doc["step_ms"] > 0 and len(doc["step_ms_all"]) == doc["iterations"]
    assert doc["images_per_sec"] == pytest.approx(1e3 * batch / doc["step_ms"])
    phases = {d: sum(r["ms"] for r in rows.values() if r["direction"] == d)
              for d in ("forward", "backward", "update")}
    assert doc["forward_ms"] == pytest.approx(phases["forward"])
    assert doc["backward_ms"] == pytest.approx(phases["backward"])


@pytest.mark.parametrize("backend", _backends())
def test_bench_schema(root, backend):
    graph = build_graph(root / TINY)
    res = bench(graph, backend, batch_size=BATCH, iterations=2, warmup=1)
    doc = json.loads(json.dumps(res.to_json()))
    check_schema(doc, graph, BATCH)
    if backend == "cpu":         # the device says what runs there, not "NumPy"
        from netspec.runtime.cpu_backend import host_kernels
        runs = "C + OpenMP kernels, NumPy BLAS" if host_kernels()[0] is not None else \
            "the NumPy reference: no C compiler"
        assert runs in doc["device"], doc["device"]
    if backend == "opencl":
        # every launched kernel timed, flops counted per launch
        assert doc["kernels"] and all(k["ms"] > 0 for k in doc["kernels"])
        assert "profiling" in doc["timer"]


def test_command_json(root):
    r = CliRunner().invoke(bench_cmd, ["--spec", str(root / TINY), "--backend", "numpy",
                                       "--batch-size", "2", "--iterations", "1", "--json"])
    assert r.exit_code == 0, r.output
    check_schema(json.loads(r.output), build_graph(root / TINY), 2)


def test_command_table(root):
    r = CliRunner().invoke(bench_cmd, ["--spec", str(root / TINY), "--backend", "numpy",
                                       "--batch-size", "2", "--iterations", "1"])
    assert r.exit_code == 0, r.output
    assert "conv1" in r.output and "images/s" in r.output and "GFLOP/s" in r.output


def test_iterations_must_be_positive(root):
    with pytest.raises(ValueError, match="iterations"):
        bench(build_graph(root / TINY), "numpy", batch_size=2, iterations=0)


def test_winograd_footnote_per_transform():
    """One footnote per transform the table shows, each with its own factor: F(m×m, r×r)
    does m²r² multiplies per tile in the direct conv and (m+r-1)² in the Winograd GEMMs
    (by hand: 36/16 = 2.25, 225/49 = 4.59)."""
    from netspec.bench.timing import winograd_footnotes
    lines = winograd_footnotes(["im2col+GEMM", "winograd F(3x3,5x5)", None,
                                "winograd F(2x2,3x3)", "winograd F(3x3,5x5)"])
    assert len(lines) == 2
    assert lines[0].startswith("* F(3x3,5x5):") and "4.59x fewer" in lines[0]
    assert lines[1].startswith("* F(2x2,3x3):") and "2.25x fewer" in lines[1]
    assert winograd_footnotes(["im2col+GEMM", None]) == []
