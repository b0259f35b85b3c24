"""The collectives of data-parallel layers (Krizhevsky 2014, "One weird trick for
parallelizing convolutional neural networks", section 2), as point-to-point copies on the
sender's stream and sum launches, the steps every runtime already runs and `waits` orders:

- all-gather: where a layer that is not data-parallel (an fc split by neurons, the softmax)
  reads a data-parallel one, each slice's output is copied, as soon as its part's forward is
  issued, into a whole-batch buffer (`gathered`) on every GPU that reads it: channel by
  channel, since a slice of (C, N, H, W) is C blocks. The paper's scheme (b): the fc layers'
  GPUs receive one slice while the others still compute theirs.
- reduce-scatter: backward, the readers' gradient for that whole batch on each GPU is cut
  into the slices, each packed (C blocks into one) and summed on its slice's GPU into the
  data-parallel part's output gradient (through `GradientSums`: one staging buffer, one sum).
- allreduce: a data-parallel layer's weight gradients (each replica's, over its slice) are
  summed over the GPUs right after its backward, so the sums run while the backward goes on
  below it (the bucket is the layer): each tensor is cut into G chunks, GPU c sums chunk c
  (the others' copies staged beside it) and copies the sum back to every other GPU. Sum, not
  mean: the loss is already the batch's mean, so each slice's gradient is a part of the sum.

Every GPU then runs SGD on the same gradient and its replica stays equal to the others.
"""
from __future__ import annotations

import math

from ...ir.graph import Graph, Layer, Part, Source, batch_slices
from .gradients import GradientSums
from .model import BufferKind
from .steps import StepRecorder


