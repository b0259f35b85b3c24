"""Spec text -> Spec. LALR parse into statements, then read each statement by its keyword.

Header statements (network, input, classes, gpus, init) and the recipe (after `train`) are the
language's own and are checked here. Layer statements are kept as items; their keys depend on
the layer type and are read in the IR.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import lark

from .attrs import INT_MAX, AttrDef, read_attrs, shown, suggest, valid, value_range
from .blocks import expand_blocks
from .errors import Collector, Diagnostic, Pos, SpecError
from .spec import PRECISIONS, Item, LayerSpec, Recipe, Spec

MAX_GPUS = 128    # logical GPUs a spec may ask for: the plan grows with their square (128: ~1 s)
HEADER = ("network", "input", "classes", "gpus", "init", "train")
INIT_SCHEMA = {"weight": AttrDef("gauss", doc="gauss(STD) or he"),
               "bias": AttrDef("float")}
RECIPE_SCHEMAS: dict[str, dict[str, AttrDef]] = {
    "batch": {},
    "epochs": {},
    "sgd": {"lr": AttrDef("float", minimum=0.0), "momentum": AttrDef("float", minimum=0.0,
                                                                      maximum=1.0),
            "weight_decay": AttrDef("float", minimum=0.0)},
    "schedule": {"plateau": AttrDef("flag"), "at": AttrDef("ints", minimum=1),
                 "none": AttrDef("flag"), "factor": AttrDef("float", minimum=0.0, maximum=1.0),
                 "patience": AttrDef("int", minimum=1), "max_drops": AttrDef("int", minimum=0)},
    "augment": {"crop": AttrDef("int", minimum=1), "from": AttrDef("int", minimum=1),
                "flip": AttrDef("flag"), "pca": AttrDef("float", minimum=0.0)},
    "test": {"views": AttrDef("int", choices=(1, 10))},
    # Caffe's `snapshot`: a checkpoint every N steps, the last K kept
    "checkpoint": {"every": AttrDef("int", minimum=1), "keep": AttrDef("int", minimum=1)},
    # the GEMMs' operand precision (one bare word, PRECISIONS): fp32, or the tensor cores' tf32
    # or bf16 operands with fp32 accumulation (kernel/gemm.py); weights and SGD stay fp32
    "precision": {},
}


@dataclass(frozen=True, slots=True)
class Statement:
    keyword: str
    pos: Pos
    items: tuple[Item, ...]
    end: Pos


# A spec line longer than this is refused before parsing: no statement needs it (a `from` of
# 1,000 layers is ~10,000 characters), and lark's parse of one would take seconds per MB.
MAX_LINE = 100_000
MAX_LINES = 500_000           # a spec's lines (2.5x the 200,000 that compile in < 20 s, < 1 GB)
MAX_SPEC_BYTES = 16 << 20     # a spec file's size: read no further (a 10 MB line still fits)


@functools.cache
def _parser() -> lark.Lark:
    """The LALR parser, with the transformer applied while parsing (no tree is built)."""
    grammar = resources.files(__package__).joinpath("netspec.lark").read_text()
    return lark.Lark(grammar, parser="lalr", transformer=_ToItems(), maybe_placeholders=False)


def _number(text: str):
    if any(c in text for c in ".eE"):
        return float(text)            # 1e999 reads as inf; the key's range check refuses it
    if len(text) > 4000:   # past int()'s digit limit, and past any key's range: compare as 10^4000
        return (-1 if text.startswith("-") else 1) * 10 ** 4000
    return int(text)


class _ToItems(lark.Transformer):
    @staticmethod
    def _pos(tok) -> Pos:
        return Pos(tok.line, tok.column)

    def word(self, c):
        return Item("word", str(c[0]), self._pos(c[0]), str(c[0]))

    def number(self, c):
        return Item("number", _number(str(c[0])), self._pos(c[0]), str(c[0]))

    def dims(self, c):
        text = str(c[0])
        return Item("dims", tuple(_number(p) for p in text.replace("×", "x").split("x")),
                    self._pos(c[0]), text)

    def call(self, c):
        name = c[0]
        args = tuple(c[1:])
        text = f"{name}({', '.join(a.text for a in args)})"
        return Item("call", (str(name), args), self._pos(name), text)

    def list(self, c):
        return Item("list", tuple(c), c[0].pos, ",".join(i.text for i in c))

    def statement(self, c):
        kw = c[0]
        return Statement(str(kw), self._pos(kw), tuple(c[1:]), Pos(kw.line, 0))

    def start(self, c):
        return [s for s in c if isinstance(s, Statement)]


def _syntax_error(e: lark.exceptions.LarkError, text: str) -> Diagnostic:
    if isinstance(e, lark.UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else "?"
        return Diagnostic(Pos(e.line, e.column), f"unexpected character {ch!r}")
    if isinstance(e, lark.UnexpectedToken):
        tok = e.token
        if tok.type == "$END":
            return Diagnostic(Pos(text.count("\n") + 1, 1), "unexpected end of file")
        what = {"LPAR": "'('", "RPAR": "')'", "COMMA": "','", "_NL": "end of line"}.get(
            tok.type, repr(str(tok)))
        hint = ""
        if tok.type in ("NUMBER", "DIMS", "LPAR", "RPAR", "COMMA"):
            hint = "; a statement starts with a keyword" if tok.type in ("NUMBER", "DIMS") \
                else "; check the brackets and commas"
        return Diagnostic(Pos(tok.line, tok.column), f"unexpected {what}{hint}")
    if isinstance(e, lark.UnexpectedEOF):
        return Diagnostic(Pos(text.count("\n") + 1, 1), "unexpected end of file")
    return Diagnostic(Pos(1, 1), f"cannot parse: {e}")


def _shift(item, lines: int):
    """An Item or Statement parsed from one line alone, moved down to its line in the file."""
    if isinstance(item, Statement):
        return Statement(item.keyword, Pos(item.pos.line + lines, item.pos.col),
                         tuple(_shift(i, lines) for i in item.items),
                         Pos(item.end.line + lines, item.end.col))
    value = item.value
    if item.kind == "list":
        value = tuple(_shift(i, lines) for i in value)
    elif item.kind == "call":
        value = (value[0], tuple(_shift(i, lines) for i in value[1]))
    return Item(item.kind, value, Pos(item.pos.line + lines, item.pos.col), item.text)


def _parse_lines(lines: list[str], recover: bool = False
                 ) -> tuple[list[Statement], list[Diagnostic]]:
    """Each line parsed alone (a statement is one line), so that a syntax error costs its
    line only and the lines after it are still read: every line's error is reported, as gcc
    and rustc do. Used once the whole-file parse has failed.

    recover: go on with a line that failed, for the later checks of the other lines (see
    load_spec_going_on): each unexpected character is reported and read as a space
    (`size=2` as `size 2`); a line that still fails is kept as its keyword and name only, so
    that the layer exists for the lines that read it."""
    stmts: list[Statement] = []
    errors: list[Diagnostic] = []
    for n, line in enumerate(lines):
        parsed, errs = _parse_line(line, recover)
        errors.extend(Diagnostic(Pos(d.pos.line + n, d.pos.col), d.message) for d in errs)
        stmts.extend(_shift(st, n) for st in parsed)
    return stmts, errors


_MAX_REPAIRS = 8                    # unexpected characters read as spaces, per line
_KEYWORD_AND_NAME = re.compile(r"[ \t\f]*([A-Za-z_][A-Za-z0-9_\-]*)(?:[ \t\f]+([A-Za-z_][A-Za-z0-9_\-]*))?")


def _parse_line(line: str, recover: bool) -> tuple[list, list[Diagnostic]]:
    errors: list[Diagnostic] = []
    text = line
    for _ in range(_MAX_REPAIRS + 1):
        try:
            return _parser().parse(text + "\n"), errors
        except lark.exceptions.LarkError as e:
            errors.append(_syntax_error(e, text))
            if not recover:
                return [], errors
            if not isinstance(e, lark.UnexpectedCharacters) or e.pos_in_stream >= len(text):
                break
            text = text[:e.pos_in_stream] + " " + text[e.pos_in_stream + 1:]
    m = _KEYWORD_AND_NAME.match(line)
    if not m:
        return [], errors
    kw = Item("word", m.group(1), Pos(1, m.start(1) + 1), m.group(1))
    items = (Item("word", m.group(2), Pos(1, m.start(2) + 1), m.group(2)),) if m.group(2) \
        else ()
    return [Statement(kw.value, kw.pos, items, Pos(1, 0))], errors


def parse_statements(text: str, path: str = "<spec>",
                     errs: Collector | None = None) -> list[Statement]:
    """The spec's statements, each with its position and the end of its line.

    Raises SpecError with every syntax error (one per line, up to the cap), a NUL byte's
    position, the lines longer than MAX_LINE characters, or more than MAX_LINES lines. With
    `errs` given, syntax errors are added to it instead and the lines are read on as
    _parse_lines(recover=True) says; their line numbers are in `errs.broken_lines`."""
    n_lines = text.count("\n") + (not text.endswith("\n"))
    if n_lines > MAX_LINES:
        # refused before anything is built per line (blank lines too)
        raise SpecError.file(f"the spec has {n_lines:,} lines; specs are at most "
                             f"{MAX_LINES:,} lines", path)
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00"))
        raise SpecError.at(Pos(line + 1, lines[line].index("\x00") + 1),
                           "this is not a text file (it contains NUL bytes)", path, text)
    long = [Diagnostic(Pos(n + 1, MAX_LINE + 1), f"line {n + 1} is {len(line):,} characters "
                                                 f"long; spec lines are at most "
                                                 f"{MAX_LINE:,}")
            for n, line in enumerate(lines) if len(line) > MAX_LINE]
    if long:
        # no caret under the line: printing it is what made it a problem
        raise SpecError(long, path, "")
    try:
        stmts = _parser().parse(text if text.endswith("\n") else text + "\n")
    except lark.exceptions.LarkError:
        stmts, errors = _parse_lines(lines, recover=errs is not None)
        if errors and errs is None:
            raise SpecError(errors, path, text) from None
        for d in errors:
            errs.error(d.pos, d.message)
        errs.broken_lines.update(d.pos.line for d in errors)
    # the end of each line, for "missing value" errors
    return [Statement(s.keyword, s.pos, s.items,
                      Pos(s.pos.line, len(lines[s.pos.line - 1]) + 1 if s.pos.line <= len(lines)
                          else 1)) for s in stmts]


def read_spec_file(path: str | os.PathLike) -> tuple[str, str]:
    """Read a spec file's text. A missing, unreadable or directory path, or a file over
    MAX_SPEC_BYTES (read no further: /dev/zero is refused at once), is a SpecError about the
    file (`FILE: error: ...`); a NUL byte, or bytes that are not UTF-8, are one at the first
    such byte's line and column."""
    p = Path(path)
    name = str(path)
    if not name:             # Path("") is the working directory
        raise SpecError.file("an empty path is not a spec file", "''")
    try:
        with p.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError.file("no such file", name) from None
    except IsADirectoryError:
        raise SpecError.file("is a directory, not a spec file", name) from None
    except PermissionError:
        raise SpecError.file("cannot read it: permission denied", name) from None
    except OSError as e:
        raise SpecError.file(f"cannot read it: {e.strerror or e}", name) from None
    def bad_byte(at: int, message: str) -> SpecError:
        start = data.rfind(b"\n", 0, at) + 1
        line = data.count(b"\n", 0, at) + 1
        col = len(data[start:at].decode("utf-8", "replace")) + 1
        return SpecError.at(Pos(line, col), message, name, data.decode("utf-8", "replace"))

    # the first bad byte: a NUL, or one that isn't UTF-8, whichever comes first
    nul = data.find(b"\0")
    try:
        text = data[:nul if nul >= 0 else MAX_SPEC_BYTES].decode("utf-8")
    except UnicodeDecodeError as e:
        if not (e.start >= len(data) - 4 and len(data) > MAX_SPEC_BYTES):   # not the cut
            raise bad_byte(e.start, f"this is not a UTF-8 text file (byte "
                                    f"0x{data[e.start]:02x})") from None
    if nul >= 0:
        raise bad_byte(nul, "this is not a text file (it contains NUL bytes)")
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError.file(f"the file is over {MAX_SPEC_BYTES >> 20} MiB; spec files are at "
                             f"most {MAX_SPEC_BYTES >> 20} MiB", name)
    return name, text.lstrip("\ufeff")


