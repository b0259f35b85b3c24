"""The best checkpoint (checkpoint-best.safetensors): kept at the epoch whose validation error is
the lowest, never pruned by --keep, repaired after a kill between its two renames, named by
`RUN/checkpoint-best` in eval and predict, and quoted with the last epoch's in the summary.

The validation errors are scripted (the real evaluation runs, then its top-1/top-5 figures are
replaced by a given sequence), so which epoch is best is the test's own choice; the oracle for
the kept weights is an unbroken run stopped at that epoch's step."""
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_recovery import MINI, assert_same_run

from netspec.cli import main
from netspec.errors import RunError
from netspec.train import loop
from netspec.train.checkpoint import (
    BEST,
    WEIGHTS,
    checkpoint_step,
    kept_checkpoints,
    load_checkpoint,
    load_weights,
)
from netspec.train.evaluate import evaluate
from netspec.train.loop import Trainer, TrainOptions

from trainkit import make_folder

STEPS_PER_EPOCH = 5       # 40 images / batch 8


def scripted(monkeypatch, errors):
    """Replace the loop's validation top-1 errors by `errors`, one an epoch, in call order."""
    real, calls = evaluate, iter(errors)

    def fake(*a, **k):
        res = real(*a, **k)
        e = next(calls)
        return {**res, "top1_error": e, "top5_error": e / 2}
    monkeypatch.setattr(loop, "evaluate", fake)


@pytest.fixture
def setup(tmp_path):
    spec = tmp_path / "mini.net"
    spec.write_text(MINI.format(lr="0.01", schedule="none"))
    return spec, make_folder(tmp_path / "imgs")


def train(spec, data, out, echo=None, **kw):
    lines = []
    res = Trainer(TrainOptions(spec=str(spec), data=str(data), backend="numpy", out=str(out),
                               progress=False, **kw), echo=lines.append).run()
    return res, lines


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_best_epoch_is_kept_and_quoted_beside_the_last(tmp_path, setup, monkeypatch):
    spec, data = setup
    scripted(monkeypatch, [0.5, 0.3, 0.4])
    run = tmp_path / "run"
    res, lines = train(spec, data, run)
    best_step = 2 * STEPS_PER_EPOCH
    assert res["best"] == {"epoch": 2, "step": best_step, "val_top1_error": 0.3,
                           "val_top5_error": 0.15}
    assert checkpoint_step(run / BEST) == best_step
    assert load_checkpoint(run)[2]["step"] == 3 * STEPS_PER_EPOCH      # the last stays current
    # the oracle: an unbroken run of the same options stopped at the best epoch's step
    scripted(monkeypatch, [0.5, 0.3])
    train(spec, data, tmp_path / "at_best", max_steps=best_step)
    assert same_weights(load_weights(run / BEST), load_weights(tmp_path / "at_best"))
    assert not same_weights(load_weights(run / BEST), load_weights(run))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["best_epoch"], r["best_val_top1_error"]) for r in rows] == \
        [(1, 0.5), (2, 0.3), (2, 0.3)]
    assert lines[-1].startswith("done: 15 steps, 3 epochs; last val top-1 error 40.0%, "
                                "top-5 20.0%; best val top-1 error 30.0% at epoch 2 "
                                f"(top-5 15.0%, {run / BEST}); "), lines[-1]


def test_a_tie_keeps_the_earlier_epoch_and_keep_never_prunes_the_best(tmp_path, setup,
                                                                      monkeypatch):
    spec, data = setup
    scripted(monkeypatch, [0.3, 0.3, 0.6])
    run = tmp_path / "run"
    res, _ = train(spec, data, run, checkpoint_every=2, keep=2)
    assert res["best"]["epoch"] == 1 and checkpoint_step(run / BEST) == STEPS_PER_EPOCH
    assert [s for s, _ in kept_checkpoints(run)] == [14]        # keep 2: current + one
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".safetensors") == \
        sorted([BEST, WEIGHTS, "checkpoint-step000000014.safetensors"])


