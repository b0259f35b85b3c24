"""ONNX export (netspec/codegen/onnx_export.py), checked by onnxruntime against netspec's own
forward (the NumPy reference backend) and by onnx.checker.

Oracle: onnxruntime executes the exported graph with its own Conv/LRN/pool/Gemm kernels; the
NumPy backend runs netspec's per-part reference math. They agree only if the export reproduces
the parts (grouped convs, per-GPU LRN windows, uneven splits, channel sub-ranges) and the LRN
alpha convention (ONNX divides alpha by size, the paper doesn't). Tolerance: 1e-4 relative on
the softmax probabilities (float32).

Weights: He-scaled random (std sqrt(2 / fan-in)), so the probabilities are far from uniform
and a wrong channel order or alpha changes them; the specs' own gauss(0.01) init makes
AlexNet's output nearly uniform, which would hide mistakes.
"""
from __future__ import annotations

import hashlib
import json
import math
import pathlib
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import netspec
from netspec.codegen.onnx_export import ExportError, export_onnx
from netspec.ir.build import build_graph

onnx = pytest.importorskip("onnx", reason="pip install 'netspec[onnx]' (in the test extra)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in netspec's test extra")

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
from net_specs import (  # noqa: E402
    BRANCHES,
    SUBRANGE,
    edge_case_specs,
    one_gpu_grouped,
    tiny_four_gpus,
)

ALEXNET = (ROOT / "specs/alexnet.net").read_text()
TINY = (ROOT / "examples/tiny-alexnet.net").read_text()
RTOL = 1e-4


def he_params(graph, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in graph.param_shapes().items():
        if name.endswith(".weight"):
            w = rng.standard_normal(shape, dtype=np.float32)
            w *= np.float32(math.sqrt(2.0 / math.prod(shape[1:])))
            out[name] = w
        else:
            out[name] = rng.normal(0, 0.1, shape).astype(np.float32)
    return out


def check_against_netspec(spec: str, batch: int = 2, params=None, seed=0):
    """Export, check, run on onnxruntime; assert the probabilities equal netspec's."""
    graph = build_graph(spec)
    net = netspec.build(graph, "numpy", seed=seed)
    params = he_params(graph, seed) if params is None else params
    net.load_parameters(params)
    model = export_onnx(graph, params)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed + 1).normal(0, 50, (batch, *graph.input_shape))
    x = x.astype(np.float32)
    want = net.predict_proba(x)
    got, = sess.run(None, {"data": x})
    assert got.shape == want.shape == (batch, graph.classes)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-7)
    return model, want


@pytest.mark.parametrize("spec", [ALEXNET, (ROOT / "specs/alexnet-1gpu.net").read_text()],
                         ids=["alexnet", "alexnet-1gpu"])
def test_alexnet_specs_match_netspec(spec):
    _, probs = check_against_netspec(spec, batch=2)
    assert probs.max() > 10 / 1000                  # far from uniform: the check has teeth


# fc layers reading only their own GPU's part, on 3 GPUs with uneven splits
FC_SAME_GPU = """network fcsame
input 3x9x9
classes 6
gpus 3
conv c1 filters 7 size 3 relu split 2,3,2
fc f1 outputs 9 relu connect same-gpu split 2,3,4
dropout d p 0.5
fc f2 outputs 6 connect same-gpu split 1,2,3
softmax prob
"""
# an lrn and a pool on the input, which every GPU holds whole
ON_INPUT = """network oninput
input 4x9x9
classes 4
gpus 2
lrn n0 size 3 alpha 0.5 beta 0.75 k 1
maxpool p0 size 2 stride 2
conv c1 filters 4 size 3 relu connect same-gpu
fc f2 outputs 4
softmax prob
"""


@pytest.mark.parametrize("spec", [TINY, tiny_four_gpus(TINY), one_gpu_grouped(TINY), BRANCHES,
                                  SUBRANGE, FC_SAME_GPU, ON_INPUT],
                         ids=["tiny", "tiny-4gpus", "tiny-grouped-1gpu", "branches", "subrange",
                              "fc-same-gpu-3gpus", "on-input"])
def test_shipped_and_model_parallel_specs_match_netspec(spec):
    check_against_netspec(spec, batch=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edge_case_specs())
def test_hypothesis_specs_match_netspec(case):
    """Uneven splits, groups across GPUs, 1-4 GPUs, strides, pads, LRN windows past a part's
    edge (alpha 0.05 there, so the alpha convention shows), max and average pooling."""
    text, batch = case
    check_against_netspec(text, batch=batch)


