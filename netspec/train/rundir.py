"""A run directory's lifecycle: launched, checkpointed, resumed, and tidied after a kill or a
start-up error.

A run directory is resumable from the moment it exists. `launch.json` (the spec text, data,
seed, overrides and flags) is written atomically before anything slow starts (generating the
demo set, scanning a folder, compiling kernels) and the step-0 checkpoint follows as soon as
the network is built; launch.json is removed then, as the checkpoint's state holds the same.
`--resume` of a run killed before its first checkpoint starts it again from the launch record;
as initialisation is drawn from the seed, the result is the same run. A new run that fails
before its first step is removed again (`discard_launch`, `discard_new_run`), so the corrected
command can use the same --out.

Divergence: a checkpoint is written only if every parameter and momentum value is finite, so
the one kept after a NaN or infinite loss is the last good state (Caffe and PyTorch leave this
to the user; here it is checked on every write).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import RunError
from .checkpoint import BEST, STATE, WEIGHTS, load_checkpoint
from .run_schema import LAUNCH as LAUNCH_RECORD
from .run_schema import check_metrics_row, check_state

LAUNCH = "launch.json"
METRICS = "metrics.jsonl"


def write_launch(run_dir: Path, record: dict, created: bool | None = None) -> tuple[Path, bool]:
    """Create the run directory and record how the run was started (atomically).
    Returns (run_dir, whether the directory was created), for discard_launch. created: the
    caller made the directory (for its lock) and says whether it was new."""
    run_dir = Path(run_dir)
    created = not run_dir.exists() if created is None else created
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / LAUNCH, json.dumps(record, indent=1).encode())
    except OSError as e:
        raise RunError(f"can't create the run directory {run_dir}: {e.strerror or e}") from None
    return run_dir, created


def discard_launch(launched: tuple[Path, bool] | None) -> None:
    """Undo write_launch after a start-up error (bad data, a bad --init-from...): the same
    command, corrected, can then use the same --out."""
    if launched is None:
        return
    run_dir, created = launched
    try:
        (run_dir / LAUNCH).unlink(missing_ok=True)
        if created:
            run_dir.rmdir()
    except OSError:
        pass


def entries(run_dir: Path) -> frozenset[str]:
    """The names in a directory (none where it doesn't exist): what discard_new_run keeps."""
    run_dir = Path(run_dir)
    return frozenset(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else frozenset()


def discard_new_run(run_dir: Path, created: bool, before: frozenset[str]) -> None:
    """Undo a new run that failed before its first training step (a batch larger than the
    training set, a kernel the device rejects...): remove what the run wrote (the step-0
    checkpoint, state, logs), and the directory if the run created it, so that the corrected
    command can use the same --out. Names that were there before the run are kept."""
    import shutil
    run_dir = Path(run_dir)
    try:
        if created:
            shutil.rmtree(run_dir)
            return
        for name in entries(run_dir) - before:
            p = run_dir / name
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    except OSError:
        pass


def holds_checkpoint(run_dir: Path) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / WEIGHTS).exists() or (run_dir / STATE).exists()


def open_run(run_dir: Path, tidy: bool = True) -> tuple[dict | None, dict | None, dict]:
    """(params, momentum, state) of the run's checkpoint; (None, None, launch record) when it
    was killed before its first checkpoint. RunError if neither is there. tidy: remove the
    temporary files of writes a kill interrupted (the writing process only: rank 0 of MPI)."""
    run_dir = Path(run_dir)
    if tidy and run_dir.is_dir():
        for tmp in run_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    if run_dir.is_dir() and not (run_dir / WEIGHTS).exists() and (run_dir / LAUNCH).exists():
        try:
            record = json.loads((run_dir / LAUNCH).read_text())
        except (OSError, ValueError) as e:
            raise RunError(f"{run_dir}: {LAUNCH} can't be read: {e}") from None
        return None, None, check_state(record, run_dir / LAUNCH, LAUNCH_RECORD)
    return load_checkpoint(run_dir)


def trim_metrics(run_dir: Path, epoch: int) -> None:
    """Drop metrics rows of epochs after `epoch` (the checkpoint's) and a half-written last
    line: what a run killed after logging an epoch but before its checkpoint left behind.
    The resumed run writes those rows again, identically. A RunError naming the line and the
    field for a complete row that doesn't fit run_schema.METRICS_ROW."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for n, line in enumerate(lines, 1):
        if not line.endswith("\n") or not line.strip():
            continue                   # the half-written last row of a killed run; blank
        try:
            row = json.loads(line)
        except ValueError as e:
            raise RunError(f"{path}:{n}: not a JSON object ({e}); fix or remove that "
                           f"line") from None
        if check_metrics_row(row, f"{path}:{n}")["epoch"] <= epoch:
            kept.append(line)
    if kept != lines:
        atomic_write(path, "".join(kept).encode())


def append_metrics(run_dir: Path, row: dict) -> None:
    """Add one row to metrics.jsonl, atomically: the file is rewritten whole (one row per
    epoch: small), so a kill mid-write never leaves a half row."""
    path = Path(run_dir) / METRICS
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = b""
    atomic_write(path, [old, (json.dumps(row) + "\n").encode()])


def describe_data_change(before: dict, after: dict) -> str:
    """What changed between two data fingerprints (Dataset.fingerprint), split by split:
    'train: 40 files then, 50 now; val: same count, files changed'."""
    parts = []
    for split in sorted(set(before) | set(after)):
        old, new = before.get(split), after.get(split)
        if old == new:
            continue
        if old is None:
            parts.append(f"{split}: new, {new['files']} files")
        elif new is None:
            parts.append(f"{split}: gone (had {old['files']} files)")
        elif old["files"] != new["files"]:
            parts.append(f"{split}: {old['files']} files then, {new['files']} now")
        else:
            parts.append(f"{split}: same count ({new['files']}), but files renamed, resized "
                         f"or rewritten")
    return "; ".join(parts)


def nonfinite(tensors: dict[str, np.ndarray]) -> list[str]:
    """Names of the tensors holding a NaN or an infinity."""
    return [k for k, v in tensors.items() if not np.isfinite(v).all()]


def divergence_message(what: str, step: int, epoch: int, lr: float, run_dir: Path,
                       kept_step: int | None) -> str:
    """Which step diverged, which checkpoint is kept, and what to try."""
    kept = (f"The last good checkpoint, step {kept_step}, is kept in {run_dir}"
            if kept_step is not None else "No checkpoint of this run was good")
    lower = f"{lr / 10:.3g}"
    return (f"{what} at step {step} (epoch {epoch}); stopping. {kept}. Try a lower --lr, "
            f"e.g. --lr {lower}: start again with it, or continue from the kept checkpoint "
            f"with --resume {run_dir} --lr {lower}.")


def check_schedule_data(recipe, has_val: bool, spec_name: str) -> None:
    """`schedule plateau` needs a validation error each epoch: without val/ it is an error."""
    if recipe.schedule == "plateau" and not has_val:
        raise RunError(
            f"{spec_name}: 'schedule plateau' lowers the learning rate when the validation error "
            f"stops improving, but the data has no validation images (no val/ folder). Use "
            f"'schedule at EPOCHS factor F' (or 'schedule none') in the spec, or add val/.")


def finite(x) -> bool:
    return x is not None and math.isfinite(x)


_BEST_KEYS = {"epoch": int, "step": int, "val_top1_error": float, "val_top5_error": float}


def best_from_state(state: dict, run_dir: Path) -> dict | None:
    """The run's best epoch so far from a checkpoint's state: {"epoch", "step",
    "val_top1_error", "val_top5_error"} (errors as fractions), None before the first
    validation or in a run from before `checkpoint-best` was kept. A RunError naming the field
    when the state's "best" is not of that form."""
    best = state.get("best")
    if best is None:
        return None
    if not isinstance(best, dict):
        raise RunError(f"{run_dir}: the run state's field 'best' is not an object")
    for key, kind in _BEST_KEYS.items():
        value = best.get(key)
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and (kind is float or float(value).is_integer()))
        if not ok:
            raise RunError(f"{run_dir}: the run state's field 'best.{key}' is missing or not "
                           f"a number")
    return {k: kind(best[k]) for k, kind in _BEST_KEYS.items()}


def improves(best: dict | None, val: dict) -> bool:
    """Whether an epoch's validation figures (evaluate's, fractions) beat the best so far: a
    finite top-1 error strictly lower (a tie keeps the earlier epoch, as PyTorch's ImageNet
    example's `acc1 > best_acc1` does)."""
    err = val.get("top1_error")
    return finite(err) and (best is None or err < best["val_top1_error"])


def best_summary(best: dict | None, run_dir: Path, top5: bool = True) -> str:
    """The summary's clause on the best epoch and where its checkpoint is (its top-5 error
    only where there are more than 5 classes)."""
    if best is None:
        return ""
    t5 = f"top-5 {100 * best['val_top5_error']:.1f}%, " if top5 else ""
    return (f"best val top-1 error {100 * best['val_top1_error']:.1f}% at epoch "
            f"{best['epoch']} ({t5}{Path(run_dir) / BEST}); ")
