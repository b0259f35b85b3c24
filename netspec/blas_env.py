"""Process-wide BLAS thread settings, made when netspec is imported (foundation: imports
nothing from netspec).

The cpu backend alternates BLAS GEMMs and OpenMP kernels on the same cores. OpenBLAS's idle
threads otherwise spin for ~0.1 s after each GEMM, taking a core from the next kernel (it
halved im2col's speed on a 2-core machine). OpenBLAS reads OPENBLAS_THREAD_TIMEOUT once, when
NumPy loads it, so this only works when netspec is imported before NumPy; SPIN_UNSET records
that it came too late, and the cpu backend then says so (runtime/cpu_backend.py). The OpenMP
side is set where the kernels load (runtime/host_build.py)."""
import os
import sys

SPIN_UNSET = "numpy" in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
