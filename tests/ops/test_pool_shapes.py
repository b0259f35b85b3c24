"""Pooling's padding, ceil rounding and global form (ops/maxpool.py's `pool_geometry`, shared
by avgpool): the shape rule against PyTorch's (ceil_mode, the last window starting inside the
input), the math against PyTorch and finite differences, ONNX against onnxruntime, and the
errors. Every backend runs these through tests/layercheck.py's CASES."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netspec.dsl.errors import SpecError
from netspec.ir.build import build_graph
from netspec.ops import OPS
from netspec.ops.maxpool import pool_out

from layercheck import CASES, check_onnx
from numgrad import check_op_grads, rel_error


@pytest.mark.parametrize("ceil", [False, True])
def test_output_size_is_pytorchs(ceil):
    """Every size 1..12, window 1..5, stride 1..4, pad 0..z/2: PyTorch's own output size."""
    for h in range(1, 13):
        for z in range(1, 6):
            for s in range(1, 5):
                for p in range(z // 2 + 1):
                    if z > h + 2 * p:
                        continue
                    want = F.max_pool2d(torch.zeros(1, 1, h, h), z, s, p,
                                        ceil_mode=ceil).shape[-1]
                    assert pool_out(h, z, s, p, ceil) == want, (h, z, s, p, ceil)


def test_caffes_rule_drops_a_window_starting_in_the_frame():
    # ceil((5 + 2 - 2) / 2) + 1 = 4, but window 3 would start at 6 - 1 = 5 >= H: three
    assert pool_out(5, 2, 2, 1, True) == 3
    # GoogLeNet's pools: 112 -> 56 with ceil (floor would give 55)
    assert pool_out(112, 3, 2, 0, True) == 56 and pool_out(112, 3, 2, 0, False) == 55


def _distinct(shape, seed):
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.01 - n * 0.005).reshape(shape)


CONFIGS = [{"size": 3, "stride": 2, "pad": 1, "ceil": True},
           {"size": 3, "stride": 2, "ceil": True},
           {"size": 2, "stride": 2, "pad": 1, "ceil": True},
           {"size": 3, "stride": 1, "pad": 1},
           {"size": 4, "stride": 3, "pad": 2},
           {"global": True}]


@pytest.mark.parametrize("kind,fn", [("maxpool", F.max_pool2d), ("avgpool", F.avg_pool2d)])
@pytest.mark.parametrize("a", CONFIGS, ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
@pytest.mark.parametrize("h", [5, 6, 7])
def test_math_matches_torch(kind, fn, a, h):
    op = OPS[kind]
    x = _distinct((2, 3, h, h), h)
    y, cache = op.forward(a, x)
    tx = torch.tensor(x, requires_grad=True)
    if a.get("global"):
        ty = fn(tx, h, 1)
    else:
        ty = fn(tx, a["size"], a["stride"], padding=a.get("pad", 0),
                ceil_mode=a.get("ceil", False))
    assert y.shape == tuple(ty.shape) == (2, *op.output_shape(a, (3, h, h)))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-15)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx, _ = op.backward(a, dy, cache)
    (gx,) = torch.autograd.grad(ty, tx, torch.from_numpy(dy))
    assert rel_error(dx, gx.numpy()) <= 1e-12


@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
@pytest.mark.parametrize("a", CONFIGS[:3] + CONFIGS[5:],
                         ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_backward_matches_finite_differences(kind, a):
    check_op_grads(OPS[kind], a, _distinct((1, 2, 6, 6), 3), seed=0)


POOL_CASES = [c for c in CASES if "pool-" in c]


@pytest.mark.parametrize("case", POOL_CASES)
def test_onnx_export_matches_onnxruntime(case):
    op_type, attrs, shape, kw = CASES[case]
    check_onnx(op_type, attrs, shape, **kw)


NET = """network n
input 3x8x8
classes 4
conv c1 filters 4 size 3
{pool}
fc f outputs 4
softmax prob
"""


@pytest.mark.parametrize("line,message", [
    ("maxpool p size 3 stride 2 pad 2", "pad 2 is more than half the window 3"),
    ("avgpool p size 3", "missing 'stride'"),
    ("maxpool p stride 2", "missing 'size'"),
    ("avgpool p global size 3", "'global' pools the whole map: give no 'size'"),
    ("maxpool p global ceil", "give no 'ceil'"),
    ("maxpool p size 9 stride 1 pad 1", "window 9 is larger than the input 6x6 framed by "
                                         "pad 1"),
])
def test_errors_name_the_attribute(line, message):
    with pytest.raises(SpecError) as e:
        build_graph(NET.format(pool=line))
    text = str(e.value)
    assert "error: p:" in text
    import re
    assert re.search(message, text), text


def test_global_and_ceil_shapes_in_the_ir():
    g = build_graph(NET.format(pool="maxpool p size 3 stride 2 ceil\navgpool q global")
                    .replace("fc f", "fc f from q"))
    assert g.layer("p").out_shape == (4, 3, 3)          # ceil((6 − 3) / 2) + 1 = 3
    assert g.layer("q").out_shape == (4, 1, 1)
    assert OPS["avgpool"].describe(g.layer("q").attrs) == "avg global"
