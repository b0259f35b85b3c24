"""`netspec import` of cuda-convnet layer files: the imported layers-18pct network's forward
and gradients equal a PyTorch model that runs the cfg as cuda-convnet computes it
(cudaconvnet_files.py) with the same weights; its sizes and parameters a hand computation
from the cfg; the norm conventions (rnorm, cnorm: scale/size²; cmrnorm: scale/size) against
the formulas; the recipe from layer-params; every unsupported construct reported at once
(FILE:LINE:COL, exit 2, nothing written); checkpoints refused unopened."""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from netspec.cli import main
from netspec.dsl.errors import SpecError
from netspec.importers import detect_format, import_model
from netspec.ir.build import build_graph
from netspec.runtime import build

sys.path.insert(0, str(Path(__file__).parent))
import cudaconvnet_files as ccn  # noqa: E402


def write(tmp_path, layers, params=None, stem="layers"):
    lp = tmp_path / f"{stem}.cfg"
    lp.write_text(layers)
    pp = None
    if params is not None:
        pp = tmp_path / f"{stem}-params.cfg"
        pp.write_text(params)
    return lp, pp


def imported_graph(tmp_path, layers, params, shape=(3, 32, 32)):
    lp, pp = write(tmp_path, layers, params)
    imp = import_model(lp, params=pp, input_shape=shape)
    return imp, build_graph(text=imp.spec_text())


def draw(graph, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in graph.param_shapes().items():
        fan_in = int(np.prod(shape[1:])) or 1
        out[name] = rng.standard_normal(shape) * (np.sqrt(2.0 / fan_in) if len(shape) > 1
                                                   else 0.1)
    return out


def compare_with_cfg_model(graph, layers, params_text, seed=0, batch=2):
    """netspec (numpy backend, float64) against cudaconvnet_files.run: logits to 1e-10 of
    their largest, every parameter's gradient of the mean logistic loss to 1e-8."""
    params = draw(graph, seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, *graph.input_shape)) * 50
    labels = rng.integers(0, graph.classes, batch)
    net = build(graph, "numpy", dtype=np.float64)
    net.load_parameters(params)
    logits = net.forward(x)
    loss, grads = net.loss_and_grads(x, labels, train=True)

    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    z = ccn.run(ccn.read(layers, params_text), P, torch.from_numpy(x))
    ref = z.detach().numpy()
    assert np.abs(logits - ref).max() <= 1e-10 * np.abs(ref).max()
    tloss = torch.nn.functional.cross_entropy(z, torch.from_numpy(labels))
    tg = torch.autograd.grad(tloss, list(P.values()))
    assert abs(loss - tloss.item()) <= 1e-10 * max(1.0, abs(tloss.item()))
    for (name, _), g in zip(P.items(), tg):
        g = g.numpy()
        assert np.abs(grads[name] - g).max() <= 1e-8 * max(np.abs(g).max(), 1e-30), name


def test_18pct_forward_and_gradients_equal_the_cfg_model(tmp_path):
    _, g = imported_graph(tmp_path, ccn.LAYERS_18PCT, ccn.PARAMS_18PCT)
    compare_with_cfg_model(g, ccn.LAYERS_18PCT, ccn.PARAMS_18PCT)


def test_80sec_forward_and_gradients_equal_the_cfg_model(tmp_path):
    _, g = imported_graph(tmp_path, ccn.LAYERS_80SEC, ccn.PARAMS_80SEC)
    compare_with_cfg_model(g, ccn.LAYERS_80SEC, ccn.PARAMS_80SEC, seed=3)


