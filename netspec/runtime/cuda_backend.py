"""backend="cuda": the launch plan on CUDA devices through CuPy (an optional extra:
`pip install netspec[cuda12]` or `[cuda13]`, which bring CuPy and NVRTC, the runtime compiler
CuPy builds kernels.cu with; imported only when this backend is used).

kernels.cu is loaded as one `cupy.RawModule` per device used; one `cupy.cuda.Stream` per
logical GPU, on the device `device_map` gives it; events for the plan's cross-stream waits
(an event recorded on one device's stream can be waited for on another's). Buffers are CuPy
arrays viewing one allocation per region, on their logical GPU's device. A copy between
logical GPUs on different devices is a peer copy (cudaMemcpyPeerAsync, direct over NVLink/PCIe
where peer access can be enabled, else staged by the driver); on a shared device it is a
device-local copy. A thin adapter: the plan walk is runtime/plan_net.py's.

A training step makes the host wait nowhere: downloads are get(blocking=False) into pinned
memory, runs are ordered after one another by events (`_dev_barrier`), a uint8 batch crosses on
a copy stream per device into one of two slots (plan_net's _upload_u8) and is finished on the
device by kernel/colour.py's PREPARE_INPUT, and loss_and_grads(wait=False) with the update
after it is captured once (per slot) as one CUDA Graph (cupy.cuda.Stream.begin_capture/
end_capture, Graph.launch on logical GPU 0's stream, which the other streams join by an event)
and replayed: per-step data (the batch, the labels, the dropout noise keys) is uploaded to
fixed buffers before the launch, so nothing a graph captured changes.
Where capture is refused the steps run as launches (PlanNet._graphs_refused says why);
NETSPEC_GRAPHS=0 or CudaNet(..., graphs=False) turns graphs off.

Without a GPU, NETSPEC_CUDA_EMULATE=1 runs this same code on netspec's CPU emulator
(runtime/cuda_emulator: a model of the CuPy calls below, kernels.cu built with g++); devices
then say "emulated on the CPU" and `auto` never picks this backend.

Compiled modules are cached by CuPy itself, keyed by source, options and compiler; netspec
points that cache (CUPY_CACHE_DIR, when unset) at the kernels/cupy folder of its own cache
(netspec/cachedir.py).
"""
from __future__ import annotations

import functools
import os

import numpy as np

from ..cachedir import cache_dir
from ..codegen.compile import Compiled, build_error
from ..errors import BackendUnavailableError, KernelBuildError
from ..kernel.colour import PREPARE_INPUT, PREPARE_THREADS, prepare_grid
from ..kernel.dialects import CUDA
from .clock import DeviceClock
from .cuda_emulator import emulated_cupy, emulation_requested
from .plan_net import PlanNet


def _real_cupy():
    os.environ.setdefault("CUPY_CACHE_DIR", str(cache_dir("kernels") / "cupy"))
    import cupy
    return cupy


