"""conv: forward against torch.nn.functional.conv2d, backward against finite differences."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from netspec.ops import OPS
from netspec.ops.conv import col2im, conv_out, im2col

from numgrad import check_op_grads, rel_error

OP = OPS["conv"]


@st.composite
def conv_cases(draw):
    k = draw(st.integers(1, 5))
    pad = draw(st.integers(0, 3))
    lo = max(1, k - 2 * pad)
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 4)), o=draw(st.integers(1, 4)),
                h=draw(st.integers(lo, 11)), w=draw(st.integers(lo, 11)), k=k,
                stride=draw(st.integers(1, 3)), pad=pad, relu=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))


def make(case, dtype):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(dtype)
    w = rng.standard_normal((case["o"], case["c"], case["k"], case["k"])).astype(dtype)
    b = rng.standard_normal(case["o"]).astype(dtype)
    a = {"filters": case["o"], "size": case["k"], "stride": case["stride"], "pad": case["pad"]}
    return a, x, w, b


def torch_conv(case, x, w, b):
    y = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                 stride=case["stride"], padding=case["pad"])
    return (F.relu(y) if case["relu"] else y).numpy()


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_forward_matches_torch(case):
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        a, x, w, b = make(case, dtype)
        y, _ = OP.forward(a, x, (w, b), relu=case["relu"])
        assert y.dtype == dtype
        assert y.shape == (case["n"], case["o"], *OP.output_shape(a, x.shape[1:])[1:])
        assert rel_error(y, torch_conv(case, x, w, b)) <= tol


@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_backward_matches_finite_differences(case):
    a, x, w, b = make(case, np.float64)
    if case["relu"]:
        pre, _ = OP.forward(a, x, (w, b))
        assume(np.abs(pre).min() > 1e-4)     # FD steps must not cross the ReLU's kink
    check_op_grads(OP, a, x, (w, b), relu=case["relu"], seed=case["seed"])


@settings(max_examples=20, deadline=None)
@given(conv_cases())
def test_backward_matches_torch_autograd(case):
    a, x, w, b = make(case, np.float64)
    y, cache = OP.forward(a, x, (w, b), relu=case["relu"])
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx, (dw, db) = OP.backward(a, dy, cache)
    tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
    ty = F.conv2d(tx, tw, tb, stride=case["stride"], padding=case["pad"])
    ty = F.relu(ty) if case["relu"] else ty
    gx, gw, gb = torch.autograd.grad(ty, (tx, tw, tb), torch.from_numpy(dy))
    for ours, ref in ((dx, gx), (dw, gw), (db, gb)):
        assert rel_error(ours, ref.numpy()) <= 1e-12


def test_im2col_col2im_are_adjoint():
    # ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ for every x, c: col2im is im2col's transpose
    rng = np.random.default_rng(0)
    for shape, k, s, p in [((2, 3, 7, 9), 3, 2, 1), ((1, 2, 5, 5), 5, 1, 3), ((3, 1, 8, 6), 2, 3, 0)]:
        x = rng.standard_normal(shape)
        cols = im2col(x, k, s, p)
        ho, wo = conv_out(shape[2], k, s, p), conv_out(shape[3], k, s, p)
        assert cols.shape == (shape[1] * k * k, shape[0] * ho * wo)
        c = rng.standard_normal(cols.shape)
        assert np.isclose(np.sum(cols * c), np.sum(x * col2im(c, shape, k, s, p)), rtol=1e-12)


def test_input_grad_false_skips_dx_but_not_weight_grads():
    case = dict(n=2, c=3, o=4, h=9, w=9, k=3, stride=2, pad=1, relu=True, seed=3)
    a, x, w, b = make(case, np.float64)
    y, cache = OP.forward(a, x, (w, b), relu=True)
    dy = np.ones_like(y)
    dx, (dw, db) = OP.backward(a, dy, cache, input_grad=False)
    y, cache = OP.forward(a, x, (w, b), relu=True)
    dx2, (dw2, db2) = OP.backward(a, dy, cache)
    assert dx is None and dx2 is not None
    np.testing.assert_array_equal(dw, dw2)
    np.testing.assert_array_equal(db, db2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    case = dict(n=1, c=2, o=3, h=6, w=6, k=3, stride=1, pad=1, relu=True, seed=0)
    a, x, w, b = make(case, dtype)
    y, cache = OP.forward(a, x, (w, b), relu=True)
    dx, grads = OP.backward(a, np.ones_like(y), cache)
    assert {y.dtype, dx.dtype, *(g.dtype for g in grads)} == {np.dtype(dtype)}
