"""`netspec prepare`'s progress bar (netspec/data/shards.py terminal_only): drawn on a
terminal, absent from a log file or a pipe, where tqdm's carriage-return frames would be
noise; the summary line is printed either way."""
from __future__ import annotations

import fcntl
import os
import pathlib
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[2]


def small_folder(root: pathlib.Path) -> pathlib.Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")
    return root


def prepare(folder, out, stderr):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "netspec", "prepare", "--data", str(folder),
                           "--out", str(out), "-j", "0", "--base", "32"], env=env,
                          stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=120)


def test_no_bar_off_a_terminal(tmp_path):
    folder = small_folder(tmp_path / "imgs")
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        r = prepare(folder, tmp_path / "cache", f)
    assert r.returncode == 0, log.read_text()
    assert b"\r" not in log.read_bytes()     # bytes: read_text would turn \r into \n
    assert "prepared" in r.stdout and "train 6, val 2" in r.stdout


def test_bar_on_a_terminal(tmp_path):
    folder = small_folder(tmp_path / "imgs")
    primary, secondary = pty.openpty()
    # 24 x 80: a new pty is 0 x 0, and tqdm draws nothing in 0 columns
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        r = prepare(folder, tmp_path / "cache", secondary)
        os.close(secondary)
        chunks = []
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:     # EIO: the writer is gone
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(primary)
    assert r.returncode == 0
    terminal = b"".join(chunks).decode(errors="replace")
    assert "\r" in terminal and "8/8" in terminal     # tqdm's frames, ending at 8 images
