"""darknet: a `.cfg` network and its `.weights` (pjreddie/darknet, src/parser.c), as a
netspec network.

The cfg is INI-like: `[section]` lines, then `key=value` lines; `#` and `;` start comments.
`[net]` gives the input (width, height, channels); every later section is one darknet layer,
numbered from 0, which [route] and [shortcut] name by index (negative: counted back from
the layer itself). Sections and their netspec forms:

    [convolutional]  filters size stride pad|padding groups batch_normalize activation
                     conv (+ batchnorm with the layer's biases as its shift) (+ activation)
    [connected]      output batch_normalize activation     fc (+ batchnorm) (+ activation)
    [maxpool]        size stride padding                   maxpool pad (ceil), see below
    [avgpool]                                              avgpool global
    [dropout]        probability                           dropout p
    [softmax]        groups=1                              softmax
    [shortcut]       from activation                       add from a, b (+ activation)
    [route]          layers                                concat from ... (one: a `from`)
    [crop]           crop_width crop_height                the input size; see below
    [cost]                                                 nothing (training only)
    activation: linear (none), relu (fused into conv/fc), leaky (0.1), logistic, tanh, relu6

The .weights file: int32 major, minor, revision; `seen` as int64 when major·10 + minor >= 2
(and both < 1000), else int32; then float32 arrays, layer by layer in cfg order: a
convolutional's biases[n], with batch_normalize its scales[n], rolling means[n] and rolling
variances[n], then weights[n·c/groups·size·size] ((n, c/groups, size, size): netspec's
layout); a connected's biases[out], weights[out·in] (row-major out × in; transposed when
major or minor >= 1000), then with batch_normalize scales, means, variances.

Conventions converted (each written as a comment in the spec):
- input scale: darknet reads pixels / 255 (0..1); netspec's pipeline gives 0..255, so the
  first weighted layer's weight is divided by 255;
- [crop] at test time takes the central crop and maps 0..1 to −1..1 (2x − 1, unless
  noadjust=1): the network's input is the crop, the mean image is 127.5 everywhere, at the
  [net] size, and the weight is scaled by 2/255 instead;
- maxpool: darknet's `padding` (default size − 1) frames the input with padding/2 cells at
  the top and left and the rest at the bottom and right, output (W + padding − size) /
  stride + 1; netspec's equal frame `pad` padding/2 with floor (even padding) or ceil sizing
  (odd), where that gives the same windows, else refused;
- batchnorm: darknet divides by sqrt(variance) + 1e-6 (pjreddie) or sqrt(variance + 1e-5)
  (AlexeyAB); netspec's batchnorm eps 1e-6 inside the root (the difference is below 1e-6
  relative for variances over 1e-3);
- darknet reads RGB, as netspec's pipeline does.

Problems in the cfg are `FILE:LINE:COL: error:` with a caret, all at once; in the weights
file `FILE: error:` naming the layer.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dsl.errors import Pos, SpecError
from .model import Imported, Layer, Problems, valid_names

ACTIVATIONS = {"linear": None, "relu": "relu", "leaky": "leaky", "logistic": "logistic",
               "tanh": "tanh", "relu6": "brelu"}
REFUSED_ACTIVATIONS = {
    "ramp": "x·(x > 0) + 0.1·x", "relie": "x > 0 ? x : 0.01·x", "elu": "elu",
    "selu": "selu", "plse": "piecewise-linear logistic", "loggy": "2·logistic(x) − 1",
    "stair": "stair", "hardtan": "clip(x, −1, 1)", "lhtan": "leaky hardtan",
    "mish": "x·tanh(softplus(x))", "swish": "x·logistic(x)"}
COMING: dict[str, str] = {}      # sections netspec will bring: their refusal says so


@dataclass
class Section:
    """One `[name]` of the cfg, its options with the position of each value."""

    name: str
    pos: Pos
    index: int                          # the darknet layer index ([net] is -1)
    options: dict = field(default_factory=dict)  # key -> (value text, its Pos, the key's)
    used: set = field(default_factory=set)

    def get(self, key: str, default=None, kind=int):
        self.used.add(key)
        if key not in self.options:
            return default
        text, pos, _ = self.options[key]
        try:
            return kind(float(text)) if kind is int and re.fullmatch(r"-?\d+(\.0*)?", text) \
                else kind(text)
        except ValueError:
            raise _BadValue(pos, f"[{self.name}] {key}={text}: not a number") from None

    def where(self, key: str) -> Pos:
        return self.options[key][1] if key in self.options else self.pos


class _BadValue(Exception):
    def __init__(self, pos, message):
        super().__init__(message)
        self.pos = pos


def parse_cfg(text: str, problems: Problems) -> list[Section]:
    """The sections of a cfg file, in order, with every value's line and column."""
    sections: list[Section] = []
    for n, raw in enumerate(text.split("\n"), 1):
        line = re.split(r"[#;]", raw.rstrip("\r"), maxsplit=1)[0]
        stripped = line.strip()
        if not stripped:
            continue
        col = len(line) - len(line.lstrip()) + 1
        if stripped.startswith("["):
            m = re.fullmatch(r"\[\s*([A-Za-z_0-9]+)\s*\]", stripped)
            if not m:
                problems.error(Pos(n, col), f"'{stripped}': a section header is [name]")
                continue
            sections.append(Section(m.group(1).lower(), Pos(n, col), len(sections) - 1))
            continue
        if "=" not in stripped:
            problems.error(Pos(n, col), f"'{stripped}': an option is key=value")
            continue
        if not sections:
            problems.error(Pos(n, col), "an option before the first [section]")
            continue
        key, value = (s.strip() for s in stripped.split("=", 1))
        vcol = line.index("=") + 2 + (len(line.split("=", 1)[1]) -
                                      len(line.split("=", 1)[1].lstrip()))
        sections[-1].options[key.replace(" ", "")] = (value, Pos(n, vcol), Pos(n, col))
    return sections


