"""The batch pipeline: contents, determinism, resumption, partial batches, and clean exits."""
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from netspec.data import open_dataset
from netspec.data.loader import Loader, batch_rng, epoch_order
from netspec.errors import DataError
from netspec.kernel.colour import colour_normals

from .imagefiles import coordinate_image, random_images, write_folder


def collect(loader):
    with loader:
        return [(x.copy(), y.copy()) for x, y in loader]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def child_pids() -> set[int]:
    """Live (non-zombie) children of this process, from /proc."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                found.add(int(entry))
    return found


@pytest.fixture
def coordinates(tmp_path):
    """16 images of 12×12 whose red = row and green = column; labels 0..3; blue = index."""
    images = {}
    for label in range(4):
        arrays = []
        for k in range(4):
            image = coordinate_image(12)
            image[..., 2] = 4 * label + k
            arrays.append(image)
        images[f"c{label}"] = arrays
    write_folder(tmp_path, {"train": images, "val": images})
    return open_dataset(tmp_path, base=12)


def test_training_views_are_random_windows_maybe_mirrored(coordinates):
    # With a zero mean and no colour shift a view is the raw crop: red = row, green = column.
    source = coordinates._split("train")
    loader = Loader(source, np.zeros((12, 12, 3), np.float32), None, mode="train",
                    batch_size=8, crop=8, seed=3)
    offsets, flips = [], 0
    for x, _y in collect(loader):
        for view in x:
            rows, cols = view[0].astype(int), view[1].astype(int)
            top, left = rows[0, 0], cols[0].min()
            assert np.array_equal(rows, np.repeat(np.arange(top, top + 8)[:, None], 8, axis=1))
            flipped = cols[0, 0] > cols[0, -1]
            expected = np.arange(left, left + 8)[::-1] if flipped else np.arange(left, left + 8)
            assert np.array_equal(cols, np.repeat(expected[None], 8, axis=0))
            offsets.append((top, left))
            flips += flipped
    tops, lefts = zip(*offsets)
    assert set(tops) <= set(range(5)) and set(lefts) <= set(range(5))
    assert len(set(offsets)) > 5 and 0 < flips < len(offsets)


def test_training_batches_follow_the_documented_random_streams(coordinates):
    # Order from (seed, epoch); crops then flips from (seed, epoch, batch).
    ds = coordinates
    loader = ds.loader("train", batch_size=5, crop=8, pca_sigma=0.0, seed=3, epoch=1)
    order = epoch_order(3, 1, 16)
    for b, (x, y) in enumerate(collect(loader)):
        assert x.shape == (5, 3, 8, 8) and x.dtype == np.float32 and y.dtype == np.int64
        assert np.array_equal(loader.batch_indices(b), order[5 * b:5 * b + 5])
        assert np.array_equal(y, ds.labels("train")[order[5 * b:5 * b + 5]])
        rng = batch_rng(3, 1, b)
        offsets, flip = rng.integers(0, 5, size=(5, 2)), rng.random(5) < 0.5
        for i in range(5):
            top, left = offsets[i]
            image = ds.image("train", int(order[5 * b + i])).astype(np.float64) - ds.mean
            view = image[top:top + 8, left:left + 8]
            if flip[i]:
                view = view[:, ::-1]
            np.testing.assert_allclose(x[i], view.transpose(2, 0, 1), atol=1e-4)


def test_pca_shift_is_one_colour_per_image(small_demo):
    ds = open_dataset(small_demo, base=24)
    plain = collect(ds.loader("train", batch_size=8, crop=20, pca_sigma=0.0, seed=1))
    shifted = collect(ds.loader("train", batch_size=8, crop=20, pca_sigma=0.5, seed=1))
    for (xa, _), (xb, _) in zip(plain, shifted):
        delta = (xb - xa).reshape(8, 3, -1)
        assert np.allclose(delta, delta[:, :, :1], atol=1e-3)  # the same shift on every pixel
        assert np.abs(delta[:, :, 0]).max() > 0.5  # and not nothing
    # the alphas: Philox normals keyed by (seed, epoch, position in the epoch's order), which
    # the device can draw too (kernel/colour.py); shifted by PCA.shift's own matrix product
    expected = ds.pca.shift(colour_normals(1, 0, 0, 8) * 0.5)
    np.testing.assert_allclose((shifted[0][0] - plain[0][0])[:, :, 0, 0], expected, atol=1e-3)


@pytest.mark.parametrize("workers,shard", [(0, None), (1, None), (0, (1, 2))])
def test_device_input_batches_are_the_float_batches_as_uint8(small_demo, workers, shard):
    """device_input=True hands out U8Batch: the uint8 crops (flipped), their offsets and the
    transform; finished on the host (to_float) they are the float batches bit for bit, crops,
    flips, mean and colour shifts included, for a replica's piece of a batch too."""
    ds = open_dataset(small_demo, base=24)
    kw = dict(batch_size=8, crop=20, pca_sigma=0.5, seed=4, epoch=1, workers=workers,
              shard=shard)
    floats = collect(ds.loader("train", **kw))
    with ds.loader("train", device_input=True, **kw) as loader:
        u8 = [(x, y.copy(), x.to_float()) for x, y in loader]
    assert len(u8) == len(floats) == 120 // 8
    for b, ((xf, yf), (batch, y, host)) in enumerate(zip(floats, u8)):
        assert batch.pixels.dtype == np.uint8 and batch.pixels.shape == (len(yf), 3, 20, 20)
        assert batch.first == 8 * b + (4 if shard else 0) and batch.epoch == 1
        np.testing.assert_array_equal(y, yf)
        np.testing.assert_array_equal(host, xf)
    assert np.abs(u8[0][0].shifts()).max() > 0.5      # the shift is there, not zero


