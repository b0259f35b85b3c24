"""check_layer: one layer type, checked on every backend in one line (tinygrad's
`helper_test_op`), against the NumPy reference (the op's `forward`/`backward`) and against
PyTorch (the op's `Op.torch()` form, autograd for the backward).

    check_layer("conv", {"filters": 4, "size": 3, "pad": 1}, (3, 6, 6), gpus=2, relu=True)

The network around the layer `t` under test (`layer_spec`):

    input  (N·H·W) x H x W          one-hot: image n's channel n·H·W + p is 1 at pixel p
    conv   probe filters C size 1   its weight holds the test input x (N, C, H, W):
                                    x[n, c, p] = probe.weight[c, n·H·W + p], bias 0
    <type> t ...                    the layer under test, reading x (C x H x W)
    softmax prob                    the loss, over t's output flattened

The probe makes x exact (each output a sum of one product by 1.0 and zeros) and, since
dL/dprobe.weight[c, n·H·W + p] = dL/dx[n, c, p] exactly, gives the layer's input gradient
through every backend's public API (`loss_and_grads`), parts, transfers and gradient sums
included; on several GPUs the probe is split over them, so `connect same-gpu` and per-part
layers see their inputs on different GPUs. A loss layer under test (softmax) is the head itself.

What is compared, per backend (`netspec.runtime.BACKENDS`, every name) and dtype (float32, and
float64 where the backend computes in it): test-time logits and probabilities, the training
step's logits and loss (dropout with the mask the net draws), dL/dx and the layer's parameter
gradients. The reference is the NumPy backend in float64; PyTorch (float64, the mirror of
netspec/bench/vs_pytorch.py built from `Op.torch`) must agree with it to 1e-10 first.

Tolerances, elementwise: |value − reference| <= RTOL·|reference| + ATOL·max|reference|, with
(RTOL, ATOL) = TOLERANCE[dtype]: (1e-4, 1e-5) in float32, which sums in another order and
rounds its products (the errors seen are under 1% of that), (1e-10, 1e-12) in float64; the
loss within RTOL·max(1, |loss|).

Near-ties: the inputs are distinct values on a grid ((k + ½)·δ, permuted), and before any
backend runs the reference is recomputed with inputs and parameters moved by up to 1e-5 of
their tensor's largest value (over a hundred times float32's rounding), both ways; every
result must stay within 1e-3 of itself. A ReLU or
max-pool decision within rounding of flipping would move a gradient by O(1) there, so such a
draw is refused and the next seed drawn (`MAX_DRAWS`), never left to rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from netspec.bench.vs_pytorch import torch_layers, torch_loss
from netspec.ir.build import build_graph
from netspec.kernel.philox import uniforms
from netspec.ops import OPS
from netspec.runtime import BACKENDS, backend_class, build

TOLERANCE = {np.dtype(np.float32): (1e-4, 1e-5), np.dtype(np.float64): (1e-10, 1e-12)}
AGREEMENT = (1e-10, 1e-12)          # NumPy float64 against PyTorch float64
PERTURBATION, STABILITY = 1e-5, 1e-3
MAX_DRAWS = 20
BACKEND_NAMES = list(BACKENDS)


# op x configuration; every case runs on every backend. Covered: conv with stride and
# padding, fused ReLU, `groups`, two GPUs reading all parts and each its own (same-gpu); fc
# with fused ReLU and on two GPUs; LRN within groups; both poolings (max overlapping, z > s);
# ReLU; dropout (train-time mask and test time); softmax with its loss.
# name: (op type, spec attributes, input C x H x W, check_layer's keywords)
CASES = {
    "conv-stride-pad-relu-2gpu-all": ("conv", {"filters": 4, "size": 3, "stride": 2, "pad": 1},
                                      (4, 7, 7), {"gpus": 2, "connect": "all", "relu": True}),
    "conv-groups": ("conv", {"filters": 4, "size": 3, "pad": 1}, (4, 5, 5), {"groups": 2}),
    "conv-2gpu-same": ("conv", {"filters": 6, "size": 2, "pad": 1}, (4, 4, 4),
                       {"gpus": 2, "connect": "same-gpu"}),
    "fc-relu": ("fc", {"outputs": 5}, (3, 3, 3), {"relu": True}),
    # without a bias (`nobias`, a conv before batch norm): with and without the fused ReLU,
    # stride 1 and 2 (the two data-gradient kernels), on 2 GPUs
    "conv-nobias-relu-2gpu": ("conv", {"filters": 4, "size": 3, "stride": 2, "pad": 1,
                                       "nobias": True}, (4, 7, 7),
                              {"gpus": 2, "connect": "all", "relu": True}),
    "conv-nobias": ("conv", {"filters": 4, "size": 3, "pad": 1, "nobias": True}, (3, 5, 5),
                    {}),
    "fc-nobias-relu": ("fc", {"outputs": 5, "nobias": True}, (3, 3, 3), {"relu": True}),
    "fc-nobias-2gpu": ("fc", {"outputs": 6, "nobias": True}, (4, 2, 2),
                       {"gpus": 2, "connect": "all"}),
    "fc-2gpu": ("fc", {"outputs": 6}, (4, 2, 2), {"gpus": 2, "connect": "all"}),
    "lrn-groups": ("lrn", {"size": 3, "alpha": 0.05, "beta": 0.75, "k": 2}, (6, 3, 3),
                   {"groups": 2}),
    "maxpool": ("maxpool", {"size": 3, "stride": 2}, (3, 7, 7), {}),
    "avgpool": ("avgpool", {"size": 2, "stride": 2}, (3, 5, 5), {}),
    # padded and ceil-sized pools (Caffe's rule: the last window starts inside the input; at
    # 6x6 size 3 stride 2 ceil it overhangs the input), global average pooling, on 2 GPUs
    "maxpool-pad-ceil": ("maxpool", {"size": 3, "stride": 2, "pad": 1, "ceil": True}, (3, 6, 6),
                         {}),
    "maxpool-ceil-2gpu": ("maxpool", {"size": 3, "stride": 2, "ceil": True}, (4, 6, 6),
                          {"gpus": 2}),
    "maxpool-s1-pad": ("maxpool", {"size": 3, "stride": 1, "pad": 1}, (3, 5, 5), {}),
    "avgpool-pad-ceil": ("avgpool", {"size": 3, "stride": 2, "pad": 1, "ceil": True}, (3, 6, 6),
                         {}),
    "avgpool-ceil-2gpu": ("avgpool", {"size": 3, "stride": 2, "ceil": True}, (4, 6, 6),
                          {"gpus": 2}),
    "avgpool-global": ("avgpool", {"global": True}, (4, 5, 5), {"gpus": 2}),
    # batch norm: train-time batch statistics and running-statistics update, test time with
    # the running ones; per part on 2 GPUs; on vectors (after an fc) too
    "batchnorm-2gpu": ("batchnorm", {}, (4, 3, 3), {"gpus": 2}),
    "batchnorm-momentum-eps": ("batchnorm", {"momentum": 0.3, "eps": 0.01}, (3, 4, 4), {}),
    # activations (cuda-convnet's neurons, darknet's leaky); brelu's bound inside the inputs'
    # range (−1, 1), so both of its kinks are crossed
    "logistic": ("logistic", {}, (4, 3, 3), {"gpus": 2}),
    "tanh": ("tanh", {}, (3, 3, 3), {}),
    "tanh-ab": ("tanh", {"a": 1.7159, "b": 0.6667}, (3, 3, 3), {}),
    "leaky": ("leaky", {}, (3, 3, 3), {}),
    "abs": ("abs", {}, (3, 3, 3), {}),
    "softrelu": ("softrelu", {}, (3, 3, 3), {}),
    "brelu": ("brelu", {"a": 0.55}, (3, 3, 3), {}),
    "square": ("square", {}, (3, 3, 3), {}),
    "linear": ("linear", {"a": -1.5, "b": 0.25}, (3, 3, 3), {}),
    "sqrt": ("sqrt", {}, (3, 3, 3), {"positive": True}),
    # joins: a residual add of 2 and of 3 inputs (fused ReLU), concatenation, and a max pool
    # and a conv reading two inputs; on 2 GPUs, the inputs' parts cross where they must
    "add-2gpu": ("add", {}, (4, 3, 3), {"gpus": 2, "inputs": 2}),
    "add-across-gpus": ("add", {}, (4, 3, 3), {"gpus": 2, "inputs": 2, "pin_last": True}),
    "concat-across-gpus": ("concat", {}, (2, 3, 3), {"gpus": 2, "inputs": 2,
                                                      "pin_last": True}),
    "add3-relu": ("add", {"relu": True}, (3, 3, 3), {"inputs": 3}),
    "concat-2gpu": ("concat", {}, (2, 3, 3), {"gpus": 2, "inputs": 2}),
    # eltmax over 2 inputs on 2 GPUs (one pinned: its parts cross) and over 3 inputs; the
    # grid's distinct values keep every maximum clear of a tie
    "max-2gpu": ("max", {}, (4, 3, 3), {"gpus": 2, "inputs": 2}),
    "max-across-gpus": ("max", {}, (4, 3, 3), {"gpus": 2, "inputs": 2, "pin_last": True}),
    "max3": ("max", {}, (3, 3, 3), {"inputs": 3}),
    "maxpool-from-two": ("maxpool", {"size": 2, "stride": 1}, (2, 4, 4), {"inputs": 2}),
    # cuda-convnet's own: a locally connected layer (stride, pad, fused ReLU, 2 GPUs; groups),
    # within-map response normalisation (odd and even windows) and contrast normalisation
    "local-stride-pad-relu-2gpu": ("local", {"filters": 4, "size": 3, "stride": 2, "pad": 1},
                                   (4, 5, 5), {"gpus": 2, "connect": "all", "relu": True}),
    "local-groups": ("local", {"filters": 4, "size": 2}, (4, 4, 4), {"groups": 2}),
    "rnorm": ("rnorm", {"size": 3, "alpha": 2.0, "beta": 0.75}, (3, 5, 5), {}),
    "rnorm-even-2gpu": ("rnorm", {"size": 4, "alpha": 3.0, "beta": 1.3, "k": 0.5}, (4, 5, 5),
                        {"gpus": 2}),
    "cnorm": ("cnorm", {"size": 3, "alpha": 4.0, "beta": 0.75}, (4, 5, 5), {"gpus": 2}),
    "relu": ("relu", {}, (3, 4, 4), {}),
    "dropout": ("dropout", {"p": 0.5}, (3, 4, 4), {}),
    "softmax": ("softmax", {}, (3, 2, 2), {}),
}


# -- which backends can run here ------------------------------------------------------------
def opencl_missing() -> str | None:
    try:
        import pyopencl  # noqa: F401
    except ImportError:
        return "pyopencl is not installed (pip install netspec[opencl])"
    from netspec.runtime.opencl_backend import find_device
    if find_device() is None:
        return "no OpenCL device (install pocl: pip install 'pyopencl[pocl]')"
    return None


def _cuda_missing() -> str | None:
    from netspec.runtime.cuda_backend import cuda_unavailable_reason
    return cuda_unavailable_reason()


# the toolchain a backend needs, in the words tests/conftest.py recognises (a failure in CI)
TOOLCHAIN_MISSING = {"opencl": opencl_missing, "cuda": _cuda_missing}


def backend_unavailable(name: str) -> str | None:
    """Why backend `name` can't run here (None when it can)."""
    missing = TOOLCHAIN_MISSING.get(name)
    why = missing() if missing else None
    if why:
        return why
    try:
        cls = backend_class(name)
    except ImportError as e:
        return f"backend {name}: {e}"
    if not cls.available():
        return f"backend {name}: {getattr(cls, 'auto_refusal', 'not available here')}"
    return None


