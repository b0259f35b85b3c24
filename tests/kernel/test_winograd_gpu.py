"""Winograd on the GPU (netspec/kernel/winograd_gpu.py, chosen by codegen/winograd_gpu.py).

The transforms' kernels run on the CUDA emulator (and PoCL) for the forward (bias and ReLU
fused), the data gradient and the weight gradient (its tile sum in slices), against PyTorch's float64 conv and the op's own NumPy reference,
within codegen/winograd.py's ERROR_BOUND for that transform (max |error| / max |value|;
stated there for 48 channels on 27x27 planes, larger than these shapes, so an upper bound
here; a wrong coefficient or index errs by O(1)). Shapes leave ragged tiles on both axes
(7x9 outputs in 2x2 and 4x4 tiles) and pads that reach past the first row of taps. Then the
plan: forced onto a small conv, Winograd runs end to end on the CUDA emulator and PoCL through
check_layer; on AlexNet at batch 128 the estimate picks it for conv2-conv5's forward and data
gradient and conv3-conv5's weight gradient, and the SASS model finds no spills in the transforms."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from netspec.codegen.winograd import ERROR_BOUND, matrices
from netspec.kernel.winograd_gpu import (
    WinogradConv,
    WinogradTiles,
    wgrad_calls,
    wgrad_scratch,
    wgrad_slices,
    winograd_calls,
)
from netspec.ops.conv import OP as CONV

from layercheck import check_layer, opencl_missing

HERE = os.path.dirname(os.path.abspath(__file__))


def _variants():
    spec = importlib.util.spec_from_file_location("gemm_variants",
                                                  os.path.join(HERE, "test_gemm_variants.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GV = _variants()
N, C, O, H, W = 2, 5, 6, 7, 9


def _case(m: int, r: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = (r - 1) // 2
    x = rng.standard_normal((C, N, H, W))
    w = rng.standard_normal((O, C, r, r))
    b = rng.standard_normal(O)
    dy = rng.standard_normal((O, N, H, W))        # 'same' pad: the output is H x W too
    wt = WinogradTiles(m, r, *matrices(m, r))
    return x, w, b, dy, p, wt


def _torch(x, w, b, dy, p):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x).permute(1, 0, 2, 3).contiguous().requires_grad_()
    y = torch.nn.functional.conv2d(xt, torch.tensor(w), torch.tensor(b), padding=p)
    y.backward(torch.tensor(dy).permute(1, 0, 2, 3))
    return (torch.relu(y).detach().permute(1, 0, 2, 3).numpy(),
            xt.grad.permute(1, 0, 2, 3).numpy())


def _run(run, m, r, seed=0):
    """(y, dx) of the Winograd kernels through `run` (the emulator or PoCL), and the oracles."""
    x, w, b, dy, p, wt = _case(m, r, seed)
    fwd = WinogradConv(O, C, N, H, W, H, W, p)
    bwd = WinogradConv(C, O, N, H, W, H, W, r - 1 - p)
    y = run(winograd_calls("t_fwd", fwd, wt, src="x", dst="y", flip=False, bias=True, relu=True),
            dict(x=x, w=w, b=b, y=np.zeros(O * N * H * W), **{
                k: np.zeros(v) for k, v in fwd.scratch(m, r).items()}))["y"]
    dx = run(winograd_calls("t_bwd", bwd, wt, src="dy", dst="dx", flip=True),
             dict(dy=dy, w=w, dx=np.zeros(C * N * H * W), **{
                 k: np.zeros(v) for k, v in bwd.scratch(m, r).items()}))["dx"]
    return y.reshape(O, N, H, W), dx.reshape(C, N, H, W), (x, w, b, dy, p)


def _relative(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (2, 5), (3, 5)])
def test_winograd_kernels_on_the_emulator(m, r):
    why = GV._emulator_missing()
    if why:
        pytest.skip(why)
    y, dx, (x, w, b, dy, p) = _run(GV.run_emulated, m, r)
    ty, tdx = _torch(x, w, b, dy, p)
    out_bound, in_bound, _ = ERROR_BOUND[(m, r)]
    assert _relative(y, ty) < out_bound
    assert _relative(dx, tdx) < in_bound
    # and the op's NumPy reference (im2col + GEMM in float64), layout (N, C, H, W)
    a = {"filters": O, "size": r, "stride": 1, "pad": p}
    ny, cache = CONV.forward(a, x.transpose(1, 0, 2, 3), (w, b))
    ndx, _ = CONV.backward(a, dy.transpose(1, 0, 2, 3), cache)
    assert _relative(y, np.maximum(ny, 0).transpose(1, 0, 2, 3)) < out_bound
    assert _relative(dx, ndx.transpose(1, 0, 2, 3)) < in_bound


@pytest.mark.parametrize("m,r,slices", [(2, 3, 3), (4, 3, 1), (2, 5, 2)])
def test_winograd_weight_gradient_on_the_emulator(m, r, slices):
    """dw by the adjoint transforms, the sum over tiles cut into `slices` batches; against
    PyTorch's float64 weight gradient within ERROR_BOUND's third column."""
    why = GV._emulator_missing()
    if why:
        pytest.skip(why)
    torch = pytest.importorskip("torch")
    x, w, b, dy, p, wt = _case(m, r)
    conv = WinogradConv(O, C, N, H, W, H, W, p)
    _, ns = wgrad_slices(conv, m, slices)
    wt = WinogradTiles(m, r, wt.at, wt.g, wt.bt, slices=ns)
    dw = GV.run_emulated(wgrad_calls("t_dw", conv, wt), dict(
        x=x, dy=dy, dw=np.zeros(w.size), **{
            k: np.zeros(v) for k, v in wgrad_scratch(conv, m, r, ns, "wino").items()}))["dw"]
    wt_ = torch.tensor(w).requires_grad_()
    y = torch.nn.functional.conv2d(torch.tensor(x).permute(1, 0, 2, 3), wt_, padding=p)
    y.backward(torch.tensor(dy).permute(1, 0, 2, 3))
    assert _relative(dw.reshape(w.shape), wt_.grad.numpy()) < ERROR_BOUND[(m, r)][2]


def test_winograd_kernels_on_pocl():
    why = opencl_missing()
    if why:
        pytest.skip(why)
    y, dx, (x, w, b, dy, p) = _run(GV.run_opencl, 2, 3, seed=1)
    ty, tdx = _torch(x, w, b, dy, p)
    assert _relative(y, ty) < ERROR_BOUND[(2, 3)][0]
    assert _relative(dx, tdx) < ERROR_BOUND[(2, 3)][1]


@pytest.fixture
def forced(monkeypatch):
    """Winograd for every stride-1 3x3 and 5x5 conv direction, whatever the estimate says."""
    import netspec.codegen.winograd_gpu as wg
    monkeypatch.setattr(wg, "choose_winograd", lambda conv, r, cands, sm_count=132: cands[0])
    monkeypatch.setattr(wg, "choose_wgrad", lambda conv, r, cands, sm_count=132: (
        cands[0], wgrad_slices(conv, cands[0], 2)[1]))


@pytest.mark.parametrize("attrs,shape,gpus,backends", [
    ({"filters": 4, "size": 3, "pad": 1}, (3, 7, 7), 1, ["cuda", "opencl"]),
    ({"filters": 6, "size": 5, "pad": 2}, (4, 5, 5), 2, ["cuda"]),
])
def test_forced_winograd_layer_on_backends(forced, attrs, shape, gpus, backends):
    """The whole layer, forward and backward (weight gradient by GEMM), through the plan."""
    from netspec.codegen.compile import compile_network
    from netspec.ir.build import build_graph

    from layercheck import layer_spec
    plan = compile_network(build_graph(layer_spec("conv", attrs, shape, gpus=gpus, relu=True,
                                                  batch=2)), 2).plan
    names = " ".join(plan.kernels)
    assert "fwd_winput" in names and "bwd_data_woutput" in names
    assert ("bwd_weight_wdfilter" in names) == (attrs["size"] == 3)    # 3x3 only
    check_layer("conv", attrs, shape, gpus=gpus, relu=True, backends=backends)


def test_the_estimate_picks_winograd_only_where_it_wins(root):
    from netspec.codegen.winograd_gpu import winograd_tiles
    from netspec.ir.build import build_graph

    from layercheck import layer_spec
    graph = build_graph(root / "specs/alexnet.net")
    chosen = {(layer, d): (t.m, t.r) for layer, ds in winograd_tiles(graph, 128, {}, 132).items()
              for d, t in ds.items()}
    assert chosen == {(f"conv{i}", d): (3, 5) if i == 2 else (2, 3) for i in (2, 3, 4, 5)
                      for d in ("fwd", "bwd_data", "bwd_weight") if (i, d) != (2, "bwd_weight")}
    # a 4-channel conv on a 6x6 plane: four launches' overhead, no GEMM to save
    tiny = build_graph(layer_spec("conv", {"filters": 4, "size": 3, "pad": 1}, (4, 6, 6),
                                  batch=2))
    assert winograd_tiles(tiny, 2, {}, 132) == {}
    # tiles the caller names (autotuned, or the --sass baseline) are kept
    given = {"conv3": {"fwd": "tuned"}}
    assert winograd_tiles(graph, 128, given, 132)["conv3"]["fwd"] == "tuned"