def test_no_validation_images_no_best(tmp_path, monkeypatch):
    spec = tmp_path / "mini.net"
    spec.write_text(MINI.format(lr="0.01", schedule="none"))
    data = make_folder(tmp_path / "imgs", val=0)
    res, lines = train(spec, data, tmp_path / "run", max_steps=6)
    assert res["best"] is None and not (tmp_path / "run" / BEST).exists()
    assert "best" not in lines[-1]


def test_resume_is_bit_exact_and_repairs_a_best_lost_to_a_kill(tmp_path, setup, monkeypatch):
    spec, data = setup
    scripted(monkeypatch, [0.5, 0.3, 0.4])
    train(spec, data, tmp_path / "straight")
    # the split run: killed after epoch 2's checkpoint was renamed into place but before it was
    # also named best (the best file then still holds epoch 1's)
    scripted(monkeypatch, [0.5, 0.3, 0.4])
    split = tmp_path / "split"
    train(spec, data, split, max_steps=2 * STEPS_PER_EPOCH)
    scripted(monkeypatch, [0.5])
    train(spec, data, tmp_path / "epoch1", max_steps=STEPS_PER_EPOCH)
    (split / BEST).unlink()     # a hard link of the current checkpoint: never written in place
    shutil.copy(tmp_path / "epoch1" / BEST, split / BEST)
    scripted(monkeypatch, [0.4])
    Trainer(TrainOptions(resume=str(split), max_steps=3 * STEPS_PER_EPOCH, progress=False),
            echo=lambda *a: None).run()
    assert_same_run(tmp_path / "straight", split)
    assert checkpoint_step(split / BEST) == 2 * STEPS_PER_EPOCH
    assert same_weights(load_weights(split / BEST), load_weights(tmp_path / "straight" / BEST))


def test_eval_and_predict_take_run_slash_checkpoint_best(tmp_path, setup, monkeypatch):
    spec, data = setup
    scripted(monkeypatch, [0.3, 0.5])
    run = tmp_path / "run"
    train(spec, data, run, max_steps=2 * STEPS_PER_EPOCH)
    scripted(monkeypatch, [0.3])
    train(spec, data, tmp_path / "epoch1", max_steps=STEPS_PER_EPOCH)
    monkeypatch.undo()
    r = CliRunner().invoke(main, ["eval", "--checkpoint", str(run / "checkpoint-best"),
                                  "--backend", "numpy", "--json"])
    assert r.exit_code == 0, r.output
    o = CliRunner().invoke(main, ["eval", "--checkpoint", str(tmp_path / "epoch1"),
                                  "--backend", "numpy", "--json"])
    assert o.exit_code == 0, o.output
    got, want = json.loads(r.output), json.loads(o.output)
    assert (got["top1_error"], got["loss"]) == (want["top1_error"], want["loss"])
    img = tmp_path / "x.png"
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(img)
    p = CliRunner().invoke(main, ["predict", "--checkpoint", str(run / "checkpoint-best"),
                                  str(img), "--json", "--backend", "numpy"])
    q = CliRunner().invoke(main, ["predict", "--checkpoint", str(tmp_path / "epoch1"),
                                  str(img), "--json", "--backend", "numpy"])
    assert p.exit_code == 0 and q.exit_code == 0, p.output + q.output
    assert json.loads(p.output) == json.loads(q.output)


def test_a_tampered_best_in_the_run_state_is_one_clear_error(tmp_path, setup, monkeypatch):
    spec, data = setup
    run = tmp_path / "run"
    train(spec, data, run, max_steps=STEPS_PER_EPOCH)
    params, momentum, state = load_checkpoint(run)
    from netspec.train.checkpoint import save_checkpoint
    save_checkpoint(run, params, momentum, {**state, "best": {"epoch": "two"}})
    with pytest.raises(RunError, match=r"field 'best\.(epoch|step)'"):
        Trainer(TrainOptions(resume=str(run), progress=False), echo=lambda *a: None)
