"""Training that survives faults: SIGKILL of a real `netspec train` at random moments and at
chosen system calls, mid-epoch checkpoints and --keep, divergence, plateau without val data,
and a full or read-only disk. The oracle is always an unbroken run of the same options."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from netspec.cli import main
from netspec.errors import RunError
from netspec.train.checkpoint import WEIGHTS, kept_checkpoints, load_checkpoint
from netspec.train.loop import Trainer, TrainOptions

from trainkit import make_folder

ROOT = Path(__file__).resolve().parents[2]

# A net small enough that a process lives ~2 s, with every random part of the real one:
# random crops, flips, PCA colour noise, dropout, LRN, overlapping pooling.
MINI = """\
network mini
input   3x16x16
classes 10
gpus    1
init weight gauss(0.05) bias 0
conv    conv1  filters 8  size 3 stride 1 pad 1  relu
lrn     norm1  size 5 alpha 1e-4 beta 0.75 k 2
maxpool pool1  size 3 stride 2
fc      fc6    outputs 32  relu
dropout drop6  p 0.5
fc      fc8    outputs 10
softmax prob
train
  batch    8
  epochs   3
  sgd      lr {lr} momentum 0.9 weight_decay 0.0005
  schedule {schedule}
  augment  crop 16 from 20 flip pca 0.1
