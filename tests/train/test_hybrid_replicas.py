"""K processes (`mpirun -n K`, data parallelism over replicas) of a hybrid spec on G logical
GPUs each (data-parallel convolutions, model-parallel fc layers inside a process): the
weights after a few steps equal one process's, and every rank holds the same."""
from __future__ import annotations

import re

import numpy as np

from test_distributed import assert_close, mpi, replicas_run, single
from trainkit import tiny_spec


def hybrid_tiny(gpus: int) -> str:
    """tiny-alexnet with its convs data-parallel (their `connect` dropped) and its fc layers
    split over `gpus` logical GPUs; a global batch of 12; dropout on in the fc part."""
    text = tiny_spec(batch="12", epochs="2").replace("gpus    2", f"gpus    {gpus}")
    lines = []
    for line in text.splitlines():
        if line.startswith("conv "):
            line = re.sub(r"\s+connect \S+", "", line) + "  parallel data"
        lines.append(line)
    return "\n".join(lines) + "\n"


@mpi
def test_two_processes_of_two_logical_gpus_equal_one_process(folder, tmp_path):
    """The oracle: one process of the same net on one GPU (the same initial weights: the
    hybrid spec's parameters have the 1-GPU names and shapes)."""
    spec, one = tmp_path / "hybrid.net", tmp_path / "one.net"
    spec.write_text(hybrid_tiny(2))
    one.write_text(hybrid_tiny(1).replace("  parallel data", ""))
    want, _ = single(one, folder, tmp_path / "one", "numpy", 3)
    ranks, metrics = replicas_run(2, spec, folder, tmp_path / "k", "numpy", 3)
    for r in range(2):
        assert_close(ranks[r], want)
        assert all(np.array_equal(ranks[r][n], ranks[0][n]) for n in want), f"rank {r}"
    assert metrics[-1]["replicas"] == 2
    assert metrics[-1]["allreduce_bytes_per_step"] == 4 * sum(v.size for v in want.values())


def test_the_hybrid_spec_is_what_it_says():
    from netspec.ir.build import build_graph
    g = build_graph(hybrid_tiny(2))
    assert [l.name for l in g.weighted_layers if l.data_parallel] == \
        ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [len(l.parts) for l in g.weighted_layers] == [2] * 8