# -- the network around the layer -----------------------------------------------------------
def _attr_text(attrs: dict) -> str:
    return "".join(f" {k}" if v is True else f" {k} {v}" for k, v in attrs.items())


def probe_names(inputs: int) -> list[str]:
    """The probe convs of a layer reading `inputs` inputs: probe, probe1, probe2, ..."""
    return ["probe"] + [f"probe{j}" for j in range(1, inputs)]


def layer_spec(op_type: str, attrs: dict, input_shape: tuple[int, int, int], *, gpus: int = 1,
               groups: int = 1, connect: str | None = None, relu: bool = False,
               batch: int = 2, inputs: int = 1, pin_last: bool = False) -> str:
    """The spec text of the probe network (module docstring) around one `op_type` layer;
    with `inputs` k > 1, k probes (probe, probe1, ...) of C channels each, all read by t;
    `pin_last`: the last probe whole on the last GPU, so t's parts elsewhere read it by a
    transfer."""
    op = OPS[op_type]
    c, h, w = input_shape
    a = {k: d.default for k, d in op.attrs.items() if not d.required} | dict(attrs)
    if op.joins:
        a["inputs"] = inputs
    out = () if op.loss_layer else op.output_shape(a, (c * inputs, h, w))
    probes = probe_names(inputs)
    lines = [f"network check_{op_type}", f"input {batch * h * w}x{h}x{w}",
             f"classes {math.prod(out or input_shape)}", f"gpus {gpus}"]
    lines += [f"conv {p} filters {c} size 1 from data"
              + ((f" gpu {gpus - 1}" if pin_last and p == probes[-1] else " connect all")
                 if gpus > 1 else "")
              for p in probes]
    if not op.loss_layer:
        lines.append(f"{op_type} t{_attr_text(attrs)}"
                     + (f" from {', '.join(probes)}" if inputs > 1 else "")
                     + (" relu" if relu else "")
                     + (f" groups {groups}" if groups > 1 else "")
                     + (f" connect {connect}" if connect else ""))
    lines += [f"softmax {'t' if op.loss_layer else 'prob'}", "train", f"  batch {batch}"]
    return "\n".join(lines) + "\n"


