"""netspec/codegen/onnx_export.py preprocessing_metadata: an exported run carries what
`netspec predict` does to an image (mean image, base, crop, channel order, scale), so an
onnxruntime user who reads only the file's metadata gets predict's probabilities."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from netspec.cli import main
from netspec.train.predict import Predictor, predict_files

from runkit import TINY, write_run

onnx = pytest.importorskip("onnx", reason="pip install 'netspec[onnx]' (in the test extra)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in netspec's test extra")


def test_metadata_reproduces_predict(tmp_path):
    rng = np.random.default_rng(4)
    mean = rng.uniform(60, 180, (72, 72, 3)).astype(np.float32)
    run, _ = write_run(tmp_path / "run", TINY, seed=2, mean=mean)
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(main, ["export", str(spec), "--checkpoint", str(run), "-o", str(out)])
    assert r.exit_code == 0, r.output

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    pre = json.loads(meta["netspec.preprocessing"])
    assert (pre["channel_order"], pre["layout"], pre["base"], pre["crop"]) == (
        "RGB", "NCHW", 72, 64)
    read_mean = np.frombuffer(base64.b64decode(meta["netspec.mean_image"]), "<f4")
    read_mean = read_mean.reshape(pre["base"], pre["base"], 3)
    np.testing.assert_array_equal(read_mean, mean)

    # an image already base x base, so the rescale is the identity; built here from the
    # metadata alone: minus the mean, the centre crop, planar, float32 in 0..255
    pixels = rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    off = (pre["base"] - pre["crop"]) // 2
    x = (pixels.astype(np.float32) - read_mean)[off:off + pre["crop"], off:off + pre["crop"]]
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got, = session.run(None, {"data": x})

    result, = predict_files(Predictor.from_run(run), [str(tmp_path / "x.png")], top=10)
    want = np.zeros(10)
    for row in result["top"]:
        want[row["label"]] = row["probability"]
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-7)


def test_without_a_run_there_is_no_mean(tmp_path):
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(main, ["export", str(spec), "-o", str(out)])
    assert r.exit_code == 0, r.output
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    pre = json.loads(meta["netspec.preprocessing"])
    assert "netspec.mean_image" not in meta and pre["mean"].startswith("none")
    assert pre["base"] == pre["crop"] == 64


def _predicted(output: str) -> dict[str, np.ndarray]:
    """image -> probabilities by label, from `predict --json` lines."""
    out = {}
    for line in output.splitlines():
        res = json.loads(line)
        p = np.zeros(len(res["top"]))
        for row in res["top"]:
            p[row["label"]] = row["probability"]
        out[res["image"]] = p
    return out


@pytest.mark.parametrize("ten_crop", [False, True], ids=["centre", "ten-crop"])
def test_predict_takes_the_exported_onnx_model(tmp_path, ten_crop):
    """`netspec predict --checkpoint model.onnx` (onnxruntime, preprocessing from the file's
    metadata alone) gives the run's own probabilities on images of other sizes too."""
    rng = np.random.default_rng(7)
    mean = rng.uniform(60, 180, (72, 72, 3)).astype(np.float32)
    classes = [f"n{i:08d}" for i in range(10)]
    run, _ = write_run(tmp_path / "run", TINY, seed=5, mean=mean, classes=classes)
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    model = tmp_path / "m.onnx"
    r = CliRunner().invoke(main, ["export", str(spec), "--checkpoint", str(run), "-o",
                                  str(model)])
    assert r.exit_code == 0, r.output
    images = []
    for i, size in enumerate([(72, 72), (90, 120), (200, 81)]):
        path = tmp_path / f"x{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    flags = ["--top", "10", "--json"] + (["--ten-crop"] if ten_crop else [])
    by_run = CliRunner().invoke(main, ["predict", "--backend", "numpy", "--checkpoint",
                                       str(run), *flags, *images])
    by_onnx = CliRunner().invoke(main, ["predict", "--checkpoint", str(model), *flags,
                                        *images])
    assert by_run.exit_code == 0 and by_onnx.exit_code == 0, by_run.output + by_onnx.output
    want, got = _predicted(by_run.output), _predicted(by_onnx.output)
    assert sorted(got) == sorted(images)
    for image in images:
        np.testing.assert_allclose(got[image], want[image], rtol=1e-4, atol=1e-7)
        assert abs(got[image].sum() - 1) < 1e-5
    first = json.loads(by_onnx.output.splitlines()[0])["top"][0]
    assert first["class"] in classes


def _tampered(model, tmp_path, key, value):
    m = onnx.load(str(model))
    props = {p.key: p.value for p in m.metadata_props}
    if value is None:
        props.pop(key)
    else:
        props[key] = value
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, props)
    out = tmp_path / f"t{len(list(tmp_path.glob('t*.onnx')))}.onnx"
    onnx.save(m, str(out))
    return out


def test_predict_refuses_an_onnx_model_with_bad_metadata(tmp_path):
    mean = np.full((72, 72, 3), 100, np.float32)
    run, _ = write_run(tmp_path / "run", TINY, seed=1, mean=mean)
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    model = tmp_path / "m.onnx"
    assert CliRunner().invoke(main, ["export", str(spec), "--checkpoint", str(run), "-o",
                                     str(model)]).exit_code == 0
    Image.fromarray(np.zeros((72, 72, 3), np.uint8)).save(tmp_path / "x.png")
    pre = json.loads({p.key: p.value for p in onnx.load(str(model)).metadata_props}[
        "netspec.preprocessing"])
    cases = [
        ("netspec.preprocessing", None, "lacks metadata 'netspec.preprocessing'"),
        ("netspec.preprocessing", "[1, 2]", "'netspec.preprocessing' is a list, not a dict"),
        ("netspec.preprocessing", json.dumps({**pre, "crop": "64"}), "field 'crop' is '64'"),
        ("netspec.mean_image", "AAAA", "holds 3 bytes, not 72x72x3"),
        ("netspec.classes", json.dumps(["a"] * 11), "lists 11 entries, not 10"),
    ]
    for key, value, message in cases:
        bad = _tampered(model, tmp_path, key, value)
        r = CliRunner().invoke(main, ["predict", "--checkpoint", str(bad),
                                      str(tmp_path / "x.png")])
        assert r.exit_code == 2, (key, r.output)
        assert message in r.output and "Traceback" not in r.output, (key, r.output)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    r = CliRunner().invoke(main, ["predict", "--checkpoint", str(junk), str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "onnxruntime cannot load this model" in r.output, r.output
