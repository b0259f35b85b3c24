"""What every layer type provides: its attributes, shape rule, counts and reference math.

A layer type is one module in `netspec/ops/` that defines `OP`, an instance of an `Op`
subclass (Caffe's habit: the DSL keyword, the shape rule, the reference math and the kernel
templates of a layer are all found in one place). `netspec.ops.OPS` discovers them.

Shapes are per image: (C, H, W) for maps, (N,) for neuron vectors.

Reference math (NumPy), one part at a time
------------------------------------------
Every op computes one GPU part of a layer on host arrays with a leading batch axis:

    y, cache = op.forward(a, x, params, relu=..., train=..., noise=...)
    dx, grads = op.backward(a, dy, cache, input_grad=...)

- `a` is the layer's attribute dict (`Layer.attrs`, defaults filled in).
- `x` is the part's input: its sources concatenated along channels (axis 1), shape
  (N, *Layer.part_in_shape(part)). `y` has shape (N, *Layer.part_out_shape(part)), in x's dtype.
- `params` is `()` for unweighted ops and `(w, b)` for weighted ones, in the PyTorch layout of
  `weight_shape` (one part's slice of `<layer>.weight` / `.bias`); `grads` matches it.
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

from typing import Any

import numpy as np

from ..dsl.attrs import AttrDef


class Op:
    """A layer type. Subclasses set `type`, `attrs`, and override the rules they need."""

    type: str = ""
    doc: str = ""
    weighted: bool = False          # has weights and biases, and a `connect` mode
    spatial_input: bool = False     # needs (C, H, W) input
    follows_input_parts: bool = True  # unweighted layers keep their input's parts
    attrs: dict[str, AttrDef] = {}

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
        `group` for grouped convolutions and the fused Relu."""
        raise NotImplementedError(f"{self.type}: no ONNX form")

    def draw_noise(self, a: dict, shape: tuple[int, ...],
                   rng: np.random.Generator) -> np.ndarray | None:
        """The random numbers the whole layer needs for one training step, shape (N, C, ...);
        sliced along axis 1 per part. The executor calls it once per layer per training step,
        in network order, so backends reproduce it by replaying the same calls. None: no draw.
        """
        return None
