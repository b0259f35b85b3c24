"""The network executor's backend-independent half: parameters, initialisation, input checks,
and the walk over layer parts in network order (forward) and back (backward).

A backend subclasses `Net` and supplies the device-specific part: moving arrays to and from the
device, concatenating and slicing along channels, and running one layer part forward or
backward (see "What a backend implements" on `Net`). Everything a user sees (names, layouts,
initial values, dropout masks, errors) is decided here, so every backend agrees on them.

Parameters
----------
Names and PyTorch layouts come from the IR (`Graph.param_shapes`, from each op's
`Op.parameters`): `<layer>.weight`, `<layer>.bias`, a split layer's channels GPU 0's part
first (per-part names only where parts read uneven input channel counts). The host copy in `self._params` is the reference; part
`p` of a layer owns rows `p.start:p.stop` of a stacked weight and bias (all rows of a per-part
one).

Initialisation, deterministic in the seed
-----------------------------------------
`np.random.SeedSequence(seed).spawn(2)` gives two independent streams: the first initialises
the parameters, the second (`self.rng`) draws dropout masks. With `g = default_rng(first)`, for
each weighted layer in network order and each of its parameters in `param_shapes()` order
(weight, bias; or part0.weight, part0.bias, part1.weight, ...):
    init 'gauss' (weight) = (g.standard_normal(shape, dtype=float32) * float32(std)),
             std = layer.init_std, or for 'he' sqrt(2 / fan_in), fan_in = prod(shape[1:]) (the
             inputs one output reads, a part's own for a split layer: He et al. 2015 eq. 10),
             in float32, then cast to the net's dtype (float32 and float64 nets start identical);
    init 'bias'  (bias)   = layer.init_bias everywhere (draws nothing); 'zeros' / 'ones' likewise.
A tensor its op marks not trainable is state: initialised, saved and loaded like the others,
but it has no gradient and SGD leaves it alone.

Dropout draws
-------------
Each forward with `train=True` (also inside `loss_and_grads`) takes its noise key from
`self.rng` (runtime/noise.py `step_noise`: the trainer's per-step `ImageNoise`, or one uint64
drawn from a numpy Generator as the seed) and calls, for every layer whose op draws
(`Op.draw_noise`, today only dropout), once for the whole layer, with i the layer's index in
the compute layers:
    keep = uniforms(seed, step, i, images, elements) >= float32(p)      (Philox4x32-10)
and gives part `q` the slice `keep[:, q.start:q.stop]`. A test-time forward draws nothing.
Replace `net.rng` with a fresh `np.random.Generator` to reseed the masks.

Logical GPUs and devices
------------------------
`devices=[d0, d1, ...]` maps the spec's logical GPUs onto the backend's physical devices
(`physical_devices()`, numbered from 0): one index per logical GPU, or fewer, in which case
consecutive logical GPUs share a device (4 logical GPUs on [0, 1]: 0, 0, 1, 1). The default is
every device up to one per logical GPU; on one GPU or a CPU all logical GPUs share device 0, each
on its own stream or queue, and `device_note` says so. A device that doesn't exist is a
`DeviceError` naming it.

Memory
------
`loss_and_grads` keeps every part's activations and backward caches (conv keeps its im2col
columns) until the backward pass frees them layer by layer: about 1.6 GB peak for AlexNet at
batch 32 in float32. `forward`, `predict_proba` and `features` keep no caches and drop each
activation once its last reader has run.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DeviceError
from ..ir.graph import INPUT, Graph, Layer, Part, batch_slices
from .noise import ImageNoise, step_noise

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Gradients(Mapping):
    """The gradients of one `loss_and_grads` call, keyed and shaped like `parameters()`,
    left where the backend computed them: a tensor crosses to the host only when it is read
    (`grads[name]`, then kept), or all at once with `pull()`. The trainer and `netspec bench`
    hand it to a device `update()` unread, so on a GPU nothing is downloaded.

    fetch(names) -> {name: host float array} downloads the named tensors; current() says
    whether the device still holds them (a later loss_and_grads overwrites them in place). A
    read after that is a RuntimeError, never a silent read of the newer gradients; read them
    first, or ask loss_and_grads(..., pull=True). `shape(name)` needs no download."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], fetch, current=lambda: True):
        self._shapes, self._fetch, self._current = dict(shapes), fetch, current
        self._host: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._host:
            if name not in self._shapes:
                raise KeyError(name)
            self._check_current()
            self._host.update(self._fetch([name]))
        return self._host[name]

    def __iter__(self):
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    def __contains__(self, name) -> bool:
        return name in self._shapes

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    @property
    def downloaded(self) -> tuple[str, ...]:
        """The tensors read so far (brought to the host)."""
        return tuple(self._host)

    def pull(self) -> dict[str, np.ndarray]:
        """Every tensor on the host, in one batch of downloads: a plain dict."""
        missing = [n for n in self._shapes if n not in self._host]
        if missing:
            self._check_current()
            self._host.update(self._fetch(missing))
        return {n: self._host[n] for n in self._shapes}

    def _check_current(self) -> None:
        if not self._current():
            raise RuntimeError("these gradients were overwritten on the device by a later "
                               "loss_and_grads(); read them before it, or call "
                               "loss_and_grads(..., pull=True)")

    def __repr__(self) -> str:
        return (f"<Gradients of {len(self)} tensors, {len(self._host)} on the host>")


