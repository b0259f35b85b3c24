"""What every importer builds: the network as netspec layers with their weights, and how it
is written out as spec text, parameters and the run state a saved run carries.

An importer reads its format into `Imported` (layers in order, each a netspec layer type with
its attributes, fused relu, notes and arrays); `spec_text()` renders the spec with comments
naming the source and every convention converted, `parameters()` the arrays under netspec's
names (`<layer>.weight` in PyTorch's layout (filters, C/groups, K, K) or (outputs, inputs);
`<layer>.bias`), and `run_state()` the state.json fields that eval, predict, export and
`train --init-from` read from a run (train/saved_run.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..dsl.errors import Collector, Pos

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")     # the spec grammar's WORD


@dataclass
class Layer:
    """One netspec layer. type: the spec keyword; attrs: its keys in the order written;
    weight/bias: float32 arrays in netspec's layout (None for unweighted layers or an import
    without weights); source: how the source calls it ('conv1 (Convolution)'); notes: the
    conversions made, written as comments above the line."""

    type: str
    name: str
    attrs: dict = field(default_factory=dict)
    relu: bool = False
    source: str = ""
    notes: list[str] = field(default_factory=list)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    pos: Pos | None = None
    inputs: list[str] | None = None      # `from a, b`; None: the layer above
    state: dict = field(default_factory=dict)   # more named arrays ('running_mean': ...)


@dataclass
class Imported:
    """A network read from another format. input_shape: (C, H, W). mean: (H, W, 3) float32
    in the channel order the network reads, pixel units 0..255, or None. channel_order: of
    the network's input as imported ('RGB', 'BGR' or 'grey')."""

    format: str
    sources: list[str]
    network: str
    input_shape: tuple[int, int, int]
    layers: list[Layer]
    notes: list[str] = field(default_factory=list)
    classes: list[str] | None = None
    class_names: list[str] | None = None
    mean: np.ndarray | None = None
    channel_order: str = "RGB"
    has_weights: bool = False
    origins: dict = field(default_factory=dict)   # the importer's own: where weights are
    outputs: int | None = None      # what the softmax reads, where the importer knows it
    recipe: list[str] = field(default_factory=list)   # the spec's `train` lines, if known

    @property
    def class_count(self) -> int:
        if self.outputs is not None:
            return self.outputs
        for layer in reversed(self.layers):
            if layer.type == "fc":
                return layer.attrs["outputs"]
            if layer.type == "conv":
                return layer.attrs["filters"]
        return self.input_shape[0]

    def spec_text(self) -> str:
        """The spec: a header naming the source and the conventions converted, then one line
        per layer with its own conversions as comments above it."""
        c, h, w = self.input_shape
        out = [f"# Imported by `netspec import` from {self.format}: {', '.join(self.sources)}"]
        out += [f"# {n}" for n in self.notes]
        out += ["", f"network {self.network}", f"input   {c}x{h}x{w}",
                f"classes {self.class_count}",
                "init weight gauss(0.01) bias 0   # only for layers trained anew", ""]
        width = max((len(layer.type) for layer in self.layers), default=4)
        for layer in self.layers:
            out += [f"# {n}" for n in layer.notes]
            line = f"{layer.type:<{width}} {layer.name}"
            if layer.inputs:
                line += f" from {', '.join(layer.inputs)}"
            for k, v in layer.attrs.items():
                line += f" {k}" if v is True else f" {k} {_number(v)}"
            if layer.relu:
                line += " relu"
            if layer.source:
                line += f"   # {layer.source}"
            out.append(line)
        if self.recipe:
            out += ["", *self.recipe]
        return "\n".join(out) + "\n"

    def parameters(self) -> dict[str, np.ndarray]:
        params = {}
        for layer in self.layers:
            if layer.weight is not None:
                params[f"{layer.name}.weight"] = np.ascontiguousarray(layer.weight, np.float32)
                if layer.bias is not None:          # None: a layer without one (nobias)
                    params[f"{layer.name}.bias"] = np.ascontiguousarray(layer.bias, np.float32)
                for k, v in layer.state.items():
                    params[f"{layer.name}.{k}"] = np.ascontiguousarray(v, np.float32)
        return params

    def run_state(self) -> dict:
        """The fields of a run's state.json (train/loop.py's) that a saved run's readers use:
        spec_text, classes, class_names and data_mean ((H, W, 3), 0..255, as the network
        reads its input), with step and epoch 0, and where it came from."""
        n = self.class_count
        classes = self.classes or [str(i) for i in range(n)]
        c, h, w = self.input_shape
        mean = self.mean if self.mean is not None else np.zeros((max(h, w),) * 2 + (3,),
                                                                 np.float32)
        return {"format": 1, "network": self.network, "epoch": 0, "batch": 0, "step": 0,
                "spec_text": self.spec_text(), "classes": classes,
                "class_names": self.class_names or classes,
                "data_mean": np.asarray(mean, np.float32).round(4).tolist(),
                "imported": {"format": self.format, "sources": self.sources,
                             "channel_order": self.channel_order}}


