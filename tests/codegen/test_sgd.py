"""The one SGD rule (netspec/codegen/sgd.py, paper §5): the NumPy form (netspec/runtime/sgd.py)
against PyTorch's SGD, and the generated kernel, run on PoCL, against the NumPy form."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netspec.codegen.sgd import sgd_kernel
from netspec.kernel.dialects import OPENCL
from netspec.runtime.sgd import sgd_step, sgd_update


def test_numpy_rule_matches_torch_sgd():
    """At a constant learning rate the paper's v ← μv − λεw − εg ; w ← w + v is PyTorch's
    SGD(momentum=μ, weight_decay=λ, dampening=0) with its buffer b = −v/ε (float64, 4 steps)."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((5, 3))
    grads = [rng.standard_normal((5, 3)) for _ in range(4)]
    lr, mu, wd = 0.05, 0.9, 0.0005
    w, v = w0.copy(), np.zeros_like(w0)
    tw = torch.tensor(w0, requires_grad=True)
    opt = torch.optim.SGD([tw], lr=lr, momentum=mu, weight_decay=wd)
    for g in grads:
        sgd_step(w, v, g, lr, mu, wd)
        tw.grad = torch.tensor(g)
        opt.step()
        np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-12, atol=1e-15)


def test_update_applies_each_tensors_multipliers():
    """sgd_update is sgd_step per tensor with ε = lr·lr_mult, λ = weight_decay·decay_mult,
    worked by hand for one value."""
    params = {"a": np.array([1.0]), "b": np.array([2.0])}
    velocity = {"a": np.array([0.5]), "b": np.array([0.0])}
    grads = {"a": np.array([4.0]), "b": np.array([1.0])}
    sgd_update(params, grads, velocity, 0.1, 0.9, 0.01, {"a": 2.0}, {"b": 0.0})
    # a: ε = 0.2, λ = 0.01: v = 0.45 − 0.002 − 0.8 = −0.352 ; w = 0.648
    np.testing.assert_allclose(velocity["a"], [-0.352], rtol=1e-12)
    np.testing.assert_allclose(params["a"], [0.648], rtol=1e-12)
    # b: ε = 0.1, λ = 0: v = −0.1 ; w = 1.9
    np.testing.assert_allclose(params["b"], [1.9], rtol=1e-12)


def test_generated_kernel_matches_the_numpy_rule():
    cl = pytest.importorskip("pyopencl", reason="pyopencl is not installed")
    from netspec.runtime.opencl_backend import find_device
    dev = find_device()
    if dev is None:
        pytest.skip("no OpenCL device (install pocl)")
    # two tensors with their own multipliers and a gap of padding between them
    segs = [(0, 300, 1.0, 1.0, "conv.weight"), (320, 333, 2.0, 0.0, "conv.bias")]
    n = 333
    k = sgd_kernel("sgd_test", n, segs)
    rng = np.random.default_rng(7)
    w = rng.standard_normal(n, dtype=np.float32)
    v = rng.standard_normal(n, dtype=np.float32) * np.float32(0.1)
    g = rng.standard_normal(n, dtype=np.float32)
    lr, mu, wd = np.float32(0.01), np.float32(0.9), np.float32(0.0005)

    ctx = cl.Context([dev])
    queue = cl.CommandQueue(ctx)
    prog = cl.Program(ctx, OPENCL.prelude + k.render(OPENCL)).build()
    mf = cl.mem_flags
    bw = cl.Buffer(ctx, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=w)
    bv = cl.Buffer(ctx, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=v)
    bg = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=g)
    prog.sgd_test(queue, k.global_size, k.local_size, bw, bv, bg, lr, mu, wd)
    w_dev, v_dev = np.empty_like(w), np.empty_like(v)
    cl.enqueue_copy(queue, w_dev, bw)
    cl.enqueue_copy(queue, v_dev, bv)
    queue.finish()

    w_ref, v_ref = w.copy(), v.copy()
    for a, b, lm, dm, _ in segs:
        sgd_step(w_ref[a:b], v_ref[a:b], g[a:b], lr * np.float32(lm), mu, wd * np.float32(dm))
    # the same four float32 steps; a device may fuse a multiply-add (one rounding fewer)
    np.testing.assert_allclose(w_dev, w_ref, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(v_dev, v_ref, rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(w_dev[300:320], w[300:320])     # padding untouched
    np.testing.assert_array_equal(v_dev[300:320], v[300:320])
