"""The paper's update rule (§5), for every parameter w with velocity v:

    v ← μ·v − λ·ε·w − ε·⟨∂L/∂w⟩
    w ← w + v

ε is the learning rate times the layer's lr_mult, λ the weight decay times its decay_mult,
μ the momentum. The paper states the rule for "weight w" without excepting biases, so netspec
applies it to biases too; `decay_mult 0` on a layer turns decay off there.
"""
from __future__ import annotations

import numpy as np


def sgd_update(params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
               velocity: dict[str, np.ndarray], lr: float, momentum: float,
               weight_decay: float, lr_mults: dict[str, float] | None = None,
               decay_mults: dict[str, float] | None = None) -> None:
    """Update `params` and `velocity` in place."""
    for name, w in params.items():
        eps = np.float32(lr * (lr_mults or {}).get(name, 1.0)) if w.dtype == np.float32 \
            else lr * (lr_mults or {}).get(name, 1.0)
        wd = weight_decay * (decay_mults or {}).get(name, 1.0)
        v = velocity[name]
        # v = mu*v - wd*eps*w - eps*g, in the dtype of w, with the same operation order as
        # the kernels (see ops' sgd template) so that backends agree to rounding
        v *= w.dtype.type(momentum)
        v -= w.dtype.type(wd * eps) * w
        v -= w.dtype.type(eps) * grads[name]
        w += v


def layer_multipliers(graph) -> tuple[dict[str, float], dict[str, float]]:
    """lr_mult and decay_mult per parameter name, from the IR."""
    lr, decay = {}, {}
    for layer in graph.weighted_layers:
        for name in layer.param_shapes():
            lr[name], decay[name] = layer.lr_mult, layer.decay_mult
    return lr, decay
