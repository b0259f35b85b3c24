"""The GEMM family (netspec/kernel/gemm.py) against NumPy, on the CUDA emulator and on PoCL.

Every conv and fc direction of AlexNet's part shapes (specs/alexnet.net, both halves' shapes
are equal) runs its kernels — the tiles and split-K slices `choose_gemm` picks for 132 SMs —
on a small batch, and each output is compared elementwise with the op's NumPy reference in
float64 (the op's `forward`/`backward`, i.e. im2col + matmul):

    |device − reference| <= 1e-3·|reference| + 1e-4·max|reference|

(float32 sums of up to a few thousand products in another order; tests/runtime/plan_oracle.py
uses the same bound). Then every blocked VARIANT, the strided layout and a forced split-K run
on two shapes that exercise ragged edges (M, N, K not multiples of the tile), the scalar
fallback of dense operands (K % 4 != 0) and their float4 path. The emulator poisons shared and
new memory with NaN and runs each block's threads in both orders, so a missing barrier or a
read of an unwritten slab shows as a wrong number."""
from __future__ import annotations

import dataclasses
import math
import os
import shutil

import numpy as np
import pytest

from netspec.ir.build import build_graph
from netspec.kernel import PartContext
from netspec.kernel.dialects import CUDA, OPENCL
from netspec.kernel.gemm import VARIANTS, GemmTiles, choose_gemm

from layercheck import opencl_missing

RTOL, ATOL = 1e-3, 1e-4
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _emulator_missing() -> str | None:
    from netspec.runtime.cuda_backend import cuda_emulated
    if shutil.which("g++") is None:
        return "g++ is not on the PATH (the CUDA emulator needs it)"
    if not cuda_emulated():
        return "the CUDA emulator is off (NETSPEC_CUDA_EMULATE=0) or a CUDA device answers"
    return None


# -- running a list of Calls on one device ------------------------------------------------------
def run_emulated(calls, arrays: dict, reverse: bool = False) -> dict:
    from netspec.runtime.cuda_emulator import cupy_model as cp
    src = CUDA.prelude + "".join("\n" + c.kernel.render(CUDA) for c in calls)
    mod = cp.RawModule(code=src)
    dev = {}
    for role, a in arrays.items():
        d = cp.ndarray((a.size,), np.float32)
        d.set(a.astype(np.float32).ravel())
        dev[role] = d
    saved = cp.settings.thread_order
    cp.settings.thread_order = "reverse" if reverse else "forward"
    try:
        for c in calls:
            k = c.kernel
            grid = tuple(g // l for g, l in zip(k.global_size, k.local_size))
            mod.get_function(k.name)(grid, tuple(k.local_size), tuple(dev[r] for r in c.args))
        out = {r: d.get() for r, d in dev.items()}
        cp.cuda.Device().synchronize()
    finally:
        cp.settings.thread_order = saved
    return {r: np.asarray(v, np.float64) for r, v in out.items()}


def run_opencl(calls, arrays: dict) -> dict:
    import pyopencl as cl

    from netspec.runtime.opencl_backend import find_device
    ctx = cl.Context([find_device()])
    queue = cl.CommandQueue(ctx)
    src = OPENCL.prelude + "".join("\n" + c.kernel.render(OPENCL) for c in calls)
    prog = cl.Program(ctx, src).build()
    bufs = {r: cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR,
                         hostbuf=a.astype(np.float32).ravel()) for r, a in arrays.items()}
    for c in calls:
        getattr(prog, c.kernel.name)(queue, c.kernel.global_size, c.kernel.local_size,
                                     *[bufs[r] for r in c.args])
    out = {}
    for r, b in bufs.items():
        host = np.empty(arrays[r].size, np.float32)
        cl.enqueue_copy(queue, host, b)
        out[r] = host.astype(np.float64)
    queue.finish()
    return out


RUNNERS = {"emulated-cuda": (_emulator_missing, run_emulated), "opencl": (opencl_missing,
                                                                          run_opencl)}


