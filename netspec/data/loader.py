"""The batch pipeline of the paper's talk: four stages at once, on different batches.

    train on batch n          the caller's loop body
    copy batch n+1            the caller's `to_device` hook, called one batch ahead
    transform batch n+2 ...   worker processes (decode, crop, flip, PCA shift, mean)
    load batch n+3 ...        the kernel, asked to read the files ahead (posix_fadvise /
                              madvise WILLNEED) when the batch before it is handed out

Workers write batches into pre-allocated slots of shared memory (anonymous shared mappings
made before the workers are forked), so no array is ever pickled; only "(batch, slot)" and
"done" messages cross the pipes. Memory is bounded: each worker has
1 + ceil((prefetch + 1 [+1 with a `to_device` hook]) / workers) slots of one batch each.

Determinism. Epoch e's order is a permutation drawn from (seed, e); batch b's crops, flips and
colour shifts are drawn from (seed, e, b) alone. The batches are therefore the same, in the
same order, whatever the number of workers, and a run resumed at `start_batch=b` continues
exactly where the interrupted one would have.

Batches. (x, y): x float32 (N, 3, crop, crop) ((N, 1, crop, crop) with channels=1: the
ITU-R 601 luma of the RGB batch), mean-subtracted, with the PCA shift in
training; for 10-crop evaluation x is (N, 10, 3, crop, crop). y int64 (N,). With
device_input=True (training, 3 channels) x is instead a `U8Batch`: the uint8 crops, their
offsets and flips and the mean and PCA, which a device backend turns into that same float32
batch on the device (4x fewer bytes on the bus; data/augment.py, kernel/colour.py), and any
other backend on the host (`U8Batch.to_float()`). Training drops
the last partial batch (as most trainers do: every step sees batch_size images); evaluation
keeps it (every image is scored once).

x and y are views into the ring: they stay valid until the next batch is requested. Copy
them (or pass copy=True) to keep a batch longer than one step.

A Loader runs one epoch, once. Its workers start on the first batch and end at the end of
the epoch, on close(), when the consumer leaves the loop (break, exception, Ctrl-C), or when
the loader is garbage-collected; use it as a context manager to be explicit.
"""
from __future__ import annotations

import mmap
import os
import traceback
from multiprocessing.connection import wait

import numpy as np

from netspec.data.augment import (
    InputTransform,
    U8Batch,
    center_plan,
    draw_train_plan,
    write_planned_views,
    write_ten_crops,
    write_u8_views,
)
from netspec.data.processes import bound_workers, fork_context, ignore_sigint
from netspec.data.stats import PCA
from netspec.errors import DataError

MODES = ("train", "center", "ten")

# Domain tags keep the shuffle's and the batches' random streams apart.
_SHUFFLE_STREAM = 1
_AUGMENT_STREAM = 2

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, Pillow's "L"

