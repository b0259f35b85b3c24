"""Tick choice and scales for the learning curves."""
from __future__ import annotations

import pytest

from netspec.viz.axes import Axis, log_ticks, nice_ticks


@pytest.mark.parametrize("lo, hi, want", [
    (0, 100, [0, 20, 40, 60, 80, 100]),
    (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (1, 90, [0, 20, 40, 60, 80, 100]),
    (0, 12, [0, 2.5, 5, 7.5, 10, 12.5]),
    (3, 3, [2.4, 2.6, 2.8, 3.0, 3.2, 3.4, 3.6]),
])
def test_nice_ticks(lo, hi, want):
    assert nice_ticks(lo, hi, 6) == pytest.approx(want)


def test_nice_ticks_cover_the_range():
    for lo, hi in [(0.013, 0.97), (5, 5000), (-3, 7)]:
        t = nice_ticks(lo, hi)
        assert t[0] <= lo and t[-1] >= hi and 3 <= len(t) <= 12


def test_log_ticks():
    assert log_ticks(1e-5, 1e-2) == pytest.approx([1e-5, 1e-4, 1e-3, 1e-2])
    assert log_ticks(0.01, 0.01) == pytest.approx([0.001, 0.01, 0.1])
    assert log_ticks(0.005, 0.01) == pytest.approx([0.001, 0.002, 0.005, 0.01])
    assert log_ticks(0.002, 0.01) == pytest.approx([0.001, 0.002, 0.005, 0.01])


def test_axis_maps_linear_and_log():
    y = Axis(0, 100, 400, 100)
    assert y(0) == 400 and y(100) == 100 and y(50) == 250
    lr = Axis(1e-4, 1e-1, 300, 0, log=True)
    assert lr(1e-4) == pytest.approx(300) and lr(1e-3) == pytest.approx(200)
    assert lr(1e-2) == pytest.approx(100)


def test_integer_ticks_for_epochs():
    assert nice_ticks(0, 3, 8, integer=True) == [0, 1, 2, 3]
    assert nice_ticks(0, 90, 8, integer=True) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(1, 1, 8, integer=True) == [0, 1, 2]
