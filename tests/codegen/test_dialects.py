"""One template, two dialects: templates never spell a dialect's words; rendering does."""
from __future__ import annotations

import re

import pytest

from netspec.codegen.compile import compile_network
from netspec.ir.build import build_graph
from netspec.kernel.dialects import CUDA, OPENCL

# words only one dialect knows; a template that writes any of them is not dialect-neutral
DIALECT_WORDS = ["__syncthreads", "__global__", "__shared__", "threadIdx", "blockIdx",
                 "blockDim", "get_local_id", "get_group_id", "get_global_id", "barrier(",
                 "__kernel", "__global", "__local", "CLK_LOCAL_MEM_FENCE", "expf", "powf",
                 "logf", "fmaxf", "__restrict__", 'extern "C"']


def test_templates_never_spell_a_dialect(root):
    g = build_graph(root / "specs/alexnet.net")
    plan = compile_network(g, 2).plan
    for k in plan.kernels.values():
        for word in DIALECT_WORDS:
            assert word not in k.template, f"{k.name}'s template writes {word!r}"


def test_rendered_sources_use_each_dialects_words(root):
    c = compile_network(build_graph(root / "examples/tiny-alexnet.net"), 4)
    cu, cl = c.cuda_source, c.opencl_source
    assert "__syncthreads();" in cu and "barrier(CLK_LOCAL_MEM_FENCE);" in cl
    assert cu.count('extern "C" __global__ void') == len(c.plan.kernels)
    assert cl.count("__kernel void") == len(c.plan.kernels)
    assert "get_local_id" not in cu and "threadIdx" not in cl
    assert "expf(" in cu and re.search(r"[^f]exp\(", cl)
    assert "$" not in cu and "$" not in cl            # every token substituted
    # static shapes are literals: conv1's 64x64 input, 5x5 kernel, stride 2
    assert "conv1_fwd" in c.plan.kernels
    assert "h1 * 64 + h2" in cu and "% 5" in cu         # the row pitch and the kernel size


def test_unknown_token_is_an_error():
    with pytest.raises(KeyError):
        CUDA.render("$kernel f() { $nonsense; }")
    assert OPENCL.render("${grp1} ${N}", N=3) == "(int)get_group_id(1) 3"
