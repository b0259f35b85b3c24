"""A join that names one input twice (`add s from c1, c1`, as an ONNX `Add(x, x)` or a
darknet `[shortcut]` to the layer before): the output is 2·c1 and c1's gradient counts both
reads, on every backend, against PyTorch. The NumPy runtime freed c1 twice (KeyError) before."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import netspec

from layercheck import BACKEND_NAMES, backend_unavailable

SPEC = """network twice
input 3x6x6
classes 4
init weight gauss(0.2) bias 0.1
conv c1 filters 4 size 3 pad 1
add s from c1, c1
fc f outputs 4
softmax prob
"""


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_add_of_one_input_twice_matches_pytorch(backend):
    why = backend_unavailable(backend)
    if why:
        pytest.skip(why)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    labels = np.array([1, 3])
    net = netspec.build(SPEC, backend=backend, seed=0)
    p = net.parameters()
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in p.items()}
    c = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), t["c1.weight"],
                                   t["c1.bias"], padding=1)
    logits = (c + c).flatten(1) @ t["f.weight"].T + t["f.bias"]
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    loss.backward()
    np.testing.assert_allclose(net.forward(x, train=False), logits.detach().numpy(),
                               rtol=1e-5, atol=1e-5)
    got_loss, grads = net.loss_and_grads(x, labels, train=False)
    assert abs(float(got_loss) - loss.item()) < 1e-5
    for name, tensor in t.items():
        ref = tensor.grad.numpy()
        np.testing.assert_allclose(np.asarray(grads[name]), ref, rtol=1e-4,
                                   atol=1e-5 * np.abs(ref).max(), err_msg=name)
