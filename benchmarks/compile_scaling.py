"""How `netspec compile` scales: time and peak memory per spec size, in four dimensions.

    python benchmarks/compile_scaling.py [--quick] [--timeout 60] [--json OUT.json]
                                         [--only alexnet chain fanin longline]
    python benchmarks/compile_scaling.py --compare BEFORE.json AFTER.json   (a Markdown table)

Each case is one generated spec, compiled in its own Python process exactly as
`netspec compile SPEC` does (parse, IR, launch plan, memory report; no -o). The child times the
compile alone (not the interpreter's start or the imports) and reports its peak resident set
(`ru_maxrss`, which includes the interpreter and netspec's imports: the "idle" row). A case
that runs past --timeout is killed and shown as "> T s".

Dimensions:
- alexnet   AlexNet's layers and connections at `gpus` 2, 8, 32, 64, 128. Every layer's width
            is rounded up to a multiple of the GPUs (conv1 96 -> 128 at 64 and 128 GPUs) so that
            it splits evenly; `classes` follows fc8.
- chain     a chain of N lines: `relu rI` on 4x8x8 maps, then an fc and a softmax (the
            shortest layer statement, so that what grows is the number of lines).
- convchain the same with `conv cI filters 4 size 3 pad 1 relu` lines: each is ~6 kernels
            (GEMMs forward and backward) in the plan, so ~10x a relu line's time and memory.
- fanin     one fc layer reading `from` K relu layers (K + 6 lines).
- longline  one `split` list of N/2 entries on one line (1 KB .. 10 MB of text). It is refused
            either way (a 1-GPU network can't take a split of many parts; a line over
            100,000 characters isn't parsed): the time is the time to that verdict.

For AlexNet the child also counts the launch plan's steps (after the timing): `connect all`
layers make the plan Theta(G^2) steps, so its exponent is also fitted against the plan's size.

The fitted growth exponent of a dimension is the slope of log(time) over log(size) by least
squares over its cases; "last step" is the slope between its two largest finished cases, the
better guide to how it grows from there. Fixed costs pull both below the true asymptotic
exponent at small sizes, so read them with the table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ALEXNET = [  # (type, name, keys, width or None); widths are rounded up to a multiple of gpus
    ("conv", "conv1", "size 11 stride 4 pad 2 relu", 96),
    ("lrn", "norm1", "size 5 alpha 1e-4 beta 0.75 k 2", None),
    ("maxpool", "pool1", "size 3 stride 2", None),
    ("conv", "conv2", "size 5 pad 2 relu connect same-gpu bias 1", 256),
    ("lrn", "norm2", "size 5 alpha 1e-4 beta 0.75 k 2", None),
    ("maxpool", "pool2", "size 3 stride 2", None),
    ("conv", "conv3", "size 3 pad 1 relu connect all", 384),
    ("conv", "conv4", "size 3 pad 1 relu connect same-gpu bias 1", 384),
    ("conv", "conv5", "size 3 pad 1 relu connect same-gpu bias 1", 256),
    ("maxpool", "pool5", "size 3 stride 2", None),
    ("fc", "fc6", "relu connect all bias 1", 4096),
    ("dropout", "drop6", "p 0.5", None),
    ("fc", "fc7", "relu connect all bias 1", 4096),
    ("dropout", "drop7", "p 0.5", None),
    ("fc", "fc8", "connect all", 1000),
]
TRAIN = "train\n  batch 128\n  sgd lr 0.01 momentum 0.9 weight_decay 0.0005\n"


def alexnet(gpus: int) -> str:
    lines = []
    classes = 0
    for typ, name, keys, width in ALEXNET:
        if width is None:
            lines.append(f"{typ} {name} {keys}")
            continue
        width = -(-width // gpus) * gpus
        key = "filters" if typ == "conv" else "outputs"
        lines.append(f"{typ} {name} {key} {width} {keys}")
        classes = width
    head = f"network alexnet{gpus}\ninput 3x224x224\nclasses {classes}\ngpus {gpus}\n" \
           "init weight gauss(0.01) bias 0\n"
    return head + "\n".join(lines) + "\nsoftmax prob\n" + TRAIN


def chain(lines: int) -> str:
    head = "network chain\ninput 4x8x8\nclasses 10\n"
    body = "".join(f"relu r{i}\n" for i in range(max(1, lines - 9)))
    return head + body + "fc out outputs 10\nsoftmax prob\n" + TRAIN


def convchain(lines: int) -> str:
    head = "network convchain\ninput 4x8x8\nclasses 10\n"
    body = "".join(f"conv c{i} filters 4 size 3 pad 1 relu\n" for i in range(max(1, lines - 9)))
    return head + body + "fc out outputs 10\nsoftmax prob\n" + TRAIN


def fanin(inputs: int) -> str:
    head = "network fanin\ninput 4x8x8\nclasses 10\nconv c0 filters 4 size 3 pad 1\n"
    body = "".join(f"relu r{i} from c0\n" for i in range(inputs))
    cat = ",".join(f"r{i}" for i in range(inputs))
    return head + body + f"fc out outputs 10 from {cat}\nsoftmax prob\n" + TRAIN


def longline(chars: int) -> str:
    entries = max(1, chars // 2)
    return ("network longline\ninput 4x8x8\nclasses 10\n"
            f"fc out outputs 10 split {','.join(['1'] * entries)}\nsoftmax prob\n" + TRAIN)


def idle(_: int) -> str:
    return "network idle\ninput 3x8x8\nclasses 2\nfc out outputs 2\nsoftmax prob\n" + TRAIN


FULL = {
    "idle": (idle, [1]),
    "alexnet": (alexnet, [2, 8, 32, 64, 128]),
    "chain": (chain, [1_000, 10_000, 100_000, 200_000]),
    "convchain": (convchain, [1_000, 3_000, 10_000]),
    "fanin": (fanin, [10, 100, 1_000]),
    "longline": (longline, [1_000, 10_000, 99_000, 1_000_000, 10_000_000]),
}
QUICK = {"idle": [1], "alexnet": [2, 8, 32], "chain": [1_000, 10_000], "convchain": [300, 1_000],
         "fanin": [10, 100],
         "longline": [10_000, 1_000_000]}
UNIT = {"idle": "", "alexnet": "gpus", "chain": "lines", "convchain": "lines", "fanin": "inputs",
        "longline": "chars"}

CHILD = r"""
import io, json, resource, sys, time, contextlib
t0 = time.perf_counter()
from netspec.cli import main
t1 = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_SELF)
CPU0 = ru.ru_utime + ru.ru_stime
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        code = main(["compile", sys.argv[1]], standalone_mode=False) or 0
    except SystemExit as e:
        code = e.code
    except BaseException as e:
        code = repr(e)
