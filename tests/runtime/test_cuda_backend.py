"""backend="cuda" (CuPy): what only it has. On a CUDA device, or, where none answers, on
netspec's CPU emulator (NETSPEC_CUDA_EMULATE=1, which tests/conftest.py sets): the same CudaNet
code either way. The checks it shares with the other backends run from
tests/ops/test_layers_on_backends.py (every layer type, check_layer) and
test_plan_backends.py (whole networks against the NumPy reference, plan_oracle.py)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from test_numpy_vs_torch import check_alexnet_batch2_against_torch, he_parameters, rel

from netspec.ir.build import build_graph
from netspec.runtime.cuda_backend import (
    CudaNet,
    cuda_device_count,
    cuda_emulated,
    cuda_unavailable_reason,
)

from net_specs import BRANCHES
from plan_oracle import check_end_to_end, check_kernels_in_place

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(cuda_unavailable_reason() is not None,
                                 reason=str(cuda_unavailable_reason()))]


@pytest.mark.skipif(cuda_device_count() < 2,
                    reason=f"needs 2 CUDA devices for the peer copies, {cuda_device_count()} "
                           f"answered (the emulator has 2 by default)")
def test_alexnet_two_devices_matches_pytorch(root):
    """The paper's net on two devices (logical GPU g on device g: the transfers are peer copies)
    at batch 2 against PyTorch (test_numpy_vs_torch.py's Figure 2 implementation, same
    weights): logits within 1e-4, the loss within 1e-4 and every gradient within 1e-3
    (relative to the largest PyTorch value)."""
    import netspec
    net = netspec.build(root / "specs/alexnet.net", backend="cuda", seed=0)
    assert net.device_map == [0, 1] and "on 2 devices" in net.device_note
    _, _, _, logits, _, _ = check_alexnet_batch2_against_torch(net)
    assert rel(net.last_logits, logits) <= 1e-4     # the training pass's logits too


@pytest.mark.slow
@pytest.mark.skipif(cuda_emulated() and not os.environ.get("NETSPEC_RUN_SLOW"),
                    reason="batch 128 emulated on the CPU takes about 15 minutes; "
                           "NETSPEC_RUN_SLOW=1 runs it")
def test_alexnet_full_batch_runs(root):
    """The spec's own batch (128): the plan's memory fits, and the loss and gradients are the
    NumPy float64 reference's on the same input and seed (dropout masks included). Weights as
    in test_numpy_vs_torch.py (activations of order one): at the spec's N(0, 0.01) init a max
    pool's choice is decided by float32 rounding, and conv1's gradient differed from NumPy's
    by 2.2% (L2) for that reason alone (measured, emulated). Nor is the loss at that init
    ln 1000: the reference gives 7.9558 on this input.

    Even at these weights, 128 images x 4096 units make a ReLU whose float64 pre-activation is
    within float32 rounding of 0 likely: float32 (any summation order) may switch it either
    way. The forward is continuous there (logits, loss and fc8's gradients match to float32
    rounding), but the switched unit routes one image's gradient, or not, through every layer
    below. Measured (emulated): here fc7's unit 2993 on image 52 has a float64 pre-activation
    of -4.7e-6 against Σ|terms| 61; its |dy| is 2.70e-2 of max|fc7.bias grad|, exactly the
    max-norm error of fc7.bias measured against NumPy (and everything below fc7 moved by
    ~3e-3). NumPy float32 happened to round that unit the float64 way. AlexNet's fc head alone
    at batch 128 showed the same on emulated CUDA and PoCL alike (one fc7 unit of 524288,
    fc7.bias 3.2e-2, the layers below 2e-3 in L2), while every kernel matched its reference op
    fed the device's own inputs. So fc8 is held to the max norm, the layers below to the L2
    norm (as plan_oracle's end-to-end check), and the kernels' exactness at batch 128 comes
    from test_fc_head_at_batch_128_matches_reference, which feeds every kernel the device's
    own inputs."""
    from netspec.runtime.numpy_backend import NumpyNet
    g = build_graph(root / "specs/alexnet.net")
    net = CudaNet(g, seed=0)
    ref = NumpyNet(g, seed=0, dtype=np.float64)
    params = he_parameters(net.param_shapes, seed=1)
    net.load_parameters(params)
    ref.load_parameters(params)
    x = np.random.default_rng(0).standard_normal((128, 3, 224, 224)).astype(np.float32)
    labels = np.arange(128) % 1000
    loss, grads = net.loss_and_grads(x, labels, train=True)
    loss_r, grads_r = ref.loss_and_grads(x.astype(np.float64), labels, train=True)
    assert abs(loss - loss_r) <= 1e-6 * abs(loss_r), (loss, loss_r)
    assert all(np.isfinite(v).all() for v in grads.values())
    top = {k: rel(grads[k], grads_r[k]) for k in ("fc8.weight", "fc8.bias")}
    assert max(top.values()) <= 1e-4, top
    l2 = {k: float(np.linalg.norm(grads[k] - grads_r[k]) / np.linalg.norm(grads_r[k]))
          for k in grads_r}
    assert max(l2.values()) <= 1e-2, l2


@pytest.mark.skipif(not cuda_emulated(), reason="the emulator's second pass (a GPU schedules "
                                                "threads its own way)")
@pytest.mark.parametrize("spec", ["examples/tiny-alexnet.net", "branches"])
def test_reversed_threads_and_streams_match_reference(root, spec):
    """The emulator's second pass: every block's threads in reverse order and the first stream
    preferred, so that races within a block and missing waits between streams show."""
    from netspec.runtime.cuda_emulator import cupy_model as emu
    saved = emu.settings.thread_order, emu.settings.stream_order
    emu.settings.thread_order, emu.settings.stream_order = "reverse", "first"
    try:
        g = build_graph(BRANCHES if spec == "branches" else root / spec)
        net = CudaNet(g, seed=3)
        check_kernels_in_place(net, g, 2, seed=3, train=True)
        check_end_to_end(net, g, 2, seed=3, train=True)
    finally:
        emu.settings.thread_order, emu.settings.stream_order = saved


@pytest.mark.skipif(not cuda_emulated(), reason="the emulator's second pass")
@pytest.mark.parametrize("case", ["conv-stride-pad-relu-2gpu-all", "maxpool", "softmax"])
def test_layers_with_reversed_threads_and_streams(case):
    """One layer alone (check_layer) under the emulator's second pass; the modules are the ones
    tests/ops/test_layers_on_backends.py built for the same case."""
    from netspec.runtime.cuda_emulator import cupy_model as emu

    from layercheck import CASES, check_layer
    op_type, attrs, shape, kw = CASES[case]
    saved = emu.settings.thread_order, emu.settings.stream_order
    emu.settings.thread_order, emu.settings.stream_order = "reverse", "first"
    try:
        check_layer(op_type, attrs, shape, backends=["cuda"], **kw)
    finally:
        emu.settings.thread_order, emu.settings.stream_order = saved


def test_device_count_agrees():
    if cuda_emulated():
        from netspec.runtime.cuda_emulator import cupy_model as emu
        assert cuda_device_count() == emu.settings.devices >= 2     # the peer-copy path runs
    else:
        import cupy
        assert cuda_device_count() == cupy.cuda.runtime.getDeviceCount()


def test_missing_cuda_headers_name_the_package(root, monkeypatch):
    """CuPy raises RuntimeError("Failed to find CUDA headers") from its compile options where
    NVRTC has no cuda_runtime.h (CUDA 12.2+ needs it): one line naming the pip package that
    brings the headers, not a traceback from CuPy."""
    from netspec.errors import BackendUnavailableError
    net = CudaNet(build_graph(root / "examples/tiny-alexnet.net"), seed=0)

    def no_headers(*a, **k):
        raise RuntimeError("Failed to find CUDA headers. Please set CUDA_PATH")
    monkeypatch.setattr(net.cp, "RawModule", no_headers)
    with pytest.raises(BackendUnavailableError, match=r"cupy-cuda12x\[ctk\]") as e:
        net.compiled(3)
    assert "Failed to find CUDA headers" in str(e.value) and "\n" not in str(e.value)


def test_the_plan_is_sized_for_the_devices_multiprocessors(root, monkeypatch):
    """GEMM grids and split-K fill the device's SMs (kernel/gemm.py choose_gemm): the CUDA
    backend plans for the fewest multiprocessors among its devices, as
    getDeviceProperties reports them (the emulator: 132, an H100's; here 8)."""
    from netspec.ir.build import build_graph
    from netspec.runtime.autotune import compile_tuned
    from netspec.runtime.cuda_backend import CudaNet
    from netspec.runtime.cuda_emulator import cupy_model
    real = cupy_model.getDeviceProperties
    g = build_graph(root / "examples/tiny-alexnet.net")
    many = {k: v["global"] for k, v in CudaNet(g, seed=0).compiled(64).plan.to_json()
            ["kernels"].items()}
    monkeypatch.setattr(cupy_model.runtime, "getDeviceProperties",
                        lambda i: {**real(i), "multiProcessorCount": 8})
    few = {k: v["global"] for k, v in CudaNet(g, seed=0).compiled(64).plan.to_json()
           ["kernels"].items()}
    want = {k: v["global"] for k, v in compile_tuned(g, 64, backend=CudaNet, sm_count=8)
            .plan.to_json()["kernels"].items()}
    assert few == want
    assert few != many


def test_a_uint8_batch_is_finished_on_the_device(root):
    """kernel/colour.py's PREPARE_INPUT built by NVRTC (or the emulator) and run on a
    U8Batch: the logits are those of the host's float32 batch (U8Batch.to_float): equal on
    the emulator; on a GPU within 1e-6 relative, as CUDA's double log, sin and cos may put a
    colour shift one float32 ulp from the C library's."""
    from netspec.data.augment import InputTransform, U8Batch
    from netspec.data.stats import PCA
    text = (root / "examples/tiny-alexnet.net").read_text()
    graph = build_graph("".join(line for line in text.splitlines(keepends=True)
                                if not line.startswith("dropout")))
    rng = np.random.default_rng(3)
    crop, base, n = graph.input_shape[-1], graph.input_shape[-1] + 8, 3
    vec, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    t = InputTransform(rng.uniform(0, 255, (3, base, base)).astype(np.float32),
                       PCA(np.array([0.2, 0.02, 0.005]), vec), 0.1, 11)
    b = U8Batch(rng.integers(0, 256, (n, 3, crop, crop), dtype=np.uint8),
                rng.integers(0, base - crop + 1, (n, 2)), rng.random(n) < 0.5, t, 1, 5)
    net = CudaNet(graph, seed=0, devices=[0, 0])
    got, want = net.forward(b), net.forward(b.to_float())
    if cuda_emulated():
        np.testing.assert_array_equal(got, want)
    else:
        assert rel(got, want) <= 1e-6
