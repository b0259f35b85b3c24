"""Model parallelism (issue 5): logical GPUs mapped onto devices, data crossing GPUs only at
`connect all` layers and the softmax gather, on numpy, OpenCL (PoCL here) and CUDA (`-m gpu`).

Oracles, each independent of the code under test in a different way:
- the same network on ONE logical GPU with the matching grouping (`groups 2` on conv2/4/5 and
  on the lrn layers): no transfers at all, each group a part on the one GPU;
- PyTorch, written here from the paper's Figure 2 with `groups=G` convolutions and LRN applied
  to each group separately;
- the NumPy reference backend (netspec/ops math) and the training loop's own `sgd_update`.

No comparison hinges on a max-pool or ReLU decision within rounding of its tie (issue 28:
He-scaled weights don't rule those out in float32, and one flip moves a conv gradient by
percents; tests/near_ties.py). Two graphs (two GPUs against one with groups, netspec against
PyTorch) are compared in float64, on inputs asserted to hold no decision within 1e-9 of its
layer's scale of a tie: max|a − b| <= 1e-9·max|b| per array. A device (OpenCL, CUDA) runs
float32 and is compared with the float64 reference of the same graph deciding every max-pool
and ReLU as the device did (plan_oracle.follows): every array within plan_oracle.close's
1e-3 relative + 1e-4 of its largest value.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import netspec
from netspec.errors import DeviceError, NetspecError
from netspec.ir.build import build_graph
from netspec.runtime.cuda_backend import cuda_emulated, cuda_unavailable_reason
from netspec.runtime.sgd import layer_multipliers, sgd_update

from near_ties import assert_no_near_ties
from net_specs import one_gpu_grouped, tiny_four_gpus
from plan_oracle import close, follows

ROOT = Path(__file__).resolve().parents[2]
ALEXNET = (ROOT / "specs/alexnet.net").read_text()
TINY = (ROOT / "examples/tiny-alexnet.net").read_text()




def _why_no_opencl() -> str | None:
    try:
        from netspec.runtime.opencl_backend import find_device
    except ImportError:
        return "pyopencl is not installed (pip install netspec[opencl])"
    return None if find_device() is not None else "no OpenCL device (pip install 'pyopencl[pocl]')"


BACKENDS = [
    "numpy",
    pytest.param("opencl", marks=pytest.mark.skipif(_why_no_opencl() is not None,
                                                    reason=str(_why_no_opencl()))),
    pytest.param("cuda", marks=[pytest.mark.gpu,
                                pytest.mark.skipif(cuda_unavailable_reason() is not None,
                                                   reason=str(cuda_unavailable_reason()))]),
]
DEVICE_BACKENDS = BACKENDS[1:]


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))

def check_against_torch(net, x, labels, P, logits):
    """net's logits, loss and every gradient equal PyTorch autograd's from `logits`, computed
    from the tensors P (requires_grad): both float64, and net's decisions (the training
    forward's, with net.rng's dropout draws) asserted clear of ties (module doc)."""
    net.rng = np.random.default_rng(12)
    assert_no_near_ties(net.graph, net.parameters(), x, margin=1e-9)
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    grads = dict(zip(P, torch.autograd.grad(loss, list(P.values()))))
    assert rel(net.forward(x), logits.detach().numpy()) <= 1e-9
    loss_n, grads_n = net.loss_and_grads(x, labels)
    assert abs(loss_n - loss.item()) <= 1e-9 * loss.item()
    errors = {k: rel(grads_n[k], grads[k].numpy()) for k in P}
    assert max(errors.values()) <= 1e-9, errors


def float64_torch(params):
    return {k: torch.tensor(np.asarray(v, np.float64), requires_grad=True)
            for k, v in params.items()}


def he_parameters(shapes, seed):
    """Activations of order one in every layer (see test_numpy_vs_torch.py): float32 rounding
    can't flip a max pool's choice, so nets that sum in different orders route alike."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith(".weight"):
            out[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:])))
        else:
            out[name] = 0.1 * rng.standard_normal(shape)
        out[name] = out[name].astype(np.float32)
    return out


