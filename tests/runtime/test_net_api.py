"""The Python API: netspec.build, parameter names and layouts, initialisation, loading,
input checks, features and probabilities."""
from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.runtime import BACKENDS

ROOT = Path(__file__).resolve().parents[2]
ALEXNET = ROOT / "specs" / "alexnet.net"
TINY = ROOT / "examples" / "tiny-alexnet.net"

SMALL = """network small
input 2x6x6
classes 4
gpus 2
init weight gauss(0.1) bias 0
conv c1 filters 4 size 3 pad 1 relu bias 0.5
maxpool p1 size 2 stride 2
fc f1 outputs 6 relu connect all weight gauss(0.3)
dropout d1 p 0.5
fc f2 outputs 4 connect all
softmax prob
"""


@pytest.fixture(scope="module")
def alexnet():
    return netspec.build(str(ALEXNET), backend="numpy", seed=0)


@pytest.fixture(scope="module")
def tiny():
    return netspec.build(TINY, backend="numpy", seed=0)


def test_alexnet_parameter_names_and_pytorch_layouts(alexnet):
    params = alexnet.parameters()
    assert list(params) == [f"{l}.{p}" for l in ("conv1", "conv2", "conv3", "conv4", "conv5",
                                                 "fc6", "fc7", "fc8") for p in ("weight", "bias")]
    shapes = {k: v.shape for k, v in params.items()}
    assert shapes["conv1.weight"] == (96, 3, 11, 11)
    assert shapes["conv2.weight"] == (256, 48, 5, 5)       # same-gpu: 48 input maps per group
    assert shapes["conv3.weight"] == (384, 256, 3, 3)      # all
    assert shapes["conv4.weight"] == (384, 192, 3, 3)
    assert shapes["conv5.weight"] == (256, 192, 3, 3)
    assert shapes["fc6.weight"] == (4096, 9216)
    assert shapes["fc8.weight"] == (1000, 4096) and shapes["fc8.bias"] == (1000,)
    assert all(v.dtype == np.float32 for v in params.values())
    assert sum(v.size for v in params.values()) == alexnet.graph.total_params


def test_alexnet_initialisation_follows_section_5(alexnet):
    params = alexnet.parameters()
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        w = params[f"{name}.weight"]
        assert abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001, name
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):        # bias 1 in the spec
        assert (params[f"{name}.bias"] == 1).all()
    for name in ("conv1", "conv3", "fc8"):
        assert (params[f"{name}.bias"] == 0).all()


def test_initialisation_is_the_documented_draw():
    net = netspec.build(TINY, backend="numpy", seed=11)
    g = np.random.default_rng(np.random.SeedSequence(11).spawn(2)[0])
    stds = {"conv": 0.05, "fc": 0.02}
    for name, value in net.parameters().items():
        layer = name.split(".")[0]
        if name.endswith(".weight"):
            expected = g.standard_normal(value.shape, dtype=np.float32) * np.float32(
                stds[layer[:-1] if layer.startswith("fc") else "conv"])
            np.testing.assert_array_equal(value, expected, err_msg=name)
        else:
            bias = 1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
            np.testing.assert_array_equal(value, np.full(value.shape, bias, np.float32))


HE = """network he
input 3x12x12
classes 5
init weight he bias 0
conv c1 filters 64 size 5 pad 2 relu
conv c2 filters 64 size 3 pad 1 relu weight gauss(0.02)
fc f1 outputs 200 relu
fc f2 outputs 5
softmax prob
"""


def test_he_initialisation_draws_with_two_over_fan_in():
    """`weight he`: N(0, 2/fan_in), fan_in the inputs one output reads (He et al. 2015,
    eq. 10): 3*5*5 for c1, 64*12*12 for f1, 200 for f2; a layer's own `weight gauss(STD)`
    still wins. The draw is the documented one, with the std computed by hand here."""
    net = netspec.build(HE, backend="numpy", seed=5)
    params = net.parameters()
    g = np.random.default_rng(np.random.SeedSequence(5).spawn(2)[0])
    fan_in = {"c1": 3 * 5 * 5, "f1": 64 * 12 * 12, "f2": 200}
    for name, value in params.items():
        if not name.endswith(".weight"):
            assert (value == 0).all()
            continue
        layer = name.split(".")[0]
        std = 0.02 if layer == "c2" else (2.0 / fan_in[layer]) ** 0.5
        expected = g.standard_normal(value.shape, dtype=np.float32) * np.float32(std)
        np.testing.assert_array_equal(value, expected, err_msg=name)
        assert abs(value.std() / std - 1) < 0.05, name


def test_seed_determinism_and_dtypes():
    a = netspec.build(TINY, backend="numpy", seed=3).parameters()
    b = netspec.build(TINY, backend="numpy", seed=3).parameters()
    c = netspec.build(TINY, backend="numpy", seed=4).parameters()
    d = netspec.build(TINY, backend="numpy", seed=3, dtype=np.float64).parameters()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert d[k].dtype == np.float64
        np.testing.assert_array_equal(a[k].astype(np.float64), d[k])   # float32 draws, widened
    assert not np.array_equal(a["conv1.weight"], c["conv1.weight"])


def test_uneven_same_gpu_layer_has_per_part_parameters():
    spec = SMALL.replace("conv c1 filters 4 size 3 pad 1 relu bias 0.5",
                         "conv c1 filters 5 size 3 pad 1 relu split 2,3\n"
                         "conv c2 filters 4 size 1 connect same-gpu")
    params = netspec.build(spec, backend="numpy").parameters()
    assert params["c2.part0.weight"].shape == (2, 2, 1, 1)
    assert params["c2.part1.weight"].shape == (2, 3, 1, 1)
    assert params["c2.part1.bias"].shape == (2,)


