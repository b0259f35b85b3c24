"""Caffe import (netspec/importers/caffe.py) against OpenCV's own Caffe reader.

Oracle: cv2.dnn.readNetFromCaffe reads the same prototxt and caffemodel (its own protobuf
parser, its own layers) and runs them; netspec runs the imported spec on the NumPy backend.
The caffemodels are written by caffe_files.py from the format's documentation, so OpenCV
reading them also checks that writer. Weights are He-scaled random (outputs far from uniform,
so a wrong convention shows), inputs uniform in ±100 (pixel-sized, so LRN's denominator
matters). Tolerance: 1e-4 relative to the largest output. OpenCV is fed BGR, netspec RGB (the
import reverses the first layer's input channels).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.dsl.errors import SpecError
from netspec.importers.caffe import import_caffe, read_deploy
from netspec.ir.build import build_graph

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 is in the test extra")
sys.path.insert(0, str(Path(__file__).parent))
from caffe_files import alexnet_v1, blob, caffemodel, random_blobs  # noqa: E402

RTOL = 1e-4
TYPES = {"conv": ("CONVOLUTION", "Convolution"), "fc": ("INNER_PRODUCT", "InnerProduct")}


def write_model(tmp: Path, text: str, *, v1: bool, legacy: bool = False, seed: int = 0,
                last_scale: float = 1.0, name: str = "net"):
    """The prototxt and a caffemodel of random weights for it; (prototxt, caffemodel)."""
    proto = tmp / f"{name}.prototxt"
    proto.write_text(text)
    imp, names = read_deploy(proto)
    shapes = build_graph(imp.spec_text()).param_shapes()
    weighted = [l for l in imp.layers if l.type in TYPES]
    blobs = random_blobs({names[l.name]: (shapes[f"{l.name}.weight"], shapes[f"{l.name}.bias"])
                          for l in weighted}, seed)
    blobs[names[weighted[-1].name]][0] *= np.float32(last_scale)
    layers = [(names[l.name], TYPES[l.type][0 if v1 else 1], blobs[names[l.name]])
              for l in weighted]
    model = tmp / f"{name}.caffemodel"
    model.write_bytes(caffemodel(layers, v1=v1, legacy=legacy))
    return proto, model


def opencv(proto, model, x, layer=None, fusion=True):
    """OpenCV's output at `layer` (a layer's name), else the network's. fusion=False where an
    inner layer is read that OpenCV would fold into another (BatchNorm, Scale and ReLU into
    the conv before them: the folded layer's own output is then not what its name says)."""
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    net.enableFusion(fusion)
    net.setInput(x)
    return net.forward(layer) if layer else net.forward()


def netspec_net(imp):
    net = netspec.build(imp.spec_text(), backend="numpy")
    net.load_parameters(imp.parameters())
    return net


def close(got, want):
    want = want.reshape(got.shape)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < RTOL, f"relative error {err:.3g}"
    return err


def pixels(shape, seed=1):
    return np.random.default_rng(seed).uniform(-100, 100, shape).astype(np.float32)


def test_alexnet_v1_as_bvlc_alexnet_describes_it(tmp_path):
    """bvlc_alexnet's deploy (V1 enums, input_dim, blobs_lr, group 2, LRN 5/1e-4/0.75,
    227x227), fc6/fc7 reduced to 256 and fc8 to 10 classes to keep the caffemodel at 13 MB
    (the convolutions are AlexNet's own widths)."""
    proto, model = write_model(tmp_path, alexnet_v1(fc=256, classes=10), v1=True,
                               last_scale=0.01)
    imp = import_caffe(proto, model)
    spec = imp.spec_text()
    assert "input   3x227x227" in spec and "groups 2" in spec        # conv4, conv5
    assert "lrn     norm1 size 5 alpha 2e-05 beta 0.75 k 1" in spec
    assert "conv    conv1 filters 96 size 11 stride 4 relu" in spec
    x = pixels((2, 3, 227, 227))
    net = netspec_net(imp)
    rgb = np.ascontiguousarray(x[:, ::-1])
    for layer in ("norm1", "norm2", "pool5", "fc8"):
        close(net.features(rgb, layer), opencv(proto, model, x, layer))
    p = net.predict_proba(rgb)
    close(p, opencv(proto, model, x))
    assert 0.2 < p.max() < 0.99                   # not saturated: the comparison means something


@pytest.mark.skipif(not __import__("os").environ.get("NETSPEC_RUN_SLOW"),
                    reason="the full-size AlexNet (244 MB caffemodel): NETSPEC_RUN_SLOW=1")
def test_alexnet_full_size(tmp_path):
    proto, model = write_model(tmp_path, alexnet_v1(), v1=True, last_scale=0.01)
    imp = import_caffe(proto, model)
    from netspec.importers.caffe import read_caffemodel
    assert sum(b.size for bs in read_caffemodel(model).values() for b in bs) == 60_965_224
    # conv2 stays grouped: (256, 48, 5, 5), the paper's count
    assert build_graph(imp.spec_text()).total_params == 60_965_224
    x = pixels((1, 3, 227, 227))
    close(netspec_net(imp).predict_proba(np.ascontiguousarray(x[:, ::-1])),
          opencv(proto, model, x))


V2 = """name: "small-v2"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 20 dim: 20 } } }
layer { name: "conv1/3x3" type: "Convolution" bottom: "data" top: "c1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 6 kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "c1" top: "p1"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "p1" top: "p1" }
layer { name: "ip1" type: "InnerProduct" bottom: "p1" top: "ip1"
        inner_product_param { num_output: 7 } }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.3 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""


def test_v2_dialect_with_legacy_blob_shapes(tmp_path):
    """V2: an Input layer, string types, param { lr_mult }; blobs with the legacy
    num/channels/height/width fields (an fc weight as (1, 1, 7, 600)); average pooling; a
    ReLU after a pool stays a layer; a name with '/' made valid."""
    proto, model = write_model(tmp_path, V2, v1=False, legacy=True, last_scale=0.05)
    imp = import_caffe(proto, model)
    spec = imp.spec_text()
    assert "conv    conv1_3x3 filters 6 size 3 pad 1" in spec
    assert "named 'conv1/3x3' in the source" in spec
    assert "relu    relu1" in spec and "dropout drop p 0.3" in spec
    assert "bias lr_mult 2" in spec
    x = pixels((3, 3, 20, 20))
    p = netspec_net(imp).predict_proba(np.ascontiguousarray(x[:, ::-1]))
    close(p, opencv(proto, model, x))


LRN_NET = """name: "lrn"
input: "data"
input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 16 kernel_size: 3 } }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
        lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 k: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "norm1" top: "fc"
        inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_lrn_alpha_is_divided_by_local_size(tmp_path):
    """BVLC/caffe#1453: Caffe's LRN is x / (k + alpha/n · Σx²)^beta; netspec's alpha is the
    paper's, not divided, so the import writes alpha/n. Undivided, the outputs differ.
    k is 1 here: OpenCV 4.x's Caffe reader ignores lrn_param's k (it reads 'bias'), so with
    k 2 it computes k = 1 where Caffe would not (0.27 relative error against netspec's k 2)."""
    proto, model = write_model(tmp_path, LRN_NET, v1=False)
    imp = import_caffe(proto, model)
    assert "lrn norm1 size 5 alpha 2e-05 beta 0.75 k 1" in " ".join(imp.spec_text().split())
    x = pixels((2, 3, 12, 12)) * 3
    rgb = np.ascontiguousarray(x[:, ::-1])
    want = opencv(proto, model, x, "norm1")
    close(netspec_net(imp).features(rgb, "norm1"), want)
    imp.layers[1].attrs["alpha"] = 1e-4                  # the Caffe number, not converted
    wrong = netspec_net(imp).features(rgb, "norm1")
    assert np.abs(wrong - want).max() / np.abs(want).max() > 1e-2


