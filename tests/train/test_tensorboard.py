"""TensorBoard event files (netspec/train/tensorboard.py), read back with TensorBoard's own
EventAccumulator: the scalars equal metrics.jsonl's rows, the filter image is conv1's kernels
from the checkpoint, and without tensorboardX nothing is written."""
from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from netspec.train.checkpoint import load_checkpoint
from netspec.train.loop import Trainer, TrainOptions

from trainkit import tiny_spec

pytest.importorskip("tensorboardX", reason="pip install 'netspec[tensorboard]' (test extra)")
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is in netspec's test extra")


def _train(tmp_path, folder, name, epochs=2):
    out = tmp_path / name
    opts = TrainOptions(spec=tiny_spec(batch="8", epochs=str(epochs)), data=str(folder),
                        backend="numpy", out=str(out), progress=False)
    Trainer(opts, echo=lambda *a: None).run()
    return out


def test_events_hold_the_metrics_and_filters(tmp_path, folder):
    run = _train(tmp_path, folder, "tb")
    assert list(run.glob("events.out.tfevents.*"))
    acc = event_accumulator.EventAccumulator(str(run), size_guidance={"images": 0,
                                                                      "scalars": 0})
    acc.Reload()
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    tags = acc.Tags()
    for tag, key in [("loss/train", "train_loss"), ("loss/val", "val_loss"),
                     ("top1_error/train", "train_top1_error"),
                     ("top1_error/val", "val_top1_error"),
                     ("top5_error/train", "train_top5_error"),
                     ("top5_error/val", "val_top5_error"), ("lr", "lr"),
                     ("images_per_sec", "images_per_sec")]:
        assert tag in tags["scalars"], tag
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in rows]
        np.testing.assert_allclose([e.value for e in events], [r[key] for r in rows],
                                   rtol=1e-6)
    images = acc.Images("conv1/filters")
    assert [e.step for e in images] == [r["step"] for r in rows]
    img = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("RGB"))
    # conv1 of the final checkpoint: kernel 0's tile (top-left, 5x5 kernel enlarged 4x)
    params, _, _ = load_checkpoint(run)
    k0 = params["conv1.weight"][0].astype(np.float64).transpose(1, 2, 0)       # (5, 5, 3)
    want = np.round((k0 - k0.min()) / (k0.max() - k0.min()) * 255).astype(np.uint8)
    tile = img[2:22, 2:22]
    np.testing.assert_array_equal(tile[::4, ::4], want)
    assert (tile[1::4, 1::4] == want).all()                                   # 4x4 blocks
    # kernel 16, GPU 1's first, opens the second band below GPU 0's 16 kernels
    k16 = params["conv1.weight"][16].astype(np.float64).transpose(1, 2, 0)
    want16 = np.round((k16 - k16.min()) / (k16.max() - k16.min()) * 255).astype(np.uint8)
    band0_rows = -(-16 // 6)                                # 6 columns: ceil(sqrt(32))
    top = 2 + band0_rows * 22 + 2
    np.testing.assert_array_equal(img[top:top + 20:4, 2:22:4], want16)


def test_without_the_extra_nothing_changes(tmp_path, folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    run = _train(tmp_path, folder, "plain", epochs=1)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-best.safetensors",
                                                     "checkpoint.safetensors", "curves.png",
                                                     "filters.png", "metrics.jsonl",
                                                     "state.json"]
