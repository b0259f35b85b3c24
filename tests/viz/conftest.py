"""Specs for the figure tests: the shipped ones, plus 4-GPU and branching nets written here."""
from __future__ import annotations

import pathlib

import pytest

from netspec.ir.build import build_graph

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = sorted([*ROOT.glob("specs/*.net"), *ROOT.glob("examples/*.net")])

# tiny-alexnet on 4 GPUs; fc8's 10 outputs split unevenly
FOUR_GPUS = """\
network tiny-alexnet-4gpu
input   3x64x64
classes 10
gpus    4

conv    conv1  filters 32  size 5 stride 2 pad 2  relu
lrn     norm1  size 5 alpha 1e-4 beta 0.75 k 2
maxpool pool1  size 3 stride 2
conv    conv2  filters 64  size 5 pad 2  relu  connect same-gpu
lrn     norm2  size 5 alpha 1e-4 beta 0.75 k 2
maxpool pool2  size 3 stride 2
conv    conv3  filters 96  size 3 pad 1  relu  connect all
conv    conv4  filters 96  size 3 pad 1  relu  connect same-gpu
conv    conv5  filters 64  size 3 pad 1  relu  connect same-gpu
maxpool pool5  size 3 stride 2
fc      fc6    outputs 256  relu  connect all
dropout drop6  p 0.5
fc      fc7    outputs 256  relu  connect all
dropout drop7  p 0.5
fc      fc8    outputs 10   connect all  split 3,3,2,2
softmax prob
"""

# layers that read non-adjacent ones, a pinned layer, and a concatenation
BRANCHING = """\
network branchy
input   3x32x32
classes 10
gpus    2

conv    c1  filters 8  size 3 pad 1 relu
conv    c2  filters 8  size 3 pad 1 relu connect same-gpu
maxpool p2  size 2 stride 2
conv    c3  filters 16 size 3 pad 1 relu connect all  gpu 1
conv    c4  filters 8  size 3 pad 1 relu from c1, c2 connect same-gpu
maxpool p4  size 2 stride 2
fc      f1  outputs 10 from c3, p4 connect all
softmax prob from f1
"""

# 1 GPU, three layers: narrower than the minimum width
SMALL = """\
network small
input 3x16x16
classes 4
gpus 1
conv c1 filters 4 size 3 relu
fc f1 outputs 4
softmax prob
"""

EXTRA = {"tiny-alexnet-4gpu": FOUR_GPUS, "branchy": BRANCHING, "small": SMALL}


def all_specs() -> list[tuple[str, str]]:
    """(id, source) of every spec the diagram must handle: files by path, extras by text."""
    return [(p.stem, str(p)) for p in SHIPPED] + list(EXTRA.items())


@pytest.fixture(params=all_specs(), ids=lambda s: s[0])
def graph(request):
    return build_graph(request.param[1])


def write_run(path: pathlib.Path, spec_text: str, classes=None, data=None, seed=0,
              metrics=None) -> pathlib.Path:
    """A run directory in the documented format, with random parameters for `spec_text`."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    graph = build_graph(spec_text)
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(0, 0.05, shape).astype(np.float32)
              for name, shape in graph.param_shapes().items()}
    tensors = dict(params)
    tensors.update({f"momentum.{n}": np.zeros_like(a) for n, a in params.items()})
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "checkpoint.safetensors"))
    classes = classes or [f"class{i}" for i in range(graph.classes)]
    (path / "state.json").write_text(json.dumps({"spec_text": spec_text, "classes": classes,
                                                 "data": data}))
    if metrics is None:
        metrics = [{"epoch": e, "step": 10 * e, "lr": 0.01 if e < 3 else 0.001,
                    "train_loss": 2.0 / e, "train_top1_error": 0.9 / e,
                    "train_top5_error": 0.5 / e, "val_top1_error": 0.95 / e,
                    "val_top5_error": 0.6 / e, "images_per_sec": 100.0} for e in range(1, 5)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return path
