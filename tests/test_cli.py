"""The CLI through click's runner and as a subprocess."""
import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from netspec import __version__
from netspec.cli import main


def test_version():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output


def test_compile_table(root):
    r = CliRunner().invoke(main, ["compile", str(root / "specs/alexnet.net")])
    assert r.exit_code == 0, r.output
    assert "60,965,224" in r.output
    line = next(l for l in r.output.splitlines() if l.startswith("conv2"))
    assert "256x27x27" in line and "128/128" in line and "same-gpu" in line and "307,456" in line
    # the neurons total is the weighted layers' outputs (the paper's "650,000"), said so
    total = next(l for l in r.output.splitlines() if l.startswith("total"))
    weighted = 290_400 + 186_624 + 64_896 + 64_896 + 43_264 + 4_096 + 4_096 + 1_000
    assert f"{weighted:,}" in total.split()
    assert "weighted layers' outputs" in r.output


def test_compile_json(root):
    r = CliRunner().invoke(main, ["compile", "--json", str(root / "specs/alexnet.net")])
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    assert info["network"] == "alexnet" and info["input_shape"] == [3, 224, 224]
    assert info["classes"] == 1000 and info["gpus"] == 2 and info["total_params"] == 60_965_224
    layers = {l["name"]: l for l in info["layers"]}
    assert [l["name"] for l in info["layers"]][:3] == ["conv1", "norm1", "pool1"]
    assert layers["conv1"]["neurons"] == 290_400 and layers["conv1"]["gpu_split"] == [48, 48]
    assert layers["conv3"]["connect"] == "all" and layers["norm1"]["connect"] is None
    assert layers["fc6"]["params"] == 37_752_832 and layers["fc6"]["inputs"] == ["pool5"]
    assert layers["prob"]["type"] == "softmax"
    for l in info["layers"]:
        assert set(l) >= {"name", "type", "inputs", "output_shape", "params", "neurons",
                          "macs", "gpu_split", "connect"}


def test_spec_error_exit_2(tmp_path):
    p = tmp_path / "bad.net"
    p.write_text("network x\ninput 3x8x8\nclasses 2\nconv c1 filters 4 size 9\nsoftmax p\n")
    r = CliRunner().invoke(main, ["compile", str(p)])
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert lines[0] == f"{p}:4:24: error: c1: kernel size 9 is larger than the padded input " \
                       f"8x8 (input 8x8, pad 0)"
    assert lines[1].endswith("conv c1 filters 4 size 9")
    assert "Traceback" not in r.output


def test_missing_file_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "compile", str(tmp_path / "x.net")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith(f"{tmp_path / 'x.net'}: error: no such file")
    assert "Traceback" not in r.stderr


def test_bad_flag_is_usage_error(root):
    r = CliRunner().invoke(main, ["compile", "--frobnicate", str(root / "specs/alexnet.net")])
    assert r.exit_code == 2 and "No such option" in r.output


def _unreadable(tmp_path):
    import os
    p = tmp_path / "locked.net"
    p.write_text("network x\n")
    p.chmod(0)
    if os.access(p, os.R_OK):       # root reads anything: make it unreadable another way
        p.unlink()
        p.mkdir()
        (p / "x").mkdir()
        return None
    return p


@pytest.mark.parametrize("command", [["compile"], ["train", "--data", "demo", "--spec"],
                                     ["eval", "--checkpoint", "{tmp}", "--spec"],
                                     ["viz", "-o", "out.svg"], ["bench", "--spec"],
                                     ["export", "-o", "{tmp}/x.onnx"]])
def test_every_command_refuses_bad_spec_files_in_netspec_format(tmp_path, command):
    """A missing, directory, unreadable, binary or non-UTF-8 spec file: `FILE: error:` (with
    the line and column where the fault is in the text), exit 2, for each command that reads
    a spec, not click's usage error."""
    (tmp_path / "nul.net").write_bytes(b"network x\ninput 3x8\x00x8\n")
    (tmp_path / "latin1.net").write_bytes(b"network caf\xe9\n")
    # a binary file: its first NUL, not the first byte that isn't UTF-8 (later here)
    (tmp_path / "elf.net").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\xd0\x00")
    (tmp_path / "huge.net").write_bytes(b"network x\n#" + b"#" * (16 << 20))   # > 16 MiB
    cases = {tmp_path / "missing.net": ": error: no such file",
             tmp_path / "elf.net": ":1:8: error: this is not a text file",
             tmp_path / "huge.net": ": error: the file is over 16 MiB",
             tmp_path: ": error: is a directory, not a spec file",
             tmp_path / "nul.net": ":2:10: error: this is not a text file",
             tmp_path / "latin1.net": ":1:12: error: this is not a UTF-8 text file"}
    locked = _unreadable(tmp_path)
    if locked is not None:
        cases[locked] = ": error: cannot read it: permission denied"
    command = [c.replace("{tmp}", str(tmp_path)) for c in command]
    for path, expected in cases.items():
        r = CliRunner().invoke(main, command + [str(path)])
        assert r.exit_code == 2, (path, r.output)
        errors = [l for l in r.stderr.splitlines() if "error:" in l]
        assert len(errors) == 1 and errors[0].startswith(f"{path}{expected}"), r.stderr
        assert "Usage" not in r.output and "Traceback" not in r.output


