"""netspec/bench/vs_pytorch.py: the PyTorch mirror computes the network netspec computes
(checked against the NumPy reference backend, so that a speed ratio compares the same work),
`netspec bench --vs-pytorch` and benchmarks/vs_pytorch.py report the same-run ratios of their
own numbers, and a missing torch or CUDA is a usage error. No speed is asserted: speed goals
are benchmarks."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

import netspec
from netspec.bench.vs_pytorch import NotComparable, torch_layers
from netspec.cli import main
from netspec.ir.build import build_graph
from netspec.kernel.philox import uniforms

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
from test_numpy_vs_torch import he_parameters  # noqa: E402

from net_specs import BRANCHES, edge_case_specs  # noqa: E402

TINY = ROOT / "examples" / "tiny-alexnet.net"

# every layer type the mirror builds, in one chain on two logical GPUs: a conv reading the
# replicated input, a `same-gpu` conv (grouped), LRN within each GPU's part, both poolings, a
# separate ReLU, fc over all parts and fc over each GPU's own part, dropout
ALL_TYPES = """network alltypes
input 3x20x20
classes 6
gpus 2
conv c1 filters 8 size 3 stride 2 pad 1 relu
lrn n1 size 3 alpha 0.05 beta 0.75 k 2
maxpool p1 size 3 stride 2
conv c2 filters 12 size 3 pad 1 connect same-gpu
relu r2
avgpool p2 size 2 stride 2
fc f1 outputs 16 relu connect all
dropout d1 p 0.5
fc f2 outputs 10 relu connect same-gpu
fc f3 outputs 6 connect all
softmax prob
"""


def rel(a, b) -> float:
    """max|a − b| / max|b|, b the PyTorch value (an all-zero b: the absolute difference)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1.0e-30))


def documented_keep_masks(graph, rng, n) -> dict:
    """The keep masks a training step draws, re-derived from netspec/runtime/net.py's
    documentation ("Dropout draws"): one uint64 from the generator is the Philox seed; step 0,
    images 0..n-1, each dropout layer keyed by its compute-layer index."""
    key = int(rng.integers(0, 1 << 64, dtype=np.uint64))
    return {l.name: uniforms(key, 0, i, 0, n, int(np.prod(l.out_shape)))
            .reshape(n, *l.out_shape) >= np.float32(l.attrs["p"])
            for i, l in enumerate(graph.compute_layers) if l.type == "dropout"}


def check_mirror(spec, batch: int, seed: int) -> None:
    """The mirror's loss (1e-4) and parameter gradients (1e-3 relative) equal the NumPy
    backend's for the same weights, batch and dropout masks, in float32."""
    graph = build_graph(spec)
    net = netspec.build(graph, backend="numpy", seed=seed)
    params = he_parameters(net.param_shapes, seed=seed + 1)
    net.load_parameters(params)
    rng = np.random.default_rng(seed + 2)
    x = rng.standard_normal((batch, *graph.input_shape), dtype=np.float32)
    labels = rng.integers(0, graph.classes, batch)
    net.rng = np.random.default_rng(seed + 3)               # the dropout masks' generator
    masks = documented_keep_masks(graph, np.random.default_rng(seed + 3), batch)
    loss, grads = net.loss_and_grads(x, labels, train=True)

    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    h = torch.from_numpy(x)
    for _, fn, _ in torch_layers(graph, params, torch.device("cpu"), keep_masks=masks):
        h = fn(h, P)
    ref_loss = F.cross_entropy(h, torch.from_numpy(labels))
    ref_grads = dict(zip(P, torch.autograd.grad(ref_loss, list(P.values()))))
    assert abs(loss - ref_loss.item()) <= 1e-4 * abs(ref_loss.item())
    assert set(grads) == set(ref_grads)
    errors = {k: rel(grads[k], ref_grads[k].numpy()) for k in grads}
    assert max(errors.values()) <= 1e-3, errors


def test_mirror_computes_tiny_alexnet():
    check_mirror(TINY, batch=3, seed=5)


def test_mirror_computes_every_layer_type():
    assert {l.type for l in build_graph(ALL_TYPES).compute_layers} == \
        {"conv", "lrn", "maxpool", "avgpool", "relu", "fc", "dropout", "softmax"}
    check_mirror(ALL_TYPES, batch=4, seed=11)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edge_case_specs())
