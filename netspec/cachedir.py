"""Where netspec keeps what it can rebuild: the one rule for every cache folder.

$NETSPEC_CACHE_DIR if set, else $XDG_CACHE_HOME/netspec, else ~/.cache/netspec (the XDG base
directory convention). Each cache is a folder inside it:

    demo-v1/     the demo data set (netspec/data/demo.py)
    stats/       folder statistics: mean image, PCA, unreadable files (netspec/data/dataset.py)
    autotune/    tuned GEMM tiles per device (netspec/runtime/autotune.py)
    kernels/     compiled OpenCL programs, and PoCL's and CuPy's own caches in kernels/pocl and
                 kernels/cupy (netspec/runtime/opencl_backend.py, cuda_backend.py); the CUDA
                 emulator's libraries in kernels/emulator (netspec/runtime/cuda_emulator); the
                 cpu backend's host kernels in kernels/host (netspec/runtime/host_build.py)

A foundation module like netspec/errors.py: it imports nothing from netspec, so every layer
may use it.
"""
from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """The cache root (see the module doc); not created here: a cache makes its own folder
    when it first writes."""
    explicit = os.environ.get("NETSPEC_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "netspec"
    return Path.home() / ".cache" / "netspec"


def cache_dir(name: str) -> Path:
    """The folder of one cache, `name` being one of those in the module doc."""
    return user_cache_dir() / name
