"""A saved run's weights and state, as export, predict, ensembles and --init-from read them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import RunError
from .checkpoint import KEPT, STATE, STATE_KEY, WEIGHTS, load_weights, resolve_checkpoint
from .run_schema import check_state


def read_run(path) -> tuple[dict[str, np.ndarray], dict]:
    """(weights, state) of a run directory or one of its .safetensors files (see run_state).
    `RUN/checkpoint-best` names the run's best checkpoint. A RunError for a path that is
    neither."""
    path = resolve_checkpoint(path)
    if not path.exists():
        raise RunError(f"{path}: no such run directory or checkpoint")
    params = load_weights(path)
    return params, run_state(path)


def run_state(path) -> dict:
    """The run state of a run directory or a .safetensors file, {} if it has none.

    A directory: its state.json, else the copy in its checkpoint's metadata. A .safetensors
    file: the copy in its own metadata (the state of that very step; every checkpoint and
    kept checkpoint-step<N>.safetensors carries one), else the state.json beside it when the
    file is that run's checkpoint or one it kept. A RunError if the state can't be read or
    doesn't fit run_schema.STATE (naming the file and the field)."""
    path = Path(path)
    if path.is_dir() and (path / STATE).exists():
        return _state_json(path / STATE)
    from safetensors import SafetensorError, safe_open
    wpath = path / WEIGHTS if path.is_dir() else path
    try:
        with safe_open(str(wpath), framework="numpy") as f:
            text = (f.metadata() or {}).get(STATE_KEY)
    except (OSError, SafetensorError) as e:
        raise RunError(f"{wpath}: the checkpoint can't be read: {e}") from None
    if text:
        try:
            state = json.loads(text)
        except ValueError as e:
            raise RunError(f"{wpath}: the run state can't be read: {e}") from None
        return check_state(state, f"{wpath} (the run state in its metadata)")
    beside = wpath.parent / STATE
    if wpath.is_file() and (wpath.name == WEIGHTS or KEPT.fullmatch(wpath.name)) \
            and beside.exists():
        return _state_json(beside)
    return {}


def _state_json(p: Path) -> dict:
    try:
        state = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{p.parent}: the run state can't be read: {e}") from None
    return check_state(state, p)


def build_with_weights(graph, backend: str, devices, params: dict, checkpoint):
    """A net of `graph` on `backend` (on `devices` if given) holding a checkpoint's weights;
    RunError naming `checkpoint` when they don't fit the spec."""
    from ..runtime import build
    net = build(graph, backend, **({"devices": list(devices)} if devices else {}))
    try:
        net.load_parameters(params)
    except ValueError as e:
        raise RunError(f"{checkpoint}: the checkpoint does not match {graph.name}'s spec: "
                       f"{e}") from None
    return net
