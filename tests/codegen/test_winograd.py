"""Winograd's F(m, r) matrices (codegen/winograd.py) against hand computations: the 1-D and
2-D identities checked exactly in rationals against direct correlation, and F(2, 3) against
the matrices printed in Lavin & Gray (2016), §4.1, up to the sign of a point's row."""
from __future__ import annotations

import random
from fractions import Fraction

import pytest

from netspec.codegen.cpu_kernels import WINOGRAD_TILES, render_cpu_module
from netspec.codegen.winograd import kernel_templates, matrices


def _mul(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))]
            for i in range(len(a))]


def _t(a):
    return [list(r) for r in zip(*a)]


@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (2, 5), (3, 5), (3, 3), (4, 5), (1, 3), (2, 1)])
def test_two_d_identity_is_exact(m, r):
    """Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A equals the correlation of d with g, in exact rationals,
    for random rational tiles and filters."""
    at, g, bt = (list(map(list, x)) for x in matrices(m, r))
    a = m + r - 1
    rnd = random.Random(m * 10 + r)
    for _ in range(3):
        d = [[Fraction(rnd.randint(-9, 9), rnd.randint(1, 5)) for _ in range(a)] for _ in range(a)]
        w = [[Fraction(rnd.randint(-9, 9), rnd.randint(1, 5)) for _ in range(r)] for _ in range(r)]
        u = _mul(_mul(g, w), _t(g))
        v = _mul(_mul(bt, d), _t(bt))
        y = _mul(_mul(at, [[u[i][j] * v[i][j] for j in range(a)] for i in range(a)]), _t(at))
        ref = [[sum(d[i + k][j + l] * w[k][l] for k in range(r) for l in range(r))
                for j in range(m)] for i in range(m)]
        assert y == ref


def test_f23_is_lavins_up_to_sign():
    at, g, bt = matrices(2, 3)
    lavin_bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    lavin_g = [[1, 0, 0], [Fraction(1, 2)] * 3, [Fraction(1, 2), Fraction(-1, 2), Fraction(1, 2)],
               [0, 0, 1]]
    lavin_at = [[1, 1, 1, 0], [0, 1, -1, -1]]
    # the point 0's row of G and Bᵀ carries the sign of Π(0 − p_l) = −1, which cancels
    # (a row's sign in G or Bᵀ cancels in U ⊙ V); the ∞ point's column of Aᵀ and row of Bᵀ
    # have the opposite sign of Lavin's on both, which cancels too
    assert [[s * x for x in row] for s, row in zip([-1, 1, 1, 1], g)] == lavin_g
    assert [[s * x for x in row] for s, row in zip([-1, 1, 1, -1], bt)] == lavin_bt
    assert [[x * (-1 if j == 3 else 1) for j, x in enumerate(row)] for row in at] == lavin_at


def test_too_many_points_is_refused():
    with pytest.raises(ValueError, match="finite points"):
        matrices(6, 5)


@pytest.mark.parametrize("m,r", WINOGRAD_TILES)
def test_kernels_drop_zero_terms(m, r):
    """The transforms are straight-line code with zero coefficients dropped: F(2, 3)'s input
    transform has only ±1 entries, so its kernel multiplies nothing."""
    text = render_cpu_module()
    names = [n for n, _, _ in kernel_templates(m, r)]
    assert all(f"void {n}(" in text for n in names)
    if (m, r) == (2, 3):
        body = next(t for n, _, t in kernel_templates(2, 3) if n == "wino_input_2x3")
        transform = body[body.index("const float s0_0"):]
        assert " * s" not in transform and " * t" not in transform
        assert "0.0f *" not in text
