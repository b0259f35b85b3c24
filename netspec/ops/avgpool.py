"""avgpool: mean over z×z windows spaced s apart, with maxpool's geometry (pad, ceil, global:
ops/maxpool.py).

The divisor is Caffe's and PyTorch's (`count_include_pad=True`): a window's cells inside the
input and its `pad` frame count, cells past the frame (a ceil window's overhang) don't:

    y[oy, ox] = Σ_{window ∩ input} x / ((min(ty + z, H + p) − ty) · (min(tx + z, W + p) − tx))

with ty = oy·s − p, tx = ox·s − p (input coordinates of the window's first cell). Without pad
and ceil every window holds z² inputs; `global` is the mean over the whole map. Backward
spreads dy / divisor over each window's cells.
"""
from __future__ import annotations

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .maxpool import (
    POOL_CLIP,
    POOL_WINDOWS,
    Pool,
    framed,
    padded_extent,
    pool_consts,
    pool_geometry,
    pool_windows,
)


def window_areas(h: int, w: int, z: int, s: int, p: int, ho: int, wo: int) -> np.ndarray:
    """The divisor of every window (module docstring), shape (ho, wo), as float64."""
    ty = np.arange(ho) * s - p
    tx = np.arange(wo) * s - p
    rows = np.minimum(ty + z, h + p) - ty
    cols = np.minimum(tx + z, w + p) - tx
    return np.outer(rows, cols).astype(np.float64)


class AvgPool(Pool):
    type = "avgpool"
    onnx_type, onnx_global = "AveragePool", "GlobalAveragePool"
    onnx_extra = {"count_include_pad": 1}
    torch_function = "avg_pool2d"
    doc = "average pooling (the pad frame counts in the divisor, as Caffe and PyTorch)"
    colour, label = "#e8c16d", "avg pool"

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        z, s, p, ho, wo = pool_geometry(a, x.shape[1:])
        h, w = x.shape[2:]
        xp = framed(x, p, padded_extent(h, z, s, p, ho), padded_extent(w, z, s, p, wo), 0)
        windows = pool_windows(xp.shape, z, s, ho, wo)
        _, _, r0, c0 = next(windows)
        y = xp[:, :, r0, c0].copy()
        for _, _, rows, cols in windows:
            y += xp[:, :, rows, cols]
        y *= (1.0 / window_areas(h, w, z, s, p, ho, wo)).astype(x.dtype)
        return y, (x.shape, xp.shape)

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        (n, c, h, w), xp_shape = cache
        z, s, p, ho, wo = pool_geometry(a, (c, h, w))
        dx = np.zeros(xp_shape, dy.dtype)
        share = dy * (1.0 / window_areas(h, w, z, s, p, ho, wo)).astype(dy.dtype)
        for _, _, rows, cols in pool_windows(xp_shape, z, s, ho, wo):
            dx[:, :, rows, cols] += share
        return np.ascontiguousarray(dx[:, :, p:p + h, p:p + w]), ()


OP = AvgPool()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# Same layout and window arithmetic as maxpool's kernels; the backward gathers. AREA(oy, ox)
# is the divisor of the module docstring.

# the divisor of window (oy, ox), whose first cell is (ty, tx) in input coordinates
AREA = r"""(float)(((ty + ${Z} < ${H} + ${P} ? ty + ${Z} : ${H} + ${P}) - ty) *
                   ((tx + ${Z} < ${W} + ${P} ? tx + ${Z} : ${W} + ${P}) - tx))"""

AVGPOOL_FWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NOUT})
        return;
@CLIP@
    const int base = plane * ${H} * ${W};
    float s = 0.0f;
    for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix)
            s += x[base + iy * ${W} + ix];
    y[e] = s * (1.0f / @AREA@);
}
""".replace("@CLIP@", POOL_CLIP).replace("@AREA@", AREA)

AVGPOOL_BWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NIN})
        return;
@WINDOWS@
    float g = 0.0f;
    for (int oy = oy0; oy <= oy1; ++oy)
        for (int ox = ox0; ox <= ox1; ++ox) {
            const int ty = oy * ${S} - ${P}, tx = ox * ${S} - ${P};
            g += dy[(plane * ${OH} + oy) * ${OW} + ox] * (1.0f / @AREA@);
        }
    dx[e] = g;
}
""".replace("@WINDOWS@", POOL_WINDOWS).replace("@AREA@", AREA)



def forward_kernels(c):
    k = pool_consts(c)
    gs, ls = elementwise_launch(k["NOUT"])
    return [Call(Kernel(
        f"{c.prefix}_fwd", AVGPOOL_FWD, params("in x", "out y"), k, gs, ls,
        flops=k["NOUT"] * k["Z"] ** 2, layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} average pool: y = sum of the "
            f"{k['Z']}x{k['Z']} window inside the input, stride {k['S']}, pad {k['P']}, / its "
            f"cells inside the input and the frame\n"
            f"launch: one work-item per output ({k['NOUT']})"),
        ("x", "y"))]


def backward_kernels(c):
    if not c.input_grad:
        return []
    k = pool_consts(c)
    gs, ls = elementwise_launch(k["NIN"])
    return [Call(Kernel(
        f"{c.prefix}_bwd", AVGPOOL_BWD, params("in dy", "out dx"), k, gs, ls,
        layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} average pool gradient: dx[p] = sum over the "
            f"windows covering p of dy / the window's divisor\n"
            f"launch: one work-item per input ({k['NIN']})"),
        ("dy", "dx"))]
