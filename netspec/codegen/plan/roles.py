"""Which buffer each layer part reads and writes (its roles), and where each transfer lands.

Transfers: each of the IR's transfers (a source part's channel range needed on another GPU) is
one copy, issued on the sender's stream right after the producing part's forward, so that it
runs while the sender computes on. It lands straight in the input buffer of its reader when
one part there reads exactly that range, else in a `received` buffer the readers gather from.
Backward, the readers' gradients for it are summed on the receiving GPU and cross back once.
So the bytes the copies move are the report's `sent_bytes_per_step`. A layer's channel range
in a buffer is contiguous (channels outermost), so every piece is one copy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...ir.graph import Graph, Layer, Part, Source, Transfer
from ...kernel import PartContext
from ...kernel.gemm import DEFAULT_SM_COUNT
from .collectives import DataParallel
from .model import BufferKind
from .steps import StepRecorder


@dataclass(slots=True)
class Landing:
    """Where transfer `t` lands on its receiving GPU: `buffer` from element `offset`. `direct`
    is the (layer, part) whose input it is, when it lands in one reader's input; `pending`
    counts the readers whose gradient for it has not been handed back yet."""

    t: Transfer
    per_ch: int                    # elements of one channel (N, H, W)
    pending: int
    buffer: str
    offset: int = 0
    direct: tuple[str, int] | None = None


class Wiring:
    """Each part's buffers by role (`roles[(layer, part)]`: role -> buffer name), each
    transfer's landing (`transfers[(layer, part, receiving gpu)]`, and `outgoing[(layer,
    part)]` in the sender's order), and each trainable tensor's multipliers (`mults`)."""

    def __init__(self, g: Graph, batch: int, tiles: dict, rec: StepRecorder, io: dict,
                 sm_count: int = DEFAULT_SM_COUNT):
        self.g, self.B, self.tiles, self.rec, self.io = g, batch, tiles, rec, io
        self.sm_count = sm_count
        self.roles: dict[tuple[str, int], dict] = {}
        self.transfers: dict[tuple[str, int, int], Landing] = {}
        self.outgoing: dict[tuple[str, int], list[Landing]] = {}
        self.mults: dict[str, tuple[float, float]] = {}
        self.layer_index = {l.name: i for i, l in enumerate(g.compute_layers)}
        self.dp = DataParallel(g, batch, rec)

    # -- names and sizes -----------------------------------------------------------------
    def y_of(self, layer: str, part: int, gpu: int) -> str:
        if self.g.layer(layer).replicated:
            return f"{layer}.gpu{gpu}"
        return f"{layer}.g{part}.y"

    def elements(self, shape) -> int:
        return self.B * math.prod(shape)

    def per_channel(self, layer: str) -> int:
        """Elements of one channel of a layer's output in a buffer: (N, H, W)."""
        return self.B * math.prod(self.g.layer(layer).out_shape[1:])

    def block(self, l: Layer, s: Source, p: Part | None = None) -> int:
        """Elements of one source's channels in a part's input (part `p`'s batch slice)."""
        batch = self.B if p is None else self.dp.batch_of(p)
        return s.channels * batch * math.prod(l.in_shape[1:])

    def context(self, l: Layer, p: Part, input_grad: bool) -> PartContext:
        return PartContext(l, p, self.dp.batch_of(p), input_grad, self.tiles.get(l.name, {}),
                           sm_count=self.sm_count, layer_index=self.layer_index[l.name],
                           precision=self.g.recipe.precision)

    def source_buffer(self, p: Part, s: Source) -> str:
        """Where part `p` reads source `s` on its GPU: the producer's output, or, for a
        data-parallel producer read by the whole batch, its all-gathered buffer there."""
        if p.slice is None and self.g.layer(s.layer).data_parallel:
            return self.dp.gathered[(s.layer, p.gpu)]
        return self.y_name(s)

    def y_name(self, s: Source) -> str:
        """The buffer of source `s`'s producer output (its roles' own string)."""
        r = self.roles.get((s.layer, s.part))
        return r["y"] if r is not None else self.y_of(s.layer, s.part, s.gpu)

    def dy_name(self, s: Source) -> str:
        """The output gradient buffer of source `s`'s producer part."""
        return self.roles[(s.layer, s.part)]["dy"]

    # -- wiring the network --------------------------------------------------------------
    def wire(self) -> None:
        """Every transfer's landing and every compute part's roles, in layer order."""
        g = self.g
        # who reads each part: (layer, part) -> [(reader layer, part, Source)], and the
        # remote ones by the reader's GPU: (layer, part, gpu) -> [...]
        readers: dict[tuple[str, int], list] = {}
        remote: dict[tuple[str, int, int], list] = {}
        for l in g.compute_layers:
            for p in l.parts:
                for s in p.sources:
                    if not (g.layer(s.layer).replicated or self.dp.crosses(p, s)):
                        readers.setdefault((s.layer, s.part), []).append((l, p, s))
                        if s.gpu != p.gpu:
                            remote.setdefault((s.layer, s.part, p.gpu), []).append((l, p, s))
        self.land_transfers(remote)
        self.dp.wire()
        for l in g.compute_layers:
            for p in l.parts:
                self.roles[(l.name, p.index)] = self.part_roles(l, p, readers)

    def land_transfers(self, remote: dict[tuple[str, int, int], list]) -> None:
        """Where each IR transfer lands on its receiving GPU (see the module doc)."""
        for t in self.g.transfers:
            readers = remote[(t.layer, t.part, t.dst_gpu)]
            per_ch = self.per_channel(t.layer)
            l, p, s = readers[0]
            if len(readers) == 1 and (s.start, s.channels) == (t.start, t.channels):
                entry = Landing(t, per_ch, len(readers), buffer=f"{l.name}.g{p.index}.x",
                                offset=s.offset * per_ch, direct=(l.name, p.index))
            else:
                entry = Landing(t, per_ch, len(readers), buffer=self.rec.buf(
                    f"{t.layer}.g{t.part}.to{t.dst_gpu}", t.dst_gpu, t.channels * per_ch,
                    BufferKind.RECEIVED))
            self.transfers[(t.layer, t.part, t.dst_gpu)] = entry
            self.outgoing.setdefault((t.layer, t.part), []).append(entry)

    def whole(self, s: Source) -> bool:
        """The source is its producer part, all of it."""
        src = self.g.layer(s.layer)
        return s.start == 0 and s.channels == (src.out_shape[0] if src.replicated
                                               else src.parts[s.part].channels)

    def part_roles(self, l: Layer, p: Part, readers: dict) -> dict:
        """Buffer names for a part's roles. The input is the source's own output when the part
        reads exactly one whole source part on its own GPU (or the received copy of exactly one
        remote range); otherwise a gather buffer. The input gradient likewise writes straight
        into the source's output gradient when this part is that source part's only reader.
        Roles hold buffer names only (`x` is a "gather" buffer, a `dx` exists, `dx` is the
        source's `.dy`: the flags are read off them), and a source's names are its own roles'
        strings, not equal copies, so a long chain keeps one of each."""
        rec, key = self.rec, f"{l.name}.g{p.index}"
        batch = self.dp.batch_of(p)
        out_el = batch * math.prod(l.part_out_shape(p))
        r = {"y": rec.buf(f"{key}.y", p.gpu, out_el, BufferKind.ACTIVATION),
             "dy": rec.buf(f"{key}.dy", p.gpu, out_el, BufferKind.GRADIENT)}
        in_el = batch * math.prod(l.part_in_shape(p))
        s = p.sources[0]
        single = len(p.sources) == 1 and s.gpu == p.gpu and self.whole(s)
        if single and p.slice is None and self.g.layer(s.layer).data_parallel:
            r["x"] = self.source_buffer(p, s)
            single = False               # its gradient is the whole batch's: never the source's
        elif single and not self.dp.crosses(p, s):
            r["x"] = self.y_name(s)
        else:
            r["x"] = self.received_input(p) or rec.buf(f"{key}.x", p.gpu, in_el,
                                                        BufferKind.GATHER)
        input_grad = any(not self.g.layer(s.layer).replicated for s in p.sources)
        if input_grad:
            if single and len(readers[(s.layer, s.part)]) == 1:
                r["dx"] = self.roles[(s.layer, s.part)]["dy"]       # straight into the source's
            else:
                r["dx"] = rec.buf(f"{key}.dx", p.gpu, in_el, BufferKind.GRADIENT)
        self.tensor_roles(l, p, r)
        for role, n in l.op.scratch_buffers(self.context(l, p, input_grad)).items():
            r[role] = rec.buf(f"{key}.{role}", p.gpu, n, BufferKind.SCRATCH)
        words = getattr(l.op, "noise_words", 0)     # the step's noise key, uploaded (builder)
        if words:
            r["noise"] = rec.buf(f"{key}.noise", p.gpu, words, BufferKind.NOISE, dtype="int32")
        if l.op.loss_layer:      # the whole batch (a loss layer is never data-parallel)
            r["labels"] = rec.buf("labels", p.gpu, self.B, BufferKind.LABELS, dtype="int32")
            r["loss"] = rec.buf("loss", p.gpu, self.B, BufferKind.LOSS)
            self.io["labels"], self.io["loss"] = "labels", "loss"
        return r

    def received_input(self, p: Part) -> str | None:
        """The received buffer that is exactly a part's input: its one source is remote, and
        its transfer lands in a received buffer holding just the channels it reads."""
        s = p.sources[0]
        if len(p.sources) != 1 or s.gpu == p.gpu:
            return None
        t = self.transfers[(s.layer, s.part, p.gpu)]
        if t.direct is None and (s.start, s.channels) == (t.t.start, t.t.channels):
            return t.buffer
        return None

    def tensor_roles(self, l: Layer, p: Part, r: dict) -> None:
        """The part's parameters with their gradients and momenta, and its state, as roles
        (persistent buffers)."""
        key = f"{l.name}.g{p.index}"
        for d in l.param_defs(p):
            n = math.prod(d.shape)
            if not d.trainable:          # state: kept with the parameters, never updated
                r[d.role] = self.rec.buf(f"{key}.{d.role}", p.gpu, n, BufferKind.STATE,
                                         persistent=True)
                continue
            self.mults[f"{key}.{d.role}"] = (l.lr_mult, l.decay_mult)
            for prefix, kind in (("", BufferKind.PARAM), ("d", BufferKind.GRAD),
                                 ("v", BufferKind.VELOCITY)):
                r[prefix + d.role] = self.rec.buf(f"{key}.{prefix}{d.role}", p.gpu, n, kind,
                                                  persistent=True)
