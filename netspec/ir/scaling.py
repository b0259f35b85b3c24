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

from .build import model_parallel_twin
from .graph import INPUT, Graph, Layer, batch_slices

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
        total += layer_seconds(l, macs, params, batch, gpu)
    return total


def layer_seconds(l: Layer, macs: int, params: int, batch: float, gpu: GpuPeak) -> float:
    """One layer's forward and backward over `batch` images on `gpu` by the roofline, in
    seconds: `macs` per image, `params` its parameters."""
    weighted = l.weighted
    passes = 3 if weighted else 2            # forward, data gradient (+ weight gradient)
    if weighted and all(src == INPUT for src in l.inputs):
        passes -= 1                          # no gradient for the input images
    flops = 2 * macs * batch * passes
    act = (math.prod(l.in_shape) + math.prod(l.out_shape)) * batch * FLOAT_BYTES
    nbytes = act * (3 if weighted else 2) + 3 * params * FLOAT_BYTES
    return max(flops / gpu.flops, nbytes / gpu.bandwidth)


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


# Hybrid parallelism (Krizhevsky 2014, "One weird trick for parallelizing convolutional neural
# networks"): data-parallel convolutions, model-parallel fc layers. The paper's measured
# speedups of AlexNet on K GPUs over one (Table 1), with 128 images per GPU in the conv
# layers and the fc layers' batch either all K·128 images at once or 128 at a time.
PAPER_SPEEDUP = {2: {"fc batch 128K": 1.95, "fc batch 128": 1.93},
                 4: {"fc batch 128K": 3.74, "fc batch 128": 3.66},
                 8: {"fc batch 128K": 6.25, "fc batch 128": 6.02}}
SENDERS = ("all-gather", "reduce-scatter", "allreduce", "transfer")


