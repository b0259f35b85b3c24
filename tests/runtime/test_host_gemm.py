"""runtime/host_gemm.py: a product split into blocks over threads is np.matmul's, bit for bit
(BLAS single-threaded, as the cpu backend runs it), for every operand layout the backend
passes; an error in a block reaches the caller."""
import numpy as np
import pytest

from netspec.runtime.host_gemm import GemmTeam, _blocks

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture(scope="module")
def one_blas_thread():
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        yield


CASES = [
    ("wide", (96, 300), (300, 2000), False, False),        # conv forward: W @ cols
    ("tall", (3000, 200), (200, 64), False, False),        # fc forward: w @ x.T
    ("a transposed", (700, 1200), (700, 64), True, False),  # fc backward: w.T @ g
    ("b transposed", (900, 2000), (96, 2000), False, True),  # conv dW: cols @ g.T
]


@pytest.mark.parametrize("name,sa,sb,ta,tb", CASES, ids=[c[0] for c in CASES])
def test_split_product_is_matmul_bit_for_bit(one_blas_thread, name, sa, sb, ta, tb):
    rng = np.random.default_rng(3)
    a = rng.standard_normal(sa, dtype=np.float32)
    b = rng.standard_normal(sb, dtype=np.float32)
    a, b = (a.T if ta else a), (b.T if tb else b)
    want = np.matmul(a, b)
    team = GemmTeam(3)
    out = np.full(want.shape, np.nan, np.float32)
    assert team.matmul(a, b, out) is out
    assert len(_blocks(a, b, out, 12)) > 2        # it was split
    assert np.array_equal(out, want)


def test_batched_product_splits_along_the_batch(one_blas_thread):
    rng = np.random.default_rng(4)
    u = rng.standard_normal((16, 64, 96), dtype=np.float32)
    v = rng.standard_normal((16, 96, 900), dtype=np.float32)
    out = np.empty((16, 64, 900), np.float32)
    blocks = _blocks(u, v, out, 8)
    assert [t[2].shape[0] for t in blocks] == [2] * 8
    GemmTeam(2).matmul(u, v.transpose(0, 1, 2), out)
    assert np.array_equal(out, np.matmul(u, v))


def test_nets_share_one_team_per_thread_count():
    assert GemmTeam.shared(3) is GemmTeam.shared(3) is not GemmTeam.shared(2)


def test_small_products_and_one_thread_are_not_split():
    a, b = np.ones((4, 5), np.float32), np.ones((5, 6), np.float32)
    out = np.empty((4, 6), np.float32)
    GemmTeam(4).matmul(a, b, out)
    assert (out == 5).all()
    assert _blocks(a, b, out, 16) == [(a, b, out)]


def test_an_error_in_a_block_reaches_the_caller(one_blas_thread):
    a = np.ones((2000, 100), np.float32)
    b = np.ones((100, 3000), np.float32)
    out = np.empty((2000, 3000), np.float64)     # matmul casts float32 into float64 ...
    out_ok = np.empty((2000, 3000), np.float32)
    bad = np.empty((2000, 3000), np.int32)       # ... but refuses to cast into int32
    team = GemmTeam(2)
    team.matmul(a, b, out)
    assert (out == 100).all()
    with pytest.raises(TypeError):
        team.matmul(a, b, bad)
    team.matmul(a, b, out_ok)                  # the team still works after an error
    assert (out_ok == 100).all()


def test_threads_stay_within_a_containers_quota_and_omp_num_threads(tmp_path, monkeypatch):
    """A container limited to 1.5 CPUs on a many-core host gets 2 threads, not one per core
    libgomp counts; OMP_NUM_THREADS (an MPI launch's one core per replica) lowers it too."""
    from netspec.runtime import host_build
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert host_build.cgroup_cpus(str(v2)) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert host_build.cgroup_cpus(str(v2)) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert host_build.cgroup_cpus(str(v1)) == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert host_build.cgroup_cpus(str(v1)) is None

    monkeypatch.setattr(host_build.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(host_build, "cgroup_cpus", lambda: 1.5)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert host_build.host_threads() == 2
    monkeypatch.setattr(host_build, "cgroup_cpus", lambda: None)
    assert host_build.host_threads() == 64
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert host_build.host_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert host_build.host_threads() == 64
