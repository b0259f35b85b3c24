"""Every example in README.md and docs/*.md runs: shell blocks (```sh, ```bash) in a scratch
folder holding the repository's specs and examples, Python blocks (```python) with the
repository on the path. A block right after `<!-- not-run: REASON -->` is skipped (installs,
ImageNet, minutes of training); their number is held small here. CUDA examples run on the
emulator (tests/conftest.py sets NETSPEC_CUDA_EMULATE where no GPU answers).

Also: the generated spec language reference (docs/gen_reference.py) names every layer type,
every key a layer statement takes and every recipe statement and key, with the paper's
defaults."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGS = {"sh": "shell", "bash": "shell", "python": "python"}
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(\S.*?)\s*-->")
MAX_NOT_RUN = 6


def code_blocks(path: pathlib.Path) -> list[dict]:
    """The fenced blocks of a Markdown file: lang, code, line (1-based, of the fence) and
    the reason of a `<!-- not-run: ... -->` on the last non-blank line before it."""
    lines = path.read_text().split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = NOT_RUN.search(lines[k]) if k >= 0 else None
        blocks.append({"lang": m.group(1), "code": "\n".join(lines[i + 1:j]), "line": i + 1,
                       "not_run": marker.group(1) if marker else None})
        i = j + 1
    return blocks


FIRST_LOOK = "netspec compile specs/alexnet.net"   # the README block run by its own test


def runnable():
    """The blocks to run, each distinct code once (the README's Python API is also the
    manual's page)."""
    seen = set()
    for path in DOCS:
        for b in code_blocks(path):
            if b["lang"] in RUN_LANGS and b["not_run"] is None and b["code"] not in seen:
                seen.add(b["code"])
                if FIRST_LOOK not in b["code"]:
                    yield pytest.param(path, b, id=f"{path.relative_to(ROOT)}:{b['line']}")


@pytest.fixture
def scratch(tmp_path) -> pathlib.Path:
    for name in ("specs", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "docs" / "img").mkdir(parents=True)
    return tmp_path


def run_block(block: dict, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    if RUN_LANGS[block["lang"]] == "shell":
        cmd = ["bash", "-euo", "pipefail", "-c", block["code"]]
    else:
        cmd = [sys.executable, "-c", block["code"]]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("path,block", list(runnable()))
def test_example_runs(path, block, scratch):
    result = run_block(block, scratch)
    assert result.returncode == 0, (f"{path.name}:{block['line']} failed:\n{block['code']}\n"
                                    f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def test_readme_first_look_prints_the_papers_parameters(scratch):
    """The README's first look: compile reports the sum of the paper's layers (conv1
    11x11x3x96 ... fc8 4096x1000, with biases, by hand: 60,965,224), viz writes the diagram
    and export an ONNX file."""
    block = next(b for b in code_blocks(ROOT / "README.md")
                 if b["lang"] == "sh" and FIRST_LOOK in b["code"])
    by_hand = sum(k * k * cin * cout + cout for k, cin, cout in
                  [(11, 3, 96), (5, 48, 256), (3, 256, 384), (3, 192, 384), (3, 192, 256)])
    by_hand += 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
    assert by_hand == 60_965_224
    result = run_block(block, scratch)
    assert result.returncode == 0, result.stderr
    assert f"{by_hand:,}" in result.stdout
    svg = (scratch / "docs" / "img" / "alexnet.svg").read_text()
    assert svg.lstrip().startswith("<?xml") or "<svg" in svg[:500]
    assert (scratch / "tiny-alexnet.onnx").stat().st_size > 368_842 * 4


def test_skipped_examples_are_few_and_say_why():
    skipped = [(p.name, b["line"], b["not_run"]) for p in DOCS for b in code_blocks(p)
               if b["not_run"] is not None]
    assert all(reason for _, _, reason in skipped)
    assert len(skipped) <= MAX_NOT_RUN, skipped
    assert len(list(runnable())) >= 3


def test_markers_are_read(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("a\n<!-- not-run: needs ImageNet -->\n\n```sh\nfalse\n```\n```python\n"
                   "print(1)\n```\n")
    blocks = code_blocks(doc)
    assert [(b["lang"], b["not_run"], b["line"]) for b in blocks] == [
        ("sh", "needs ImageNet", 4), ("python", None, 7)]


# -- the generated reference ---------------------------------------------------------------

def _reference() -> str:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_reference
    finally:
        sys.path.remove(str(ROOT / "docs"))
    return gen_reference.render_reference()


def test_reference_names_every_layer_type_and_key():
    from netspec.dsl.parser import RECIPE_SCHEMAS
    from netspec.ir.build import layer_schema
    from netspec.ops import OPS
    text = _reference()
    sections = re.split(r"^### ", text, flags=re.M)
    by_type = {s.split("`")[1]: s for s in sections[1:]}
    assert set(by_type) >= set(OPS)
    for name, op in OPS.items():
        for key in layer_schema(op):
            assert f"| `{key}` |" in by_type[name], (name, key)
    for stmt, schema in RECIPE_SCHEMAS.items():
        for key in schema:
            assert f"| `{stmt}` | `{key}` |" in text, (stmt, key)


def test_reference_gives_the_papers_recipe_defaults():
    """§5 of the paper: batch 128, lr 0.01, momentum 0.9, weight decay 0.0005; netspec's
    plateau schedule divides by 10 after 2 evaluations without improvement, at most 3 times."""
    text = _reference()
    expected = {("`batch N`", ""): "128", ("`sgd`", "`lr`"): "0.01",
                ("`sgd`", "`momentum`"): "0.9", ("`sgd`", "`weight_decay`"): "0.0005",
                ("`schedule`", "`plateau`"): "yes", ("`schedule`", "`factor`"): "0.1",
                ("`schedule`", "`patience`"): "2", ("`schedule`", "`max_drops`"): "3",
                ("`augment`", "`flip`"): "off", ("`augment`", "`pca`"): "0",
                ("`test`", "`views`"): "1"}
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) == 4:
            rows[(cells[0], cells[1])] = cells[3]
    for key, value in expected.items():
        assert rows.get(key) == value, (key, rows.get(key))
    # the conv's defaults from ops/conv.py: stride 1, pad 0, filters and size required
    conv = text.split("### `conv`")[1].split("###")[0]
    assert "| `stride` | an integer from 1 to 2147483647 | `1` |" in conv
    assert "| `filters` | an integer from 1 to 2147483647 | required |" in conv
