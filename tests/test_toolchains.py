"""The kernel toolchains the tests need, each checked once by building something small with
it: PyOpenCL and an OpenCL device (PoCL), nvcc, g++. Elsewhere a missing one is a skip that
says which; with CI=true it is a failure (tests/conftest.py), and so is every other kernel
test's skip for the same reason. The last test runs pytest on a throwaway test file to show
that rule at work."""
from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["pytester"]


def test_opencl_device_builds_a_kernel():
    cl = pytest.importorskip("pyopencl", reason="pyopencl is not installed "
                                                "(pip install 'pyopencl[pocl]')")
    from netspec.runtime.opencl_backend import find_device
    dev = find_device()
    if dev is None:
        pytest.skip("no OpenCL device (install pocl: pip install 'pyopencl[pocl]')")
    program = cl.Program(cl.Context([dev]), "__kernel void k(__global float* x) "
                                            "{ x[get_global_id(0)] *= 2.0f; }").build()
    assert program.get_info(cl.program_info.KERNEL_NAMES) == "k"


def test_nvcc_compiles_a_kernel(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on the PATH (CUDA toolkit not installed)")
    src = tmp_path / "k.cu"
    src.write_text('extern "C" __global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }\n')
    r = subprocess.run([nvcc, "-ptx", "-arch=sm_80", str(src), "-o", str(tmp_path / "k.ptx")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert ".entry k" in (tmp_path / "k.ptx").read_text()


def test_gxx_compiles_a_program(tmp_path):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not on the PATH (install a C++ compiler)")
    src = tmp_path / "k.cpp"
    src.write_text("int main() { return 0; }\n")
    r = subprocess.run([gxx, str(src), "-o", str(tmp_path / "k")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert subprocess.run([str(tmp_path / "k")]).returncode == 0


@pytest.mark.parametrize("ci, expected", [("", {"skipped": 2}),
                                          ("true", {"failed": 1, "skipped": 1})])
def test_a_missing_toolchain_fails_only_in_ci(pytester, monkeypatch, ci, expected):
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_it=textwrap.dedent("""
        import pytest

        def test_needs_nvcc():
            pytest.skip("nvcc is not on the PATH (CUDA toolkit not installed)")

        def test_needs_a_gpu():
            pytest.skip("no CUDA device")      # not a toolchain: stays a skip in CI
    """))
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    assert result.parseoutcomes() == expected
    if ci:
        result.stdout.fnmatch_lines(["*CI=true: a kernel toolchain is missing*nvcc*"])
