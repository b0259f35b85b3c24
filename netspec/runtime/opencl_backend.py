"""backend="opencl": the launch plan on any OpenCL device through PyOpenCL (PoCL on the CPU
by default), one in-order command queue per logical GPU, events for the plan's cross-queue
waits. A thin adapter: the plan walk is runtime/plan_net.py's.

Device choice: see opencl_device.py (NETSPEC_OPENCL_DEVICE, else the first GPU, else PoCL's
CPU device).

Compiled programs are cached on disk under `cache_dir()` (the kernels/ folder of the user
cache, netspec/cachedir.py), keyed by a hash of the source, the device, its driver and the
platform, so the second build of a spec is a load. For a GPU driver that is the program binary
(`<hash>.clbin`). PoCL on the CPU is different: asking it for a binary makes it compile every
kernel for every work-group size up front (minutes for AlexNet), so there netspec
points PoCL's own kernel cache (POCL_CACHE_DIR, read when PoCL starts) at `cache_dir()/pocl`
instead, which keeps what PoCL actually compiled, keyed the same way.
"""
from __future__ import annotations

import hashlib
import math
import os
import statistics

import numpy as np

from ..codegen.compile import Compiled, build_error
from ..errors import BackendUnavailableError, DeviceLimitError
from ..kernel.dialects import OPENCL
from .clock import DeviceClock
from .opencl_device import _cl, cache_dir, describe_device, find_device, opencl_devices
from .plan_net import PlanNet


class OpenCLNet(PlanNet):
    backend = "opencl"
    dialect = OPENCL
    requires = ("PyOpenCL and an OpenCL device (pip install 'pyopencl[pocl]' for the CPU)",)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if find_device() is not None:
            return None
        try:
            _cl()
        except ImportError:
            return "PyOpenCL is not installed (pip install 'pyopencl[pocl]')"
        return "no OpenCL device found (install pocl for the CPU: pip install 'pyopencl[pocl]')"

    @classmethod
    def device_count(cls) -> int:
        try:
            return max(len(opencl_devices()), 1)
        except ImportError:
            return 1

    @classmethod
    def kernel_timer(cls) -> OpenCLKernelTimer | None:
        """The default device (find_device), timed by its profiling events."""
        try:
            dev = find_device()
        except Exception:        # no pyopencl: nothing to tune on
            dev = None
        return OpenCLKernelTimer(dev) if dev is not None else None

    def clock(self) -> OpenCLClock:
        return OpenCLClock(self)

    auto_refusal = "no OpenCL GPU"

    @classmethod
    def auto_choice(cls) -> str | None:
        """backend='auto' takes OpenCL only for a GPU (PoCL on the CPU is slower than NumPy's
        BLAS for these kernels)."""
        d = find_device(gpu_only=True)
        return f"OpenCL GPU '{d.name.strip()}'" if d is not None else None

    sharing = "one queue each"

    # -- the device primitives -------------------------------------------------------------
    def _dev_list(self) -> list[str]:
        chosen = self._options.get("device")
        self._cl_devices = [chosen] if chosen is not None else opencl_devices()
        if not self._cl_devices:
            raise BackendUnavailableError("backend 'opencl': no OpenCL device found (install pocl for "
                               "the CPU: pip install 'pyopencl[pocl]')")
        return [describe_device(d) for d in self._cl_devices]

    def _dev_open(self) -> None:
        cl = _cl()
        used = sorted(set(self.device_map))
        self.cl = cl
        self.devices_used = [self._cl_devices[d] for d in used]
        self.device = self._cl_devices[self.device_map[0]]
        self.ctx = cl.Context(self.devices_used)
        self.queues = {}
        self.align = max(max(d.mem_base_addr_align for d in self.devices_used) // 8, 1)

    def _queue(self, stream: int):
        q = self.queues.get(stream)
        if q is None:
            dev = self._cl_devices[self.device_map[stream]]
            q = self.queues[stream] = self.cl.CommandQueue(self.ctx, device=dev)
        return q

    @property
    def device_name(self) -> str:
        return ", ".join(f"{d.platform.name.strip()} / {d.name.strip()}"
                         for d in self.devices_used)

    def _is_pocl_cpu(self) -> bool:
        return all("portable" in d.platform.name.lower() and bool(d.type & self.cl.device_type.CPU)
                   for d in self.devices_used)

    def _dev_limits(self):
        return (min(d.max_work_group_size for d in self.devices_used),
                min(d.local_mem_size for d in self.devices_used),
                f"OpenCL device '{self.device_name}'")

    def _dev_build(self, compiled: Compiled) -> dict:
        cl, dev = self.cl, self.device
        devs = self.devices_used
        plan = compiled.plan
        if plan.alignment % self.align:
            raise DeviceLimitError(f"device '{self.device_name}' needs sub-buffers aligned to "
                                   f"{self.align} bytes; the plan aligns to {plan.alignment}")
        src = compiled.source(self.dialect).text
        ident = "\0".join([src, *(d.name for d in devs), dev.driver_version,
                           dev.platform.name, dev.platform.version, cl.VERSION_TEXT])
        key = hashlib.sha256(ident.encode()).hexdigest()[:32]
        path = cache_dir() / f"{key}.clbin"
        # a binary per program: only for one device (PoCL caches for itself, see above)
        store = not self._is_pocl_cpu() and len(devs) == 1
        program = None
        if store and path.exists():
            try:
                program = cl.Program(self.ctx, [dev], [path.read_bytes()]).build()
            except Exception:
                program = None        # stale or foreign binary: rebuild from source
        if program is None:
            program = cl.Program(self.ctx, src)
            try:
                program.build(options=["-cl-std=CL1.2"])
            except cl.RuntimeError as e:
                try:
                    log = program.get_build_info(dev, cl.program_build_info.LOG)
                except Exception:
                    log = str(e)
                raise build_error(compiled.source(self.dialect), log or str(e),
                                  f"OpenCL ({self.device_name})") from None
            try:
                if not store:
                    raise OSError("PoCL caches for itself")
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_bytes(program.get_info(cl.program_info.BINARIES)[0])
                os.replace(tmp, path)
            except OSError:
                pass                  # an unwritable cache only costs time
        kernels = {}
        for name, k in plan.kernels.items():
            knl = cl.Kernel(program, name)
            wg = min(knl.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, d)
                     for d in devs)
            if k.threads > wg:
                raise DeviceLimitError(
                    f"layer '{k.layer}': kernel {name} needs work-groups of {k.threads} "
                    f"work-items, but on '{self.device_name}' it can have at most {wg}; use "
                    f"smaller tiles for this layer")
            kernels[name] = knl
        return kernels

    def _dev_alloc(self, gpu: int, nbytes: int):
        return self.cl.Buffer(self.ctx, self.cl.mem_flags.READ_WRITE, nbytes)

    def _dev_view(self, region, offset: int, nbytes: int, dtype):
        return region.get_sub_region(offset, max(nbytes, 4))

    def _dev_launch(self, stream, handle, kernel, args, wait):
        handle.set_args(*args)
        return self.cl.enqueue_nd_range_kernel(self._queue(stream), handle, kernel.global_size,
                                               kernel.local_size, wait_for=wait or None)

    def _dev_copy(self, stream, src, src_offset, dst, dst_offset, nbytes, wait):
        return self.cl.enqueue_copy(self._queue(stream), dst, src, byte_count=nbytes,
                                    src_offset=src_offset, dst_offset=dst_offset,
                                    wait_for=wait or None)

    def _dev_upload(self, stream, view, host, wait):
        return self.cl.enqueue_copy(self._queue(stream), view, host, is_blocking=False,
                                    wait_for=wait or None)

    def _dev_download(self, stream, view, elements, wait, dtype=np.dtype(np.float32),
                      staged=False):
        out = np.empty(elements, dtype)
        self.cl.enqueue_copy(self._queue(stream), out, view, is_blocking=False,
                             wait_for=wait or None)
        return out

    def _dev_finish(self) -> None:
        for q in self.queues.values():
            q.finish()


