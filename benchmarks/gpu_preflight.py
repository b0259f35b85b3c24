"""The first 20 seconds of a lent GPU machine: is CUDA there, and can netspec's path reach it?

Prints the driver, CUDA runtime, NVRTC and CuPy versions, each device's name, compute
capability and SM count, whether NCCL is available to CuPy, then compiles one RawKernel with
the options netspec's CUDA backend gives NVRTC, launches it and checks its result. Exits 0 when
all of that worked, 1 with one line saying what failed otherwise, so benchmarks/gpu_session.sh
stops before spending device minutes on tests that can't run.

    python3 benchmarks/gpu_preflight.py
"""
from __future__ import annotations

import os
import sys
import time

os.environ["NETSPEC_CUDA_EMULATE"] = "0"

KERNEL = r"""
extern "C" __global__ void axpy(const float* __restrict__ x, float* __restrict__ y, float a,
                                int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] += a * x[i];
}
"""


def fail(what: str, err: BaseException) -> int:
    print(f"preflight: FAILED at {what}: {type(err).__name__}: {err}", flush=True)
    return 1


def main() -> int:
    t0 = time.perf_counter()
    try:
        import cupy as cp
    except Exception as e:       # noqa: BLE001 - any import failure ends the preflight
        return fail("import cupy", e)
    rt = cp.cuda.runtime
    try:
        n = rt.getDeviceCount()
        print(f"cupy {cp.__version__}; CUDA driver {rt.driverGetVersion()}, runtime "
              f"{rt.runtimeGetVersion()}; NVRTC {'.'.join(map(str, cp.cuda.nvrtc.getVersion()))}")
        for d in range(n):
            p = rt.getDeviceProperties(d)
            name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
            print(f"device {d}: {name}, sm_{p['major']}{p['minor']}, "
                  f"{p['multiProcessorCount']} SMs, {p['totalGlobalMem'] / 2**30:.1f} GiB")
    except Exception as e:       # noqa: BLE001
        return fail("reading the devices", e)
    try:
        from cupy.cuda import nccl
        print(f"nccl.available: {bool(nccl.available)}")
    except Exception as e:       # noqa: BLE001 - NCCL is optional; say so and go on
        print(f"nccl.available: False ({type(e).__name__}: {e})")
    try:
        sys.path.insert(0, os.getcwd())
        from netspec.runtime.cuda_backend import NVRTC_OPTIONS
        options = tuple(NVRTC_OPTIONS)
    except Exception:            # noqa: BLE001 - the module's name for them may change
        options = ("--std=c++11",)
    try:
        mod = cp.RawModule(code=KERNEL, options=options)
        axpy = mod.get_function("axpy")
        x = cp.arange(1000, dtype=cp.float32)
        y = cp.ones(1000, dtype=cp.float32)
        axpy((4,), (256,), (x, y, cp.float32(2.0), cp.int32(1000)))
        got = y.get()
    except Exception as e:       # noqa: BLE001
        return fail(f"compiling and launching a RawKernel (options {options})", e)
    want = 1.0 + 2.0 * __import__("numpy").arange(1000, dtype="float32")
    if not (got == want).all():
        print("preflight: FAILED: the RawKernel ran but computed the wrong values", flush=True)
        return 1
    print(f"preflight: ok in {time.perf_counter() - t0:.1f} s (RawKernel options {options})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
