"""Checkpoints: weights and momentum in safetensors, the rest of the run's state in JSON.

Both are written atomically — a temp file in the same directory, fsync, rename, then fsync of
the directory — so a crash or a kill during a write leaves the previous checkpoint whole.
The weights use exactly the names and layouts of `Net.parameters()`; the momentum is stored
under a `momentum.` prefix.

The safetensors file also carries the state in its metadata (key "netspec.state"), so the
weights and the state they belong to are replaced by one rename: a kill between writing the
two files can't pair weights of one step with the state of another. `state.json` is the same
state for people and tools to read.

Keeping several (`--keep K`): before the new checkpoint is renamed into place, the current one
gets a second name, `checkpoint-step<STEP>.safetensors` (a hard link, so no copy); the oldest
of those are unlinked only after the new checkpoint and the directory are fsynced. A write that
fails (a full disk, a read-only run directory) is a RunError and leaves the previous checkpoint
as it was.

The best checkpoint (`checkpoint-best.safetensors`, what Caffe and PyTorch's ImageNet example
users quote): when an epoch's validation top-1 error is lower than every earlier epoch's, the
checkpoint just written at that epoch's end gets this second name too, the same way (a hard
link under a temporary name, renamed into place). It is never pruned by `--keep`, and
`RUN/checkpoint-best` names it wherever a checkpoint is read (`resolve_checkpoint`).
"""
from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file

from ..atomic import atomic_open, atomic_write, fsync_dir, write_buffers
from ..errors import RunError
from .run_schema import check_state

WEIGHTS = "checkpoint.safetensors"
STATE = "state.json"
MOMENTUM = "momentum."
STATE_KEY = "netspec.state"
KEPT = re.compile(r"checkpoint-step(\d+)\.safetensors")
BEST = "checkpoint-best.safetensors"


_DTYPES = {"float32": "F32", "float64": "F64", "float16": "F16", "int64": "I64",
           "int32": "I32", "uint8": "U8"}


