"""A CPU model of exactly the part of CuPy that netspec/runtime/cuda_backend.py calls, so that
the real `CudaNet` runs unchanged when no CUDA device answers (NETSPEC_CUDA_EMULATE=1):

    cupy.cuda.Device (context manager, .id, .compute_capability, .synchronize)
    cupy.cuda.Stream(non_blocking=True)  .wait_event .synchronize .ptr
        .begin_capture .end_capture -> Graph (.launch(stream));  .is_capturing
    cupy.cuda.Event(disable_timing=...)  .record .synchronize .done;  cupy.cuda.get_elapsed_time
    cupy.cuda.alloc -> MemoryPointer (+ offset, .ptr, .device_id);  cupy.cuda.alloc_pinned_memory
    cupy.ndarray((n,), dtype, memptr=...)  [:k]  .set(host, stream)
        .get(stream, out, blocking)  .data
    cupy.RawModule(code=..., options=...).get_function(name)(grid, block, args, stream=...)
    cupy.cuda.runtime: getDeviceCount getDeviceProperties deviceCanAccessPeer
        deviceEnablePeerAccess memcpyAsync memcpyPeerAsync memcpyDeviceToDevice CUDARuntimeError
    cupy.cuda.compiler.CompileException

It is built to catch what a GPU would punish, by failing loudly (`EmulatorFault`) or by
making the result wrong where a GPU would make it wrong only sometimes:

- new device memory is filled with NaN (a read of memory nobody wrote poisons the result), so
  is every block's shared memory when the block starts, and so is the host array a `get`
  fills, until the copy has run;
- a launch refuses an array on another device than the launch's, a stream of another device,
  and a function loaded on another device than the current one; an event records only on a
  stream of its own device; `set`/`get` take only a stream of the array's device;
- a view past the end of its allocation, and a copy past the end of either side, is refused;
  a 256-byte red zone after every allocation is checked after every launch (a kernel writing
  just past its buffer is caught);
- kernel arguments are marshalled as CuPy does (a Python float is float64, a Python int is
  int64, a NumPy scalar keeps its dtype) and must match the kernel's parameter types exactly
  (the C++ compiler reports them), arrays' dtypes included;
- a `__syncthreads` reached by only part of a block is an error (see cuda_emulation.h);
  `settings.thread_order = "reverse"` runs each block's threads in reverse order, a second pass
  that makes order-dependent races between threads show;
- work is deferred: a stream's launches and copies run only when the host synchronizes (a
  stream, an event or a device). Then every stream's queue runs in an order that respects the
  recorded events and is otherwise adversarial: the ready stream that was created last runs
  first, as far as it can (`settings.stream_order = "first"` prefers the first), so a missing
  `wait_event` between logical GPUs reads data that is not written yet. After a fault every
  queued operation is dropped (a GPU's context would be lost);
- `settings.devices` (default 2, NETSPEC_CUDA_EMULATE_DEVICES) devices answer, so the peer-copy
  path between devices runs;
- a host synchronisation waits as CUDA's does: a stream's for that stream, an event's for its
  record, a device's for everything; `get` blocks (and counts as a sync) unless
  blocking=False *and* `out` is pinned memory (a copy into pageable memory waits for its
  stream whatever CuPy is told);
- CUDA Graphs: while a stream captures, its work (and the work of streams that joined by
  waiting on a captured event) is recorded, not run; a synchronisation, an allocation, a
  host read or a pageable copy, work on the legacy stream, or a wait on an event from outside
  the capture is refused (cudaErrorStreamCaptureUnsupported / Isolation) and invalidates it;
  end_capture refuses a fork not joined back; a launch replays the graph as one operation;
- `counters` counts every call the host makes of the device (Counters: bytes each way,
  uploads, downloads, syncs, launches, device copies, graph launches): what `netspec bench
  --backend cuda` prints per step.

What it cannot see: races between blocks of one launch (blocks run one after another); a race
between threads of a block that neither thread order exposes; an out-of-bounds access that
lands inside a live allocation (a view's neighbour in the same arena, say); warp-level
behaviour; peer-access topology (every pair of devices can reach each other); the legacy
default stream's implicit synchronization (stream=None runs at once); memory limits; and
anything about speed: timing events measure the CPU's emulation; CUDA's rules on graph
capture beyond those above (per-thread capture modes, captures across threads).
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ...cachedir import cache_dir
from .build import EmulatorBuildError, KernelLibrary, build_library, kernel_entries

DEVICE_NAME = "netspec CUDA emulator (emulated on the CPU)"
RED_ZONE = 256
ALIGN = 256


class EmulatorFault(RuntimeError):
    """What a GPU would punish (a crash, a hang or wrong numbers), caught by the emulator."""


class CUDARuntimeError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class CUDADriverError(RuntimeError):
    pass


class CompileException(Exception):
    pass


class _Settings:
    def __init__(self):
        self.devices = int(os.environ.get("NETSPEC_CUDA_EMULATE_DEVICES", "2"))
        self.thread_order = os.environ.get("NETSPEC_CUDA_EMULATE_THREADS", "forward")
        self.stream_order = os.environ.get("NETSPEC_CUDA_EMULATE_STREAMS", "last")
        self.cache: Path | None = None


settings = _Settings()


@dataclass
class Counters:
    """What the host asked of the (emulated) GPU, counted at each CuPy call: bytes uploaded
    (host -> device, `ndarray.set`) and downloaded (device -> host, `ndarray.get`), the uploads
    and downloads themselves, host synchronisations (a stream's, an event's or a device's
    `synchronize`, a blocking `get`, work on the legacy default stream), kernel launches, device
    copies (memcpyAsync, memcpyPeerAsync) and CUDA Graph launches. A graph's replayed kernels
    are not launches of the host's: it makes one call. `since(earlier)` gives the difference."""

    h2d_bytes: int = 0
    d2h_bytes: int = 0
    uploads: int = 0
    downloads: int = 0
    syncs: int = 0
    launches: int = 0
    device_copies: int = 0
    graph_launches: int = 0

    def snapshot(self) -> Counters:
        return dataclasses.replace(self)

    def since(self, earlier: Counters) -> Counters:
        return Counters(**{f.name: getattr(self, f.name) - getattr(earlier, f.name)
                           for f in dataclasses.fields(self)})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


