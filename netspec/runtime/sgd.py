"""The paper's update rule (§5, stated in netspec/codegen/sgd.py) run on host arrays: the
numpy backend's trainer (`sgd_update`, used by netspec/train and netspec/bench) and the
reference the SGD kernel and the cpu backend are checked against (`sgd_step`).

The operation order is the kernel's: (1) v ← μ·v, (2) v ← v − (λ·ε)·w, (3) v ← v − ε·g,
(4) w ← w + v, with λ·ε computed first, so the two round alike.
"""
from __future__ import annotations

import numpy as np

from ..codegen.sgd import layer_multipliers

__all__ = ["layer_multipliers", "sgd_step", "sgd_update"]


def sgd_step(w: np.ndarray, v: np.ndarray, g: np.ndarray, lr, momentum,
             weight_decay) -> None:
    """The rule for one tensor, in place on `w` and `v`, in their dtype: `lr` is ε (lr times
    lr_mult), `weight_decay` λ (weight decay times decay_mult). The scalars are cast to w's
    dtype, λ·ε computed first, as the kernel does."""
    t = w.dtype.type
    v *= t(momentum)
    v -= t(weight_decay * lr) * w
    v -= t(lr) * g
    w += v


def sgd_update(params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
               velocity: dict[str, np.ndarray], lr: float, momentum: float,
               weight_decay: float, lr_mults: dict[str, float] | None = None,
               decay_mults: dict[str, float] | None = None) -> None:
    """`sgd_step` on every tensor of `params` that has a gradient in `grads` (state that isn't
    trainable has none), with its `velocity`, in place; the multipliers per tensor name
    (default 1), as `layer_multipliers` gives them."""
    for name in grads:
        w = params[name]
        eps = np.float32(lr * (lr_mults or {}).get(name, 1.0)) if w.dtype == np.float32 \
            else lr * (lr_mults or {}).get(name, 1.0)
        wd = weight_decay * (decay_mults or {}).get(name, 1.0)
        sgd_step(w, velocity[name], grads[name], eps, momentum, wd)
