"""backend="cuda" (CuPy) against the NumPy reference: the same checks as the OpenCL backend
(plan_oracle.py). Needs a CUDA device; elsewhere every test skips, saying why."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from netspec.ir.build import build_graph
from netspec.runtime.cuda_backend import CudaNet, cuda_device_count, cuda_unavailable_reason

from net_specs import BRANCHES, SUBRANGE, edge_case_specs, one_gpu_grouped
from plan_oracle import check_end_to_end, check_kernels_in_place




pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(cuda_unavailable_reason() is not None,
                                 reason=str(cuda_unavailable_reason()))]


@pytest.mark.parametrize("spec", ["specs/alexnet.net", "examples/tiny-alexnet.net"])
def test_network_matches_reference(root, spec):
    g = build_graph(root / spec)
    net = CudaNet(g, seed=3)
    check_kernels_in_place(net, g, 2, seed=3, train=True)
    check_end_to_end(net, g, 2, seed=3, train=True)


def test_alexnet_full_batch_runs(root):
    """The spec's own batch (128): the plan's memory fits and the loss is that of ~uniform
    predictions at initialisation (ln 1000 = 6.9)."""
    g = build_graph(root / "specs/alexnet.net")
    net = CudaNet(g, seed=0)
    import numpy as np
    x = np.random.default_rng(0).standard_normal((128, 3, 224, 224)).astype(np.float32)
    loss, grads = net.loss_and_grads(x, np.arange(128) % 1000, train=True)
    assert abs(loss - np.log(1000)) < 0.1
    assert all(np.isfinite(v).all() for v in grads.values())


@pytest.mark.parametrize("which", ["branches", "subrange", "tiny-grouped-1gpu"])
def test_grouped_and_shared_transfers_match_reference(root, which):
    text = {"branches": BRANCHES, "subrange": SUBRANGE,
            "tiny-grouped-1gpu": one_gpu_grouped((root / "examples/tiny-alexnet.net")
                                                 .read_text())}[which]
    g = build_graph(text)
    net = CudaNet(g, seed=4)
    check_kernels_in_place(net, g, 2, seed=4, train=True)
    check_end_to_end(net, g, 2, seed=4, train=True)


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(edge_case_specs())
def test_edge_cases_match_reference(case):
    text, batch = case
    g = build_graph(text)
    net = CudaNet(g, seed=1)
    for train in (True, False):
        check_kernels_in_place(net, g, batch, seed=1, train=train)
    check_end_to_end(net, g, batch, seed=1, train=True)


def test_device_count_agrees():
    import cupy
    assert cuda_device_count() == cupy.cuda.runtime.getDeviceCount()