t2 = time.perf_counter()
text = out.getvalue()
ru = resource.getrusage(resource.RUSAGE_SELF)
steps = None
if len(sys.argv) > 2 and code == 0:      # the plan's size, after the timing (not timed)
    from netspec.ir.build import build_graph
    from netspec.codegen.plan import build_plan
    g = build_graph(sys.argv[1])
    steps = len(build_plan(g, g.recipe.batch_size)._steps)
print(json.dumps({"seconds": t2 - t1, "import_s": t1 - t0, "exit": code, "plan_steps": steps,
                  "cpu_s": ru.ru_utime + ru.ru_stime - CPU0,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "first_line": text.splitlines()[0][:160] if text else ""}))
"""


def run_case(text: str, timeout: float, count_steps: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "spec.net"
        path.write_text(text)
        env = dict(os.environ, PYTHONPATH=str(ROOT), NETSPEC_AUTOTUNE="0")
        try:
            p = subprocess.run([sys.executable, "-c", CHILD, str(path)]
                               + (["steps"] if count_steps else []), capture_output=True,
                               text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            return {"timeout": timeout}
        if p.returncode != 0:
            return {"crash": (p.stderr or p.stdout)[-300:]}
        r = json.loads(p.stdout.strip().splitlines()[-1])
        # netspec's own refusal: exit 2 and a FILE:LINE:COL: error line
        r["refused"] = r["exit"] == 2
        return r


def fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(least-squares slope of log t over log n, slope between the last two points)."""
    pts = [(math.log(n), math.log(max(t, 1e-4))) for n, t in points]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    (x1, y1), (x2, y2) = pts[-2:]
    return slope, (y2 - y1) / (x2 - x1)


