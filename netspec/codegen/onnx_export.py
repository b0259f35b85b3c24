"""ONNX export: the IR and its parameter arrays as an ONNX model of the network at test time.

Like the kernel renderers, this reads a built `Graph` and emits a file; it runs nothing, so it
sits in codegen and never imports runtime or train (the caller hands it the parameters: a
checkpoint's, or a freshly initialised net's). The `onnx` package is an extra
(`pip install netspec[onnx]`), imported only here.

What the model computes (opset 17, float32, NCHW, batch dimension `N`):
    input  `data`  (N, C, H, W), the preprocessed crop (mean subtracted), as `Net.forward` takes
    output `<softmax layer>` (N, classes), the softmax probabilities (`Net.predict_proba`)

Each op declares the ONNX node that computes it (`Op.onnx_node` in its ops/ module: the LRN
alpha convention lives in ops/lrn.py beside the paper's formula); this module only lays out the
parts. The logical GPUs become what they compute. Each layer's whole output is one tensor named
after the layer; a part reads channel ranges of its sources (ONNX `Slice`, or one `Split` when the
parts read consecutive ranges of one tensor):
- conv/fc whose parts all read the same input (`connect all`): one Conv/Gemm with the stacked
  weight;
- conv whose parts read consecutive equal ranges and write equal channel counts (`same-gpu`
  on even splits, `groups G`): one Conv with `group`;
- otherwise (uneven splits or groups that straddle GPUs): Split → one Conv/Gemm per part →
  Concat, the part's weight rows cut from the stacked weight by `Split` (a constant that
  runtimes fold) or its own `<layer>.part<i>.weight`;
- lrn: Split → LRN per part → Concat, since the paper's sum stops at each GPU's part (§3.3);
  ONNX's LRN divides alpha by `size` (as Caffe and PyTorch do) and the paper's doesn't, so the
  exported alpha is alpha·size;
- dropout is the identity at test time (the paper's ×0.5 is folded into training's inverted
  dropout, see ops/dropout.py); relu fused into conv/fc is a Relu node.

Initializer names are the parameter names of `Graph.param_shapes()` (`conv2.weight`, ...), so
an ONNX file and a netspec checkpoint name the same tensors alike. The model's metadata
(`metadata_props`) holds `netspec.network`, `netspec.spec_sha256` (of the spec's text),
`netspec.spec` (the text itself) and, when known, `netspec.classes` and `netspec.class_names`
(JSON lists: class ids, human names), and `netspec.preprocessing`: the input `predict` gives
the network, as JSON (`preprocessing_metadata`), with the run's mean image in
`netspec.mean_image` (base64 of little-endian float32, shape (base, base, 3), RGB, 0..255).
"""
from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence

import numpy as np

from ..atomic import atomic_write
from ..dsl.errors import SpecError
from ..errors import NetspecError
from ..ir.build import model_parallel_twin
from ..ir.graph import Graph, Layer

OPSET = 17
IR_VERSION = 8          # what opset 17 needs; older runtimes read it too


class ExportError(NetspecError):
    """A network or parameter set that can't be written as ONNX; the message names the
    layer or parameter."""


def spec_sha256(graph: Graph) -> str:
    """Hex SHA-256 of the spec's source text (UTF-8)."""
    return hashlib.sha256(graph.spec.source.encode()).hexdigest()


