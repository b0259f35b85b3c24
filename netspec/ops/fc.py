"""fc: fully connected. y = x_flat · Wᵀ + b, the input flattened in (C, H, W) order (no b
with `nobias`).

A part holds a slice of the output neurons and reads every input part (`all`), or only its own
GPU's parts (`same-gpu`), concatenated in channel order before flattening.
"""
from __future__ import annotations

import math

import numpy as np

from ..kernel.gemm import Operand, gemm_calls, gemm_scratch
from .base import AttrDef, Op
from .conv import bias_grad_calls, bias_grad_slices, without_bias
from .relu import relu_mask_grad


class FC(Op):
    type = "fc"
    doc = "fully connected; `relu` fuses the activation"
    tuned = True
    split_k = ("fwd", "bwd_weight", "bwd_data")
    colour, label = "#78bd76", "dense (fc)"
    weighted = True
    attrs = {"outputs": AttrDef("int", required=True, minimum=1, doc="neurons"),
             "nobias": AttrDef("flag", doc="no bias (PyTorch's bias=False)")}

    def describe(self, a):
        return "dense"

    def output_shape(self, a, in_shape):
        return (a["outputs"],)

    def weight_shape(self, a, in_shape, in_ch, out_ch):
        return (out_ch, in_ch * math.prod(in_shape[1:]))

    def part_macs(self, a, in_shape, out_shape, in_ch, out_ch):
        return out_ch * in_ch * math.prod(in_shape[1:])

    def parameters(self, a, in_shape, in_ch, out_ch):
        return without_bias(a, super().parameters(a, in_shape, in_ch, out_ch))

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        w = params[0]
        x2 = x.reshape(x.shape[0], -1)                        # (N, C·H·W), C-order
        # the same product as x2 @ w.T, but with the large operand untransposed: OpenBLAS's
        # sgemm is several times faster on this form for a small batch (N << O, K)
        y = np.ascontiguousarray((w @ x2.T).T)
        if len(params) > 1:
            y += params[1]
        if relu:
            np.maximum(y, y.dtype.type(0), out=y)
        return y, (x.shape, x2, w, y if relu else None)

    def backward(self, a, dy, cache, *, input_grad=True):
        x_shape, x2, w, y = cache
        g = relu_mask_grad(dy, y) if y is not None else dy
        # (x2ᵀ g)ᵀ = gᵀ x2 and (wᵀ gᵀ)ᵀ = g w, in the faster orientation as in forward
        grads = ((x2.T @ g).T,) if a.get("nobias") else ((x2.T @ g).T, g.sum(axis=0))
        return ((w.T @ g.T).T.reshape(x_shape) if input_grad else None), grads


    def onnx_node(self, a):
        return "Gemm", {"transB": 1}                           # x_flat · Wᵀ + b

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch.nn.functional as F
        if groups != 1:
            raise NotImplementedError("fc: PyTorch has no grouped linear layer")

        def linear(x, w, b=None):
            y = F.linear(x.flatten(1), w, b)
            return F.relu(y) if relu else y
        return linear


OP = FC()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); rendered in CUDA C and OpenCL C from one text.
# Device layout: the input part is (C, N, HW) (HW = 1 after another fc), its flattened row
# k = c·HW + p in PyTorch's (C, H, W) order; the output is (O, N). Three tiled GEMMs
# (kernel/gemm.py). Fused: bias + ReLU in the forward epilogue; ReLU backward + bias gradient
# in the reduction kernel shared with conv.

# x as a (K, N) matrix, K = C·HW: element (k, img) = x[((k / HW)·NB + img)·HW + k % HW], dense
# (x[k·NB + img]) after another fc (HW = 1)
def _x_as_b(hw: int, nb: int) -> Operand:
    if hw == 1:
        return Operand.dense("x", 1, nb)
    return Operand(hoist="h0 = n * ${HW};",
                   per_k="g0 = (k / ${HW}) * (${NB} * ${HW}) + k % ${HW};",
                   load="v = x[h0 + g0];", fast="k")