def _cell(r: dict | None) -> str:
    if r is None:
        return "| | |"
    if "timeout" in r:
        return f"> {r['timeout']:.0f} (killed) | | "
    if "crash" in r:
        return "crash | |"
    note = " (refused)" if r.get("refused") else ""
    return f"{r['seconds']:.2f} | {r['cpu_s']:.2f} | {r['maxrss_mb']:.0f}{note}"


def compare(before: str, after: str) -> None:
    """A Markdown table of two --json results side by side, and each one's exponents."""
    b, a = json.loads(Path(before).read_text()), json.loads(Path(after).read_text())
    print("| case | size | before: wall s | CPU s | peak MB | after: wall s | CPU s | peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for dim in a:
        old = {r["size"]: r for r in b.get(dim, [])}
        for r in a[dim]:
            print(f"| {dim} | {r['size']:,} | {_cell(old.get(r['size']))} | {_cell(r)} |")
    for name, res in (("before", b), ("after", a)):
        out = []
        for dim, rows in res.items():
            ok = [r for r in rows if "cpu_s" in r and not r["refused"]] or \
                [r for r in rows if "cpu_s" in r]
            f = fit([(r["size"], r["cpu_s"]) for r in ok])
            more = "+" if any("cpu_s" not in r for r in rows) else ""
            if dim != "idle":
                out.append(f"{dim} {f[0]:.2f}{more} (last step {f[1]:.2f})" if f else
                           f"{dim} n/a")
        print(f"\n{name}: " + "; ".join(out))


def main(argv: list[str] | None = None) -> dict:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--compare"]:
        compare(*argv[1:3])
        return {}
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    ap.add_argument("--only", nargs="*", help="dimensions to run")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    results: dict[str, list] = {}
    print(f"{'case':<10} {'size':>10} {'lines':>8} {'MB text':>8} {'wall s':>9} {'CPU s':>7} "
          f"{'peak MB':>8}  outcome")
    for dim, (make, sizes) in FULL.items():
        if args.only and dim not in args.only and dim != "idle":
            continue
        if args.quick:
            sizes = QUICK[dim]
        results[dim] = []
        for n in sizes:
            text = make(n)
            r = run_case(text, args.timeout, count_steps=dim == "alexnet")
            r.update(size=n, lines=text.count("\n"), mb=len(text) / 1e6)
            results[dim].append(r)
            cpu = ""
            if "timeout" in r:
                secs, mem, outcome = f"> {args.timeout:.0f}", "", "killed (timeout)"
            elif "crash" in r:
                secs, mem, outcome = "", "", "crash: " + r["crash"].splitlines()[-1]
            else:
                secs, mem = f"{r['seconds']:.2f}", f"{r['maxrss_mb']:.0f}"
                cpu = f"{r['cpu_s']:.2f}"
                outcome = ("refused: " + r["first_line"].split("error: ", 1)[-1][:70]
                           if r["refused"] else "compiled" if r["exit"] == 0 else
                           f"exit {r['exit']}: {r['first_line'][:60]}")
            print(f"{dim:<10} {n:>10} {r['lines']:>8} {r['mb']:>8.2f} {secs:>9} {cpu:>7} "
                  f"{mem:>8}  {outcome}", flush=True)
    print("\ngrowth exponents of compile CPU time (log-log slope; 1 = linear):")
    for dim, rows in results.items():
        if dim == "idle":
            continue
        # compiled cases only, unless the dimension is refused throughout (the long line)
        ok = [r for r in rows if "cpu_s" in r and not r["refused"]] or \
            [r for r in rows if "cpu_s" in r]
        done = [(r["size"], r["cpu_s"]) for r in ok]
        f = fit(done)
        late = " (some cases did not finish: the exponent is a lower bound)" \
            if any("cpu_s" not in r for r in rows) else ""
        if f:
            print(f"  {dim:<9} per {UNIT[dim]}: fit {f[0]:.2f}, last step {f[1]:.2f}{late}")
        else:
            print(f"  {dim:<9} per {UNIT[dim]}: too few finished cases{late}")
        steps = [(r["plan_steps"], r["cpu_s"]) for r in ok if r.get("plan_steps")]
        fs = fit(steps)
        if fs:   # `gpus` grows the plan as G^2 (connect all): the cost per plan step
            print(f"  {dim:<9} per plan step: fit {fs[0]:.2f}, last step {fs[1]:.2f} "
                  f"({steps[0][0]:,} .. {steps[-1][0]:,} steps)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
