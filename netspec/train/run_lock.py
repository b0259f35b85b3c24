"""One process per run directory: `train --out R` and `train --resume R` hold R's lock while
they run, so that a second one (two `--out R` at once, or `--resume R` while R trains) is
refused with a line naming the first, instead of both writing checkpoints and metrics.

The lock is advisory, `flock(2)` on `R/run.lock`, so the OS releases it when its owner dies,
however it dies. The file holds the owner's pid, host, start time and command line, for the
refusal's message. A clean end removes the file; a file found with an owner in it when the
lock is free was left by a process that died (SIGKILL, a power cut): it is taken over, with a
note. Readers (eval, predict, export, viz) take no lock: checkpoints are replaced atomically.
A run directory where the lock file can't be made (read-only, a full disk) is not locked: no
process can write a run there, and the run's first write reports why.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import RunError

LOCK = "run.lock"


def _describe(owner: dict) -> str:
    try:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner["started"])))
    except (KeyError, TypeError, ValueError, OverflowError):
        when = "?"
    command = owner.get("command")
    return (f"process {owner.get('pid', '?')} on {owner.get('host', '?')}, started {when}"
            + (f" ({command})" if isinstance(command, str) and command else ""))


def _read_owner(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 1 << 16, 0)
        owner = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return {"pid": "?"}            # something is there, but not readable: an owner
    return owner if isinstance(owner, dict) or owner is None else {"pid": "?"}


class RunLock:
    """The lock of one run directory (see the module docstring)."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; returns a note when a dead owner's lock was taken over. RunError
        naming the owner when a live process holds it, or when the file can't be made."""
        for _ in range(20):            # the file may be removed by its owner meanwhile
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                # a read-only or full run directory: no process can write this run there, so
                # there is nothing to guard; the run's own first write reports the reason
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                owner = _read_owner(fd) or {}
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunError(f"can't lock the run directory {self.run_dir}: "
                                   f"{e.strerror or e}") from None
                raise RunError(f"{self.run_dir} is in use by {_describe(owner)}; wait for it "
                               f"to end or stop it (a run stopped with Ctrl-C or SIGTERM "
                               f"checkpoints first), then --resume {self.run_dir}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)               # locked a file its owner had just removed: again
        else:
            raise RunError(f"can't lock the run directory {self.run_dir}: it keeps changing")
        previous = _read_owner(fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "command": " ".join(["netspec", *sys.argv[1:]])}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except OSError:
            pass                       # a full disk: held all the same, its owner unnamed
        self.fd = fd
        if previous:
            return (f"{self.run_dir}: took over the lock of {_describe(previous)}, which is "
                    f"no longer running")
        return None

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)    # can't remove it: at least leave no owner in it
        os.close(self.fd)
        self.fd = None
