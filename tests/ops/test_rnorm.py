"""rnorm: within-map response normalisation, α divided by size² as cuda-convnet and Caffe do.
Forward against a plain loop over the formula and against PyTorch (an n×n sum by conv);
backward against finite differences; the anchors' constants at a hand-computed pixel; ONNX
against onnxruntime."""
import numpy as np
import pytest
import torch

from netspec.ops import OPS

from layercheck import CASES, check_onnx
from numgrad import check_op_grads, rel_error

OP = OPS["rnorm"]


def rnorm_loop(x, n, alpha, beta, k):
    """y[p] = x[p] / (k + α/n² Σ_{q in win(p)} x[q]²)^β, win(p) rows p − n//2 .. p − n//2 + n − 1
    (cuda-convnet's start −size/2), one pixel at a time."""
    out = np.empty_like(x)
    _, _, h, w = x.shape
    for i in range(h):
        for j in range(w):
            rows = slice(max(0, i - n // 2), min(h, i - n // 2 + n))
            cols = slice(max(0, j - n // 2), min(w, j - n // 2 + n))
            s = (x[:, :, rows, cols] ** 2).sum(axis=(2, 3))
            out[:, :, i, j] = x[:, :, i, j] / (k + alpha / n ** 2 * s) ** beta
    return out


CONFIGS = [dict(size=3, alpha=0.5, beta=0.75, k=1.0), dict(size=4, alpha=2.0, beta=1.3, k=0.5),
           dict(size=5, alpha=1e-4, beta=0.5, k=2.0), dict(size=1, alpha=3.0, beta=1.0, k=1.0),
           dict(size=7, alpha=1.0, beta=0.75, k=1.0)]


@pytest.mark.parametrize("a", CONFIGS)
def test_forward_matches_formula_and_torch(a):
    x = 2 * np.random.default_rng(a["size"]).standard_normal((2, 3, 5, 6))
    y, _ = OP.forward(a, x)
    assert rel_error(y, rnorm_loop(x, a["size"], a["alpha"], a["beta"], a["k"])) <= 1e-13
    assert rel_error(y, OP.torch(a)(torch.from_numpy(x)).numpy()) <= 1e-13
    y32, _ = OP.forward(a, x.astype(np.float32))
    assert y32.dtype == np.float32 and rel_error(y32, y) <= 1e-6


@pytest.mark.parametrize("a", CONFIGS)
def test_backward_matches_finite_differences(a):
    x = 2 * np.random.default_rng(10 + a["size"]).standard_normal((2, 2, 4, 5))
    check_op_grads(OP, a, x, seed=a["size"])


def test_the_anchors_constants_at_a_corner():
    # cuda-convnet's layers-18pct rnorm1: size 3, scale 0.00005, pow .75; layer.py divides
    # scale by size² and the kernel adds 1. Pixel (0, 0) of a 3x3 window sees rows and
    # columns 0..1 only: x² = 1 + 4 + 9 + 16.
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, :2, :2] = [[1.0, 2.0], [3.0, 4.0]]
    x[0, 0, 3, 3] = 100.0          # outside (0, 0)'s window
    a = {"size": 3, "alpha": 0.00005, "beta": 0.75, "k": 1.0}
    y, _ = OP.forward(a, x)
    assert y[0, 0, 0, 0] == pytest.approx(1.0 / (1 + 0.00005 / 9 * 30) ** 0.75, rel=1e-15)


@pytest.mark.parametrize("case", ["rnorm", "rnorm-even-2gpu"])
def test_onnx_export_matches_onnxruntime(case):
    op_type, attrs, shape, kw = CASES[case]
    assert check_onnx(op_type, attrs, shape, gpus=kw.get("gpus", 1)) <= 1e-5
