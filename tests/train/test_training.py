"""Training runs: the fidelity trajectory against PyTorch, exact resume, metrics, errors."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import netspec
from netspec.cli import main
from netspec.data import open_dataset
from netspec.errors import RunError
from netspec.train.checkpoint import load_checkpoint
from netspec.train.loop import Trainer, TrainOptions

from trainkit import tiny_spec


def quiet(*a, **k):
    pass


def train(spec_path, folder, out, backend="numpy", **kw):
    opts = TrainOptions(spec=str(spec_path), data=str(folder), backend=backend,
                        out=str(out), progress=False, **kw)
    return Trainer(opts, echo=quiet).run()


# -- an independent PyTorch tiny-alexnet and the paper's update rule --------------------------
def lrn_halves(h, n=5, alpha=1e-4, beta=0.75, k=2.0):
    # torch divides alpha by n; the paper doesn't
    return torch.cat([F.local_response_norm(x, n, alpha=alpha * n, beta=beta, k=k)
                      for x in h.chunk(2, dim=1)], dim=1)


def torch_tiny(P, x):
    h = F.relu(F.conv2d(x, P["conv1.weight"], P["conv1.bias"], stride=2, padding=2))
    h = F.max_pool2d(lrn_halves(h), 3, 2)
    h = F.relu(F.conv2d(h, P["conv2.weight"], P["conv2.bias"], padding=2, groups=2))
    h = F.max_pool2d(lrn_halves(h), 3, 2)
    h = F.relu(F.conv2d(h, P["conv3.weight"], P["conv3.bias"], padding=1))
    h = F.relu(F.conv2d(h, P["conv4.weight"], P["conv4.bias"], padding=1, groups=2))
    h = F.relu(F.conv2d(h, P["conv5.weight"], P["conv5.bias"], padding=1, groups=2))
    h = F.max_pool2d(h, 3, 2).flatten(1)
    h = F.relu(F.linear(h, P["fc6.weight"], P["fc6.bias"]))
    h = F.relu(F.linear(h, P["fc7.weight"], P["fc7.bias"]))
    return F.linear(h, P["fc8.weight"], P["fc8.bias"])


def test_fidelity_trajectory_20_steps_against_pytorch(folder, tmp_path):
    """Dropout off, same initial weights, same batches, same hyper-parameters: after 20 steps
    netspec's weights equal a PyTorch loop implementing v <- 0.9 v - 0.0005 lr w - lr g,
    w <- w + v: max|a - b| <= 1e-9 * max|b| for every parameter, both in float64.

    float64, because at the spec's N(0, 0.01) init the maps after the bias-1 layers are
    1 + O(1e-5), so in float32 a max pool's choice is decided by rounding and two correct
    float32 implementations drift apart by ~1e-3 within 10 steps (measured); in float64 they
    agree to ~1e-12."""
    spec = tiny_spec().replace("p 0.5", "p 0")
    spec_path = tmp_path / "tiny.net"
    spec_path.write_text(spec)
    train(spec_path, folder, tmp_path / "run", max_steps=20, dtype="float64")
    got, _, state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 20

    init = netspec.build(spec, backend="numpy", seed=0, dtype=np.float64).parameters()
    P = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    V = {k: torch.zeros_like(v) for k, v in P.items()}
    ds = open_dataset(str(folder), 72)
    lr, mom, wd = 0.01, 0.9, 0.0005
    step, epoch = 0, 0
    while step < 20:
        with ds.loader("train", batch_size=8, crop=64, flip=True, pca_sigma=0.1, seed=0,
                       epoch=epoch) as batches:
            for x, y in batches:
                if step == 20:
                    break
                loss = F.cross_entropy(torch_tiny(P, torch.from_numpy(x).double()),
                                       torch.from_numpy(y))
                grads = torch.autograd.grad(loss, list(P.values()))
                with torch.no_grad():
                    for (k, w), g in zip(P.items(), grads):
                        V[k] = mom * V[k] - wd * lr * w - lr * g
                        w += V[k]
                step += 1
        epoch += 1
    moved = 0
    for k, w in P.items():
        ref = w.detach().numpy()
        err = np.abs(got[k] - ref).max() / np.abs(ref).max()
        assert err <= 1e-9, (k, err)
        moved += not np.allclose(ref, init[k])
    assert moved == len(P)   # every parameter was trained


@pytest.mark.parametrize("backend", ["numpy", "cpu", "opencl",
                                     pytest.param("cuda", marks=pytest.mark.gpu)])
def test_resume_is_bit_exact(folder, tmp_path, backend):
    spec_path = tmp_path / "tiny.net"
    spec_path.write_text(tiny_spec())
    train(spec_path, folder, tmp_path / "straight", max_steps=6, backend=backend)
    train(spec_path, folder, tmp_path / "split", max_steps=3, backend=backend)
    p3, _, s3 = load_checkpoint(tmp_path / "split")
    assert s3["step"] == 3 and s3["batch"] == 3
    Trainer(TrainOptions(resume=str(tmp_path / "split"), max_steps=6, progress=False),
            echo=quiet).run()
    a_p, a_m, a_s = load_checkpoint(tmp_path / "straight")
    b_p, b_m, b_s = load_checkpoint(tmp_path / "split")
    assert a_s["step"] == b_s["step"] == 6
    for k in a_p:
        assert np.array_equal(a_p[k], b_p[k]), k
        assert np.array_equal(a_m[k], b_m[k]), k
    assert not np.array_equal(p3["fc8.weight"], b_p["fc8.weight"])


@pytest.mark.gpu
def test_emulated_cuda_says_so_in_the_first_line(folder, tmp_path):
    """Where no GPU answers, backend cuda runs on the CPU emulator (NETSPEC_CUDA_EMULATE=1, set
    by tests/conftest.py) and the trainer's first line says it."""
    from netspec.runtime.cuda_backend import cuda_emulated
    if not cuda_emulated():
        pytest.skip("a CUDA device answers: the real one runs")
    spec_path = tmp_path / "tiny.net"
    spec_path.write_text(tiny_spec())
    lines = []
    Trainer(TrainOptions(spec=str(spec_path), data=str(folder), backend="cuda",
                         out=str(tmp_path / "run"), progress=False, max_steps=1),
            echo=lines.append).run()
    assert lines[0].startswith("netspec train: ") and "on cuda backend" in lines[0]
    assert "emulated on the CPU" in lines[0], lines[0]