def test_device_input_is_for_training_batches(small_demo):
    ds = open_dataset(small_demo, base=24)
    with pytest.raises(ValueError, match="training batches of 3 channels"):
        ds.loader("val", batch_size=8, crop=20, device_input=True)


def test_evaluation_is_the_centre_crop_in_order_and_keeps_the_last_batch(coordinates):
    ds = coordinates
    batches = collect(ds.loader("val", batch_size=6, crop=8))
    assert [len(y) for _, y in batches] == [6, 6, 4]
    x = np.concatenate([b[0] for b in batches])
    assert np.array_equal(np.concatenate([b[1] for b in batches]), ds.labels("val"))
    for i in range(16):
        expected = (ds.image("val", i).astype(np.float64) - ds.mean)[2:10, 2:10]
        np.testing.assert_allclose(x[i], expected.transpose(2, 0, 1), atol=1e-4)


def test_training_drops_the_last_partial_batch(coordinates):
    loader = coordinates.loader("train", batch_size=6, crop=8)
    assert len(loader) == 2 and [len(y) for _, y in collect(loader)] == [6, 6]
    keep = coordinates.loader("train", batch_size=6, crop=8, drop_last=False)
    assert [len(y) for _, y in collect(keep)] == [6, 6, 4]


def test_ten_crop_batches(coordinates):
    ds = coordinates
    batches = collect(ds.ten_crop_batches("val", batch_size=7, crop=8))
    assert [x.shape for x, _ in batches] == [(7, 10, 3, 8, 8), (7, 10, 3, 8, 8), (2, 10, 3, 8, 8)]
    x = batches[1][0][2]  # image 9
    image = ds.image("val", 9).astype(np.float64) - ds.mean
    np.testing.assert_allclose(x[1], image[0:8, 4:12].transpose(2, 0, 1), atol=1e-4)  # top-right
    np.testing.assert_allclose(x[5], image[0:8, 7::-1].transpose(2, 0, 1), atol=1e-4)  # TL flipped


def test_same_seed_same_batches_with_0_and_2_workers(small_demo):
    ds = open_dataset(small_demo, base=24)
    kwargs = dict(batch_size=16, crop=20, seed=7, epoch=2)
    inline = collect(ds.loader("train", workers=0, **kwargs))
    parallel = collect(ds.loader("train", workers=2, **kwargs))
    assert len(inline) == 120 // 16
    assert_same_batches(inline, parallel)
    other_seed = collect(ds.loader("train", workers=0, **{**kwargs, "seed": 8}))
    assert not np.array_equal(inline[0][0], other_seed[0][0])
    other_epoch = collect(ds.loader("train", workers=0, **{**kwargs, "epoch": 3}))
    assert not np.array_equal(inline[0][1], other_epoch[0][1])


