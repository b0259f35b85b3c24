"""Caffe: a deploy `.prototxt` (both dialects), its `.caffemodel` weights and a
`.binaryproto` mean, as a netspec network.

Dialects (BVLC/caffe src/caffe/proto/caffe.proto):
- V1 (`layers { type: CONVOLUTION ... blobs_lr: 1 blobs_lr: 2 weight_decay: 1 }`, the input
  as `input: "data"` and four `input_dim`, or `input_shape { dim: ... }`);
- V2 (`layer { type: "Convolution" ... param { lr_mult: 1 decay_mult: 1 } }`, the input as
  an `Input` layer with `input_param { shape { dim: ... } }`, or the V1 fields).

The weights are a NetParameter in protobuf's wire format (protowire.py): `layer` (field 100,
LayerParameter: name 1, blobs 7) or V1 `layers` (field 2, V1LayerParameter: name 4,
blobs 6); a BlobProto has packed float `data` (5), `shape` (7: BlobShape, packed int64 `dim`
1) or the legacy num/channels/height/width (1–4), and `double_data` (8). Layers are matched by
name; layers of the weights file that the deploy file lacks (a train_val's data and loss
layers) are ignored.

Conventions converted (each is written as a comment in the spec):
- LRN: Caffe's across-channel LRN divides alpha by local_size (x / (k + alpha/n · Σx²)^beta,
  BVLC/caffe#1453; k defaults to 1); netspec's alpha is the paper's, not divided: alpha/n.
- Pooling: Caffe sizes pooled maps with ceil ((H + 2·pad − k) / s rounded up, + 1, less one
  where the last window would start in the padding); netspec's `ceil` is that rule. Where
  floor gives the same size (AlexNet's 55→27→13→6) the layer is written without it.
- BatchNorm stores mean·f, variance·f and f (batch_norm_layer.cpp); the Scale after it holds
  gamma and beta: the two become one `batchnorm` (Caffe's moving_average_fraction m is
  netspec's momentum 1 − m). A Scale anywhere else is refused.
- Graphs: a layer reads its bottoms by name (Eltwise SUM → `add`, MAX → `max`, Concat over
  channels → `concat`); a top written in place names the newest layer from then on. A ReLU
  is fused into the conv, fc or add before it when nothing else reads that layer's output.
- Input: Caffe's models read BGR (OpenCV's imread order). netspec's pipeline gives RGB, so
  the first conv's (or fc's) input channels are reversed in the weights, and the mean image
  is stored RGB; the network then reads what `netspec predict` and `eval` feed it.
- `group: G` is `groups G`: Caffe's grouped weight (256, 48, 5, 5) is netspec's layout.
- A ReLU after a conv or fc is fused into it (`relu`); `bias_term: false` is `nobias`;
  `blobs_lr`/`lr_mult` of the weight is the layer's `lr_mult` (its bias's is noted where it
  differs: netspec has one multiplier per layer).

A new netspec layer type is one entry in CONVERT (and, for V1, V1_TYPES).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dsl.errors import Pos, SpecError
from . import protowire as pw
from .model import Imported, Layer, Problems, rename, reverse_input_channels
from .prototxt import Enum, Message, parse_prototxt, read_text_file

# V1LayerParameter's enum names -> the V2 type strings (caffe.proto's LayerType)
V1_TYPES = {
    "CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "POOLING": "Pooling", "RELU": "ReLU", "DROPOUT": "Dropout", "SOFTMAX": "Softmax",
    "CONCAT": "Concat", "ELTWISE": "Eltwise", "SIGMOID": "Sigmoid", "TANH": "TanH",
    "SPLIT": "Split", "FLATTEN": "Flatten", "DATA": "Data", "IMAGE_DATA": "ImageData",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "ACCURACY": "Accuracy", "POWER": "Power",
    "ABSVAL": "AbsVal", "BNLL": "BNLL", "MVN": "MVN", "SLICE": "Slice", "ARGMAX": "ArgMax",
    "HDF5_DATA": "HDF5Data", "MEMORY_DATA": "MemoryData", "DECONVOLUTION": "Deconvolution",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "THRESHOLD": "Threshold", "SILENCE": "Silence",
    "WINDOW_DATA": "WindowData", "IM2COL": "Im2col", "DUMMY_DATA": "DummyData",
}


@dataclass
class Source:
    """One layer of the deploy file, either dialect."""

    msg: Message
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]

    def param(self, key: str) -> Message:
        return self.msg.msg(key) or Message(self.msg.pos)

    def pos(self, key: str = "type") -> Pos:
        return self.msg.where(key)


@dataclass
class Context:
    problems: Problems
    shape: tuple                 # the shape of the layer's (first) bottom, (C, H, W) or (N,)
    layers: list[Layer] = field(default_factory=list)
    # blob name -> (the netspec layer that writes it now, or None for the input; its shape)
    blobs: dict = field(default_factory=dict)
    bottoms: list = field(default_factory=list)       # this source's, as blobs' values
    read: set = field(default_factory=set)            # netspec layers some layer has read
    readers: dict = field(default_factory=dict)       # blob name -> how many sources read it
    scale_of: dict = field(default_factory=dict)      # batchnorm layer -> its Scale's name

    def producer(self) -> Layer | None:
        """The netspec layer writing this source's only bottom, if no other layer read it."""
        name = self.bottoms[0][0] if len(self.bottoms) == 1 else None
        for layer in reversed(self.layers):
            if layer.name == name:
                return None if name in self.read else layer
        return None


