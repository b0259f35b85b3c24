import pytest

from trainkit import make_folder


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("imgs"))
