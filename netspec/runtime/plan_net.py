"""`PlanNet`: the `Net` API (runtime/net.py) executed by walking a compiled launch plan.

Everything device-independent lives here: compiling per batch size, the parameter region shared
by every batch size, host <-> device layouts, the dropout noise's key (the device draws the
masks from it), cross-stream waits, and the paper's SGD update on the device. A runtime
(opencl_backend.py, cuda_backend.py) only supplies the `_dev_*` primitives: build a module,
allocate, view, launch, copy, upload, download, finish. So both run the same plan.

Only float32: the kernels are float kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..codegen.compile import Compiled, check_limits
from ..codegen.plan import Step
from .autotune import compile_tuned
from .net import Net


@dataclass
class _Instance:
    """One batch size's compiled plan on the device."""

    compiled: Compiled
    kernels: dict                      # name -> device kernel handle
    views: dict                        # buffer name -> device view
    arenas: list                       # per GPU


@dataclass
class _Run:
    events: dict = field(default_factory=dict)        # step id -> event
    done: dict = field(default_factory=dict)          # stream -> [step ids]
    keep: list = field(default_factory=list)          # host arrays in flight
    out: dict = field(default_factory=dict)           # what -> host array


def _scalar(kind: str, value):
    """A launch's scalar argument as its kernel parameter's type."""
    return np.uint32(value) if kind == "uint" else np.float32(value)


