"""A CUDA training step without host round-trips (issue 26), on the CPU emulator, which sees
every CuPy call (runtime/cuda_emulator/cupy_model.py's `counters`): gradients stay on the device
until read, and what a step moves and waits for is counted. The numbers are checked against the
NumPy reference (float64 oracle, tests/runtime/plan_oracle.py's tolerances)."""
from __future__ import annotations

import shutil
from collections.abc import Mapping

import numpy as np
import pytest

from netspec.ir.build import build_graph
from netspec.runtime.cuda_backend import CudaNet, cuda_emulated
from netspec.runtime.numpy_backend import NumpyNet

pytestmark = pytest.mark.skipif(not cuda_emulated() or shutil.which("g++") is None,
                                reason="counts on the CPU emulator: needs NETSPEC_CUDA_EMULATE=1, "
                                       "no CUDA device and g++")

from netspec.runtime.cuda_emulator import cupy_model as emu  # noqa: E402

TINY = "examples/tiny-alexnet.net"


def batch(graph, n=2, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *graph.input_shape)).astype(np.float32)
    return x, rng.integers(0, graph.classes, n)


def u8_batch(graph, n=4, seed=1, base=None, sigma=0.1):
    """A U8Batch for `graph` with a random mean image and PCA, as the loader hands out."""
    from netspec.data.augment import InputTransform, U8Batch
    from netspec.data.stats import PCA
    rng = np.random.default_rng(seed)
    crop = graph.input_shape[-1]
    base = base or crop + 8
    vec, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    t = InputTransform(rng.uniform(0, 255, (3, base, base)).astype(np.float32),
                       PCA(np.array([0.2, 0.02, 0.005]), vec), sigma, seed + 100)
    b = U8Batch(rng.integers(0, 256, (n, 3, crop, crop), dtype=np.uint8),
                rng.integers(0, base - crop + 1, (n, 2)), rng.random(n) < 0.5, t, 2, 64 * seed)
    return b, rng.integers(0, graph.classes, n)


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def test_gradients_stay_on_the_device_until_read(root):
    graph = build_graph(root / TINY)
    net = CudaNet(graph, seed=0, devices=[0, 1])
    x, y = batch(graph)
    net.loss_and_grads(*batch(graph, seed=2), train=False)   # captured, then launched:
    c0 = emu.counters.snapshot()
    _, grads = net.loss_and_grads(x, y, train=False, wait=False)
    step = emu.counters.since(c0)
    assert isinstance(grads, Mapping) and set(grads) == set(net.param_shapes)
    assert grads.downloaded == ()
    # what crossed: the logits, probabilities and per-image losses; no gradient
    assert step.d2h_bytes < 4 * 3 * 2 * graph.classes
    ref = NumpyNet(graph, seed=0, dtype=np.float64)
    _, grads_r = ref.loss_and_grads(x.astype(np.float64), y, train=False)
    c0 = emu.counters.snapshot()
    g = grads["conv1.weight"]            # parts on both devices
    read = emu.counters.since(c0)
    assert read.d2h_bytes == g.nbytes and g.shape == net.param_shapes["conv1.weight"]
    assert grads.downloaded == ("conv1.weight",)
    pulled = grads.pull()
    assert all(rel(pulled[k], grads_r[k]) <= 1e-4 for k in grads_r)
    # the logits kept on the device for last_logits are the forward pass's, bit for bit
    np.testing.assert_array_equal(net.last_logits, net.forward(x))
    assert rel(net.last_logits, ref.last_logits) <= 1e-5
    np.testing.assert_array_equal(pulled["conv1.weight"], g)
    _, fresh = net.loss_and_grads(x, y, train=False, pull=True)
    assert type(fresh) is dict and all(np.array_equal(fresh[k], pulled[k]) for k in fresh)


def test_a_stale_gradient_read_is_refused(root):
    """A later loss_and_grads overwrites the device gradients in place: reading the earlier
    mapping then is an error, not the newer numbers."""
    graph = build_graph(root / TINY)
    net = CudaNet(graph, seed=0, devices=[0, 0])
    x, y = batch(graph)
    _, first = net.loss_and_grads(x, y, train=False)
    kept = first["conv1.bias"]                     # read in time: kept on the host
    net.loss_and_grads(x[::-1].copy(), y[::-1].copy(), train=False)
    np.testing.assert_array_equal(first["conv1.bias"], kept)
    with pytest.raises(RuntimeError, match="overwritten on the device"):
        first["fc8.bias"]


