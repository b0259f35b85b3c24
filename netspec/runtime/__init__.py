"""Executing a compiled network: the backend-independent `Net` (net.py) and one subclass per
backend. `build` compiles a spec and returns a ready network.

A backend registers here as name -> "module:Class"; modules are imported only when asked for,
so a missing driver never breaks `import netspec`. `backend="auto"` takes the first entry of
AUTO_ORDER whose class says it is available().
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any

import numpy as np

from .net import Net

BACKENDS: dict[str, str] = {
    "numpy": "netspec.runtime.numpy_backend:NumpyNet",
    "opencl": "netspec.runtime.opencl_backend:OpenCLNet",
    "cuda": "netspec.runtime.cuda_backend:CudaNet",
    "cpu": "netspec.runtime.cpu_backend:CpuNet",
}
# auto: cuda if a CUDA device answers, else opencl if an OpenCL *GPU* is present, else the fast
# CPU path (cpu) where a C compiler with OpenMP builds its host kernels, else numpy.
# A class's auto_choice() says why it qualifies (None: it doesn't); see pick_auto.
AUTO_ORDER: tuple[str, ...] = ("cuda", "opencl", "cpu", "numpy")


def backend_class(name: str) -> type[Net]:
    """The Net subclass for a backend name ('auto' picks the first available)."""
    if name == "auto":
        return pick_auto()
    if name not in BACKENDS:
        close = difflib.get_close_matches(str(name), list(BACKENDS), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown backend '{name}'{hint}; backends: "
                         f"{', '.join(['auto', *BACKENDS])}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def pick_auto(say=None) -> type[Net]:
    """The first backend of AUTO_ORDER that qualifies; says which and why in one line (on
    stderr, or to `say`)."""
    import sys
    passed = []
    for candidate in AUTO_ORDER:
        try:
            cls = backend_class(candidate)
        except ImportError as e:
            passed.append(f"{candidate}: {e}")
            continue
        chooser = getattr(cls, "auto_choice", None)
        why = chooser() if chooser else ("available" if cls.available() else None)
        if why:
            line = f"netspec: backend '{candidate}': {why}" + \
                   (f" ({'; '.join(passed)})" if passed else "")
            (say or (lambda m: print(m, file=sys.stderr)))(line)
            return cls
        passed.append(getattr(cls, "auto_refusal", f"{candidate} unavailable"))
    raise ValueError(f"no backend is available (tried {', '.join(AUTO_ORDER)})")


def build(spec: Any, backend: str = "auto", *, seed: int = 0,
          dtype: Any = np.float32, devices: Any = None) -> Net:
    """Compile a network and initialise its parameters.

    spec: a path to a .net file, spec text (a str holding a newline: see
    netspec.dsl.parser.text_or_path), a parsed Spec or a built Graph. seed: parameters and dropout masks (see netspec/runtime/net.py for the draw
    order). dtype: float32 (default) or float64 (gradient checks). devices: the physical
    devices for the logical GPUs, e.g. [0, 1] (default: one per logical GPU as far as there are
    any; logical GPUs beyond that share them, each on its own stream or queue; see
    `net.device_note`).
    """
    from ..ir.build import build_graph
    from ..ir.graph import Graph

    cls = backend_class(backend)
    graph = spec if isinstance(spec, Graph) else build_graph(spec)
    return cls(graph, seed=seed, dtype=dtype, devices=devices)


__all__ = ["BACKENDS", "AUTO_ORDER", "Net", "backend_class", "build", "pick_auto"]
