"""Every layer type on every backend, one line each (tests/layercheck.py): forward and
backward against the NumPy reference and against PyTorch, in float32 (and float64 where the
backend computes in it), alone in a network around the layer. Shapes are small: each case
compiles its own kernels once per backend."""
from __future__ import annotations

import pytest

from layercheck import BACKEND_NAMES, CASES, check_layer, draw, layer_spec, run_net, stable


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("case", list(CASES))
def test_layer(case, backend):
    op_type, attrs, shape, kw = CASES[case]
    check_layer(op_type, attrs, shape, backends=[backend], **kw)


def test_every_layer_type_is_covered():
    from netspec.ops import OPS
    assert {c[0] for c in CASES.values()} >= set(OPS)


@pytest.mark.parametrize("case", ["maxpool", "relu"])
def test_a_draw_near_a_tie_is_refused(case):
    """The guard check_layer draws under: a max-pool window holding two values 1e-9 apart,
    or a ReLU input 1e-9 from 0, is refused; the grid's own draw is not."""
    import numpy as np

    from netspec.ir.build import build_graph
    from netspec.runtime import build
    op_type, attrs, shape, _ = CASES[case]
    graph = build_graph(layer_spec(op_type, attrs, shape))
    d = draw(graph, 2, 0)
    assert stable(graph, d, run_net(build(graph, "numpy", dtype=np.float64), d))
    w = d.params["probe.weight"]                  # w[c, n·H·W + p] = x[n, c, p]
    if case == "maxpool":                        # image 0's first window: its top two
        w[0, 0], w[0, 1] = 2.0, 2.0 + 1e-9
    else:
        w[0, 0] = 1e-9
    assert not stable(graph, d, run_net(build(graph, "numpy", dtype=np.float64), d))
