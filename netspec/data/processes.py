"""Worker processes for decoding and loading: how they are started and how they stop.

Workers are forked: they inherit the parent's datasets, memory maps and shared buffers without
pickling anything, and they start in milliseconds. They ignore SIGINT, so Ctrl-C reaches only
the parent, which then ends them itself (see Loader.close and run_shard_jobs); they are
daemonic, and they exit by themselves if the parent disappears.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
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


log = logging.getLogger("netspec.data")
_NOTED: set[tuple[str, int, int]] = set()


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def bound_workers(asked: int, tasks: int, what: str = "loader") -> int:
    """The worker processes to start for `tasks` units of work (batches, shards) when `asked`
    were asked for: at most one per usable core and one per task, at least 1 (0 stays 0:
    work in this process). More would only wait for a core, or for work, while each holds
    its own memory. A bound is logged once per (what, asked, used) as a note."""
    if asked <= 0:
        return 0
    used = max(1, min(asked, usable_cores(), tasks))
    if used < asked and (what, asked, used) not in _NOTED:
        _NOTED.add((what, asked, used))
        log.warning("note: %d %s workers asked for; starting %d (%d usable cores, %d %s)",
                    asked, what, used, usable_cores(), tasks,
                    "batches" if what == "loader" else "shards")
    return used