counters = Counters()
_lock = threading.RLock()
_device_stack: list[int] = []
# live allocations and streams, by address; freed when nothing refers to them any more
_allocations: weakref.WeakValueDictionary[int, _Allocation] = weakref.WeakValueDictionary()
_streams_by_ptr: weakref.WeakValueDictionary[int, Stream] = weakref.WeakValueDictionary()
_next_stream = [0]
_peer: set[tuple[int, int]] = set()
_next_base = [0]


def _current() -> int:
    return _device_stack[-1] if _device_stack else 0


# -- devices ---------------------------------------------------------------------------------
class Device:
    def __init__(self, device: int | None = None):
        self.id = _current() if device is None else int(device)
        if not 0 <= self.id < settings.devices:
            raise CUDARuntimeError(101, f"cudaErrorInvalidDevice: invalid device ordinal "
                                        f"{self.id} (the emulator has {settings.devices})")

    def __enter__(self):
        _device_stack.append(self.id)
        return self

    def __exit__(self, *exc):
        _device_stack.pop()

    @property
    def compute_capability(self) -> str:
        return "90"

    def synchronize(self) -> None:
        _host_sync("Device.synchronize")

    def __repr__(self):
        return f"<CUDA Device {self.id} (emulated)>"


def getDeviceCount() -> int:
    return settings.devices


def getDeviceProperties(i: int) -> dict:
    Device(i)
    return {"name": DEVICE_NAME.encode(), "maxThreadsPerBlock": 1024,
            "sharedMemPerBlock": 48 * 1024, "maxThreadsDim": (1024, 1024, 64),
            "maxGridSize": (2 ** 31 - 1, 65535, 65535), "major": 9, "minor": 0,
            "multiProcessorCount": 132, "totalGlobalMem": 16 * 2 ** 30, "warpSize": 32}


def deviceCanAccessPeer(a: int, b: int) -> int:
    Device(a), Device(b)
    return int(a != b)


def deviceEnablePeerAccess(peer: int) -> None:
    Device(peer)
    pair = (_current(), peer)
    if pair in _peer:
        raise CUDARuntimeError(704, "cudaErrorPeerAccessAlreadyEnabled")
    _peer.add(pair)


