"""maxpool: max over z×z windows spaced s apart; overlapping when z > s (§3.4).

Window geometry (shared with avgpool, `pool_geometry`), as Caffe and PyTorch size it:

    padded      the input framed by `pad` p on every side (max: the frame never wins;
                avg: see ops/avgpool.py), p <= z / 2 (PyTorch's rule: no window all frame)
    floor       Ho = floor((H + 2p − z) / s) + 1                (the default)
    ceil        Ho = ceil((H + 2p − z) / s) + 1, less one when the last window would start
                in the right/bottom frame ((Ho − 1)·s >= H + p): Caffe's rule, PyTorch's
                `ceil_mode=True`; the last window may then run past the frame
    global      z = H (= W), s = 1, p = 0: one output per channel, whatever the input size

Window (oy, ox) covers padded rows oy·s .. oy·s + z − 1, input rows oy·s − p .. The gradient
goes to the window's argmax (the first one in row-major order on ties).
"""
from __future__ import annotations

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import AttrDef, Op


def pool_out(size: int, z: int, s: int, p: int, ceil: bool) -> int:
    """Outputs along one axis of `size` inputs (module docstring's rule)."""
    if not ceil:
        return (size + 2 * p - z) // s + 1
    out = -(-(size + 2 * p - z) // s) + 1
    if (out - 1) * s >= size + p:
        out -= 1
    return out


def pool_geometry(a: dict, in_shape: tuple[int, ...]) -> tuple[int, int, int, int, int]:
    """(z, s, p, Ho, Wo) of a pooling layer with attributes `a` on maps (C, H, W)."""
    h, w = in_shape[-2:]
    if a.get("global"):
        return h, 1, 0, 1, 1
    z, s, p, ceil = a["size"], a["stride"], a.get("pad") or 0, bool(a.get("ceil"))
    return z, s, p, pool_out(h, z, s, p, ceil), pool_out(w, z, s, p, ceil)


def padded_extent(size: int, z: int, s: int, p: int, out: int) -> int:
    """Rows of the framed input the windows read: the input and its leading frame, or up to
    the last window's end, whichever is longer (a ceil window may end past the frame)."""
    return max(size + p, (out - 1) * s + z)


def pool_windows(shape: tuple[int, ...], z: int, s: int, ho: int, wo: int):
    """(u, v, rows, cols) for each of the z×z window offsets in row-major order: the slices of
    the (framed) input that offset (u, v) of every window reads."""
    for u in range(z):
        for v in range(z):
            yield u, v, slice(u, u + s * (ho - 1) + 1, s), slice(v, v + s * (wo - 1) + 1, s)


def framed(x: np.ndarray, p: int, hp: int, wp: int, fill) -> np.ndarray:
    """x (N, C, H, W) placed at [p:p+H, p:p+W] of an (N, C, hp, wp) array of `fill`."""
    n, c, h, w = x.shape
    if p == 0 and (hp, wp) == (h, w):
        return x
    out = np.full((n, c, hp, wp), fill, x.dtype)
    out[:, :, p:p + h, p:p + w] = x[:, :, :hp - p, :wp - p]
    return out


class Pool(Op):
    """What max and average pooling share: the z×z window spaced s apart, its padding and
    rounding, its shape rule and its checks. Not a layer type itself (no `type`); MaxPool and
    AvgPool are."""

    spatial_input = True
    attrs = {
        "size": AttrDef("int", minimum=1, doc="z, the window (required unless global)"),
        "stride": AttrDef("int", minimum=1, doc="s, the spacing (required unless global)"),
        "pad": AttrDef("int", default=0, minimum=0,
                       doc="p, the frame around the input (at most size / 2)"),
        "ceil": AttrDef("flag", doc="size the output with ceil, as Caffe and cuda-convnet "
                                    "(the last window starts inside the input)"),
        "global": AttrDef("flag", doc="one window over the whole map (no size or stride)"),
    }

    def check(self, a, in_shape, report):
        _, h, w = in_shape
        if a.get("global"):
            given = [k for k in ("size", "stride", "ceil") if a.get(k)] + \
                (["pad"] if a.get("pad") else [])
            if given:
                report(given[0], f"'global' pools the whole map: give no '{given[0]}'")
                return False
            if h != w:
                report("global", f"global pooling needs square maps, not {h}x{w}")
                return False
            return True
        ok = True
        for k in ("size", "stride"):
            if a.get(k) is None:
                report("name", f"missing '{k}' ({self.attrs[k].doc}), or give 'global'")
                ok = False
        if not ok:
            return False
        z, p = a["size"], a.get("pad") or 0
        if 2 * p > z:
            report("pad", f"pad {p} is more than half the window {z}: a window could hold "
                          f"only frame (pad at most {z // 2})")
            return False
        if z > h + 2 * p or z > w + 2 * p:
            report("size", f"window {z} is larger than the input {h}x{w}"
                           + (f" framed by pad {p}" if p else ""))
            return False
        return True

    def output_shape(self, a, in_shape):
        _, _, _, ho, wo = pool_geometry(a, in_shape)
        return (in_shape[0], ho, wo)

    def describe(self, a):
        if a.get("global"):
            return f"{self.type[:3]} global"
        extra = (f" p{a['pad']}" if a.get("pad") else "") + (" ceil" if a.get("ceil") else "")
        return f"{self.type[:3]} {a['size']}×{a['size']} s{a['stride']}{extra}"

    def onnx_node(self, a):
        if a.get("global"):
            return self.onnx_global, {}
        p = a.get("pad") or 0
        return self.onnx_type, {"kernel_shape": [a["size"]] * 2, "strides": [a["stride"]] * 2,
                                "pads": [p] * 4, "ceil_mode": int(bool(a.get("ceil"))),
                                **self.onnx_extra}

    onnx_extra: dict = {}

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch.nn.functional as F
        pool = getattr(F, self.torch_function)

        def window(x):
            if a.get("global"):
                return pool(x, x.shape[-1], 1)
            return pool(x, a["size"], a["stride"], padding=a.get("pad") or 0,
                        ceil_mode=bool(a.get("ceil")))
        return window


class MaxPool(Pool):
    type = "maxpool"
    doc = "max pooling, overlapping when size > stride"
    colour, label = "#f0ad55", "max pool"
    onnx_type, onnx_global = "MaxPool", "GlobalMaxPool"
    torch_function = "max_pool2d"        # in torch.nn.functional

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        # Separable: the max over z columns within each row, then over z of those rows (2z
        # passes, not z²). Rows first keeps ties in row-major order: the first row that holds
        # the window's max, and that row's first column holding it. The frame is −inf.
        z, s, p, ho, wo = pool_geometry(a, x.shape[1:])
        h, w = x.shape[2:]
        hp = padded_extent(x.shape[2], z, s, p, ho)
        wp = padded_extent(x.shape[3], z, s, p, wo)
        x = framed(x, p, hp, wp, -np.inf)
        hi, wi = s * (ho - 1) + 1, s * (wo - 1) + 1
        index = np.min_scalar_type(z * z - 1)
        rowmax = x[:, :, :, 0:wi:s].copy()
        col = np.zeros(rowmax.shape, index)                  # v of each row's first max
        for v in range(1, z):
            win = x[:, :, :, v:v + wi:s]
            np.copyto(col, v, where=win > rowmax, casting="unsafe")
            np.maximum(rowmax, win, out=rowmax)
        y = rowmax[:, :, 0:hi:s].copy()
        arg = col[:, :, 0:hi:s].copy()                       # offset u·z + v of the max
        for u in range(1, z):
            win = rowmax[:, :, u:u + hi:s]
            np.copyto(arg, col[:, :, u:u + hi:s] + index.type(u * z), where=win > y)
            np.maximum(y, win, out=y)
        return y, (x.shape, arg, p, (h, w))

    def backward(self, a, dy, cache, *, input_grad=True):
        # Each output's gradient goes to the (framed) input pixel of its stored argmax: one
        # flat index per output and one unbuffered scatter-add (np.add.at, in dy's dtype),
        # instead of z² full-size masked adds. Overlapping windows that share an argmax add
        # up; the frame is cut off after (the argmax is never in it).
        if not input_grad:
            return None, ()
        xp_shape, arg, p, (h, w) = cache
        z, s, _, _, _ = pool_geometry(a, (0, h, w))
        n, c, hp, wp = xp_shape
        ho, wo = arg.shape[2], arg.shape[3]
        u, v = np.divmod(arg.astype(np.intp), z)
        u += (s * np.arange(ho, dtype=np.intp))[:, None]            # framed row of the argmax
        v += s * np.arange(wo, dtype=np.intp)                       # framed column
        u *= wp
        u += v
        u += (hp * wp * np.arange(n * c, dtype=np.intp)).reshape(n, c, 1, 1)
        dx = np.zeros(xp_shape, dy.dtype)
        np.add.at(dx.reshape(-1), u.reshape(-1), dy.reshape(-1))
        return (dx if (hp, wp, p) == (h, w, 0) else
                np.ascontiguousarray(dx[:, :, p:p + h, p:p + w])), ()


OP = MaxPool()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# Device layout (C, N, H, W): a pooling window never leaves its (channel, image) plane.
# Window (oy, ox) covers framed rows oy·S .. oy·S + Z − 1, i.e. input rows oy·S − P .., cut to
# the input (the frame never wins a max). The forward stores each window's argmax (its offset
# u·Z + q inside the framed window, first in row-major order on ties, as a float: exact below
# 2^24) in the `argmax` scratch buffer. The backward gathers (one work-item per input pixel,
# over the windows that cover it, comparing their stored argmax with its own offset in them),
# so it needs no atomics and reads one float per covering window instead of recomputing the
# window's Z² maximum.

POOL_WINDOWS = r"""
    const int plane = e / (${H} * ${W}), iy = (e / ${W}) % ${H}, ix = e % ${W};
    const int fy = iy + ${P}, fx = ix + ${P};          /* in the framed input */
    /* output rows whose window [oy*S, oy*S + Z) covers fy */
    const int oy0 = fy >= ${Z} ? (fy - ${Z} + ${S}) / ${S} : 0;
    const int ox0 = fx >= ${Z} ? (fx - ${Z} + ${S}) / ${S} : 0;
    const int oy1 = fy / ${S} < ${OH} - 1 ? fy / ${S} : ${OH} - 1;
    const int ox1 = fx / ${S} < ${OW} - 1 ? fx / ${S} : ${OW} - 1;
"""

# The window's rows and columns inside the input: [y0, y1) x [x0, x1), input coordinates.
POOL_CLIP = r"""
    const int plane = e / (${OH} * ${OW}), oy = (e / ${OW}) % ${OH}, ox = e % ${OW};
    const int ty = oy * ${S} - ${P}, tx = ox * ${S} - ${P};
    const int y0 = ty > 0 ? ty : 0, x0 = tx > 0 ? tx : 0;
    const int y1 = ty + ${Z} < ${H} ? ty + ${Z} : ${H};
    const int x1 = tx + ${Z} < ${W} ? tx + ${Z} : ${W};
"""

MAXPOOL_FWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NOUT})
        return;