def _number(v) -> str:
    if isinstance(v, float):
        return f"{v:.9g}"
    return str(v)


def valid_names(names: list[str]) -> list[str]:
    """Each source name made a spec name (letters, digits, _ and -, not starting with a digit
    or '-'; other characters become _), unique in the list."""
    out, taken = [], set()
    for name in names:
        new = re.sub(r"[^A-Za-z0-9_\-]", "_", name) or "layer"
        if not NAME.fullmatch(new):
            new = "l" + new if new[0].isdigit() else "l_" + new.lstrip("-")
        base, k = new, 2
        while new in taken:
            new, k = f"{base}_{k}", k + 1
        taken.add(new)
        out.append(new)
    return out


def rename(layers: list[Layer]) -> None:
    """Give every layer a valid unique name, noting where the source's differs (and the
    `from` lists following)."""
    names = {}
    # a layer name is a C identifier (kernels are named after it): no '-', which a network's
    # name may hold
    for layer, new in zip(layers, valid_names([layer.name.replace("-", "_")
                                               for layer in layers])):
        names[layer.name] = new
        if new != layer.name:
            layer.notes.append(f"named {layer.name!r} in the source")
            layer.name = new
    for layer in layers:
        if layer.inputs:
            layer.inputs = [names.get(n, n) for n in layer.inputs]


def reverse_input_channels(layers: list[Layer], input_shape) -> str | None:
    """Make a network that reads BGR read RGB: reverse the input-channel axis of the first
    weighted layer's weight. Valid when every layer before it is the same under a reversal of
    the channels (pooling, relu, dropout, an lrn with an odd window and no groups) and that
    layer reads all input channels at once (a conv without groups, an fc). Returns None when
    done, else why it can't be."""
    c = input_shape[0]
    for layer in layers:
        if layer.type in ("maxpool", "avgpool", "relu", "dropout"):
            continue
        if layer.type == "lrn" and layer.attrs.get("size", 1) % 2 and \
                layer.attrs.get("groups", 1) == 1:
            continue
        if layer.type == "conv" and layer.attrs.get("groups", 1) == 1:
            if layer.weight is not None:
                layer.weight = np.ascontiguousarray(layer.weight[:, ::-1])
        elif layer.type == "fc":
            if layer.weight is not None:
                o = layer.weight.shape[0]
                w = layer.weight.reshape(o, c, -1)[:, ::-1]
                layer.weight = np.ascontiguousarray(w.reshape(o, -1))
        else:
            return f"{layer.type} '{layer.name}' comes before any conv or fc reads the input"
        layer.notes.append("input channels reversed: the source reads BGR, this network "
                           "reads RGB as netspec's data pipeline gives it")
        return None
    return "no conv or fc reads the input"


class Problems(Collector):
    """Errors of one source file, gathered so that all are reported at once (a SpecError:
    `FILE:LINE:COL: error:` with a caret for text, `FILE: error:` naming the layer for
    binary files)."""

    def about(self, message: str) -> None:
        self.diagnostics.append(_diag(None, message))


def _diag(pos, message):
    from ..dsl.errors import Diagnostic
    return Diagnostic(pos, message)


def read_class_list(path, count: int) -> tuple[list[str], list[str]]:
    """(class ids, human names) from a text file with one class per line, in output order:
    `ID NAME...` lines (Caffe's synset_words.txt: `n01440764 tench, Tinca tinca`) give ids and
    names; otherwise each line is both. SpecError when the lines are not `count`."""
    from ..dsl.errors import SpecError
    try:
        lines = [line.strip() for line in open(path, encoding="utf-8").read().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError.file(getattr(e, "strerror", None) or str(e), str(path)) from None
    lines = [line for line in lines if line]
    if len(lines) != count:
        raise SpecError.file(f"{len(lines)} classes, the network has {count} outputs",
                             str(path))
    split = [line.split(None, 1) for line in lines]
    ids = [s[0] for s in split]
    if all(len(s) == 2 for s in split) and len(set(ids)) == len(ids):
        return ids, [s[1] for s in split]
    return lines, lines