def sent_bytes_per_gpu(g: Graph, batch: int) -> list[dict[str, int]]:
    """Per logical GPU, the bytes it sends in one training step of `batch` images, by what
    sends them, as the launch plan moves them (codegen/plan/collectives.py): each batch slice
    of a data-parallel layer to every other GPU whose parts read its whole batch
    (all-gather), their gradients' slices back (reduce-scatter), the replicas' weight
    gradients cut in G chunks, each summed on one GPU and sent back (allreduce: 2(G−1)/G of
    them a GPU), and the channel transfers of model-parallel layers, both ways."""
    k = g.gpus
    out = [dict.fromkeys(SENDERS, 0) for _ in range(k)]
    for gpu, n in enumerate(g.sent_elements_per_gpu()):
        out[gpu]["transfer"] = n * batch * FLOAT_BYTES
    dp = [l for l in g.layers if l.data_parallel]
    if not dp:
        return out
    slices = batch_slices(batch, k)
    for l in dp:
        per = math.prod(l.out_shape) * FLOAT_BYTES
        readers = {p.gpu for r in g.compute_layers for p in r.parts if p.slice is None
                   for s in p.sources if s.layer == l.name}
        for q, (a, b) in enumerate(slices):
            for h in readers - {q}:
                out[q]["all-gather"] += (b - a) * per
                out[h]["reduce-scatter"] += (b - a) * per
        for d in l.param_defs(l.parts[0]) if l.weighted else ():
            if not d.trainable:
                continue
            n = math.prod(d.shape)
            for c in range(k):
                share = ((c + 1) * n // k - c * n // k) * FLOAT_BYTES
                for h in set(range(k)) - {c}:
                    out[h]["allreduce"] += share        # h's chunk c to its summing GPU
                    out[c]["allreduce"] += share        # the sum back to h
    return out


def hybrid_schemes(g: Graph, link_gbps: float = 100.0, gpu: str = "H200",
                   per_gpu_batch: int = 128) -> dict[str, Any]:
    """Pure data, pure model and hybrid parallelism of `g` (a spec with data-parallel layers)
    on its K = g.gpus GPUs, each with its own link of `link_gbps`, at `per_gpu_batch` images
    per GPU (global batch B = K × per_gpu_batch, the paper's rule: 128 a GPU in the convs).
    Per scheme: bytes the busiest GPU sends a step, their link time, the roofline compute a
    GPU does (data: all layers on B/K images; model: 1/K of every layer on B; hybrid: the
    data-parallel layers on B/K, 1/K of the others on B), the step as compute plus
    communication (no overlap: an upper bound), and the speedup over one GPU doing
    `per_gpu_batch` images a step (K × t₁ / t_K). Beside the hybrid: the paper's measured
    speedups at K (PAPER_SPEEDUP), if it gives K."""
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU '{gpu}'; known: {', '.join(GPUS)}")
    peak, k = GPUS[gpu], g.gpus
    b = per_gpu_batch * k
    layers = g.compute_layers
    t1 = sum(layer_seconds(l, l.macs, l.params, per_gpu_batch, peak) for l in layers)
    data_compute = sum(layer_seconds(l, l.macs, l.params, per_gpu_batch, peak)
                       for l in layers if l.data_parallel)
    model_compute = sum(layer_seconds(l, l.macs, l.params, b, peak) / k
                        for l in layers if not l.data_parallel)
    hybrid_compute = data_compute + model_compute
    sent = sent_bytes_per_gpu(g, b)
    schemes = {
        "data": (ring_allreduce_bytes(g.total_params * FLOAT_BYTES, k), t1, None),
        "hybrid": (max(sum(d.values()) for d in sent), hybrid_compute,
                   {w: max(d[w] for d in sent) for w in SENDERS}),
    }
    try:
        twin = model_parallel_twin(g.spec)
        schemes["model"] = (max(twin.sent_elements_per_gpu()) * b * FLOAT_BYTES,
                            sum(layer_seconds(l, l.macs, l.params, b, peak)
                                for l in twin.compute_layers) / k, None)
    except Exception as e:        # noqa: BLE001 - a spec the split can't place: said so
        schemes["model"] = (None, None, str(e).splitlines()[0])
    rows = []
    for name in ("data", "model", "hybrid"):
        nbytes, compute, extra = schemes[name]
        row: dict[str, Any] = {"scheme": name, "sent_bytes_per_gpu": nbytes}
        if nbytes is None:
            row["error"] = extra
        else:
            comm = link_seconds(nbytes, link_gbps)
            row.update(comm_ms=1e3 * comm, compute_ms=1e3 * compute,
                       step_ms=1e3 * (comm + compute), speedup=k * t1 / (comm + compute))
            if extra:
                row["by_collective"] = extra
        rows.append(row)
    hyb = rows[-1]
    if "by_collective" in hyb:
        # the paper's scheme (b): the fc layers take one GPU's slice at a time while the next
        # slice is in flight, so their exchange hides behind their compute (and the
        # allreduce behind nothing: counted in full)
        fc_comm = link_seconds(sum(v for w, v in hyb["by_collective"].items()
                                   if w != "allreduce"), link_gbps)
        step = data_compute + max(model_compute, fc_comm) + \
            link_seconds(hyb["by_collective"]["allreduce"], link_gbps)
        rows.append({"scheme": "hybrid (b)", "sent_bytes_per_gpu": hyb["sent_bytes_per_gpu"],
                     "comm_ms": hyb["comm_ms"], "compute_ms": hyb["compute_ms"],
                     "step_ms": 1e3 * step, "speedup": k * t1 / step, "overlapped": True})
    return {"gpus": k, "link_gbps": link_gbps, "gpu": peak.name, "per_gpu_batch": per_gpu_batch,
            "global_batch": b, "one_gpu_step_ms": 1e3 * t1, "schemes": rows,
            "paper_speedup": PAPER_SPEEDUP.get(k)}


def format_hybrid(d: dict[str, Any]) -> str:
    mb = 1e6
    lines = [f"data / model / hybrid parallelism on {d['gpus']} GPUs, one {d['link_gbps']:g} "
             f"Gb/s link each, {d['per_gpu_batch']} images per GPU (global batch "
             f"{d['global_batch']}), {d['gpu']} (roofline; modelled, not measured):",
             f"  {'scheme':<11}{'sent/GPU/step':>15}{'comm ms':>10}{'compute ms':>12}"
             f"{'step ms':>10}{'speedup':>9}"]
    for r in d["schemes"]:
        if "error" in r:
            lines.append(f"  {r['scheme']:<11}  cannot be placed: {r['error']}")
            continue
        lines.append(f"  {r['scheme']:<11}{r['sent_bytes_per_gpu'] / mb:>12.1f} MB"
                     f"{r['comm_ms']:>10.2f}{r['compute_ms']:>12.2f}{r['step_ms']:>10.2f}"
                     f"{r['speedup']:>8.2f}x")
    hyb = next(r for r in d["schemes"] if r["scheme"] == "hybrid")
    if "by_collective" in hyb:
        lines.append("  hybrid, busiest GPU: " + ", ".join(
            f"{w} {v / mb:.1f} MB" for w, v in hyb["by_collective"].items()))
    lines.append(f"  (step = compute + communication, no overlap, except hybrid (b): the fc "
                 f"exchange behind the fc compute, one slice at a time; speedup over one GPU "
                 f"at {d['one_gpu_step_ms']:.2f} ms a step of {d['per_gpu_batch']})")
    if d["paper_speedup"]:
        paper = ", ".join(f"{v:.2f}x ({k})" for k, v in d["paper_speedup"].items())
        best = max(d["paper_speedup"].values())
        ours = ", ".join(f"{r['scheme']} {r['speedup'] / best:.2f}" for r in d["schemes"]
                         if r["scheme"].startswith("hybrid") and "speedup" in r)
        lines.append(f"  Krizhevsky 2014, Table 1, measured on {d['gpus']} GPUs: {paper}; "
                     f"modelled here against the paper's best: {ours}")
    return "\n".join(lines)
