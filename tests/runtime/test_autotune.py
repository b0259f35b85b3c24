"""Autotuned tiles (netspec/runtime/autotune.py) on the OpenCL device (PoCL here): the winner
is cached on disk and reused without timing, and the kernels compiled with tuned tiles (split-K
included) still match the NumPy reference layer by layer."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("pyopencl", reason="pyopencl is not installed")
from netspec.ir.build import build_graph  # noqa: E402
from netspec.kernel.gemm import GemmTiles  # noqa: E402
from netspec.runtime import autotune  # noqa: E402
from netspec.runtime.autotune import compile_tuned  # noqa: E402
from netspec.runtime.opencl_backend import OpenCLNet, find_device  # noqa: E402

from plan_oracle import check_kernels_in_place  # noqa: E402

if find_device() is None:
    pytest.skip("no OpenCL device", allow_module_level=True)

SPEC = """
network tuned
input 3x13x13
classes 4
init weight gauss(0.2) bias 0.05
conv conv1 filters 5 size 3 stride 1 pad 1 relu
conv conv2 filters 6 size 3 stride 2 pad 1 relu
fc fc3 outputs 7 relu
fc fc4 outputs 4
softmax prob
train
  batch 3
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NETSPEC_AUTOTUNE", raising=False)      # lookup mode
    # two candidates, one split: a bounded search that stays fast
    monkeypatch.setattr(autotune, "CANDIDATES", (GemmTiles(32, 32, 8, 4, 4),
                                                 GemmTiles(16, 16, 8, 2, 2, layout="strided")))
    monkeypatch.setattr(autotune, "SPLITS", (3,))
    return tmp_path / "autotune"


def test_winners_are_timed_once_then_read_from_the_cache(cache, monkeypatch):
    g = build_graph(SPEC)
    timed = []
    real = autotune.Tuner.time_direction

    def counting(self, ctx, direction, tiles):
        ms = real(self, ctx, direction, tiles)
        timed.append((ctx.layer.name, direction, tiles, ms))
        return ms

    monkeypatch.setattr(autotune.Tuner, "time_direction", counting)
    first = compile_tuned(g, 3, tune=True)
    # conv1 reads the data (no bwd_data): 2 + 3 + 3 + 3 GEMMs
    assert autotune.LAST.tuned == 11 and autotune.LAST.reused == 0
    assert all(ms > 0 and ms != float("inf") for *_, ms in timed)
    # conv's weight gradient also tried split-K: 2 candidates + 1 split each
    assert sum(1 for l, d, *_ in timed if (l, d) == ("conv2", "bwd_weight")) == 3
    records = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    assert len(records) == 11
    assert all(r["device"] == autotune.LAST.device for r in records)
    n = len(timed)
    second = compile_tuned(g, 3, tune=True)
    assert len(timed) == n, "the second compile timed kernels again"
    assert autotune.LAST.tuned == 0 and autotune.LAST.reused == 11
    assert second.opencl_source == first.opencl_source
    # a plain compile (lookup mode) takes the same tiles; NETSPEC_AUTOTUNE=0 the defaults
    assert compile_tuned(g, 3).opencl_source == first.opencl_source
    monkeypatch.setenv("NETSPEC_AUTOTUNE", "0")
    assert compile_tuned(g, 3).opencl_source == compile_tuned(g, 3, tune=False).opencl_source


def test_tuned_kernels_match_the_reference(cache, monkeypatch):
    """Whatever the timings, the tiles the cache holds are what an OpenCLNet compiles with,
    and its kernels agree with the reference. The clock is replaced by a preference for the
    small tile and split-K, so that this test always exercises both."""
    def prefer(self, ctx, direction, tiles):
        return (tiles.BM == 16) + (tiles.splits == 3) * 2 + 1.0

    monkeypatch.setattr(autotune.Tuner, "time_direction", lambda s, c, d, t: 10 - prefer(s, c, d, t))
    g = build_graph(SPEC)
    compile_tuned(g, 3, tune=True)
    chosen = {k: r["tiles"] for k, r in autotune.LAST.chosen.items()}
    assert chosen[("conv2", "bwd_weight")]["splits"] == 3
    assert chosen[("fc3", "fwd")]["BM"] == 16
    net = OpenCLNet(g, seed=4)
    kernels = net.compiled(3).plan.kernels
    assert "conv2_g0_bwd_weight_sum" in kernels            # split-K's reduction
    assert kernels["conv2_g0_fwd"].consts["BK"] == 8
    for train in (True, False):
        check_kernels_in_place(net, g, 3, seed=4, train=train)


def test_tensor_core_precision_tunes_wmma_tiles(cache, monkeypatch):
    """With `precision tf32` the candidates are wmma tiles (TC_CANDIDATES), not the FP32
    ones: the faked clock prefers the 32x64 one, and the compiled GEMMs take it (its BN and
    warp tile), in tf32."""
    tc = (GemmTiles(64, 64, 16, 32, 32, layout="wmma"), GemmTiles(32, 64, 16, 16, 32, layout="wmma"))
    monkeypatch.setattr(autotune, "TC_CANDIDATES", tc)
    timed = []

    def fake(self, ctx, direction, tiles):
        timed.append(tiles)
        return 1.0 if (tiles.BM, tiles.splits) == (32, 0) else 2.0

    monkeypatch.setattr(autotune.Tuner, "time_direction", fake)
    g = build_graph(SPEC.replace("  batch 3\n", "  batch 3\n  precision tf32\n"))
    assert g.recipe.precision == "tf32"
    compiled = compile_tuned(g, 3, tune=True)
    assert timed and all(t.layout == "wmma" for t in timed)
    assert all(r["tiles"]["layout"] == "wmma" and r["tiles"]["BM"] == 32
               for r in autotune.LAST.chosen.values())
    k = compiled.plan.kernels["conv1_g0_fwd"]
    assert k.precision == "tf32" and (k.consts["BN"], k.consts["WTM"]) == (64, 16)
