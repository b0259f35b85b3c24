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
