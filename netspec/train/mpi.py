"""The MPI transport of data-parallel training: this process's communicator, collectives whose
waits time out, and ending the whole job.

Every collective is started non-blocking and waited for by polling, so that a replica that
died or hangs ends the job (MPI_Abort) after the timeout (`NETSPEC_COLLECTIVE_TIMEOUT`,
seconds, default 300) instead of hanging it. mpi4py is imported only when a `Replicas` is made,
which data_parallel.py does only when an MPI launcher started the process.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np

from ..errors import NetspecError, RunError

TIMEOUT_VARIABLE = "NETSPEC_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0


def env_number(environ, name: str, default: float, ok, wanted: str) -> float:
    """The float in environment variable `name` (`default` when unset); RunError naming the
    variable and `wanted` when it isn't a number or `ok(value)` is false (NaN never is)."""
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not ok(value):
        raise RunError(f"{name}={raw!r}: give {wanted}")
    return value


def collective_timeout(environ=None) -> float:
    """Seconds a collective may wait ($NETSPEC_COLLECTIVE_TIMEOUT, default 300)."""
    return env_number(environ, TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_S, lambda v: v > 0,
                      "the collective timeout in seconds, a number above 0")


class Replicas:
    """This process's MPI communicator (COMM_WORLD) and the waits with a timeout on it.

    rank, size: this replica's place in the job; local_rank: its place on its node (which
    devices it takes); is_root: rank 0, the replica that writes and speaks."""

    def __init__(self, local_rank: int, timeout_s: float):
        try:
            from mpi4py import MPI
        except ImportError:
            raise RunError("started under MPI (rank variables are set) but mpi4py is not "
                           "installed: pip install 'netspec[mpi]'") from None
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank = local_rank
        self.timeout_s = timeout_s
        self.threaded = MPI.Query_thread() >= MPI.THREAD_MULTIPLE

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # -- ending the job ---------------------------------------------------------------------
    def abort(self, message: str, code: int = 1) -> None:
        """Say why on stderr, in one line with this rank, and end every process of the job."""
        sys.stderr.write(f"netspec: rank {self.rank} of {self.size}: {message}; ending the job "
                         f"(MPI_Abort)\n")
        sys.stderr.flush()
        self.comm.Abort(code)

    def wait(self, request, what: str):
        """Wait for a non-blocking MPI request, at most timeout_s; past that, abort the job.

        Only time spent polling counts: a gap of over a second between two polls means this
        process was stopped or starved, not that the others are late, so a replica woken from
        SIGSTOP doesn't blame the others."""
        waited, pause = 0.0, 0.0
        last = time.monotonic()
        while not request.Test():
            now = time.monotonic()
            waited += min(now - last, 1.0)
            last = now
            if waited > self.timeout_s:
                self.abort(f"{what} did not complete within {self.timeout_s:g} s (another "
                           f"replica has failed or hangs; {TIMEOUT_VARIABLE} sets the limit)")
            time.sleep(pause)
            pause = min(pause + 5e-5, 1e-3)

    # -- collectives ------------------------------------------------------------------------
    def allreduce_sum(self, values, what: str = "allreduce") -> np.ndarray:
        """The element-wise sum over the replicas of `values`, as float64."""
        a = np.ascontiguousarray(values, dtype=np.float64).copy()
        self.wait(self.comm.Iallreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM), what)
        return a

    def allgather_text(self, text: str, what: str) -> list[str]:
        """Every replica's string (UTF-8, at most 4 KiB each), in rank order."""
        raw = np.zeros(4096, np.uint8)
        data = text.encode()[:4096]
        raw[:len(data)] = np.frombuffer(data, np.uint8)
        out = np.zeros((self.size, 4096), np.uint8)
        self.wait(self.comm.Iallgather(raw, out), what)
        return [bytes(r).rstrip(b"\0").decode(errors="replace") for r in out]

    def barrier(self, what: str = "barrier") -> None:
        self.wait(self.comm.Ibarrier(), what)

    def check_alike(self, items: dict[str, str]) -> None:
        """Every replica was started with the same `items` (name -> text: the spec, the
        recipe, the seed ...), compared by digest before any gradient is exchanged; else each
        raises the same SetupFailed naming the ranks and what differs (rank 0 reports it).
        Different specs would otherwise meet only as an allreduce of unlike buffers."""
        mine = json.dumps({k: fingerprint(v) for k, v in sorted(items.items())})
        texts = self.allgather_text(mine, "start-up check of the spec and flags")
        line = disagreement([json.loads(t) if t else {} for t in texts])
        if line is not None:
            raise SetupFailed(line, 2)

    def agree(self, error: BaseException | None) -> None:
        """After setup: if any replica failed, every replica learns it and raises the same
        `SetupFailed`, which only rank 0 reports; so a bad flag gives one message, not K."""
        texts = self.allgather_text("" if error is None else error_line(error), "setup check")
        failed = [(r, t) for r, t in enumerate(texts) if t]
        if not failed:
            return
        if len(failed) == self.size and all(t == failed[0][1] for _, t in failed):
            message = failed[0][1]
        else:
            ranks = ", ".join(str(r) for r, _ in failed)
            message = f"replica(s) {ranks} of {self.size} failed to start: {failed[0][1]}"
        code = error.exit_code if isinstance(error, NetspecError) else 2
        raise SetupFailed(message, code)


def fingerprint(text: str) -> str:
    """A short, stable digest of one thing the replicas must agree on."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def disagreement(items: list[dict[str, str]]) -> str | None:
    """The line naming the ranks whose `items` (name -> fingerprint) differ from rank 0's and
    in what, or None when every rank has rank 0's."""
    first = items[0]
    odd = {r: sorted(k for k in set(first) | set(it) if first.get(k) != it.get(k))
           for r, it in enumerate(items) if it != first}
    if not odd:
        return None
    names = sorted({k for ks in odd.values() for k in ks})
    ranks = ", ".join(str(r) for r in odd)
    detail = "; ".join(
        f"{k}: {first.get(k, '-')} on rank 0, "
        + ", ".join(f"{items[r].get(k, '-')} on rank {r}" for r in odd if k in odd[r])
        for k in names)
    return (f"the replicas were not started alike: rank{'s' if len(odd) > 1 else ''} {ranks} "
            f"of {len(items)} differ from rank 0 in the {' and the '.join(names)} "
            f"(sha256 prefixes: {detail}); give every rank the same --spec, data and flags")


class SetupFailed(NetspecError):
    """A setup failure every replica raises (Replicas.agree) but only rank 0 reports."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def error_line(e: BaseException) -> str:
    """An error as one line: a NetspecError's message, else its type and message."""
    return str(e) if isinstance(e, NetspecError) else f"{type(e).__name__}: {e}"