def test_load_parameters_round_trip_and_copies(tiny):
    params = tiny.parameters()
    params["fc8.bias"][:] = 0.25
    assert not (tiny.parameters()["fc8.bias"] == 0.25).any()      # parameters() is a copy
    tiny.load_parameters(params)
    assert (tiny.parameters()["fc8.bias"] == 0.25).all()
    params["fc8.bias"][:] = 0.5                                   # load copied it, too
    assert (tiny.parameters()["fc8.bias"] == 0.25).all()


def test_load_parameters_mismatch_names_every_problem(tiny):
    before = tiny.parameters()
    bad = dict(before)
    del bad["conv1.bias"]
    bad["fc9.weight"] = np.zeros(3, np.float32)
    bad["conv2.weight"] = np.zeros((64, 32, 5, 5), np.float32)   # the ungrouped layout
    with pytest.raises(ValueError) as e:
        tiny.load_parameters(bad)
    msg = str(e.value)
    assert "missing conv1.bias" in msg
    assert "unexpected 'fc9.weight' (did you mean 'fc8.weight'?)" in msg
    assert "conv2.weight has shape (64, 32, 5, 5), expected (64, 16, 5, 5)" in msg
    with pytest.raises(ValueError, match="needs a mapping"):
        tiny.load_parameters([("conv1.weight", before["conv1.weight"])])
    after = tiny.parameters()
    assert all(np.array_equal(before[k], after[k]) for k in before)    # nothing changed


@pytest.mark.parametrize("x, expected", [
    (np.zeros((3, 64, 64), np.float32), "got shape (3, 64, 64)"),
    (np.zeros((2, 3, 64, 65), np.float32), "got shape (2, 3, 64, 65)"),
    (np.zeros((2, 1, 64, 64), np.float32), "got shape (2, 1, 64, 64)"),
    (np.zeros((0, 3, 64, 64), np.float32), "got shape (0, 3, 64, 64)"),
    (np.zeros((2, 3, 64, 64), np.float64), "got dtype float64"),
    ([[0.0]], "not list"),
])
def test_bad_input_raises_with_the_expected_shape(tiny, x, expected):
    for call in (lambda: tiny.forward(x), lambda: tiny.loss_and_grads(x, [0, 1]),
                 lambda: tiny.predict_proba(x), lambda: tiny.features(x, "fc7")):
        with pytest.raises(ValueError) as e:
            call()
        assert "float32 array of shape (N, 3, 64, 64)" in str(e.value)
        assert expected in str(e.value)


@pytest.mark.parametrize("labels, expected", [
    ([0, 10], r"labels\[1\] is 10"),
    ([-1, 0], r"labels\[0\] is -1"),
    ([0, 1, 2], r"shape \(2,\)"),
    (np.array([0.0, 1.0]), r"integer array of shape \(2,\)"),
])
def test_bad_labels_raise(tiny, labels, expected):
    x = np.zeros((2, 3, 64, 64), np.float32)
    with pytest.raises(ValueError, match=expected):
        tiny.loss_and_grads(x, labels)


def test_backend_names():
    assert "numpy" in BACKENDS
    net = netspec.build(SMALL, backend="auto")
    # without a GPU: the fast CPU path where a C compiler builds its kernels (issue 17)
    from netspec.runtime.cpu_backend import CpuNet
    from netspec.runtime.cuda_backend import cuda_device_count
    if not cuda_device_count():
        assert net.backend in ("opencl", "cpu" if CpuNet.auto_choice() else "numpy")
    with pytest.raises(ValueError, match="unknown backend 'nunpy' \\(did you mean 'numpy'\\?\\)"):
        netspec.build(SMALL, backend="nunpy")
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        netspec.build(SMALL, backend="numpy", dtype=np.float16)


def test_features_and_probabilities(tiny):
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64), dtype=np.float32)
    p = tiny.parameters()
    d6 = tiny.features(x, "drop6")
    fc7 = tiny.features(x, "fc7")
    assert fc7.shape == (3, 256) and fc7.dtype == np.float32
    # fc7 = relu(drop6 · W7ᵀ + b7), computed here from the parameters
    np.testing.assert_allclose(fc7, np.maximum(d6 @ p["fc7.weight"].T + p["fc7.bias"], 0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(tiny.features(x, "drop7"), fc7)        # test time: identity
    assert tiny.features(x, "pool5").shape == (3, 64, 3, 3)
    np.testing.assert_array_equal(tiny.features(x, "data"), x)
    logits = tiny.forward(x)
    np.testing.assert_allclose(logits, tiny.features(x, "fc8"), rtol=0, atol=0)
    proba = tiny.predict_proba(x)
    e = np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True))
    np.testing.assert_allclose(proba, e / e.sum(1, keepdims=True), rtol=1e-5)
    np.testing.assert_array_equal(tiny.features(x, "prob"), proba)
    with pytest.raises(ValueError, match="no layer 'fc77' \\(did you mean 'fc7'\\?\\)"):
        tiny.features(x, "fc77")


def test_every_activation_and_gradient_stays_float32(tiny):
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    for layer in tiny.graph.layers:
        assert tiny.features(x, layer.name, train=layer.type != "softmax").dtype == np.float32
    loss, grads = tiny.loss_and_grads(x, [1, 2], train=True)
    assert isinstance(loss, float)
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)}


def test_build_accepts_spec_text_and_graph():
    from netspec.ir.build import build_graph

    a = netspec.build(SMALL, backend="numpy", seed=1)
    b = netspec.build(build_graph(SMALL), backend="numpy", seed=1)
    for k, v in a.parameters().items():
        np.testing.assert_array_equal(v, b.parameters()[k])
    assert a.parameters()["c1.bias"].tolist() == [0.5] * 4
