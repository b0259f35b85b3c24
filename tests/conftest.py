import os
import pathlib
import re

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


# -- kernel toolchains: skipped with a reason here, a failure in CI --------------------------
# The kernel tests need PyOpenCL with an OpenCL device (PoCL on a CPU), nvcc and g++. Where one
# is missing they skip and say which. In CI (CI=true) such a skip is turned into a failure, so
# that CI can't stay green with the kernels untested. The skips are recognised by their
# reasons, whichever test file they are in; tests/test_toolchains.py checks each toolchain
# once, so a missing one fails CI even if no other test would notice.
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")
TOOLCHAIN_MISSING = re.compile(r"pyopencl is not installed|no OpenCL device|nvcc is not on the "
                               r"PATH|g\+\+ is not on the PATH|CUDA toolkit not installed", re.I)


def _fail_missing_toolchain(report) -> None:
    if not CI or not report.skipped:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if TOOLCHAIN_MISSING.search(reason):
        report.outcome = "failed"
        report.longrepr = (f"CI=true: a kernel toolchain is missing, so these kernel tests "
                           f"would not run: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_missing_toolchain(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_missing_toolchain(outcome.get_result())