class OnnxBuilder:
    """Graph + parameters -> an ONNX model: its nodes, initializers and constants, added
    layer by layer."""

    def __init__(self, graph: Graph, params: Mapping[str, np.ndarray]):
        from onnx import helper
        self.h = helper
        self.g = graph
        self.params = params
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.fconsts: dict[str, np.ndarray] = {}       # float scalars (Clip's bounds)
        self._slices: dict[tuple[str, int, int], str] = {}

    # -- small emitters ----------------------------------------------------------------------
    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str,
             **attrs) -> None:
        self.nodes.append(self.h.make_node(op, list(inputs), list(outputs), name=name, **attrs))

    def const(self, name: str, values) -> str:
        if name not in self.consts:
            self.consts[name] = np.asarray(values, np.int64)
        return name

    def param(self, name: str) -> str:
        self.inits[name] = np.ascontiguousarray(self.params[name], np.float32)
        return name

    def channels(self, layer: str, a: int, b: int) -> str:
        """The tensor of channels a..b of a layer's whole output."""
        total = self.g.layer(layer).out_shape[0]
        if (a, b) == (0, total):
            return layer
        key = (layer, a, b)
        if key not in self._slices:
            out = f"{layer}.channels{a}_{b}"
            self.node("Slice", [layer, self.const(f"const.{a}", [a]),
                                self.const(f"const.{b}", [b]), self.const("const.axis1", [1])],
                      [out], f"{layer}.slice{a}_{b}")
            self._slices[key] = out
        return self._slices[key]

    # -- reading parts -----------------------------------------------------------------------
    def ranges(self, layer: Layer, part) -> list[tuple[str, int, int]]:
        """The channel ranges (source layer, first, end) a part reads, adjacent ones merged."""
        out: list[list] = []
        for s in part.sources:
            src = self.g.layer(s.layer)
            a = src.parts[s.part].start + s.start
            b = a + s.channels
            if out and out[-1][0] == s.layer and out[-1][2] == a:
                out[-1][2] = b
            else:
                out.append([s.layer, a, b])
        return [tuple(r) for r in out]

    def join(self, ranges, name: str) -> str:
        tensors = [self.channels(*r) for r in ranges]
        if len(tensors) == 1:
            return tensors[0]
        self.node("Concat", tensors, [name], f"{name}.concat", axis=1)
        return name

    def part_inputs(self, layer: Layer, parts) -> list[str]:
        """One input tensor per part: a single Split where the parts read consecutive ranges
        of one tensor covering all of it, else Slice/Concat per part."""
        rs = [self.ranges(layer, p) for p in parts]
        names = [f"{layer.name}.part{p.index}.input" for p in parts]
        if all(len(r) == 1 for r in rs):
            srcs = {r[0][0] for r in rs}
            bounds = [(r[0][1], r[0][2]) for r in rs]
            if len(srcs) == 1 and len(parts) > 1:
                src = srcs.pop()
                total = self.g.layer(src).out_shape[0]
                if bounds[0][0] == 0 and bounds[-1][1] == total and all(
                        x[1] == y[0] for x, y in itertools.pairwise(bounds)):
                    sizes = [b - a for a, b in bounds]
                    self.node("Split", [src, self.const(f"{layer.name}.split",
                                                        sizes)], names,
                              f"{layer.name}.split", axis=1)
                    return names
        return [self.join(r, n) for r, n in zip(rs, names)]

    def concat_out(self, layer: Layer, outs: list[str]) -> None:
        if len(outs) == 1:
            self.node("Identity", outs, [layer.name], f"{layer.name}.output")
        else:
            self.node("Concat", outs, [layer.name], f"{layer.name}.concat", axis=1)

    def whole_input(self, layer: Layer) -> str:
        """A channel-wise layer's input: its parts' inputs in channel order, each channel
        once (parts reading the replicated input all read the same channels)."""
        ranges, seen = [], set()
        for p in sorted(layer.parts, key=lambda p: p.start):
            if (p.start, p.stop) in seen:
                continue
            seen.add((p.start, p.stop))
            for r in self.ranges(layer, p):
                if ranges and ranges[-1][0] == r[0] and ranges[-1][2] == r[1]:
                    ranges[-1] = (r[0], ranges[-1][1], r[2])
                else:
                    ranges.append(r)
        return self.join(ranges, f"{layer.name}.input")

    # -- layers ------------------------------------------------------------------------------
    def weighted(self, layer: Layer) -> None:
        names = layer.param_shapes()
        stacked = f"{layer.name}.weight" in names
        for n in names:
            if n not in self.params:
                raise ExportError(f"layer '{layer.name}': parameter '{n}' is missing")
            if tuple(np.shape(self.params[n])) != tuple(names[n]):
                raise ExportError(f"layer '{layer.name}': parameter '{n}' has shape "
                                  f"{tuple(np.shape(self.params[n]))}, expected {names[n]}")
        parts = layer.parts
        rs = [self.ranges(layer, p) for p in parts]
        pre = f"{layer.name}.linear" if layer.relu else layer.name
        # a conv or fc without a bias (`nobias`): Conv and Gemm take none (an optional input)
        bias = any(n.endswith(".bias") for n in names)
        if stacked and all(r == rs[0] for r in rs):                 # connect all: one op
            x = self.join(rs[0], f"{layer.name}.input")
            self.linear(layer, x, self.param(f"{layer.name}.weight"),
                        self.param(f"{layer.name}.bias") if bias else None, pre, groups=1)
        elif (stacked and self._op_type(layer) == "Conv"         # ONNX groups only Conv
              and len({p.channels for p in parts}) == 1
              and self._grouped(layer, rs)):                        # same-gpu, even: group
            src = rs[0][0][0]
            self.linear(layer, src, self.param(f"{layer.name}.weight"),
                        self.param(f"{layer.name}.bias") if bias else None, pre,
                        groups=len(parts))
        else:                                                       # Split / op / Concat
            xs = self.part_inputs(layer, parts)
            bs = [None] * len(parts)
            if stacked:
                ws = [f"{layer.name}.part{p.index}.weight" for p in parts]
                sizes = self.const(f"{layer.name}.rows", [p.channels for p in parts])
                self.node("Split", [self.param(f"{layer.name}.weight"), sizes], ws,
                          f"{layer.name}.weight.split", axis=0)
                if bias:
                    bs = [f"{layer.name}.part{p.index}.bias" for p in parts]
                    self.node("Split", [self.param(f"{layer.name}.bias"), sizes], bs,
                              f"{layer.name}.bias.split", axis=0)
            else:
                ws = [self.param(f"{layer.name}.part{p.index}.weight") for p in parts]
                if bias:
                    bs = [self.param(f"{layer.name}.part{p.index}.bias") for p in parts]
            outs = []
            for p, x, w, b in zip(parts, xs, ws, bs):
                o = f"{layer.name}.part{p.index}.output"
                self.linear(layer, x, w, b, o, groups=1)
                outs.append(o)
            self.node("Concat", outs, [pre], f"{layer.name}.concat", axis=1)
        if layer.relu:
            self.node("Relu", [pre], [layer.name], f"{layer.name}.relu")

    def _grouped(self, layer: Layer, rs) -> bool:
        """Parts read consecutive, equal, single ranges of one tensor covering all of it."""
        if not all(len(r) == 1 for r in rs) or len({r[0][0] for r in rs}) != 1:
            return False
        bounds = [(r[0][1], r[0][2]) for r in rs]
        total = self.g.layer(rs[0][0][0]).out_shape[0]
        return (bounds[0][0] == 0 and bounds[-1][1] == total
                and len({b - a for a, b in bounds}) == 1
                and all(x[1] == y[0] for x, y in itertools.pairwise(bounds)))

    def flat(self, layer: Layer, x: str) -> str:
        """x flattened to (N, C·H·W) when the layer's output is a vector and its input maps."""
        if len(layer.out_shape) == 1 and len(layer.in_shape) > 1:
            self.node("Flatten", [x], [f"{x}.flat"], f"{x}.flatten", axis=1)
            return f"{x}.flat"
        return x

    def op_node(self, layer: Layer, inputs: list[str], out: str, **extra) -> None:
        """The op's own ONNX node (Op.onnx_node), on `inputs`."""
        try:
            op_type, attrs = layer.op.onnx_node(layer.attrs)
        except NotImplementedError:
            raise ExportError(f"layer '{layer.name}': no ONNX form for layer type "
                              f"'{layer.type}'") from None
        attrs = dict(attrs)
        inputs = [self.flat(layer, inputs[0]), *inputs[1:]]
        if attrs.pop("_same_input", False):            # Mul(x, x)
            inputs.append(inputs[0])
        for i, v in enumerate(attrs.pop("_float_inputs", ())):     # Clip's min and max
            name = f"{layer.name}.input{i + 1}"
            self.fconsts[name] = np.asarray(v, np.float32)
            inputs.append(name)
        then = attrs.pop("_then", ())                  # nodes after it (linear: Mul, Add)
        first = f"{out}.{op_type.lower()}" if then else out
        self.node(op_type, inputs, [first], f"{out}.{op_type.lower()}", **attrs, **extra)
        for j, (next_type, next_attrs) in enumerate(then):
            self.then_node(layer, j, next_type, next_attrs, first,
                           out if j == len(then) - 1 else f"{out}.then{j}")
            first = f"{out}.then{j}"

    def then_node(self, layer: Layer, j: int, op_type: str, attrs: dict, x: str,
                  out: str) -> None:
        """Node j of an op's `_then` chain, on x (its float scalars as constants)."""
        attrs, inputs = dict(attrs), [x]
        for i, v in enumerate(attrs.pop("_float_inputs", ())):
            name = f"{layer.name}.then{j}.input{i + 1}"
            self.fconsts[name] = np.asarray(v, np.float32)
            inputs.append(name)
        self.node(op_type, inputs, [out], f"{out}.then{j}.{op_type.lower()}", **attrs)

    def _op_type(self, layer: Layer) -> str | None:
        try:
            return layer.op.onnx_node(layer.attrs)[0]
        except NotImplementedError:
            return None

    def linear(self, layer: Layer, x: str, w: str, b: str | None, out: str,
               groups: int) -> None:
        if layer.type == "local":
            return self.local(layer, x, w, b, out)
        self.op_node(layer, [x, w] + ([b] if b is not None else []), out,
                     **({"group": groups} if groups > 1 else {}))

    def local(self, layer: Layer, x: str, w: str, b: str | None, out: str) -> None:
        """A locally connected layer (ONNX has no unshared Conv) as standard nodes: its input's
        windows gathered by a Conv whose kernel is the identity on (channel, u, v) — each
        output a sum of one product by 1.0 and zeros, exact — then one MatMul per output
        pixel, batched: (L, N, J) @ (L, J, O), L = Ho·Wo, J = C·k·k; the weight
        (O, Ho, Wo, C, k, k) reshaped and transposed to (L, J, O); plus the per-pixel bias."""
        a, (_, ho, wo) = layer.attrs, layer.out_shape
        k = a["size"]
        shapes = layer.param_shapes()
        c = next(v for n, v in shapes.items() if n.endswith("weight"))[3]
        j, pixels = c * k * k, ho * wo
        eye = np.zeros((j, c, k, k), np.float32)
        for r in range(j):
            eye[r, r // (k * k), (r // k) % k, r % k] = 1.0
        self.inits[f"{out}.gather"] = eye
        pad = a.get("pad", 0)
        n = f"{out}."
        self.node("Conv", [x, f"{out}.gather"], [n + "windows"], n + "windows",
                  kernel_shape=[k, k], strides=[a.get("stride", 1)] * 2, pads=[pad] * 4)
        self.node("Reshape", [n + "windows", self.const(n + "njl.shape", [0, j, pixels])],
                  [n + "njl"], n + "njl")
        self.node("Transpose", [n + "njl"], [n + "lnj"], n + "lnj", perm=[2, 0, 1])
        self.node("Reshape", [w, self.const(n + "olj.shape", [-1, pixels, j])], [n + "olj"],
                  n + "olj")
        self.node("Transpose", [n + "olj"], [n + "ljo"], n + "ljo", perm=[1, 2, 0])
        self.node("MatMul", [n + "lnj", n + "ljo"], [n + "lno"], n + "matmul")
        self.node("Transpose", [n + "lno"], [n + "nol"], n + "nol", perm=[1, 2, 0])
        y = n + "nohw" if b is not None else out
        self.node("Reshape", [n + "nol", self.const(n + "nohw.shape", [0, -1, ho, wo])], [y],
                  n + "nohw")
        if b is not None:
            self.node("Add", [y, b], [out], n + "bias")

    def subgraph(self, layer: Layer) -> bool:
        """An op that ONNX computes with several nodes declares them: `Op.onnx_graph(a, x,
        out)` -> (nodes as (op_type, inputs, outputs, attributes), float scalar constants by
        name), plain data (rnorm, cnorm). False when the op has none."""
        build = getattr(layer.op, "onnx_graph", None)
        if build is None:
            return False
        nodes, floats = build(layer.attrs, self.whole_input(layer), layer.name)
        for name, v in floats.items():
            self.fconsts[name] = np.asarray(v, np.float32)
        for op_type, inputs, outputs, attrs in nodes:
            self.node(op_type, inputs, outputs, f"{outputs[0]}.{op_type.lower()}", **attrs)
        return True

    def layer(self, layer: Layer) -> None:
        if self.subgraph(layer):
            return None
        if layer.weighted and layer.op.channelwise:     # batchnorm: its tensors are inputs
            tensors = [self.param(n) for n in layer.param_shapes()]
            return self.op_node(layer, [self.whole_input(layer), *tensors], layer.name)
        if layer.weighted:
            return self.weighted(layer)
        if layer.op.joins:                          # add: each input whole, summed
            inputs = [self.channels(i, 0, self.g.layer(i).out_shape[0]) for i in layer.inputs]
            out = f"{layer.name}.sum" if layer.attrs.get("relu") else layer.name
            self.node(layer.op.onnx_node(layer.attrs)[0], inputs, [out], f"{layer.name}.sum")
            if layer.attrs.get("relu"):
                self.node("Relu", [out], [layer.name], f"{layer.name}.relu")
            return None
        if layer.op.onnx_per_part:                 # lrn: Split -> one node per part -> Concat
            uniq, seen = [], set()
            for p in sorted(layer.parts, key=lambda p: p.start):
                if (p.start, p.stop) not in seen:
                    seen.add((p.start, p.stop))
                    uniq.append(p)
            if len(uniq) > 1:
                outs = [f"{layer.name}.part{p.index}.output" for p in uniq]
                for x, o in zip(self.part_inputs(layer, uniq), outs):
                    self.op_node(layer, [x], o)
                self.concat_out(layer, outs)
                return
        # channel-wise ops (pooling, relu, dropout) and the softmax: the parts' outputs are
        # the op applied to their inputs, so one node on the whole input computes them all
        self.op_node(layer, [self.whole_input(layer)], layer.name)


def preprocessing_metadata(graph: Graph, mean: np.ndarray | None) -> dict[str, str]:
    """The metadata that lets an onnxruntime user build `netspec predict`'s input: decode to
    RGB, rescale the shorter side to `base` and take the centre square (bilinear,
    antialiased: data/decode.py), subtract the mean image, take the centre `crop` x `crop`,
    planar NCHW float32 in 0..255 (not divided by 255); a 1-channel network reads the
    views' luma (train/input_check.py). mean: float32 (base, base, 3), or None when the
    weights come from no run (then there is no mean to subtract and `base` is the crop)."""
    import base64
    crop = graph.recipe.crop or graph.input_shape[1]
    info = {"channel_order": "RGB", "layout": "NCHW", "dtype": "float32",
            "scale": "0..255, pixel values as they are (not divided by 255)",
            "resize": "shorter side to base, centre square, bilinear (antialiased)",
            "crop": crop, "views": "centre crop; or the average of 10 crops' probabilities "
                                    "(4 corners and centre, and their mirror images)",
            "channels": graph.input_shape[0]}
    meta = {}
    if mean is None:
        info.update(base=crop, mean="none: exported without a run's data")
    else:
        mean = np.ascontiguousarray(mean, dtype="<f4")
        if mean.ndim != 3 or mean.shape[0] != mean.shape[1] or mean.shape[2] != 3:
            raise ExportError(f"the mean image has shape {mean.shape}, not (base, base, 3)")
        info.update(base=int(mean.shape[0]), mean="subtract netspec.mean_image: base64 of "
                    "little-endian float32, shape (base, base, 3), RGB, before the crop")
        meta["netspec.mean_image"] = base64.b64encode(mean.tobytes()).decode("ascii")
    meta["netspec.preprocessing"] = json.dumps(info)
    return meta


def export_onnx(graph: Graph, params: Mapping[str, np.ndarray], *,
                classes: Sequence[str] | None = None,
                class_names: Sequence[str] | None = None, opset: int = OPSET,
                mean: np.ndarray | None = None):
    """The network at test time as an `onnx.ModelProto` (see the module docstring).

    graph: a built IR graph. params: name -> array for every name of
    `graph.param_shapes()`, in those shapes (cast to float32). classes, class_names: the class
    ids (folder names or wnids) and human names, for the metadata. mean: the run's mean
    image, float32 (base, base, 3), for the preprocessing metadata. Raises ExportError naming a missing or misshapen parameter, or a layer
    type ONNX can't express.
    """
    from onnx import TensorProto, helper, numpy_helper

    if opset < 17:
        raise ExportError(f"opset {opset}: netspec writes opset 17 or later")
    if any(l.data_parallel for l in graph.layers):
        # at test time a hybrid net is its one-GPU form, with the same parameters
        try:
            graph = model_parallel_twin(graph.spec, gpus=1)
        except SpecError as e:
            raise ExportError(f"{graph.name}: its data-parallel layers have no one-GPU form "
                              f"to export: {str(e).splitlines()[0]}") from None
    b = OnnxBuilder(graph, params)
    unknown = [n for n in params if n not in graph.param_shapes()]
    if unknown:
        raise ExportError(f"parameters not in network '{graph.name}': {', '.join(unknown)}")
    for layer in graph.compute_layers:
        b.layer(layer)
    head = graph.compute_layers[-1]
    data = graph.layers[0]
    inputs = [helper.make_tensor_value_info(data.name, TensorProto.FLOAT,
                                            ["N", *graph.input_shape])]
    outputs = [helper.make_tensor_value_info(head.name, TensorProto.FLOAT,
                                             ["N", *head.out_shape])]
    inits = [numpy_helper.from_array(v, n) for n, v in b.inits.items()]
    inits += [numpy_helper.from_array(v, n) for n, v in b.consts.items()]
    inits += [numpy_helper.from_array(v, n) for n, v in b.fconsts.items()]
    g = helper.make_graph(b.nodes, graph.name, inputs, outputs, initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="netspec", ir_version=IR_VERSION,
                              doc_string=f"netspec network '{graph.name}' at test time: "
                                         f"softmax probabilities of mean-subtracted crops")
    meta = {"netspec.network": graph.name, "netspec.spec_sha256": spec_sha256(graph),
            "netspec.spec": graph.spec.source}
    if classes is not None:
        meta["netspec.classes"] = json.dumps(list(classes))
    if class_names is not None:
        meta["netspec.class_names"] = json.dumps(list(class_names))
    meta.update(preprocessing_metadata(graph, mean))
    helper.set_model_props(model, meta)
    return model


def write_onnx(graph: Graph, params: Mapping[str, np.ndarray], path, *,
               classes: Sequence[str] | None = None,
               class_names: Sequence[str] | None = None, opset: int = OPSET,
               mean: np.ndarray | None = None) -> int:
    """Export (see `export_onnx`), check with `onnx.checker`, write to `path`; the size in
    bytes."""
    import onnx

    model = export_onnx(graph, params, classes=classes, class_names=class_names, opset=opset,
                        mean=mean)
    data = model.SerializeToString()
    onnx.checker.check_model(model)
    atomic_write(path, data)     # a kill mid-way leaves an existing file whole
    return len(data)
