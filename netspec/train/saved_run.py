"""A saved run's weights and state, as export, predict, ensembles and --init-from read them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import RunError
from .checkpoint import STATE, STATE_KEY, WEIGHTS, load_weights


def read_run(path) -> tuple[dict[str, np.ndarray], dict]:
    """(weights, state) of a run directory or its .safetensors file. The state is the run's
    state.json (or, for a bare .safetensors file, the copy in its metadata); {} if neither
    exists. A RunError for a path that is neither."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no such run directory or checkpoint")
    params = load_weights(path)
    state: dict = {}
    if path.is_dir() and (path / STATE).exists():
        try:
            state = json.loads((path / STATE).read_text())
        except (OSError, ValueError) as e:
            raise RunError(f"{path}: the run state can't be read: {e}") from None
    else:
        from safetensors import safe_open
        wpath = path / WEIGHTS if path.is_dir() else path
        with safe_open(str(wpath), framework="numpy") as f:
            text = (f.metadata() or {}).get(STATE_KEY)
        if text:
            state = json.loads(text)
    return params, state
