"""The tensor-core GEMMs (netspec/kernel/gemm.py, `precision tf32 | bf16`) against NumPy, on the
CUDA emulator (wmma) and on PoCL (the same rounding in the blocked template).

Reference: the op's own NumPy forward/backward in float64 on operands rounded as the kernels
round them (netspec/kernel/precision.py): y from r(x), r(w); dw from r(dy'), r(x); dx from
r(w), r(dy'), with dy' the ReLU-masked output gradient; the bias gradient is no GEMM and sums
the unrounded dy'. A product of two rounded operands is exact in float32, so a kernel differs
from that reference only by its float32 accumulation, and the bound is the FP32 tests' one:

    |device − reference| <= 1e-3·|reference| + 1e-4·max|reference|

Against the unrounded (FP32) reference the same kernels must be off by far more than that
bound (`test_tf32_differs_from_fp32`): the rounding is real, not skipped."""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
from test_gemm_variants import RUNNERS, SMALL, _renamed, close, device

from netspec.ir.build import build_graph
from netspec.kernel import PartContext
from netspec.kernel.dialects import CUDA, OPENCL
from netspec.kernel.gemm import TC_VARIANTS, choose_tc_gemm, fit_tc_tiles, tc_threads
from netspec.kernel.precision import round_operands

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _reference(op, layer, x, w, b, dy, input_grad, precision):
    """(y, dw, db, dx) in float64 with the GEMM operands rounded to `precision`."""
    def r(a):
        return round_operands(a, precision).astype(np.float64)
    y, cache = op.forward(layer.attrs, r(x), (r(w), b), relu=layer.relu)
    dx, (dw, _) = op.backward(layer.attrs, r(dy * (y > 0) if layer.relu else dy), cache,
                              input_grad=input_grad)
    _, (_, db) = op.backward(layer.attrs, dy, cache, input_grad=input_grad)
    return y, dw, db, dx


def run_layers(layers, batch, runner, precision, tiles=None):
    """Every direction of part 0 of each layer: (device outputs, references by role)."""
    fwd, bwd, arrays, refs = [], [], {}, {}
    rng = np.random.default_rng(11)
    for layer in layers:
        op, part, tag = layer.op, layer.parts[0], layer.name
        input_grad = layer is not layers[0]
        ctx = PartContext(layer, part, batch, input_grad, tiles or {}, precision=precision)
        ishape, oshape = layer.part_in_shape(part), layer.part_out_shape(part)
        x = rng.standard_normal((batch, *ishape)).astype(np.float32)
        wshape = layer.weight_shape(part)
        w = (rng.standard_normal(wshape) / math.sqrt(math.prod(wshape[1:]))).astype(np.float32)
        b = rng.standard_normal(part.channels).astype(np.float32)
        dy = rng.standard_normal((batch, *oshape)).astype(np.float32)
        y, dw, db, dx = _reference(op, layer, x, w, b, dy, input_grad, precision)
        sizes = {"x": x.size, "w": w.size, "b": b.size, "y": y.size, "dy": dy.size,
                 "dw": w.size, "db": b.size, "dx": x.size, **op.scratch_buffers(ctx)}
        arrays.update({f"{tag}.{r}": np.full(n, np.nan) for r, n in sizes.items()})
        arrays.update({f"{tag}.x": device(x.reshape(batch, ishape[0], -1)),
                       f"{tag}.w": w.ravel(), f"{tag}.b": b,
                       f"{tag}.dy": device(dy.reshape(batch, oshape[0], -1))})
        fwd += _renamed(op.forward_kernels(ctx), tag)
        bwd += _renamed(op.backward_kernels(ctx), tag)
        refs[tag] = dict(y=device(y.reshape(batch, oshape[0], -1)), dw=dw, db=db,
                         dx=None if dx is None else device(dx.reshape(batch, ishape[0], -1)))
    assert any(c.kernel.precision == precision for c in fwd + bwd)
    out = runner(fwd, arrays)
    got = {t: {"y": out[f"{t}.y"]} for t in refs}
    for t in refs:
        arrays[f"{t}.y"] = refs[t]["y"]      # the backward's ReLU mask reads the reference's y
    out = runner(bwd, arrays)
    for t, ref in refs.items():
        got[t].update(dw=out[f"{t}.dw"], db=out[f"{t}.db"],
                      dx=out[f"{t}.dx"] if ref["dx"] is not None else None)
    return got, refs


