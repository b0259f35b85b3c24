"""Data-parallel training over MPI: `mpirun -n K netspec train ...` runs K replicas of the whole
network, one per MPI process, on one machine or several (`mpirun --hostfile`).

What K replicas compute is what one process computes with the same global batch (Krizhevsky
2014, "One weird trick", §2 data parallelism; PyTorch DistributedDataParallel; Horovod):

- The recipe's `batch` B is the *global* batch. Each replica takes B/K images of it: replica r
  takes images r·B/K … (r+1)·B/K − 1 of every global batch, which the data loader draws from
  the same (seed, epoch, batch) stream as one process (`Dataset.loader(shard=(r, K))`), so the
  data order and augmentation don't depend on K. A B that K doesn't divide is an error naming
  both numbers.
- Dropout masks are drawn per image from (seed, step, the image's index in the global batch)
  (`image_noise`), so the masks don't depend on K either.
- Each replica computes the mean loss over its B/K images and its gradient; the gradients are
  summed with an allreduce and divided by K, which is the gradient of the mean over all B
  images. Every replica then applies the paper's update (§5) to the same weights with the same
  gradient, so the weights stay identical (no broadcast needed after the start: the
  initialisation is a function of the seed, and a resumed run loads one checkpoint).
- The allreduce runs per bucket of layers as soon as the backward pass has produced their
  gradients, on a communication thread, so it overlaps the rest of the backward pass (PyTorch
  DDP's gradient buckets and Horovod's background thread). A bucket holds whole layers, last
  layer first, up to 1 MiB (DDP's first bucket; `NETSPEC_BUCKET_MB` changes it, 0 makes every
  layer its own bucket). numpy and opencl
  reduce host buffers with MPI; cuda reduces device buffers with NCCL (`NcclGradients`), or,
  on the CUDA emulator (no NCCL), host buffers with MPI like opencl, and says so.
- Only rank 0 writes checkpoints, metrics.jsonl, the progress bar and figures. Training loss and
  accuracy are summed over the replicas each step, so rank 0's meters cover the global batch.
- Validation is sharded the same way (every batch split into K near-equal pieces) and its
  counts and loss sums are added up.
- A checkpoint holds the global step, epoch and batch, so `--resume` works with any K that
  divides B.
- Failure: every wait on a collective has a timeout (`NETSPEC_COLLECTIVE_TIMEOUT`, seconds,
  default 300). A replica whose collective doesn't complete in time, or that raises, prints one
  line naming its rank and the reason and calls MPI_Abort, which ends every process of the job.
  A replica killed outright is noticed by `mpirun`, which ends the job itself.

mpi4py is imported only here, and only when the process was started by an MPI launcher, which
`detect_launch` tells from the launcher's environment variables without importing MPI.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..errors import NetspecError, RunError

# (size, rank, local rank) variables of the common launchers: Open MPI (mpirun/prterun),
# MPICH and Intel MPI (Hydra), MVAPICH2.
LAUNCH_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK"),
)
TIMEOUT_VARIABLE = "NETSPEC_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
BUCKET_VARIABLE = "NETSPEC_BUCKET_MB"
BUCKET_CAP_BYTES = 1 << 20           # PyTorch DDP's first bucket (its later ones are 25 MiB)
DROPOUT_STREAM = 0x6D61736B          # 'mask': the dropout stream, apart from the data's


@dataclass(frozen=True)
class Launch:
    """Where this process stands in an MPI job, read from the launcher's environment."""

    rank: int
    size: int
    local_rank: int


def detect_launch(environ=None) -> Launch | None:
    """The MPI job this process belongs to, or None when it wasn't started by an MPI launcher.
    Reads only environment variables (LAUNCH_VARIABLES); never imports mpi4py."""
    env = os.environ if environ is None else environ
    for size_var, rank_var, local_var in LAUNCH_VARIABLES:
        if size_var in env and rank_var in env:
            try:
                size, rank = int(env[size_var]), int(env[rank_var])
                local = int(env.get(local_var, rank))
            except ValueError:
                continue
            return Launch(rank=rank, size=size, local_rank=local)
    return None