@dataclass
class Draw:
    """One test input: the net's input (one-hot), parameters, labels (float64 values that
    float32 holds exactly)."""
    x: np.ndarray            # the layer's input (N, C, H, W)
    onehot: np.ndarray       # the network's input (N, N·H·W, H, W)
    params: dict
    labels: np.ndarray
    noise_seed: int


def _probes(graph) -> list[str]:
    return [l.name for l in graph.compute_layers if l.name == "probe" or
            (l.name.startswith("probe") and l.name[5:].isdigit())]


def draw(graph, batch: int, seed: int, positive: bool = False) -> Draw:
    """`positive`: inputs in (0.25, 1.25) instead of (−1, 1), for a layer defined on x > 0
    (sqrt), its gradient there within 2 of 1."""
    rng = np.random.default_rng(seed)
    probes = _probes(graph)
    c, h, w = graph.layer("probe").out_shape
    k = len(probes)
    m = batch * k * c * h * w
    grid = (np.arange(m) - m / 2 + 0.5) * (2.0 / m)         # distinct, none within δ/2 of 0
    if positive:
        grid = grid / 2 + 0.75
    x = rng.permutation(grid).reshape(batch, k * c, h, w)
    onehot = np.zeros((batch, batch * h * w, h, w))
    for n in range(batch):
        onehot[n, n * h * w:(n + 1) * h * w].reshape(h * w, h * w)[...] = np.eye(h * w)
    params = {}
    for name, shape in graph.param_shapes().items():
        if name.split(".")[0] in probes:
            continue
        fan_in = math.prod(shape[1:]) or 1
        std = math.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.1
        params[name] = rng.standard_normal(shape) * std
        if name.endswith("running_var"):                  # a variance: positive
            params[name] = rng.uniform(0.5, 2.0, shape)
    for j, p in enumerate(probes):
        params[f"{p}.weight"] = x[:, j * c:(j + 1) * c].transpose(1, 0, 2, 3) \
            .reshape(c, batch * h * w, 1, 1)
        params[f"{p}.bias"] = np.zeros(c)
    params = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}
    labels = rng.integers(0, graph.classes, batch)
    return Draw(x.astype(np.float32).astype(np.float64), onehot, params, labels, seed + 1)


