"""The cpu backend's GEMMs, split into blocks that whichever thread is running takes next.

BLAS's own threads divide a GEMM into one fixed share per thread, and the call returns when
the last share is done: on a machine busier than its cores, a share whose thread is
descheduled for a time slice (milliseconds) holds the whole step back, and the threads that
finished wait. Here BLAS runs on one thread, and `GemmTeam.matmul` cuts a product into
about four blocks per core (along the batch of a batched product, else along the larger of
its rows and columns, never thinner than `MIN_BLOCK`); the caller and `threads - 1` helper
threads each take the next block until none is left, so a thread that is not running holds
back at most the one block it took. Each block is the same sgemm on a sub-matrix, every
output element summed over the same k in the same order, so the result is the unsplit
product's bit for bit (tests/runtime/test_host_gemm.py).

Products under `SMALL` multiply-adds run on the calling thread (waking a helper costs more).
"""
from __future__ import annotations

import queue
import threading

import numpy as np

SMALL = 1 << 22          # multiply-adds below which a product is not split
MIN_BLOCK = 32           # rows or columns of the thinnest block
BLOCKS_PER_THREAD = 4
_CREATE = threading.Lock()


def _blocks(a: np.ndarray, b: np.ndarray, out: np.ndarray, parts: int) -> list[tuple]:
    """(a, b, out) views of at most `parts` blocks covering out (module doc)."""
    if out.ndim == 3 and out.shape[0] >= 2:
        n = out.shape[0]
        step = -(-n // min(parts, n))
        return [(a[i:i + step], b[i:i + step], out[i:i + step]) for i in range(0, n, step)]
    m, n = out.shape[-2:]
    dim = m if m >= n else n
    count = min(parts, dim // MIN_BLOCK)
    if count < 2:
        return [(a, b, out)]
    step = -(-dim // count)
    if m >= n:
        return [(a[..., i:i + step, :], b, out[..., i:i + step, :]) for i in range(0, m, step)]
    return [(a, b[..., i:i + step], out[..., i:i + step]) for i in range(0, n, step)]


def _work(tasks: list[tuple], order) -> None:
    for i in order:                 # next() on a shared range iterator is atomic (the GIL)
        a, b, out = tasks[i]
        np.matmul(a, b, out=out)


class GemmTeam:
    """`threads` threads (the caller and threads - 1 helpers, started on first use, daemons
    sleeping on a queue between products) that share the blocks of one product at a time.
    BLAS must run single-threaded beside it (CpuNet limits it with threadpoolctl)."""

    _shared: dict[int, GemmTeam] = {}

    def __init__(self, threads: int):
        self.threads = max(1, threads)
        self._queues: list[queue.SimpleQueue] = []
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, threads: int) -> GemmTeam:
        """The process's team of `threads` threads (every net shares it, so building many
        nets starts no more helper threads)."""
        threads = max(1, threads)
        with _CREATE:
            team = cls._shared.get(threads)
            if team is None:
                team = cls._shared[threads] = cls(threads)
        return team

    def _start(self) -> None:
        while len(self._queues) < self.threads - 1:
            q: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=self._helper, args=(q,), daemon=True,
                             name=f"netspec-gemm-{len(self._queues) + 1}").start()
            self._queues.append(q)

    @staticmethod
    def _helper(q: queue.SimpleQueue) -> None:
        while True:
            tasks, order, done, errors = q.get()
            try:
                _work(tasks, order)
            except BaseException as e:          # handed to the caller, which raises it
                errors.append(e)
            finally:
                done.set()

    def matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        """np.matmul(a, b, out=out) for 2-D or equally batched 3-D float32 operands (any
        strides), by blocks over the team (module doc). Returns out; raises what np.matmul
        raises."""
        k = a.shape[-1]
        if self.threads < 2 or out.size * k < SMALL:
            return np.matmul(a, b, out=out)
        tasks = _blocks(a, b, out, BLOCKS_PER_THREAD * self.threads)
        if len(tasks) < 2:
            return np.matmul(a, b, out=out)
        with self._lock:                        # one product at a time per team
            self._start()
            order = iter(range(len(tasks)))
            errors: list[BaseException] = []
            helpers = self._queues[:len(tasks) - 1]
            done = [threading.Event() for _ in helpers]
            for q, ev in zip(helpers, done):
                q.put((tasks, order, ev, errors))
            try:
                _work(tasks, order)
            finally:
                for ev in done:
                    ev.wait()
            if errors:
                raise errors[0]
        return out
