"""One cache-folder rule (netspec/cachedir.py), and every cache under it."""
from __future__ import annotations

from pathlib import Path

from netspec.cachedir import cache_dir, user_cache_dir


def test_the_rule_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NETSPEC_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "netspec"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "netspec"
    monkeypatch.setenv("NETSPEC_CACHE_DIR", "~/mine")
    assert user_cache_dir() == tmp_path / "home" / "mine"


def test_every_cache_is_a_folder_of_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path))
    from netspec.runtime import autotune, opencl_backend
    assert opencl_backend.cache_dir() == tmp_path / "kernels"
    assert autotune.autotune_dir() == tmp_path / "autotune"
    assert cache_dir("stats") == tmp_path / "stats"
    assert isinstance(cache_dir("demo-v1"), Path)