class OpenCLClock(DeviceClock):
    """`netspec bench` on opencl: the profiling events of every launch and copy."""

    name = "OpenCL profiling events per kernel and copy"

    def __init__(self, net: OpenCLNet):
        cl = net.cl
        self.net = net
        gpus = net.graph.gpus if hasattr(net.graph, "gpus") else 1
        # Queues are created on first use; put a profiling-enabled one in their place. One
        # queue serves every logical GPU while timing: kernels of two queues would share the
        # CPU's cores and each event would then time both (the plan's order stays valid, as
        # an in-order queue runs every step after its dependencies).
        net._dev_finish()
        queue = cl.CommandQueue(net.ctx,
                                properties=cl.command_queue_properties.PROFILING_ENABLE)
        for g in range(max(gpus, 1)):
            net.queues[g] = queue
        self.events: list = []
        net.step_hook = self._hook

    def _hook(self, when, step, ev):
        if when == "after" and ev is not None and step.kind in ("launch", "copy"):
            self.events.append((step, ev))

    def start(self):
        self.events = []

    def stop(self):
        self.net._dev_finish()
        return self._tally((step, (ev.profile.end - ev.profile.start) * 1e-6)
                           for step, ev in self.events)


def device_identity(dev) -> str:
    """An OpenCL device in words: platform, its version, device, driver, compute units."""
    p = dev.platform
    return " | ".join(s.strip() for s in (p.name, p.version, dev.name, dev.driver_version,
                                          f"{dev.max_compute_units} units"))


class OpenCLKernelTimer:
    """autotune's `KernelTimer` on one OpenCL device: the calls rendered in OpenCL C, built,
    and timed by their profiling events on a queue of their own."""

    def __init__(self, dev):
        self.dev = dev
        self.identity = device_identity(dev)
        self._ctx = self._queue = None

    def time(self, calls: list, sizes: dict, repeats: int) -> float:
        cl = _cl()
        if self._ctx is None:
            self._ctx = cl.Context([self.dev])
            self._queue = cl.CommandQueue(
                self._ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
        if any(c.kernel.threads > self.dev.max_work_group_size
               or c.kernel.shared_bytes > self.dev.local_mem_size for c in calls):
            return math.inf
        src = OPENCL.prelude + "".join("\n" + c.kernel.render(OPENCL) for c in calls)
        try:
            prog = cl.Program(self._ctx, src).build()
        except cl.Error:
            return math.inf
        rng = np.random.default_rng(0)
        bufs = {}
        for call in calls:
            for role in call.args:
                if role not in bufs:
                    host = rng.standard_normal(sizes[role]).astype(np.float32)
                    bufs[role] = cl.Buffer(self._ctx, cl.mem_flags.READ_WRITE
                                           | cl.mem_flags.COPY_HOST_PTR, hostbuf=host)
        kernels = [(getattr(prog, call.kernel.name), call) for call in calls]
        times = []
        for rep in range(repeats + 1):
            events = [k(self._queue, call.kernel.global_size, call.kernel.local_size,
                        *[bufs[r] for r in call.args]) for k, call in kernels]
            events[-1].wait()
            if rep:
                times.append(sum((e.profile.end - e.profile.start) * 1e-6 for e in events))
        return statistics.median(times)