# -- running it -----------------------------------------------------------------------------
def _split_probe(grads: dict, batch: int, graph) -> dict:
    """The layer's gradients, with dL/dx (N, k·C, H, W) read off the probes' weight
    gradients (each input's, end to end)."""
    c, h, w = graph.layer("probe").out_shape
    probes = _probes(graph)
    out = {k: np.asarray(v, np.float64) for k, v in grads.items()
           if k.split(".")[0] not in probes}
    out["dL/dx"] = np.concatenate([np.asarray(grads[f"{p}.weight"], np.float64)
                                   .reshape(c, batch, h, w).transpose(1, 0, 2, 3)
                                   for p in probes], axis=1)
    return out


def state_names(graph) -> list[str]:
    """The parameters that are state (ParamDef.trainable False: a running mean), by name."""
    return sorted({name for l in graph.layers for _, pd, name, _ in l.param_table()
                   if not pd.trainable})


def run_net(net, d: Draw) -> dict:
    """Every compared result of one backend's net on draw d; state tensors (a running mean)
    as they stand after the training step."""
    dt = net.dtype
    net.load_parameters({k: v.astype(dt) for k, v in d.params.items()})
    x = d.onehot.astype(dt)
    out = {"logits": net.forward(x), "probabilities": net.predict_proba(x)}
    net.rng = np.random.default_rng(d.noise_seed)
    loss, grads = net.loss_and_grads(x, d.labels, train=True)
    out.update(loss=np.float64(loss), train_logits=net.last_logits)
    out.update(_split_probe(grads, len(d.labels), net.graph))
    names = state_names(net.graph)
    if names:
        after = net.parameters()
        out.update({f"state {n}": after[n] for n in names})
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def keep_masks(graph, d: Draw) -> dict:
    """The draws a training step makes (netspec/runtime/net.py: one uint64 from the net's
    generator is the Philox seed; one `draw_noise` per body layer, given the uniforms of its
    compute-layer index at step 0, images 0..n-1)."""
    rng, n = np.random.default_rng(d.noise_seed), len(d.labels)
    key = int(rng.integers(0, 1 << 64, dtype=np.uint64))
    masks = {}
    for i, l in enumerate(graph.compute_layers[:-1]):
        u = uniforms(key, 0, i, 0, n, int(np.prod(l.out_shape))).reshape(n, *l.out_shape)
        noise = l.op.draw_noise(l.attrs, u.shape, _Uniforms(u))
        if noise is not None:
            masks[l.name] = noise
    return masks


