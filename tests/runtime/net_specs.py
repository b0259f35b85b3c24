"""Small spec texts for backend tests: hypothesis draws edge-case networks (stride > 1, pad
0-3, odd sizes, pooling windows that don't divide the input, LRN n in {3, 5, 7} at channel
edges, z > s and z = s, 1-4 GPU parts, uneven `split`s, `groups` across them, batch 1)."""
from __future__ import annotations

from hypothesis import assume
from hypothesis import strategies as st

from netspec.ops.conv import conv_out


def _split(draw, total: int, gpus: int) -> str:
    """Uneven channel counts per GPU, each >= 1, adding up to total."""
    cuts = sorted(draw(st.lists(st.integers(1, total - 1), min_size=gpus - 1,
                                max_size=gpus - 1, unique=True)))
    bounds = [0, *cuts, total]
    return ",".join(str(b - a) for a, b in zip(bounds, bounds[1:]))


@st.composite
def edge_case_specs(draw) -> tuple[str, int]:
    """(spec text, batch size)."""
    gpus = draw(st.integers(1, 4))
    c = draw(st.integers(1, 3))
    h = w = draw(st.integers(5, 13))      # square: the recipe's crop must equal the input
    classes = draw(st.integers(2, 6))
    batch = draw(st.integers(1, 3))
    lines = ["network edge", f"input {c}x{h}x{w}", f"classes {classes}", f"gpus {gpus}",
             "init weight gauss(0.2) bias 0.05"]

    def place(total: int) -> str:
        return f" split {_split(draw, total, gpus)}" if gpus > 1 else ""

    # conv1: stride > 1 and padding 0..3, uneven split
    f1 = draw(st.integers(max(gpus, 2), 9))
    k = draw(st.integers(1, 5))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, 3))
    assume(k <= h + 2 * p and k <= w + 2 * p)
    h, w = conv_out(h, k, s, p), conv_out(w, k, s, p)
    lines.append(f"conv c1 filters {f1} size {k} stride {s} pad {p} relu{place(f1)}")
    # LRN over each part's channels (and groups of them), the window reaching past its edges
    n = draw(st.sampled_from([3, 5, 7]))
    lgroups = draw(st.sampled_from([d for d in (1, 2, 3) if f1 % d == 0]))
    lines.append(f"lrn n1 size {n} alpha 0.05 beta 0.75 k 2"
                 + (f" groups {lgroups}" if lgroups > 1 else ""))
    # pooling, overlapping (z > s) or not (z = s), windows that may not divide the input
    kind = draw(st.sampled_from(["maxpool", "avgpool"]))
    z = draw(st.integers(1, 3))
    zs = draw(st.integers(1, z))
    assume(z <= h and z <= w)
    lines.append(f"{kind} p1 size {z} stride {zs}")
    h, w = conv_out(h, z, zs, 0), conv_out(w, z, zs, 0)
    # a grouped conv: reading each GPU's own (uneven) part, or `groups G` whose groups need
    # not line up with the GPUs' parts (channel sub-ranges, maybe read across GPUs)
    if draw(st.booleans()):
        f2 = draw(st.integers(max(gpus, 2), 8))
        k2 = draw(st.integers(1, 3))
        p2 = draw(st.integers(0, 2))
        assume(k2 <= h + 2 * p2 and k2 <= w + 2 * p2)
        relu = " relu" if draw(st.booleans()) else ""
        groups = draw(st.sampled_from([d for d in (1, 2, 3) if f1 % d == 0 and f2 % d == 0]))
        grouping = f" groups {groups}" if groups > 1 else " connect same-gpu"
        lines.append(f"conv c2 filters {f2} size {k2} pad {p2}{relu}{grouping}{place(f2)}")
    if draw(st.booleans()):
        lines.append("relu r1")
    o = draw(st.integers(max(gpus, 2), 12))
    lines.append(f"fc f1 outputs {o} relu connect all{place(o)}")
    lines.append(f"dropout d1 p {draw(st.sampled_from([0.3, 0.5]))}")
    lines.append(f"fc f2 outputs {classes} connect all{place(classes) if classes >= gpus else ' gpu 0'}")
    lines.append("softmax prob")
    lines.append("train")
    lines.append(f"  batch {batch}")
    return "\n".join(lines) + "\n", batch


def one_gpu_grouped(text: str, groups: int = 2) -> str:
    """The same network on ONE logical GPU with the grouping the multi-GPU spec implies: every
    `connect same-gpu` becomes `groups G` (a grouped convolution), every lrn gets `groups G`
    (the multi-GPU lrn normalises within each GPU's part), split/gpu placement is dropped."""
    import re
    t = re.sub(r"^gpus\s+\d+", "gpus 1", text, flags=re.M)
    t = t.replace("connect same-gpu", f"groups {groups}")
    t = re.sub(r"\s+split\s+[\d,]+", "", t)
    return re.sub(r"^(lrn\s.*?)(\s*#.*)?$", rf"\1 groups {groups}\2", t, flags=re.M)


def tiny_four_gpus(text: str) -> str:
    """examples/tiny-alexnet.net on 4 logical GPUs; fc8's 10 outputs split unevenly 3,3,2,2."""
    t = text.replace("gpus    2", "gpus    4")
    t = t.replace("outputs 10         connect all", "outputs 10  connect all  split 3,3,2,2")
    assert "gpus    4" in t and "split 3,3,2,2" in t
    return t


# three layers' parts on GPU 1 read c1's part on GPU 0 (d's group 1 only its channels 2..4):
# it must cross once, and its gradient once back
BRANCHES = """network branches
input 3x12x12
classes 4
gpus 2
conv c1 filters 8 size 3 relu
conv a filters 4 size 1 from c1
conv b filters 6 size 1 from c1 split 2,4
conv d filters 4 size 3 pad 1 from c1 groups 4 split 1,3
fc f outputs 4 from a, b, d
softmax prob
"""
# only part of a part crosses: d's group 1, on GPU 1, reads c1's channels 2..4 (on GPU 0)
SUBRANGE = """network subrange
input 3x12x12
classes 4
gpus 2
conv c1 filters 8 size 3 relu
conv d filters 4 size 3 pad 1 groups 4 split 1,3
fc f outputs 4
softmax prob
"""


# The spec's own batch (128) through AlexNet's fc head (fc/relu/dropout, split over 2 GPUs,
# `connect all`), small enough to check kernel by kernel in seconds: the batch-128 launch
# geometry, the weight gradient's split-K over the batch and the bias gradient's reduction
# that the batch-2 checks never reach.
FC_HEAD_BATCH_128 = """network fchead
input 64x3x3
classes 100
gpus 2
init weight gauss(0.05) bias 0.1
fc fc6 outputs 1024 relu connect all bias 1
dropout d6 p 0.5
fc fc7 outputs 1024 relu connect all bias 1
dropout d7 p 0.5
fc fc8 outputs 100 connect all
softmax prob
train
  batch 128
"""
