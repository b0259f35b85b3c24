"""batchnorm: batch normalisation (Ioffe & Szegedy 2015), per channel, PyTorch's
`BatchNorm2d`/`BatchNorm1d` and Caffe's BatchNorm + Scale in one layer.

Training (statistics of the batch, over N, H, W of each channel c; M = N·H·W):

    μ_c = Σ x / M        σ²_c = Σ (x − μ_c)² / M        x̂ = (x − μ_c) / √(σ²_c + eps)
    y   = γ_c · x̂ + β_c
    running_mean ← (1 − momentum) · running_mean + momentum · μ_c
    running_var  ← (1 − momentum) · running_var  + momentum · σ²_c · M / (M − 1)

(the running variance is the unbiased one, as PyTorch keeps it; the batch is normalised with
the biased one). Test: x̂ = (x − running_mean) / √(running_var + eps). Defaults are PyTorch's:
momentum 0.1, eps 1e-5. Caffe's moving_average_fraction is 1 − momentum.

Tensors (ParamDef, PyTorch's names): `weight` γ (ones) and `bias` β (zeros), trainable;
`running_mean` (zeros) and `running_var` (ones), state: kept, saved and exported, never
touched by SGD, updated by every training forward. Channels are independent, so on several
GPUs each part normalises its own channels (`channelwise`: the layer follows its input's
parts, like relu).

Shape: (C, H, W) or (C,) in, the same out.
"""
from __future__ import annotations

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import AttrDef, Op, ParamDef


def _axes(x: np.ndarray) -> tuple[int, ...]:
    return (0, *range(2, x.ndim))


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


class BatchNorm(Op):
    type = "batchnorm"
    doc = "batch normalisation per channel, with running statistics as state"
    weighted = True
    channelwise = True
    attrs = {
        "momentum": AttrDef("float", default=0.1, minimum=0.0, maximum=1.0,
                            doc="weight of the batch in the running statistics (PyTorch's)"),
        "eps": AttrDef("float", default=1e-5, minimum=0.0, doc="added to the variance"),
    }
    colour, label = "#9edae5", "batch norm"

    def describe(self, a):
        return "BN"

    def weight_shape(self, a, in_shape, in_ch, out_ch):
        return (out_ch,)

    def parameters(self, a, in_shape, in_ch, out_ch):
        return (ParamDef("weight", "w", (out_ch,), "ones"),
                ParamDef("bias", "b", (out_ch,), "zeros"),
                ParamDef("running_mean", "rm", (out_ch,), "zeros", trainable=False),
                ParamDef("running_var", "rv", (out_ch,), "ones", trainable=False))

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        gamma, beta, rm, rv = params
        dt = x.dtype.type
        eps = dt(a["eps"])
        if train:
            m = x.size // x.shape[1]
            mean = x.mean(axis=_axes(x))
            var = ((x - _per_channel(mean, x.ndim)) ** 2).mean(axis=_axes(x))
            mom = dt(a["momentum"])
            # the state, in place (params are the net's own arrays)
            rm *= dt(1) - mom
            rm += mom * mean.astype(rm.dtype)
            rv *= dt(1) - mom
            rv += (mom * var * dt(m / max(m - 1, 1))).astype(rv.dtype)
        else:
            mean, var = rm.astype(x.dtype), rv.astype(x.dtype)
        invstd = dt(1) / np.sqrt(var + eps)
        xhat = (x - _per_channel(mean, x.ndim)) * _per_channel(invstd, x.ndim)
        y = xhat * _per_channel(gamma, x.ndim) + _per_channel(beta, x.ndim)
        return y, (train, xhat, invstd, gamma)

    def backward(self, a, dy, cache, *, input_grad=True):
        train, xhat, invstd, gamma = cache
        db = dy.sum(axis=_axes(dy))
        dw = (dy * xhat).sum(axis=_axes(dy))
        if not input_grad:
            return None, (dw, db)
        k = _per_channel(gamma * invstd, dy.ndim)
        if not train:
            return dy * k, (dw, db)
        m = dy.size // dy.shape[1]
        dx = k / dy.dtype.type(m) * (dy.dtype.type(m) * dy - _per_channel(db, dy.ndim)
                                    - xhat * _per_channel(dw, dy.ndim))
        return dx, (dw, db)

    def onnx_node(self, a):
        # inputs (x, scale, B, input_mean, input_var): test time, the running statistics
        return "BatchNormalization", {"epsilon": float(a["eps"]),
                                      "momentum": 1.0 - float(a["momentum"])}

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch.nn.functional as F

        def bn(x, weight, bias, running_mean, running_var):
            # the running statistics through detached aliases: PyTorch updates them in place
            # (the caller's tensors), as netspec updates its state, and no gradient reaches them
            return F.batch_norm(x, running_mean.detach(), running_var.detach(), weight, bias,
                                training=train, momentum=a["momentum"], eps=a["eps"])
        return bn


OP = BatchNorm()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# Device layout (C, N, H, W): channel c's M = N·H·W values are one contiguous run. The
# statistics kernels take one work-item per channel and sum its run in order (two passes:
# the mean, then the squared deviations); `stat` (scratch, 2C floats) keeps μ and 1/√(σ² + eps)
# of the step (batch or running) for the elementwise kernels and the backward.

