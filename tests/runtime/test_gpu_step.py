"""A CUDA training step without host round-trips (issue 26), on the CPU emulator, which sees
every CuPy call (runtime/cuda_emulator/cupy_model.py's `counters`): gradients stay on the device
until read, and what a step moves and waits for is counted. The numbers are checked against the
NumPy reference (float64 oracle, tests/runtime/plan_oracle.py's tolerances)."""
from __future__ import annotations

import shutil
from collections.abc import Mapping

import numpy as np
import pytest

from netspec.ir.build import build_graph
from netspec.runtime.cuda_backend import CudaNet, cuda_emulated
from netspec.runtime.numpy_backend import NumpyNet

pytestmark = pytest.mark.skipif(not cuda_emulated() or shutil.which("g++") is None,
                                reason="counts on the CPU emulator: needs NETSPEC_CUDA_EMULATE=1, "
                                       "no CUDA device and g++")

from netspec.runtime.cuda_emulator import cupy_model as emu  # noqa: E402

TINY = "examples/tiny-alexnet.net"


def batch(graph, n=2, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *graph.input_shape)).astype(np.float32)
    return x, rng.integers(0, graph.classes, n)


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def test_gradients_stay_on_the_device_until_read(root):
    graph = build_graph(root / TINY)
    net = CudaNet(graph, seed=0, devices=[0, 0])
    x, y = batch(graph)
    c0 = emu.counters.snapshot()
    _, grads = net.loss_and_grads(x, y, train=False)
    step = emu.counters.since(c0)
    assert isinstance(grads, Mapping) and set(grads) == set(net.param_shapes)
    assert grads.downloaded == ()
    # what crossed: the logits, probabilities and per-image losses; no gradient
    assert step.d2h_bytes < 4 * 3 * 2 * graph.classes
    ref = NumpyNet(graph, seed=0, dtype=np.float64)
    _, grads_r = ref.loss_and_grads(x.astype(np.float64), y, train=False)
    c0 = emu.counters.snapshot()
    g = grads["fc8.weight"]
    read = emu.counters.since(c0)
    assert read.d2h_bytes == g.nbytes and g.shape == net.param_shapes["fc8.weight"]
    assert grads.downloaded == ("fc8.weight",)
    pulled = grads.pull()
    assert all(rel(pulled[k], grads_r[k]) <= 1e-4 for k in grads_r)
    np.testing.assert_array_equal(pulled["fc8.weight"], g)
    _, fresh = net.loss_and_grads(x, y, train=False, pull=True)
    assert type(fresh) is dict and all(np.array_equal(fresh[k], pulled[k]) for k in fresh)


def test_a_stale_gradient_read_is_refused(root):
    """A later loss_and_grads overwrites the device gradients in place: reading the earlier
    mapping then is an error, not the newer numbers."""
    graph = build_graph(root / TINY)
    net = CudaNet(graph, seed=0, devices=[0, 0])
    x, y = batch(graph)
    _, first = net.loss_and_grads(x, y, train=False)
    kept = first["conv1.bias"]                     # read in time: kept on the host
    net.loss_and_grads(x[::-1].copy(), y[::-1].copy(), train=False)
    np.testing.assert_array_equal(first["conv1.bias"], kept)
    with pytest.raises(RuntimeError, match="overwritten on the device"):
        first["fc8.bias"]


def test_device_update_uses_the_unread_gradients(root):
    """update() after an unread loss_and_grads gives the host SGD rule's weights, computed
    from the same gradients pulled (runtime/sgd.py is the rule every backend is checked by)."""
    from netspec.runtime.sgd import layer_multipliers, sgd_update
    graph = build_graph(root / TINY)
    net = CudaNet(graph, seed=0, devices=[0, 0])
    x, y = batch(graph)
    params = {k: v.copy() for k, v in net.parameters().items()}
    _, grads = net.loss_and_grads(x, y, train=False)
    net.update(0.01, 0.9, 0.0005)
    host = grads.pull()                             # still current: update leaves them
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    lr_mults, decay_mults = layer_multipliers(graph)
    sgd_update(params, host, velocity, 0.01, 0.9, 0.0005, lr_mults, decay_mults)
    after = net.parameters()
    assert all(rel(after[k], params[k]) <= 1e-6 for k in params)
