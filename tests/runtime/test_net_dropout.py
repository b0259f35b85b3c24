"""Dropout in the network: masks keyed by (seed, step, layer, image, element), reproducible,
identical on every backend (drawn on the device by the plan backends), statistically p, and
the expected training output equal to the test-time output."""
import numpy as np
import pytest

import netspec
from netspec.codegen.plan import build_plan
from netspec.ir.build import build_graph
from netspec.kernel.philox import uniforms
from netspec.runtime.noise import ImageNoise

from layercheck import backend_unavailable

# dropout right before the last fc, so the logits are linear in the mask
SPEC = """network drop
input 2x5x5
classes 4
gpus 2
init weight gauss(0.3) bias 0.1
conv c1 filters 4 size 3 relu
fc f1 outputs 8 relu connect all
dropout d1 p 0.5
fc f2 outputs 4 connect all
softmax prob
"""


def x_batch():
    return np.random.default_rng(0).standard_normal((3, 2, 5, 5), dtype=np.float32)


def test_masks_are_reproducible_from_the_seed():
    x = x_batch()
    a = netspec.build(SPEC, backend="numpy", seed=7)
    b = netspec.build(SPEC, backend="numpy", seed=7)
    first = [a.forward(x, train=True) for _ in range(3)]
    second = [b.forward(x, train=True) for _ in range(3)]
    for u, v in zip(first, second):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(first[0], first[1])              # a fresh mask every step
    a.rng = np.random.default_rng(np.random.SeedSequence(7).spawn(2)[1])
    np.testing.assert_array_equal(a.forward(x, train=True), first[0])   # the documented stream


def test_test_time_draws_nothing():
    x = x_batch()
    a = netspec.build(SPEC, backend="numpy", seed=7)
    state = a.rng.bit_generator.state
    y1, y2 = a.forward(x), a.forward(x)
    np.testing.assert_array_equal(y1, y2)
    assert a.rng.bit_generator.state == state


def test_expected_train_output_is_the_test_output():
    x = x_batch()
    net = netspec.build(SPEC, backend="numpy", seed=1)
    test = net.forward(x).astype(np.float64)
    draws = np.stack([net.forward(x, train=True) for _ in range(3000)]).astype(np.float64)
    mean = draws.mean(0)
    stderr = draws.std(0) / np.sqrt(len(draws))
    assert (np.abs(mean - test) <= 5 * stderr + 1e-6).all()
    # and the draws really vary (the mask is not all ones)
    assert (draws.std(0) > 0).all()


# -- the keyed noise on every backend --------------------------------------------------------------
# dropout on convs' outputs (3 channels of 3x3 split 2 + 1: groups of 4 elements straddle
# channels and parts; no ReLU, so a zero out is a dropped unit, not a decision) and on an fc's;
# two logical GPUs, so the layers are split into parts
KEYED = """network keyed
input 3x3x3
classes 4
gpus 2
init weight gauss(0.3) bias 0.1
conv c0 filters 3 size 1 split 2,1
dropout d0 p 0.4
conv c1 filters 6 size 3 pad 1
dropout d1 p 0.5
fc f1 outputs 10 connect all
dropout d2 p 0.3
fc f2 outputs 4 connect all
softmax prob
"""
BACKENDS = ["numpy", "cpu", "opencl", pytest.param("cuda", marks=pytest.mark.gpu)]


