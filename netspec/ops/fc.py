"""fc: fully connected. y = x_flat · Wᵀ + b, the input flattened in (C, H, W) order.

A part holds a slice of the output neurons and reads every input part (`all`), or only its own
GPU's parts (`same-gpu`), concatenated in channel order before flattening.
"""
from __future__ import annotations

import math

import numpy as np

from ..kernel import Call, params
from ..kernel.gemm import gemm_kernel
from .base import AttrDef, Op
from .conv import bias_grad_calls, bias_grad_slices
from .relu import relu_mask_grad


class FC(Op):
    type = "fc"
    doc = "fully connected; `relu` fuses the activation"
    tuned = True
    colour, label = "#78bd76", "dense (fc)"
    weighted = True
    attrs = {"outputs": AttrDef("int", required=True, minimum=1, doc="neurons")}

    def describe(self, a):
        return "dense"

    def output_shape(self, a, in_shape):
        return (a["outputs"],)

    def weight_shape(self, a, in_shape, in_ch, out_ch):
        return (out_ch, in_ch * math.prod(in_shape[1:]))

    def part_macs(self, a, in_shape, out_shape, in_ch, out_ch):
        return out_ch * in_ch * math.prod(in_shape[1:])

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        w, b = params
        x2 = x.reshape(x.shape[0], -1)                        # (N, C·H·W), C-order
        # the same product as x2 @ w.T, but with the large operand untransposed: OpenBLAS's
        # sgemm is several times faster on this form for a small batch (N << O, K)
        y = np.ascontiguousarray((w @ x2.T).T)
        y += b
        if relu:
            np.maximum(y, y.dtype.type(0), out=y)
        return y, (x.shape, x2, w, y if relu else None)

    def backward(self, a, dy, cache, *, input_grad=True):
        x_shape, x2, w, y = cache
        g = relu_mask_grad(dy, y) if y is not None else dy
        # (x2ᵀ g)ᵀ = gᵀ x2 and (wᵀ gᵀ)ᵀ = g w, in the faster orientation as in forward
        grads = ((x2.T @ g).T, g.sum(axis=0))
        return ((w.T @ g.T).T.reshape(x_shape) if input_grad else None), grads


    def onnx_node(self, a):
        return "Gemm", {"transB": 1}                           # x_flat · Wᵀ + b

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch.nn.functional as F
        if groups != 1:
            raise NotImplementedError("fc: PyTorch has no grouped linear layer")

        def linear(x, w, b):
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

# x as a (K, N) matrix, K = C·HW: element (k, img)
FC_X = "x[((KIDX / ${HW}) * ${NB} + NIDX) * ${HW} + KIDX % ${HW}]"


def _sizes(c):
    cin = c.in_shape[0]
    hw = math.prod(c.in_shape[1:])
    return c.out_shape[0], cin * hw, dict(HW=hw, NB=c.batch)


def scratch_buffers(c) -> dict:
    sl = bias_grad_slices(c.batch)
    return {"db_split": c.out_shape[0] * sl} if sl > 1 else {}


def forward_kernels(c):
    o, kin, g = _sizes(c)
    relu = "v = $fmax(v, 0.0f);" if c.layer.relu else ""
    k = gemm_kernel(
        f"{c.prefix}_fwd", M=o, N=c.batch, K=kin,
        load_a="v = w[m * ${K} + k];",
        load_b="v = " + FC_X.replace("KIDX", "k").replace("NIDX", "n") + ";",
        epilogue=f"v += b[m]; {relu} y[m * ${{N}} + n] = v;",
        params=params("in x", "in w", "in b", "out y"), consts=g, tiles=c.tiles.get("fwd"),
        layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} forward: y[o, img] = b[o] + "
            f"sum_k w[o, k] * x[k, img]{', then ReLU' if c.layer.relu else ''}")
    return [Call(k, ("x", "w", "b", "y"))]


def backward_kernels(c):
    o, kin, g = _sizes(c)
    calls = bias_grad_calls(c.prefix, o, c.batch, c.layer.relu, c.layer.name)
    dw = gemm_kernel(
        f"{c.prefix}_bwd_weight", M=o, N=kin, K=c.batch,
        load_a="v = dy[m * ${K} + k];",
        load_b="v = " + FC_X.replace("KIDX", "n").replace("NIDX", "k") + ";",
        epilogue="dw[m * ${N} + n] = v;",
        params=params("in dy", "in x", "out dw"), consts=g, tiles=c.tiles.get("bwd_weight"),
        layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} weight gradient: dw[o, k] = "
            f"sum_img dy[o, img] * x[k, img]")
    calls.append(Call(dw, ("dy", "x", "dw")))
    if c.input_grad:
        dx = gemm_kernel(
            f"{c.prefix}_bwd_data", M=kin, N=c.batch, K=o,
            load_a="v = w[k * ${M} + m];",
            load_b="v = dy[k * ${N} + n];",
            epilogue="dx[((m / ${HW}) * ${NB} + n) * ${HW} + m % ${HW}] = v;",
            params=params("in dy", "in w", "out dx"), consts=g,
            tiles=c.tiles.get("bwd_data"), layer=c.layer.name,
            doc=f"{c.layer.name} part {c.part.index} data gradient: dx[k, img] = "
                f"sum_o w[o, k] * dy[o, img]")
        calls.append(Call(dx, ("dy", "w", "dx")))
    return calls
