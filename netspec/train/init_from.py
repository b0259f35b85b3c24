"""Fine-tuning: start a new run from another run's weights (`netspec train --init-from RUN`).

As the paper pre-trained on the Fall 2011 release and fine-tuned on ILSVRC-2012 with an extra
convolutional layer (§6), and as Caffe's `--weights` and PyTorch's `load_state_dict(...,
strict=False)` do: every parameter whose name and shape match is copied; a parameter that is
new (a sixth conv layer) or reshaped (fc8 for another class count) keeps the spec's
initialisation; a source parameter the network doesn't have is ignored. The rest is a new run:
momentum starts at zero, the step count at 0, the schedule at the recipe's learning rate
(unlike `--resume`, which continues the same run). `lr_mult 0` on a layer freezes it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .saved_run import read_run


@dataclass
class InitFrom:
    """What `merge_parameters` did: (name, shape, note) rows in network / source order."""

    source: str
    copied: list[tuple[str, tuple, str]] = field(default_factory=list)
    fresh: list[tuple[str, tuple, str]] = field(default_factory=list)
    ignored: list[tuple[str, tuple, str]] = field(default_factory=list)

    def table(self) -> str:
        """The start-up table: one line per parameter, copied / initialised anew / ignored."""
        rows = [(n, s, "copied", note) for n, s, note in self.copied]
        rows += [(n, s, "initialised anew", note) for n, s, note in self.fresh]
        rows += [(n, s, "ignored", note) for n, s, note in self.ignored]
        shape = {n: str(tuple(s)) for n, s, _, _ in rows}
        wn = max([len("parameter"), *map(len, shape)])
        ws = max([len("shape"), *map(len, shape.values())])
        wa = max(len(a) for *_, a, _ in rows) if rows else 6
        lines = [f"init from {self.source}: {len(self.copied)} copied, {len(self.fresh)} "
                 f"initialised anew, {len(self.ignored)} ignored",
                 f"  {'parameter':<{wn}}  {'shape':<{ws}}  what"]
        for n, _, what, note in rows:
            lines.append(f"  {n:<{wn}}  {shape[n]:<{ws}}  {what:<{wa}}"
                         + (f"  {note}" if note else ""))
        return "\n".join(line.rstrip() for line in lines)


def merge_parameters(initial: Mapping[str, np.ndarray], source: Mapping[str, np.ndarray],
                     source_name: str = "the source") -> tuple[dict[str, np.ndarray], InitFrom]:
    """The network's parameters with every `source` array of the same name and shape copied
    in (cast to the network's dtype), the rest as `initial` has them; and the report."""
    out, rep = {}, InitFrom(source_name)
    for name, init in initial.items():
        src = source.get(name)
        if src is None:
            out[name] = init.copy()
            rep.fresh.append((name, init.shape, f"not in {source_name}"))
        elif tuple(src.shape) != tuple(init.shape):
            out[name] = init.copy()
            rep.fresh.append((name, init.shape, f"{tuple(src.shape)} in {source_name}"))
        else:
            out[name] = np.array(src, dtype=init.dtype, copy=True)
            rep.copied.append((name, init.shape, ""))
    for name, src in source.items():
        if name not in initial:
            rep.ignored.append((name, tuple(src.shape), "not in this network"))
    return out, rep


def init_from_run(path, initial: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                     InitFrom]:
    """`merge_parameters` with a run directory's (or .safetensors file's) weights."""
    weights, _ = read_run(path)
    return merge_parameters(initial, weights, str(path))