def load_spec(text: str | None = None, *, path: str | os.PathLike | None = None) -> Spec:
    """A Spec from spec text, or from the spec file at `path`: give exactly one. Text is never
    taken for a file name, nor a path for text. Errors: SpecError (FILE:LINE:COL, or <spec>
    for text); TypeError when both or neither are given."""
    if (text is None) == (path is None):
        raise TypeError("load_spec: give the spec's text, or its file as path=..., "
                        "not both or neither")
    if text is not None:
        return parse_spec(text, "<spec>")
    name, body = read_spec_file(path)
    return parse_spec(body, name)


def text_or_path(source: str | os.PathLike) -> dict:
    """The one place that reads a single "spec" argument (netspec.build, build_graph) as
    load_spec's keywords: an os.PathLike is a path; a str is spec text when it holds a newline
    (a file name never does), else a path. Returns {"text": ...} or {"path": ...}."""
    if isinstance(source, str) and "\n" in source:
        return {"text": source}
    if isinstance(source, (str, os.PathLike)):
        return {"path": source}
    raise TypeError(f"a spec is given as text or a path, not {type(source).__name__}")


def load_spec_going_on(text: str | None = None, *,
                       path: str | os.PathLike | None = None) -> tuple[Spec, Collector]:
    """load_spec for a caller that checks on (the IR build): the Spec is returned with the
    errors found so far in the Collector, so that the later checks (a layer's keys, shapes,
    the class count) report theirs with them in one run (a misspelt key, `size=2` and a
    class-count mismatch are three errors of one compile, not three compiles). A line with a
    syntax error is read on as _parse_lines(recover=True) says, and later errors on it are
    not reported (`errs.broken_lines`). SpecError here only when the header lacks what a Spec
    needs (network, input, classes)."""
    if (text is None) == (path is None):
        raise TypeError("load_spec_going_on: give the spec's text, or its file as path=..., "
                        "not both or neither")
    name, body = ("<spec>", text) if text is not None else read_spec_file(path)
    errs = Collector(name, body)
    return parse_spec(body, name, errs), errs


