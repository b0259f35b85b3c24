"""Central finite differences and the error measure shared by the op tests (float64).

rel_error(a, b) = max|a − b| / max|b|: the error relative to the reference's largest entry, so
tiny entries don't blow it up.
"""
from __future__ import annotations

import numpy as np

H = 1e-6


def rel_error(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = np.abs(b).max() if b.size else 0.0
    diff = np.abs(a - b).max() if b.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def numeric_grad(f, x: np.ndarray, h: float = H) -> np.ndarray:
    """∂f/∂x by central differences. f() reads x, which is perturbed in place one element at a
    time (and restored)."""
    assert x.dtype == np.float64 and x.flags.c_contiguous
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return g


def check_op_grads(op, a: dict, x: np.ndarray, params: tuple = (), *, seed: int = 0,
                   tol: float = 1e-6, **kw) -> None:
    """Backward of `op` against finite differences of the projection ⟨dy, forward(x)⟩ for a
    random dy, for x and every parameter."""
    rng = np.random.default_rng(seed)
    y, cache = op.forward(a, x, params, **kw)
    dy = rng.standard_normal(y.shape)
    dy_before = dy.copy()
    dx, grads = op.backward(a, dy, cache)
    assert np.array_equal(dy, dy_before), "backward modified dy"

    def projection():
        return float(np.sum(dy * op.forward(a, x, params, **kw)[0]))

    assert dx.shape == x.shape and dx.dtype == x.dtype
    err = rel_error(dx, numeric_grad(projection, x))
    assert err <= tol, f"dx: relative error {err:.2e}"
    assert len(grads) == len(params)
    for name, p, g in zip(("w", "b"), params, grads):
        assert g.shape == p.shape and g.dtype == p.dtype
        err = rel_error(g, numeric_grad(projection, p))
        assert err <= tol, f"d{name}: relative error {err:.2e}"