CEIL = """name: "ceil"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "prob" type: "Softmax" bottom: "pool1" top: "prob" }
"""


@pytest.mark.parametrize("size,stride,pad,ceil", [(8, 2, 0, True), (9, 2, 0, False),
                                                  (6, 2, 1, True), (7, 2, 1, False),
                                                  (7, 3, 1, False)])
def test_ceil_pooling_is_converted(tmp_path, size, stride, pad, ceil):
    """Caffe sizes pooling with ceil((d + 2p - k) / s) + 1, less one where the last window
    would start in the padding. conv1's 6x6 pooled 3/2 is 3x3 (floor: 2x2), so the layer is
    written with 'ceil'; 4x4 with pad 1 likewise; where the two agree it says so; 5x5 pooled
    3/3 with pad 1 is ceil's 3x3 less Caffe's correction, 2x2, which floor gives. Against
    OpenCV at the pool."""
    text = CEIL.replace("input_dim: 8 input_dim: 8", f"input_dim: {size} input_dim: {size}")
    text = text.replace("kernel_size: 3 stride: 2 }", f"kernel_size: 3 stride: {stride} pad: {pad} }}")
    text = text.replace('layer { name: "prob" type: "Softmax" bottom: "pool1"',
                        'layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"\n'
                        '        inner_product_param { num_output: 5 } }\n'
                        'layer { name: "prob" type: "Softmax" bottom: "fc"')
    proto, model = write_model(tmp_path, text, v1=False)
    imp = import_caffe(proto, model)
    spec = " ".join(imp.spec_text().split())
    line = f"maxpool pool1 size 3 stride {stride}" + (f" pad {pad}" if pad else "") + \
        (" ceil" if ceil else "")
    assert line + " " in spec, spec
    assert ("so 'ceil'" in spec) == ceil and ("both give" in spec) == (not ceil)
    x = pixels((2, 3, size, size))
    close(netspec_net(imp).features(np.ascontiguousarray(x[:, ::-1]), "pool1"),
          opencv(proto, model, x, "pool1"))


