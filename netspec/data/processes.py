"""Worker processes for decoding and loading: how they are started and how they stop.

Workers are forked: they inherit the parent's datasets, memory maps and shared buffers without
pickling anything, and they start in milliseconds. They ignore SIGINT, so Ctrl-C reaches only
the parent, which then ends them itself (see Loader.close and run_shard_jobs); they are
daemonic, and they exit by themselves if the parent disappears.
"""
from __future__ import annotations

import multiprocessing
import signal

from netspec.errors import DataError


def fork_context():
    """The multiprocessing context for workers; DataError where fork doesn't exist."""
    if "fork" not in multiprocessing.get_all_start_methods():
        raise DataError("worker processes need the 'fork' start method (Linux, macOS); "
                        "use workers=0 (-j 0) on this system")
    return multiprocessing.get_context("fork")


def ignore_sigint() -> None:
    """In a worker: leave Ctrl-C to the parent, which ends the workers cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