def check(got, refs, what):
    for t, ref in refs.items():
        for role, want in ref.items():
            if want is not None:
                close(got[t][role], want, f"{what}: {t} {role}")


@pytest.fixture(scope="module")
def small():
    return build_graph(SMALL)


def _runner(name):
    missing, run = RUNNERS[name]
    why = missing()
    if why:
        pytest.skip(why)
    return run


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_small_net_gemms_match_rounded_reference_emulated(small, precision):
    """conv (stride 2: the batched data gradient; stride 1), fc: every direction on the
    emulator's wmma, with the tiles and split-K choose_tc_gemm picks; ragged M, N, K."""
    run = _runner("emulated-cuda")
    layers = [small.layer(n) for n in ("c1", "c2", "f3", "f4")]
    got, refs = run_layers(layers, 3, run, precision)
    check(got, refs, f"{precision} on the emulator")


# PoCL builds each kernel for a good part of this file's time: one conv with the batched data
# gradient (stride 2) and one fc in TF32; the BF16 rounding function alone below
def test_rounded_blocked_template_on_opencl(small):
    run = _runner("opencl")
    got, refs = run_layers([small.layer(n) for n in ("c1", "f3")], 3, run, "tf32")
    check(got, refs, "tf32 on PoCL")


def _edge_values() -> np.ndarray:
    """Ties both ways, values next to ties, both signs, denormals, the largest finites
    (which round to inf), inf, zero, and random floats."""
    one = np.float32(1.0).view(np.uint32)
    bits = [one + d for d in (0x1000, 0x0fff, 0x1001, 0x3000, 0x8000, 0x7fff, 0x8001, 0x18000,
                               0x10000)]
    bits += [0x00001000, 0x00000001, 0x007fffff, 0x7f7fffff, 0x7f7ff000, 0x7f800000, 0]
    x = np.array(bits, np.uint32).view(np.float32)
    rng = np.random.default_rng(2)
    x = np.concatenate([x, -x, rng.standard_normal(256).astype(np.float32) * 1e3])
    return x


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_opencl_rounding_is_numpys_bit_for_bit(precision):
    """The dialects' rounding function (kernel/gemm.py _ROUND_FUNCS) on PoCL against
    round_operands, bit for bit, on ties, near-ties, denormals and overflow to inf."""
    missing, _ = RUNNERS["opencl"]
    why = missing()
    if why:
        pytest.skip(why)
    import pyopencl as cl

    from netspec.kernel.gemm import _round_head
    from netspec.runtime.opencl_backend import find_device
    fn = "netspec_round_" + precision
    src = (_round_head(precision) + f"__kernel void r(__global float* x) "
           f"{{ int i = get_global_id(0); x[i] = {fn}(x[i]); }}")
    ctx = cl.Context([find_device()])
    queue = cl.CommandQueue(ctx)
    x = _edge_values()
    buf = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=x)
    cl.Program(ctx, src).build().r(queue, (x.size,), None, buf)
    out = np.empty_like(x)
    cl.enqueue_copy(queue, out, buf)
    queue.finish()
    want = round_operands(x, precision)
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_emulator_rounding_is_numpys_bit_for_bit(precision):
    """The emulator's __float_to_tf32 and __float2bfloat16 (what the wmma kernels call)
    against round_operands, bit for bit, on the same values."""
    _runner("emulated-cuda")
    from netspec.runtime.cuda_emulator import cupy_model as cp
    expr = {"tf32": "nvcuda::wmma::__float_to_tf32(x[i])",
            "bf16": "__bfloat162float(__float2bfloat16(x[i]))"}[precision]
    src = ('#include <mma.h>\n#include <cuda_bf16.h>\nextern "C" __global__ void r(float* x) '
           f'{{ const int i = blockIdx.x * blockDim.x + threadIdx.x; x[i] = {expr}; }}')
    x = _edge_values()
    d = cp.ndarray((x.size,), np.float32)
    d.set(x)
    cp.RawModule(code=src).get_function("r")((x.size,), (1,), (d,))
    out = d.get()
    np.testing.assert_array_equal(out.view(np.uint32),
                                  round_operands(x, precision).view(np.uint32))


