"""AlexNet's ONNX export: the file size, and onnxruntime's CPU inference time per image next to
netspec's own forward, measured in one run.

    python benchmarks/onnx_export.py [--spec specs/alexnet.net] [--batch-size 8]
        [--iterations 5] [--threads N] [--no-save]

It exports the spec with its initial weights (seed 0; the size doesn't depend on the values),
checks that onnxruntime and netspec's NumPy backend agree on one batch, then alternates
onnxruntime's CPUExecutionProvider and netspec's `predict_proba` batch by batch (the softmax
probabilities of a test-time forward, the same work), so the shared machine's changing load
skews both alike. Prints ms per image for each (median over iterations) and their ratio, and
writes benchmarks/results/<date>-<host>-onnx.json with versions, threads and load average.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "specs/alexnet.net"))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0,
                    help="onnxruntime intra-op threads (0: its default, all cores)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)

    import onnx
    import onnxruntime as ort

    import netspec
    from netspec.codegen.onnx_export import write_onnx
    from netspec.ir.build import build_graph

    graph = build_graph(args.spec)
    net = netspec.build(graph, "numpy", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{graph.name}.onnx"
        t0 = time.perf_counter()
        size = write_onnx(graph, net.parameters(), path)
        export_s = time.perf_counter() - t0
        so = ort.SessionOptions()
        if args.threads:
            so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(0, 50, (args.batch_size, *graph.input_shape))
    x = x.astype(np.float32)
    want = net.predict_proba(x)
    got, = sess.run(None, {"data": x})
    max_rel = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-30)))
    ort_ms, ns_ms = [], []
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        sess.run(None, {"data": x})
        ort_ms.append((time.perf_counter() - t0) * 1e3 / args.batch_size)
        t0 = time.perf_counter()
        net.predict_proba(x)
        ns_ms.append((time.perf_counter() - t0) * 1e3 / args.batch_size)
    ort_med, ns_med = statistics.median(ort_ms), statistics.median(ns_ms)
    result = {
        "spec": os.path.relpath(args.spec, ROOT), "network": graph.name,
        "onnx_bytes": size, "params": graph.total_params, "export_s": export_s,
        "batch_size": args.batch_size, "iterations": args.iterations,
        "onnxruntime_ms_per_image": ort_med, "netspec_numpy_ms_per_image": ns_med,
        "ratio_netspec_over_onnxruntime": ns_med / ort_med,
        "onnxruntime_ms_all": ort_ms, "netspec_ms_all": ns_ms,
        "max_relative_difference": max_rel,
        "versions": {"onnx": onnx.__version__, "onnxruntime": ort.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "threads": args.threads or os.cpu_count(), "cpu": platform.processor() or
        platform.machine(), "cpus": os.cpu_count(), "host": socket.gethostname(),
        "loadavg": os.getloadavg(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    print(f"{graph.name}: ONNX file {size / 1e6:.1f} MB ({graph.total_params:,} float32 "
          f"parameters), exported in {export_s:.1f} s")
    print(f"batch {args.batch_size}, median of {args.iterations}, alternating: onnxruntime "
          f"CPU {ort_med:.1f} ms/image, netspec numpy {ns_med:.1f} ms/image "
          f"(netspec/onnxruntime {ns_med / ort_med:.2f}); max relative difference "
          f"{max_rel:.1e}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if not args.no_save:
        out = ROOT / "benchmarks/results" / (
            f"{datetime.date.today()}-{socket.gethostname()[:12]}-onnx.json")
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
