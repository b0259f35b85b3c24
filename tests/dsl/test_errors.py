"""Malformed specs: each error kind gives its message at the right line and column."""
import pytest

from netspec.dsl.errors import SpecError
from netspec.ir.build import build_graph

GOOD = """\
network tiny
input 3x32x32
classes 10
gpus 2
init weight gauss(0.01) bias 0
conv c1 filters 8 size 3 relu
maxpool p1 size 2 stride 2
conv c2 filters 8 size 3 pad 1 relu connect same-gpu bias 1
fc f1 outputs 10 connect all
softmax prob
train
  batch 4
  sgd lr 0.01 momentum 0.9 weight_decay 0.0005
"""


def replace(line_no: int, text: str, src: str = GOOD) -> str:
    lines = src.splitlines()
    lines[line_no - 1] = text
    return "\n".join(lines) + "\n"


def insert(after: int, text: str, src: str = GOOD) -> str:
    lines = src.splitlines()
    lines.insert(after, text)
    return "\n".join(lines) + "\n"


def column(text: str, line: int, needle: str) -> int:
    """1-based column of `needle` in the line: where the caret must point."""
    src = text.splitlines()[line - 1]
    assert needle in src, (needle, src)
    return src.index(needle) + 1


def first_error(text: str) -> tuple[int, int, str]:
    with pytest.raises(SpecError) as e:
        build_graph(text)
    d = e.value.first
    return d.pos.line, d.pos.col, d.message