def test_18pct_sizes_and_parameters_by_hand(tmp_path):
    imp, g = imported_graph(tmp_path, ccn.LAYERS_18PCT, ccn.PARAMS_18PCT)
    # pools: ceil((32 - 3) / 2) + 1 = 16, ceil(13 / 2) + 1 = 8, ceil(5 / 2) + 1 = 4
    want = {"conv1": (32, 32, 32), "pool1": (32, 16, 16), "pool1_neuron": (32, 16, 16),
            "rnorm1": (32, 16, 16), "conv2": (32, 16, 16), "pool2": (32, 8, 8),
            "rnorm2": (32, 8, 8), "conv3": (64, 8, 8), "pool3": (64, 4, 4), "fc10": (10,)}
    assert {k: g.layer(k).out_shape for k in want} == want
    shapes = g.param_shapes()
    assert shapes["conv1.weight"] == (32, 3, 5, 5) and shapes["fc10.weight"] == (10, 64 * 16)
    assert sum(int(np.prod(s)) for s in shapes.values()) == \
        (32 * 3 * 25 + 32) + (32 * 32 * 25 + 32) + (64 * 32 * 25 + 64) + (10 * 1024 + 10)
    assert g.layer("conv2").relu and g.layer("conv3").relu and not g.layer("conv1").relu
    assert g.layer("pool1_neuron").type == "relu"        # pool1's neuron=relu, after the pool
    assert g.layer("rnorm1").attrs["alpha"] == 0.00005 and g.layer("rnorm1").attrs["k"] == 1


def test_recipe_from_layer_params(tmp_path):
    imp, g = imported_graph(tmp_path, ccn.LAYERS_18PCT, ccn.PARAMS_18PCT)
    r = g.spec.recipe
    assert (r.lr, r.momentum, r.weight_decay, r.batch_size) == (0.001, 0.9, 0.004, 128)
    assert g.layer("fc10").decay_mult == 250 and g.layer("conv1").decay_mult == 1
    assert g.layer("conv1").lr_mult == 1
    text = imp.spec_text()
    assert "epsB=0.002 not expressed" in text and "never decays biases" in text
    assert "ceil((32 - 3) / 2) + 1 = 16 (floor gives 15)" in text


def test_the_zoo_specs_are_the_imported_ones(tmp_path):
    """specs/zoo/cifar10-18pct.net and -80sec.net: the same layers, shapes, parameters,
    attributes and recipe as the import of the cfg pair."""
    zoo = Path(__file__).resolve().parents[2] / "specs" / "zoo"
    for layers, params, name in ((ccn.LAYERS_18PCT, ccn.PARAMS_18PCT, "cifar10-18pct"),
                                 (ccn.LAYERS_80SEC, ccn.PARAMS_80SEC, "cifar10-80sec")):
        _, g = imported_graph(tmp_path, layers, params)
        z = build_graph((zoo / f"{name}.net").read_text())
        assert [(l.name, l.type, l.out_shape, l.relu, l.lr_mult, l.decay_mult)
                for l in g.compute_layers] == \
            [(l.name, l.type, l.out_shape, l.relu, l.lr_mult, l.decay_mult)
             for l in z.compute_layers]
        assert g.param_shapes() == z.param_shapes()
        for a, b in zip(g.compute_layers, z.compute_layers):
            assert {k: v for k, v in a.attrs.items() if k != "weight"} == \
                {k: v for k, v in b.attrs.items() if k != "weight"}, a.name
        assert (g.spec.recipe.lr, g.spec.recipe.momentum, g.spec.recipe.weight_decay) == \
            (z.spec.recipe.lr, z.spec.recipe.momentum, z.spec.recipe.weight_decay)
        compare_with_cfg_model(z, layers, params, seed=11)


def test_zoo_parameter_totals_by_hand():
    zoo = Path(__file__).resolve().parents[2] / "specs" / "zoo"
    convs = (32 * 3 * 25 + 32) + (32 * 32 * 25 + 32) + (64 * 32 * 25 + 64)
    want = {"cifar10-18pct": convs + 64 * 16 * 10 + 10,                 # 89,578
            "cifar10-80sec": convs + 64 * 16 * 64 + 64 + 64 * 10 + 10}  # 145,578
    for name, total in want.items():
        g = build_graph((zoo / f"{name}.net").read_text())
        assert sum(int(np.prod(v)) for v in g.param_shapes().values()) == total
        assert f"{total:,} parameters" in (zoo / f"{name}.net").read_text()


