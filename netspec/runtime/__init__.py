"""Executing a compiled network: the backend-independent `Net` (net.py) and one subclass per
backend. `build` compiles a spec and returns a ready network.

The backends live in one registry: `register_backend(name, "module:Class" or a class,
auto_rank=...)`. A class named by a string is imported only when asked for, so a missing
driver never breaks `import netspec`. Everything else about a backend (its kernel dialect,
bench clock, device count, tuner, what it needs installed, its device's name) is declared on
its class (see "What a backend declares" on `Net`), and the CLI, bench, autotune and the
data-parallel driver ask the class. `BACKENDS` is the registry itself (name -> "module:Class"
or class), so `["auto", *BACKENDS]` is always the current list of choices.

`backend="auto"` takes, in order of auto_rank (lowest first), the first backend whose class
says why it qualifies (`auto_choice()`); a backend registered without a rank is only used by
name.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any

import numpy as np

from .net import Net

# name -> "module:Class" (imported on first use) or the class itself
BACKENDS: dict[str, str | type[Net]] = {}
_AUTO_RANK: dict[str, float] = {}
# The names auto tries, in order; recomputed by register_backend / unregister_backend.
AUTO_ORDER: tuple[str, ...] = ()


def _refresh_auto_order() -> None:
    global AUTO_ORDER
    AUTO_ORDER = tuple(sorted(_AUTO_RANK, key=lambda n: _AUTO_RANK[n]))


def register_backend(name: str, target: str | type[Net], *, auto_rank: float | None = None,
                     replace: bool = False) -> None:
    """Add a backend under `name`: `target` is "package.module:Class" (imported when first
    asked for) or a `Net` subclass. `auto_rank` puts it in auto's order (lower is tried
    first: cuda 10, opencl 20, cpu 30, numpy 40); None leaves it to be asked for by name.
    A class's `backend` attribute must be `name` (it is what `net.backend` reports and runs
    record). ValueError for 'auto', an empty name, or a name taken by another target unless
    `replace`."""
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"a backend needs a name other than 'auto', not {name!r}")
    if isinstance(target, str):
        if target.count(":") != 1:
            raise ValueError(f"backend '{name}': target must be 'module:Class', not {target!r}")
    elif not (isinstance(target, type) and issubclass(target, Net)):
        raise ValueError(f"backend '{name}': target must be 'module:Class' or a Net subclass, "
                         f"not {target!r}")
    else:
        _check_name(name, target)
    if name in BACKENDS and BACKENDS[name] != target and not replace:
        raise ValueError(f"backend '{name}' is already registered ({BACKENDS[name]!r}); pass "
                         f"replace=True to change it")
    BACKENDS[name] = target
    _AUTO_RANK.pop(name, None)
    if auto_rank is not None:
        _AUTO_RANK[name] = float(auto_rank)
    _refresh_auto_order()


def unregister_backend(name: str) -> None:
    """Remove a backend added by register_backend (KeyError if there is none)."""
    del BACKENDS[name]
    _AUTO_RANK.pop(name, None)
    _refresh_auto_order()


def backend_names() -> list[str]:
    """The registered backend names, in registration order ('auto' not included)."""
    return list(BACKENDS)


def _check_name(name: str, cls: type[Net]) -> None:
    if cls.backend != name:
        raise ValueError(f"backend '{name}': class {cls.__name__} says backend = "
                         f"{cls.backend!r}; give it backend = {name!r}")


def backend_class(name: str) -> type[Net]:
    """The Net subclass for a backend name ('auto' picks the first available). ValueError
    for an unknown name, with the closest registered one; ImportError when its module can't be
    imported."""
    if name == "auto":
        return pick_auto()
    if name not in BACKENDS:
        close = difflib.get_close_matches(str(name), list(BACKENDS), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown backend '{name}'{hint}; backends: "
                         f"{', '.join(['auto', *BACKENDS])}")
    target = BACKENDS[name]
    if isinstance(target, str):
        module, attr = target.split(":")
        target = getattr(importlib.import_module(module), attr)
        _check_name(name, target)
    return target


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
        why = cls.auto_choice()
        if why:
            line = f"netspec: backend '{candidate}': {why}" + \
                   (f" ({'; '.join(passed)})" if passed else "")
            (say or (lambda m: print(m, file=sys.stderr)))(line)
            return cls
        passed.append(cls.auto_refusal or f"{candidate} unavailable")
    raise ValueError(f"no backend is available (tried {', '.join(AUTO_ORDER)})")


def build(spec: Any, backend: str = "auto", *, seed: int = 0,
          dtype: Any = np.float32, devices: Any = None) -> Net:
    """Compile a network and initialise its parameters.

    spec: a path to a .net file, spec text (a str holding a newline: see
    netspec.dsl.parser.text_or_path), a parsed Spec or a built Graph. seed: parameters and
    dropout masks (see netspec/runtime/net.py for the draw order). dtype: float32 (default)
    or float64 (gradient checks). devices: the physical devices for the logical GPUs, e.g.
    [0, 1] (default: one per logical GPU as far as there are any; logical GPUs beyond that
    share them, each on its own stream or queue; see `net.device_note`).
    """
    from ..ir.build import build_graph
    from ..ir.graph import Graph

    cls = backend_class(backend)
    graph = spec if isinstance(spec, Graph) else build_graph(spec)
    return cls(graph, seed=seed, dtype=dtype, devices=devices)


# auto: cuda if a CUDA device answers, else opencl if an OpenCL *GPU* is present, else the fast
# CPU path (cpu) where a C compiler with OpenMP builds its host kernels, else numpy.
register_backend("numpy", "netspec.runtime.numpy_backend:NumpyNet", auto_rank=40)
register_backend("opencl", "netspec.runtime.opencl_backend:OpenCLNet", auto_rank=20)
register_backend("cuda", "netspec.runtime.cuda_backend:CudaNet", auto_rank=10)
register_backend("cpu", "netspec.runtime.cpu_backend:CpuNet", auto_rank=30)

__all__ = ["BACKENDS", "AUTO_ORDER", "Net", "backend_class", "backend_names", "build",
           "pick_auto", "register_backend", "unregister_backend"]
