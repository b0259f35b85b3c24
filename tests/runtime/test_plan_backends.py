"""The backends that run the launch plan (runtime/plan_net.py: opencl on PoCL here, cuda on
a device or on netspec's CPU emulator) on whole networks against the NumPy reference, kernel
by kernel in place and end to end (plan_oracle.py): what one layer alone
(tests/ops/test_layers_on_backends.py) can't reach: AlexNet's shapes, a transfer read by
several layers, channel sub-ranges read across GPUs, groups on one GPU, the batch-128 launch
geometry, hypothesis' edge-case networks. Each test runs once per such backend; what only
one backend has (its devices, streams, caches, refusals) stays in its own test file."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from netspec.ir.build import build_graph
from netspec.runtime import backend_class
from netspec.runtime.plan_net import PlanNet

from layercheck import BACKEND_NAMES, backend_unavailable
from net_specs import BRANCHES, FC_HEAD_BATCH_128, SUBRANGE, edge_case_specs, one_gpu_grouped
from plan_oracle import check_end_to_end, check_kernels_in_place


def _runs_the_plan(name: str) -> bool:
    try:
        return issubclass(backend_class(name), PlanNet)
    except ImportError:
        return True             # can't tell without its driver: the test skips, saying why


# the cuda tests keep their `gpu` mark (conftest.py marks them `emulated` on the emulator)
PLAN_BACKENDS = [pytest.param(n, marks=[pytest.mark.gpu] if n == "cuda" else [])
                 for n in BACKEND_NAMES if _runs_the_plan(n)]
# hypothesis' edge-case networks per backend (the emulator runs them faster than PoCL builds)
EDGE_EXAMPLES = {"cuda": 10, "opencl": 5}


@pytest.fixture(params=PLAN_BACKENDS)
def net_class(request):
    why = backend_unavailable(request.param)
    if why:
        pytest.skip(why)
    return backend_class(request.param)


@pytest.mark.parametrize("spec", ["specs/alexnet.net", "examples/tiny-alexnet.net"])
def test_network_matches_reference(root, net_class, spec):
    g = build_graph(root / spec)
    net = net_class(g, seed=3)
    compared = check_kernels_in_place(net, g, 2, seed=3, train=True)
    assert compared >= 4 * len([p for l in g.compute_layers for p in l.parts]) // 2
    check_end_to_end(net, g, 2, seed=3, train=True)


def test_fc_head_at_batch_128_matches_reference(net_class):
    """AlexNet's fc head at the spec's batch (128) on 2 GPUs, kernel by kernel in place and end
    to end (net_specs.FC_HEAD_BATCH_128): the fast stand-in for the full-batch run."""
    g = build_graph(FC_HEAD_BATCH_128)
    net = net_class(g, seed=5)
    check_kernels_in_place(net, g, 128, seed=5, train=True)
    check_end_to_end(net, g, 128, seed=5, train=True)


@pytest.mark.parametrize("which", ["branches", "subrange", "tiny-grouped-1gpu"])
def test_grouped_and_shared_transfers_match_reference(root, net_class, which):
    """Several parts on one GPU (groups), channel sub-ranges read across GPUs, one transfer
    read by three layers: kernel by kernel and end to end against the NumPy reference."""
    text = {"branches": BRANCHES, "subrange": SUBRANGE,
            "tiny-grouped-1gpu": one_gpu_grouped((root / "examples/tiny-alexnet.net")
                                                 .read_text())}[which]
    g = build_graph(text)
    net = net_class(g, seed=4)
    check_kernels_in_place(net, g, 2, seed=4, train=True)
    check_end_to_end(net, g, 2, seed=4, train=True)


def test_edge_cases_match_reference(net_class):
    @settings(max_examples=EDGE_EXAMPLES.get(net_class.backend, 5), deadline=None,
              derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(edge_case_specs())
    def check(case):
        text, batch = case
        g = build_graph(text)
        net = net_class(g, seed=1)
        for train in (True, False):
            check_kernels_in_place(net, g, batch, seed=1, train=train)
        check_end_to_end(net, g, batch, seed=1, train=True)

    check()
