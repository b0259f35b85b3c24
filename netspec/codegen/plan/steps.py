"""The plan's steps as they are added: buffers declared, kernels launched, blocks copied and
host data moved, in dependency order, with each buffer's lifetime noted on the way.

`StepRecorder` is what the plan builder writes through. It also keeps one kernel per distinct
launch: parts whose kernels have the same template, values, parameters and sizes share one
kernel (an even split compiles each layer's kernels once), and kernels whose values or docs
are equal share one copy of them.
"""
from __future__ import annotations

import re
from dataclasses import replace

from ...kernel import Call, Kernel
from .model import Buffer, BufferKind, HostData, Phase, Step, StepKind, When

_WHEN = {w.value: w for w in When}     # a launch's `when` by name, without When()'s lookup


class StepRecorder:
    """Buffers by name, steps in order, kernels by name, and each buffer's first and last
    step (`first`, `last`: buffer name -> step id; absent when no step touched it yet)."""

    def __init__(self):
        self.buffers: dict[str, Buffer] = {}
        self.steps: list[Step] = []
        self.kernels: dict[str, Kernel] = {}
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.phase = Phase.FORWARD
        self._signatures: dict[str, dict[tuple, str]] = {}   # per kernel layer
        self._consts: dict[tuple, tuple] = {}
        self._docs: dict[str, str] = {}

    # -- buffers -------------------------------------------------------------------------
    def buf(self, name: str, gpu: int, elements: int, kind: BufferKind, **kw) -> str:
        """Declare buffer `name` (once; declaring it again must agree) and return its name."""
        b = self.buffers.get(name)
        if b is None:
            self.buffers[name] = Buffer(name=name, gpu=gpu, elements=elements, kind=kind, **kw)
        else:
            assert (b.gpu, b.elements) == (gpu, elements), (name, b, gpu, elements)
        return name

    def grow(self, name: str, elements: int) -> None:
        """Buffer `name` holds `elements` more values (a staging buffer's next slot)."""
        b = self.buffers[name]
        self.buffers[name] = replace(b, elements=b.elements + elements)

    def _touch(self, name: str, step: int) -> None:
        self.first.setdefault(name, step)
        self.last[name] = step

    # -- steps ---------------------------------------------------------------------------
    def transfer(self, kind: StepKind, gpu: int, layer: str, buffer: str, what: HostData,
                 when: When = When.ALWAYS) -> None:
        """An upload or download of the whole `buffer`."""
        i = len(self.steps)
        self.steps.append(Step(id=i, kind=kind, gpu=gpu, phase=self.phase, layer=layer,
                               when=when, buffer=buffer, what=what))
        self._touch(buffer, i)

    def copy(self, src: str, src_offset: int, dst: str, dst_offset: int, elements: int,
             layer: str, when: When = When.ALWAYS) -> None:
        """`elements` values from `src` at element `src_offset` to `dst` at `dst_offset`, on
        the sender's stream."""
        sg, dg = self.buffers[src].gpu, self.buffers[dst].gpu
        i = len(self.steps)
        self.steps.append(Step(id=i, kind=StepKind.COPY, gpu=sg, phase=self.phase, layer=layer,
                               when=when, src=src, dst=dst, src_offset=src_offset,
                               dst_offset=dst_offset, elements=elements, src_gpu=sg,
                               dst_gpu=dg))
        self._touch(src, i)
        self._touch(dst, i)

    def launch(self, call: Call, roles: dict, gpu: int, layer: str, when: str | None = None,
               part: int | None = None) -> None:
        """Launch `call`'s kernel on `gpu`, its arguments' roles named by `roles` (a role it
        lacks is taken as the buffer's or scalar's own name)."""
        k = self._kernel(call.kernel)
        args = tuple([roles.get(r, r) for r in call.args])
        buffers, first, last = self.buffers, self.first, self.last
        i = len(self.steps)
        for p, a in zip(k.params, args):
            if p.scalar:
                continue
            if a not in buffers:
                raise KeyError(f"{k.name}: no buffer for parameter {p.name} ({a})")
            first.setdefault(a, i)
            last[a] = i
        self.steps.append(Step(id=i, kind=StepKind.LAUNCH, gpu=gpu, phase=self.phase,
                               layer=layer, when=_WHEN[when or call.when], part=part,
                               kernel=k.name, args=args))

    def _kernel(self, k: Kernel) -> Kernel:
        """The kernel a launch of `k` runs: an earlier one of its layer with the same
        signature, else `k` itself, registered (its values and doc shared with equal ones)."""
        consts = tuple(sorted(k.consts.items()))
        consts, shared = self._consts.setdefault(consts, (consts, k.consts))
        sig = (k.template, consts, k.params, k.global_size, k.local_size)
        same_layer = self._signatures.setdefault(k.layer, {})
        known = len(same_layer)
        name = same_layer.setdefault(sig, k.name)      # one hash of the signature, not two
        if len(same_layer) == known:
            return self.kernels[name]
        if k.name in self.kernels:
            raise ValueError(f"kernel name {k.name} used twice")
        k.consts = shared
        k.doc = self._docs.setdefault(k.doc, k.doc)
        self.kernels[k.name] = k
        return k

    def layer_done(self, layer: str) -> None:
        """`layer` launches nothing more: its kernels need no matching now."""
        self._signatures.pop(layer, None)

    # -- finishing -----------------------------------------------------------------------
    def rename_shared(self) -> None:
        """A kernel launched on several GPUs loses the part from its name: `conv2_g0_fwd`
        run by both parts becomes `conv2_fwd`; its launches are renamed alike."""
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
        self.steps = [replace(s, kernel=renamed[s.kernel])
                      if s.kind == "launch" and renamed[s.kernel] != s.kernel else s
                      for s in self.steps]

    def placed(self, offsets: dict[str, int]) -> dict[str, Buffer]:
        """The buffers as the plan keeps them: each with its lifetime, at its byte offset in
        `offsets` (else where it was declared)."""
        first, last = self.first, self.last
        return {name: Buffer(name=name, gpu=b.gpu, elements=b.elements, kind=b.kind,
                             dtype=b.dtype, persistent=b.persistent,
                             offset=offsets.get(name, b.offset), first=first.get(name, -1),
                             last=last.get(name, -1))
                for name, b in self.buffers.items()}

    def drop_unused(self) -> None:
        """Arena buffers no step touches go (e.g. the dy of a part whose gradient goes
        straight on)."""
        for name in [b.name for b in self.buffers.values()
                     if not b.persistent and b.name not in self.first]:
            del self.buffers[name]
        self._signatures = self._consts = self._docs = None
