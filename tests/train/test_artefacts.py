"""Tampered run artefacts (issue #28, red-team kind 1): every field of the run state (state.json
and the copy in the checkpoint's metadata), the launch record and a metrics.jsonl row, changed
one at a time to the wrong type, nested one level deeper or removed, gives one RunError naming
the file and the field from the reader that uses it (--resume, eval/export, predict), and the
CLI turns it into exit status 2 without a traceback. Also: predict refuses a class list longer
than the network's outputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from mutations import mutations, name
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from netspec.cli import main
from netspec.errors import RunError
from netspec.train.checkpoint import STATE_KEY, WEIGHTS
from netspec.train.loop import Trainer, TrainOptions
from netspec.train.run_config import resolve_run
from netspec.train.run_schema import LAUNCH, METRICS_ROW, RESUME_STATE
from netspec.train.rundir import LAUNCH as LAUNCH_FILE
from netspec.train.rundir import open_run, trim_metrics
from netspec.train.saved_run import run_state

from trainkit import make_folder, mini_spec

MINI = mini_spec(schedule="plateau", augment="crop 16 from 20 flip pca 0.1")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run, stopped mid-epoch 2 (so its state has meters, a schedule with a best
    error, and one metrics row)."""
    root = tmp_path_factory.mktemp("artefacts")
    spec = root / "mini.net"
    spec.write_text(MINI)
    data = make_folder(root / "imgs")
    out = root / "run"
    Trainer(TrainOptions(spec=str(spec), data=str(data), backend="numpy", out=str(out),
                         progress=False, max_steps=7), echo=lambda *a, **k: None).run()
    return out


def _copy(run, tmp_path) -> Path:
    dst = tmp_path / "r"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(run, dst)
    return dst


def _state(run) -> dict:
    return json.loads((run / "state.json").read_text())


def _rewrite_metadata_state(run: Path, state: dict) -> None:
    path = run / WEIGHTS
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
    meta[STATE_KEY] = json.dumps(state)
    save_file(load_file(str(path)), str(path), metadata=meta)


def _assert_names(err: RunError, file: str, path) -> None:
    msg = str(err)
    assert file in msg and f"'{name(path)}'" in msg, msg


def test_the_real_state_and_rows_fit_their_schemas(run):
    """The oracle's own check: what netspec train writes is accepted."""
    RESUME_STATE.check(_state(run), ())
    for line in (run / "metrics.jsonl").read_text().splitlines():
        METRICS_ROW.check(json.loads(line), ())
    resolve_run(TrainOptions(resume=str(run)), tidy=False)


def test_every_field_of_state_json(run, tmp_path):
    """eval, export, ensembles and predict read state.json through saved_run.run_state."""
    r = _copy(run, tmp_path)
    cases = list(mutations(_state(run), RESUME_STATE))
    assert len(cases) > 80, len(cases)
    assert {"meters.loss[1]", "schedule.best", "data_mean[0][0][0]",
            "data_pca.eigenvectors[0][0]"} <= {name(p) for _, p, _ in cases}
    kinds = set()
    for kind, path, doc in cases:
        (r / "state.json").write_text(json.dumps(doc))
        if kind == "missing":       # readers other than --resume need none of the fields
            continue
        with pytest.raises(RunError) as e:
            run_state(r)
        _assert_names(e.value, "state.json", path)
        kinds.add(kind)
    assert kinds == {"wrong type", "nested"}


def test_every_field_of_the_checkpoint_state_on_resume(run, tmp_path):
    """--resume reads the state in the checkpoint's metadata: wrong types, nesting, and the
    fields it needs missing."""
    r = _copy(run, tmp_path)
    seen = set()
    for kind, path, doc in mutations(_state(run), RESUME_STATE):
        _rewrite_metadata_state(r, doc)
        with pytest.raises(RunError) as e:
            resolve_run(TrainOptions(resume=str(r)), tidy=False)
        _assert_names(e.value, WEIGHTS, path)
        seen.add(kind)
    assert seen == {"wrong type", "nested", "missing"}


def test_every_field_of_the_launch_record(run, tmp_path):
    """A run killed before its first checkpoint is resumed from launch.json."""
    r = tmp_path / "early"
    r.mkdir()
    record = resolve_run(TrainOptions(resume=str(run)), tidy=False).launch_record()
    (r / LAUNCH_FILE).write_text(json.dumps(record))
    assert open_run(r)[2] == record
    cases = list(mutations(record, LAUNCH))
    assert {k for k, *_ in cases} == {"wrong type", "nested", "missing"}
    for _kind, path, doc in cases:
        (r / LAUNCH_FILE).write_text(json.dumps(doc))
        with pytest.raises(RunError) as e:
            open_run(r)
        _assert_names(e.value, LAUNCH_FILE, path)


def test_every_field_of_a_metrics_row(run, tmp_path):
    r = _copy(run, tmp_path)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    cases = list(mutations(row, METRICS_ROW))
    assert len(cases) > 20
    for _kind, path, doc in cases:
        (r / "metrics.jsonl").write_text(json.dumps(doc) + "\n")
        with pytest.raises(RunError) as e:
            trim_metrics(r, 5)
        _assert_names(e.value, "metrics.jsonl:1", path)
    for line in ("[1, 2]", "3", "null", '"epoch"'):       # JSON, but not an object
        (r / "metrics.jsonl").write_text(json.dumps(row) + "\n" + line + "\n")
        with pytest.raises(RunError, match=r"metrics.jsonl:2: field '\(the whole document\)'"):
            trim_metrics(r, 5)


def _cli(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 2, (res.output, res.exception)
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.output


def test_cli_resume_eval_predict_refuse_a_tampered_run_in_one_line(run, tmp_path):
    r = _copy(run, tmp_path)
    state = _state(run)
    _rewrite_metadata_state(r, {**state, "step": "12"})
    out = _cli("train", "--resume", r, "--backend", "numpy", "--no-progress")
    assert "checkpoint.safetensors" in out and "field 'step'" in out, out

    r = _copy(run, tmp_path)
    (r / "metrics.jsonl").write_text("[1, 2]\n")
    out = _cli("train", "--resume", r, "--backend", "numpy", "--no-progress")
    assert "metrics.jsonl:1" in out, out

    r = _copy(run, tmp_path)
    (r / "state.json").write_text(json.dumps({**state, "classes": {"a": 1}}))
    assert "field 'classes'" in _cli("eval", "--checkpoint", r, "--backend", "numpy")
    image = next((run.parent / "imgs" / "val" / "class00").iterdir())
    assert "field 'classes'" in _cli("predict", "--checkpoint", r, image)

    (r / "state.json").write_text(json.dumps({**state, "data_mean": [[[1, 2, 3]], [[1]]]}))
    assert "field 'data_mean[1][0]'" in _cli("predict", "--checkpoint", r, image)


def test_predict_refuses_more_classes_than_outputs(run, tmp_path):
    r = _copy(run, tmp_path)
    state = _state(run)
    image = next((run.parent / "imgs" / "val" / "class00").iterdir())
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(r), str(image)])
    assert res.exit_code == 0, res.output
    (r / "state.json").write_text(json.dumps({**state, "classes": state["classes"] + ["x"]}))
    out = _cli("predict", "--checkpoint", r, image)
    assert "field 'classes'" in out and "11 classes" in out and "10 outputs" in out, out
