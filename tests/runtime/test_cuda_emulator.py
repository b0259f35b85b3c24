"""The CPU emulator under backend="cuda" (netspec/runtime/cuda_emulator): it runs the real
CudaNet, and it catches what a GPU would punish. Each mutation test breaks one thing the way a
careless edit would (in kernels.cu's text or in cuda_backend.py's host calls) and shows that the
emulator refuses it or that the numbers no longer match the NumPy reference; each one's
unbroken control matches the reference. Runs where g++ exists (everywhere CI runs)."""
from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import subprocess

import numpy as np
import pytest

import netspec
from netspec.ir.build import build_graph
from netspec.runtime import pick_auto
from netspec.runtime.cuda_backend import CudaNet, cuda_emulated
from netspec.runtime.numpy_backend import NumpyNet

pytestmark = pytest.mark.skipif(not cuda_emulated() or shutil.which("g++") is None,
                                reason="runs the CPU emulator: needs NETSPEC_CUDA_EMULATE=1, no "
                                       "CUDA device and g++")

from netspec.runtime.cuda_emulator import cupy_model as emu  # noqa: E402
from netspec.runtime.cuda_emulator.build import build_library, kernel_entries  # noqa: E402

TINY = "examples/tiny-alexnet.net"


@pytest.fixture
def order():
    """Restore the emulator's thread and stream order after a test changes them."""
    saved = emu.settings.thread_order, emu.settings.stream_order
    yield emu.settings
    emu.settings.thread_order, emu.settings.stream_order = saved


def kernel_text(source: str, name: str) -> tuple[int, int]:
    """[start, end) of kernel `name` in a CUDA source."""
    m = re.search(r'extern "C" __global__ void ' + name + r"\(", source)
    nxt = re.search(r'extern "C" __global__', source[m.end():])
    return m.start(), m.end() + nxt.start() if nxt else len(source)


def in_kernel(name: str, old: str, new: str, nth: int = 0):
    """A mutation: the nth `old` in kernel `name` becomes `new`."""
    def mutate(source: str) -> str:
        a, b = kernel_text(source, name)
        body = source[a:b]
        at = -1
        for _ in range(nth + 1):
            at = body.index(old, at + 1)
        return source[:a] + body[:at] + new + body[at + len(old):] + source[b:]
    return mutate


def mutated_net(root, mutate=None, devices=None, **methods):
    """CudaNet on tiny-alexnet (2 logical GPUs), its kernels.cu passed through `mutate` and any
    of its methods replaced."""
    def _dev_build(self, compiled):
        if mutate is not None:
            src = dataclasses.replace(compiled.cuda, text=mutate(compiled.cuda.text))
            compiled = copy.copy(compiled)
            compiled.__dict__["cuda"] = src        # Compiled.cuda is a cached_property
        return CudaNet._dev_build(self, compiled)
    cls = type("Mutated", (CudaNet,), {"_dev_build": _dev_build, **methods})
    return cls(build_graph(root / TINY), seed=0, devices=devices)


def run_both(net, n=2):
    ref = NumpyNet(net.graph, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, *net.graph.input_shape)).astype(np.float32)
    labels = rng.integers(0, net.graph.classes, n)
    loss, grads = net.loss_and_grads(x, labels, train=False)
    loss_r, grads_r = ref.loss_and_grads(x, labels, train=False)
    logit_err = float(np.abs(net.last_logits - ref.last_logits).max()
                      / np.abs(ref.last_logits).max())
    grad_err = max(float(np.abs(grads[k] - grads_r[k]).max() / np.abs(grads_r[k]).max())
                   for k in grads_r)
    return logit_err, grad_err


def wrong(errs) -> bool:
    """The numbers are off (NaN counts as off)."""
    return not all(e <= 1e-3 for e in errs)


# -- the control: unbroken, both thread orders, both stream orders ---------------------------
@pytest.mark.parametrize("threads,streams", [("forward", "last"), ("reverse", "first")])
def test_unbroken_net_matches_reference(root, order, threads, streams):
    order.thread_order, order.stream_order = threads, streams
    logit_err, grad_err = run_both(mutated_net(root))
    assert logit_err <= 1e-5 and grad_err <= 1e-4


