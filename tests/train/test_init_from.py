"""Fine-tuning (`netspec train --init-from RUN`, netspec/train/init_from.py): what is copied,
initialised anew and ignored, frozen layers (`lr_mult 0`), and a fresh optimizer state.

Oracles: the source run's arrays as written to disk, `netspec.build(spec, seed)`'s
initialisation (the spec's init for the seed), and the paper's update rule with zero momentum.
"""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

import netspec
from netspec.cli import main
from netspec.errors import RunError
from netspec.runtime.noise import image_noise
from netspec.train.checkpoint import load_checkpoint
from netspec.train.init_from import merge_parameters
from netspec.train.loop import Trainer, TrainOptions

from runkit import write_run
from trainkit import tiny_spec


def test_merge_by_name_and_shape():
    initial = {"a.weight": np.zeros((2, 3), np.float32), "b.weight": np.zeros(4, np.float32),
               "c.weight": np.zeros(1, np.float32)}
    source = {"a.weight": np.ones((2, 3), np.float64), "b.weight": np.ones(5),
              "z.weight": np.ones(2)}
    out, rep = merge_parameters(initial, source, "runs/src")
    assert out["a.weight"].dtype == np.float32 and (out["a.weight"] == 1).all()
    assert (out["b.weight"] == 0).all() and (out["c.weight"] == 0).all()
    assert [r[0] for r in rep.copied] == ["a.weight"]
    assert [(r[0], r[2]) for r in rep.fresh] == [("b.weight", "(5,) in runs/src"),
                                                 ("c.weight", "not in runs/src")]
    assert [r[0] for r in rep.ignored] == ["z.weight"]
    table = rep.table()
    assert table.splitlines()[0] == ("init from runs/src: 1 copied, 2 initialised anew, "
                                     "1 ignored")
    assert "b.weight" in table and "initialised anew  (5,) in runs/src" in table


# the source: pre-trained for 12 classes; the target: 10 classes, a sixth conv layer after
# conv5 (the paper's fine-tuning with an extra convolutional layer, §6), conv1 frozen
SIXTH = "conv    conv6  filters 64  size 3 pad 1  relu  connect same-gpu  bias 1  weight gauss(0.05)\n"


def _target() -> str:
    t = tiny_spec(batch="8", epochs="1")
    t = t.replace("relu  weight gauss(0.05)\nlrn     norm1",
                  "relu  weight gauss(0.05)  lr_mult 0\nlrn     norm1", 1)
    t = t.replace("maxpool pool5", SIXTH + "maxpool pool5", 1)
    assert "lr_mult 0" in t and "conv6" in t
    return t


def _source(tmp_path, folder):
    text = tiny_spec().replace("classes 10", "classes 12").replace(
        "outputs 10         connect all", "outputs 12 connect all")
    run, params = write_run(tmp_path / "src", text, seed=9, data=str(folder),
                            classes=[f"c{i}" for i in range(12)])
    tensors = load_file(str(run / "checkpoint.safetensors"))
    tensors["aux.weight"] = np.ones(3, np.float32)          # a layer the target lacks
    save_file(tensors, str(run / "checkpoint.safetensors"))
    return run, params


def test_fine_tune_copies_reinitialises_freezes(tmp_path, folder):
    src, sparams = _source(tmp_path, folder)
    target = _target()
    lines = []
    opts = TrainOptions(spec=target, data=str(folder), backend="numpy", seed=3,
                        init_from=str(src), max_steps=2, out=str(tmp_path / "ft"),
                        progress=False)
    t = Trainer(opts, echo=lines.append)
    table = lines[0]
    assert table.startswith(f"init from {src}: 14 copied, 4 initialised anew, 1 ignored")
    init = netspec.build(target, "numpy", seed=3).parameters()     # the spec's init, seed 3
    for name, a in t.net.parameters().items():
        if name.startswith(("conv6.", "fc8.")):
            np.testing.assert_array_equal(a, init[name])
        else:
            np.testing.assert_array_equal(a, sparams[name])
    assert "fc8.weight" in table and "(12, 256) in" in table
    assert "conv6.weight" in table and "not in" in table
    assert "aux.weight" in table and "ignored" in table
    # a new run: step 0, zero momentum, the recipe's learning rate
    assert (t.step, t.epoch, t.batch) == (0, 0, 0)
    assert all(not v.any() for v in t.momentum.values())
    assert t.schedule.lr == pytest.approx(0.01)
    t.run()
    params, momentum, state = load_checkpoint(tmp_path / "ft")
    assert state["step"] == 2
    # conv1 (lr_mult 0) is frozen bit for bit, and its velocity never moved
    np.testing.assert_array_equal(params["conv1.weight"], sparams["conv1.weight"])
    np.testing.assert_array_equal(params["conv1.bias"], sparams["conv1.bias"])
    assert not momentum["conv1.weight"].any()
    assert not np.array_equal(params["conv2.weight"], sparams["conv2.weight"])   # trained
    assert not np.array_equal(params["conv6.weight"], init["conv6.weight"])


def test_first_step_uses_zero_momentum(tmp_path, folder):
    """After one step every trained parameter moved by exactly −ε(λw + g) (v₀ = 0, §5);
    checked on fc8's bias, where the gradient is the batch's softmax − one-hot mean."""
    src, _ = _source(tmp_path, folder)
    opts = TrainOptions(spec=_target(), data=str(folder), backend="numpy", seed=3,
                        init_from=str(src), max_steps=1, out=str(tmp_path / "ft1"),
                        progress=False, dtype="float64")
    t = Trainer(opts, echo=lambda *a: None)
    w0 = t.net.parameters()
    # the first batch and dropout masks, as the loop will draw them
    loader = t.ds.loader("train", batch_size=8, crop=64, seed=3, epoch=0)
    with loader:
        x, y = next(iter(loader))
        x, y = x.astype(np.float64), np.array(y)
    t.net.rng = image_noise(3, 0, 0, len(y))     # per image, as the loop draws them
    _, g = t.net.loss_and_grads(x, y, train=True)
    t.net.load_parameters(w0)
    t.run()
    w1 = t.net.parameters()
    eps, wd = 0.01, 0.0005
    want = w0["fc8.bias"] - eps * (wd * w0["fc8.bias"] + g["fc8.bias"])
    np.testing.assert_allclose(w1["fc8.bias"], want, rtol=1e-10, atol=1e-12)


def test_cli_flags(tmp_path, folder):
    r = CliRunner()
    res = r.invoke(main, ["train", "--resume", str(tmp_path), "--init-from", str(tmp_path)])
    assert res.exit_code == 2 and "give one of them" in res.output
    spec = tmp_path / "t.net"
    spec.write_text(_target())
    res = r.invoke(main, ["train", "--spec", str(spec), "--data", str(folder), "--backend",
                          "numpy", "--init-from", str(tmp_path / "nope"), "--no-progress",
                          "--out", str(tmp_path / "ft")])
    assert res.exit_code == 2 and "no such run directory" in res.output
    assert not (tmp_path / "ft").exists()
    with pytest.raises(RunError):
        Trainer(TrainOptions(spec=str(spec), data=str(folder), backend="numpy",
                             init_from=str(tmp_path / "nope"), out=str(tmp_path / "ft")))
