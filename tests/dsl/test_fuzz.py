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


# -- structural mutations: what a hostile or careless spec does to whole lines -----------------

HUGE = ["1e999", "-1e999", "9" * 40, "-" + "9" * 40, "9" * 5000, "inf", "nan", "1e-999",
        "3000000000", "0x10"]


@st.composite
def structural(draw):
    """A seed spec with whole-line edits: duplicated lines, keywords swapped between lines,
    numbers replaced by huge or non-finite ones, long item lists, deep `from` fan-in."""
    lines = draw(st.sampled_from(SEEDS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        words = lines[i].split()
        kind = draw(st.sampled_from(["dup", "swap", "huge", "list", "fanin"]))
        if kind == "dup":
            lines[i + 1:i + 1] = [lines[i]] * draw(st.integers(1, 3))
        elif kind == "swap" and words:
            j = draw(st.integers(0, len(lines) - 1))
            other = lines[j].split()
            if other:
                words[0], other[0] = other[0], words[0]
                lines[i], lines[j] = " ".join(words), " ".join(other)
        elif kind == "huge":
            nums = [k for k, w in enumerate(words) if w[:1].isdigit()]
            if nums:
                words[draw(st.sampled_from(nums))] = draw(st.sampled_from(HUGE))
                lines[i] = " ".join(words)
        elif kind == "list":
            n = draw(st.sampled_from([2, 50, 2000]))
            item = draw(st.sampled_from(["1", "0", "conv1", "1e999", "-1"]))
            key = draw(st.sampled_from(["split", "from", "at", "size", "gpu"]))
            lines[i] += f" {key} " + ",".join([item] * n)
        else:
            names = [l.split()[1] for l in lines
                     if len(l.split()) > 1 and l.split()[0] in ("conv", "fc", "lrn", "maxpool",
                                                                 "relu", "dropout")]
            n = draw(st.sampled_from([2, 30, 1000]))
            picks = [names[k % len(names)] if names else "x" for k in range(n)]
            if draw(st.booleans()):
                picks.append("nowhere")
            lines.insert(i, f"fc wide outputs 8 from {','.join(picks)}")
    return "\n".join(lines)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structural())
def test_structural_mutations(text):
    check(text)
