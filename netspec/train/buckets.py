"""Gradient buckets: average the gradients over the data-parallel replicas, bucket by bucket,
while the backward pass is still running (PyTorch DistributedDataParallel's gradient buckets and
Horovod's background thread).

A bucket holds whole layers, last layer first, up to 1 MiB (DDP's first bucket;
`NETSPEC_BUCKET_MB` changes it, 0 makes every layer its own bucket). Host buffers, summed with
MPI (mpi.py); the cuda backend with NCCL reduces device buffers instead (data_parallel.py).
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from .mpi import Replicas, env_number

BUCKET_VARIABLE = "NETSPEC_BUCKET_MB"
BUCKET_CAP_BYTES = 1 << 20           # PyTorch DDP's first bucket (its later ones are 25 MiB)


def bucket_cap_bytes(environ=None) -> int:
    """Bytes per gradient bucket ($NETSPEC_BUCKET_MB in MiB, default 1; 0: a layer a bucket)."""
    mb = env_number(environ, BUCKET_VARIABLE, BUCKET_CAP_BYTES / (1 << 20), lambda v: v >= 0,
                    "the gradient bucket size in MiB, 0 or more")
    return int(mb * (1 << 20))


@dataclass
class Bucket:
    layers: list[str]
    names: list[str]                 # parameter names, in the bucket's buffer order
    offsets: dict                    # name -> (start, stop) in buffer
    buffer: np.ndarray
    pending: set
    done: threading.Event
    seconds: float = 0.0


class GradientBuckets:
    """Average the gradients over the replicas, bucket by bucket, as the backward pass produces
    them (host buffers, MPI allreduce on a communication thread).

    `layer_ready(layer, grads)` is the network's `grad_hook`: it copies a layer's gradients into
    its bucket and, once every layer of the bucket has reported, hands the bucket to the
    communication thread, which sums it over the replicas (MPI_Iallreduce, waited with the
    timeout) and divides by K while the backward pass goes on. `average(grads)` waits for the
    last buckets and writes the averages into `grads`.

    Buckets: weighted layers in backward order (last layer first), filled up to `cap_bytes`
    (default: NETSPEC_BUCKET_MB, else 1 MiB); a layer is never split.
    """

    def __init__(self, replicas: Replicas, layers: list[tuple[str, dict]], dtype,
                 cap_bytes: int | None = None):
        if cap_bytes is None:
            cap_bytes = bucket_cap_bytes()
        self.replicas = replicas
        self.K = replicas.size
        self.buckets: list[Bucket] = []
        self.bucket_of: dict[str, Bucket] = {}
        self.shapes = {n: tuple(sh) for _, shapes in layers for n, sh in shapes.items()}
        current: list[tuple[str, dict]] = []
        nbytes = 0
        itemsize = np.dtype(dtype).itemsize
        for layer, shapes in reversed(layers):
            current.append((layer, shapes))
            nbytes += sum(int(np.prod(s)) for s in shapes.values()) * itemsize
            if nbytes >= cap_bytes:
                self._add_bucket(current, dtype)
                current, nbytes = [], 0
        if current:
            self._add_bucket(current, dtype)
        self.stats = {"allreduce_s": 0.0, "exposed_s": 0.0, "steps": 0,
                      "bytes": sum(b.buffer.nbytes for b in self.buckets)}
        self._queue: queue.Queue = queue.Queue()
        self._thread = None
        self._submitted: list[Bucket] = []

    def _add_bucket(self, layers, dtype) -> None:
        offsets, names, at = {}, [], 0
        for _, shapes in layers:
            for name, shape in shapes.items():
                n = int(np.prod(shape))
                offsets[name] = (at, at + n)
                names.append(name)
                at += n
        b = Bucket([l for l, _ in layers], names, offsets, np.empty(at, dtype),
                   {l for l, _ in layers}, threading.Event())
        self.buckets.append(b)
        for l, _ in layers:
            self.bucket_of[l] = b

    # -- the communication thread -----------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None and self.replicas.threaded:
            self._thread = threading.Thread(target=self._serve, name="netspec-allreduce",
                                            daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while True:
            b = self._queue.get()
            if b is None:
                return
            self._reduce(b)

    def _reduce(self, b: Bucket) -> None:
        t0 = time.perf_counter()
        MPI = self.replicas.MPI
        try:
            req = self.replicas.comm.Iallreduce(MPI.IN_PLACE, b.buffer, op=MPI.SUM)
            self.replicas.wait(req, f"the gradient allreduce of {', '.join(b.layers)}")
            b.buffer *= b.buffer.dtype.type(1.0 / self.K)
        except Exception as e:  # noqa: BLE001  pragma: no cover - any MPI failure ends the job
            self.replicas.abort(f"gradient allreduce failed: {e}")
        b.seconds = time.perf_counter() - t0
        b.done.set()

    def _submit(self, b: Bucket) -> None:
        b.done.clear()
        self._submitted.append(b)
        if self._thread is not None:
            self._queue.put(b)
        else:
            self._reduce(b)     # without MPI_THREAD_MULTIPLE: in the caller's thread

    # -- the hooks --------------------------------------------------------------------------
    def layer_ready(self, layer: str, grads: dict) -> None:
        """grad_hook(layer name, {parameter name: host gradient}) from the backward pass."""
        b = self.bucket_of.get(layer)
        if b is None or layer not in b.pending:
            return
        self._start()
        for name, g in grads.items():
            a, z = b.offsets[name]
            b.buffer[a:z] = np.asarray(g).reshape(-1)
        b.pending.discard(layer)
        if not b.pending:
            self._submit(b)

    def average(self, grads) -> dict:
        """Wait for every bucket (reducing any the hook didn't see) and return the averaged
        gradients: a dict of host arrays with `grads`' keys and shapes. `grads` may be a
        backend's lazy `Gradients`: only the layers the hook didn't report are read from it."""
        t0 = time.perf_counter()
        for b in self.buckets:
            if b.pending:                      # layers the hook didn't report
                for layer in list(b.pending):
                    self.layer_ready(layer, {n: grads[n] for n in b.names
                                             if _layer_of(n) == layer})
        for b in self._submitted:
            b.done.wait()
        exposed = time.perf_counter() - t0
        out = {}
        for b in self.buckets:
            for name in b.names:
                a, z = b.offsets[name]
                out[name] = b.buffer[a:z].reshape(self.shapes[name]).copy()
            b.pending = set(b.layers)
        self.stats["allreduce_s"] += sum(b.seconds for b in self._submitted)
        self.stats["exposed_s"] += exposed
        self.stats["steps"] += 1
        self._submitted = []
        return out

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None


def _layer_of(param: str) -> str:
    return param.split(".", 1)[0]


def weighted_layer_shapes(graph) -> list[tuple[str, dict]]:
    """(layer name, {parameter name: shape}) of every weighted layer, in network order."""
    return [(l.name, dict(l.param_shapes())) for l in graph.weighted_layers]
