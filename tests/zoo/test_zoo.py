"""The zoo (specs/zoo/) held against torchvision's own definitions: each test builds
torchvision's model (its model file, random weights, nothing downloaded: torchvision_models),
copies its tensors into netspec by order (netspec's weighted layers in the spec's order,
torchvision's Conv2d/Linear/BatchNorm2d modules in definition order), and compares, in float64
at batch 2, the logits (1e-6 relative to the largest) and every copied tensor's gradient
(1e-5), on the numpy backend. The compile report's parameter and multiply-add totals against
the published ones (torchvision's weights tables: `num_params`, and `_ops` in G, which
torchvision counts as multiply-adds).

Input sizes: the nets that end in global pooling run small here (the spec says 224; `with_input`
changes only the input line): ResNet-18, SqueezeNet 1.1 and GoogLeNet at 64x64, ResNet-50 at
32x32 (its last stage then sees 1x1 maps; 64x64 with NETSPEC_RUN_SLOW=1). VGG-16's classifier
reads 7x7 maps, so it needs 224x224: its full comparison runs with NETSPEC_RUN_SLOW=1, its fast
variant checks the parameters' shapes and total."""
from __future__ import annotations

import os
import pathlib
import re

import numpy as np
import pytest
import torch
from torchvision_models import torchvision_models

from netspec.ir.build import build_graph
from netspec.runtime import build

ZOO = pathlib.Path(__file__).resolve().parents[2] / "specs" / "zoo"
# name: (parameters, G multiply-adds at 224x224), torchvision's published figures
PUBLISHED = {"resnet18": (11_689_512, 1.814), "resnet50": (25_557_032, 4.089),
             "vgg16": (138_357_544, 15.47), "squeezenet1_1": (1_235_496, 0.349),
             "googlenet": (6_624_904, 1.498)}
SLOW = os.environ.get("NETSPEC_RUN_SLOW") == "1"


def with_input(name: str, size: int | None = None):
    text = (ZOO / f"{name}.net").read_text()
    if size is not None:
        text = re.sub(r"(?m)^input\s+3x\d+x\d+", f"input   3x{size}x{size}", text)
    return build_graph(text)


def torch_model(name: str):
    module = {"resnet18": "resnet", "resnet50": "resnet", "vgg16": "vgg",
              "squeezenet1_1": "squeezenet", "googlenet": "googlenet"}[name]
    kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    torch.manual_seed(0)
    return getattr(torchvision_models(module), name)(**kw).double()


def pairs(graph, model):
    """(netspec layer, torchvision module) of each weighted layer, in order; types and
    shapes checked."""
    ours = [graph.layer(ls.name) for ls in graph.spec.layers if graph.layer(ls.name).weighted]
    theirs = [m for m in model.modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d))]
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    kinds = {"conv": torch.nn.Conv2d, "fc": torch.nn.Linear, "batchnorm": torch.nn.BatchNorm2d}
    for l, m in zip(ours, theirs):
        assert isinstance(m, kinds[l.type]), (l.name, m)
    return list(zip(ours, theirs))


def copy_tensors(graph, model, rng) -> tuple[dict, dict]:
    """netspec parameters holding torchvision's tensors (running statistics drawn, so test
    time is not the identity), and name -> torch tensor of each trainable netspec tensor with
    a torchvision counterpart. A tensor one side has and the other lacks fails the test."""
    params, counterpart = {}, {}
    shapes = graph.param_shapes()
    with torch.no_grad():
        for l, m in pairs(graph, model):
            if l.type == "batchnorm":
                m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.1, m.num_features)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2, m.num_features)))
                m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.num_features)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, m.num_features)))
            tensors = {"weight": m.weight, "bias": m.bias}
            if l.type == "batchnorm":
                tensors.update(running_mean=m.running_mean, running_var=m.running_var)
            for key, t in tensors.items():
                name = f"{l.name}.{key}"
                assert (t is None) == (name not in shapes), name
                if t is None:
                    continue
                params[name] = t.detach().numpy().reshape(shapes[name]).copy()
                if not key.startswith("running"):
                    counterpart[name] = t
    assert params.keys() == shapes.keys()
    return params, counterpart


