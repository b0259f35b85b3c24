"""netspec/train/saved_run.py: the run state of a run directory or one of its .safetensors
files, as eval, predict, export and ensembles read it."""
import json
import shutil

from click.testing import CliRunner

from netspec.cli import main

from runkit import TINY, write_run
from trainkit import tiny_spec


def _eval(*args):
    r = CliRunner().invoke(main, ["eval", "--json", "--backend", "numpy", *args])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    res.pop("checkpoint")
    return res


def test_eval_of_a_checkpoint_file_reads_the_state_of_its_run(folder, tmp_path):
    """`eval --checkpoint RUN/checkpoint.safetensors` (or a kept checkpoint-step<N> file)
    needs no --spec or --data: it scores exactly what the explicit flags score."""
    spec = tmp_path / "tiny.net"
    spec.write_text(tiny_spec())
    r = CliRunner().invoke(main, ["train", "--spec", str(spec), "--data", str(folder),
                                  "--backend", "numpy", "--out", str(tmp_path / "run"),
                                  "--max-steps", "2", "--checkpoint-every", "1", "--keep", "2",
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    kept = tmp_path / "run" / "checkpoint-step000000001.safetensors"
    newest = tmp_path / "run" / "checkpoint.safetensors"
    assert kept.exists()
    results = []
    for ckpt in (newest, kept):
        got = _eval("--checkpoint", str(ckpt))
        assert got == _eval("--checkpoint", str(ckpt), "--spec", str(spec), "--data",
                            str(folder))
        assert got["images"] == 20
        results.append(got)
    assert results[0]["loss"] != results[1]["loss"]     # each file's own weights


def test_a_checkpoint_file_without_metadata_takes_the_state_json_beside_it(folder, tmp_path):
    """A run in the documented format with no state in the .safetensors metadata: its
    checkpoint.safetensors and kept checkpoint-step<N> files take the state.json beside them;
    another .safetensors file (there or elsewhere) has no run state, and eval asks for --spec."""
    run, _ = write_run(tmp_path / "run", TINY, data=str(folder))
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    kept = run / "checkpoint-step000000003.safetensors"
    shutil.copy(run / "checkpoint.safetensors", kept)
    explicit = _eval("--checkpoint", str(run / "checkpoint.safetensors"), "--spec", str(spec),
                     "--data", str(folder))
    for ckpt in (run / "checkpoint.safetensors", kept, run):
        assert _eval("--checkpoint", str(ckpt)) == explicit
    for other in (run / "weights.safetensors", tmp_path / "elsewhere" / "checkpoint.safetensors"):
        other.parent.mkdir(exist_ok=True)
        shutil.copy(run / "checkpoint.safetensors", other)
        r = CliRunner().invoke(main, ["eval", "--checkpoint", str(other), "--backend", "numpy"])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert "give --spec (the checkpoint has no run state naming one)" in r.output
