"""darknet import (netspec/importers/darknet.py) against OpenCV's own darknet reader.

Oracle: cv2.dnn.readNetFromDarknet reads the same cfg and .weights (its own parser and
layers) and runs them; netspec runs the imported spec on the NumPy backend. The .weights
files are written by darknet_files.py from the format's description, random (He-scaled
weights, batchnorm statistics off 0 and 1). OpenCV is fed darknet's input (pixels / 255),
netspec the pixels (0..255: the import folds the 1/255 into the first layer). Tolerance
1e-4 relative to the largest output.

What OpenCV 4.x's reader takes (probed): [convolutional] (batch_normalize, groups),
[connected], [maxpool], [avgpool], [dropout], [softmax], [shortcut], [route], [cost], and
the activations linear, relu, leaky, logistic, tanh, mish, swish; not [crop], [local], ramp
or the other activations. Two differences from darknet: OpenCV reads a batch-normalized
[connected]'s arrays in the convolutional's order (biases, scales, means, variances, weights)
where darknet's load_connected_weights reads biases, weights, scales, means, variances (so
OpenCV is given a file with that one layer's arrays reordered), and it sizes a [connected]
after a one-layer [route] from the wrong layer (so no test has that).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import netspec
from netspec.cli import main
from netspec.dsl.errors import SpecError
from netspec.importers.darknet import import_darknet, read_cfg
from netspec.ir.build import build_graph

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 is in the test extra")
sys.path.insert(0, str(Path(__file__).parent))
from darknet_files import ALEXNET_CFG, random_weights  # noqa: E402

SLOW = os.environ.get("NETSPEC_RUN_SLOW") == "1"


def write(tmp: Path, cfg: str, name: str = "net", seed: int = 0, last_scale: float = 1.0,
          **version):
    path = tmp / f"{name}.cfg"
    path.write_text(cfg)
    _, r = read_cfg(path)
    layout = [(lyr.type, lyr.attrs.get("filters") or lyr.attrs["outputs"], fan_in,
               norm is not None) for _, lyr, norm, fan_in in r.weighted]
    weights = tmp / f"{name}.weights"
    weights.write_bytes(random_weights(layout, seed, last_scale, **version))
    (tmp / f"{name}.opencv.weights").write_bytes(
        random_weights(layout, seed, last_scale, opencv=True, **version))
    return path, weights


def opencv_weights(weights: Path) -> Path:
    """The same arrays as `weights`, a batch-normalized [connected]'s in the order OpenCV
    reads them (see random_weights)."""
    return weights.with_suffix(".opencv.weights")


def opencv(cfg, weights, x):
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(x)
    return net.forward()


def netspec_out(imp, x, proba: bool):
    net = netspec.build(imp.spec_text(), backend="numpy")
    net.load_parameters(imp.parameters())
    return net.predict_proba(x) if proba else net.forward(x)


def close(got, want):
    got, want = got.reshape(len(got), -1), want.reshape(len(want), -1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


NET = "[net]\nheight={h}\nwidth={w}\nchannels={c}\n\n"


def section(name, **opts):
    return f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in opts.items()) + "\n"


# a network of every section and activation both read: batchnorm, groups, leaky, darknet's
# maxpool padding (even and odd maps), shortcut, route (concat and a single layer)
YOLOISH = (NET.format(h=19, w=19, c=3)
           + section("convolutional", batch_normalize=1, filters=16, size=3, stride=1, pad=1,
                     activation="leaky")
           + section("maxpool", size=2, stride=2)                  # 19 -> 10: ceil
           + section("convolutional", filters=16, size=3, stride=1, pad=1, groups=4,
                     activation="relu")
           + section("convolutional", batch_normalize=1, filters=16, size=1, stride=1,
                     pad=1, activation="logistic")
           + section("shortcut", **{"from": -3}, activation="linear")
           + section("convolutional", filters=8, size=3, stride=1, padding=1,
                     activation="tanh")
           + section("route", layers="-1,-2")
           + section("maxpool", size=3, stride=2)                  # 10 -> 5, default padding
           + section("route", layers=-2)
           + section("convolutional", filters=8, size=3, stride=2, pad=1,
                     activation="linear")                          # 10 -> 5
           + section("route", layers="-1,-3")
           + section("maxpool", size=3, stride=1, padding=2)
           + section("convolutional", filters=6, size=1, activation="linear")
           + section("avgpool")
           + section("softmax", groups=1))
# (no [connected] after the one-layer [route]: OpenCV 4.14's reader then sizes its weight
# from the wrong layer and fails; the connected sections are tested below)


def test_yoloish_network_against_opencv(tmp_path):
    cfg, weights = write(tmp_path, YOLOISH, last_scale=0.3)
    imp = import_darknet(cfg, weights)
    x = np.random.default_rng(1).uniform(0, 1, (2, 3, 19, 19)).astype(np.float32)
    close(netspec_out(imp, 255 * x, True), opencv(cfg, weights, x))
    spec = imp.spec_text()
    for line in ("conv conv1 filters 16 size 3 pad 1 nobias", "batchnorm conv1_bn eps 1e-06",
                 "leaky conv1_bn_leaky slope 0.1", "maxpool maxpool1 size 2 stride 2 ceil",
                 "conv conv2 filters 16 size 3 pad 1 groups 4 relu",
                 "add shortcut1 from conv3_bn_logistic, maxpool1",
                 "concat route1 from conv4_tanh, shortcut1",
                 "maxpool maxpool2 size 3 stride 2 pad 1",
                 "conv conv5 from route1 filters 8 size 3 stride 2 pad 1",
                 "concat route2 from conv5, maxpool2",
                 "conv conv6 filters 6 size 1", "avgpool avgpool1 global", "softmax prob"):
        assert line in {" ".join(ln.split("   #")[0].split()) for ln in spec.splitlines()}, \
            (line, spec)
    assert "input scale: darknet reads pixels / 255" in spec


def test_maxpool_padding_is_darknets(tmp_path):
    """darknet's maxpool frames the input with padding/2 cells before and the rest after
    (default padding size - 1), output (W + padding - size) / stride + 1: 13 -> 7 with size
    2 stride 2 (ceil in netspec), 7 -> 4 with size 3 stride 2 (pad 1), 4 -> 4 with size 3
    stride 1 padding 2 (pad 1)."""
    cfg_text = (NET.format(h=13, w=13, c=2)
                + section("maxpool", size=2, stride=2)
                + section("maxpool", size=3, stride=2)
                + section("maxpool", size=3, stride=1, padding=2)
                + section("connected", output=5, activation="linear"))
    cfg, weights = write(tmp_path, cfg_text)
    imp = import_darknet(cfg, weights)
    x = np.random.default_rng(2).uniform(0, 1, (2, 2, 13, 13)).astype(np.float32)
    close(netspec_out(imp, 255 * x, False), opencv(cfg, weights, x))
    spec = imp.spec_text()
    graph = build_graph(text=spec)
    assert [graph.layer(f"maxpool{i}").out_shape for i in (1, 2, 3)] == \
        [(2, 7, 7), (2, 4, 4), (2, 4, 4)]
    assert "darknet's maxpool padding 1 (size - 1, its default): 0 before, 1 after" in spec
    assert re.search(r"(?m)^maxpool maxpool1 size 2 stride 2 ceil", spec)


@pytest.mark.parametrize("version", [(0, 1), (0, 2), (1, 0)], ids=["seen-int32", "0.2",
                                                                    "1.0"])
def test_weights_header_versions(tmp_path, version):
    """`seen` is int32 before version 0.2 and int64 from it on."""
    cfg_text = (NET.format(h=6, w=6, c=3)
                + section("convolutional", batch_normalize=1, filters=4, size=3, pad=1,
                          activation="leaky")
                + section("dropout", probability=0.25)
                + section("connected", output=7, batch_normalize=1, activation="leaky")
                + section("connected", output=5, activation="linear"))
    cfg, weights = write(tmp_path, cfg_text, major=version[0], minor=version[1])
    imp = import_darknet(cfg, weights)
    x = np.random.default_rng(3).uniform(0, 1, (2, 3, 6, 6)).astype(np.float32)
    close(netspec_out(imp, 255 * x, False), opencv(cfg, opencv_weights(weights), x))
    assert f"darknet format {version[0]}.{version[1]}.0" in imp.spec_text()


def alexnet_layout(size: int, fc: int, relu: bool = True) -> str:
    """darknet's alexnet.cfg with smaller sizes (and, for OpenCV, relu for ramp)."""
    text = ALEXNET_CFG
    if relu:
        text = text.replace("activation=ramp", "activation=relu")
    if not SLOW:
        text = text.replace("height=256", f"height={size + 8}").replace(
            "width=256", f"width={size + 8}").replace("crop_height=224", f"crop_height={size}")
        text = text.replace("crop_width=224", f"crop_width={size}").replace(
            "output=4096", f"output={fc}")
    return text