NORMS = """\
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv1]
type=conv
inputs=data
channels=3
filters=16
padding=1
filterSize=3
neuron=tanh[1.5,0.5]
[cm]
type=cmrnorm
inputs=conv1
channels=16
size=5
scale=0.3
pow=0.75
[cn]
type=cnorm
inputs=cm
channels=16
size=4
scale=2.5
pow=0.6
[loc]
type=local
inputs=cn
channels=16
filters=4
filterSize=3
stride=2
[fc]
type=fc
inputs=loc
outputs=5
[probs]
type=softmax
inputs=fc
[cost]
type=cost.logreg
inputs=labels,probs
"""


def test_cmrnorm_cnorm_local_and_a_neuron(tmp_path):
    imp, g = imported_graph(tmp_path, NORMS, None, shape=(3, 9, 9))
    assert g.layer("cm").type == "lrn" and g.layer("cm").attrs["alpha"] == pytest.approx(0.3 / 5)
    assert g.layer("cn").type == "cnorm" and g.layer("cn").attrs["alpha"] == 2.5
    assert g.layer("conv1_neuron").type == "tanh"
    assert g.layer("loc").out_shape == (4, 4, 4)
    assert g.param_shapes()["loc.bias"] == (4, 4, 4)       # one bias per output pixel
    params = draw(g, 5)
    x = np.random.default_rng(6).standard_normal((2, 3, 9, 9))
    net = build(g, "numpy", dtype=np.float64)
    net.load_parameters(params)
    P = {k: torch.from_numpy(v) for k, v in params.items()}
    # the cfg model up to cn (tanh[a,b] = a·tanh(b·x)), then local and fc from the formula
    h = torch.nn.functional.conv2d(torch.from_numpy(x), P["conv1.weight"], P["conv1.bias"],
                                   padding=1)
    h = 1.5 * torch.tanh(0.5 * h)
    layers = {d["name"]: d for d in ccn.read(NORMS)}
    h = ccn._norm(ccn._norm(h, layers["cm"]), layers["cn"])
    w, b = P["loc.weight"], P["loc.bias"]
    y = torch.empty(2, 4, 4, 4, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            y[:, :, i, j] = torch.einsum("ncuv,ocuv->no",
                                         h[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3],
                                         w[:, i, j]) + b[:, i, j]
    z = (y.flatten(1) @ P["fc.weight"].T + P["fc.bias"]).numpy()
    assert np.abs(net.forward(x) - z).max() <= 1e-10 * np.abs(z).max()


BAD = """\
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv1]
type=conv
inputs=data
channels=3
filters=16
padding=0
stride=2
filterSize=4
[pool1]
type=pool
pool=max
inputs=conv1
start=-1
sizeX=3
stride=2
channels=16
[n1]
type=neuron
inputs=pool1
neuron=linear[2,1]
[blur]
type=blur
inputs=n1
[rn]
type=cmrnorm
inputs=n1
channels=16
size=4
scale=0.001
pow=0.75
blocked=1
[fc]
type=fc
inputs=rn
outputs=10
[probs]
type=softmax
inputs=fc
[cost]
type=cost.sum2
inputs=probs
"""
BAD_PARAMS = """\
[fc]
epsW=0.001
epsB=0.002
momW=0.9
momB=0.9
wc=lots
"""


def test_every_unsupported_construct_at_once_and_nothing_written(tmp_path):
    lp, pp = write(tmp_path, BAD, BAD_PARAMS)
    out, run = tmp_path / "bad.net", tmp_path / "run"
    res = CliRunner().invoke(main, ["import", str(lp), "--params", str(pp), "--input",
                                    "3x15x15", "-o", str(out), "--out", str(run)])
    assert res.exit_code == 2, res.output
    text = res.output
    want = [
        (7, 2, "layer 'conv1': required parameter 'epsw' missing"),   # not in the params file
        (13, 8, "cuda-convnet sizes conv output with ceil, 1 + ceil((2*0 + 15 - 4) / 2) = 7; "
                "netspec's with floor (6)"),
        (19, 7, "start=-1"),
        (26, 8, "neuron linear[a,b]: netspec has no a·x + b layer"),
        (28, 6, "blur: cuda-convnet's in-network image processing"),
        (34, 6, "size 4: netspec's lrn centres its window"),
        (37, 9, "blocked cross-map windows"),
        (46, 6, "cost.sum2"),
    ]
    for line, col, msg in want:
        assert f"{lp}:{line}:{col}: error: " in text, (line, col, text)
        assert msg in text, (msg, text)
    assert f"{pp}:6:4: error: layer 'fc': parameter 'wc' must be a number; got 'lots'" in text
    assert text.rstrip().endswith(f"{len(want) + 1} errors")
    assert "^" in text and "Traceback" not in text
    assert not out.exists() and not run.exists()


def test_layer_after_a_refused_one_is_not_blamed(tmp_path):
    bad = ccn.LAYERS_18PCT.replace("type=rnorm\ninputs=pool1", "type=rnormx\ninputs=pool1")
    lp, pp = write(tmp_path, bad, ccn.PARAMS_18PCT)
    with pytest.raises(SpecError) as e:
        import_model(lp, params=pp, input_shape=(3, 32, 32))
    assert len(e.value.diagnostics) == 1
    assert "unknown layer type 'rnormx' (did you mean 'rnorm'?)" in str(e.value)


def test_the_image_size_is_asked_for(tmp_path):
    lp, _ = write(tmp_path, ccn.LAYERS_18PCT)
    with pytest.raises(SpecError, match=r"layers.cfg:2:2: error: layer 'data': .*--input CxHxW"):
        import_model(lp)


def test_a_checkpoint_is_refused_unopened(tmp_path):
    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "unpickled",))
    ckpt = tmp_path / "ConvNet__2014-01-01"
    ckpt.write_bytes(pickle.dumps({"model_state": Boom()}))
    lp, pp = write(tmp_path, ccn.LAYERS_18PCT, ccn.PARAMS_18PCT)
    res = CliRunner().invoke(main, ["import", str(lp), "--params", str(pp), "--input",
                                    "3x32x32", "--weights", str(ckpt), "--out",
                                    str(tmp_path / "run")])
    assert res.exit_code == 2 and "never unpickles" in res.output
    assert not (tmp_path / "unpickled").exists() and not (tmp_path / "run").exists()


