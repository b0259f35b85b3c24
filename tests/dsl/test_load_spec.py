"""load_spec takes spec text or a path, each by its own parameter, and never guesses."""
from __future__ import annotations

import pytest

from netspec.dsl.errors import SpecError
from netspec.dsl.parser import load_spec, text_or_path

TEXT = "network n\ninput 3x8x8\nclasses 2\nfc f outputs 2\nsoftmax prob\n"


def test_text_is_text_even_when_a_file_has_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "n.net").write_text(TEXT)
    with pytest.raises(SpecError) as e:
        load_spec("n.net")                 # one line of text, not the file of that name
    assert str(e.value).startswith("<spec>:1:")
    from_file = load_spec(path="n.net")
    assert (from_file.network, from_file.path) == ("n", "n.net")
    from_text = load_spec(TEXT)
    assert (from_text.network, from_text.path) == ("n", "<spec>")


def test_a_path_is_read_as_a_file(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_spec(path=tmp_path / "missing.net")


def test_exactly_one_of_text_and_path():
    with pytest.raises(TypeError):
        load_spec()
    with pytest.raises(TypeError):
        load_spec(TEXT, path="x.net")


def test_the_one_argument_convenience():
    from pathlib import Path
    assert text_or_path(TEXT) == {"text": TEXT}
    assert text_or_path("specs/alexnet.net") == {"path": "specs/alexnet.net"}
    assert text_or_path(Path("a\nb")) == {"path": Path("a\nb")}
    with pytest.raises(TypeError):
        text_or_path(3)