GROUPED = """name: "conv2"
input: "data"
input_dim: 1 input_dim: 96 input_dim: 15 input_dim: 15
layers { name: "conv2" type: CONVOLUTION bottom: "data" top: "conv2"
         convolution_param { num_output: 256 kernel_size: 5 group: 2 } }
layers { name: "relu2" type: RELU bottom: "conv2" top: "conv2" }
layers { name: "pool2" type: POOLING bottom: "conv2" top: "pool2"
         pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool2" top: "fc"
         inner_product_param { num_output: 5 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""


def test_grouped_conv2_layout(tmp_path):
    """AlexNet's conv2: group 2, weights (256, 48, 5, 5) (BVLC/caffe#4014): netspec's
    `groups 2` takes Caffe's layout as it is; group k reads channels 48k..48k+47."""
    proto, model = write_model(tmp_path, GROUPED, v1=True, last_scale=0.01)
    imp = import_caffe(proto, model)
    assert "conv    conv2 filters 256 size 5 groups 2 relu" in imp.spec_text()
    assert imp.parameters()["conv2.weight"].shape == (256, 48, 5, 5)
    x = pixels((2, 96, 15, 15)) / 10
    net = netspec_net(imp)
    close(net.features(x, "conv2"), np.maximum(opencv(proto, model, x, "conv2"), 0))
    close(net.predict_proba(x), opencv(proto, model, x))


def test_an_lrn_after_a_grouped_conv_spans_all_channels(tmp_path):
    """Caffe's norm2 after the grouped conv2 normalises across all 256 channels; so does a
    netspec lrn after a grouped conv on one GPU (the IR gives it one part over the groups).
    The conv stays grouped and norm2 matches OpenCV (normalising within each group would be
    0.2 relative error at AlexNet's norm2)."""
    text = GROUPED.replace('layers { name: "pool2"',
                           'layers { name: "norm2" type: LRN bottom: "conv2" top: "norm2" '
                           'lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }\n'
                           'layers { name: "pool2"').replace('bottom: "conv2" top: "pool2"',
                                                             'bottom: "norm2" top: "pool2"')
    proto, model = write_model(tmp_path, text, v1=True, last_scale=0.01)
    imp = import_caffe(proto, model)
    assert "groups 2" in imp.spec_text().split("conv    conv2")[1].split("\n")[0]
    assert imp.parameters()["conv2.weight"].shape == (256, 48, 5, 5)
    x = pixels((2, 96, 15, 15))
    close(netspec_net(imp).features(x, "norm2"), opencv(proto, model, x, "norm2"))


