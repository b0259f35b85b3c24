"""netspec: a declarative compiler for convolutional networks."""
import os
import sys

__version__ = "0.1.0"

# The cpu backend alternates BLAS GEMMs and OpenMP kernels on the same cores. OpenBLAS's idle
# threads otherwise spin for ~0.1 s after each GEMM, taking a core from the next kernel (it
# halved im2col's speed on a 2-core machine). Read once, when NumPy loads OpenBLAS; only
# shortens the spin. The OpenMP side is set where the kernels load (runtime/host_build.py).
# Too late when NumPy came first: the cpu backend then says so (runtime/cpu_backend.py).
BLAS_SPIN_UNSET = "numpy" in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def build(spec, backend="auto", *, seed=0, dtype=None, devices=None):
    """Compile a spec (path, text, Spec or Graph) into a runnable network with initialised
    parameters; `devices` maps its logical GPUs onto physical devices (e.g. [0, 1]); see
    netspec.runtime.build."""
    import numpy as np

    from .runtime import build as _build
    return _build(spec, backend, seed=seed, dtype=np.float32 if dtype is None else dtype,
                  devices=devices)


__all__ = ["__version__", "build"]
