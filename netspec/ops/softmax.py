"""softmax with the multinomial logistic loss (§3.5), averaged over the batch:

p = softmax(z) computed as exp(z − max z) / Σ exp(z − max z);  L = −(1/N) Σ_n log p[n, y_n]
∂L/∂z = (p − onehot(y)) / N.
It gathers every part of its input on one GPU (GPU 0 unless pinned with `gpu`).

`forward` gives the probabilities and `backward` the softmax's own Jacobian product; training
uses `loss`, which fuses the two with the log-likelihood so that log p never underflows.
"""
from __future__ import annotations

import math

import numpy as np

from .base import Op


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log p for rows of z (N, K): z − max z − log Σ exp(z − max z)."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class Softmax(Op):
    type = "softmax"
    doc = "softmax and the multinomial logistic loss; the last layer"
    follows_input_parts = False

    def output_shape(self, a, in_shape):
        return (math.prod(in_shape),)

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        p = np.exp(log_softmax(x.reshape(x.shape[0], -1)))
        return p, p

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        p = cache                                             # dx = p ⊙ (dy − ⟨dy, p⟩)
        return p * (dy - (dy * p).sum(axis=1, keepdims=True)), ()

    def loss(self, z: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """The mean multinomial logistic loss of logits z (N, ...) for integer labels (N,),
        and its gradient with respect to z: (softmax(z) − onehot(labels)) / N."""
        n = z.shape[0]
        logp = log_softmax(z.reshape(n, -1))
        rows = np.arange(n)
        loss = -float(logp[rows, labels].astype(np.float64).mean())
        dz = np.exp(logp)
        dz[rows, labels] -= 1
        dz *= 1.0 / n
        return loss, dz.reshape(z.shape)


OP = Softmax()
