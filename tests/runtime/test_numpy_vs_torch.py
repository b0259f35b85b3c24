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
from netspec.runtime.numpy_backend import NumpyNet

from near_ties import assert_no_near_ties, reference_following

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


FLOAT64_MARGIN = 1e-9      # float64 rounding is ~1e-16 of a value: far below this


def check_float32_against_torch(net, params, x, labels, *, train=False, keep=(None, None),
                                **torch_kw):
    """A float32 backend `net` (numpy or cpu) against PyTorch without a decision left to
    rounding: PyTorch in float64 against the float64 NumPy reference, on inputs asserted to
    hold no max-pool or ReLU decision within FLOAT64_MARGIN of a tie (tests/near_ties.py),
    within 1e-10; then `net` in float32: its loss within 1e-5 of PyTorch's, its gradients
    within 1e-4 of their largest value of the float64 reference deciding as `net` did
    (float32 rounding, near 1e-6, never a flipped decision). Returns (loss, grads,
    ref_grads)."""
    net.load_parameters(params)
    seed = 11
    assert_no_near_ties(net.graph, params, x, noise_seed=seed if train else None,
                        margin=FLOAT64_MARGIN)
    _, ref_loss, ref_grads = torch_loss_and_grads(params, x, labels, torch.float64,
                                                  keep6=keep[0], keep7=keep[1], **torch_kw)
    net64 = NumpyNet(net.graph, dtype=np.float64)
    net64.load_parameters({k: v.astype(np.float64) for k, v in params.items()})
    net64.rng = np.random.default_rng(seed)
    loss64, grads64 = net64.loss_and_grads(x.astype(np.float64), labels, train=train)
    assert abs(loss64 - ref_loss) <= 1e-10 * abs(ref_loss)
    assert max(rel(grads64[k], ref_grads[k]) for k in grads64) <= 1e-10
    if not isinstance(net, NumpyNet):
        # a plan backend (opencl, cuda) runs no per-part forward to follow: against PyTorch
        # float64 at float32's tolerances (loss 1e-4, gradients 1e-3 of their largest value)
        net.rng = np.random.default_rng(seed)
        loss, grads = net.loss_and_grads(x, labels, train=train)
        assert list(grads) == list(ref_grads)
        assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss)
        assert max(rel(grads[k], ref_grads[k]) for k in grads) <= 1e-3
        return loss, dict(grads), ref_grads
    loss, grads, _, following, _ = reference_following(net, x, labels, train=train,
                                                       noise_seed=seed)
    assert list(grads) == list(following) == list(ref_grads)
    assert max(rel(grads[k], following[k]) for k in grads) <= 1e-4
    assert all(grads[k].dtype == np.float32 for k in grads)
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    return loss, grads, ref_grads


def check_alexnet_batch2_against_torch(net):
    """The one float32 check of a backend's AlexNet (specs/alexnet.net, batch 2, He-scaled
    weights so activations are of order one) against the PyTorch Figure 2 net here: logits
    within 1e-4 of PyTorch float64's, loss and gradients as check_float32_against_torch.
    Returns (params, x, labels, logits, loss, grads) for further checks."""
    params = he_parameters(net.param_shapes, seed=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 224, 224), dtype=np.float32)
    labels = np.array([7, 993])
    loss, grads, _ = check_float32_against_torch(net, params, x, labels, conv1_stride=4,
                                                 conv1_pad=2)
    ref_logits, _, _ = torch_loss_and_grads(params, x, labels, torch.float64, conv1_stride=4,
                                            conv1_pad=2)
    logits = net.forward(x)
    assert logits.dtype == np.float32 and logits.shape == (2, 1000)
    assert rel(logits, ref_logits) <= 1e-4
    return params, x, labels, logits, loss, grads


def test_alexnet_float32_batch2(alexnet):
    check_alexnet_batch2_against_torch(alexnet)


def test_alexnet_float64_at_the_spec_init(alexnet):
    # the spec's own initialisation, in float64 where the max-pool ties above are resolved
    net = netspec.build(ALEXNET, backend="numpy", seed=3, dtype=np.float64)
    params = net.parameters()
    x = np.random.default_rng(4).standard_normal((2, 3, 224, 224))
    labels = np.array([0, 500])
    assert_no_near_ties(net.graph, params, x, margin=FLOAT64_MARGIN)
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
    return dropout_masks_from(np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1]),
                              graph, n)


def dropout_masks_from(rng, graph, n):
    """The keep masks of the dropout layers as a net whose generator is `rng` draws them on a
    training forward of n images: one uint64 from `rng`, the Philox seed (runtime/noise.py)."""
    key = int(rng.integers(0, 1 << 64, dtype=np.uint64))
    return tuple(torch.from_numpy(uniforms(key, 0, i, 0, n, l.out_shape[0])
                                  >= np.float32(l.attrs["p"]))
                 for i, l in enumerate(graph.compute_layers) if l.type == "dropout")


@pytest.mark.parametrize("train", [False, True])
def test_tiny_alexnet_float32(train):
    net = netspec.build(TINY, backend="numpy", seed=5)
    params = he_parameters(net.param_shapes, seed=6)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 64, 64), dtype=np.float32)
    labels = np.array([0, 9, 3, 3])
    keep = dropout_masks_from(np.random.default_rng(11), net.graph, 4) if train else \
        (None, None)
    check_float32_against_torch(net, params, x, labels, train=train, keep=keep,
                                conv1_stride=2, conv1_pad=2)
    if not train:
        ref_logits, _, _ = torch_loss_and_grads(params, x, labels, torch.float64,
                                                conv1_stride=2, conv1_pad=2)
        assert rel(net.forward(x), ref_logits) <= 1e-4
