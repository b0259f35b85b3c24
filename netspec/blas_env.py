"""Process-wide BLAS thread settings, made when netspec is imported (foundation: imports
nothing from netspec).

OpenBLAS's idle threads otherwise spin for ~0.1 s after each GEMM, taking a core from
whatever runs next (the numpy backend's elementwise code; the cpu backend runs BLAS on one
thread and splits its GEMMs itself, runtime/host_gemm.py). OpenBLAS reads
OPENBLAS_THREAD_TIMEOUT once, when NumPy loads it, so this only works when netspec is
imported before NumPy. The OpenMP side is set where the host kernels load
(runtime/host_build.py)."""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
