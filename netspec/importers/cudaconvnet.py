"""cuda-convnet and cuda-convnet2: a layer definition file (`layers.cfg`) and its layer
parameter file (`layer-params.cfg`), as a netspec network and training recipe.

Both are Python ConfigParser files (`[name]` sections of `key=value` lines), read here by a
small reader that keeps every key's and value's line and column; nothing in them is evaluated.
Layer types read (cuda-convnet's layer.py, `layer_parsers`): data, conv, local, pool (max,
avg), rnorm, cmrnorm, cnorm, neuron, fc, softmax, cost.logreg, eltsum, and cuda-convnet2's
concat and dropout. Everything else is refused, one error per construct at its position
(`FILE:LINE:COL: error:`), all at once, and nothing is written.

Conventions converted (each written as a comment in the spec):
- pooling: outputsX = ⌈(imgSize − start − sizeX) / stride⌉ + 1 (layer.py, PoolLayerParser):
  netspec's `ceil` (Caffe's rule, the same here since cuda-convnet requires stride <= sizeX,
  so the last window starts inside the image); the avg pool divides by the window's cells
  inside the image (conv_util.cuh, kLocalPool's regionSize), as netspec's avgpool without pad.
- conv and local: modulesX = 1 + ⌈(2·padding + imgSize − filterSize) / stride⌉; netspec sizes
  with floor, so a layer where the two differ is refused. `filters` is per group in
  cuda-convnet (layer.py: filters *= groups): netspec's filters are the total.
- rnorm and cnorm: layer.py divides `scale` by size², as netspec's rnorm/cnorm divide alpha:
  alpha = scale, beta = pow, k = minDiv (1). cmrnorm: layer.py divides scale by size, netspec's
  lrn takes the paper's undivided alpha: alpha = scale / size.
- `neuron=` on a layer is a neuron layer after it (layer.py, detach_neuron_layers: named
  `<layer>_neuron`, and the layers reading the layer read it); a relu after conv, local or fc
  is fused (`relu`). Neurons: relu, logistic, tanh[a,b], abs, softrelu, brelu[a], square,
  ident (no layer); linear[a,b] and sqrt are refused.
- softmax + cost.logreg is netspec's softmax head (mean multinomial logistic loss).
- an fc over several inputs (one weight matrix per input, summed) is netspec's fc over their
  concatenation; a conv or local over several is refused.
- layer-params: the update rule is the paper's (weights.cu: inc = mom·inc + eps·grad −
  wc·eps·w), so the first weighted layer's epsW, momW and wc are the recipe's lr, momentum
  and weight_decay, and each layer's epsW and wc are its lr_mult and decay_mult against them.
  Not expressed (netspec's rates are per layer and its momentum one): epsB, momB, a momW
  unlike the recipe's, and cuda-convnet's biases never being decayed; each is noted.

Checkpoints are Python pickles: netspec never unpickles them, so the architecture (and the
recipe) is imported alone; `--weights` with a cuda-convnet checkpoint is refused.

The image size is not in the layer file (the data provider gives it): `input_shape` (C, H, W)
is required.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..dsl.errors import Pos, SpecError
from ..errors import NetspecError
from .model import Imported, Layer, Problems, rename, valid_names
from .prototxt import read_text_file

SECTION = re.compile(r"\[([^\]]*)\]\s*$")
OPTION = re.compile(r"([^:=\s][^:=]*?)\s*[:=]\s*(.*?)\s*$")
# neuron=name or name[a,b] (layer.py's NeuronParser and ParamNeuronParser)
NEURON = re.compile(r"^\s*(\w+)\s*(?:\[\s*([^\]]*)\])?\s*$")


# -- the cfg reader ------------------------------------------------------------------------

@dataclass
class Entry:
    value: str
    pos: Pos            # of the value (of the key when the value is empty)
    key_pos: Pos


@dataclass
class Section:
    name: str
    pos: Pos
    problems: Problems
    entries: dict[str, Entry] = field(default_factory=dict)

    def where(self, key: str) -> Pos:
        e = self.entries.get(key)
        return e.pos if e else self.pos


def read_cfg(text: str, problems: Problems) -> list[Section]:
    """The sections of a ConfigParser file in order: `[name]` headers, `key=value` or
    `key: value` options (continuation lines, indented, join the value), `#` and `;` comment
    lines. Options outside a section and repeated sections are errors."""
    sections: list[Section] = []
    seen: dict[str, Section] = {}
    current: Section | None = None
    last: Entry | None = None
    for i, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if line[0] in " \t" and last is not None:           # a continuation line
            last.value += "\n" + stripped
            continue
        indent = len(line) - len(line.lstrip())
        m = SECTION.match(stripped)
        if m:
            name = m.group(1).strip()
            pos = Pos(i, indent + 2)
            if name in seen:
                problems.error(pos, f"section [{name}] given twice (first on line "
                                    f"{seen[name].pos.line})")
            current = Section(name, pos, problems)
            seen.setdefault(name, current)
            sections.append(current)
            last = None
            continue
        m = OPTION.match(stripped)
        if not m:
            problems.error(Pos(i, indent + 1), "expected [section] or key=value")
            continue
        if current is None:
            problems.error(Pos(i, indent + 1), f"option '{m.group(1)}' before any [section]")
            continue
        key = m.group(1).strip()
        col = indent + m.start(2) + 1 if m.group(2) else indent + 1
        last = Entry(m.group(2), Pos(i, col), Pos(i, indent + 1))
        current.entries[key.lower()] = last
    return sections


# -- reading values ------------------------------------------------------------------------

class Missing(Exception):
    """A value that could not be read (already reported)."""


@dataclass
class Layerdef:
    """One [section] of the layer file, with its parameters (the params file's section of the
    same name merged in, as cuda-convnet's MyConfigParser reads both)."""

    section: Section
    params: Section | None
    inputs: int = 1                 # how many inputs its per-input parameters list

    @property
    def name(self) -> str:
        return self.section.name

    def entry(self, key: str) -> tuple[Entry, Section] | None:
        for s in (self.section, self.params):
            if s is not None and key in s.entries:
                return s.entries[key], s
        return None

    def has(self, key: str) -> bool:
        return self.entry(key) is not None

    def where(self, key: str) -> Pos:
        e = self.entry(key)
        return e[0].pos if e else self.section.pos

    def error(self, key: str | None, message: str) -> None:
        e = self.entry(key) if key else None
        if e:
            e[1].problems.error(e[0].pos, f"layer '{self.name}': {message}")
        else:
            self.section.problems.error(self.section.pos, f"layer '{self.name}': {message}")

    def text(self, key: str, default: str | None = None) -> str:
        e = self.entry(key)
        if e is None:
            if default is None:
                near = [k for k in self.section.entries if k.lower().startswith(key)]
                self.error(None, f"required parameter '{key}' missing" +
                           (f" (this section has '{near[0]}'; cuda-convnet reads '{key}')"
                            if near else ""))
                raise Missing(key)
            return default
        return e[0].value

    def number(self, key: str, default=None, kind=float, lo=None, raw: str | None = None):
        if raw is None:
            raw = self.text(key, None if default is None else str(default))
        try:
            if kind is int:
                v = int(raw.strip())
            elif kind is bool:
                if raw.strip().lower() not in ("0", "1", "true", "false", "yes", "no", "on",
                                               "off"):
                    raise ValueError
                v = raw.strip().lower() in ("1", "true", "yes", "on")
            else:
                v = float(raw.strip())
                if not math.isfinite(v):
                    raise ValueError
        except ValueError:
            self.error(key, f"parameter '{key}' must be {KIND_WORDS[kind]}; got '{raw}'")
            raise Missing(key) from None
        if lo is not None and v < lo:
            self.error(key, f"parameter '{key}' must be at least {lo}; got {raw.strip()}")
            raise Missing(key)
        return v

    def single(self, key: str, default=None, kind=float, lo=None):
        """A parameter cuda-convnet takes per input (a ','-list): one value here, since a
        netspec layer has one (a list of one value per input, all equal, is that value)."""
        raw = self.text(key, None if default is None else str(default))
        if "," in raw:
            values = {v.strip() for v in raw.split(",")}
            if len(raw.split(",")) != self.inputs or len(values) != 1:
                self.error(key, f"parameter '{key}' lists {raw}: netspec's layer has one value "
                                f"for all of its {self.inputs} input(s)")
                raise Missing(key)
            raw = values.pop()
        return self.number(key, default, kind, lo, raw)


KIND_WORDS = {int: "an integer", float: "a number", bool: "0 or 1"}


# -- converting ----------------------------------------------------------------------------

@dataclass
class Cx:
    """The conversion so far: netspec layers, the netspec name and shape of each cfg layer's
    output (after its neuron), which cfg layer holds the labels, and the learning rates."""

    input_shape: tuple[int, int, int] | None
    layers: list[Layer] = field(default_factory=list)
    out: dict[str, str] = field(default_factory=dict)          # cfg name -> netspec name
    shapes: dict[str, tuple] = field(default_factory=dict)      # netspec name -> shape
    labels: set[str] = field(default_factory=set)
    rates: list[tuple[Layer, Layerdef]] = field(default_factory=list)
    softmax: Layer | None = None
    costs: int = 0
    failed: set[str] = field(default_factory=set)   # cfg layers refused: readers say nothing

    def last_name(self) -> str:
        return self.layers[-1].name if self.layers else "data"

    def add(self, layer: Layer, shape, inputs: list[str]) -> None:
        if inputs != [self.last_name()]:
            layer.inputs = list(inputs)
        self.layers.append(layer)
        self.shapes[layer.name] = shape


def _inputs(d: Layerdef, cx: Cx, count: int | None = 1) -> list[str]:
    """The netspec names of the layer's inputs (`inputs=a,b`), checked to exist."""
    names = [n.strip() for n in d.text("inputs").split(",")]
    if count is not None and len(names) != count:
        d.error("inputs", f"{len(names)} inputs; this layer type reads {count}")
        raise Missing("inputs")
    out = []
    for n in names:
        if n in cx.failed:
            raise Missing("inputs")
        if n in cx.labels:
            d.error("inputs", f"reads the labels '{n}'; only cost.logreg does")
            raise Missing("inputs")
        if n not in cx.out:
            close = difflib.get_close_matches(n, list(cx.out), n=1)
            d.error("inputs", f"input '{n}' is not a layer defined above"
                              + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise Missing("inputs")
        out.append(cx.out[n])
    return out


def _maps(d: Layerdef, cx: Cx, src: str) -> tuple[int, int, int]:
    shape = cx.shapes[src]
    if len(shape) != 3:
        d.error("inputs", f"reads '{src}', a vector of {shape[0]}; this layer type reads maps")
        raise Missing("inputs")
    if d.has("channels"):
        c = d.single("channels", kind=int, lo=1)
        if c != shape[0]:
            d.error("channels", f"channels={c}, but its input '{src}' has {shape[0]} channels")
    return shape


def _neuron(d: Layerdef, cx: Cx, name: str, text: str, fusable: Layer | None) -> None:
    """The neuron `text` applied to layer `name`'s output: fused (relu on conv/local/fc), a
    neuron layer after it, or nothing (ident)."""
    m = NEURON.match(text)
    kind, args = (m.group(1), m.group(2)) if m else (text, None)
    values: list[float] = []
    if args:
        try:
            values = [float(a) for a in args.split(",")]
        except ValueError:
            d.error("neuron", f"neuron '{text}': its parameters must be numbers")
            return
    conv = NEURONS.get(kind)
    if conv is None or len(values) != conv[1]:
        why = REFUSED_NEURONS.get(kind, f"unknown neuron '{text}'")
        d.error("neuron", why if conv is None else f"neuron {kind} takes {conv[1]} parameters")
        return
    if kind == "ident":
        return
    if kind == "relu" and fusable is not None:
        fusable.relu = True
        return
    src = cx.out[name]
    layer = Layer(conv[0], f"{name}_neuron", dict(zip(conv[2], values)),
                  source=f"{name}'s neuron={text}",
                  notes=[f"{name}'s neuron={text}: a neuron layer after it, as cuda-convnet's "
                         f"detach_neuron_layers makes"])
    cx.add(layer, cx.shapes[src], [src])
    cx.out[name] = layer.name


# neuron -> (netspec type, parameter count, netspec attribute names)
NEURONS = {"relu": ("relu", 0, ()), "logistic": ("logistic", 0, ()), "abs": ("abs", 0, ()),
           "softrelu": ("softrelu", 0, ()), "square": ("square", 0, ()),
           "tanh": ("tanh", 2, ("a", "b")), "brelu": ("brelu", 1, ("a",)),
           "ident": ("", 0, ())}
REFUSED_NEURONS = {
    "linear": "neuron linear[a,b]: netspec has no a·x + b layer",
    "sqrt": "neuron sqrt: netspec has no square-root layer",
    "log": "neuron log[a]: netspec has no log layer",
    "abstanh": "neuron abstanh[a,b]: netspec has no |tanh| layer",
}


def _rates_and_init(layer: Layer, d: Layerdef, cx: Cx) -> None:
    layer.attrs["weight"] = f"gauss({d.single('initw', 0.01, lo=0.0):.9g})"
    b = d.number("initb", 0.0)
    if b:
        layer.attrs["bias"] = b
    for key in ("initwfunc", "initbfunc"):
        if d.has(key):
            layer.notes.append(f"{key}={d.text(key)} not run (it names Python code): "
                               f"netspec's gauss init instead")
    if d.has("weightsource"):
        d.error("weightsource", "weight sharing (weightSource): netspec's layers own their "
                                "weights")
    cx.rates.append((layer, d))


def convert_conv(d: Layerdef, cx: Cx, kind: str = "conv") -> None:
    (src,) = _inputs(d, cx)
    c, h, w = _maps(d, cx, src)
    k = d.single("filtersize", kind=int, lo=1)
    pad = d.single("padding", 0, kind=int, lo=0)
    stride = d.single("stride", 1, kind=int, lo=1)
    groups = d.single("groups", 1, kind=int, lo=1)
    filters = d.single("filters", kind=int, lo=1)
    if d.has("randsparse") and d.single("randsparse", kind=bool):
        d.error("randsparse", "random sparse connectivity (randSparse): netspec's groups "
                              "read consecutive channels")
    if kind == "conv" and not d.number("sharedbiases", 1, kind=bool):
        d.error("sharedbiases", "sharedBiases=0 (a bias per output pixel): netspec's conv "
                                "has one bias per filter")
    if k > h + 2 * pad or k > w + 2 * pad:
        d.error("filtersize", f"filterSize {k} is larger than the padded input {h + 2 * pad}")
        raise Missing("filtersize")
    ceil_out = 1 + -(-(2 * pad + h - k) // stride)
    floor_out = (h + 2 * pad - k) // stride + 1
    if ceil_out != floor_out:
        d.error("stride", f"cuda-convnet sizes {kind} output with ceil, 1 + ceil((2*{pad} + "
                          f"{h} - {k}) / {stride}) = {ceil_out}; netspec's with floor "
                          f"({floor_out}), and has no ceil {kind}")
    layer = Layer(kind, d.name, {"filters": filters * groups, "size": k},
                  source=f"{d.name} ({kind})")
    if stride != 1:
        layer.attrs["stride"] = stride
    if pad:
        layer.attrs["pad"] = pad
    if groups > 1:
        layer.attrs["groups"] = groups
        layer.notes.append(f"filters={filters} groups={groups}: cuda-convnet's filters are "
                           f"per group, netspec's the total {filters * groups}")
    if "partialsum" in d.section.entries:
        layer.notes.append("partialSum (a speed setting of cuda-convnet's kernels) dropped")
    _rates_and_init(layer, d, cx)
    if c % groups:
        d.error("groups", f"groups={groups} does not divide the input's {c} channels")
    cx.add(layer, (filters * groups, floor_out, (w + 2 * pad - k) // stride + 1), [src])
    cx.out[d.name] = layer.name
    _after(d, cx, layer)


def convert_local(d: Layerdef, cx: Cx) -> None:
    convert_conv(d, cx, "local")


def convert_fc(d: Layerdef, cx: Cx) -> None:
    srcs = _inputs(d, cx, None)
    d.inputs = len(srcs)
    shapes = [cx.shapes[s] for s in srcs]
    if len({len(sh) for sh in shapes}) > 1 or len({sh[1:] for sh in shapes}) > 1:
        d.error("inputs", f"inputs of shapes {', '.join('x'.join(map(str, sh)) for sh in shapes)}"
                          f": netspec's fc concatenates its inputs along channels, so their maps "
                          f"(or vectors) must match")
        raise Missing("inputs")
    n = d.single("outputs", kind=int, lo=1)
    layer = Layer("fc", d.name, {"outputs": n}, source=f"{d.name} (fc)")
    if len(srcs) > 1:
        layer.notes.append(f"inputs={d.text('inputs')}: cuda-convnet sums one weight matrix per "
                           f"input, which is one fc over their concatenation (channel-major, "
                           f"input by input)")
    _rates_and_init(layer, d, cx)
    cx.add(layer, (n,), srcs)
    cx.out[d.name] = layer.name
    _after(d, cx, layer)


def _after(d: Layerdef, cx: Cx, layer: Layer | None) -> None:
    text = d.text("neuron", "").strip()
    if text:
        fusable = layer if layer is not None and layer.type in ("conv", "local", "fc") else None
        _neuron(d, cx, d.name, text, fusable)


def convert_pool(d: Layerdef, cx: Cx) -> None:
    (src,) = _inputs(d, cx)
    c, h, w = _maps(d, cx, src)
    how = d.text("pool").strip()
    if how not in ("max", "avg"):
        d.error("pool", f"pool={how}: netspec pools by max or avg")
        raise Missing("pool")
    z = d.number("sizex", kind=int, lo=1)
    s = d.number("stride", kind=int, lo=1)
    start = d.number("start", 0, kind=int)
    given = d.number("outputsx", 0, kind=int, lo=0)
    if start:
        d.error("start", f"start={start}: netspec's pools start at the image's corner")
    if s > z:
        d.error("stride", f"stride {s} > sizeX {z}: cuda-convnet refuses it too")
        raise Missing("stride")
    out = -(-(h - start - z) // s) + 1
    if given and given != out:
        d.error("outputsx", f"outputsX={given}, not the {out} windows that cover the image")
    layer = Layer(f"{how}pool", d.name, {"size": z, "stride": s},
                  source=f"{d.name} (pool={how})")
    if (h - z) // s + 1 != out:
        layer.attrs["ceil"] = True
        layer.notes.append(f"cuda-convnet sizes pools with ceil: ceil(({h} - {z}) / {s}) + 1 "
                           f"= {out} (floor gives {(h - z) // s + 1})")
    cx.add(layer, (c, out, -(-(w - z) // s) + 1), [src])
    cx.out[d.name] = layer.name
    _after(d, cx, layer)


def convert_norm(d: Layerdef, cx: Cx, kind: str) -> None:
    (src,) = _inputs(d, cx)
    shape = _maps(d, cx, src)
    n = d.number("size", kind=int, lo=1)
    scale = d.number("scale", lo=0.0)
    power = d.number("pow", lo=0.0)
    k = d.number("mindiv", 1.0, lo=0.0)
    if kind == "cmrnorm":
        if d.has("blocked") and d.number("blocked", kind=bool):
            d.error("blocked", "blocked cross-map windows: netspec's lrn window slides")
        if n % 2 == 0:
            d.error("size", f"size {n}: netspec's lrn centres its window on the map, so its "
                            f"size is odd")
        layer = Layer("lrn", d.name, {"size": n, "alpha": scale / n, "beta": power, "k": k},
                      source=f"{d.name} (cmrnorm)",
                      notes=[f"scale={scale:g}: cuda-convnet divides it by size for cmrnorm "
                             f"(layer.py); netspec's lrn takes the paper's undivided alpha, "
                             f"scale/size"])
    else:
        layer = Layer(kind, d.name, {"size": n, "alpha": scale, "beta": power},
                      source=f"{d.name} ({kind})",
                      notes=[f"scale={scale:g} pow={power:g} as alpha and beta: cuda-convnet and "
                             f"netspec both divide it by size²"])
        if k != 1.0:
            layer.attrs["k"] = k
    cx.add(layer, shape, [src])
    cx.out[d.name] = layer.name
    _after(d, cx, layer)


def convert_rnorm(d, cx):
    convert_norm(d, cx, "rnorm")


def convert_cnorm(d, cx):
    convert_norm(d, cx, "cnorm")


def convert_cmrnorm(d, cx):
    convert_norm(d, cx, "cmrnorm")


def convert_neuron(d: Layerdef, cx: Cx) -> None:
    (src,) = _inputs(d, cx)
    cx.out[d.name] = src                       # ident: the layers reading it read its input
    before = len(cx.layers)
    _neuron(d, cx, d.name, d.text("neuron").strip(), None)
    if len(cx.layers) > before:               # a neuron layer of its own keeps its name
        layer = cx.layers[-1]
        cx.shapes[d.name] = cx.shapes.pop(layer.name)
        layer.name, layer.source, layer.notes = d.name, f"{d.name} (neuron)", []
        cx.out[d.name] = d.name


def convert_softmax(d: Layerdef, cx: Cx) -> None:
    (src,) = _inputs(d, cx)
    layer = Layer("softmax", d.name, source=f"{d.name} (softmax)")
    cx.add(layer, cx.shapes[src], [src])
    cx.out[d.name] = layer.name
    cx.softmax = layer


def convert_logreg(d: Layerdef, cx: Cx) -> None:
    names = [n.strip() for n in d.text("inputs").split(",")]
    if cx.failed & set(names):
        return
    if len(names) != 2 or names[0] not in cx.labels:
        d.error("inputs", "cost.logreg reads the labels, then the softmax (inputs=labels,probs)")
        return
    if cx.softmax is None or cx.out.get(names[1]) != cx.softmax.name:
        d.error("inputs", f"cost.logreg's second input '{names[1]}' is not the softmax")
        return
    coeff = d.number("coeff", 1.0)
    if coeff != 1.0:
        d.error("coeff", f"coeff={coeff:g}: netspec's loss has weight 1")
    cx.softmax.notes.append(f"with cost.logreg '{d.name}': netspec's softmax is the head and "
                            f"its loss the mean multinomial logistic loss")
    cx.costs += 1


def _joined(d: Layerdef, cx: Cx, kind: str) -> None:
    srcs = _inputs(d, cx, None)
    shapes = {cx.shapes[s] for s in srcs}
    if len(srcs) < 2:
        d.error("inputs", f"{kind} of one input")
        raise Missing("inputs")
    if kind == "concat":
        first = cx.shapes[srcs[0]]
        shape = (sum(cx.shapes[s][0] for s in srcs), *first[1:])
    else:
        if len(shapes) != 1:
            d.error("inputs", f"inputs of different shapes {sorted(shapes)}")
            raise Missing("inputs")
        shape = cx.shapes[srcs[0]]
    layer = Layer(kind, d.name, source=f"{d.name} ({d.text('type').strip()})")
    cx.add(layer, shape, srcs)
    layer.inputs = list(srcs)
    cx.out[d.name] = layer.name
    _after(d, cx, layer)


def convert_eltsum(d: Layerdef, cx: Cx) -> None:
    if d.has("coeffs"):
        coeffs = [c.strip() for c in d.text("coeffs").split(",")]
        if any(c not in ("1", "1.0", "1.") for c in coeffs):
            d.error("coeffs", f"coeffs={d.text('coeffs')}: netspec's add weighs its inputs "
                              f"equally")
    _joined(d, cx, "add")


def convert_concat(d: Layerdef, cx: Cx) -> None:
    _joined(d, cx, "concat")


def convert_dropout(d: Layerdef, cx: Cx) -> None:
    (src,) = _inputs(d, cx)
    keep = d.number("keep", 0.5)
    if not 0.0 < keep <= 1.0:
        d.error("keep", f"keep={keep:g}: a probability in (0, 1]")
        raise Missing("keep")
    layer = Layer("dropout", d.name, {"p": 1.0 - keep}, source=f"{d.name} (dropout)",
                  notes=[f"keep={keep:g}: p = 1 - keep; cuda-convnet2's dropout scales the kept "
                         f"units by 1/keep while training (layer.cu, DropoutLayer), as "
                         f"netspec's does"])
    cx.add(layer, cx.shapes[src], [src])
    cx.out[d.name] = layer.name


CONVERT = {"conv": convert_conv, "local": convert_local, "fc": convert_fc,
           "pool": convert_pool, "rnorm": convert_rnorm, "cnorm": convert_cnorm,
           "cmrnorm": convert_cmrnorm, "neuron": convert_neuron, "softmax": convert_softmax,
           "cost.logreg": convert_logreg, "eltsum": convert_eltsum, "concat": convert_concat,
           "dropout": convert_dropout}
REFUSED = {
    "eltmax": "eltmax: netspec has no element-wise max layer",
    "dropout2": "dropout2 (scales at test time, not while training): netspec's dropout is "
                "inverted",
    "cost.sum2": "cost.sum2 (a sum-of-squares cost): netspec's head is softmax + logistic loss",
    "cost.crossent": "cost.crossent: netspec's loss reads the softmax as cost.logreg does",
    "cost.binomialcrossent": "cost.binomialcrossent: netspec's head is softmax + logistic loss",
    "cost.logreg.multiview": "multi-view logreg: netspec's test views are in its recipe",
    "cmpool": "cross-map pooling (cmpool): netspec pools within maps",
    **{t: f"{t}: cuda-convnet's in-network image processing ({what}); netspec's data pipeline "
          f"does its preprocessing" for t, what in (
              ("blur", "a Gaussian blur"), ("nailbed", "a bed-of-nails subsampling"),
              ("resize", "a resize"), ("rgb2yuv", "a colour transform"),
              ("rgb2lab", "a colour transform"), ("rscale", "a random rescale"))},
}


def convert_data(d: Layerdef, cx: Cx) -> None:
    idx = d.number("dataidx", kind=int, lo=0)
    if idx == 0:
        cx.out[d.name] = "data"
        if cx.input_shape is None:
            d.error(None, "cuda-convnet's layer file does not give the image size (its data "
                          "provider does): give it as --input CxHxW (3x32x32 for CIFAR-10)")
            raise Missing("input")
    elif idx == 1:
        cx.labels.add(d.name)
    else:
        d.error("dataidx", f"dataIdx={idx}: netspec's data is the image (0) and its label (1)")


CONVERT["data"] = convert_data


def _convert(defs: list[Layerdef], cx: Cx) -> None:
    for d in defs:
        try:
            kind = d.text("type").strip()
        except Missing:
            continue
        fn = CONVERT.get(kind)
        if fn is None:
            why = REFUSED.get(kind)
            if why is None:
                close = difflib.get_close_matches(kind, list(CONVERT), n=1)
                why = f"unknown layer type '{kind}'" + (f" (did you mean '{close[0]}'?)"
                                                        if close else "")
            d.error("type", why)
            cx.failed.add(d.name)
            continue
        if cx.costs and kind != "cost.logreg":
            d.error("type", "a layer after the cost: netspec's softmax is the network's head")
            cx.failed.add(d.name)
            continue
        try:
            fn(d, cx)
        except Missing:
            cx.failed.add(d.name)


# -- the recipe ----------------------------------------------------------------------------

def recipe(cx: Cx, have_params: bool) -> tuple[list[str], list[str]]:
    """The train recipe's lines and the header notes, from the layers' epsW, momW and wc
    (the first weighted layer's are the recipe's); each layer's lr_mult and decay_mult."""
    if not have_params or not cx.rates:
        return [], ["no layer-params file: the recipe is netspec's default"] if cx.rates else []
    rows = []
    for layer, d in cx.rates:
        try:
            rows.append((layer, d, d.single("epsw", lo=0.0), d.number("epsb", lo=0.0),
                         d.single("momw", lo=0.0), d.number("momb", lo=0.0),
                         d.single("wc", lo=0.0)))
        except Missing:
            continue
    if not rows:
        return [], []
    lr = next((r[2] for r in rows if r[2] > 0), 0.0)
    mom = rows[0][4]
    wd = next((r[6] for r in rows if r[6] > 0), 0.0)
    for layer, _, epsw, epsb, momw, momb, wc in rows:
        if lr and epsw != lr:
            layer.attrs["lr_mult"] = epsw / lr
        if wd and wc != wd:
            layer.attrs["decay_mult"] = wc / wd
        if epsb != epsw:
            layer.notes.append(f"epsB={epsb:g} not expressed: netspec's rate is per layer, "
                               f"so the biases learn at epsW={epsw:g}")
        if momw != mom or momb != momw:
            layer.notes.append(f"momW={momw:g} momB={momb:g} not expressed: netspec has one "
                               f"momentum, {mom:g}")
    lines = ["train", "  batch    128", f"  sgd      lr {lr:.9g} momentum {mom:.9g} "
                                       f"weight_decay {wd:.9g}"]
    notes = [f"recipe: the first weighted layer's epsW {lr:g}, momW {mom:g} and wc {wd:g} as "
             f"lr, momentum and weight_decay (cuda-convnet's update is the same rule); the "
             f"others' as lr_mult and decay_mult",
             "not expressed: cuda-convnet never decays biases, netspec's weight decay applies "
             "to a layer's bias as to its weights; batch 128 is cuda-convnet's --mini default"]
    return lines, notes


# -- the whole file ------------------------------------------------------------------------

class BothFiles(SpecError):
    """The errors of the layer file and of the params file, reported together."""

    def __init__(self, errors: list[SpecError]):
        self.parts = errors
        self.diagnostics = [d for e in errors for d in e.diagnostics]
        self.truncated = sum(e.truncated for e in errors)
        self.path, self.source = errors[0].path, errors[0].source
        NetspecError.__init__(self, self.render())

    def render(self) -> str:
        out = [e.render().rsplit("\n", 1)[0] for e in self.parts]
        n = len(self.diagnostics) + self.truncated
        return "\n".join(out + [f"{n} error{'s' if n != 1 else ''}"])


def _raise_all(problems: list[Problems]) -> None:
    errors = [SpecError(p.diagnostics, p.path, p.source) for p in problems if p.diagnostics]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise BothFiles(errors)


def is_layer_file(path) -> bool:
    """Whether a .cfg file is a cuda-convnet layer file (sections named by the user, each
    saying its `type=`), not a darknet cfg (which starts with its [net] or [network] section,
    the others named by their type; only its [cost] says `type=`)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")[:65536]
    except OSError:
        return False
    first = re.search(r"(?m)^\s*\[([^\]]*)\]", text)
    if first is None or first.group(1).strip().lower() in ("net", "network"):
        return False
    return re.search(r"(?m)^\s*type\s*[=:]", text) is not None


def import_cudaconvnet(path, params=None, input_shape=None, weights=None) -> Imported:
    """The network of a cuda-convnet layer file `path`, with the learning rates of its
    layer-params file `params` as the recipe. input_shape: (C, H, W) of the images (the
    layer file doesn't say). SpecError listing every construct netspec can't express, in
    both files; `weights` (a checkpoint: a Python pickle) is refused, never opened."""
    if weights is not None:
        raise SpecError.file("cuda-convnet checkpoints are Python pickles, and netspec never "
                             "unpickles a file: import the layer files alone (the architecture "
                             "and recipe) and train, or convert the weights yourself",
                             str(weights))
    text = read_text_file(path)
    lp = Problems(str(path), text)
    sections = read_cfg(text, lp)
    pp, psections = None, {}
    if params is not None:
        ptext = read_text_file(params)
        pp = Problems(str(params), ptext)
        psections = {s.name: s for s in read_cfg(ptext, pp)}
    defs = [Layerdef(s, psections.get(s.name)) for s in sections]
    cx = Cx(tuple(input_shape) if input_shape else None)
    if cx.input_shape:
        cx.shapes["data"] = cx.input_shape
    _convert(defs, cx)
    if not lp.diagnostics and (cx.softmax is None or cx.layers[-1] is not cx.softmax):
        lp.error(sections[-1].pos if sections else Pos(1, 1),
                 "the network does not end in a softmax (with cost.logreg): netspec's "
                 "head is a softmax")
    lines, notes = recipe(cx, params is not None)
    _raise_all([p for p in (lp, pp) if p is not None])
    rename(cx.layers)
    notes.append("cuda-convnet's data mean is in its data provider's batches.meta, a pickle: "
                 "not read (netspec's data pipeline subtracts the mean of the data it prepares)")
    orphans = sorted(set(psections) - {s.name for s in sections})
    if orphans:
        notes.append(f"layer-params sections without a layer, ignored as cuda-convnet does: "
                     f"{', '.join(orphans)}")
    imp = Imported("cuda-convnet", [str(p) for p in (path, params) if p is not None],
                   valid_names([Path(path).stem])[0], cx.input_shape, cx.layers, notes)
    imp.recipe = lines
    return imp
