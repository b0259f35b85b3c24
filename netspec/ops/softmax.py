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

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import Op


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log p for rows of z (N, K): z − max z − log Σ exp(z − max z)."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class Softmax(Op):
    type = "softmax"
    doc = "softmax and the multinomial logistic loss; the last layer"
    loss_layer = True
    colour, label = "#b28ad4", "softmax"
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


    def onnx_node(self, a):
        return "Softmax", {"axis": 1}

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch.nn.functional as F
        return lambda z: F.softmax(z.flatten(1), 1)

    def torch_loss(self, a):
        import torch.nn.functional as F
        return lambda z, labels: F.cross_entropy(z.flatten(1), labels)


OP = Softmax()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# The gathered input z is (C, N, HW) on the device (HW = 1 after an fc): logit k = c·HW + p
# of image i at z[(c·N + i)·HW + p], and the probabilities are laid out the same way.
# The forward also keeps lse[i] = max_c z + log Σ_c exp(z − max), so the loss is
# lse − z[label] without taking the log of a probability that may have underflowed.

SOFTMAX_FWD = r"""
$kernel $name($params)
{
    $shared float red[${THREADS}];
    const int img = $grp0, t = $lid0;
    float m = -$inf;
    for (int c = t; c < ${C}; c += ${THREADS})
        m = $fmax(m, z[((c / ${HW}) * ${NB} + img) * ${HW} + c % ${HW}]);
    red[t] = m;
    $barrier
    for (int h = ${THREADS} / 2; h > 0; h >>= 1) {
        if (t < h)
            red[t] = $fmax(red[t], red[t + h]);
        $barrier
    }
    m = red[0];
    $barrier
    float s = 0.0f;
    for (int c = t; c < ${C}; c += ${THREADS})
        s += $exp(z[((c / ${HW}) * ${NB} + img) * ${HW} + c % ${HW}] - m);
    red[t] = s;
    $barrier
    for (int h = ${THREADS} / 2; h > 0; h >>= 1) {
        if (t < h)
            red[t] += red[t + h];
        $barrier
    }
    s = red[0];
    for (int c = t; c < ${C}; c += ${THREADS})
        p[((c / ${HW}) * ${NB} + img) * ${HW} + c % ${HW}] = $exp(z[((c / ${HW}) * ${NB} + img) * ${HW} + c % ${HW}] - m) / s;
    if (t == 0)
        lse[img] = m + $log(s);
}
"""

# loss[i] = lse[i] − z[label_i, i];  dz = (p − onehot(label)) / N  (the loss is the batch mean)
SOFTMAX_BWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${C} * ${NB})
        return;
    const int c = (e / (${NB} * ${HW})) * ${HW} + e % ${HW}, img = (e / ${HW}) % ${NB};
    const int label = labels[img];
    dz[e] = (p[e] - (c == label ? 1.0f : 0.0f)) * ${INV_NB};
    if (c == 0)
        loss[img] = lse[img] - z[((label / ${HW}) * ${NB} + img) * ${HW} + label % ${HW}];
}
"""


def _consts(c) -> dict:
    classes = math.prod(c.in_shape)
    threads = 32
    while threads < classes and threads < 256:
        threads *= 2
    return dict(C=classes, NB=c.batch, HW=math.prod(c.in_shape[1:]), THREADS=threads, INV_NB=1.0 / c.batch)


def scratch_buffers(c) -> dict:
    return {"lse": c.batch}


def forward_kernels(c):
    k = _consts(c)
    t = k["THREADS"]
    return [Call(Kernel(
        f"{c.prefix}_fwd", SOFTMAX_FWD, params("in z", "out p", "out lse"), k,
        (c.batch * t,), (t,), flops=4 * k["C"] * c.batch, shared_bytes=4 * t,
        layer=c.layer.name,
        doc=f"{c.layer.name} softmax: p[c, i] = exp(z[c, i] - max) / sum_c exp(z[c, i] - max)\n"
            f"launch: one group of {t} per image ({c.batch}), tree reductions for max and sum"),
        ("x", "y", "lse"))]


def backward_kernels(c):
    """The loss and dL/dz together: this op's backward starts the backward pass."""
    k = _consts(c)
    n = k["C"] * c.batch
    gs, ls = elementwise_launch(n)
    return [Call(Kernel(
        f"{c.prefix}_bwd", SOFTMAX_BWD,
        params("in z", "in p", "in lse", "in_int labels", "out dz", "out loss"), k, gs, ls,
        flops=2 * n, layer=c.layer.name,
        doc=f"{c.layer.name} loss and gradient: loss[i] = lse[i] - z[label_i, i]; "
            f"dz = (p - onehot(label)) / {c.batch}\nlaunch: one work-item per element ({n})"),
        ("x", "y", "lse", "labels", "dx", "loss"))]
