"""The project's own error types. The CLI turns each into a clean message and exit status 2."""
from __future__ import annotations


class NetspecError(Exception):
    """Base of every error that netspec reports to a user (never a traceback)."""

    exit_code = 2


class DataError(NetspecError):
    """A data directory, cache or image set that can't be used."""


class RunError(NetspecError):
    """A run directory or checkpoint that can't be used."""


class KernelBuildError(NetspecError):
    """A generated kernel the device compiler rejected: the message holds the compiler's log
    and the generated source line it points at."""


class DeviceLimitError(NetspecError):
    """A network that needs more than a device has (work-group size, shared/local memory);
    the message names the layer and the limit."""


class DeviceError(NetspecError, ValueError):
    """A device that doesn't exist or can't be used (`devices=[...]`, `--devices`); the
    message names it and lists the devices there are."""


class BackendUnavailableError(NetspecError, RuntimeError):
    """A backend asked for by name that can't run here (no OpenCL device, no CUDA device or
    CuPy); the message names the backend and what to install. A RuntimeError too, as it was
    before it became a netspec error."""
