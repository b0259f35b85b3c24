"""Which conv directions of a network run as Winograd on a GPU (kernel/winograd_gpu.py): the
choice `compile_network` makes for every GEMM the caller's tiles don't name, from the same
cycle estimate that ranks GEMM tiles (kernel/gemm.py `choose_gemm`), with the transform
matrices of codegen/winograd.py. `netspec bench --sass` models the result from machine code.

Candidates (CANDIDATES): r = 3 by F(2×2, 3×3) only, r = 5 by F(2×2, 5×5) or F(3×3, 5×5);
the weight gradient (WGRAD_CANDIDATES) 3×3 only. Larger tiles cut more multiplies (F(4×4,
3×3): 4× against 2.25×) but carry ten times the error (codegen/winograd.py's ERROR_BOUND: 2e-5
against 2e-6 of the largest value), beyond what an FP32 path should add to a 3×3 conv; for
5×5, 2e-5 is the least any transform has, F(2×2, 5×5) and F(3×3, 5×5) alike, and the larger
tile expands the data less (49/9 against 36/4 floats per output), so both are candidates.
"""
from __future__ import annotations

from ..kernel import PartContext
from ..kernel.winograd_gpu import WinogradTiles, choose_wgrad, choose_winograd, conv_direction
from .winograd import matrices

CANDIDATES = {3: (2,), 5: (2, 3)}
# the weight gradient sums over every tile of the batch, which F(2×2, 5×5) leaves with 8e-5
# of the largest value (ERROR_BOUND): 3×3 only
WGRAD_CANDIDATES = {3: (2,)}
DIRECTIONS = ("fwd", "bwd_data", "bwd_weight")


def winograd_tiles(graph, batch: int, tiles: dict, sm_count: int,
                   candidates: dict | None = None) -> dict:
    """`tiles` (layer -> {direction: GemmTiles}) with a WinogradTiles added for each stride-1
    conv direction it doesn't name where the estimate says Winograd wins (the layer's first
    part decides for all: its parts have one shape). FP32 only: a `precision tf32|bf16`
    network keeps its tensor-core GEMMs."""
    cands = CANDIDATES if candidates is None else candidates
    out = {name: dict(d) for name, d in tiles.items()}
    if graph.recipe.precision != "fp32":
        return out          # tf32 / bf16: the tensor-core GEMMs, whose rounding is stated
    for layer in graph.compute_layers:
        if layer.type != "conv" or layer.attrs["size"] not in cands:
            continue
        r = layer.attrs["size"]
        for direction in DIRECTIONS:
            if direction in out.get(layer.name, {}):
                continue
            ctx = PartContext(layer, layer.parts[0], batch, True, {}, sm_count=sm_count)
            conv = conv_direction(ctx, direction)
            if conv is None:
                continue
            if direction == "bwd_weight":
                wc = WGRAD_CANDIDATES if candidates is None else candidates
                best = r in wc and choose_wgrad(conv, r, wc[r], sm_count)
                m, slices = best or (None, 1)
            else:
                m, slices = choose_winograd(conv, r, cands[r], sm_count), 1
            if m:
                out.setdefault(layer.name, {})[direction] = WinogradTiles(
                    m, r, *matrices(m, r), slices=slices)
    return out
