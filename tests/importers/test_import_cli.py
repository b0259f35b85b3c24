"""`netspec import` end to end: a Caffe model becomes a spec and a run directory that
predict, export, eval and train --init-from take as they take a netspec run.

Oracles: OpenCV's readNetFromCaffe on the same files and image (read by cv2.imread, BGR,
minus the .binaryproto mean, as Caffe's pipeline does); onnxruntime for the exported model.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from netspec.cli import main

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 is in the test extra")
sys.path.insert(0, str(Path(__file__).parent))
from caffe_files import blob  # noqa: E402
from test_caffe import LRN_NET, opencv, write_model  # noqa: E402

CLASSES = "n001 apple\nn002 pear, a fruit\nn003 plum\nn004 fig\n"


@pytest.fixture
def imported(tmp_path):
    proto, model = write_model(tmp_path, LRN_NET, v1=False, last_scale=0.05)
    rng = np.random.default_rng(5)
    mean_bgr = rng.uniform(60, 180, (3, 12, 12)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(blob(mean_bgr[None]))
    (tmp_path / "classes.txt").write_text(CLASSES)
    run, spec = tmp_path / "run", tmp_path / "lrn.net"
    res = CliRunner().invoke(main, ["import", str(proto), "--weights", str(model),
                                    "--mean", str(tmp_path / "mean.binaryproto"),
                                    "--classes", str(tmp_path / "classes.txt"),
                                    "--out", str(run), "-o", str(spec)])
    assert res.exit_code == 0, res.output
    return tmp_path, proto, model, mean_bgr, run, spec


def test_predict_takes_the_imported_run(imported):
    tmp, proto, model, mean_bgr, run, spec = imported
    image = np.random.default_rng(6).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    path = tmp / "image.png"
    cv2.imwrite(str(path), image)                      # written and read back BGR
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(run), str(path), "--json",
                                    "--top", "4", "--backend", "numpy"])
    assert res.exit_code == 0, res.output
    top = json.loads(next(line for line in res.output.splitlines()
                          if line.startswith("{")))["top"]
    bgr = cv2.imread(str(path)).astype(np.float32).transpose(2, 0, 1) - mean_bgr
    want = opencv(proto, model, np.ascontiguousarray(bgr[None]))[0]
    got = np.zeros(4)
    for row in top:
        got[row["label"]] = row["probability"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert {row["class"]: row["name"] for row in top}["n002"] == "pear, a fruit"


def test_export_and_init_from_take_the_imported_run(imported):
    tmp, proto, model, mean_bgr, run, spec = imported
    ort = pytest.importorskip("onnxruntime")
    out = tmp / "lrn.onnx"
    res = CliRunner().invoke(main, ["export", str(spec), "--checkpoint", str(run), "-o",
                                    str(out)])
    assert res.exit_code == 0, res.output
    x = np.random.default_rng(7).uniform(-100, 100, (2, 3, 12, 12)).astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    want = opencv(proto, model, np.ascontiguousarray(x[:, ::-1]))   # OpenCV reads BGR
    np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-4, atol=1e-6)

    import netspec
    from netspec.train.init_from import init_from_run
    initial = netspec.build(spec.read_text(), backend="numpy").parameters()
    merged, report = init_from_run(run, initial)
    assert len(report.copied) == 4 and not report.fresh and not report.ignored


def test_eval_takes_the_imported_run(imported, tmp_path):
    tmp, proto, model, mean_bgr, run, spec = imported
    rng = np.random.default_rng(8)
    for split in ("train", "val"):
        for c in ("n001", "n002", "n003", "n004"):
            folder = tmp / "data" / split / c
            folder.mkdir(parents=True)
            for i in range(2):
                cv2.imwrite(str(folder / f"{i}.png"),
                            rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(run), "--data",
                                    str(tmp / "data"), "--json"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout[res.stdout.index("{"):])
    assert figures["images"] == 8 and 0.0 <= figures["top1_error"] <= 1.0


def test_refusals_exit_2_and_write_nothing(tmp_path):
    proto = tmp_path / "bad.prototxt"
    proto.write_text(LRN_NET.replace('type: "LRN"', 'type: "ELU"')
                     .replace('type: "InnerProduct"', 'type: "PReLU"'))
    run, spec = tmp_path / "run", tmp_path / "bad.net"
    res = CliRunner().invoke(main, ["import", str(proto), "--out", str(run), "-o", str(spec)])
    assert res.exit_code == 2
    assert "ELU" in res.output and "PReLU" in res.output and "2 errors" in res.output
    assert "Traceback" not in res.output
    assert not run.exists() and not spec.exists()


def test_weights_need_out(tmp_path):
    proto, model = write_model(tmp_path, LRN_NET, v1=False)
    res = CliRunner().invoke(main, ["import", str(proto), "--weights", str(model)])
    assert res.exit_code == 2 and "--weights needs --out" in res.output
    res = CliRunner().invoke(main, ["import", str(proto)])
    assert res.exit_code == 0 and "network lrn" in res.output
