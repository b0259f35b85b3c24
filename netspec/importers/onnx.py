"""ONNX: a model file (opset 7 and later; netspec's own exports are opset 17) as a netspec
network, read with the `onnx` package alone (an extra: `pip install netspec[onnx]`).

The graph is walked in its (topological) node order; every tensor maps to the netspec layer
whose output it is (the input is `data`), flattened or not. Nodes and their netspec forms:

    Conv (square kernel, equal pads, group)     conv (groups G)
    Gemm (transB 0 or 1, alpha, beta)           fc (the weight stored (outputs, inputs))
    MaxPool / AveragePool (pads, ceil_mode)     maxpool / avgpool (pad, ceil)
    GlobalMaxPool / GlobalAveragePool           maxpool / avgpool global
    LRN                                         lrn (alpha / size: ONNX divides, netspec not)
    BatchNormalization                          batchnorm (momentum 1 − ONNX's)
    Relu (after a conv, fc or add: fused)       relu
    Sigmoid, Tanh, LeakyRelu, Abs, Softplus     logistic, tanh, leaky, abs, softrelu
    Clip(0, a), Mul(x, x)                       brelu a, square
    Add, Sum                                    add (from a, b, ...)
    Concat (axis 1)                             concat
    Split → the same LRN on each → Concat       lrn groups G (netspec's own multi-GPU export)
    Dropout                                     dropout p (ratio)
    Flatten (axis 1), Reshape to (N, -1)        nothing: fc and softmax flatten
    Identity                                    nothing
    Softmax (over the channels)                 softmax

Initializers are the weights (`numpy_helper.to_array`: raw or typed data, external data
files beside the model). Everything else is refused, one error per node naming it
(`FILE: error: node 'NAME' (OpType): ...`), all at once. The model file is parsed as protobuf
data; nothing in it is run.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dsl.errors import SpecError
from .model import Imported, Layer, Problems, rename, valid_names


@dataclass
class Val:
    """What a tensor is in netspec's terms: the output of layer `name` (`data`: the input),
    of shape (C, H, W) or (n,); flat: flattened to (N, C·H·W) by a Flatten or Reshape."""

    name: str
    shape: tuple
    flat: bool = False


class Reader:
    """The walk over one graph: tensors seen, layers made, problems found."""

    def __init__(self, model, path: str):
        from onnx import numpy_helper
        self.g = model.graph
        self.path = path
        self.problems = Problems(path, "")
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.g.initializer}
        for node in self.g.node:        # Constant nodes are initializers by another name
            if node.op_type == "Constant" and node.output:
                attr = {a.name: a for a in node.attribute}
                if "value" in attr:
                    self.consts[node.output[0]] = numpy_helper.to_array(attr["value"].t)
        self.skip: set[tuple] = set()      # nodes done, by their outputs
        for node in self.g.node:        # PyTorch shares equal initializers through Identity
            if node.op_type == "Identity" and node.input and node.input[0] in self.consts:
                self.consts[node.output[0]] = self.consts[node.input[0]]
                self.skip.add(tuple(node.output))
        self.vals: dict[str, Val] = {}
        self.layers: list[Layer] = []
        self.uses: dict[str, int] = {}
        for node in self.g.node:
            for t in node.input:
                self.uses[t] = self.uses.get(t, 0) + 1
        for o in self.g.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1
        self.shapes = _inferred_shapes(model)
        self.renamed: set[int] = set()
        self.failed: set[str] = set()      # outputs of refused nodes: reported once, there
        self.folded: dict[str, tuple] = {}   # a subgraph's last output -> (type, attrs, input)

    # -- helpers ---------------------------------------------------------------------------
    def error(self, node, message: str) -> None:
        self.problems.about(f"node '{node.name or node.output[0]}' ({node.op_type}): {message}")

    def val(self, node, i: int = 0) -> Val | None:
        name = node.input[i] if i < len(node.input) else ""
        v = self.vals.get(name)
        if v is None and name not in self.failed:
            if name in self.consts:
                self.error(node, f"input '{name}' is a constant; netspec layers read the "
                                 f"network's data")
            else:
                self.error(node, f"input '{name}' comes from a node netspec could not import")
        return v

    def const(self, node, i: int, what: str) -> np.ndarray | None:
        name = node.input[i] if i < len(node.input) else ""
        if name == "":
            return None
        if name not in self.consts:
            self.error(node, f"the {what} '{name}' is computed in the graph; netspec reads "
                             f"it only as an initializer")
            return None
        return np.asarray(self.consts[name])

    def add(self, node, layer: Layer, src: list[Val], shape: tuple, out: str | None = None):
        """Append `layer`, reading `src`, producing the node's output `out` of `shape`."""
        out = out or node.output[0]
        last = self.layers[-1].name if self.layers else "data"
        if [v.name for v in src] != [last]:
            layer.inputs = [v.name for v in src]
        layer.name = _layer_name(out, node)
        layer.source = f"{node.name or out} ({node.op_type})"
        self.layers.append(layer)
        self.vals[out] = Val(layer.name, shape)
        return layer

    def out_shape(self, node, i: int = 0) -> tuple | None:
        return self.shapes.get(node.output[i])


