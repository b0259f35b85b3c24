"""batchnorm (ops/batchnorm.py) against PyTorch's F.batch_norm (train: batch statistics and
the running update, momentum and eps; test: the running statistics), finite differences for
the backward in both modes, ONNX's BatchNormalization on onnxruntime, and its place in the IR:
state not counted as parameters, parts following the input on 2 GPUs. Every backend runs it
through tests/layercheck.py's CASES (state compared after the training step)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netspec.dsl.errors import SpecError
from netspec.ir.build import build_graph
from netspec.ops import OPS

from layercheck import CASES, check_onnx
from numgrad import check_op_grads, rel_error

OP = OPS["batchnorm"]
A = {"momentum": 0.1, "eps": 1e-5}


def _tensors(c, seed):
    rng = np.random.default_rng(seed)
    return (1 + 0.3 * rng.standard_normal(c), 0.2 * rng.standard_normal(c),
            0.5 * rng.standard_normal(c), rng.uniform(0.5, 2.0, c))


@pytest.mark.parametrize("shape", [(3, 4, 5, 5), (6, 7)], ids=["maps", "vectors"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("a", [A, {"momentum": 0.3, "eps": 0.01}])
def test_matches_torch(shape, train, a):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 3 + 1
    gamma, beta, rm, rv = _tensors(shape[1], 1)
    ours = [t.copy() for t in (gamma, beta, rm, rv)]
    y, cache = OP.forward(a, x, tuple(ours), train=train)
    tx, tg, tb = (torch.tensor(v, requires_grad=True) for v in (x, gamma, beta))
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    ty = F.batch_norm(tx, trm, trv, tg, tb, training=train, momentum=a["momentum"],
                      eps=a["eps"])
    assert rel_error(y, ty.detach().numpy()) <= 1e-12
    assert rel_error(ours[2], trm.numpy()) <= 1e-12 and rel_error(ours[3], trv.numpy()) <= 1e-12
    if not train:
        assert np.array_equal(ours[2], rm) and np.array_equal(ours[3], rv)
    dy = rng.standard_normal(y.shape)
    dx, (dw, db) = OP.backward(a, dy, cache)
    gx, gg, gb = torch.autograd.grad(ty, (tx, tg, tb), torch.from_numpy(dy))
    for got, want in ((dx, gx), (dw, gg), (db, gb)):
        assert rel_error(got, want.numpy()) <= 1e-10


class _Trainable:
    """batchnorm with its two trainable tensors as the params (fresh state each call), for
    the finite-difference check."""

    def __init__(self, train, rm, rv):
        self.train, self.rm, self.rv = train, rm, rv

    def forward(self, a, x, params=()):
        return OP.forward(a, x, (*params, self.rm.copy(), self.rv.copy()), train=self.train)

    def backward(self, a, dy, cache):
        return OP.backward(a, dy, cache)


@pytest.mark.parametrize("train", [True, False])
def test_backward_matches_finite_differences(train):
    x = np.random.default_rng(2).standard_normal((2, 3, 3, 3))
    gamma, beta, rm, rv = _tensors(3, 3)
    check_op_grads(_Trainable(train, rm, rv), A, x, (gamma, beta), seed=4, tol=1e-6)


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("batchnorm")])
def test_onnx_export_matches_onnxruntime(case):
    op_type, attrs, shape, kw = CASES[case]
    check_onnx(op_type, attrs, shape, **kw)


NET = """network n
input 3x6x6
classes 4
gpus 2
conv c1 filters 4 size 3
batchnorm bn1{attrs}
fc f outputs 4
softmax prob
"""


def test_state_is_not_counted_and_parts_follow_the_input():
    g = build_graph(NET.format(attrs=""))
    bn = g.layer("bn1")
    assert bn.param_shapes() == {f"bn1.{n}": (4,) for n in
                                 ("weight", "bias", "running_mean", "running_var")}
    assert bn.params == 8                       # weight and bias; PyTorch's parameters()
    assert [(p.gpu, p.start, p.stop) for p in bn.parts] == [(0, 0, 2), (1, 2, 4)]
    assert [s.layer for p in bn.parts for s in p.sources] == ["c1", "c1"]
    assert [p.sources[0].gpu for p in bn.parts] == [0, 1]       # no transfer
    assert g.transfers == [t for t in g.transfers if t.layer != "c1" or "bn1" not in
                           t.consumers]


@pytest.mark.parametrize("attrs,message", [
    (" momentum 1.5", "'momentum' must be at most 1"),
    (" eps -1", "'eps' must be at least 0"),
    (" relu", "unknown keyword 'relu'"),
    (" connect all", "unknown keyword 'connect'"),
])
def test_errors(attrs, message):
    with pytest.raises(SpecError, match=message):
        build_graph(NET.format(attrs=attrs))
