"""Data-parallel training over MPI (netspec/train/data_parallel.py, mpi.py, buckets.py;
netspec/runtime/noise.py): launch detection, batch
split, per-image dropout masks, and real `mpirun -n 2` / `-n 3` runs on localhost checked
against one process with the same global batch (the oracle: the single-process trainer, which
the PyTorch trajectory test in test_training.py checks), across ranks, after a killed or hung
rank, and resumed with a different K."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netspec.errors import RunError
from netspec.kernel.philox import philox4x32
from netspec.runtime.noise import ImageNoise
from netspec.train import buckets, data_parallel
from netspec.train import mpi as transport
from netspec.train.checkpoint import STATE, load_checkpoint
from netspec.train.data_parallel import detect_launch, local_devices, shard_range, split_batch
from netspec.train.loop import Trainer, TrainOptions

from trainkit import tiny_spec

ROOT = Path(__file__).resolve().parents[2]
REPLICA = Path(__file__).with_name("mpi_replica.py")


# -- without MPI --------------------------------------------------------------------------------
def test_launch_is_read_from_the_launchers_environment():
    assert detect_launch({}) is None
    assert detect_launch({"PATH": "/bin"}) is None
    ompi = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3",
            "OMPI_COMM_WORLD_LOCAL_RANK": "1"}
    assert detect_launch(ompi) == data_parallel.Launch(rank=3, size=4, local_rank=1)
    hydra = {"PMI_SIZE": "2", "PMI_RANK": "1", "MPI_LOCALRANKID": "0"}
    assert detect_launch(hydra) == data_parallel.Launch(rank=1, size=2, local_rank=0)


def test_without_mpi_nothing_imports_mpi4py():
    code = ("import sys, netspec.cli, netspec.train.loop, netspec.train.data_parallel as d; "
            "assert d.current() is None; assert 'mpi4py' not in sys.modules")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMPI_", "PMI_", "PMIX_", "MV2_"))}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


def test_a_global_batch_that_does_not_divide_names_both_numbers():
    assert split_batch(128, 8) == 16
    with pytest.raises(RunError, match="global batch 12 can't be split evenly over 5 replicas"):
        split_batch(12, 5)


def test_timeout_and_bucket_settings_are_checked():
    assert transport.collective_timeout({}) == 300
    assert transport.collective_timeout({"NETSPEC_COLLECTIVE_TIMEOUT": "2.5"}) == 2.5
    for bad in ("0", "-3", "soon"):
        with pytest.raises(RunError, match="NETSPEC_COLLECTIVE_TIMEOUT"):
            transport.collective_timeout({"NETSPEC_COLLECTIVE_TIMEOUT": bad})
    assert buckets.bucket_cap_bytes({}) == 1 << 20
    assert buckets.bucket_cap_bytes({"NETSPEC_BUCKET_MB": "25"}) == 25 << 20
    with pytest.raises(RunError, match="NETSPEC_BUCKET_MB"):
        buckets.bucket_cap_bytes({"NETSPEC_BUCKET_MB": "-1"})


def test_shards_cover_a_batch_once():
    for n in (1, 6, 7, 30):
        for k in (1, 2, 3, 4):
            pieces = [shard_range(n, r, k) for r in range(k)]
            assert pieces[0][0] == 0 and pieces[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))


def test_dropout_noise_is_per_image_whatever_the_split():
    """Image i's draws come from (seed, step, layer, i) alone: three replicas' noise put
    together is one process's, layer after layer; another step or seed differs."""
    whole = ImageNoise(7, 5, 0, 6)
    parts = [ImageNoise(7, 5, 2 * r, 2) for r in range(3)]
    for layer, shape in ((1, (6, 4, 3)), (3, (6, 10))):
        a = whole.layer(layer).random(shape, dtype=np.float32)
        b = np.concatenate([p.layer(layer).random((2, *shape[1:]), dtype=np.float32)
                            for p in parts])
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(ImageNoise(7, 6, 0, 6).layer(3).random((6, 10)),
                              ImageNoise(7, 5, 0, 6).layer(3).random((6, 10)))
    assert not np.array_equal(ImageNoise(8, 5, 0, 6).layer(3).random((6, 10)),
                              ImageNoise(7, 5, 0, 6).layer(3).random((6, 10)))
    # image 4's uniforms, from Philox4x32-10 itself: element e is word e % 4 of counter
    # (e // 4, 4, layer 2, step 5) under key (7, 0), its top 24 bits over 2^24
    words = philox4x32((np.arange(3), 4, 2, 5), (7, 0)).T.reshape(-1)[:12]
    expect = (words >> 8).astype(np.float64) / 2.0 ** 24
    assert np.array_equal(ImageNoise(7, 5, 4, 1).layer(2).random((1, 4, 3))[0].reshape(-1),
                          expect)


