"""Where each buffer lives on its GPU: byte offsets in the parameter region and in the arena.

Parameters, their gradients and momenta are persistent, and so is an op's state. Everything
else lives in one arena per GPU, with lifetimes from the training sequence (forward, backward,
update): a buffer is live from the first step that touches it to the last, so activations the
backward reads stay until their backward, and the rest share memory. Offsets are aligned to
`ALIGN` bytes.

Placement returns offsets by buffer name; the caller makes the placed buffers from them.
"""
from __future__ import annotations

import bisect
import heapq

from .model import Buffer, BufferKind, align

# arena buffers per GPU placed greedy by size; more are swept in step order (see place_arena)
GREEDY_MAX = 512

# a parameter's block: parameters at 0, their gradients at P, their momenta at 2P
_BLOCK_INDEX = {BufferKind.PARAM: 0, BufferKind.STATE: 0, BufferKind.GRAD: 1,
                BufferKind.VELOCITY: 2}


# an arena buffer to place: (name, bytes, first step, last step)
Lifetime = tuple[str, int, int, int]


def place_persistent(buffers: dict[str, Buffer], gpus: int) -> tuple[dict[str, int], dict]:
    """Per GPU three blocks with one layout: parameters (and state) at 0, their gradients at
    P, their momenta at 2P, so one SGD launch walks all three. Returns each parameter-region
    buffer's offset and each GPU's block size P (bytes)."""
    block_bytes = {gpu: 0 for gpu in range(gpus)}
    rel = {}
    for b in buffers.values():
        if b.kind in ("param", "state"):
            rel[b.name] = block_bytes[b.gpu]
            block_bytes[b.gpu] += align(b.nbytes)
    offsets = {}
    for b in buffers.values():
        base = _BLOCK_INDEX.get(b.kind)
        if base is None:
            continue
        # <part>.<role>, its gradient <part>.d<role>, its momentum <part>.v<role>
        stem, _, last = b.name.rpartition(".")
        role = last if base == 0 else last[1:]
        offsets[b.name] = base * block_bytes[b.gpu] + rel[f"{stem}.{role}"]
    return offsets, block_bytes


def place_arena(buffers: dict[str, Buffer], first: dict[str, int],
                last: dict[str, int]) -> dict[str, int]:
    """Arena offsets, per GPU: greedy by size (Pisarchyk & Lee 2020, "Efficient Memory
    Management for Deep Neural Net Inference", §4.2): largest buffer first, each at the
    lowest aligned offset free throughout its lifetime. Its cost grows with the number of
    buffers live at once, so an arena of more than `GREEDY_MAX` buffers is placed by a sweep
    in step order instead (first fit in a free list, a block released after its last step),
    which is linear. `first` and `last` give each arena buffer's first and last step."""
    by_gpu: dict[int, list[Lifetime]] = {}
    for b in buffers.values():
        if not b.persistent:
            by_gpu.setdefault(b.gpu, []).append((b.name, b.nbytes, first[b.name], last[b.name]))
    offsets: dict[str, int] = {}
    for arena in by_gpu.values():
        if len(arena) <= GREEDY_MAX:
            _place_greedy_by_size(arena, offsets)
        else:
            _place_sweep(arena, offsets)
    return offsets


def _place_greedy_by_size(arena: list[Lifetime], offsets: dict[str, int]) -> None:
    placed: list[tuple[int, int, int, int]] = []      # (offset, bytes, first, last)
    for name, nbytes, first, last in sorted(arena, key=lambda b: (-b[1], b[2])):
        live = sorted((q for q in placed if q[2] <= last and first <= q[3]),
                      key=lambda q: q[0])
        off = 0
        for q_off, q_bytes, _, _ in live:
            if off + nbytes <= q_off:
                break
            off = max(off, align(q_off + q_bytes))
        offsets[name] = off
        placed.append((off, nbytes, first, last))


def _place_sweep(arena: list[Lifetime], offsets: dict[str, int]) -> None:
    """First fit in step order: a buffer takes the lowest free block that holds it when its
    first step comes, and gives it back (merged with free neighbours) after its last."""
    ends: list[tuple[int, int, int]] = []       # heap of (last step, offset, size)
    free: list[tuple[int, int]] = []            # free blocks below `top`, by offset
    top = 0
    for name, nbytes, first, last in sorted(arena, key=lambda b: (b[2], -b[1])):
        while ends and ends[0][0] < first:
            _, off, size = heapq.heappop(ends)
            _release(free, off, size)
        size = align(nbytes)
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
        offsets[name] = off
        heapq.heappush(ends, (last, off, size))


def _release(free: list[tuple[int, int]], off: int, size: int) -> None:
    """Give the block [off, off + size) back to the free list (sorted by offset), merged with
    the free blocks just above and below it."""
    i = bisect.bisect(free, (off, 0))
    free.insert(i, (off, size))
    if i + 1 < len(free) and off + size == free[i + 1][0]:
        free[i] = (off, size + free.pop(i + 1)[1])
    if i > 0 and free[i - 1][0] + free[i - 1][1] == off:
        free[i - 1] = (free[i - 1][0], free[i - 1][1] + free.pop(i)[1])
