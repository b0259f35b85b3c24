"""Top-k accuracy against a hand count, and a diverged (non-finite) output row."""
import numpy as np

from netspec.train.metrics import accuracy


def test_top1_top5_by_hand():
    out = np.array([[0.1, 0.9, 0.0, 0.0, 0.0, 0.0],     # top-1: class 1
                    [0.5, 0.1, 0.2, 0.3, 0.4, 0.0],     # order 0, 4, 3, 2, 1, 5
                    [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    y = np.array([1, 5, 0])
    # row 0 right at top-1; row 1's class 5 is last (not in top-5); row 2's class 0 is 2nd
    assert accuracy(out, y, (1, 5)) == [1 / 3, 2 / 3]


def test_a_non_finite_row_is_wrong_never_class_0():
    nan, inf = float("nan"), float("inf")
    out = np.array([[nan] * 4,                       # argsort would put class 0 first
                    [inf, 0.0, 0.0, 0.0],            # an overflow: not a prediction either
                    [0.0, nan, 1.0, 0.0],
                    [0.9, 0.1, 0.0, 0.0]])
    y = np.array([0, 0, 2, 0])
    assert accuracy(out, y, (1, 5)) == [0.25, 0.25]   # only the finite last row counts right
