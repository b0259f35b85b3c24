"""Checkpoints: weights and momentum in safetensors, the rest of the run's state in JSON.

Both are written atomically — a temp file in the same directory, fsync, rename, then fsync of
the directory — so a crash or a kill during a write leaves the previous checkpoint whole.
The weights use exactly the names and layouts of `Net.parameters()`; the momentum is stored
under a `momentum.` prefix.

The safetensors file also carries the state in its metadata (key "netspec.state"), so the
weights and the state they belong to are replaced by one rename: a kill between writing the
two files can't pair weights of one step with the state of another. `state.json` is the same
state for people and tools to read.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save

from ..errors import RunError

WEIGHTS = "checkpoint.safetensors"
STATE = "state.json"
MOMENTUM = "momentum."
STATE_KEY = "netspec.state"


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
    text = json.dumps(state)
    meta = {"step": str(state["step"]), "epoch": str(state["epoch"]), STATE_KEY: text}
    atomic_write(Path(run_dir) / WEIGHTS, save(tensors, metadata=meta))
    atomic_write(Path(run_dir) / STATE, json.dumps(state, indent=1).encode())


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
    except KeyError:
        raise RunError(f"{run_dir}: {WEIGHTS} holds no netspec run state") from None
    except (OSError, ValueError, SafetensorError) as e:
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
    except (OSError, ValueError, SafetensorError) as e:
        raise RunError(f"{path}: the checkpoint can't be read: {e}") from None
    return {k: v for k, v in tensors.items() if not k.startswith(MOMENTUM)}
