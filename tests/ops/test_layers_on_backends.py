"""Every layer type on every backend, one line each (tests/layercheck.py): forward and
backward against the NumPy reference and against PyTorch, in float32 (and float64 where the
backend computes in it), alone in a network around the layer. Shapes are small: each case
compiles its own kernels once per backend."""
from __future__ import annotations

import pytest
from layercheck import BACKEND_NAMES, CASES, check_layer


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("case", list(CASES))
def test_layer(case, backend):
    op_type, attrs, shape, kw = CASES[case]
    check_layer(op_type, attrs, shape, backends=[backend], **kw)


def test_every_layer_type_is_covered():
    from netspec.ops import OPS
    assert {c[0] for c in CASES.values()} >= set(OPS)
