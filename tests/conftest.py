import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def root() -> pathlib.Path:
    return ROOT


# Autotuning (netspec/runtime/autotune.py) is off in tests unless a test turns it on: no test
# should time kernels, or pick up tiles someone tuned in the user's cache.
os.environ.setdefault("NETSPEC_AUTOTUNE", "0")


# The CUDA tests (marked gpu) run everywhere: where no CUDA device answers, on netspec's CPU
# emulator (netspec/runtime/cuda_emulator). A machine with a GPU runs them on it; set
# NETSPEC_CUDA_EMULATE=0 to skip them instead.
os.environ.setdefault("NETSPEC_CUDA_EMULATE", "1")


def _cuda_emulated() -> bool:
    from netspec.runtime.cuda_backend import cuda_emulated
    return cuda_emulated()


def pytest_report_header(config):
    if _cuda_emulated():
        return ["cuda: no CUDA device answers; gpu tests run emulated on the CPU "
                "(NETSPEC_CUDA_EMULATE=1), marked 'emulated'"]
    return []


def pytest_collection_modifyitems(config, items):
    if not _cuda_emulated():
        return
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(pytest.mark.emulated)