def test_darknet_alexnet_cfg_layout(tmp_path):
    """darknet's alexnet.cfg (ramp replaced by relu: neither netspec nor OpenCV has ramp).
    Its [crop] maps pixels / 255 to 2x - 1 at test time: the import's mean image is 127.5 and
    conv1's weight is scaled by 2/255. OpenCV has no [crop]: it reads the same cfg without
    it at the crop's size and is fed 2x/255 - 1 of the crop."""
    size, full = (224, 256) if SLOW else (63, 71)
    text = alexnet_layout(size, 64)
    cfg, weights = write(tmp_path, text, last_scale=0.05)
    imp = import_darknet(cfg, weights)
    assert imp.input_shape == (3, size, size) and imp.mean.shape == (full, full, 3)
    assert np.all(imp.mean == 127.5)
    no_crop = re.sub(r"\[crop\][^\[]*", "", text)
    no_crop = no_crop.replace(f"height={full}", f"height={size}").replace(
        f"width={full}", f"width={size}")
    (tmp_path / "oc.cfg").write_text(no_crop)
    pixels = np.random.default_rng(4).uniform(0, 255, (2, 3, size, size)).astype(np.float32)
    want = opencv(tmp_path / "oc.cfg", weights, 2 * pixels / 255 - 1)
    close(netspec_out(imp, pixels - 127.5, True), want)
    spec = imp.spec_text()
    assert "darknet's [crop] maps pixels / 255 to 2x - 1" in spec
    assert f"augment crop {size} from {full}" in spec
    assert re.search(r"(?m)^maxpool maxpool1 size 3 stride 2 pad 1 ", spec)


