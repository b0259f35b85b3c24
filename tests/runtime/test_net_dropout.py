"""Dropout in the network: masks from the seeded RNG, reproducible, and the expected training
output equal to the test-time output."""
import numpy as np

import netspec

# dropout right before the last fc, so the logits are linear in the mask
SPEC = """network drop
input 2x5x5
classes 4
gpus 2
init weight gauss(0.3) bias 0.1
conv c1 filters 4 size 3 relu
fc f1 outputs 8 relu connect all
dropout d1 p 0.5
fc f2 outputs 4 connect all
softmax prob
"""


def x_batch():
    return np.random.default_rng(0).standard_normal((3, 2, 5, 5), dtype=np.float32)


def test_masks_are_reproducible_from_the_seed():
    x = x_batch()
    a = netspec.build(SPEC, backend="numpy", seed=7)
    b = netspec.build(SPEC, backend="numpy", seed=7)
    first = [a.forward(x, train=True) for _ in range(3)]
    second = [b.forward(x, train=True) for _ in range(3)]
    for u, v in zip(first, second):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(first[0], first[1])              # a fresh mask every step
    a.rng = np.random.default_rng(np.random.SeedSequence(7).spawn(2)[1])
    np.testing.assert_array_equal(a.forward(x, train=True), first[0])   # the documented stream


def test_test_time_draws_nothing():
    x = x_batch()
    a = netspec.build(SPEC, backend="numpy", seed=7)
    state = a.rng.bit_generator.state
    y1, y2 = a.forward(x), a.forward(x)
    np.testing.assert_array_equal(y1, y2)
    assert a.rng.bit_generator.state == state


def test_expected_train_output_is_the_test_output():
    x = x_batch()
    net = netspec.build(SPEC, backend="numpy", seed=1)
    test = net.forward(x).astype(np.float64)
    draws = np.stack([net.forward(x, train=True) for _ in range(3000)]).astype(np.float64)
    mean = draws.mean(0)
    stderr = draws.std(0) / np.sqrt(len(draws))
    assert (np.abs(mean - test) <= 5 * stderr + 1e-6).all()
    # and the draws really vary (the mask is not all ones)
    assert (draws.std(0) > 0).all()