def test_cli_writes_a_spec_that_compiles(tmp_path):
    lp, pp = write(tmp_path, ccn.LAYERS_80SEC, ccn.PARAMS_80SEC)
    out = tmp_path / "c.net"
    res = CliRunner().invoke(main, ["import", str(lp), "--params", str(pp), "--input",
                                    "3x32x32", "-o", str(out)])
    assert res.exit_code == 0, res.output
    g = build_graph(out.read_text())
    assert g.layer("fc64").decay_mult == 7.5 and g.layer("fc64").relu


def test_a_darknet_cfg_is_not_taken_for_cuda_convnet(tmp_path):
    lp, _ = write(tmp_path, ccn.LAYERS_18PCT)
    assert detect_format(lp) == "cudaconvnet"
    dark = tmp_path / "yolo.cfg"
    dark.write_text("[net]\nwidth=32\nheight=32\n\n[convolutional]\nfilters=16\nsize=3\n")
    try:
        assert detect_format(dark) != "cudaconvnet"
    except SpecError:
        pass                     # no darknet importer here: "can't tell the format"


RESIDUAL = """\
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv-a]
type=conv
inputs=data
channels=3
filters=4
padding=1
filterSize=3
neuron=relu
[conv-b]
type=conv
inputs=conv-a
channels=4
filters=4
padding=1
filterSize=3
[sum]
type=eltsum
inputs=conv-a,conv-b
neuron=relu
[cat]
type=concat
inputs=sum,conv-a
[fc]
type=fc
inputs=cat
outputs=3
[probs]
type=softmax
inputs=fc
[cost]
type=cost.logreg
inputs=labels,probs
"""