class _Uniforms:
    """Hands `draw_noise` precomputed uniforms as its generator's `random`."""

    def __init__(self, u):
        self.u = u

    def random(self, size, dtype=np.float64):
        assert tuple(size) == self.u.shape
        return self.u.astype(dtype)


def run_torch(graph, d: Draw) -> dict:
    """The same results from PyTorch in float64: the layers' `Op.torch` forms (the mirror of
    bench/vs_pytorch.py), the head's `torch_loss`, autograd for the gradients."""
    import torch
    P = {k: torch.tensor(v, requires_grad=True) for k, v in d.params.items()}
    x = torch.from_numpy(d.onehot)
    head = graph.compute_layers[-1]

    def body(train):
        outs = {"data": x}
        for l, fn, _ in torch_layers(graph, d.params, keep_masks=keep_masks(graph, d),
                                     train=train, chain=False):
            outs[l.name] = h = fn(torch.cat([outs[i] for i in l.inputs], 1), P)
        return h

    with torch.no_grad():
        logits = body(False)
        proba = head.op.torch(head.attrs)(logits)
    z = body(True)
    loss = torch_loss(graph)(z, torch.from_numpy(d.labels))
    state = state_names(graph)
    trained = [k for k in P if k not in state]
    grads = dict(zip(trained, torch.autograd.grad(loss, [P[k] for k in trained])))
    out = {"logits": logits.flatten(1), "probabilities": proba, "loss": loss,
           "train_logits": z.flatten(1).detach()}
    out.update(_split_probe({k: g.numpy() for k, g in grads.items()}, len(d.labels), graph))
    out.update({f"state {k}": P[k].detach() for k in state})   # updated in place by PyTorch
    return {k: np.asarray(v.detach().numpy() if hasattr(v, "detach") else v, np.float64)
            for k, v in out.items()}