_PARENT_CHECK_S = 0.5  # how often an idle worker checks that its parent is still alive


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The training order of epoch `epoch`: a permutation of range(count)."""
    return np.random.default_rng([seed, epoch, _SHUFFLE_STREAM]).permutation(count)


def batch_rng(seed: int, epoch: int, batch: int) -> np.random.Generator:
    """The random stream of one training batch (crops, flips, colour shifts)."""
    return np.random.default_rng([seed, epoch, _AUGMENT_STREAM, batch])


class Loader:
    """One epoch of batches from one split. Made by Dataset.loader / Dataset.ten_crop_batches."""

    def __init__(
        self, source, mean: np.ndarray, pca: PCA | None, *, mode: str, batch_size: int,
        crop: int, flip: bool = True, pca_sigma: float = 0.1, seed: int = 0, epoch: int = 0,
        start_batch: int = 0, shuffle: bool | None = None, drop_last: bool | None = None,
        workers: int = 0, prefetch: int = 1, copy: bool = False, to_device=None,
        channels: int = 3,
        shard: tuple[int, int] | None = None, device_input: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        base = mean.shape[0]
        _check_int("batch_size", batch_size, low=1)
        _check_int("crop", crop, low=1)
        if crop > base:
            raise DataError(f"crop {crop} is larger than the images, which are {base}×{base} "
                            f"(base); use a crop of at most {base} or a larger base")
        _check_int("seed", seed, low=0)
        _check_int("epoch", epoch, low=0)
        _check_int("workers", workers, low=0)
        _check_int("prefetch", prefetch, low=1)
        if channels not in (1, 3):
            raise DataError(f"image batches have 3 channels (RGB) or 1 (grey), not {channels}")
        self.channels = channels
        if device_input and (mode != "train" or channels != 3):
            raise ValueError("device_input batches are training batches of 3 channels")
        self.device_input = device_input
        self.x_dtype = np.uint8 if device_input else np.float32
        if pca_sigma < 0:
            raise DataError(f"pca_sigma must be >= 0, not {pca_sigma}")
        train = mode == "train"
        self.mode, self.batch_size, self.crop, self.base = mode, batch_size, crop, base
        self.flip, self.pca_sigma, self.seed, self.epoch = flip, pca_sigma, seed, epoch
        self.workers, self.prefetch, self.copy, self.to_device = workers, prefetch, copy, to_device
        self._source, self._pca = source, pca
        self._labels = np.asarray(source.labels, dtype=np.int64)
        # The planar mean, for crops with contiguous rows (see augment.write_view).
        self._mean = np.ascontiguousarray(np.asarray(mean, dtype=np.float32).transpose(2, 0, 1))
        self.transform = InputTransform(self._mean, pca, float(pca_sigma), int(seed))
        count = len(self._labels)
        self.drop_last = train if drop_last is None else drop_last
        self.num_batches = count // batch_size if self.drop_last else -(-count // batch_size)
        if count and not self.num_batches:
            raise DataError(f"the split has {count} images, fewer than one batch of {batch_size}; "
                            f"use a batch size of at most {count}")
        _check_int("start_batch", start_batch, low=0)
        if start_batch > self.num_batches:
            raise DataError(f"start_batch {start_batch} is past the end of the epoch "
                            f"({self.num_batches} batches)")
        shuffle = train if shuffle is None else shuffle
        self._order = epoch_order(seed, epoch, count) if shuffle else np.arange(count)
        # shard (r, K): hand out only replica r's piece of every batch (data parallelism,
        # netspec/train/data_parallel.py); the batch and its random draws stay the whole batch's
        if shard is not None:
            r, k = shard
            _check_int("replicas", k, low=1)
            if not 0 <= r < k:
                raise ValueError(f"shard {shard}: the rank must lie in 0..{k - 1}")
        self.shard = shard
        self.start_batch = start_batch
        # -j 200 for 4 batches on 2 cores starts 2 workers, not 200 (each holds its slots)
        self.workers_asked = workers
        self.workers = bound_workers(workers, self.num_batches - start_batch)
        self._next = start_batch
        self._started = False
        self._closed = False
        self._owner = os.getpid()  # a forked worker's copy of the loader must not close it
        self._procs: list = []
        self._conns: list = []

    # -- public ------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches in the whole epoch (also those before start_batch)."""
        return self.num_batches

    def state(self) -> dict:
        """Where a resumed run starts: pass these as seed, epoch and start_batch.

        Once the loop has received batch b, "batch" is b + 1.
        """
        return {"seed": self.seed, "epoch": self.epoch, "batch": self._next}

    def batch_indices(self, batch: int) -> np.ndarray:
        """The split's image indices that make up batch `batch`."""
        return self._order[batch * self.batch_size:(batch + 1) * self.batch_size]

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def __iter__(self):
        if self._started:
            raise RuntimeError("a Loader runs one epoch once; ask the Dataset for a new one")
        self._started = True
        return self._run()

    def close(self) -> None:
        """End the workers (at once) and let go of the ring. Safe to call more than once."""
        if self._closed or os.getpid() != self._owner:
            return
        self._closed = True
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit the modules close() needs may be gone
            pass

    # -- filling one batch (runs in workers, or inline) ---------------------------------------

    def _view_shape(self) -> tuple[int, ...]:
        square = (self.channels, self.crop, self.crop)
        return (10, *square) if self.mode == "ten" else square

    def _shard_range(self, n: int) -> tuple[int, int]:
        """This loader's images [a, b) of a batch of n: replica r of K takes n·r//K ..
        n·(r+1)//K − 1 (all of them without a shard)."""
        if self.shard is None:
            return 0, n
        r, k = self.shard
        return n * r // k, n * (r + 1) // k

    def _fill(self, batch: int, x: np.ndarray, y: np.ndarray) -> int:
        """Write batch `batch` into x, y; return its size."""
        if self.channels == 1:
            # Grey = ITU-R 601 luma of the RGB view (as Pillow's "L"). The view is linear in
            # the pixels, so this equals the grey image minus the grey mean, plus the grey of
            # the PCA shift: the same pipeline, seen through one linear map.
            rgb = np.empty((*x.shape[:-3], 3, *x.shape[-2:]), dtype=np.float32)
            n = self._fill_rgb(batch, rgb, y)
            np.einsum("...chw,c->...hw", rgb[:n], _LUMA, out=x[:n, ..., 0, :, :])
            return n
        return self._fill_rgb(batch, x, y)

    def _fill_rgb(self, batch: int, x: np.ndarray, y: np.ndarray) -> int:
        """This rank's images a..b-1 of the batch (all of it without sharding), with exactly
        the crops, flips and colour shifts the whole batch draws for them: the plan is drawn
        for the whole batch, then sliced."""
        indices = self.batch_indices(batch)
        n = len(indices)
        a, b = self._shard_range(n)
        part = indices[a:b]
        y[:b - a] = self._labels[part]
        images = (self._source.planar(int(i)) for i in part)
        if self.mode == "ten":
            write_ten_crops(x[:b - a], images, self._mean)
            return b - a
        plan = self._plan(batch, n, a, b)
        if self.device_input:
            write_u8_views(x[:b - a], images, plan.offsets, plan.flips)
        else:
            write_planned_views(x[:b - a], images, self._mean, plan)
        return b - a

    def _plan(self, batch: int, n: int, a: int, b: int):
        """Images a..b-1's part of the plan drawn for the whole batch of n."""
        if self.mode == "train":
            plan = draw_train_plan(batch_rng(self.seed, self.epoch, batch), n, self.base,
                                   self.crop, flip=self.flip, pca=self._pca,
                                   pca_sigma=self.pca_sigma,
                                   colour_key=(self.seed, self.epoch, batch * self.batch_size))
        else:
            plan = center_plan(n, self.base, self.crop)
        if (a, b) != (0, n):
            plan = type(plan)(offsets=plan.offsets[a:b], flips=plan.flips[a:b],
                              shifts=None if plan.shifts is None else plan.shifts[a:b])
        return plan

    def _u8_batch(self, batch: int, x: np.ndarray) -> U8Batch:
        """The ring's uint8 crops of batch `batch` with their plan (drawn again: cheap)."""
        n = len(self.batch_indices(batch))
        a, b = self._shard_range(n)
        plan = self._plan(batch, n, a, b)
        return U8Batch(x, plan.offsets, plan.flips, self.transform, self.epoch,
                       batch * self.batch_size + a)

    def _readahead(self, batch: int) -> None:
        if batch < self.num_batches:
            indices = self.batch_indices(batch)
            a, b = self._shard_range(len(indices))
            self._source.readahead(indices[a:b])

    # -- the pipeline -----------------------------------------------------------------------

    def _run(self):
        try:
            if self._next >= self.num_batches:
                return
            ring = _WorkerRing(self) if self.workers > 0 else _InlineRing(self)
            ahead = {}  # batch -> what to_device returned for it
            for batch in range(self.start_batch, self.num_batches):
                if self._closed:
                    return
                item = self._take(ring, batch, ahead)
                self._next = batch + 1
                yield item
                ring.release(batch)
        finally:
            self.close()

    def _take(self, ring, batch: int, ahead: dict):
        x, y = ring.ready(batch)
        if self.copy:
            x, y = x.copy(), y.copy()
        if self.device_input:
            x = self._u8_batch(batch, x)
        if self.to_device is None:
            return x, y
        # Copy stage: start moving batch n+1 while the caller trains on batch n.
        if batch not in ahead:
            ahead[batch] = self.to_device(x, y)
        if batch + 1 < self.num_batches:
            nx, ny = ring.ready(batch + 1)
            if self.copy:
                nx, ny = nx.copy(), ny.copy()
            if self.device_input:
                nx = self._u8_batch(batch + 1, nx)
            ahead[batch + 1] = self.to_device(nx, ny)
        return ahead.pop(batch)

    def _batch_size_of(self, batch: int) -> int:
        a, b = self._shard_range(len(self.batch_indices(batch)))
        return b - a


