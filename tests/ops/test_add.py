"""add (ops/add.py): the sum of k inputs and its fused ReLU against PyTorch and finite
differences; ONNX Sum (+ Relu) on onnxruntime; the IR's join across GPUs (a transfer where an
input's part is elsewhere) and its errors. Every backend: tests/layercheck.py's CASES."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netspec.dsl.errors import SpecError
from netspec.ir.build import build_graph
from netspec.ops import OPS

from layercheck import CASES, check_onnx
from numgrad import check_op_grads, rel_error

OP = OPS["add"]


@pytest.mark.parametrize("k,relu", [(2, False), (3, True)])
def test_matches_torch_and_finite_differences(k, relu):
    rng = np.random.default_rng(k)
    xs = [rng.standard_normal((2, 3, 4, 4)) for _ in range(k)]
    a = {"inputs": k, "relu": relu}
    y, cache = OP.forward(a, np.concatenate(xs, 1))
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    ty = sum(ts)
    ty = torch.relu(ty) if relu else ty
    assert rel_error(y, ty.detach().numpy()) == 0
    dy = rng.standard_normal(y.shape)
    dx, _ = OP.backward(a, dy, cache)
    want = torch.autograd.grad(ty, ts, torch.from_numpy(dy))
    assert rel_error(dx, torch.cat(want, 1).numpy()) == 0
    x = (rng.permutation(2 * k * 3 * 9) * 0.01 - k * 0.27).reshape(2, k * 3, 3, 3)  # off 0
    check_op_grads(OP, a, x, seed=1)


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("add")])
def test_onnx_export_matches_onnxruntime(case):
    op_type, attrs, shape, kw = CASES[case]
    check_onnx(op_type, attrs, shape, **kw)


NET = """network n
input 3x6x6
classes 4
gpus 2
conv a filters 4 size 3 pad 1
conv b filters 4 size 3 pad 1 gpu 1
{line}
fc f outputs 4
softmax prob
"""


def test_parts_follow_the_first_input_and_the_other_crosses():
    g = build_graph(NET.format(line="add s from a, b relu"))
    s = g.layer("s")
    assert s.out_shape == (4, 6, 6) and s.in_shape == (8, 6, 6)
    assert [(p.gpu, p.start, p.stop) for p in s.parts] == [(0, 0, 2), (1, 2, 4)]
    assert [(t.layer, t.src_gpu, t.dst_gpu, t.channels) for t in g.transfers
            if "s" in t.consumers] == [("b", 1, 0, 2)]
    assert OP.describe(s.attrs) == "+ ReLU"


@pytest.mark.parametrize("line,message", [
    ("add s from a", "add reads two or more inputs of one shape: a 4x6x6"),
    ("conv c filters 2 size 1\nadd s from a, c", "a 4x6x6, c 2x6x6"),
])
def test_errors(line, message):
    text = NET.format(line=line).replace("fc f outputs", "fc f from s outputs")
    with pytest.raises(SpecError, match=message):
        build_graph(text)