# -- kernels.cu mutations --------------------------------------------------------------------
def test_removed_barrier_changes_the_result(root, order):
    """conv1's GEMM without the barrier between loading a tile and using it: threads read tile
    entries the others have not loaded yet."""
    net = mutated_net(root, in_kernel("conv1_fwd", "__syncthreads();", ""))
    assert wrong(run_both(net))


def test_each_thread_order_shows_races_the_other_hides(root, order):
    """The softmax's sum reduction without its barrier between tree levels: thread t reads
    red[t + h] before thread t + h has added its own level's pair (in index order), or reads
    partial sums of later levels (in reverse): both orders catch it. A race whose reader has the
    higher index than its writer is caught only in reverse, one whose reader has the lower only
    in index order: a toy kernel shows the reverse pass catching what index order hides. Hence
    the two passes in tests."""
    mutate = in_kernel("prob_g0_fwd", "            red[t] += red[t + h];\n"
                                      "        __syncthreads();",
                       "            red[t] += red[t + h];\n")
    seen = {}
    for threads in ("forward", "reverse"):
        order.thread_order = threads
        seen[threads] = wrong(run_both(mutated_net(root, mutate)))
    assert seen == {"forward": True, "reverse": True}, seen
    src = ('extern "C" __global__ void shift(const float* __restrict__ x, float* __restrict__ y)'
           '\n{ __shared__ float s[64]; const int i = threadIdx.x;\n'
           '  s[i] = x[i]; BARRIER y[i] = i > 0 ? s[i - 1] : 0.0f; }\n')
    x = np.arange(1, 65, dtype=np.float32)
    want = np.concatenate([[0], x[:-1]])
    for threads, barrier, right in [("forward", "__syncthreads();", True),
                                    ("reverse", "__syncthreads();", True),
                                    ("forward", "", True), ("reverse", "", False)]:
        order.thread_order = threads
        y = launch_once(src.replace("BARRIER", barrier), "shift", (1,), (64,), x)
        assert np.array_equal(y, want) == right, (threads, barrier)


def launch_once(src, name, grid, block, x):
    """One launch of `name`(x, y) through the emulator's CuPy model; returns y."""
    with emu.Device(0):
        xd = emu.ndarray(x.shape, np.float32)
        yd = emu.ndarray(x.shape, np.float32)
        st = emu.Stream(non_blocking=True)
        xd.set(x, stream=st)
        emu.RawModule(code=src).get_function(name)(grid, block, (xd, yd), stream=st)
        out = yd.get(stream=st, out=np.empty(x.shape, np.float32))
    st.synchronize()
    return out


def test_early_return_before_a_barrier_is_an_error(root, order):
    """Threads of the softmax returning before its barriers: on a GPU a hang or garbage."""
    net = mutated_net(root, in_kernel("prob_g0_fwd", "float m = ",
                                      "if (t % 2) return;\n    float m = "))
    with pytest.raises(emu.EmulatorFault, match="reached by only part of the block"):
        run_both(net)


# -- cuda_backend.py mutations ---------------------------------------------------------------
def test_python_float_scalars_are_refused(root):
    """The SGD kernel's lr, momentum and decay passed as Python floats: CuPy sends float64, the
    kernel reads float32 halves of them."""
    def _dev_launch(self, stream, handle, kernel, args, wait):
        args = [float(a) if isinstance(a, np.float32) else a for a in args]
        return CudaNet._dev_launch(self, stream, handle, kernel, args, wait)
    net = mutated_net(root, _dev_launch=_dev_launch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *net.graph.input_shape)).astype(np.float32)
    net.loss_and_grads(x, [1, 2], train=False)
    with pytest.raises(emu.EmulatorFault, match="CuPy passes float .* as float64, but the "
                                                "parameter is float32"):
        net.update(lr=0.01)