def test_resume_across_an_epoch_boundary_and_metrics_schema(folder, tmp_path):
    # 40 images / batch 8 = 5 steps per epoch; stop at 7 (mid-epoch 2), resume to 12
    spec_path = tmp_path / "tiny.net"
    spec_path.write_text(tiny_spec())
    lines = []
    Trainer(TrainOptions(spec=str(spec_path), data=str(folder), backend="numpy",
                         out=str(tmp_path / "straight"), max_steps=12, progress=False),
            echo=lines.append).run()
    train(spec_path, folder, tmp_path / "split", max_steps=7)
    Trainer(TrainOptions(resume=str(tmp_path / "split"), max_steps=12, progress=False),
            echo=quiet).run()
    a, _, _ = load_checkpoint(tmp_path / "straight")
    b, _, _ = load_checkpoint(tmp_path / "split")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    rows = [json.loads(l) for l in (tmp_path / "straight" / "metrics.jsonl").read_text()
            .splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["step"] for r in rows] == [5, 10]
    # the epoch lines say that their percentages are errors, as metrics.jsonl does
    epoch_lines = [l for l in lines if l.startswith("epoch ")]
    assert len(epoch_lines) == 2
    for line, r in zip(epoch_lines, rows):
        assert f"val error top-1 {100 * r['val_top1_error']:.1f}%" in line, line
    for r in rows:
        assert {"epoch", "step", "lr", "train_loss", "val_top1_error", "val_top5_error",
                "images_per_sec"} <= set(r)
        assert 0 <= r["val_top1_error"] <= 1 and 0 <= r["val_top5_error"] <= r["val_top1_error"]
        assert r["lr"] == 0.01 and r["images_per_sec"] > 0 and math.isfinite(r["train_loss"])
    # the split run's metrics equal the straight run's (meters were resumed too)
    rows_b = [json.loads(l) for l in (tmp_path / "split" / "metrics.jsonl").read_text()
              .splitlines()]
    for ra, rb in zip(rows, rows_b):
        for k in ("train_loss", "val_top1_error", "val_top5_error"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-12), k


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(folder, tmp_path):
    spec_path = tmp_path / "tiny.net"
    spec_path.write_text(tiny_spec(sgd="lr 1e30 momentum 0.9 weight_decay 0.0005"))
    with pytest.raises(RunError, match=r"loss became (nan|inf)"):
        train(spec_path, folder, tmp_path / "run", max_steps=30)


