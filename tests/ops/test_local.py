"""local: locally connected (unshared) convolution. Forward against a plain loop over the
formula and against PyTorch (unfold + one product per output pixel); backward against finite
differences; with every output pixel's filters equal, it is conv (PyTorch's conv2d); ONNX
refuses it by name."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netspec.ir.build import build_graph
from netspec.ops import OPS

from layercheck import check_onnx, layer_spec
from numgrad import check_op_grads, rel_error

OP = OPS["local"]
CONFIGS = [dict(filters=3, size=3, stride=1, pad=0), dict(filters=4, size=3, stride=2, pad=1),
           dict(filters=2, size=2, stride=3, pad=2)]


def local_loop(x, w, b, a):
    k, s, p = a["size"], a["stride"], a["pad"]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    o, ho, wo = b.shape
    y = np.empty((x.shape[0], o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * s:i * s + k, j * s:j * s + k]            # (N, C, k, k)
            y[:, :, i, j] = np.einsum("nCuv,oCuv->no", patch, w[:, i, j]) + b[:, i, j]
    return y


def draw(a, seed, c=3, h=6, w=7):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c, h, w))
    ws, bs = OP.parameters(a, (c, h, w), c, a["filters"])
    return x, rng.standard_normal(ws.shape), rng.standard_normal(bs.shape)


@pytest.mark.parametrize("a", CONFIGS)
def test_forward_matches_formula_and_torch(a):
    x, w, b = draw(a, a["size"])
    assert w.shape[:3] == b.shape == OP.output_shape(a, x.shape[1:])
    y, _ = OP.forward(a, x, (w, b))
    assert rel_error(y, local_loop(x, w, b, a)) <= 1e-13
    yt = OP.torch(a)(*map(torch.from_numpy, (x, w, b))).numpy()
    assert rel_error(y, yt) <= 1e-13


@pytest.mark.parametrize("a", CONFIGS)
@pytest.mark.parametrize("relu", [False, True])
def test_backward_matches_finite_differences(a, relu):
    x, w, b = draw(a, 7 + a["size"], c=2, h=5, w=5)
    check_op_grads(OP, a, x, (w, b), seed=3, relu=relu)


def test_shared_filters_make_it_a_convolution():
    a = dict(filters=4, size=3, stride=2, pad=1)
    x, w, b = draw(a, 1)
    wc = np.random.default_rng(2).standard_normal((4, 3, 3, 3))
    w[...] = wc[:, None, None]
    b[...] = np.arange(4.0)[:, None, None]
    y, _ = OP.forward(a, x, (w, b))
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(wc), torch.arange(4.0, dtype=torch.float64),
                   stride=2, padding=1).numpy()
    assert rel_error(y, ref) <= 1e-13


def test_groups_read_their_own_channels():
    a = dict(filters=4, size=2, stride=1, pad=0)
    x, _, _ = draw(a, 5, c=4, h=4, w=4)
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 3, 3, 2, 2, 2))
    b = rng.standard_normal((4, 3, 3))
    y = OP.torch(a, groups=2)(*map(torch.from_numpy, (x, w, b))).numpy()
    for g in range(2):
        part, _ = OP.forward(a, x[:, 2 * g:2 * g + 2], (w[2 * g:2 * g + 2], b[2 * g:2 * g + 2]))
        assert rel_error(y[:, 2 * g:2 * g + 2], part) <= 1e-13


def test_parameter_and_mac_counts():
    g = build_graph(layer_spec("local", {"filters": 5, "size": 3, "stride": 2, "pad": 1},
                               (3, 7, 7)))
    t = g.layer("t")
    assert t.out_shape == (5, 4, 4)
    assert g.param_shapes()["t.weight"] == (5, 4, 4, 3, 3, 3)
    assert g.param_shapes()["t.bias"] == (5, 4, 4)
    assert t.op.part_macs(t.attrs, t.in_shape, t.out_shape, 3, 5) == 5 * 16 * 27


@pytest.mark.parametrize("attrs,shape,kw", [
    ({"filters": 3, "size": 3, "pad": 1}, (2, 5, 5), {}),
    ({"filters": 4, "size": 2, "stride": 2}, (3, 6, 6), {"relu": True}),
    ({"filters": 4, "size": 3}, (4, 5, 5), {"groups": 2}),
    ({"filters": 4, "size": 3, "pad": 1}, (2, 4, 4), {"gpus": 2})],
    ids=["pad", "stride-relu", "groups", "2gpus"])
def test_onnx_form_against_onnxruntime(attrs, shape, kw):
    """ONNX has no locally connected operator: the export gathers each window with an
    identity-kernel Conv and multiplies per output pixel with one batched MatMul
    (codegen/onnx_export.py Exporter.local); onnxruntime's output equals the NumPy
    backend's."""
    assert check_onnx("local", attrs, shape, **kw) < 1e-5