def test_device_update_uses_the_unread_gradients(root):
    """update() after an unread loss_and_grads gives the host SGD rule's weights, computed
    from the same gradients pulled (runtime/sgd.py is the rule every backend is checked by)."""
    from netspec.runtime.sgd import layer_multipliers, sgd_update
    graph = build_graph(root / TINY)
    net = CudaNet(graph, seed=0, devices=[0, 0])
    x, y = batch(graph)
    params = {k: v.copy() for k, v in net.parameters().items()}
    _, grads = net.loss_and_grads(x, y, train=False)
    net.update(0.01, 0.9, 0.0005)
    host = grads.pull()                             # still current: update leaves them
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    lr_mults, decay_mults = layer_multipliers(graph)
    sgd_update(params, host, velocity, 0.01, 0.9, 0.0005, lr_mults, decay_mults)
    after = net.parameters()
    assert all(rel(after[k], params[k]) <= 1e-6 for k in params)


def without_dropout(root):
    """tiny-alexnet without its dropout layers (a step with them is one graph too; see
    test_a_step_with_dropout_is_one_graph): for the tests whose numbers mustn't hinge on
    which units a mask drops."""
    text = (root / TINY).read_text()
    return build_graph("".join(line for line in text.splitlines(keepends=True)
                               if not line.startswith("dropout")))


@pytest.mark.parametrize("graphs", [False, True])
def test_a_training_step_crosses_once_and_never_waits(root, graphs):
    """One training step as `netspec bench` and the trainer run it (loss not read, update on
    the device), with dropout, on two logical GPUs sharing one device, counted by the emulator
    against a hand count and the issue's bounds: the batch crosses once, as uint8, with its
    5 + N header words, the labels, and the dropout parts' 4-word noise keys (once per device
    when captured, once per part when launched); nothing comes back; the host never
    synchronises. With launches: every launch and copy of the plan once, plus the uint8
    batch's finishing kernel, the input's copy to the second logical GPU and the losses and
    logits kept on the device for reading. Captured: one graph launch per step (forward,
    backward and update), nothing else."""
    from netspec.bench.timing import step_options
    graph = build_graph(root / TINY)
    net = CudaNet(graph, seed=0, devices=[0, 0], graphs=graphs)
    n = 4
    x, y = u8_batch(graph, n)
    for _ in range(3):        # the first uploads the parameters; a graph per uint8 slot
        c0 = emu.counters.snapshot()
        loss, grads = net.loss_and_grads(x, y, train=True, **step_options(net))
        net.update(0.01, 0.9, 0.0005)
        c = emu.counters.since(c0)
    plan = net.compiled(n).plan
    plan_steps = (plan.steps_for("forward", True) + plan.steps_for("backward", True)
                  + plan.steps_for("update", True))
    keys = sum(s.kind == "upload" and s.what == "noise" for s in plan_steps)
    assert keys >= 2 and loss is None and grads.downloaded == ()
    u8, labels = x.pixels.nbytes, 4 * n
    assert c.h2d_bytes == u8 + 4 * (5 + n) + labels + 16 * (1 if graphs else keys)
    assert c.h2d_bytes <= u8 + labels + 1024               # the bound
    assert c.d2h_bytes == 0 and c.downloads == 0
    assert c.syncs == 0
    if graphs:
        assert (c.launches, c.device_copies, c.graph_launches) == (0, 0, 1)
    else:
        assert c.launches == sum(s.kind == "launch" for s in plan_steps) + 1
        assert c.device_copies == sum(s.kind == "copy" for s in plan_steps) + 1 + 2
        assert c.graph_launches == 0
    c0 = emu.counters.snapshot()            # read now: the host waits, once per stream
    assert np.isfinite(net.last_loss)
    assert emu.counters.since(c0).syncs == 2


