"""The activation layer types (ops/activation.py's Activation: logistic, tanh, leaky, abs,
softrelu, brelu, square) against PyTorch and finite differences, their ONNX nodes on
onnxruntime, and the ones ONNX can't take alone refused by name. Every backend:
tests/layercheck.py's CASES."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netspec.codegen.onnx_export import ExportError
from netspec.ops import OPS

from layercheck import CASES, check_onnx
from numgrad import check_op_grads, rel_error

ACTS = {"logistic": {}, "tanh": {"a": 1.7159, "b": 0.6667}, "leaky": {"slope": 0.1},
        "abs": {}, "softrelu": {}, "brelu": {"a": 0.55}, "square": {}}


@pytest.mark.parametrize("kind", list(ACTS))
def test_matches_torch_and_finite_differences(kind):
    op, a = OPS[kind], ACTS[kind]
    n = 2 * 3 * 5 * 5
    x = ((np.random.default_rng(0).permutation(n) - n / 2 + 0.5) * (6.0 / n)).reshape(2, 3, 5, 5)
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
                                  "square"])
def test_onnx_export_matches_onnxruntime(case):
    op_type, attrs, shape, kw = CASES[case]
    check_onnx(op_type, attrs, shape, **kw)


def test_scaled_tanh_is_refused_by_onnx_by_name():
    op_type, attrs, shape, kw = CASES["tanh-ab"]
    with pytest.raises(ExportError, match="layer 't': no ONNX form for layer type 'tanh'"):
        check_onnx(op_type, attrs, shape, **kw)
