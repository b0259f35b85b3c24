"""ONNX import (netspec/importers/onnx.py).

Oracles: (1) netspec itself through its exporter: `export` then `import` must give back the
spec (layer by layer: type, name, output shape, parameter shapes, MACs) and the same logits
for every spec of the repository; (2) onnxruntime, on models written here with onnx.helper
from the operators' documentation (random weights), and on a torchvision model exported by
torch.onnx. Tolerance 1e-4 relative to the largest output.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.dsl.errors import SpecError
from netspec.ir.build import build_graph

onnx = pytest.importorskip("onnx", reason="onnx is in the test extra")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from netspec.codegen.onnx_export import write_onnx  # noqa: E402
from netspec.importers.onnx import import_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# every spec: rnorm and cnorm export as subgraphs (ONNX's LRN is across channels only) that
# the import folds back into one layer
SPECS = sorted([*ROOT.glob("specs/*.net"), *ROOT.glob("specs/zoo/*.net"),
                *ROOT.glob("examples/*.net")])
SLOW = os.environ.get("NETSPEC_RUN_SLOW") == "1"
# small enough for CI (seconds): a smaller input, and 4096-wide fc layers 256 wide; the
# layer types, groups, GPUs, pads and ceil of each spec are as written
SMALL = {"alexnet": 99, "alexnet-1gpu": 99, "vgg16": 32, "resnet18": 32,
         "squeezenet1_1": 47, "tiny-alexnet": None}
RTOL = 1e-4


def small_text(path: Path) -> str:
    text = path.read_text()
    size = SMALL.get(path.stem)
    if SLOW or size is None:
        return text
    text = re.sub(r"(?m)^(input\s+)(\d+)x\d+x\d+", rf"\g<1>\g<2>x{size}x{size}", text)
    text = re.sub(r"crop \d+ from \d+", f"crop {size} from {size + 8}", text)
    return re.sub(r"outputs 4096", "outputs 256", text)


def netspec_net(text, params):
    net = netspec.build(text, backend="numpy")
    net.load_parameters(params)
    return net


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * np.abs(want).max())


def layers_of(graph):
    """(type, name, output shape, MACs) of each layer but dropout (the identity at test
    time: ONNX's inference graph holds none), and every parameter's shape."""
    rows = [(lyr.type, lyr.name, lyr.out_shape, lyr.macs) for lyr in graph.compute_layers
            if lyr.type != "dropout"]
    return rows, graph.param_shapes()


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_export_then_import_is_the_identity(path, tmp_path):
    text = small_text(path)
    graph = build_graph(text=text)
    params = netspec.build(text, backend="numpy", seed=3).parameters()
    rng = np.random.default_rng(0)
    for name, value in params.items():            # off the init's constants (BN's 1 and 0)
        if name.endswith(("running_mean", "bias")) or name.endswith("norm.weight"):
            params[name] = value + rng.normal(0, 0.1, value.shape).astype(np.float32)
        if name.endswith("running_var"):
            params[name] = rng.uniform(0.5, 2, value.shape).astype(np.float32)
    write_onnx(graph, params, tmp_path / "net.onnx")
    imp = import_onnx(tmp_path / "net.onnx")
    back = build_graph(text=imp.spec_text())
    assert layers_of(back) == layers_of(graph)
    assert back.name == graph.name and back.input_shape == graph.input_shape
    assert back.total_params == graph.total_params and back.total_macs == graph.total_macs
    got_params = imp.parameters()
    assert set(got_params) == set(params)
    for name in params:
        np.testing.assert_array_equal(got_params[name], params[name], err_msg=name)
    # a batch every data-parallel layer can cut into one slice per logical GPU
    x = rng.uniform(-100, 100, (max(2, graph.gpus), *graph.input_shape)).astype(np.float32)
    close(netspec_net(imp.spec_text(), got_params).forward(x),
          netspec_net(text, params).forward(x))


def test_multi_gpu_lrn_and_grouped_convs_become_groups(tmp_path):
    """A 2-GPU AlexNet exports each GPU's LRN apart (Split, LRN, LRN, Concat) and same-gpu
    convs as Conv group 2: the import reads them as groups 2."""
    text = small_text(ROOT / "specs/alexnet.net")
    graph = build_graph(text=text)
    write_onnx(graph, netspec.build(text, backend="numpy").parameters(), tmp_path / "a.onnx")
    spec = import_onnx(tmp_path / "a.onnx").spec_text()
    assert re.search(r"(?m)^lrn\s+norm1 size 5 alpha 0.0001 beta 0.75 k 2 groups 2", spec)
    assert re.search(r"(?m)^conv\s+conv2 filters 256 size 5 pad 2 groups 2 relu", spec)
    assert re.search(r"(?m)^conv\s+conv3 filters 384 size 3 pad 1 relu", spec)
    assert "ONNX's alpha 0.0005 is divided by size 5" in spec


def test_the_metadata_carries_classes_and_mean(tmp_path):
    text = small_text(ROOT / "examples/tiny-alexnet.net")
    graph = build_graph(text=text)
    mean = np.random.default_rng(1).uniform(0, 255, (72, 72, 3)).astype(np.float32)
    classes = [f"n{i:03d}" for i in range(10)]
    write_onnx(graph, netspec.build(text, backend="numpy").parameters(), tmp_path / "t.onnx",
               classes=classes, class_names=[c.upper() for c in classes], mean=mean)
    imp = import_onnx(tmp_path / "t.onnx")
    assert imp.classes == classes and imp.class_names[3] == "N003"
    np.testing.assert_array_equal(imp.mean, mean)


# -- models written here with onnx.helper, against onnxruntime ---------------------------

def init(name, a):
    return numpy_helper.from_array(np.asarray(a, np.float32), name)


def helper_model(nodes, inits, in_shape, out_shape, opset=17):
    graph = helper.make_graph(
        nodes, "helper_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT,
                                       ["N", *out_shape])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_ort(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def a_helper_model(rng):
    """Every operator the importer maps, the zoo's among them, on a 3x20x20 input."""
    r = lambda *s: rng.normal(0, 0.3, s)     # noqa: E731
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="conv 1", kernel_shape=[3, 3],
          pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["c1", "g", "be", "m", "v"], ["bn"], epsilon=1e-3,
          momentum=0.8),
        n("LeakyRelu", ["bn"], ["lk"], alpha=0.2),
        n("Conv", ["lk", "w2", "b2"], ["c2"], group=2, kernel_shape=[3, 3], strides=[2, 2],
          pads=[1, 1, 1, 1]),
        n("Relu", ["c2"], ["r2"]),
        n("LRN", ["r2"], ["lrn"], size=3, alpha=0.01, beta=0.75, bias=2.0),
        n("MaxPool", ["lrn"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
          ceil_mode=1),
        n("Conv", ["mp", "w3", "b3"], ["c3"], kernel_shape=[1, 1]),
        n("Sigmoid", ["c3"], ["sg"]),
        n("Conv", ["mp", "w4"], ["c4"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Tanh", ["c4"], ["th"]),
        n("Add", ["sg", "th"], ["sum"]),
        n("Relu", ["sum"], ["sumr"]),
        n("Abs", ["sumr"], ["ab"]),
        n("Softplus", ["ab"], ["sp"]),
        n("Concat", ["sp", "mp"], ["cat"], axis=1),
        n("Clip", ["cat", "lo", "hi"], ["cl"]),
        n("Mul", ["cl", "cl"], ["sq"]),
        n("AveragePool", ["sq"], ["ap"], kernel_shape=[2, 2], strides=[1, 1],
          pads=[1, 1, 1, 1], count_include_pad=1),
        n("Softplus", ["ap"], ["ap2"]),
        n("Tanh", ["ap"], ["apt"]),
        n("Sum", ["ap", "apt", "ap2"], ["s2"]),
        n("Dropout", ["s2", "ratio"], ["dr"]),
        n("Flatten", ["dr"], ["fl"], axis=1),
        n("Gemm", ["fl", "w5", "b5"], ["g1"], transB=1),
        n("Relu", ["g1"], ["g1r"]),
        n("Gemm", ["g1r", "w6", "b6"], ["logits"], alpha=0.5, beta=2.0),
    ]
    inits = [init("w1", r(8, 3, 3, 3)), init("b1", r(8)), init("g", rng.uniform(0.5, 2, 8)),
             init("be", r(8)), init("m", r(8)), init("v", rng.uniform(0.5, 2, 8)),
             init("w2", r(6, 4, 3, 3)), init("b2", r(6)), init("w3", r(6, 6, 1, 1)),
             init("b3", r(6)), init("w4", r(6, 6, 3, 3)), init("lo", 0.0), init("hi", 1.5),
             init("ratio", 0.3), init("w5", r(16, 12 * 7 * 7) / 8), init("b5", r(16)),
             init("w6", r(16, 5)), init("b6", r(1, 5))]
    return helper_model(nodes, inits, (3, 20, 20), (5,))


def test_a_helper_model_against_onnxruntime(tmp_path):
    rng = np.random.default_rng(2)
    model = a_helper_model(rng)
    onnx.save(model, tmp_path / "h.onnx")
    imp = import_onnx(tmp_path / "h.onnx")
    spec = imp.spec_text()
    x = rng.uniform(-2, 2, (3, 3, 20, 20)).astype(np.float32)
    close(netspec_net(spec, imp.parameters()).forward(x), run_ort(model, x))
    lines = {" ".join(ln.split("   #")[0].split()) for ln in spec.splitlines()}
    for line in ("conv c1 filters 8 size 3 pad 1",
                 "batchnorm bn eps 0.001 momentum 0.2", "leaky   lk slope 0.2",
                 "conv    r2 filters 6 size 3 stride 2 pad 1 groups 2 relu",
                 "maxpool mp size 3 stride 2 pad 1 ceil", "add sumr from sg, th relu", "add s2 from ap, apt, ap2",
                 "concat  cat from sp, mp", "brelu   cl a 1.5", "square  sq",
                 "dropout dr p 0.3", "fc      g1r outputs 16 relu", "softmax prob"):
        assert " ".join(line.split()) in lines, (line, spec)
    assert "conv c4 from mp filters 6 size 3 pad 1 nobias" in lines, spec   # Conv without B
    assert "Gemm alpha 0.5, beta 2 folded into the weight and bias" in spec
    assert "added: a netspec network ends in softmax" in spec


@pytest.mark.parametrize("module,name,size,line", [
    ("squeezenet", "squeezenet1_1", 47, "concat features_3 from features_3_expand1x1, "
                                        "features_3_expand3x3"),
    ("resnet", "resnet18", 32, "add layer1_0 from layer1_0_conv2, maxpool relu")],
    ids=["squeezenet1_1", "resnet18"])
def test_torchvision_model_exported_by_torch(tmp_path, module, name, size, line):
    """torchvision's own model, exported by torch.onnx (its node names, Constant and
    Identity nodes, Flatten, batch norm folded into the convs), against onnxruntime on the
    same file; the spec's layers are named after the modules."""
    torch = pytest.importorskip("torch")
    import sys
    sys.path.insert(0, str(ROOT / "tests" / "zoo"))
    from torchvision_models import torchvision_models
    torch.manual_seed(0)
    model = getattr(torchvision_models(module), name)(num_classes=10).eval()
    x = torch.rand(2, 3, size, size) * 2 - 1
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    imp = import_onnx(path)
    got = netspec_net(imp.spec_text(), imp.parameters()).forward(x.numpy()).reshape(2, -1)
    close(got, run_ort(onnx.load(path), x.numpy()))
    assert line in {" ".join(ln.split("   #")[0].split()) for ln in imp.spec_text().splitlines()}


# -- what is refused ---------------------------------------------------------------------

def test_unsupported_nodes_are_all_reported_and_nothing_is_written(tmp_path):
    from click.testing import CliRunner

    from netspec.cli import main
    n = helper.make_node
    rng = np.random.default_rng(4)
    nodes = [n("Conv", ["x", "w"], ["c"], name="dilated", kernel_shape=[3, 3],
               dilations=[2, 2]),
             n("Conv", ["x", "w"], ["c2"], name="oblong", kernel_shape=[3, 3],
               pads=[1, 0, 1, 0]),
             n("Elu", ["c2"], ["e"], name="elu1"),
             n("Erf", ["c2"], ["mx"], name="erf1"),
             n("Softmax", ["mx"], ["y"], name="sm", axis=1)]
    model = helper_model(nodes, [init("w", rng.normal(0, 1, (4, 3, 3, 3)))], (3, 8, 8),
                         (4, 8, 6))
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(SpecError) as e:
        import_onnx(tmp_path / "bad.onnx")
    msg = str(e.value)
    assert "node 'dilated' (Conv): dilations [2, 2]" in msg
    assert "node 'oblong' (Conv): pads [1, 0, 1, 0] differ between the sides" in msg
    assert "node 'elu1' (Elu): Elu has no netspec layer type" in msg
    assert "node 'erf1' (Erf): Erf has no netspec layer type" in msg
    assert "could not import" not in msg           # one error per construct, no echoes
    assert msg.count("error:") == 5, msg           # and the softmax over 8x6 maps
    res = CliRunner().invoke(main, ["import", str(tmp_path / "bad.onnx"), "-o",
                                    str(tmp_path / "bad.net"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "node 'elu1' (Elu)" in res.output
    assert not (tmp_path / "bad.net").exists() and not (tmp_path / "run").exists()


def test_a_file_that_is_not_onnx(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"\xff\xff not protobuf")
    with pytest.raises(SpecError, match="x.onnx: error: not an ONNX model"):
        import_onnx(tmp_path / "x.onnx")


def test_import_then_export_through_the_cli(tmp_path):
    """`netspec import net.onnx --out RUN` writes a run that `netspec export --checkpoint`
    takes; the re-exported model computes what the first did (onnxruntime on both)."""
    from click.testing import CliRunner

    from netspec.cli import main
    text = small_text(ROOT / "examples/tiny-alexnet.net")
    graph = build_graph(text=text)
    write_onnx(graph, netspec.build(text, backend="numpy", seed=1).parameters(),
               tmp_path / "a.onnx")
    res = CliRunner().invoke(main, ["import", str(tmp_path / "a.onnx"), "-o",
                                    str(tmp_path / "b.net"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["export", str(tmp_path / "b.net"), "--checkpoint",
                                    str(tmp_path / "run"), "-o", str(tmp_path / "b.onnx")])
    assert res.exit_code == 0, res.output
    x = np.random.default_rng(7).uniform(-100, 100, (2, 3, 64, 64)).astype(np.float32)
    runs = [ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"])
            .run(None, {"data": x})[0] for f in ("a.onnx", "b.onnx")]
    close(runs[1], runs[0])


@pytest.mark.parametrize("op,pads,ceil", [("MaxPool", 0, 1), ("MaxPool", 1, 1),
                                          ("AveragePool", 0, 1), ("AveragePool", 1, 1),
                                          ("AveragePool", 1, 0)])
def test_ceil_mode_and_padded_pooling(tmp_path, op, pads, ceil):
    """Pooling sized with ceil (10x10, window 3, stride 2: ceil gives one more row and
    column than floor) and padded, against onnxruntime; a max pool after a conv, so a tie
    has no reason to be exact."""
    rng = np.random.default_rng(8)
    n = helper.make_node
    extra = {"count_include_pad": 1} if op == "AveragePool" else {}
    nodes = [n("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             n(op, ["c"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[pads] * 4,
               ceil_mode=ceil, **extra)]
    out = -(-(10 + 2 * pads - 3) // 2) + 1 if ceil else (10 + 2 * pads - 3) // 2 + 1
    model = helper_model(nodes, [init("w", rng.normal(0, 0.5, (4, 3, 3, 3))),
                                 init("b", rng.normal(0, 0.1, 4))], (3, 10, 10),
                         (4, out, out))
    onnx.save(model, tmp_path / "p.onnx")
    imp = import_onnx(tmp_path / "p.onnx")
    assert build_graph(text=imp.spec_text()).layer("p").out_shape == (4, out, out)
    x = rng.uniform(-2, 2, (2, 3, 10, 10)).astype(np.float32)
    net = netspec.build(imp.spec_text(), backend="numpy")
    net.load_parameters(imp.parameters())
    close(net.features(x, "p"), run_ort(model, x))


def test_lrn_alpha_is_divided_by_size(tmp_path):
    """ONNX's LRN is x / (bias + alpha/size · Σx²)^beta (as Caffe's and PyTorch's); netspec's
    alpha is the paper's, not divided: the spec's alpha is ONNX's / size. Pixel-sized
    inputs, so the denominator is far from the bias and a wrong alpha shows."""
    rng = np.random.default_rng(9)
    n = helper.make_node
    nodes = [n("LRN", ["x"], ["lrn"], size=5, alpha=1e-3, beta=0.75, bias=1.0),
             n("Flatten", ["lrn"], ["f"], axis=1),
             n("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    model = helper_model(nodes, [init("w", rng.normal(0, 0.1, (4, 6 * 3 * 3))),
                                 init("b", np.zeros(4))], (6, 3, 3), (4,))
    onnx.save(model, tmp_path / "l.onnx")
    imp = import_onnx(tmp_path / "l.onnx")
    assert "lrn size 5 alpha 0.0002 beta 0.75 k 1" in " ".join(imp.spec_text().split())
    x = rng.uniform(-100, 100, (2, 6, 3, 3)).astype(np.float32)
    close(netspec_net(imp.spec_text(), imp.parameters()).forward(x), run_ort(model, x))


def test_an_input_of_free_size_is_refused(tmp_path):
    rng = np.random.default_rng(10)
    n = helper.make_node
    model = helper_model([n("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
                          n("GlobalAveragePool", ["c"], ["y"])],
                         [init("w", rng.normal(0, 1, (4, 3, 1, 1)))], (3, "H", "W"),
                         (4, 1, 1))
    onnx.save(model, tmp_path / "free.onnx")
    with pytest.raises(SpecError, match=r"input 'x' has shape \['N', 3, 'H', 'W'\]; netspec "
                                        r"reads \(N, C, H, W\) with C, H and W fixed"):
        import_onnx(tmp_path / "free.onnx")


def test_a_tensor_added_to_itself(tmp_path):
    """Add(c, c), as PyTorch exports `x + x`: `add from c, c`, 2·c, against onnxruntime."""
    rng = np.random.default_rng(4)
    n = helper.make_node
    model = helper_model(
        [n("Conv", ["x", "w1", "b1"], ["c"], kernel_shape=[3, 3]),
         n("Add", ["c", "c"], ["twice"]), n("Flatten", ["twice"], ["fl"], axis=1),
         n("Gemm", ["fl", "w2", "b2"], ["logits"], transB=1)],
        [init("w1", rng.normal(0, 0.3, (4, 3, 3, 3))), init("b1", rng.normal(0, 0.3, 4)),
         init("w2", rng.normal(0, 0.1, (5, 4 * 4 * 4))), init("b2", rng.normal(0, 0.3, 5))],
        (3, 6, 6), (5,))
    onnx.save(model, tmp_path / "twice.onnx")
    imp = import_onnx(tmp_path / "twice.onnx")
    assert "from c, c" in imp.spec_text()
    x = rng.uniform(-2, 2, (2, 3, 6, 6)).astype(np.float32)
    close(netspec_net(imp.spec_text(), imp.parameters()).forward(x), run_ort(model, x))


def test_max_and_sqrt(tmp_path):
    """Max of two layers ('max', cuda-convnet's eltmax) and Sqrt ('sqrt') against
    onnxruntime; the inputs to Sqrt are positive (Sigmoid), and the Max inputs' values are
    continuous draws (no ties)."""
    rng = np.random.default_rng(5)
    n = helper.make_node
    model = helper_model(
        [n("Conv", ["x", "w1", "b1"], ["a"], kernel_shape=[3, 3]),
         n("Conv", ["x", "w2", "b2"], ["b"], kernel_shape=[3, 3]),
         n("Max", ["a", "b"], ["m"]), n("Sigmoid", ["m"], ["s"]), n("Sqrt", ["s"], ["r"]),
         n("Flatten", ["r"], ["fl"], axis=1),
         n("Gemm", ["fl", "w3", "b3"], ["logits"], transB=1)],
        [init("w1", rng.normal(0, 0.3, (4, 3, 3, 3))), init("b1", rng.normal(0, 0.3, 4)),
         init("w2", rng.normal(0, 0.3, (4, 3, 3, 3))), init("b2", rng.normal(0, 0.3, 4)),
         init("w3", rng.normal(0, 0.3, (5, 4 * 4 * 4))), init("b3", rng.normal(0, 0.3, 5))],
        (3, 6, 6), (5,))
    onnx.save(model, tmp_path / "mx.onnx")
    imp = import_onnx(tmp_path / "mx.onnx")
    spec = " ".join(imp.spec_text().split())
    assert "max m from a, b" in spec and "sqrt r" in spec, spec
    x = rng.uniform(-2, 2, (2, 3, 6, 6)).astype(np.float32)
    close(netspec_net(imp.spec_text(), imp.parameters()).forward(x), run_ort(model, x))


@pytest.mark.parametrize("kind", ["rnorm", "cnorm"])
def test_within_map_normalisations_fold_back(tmp_path, kind):
    """rnorm and cnorm leave netspec as AveragePool/Mul/Add/Pow subgraphs and come back as
    one layer with the same attributes, computing what onnxruntime computes of the file."""
    text = f"""network norm
input 3x7x7
classes 4
conv c1 filters 5 size 3 pad 1
{kind} n1 size 3 alpha 0.25 beta 0.75 k 2
fc f outputs 4
softmax prob
"""
    graph = build_graph(text=text)
    params = netspec.build(text, backend="numpy", seed=2).parameters()
    write_onnx(graph, params, tmp_path / "n.onnx")
    imp = import_onnx(tmp_path / "n.onnx")
    assert f"{kind} n1 size 3 alpha 0.25 beta 0.75 k 2" in " ".join(imp.spec_text().split())
    x = np.random.default_rng(1).uniform(-100, 100, (2, 3, 7, 7)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "n.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    got = netspec_net(imp.spec_text(), imp.parameters())
    close(got.predict_proba(x) if np.allclose(want.sum(1), 1) else got.forward(x), want)