@CLIP@
    const int base = plane * ${H} * ${W};
    float m = 0.0f;
    int best = -1;
    for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) {
            const float a = x[base + iy * ${W} + ix];
            if (best < 0 || a > m) {
                m = a;
                best = (iy - ty) * ${Z} + ix - tx;
            }
        }
    y[e] = m;
    argmax[e] = (float)best;
}
""".replace("@CLIP@", POOL_CLIP)

MAXPOOL_BWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NIN})
        return;
@WINDOWS@
    float g = 0.0f;
    for (int oy = oy0; oy <= oy1; ++oy)
        for (int ox = ox0; ox <= ox1; ++ox) {
            const int o = (plane * ${OH} + oy) * ${OW} + ox;
            if ((int)argmax[o] == (fy - oy * ${S}) * ${Z} + fx - ox * ${S})
                g += dy[o];
        }
    dx[e] = g;
}
""".replace("@WINDOWS@", POOL_WINDOWS)


def pool_consts(c) -> dict:
    cin, h, w = c.in_shape
    _, oh, ow = c.out_shape
    z, s, p, _, _ = pool_geometry(c.attrs, c.in_shape)
    return dict(H=h, W=w, OH=oh, OW=ow, Z=z, S=s, P=p, NIN=c.in_elements, NOUT=c.out_elements)


