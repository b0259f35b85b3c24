"""What every layer type provides: its attributes, shape rule, counts and reference math.

A layer type is one module in `netspec/ops/` that defines `OP`, an instance of an `Op`
subclass (Caffe's habit: the DSL keyword, the shape rule, the reference math and the kernel
templates of a layer are all found in one place). `netspec.ops.OPS` discovers them;
`netspec.ops.register` adds one defined elsewhere (a plugin, a test).

Everything the rest of netspec knows about one layer type is on its `Op`: the shape rule and
counts, the reference math, the kernel builders (`forward_kernels`, `backward_kernels`,
`scratch_buffers`), whether it takes `groups` (`grouped`), whether its GEMMs are autotuned
(`tuned`, `split_k`), whether it is the loss head (`loss_layer`), its diagram colour and label
(`colour`, `label`, `describe`), its parameters (`parameters`: named tensors with an init
rule and a trainable flag) and its PyTorch form (`torch`, `torch_loss`; bench's mirror and the
tests' check_layer use it). The IR, codegen, runtime and viz ask the op; none of them lists
layer types.

Shapes are per image: (C, H, W) for maps, (N,) for neuron vectors.

Reference math (NumPy), one part at a time
------------------------------------------
Every op computes one GPU part of a layer on host arrays with a leading batch axis:

    y, cache = op.forward(a, x, params, relu=..., train=..., noise=...)
    dx, grads = op.backward(a, dy, cache, input_grad=...)

- `a` is the layer's attribute dict (`Layer.attrs`, defaults filled in).
- `x` is the part's input: its sources concatenated along channels (axis 1), shape
  (N, *Layer.part_in_shape(part)). `y` has shape (N, *Layer.part_out_shape(part)), in x's dtype.
- `params` holds the part's tensors in `parameters()` order: `()` for unweighted ops, `(w, b)`
  for weighted ones by default, in the PyTorch layout of `weight_shape` (one part's slice of
  `<layer>.weight` / `.bias`); `grads` holds the gradients of the trainable ones, in order.
- `relu` fuses max(0, ·) into a weighted op's output; `train` selects training behaviour
  (dropout); `noise` is this part's slice of the layer's random draw for the step
  (`draw_noise`), None when the op draws nothing or at test time.
- `cache` is whatever backward needs; it may hold references to `x` and `y`, so a caller must
  not modify either in place while the cache lives. Backward may reuse the cache's buffers
  (conv writes dcols over its columns), so call it at most once per forward.
- `backward` returns dL/dx (None when `input_grad` is False: the input is the network's data)
  and the parameter gradients (`()` for unweighted ops). It never modifies `dy`.

The dtype is the input's: float32 normally, float64 for gradient checks; no op upcasts.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dsl.attrs import AttrDef

_MODULE_FUNCTIONS: dict[tuple[type, str], Any] = {}   # Op._module_function's finds
_MISSING = object()

INIT_RULES = ("gauss", "bias", "zeros", "ones")


@dataclass(frozen=True)
class ParamDef:
    """One named tensor of one layer part, in PyTorch's layout, its rows (axis 0) the part's
    output channels.

    name: the key after the layer's ('weight' -> `conv1.weight`, or `conv1.part0.weight` when
      the parts' tensors don't stack). role: the buffer role the op's kernels read it by ('w');
      its gradient is 'd' + role and its momentum 'v' + role. init: 'gauss' draws N(0, std²)
      with the layer's weight std, 'bias' fills the layer's constant bias, 'zeros' and 'ones'
      fill. trainable: SGD updates it from its gradient; False is state the op keeps (a running
      mean), saved and loaded with the parameters but never updated by SGD.
    """

    name: str
    role: str
    shape: tuple[int, ...]
    init: str = "gauss"
    trainable: bool = True

    def __post_init__(self):
        if self.init not in INIT_RULES:
            raise ValueError(f"parameter {self.name}: unknown init '{self.init}' "
                             f"(one of {', '.join(INIT_RULES)})")


class Op:
    """A layer type. Subclasses set `type`, `attrs`, and override the rules they need."""

    type: str = ""
    doc: str = ""
    weighted: bool = False          # has weights and biases, and a `connect` mode
    spatial_input: bool = False     # needs (C, H, W) input
    follows_input_parts: bool = True  # unweighted layers keep their input's parts
    joins: bool = False             # reads 2+ inputs of one shape and combines them (add):
    #                                 attrs["inputs"] is their number, set by the IR; a part's
    #                                 input is its channels of each input, end to end
    channelwise: bool = False       # weighted, yet each channel alone (batchnorm): its parts
    #                                 follow the input's, each with its channels' tensors
    spans_channels: bool = False      # its maps interact across channels (LRN): one part per
                                      # GPU's run of input parts, cut only by its own groups
    attrs: dict[str, AttrDef] = {}
    grouped: bool = False           # takes `groups G` (Caffe's group): each part one group
    tuned: bool = False             # its GEMMs (fwd, bwd_weight, bwd_data) are autotuned
    split_k: tuple[str, ...] = ()   # directions whose GEMM autotune also tries split-K on
    loss_layer: bool = False        # the head: reads the labels, writes per-image losses
    count_attr: str = "outputs"     # the attribute that sets its channels, for messages
    colour: str = "#cccccc"         # its boxes in the architecture diagram (#rrggbb)
    label: str = ""                 # its name in the diagram's legend (default: type)

    # -- how it is shown -------------------------------------------------------------------
    @property
    def legend(self) -> str:
        return self.label or self.type

    def describe(self, a: dict) -> str:
        """What a layer of this type does, in a few characters, for the diagram's header
        (kernel size and stride, say)."""
        return self.type

    # -- shape and counts ------------------------------------------------------------------
    def output_shape(self, a: dict, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def check(self, a: dict, in_shape: tuple[int, ...], report) -> bool:
        """Validate attributes against the input shape; call report(attr, message) per error.

        Returns False when the output shape can't be computed.
        """
        return True

    def out_channels(self, a: dict, in_shape: tuple[int, ...]) -> int:
        """The layer's output channels (maps) or neurons, the quantity split across GPUs."""
        return self.output_shape(a, in_shape)[0]

    def weight_shape(self, a: dict, in_shape: tuple[int, ...], in_ch: int, out_ch: int):
        """PyTorch layout of one part's weight, given the channels it reads and writes."""
        return None

    def part_macs(self, a: dict, in_shape, out_shape, in_ch: int, out_ch: int) -> int:
        """Multiply-adds per image of one part that reads in_ch and writes out_ch channels."""
        return 0

    def parameters(self, a: dict, in_shape: tuple[int, ...], in_ch: int,
                   out_ch: int) -> tuple[ParamDef, ...]:
        """One part's tensors, in the order `forward` takes them in `params` (see ParamDef).
        A weighted op's default: `weight` (weight_shape, gauss) and `bias` (out_ch, bias)."""
        if not self.weighted:
            return ()
        return (ParamDef("weight", "w", tuple(self.weight_shape(a, in_shape, in_ch, out_ch)),
                         "gauss"),
                ParamDef("bias", "b", (out_ch,), "bias"))

    # -- reference math (NumPy), one part --------------------------------------------------
    def forward(self, a: dict, x: np.ndarray, params: tuple = (), *, relu: bool = False,
                train: bool = False, noise: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """One part's output and the cache its backward needs (see the module docstring)."""
        raise NotImplementedError(f"{self.type}: no reference forward")

    def backward(self, a: dict, dy: np.ndarray, cache: Any, *,
                 input_grad: bool = True) -> tuple[np.ndarray | None, tuple]:
        """dL/dx (None unless input_grad) and the parameter gradients, given dL/dy."""
        raise NotImplementedError(f"{self.type}: no reference backward")

    # -- ONNX export (codegen/onnx_export.py) ---------------------------------------------
    onnx_per_part: bool = False     # mixes channels within a part only: one node per part

    def onnx_node(self, a: dict) -> tuple[str, dict]:
        """The ONNX operator (opset 17) that computes this op at test time, and its
        attributes, as plain data (ops import no onnx). A weighted op's node takes (x, weight,
        bias), x flattened to (N, C·H·W) when the op's output is a vector; the exporter adds
        `group` for grouped convolutions and the fused Relu. Two keys are not attributes:
        `_same_input` (the node reads x twice: Mul(x, x)) and `_float_inputs` (float scalars
        after x, as constants: Clip's min and max); `_then`, a list of (operator, attributes)
        applied in turn to the node's output (linear's Mul then Add)."""
        raise NotImplementedError(f"{self.type}: no ONNX form")

    # -- PyTorch form (bench/vs_pytorch.py's mirror, the tests' check_layer) ----------------
    def torch(self, a: dict, *, relu: bool = False, groups: int = 1, train: bool = True,
              noise: Any = None):
        """This op in PyTorch: a callable fn(x, *params) -> y on torch tensors, the same math
        as `forward` on a whole layer (or, where `onnx_per_part`, on one part).

        x: (N, C, H, W) maps or (N, C) vectors; params: torch tensors in `parameters()` order
        ((weight, bias) for a weighted op, in PyTorch's layout). relu: fuse max(0, ·) into a
        weighted op's output. groups: channel groups as PyTorch's `groups` (a grouped op
        only). train: training behaviour (dropout). noise: the layer's draw from `draw_noise`
        (a torch tensor of the output's shape), so PyTorch drops the units netspec drops;
        None lets PyTorch draw its own. torch is imported inside the hook (an optional
        dependency). NotImplementedError when the op has no PyTorch form."""
        raise NotImplementedError(f"layer type '{self.type}' has no PyTorch form "
                                  f"({type(self).__module__}.{type(self).__name__} defines no "
                                  f"torch())")

    def torch_loss(self, a: dict):
        """A loss layer's loss in PyTorch: fn(z, labels) -> the mean loss (a 0-d tensor), z
        the layer's input (N, ...) and labels (N,) integers; the math of its `loss`."""
        raise NotImplementedError(f"layer type '{self.type}' has no PyTorch loss")

    def draw_noise(self, a: dict, shape: tuple[int, ...],
                   rng: np.random.Generator) -> np.ndarray | None:
        """The random numbers the whole layer needs for one training step, shape (N, C, ...);
        sliced along axis 1 per part. `rng.random(shape, dtype)` gives the layer's uniforms,
        keyed by (seed, step, layer, image, element) (runtime/noise.py), so a device backend
        reproduces them with the same key (dropout's mask kernel). None: no draw.
        """
        return None

    # -- kernels (netspec.kernel), one part ------------------------------------------------
    # An op in netspec/ops may define these as module-level functions of its own module
    # (forward_kernels(c), ...); the defaults below find them there. An op defined elsewhere
    # overrides the methods.
    def forward_kernels(self, c) -> list:
        """The `Call`s of one part's forward, given its `PartContext`, in launch order."""
        return self._module_function("forward_kernels")(c)

    def backward_kernels(self, c) -> list:
        """The `Call`s of one part's backward (parameter gradients, then dL/dx)."""
        return self._module_function("backward_kernels")(c)

    def scratch_buffers(self, c) -> dict[str, int]:
        """Extra buffers (role -> float elements) the part's kernels use; {} by default."""
        fn = self._module_function("scratch_buffers", required=False)
        return fn(c) if fn is not None else {}

    def _module_function(self, name: str, required: bool = True):
        """`name` from the module of this op's class, or of the nearest base class whose
        module defines it (a subclass elsewhere inherits its base's kernels). Looked up once
        per class and name (the plan asks three times per layer part)."""
        key = (type(self), name)
        fn = _MODULE_FUNCTIONS.get(key, _MISSING)
        if fn is _MISSING:
            fn = None
            for cls in type(self).__mro__:
                f = getattr(sys.modules.get(cls.__module__), name, None)
                if callable(f):
                    fn = f
                    break
            _MODULE_FUNCTIONS[key] = fn
        if fn is not None:
            return fn
        if required:
            raise NotImplementedError(f"layer type '{self.type}' has no kernel templates "
                                      f"({type(self).__module__} defines no {name})")
        return None
