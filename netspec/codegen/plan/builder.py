"""Graph -> LaunchPlan: the training sequence (forward, backward, update) as steps, then the
memory plan. `build_plan` is the entry point; `PlanBuilder` walks the graph's layer parts."""
from __future__ import annotations

import functools

from ...ir.graph import Graph, Layer, Part
from ...kernel.gemm import DEFAULT_SM_COUNT
from .gradients import GradientSums
from .memory import place_arena, place_persistent
from .model import BufferKind, HostData, LaunchPlan, ParamBinding, Phase, StepKind, When
from .roles import Landing, Wiring
from .steps import StepRecorder
from .update import launch_sgd, parameter_bindings
from .waits import with_waits


def build_plan(graph: Graph, batch: int, tiles: dict | None = None,
               sm_count: int = DEFAULT_SM_COUNT) -> LaunchPlan:
    """The launch plan of `graph` at `batch` images a step. `tiles` optionally maps a layer
    name to its GEMM tiles (see compile_network); `sm_count` is the device's multiprocessors,
    which the GEMMs' grids and split-K are sized for (kernel/gemm.py `choose_gemm`)."""
    return PlanBuilder(graph, batch, tiles or {}, sm_count).build()


class PlanBuilder:
    """One plan, in stages: the input buffers, each part's roles and the transfers' landings
    (`Wiring`), the forward steps, the backward steps with their gradient sums
    (`GradientSums`), the parameter blocks and SGD launches, then the arena. Steps and buffers
    go through one `StepRecorder`."""

    def __init__(self, g: Graph, batch: int, tiles: dict, sm_count: int = DEFAULT_SM_COUNT):
        self.g, self.B = g, batch
        self.rec = StepRecorder()
        self.io: dict = {"input": [], "labels": None, "logits": None, "probs": None, "loss": None}
        self.wiring = Wiring(g, batch, tiles, self.rec, self.io, sm_count)
        self.roles = self.wiring.roles
        self.sums: GradientSums | None = None      # during the backward
        self.offsets: dict[str, int] = {}          # buffer name -> byte offset, once placed

    def build(self) -> LaunchPlan:
        data = self.g.layers[0]
        for p in data.parts:
            self.io["input"].append(self.rec.buf(self.wiring.y_of(data.name, p.index, p.gpu),
                                                 p.gpu, self.wiring.elements(data.out_shape),
                                                 BufferKind.INPUT))
        self.wiring.wire()
        self.forward()
        self.backward()
        bindings = self.update()
        return self.finish(bindings)

    # -- the three phases ----------------------------------------------------------------
    def forward(self) -> None:
        g, rec, w = self.g, self.rec, self.wiring
        rec.phase = Phase.FORWARD
        data = g.layers[0]
        for p in data.parts:
            rec.transfer(StepKind.UPLOAD, p.gpu, data.name, w.y_of(data.name, p.index, p.gpu),
                         HostData.INPUT)
        for l in g.compute_layers:
            for p in l.parts:
                self.forward_part(l, p)
        w.dp.keep_inputs(self.io["input"])
        soft = g.compute_layers[-1]
        self.io["probs"] = self.roles[(soft.name, 0)]["y"]
        self.io["logits"] = self.roles[(soft.name, 0)]["x"]
        for what in (HostData.LOGITS, HostData.PROBS):
            rec.transfer(StepKind.DOWNLOAD, soft.parts[0].gpu, soft.name, self.io[what], what)

    def backward(self) -> None:
        """Layers in reverse; each layer's deferred gradient sums at its end."""
        self.rec.phase = Phase.BACKWARD
        self.sums = GradientSums(self.rec)
        last = self.g.compute_layers[-1]
        for l in reversed(self.g.compute_layers):
            if l is not last:
                self.sums.check_complete(l.name, [(p, self.roles[(l.name, p.index)]["dy"])
                                                  for p in l.parts])
            for p in l.parts:
                self.backward_part(l, p)
            self.sums.sum_all()
            self.wiring.dp.reduce_scatter(self.sums, self.roles)
            self.wiring.dp.all_reduce(self.sums, l, self.roles)
            self.rec.layer_done(l.name)
        self.sums = None

    def update(self) -> list[ParamBinding]:
        """Parameter-region offsets (`offsets`: buffer name -> byte offset), then the SGD
        launches; returns the parameter bindings."""
        rec = self.rec
        rec.phase = Phase.UPDATE
        self.offsets, block_bytes = place_persistent(rec.buffers, self.g.gpus)
        bindings = [b for l in self.g.weighted_layers for b in parameter_bindings(l)]
        launch_sgd(rec, self.g.gpus, block_bytes, self.offsets, self.wiring.mults)
        return bindings

    def finish(self, bindings: list[ParamBinding]) -> LaunchPlan:
        """Shared kernels renamed, unused buffers dropped, the arena placed."""
        g, rec = self.g, self.rec
        if g.gpus > 1:                     # else no kernel runs on two GPUs
            rec.rename_shared()
        rec.drop_unused()
        self.offsets.update(place_arena(rec.buffers, rec.first, rec.last))
        buffers = rec.placed(self.offsets)
        parts = []
        for (l, i), r in self.roles.items():     # each roles dict, trimmed in place (no copy)
            for k in [k for k, v in r.items() if not (isinstance(v, str) and v in buffers)]:
                del r[k]
            parts.append({"layer": l, "part": i, "gpu": g.layer(l).parts[i].gpu, "roles": r})
        multi = len({s.gpu for s in rec.steps}) > 1
        waits = functools.partial(with_waits, buffers=buffers, kernels=rec.kernels)
        return LaunchPlan(network=g.name, batch=self.B, gpus=g.gpus, kernels=rec.kernels,
                          buffers=buffers, planned_steps=rec.steps, parameters=bindings,
                          io=self.io, parts=parts, waits=waits if multi else None)

    # -- one part ------------------------------------------------------------------------
    def forward_part(self, l: Layer, p: Part) -> None:
        rec, w = self.rec, self.wiring
        r = self.roles[(l.name, p.index)]
        if rec.buffers[r["x"]].kind == "gather":
            self.gather(l, p, r["x"])
        if "noise" in r:     # the step's noise key as data, so a captured graph replays anew
            rec.transfer(StepKind.UPLOAD, p.gpu, l.name, r["noise"], HostData.NOISE, When.TRAIN)
        for call in l.op.forward_kernels(w.context(l, p, "dx" in r)):
            rec.launch(call, r, p.gpu, l.name, part=p.index)   # dropout's mask: a launch too
        # send what other GPUs read of this part now, while this GPU computes on
        for t in w.outgoing.get((l.name, p.index), []):
            rec.copy(r["y"], t.t.start * t.per_ch, t.buffer, t.offset, t.t.channels * t.per_ch,
                     l.name)
        if l.data_parallel:
            w.dp.all_gather(l, p, r["y"])

    def gather(self, l: Layer, p: Part, x: str) -> None:
        """Copy each source's channels into the part's input `x`, from the producer's output
        on this GPU or from where its transfer landed."""
        rec, w = self.rec, self.wiring
        for s in p.sources:
            if p.slice is not None and w.dp.crosses(p, s):
                w.dp.slice_input(l, p, s, w.y_name(s), x)
                continue
            n = w.block(l, s, p)
            per_ch = n // s.channels
            if s.gpu == p.gpu:
                rec.copy(w.source_buffer(p, s), s.start * per_ch, x, s.offset * per_ch, n,
                         l.name)
                continue
            t = w.transfers[(s.layer, s.part, p.gpu)]
            if t.direct == (l.name, p.index):
                continue                 # the transfer landed here already
            rec.copy(t.buffer, (s.start - t.t.start) * per_ch, x, s.offset * per_ch, n,
                     l.name)

    def backward_part(self, l: Layer, p: Part) -> None:
        rec = self.rec
        r = self.roles[(l.name, p.index)]
        if l.op.loss_layer:
            rec.transfer(StepKind.UPLOAD, p.gpu, l.name, "labels", HostData.LABELS)
        for call in l.op.backward_kernels(self.wiring.context(l, p, "dx" in r)):
            rec.launch(call, r, p.gpu, l.name, part=p.index)
        if l.op.loss_layer:
            rec.transfer(StepKind.DOWNLOAD, p.gpu, l.name, "loss", HostData.LOSS)
        dx = r.get("dx")
        if dx is None:
            return
        if dx.endswith(".dy"):          # the source's own output gradient, not this part's .dx
            self.sums.cover[dx] = [(0, p.sources[0].channels)]
            return
        self.hand_back(l, p, dx)

    def hand_back(self, l: Layer, p: Part, dx: str) -> None:
        """Hand each source its slice of the input gradient `dx`: copied where its gradient
        has nothing yet, added where it has; a remote source's slice goes back through its
        transfer."""
        w = self.wiring
        for s in p.sources:
            if self.g.layer(s.layer).replicated:
                continue
            per_ch = w.block(l, s, p) // s.channels
            off = s.offset * per_ch
            if w.dp.crosses(p, s):           # the whole batch of a data-parallel layer
                w.dp.deliver(self.sums, l, p, s, dx, off, per_ch)
                continue
            dy = w.dy_name(s)
            if s.gpu != p.gpu:
                t = w.transfers[(s.layer, s.part, p.gpu)]
                if t.direct != (l.name, p.index):
                    self.return_shared(t, dx, off, s.start, s.channels, dy, per_ch, l.name)
                    continue
            # on this GPU, or its transfer's only reader here: straight to the source
            self.sums.deliver(dx, off, dy, s.start, s.channels, per_ch, l.name)

    def return_shared(self, t: Landing, dx: str, off: int, start: int, channels: int, dy: str,
                      per_ch: int, layer: str) -> None:
        """A transfer several parts here read: their slices are summed on this GPU, and the
        sum crosses back to the source's gradient `dy` once the last reader's is in."""
        sums, tt = self.sums, t.t
        back = self.rec.buf(f"{t.buffer}.dy", tt.dst_gpu, tt.channels * per_ch,
                             BufferKind.GRADIENT)
        sums.deliver(dx, off, back, start - tt.start, channels, per_ch, layer)
        t.pending -= 1
        if t.pending == 0:
            sums.sum_into(back)                       # complete before it is sent
            for a, b in sums.cover[back]:
                sums.deliver(back, a * per_ch, dy, tt.start + a, b - a, per_ch, layer)