def _inferred_shapes(model) -> dict[str, tuple]:
    """Each tensor's shape without the batch dimension, from onnx's shape inference (None
    where a dimension is unknown)."""
    import onnx
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:               # onnx raises its own types for inconsistent graphs
        inferred = model
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + \
            list(inferred.graph.input):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])
            if None not in shape:
                out[vi.name] = shape
    return out


def _generated(tensor: str) -> bool:
    """A tensor name an exporter made up (PyTorch's '/layer1/layer1.0/conv1/Conv_output_0'),
    not one a person chose (netspec's exports name each layer's output after the layer)."""
    return tensor.startswith("/") or tensor.endswith("_output_0") or tensor.isdigit()


def _layer_name(tensor: str, node=None) -> str:
    """A readable, valid layer name: the output tensor's, or for made-up tensor names the
    module path in the node's name ('/layer1/layer1.0/conv1/Conv' is layer1_0_conv1)."""
    name = tensor
    if _generated(tensor) and node is not None and node.name.strip("/"):
        scopes: list[str] = []
        for part in node.name.strip("/").split("/")[:-1] or node.name.strip("/").split("/"):
            if scopes and part.startswith(scopes[-1] + "."):
                scopes[-1] = part               # PyTorch repeats the parent: layer1/layer1.0
            else:
                scopes.append(part)
        name = ".".join(scopes)
    elif _generated(tensor):
        name = tensor.strip("/").removesuffix("_output_0")
    return re.sub(r"[^A-Za-z0-9_\-]", "_", name) or "layer"


def _attrs(node) -> dict:
    """A node's attributes; floats (float32 in ONNX) to the 7 digits float32 holds, so that
    0.0005 is written 0.0005."""
    from onnx import helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = float(f"{v:.7g}") if isinstance(v, float) else v
    return out


def _square(r: Reader, node, a: dict, rank_k: list | None) -> tuple | None:
    """(size, stride, pad) of a Conv or pool node, or None after an error: the kernel,
    strides and pads must be the same on both axes and at both ends, no dilation."""
    k = a.get("kernel_shape", rank_k)
    s = a.get("strides", [1, 1])
    p = a.get("pads", [0, 0, 0, 0])
    d = a.get("dilations", [1, 1])
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    bad = []
    if auto not in ("NOTSET", "VALID"):
        bad.append(f"auto_pad {auto} (give explicit pads)")
    if k is None or len(k) != 2 or k[0] != k[1]:
        bad.append(f"kernel {k}: netspec's kernels are square 2-D")
    if len(set(s)) != 1:
        bad.append(f"strides {list(s)} differ between height and width")
    if len(set(p)) > 1:
        bad.append(f"pads {list(p)} differ between the sides (netspec pads all four alike)")
    if any(x != 1 for x in d):
        bad.append(f"dilations {list(d)}: netspec's windows are not dilated")
    for b in bad:
        r.error(node, b)
    if bad:
        return None
    return int(k[0]), int(s[0]), int(p[0]) if p else 0