def parse_spec(text: str, path: str = "<spec>", errs: Collector | None = None) -> Spec:
    """The Spec of spec text. SpecError with every error found; with `errs` given, errors
    only in the recipe stay in it instead (see load_spec_going_on)."""
    going_on = errs is not None
    stmts = parse_statements(text, path, errs)
    errs = errs if going_on else Collector(path, text)
    if not stmts:
        errs.error(Pos(1, 1), "empty spec: expected 'network NAME', 'input CxHxW', "
                              "'classes N' and layers")
        errs.raise_if_any()
    stmts = expand_blocks(stmts, errs, HEADER)
    header: dict[str, object] = {}
    pos: dict[str, Pos] = {}
    layers: list[LayerSpec] = []
    recipe_stmts: list[Statement] = []
    in_train = False
    misspelt: set[str] = set()
    for s in stmts:
        if in_train:
            recipe_stmts.append(s)
            continue
        if s.keyword in HEADER:
            if s.keyword in pos:
                errs.error(s.pos, f"'{s.keyword}' is given twice (first at {pos[s.keyword]})")
                continue
            pos[s.keyword] = s.pos
            if s.keyword == "train":
                in_train = True
                if s.items:
                    errs.error(s.items[0].pos, "'train' takes no values; put the recipe on "
                                               "the lines after it")
                continue
            _read_header(s, header, pos, errs)
        else:
            _read_layer(s, layers, errs, misspelt)
    for key, what in (("network", "network NAME"), ("input", "input CxHxW"),
                      ("classes", "classes N")):
        if key not in header and key not in misspelt and key not in pos:
            errs.error(Pos(1, 1), f"missing '{what}' statement")
    recipe = _read_recipe(recipe_stmts, errs)
    if not going_on or any(k not in header for k in ("network", "input", "classes")):
        errs.raise_if_any()
    return Spec(path=path, source=text, network=header["network"],
                input_shape=header["input"], classes=header["classes"],
                gpus=header.get("gpus", 1), init_std=header.get("init_std", 0.01),
                init_bias=header.get("init_bias", 0.0), layers=tuple(layers), recipe=recipe,
                pos=pos)


