"""What `netspec train` and `netspec eval` print and write: the dropped partial batch, top-5
only with more than 5 classes (with 5 or fewer every label is in the top 5), counts in the
singular, `--resume` of a finished run saying so, and the figures at each evaluation
(netspec/train/figures.py). Short numpy runs on a made folder."""
from __future__ import annotations

from click.testing import CliRunner

from netspec.cli import main
from netspec.train.ensemble import format_ensemble
from netspec.train.loop import Trainer, TrainOptions

from trainkit import make_folder, tiny_spec


def four_class_spec() -> str:
    spec = tiny_spec(batch="5", epochs="1", augment=None)
    return (spec.replace("classes 10", "classes 4")
            .replace("fc8    outputs 10", "fc8    outputs 4"))


def run(opts, lines):
    return Trainer(TrainOptions(progress=False, **opts), echo=lines.append).run()


def test_four_classes_partial_batch_finished_resume(tmp_path):
    folder = make_folder(tmp_path / "imgs", classes=4, train=3, val=1)
    spec = tmp_path / "four.net"
    spec.write_text(four_class_spec())
    lines: list[str] = []
    run({"spec": str(spec), "data": str(folder), "backend": "numpy",
         "out": str(tmp_path / "run")}, lines)
    text = "\n".join(lines)
    # 12 images, batch 5: 2 steps, 2 images left out (by hand)
    assert ("each epoch trains 2 batches of 5: the last 2 of 12 training images "
            "(a different few each epoch, the order being shuffled) are left out") in text
    epoch = [line for line in lines if line.startswith("epoch 1/1")]
    assert len(epoch) == 1 and "top-1" in epoch[0] and "top-5" not in epoch[0]
    assert lines[-1].startswith("done: 2 steps, 1 epoch; last val top-1 error ")
    assert "top-5" not in lines[-1]

    again: list[str] = []
    result = run({"resume": str(tmp_path / "run")}, again)
    assert again[-1] == f"{tmp_path / 'run'} is finished: 1 epoch, 2 steps; nothing to train"
    assert result["step"] == 2

    r = CliRunner().invoke(main, ["eval", "--spec", str(spec), "--checkpoint",
                                  str(tmp_path / "run"), "--data", str(folder),
                                  "--backend", "numpy"])
    assert r.exit_code == 0, r.output
    assert "top-1 error" in r.output and "top-5" not in r.output


def test_ten_classes_show_top5_and_no_drop_line(tmp_path):
    folder = make_folder(tmp_path / "imgs", classes=10, train=1, val=1)
    spec = tmp_path / "ten.net"
    spec.write_text(tiny_spec(batch="5", epochs="1", augment=None))
    lines: list[str] = []
    run({"spec": str(spec), "data": str(folder), "backend": "numpy",
         "out": str(tmp_path / "run")}, lines)
    assert not any("left out" in line for line in lines)     # 10 images, batch 5: none
    epoch = next(line for line in lines if line.startswith("epoch 1/1"))
    assert "val error top-1" in epoch and epoch.count("top-5") == 2
    assert lines[-1].startswith("done: 2 steps, 1 epoch;") and "top-5" in lines[-1]

    # the figures written at the evaluation are viz --run's, from the checkpoint saved then
    run_dir = tmp_path / "run"
    for name, flags in (("curves.png", ["--curves"]), ("filters.png", ["--filters", "conv1"])):
        again = tmp_path / f"viz-{name}"
        r = CliRunner().invoke(main, ["viz", "--run", str(run_dir), *flags, "-o", str(again)])
        assert r.exit_code == 0, r.output
        assert (run_dir / name).read_bytes() == again.read_bytes(), name
    assert not [p for p in run_dir.iterdir() if ".tmp" in p.name]

    lines = []
    run({"spec": str(spec), "data": str(folder), "backend": "numpy", "figures": False,
         "out": str(tmp_path / "plain")}, lines)
    assert not list((tmp_path / "plain").glob("*.png"))


def test_ensemble_table_top5_by_classes():
    member = {"checkpoint": "a", "top1_error": 0.5, "top5_error": 0.0}
    result = {"members": [member], "ensemble": {"top1_error": 0.5, "top5_error": 0.0},
              "images": 3, "data": "d", "views": 1}
    assert "top-5" not in format_ensemble({**result, "classes": 3})
    assert format_ensemble({**result, "classes": 10}).count("top-5 error") == 2
