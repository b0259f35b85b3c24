"""netspec/runtime's backend registry: a backend defined and registered in this file alone
(`hostc`: the C dialect's host kernels, the cpu backend's class under a name of its own) is
accepted by `netspec.build`, a training run, `netspec bench` and the CLI's `--backend`, with
no edit anywhere else."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import netspec
from netspec import runtime
from netspec.kernel.dialects import C
from netspec.runtime import (
    BACKENDS,
    backend_class,
    backend_names,
    register_backend,
    unregister_backend,
)
from netspec.runtime.clock import HostClock
from netspec.runtime.cpu_backend import CpuNet

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny-alexnet.net"


class HostCNet(CpuNet):
    """The host C kernels (C dialect, OpenMP) and BLAS, as backend 'hostc'."""

    backend = "hostc"


@pytest.fixture
def hostc():
    register_backend("hostc", HostCNet)
    yield HostCNet
    unregister_backend("hostc")


def test_a_registered_backend_is_listed_and_found(hostc):
    assert "hostc" in backend_names() and "hostc" in BACKENDS
    assert ["auto", *runtime.BACKENDS][-1] == "hostc"       # what --backend offers
    assert backend_class("hostc") is HostCNet
    assert "hostc" not in runtime.AUTO_ORDER                 # asked for by name only
    with pytest.raises(ValueError, match="did you mean 'hostc'"):
        backend_class("hostcc")


def test_unregistering_removes_it_everywhere():
    register_backend("hostc", HostCNet, auto_rank=35)
    assert runtime.AUTO_ORDER == ("cuda", "opencl", "cpu", "hostc", "numpy")
    unregister_backend("hostc")
    assert "hostc" not in BACKENDS and "hostc" not in runtime.AUTO_ORDER
    with pytest.raises(ValueError, match="unknown backend 'hostc'"):
        backend_class("hostc")


def test_a_backend_named_by_module_is_imported_when_asked_for():
    register_backend("hostc", f"{__name__}:HostCNet")
    try:
        assert isinstance(BACKENDS["hostc"], str)
        assert backend_class("hostc") is HostCNet
    finally:
        unregister_backend("hostc")


def test_registration_mistakes_are_refused(hostc):
    with pytest.raises(ValueError, match="'auto'"):
        register_backend("auto", HostCNet)
    with pytest.raises(ValueError, match="backend = 'hostc'"):
        register_backend("other", HostCNet)             # net.backend would say 'hostc'
    with pytest.raises(ValueError, match="already registered"):
        register_backend("hostc", "netspec.runtime.cpu_backend:CpuNet")
    with pytest.raises(ValueError, match="module:Class"):
        register_backend("x", "netspec.runtime.cpu_backend.CpuNet")
    register_backend("hostc", HostCNet)                 # the same again is no change
    assert backend_class("hostc") is HostCNet


def test_its_facts_come_from_its_class(hostc):
    assert hostc.dialect is C
    assert hostc.device_count() == 1
    assert hostc.kernel_timer() is None
    assert hostc.available() and hostc.unavailable_reason() is None
    net = netspec.build(TINY.read_text(), backend="hostc", seed=1)
    assert isinstance(net.clock(), HostClock)
    assert net.device_name == net.device_names[0]


def test_build_runs_it(hostc):
    net = netspec.build(str(TINY), backend="hostc", seed=1)
    assert isinstance(net, HostCNet) and net.backend == "hostc"
    ref = netspec.build(str(TINY), backend="cpu", seed=1)
    x = np.random.default_rng(0).standard_normal((2, *net.graph.input_shape),
                                                 dtype=np.float32)
    np.testing.assert_array_equal(net.forward(x), ref.forward(x))


def test_bench_times_it(hostc):
    from netspec.bench.timing import bench
    res = bench(str(TINY), "hostc", batch_size=4, iterations=1, warmup=0, sgemm=False)
    assert res.backend == "hostc" and res.timer == HostClock.name
    assert {r.direction for r in res.rows} == {"forward", "backward", "update"}


def _image_folder(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)) \
                    .save(d / f"{i}.png")
    return root


def _tiny_spec(path: Path) -> Path:
    text = TINY.read_text().split("train\n")[0]
    path.write_text(text + "train\n  batch 4\n  epochs 1\n  sgd lr 0.01 momentum 0.9 "
                    "weight_decay 0.0005\n  schedule none\n  augment crop 64 from 72\n")
    return path


def test_training_runs_on_it(hostc, tmp_path):
    from netspec.train.loop import Trainer, TrainOptions
    spec = _tiny_spec(tmp_path / "tiny.net")
    data = _image_folder(tmp_path / "data")
    opts = TrainOptions(spec=str(spec), data=str(data), backend="hostc",
                        out=str(tmp_path / "run"), max_steps=2, progress=False)
    trainer = Trainer(opts, echo=lambda *a, **k: None)
    assert trainer.net.backend == "hostc"
    trainer.run()
    assert (tmp_path / "run").is_dir()


def test_the_cli_offers_it(hostc, tmp_path):
    """`--backend hostc` on bench and train. The CLI reads its choices from the registry once
    its --backend option is built from `["auto", *netspec.runtime.BACKENDS]`."""
    from netspec.cli import main
    r = CliRunner().invoke(main, ["bench", "--spec", str(TINY), "--backend", "hostc",
                                  "--batch-size", "4", "--iterations", "1", "--warmup", "0",
                                  "--json"])
    assert r.exit_code == 0, r.output
    assert '"backend": "hostc"' in r.output
    spec = _tiny_spec(tmp_path / "tiny.net")
    data = _image_folder(tmp_path / "data")
    r = CliRunner().invoke(main, ["train", "--spec", str(spec), "--data", str(data),
                                  "--backend", "hostc", "--max-steps", "1", "--out",
                                  str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "on hostc backend" in r.output
