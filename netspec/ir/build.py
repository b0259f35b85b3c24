"""Spec -> Graph: resolve each layer's attributes, connect inputs, infer shapes, place parts
on logical GPUs and find the transfers. Every error names the layer, the parameter and the
source position, and one pass reports all it finds."""
from __future__ import annotations

import dataclasses
import os
from types import MappingProxyType

from ..dsl.attrs import AttrDef, read_attrs, resolve, suggest
from ..dsl.errors import Collector, Pos
from ..dsl.parser import HEADER, load_spec_going_on, text_or_path
from ..dsl.spec import Spec
from ..ops import OPS
from ..ops.base import Op
from .graph import INPUT, Graph, Layer, Part, Source, Transfer

FROM = {"from": AttrDef("words", doc="input layer name(s)")}
WEIGHTED = {
    "relu": AttrDef("flag", doc="apply max(0, x) to the output (fused)"),
    "connect": AttrDef("word", default="all", choices=("same-gpu", "all"),
                       doc="which input parts each GPU's part reads"),
    "split": AttrDef("ints", minimum=1, doc="output channels per GPU, e.g. 48,48"),
    "gpu": AttrDef("int", minimum=0, doc="pin the layer to one GPU"),
    "weight": AttrDef("gauss", doc="initialisation of the weights: gauss(STD), or he for "
                       "N(0, 2/fan_in)"),
    "bias": AttrDef("float", doc="constant initial bias"),
    "lr_mult": AttrDef("float", default=1.0, minimum=0.0, doc="learning-rate multiplier"),
    "decay_mult": AttrDef("float", default=1.0, minimum=0.0, doc="weight-decay multiplier"),
    "parallel": AttrDef("word", default="model", choices=("model", "data"),
                        doc="model: split the channels over the GPUs (default); data: the "
                            "weights on every GPU, a slice of the batch on each"),
}
PINNABLE = {"gpu": WEIGHTED["gpu"]}
# `groups G` splits a layer's channels into G groups, as Caffe's `group` and PyTorch's `groups`:
# a conv's group k reads only input channels k·C/G .. (k+1)·C/G, an lrn normalises within each
# group. Like `split` it is partitioning, so it lives here: each group becomes its own part (on
# the GPU holding those channels), and every backend and kernel that runs parts runs groups.
GROUPS = {"groups": AttrDef("int", default=1, minimum=1,
                            doc="channel groups; each reads/normalises only its own channels")}


# read only; one shared copy for the layers that ask for no placement (most)
_NO_PLACEMENT = MappingProxyType({"split": None, "gpu": None})

def layer_schema(op) -> MappingProxyType:
    """Everything a layer statement of this type accepts: its op's keys plus placement. Built
    once per op (read only), not per layer statement."""
    schema = _SCHEMAS.get(op)
    if schema is None:
        schema = _SCHEMAS[op] = MappingProxyType(_layer_schema(op))
    return schema


_SCHEMAS: dict = {}


def _layer_schema(op) -> dict[str, AttrDef]:
    schema = dict(op.attrs)
    schema.update(FROM)
    if op.weighted and op.channelwise:
        schema.update({k: WEIGHTED[k] for k in ("lr_mult", "decay_mult")})
    elif op.weighted:
        schema.update(WEIGHTED)
    elif not op.follows_input_parts:
        schema.update(PINNABLE)
    if op.grouped:
        schema.update(GROUPS)
    return schema


def build_graph(source: Spec | str | os.PathLike | None = None, *, text: str | None = None,
                path: str | os.PathLike | None = None) -> Graph:
    """The IR of a spec: from its text (`text=`), its file (`path=`), or a parsed Spec. One
    positional `source` is also read as text or a path by dsl.parser.text_or_path (a str with
    a newline is text). Errors: SpecError, every error in the spec at once."""
    if source is not None and (text is not None or path is not None):
        raise TypeError("build_graph: give a source, or text=/path=, not both")
    if isinstance(source, Spec):
        spec, errs = source, Collector(source.path, source.source)
    else:
        where = text_or_path(source) if source is not None else {"text": text, "path": path}
        # the recipe's errors, if any, are reported with the layers' (not before them alone)
        spec, errs = load_spec_going_on(where.get("text"), path=where.get("path"))
    g = GraphBuilder(spec, errs).build()
    errs.raise_if_any()
    return g