def test_ramp_and_other_constructs_are_all_reported(tmp_path):
    """alexnet.cfg as darknet ships it: its eight ramp activations are refused, each at its
    line; then darknet's size-2 stride-1 maxpool (after a [local]), an option netspec doesn't read
    and a route to a later layer, all at once; exit 2 and nothing written."""
    (tmp_path / "alexnet.cfg").write_text(ALEXNET_CFG)
    with pytest.raises(SpecError) as e:
        read_cfg(tmp_path / "alexnet.cfg")
    msg = str(e.value)
    ramps = [m.start() for m in re.finditer("activation=ramp", ALEXNET_CFG)]
    lines = [ALEXNET_CFG.count("\n", 0, i) + 1 for i in ramps]
    for n in lines:
        assert re.search(rf"alexnet.cfg:{n}:12: error: \[\w+\] activation=ramp "
                         rf"\(x·\(x > 0\) \+ 0.1·x\) has no netspec layer type", msg), msg
    assert msg.count("error:") == 8
    bad = (NET.format(h=8, w=8, c=3)
           + section("local", filters=4, size=3, stride=1, pad=1, activation="relu")
           + section("maxpool", size=2, stride=1)
           + section("convolutional", filters=4, size=3, dilation=2, activation="linear")
           + section("route", layers=7)
           + section("softmax", groups=2))
    (tmp_path / "bad.cfg").write_text(bad)
    res = CliRunner().invoke(main, ["import", str(tmp_path / "bad.cfg"), "-o",
                                    str(tmp_path / "bad.net")])
    assert res.exit_code == 2
    out = res.output
    assert "bad.cfg:13:1: error: [maxpool] layer 1: darknet's padding 1" in out
    assert "bad.cfg:20:10: error: [convolutional] dilation" in out
    assert "bad.cfg:24:8: error: [route] layers=7: layer 7 is not before layer 3" in out
    assert "bad.cfg:27:8: error: [softmax] groups=2" in out
    assert "^" in out
    assert not (tmp_path / "bad.net").exists()


def test_weights_that_do_not_fit_name_the_layer(tmp_path):
    cfg_text = (NET.format(h=6, w=6, c=3)
                + section("convolutional", filters=4, size=3, pad=1, activation="leaky")
                + section("connected", output=5, activation="linear"))
    cfg, weights = write(tmp_path, cfg_text)
    data = weights.read_bytes()
    (tmp_path / "short.weights").write_bytes(data[:-8])
    with pytest.raises(SpecError, match=r"short.weights: error: \[connected\] layer 1 "
                                        r"\('fc1'\): the file ends"):
        import_darknet(cfg, tmp_path / "short.weights")
    (tmp_path / "long.weights").write_bytes(data + b"\0" * 8)
    with pytest.raises(SpecError, match="2 float32 values left after the last layer"):
        import_darknet(cfg, tmp_path / "long.weights")


def test_import_writes_a_run_predict_takes(tmp_path):
    cfg, weights = write(tmp_path, YOLOISH, last_scale=0.3)
    res = CliRunner().invoke(main, ["import", str(cfg), "--weights", str(weights), "--out",
                                    str(tmp_path / "run"), "-o", str(tmp_path / "y.net")])
    assert res.exit_code == 0, res.output
    image = np.random.default_rng(5).integers(0, 256, (19, 19, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "i.png"), image[:, :, ::-1])       # RGB image, BGR file
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(tmp_path / "run"),
                                    str(tmp_path / "i.png"), "--top", "6", "--json",
                                    "--backend", "numpy"])
    assert res.exit_code == 0, res.output
    import json
    top = json.loads(next(ln for ln in res.output.splitlines() if ln.startswith("{")))["top"]
    got = np.zeros(6)
    for row in top:
        got[row["label"]] = row["probability"]
    x = image.transpose(2, 0, 1)[None].astype(np.float32) / 255
    np.testing.assert_allclose(got, opencv(cfg, weights, x).reshape(-1), atol=1e-4)


