"""The IR: layers split into parts per logical GPU, with explicit transfer edges.

A layer's output channels (maps, or neurons for fc) are divided into parts: one per logical GPU
that holds a share, and, for a layer with `groups G`, one per group on that GPU too (so several
parts may share a GPU). A part reads a list of source parts (`Source`): its own GPU's parts for
`same-gpu`, every part for `all`, its group's channels for `groups`; a source may be a channel
sub-range of the producer's part. Where a source part sits on another GPU, a `Transfer` edge
carries it (forward: activations; backward: their gradients go back the same way).

The network input `data` is replicated on every GPU, so reading it never crosses GPUs.

A data-parallel layer (`parallel data`, and the unweighted layers reading one) is the other
way round: one part per logical GPU, each with every channel (and, for a weighted layer, a
full replica of the weights) but only its slice of the batch (`Part.slice`; the images of
slice g are `batch_slices(N, G)[g]`). Where a layer that is not data-parallel reads one, it
reads the whole batch on its own GPU (the slices all-gathered there, no `Transfer`); its
gradient goes back as a reduce-scatter, and the replicas' weight gradients are summed over the
GPUs (an allreduce). Krizhevsky (2014), "One weird trick for parallelizing convolutional
neural networks", section 2; the plan's steps: codegen/plan/collectives.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..dsl.errors import Pos
from ..dsl.spec import Recipe, Spec
from ..ops import OPS
from ..ops.base import Op, ParamDef

INPUT = "data"


@dataclass(frozen=True, slots=True)
class Source:
    """One input part read by a part: producer layer and part, the channels read from it
    (`start` .. `start + channels` of the producer part; all of it unless the reader is one
    group of a grouped layer), and where they land in the part's (concatenated) input."""

    layer: str
    part: int
    gpu: int
    channels: int
    offset: int   # first channel of this source inside the part's input
    start: int = 0  # first channel read, within the producer part


@dataclass(slots=True)
class Part:
    index: int
    gpu: int
    start: int                  # first output channel/neuron of the layer held here
    stop: int
    sources: list[Source] = field(default_factory=list)
    slice: int | None = None    # a data-parallel part: its batch slice (= its GPU); else None

    @property
    def channels(self) -> int:
        return self.stop - self.start

    @property
    def in_channels(self) -> int:
        return sum(s.channels for s in self.sources)


