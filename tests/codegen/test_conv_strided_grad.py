"""The conv data gradient with stride > 1 (one GEMM per stride phase, ops/conv.py) on OpenCL
against the NumPy reference, for a conv that does not read the network input: its dx is
computed, and compared, as the gradient handed to the layer below."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyopencl", reason="pyopencl is not installed")
from netspec.ir.build import build_graph  # noqa: E402
from netspec.runtime.opencl_backend import OpenCLNet, find_device  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from plan_oracle import check_kernels_in_place, close  # noqa: E402

if find_device() is None:
    pytest.skip("no OpenCL device", allow_module_level=True)


def spec(size: int, stride: int, pad: int, gpus: int) -> str:
    return f"""
network strided
input 3x15x15
classes 4
gpus {gpus}
init weight gauss(0.2) bias 0.05
conv conv1 filters 4 size 3 pad 1 relu
conv conv2 filters 6 size {size} stride {stride} pad {pad} relu connect all
fc fc3 outputs 4 connect all
softmax prob
train
  batch 2
"""


@pytest.mark.parametrize("size, stride, pad, gpus", [(5, 2, 2, 1), (4, 3, 0, 2), (3, 2, 0, 1)])
def test_strided_data_gradient_matches_reference(size, stride, pad, gpus):
    g = build_graph(spec(size, stride, pad, gpus))
    net = OpenCLNet(g, seed=5)
    plan = net.compiled(2).plan
    phased = [k for k in plan.kernels.values() if k.layer == "conv2" and "bwd_data" in k.name]
    assert phased and phased[0].global_size[2] == stride * stride   # one GEMM per phase
    assert check_kernels_in_place(net, g, 2, seed=5, train=True) > 0
    # and through the whole network: conv1's weight gradient only sees conv2's dx
    from netspec.runtime.numpy_backend import NumpyNet
    ref = NumpyNet(g, seed=5)
    net.load_parameters(ref.parameters())
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 15, 15)).astype(np.float32)
    labels = rng.integers(0, 4, 2)
    _, grads = net.loss_and_grads(x, labels)
    _, ref_grads = ref.loss_and_grads(x, labels)
    for name in ("conv1.weight", "conv1.bias"):
        close(np.asarray(grads[name]), np.asarray(ref_grads[name]), name)
