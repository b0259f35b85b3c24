"""What every layer type provides: its attributes, shape rule, counts and reference math.

A layer type is one module in `netspec/ops/` that defines `OP`, an instance of an `Op`
subclass (Caffe's habit: the DSL keyword, the shape rule, the reference math and the kernel
templates of a layer are all found in one place). `netspec.ops.OPS` discovers them.

Shapes are per image: (C, H, W) for maps, (N,) for neuron vectors.
"""
from __future__ import annotations

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