def close(dev, ref, what):
    dev, ref = np.asarray(dev, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    assert dev.shape == ref.shape, what
    scale = float(np.abs(ref).max())
    err = np.abs(dev - ref) - (RTOL * np.abs(ref) + ATOL * scale)
    assert not (err > 0).any() and np.isfinite(dev).all(), (
        f"{what}: {(err > 0).sum()} of {err.size} off; worst device "
        f"{dev[np.argmax(err)]!r} vs {ref[np.argmax(err)]!r}")


# -- one layer part: its kernels and the NumPy reference, in device layout -----------------------
def device(a: np.ndarray) -> np.ndarray:
    """(N, C, ...) host layout -> (C, N, ...) device layout, flattened."""
    return np.ascontiguousarray(np.moveaxis(a, 0, 1)).ravel()


def _renamed(calls, tag: str) -> list:
    return [dataclasses.replace(c, args=tuple(f"{tag}.{r}" for r in c.args)) for c in calls]


def check_parts(layers, batch: int, runner, tiles: dict | None = None) -> None:
    """Part 0 of each layer, every direction: all layers' forward kernels in one program, then
    all backward kernels in another (one build per device and variant), each layer's buffers
    named `layer.role`."""
    fwd, bwd, arrays, refs = [], [], {}, []
    rng = np.random.default_rng(7)
    for layer in layers:
        op, part, tag = layer.op, layer.parts[0], layer.name
        input_grad = layer.name != "conv1"
        ctx = PartContext(layer, part, batch, input_grad, tiles or {})
        ishape, oshape = layer.part_in_shape(part), layer.part_out_shape(part)
        x = rng.standard_normal((batch, *ishape))
        wshape = layer.weight_shape(part)
        w = rng.standard_normal(wshape) / math.sqrt(math.prod(wshape[1:]))
        b = rng.standard_normal(part.channels)
        # ReLU as the layer has it; the backward's mask reads y_ref on both sides (rounding
        # to float32 keeps every sign), so no decision is left to rounding
        y_ref, cache = op.forward(layer.attrs, x, (w, b), relu=layer.relu)
        dy = rng.standard_normal(y_ref.shape)
        dx_ref, (dw_ref, db_ref) = op.backward(layer.attrs, dy, cache, input_grad=input_grad)
        sizes = {"x": x.size, "w": w.size, "b": b.size, "y": y_ref.size, "dy": dy.size,
                 "dw": w.size, "db": b.size, "dx": x.size, **op.scratch_buffers(ctx)}
        arrays.update({f"{tag}.{r}": np.full(n, np.nan) for r, n in sizes.items()})
        arrays.update({f"{tag}.x": device(x.reshape(batch, ishape[0], -1)),
                       f"{tag}.w": w.ravel(), f"{tag}.b": b,
                       f"{tag}.dy": device(dy.reshape(batch, oshape[0], -1))})
        fwd += _renamed(op.forward_kernels(ctx), tag)
        bwd += _renamed(op.backward_kernels(ctx), tag)
        what = f"{layer.name} part 0 at batch {batch}"
        refs.append((tag, what, device(y_ref.reshape(batch, oshape[0], -1)), dw_ref, db_ref,
                     None if dx_ref is None else device(dx_ref.reshape(batch, ishape[0], -1))))
    out = runner(fwd, arrays)
    for tag, what, y, *_ in refs:
        close(out[f"{tag}.y"], y, f"{what} forward")
        arrays[f"{tag}.y"] = y
    out = runner(bwd, arrays)
    for tag, what, _, dw, db, dx in refs:
        close(out[f"{tag}.dw"], dw, f"{what} weight gradient")
        close(out[f"{tag}.db"], db, f"{what} bias gradient")
        if dx is not None:
            close(out[f"{tag}.dx"], dx, f"{what} input gradient")


@pytest.fixture(scope="module")
def alexnet():
    return build_graph(os.path.join(ROOT, "specs/alexnet.net"))


ALEXNET_GEMM_LAYERS = ["conv1", "conv2", "conv3+conv4+conv5", "fc6", "fc7+fc8"]


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("names", ALEXNET_GEMM_LAYERS)
def test_alexnet_layer_gemms_match_numpy(alexnet, names, runner):
    """Every direction of one AlexNet layer's part 0 at batch 2, with the tiles and split-K
    that choose_gemm picks for that shape."""
    missing, run = RUNNERS[runner]
    why = missing()
    if why:
        pytest.skip(why)
    check_parts([alexnet.layer(n) for n in names.split("+")], 2, run)


SMALL = """network small
input 5x9x9
classes 7
conv c1 filters 12 size 3 stride 2 pad 1
conv c2 filters 20 size 3 pad 1
fc f3 outputs 36
fc f4 outputs 7
softmax prob
train
  batch 4
"""

CANDIDATES = [*VARIANTS, GemmTiles(64, 64, 16, 4, 4, layout="strided"),
              GemmTiles(128, 128, 8, 8, 8, splits=3), GemmTiles(64, 64, 16, 8, 8, splits=2)]


def _name(t) -> str:
    return f"{t.BM}x{t.BN}x{t.BK}-{t.TM}x{t.TN}-{t.layout}-s{t.splits}"


# every variant on the emulator; on PoCL, whose per-kernel builds take most of this file's
# time, the largest blocked tile with and without split-K and the strided layout, and the rest
# with NETSPEC_RUN_SLOW=1 (the same template renders both dialects)
ON_POCL = {_name(CANDIDATES[i]) for i in (0, -3, -2)}
SLOW = pytest.mark.skipif(not os.environ.get("NETSPEC_RUN_SLOW"),
                          reason="this variant on PoCL: NETSPEC_RUN_SLOW=1 (the emulator runs it)")
PAIRS = [pytest.param(t, r, id=f"{_name(t)}-{r}",
                      marks=() if r != "opencl" or _name(t) in ON_POCL else SLOW)
         for t in CANDIDATES for r in RUNNERS]


@pytest.mark.parametrize("tiles,runner", PAIRS)
def test_every_variant_matches_numpy(tmp_path, tiles, runner):
    """Each variant on every direction of a strided conv (phases), a stride-1 conv, an fc
    after a conv (gathered input) and an fc after an fc (dense, K = 36 and batch 4: float4
    loads)."""
    missing, run = RUNNERS[runner]
    why = missing()
    if why:
        pytest.skip(why)
    spec = tmp_path / "small.net"
    spec.write_text(SMALL)
    g = build_graph(spec)
    every = dict.fromkeys(("fwd", "bwd_weight", "bwd_data"), tiles)
    check_parts([g.layer(n) for n in ("c1", "c2", "f3", "f4")], 4, run, tiles=every)


def test_emulator_reverse_thread_order_agrees(alexnet):
    """A race between the double buffer's store and another thread's read would change the
    result with the threads' order: the reverse order gives the same sums, bit for bit."""
    why = _emulator_missing()
    if why:
        pytest.skip(why)
    layer = alexnet.layer("conv3")
    ctx = PartContext(layer, layer.parts[0], 1, True, {})
    calls = layer.op.forward_kernels(ctx)
    rng = np.random.default_rng(3)
    sizes = {"x": 256 * 13 * 13, "w": 192 * 256 * 9, "b": 192, "y": 192 * 169,
             **layer.op.scratch_buffers(ctx)}
    arrays = {r: rng.standard_normal(n) for r, n in sizes.items()}
    a, b = run_emulated(calls, arrays), run_emulated(calls, arrays, reverse=True)
    assert np.array_equal(a["y"], b["y"])


def test_choose_gemm_fills_132_sms_for_alexnet_fc():
    """fc6's forward at batch 128 (M = 2048 outputs of a part, N = 128 images, K = 9216): 16
    blocks of 128x128 alone would leave 116 of 132 SMs idle, so K is split until at least two
    waves run (2 blocks of 256 threads fit an SM at the estimated 136 registers)."""
    t, s = choose_gemm(2048, 128, 9216)
    blocks = -(-2048 // t.BM) * -(-128 // t.BN) * s
    assert s > 1 and blocks >= 2 * 132
