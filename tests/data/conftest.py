import logging

import pytest

from netspec.data.demo import generate_demo


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own empty user cache (demo set, folder statistics)."""
    path = tmp_path_factory.mktemp("netspec-cache")
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """A small demo dataset: 10 classes, 12 train and 3 val images each."""
    root = tmp_path_factory.mktemp("small-demo")
    generate_demo(root, seed=0, train_per_class=12, val_per_class=3)
    return root


@pytest.fixture
def data_warnings(caplog):
    """The warning lines logged by netspec.data during the test."""
    caplog.set_level(logging.WARNING, logger="netspec.data")

    def lines():
        return [r.getMessage() for r in caplog.records
                if r.name == "netspec.data" and r.levelno == logging.WARNING]

    return lines
