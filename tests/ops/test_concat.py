"""concat (ops/concat.py) and reading several inputs in any layer: a SqueezeNet Fire module's
two expand convs concatenated into a max pool (what issue 29 found refused), shapes and parts
in the IR, the copy against PyTorch, ONNX on onnxruntime. Every backend: layercheck's CASES
(concat on 2 GPUs and across them, a max pool reading two inputs)."""
from __future__ import annotations

import numpy as np
import pytest

from netspec.dsl.errors import SpecError
from netspec.ir.build import build_graph
from netspec.ops import OPS

from layercheck import CASES, check_onnx

FIRE = """network fire
input 3x9x9
classes 4
gpus {gpus}
conv squeeze filters 4 size 1 relu
conv e1 filters 6 size 1 relu from squeeze
conv e3 filters 6 size 3 pad 1 relu from squeeze
{join}
fc f outputs 4
softmax prob
"""


@pytest.mark.parametrize("gpus", [1, 2])
def test_a_fire_module_joins_into_a_pool(gpus):
    g = build_graph(FIRE.format(gpus=gpus, join="maxpool pool from e1, e3 size 3 stride 2 "
                                                 "ceil"))
    pool = g.layer("pool")
    assert pool.in_shape == (12, 9, 9) and pool.out_shape == (12, 4, 4)
    assert sum(p.channels for p in pool.parts) == 12
    # part by part: e1's parts, then e3's, each on its own GPU, no transfer
    assert [(s.layer, p.gpu) for p in pool.parts for s in p.sources] == \
        [("e1", q.gpu) for q in g.layer("e1").parts] + [("e3", q.gpu) for q in
                                                        g.layer("e3").parts]
    assert not [t for t in g.transfers if "pool" in t.consumers]


def test_concat_layer_is_the_inputs_end_to_end():
    g = build_graph(FIRE.format(gpus=1, join="concat cat from e1, e3"))
    assert g.layer("cat").out_shape == (12, 9, 9)
    x = np.random.default_rng(0).standard_normal((2, 12, 3, 3))
    y, cache = OPS["concat"].forward({}, x)
    assert np.array_equal(y, x) and y is not x
    dx, _ = OPS["concat"].backward({}, y, cache)
    assert np.array_equal(dx, x)
    assert OPS["concat"].torch({})(x) is x


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("concat")
                                  or c == "maxpool-from-two"])
def test_onnx_export_matches_onnxruntime(case):
    op_type, attrs, shape, kw = CASES[case]
    check_onnx(op_type, attrs, shape, **kw)


def test_inputs_must_agree_but_in_channels():
    text = FIRE.format(gpus=1, join="maxpool p2 size 2 stride 2 from e1\n"
                                    "concat cat from p2, e3").replace("fc f", "fc f from cat")
    with pytest.raises(SpecError, match="agree in all but channels: p2 6x4x4, e3 6x9x9"):
        build_graph(text)