class _InlineRing:
    """workers=0: each batch is made in this process when it is asked for."""

    def __init__(self, loader: Loader):
        self.loader = loader
        slots = 2 if loader.to_device is not None else 1
        self.x = np.empty((slots, loader.batch_size, *loader._view_shape()), dtype=loader.x_dtype)
        self.y = np.empty((slots, loader.batch_size), dtype=np.int64)
        self.free = list(range(slots))
        self.slot_of: dict[int, int] = {}

    def ready(self, batch: int):
        if batch not in self.slot_of:
            slot = self.free.pop(0)
            self.loader._readahead(batch + 1)
            self.loader._fill(batch, self.x[slot], self.y[slot])
            self.slot_of[batch] = slot
        slot, n = self.slot_of[batch], self.loader._batch_size_of(batch)
        return self.x[slot, :n], self.y[slot, :n]

    def release(self, batch: int) -> None:
        self.free.append(self.slot_of.pop(batch))


class _WorkerRing:
    """workers>0: batch b is made by worker b % workers, into one of that worker's own slots
    of shared memory. Batches are handed out in order as slots come free, so the workers stay
    busy while the caller trains; a slot is written by one process only, which keeps the page
    faults of fresh shared memory to one per page."""

    def __init__(self, loader: Loader):
        self.loader = loader
        workers = loader.workers
        held = loader.prefetch + 1 + (loader.to_device is not None)  # ready or in the caller's hands
        per_worker = 1 + -(-held // workers)
        view = loader._view_shape()
        self.x = [_SharedArray((per_worker, loader.batch_size, *view), loader.x_dtype)
                  for _ in range(workers)]
        self.y = [_SharedArray((per_worker, loader.batch_size), np.int64) for _ in range(workers)]
        self.free = [list(range(per_worker)) for _ in range(workers)]
        self.slot_of: dict[int, tuple[int, int]] = {}
        self.done: set[int] = set()
        self.next_dispatch = loader._next
        self.readahead_done = loader._next - 1
        ctx = fork_context()
        parent = os.getpid()
        for i in range(workers):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker_main,
                               args=(theirs, loader, self.x[i], self.y[i], parent),
                               name=f"netspec-loader-{i}", daemon=True)
            proc.start()
            theirs.close()
            loader._procs.append(proc)
            loader._conns.append(ours)
        self.dispatch()

    def dispatch(self) -> None:
        loader = self.loader
        while self.next_dispatch < loader.num_batches:
            batch = self.next_dispatch
            worker = batch % loader.workers
            if not self.free[worker]:
                return  # that worker's slots are all full: the pipeline is as far ahead as it goes
            slot = self.free[worker].pop(0)
            # Load stage: ask for this batch's files and the next one's before they're needed.
            while self.readahead_done < batch + 1:
                self.readahead_done += 1
                loader._readahead(self.readahead_done)
            try:
                loader._conns[worker].send((batch, slot))
            except OSError:  # a broken pipe: the worker is gone
                self._worker_died(worker)
            self.slot_of[batch] = (worker, slot)
            self.next_dispatch += 1

    def ready(self, batch: int):
        loader = self.loader
        while batch not in self.done:
            conns, procs = loader._conns, loader._procs
            ready = wait(conns + [p.sentinel for p in procs])
            for i, conn in enumerate(conns):
                if conn in ready:
                    self._receive(i)
            if batch in self.done:
                break
            for i, proc in enumerate(procs):
                if proc.sentinel in ready and not conns[i].poll():
                    self._worker_died(i)
        (worker, slot), n = self.slot_of[batch], loader._batch_size_of(batch)
        return self.x[worker].array[slot, :n], self.y[worker].array[slot, :n]

    def _receive(self, worker: int) -> None:
        try:
            batch, _slot, error = self.loader._conns[worker].recv()
        except (EOFError, OSError):
            self._worker_died(worker)
        if error is not None:
            kind, message = error
            if kind == "data":
                raise DataError(message)
            raise RuntimeError(f"data loader worker failed on batch {batch}:\n{message}")
        self.done.add(batch)

    def _worker_died(self, worker: int):
        proc = self.loader._procs[worker]
        proc.join(timeout=1)
        raise DataError(f"data loader worker {worker} died unexpectedly (exit code "
                        f"{proc.exitcode}; out of memory?); try fewer workers or a smaller batch")

    def release(self, batch: int) -> None:
        self.done.discard(batch)
        worker, slot = self.slot_of.pop(batch)
        self.free[worker].append(slot)
        self.dispatch()