"""
STEPS = 12   # 40 images / batch 8 = 5 steps an epoch: crosses two epoch ends and validations


def quiet(*a, **k):
    pass


@pytest.fixture
def mini(tmp_path):
    path = tmp_path / "mini.net"
    path.write_text(MINI.format(lr="0.01", schedule="none"))
    return path


def unbroken(spec, data, out, backend="numpy", **kw):
    Trainer(TrainOptions(spec=str(spec), data=str(data), backend=backend, out=str(out),
                         progress=False, **kw), echo=quiet).run()
    return load_checkpoint(out)


def assert_same_run(a_dir, b_dir):
    a_p, a_m, a_s = load_checkpoint(a_dir)
    b_p, b_m, b_s = load_checkpoint(b_dir)
    assert (a_s["step"], a_s["epoch"], a_s["batch"]) == (b_s["step"], b_s["epoch"], b_s["batch"])
    assert a_p.keys() == b_p.keys()
    for k in a_p:
        assert np.array_equal(a_p[k], b_p[k]), k
        assert np.array_equal(a_m[k], b_m[k]), k
    skip = {"time", "images_per_sec"}
    rows = [[{k: v for k, v in json.loads(line).items() if k not in skip}
             for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a_dir, b_dir)]
    assert rows[0] == rows[1]      # no epoch logged twice or lost by a kill


def cli(*args):
    return [sys.executable, "-m", "netspec.cli", "train", *args, "--no-progress"]


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def first_or_resume(run, spec, data, backend, extra=(), steps=STEPS):
    if (run / "launch.json").exists() or (run / WEIGHTS).exists():
        return cli("--resume", str(run), "--max-steps", str(steps), *extra)
    return cli("--spec", str(spec), "--data", str(data), "--backend", backend, "--out", str(run),
               "--max-steps", str(steps), "--checkpoint-every", "2", *extra)


@pytest.mark.parametrize("backend,kills", [("numpy", 6), ("opencl", 4)])
def test_sigkill_at_random_moments_resumes_bit_exact(tmp_path, mini, backend, kills):
    if backend == "opencl":
        pytest.importorskip("pyopencl")
    steps = 30
    data = make_folder(tmp_path / "imgs")
    t0 = time.perf_counter()
    r = subprocess.run(first_or_resume(tmp_path / "straight", mini, data, backend, steps=steps),
                       env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    whole = time.perf_counter() - t0        # start-up, first scan, 30 steps, 6 validations
    # another copy of the images: the killed run makes its own first scan (the folder
    # statistics cache is keyed by path), so kills land in that scan too
    copy = shutil.copytree(data, tmp_path / "imgs-copy")
    rng = np.random.default_rng(15)
    # The delays are fractions of the straight run's time. When the machine's speed changes
    # (a loaded CI box), a run may finish before its kill: it is then done, so the test starts
    # a fresh one with the delays scaled to the time it took, until the kills have landed.
    run, fresh, took, moments, landed = None, 0, 0.0, [], 0
    for _ in range(4 * kills):
        if run is None:
            fresh += 1
            run, took = tmp_path / f"killed-{fresh}", 0.0
        t = time.perf_counter()
        p = subprocess.Popen(first_or_resume(run, mini, copy, backend, steps=steps), env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        delay = float(rng.uniform(0.1, 0.8)) * whole
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
        took += time.perf_counter() - t
        step = load_checkpoint(run)[2]["step"] if (run / WEIGHTS).exists() else None
        moments.append((round(delay, 2), p.returncode, step))
        landed += p.returncode == -signal.SIGKILL
        if landed >= kills:
            break
        if p.returncode == 0:                    # finished before its kill: start afresh
            whole, run = min(whole, took), None
    if run is None:
        run = tmp_path / f"killed-{fresh}"
    r = subprocess.run(first_or_resume(run, mini, copy, backend, steps=steps), env=env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (moments, r.stderr)
    assert landed >= kills, moments
    assert_same_run(tmp_path / "straight", run)


# Kill the process from inside at chosen system calls: the Nth rename (e.g. between the
# weights' and state.json's), or halfway through the Nth write of a checkpoint's bytes.
SELF_KILL = textwrap.dedent("""
    import os, signal, sys
    point, n = sys.argv[1], int(sys.argv[2])
    calls = [0]
    real_replace, real_write = os.replace, os.write
    def replace(a, b):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(a, b)
    def write(fd, data):
        calls[0] += 1
        if calls[0] == n:
            real_write(fd, bytes(memoryview(data)[:len(data) // 2]))
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(fd, data)
    if point == "replace":
        os.replace = replace
    else:
        os.write = write
    sys.argv = ["netspec", *sys.argv[3:]]
    from netspec.cli import main
    main()
""")


def test_sigkill_at_each_rename_and_mid_write_resumes_bit_exact(tmp_path, mini):
    data = make_folder(tmp_path / "imgs")
    unbroken(mini, data, tmp_path / "straight", max_steps=STEPS, checkpoint_every=2,
             keep=2)
    copy = shutil.copytree(data, tmp_path / "imgs-copy")
    run = tmp_path / "killed"
    # a new run renames: scan statistics, launch.json, then weights/state.json per checkpoint
    points = [("replace", 1), ("replace", 2), ("replace", 3), ("replace", 4), ("write", 1),
              ("write", 3), ("replace", 5), ("write", 4), ("replace", 2)]
    for point, n in points:
        p = subprocess.run([sys.executable, "-c", SELF_KILL, point, str(n),
                            *first_or_resume(run, mini, copy, "numpy", ["--keep", "2"])[3:]],
                           env=env(), capture_output=True, text=True, timeout=300)
        assert p.returncode == -signal.SIGKILL, (point, n, p.stderr)
    r = subprocess.run(first_or_resume(run, mini, copy, "numpy"), env=env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_same_run(tmp_path / "straight", run)
    assert [s for s, _ in kept_checkpoints(run)] == [10]           # keep 2: step 12 and 10
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]   # leftovers cleaned up


def test_mid_epoch_checkpoints_keep_k_and_resume_from_a_kept_one(tmp_path, mini):
    data = make_folder(tmp_path / "imgs")
    run = tmp_path / "run"
    # checkpoints at steps 0, 3 (mid-epoch), 5 (epoch end), 6 (mid-epoch), 8 (--max-steps)
    unbroken(mini, data, run, max_steps=8, checkpoint_every=3, keep=3)
    assert [s for s, _ in kept_checkpoints(run)] == [5, 6]
    assert load_checkpoint(run)[2]["step"] == 8
    # a run resumed from the mid-epoch checkpoint of step 6 continues at epoch 2, batch 1
    other = tmp_path / "from6"
    other.mkdir()
    shutil.copy(run / "checkpoint-step000000006.safetensors", other / WEIGHTS)
    shutil.copy(run / "metrics.jsonl", other / "metrics.jsonl")
    state = load_checkpoint(other)[2]
    assert (state["step"], state["epoch"], state["batch"]) == (6, 1, 1)
    Trainer(TrainOptions(resume=str(other), max_steps=8, progress=False), echo=quiet).run()
    assert_same_run(run, other)


def test_recipe_checkpoint_statement_is_used_and_the_flag_overrides_it(tmp_path):
    data = make_folder(tmp_path / "imgs")
    spec = tmp_path / "mini.net"
    spec.write_text(MINI.format(lr="0.01", schedule="none") + "  checkpoint every 2 keep 2\n")
    t = Trainer(TrainOptions(spec=str(spec), data=str(data), backend="numpy",
                             out=str(tmp_path / "a"), max_steps=4, progress=False), echo=quiet)
    assert (t.every, t.keep) == (2, 2)
    t.run()
    assert [s for s, _ in kept_checkpoints(tmp_path / "a")] == [2]
    t = Trainer(TrainOptions(spec=str(spec), data=str(data), backend="numpy",
                             out=str(tmp_path / "b"), checkpoint_every=3, keep=1,
                             progress=False), echo=quiet)
    assert (t.every, t.keep) == (3, 1)
    # what a divergence message suggests: --resume with a lower --lr
    r = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "a"), "--lr", "0.001",
                                  "--max-steps", "5", "--no-progress"])
    assert r.exit_code == 0, r.output
    state = load_checkpoint(tmp_path / "a")[2]
    assert state["lr"] == 0.001 and state["overrides"]["lr"] == 0.001 and state["step"] == 5


# -- divergence -------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("lr,what", [("1e30", "the loss became nan"),
                                     ("1e5", "the parameters became non-finite")])
def test_divergence_keeps_the_last_finite_checkpoint_and_names_the_step(tmp_path, lr, what):
    data = make_folder(tmp_path / "imgs")
    spec = tmp_path / "mini.net"
    spec.write_text(MINI.format(lr=lr, schedule="none"))
    run = tmp_path / "run"
    with pytest.raises(RunError) as e:
        unbroken(spec, data, run, max_steps=STEPS, checkpoint_every=1)
    msg = str(e.value)
    params, momentum, state = load_checkpoint(run)
    assert all(np.isfinite(v).all() for v in (*params.values(), *momentum.values()))
    diverged = int(msg.split(" at step ")[1].split()[0])
    assert state["step"] == diverged - 1       # checkpoint every step: the one just before
    assert msg.startswith(what) and state["step"] >= 1
    assert f"step {state['step']}, is kept" in msg and f"--lr {float(lr) / 10:.3g}" in msg
    # the kept state really is the unbroken run's state at that step
    unbroken(spec, data, tmp_path / "ref", max_steps=state["step"])
    assert np.array_equal(load_checkpoint(tmp_path / "ref")[0]["fc8.weight"],
                          params["fc8.weight"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_eval_of_a_nan_checkpoint_counts_every_image_wrong(tmp_path, mini):
    from netspec.train.checkpoint import save_checkpoint
    data = make_folder(tmp_path / "imgs")
    run = tmp_path / "run"
    p, m, s = unbroken(mini, data, run, max_steps=1)
    p["fc8.weight"][:] = np.nan
    save_checkpoint(run, p, m, s)
    r = CliRunner().invoke(main, ["eval", "--checkpoint", str(run), "--backend", "numpy",
                                  "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["images"] == 20 and res["top1_error"] == 1.0 and res["top5_error"] == 1.0


# -- schedules without their metric ------------------------------------------------------------
def test_plateau_without_validation_data_is_a_start_up_error(tmp_path):
    data = make_folder(tmp_path / "imgs")
    shutil.rmtree(data / "val")
    spec = tmp_path / "mini.net"
    spec.write_text(MINI.format(lr="0.01", schedule="plateau patience 1"))
    r = CliRunner().invoke(main, ["train", "--spec", str(spec), "--data", str(data),
                                  "--backend", "numpy", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "schedule plateau" in r.output and "schedule at" in r.output and "val/" in r.output
    # the failed start leaves no checkpoint: the same --out works once the spec is fixed
    spec.write_text(MINI.format(lr="0.01", schedule="at 2"))
    r = CliRunner().invoke(main, ["train", "--spec", str(spec), "--data", str(data),
                                  "--backend", "numpy", "--out", str(tmp_path / "run"),
                                  "--max-steps", "1", "--no-progress"])
    assert r.exit_code == 0, r.output



def test_an_error_before_the_first_step_leaves_no_run_behind(tmp_path, mini):
    """An error raised after the step-0 checkpoint but before the first training step (here a
    batch larger than the training set, refused when its loader is made) removes what the run
    wrote: a directory it created goes, one the user made keeps only what was there. The same
    --out then starts a new run, and --resume of it says there is none."""
    data = make_folder(tmp_path / "imgs")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    for run in (tmp_path / "run", mine):
        base = ["train", "--spec", str(mini), "--data", str(data), "--backend", "numpy",
                "--out", str(run), "--no-progress"]
        r = CliRunner().invoke(main, base + ["--batch-size", "1000"])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert "the split has 40 images, fewer than one batch of 1000" in r.output
        if run == mine:
            assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
        else:
            assert not run.exists()
            r = CliRunner().invoke(main, ["train", "--resume", str(run)])
            assert r.exit_code == 2 and "no such run directory" in r.output, r.output
        r = CliRunner().invoke(main, base + ["--max-steps", "1"])
        assert r.exit_code == 0, r.output
        assert load_checkpoint(run)[2]["step"] == 1


# -- bad storage ------------------------------------------------------------------------------
def test_full_disk_while_checkpointing_is_a_clean_error_keeping_the_previous(tmp_path, mini,
                                                                             monkeypatch):
    data = make_folder(tmp_path / "imgs")
    ref2 = unbroken(mini, data, tmp_path / "ref2", max_steps=2)
    run = tmp_path / "run"
    real_write = os.write
    writes = {"n": 0}

    def full_disk(fd, buf):        # the disk fills up during the 3rd checkpoint (step 4)
        if os.fstat(fd).st_size == 0 and Path(f"/proc/self/fd/{fd}").resolve().name.startswith(
                f".{WEIGHTS}."):
            writes["n"] += 1
        if writes["n"] >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, buf)

    monkeypatch.setattr(os, "write", full_disk)
    r = CliRunner().invoke(main, ["train", "--spec", str(mini), "--data", str(data),
                                  "--backend", "numpy", "--out", str(run), "--max-steps", "8",
                                  "--checkpoint-every", "2", "--keep", "2", "--no-progress"])
    monkeypatch.undo()
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "disk is full" in r.output and "previous checkpoint (step 2) is intact" in r.output
    params, momentum, state = load_checkpoint(run)
    assert state["step"] == 2 and json.loads((run / "state.json").read_text())["step"] == 2
    for k in ref2[0]:
        assert np.array_equal(params[k], ref2[0][k]) and np.array_equal(momentum[k], ref2[1][k])
    assert [s for s, _ in kept_checkpoints(run)] == [0]   # nothing pruned by the failed write
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]


def _mount_tmpfs(path, size):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("can't mount a tmpfs here (needs root): the fault-injection test covers it")


def test_a_real_small_and_read_only_filesystem(tmp_path, mini):
    """A 2 MB tmpfs: filled up, then read-only, then writable again; the run ends
    bit-identical to an unbroken one."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    data = make_folder(tmp_path / "imgs")
    unbroken(mini, data, tmp_path / "straight", max_steps=6, checkpoint_every=2)
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "2m")
    try:
        run = disk / "run"
        r = CliRunner().invoke(main, ["train", "--spec", str(mini), "--data", str(data),
                                      "--out", str(run), "--backend", "numpy", "--max-steps",
                                      "2", "--checkpoint-every", "2", "--no-progress"])
        assert r.exit_code == 0, r.output
        filler = disk / "filler"
        with open(filler, "wb") as f:          # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
        resume = ["train", "--resume", str(run), "--max-steps", "6", "--no-progress"]
        r = CliRunner().invoke(main, resume)
        assert r.exit_code == 2 and "disk is full" in r.output and "Traceback" not in r.output
        assert "(step 2) is intact" in r.output and load_checkpoint(run)[2]["step"] == 2
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        r = CliRunner().invoke(main, resume)
        assert r.exit_code == 2 and "read-only" in r.output and "Traceback" not in r.output
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        r = CliRunner().invoke(main, resume)
        assert r.exit_code == 0, r.output
        assert_same_run(tmp_path / "straight", run)
    finally:
        subprocess.run(["umount", str(disk)])
