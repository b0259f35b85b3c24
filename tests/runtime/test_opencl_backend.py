"""backend="opencl" (PyOpenCL, PoCL on the CPU here): what only it has (its refusal of float64,
auto's choice, its caches). The checks it shares with the other backends run from
tests/ops/test_layers_on_backends.py (every layer type, check_layer) and
test_plan_backends.py (whole networks against the NumPy reference, plan_oracle.py)."""
from __future__ import annotations

import pytest

from netspec.ir.build import build_graph

pytest.importorskip("pyopencl", reason="pyopencl is not installed (pip install netspec[opencl])")
from netspec.runtime.opencl_backend import OpenCLNet, find_device  # noqa: E402

if find_device() is None:
    pytest.skip("no OpenCL device (install pocl: pip install 'pyopencl[pocl]')",
                allow_module_level=True)


def test_float64_is_refused(root):
    with pytest.raises(ValueError, match="float32 only"):
        OpenCLNet(build_graph(root / "examples/tiny-alexnet.net"), dtype="float64")


def test_auto_says_what_it_picked_and_why(root):
    from netspec.runtime import pick_auto
    from netspec.runtime.cuda_backend import cuda_device_count, cuda_emulated
    lines = []
    cls = pick_auto(lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"netspec: backend '{cls.backend}'")
    if cuda_device_count() and not cuda_emulated():   # auto never picks the emulator
        assert cls.backend == "cuda"
    elif OpenCLNet.auto_choice():
        assert cls.backend == "opencl" and "GPU" in lines[0]
    else:
        from netspec.runtime.cpu_backend import CpuNet
        assert cls.backend == ("cpu" if CpuNet.auto_choice() else "numpy")
        assert "no CUDA device" in lines[0] and "no OpenCL GPU" in lines[0]


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    """Compiled programs go under $NETSPEC_CACHE_DIR/kernels when it is set."""
    from netspec.runtime import opencl_backend
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path))
    assert opencl_backend.cache_dir() == tmp_path / "kernels"


def test_pocl_tempfiles_left_by_earlier_processes_are_swept(tmp_path):
    """PoCL leaves an empty tempfile_* in its cache folder whenever a process lists the
    platforms; the first device search of a process removes the empty ones older than
    STALE_TEMPFILE_S, and keeps younger or non-empty ones (another process's, being written)."""
    import os
    import subprocess
    import sys
    import time

    from netspec.runtime.opencl_device import STALE_TEMPFILE_S, sweep_pocl_tempfiles
    folder = tmp_path / "kernels" / "pocl"
    folder.mkdir(parents=True)
    old = time.time() - STALE_TEMPFILE_S - 60

    def make(name, data=b"", when=old):
        path = folder / name
        path.write_bytes(data)
        os.utime(path, (when, when))
        return path

    stale = [make(f"tempfile_old{i}") for i in range(3)]
    busy = make("tempfile_busy", b"kernel binary being written")
    young = make("tempfile_young", when=time.time())
    other = make("other_file")
    assert sweep_pocl_tempfiles(folder) == 3
    assert not any(p.exists() for p in stale) and busy.exists() and young.exists()
    assert other.exists()

    # end to end: three processes that search for a device leave at most one file each, and
    # every one older than the limit is gone after the next search
    env = {k: v for k, v in os.environ.items() if k != "POCL_CACHE_DIR"}
    env["NETSPEC_CACHE_DIR"] = str(tmp_path)
    code = "from netspec.runtime.opencl_device import find_device; find_device()"
    before = set(folder.glob("tempfile_*"))
    for _ in range(3):
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
    new = set(folder.glob("tempfile_*")) - before
    assert len(new) <= 3
    for path in new:
        os.utime(path, (old, old))
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert not any(p.exists() for p in new)
