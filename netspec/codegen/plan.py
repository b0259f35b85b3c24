"""The launch plan: an ordered list of steps that both runtimes execute, and its memory plan.

Steps, in dependency order (each logical GPU is one stream; steps on a stream run in order):

- `launch`   a kernel on a part's GPU, with its buffers (and scalars) in parameter order;
- `copy`     a contiguous block from one buffer to another: gathering a part's sources into
             its input, or a transfer between logical GPUs (`src_gpu != dst_gpu`); it runs on
             the sender's stream;
- `upload` / `download`   host <-> device: the input, labels, dropout masks / probabilities,
             per-image losses.

`deps` lists, per step, the steps on *other* streams it must wait for (the runtimes turn them
into events). They come from the memory each step reads and writes, after placement, so they
also cover a buffer reusing memory another stream has just finished with.

Transfers: each of the IR's transfers (a source part's channel range needed on another GPU) is
one copy, issued on the sender's stream right after the producing part's forward, so that it
runs while the sender computes on. It lands straight in the input buffer of its reader when
one part there reads exactly that range, else in a `received` buffer the readers gather from.
Backward, the readers' gradients for it are summed on the receiving GPU and cross back once.
So the bytes the copies move are the report's `sent_bytes_per_step`. A layer's channel range
in a buffer is contiguous (channels outermost), so every piece is one copy.

Gradient sums: a part's output gradient is the sum of its readers' slices. The first slice to
reach a channel range is copied into the gradient; the others are summed once the layer's
backward has issued them all: each slice from another GPU is copied (as soon as its reader's
backward is done, on the reader's stream) into the next slot of one staging buffer on the
gradient's GPU, and one kernel adds all the slots, in order, plus one slice already on that
GPU. A `connect all` layer on G GPUs thus has G(G-1) gradient copies (inherent in
point-to-point transfers) but G sum launches, not G(G-1) staged copies each with its own
accumulating kernel; the staging buffer holds up to G-1 slots at once (a reduce-scatter's
receive buffer). A single slice received alone is added by the one-slot kernel as before.

Memory: every buffer lives on one logical GPU. Parameters, their gradients and momenta are
persistent, and so is an op's state (a tensor its op marks not trainable: no gradient, no
momentum, skipped by the SGD launch). Everything else lives in one arena per GPU, placed first-fit by size with
lifetimes from the training sequence (forward, backward, update): a buffer is live from the
first step that touches it to the last, so activations the backward reads stay until their
backward, and the rest share memory. Offsets are aligned to `ALIGN` bytes (OpenCL sub-buffers).

Device layout: activations (C, N, H, W) per part (see netspec/kernel).
"""
from __future__ import annotations

import bisect
import heapq
import math
import re
from dataclasses import asdict, dataclass, field

from ..ir.graph import Graph, Layer, Part
from ..kernel import Call, Kernel, PartContext, ceil_div, elementwise_launch, params
from .sgd import sgd_kernel

ALIGN = 4096
PHASES = ("forward", "backward", "update")

ACCUMULATE = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i < ${N})
        dst[${DOFF} + i] += src[${OFF} + i];
}
"""

# K gradient slices of N elements received side by side in one staging buffer (slot k at
# OFF + k·N), summed into dst in slot order, after this GPU's own slice (`loc`) if it has one
_SUM_SLOTS = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i < ${N}) {
        float v = dst[${DOFF} + i]@LOCAL@;
        for (int k = 0; k < ${K}; ++k)
            v += src[${OFF} + k * ${N} + i];
        dst[${DOFF} + i] = v;
    }
}
"""
ACCUMULATE_SLOTS = _SUM_SLOTS.replace("@LOCAL@", "")
ACCUMULATE_SLOTS_LOCAL = _SUM_SLOTS.replace("@LOCAL@", " + loc[${LOFF} + i]")


@dataclass(slots=True)
class Buffer:
    name: str
    gpu: int
    elements: int
    kind: str                 # param velocity grad | input labels activation gather received
                              # gradient staging scratch ...
    dtype: str = "float32"
    persistent: bool = False
    offset: int = 0           # bytes, in the GPU's parameter region or arena
    first: int = -1           # first and last step touching it (arena buffers)
    last: int = -1

    @property
    def nbytes(self) -> int:
        return 4 * self.elements

    @property
    def region(self) -> str:
        return "params" if self.persistent else "arena"


@dataclass(slots=True)
class Step:
    id: int
    kind: str                  # launch | copy | upload | download
    gpu: int                   # the stream it runs on
    phase: str                 # forward | backward | update
    layer: str
    when: str = "always"       # always | train | test
    part: int | None = None    # launch: the layer part it computes (None: shared steps)
    kernel: str | None = None
    args: tuple = ()
    src: str | None = None     # copy: element offsets and count
    dst: str | None = None
    src_offset: int = 0
    dst_offset: int = 0
    elements: int = 0
    src_gpu: int | None = None
    dst_gpu: int | None = None
    buffer: str | None = None  # upload / download
    what: str | None = None    # input | labels | mask | probs | loss
    deps: list[int] | tuple = ()   # () when none: one empty list per step adds up

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()
                if v not in (None, (), []) and not (k in ("src_offset", "dst_offset", "elements")
                                                     and self.kind != "copy")}