def test_replicas_on_one_node_take_their_own_devices():
    # 4 replicas of 2-GPU AlexNet on an 8-GPU node: 0,1 / 2,3 / 4,5 / 6,7
    assert [local_devices(None, 2, r, 8) for r in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert local_devices([1], 2, 2, 8) == [3]
    assert local_devices(None, 2, 3, 1) == [0, 0]          # a CPU: every replica on device 0


# -- real mpirun on localhost ------------------------------------------------------------------
# the wheel's mpirun sits beside the interpreter in a virtual environment that isn't on PATH
MPIRUN = shutil.which("mpirun", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                      os.environ.get("PATH", "")]))
try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
mpi = pytest.mark.skipif(MPIRUN is None or not HAVE_MPI4PY,
                         reason="needs Open MPI and mpi4py: pip install 'netspec[mpi]'")


def mpi_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM", "PMI_"))}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.update(extra)
    return env


def mpirun(k, *args, timeout=300, env=None, **popen):
    cmd = [MPIRUN, "-n", str(k), "--oversubscribe", sys.executable, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=env or mpi_env(), cwd=ROOT, **popen)


@pytest.fixture(scope="module")
def spec12(tmp_path_factory):
    """tiny-alexnet with a global batch of 12 (divides over 1, 2, 3 and 4 replicas); dropout
    on, so the per-image masks matter."""
    p = tmp_path_factory.mktemp("spec") / "tiny.net"
    p.write_text(tiny_spec(batch="12", epochs="2"))
    return p


def single(spec, folder, out, backend, steps, dtype="float32"):
    """The oracle: one process, the same global batch."""
    t = Trainer(TrainOptions(spec=str(spec), data=str(folder), backend=backend, out=str(out),
                             max_steps=steps, progress=False, dtype=dtype),
                echo=lambda *a, **k: None)
    t.run()
    metrics = Path(out) / "metrics.jsonl"
    return t.net.parameters(), [json.loads(line) for line in metrics.read_text().splitlines()] \
        if metrics.exists() else []


def assert_close(a, b, rel=1e-5):
    """max|a − b| <= rel · max|b| per tensor (float32 reduction order)."""
    assert a.keys() == b.keys()
    for k in a:
        scale = float(np.abs(b[k]).max())
        assert float(np.abs(a[k] - b[k]).max()) <= rel * scale, k


