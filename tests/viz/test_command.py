"""`netspec viz`: options, errors, and each figure written from a spec or a run."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from PIL import Image

from netspec.cli.viz import viz
from netspec.dsl.errors import SpecError
from netspec.errors import NetspecError, RunError
from netspec.viz.errors import VizError

from .conftest import ROOT, write_run

ALEXNET = str(ROOT / "specs" / "alexnet.net")
TINY = (ROOT / "examples" / "tiny-alexnet.net").read_text()


def _invoke(*args):
    return CliRunner().invoke(viz, [str(a) for a in args])


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "runs" / "demo", TINY)


def test_diagram_svg_and_png(tmp_path):
    res = _invoke(ALEXNET, "-o", tmp_path / "a.svg")
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output
    ET.parse(tmp_path / "a.svg")
    res = _invoke(ALEXNET, "-o", tmp_path / "a.png", "--width", 1500)
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "a.png").width == 1500


def test_bad_suffix_is_a_bad_parameter(tmp_path):
    res = _invoke(ALEXNET, "-o", tmp_path / "a.jpg")
    assert res.exit_code == 2
    assert "'-o' / '--output'" in res.output and ".svg or .png" in res.output
    assert not (tmp_path / "a.jpg").exists()


def test_spec_errors_propagate(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text(TINY.replace("filters 96", "filters 95", 1))
    res = _invoke(bad, "-o", tmp_path / "a.svg")
    assert isinstance(res.exception, SpecError)       # the CLI prints it and exits 2
    assert "cannot be split evenly" in str(res.exception)


@pytest.mark.parametrize("args, message", [
    (["--curves"], "give --run"),
    (["--filters", "conv1", "--curves", "--run", "x"], "choose one figure"),
    ([ALEXNET, "--data", "d"], "--data is for"),
    ([], "give a SPEC"),
])
def test_usage_errors(tmp_path, args, message):
    res = _invoke(*args, "-o", tmp_path / "a.png")
    assert res.exit_code == 2 and message in res.output


def test_filters_from_a_run(run_dir, tmp_path):
    res = _invoke("--run", run_dir, "-o", tmp_path / "f.png", "--filters", "conv1")
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "f.png").width >= 640


def test_filters_errors_are_one_line(run_dir, tmp_path):
    res = _invoke("--run", run_dir, "-o", tmp_path / "f.png", "--filters", "fc6")
    assert isinstance(res.exception, VizError) and "\n" not in str(res.exception)
    res = _invoke("--run", tmp_path / "nope", "-o", tmp_path / "f.png", "--curves")
    assert isinstance(res.exception, RunError)
    assert isinstance(res.exception, NetspecError)


def test_curves_from_a_run_as_svg(run_dir, tmp_path):
    res = _invoke("--run", run_dir, "-o", tmp_path / "c.svg", "--curves")
    assert res.exit_code == 0, res.output
    root = ET.parse(tmp_path / "c.svg").getroot()
    assert "tiny-alexnet · demo · learning curves" in {t.text for t in root.iter(
        "{http://www.w3.org/2000/svg}text")}


def test_run_without_a_figure_draws_its_architecture(run_dir, tmp_path):
    res = _invoke("--run", run_dir, "-o", tmp_path / "a.svg")
    assert res.exit_code == 0, res.output
    texts = {t.text for t in ET.parse(tmp_path / "a.svg").iter("{http://www.w3.org/2000/svg}text")}
    assert "tiny-alexnet" in texts


def test_spec_must_match_the_run(run_dir, tmp_path):
    res = _invoke(ALEXNET, "--run", run_dir, "-o", tmp_path / "c.png", "--curves")
    assert isinstance(res.exception, VizError) and "trained 'tiny-alexnet'" in str(res.exception)


def test_diagram_without_output_writes_network_svg_in_cwd(tmp_path, monkeypatch):
    """`netspec viz specs/alexnet.net` (no -o): alexnet.svg in the current directory, and
    the message says where (issue 18)."""
    monkeypatch.chdir(tmp_path)
    res = _invoke(ALEXNET)
    assert res.exit_code == 0, res.output
    target = tmp_path / "alexnet.svg"
    assert f"wrote {target}" in res.output
    assert ET.parse(target).getroot().tag.endswith("svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alexnet.svg"]


def test_run_figure_without_output_is_a_usage_error(tmp_path):
    res = _invoke("--run", tmp_path, "--curves")
    assert res.exit_code == 2
    assert "--curves needs -o" in res.output
