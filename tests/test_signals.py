"""Ctrl-C at any moment of a command's start-up ends it with one line and status 130, never a
KeyboardInterrupt traceback from inside an import (netspec/cli/__init__.py installs the
handler before click, NumPy or a backend is imported).

The interpreter's own start-up (site, before any netspec code runs: 40 ms on a quiet machine,
far longer on a loaded one) is outside netspec's reach, so the test starts the command with
SIGINT blocked: a signal sent during that start-up is held, and delivered when the cli, having
installed its handler, unblocks it. Every moment then tests netspec's handling alone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "tiny-alexnet.net"


def _held_sigint() -> None:
    """In the child before exec: SIGINT at its default disposition (a suite started as a
    background job of a script has it ignored, which the command rightly keeps: see
    test_an_ignored_sigint_stays_ignored), and blocked until the cli unblocks it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _interrupt_after(delay: float, args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), NETSPEC_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.Popen([sys.executable, "-m", "netspec", *args], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=_held_sigint)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


# bench runs for minutes at 100,000 iterations: every moment below falls inside it
BENCH = ["bench", "--spec", str(SPEC), "--backend", "numpy", "--iterations", "100000"]


@pytest.mark.parametrize("delay", [0.05, 0.12, 0.2, 0.3, 0.45, 0.7, 1.5])
def test_sigint_during_start_up_and_run_exits_130_with_one_line(delay, tmp_path):
    r = _interrupt_after(delay, BENCH, tmp_path)
    assert "Traceback" not in r.stderr, r.stderr
    # 130, or ended by the signal itself once the line is out (Python re-raises SIGINT when a
    # KeyboardInterrupt ends the interpreter): a shell reports both as 130
    assert r.returncode in (130, -signal.SIGINT), (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines()[-1] == "netspec: interrupted"
    assert not any("KeyboardInterrupt" in line for line in r.stderr.splitlines())


def test_the_handler_is_in_place_before_click_is_imported(tmp_path):
    """The handler comes before the heavy imports: at the moment click is imported, SIGINT
    is already netspec's (checked by an import hook, so without timing)."""
    probe = (
        "import sys, signal, runpy\n"
        "seen = []\n"
        "class Hook:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'click' and not seen:\n"
        "            seen.append(getattr(signal.getsignal(signal.SIGINT), '__name__', ''))\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hook())\n"
        "sys.argv = ['netspec', '--version']\n"
        "try:\n"
        "    runpy.run_module('netspec', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(seen[0])\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "_interrupted_at_start_up"


def test_an_ignored_sigint_stays_ignored(tmp_path):
    """A command started with SIGINT ignored (a script's background job) keeps it ignored, as
    Python does."""
    probe = ("import signal, sys, runpy\n"
             "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
             "sys.argv = ['netspec', '--version']\n"
             "try:\n"
             "    runpy.run_module('netspec', run_name='__main__')\n"
             "except SystemExit:\n"
             "    pass\n"
             "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "True"


def test_importing_the_cli_leaves_sigint_alone(tmp_path):
    """A program (or test) that imports netspec.cli keeps Python's own Ctrl-C."""
    probe = ("import signal, netspec.cli\n"
             "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
