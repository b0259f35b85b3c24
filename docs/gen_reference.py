"""The spec language reference, generated from the definitions the parser itself reads.

Layer types and their keys come from `netspec.ops.OPS` (each op's `attrs`) and
`netspec.ir.build.layer_schema` (what a layer statement of that type accepts: the op's keys
plus `from`, placement and `groups`); the recipe's statements from
`netspec.dsl.parser.RECIPE_SCHEMAS`, their defaults from `netspec.dsl.spec.Recipe`. MkDocs
runs this as a hook (`hooks:` in mkdocs.yml), so the page is written at every build and
cannot drift from the code; `python docs/gen_reference.py` prints it.
"""
from __future__ import annotations

import dataclasses

from netspec.dsl.attrs import KIND_NAMES, value_range
from netspec.dsl.parser import INIT_SCHEMA, RECIPE_SCHEMAS
from netspec.dsl.spec import PRECISIONS, Recipe
from netspec.ir.build import layer_schema
from netspec.ops import OPS

PAGE = "reference.md"

# The recipe key -> the Recipe field holding its value (where the names differ).
RECIPE_FIELDS = {"batch": "batch_size", "at": "drop_epochs", "from": "base", "pca": "pca_sigma",
                 "views": "test_views", "every": "checkpoint_every"}
# Defaults in words where the field's value alone would mislead.
RECIPE_DEFAULT_WORDS = {"crop": "the input size (no random crop)",
                        "from": "the crop size (no random crop)",
                        "every": "epoch ends only", "at": "—", "none": "—"}


def recipe_defaults() -> dict[str, dict[str, str]]:
    """statement -> key -> its default in words ('' for a statement's own value)."""
    fields = {f.name: f.default for f in dataclasses.fields(Recipe)}
    out: dict[str, dict[str, str]] = {}
    for stmt, schema in RECIPE_SCHEMAS.items():
        keys = schema or {"": None}
        out[stmt] = {}
        for key in keys:
            name = key or stmt
            if name in RECIPE_DEFAULT_WORDS:
                out[stmt][key] = RECIPE_DEFAULT_WORDS[name]
                continue
            if stmt == "schedule" and key in ("plateau",):
                out[stmt][key] = "yes" if fields["schedule"] == "plateau" else "no"
                continue
            value = fields.get(RECIPE_FIELDS.get(name, name), dataclasses.MISSING)
            if value is dataclasses.MISSING:
                out[stmt][key] = "—"
            elif isinstance(value, bool):
                out[stmt][key] = "on" if value else "off"
            else:
                out[stmt][key] = "—" if value is None else f"{value:g}" if isinstance(
                    value, float) else str(value)
    return out


def _takes(d) -> str:
    if d.kind == "flag":
        return "no value (a flag)"
    if d.choices:
        return "one of " + ", ".join(f"`{c}`" for c in d.choices)
    if d.kind in ("int", "ints", "float"):
        text = value_range(d.kind, d.minimum, d.maximum)
        return text + (" (or a list: `a,b,...`)" if d.kind == "ints" else "")
    return KIND_NAMES.get(d.kind, d.kind)


def _default(d, key: str = "") -> str:
    if d.required:
        return "required"
    if d.default is None and key in ("weight", "bias"):
        return "the `init` statement's"
    return "—" if d.default is None else f"`{d.default}`"


def _row(*cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def render_reference() -> str:
    """The reference page's Markdown."""
    lines = ["# Spec language reference", "",
             "Generated from the code at every build (`docs/gen_reference.py`): the layer "
             "types are `netspec.ops.OPS`, the keys a layer statement takes are "
             "`netspec.ir.build.layer_schema`, the recipe's statements are "
             "`netspec.dsl.parser.RECIPE_SCHEMAS` with the defaults of "
             "`netspec.dsl.spec.Recipe`. The [spec language](spec-language.md) page says what "
             "they mean.", "",
             "## Network statements", "",
             "`network NAME`, `input CxHxW`, `classes N`, `gpus N` (1 to 128, default 1), and",
             "`init` with:", "",
             _row("key", "takes", "default"), _row("---", "---", "---")]
    for key, d in INIT_SCHEMA.items():
        lines.append(_row(f"`{key}`", _takes(d), _default(d)))
    lines += ["", "## Layer types", ""]
    for name in sorted(OPS):
        op = OPS[name]
        lines += [f"### `{name}`", ""]
        if op.doc:
            lines += [op.doc.strip(), ""]
        lines += [_row("key", "takes", "default", "meaning"), _row("---", "---", "---", "---")]
        for key, d in layer_schema(op).items():
            lines.append(_row(f"`{key}`", _takes(d), _default(d, key), d.doc))
        lines.append("")
    lines += ["## The training recipe (after `train`)", "",
              "Every statement is optional; a recipe without `augment` trains on the input "
              "size's centre crop with no flips and no colour noise.", "",
              _row("statement", "key", "takes", "default"), _row("---", "---", "---", "---")]
    defaults = recipe_defaults()
    for stmt, schema in RECIPE_SCHEMAS.items():
        if stmt == "precision":
            lines.append(_row("`precision P`", "", "one of " + ", ".join(
                f"`{p}`" for p in PRECISIONS) + " ([GPU page](gpus.md#precision))",
                defaults[stmt][""]))
        elif not schema:
            lines.append(_row(f"`{stmt} N`", "", "an integer from 1", defaults[stmt][""]))
        for key, d in schema.items():
            lines.append(_row(f"`{stmt}`", f"`{key}`", _takes(d), defaults[stmt][key]))
    return "\n".join(lines) + "\n"


def on_files(files, config):
    """MkDocs hook: add the generated page to the site."""
    from mkdocs.structure.files import File
    files.append(File.generated(config, PAGE, content=render_reference()))
    return files


if __name__ == "__main__":
    print(render_reference(), end="")
