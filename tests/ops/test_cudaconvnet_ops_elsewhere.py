"""cuda-convnet's layer types (local, rnorm, cnorm) outside their reference math: the cpu
backend runs their own host C kernels (HOST_KERNELS in each op's module), not the NumPy
reference (which is made to fail here); and the architecture diagram shows them."""
from __future__ import annotations

import numpy as np
import pytest

from netspec.ir.build import build_graph
from netspec.ops import OPS
from netspec.runtime import build
from netspec.viz import render_diagram

from layercheck import CASES, draw, layer_spec


@pytest.mark.parametrize("case", ["local-stride-pad-relu-2gpu", "rnorm-even-2gpu", "cnorm"])
def test_cpu_backend_runs_the_host_kernels(case, monkeypatch):
    from netspec.runtime.cpu_backend import host_kernels
    if host_kernels()[0] is None:
        pytest.skip(f"cpu backend: {host_kernels()[1]}")
    op_type, attrs, shape, kw = CASES[case]
    graph = build_graph(layer_spec(op_type, attrs, shape, **kw))
    d = draw(graph, 2, 0)
    x = d.onehot.astype(np.float32)
    params = {k: v.astype(np.float32) for k, v in d.params.items()}

    def results(backend):
        net = build(graph, backend, dtype=np.float32)
        net.load_parameters(params)
        loss, grads = net.loss_and_grads(x, d.labels, train=True)
        return net.forward(x), loss, grads

    want = results("numpy")

    def refuse(*a, **k):
        raise AssertionError("the NumPy reference ran")
    monkeypatch.setattr(OPS[op_type], "forward", refuse)
    monkeypatch.setattr(OPS[op_type], "backward", refuse)
    got = results("cpu")
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5 * np.abs(want[0]).max())
    assert abs(got[1] - want[1]) <= 1e-4 * max(1.0, abs(want[1]))
    for name, g in want[2].items():
        np.testing.assert_allclose(got[2][name], g, rtol=1e-4, atol=1e-5 * np.abs(g).max(),
                                   err_msg=name)


def test_the_diagram_shows_them(tmp_path):
    g = build_graph("network looks\ninput 3x12x12\nclasses 4\n"
                    "conv c1 filters 8 size 3 pad 1 relu\nrnorm r1 size 3 alpha 0.001\n"
                    "cnorm n1 size 5 alpha 0.1\nlocal l1 filters 4 size 3 stride 2\n"
                    "fc f1 outputs 4\nsoftmax prob\n")
    svg = render_diagram(g, tmp_path / "looks.svg").read_text()
    for text in ("within-map norm.", "contrast norm.", "locally connected", "rnorm 3×3",
                 "cnorm 5×5", "local 3×3 s2", "5×5×4"):
        assert text in svg, text
    assert render_diagram(g, tmp_path / "looks.png").stat().st_size > 0