BN_STATS_TRAIN = r"""
$kernel $name($params)
{
    const int c = $gid0;
    if (c >= ${C})
        return;
    float s = 0.0f;
    for (int i = c * ${M}; i < (c + 1) * ${M}; ++i)
        s += x[i];
    const float mean = s / (float)${M};
    float q = 0.0f;
    for (int i = c * ${M}; i < (c + 1) * ${M}; ++i) {
        const float d = x[i] - mean;
        q += d * d;
    }
    const float var = q / (float)${M};
    stat[c] = mean;
    stat[${C} + c] = 1.0f / $sqrt(var + ${EPS});
    rm[c] = rm[c] * (1.0f - ${MOM}) + ${MOM} * mean;
    rv[c] = rv[c] * (1.0f - ${MOM}) + ${MOM} * var * ${UNBIAS};
}
"""

BN_STATS_TEST = r"""
$kernel $name($params)
{
    const int c = $gid0;
    if (c >= ${C})
        return;
    stat[c] = rm[c];
    stat[${C} + c] = 1.0f / $sqrt(rv[c] + ${EPS});
}
"""

BN_APPLY = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i >= ${N})
        return;
    const int c = i / ${M};
    y[i] = (x[i] - stat[c]) * stat[${C} + c] * w[c] + b[c];
}
"""

BN_PARAM_GRAD = r"""
$kernel $name($params)
{
    const int c = $gid0;
    if (c >= ${C})
        return;
    const float mean = stat[c], inv = stat[${C} + c];
    float g = 0.0f, gx = 0.0f;
    for (int i = c * ${M}; i < (c + 1) * ${M}; ++i) {
        g += dy[i];
        gx += dy[i] * (x[i] - mean) * inv;
    }
    db[c] = g;
    dw[c] = gx;
}
"""

BN_DX_TRAIN = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i >= ${N})
        return;
    const int c = i / ${M};
    const float inv = stat[${C} + c], xhat = (x[i] - stat[c]) * inv;
    dx[i] = w[c] * inv / (float)${M} * ((float)${M} * dy[i] - db[c] - xhat * dw[c]);
}
"""

BN_DX_TEST = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i >= ${N})
        return;
    const int c = i / ${M};
    dx[i] = dy[i] * w[c] * stat[${C} + c];
}
"""


def _consts(c) -> dict:
    ch = c.in_shape[0]
    m = c.batch * (c.in_elements // (c.batch * ch))
    mom = float(c.attrs["momentum"])
    return dict(C=ch, M=m, N=c.in_elements, EPS=float(c.attrs["eps"]), MOM=mom,
                UNBIAS=m / max(m - 1, 1))


def scratch_buffers(c) -> dict:
    return {"stat": 2 * c.in_shape[0]}


def _kernel(c, suffix, template, spec, k, n, doc, flops=0):
    gs, ls = elementwise_launch(n, 64 if n == k["C"] else 256)
    return Kernel(f"{c.prefix}_{suffix}", template, params(*spec), k, gs, ls, flops=flops,
                  layer=c.layer.name,
                  doc=f"{c.layer.name} part {c.part.index} batch norm: {doc}\n"
                      f"launch: one work-item per {'channel' if n == k['C'] else 'element'} "
                      f"({n})")


def forward_kernels(c):
    k = _consts(c)
    return [
        Call(_kernel(c, "stats", BN_STATS_TRAIN, ("in x", "out stat", "out rm", "out rv"), k,
                     k["C"], "stat = (mean, 1/sqrt(var + eps)) of the batch per channel; "
                             "running_mean, running_var updated", 4 * k["N"]),
             ("x", "stat", "rm", "rv"), when="train"),
        Call(_kernel(c, "stats_test", BN_STATS_TEST, ("in rm", "in rv", "out stat"), k,
                     k["C"], "stat = (running_mean, 1/sqrt(running_var + eps))"),
             ("rm", "rv", "stat"), when="test"),
        Call(_kernel(c, "fwd", BN_APPLY, ("in x", "in stat", "in w", "in b", "out y"), k,
                     k["N"], "y = (x - mean) * invstd * weight + bias", 4 * k["N"]),
             ("x", "stat", "w", "b", "y")),
    ]


def backward_kernels(c):
    k = _consts(c)
    calls = [Call(_kernel(c, "bwd_param", BN_PARAM_GRAD,
                          ("in dy", "in x", "in stat", "out dw", "out db"), k, k["C"],
                          "db = sum dy, dw = sum dy * xhat per channel", 4 * k["N"]),
                  ("dy", "x", "stat", "dw", "db"))]
    if c.input_grad:
        calls += [
            Call(_kernel(c, "bwd", BN_DX_TRAIN,
                         ("in dy", "in x", "in stat", "in w", "in dw", "in db", "out dx"), k,
                         k["N"], "dx = w * invstd / M * (M dy - db - xhat dw)", 7 * k["N"]),
                 ("dy", "x", "stat", "w", "dw", "db", "dx"), when="train"),
            Call(_kernel(c, "bwd_test", BN_DX_TEST, ("in dy", "in stat", "in w", "out dx"),
                         k, k["N"], "dx = dy * w * invstd (running statistics)", 2 * k["N"]),
                 ("dy", "stat", "w", "dx"), when="test"),
        ]
    return calls
