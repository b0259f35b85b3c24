"""The paper's training loop: SGD with momentum and weight decay (§5), the learning-rate
schedule, per-epoch validation, metrics, and checkpoints that resume exactly.

Exact resume: everything random is derived from (seed, epoch, batch) or (seed, step) — the
loader's shuffle and augmentation by the data package, the dropout masks from (seed, step,
layer, image) by runtime/noise.py — so a run stopped after step s and resumed computes the same
step s+1 as an unbroken run.

A run is made in stages (`Trainer`): resolve the flags, recipe and resumed state into one
`RunConfig` (run_config.py), open the run directory (rundir.py), open the data, build the net,
set the starting state; then train.
"""
from __future__ import annotations

import logging
import math
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import NetspecError, RunError
from ..ir.memory import check_memory
from ..kernel.colour import COLOUR_DESCRIPTION
from ..runtime import build
from ..runtime.noise import NOISE_DESCRIPTION, image_noise
from ..runtime.sgd import layer_multipliers, sgd_update
from . import data_parallel
from .checkpoint import WEIGHTS, repair_best, save_checkpoint
from .evaluate import evaluate
from .metrics import AverageMeter, accuracy
from .run_config import Resumed, RunConfig, TrainOptions, resolve_run
from .run_lock import RunLock
from .rundir import (
    append_metrics,
    best_from_state,
    best_summary,
    check_schedule_data,
    describe_data_change,
    discard_launch,
    discard_new_run,
    divergence_message,
    entries,
    holds_checkpoint,
    improves,
    nonfinite,
    trim_metrics,
    write_launch,
)
from .schedule import Schedule

log = logging.getLogger("netspec.train")

__all__ = ["RunConfig", "TrainOptions", "Trainer", "train"]


class _Stop:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and returns."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:   # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:       # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def _dataset(data: str, base: int | None, workers: int):
    from ..data import open_dataset
    return open_dataset(data, base, workers=workers, progress=False)


def _silent(*args, **kwargs) -> None:
    pass


