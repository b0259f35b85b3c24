"""A run's configuration, resolved once: the flags of `netspec train`, the spec's recipe and a
resumed run's record merged into one frozen `RunConfig` before anything is opened or built.

Precedence, value by value: a flag given on the command line, then (on --resume) what the run
recorded when it started, then the spec's recipe, then the default. A resumed run keeps its
spec text, data, seed and recipe overrides; --backend, --workers, --lr, --checkpoint-every and
--keep may change on resume (--lr also replaces the schedule's current rate).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..dsl.spec import Recipe
from ..errors import RunError
from ..ir.graph import Graph
from .checkpoint import WEIGHTS
from .run_schema import RESUME_STATE, check_state
from .rundir import holds_checkpoint, open_run

RECIPE_FLAGS = ("epochs", "batch_size", "lr")     # the recipe values a flag may override


@dataclass
class TrainOptions:
    """Flags of `netspec train`. None means: the spec's recipe (or the resumed run's)."""

    spec: str | None = None
    data: str | None = None
    backend: str = "auto"
    devices: tuple[int, ...] | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    max_steps: int | None = None
    seed: int = 0
    workers: int = 0
    out: str | None = None
    resume: str | None = None
    init_from: str | None = None     # fine-tuning: start from this run's weights (init_from.py)
    print_freq: int = 10
    progress: bool = True
    figures: bool = True         # curves.png, filters.png at each evaluation (figures.py)
    dtype: str = "float32"       # float64 for gradient-exact comparisons in tests
    checkpoint_every: int | None = None   # steps; None: the spec's `checkpoint every` (or epochs)
    keep: int | None = None              # checkpoints kept; None: the spec's (default 1)
    allow_data_change: bool = False      # --resume although the data changed (recorded)
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Resumed:
    """The checkpoint a run resumes from: its tensors by name and the state saved with them."""

    params: dict[str, np.ndarray]
    momentum: dict[str, np.ndarray]
    state: dict


@dataclass(frozen=True)
class RunConfig:
    """Everything a run is started with, flags, recipe and resumed record merged."""

    graph: Graph
    recipe: Recipe              # the spec's, with `overrides` applied
    overrides: dict             # recipe values set by flags (kept by the run across resumes)
    data: str                   # the data set: a folder, an archive or 'demo'
    backend: str                # as requested; build() resolves 'auto'
    seed: int
    workers: int
    every: int | None           # steps between checkpoints; None: at each epoch's end only
    keep: int                   # checkpoints kept
    init_from: str | None       # a run whose weights start this one (never with `resumed`)
    run_dir: Path
    new: bool                   # a new run (not --resume): its directory gets a launch record
    resumed: Resumed | None     # the checkpoint to restore; None for a new run or a run killed
    #                             before its first checkpoint (started again from its record)
    resume_lr: float | None     # --lr given with --resume: the schedule continues at this rate
    devices: tuple[int, ...] | None
    dtype: np.dtype
    max_steps: int | None       # a total over the whole run, resumed steps included
    print_freq: int
    progress: bool
    figures: bool = True

    @property
    def spec_text(self) -> str:
        return self.graph.spec.source

    def launch_record(self) -> dict:
        """What launch.json holds: enough to start the same run again (rundir.py)."""
        return {"spec_text": self.spec_text, "overrides": self.overrides,
                "data": str(self.data), "backend_requested": self.backend, "seed": self.seed,
                "workers": self.workers, "checkpoint_every": self.every, "keep": self.keep,
                "init_from": self.init_from}


@dataclass(frozen=True)
class _Start:
    """What the flags (a new run) or the run's record (--resume) say, before the spec is read."""

    spec: str
    overrides: dict
    data: str
    backend: str
    seed: int
    workers: int
    every: int | None
    keep: int | None
    init_from: str | None
    resumed: Resumed | None = None
    resume_lr: float | None = None


def resolve_run(opts: TrainOptions, tidy: bool = True) -> RunConfig:
    """The run `opts` describes. Reads the resumed run's checkpoint or launch record (`tidy`:
    remove its interrupted writes, which only the writing process may do) and the spec; opens
    nothing else. RunError for missing flags, an unreadable run, or --out holding a run."""
    from ..ir.build import build_graph

    start = _resumed_start(opts, tidy) if opts.resume else _new_start(opts)
    graph = build_graph(start.spec)
    every = next((v for v in (opts.checkpoint_every, start.every,
                              graph.recipe.checkpoint_every) if v), None)
    keep = next((v for v in (opts.keep, start.keep, graph.recipe.keep) if v), 1)
    run_dir = Path(opts.resume) if opts.resume else _new_run_dir(opts.out, graph.name)
    recipe = replace(graph.recipe, **{k: v for k, v in start.overrides.items()
                                      if k in RECIPE_FLAGS})
    return RunConfig(
        graph=graph, recipe=recipe, overrides=start.overrides, data=start.data,
        backend=start.backend, seed=start.seed, workers=start.workers, every=every, keep=keep,
        init_from=start.init_from, run_dir=run_dir, new=not opts.resume,
        resumed=start.resumed, resume_lr=start.resume_lr, devices=opts.devices,
        dtype=np.dtype(opts.dtype), max_steps=opts.max_steps, print_freq=opts.print_freq,
        progress=opts.progress, figures=opts.figures)


def _new_start(opts: TrainOptions) -> _Start:
    if not opts.spec or not opts.data:
        raise RunError("train needs --spec and --data (or --resume RUN)")
    overrides = {k: v for k, v in (("epochs", opts.epochs), ("batch_size", opts.batch_size),
                                   ("lr", opts.lr)) if v is not None}
    return _Start(spec=opts.spec, overrides=overrides, data=opts.data, backend=opts.backend,
                  seed=opts.seed, workers=opts.workers, every=None, keep=None,
                  init_from=opts.init_from)


def _resumed_start(opts: TrainOptions, tidy: bool) -> _Start:
    params, momentum, state = open_run(Path(opts.resume), tidy=tidy)
    if params is not None:        # the launch record (killed early) was checked by open_run
        check_state(state, Path(opts.resume) / WEIGHTS, RESUME_STATE)
    overrides = dict(state.get("overrides", {}))
    if opts.lr is not None:    # e.g. a lower rate after a divergence
        overrides["lr"] = opts.lr
    killed_early = params is None      # state is the launch record
    return _Start(
        spec=state["spec_text"], overrides=overrides, data=state["data"],
        backend=state.get("backend_requested", "auto") if opts.backend == "auto"
        else opts.backend,
        seed=state["seed"],
        workers=state.get("workers", 0) if opts.workers == 0 else opts.workers,
        every=state.get("checkpoint_every"), keep=state.get("keep"),
        init_from=state.get("init_from") if killed_early else None,
        resumed=None if killed_early else Resumed(params, momentum, state),
        resume_lr=opts.lr)


def _new_run_dir(out: str | None, network: str) -> Path:
    run_dir = Path(out or f"runs/{network}-{time.strftime('%Y%m%d-%H%M%S')}")
    if holds_checkpoint(run_dir):
        raise RunError(f"{run_dir} already holds a run; use --resume {run_dir} or another "
                       f"--out")
    return run_dir
