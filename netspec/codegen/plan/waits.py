"""Cross-stream waits (`Step.deps`) from the memory each step reads and writes, after
placement, so they also cover a buffer reusing memory another stream has just finished with.

A step waits for the latest earlier step of each other stream that writes what it touches or
touches what it writes, unless a wait it already has implies it (that step itself waited).
Each GPU's regions are cut into elementary pieces at every offset a step's span starts or
ends; each piece remembers, per stream, its last writer and last toucher. A step then looks
up only the pieces it touches, so the work is linear in the plan's size.
"""
from __future__ import annotations

import bisect
from dataclasses import replace

from ...kernel import Kernel
from .model import Buffer, Step

# a step's use of one byte range: ((gpu, region), first byte, end byte, writes)
Span = tuple[tuple[int, str], int, int, bool]


def touched(s: Step, buffers: dict[str, Buffer],
            kernels: dict[str, Kernel]) -> list[tuple[str, int, int, bool]]:
    """(buffer, first element, end element, writes) for each buffer a step touches."""
    if s.kind == "copy":
        return [(s.src, s.src_offset, s.src_offset + s.elements, False),
                (s.dst, s.dst_offset, s.dst_offset + s.elements, True)]
    if s.kind in ("upload", "download"):
        return [(s.buffer, 0, buffers[s.buffer].elements, s.kind == "upload")]
    k = kernels[s.kernel]
    return [(a, 0, buffers[a].elements, p.kind == "out")
            for p, a in zip(k.params, s.args) if not p.scalar]


def with_waits(steps: list[Step], buffers: dict[str, Buffer],
               kernels: dict[str, Kernel]) -> None:
    """Replace each step of `steps` that must wait for other streams by a copy with its
    `deps` (the ids it waits for, ascending), in place. One stream: nothing to wait for."""
    if len({s.gpu for s in steps}) == 1:
        return
    spans, bounds = _spans(steps, buffers, kernels)
    # per region, per elementary piece: {stream: [last writer, last toucher]}
    pieces = {k: [{} for _ in range(len(v) - 1)] for k, v in bounds.items()}
    for i, (s, sp) in enumerate(zip(steps, spans)):
        hit = [(piece, w) for key, lo, hi, w in sp
               for piece in pieces[key][bisect.bisect_left(bounds[key], lo):
                                        bisect.bisect_left(bounds[key], hi)]]
        latest = _latest_conflicts(s.gpu, hit)
        _record(s, hit)
        if latest:
            steps[i] = replace(s, deps=tuple(sorted(latest.values())))


def _spans(steps: list[Step], buffers: dict[str, Buffer], kernels: dict[str, Kernel]
           ) -> tuple[list[list[Span]], dict[tuple[int, str], list[int]]]:
    """Each step's byte spans, and per region the sorted offsets where some span starts or
    ends (the cuts between elementary pieces)."""
    spans = []
    cuts: dict[tuple[int, str], set[int]] = {}
    for s in steps:
        sp = []
        for name, a, e, w in touched(s, buffers, kernels):
            b = buffers[name]
            key = (b.gpu, b.region)
            lo, hi = b.offset + 4 * a, b.offset + 4 * e
            if lo < hi:
                sp.append((key, lo, hi, w))
                c = cuts.setdefault(key, set())
                c.add(lo)
                c.add(hi)
        spans.append(sp)
    return spans, {k: sorted(c) for k, c in cuts.items()}


def _latest_conflicts(gpu: int, hit: list[tuple[dict, bool]]) -> dict[int, int]:
    """Per other stream, the latest step whose use of a piece conflicts with this step's:
    a write conflicts with any earlier touch, a read with an earlier write."""
    latest: dict[int, int] = {}
    for piece, w in hit:
        for other, (writer, toucher) in piece.items():
            if other == gpu:
                continue
            t = toucher if w else writer
            if t >= 0 and latest.get(other, -1) < t:
                latest[other] = t
    return latest


def _record(s: Step, hit: list[tuple[dict, bool]]) -> None:
    for piece, w in hit:
        if w:
            # s waited for every other stream's touch of this piece, so a later step that
            # waits for s (anything touching it after this write) waits for them too: only s
            # needs remembering, which keeps each piece's record to its last writer and the
            # readers since
            piece.clear()
            piece[s.gpu] = [s.id, s.id]
        else:
            piece.setdefault(s.gpu, [-1, -1])[1] = s.id
