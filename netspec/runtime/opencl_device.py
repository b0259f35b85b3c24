"""Finding OpenCL devices through PyOpenCL (an optional extra, imported only when asked for).

Device choice: NETSPEC_OPENCL_DEVICE="platform substring:device substring" (either part may be
empty), else the first GPU, else PoCL's CPU device, else the first device at all. That is
device 0 of `devices=[...]`; devices 1, 2, ... are the other devices of its platform and type
(and name, when NETSPEC_OPENCL_DEVICE gives one), in the platform's order. The devices used
share one context, so a transfer between logical GPUs is a copy between buffers of that context,
enqueued on the sender's queue (the driver moves the data between devices); on one device it
is a device-local copy. PoCL shows two CPU devices with POCL_DEVICES="pthread pthread".

PyOpenCL is imported by `_cl()`, after pointing PoCL's kernel cache at netspec's (see
opencl_backend.py). Apart from the backend, the autotuner (autotune.py) times kernels on
`find_device()`.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..cachedir import cache_dir as _cache


def cache_dir() -> Path:
    """Where compiled kernels go: the user cache's kernels/ folder (netspec/cachedir.py)."""
    return _cache("kernels")


def _cl():
    # PoCL reads POCL_CACHE_DIR once, when the OpenCL platforms are first listed
    os.environ.setdefault("POCL_CACHE_DIR", str(cache_dir() / "pocl"))
    import pyopencl as cl  # optional extra: imported only when this backend is used
    return cl


# PoCL leaves one empty tempfile_XXXXXX in its cache folder each time a process lists the
# platforms (seen with PoCL 6): `auto` probes OpenCL in every command, so they pile up.
_SWEPT = False
STALE_TEMPFILE_S = 600


def sweep_pocl_tempfiles(folder=None, now=None) -> int:
    """Remove the empty tempfile_* in PoCL's cache folder (POCL_CACHE_DIR, else ours) that are
    older than STALE_TEMPFILE_S seconds: a younger or non-empty one may be another process's
    file being written. Returns how many were removed; never raises."""
    import time
    folder = Path(folder or os.environ.get("POCL_CACHE_DIR") or cache_dir() / "pocl")
    now = time.time() if now is None else now
    removed = 0
    try:
        for path in folder.glob("tempfile_*"):
            try:
                st = path.stat()
                if st.st_size == 0 and now - st.st_mtime > STALE_TEMPFILE_S and \
                        path.is_file():
                    path.unlink()
                    removed += 1
            except OSError:
                continue
    except OSError:
        pass
    return removed


def opencl_devices() -> list:
    """The devices `devices=` numbers: find_device()'s first, then the others of its platform
    and type (see the module doc)."""
    first = find_device()
    if first is None:
        return []
    _cl()
    dw = os.environ.get("NETSPEC_OPENCL_DEVICE", "").partition(":")[2].lower()
    same = [d for d in first.platform.get_devices()
            if d.type == first.type and dw in d.name.lower()]
    return [first] + [d for d in same if d != first]


def describe_device(d) -> str:
    platform = d.platform.name.strip()
    short = "PoCL" if "portable" in platform.lower() else platform
    return f"{d.name.strip()} ({short})"


def find_device(gpu_only: bool = False):
    """The OpenCL device to use (see the module doc), or None."""
    try:
        cl = _cl()
        platforms = cl.get_platforms()
    except Exception:
        return None
    global _SWEPT
    if not _SWEPT:
        _SWEPT = True
        sweep_pocl_tempfiles()
    devices = [(p, d) for p in platforms for d in p.get_devices()]
    want = os.environ.get("NETSPEC_OPENCL_DEVICE")
    if want:
        pw, _, dw = want.partition(":")
        for p, d in devices:
            if pw.lower() in p.name.lower() and dw.lower() in d.name.lower():
                return d
        return None
    gpus = [d for p, d in devices if d.type & cl.device_type.GPU]
    if gpus or gpu_only:
        return gpus[0] if gpus else None
    pocl = [d for p, d in devices if "portable" in p.name.lower() or "pocl" in p.name.lower()]
    return (pocl or [d for _, d in devices] or [None])[0]