@pytest.mark.parametrize("graphs", [False, True])
def test_a_uint8_batch_is_finished_on_the_device_as_on_the_host(root, graphs):
    """A U8Batch crosses as its uint8 pixels and a header of 5 + N words (kernel/colour.py),
    once per physical device; one kernel there casts, subtracts the mean image (uploaded once,
    kept on the device), adds the Philox colour shift and lays the batch out channel-major.
    The device's float32 input equals the host path's (U8Batch.to_float, the loader's float
    batch) bit for bit on the emulator (the same C library's log, sin and cos; on a GPU a
    shift may be one float32 ulp off, kernel/colour.py), and so do the step's logits and
    weights after the update, against the same net fed the host's float batch."""
    graph = without_dropout(root)
    n = 4
    b, y = u8_batch(graph, n)
    host = b.to_float()
    net = CudaNet(graph, seed=0, devices=[0, 0], graphs=graphs)
    ref = CudaNet(graph, seed=0, devices=[0, 0], graphs=graphs)
    for _ in range(2):
        c0 = emu.counters.snapshot()
        net.loss_and_grads(b, y, train=True, wait=False)
        net.update(0.01, 0.9, 0.0005)
        c = emu.counters.since(c0)
        ref.loss_and_grads(host, y, train=True, wait=False)
        ref.update(0.01, 0.9, 0.0005)
    # what crossed in the second step: the pixels, the header and the labels, nothing else
    assert c.h2d_bytes == b.pixels.nbytes + 4 * (5 + n) + 4 * n
    assert c.h2d_bytes <= b.pixels.nbytes + 4 * n + 1024
    assert c.syncs == 0 and c.d2h_bytes == 0
    np.testing.assert_array_equal(net.last_logits, ref.last_logits)
    np.testing.assert_array_equal(net.parameters()["conv1.weight"],
                                  ref.parameters()["conv1.weight"])
    # the device's float input itself, read back from where the kernel wrote it
    inst = net._instance(n)
    name = "data.gpu0.staging" if graphs else "data.gpu0"
    if not graphs:       # the arena's input buffer is reused later in the step: run to it
        net._run_forward(b, False, finish=False)
    view = inst.views[name]
    net._dev_barrier()
    flat = net._dev_download(0, view, host.size, [])
    net._dev_finish()
    np.testing.assert_array_equal(flat.reshape(3, n, *host.shape[2:]),
                                  np.moveaxis(host, 1, 0))


@pytest.mark.parametrize("mutated", [False, True])
def test_the_next_batch_waits_for_its_slot_on_the_copy_stream(root, monkeypatch, mutated):
    """Batches cross on a copy stream into two alternating slots, each refilled only after
    the step that read it (an event, no host wait). The mutation drops that wait: with the
    host never waiting across 3 steps of different batches (after a first that uploads the
    weights), the emulator runs the copy stream ahead and a step reads a later step's pixels,
    so the weights differ from the same steps
    fed the host's float batches; unbroken, they are equal bit for bit."""
    graph = without_dropout(root)
    batches = [u8_batch(graph, 2, seed=s) for s in (1, 2, 3, 4)]
    if mutated:
        keep = CudaNet._dev_upload_copy
        monkeypatch.setattr(CudaNet, "_dev_upload_copy",
                            lambda self, stream, view, host, wait: keep(self, stream, view,
                                                                        host, []))
    monkeypatch.setattr(emu.settings, "stream_order", "last")
    net = CudaNet(graph, seed=0, devices=[0, 0])
    ref = CudaNet(graph, seed=0, devices=[0, 0])
    for i, (b, y) in enumerate(batches):      # the first step uploads the weights (syncs)
        c0 = emu.counters.snapshot()
        net.loss_and_grads(b, y, train=True, wait=False)
        net.update(0.01, 0.9, 0.0005)
        assert i == 0 or emu.counters.since(c0).syncs == 0
    for b, y in batches:
        ref.loss_and_grads(b.to_float(), y, train=True, wait=False)
        ref.update(0.01, 0.9, 0.0005)
    a, r = net.parameters(), ref.parameters()
    same = all(np.array_equal(a[k], r[k]) for k in r)
    assert same != mutated


def test_a_uint8_batch_without_colour_shift(root):
    """sigma 0 (or no PCA): the kernel adds nothing, as the host path adds nothing."""
    graph = without_dropout(root)
    b, y = u8_batch(graph, 3, sigma=0.0)
    net = CudaNet(graph, seed=0, devices=[0, 1])
    np.testing.assert_array_equal(net.forward(b), net.forward(b.to_float()))
    assert b.shifts() is None


