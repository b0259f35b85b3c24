"""The `isa` fixture: the cpu backend's host kernels built for one x86-64 ISA level.

CI runs on one kind of CPU, but float32 results (and so any test that leans on them) can
differ with the instruction set the host kernels are compiled for (issue 28: AVX2 against
AVX-512). A test that takes `isa` (parametrised with ISA_LEVELS, indirect) runs with
NETSPEC_HOST_MARCH set to that level and the host kernels rebuilt for it (each level once per
session; netspec/runtime/host_build.py keys its cache by the flags), on this machine, whose
CPU runs every level up to its own: `native`, `x86-64-v3` (AVX2 + FMA, no AVX-512) and
`x86-64` (SSE2, no FMA). Off x86-64 the two named levels skip, saying so.
"""
from __future__ import annotations

import platform

import pytest

from isa_levels import ISA_LEVELS  # noqa: F401  (the levels, for parametrize)


@pytest.fixture
def isa(request, monkeypatch):
    from netspec.runtime import cpu_backend
    level = getattr(request, "param", "native")
    if level != "native" and platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"-march={level} is an x86-64 level; this machine is {platform.machine()}")
    monkeypatch.setenv("NETSPEC_HOST_MARCH", level)
    saved = cpu_backend._BUILT
    cpu_backend._BUILT = None
    kernels, note = cpu_backend.host_kernels()
    assert kernels is not None, note
    assert f"-march={level}" in kernels.flags
    yield level
    cpu_backend._BUILT = saved
