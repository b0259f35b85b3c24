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


# -- the suite writes only inside pytest's temporary folders ---------------------------------
# netspec's caches ($NETSPEC_CACHE_DIR: statistics, compiled kernels, autotune, the demo set)
# and every temporary file (TMPDIR, for this process and the subprocesses tests start) go to
# one session folder under pytest's basetemp, removed at the end; compiled kernels are
# built once per session there. tests/test_cachedir.py fails if a netspec cache write lands in
# the user's own cache folder; at the end, any file changed there since the session began is
# named (a warning, since another program, another run of the suite or a PoCL of the user's
# may write there meanwhile).
USER_CACHE: pathlib.Path | None = None
SESSION_DIR: pathlib.Path | None = None
_USER_CACHE_BEFORE: dict = {}


def snapshot(folder: pathlib.Path) -> dict:
    """{relative path: (size, mtime_ns)} of every file under folder ({} if it is absent)."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = pathlib.Path(dirpath) / f
            try:
                st = p.lstat()
            except OSError:
                continue
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def pytest_configure(config):
    global USER_CACHE, SESSION_DIR, _USER_CACHE_BEFORE
    import tempfile

    from _pytest.tmpdir import TempPathFactory

    from netspec.cachedir import user_cache_dir
    USER_CACHE = user_cache_dir()
    _USER_CACHE_BEFORE = snapshot(USER_CACHE)
    factory = getattr(config, "_tmp_path_factory", None) or \
        TempPathFactory.from_config(config, _ispytest=True)
    SESSION_DIR = factory.mktemp("netspec-session", numbered=True)
    (SESSION_DIR / "tmp").mkdir()
    os.environ["NETSPEC_CACHE_DIR"] = str(SESSION_DIR / "cache")
    os.environ["TMPDIR"] = str(SESSION_DIR / "tmp")
    tempfile.tempdir = None                  # gettempdir() reads TMPDIR again
    config.netspec_isolation = (USER_CACHE, SESSION_DIR, user_cache_changes)
    # Ctrl-C is under test (test_signals.py, the loader's and prepare's workers): a suite
    # started as a background job of a script inherits SIGINT ignored, and so would every
    # command it starts; Python's own handler here makes the children's SIGINT the default
    import signal
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def user_cache_changes() -> list[str]:
    """Files added, changed or removed in the user's cache folder since the session began."""
    if USER_CACHE is None:
        return []
    now = snapshot(USER_CACHE)
    return sorted(k for k in now.keys() | _USER_CACHE_BEFORE.keys()
                  if now.get(k) != _USER_CACHE_BEFORE.get(k))


def pytest_sessionfinish(session, exitstatus):
    changed = user_cache_changes()
    if changed:
        session.config.get_terminal_writer().line(
            f"warning: {len(changed)} files changed in the user's cache {USER_CACHE} during "
            f"the tests (by these tests, or by another program): {changed[:5]}", yellow=True)


def pytest_unconfigure(config):
    import shutil
    if SESSION_DIR is not None:
        shutil.rmtree(SESSION_DIR, ignore_errors=True)
