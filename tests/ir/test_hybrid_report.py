"""The compile report of hybrid parallelism: the bytes each GPU sends as the plan moves them,
and data / model / hybrid parallelism of specs/alexnet-owt.net at K = 8 against hand counts."""
from __future__ import annotations

import math
import pathlib

import pytest

from netspec.codegen.plan import build_plan
from netspec.codegen.plan.collectives import collective_bytes
from netspec.ir.build import build_graph
from netspec.ir.scaling import (
    FLOAT_BYTES,
    format_hybrid,
    hybrid_schemes,
    ring_allreduce_bytes,
    sent_bytes_per_gpu,
)

TINY = """\
network hybrid
input   3x12x12
classes 8
gpus    {gpus}

conv    conv1  filters 6  size 3 pad 1  relu  parallel data
maxpool pool1  size 2 stride 2
conv    conv2  filters 8  size 3 pad 1  relu  parallel data
maxpool pool2  size 2 stride 2
fc      fc6    outputs 16 relu
fc      fc7    outputs 8
softmax prob
"""


@pytest.mark.parametrize("gpus, batch", [(2, 8), (4, 8), (4, 10), (8, 16)])
def test_report_counts_what_the_plan_moves(gpus, batch):
    """The report's per-GPU figures, summed, are the plan's copies between GPUs, by kind."""
    g = build_graph(TINY.format(gpus=gpus))
    per_gpu = sent_bytes_per_gpu(g, batch)
    plan = collective_bytes(build_plan(g, batch))
    assert {k: sum(d[k] for d in per_gpu) for k in plan} == plan
    assert plan["all-gather"] > 0 and plan["allreduce"] > 0


@pytest.fixture(scope="module")
def owt():
    return build_graph(path=pathlib.Path(__file__).parents[2] / "specs" / "alexnet-owt.net")


def test_alexnet_owt_is_the_papers_one_gpu_column(owt):
    """torchvision's AlexNet (the one-weird-trick column): 61,100,840 parameters, 9216
    inputs to fc6, the convs data-parallel on 8 GPUs with all their weights on each."""
    assert owt.gpus == 8 and owt.total_params == 61_100_840
    assert math.prod(owt.layer("pool5").out_shape) == 9216
    convs = [l for l in owt.weighted_layers if l.type == "conv"]
    assert all(l.data_parallel and len(l.parts) == 8 for l in convs)
    assert not any(l.data_parallel for l in owt.weighted_layers if l.type == "fc")


def test_alexnet_owt_three_schemes_by_hand(owt):
    d = hybrid_schemes(owt, link_gbps=100, gpu="H200")
    rows = {r["scheme"]: r for r in d["schemes"]}
    k, b = 8, 1024
    # data: a ring allreduce of all 61.1 M gradients
    assert rows["data"]["sent_bytes_per_gpu"] == ring_allreduce_bytes(61_100_840 * 4, k)
    # hybrid: each GPU's 128 images of pool5 to 7 others, their gradients back; the convs'
    # 2,469,696 gradients allreduced (2·7/8 of them, up to the chunks' rounding); fc6 and fc7
    # send 512 neurons x 1024 images to 7 GPUs and send the gradients of the 7 others' back,
    # and GPU 0 (the softmax's) receives fc8's 125 neurons from 7 and sends their gradients
    # back
    by = rows["hybrid"]["by_collective"]
    assert by["all-gather"] == by["reduce-scatter"] == 7 * 128 * 9216 * FLOAT_BYTES
    conv = 2_469_696 * FLOAT_BYTES
    assert abs(by["allreduce"] - 2 * 7 / 8 * conv) <= 10 * 7 * FLOAT_BYTES
    assert by["transfer"] == (2 * 2 * 7 * 512 + 7 * 125) * b * FLOAT_BYTES
    # the comparison the paper makes: hybrid sends least, and data-parallel's fc gradients
    # are most of its traffic
    assert rows["hybrid"]["sent_bytes_per_gpu"] < rows["data"]["sent_bytes_per_gpu"] < \
        rows["model"]["sent_bytes_per_gpu"]
    for r in rows.values():
        assert r["comm_ms"] == pytest.approx(r["sent_bytes_per_gpu"] * 8 / 100e9 * 1e3)
        if not r.get("overlapped"):
            assert r["step_ms"] == pytest.approx(r["comm_ms"] + r["compute_ms"])
        assert r["speedup"] == pytest.approx(k * d["one_gpu_step_ms"] / r["step_ms"])
    # scheme (b) hides the fc exchange (all but the allreduce) behind the fc compute
    assert rows["hybrid"]["compute_ms"] < rows["hybrid (b)"]["step_ms"] < rows["hybrid"]["step_ms"]
    text = format_hybrid(d)
    assert "hybrid" in text and "6.25x" in text and "modelled" in text
