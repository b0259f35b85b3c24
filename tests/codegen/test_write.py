"""netspec/codegen/compile.py CompiledNetwork.write (`netspec compile --out DIR`): the C +
OpenMP kernels the default cpu backend runs are written beside kernels.cu, kernels.cl and
plan.json, and they are that backend's source, which the system compiler builds as C."""
from __future__ import annotations

import pathlib
import subprocess

from netspec.codegen.compile import compile_network
from netspec.codegen.cpu_kernels import kernel_signatures, render_cpu_module
from netspec.ir.build import build_graph
from netspec.runtime.host_build import find_compiler, host_flags

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_write_includes_the_host_kernels(tmp_path):
    graph = build_graph(path=str(ROOT / "examples" / "tiny-alexnet.net"))
    paths = compile_network(graph, 4).write(tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "kernels.cu", "kernels.cl", "kernels.c", "plan.json"}
    text = paths["host"].read_text()
    assert text == render_cpu_module()
    for name in kernel_signatures():       # every kernel the backend loads by name
        assert f" {name}(" in text, name
    cc = find_compiler()
    assert cc is not None, "no C compiler: the cpu backend can't run here either"
    # the backend's flags, checked without optimising (the build itself takes ~20 s)
    flags = [f for f in host_flags() if f not in ("-shared",) and not f.startswith("-O")]
    r = subprocess.run([cc, *flags, "-fsyntax-only", "-Werror=implicit-function-declaration",
                        str(paths["host"])], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