def model_parallel_twin(spec: Spec, gpus: int | None = None) -> Graph:
    """The graph of `spec` with every `parallel data` dropped (each layer's channels split
    over the GPUs again), on `gpus` logical GPUs if given: the net a hybrid spec computes the
    same as (gpus=1), or its pure model-parallel form. SpecError when it can't be placed."""
    layers = []
    for ls in spec.layers:
        items, i = [], 0
        while i < len(ls.items):
            if ls.items[i].kind == "word" and ls.items[i].value == "parallel":
                i += 2
                continue
            items.append(ls.items[i])
            i += 1
        layers.append(dataclasses.replace(ls, items=tuple(items)))
    return build_graph(dataclasses.replace(spec, layers=tuple(layers),
                                           gpus=spec.gpus if gpus is None else gpus))


class GraphBuilder:
    """Spec -> Graph: layers read against their schemas, ordered, shaped and placed on the
    GPUs, then the transfers between them; errors go to the collector."""

    def __init__(self, spec: Spec, errs: Collector):
        self.spec, self.errs = spec, errs
        self.cycle = False
        self.unreadable: set[str] = set()     # layers whose attributes had an error
        # as the parser counts lines: at "\n" only
        self.line_lengths = [len(line.removesuffix("\r")) for line in spec.source.split("\n")]

    def err(self, pos: Pos, msg) -> None:
        self.errs.error(pos, msg)

    # -- 1. read each layer statement against its type's schema -----------------------------
    def read_layers(self) -> list[Layer]:
        layers: list[Layer] = []
        seen: dict[str, Pos] = {}
        prev = INPUT
        for ls in self.spec.layers:
            op = OPS.get(ls.type)
            if op is None:
                self.err(ls.pos, f"unknown layer type '{ls.type}'"
                                 f"{suggest(ls.type, list(OPS) + list(HEADER))}; layer types: "
                                 f"{', '.join(sorted(OPS))}")
                self.errs.dropped_layers.add(ls.pos.line)
                continue
            if ls.name == INPUT:
                self.err(ls.name_pos, f"'{INPUT}' is the network input's name; choose another")
                self.errs.dropped_layers.add(ls.pos.line)
                continue
            if ls.name in seen:
                self.err(ls.name_pos, f"layer '{ls.name}' is defined twice (first at "
                                      f"{seen[ls.name]})")
                self.errs.dropped_layers.add(ls.pos.line)
                continue
            seen[ls.name] = ls.pos
            line_end = Pos(ls.pos.line, self.line_lengths[ls.pos.line - 1] + 1)
            schema = layer_schema(op)
            reported = len(self.errs.diagnostics)
            attrs = read_attrs(ls.items, schema, ls.name, self.errs, line_end)
            values = resolve(attrs, schema, ls.name, self.errs, ls.name_pos)
            if len(self.errs.diagnostics) > reported:
                # its values are guesses (the error may stand at a block's use, not its line)
                self.unreadable.add(ls.name)
            pos = {k: a.value_pos for k, a in attrs.items()}
            pos.update({f"{k}.key": a.pos for k, a in attrs.items()})
            inputs = list(values.pop("from") or (prev,))
            layer = Layer(name=ls.name, type=ls.type,
                          attrs={k: values[k] for k in op.attrs}, inputs=inputs, pos=ls.pos,
                          attr_pos=pos)
            layer.attr_pos["name"] = ls.name_pos
            if op.weighted:
                layer.lr_mult, layer.decay_mult = values["lr_mult"], values["decay_mult"]
            if op.weighted and not op.channelwise:
                layer.data_parallel = values["parallel"] == "data"
                layer.relu = bool(values["relu"])
                layer.connect = values["connect"]
                layer.init_std = self.spec.init_std if values["weight"] is None \
                    else values["weight"]
                if layer.init_std != "he" and layer.init_std < 0:
                    self.err(pos["weight"], f"{ls.name}: the weight std must not be negative")
                layer.init_bias = self.spec.init_bias if values["bias"] is None \
                    else values["bias"]
                if values.get("nobias") and values["bias"] is not None:
                    self.err(pos["bias"], f"{ls.name}: 'bias' sets the initial bias of a "
                                          f"layer with 'nobias' (it has none)")
            split, gpu = values.get("split"), values.get("gpu")
            layer._placement = _NO_PLACEMENT if split is None and gpu is None \
                else {"split": split, "gpu": gpu}
            layer.groups = values.get("groups") or 1
            layers.append(layer)
            prev = ls.name
        return layers

    # -- 2. order: inputs must exist, no cycles -----------------------------------------------
    def order(self, layers: list[Layer]) -> list[Layer]:
        by_name = {l.name: l for l in layers}
        known = set(by_name) | {INPUT}
        for l in layers:
            bad = [i for i in l.inputs if i not in known]
            for name in bad:   # the "did you mean" is written only if the error is shown
                self.err(l.attr_pos.get("from", l.pos),
                         lambda l=l, name=name: f"{l.name}: unknown input layer '{name}'"
                                                f"{suggest(name, known)}")
            if bad:
                l.inputs = [i for i in l.inputs if i in known]
            if l.name in l.inputs:
                self.err(l.attr_pos.get("from", l.pos), f"{l.name}: a layer cannot read itself")
                l.inputs = [i for i in l.inputs if i != l.name]
        # Kahn's algorithm by levels, stable in file order: each round places, in file order,
        # every layer whose inputs were all placed in earlier rounds. Each layer is visited
        # when its last input is placed (not every round), so this is linear in the edges.
        index = {l.name: i for i, l in enumerate(layers)}
        waiting = {l.name: len(set(l.inputs) - {INPUT}) for l in layers}
        readers: dict[str, list[Layer]] = {}
        for l in layers:
            for i in set(l.inputs) - {INPUT}:
                readers.setdefault(i, []).append(l)
        done: list[Layer] = []
        ready = [l for l in layers if waiting[l.name] == 0]
        while ready:
            done.extend(ready)
            nxt = []
            for l in ready:
                for r in readers.get(l.name, ()):
                    waiting[r.name] -= 1
                    if waiting[r.name] == 0:
                        nxt.append(r)
            ready = sorted(nxt, key=lambda l: index[l.name])
        if len(done) < len(layers):
            placed = {l.name for l in done}
            pending = [l for l in layers if l.name not in placed]
            cyc = self._cycle(pending)
            first = by_name[cyc[0]]
            self.cycle = True
            self.err(first.attr_pos.get("from", first.pos),
                     f"{first.name}: the inputs form a cycle: {' -> '.join(cyc)}")
        return done

    @staticmethod
    def _cycle(pending: list[Layer]) -> list[str]:
        by_name = {l.name: l for l in pending}
        node = pending[0].name
        path: list[str] = []
        while node not in path:
            path.append(node)
            node = next(i for i in by_name[node].inputs if i in by_name)
        return path[path.index(node):] + [node]

    # -- 3. shapes, placement, transfers ------------------------------------------------------
    def build(self) -> Graph | None:
        spec = self.spec
        data = Layer(name=INPUT, type="input", attrs={}, inputs=[], pos=spec.pos["input"],
                     attr_pos={}, in_shape=spec.input_shape, out_shape=spec.input_shape,
                     replicated=True)
        data.parts = [Part(g, g, 0, spec.input_shape[0]) for g in range(spec.gpus)]
        layers = self.order(self.read_layers())
        clean = not self.errs.diagnostics
        unshaped = self.shape_all(layers, {INPUT: data})
        graph = Graph(spec.network, spec.input_shape, spec.classes, spec.gpus,
                      [data] + layers, spec.recipe, spec)
        if clean and not unshaped:
            self.check_graph(graph)
        elif not self.cycle:
            self.check_classes(graph, unshaped)
            self.check_input(graph)
        if self.errs.diagnostics:
            return None
        graph.transfers = find_transfers(graph)
        return graph

    def shape_all(self, layers: list[Layer], built: dict[str, Layer]) -> set[str]:
        """Shapes and placement of every layer that can be checked: not one whose statement
        had an error, nor one after a layer statement that was left out, nor one reading
        such a layer (directly or not), whose shapes would be about a guess. Returns the
        names of the layers left unshaped."""
        unshaped: set[str] = set()
        bad_lines = self.errs.lines_with_errors() | self.errs.broken_lines
        gap = min(self.errs.dropped_layers, default=None)
        for l in layers:
            if l.pos.line in bad_lines or l.name in self.unreadable or \
                    (gap is not None and l.pos.line > gap) or \
                    any(i not in built for i in l.inputs) or \
                    not self.shape_and_place(l, built):
                unshaped.add(l.name)
                continue
            built[l.name] = l
        return unshaped

    def shape_and_place(self, l: Layer, built: dict[str, Layer]) -> bool:
        op = l.op
        srcs = [built[i] for i in l.inputs]
        from_pos = l.attr_pos.get("from", l.pos)
        shapes = [s.out_shape for s in srcs]
        if op.joins:
            if len(srcs) < 2 or len(set(shapes)) > 1:
                listing = ", ".join(f"{s.name} {_fmt_shape(s.out_shape)}" for s in srcs)
                self.err(from_pos, f"{l.name}: {l.type} reads two or more inputs of "
                                   f"one shape: {listing}")
                return False
            l.attrs["inputs"] = len(srcs)
        elif len({sh[1:] for sh in shapes}) > 1:
            listing = ", ".join(f"{s.name} {_fmt_shape(s.out_shape)}" for s in srcs)
            self.err(from_pos, f"{l.name}: inputs to concatenate must agree in all but "
                               f"channels: {listing}")
            return False
        l.in_shape = (sum(sh[0] for sh in shapes), *shapes[0][1:])
        if op.spatial_input and len(l.in_shape) != 3:
            self.err(l.pos, f"{l.name}: a {l.type} layer needs maps (C x H x W), but "
                            f"{srcs[0].name} gives {_fmt_shape(l.in_shape)}")
            return False

        def report(attr: str, msg: str) -> None:
            self.err(l.attr_pos.get(attr, l.attr_pos["name"]), f"{l.name}: {msg}")

        if not op.check(l.attrs, l.in_shape, report):
            return False
        l.out_shape = op.output_shape(l.attrs, l.in_shape)

        data = self.place_data_parallel(l, srcs)
        if data is not None:
            return data
        if op.weighted and not op.channelwise:
            return self.place_weighted(l, srcs, _all_sources(srcs),
                                       any(s.replicated or s.data_parallel for s in srcs))
        if not op.follows_input_parts:            # softmax: gather on one GPU
            all_src = _all_sources(srcs)
            gpu = l._placement.get("gpu") or 0
            if gpu >= self.spec.gpus:
                self.err(l.attr_pos["gpu"], f"{l.name}: gpu {gpu} does not exist; the network "
                                            f"has {self.spec.gpus} (0..{self.spec.gpus - 1})")
                return False
            # a data-parallel input is all-gathered on this GPU: read there, no transfer
            all_src = [Source(s.layer, gpu, gpu, s.channels, s.offset)
                       if self.is_data_parallel(s.layer, srcs) else s for s in all_src]
            l.parts = [Part(0, gpu, 0, l.out_shape[0], list(all_src))]
            return True
        if op.joins:
            l.parts = join_parts(srcs)
            return True
        # channel by channel: follow the inputs' parts (laid end to end when it reads several),
        # each on its own GPU, cut at group boundaries
        if l.groups != 1 and not self.check_groups(l, {"channels": l.in_shape[0]}):
            return False
        l.parts = []
        for run in _input_runs(srcs, l.op.spans_channels):
            lo, hi = run[0][2], run[-1][3]
            for a, b in _cut(lo, hi, l.out_shape[0] // l.groups):
                l.parts.append(Part(len(l.parts), run[0][1].gpu, a, b, [
                    Source(src.name, p.index, p.gpu, min(b, stop) - max(a, start),
                           max(a, start) - a, max(a, start) - start)
                    for src, p, start, stop in run if start < b and a < stop]))
        return True

    @staticmethod
    def is_data_parallel(name: str, srcs: list[Layer]) -> bool:
        return any(s.name == name and s.data_parallel for s in srcs)

    def place_data_parallel(self, l: Layer, srcs: list[Layer]) -> bool | None:
        """Place a data-parallel layer: one part per GPU, every channel, batch slice g on GPU g
        (`Part.slice`), reading slice g of each input on its own GPU. A layer is data-parallel
        when it says `parallel data`, or is unweighted, keeps its input's parts and reads
        data-parallel layers. None when `l` is not data-parallel (a weighted layer or the
        softmax reading one reads the whole batch, gathered on its GPU). False (errors
        reported) for what can't be: data-parallel next to channel placement, a data-parallel
        layer reading a channel-split one, batch statistics or dropout over a slice."""
        dp = [s for s in srcs if s.data_parallel]
        channelwise = l.op.weighted and l.op.channelwise
        if not l.data_parallel and (not dp or (l.op.weighted and not channelwise)
                                    or not l.op.follows_input_parts):
            if dp and len(dp) + sum(s.replicated for s in srcs) < len(srcs):
                split = next(s for s in srcs if not s.data_parallel and not s.replicated)
                self.err(l.attr_pos.get("from", l.pos),
                         f"{l.name}: reads data-parallel {dp[0].name} and {split.name}, whose "
                         f"channels are split over the GPUs; read one kind only")
                return False
            return None
        where = l.attr_pos.get("parallel", l.attr_pos["name"])
        split = [s for s in srcs if not s.data_parallel and not s.replicated]
        if split:
            self.err(where if l.data_parallel else l.attr_pos.get("from", l.pos),
                     f"{l.name}: a data-parallel layer reads the input or data-parallel "
                     f"layers, but {split[0].name} has its channels split over the GPUs "
                     f"(model parallel); the batch is not sliced again after that (give "
                     f"{split[0].name} 'parallel data', or {l.name} 'parallel model')")
            return False
        why = None
        if channelwise:
            why = "its batch statistics would be a slice's, not the batch's"
        elif type(l.op).draw_noise is not Op.draw_noise:
            why = "its masks are drawn for the whole batch"
        elif l.groups != 1:
            why = "groups are not supported in data-parallel layers yet"
        if why:
            self.err(l.pos, f"{l.name}: a {l.type} layer cannot read data-parallel "
                            f"{dp[0].name}: {why}; put it after the model-parallel layers")
            return False
        placed = [k for k in ("split", "gpu") if l._placement.get(k) is not None]
        if l.connect == "same-gpu" and "connect" in l.attr_pos:
            placed.append("connect")
        if placed:
            self.err(l.attr_pos[f"{placed[0]}.key"],
                     f"{l.name}: '{placed[0]}' places channels on GPUs, but a data-parallel "
                     f"layer has all of its channels on every GPU; remove it or drop "
                     f"'parallel data'")
            return False
        l.data_parallel = True
        l.parts = []
        for g in range(self.spec.gpus):
            sources, offset = [], 0
            for src in srcs:
                c = src.out_shape[0]
                sources.append(Source(src.name, g, g, c, offset))
                offset += c
            l.parts.append(Part(g, g, 0, l.out_shape[0], sources, slice=g))
        return True

    def check_groups(self, l: Layer, counts: dict[str, int]) -> bool:
        """`groups` must divide each of the layer's channel counts (and not be combined with
        `connect same-gpu`, which already groups by GPU)."""
        if l.groups == 1:
            return True
        pos = l.attr_pos.get("groups", l.attr_pos["name"])
        if l.connect == "same-gpu":
            self.err(l.attr_pos.get("groups.key", pos),
                     f"{l.name}: give either 'connect same-gpu' (one group per GPU) or "
                     f"'groups', not both")
            return False
        for what, n in counts.items():
            if n % l.groups:
                divisors = [d for d in range(2, n + 1) if n % d == 0 and
                            all(m % d == 0 for m in counts.values())]
                hint = f"; groups that divide {' and '.join(map(str, counts.values()))}: " \
                       f"{', '.join(map(str, divisors[:8]))}" if divisors else ""
                self.err(pos, f"{l.name}: groups {l.groups} does not divide its {n} {what}"
                              f"{hint}")
                return False
        return True

    def place_weighted(self, l: Layer, srcs, all_src: list[Source], replicated: bool) -> bool:
        """Cut a weighted layer into parts (by `gpu`, `split`, or evenly over the GPUs, then at
        group boundaries) and give each part its sources. Errors: reported, False returned."""
        out = l.out_shape[0]
        bounds = self.weighted_bounds(l)
        if bounds is None:
            return False
        if not self.check_groups(l, {"input channels": l.in_shape[0], l.op.count_attr: out}):
            return False
        start = 0
        parts = []
        for g, n in bounds:
            for a, b in _cut(start, start + n, out // l.groups):
                parts.append(Part(len(parts), g, a, b))
            start += n
        for p in parts:
            p.sources = self.part_sources(l, p, all_src, replicated)
            if p.sources is None:
                return False
        if l.connect == "same-gpu" and not replicated:
            used = {s.gpu for p in parts for s in p.sources}
            unread = [s for s in all_src if s.gpu not in used]
            if unread:
                s = unread[0]
                self.err(l.attr_pos["connect"],
                         f"{l.name}: connect same-gpu leaves {s.layer}'s part on GPU {s.gpu} "
                         f"unread, since {l.name} has no part there; the parts don't line up")
                return False
        l.parts = parts
        return True

    def weighted_bounds(self, l: Layer) -> list[tuple[int, int]] | None:
        """(GPU, output channels) of each GPU's share of a weighted layer, in order: all on
        `gpu`, as `split` gives, or evenly. None (errors reported) when they don't fit."""
        gpus = self.spec.gpus
        out = l.out_shape[0]
        pl, ap, what = l._placement, l.attr_pos, l.op.count_attr
        if pl["gpu"] is not None and pl["split"] is not None:
            self.err(ap["gpu.key"], f"{l.name}: give either 'gpu' or 'split', not both")
            return None
        if pl["gpu"] is not None:
            if pl["gpu"] >= gpus:
                self.err(ap["gpu"], f"{l.name}: gpu {pl['gpu']} does not exist; the network "
                                    f"has {gpus} (0..{gpus - 1})")
                return None
            return [(pl["gpu"], out)]
        split = pl["split"]
        if split is None:
            if out % gpus:
                lo = out // gpus
                self.err(ap.get(what, ap["name"]),
                         f"{l.name}: {what} {out} cannot be split evenly over {gpus} GPUs "
                         f"(give split {','.join([str(lo + 1)] * (out % gpus) + [str(lo)] * (gpus - out % gpus))})")
                return None
            return [(g, out // gpus) for g in range(gpus)]
        if len(split) != gpus:
            self.err(ap["split"], f"{l.name}: split gives {len(split)} part"
                                  f"{'s' if len(split) != 1 else ''} but the network has "
                                  f"{gpus} GPU{'s' if gpus != 1 else ''}")
            return None
        if sum(split) != out:
            self.err(ap["split"], f"{l.name}: split {','.join(map(str, split))} adds up to "
                                  f"{sum(split)}, but the layer has {out} {what}")
            return None
        return list(enumerate(split))

    def part_sources(self, l: Layer, p: Part, all_src: list[Source],
                     replicated: bool) -> list[Source] | None:
        """What part `p` of a weighted layer reads of its inputs' parts `all_src` (laid end to
        end): its group's channels, its own GPU's parts (`connect same-gpu`), or all of them;
        from its local copy when the input is on every GPU (`replicated`). None (error
        reported) when `connect same-gpu` finds nothing on its GPU."""
        if l.groups > 1:
            # group k reads input channels k·C/G .. (k+1)·C/G, wherever they are
            cin = l.in_shape[0] // l.groups
            k = p.start // (l.out_shape[0] // l.groups)
            sources = _channel_range(all_src, k * cin, (k + 1) * cin)
            if replicated:
                sources = [Source(s.layer, p.gpu, p.gpu, s.channels, s.offset, s.start)
                           for s in sources]
            return sources
        if replicated:
            # the input is on every GPU: each part reads its local copy, whole
            return [Source(s.layer, p.gpu, p.gpu, s.channels, s.offset) for s in all_src]
        if l.connect != "same-gpu":
            return list(all_src)
        own = [s for s in all_src if s.gpu == p.gpu]
        if not own:
            self.err(l.attr_pos["connect"], f"{l.name}: connect same-gpu, but no part of "
                                            f"{', '.join(l.inputs)} is on GPU {p.gpu}; use "
                                            f"'connect all' or place the input there")
            return None
        sources, offset = [], 0
        for s in own:
            sources.append(Source(s.layer, s.part, s.gpu, s.channels, offset))
            offset += s.channels
        return sources

    def check_graph(self, g: Graph) -> None:
        spec = self.spec
        body = g.compute_layers
        if not body:
            self.err(spec.pos["network"], "the network has no layers")
            return
        softmaxes = [l for l in body if l.op.loss_layer]
        last = body[-1]
        if not softmaxes:
            self.err(last.pos, f"the network must end in a softmax layer (the last layer is "
                               f"{last.type} '{last.name}'); add 'softmax prob'")
        for s in softmaxes[:-1] if softmaxes and softmaxes[-1] is last else softmaxes:
            if s is not last:
                self.err(s.pos, f"{s.name}: softmax must be the last layer")
        used = {i for l in body for i in l.inputs}
        for l in body:
            if l.name not in used and l is not last:
                self.err(l.attr_pos["name"], f"layer '{l.name}' is never used: no layer reads "
                                             f"it (add 'from {l.name}' to a layer, or remove it)")
        if softmaxes and softmaxes[-1] is last:
            self.check_classes(g, set())
        self.check_input(g)

    def check_classes(self, g: Graph, unshaped: set[str]) -> None:
        """The layer before the final softmax gives `classes` outputs. A layer left unshaped
        (see shape_all) is checked by its count attribute (an fc's outputs, a conv's
        filters), which its input does not change, when its own statement was read
        cleanly."""
        body = g.compute_layers
        if not body or not body[-1].op.loss_layer or not body[-1].inputs:
            return
        last = body[-1]
        src = g.layer(last.inputs[0])
        if last.name not in unshaped:
            n = last.out_shape[0]
        elif src.name in unshaped and src.weighted and \
                src.pos.line not in self.errs.lines_with_errors() | self.errs.broken_lines:
            n = src.attrs.get(src.op.count_attr)
        else:
            return
        spec = self.spec
        if isinstance(n, int) and n != spec.classes:
            where = src.attr_pos.get("outputs", spec.pos.get("classes_value"))
            self.err(where, f"classes is {spec.classes}, but the last layer before the "
                            f"softmax, {src.name}, has {n} outputs")

    def check_input(self, g: Graph) -> None:
        """The input is square and the recipe's crop is its size."""
        spec = self.spec
        r = spec.recipe
        crop = r.crop or spec.input_shape[1]
        if len(spec.input_shape) == 3 and spec.input_shape[1] != spec.input_shape[2]:
            # Refused here, so compile, build and train agree: the data pipeline (§2)
            # rescales every image to a square base and its crops and 10 views are square.
            h, w = spec.input_shape[1:]
            self.err(spec.pos["input_value"],
                     f"input {h}x{w} is not square: images are rescaled to a square base and "
                     f"cropped square (§2, §4.1), so a net's input must be square; use "
                     f"input {spec.input_shape[0]}x{min(h, w)}x{min(h, w)} or "
                     f"{spec.input_shape[0]}x{max(h, w)}x{max(h, w)}")
        elif len(spec.input_shape) == 3 and (crop, crop) != spec.input_shape[1:]:
            self.err(r.pos.get("crop", spec.pos["input_value"]),
                     f"augment: crop {crop} must equal the input's size "
                     f"{spec.input_shape[1]}x{spec.input_shape[2]}")


def find_transfers(g: Graph) -> list[Transfer]:
    """One edge per (source part, destination GPU): a part needed by several consumers on the
    same GPU crosses once, carrying the channel range that covers everything they read."""
    need: dict[tuple[str, int, int], list[str]] = {}
    span: dict[tuple[str, int, int], tuple[int, int]] = {}
    for l in g.compute_layers:
        for p in l.parts:
            for s in p.sources:
                src = g.layer(s.layer)
                if src.replicated or src.data_parallel or s.gpu == p.gpu:
                    continue
                key = (s.layer, s.part, p.gpu)
                need.setdefault(key, [])
                if l.name not in need[key]:
                    need[key].append(l.name)
                a, b = span.get(key, (s.start, s.start + s.channels))
                span[key] = (min(a, s.start), max(b, s.start + s.channels))
    out = []
    for (name, part, dst), consumers in need.items():
        src = g.layer(name)
        sp = src.parts[part]
        a, b = span[(name, part, dst)]
        elements = b - a
        for d in src.out_shape[1:]:
            elements *= d
        out.append(Transfer(name, part, sp.gpu, dst, elements, tuple(consumers), a, b - a))
    return out


def join_parts(srcs: list[Layer]) -> list[Part]:
    """The parts of a layer joining inputs of one shape elementwise (add): the first input's
    parts, each reading its channel range from every input, wherever that lies (a part on
    another GPU is a transfer), the inputs' ranges laid end to end in the part's input."""
    first = srcs[0]
    c = first.out_shape[0]
    parts = []
    for p in first.parts:
        lo, hi = (0, c) if first.replicated else (p.start, p.stop)
        sources = []
        for j, src in enumerate(srcs):
            for s in _channel_range(_all_sources([src]), lo, hi):
                gpu, part = (p.gpu, p.gpu) if src.replicated else (s.gpu, s.part)
                sources.append(Source(s.layer, part, gpu, s.channels,
                                      s.offset + j * (hi - lo), s.start))
        parts.append(Part(len(parts), p.gpu, lo, hi, sources))
    return parts


def _all_sources(srcs: list[Layer]) -> list[Source]:
    """The concatenated input parts of a layer reading `srcs`, in channel order (one copy of
    a replicated input)."""
    out: list[Source] = []
    offset = 0
    for s in srcs:
        for p in s.parts if not (s.replicated or s.data_parallel) else s.parts[:1]:
            out.append(Source(s.name, p.index, p.gpu, p.channels, offset))
            offset += p.channels
    return out


def _input_runs(srcs: list[Layer], spans_channels: bool
                ) -> list[list[tuple[Layer, Part, int, int]]]:
    """The inputs' parts, laid end to end along channels (a layer reading several), as runs of
    (source, part, first channel, end) in the reader's input that one reading part covers:
    each part alone, or, for a layer whose maps interact across channels (`spans_channels`:
    LRN), each run of consecutive parts on one GPU together, so that a grouped conv's groups
    on one GPU are normalised as one set of maps (as Caffe's and PyTorch's AlexNet do) and
    only GPUs, or the layer's own `groups`, bound the window."""
    spans, first = [], 0
    for src in srcs:
        c = src.out_shape[0]
        spans += [(src, p, first, first + c) if src.replicated else
                  (src, p, first + p.start, first + p.stop) for p in src.parts]
        first += c
    if not spans_channels or any(src.replicated for src in srcs):
        return [[s] for s in spans]
    runs: list[list[tuple[Layer, Part, int, int]]] = []
    for s in sorted(spans, key=lambda s: s[2]):
        if runs and runs[-1][-1][1].gpu == s[1].gpu and runs[-1][-1][3] == s[2]:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


def _cut(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) cut at the multiples of `size` (group boundaries)."""
    out = []
    a = start
    while a < stop:
        b = min(stop, (a // size + 1) * size)
        out.append((a, b))
        a = b
    return out


def _channel_range(sources: list[Source], lo: int, hi: int) -> list[Source]:
    """The sources, trimmed to the channels lo .. hi of the concatenated input, re-offset."""
    out = []
    for s in sources:
        a, b = max(lo, s.offset), min(hi, s.offset + s.channels)
        if a < b:
            out.append(Source(s.layer, s.part, s.gpu, b - a, a - lo, s.start + a - s.offset))
    return out


def _fmt_shape(shape) -> str:
    return "x".join(map(str, shape)) if len(shape) != 1 else f"{shape[0]} neurons"
