"""Building host C (codegen/cpu_kernels.py, the C dialect) with the system C compiler, once.

The compiler is $CC, else the first of cc, gcc, clang on PATH. The shared library is cached
under `cache_dir("kernels")/host/<hash>.so` (netspec/cachedir.py), the hash over the source, the compiler's path and version and
the flags, so a second build is a dlopen. Flags (`host_flags()`): -O3, -march=$NETSPEC_HOST_MARCH
(default `native`, the machine the cache lives on; `x86-64-v3` for AVX2 + FMA without AVX-512,
`x86-64` for the baseline without FMA, which the tests also build to check every ISA level on
one machine), -fopenmp, and -ffp-contract=off with no fast-math, so each float operation is
rounded as NumPy rounds it. A -march value other than letters, digits, `-`, `_` and `.` is
refused (ValueError naming the variable). The kernels run on host_threads() threads (the
cores this process may use, within a container's CPU quota and $OMP_NUM_THREADS), and
libgomp's idle threads sleep (OMP_WAIT_POLICY=passive) rather than spin on cores that BLAS
or a busy neighbour needs. `load_host_kernels()` returns None with a reason when there is no working
compiler (or it lacks OpenMP); the CPU backend then falls back to NumPy.
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..cachedir import cache_dir

FLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno",
         "-fPIC", "-shared", "-std=gnu99")
MARCH_ENV = "NETSPEC_HOST_MARCH"


def cgroup_cpus(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU time a container's quota allows, in cores (cgroup v2 `cpu.max`, else v1
    `cpu/cpu.cfs_quota_us` over `cpu.cfs_period_us`); None when unlimited or unreadable."""
    try:
        quota, period = Path(root, "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path(root, "cpu", "cpu.cfs_quota_us").read_text())
        period = int(Path(root, "cpu", "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def host_threads() -> int:
    """Threads for the host kernels and the GEMM team: the cores this process may run on
    (sched_getaffinity), no more than a container's CPU quota allows (rounded up), and no
    more than $OMP_NUM_THREADS when it is set (an MPI launch that gives each replica one
    core sets it to 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    quota = cgroup_cpus()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) >= 1:
        n = min(n, int(env))
    return max(1, n)


def host_march() -> str:
    """The -march value the host kernels are built for: $NETSPEC_HOST_MARCH, else native."""
    march = os.environ.get(MARCH_ENV, "").strip() or "native"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", march):
        raise ValueError(f"{MARCH_ENV}={march!r}: expected a -march value such as native, "
                         f"x86-64-v3 or x86-64")
    return march


def host_flags() -> tuple[str, ...]:
    """The compiler flags of a host build (module doc), with host_march()'s -march."""
    return tuple(f"-march={host_march()}" if f == "-march=native" else f for f in FLAGS)

_CTYPES = {"f*": ctypes.c_void_p, "i*": ctypes.c_void_p, "l": ctypes.c_long,
           "f": ctypes.c_float}


def find_compiler() -> str | None:
    """$CC if set (None if it doesn't exist), else cc, gcc or clang from PATH."""
    env = os.environ.get("CC")
    if env:
        return shutil.which(env)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


class HostKernels:
    """The built library: `lib.<kernel>(...)` with argtypes set from the signatures; NumPy
    arrays are passed with `ptr(a)`, which checks they are C-contiguous float32/int32."""

    def __init__(self, lib: ctypes.CDLL, path: Path, compiler: str,
                 flags: tuple[str, ...] = FLAGS):
        self.lib, self.path, self.compiler, self.flags = lib, path, compiler, flags

    def __getattr__(self, name):
        return getattr(self.lib, name)


def ptr(a: np.ndarray) -> int:
    if not a.flags.c_contiguous or a.dtype not in (np.float32, np.int32):
        raise ValueError(f"host kernel argument must be a C-contiguous float32/int32 array, "
                         f"got {a.dtype} {a.shape} (contiguous: {a.flags.c_contiguous})")
    return a.ctypes.data


def build_host_kernels(source: str, signatures: dict[str, tuple[str, ...]]) \
        -> tuple[HostKernels | None, str]:
    """(kernels, note): the compiled library, or None and a one-line reason."""
    cc = find_compiler()
    if cc is None:
        return None, "no C compiler found (set CC or install gcc)"
    try:
        flags = host_flags()
    except ValueError as e:
        return None, str(e)
    ident = "\0".join([source, cc, _version(cc), *flags])
    key = hashlib.sha256(ident.encode()).hexdigest()[:32]
    path = cache_dir("kernels") / "host" / f"{key}.so"
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                src = Path(tmp) / "kernels.c"
                src.write_text(source)
                out = Path(tmp) / "kernels.so"
                r = subprocess.run([cc, *flags, str(src), "-o", str(out), "-lm"],
                                   capture_output=True, text=True, timeout=300)
                if r.returncode != 0:
                    first = (r.stderr.strip().splitlines() or ["?"])[0]
                    return None, f"the C compiler {cc} failed ({first})"
                os.replace(out, path)          # atomic: a concurrent build wins either way
        except (OSError, subprocess.SubprocessError) as e:
            return None, f"could not build the host kernels with {cc}: {e}"
    # libgomp reads OMP_WAIT_POLICY once, when it loads (with this library, unless something
    # loaded it before): passive, so its idle threads don't spin on the cores BLAS needs next.
    # Restored at once, so a PyTorch imported later keeps its own defaults.
    # Its thread count likewise: host_threads(), which a container's quota can hold below
    # the cores libgomp would count.
    saved = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OMP_NUM_THREADS", str(host_threads()))
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        return None, f"could not load the host kernels {path}: {e}"
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = [_CTYPES[a] for a in args]
        fn.restype = None
    return HostKernels(lib, path, cc, flags), f"host kernels built by {cc} ({flags[1]})"