# -- memory ----------------------------------------------------------------------------------
class _Allocation:
    def __init__(self, device: int, nbytes: int):
        self.device, self.nbytes = device, nbytes
        words = (nbytes + RED_ZONE + 3) // 4
        self.buf = np.full(words, np.nan, np.float32)       # NaN-poisoned, red zone too
        self.host = self.buf.ctypes.data
        self.base = _next_base[0] + (device + 1) * 2 ** 44  # a device's addresses are its own
        _next_base[0] += (nbytes + RED_ZONE + ALIGN - 1) // ALIGN * ALIGN
        self.zone = self.buf.view(np.uint8)[nbytes:nbytes + RED_ZONE].copy()

    def check_red_zone(self, what: str) -> None:
        if not np.array_equal(self.buf.view(np.uint8)[self.nbytes:self.nbytes + RED_ZONE],
                              self.zone):
            raise EmulatorFault(f"{what} wrote past the end of a {self.nbytes}-byte allocation "
                                f"on device {self.device}")


def _find(ptr: int, nbytes: int, what: str) -> tuple[_Allocation, int]:
    """The allocation holding [ptr, ptr + nbytes) and the offset; EmulatorFault otherwise."""
    for a in list(_allocations.values()):
        if a.base <= ptr < a.base + max(a.nbytes, 1):
            off = ptr - a.base
            if off + nbytes > a.nbytes:
                raise EmulatorFault(f"{what}: {nbytes} bytes at offset {off} run past the end "
                                    f"of a {a.nbytes}-byte allocation on device {a.device}")
            return a, off
    raise EmulatorFault(f"{what}: address {ptr:#x} is in no live allocation")


class MemoryPointer:
    def __init__(self, mem: _Allocation, offset: int):
        self.mem, self.offset = mem, int(offset)

    @property
    def ptr(self) -> int:
        return self.mem.base + self.offset

    @property
    def device_id(self) -> int:
        return self.mem.device

    @property
    def device(self) -> Device:
        return Device(self.mem.device)

    def __add__(self, n: int) -> MemoryPointer:
        return MemoryPointer(self.mem, self.offset + int(n))

    def __int__(self):
        return self.ptr


def alloc(nbytes: int) -> MemoryPointer:
    _refuse_in_capture("cupy.cuda.alloc (an allocation)")
    with _lock:
        a = _Allocation(_current(), int(nbytes))
        _allocations[a.base] = a
        return MemoryPointer(a, 0)


