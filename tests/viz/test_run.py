"""Reading a run directory (netspec/viz/run.py), and running its network for the Figure 4
sheets (netspec/train/saved_net.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from netspec.errors import RunError
from netspec.ir.build import build_graph
from netspec.viz import VizError
from netspec.viz.run import (
    last_hidden_layers,
    layer_kernels,
    open_run,
    read_checkpoint,
    read_metrics,
)

from .conftest import ROOT, write_run

TINY = (ROOT / "examples" / "tiny-alexnet.net").read_text()

# conv1 split 6,2 makes conv2's parts read 6 and 2 channels: per-part weights
UNEVEN = """\
network uneven
input 3x16x16
classes 4
gpus 2
conv c1 filters 8 size 3 relu split 6,2
conv c2 filters 4 size 3 relu connect same-gpu
fc f1 outputs 4
softmax prob
"""


def test_open_run_reads_state_metrics_and_parameters(tmp_path):
    run = open_run(write_run(tmp_path / "demo", TINY))
    assert run.name == "demo" and run.graph.name == "tiny-alexnet"
    assert run.classes == [f"class{i}" for i in range(10)]
    assert [m["epoch"] for m in run.metrics()] == [1, 2, 3, 4]
    params = run.parameters()
    assert set(params) == set(run.graph.param_shapes())          # momentum.* left out
    assert all(not k.startswith("momentum.") for k in params)


def test_not_a_run(tmp_path):
    with pytest.raises(RunError, match="no such run directory"):
        open_run(tmp_path / "missing")
    with pytest.raises(RunError, match="no state.json"):
        open_run(tmp_path)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(RunError, match="cannot read"):
        open_run(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"classes": []}))
    with pytest.raises(RunError, match="spec_text"):
        open_run(tmp_path)


def test_read_metrics_skips_blank_lines_and_names_a_bad_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n\n{"epoch": 2}\n')
    assert read_metrics(path) == [{"epoch": 1}, {"epoch": 2}]
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo\n')
    with pytest.raises(RunError, match=r"metrics.jsonl:3:"):
        read_metrics(path)
    with pytest.raises(RunError, match="not been evaluated"):
        read_metrics(tmp_path / "none.jsonl")


def test_bad_checkpoint(tmp_path):
    with pytest.raises(RunError, match="no checkpoint"):
        read_checkpoint(tmp_path / "checkpoint.safetensors")
    (tmp_path / "checkpoint.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunError, match="cannot read"):
        read_checkpoint(tmp_path / "checkpoint.safetensors")


def test_layer_kernels_with_gpu_sections():
    graph = build_graph(TINY)
    params = {"conv1.weight": np.zeros((32, 3, 5, 5), np.float32)}
    weights, parts = layer_kernels(graph, params, "conv1")
    assert weights.shape == (32, 3, 5, 5) and parts == [(0, 0, 16), (1, 16, 32)]


def test_layer_kernels_per_part():
    graph = build_graph(UNEVEN)
    shapes = graph.param_shapes()
    params = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
    weights, parts = layer_kernels(graph, params, "c2")
    assert [w.shape for w in weights] == [(2, 6, 3, 3), (2, 2, 3, 3)]
    assert parts == [(0, 0, 2), (1, 2, 4)]


def test_layer_kernels_errors():
    graph = build_graph(TINY)
    with pytest.raises(VizError, match="no layer 'conv9' \\(did you mean 'conv5'\\?\\)"):
        layer_kernels(graph, {}, "conv9")
    with pytest.raises(VizError, match="fc6 is not a conv layer"):
        layer_kernels(graph, {}, "fc6")
    with pytest.raises(RunError, match="no 'conv2.weight'"):
        layer_kernels(graph, {}, "conv2")
    with pytest.raises(RunError, match="shape"):
        layer_kernels(graph, {"conv2.weight": np.zeros((64, 3, 5, 5))}, "conv2")


def test_last_hidden_layer_is_the_classifiers_input():
    assert last_hidden_layers(build_graph("specs/alexnet.net")) == ["drop7"]
    assert last_hidden_layers(build_graph(UNEVEN)) == ["c2"]


SMALL = """\
network small
input 3x16x16
classes 3
gpus 2
conv c1 filters 4 size 3 stride 2 relu
maxpool p1 size 2 stride 2
fc f1 outputs 8 relu connect all
fc f2 outputs 3 connect all split 2,1
softmax prob
"""


@pytest.fixture
def small_run(tmp_path, monkeypatch):
    """A run of SMALL with an ImageFolder of solid-colour images, one colour per class."""
    pytest.importorskip("netspec.data")
    runtime = pytest.importorskip("netspec.runtime")
    if not hasattr(runtime, "build"):
        pytest.skip("netspec.runtime.build is not there yet")
    from PIL import Image

    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path / "cache"))
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 230)}
    for split, n in (("train", 4), ("val", 2)):
        for name, rgb in colours.items():
            d = tmp_path / "data" / split / name
            d.mkdir(parents=True)
            for i in range(n):
                shade = np.array(rgb) * (0.8 + 0.1 * i)
                img = np.broadcast_to(shade.clip(0, 255).astype(np.uint8), (20, 24, 3))
                Image.fromarray(np.ascontiguousarray(img)).save(d / f"{i}.png")
    return open_run(write_run(tmp_path / "runs" / "small", SMALL, classes=sorted(colours),
                              data=str(tmp_path / "data")))


def test_run_predictions(small_run):
    from netspec.train.saved_net import run_predictions

    images, probs, labels, names = run_predictions(small_run, count=4)
    assert images.dtype == np.uint8 and images.shape == (4, 16, 16, 3)
    assert probs.shape == (4, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert names == ["blue", "green", "red"]
    assert labels.tolist() == sorted(labels.tolist())     # spread evenly over the classes
    assert len(set(labels.tolist())) == 3


def test_run_neighbours(small_run):
    from netspec.train.saved_net import run_neighbours

    q, found, dist, q_names, n_names, searched = run_neighbours(small_run, count=2, k=3)
    assert q.shape == (2, 16, 16, 3) and found.shape == (2, 3, 16, 16, 3)
    assert dist.shape == (2, 3) and np.all(np.diff(dist, axis=1) >= 0)
    assert searched == 12 and len(n_names) == 2 and len(n_names[0]) == 3