def compare(name: str, size: int, train: bool):
    graph = with_input(name, size)
    model = torch_model(name)
    rng = np.random.default_rng(1)
    params, counterpart = copy_tensors(graph, model, rng)
    net = build(graph, "numpy", dtype=np.float64)
    net.load_parameters(params)
    x = rng.standard_normal((2, 3, size, size))
    labels = rng.integers(0, 1000, 2)
    model.eval()
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = net.forward(x).reshape(want.shape)        # SqueezeNet's: (N, 1000, 1, 1)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= 1e-6, f"{name} test-time logits: {err:.2e}"
    model.train(train)
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                             torch.from_numpy(labels))
    loss.backward()
    ours, grads = net.loss_and_grads(x, labels, train=train)
    assert abs(ours - loss.item()) <= 1e-9 * max(1.0, abs(loss.item()))
    worst = 0.0
    for n, t in counterpart.items():
        g = t.grad.numpy().reshape(grads[n].shape)
        e = np.abs(grads[n] - g).max() / max(np.abs(g).max(), 1e-300)
        assert e <= 1e-5, f"{name} gradient of {n}: {e:.2e}"
        worst = max(worst, e)
    return err, worst


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("squeezenet1_1", 64),
                                       ("googlenet", 64), ("resnet50", 32)])
def test_equals_torchvision(name, size):
    # the ResNets train their batch norm on the batch (train mode; no dropout in them);
    # SqueezeNet's and GoogLeNet's dropout makes train mode random, so their gradients are
    # compared at test time
    compare(name, size, train=name.startswith("resnet"))


@pytest.mark.skipif(not SLOW, reason="ResNet-50 at 64x64 in float64: NETSPEC_RUN_SLOW=1")
def test_resnet50_at_64_equals_torchvision():
    compare("resnet50", 64, train=True)


@pytest.mark.skipif(not SLOW, reason="VGG-16 at 224x224 in float64: NETSPEC_RUN_SLOW=1")
def test_vgg16_equals_torchvision():
    compare("vgg16", 224, train=False)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_shapes_and_totals(name):
    graph = with_input(name)
    model = torch_model(name)
    for l, m in pairs(graph, model):
        assert tuple(m.weight.shape) == graph.param_shapes()[f"{l.name}.weight"], l.name
    params, gmacs = PUBLISHED[name]
    assert graph.total_params == params
    assert sum(p.numel() for p in model.parameters()) == params
    assert round(graph.total_macs / 1e9, 3) == pytest.approx(gmacs, abs=1e-9)


@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_onnx_export_matches_onnxruntime(name):
    """The whole net as ONNX (batch norm, residual adds, inception concats, padded and
    ceil-sized pools, global pooling) on onnxruntime against netspec's numpy forward, float32,
    with torchvision-like tensors (running statistics drawn)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from netspec.codegen.onnx_export import export_onnx
    graph = with_input(name, 64)
    rng = np.random.default_rng(2)
    params, _ = copy_tensors(graph, torch_model(name), rng)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    net = build(graph, "numpy", dtype=np.float32)
    net.load_parameters(params)
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    model = export_onnx(graph, params)
    model.graph.output.append(onnx.helper.make_tensor_value_info(     # the logits too
        "fc", onnx.TensorProto.FLOAT, ["N", 1000]))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    proba, logits = sess.run(None, {"data": x})
    want = net.features(x, "fc")
    assert np.abs(logits - want).max() <= 1e-5 * np.abs(want).max()
    np.testing.assert_allclose(proba, net.predict_proba(x), rtol=1e-4, atol=1e-7)