class ndarray:
    """A 1-D contiguous device array viewing an allocation (what cuda_backend.py makes)."""

    def __init__(self, shape, dtype=np.float32, memptr: MemoryPointer | None = None):
        self.shape = tuple(int(s) for s in (shape if isinstance(shape, tuple) else (shape,)))
        self.dtype = np.dtype(dtype)
        self.size = int(np.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize
        if memptr is None:
            memptr = alloc(self.nbytes)
        if memptr.offset % self.dtype.itemsize:
            raise EmulatorFault(f"a {self.dtype} view at byte offset {memptr.offset} is "
                                f"misaligned")
        if memptr.offset < 0 or memptr.offset + self.nbytes > memptr.mem.nbytes:
            raise EmulatorFault(f"a view of {self.nbytes} bytes at offset {memptr.offset} runs "
                                f"past its {memptr.mem.nbytes}-byte allocation on device "
                                f"{memptr.device_id}")
        self.data = memptr

    @property
    def device(self) -> Device:
        return Device(self.data.device_id)

    def _host(self) -> np.ndarray:
        a = self.data.mem
        return a.buf.view(np.uint8)[self.data.offset:self.data.offset + self.nbytes] \
            .view(self.dtype)

    def __getitem__(self, key):
        if not isinstance(key, slice) or len(self.shape) != 1:
            raise NotImplementedError("the emulator's ndarray takes only 1-D slices [a:b]")
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            raise NotImplementedError("the emulator's ndarray takes only contiguous slices")
        return ndarray((max(stop - start, 0),), self.dtype,
                       self.data + start * self.dtype.itemsize)

    def _check_stream(self, stream, what: str):
        if stream is not None and stream.device != self.data.device_id:
            raise EmulatorFault(f"{what} of an array on device {self.data.device_id} on a "
                                f"stream of device {stream.device}")

    def set(self, arr, stream=None) -> None:
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, not {type(arr)}")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        self._check_stream(stream, "set")
        _refuse_in_capture("ndarray.set (a copy from pageable host memory)")
        data = np.ascontiguousarray(arr).copy()      # pageable memory: read at the call
        dst = self
        counters.uploads += 1
        counters.h2d_bytes += self.nbytes

        def run():
            dst._host()[...] = data.reshape(-1)
        _enqueue(stream, "set", run)

    def get(self, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
        """CuPy's: the copy runs on `stream`; blocking (the default) synchronises that stream
        before returning, as cupy/_core/core.pyx does, so it counts as a host synchronisation.
        With blocking=False `out` is NaN until the host synchronises."""
        _refuse_in_capture("ndarray.get (a read by the host)")
        pageable = out is None or not _is_pinned(out)
        if out is None:
            out = np.empty(self.shape, self.dtype)
        if out.shape != self.shape or out.dtype != self.dtype:
            raise ValueError(f"out: {out.dtype}{out.shape} for a {self.dtype}{self.shape} "
                             f"array")
        self._check_stream(stream, "get")
        out.view(np.uint8)[...] = 0xFF            # NaN until the copy has run
        src = self

        def run():
            out.reshape(-1)[...] = src._host()
        counters.downloads += 1
        counters.d2h_bytes += self.nbytes
        _enqueue(stream, "get", run)
        if (blocking or pageable) and stream is not None:
            # a copy into pageable memory waits for the stream even when asked not to block
            # (CUDA stages it through a pinned buffer once the stream gets there)
            _host_sync("a blocking ndarray.get" if blocking else
                       "ndarray.get into pageable memory", lambda: not stream.queue)
        return out


# -- pinned host memory ----------------------------------------------------------------------
_pinned: weakref.WeakValueDictionary[int, PinnedMemory] = weakref.WeakValueDictionary()


class PinnedMemory(bytearray):
    """Page-locked host memory (cupy.cuda.alloc_pinned_memory): a device->host copy into it
    can run without the host waiting. Has the buffer protocol, like CuPy's
    PinnedMemoryPointer (numpy.frombuffer(mem, dtype, count))."""

    def __init__(self, nbytes: int):
        super().__init__(max(int(nbytes), 1))
        self.size = int(nbytes)
        self.ptr = np.frombuffer(self, np.uint8).ctypes.data
        _pinned[self.ptr] = self


def alloc_pinned_memory(nbytes: int) -> PinnedMemory:
    _refuse_in_capture("alloc_pinned_memory (an allocation)")
    return PinnedMemory(nbytes)


def _is_pinned(a: np.ndarray) -> bool:
    at = a.ctypes.data
    return any(m.ptr <= at and at + a.nbytes <= m.ptr + m.size for m in _pinned.values())


# -- streams and events ----------------------------------------------------------------------
class Stream:
    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False):
        with _lock:
            self.device = _current()
            self.queue: list = []
            self.order = _next_stream[0]
            _next_stream[0] += 1
            self.ptr = 0x5000 + self.order
            self.capture: _Capture | None = None
            _streams_by_ptr[self.ptr] = self

    def _push(self, item) -> None:
        """Queue an operation, or, while this stream captures, add it to the graph."""
        if self.capture is not None:
            self.capture.items.append((self, item))
        else:
            self.queue.append(item)

    def wait_event(self, event: Event) -> None:
        target = event._pending_record        # the latest record at the time of the call
        if target is None:
            return
        if target.capture in _captures and self.capture is None:
            self.capture = target.capture      # waiting on a captured event joins the capture
            target.capture.streams.append(self)
        elif self.capture is not None and target.capture is not self.capture \
                and not target.done:
            _invalidate(self.capture)
            raise CUDARuntimeError(905, "cudaErrorStreamCaptureIsolation: a capturing stream "
                                        "waited for an event recorded outside the capture")
        if self.capture is not None and target.capture is self.capture:
            self.capture.waited.setdefault(self, set()).add(target)
        self._push(("wait", target, None))

    def is_capturing(self) -> bool:
        return self.capture is not None

    def begin_capture(self, mode=None) -> None:
        """Start capturing this stream's work into a CUDA Graph (cudaStreamBeginCapture): until
        end_capture, nothing it or a stream that joins it (by waiting on an event recorded in
        the capture) is given runs; it is recorded. What CUDA refuses meanwhile (a host
        synchronisation, an allocation, a copy to or from pageable host memory, work on the
        legacy stream) raises cudaErrorStreamCaptureUnsupported and invalidates the capture."""
        if self.capture is not None:
            raise CUDARuntimeError(900, "cudaErrorIllegalState: the stream is already capturing")
        self.capture = _Capture(self)
        _captures.append(self.capture)

    def end_capture(self) -> Graph:
        """The captured graph (cudaStreamEndCapture). Every stream that joined must have been
        joined back: the origin waited for an event recorded after its last work there
        (else cudaErrorStreamCaptureUnjoined)."""
        cap = self.capture
        if cap is None or cap.origin is not self:
            raise CUDARuntimeError(900, "cudaErrorIllegalState: end_capture on a stream that "
                                        "did not begin one")
        for st in cap.streams:
            st.capture = None
        _captures.remove(cap)
        if not cap.live:
            raise CUDARuntimeError(901, f"cudaErrorStreamCaptureInvalidated: {cap.why}")
        waited = cap.waited.get(self, set())
        for st in cap.streams[1:]:
            last = [item for owner, item in cap.items if owner is st]
            if last and not (last[-1][0] == "record" and last[-1][1] in waited):
                raise CUDARuntimeError(904, "cudaErrorStreamCaptureUnjoined: a stream joined "
                                            "the capture and was not joined back")
        return Graph(cap.items, list(cap.streams))

    def record(self, event: Event | None = None) -> Event:
        event = event or Event()
        event.record(self)
        return event

    def synchronize(self) -> None:
        _host_sync("Stream.synchronize", lambda: not self.queue)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class _Record:
    def __init__(self, event: Event, capture: _Capture | None = None):
        self.event, self.done, self.time = event, False, None
        self.capture = capture


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False):
        self.device = _current()
        self.timing = not disable_timing
        self._pending_record: _Record | None = None

    def record(self, stream: Stream | None = None) -> None:
        if stream is None:
            _drain()
            stream = _null_stream()
        if stream.device != self.device:
            raise EmulatorFault(f"an event of device {self.device} recorded on a stream of "
                                f"device {stream.device} (cudaEventRecord: "
                                f"invalid resource handle)")
        rec = self._pending_record = _Record(self, stream.capture)
        stream._push(("record", rec, None))

    @property
    def done(self) -> bool:
        return self._pending_record is None or self._pending_record.done

    def synchronize(self) -> None:
        _host_sync("Event.synchronize", lambda: self.done)

    def query(self) -> bool:
        _refuse_in_capture("Event.query")
        return self.done