def _env_number(environ, name: str, default: float, ok, wanted: str) -> float:
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
    return _env_number(environ, TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_S, lambda v: v > 0,
                       "the collective timeout in seconds, a number above 0")


def bucket_cap_bytes(environ=None) -> int:
    """Bytes per gradient bucket ($NETSPEC_BUCKET_MB in MiB, default 1; 0: a layer a bucket)."""
    mb = _env_number(environ, BUCKET_VARIABLE, BUCKET_CAP_BYTES / (1 << 20), lambda v: v >= 0,
                     "the gradient bucket size in MiB, 0 or more")
    return int(mb * (1 << 20))


def split_batch(global_batch: int, replicas: int) -> int:
    """Images per replica: B/K. Raises RunError naming both numbers when K doesn't divide B."""
    if global_batch % replicas:
        below = global_batch - global_batch % replicas
        divisors = ", ".join(str(d) for d in range(1, global_batch + 1) if global_batch % d == 0)
        raise RunError(f"the global batch {global_batch} can't be split evenly over {replicas} "
                       f"replicas: run a number of replicas that divides {global_batch} "
                       f"({divisors}), or give a batch that {replicas} divides (e.g. "
                       f"--batch-size {below or replicas})")
    return global_batch // replicas


def shard_range(n: int, rank: int, replicas: int) -> tuple[int, int]:
    """Replica `rank`'s images [start, stop) of a batch of n: near-equal contiguous pieces, the
    first n mod K one image larger (evaluation's last batch needn't divide)."""
    return n * rank // replicas, n * (rank + 1) // replicas


class ImageNoise:
    """Stands in for `net.rng` during one training step: `random((n, *shape), dtype)` returns
    one draw per image, image i drawing from `default_rng([seed, DROPOUT_STREAM, step, first +
    i])`, where first + i is the image's index in the global batch. Successive layers continue
    each image's stream, so the masks of an image are the same whichever replica holds it."""

    def __init__(self, seed: int, step: int, first: int, count: int):
        self._generators = [np.random.default_rng([seed, DROPOUT_STREAM, step, first + i])
                            for i in range(count)]

    def random(self, size, dtype=np.float64):
        size = tuple(size)
        if size[0] != len(self._generators):
            raise ValueError(f"noise for {size[0]} images asked of a step with "
                             f"{len(self._generators)}")
        out = np.empty(size, dtype)
        for i, g in enumerate(self._generators):
            out[i] = g.random(size[1:], dtype=dtype)
        return out


def image_noise(seed: int, step: int, first: int, count: int) -> ImageNoise:
    return ImageNoise(seed, step, first, count)


def local_devices(devices, gpus: int, local_rank: int, count: int) -> list[int]:
    """The physical devices of the replica with this local rank: the devices given (or 0 … G−1
    for G logical GPUs) shifted by local_rank × their number, modulo the `count` devices there
    are; so 4 replicas of 2-GPU AlexNet on an 8-GPU node take 0,1 / 2,3 / 4,5 / 6,7, and
    replicas on a CPU or a single GPU share device 0."""
    base = list(devices) if devices else list(range(gpus))
    step = len(base)
    return [(d + local_rank * step) % max(count, 1) for d in base]


def device_count(backend: str) -> int:
    """Physical devices a backend numbers (1 for numpy and when the count can't be read)."""
    try:
        if backend == "opencl":
            from ..runtime.opencl_device import opencl_devices
            return max(len(opencl_devices()), 1)
        if backend == "cuda":
            from ..runtime.cuda_backend import cuda_device_count
            return max(cuda_device_count(), 1)
    except ImportError:
        pass
    return 1


def replica_devices(replicas: Replicas, devices, gpus: int, backend: str) -> list[int]:
    """`local_devices` for this replica, with `backend` 'auto' resolved as build() would."""
    if backend == "auto":
        from ..runtime import pick_auto
        backend = pick_auto(say=lambda m: None).backend
    return local_devices(devices, gpus, replicas.local_rank, device_count(backend))