def test_ten_crop_evaluation_is_the_mean_of_ten_softmaxes(folder):
    from netspec.train.evaluate import evaluate
    ds = open_dataset(str(folder), 72)
    net = netspec.build(tiny_spec(), backend="numpy", seed=3)
    got = evaluate(net, ds, crop=64, batch_size=20, ten_crop=True)
    # by hand: corners, centre, and their mirror images of (image - mean)
    c, base = 64, 72
    top1 = []
    for i in range(ds.size("val")):
        img = ds.image("val", i).astype(np.float32) - ds.mean.astype(np.float32)
        m = (base - c) // 2
        views = [img[0:c, 0:c], img[0:c, base - c:], img[base - c:, 0:c],
                 img[base - c:, base - c:], img[m:m + c, m:m + c]]
        views += [v[:, ::-1] for v in views]
        x = np.stack([v.transpose(2, 0, 1) for v in views]).astype(np.float32)
        p = net.predict_proba(np.ascontiguousarray(x)).mean(axis=0)
        top1.append(int(np.argmax(p) == ds.labels("val")[i]))
    assert got["images"] == ds.size("val")
    assert got["top1_error"] == pytest.approx(1 - np.mean(top1), abs=1e-12)


def test_clean_errors(folder, tmp_path):
    r = CliRunner().invoke(main, ["train", "--spec", str(tmp_path / "none.net"), "--data",
                                  str(folder)])
    assert r.exit_code == 2 and "no such file" in r.output and "Traceback" not in r.output
    spec_path = tmp_path / "tiny.net"
    spec_path.write_text(tiny_spec())
    r = CliRunner().invoke(main, ["train", "--spec", str(spec_path), "--data",
                                  str(tmp_path / "nodata")])
    assert r.exit_code == 2 and "nodata" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "norun")])
    assert r.exit_code == 2 and "no such run directory" in r.output
    # a checkpoint that doesn't match the spec
    train(spec_path, folder, tmp_path / "run", max_steps=1)
    other = tmp_path / "other.net"
    other.write_text(tiny_spec().replace("outputs 256", "outputs 128"))
    r = CliRunner().invoke(main, ["eval", "--spec", str(other), "--checkpoint",
                                  str(tmp_path / "run"), "--data", str(folder),
                                  "--backend", "numpy"])
    assert r.exit_code == 2 and "does not match" in r.output and "fc6.weight" in r.output
    r = CliRunner().invoke(main, ["train", "--spec", str(spec_path)])
    assert r.exit_code == 2 and "--data" in r.output