def scratch_buffers(c) -> dict:
    return {"argmax": c.out_elements}


def forward_kernels(c):
    k = pool_consts(c)
    gs, ls = elementwise_launch(k["NOUT"])
    return [Call(Kernel(
        f"{c.prefix}_fwd", MAXPOOL_FWD, params("in x", "out y", "out argmax"), k, gs, ls,
        flops=k["NOUT"] * k["Z"] ** 2, layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} max pool: y = max over the {k['Z']}x{k['Z']} "
            f"window, stride {k['S']}, pad {k['P']} (the frame never wins); argmax = its first "
            f"offset u*Z + v in row-major order\n"
            f"launch: one work-item per output ({k['NOUT']})"),
        ("x", "y", "argmax"))]


def backward_kernels(c):
    if not c.input_grad:
        return []
    k = pool_consts(c)
    gs, ls = elementwise_launch(k["NIN"])
    return [Call(Kernel(
        f"{c.prefix}_bwd", MAXPOOL_BWD, params("in dy", "in argmax", "out dx"), k, gs, ls,
        layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} max pool gradient: dx[p] = sum of dy over the "
            f"windows whose stored argmax is p\nlaunch: one work-item per input ({k['NIN']}), "
            f"gathering over the windows that cover it"),
        ("dy", "argmax", "dx"))]
