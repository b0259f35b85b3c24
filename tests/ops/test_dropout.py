"""dropout (inverted): identity at test time; at train time x · keep / (1 − p), so its
expectation over masks is the test-time output; the mask is the documented draw."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netspec.ops import OPS

from numgrad import check_op_grads

OP = OPS["dropout"]


def test_test_time_is_identity_with_identity_gradient():
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    y, cache = OP.forward({"p": 0.5}, x, train=False)
    np.testing.assert_array_equal(y, x)
    dx, _ = OP.backward({"p": 0.5}, 2 * x, cache)
    np.testing.assert_array_equal(dx, 2 * x)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([0.0, 0.2, 0.5, 0.9]), st.integers(0, 2**31))
def test_train_time_scales_kept_units_and_gradient_matches_fd(p, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 6, 3, 3))
    keep = OP.draw_noise({"p": p}, x.shape, rng)
    y, _ = OP.forward({"p": p}, x, train=True, noise=keep)
    np.testing.assert_allclose(y, np.where(keep, x / (1 - p), 0.0), rtol=1e-15)
    check_op_grads(OP, {"p": p}, x, seed=seed, train=True, noise=keep)


def test_mask_is_the_documented_draw():
    shape = (4, 7)
    keep = OP.draw_noise({"p": 0.3}, shape, np.random.default_rng(5))
    ref = np.random.default_rng(5).random(shape, dtype=np.float32) >= np.float32(0.3)
    np.testing.assert_array_equal(keep, ref)


@pytest.mark.parametrize("p", [0.5, 0.25])
def test_expectation_over_masks_is_the_test_time_output(p):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 50)).astype(np.float32)
    draws = 4000
    total = np.zeros_like(x, dtype=np.float64)
    dropped = 0
    for _ in range(draws):
        keep = OP.draw_noise({"p": p}, x.shape, rng)
        y, _ = OP.forward({"p": p}, x, train=True, noise=keep)
        assert y.dtype == np.float32
        total += y
        dropped += (~keep).sum()
    mean = total / draws
    # each element's mean has std |x| sqrt(p / ((1 − p) draws)); 5 sigma over 200 elements
    sigma = np.abs(x) * np.sqrt(p / ((1 - p) * draws))
    assert (np.abs(mean - x) <= 5 * sigma + 1e-6).all()
    assert abs(dropped / (draws * x.size) - p) < 0.005
