"""Whole networks against an independent PyTorch implementation written here, with the same
weights: specs/alexnet.net and examples/tiny-alexnet.net.

The PyTorch version follows the paper's Figure 2 directly: groups=2 for the convolutions that
read only their own GPU's maps, LRN applied to each GPU's half separately (torch's
local_response_norm divides α by n, so it gets α·n), overlapping max pooling, dropout masks
re-drawn here from the documented draw order.

Errors are relative: rel(a, b) = max|a − b| / max|b|, b the PyTorch value.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import netspec
from netspec.kernel.philox import uniforms

ROOT = Path(__file__).resolve().parents[2]
ALEXNET = ROOT / "specs" / "alexnet.net"
TINY = ROOT / "examples" / "tiny-alexnet.net"
CONV = ("conv1", "conv2", "conv3", "conv4", "conv5")


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def lrn_per_gpu(h):
    return torch.cat([F.local_response_norm(half, 5, alpha=1e-4 * 5, beta=0.75, k=2.0)
                      for half in h.chunk(2, dim=1)], dim=1)


def torch_alexnet(P, x, conv1_stride, conv1_pad, keep6=None, keep7=None):
    """Logits of AlexNet (Figure 2) in PyTorch. keep6/keep7: dropout keep masks (train time)."""
    h = F.relu(F.conv2d(x, P["conv1.weight"], P["conv1.bias"], stride=conv1_stride,
                        padding=conv1_pad))
    h = F.max_pool2d(lrn_per_gpu(h), 3, 2)
    h = F.relu(F.conv2d(h, P["conv2.weight"], P["conv2.bias"], padding=2, groups=2))
    h = F.max_pool2d(lrn_per_gpu(h), 3, 2)
    h = F.relu(F.conv2d(h, P["conv3.weight"], P["conv3.bias"], padding=1))           # all
    h = F.relu(F.conv2d(h, P["conv4.weight"], P["conv4.bias"], padding=1, groups=2))
    h = F.relu(F.conv2d(h, P["conv5.weight"], P["conv5.bias"], padding=1, groups=2))
    h = F.max_pool2d(h, 3, 2).flatten(1)
    h = F.relu(F.linear(h, P["fc6.weight"], P["fc6.bias"]))
    if keep6 is not None:
        h = h * keep6 / 0.5
    h = F.relu(F.linear(h, P["fc7.weight"], P["fc7.bias"]))
    if keep7 is not None:
        h = h * keep7 / 0.5
    return F.linear(h, P["fc8.weight"], P["fc8.bias"])


def torch_loss_and_grads(params, x, labels, dtype, **kw):
    P = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}
    logits = torch_alexnet(P, torch.tensor(x, dtype=dtype), **kw)
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    grads = torch.autograd.grad(loss, list(P.values()))
    return logits.detach().numpy(), loss.item(), dict(zip(P, (g.numpy() for g in grads)))


def he_parameters(shapes, seed):
    """Weights with std sqrt(2 / fan_in) and small random biases: activations of order one in
    every layer, so that float32 rounding can't flip a max-pool argmax. (At the spec's
    N(0, 0.01) init, maps are 1 + O(1e-5) after the bias-1 layers and a max pool's choice is
    decided by rounding: even PyTorch's float32 gradients are then 5% off its own float64.)"""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            out[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        else:
            out[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def alexnet():
    return netspec.build(ALEXNET, backend="numpy", seed=0)


def check_alexnet_batch2_against_torch(net):
    """The one float32 check of a backend's AlexNet (specs/alexnet.net, batch 2, He-scaled
    weights so activations are of order one) against the PyTorch Figure 2 net here: logits and
    loss within 1e-4, every gradient within 1e-3 (relative to the largest PyTorch value), all in
    float32. Returns (params, x, labels, logits, loss, grads) for further checks."""
    params = he_parameters(net.param_shapes, seed=1)
    net.load_parameters(params)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 224, 224), dtype=np.float32)
    labels = np.array([7, 993])
    ref_logits, ref_loss, ref_grads = torch_loss_and_grads(
        params, x, labels, torch.float32, conv1_stride=4, conv1_pad=2)
    logits = net.forward(x)
    assert logits.dtype == np.float32 and logits.shape == (2, 1000)
    assert rel(logits, ref_logits) <= 1e-4
    loss, grads = net.loss_and_grads(x, labels)
    assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss)
    assert list(grads) == list(ref_grads)
    errors = {k: rel(grads[k], ref_grads[k]) for k in grads}
    assert all(grads[k].dtype == np.float32 for k in grads)
    assert max(errors.values()) <= 1e-3, errors
    return params, x, labels, logits, loss, grads


def test_alexnet_float32_batch2(alexnet):
    check_alexnet_batch2_against_torch(alexnet)


def test_alexnet_float64_at_the_spec_init(alexnet):
    # the spec's own initialisation, in float64 where the max-pool ties above are resolved
    net = netspec.build(ALEXNET, backend="numpy", seed=3, dtype=np.float64)
    params = net.parameters()
    x = np.random.default_rng(4).standard_normal((2, 3, 224, 224))
    labels = np.array([0, 500])
    ref_logits, ref_loss, ref_grads = torch_loss_and_grads(
        params, x, labels, torch.float64, conv1_stride=4, conv1_pad=2)
    assert rel(net.forward(x), ref_logits) <= 1e-12
    loss, grads = net.loss_and_grads(x, labels)
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    errors = {k: rel(grads[k], ref_grads[k]) for k in grads}
    assert max(errors.values()) <= 1e-10, errors


def documented_dropout_masks(graph, seed, n):
    """The masks the net draws on its first training step, re-derived from the documentation
    (netspec/runtime/net.py, runtime/noise.py): the second spawned stream gives one uint64, the
    Philox seed; step 0, images 0..n-1, each dropout layer keyed by its compute-layer index."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
    key = int(rng.integers(0, 1 << 64, dtype=np.uint64))
    return tuple(torch.from_numpy(uniforms(key, 0, i, 0, n, l.out_shape[0])
                                  >= np.float32(l.attrs["p"]))
                 for i, l in enumerate(graph.compute_layers) if l.type == "dropout")


@pytest.mark.parametrize("train", [False, True])
def test_tiny_alexnet_float32(train):
    net = netspec.build(TINY, backend="numpy", seed=5)
    params = he_parameters(net.param_shapes, seed=6)
    net.load_parameters(params)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 64, 64), dtype=np.float32)
    labels = np.array([0, 9, 3, 3])
    keep = documented_dropout_masks(net.graph, 5, 4) if train else (None, None)
    ref_logits, ref_loss, ref_grads = torch_loss_and_grads(
        params, x, labels, torch.float32, conv1_stride=2, conv1_pad=2,
        keep6=keep[0], keep7=keep[1])
    loss, grads = net.loss_and_grads(x, labels, train=train)
    assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss)
    errors = {k: rel(grads[k], ref_grads[k]) for k in grads}
    assert max(errors.values()) <= 1e-3, errors
    if not train:
        assert rel(net.forward(x), ref_logits) <= 1e-4