def test_mirror_computes_edge_cases(case):
    # uneven splits, `groups` that don't line up with the GPUs, LRN groups, 1-4 GPU parts:
    # the mirror's per-part path
    text, batch = case
    check_mirror(text, batch=batch, seed=7)


def test_mirror_refuses_what_it_does_not_build():
    graph = build_graph(BRANCHES)              # layers reading several layers, not a chain
    net = netspec.build(graph, backend="numpy")
    with pytest.raises(NotComparable, match="chain"):
        torch_layers(graph, net.parameters())


def bench_vs_pytorch(*flags):
    return CliRunner().invoke(main, ["bench", "--spec", str(TINY), "--backend", "cpu",
                                     "--batch-size", "2", "--iterations", "1", "--warmup", "0",
                                     "--vs-pytorch", *flags])


def test_command_json_ratios_are_its_own_numbers():
    r = bench_vs_pytorch("--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    graph = build_graph(TINY)
    types = {l.name: l.type for l in graph.layers}
    assert doc["format"] == "netspec-bench/1" and doc["backend"] == "cpu"
    assert doc["batch_size"] == 2 and doc["iterations"] == 1
    cmp, theirs = doc["comparison"], doc["torch"]
    # both speed ratios are PyTorch time / netspec time of this same JSON
    assert cmp["step"]["netspec_ms"] == doc["step_ms"]
    assert cmp["step"]["torch_ms"] == theirs["step_ms"]
    assert cmp["step"]["speed_ratio"] == pytest.approx(theirs["step_ms"] / doc["step_ms"])
    assert cmp["loss_grads"]["netspec_ms"] == doc["loss_grads_ms"]
    assert cmp["loss_grads"]["torch_ms"] == theirs["loss_grads_ms"]
    assert cmp["loss_grads"]["speed_ratio"] == \
        pytest.approx(theirs["loss_grads_ms"] / doc["loss_grads_ms"])
    # per type and direction: the sums of each side's rows, and their time ratio
    keys = {(r["layer"], r["direction"]) for r in doc["rows"]}
    assert keys == {(r["layer"], r["direction"]) for r in theirs["rows"]}
    by_type = {(r["type"], r["direction"]): r for r in cmp["by_type"]}
    for (t, d), row in by_type.items():
        ours = sum(r["ms"] for r in doc["rows"] if types.get(r["layer"], "sgd") == t
                   and r["direction"] == d)
        assert row["netspec_ms"] == pytest.approx(ours)
        assert row["torch_ms"] > 0 and row["ratio"] == \
            pytest.approx(row["netspec_ms"] / row["torch_ms"])
    compute_types = {l.type for l in graph.compute_layers}
    assert {t for t, d in by_type if d == "forward"} == compute_types
    assert {t for t, d in by_type if d == "backward"} == compute_types - {"softmax"}
    assert ("sgd", "update") in by_type
    # the run's context
    assert doc["sgemm_gflops"] > 0
    assert theirs["version"] == torch.__version__ and theirs["threads"] >= 1
    assert doc["versions"]["torch"] == torch.__version__
    assert len(doc["load_average_before"]) == len(doc["load_average_after"]) == 3


def test_command_table():
    r = bench_vs_pytorch()
    assert r.exit_code == 0, r.output
    out = r.output
    assert "conv1" in out and "of sgemm" in out                       # the per-layer table
    assert "vs PyTorch" in out and "(PyTorch/netspec speed" in out     # the comparison
    assert "load average before" in out


def test_without_torch_is_a_usage_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)           # import torch -> ImportError
    r = bench_vs_pytorch()
    assert r.exit_code == 2, r.output
    assert 'pip install "netspec[bench]"' in r.output and "Usage:" in r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)


def test_cuda_without_torch_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = CliRunner().invoke(main, ["bench", "--spec", str(TINY), "--backend", "cuda",
                                  "--vs-pytorch"])
    assert r.exit_code == 2, r.output
    assert "torch.cuda.is_available() is False" in r.output and "Traceback" not in r.output


RESIDUAL = """network residual
input 3x8x8
classes 5
init weight he bias 0
conv c1 filters 6 size 3 pad 1 nobias
batchnorm bn1
relu r1
conv c2 filters 6 size 3 pad 1
add s from c2, r1 relu
conv c3 filters 4 size 1 from r1
concat cat from s, c3, s
maxpool p size 2 stride 2
fc f outputs 5
softmax prob
"""


