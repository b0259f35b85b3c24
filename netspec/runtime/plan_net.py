"""`PlanNet`: the `Net` API (runtime/net.py) executed by walking a compiled launch plan.

Everything device-independent lives here: compiling per batch size, the parameter region shared
by every batch size, host <-> device layouts, the dropout noise's key (the device draws the
masks from it), cross-stream waits, and the paper's SGD update on the device. A runtime
(opencl_backend.py, cuda_backend.py) only supplies the `_dev_*` primitives: build a module,
allocate, view, launch, copy, upload, download, finish. So both run the same plan.

Only float32: the kernels are float kernels.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..codegen.compile import Compiled, check_limits
from ..codegen.plan import Step
from ..ir.graph import batch_slices
from .autotune import compile_tuned
from .net import Gradients, Net


@dataclass
class _Instance:
    """One batch size's compiled plan on the device."""

    compiled: Compiled
    kernels: dict                      # name -> device kernel handle
    views: dict                        # buffer name -> device view
    arenas: list                       # per GPU
    kept_logits: Any = None            # the last step's logits, kept on the device
    graphs: dict = field(default_factory=dict)     # key -> captured graph (or None: refused)
    staging: dict = field(default_factory=dict)    # buffer name -> device view uploads land in
    kept_loss: Any = None              # the last step's per-image losses, on the device
    stash: list = field(default_factory=list)      # (losses, logits) device views per slot
    u8_slot: dict = field(default_factory=dict)    # device -> the uint8 slot uploaded last
    u8_free: dict = field(default_factory=dict)    # (device, slot) -> event: last read done


@dataclass
class _Pending:
    """A captured-graph run whose uploads are done and whose launch waits (_run_captured)."""

    inst: _Instance
    key: tuple
    body: list                         # the steps, uploads replaced by staging copies
    prepares: list                     # (gpu, U8Batch, staging name, slot) to finish there
    scalars: dict
    run: Any
    after: list = field(default_factory=list)     # called once it is launched


@dataclass
class _Run:
    events: dict = field(default_factory=dict)        # step id -> event
    done: dict = field(default_factory=dict)          # stream -> [step ids]
    keep: list = field(default_factory=list)          # host arrays in flight
    out: dict = field(default_factory=dict)           # what -> host array
    uploaded: dict = field(default_factory=dict)      # (id(host), device) -> (buffer, event)
    redirect: dict = field(default_factory=dict)      # what -> device view to copy to, or None


