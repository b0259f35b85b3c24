"""Blocks: a group of layer statements defined once and used many times with parameters,
expanded into plain statements at parse time (before anything reads them), each expanded
item keeping its source position.

    block basic(planes, stride)                   # define: a name and its parameters
      conv      c1_$name filters $planes size 3 stride $stride pad 1
      batchnorm b1_$name
      relu      r1_$name
      conv      c2_$name filters $planes size 3 pad 1
      batchnorm b2_$name
      add       $name from b2_$name, $in relu     # the residual: $in is the block's input
    end

    basic  layer1_0 planes 64 stride 1            # use: the block's name as the keyword,
    repeat 2 basic layer2 planes 128 stride 1     # N uses: layer2_1, layer2_2, chained

Inside a block, `$p` is parameter p: a word that is exactly `$p` becomes the argument itself
(its kind, its value, its position at the use, so a bad value is reported where it was
given); `$p` at the end of a longer word is replaced by the argument's text (`c1_$name`:
a parameter's name runs to the end of the word, and layer names hold no `-`). Two
parameters every use has: `$name`, the use's name, and `$in`, the layer just before the
use (the block's input, `data` at the top). A block's statements read the layer before them
as any statement does, so the first one reads the block's input, and the layer after a use
reads the block's last. `repeat N BLOCK NAME ...` is N uses named NAME_1 .. NAME_N, each
reading the one before. Blocks may use blocks defined above them (not themselves).

Why this form: it is the language's own shape (a keyword, a name, key-value pairs), so a
block reads like a layer type and its arguments get the same "did you mean" and positions;
parameters are named at the use (`planes 64 stride 2`), as every other value in the
language is, rather than by position; `$` marks what is substituted so a reader sees it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .attrs import suggest
from .errors import Collector, Pos
from .spec import Item

PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
IMPLICIT = ("name", "in")
MAX_DEPTH = 16          # blocks using blocks
MAX_REPEAT = 10_000


@dataclass
class Block:
    name: str
    params: tuple[str, ...]
    body: list            # parser.Statement
    pos: Pos


def expand_blocks(stmts: list, errs: Collector, header: tuple[str, ...]) -> list:
    """`stmts` (parser.Statement) with every block definition removed and every use replaced
    by its expanded statements; the recipe (from `train` on) is passed through. Errors go to
    `errs` at their source positions."""
    blocks: dict[str, Block] = {}
    out: list = []
    i = 0
    while i < len(stmts):
        s = stmts[i]
        if s.keyword == "train":
            out.extend(stmts[i:])
            break
        if s.keyword == "block":
            i = _define(stmts, i, blocks, errs)
            continue
        if s.keyword == "end":
            errs.error(s.pos, "'end' without a 'block' above it")
        else:
            out.extend(_expand(s, blocks, errs, header, out, 0))
        i += 1
    return out


def _define(stmts: list, i: int, blocks: dict, errs: Collector) -> int:
    s = stmts[i]
    head = s.items[0] if s.items else None
    if head is None or head.kind not in ("word", "call") or len(s.items) > 1:
        errs.error(head.pos if head else s.end, "a block is defined as 'block NAME(PARAM, "
                                                "...)' on a line of its own")
        name, params = None, ()
    elif head.kind == "word":
        name, params = head.value, ()
    else:
        name, args = head.value
        params = tuple(a.value for a in args if a.kind == "word")
        if len(params) != len(args) or len(set(params)) != len(params) or \
                set(params) & set(IMPLICIT):
            errs.error(head.pos, f"block {name}: parameters are distinct names, other than "
                                 f"{' and '.join(IMPLICIT)} (which every block has)")
    body, j = [], i + 1
    while j < len(stmts) and stmts[j].keyword not in ("end", "train", "block"):
        body.append(stmts[j])
        j += 1
    if j >= len(stmts) or stmts[j].keyword != "end":
        errs.error(s.pos, f"block {name}: no 'end' closes it")
    else:
        j += 1
    known = (*params, *IMPLICIT)
    for b in body:                      # each unknown $parameter once, where it is written
        for item in b.items:
            for w in _words(item):
                for m in PARAM.finditer(w.text):
                    if m.group(1) not in known:
                        errs.error(w.pos, f"block {name}: unknown parameter '${m.group(1)}'"
                                          f"{suggest(m.group(1), known)}; its parameters: "
                                          f"{', '.join('$' + p for p in known)}")
                        blocks.setdefault(name, None)     # its uses: no second error
                        name = None
    if name is not None:
        if name in blocks:
            errs.error(head.pos, f"block {name} is defined twice (first at "
                                 f"{blocks[name].pos})")
        elif not body:
            errs.error(head.pos, f"block {name} has no statements")
        else:
            blocks[name] = Block(name, params, body, head.pos)
    return j


def _uses(s, blocks: dict, errs: Collector) -> list[tuple[Block, Item, dict]] | None:
    """[(block, name item, arguments)] of a use or a repeat statement; None if s is
    neither; [] after an error."""
    items = s.items
    count = 1
    if s.keyword == "repeat":
        if len(items) < 2 or items[0].kind != "number" or not isinstance(items[0].value, int) \
                or not 1 <= items[0].value <= MAX_REPEAT or items[1].kind != "word":
            errs.error(items[0].pos if items else s.end,
                       f"repeat takes a count from 1 to {MAX_REPEAT} and a block: "
                       f"'repeat N BLOCK NAME ...'")
            return []
        count, keyword, items = items[0].value, items[1].value, items[2:]
        if blocks.get(keyword, 0) is None:
            return []                     # a block whose definition was refused
        if keyword not in blocks:
            errs.error(s.items[1].pos, f"repeat: unknown block '{keyword}'"
                                       f"{suggest(keyword, [b for b in blocks if blocks[b]])}")
            return []
    elif s.keyword in blocks:
        keyword = s.keyword
        if blocks[keyword] is None:
            return []
    else:
        return None
    block = blocks[keyword]
    if not items or items[0].kind != "word":
        errs.error(items[0].pos if items else s.end, f"'{keyword}' must be followed by a name")
        return []
    name, args = items[0], {}
    k = 1
    while k < len(items):
        key = items[k]
        if key.kind != "word" or key.value not in block.params:
            errs.error(key.pos, f"{name.value}: block {keyword} has no parameter '{key.text}'"
                                f"{suggest(key.text, block.params)}; its parameters: "
                                f"{', '.join(block.params) or 'none'}")
            return []
        if k + 1 >= len(items):
            errs.error(s.end if k + 1 >= len(items) else items[k + 1].pos,
                       f"{name.value}: parameter '{key.value}' needs a value")
            return []
        if key.value in args:
            errs.error(key.pos, f"{name.value}: parameter '{key.value}' is given twice")
        args[key.value] = items[k + 1]
        k += 2
    missing = [p for p in block.params if p not in args]
    if missing:
        errs.error(name.pos, f"{name.value}: block {keyword} needs "
                             f"{', '.join(repr(p) for p in missing)}")
        return []
    if count == 1 and s.keyword != "repeat":
        return [(block, name, args)]
    return [(block, replace(name, value=f"{name.value}_{n}", text=f"{name.value}_{n}"), args)
            for n in range(1, count + 1)]


def _expand(s, blocks: dict, errs: Collector, header, out: list, depth: int) -> list:
    uses = _uses(s, blocks, errs)
    if uses is None:
        for item in s.items:
            if any(PARAM.search(i.text) for i in _words(item)):
                errs.error(item.pos, f"'{item.text}': a $parameter outside a block")
                return []
        return [s]
    if depth >= MAX_DEPTH:
        errs.error(s.pos, f"blocks nested deeper than {MAX_DEPTH} (a block using itself?)")
        return []
    expanded: list = []
    for block, name, args in uses:
        prev = _last_layer(out + expanded, header)
        values = dict(args)
        values["name"] = name
        values["in"] = Item("word", prev, name.pos, prev)
        for b in block.body:
            stmt = _substitute(b, values, block, errs)
            expanded.extend(_expand(stmt, {k: v for k, v in blocks.items()
                                           if k != block.name}, errs, header,
                                    out + expanded, depth + 1))
    return expanded


def _last_layer(stmts: list, header) -> str:
    for s in reversed(stmts):
        if s.keyword not in header and s.items and s.items[0].kind == "word":
            return s.items[0].value
    return "data"


def _words(item: Item):
    if item.kind == "word":
        yield item
    elif item.kind == "list":
        for i in item.value:
            yield from _words(i)
    elif item.kind == "call":
        for i in item.value[1]:
            yield from _words(i)


def _substitute(s, values: dict, block: Block, errs: Collector):
    def sub(item: Item) -> Item:
        if item.kind == "list":
            return replace(item, value=tuple(sub(i) for i in item.value))
        if item.kind == "call":
            return replace(item, value=(item.value[0], tuple(sub(i) for i in item.value[1])))
        if item.kind != "word" or "$" not in item.text:
            return item
        whole = PARAM.fullmatch(item.text)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]

        # (every $parameter was checked when the block was defined)
        text = PARAM.sub(lambda m: values[m.group(1)].text, item.text)
        return replace(item, value=text, text=text)

    return replace(s, items=tuple(sub(i) for i in s.items))