class PlanNet(Net):
    """A `Net` whose forward and backward run a compiled plan on a device."""

    # Timing hook for the device clocks (runtime/clock.py, `netspec bench`): when set, called
    # as step_hook(when, step, event) with when 'before' (event None) and 'after' every step.
    step_hook = None

    def __init__(self, graph, *, seed: int = 0, dtype: Any = np.float32, devices: Any = None,
                 **options):
        if np.dtype(dtype) != np.float32:
            raise ValueError(f"the {self.backend} backend computes in float32 only, not "
                             f"{np.dtype(dtype)}; use backend='numpy' for float64")
        self._options = options
        self._instances: dict[int, _Instance] = {}
        self._param_regions: list | None = None
        self._device_params_current = False      # device holds the host parameters
        self._host_params_current = True         # host holds the device parameters
        self._grads_on_device = False
        # Net.__init__ maps the logical GPUs onto physical_devices(), then calls
        # _open_devices (-> _dev_open) before initialising the parameters
        super().__init__(graph, seed=seed, dtype=dtype, devices=devices)

    def physical_devices(self) -> list[str]:
        return self._dev_list()

    def _open_devices(self) -> None:
        self._dev_open()

    # -- compilation per batch size --------------------------------------------------------
    def compiled(self, batch: int) -> Compiled:
        return self._instance(batch).compiled

    def _instance(self, batch: int) -> _Instance:
        inst = self._instances.get(batch)
        if inst is not None:
            return inst
        # the tiles this backend's tuner chose, if cached
        compiled = compile_tuned(self.graph, batch, backend=type(self))
        plan = compiled.plan
        max_threads, max_shared, device = self._dev_limits()
        check_limits(plan, max_threads, max_shared, device)
        kernels = self._dev_build(compiled)
        if self._param_regions is None:
            self._param_regions = [self._dev_alloc(g, max(plan.memory(g)["params"], 4))
                                   for g in range(plan.gpus)]
            self._fresh_params = True
        arenas = [self._dev_alloc(g, max(plan.memory(g)["arena"], 4)) for g in range(plan.gpus)]
        views = {}
        for b in plan.buffers.values():
            region = self._param_regions[b.gpu] if b.persistent else arenas[b.gpu]
            views[b.name] = self._dev_view(region, b.offset, b.nbytes, np.dtype(b.dtype))
        inst = _Instance(compiled, kernels, views, arenas)
        self._instances[batch] = inst
        if getattr(self, "_fresh_params", False):
            self._fresh_params = False
            self._zero_velocities(inst)
        return inst

    # -- parameters ------------------------------------------------------------------------
    def _parameters_changed(self) -> None:
        self._device_params_current = False
        self._host_params_current = True

    def _any_instance(self) -> _Instance:
        if not self._instances:
            return self._instance(self.graph.recipe.batch_size
                                  if self.graph.recipe.batch_size else 1)
        return next(iter(self._instances.values()))

    def _push_params(self, inst: _Instance) -> None:
        if self._device_params_current:
            return
        self._upload_rows(inst, inst.compiled.plan.parameters, self._params, "buffer",
                          "parameters")
        self._device_params_current = True

    def _upload_rows(self, inst: _Instance, buffers, tensors: dict, role: str,
                     what: str) -> None:
        """Each of `buffers`' host tensor (tensors[name], its full shape) into the device
        buffers of `role` ("buffer", "velocity", "grad"), part by part (its rows), then
        finished. ValueError names a missing tensor or a wrong shape."""
        missing = [b.name for b in buffers if b.name not in tensors]
        if missing:
            raise ValueError(f"load_{what}: missing {', '.join(missing)}")
        keep = []                         # the host arrays outlive their async uploads
        for b in buffers:
            host = np.asarray(tensors[b.name], np.float32)
            if host.shape != tuple(b.shape):
                raise ValueError(f"load_{what}: {b.name} has shape {host.shape}, "
                                 f"expected {tuple(b.shape)}")
            for p in b.parts:
                a, z = p["rows"]
                keep.append(np.ascontiguousarray(host[a:z]))
                self._dev_upload(p["gpu"], inst.views[p[role]], keep[-1], [])
        self._dev_finish()

    def _zero_velocities(self, inst: _Instance) -> None:
        for b in inst.compiled.plan.parameters:
            if not b.trainable:
                continue
            for p in b.parts:
                n = inst.compiled.plan.buffers[p["velocity"]].elements
                self._dev_upload(p["gpu"], inst.views[p["velocity"]], np.zeros(n, np.float32),
                                 [])
        self._dev_finish()

    def _pull(self, inst: _Instance, key: str, layer: str | None = None) -> dict[str, np.ndarray]:
        """Assemble parameter-shaped host arrays from the parts' device buffers: key is
        'buffer' (the parameters), 'grad' or 'velocity' (of the trainable ones); only one
        layer's with `layer`."""
        out, reads = {}, []
        for b in inst.compiled.plan.parameters:
            if key != "buffer" and not b.trainable:
                continue
            if layer is not None and b.name.split(".", 1)[0] != layer:
                continue
            full = np.empty(b.shape, np.float32)
            for p in b.parts:
                a, z = p["rows"]
                flat = self._dev_download(p["gpu"], inst.views[p[key]],
                                          inst.compiled.plan.buffers[p[key]].elements, [])
                reads.append((full, a, z, flat))
            out[b.name] = full
        self._dev_finish()          # a download's array is valid only after this
        for full, a, z, flat in reads:
            full[a:z] = flat.reshape((z - a, *full.shape[1:]))
        return {k: np.asarray(v) for k, v in out.items()}

    def parameters(self) -> dict[str, np.ndarray]:
        if not self._host_params_current:
            self._params = self._pull(self._any_instance(), "buffer")
            self._host_params_current = True
        return super().parameters()

    def velocities(self) -> dict[str, np.ndarray]:
        """The momentum buffers v, keyed like parameters() (zeros before the first update)."""
        return self._pull(self._any_instance(), "velocity")

    def reset_momentum(self) -> None:
        self._zero_velocities(self._any_instance())

    def load_velocities(self, velocities: dict[str, np.ndarray]) -> None:
        """Set the momentum buffers v (keyed like parameters()), e.g. when resuming a run.
        They live with the parameters, shared by every batch size's instance."""
        inst = self._any_instance()
        self._upload_rows(inst, [b for b in inst.compiled.plan.parameters if b.trainable],
                          velocities, "velocity", "velocities")

    # -- running a plan --------------------------------------------------------------------
    def _execute(self, inst: _Instance, steps: list[Step], feeds: dict, scalars: dict,
                 run: _Run, observe=None) -> None:
        plan = inst.compiled.plan
        for s in steps:
            if observe is not None:
                observe("before", s)
            if self.step_hook is not None:
                self.step_hook("before", s, None)
            wait = []
            for d in s.deps:
                stream = plan.steps[d].gpu
                ids = [i for i in run.done.get(stream, ()) if i <= d]
                if ids:
                    wait.append(run.events[ids[-1]])
            if s.kind == "launch":
                k = plan.kernels[s.kernel]
                args = [_scalar(p.kind, scalars[a] if a in scalars else feeds[a])
                        if p.scalar else inst.views[a] for p, a in zip(k.params, s.args)]
                ev = self._dev_launch(s.gpu, inst.kernels[s.kernel], k, args, wait)
            elif s.kind == "copy":
                ev = self._dev_copy(s.gpu, inst.views[s.src], 4 * s.src_offset,
                                    inst.views[s.dst], 4 * s.dst_offset, 4 * s.elements, wait)
            elif s.kind == "upload":
                host = feeds[s.buffer]
                run.keep.append(host)
                ev = self._dev_upload(s.gpu, inst.views[s.buffer], host, wait)
            elif s.kind == "download":
                b = plan.buffers[s.buffer]
                run.out[s.what] = self._dev_download(s.gpu, inst.views[s.buffer], b.elements,
                                                     wait, dtype=np.dtype(b.dtype))
                ev = None
            else:  # pragma: no cover
                raise ValueError(f"unknown step kind {s.kind}")
            run.events[s.id] = ev
            run.done.setdefault(s.gpu, []).append(s.id)
            if self.step_hook is not None:
                self.step_hook("after", s, ev)
            if observe is not None:
                observe("after", s)

    def _forward_feeds(self, inst: _Instance, x: np.ndarray, train: bool) -> dict:
        """The input (channel-major, on every GPU) and, at train time, the noise key's scalars
        (runtime/noise.py): the dropout launches draw the masks on the device from them."""
        plan = inst.compiled.plan
        xc = np.ascontiguousarray(np.moveaxis(x, 1, 0), dtype=np.float32)
        feeds = {name: xc for name in plan.io["input"]}
        if train:
            feeds.update(self._step_noise(x.shape[0]).scalars())
        return feeds

    def _device_layout_to_host(self, flat: np.ndarray, n: int, shape: tuple) -> np.ndarray:
        """(C, N, *rest) device order -> (N, C, *rest)."""
        return np.ascontiguousarray(np.moveaxis(flat.reshape(shape[0], n, *shape[1:]), 0, 1))

    def _run_forward(self, x: np.ndarray, train: bool, with_backward: bool = False,
                     labels: np.ndarray | None = None) -> tuple[_Instance, _Run]:
        n = x.shape[0]
        inst = self._instance(n)
        self._push_params(inst)
        plan = inst.compiled.plan
        feeds = self._forward_feeds(inst, x, train)
        run = _Run()
        steps = plan.steps_for("forward", train)
        if with_backward:
            feeds[plan.io["labels"]] = np.ascontiguousarray(labels, dtype=np.int32)
            steps = steps + plan.steps_for("backward", train)
        self._execute(inst, steps, feeds, {}, run)
        self._dev_finish()
        return inst, run

    # -- the API ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        x = self._check_input(x)
        inst, run = self._run_forward(x, train)
        return self._device_layout_to_host(run.out["logits"], x.shape[0], self.head.in_shape)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = self._check_input(x)
        inst, run = self._run_forward(x, False)
        p = self._device_layout_to_host(run.out["probs"], x.shape[0], self.head.in_shape)
        return p.reshape(x.shape[0], -1)

    def features(self, x: np.ndarray, layer: str, train: bool = False) -> np.ndarray:
        target = self._layer(layer)
        if target.replicated or target is self.head:
            return super().features(x, layer, train)
        x = self._check_input(x)
        n = x.shape[0]
        inst = self._instance(n)
        self._push_params(inst)
        plan = inst.compiled.plan
        steps = plan.steps_for("forward", train)
        last = max(i for i, s in enumerate(steps) if s.layer == target.name)
        run = _Run()
        self._execute(inst, steps[:last + 1], self._forward_feeds(inst, x, train), {}, run)
        self._dev_finish()
        parts = []
        for p in target.parts:
            name = f"{target.name}.g{p.index}.y"
            flat = self._dev_download(p.gpu, inst.views[name], plan.buffers[name].elements, [])
            self._dev_finish()
            parts.append(self._device_layout_to_host(np.asarray(flat), n,
                                                     target.part_out_shape(p)))
        return np.concatenate(parts, axis=1)

    def loss_and_grads(self, x: np.ndarray, labels: Any,
                       train: bool = False) -> tuple[float, dict[str, np.ndarray]]:
        x = self._check_input(x)
        y = self._check_labels(labels, x.shape[0])
        if self.grad_hook is not None:
            inst, run = self._run_with_grad_hook(x, y, train)
        else:
            inst, run = self._run_forward(x, train, with_backward=True, labels=y)
        self._grads_on_device = inst
        loss = float(np.asarray(run.out["loss"], dtype=np.float64).mean())
        # the batch's logits, for training metrics, as the reference Net keeps them
        self.last_logits = self._device_layout_to_host(run.out["logits"], x.shape[0],
                                                       self.head.in_shape)
        return loss, self._pull(inst, "grad")

    def _run_with_grad_hook(self, x, y, train) -> tuple[_Instance, _Run]:
        """Forward and backward as _run_forward does, but once the backward step that writes a
        weighted layer's gradients last has been enqueued, wait for the queues, download that
        layer's gradients and hand them to `grad_hook` (Net's contract), so their allreduce
        overlaps the rest of the backward pass."""
        inst = self._instance(x.shape[0])
        self._push_params(inst)
        plan = inst.compiled.plan
        feeds = self._forward_feeds(inst, x, train)
        feeds[plan.io["labels"]] = np.ascontiguousarray(y, dtype=np.int32)
        owner = {p["grad"]: b.name.split(".", 1)[0] for b in plan.parameters for p in b.parts}
        backward = plan.steps_for("backward", train)
        last = {}
        for s in backward:
            if s.kind == "launch":
                k = plan.kernels[s.kernel]
                for prm, a in zip(k.params, s.args):
                    if prm.kind in ("out", "inout") and a in owner:
                        last[owner[a]] = s.id
            elif s.kind == "copy" and s.dst in owner:
                last[owner[s.dst]] = s.id
        trigger = {sid: layer for layer, sid in last.items()}

        def observe(when, s):
            layer = trigger.get(s.id) if when == "after" else None
            if layer is not None:
                self._dev_finish()
                self.grad_hook(layer, self._pull(inst, "grad", layer=layer))

        run = _Run()
        self._execute(inst, plan.steps_for("forward", train) + backward, feeds, {}, run,
                      observe)
        self._dev_finish()
        return inst, run

    def load_gradients(self, grads: dict[str, np.ndarray]) -> None:
        """Replace the device gradients of the last loss_and_grads (keyed like parameters()),
        e.g. by their average over data-parallel replicas, before update()."""
        inst = self._grads_on_device
        if not inst:
            raise RuntimeError("load_gradients() needs a loss_and_grads() call first")
        # state tensors have no gradient (loss_and_grads returns none for them)
        self._upload_rows(inst, [b for b in inst.compiled.plan.parameters if b.trainable],
                          grads, "grad", "gradients")

    def trace_loss_and_grads(self, x: np.ndarray, labels: Any, train: bool = False):
        """loss_and_grads, one step at a time, keeping a host copy of every non-parameter buffer
        each launch reads (before it) and writes (after it): {(step id, 'before'|'after',
        buffer): flat array}. For checking each kernel in place against its reference op
        (llm.c's habit); slow, since it synchronises after every step."""
        x = self._check_input(x)
        y = self._check_labels(labels, x.shape[0])
        inst = self._instance(x.shape[0])
        self._push_params(inst)
        plan = inst.compiled.plan
        feeds = self._forward_feeds(inst, x, train)
        feeds[plan.io["labels"]] = np.ascontiguousarray(y, dtype=np.int32)
        record: dict = {}

        def observe(when, s):
            if s.kind != "launch":
                return
            self._dev_finish()
            k = plan.kernels[s.kernel]
            for p, a in zip(k.params, s.args):
                if p.scalar or plan.buffers[a].kind in ("param", "state", "velocity",
                                                                  "block"):
                    continue
                if (when == "before") == (p.kind != "out") or p.kind == "out":
                    b = plan.buffers[a]
                    out = self._dev_download(s.gpu, inst.views[a], b.elements, [],
                                             dtype=np.dtype(b.dtype))
                    self._dev_finish()
                    record[(s.id, when, a)] = out

        run = _Run()
        steps = plan.steps_for("forward", train) + plan.steps_for("backward", train)
        self._execute(inst, steps, feeds, {}, run, observe)
        self._dev_finish()
        self._grads_on_device = inst
        loss = float(np.asarray(run.out["loss"], dtype=np.float64).mean())
        return loss, self._pull(inst, "grad"), record

    def update(self, lr: float, momentum: float = 0.9, weight_decay: float = 0.0005) -> None:
        """The paper's SGD step (§5) on the device, with the gradients of the last
        loss_and_grads: per tensor v <- μ·v − (weight_decay·decay_mult)·(lr·lr_mult)·w −
        (lr·lr_mult)·g ; w <- w + v. Weight decay applies to weights and biases alike."""
        inst = self._grads_on_device
        if not inst:
            raise RuntimeError("update() needs the gradients of a loss_and_grads() call first")
        self._push_params(inst)
        plan = inst.compiled.plan
        run = _Run()
        scalars = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        self._execute(inst, plan.steps_for("update", True), {}, scalars, run)
        self._dev_finish()
        self._host_params_current = False

    # -- what a runtime supplies -----------------------------------------------------------
    # Logical GPU g (a plan step's `gpu`, the `stream` and `gpu` arguments below) runs on
    # physical device `self.device_map[g]`: its own stream or queue there, its memory there.
    # A copy between views on different devices is a peer copy.
    def _dev_list(self) -> list[str]:
        """Names of the devices `devices=` numbers (raise if there is none)."""
        raise NotImplementedError

    def _dev_open(self) -> None:
        raise NotImplementedError

    def _dev_limits(self) -> tuple[int, int, str]:
        raise NotImplementedError

    def _dev_build(self, compiled: Compiled) -> dict:
        raise NotImplementedError

    def _dev_alloc(self, gpu: int, nbytes: int):
        raise NotImplementedError

    def _dev_view(self, region, offset: int, nbytes: int, dtype: np.dtype):
        raise NotImplementedError

    def _dev_launch(self, stream: int, handle, kernel, args: list, wait: list):
        raise NotImplementedError

    def _dev_copy(self, stream: int, src, src_offset: int, dst, dst_offset: int, nbytes: int,
                  wait: list):
        raise NotImplementedError

    def _dev_upload(self, stream: int, view, host: np.ndarray, wait: list):
        raise NotImplementedError

    def _dev_download(self, stream: int, view, elements: int, wait: list,
                      dtype: np.dtype = np.dtype(np.float32)):
        """Enqueue a read; the returned host array is valid after _dev_finish()."""
        raise NotImplementedError

    def _dev_finish(self) -> None:
        raise NotImplementedError
