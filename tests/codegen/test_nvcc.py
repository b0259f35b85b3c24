"""Every emitted .cu compiles with nvcc for sm_80 and sm_90 (PTX only; no GPU needed)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from netspec.codegen.compile import compile_network
from netspec.ir.build import build_graph

NVCC = shutil.which("nvcc")
SPECS = ["specs/alexnet.net", "specs/alexnet-1gpu.net", "examples/tiny-alexnet.net"]


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on the PATH (CUDA toolkit not installed)")
@pytest.mark.parametrize("spec", SPECS)
def test_cuda_source_compiles(root, tmp_path, spec):
    files = compile_network(build_graph(root / spec)).write(tmp_path)
    for arch in ("sm_80", "sm_90"):
        out = tmp_path / f"kernels_{arch}.ptx"
        r = subprocess.run([NVCC, "-ptx", f"-arch={arch}", str(files["cuda"]), "-o", str(out)],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"nvcc -arch={arch} {spec}:\n{r.stderr}"
        ptx = out.read_text()
        assert ".entry conv1_fwd" in ptx or ".entry conv1_g0_fwd" in ptx