def get_elapsed_time(start: Event, end: Event) -> float:
    """Milliseconds between two completed timing events of one device (the emulator refuses
    events of two devices, which have no common clock)."""
    if start.device != end.device:
        raise EmulatorFault(f"elapsed time between events of devices {start.device} and "
                            f"{end.device}")
    for e in (start, end):
        if not e.timing:
            raise CUDARuntimeError(6, "cudaErrorInvalidResourceHandle: an event without timing")
        if e._pending_record is None or not e._pending_record.done:
            raise CUDARuntimeError(600, "cudaErrorNotReady: the event has not completed")
    return (end._pending_record.time - start._pending_record.time) * 1e3


_null_streams: dict[int, Stream] = {}


def _null_stream() -> Stream:
    d = _current()
    if d not in _null_streams:
        _null_streams[d] = Stream(null=True)
    return _null_streams[d]


def _host_sync(what: str, done=None) -> None:
    """The host waits for the device (until done(), or for everything): counted, refused while
    a stream captures a graph."""
    _refuse_in_capture(what)
    counters.syncs += 1
    _drain(done)


def _enqueue(stream: Stream | None, what: str, run) -> None:
    if stream is None:                     # the legacy default stream: ordered after all work
        _host_sync(f"{what} on the legacy default stream")
        run()
    else:
        stream._push(("op", run, what))