@dataclass(slots=True)
class Layer:
    name: str
    type: str
    attrs: dict[str, Any]              # the op's attributes, defaults filled in
    inputs: list[str]
    pos: Pos
    attr_pos: dict[str, Pos]
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    parts: list[Part] = field(default_factory=list)
    connect: str | None = None         # 'same-gpu' | 'all' for weighted layers
    relu: bool = False                 # fused activation (conv, fc)
    init_std: float | str = 0.01     # or 'he'
    init_bias: float = 0.0
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    groups: int = 1                    # conv, lrn: channel groups (Caffe's `group`)
    replicated: bool = False           # the input: a full copy on every GPU
    data_parallel: bool = False        # one part per GPU: all channels, a slice of the batch
    _placement: dict = field(default_factory=dict, repr=False, compare=False)  # split/gpu asked

    @property
    def op(self) -> Op:
        return OPS[self.type]

    @property
    def weighted(self) -> bool:
        return self.type in OPS and self.op.weighted

    def part_in_shape(self, part: Part) -> tuple[int, ...]:
        return (part.in_channels, *self.in_shape[1:])

    def part_out_shape(self, part: Part) -> tuple[int, ...]:
        return (part.channels, *self.out_shape[1:])

    @property
    def neurons(self) -> int:
        """Output elements per image (for conv, before any pooling layer)."""
        return math.prod(self.out_shape)

    @property
    def macs(self) -> int:
        if self.replicated:
            return 0
        if self.data_parallel:          # per image: each part does all of it for its slice
            p = self.parts[0]
            return self.op.part_macs(self.attrs, self.part_in_shape(p), self.part_out_shape(p),
                                     p.in_channels, p.channels)
        return sum(self.op.part_macs(self.attrs, self.part_in_shape(p), self.part_out_shape(p),
                                     p.in_channels, p.channels) for p in self.parts)

    def weight_shape(self, part: Part) -> tuple[int, ...] | None:
        return self.op.weight_shape(self.attrs, self.part_in_shape(part), part.in_channels,
                                    part.channels)

    def param_defs(self, part: Part) -> tuple[ParamDef, ...]:
        """One part's tensors (netspec.ops.ParamDef: name, role, shape, init, trainable), in
        the order its op's forward takes them; () for a layer without parameters."""
        if not self.weighted:
            return ()
        return tuple(self.op.parameters(self.attrs, self.part_in_shape(part), part.in_channels,
                                        part.channels))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter names and PyTorch layouts, a split layer's channels GPU 0's first.

        When every part's tensors agree beyond their first axis (always, unless a `same-gpu`
        layer reads uneven input parts), the parts' tensors stack into one `<layer>.weight`
        (`.bias`, ...) exactly like a grouped PyTorch convolution. Otherwise each part has its
        own `<layer>.part<i>.weight` and so on. The names after the layer's are its op's
        (`Op.parameters`).
        """
        defs = [self.param_defs(p) for p in self.parts]
        if not defs or not defs[0]:
            return {}
        if self.data_parallel:          # replicas: every part holds the whole tensor
            return {f"{self.name}.{d.name}": d.shape for d in defs[0]}
        if all(len({ds[i].shape[1:] for ds in defs}) == 1 for i in range(len(defs[0]))):
            return {f"{self.name}.{d.name}": (sum(ds[i].shape[0] for ds in defs), *d.shape[1:])
                    for i, d in enumerate(defs[0])}
        out = {}
        for p, ds in zip(self.parts, defs):
            for d in ds:
                out[f"{self.name}.part{p.index}.{d.name}"] = d.shape
        return out

    def param_table(self) -> list[tuple[Part, ParamDef, str, slice]]:
        """Every part's tensors: (part, its ParamDef, the parameter's name in param_shapes,
        the rows of that parameter the part owns: p.start:p.stop when stacked, else all)."""
        shapes = self.param_shapes()
        out = []
        for p in self.parts:
            for d in self.param_defs(p):
                whole = f"{self.name}.{d.name}"
                if self.data_parallel:
                    out.append((p, d, whole, slice(0, d.shape[0])))
                elif whole in shapes:
                    out.append((p, d, whole, slice(p.start, p.stop)))
                else:
                    out.append((p, d, f"{self.name}.part{p.index}.{d.name}",
                                slice(0, d.shape[0])))
        return out

    @property
    def params(self) -> int:
        """Trainable parameters (PyTorch's `parameters()` count: state such as a running mean
        is a buffer there, not counted)."""
        shapes = self.param_shapes()
        state = {name for _, d, name, _ in self.param_table() if not d.trainable}
        return sum(math.prod(s) for n, s in shapes.items() if n not in state)

    def gpu_split(self, gpus: int) -> list[int]:
        split = [0] * gpus
        for p in self.parts:
            split[p.gpu] += p.channels
        return split


def batch_slices(n: int, k: int) -> list[tuple[int, int]]:
    """The images [first, end) of each of `k` data-parallel slices of a batch of `n`: as even
    as can be, the larger ones first (n=10, k=4: 3, 3, 2, 2). ValueError when n < k (a slice
    would be empty)."""
    if n < k:
        raise ValueError(f"a batch of {n} image{'s' if n != 1 else ''} cannot be cut into "
                         f"{k} data-parallel slices; use a batch of at least {k}")
    out, a = [], 0
    for g in range(k):
        b = a + n // k + (g < n % k)
        out.append((a, b))
        a = b
    return out


@dataclass(frozen=True)
class Transfer:
    """Channels `start` .. `start + channels` of source part `layer.part` on `src_gpu` are
    needed on `dst_gpu` (by `consumers`): they cross once, however many parts there read
    them, and their gradient crosses back once."""

    layer: str
    part: int
    src_gpu: int
    dst_gpu: int
    elements: int                      # per image
    consumers: tuple[str, ...]
    start: int = 0
    channels: int = 0


@dataclass
class Graph:
    name: str
    input_shape: tuple[int, ...]
    classes: int
    gpus: int
    layers: list[Layer]                # network order; layers[0] is the input `data`
    recipe: Recipe
    spec: Spec
    transfers: list[Transfer] = field(default_factory=list)

    def __post_init__(self):
        self._by_name = {l.name: l for l in self.layers}

    def layer(self, name: str) -> Layer:
        return self._by_name[name]

    @property
    def compute_layers(self) -> list[Layer]:
        return [l for l in self.layers if not l.replicated]

    @property
    def weighted_layers(self) -> list[Layer]:
        return [l for l in self.layers if l.weighted]

    @property
    def total_params(self) -> int:
        return sum(l.params for l in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(l.macs for l in self.layers)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for l in self.layers:
            out.update(l.param_shapes())
        return out

    def consumers(self, name: str) -> list[Layer]:
        return [l for l in self.layers if name in l.inputs]

    def sent_elements_per_image(self, gpu: int) -> int:
        """Elements this GPU sends in one step per image: the activations it sends forward plus
        the gradients it sends back for parts it received."""
        return self.sent_elements_per_gpu()[gpu]

    def sent_elements_per_gpu(self) -> list[int]:
        """`sent_elements_per_image` of every GPU, in one pass over the transfers (asking per
        GPU walks them all G times: Θ(G³) with the `connect all` layers' G² transfers)."""
        sent = [0] * self.gpus
        for t in self.transfers:
            sent[t.src_gpu] += t.elements
            sent[t.dst_gpu] += t.elements
        return sent
