"""Checkpoints: weights and momentum in safetensors, the rest of the run's state in JSON.

Both are written atomically — a temp file in the same directory, fsync, rename, then fsync of
the directory — so a crash or a kill during a write leaves the previous checkpoint whole.
The weights use exactly the names and layouts of `Net.parameters()`; the momentum is stored
under a `momentum.` prefix.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from ..errors import RunError

WEIGHTS = "checkpoint.safetensors"
STATE = "state.json"
MOMENTUM = "momentum."


def atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save_checkpoint(run_dir: Path, params: dict[str, np.ndarray],
                    momentum: dict[str, np.ndarray], state: dict) -> None:
    """Write the weights+momentum, then the state that refers to them.

    The state names the step its weights belong to; `load_checkpoint` checks they agree, so a
    kill between the two renames is detected rather than silently mixing steps."""
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    tensors.update({MOMENTUM + k: np.ascontiguousarray(v) for k, v in momentum.items()})
    meta = {"step": str(state["step"]), "epoch": str(state["epoch"])}
    atomic_write(Path(run_dir) / WEIGHTS, save(tensors, metadata=meta))
    atomic_write(Path(run_dir) / STATE, json.dumps(state, indent=1).encode())


def load_checkpoint(run_dir: Path) -> tuple[dict, dict, dict]:
    """(params, momentum, state) from a run directory; a RunError if it can't be used."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    wpath, spath = run_dir / WEIGHTS, run_dir / STATE
    if not wpath.exists() or not spath.exists():
        raise RunError(f"{run_dir}: no checkpoint here (expected {WEIGHTS} and {STATE})")
    try:
        state = json.loads(spath.read_text())
        tensors = load_file(str(wpath))
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise RunError(f"{run_dir}: the checkpoint can't be read: {e}") from None
    params = {k: v for k, v in tensors.items() if not k.startswith(MOMENTUM)}
    momentum = {k[len(MOMENTUM):]: v for k, v in tensors.items() if k.startswith(MOMENTUM)}
    return params, momentum, state


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """The weights alone, from a run directory or a .safetensors file."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.exists():
        raise RunError(f"{path}: no such checkpoint")
    try:
        tensors = load_file(str(path))
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: the checkpoint can't be read: {e}") from None
    return {k: v for k, v in tensors.items() if not k.startswith(MOMENTUM)}
