"""cnorm: cuda-convnet's contrast normalisation, y = x / (k + α/n² Σ_win (x − mean_win x)²)^β,
the mean over the window's pixels inside the map. Forward against a plain loop and against
PyTorch; backward (the exact derivative, mean included) against finite differences and
PyTorch's autograd; ONNX against onnxruntime."""
import numpy as np
import pytest
import torch

from netspec.ops import OPS

from layercheck import CASES, check_onnx
from numgrad import check_op_grads, rel_error

OP = OPS["cnorm"]


def window(h, w, i, j, n):
    return (slice(max(0, i - n // 2), min(h, i - n // 2 + n)),
            slice(max(0, j - n // 2), min(w, j - n // 2 + n)))


def cnorm_loop(x, n, alpha, beta, k):
    _, _, h, w = x.shape
    d = np.empty_like(x)
    for i in range(h):
        for j in range(w):
            rows, cols = window(h, w, i, j, n)
            d[:, :, i, j] = x[:, :, i, j] - x[:, :, rows, cols].mean(axis=(2, 3))
    out = np.empty_like(x)
    for i in range(h):
        for j in range(w):
            rows, cols = window(h, w, i, j, n)
            s = (d[:, :, rows, cols] ** 2).sum(axis=(2, 3))
            out[:, :, i, j] = x[:, :, i, j] / (k + alpha / n ** 2 * s) ** beta
    return out


CONFIGS = [dict(size=3, alpha=0.5, beta=0.75, k=1.0), dict(size=4, alpha=3.0, beta=0.5, k=1.0),
           dict(size=5, alpha=2.0, beta=1.3, k=0.5)]


@pytest.mark.parametrize("a", CONFIGS)
def test_forward_matches_formula_and_torch(a):
    x = 2 * np.random.default_rng(a["size"]).standard_normal((2, 3, 6, 5))
    y, _ = OP.forward(a, x)
    assert rel_error(y, cnorm_loop(x, a["size"], a["alpha"], a["beta"], a["k"])) <= 1e-13
    assert rel_error(y, OP.torch(a)(torch.from_numpy(x)).numpy()) <= 1e-13


@pytest.mark.parametrize("a", CONFIGS)
def test_backward_matches_finite_differences_and_autograd(a):
    rng = np.random.default_rng(20 + a["size"])
    x = 2 * rng.standard_normal((2, 2, 5, 4))
    check_op_grads(OP, a, x, seed=a["size"])
    y, cache = OP.forward(a, x)
    dy = rng.standard_normal(y.shape)
    dx, _ = OP.backward(a, dy, cache)
    xt = torch.from_numpy(x).requires_grad_()
    (OP.torch(a)(xt) * torch.from_numpy(dy)).sum().backward()
    assert rel_error(dx, xt.grad.numpy()) <= 1e-12


def test_a_flat_map_is_left_alone():
    # every pixel equals its window mean: d = 0, s = k = 1, y = x
    x = np.full((1, 2, 4, 4), 3.0)
    y, _ = OP.forward({"size": 3, "alpha": 5.0, "beta": 0.75, "k": 1.0}, x)
    assert np.array_equal(y, x)


def test_onnx_export_matches_onnxruntime():
    op_type, attrs, shape, kw = CASES["cnorm"]
    assert check_onnx(op_type, attrs, shape, gpus=kw["gpus"]) <= 1e-5
