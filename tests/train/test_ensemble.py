"""Ensembles (netspec/train/ensemble.py, `netspec eval --checkpoint A --checkpoint B`): the
averaged softmax of §6, checked against averages computed by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import netspec
from netspec.cli import main
from netspec.data import open_dataset
from netspec.errors import RunError
from netspec.train.ensemble import class_difference, ensemble_scores, run_ensemble

from runkit import TINY, write_run


def test_averaged_softmax_by_hand():
    """Three images, four classes. Member A is right on image 0 only, B on image 1 only; on
    image 2 neither ranks the label (1) first, but their average does: (0.45+0.4)/2 = 0.425
    beats (0.5+0.1)/2 = 0.3 and (0.05+0.5)/2 = 0.275."""
    a = np.array([[0.7, 0.1, 0.1, 0.1],
                  [0.6, 0.3, 0.05, 0.05],
                  [0.5, 0.45, 0.05, 0.0]])
    b = np.array([[0.2, 0.5, 0.2, 0.1],
                  [0.1, 0.8, 0.05, 0.05],
                  [0.1, 0.4, 0.5, 0.0]])
    y = np.array([0, 1, 1])
    # mean: [0.45, 0.30, 0.15, 0.10], [0.35, 0.55, 0.05, 0.05], [0.30, 0.425, 0.275, 0.0]
    res = ensemble_scores([a, b], y)
    assert res["top1_error"] == 0.0
    assert res["loss"] == pytest.approx(-(np.log(0.45) + np.log(0.55) + np.log(0.425)) / 3)
    assert ensemble_scores([a], y)["top1_error"] == pytest.approx(2 / 3)   # images 1, 2 wrong
    assert ensemble_scores([b], y)["top1_error"] == pytest.approx(2 / 3)   # images 0, 2 wrong
    # top-5 over 4 classes: always right; top-1 of the sum, not of the vote
    assert res["top5_error"] == 0.0


def test_class_difference_names_it():
    assert class_difference("a", ["x", "y"], "b", ["x", "y"]) is None
    msg = class_difference("runs/a", ["x", "y", "z"], "runs/b", ["x", "y", "w"])
    assert "only in runs/a: z" in msg and "only in runs/b: w" in msg
    msg = class_difference("runs/a", ["x", "y"], "runs/b", ["y", "x"])
    assert "label 0 is 'x' in runs/a but 'y' in runs/b" in msg


def _json(output: str) -> dict:
    """The JSON object printed on stdout (CliRunner mixes in stderr's progress bar)."""
    line = [ln for ln in output.splitlines() if "{" in ln][-1]
    return json.loads(line[line.index("{"):])


def _probs_by_hand(params, folder, ten_crop=False):
    net = netspec.build(TINY, "numpy")
    net.load_parameters(params)
    ds = open_dataset(str(folder), 72)
    xs, ys = [], []
    if ten_crop:
        with ds.ten_crop_batches("val", batch_size=4, crop=64) as batches:
            for x, y in batches:
                b = x.shape[0]
                xs.append(net.predict_proba(x.reshape(b * 10, 3, 64, 64))
                          .reshape(b, 10, -1).mean(axis=1))
                ys.append(np.array(y))      # the loader reuses its buffers
    else:
        with ds.loader("val", batch_size=7, crop=64, train=False) as batches:
            for x, y in batches:
                xs.append(net.predict_proba(x))
                ys.append(np.array(y))      # the loader reuses its buffers
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys)


def _errors(p, y):
    order = np.argsort(-p, axis=1, kind="stable")
    return (float(np.mean(order[:, 0] != y)),
            float(np.mean(~(order[:, :5] == y[:, None]).any(axis=1))))


@pytest.mark.parametrize("ten_crop", [False, True], ids=["centre", "10-crop"])
def test_eval_several_checkpoints(tmp_path, folder, ten_crop):
    runs = [write_run(tmp_path / f"r{i}", TINY, seed=i, data=str(folder))
            for i in range(3)]
    args = ["eval", "--backend", "numpy", "--json", "-b", "6"] + (["--ten-crop"] if ten_crop else [])
    for path, _ in runs:
        args += ["--checkpoint", str(path)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = _json(res.output)
    probs = [_probs_by_hand(params, folder, ten_crop) for _, params in runs]
    y = probs[0][1]
    assert out["images"] == len(y) == 20 and out["views"] == (10 if ten_crop else 1)
    for m, (p, _) in zip(out["members"], probs):
        t1, t5 = _errors(p, y)
        assert (m["top1_error"], m["top5_error"]) == pytest.approx((t1, t5))
    mean = sum(p for p, _ in probs) / 3
    t1, t5 = _errors(mean, y)
    assert (out["ensemble"]["top1_error"], out["ensemble"]["top5_error"]) == \
        pytest.approx((t1, t5))
    assert out["ensemble"]["loss"] == pytest.approx(
        -np.mean(np.log(mean[np.arange(20), y])), rel=1e-5)
    # the text table lists each member and the ensemble
    args.remove("--json")
    text = CliRunner().invoke(main, args).output
    assert "ensemble of 3 runs on 20 val images" in text
    assert all(str(p) in text for p, _ in runs)


def test_one_member_equals_plain_eval(tmp_path, folder):
    """A member's figures equal `netspec eval` of that checkpoint alone."""
    (a, _), (b, _) = (write_run(tmp_path / f"r{i}", TINY, seed=i, data=str(folder))
                      for i in range(2))
    r = CliRunner()
    single = _json(r.invoke(main, ["eval", "--backend", "numpy", "--json",
                                   "--checkpoint", str(b)]).output)
    ens = _json(r.invoke(main, ["eval", "--backend", "numpy", "--json", "--checkpoint",
                                str(a), "--checkpoint", str(b)]).output)
    assert ens["members"][1]["top1_error"] == pytest.approx(single["top1_error"])
    assert ens["members"][1]["top5_error"] == pytest.approx(single["top5_error"])


def test_class_lists_must_match(tmp_path, folder):
    classes = [f"class{i:02d}" for i in range(10)]
    a, _ = write_run(tmp_path / "a", TINY, data=str(folder))
    b, _ = write_run(tmp_path / "b", TINY, data=str(folder), classes=classes[1:] + ["dog"])
    c, _ = write_run(tmp_path / "c", TINY, data=str(folder), classes=classes[::-1])
    with pytest.raises(RunError, match="only in .*a: class00.*only in .*b: dog"):
        run_ensemble(checkpoints=[str(a), str(b)], backend="numpy")
    res = CliRunner().invoke(main, ["eval", "--backend", "numpy", "--checkpoint", str(a),
                                    "--checkpoint", str(c)])
    assert res.exit_code == 2
    assert "label 0 is 'class00'" in res.output and "'class09'" in res.output