def is_u8_batch(x) -> bool:
    """Whether x is a batch of uint8 crops to finish on the device (data/augment.U8Batch)."""
    return hasattr(x, "pixels") and hasattr(x, "to_float") and hasattr(x, "header")


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
        self._last_step = self._last_loss = self._last_logits = None
        self._stashed: list = []
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
        compiled = compile_tuned(self.graph, batch, backend=type(self),
                                 sm_count=self._dev_sm_count())
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
        self._flush_step()
        self._dev_barrier()          # after what is enqueued (a graph runs on one stream)
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
        self._flush_step()
        self._dev_barrier()
        for b in inst.compiled.plan.parameters:
            if not b.trainable:
                continue
            for p in b.parts:
                n = inst.compiled.plan.buffers[p["velocity"]].elements
                self._dev_upload(p["gpu"], inst.views[p["velocity"]], np.zeros(n, np.float32),
                                 [])
        self._dev_finish()

    def _pull(self, inst: _Instance, key: str, layer: str | None = None,
              names=None) -> dict[str, np.ndarray]:
        """Assemble parameter-shaped host arrays from the parts' device buffers: key is
        'buffer' (the parameters), 'grad' or 'velocity' (of the trainable ones); only one
        layer's with `layer`, only the tensors `names` with names."""
        self._flush_step()
        out, reads = {}, []
        self._dev_barrier()          # after what is enqueued (a graph runs on one stream)
        for b in inst.compiled.plan.parameters:
            if key != "buffer" and not b.trainable:
                continue
            if layer is not None and b.name.split(".", 1)[0] != layer:
                continue
            if names is not None and b.name not in names:
                continue
            full = np.empty(b.shape, np.float32)
            for p in b.parts:
                a, z = p["rows"]
                # weights and momenta (checkpoints) through pinned staging: one wait in all
                flat = self._dev_download(p["gpu"], inst.views[p[key]],
                                          inst.compiled.plan.buffers[p[key]].elements, [],
                                          staged=key != "grad")
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
                 run: _Run, observe=None, barrier: bool = True) -> None:
        plan = inst.compiled.plan
        self._flush_step()
        if barrier:
            self._dev_barrier()      # after all of the previous run, on every stream
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
                ev = self._upload_once(inst, s, feeds[s.buffer], wait, run)
            elif s.kind == "download" and s.what in run.redirect:
                ev, to = None, run.redirect[s.what]
                if to is not None:             # kept on the device until read
                    ev = self._dev_copy(s.gpu, inst.views[s.buffer], 0, to, 0,
                                        plan.buffers[s.buffer].nbytes, wait)
            elif s.kind == "download":
                b = plan.buffers[s.buffer]
                run.out[s.what] = self._dev_download(s.gpu, inst.views[s.buffer], b.elements,
                                                     wait, dtype=np.dtype(b.dtype), staged=True)
                ev = None
            else:  # pragma: no cover
                raise ValueError(f"unknown step kind {s.kind}")
            run.events[s.id] = ev
            run.done.setdefault(s.gpu, []).append(s.id)
            if self.step_hook is not None:
                self.step_hook("after", s, ev)
            if observe is not None:
                observe("after", s)

    def _upload_once(self, inst: _Instance, s: Step, host: np.ndarray, wait: list, run: _Run):
        """An upload step: the host array crosses once per physical device; a logical GPU
        sharing the device with one that has it already copies it there (device-local)."""
        plan = inst.compiled.plan
        nbytes = plan.buffers[s.buffer].nbytes
        first = run.uploaded.get((id(host), self.device_map[s.gpu]))
        # the input only: a noise key's buffer may share arena memory with the next one's
        if first is not None and plan.buffers[first[0]].nbytes == nbytes and s.what == "input":
            return self._dev_copy(s.gpu, inst.views[first[0]], 0, inst.views[s.buffer], 0,
                                  nbytes, [*wait, first[1]])
        run.keep.append(host)
        if is_u8_batch(host):
            slot = self._upload_u8(inst, s.gpu, host)[1]
            ev = self._prepare_input(inst, s.gpu, host, inst.views[s.buffer], wait, slot)
            inst.u8_free[(self.device_map[s.gpu], slot)] = ev
        else:
            ev = self._dev_upload(s.gpu, inst.views[s.buffer], host, wait)
        run.uploaded[(id(host), self.device_map[s.gpu])] = (s.buffer, ev)
        return ev

    def _check_input(self, x: Any) -> Any:
        """Net's check; a U8Batch (uint8 crops) stays one where the runtime finishes it on the
        device (_dev_prepares_input), else it becomes its float32 batch on the host."""
        if not is_u8_batch(x):
            return super()._check_input(x)
        if not self._dev_prepares_input():
            return super()._check_input(x.to_float())
        px = x.pixels
        if px.dtype != np.uint8 or px.ndim != 4 or px.shape[1:] != self.graph.input_shape \
                or px.shape[1] != 3 or px.shape[0] < 1:
            raise ValueError(f"a uint8 batch must be (N, {', '.join(map(str, self.graph.input_shape))}) "
                             f"uint8 with 3 channels, got {px.dtype} {px.shape}")
        return x

    def _forward_feeds(self, inst: _Instance, x: np.ndarray, train: bool) -> dict:
        """The input (channel-major, on every GPU; a U8Batch as it is, finished on the device)
        and, at train time, the noise key's words (runtime/noise.py) for each dropout part's
        noise buffer: the mask kernels draw the masks on the device from them."""
        plan = inst.compiled.plan
        if train and any(not b.trainable for b in plan.parameters):
            self._host_params_current = False     # a training forward writes the state
        if is_u8_batch(x):
            feeds = {name: x for name in plan.io["input"]}
        else:
            xc = np.ascontiguousarray(np.moveaxis(x, 1, 0), dtype=np.float32)
            feeds = {name: xc for name in plan.io["input"]}
        noise = [s.buffer for s in plan.steps if s.kind == "upload" and s.what == "noise"]
        if train and noise:            # one array: it crosses once per device
            words = self._step_noise(x.shape[0]).words()
            feeds.update({name: words for name in noise})
        return feeds

    def _device_layout_to_host(self, flat: np.ndarray, n: int, shape: tuple) -> np.ndarray:
        """(C, N, *rest) device order -> (N, C, *rest), a new array (`flat` may be a staging
        buffer the next step reuses)."""
        return np.moveaxis(flat.reshape(shape[0], n, *shape[1:]), 0, 1).copy()

    def _run_forward(self, x: np.ndarray, train: bool, with_backward: bool = False,
                     labels: np.ndarray | None = None, run: _Run | None = None,
                     finish: bool = True) -> tuple[_Instance, _Run]:
        n = x.shape[0]
        inst = self._instance(n)
        self._push_params(inst)
        plan = inst.compiled.plan
        feeds = self._forward_feeds(inst, x, train)
        run = run or _Run()
        steps = plan.steps_for("forward", train)
        if with_backward:
            feeds[plan.io["labels"]] = np.ascontiguousarray(labels, dtype=np.int32)
            steps = steps + plan.steps_for("backward", train)
        self._execute(inst, steps, feeds, {}, run)
        if finish:
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
            a, b = (0, n) if p.slice is None else batch_slices(n, len(target.parts))[p.slice]
            parts.append(self._device_layout_to_host(np.asarray(flat), b - a,
                                                     target.part_out_shape(p)))
        return np.concatenate(parts, axis=0 if target.data_parallel else 1)  # slices: by image

    def loss_and_grads(self, x: np.ndarray, labels: Any, train: bool = False, *,
                       pull: bool = False, wait: bool = True
                       ) -> tuple[float | None, Gradients | dict[str, np.ndarray]]:
        """Net.loss_and_grads, the gradients left on the device: a `Gradients` mapping that
        downloads a tensor when it is read (update() uses the device's copy), or with
        pull=True a dict of host arrays. The step is only enqueued; its per-image losses and
        logits are copied aside on the device. wait=False returns the loss as None without
        waiting: `last_loss` and `last_logits` download them when read, or a training loop
        stashes them (`stash_step_outputs`) and reads many steps' at once."""
        x = self._check_input(x)
        y = self._check_labels(labels, x.shape[0])
        inst = self._instance(x.shape[0])
        loss_buffer = inst.compiled.plan.io["loss"]
        run = _Run(redirect={"probs": None, "logits": self._kept_logits(inst),
                             "loss": self._kept(inst, "kept_loss", loss_buffer)})
        if self.grad_hook is not None:
            inst, run = self._run_with_grad_hook(x, y, train, run)
        elif self._graphs_wanted():
            self._push_params(inst)
            plan = inst.compiled.plan
            feeds = self._forward_feeds(inst, x, train)
            feeds[plan.io["labels"]] = np.ascontiguousarray(y, dtype=np.int32)
            # enqueued by update() as one graph with the SGD step, or by whatever reads the
            # step's results first (_flush_step)
            self._run_captured(inst, ("step", train), plan.steps_for("forward", train)
                               + plan.steps_for("backward", train), feeds, {}, run,
                               defer=not wait)
        else:
            inst, run = self._run_forward(x, train, with_backward=True, labels=y, run=run,
                                          finish=False)
        self._grads_on_device = inst
        self._last_step = (inst, run, x.shape[0])
        self._last_loss = self._last_logits = None
        grads = self._device_gradients(inst)
        return self.last_loss if wait else None, grads.pull() if pull else grads

    def _kept_logits(self, inst: _Instance):
        """Where the step's logits are copied for `last_logits`."""
        return self._kept(inst, "kept_logits", inst.compiled.plan.io["logits"])

    def synchronize(self) -> None:
        """Wait until the device has done everything enqueued (a step's loss_and_grads and
        update only enqueue)."""
        self._flush_step()
        self._dev_finish()

    @property
    def last_loss(self) -> float | None:
        """The mean loss of the last loss_and_grads (float64 mean of the float32 per-image
        losses); the host waits for the device the first time it is read."""
        if self._last_loss is None and self._last_step is not None:
            self._flush_step()
            inst = self._last_step[0]
            b = inst.compiled.plan.buffers[inst.compiled.plan.io["loss"]]
            self._dev_barrier()
            flat = self._dev_download(b.gpu, inst.kept_loss, b.elements, [],
                                      dtype=np.dtype(b.dtype), staged=True)
            self._dev_finish()
            self._last_loss = float(np.asarray(flat, dtype=np.float64).mean())
        return self._last_loss

    def stash_step_outputs(self) -> None:
        """Keep the last loss_and_grads' per-image losses and logits on the device, in a slot
        of their own, until `collect_step_outputs`: a training loop reads them a print
        interval at a time, so that a step never waits for the device. Device copies only."""
        if self.__dict__.get("_pending") is not None:      # after the step's graph
            self._pending.after.append(self.stash_step_outputs)
            return
        inst, _, n = self._last_step
        plan = inst.compiled.plan
        i = len(self._stashed)
        if i == len(inst.stash):
            inst.stash.append(tuple(self._new_view(plan.buffers[plan.io[w]])
                                    for w in ("loss", "logits")))
        self._dev_barrier()
        for w, kept, to in zip(("loss", "logits"), (inst.kept_loss, inst.kept_logits),
                               inst.stash[i]):
            b = plan.buffers[plan.io[w]]
            self._dev_copy(b.gpu, kept, 0, to, 0, b.nbytes, [])
        self._stashed.append((inst, i, n))

    def collect_step_outputs(self) -> list[tuple[float, np.ndarray]]:
        """(mean loss, logits (N, classes)) of every step stashed since the last call, in
        order: downloaded together, the host waits once. The loss is the float64 mean of the
        float32 per-image losses, as loss_and_grads' own."""
        self._flush_step()
        self._dev_barrier()
        reads = []
        for inst, i, n in self._stashed:
            plan = inst.compiled.plan
            got = []
            for w, view in zip(("loss", "logits"), inst.stash[i]):
                b = plan.buffers[plan.io[w]]
                got.append(self._dev_download(b.gpu, view, b.elements, [],
                                              dtype=np.dtype(b.dtype), staged=True))
            reads.append((got, n))
        self._dev_finish()
        self._stashed = []
        return [(float(np.asarray(loss, dtype=np.float64).mean()),
                 self._device_layout_to_host(logits, n, self.head.in_shape))
                for (loss, logits), n in reads]

    @property
    def last_logits(self) -> np.ndarray | None:
        """The last loss_and_grads batch's logits (N, classes), for training metrics, as the
        reference Net keeps them: downloaded when first read."""
        if self._last_logits is None and self._last_step is not None:
            self._flush_step()
            inst, _, n = self._last_step
            b = inst.compiled.plan.buffers[inst.compiled.plan.io["logits"]]
            self._dev_barrier()
            flat = self._dev_download(b.gpu, inst.kept_logits, b.elements, [],
                                      dtype=np.dtype(b.dtype))
            self._dev_finish()
            self._last_logits = self._device_layout_to_host(flat, n, self.head.in_shape)
        return self._last_logits

    @last_logits.setter
    def last_logits(self, value) -> None:
        self._last_logits = value

    def _device_gradients(self, inst: _Instance) -> Gradients:
        """The gradients of the step just run, on the device until read."""
        self._grad_generation = generation = getattr(self, "_grad_generation", 0) + 1
        shapes = {b.name: tuple(b.shape) for b in inst.compiled.plan.parameters if b.trainable}
        return Gradients(shapes, lambda names: self._pull(inst, "grad", names=set(names)),
                         lambda: self._grad_generation == generation
                         and self._grads_on_device is inst)

    def _run_with_grad_hook(self, x, y, train, run: _Run) -> tuple[_Instance, _Run]:
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
        self._grad_generation = getattr(self, "_grad_generation", 0) + 1
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
        pending = self.__dict__.get("_pending")
        if pending is not None and pending.inst is inst:
            # the step's forward, backward and this update: one graph (per set of scalars)
            del self._pending
            self._launch(pending, ("update", lr, momentum, weight_decay),
                         plan.steps_for("update", True), scalars)
        elif self._graphs_wanted():   # one graph per set of scalars (the lr changes rarely)
            self._run_captured(inst, ("update", lr, momentum, weight_decay),
                               plan.steps_for("update", True), {}, scalars, run)
        else:
            self._execute(inst, plan.steps_for("update", True), {}, scalars, run)
        self._host_params_current = False

    # -- CUDA Graphs -----------------------------------------------------------------------
    def _graphs_wanted(self) -> bool:
        """Whether training steps run as captured graphs: the runtime can capture
        (_dev_can_capture), neither graphs=False nor NETSPEC_GRAPHS=0 was given, and no hook needs the steps one by
        one (bench's per-kernel clock, data-parallel's grad_hook)."""
        wanted = self._options.get("graphs", os.environ.get("NETSPEC_GRAPHS", "1") != "0")
        return (wanted and self.step_hook is None
                and self.grad_hook is None and self._dev_can_capture()
                and not getattr(self, "_graphs_refused", None))

    def _run_captured(self, inst: _Instance, key, steps: list[Step], feeds: dict,
                      scalars: dict, run: _Run, defer: bool = False) -> None:
        """`steps` as one graph: captured the first time (per `key`), launched every time.
        Uploads can't be captured (pageable host memory), and an upload's buffer may share
        arena memory with buffers the step uses before it: so each upload lands, before the
        graph, in a staging buffer of its own (once per physical device for the input), and
        the graph copies it into place where the plan uploads. Where capture is
        refused, the steps run as launches from then on (`_graphs_refused` says why).
        defer: upload now, launch later (_Pending: update() launches the step and itself as
        one graph; anything else that needs the step's work first, _flush_step)."""
        self._flush_step()
        if self._takes_step_scalars(inst, steps, scalars):
            # a graph keeps its kernels' arguments as captured, and these change every step
            # (the dropout noise's key and step): launched one by one
            self._execute(inst, steps, feeds, scalars, run)
            return
        self._dev_barrier()
        staged, prepares = {}, []
        for s in steps:
            if s.kind == "upload":
                staged[s.buffer] = self._stage(inst, s, feeds[s.buffer], run, prepares)
        self._dev_barrier()          # the graph after the uploads, on every stream
        kind = tuple(("u8", p[3]) for p in prepares) or ("f32",)    # a graph per uint8 slot
        pending = _Pending(inst, (*key, *kind),
                           self._staged_steps(inst, steps, staged), prepares, scalars, run)
        if defer:
            self._pending = pending
        else:
            self._launch(pending)

    def _flush_step(self) -> None:
        """Launch a deferred step (loss_and_grads' with wait=False) alone, if one waits."""
        pending = self.__dict__.pop("_pending", None)
        if pending is not None:
            self._launch(pending)

    def _launch(self, p: _Pending, key=(), then: list[Step] = (),
                scalars: dict | None = None) -> None:
        """The staged steps of `p`, then the steps `then` (after a barrier: they read what
        any stream of `p` wrote) with `scalars` too, as one graph keyed p.key + key, captured
        the first time; then what waited for `p` (stash_step_outputs)."""
        inst, scalars = p.inst, {**p.scalars, **(scalars or {})}

        def enqueue(r: _Run) -> None:
            # uint8 batches: finished on the device into their staging, inside the graph
            for gpu, batch, name, slot in p.prepares:
                self._prepare_input(inst, gpu, batch, inst.views[name], [], slot)
            if p.prepares:
                self._dev_barrier()
            self._execute(inst, p.body, {}, scalars, r, barrier=False)
            if then:
                self._dev_barrier()
                self._execute(inst, list(then), {}, scalars, r, barrier=False)

        key = (*p.key, *key)
        graph = inst.graphs.get(key)
        if graph is None:
            try:
                self._dev_begin_capture()
                try:
                    enqueue(_Run(redirect=p.run.redirect))
                finally:
                    graph = self._dev_end_capture()
            except Exception as e:        # noqa: BLE001 - any refusal: launches instead
                self._graphs_refused = f"{type(e).__name__}: {e}"
                enqueue(p.run)
                graph = None
            else:
                inst.graphs[key] = graph
        if graph is not None:
            self._dev_graph_launch(graph)
        done = self._dev_mark(0)            # after all of it: the uint8 slots read are free
        for gpu, _, _, slot in p.prepares:
            inst.u8_free[(self.device_map[gpu], slot)] = done
        for after in p.after:
            after()

    @staticmethod
    def _takes_step_scalars(inst: _Instance, steps: list[Step], scalars: dict) -> bool:
        """Whether a launch among `steps` takes a scalar fed anew each step (not one of the
        `scalars` a graph is captured for)."""
        kernels = inst.compiled.plan.kernels
        return any(p.scalar and a not in scalars
                   for s in steps if s.kind == "launch"
                   for p, a in zip(kernels[s.kernel].params, s.args))

    def _staged_steps(self, inst: _Instance, steps: list[Step], staged: dict) -> list[Step]:
        """The steps with each upload replaced by a device copy from its staging buffer."""
        plan = inst.compiled.plan
        return [dataclasses.replace(s, kind="copy", src=staged[s.buffer], dst=s.buffer,
                                    src_offset=0, dst_offset=0,
                                    elements=plan.buffers[s.buffer].nbytes // 4)
                if s.kind == "upload" else s for s in steps]

    def _stage(self, inst: _Instance, s: Step, host: np.ndarray, run: _Run,
               prepares: list) -> str:
        """Upload `host` (an upload step's data) to its staging buffer, once per physical
        device for one array; the staging buffer's name (a key of inst.views). A U8Batch's
        pixels and header go to buffers of their own, and (gpu, batch, staging name, slot) is
        added to `prepares`: the kernel that finishes it into the staging buffer runs in the
        graph."""
        device = self.device_map[s.gpu]
        first = run.uploaded.get((id(host), device))
        if first is not None:
            return first[0]
        name = f"{s.buffer}.staging"
        if name not in inst.views:
            b = inst.compiled.plan.buffers[s.buffer]
            region = self._dev_alloc(s.gpu, b.nbytes)
            inst.views[name] = self._dev_view(region, 0, b.nbytes, np.dtype(b.dtype))
        run.keep.append(host)
        if is_u8_batch(host):
            ev, slot = self._upload_u8(inst, s.gpu, host)
            prepares.append((s.gpu, host, name, slot))
        else:
            ev = self._dev_upload(s.gpu, inst.views[name], host, [])
        run.uploaded[(id(host), device)] = (name, ev)
        return name

    # -- uint8 batches finished on the device ----------------------------------------------
    def _upload_u8(self, inst: _Instance, gpu: int, batch) -> tuple[Any, int]:
        """Upload a U8Batch's pixels and header words on logical GPU `gpu`'s device (the
        transform's mean and constants once, the first time): the bytes that cross the bus
        for a uint8 batch. Two slots of buffers alternate, filled on the runtime's copy
        stream (_dev_upload_copy) once the step that last read the slot is done (an event,
        no host wait), so a step's upload overlaps the previous step's work; every stream of
        the device then waits for it. (event of the last upload, slot)."""
        device = self.device_map[gpu]
        self._input_transform(gpu, batch.transform)
        self._dev_load_prepare(gpu)
        slot = 1 - inst.u8_slot.get(device, 1)
        inst.u8_slot[device] = slot
        free = inst.u8_free.get((device, slot))
        ev = None
        for what, host in (("u8", batch.pixels), ("head", batch.header())):
            name = f"input.{what}@{device}.{slot}"
            if name not in inst.views:
                nbytes = host.nbytes
                inst.views[name] = self._dev_view(self._dev_alloc(gpu, nbytes), 0, nbytes,
                                                  host.dtype)
            ev = self._dev_upload_copy(gpu, inst.views[name], np.ascontiguousarray(host),
                                       [free])
        for g, d in enumerate(self.device_map):
            if d == device:
                self._dev_wait(g, [ev])
        return ev, slot

    def _input_transform(self, gpu: int, transform):
        """The device's mean image and PCA constants (views) for `transform`, uploaded when
        they change (into the same memory where the size is unchanged, so captured graphs
        stay valid; else new memory, and the graphs are dropped)."""
        device = self.device_map[gpu]
        held = self.__dict__.setdefault("_transforms", {})
        kept = held.get(device)
        if kept is not None and kept[0].same_as(transform):
            held[device] = (transform, *kept[1:])
            return kept[1:]
        mean = np.ascontiguousarray(transform.mean, np.float32)
        consts = transform.pca_constants()
        if kept is None or kept[1].size != mean.size:    # (a graph holds the base as captured)
            views = (self._dev_view(self._dev_alloc(gpu, mean.nbytes), 0, mean.nbytes,
                                    mean.dtype),
                     self._dev_view(self._dev_alloc(gpu, consts.nbytes), 0, consts.nbytes,
                                    consts.dtype))
            for inst in self._instances.values():
                inst.graphs.clear()
        else:
            views = kept[1:]
        self._dev_barrier()
        self._dev_upload(gpu, views[0], mean.reshape(-1), [])
        self._dev_upload(gpu, views[1], consts, [])
        held[device] = (transform, *views)
        return views

    def _prepare_input(self, inst: _Instance, gpu: int, batch, out, wait: list, slot: int):
        """Enqueue the kernel that turns the uint8 batch uploaded to `slot` into the float32
        (C, N, H, W) input `out` on logical GPU `gpu` (kernel/colour.py)."""
        device = self.device_map[gpu]
        _, mean, consts = self.__dict__["_transforms"][device]
        n, _, crop, _ = batch.pixels.shape
        return self._dev_prepare_input(gpu, inst.views[f"input.u8@{device}.{slot}"],
                                       inst.views[f"input.head@{device}.{slot}"], mean, consts,
                                       out,
                                       n, crop, batch.transform.mean.shape[-1], wait)

    def _kept(self, inst: _Instance, attr: str, buffer: str):
        """A device buffer of its own (outside the arena, which later steps reuse) that a
        step's `buffer` is copied to, to be read after the step: inst.<attr>."""
        kept = getattr(inst, attr)
        if kept is None:
            kept = self._new_view(inst.compiled.plan.buffers[buffer])
            setattr(inst, attr, kept)
        return kept

    def _new_view(self, b):
        """A device allocation of its own shaped like plan buffer `b`, on its GPU."""
        return self._dev_view(self._dev_alloc(b.gpu, b.nbytes), 0, b.nbytes, np.dtype(b.dtype))

    # -- what a runtime supplies -----------------------------------------------------------
    # Logical GPU g (a plan step's `gpu`, the `stream` and `gpu` arguments below) runs on
    # physical device `self.device_map[g]`: its own stream or queue there, its memory there.
    # A copy between views on different devices is a peer copy.
    def _dev_list(self) -> list[str]:
        """Names of the devices `devices=` numbers (raise if there is none)."""
        raise NotImplementedError

    def _dev_open(self) -> None:
        raise NotImplementedError

    def _dev_sm_count(self) -> int | None:
        """The fewest multiprocessors among the devices used, which GEMM grids are sized to
        fill; None where the device doesn't say (the plan then assumes 132)."""
        return None

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
                      dtype: np.dtype = np.dtype(np.float32), staged: bool = False):
        """Enqueue a read; the returned host array is valid after _dev_finish(). staged: the
        runtime may return a staging buffer of its own (pinned memory, so the host needn't
        wait) that the next staged read of the same view overwrites."""
        raise NotImplementedError

    def _dev_finish(self) -> None:
        raise NotImplementedError

    def _dev_can_capture(self) -> bool:
        """Whether this runtime can capture a run's steps as a graph (CUDA Graphs)."""
        return False

    def _dev_prepares_input(self) -> bool:
        """Whether this runtime finishes uint8 batches on the device (_dev_prepare_input);
        else they are finished on the host (U8Batch.to_float)."""
        return False

    def _dev_upload_copy(self, stream: int, view, host: np.ndarray, wait: list):
        """An upload on the runtime's copy stream of logical GPU `stream`'s device, after the
        events `wait` (None entries ignored); its event. By default _dev_upload on the stream
        itself."""
        return self._dev_upload(stream, view, host, [w for w in wait if w is not None])

    def _dev_wait(self, stream: int, events: list) -> None:
        """Order what is enqueued next on `stream` after `events` (on the device)."""

    def _dev_mark(self, stream: int):
        """An event after everything enqueued so far on `stream` (None where the runtime has
        no events: there the host orders everything)."""
        return None

    def _dev_load_prepare(self, stream: int) -> None:
        """Build what _dev_prepare_input launches, if not yet (before any capture)."""

    def _dev_prepare_input(self, stream: int, pixels, head, mean, consts, out, n: int,
                           crop: int, base: int, wait: list):
        """Launch kernel/colour.py's PREPARE_INPUT on `stream`: uint8 `pixels` (n, 3, crop,
        crop), uint32 `head`, the float32 planar `mean` (3, base, base) and float64 `consts`
        -> float32 `out` (3, n, crop, crop). Its event."""
        raise NotImplementedError

    def _dev_begin_capture(self) -> None:
        raise NotImplementedError

    def _dev_end_capture(self):
        """The graph of what was enqueued since _dev_begin_capture."""
        raise NotImplementedError

    def _dev_graph_launch(self, graph) -> None:
        raise NotImplementedError

    def _dev_barrier(self) -> None:
        """Order what is enqueued next after everything enqueued so far, on every stream
        (a run's steps reuse buffers other streams may still read). The host may wait here;
        a runtime with events does it on the device."""
        self._dev_finish()
