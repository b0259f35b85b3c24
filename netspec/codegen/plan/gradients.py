"""Gradient delivery: a part's output gradient is the sum of its readers' slices.

The first slice to reach a channel range is copied into the gradient; the others are summed
once the layer's backward has issued them all. Each slice from another GPU is copied (as soon
as its reader's backward is done, on the reader's stream) into the next slot of one staging
buffer on the gradient's GPU, and one kernel adds all the slots, in order, plus one slice
already on that GPU. A `connect all` layer on G GPUs thus has G(G-1) gradient copies (inherent
in point-to-point transfers) and G sum launches; the staging buffer holds up to G-1 slots at
once (a reduce-scatter's receive buffer). A single slice received alone is added by the
one-slot kernel `ACCUMULATE`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...kernel import Call, Kernel, elementwise_launch, params
from .model import BufferKind
from .steps import StepRecorder

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
class _PendingSum:
    """The slices still to add into one channel range of a gradient."""

    layer: str
    n: int                                    # elements of the range
    local: list[tuple[str, int]] = field(default_factory=list)   # (buffer, element) on its GPU
    stage: str | None = None                  # the staging buffer of the received slices
    slots: int = 0


class GradientSums:
    """Which channels of each gradient buffer hold a value so far (`cover`), and the sums
    deferred to the end of the layer's backward (`sum_into`)."""

    def __init__(self, rec: StepRecorder):
        self.rec = rec
        self.cover: dict[str, list[tuple[int, int]]] = {}   # gradient channels written so far
        self.sums: dict[str, dict[tuple[int, int], _PendingSum]] = {}

    def deliver(self, src: str, src_offset: int, dst: str, channel: int, channels: int,
                per_ch: int, layer: str) -> None:
        """Add channels `channel` .. `channel + channels` of a gradient, held in `src` from
        element `src_offset`, into the gradient buffer `dst` (`per_ch` elements a channel): a
        copy over the channels `dst` has no value for yet; over those it has, a sum deferred
        to `sum_into`. A slice from another GPU is copied now into the next slot of one
        staging buffer on dst's GPU, a slice on dst's GPU is read where it is."""
        rec = self.rec
        covered = self.cover.setdefault(dst, [])
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
            if done:
                self._defer(src, so, dst, a, b, n, layer)
            else:
                rec.copy(src, so, dst, a * per_ch, n, layer)
        if len(pieces) > 1 or not pieces[0][2]:      # else inside what is covered
            self.cover[dst] = _merge(covered + [(channel, end)])

    def _defer(self, src: str, so: int, dst: str, a: int, b: int, n: int, layer: str) -> None:
        """Channels [a, b) of `src` (from element `so`) are to be added into `dst`."""
        rec = self.rec
        dg = rec.buffers[dst].gpu
        sums = self.sums.setdefault(dst, {})
        group = sums.get((a, b))
        if group is None:
            group = sums[(a, b)] = _PendingSum(layer, n)
        if rec.buffers[src].gpu == dg:
            group.local.append((src, so))
            return
        if group.stage is None:
            group.stage = rec.buf(f"{dst}.staged{len(rec.steps)}", dg, n, BufferKind.STAGING)
        else:
            rec.grow(group.stage, n)                    # one more slot
        rec.copy(src, so, group.stage, group.slots * n, n, layer)
        group.slots += 1

    def sum_all(self) -> None:
        """Every deferred sum, in the order their gradients were first summed into."""
        for dst in list(self.sums):
            self.sum_into(dst)

    def sum_into(self, dst: str) -> None:
        """The deferred sums into `dst` (see `deliver`): per channel range, one kernel adds
        every slot of its staging buffer, and one slice on dst's GPU, into it; any other
        slices on dst's GPU are added one kernel each. A `connect all` layer's backward thus
        launches one sum per source part."""
        rec = self.rec
        dg = rec.buffers[dst].gpu
        stem = re.sub(r"\W", "_", dst)
        for (a, b), gr in self.sums.pop(dst, {}).items():
            n, layer, local, stage, slots = gr.n, gr.layer, gr.local, gr.stage, gr.slots
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
                k = Kernel(f"{stem}_acc_{len(rec.steps)}", template, params(*ps), consts,
                           gs, ls, flops=n * (slots + bool(mine)), layer=layer,
                           doc=f"{what}: the {slots} slices received side by side in "
                               f"{stage}{mine}\nlaunch: one work-item per element ({n}), "
                               f"summing the slots in order")
                rec.launch(Call(k, args), {}, dg, layer)
            elif stage is not None:
                local = [(stage, 0)] + local     # one slice received: as any other
            for src, so in local:
                k = Kernel(f"{stem}_acc_{len(rec.steps)}", ACCUMULATE,
                           params("out dst", "in src"), dict(N=n, OFF=so, DOFF=doff), gs, ls,
                           flops=n, layer=layer,
                           doc=f"{what}\nlaunch: one work-item per element ({n})")
                rec.launch(Call(k, (dst, src)), {}, dg, layer)

    def check_complete(self, layer: str, gradients: list) -> None:
        """Every channel of `layer`'s parts' output gradients (`gradients`: (part, its dy
        buffer)) was written, as its backward (which reads them) begins: every reader's
        backward is behind us then. Their records go, since nothing adds to them again."""
        for p, dy in gradients:
            covered = self.cover.pop(dy, [])
            if covered != [(0, p.channels)]:
                raise AssertionError(f"plan: {layer} part {p.index}'s output gradient "
                                     f"covers only channels {covered} of {p.channels}")


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