def test_resume_mid_epoch_gives_the_continuation(small_demo):
    ds = open_dataset(small_demo, base=24)
    kwargs = dict(batch_size=16, crop=20, seed=5, epoch=1)
    whole = collect(ds.loader("train", **kwargs))
    with ds.loader("train", workers=2, **kwargs) as loader:
        for b, _ in enumerate(loader):
            if b == 2:
                state = loader.state()
                break
    assert state == {"seed": 5, "epoch": 1, "batch": 3}
    resumed = collect(ds.loader("train", workers=2, batch_size=16, crop=20, seed=state["seed"],
                                epoch=state["epoch"], start_batch=state["batch"]))
    assert_same_batches(resumed, whole[3:])


def test_fewer_images_than_one_training_batch(small_demo):
    ds = open_dataset(small_demo, base=24)
    with pytest.raises(DataError, match="120 images, fewer than one batch of 200"):
        ds.loader("train", batch_size=200, crop=20)
    assert [len(y) for _, y in collect(ds.loader("val", batch_size=200, crop=20))] == [30]


def test_start_batch_past_the_end(small_demo):
    ds = open_dataset(small_demo, base=24)
    assert collect(ds.loader("train", batch_size=16, crop=20, start_batch=7)) == []
    with pytest.raises(DataError, match="past the end of the epoch"):
        ds.loader("train", batch_size=16, crop=20, start_batch=8)


def test_to_device_is_called_one_batch_ahead(small_demo):
    ds = open_dataset(small_demo, base=24)
    expected = collect(ds.loader("val", batch_size=8, crop=20))
    calls, received = [], []

    def to_device(x, y):
        calls.append(len(received))  # how many batches the loop had when this one was moved
        return x.copy(), y.copy()

    for workers in (0, 2):
        calls.clear(), received.clear()
        for x, y in ds.loader("val", batch_size=8, crop=20, workers=workers, to_device=to_device):
            received.append((x, y))
        assert_same_batches(received, expected)
        assert calls == [0, 0] + list(range(1, len(expected) - 1))


def test_views_are_reused_unless_copied(small_demo):
    ds = open_dataset(small_demo, base=24)
    kept = [x for x, _ in ds.loader("val", batch_size=8, crop=20)]
    assert kept[0] is not kept[1] and np.shares_memory(kept[0], kept[1])
    copies = [x for x, _ in ds.loader("val", batch_size=8, crop=20, copy=True)]
    assert not np.shares_memory(copies[0], copies[1])


def test_a_loader_runs_once(small_demo):
    loader = open_dataset(small_demo, base=24).loader("val", batch_size=8, crop=20)
    collect(loader)
    with pytest.raises(RuntimeError, match="once"):
        iter(loader)


def test_no_workers_left_after_the_end_a_break_or_close(small_demo):
    ds = open_dataset(small_demo, base=24)
    before = child_pids()
    collect(ds.loader("train", batch_size=8, crop=20, workers=2))
    assert child_pids() == before and multiprocessing.active_children() == []
    loader = ds.loader("train", batch_size=8, crop=20, workers=2)
    for _ in loader:
        pids = loader.worker_pids
        assert len(pids) == 2 and set(pids) <= child_pids()
        break
    assert child_pids() == before
    loader = ds.loader("train", batch_size=8, crop=20, workers=2)
    iterator = iter(loader)
    next(iterator)
    loader.close()
    assert child_pids() == before and multiprocessing.active_children() == []


def test_no_workers_left_after_an_exception_in_the_loop(small_demo):
    ds = open_dataset(small_demo, base=24)
    before = child_pids()
    with pytest.raises(ZeroDivisionError):
        for _ in ds.loader("train", batch_size=8, crop=20, workers=2):
            1 / 0
    assert child_pids() == before and multiprocessing.active_children() == []
    with pytest.raises(ZeroDivisionError):
        with ds.loader("train", batch_size=8, crop=20, workers=2) as loader:
            next(iter(loader))
            1 / 0
    assert child_pids() == before and multiprocessing.active_children() == []