def _one_value(s: Statement, kind: str, errs: Collector, what: str):
    if len(s.items) != 1 or s.items[0].kind != kind or \
            (kind == "number" and not isinstance(s.items[0].value, int)):
        where = s.items[1].pos if len(s.items) > 1 else (s.items[0].pos if s.items else s.end)
        errs.error(where, f"'{s.keyword}' takes {what}, e.g. {EXAMPLES[s.keyword]}")
        return None
    return s.items[0]


EXAMPLES = {"network": "'network alexnet'", "input": "'input 3x224x224'",
            "classes": "'classes 1000'", "gpus": "'gpus 2'", "batch": "'batch 128'",
            "epochs": "'epochs 90'", "precision": "'precision tf32'"}


def _read_network(s: Statement, header: dict, pos: dict, errs: Collector) -> None:
    it = _one_value(s, "word", errs, "one name")
    if it:
        header["network"] = it.value


def _read_input(s: Statement, header: dict, pos: dict, errs: Collector) -> None:
    it = _one_value(s, "dims", errs, "channels x height x width")
    if not it:
        return
    if len(it.value) != 3:
        errs.error(it.pos, f"'input' takes channels x height x width, got {it.text}")
    elif min(it.value) < 1:
        errs.error(it.pos, f"'input' sizes must be positive, got {it.text}")
    elif max(it.value) > INT_MAX:
        errs.error(it.pos, f"'input' sizes must be integers from 1 to {INT_MAX}, got "
                           f"{shown(it.text)}")
    else:
        header["input"] = it.value
        pos["input_value"] = it.pos