def _spatial(r: Reader, node) -> Val | None:
    v = r.val(node)
    if v is not None and (v.flat or len(v.shape) != 3):
        r.error(node, f"reads a vector {v.shape}; it needs (C, H, W) maps")
        return None
    return v


# -- the node types ----------------------------------------------------------------------

def _conv(r: Reader, node) -> None:
    v = _spatial(r, node)
    a = _attrs(node)
    w = r.const(node, 1, "weight")
    b = r.const(node, 2, "bias")
    if w is None or v is None or w.ndim != 4:
        if w is not None and w.ndim != 4:
            r.error(node, f"a weight of shape {w.shape}: netspec convolves 2-D maps")
        return
    geo = _square(r, node, a, list(w.shape[2:]))
    if geo is None:
        return
    k, s, p = geo
    g = int(a.get("group", 1))
    if w.shape[1] * g != v.shape[0] or w.shape[0] % g or (b is not None and b.size != len(w)):
        r.error(node, f"a weight of shape {w.shape} (bias {None if b is None else b.shape}) "
                      f"with group {g} doesn't fit {v.shape[0]} input channels")
        return
    attrs = {"filters": int(w.shape[0]), "size": k}
    if s != 1:
        attrs["stride"] = s
    if p:
        attrs["pad"] = p
    if g != 1:
        attrs["groups"] = g
    if b is None:
        attrs["nobias"] = True
    layer = Layer("conv", "", attrs, weight=w.astype(np.float32),
                  bias=None if b is None else b.astype(np.float32))
    c, h, wd = v.shape
    shape = (w.shape[0], (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1)
    r.add(node, layer, [v], shape)


def _gemm(r: Reader, node) -> None:
    v = r.val(node)
    a = _attrs(node)
    w = r.const(node, 1, "weight")
    c = r.const(node, 2, "bias")
    if a.get("transA", 0):
        r.error(node, "transA 1: netspec's fc multiplies the input as it comes")
        return
    if v is None or w is None:
        return
    if w.ndim != 2:
        r.error(node, f"a weight of shape {w.shape}, not a matrix")
        return
    if not a.get("transB", 0):
        w = w.T                                 # (inputs, outputs) -> (outputs, inputs)
    n, inputs = w.shape
    if math.prod(v.shape) != inputs:
        r.error(node, f"the weight takes {inputs} inputs; its input has {math.prod(v.shape)}")
        return
    if c is not None and c.size not in (1, n):
        r.error(node, f"a bias of shape {c.shape}: netspec's fc adds one per output")
        return
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    bias = None if c is None else (beta * np.broadcast_to(c.reshape(-1), (n,)))
    layer = Layer("fc", "", {"outputs": int(n)} | ({"nobias": True} if c is None else {}),
                  weight=(alpha * w).astype(np.float32),
                  bias=None if bias is None else bias.astype(np.float32))
    if not a.get("transB", 0):
        layer.notes.append("Gemm transB 0: the weight is stored (inputs, outputs), "
                           "transposed here")
    if (alpha, beta) != (1.0, 1.0):
        layer.notes.append(f"Gemm alpha {alpha:g}, beta {beta:g} folded into the weight "
                           f"and bias")
    r.add(node, layer, [v], (int(n),))


def _pool(r: Reader, node) -> None:
    v = _spatial(r, node)
    a = _attrs(node)
    kind = "maxpool" if node.op_type == "MaxPool" else "avgpool"
    if node.op_type == "MaxPool" and (len(node.output) > 1 and node.output[1]
                                      or a.get("storage_order", 0)):
        r.error(node, "the Indices output: netspec's maxpool gives the maxima only")
        return
    geo = _square(r, node, a, None)
    if geo is None or v is None:
        return
    k, s, p = geo
    if kind == "avgpool" and p and not a.get("count_include_pad", 0):
        r.error(node, f"count_include_pad 0 with pads {p}: netspec's average counts the pad "
                      f"frame in the divisor (as Caffe and PyTorch)")
        return
    ceil = bool(a.get("ceil_mode", 0))
    attrs = {"size": k, "stride": s}
    if p:
        attrs["pad"] = p
    if ceil:
        attrs["ceil"] = True
    c, h, w = v.shape
    rnd = (lambda x: -(-x // s)) if ceil else (lambda x: x // s)
    ho, wo = rnd(h + 2 * p - k) + 1, rnd(w + 2 * p - k) + 1
    if ceil:    # the last window must start inside the input or its left pad (PyTorch, ONNX)
        ho -= (ho - 1) * s >= h + p
        wo -= (wo - 1) * s >= w + p
    r.add(node, Layer(kind, "", attrs), [v], (c, ho, wo))


def _global_pool(r: Reader, node) -> None:
    v = _spatial(r, node)
    if v is None:
        return
    if v.shape[1] != v.shape[2]:
        r.error(node, f"global pooling of {v.shape[1]}x{v.shape[2]} maps; netspec's "
                      f"windows are square")
        return
    kind = "maxpool" if node.op_type == "GlobalMaxPool" else "avgpool"
    r.add(node, Layer(kind, "", {"global": True}), [v], (v.shape[0], 1, 1))


def _lrn(r: Reader, node, groups: int = 1, out: str | None = None, src=None) -> None:
    v = src or _spatial(r, node)
    a = _attrs(node)
    n = int(a["size"])
    if n % 2 == 0:
        r.error(node, f"size {n} is even: ONNX's window is then lopsided; netspec's is "
                      f"centred (odd)")
        return
    if v is None:
        return
    alpha = float(a.get("alpha", 1e-4))
    attrs = {"size": n, "alpha": float(f"{alpha / n:.7g}"), "beta": float(a.get("beta", 0.75)),
             "k": float(a.get("bias", 1.0))}
    if groups != 1:
        attrs["groups"] = groups
    layer = Layer("lrn", "", attrs, notes=[
        f"LRN alpha: ONNX's alpha {alpha:g} is divided by size {n} in its formula; "
        f"netspec's is not: {alpha / n:.7g}"])
    if groups != 1:
        layer.notes.append(f"Split into {groups} → LRN on each → Concat in the source: "
                           f"groups {groups}")
    r.add(node, layer, [v], v.shape, out)


def _batchnorm(r: Reader, node) -> None:
    v = r.val(node)
    a = _attrs(node)
    arrays = [r.const(node, i, what) for i, what in
              ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance"))]
    if v is None or any(x is None for x in arrays):
        return
    if a.get("training_mode", 0):
        r.error(node, "training_mode 1: netspec imports a network at test time")
        return
    if len(node.output) > 1 and any(node.output[1:]):
        r.error(node, "the running-statistics outputs are used; netspec imports the "
                      "test-time form")
        return
    g, b, m, var = (x.astype(np.float32).reshape(-1) for x in arrays)
    if {x.size for x in (g, b, m, var)} != {v.shape[0]} or v.flat:
        r.error(node, f"statistics of {g.size} channels for an input of shape {v.shape}")
        return
    attrs = {}
    eps, momentum = float(a.get("epsilon", 1e-5)), 1.0 - float(a.get("momentum", 0.9))
    if abs(eps - 1e-5) > 1e-12:
        attrs["eps"] = eps
    if abs(momentum - 0.1) > 1e-7:
        attrs["momentum"] = round(momentum, 7)
    layer = Layer("batchnorm", "", attrs, weight=g, bias=b,
                  state={"running_mean": m, "running_var": var})
    r.add(node, layer, [v], v.shape)


def _fuse_relu(r: Reader, node, v: Val) -> bool:
    """Fold a Relu into the conv, fc or add that made its input, where nothing else reads
    that layer's output."""
    last = r.layers[-1] if r.layers else None
    if last is None or last.name != v.name or v.flat or r.uses.get(node.input[0], 0) != 1:
        return False
    if last.type in ("conv", "fc") and not last.relu:
        last.relu = True
    elif last.type == "add" and not last.attrs.get("relu"):
        last.attrs["relu"] = True
    else:
        return False
    if not _generated(node.output[0]):
        last.name = _layer_name(node.output[0])     # netspec's: 'conv1.linear' -> 'conv1'
    last.source += f" + {node.name or node.output[0]} (Relu)"
    r.vals[node.output[0]] = Val(last.name, v.shape)
    return True


ACTIVATIONS = {"Relu": "relu", "Sigmoid": "logistic", "Tanh": "tanh", "LeakyRelu": "leaky",
               "Abs": "abs", "Softplus": "softrelu", "Clip": "brelu", "Mul": "square",
               "Sqrt": "sqrt"}


def _activation(r: Reader, node) -> None:
    v = r.val(node)
    if v is None:
        return
    if node.op_type == "Relu" and _fuse_relu(r, node, v):
        return
    attrs = {}
    if node.op_type == "LeakyRelu":
        attrs["slope"] = float(_attrs(node).get("alpha", 0.01))
    elif node.op_type == "Clip":
        a = _attrs(node)
        lo = a.get("min", r.const(node, 1, "minimum") if len(node.input) > 1 else None)
        hi = a.get("max", r.const(node, 2, "maximum") if len(node.input) > 2 else None)
        if lo is None or hi is None or float(lo) != 0.0:
            r.error(node, f"Clip({lo}, {hi}): netspec's brelu is Clip(0, a)")
            return
        attrs["a"] = float(hi)
    elif node.op_type == "Mul" and node.input[0] != node.input[1]:
        r.error(node, "Mul of two different tensors: netspec's square is Mul(x, x)")
        return
    r.add(node, Layer(ACTIVATIONS[node.op_type], "", attrs), [v],
          v.shape if not v.flat else (math.prod(v.shape),))


def _dropout(r: Reader, node) -> None:
    v = r.val(node)
    a = _attrs(node)
    ratio = a.get("ratio")
    if ratio is None:
        got = r.const(node, 1, "ratio") if len(node.input) > 1 else None
        ratio = 0.5 if got is None else float(f"{float(got):.7g}")
    if v is not None:
        layer = Layer("dropout", "", {"p": float(ratio)},
                      notes=["the identity at test time, as in the source"])
        r.add(node, layer, [v], v.shape)


def _alias(r: Reader, node) -> None:
    v = r.val(node)
    if v is None:
        return
    last = r.layers[-1] if r.layers else None
    if r.uses.get(node.input[0], 0) == 1 and last is not None and last.name == v.name \
            and last.type == "concat" and id(last) not in r.renamed:
        last.name = _layer_name(node.output[0], node)   # netspec's concat: Concat, Identity
        r.renamed.add(id(last))
        v = Val(last.name, v.shape, v.flat)
    r.vals[node.output[0]] = v


def _flatten(r: Reader, node) -> None:
    v = r.val(node)
    if v is None:
        return
    if node.op_type == "Flatten":
        ok = int(_attrs(node).get("axis", 1)) == 1
        what = f"axis {_attrs(node).get('axis', 1)}"
    else:
        shape = r.const(node, 1, "shape")
        if shape is None:
            return
        shape = [int(x) for x in shape]
        ok = len(shape) == 2 and shape[0] in (0, -1, 1) and shape[1] in (-1, math.prod(v.shape))
        what = f"to {shape}"
    if not ok:
        r.error(node, f"{node.op_type} {what}: netspec flattens (N, C, H, W) to "
                      f"(N, C·H·W) only")
        return
    r.vals[node.output[0]] = Val(v.name, v.shape, flat=True)


def _softmax(r: Reader, node) -> None:
    v = r.val(node)
    if v is None:
        return
    axis = int(_attrs(node).get("axis", 1 if r.opset < 13 else -1))
    rank = 1 if v.flat else len(v.shape)
    ok = axis in (1, -rank) and (rank == 1 or all(d == 1 for d in v.shape[1:]))
    if not ok:
        r.error(node, f"softmax over axis {axis} of a rank-{rank + 1} tensor; netspec's is "
                      f"over the channels of (N, C) or (N, C, 1, 1)")
        return
    r.add(node, Layer("softmax", ""), [v], (math.prod(v.shape),))


ELEMENTWISE = {"Add": "add", "Sum": "add", "Max": "max"}


def _add(r: Reader, node) -> None:
    """Add and Sum (add), Max (max) of layers' outputs of one shape."""
    vals = [r.vals.get(t) for t in node.input]
    if any(t in r.consts for t in node.input):
        r.error(node, "adds a constant: netspec's add sums layers' outputs")
        return
    if None in vals:
        r.val(node, vals.index(None))
        return
    if len({v.shape for v in vals}) != 1 or any(v.flat for v in vals):
        r.error(node, f"inputs of shapes {[v.shape for v in vals]}: netspec adds equal "
                      f"shapes, without broadcasting")
        return
    layer = Layer(ELEMENTWISE[node.op_type], "", {})
    r.add(node, layer, vals, vals[0].shape)
    layer.inputs = [v.name for v in vals]           # add always names its inputs


def _concat(r: Reader, node) -> None:
    vals = [r.vals.get(t) for t in node.input]
    if None in vals:
        r.val(node, vals.index(None))
        return
    axis = int(_attrs(node).get("axis", 1))
    rank = len(vals[0].shape) + 1
    if axis not in (1, 1 - rank) or any(v.flat for v in vals) or \
            len({v.shape[1:] for v in vals}) != 1:
        r.error(node, f"Concat on axis {axis} of shapes {[v.shape for v in vals]}: netspec "
                      f"concatenates channels of equal maps")
        return
    shape = (sum(v.shape[0] for v in vals), *vals[0].shape[1:])
    layer = Layer("concat", "", {})
    r.add(node, layer, vals, shape)
    layer.inputs = [v.name for v in vals]


def _split(r: Reader, node) -> None:
    """Split on the channels into equal parts, each part read by one LRN of the same
    attributes, their outputs concatenated in order: netspec's multi-GPU LRN, an lrn with
    groups. Any other Split is refused."""
    consumers = [[n for n in r.g.node if t in n.input] for t in node.output]
    lrns = [c[0] for c in consumers if len(c) == 1 and c[0].op_type == "LRN"]
    cat = [[n for n in r.g.node if lrn.output[0] in n.input] for lrn in lrns]
    ok = (len(lrns) == len(node.output) > 1 and int(_attrs(node).get("axis", 0)) == 1
          and all(len(c) == 1 and c[0].op_type == "Concat" for c in cat)
          and len({tuple(c[0].output) for c in cat}) == 1
          and list(cat[0][0].input) == [lrn.output[0] for lrn in lrns]
          and len({str(_attrs(lrn)) for lrn in lrns}) == 1)
    v = r.val(node)
    if v is None:
        return
    if not ok:
        r.error(node, "a Split that is not LRN per equal part then Concat: netspec "
                      "imports a split only as an lrn's groups")
        return
    concat = cat[0][0]
    _lrn(r, lrns[0], groups=len(lrns), out=concat.output[0], src=v)
    r.skip.update(tuple(n.output) for n in (*lrns, concat))


CONVERT = {"Conv": _conv, "Gemm": _gemm, "MaxPool": _pool, "AveragePool": _pool,
           "GlobalMaxPool": _global_pool, "GlobalAveragePool": _global_pool, "LRN": _lrn,
           "BatchNormalization": _batchnorm, "Dropout": _dropout, "Identity": _alias,
           "Flatten": _flatten, "Reshape": _flatten, "Softmax": _softmax, "Add": _add,
           "Sum": _add, "Max": _add, "Concat": _concat, "Split": _split,
           **{op: _activation for op in ACTIVATIONS}}

MISSING = {"MatMul": "MatMul: netspec reads a fully-connected layer as Gemm"}


def _input(r: Reader):
    inits = set(r.consts)
    inputs = [i for i in r.g.input if i.name not in inits]
    if len(inputs) != 1:
        r.problems.about(f"the graph has {len(inputs)} inputs "
                         f"({', '.join(i.name for i in inputs)}); netspec reads one image "
                         f"batch")
        return None
    i = inputs[0]
    dims = i.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    if len(shape) != 4 or None in shape[1:]:
        named = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims]
        r.problems.about(f"input '{i.name}' has shape {named}; netspec reads "
                         f"(N, C, H, W) with C, H and W fixed")
        return None
    r.vals[i.name] = Val("data", shape[1:])
    return shape[1:]


def read_onnx_model(path):
    """The ModelProto of `path` (SpecError `FILE: error:` when it is not one)."""
    try:
        import onnx
    except ImportError:
        raise SpecError.file("importing ONNX needs the onnx package: pip install "
                             "'netspec[onnx]'", str(path)) from None
    try:
        return onnx.load(str(path))
    except OSError as e:
        raise SpecError.file(e.strerror or str(e), str(path)) from None
    except Exception as e:                  # protobuf's DecodeError and onnx's own
        raise SpecError.file(f"not an ONNX model: {e}", str(path)) from None


def import_onnx(path, weights=None, mean=None) -> Imported:
    """An ONNX model (its initializers the weights) as a netspec network. The input is
    taken as it comes: for netspec's own exports, RGB in 0..255 with the mean image of the
    metadata subtracted (that mean and the class names are carried over); for others, the
    preprocessing their maker used (a note says so). SpecError listing every node
    refused."""
    if weights is not None or mean is not None:
        raise SpecError.file("an ONNX model holds its own weights; give no --weights or "
                             "--mean", str(path))
    model = read_onnx_model(path)
    r = Reader(model, str(path))
    r.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    shape = _input(r)
    if shape is not None:
        _fold_normalisations(r)
        _walk(r)
    _check_output(r)
    r.problems.raise_if_any()
    meta = {p.key: p.value for p in model.metadata_props}
    notes = [f"ONNX opset {r.opset}, made by {model.producer_name or 'an unnamed producer'}"
             f" {model.producer_version}".rstrip()]
    layers = r.layers
    out = r.vals.get(r.g.output[0].name)
    outputs = math.prod(out.shape) if out is not None else None
    if not layers or layers[-1].type != "softmax":
        layers.append(Layer("softmax", "prob", inputs=None, notes=[
            "added: a netspec network ends in softmax; the source ends without one"]))
    rename(layers)
    name = meta.get("netspec.network") or Path(path).stem
    imp = Imported("ONNX", [str(path)], valid_names([name])[0], shape, layers, notes,
                   has_weights=True, outputs=outputs)
    _metadata(imp, meta)
    return imp


def _fold_normalisations(r: Reader) -> None:
    """Within-map normalisations written as ONNX subgraphs (ops/rnorm.py, ops/cnorm.py: ONNX's
    LRN is across channels only) become one layer again:

        rnorm:  y = x · (k + α · AveragePool(x · x))^−β                (pad counted)
        cnorm:  the same of d = x − AveragePool(x) (pad not counted), times x

    the pools n×n, stride 1, padded (n//2, n−1−n//2), every inner tensor read once. The
    subgraph's nodes are skipped and its last Mul becomes the layer (r.folded)."""
    made = {o: n for n in r.g.node for o in n.output}

    def one(t, op):
        n = made.get(t)
        return n if n is not None and n.op_type == op and r.uses.get(t) == 1 else None

    def const(n, i):
        v = r.consts.get(n.input[i]) if len(n.input) > i else None
        return None if v is None or np.size(v) != 1 else float(np.asarray(v).reshape(-1)[0])

    def window(pool, counted):
        a = _attrs(pool)
        k = list(a.get("kernel_shape", []))
        if len(k) != 2 or k[0] != k[1] or list(a.get("strides", [1, 1])) != [1, 1] or \
                int(a.get("count_include_pad", 0)) != counted or a.get("ceil_mode", 0):
            return None
        lo, hi = k[0] // 2, k[0] - 1 - k[0] // 2
        return k[0] if list(a.get("pads", [0] * 4)) == [lo, lo, hi, hi] else None

    for last in r.g.node:
        if last.op_type != "Mul" or len(last.input) != 2:
            continue
        x, rt = last.input
        pw = one(rt, "Pow")
        add = pw and one(pw.input[0], "Add")
        scale = add and one(add.input[0], "Mul")
        pool = scale and one(scale.input[0], "AveragePool")
        sq = pool and one(pool.input[0], "Mul")
        if not sq or sq.input[0] != sq.input[1] or None in (const(pw, 1), const(add, 1),
                                                              const(scale, 1)):
            continue
        n, d, chain = window(pool, 1), sq.input[0], [pw, add, scale, pool, sq]
        kind = "rnorm" if d == x else None
        sub = d != x and made.get(d)
        if sub and sub.op_type == "Sub" and r.uses.get(d) == 2 and sub.input[0] == x:
            mean = one(sub.input[1], "AveragePool")
            if mean and mean.input[0] == x and window(mean, 0) == n:
                kind, chain = "cnorm", chain + [sub, mean]
        if kind is None or n is None:
            continue
        r.folded[last.output[0]] = (kind, {"size": n, "alpha": const(scale, 1),
                                           "beta": -const(pw, 1), "k": const(add, 1)}, x)
        r.skip.update(tuple(c.output) for c in chain)


def _folded(r: Reader, node) -> None:
    kind, attrs, x = r.folded[node.output[0]]
    v = r.vals.get(x)
    if v is None:
        return
    layer = Layer(kind, "", attrs)
    layer.notes.append(f"{kind}: a within-map normalisation ONNX writes as AveragePool, Mul, "
                       f"Add, Pow and Mul nodes (netspec's own export of it), folded back")
    r.add(node, layer, [v], v.shape)


def _walk(r: Reader) -> None:
    for node in r.g.node:
        if tuple(node.output) in r.skip or node.op_type == "Constant":
            continue
        if node.output and node.output[0] in r.folded:
            _folded(r, node)
            continue
        if node.domain not in ("", "ai.onnx"):
            r.error(node, f"an operator of domain '{node.domain}': netspec imports the "
                          f"standard ONNX operators")
            continue
        convert = CONVERT.get(node.op_type)
        if convert is None:
            why = MISSING.get(node.op_type, f"{node.op_type} has no netspec layer type")
            r.error(node, f"{why} (netspec imports {', '.join(sorted(CONVERT))})")
        else:
            convert(r, node)
        for out in node.output:         # a refused node's readers go on with its shape
            if out and out not in r.vals and tuple(node.output) not in r.skip:
                if out in r.shapes:
                    r.vals[out] = Val(_layer_name(out, node), r.shapes[out])
                r.failed.add(out)


def _check_output(r: Reader) -> None:
    if len(r.g.output) != 1:
        r.problems.about(f"the graph has {len(r.g.output)} outputs; netspec's network has "
                         f"one (its softmax)")
        return
    v = r.vals.get(r.g.output[0].name)
    if v is not None and r.g.output[0].name not in r.failed and \
            (not r.layers or v.name != r.layers[-1].name):
        r.problems.about(f"the output '{r.g.output[0].name}' is not the last layer's; "
                         f"netspec's network ends in its last layer")


def _metadata(imp: Imported, meta: dict) -> None:
    """netspec's own metadata (onnx_export.py): classes and the mean image."""
    import base64
    if "netspec.spec" in meta:
        imp.notes.append("written by `netspec export`: the input is RGB in 0..255 minus the "
                         "mean image of its metadata (carried over)")
    else:
        imp.channel_order = "the source's"
        imp.notes.append("the input is taken as the source's maker fed it (channel order, "
                         "scale, mean): check before predict")
    try:
        if "netspec.classes" in meta:
            imp.classes = [str(c) for c in json.loads(meta["netspec.classes"])]
        if "netspec.class_names" in meta:
            imp.class_names = [str(c) for c in json.loads(meta["netspec.class_names"])]
        if "netspec.mean_image" in meta:
            m = np.frombuffer(base64.b64decode(meta["netspec.mean_image"]), "<f4")
            b = int(round(math.sqrt(m.size / 3)))
            imp.mean = m.reshape(b, b, 3).astype(np.float32)
    except (ValueError, TypeError):
        imp.notes.append("netspec metadata unreadable: classes and mean not carried over")
        imp.classes = imp.class_names = imp.mean = None
    if imp.classes is not None and len(imp.classes) != imp.class_count:
        imp.classes = imp.class_names = None