def _ops(model):
    return [n.op_type for n in model.graph.node]


def test_alexnet_structure_names_and_metadata():
    graph = build_graph(ALEXNET)
    params = he_params(graph)
    model = export_onnx(graph, params, classes=[f"n{i:08d}" for i in range(1000)])
    assert model.opset_import[0].version >= 17
    floats = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert floats == set(graph.param_shapes())      # initializers named like the parameters
    nodes = {n.name: n for n in model.graph.node}
    attr = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            for n in model.graph.node}
    # conv2, 4, 5 (same-gpu, even): one grouped Conv each; conv1, conv3 (all): group 1
    convs = {n.input[1]: attr[n.name].get("group", 1) for n in model.graph.node
             if n.op_type == "Conv"}
    assert convs == {"conv1.weight": 1, "conv2.weight": 2, "conv3.weight": 1,
                     "conv4.weight": 2, "conv5.weight": 2}
    # norm1: Split -> LRN per GPU -> Concat, alpha multiplied by size (ONNX divides it)
    lrns = [n for n in model.graph.node if n.op_type == "LRN"]
    assert len(lrns) == 4
    for n in lrns:
        assert attr[n.name]["size"] == 5
        assert attr[n.name]["alpha"] == pytest.approx(1e-4 * 5)
        assert attr[n.name]["bias"] == pytest.approx(2.0)
    split = nodes["norm1.split"]
    assert split.op_type == "Split" and split.input[0] == "conv1"
    assert nodes["norm1.concat"].op_type == "Concat"
    assert "Dropout" not in _ops(model) and _ops(model)[-1] == "Softmax"
    assert model.graph.output[0].name == "prob" and model.graph.input[0].name == "data"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["netspec.network"] == "alexnet"
    assert meta["netspec.spec_sha256"] == hashlib.sha256(ALEXNET.encode()).hexdigest()
    assert json.loads(meta["netspec.classes"])[:2] == ["n00000000", "n00000001"]


UNEVEN = """network uneven
input 3x12x12
classes 6
gpus 2
conv c1 filters 6 size 3 relu split 2,4
conv c2 filters 7 size 3 pad 1 relu connect same-gpu split 3,4
lrn n2 size 3 alpha 0.1 beta 0.75 k 1
fc f outputs 6 connect all
softmax prob
"""


def test_uneven_same_gpu_conv_is_split_conv_concat():
    model, _ = check_against_netspec(UNEVEN, batch=2)
    nodes = {n.name: n for n in model.graph.node}
    assert nodes["c2.split"].op_type == "Split" and next(iter(nodes["c2.split"].input)) == "c1"
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.output[0].startswith("c2")]
    assert [c.input[1] for c in convs] == ["c2.part0.weight", "c2.part1.weight"]
    assert nodes["c2.concat"].op_type == "Concat"


def test_lrn_alpha_is_compensated_numerically():
    """One LRN layer on one GPU, against the paper's formula written out here."""
    spec = ("network l\ninput 7x3x3\nclasses 63\ngpus 1\nlrn n size 5 alpha 0.3 beta 0.75 k 2\n"
            "softmax prob\n")
    graph = build_graph(spec)
    model = export_onnx(graph, {})
    # expose the LRN output as well as the softmax
    model.graph.output.append(onnx.helper.make_tensor_value_info("n", onnx.TensorProto.FLOAT,
                                                                 None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(0, 1, (2, 7, 3, 3)).astype(np.float32)
    _, got = sess.run(None, {"data": x})
    want = np.empty_like(x)
    for i in range(7):                      # b_i = a_i / (k + α Σ_{|j-i|<=2} a_j²)^β (§3.3)
        lo, hi = max(0, i - 2), min(6, i + 2)
        want[:, i] = x[:, i] / (2 + 0.3 * (x[:, lo:hi + 1] ** 2).sum(axis=1)) ** 0.75
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_missing_or_misshapen_parameters_are_export_errors():
    graph = build_graph(TINY)
    params = he_params(graph)
    bad = dict(params)
    del bad["conv2.weight"]
    with pytest.raises(ExportError, match="conv2.weight.*missing"):
        export_onnx(graph, bad)
    bad = dict(params, **{"fc8.bias": np.zeros(11, np.float32)})
    with pytest.raises(ExportError, match=r"fc8.bias.*\(11,\).*\(10,\)"):
        export_onnx(graph, bad)
    with pytest.raises(ExportError, match="conv9.weight"):
        export_onnx(graph, dict(params, **{"conv9.weight": np.zeros(1, np.float32)}))