@pytest.mark.parametrize("spec", [RESIDUAL, BRANCHES], ids=["residual", "branches"])
def test_the_bench_mirror_follows_any_graph(spec):
    """PyTorch's side of `bench --vs-pytorch` (TorchStep) on graphs that are not chains: a
    residual add, a concat reading one layer twice, batch norm (its running statistics are
    state, not trained), a layer read by three: the gradients its whole step and its layered
    step (each layer on detached inputs, input gradients split back among the layers read)
    hand to SGD equal the NumPy backend's."""
    from netspec.bench.vs_pytorch import TorchStep
    graph = build_graph(spec)
    net = netspec.build(graph, backend="numpy", seed=1)
    params = net.parameters()
    step = TorchStep(graph, params, batch=3, seed=4)
    rng = np.random.default_rng(4)                       # TorchStep's own draw
    x = rng.standard_normal((3, *graph.input_shape), dtype=np.float32)
    labels = rng.integers(0, graph.classes, 3)
    _, grads = net.loss_and_grads(x, labels, train=True)
    for run in (step.whole_step, lambda: step.layered_step(collections.defaultdict(float))):
        for k, v in params.items():                      # the same start each time
            step.P[k].data = torch.tensor(v)
        seen = {}
        step.update = seen.update
        run()
        assert set(seen) == set(grads) - {k for k in grads if "running_" in k}
        errors = {k: rel(np.asarray(grads[k]), seen[k].numpy()) for k in seen}
        assert max(errors.values()) <= 1e-3, errors


def test_not_mirrored_spec_is_a_clean_error(monkeypatch):
    """A layer type without a PyTorch form (a registered op may have none) is NotComparable,
    naming the layer; the command says so in one line, exit 2. (PyTorch's side runs in a
    process of its own, which a monkeypatch here doesn't reach: the command is driven by
    patching the mirror's entry point to raise what the mirror raised.)"""
    import netspec.bench.vs_pytorch as mirror
    from netspec.ops import OPS

    def no_torch(self, a, **kw):
        raise NotImplementedError("no PyTorch form")
    graph = build_graph(TINY)
    monkeypatch.setattr(type(OPS["lrn"]), "torch", no_torch)
    with pytest.raises(NotComparable, match="norm1: layer type lrn is not mirrored") as e:
        torch_layers(graph, graph.param_shapes(), chain=False)

    def compare(*args, **kw):
        raise e.value
    monkeypatch.setattr(mirror, "compare_with_torch", compare)
    r = bench_vs_pytorch()
    assert r.exit_code == 2, r.output
    assert "norm1: layer type lrn is not mirrored in PyTorch" in r.output
    assert "Traceback" not in r.output


def test_benchmark_script_writes_its_format(tmp_path):
    out = tmp_path / "vs.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vs_pytorch.py"), "--spec",
                    str(TINY), "--backends", "numpy", "--batch-size", "2", "--iterations", "1",
                    "--warmup", "0", "--out", str(out)], check=True, cwd=ROOT,
                   capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    doc = json.loads(out.read_text())
    assert doc["format"] == "netspec-vs-pytorch/1" and doc["versions"]["torch"]
    (run,) = doc["runs"]
    assert run["backend"] == "numpy" and run["batch_size"] == 2 and run["memory"] is None
    s = run["comparison"]["step"]
    assert s["netspec_ms"] == run["netspec"]["step_ms"] and s["torch_ms"] == run["torch"]["step_ms"]
    assert s["speed_ratio"] == pytest.approx(s["torch_ms"] / s["netspec_ms"])


def test_cpu_comparison_runs_pytorch_in_its_own_process():
    """Against a CPU backend PyTorch runs in a child process, so this process never loads
    torch (or its OpenMP runtime): checked in a fresh interpreter, where nothing else has."""
    code = ("import sys\n"
            "from netspec.ir.build import build_graph\n"
            "from netspec.bench.vs_pytorch import compare_with_torch\n"
            f"run = compare_with_torch(build_graph({str(TINY)!r}), 'cpu', batch_size=2,\n"
            "                         iterations=2, warmup=0)\n"
            "assert 'torch' not in sys.modules, 'torch was imported here'\n"
            "assert run['torch_process'] and run['torch']['version']\n"
            "print(run['comparison']['step']['speed_ratio'] > 0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"