def test_numpy_rounding_by_hand():
    """round_operands against values worked by hand: TF32 keeps 10 mantissa bits (ulp at 1
    is 2^-10) and breaks ties away from zero; BF16 keeps 7 (2^-7) and breaks ties to even."""
    r = round_operands
    assert r(1 + 2.0 ** -11, "tf32") == 1 + 2.0 ** -10            # tie: away from zero
    assert r(-(1 + 2.0 ** -11), "tf32") == -(1 + 2.0 ** -10)
    assert r(1 + 2.0 ** -11 - 2.0 ** -23, "tf32") == 1.0           # below the tie
    assert r(1 + 2.0 ** -8, "bf16") == 1.0                         # tie: to even (down)
    assert r(1 + 3 * 2.0 ** -8, "bf16") == 1 + 2.0 ** -6           # tie: to even (up)
    assert r(np.float32(3.4028235e38), "tf32") == np.inf           # past TF32's largest
    assert r(1.2345678, "fp32") == np.float32(1.2345678)


# M, N and K past every variant's tile, none a multiple of 16
VARIANT_NET = """network v
input 6x10x10
classes 7
conv c1 filters 24 size 1
conv c2 filters 136 size 3 pad 1 relu
fc f3 outputs 140
fc f4 outputs 7
softmax prob
"""


@pytest.mark.parametrize("tiles", TC_VARIANTS, ids=lambda t: f"{t.BM}x{t.BN}-{t.TM}x{t.TN}")
def test_every_tensor_core_variant_on_the_emulator(tiles):
    """Each wmma tile as given (fitted), on c2 and f3 at batch 3, with a forced 3-way split-K
    on the weight gradients."""
    run = _runner("emulated-cuda")
    g = build_graph(VARIANT_NET)
    forced = {"fwd": tiles, "bwd_weight": dataclasses.replace(tiles, splits=3),
              "bwd_data": tiles}
    layers = [g.layer(n) for n in ("c2", "f3")]
    kernels = [c.kernel for n in ("c2", "f3") for c in g.layer(n).op.forward_kernels(
        PartContext(g.layer(n), g.layer(n).parts[0], 3, True, {"fwd": tiles},
                    precision="tf32"))]
    assert (kernels[0].consts["BM"], kernels[0].consts["TM"]) == (tiles.BM, tiles.TM)
    got, refs = run_layers(layers, 3, run, "tf32", {"c2": forced, "f3": forced})
    check(got, refs, f"tf32 tiles {tiles}")


def test_tf32_differs_from_fp32(small):
    """The same TF32 kernels against the unrounded reference: off by far more than the
    bound, and by about what TF32 rounding predicts (relative 2^-11 per operand)."""
    run = _runner("emulated-cuda")
    layers = [small.layer("c2")]
    got, refs = run_layers(layers, 3, run, "tf32")
    check(got, refs, "tf32")
    _, fp32 = run_layers(layers, 3, run, "fp32")
    y_tf, y_fp = got["c2"]["y"], fp32["c2"]["y"]
    scale = np.abs(y_fp).max()
    off = np.abs(y_tf - y_fp).max() / scale
    # the rounded reference is met to float32 accumulation (~1e-6 here); the FP32 one is
    # missed by the operands' rounding: ~2^-11 relative per product, sqrt(K) of them adding
    assert np.abs(y_tf - refs["c2"]["y"]).max() / scale < 1e-5
    assert 1e-4 < off < 1e-2, off


