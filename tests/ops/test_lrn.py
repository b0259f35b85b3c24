"""lrn: the paper's formula (§3.3), α not divided by n, the window clipped at the channel
edges. Forward against a plain loop over the formula and against torch's
local_response_norm (which divides α by n, so it gets α·n); backward against finite
differences."""
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from netspec.ops import OPS

from numgrad import check_op_grads, rel_error

OP = OPS["lrn"]


def lrn_loop(x, n, alpha, beta, k):
    """b[i] = a[i] / (k + α Σ_{j=max(0, i−n/2)}^{min(N−1, i+n/2)} a[j]²)^β, one map at a time."""
    out = np.empty_like(x)
    maps = x.shape[1]
    for i in range(maps):
        lo, hi = max(0, i - n // 2), min(maps - 1, i + n // 2)
        s = sum(x[:, j] ** 2 for j in range(lo, hi + 1))
        out[:, i] = x[:, i] / (k + alpha * s) ** beta
    return out


@st.composite
def lrn_cases(draw):
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 9)),
                       draw(st.integers(1, 4)), draw(st.integers(1, 4))),
                a={"size": draw(st.sampled_from([1, 3, 5, 7])),
                   "alpha": draw(st.sampled_from([1e-4, 0.1, 0.5])),
                   "beta": draw(st.sampled_from([0.75, 0.5, 1.3])),
                   "k": draw(st.sampled_from([2.0, 1.0, 0.5]))},
                seed=draw(st.integers(0, 2**31)))


@settings(max_examples=50, deadline=None)
@given(lrn_cases())
def test_forward_matches_formula_and_torch(case):
    a = case["a"]
    x = 3 * np.random.default_rng(case["seed"]).standard_normal(case["shape"])
    y, _ = OP.forward(a, x)
    assert rel_error(y, lrn_loop(x, a["size"], a["alpha"], a["beta"], a["k"])) <= 1e-13
    ref = F.local_response_norm(torch.from_numpy(x), a["size"], alpha=a["alpha"] * a["size"],
                                beta=a["beta"], k=a["k"])
    assert rel_error(y, ref.numpy()) <= 1e-12
    y32, _ = OP.forward(a, x.astype(np.float32))
    assert y32.dtype == np.float32 and rel_error(y32, y) <= 1e-6


@settings(max_examples=40, deadline=None)
@given(lrn_cases())
def test_backward_matches_finite_differences(case):
    x = 3 * np.random.default_rng(case["seed"]).standard_normal(case["shape"])
    check_op_grads(OP, case["a"], x, seed=case["seed"])


def test_paper_constants_edge_channel():
    # channel 0 with n = 5 sums maps 0..2 only; α is not divided by n
    x = np.zeros((1, 6, 1, 1))
    x[0, :3, 0, 0] = [1.0, 2.0, 3.0]
    x[0, 3, 0, 0] = 100.0          # outside channel 0's window
    a = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
    y, _ = OP.forward(a, x)
    assert np.isclose(y[0, 0, 0, 0], 1.0 / (2.0 + 1e-4 * (1 + 4 + 9)) ** 0.75, rtol=1e-14)
