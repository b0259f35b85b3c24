"""netspec: a declarative compiler for convolutional networks."""

__version__ = "0.1.0"

from . import blas_env  # noqa: F401,E402  (before anything loads NumPy: see there)


def build(spec, backend="auto", *, seed=0, dtype=None, devices=None):
    """Compile a spec (path, text, Spec or Graph) into a runnable network with initialised
    parameters; `devices` maps its logical GPUs onto physical devices (e.g. [0, 1]); see
    netspec.runtime.build."""
    import numpy as np

    from .runtime import build as _build
    return _build(spec, backend, seed=seed, dtype=np.float32 if dtype is None else dtype,
                  devices=devices)


__all__ = ["__version__", "build"]
