"""backend="opencl" (PyOpenCL, PoCL on the CPU here) against the NumPy reference: see
plan_oracle.py for what is compared and the float32 tolerance."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from netspec.ir.build import build_graph

pytest.importorskip("pyopencl", reason="pyopencl is not installed (pip install netspec[opencl])")
from netspec.runtime.opencl_backend import OpenCLNet, find_device  # noqa: E402

from net_specs import (  # noqa: E402
    BRANCHES,
    FC_HEAD_BATCH_128,
    SUBRANGE,
    edge_case_specs,
    one_gpu_grouped,
)
from plan_oracle import check_end_to_end, check_kernels_in_place  # noqa: E402

if find_device() is None:
    pytest.skip("no OpenCL device (install pocl: pip install 'pyopencl[pocl]')",
                allow_module_level=True)


@pytest.mark.parametrize("spec", ["specs/alexnet.net", "examples/tiny-alexnet.net"])
def test_network_matches_reference(root, spec):
    g = build_graph(root / spec)
    net = OpenCLNet(g, seed=3)
    compared = check_kernels_in_place(net, g, 2, seed=3, train=True)
    assert compared >= 4 * len([p for l in g.compute_layers for p in l.parts]) // 2
    check_end_to_end(net, g, 2, seed=3, train=True)


def test_fc_head_at_batch_128_matches_reference():
    """AlexNet's fc head at the spec's batch (128) on 2 GPUs (net_specs.FC_HEAD_BATCH_128)."""
    g = build_graph(FC_HEAD_BATCH_128)
    net = OpenCLNet(g, seed=5)
    check_kernels_in_place(net, g, 128, seed=5, train=True)
    check_end_to_end(net, g, 128, seed=5, train=True)


@pytest.mark.parametrize("which", ["branches", "subrange", "tiny-grouped-1gpu"])
def test_grouped_and_shared_transfers_match_reference(root, which):
    """Several parts on one GPU (groups), channel sub-ranges read across GPUs, one transfer
    read by three layers: kernel by kernel and end to end against the NumPy reference."""
    text = {"branches": BRANCHES, "subrange": SUBRANGE,
            "tiny-grouped-1gpu": one_gpu_grouped((root / "examples/tiny-alexnet.net")
                                                 .read_text())}[which]
    g = build_graph(text)
    net = OpenCLNet(g, seed=4)
    check_kernels_in_place(net, g, 2, seed=4, train=True)
    check_end_to_end(net, g, 2, seed=4, train=True)


@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(edge_case_specs())
def test_edge_cases_match_reference(case):
    text, batch = case
    g = build_graph(text)
    net = OpenCLNet(g, seed=1)
    for train in (True, False):
        check_kernels_in_place(net, g, batch, seed=1, train=train)
    check_end_to_end(net, g, batch, seed=1, train=True)


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