def test_pixels_over_255_are_folded_into_the_first_layer(tmp_path):
    """darknet feeds pixels / 255; netspec feeds pixels: conv1's weight is the file's / 255
    (its bias as it is), and no later layer's weight changes."""
    cfg_text = (NET.format(h=6, w=6, c=3)
                + section("maxpool", size=2, stride=2)
                + section("convolutional", filters=4, size=3, pad=1, activation="relu")
                + section("connected", output=5, activation="linear"))
    cfg, weights = write(tmp_path, cfg_text)
    floats = np.frombuffer(weights.read_bytes(), "<f4", offset=20)
    imp = import_darknet(cfg, weights)
    params = imp.parameters()
    np.testing.assert_array_equal(params["conv1.bias"], floats[:4])
    np.testing.assert_allclose(params["conv1.weight"].reshape(-1),
                               floats[4:4 + 108] / np.float32(255), rtol=3e-7)
    np.testing.assert_array_equal(params["fc1.weight"].reshape(-1), floats[4 + 108 + 5:])


def darknet_local_forward(x, weights, biases, n, size, stride, pad):
    """forward_local_layer (local_layer.c) as darknet computes it, in float64: im2col_cpu's
    columns ((c, ky, kx) rows, `pad` zeros around), then per location j the (n x c·k·k)
    weight block j times column j, plus one bias per output value."""
    b, c, h, w = x.shape
    oh = (h - 1) // stride + 1 if pad else (h - size) // stride + 1
    ow = (w - 1) // stride + 1 if pad else (w - size) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((b, c * size * size, oh * ow))
    for row in range(c * size * size):
        kx, ky, ch = row % size, (row // size) % size, row // size // size
        patch = xp[:, ch, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
        cols[:, row] = patch.reshape(b, -1)
    wl = weights.reshape(oh * ow, n, c * size * size)
    out = np.einsum("jnk,bkj->bnj", wl, cols) + biases.reshape(1, n, oh * ow)
    return out.reshape(b, n, oh, ow)


@pytest.mark.parametrize("size,stride,pad", [(3, 1, 1), (3, 2, 0), (5, 1, 2)])
def test_local_against_darknets_own_forward(tmp_path, size, stride, pad):
    """[local]: per-output biases and per-location weights in darknet's file order, and its
    pad (im2col's padding, not size/2), against local_layer.c's forward computed here
    (OpenCV's reader has no [local]); then a leaky activation and a connected layer."""
    h, c, n = 7, 3, 4
    cfg_text = (NET.format(h=h, w=h, c=c)
                + section("local", filters=n, size=size, stride=stride, pad=pad,
                          activation="leaky")
                + section("connected", output=5, activation="linear"))
    cfg = tmp_path / "local.cfg"
    cfg.write_text(cfg_text)
    oh = (h - 1) // stride + 1 if pad else (h - size) // stride + 1
    rng = np.random.default_rng(3)
    lb = rng.normal(0, 0.1, n * oh * oh)
    lw = rng.normal(0, 0.3, oh * oh * n * c * size * size)
    fb, fw = rng.normal(0, 0.1, 5), rng.normal(0, 0.2, 5 * n * oh * oh)
    from darknet_files import header
    (tmp_path / "local.weights").write_bytes(header() + b"".join(
        np.asarray(a, "<f4").tobytes() for a in (lb, lw, fb, fw)))
    imp = import_darknet(cfg, tmp_path / "local.weights")
    spec = " ".join(imp.spec_text().split())
    assert f"local local1 filters {n} size {size}" in spec
    x = rng.uniform(0, 1, (2, c, h, h))
    f32 = lambda a: np.asarray(a, np.float32).astype(np.float64)          # noqa: E731
    y = darknet_local_forward(x, f32(lw), f32(lb), n, size, stride, pad)
    y = np.where(y > 0, y, 0.1 * y)
    want = y.reshape(2, -1) @ f32(fw).reshape(5, -1).T + f32(fb)
    close(netspec_out(imp, (255 * x).astype(np.float32), False), want)


def test_local_whose_padding_darknet_mis_sizes_is_refused(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(NET.format(h=7, w=7, c=3)
                   + section("local", filters=2, size=5, stride=1, pad=1, activation="linear"))
    with pytest.raises(SpecError, match=r"\[local\] layer 0: size 5 with pad=1: darknet "
                                        r"sizes its maps 7x7 but its windows cover 5x5"):
        read_cfg(cfg)
