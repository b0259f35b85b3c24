"""Data-parallel training over MPI: `mpirun -n K netspec train ...` runs K replicas of the whole
network, one per MPI process, on one machine or several (`mpirun --hostfile`).

What K replicas compute is what one process computes with the same global batch (Krizhevsky
2014, "One weird trick", §2 data parallelism; PyTorch DistributedDataParallel; Horovod):

- The recipe's `batch` B is the *global* batch. Each replica takes B/K images of it: replica r
  takes images r·B/K … (r+1)·B/K − 1 of every global batch, which the data loader draws from
  the same (seed, epoch, batch) stream as one process (`Dataset.loader(shard=(r, K))`), so the
  data order and augmentation don't depend on K. A B that K doesn't divide is an error naming
  both numbers.
- Dropout masks are drawn per image from (seed, step, layer, the image's index in the global
  batch) (runtime/noise.py), so the masks don't depend on K either.
- Each replica computes the mean loss over its B/K images and its gradient; the gradients are
  summed with an allreduce and divided by K, which is the gradient of the mean over all B
  images. Every replica then applies the paper's update (§5) to the same weights with the same
  gradient, so the weights stay identical (no broadcast needed after the start: the
  initialisation is a function of the seed, and a resumed run loads one checkpoint).
- The allreduce runs per bucket of layers as soon as the backward pass has produced their
  gradients, on a communication thread, so it overlaps the rest of the backward pass (PyTorch
  DDP's gradient buckets and Horovod's background thread; buckets.py). numpy and opencl
  reduce host buffers with MPI; cuda reduces device buffers with NCCL (`NcclGradients`), or,
  on the CUDA emulator (no NCCL), or where two replicas share a GPU (NCCL refuses a GPU
  twice: `shared_nccl_devices`), host buffers with MPI like opencl, and says so.
- Only rank 0 writes checkpoints, metrics.jsonl, the progress bar and figures. Training loss and
  accuracy are summed over the replicas each step, so rank 0's meters cover the global batch.
- Validation is sharded the same way (every batch split into K near-equal pieces) and its
  counts and loss sums are added up.
- A checkpoint holds the global step, epoch and batch, so `--resume` works with any K that
  divides B.
- Failure: every wait on a collective has a timeout (`NETSPEC_COLLECTIVE_TIMEOUT`, seconds,
  default 300; mpi.py). A replica whose collective doesn't complete in time, or that raises, prints one
  line naming its rank and the reason and calls MPI_Abort, which ends every process of the job.
  A replica killed outright is noticed by `mpirun`, which ends the job itself.

This module is the driver: it tells an MPI launch from the launcher's environment variables
(`detect_launch`, without importing MPI), places each replica on its devices, picks the
gradient path (NCCL or buckets) and wraps the trainer (`DataParallel`, `train_replica`).
mpi4py is imported (by mpi.py) only when the process was started by an MPI launcher.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..errors import RunError
from .buckets import GradientBuckets, weighted_layer_shapes
from .mpi import Replicas, SetupFailed, collective_timeout, error_line

# (size, rank, local rank) variables of the common launchers: Open MPI (mpirun/prterun),
# MPICH and Intel MPI (Hydra), MVAPICH2.
LAUNCH_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK"),
)


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


def local_devices(devices, gpus: int, local_rank: int, count: int) -> list[int]:
    """The physical devices of the replica with this local rank: the devices given (or 0 … G−1
    for G logical GPUs) shifted by local_rank × their number, modulo the `count` devices there
    are; so 4 replicas of 2-GPU AlexNet on an 8-GPU node take 0,1 / 2,3 / 4,5 / 6,7, and
    replicas on a CPU or a single GPU share device 0."""
    base = list(devices) if devices else list(range(gpus))
    step = len(base)
    return [(d + local_rank * step) % max(count, 1) for d in base]


def device_count(backend: str) -> int:
    """Physical devices a backend numbers, as its class says (`Net.device_count`); 1 when its
    driver can't be imported."""
    from ..runtime import backend_class
    try:
        return backend_class(backend).device_count()
    except ImportError:
        return 1


def replica_devices(replicas: Replicas, devices, gpus: int, backend: str) -> list[int]:
    """`local_devices` for this replica, with `backend` 'auto' resolved as build() would."""
    if backend == "auto":
        from ..runtime import pick_auto
        backend = pick_auto(say=lambda m: None).backend
    return local_devices(devices, gpus, replicas.local_rank, device_count(backend))


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


def shared_nccl_devices(placements: list[str]) -> str | None:
    """Why NCCL can't join these replicas (None: it can): `placements[r]` is replica r's
    "host:d0,d1,..." (the physical device of each logical GPU). NCCL's communicator for
    logical GPU g spans every replica's device for g, and it refuses a GPU that appears twice
    ("Duplicate GPU detected"): e.g. two replicas on a machine with one GPU."""
    seen: dict[tuple[int, str, str], int] = {}
    for r, text in enumerate(placements):
        host, _, devices = text.rpartition(":")
        for g, d in enumerate(devices.split(",")):
            other = seen.setdefault((g, host, d), r)
            if other != r:
                return (f"replicas {other} and {r} both run logical GPU {g} on cuda:{d} of "
                        f"{host or 'this host'}, and NCCL refuses a GPU twice")
    return None


class NcclGradients:
    """The cuda backend's reduction: device gradient buffers summed with NCCL, one communicator
    per logical GPU across the replicas (its unique id made by rank 0 and broadcast with MPI),
    then scaled by 1/K on the GPU's stream; the update then runs on the device as usual.

    Not covered by the tests, which run without GPUs: written against cupy.cuda.nccl's
    NcclCommunicator(ndev, commId, rank) and allReduce(sendbuf, recvbuf, count, datatype, op,
    stream)."""

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
        net._dev_barrier()           # every stream after the step (a graph runs on one)
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
                mine = f"{socket.gethostname()}:{','.join(map(str, net.device_map))}"
                why = shared_nccl_devices(replicas.allgather_text(mine, "the replicas' devices"))
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
            replicas.check_alike(trainer.alike_items())
        except SetupFailed:
            trainer.abandon_start()        # rank 0's new run directory is removed again
            raise
        try:
            return trainer.run()
        finally:
            if trainer.data_parallel is not None:
                trainer.data_parallel.close()
    except SetupFailed as e:
        if replicas.is_root:
            echo_err(f"netspec: error: {e}")
        sys.exit(e.exit_code)
    except SystemExit:
        raise
    except BaseException as e:   # noqa: BLE001 - any failure of a replica ends the job
        replicas.abort(f"failed: {error_line(e)}")


_CURRENT: list = []


def current() -> Replicas | None:
    """This process's Replicas when started under MPI (made once), else None."""
    if not _CURRENT:
        _CURRENT.append(replicas_from_environment())
    return _CURRENT[0]


def replicas_from_environment(environ=None) -> Replicas | None:
    """A Replicas for the MPI job that started this process; None without an MPI launcher."""
    launch = detect_launch(environ)
    if launch is None:
        return None
    return Replicas(launch.local_rank, collective_timeout(environ))
