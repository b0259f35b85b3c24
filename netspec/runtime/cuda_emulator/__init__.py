"""The CUDA path executed without a GPU: a CPU emulator under the real `cuda` backend.

With NETSPEC_CUDA_EMULATE=1 and no CUDA device answering, `backend="cuda"` runs
netspec/runtime/cuda_backend.py's `CudaNet` unchanged on `cupy_model`, a CPU model of exactly the
CuPy calls it makes; kernels.cu is compiled by the system C++ compiler through netspec's own
emulation header (cuda_emulation.h, built and cached by build.py). Devices are named
"... (emulated on the CPU)", so the trainer's first line, `device_note` and bench reports say
so; `backend="auto"` never picks it.

What it proves: the CUDA dialect's text compiles as CUDA C++ and computes the reference's
numbers with the launch geometry cuda_backend.py gives it; barriers are reached by whole
blocks; cuda_backend.py's host logic (devices, streams, events, peer copies, byte offsets,
scalar dtypes) orders and addresses everything right. What only a GPU can show: speed,
resource limits at run time, races between blocks, the driver's and NVRTC's own behaviour (see
cupy_model's docstring for the full list).
"""
from __future__ import annotations

import os
from types import SimpleNamespace

ENV = "NETSPEC_CUDA_EMULATE"


def emulation_requested() -> bool:
    """NETSPEC_CUDA_EMULATE is set to something other than '', '0', 'false', 'no'."""
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def emulated_cupy() -> SimpleNamespace:
    """The `cupy`-shaped namespace cuda_backend.py uses: .cuda, .ndarray, .RawModule."""
    from . import cupy_model as m
    return SimpleNamespace(cuda=m.cuda, ndarray=m.ndarray, RawModule=m.RawModule,
                           emulated=True, model=m)


__all__ = ["ENV", "emulation_requested", "emulated_cupy"]