CASES = [
    # (id, spec text, line, the word the caret must be under, words the message must contain)
    ("syntax-char", replace(6, "conv c1 filters 8 size 3 relu $"), 6, "$", ["unexpected character"]),
    ("syntax-paren", replace(5, "init weight gauss(0.01 bias 0"), 5, "bias", ["unexpected"]),
    ("unknown-type", replace(7, "maxpol p1 size 2 stride 2"), 7, "maxpol",
     ["unknown layer type 'maxpol'", "did you mean 'maxpool'"]),
    ("misspelt-key", replace(6, "conv c1 filtres 8 size 3 relu"), 6, "filtres",
     ["unknown keyword 'filtres'", "did you mean 'filters'"]),
    ("misspelt-header", replace(3, "clases 10"), 3, "clases", ["did you mean 'classes'"]),
    ("missing-required", replace(6, "conv c1 size 3 relu"), 6, "c1", ["c1", "missing 'filters'"]),
    ("wrong-value-type", replace(6, "conv c1 filters eight size 3 relu"), 6, "eight",
     ["'filters' needs an integer", "eight"]),
    ("float-for-int", replace(6, "conv c1 filters 8.5 size 3 relu"), 6, "8.5",
     ["'filters' needs an integer"]),
    ("negative-pad", replace(8, "conv c2 filters 8 size 3 pad -1 relu connect same-gpu"), 8, "-1",
     ["'pad' must be at least 0"]),
    ("kernel-too-big", replace(6, "conv c1 filters 8 size 40 relu"), 6, "40",
     ["kernel size 40 is larger than the padded input 32x32"]),
    ("pool-too-big", replace(7, "maxpool p1 size 31 stride 2"), 7, "31",
     ["window 31 is larger than the input 30x30"]),
    ("uneven-filters", replace(6, "conv c1 filters 9 size 3 relu"), 6, "9",
     ["filters 9 cannot be split evenly over 2 GPUs", "split 5,4"]),
    ("split-sum", replace(6, "conv c1 filters 8 size 3 relu split 5,4"), 6, "5,4",
     ["split 5,4 adds up to 9, but the layer has 8 filters"]),
    ("split-count", replace(6, "conv c1 filters 8 size 3 relu split 16"), 6, "16",
     ["split gives 1 part but the network has 2 GPUs"]),
    ("init-rule", replace(6, "conv c1 filters 8 size 3 relu weight kaiming"), 6, "kaiming",
     ["'weight' needs gauss(STD) or he, found 'kaiming'"]),
    ("gpu-out-of-range", replace(9, "fc f1 outputs 10 gpu 2"), 9, "2",
     ["gpu 2 does not exist"]),
    ("same-gpu-misaligned",
     replace(8, "conv c2 filters 8 size 3 pad 1 relu connect same-gpu gpu 0"), 8, "same-gpu",
     ["same-gpu leaves p1's part on GPU 1 unread", "don't line up"]),
    ("bad-connect", replace(8, "conv c2 filters 8 size 3 pad 1 relu connect same"), 8, "same",
     ["'connect' must be one of same-gpu, all", "did you mean 'same-gpu'"]),
    ("unknown-input", replace(9, "fc f1 outputs 10 from c22"), 9, "c22",
     ["unknown input layer 'c22'", "did you mean 'c2'"]),
    ("cycle", replace(8, "conv c2 filters 8 size 3 pad 1 relu from f1",
                      replace(9, "fc f1 outputs 10 from c2")), 8, "f1",
     ["cycle", "c2 -> f1 -> c2"]),
    ("unused", insert(8, "conv side filters 8 size 3 from p1",
                       replace(9, "fc f1 outputs 10 from c2")), 9, "side",
     ["layer 'side' is never used"]),
    ("classes-mismatch", replace(9, "fc f1 outputs 12"), 9, "12",
     ["classes is 10", "f1, has 12 outputs"]),
    ("no-softmax", "\n".join(GOOD.splitlines()[:9]) + "\n", 9, "fc",
     ["must end in a softmax layer"]),
    ("duplicate-layer", replace(8, "conv c1 filters 8 size 3 pad 1 relu"), 8, "c1",
     ["layer 'c1' is defined twice"]),
    ("duplicate-key", replace(6, "conv c1 filters 8 size 3 size 3 relu"), 6, "size 3 relu",
     ["'size' is given twice"]),
    ("missing-network", "\n".join(GOOD.splitlines()[1:]) + "\n", 1, "input",
     ["missing 'network NAME'"]),
    ("bad-input-dims", replace(2, "input 3x32"), 2, "3x32", ["channels x height x width"]),
    ("unknown-recipe-key", replace(13, "  sgd lr 0.01 momentum 0.9 weight_decy 0.0005"), 13,
     "weight_decy", ["unknown keyword 'weight_decy'", "did you mean 'weight_decay'"]),
    ("recipe-keyword", insert(13, "  epohcs 10"), 14, "epohcs",
     ["unknown recipe statement 'epohcs'", "did you mean 'epochs'"]),
    ("checkpoint-every-0", insert(13, "  checkpoint every 0 keep 2"), 14, "0",
     ["'every' must be at least 1"]),
    ("checkpoint-misspelt", insert(13, "  checkpoint evry 100"), 14, "evry",
     ["unknown keyword 'evry'", "did you mean 'every'"]),
    ("precision-unknown", insert(13, "  precision tf23"), 14, "tf23",
     ["'precision' is one of fp32, tf32, bf16, not 'tf23'", "did you mean 'tf32'"]),
    ("precision-number", insert(13, "  precision 16"), 14, "16",
     ["'precision' takes one of fp32, tf32, bf16"]),
    ("precision-twice", insert(13, "  precision bf16\n  precision tf32"), 15, "precision",
     ["'precision' is given twice"]),
    ("layer-after-train", insert(13, "conv c9 filters 8 size 3"), 14, "conv",
     ["unknown recipe statement 'conv'", "layers go before 'train'"]),
    ("spatial-after-fc", insert(9, "maxpool p9 size 2 stride 2"), 10, "maxpool",
     ["a maxpool layer needs maps", "f1 gives 10 neurons"]),
    ("lrn-even", insert(6, "lrn n1 size 4"), 7, "4", ["size 4 must be odd"]),
    ("dropout-p", insert(9, "dropout d1 p 1.5"), 10, "1.5", ["'p' must be at most"]),
    ("missing-value", replace(6, "conv c1 filters 8 size"), 6, None, ["'size' needs an integer"]),
    ("crop-mismatch", insert(13, "  augment crop 28 from 32 flip"), 14, "28",
     ["crop 28 must equal the input's size 32x32"]),
    ("header-twice", insert(3, "classes 10"), 4, "classes", ["'classes' is given twice"]),
]


