"""Static GPU readiness (netspec/codegen/resources.py), compile-only: every kernel of
specs/alexnet.net at the paper's batch (128) on sm_90, from nvcc's own resource report, must fit
an SM without spilling. Oracles: the CUDA occupancy calculator's rules worked by hand, the
GEMM's FLOPs and bytes worked by hand, and the IR's own static shared-memory count against
ptxas's."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from netspec.cli import main
from netspec.codegen.compile import compile_network
from netspec.codegen.resources import (
    REGISTERS_PER_BLOCK,
    STATIC_SHARED_LIMIT,
    occupancy_sm90,
    readiness,
)
from netspec.ir.build import build_graph

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on the PATH (CUDA toolkit "
                                                      "not installed)")


@pytest.fixture(scope="module")
def alexnet128(request):
    root = request.config.rootpath
    compiled = compile_network(build_graph(root / "specs/alexnet.net"), 128)
    return compiled, readiness(compiled)


@needs_nvcc
def test_every_kernel_fits_an_sm90_without_spilling(alexnet128):
    compiled, rows = alexnet128
    assert {r.name for r in rows} == set(compiled.plan.kernels)
    for r in rows:
        assert r.registers is not None and r.registers > 0, r.name
        assert r.spill_stores == 0 and r.spill_loads == 0, (r.name, r.spill_stores)
        assert r.registers * r.threads <= REGISTERS_PER_BLOCK, (r.name, r.registers)
        assert r.shared <= STATIC_SHARED_LIMIT, (r.name, r.shared)
        assert 0 < r.occupancy <= 1 and not r.problems()


@needs_nvcc
def test_ptxas_shared_memory_is_what_the_ir_declares(alexnet128):
    """The IR counts each kernel's static shared arrays (Kernel.shared_bytes); ptxas counts what
    it allocated."""
    compiled, rows = alexnet128
    for r in rows:
        assert r.shared == compiled.plan.kernels[r.name].shared_bytes, r.name


def test_conv1_roofline_by_hand(alexnet128):
    """conv1 (one part: 48 of 96 filters) at batch 128: a GEMM of M=48, N=128·55·55=387,200,
    K=3·11·11=363, 2MNK FLOPs; bytes: input 3·128·224·224, weights 48·363, bias 48, output
    48·387,200 floats."""
    _, rows = alexnet128
    r = next(r for r in rows if r.name == "conv1_fwd")
    assert r.flops == 2 * 48 * 387200 * 363
    assert r.bytes == 4 * (3 * 128 * 224 * 224 + 48 * 363 + 48 + 48 * 387200)
    assert r.bound == "compute"
    assert r.bound_s == pytest.approx(r.flops / 67e12)
    assert r.launches == {0: 1, 1: 1}          # one part on each logical GPU


@pytest.mark.parametrize("regs,threads,smem,want", [
    (56, 256, 8256, 0.5),      # 1792 regs/warp: 36 warps -> 4 blocks of 8 warps
    (48, 256, 8256, 0.625),    # 1536 regs/warp: 42 warps -> 5 blocks
    (32, 256, 0, 1.0),         # 64 warps
    (255, 128, 0, 0.125),      # 8160 -> 8192 regs/warp: 8 warps -> 2 blocks of 4
    (32, 256, 48 * 1024, 0.5),  # 228 KiB / (48 + 1) KiB -> 4 blocks
    (16, 64, 0, 1.0),          # 32 blocks of 2 warps
    (16, 32, 0, 0.5),          # the 32-block limit: 32 warps
])
def test_occupancy_calculator_rules(regs, threads, smem, want):
    assert occupancy_sm90(regs, threads, smem) == want


@needs_nvcc
def test_bench_roofline_prints_the_table(root):
    r = CliRunner().invoke(main, ["bench", "--spec", str(root / "examples/tiny-alexnet.net"),
                                  "--roofline", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    assert "static readiness on sm_90" in r.output and "conv1_fwd" in r.output
    assert "problems: none" in r.output
    r = CliRunner().invoke(main, ["bench", "--spec", str(root / "examples/tiny-alexnet.net"),
                                  "--roofline", "--batch-size", "8", "--json"])
    doc = json.loads(r.output)
    assert doc["batch"] == 8 and all(k["registers"] > 0 for k in doc["kernels"])