def _read_count(s: Statement, header: dict, pos: dict, errs: Collector) -> None:
    """`classes N` (2 to INT_MAX) or `gpus N` (1 to MAX_GPUS)."""
    k = s.keyword
    it = _one_value(s, "number", errs, "one integer")
    if not it:
        return
    lo, hi = (2, INT_MAX) if k == "classes" else (1, MAX_GPUS)
    if not lo <= it.value <= hi:
        errs.error(it.pos, f"'{k}' must be {value_range('int', lo, hi)}, not "
                           f"{shown(it.text)}")
    else:
        header[k] = it.value
        pos[k + "_value"] = it.pos


def _read_init(s: Statement, header: dict, pos: dict, errs: Collector) -> None:
    a = valid(read_attrs(s.items, INIT_SCHEMA, "init", errs, s.end))
    if not s.items:
        errs.error(s.end, "'init' takes 'weight gauss(STD)' (or 'weight he') and/or "
                          "'bias VALUE'")
    if "weight" in a:
        if a["weight"].value != "he" and a["weight"].value < 0:
            errs.error(a["weight"].value_pos, "init: the weight std must not be negative")
        header["init_std"] = a["weight"].value
    if "bias" in a:
        header["init_bias"] = a["bias"].value


_HEADER_READERS = {"network": _read_network, "input": _read_input, "classes": _read_count,
                   "gpus": _read_count, "init": _read_init}


def _read_header(s: Statement, header: dict, pos: dict, errs: Collector) -> None:
    reader = _HEADER_READERS.get(s.keyword)
    if reader:
        reader(s, header, pos, errs)


def _read_layer(s: Statement, layers: list, errs: Collector, misspelt: set) -> None:
    if not s.items or s.items[0].kind != "word":
        hint = suggest(s.keyword, HEADER)
        if hint:   # 'clases 10': a header keyword, misspelt
            misspelt.add(hint.split("'")[1])
            errs.error(s.pos, f"unknown statement '{s.keyword}'{hint}")
            return
        where = s.items[0].pos if s.items else s.end
        errs.error(where, f"'{s.keyword}' must be followed by a layer name, e.g. "
                          f"'{s.keyword} {s.keyword}1 ...'")
        errs.dropped_layers.add(s.pos.line)
        return
    name = s.items[0]
    if "-" in name.value:
        # kernels, buffers and generated C/CUDA/OpenCL functions are named after the layer
        # (`c1_g0_fwd`): a layer name is a C identifier. The layer is kept, so that the lines
        # reading it don't report it as unknown.
        errs.error(Pos(name.pos.line, name.pos.col + name.value.index("-")),
                   f"layer name '{name.value}': '-' is not allowed in a layer name (letters, "
                   f"digits and '_', not starting with a digit: generated kernels are named "
                   f"after it); use '{name.value.replace('-', '_')}'")
    layers.append(LayerSpec(s.keyword, name.value, s.items[1:], s.pos, name.pos))


def _recipe_count(s: Statement, a: None, values: dict, rpos: dict, errs: Collector) -> None:
    """`batch N` or `epochs N`: one integer from 1 to INT_MAX."""
    it = _one_value(s, "number", errs, "one integer")
    if it is None:
        return
    key = "batch_size" if s.keyword == "batch" else "epochs"
    if it.value < 1:
        errs.error(it.pos, f"'{s.keyword}' must be at least 1, not {it.value}")
    elif it.value > INT_MAX:
        errs.error(it.pos, f"'{s.keyword}' must be {value_range('int', 1)}, not "
                           f"{shown(it.text)}")
    else:
        values[key] = it.value
        rpos[key] = it.pos


