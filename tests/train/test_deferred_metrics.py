"""The training loop on a device net (PlanNet) reads each step's loss and logits a print
interval at a time (Trainer._read_outputs), not after every step: the meters, metrics.jsonl,
the weights and a resume must be what reading after every step gives, and a step must not
wait for the device. On emulated CUDA (the CPU emulator counts every CuPy call)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from netspec.runtime.cuda_backend import cuda_unavailable_reason
from netspec.train.checkpoint import load_checkpoint
from netspec.train.loop import Trainer, TrainOptions

from trainkit import tiny_spec

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cuda_unavailable_reason() is not None,
                                                  reason=str(cuda_unavailable_reason()))]


def run(spec, folder, out, deferred: bool, **kw):
    """Train; each _train_step's counted host calls in t.counted (emulated CUDA only)."""
    t = Trainer(TrainOptions(spec=str(spec), data=str(folder), backend="cuda", out=str(out),
                             progress=False, **kw), echo=lambda *a, **k: None)
    assert t.deferred                       # a device net on one process defers by default
    t.deferred = deferred
    t.counted = []
    step = t._train_step

    def counted(*a):
        before = t.net.host_counters()
        out = step(*a)
        if before is not None:
            t.counted.append(t.net.host_counters().since(before))
        return out
    t._train_step = counted
    t.run()
    return t


def test_reading_every_print_interval_gives_every_steps_numbers(folder, tmp_path):
    # 40 images / batch 8 = 5 steps an epoch: 7 steps end mid-epoch, the reads straddle it
    spec = tmp_path / "tiny.net"
    spec.write_text(tiny_spec())
    each = run(spec, folder, tmp_path / "each", deferred=False, max_steps=7)
    t = run(spec, folder, tmp_path / "deferred", deferred=True, max_steps=7)
    assert t._pending == []
    if t.counted:                           # emulated: a deferred step never waits
        assert all(c.syncs == 0 and c.d2h_bytes == 0 for c in t.counted[1:])
        assert all(c.syncs > 0 and c.d2h_bytes > 0 for c in each.counted[1:])
    a_p, a_m, a_s = load_checkpoint(tmp_path / "each")
    b_p, b_m, b_s = load_checkpoint(tmp_path / "deferred")
    assert a_s["step"] == b_s["step"] == 7 and a_s["meters"] == b_s["meters"]
    assert all(np.array_equal(a_p[k], b_p[k]) and np.array_equal(a_m[k], b_m[k]) for k in a_p)
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text()
             .splitlines()] for d in ("each", "deferred")]
    keys = ("train_loss", "train_top1_error", "train_top5_error", "val_loss")
    assert [[r[k] for k in keys] for r in rows[0]] == [[r[k] for k in keys] for r in rows[1]]


def test_batches_cross_as_uint8_and_train_as_the_float_batches(folder, tmp_path, monkeypatch):
    """On cuda the trainer asks the loader for uint8 crops (U8Batch), finished on the device:
    a step uploads the crops, 5 + N header words and the dropout key to each device and the
    labels once (per device within the issue's bound: the batch as uint8 + labels + 1 KiB,
    emulated), as one graph launch, and the weights and momenta after 4 steps are
    those of the host's float batches, bit for bit."""
    spec = tmp_path / "tiny.net"
    spec.write_text(tiny_spec())
    t = run(spec, folder, tmp_path / "u8", deferred=True, max_steps=4)
    assert t._device_input()
    monkeypatch.setattr(Trainer, "_device_input", lambda self: False)
    ref = run(spec, folder, tmp_path / "f32", deferred=True, max_steps=4)
    a_p, a_m, _ = load_checkpoint(tmp_path / "u8")
    b_p, b_m, _ = load_checkpoint(tmp_path / "f32")
    assert all(np.array_equal(a_p[k], b_p[k]) and np.array_equal(a_m[k], b_m[k]) for k in a_p)
    if t.counted:                           # emulated: counted
        n, shape = 8, t.net.graph.input_shape
        u8 = n * int(np.prod(shape))
        devices = len(set(t.net.device_map))       # the batch crosses once to each
        plan = t.net.compiled(n).plan               # and a 16-byte dropout key, with dropout
        key = 16 * any(s.what == "noise" for s in plan.steps if s.kind == "upload")
        for c, f in zip(t.counted[2:], ref.counted[2:]):    # after a capture per uint8 slot
            assert c.h2d_bytes == devices * (u8 + 4 * (5 + n) + key) + 4 * n
            assert c.h2d_bytes / devices <= u8 + 4 * n + 1024
            assert f.h2d_bytes == devices * (4 * u8 + key) + 4 * n
            assert c.syncs == 0 and c.graph_launches == 1 and c.launches == 0
