"""netspec/ir/report.py: the training recipe in `compile`'s report, each value marked when it
is netspec's default rather than the spec's. The defaults asserted are the paper's (§5: batch
128, lr 0.01, momentum 0.9, weight decay 0.0005) and the schedule's documented ones."""
from __future__ import annotations

import json

from click.testing import CliRunner

from netspec.cli import main

SPEC = """network n
input 3x8x8
classes 2
conv c filters 2 size 3 relu
fc f outputs 2
softmax p
train
  batch 4
  sgd lr 0.05
  augment crop 8 from 10 flip
"""


def test_recipe_in_the_report_and_json(tmp_path):
    path = tmp_path / "n.net"
    path.write_text(SPEC)
    r = CliRunner().invoke(main, ["compile", "--json", str(path)])
    assert r.exit_code == 0, r.output
    rows = {(row["statement"], row["key"]): row for row in json.loads(r.stdout)["recipe"]}
    given = {("batch", ""): 4, ("sgd", "lr"): 0.05, ("augment", "crop"): 8,
             ("augment", "from"): 10, ("augment", "flip"): True}
    defaults = {("epochs", ""): 90, ("sgd", "momentum"): 0.9,
                ("sgd", "weight_decay"): 0.0005, ("schedule", ""): "plateau",
                ("schedule", "factor"): 0.1, ("schedule", "patience"): 2,
                ("schedule", "max_drops"): 3, ("augment", "pca"): 0.0,
                ("test", "views"): 1, ("checkpoint", "every"): None,
                ("checkpoint", "keep"): 1}
    for key, value in given.items():
        assert rows[key]["value"] == value and rows[key]["default"] is False, key
    for key, value in defaults.items():
        assert rows[key]["value"] == value and rows[key]["default"] is True, key

    r = CliRunner().invoke(main, ["compile", str(path)])
    assert r.exit_code == 0, r.output
    table = r.output.split("training recipe (* netspec's default: not in the spec):\n")[1]
    lines = [line.split() for line in table.strip().splitlines()]
    assert lines[0] == ["batch", "4"]
    assert lines[1] == ["epochs", "90*"]
    assert lines[2] == ["sgd", "lr", "0.05", "momentum", "0.9*", "weight_decay", "0.0005*"]
    assert lines[3] == ["schedule", "plateau*", "factor", "0.1*", "patience", "2*",
                        "max_drops", "3*"]
    assert lines[4] == ["augment", "crop", "8", "from", "10", "flip", "pca", "0*"]
