"""Checks a device backend (OpenCL, CUDA) against the NumPy reference, shared by
test_plan_backends.py and test_cuda_backend.py.

Two levels, both against netspec/ops' NumPy math:

1. End to end, on the same seed: logits, probabilities and the loss must agree to float32
   tolerance. The gradients are compared elementwise, as below, with the float64 reference
   deciding each max-pool and ReLU as the backend did (tests/near_ties.py,
   `follow_decisions`): a max pool whose window holds two values within float32 rounding of
   each other may route its gradient to either pixel, and one flip moves a conv weight
   gradient by percents. The backend's decisions come from its layer parts' inputs and
   outputs: recorded through forward_part for a backend that runs part by part (cpu, numpy),
   read from the device trace (`trace_loss_and_grads`) for a plan backend (OpenCL, CUDA).
2. Kernel by kernel, in place (llm.c's habit): the plan runs one step at a time and every
   layer part's device input, output gradient and mask are fed to its reference op; the op's
   output, input gradient and parameter gradients must match the device's elementwise:

       |device − reference| <= RTOL·|reference| + ATOL·max|reference|,  RTOL=1e-3, ATOL=1e-4

   (float32 sums in a different order; the largest are the weight gradients' reductions over
   images x pixels). Max-pool near-ties can't differ here: both sides see the same input;
   a fused ReLU whose input is within rounding of 0 takes the device's decision, as above.

3. The SGD update: the device's parameters and momenta after `update` equal the paper's rule
   applied in NumPy to the parameters and the gradients the device reported.
"""
from __future__ import annotations

import numpy as np

from netspec.ir.graph import Graph
from netspec.runtime.numpy_backend import NumpyNet
from netspec.runtime.plan_net import PlanNet
from netspec.runtime.sgd import sgd_step

from near_ties import adopt_relu_pattern, follow_decisions, reference_following

RTOL, ATOL = 1e-3, 1e-4


def close(dev: np.ndarray, ref: np.ndarray, what: str) -> None:
    dev = np.asarray(dev, np.float64)
    ref = np.asarray(ref, np.float64)
    assert dev.shape == ref.shape, f"{what}: shape {dev.shape} != {ref.shape}"
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    err = np.abs(dev - ref) - (RTOL * np.abs(ref) + ATOL * scale + 1e-12)
    if (err > 0).any():
        i = np.unravel_index(int(np.argmax(err)), err.shape)
        raise AssertionError(f"{what}: device {dev[i]!r} vs reference {ref[i]!r} at {i} "
                             f"(max |ref| {scale:.3g}, {(err > 0).sum()} of {err.size} off)")


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def inputs(graph: Graph, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *graph.input_shape)).astype(np.float32)
    labels = rng.integers(0, graph.classes, n)
    return x, labels


def check_end_to_end(dev, graph: Graph, n: int, seed: int = 0, train: bool = True) -> dict:
    ref = NumpyNet(graph, seed=seed)
    dev.load_parameters(ref.parameters())
    x, labels = inputs(graph, n, seed)
    close(dev.forward(x), ref.forward(x), "logits")
    close(dev.predict_proba(x), ref.predict_proba(x), "probabilities")
    loss_d, grads_d, loss_r, grads_r, _ = follows(dev, x, labels, train=train,
                                                   noise_seed=seed + 1, check=close)
    for k in grads_r:
        close(grads_d[k], grads_r[k], f"{k} gradient")
    assert abs(loss_d - loss_r) <= 1e-4 * max(1.0, abs(loss_r)), (loss_d, loss_r)
    assert grads_d.keys() == grads_r.keys()
    # the update: the paper's rule on the device, from zero momentum
    before = dev.parameters()
    v0 = dev.velocities()
    dev.update(lr=0.01, momentum=0.9, weight_decay=0.0005)
    after, v1 = dev.parameters(), dev.velocities()
    mults = {}
    for l in graph.weighted_layers:
        for name in l.param_shapes():
            mults[name] = (l.lr_mult, l.decay_mult)
    for k in before:
        lm, dm = mults[k]
        w, v = before[k].copy(), v0[k].copy()
        sgd_step(w, v, grads_d[k], np.float32(0.01 * lm), 0.9, np.float32(0.0005 * dm))
        close(after[k], w, f"{k} after update")
        close(v1[k], v, f"{k} momentum after update")
    return {"loss": loss_d}