# -- comparing ------------------------------------------------------------------------------
def compare(got: dict, ref: dict, tol: tuple[float, float], who: str) -> float:
    """Every result of `got` against `ref` (module docstring's rule); the largest error in
    units of the tolerance (<= 1 passes). AssertionError naming the result and element."""
    rtol, atol = tol
    assert got.keys() == ref.keys(), f"{who}: results {sorted(got)} != {sorted(ref)}"
    worst = 0.0
    for k, r in ref.items():
        v = got[k].reshape(r.shape) if got[k].size == r.size else got[k]
        assert v.shape == r.shape, f"{who} {k}: shape {v.shape} != {r.shape}"
        scale = float(np.abs(r).max()) if r.size else 0.0
        bound = rtol * np.abs(r) + atol * scale + 1e-300
        if k == "loss":
            bound = rtol * max(1.0, abs(float(r)))
        ratio = np.abs(v - r) / bound
        if (ratio > 1).any():
            i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            raise AssertionError(f"{who} {k}: {v[i]!r} vs reference {r[i]!r} at {i} (max |ref| "
                                 f"{scale:.3g}, {(ratio > 1).sum()} of {ratio.size} off; rtol "
                                 f"{rtol:g}, atol {atol:g} of max)")
        worst = max(worst, float(ratio.max()) if ratio.size else 0.0)
    return worst


def stable(graph, d: Draw, ref: dict) -> bool:
    """Whether the reference moves smoothly when every input and parameter moves by up to
    PERTURBATION of its tensor's largest magnitude (one uniform random pattern, both ways: a
    decision closer to its tie than the move flips in one of the two)."""
    rng = np.random.default_rng(d.noise_seed + 1000)
    steps = {k: PERTURBATION * float(np.abs(v).max(initial=0.0)) * rng.uniform(-1, 1, v.shape)
             for k, v in d.params.items()}
    for way in (1.0, -1.0):
        moved = {k: v + way * steps[k] for k, v in d.params.items()}
        near = run_net(build(graph, "numpy", dtype=np.float64),
                       Draw(d.x, d.onehot, moved, d.labels, d.noise_seed))
        try:
            compare(near, ref, (STABILITY, STABILITY), "perturbed")
        except AssertionError:
            return False
    return True


