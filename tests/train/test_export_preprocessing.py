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