def test_bgr_input_and_binaryproto_mean(tmp_path):
    """Caffe reads BGR minus a mean image from a .binaryproto (opencv#9625, DIGITS#52). The
    import reverses conv1's input channels and stores the mean RGB, so that netspec's
    pipeline (RGB) gives Caffe's numbers."""
    proto, model = write_model(tmp_path, LRN_NET, v1=False, last_scale=0.05)
    rng = np.random.default_rng(3)
    mean_bgr = rng.uniform(80, 160, (3, 12, 12)).astype(np.float32)
    mean_bgr[0] += 40                                     # B differs from R
    (tmp_path / "mean.binaryproto").write_bytes(blob(mean_bgr[None], legacy=True))
    imp = import_caffe(proto, model, tmp_path / "mean.binaryproto")
    assert imp.channel_order == "RGB"
    np.testing.assert_array_equal(imp.mean, mean_bgr.transpose(1, 2, 0)[:, :, ::-1])
    image_rgb = rng.integers(0, 256, (2, 12, 12, 3)).astype(np.float32)
    bgr = image_rgb[..., ::-1].transpose(0, 3, 1, 2) - mean_bgr
    ours = (image_rgb - imp.mean).transpose(0, 3, 1, 2)
    close(netspec_net(imp).predict_proba(np.ascontiguousarray(ours)),
          opencv(proto, model, np.ascontiguousarray(bgr)))


BRANCHES = """name: "branches"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
        batch_norm_param { eps: 0.001 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
        scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "a" type: "Convolution" bottom: "pool1" top: "a"
        convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "a_bn" type: "BatchNorm" bottom: "a" top: "a_bn" }
layer { name: "sum" type: "Eltwise" bottom: "pool1" bottom: "a_bn" top: "sum" }
layer { name: "sum_relu" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "b" type: "Convolution" bottom: "sum" top: "b"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "b_sig" type: "Sigmoid" bottom: "b" top: "b" }
layer { name: "c" type: "Convolution" bottom: "sum" top: "c"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "c_tanh" type: "TanH" bottom: "c" top: "c" }
layer { name: "d" type: "Convolution" bottom: "sum" top: "d"
        convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "d_leaky" type: "ReLU" bottom: "d" top: "d" relu_param { negative_slope: 0.2 } }
layer { name: "d_abs" type: "AbsVal" bottom: "d" top: "d" }
layer { name: "d_bnll" type: "BNLL" bottom: "d" top: "d" }
layer { name: "cat" type: "Concat" bottom: "b" bottom: "c" bottom: "d" top: "cat" }
layer { name: "gap" type: "Pooling" bottom: "cat" top: "gap"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "gap" top: "fc"
        inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_batch_norm_scale_eltwise_concat_and_activations(tmp_path):
    """A branching V2 net (the ResNet and Inception constructs): BatchNorm + Scale in place
    (Caffe's mean, variance and scale-factor blobs), a BatchNorm alone, an in-place ReLU fused
    into an Eltwise SUM, three branches concatenated, Sigmoid/TanH/leaky ReLU/AbsVal/BNLL,
    padded ceil max-pooling and global average pooling: against OpenCV's Caffe reader."""
    proto = tmp_path / "branches.prototxt"
    proto.write_text(BRANCHES)
    rng = np.random.default_rng(3)
    r = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)      # noqa: E731
    pos = lambda n: rng.uniform(0.5, 2.0, n).astype(np.float32)          # noqa: E731
    factor = np.array([4.0], np.float32)            # Caffe stores mean·f and var·f, and f
    layers = [("conv1", "Convolution", [r(8, 3, 3, 3)]),
              ("bn1", "BatchNorm", [r(8) * factor, pos(8) * factor, factor]),
              ("scale1", "Scale", [pos(8), r(8)]),
              ("a", "Convolution", [r(8, 8, 1, 1), r(8)]),
              ("a_bn", "BatchNorm", [r(8), pos(8), np.array([1.0], np.float32)]),
              ("b", "Convolution", [r(4, 8, 3, 3), r(4)]),
              ("c", "Convolution", [r(4, 8, 3, 3), r(4)]),
              ("d", "Convolution", [r(4, 8, 1, 1), r(4)]),
              ("fc", "InnerProduct", [r(5, 12) * 0.05, r(5)])]
    model = tmp_path / "branches.caffemodel"
    model.write_bytes(caffemodel(layers))
    imp = import_caffe(proto, model)
    spec = " ".join(imp.spec_text().split())
    for line in ("conv conv1 filters 8 size 3 pad 1 nobias", "batchnorm bn1 eps 0.001 momentum 0.001",
                 "maxpool pool1 size 3 stride 2 pad 1 ceil", "add sum from pool1, a_bn relu",
                 "conv c from sum filters 4 size 3 pad 1", "logistic b_sig", "tanh c_tanh",
                 "leaky d_leaky slope 0.2", "abs d_abs", "softrelu d_bnll",
                 "concat cat from b_sig, c_tanh, d_bnll", "avgpool gap global"):
        assert line + " " in spec, (line, imp.spec_text())
    assert "gamma and beta from Caffe's Scale 'scale1'" in spec
    x = pixels((2, 3, 10, 10)) / 50
    net = netspec_net(imp)
    rgb = np.ascontiguousarray(x[:, ::-1])
    for layer, theirs in (("bn1", "scale1"), ("a_bn", "a_bn"), ("sum", "sum_relu"),
                          ("cat", "cat"), ("fc", "fc")):
        close(net.features(rgb, layer), opencv(proto, model, x, theirs, fusion=False))
    p = net.predict_proba(rgb)
    close(p, opencv(proto, model, x))
    assert 0.3 < p.max() < 0.99