def torch_logits(P, x, groups, conv1_stride, keep6=None, keep7=None):
    """AlexNet's Figure 2 with G groups: conv2/4/5 grouped, LRN (α not divided by n: torch's
    divides, so it gets α·n) within each group, conv3 and the fc layers reading everything."""
    def lrn(h):
        return torch.cat([F.local_response_norm(c, 5, alpha=1e-4 * 5, beta=0.75, k=2.0)
                          for c in h.chunk(groups, dim=1)], dim=1)

    h = F.relu(F.conv2d(x, P["conv1.weight"], P["conv1.bias"], stride=conv1_stride, padding=2))
    h = F.max_pool2d(lrn(h), 3, 2)
    h = F.relu(F.conv2d(h, P["conv2.weight"], P["conv2.bias"], padding=2, groups=groups))
    h = F.max_pool2d(lrn(h), 3, 2)
    h = F.relu(F.conv2d(h, P["conv3.weight"], P["conv3.bias"], padding=1))
    h = F.relu(F.conv2d(h, P["conv4.weight"], P["conv4.bias"], padding=1, groups=groups))
    h = F.relu(F.conv2d(h, P["conv5.weight"], P["conv5.bias"], padding=1, groups=groups))
    h = F.max_pool2d(h, 3, 2).flatten(1)
    h = F.relu(F.linear(h, P["fc6.weight"], P["fc6.bias"]))
    if keep6 is not None:
        h = h * keep6 / 0.5
    h = F.relu(F.linear(h, P["fc7.weight"], P["fc7.bias"]))
    if keep7 is not None:
        h = h * keep7 / 0.5
    return F.linear(h, P["fc8.weight"], P["fc8.bias"])


def batch(graph, n, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, *graph.input_shape), dtype=np.float32),
            rng.integers(0, graph.classes, n))


def assert_same_net(multi_text, single_text, params, x, labels):
    """Two graphs compute one network: equal logits, loss and gradients (train mode: the same
    dropout masks from the same rng), on the NumPy reference in float64, every decision
    asserted at least 1e-9 of its layer's scale from a tie (module doc)."""
    multi = netspec.build(multi_text, "numpy", seed=0, dtype=np.float64)
    single = netspec.build(single_text, "numpy", seed=0, dtype=np.float64)
    multi.load_parameters(params)
    single.load_parameters(params)
    x = np.asarray(x, np.float64)
    assert_no_near_ties(multi.graph, multi.parameters(), x, margin=1e-9)
    assert_no_near_ties(multi.graph, multi.parameters(), x, margin=1e-9, noise_seed=11)
    assert rel(multi.forward(x), single.forward(x)) <= 1e-9
    multi.rng, single.rng = np.random.default_rng(11), np.random.default_rng(11)
    loss_m, grads_m = multi.loss_and_grads(x, labels, train=True)
    loss_s, grads_s = single.loss_and_grads(x, labels, train=True)
    assert abs(loss_m - loss_s) <= 1e-9 * abs(loss_s)
    assert list(grads_m) == list(grads_s)
    errors = {k: rel(grads_m[k], grads_s[k]) for k in grads_s}
    assert max(errors.values()) <= 1e-9, errors


def assert_device_follows(dev, x, labels):
    """The device's logits against the float64 reference's, and its loss and gradients
    against the reference deciding every max-pool and ReLU as the device did (module doc)."""
    ref = netspec.build(dev.graph, "numpy", seed=0, dtype=np.float64)
    ref.load_parameters(dev.parameters())
    close(dev.forward(x), ref.forward(np.asarray(x, np.float64)), "logits")
    loss, grads, ref_loss, ref_grads, _ = follows(dev, x, labels, noise_seed=11, check=close)
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss), (loss, ref_loss)
    assert list(grads) == list(ref_grads)
    for k in ref_grads:
        close(grads[k], ref_grads[k], f"{k} gradient")


