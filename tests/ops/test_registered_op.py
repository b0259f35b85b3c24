"""A layer type defined and registered in this file alone (netspec.ops.register): a sigmoid,
y = 1 / (1 + e^−x). Nothing outside this file knows it, yet a spec can use it, it compiles to
CUDA C and OpenCL C, trains on the numpy and opencl backends, and draws in the diagram: a
layer type's whole story is its `Op`.

Oracles: PyTorch's sigmoid and autograd for the math, nvcc and PoCL for the two sources, the
numpy backend for the opencl backend's training steps.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from netspec.codegen.compile import compile_network
from netspec.ir.build import build_graph
from netspec.kernel import Call, Kernel, elementwise_launch, params
from netspec.ops import OPS, Op, ParamDef, register, unregister
from netspec.runtime import build
from netspec.runtime.sgd import layer_multipliers, sgd_update

from layercheck import BACKEND_NAMES, check_layer
from numgrad import check_op_grads

SIGMOID_FWD = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i < ${N})
        y[i] = 1.0f / (1.0f + $exp(-x[i]));
}
"""

SIGMOID_BWD = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i < ${N})
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}
"""


class Sigmoid(Op):
    type = "sigmoid"
    doc = "logistic sigmoid, 1 / (1 + exp(-x)) (test-only layer type)"
    colour, label = "#e377c2", "sigmoid (test op)"

    def describe(self, a):
        return "σ(x)"

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        one = x.dtype.type(1)
        y = one / (one + np.exp(-x))
        return y, y

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        y = cache
        return dy * y * (y.dtype.type(1) - y), ()

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        return torch.sigmoid

    def forward_kernels(self, c):
        n = c.out_elements
        gs, ls = elementwise_launch(n)
        return [Call(Kernel(f"{c.prefix}_fwd", SIGMOID_FWD, params("in x", "out y"), dict(N=n),
                            gs, ls, doc="y = 1 / (1 + exp(-x))", flops=4 * n,
                            layer=c.layer.name), ("x", "y"))]

    def backward_kernels(self, c):
        if not c.input_grad:
            return []
        n = c.out_elements
        gs, ls = elementwise_launch(n)
        return [Call(Kernel(f"{c.prefix}_bwd", SIGMOID_BWD, params("in dy", "in y", "out dx"),
                            dict(N=n), gs, ls, doc="dx = dy * y * (1 - y)", flops=3 * n,
                            layer=c.layer.name), ("dy", "y", "dx"))]


SPEC = """
network sig
input 3x8x8
classes 4
gpus 2
init weight gauss(0.3) bias 0.1
conv c1 filters 6 size 3 stride 1 pad 1
sigmoid s1
fc f2 outputs 4 connect all
softmax prob
train
  batch 4
