"""The Spec: plain, frozen data parsed from a spec file, with source positions kept."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import Pos


@dataclass(frozen=True, slots=True)
class Item:
    """One token group after a statement's keyword: a word, number, dims, call or list."""

    kind: str      # 'word' | 'number' | 'dims' | 'call' | 'list'
    value: Any     # str | int | float | tuple[int, ...] | (name, tuple) | tuple[Item, ...]
    pos: Pos
    text: str = ""


@dataclass(frozen=True, slots=True)
class Attr:
    """A key and its typed value, with the positions of both."""

    key: str
    value: Any
    pos: Pos
    value_pos: Pos


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """A layer statement: `TYPE NAME items...`. Its items are read against the layer type's
    schema in the IR, where the layer types are known."""

    type: str
    name: str
    items: tuple[Item, ...]
    pos: Pos
    name_pos: Pos


# The `precision` recipe statement's values: the GEMMs' operand format. fp32 keeps every
# product exact in float; tf32 (10-bit mantissa) and bf16 (7-bit) round the operands as the
# tensor cores read them and accumulate in fp32 (netspec/kernel/gemm.py).
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class Recipe:
    """The training recipe (§4–5). Defaults are the paper's where the paper gives one."""

    batch_size: int = 128
    epochs: int = 90
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    schedule: str = "plateau"         # 'plateau' | 'steps' | 'none'
    factor: float = 0.1
    patience: int = 2                 # evaluations without improvement before a drop
    max_drops: int = 3
    drop_epochs: tuple[int, ...] = ()
    crop: int | None = None           # None: the input size
    base: int | None = None           # None: the crop size (no random crop)
    flip: bool = False
    pca_sigma: float = 0.0
    test_views: int = 1
    checkpoint_every: int | None = None   # steps between mid-epoch checkpoints (Caffe's snapshot)
    keep: int = 1                     # checkpoints kept
    precision: str = "fp32"           # GEMM operands: one of PRECISIONS (fp32: the paper's)
    pos: dict[str, Pos] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Spec:
    path: str
    source: str
    network: str
    input_shape: tuple[int, ...]
    classes: int
    gpus: int
    init_std: float | str             # a std, or 'he'
    init_bias: float
    layers: tuple[LayerSpec, ...]
    recipe: Recipe
    pos: dict[str, Pos] = field(default_factory=dict, compare=False, hash=False)
