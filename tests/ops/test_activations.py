"""The activation layer types (ops/activation.py's Activation: logistic, tanh, leaky, abs,
softrelu, brelu, square, linear, sqrt) against PyTorch and finite differences, their ONNX nodes on
onnxruntime (the scaled ones as a chain of nodes). Every backend:
tests/layercheck.py's CASES."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netspec.ops import OPS

from layercheck import CASES, check_onnx
from numgrad import check_op_grads, rel_error

ACTS = {"logistic": {}, "tanh": {"a": 1.7159, "b": 0.6667}, "leaky": {"slope": 0.1},
        "abs": {}, "softrelu": {}, "brelu": {"a": 0.55}, "square": {},
        "linear": {"a": -1.5, "b": 0.25}, "sqrt": {}}
POSITIVE = {"sqrt"}           # defined for x >= 0: drawn in (0.5, 6.5)


@pytest.mark.parametrize("kind", list(ACTS))
def test_matches_torch_and_finite_differences(kind):
    op, a = OPS[kind], ACTS[kind]
    n = 2 * 3 * 5 * 5
    x = ((np.random.default_rng(0).permutation(n) - n / 2 + 0.5) * (6.0 / n)).reshape(2, 3, 5, 5)
    if kind in POSITIVE:
        x = x + 3.5
    y, cache = op.forward(a, x)
    tx = torch.tensor(x, requires_grad=True)
    ty = op.torch(a)(tx)
    assert rel_error(y, ty.detach().numpy()) <= 1e-14
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx, _ = op.backward(a, dy, cache)
    (gx,) = torch.autograd.grad(ty, tx, torch.from_numpy(dy))
    assert rel_error(dx, gx.numpy()) <= 1e-14
    check_op_grads(op, a, x, seed=2)


def test_softrelu_does_not_overflow():
    y, _ = OPS["softrelu"].forward({}, np.array([[-1000.0, 0.0, 1000.0]], np.float32))
    np.testing.assert_allclose(y, [[0.0, np.log(2), 1000.0]], rtol=1e-6)


@pytest.mark.parametrize("case", ["logistic", "tanh", "leaky", "abs", "softrelu", "brelu",
                                  "square", "linear", "sqrt"])
def test_onnx_export_matches_onnxruntime(case):
    op_type, attrs, shape, kw = CASES[case]
    check_onnx(op_type, attrs, shape, **kw)


def test_scaled_tanh_exports_as_mul_tanh_mul():
    op_type, attrs, shape, kw = CASES["tanh-ab"]
    check_onnx(op_type, attrs, shape, **kw)


@pytest.mark.parametrize("a,b,nodes", [(1.0, 0.0, ["Identity"]), (2.5, 0.0, ["Mul"]),
                                       (1.0, -0.5, ["Add"]), (-1.5, 0.25, ["Mul", "Add"])])
def test_linear_exports_the_nodes_it_needs(a, b, nodes):
    """linear a,b as ONNX: the identity, a Mul, an Add, or both; onnxruntime agrees."""
    onnx = pytest.importorskip("onnx")
    from netspec.codegen.onnx_export import export_onnx
    from netspec.ir.build import build_graph
    from netspec.runtime import build

    from layercheck import layer_spec
    check_onnx("linear", {"a": a, "b": b}, (3, 3, 3))
    graph = build_graph(layer_spec("linear", {"a": a, "b": b}, (3, 3, 3)))
    model = export_onnx(graph, build(graph, "numpy").parameters())
    onnx.checker.check_model(model)
    # the nodes computing t (the softmax after it flattens t: not one of them)
    ops = [n.op_type for n in model.graph.node if n.name.startswith("t.")
           and n.op_type != "Flatten"]
    assert ops == nodes