def test_unsupported_constructs_are_all_reported(tmp_path):
    text = """name: "bad"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_h: 3 kernel_w: 5 } }
layer { name: "conv2" type: "Convolution" bottom: "data" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "sc" type: "Scale" bottom: "conv2" top: "conv2" }
layer { name: "pool1" type: "Pooling" bottom: "conv2" top: "pool1"
        pooling_param { pool: STOCHASTIC kernel_size: 2 } }
layer { name: "prod" type: "Eltwise" bottom: "conv2" bottom: "conv2" top: "prod"
        eltwise_param { operation: PROD } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum" }
layer { name: "elu" type: "ELU" bottom: "conv2" top: "elu" }
layer { name: "after" type: "ReLU" bottom: "elu" top: "after" }
"""
    proto = tmp_path / "bad.prototxt"
    proto.write_text(text)
    with pytest.raises(SpecError) as e:
        import_caffe(proto)
    msg = str(e.value)
    assert "kernel_size 3 x 5 differs between height and width" in msg
    assert ":8:26: error: layer 'sc': a Scale that does not follow a BatchNorm" in msg
    assert "pool STOCHASTIC" in msg
    assert "layer 'prod': Eltwise PROD" in msg
    assert "layer 'elu': Caffe's ELU has no netspec layer type" in msg
    assert "'sum'" not in msg and "'after'" not in msg     # readers of refused layers: no echo
    assert msg.rstrip().endswith("5 errors"), msg


def test_prototxt_syntax_error_points_at_the_token(tmp_path):
    proto = tmp_path / "syntax.prototxt"
    proto.write_text('name: "x"\nlayer {\n  name "conv1"\n}\nlayer { name: }\n')
    with pytest.raises(SpecError) as e:
        read_deploy(proto)
    msg = str(e.value)
    assert ":3:8: error: expected ':' or '{' after the field name 'name'" in msg
    assert ":5:15: error: expected a value after 'name:'" in msg


def test_caffemodel_mismatches_are_all_reported(tmp_path):
    proto, model = write_model(tmp_path, LRN_NET, v1=False)
    bad = caffemodel([("conv1", "Convolution", [np.zeros((16, 3, 5, 5), np.float32),
                                                np.zeros(16, np.float32)])])
    model.write_bytes(bad)
    with pytest.raises(SpecError) as e:
        import_caffe(proto, model)
    msg = str(e.value)
    assert f"{model}: error: layer 'conv1' weight: the weights file's blob has shape " \
           f"(16, 3, 5, 5)" in msg
    assert f"{model}: error: layer 'fc': not in the weights file" in msg
    model.write_bytes(b"\x0b\x00garbage")
    with pytest.raises(SpecError, match="not a Caffe NetParameter"):
        import_caffe(proto, model)