def test_joins_and_names_the_parser_refuses(tmp_path):
    """eltsum (a residual add with its neuron) and concat, reading layers named with '-'
    (refused in spec layer names): renamed, in their `from` lists too."""
    imp, g = imported_graph(tmp_path, RESIDUAL, None, shape=(3, 5, 5))
    assert [l.name for l in g.compute_layers] == \
        ["conv_a", "conv_b", "sum", "sum_neuron", "cat", "fc", "probs"]
    assert g.layer("sum").inputs == ["conv_a", "conv_b"]
    assert g.layer("cat").inputs == ["sum_neuron", "conv_a"]
    assert g.layer("cat").out_shape == (8, 5, 5)
    params = draw(g, 8)
    x = np.random.default_rng(9).standard_normal((2, 3, 5, 5))
    net = build(g, "numpy", dtype=np.float64)
    net.load_parameters(params)
    P = {k: torch.from_numpy(v) for k, v in params.items()}
    conv = torch.nn.functional.conv2d
    a = torch.relu(conv(torch.from_numpy(x), P["conv_a.weight"], P["conv_a.bias"], padding=1))
    b = conv(a, P["conv_b.weight"], P["conv_b.bias"], padding=1)
    z = torch.cat([torch.relu(a + b), a], 1).flatten(1) @ P["fc.weight"].T + P["fc.bias"]
    assert np.abs(net.forward(x) - z.numpy()).max() <= 1e-10 * np.abs(z.numpy()).max()


TWO_INPUT_FC = """\
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[c1]
type=conv
inputs=data
channels=3
filters=4
filterSize=3
[c2]
type=conv
inputs=data
channels=3
filters=2
filterSize=3
[fc]
type=fc
inputs=c1,c2
outputs=3
initW=0.01,0.01
[probs]
type=softmax
inputs=fc
[cost]
type=cost.logreg
inputs=labels,probs
"""


def test_fc_over_several_inputs_sums_their_matrices(tmp_path):
    """cuda-convnet's fc with inputs=c1,c2 is W1·x1 + W2·x2 + b: netspec's fc over the
    channel concatenation, whose weight is [W1 | W2]; per-input lists of one value accepted,
    of several refused."""
    _, g = imported_graph(tmp_path, TWO_INPUT_FC, None, shape=(3, 6, 6))
    assert g.layer("fc").inputs == ["c1", "c2"]
    params = draw(g, 12)
    x = np.random.default_rng(13).standard_normal((2, 3, 6, 6))
    net = build(g, "numpy", dtype=np.float64)
    net.load_parameters(params)
    P = {k: torch.from_numpy(v) for k, v in params.items()}
    conv = torch.nn.functional.conv2d
    x1 = conv(torch.from_numpy(x), P["c1.weight"], P["c1.bias"]).flatten(1)
    x2 = conv(torch.from_numpy(x), P["c2.weight"], P["c2.bias"]).flatten(1)
    w1, w2 = P["fc.weight"][:, :x1.shape[1]], P["fc.weight"][:, x1.shape[1]:]
    z = (x1 @ w1.T + x2 @ w2.T + P["fc.bias"]).numpy()
    assert np.abs(net.forward(x) - z).max() <= 1e-10 * np.abs(z).max()
    lp, _ = write(tmp_path, TWO_INPUT_FC.replace("initW=0.01,0.01", "initW=0.01,0.02"))
    with pytest.raises(SpecError, match=r":23:7: error: layer 'fc': parameter 'initw' lists "
                                        r"0.01,0.02"):
        import_model(lp, input_shape=(3, 6, 6))
