"""fc: forward against torch.nn.functional.linear on the (C, H, W)-flattened input, backward
against finite differences."""
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from netspec.ops import OPS

from numgrad import check_op_grads

OP = OPS["fc"]


@st.composite
def fc_cases(draw):
    in_shape = draw(st.sampled_from([(7,), (2, 3, 3), (3, 1, 4), (1, 5, 2)]))
    return dict(n=draw(st.integers(1, 3)), in_shape=in_shape, o=draw(st.integers(1, 6)),
                relu=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


def make(case, dtype):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], *case["in_shape"])).astype(dtype)
    w = rng.standard_normal((case["o"], int(np.prod(case["in_shape"])))).astype(dtype)
    b = rng.standard_normal(case["o"]).astype(dtype)
    return {"outputs": case["o"]}, x, w, b


@settings(max_examples=40, deadline=None)
@given(fc_cases())
def test_forward_matches_torch(case):
    for dtype, tol in ((np.float32, 1e-6), (np.float64, 1e-13)):
        a, x, w, b = make(case, dtype)
        y, _ = OP.forward(a, x, (w, b), relu=case["relu"])
        ref = F.linear(torch.from_numpy(x).flatten(1), torch.from_numpy(w), torch.from_numpy(b))
        ref = F.relu(ref) if case["relu"] else ref
        assert y.dtype == dtype and y.shape == (case["n"], case["o"])
        # error relative to the magnitude of the terms summed, not of the (possibly cancelled)
        # result: BLAS may add the products in another order than torch
        terms = np.abs(x.reshape(len(x), -1)) @ np.abs(w).T + np.abs(b)
        assert np.abs(y - ref.numpy()).max() <= tol * terms.max()


@settings(max_examples=30, deadline=None)
@given(fc_cases())
def test_backward_matches_finite_differences(case):
    a, x, w, b = make(case, np.float64)
    if case["relu"]:
        assume(np.abs(OP.forward(a, x, (w, b))[0]).min() > 1e-4)
    check_op_grads(OP, a, x, (w, b), relu=case["relu"], seed=case["seed"])


def test_flatten_order_is_channel_major():
    # the weight column for input (c, i, j) is c·H·W + i·W + j
    a = {"outputs": 1}
    x = np.zeros((1, 2, 2, 3))
    x[0, 1, 0, 2] = 1.0
    w = np.zeros((1, 12))
    w[0, 1 * 6 + 0 * 3 + 2] = 5.0
    y, _ = OP.forward(a, x, (w, np.zeros(1)))
    assert y[0, 0] == 5.0