def init_std(rule: float | str, shape: tuple[int, ...]) -> float:
    """The standard deviation of a weight's initial draw: `rule` itself, or for 'he'
    sqrt(2 / fan_in) with fan_in = prod(shape[1:]) (He et al. 2015, "Delving deep into
    rectifiers", eq. 10; Caffe's "msra" filler, PyTorch's kaiming_normal_(mode='fan_in'))."""
    if rule == "he":
        return math.sqrt(2.0 / max(1, math.prod(shape[1:])))
    return float(rule)


@dataclass(frozen=True)
class ParamSlot:
    """Where one layer part's tensors live: per tensor, in its op's order, the parameter's
    name, the rows of it the part owns, and whether SGD trains it (its gradient comes back
    from the op's backward, in order among the trainable ones)."""

    names: tuple[str, ...]
    rows: tuple[slice, ...]
    trainable: tuple[bool, ...]


def _shape(s) -> str:
    return "(" + ", ".join(map(str, s)) + ")"


def assign_devices(devices: Any, gpus: int, available: list[str], backend: str) -> list[int]:
    """The physical device of each logical GPU (see the module doc), checked against the
    `available` device names."""
    listing = ", ".join(f"{i}: {n}" for i, n in enumerate(available)) or "none"
    if devices is None:
        n = max(min(len(available), gpus), 1)
        return [g * n // gpus for g in range(gpus)]
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        devices = [devices]
    try:
        devs = list(devices)
    except TypeError:
        raise DeviceError(f"devices must be a list of device numbers, not "
                          f"{type(devices).__name__}") from None
    if not devs:
        raise DeviceError(f"devices is empty; backend '{backend}' has {listing}")
    for d in devs:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise DeviceError(f"devices must be device numbers, not {d!r}")
        if not 0 <= d < len(available):
            raise DeviceError(f"device {d} does not exist: backend '{backend}' has "
                              f"{len(available)} device{'s' if len(available) != 1 else ''} "
                              f"({listing})")
    if len(devs) > gpus:
        raise DeviceError(f"{len(devs)} devices given for {gpus} logical GPU"
                          f"{'s' if gpus != 1 else ''}; give at most {gpus}")
    return [int(devs[g * len(devs) // gpus]) for g in range(gpus)]


class Net:
    """A compiled network with parameters.

    API (every array is a host `np.ndarray`):
        net.parameters()                    name -> copy of the parameter, network order
        net.load_parameters(params)         same names and shapes, else ValueError naming them
        net.forward(x, train=False)         logits (N, classes), before the softmax
        net.predict_proba(x)                softmax probabilities (N, classes), test mode
        net.loss_and_grads(x, labels, train=False)
                                            (mean loss, gradients keyed like parameters());
                                            weight decay is the update rule's, not here
        net.features(x, layer, train=False) one layer's whole output (its parts concatenated)

    What a backend implements (B is the backend's array type):
        to_device(a: np.ndarray) -> B           to_host(a: B) -> np.ndarray
        concat_channels(arrays: list[B]) -> B   slice_channels(a: B, start, stop) -> B
        add(a: B, b: B) -> B                    (may reuse a's memory)
        part_params(layer, part) -> tuple[B, ...]   (w, b) in the op's layout, or ()
        forward_part(layer, part, x, params, *, train, noise) -> (y, cache)
        backward_part(layer, part, dy, cache, *, input_grad) -> (dx | None, grads)
        softmax_loss(z, labels: np.ndarray) -> (float, dz)
        softmax_proba(z) -> B
        physical_devices() -> list[str]         the devices `devices=` numbers (default: the host)
    `forward_part`/`backward_part` have the meaning of `Op.forward`/`Op.backward`
    (netspec/ops/base.py), which is the reference each backend is checked against. A backend
    that keeps parameters on the device overrides `_parameters_changed` to upload them.

    What a backend declares (class attributes and classmethods; the registry in
    netspec/runtime, `netspec bench`, autotune and the data-parallel driver read them, so a new
    backend is its module and a `register_backend` line):
        backend                         its registered name ('numpy', 'cuda', ...)
        dialect                         the kernel.dialects.Dialect its kernels are rendered
                                        in, None for the NumPy reference
        requires                        what must be installed, in words
        unavailable_reason() -> str | None  why it can't run here (None: it can);
                                        available() is `unavailable_reason() is None`
        auto_choice() -> str | None     why backend='auto' may take it (None: it may not);
                                        auto_refusal: the reason auto gives when it passes
        device_count() -> int           physical devices `devices=` numbers (1 on the host)
        kernel_timer() -> timer | None  the device autotune times GEMM tiles on
                                        (runtime/autotune.py; None: it doesn't tune)
        clock() -> clock                how `netspec bench` times this net (runtime/clock.py)
        device_name -> str              the device(s) in use, in words
    """

    backend = ""
    sharing = "run one after another"    # how logical GPUs sharing a device are run
    # Called as grad_hook(layer name, {parameter name: host gradient}) by loss_and_grads as
    # soon as the backward pass has produced a weighted layer's gradients, last layer first
    # (data-parallel training starts their allreduce there; netspec/train/data_parallel.py).
    grad_hook = None
    dialect = None
    requires: tuple[str, ...] = ()
    auto_refusal = ""

    def __init__(self, graph: Graph, *, seed: int = 0, dtype: Any = np.float32,
                 devices: Any = None):
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            self.dtype = None
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be float32 or float64, not {dtype!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
        self.graph = graph
        self.device_names = self.physical_devices()
        # device_map[g]: the physical device logical GPU g runs on
        self.device_map = assign_devices(devices, graph.gpus, self.device_names, self.backend)
        self._open_devices()
        self.seed = int(seed)
        init_seq, noise_seq = np.random.SeedSequence(self.seed).spawn(2)
        self.rng = np.random.default_rng(noise_seq)
        self._shapes = graph.param_shapes()
        self._slots = self._param_slots()
        self.head = graph.compute_layers[-1]           # the softmax; its input is the logits
        self.body = graph.compute_layers[:-1]
        self._params = self._initial_parameters(np.random.default_rng(init_seq))
        self._parameters_changed()

    # -- devices --------------------------------------------------------------------------
    @property
    def device_note(self) -> str:
        """Where the logical GPUs run, in one line: '2 logical GPUs on 1 device: NAME, one
        queue each'."""
        gpus, used = self.graph.gpus, sorted(set(self.device_map))
        names = self.device_names
        if gpus == 1:
            return f"1 logical GPU on device {used[0]}: {names[used[0]]}"
        if len(used) == 1:
            return (f"{gpus} logical GPUs on 1 device: {names[used[0]]}, {self.sharing}")
        where = ", ".join(f"GPU {g} on {d}" for g, d in enumerate(self.device_map))
        devs = ", ".join(f"{d}: {names[d]}" for d in used)
        return f"{gpus} logical GPUs on {len(used)} devices ({devs}): {where}, {self.sharing}"

    # -- parameters -----------------------------------------------------------------------
    def _param_slots(self) -> dict[tuple[str, int], ParamSlot]:
        slots = {}
        for layer in self.graph.weighted_layers:
            table: dict[int, list] = {}
            for p, d, name, rows in layer.param_table():
                table.setdefault(p.index, []).append((name, rows, d.trainable))
            for index, entries in table.items():
                names, rows, trainable = zip(*entries)
                slots[layer.name, index] = ParamSlot(names, rows, trainable)
        return slots

    def _initial_parameters(self, g: np.random.Generator) -> dict[str, np.ndarray]:
        out = {}
        for layer in self.graph.weighted_layers:
            init = {name: d.init for _, d, name, _ in layer.param_table()}
            for name, shape in layer.param_shapes().items():
                rule = init[name]
                if rule == "gauss":
                    w = g.standard_normal(shape, dtype=np.float32)
                    w *= np.float32(init_std(layer.init_std, shape))
                    out[name] = w.astype(self.dtype, copy=False)
                elif rule == "bias":
                    out[name] = np.full(shape, layer.init_bias, self.dtype)
                else:            # 'zeros' | 'ones' (ParamDef checks the rule)
                    out[name] = np.full(shape, 1 if rule == "ones" else 0, self.dtype)
        return out

    def _trainable(self) -> set[str]:
        return {n for slot in self._slots.values()
                for n, t in zip(slot.names, slot.trainable) if t}

    def _parameters_changed(self) -> None:
        """Called after the host parameters change (init, load_parameters)."""

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def parameters(self) -> dict[str, np.ndarray]:
        """A copy of every parameter, in network order (weight before bias)."""
        return {name: self._params[name].copy() for name in self._shapes}

    def load_parameters(self, params: Mapping[str, Any]) -> None:
        """Replace every parameter. Names and shapes must match `parameters()` exactly; values
        are cast to the net's dtype. Nothing changes unless all of them are right."""
        if not isinstance(params, Mapping):
            raise ValueError(f"load_parameters needs a mapping name -> array, not "
                             f"{type(params).__name__}")
        problems = []
        missing = [n for n in self._shapes if n not in params]
        unexpected = [n for n in params if n not in self._shapes]
        if missing:
            problems.append("missing " + ", ".join(missing))
        for n in unexpected:
            close = difflib.get_close_matches(str(n), list(self._shapes), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"unexpected '{n}'{hint}")
        new = {}
        for n, shape in self._shapes.items():
            if n not in params:
                continue
            a = np.asarray(params[n])
            if a.shape != shape:
                problems.append(f"{n} has shape {_shape(a.shape)}, expected {_shape(shape)}")
            elif not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                problems.append(f"{n} has dtype {a.dtype}, expected a float array")
            else:
                new[n] = np.array(a, dtype=self.dtype, copy=True, order="C")
        if problems:
            raise ValueError(f"load_parameters for network '{self.graph.name}': "
                             + "; ".join(problems))
        self._params = new
        self._parameters_changed()

    # -- input checks ---------------------------------------------------------------------
    def _expected(self) -> str:
        return f"{self.dtype} array of shape (N, {', '.join(map(str, self.graph.input_shape))})"

    def _check_input(self, x: Any) -> np.ndarray:
        want = self._expected()
        if hasattr(x, "pixels") and hasattr(x, "to_float"):    # data/augment.U8Batch
            # finished on the host here (a device backend may do it on the device)
            x = x.to_float().astype(self.dtype, copy=False)
        if not isinstance(x, np.ndarray):
            raise ValueError(f"x must be a {want}, not {type(x).__name__}")
        if x.ndim != len(self.graph.input_shape) + 1 or x.shape[1:] != self.graph.input_shape \
                or x.shape[0] < 1:
            raise ValueError(f"x must be a {want}, got shape {_shape(x.shape)}")
        if x.dtype != self.dtype:
            raise ValueError(f"x must be a {want}, got dtype {x.dtype} "
                             f"(convert with x.astype(np.{self.dtype}))")
        return x

    def _check_labels(self, labels: Any, n: int) -> np.ndarray:
        y = np.asarray(labels)
        classes = self.graph.classes
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels must be an integer array of shape ({n},) with values in "
                             f"0..{classes - 1}, got {y.dtype} shape {_shape(y.shape)}")
        bad = (y < 0) | (y >= classes)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"labels must lie in 0..{classes - 1} ({classes} classes), but "
                             f"labels[{i}] is {int(y[i])}")
        return y.astype(np.intp, copy=False)

    def _layer(self, name: str) -> Layer:
        try:
            return self.graph.layer(name)
        except KeyError:
            names = [l.name for l in self.graph.layers]
            close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"network '{self.graph.name}' has no layer '{name}'{hint}; "
                             f"layers: {', '.join(names)}") from None

    # -- the walk -------------------------------------------------------------------------
    def _step_noise(self, n: int) -> ImageNoise:
        """The noise key of one training forward over n images (runtime/noise.py); a
        backend may return a subclass that computes the same uniforms its own way."""
        return step_noise(self.rng, n)

    def _forward_pass(self, x: np.ndarray, *, train: bool, keep_caches: bool,
                      stop_after: str | None = None):
        """Run the body (every layer but the softmax) part by part, in network order.

        Returns (acts, caches): acts[layer] is the list of its parts' outputs (the input's
        list holds one copy per GPU); caches[layer][part] the parts' backward caches (kept only
        with keep_caches). Without caches, an activation is dropped once its last reader has
        run, unless it is the layer asked for.
        """
        g = self.graph
        xd = self.to_device(x)
        acts: dict[str, list] = {INPUT: [xd] * len(g.layers[0].parts)}
        caches: dict[str, list] = {}
        last_reader = {}
        for i, layer in enumerate(g.compute_layers):
            for name in layer.inputs:
                last_reader[name] = i
        n = x.shape[0]
        key = self._step_noise(n) if train else None
        for i, layer in enumerate(self.body):
            noise = layer.op.draw_noise(layer.attrs, (n, *layer.out_shape), key.layer(i)) \
                if train else None
            memo: dict[tuple, Any] = {}
            outs, layer_caches = [], []
            for p in layer.parts:
                xin = self._part_input(p, acts, memo)
                part_noise = None if noise is None else \
                    self.to_device(np.ascontiguousarray(noise[:, p.start:p.stop]))
                y, cache = self.forward_part(layer, p, xin, self.part_params(layer, p),
                                             train=train, noise=part_noise)
                outs.append(y)
                layer_caches.append(cache if keep_caches else None)
            acts[layer.name] = outs
            if keep_caches:
                caches[layer.name] = layer_caches
            else:
                for name in dict.fromkeys(layer.inputs):     # a layer may read one twice
                    if last_reader.get(name) == i and name != stop_after:
                        del acts[name]
            if layer.name == stop_after:
                break
        return acts, caches

    def _part_input(self, part: Part, acts: dict, memo: dict):
        """The part's sources (each a channel range of a producer part) concatenated along
        channels; parts of one layer that read the same sources share one concatenation."""
        key = tuple((s.layer, s.part, s.start, s.channels) for s in part.sources)
        if key not in memo:
            arrays = []
            for s in part.sources:
                a = self._source_batch(part, s, acts)
                if (s.start, s.channels) != (0, a.shape[1]):
                    a = self.slice_channels(a, s.start, s.start + s.channels)
                arrays.append(a)
            memo[key] = arrays[0] if len(arrays) == 1 else self.concat_channels(arrays)
        return memo[key]

    def _source_batch(self, part: Part, s, acts: dict):
        """Source `s`'s producer part as `part` reads it: a data-parallel part reads its batch
        slice of the input (the input is whole on every GPU); a part that is not reads a
        data-parallel layer's slices all-gathered; otherwise the producer part as it is."""
        src = self.graph.layer(s.layer)
        if part.slice is not None and src.replicated:
            a = acts[s.layer][s.part]
            lo, hi = batch_slices(a.shape[0], len(self.graph.layer(s.layer).parts))[part.slice]
            return a[lo:hi]
        if part.slice is None and src.data_parallel:
            return self._gather(src, acts)
        return acts[s.layer][s.part]

    def _gather(self, layer: Layer, acts: dict):
        """A layer's whole output (its parts concatenated along channels, a data-parallel
        layer's slices along the batch), on the device."""
        arrays = acts[layer.name]
        if layer.data_parallel:
            return arrays[0] if len(arrays) == 1 else self.to_device(
                np.concatenate([self.to_host(a) for a in arrays]))
        if layer.replicated or len(arrays) == 1:
            return arrays[0]
        return self.concat_channels(arrays)

    def _logits(self, acts: dict):
        return self._part_input(self.head.parts[0], acts, {})

    def _backward_pass(self, dz, acts: dict, caches: dict) -> dict[str, np.ndarray]:
        """Back from dL/dlogits through the body, in reverse network order. A source part's
        gradient is the sum over every part that read it; parameter gradients land in the rows
        their part owns."""
        g = self.graph
        grads = self._gradient_buffers()
        dacts: dict[tuple[str, int], Any] = {}
        self._scatter(self.head.parts[0], dz, dacts)
        for layer in reversed(self.body):
            for p, cache in zip(layer.parts, caches.pop(layer.name)):
                dy = self._assemble(dacts.pop((layer.name, p.index), []),
                                    acts[layer.name][p.index].shape)
                input_grad = any(not g.layer(s.layer).replicated for s in p.sources)
                dx, pgrads = self.backward_part(layer, p, dy, cache, input_grad=input_grad)
                if dx is not None:
                    self._scatter(p, dx, dacts)
                if pgrads:
                    slot = self._slots[layer.name, p.index]
                    owned = [(n, r) for n, r, t in zip(slot.names, slot.rows, slot.trainable)
                             if t]
                    for (name, rows), d in zip(owned, pgrads, strict=True):
                        target, d = grads[name][rows], self.to_host(d)
                        if layer.data_parallel and p.index:      # replicas: their sum
                            target += d
                        elif not np.may_share_memory(target, d):   # a backend may write there
                            target[...] = d
            if layer.weighted and self.grad_hook is not None:
                self.grad_hook(layer.name, {n: grads[n] for n in layer.param_shapes()
                                            if n in grads})
            del acts[layer.name]
        return grads

    def _gradient_buffers(self) -> dict[str, np.ndarray]:
        """The arrays loss_and_grads fills, one per trainable tensor (fresh ones here; a
        backend may reuse its own)."""
        trainable = self._trainable()
        return {name: np.empty(shape, self.dtype) for name, shape in self._shapes.items()
                if name in trainable}

    def _scatter(self, part: Part, dx, dacts: dict) -> None:
        """Hand each source its slice of dx, as (first channel, end channel, gradient) pieces
        of the source part's gradient."""
        g = self.graph
        whole = len(part.sources) == 1
        for s in part.sources:
            if g.layer(s.layer).replicated:
                continue
            piece = dx if whole else self.slice_channels(dx, s.offset, s.offset + s.channels)
            src = g.layer(s.layer)
            if part.slice is None and src.data_parallel:     # the reduce-scatter: by slice
                cut = batch_slices(piece.shape[0], len(src.parts))
                for q, (lo, hi) in zip(src.parts, cut):
                    dacts.setdefault((s.layer, q.index), []).append(
                        (s.start, s.start + s.channels, piece[lo:hi]))
                continue
            dacts.setdefault((s.layer, s.part), []).append((s.start, s.start + s.channels,
                                                            piece))

    def _assemble(self, pieces: list, shape: tuple):
        """A part's output gradient from its readers' pieces: over each channel range, the sum
        of the pieces covering it (in the order they came), zero where none does."""
        channels = shape[1]
        if not pieces:                      # nothing read this part's output
            return self.to_device(np.zeros(shape, self.dtype))
        cuts = sorted({0, channels} | {a for a, _, _ in pieces} | {b for _, b, _ in pieces})
        out = []
        for a, b in zip(cuts, cuts[1:]):
            acc = None
            for lo, hi, arr in pieces:
                if lo <= a and b <= hi:
                    sl = arr if (lo, hi) == (a, b) else self.slice_channels(arr, a - lo, b - lo)
                    acc = sl if acc is None else self.add(acc, sl)
            if acc is None:
                acc = self.to_device(np.zeros((shape[0], b - a, *shape[2:]), self.dtype))
            out.append(acc)
        return out[0] if len(out) == 1 else self.concat_channels(out)

    # -- the API --------------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits (N, classes): the softmax layer's input. train=True applies dropout (and
        draws its masks from self.rng)."""
        x = self._check_input(x)
        acts, _ = self._forward_pass(x, train=train, keep_caches=False)
        return self.to_host(self._logits(acts))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, classes), at test time."""
        x = self._check_input(x)
        acts, _ = self._forward_pass(x, train=False, keep_caches=False)
        return self.to_host(self.softmax_proba(self._logits(acts)))

    def features(self, x: np.ndarray, layer: str, train: bool = False) -> np.ndarray:
        """The output of one layer (e.g. 'fc7' or 'drop7' for nearest-neighbour figures), its
        parts concatenated along channels: (N, *layer.out_shape)."""
        target = self._layer(layer)
        x = self._check_input(x)
        if target.replicated:
            return x.copy()
        if target is self.head:
            if train:
                raise ValueError("features of the softmax layer are test-time probabilities; "
                                 "use train=False")
            return self.predict_proba(x)
        acts, _ = self._forward_pass(x, train=train, keep_caches=False, stop_after=target.name)
        return self.to_host(self._gather(target, acts))

    def loss_and_grads(self, x: np.ndarray, labels: Any,
                       train: bool = False) -> tuple[float, dict[str, np.ndarray]]:
        """The mean multinomial logistic loss over the batch and its gradient for every
        parameter, keyed and shaped like parameters()."""
        x = self._check_input(x)
        y = self._check_labels(labels, x.shape[0])
        acts, caches = self._forward_pass(x, train=train, keep_caches=True)
        logits = self._logits(acts)
        loss, dz = self.softmax_loss(logits, y)
        # the batch's logits, for training metrics (top-1/top-5) without a second forward
        self.last_logits = self.to_host(logits)
        return loss, self._backward_pass(dz, acts, caches)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} '{self.graph.name}' backend={self.backend} "
                f"dtype={self.dtype} params={sum(int(np.prod(s)) for s in self._shapes.values())}>")

    # -- what a backend declares (see the class doc) --------------------------------------
    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend can't run here, in one line (a missing driver, no device); None
        when it can."""
        return None

    @classmethod
    def available(cls) -> bool:
        """Whether this backend can run here (drivers, devices)."""
        return cls.unavailable_reason() is None

    @classmethod
    def auto_choice(cls) -> str | None:
        """Why backend='auto' may take this backend, in words; None when it may not."""
        return "available" if cls.available() else None

    @classmethod
    def device_count(cls) -> int:
        """The physical devices `devices=` can number here (at least 1)."""
        return 1

    @classmethod
    def kernel_timer(cls):
        """The device autotune times kernels on for this backend (runtime/autotune.py's
        `KernelTimer`), or None: its kernels take the default tiles or the cached ones."""
        return None

    def clock(self):
        """A clock hooked into this net for `netspec bench` (runtime/clock.py)."""
        from .clock import HostClock
        return HostClock(self)

    def host_counters(self):
        """What the host has asked of the device so far, counted call by call, where the
        backend can count it (the CUDA emulator: runtime/cuda_emulator/cupy_model.py's
        `Counters`, with .snapshot() and .since(earlier)); None elsewhere."""
        return None

    @property
    def device_name(self) -> str:
        """The physical device(s) this net runs on, in words."""
        return ", ".join(self.device_names[d] for d in sorted(set(self.device_map)))

    # -- what a backend implements --------------------------------------------------------

    def physical_devices(self) -> list[str]:
        """The names of the devices `devices=` numbers, device 0 first (never empty)."""
        return ["host CPU (NumPy)"]

    def _open_devices(self) -> None:
        """Called once `device_map` is known, before the parameters are initialised."""

    def to_device(self, a: np.ndarray):
        raise NotImplementedError

    def to_host(self, a) -> np.ndarray:
        raise NotImplementedError

    def concat_channels(self, arrays: list):
        raise NotImplementedError

    def slice_channels(self, a, start: int, stop: int):
        raise NotImplementedError

    def add(self, a, b):
        raise NotImplementedError

    def part_params(self, layer: Layer, part: Part) -> tuple:
        raise NotImplementedError

    def forward_part(self, layer: Layer, part: Part, x, params: tuple, *, train: bool,
                     noise) -> tuple[Any, Any]:
        raise NotImplementedError

    def backward_part(self, layer: Layer, part: Part, dy, cache, *,
                      input_grad: bool) -> tuple[Any, tuple]:
        raise NotImplementedError

    def softmax_loss(self, z, labels: np.ndarray) -> tuple[float, Any]:
        raise NotImplementedError

    def softmax_proba(self, z):
        raise NotImplementedError

