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


def test_the_suite_never_writes_the_users_cache(tmp_path, pytestconfig):
    """tests/conftest.py points netspec's caches and TMPDIR into pytest's temporary folders:
    a cache written now (compiled host kernels, a statistics file, a temporary file) lands
    there, never in the user's own cache folder."""
    import tempfile

    user_cache, session, changes = pytestconfig.netspec_isolation
    assert user_cache_dir() == session / "cache" != user_cache
    assert Path(tempfile.gettempdir()) == session / "tmp"
    assert tmp_path.is_relative_to(session.parent)
    from netspec.codegen.cpu_kernels import kernel_signatures, render_cpu_module
    from netspec.runtime.host_build import build_host_kernels
    stats = cache_dir("stats")
    stats.mkdir(parents=True, exist_ok=True)
    (stats / "probe").write_text("x")
    with tempfile.NamedTemporaryFile() as f:
        assert Path(f.name).is_relative_to(session)
    k, note = build_host_kernels(render_cpu_module() + f"/* {tmp_path.name} */\n",
                                 kernel_signatures())
    assert k is not None, note
    assert k.path.is_relative_to(session / "cache")
    mine = {str(p.relative_to(session / "cache"))
            for p in (session / "cache").rglob("*") if p.is_file()}
    assert mine >= {"stats/probe", str(k.path.relative_to(session / "cache"))}
    assert not (user_cache / k.path.relative_to(session / "cache")).exists()