def _host(flat: np.ndarray, n: int, shape: tuple) -> np.ndarray:
    """Device order (C, N, *rest) -> (N, C, *rest)."""
    return np.moveaxis(np.asarray(flat).reshape(shape[0], n, *shape[1:]), 0, 1)


def _launches(dev, n: int, train: bool) -> list:
    plan = dev.compiled(n).plan
    return [s for s in plan.steps_for("forward", train) + plan.steps_for("backward", train)
            if s.kind == "launch"]


def _traced(steps, rec, buf, when, phase, layer=None, gpu=None):
    """The value of `buf` before the first / after the last launch of (layer, phase)."""
    cands = [s for s in steps if s.phase == phase and (layer is None or s.layer == layer)
             and (gpu is None or s.gpu == gpu) and buf in s.args
             and (s.id, when, buf) in rec]
    if not cands:
        raise KeyError((buf, when, phase, layer))
    s = cands[0] if when == "before" else cands[-1]
    return rec[(s.id, when, buf)]


def device_parts(dev, graph: Graph, n: int, rec: dict, train: bool) -> dict:
    """{(layer, part index): (input, output)} of every layer part as the device's trace
    (`trace_loss_and_grads`) left them, float64 in (N, ...) order: what
    near_ties.follow_decisions follows."""
    steps = _launches(dev, n, train)
    seen = {}
    for entry in dev.compiled(n).plan.parts:
        layer = graph.layer(entry["layer"])
        part = layer.parts[entry["part"]]
        roles = entry["roles"]
        gpu = None if layer.type == "softmax" else part.gpu
        xin = _host(_traced(steps, rec, roles["x"], "before", "forward", layer.name, gpu), n,
                    layer.part_in_shape(part))
        y = _host(_traced(steps, rec, roles["y"], "after", "forward", layer.name, gpu), n,
                  layer.part_out_shape(part))
        seen[layer.name, part.index] = (np.array(xin, np.float64), np.array(y, np.float64))
    return seen


def device_following(dev, x: np.ndarray, labels, *, train: bool = True, noise_seed: int = 0,
                     check=None):
    """near_ties.reference_following for a plan backend (OpenCL, CUDA): the device's loss
    and gradients on one step (traced, so update() may follow), and the float64 reference's,
    deciding every max-pool and ReLU as the device did. Returns (loss, grads, ref_loss,
    ref_grads, followed)."""
    n = len(x)
    dev.rng = np.random.default_rng(noise_seed)
    loss, grads, rec = dev.trace_loss_and_grads(x, labels, train=train)
    ref_loss, ref_grads, followed = follow_decisions(
        dev.graph, dev.parameters(), device_parts(dev, dev.graph, n, rec, train), x, labels,
        train=train, noise_seed=noise_seed, check=check)
    return loss, grads, ref_loss, ref_grads, followed


def follows(net, x: np.ndarray, labels, *, train: bool = True, noise_seed: int = 0,
            check=None):
    """(loss, grads, ref_loss, ref_grads, followed) of any backend's net against the float64
    reference deciding as it did: reference_following for a net that runs part by part,
    device_following for a plan backend."""
    fn = device_following if isinstance(net, PlanNet) else reference_following
    return fn(net, x, labels, train=train, noise_seed=noise_seed, check=check)


