"""Builds a CUDA C module (netspec's kernels.cu) into a shared library that runs on the CPU,
through netspec's emulation header (cuda_emulation.h), with the system C++ compiler.

The library is cached under `cache_dir()/emulator/`, keyed by a hash of the source, the header,
the compiler's version and the flags, so a source is compiled once per machine. The flags: -O2
by default (`NETSPEC_CUDA_EMULATE_OPT` overrides; measured on AlexNet's kernels.cu at batch 2,
60 kernels, CPU seconds on a shared 2-core machine: build -O0 0.5, -O1 1.0, -O2 1.5, -O3 2.4;
one training step -O0 18.5, -O1 7.0, -O2 4.6, -O3 4.3), -fvisibility=hidden (see the header:
only the launch entry points are exported) and -ffp-contract=off (no FMA contraction, so sums
round as written).

Errors: `EmulatorBuildError` with the compiler's messages when the source does not compile.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

HEADER = Path(__file__).with_name("cuda_emulation.h")
# <mma.h> and <cuda_bf16.h> for a source that includes them: empty, the header defines the lot
INCLUDE = Path(__file__).with_name("include")
# the exported names, and nothing else (not even the linker's __start_/__stop_ symbols)
EXPORT_MAP = "{ global: netspec_launch_*; netspec_signature_*; local: *; };\n"
KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s+)?(\w+)\s*\(')


class EmulatorBuildError(RuntimeError):
    """kernels.cu does not compile as C++ through the emulation header."""


@dataclass(frozen=True)
class KernelEntry:
    name: str
    barriers: bool            # its text calls __syncthreads (else threads run as plain calls)


def kernel_entries(source: str) -> list[KernelEntry]:
    """The `extern "C" __global__` functions of a CUDA source, in order, and whether each one's
    text (up to the next kernel) uses `__syncthreads`."""
    found = list(KERNEL.finditer(source))
    out = []
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(source)
        out.append(KernelEntry(m.group(1), "__syncthreads" in source[m.end():end]))
    return out


def compiler() -> str:
    """$CXX, else g++, else c++; EmulatorBuildError when none is installed."""
    for c in (os.environ.get("CXX"), "g++", "c++"):
        if c and shutil.which(c):
            return c
    raise EmulatorBuildError("the CUDA emulator needs a C++ compiler (g++), and none was found "
                             "(set CXX)")


def flags(defines: tuple[str, ...] = ()) -> list[str]:
    opt = os.environ.get("NETSPEC_CUDA_EMULATE_OPT", "-O2")
    return ["-std=c++17", opt, "-fPIC", "-shared", "-fvisibility=hidden",
            "-ffp-contract=off", "-fno-strict-aliasing", f"-I{INCLUDE}",
 *[f"-D{d}" for d in defines]]


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True,
                              timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return cxx


def translation_unit(source: str) -> str:
    """The C++ file: the header, the CUDA source as it is (errors point at its lines), then one
    NETSPEC_EMU_EXPORT per kernel."""
    exports = "".join(f"NETSPEC_EMU_EXPORT({k.name}, {int(k.barriers)})\n"
                      for k in kernel_entries(source))
    return (f'#include "{HEADER}"\n#line 1 "kernels.cu"\n{source}\n'
            f'#line 1 "netspec-emulator-exports"\n{exports}')


def build_library(source: str, cache: Path, defines: tuple[str, ...] = ()) -> Path:
    """The path of the shared library for `source`, compiling it if the cache lacks it."""
    cxx = compiler()
    fl = flags(defines)
    key = hashlib.sha256("\0".join([source, HEADER.read_text(), _compiler_version(cxx),
                                    " ".join(fl), EXPORT_MAP]).encode()).hexdigest()[:24]
    cache.mkdir(parents=True, exist_ok=True)
    lib = cache / f"kernels-{key}.so"
    if lib.exists():
        return lib
    with tempfile.TemporaryDirectory(prefix="netspec-emu-") as tmp:
        cpp = Path(tmp) / "kernels.cpp"
        cpp.write_text(translation_unit(source))
        exports = Path(tmp) / "exports.map"
        exports.write_text(EXPORT_MAP)
        out = Path(tmp) / lib.name
        r = subprocess.run([cxx, *fl, f"-Wl,--version-script={exports}", str(cpp), "-o",
                            str(out)], capture_output=True, text=True)
        if r.returncode != 0:
            raise EmulatorBuildError(f"{cxx} could not compile the module for the CUDA "
                                     f"emulator:\n{r.stderr.strip()}")
        tmp_lib = lib.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(out, tmp_lib)
        os.replace(tmp_lib, lib)            # atomic: a concurrent build never sees half a file
    return lib


class KernelLibrary:
    """A loaded library: `launch(name, geometry, args, reverse)` and `signature(name)`."""

    def __init__(self, path: Path, entries: list[KernelEntry]):
        self.path = path
        self.lib = ctypes.CDLL(str(path))           # RTLD_LOCAL
        self.entries = {k.name: k for k in entries}
        self._launch, self._signature = {}, {}
        for k in entries:
            f = getattr(self.lib, f"netspec_launch_{k.name}")
            f.restype = ctypes.c_int
            f.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_void_p),
                          ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            s = getattr(self.lib, f"netspec_signature_{k.name}")
            s.restype = ctypes.c_char_p
            self._launch[k.name] = f
            self._signature[k.name] = tuple(s().decode().split(",")) if s() else ()

    def signature(self, name: str) -> tuple[str, ...]:
        """Parameter codes: '*f4' a float pointer, 'f4' a float, 'i4' an int, ..."""
        return self._signature[name]

    def launch(self, name: str, geometry: tuple[int, ...], args: list, reverse: bool) -> None:
        """Run one launch to completion; `args` are ctypes objects (pointers as c_void_p).
        RuntimeError with the emulator's message when a barrier is misused."""
        geo = (ctypes.c_uint * 6)(*geometry)
        ptrs = (ctypes.c_void_p * max(len(args), 1))(
            *[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
        err = ctypes.create_string_buffer(512)
        if self._launch[name](geo, ptrs, int(reverse), err, 512):
            raise RuntimeError(err.value.decode())
