"""Compile time per line does not grow with the spec's size (parse, IR, launch plan, memory
plan: what `netspec compile` does). A property over generated specs: each is a random block of
layer lines repeated k and 8k times, compiled in this process and timed in CPU seconds, small
and large interleaved and the fastest of three kept, so that a loaded machine slows both alike.
Linear work keeps the per-line ratio near 1 (below, with the fixed costs); quadratic work makes
it ~8. The figures themselves are benchmarks/compile_scaling.py's."""
from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netspec.codegen.compile import compile_network
from netspec.ir.build import build_graph

LINES = {
    "relu": "relu r{b}x{i}",
    "conv": "conv c{b}x{i} filters 4 size 3 pad 1 relu",
    "conv1x1": "conv c{b}x{i} filters 4 size 1",
    "lrn": "lrn n{b}x{i} size 3",
    "dropout": "dropout d{b}x{i} p 0.5",
    "fc": None,        # placeholders that the block turns into a fan-in layer
}


@st.composite
def blocks(draw):
    kinds = draw(st.lists(st.sampled_from(["relu", "conv", "conv1x1", "lrn", "dropout"]),
                          min_size=2, max_size=6))
    fanin = draw(st.booleans())        # end the block with a conv reading its last two layers
    gpus = draw(st.sampled_from([1, 2]))
    return kinds, fanin, gpus


def spec(kinds, fanin, gpus, repeats: int) -> tuple[str, int]:
    lines = ["network gen", "input 4x6x6", "classes 4", f"gpus {gpus}"]
    for b in range(repeats):
        names = []
        for i, kind in enumerate(kinds):
            lines.append(LINES[kind].format(b=b, i=i))
            names.append(lines[-1].split()[1])
        if fanin:
            lines.append(f"conv j{b} filters 4 size 1 from {names[-1]},{names[-2]}")
            # the layer before last is read by both: keep the chain going through the join
    lines += ["fc out outputs 4", "softmax prob", "train", "  batch 8"]
    return "\n".join(lines) + "\n", len(lines)


def cpu_seconds(text: str) -> float:
    t = time.process_time()
    compile_network(build_graph(text), None)
    return time.process_time() - t


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks())
def test_compile_time_per_line_does_not_grow(block):
    kinds, fanin, gpus = block
    per_block = len(kinds) + fanin
    small, n_small = spec(kinds, fanin, gpus, max(1, 100 // per_block))
    large, n_large = spec(kinds, fanin, gpus, 8 * max(1, 100 // per_block))
    compile_network(build_graph(small), None)           # imports and caches out of the way
    best = {"small": float("inf"), "large": float("inf")}
    for _ in range(3):
        best["small"] = min(best["small"], cpu_seconds(small))
        best["large"] = min(best["large"], cpu_seconds(large))
    ratio = (best["large"] / n_large) / (best["small"] / n_small)
    assert ratio < 2.5, (f"compile time per line grew {ratio:.1f}x from {n_small} to "
                         f"{n_large} lines ({best})")
