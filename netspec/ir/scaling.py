"""What data parallelism over K replicas costs a step, from the graph alone: the bytes each
replica sends in a ring allreduce of the gradients, the time that takes on a link, and the
step's compute time on a named GPU from a roofline, for `netspec compile --replicas K`.

Ring allreduce (Patarasuk & Yuan 2009; NCCL, Horovod, Baidu's ring): a reduce-scatter and an
allgather of K−1 steps each, every step moving 1/K of the buffer, so each replica sends (and
receives) 2(K−1)/K × the gradient bytes per step, whatever K is. Time on a link of L Gb/s:
bytes · 8 / (L · 10⁹); latency and the reduction arithmetic are left out (they are small
next to AlexNet's 244 MB).

Roofline (Williams, Waterman & Patterson 2009): each layer's time is max(FLOPs / peak FLOP/s,
bytes / memory bandwidth), summed over the layers, forward and backward. FLOPs: 2 per
multiply-add; the forward, the data gradient (not for a layer reading the input) and the
weight gradient each do the layer's MACs. Bytes: every pass reads its input and writes its
output once (activations: in + out elements per image, three passes; weights: read twice and
the gradient written once). A lower bound: real kernels run below the roof (see netspec
bench).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .graph import INPUT, Graph

FLOAT_BYTES = 4


@dataclass(frozen=True)
class GpuPeak:
    name: str
    flops: float          # fp32 FLOP/s without tensor cores
    bandwidth: float      # memory bytes/s


# fp32 (non-tensor) peaks and memory bandwidths from the vendors' data sheets.
GPUS: dict[str, GpuPeak] = {
    "H200": GpuPeak("NVIDIA H200 SXM", 67e12, 4.8e12),
    "H100": GpuPeak("NVIDIA H100 SXM", 67e12, 3.35e12),
    "A100": GpuPeak("NVIDIA A100 SXM", 19.5e12, 2.039e12),
    "V100": GpuPeak("NVIDIA V100 SXM2", 15.7e12, 0.9e12),
    "GTX580": GpuPeak("NVIDIA GTX 580 (the paper's)", 1.581e12, 192.4e9),
}


def ring_allreduce_bytes(nbytes: int, replicas: int) -> float:
    """Bytes each replica sends per allreduce of `nbytes`: 2(K−1)/K × nbytes (0 for K = 1)."""
    return 2 * (replicas - 1) / replicas * nbytes


def link_seconds(nbytes: float, link_gbps: float) -> float:
    """Seconds to send `nbytes` over a link of `link_gbps` gigabits per second."""
    return nbytes * 8 / (link_gbps * 1e9)


def roofline_step_seconds(g: Graph, batch: int, gpu: GpuPeak,
                          rows: list[dict] | None = None) -> float:
    """One training step (forward and backward) of `batch` images on `gpu`, by the roofline
    (module doc), in seconds. `rows`: the compute layers' MACs and parameters already worked
    out (ir/report.py's layer_rows), else they are worked out here."""
    total = 0.0
    figures = ((r["macs"], r["params"]) for r in rows) if rows is not None else \
        ((l.macs, l.params) for l in g.compute_layers)
    for l, (macs, params) in zip(g.compute_layers, figures, strict=True):
        weighted = l.weighted
        passes = 3 if weighted else 2            # forward, data gradient (+ weight gradient)
        if weighted and all(src == INPUT for src in l.inputs):
            passes -= 1                          # no gradient for the input images
        flops = 2 * macs * batch * passes
        act = (math.prod(l.in_shape) + math.prod(l.out_shape)) * batch * FLOAT_BYTES
        nbytes = act * (3 if weighted else 2) + 3 * params * FLOAT_BYTES
        total += max(flops / gpu.flops, nbytes / gpu.bandwidth)
    return total


def data_parallel(g: Graph, replicas: int, link_gbps: float = 100.0, gpu: str = "H200",
                  batch_size: int | None = None, rows: list[dict] | None = None
                  ) -> dict[str, Any]:
    """The communication table of K data-parallel replicas of `g` with global batch B (the
    recipe's unless given): gradient bytes, ring bytes sent per replica per step, the link
    time, the roofline compute time of a replica's B/K images on `gpu`, and their ratio; and
    the same for the convolutional and fully-connected layers apart (Krizhevsky 2014's
    argument: the fc layers hold most parameters and little compute). `rows`: the report's
    layer rows (ir/report.py's layer_rows), whose MACs and parameters are then not worked
    out again."""
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU '{gpu}'; known: {', '.join(GPUS)}")
    peak = GPUS[gpu]
    batch = batch_size or g.recipe.batch_size
    local = batch / replicas
    if rows is None:
        grad = g.total_params * FLOAT_BYTES
        fc = sum(l.params for l in g.weighted_layers if l.type == "fc") * FLOAT_BYTES
    else:
        grad = (sum(r["params"] for r in rows)
                + sum(l.params for l in g.layers if l.replicated)) * FLOAT_BYTES
        fc = sum(r["params"] for r in rows if r["type"] == "fc") * FLOAT_BYTES
    sent = ring_allreduce_bytes(grad, replicas)
    comm = link_seconds(sent, link_gbps)
    compute = roofline_step_seconds(g, max(1, round(local)), peak, rows) * local / \
        max(1, round(local))
    conv_sent = ring_allreduce_bytes(grad - fc, replicas)
    return {
        "replicas": replicas, "link_gbps": link_gbps, "gpu": peak.name,
        "global_batch": batch, "batch_per_replica": local,
        "batch_divides": batch % replicas == 0,
        "gradient_bytes": grad,
        "fc_gradient_fraction": fc / grad if grad else 0.0,
        "sent_bytes_per_replica_per_step": sent,
        "comm_ms": 1e3 * comm,
        "compute_ms": 1e3 * compute,
        "comm_to_compute": comm / compute if compute else math.inf,
        "conv_only_sent_bytes": conv_sent,
        "conv_only_comm_ms": 1e3 * link_seconds(conv_sent, link_gbps),
    }


def format_data_parallel(d: dict[str, Any]) -> str:
    mb = 1e6
    lines = [f"data parallel, {d['replicas']} replicas on {d['link_gbps']:g} Gb/s links, "
             f"global batch {d['global_batch']} ({d['batch_per_replica']:g} per replica"
             + ("" if d["batch_divides"] else ", does not divide: train refuses it") + "):",
             f"  gradients {d['gradient_bytes'] / mb:.1f} MB ({100 * d['fc_gradient_fraction']:.1f}% "
             f"in fc layers); ring allreduce sends {d['sent_bytes_per_replica_per_step'] / mb:.1f} "
             f"MB per replica per step: {d['comm_ms']:.1f} ms",
             f"  compute {d['compute_ms']:.2f} ms per step on {d['gpu']} (roofline); "
             f"communication / compute = {d['comm_to_compute']:.2f}"
             + ("  (communication-bound)" if d["comm_to_compute"] > 1 else ""),
             f"  the conv layers alone: {d['conv_only_sent_bytes'] / mb:.1f} MB, "
             f"{d['conv_only_comm_ms']:.2f} ms (data-parallel convs, model-parallel fc: "
             f"Krizhevsky 2014)"]
    return "\n".join(lines)
