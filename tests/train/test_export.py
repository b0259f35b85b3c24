"""`netspec export` (netspec/train/export.py): the written file run by onnxruntime against
netspec's forward with the same weights (a run's, or the spec's initial ones for the seed)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import netspec
from netspec.cli import main

from runkit import TINY, write_run

onnx = pytest.importorskip("onnx", reason="pip install 'netspec[onnx]' (in the test extra)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in netspec's test extra")


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _x(n=3):
    return np.random.default_rng(7).normal(0, 60, (n, 3, 64, 64)).astype(np.float32)


@pytest.fixture
def spec_file(tmp_path):
    p = tmp_path / "tiny.net"
    p.write_text(TINY)
    return p


def test_initial_weights_for_the_seed(tmp_path, spec_file):
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(main, ["export", str(spec_file), "--seed", "5", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output and "seed 5" in res.output
    onnx.checker.check_model(str(out))
    want = netspec.build(TINY, "numpy", seed=5).predict_proba(_x())
    got, = _session(out).run(None, {"data": _x()})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    other = netspec.build(TINY, "numpy", seed=6).parameters()["conv1.weight"]
    init = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    assert not np.allclose(init["conv1.weight"], other)          # the seed matters


def test_checkpoint_weights_and_class_names(tmp_path, spec_file):
    classes = [f"n{i:08d}" for i in range(10)]
    words = [f"thing {i}" for i in range(10)]
    run, params = write_run(tmp_path / "run", TINY, classes=classes, seed=3, class_names=words)
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(main, ["export", str(spec_file), "--checkpoint", str(run),
                                    "-o", str(out)])
    assert res.exit_code == 0, res.output
    net = netspec.build(TINY, "numpy")
    net.load_parameters(params)
    got, = _session(out).run(None, {"data": _x()})
    np.testing.assert_allclose(got, net.predict_proba(_x()), rtol=1e-4, atol=1e-7)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["netspec.classes"]) == classes
    assert json.loads(meta["netspec.class_names"]) == words
    assert meta["netspec.network"] == "tiny-alexnet"


def test_default_output_is_network_onnx_in_cwd(tmp_path, spec_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["export", str(spec_file)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "tiny-alexnet.onnx").is_file()
    assert f"wrote {tmp_path / 'tiny-alexnet.onnx'}" in res.output


def test_errors_are_clean(tmp_path, spec_file, monkeypatch):
    r = CliRunner()
    run, _ = write_run(tmp_path / "run", TINY.replace("outputs 10         connect all",
                                                      "outputs 12 connect all")
                       .replace("classes 10", "classes 12"))
    res = r.invoke(main, ["export", str(spec_file), "--checkpoint", str(run), "-o",
                          str(tmp_path / "m.onnx")])
    assert res.exit_code == 2
    assert "fc8.weight has shape (12, 256), expected (10, 256)" in res.output
    assert not (tmp_path / "m.onnx").exists()
    res = r.invoke(main, ["export", str(spec_file), "--checkpoint", str(run), "--seed", "1"])
    assert res.exit_code == 2 and "--seed picks initial weights" in res.output
    res = r.invoke(main, ["export", str(spec_file), "--checkpoint", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no such run directory" in res.output
    monkeypatch.setitem(sys.modules, "onnx", None)          # the extra not installed
    res = r.invoke(main, ["export", str(spec_file), "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and "pip install 'netspec[onnx]'" in res.output