class Trainer:
    """One training run. Made in stages, each with one job: resolve the configuration
    (run_config.py), open the run directory, open the data, build the net, set the starting
    state (fresh, --init-from or a restored checkpoint); then `run()` trains.

    Under mpirun it is one of K data-parallel replicas (data_parallel.py); only the root
    replica (rank 0, `is_root`) writes files and speaks."""

    def __init__(self, opts: TrainOptions, echo=print):
        self._launched = self._new_run = None
        self.data_parallel = None
        self._lock = None
        made = None
        try:
            self.replicas = data_parallel.current()
            if not self.is_root:
                echo, opts = _silent, replace(opts, progress=False)
            self.echo = echo
            self.opts = opts
            made = self._lock_run_dir(opts.resume or opts.out)
            self.config = resolve_run(opts, tidy=self.is_root)
            # before the run directory: a spec or --batch-size past the machine's memory is
            # refused in one line, leaving nothing behind
            check_memory(self.config.graph, self.config.recipe.batch_size, True, "training")
            if self._lock is None:
                made = self._lock_run_dir(self.config.run_dir)
            self._open_run_dir(made)
            self._open_data()
            self._build_net()
            self._start_state()
            self.tensorboard = self._open_tensorboard()
        except NetspecError:    # a start-up error leaves no run behind
            self._unlock()
            discard_launch(self._launched)
            if made and made[0] and self._launched is None:     # the lock made the folder
                discard_new_run(self._lock_dir, True, made[1])
            raise

    def alike_items(self) -> dict[str, str]:
        """What every data-parallel replica must have been started with, as text: the spec,
        the recipe (overrides applied), the data, the seed and the step limit."""
        cfg = self.config
        recipe = {k: v for k, v in vars(cfg.recipe).items() if k != "pos"} \
            if hasattr(cfg.recipe, "__dict__") else repr(cfg.recipe)
        return {"spec": cfg.graph.spec.source, "recipe": repr(recipe), "data": str(cfg.data),
                "seed": str(cfg.seed), "max_steps": str(cfg.max_steps)}

    def abandon_start(self) -> None:
        """Undo a new run's launch record after a start-up check failed (see __init__)."""
        discard_launch(self._launched)
        self._launched = None

    @property
    def is_root(self) -> bool:
        """True in a single process and in rank 0 of a data-parallel job."""
        return self.replicas is None or self.replicas.is_root

    # the parts of the configuration the loop reads most
    @property
    def graph(self):
        return self.config.graph

    @property
    def recipe(self):
        return self.config.recipe

    @property
    def run_dir(self):
        return self.config.run_dir

    @property
    def every(self) -> int | None:
        return self.config.every

    @property
    def keep(self) -> int:
        return self.config.keep

    @property
    def max_steps(self) -> int | None:
        return self.config.max_steps

    # -- setup ----------------------------------------------------------------------------
    def _lock_run_dir(self, run_dir) -> tuple[bool, frozenset[str]] | None:
        """Take the run directory's lock (rank 0; run_lock.py) before anything in it is read
        or written: another process running it is refused here. A new run's directory is
        made for the lock; returns (whether it was made, the names there before)."""
        if run_dir is None or not self.is_root:
            return None
        run_dir = Path(run_dir)
        if self.opts.resume and not run_dir.is_dir():
            return None                # resolve_run says there is no such run
        before = entries(run_dir)
        created = not run_dir.exists()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"can't create the run directory {run_dir}: "
                           f"{e.strerror or e}") from None
        self._lock, self._lock_dir = RunLock(run_dir), run_dir
        try:
            note = self._lock.acquire()
        except RunError:
            self._lock = None
            if created:
                discard_new_run(run_dir, True, before)
            raise
        if note:
            self.echo(f"note: {note}")
        return created, before

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _open_run_dir(self, made) -> None:
        """Write a new run's launch record (rank 0): from here on the run directory can be
        resumed, even if killed in what follows."""
        cfg = self.config
        if not cfg.new or not self.is_root:
            return
        created, before = made
        if holds_checkpoint(cfg.run_dir):    # another run finished there since resolve_run
            raise RunError(f"{cfg.run_dir} already holds a run; use --resume {cfg.run_dir} "
                           f"or another --out")
        self._launched = write_launch(cfg.run_dir, cfg.launch_record(), created)
        self._new_run = (cfg.run_dir, created, before)

    def _open_data(self) -> None:
        """Open the data set and check it against the spec; the crop and base size."""
        from ..data import check_class_count
        from .input_check import image_channels

        cfg, graph, r = self.config, self.config.graph, self.config.recipe
        if self.replicas is not None:
            data_parallel.split_batch(r.batch_size, self.replicas.size)
        self.crop = r.crop or graph.input_shape[1]
        self.base = r.base or self.crop
        channels = image_channels(graph)  # before any image is read
        self.ds = _dataset(cfg.data, self.base, cfg.workers)
        self.ds.channels = channels
        self.data_fingerprint = self.ds.fingerprint()
        if self.ds.base < self.crop:
            raise RunError(f"the data's images are {self.ds.base}x{self.ds.base}, smaller "
                           f"than the spec's crop {self.crop}")
        check_class_count(self.ds.classes, graph.classes)
        check_schedule_data(r, "val" in self.ds.splits and self.ds.size("val") > 0,
                            graph.spec.path)

    def _build_net(self) -> None:
        """Build the net on its devices (a replica's own under mpirun) and the update's
        multipliers."""
        cfg = self.config
        kwargs = {"seed": cfg.seed, "dtype": cfg.dtype}
        if cfg.devices is not None:
            kwargs["devices"] = list(cfg.devices)
        if self.replicas is not None:
            kwargs["devices"] = data_parallel.replica_devices(self.replicas, cfg.devices,
                                                              cfg.graph.gpus, cfg.backend)
        self.net = build(cfg.graph, cfg.backend, **kwargs)
        if self.replicas is not None:
            self.data_parallel = data_parallel.DataParallel(self.replicas, self.net, cfg.graph,
                                                            cfg.recipe.batch_size)
        self.lr_mults, self.decay_mults = layer_multipliers(cfg.graph)
        # kernel backends run the update on the device (one SGD launch per GPU, with the
        # layers' multipliers); the NumPy backend updates host arrays here
        self.device_update = callable(getattr(self.net, "update", None))
        # a device net (PlanNet) on one process keeps each step's loss and logits on the
        # device and they are read a print interval at a time (`_read_outputs`), so a step
        # never waits for the device; the meters come out the same
        self.deferred = (self.device_update and self.data_parallel is None
                         and callable(getattr(self.net, "stash_step_outputs", None)))
        self._pending: list = []           # (labels, step) of the stashed steps, in order
        self.params = self.net.parameters()

    def _start_state(self) -> None:
        """Step 0 with zero momentum, from the seed's or --init-from's weights; or the resumed
        checkpoint's step."""
        cfg = self.config
        if cfg.init_from:
            from .init_from import init_from_run
            params, report = init_from_run(cfg.init_from, self.params)
            self.net.load_parameters(params)
            self.params = self.net.parameters()
            self.echo(report.table())
        self.momentum = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.schedule = Schedule.from_recipe(cfg.recipe)
        self.step = self.epoch = self.batch = 0
        self.meters_state = None
        self.saved_step = None
        self.data_changes = []
        self.best = None        # the best epoch's validation figures (rundir.best_from_state)
        if cfg.resumed is not None:
            self._restore(cfg.resumed)

    def _restore(self, resumed: Resumed) -> None:
        """Load the checkpoint's weights, momentum, schedule and position."""
        params, momentum, state = resumed.params, resumed.momentum, resumed.state
        if state.get("classes") and list(state["classes"]) != list(self.ds.classes):
            raise RunError(f"{self.run_dir}: the data's classes differ from the run's")
        self._check_data_unchanged(state)
        try:
            self.net.load_parameters(params)
        except ValueError as e:
            raise RunError(f"{self.run_dir}: the checkpoint does not match the spec: {e}") \
                from None
        self.params = self.net.parameters()
        # state tensors (no lr multiplier: SGD never trains them) have no momentum on the
        # kernel backends, so a checkpoint may hold none for them; the trained ones must
        missing = [k for k in self.lr_mults if k not in momentum]
        if missing:
            raise RunError(f"{self.run_dir}: the checkpoint has no momentum for "
                           f"{', '.join(missing)}")
        self.momentum = {k: np.array(momentum[k], dtype=self.params[k].dtype)
                         if k in momentum else np.zeros_like(self.params[k])
                         for k in self.params}
        if self.device_update:
            self.net.load_velocities(self.momentum)
        self.schedule = Schedule.from_state(state["schedule"])
        if self.config.resume_lr is not None:
            self.schedule.lr = self.config.resume_lr
        self.step, self.epoch, self.batch = state["step"], state["epoch"], state["batch"]
        self.meters_state = state.get("meters")
        self.saved_step = self.step
        self.best = best_from_state(state, self.run_dir)
        if self.is_root:
            trim_metrics(self.run_dir, self.epoch)
            if self.best is not None:
                repair_best(self.run_dir, self.best["step"])

    def _check_data_unchanged(self, state: dict) -> None:
        """Refuse to resume on data that changed since the run started (images added move the
        mean image and change the epoch's length), unless --allow-data-change: then go on,
        and record the change in the run's state (data_changes)."""
        self.data_changes = list(state.get("data_changes", []))
        before = state.get("data_fingerprint")
        if before is None or before == self.data_fingerprint:
            return
        what = describe_data_change(before, self.data_fingerprint)
        if not self.opts.allow_data_change:
            raise RunError(f"{self.run_dir}: the data {self.config.data} changed since the run "
                           f"started ({what}); resuming would move the mean image and the "
                           f"epochs under it. Restore the data, or resume with "
                           f"--allow-data-change (recorded in the run's state)")
        self.echo(f"note: the data changed since the run started ({what}); going on as "
                  f"--allow-data-change asks, recorded in {self.run_dir}/state.json")
        self.data_changes.append({"step": int(state["step"]), "time": time.time(),
                                  "change": what, "before": before,
                                  "after": self.data_fingerprint})

    def _open_tensorboard(self):
        """Rank 0's TensorBoard writer; None elsewhere and without netspec[tensorboard]."""
        if not self.is_root:
            return None
        from .tensorboard import open_tensorboard
        return open_tensorboard(self.run_dir)

    # -- state ----------------------------------------------------------------------------
    def state(self, meters=None) -> dict:
        """The run state saved with each checkpoint (state.json)."""
        cfg, ds = self.config, self.ds
        return {
            "format": 1,
            "network": cfg.graph.name,
            "epoch": self.epoch, "batch": self.batch, "step": self.step,
            "lr": self.schedule.lr,
            "schedule": self.schedule.state(),
            "seed": cfg.seed,
            "rng": {"data": "numpy default_rng([seed, epoch, stream, batch])",
                    "colour_shift": COLOUR_DESCRIPTION,
                    "dropout": NOISE_DESCRIPTION},
            "replicas": self.replicas.size if self.replicas is not None else 1,
            "loader": {"epoch": self.epoch, "batch": self.batch},
            "meters": meters,
            "classes": list(ds.classes),
            "class_names": list(ds.class_names),
            "data_layout": ds.layout, "labels_source": ds.labels_source,
            "spec_text": cfg.spec_text,
            "data": str(cfg.data),
            "data_mean": np.asarray(ds.mean, np.float32).round(4).tolist(),
            "data_pca": {"eigenvalues": np.asarray(ds.pca.eigenvalues).tolist(),
                         "eigenvectors": np.asarray(ds.pca.eigenvectors).tolist()},
            "recipe": {k: v for k, v in cfg.recipe.__dict__.items() if k != "pos"},
            "overrides": cfg.overrides,
            "backend": self.net.backend,
            "backend_requested": cfg.backend,
            "workers": cfg.workers,
            "max_steps": cfg.max_steps,
            "checkpoint_every": cfg.every, "keep": cfg.keep,
            "data_fingerprint": self.data_fingerprint,
            "data_changes": self.data_changes,
            "best": self.best,
        }

    def save(self, meters=None, best: bool = False) -> None:
        """Write a checkpoint (rank 0; the replicas' weights are identical); best: it is also
        the run's best (checkpoint-best.safetensors)."""
        if not self.is_root:
            return
        if self.device_update:
            self.params, self.momentum = self.net.parameters(), self.net.velocities()
        bad = nonfinite(self.params) + nonfinite(self.momentum)
        if bad:      # never replace a good checkpoint by a diverged one
            self._diverged(f"the parameters became non-finite ({bad[0]})", self.step)
        save_checkpoint(self.run_dir, self.params, self.momentum, self.state(meters), self.keep,
                        best)
        self.saved_step = self.step

    def _diverged(self, what: str, step: int):
        raise RunError(divergence_message(what, step, self.epoch + 1, self.schedule.lr,
                                          self.run_dir, self.saved_step))

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        except NetspecError:
            if self.step == 0 and self._new_run is not None:   # a start-up error: no run
                self._close_logs()
                discard_new_run(*self._new_run)
            raise
        finally:
            self._unlock()

    def _run(self) -> dict:
        r = self.recipe
        echo = self.echo
        self._announce()
        last = None
        if self.is_root and not (self.run_dir / WEIGHTS).exists():
            self.save()     # step 0: resumable before the first step ends
            discard_launch((self.run_dir, False))   # the checkpoint's state says it all now
        with _Stop() as stop:
            self._stop = stop
            while self.epoch < r.epochs:
                if self.max_steps is not None and self.step >= self.max_steps:
                    break
                done = self._epoch(stop)
                if stop.signal is not None:
                    echo(f"stopped by signal {stop.signal} at step {self.step}; checkpoint "
                         f"written to {self.run_dir}")
                    self._close_logs()
                    return {"stopped": True, "step": self.step}
                if not done:
                    break
                last = self._end_of_epoch()
        echo(self._summary(last))
        self._close_logs()
        return {"stopped": False, "step": self.step, "last": last, "best": self.best}

    def _announce(self) -> None:
        """The run's first lines: network, backend, data, run directory, overrides."""
        ds, echo = self.ds, self.echo
        val = ds.size("val") if "val" in ds.splits else 0
        echo(f"netspec train: {self.graph.name} on {self.net.backend} backend"
             f"{self._devices_note()}, data {self.config.data} ({len(ds.classes)} classes, "
             f"{ds.size('train')} train / {val} val), run {self.run_dir}")
        if ds.layout != "class folders":
            echo(f"data layout: {ds.layout}; val labels from {ds.labels_source}")
        self._announce_dropped(ds.size("train"))
        if self.config.overrides:
            echo(f"overrides of the spec's recipe: "
                 f"{', '.join(f'{k}={v}' for k, v in self.config.overrides.items())}")

    def _announce_dropped(self, images: int) -> None:
        """Say that the last partial batch of each epoch is left out (the loader drops it:
        every step has the recipe's batch size). Not said for data-parallel runs, whose
        replicas' shards decide it."""
        batch = self.recipe.batch_size
        if self.data_parallel is None and images > batch and images % batch:
            self.echo(f"each epoch trains {images // batch} batches of {batch}: the last "
                      f"{images % batch} of {images} training images (a different few each "
                      f"epoch, the order being shuffled) are left out")

    def _close_logs(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()

    def _devices_note(self) -> str:
        note = getattr(self.net, "device_note", "")
        return f" ({note})" if note else ""

    def _epoch(self, stop) -> bool:
        """Train from (epoch, batch) to the end of the epoch; False if stopped early."""
        r = self.recipe
        meters = {"loss": AverageMeter("Loss"), "top1": AverageMeter("Acc@1"),
                  "top5": AverageMeter("Acc@5")}
        if self.meters_state and self.batch > 0:
            for k, (s, c) in self.meters_state.items():
                meters[k].sum, meters[k].count = s, c
        self.meters_state = None
        loader = self.ds.loader("train", batch_size=r.batch_size, crop=self.crop,
                                flip=r.flip, pca_sigma=r.pca_sigma, seed=self.config.seed,
                                workers=self.config.workers, epoch=self.epoch,
                                start_batch=self.batch,
                                shard=self.data_parallel.shard if self.data_parallel else None,
                                device_input=self._device_input())
        total = len(loader)
        if total == 0:
            raise RunError(f"the training set has {self.ds.size('train')} images, fewer than "
                           f"one batch of {r.batch_size}; use a smaller --batch-size")
        bar = _progress(total, self.batch, f"epoch {self.epoch + 1}/{r.epochs}",
                        self.config.progress, self.config.print_freq, self.echo)
        t0 = time.perf_counter()
        images = 0
        completed = True
        every_read = max(self.config.print_freq or 0, 1) if self.config.progress else 10
        with loader:
            for x, y in loader:
                loss = self._train_step(x, y, meters)
                images += len(y) * (self.data_parallel.K if self.data_parallel else 1)
                self.batch += 1
                if self.deferred and (len(self._pending) >= every_read or self.batch >= total
                                      or (self.every and self.step % self.every == 0)):
                    loss = self._read_outputs(meters, bar)
                rate = images / max(time.perf_counter() - t0, 1e-9)
                bar.update(1, loss=meters["loss"].avg, top1_err=1 - meters["top1"].avg,
                           rate=rate)
                if not math.isfinite(loss):
                    bar.close()
                    self._diverged(f"the loss became {loss}", self.step + 1)
                if self.every and self.step % self.every == 0 and self.batch < total:
                    self.save({k: (m.sum, m.count) for k, m in meters.items()})
                if stop.signal is not None or (self.max_steps is not None
                                               and self.step >= self.max_steps):
                    completed = self.batch >= total
                    break
        if self._pending:                  # stopped between two reads
            self._read_outputs(meters, bar)
        bar.close()
        self.images_per_sec = images / max(time.perf_counter() - t0, 1e-9)
        self.train_meters = meters
        if not completed or stop.signal is not None:
            if self.saved_step != self.step:     # not just written by --checkpoint-every
                self.save({k: (m.sum, m.count) for k, m in meters.items()})
            return False
        return True

    def _device_input(self) -> bool:
        """Whether batches cross to the device as uint8 crops, finished there (RGB input, a
        net whose runtime does it: the cuda backend); they are the same float batches."""
        prepares = getattr(self.net, "_dev_prepares_input", None)
        return bool(prepares and prepares() and self.ds.channels == 3
                    and self.net.dtype == np.float32)

    def _train_step(self, x, y, meters) -> float:
        r = self.recipe
        dp = self.data_parallel
        self.net.rng = image_noise(self.config.seed, self.step,
                                               dp.first_image if dp else 0, len(y))
        if not hasattr(x, "pixels") and x.dtype != self.net.dtype:     # a U8Batch stays one
            x = x.astype(self.net.dtype)
        if self.deferred:
            self.net.loss_and_grads(x, y, train=True, wait=False)
            self.net.stash_step_outputs()
            self._pending.append((np.array(y), self.step))     # the loader reuses y
            self.net.update(self.schedule.lr, r.momentum, r.weight_decay)
            self.step += 1
            return 0.0                     # read with the others (_read_outputs)
        loss, grads = self.net.loss_and_grads(x, y, train=True)
        logits = getattr(self.net, "last_logits", None)
        a1 = a5 = None
        if logits is not None:
            a1, a5 = accuracy(np.asarray(logits), y, (1, 5))
        n = len(y)
        if dp is not None:        # averaged over the replicas: the global batch's figures
            loss, a1, a5, n, grads = dp.reduce_step(loss, a1, a5, n, grads,
                                                    getattr(self, "_stop", None))
        if a1 is not None:
            meters["top1"].update(a1, n)
            meters["top5"].update(a5, n)
        meters["loss"].update(loss, n)
        if not math.isfinite(loss):
            return loss
        if self.device_update:
            self.net.update(self.schedule.lr, r.momentum, r.weight_decay)
        else:
            params = self.params if self.params is not None else self.net.parameters()
            sgd_update(params, grads, self.momentum, self.schedule.lr, r.momentum,
                       r.weight_decay, self.lr_mults, self.decay_mults)
            bad = nonfinite(params)     # host arrays: cheap next to the update itself
            if bad:
                self._diverged(f"the parameters became non-finite ({bad[0]}) after the update",
                               self.step + 1)
            self.net.load_parameters(params)
            self.params = params
        self.step += 1
        return loss

    def _read_outputs(self, meters, bar) -> float:
        """The stashed steps' losses and logits, read at once, into the meters in step order,
        as _train_step would have put them; a non-finite loss ends the run naming its step.
        The last step's loss."""
        pending, self._pending = self._pending, []
        loss = 0.0
        for (y, step), (loss, logits) in zip(pending, self.net.collect_step_outputs()):
            a1, a5 = accuracy(logits, y, (1, 5))
            meters["top1"].update(a1, len(y))
            meters["top5"].update(a5, len(y))
            meters["loss"].update(loss, len(y))
            if not math.isfinite(loss):
                bar.close()
                self._diverged(f"the loss became {loss}", step + 1)
        return loss

    def _end_of_epoch(self) -> dict:
        r = self.recipe
        m = self.train_meters
        val = {"top1_error": float("nan"), "top5_error": float("nan"), "loss": float("nan")}
        if "val" in self.ds.splits and self.ds.size("val"):
            run_eval = self.data_parallel.evaluate if self.data_parallel else \
                (lambda fn, *a, **k: fn(*a, **k))
            val = run_eval(evaluate, self.net, self.ds, crop=self.crop,
                           batch_size=r.batch_size, workers=self.config.workers)
            if not math.isfinite(val["loss"]):
                self._diverged(f"the validation loss became {val['loss']}", self.step)
        lr_used = self.schedule.lr
        self.epoch += 1
        self.batch = 0
        dropped = self.schedule.observe(self.epoch, val["top1_error"])
        improved = improves(self.best, val)
        if improved:
            self.best = {"epoch": self.epoch, "step": self.step,
                         "val_top1_error": float(val["top1_error"]),
                         "val_top5_error": float(val["top5_error"])}
        row = {"epoch": self.epoch, "step": self.step, "lr": lr_used,
               "train_loss": m["loss"].avg,
               "train_top1_error": 1 - m["top1"].avg if m["top1"].count else None,
               "train_top5_error": 1 - m["top5"].avg if m["top5"].count else None,
               "val_loss": val["loss"], "val_top1_error": val["top1_error"],
               "val_top5_error": val["top5_error"],
               "val_class_top1_error": _by_class_name(self.ds, val),
               "best_epoch": self.best["epoch"] if self.best else None,
               "best_val_top1_error": self.best["val_top1_error"] if self.best else None,
               "images_per_sec": self.images_per_sec, "time": time.time()}
        if self.data_parallel is not None:
            row.update(self.data_parallel.epoch_metrics())
        if self.is_root:
            append_metrics(self.run_dir, row)
        if self.tensorboard is not None:
            self.tensorboard.epoch(row, self.net.parameters(), self.graph)
        top5 = self.graph.classes > 5      # with 5 classes or fewer top-5 is always right
        self.echo(f"epoch {self.epoch}/{r.epochs}  step {self.step}  lr {lr_used:.3g}  "
                  f"train loss {row['train_loss']:.4f} error top-1 "
                  f"{_pct(row['train_top1_error'])}"
                  + (f" top-5 {_pct(row['train_top5_error'])}" if top5 else "")
                  + f"  val error top-1 {_pct(row['val_top1_error'])}"
                  + (f" top-5 {_pct(row['val_top5_error'])}" if top5 else "")
                  + f"  {row['images_per_sec']:.0f} img/s"
                  + (f"  -> lr {self.schedule.lr:.3g}" if dropped else ""))
        self.save(best=improved)
        if self.is_root and self.config.figures:
            self._write_figures()
        return row

    def _write_figures(self) -> None:
        """curves.png and filters.png into the run (figures.py); a figure that can't be
        drawn is a line, not the end of the run."""
        from ..viz.errors import VizError
        from ..viz.run import read_metrics
        from .figures import write_figures
        try:
            write_figures(self.run_dir, self.graph, self.net.parameters(),
                          read_metrics(self.run_dir / "metrics.jsonl"))
        except (VizError, OSError) as e:
            self.echo(f"warning: no figures this epoch: {e}")

    def _summary(self, last) -> str:
        """The run's last line: the last epoch's validation error and the best epoch's (the
        figure to quote with its epoch; the error swings from epoch to epoch)."""
        if last is None and self.epoch >= self.recipe.epochs:
            return (f"{self.run_dir} is finished: {_count(self.epoch, 'epoch')}, "
                    f"{_count(self.step, 'step')}; nothing to train")
        if last is None:
            return f"stopped at step {self.step}; checkpoint in {self.run_dir}"
        top5 = (f", top-5 {_pct(last['val_top5_error'])}" if self.graph.classes > 5 else "")
        return (f"done: {_count(self.step, 'step')}, {_count(self.epoch, 'epoch')}; last val "
                f"top-1 error {_pct(last['val_top1_error'])}{top5}; "
                f"{best_summary(self.best, self.run_dir, self.graph.classes > 5)}"
                f"run in {self.run_dir}")


def _by_class_name(ds, val: dict) -> dict:
    """{human class name: val top-1 error} for the classes with val images."""
    from ..data.layouts import display_names
    names = display_names(ds.classes, ds.class_names)
    return {name: err for name, err in zip(names, val.get("class_top1_error", ()))
            if err is not None}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


class _progress:
    """A tqdm bar with ETA and images/s on a terminal; elsewhere (a log file, CI) a
    ProgressMeter-style line every `print_freq` batches; nothing when progress is off."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool,
                 print_freq: int = 10, echo=print):
        self.bar = None
        self.total, self.done, self.desc = total, initial, desc
        self.print_freq, self.echo = print_freq if enabled else 0, echo
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="batch",
                            leave=False, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int, **stats) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{stats['loss']:.3f}", img_s=f"{stats['rate']:.0f}",
                                 refresh=False)
            self.bar.update(n)
        elif self.print_freq and (self.done % self.print_freq == 0 or self.done == self.total):
            self.echo(f"{self.desc} [{self.done:>{len(str(self.total))}}/{self.total}]  "
                      f"loss {stats['loss']:.4f}  {stats['rate']:.0f} img/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def train(opts: TrainOptions, echo=print) -> dict:
    replicas = data_parallel.current()
    if replicas is not None:       # one of K data-parallel replicas under mpirun
        return data_parallel.train_replica(replicas, lambda: Trainer(opts, echo),
                                         lambda m: print(m, file=sys.stderr))
    return Trainer(opts, echo).run()
