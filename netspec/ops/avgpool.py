"""avgpool: mean over z×z windows spaced s apart. Output size floor((H − z) / s) + 1.

No padding, so every window holds z² inputs; backward spreads dy / z² over each window.
"""
from __future__ import annotations

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .maxpool import POOL_WINDOWS, Pool, pool_consts, pool_windows


class AvgPool(Pool):
    type = "avgpool"
    onnx_type = "AveragePool"     # no padding, so every window averages z² inputs
    torch_function = "avg_pool2d"
    doc = "average pooling"
    colour, label = "#e8c16d", "avg pool"

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        z = a["size"]
        windows = pool_windows(x.shape, z, a["stride"])
        _, _, r0, c0 = next(windows)
        y = x[:, :, r0, c0].copy()
        for _, _, rows, cols in windows:
            y += x[:, :, rows, cols]
        y *= 1.0 / (z * z)
        return y, x.shape

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        z = a["size"]
        dx = np.zeros(cache, dy.dtype)
        share = dy * (1.0 / (z * z))
        for _, _, rows, cols in pool_windows(cache, z, a["stride"]):
            dx[:, :, rows, cols] += share
        return dx, ()


OP = AvgPool()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# Same layout and window arithmetic as maxpool's kernels; the backward gathers.

AVGPOOL_FWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NOUT})
        return;
    const int plane = e / (${OH} * ${OW}), oy = (e / ${OW}) % ${OH}, ox = e % ${OW};
    const int base = plane * ${H} * ${W} + oy * ${S} * ${W} + ox * ${S};
    float s = 0.0f;
    for (int u = 0; u < ${Z}; ++u)
        for (int q = 0; q < ${Z}; ++q)
            s += x[base + u * ${W} + q];
    y[e] = s * ${INV_AREA};
}
"""


def _bwd_template():
    return r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NIN})
        return;
@WINDOWS@
    float g = 0.0f;
    for (int oy = oy0; oy <= oy1; ++oy)
        for (int ox = ox0; ox <= ox1; ++ox)
            g += dy[(plane * ${OH} + oy) * ${OW} + ox];
    dx[e] = g * ${INV_AREA};
}
""".replace("@WINDOWS@", POOL_WINDOWS)


def forward_kernels(c):
    k = pool_consts(c)
    k["INV_AREA"] = 1.0 / k["Z"] ** 2
    gs, ls = elementwise_launch(k["NOUT"])
    return [Call(Kernel(
        f"{c.prefix}_fwd", AVGPOOL_FWD, params("in x", "out y"), k, gs, ls,
        flops=k["NOUT"] * k["Z"] ** 2, layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} average pool: y = mean of the "
            f"{k['Z']}x{k['Z']} window, stride {k['S']}\n"
            f"launch: one work-item per output ({k['NOUT']})"),
        ("x", "y"))]


def backward_kernels(c):
    if not c.input_grad:
        return []
    k = pool_consts(c)
    k["INV_AREA"] = 1.0 / k["Z"] ** 2
    gs, ls = elementwise_launch(k["NIN"])
    return [Call(Kernel(
        f"{c.prefix}_bwd", _bwd_template(), params("in dy", "out dx"), k, gs, ls,
        layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} average pool gradient: dx[p] = sum of dy over "
            f"the windows covering p, / {k['Z']}^2\n"
            f"launch: one work-item per input ({k['NIN']})"),
        ("dy", "dx"))]
