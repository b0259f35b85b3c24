"""One process per run directory (issue #28, red-team kind 3), with real processes: a second
`train --out R` or a `train --resume R` while R trains is refused with one line naming the
first; the first's files are untouched; a lock left by a process that was SIGKILLed is taken
over with a note; a clean end leaves no lock file behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netspec.errors import RunError
from netspec.train.run_lock import LOCK, RunLock

from trainkit import make_folder, mini_spec

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "NETSPEC_AUTOTUNE": "0"}



def mini(epochs: int) -> str:
    # a rate that can't diverge: the first run must outlive the checks
    return mini_spec(epochs=epochs, sgd="lr 0.00001 momentum 0.5 weight_decay 0.0005")


def netspec(*args, **kw):
    return subprocess.run([sys.executable, "-m", "netspec", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=120, **kw)


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "netspec", *map(str, args)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def holder(run_dir):
    """A process that takes the lock and waits."""
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from netspec.train.run_lock import RunLock
        RunLock({str(run_dir)!r}).acquire()
        print("held", flush=True)
        time.sleep(120)
        """)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "held\n"
    return p


def wait_for_owner(run_dir, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if json.loads((run_dir / LOCK).read_text()).get("pid") == proc.pid and \
                    (run_dir / "checkpoint.safetensors").exists():
                return
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the first run never took its lock")


def refused(res, pid):
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "is in use by process" in err[0] and str(pid) in err[0], err
    return err[0]


@pytest.fixture
def spec(tmp_path):
    p = tmp_path / "mini.net"
    p.write_text(mini(1000))
    return p


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("lockimgs"))


def test_a_second_train_on_a_training_run_is_refused(tmp_path, spec, data):
    run = tmp_path / "R"
    first = start("train", "--spec", spec, "--data", data, "--out", run, "--backend", "numpy",
                  "--no-progress")
    try:
        wait_for_owner(run, first)
        line = refused(netspec("train", "--resume", run, "--backend", "numpy"), first.pid)
        assert "train --spec" in line                # the other process's command line
        refused(netspec("train", "--spec", spec, "--data", data, "--out", run, "--backend",
                        "numpy"), first.pid)
        assert first.poll() is None                  # the first run goes on
    finally:
        first.send_signal(signal.SIGTERM)            # checkpoints and ends
        out, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert not (run / LOCK).exists()                 # a clean end removes it
    res = netspec("train", "--resume", run, "--backend", "numpy", "--max-steps", "1")
    assert res.returncode == 0, res.stderr


def test_resume_while_locked_touches_nothing_and_a_dead_owners_lock_is_taken_over(
        tmp_path, spec, data):
    run = tmp_path / "R"
    spec.write_text(mini(1))
    res = netspec("train", "--spec", spec, "--data", data, "--out", run, "--backend", "numpy",
                  "--max-steps", "2", "--no-progress")
    assert res.returncode == 0, res.stderr
    partial = run / ".checkpoint.safetensors.abc123.tmp"    # the owner's write in progress
    partial.write_bytes(b"half")
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    owner = holder(run)
    try:
        refused(netspec("train", "--resume", run, "--backend", "numpy"), owner.pid)
        after = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
        assert {k: v for k, v in after.items() if k != LOCK} == before    # nothing tidied
    finally:
        owner.send_signal(signal.SIGKILL)            # dies holding it: the file stays
        owner.wait(timeout=20)
    assert json.loads((run / LOCK).read_text())["pid"] == owner.pid
    res = netspec("train", "--resume", run, "--backend", "numpy", "--max-steps", "3",
                  "--no-progress")
    assert res.returncode == 0, res.stderr
    assert f"took over the lock of process {owner.pid}" in res.stdout + res.stderr
    assert "no longer running" in res.stdout + res.stderr
    assert not (run / LOCK).exists()


def test_the_lock_in_one_process(tmp_path):
    a = RunLock(tmp_path)
    assert a.acquire() is None
    with pytest.raises(RunError, match=f"process {os.getpid()}"):
        RunLock(tmp_path).acquire()                  # flock locks per open file
    a.release()
    a.release()                                      # idempotent
    b = RunLock(tmp_path)
    assert b.acquire() is None and (tmp_path / LOCK).exists()
    b.release()
    assert list(tmp_path.iterdir()) == []