@functools.lru_cache(maxsize=1)
def _real_device_count() -> int:
    try:
        return int(_real_cupy().cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def cuda_emulated() -> bool:
    """True when NETSPEC_CUDA_EMULATE is set and no CUDA device answers: then this backend runs
    on netspec's CPU emulator (runtime/cuda_emulator), labelled "emulated on the CPU"."""
    return emulation_requested() and _real_device_count() == 0


def _cupy():
    """CuPy, or the emulator's model of the part of it used here (cuda_emulated())."""
    if cuda_emulated():
        return emulated_cupy()
    return _real_cupy()


def cuda_device_count() -> int:
    """CUDA devices that answer (emulated ones under cuda_emulated()), 0 when CuPy or a driver
    is missing."""
    try:
        cp = _cupy()
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def cuda_unavailable_reason() -> str | None:
    """Why the cuda backend can't run here, in words (None when it can, emulated or not): what
    GPU tests print when they skip."""
    if cuda_emulated():
        from .cuda_emulator.build import EmulatorBuildError, compiler
        try:
            compiler()
        except EmulatorBuildError as e:
            return str(e)
        return None
    try:
        cp = _real_cupy()
    except ImportError:
        return ("CuPy is not installed (pip install 'netspec[cuda12]' or '[cuda13]'; or set "
                "NETSPEC_CUDA_EMULATE=1 to run on the CPU emulator)")
    try:
        n = int(cp.cuda.runtime.getDeviceCount())
    except Exception as e:       # no driver, no device
        return f"no CUDA device answers ({type(e).__name__}: {e})"
    return None if n > 0 else "no CUDA device answers (0 devices)"


def missing_headers(error: str) -> str:
    """What to do when CuPy can't find the CUDA headers NVRTC needs (its RuntimeError
    "Failed to find CUDA headers" from compiling options)."""
    return (f"backend 'cuda': NVRTC can't compile kernels.cu: {error.strip()}. The CUDA "
            f"runtime headers (cuda_runtime.h) come from pip with CuPy's ctk extra: pip "
            f"install 'cupy-cuda12x[ctk]' (or 'cupy-cuda13x[ctk]'), i.e. the cuda-toolkit "
            f"wheel's cudart part (nvidia-cuda-runtime-cu12 on CUDA 12); or set CUDA_PATH to "
            f"a full CUDA toolkit")


# the options CudaNet gives cupy.RawModule (NVRTC); CuPy adds -ftz=true and -arch=sm_XX itself
NVRTC_OPTIONS = ("-std=c++11",)


class CudaNet(PlanNet):
    backend = "cuda"
    dialect = CUDA
    requires = ("CuPy with NVRTC and a CUDA device (pip install 'netspec[cuda12]' or "
                "'[cuda13]'), or NETSPEC_CUDA_EMULATE=1 and g++ for the CPU emulator",)

    auto_refusal = "no CUDA device answered"

    @classmethod
    def available(cls) -> bool:
        return cuda_device_count() > 0

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return cuda_unavailable_reason()

    @classmethod
    def device_count(cls) -> int:
        return max(cuda_device_count(), 1)

    @classmethod
    def kernel_timer(cls):
        """The OpenCL backend's: its tiles serve the CUDA rendering of the same plan (there
        is no NVRTC timer)."""
        from .opencl_backend import OpenCLNet
        return OpenCLNet.kernel_timer()

    def clock(self) -> CudaClock:
        return CudaClock(self)

    @classmethod
    def auto_choice(cls) -> str | None:
        if cuda_emulated():
            return None               # the emulator is asked for by name, never picked
        n = cuda_device_count()
        return f"{n} CUDA device(s) answered" if n else None

    sharing = "one stream each"

    def host_counters(self):
        """The emulator's counters of every CuPy call (bytes each way, host synchronisations,
        launches, device copies, graph launches), None on a real GPU."""
        return getattr(self.cp, "model", None) and self.cp.model.counters.snapshot()

    def _dev_list(self) -> list[str]:
        n = cuda_device_count()
        if n == 0:
            raise BackendUnavailableError("backend 'cuda': no CUDA device answers (or CuPy is not "
                               "installed: pip install 'netspec[cuda12]')")
        cp = _cupy()
        names = []
        for i in range(n):
            name = cp.cuda.runtime.getDeviceProperties(i)["name"]
            names.append(f"cuda:{i} {name.decode() if isinstance(name, bytes) else name}")
        return names

    def _dev_open(self) -> None:
        cp = self.cp = _cupy()
        used = sorted(set(self.device_map))
        self.dev = cp.cuda.Device(self.device_map[0])
        self.streams_by_gpu = {}
        props = [cp.cuda.runtime.getDeviceProperties(d) for d in used]
        self._max_threads = min(int(p["maxThreadsPerBlock"]) for p in props)
        self._max_shared = min(int(p["sharedMemPerBlock"]) for p in props)
        self._sm_count = min(int(p["multiProcessorCount"]) for p in props)
        # direct peer copies where the hardware allows (else the driver stages them)
        self.peer = {}
        for a in used:
            for b in used:
                if a != b and cp.cuda.runtime.deviceCanAccessPeer(a, b):
                    with cp.cuda.Device(a):
                        try:
                            cp.cuda.runtime.deviceEnablePeerAccess(b)
                        except cp.cuda.runtime.CUDARuntimeError:
                            pass            # already enabled (by another net)
                    self.peer[a, b] = True

    def _device(self, stream: int):
        return self.cp.cuda.Device(self.device_map[stream])

    def _stream(self, s: int):
        st = self.streams_by_gpu.get(s)
        if st is None:
            with self._device(s):
                st = self.streams_by_gpu[s] = self.cp.cuda.Stream(non_blocking=True)
        return st

    def _dev_sm_count(self) -> int:
        return self._sm_count

    def _dev_limits(self):
        return self._max_threads, self._max_shared, f"CUDA device '{self.device_name}'"

    def _dev_build(self, compiled: Compiled) -> dict:
        """name -> {device: function}: a CUDA module is loaded per device."""
        cp = self.cp
        kernels: dict = {name: {} for name in compiled.plan.kernels}
        for d in sorted(set(self.device_map)):
            with cp.cuda.Device(d) as dev:
                cc = dev.compute_capability
                try:
                    module = cp.RawModule(code=compiled.source(self.dialect).text,
                                           options=NVRTC_OPTIONS)
                    for name in compiled.plan.kernels:
                        kernels[name][d] = module.get_function(name)
                except cp.cuda.compiler.CompileException as e:
                    raise build_error(compiled.source(self.dialect), str(e),
                                      f"NVRTC (sm_{cc})") from None
                except RuntimeError as e:
                    if "CUDA headers" not in str(e):
                        raise
                    raise BackendUnavailableError(missing_headers(str(e))) from None
        return kernels

    def _dev_prepares_input(self) -> bool:
        return True

    def _dev_load_prepare(self, stream: int):
        """PREPARE_INPUT's function on logical GPU `stream`'s device, built the first time
        (before any capture: NVRTC and the module load are no stream work)."""
        d = self.device_map[stream]
        fns = self.__dict__.setdefault("_prepare_fns", {})
        if d not in fns:
            with self.cp.cuda.Device(d):
                try:
                    fns[d] = self.cp.RawModule(code=PREPARE_INPUT, options=NVRTC_OPTIONS) \
                        .get_function("netspec_prepare_input")
                except self.cp.cuda.compiler.CompileException as e:
                    raise KernelBuildError(f"NVRTC failed to build kernel/colour.py's "
                                           f"PREPARE_INPUT:\n{e}") from None
                except RuntimeError as e:
                    if "CUDA headers" not in str(e):
                        raise
                    raise BackendUnavailableError(missing_headers(str(e))) from None
        return fns[d]

    def _dev_prepare_input(self, stream, pixels, head, mean, consts, out, n, crop, base, wait):
        st = self._stream(stream)
        fn = self._dev_load_prepare(stream)
        with self._device(stream):
            self._wait(st, wait)
            fn(prepare_grid(n, crop), (PREPARE_THREADS,),
                   (pixels, head, mean, consts, out, np.uint32(n), np.uint32(crop),
                    np.uint32(base)), stream=st)
            return self._record(st)

    def _dev_alloc(self, gpu: int, nbytes: int):
        with self._device(gpu):
            return self.cp.cuda.alloc(nbytes)

    def _dev_view(self, region, offset: int, nbytes: int, dtype):
        n = max(nbytes // dtype.itemsize, 1)
        with self.cp.cuda.Device(region.device_id):
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
        d = self.device_map[stream]
        with self.cp.cuda.Device(d):
            self._wait(st, wait)
            grid = tuple(g // l for g, l in zip(kernel.global_size, kernel.local_size))
            handle[d](grid, tuple(kernel.local_size), tuple(args), stream=st)
            return self._record(st)

    def _dev_copy(self, stream, src, src_offset, dst, dst_offset, nbytes, wait):
        st = self._stream(stream)
        rt = self.cp.cuda.runtime
        with self._device(stream):
            self._wait(st, wait)
            s_dev, d_dev = src.data.device_id, dst.data.device_id
            if s_dev == d_dev:
                rt.memcpyAsync(dst.data.ptr + dst_offset, src.data.ptr + src_offset, nbytes,
                               rt.memcpyDeviceToDevice, st.ptr)
            else:
                rt.memcpyPeerAsync(dst.data.ptr + dst_offset, d_dev, src.data.ptr + src_offset,
                                   s_dev, nbytes, st.ptr)
            return self._record(st)

    def _dev_upload(self, stream, view, host, wait):
        st = self._stream(stream)
        with self._device(stream):
            self._wait(st, wait)
            flat = np.ascontiguousarray(host).reshape(-1).view(view.dtype)
            view[:flat.size].set(flat, stream=st)
            return self._record(st)

    def _dev_upload_copy(self, stream, view, host, wait):
        """On the device's copy stream (one per physical device, made on first use), after
        `wait`: the next step's batch crosses while the compute streams work."""
        d = self.device_map[stream]
        copies = self.__dict__.setdefault("_copy_streams", {})
        with self.cp.cuda.Device(d):
            st = copies.get(d)
            if st is None:
                st = copies[d] = self.cp.cuda.Stream(non_blocking=True)
            self._wait(st, wait)
            flat = np.ascontiguousarray(host).reshape(-1).view(view.dtype)
            view[:flat.size].set(flat, stream=st)
            return self._record(st)

    def _dev_wait(self, stream, events):
        with self._device(stream):
            self._wait(self._stream(stream), events)

    def _dev_mark(self, stream):
        with self._device(stream):
            return self._record(self._stream(stream))

    def _dev_download(self, stream, view, elements, wait, dtype=np.dtype(np.float32),
                      staged=False):
        """A non-blocking copy (CuPy's get(blocking=False)); staged reads land in pinned
        memory kept per view, so the host needn't wait (a copy into pageable memory makes the
        host wait for the stream, whatever `blocking` says)."""
        st = self._stream(stream)
        with self._device(stream):
            self._wait(st, wait)
            out = self._staging(view, elements, dtype) if staged else np.empty(elements, dtype)
            view[:elements].get(stream=st, out=out, blocking=False)
            return out

    def _staging(self, view, elements: int, dtype) -> np.ndarray:
        pinned = self.__dict__.setdefault("_pinned", {})
        key = (view.data.ptr, elements, np.dtype(dtype).str)
        if key not in pinned:
            mem = self.cp.cuda.alloc_pinned_memory(elements * np.dtype(dtype).itemsize)
            pinned[key] = (mem, np.frombuffer(mem, dtype, elements))
        return pinned[key][1]

    def _dev_finish(self) -> None:
        for d, st in self.streams_by_gpu.items():
            with self._device(d):
                st.synchronize()

    # CUDA Graphs: the origin is logical GPU 0's stream; every other stream joins the capture
    # by waiting for an event recorded there, and is joined back before it ends
    def _dev_can_capture(self) -> bool:
        return hasattr(self.cp.cuda.Stream, "begin_capture")

    def _dev_begin_capture(self) -> None:
        streams = [self._stream(g) for g in range(len(self.device_map))]
        origin = streams[0]
        origin.begin_capture()
        with self._device(0):
            fork = self._record(origin)
        for g, st in enumerate(streams[1:], 1):
            with self._device(g):
                st.wait_event(fork)

    def _dev_end_capture(self):
        origin = self._stream(0)
        for g in range(1, len(self.device_map)):
            with self._device(g):
                ev = self._record(self._stream(g))
            with self._device(0):
                origin.wait_event(ev)
        with self._device(0):
            return origin.end_capture()

    def _dev_graph_launch(self, graph) -> None:
        with self._device(0):
            graph.launch(stream=self._stream(0))

    def _dev_barrier(self) -> None:
        """Every stream waits, on the device, for an event recorded at the end of every other
        stream's work: no host synchronisation."""
        ends = {}
        for g, st in self.streams_by_gpu.items():
            with self._device(g):
                ends[g] = self._record(st)
        for g, st in self.streams_by_gpu.items():
            with self._device(g):
                self._wait(st, [ev for h, ev in ends.items() if h != g])


class CudaClock(DeviceClock):
    """`netspec bench` on cuda: timing events recorded on the step's stream around each launch
    and copy; the whole step from events recorded on every stream before and after it."""

    name = "CUDA events per kernel and copy"

    def __init__(self, net: CudaNet):
        self.net = net
        self.cp = net.cp
        self.pairs: list = []
        self._open: dict = {}
        net.step_hook = self._hook

    def _event(self, stream: int):
        # an event records only on a stream of its own device (else cudaEventRecord fails
        # with an invalid resource handle): create it with the stream's device current
        with self.net._device(stream):
            ev = self.cp.cuda.Event()            # timing enabled
            ev.record(self.net._stream(stream))
        return ev

    def _hook(self, when, step, ev):
        if step.kind not in ("launch", "copy"):
            return
        if when == "before":
            self._open[step.id] = self._event(step.gpu)
        else:
            self.pairs.append((step, self._open.pop(step.id), self._event(step.gpu)))

    def start(self):
        self.pairs = []
        self._streams = sorted(set(range(max(self.net.graph.gpus, 1))))
        self._t0 = [self._event(s) for s in self._streams]

    def step_ms(self, host_ms: float | None = None) -> float:
        """The device's time for the step (host_ms is not used)."""
        ends = [self._event(s) for s in self._streams]
        for e in ends:
            e.synchronize()
        t = self.cp.cuda.get_elapsed_time
        # elapsed times between events of one device only (logical GPUs may be on several)
        dev = [self.net.device_map[s] for s in self._streams]
        return max(t(a, b) for i, a in enumerate(self._t0) for j, b in enumerate(ends)
                   if dev[i] == dev[j])

    def stop(self):
        def timed():
            for step, a, b in self.pairs:
                b.synchronize()
                yield step, self.cp.cuda.get_elapsed_time(a, b)
        return self._tally(timed())