def single_threaded() -> None:
    """A worker decodes one image at a time: its BLAS and OpenMP pools stay at one thread, so
    -j workers next to the training step's threads don't oversubscribe the cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1)


def _worker_main(conn, loader: Loader, x: _SharedArray, y: _SharedArray, parent: int) -> None:
    ignore_sigint()
    single_threaded()
    while True:
        if not conn.poll(_PARENT_CHECK_S):
            if os.getppid() != parent:
                return  # the parent is gone; nobody will read what we make
            continue
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        batch, slot = task
        try:
            loader._fill(batch, x.array[slot], y.array[slot])
            conn.send((batch, slot, None))
        except DataError as exc:
            conn.send((batch, slot, ("data", str(exc))))
        except Exception:
            conn.send((batch, slot, ("bug", traceback.format_exc())))


class _SharedArray:
    """An array in an anonymous shared mapping (MAP_SHARED | MAP_ANONYMOUS): forked children
    write into the same pages the parent reads. Freed when the last process lets go of it."""

    def __init__(self, shape: tuple[int, ...], dtype):
        count = int(np.prod(shape))
        self.buffer = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1))
        self.array = np.frombuffer(self.buffer, dtype=dtype, count=count).reshape(shape)


def _check_int(name: str, value, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise DataError(f"{name} must be an integer >= {low}, not {value!r}")
