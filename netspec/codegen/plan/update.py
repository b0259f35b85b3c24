"""The update phase: one SGD launch per GPU over its parameter blocks, and where each of the
reference's parameters lives (`ParamBinding`)."""
from __future__ import annotations

from ...ir.graph import Layer
from ...kernel import Call
from ..sgd import sgd_kernel
from .model import BufferKind, ParamBinding
from .steps import StepRecorder


def launch_sgd(rec: StepRecorder, gpus: int, block_bytes: dict[int, int],
               offsets: dict[str, int], mults: dict[str, tuple[float, float]]) -> None:
    """Per GPU with parameters, its three blocks (parameters, gradients, momenta: P bytes
    each, see memory.place_persistent) as buffers, and one SGD kernel walking them, with each
    tensor's extent (from its byte offset in `offsets`) and (lr_mult, decay_mult) from
    `mults` compiled in."""
    segs_by_gpu: dict[int, list] = {}
    for b in rec.buffers.values():
        if b.kind == "param":
            start = offsets[b.name] // 4
            segs_by_gpu.setdefault(b.gpu, []).append(
                (start, start + b.elements, *mults[b.name], b.name))
    for gpu in range(gpus):
        segs = segs_by_gpu.get(gpu)
        if not segs:
            continue
        n = block_bytes[gpu] // 4
        blocks = {}
        for kind, base in (("param", 0), ("grad", 1), ("velocity", 2)):
            blocks[kind] = rec.buf(f"{kind}s.gpu{gpu}", gpu, n, BufferKind.BLOCK,
                                   persistent=True, offset=base * block_bytes[gpu])
        k = sgd_kernel(f"sgd_gpu{gpu}", n, segs)
        rec.launch(Call(k, (blocks["param"], blocks["velocity"], blocks["grad"], "lr",
                            "momentum", "weight_decay")), {}, gpu, "")


def parameter_bindings(l: Layer) -> list[ParamBinding]:
    """Each of `l`'s named tensors and the rows of it each part holds, with the part's
    buffer, gradient and momentum (None for state)."""
    shapes = l.param_shapes()
    found: dict[str, tuple] = {}          # name -> (its ParamDef, its parts)
    for p, d, name, rows in l.param_table():
        key = f"{l.name}.g{p.index}"
        entry = {"gpu": p.gpu, "rows": [rows.start, rows.stop], "buffer": f"{key}.{d.role}",
                 "grad": f"{key}.d{d.role}" if d.trainable else None,
                 "velocity": f"{key}.v{d.role}" if d.trainable else None}
        found.setdefault(name, (d, []))[1].append(entry)
    return [ParamBinding(name=name, layer=l.name, what=d.name, shape=tuple(shapes[name]),
                         parts=parts, lr_mult=l.lr_mult, decay_mult=l.decay_mult,
                         trainable=d.trainable)
            for name, (d, parts) in found.items()]
