"""Layer names become parts of generated identifiers (kernels `<layer>_g<part>_<step>` in CUDA
and OpenCL; the C dialect's host kernels have fixed names), so a layer name is a C identifier: letters, digits and '_', not starting with
a digit. The grammar's words also allow '-' (for values such as `connect same-gpu`); a '-' in
a layer name is refused at parse time with its position. Every name the grammar then allows
renders, builds (C compiler, nvcc, PoCL) and trains."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

import netspec
from netspec.cli import main
from netspec.codegen.compile import compile_network, render_source
from netspec.ir.build import build_graph
from netspec.kernel.dialects import CUDA, OPENCL
from netspec.runtime.sgd import sgd_update

# every character a layer name may hold: each letter (both cases), each digit, '_' first,
# inside and last, and '__'
NAMES = ["_abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ_", "n0123456789",
         "a__b_"]
# no max-pool or ReLU: the opencl/numpy comparison can't hinge on a near-tie
SPEC = f"""network every-name
input 3x6x6
classes 3
conv {NAMES[0]} filters 4 size 3
avgpool {NAMES[1]} size 2 stride 2
fc {NAMES[2]} outputs 3 weight gauss(0.1)
softmax {NAMES[3]}
train
  batch 2
"""


def test_a_dash_in_a_layer_name_is_refused_at_its_position(tmp_path):
    path = tmp_path / "dash.net"
    path.write_text(SPEC.replace(f"conv {NAMES[0]}", "conv c-1").replace(
        f"avgpool {NAMES[1]} size", f"avgpool {NAMES[1]} from c-1 size"))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["compile", str(path), "--out", str(out)])
    assert r.exit_code == 2
    assert r.output.splitlines()[:3] == [
        f"{path}:4:7: error: layer name 'c-1': '-' is not allowed in a layer name (letters, "
        "digits and '_', not starting with a digit: generated kernels are named after it); "
        "use 'c_1'",
        "    4 | conv c-1 filters 4 size 3",
        "      |       ^"]
    assert r.output.splitlines()[-1] == "1 error"       # its reader finds it: no other error
    assert not out.exists()


def test_dash_stays_a_value_character():
    g = build_graph(text=SPEC.replace("input 3x6x6", "gpus 2\ninput 3x6x6").replace(
        f"fc {NAMES[2]} outputs 3", f"fc {NAMES[2]} outputs 4 connect same-gpu").replace(
        "classes 3", "classes 4"))
    assert g.layer(NAMES[2]).connect == "same-gpu"


@pytest.fixture(scope="module")
def compiled():
    return compile_network(build_graph(text=SPEC))


def test_every_allowed_name_renders_in_every_device_dialect(compiled):
    for dialect in (CUDA, OPENCL):
        text = render_source(compiled.plan, dialect).text
        for name in NAMES[:3]:
            assert f"void {name}_g0_fwd(" in text


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH")
def test_every_allowed_name_builds_with_nvcc(compiled, tmp_path):
    files = compiled.write(tmp_path)
    out = tmp_path / "kernels.ptx"
    r = subprocess.run(["nvcc", "-ptx", "-arch=sm_80", str(files["cuda"]), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f".entry {NAMES[0]}_g0_fwd" in out.read_text()


def _opencl():
    cl = pytest.importorskip("pyopencl", reason="pyopencl is not installed")
    from netspec.runtime.opencl_backend import find_device
    device = find_device()
    if device is None:
        pytest.skip("no OpenCL device (install pocl)")
    return cl, device


def test_every_allowed_name_builds_on_pocl(compiled):
    cl, device = _opencl()
    program = cl.Program(cl.Context([device]), compiled.opencl_source).build()
    assert set(program.get_info(cl.program_info.KERNEL_NAMES).split(";")) == \
        set(compiled.plan.kernels)


def _one_step(backend: str, x, y) -> tuple[float, dict, dict]:
    """Loss, gradients and parameters after one SGD step (lr 0.1, momentum 0.9)."""
    net = netspec.build(SPEC, backend, seed=1)
    loss, grads = net.loss_and_grads(x, y, train=True)
    if backend == "numpy":       # the reference: runtime/sgd.py's rule on host arrays
        params = {k: v.copy() for k, v in net.parameters().items()}
        sgd_update(params, grads, {k: np.zeros_like(g) for k, g in grads.items()}, 0.1, 0.9,
                   0.0)
    else:
        net.update(lr=0.1, momentum=0.9, weight_decay=0.0)
        params = net.parameters()
    return loss, grads, params


@pytest.mark.parametrize("backend", ["opencl", "cpu"])
def test_every_allowed_name_trains_a_step(backend):
    """One SGD step on opencl (PoCL) and on cpu (the C dialect, built by the system C
    compiler) against the numpy backend's step."""
    if backend == "opencl":
        _opencl()
    elif shutil.which("cc") is None:
        pytest.skip("no C compiler")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y = np.array([0, 2])
    ref_loss, ref_grads, ref_params = _one_step("numpy", x, y)
    loss, grads, params = _one_step(backend, x, y)
    assert np.isfinite(ref_loss) and loss == pytest.approx(ref_loss, rel=1e-5)
    assert set(grads) == {f"{NAMES[0]}.weight", f"{NAMES[0]}.bias", f"{NAMES[2]}.weight",
                          f"{NAMES[2]}.bias"}
    start = netspec.build(SPEC, "numpy", seed=1).parameters()
    for k, g in ref_grads.items():
        np.testing.assert_allclose(grads[k], g, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-4, atol=1e-6)
        assert not np.array_equal(params[k], start[k])       # the step moved every tensor