def _drain(done=None) -> None:
    """Run queued operations, respecting each stream's order and the recorded events, until
    done() (a stream's or an event's synchronize waits for no more than CUDA's does), or all
    of them; among the streams that can run, the last created (or, stream_order 'first', the
    first) runs as far as it can."""
    with _lock:
        order = sorted(_streams_by_ptr.values(), key=lambda s: -s.order if settings.stream_order == "last"
                       else s.order)
        while done is None or not done():
            ran = False
            pending = False
            for s in order:
                while s.queue:
                    pending = True
                    kind, obj, _ = s.queue[0]
                    if kind == "wait" and not obj.done:
                        break
                    s.queue.pop(0)
                    ran = True
                    if kind == "record":
                        obj.done, obj.time = True, time.perf_counter()
                    elif kind == "op":
                        try:
                            obj()
                        except BaseException:
                            # a GPU's context is lost after a fault: drop all queued work,
                            # so that none of it runs later under another caller
                            for t in order:
                                t.queue.clear()
                            raise
                if ran:
                    break                  # start again from the preferred stream
            if not pending:
                return
            if not ran:  # pragma: no cover - waits target records already queued
                raise EmulatorFault("streams wait for each other in a cycle")


# -- CUDA Graphs -----------------------------------------------------------------------------
class _Capture:
    def __init__(self, origin: Stream):
        self.origin = origin
        self.streams: list[Stream] = [origin]
        self.items: list = []                  # (stream, queue item), in call order
        self.waited: dict = {}                 # stream -> records of the capture it waited on
        self.live, self.why = True, ""


_captures: list[_Capture] = []


def _invalidate(cap: _Capture, why: str = "") -> None:
    cap.live, cap.why = False, why or cap.why


def _refuse_in_capture(what: str) -> None:
    """What CUDA refuses while a stream captures (cudaErrorStreamCaptureUnsupported), which
    also invalidates the capture."""
    if _captures:
        why = f"{what} while a stream captures a graph"
        for cap in _captures:
            _invalidate(cap, why)
        raise CUDARuntimeError(900, f"cudaErrorStreamCaptureUnsupported: {why}")


class Graph:
    """A captured graph (cupy.cuda.Graph): launch(stream) enqueues all of it as one
    operation on `stream`, after what is queued there; inside, each captured stream's
    operations run in their order and the captured events order them, as when captured
    (adversarially otherwise, as _drain does)."""

    def __init__(self, items: list, streams: list):
        self.items, self.streams = items, streams

    def launch(self, stream: Stream | None = None) -> None:
        _refuse_in_capture("Graph.launch")
        if stream is None:
            _host_sync("a graph launched on the legacy default stream")
        counters.graph_launches += 1
        items = self.items

        def run():
            fresh: dict = {}                 # this replay's records
            queues = {}
            for st, (kind, obj, what) in items:
                if kind in ("record", "wait"):
                    obj = fresh.setdefault(id(obj), _Record(obj.event))
                queues.setdefault(st, []).append((kind, obj, what))
            _run_queues(sorted(queues.items(), key=lambda kv: -kv[0].order
                               if settings.stream_order == "last" else kv[0].order))
        (stream or _null_stream())._push(("op", run, "graph launch"))

    def upload(self, stream=None) -> None:
        pass


def _run_queues(queues: list) -> None:
    """Run (stream, [items]) lists to the end as _drain runs streams' queues."""
    while any(q for _, q in queues):
        ran = False
        for _, q in queues:
            while q:
                kind, obj, _ = q[0]
                if kind == "wait" and not obj.done:
                    break
                q.pop(0)
                ran = True
                if kind == "record":
                    obj.done, obj.time = True, time.perf_counter()
                elif kind == "op":
                    obj()
            if ran:
                break
        if not ran:  # pragma: no cover - records are captured before their waits
            raise EmulatorFault("a graph's streams wait for each other in a cycle")


# -- copies ----------------------------------------------------------------------------------
memcpyDeviceToDevice = 3
memcpyHostToDevice = 1
memcpyDeviceToHost = 2


def _copy_op(dst: int, src: int, nbytes: int, stream_ptr: int, what: str, dst_dev=None,
             src_dev=None) -> None:
    da, doff = _find(dst, nbytes, f"{what} destination")
    sa, soff = _find(src, nbytes, f"{what} source")
    for a, dev, side in ((da, dst_dev, "destination"), (sa, src_dev, "source")):
        if dev is not None and a.device != dev:
            raise EmulatorFault(f"{what}: the {side} is on device {a.device}, not {dev}")
    stream = _streams_by_ptr.get(stream_ptr) if stream_ptr else None
    if stream_ptr and stream is None:
        raise EmulatorFault(f"{what}: {stream_ptr:#x} is not a stream")
    if stream is not None and stream.device != _current():
        raise EmulatorFault(f"{what} on a stream of device {stream.device} while device "
                            f"{_current()} is current")

    def run():
        ctypes.memmove(da.host + doff, sa.host + soff, nbytes)
    counters.device_copies += 1
    _enqueue(stream, what, run)