class DataParallel:
    """The batch slices, the whole-batch buffers of data-parallel layers read by other layers
    (`gathered[(layer, gpu)]`, with their gradients), and the steps of the three
    collectives. Inert for a graph without data-parallel layers."""

    def __init__(self, g: Graph, batch: int, rec: StepRecorder):
        self.g, self.B, self.rec = g, batch, rec
        self.active = any(l.data_parallel for l in g.layers)
        self.slices = batch_slices(batch, g.gpus) if self.active else []
        self.gathered: dict[tuple[str, int], str] = {}
        self.pending: dict[tuple[str, int], int] = {}     # readers' gradients still to come
        self.scattered: set[str] = set()

    # -- which reads cross between a slice and the whole batch ----------------------------
    def batch_of(self, p: Part) -> int:
        """Images a part computes on: its slice's, or the whole batch."""
        if p.slice is None:
            return self.B
        a, b = self.slices[p.slice]
        return b - a

    def crosses(self, p: Part, s: Source) -> bool:
        """Part `p` reads `s` across the batch's cut: a slice of the (whole) input, or the
        whole batch of a data-parallel layer."""
        src = self.g.layer(s.layer)
        return (p.slice is not None and src.replicated) or \
            (p.slice is None and src.data_parallel)

    def per_image(self, layer: str) -> int:
        return math.prod(self.g.layer(layer).out_shape[1:])

    def wire(self) -> None:
        """A whole-batch buffer (and its gradient) on every GPU where a part that is not
        data-parallel reads a data-parallel layer, with the count of its readers."""
        for l in self.g.compute_layers:
            for p in l.parts:
                for s in p.sources:
                    if p.slice is not None or not self.g.layer(s.layer).data_parallel:
                        continue
                    key = (s.layer, p.gpu)
                    if key not in self.gathered:
                        n = self.B * math.prod(self.g.layer(s.layer).out_shape)
                        self.gathered[key] = self.rec.buf(f"{s.layer}.all.gpu{p.gpu}", p.gpu,
                                                          n, BufferKind.GATHERED)
                        self.rec.buf(f"{s.layer}.all.gpu{p.gpu}.dy", p.gpu, n,
                                     BufferKind.GRADIENT)
                    self.pending[key] = self.pending.get(key, 0) + 1

    def targets(self, layer: str) -> list[int]:
        return sorted(g for (name, g) in self.gathered if name == layer)

    # -- forward ----------------------------------------------------------------------------
    def all_gather(self, l: Layer, p: Part, y: str) -> None:
        """Slice `p.slice` of `l`'s output `y` into the whole-batch buffer on every GPU that
        reads it: one copy per channel and GPU."""
        a, b = self.slices[p.slice]
        per, c = self.per_image(l.name), l.out_shape[0]
        for h in self.targets(l.name):
            dst = self.gathered[(l.name, h)]
            for ch in range(c):
                self.rec.copy(y, ch * (b - a) * per, dst, (ch * self.B + a) * per,
                              (b - a) * per, l.name)

    def slice_input(self, l: Layer, p: Part, s: Source, src: str, x: str) -> None:
        """A data-parallel part's slice of a whole-batch input `src` (the network's input),
        into channels s.offset.. of its input buffer `x`: one copy per channel."""
        a, b = self.slices[p.slice]
        per = self.per_image(s.layer)
        for ch in range(s.channels):
            self.rec.copy(src, ((s.start + ch) * self.B + a) * per, x,
                          (s.offset + ch) * (b - a) * per, (b - a) * per, l.name)

    def keep_inputs(self, inputs: list[str]) -> None:
        """The inputs stay placed through the whole forward. A runtime may fill a logical
        GPU's input by a copy from another's on the same device (runtime/plan_net.py
        `_upload_once`), a read the plan does not see; reading the input once at the start,
        as data-parallel slices do, would otherwise free its memory for the next layer while
        that copy may still be to come."""
        if self.active:
            end = len(self.rec.steps) - 1
            for name in inputs:
                self.rec.last[name] = max(self.rec.last.get(name, end), end)

    # -- backward ---------------------------------------------------------------------------
    def deliver(self, sums: GradientSums, l: Layer, p: Part, s: Source, dx: str, off: int,
                per_ch: int) -> None:
        """A reader's gradient for the whole batch of data-parallel `s.layer`, into that
        batch's gradient on the reader's GPU."""
        key = (s.layer, p.gpu)
        sums.deliver(dx, off, f"{self.gathered[key]}.dy", s.start, s.channels, per_ch, l.name)
        self.pending[key] -= 1

    def reduce_scatter(self, sums: GradientSums, roles: dict) -> None:
        """For each data-parallel layer whose whole-batch gradients are all in (their sums
        done): slice q of each, packed on its GPU, summed into part q's output gradient."""
        for name in sorted({n for (n, _) in self.gathered} - self.scattered,
                           key=lambda n: self.g.layers.index(self.g.layer(n))):
            if any(self.pending[k] for k in self.gathered if k[0] == name):
                continue
            self.scattered.add(name)
            l = self.g.layer(name)
            per, c = self.per_image(name), l.out_shape[0]
            for q in l.parts:
                a, b = self.slices[q.slice]
                n = (b - a) * per
                for h in self.targets(name):
                    dy = f"{self.gathered[(name, h)]}.dy"
                    pack = self.rec.buf(f"{dy}.s{q.slice}", h, c * n, BufferKind.PACKED)
                    for ch in range(c):
                        self.rec.copy(dy, (ch * self.B + a) * per, pack, ch * n, n, name)
                    sums.deliver(pack, 0, roles[(name, q.index)]["dy"], 0, c, n, name)
            sums.sum_all()

    def all_reduce(self, sums: GradientSums, l: Layer, roles: dict) -> None:
        """The replicas' gradients of data-parallel `l`, summed over the GPUs, on each."""
        if not (l.data_parallel and l.weighted) or len(l.parts) < 2:
            return
        k = len(l.parts)
        for d in l.param_defs(l.parts[0]):
            if not d.trainable:
                continue
            grads = [roles[(l.name, p.index)]["d" + d.role] for p in l.parts]
            n = math.prod(d.shape)
            for c in range(k):
                a, b = c * n // k, (c + 1) * n // k
                if a == b:
                    continue
                sums.cover[grads[c]] = [(a, b)]            # its own share is in already
                for h in range(k):
                    if h != c:
                        sums.deliver(grads[h], a, grads[c], a, b - a, 1, l.name)
                sums.sum_into(grads[c])
                del sums.cover[grads[c]]
                for h in range(k):
                    if h != c:
                        self.rec.copy(grads[c], a, grads[h], a, b - a, l.name)


COLLECTIVES = ("all-gather", "reduce-scatter", "allreduce", "transfer")


def collective_bytes(plan) -> dict[str, int]:
    """Bytes one training step moves between logical GPUs, by what moves them: the
    all-gathers of data-parallel outputs, their gradients' reduce-scatters, the replicas'
    weight-gradient allreduces, and the channel transfers of model parallelism (both ways).
    Counted from the plan's copies whose two ends are on different GPUs."""
    out = dict.fromkeys(COLLECTIVES, 0)
    bufs = plan.buffers
    for s in plan.steps:
        if s.kind != "copy" or s.src_gpu == s.dst_gpu or s.when == "test":
            continue
        src, dst = bufs[s.src].kind, bufs[s.dst].kind
        if dst == BufferKind.GATHERED:
            what = "all-gather"
        elif src == BufferKind.PACKED:
            what = "reduce-scatter"
        elif BufferKind.GRAD in (src, dst):
            what = "allreduce"
        else:
            what = "transfer"
        out[what] += 4 * s.elements
    return out