def safetensors_parts(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> list:
    """The safetensors file of `tensors` as a list of buffers to write one after the other:
    the 8-byte little-endian header length, the JSON header (padded with spaces to a multiple
    of 8, as the library does), then each array's own memory, so nothing is copied. The
    format is huggingface/safetensors'; its reader (load_checkpoint) reads the file back."""
    header, offset, arrays = {"__metadata__": metadata}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        header[name] = {"dtype": _DTYPES[a.dtype.name], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return [len(text).to_bytes(8, "little"), text,
            *(memoryview(a.reshape(-1)).cast("B") for a in arrays if a.nbytes)]


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def save_checkpoint(run_dir: Path, params: dict[str, np.ndarray],
                    momentum: dict[str, np.ndarray], state: dict, keep: int = 1,
                    best: bool = False) -> None:
    """Write the weights+momentum (with the state in their metadata), then `state.json`.

    keep: checkpoints kept in all, the new one included (older ones stay as
    `checkpoint-step<STEP>.safetensors`). best: the new checkpoint is also the run's best
    (`checkpoint-best.safetensors`, see mark_best). Raises RunError if the run directory
    can't be written (ENOSPC, EROFS, EACCES...); the previous checkpoint is then left whole."""
    run_dir = Path(run_dir)
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    tensors.update({MOMENTUM + k: np.ascontiguousarray(v) for k, v in momentum.items()})
    text = json.dumps(state)
    meta = {"step": str(state["step"]), "epoch": str(state["epoch"]), STATE_KEY: text}
    data = safetensors_parts(tensors, meta)
    wpath = run_dir / WEIGHTS
    try:
        with atomic_open(wpath) as f:
            write_buffers(f.fileno(), data)
            if keep > 1:        # the current checkpoint's second name, before it is replaced
                _keep_current(run_dir, state["step"])
        atomic_write(run_dir / STATE, json.dumps(state, indent=1).encode())
        if best:
            mark_best(run_dir)
        prune_checkpoints(run_dir, keep)
    except OSError as e:
        raise RunError(_write_error(run_dir, e, sum(len(p) for p in data))) from None


def _write_error(run_dir: Path, e: OSError, size: int) -> str:
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EROFS: "the file system is read-only",
           errno.EACCES: "permission denied"}.get(e.errno, e.strerror or str(e))
    prev = ""
    if (run_dir / WEIGHTS).exists():
        try:
            prev = f" (step {checkpoint_step(run_dir / WEIGHTS)})"
        except (OSError, ValueError, KeyError, SafetensorError):
            pass
    return (f"can't write a checkpoint of {size / 1e6:.0f} MB to {run_dir}: {why}; the previous "
            f"checkpoint{prev} is intact. Free some space or choose a writable --out, then "
            f"--resume {run_dir}")


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint file belongs to, from its header alone."""
    with safe_open(str(path), framework="numpy") as f:
        return int((f.metadata() or {})["step"])


def _keep_current(run_dir: Path, new_step: int) -> None:
    """Give the current checkpoint a second name, checkpoint-step<STEP>.safetensors, unless
    the new one is of the same step."""
    current = run_dir / WEIGHTS
    if not current.exists():
        return
    try:
        step = checkpoint_step(current)
    except (ValueError, KeyError, SafetensorError):
        return                       # not a readable checkpoint: nothing worth keeping
    if step == new_step:
        return
    _second_name(current, run_dir / f"checkpoint-step{step:09d}.safetensors")


def _second_name(current: Path, name: Path) -> None:
    """`name` becomes another name of the file `current` (a hard link; a copy where the file
    system has none), atomically: linked under a temporary name, then renamed over `name`."""
    tmp = name.parent / f".{name.name}.link.tmp"
    _unlink(tmp)
    try:
        os.link(current, tmp)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
            raise
        atomic_write(tmp, current.read_bytes())          # no hard links here: a copy
    os.replace(tmp, name)
    _unlink(tmp)    # rename(2) between two links of one file does nothing, leaving tmp


def mark_best(run_dir: Path) -> None:
    """Name the run's current checkpoint `checkpoint-best.safetensors` too (see the module's
    docstring); the previous best is replaced in one rename, then the directory is fsynced.
    OSError as the other writes here (save_checkpoint turns it into a RunError)."""
    run_dir = Path(run_dir)
    _second_name(run_dir / WEIGHTS, run_dir / BEST)
    fsync_dir(run_dir)


def repair_best(run_dir: Path, best_step: int) -> None:
    """After a kill between a best checkpoint's write and its second name: when the run state
    says its best is the checkpoint at `best_step`, the current checkpoint is of that step and
    `checkpoint-best.safetensors` is missing or of another step, name the current one best."""
    run_dir = Path(run_dir)
    try:
        if checkpoint_step(run_dir / WEIGHTS) != best_step:
            return
    except (OSError, ValueError, KeyError, SafetensorError):
        return                    # loading the checkpoint reports it
    try:
        if checkpoint_step(run_dir / BEST) == best_step:
            return
    except (OSError, ValueError, KeyError, SafetensorError):
        pass                      # missing or unreadable: named again below
    try:
        mark_best(run_dir)
    except OSError as e:
        raise RunError(f"can't name the best checkpoint {run_dir / BEST}: "
                       f"{e.strerror or e}") from None


def resolve_checkpoint(path) -> Path:
    """A checkpoint path as the user gave it: `RUN/checkpoint-best` (or any `RUN/NAME` of a
    `NAME.safetensors` file) names that file; anything else is returned unchanged."""
    path = Path(path)
    if not path.exists() and not path.suffix:
        file = path.with_name(path.name + ".safetensors")
        if file.is_file():
            return file
    return path


def kept_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The older kept checkpoints of a run, (step, path), oldest first."""
    found = []
    for p in Path(run_dir).iterdir():
        m = KEPT.fullmatch(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Unlink the oldest kept checkpoints so that `keep` remain, the current one included."""
    old = kept_checkpoints(run_dir)
    extra = old[:max(0, len(old) - (keep - 1))]
    for _, p in extra:
        _unlink(p)
    if extra:
        fsync_dir(run_dir)


def load_checkpoint(run_dir: Path) -> tuple[dict, dict, dict]:
    """(params, momentum, state) from a run directory; a RunError if it can't be used."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    wpath = run_dir / WEIGHTS
    if not wpath.exists():
        raise RunError(f"{run_dir}: no checkpoint here (expected {WEIGHTS})")
    try:
        with safe_open(str(wpath), framework="numpy") as f:
            meta = f.metadata() or {}
        state = json.loads(meta[STATE_KEY])
        tensors = load_file(str(wpath))
        check_state(state, f"{wpath} (the run state in its metadata)")
    except KeyError:
        raise RunError(f"{run_dir}: {WEIGHTS} holds no netspec run state") from None
    except (OSError, ValueError, SafetensorError) as e:
        raise RunError(f"{run_dir}: the checkpoint can't be read: {e}") from None
    params = {k: v for k, v in tensors.items() if not k.startswith(MOMENTUM)}
    momentum = {k[len(MOMENTUM):]: v for k, v in tensors.items() if k.startswith(MOMENTUM)}
    return params, momentum, state


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """The weights alone, from a run directory or a .safetensors file (or `RUN/checkpoint-best`,
    see resolve_checkpoint)."""
    path = resolve_checkpoint(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.exists():
        raise RunError(f"{path}: no such checkpoint")
    try:
        tensors = load_file(str(path))
    except (OSError, ValueError, SafetensorError) as e:
        raise RunError(f"{path}: the checkpoint can't be read: {e}") from None
    return {k: v for k, v in tensors.items() if not k.startswith(MOMENTUM)}