def test_launch_on_the_wrong_device_is_refused(root):
    def _dev_launch(self, stream, handle, kernel, args, wait):
        st = self._stream(stream)
        d = self.device_map[stream]
        with self.cp.cuda.Device(1 - d):
            grid = tuple(g // l for g, l in zip(kernel.global_size, kernel.local_size))
            handle[d](grid, tuple(kernel.local_size), tuple(args), stream=st)
    net = mutated_net(root, devices=[0, 1], _dev_launch=_dev_launch)
    with pytest.raises(emu.EmulatorFault, match="launched while device . is current"):
        run_both(net)


def test_array_of_another_device_is_refused(root):
    """Logical GPU 1's kernels handed GPU 0's buffers (a view built on the wrong region)."""
    def _dev_launch(self, stream, handle, kernel, args, wait):
        if stream == 1:
            other = self._param_regions[0]
            args = [self.cp.ndarray(a.shape, a.dtype, memptr=other)
                    if isinstance(a, self.cp.ndarray) and a.nbytes <= other.mem.nbytes else a
                    for a in args]
        return CudaNet._dev_launch(self, stream, handle, kernel, args, wait)
    net = mutated_net(root, devices=[0, 1], _dev_launch=_dev_launch)
    with pytest.raises(emu.EmulatorFault, match="an array on device 0 passed to a launch on "
                                                "device 1"):
        run_both(net)


def test_missing_event_wait_changes_the_result(root, order):
    """No wait_event between the logical GPUs' streams: a transfer or a kernel runs before what
    it reads is written. With the last-created stream preferred, one direction's consumers run
    early; with the first preferred, the other's; a correct net matches in both."""
    seen = {}
    for streams in ("last", "first"):
        order.stream_order = streams
        net = mutated_net(root, devices=[0, 1], _wait=lambda self, stream, wait: None)
        seen[streams] = wrong(run_both(net))
    assert seen["last"] and seen["first"], seen


def test_offsets_in_elements_instead_of_bytes_change_the_result(root):
    """The transfers' offsets given in float32 elements where memcpy takes bytes."""
    def _dev_copy(self, stream, src, src_offset, dst, dst_offset, nbytes, wait):
        return CudaNet._dev_copy(self, stream, src, src_offset // 4, dst, dst_offset // 4,
                                 nbytes, wait)
    net = mutated_net(root, devices=[0, 1], _dev_copy=_dev_copy)
    try:
        errs = run_both(net)
    except emu.EmulatorFault:
        return                          # refused outright: caught too
    assert wrong(errs)


# -- the model's own rules -------------------------------------------------------------------
def test_new_memory_is_nan_and_views_stop_at_their_allocation():
    with emu.Device(0):
        p = emu.alloc(64)
        a = emu.ndarray((16,), np.float32, memptr=p)
        st = emu.Stream(non_blocking=True)
        out = a.get(stream=st, out=np.zeros(16, np.float32), blocking=False)
        assert np.isnan(out).all()            # before the synchronize: poisoned
        st.synchronize()
        assert np.isnan(out).all()            # after it: what the device holds, never written
        with pytest.raises(emu.EmulatorFault, match="runs past its 64-byte allocation"):
            emu.ndarray((16,), np.float32, memptr=p + 4)
        q = emu.alloc(64)
        with pytest.raises(emu.EmulatorFault, match="60 bytes at offset 8 run past the end of "
                                                    "a 64-byte allocation"):
            emu.memcpyAsync(q.ptr + 8, p.ptr, 60, emu.memcpyDeviceToDevice, st.ptr)
        with pytest.raises(emu.EmulatorFault, match="on a stream of device 1"):
            with emu.Device(1):
                st1 = emu.Stream(non_blocking=True)
            a.set(np.ones(16, np.float32), stream=st1)


def test_event_orders_streams_and_records_only_on_its_device():
    with emu.Device(0):
        p = emu.alloc(16)
        a = emu.ndarray((4,), np.float32, memptr=p)
        s0 = emu.Stream(non_blocking=True)
        ev = emu.Event(disable_timing=True)
    with emu.Device(1):
        q = emu.alloc(16)
        b = emu.ndarray((4,), np.float32, memptr=q)
        s1 = emu.Stream(non_blocking=True)
        with pytest.raises(emu.EmulatorFault, match="recorded on a stream of device 1"):
            ev.record(s1)
    with emu.Device(0):
        a.set(np.arange(4, dtype=np.float32), stream=s0)
        ev.record(s0)
    with emu.Device(1):
        s1.wait_event(ev)
        emu.memcpyPeerAsync(q.ptr, 1, p.ptr, 0, 16, s1.ptr)
        out = b.get(stream=s1, out=np.empty(4, np.float32))
    s1.synchronize()
    np.testing.assert_array_equal(out, [0, 1, 2, 3])


def test_cupy_scalar_marshalling():
    assert emu.marshalled_dtype(0.5) == np.float64
    assert emu.marshalled_dtype(3) == np.int64
    assert emu.marshalled_dtype(True) == np.bool_
    assert emu.marshalled_dtype(np.float32(0.5)) == np.float32


def test_libraries_export_only_their_entry_points(tmp_path):
    """Scheduler state stays private to each library (anonymous namespace,
    -fvisibility=hidden): two modules in one process never share it."""
    src = ('extern "C" __global__ void twice(float* __restrict__ y, float a)\n'
           '{ const int i = threadIdx.x; __shared__ float s[32]; s[i] = a * i; '
           '__syncthreads(); y[i] = s[31 - i]; }\n')
    lib = build_library(src, tmp_path)
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True,
                         text=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert names == {"netspec_launch_twice", "netspec_signature_twice"}, names
    assert kernel_entries(src)[0].barriers


@pytest.mark.parametrize("ucontext", [False, True])
def test_barrier_kernel_on_both_fiber_switches(tmp_path, monkeypatch, ucontext):
    """The hand-written x86-64 switch and the portable ucontext fallback compute the same."""
    if ucontext:
        monkeypatch.setenv("NETSPEC_CUDA_EMULATE_UCONTEXT", "1")
    monkeypatch.setattr(emu.settings, "cache", tmp_path)
    src = ('extern "C" __global__ void mirror(float* __restrict__ y, float a)\n'
           '{ const int i = threadIdx.x + blockIdx.x * 64; __shared__ float s[64];\n'
           '  s[threadIdx.x] = a * i; __syncthreads(); y[i] = s[63 - threadIdx.x]; }\n')
    with emu.Device(0):
        y = emu.ndarray((128,), np.float32)
        f = emu.RawModule(code=src).get_function("mirror")
        st = emu.Stream(non_blocking=True)
        f((2,), (64,), (y, np.float32(2.0)), stream=st)
        out = y.get(stream=st, out=np.empty(128, np.float32))
    st.synchronize()
    i = np.arange(128)
    np.testing.assert_array_equal(out, 2.0 * ((i // 64) * 64 + 63 - i % 64))


def test_emulated_devices_are_labelled_and_never_picked_by_auto(root):
    net = netspec.build(root / TINY, "cuda", seed=0)
    assert "emulated on the CPU" in net.device_note
    assert all("emulated on the CPU" in n for n in net.device_names)
    assert net.device_map == [0, 1] and "on 2 devices" in net.device_note
    assert pick_auto(say=lambda line: None) is not CudaNet


def test_a_fault_drops_the_queued_work(root):
    """After a kernel fault nothing of the failed net's queue runs later, under another net's
    synchronize (a GPU's context would be lost)."""
    bad = mutated_net(root, in_kernel("prob_g0_fwd", "float m = ",
                                      "if (t % 2) return;\n    float m = "))
    with pytest.raises(emu.EmulatorFault):
        run_both(bad)
    assert all(not s.queue for s in list(emu._streams_by_ptr.values()))
    logit_err, grad_err = run_both(mutated_net(root))         # bad is still alive here
    assert logit_err <= 1e-5 and grad_err <= 1e-4