# -- CUDA Graphs -------------------------------------------------------------------------------
def steps(net, n=3, count=3):
    """`count` training steps with dropout on one batch: each step's loss and logits, the
    weights and momenta after them, and the last step's counters."""
    graph = net.graph
    x, y = batch(graph, n)
    out = []
    for _ in range(count):
        c0 = emu.counters.snapshot()
        loss, _ = net.loss_and_grads(x, y, train=True)
        net.update(0.01, 0.9, 0.0005)
        c = emu.counters.since(c0)
        out.append((loss, net.last_logits))
    return out, net.parameters(), net.velocities(), c


@pytest.mark.parametrize("devices,streams", [([0, 0], "last"), ([0, 1], "first")])
def test_graph_replay_computes_what_the_launches_do(root, devices, streams, monkeypatch):
    """The step captured once and replayed: losses, logits, weights and momenta bit for bit
    those of the launches, on one device and on two (peer copies inside the graph), under
    both of the emulator's stream orders; a replayed step is one graph launch for
    loss_and_grads and one for the update, no kernel launch of the host's."""
    monkeypatch.setattr(emu.settings, "stream_order", streams)
    graph = without_dropout(root)
    with_graphs = steps(CudaNet(graph, seed=0, devices=devices))
    without = steps(CudaNet(graph, seed=0, devices=devices, graphs=False))
    for (la, za), (lb, zb) in zip(with_graphs[0], without[0]):
        assert la == lb and np.array_equal(za, zb)
    for a, b in ((with_graphs[1], without[1]), (with_graphs[2], without[2])):
        assert all(np.array_equal(a[k], b[k]) for k in b)
    c, c_launches = with_graphs[3], without[3]
    assert (c.graph_launches, c.launches) == (2, 0) and c_launches.launches > 0
    assert c.device_copies == 0 and c.downloads == 1      # the loss, read by the caller


def test_a_step_with_dropout_is_one_graph(root):
    """The dropout parts read the step's noise key from a buffer the step uploads, so the
    whole step, forward, backward (dropout included) and the SGD update, is one captured graph
    replayed with each step's key: one graph launch a step, no kernel launch of the host's,
    no sync; losses, logits, weights and momenta bit for bit those of graphs=False over steps
    with different keys, and the first step's logits those of the NumPy reference with the
    same masks (float64, plan_oracle's 1e-5)."""
    from netspec.runtime.noise import ImageNoise
    graph = build_graph(root / TINY)
    x, y = batch(graph, 3)
    ref = NumpyNet(graph, seed=0, dtype=np.float64)
    ref.rng = ImageNoise(5, 0, 0, 3)
    ref.loss_and_grads(x.astype(np.float64), y, train=True)
    runs = []
    for graphs in (True, False):
        net = CudaNet(graph, seed=0, devices=[0, 0], graphs=graphs)
        out = []
        for step in range(3):
            net.rng = ImageNoise(5, step, 0, 3)
            c0 = emu.counters.snapshot()
            net.loss_and_grads(x, y, train=True, wait=False)
            net.update(0.01, 0.9, 0.0005)
            c = emu.counters.since(c0)
            out.append((net.last_loss, net.last_logits))
        runs.append((out, net.parameters(), net.velocities(), c))
    (a, pa, va, ca), (b, pb, vb, _) = runs
    for (la, za), (lb, zb) in zip(a, b):
        assert la == lb and np.array_equal(za, zb)
    assert not np.array_equal(a[0][1], a[1][1])        # the keys differ from step to step
    assert all(np.array_equal(pa[k], pb[k]) and np.array_equal(va[k], vb[k]) for k in pb)
    assert rel(a[0][1], ref.last_logits) <= 1e-5
    assert (ca.graph_launches, ca.launches, ca.device_copies, ca.syncs) == (1, 0, 0, 0)


