"""Random and mutated spec text never raises anything but the project's own error type."""
import pathlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netspec.errors import NetspecError
from netspec.ir.build import build_graph

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEEDS = [p.read_text() for p in (ROOT / "specs/alexnet.net", ROOT / "examples/tiny-alexnet.net")]
TOKENS = ["conv", "fc", "lrn", "maxpool", "softmax", "from", "split", "gpu", "connect",
          "same-gpu", "all", "relu", "size", "stride", "pad", "filters", "outputs", "0", "1",
          "-1", "3x3", "1e9", "(", ")", ",", "\n", "#", " ", "train", "gauss(0.1)", "\t",
          "99999999999999999999", "\x00", "é", "×"]


def check(text: str) -> None:
    try:
        build_graph(text + "\n")
    except NetspecError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_random_text(text):
    check(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 20),
                                                  st.sampled_from(TOKENS)), max_size=6))
def test_mutated_specs(seed, edits):
    text = seed
    for pos, cut, token in edits:
        pos %= len(text) + 1
        text = text[:pos] + token + text[pos + cut:]
    check(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup(tokens):
    check("network n\ninput 3x8x8\nclasses 2\n" + " ".join(tokens))