def memcpyAsync(dst: int, src: int, size: int, kind: int, stream: int) -> None:
    if kind != memcpyDeviceToDevice:
        raise NotImplementedError("the emulator models device-to-device memcpyAsync only")
    sa, _ = _find(src, size, "memcpyAsync source")
    da, _ = _find(dst, size, "memcpyAsync destination")
    if sa.device != da.device and (_current(), sa.device if da.device == _current()
                                   else da.device) not in _peer:
        raise EmulatorFault(f"memcpyAsync from device {sa.device} to device {da.device} "
                            f"without peer access (use memcpyPeerAsync)")
    _copy_op(dst, src, size, stream, "memcpyAsync")


def memcpyPeerAsync(dst: int, dst_device: int, src: int, src_device: int, size: int,
                    stream: int) -> None:
    _copy_op(dst, src, size, stream, "memcpyPeerAsync", dst_device, src_device)


# -- modules and launches --------------------------------------------------------------------
def _cache() -> Path:
    if settings.cache is not None:
        return settings.cache
    return cache_dir("kernels") / "emulator"


_libraries: dict[Path, KernelLibrary] = {}


class RawModule:
    """Compiled for the device current at construction, as CuPy loads a module in the current
    context. `options` are NVRTC's; they only enter the cache key here."""

    def __init__(self, code: str | None = None, *, path=None, options=(), backend="nvrtc",
                 translate_cucomplex=False, enable_cooperative_groups=False,
                 name_expressions=None, jitify=False):
        if code is None:
            raise NotImplementedError("the emulator builds RawModule(code=...) only")
        self.device = _current()
        self.code, self.options = code, tuple(options)
        self._lib: KernelLibrary | None = None

    def _library(self) -> KernelLibrary:
        if self._lib is None:
            try:
                path = build_library(self.code, _cache(),
                                     defines=("NETSPEC_EMU_UCONTEXT",)
                                     if os.environ.get("NETSPEC_CUDA_EMULATE_UCONTEXT")
                                     else ())
            except EmulatorBuildError as e:
                raise CompileException(str(e)) from None
            with _lock:
                lib = _libraries.get(path)
                if lib is None:
                    lib = _libraries[path] = KernelLibrary(path, kernel_entries(self.code))
            self._lib = lib
        return self._lib

    def get_function(self, name: str) -> Function:
        lib = self._library()
        if name not in lib.entries:
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: {name}")
        return Function(self, lib, name)


_SCALARS = {"f4": np.float32, "f8": np.float64, "i4": np.int32, "i8": np.int64,
            "u4": np.uint32, "u8": np.uint64, "b1": np.bool_, "u1": np.uint8}
_CTYPES = {"f4": ctypes.c_float, "f8": ctypes.c_double, "i4": ctypes.c_int32,
           "i8": ctypes.c_int64, "u4": ctypes.c_uint32, "u8": ctypes.c_uint64,
           "b1": ctypes.c_bool, "u1": ctypes.c_uint8}


def marshalled_dtype(value) -> np.dtype:
    """The dtype CuPy passes a scalar kernel argument as: a NumPy scalar keeps its own; a Python
    bool is bool, int is int64, float is float64 (cupy/_core/_scalar.pyx)."""
    if isinstance(value, np.generic):
        return value.dtype
    if isinstance(value, bool):
        return np.dtype(np.bool_)
    if isinstance(value, int):
        return np.dtype(np.int64)
    if isinstance(value, float):
        return np.dtype(np.float64)
    raise TypeError(f"Unsupported type {type(value)}")