def check_kernels_in_place(dev, graph: Graph, n: int, seed: int = 0,
                           train: bool = True) -> int:
    """Every layer part's kernels against its reference op (see the module doc); returns the
    number of arrays compared."""
    ref = NumpyNet(graph, seed=seed)
    params = ref.parameters()
    dev.load_parameters(params)
    dev.rng = np.random.default_rng(seed + 2)
    x, labels = inputs(graph, n, seed)
    loss, grads, rec = dev.trace_loss_and_grads(x, labels, train=train)
    plan = dev.compiled(n).plan
    steps = _launches(dev, n, train)
    compared = 0

    def first(buf, when, phase, layer=None, gpu=None):
        return _traced(steps, rec, buf, when, phase, layer, gpu)

    for entry in plan.parts:
        layer = graph.layer(entry["layer"])
        part = layer.parts[entry["part"]]
        roles = entry["roles"]
        op = layer.op
        ishape, oshape = layer.part_in_shape(part), layer.part_out_shape(part)
        xin = _host(first(roles["x"], "before", "forward", layer.name, part.gpu), n, ishape)
        what = f"{layer.name} part {part.index}"
        if layer.type == "softmax":
            z = xin.reshape(n, -1)
            p = _host(first(roles["y"], "after", "forward", layer.name), n, ishape)
            close(p.reshape(n, -1), op.forward(layer.attrs, z)[0], f"{what} probabilities")
            loss_r, dz_r = op.loss(z, labels)
            assert abs(loss - loss_r) <= 1e-4 * max(1.0, abs(loss_r)), (loss, loss_r)
            dz = _host(first(roles["dx"], "after", "backward", layer.name), n, ishape)
            close(dz.reshape(n, -1), dz_r.reshape(n, -1), f"{what} dL/dz")
            compared += 3
            continue
        w_b = ()
        if layer.weighted:
            slot = ref._slots[layer.name, part.index]
            w_b = tuple(params[name][rows] for name, rows in zip(slot.names, slot.rows))
        noise = None
        if train and "mask" in roles:
            # the mask as the launch that draws it on the device left it
            noise = _host(first(roles["mask"], "after", "forward", layer.name, part.gpu), n,
                          oshape) != 0
        y_r, cache = op.forward(layer.attrs, xin, w_b, relu=layer.relu, train=train,
                                noise=noise)
        y = _host(first(roles["y"], "after", "forward", layer.name, part.gpu), n, oshape)
        close(y, y_r, f"{what} forward")
        if layer.relu or layer.type == "relu":
            adopt_relu_pattern(y_r, y)      # a pre-activation within rounding of 0: follow
        dy_name = roles.get("dy")
        bsteps = [s for s in steps if s.phase == "backward" and s.layer == layer.name
                  and s.part == part.index]
        dy = _host(rec[(bsteps[0].id, "before", dy_name)], n, oshape) \
            if (bsteps[0].id, "before", dy_name) in rec else None
        if dy is None:           # the first backward kernel doesn't read dy (can't happen)
            raise AssertionError(f"{what}: no dy recorded")
        input_grad = "dx" in roles or any(not graph.layer(s.layer).replicated
                                          for s in part.sources)
        dx_r, pg = op.backward(layer.attrs, dy, cache, input_grad=input_grad)
        compared += 1
        if dx_r is not None:
            dx_name = roles.get("dx") or f"{part.sources[0].layer}.g{part.sources[0].part}.dy"
            last = [s for s in bsteps if dx_name in s.args][-1]
            dx = _host(rec[(last.id, "after", dx_name)], n, ishape)
            close(dx, dx_r, f"{what} input gradient")
            compared += 1
        if pg:
            slot = ref._slots[layer.name, part.index]
            trained = [(name, rows) for name, rows, t in zip(slot.names, slot.rows,
                                                            slot.trainable) if t]
            for (name, rows), grad in zip(trained, pg, strict=True):
                close(grads[name][rows], grad, f"{what} {name.rpartition('.')[2]} gradient")
                compared += 1
    return compared