def test_eval_cli_json(folder, tmp_path):
    spec_path = tmp_path / "tiny.net"
    spec_path.write_text(tiny_spec())
    train(spec_path, folder, tmp_path / "run", max_steps=2)
    r = CliRunner().invoke(main, ["eval", "--spec", str(spec_path), "--checkpoint",
                                  str(tmp_path / "run"), "--data", str(folder), "--json",
                                  "--backend", "numpy"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["images"] == 20 and 0 <= res["top5_error"] <= res["top1_error"] <= 1


def test_run_figures_from_a_short_run(folder, tmp_path):
    """netspec viz draws the filters, curves, predictions and neighbours of a real run."""
    from PIL import Image
    spec_path = tmp_path / "tiny.net"
    spec_path.write_text(tiny_spec())
    train(spec_path, folder, tmp_path / "run", max_steps=10)   # two epochs of 5 steps
    run = str(tmp_path / "run")
    for flags, name in ((["--filters", "conv1"], "f.png"), (["--curves"], "c.png"),
                        (["--predictions", "--count", "4"], "p.png"),
                        (["--neighbours", "--count", "2", "-k", "3"], "n.png")):
        out = tmp_path / name
        r = CliRunner().invoke(main, ["viz", "--run", run, *flags, "-o", str(out)])
        assert r.exit_code == 0, r.output
        img = Image.open(out).convert("RGB")
        a = np.asarray(img)
        assert a.shape[0] > 100 and a.shape[1] > 100 and a.std() > 5   # not blank


def test_sigint_checkpoints_and_exits_cleanly(folder, tmp_path):
    """Ctrl-C during training: the step in flight finishes, a checkpoint is written, the run
    exits with status 130 and no traceback, and --resume continues from there."""
    import signal
    import subprocess
    import sys
    import time
    spec_path = tmp_path / "tiny.net"
    spec_path.write_text(tiny_spec(epochs="1000"))
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "netspec.cli", "train", "--spec", str(spec_path),
                          "--data", str(folder), "--backend", "numpy", "--out", str(run),
                          "--print-freq", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "[" not in (p.stdout.readline() or ""):
        pass                                   # wait for the first batch's progress line
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "stopped by signal" in out
    _, _, state = load_checkpoint(run)
    assert state["step"] >= 1
    Trainer(TrainOptions(resume=str(run), max_steps=state["step"] + 1, progress=False),
            echo=quiet).run()
    assert load_checkpoint(run)[2]["step"] == state["step"] + 1


class _StateFC(type(netspec.ops.OPS["fc"])):
    """fc that also carries a tensor SGD never trains (`state`, ones), as a layer with a
    running mean would; its math is fc's."""

    type = "statefc"

    def parameters(self, a, in_shape, in_ch, out_ch):
        return (*super().parameters(a, in_shape, in_ch, out_ch),
                netspec.ops.ParamDef("state", "s", (out_ch,), init="ones", trainable=False))

    def forward(self, a, x, params=(), **kw):
        return super().forward(a, x, params[:2], **kw)


@pytest.mark.parametrize("backend", ["numpy", "cpu", "opencl"])
def test_resume_with_a_state_tensor_is_bit_exact(folder, tmp_path, backend):
    """A layer with state (no gradient, no momentum) checkpoints and resumes like the rest:
    the kernel backends keep no momentum for it, and the resume must not expect one."""
    op = netspec.ops.register(_StateFC())
    try:
        spec_path = tmp_path / "tiny.net"
        spec_path.write_text(tiny_spec().replace("fc      fc7", "statefc fc7"))
        train(spec_path, folder, tmp_path / "straight", max_steps=4, backend=backend)
        train(spec_path, folder, tmp_path / "split", max_steps=2, backend=backend)
        Trainer(TrainOptions(resume=str(tmp_path / "split"), max_steps=4, progress=False),
                echo=quiet).run()
    finally:
        netspec.ops.unregister(op.type)
    a_p, a_m, _ = load_checkpoint(tmp_path / "straight")
    b_p, b_m, _ = load_checkpoint(tmp_path / "split")
    assert "fc7.state" in a_p and np.array_equal(a_p["fc7.state"], np.ones(256, np.float32))
    for k in a_p:
        assert np.array_equal(a_p[k], b_p[k]), k
    for k in a_m:
        assert np.array_equal(a_m[k], b_m[k]), k