FUSED = object()     # a converter's result: merged into the layer writing its bottom


# -- the layer types ---------------------------------------------------------------------

def _square(cx: Context, src: Source, p: Message, key: str, default: int | None) -> int | None:
    """A Caffe spatial parameter (kernel_size, stride, pad: repeated, or key_h/key_w) that
    must be the same in both directions; None after an error."""
    stem = {"kernel_size": "kernel"}.get(key, key)
    vals = [v.value for v in p.all(key)]
    hw = [p.one(f"{stem}_h"), p.one(f"{stem}_w")]
    if any(v is not None for v in hw):
        vals = [v for v in hw if v is not None]
    if not vals:
        if default is None:
            cx.problems.error(src.pos(), f"layer '{src.name}': no {key}")
        return default
    if any(v != vals[0] for v in vals) or len(vals) > 2:
        cx.problems.error(p.where(key if p.all(key) else f"{stem}_h"),
                          f"layer '{src.name}': {key} {' x '.join(map(str, vals))} differs "
                          f"between height and width; netspec's are square")
        return None
    return int(vals[0])


def _conv(cx: Context, src: Source) -> Layer | None:
    p = src.param("convolution_param")
    k = _square(cx, src, p, "kernel_size", None)
    s = _square(cx, src, p, "stride", 1)
    pad = _square(cx, src, p, "pad", 0)
    groups = int(p.one("group", 1))
    dil = [v.value for v in p.all("dilation")]
    if any(d != 1 for d in dil):
        cx.problems.error(p.where("dilation"), f"layer '{src.name}': dilation {dil[0]}: "
                          f"netspec convolutions are not dilated")
        return None
    if None in (k, s, pad) or len(cx.shape) != 3:
        if len(cx.shape) != 3:
            cx.problems.error(src.pos(), f"layer '{src.name}': a convolution of a vector")
        return None
    filters = int(p.one("num_output", 0))
    c, h, w = cx.shape
    attrs = {"filters": filters, "size": k}
    if s != 1:
        attrs["stride"] = s
    if pad:
        attrs["pad"] = pad
    layer = Layer("conv", src.name, attrs, source=f"{src.name} ({src.type})")
    if groups != 1:
        attrs["groups"] = groups
        layer.notes.append(f"Caffe's group: {groups}; weights ({filters}, {c // groups}, {k}, "
                           f"{k}) as Caffe stores them")
    if not p.one("bias_term", True):
        attrs["nobias"] = True
    cx.shape = (filters, (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1)
    return layer


def _fc(cx: Context, src: Source) -> Layer | None:
    p = src.param("inner_product_param")
    if int(p.one("axis", 1)) != 1:
        cx.problems.error(p.where("axis"), f"layer '{src.name}': InnerProduct over axis "
                          f"{p.one('axis')}; netspec's fc flattens from axis 1")
        return None
    n = int(p.one("num_output", 0))
    layer = Layer("fc", src.name, {"outputs": n}, source=f"{src.name} ({src.type})")
    if p.one("transpose", False):
        layer.notes.append("transpose: true in Caffe: the weight is stored (inputs, outputs), "
                           "transposed here")
    if not p.one("bias_term", True):
        layer.attrs["nobias"] = True
    cx.shape = (n,)
    return layer


def _lrn(cx: Context, src: Source) -> Layer | None:
    p = src.param("lrn_param")
    region = p.one("norm_region", "ACROSS_CHANNELS")
    if region not in ("ACROSS_CHANNELS", 0):
        cx.problems.error(p.where("norm_region"), f"layer '{src.name}': LRN norm_region "
                          f"{region}: netspec's lrn is across channels only")
        return None
    n = int(p.one("local_size", 5))
    alpha, beta, k = float(p.one("alpha", 1.0)), float(p.one("beta", 0.75)), \
        float(p.one("k", 1.0))
    if n % 2 == 0:
        cx.problems.error(p.where("local_size"), f"layer '{src.name}': LRN local_size {n} "
                          f"is even (Caffe itself requires an odd one)")
        return None
    layer = Layer("lrn", src.name, {"size": n, "alpha": alpha / n, "beta": beta, "k": k},
                  source=f"{src.name} ({src.type})")
    layer.notes.append(f"LRN alpha: Caffe's alpha {alpha:g} is divided by local_size {n} in "
                       f"its formula (BVLC/caffe#1453); netspec's is not: {alpha / n:.9g}")
    return layer


def _pool(cx: Context, src: Source) -> Layer | None:
    p = src.param("pooling_param")
    method = p.one("pool", "MAX")
    kind = {"MAX": "maxpool", 0: "maxpool", "AVE": "avgpool", 1: "avgpool"}.get(method)
    if kind is None:
        cx.problems.error(p.where("pool"), f"layer '{src.name}': pool {method}: netspec "
                          f"pools by MAX or AVE")
        return None
    if len(cx.shape) != 3:
        cx.problems.error(src.pos(), f"layer '{src.name}': pooling a vector")
        return None
    c, h, w = cx.shape
    if p.one("global_pooling", False):
        cx.shape = (c, 1, 1)
        return Layer(kind, src.name, {"global": True}, source=f"{src.name} ({src.type})",
                     notes=[f"global_pooling in Caffe: one window over the {h}x{w} map"])
    k = _square(cx, src, p, "kernel_size", None)
    s = _square(cx, src, p, "stride", 1)
    pad = _square(cx, src, p, "pad", 0)
    if None in (k, s, pad):
        return None
    caffe_h, caffe_w = _caffe_pooled(h, k, s, pad), _caffe_pooled(w, k, s, pad)
    floor_h, floor_w = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    attrs = {"size": k, "stride": s}
    if pad:
        attrs["pad"] = pad
    if (caffe_h, caffe_w) != (floor_h, floor_w):
        attrs["ceil"] = True
        note = (f"Caffe sizes pooling with ceil (a last window starting inside the input): "
                f"{caffe_h}x{caffe_w}, so 'ceil' (floor would give {floor_h}x{floor_w})")
    else:
        note = (f"Caffe sizes pooling with ceil, netspec by default with floor: both give "
                f"{floor_h}x{floor_w} here")
    cx.shape = (c, caffe_h, caffe_w)
    return Layer(kind, src.name, attrs, source=f"{src.name} ({src.type})", notes=[note])


def _caffe_pooled(d: int, k: int, s: int, pad: int) -> int:
    """Caffe's pooled size (pooling_layer.cpp): ceil((d + 2·pad − k) / s) + 1, less one
    where padding would make the last window start in the padding."""
    out = -(-(d + 2 * pad - k) // s) + 1
    if pad and (out - 1) * s >= d + pad:
        out -= 1
    return out


def _relu(cx: Context, src: Source) -> Layer | None:
    slope = float(src.param("relu_param").one("negative_slope", 0.0))
    if slope:
        return Layer("leaky", src.name, {"slope": slope}, source=f"{src.name} ({src.type})")
    last = cx.producer()
    in_place = src.tops == src.bottoms
    if last is not None and last.type in ("conv", "fc", "add") and not last.relu and \
            (in_place or cx.readers.get(src.bottoms[0], 0) == 1):
        last.relu = True
        last.source += f" + {src.name} ({src.type})"
        return FUSED
    return Layer("relu", src.name, source=f"{src.name} ({src.type})")


def _activation(kind: str, note: str = ""):
    def convert(cx: Context, src: Source) -> Layer | None:
        return Layer(kind, src.name, source=f"{src.name} ({src.type})",
                     notes=[note] if note else [])
    return convert


def _batchnorm(cx: Context, src: Source) -> Layer | None:
    p = src.param("batch_norm_param")
    if len(cx.shape) != 3:
        cx.problems.error(src.pos(), f"layer '{src.name}': batch norm of a vector")
        return None
    frac = float(p.one("moving_average_fraction", 0.999))
    layer = Layer("batchnorm", src.name, {"eps": float(p.one("eps", 1e-5)),
                                          "momentum": round(1.0 - frac, 9)},
                  source=f"{src.name} ({src.type})")
    layer.notes.append(f"Caffe's moving_average_fraction {frac:g} is netspec's (PyTorch's) "
                       f"momentum 1 - {frac:g}; its stored mean and variance are divided by "
                       f"its scale factor blob")
    layer.notes.append("no Scale after it in the source: gamma 1, beta 0")
    return layer


def _scale(cx: Context, src: Source) -> Layer | None:
    """Caffe's Scale after a BatchNorm is batchnorm's gamma and beta (Caffe splits them)."""
    last = cx.producer()
    p = src.param("scale_param")
    if last is None or last.type != "batchnorm" or last.name in cx.scale_of or \
            len(src.bottoms) != 1 or int(p.one("axis", 1)) != 1:
        cx.problems.error(src.pos(), f"layer '{src.name}': a Scale that does not follow a "
                                     f"BatchNorm (netspec's batchnorm holds gamma and beta; "
                                     f"it has no scale layer of its own)")
        return None
    cx.scale_of[last.name] = (src.name, bool(p.one("bias_term", False)))
    last.notes[-1] = f"gamma and beta from Caffe's Scale '{src.name}'" + \
        ("" if p.one("bias_term", False) else " (bias_term false: beta 0)")
    last.source += f" + {src.name} ({src.type})"
    return FUSED


def _eltwise(cx: Context, src: Source) -> Layer | None:
    p = src.param("eltwise_param")
    op = p.one("operation", "SUM")
    op = {0: "PROD", 1: "SUM", 2: "MAX"}.get(op, op)
    coeff = [float(v.value) for v in p.all("coeff")]
    if op == "SUM" and any(c != 1.0 for c in coeff):
        cx.problems.error(p.where("coeff"), f"layer '{src.name}': Eltwise SUM with "
                                            f"coefficients {coeff}: netspec's add sums as is")
        return None
    kind = {"SUM": "add", "MAX": "max"}.get(str(op))
    from ..ops import OPS
    if kind not in OPS:
        cx.problems.error(p.where("operation") if p.all("operation") else src.pos(),
                          f"layer '{src.name}': Eltwise {op}: netspec joins by add"
                          + (" and max" if "max" in OPS else ""))
        return None
    if len({b[1] for b in cx.bottoms}) != 1:
        cx.problems.error(src.pos(), f"layer '{src.name}': Eltwise of shapes "
                                     f"{[b[1] for b in cx.bottoms]}")
        return None
    return Layer(kind, src.name, source=f"{src.name} ({src.type})")


def _concat(cx: Context, src: Source) -> Layer | None:
    p = src.param("concat_param")
    axis = int(p.one("axis", p.one("concat_dim", 1)))
    shapes = [b[1] for b in cx.bottoms]
    if axis != 1 or len({sh[1:] for sh in shapes}) != 1:
        cx.problems.error(src.pos(), f"layer '{src.name}': Concat over axis {axis} of "
                                     f"shapes {shapes}: netspec concatenates channels of "
                                     f"maps of one size")
        return None
    cx.shape = (sum(sh[0] for sh in shapes), *shapes[0][1:])
    return Layer("concat", src.name, source=f"{src.name} ({src.type})")


def _dropout(cx: Context, src: Source) -> Layer | None:
    ratio = float(src.param("dropout_param").one("dropout_ratio", 0.5))
    return Layer("dropout", src.name, {"p": ratio}, source=f"{src.name} ({src.type})")


def _softmax(cx: Context, src: Source) -> Layer | None:
    axis = int(src.param("softmax_param").one("axis", 1))
    if axis != 1:
        cx.problems.error(src.param("softmax_param").where("axis"),
                          f"layer '{src.name}': softmax over axis {axis}; netspec's is over "
                          f"the channels (axis 1)")
        return None
    return Layer("softmax", src.name, source=f"{src.name} ({src.type})")


# Caffe's type -> its converter to a netspec layer (None: fused into the layer before)
CONVERT = {"Convolution": _conv, "InnerProduct": _fc, "LRN": _lrn, "Pooling": _pool,
           "ReLU": _relu, "Dropout": _dropout, "Softmax": _softmax,
           "Sigmoid": _activation("logistic"), "TanH": _activation("tanh"),
           "AbsVal": _activation("abs"),
           "BNLL": _activation("softrelu", "Caffe's BNLL, log(1 + exp(x)), is softrelu"),
           "BatchNorm": _batchnorm, "Scale": _scale, "Eltwise": _eltwise, "Concat": _concat}
JOINS = {"Eltwise", "Concat"}          # the types that read several bottoms


# -- the deploy file ---------------------------------------------------------------------

def _sources(net: Message, problems: Problems) -> list[Source]:
    out = []
    for lm in net.all("layers") + net.all("layer"):
        if not isinstance(lm, Message):
            problems.error(net.pos, "a 'layer' that is not a message")
            continue
        t = lm.one("type", "")
        if isinstance(t, Enum) or isinstance(t, int):
            t = V1_TYPES.get(str(t), str(t))
        phases = [inc.one("phase") for inc in lm.all("include") if isinstance(inc, Message)]
        if "TRAIN" in phases:
            continue                    # a train_val's training-only layer
        out.append(Source(lm, str(lm.one("name", "")), str(t),
                          [str(v.value) for v in lm.all("bottom")],
                          [str(v.value) for v in lm.all("top")]))
    return out


def _input(net: Message, sources: list[Source], problems: Problems):
    """(input blob name, (C, H, W)) from the V1 fields or an Input layer."""
    dims = [int(v.value) for v in net.all("input_dim")]
    shape_msg = net.msg("input_shape")
    if shape_msg is not None:
        dims = [int(v.value) for v in shape_msg.all("dim")]
    name = net.one("input")
    for src in sources:
        if src.type == "Input":
            shape = src.param("input_param").msg("shape")
            dims = [int(v.value) for v in shape.all("dim")] if shape else []
            name = src.tops[0] if src.tops else src.name
    if name is None:
        problems.error(net.pos, "no input: a deploy file names it with 'input' and "
                                "'input_dim' (or 'input_shape'), or an Input layer")
        return None, None
    if len(dims) != 4:
        problems.error(net.where("input_dim"), f"the input has {len(dims)} dimensions "
                       f"({dims}); netspec reads N x C x H x W images")
        return name, None
    return str(name), tuple(dims[1:])


def _lr_notes(src: Source) -> tuple[dict, list[str]]:
    """lr_mult / decay_mult from V1 blobs_lr/weight_decay or V2 param {}, weight's and bias's."""
    lr = [float(v.value) for v in src.msg.all("blobs_lr")]
    dec = [float(v.value) for v in src.msg.all("weight_decay")]
    for pm in src.msg.all("param"):
        if isinstance(pm, Message):
            lr.append(float(pm.one("lr_mult", 1.0)))
            dec.append(float(pm.one("decay_mult", 1.0)))
    attrs, notes = {}, []
    if lr and lr[0] != 1.0:
        attrs["lr_mult"] = lr[0]
    if dec and dec[0] != 1.0:
        attrs["decay_mult"] = dec[0]
    if len(lr) > 1 and lr[1] != lr[0]:
        notes.append(f"Caffe's bias lr_mult {lr[1]:g} differs from the weight's {lr[0]:g}; "
                     f"netspec's lr_mult is the layer's (the weight's here)")
    return attrs, notes


def _refusal(src: Source) -> str:
    return (f"layer '{src.name}': Caffe's {src.type} has no netspec layer type (netspec "
            f"imports {', '.join(sorted(CONVERT))})")


BROKEN = (None, None)    # a blob whose writer was refused: its readers are not reported again


def _convert_layers(sources, top, shape, problems) -> tuple[list[Layer], dict, dict]:
    """The netspec layers of the deploy file's layers, each one's input shape, and each
    batchnorm's Scale (its name, bias_term). A layer reads its bottoms by name (a graph, not
    only a chain); a top written in place (ReLU, BatchNorm, Scale, Dropout with top = bottom)
    names the new layer from then on."""
    cx = Context(problems, shape, blobs={top: (None, shape)})
    for src in sources:
        for b in src.bottoms:
            cx.readers[b] = cx.readers.get(b, 0) + 1
    in_shapes = {}
    for src in sources:
        if src.type == "Input":
            continue
        layer = _convert_one(cx, src)
        out = BROKEN if layer is None else \
            (cx.bottoms[0][0], cx.shape) if layer is FUSED else (layer.name, cx.shape)
        in_place = bool(src.tops) and src.tops[0] in src.bottoms
        for t in src.tops[:1]:
            if out is not BROKEN or not in_place:     # refused in place: the blob stays
                cx.blobs[t] = out
        if layer is None or layer is FUSED:
            continue
        layer.pos = src.pos()
        if layer.type in ("conv", "fc"):
            extra, notes = _lr_notes(src)
            layer.attrs.update(extra)
            layer.notes += notes
        producers = [b[0] for b in cx.bottoms]
        previous = cx.layers[-1].name if cx.layers else None
        if layer.type in ("add", "max", "concat") or producers != [previous]:
            layer.inputs = producers
        cx.read.update(producers)
        in_shapes[layer.name] = cx.bottoms[0][1]
        cx.layers.append(layer)
    return cx.layers, in_shapes, cx.scale_of


def _convert_one(cx: Context, src: Source):
    """The netspec layer of one source layer, FUSED, or None after an error."""
    convert = CONVERT.get(src.type)
    if convert is None:
        cx.problems.error(src.pos(), _refusal(src))
        return None
    if any(cx.blobs.get(b) == BROKEN for b in src.bottoms):
        return None
    unknown = [b for b in src.bottoms if b not in cx.blobs]
    many = len(src.bottoms) != 1 and src.type not in JOINS
    if unknown or not src.bottoms or many or len(src.tops) != 1:
        why = f"reads {unknown[0]!r}, which no layer before it writes" if unknown else \
            "reads nothing" if not src.bottoms else \
            f"reads {len(src.bottoms)} blobs (only Eltwise and Concat join)" if many else \
            f"writes {len(src.tops)} blobs; netspec's layers write one"
        cx.problems.error(src.pos("bottom" if src.bottoms else "type"),
                          f"layer '{src.name}' {why}")
        return None
    cx.bottoms = [cx.blobs[b] for b in src.bottoms]
    if any(b[0] is None for b in cx.bottoms) and cx.layers:
        cx.problems.error(src.pos("bottom"), f"layer '{src.name}' reads the network's input "
                                             f"after other layers; netspec's input is read "
                                             f"by the first layer")
        return None
    cx.shape = cx.bottoms[0][1]
    return convert(cx, src)


def read_deploy(path) -> tuple[Imported, dict]:
    """The network of a deploy prototxt (no weights), and a map from each netspec layer to
    its Source. SpecError with every construct netspec can't express."""
    text = read_text_file(path)
    net = parse_prototxt(text, str(path))
    problems = Problems(str(path), text)
    sources = _sources(net, problems)
    top, shape = _input(net, sources, problems)
    layers, in_shapes, scale_of = _convert_layers(sources, top, shape, problems) if shape \
        else ([], {}, {})
    for layer in layers[:-1]:
        if layer.type == "softmax":
            problems.error(layer.pos, f"layer '{layer.name}': a softmax before the last "
                                      f"layer; netspec's softmax is the network's head")
    problems.raise_if_any()
    notes = []
    if not layers or layers[-1].type != "softmax":
        layers.append(Layer("softmax", "prob", notes=["added: a netspec network ends in "
                                                      "softmax; the source ends without one"]))
    names = {id(layer): layer.name for layer in layers}
    origin = {id(layer): Origin(layer.name, in_shapes.get(layer.name),
                                scale_of.get(layer.name)) for layer in layers}
    rename(layers)
    dialect = "V1 'layers'" if net.all("layers") else "V2 'layer'"
    imp = Imported(f"Caffe ({dialect})", [str(path)], _network_name(net, path), shape, layers,
                   notes)
    imp.origins = {layer.name: origin[id(layer)] for layer in layers}
    return imp, {layer.name: names[id(layer)] for layer in layers}


@dataclass(frozen=True)
class Origin:
    """Where a netspec layer's weights are in the .caffemodel: its source layer's name, its
    input shape, and (for batchnorm) the Scale layer holding gamma and beta."""

    source: str
    in_shape: tuple | None
    scale: tuple | None = None          # (Scale layer's name, bias_term)


def _network_name(net: Message, path) -> str:
    from .model import valid_names
    return valid_names([str(net.one("name", "") or Path(path).stem)])[0]


# -- the weights -------------------------------------------------------------------------

def read_blob(buf) -> np.ndarray:
    """A BlobProto as a float32 array of its shape (the `shape` field, else the legacy
    num/channels/height/width, with trailing 1s kept as Caffe wrote them)."""
    f = pw.fields(buf)
    data = pw.floats(f, 5)
    if not data.size:
        data = pw.doubles(f, 8).astype(np.float32)
    shape_msgs = [v for num, wt, v in f if num == 7 and wt == 2]
    if shape_msgs:
        shape = tuple(pw.varints(pw.fields(shape_msgs[-1]), 1))
    else:
        shape = tuple(pw.integer(f, i, 1) for i in (1, 2, 3, 4))
    if math.prod(shape) != data.size:
        raise pw.WireError(f"a blob of shape {shape} holds {data.size} values")
    return data.reshape(shape)


def read_caffemodel(path) -> dict[str, list[np.ndarray]]:
    """{layer name: [blob, ...]} of a .caffemodel (V2 `layer` and V1 `layers`). SpecError
    (`FILE: error:`) when the file is not a NetParameter."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SpecError.file(e.strerror or str(e), str(path)) from None
    out = {}
    try:
        for num, wt, v in pw.fields(data):
            if wt != 2 or num not in (2, 100):
                continue
            lf = pw.fields(v)
            name = pw.string(lf, 1 if num == 100 else 4)
            if num == 2 and any(n == 1 for n, _, _ in lf):
                raise pw.WireError(f"layer '{name}' is a V0 layer (before 2014's V1): "
                                   f"upgrade it with Caffe's upgrade_net_proto_binary")
            blobs = [read_blob(b) for n, w, b in lf if n == (7 if num == 100 else 6) and w == 2]
            out[name] = blobs
    except pw.WireError as e:
        raise SpecError.file(f"not a Caffe NetParameter: {e}", str(path)) from None
    return out


def _fit(blob: np.ndarray, shape: tuple, what: str, problems: Problems) -> np.ndarray | None:
    if blob.size != math.prod(shape):
        problems.about(f"{what}: the weights file's blob has shape {blob.shape} "
                       f"({blob.size} values); the deploy file's layer needs {shape}")
        return None
    return blob.reshape(shape)


def attach_weights(imp: Imported, source_names: dict, path) -> None:
    """Fill each conv and fc layer's weight and bias, and each batchnorm's gamma, beta, mean
    and variance, from the .caffemodel at `path`; every layer missing or of the wrong shape is
    reported at once (SpecError)."""
    blobs = read_caffemodel(path)
    problems = Problems(str(path), "")
    for layer in imp.layers:
        origin = imp.origins.get(layer.name)
        if layer.type not in ("conv", "fc", "batchnorm") or origin is None:
            continue
        src = origin.source
        got = blobs.get(src)
        if got is None:
            problems.about(f"layer '{src}': not in the weights file")
            continue
        if not got:
            problems.about(f"layer '{src}': the weights file holds no blobs for it")
            continue
        if layer.type == "batchnorm":
            _attach_batchnorm(layer, origin, got, blobs, problems)
            continue
        shape = origin.in_shape
        if layer.type == "conv":
            n, k, g = layer.attrs["filters"], layer.attrs["size"], layer.attrs.get("groups", 1)
            wshape = (n, shape[0] // g, k, k)
        else:
            n = layer.attrs["outputs"]
            wshape = (n, math.prod(shape))
        transposed = any("transpose: true" in note for note in layer.notes)
        w = got[0]
        if transposed:
            w = _fit(w, wshape[::-1], f"layer '{src}' weight", problems)
            w = None if w is None else np.ascontiguousarray(w.T)
        else:
            w = _fit(w, wshape, f"layer '{src}' weight", problems)
        b = None if layer.attrs.get("nobias") else \
            _fit(got[1], (n,), f"layer '{src}' bias", problems) if len(got) > 1 else \
            np.zeros(n, np.float32)
        layer.weight, layer.bias = w, b
    problems.raise_if_any()
    imp.sources.append(str(path))
    imp.has_weights = True


def _attach_batchnorm(layer: Layer, origin: Origin, got, blobs, problems: Problems) -> None:
    """Caffe's BatchNorm blobs are (mean·f, var·f, f), f the moving-average normaliser
    (batch_norm_layer.cpp divides by it; f = 0 means the statistics are zero); its Scale's
    are (gamma, beta)."""
    c = origin.in_shape[0]
    src = origin.source
    if len(got) != 3:
        problems.about(f"layer '{src}': a BatchNorm holds 3 blobs (mean, variance, scale "
                       f"factor), the weights file has {len(got)}")
        return
    mean, var = (_fit(x, (c,), f"layer '{src}' {what}", problems)
                 for x, what in ((got[0], "mean"), (got[1], "variance")))
    if mean is None or var is None:
        return
    f = float(got[2].reshape(-1)[0]) if got[2].size else 0.0
    norm = np.float32(0.0 if f == 0 else 1.0 / f)
    gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
    if origin.scale is not None:
        name, bias_term = origin.scale
        sb = blobs.get(name)
        if not sb:
            problems.about(f"layer '{name}': not in the weights file")
            return
        gamma = _fit(sb[0], (c,), f"layer '{name}' scale", problems)
        if bias_term:
            beta = _fit(sb[1], (c,), f"layer '{name}' bias", problems) if len(sb) > 1 \
                else None
            if beta is None:
                problems.about(f"layer '{name}': bias_term true but no bias blob")
                return
        if gamma is None:
            return
    layer.weight, layer.bias = gamma, beta
    layer.state = {"running_mean": mean * norm, "running_var": var * norm}


def read_mean(path) -> np.ndarray:
    """A .binaryproto mean image: BlobProto (1, C, H, W) in Caffe's BGR order, as float32
    (C, H, W), pixel units 0..255."""
    try:
        blob = read_blob(Path(path).read_bytes())
    except OSError as e:
        raise SpecError.file(e.strerror or str(e), str(path)) from None
    except pw.WireError as e:
        raise SpecError.file(f"not a Caffe BlobProto mean: {e}", str(path)) from None
    if blob.ndim == 4 and blob.shape[0] == 1:
        blob = blob[0]
    if blob.ndim != 3:
        raise SpecError.file(f"a mean of shape {blob.shape}, not (1, C, H, W)", str(path))
    return blob


def import_caffe(prototxt, weights=None, mean=None) -> Imported:
    """A Caffe deploy prototxt (and its .caffemodel, and .binaryproto mean) as a netspec
    network reading RGB. SpecError listing every construct refused."""
    imp, names = read_deploy(prototxt)
    if weights is not None:
        attach_weights(imp, names, weights)
    c, h, w = imp.input_shape
    if mean is not None:
        m = read_mean(mean)
        if m.shape[0] != c or m.shape[1] != m.shape[2] or m.shape[1] < max(h, w):
            raise SpecError.file(f"a mean of shape {m.shape}: netspec needs ({c}, B, B) with "
                                 f"B >= the input's {max(h, w)}", str(mean))
        imp.mean = np.ascontiguousarray(m.transpose(1, 2, 0))
        imp.sources.append(str(mean))
    if c == 3:
        why = reverse_input_channels(imp.layers, imp.input_shape)
        if why is None:
            imp.channel_order = "RGB"
            imp.notes.append("Caffe reads BGR; the first layer's input channels are reversed "
                             "so that this network reads RGB" +
                             (" (the mean too)" if imp.mean is not None else ""))
            if imp.mean is not None:
                imp.mean = np.ascontiguousarray(imp.mean[:, :, ::-1])
        else:
            imp.channel_order = "BGR"
            imp.notes.append(f"this network reads BGR as Caffe's does ({why})")
    else:
        imp.channel_order = "grey" if c == 1 else f"{c} channels"
    if mean is None:
        imp.notes.append("no mean given (--mean FILE.binaryproto): nothing is subtracted")
    return imp
