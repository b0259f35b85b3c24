"""Per kernel kind (layer type x kernel role) GFLOP/s and ms of one or more
benchmarks/vs_pytorch.py results, side by side: how a kernel change moved each kind on the
OpenCL device.

    python benchmarks/kernel_kinds.py benchmarks/results/BEFORE.json benchmarks/results/AFTER.json

A kind's GFLOP/s is its kernels' flops over their summed median ms per step; a split-K or
two-stage reduction's second kernel (`..._sum`) counts in its first kernel's kind, with the
first kernel's flops only (the same work as before the split).
"""
from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kinds(path: str, backend: str = "opencl") -> dict:
    from netspec.ir.build import build_graph
    d = json.loads(Path(path).read_text())
    run = next(r for r in d["runs"] if r["backend"] == backend)
    graph = build_graph(ROOT / d["spec"]) if not Path(d["spec"]).is_absolute() \
        else build_graph(d["spec"])
    types = {l.name: l.type for l in graph.layers}
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for k in run["netspec"]["kernels"]:
        role = re.sub(r"^.*?_g\d+_|^[^_]+_", "", k["name"]) if k["layer"] in types else k["name"]
        second = role.endswith("_sum")
        role = re.sub(r"_\d+$", "", role.removesuffix("_sum"))      # dy_acc_130 -> dy_acc
        kind = f"{types[k['layer']]} {role}" if k["layer"] in types else k["name"].split("_")[0]
        out[kind][0] += k["ms"]
        out[kind][1] += 0 if second else k["flops"]
    return dict(out), run["batch_size"], run["netspec"]["step_ms"]


def main(paths: list[str]) -> None:
    runs = [kinds(p) for p in paths]
    names = sorted(set().union(*(r[0] for r in runs)))
    print("| kernel kind | " + " | ".join(f"{Path(p).stem} ms | GFLOP/s" for p in paths) + " |")
    print("|---|" + "---:|---:|" * len(paths))
    for n in names:
        cells = []
        for r, _, _ in runs:
            ms, fl = r.get(n, (None, 0))
            cells += ["" if ms is None else f"{ms:.1f}",
                      "" if not ms or not fl else f"{fl / (ms * 1e6):.2f}"]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("| whole step | " + " | ".join(f"{s:.0f} | " for _, _, s in runs) + "|")


if __name__ == "__main__":
    main(sys.argv[1:])