@pytest.mark.parametrize("text,line,needle,words", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_error_position_and_message(text, line, needle, words):
    got_line, got_col, msg = first_error(text)
    for w in words:
        assert w in msg, msg
    # None: the end of the line, where the missing value should have been
    col = len(text.splitlines()[line - 1]) + 1 if needle is None else column(text, line, needle)
    assert (got_line, got_col) == (line, col), msg


def test_good_spec_builds():
    g = build_graph(GOOD)
    assert [l.name for l in g.compute_layers] == ["c1", "p1", "c2", "f1", "prob"]


@pytest.mark.parametrize("line,want", [(None, "fp32"), ("  precision tf32", "tf32"),
                                       ("  precision bf16", "bf16"),
                                       ("  precision fp32", "fp32")])
def test_precision_statement_reaches_the_recipe(line, want):
    # fp32 without the statement: the paper's numbers stay exact unless a spec asks
    g = build_graph(GOOD if line is None else insert(13, line))
    assert g.recipe.precision == want


def test_all_errors_reported_at_once():
    text = replace(6, "conv c1 filtres 8 size 3 relu", replace(7, "maxpol p1 size 2 stride 2"))
    with pytest.raises(SpecError) as e:
        build_graph(text)
    lines = sorted(d.pos.line for d in e.value.diagnostics)
    assert lines == [6, 7]


def test_rendering_has_source_line_and_caret():
    with pytest.raises(SpecError) as e:
        build_graph(replace(6, "conv c1 filters 8 size 40 relu"))
    out = str(e.value).splitlines()
    assert out[0].startswith("<spec>:6:24: error: c1: kernel size 40")
    assert out[1].endswith("conv c1 filters 8 size 40 relu")
    caret = out[2]
    assert caret.index("^") - caret.index("|") - 2 == 23   # under column 24, the '40'
    assert out[1][caret.index("^"):].startswith("40")


@pytest.mark.parametrize("data,words,where", [
    (b"", "empty spec", "1:1"),
    (b"   \n# only a comment\n", "empty spec", "1:1"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "not a UTF-8 text file", "1:1"),
    (b"network a\x00b\n", "not a text file", "1:10"),          # at the NUL
    (b"network n\ninput 3x8x8\nclasses \xff2\n", "not a UTF-8 text file", "3:9"),
])
def test_empty_and_binary_files(tmp_path, data, words, where):
    p = tmp_path / "x.net"
    p.write_bytes(data)
    with pytest.raises(SpecError) as e:
        build_graph(p)
    assert words in str(e.value)
    assert str(e.value).startswith(f"{p}:{where}: error:")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        build_graph(tmp_path / "nope.net")
    with pytest.raises(SpecError, match="is a directory"):
        build_graph(tmp_path)
    with pytest.raises(SpecError, match="an empty path is not a spec file"):
        build_graph(path="")


# -- recovery after a syntax error: every line's error, each with its caret ------------------

def test_syntax_errors_on_several_lines_are_all_reported():
    """darknet-style `key=value` on two lines: both '=' are reported, at their columns, with
    the source line and a caret (gcc/rustc resume at the next statement)."""
    text = replace(6, "conv c1 filters=16 size 3 relu", replace(8, "conv c2 size=3 filters 8"))
    with pytest.raises(SpecError) as e:
        build_graph(text)
    got = [(d.pos.line, d.pos.col) for d in e.value.diagnostics]
    assert got == [(6, column(text, 6, "=")), (8, column(text, 8, "="))]
    assert all("unexpected character '='" in d.message for d in e.value.diagnostics)
    out = str(e.value).splitlines()
    assert out[1].endswith("conv c1 filters=16 size 3 relu")
    assert out[2].index("^") - out[2].index("|") - 2 == column(text, 6, "=") - 1
    assert out[-1] == "2 errors"


def test_syntax_errors_of_each_kind_on_their_lines():
    text = (replace(5, "init weight gauss(0.01 bias 0",       # unbalanced bracket
                    replace(7, "maxpool p1 size 2 ) stride 2",  # stray bracket
                            replace(9, "fc f1 outputs 10 $"))))  # bad character
    with pytest.raises(SpecError) as e:
        build_graph(text)
    assert [d.pos.line for d in e.value.diagnostics] == [5, 7, 9]
    assert [d.pos.col for d in e.value.diagnostics] == [
        column(text, 5, "bias"), column(text, 7, ")"), column(text, 9, "$")]


def test_error_cap_counts_the_rest():
    bad = "".join(f"conv c{i} filters=8\n" for i in range(25))
    with pytest.raises(SpecError) as e:
        build_graph(GOOD + bad)
    assert len(e.value.diagnostics) == 20 and e.value.truncated == 5
    assert [d.pos.line for d in e.value.diagnostics] == list(range(14, 34))
    assert str(e.value).splitlines()[-2:] == ["... and 5 more errors", "25 errors"]


def test_good_lines_around_a_bad_one_parse_as_before():
    """The recovery parse (line by line) reads good statements exactly as the whole-file
    parse does: the same spec with one broken line fixed builds."""
    from netspec.dsl.parser import _parse_lines, parse_statements
    whole = parse_statements(GOOD)
    lines, errors = _parse_lines(GOOD.split("\n"))
    assert errors == []
    assert [(s.keyword, s.pos, s.items) for s in lines] == \
        [(s.keyword, s.pos, s.items) for s in whole]


# -- values: finite, and in range for their type -----------------------------------------------

@pytest.mark.parametrize("text,line,needle,words", [
    (replace(13, "  sgd lr 1e999 momentum 0.9"), 13, "1e999",
     ["sgd: 'lr' must be a finite number from 0 to 3.40282e+38, not 1e999"]),
    (replace(13, "  sgd lr inf momentum 0.9"), 13, "inf",
     ["'lr' needs a finite number from 0 to 3.40282e+38, found 'inf'"]),
    (replace(13, "  sgd lr 0.01 momentum nan"), 13, "nan",
     ["'momentum' needs a finite number from 0 to 1, found 'nan'"]),
    (replace(6, "conv c1 filters 99999999999999999999 size 3 relu"), 6, "999",
     ["c1: 'filters' must be an integer from 1 to 2147483647, not 99999999999999999999"]),
    (replace(6, "conv c1 filters 8 size 3 relu bias -1e39"), 6, "-1e39",
     ["'bias' must be a finite number from -3.40282e+38 to 3.40282e+38"]),
    (replace(6, "conv c1 filters 8 size 3 relu weight gauss(1e400)"), 6, "1e400",
     ["'weight' must be a finite number"]),
    (replace(6, "conv c1 filters 8 size 3 relu split 4,4" + "0" * 12), 6, "4" + "0" * 12,
     ["'split' must be an integer from 1 to 2147483647"]),           # the entry's column
    (replace(6, "conv c1 filters 8 size 3 relu pad " + "9" * 5000), 6, "9" * 20,
     ["'pad' must be an integer from 0 to 2147483647, not 999999999999999999999999..."]),
    (replace(3, "classes 1e999"), 3, "1e999", ["'classes' takes one integer"]),
    (replace(3, "classes 3000000000"), 3, "3000000000",
     ["'classes' must be an integer from 2 to 2147483647, not 3000000000"]),
    (replace(2, "input 3x32x99999999999"), 2, "3x32", ["sizes must be integers from 1 to"]),
    (insert(12, "  epochs 9999999999"), 13, "9999999999", ["'epochs' must be an integer from 1"]),
])
def test_numbers_must_be_finite_and_fit_their_type(text, line, needle, words):
    got_line, got_col, msg = first_error(text)
    for w in words:
        assert w in msg, msg
    assert (got_line, got_col) == (line, column(text, line, needle)), msg


def test_gpus_beyond_the_limit():
    from netspec.dsl.parser import MAX_GPUS
    _, _, msg = first_error(replace(4, f"gpus {MAX_GPUS + 1}"))
    assert f"'gpus' must be an integer from 1 to {MAX_GPUS}, not {MAX_GPUS + 1}" in msg


def test_overlong_line_is_refused_before_parsing():
    from netspec.dsl.parser import MAX_LINE
    text = insert(6, "conv big filters 8 size 3 split " + ",".join(["1"] * MAX_LINE))
    with pytest.raises(SpecError) as e:
        build_graph(text)
    d = e.value.first
    assert (d.pos.line, d.pos.col) == (7, MAX_LINE + 1)
    assert f"spec lines are at most {MAX_LINE:,}" in d.message
    assert len(str(e.value)) < 300          # the line itself is not printed


def test_too_many_lines_are_refused_before_anything_per_line():
    """More than MAX_LINES lines (blank ones too: 50 MB of newlines once took 22 GB) is one
    file-level error, at once."""
    from netspec.dsl.parser import MAX_LINES
    with pytest.raises(SpecError) as e:
        build_graph(GOOD + "\n" * MAX_LINES)
    d = e.value.first
    assert d.pos is None and f"specs are at most {MAX_LINES:,} lines" in d.message
    build_graph(GOOD + "\n" * (MAX_LINES - GOOD.count("\n") - 1))     # the limit itself is fine


def test_a_long_line_is_shown_as_a_window_around_the_caret():
    """The source line under an error is cut to ~120 characters around its column (… marks
    a cut), with the caret under the same character."""
    name = "c" * 150
    text = replace(6, f"conv {name} filters 8 size 3 strdie 2 relu").replace(
        "from c1", f"from {name}")
    with pytest.raises(SpecError) as e:
        build_graph(text)
    out = e.value.render().splitlines()
    i = next(n for n, l in enumerate(out) if "strdie" in l and "error:" in l)
    echo, caret = out[i + 1], out[i + 2]
    assert len(echo) < 140 and echo.split("| ", 1)[1].startswith("…")
    assert echo[caret.index("^"):].startswith("strdie")


def test_recipe_errors_are_reported_with_the_layers_errors():
    """An error in the recipe doesn't hide the layers' errors: both are reported, in line
    order. (A dropped layer statement would cascade into its readers, so any error before
    'train' still stops there.)"""
    text = replace(6, "conv c1 filters 8 size 3 relu bias nan").replace("batch 4", "batch -1")
    with pytest.raises(SpecError) as e:
        build_graph(text)
    msgs = [(d.pos.line, d.message) for d in e.value.diagnostics]
    assert [line for line, _ in msgs] == [6, 12], msgs
    assert "'bias'" in msgs[0][1] and "'batch'" in msgs[1][1]
