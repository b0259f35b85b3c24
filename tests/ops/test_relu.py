"""relu: y = max(0, x); the gradient passes where y > 0."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from netspec.ops import OPS

from numgrad import check_op_grads

OP = OPS["relu"]


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([(1, 5), (2, 3, 4, 4), (3, 1, 1, 7)]))
def test_backward_matches_finite_differences(seed, shape):
    rng = np.random.default_rng(seed)
    # values at least 0.01 away from the kink, so the FD steps never cross it
    x = rng.choice([-1.0, 1.0], shape) * (0.01 + rng.random(shape))
    check_op_grads(OP, {}, x, seed=seed)


def test_forward_and_gradient_at_zero():
    x = np.array([[-2.0, -0.0, 0.0, 3.0]], np.float32)
    y, cache = OP.forward({}, x)
    np.testing.assert_array_equal(y, [[0, 0, 0, 3]])
    assert y.dtype == np.float32
    dx, grads = OP.backward({}, np.full_like(x, 7.0), cache)
    np.testing.assert_array_equal(dx, [[0, 0, 0, 7]])   # 0 at x = 0, as in PyTorch
    assert grads == ()
