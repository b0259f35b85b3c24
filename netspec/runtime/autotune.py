"""Tile sizes chosen by timing: a small bounded search per GEMM, cached on disk per device.

What is tuned: every GEMM-shaped kernel (conv and fc: `fwd`, `bwd_weight`, `bwd_data`), one
part per layer (the layer's other parts have the same shapes, up to an uneven split). For each,
a fixed short list of `GemmTiles` candidates (CANDIDATES; TC_CANDIDATES, the wmma tiles, when
the recipe's precision is tf32 or bf16; for the weight gradient then the best of those with
split-K slice counts SPLITS) is rendered in the tuning device's dialect, built,
run on random data and timed by the device's own clock (OpenCL: profiling events): one untimed
launch, then the median of REPEATS. The kernel's direction may be several launches (split-K's
GEMM and its reduction); their times add up.

The winner is stored as one small JSON file under `user_cache_dir()/autotune/`, named by a
hash of the direction, the GEMM's kernel text and shape constants (not its name: two layers of
the same shape share it), TUNE_VERSION and the device's identity (platform, device, driver),
so a later compile on that device reuses it without timing anything.

When: `compile_tuned(..., tune=True)` (`netspec compile --tune`, `netspec bench --tune`)
times what is not cached yet, within `budget_s` (what is left over is tuned by the next
`--tune`). Every other compile through the runtime (the kernel backends' own, so `netspec
train` and tests) only reads the cache, and only when that folder exists, so it costs nothing
until someone has tuned. NETSPEC_AUTOTUNE=0 turns both off; NETSPEC_AUTOTUNE=1 makes every
compile tune what is missing, within NETSPEC_AUTOTUNE_BUDGET seconds (default 60).

Where: the backend says (`Net.kernel_timer()`, a `KernelTimer`). A net compiles with the tiles
its own class's timer chose; a compile without a backend (`netspec compile --tune`) asks the
registered backends in order and takes the first timer offered. Today that is the OpenCL
backend's default device (`find_device`, NETSPEC_OPENCL_DEVICE), and the CUDA backend asks
for the same one, so its rendering of a plan takes the tiles tuned there.

This is runtime's, not codegen's, because it runs kernels: codegen's `compile_network` takes
the tiles as an argument and never executes anything.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from ..cachedir import cache_dir
from ..codegen.compile import Compiled, compile_network
from ..kernel import PartContext
from ..kernel.gemm import TC_VARIANTS, VARIANTS, GemmTiles

TUNE_VERSION = 3                        # 3: GemmTiles.layout, the blocked family
DIRECTIONS = ("fwd", "bwd_weight", "bwd_data")
# The blocked family (kernel/gemm.py VARIANTS, the first being the default) and the earlier
# strided tiles: square and skewed, 64 to 256 work-items, all within CUDA's 1024 threads and
# 48 KiB of shared memory. splits=0: the split-K count choose_gemm gives for the device.
CANDIDATES = (
    *VARIANTS,
    GemmTiles(64, 64, 16, 4, 4, layout="strided"),
    GemmTiles(32, 32, 16, 4, 4, layout="strided"),
    GemmTiles(128, 64, 8, 8, 4, layout="strided"),
    GemmTiles(64, 128, 8, 4, 8, layout="strided"),
)
# with `precision tf32 | bf16` the GEMMs are tensor-core ones, which take only wmma tiles
# (kernel/gemm.py TC_VARIANTS; other dialects run their portable blocked equivalent)
TC_CANDIDATES = TC_VARIANTS
SPLITS = (1, 4, 16)
REPEATS = 3
_KEY_DROPPED = {"BM", "BN", "BK", "TM", "TN", "TX", "TY", "THREADS", "KS"}


def autotune_dir() -> Path:
    return cache_dir("autotune")


def mode() -> str:
    """'off', 'lookup' or 'tune', from NETSPEC_AUTOTUNE (unset: lookup)."""
    v = os.environ.get("NETSPEC_AUTOTUNE", "").strip().lower()
    if v in ("0", "off", "false", "no"):
        return "off"
    if v in ("1", "on", "true", "yes"):
        return "tune"
    return "lookup"


class KernelTimer(Protocol):
    """A device a backend tunes on (`Net.kernel_timer()`).

    identity: the device in words (platform, device, driver): it keys the cache, so two
    devices never share a winner.
    time(calls, sizes, repeats): the median over `repeats` runs (after one untimed) of the
    launches `calls` (kernel.Call, in order) on buffers of random floats, `sizes[role]`
    floats each, in ms by the device's own clock; inf when they can't build or run there."""

    identity: str

    def time(self, calls: list, sizes: dict, repeats: int) -> float: ...


@dataclass
class TuneStats:
    """What one resolve did: records read from disk, GEMMs timed, seconds spent timing."""

    device: str = ""
    reused: int = 0
    tuned: int = 0
    skipped: int = 0                    # left untuned: the budget ran out
    seconds: float = 0.0
    chosen: dict = field(default_factory=dict)   # (layer, direction) -> record


LAST = TuneStats()                      # the most recent resolve's, for tests and the CLI


def describe_stats(st: TuneStats) -> str:
    if not st.device:
        return "autotune: no OpenCL device, default tiles"
    lines = [f"autotune on {st.device}: {st.tuned} GEMM(s) timed in {st.seconds:.1f} s, "
             f"{st.reused} from the cache{f', {st.skipped} left for the next --tune (budget)' if st.skipped else ''}"]
    for (layer, direction), rec in st.chosen.items():
        t = rec["tiles"]
        split = f" split {t['splits']}" if t.get("splits") else ""
        lines.append(f"  {layer:10s} {direction:10s} {t['BM']}x{t['BN']}x{t['BK']} "
                     f"{t['TM']}x{t['TN']} {t.get('layout', 'strided')}{split}  "
                     f"{rec['ms']:.2f} ms")
    return "\n".join(lines)


def default_timer() -> KernelTimer | None:
    """The first kernel timer a registered backend offers, in registration order."""
    from . import backend_class, backend_names
    for name in backend_names():
        try:
            timer = backend_class(name).kernel_timer()
        except ImportError:
            continue
        if timer is not None:
            return timer
    return None


def resolve_tiles(graph, batch: int, tiles: dict | None, tune: bool | None,
                  budget_s: float | None = None, backend=None) -> dict:
    """The tiles to compile with: `tiles` as given, else cached (and, when tuning, newly
    timed) winners on the device `backend` (a Net subclass) tunes on, or without one the
    default timer's; {} when there is none or autotune is off."""
    global LAST
    LAST = TuneStats()
    if tiles:
        return tiles
    m = mode()
    if tune is False or (tune is None and m == "off"):
        return {}
    timing = tune is True or m == "tune"
    if not timing and not autotune_dir().is_dir():
        return {}
    timer = backend.kernel_timer() if backend is not None else default_timer()
    if timer is None:        # nothing to tune on, nothing cached for it
        return {}
    if budget_s is None:
        budget_s = float(os.environ.get("NETSPEC_AUTOTUNE_BUDGET", "60"))
    return Tuner(timer, timing=timing, budget_s=budget_s).tiles_for(graph, batch)