def test_a_sync_inside_capture_is_refused(root):
    """The mutation: a careless synchronize after each launch (as a debugging edit would add).
    Capturing the step then fails as CUDA fails it (cudaErrorStreamCaptureUnsupported, the
    capture invalidated), the net says why and runs the steps as launches, with the same
    numbers; the unbroken net captures."""
    def _dev_launch(self, stream, handle, kernel, args, wait):
        ev = CudaNet._dev_launch(self, stream, handle, kernel, args, wait)
        self._stream(stream).synchronize()
        return ev
    graph = without_dropout(root)
    broken = type("SyncsInStep", (CudaNet,), {"_dev_launch": _dev_launch})(graph, seed=0)
    got = steps(broken, count=2)
    assert "cudaErrorStreamCapture" in broken._graphs_refused
    assert "Stream.synchronize while a stream captures a graph" in broken._graphs_refused
    assert got[3].graph_launches == 0 and got[3].syncs > 0
    good = CudaNet(graph, seed=0)
    ref = steps(good, count=2)
    assert getattr(good, "_graphs_refused", None) is None and ref[3].graph_launches == 2
    assert [l for l, _ in got[0]] == [l for l, _ in ref[0]]


def test_capture_refuses_what_cuda_refuses():
    """The emulator's capture rules, one by one: a host synchronisation, an allocation, a
    host read, a copy from pageable memory; a stream forked into the capture and not joined
    back; replaying a graph runs its work in order, each launch."""
    with emu.Device(0):
        a = emu.ndarray((4,), np.float32)
        st = emu.Stream(non_blocking=True)
        side = emu.Stream(non_blocking=True)
        refusals = [lambda: st.synchronize(), lambda: emu.alloc(16),
                    lambda: a.get(stream=st, out=np.empty(4, np.float32), blocking=False),
                    lambda: a.set(np.ones(4, np.float32), stream=st),
                    lambda: emu.Event().synchronize()]
        for refuse in refusals:
            st.begin_capture()
            with pytest.raises(emu.CUDARuntimeError, match="cudaErrorStreamCaptureUnsupported"):
                refuse()
            with pytest.raises(emu.CUDARuntimeError, match="cudaErrorStreamCaptureInvalidated"):
                st.end_capture()
        st.begin_capture()
        fork = emu.Event(disable_timing=True)
        fork.record(st)
        side.wait_event(fork)                     # joins the capture
        emu.memcpyAsync(a.data.ptr, a.data.ptr, 4, emu.memcpyDeviceToDevice, side.ptr)
        with pytest.raises(emu.CUDARuntimeError, match="cudaErrorStreamCaptureUnjoined"):
            st.end_capture()
        b = emu.ndarray((4,), np.float32)
        a.set(np.arange(4, dtype=np.float32), stream=st)
        st.begin_capture()
        fork.record(st)
        side.wait_event(fork)
        emu.memcpyAsync(b.data.ptr, a.data.ptr, 16, emu.memcpyDeviceToDevice, side.ptr)
        join = emu.Event(disable_timing=True)
        join.record(side)
        st.wait_event(join)
        graph = st.end_capture()
        out = b.get(stream=st, out=np.zeros(4, np.float32))
        assert np.isnan(out).all()                # captured, not run
        graph.launch(st)
        out = b.get(stream=st, out=np.zeros(4, np.float32))
    np.testing.assert_array_equal(out, [0, 1, 2, 3])


def test_a_checkpoint_downloads_weights_and_momenta_once(root):
    """What a checkpoint reads (parameters() and velocities()): every tensor once, through
    pinned staging, so the host waits once per stream, not once per tensor part; a second
    parameters() without a step between reads nothing."""
    graph = build_graph(root / TINY)
    net = CudaNet(graph, seed=0, devices=[0, 0])
    x, y = batch(graph)
    net.loss_and_grads(x, y, train=True, wait=False)
    net.update(0.01, 0.9, 0.0005)
    sizes = 4 * sum(int(np.prod(s)) for s in net.param_shapes.values())
    c0 = emu.counters.snapshot()
    params = net.parameters()
    momenta = net.velocities()
    c = emu.counters.since(c0)
    assert c.d2h_bytes == 2 * sizes and c.syncs == 2 * 2
    assert set(params) == set(momenta) == set(net.param_shapes)
    c0 = emu.counters.snapshot()
    net.parameters()
    assert emu.counters.since(c0).d2h_bytes == 0