def replicas_run(k, spec, folder, out, backend, steps, env=None):
    r = mpirun(k, REPLICA, spec, folder, out, backend, steps, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = [dict(np.load(Path(out) / f"rank{i}.npz")) for i in range(k)]
    metrics = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return ranks, metrics


@mpi
@pytest.mark.parametrize("k", [2, 3])
def test_k_replicas_equal_one_process_numpy(folder, spec12, tmp_path, k):
    """3 steps (the first epoch: 40 images in batches of 12) with K = 2 and 3: the weights equal
    one process's to 1e-5 relative, every rank holds the same weights bit for bit, and rank 0's
    epoch figures (training loss summed over the replicas, sharded validation over 30 images,
    uneven pieces at K = 3) equal one process's. K = 2 uses the default 1 MiB buckets (fc8-fc6
    in one), K = 3 one bucket per layer (NETSPEC_BUCKET_MB=0).

    In float64: the replicas sum their gradients in another order than one process, and from
    the second step their weights differ by that rounding; in float32 a max-pool or ReLU
    decision within rounding of its tie (tiny-alexnet's closest lie 4e-8 to 1.3e-6 of their
    layer's scale, tests/near_ties.py) could then go the other way and move a gradient by
    percents. Float64's rounding (~1e-16) is eight orders below those margins, and the
    weights are held to 1e-9."""
    want, want_metrics = single(spec12, folder, tmp_path / "one", "numpy", 3, dtype="float64")
    env = mpi_env(REPLICA_DTYPE="float64", **({"NETSPEC_BUCKET_MB": "0"} if k == 3 else {}))
    ranks, metrics = replicas_run(k, spec12, folder, tmp_path / "k", "numpy", 3, env=env)
    for r in range(k):
        assert ranks[r]["fc8.weight"].dtype == np.float64
        assert_close(ranks[r], want, rel=1e-9)
        assert all(np.array_equal(ranks[r][n], ranks[0][n]) for n in want), f"rank {r}"
    (m,), (w,) = metrics, want_metrics
    assert m["replicas"] == k and m["step"] == w["step"] == 3
    assert m["train_loss"] == pytest.approx(w["train_loss"], rel=1e-5)
    assert m["val_loss"] == pytest.approx(w["val_loss"], rel=1e-5)
    assert m["val_top1_error"] == pytest.approx(w["val_top1_error"])
    assert m["val_top5_error"] == pytest.approx(w["val_top5_error"])
    assert m["val_class_top1_error"] == pytest.approx(w["val_class_top1_error"])
    assert m["allreduce_bytes_per_step"] == 8 * sum(v.size for v in want.values())


@mpi
@pytest.mark.slow
def test_two_replicas_equal_one_process_opencl(folder, spec12, tmp_path):
    """The same on the OpenCL backend (PoCL): gradients come off the device per layer during
    the backward, are averaged with MPI and go back for the device's SGD update."""
    pytest.importorskip("pyopencl")
    want, _ = single(spec12, folder, tmp_path / "one", "opencl", 2)
    r = mpirun(2, REPLICA, spec12, folder, tmp_path / "k", "opencl", 2, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = [dict(np.load(tmp_path / "k" / f"rank{i}.npz")) for i in range(2)]
    for got in ranks:
        assert_close(got, want)
    assert all(np.array_equal(ranks[1][n], ranks[0][n]) for n in want)


@mpi
@pytest.mark.gpu
def test_two_replicas_equal_one_process_cuda(folder, spec12, tmp_path):
    """The same on the cuda backend, for the first epoch (3 steps): weights to 1e-5 relative and
    bit for bit across ranks, training and validation loss. Where no CUDA device answers it
    runs on the CUDA emulator (tests/conftest.py sets NETSPEC_CUDA_EMULATE=1), which has no
    NCCL: the gradients come off the (emulated) device per layer, are averaged with MPI on host
    memory, and rank 0's start-up line says so. On a real GPU the collective is NCCL and the
    line names it."""
    from netspec.runtime.cuda_backend import cuda_emulated, cuda_unavailable_reason
    why = cuda_unavailable_reason()
    if why is not None:
        pytest.skip(why)
    want, want_metrics = single(spec12, folder, tmp_path / "one", "cuda", 3)
    r = mpirun(2, REPLICA, spec12, folder, tmp_path / "k", "cuda", 3, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = [dict(np.load(tmp_path / "k" / f"rank{i}.npz")) for i in range(2)]
    for got in ranks:
        assert_close(got, want)
    assert all(np.array_equal(ranks[1][n], ranks[0][n]) for n in want)
    (m,) = [json.loads(l) for l in (tmp_path / "k" / "metrics.jsonl").read_text().splitlines()]
    (w,) = want_metrics
    assert m["replicas"] == 2 and m["step"] == w["step"] == 3
    assert m["train_loss"] == pytest.approx(w["train_loss"], rel=1e-5)
    assert m["val_loss"] == pytest.approx(w["val_loss"], rel=1e-5)
    (line,) = [l for l in r.stderr.splitlines() if "netspec: data parallel:" in l]
    if cuda_emulated():
        assert line.endswith("gradients averaged by MPI allreduce of host buffers "
                             "(CUDA emulated on the CPU: no NCCL)"), line
    else:
        assert line.endswith("gradients averaged by NCCL allreduce of device buffers"), line


@mpi
def test_a_batch_that_does_not_divide_is_one_clear_error(folder, spec12, tmp_path):
    r = mpirun(3, "-m", "netspec.cli", "train", "--spec", spec12, "--data", folder,
               "--backend", "numpy", "--out", tmp_path / "run", "--batch-size", "8",
               "--no-progress")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [l for l in r.stderr.splitlines() if "netspec: error" in l]
    assert lines == ["netspec: error: the global batch 8 can't be split evenly over 3 replicas: "
                     "run a number of replicas that divides 8 (1, 2, 4, 8), or give a batch that "
                     "3 divides (e.g. --batch-size 6)"], r.stderr
    assert not (tmp_path / "run" / "state.json").exists()


def rank_pid(marker: str, rank: int) -> int | None:
    """The pid of the replica with this rank whose command line holds `marker`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd and b"python" in cmd and \
                f"OMPI_COMM_WORLD_RANK={rank}\0".encode() in env:
            return int(entry)
    return None


def start_and_wait_for_checkpoint(k, spec, folder, out, timeout_s):
    cmd = [MPIRUN, "-n", str(k), "--oversubscribe", sys.executable, str(REPLICA), str(spec),
           str(folder), str(out), "numpy", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=mpi_env(NETSPEC_COLLECTIVE_TIMEOUT=str(timeout_s),
                                        REPLICA_DTYPE="float64"), cwd=ROOT)
    deadline = time.monotonic() + 240
    state = Path(out) / STATE
    # the first epoch's checkpoint (the run also writes one at step 0)
    while not state.exists() or json.loads(state.read_text())["step"] == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)
    pid = rank_pid(str(out), 1)
    assert pid is not None
    return proc, pid


@mpi
@pytest.mark.parametrize("how", ["kill", "hang"])
def test_a_failed_rank_ends_the_job_and_the_checkpoint_resumes_with_another_k(
        folder, spec12, tmp_path, how):
    """Rank 1 of 2 is killed (SIGKILL) or hangs (SIGSTOP) after the first epoch's checkpoint:
    the job ends within the collective timeout with a message (mpirun's for a dead process,
    netspec's naming the collective for a hung one), not a hang. The run then resumes from
    its checkpoint with K = 3 (kill) or one process (hang) for one more epoch, and ends with
    the weights of an unbroken one-process run of as many steps. In float64: over 6 steps
    float32 runs that differ only in the gradients' summation order drift apart by ~1e-3 (max
    pooling picks by rounding at this init; see test_training.py), in float64 by ~1e-15."""
    timeout_s = 15
    out = tmp_path / "run"
    spec = tmp_path / "long.net"
    spec.write_text(tiny_spec(batch="12", epochs="30"))
    proc, pid = start_and_wait_for_checkpoint(2, spec, folder, out, timeout_s)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
    try:
        _, stderr = proc.communicate(timeout=timeout_s + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the job did not end after a rank failed")
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    assert elapsed < timeout_s + 60
    if how == "hang":
        assert "netspec: rank 0 of 2:" in stderr and "did not complete within 15 s" in stderr, \
            stderr
        assert "netspec: rank 1 of 2" not in stderr     # the stopped rank blames no one
    else:
        assert "rank 1" in stderr.lower() or "signal 9" in stderr.lower(), stderr
    _, _, state = load_checkpoint(out)
    assert state["step"] % 3 == 0 and state["step"] >= 3 and state["replicas"] == 2

    # resume with another K for one more epoch, against one unbroken process
    steps = state["step"] + 3
    if how == "kill":
        r = mpirun(3, REPLICA, spec, folder, out, "numpy", steps, out,
                   env=mpi_env(REPLICA_DTYPE="float64"))
        assert r.returncode == 0, r.stdout + r.stderr
    else:
        Trainer(TrainOptions(resume=str(out), backend="numpy", max_steps=steps,
                             progress=False, dtype="float64"), echo=lambda *a, **k: None).run()
    got, _, state = load_checkpoint(out)
    assert state["step"] == steps
    want, _ = single(spec, folder, tmp_path / "one", "numpy", steps, dtype="float64")
    assert_close(got, want, rel=1e-12)