def compile_tuned(graph, batch_size: int | None = None, tiles: dict | None = None, *,
                  tune: bool | None = None, tune_budget_s: float | None = None,
                  backend=None, sm_count: int | None = None) -> Compiled:
    """codegen's `compile_network` (for `sm_count` multiprocessors, default 132) with the tiles `resolve_tiles` gives: `tiles` if given,
    else autotuned ones. `tune=True` times the candidates not cached yet on the device
    `backend` (a Net subclass; default: the first registered one that tunes) tunes on, within
    `tune_budget_s`; None reads the cache only (NETSPEC_AUTOTUNE decides), False uses the
    default tiles."""
    batch = batch_size or graph.recipe.batch_size
    tiles = resolve_tiles(graph, batch, tiles, tune, tune_budget_s, backend)
    if sm_count is None:
        return compile_network(graph, batch, tiles)
    return compile_network(graph, batch, tiles, sm_count)


class Tuner:
    """The bounded search of the module doc, on one `KernelTimer`."""

    def __init__(self, timer: KernelTimer, timing: bool, budget_s: float = 60.0):
        self.timer, self.timing, self.budget_s = timer, timing, budget_s
        self.identity = timer.identity
        self.stats = LAST
        self.stats.device = self.identity

    # -- the search ------------------------------------------------------------------------
    def tiles_for(self, graph, batch: int) -> dict:
        start = time.perf_counter()
        out: dict[str, dict] = {}
        for layer in graph.compute_layers:
            if not layer.op.tuned:
                continue
            part = layer.parts[0]
            input_grad = any(not graph.layer(s.layer).replicated for s in part.sources)
            for direction in DIRECTIONS:
                if direction == "bwd_data" and not input_grad:
                    continue
                ctx = PartContext(layer, part, batch, input_grad, {},
                                  precision=graph.recipe.precision)
                key = self.key(ctx, direction)
                rec = self.load(key)
                if rec is not None:
                    self.stats.reused += 1
                elif not self.timing:
                    continue
                elif time.perf_counter() - start > self.budget_s:
                    self.stats.skipped += 1
                    continue
                else:
                    rec = self.search(ctx, direction, key)
                    self.stats.tuned += 1
                out.setdefault(layer.name, {})[direction] = GemmTiles(**rec["tiles"])
                self.stats.chosen[(layer.name, direction)] = rec
        self.stats.seconds = time.perf_counter() - start
        return out

    def search(self, ctx: PartContext, direction: str, key: str) -> dict:
        results = []
        for cand in CANDIDATES if ctx.precision == "fp32" else TC_CANDIDATES:
            results.append((self.time_direction(ctx, direction, cand), cand))
        best_ms, best = min(results, key=lambda r: r[0])
        if direction in ctx.layer.op.split_k:
            for s in SPLITS:
                cand = replace(best, splits=s)
                results.append((self.time_direction(ctx, direction, cand), cand))
            best_ms, best = min(results, key=lambda r: r[0])
        rec = {"version": TUNE_VERSION, "device": self.identity, "direction": direction,
               "layer": ctx.layer.name, "batch": ctx.batch, "tiles": asdict(best), "ms": best_ms,
               "candidates": [{"tiles": asdict(c), "ms": ms} for ms, c in results]}
        self.store(key, rec)
        return rec

    # -- the cache -------------------------------------------------------------------------
    def key(self, ctx: PartContext, direction: str) -> str:
        gemm = self.calls(ctx, direction, GemmTiles())[0].kernel
        consts = {k: v for k, v in sorted(gemm.consts.items()) if k not in _KEY_DROPPED}
        text = json.dumps([TUNE_VERSION, direction, gemm.template, consts, self.identity],
                          default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def load(self, key: str) -> dict | None:
        try:
            rec = json.loads((autotune_dir() / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        return rec if rec.get("version") == TUNE_VERSION else None

    def store(self, key: str, rec: dict) -> None:
        d = autotune_dir()
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(rec, indent=1) + "\n")
        os.replace(tmp, d / f"{key}.json")      # atomic: a concurrent reader sees old or new

    # -- timing on the device --------------------------------------------------------------
    @staticmethod
    def calls(ctx: PartContext, direction: str, tiles: GemmTiles) -> list:
        op = ctx.layer.op
        c = replace(ctx, tiles={direction: tiles})
        every = (op.forward_kernels(c) if direction == "fwd" else op.backward_kernels(c))
        name = f"{c.prefix}_{direction}"
        return [call for call in every
                if call.kernel.name == name or call.kernel.name.startswith(name + "_")]

    def time_direction(self, ctx: PartContext, direction: str, tiles: GemmTiles) -> float:
        """Median ms of the direction's launches with these tiles (inf if they can't run)."""
        calls = self.calls(ctx, direction, tiles)
        return self.timer.time(calls, self.role_sizes(replace(ctx, tiles={direction: tiles})),
                               REPEATS)

    @staticmethod
    def role_sizes(c: PartContext) -> dict:
        layer, part = c.layer, c.part
        wshape = layer.weight_shape(part)
        n_in, n_out = c.in_elements, c.out_elements
        sizes = {"x": n_in, "dx": n_in, "y": n_out, "dy": n_out,
                 "w": math.prod(wshape), "dw": math.prod(wshape),
                 "b": part.channels, "db": part.channels}
        sizes.update(layer.op.scratch_buffers(c))
        return sizes
