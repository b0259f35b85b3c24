"""Checkpoints: atomic writes survive a kill in the middle of writing."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from netspec.errors import RunError
from netspec.train.checkpoint import load_checkpoint, save_checkpoint

WRITER = textwrap.dedent("""
    import sys, numpy as np
    from netspec.train.checkpoint import save_checkpoint
    run = sys.argv[1]
    step = 1
    while True:   # 64 MB per checkpoint, every value = the step it belongs to
        w = np.full((4, 4_000_000), step, np.float32)
        save_checkpoint(run, {"w": w}, {"w": w + 0.5}, {"step": step, "epoch": 0})
        print(step, flush=True)
        step += 1
""")


@pytest.mark.parametrize("delay", [0.3, 0.7, 1.1])
def test_kill_during_write_leaves_a_whole_checkpoint(tmp_path, delay):
    save_checkpoint(tmp_path, {"w": np.zeros((4, 4_000_000), np.float32)},
                    {"w": np.full((4, 4_000_000), 0.5, np.float32)}, {"step": 0, "epoch": 0})
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    params, momentum, state = load_checkpoint(tmp_path)
    step = state["step"]
    # weights, momentum and state all belong to the same step
    assert np.all(params["w"] == step) and np.all(momentum["w"] == step + 0.5)
    leftovers = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert all(f.startswith(".") for f in leftovers)   # only hidden temp files may remain


def test_unreadable_checkpoint_is_a_clean_error(tmp_path):
    (tmp_path / "checkpoint.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RunError, match="can't be read"):
        load_checkpoint(tmp_path)
    with pytest.raises(RunError, match="no such run directory"):
        load_checkpoint(tmp_path / "nope")


def test_the_streamed_file_is_what_the_safetensors_library_writes_and_reads():
    from safetensors.numpy import load, save

    from netspec.train.checkpoint import safetensors_parts
    rng = np.random.default_rng(0)
    f32 = {"conv1.weight": rng.standard_normal((4, 3, 3, 3), dtype=np.float32),
           "conv1.bias": rng.standard_normal(4, dtype=np.float32),
           "momentum.conv1.weight": rng.standard_normal((4, 3, 3, 3), dtype=np.float32),
           "empty": np.zeros((0, 5), np.float32)}
    one = {"netspec.state": '{"step": 7}'}   # the library orders several keys at random
    ours = b"".join(bytes(p) for p in safetensors_parts(f32, one))
    assert ours == save(f32, metadata=one)             # byte for byte, for one dtype
    meta = {"step": "7", **one}
    mixed = {**f32, "x64": rng.standard_normal((2, 2)), "i": np.arange(3)}
    back = load(b"".join(bytes(p) for p in safetensors_parts(mixed, meta)))
    assert back.keys() == mixed.keys()
    with safe_open_bytes(b"".join(bytes(p) for p in safetensors_parts(mixed, meta))) as f:
        assert f.metadata() == meta
    for k, v in mixed.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k


class safe_open_bytes:
    """safetensors.safe_open on bytes, through a temporary file."""

    def __init__(self, data):
        import tempfile
        self.file = tempfile.NamedTemporaryFile(suffix=".safetensors")
        self.file.write(data)
        self.file.flush()

    def __enter__(self):
        from safetensors import safe_open
        self.handle = safe_open(self.file.name, framework="numpy")
        return self.handle.__enter__()

    def __exit__(self, *exc):
        self.handle.__exit__(*exc)
        self.file.close()


def test_checkpoint_files_get_the_umask_mode_as_other_files_do(tmp_path):
    """The atomic write's temporary file (mkstemp: 0600) is given the mode open() would
    give a new file under the umask, as metrics.jsonl has, before it is renamed in place."""
    save_checkpoint(tmp_path, {"w": np.ones(3, np.float32)}, {"w": np.zeros(3, np.float32)},
                    {"step": 1, "epoch": 0})
    (tmp_path / "plain").write_text("x")
    plain = os.stat(tmp_path / "plain").st_mode & 0o777
    written = [p for p in tmp_path.iterdir() if p.name != "plain"]
    assert written and all(os.stat(p).st_mode & 0o777 == plain for p in written), \
        [(p.name, oct(os.stat(p).st_mode & 0o777)) for p in written]