class Function:
    def __init__(self, module: RawModule, lib: KernelLibrary, name: str):
        self.module, self.lib, self.name = module, lib, name

    def __call__(self, grid, block, args, *, shared_mem: int = 0, stream=None,
                 enable_cooperative_groups: bool = False) -> None:
        name, dev = self.name, self.module.device
        if _current() != dev:
            raise EmulatorFault(f"kernel {name}, loaded on device {dev}, launched while device "
                                f"{_current()} is current (invalid resource handle)")
        if stream is not None and stream.device != dev:
            raise EmulatorFault(f"kernel {name} launched on a stream of device {stream.device}, "
                                f"but it runs on device {dev}")
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        if block[0] * block[1] * block[2] > 1024 or block[2] > 64:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: block {block} (at most 1024 "
                                  f"threads, z at most 64)")
        if shared_mem:
            raise NotImplementedError("the emulator has no dynamic shared memory")
        if not isinstance(args, tuple):
            raise TypeError("kernel arguments must be a tuple")
        sig = self.lib.signature(name)
        if len(args) != len(sig):
            raise EmulatorFault(f"kernel {name} takes {len(sig)} arguments, {len(args)} given")
        holders, arrays = [], []
        for i, (a, code) in enumerate(zip(args, sig)):
            if code.startswith("*"):
                if not isinstance(a, ndarray):
                    raise EmulatorFault(f"kernel {name} argument {i}: a pointer parameter given "
                                        f"{type(a).__name__}")
                if a.data.device_id != dev:
                    raise EmulatorFault(f"kernel {name} argument {i}: an array on device "
                                        f"{a.data.device_id} passed to a launch on device {dev}")
                want = np.dtype(_SCALARS[code[1:]])
                if a.dtype != want:
                    raise EmulatorFault(f"kernel {name} argument {i}: a {a.dtype} array for a "
                                        f"{want} pointer")
                arrays.append(a)
                holders.append(ctypes.c_void_p(a.data.mem.host + a.data.offset))
            else:
                got, want = marshalled_dtype(a), np.dtype(_SCALARS[code])
                if got != want:
                    raise EmulatorFault(
                        f"kernel {name} argument {i}: CuPy passes {type(a).__name__} "
                        f"{a!r} as {got}, but the parameter is {want}: the kernel would read "
                        f"{want.itemsize} of its {got.itemsize} bytes (pass numpy.{want}(...))")
                holders.append(_CTYPES[code](a.item() if isinstance(a, np.generic) else a))
        geometry = (*grid, *block)
        reverse = settings.thread_order == "reverse"
        lib = self.lib

        def run():
            try:
                lib.launch(name, geometry, holders, reverse)
            except RuntimeError as e:
                raise EmulatorFault(f"kernel {name}: {e}") from None
            for a in arrays:
                a.data.mem.check_red_zone(f"kernel {name}")
        counters.launches += 1
        _enqueue(stream, f"launch {name}", run)


def _dims(d, what: str) -> tuple[int, int, int]:
    d = tuple(int(x) for x in (d if isinstance(d, tuple) else (d,)))
    if not 1 <= len(d) <= 3 or min(d) < 1:
        raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {what} {d}")
    return (*d, *(1,) * (3 - len(d)))


def reset() -> None:
    """Forget every allocation, stream and peer-access grant (tests)."""
    with _lock:
        _drain()
        _allocations.clear()
        _streams_by_ptr.clear()
        _null_streams.clear()
        _peer.clear()


runtime = SimpleNamespace(
    getDeviceCount=getDeviceCount, getDeviceProperties=getDeviceProperties,
    deviceCanAccessPeer=deviceCanAccessPeer, deviceEnablePeerAccess=deviceEnablePeerAccess,
    memcpyAsync=memcpyAsync, memcpyPeerAsync=memcpyPeerAsync,
    memcpyDeviceToDevice=memcpyDeviceToDevice, memcpyHostToDevice=memcpyHostToDevice,
    memcpyDeviceToHost=memcpyDeviceToHost, CUDARuntimeError=CUDARuntimeError)
compiler = SimpleNamespace(CompileException=CompileException)
driver = SimpleNamespace(CUDADriverError=CUDADriverError)
cuda = SimpleNamespace(Device=Device, Stream=Stream, Event=Event, alloc=alloc, Graph=Graph,
                       alloc_pinned_memory=alloc_pinned_memory,
                       MemoryPointer=MemoryPointer, get_elapsed_time=get_elapsed_time,
                       runtime=runtime, compiler=compiler, driver=driver)
