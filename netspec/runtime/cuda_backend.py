"""backend="cuda": the launch plan on a CUDA device through CuPy (an optional extra:
`pip install netspec[cuda12]` or `[cuda13]`; imported only when this backend is used).

kernels.cu is loaded as one `cupy.RawModule`; one `cupy.cuda.Stream` per logical GPU, events
for the plan's cross-stream waits; buffers are CuPy arrays viewing one allocation per region.
All logical GPUs run on the current CUDA device (the plan's copies between them are
device-to-device copies). A thin adapter: the plan walk is codegen/executor.py's.

Compiled modules are cached by CuPy itself, keyed by source, options and compiler; netspec
points that cache (CUPY_CACHE_DIR, when unset) at `cache_dir()/cupy`.
"""
from __future__ import annotations

import os

import numpy as np

from ..codegen.compile import Compiled, build_error
from ..codegen.executor import PlanNet
from .opencl_backend import cache_dir


def _cupy():
    os.environ.setdefault("CUPY_CACHE_DIR", str(cache_dir() / "cupy"))
    import cupy
    return cupy


def cuda_device_count() -> int:
    """CUDA devices that answer, 0 when CuPy or a driver is missing."""
    try:
        cp = _cupy()
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


class CudaNet(PlanNet):
    backend = "cuda"
    dialect = "cuda"

    auto_refusal = "no CUDA device answered"

    @classmethod
    def available(cls) -> bool:
        return cuda_device_count() > 0

    @classmethod
    def auto_choice(cls) -> str | None:
        n = cuda_device_count()
        return f"{n} CUDA device(s) answered" if n else None

    def _dev_open(self) -> None:
        if cuda_device_count() == 0:
            raise RuntimeError("backend 'cuda': no CUDA device answers (or CuPy is not "
                               "installed: pip install 'netspec[cuda12]')")
        self.cp = _cupy()
        self.dev = self.cp.cuda.Device()
        self.streams = {}
        props = self.cp.cuda.runtime.getDeviceProperties(self.dev.id)
        name = props["name"]
        self.device_name = name.decode() if isinstance(name, bytes) else str(name)
        self._max_threads = int(props["maxThreadsPerBlock"])
        self._max_shared = int(props["sharedMemPerBlock"])

    def _stream(self, s: int):
        st = self.streams.get(s)
        if st is None:
            st = self.streams[s] = self.cp.cuda.Stream(non_blocking=True)
        return st

    def _dev_limits(self):
        return self._max_threads, self._max_shared, f"CUDA device '{self.device_name}'"

    def _dev_build(self, compiled: Compiled) -> dict:
        cp = self.cp
        major, minor = self.dev.compute_capability[:1], self.dev.compute_capability[1:]
        try:
            module = cp.RawModule(code=compiled.cuda_source, options=("-std=c++11",))
            kernels = {name: module.get_function(name) for name in compiled.plan.kernels}
        except cp.cuda.compiler.CompileException as e:
            raise build_error(compiled.cuda, str(e), f"NVRTC (sm_{major}{minor})") from None
        return kernels

    def _dev_alloc(self, gpu: int, nbytes: int):
        return self.cp.cuda.alloc(nbytes)

    def _dev_view(self, region, offset: int, nbytes: int, dtype):
        n = max(nbytes // dtype.itemsize, 1)
        return self.cp.ndarray((n,), dtype=dtype, memptr=region + offset)

    def _wait(self, stream, wait):
        for ev in wait:
            if ev is not None:
                stream.wait_event(ev)

    def _record(self, stream):
        ev = self.cp.cuda.Event(disable_timing=True)
        ev.record(stream)
        return ev

    def _dev_launch(self, stream, handle, kernel, args, wait):
        st = self._stream(stream)
        self._wait(st, wait)
        grid = tuple(g // l for g, l in zip(kernel.global_size, kernel.local_size))
        handle(grid, tuple(kernel.local_size), tuple(args), stream=st)
        return self._record(st)

    def _dev_copy(self, stream, src, src_offset, dst, dst_offset, nbytes, wait):
        st = self._stream(stream)
        self._wait(st, wait)
        self.cp.cuda.runtime.memcpyAsync(dst.data.ptr + dst_offset, src.data.ptr + src_offset,
                                         nbytes, self.cp.cuda.runtime.memcpyDeviceToDevice,
                                         st.ptr)
        return self._record(st)

    def _dev_upload(self, stream, view, host, wait):
        st = self._stream(stream)
        self._wait(st, wait)
        flat = np.ascontiguousarray(host).reshape(-1).view(view.dtype)
        view[:flat.size].set(flat, stream=st)
        return self._record(st)

    def _dev_download(self, stream, view, elements, wait, dtype=np.dtype(np.float32)):
        st = self._stream(stream)
        self._wait(st, wait)
        out = np.empty(elements, dtype)
        view[:elements].get(stream=st, out=out)
        return out

    def _dev_finish(self) -> None:
        for st in self.streams.values():
            st.synchronize()
