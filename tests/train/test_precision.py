"""`precision tf32 | bf16` trains as fp32 does, on the CUDA emulator (tensor-core GEMMs through
its nvcuda::wmma). The oracle is the same net in `precision fp32` from the same seed: TF32
keeps 10 mantissa bits of every GEMM operand (relative error <= 2^-11 per operand), BF16 7
(2^-8): the first loss stays within a few of those units of fp32's, and the losses of a few
steps descend together.

Fast: a small conv + fc net, a few SGD steps on one batch. Slow (NETSPEC_RUN_SLOW=1):
tiny-alexnet trained on a reduced demo set for a few epochs in each precision; the
validation top-1 errors agree within 0.1 (two standard errors of 200 validation images at
~50% error are 0.07)."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from netspec.ir.build import build_graph
from netspec.runtime.cuda_backend import CudaNet, cuda_emulated

pytestmark = pytest.mark.skipif(not cuda_emulated() or shutil.which("g++") is None,
                                reason="runs the tensor-core GEMMs on the CPU emulator: needs "
                                       "NETSPEC_CUDA_EMULATE=1 (or no CUDA device) and g++")

SMALL = """network small
input 3x16x16
classes 10
init weight gauss(0.1) bias 0
conv c1 filters 16 size 3 pad 1 relu
maxpool p1 size 2 stride 2
conv c2 filters 24 size 3 pad 1 relu
fc f3 outputs 48 relu
fc f4 outputs 10
softmax prob
train
  batch 16
"""


def losses(precision: str, steps: int = 5) -> list[float]:
    graph = build_graph(SMALL + f"  precision {precision}\n")
    assert graph.recipe.precision == precision
    net = CudaNet(graph, seed=0, devices=[0])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    y = np.arange(16) % 10
    out = []
    for _ in range(steps):
        loss, _ = net.loss_and_grads(x, y, train=True)
        net.update(0.05, 0.9, 0.0005)
        out.append(float(loss))
    return out


def test_tensor_core_precisions_train_a_few_steps_as_fp32():
    ref = losses("fp32")
    assert all(b < a for a, b in zip(ref, ref[1:])), ref
    # the first loss (same weights): the forward's rounding alone, a few units of 2^-11
    # (tf32) or 2^-8 (bf16) at most; after 4 updates the trajectories drift apart by more
    # but still descend together. Measured: first loss off by 7.8e-5 (tf32) and 5.6e-5
    # (bf16), the 5 steps by at most 1.2e-2 and 5.8e-3
    for precision, first, later in (("tf32", 2.0 ** -10, 0.05), ("bf16", 2.0 ** -8, 0.05)):
        got = losses(precision)
        assert all(b < a for a, b in zip(got, got[1:])), (precision, got)
        assert abs(got[0] - ref[0]) / ref[0] < first, (precision, got, ref)
        assert max(abs(g - r) / r for g, r in zip(got, ref)) < later, (precision, got, ref)
        assert got[0] != ref[0], f"{precision} computed fp32's loss exactly: no rounding"


TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "examples", "tiny-alexnet.net")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NETSPEC_RUN_SLOW") != "1",
                    reason="tiny-alexnet trained 3 times on the emulator (about an hour on 2 "
                           "cores); NETSPEC_RUN_SLOW=1 runs it")
def test_tiny_alexnet_trains_the_demo_to_fp32s_accuracy(tmp_path):
    from netspec.data.demo import ensure_demo
    from netspec.train.loop import Trainer, TrainOptions
    data = ensure_demo(seed=0, train_per_class=64, val_per_class=20, progress=False)
    text = open(TINY).read()
    errors = {}
    for precision in ("fp32", "tf32", "bf16"):
        spec = tmp_path / f"tiny-{precision}.net"
        spec.write_text(text + f"  precision {precision}\n")
        opts = TrainOptions(spec=str(spec), data=str(data), backend="cuda", epochs=4,
                            batch_size=32, out=str(tmp_path / precision), progress=False,
                            figures=False)
        result = Trainer(opts, echo=lambda *a, **k: None).run()
        errors[precision] = result["last"]["val_top1_error"]
    assert errors["fp32"] < 0.7, errors                 # it learned (chance: 0.9)
    for precision in ("tf32", "bf16"):
        assert abs(errors[precision] - errors["fp32"]) <= 0.1, errors


def test_numpy_backend_rounds_the_gemm_operands_as_the_device():
    """NumpyNet in float64 with `precision tf32` (operands rounded, products summed in
    float64) against emulated CUDA's wmma (the same rounding, FP32 accumulation): gradients
    within 1e-4 of the largest (float32 sums), while NumPy's own fp32 run is off by far
    more — so both really round, and round alike."""
    from netspec.runtime.numpy_backend import NumpyNet
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 3, 16, 16))
    y = np.arange(16) % 10
    grads = {}
    for backend, precision in (("cuda", "tf32"), ("numpy", "tf32"), ("numpy", "fp32")):
        graph = build_graph(SMALL + f"  precision {precision}\n")
        net = CudaNet(graph, seed=0, devices=[0]) if backend == "cuda" else \
            NumpyNet(graph, seed=0, dtype=np.float64)
        _, g = net.loss_and_grads(x.astype(net.dtype if backend == "numpy" else np.float32),
                                  y, train=False)
        grads[backend, precision] = {k: np.asarray(v, np.float64) for k, v in dict(g).items()}

    def rel(a, b):
        return max(float(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()) for k in b)
    dev, ref, exact = grads["cuda", "tf32"], grads["numpy", "tf32"], grads["numpy", "fp32"]
    assert rel(dev, ref) <= 1e-4, rel(dev, ref)
    assert rel(dev, exact) > 10 * rel(dev, ref), (rel(dev, exact), rel(dev, ref))
