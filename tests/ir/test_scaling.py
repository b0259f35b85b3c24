"""The data-parallel communication table (netspec/ir/scaling.py) against hand computations."""
import json

import pytest
from click.testing import CliRunner

from netspec.cli import main
from netspec.ir.build import build_graph
from netspec.ir.scaling import GPUS, GpuPeak, data_parallel, roofline_step_seconds

ALEXNET_PARAMS = 60_965_224          # the paper's layers, summed by hand (see README)


@pytest.fixture(scope="module")
def alexnet(root):
    return build_graph(str(root / "specs" / "alexnet.net"))


@pytest.fixture(scope="module")
def root():
    import pathlib
    return pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("k,link", [(2, 100), (8, 100), (32, 400)])
def test_ring_allreduce_bytes_and_time_for_alexnet(alexnet, k, link):
    d = data_parallel(alexnet, k, link)
    grad = ALEXNET_PARAMS * 4                                   # 243,860,896 bytes
    assert d["gradient_bytes"] == grad
    assert d["sent_bytes_per_replica_per_step"] == pytest.approx(2 * (k - 1) / k * grad)
    assert d["comm_ms"] == pytest.approx(2 * (k - 1) / k * grad * 8 / (link * 1e9) * 1e3)
    # K = 2 on 100 Gb/s: each replica sends the whole 243.9 MB once: 19.5 ms
    if (k, link) == (2, 100):
        assert d["comm_ms"] == pytest.approx(19.5089, abs=1e-3)
    # fc6-fc8 hold 58,631,144 of the parameters (4096·9216 + 4096·4096 + 1000·4096 + biases)
    fc = 4096 * 9216 + 4096 + 4096 * 4096 + 4096 + 1000 * 4096 + 1000
    assert d["fc_gradient_fraction"] == pytest.approx(fc / ALEXNET_PARAMS)
    assert d["conv_only_sent_bytes"] == pytest.approx(2 * (k - 1) / k * (ALEXNET_PARAMS - fc) * 4)


def test_roofline_is_the_flop_bound_when_memory_is_free(alexnet):
    """With unlimited bandwidth a step costs 2 FLOPs per MAC: three passes of each weighted
    layer's MACs (output pixels × filters × inputs per filter, from the paper's shapes) but two
    for conv1 (no gradient for the images), and two of the LRNs' (forward, backward)."""
    gpu = GpuPeak("compute only", 67e12, float("inf"))
    conv1 = 55 * 55 * 96 * 11 * 11 * 3
    weighted = [conv1, 27 * 27 * 256 * 5 * 5 * 48, 13 * 13 * 384 * 3 * 3 * 256,
                13 * 13 * 384 * 3 * 3 * 192, 13 * 13 * 256 * 3 * 3 * 192,
                9216 * 4096, 4096 * 4096, 4096 * 1000]
    lrn = alexnet.layer("norm1").macs + alexnet.layer("norm2").macs
    macs = 3 * sum(weighted) - conv1 + 2 * lrn
    assert roofline_step_seconds(alexnet, 64, gpu) == pytest.approx(2 * macs * 64 / 67e12)
    # and slower when memory bandwidth bites
    assert roofline_step_seconds(alexnet, 64, GPUS["H200"]) >= 2 * macs * 64 / 67e12


def test_alexnet_is_communication_bound_on_100_gbps(alexnet):
    d = data_parallel(alexnet, 8, 100)
    assert d["comm_to_compute"] > 1
    assert d["conv_only_comm_ms"] < d["comm_ms"] / 20


def test_compile_reports_the_table_and_json(root):
    spec = str(root / "specs" / "alexnet.net")
    r = CliRunner().invoke(main, ["compile", spec, "--replicas", "2", "--link-gbps", "100"])
    assert r.exit_code == 0, r.output
    assert "ring allreduce sends 243.9 MB per replica per step: 19.5 ms" in r.output
    r = CliRunner().invoke(main, ["compile", spec, "--json", "--replicas", "8",
                                  "--link-gbps", "400", "--gpu", "A100"])
    d = json.loads(r.output)["data_parallel"]
    assert d["replicas"] == 8 and d["link_gbps"] == 400 and "A100" in d["gpu"]
    assert d["sent_bytes_per_replica_per_step"] == pytest.approx(1.75 * ALEXNET_PARAMS * 4)
    r = CliRunner().invoke(main, ["compile", spec, "--replicas", "3"])
    assert "does not divide" in r.output
    r = CliRunner().invoke(main, ["compile", spec, "--replicas", "0"])
    assert r.exit_code == 2 and "--replicas" in r.output