def documented_keep(graph, layer, seed, step, first, n):
    """keep[i, ...] of layer `layer` for images first … first+n−1, from the documentation
    (runtime/noise.py): u = Philox's top 24 bits of (seed, step, compute-layer index, image,
    element) over 2^24, kept when u >= float32(p)."""
    names = [l.name for l in graph.compute_layers]
    l = graph.layer(layer)
    u = uniforms(seed, step, names.index(layer), first, n, int(np.prod(l.out_shape)))
    return u.reshape(n, *l.out_shape) >= np.float32(l.attrs["p"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_are_the_documented_draw_on_every_backend(backend):
    """Each backend's training forward drops exactly the documented units, bit for bit, for a
    slice of a global batch (first image 5, as a data-parallel replica holds) and for the
    whole of it: the plan backends draw them on the device."""
    why = backend_unavailable(backend)
    if why:
        pytest.skip(why)
    net = netspec.build(KEYED, backend=backend, seed=3)
    x = np.random.default_rng(1).standard_normal((4, 3, 3, 3), dtype=np.float32)
    seed, step = 0xC0FFEE0123456789, 41
    for first in (5, 0):
        for layer in ("d0", "d1", "d2"):
            net.rng = ImageNoise(seed, step, first, 4)
            y = net.features(x, layer, train=True)
            net.rng = ImageNoise(seed, step, first, 4)
            before = net.features(x, {"d0": "c0", "d1": "c1", "d2": "f1"}[layer], train=True)
            assert (before != 0).all()               # so a zero out is a dropped unit
            np.testing.assert_array_equal(y != 0, documented_keep(net.graph, layer, seed, step,
                                                                  first, 4), err_msg=layer)


def test_replicas_draw_what_one_process_draws_on_the_device():
    """Two replicas holding images 0-2 and 3-5 of a global batch drop what one process holding
    all six drops, on a plan backend (the key's `first` scalar)."""
    backend = "opencl"
    why = backend_unavailable(backend)
    if why:
        pytest.skip(why)
    net = netspec.build(KEYED, backend=backend, seed=3)
    x = np.random.default_rng(2).standard_normal((6, 3, 3, 3), dtype=np.float32)
    net.rng = ImageNoise(9, 2, 0, 6)
    whole = net.features(x, "d0", train=True)
    parts = []
    for first in (0, 3):
        net.rng = ImageNoise(9, 2, first, 3)
        parts.append(net.features(x[first:first + 3], "d0", train=True))
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_plan_draws_masks_on_the_device_and_uploads_none(root):
    """tiny-alexnet on two GPUs: a training step uploads the input, the labels and each
    dropout part's 4-word noise key; each part's mask is written by a launch that reads that
    key from its noise buffer (so a captured graph replays with the next step's key), before
    any launch reads the mask."""
    graph = build_graph(root / "examples" / "tiny-alexnet.net")
    plan = build_plan(graph, 4)
    train = plan.steps_for("forward", True) + plan.steps_for("backward", True)
    uploads = [s for s in train if s.kind == "upload"]
    drop_parts = [(l.name, p.index) for l in graph.compute_layers if l.type == "dropout"
                  for p in l.parts]
    assert len(drop_parts) >= 4
    assert sorted(s.what for s in uploads) == sorted(
        ["input"] * len(plan.io["input"]) + ["labels"] + ["noise"] * len(drop_parts))
    assert not [s for s in plan.steps_for("forward", False) if s.what == "noise"]
    roles = {(e["layer"], e["part"]): e["roles"] for e in plan.parts}
    for layer, part in drop_parts:
        mask, noise = roles[(layer, part)]["mask"], roles[(layer, part)]["noise"]
        assert plan.buffers[noise].dtype == "int32" and plan.buffers[noise].elements == 4
        touching = [s for s in train if s.kind == "launch" and mask in s.args]
        k = plan.kernels[touching[0].kernel]
        kinds = dict(zip(touching[0].args, [p.kind for p in k.params]))
        assert kinds[mask] == "out" and kinds[noise] == "in_int", (layer, part)
        assert not [p for p in k.params if p.scalar]
        assert touching[0].when == "train"
        up = [s.id for s in uploads if s.buffer == noise]
        assert len(up) == 1 and up[0] < touching[0].id
    assert not [s for s in plan.steps if s.kind == "upload" and "mask" in (s.buffer or "")]


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_drop_fraction_is_p_and_masks_are_independent(p):
    """Over 64 images x 4096 units the dropped fraction is p within 5 binomial sigmas; two
    masks of different images, layers, steps or seeds agree on a unit as independent draws do,
    p² + (1 − p)², within 5 sigmas (the same key agrees everywhere)."""
    n, width = 64, 4096
    keep = {}
    for name, (seed, step, layer) in {"base": (7, 3, 2), "layer": (7, 3, 5),
                                      "step": (7, 4, 2), "seed": (8, 3, 2)}.items():
        u = ImageNoise(seed, step, 0, n).layer(layer).random((n, width), dtype=np.float32)
        keep[name] = u >= np.float32(p)
    total = n * width
    sigma = np.sqrt(p * (1 - p) / total)
    assert abs((~keep["base"]).mean() - p) <= 5 * sigma
    agree = p * p + (1 - p) ** 2
    q = np.sqrt(agree * (1 - agree) / total)
    for other in ("layer", "step", "seed"):
        assert abs((keep["base"] == keep[other]).mean() - agree) <= 5 * q, other
    half = total // 2                                # images 0-31 against images 32-63
    q_half = np.sqrt(agree * (1 - agree) / half)
    images = (keep["base"][: n // 2] == keep["base"][n // 2:]).mean()
    assert abs(images - agree) <= 5 * q_half
    again = ImageNoise(7, 3, 0, n).layer(2).random((n, width), dtype=np.float32) >= np.float32(p)
    assert np.array_equal(again, keep["base"])