def check_layer(op_type: str, attrs: dict | None = None,
                input_shape: tuple[int, int, int] = (4, 6, 6), *, gpus: int = 1,
                groups: int = 1, connect: str | None = None, relu: bool = False,
                batch: int = 2, backends=None, seed: int = 0, inputs: int = 1,
                pin_last: bool = False, positive: bool = False) -> dict:
    """Run one `op_type` layer (spec attributes `attrs`, input C x H x W, on `gpus` logical
    GPUs, `groups` channel groups, `connect` mode, fused `relu`) forward and backward on each
    of `backends` (default: every name in netspec.runtime.BACKENDS) in float32, and float64
    where the backend computes in it, against the NumPy float64 reference, itself checked
    against PyTorch via Op.torch(). Returns {(backend, dtype): worst error in tolerance
    units}. AssertionError on a mismatch; pytest.skip naming the toolchain when a backend
    asked for can't run here (after the others ran)."""
    text = layer_spec(op_type, attrs or {}, input_shape, gpus=gpus, groups=groups,
                      connect=connect, relu=relu, batch=batch, inputs=inputs,
                      pin_last=pin_last)
    graph = build_graph(text)
    for attempt in range(MAX_DRAWS):
        d = draw(graph, batch, seed + 7919 * attempt, positive)
        ref = run_net(build(graph, "numpy", dtype=np.float64), d)
        if stable(graph, d, ref):
            break
    else:
        raise AssertionError(f"{op_type}: every one of {MAX_DRAWS} draws holds a decision "
                             f"within {PERTURBATION:g} of a tie")
    compare(run_torch(graph, d), ref, AGREEMENT, f"{op_type}: PyTorch against NumPy")
    results, skipped = {}, []
    for name in BACKEND_NAMES if backends is None else backends:
        why = backend_unavailable(name)
        if why:
            skipped.append(f"{name}: {why}")
            continue
        for dtype in (np.float32, np.float64):
            try:
                net = build(graph, name, dtype=dtype, seed=seed)
            except ValueError as e:
                if "float32 only" in str(e) and dtype is np.float64:
                    continue
                raise
            who = f"{op_type} on {name} ({np.dtype(dtype).name})"
            results[name, np.dtype(dtype).name] = compare(run_net(net, d), ref,
                                                          TOLERANCE[np.dtype(dtype)], who)
    if skipped:
        pytest.skip("; ".join(skipped))
    return results


# -- ONNX ----------------------------------------------------------------------------------
def check_onnx(op_type: str, attrs: dict | None = None,
               input_shape: tuple[int, int, int] = (4, 6, 6), *, gpus: int = 1,
               groups: int = 1, connect: str | None = None, relu: bool = False,
               batch: int = 2, seed: int = 0, rtol: float = 1e-5, inputs: int = 1,
               pin_last: bool = False, positive: bool = False) -> float:
    """The layer of `check_layer`'s probe network exported to ONNX (codegen/onnx_export.py)
    and run by onnxruntime: its output tensor `t` (made a graph output) and the probabilities
    against the NumPy backend's test-time forward, in float32. Returns the largest relative
    error of `t`. pytest.skip when onnx or onnxruntime is missing."""
    onnx = pytest.importorskip("onnx", reason="pip install 'netspec[onnx]' (in the test extra)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in netspec's test extra")
    from netspec.codegen.onnx_export import export_onnx
    text = layer_spec(op_type, attrs or {}, input_shape, gpus=gpus, groups=groups,
                      connect=connect, relu=relu, batch=batch, inputs=inputs,
                      pin_last=pin_last)
    graph = build_graph(text)
    d = draw(graph, batch, seed, positive)
    params = {k: v.astype(np.float32) for k, v in d.params.items()}
    net = build(graph, "numpy", dtype=np.float32)
    net.load_parameters(params)
    x = d.onehot.astype(np.float32)
    model = export_onnx(graph, params)
    t = graph.layer("t")
    model.graph.output.append(onnx.helper.make_tensor_value_info(
        "t", onnx.TensorProto.FLOAT, ["N", *t.out_shape]))
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    proba, got = sess.run(None, {"data": x})
    want = net.features(x, "t")
    assert got.shape == want.shape, (got.shape, want.shape)
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    assert err <= rtol, f"{op_type} ONNX output t: max error {err:.3g} of max |t|"
    np.testing.assert_allclose(proba, net.predict_proba(x), rtol=1e-4, atol=1e-7)
    return err

