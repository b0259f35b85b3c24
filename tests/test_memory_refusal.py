"""A spec or flag that needs more memory than the machine has is refused up front, in one line
with the figure and the machine's memory, exit 2, before anything is allocated or written
(netspec/ir/memory.py): no MemoryError traceback, no run directory, no launch.json."""
from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from netspec.cli import main
from netspec.ir.build import build_graph
from netspec.ir.memory import fmt_bytes, machine_memory, memory_need

HEAD = "network t\ninput {input}\nclasses {classes}\n"
BODY = "conv c1 filters 4 size 3 relu\nfc f1 outputs {classes}\nsoftmax prob\ntrain\n  batch 2\n"


def spec(tmp_path, name: str, input: str = "3x8x8", classes: int = 3) -> str:
    path = tmp_path / f"{name}.net"
    path.write_text(HEAD.format(input=input, classes=classes) + BODY.format(classes=classes))
    return str(path)


def refused(r, tmp_path, what: str) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.exception is None or \
        isinstance(r.exception, SystemExit)
    line, = r.output.strip().splitlines()
    assert line.startswith(f"netspec: error: {what}")
    assert line.endswith(f"this machine has {fmt_bytes(machine_memory())} of memory")
    assert not list(tmp_path.rglob("launch.json"))
    return line


def test_the_need_is_counted_by_hand():
    g = build_graph(text=HEAD.format(input="3x8x8", classes=5) + BODY.format(classes=5))
    # conv 4x3x3x3 + 4, fc 5 x (4*6*6) + 5; outputs 4*6*6, 5, 5; input 3*8*8
    params = 4 * 27 + 4 + 5 * 144 + 5
    assert memory_need(g, 7, True) == {"parameters": 3 * params * 4,
                                       "activations": (144 + 5 + 5) * 7 * 4,
                                       "batch": 192 * 7 * 4,
                                       "total": (3 * params + 154 * 7 + 192 * 7) * 4}
    assert memory_need(g, 7, False)["activations"] == 144 * 7 * 4


@pytest.mark.parametrize("kind", ["fc of 10^9 outputs", "input 3x100000x100000"])
def test_train_refuses_a_spec_past_memory_and_leaves_no_run(tmp_path, kind):
    path = spec(tmp_path, "big", classes=10**9) if kind.startswith("fc") else \
        spec(tmp_path, "big", input="3x100000x100000")
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--spec", path, "--data", str(tmp_path),
                                  "--out", str(run)])
    line = refused(r, tmp_path, "training t at batch 2 needs at least ")
    assert " TiB " in line
    assert not run.exists()


def test_train_batch_size_flag_past_memory(tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--spec", spec(tmp_path, "ok"), "--data",
                                  str(tmp_path), "--out", str(run),
                                  "--batch-size", "2147483647"])
    refused(r, tmp_path, "training t at batch 2,147,483,647 needs at least ")
    assert not run.exists()


def test_eval_batch_size_past_memory(tmp_path):
    (tmp_path / "run").mkdir()      # refused before its (missing) weights are read
    r = CliRunner().invoke(main, ["eval", "--spec", spec(tmp_path, "ok"), "--checkpoint",
                                  str(tmp_path / "run"), "--data", str(tmp_path),
                                  "--batch-size", "2147483647"])
    refused(r, tmp_path, "evaluating t at batch 2,147,483,647 needs at least ")


def test_bench_batch_size_past_memory(tmp_path):
    r = CliRunner().invoke(main, ["bench", "--spec", spec(tmp_path, "ok"), "--backend",
                                  "numpy", "--batch-size", "2147483647"])
    line = refused(r, tmp_path, "timing t at batch 2,147,483,647 needs at least ")
    # input batch: 3*8*8 floats per image
    assert f"input batch {fmt_bytes(192 * 4 * 2147483647)}" in line


def test_prepare_base_past_memory(tmp_path):
    out = tmp_path / "cache"
    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    r = CliRunner().invoke(main, ["prepare", "--data", str(tmp_path / "data"), "--out",
                                  str(out), "--base", "100000"])
    line = refused(r, tmp_path, "preparing images at base 100,000 needs at least ")
    assert fmt_bytes(100000 ** 2 * 3 * 5) in line
    assert not out.exists()


def test_compile_reports_a_huge_spec_without_allocating(tmp_path):
    """compile only reports: the fc of 10^9 outputs is planned symbolically."""
    r = CliRunner().invoke(main, ["compile", spec(tmp_path, "big", classes=10**9)])
    assert r.exit_code == 0, r.output
    assert math.isfinite(float(r.output.split("GPU 0: params ")[1].split()[0]))
