"""avgpool: forward and backward against torch's avg_pool2d and finite differences."""
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from netspec.ops import OPS

from numgrad import check_op_grads, rel_error

OP = OPS["avgpool"]


@st.composite
def pool_cases(draw):
    z = draw(st.integers(1, 4))
    s = draw(st.sampled_from([z, max(1, z - 1), 1, 2, 3]))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)),
                       draw(st.integers(z, 10)), draw(st.integers(z, 10))),
                a={"size": z, "stride": s}, seed=draw(st.integers(0, 2**31)))


@settings(max_examples=40, deadline=None)
@given(pool_cases())
def test_forward_and_backward_match_torch(case):
    a = case["a"]
    x = np.random.default_rng(case["seed"]).standard_normal(case["shape"])
    y, cache = OP.forward(a, x)
    tx = torch.tensor(x, requires_grad=True)
    ty = F.avg_pool2d(tx, a["size"], a["stride"])
    assert rel_error(y, ty.detach().numpy()) <= 1e-14
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx, _ = OP.backward(a, dy, cache)
    (gx,) = torch.autograd.grad(ty, tx, torch.from_numpy(dy))
    assert rel_error(dx, gx.numpy()) <= 1e-14
    y32, _ = OP.forward(a, x.astype(np.float32))
    assert y32.dtype == np.float32


@settings(max_examples=25, deadline=None)
@given(pool_cases())
def test_backward_matches_finite_differences(case):
    x = np.random.default_rng(case["seed"]).standard_normal(case["shape"])
    check_op_grads(OP, case["a"], x, seed=case["seed"])