def test_tensor_core_kernels_render_wmma_for_cuda_and_rounding_elsewhere(small):
    layer = small.layer("c2")
    ctx = PartContext(layer, layer.parts[0], 4, True, {}, precision="bf16")
    k = layer.op.forward_kernels(ctx)[0].kernel
    cuda, cl = k.render(CUDA), k.render(OPENCL)
    assert "wmma::mma_sync" in cuda and "__float2bfloat16(" in cuda and "__nv_bfloat16 As" in cuda
    assert "wmma::" not in cl and "netspec_round_bf16(" in cl
    assert k.threads == tc_threads(fit_tc_tiles(k.consts["M"], k.consts["N"], TC_VARIANTS[0])) \
        or k.threads % 32 == 0


def test_choose_tc_gemm_fills_two_waves_on_alexnet_conv3_weight_gradient():
    # conv3's weight gradient on one of AlexNet's halves at batch 128: M=192, N=256·9,
    # K=128·13·13 = 21,632: split along K to fill 132 SMs twice
    t, s = choose_tc_gemm(192, 2304, 21632, "tf32")
    blocks = math.ceil(192 / t.BM) * math.ceil(2304 / t.BN) * s
    assert s > 1 and blocks >= 2 * 132


# a 6x6 kernel (36 taps: more than an int's bits, so the forward's row and column masks),
# stride 2 (the data gradient's stride phases, 3x3 taps each: one tap mask), a 3x3 stride-1
# conv (tap masks forward and backward) and ragged sizes everywhere
MASK_NET = """network m
input 5x15x15
classes 7
conv c1 filters 9 size 6 stride 2 pad 2 relu
conv c2 filters 13 size 3 pad 1
fc f3 outputs 7
softmax prob
"""


def test_masked_gathers_match_the_reference_emulated():
    """The loaders' bit-mask forms (conv.py's guarded operands) in tf32 on the emulator,
    against the rounded NumPy reference: the row/column masks of a 36-tap forward, the tap
    masks of a 3x3 forward and stride-1 data gradient, and the stride phases' masks."""
    run = _runner("emulated-cuda")
    g = build_graph(MASK_NET)
    layers = [g.layer(n) for n in ("c1", "c2")]
    for layer in layers:
        ctx = PartContext(layer, layer.parts[0], 3, True, {}, precision="tf32")
        text = " ".join(c.kernel.dialect_templates["cuda"] for c in
                        layer.op.forward_kernels(ctx) + layer.op.backward_kernels(ctx)
                        if c.kernel.precision == "tf32")
        masks = ("(h1 & g1) && (h2 & g2)",) if layer.name == "c1" else ("if (h1 & g1)",)
        assert all(m in text for m in masks), layer.name
    got, refs = run_layers(layers, 3, run, "tf32")
    check(got, refs, "tf32 masked gathers")


def test_kernels_past_the_mask_bits_keep_their_compares():
    """A 33x33 kernel has more rows than an int has bits: its forward keeps the bounds
    compares (no mask), and still renders for every dialect."""
    g = build_graph("network b\ninput 2x40x40\nclasses 3\nconv c1 filters 4 size 33\n"
                    "fc f2 outputs 3\nsoftmax prob\n")
    layer = g.layer("c1")
    ctx = PartContext(layer, layer.parts[0], 2, False, {}, precision="tf32")
    k = layer.op.forward_kernels(ctx)[0].kernel
    cuda, cl = k.render(CUDA), k.render(OPENCL)
    assert "h1 & g1" not in cuda and "h1 + g1 < 40" in cuda and "h1 + g1 < 40" in cl