# -- faults a new-user review found: each kind a clean error, exit 2, never a traceback -------
def _image_folder(root, classes=10, per_split=2):
    """A tiny ImageFolder (train/ and val/, one PNG per image) for tiny-alexnet."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True)
            for i in range(per_split):
                Image.fromarray(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)).save(
                    d / f"{i}.png")
    return root


def _clean_error(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    for w in words:
        assert w in r.output, r.output


@pytest.mark.parametrize("backend,words", [
    ("opencl", "netspec: error: backend 'opencl': no OpenCL device found (install pocl"),
    ("cuda", "netspec: error: backend 'cuda': no CUDA device answers")])
def test_a_backend_without_a_device_is_a_clean_error(root, tmp_path, monkeypatch, backend,
                                                     words):
    """train, eval, bench and predict with --backend opencl|cuda where no such device exists
    (forced here, whatever the machine has): `netspec: error: backend ...`, exit 2."""
    import netspec.runtime.cuda_backend as cuda_backend
    import netspec.runtime.opencl_backend as opencl_backend
    data = _image_folder(tmp_path / "data")
    spec = str(root / "examples" / "tiny-alexnet.net")
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--spec", spec, "--data", str(data), "--backend",
                                  "numpy", "--batch-size", "4", "--max-steps", "0", "--out",
                                  str(run)])
    assert r.exit_code == 0, r.output
    monkeypatch.setattr(opencl_backend, "opencl_devices", lambda: [])
    monkeypatch.setattr(cuda_backend, "cuda_device_count", lambda: 0)
    image = str(next((data / "val" / "class00").iterdir()))
    for command in (["train", "--spec", spec, "--data", str(data), "--out",
                     str(tmp_path / "run2")],
                    ["eval", "--checkpoint", str(run)],
                    ["bench", "--spec", spec, "--iterations", "1"],
                    ["predict", "--checkpoint", str(run), image]):
        r = CliRunner().invoke(main, command + ["--backend", backend])
        _clean_error(r, words)
    assert not (tmp_path / "run2").exists()        # a start-up error leaves no run behind


def test_an_output_path_that_cannot_be_written_is_a_clean_error(root, tmp_path):
    """-o under a file, or in a directory that doesn't exist (compile -o creates its
    parents): `netspec: error: PATH: why`, exit 2."""
    spec = str(root / "examples" / "tiny-alexnet.net")
    data = _image_folder(tmp_path / "data", classes=2, per_split=1)
    (tmp_path / "file").write_text("x")
    under_file, nowhere = tmp_path / "file" / "sub", tmp_path / "no" / "such" / "dir"
    for command, path, why in (
            (["compile", spec, "-o"], under_file, "Not a directory"),
            (["viz", spec, "-o"], nowhere / "x.svg", "No such file or directory"),
            (["viz", spec, "-o"], under_file / "x.svg", "Not a directory"),
            (["export", spec, "-o"], nowhere / "x.onnx", "No such file or directory"),
            (["prepare", "--data", str(data), "-j", "0", "--out"], under_file,
             "Not a directory")):
        r = CliRunner().invoke(main, command + [str(path)])
        _clean_error(r, f"netspec: error: {path}: {why}")


def test_bad_numbers_in_flags_are_usage_errors(root):
    """Every float option refuses inf and nan (as a spec does) and every --seed a negative
    number, with click's usage error, before any work starts."""
    spec = str(root / "examples" / "tiny-alexnet.net")
    for command, flag in ((["train", "--spec", spec, "--data", "demo"], "--lr"),
                          (["compile", spec], "--link-gbps"),
                          (["compile", spec], "--tune-budget"),
                          (["bench", "--spec", spec], "--tune-budget")):
        for value in ("inf", "1e999", "nan", "-inf"):
            r = CliRunner().invoke(main, command + [flag, value])
            _clean_error(r, "Usage:", f"Invalid value for '{flag}'")
            assert "nan Gb/s" not in r.output
    # as in a spec, a learning rate must fit a float32
    r = CliRunner().invoke(main, ["train", "--spec", spec, "--data", "demo", "--lr", "1e300"])
    _clean_error(r, "Usage:", "Invalid value for '--lr'")
    for command in (["bench", "--spec", spec], ["train", "--spec", spec, "--data", "demo"],
                    ["export", spec, "-o", "x.onnx"]):
        r = CliRunner().invoke(main, command + ["--seed", "-1"])
        _clean_error(r, "Usage:", "Invalid value for '--seed'")