"""


@pytest.fixture
def sigmoid():
    op = register(Sigmoid())
    yield op
    unregister(op.type)


def test_register_refuses_a_taken_keyword():
    with pytest.raises(ValueError, match="exists already"):
        register(type(OPS["relu"])())


def test_math_matches_torch_and_finite_differences(sigmoid):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4, 4))
    y, cache = sigmoid.forward({}, x)
    t = torch.tensor(x, requires_grad=True)
    ty = torch.sigmoid(t)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
    dy = rng.standard_normal(x.shape)
    ty.backward(torch.tensor(dy))
    dx, grads = sigmoid.backward({}, dy, cache)
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=1e-12)
    assert grads == ()
    check_op_grads(sigmoid, {}, x[:1, :2], seed=1)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_check_layer_on_every_backend(sigmoid, backend):
    """The registered op, alone, forward and backward on each backend against its NumPy
    reference and its torch() form (tests/layercheck.py)."""
    check_layer("sigmoid", {}, (4, 3, 3), gpus=2, backends=[backend])


def test_without_a_torch_form_it_says_so(sigmoid):
    from netspec.bench.vs_pytorch import NotComparable, torch_layers
    bare = Op()
    bare.type = "bare"
    with pytest.raises(NotImplementedError, match="layer type 'bare' has no PyTorch form"):
        bare.torch({})
    saved = type(sigmoid).torch
    del type(sigmoid).torch
    try:
        g = build_graph(SPEC)
        with pytest.raises(NotComparable, match="s1: layer type sigmoid is not mirrored in "
                                                "PyTorch .*has no PyTorch form"):
            torch_layers(g, g.param_shapes())
    finally:
        type(sigmoid).torch = saved


def test_spec_uses_it_and_the_ir_knows_its_shape(sigmoid):
    g = build_graph(SPEC)
    s1 = g.layer("s1")
    assert s1.op is sigmoid and s1.out_shape == (6, 8, 8)
    assert [p.gpu for p in s1.parts] == [0, 1]           # follows its input's parts


def test_without_registration_the_keyword_is_unknown():
    from netspec.dsl.errors import SpecError
    with pytest.raises(SpecError, match="sigmoid"):
        build_graph(SPEC)


def test_compiles_to_both_dialects(sigmoid, tmp_path):
    c = compile_network(build_graph(SPEC), 4)
    assert "s1_fwd" in c.plan.kernels and "s1_bwd" in c.plan.kernels   # both parts share it
    assert "expf(-x[i])" in c.cuda_source
    assert "exp(-x[i])" in c.opencl_source
    cl = pytest.importorskip("pyopencl", reason="pyopencl is not installed")
    from netspec.runtime.opencl_backend import find_device
    dev = find_device()
    if dev is None:
        pytest.skip("no OpenCL device (install pocl)")
    program = cl.Program(cl.Context([dev]), c.opencl_source).build()
    assert set(program.get_info(cl.program_info.KERNEL_NAMES).split(";")) == set(c.plan.kernels)
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on the PATH (CUDA toolkit not installed)")
    files = c.write(tmp_path)
    out = tmp_path / "k.ptx"
    r = subprocess.run([nvcc, "-ptx", "-arch=sm_80", str(files["cuda"]), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert ".entry s1_fwd" in out.read_text()


def test_trains_on_numpy_and_opencl(sigmoid):
    """Five SGD steps on one batch: the opencl backend's losses and parameters follow the
    numpy backend's (float32; the kernels sum in another order, so within 1e-4), and the loss
    falls."""
    pytest.importorskip("pyopencl", reason="pyopencl is not installed")
    from netspec.runtime.opencl_backend import find_device
    if find_device() is None:
        pytest.skip("no OpenCL device (install pocl)")
    g = build_graph(SPEC)
    ref = build(g, "numpy", seed=3)
    dev = build(g, "opencl", seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8, 8), dtype=np.float32)
    y = np.array([0, 1, 2, 3])
    lr_mults, decay_mults = layer_multipliers(g)
    params = ref.parameters()
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    losses = []
    for _ in range(5):
        loss_r, grads = ref.loss_and_grads(x, y)
        loss_d, _ = dev.loss_and_grads(x, y)
        assert abs(loss_d - loss_r) <= 1e-4 * abs(loss_r), (loss_d, loss_r)
        losses.append(loss_r)
        sgd_update(params, grads, velocity, 0.1, 0.9, 0.0005, lr_mults, decay_mults)
        ref.load_parameters(params)
        dev.update(0.1, 0.9, 0.0005)
    assert losses[-1] < losses[0]
    after = dev.parameters()
    for k, w in ref.parameters().items():
        assert np.abs(after[k] - w).max() <= 1e-4 * np.abs(w).max(), k


def test_draws_in_the_diagram(sigmoid, tmp_path):
    from netspec.viz import render_diagram
    out = render_diagram(build_graph(SPEC), tmp_path / "sig.svg")
    svg = out.read_text()
    assert "σ(x)" in svg                      # the header: the op's describe()
    assert "sigmoid (test op)" in svg         # the legend: the op's label
    assert Sigmoid.colour in svg.lower()      # its boxes: the op's colour


# -- a layer with state: a tensor its op keeps but SGD never trains ---------------------------

class FrozenMaskFC(type(OPS["fc"])):
    """fc plus a `mask` the op carries (ones, not trainable), as a layer with a running mean
    would: kept, initialised, saved and loaded with the parameters; no gradient; SGD leaves
    it alone. Its math and kernels are fc's (the mask is carried, not read)."""

    type = "maskedfc"
    colour, label = "#17becf", "fc with state (test op)"

    def parameters(self, a, in_shape, in_ch, out_ch):
        weight, bias = super().parameters(a, in_shape, in_ch, out_ch)
        return (weight, bias, ParamDef("mask", "m", (out_ch,), init="ones", trainable=False))

    def forward(self, a, x, params=(), **kw):
        return super().forward(a, x, params[:2], **kw)


STATE_SPEC = SPEC.replace("fc f2 outputs 4 connect all", "maskedfc f2 outputs 4 connect all")


@pytest.fixture
def masked():
    op = register(FrozenMaskFC())
    yield op
    unregister(op.type)


@pytest.mark.parametrize("backend", ["numpy", "opencl"])
def test_state_is_kept_but_not_trained(masked, sigmoid, backend):
    if backend == "opencl":
        pytest.importorskip("pyopencl", reason="pyopencl is not installed")
        from netspec.runtime.opencl_backend import find_device
        if find_device() is None:
            pytest.skip("no OpenCL device (install pocl)")
    g = build_graph(STATE_SPEC)
    assert g.layer("f2").param_shapes() == {"f2.weight": (4, 384), "f2.bias": (4,),
                                            "f2.mask": (4,)}
    lr_mults, decay_mults = layer_multipliers(g)
    assert "f2.mask" not in lr_mults and "f2.weight" in lr_mults
    net = build(g, backend, seed=3)
    before = net.parameters()
    np.testing.assert_array_equal(before["f2.mask"], np.ones(4, np.float32))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 8, 8), dtype=np.float32)
    loss, grads = net.loss_and_grads(x, np.array([0, 1, 2, 3]))
    assert "f2.mask" not in grads and set(grads) == set(before) - {"f2.mask"}
    if backend == "numpy":
        params = net.parameters()
        sgd_update(params, grads, {k: np.zeros_like(v) for k, v in params.items()}, 0.1, 0.9,
                   0.0005, lr_mults, decay_mults)
        net.load_parameters(params)
    else:
        net.load_gradients(grads)        # as data parallelism does: no gradient for state
        net.update(0.1, 0.9, 0.0005)
        assert "f2.mask" not in net.velocities()
    after = net.parameters()
    np.testing.assert_array_equal(after["f2.mask"], before["f2.mask"])
    assert not np.array_equal(after["f2.weight"], before["f2.weight"])
    # a changed state tensor loads and stays as loaded
    after["f2.mask"] = np.full(4, 0.5, np.float32)
    net.load_parameters(after)
    np.testing.assert_array_equal(net.parameters()["f2.mask"], after["f2.mask"])
