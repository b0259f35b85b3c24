"""max (ops/eltmax.py): the elementwise maximum of several inputs against PyTorch and finite
differences (inputs whose maxima are clear of ties), the gradient routed to the first maximum
on an exact tie (Caffe's and cuda-convnet's rule), ONNX Max on onnxruntime, and its shape rule
in the IR. Every backend: layercheck's CASES max-*."""
import numpy as np
import pytest
import torch

from netspec.dsl.errors import SpecError
from netspec.ir.build import build_graph
from netspec.ops import OPS

from layercheck import CASES, check_onnx
from numgrad import check_op_grads, rel_error

OP = OPS["max"]


def untied(k: int, shape, seed: int) -> np.ndarray:
    """k inputs of `shape` end to end on axis 1, every value distinct and 1/size apart (a
    finite-difference step of 1e-6 can't reorder any two)."""
    n = k * int(np.prod(shape))
    rng = np.random.default_rng(seed)
    x = rng.permutation(n).astype(np.float64) / n - 0.5
    parts = np.split(x.reshape(k, *shape), k)
    return np.concatenate([p[0] for p in parts], axis=1)


@pytest.mark.parametrize("k", [2, 3])
def test_matches_torch_and_finite_differences(k):
    a = {"inputs": k}
    x = untied(k, (2, 3, 4, 4), seed=k)
    y, cache = OP.forward(a, x)
    tx = torch.tensor(x, requires_grad=True)
    ty = OP.torch(a)(tx)
    assert rel_error(y, ty.detach().numpy()) == 0
    want = np.max(np.stack(np.split(x, k, axis=1)), axis=0)
    assert np.array_equal(y, want)
    dy = np.random.default_rng(7).standard_normal(y.shape)
    dx, _ = OP.backward(a, dy, cache)
    (gx,) = torch.autograd.grad(ty, tx, torch.from_numpy(dy))
    assert np.array_equal(dx, gx.numpy())
    check_op_grads(OP, a, x, seed=3)


def test_an_exact_tie_routes_the_gradient_to_the_first_input():
    x = np.array([[[1.0]], [[1.0]], [[0.5]]]).reshape(1, 3, 1, 1)   # 3 inputs of 1 channel
    y, cache = OP.forward({"inputs": 3}, x)
    dx, _ = OP.backward({"inputs": 3}, np.array([[[[2.0]]]]), cache)
    assert y.ravel().tolist() == [1.0]
    assert dx.ravel().tolist() == [2.0, 0.0, 0.0]


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("max-") or c == "max3"])
def test_onnx_export_matches_onnxruntime(case):
    op_type, attrs, shape, kw = CASES[case]
    check_onnx(op_type, attrs, shape, **kw)


def test_shape_rule_and_a_mismatch_is_an_error():
    g = build_graph("network m\ninput 3x8x8\nclasses 4\n"
                    "conv a filters 4 size 3\nconv b filters 4 size 3 from data\n"
                    "max m from a, b\nfc f outputs 4\nsoftmax prob\n")
    assert g.layer("m").out_shape == (4, 6, 6)
    with pytest.raises(SpecError, match="m: max reads two or more inputs of one shape: "
                                        "a 4x6x6, b 5x6x6"):
        build_graph("network m\ninput 3x8x8\nclasses 4\n"
                    "conv a filters 4 size 3\nconv b filters 5 size 3 from data\n"
                    "max m from a, b\nfc f outputs 4\nsoftmax prob\n")
