"""softmax and the multinomial logistic loss: against torch's softmax and cross_entropy,
stable on huge logits, backward against finite differences."""
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from netspec.ops import OPS

from numgrad import check_op_grads, numeric_grad, rel_error

OP = OPS["softmax"]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 12), st.integers(0, 2**31))
def test_loss_and_gradient_match_torch_cross_entropy(n, k, seed):
    rng = np.random.default_rng(seed)
    z = 4 * rng.standard_normal((n, k))
    labels = rng.integers(0, k, n)
    loss, dz = OP.loss(z, labels)
    tz = torch.tensor(z, requires_grad=True)
    ref = F.cross_entropy(tz, torch.from_numpy(labels))          # mean over the batch
    (gz,) = torch.autograd.grad(ref, tz)
    assert abs(loss - ref.item()) <= 1e-12 * max(1.0, abs(ref.item()))
    assert rel_error(dz, gz.numpy()) <= 1e-12
    p, _ = OP.forward({}, z)
    assert rel_error(p, F.softmax(torch.from_numpy(z), 1).numpy()) <= 1e-13


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(2, 8), st.integers(0, 2**31))
def test_loss_gradient_matches_finite_differences(n, k, seed):
    rng = np.random.default_rng(seed)
    z = 2 * rng.standard_normal((n, k))
    labels = rng.integers(0, k, n)
    _, dz = OP.loss(z, labels)
    assert rel_error(dz, numeric_grad(lambda: OP.loss(z, labels)[0], z)) <= 1e-6


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 8), st.integers(0, 2**31))
def test_softmax_backward_matches_finite_differences(n, k, seed):
    z = 2 * np.random.default_rng(seed).standard_normal((n, k))
    check_op_grads(OP, {}, z, seed=seed)


def test_stable_on_huge_logits():
    z = np.array([[1e4, 0.0, -1e4], [-3e4, -3e4, -3e4]], np.float32)
    loss, dz = OP.loss(z, np.array([1, 2]))
    assert np.isfinite(loss) and np.isfinite(dz).all()
    assert dz.dtype == np.float32
    # row 0: log p[1] = −1e4; row 1: uniform, log p = −log 3
    assert np.isclose(loss, (1e4 + np.log(3)) / 2, rtol=1e-6)
    p, _ = OP.forward({}, z)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1, atol=1e-6)