@dataclass
class ParamBinding:
    """Where the reference's parameter `name` lives: `rows` [start, stop) of its first axis on
    each part's buffers."""

    name: str
    layer: str
    what: str                  # the op's name for it: weight | bias | ...
    shape: tuple[int, ...]
    parts: list[dict]          # {"gpu", "rows": [a, b], "buffer", "grad", "velocity"}
    lr_mult: float
    decay_mult: float
    trainable: bool = True     # False: state, no "grad" or "velocity" buffers (None)


@dataclass
class LaunchPlan:
    """The plan. Its steps' cross-stream waits (`Step.deps`) are worked out when `steps` is
    first read: `netspec compile` without -o reports the memory plan only, and the waits
    are a third of a large multi-GPU plan's time."""

    network: str
    batch: int
    gpus: int
    kernels: dict[str, Kernel]
    buffers: dict[str, Buffer]
    _steps: list[Step]
    parameters: list[ParamBinding]
    io: dict
    parts: list[dict] = field(default_factory=list)   # each layer part's buffers by role
    alignment: int = ALIGN
    _waits: object = field(default=None, repr=False, compare=False)   # sets deps, once
    _ext: dict | None = field(default=None, repr=False, compare=False)  # _extents, once

    @property
    def steps(self) -> list[Step]:
        if self._waits is not None:
            waits, self._waits = self._waits, None
            waits()
        return self._steps

    def memory(self, gpu: int) -> dict:
        params, arena = self._extents().get(gpu, (0, 0))
        params, arena = _align(params), _align(arena)
        return {"params": params, "arena": arena, "total": params + arena}

    def _extents(self) -> dict[int, tuple[int, int]]:
        """Per GPU, the end of its last parameter-region and arena buffer (bytes), in one
        pass over the buffers (asking per GPU walked them all once per GPU), once: the
        buffers are placed when the plan is built and never move (the report and the
        backends ask once per GPU, which made it G passes: cubic in `gpus` with the
        all-to-all layers' G^2 buffers)."""
        if self._ext is not None:
            return self._ext
        ends: dict[int, list[int]] = {}
        for b in self.buffers.values():
            e = ends.setdefault(b.gpu, [0, 0])
            i = 0 if b.persistent else 1
            e[i] = max(e[i], b.offset + b.nbytes)
        self._ext = {g: (e[0], e[1]) for g, e in ends.items()}
        return self._ext

    @property
    def memory_per_gpu(self) -> list[int]:
        ext = self._extents()
        return [_align(ext.get(g, (0, 0))[0]) + _align(ext.get(g, (0, 0))[1])
                for g in range(self.gpus)]

    def steps_for(self, phase: str, train: bool) -> list[Step]:
        skip = "test" if train else "train"
        return [s for s in self.steps if s.phase == phase and s.when != skip]

    def to_json(self) -> dict:
        return {
            "format": "netspec-plan/1",
            "network": self.network, "batch": self.batch, "gpus": self.gpus,
            "alignment": self.alignment,
            "layout": "activations (C, N, H, W) per part; weights (O, C, kh, kw)",
            "memory": [dict(gpu=g, **self.memory(g)) for g in range(self.gpus)],
            "kernels": {k.name: {"layer": k.layer, "global": list(k.global_size),
                                 "local": list(k.local_size),
                                 "params": [[p.kind, p.name] for p in k.params],
                                 "shared_bytes": k.shared_bytes, "flops": k.flops}
                        for k in self.kernels.values()},
            "buffers": {b.name: {"gpu": b.gpu, "elements": b.elements, "dtype": b.dtype,
                                 "kind": b.kind, "region": b.region, "offset": b.offset,
                                 **({"live": [b.first, b.last]} if not b.persistent else {})}
                        for b in self.buffers.values()},
            "parameters": [{"name": p.name, "layer": p.layer, "what": p.what,
                            "shape": list(p.shape), "parts": p.parts, "lr_mult": p.lr_mult,
                            "decay_mult": p.decay_mult, "trainable": p.trainable}
                           for p in self.parameters],
            "io": self.io,
            "parts": self.parts,
            "steps": [s.to_json() for s in self.steps],
        }


def _align(n: int) -> int:
    return ceil_div(n, ALIGN) * ALIGN


def build_plan(graph: Graph, batch: int, tiles: dict | None = None) -> LaunchPlan:
    return _Builder(graph, batch, tiles or {}).build()


