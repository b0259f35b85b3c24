"""The manual's table of layer types (docs/spec-language.md) is exactly netspec.ops.layer_table(): written from the
ops' own `doc` and `attrs`, it cannot drift from what the language accepts."""
import pathlib
import re

from netspec.ops import OPS, layer_table

README = pathlib.Path(__file__).resolve().parents[2] / "docs" / "spec-language.md"


def test_readme_holds_the_generated_table():
    text = README.read_text()
    m = re.search(r"<!-- layer-table:[^\n]*-->\n(.*?)\n<!-- end layer-table -->", text, re.S)
    assert m, "docs/spec-language.md has no layer-table markers"
    assert m.group(1) == layer_table(), \
        "docs/spec-language.md's layer table is stale: paste netspec.ops.layer_table()'s output between its markers"


def test_every_type_and_key_is_in_the_table():
    table = layer_table()
    for name, op in OPS.items():
        row = next(r for r in table.splitlines() if r.startswith(f"| `{name}` |"))
        for key in op.attrs:
            assert f"`{key}" in row, (name, key)
