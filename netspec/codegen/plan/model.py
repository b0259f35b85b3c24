"""The launch plan's data: buffers, steps, parameter bindings and the plan itself.

Every record is a frozen dataclass built with keywords. The kinds are `StrEnum`s, so a kind
compares equal to its string (`step.kind == "launch"`) and plan.json writes the string.

Device layout: activations (C, N, H, W) per part (see netspec/kernel); weights (O, C, kh, kw).
Memory: every buffer lives on one logical GPU, in its parameter region (persistent buffers)
or in its arena; offsets are bytes, aligned to `ALIGN` (OpenCL sub-buffers need it).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from ...kernel import Kernel, ceil_div

ALIGN = 4096


class Phase(StrEnum):
    FORWARD = "forward"
    BACKWARD = "backward"
    UPDATE = "update"


PHASES = tuple(Phase)


class StepKind(StrEnum):
    LAUNCH = "launch"        # a kernel on a part's GPU, its buffers and scalars in parameter order
    COPY = "copy"            # a contiguous block from one buffer to another, on the sender's stream
    UPLOAD = "upload"        # host -> device
    DOWNLOAD = "download"    # device -> host


class When(StrEnum):
    """Which passes run a step: dropout's forward and backward differ between them."""

    ALWAYS = "always"
    TRAIN = "train"
    TEST = "test"


class HostData(StrEnum):
    """What an upload or download carries (`Step.what`)."""

    INPUT = "input"
    LABELS = "labels"
    NOISE = "noise"        # a training step's noise key (ops/dropout.py's NOISE_WORDS)
    LOGITS = "logits"
    PROBS = "probs"
    LOSS = "loss"          # per-image losses


class BufferKind(StrEnum):
    # persistent: the parameter region
    PARAM = "param"
    GRAD = "grad"            # a parameter's gradient
    VELOCITY = "velocity"    # a parameter's momentum
    STATE = "state"          # an op's tensor that is not trainable: no gradient, no momentum
    BLOCK = "block"          # one GPU's parameters, gradients or momenta as one SGD argument
    # the arena
    INPUT = "input"
    LABELS = "labels"
    NOISE = "noise"          # the step's noise key, read by a mask kernel on the device
    LOSS = "loss"
    ACTIVATION = "activation"
    GATHER = "gather"        # a part's input gathered from several sources
    RECEIVED = "received"    # a transfer's landing place, read by several parts
    GRADIENT = "gradient"
    STAGING = "staging"      # gradient slices from other GPUs, side by side, awaiting their sum
    SCRATCH = "scratch"      # an op's working memory
    GATHERED = "gathered"    # a data-parallel layer's whole batch, its slices all-gathered
    PACKED = "packed"        # one batch slice of a gathered gradient, packed to be sent


PARAMETER_KINDS = (BufferKind.PARAM, BufferKind.STATE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Buffer:
    """One named region of device memory: `elements` values of `dtype` on logical GPU `gpu`,
    at byte `offset` in its GPU's parameter region (`persistent`) or arena. `first` and `last`
    are the first and last step touching it (-1 when none does)."""

    name: str
    gpu: int
    elements: int
    kind: BufferKind
    dtype: str = "float32"
    persistent: bool = False
    offset: int = 0
    first: int = -1
    last: int = -1

    @property
    def nbytes(self) -> int:
        return 4 * self.elements

    @property
    def region(self) -> str:
        return "params" if self.persistent else "arena"


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One step of the plan, run on stream `gpu` (each logical GPU is one stream; a stream runs
    its steps in order). A launch names its `kernel` and `args` (buffer names and scalar names
    in parameter order) and the layer `part` it computes (None for shared steps); a copy moves
    `elements` values from `src` at element `src_offset` to `dst` at `dst_offset`, from
    `src_gpu` to `dst_gpu`; an upload or download moves the whole `buffer`, carrying `what`.
    `deps` are the steps on other streams it must wait for."""

    id: int
    kind: StepKind
    gpu: int
    phase: Phase
    layer: str
    when: When = When.ALWAYS
    part: int | None = None
    kernel: str | None = None
    args: tuple = ()
    src: str | None = None
    dst: str | None = None
    src_offset: int = 0
    dst_offset: int = 0
    elements: int = 0
    src_gpu: int | None = None
    dst_gpu: int | None = None
    buffer: str | None = None
    what: HostData | None = None
    deps: tuple[int, ...] = ()

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()
                if v not in (None, (), []) and not (k in ("src_offset", "dst_offset", "elements")
                                                     and self.kind != "copy")}


@dataclass(frozen=True, kw_only=True)
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


def align(n: int) -> int:
    """`n` bytes rounded up to a multiple of `ALIGN`."""
    return ceil_div(n, ALIGN) * ALIGN


@dataclass(frozen=True, kw_only=True)
class LaunchPlan:
    """The plan: its kernels, buffers, steps in dependency order, parameter bindings, host
    I/O buffers (`io`) and each layer part's buffers by role (`parts`).

    The steps' cross-stream waits (`Step.deps`) are worked out by `waits` when `steps` is first
    read (`netspec compile` without --out reports the memory plan only and never reads them)."""

    network: str
    batch: int
    gpus: int
    kernels: dict[str, Kernel]
    buffers: dict[str, Buffer]
    planned_steps: list[Step] = field(repr=False)     # read `steps`: it has the deps
    parameters: list[ParamBinding]
    io: dict
    parts: list[dict] = field(default_factory=list)
    alignment: int = ALIGN
    # gives each step of the list that waits for other streams its deps, in place
    waits: Callable[[list[Step]], None] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def steps(self) -> list[Step]:
        """The steps in order, with their deps: `planned_steps`, where `waits` replaces each
        step that waits by a copy with its deps on the first read."""
        if self.waits is not None:
            self.waits(self.planned_steps)
        return self.planned_steps

    @property
    def _waits(self) -> Callable | None:
        """The waits still to be worked out: None once `steps` was read."""
        return None if "steps" in self.__dict__ else self.waits

    def memory(self, gpu: int) -> dict:
        params, arena = self._extents.get(gpu, (0, 0))
        params, arena = align(params), align(arena)
        return {"params": params, "arena": arena, "total": params + arena}

    @functools.cached_property
    def _extents(self) -> dict[int, tuple[int, int]]:
        """Per GPU, the end of its last parameter-region and arena buffer (bytes), from one
        pass over the buffers (they never move once the plan is built)."""
        ends: dict[int, list[int]] = {}
        for b in self.buffers.values():
            e = ends.setdefault(b.gpu, [0, 0])
            i = 0 if b.persistent else 1
            e[i] = max(e[i], b.offset + b.nbytes)
        return {g: (e[0], e[1]) for g, e in ends.items()}

    @property
    def memory_per_gpu(self) -> list[int]:
        ext = self._extents
        return [align(ext.get(g, (0, 0))[0]) + align(ext.get(g, (0, 0))[1])
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
                                 "shared_bytes": k.shared_bytes, "flops": k.flops,
                                 # a tensor-core GEMM's operand format (kernel/gemm.py)
                                 **({"precision": k.precision} if k.precision != "fp32"
                                    else {})}
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