class _Builder:
    def __init__(self, g: Graph, batch: int, tiles: dict):
        self.g, self.B, self.tiles = g, batch, tiles
        self.buffers: dict[str, Buffer] = {}
        self.steps: list[Step] = []
        self.kernels: dict[str, Kernel] = {}
        self.io: dict = {"input": [], "labels": None, "logits": None, "probs": None, "loss": None,
                        "masks": []}
        self.phase = "forward"
        self.mults: dict[str, tuple[float, float]] = {}
        self.signatures: dict[str, dict[tuple, str]] = {}   # per kernel layer
        self.consts_keys: dict[tuple, tuple] = {}
        self.docs: dict[str, str] = {}

    # -- buffers and steps ---------------------------------------------------------------------
    def buf(self, name: str, gpu: int, elements: int, kind: str, **kw) -> str:
        b = self.buffers.get(name)
        if b is None:
            self.buffers[name] = Buffer(name, gpu, elements, kind, **kw)
        else:
            assert (b.gpu, b.elements) == (gpu, elements), (name, b, gpu, elements)
        return name

    def step(self, **kw) -> Step:
        s = Step(id=len(self.steps), phase=self.phase, **kw)
        if s.buffer is not None:                  # upload / download
            self.touch(self.buffers[s.buffer], s.id)
        self.steps.append(s)
        return s

    @staticmethod
    def touch(b: Buffer, step: int):
        """A buffer's lifetime: its first and last step (steps come in id order)."""
        if b.first < 0:
            b.first = step
        b.last = step

    def launch(self, call: Call, roles: dict, gpu: int, layer: str, when: str | None = None,
               part: int | None = None):
        k = call.kernel
        # parts with the same shapes share one kernel (half the compile time for an even
        # split); `rename_shared` then drops the part from its name
        consts = tuple(sorted(k.consts.items()))
        # one shared copy of each set of values (and of each doc): a chain of 200,000 alike
        # layers has 400,000 kernels that differ only in their names (nothing edits them)
        consts, shared = self.consts_keys.setdefault(consts, (consts, k.consts))
        sig = (k.template, consts, k.params, k.global_size, k.local_size)
        same_layer = self.signatures.setdefault(k.layer, {})
        known = len(same_layer)
        name = same_layer.setdefault(sig, k.name)      # one hash of the signature, not two
        if len(same_layer) == known:
            k = self.kernels[name]
        else:
            if k.name in self.kernels:
                raise ValueError(f"kernel name {k.name} used twice")
            k.consts = shared
            k.doc = self.docs.setdefault(k.doc, k.doc)
            self.kernels[k.name] = k
        args = tuple([roles.get(r, r) for r in call.args])
        buffers, steps = self.buffers, self.steps
        i = len(steps)
        for p, a in zip(k.params, args):
            if p.kind == "float":
                continue
            b = buffers.get(a)
            if b is None:
                raise KeyError(f"{k.name}: no buffer for parameter {p.name} ({a})")
            if b.first < 0:                            # its lifetime (see touch)
                b.first = i
            b.last = i
        # Step(id, kind, gpu, phase, layer, when, part, kernel, args)
        steps.append(Step(i, "launch", gpu, self.phase, layer, when or call.when, part, k.name,
                          args))

    def copy(self, src: str, src_offset: int, dst: str, dst_offset: int, elements: int,
             layer: str, when: str = "always"):
        bs, bd = self.buffers[src], self.buffers[dst]
        steps = self.steps
        i = len(steps)
        # Step(id, kind, gpu, phase, layer, when, part, kernel, args, src, dst, src_offset,
        #      dst_offset, elements, src_gpu, dst_gpu)
        steps.append(Step(i, "copy", bs.gpu, self.phase, layer, when, None, None, (), src, dst,
                          src_offset, dst_offset, elements, bs.gpu, bd.gpu))
        self.touch(bs, i)
        self.touch(bd, i)

    # -- names -----------------------------------------------------------------------------
    def y_of(self, layer: str, part: int, gpu: int) -> str:
        src = self.g.layer(layer)
        if src.replicated:
            return f"{layer}.gpu{gpu}"
        return f"{layer}.g{part}.y"

    def elements(self, shape) -> int:
        return self.B * math.prod(shape)

    def per_channel(self, layer: str) -> int:
        """Elements of one channel of a layer's output in a buffer: (N, H, W)."""
        return self.B * math.prod(self.g.layer(layer).out_shape[1:])

    # -- the network -----------------------------------------------------------------------
    def build(self) -> LaunchPlan:
        g, B = self.g, self.B
        data = g.layers[0]
        for p in data.parts:
            name = self.buf(self.y_of(data.name, p.index, p.gpu), p.gpu,
                            self.elements(data.out_shape), "input")
            self.io["input"].append(name)
        # who reads each part: (layer, part) -> [(consumer layer, consumer part, Source)]
        self.readers: dict[tuple[str, int], list] = {}
        # and the remote ones by their GPU: (layer, part, reader's gpu) -> [...] (a transfer's
        # readers, found without scanning all of a `connect all` source's G readers per
        # transfer: that was Θ(G³))
        self.remote_readers: dict[tuple[str, int, int], list] = {}
        for l in g.compute_layers:
            for p in l.parts:
                for s in p.sources:
                    if not g.layer(s.layer).replicated:
                        self.readers.setdefault((s.layer, s.part), []).append((l, p, s))
                        if s.gpu != p.gpu:
                            self.remote_readers.setdefault((s.layer, s.part, p.gpu),
                                                           []).append((l, p, s))
        self.plan_transfers()
        self.roles: dict[tuple[str, int], dict] = {}
        for l in g.compute_layers:
            for p in l.parts:
                self.roles[(l.name, p.index)] = self.part_roles(l, p)
        self.readers = self.remote_readers = None    # read by part_roles only

        self.phase = "forward"
        for p in data.parts:
            self.step(kind="upload", gpu=p.gpu, layer=data.name,
                      buffer=self.y_of(data.name, p.index, p.gpu), what="input")
        for l in g.compute_layers:
            for p in l.parts:
                self.forward_part(l, p)
        soft = g.compute_layers[-1]
        self.io["probs"] = self.roles[(soft.name, 0)]["y"]
        self.io["logits"] = self.roles[(soft.name, 0)]["x"]
        for what in ("logits", "probs"):
            self.step(kind="download", gpu=soft.parts[0].gpu, layer=soft.name,
                      buffer=self.io[what], what=what)

        self.phase = "backward"
        self.cover: dict[str, list[tuple[int, int]]] = {}   # gradient channels written so far
        self.sums: dict[str, dict] = {}      # gradient sums deferred to the layer's end
        last = g.compute_layers[-1]
        for l in reversed(g.compute_layers):
            if l is not last:
                self.check_gradient_complete(l)
            for p in l.parts:
                self.backward_part(l, p)
            for dst in list(self.sums):
                self.sum_into(dst)
            self.signatures.pop(l.name, None)    # its last launch is behind us
        self.cover = self.sums = None

        self.phase = "update"
        self.place_persistent()
        bindings = []
        for l in g.weighted_layers:
            bindings.extend(self.bindings(l))
        segs_by_gpu: dict[int, list] = {}
        for b in self.buffers.values():
            if b.kind == "param":
                segs_by_gpu.setdefault(b.gpu, []).append(
                    (b.offset // 4, b.offset // 4 + b.elements, *self.mults[b.name], b.name))
        for gpu in range(g.gpus):
            segs = segs_by_gpu.get(gpu)
            if not segs:
                continue
            n = self.block_bytes[gpu] // 4
            blocks = {}
            for kind, base in (("param", 0), ("grad", 1), ("velocity", 2)):
                blocks[kind] = self.buf(f"{kind}s.gpu{gpu}", gpu, n, "block", persistent=True,
                                        offset=base * self.block_bytes[gpu])
            k = sgd_kernel(f"sgd_gpu{gpu}", n, segs)
            self.launch(Call(k, (blocks["param"], blocks["velocity"], blocks["grad"], "lr",
                                 "momentum", "weight_decay")), {}, gpu, "")

        self.rename_shared()
        self.lifetimes()
        self.place()
        parts = []
        for (l, i), r in self.roles.items():     # each roles dict, trimmed in place (no copy)
            for k in [k for k, v in r.items() if not (isinstance(v, str) and v in self.buffers)]:
                del r[k]
            parts.append({"layer": l, "part": i, "gpu": self.g.layer(l).parts[i].gpu,
                          "roles": r})
        # The deferred waits keep this builder alive until the steps are read (never, for
        # `compile` without -o): drop what they don't need, a third of a long chain's memory.
        self.signatures = self.consts_keys = self.docs = self.roles = self.transfers = self.outgoing = None
        self.mults = None
        multi = len({s.gpu for s in self.steps}) > 1
        return LaunchPlan(g.name, B, g.gpus, self.kernels, self.buffers, self.steps, bindings,
                          self.io, parts, _waits=self.dependencies if multi else None)

    def plan_transfers(self):
        """Where each IR transfer lands on its receiving GPU (see the module doc)."""
        self.transfers: dict[tuple[str, int, int], dict] = {}
        self.outgoing: dict[tuple[str, int], list[dict]] = {}
        for t in self.g.transfers:
            readers = self.remote_readers[(t.layer, t.part, t.dst_gpu)]
            per_ch = self.per_channel(t.layer)
            entry = {"t": t, "per_ch": per_ch, "pending": len(readers), "direct": None}
            l, p, s = readers[0]
            if len(readers) == 1 and (s.start, s.channels) == (t.start, t.channels):
                entry["direct"] = (l.name, p.index)
                entry["buffer"] = f"{l.name}.g{p.index}.x"       # the reader's input
                entry["offset"] = s.offset * per_ch
            else:
                entry["buffer"] = self.buf(f"{t.layer}.g{t.part}.to{t.dst_gpu}", t.dst_gpu,
                                           t.channels * per_ch, "received")
                entry["offset"] = 0
            self.transfers[(t.layer, t.part, t.dst_gpu)] = entry
            self.outgoing.setdefault((t.layer, t.part), []).append(entry)

    def whole(self, s) -> bool:
        """The source is its producer part, all of it."""
        src = self.g.layer(s.layer)
        return s.start == 0 and s.channels == (src.out_shape[0] if src.replicated
                                               else src.parts[s.part].channels)

    def part_roles(self, l: Layer, p: Part) -> dict:
        """Buffer names for a part's roles. The input is the source's own output when the part
        reads exactly one whole source part on its own GPU (or the received copy of exactly one
        remote range); otherwise a gather buffer. The input gradient likewise writes straight
        into the source's output gradient when this part is that source part's only reader.
        Roles hold buffer names only (what the flags were is read off them: `x` is a "gather"
        buffer, a `dx` exists, `dx` is the source's `.dy`), and a source's names are its own
        roles' strings, not equal copies: a long chain keeps one of each."""
        g, B = self.g, self.B
        key = f"{l.name}.g{p.index}"
        r = {"y": self.buf(f"{key}.y", p.gpu, self.elements(l.part_out_shape(p)), "activation"),
             "dy": self.buf(f"{key}.dy", p.gpu, self.elements(l.part_out_shape(p)), "gradient")}
        in_el = self.elements(l.part_in_shape(p))
        s = p.sources[0]
        single = len(p.sources) == 1 and s.gpu == p.gpu and self.whole(s)
        received = None
        if len(p.sources) == 1 and s.gpu != p.gpu:
            t = self.transfers[(s.layer, s.part, p.gpu)]
            if t["direct"] is None and (s.start, s.channels) == (t["t"].start, t["t"].channels):
                received = t["buffer"]
        if single:
            r["x"] = self.y_name(s)
        elif received:
            r["x"] = received
        else:
            r["x"] = self.buf(f"{key}.x", p.gpu, in_el, "gather")
        input_grad = any(not g.layer(s.layer).replicated for s in p.sources)
        if input_grad:
            s = p.sources[0]
            if single and len(self.readers[(s.layer, s.part)]) == 1:
                r["dx"] = self.roles[(s.layer, s.part)]["dy"]       # dx_direct
            else:
                r["dx"] = self.buf(f"{key}.dx", p.gpu, in_el, "gradient")
        for d in l.param_defs(p):
            n = math.prod(d.shape)
            if not d.trainable:          # state: kept with the parameters, never updated
                r[d.role] = self.buf(f"{key}.{d.role}", p.gpu, n, "state", persistent=True)
                continue
            self.mults[f"{key}.{d.role}"] = (l.lr_mult, l.decay_mult)
            for prefix, kind in (("", "param"), ("d", "grad"), ("v", "velocity")):
                r[prefix + d.role] = self.buf(f"{key}.{prefix}{d.role}", p.gpu, n, kind,
                                              persistent=True)
        ctx = self.context(l, p, input_grad)
        for role, n in l.op.scratch_buffers(ctx).items():
            r[role] = self.buf(f"{key}.{role}", p.gpu, n, "scratch")
        if l.op.loss_layer:
            r["labels"] = self.buf("labels", p.gpu, B, "labels", dtype="int32")
            r["loss"] = self.buf("loss", p.gpu, B, "loss")
            self.io["labels"], self.io["loss"] = "labels", "loss"
        return r

    def y_name(self, s) -> str:
        """The buffer of source `s`'s producer output (its roles' own string)."""
        r = self.roles.get((s.layer, s.part))
        return r["y"] if r is not None else self.y_of(s.layer, s.part, s.gpu)

    def dy_name(self, s) -> str:
        """The output gradient buffer of source `s`'s producer part."""
        return self.roles[(s.layer, s.part)]["dy"]

    def context(self, l: Layer, p: Part, input_grad: bool) -> PartContext:
        return PartContext(l, p, self.B, input_grad, self.tiles.get(l.name, {}))

    def block(self, l: Layer, s) -> int:
        """Elements of one source's channels in a part's input."""
        return s.channels * self.B * math.prod(l.in_shape[1:])

    def forward_part(self, l: Layer, p: Part):
        r = self.roles[(l.name, p.index)]
        if self.buffers[r["x"]].kind == "gather":
            for s in p.sources:
                n = self.block(l, s)
                per_ch = n // s.channels
                if s.gpu == p.gpu:
                    self.copy(self.y_name(s), s.start * per_ch, r["x"],
                              s.offset * per_ch, n, l.name)
                    continue
                t = self.transfers[(s.layer, s.part, p.gpu)]
                if t["direct"] == (l.name, p.index):
                    continue                 # the transfer landed here already
                self.copy(t["buffer"], (s.start - t["t"].start) * per_ch, r["x"],
                          s.offset * per_ch, n, l.name)
        for call in l.op.forward_kernels(self.context(l, p, "dx" in r)):
            if "mask" in call.args:
                self.step(kind="upload", gpu=p.gpu, layer=l.name, when="train",
                          buffer=r["mask"], what="mask")
                self.io["masks"].append({"layer": l.name, "part": p.index, "buffer": r["mask"],
                                         "channels": [p.start, p.stop]})
            self.launch(call, r, p.gpu, l.name, part=p.index)
        # send what other GPUs read of this part now, while this GPU computes on
        for t in self.outgoing.get((l.name, p.index), []):
            n = t["t"].channels * t["per_ch"]
            self.copy(r["y"], t["t"].start * t["per_ch"], t["buffer"], t["offset"], n, l.name)

    def backward_part(self, l: Layer, p: Part):
        r = self.roles[(l.name, p.index)]
        if l.op.loss_layer:
            self.step(kind="upload", gpu=p.gpu, layer=l.name, buffer="labels", what="labels")
        for call in l.op.backward_kernels(self.context(l, p, "dx" in r)):
            self.launch(call, r, p.gpu, l.name, part=p.index)
        if l.op.loss_layer:
            self.step(kind="download", gpu=p.gpu, layer=l.name, buffer="loss", what="loss")
        dx = r.get("dx")
        if dx is None:
            return
        if dx.endswith(".dy"):          # the source's own output gradient, not this part's .dx
            self.cover[dx] = [(0, p.sources[0].channels)]
            return
        # hand each source its slice of dx: copied where its gradient has nothing yet, added
        # where it has; a remote source's slice goes back through its transfer
        for s in p.sources:
            if self.g.layer(s.layer).replicated:
                continue
            per_ch = self.block(l, s) // s.channels
            off = s.offset * per_ch
            dy = self.dy_name(s)
            if s.gpu == p.gpu:
                self.deliver(r["dx"], off, dy, s.start, s.channels, per_ch, l.name)
                continue
            t = self.transfers[(s.layer, s.part, p.gpu)]
            if t["direct"] == (l.name, p.index):          # its only reader here: send back
                self.deliver(r["dx"], off, dy, s.start, s.channels, per_ch, l.name)
                continue
            # several readers here: sum their slices on this GPU, then send the sum once
            tt = t["t"]
            back = self.buf(f"{t['buffer']}.dy", p.gpu, tt.channels * per_ch, "gradient")
            self.deliver(r["dx"], off, back, s.start - tt.start, s.channels, per_ch, l.name)
            t["pending"] -= 1
            if t["pending"] == 0:
                self.sum_into(back)                       # complete before it is sent
                for a, b in self.cover[back]:
                    self.deliver(back, a * per_ch, dy, tt.start + a, b - a, per_ch, l.name)

    def deliver(self, src: str, src_offset: int, dst: str, channel: int, channels: int,
                per_ch: int, layer: str):
        """Add channels `channel` .. `channel + channels` of a gradient, held in `src` from
        element `src_offset`, into the gradient buffer `dst`: a copy over the channels `dst`
        has no value for yet; over those it has, a sum deferred to `sum_into` (the end of the
        layer's backward): a slice from another GPU is copied now into the next slot of one
        staging buffer on dst's GPU, a slice on dst's GPU is read where it is."""
        covered = self.cover.setdefault(dst, [])
        dg = self.buffers[dst].gpu
        end = channel + channels
        if not covered:                          # the common cases, without cutting
            pieces = [(channel, end, False)]
        elif len(covered) == 1 and covered[0][0] <= channel and end <= covered[0][1]:
            pieces = [(channel, end, True)]
        else:
            pieces = _split(covered, channel, end)
        for a, b, done in pieces:
            n = (b - a) * per_ch
            so = src_offset + (a - channel) * per_ch
            if not done:
                self.copy(src, so, dst, a * per_ch, n, layer)
                continue
            sums = self.sums.setdefault(dst, {})
            group = sums.get((a, b))
            if group is None:
                group = sums[(a, b)] = {"layer": layer, "n": n, "local": [], "stage": None,
                                        "slots": 0}
            if self.buffers[src].gpu == dg:
                group["local"].append((src, so))
                continue
            if group["stage"] is None:
                group["stage"] = self.buf(f"{dst}.staged{len(self.steps)}", dg, n, "staging")
            else:
                self.buffers[group["stage"]].elements += n      # one more slot
            self.copy(src, so, group["stage"], group["slots"] * n, n, layer)
            group["slots"] += 1
        if len(pieces) > 1 or not pieces[0][2]:      # else inside what is covered
            self.cover[dst] = _merge(covered + [(channel, end)])

    def sum_into(self, dst: str):
        """The deferred sums into `dst` (see `deliver`): per channel range, one kernel adds
        every slot of its staging buffer, and one slice on dst's GPU, into it; any other
        slices on dst's GPU are added one kernel each. So a `connect all` layer's backward
        launches one sum per source part (G per layer, not one per pair of GPUs: G²)."""
        dg = self.buffers[dst].gpu
        stem = re.sub(r"\W", "_", dst)
        for (a, b), gr in self.sums.pop(dst, {}).items():
            n, layer, local, stage, slots = (gr["n"], gr["layer"], gr["local"], gr["stage"],
                                             gr["slots"])
            doff = a * (n // (b - a))
            gs, ls = elementwise_launch(n)
            what = f"{dst}: add {layer}'s share of the gradient, channels {a}..{b}"
            if stage is not None and (slots > 1 or local):
                consts = dict(N=n, K=slots, OFF=0, DOFF=doff)
                ps, args, template = ("out dst", "in src"), (dst, stage), ACCUMULATE_SLOTS
                mine = ""
                if local:
                    (loc, lo), local = local[0], local[1:]
                    ps, args, template = ps + ("in loc",), args + (loc,), ACCUMULATE_SLOTS_LOCAL
                    consts["LOFF"] = lo
                    mine = f" and {loc}'s from element {lo}"
                k = Kernel(f"{stem}_acc_{len(self.steps)}", template, params(*ps), consts,
                           gs, ls, flops=n * (slots + bool(mine)), layer=layer,
                           doc=f"{what}: the {slots} slices received side by side in "
                               f"{stage}{mine}\nlaunch: one work-item per element ({n}), "
                               f"summing the slots in order")
                self.launch(Call(k, args), {}, dg, layer)
            elif stage is not None:
                local = [(stage, 0)] + local     # one slice received: as any other
            for src, so in local:
                k = Kernel(f"{stem}_acc_{len(self.steps)}", ACCUMULATE,
                           params("out dst", "in src"), dict(N=n, OFF=so, DOFF=doff), gs, ls,
                           flops=n, layer=layer,
                           doc=f"{what}\nlaunch: one work-item per element ({n})")
                self.launch(Call(k, (dst, src)), {}, dg, layer)

    def check_gradient_complete(self, l: Layer):
        """Every channel of `l`'s parts' output gradients was written, as its backward (which
        reads them) begins: every reader's backward is behind us then. Their records go (a
        long chain would keep one per layer to the end)."""
        for p in l.parts:
            covered = self.cover.pop(self.roles[(l.name, p.index)]["dy"], [])
            if covered != [(0, p.channels)]:
                raise AssertionError(f"plan: {l.name} part {p.index}'s output gradient "
                                     f"covers only channels {covered} of {p.channels}")

    def bindings(self, l: Layer) -> list[ParamBinding]:
        shapes = l.param_shapes()
        out: dict[str, ParamBinding] = {}
        for p, d, name, rows in l.param_table():
            key = f"{l.name}.g{p.index}"
            entry = {"gpu": p.gpu, "rows": [rows.start, rows.stop], "buffer": f"{key}.{d.role}",
                     "grad": f"{key}.d{d.role}" if d.trainable else None,
                     "velocity": f"{key}.v{d.role}" if d.trainable else None}
            if name not in out:
                out[name] = ParamBinding(name, l.name, d.name, tuple(shapes[name]), [],
                                         l.lr_mult, l.decay_mult, d.trainable)
            out[name].parts.append(entry)
        return list(out.values())

    def rename_shared(self):
        """`conv2_g0_fwd` run by both parts becomes `conv2_fwd`."""
        if self.g.gpus == 1:
            return                     # no kernel runs on two GPUs
        users: dict[str, set] = {}
        for s in self.steps:
            if s.kind == "launch":
                users.setdefault(s.kernel, set()).add(s.gpu)
        renamed = {}
        for name, k in self.kernels.items():
            new = name
            if len(users.get(name, ())) > 1 and k.layer:
                new = re.sub(rf"^{re.escape(k.layer)}_g\d+_", f"{k.layer}_", name)
                if new in renamed.values() or (new != name and new in self.kernels):
                    new = name
            k.name = new
            renamed[name] = new
        self.kernels = {renamed[n]: k for n, k in self.kernels.items()}
        for s in self.steps:
            if s.kind == "launch":
                s.kernel = renamed[s.kernel]

    # -- memory --------------------------------------------------------------------------------
    def touched(self, s: Step) -> list[tuple[str, int, int, bool]]:
        """(buffer, first element, end element, writes) for each buffer a step touches."""
        if s.kind == "copy":
            return [(s.src, s.src_offset, s.src_offset + s.elements, False),
                    (s.dst, s.dst_offset, s.dst_offset + s.elements, True)]
        if s.kind in ("upload", "download"):
            return [(s.buffer, 0, self.buffers[s.buffer].elements, s.kind == "upload")]
        k = self.kernels[s.kernel]
        out = []
        for p, a in zip(k.params, s.args):
            if p.kind != "float":
                out.append((a, 0, self.buffers[a].elements, p.kind == "out"))
        return out

    def lifetimes(self):
        """Each buffer's first and last step were noted as the steps were added (`touch`);
        a buffer no step touches goes."""
        unused = [b.name for b in self.buffers.values() if b.first < 0 and not b.persistent]
        for name in unused:          # e.g. the dy of a part whose gradient goes straight on
            del self.buffers[name]

    def place_persistent(self):
        """Per GPU three blocks with one layout: parameters at 0, their gradients at P, their
        momenta at 2P (one SGD launch walks all three)."""
        self.block_bytes = {gpu: 0 for gpu in range(self.g.gpus)}
        rel = {}
        for b in self.buffers.values():
            if b.kind in ("param", "state"):
                rel[b.name] = self.block_bytes[b.gpu]
                self.block_bytes[b.gpu] += _align(b.nbytes)
        for b in self.buffers.values():
            if b.kind not in ("param", "state", "grad", "velocity"):
                continue
            # <part>.<role>, its gradient <part>.d<role>, its momentum <part>.v<role>
            stem, _, last = b.name.rpartition(".")
            role = last if b.kind in ("param", "state") else last[1:]
            base = {"param": 0, "state": 0, "grad": 1, "velocity": 2}[b.kind]
            b.offset = base * self.block_bytes[b.gpu] + rel[f"{stem}.{role}"]

    def place(self):
        """Arena offsets, per GPU: greedy by size (Pisarchyk & Lee 2020, "Efficient Memory
        Management for Deep Neural Net Inference", §4.2): largest buffer first, each at the
        lowest aligned offset free throughout its lifetime. Its cost grows with the number of
        buffers live at once, so an arena of more than `GREEDY_MAX` buffers (a chain of
        thousands of layers) is placed by a sweep in step order instead: first fit in a free
        list, released after its last step, which is linear and within a few percent."""
        by_gpu: dict[int, list[Buffer]] = {}
        for b in self.buffers.values():
            if not b.persistent:
                by_gpu.setdefault(b.gpu, []).append(b)
        for arena in by_gpu.values():
            if len(arena) <= GREEDY_MAX:
                _place_greedy_by_size(arena)
            else:
                _place_sweep(arena)

    def dependencies(self):
        """Cross-stream waits from actual memory overlap (after placement): a step waits for
        the latest earlier step of each other stream that writes what it touches or touches
        what it writes, unless a wait it already has implies it (that step itself waited).

        Each GPU's regions are cut into elementary pieces at every offset a step's span starts
        or ends; each piece remembers, per stream, its last writer and last toucher. A step
        then looks up only the pieces it touches, so the work is linear in the plan (it was
        every pair of steps)."""
        if len({s.gpu for s in self.steps}) == 1:
            return             # one stream: nothing to wait for (every deps stays ())
        spans = []
        cuts: dict[tuple[int, str], set[int]] = {}
        for s in self.steps:
            sp = []
            for name, a, e, w in self.touched(s):
                b = self.buffers[name]
                key = (b.gpu, b.region)
                lo, hi = b.offset + 4 * a, b.offset + 4 * e
                if lo < hi:
                    sp.append((key, lo, hi, w))
                    c = cuts.setdefault(key, set())
                    c.add(lo)
                    c.add(hi)
            spans.append(sp)
        bounds = {k: sorted(c) for k, c in cuts.items()}
        # per region, per elementary piece: {stream: [last writer, last toucher]}
        pieces = {k: [{} for _ in range(len(v) - 1)] for k, v in bounds.items()}
        for s, sp in zip(self.steps, spans):
            latest: dict[int, int] = {}
            hit = []
            for key, lo, hi, w in sp:
                bd = bounds[key]
                i, j = bisect.bisect_left(bd, lo), bisect.bisect_left(bd, hi)
                for piece in pieces[key][i:j]:
                    hit.append((piece, w))
                    for gpu, (writer, toucher) in piece.items():
                        if gpu == s.gpu:
                            continue
                        t = toucher if w else writer
                        if t >= 0 and latest.get(gpu, -1) < t:
                            latest[gpu] = t
            for piece, w in hit:
                if w:
                    # s waited for every other stream's touch of this piece, so a later step
                    # that waits for s (anything touching it after this write) waits for them
                    # too: only s needs remembering (this keeps each piece's record to its
                    # last writer and the readers since, not every stream that ever used it)
                    piece.clear()
                    piece[s.gpu] = [s.id, s.id]
                else:
                    piece.setdefault(s.gpu, [-1, -1])[1] = s.id
            if latest:
                s.deps = sorted(latest.values())


GREEDY_MAX = 512   # arena buffers per GPU placed greedy by size; more are swept (see place)


def _place_greedy_by_size(arena: list[Buffer]) -> None:
    placed: list[Buffer] = []
    for b in sorted(arena, key=lambda b: (-b.nbytes, b.first)):
        live = sorted((q for q in placed if q.first <= b.last and b.first <= q.last),
                      key=lambda q: q.offset)
        off = 0
        for q in live:
            if off + b.nbytes <= q.offset:
                break
            off = max(off, _align(q.offset + q.nbytes))
        b.offset = off
        placed.append(b)


def _place_sweep(arena: list[Buffer]) -> None:
    """First fit in step order: a buffer takes the lowest free block that holds it when its
    first step comes, and gives it back (merged with free neighbours) after its last."""
    ends: list[tuple[int, int, int]] = []       # heap of (last step, offset, size)
    free: list[tuple[int, int]] = []            # free blocks below `top`, by offset
    top = 0
    for b in sorted(arena, key=lambda b: (b.first, -b.nbytes)):
        while ends and ends[0][0] < b.first:
            _, off, size = heapq.heappop(ends)
            i = bisect.bisect(free, (off, 0))
            free.insert(i, (off, size))
            if i + 1 < len(free) and off + size == free[i + 1][0]:
                free[i] = (off, size + free.pop(i + 1)[1])
            if i > 0 and free[i - 1][0] + free[i - 1][1] == off:
                free[i - 1] = (free[i - 1][0], free[i - 1][1] + free.pop(i)[1])
        size = _align(b.nbytes)
        for i, (off, have) in enumerate(free):
            if have >= size:
                if have == size:
                    del free[i]
                else:
                    free[i] = (off + size, have - size)
                break
        else:
            off = top
            if free and free[-1][0] + free[-1][1] == top:   # grow the topmost free block
                off = free.pop()[0]
            top = off + size
        b.offset = off
        heapq.heappush(ends, (b.last, off, size))


def _split(covered: list[tuple[int, int]], a: int, b: int) -> list[tuple[int, int, bool]]:
    """[a, b) cut into pieces wholly inside or wholly outside the `covered` intervals:
    (start, end, inside)."""
    cuts = sorted({a, b} | {x for iv in covered for x in iv if a < x < b})
    return [(x, y, any(c <= x and y <= d for c, d in covered)) for x, y in zip(cuts, cuts[1:])]


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
