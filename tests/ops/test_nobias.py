"""conv and fc without a bias (`nobias`): no `.bias` tensor (parameter count and names), the
math against PyTorch's bias=False layers and finite differences, ONNX's Conv/Gemm without their
optional bias input on onnxruntime (one node, grouped, and per part). Every backend:
layercheck's CASES conv-nobias*, fc-nobias*."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netspec.ir.build import build_graph
from netspec.ops import OPS

from layercheck import CASES, check_onnx
from numgrad import check_op_grads

SPEC = """network nb
input 3x8x8
classes 5
conv c1 filters 4 size 3 pad 1 nobias relu
conv c2 filters 6 size 3
fc   f1 outputs 5 nobias
softmax prob
"""


def test_no_bias_tensor_and_the_count():
    g = build_graph(SPEC)
    assert list(g.param_shapes()) == ["c1.weight", "c2.weight", "c2.bias", "f1.weight"]
    # 4·3·9 + (6·4·9 + 6) + 5·6·6·6, the same count PyTorch gives these layers
    want = sum(p.numel() for p in (
        torch.nn.Conv2d(3, 4, 3, bias=False).parameters())) + sum(
        p.numel() for p in torch.nn.Conv2d(4, 6, 3).parameters()) + sum(
        p.numel() for p in torch.nn.Linear(6 * 6 * 6, 5, bias=False).parameters())
    assert g.total_params == want == 4 * 3 * 9 + 6 * 4 * 9 + 6 + 5 * 216


@pytest.mark.parametrize("relu", [False, True])
def test_conv_matches_torch_and_finite_differences(relu):
    rng = np.random.default_rng(0)
    a = {"filters": 3, "size": 3, "stride": 2, "pad": 1, "nobias": True}
    x = rng.standard_normal((2, 2, 6, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    y, _ = OPS["conv"].forward(a, x, (w,), relu=relu)
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=1)
    want = F.relu(want) if relu else want
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-12, atol=1e-12)
    torch_y = OPS["conv"].torch(a, relu=relu)(torch.from_numpy(x), torch.from_numpy(w))
    np.testing.assert_allclose(torch_y.numpy(), want.numpy(), rtol=0, atol=0)
    if not relu:            # a ReLU near a kink would hinge on the step; layercheck has it
        check_op_grads(OPS["conv"], a, x, (w,))


def test_fc_matches_torch_and_finite_differences():
    rng = np.random.default_rng(1)
    a = {"outputs": 4, "nobias": True}
    x = rng.standard_normal((3, 2, 2, 2))
    w = rng.standard_normal((4, 8))
    y, _ = OPS["fc"].forward(a, x, (w,))
    want = F.linear(torch.from_numpy(x).flatten(1), torch.from_numpy(w))
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-12, atol=1e-12)
    check_op_grads(OPS["fc"], a, x, (w,))


@pytest.mark.parametrize("case", [c for c in CASES if "nobias" in c])
def test_onnx_export_matches_onnxruntime(case):
    op_type, attrs, shape, kw = CASES[case]
    check_onnx(op_type, attrs, shape, **kw)


def test_onnx_grouped_and_per_part():
    check_onnx("conv", {"filters": 4, "size": 3, "pad": 1, "nobias": True}, (4, 5, 5),
               groups=2)
    check_onnx("conv", {"filters": 6, "size": 2, "pad": 1, "nobias": True}, (4, 4, 4),
               gpus=2, connect="same-gpu", relu=True)


def test_an_initial_bias_on_a_layer_without_one_is_an_error():
    from netspec.dsl.errors import SpecError
    text = SPEC.replace("size 3 pad 1 nobias relu", "size 3 pad 1 nobias relu bias 0.1")
    with pytest.raises(SpecError, match=r":4:\d+: error: c1: 'bias' sets the initial bias of "
                                        r"a layer with 'nobias'"):
        build_graph(text)
