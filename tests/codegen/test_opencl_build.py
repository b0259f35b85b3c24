"""Every emitted .cl builds on PoCL; a kernel that fails to build shows the compiler's log and
the generated line; a spec beyond a device limit names the layer."""
from __future__ import annotations

import pytest

from netspec.codegen.compile import build_error, compile_network, render_source
from netspec.errors import DeviceLimitError, KernelBuildError
from netspec.ir.build import build_graph
from netspec.kernel.gemm import GemmTiles

cl = pytest.importorskip("pyopencl", reason="pyopencl is not installed")
from netspec.runtime.opencl_backend import find_device  # noqa: E402

DEVICE = find_device()
needs_device = pytest.mark.skipif(DEVICE is None, reason="no OpenCL device (install pocl)")


@needs_device
@pytest.mark.parametrize("spec", ["specs/alexnet.net", "specs/alexnet-1gpu.net",
                                  "examples/tiny-alexnet.net"])
def test_opencl_source_builds(root, spec):
    c = compile_network(build_graph(root / spec))
    ctx = cl.Context([DEVICE])
    program = cl.Program(ctx, c.opencl_source).build()
    names = set(program.get_info(cl.program_info.KERNEL_NAMES).split(";"))
    assert names == set(c.plan.kernels)


@needs_device
def test_build_error_points_at_the_generated_line(root):
    c = compile_network(build_graph(root / "examples/tiny-alexnet.net"), 2)
    k = c.plan.kernels["norm1_fwd"]
    k.template = k.template.replace("sum += a * a;", "sum += a * undeclared_thing;")
    src = render_source(c.plan, c.opencl.dialect)
    program = cl.Program(cl.Context([DEVICE]), src.text)
    with pytest.raises(cl.RuntimeError):
        program.build()
    log = program.get_build_info(DEVICE, cl.program_build_info.LOG)
    err = build_error(src, log, "PoCL")
    assert isinstance(err, KernelBuildError)
    msg = str(err)
    assert "kernel norm1_fwd" in msg and "undeclared_thing" in msg
    line = int(msg.split("at generated line ")[1].split()[0])
    assert "undeclared_thing" in src.text.splitlines()[line - 1]


def test_device_limit_names_the_layer(root):
    g = build_graph(root / "examples/tiny-alexnet.net")
    huge = {"conv3": {"fwd": GemmTiles(BM=128, BN=128, BK=16, TM=1, TN=1,
                                        layout="strided")}}
    with pytest.raises(DeviceLimitError, match=r"layer 'conv3'.*work-groups of \d+ work-items.*at most 1024"):
        compile_network(g, 64, tiles=huge)