@pytest.mark.parametrize("command", [["compile", "specs/alexnet.net"],
                                     ["bench", "--spec", "specs/alexnet.net"],
                                     ["train", "--spec", "specs/alexnet.net", "--data", "demo"]])
def test_batch_size_is_bounded_as_the_specs_batch(command):
    """--batch-size takes what a spec's `batch` takes (1 to 2,147,483,647): a larger one is
    click's usage error, not an activations figure of 421,661,138 GiB."""
    r = CliRunner().invoke(main, command + ["--batch-size", "99999999999"])
    assert r.exit_code == 2 and "1<=x<=2147483647" in r.output, r.output


def test_every_backend_option_offers_the_runtimes_backends():
    """One --backend choice (cli.options.BACKENDS) for every command, naming exactly the
    backends netspec.runtime has, and auto, which is every command's default."""
    from netspec.cli.options import BACKENDS
    from netspec.runtime import BACKENDS as RUNTIMES
    assert sorted(BACKENDS.choices) == sorted(["auto", *RUNTIMES])
    commands = set()
    for command in main.commands.values():
        for p in command.params:
            if p.name == "backend":
                assert p.type is BACKENDS, command.name
                assert p.default == "auto", command.name
                commands.add(command.name)
    assert commands == {"train", "eval", "bench", "predict", "viz"}


def test_a_backend_registered_later_is_offered():
    """The choices are read from netspec.runtime when a command line is parsed and when help
    is printed, not when the cli was imported: a backend registered afterwards is accepted."""
    from netspec.runtime import register_backend, unregister_backend
    from netspec.runtime.numpy_backend import NumpyNet

    class LaterNet(NumpyNet):
        backend = "later"

    register_backend("later", LaterNet)
    try:
        _offered_later()
    finally:
        unregister_backend("later")


def _offered_later():
    r = CliRunner().invoke(main, ["bench", "--help"])
    assert r.exit_code == 0 and "later" in r.output, r.output
    r = CliRunner().invoke(main, ["bench", "--spec", "x.net", "--backend", "nonesuch"])
    assert r.exit_code == 2 and "'later'" in r.output, r.output
    r = CliRunner().invoke(main, ["bench", "--spec", "x.net", "--backend", "later"])
    assert r.exit_code == 2 and "Invalid value" not in r.output, r.output
    assert r.stderr.startswith("x.net: error: no such file"), r.output


def test_every_option_has_help():
    for command in main.commands.values():
        for p in command.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert p.help, f"{command.name} {p.opts}"


def test_o_is_a_file_and_out_a_directory_in_every_command():
    """-o/--output names a file the command writes, --out a directory, in every command."""
    seen = {}
    for command in main.commands.values():
        for p in command.params:
            if not isinstance(p, click.Option) or p.hidden:
                continue
            if "-o" in p.opts or "--output" in p.opts:
                assert p.opts == ["-o", "--output"] and p.metavar.startswith("FILE"), p.opts
                seen.setdefault("file", set()).add(command.name)
            if "--out" in p.opts:
                assert p.opts == ["--out"] and p.metavar == "DIR", p.opts
                seen.setdefault("dir", set()).add(command.name)
    assert seen == {"file": {"viz", "export", "import"},
                    "dir": {"compile", "train", "prepare", "import"}}


def test_compile_takes_its_old_o_for_the_directory(root, tmp_path):
    """`compile SPEC -o DIR`, the old spelling of --out, still writes the kernels there."""
    spec = str(root / "examples" / "tiny-alexnet.net")
    for flag in ("-o", "--out"):
        out = tmp_path / flag.strip("-")
        r = CliRunner().invoke(main, ["compile", spec, flag, str(out)])
        assert r.exit_code == 0, r.output
        assert {p.name for p in out.iterdir()} == {"kernels.cu", "kernels.cl", "kernels.c",
                                                  "plan.json"}
    r = CliRunner().invoke(main, ["compile", spec, "-o", str(tmp_path / "a"), "--out",
                                  str(tmp_path / "b")])
    assert r.exit_code == 2 and "give the directory once" in r.output


@pytest.mark.parametrize("module", ["netspec", "netspec.cli"])
def test_python_m_runs_the_command(module):
    r = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and __version__ in r.stdout, r.stderr