def _copy(a: dict, values: dict, keys: dict[str, str]) -> None:
    """values[field] = a[key].value for each key -> field that the statement gave."""
    for key, name in keys.items():
        if key in a:
            values[name] = a[key].value


def _recipe_sgd(s: Statement, a: dict, values: dict, rpos: dict, errs: Collector) -> None:
    _copy(a, values, {"lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay"})


def _recipe_schedule(s: Statement, a: dict, values: dict, rpos: dict,
                     errs: Collector) -> None:
    kinds = [k for k in ("plateau", "at", "none") if k in a]
    if len(kinds) != 1:
        errs.error(s.pos, "schedule: give exactly one of 'plateau', 'at EPOCHS' or 'none'")
    else:
        values["schedule"] = {"plateau": "plateau", "at": "steps", "none": "none"}[kinds[0]]
    if "at" in a:
        values["drop_epochs"] = tuple(a["at"].value)
        if list(a["at"].value) != sorted(set(a["at"].value)):
            errs.error(a["at"].value_pos, "schedule: 'at' epochs must increase")
    _copy(a, values, {"factor": "factor", "patience": "patience", "max_drops": "max_drops"})


def _recipe_augment(s: Statement, a: dict, values: dict, rpos: dict,
                    errs: Collector) -> None:
    _copy(a, values, {"crop": "crop", "from": "base", "pca": "pca_sigma"})
    values["flip"] = "flip" in a
    if "crop" in a and "from" in a and a["from"].value < a["crop"].value:
        errs.error(a["from"].value_pos, f"augment: the crop {a['crop'].value} must fit "
                                        f"in the base size {a['from'].value}")


def _recipe_test(s: Statement, a: dict, values: dict, rpos: dict, errs: Collector) -> None:
    _copy(a, values, {"views": "test_views"})


def _recipe_checkpoint(s: Statement, a: dict, values: dict, rpos: dict,
                       errs: Collector) -> None:
    _copy(a, values, {"every": "checkpoint_every", "keep": "keep"})


def _recipe_precision(s: Statement, a: None, values: dict, rpos: dict, errs: Collector) -> None:
    """`precision fp32 | tf32 | bf16`: one word of PRECISIONS."""
    it = _one_value(s, "word", errs, f"one of {', '.join(PRECISIONS)}")
    if it is None:
        return
    if it.value not in PRECISIONS:
        errs.error(it.pos, f"'precision' is one of {', '.join(PRECISIONS)}, not "
                           f"'{it.value}'{suggest(it.value, PRECISIONS)}")
        return
    values["precision"] = it.value
    rpos["precision"] = it.pos


# recipe statement -> its reader; batch, epochs and precision take one bare value, the others
# key/value items checked against RECIPE_SCHEMAS first
_RECIPE_READERS = {"batch": _recipe_count, "epochs": _recipe_count, "sgd": _recipe_sgd,
                   "schedule": _recipe_schedule, "augment": _recipe_augment,
                   "test": _recipe_test, "checkpoint": _recipe_checkpoint,
                   "precision": _recipe_precision}
_BARE = ("batch", "epochs", "precision")


def _read_recipe(stmts: list[Statement], errs: Collector) -> Recipe:
    values: dict[str, object] = {}
    rpos: dict[str, Pos] = {}
    seen: dict[str, Pos] = {}
    for s in stmts:
        if s.keyword not in RECIPE_SCHEMAS:
            errs.error(s.pos, f"unknown recipe statement '{s.keyword}'"
                              f"{suggest(s.keyword, RECIPE_SCHEMAS)}; expected one of: "
                              f"{', '.join(RECIPE_SCHEMAS)} (layers go before 'train')")
            continue
        if s.keyword in seen:
            errs.error(s.pos, f"'{s.keyword}' is given twice (first at {seen[s.keyword]})")
            continue
        seen[s.keyword] = s.pos
        reader = _RECIPE_READERS.get(s.keyword)
        if s.keyword in _BARE:
            reader(s, None, values, rpos, errs)
            continue
        schema = RECIPE_SCHEMAS[s.keyword]
        a = valid(read_attrs(s.items, schema, s.keyword, errs, s.end))
        if not s.items:
            errs.error(s.end, f"'{s.keyword}' needs values: {', '.join(schema)}")
        for key, attr in a.items():
            rpos[key] = attr.value_pos
        if reader:
            reader(s, a, values, rpos, errs)
    return Recipe(**values, pos=rpos)