class Replicas:
    """This process's MPI communicator and the waits with a timeout on it.

    Every collective is started non-blocking and waited for by polling, so that a replica that
    died or hangs ends the job (MPI_Abort) after `timeout_s` instead of hanging it."""

    def __init__(self, launch: Launch, timeout_s: float):
        try:
            from mpi4py import MPI
        except ImportError:
            raise RunError("started under MPI (rank variables are set) but mpi4py is not "
                           "installed: pip install 'netspec[mpi]'") from None
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank = launch.local_rank
        self.timeout_s = timeout_s
        self.threaded = MPI.Query_thread() >= MPI.THREAD_MULTIPLE

    @classmethod
    def from_environment(cls, environ=None) -> Replicas | None:
        launch = detect_launch(environ)
        if launch is None:
            return None
        return cls(launch, collective_timeout(environ))

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

    def agree(self, error: BaseException | None) -> None:
        """After setup: if any replica failed, every replica learns it and raises the same
        `_Quiet` error, which only rank 0 reports; so a bad flag gives one message, not K."""
        texts = self.allgather_text("" if error is None else _message(error), "setup check")
        failed = [(r, t) for r, t in enumerate(texts) if t]
        if not failed:
            return
        if len(failed) == self.size and all(t == failed[0][1] for _, t in failed):
            message = failed[0][1]
        else:
            ranks = ", ".join(str(r) for r, _ in failed)
            message = f"replica(s) {ranks} of {self.size} failed to start: {failed[0][1]}"
        code = error.exit_code if isinstance(error, NetspecError) else 2
        raise _Quiet(message, code)


