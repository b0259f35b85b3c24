"""maxpool: forward and backward against torch's max_pool2d; backward also against finite
differences (on inputs without near-ties); ties send the gradient to the first maximum in
row-major order."""
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from netspec.ops import OPS

from numgrad import check_op_grads, rel_error

OP = OPS["maxpool"]


@st.composite
def pool_cases(draw):
    z = draw(st.integers(1, 4))
    s = draw(st.sampled_from([z, max(1, z - 1), 1, 2, 3]))        # z = s and overlapping z > s
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)),
                       draw(st.integers(z, 10)), draw(st.integers(z, 10))),
                a={"size": z, "stride": s}, seed=draw(st.integers(0, 2**31)))


def distinct(shape, seed):
    """Values 0.01 apart at least, in random order: no ties, and FD steps can't change the
    argmax."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.01 - n * 0.005).reshape(shape)


@settings(max_examples=50, deadline=None)
@given(pool_cases())
def test_forward_and_backward_match_torch(case):
    a = case["a"]
    x = np.random.default_rng(case["seed"]).standard_normal(case["shape"]).astype(np.float32)
    y, cache = OP.forward(a, x)
    tx = torch.tensor(x, requires_grad=True)
    ty = F.max_pool2d(tx, a["size"], a["stride"])
    np.testing.assert_array_equal(y, ty.detach().numpy())
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    dx, _ = OP.backward(a, dy, cache)
    (gx,) = torch.autograd.grad(ty, tx, torch.from_numpy(dy))
    assert rel_error(dx, gx.numpy()) <= 1e-6


@settings(max_examples=30, deadline=None)
@given(pool_cases())
def test_backward_matches_finite_differences(case):
    check_op_grads(OP, case["a"], distinct(case["shape"], case["seed"]), seed=case["seed"])


def test_ties_go_to_the_first_maximum_in_row_major_order():
    a = {"size": 3, "stride": 2}
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 1, 2] = x[0, 0, 2, 1] = 4.0         # window (0,0): tie between (1,2) and (2,1)
    y, cache = OP.forward(a, x)
    dx, _ = OP.backward(a, np.ones_like(y), cache)
    np.testing.assert_array_equal(y[0, 0], [[4, 4], [4, 0]])
    expected = np.zeros((5, 5))
    expected[1, 2] = 2     # window (0,0), where it ties with (2,1) and comes first, and (0,1)
    expected[2, 1] = 1     # window (1,0) only
    expected[2, 2] = 1     # window (1,1) is all zeros: its first element
    np.testing.assert_array_equal(dx[0, 0], expected)
    # an all-equal window: its first element (row-major) takes the gradient
    x = np.full((1, 1, 2, 2), 3.0)
    y, cache = OP.forward({"size": 2, "stride": 2}, x)
    dx, _ = OP.backward({"size": 2, "stride": 2}, np.full_like(y, 5.0), cache)
    np.testing.assert_array_equal(dx[0, 0], [[5.0, 0.0], [0.0, 0.0]])


def test_overlapping_windows_accumulate():
    # z=3, s=2: the centre pixel of a 5x5 map is the max of all four windows
    a = {"size": 3, "stride": 2}
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    y, cache = OP.forward(a, x)
    assert y.shape == (1, 1, 2, 2) and (y == 1).all()
    dx, _ = OP.backward(a, np.ones_like(y), cache)
    assert dx[0, 0, 2, 2] == 4.0 and dx.sum() == 4.0