@dataclass
class Ref:
    """A darknet layer's output in netspec's terms: the layer name and shape (C, H, W) or
    (n,)."""

    name: str
    shape: tuple


@dataclass
class Reader:
    problems: Problems
    layers: list[Layer] = field(default_factory=list)
    outs: list[Ref | None] = field(default_factory=list)    # per darknet layer index
    counts: dict = field(default_factory=dict)
    weighted: list = field(default_factory=list)     # (section, conv/fc layer, bn layer)
    local_maps: dict = field(default_factory=dict)   # [local] layer -> (out_h, out_w)
    notes: list[str] = field(default_factory=list)
    crop: tuple | None = None

    def name(self, kind: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return f"{kind}{self.counts[kind]}"

    def current(self) -> Ref | None:
        return self.outs[-1] if self.outs else None

    def append(self, layer: Layer, src: list[Ref], shape: tuple, sec: Section) -> Ref:
        last = self.layers[-1].name if self.layers else "data"
        if [r.name for r in src] != [last]:
            layer.inputs = [r.name for r in src]
        layer.pos = sec.pos
        layer.source = f"[{sec.name}] layer {sec.index} (line {sec.pos.line})"
        self.layers.append(layer)
        return Ref(layer.name, shape)

    def activation(self, sec: Section, ref: Ref, base: Layer | None) -> Ref:
        """The section's activation after `ref`: fused into `base` (a conv or fc without
        batchnorm) where it is relu, else its own layer."""
        # darknet's default: logistic for convolutional and connected, linear for shortcut
        act = sec.get("activation", "linear" if sec.name == "shortcut" else "logistic", str)
        kind = ACTIVATIONS.get(act)
        if kind is None:
            if act not in ACTIVATIONS:
                why = REFUSED_ACTIVATIONS.get(act, "unknown to netspec's importer")
                self.problems.error(sec.where("activation"),
                                    f"[{sec.name}] activation={act} ({why}) has no netspec "
                                    f"layer type (netspec imports "
                                    f"{', '.join(sorted(ACTIVATIONS))})")
            return ref
        if kind == "relu" and base is not None and base.name == ref.name:
            if base.type == "add":
                base.attrs["relu"] = True
            else:
                base.relu = True
            return ref
        attrs = {"slope": 0.1} if kind == "leaky" else {"a": 6.0} if kind == "brelu" else {}
        layer = Layer(kind, f"{ref.name}_{act}", attrs)
        return self.append(layer, [ref], ref.shape, sec)


# -- the sections ------------------------------------------------------------------------

def _conv(r: Reader, sec: Section, x: Ref) -> Ref | None:
    if len(x.shape) != 3:
        r.problems.error(sec.pos, f"[convolutional] layer {sec.index} reads a vector")
        return None
    n, k = sec.get("filters", 1), sec.get("size", 1)
    s, groups = sec.get("stride", 1), sec.get("groups", 1)
    pad = sec.get("padding", 0)
    if sec.get("pad", 0):
        pad = k // 2
    for key in ("stride_x", "stride_y", "dilation", "antialiasing", "share_index"):
        if sec.get(key, None, str) not in (None, "1" if key != "antialiasing" else "0"):
            r.problems.error(sec.where(key), f"[convolutional] {key}: not imported "
                                             f"(netspec's convolutions are square, undilated)")
    c, h, w = x.shape
    if c % groups or n % groups:
        r.problems.error(sec.where("groups"), f"[convolutional] groups={groups} divides "
                                              f"neither {c} input channels nor {n} filters")
        return None
    attrs = {"filters": n, "size": k}
    if s != 1:
        attrs["stride"] = s
    if pad:
        attrs["pad"] = pad
    if groups != 1:
        attrs["groups"] = groups
    bn = sec.get("batch_normalize", 0)
    name = r.name("conv")
    conv = Layer("conv", name, attrs)
    if pad and sec.get("pad", 0):
        conv.notes.append(f"darknet's pad=1: padding size/2 = {pad}")
    shape = (n, (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1)
    if min(shape[1:]) < 1:
        r.problems.error(sec.pos, f"[convolutional] layer {sec.index}: a {k}x{k} kernel "
                                  f"on {h}x{w} maps leaves nothing")
        return None
    out = r.append(conv, [x], shape, sec)
    norm = None
    if bn:
        conv.attrs["nobias"] = True
        conv.notes.append("batch_normalize: no bias before the batchnorm (nobias); "
                          "darknet's biases are the batchnorm's shift")
        norm = Layer("batchnorm", f"{name}_bn", {"eps": 1e-6})
        out = r.append(norm, [out], shape, sec)
    r.weighted.append((sec, conv, norm, c // groups * k * k))
    return r.activation(sec, out, conv)


def _local(r: Reader, sec: Section, x: Ref) -> Ref | None:
    """darknet's [local] (local_layer.c): an unshared convolution whose `pad` is im2col's
    padding itself (not size/2 as [convolutional]'s flag), its maps sized (h - 1) / stride + 1
    with any pad, (h - size) / stride + 1 without; biases one per output value (n, out_h,
    out_w), weights per location (out_h·out_w, n, c, size, size). Where the two sizes
    disagree (size 5 with pad=1) darknet reads past its columns: refused."""
    if len(x.shape) != 3:
        r.problems.error(sec.pos, f"[local] layer {sec.index} reads a vector")
        return None
    n, k, s = sec.get("filters", 1), sec.get("size", 1), sec.get("stride", 1)
    pad = sec.get("pad", 0)
    c, h, w = x.shape
    dark = ((h - 1) // s + 1, (w - 1) // s + 1) if pad else ((h - k) // s + 1,
                                                             (w - k) // s + 1)
    ours = ((h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1)
    if dark != ours or min(ours) < 1:
        r.problems.error(sec.where("size"), f"[local] layer {sec.index}: size {k} with "
                                            f"pad={pad}: darknet sizes its maps "
                                            f"{dark[0]}x{dark[1]} but its windows cover "
                                            f"{ours[0]}x{ours[1]}")
        return None
    attrs = {"filters": n, "size": k} | ({"stride": s} if s != 1 else {}) | \
        ({"pad": pad} if pad else {})
    layer = Layer("local", r.name("local"), attrs)
    layer.notes.append("darknet stores a weight per location (out_h·out_w, n, c, size, size): "
                       "reordered to netspec's (n, out_h, out_w, c, size, size)")
    out = r.append(layer, [x], (n, *ours), sec)
    r.weighted.append((sec, layer, None, c * k * k))
    r.local_maps[layer.name] = ours
    return r.activation(sec, out, layer)


def _connected(r: Reader, sec: Section, x: Ref) -> Ref | None:
    n = sec.get("output", 1)
    name = r.name("fc")
    fc = Layer("fc", name, {"outputs": n})
    out = r.append(fc, [x], (n,), sec)
    norm = None
    if sec.get("batch_normalize", 0):
        fc.attrs["nobias"] = True
        norm = Layer("batchnorm", f"{name}_bn", {"eps": 1e-6})
        out = r.append(norm, [out], (n,), sec)
    r.weighted.append((sec, fc, norm, math.prod(x.shape)))
    return r.activation(sec, out, fc)


def _maxpool(r: Reader, sec: Section, x: Ref) -> Ref | None:
    if len(x.shape) != 3:
        r.problems.error(sec.pos, f"[maxpool] layer {sec.index} reads a vector")
        return None
    s = sec.get("stride", 1)                    # darknet's defaults (parse_maxpool)
    k = sec.get("size", s)
    padding = sec.get("padding", k - 1)
    for key in ("stride_x", "stride_y", "maxpool_depth", "antialiasing"):
        if sec.get(key, None, str) not in (None, "0"):
            r.problems.error(sec.where(key), f"[maxpool] {key}: not imported")
    c, h, w = x.shape
    dk = [(d + padding - k) // s + 1 for d in (h, w)]
    left = padding // 2
    for ceil in (False, True):
        ns = [_pool_out(d, k, s, left, ceil) for d in (h, w)]
        if ns == dk and 2 * left <= k:
            break
    else:
        r.problems.error(sec.where("padding") if "padding" in sec.options else sec.pos,
                         f"[maxpool] layer {sec.index}: darknet's padding {padding} (frame "
                         f"{left} before, {padding - left} after) gives {dk[0]}x{dk[1]} "
                         f"from {h}x{w}; no netspec maxpool (an equal frame, floor or ceil) "
                         f"gives those windows")
        return None
    attrs = {"size": k, "stride": s}
    if left:
        attrs["pad"] = left
    if ceil:
        attrs["ceil"] = True
    default = "" if "padding" in sec.options else " (size - 1, its default)"
    layer = Layer("maxpool", r.name("maxpool"), attrs, notes=[
        f"darknet's maxpool padding {padding}{default}: {left} before, {padding - left} "
        f"after, output (W + {padding} - {k}) / {s} + 1 = {dk[0]}; netspec's pad {left}"
        f"{' with ceil' if ceil else ''} gives the same windows"])
    return r.append(layer, [x], (c, *dk), sec)


def _pool_out(d: int, k: int, s: int, p: int, ceil: bool) -> int:
    """netspec's pooled size (ops/maxpool.py: ceil's last window starts inside the input
    or its left frame)."""
    if not ceil:
        return (d + 2 * p - k) // s + 1
    o = -(-(d + 2 * p - k) // s) + 1
    return o - 1 if (o - 1) * s >= d + p else o


def _avgpool(r: Reader, sec: Section, x: Ref) -> Ref | None:
    if len(x.shape) != 3 or x.shape[1] != x.shape[2]:
        r.problems.error(sec.pos, f"[avgpool] layer {sec.index}: global pooling of "
                                  f"{x.shape}; netspec pools square maps")
        return None
    layer = Layer("avgpool", r.name("avgpool"), {"global": True},
                  notes=["darknet's [avgpool] averages each whole map: global"])
    return r.append(layer, [x], (x.shape[0], 1, 1), sec)


def _dropout(r: Reader, sec: Section, x: Ref) -> Ref | None:
    p = sec.get("probability", 0.5, float)
    return r.append(Layer("dropout", r.name("dropout"), {"p": p}), [x], x.shape, sec)


def _softmax(r: Reader, sec: Section, x: Ref) -> Ref | None:
    if sec.get("groups", 1) != 1:
        r.problems.error(sec.where("groups"), f"[softmax] groups={sec.get('groups')}: "
                                              f"netspec's softmax spans all outputs")
        return None
    if sec.get("temperature", 1.0, float) != 1.0:
        r.problems.error(sec.where("temperature"), "[softmax] temperature: not imported")
        return None
    if len(x.shape) == 3 and x.shape[1:] != (1, 1):
        r.problems.error(sec.pos, f"[softmax] layer {sec.index} of {x.shape} maps: netspec's "
                                  f"softmax is over a vector")
        return None
    return r.append(Layer("softmax", "prob"), [x], (math.prod(x.shape),), sec)


def _index(r: Reader, sec: Section, key: str, text: str) -> Ref | None:
    try:
        i = int(text)
    except ValueError:
        r.problems.error(sec.where(key), f"[{sec.name}] {key}: '{text}' is not a layer index")
        return None
    j = sec.index + i if i < 0 else i
    if not 0 <= j < sec.index:
        r.problems.error(sec.where(key), f"[{sec.name}] {key}={text}: layer {j} is not "
                                         f"before layer {sec.index}")
        return None
    return r.outs[j]            # None: refused, and reported where it stands


def _shortcut(r: Reader, sec: Section, x: Ref) -> Ref | None:
    other = _index(r, sec, "from", sec.get("from", "", str))
    for key in ("alpha", "beta"):
        if sec.get(key, 1.0, float) != 1.0:
            r.problems.error(sec.where(key), f"[shortcut] {key}: netspec's add is a plain sum")
    if sec.get("weights_type", "none", str) != "none":
        r.problems.error(sec.where("weights_type"), "[shortcut] weights_type: not imported")
    if other is None:
        return None
    if other.shape != x.shape:
        r.problems.error(sec.where("from"), f"[shortcut] adds {other.shape} to {x.shape}: "
                                            f"netspec adds equal shapes")
        return None
    add = Layer("add", r.name("shortcut"), {})
    out = r.append(add, [x, other], x.shape, sec)
    add.inputs = [x.name, other.name]
    return r.activation(sec, out, add)


def _route(r: Reader, sec: Section, x: Ref) -> Ref | None:
    for key in ("groups", "group_id"):
        if sec.get(key, None, str) not in (None, "1" if key == "groups" else "0"):
            r.problems.error(sec.where(key), f"[route] {key}: netspec's concat takes whole "
                                             f"layers")
    texts = [t.strip() for t in sec.get("layers", "", str).split(",") if t.strip()]
    refs = [_index(r, sec, "layers", t) for t in texts]
    if not refs or None in refs:
        if not refs:
            r.problems.error(sec.where("layers"), "[route] names no layers")
        return None
    if len(refs) == 1:
        return refs[0]                          # the next layer reads it with `from`
    if any(len(ref.shape) != 3 for ref in refs) or len({ref.shape[1:] for ref in refs}) != 1:
        r.problems.error(sec.where("layers"), f"[route] concatenates "
                                              f"{[ref.shape for ref in refs]}: netspec "
                                              f"concatenates channels of equal maps")
        return None
    shape = (sum(ref.shape[0] for ref in refs), *refs[0].shape[1:])
    layer = Layer("concat", r.name("route"), {})
    out = r.append(layer, refs, shape, sec)
    layer.inputs = [ref.name for ref in refs]
    return out


def _crop(r: Reader, sec: Section, x: Ref) -> Ref | None:
    if r.layers or sec.index != 0:
        r.problems.error(sec.pos, "[crop] after other layers: netspec crops only the input")
        return None
    ch, cw = sec.get("crop_height", x.shape[1]), sec.get("crop_width", x.shape[2])
    for key in ("shift", "angle", "saturation", "exposure", "flip"):
        sec.get(key, None, str)                 # training-time augmentation
    r.crop = (ch, cw, bool(sec.get("noadjust", 0)), x.shape[1:])
    return Ref("data", (x.shape[0], ch, cw))


def _cost(r: Reader, sec: Section, x: Ref) -> Ref | None:
    sec.used.update(sec.options)
    r.notes.append(f"[cost] (line {sec.pos.line}): a training loss; netspec's is the "
                   f"softmax's cross-entropy")
    return x


CONVERT = {"convolutional": _conv, "conv": _conv, "connected": _connected,
           "maxpool": _maxpool, "max": _maxpool, "avgpool": _avgpool, "avg": _avgpool,
           "dropout": _dropout, "softmax": _softmax, "soft": _softmax,
           "shortcut": _shortcut, "route": _route, "crop": _crop, "cost": _cost,
           "local": _local}
KNOWN = {"convolutional": {"filters", "size", "stride", "pad", "padding", "groups",
                           "batch_normalize", "activation"},
         "connected": {"output", "batch_normalize", "activation"},
         "local": {"filters", "size", "stride", "pad", "activation"},
         "maxpool": {"size", "stride", "padding"}, "avgpool": set(),
         "dropout": {"probability"}, "softmax": {"groups", "temperature"},
         "shortcut": {"from", "activation", "alpha", "beta"}, "route": {"layers"},
         "crop": {"crop_height", "crop_width", "noadjust", "shift", "angle", "saturation",
                  "exposure", "flip"}}


def _net(sec: Section, problems: Problems) -> tuple | None:
    if sec.name not in ("net", "network"):
        problems.error(sec.pos, f"[{sec.name}] first: a darknet cfg starts with [net]")
        return None
    h, w, c = sec.get("height", 0), sec.get("width", 0), sec.get("channels", 0)
    if not (h > 0 and w > 0 and c > 0):
        problems.error(sec.pos, f"[net] height={h} width={w} channels={c}: netspec needs "
                                f"all three")
        return None
    return c, h, w


def read_cfg(path) -> tuple[Imported, Reader]:
    """The network of a darknet cfg (no weights). SpecError with every construct netspec
    can't express, `FILE:LINE:COL: error:`."""
    from .prototxt import read_text_file
    text = read_text_file(path)
    problems = Problems(str(path), text)
    sections = parse_cfg(text, problems)
    r = Reader(problems)
    shape = _net(sections[0], problems) if sections else None
    if not sections:
        problems.error(Pos(1, 1), "no [net] section")
    x = Ref("data", shape) if shape else None
    for sec in sections[1:]:
        out = _section(r, sec, x)
        r.outs.append(out)
        x = out if out is not None else x
    if x is not None and r.layers and r.layers[-1].name != x.name:
        r.problems.error(sections[-1].pos, f"the network ends in [{sections[-1].name}] "
                                           f"reading an earlier layer; netspec's network "
                                           f"ends in its last layer")
    problems.raise_if_any()
    if not r.layers or r.layers[-1].type != "softmax":
        r.layers.append(Layer("softmax", "prob", notes=[
            "added: a netspec network ends in softmax; the cfg ends without one"]))
    if r.crop:
        shape = (shape[0], r.crop[0], r.crop[1])
    names = valid_names([Path(path).stem])
    imp = Imported("darknet", [str(path)], names[0], shape, r.layers, r.notes,
                   outputs=math.prod(x.shape))
    imp.channel_order = {3: "RGB", 1: "grey"}.get(shape[0], f"{shape[0]} channels")
    if shape[0] == 3:
        imp.notes.append("darknet reads RGB, as netspec's pipeline does: no channel reversal")
    _input_convention(imp, r)
    return imp, r


def _section(r: Reader, sec: Section, x: Ref | None) -> Ref | None:
    convert = CONVERT.get(sec.name)
    if convert is None:
        r.problems.error(sec.pos, COMING.get(sec.name, f"darknet's [{sec.name}] has no "
                         f"netspec layer type") + f" (netspec imports "
                         f"{', '.join('[' + k + ']' for k in KNOWN)})")
        return None
    if x is None:
        return None
    try:
        out = convert(r, sec, x)
    except _BadValue as e:
        r.problems.error(e.pos, str(e))
        return None
    known = KNOWN.get({"conv": "convolutional", "max": "maxpool", "avg": "avgpool",
                       "soft": "softmax"}.get(sec.name, sec.name), set()) | sec.used
    for key in sec.options:
        if key not in known:
            r.problems.error(sec.options[key][2],
                             f"[{sec.name}] {key}: an option netspec's importer does not "
                             f"read (it would change what the layer computes, or is not "
                             f"darknet's)")
    return out


def _input_convention(imp: Imported, r: Reader) -> None:
    """Fold darknet's input scaling (pixels / 255, and [crop]'s 2x − 1) into the first
    weighted layer, or say why not."""
    scale, mean = 1 / 255, None
    what = "darknet reads pixels / 255 (0..1); netspec's pipeline gives 0..255"
    if r.crop:
        ch, cw, noadjust, full = r.crop
        imp.notes.append(f"darknet's [crop]: the network reads the central {ch}x{cw} crop of "
                         f"the {full[0]}x{full[1]} [net] input at test time (random crops "
                         f"and flips at training: give the spec's train section `augment "
                         f"crop {ch} from {max(full)}`)")
        if not noadjust:
            scale, mean = 2 / 255, 127.5
            what = "darknet's [crop] maps pixels / 255 to 2x - 1 (-1..1)"
        b = max(full)
        imp.mean = np.full((b, b, 3), mean or 0.0, np.float32)
    for layer in imp.layers:
        if layer.type in ("maxpool", "avgpool", "dropout"):
            continue
        if layer.type in ("conv", "fc", "local") and not layer.inputs:
            layer.notes.append(f"input scale: {what}: this weight is scaled by "
                               f"{'2/255' if mean else '1/255'}" +
                               (" and the mean image is 127.5" if mean else ""))
            r.input_scale = (layer.name, scale)
            imp.notes.append(f"{what}; folded into {layer.name}'s weight" +
                             (", the mean image 127.5" if mean else ""))
            return
        break
    r.input_scale = None
    imp.notes.append(f"{what}, and this network reads its input as darknet does: feed it "
                     f"pixels / 255" + (" mapped to 2x - 1" if mean else ""))
    if mean:
        imp.mean = None


# -- the weights -------------------------------------------------------------------------

def read_weights(path, r: Reader, imp: Imported) -> None:
    """Fill the conv, fc and batchnorm layers from a .weights file; SpecError (`FILE:
    error:` naming the layer) when it is short, long or not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SpecError.file(e.strerror or str(e), str(path)) from None
    if len(data) < 16:
        raise SpecError.file("not a darknet .weights file: shorter than its header",
                             str(path))
    major, minor, revision = np.frombuffer(data, "<i4", 3)
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    seen = int(np.frombuffer(data, "<i8" if wide else "<i4", 1, 12)[0])
    transpose = major > 1000 or minor > 1000
    at = 12 + (8 if wide else 4)
    floats = np.frombuffer(data, "<f4", (len(data) - at) // 4, at)
    if (len(data) - at) % 4:
        raise SpecError.file(f"{len(data) - at} bytes after the header: not whole float32s",
                             str(path))
    pos = 0

    def take(n: int, what: str) -> np.ndarray | None:
        nonlocal pos
        if pos + n > floats.size:
            raise SpecError.file(f"{what}: the file ends {floats.size - pos} values into "
                                 f"{n} (layer weights for another cfg?)", str(path))
        out = floats[pos:pos + n].copy()
        pos += n
        return out

    for sec, layer, norm, fan_in in r.weighted:
        n = layer.attrs.get("filters") or layer.attrs["outputs"]
        what = f"[{sec.name}] layer {sec.index} ('{layer.name}')"
        if layer.type == "local":
            ho, wo = r.local_maps[layer.name]
            k = layer.attrs["size"]
            layer.bias = take(n * ho * wo, what).reshape(n, ho, wo)
            w = take(ho * wo * n * fan_in, what).reshape(ho, wo, n, fan_in // (k * k), k, k)
            w = w.transpose(2, 0, 1, 3, 4, 5)
            if r.input_scale and r.input_scale[0] == layer.name:
                w = w * np.float32(r.input_scale[1])
            layer.weight = np.ascontiguousarray(w, np.float32)
            continue
        biases = take(n, what)
        if layer.type == "conv":
            stats = [take(n, what) for _ in range(3)] if norm is not None else None
            w = take(n * fan_in, what).reshape(n, -1, layer.attrs["size"],
                                               layer.attrs["size"])
        else:
            w = take(n * fan_in, what)
            w = w.reshape(fan_in, n).T if transpose else w.reshape(n, fan_in)
            stats = [take(n, what) for _ in range(3)] if norm is not None else None
        if norm is None:
            layer.bias = biases
        else:
            layer.bias = None
            norm.weight, norm.bias = stats[0], biases
            norm.state = {"running_mean": stats[1], "running_var": stats[2]}
        if r.input_scale and r.input_scale[0] == layer.name:
            w = w * np.float32(r.input_scale[1])
        layer.weight = np.ascontiguousarray(w, np.float32)
    if pos != floats.size:
        raise SpecError.file(f"{floats.size - pos} float32 values left after the last "
                             f"layer: the weights of another cfg?", str(path))
    imp.sources.append(str(path))
    imp.notes.append(f"weights: darknet format {major}.{minor}.{revision}, seen {seen} "
                     f"images")
    imp.has_weights = True


def import_darknet(cfg, weights=None, mean=None) -> Imported:
    """A darknet cfg (and its .weights) as a netspec network reading netspec's 0..255 RGB
    input. SpecError listing every construct refused."""
    if mean is not None:
        raise SpecError.file("darknet has no mean file; give no --mean", str(mean))
    imp, r = read_cfg(cfg)
    if weights is not None:
        read_weights(weights, r, imp)
    return imp
