"""netspec/atomic.py: every file netspec writes for a user is replaced whole or not at all.

A write that fails mid-way (an exception, a full disk, a kill) leaves the old file intact;
/dev/null and other non-regular targets keep working; and no module writes a user-facing file
around the helper (read from the source with `ast`)."""
from __future__ import annotations

import ast
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netspec.atomic import atomic_open, atomic_write

ROOT = Path(__file__).resolve().parents[1]


def test_replaces_content_and_keeps_the_mode(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")
    os.chmod(p, 0o640)
    atomic_write(p, b"new content")
    assert p.read_bytes() == b"new content"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    atomic_write(p, "text é")
    assert p.read_text(encoding="utf-8") == "text é"
    atomic_write(p, [b"a", memoryview(b"bc"), bytearray(b"d")])
    assert p.read_bytes() == b"abcd"
    atomic_write(p, lambda f: f.write(b"by a writer"))
    assert p.read_bytes() == b"by a writer"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.bin"]     # no temporaries


def test_a_writer_that_fails_mid_way_leaves_the_old_file(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"the old model" * 1000)

    def half_then_fail(f):
        f.write(b"x" * 5000)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(p, half_then_fail)
    assert p.read_bytes() == b"the old model" * 1000
    assert [x.name for x in tmp_path.iterdir()] == ["model.onnx"]


def test_a_symlink_is_followed_and_kept(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    atomic_write(link, b"new")
    assert link.is_symlink() and real.read_text() == "new"


def test_dev_null_and_a_fifo_are_written_in_place(tmp_path):
    atomic_write("/dev/null", b"anything")           # not replaced by a regular file
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    with atomic_open(fifo) as f:
        f.write(b"through the pipe")
    assert reader.communicate(timeout=10)[0] == b"through the pipe"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_writer_killed_mid_way_leaves_the_old_file(tmp_path):
    """A real process, SIGTERM'd (and then SIGKILL'd) while half of its file is written."""
    p = tmp_path / "existing.onnx"
    p.write_bytes(b"OLD" * 10000)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from netspec.atomic import atomic_write
        def slow(f):
            f.write(b"N" * 15000)
            f.flush()
            print("half", flush=True)
            time.sleep(60)
            f.write(b"N" * 15000)
        atomic_write({str(p)!r}, slow)
        """)], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout.readline() == b"half\n"
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=20)
    assert p.read_bytes() == b"OLD" * 10000


def test_export_over_an_existing_file_fails_whole(tmp_path, monkeypatch):
    """`netspec export -o existing.onnx` that fails after writing (fsync refuses: a full disk
    or a dying file system) leaves the existing model as it was."""
    pytest.importorskip("onnx", reason="pip install 'netspec[onnx]' (in the test extra)")
    from click.testing import CliRunner

    from netspec.cli import main
    spec = ROOT / "examples" / "tiny-alexnet.net"
    out = tmp_path / "existing.onnx"
    out.write_bytes(b"previous model")

    def refuse(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", refuse)
    res = CliRunner().invoke(main, ["export", str(spec), "-o", str(out)])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert out.read_bytes() == b"previous model"
    assert [x.name for x in tmp_path.iterdir()] == ["existing.onnx"]
    monkeypatch.undo()
    res = CliRunner().invoke(main, ["export", str(spec), "-o", "/dev/null"])
    assert res.exit_code == 0, res.output


# -- no user-facing write bypasses the helper ------------------------------------------------

# Writes that are not a user's files, each with the reason it is safe as it is.
EXEMPT = {
    "netspec/atomic.py": "the helper itself",
    "netspec/data/demo.py": "the demo set is built in a temporary folder renamed into place "
                            "(demo.build_in_place)",
    "netspec/runtime/autotune.py": "the tuning cache: a temporary name then os.replace",
    "netspec/runtime/opencl_backend.py": "the binary cache: a temporary name then os.replace",
    "netspec/runtime/host_build.py": "sources compiled in a TemporaryDirectory, the .so "
                                     "renamed into the cache",
    "netspec/runtime/cuda_emulator/build.py": "the same, for the emulator's library",
    "netspec/codegen/resources.py": "nvcc's input in a TemporaryDirectory",
    "netspec/bench/sass.py": "nvcc's input in a TemporaryDirectory, the disassembly written "
                             "to a temporary name and os.replace'd into the cache",
    "netspec/viz/svg.py": "a PNG encoded into an in-memory buffer",
}
WRITE_METHODS = {"write_text", "write_bytes", "save", "savez", "savez_compressed", "dump",
                 "tofile", "savefig"}


def _params(node: ast.AST) -> set[str]:
    args = node.args
    return {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}


def _writes(tree: ast.AST):
    """(line, text) of each call that writes a file by path: open() for writing,
    Path.write_text/write_bytes, and .save/np.save...(target) where the target is not a file
    object handed in by an enclosing lambda (atomic_write's writer)."""
    def visit(node, handed):
        if isinstance(node, ast.Lambda):
            handed = handed | _params(node)
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name == "open" and isinstance(f, ast.Name):
                mode = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "mode"), None)
                if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
                    yield node.lineno, ast.unparse(node)
            elif name in ("write_text", "write_bytes"):
                yield node.lineno, ast.unparse(node)
            elif name in WRITE_METHODS and node.args and not (     # self.save(): a method
                    isinstance(f, ast.Attribute) and getattr(f.value, "id", "") == "self"):
                target = node.args[0]
                if not (isinstance(target, ast.Name) and target.id in handed) and not (
                        isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute)
                        and target.func.attr == "wrap"):
                    yield node.lineno, ast.unparse(node)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, handed)
    yield from visit(tree, frozenset())


def test_no_user_facing_write_bypasses_the_helper():
    found = []
    for path in sorted((ROOT / "netspec").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in EXEMPT:
            continue
        for line, text in _writes(ast.parse(path.read_text(encoding="utf-8"))):
            found.append(f"{rel}:{line}: {text}")
    assert not found, ("files written around netspec.atomic.atomic_write:\n"
                       + "\n".join(found))


def test_the_bypass_finder_finds_bypasses():
    code = textwrap.dedent("""
        def f(path, data, g):
            open(path, "w").write(data)
            path.write_text(data)
            np.save(path, data)
            image.save(path, "PNG")
            atomic_write(path, lambda h: np.save(h, data))
            with open(path) as r:
                r.read()
            g.save(data)
        """)
    lines = [line for line, _ in _writes(ast.parse(code))]
    assert lines == [3, 4, 5, 6, 10]   # the lambda's h is a file handed in; open(path) reads