# x as the weight gradient's (K = images, N = C·HW) matrix: element (img, kin)
def _x_as_wgrad_b(hw: int, nb: int) -> Operand:
    if hw == 1:
        return Operand.dense("x", nb, 1)
    return Operand(hoist="h0 = (n / ${HW}) * (${NB} * ${HW}) + n % ${HW};",
                   per_k="g0 = k * ${HW};", load="v = x[h0 + g0];", fast="outer")


def _sizes(c):
    cin = c.in_shape[0]
    hw = math.prod(c.in_shape[1:])
    return c.out_shape[0], cin * hw, dict(HW=hw, NB=c.batch)


def _gemms(c) -> dict:
    """direction -> (M, N, K) of this part's GEMMs."""
    o, kin, _ = _sizes(c)
    out = {"fwd": (o, c.batch, kin), "bwd_weight": (o, kin, c.batch)}
    if c.input_grad:
        out["bwd_data"] = (kin, c.batch, o)
    return out


SCRATCH = {"fwd": "y_split", "bwd_weight": "dw_split", "bwd_data": "dx_split"}


def scratch_buffers(c) -> dict:
    out = {}
    for direction, (m, n, k) in _gemms(c).items():
        floats = gemm_scratch(m, n, k, c.tiles.get(direction), sm_count=c.sm_count,
                              precision=c.precision)
        if floats:
            out[SCRATCH[direction]] = floats
    sl = bias_grad_slices(c.batch)
    if sl > 1 and not c.attrs.get("nobias"):
        out["db_split"] = c.out_shape[0] * sl
    return out


def _gemm(c, direction: str, **kw) -> list:
    m, n, k = _gemms(c)[direction]
    return gemm_calls(f"{c.prefix}_{direction}", m, n, k, tiles=c.tiles.get(direction),
                      scratch=SCRATCH[direction], layer=c.layer.name, sm_count=c.sm_count,
                      precision=c.precision,
                      consts=_sizes(c)[2], **kw)


def forward_kernels(c):
    o, kin, g = _sizes(c)
    relu = "v = $fmax(v, 0.0f);" if c.layer.relu else ""
    bias = not c.attrs.get("nobias")
    return _gemm(
        c, "fwd", a=Operand.dense("w", kin, 1), b=_x_as_b(g["HW"], c.batch),
        epilogue=f"{'v += b[m];' if bias else ''} {relu} y[m * ${{N}} + n] = v;",
        reads=("x", "w"), writes=("in b", "out y") if bias else ("out y",),
        doc=f"{c.layer.name} part {c.part.index} forward: y[o, img] = "
            f"{'b[o] + ' if bias else ''}"
            f"sum_k w[o, k] * x[k, img]{', then ReLU' if c.layer.relu else ''}")


def backward_kernels(c):
    o, kin, g = _sizes(c)
    calls = bias_grad_calls(c.prefix, o, c.batch, c.layer.relu, c.layer.name,
                            bias=not c.attrs.get("nobias"))
    calls += _gemm(
        c, "bwd_weight", a=Operand.dense("dy", c.batch, 1), b=_x_as_wgrad_b(g["HW"], c.batch),
        epilogue="dw[m * ${N} + n] = v;", reads=("dy", "x"), writes=("out dw",),
        doc=f"{c.layer.name} part {c.part.index} weight gradient: dw[o, k] = "
            f"sum_img dy[o, img] * x[k, img]")
    if c.input_grad:
        calls += _gemm(
            c, "bwd_data", a=Operand.dense("w", 1, kin), b=Operand.dense("dy", 1, c.batch),
            epilogue="dx[((m / ${HW}) * ${NB} + n) * ${HW} + m % ${HW}] = v;",
            reads=("dy", "w"), writes=("out dx",),
            doc=f"{c.layer.name} part {c.part.index} data gradient: dx[k, img] = "
                f"sum_o w[o, k] * dy[o, img]")
    return calls