class _Quiet(NetspecError):
    """An error every replica raises but only rank 0 reports."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def _message(e: BaseException) -> str:
    return str(e) if isinstance(e, NetspecError) else f"{type(e).__name__}: {e}"


# -- gradient buckets --------------------------------------------------------------------------
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

    def average(self, grads: dict) -> dict:
        """Wait for every bucket (reducing any the hook didn't see) and write the averaged
        gradients into `grads` (same keys and shapes)."""
        t0 = time.perf_counter()
        for b in self.buckets:
            if b.pending:                      # layers the hook didn't report
                for layer in list(b.pending):
                    self.layer_ready(layer, {n: grads[n] for n in b.names
                                             if _layer_of(n) == layer})
        for b in self._submitted:
            b.done.wait()
        exposed = time.perf_counter() - t0
        for b in self.buckets:
            for name in b.names:
                a, z = b.offsets[name]
                grads[name] = b.buffer[a:z].reshape(np.shape(grads[name])).copy()
            b.pending = set(b.layers)
        self.stats["allreduce_s"] += sum(b.seconds for b in self._submitted)
        self.stats["exposed_s"] += exposed
        self.stats["steps"] += 1
        self._submitted = []
        return grads

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


def nccl_unavailable_reason(net) -> str | None:
    """Why the cuda backend can't reduce with NCCL here (None: it can): under the CUDA
    emulator (runtime/cuda_emulator, NETSPEC_CUDA_EMULATE=1 with no device) there is no NCCL,
    and the gradients are averaged with MPI on host memory instead."""
    from ..runtime.cuda_backend import cuda_emulated
    if cuda_emulated():
        return "CUDA emulated on the CPU: no NCCL"
    try:
        from cupy.cuda import nccl
    except ImportError as e:
        return f"cupy.cuda.nccl unavailable: {e}"
    if not getattr(nccl, "available", True):
        return "CuPy was built without NCCL"
    return None


class NcclGradients:
    """The cuda backend's reduction: device gradient buffers summed with NCCL, one communicator
    per logical GPU across the replicas (its unique id made by rank 0 and broadcast with MPI),
    then scaled by 1/K on the GPU's stream; the update then runs on the device as usual.

    NOT TESTED: written against cupy.cuda.nccl's NcclCommunicator(ndev, commId, rank) and
    allReduce(sendbuf, recvbuf, count, datatype, op, stream); no machine here has a GPU."""

    def __init__(self, replicas: Replicas, net):
        from cupy.cuda import nccl
        self.nccl, self.net, self.K = nccl, net, replicas.size
        self.comms = {}
        for g, device in enumerate(net.device_map):
            uid = nccl.get_unique_id() if replicas.is_root else None
            uid = replicas.comm.bcast(uid, root=0)
            with net.cp.cuda.Device(device):
                self.comms[g] = nccl.NcclCommunicator(replicas.size, uid, replicas.rank)
        self.stats = {"allreduce_s": 0.0, "exposed_s": 0.0, "steps": 0,
                      "bytes": 4 * sum(int(np.prod(s)) for s in net.param_shapes.values())}

    def average_on_device(self) -> None:
        """Sum and scale every gradient buffer in place, last layer first, after the backward
        pass (not overlapped with it: the plan's backward would need an NCCL step per layer on
        a side stream for that)."""
        nccl, net = self.nccl, self.net
        inst = net._grads_on_device
        t0 = time.perf_counter()
        for b in reversed(inst.compiled.plan.parameters):
            for p in b.parts:
                g = p["gpu"]
                view = inst.views[p["grad"]]
                stream = net._stream(g)
                with net.cp.cuda.Device(net.device_map[g]):
                    self.comms[g].allReduce(view.data.ptr, view.data.ptr, view.size,
                                            nccl.NCCL_FLOAT32, nccl.NCCL_SUM, stream.ptr)
                    with stream:
                        view *= np.float32(1.0 / self.K)
        net._dev_finish()
        self.stats["allreduce_s"] += time.perf_counter() - t0
        self.stats["exposed_s"] += time.perf_counter() - t0
        self.stats["steps"] += 1


# -- the trainer's side ------------------------------------------------------------------------
class DataParallel:
    """What the training loop calls when it runs as one of K replicas (see the module doc)."""

    def __init__(self, replicas: Replicas, net, graph, global_batch: int):
        self.replicas = replicas
        self.K, self.rank = replicas.size, replicas.rank
        self.local_batch = split_batch(global_batch, self.K)
        self.first_image = self.rank * self.local_batch
        self.net = net
        self.nccl = None
        self.reducer = None
        self.collective = "MPI allreduce of host buffers"
        if getattr(net, "backend", "") == "cuda":
            why = nccl_unavailable_reason(net)
            if why is None:
                self.nccl = NcclGradients(replicas, net)
                self.collective = "NCCL allreduce of device buffers"
            else:                         # e.g. the CUDA emulator: MPI on host memory
                self.collective = f"MPI allreduce of host buffers ({why})"
        if self.nccl is None:
            self.reducer = GradientBuckets(replicas, weighted_layer_shapes(graph), net.dtype)
            net.grad_hook = self.reducer.layer_ready
        if replicas.is_root:
            sys.stderr.write(f"netspec: data parallel: {self.K} replicas of {self.local_batch} "
                             f"images (global batch {global_batch}); gradients averaged by "
                             f"{self.collective}\n")

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.K

    @property
    def stats(self) -> dict:
        return (self.nccl or self.reducer).stats

    def reduce_step(self, loss, a1, a5, n, grads, stop):
        """After a replica's loss_and_grads: average the gradients (left on the device for a
        device update), sum loss and accuracy over the global batch, agree on a stop signal.
        Returns (global mean loss, top-1, top-5 accuracy, B, averaged grads)."""
        if self.nccl is not None:
            self.nccl.average_on_device()
        else:
            grads = self.reducer.average(grads)
            if callable(getattr(self.net, "update", None)):
                self.net.load_gradients(grads)
        have_acc = a1 is not None
        sums = self.replicas.allreduce_sum(
            [loss * n, (a1 or 0.0) * n, (a5 or 0.0) * n, n,
             1.0 if stop is not None and stop.signal is not None else 0.0],
            "the step's loss and accuracy sum")
        total = sums[3]
        if sums[4] and stop is not None and stop.signal is None:
            import signal
            stop.signal = signal.SIGTERM        # another replica was asked to stop
        return (float(sums[0] / total), float(sums[1] / total) if have_acc else None,
                float(sums[2] / total) if have_acc else None, int(total), grads)

    def evaluate(self, evaluate_fn, net, ds, **kw) -> dict:
        """Sharded validation: each replica scores its pieces; the counts (images, top-1 and
        top-5 hits, loss sum, and per class images and top-1 hits) are summed."""
        part = evaluate_fn(net, ds, shard=self.shard, **kw)
        n = part["images"]
        classes = max(len(getattr(ds, "classes", ())), 1)
        seen = np.zeros(classes)
        right = np.zeros(classes)
        if n:
            seen[:] = part.get("class_images", np.zeros(classes))
            errors = part.get("class_top1_error", [None] * classes)
            right[:] = [0.0 if e is None else round((1 - e) * c) for e, c in zip(errors, seen)]
        head = [n, (1 - part["top1_error"]) * n if n else 0.0,
                (1 - part["top5_error"]) * n if n else 0.0, part["loss"] * n if n else 0.0]
        s = self.replicas.allreduce_sum(np.concatenate([head, seen, right]),
                                        "the validation counts")
        total, seen, right = s[0], s[4:4 + classes], s[4 + classes:]
        if total == 0:
            return {"top1_error": float("nan"), "top5_error": float("nan"),
                    "loss": float("nan"), "images": 0}
        return {"top1_error": 1 - s[1] / total, "top5_error": 1 - s[2] / total,
                "loss": s[3] / total, "images": round(total),
                "class_images": [round(c) for c in seen],
                "class_top1_error": [1.0 - r / c if c else None for r, c in zip(right, seen)]}

    def epoch_metrics(self) -> dict:
        """Rank 0's communication figures since the last call, for metrics.jsonl: replicas,
        allreduce ms per step (time the buckets took on the communication thread), exposed ms
        per step (what the step waited for after its backward), and the overlap achieved,
        1 − exposed/allreduce."""
        st = self.stats
        steps = max(st["steps"], 1)
        out = {"replicas": self.K, "allreduce_ms_per_step": 1e3 * st["allreduce_s"] / steps,
               "allreduce_exposed_ms_per_step": 1e3 * st["exposed_s"] / steps,
               "allreduce_overlap": (1 - st["exposed_s"] / st["allreduce_s"])
               if st["allreduce_s"] > 0 else None,
               "allreduce_bytes_per_step": st["bytes"]}
        st.update(allreduce_s=0.0, exposed_s=0.0, steps=0)
        return out

    def close(self) -> None:
        if self.reducer is not None:
            self.reducer.close()


def train_replica(replicas: Replicas, make_trainer, echo_err):
    """Set up and run one replica's Trainer (`make_trainer()`), ending the job on failure.

    A failure during setup is shared (Replicas.agree) and reported once, by rank 0, with the
    usual exit status; any failure once training has started prints one line with the rank
    and calls MPI_Abort, so the other replicas don't wait for it."""
    try:
        try:
            trainer = make_trainer()
        except Exception as e:
            replicas.agree(e)
            raise
        replicas.agree(None)
        try:
            return trainer.run()
        finally:
            if trainer.data_parallel is not None:
                trainer.data_parallel.close()
    except _Quiet as e:
        if replicas.is_root:
            echo_err(f"netspec: error: {e}")
        sys.exit(e.exit_code)
    except SystemExit:
        raise
    except BaseException as e:   # noqa: BLE001 - any failure of a replica ends the job
        replicas.abort(f"failed: {_message(e)}")


_CURRENT: list = []


def current() -> Replicas | None:
    """This process's Replicas when started under MPI (made once), else None."""
    if not _CURRENT:
        _CURRENT.append(Replicas.from_environment())
    return _CURRENT[0]
