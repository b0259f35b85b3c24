"""Packaging: `netspec[cuda12]`/`[cuda13]` bring NVRTC, and CuPy's NVRTC accepts kernels.cu with
the exact options CudaNet's RawModule uses (plus what CuPy adds: -ftz=true, -arch=sm_XX and
--device-as-default-execution-space), for sm_80 and sm_90. Compile-only: no GPU is needed, but
CuPy and the NVRTC wheel are; elsewhere the test skips, saying which is missing. A source with
a syntax error must be refused (the negative control)."""
from __future__ import annotations

import pytest

from netspec.codegen.compile import compile_network
from netspec.ir.build import build_graph
from netspec.runtime.cuda_backend import NVRTC_OPTIONS


def _nvrtc():
    """CuPy's compiler module with NVRTC loaded, or a reason to skip."""
    try:
        from cupy.cuda import compiler
    except ImportError as e:
        return None, f"CuPy is not installed (pip install 'netspec[cuda13]'): {e}"
    try:
        compiler._get_nvrtc_version()
    except Exception as e:                      # noqa: BLE001 - any loader failure
        return None, (f"CuPy finds no NVRTC library (pip install 'netspec[cuda13]' brings "
                      f"nvidia-cuda-nvrtc): {type(e).__name__}: {e}")
    return compiler, None


COMPILER, WHY = _nvrtc()


@pytest.mark.skipif(COMPILER is None, reason=str(WHY))
@pytest.mark.parametrize("arch", ["80", "90"])
def test_cupy_nvrtc_compiles_kernels_cu(root, monkeypatch, arch):
    compiler = COMPILER
    # CuPy asks the current device whether NVRTC can emit SASS for `arch`; with no device,
    # answer as CuPy does for an arch NVRTC supports (cupy/cuda/compiler.py)
    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc",
                        lambda arch=None: (f"-arch=sm_{arch}", "cubin"))
    source = compile_network(build_graph(root / "specs/alexnet.net"), 128).cuda_source
    options = (*NVRTC_OPTIONS, "-ftz=true")    # what _compile_with_cache_cuda adds
    out = compiler.compile_using_nvrtc(source, options, arch=arch)
    binary = out[0] if isinstance(out, tuple) else out        # CuPy 14: (cubin, mapping)
    assert binary[:4] == b"\x7fELF"                            # SASS for sm_XX
    assert b"conv1_fwd" in binary and b"sgd_gpu1" in binary
    with pytest.raises(compiler.CompileException, match="error"):
        compiler.compile_using_nvrtc(source.replace("__syncthreads();", "__syncthreads()", 1),
                                     options, arch=arch)