# -- equivalence: two logical GPUs == one GPU with groups -------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec,n", [(ALEXNET, 2), (TINY, 2)], ids=["alexnet", "tiny"])
def test_two_gpus_equal_one_gpu_with_groups(backend, spec, n):
    two = netspec.build(spec, backend, seed=0)
    one = netspec.build(one_gpu_grouped(spec, 2), backend, seed=0)
    assert two.graph.gpus == 2 and len(two.graph.transfers) > 0
    assert one.graph.gpus == 1 and one.graph.transfers == []
    # the same parameters, names and PyTorch layouts: conv2.weight (256, 48, 5, 5) for both
    assert one.param_shapes == two.param_shapes
    params = he_parameters(two.param_shapes, seed=1)
    x, labels = batch(two.graph, n, seed=2)
    if backend == "numpy":
        assert_same_net(spec, one_gpu_grouped(spec, 2), params, x, labels)
        return
    for net in (two, one):          # each graph on the device as the reference runs it
        net.load_parameters(params)
        assert_device_follows(net, x, labels)


def test_grouped_one_gpu_matches_pytorch():
    """The one-GPU grouped net is itself the paper's network (an oracle for the above)."""
    net = netspec.build(one_gpu_grouped(TINY, 2), "numpy", seed=0, dtype=np.float64)
    params = he_parameters(net.param_shapes, seed=3)
    net.load_parameters(params)
    x, labels = batch(net.graph, 4, seed=4)
    x = x.astype(np.float64)
    P = float64_torch(params)
    logits = torch_logits(P, torch.from_numpy(x), groups=2, conv1_stride=2)
    check_against_torch(net, x, labels, P, logits)


# -- four logical GPUs, an uneven split -------------------------------------------------------
@pytest.fixture(scope="module")
def four_gpu_reference():
    """tiny-alexnet on 4 logical GPUs (fc8 split 3,3,2,2), NumPy, with its PyTorch check."""
    text = tiny_four_gpus(TINY)
    net = netspec.build(text, "numpy", seed=0, dtype=np.float64)
    params = he_parameters(net.param_shapes, seed=5)
    net.load_parameters(params)
    x, labels = batch(net.graph, 2, seed=6)
    return text, params, x, labels, net