def test_a_dead_worker_is_an_error_not_a_hang(small_demo):
    ds = open_dataset(small_demo, base=24)
    loader = ds.loader("train", batch_size=4, crop=20, workers=2, prefetch=1)
    with pytest.raises(DataError, match="worker . died"):
        for b, _ in enumerate(loader):
            if b == 0:
                os.kill(loader.worker_pids[1], signal.SIGKILL)
    assert multiprocessing.active_children() == []


def test_ctrl_c_leaves_no_workers(small_demo, tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, time
        from netspec.data import open_dataset

        def _stat(pid):
            try:
                return open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                return ["Z", "0"]

        ds = open_dataset({str(small_demo)!r}, base=24)
        loader = ds.loader("train", batch_size=4, crop=20, workers=2)
        try:
            for b, _ in enumerate(loader):
                if b == 0:
                    print("pids", *loader.worker_pids, flush=True)
                time.sleep(0.2)
        except KeyboardInterrupt:
            import multiprocessing
            live = [p for p in os.listdir("/proc") if p.isdigit() and
                    _stat(p)[1] == str(os.getpid()) and _stat(p)[0] != "Z"]
            print("after", len(multiprocessing.active_children()), len(live), flush=True)
            sys.exit(3)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first = proc.stdout.readline().split()
    assert first[0] == "pids", first
    pids = [int(p) for p in first[1:]]
    assert all(os.path.exists(f"/proc/{pid}") for pid in pids)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "after 0 0" in rest, rest
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("name, value", [("batch_size", 0), ("seed", -1), ("workers", -2),
                                         ("epoch", 1.5)])
def test_bad_arguments(small_demo, name, value):
    ds = open_dataset(small_demo, base=24)
    with pytest.raises(DataError, match=name):
        ds.loader(**{"batch_size": 4, "crop": 20, name: value})


def test_random_images_survive_the_round_trip_through_shared_memory(tmp_path):
    rng = np.random.default_rng(11)
    images = random_images(rng, 12, 10)
    write_folder(tmp_path, {"train": {"a": images[:6], "b": images[6:]}})
    ds = open_dataset(tmp_path, base=10)
    batches = collect(ds.loader("train", batch_size=12, crop=10, train=False, workers=1))
    expected = np.stack(images).astype(np.float64) - ds.mean
    np.testing.assert_allclose(batches[0][0], expected.transpose(0, 3, 1, 2), atol=1e-4)


# -- shards for data-parallel replicas (netspec/train/data_parallel.py) -------------------------
@pytest.mark.parametrize("replicas", [2, 3])
@pytest.mark.parametrize("split,train", [("train", True), ("val", False)])
def test_shards_of_every_batch_put_together_are_the_whole_batch(small_demo, replicas, split,
                                                                  train):
    """Replica r of K gets images len·r//K .. len·(r+1)//K − 1 of every batch, cropped, flipped
    and colour-shifted exactly as the whole batch is (the plan is the whole batch's), so K
    replicas see what one process sees; also the last, partial evaluation batch of 30 = 4·7 + 2
    images, whose pieces are uneven (and empty for some replica at K = 3)."""
    ds = open_dataset(str(small_demo), 40)
    kw = dict(batch_size=7, crop=32, seed=3, epoch=1, train=train)
    whole = collect(ds.loader(split, **kw))
    pieces = [collect(ds.loader(split, shard=(r, replicas), **kw)) for r in range(replicas)]
    assert all(len(p) == len(whole) for p in pieces)
    for b, (x, y) in enumerate(whole):
        n = len(y)
        for r in range(replicas):
            xs, ys = pieces[r][b]
            a, z = n * r // replicas, n * (r + 1) // replicas
            assert np.array_equal(xs, x[a:z]) and np.array_equal(ys, y[a:z])


def test_shard_needs_a_rank_below_the_replica_count(small_demo):
    ds = open_dataset(str(small_demo), 40)
    with pytest.raises(ValueError, match="rank must lie in 0..1"):
        ds.loader("train", batch_size=4, crop=32, shard=(2, 2))
