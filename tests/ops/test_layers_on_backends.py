"""Every layer type on every backend, one line each (tests/layercheck.py): forward and
backward against the NumPy reference and against PyTorch, in float32 (and float64 where the
backend computes in it), alone in a network around the layer. Shapes are small: each case
compiles its own kernels once per backend."""
from __future__ import annotations

import pytest
from layercheck import BACKEND_NAMES, check_layer

# op x configuration; every case runs on every backend. Covered: conv with stride and
# padding, fused ReLU, `groups`, two GPUs reading all parts and each its own (same-gpu); fc
# with fused ReLU and on two GPUs; LRN within groups; both poolings (max overlapping, z > s);
# ReLU; dropout (train-time mask and test time); softmax with its loss.
CASES = {
    "conv-stride-pad-relu-2gpu-all": ("conv", {"filters": 4, "size": 3, "stride": 2, "pad": 1},
                                      (4, 7, 7), {"gpus": 2, "connect": "all", "relu": True}),
    "conv-groups": ("conv", {"filters": 4, "size": 3, "pad": 1}, (4, 5, 5), {"groups": 2}),
    "conv-2gpu-same": ("conv", {"filters": 6, "size": 2, "pad": 1}, (4, 4, 4),
                       {"gpus": 2, "connect": "same-gpu"}),
    "fc-relu": ("fc", {"outputs": 5}, (3, 3, 3), {"relu": True}),
    "fc-2gpu": ("fc", {"outputs": 6}, (4, 2, 2), {"gpus": 2, "connect": "all"}),
    "lrn-groups": ("lrn", {"size": 3, "alpha": 0.05, "beta": 0.75, "k": 2}, (6, 3, 3),
                   {"groups": 2}),
    "maxpool": ("maxpool", {"size": 3, "stride": 2}, (3, 7, 7), {}),
    "avgpool": ("avgpool", {"size": 2, "stride": 2}, (3, 5, 5), {}),
    "relu": ("relu", {}, (3, 4, 4), {}),
    "dropout": ("dropout", {"p": 0.5}, (3, 4, 4), {}),
    "softmax": ("softmax", {}, (3, 2, 2), {}),
}


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("case", list(CASES))
def test_layer(case, backend):
    op_type, attrs, shape, kw = CASES[case]
    check_layer(op_type, attrs, shape, backends=[backend], **kw)


def test_every_layer_type_is_covered():
    from netspec.ops import OPS
    assert {c[0] for c in CASES.values()} >= set(OPS)