def test_four_gpus_numpy_matches_pytorch(four_gpu_reference):
    text, params, x, labels, net = four_gpu_reference
    g = net.graph
    assert g.gpus == 4 and g.layer("fc8").gpu_split(4) == [3, 3, 2, 2]
    # conv3, fc6-fc8 each read the other three GPUs' parts; the softmax gathers fc8's three
    assert len(g.transfers) == 4 * 3 * 4 + 3
    P = float64_torch(params)
    x = x.astype(np.float64)
    logits = torch_logits(P, torch.from_numpy(x), groups=4, conv1_stride=2)
    check_against_torch(net, x, labels, P, logits)
    # and the one-GPU net with groups 4 is the same network
    assert_same_net(text, one_gpu_grouped(text, 4), params, x, labels)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_four_gpus_on_a_device_match_the_reference(backend, four_gpu_reference):
    text, params, x, labels, ref = four_gpu_reference
    net = netspec.build(text, backend, seed=0)
    k = min(len(net.device_names), 4)           # one device here: all four share it
    assert net.device_map == [g * k // 4 for g in range(4)]
    net.load_parameters(params)
    assert_device_follows(net, x, labels)


# -- `connect all`: each source part's gradient summed from every GPU's slice ------------------
ALL_TO_ALL = """network alltoall
input 3x6x6
classes 5
gpus 4
init weight gauss(0.3) bias 0.1
conv c1 filters 7 size 3 pad 1 relu split 1,2,2,2
fc f1 outputs 10 relu connect all split 3,3,2,2
fc f2 outputs 5 connect all gpu 0
softmax prob
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_connect_all_gradient_sums_match_pytorch(backend):
    """Four GPUs, uneven splits: every part of f1 reads all of c1's, so each c1 part's
    gradient is the sum of four slices, three of them summed by one kernel from a staging
    buffer (K = 2 or 3 slots, with or without the GPU's own slice, of different sizes per
    part): logits, loss and every gradient against PyTorch's autograd (float64); a device
    against the float64 reference deciding as it did (module doc)."""
    net = netspec.build(ALL_TO_ALL, backend, seed=0)
    if backend != "numpy":         # the plan does sum that way (see test_plan.py for counts)
        plan = net.compiled(3).plan
        sums = [s for s in plan.steps if s.phase == "backward" and s.layer == "f1"
                and s.kind == "launch" and s.args[0].startswith("c1.")]
        assert sorted(plan.kernels[s.kernel].consts.get("K") for s in sums) == [2, 2, 2, 3]
    params = he_parameters(net.param_shapes, seed=7)
    net.load_parameters(params)
    x, labels = batch(net.graph, 3, seed=8)
    if backend != "numpy":          # the device against the float64 reference (module doc)
        assert_device_follows(net, x, labels)
        return
    net = netspec.build(ALL_TO_ALL, "numpy", seed=0, dtype=np.float64)
    net.load_parameters(params)
    x = x.astype(np.float64)
    P = float64_torch(params)
    h = F.relu(F.conv2d(torch.from_numpy(x), P["c1.weight"], P["c1.bias"], padding=1))
    h = F.relu(F.linear(h.flatten(1), P["f1.weight"], P["f1.bias"]))
    logits = F.linear(h, P["f2.weight"], P["f2.bias"])
    check_against_torch(net, x, labels, P, logits)


# -- training: 20 SGD steps on two logical GPUs ----------------------------------------------
@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_twenty_sgd_steps_match_the_reference(backend):
    """tiny-alexnet, batch 2 (the kernels of the tests above), dropout on: 20 steps of the
    device's loss_and_grads + update(), each checked on the device's own parameters: loss and
    gradients against the float64 reference deciding every max-pool and ReLU as the device did
    (module doc), and the update against netspec.runtime.sgd.sgd_update from the device's
    gradients (1e-6 relative); all 20 steps move every tensor."""
    dev = netspec.build(TINY, backend, seed=1)
    assert dev.graph.gpus == 2
    lr_mults, decay_mults = layer_multipliers(dev.graph)
    w0 = dev.parameters()
    rng = np.random.default_rng(0)
    for step in range(20):
        x, labels = rng.standard_normal((2, 3, 64, 64), dtype=np.float32), rng.integers(0, 10, 2)
        params, velocity = dev.parameters(), dev.velocities()
        loss_d, grads_d, loss_r, grads_r, _ = follows(dev, x, labels, noise_seed=step,
                                                      check=close)
        assert abs(loss_d - loss_r) <= 1e-5 * abs(loss_r), (step, loss_d, loss_r)
        for k in grads_r:
            close(grads_d[k], grads_r[k], f"step {step} {k} gradient")
        dev.update(lr=0.01, momentum=0.9, weight_decay=0.0005)
        sgd_update(params, grads_d, velocity, 0.01, 0.9, 0.0005, lr_mults, decay_mults)
        got, v = dev.parameters(), dev.velocities()
        for k in params:
            assert rel(got[k], params[k]) <= 1e-6, (step, k, rel(got[k], params[k]))
            if np.abs(velocity[k]).max() > 0:
                assert rel(v[k], velocity[k]) <= 1e-6, (step, k)
    w20 = dev.parameters()
    assert all(not np.allclose(w20[k], w0[k]) for k in w20)


# -- devices ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_logical_gpus_share_one_device_and_say_so(backend):
    net = netspec.build(TINY, backend, seed=0, devices=[0])
    assert net.device_map == [0, 0]
    sharing = {"numpy": "run one after another", "opencl": "one queue each",
               "cuda": "one stream each"}[backend]
    assert net.device_note == f"2 logical GPUs on 1 device: {net.device_names[0]}, {sharing}"
    if len(net.device_names) == 1:            # the default on a one-device machine
        assert netspec.build(TINY, backend, seed=0).device_map == [0, 0]
    one = netspec.build(one_gpu_grouped(TINY), backend, seed=0)
    assert one.device_note == f"1 logical GPU on device 0: {one.device_names[0]}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_device_that_does_not_exist_is_a_clean_error(backend):
    with pytest.raises(DeviceError) as e:
        netspec.build(TINY, backend, seed=0, devices=[0, 7])
    assert isinstance(e.value, NetspecError)
    assert str(e.value).startswith(f"device 7 does not exist: backend '{backend}' has ")
    assert "0: " in str(e.value)               # the devices there are
    with pytest.raises(DeviceError, match="3 devices given for 2 logical GPUs"):
        netspec.build(TINY, backend, seed=0, devices=[0, 0, 0])
    with pytest.raises(DeviceError, match="devices is empty"):
        netspec.build(TINY, backend, seed=0, devices=[])


@pytest.mark.skipif(_why_no_opencl() is not None, reason=str(_why_no_opencl()))
def test_two_opencl_devices(tmp_path):
    """Two real devices: PoCL shows two CPU devices with POCL_DEVICES="pthread pthread" (read
    when the platform is first listed, so in a fresh process). Logical GPUs 0, 1 go to device
    0 and 2, 3 to device 1; the transfers between them are copies across devices in one
    context. The result must match the NumPy reference."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import numpy as np, netspec
        from net_specs import tiny_four_gpus
        from netspec.runtime.opencl_backend import opencl_devices
        text = tiny_four_gpus(open({str(ROOT / "examples/tiny-alexnet.net")!r}).read())
        if len(opencl_devices()) < 2:
            print("SKIP: POCL_DEVICES gave one device here"); sys.exit(0)
        net = netspec.build(text, "opencl", seed=0, devices=[0, 1])
        ref = netspec.build(text, "numpy", seed=0)
        net.load_parameters(ref.parameters())
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 64, 64), dtype=np.float32)
        labels = rng.integers(0, 10, 2)
        print("NOTE", net.device_note)
        print("MAP", net.device_map)
        a, b = net.forward(x), ref.forward(x)
        print("LOGITS", float(np.abs(a - b).max() / np.abs(b).max()))
        la, ga = net.loss_and_grads(x, labels)
        lb, gb = ref.loss_and_grads(x, labels)
        print("LOSS", abs(la - lb) / abs(lb))
        print("GRADS", max(float(np.abs(ga[k] - gb[k]).max() / np.abs(gb[k]).max()) for k in gb))
    """)
    env = dict(os.environ, POCL_DEVICES="pthread pthread")
    r = subprocess.run([sys.executable, "-c", script],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    if r.stdout.startswith("SKIP"):
        pytest.skip(r.stdout.strip())
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert out["MAP"] == "[0, 0, 1, 1]"
    assert out["NOTE"].startswith("4 logical GPUs on 2 devices (0: ") and \
        out["NOTE"].endswith("GPU 0 on 0, GPU 1 on 0, GPU 2 on 1, GPU 3 on 1, one queue each")
    assert float(out["LOGITS"]) <= 1e-4 and float(out["LOSS"]) <= 1e-5
    assert float(out["GRADS"]) <= 1e-3


# -- ordering by events ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_no_synchronisation_inside_a_step(backend):
    """loss_and_grads enqueues the whole forward and backward, transfers included, before it
    waits for anything: the streams are ordered by events only. The one wait inside the step
    comes when the results go to the host (then the gradient downloads); a wait before its
    first step (OpenCL's barrier behind the previous run, with nothing of this step enqueued)
    is between steps, not inside one."""
    from netspec.runtime import backend_class
    cls = backend_class(backend)

    class Watched(cls):
        finishes = None          # the steps enqueued so far at each wait, once watching

        def _dev_finish(self):
            if self.finishes is not None:
                self.finishes.append(self.enqueued)
            super()._dev_finish()

    net = Watched(build_graph(TINY), seed=0)
    x, labels = batch(net.graph, 2, seed=0)
    net.loss_and_grads(x, labels)                    # compile and upload first
    net.enqueued, net.finishes = 0, []

    def hook(when, step, event):
        if when == "after":
            net.enqueued += 1
    net.step_hook = hook
    net.loss_and_grads(x, labels, train=True)
    plan = net.compiled(2).plan
    steps = plan.steps_for("forward", True) + plan.steps_for("backward", True)
    transfers = [s for s in steps if s.kind == "copy" and s.src_gpu != s.dst_gpu]
    assert len(transfers) == 2 * len(net.graph.transfers)
    inside = [f for f in net.finishes if f > 0]
    assert inside and inside[0] == len(steps), net.finishes


# -- CUDA: peer copies and overlap -----------------------------------------------------------
def _cuda_devices() -> int:
    from netspec.runtime.cuda_backend import cuda_device_count
    return cuda_device_count()          # emulated ones included (2 there)


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_devices() < 2, reason=f"needs 2 CUDA devices for peer copies "
                                                  f"(found {_cuda_devices()}: "
                                                  f"{cuda_unavailable_reason() or 'only one'})")
def test_two_cuda_devices_match_the_reference():
    """Logical GPU g on CUDA device g: transfers are cudaMemcpyPeerAsync between devices. The
    reference is NumPy in float64 deciding every max-pool and ReLU as the devices did (module
    doc)."""
    net = netspec.build(TINY, "cuda", seed=0, devices=[0, 1])
    assert net.device_map == [0, 1] and "on 2 devices" in net.device_note
    net.load_parameters(he_parameters(net.param_shapes, seed=1))
    x, labels = batch(net.graph, 4, seed=2)
    assert_device_follows(net, x, labels)


@pytest.mark.gpu
@pytest.mark.skipif(cuda_unavailable_reason() is not None, reason=str(cuda_unavailable_reason()))
@pytest.mark.skipif(cuda_emulated(), reason="overlap is timing: the CPU emulator runs streams "
                                            "one after another, only a GPU shows overlap")
def test_cuda_transfers_overlap_compute():
    """Timing events around every kernel and copy of one training step of AlexNet (batch 64,
    two logical GPUs, each on its own stream of the one device here): for each transfer, how
    much of its time another stream was computing. Printed (run with -s); asserted only that
    every transfer was timed and the intervals are consistent."""
    from netspec.runtime.cuda_backend import CudaNet
    g = build_graph(ALEXNET)
    net = CudaNet(g, seed=0)
    n = 64
    x, labels = batch(g, n, seed=0)
    net.loss_and_grads(x, labels, train=True)         # compile, allocate, upload
    cp = net.cp
    spans, opened = [], {}

    def event(gpu):
        with net._device(gpu):
            e = cp.cuda.Event()
            e.record(net._stream(gpu))
        return e

    def hook(when, step, ev):
        if step.kind in ("launch", "copy"):
            if when == "before":
                opened[step.id] = event(step.gpu)
            else:
                spans.append((step, opened.pop(step.id), event(step.gpu)))

    net._dev_finish()
    t0 = event(0)
    net.step_hook = hook
    try:
        net.loss_and_grads(x, labels, train=True)
    finally:
        net.step_hook = None
    ms = lambda e: cp.cuda.get_elapsed_time(t0, e)
    timed = [(s, ms(a), ms(b)) for s, a, b in spans]
    compute = {gpu: [(a, b) for s, a, b in timed if s.kind == "launch" and s.gpu == gpu]
               for gpu in range(g.gpus)}
    copies = [(s, a, b) for s, a, b in timed if s.kind == "copy" and s.src_gpu != s.dst_gpu]
    plan = net.compiled(n).plan
    assert len(copies) == sum(1 for s in plan.steps_for("forward", True)
                              + plan.steps_for("backward", True)
                              if s.kind == "copy" and s.src_gpu != s.dst_gpu)
    total = overlapped = 0.0
    print(f"\nAlexNet batch {n}, {net.device_note}")
    for s, a, b in copies:
        assert 0 <= a <= b
        others = [iv for gpu, ivs in compute.items() if gpu != s.gpu for iv in ivs]
        over = _covered(a, b, others)
        assert over <= (b - a) + 1e-6
        total, overlapped = total + (b - a), overlapped + over
        print(f"  {s.phase:8s} {s.layer:6s} GPU {s.src_gpu}->{s.dst_gpu} "
              f"{4 * s.elements / 2**20:6.2f} MiB  {b - a:7.3f} ms, {over:7.3f} ms of it "
              f"while GPU {1 - s.gpu}'s stream computed")
    step_ms = max(b for _, _, b in timed)
    both = _covered_pairs(compute[0], compute[1])
    print(f"  transfers {total:.3f} ms, {overlapped:.3f} ms ({100 * overlapped / total:.0f}%) "
          f"overlapped by the other stream's kernels; step {step_ms:.1f} ms; the two streams' "
          f"kernels ran concurrently for {both:.1f} ms")


def _covered(a: float, b: float, intervals) -> float:
    """Length of [a, b] covered by the union of `intervals`."""
    pieces = sorted((max(a, x), min(b, y)) for x, y in intervals if x < b and a < y)
    out, end = 0.0, a
    for x, y in pieces:
        if y > end:
            out += y - max(x, end)
            end = y
    return out


def _covered_pairs(first, second) -> float:
    return sum(_covered(a, b, second) for a, b in _merged(first))


def _merged(intervals):
    out = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
