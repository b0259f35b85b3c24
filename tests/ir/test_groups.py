"""`groups G` on conv and lrn layers: G parts of a layer (on the GPUs holding their channels),
each reading only its group's input channels, possibly a channel range of a producer's part;
and the errors for groups that don't fit."""
import re

import pytest

from netspec.dsl.errors import SpecError
from netspec.ir.build import build_graph
from netspec.ir.graph import Source


def one_gpu_grouped(text: str) -> str:
    t = re.sub(r"^gpus\s+\d+", "gpus 1", text, flags=re.M).replace("connect same-gpu", "groups 2")
    return re.sub(r"^(lrn\s.*?)(\s*#.*)?$", r"\1 groups 2\2", t, flags=re.M)


def test_alexnet_grouped_on_one_gpu_is_the_two_gpu_net(root):
    two = build_graph(root / "specs/alexnet.net")
    one = build_graph(one_gpu_grouped((root / "specs/alexnet.net").read_text()))
    assert one.gpus == 1 and one.transfers == []
    # PyTorch's grouped layouts, the same for both: conv2.weight (256, 48, 5, 5)
    assert one.param_shapes() == two.param_shapes()
    assert one.param_shapes()["conv2.weight"] == (256, 48, 5, 5)
    assert one.total_params == two.total_params == 60_965_224
    assert one.total_macs == two.total_macs
    by = {l.name: l for l in one.compute_layers}
    # norm1 normalises each half of conv1's one part: channel ranges 0..48 and 48..96
    assert [(p.gpu, p.start, p.stop, p.sources) for p in by["norm1"].parts] == [
        (0, 0, 48, [Source("conv1", 0, 0, 48, 0, 0)]),
        (0, 48, 96, [Source("conv1", 0, 0, 48, 0, 48)])]
    # pool1 follows norm1's parts; conv2's groups read them
    assert [p.sources for p in by["conv2"].parts] == [[Source("pool1", 0, 0, 48, 0, 0)],
                                                      [Source("pool1", 1, 0, 48, 0, 0)]]
    # conv3 is one part reading both halves; conv4's groups read halves of it
    assert [s.channels for s in by["conv3"].parts[0].sources] == [128, 128]
    assert [(s.start, s.channels) for p in by["conv4"].parts for s in p.sources] == \
        [(0, 192), (192, 192)]


def test_groups_on_two_gpus_cut_each_gpus_part():
    g = build_graph("""network g
input 3x8x8
classes 2
gpus 2
conv c1 filters 8 size 3 split 5,3
lrn n1 size 3 groups 4
conv c2 filters 4 size 1 groups 4 split 1,3
fc f outputs 2 gpu 0
softmax prob
""")
    n1, c2 = g.layer("n1"), g.layer("c2")
    # c1: 0..5 on GPU 0, 5..8 on GPU 1; lrn groups of 2 cut them at 2, 4, 6
    assert [(p.gpu, p.start, p.stop) for p in n1.parts] == \
        [(0, 0, 2), (0, 2, 4), (0, 4, 5), (1, 5, 6), (1, 6, 8)]
    assert [(s.part, s.start, s.channels) for p in n1.parts for s in p.sources] == \
        [(0, 0, 2), (0, 2, 2), (0, 4, 1), (1, 0, 1), (1, 1, 2)]
    # c2 group k reads input channels 2k..2k+2 of n1, wherever they are
    assert [(p.gpu, p.start, p.stop) for p in c2.parts] == \
        [(0, 0, 1), (1, 1, 2), (1, 2, 3), (1, 3, 4)]
    assert [[(s.part, s.gpu, s.channels, s.offset) for s in p.sources] for p in c2.parts] == \
        [[(0, 0, 2, 0)], [(1, 0, 2, 0)], [(2, 0, 1, 0), (3, 1, 1, 1)], [(4, 1, 2, 0)]]
    assert c2.param_shapes() == {"c2.weight": (4, 2, 1, 1), "c2.bias": (4,)}
    # so GPU 1 needs n1's parts 1 and 2 from GPU 0, each whole, once
    assert sorted((t.layer, t.part, t.dst_gpu, t.start, t.channels, t.elements)
                  for t in g.transfers if t.layer == "n1") == \
        [("n1", 1, 1, 0, 2, 2 * 6 * 6), ("n1", 2, 1, 0, 1, 6 * 6)]


def test_a_transfer_carries_only_the_channels_read():
    g = build_graph("""network g
input 3x8x8
classes 2
gpus 2
conv c1 filters 8 size 3
conv c2 filters 4 size 1 groups 4 split 1,3
fc f outputs 2 gpu 0
softmax prob
""")
    (t,) = [t for t in g.transfers if t.layer == "c1"]
    # c2's group 1 (on GPU 1) reads c1's channels 2..4, on GPU 0
    assert (t.part, t.src_gpu, t.dst_gpu, t.start, t.channels, t.elements) == \
        (0, 0, 1, 2, 2, 2 * 6 * 6)


def error(text: str):
    with pytest.raises(SpecError) as e:
        build_graph(text)
    d = e.value.first
    return d.pos.line, d.pos.col, d.message


HEAD = "network g\ninput 3x8x8\nclasses 2\ngpus 2\nconv c1 filters 8 size 3\n"
TAIL = "fc f outputs 2\nsoftmax prob\n"


@pytest.mark.parametrize("line,at_value,message", [
    ("conv c2 filters 6 size 1 groups 4",
     True, "c2: groups 4 does not divide its 6 filters; groups that divide 8 and 6: 2"),
    ("conv c2 filters 9 size 1 split 5,4 groups 3",
     True, "c2: groups 3 does not divide its 8 input channels"),
    ("lrn n1 size 3 groups 3",
     True, "n1: groups 3 does not divide its 8 channels; groups that divide 8: 2, 4, 8"),
    ("conv c2 filters 8 size 1 groups 2 connect same-gpu",
     False, "c2: give either 'connect same-gpu' (one group per GPU) or 'groups', not both"),
    ("conv c2 filters 8 size 1 groups 0", True, "c2: 'groups' must be at least 1, not 0"),
    ("maxpool p1 size 2 stride 2 groups 2", False, "p1: unknown keyword 'groups'"),
])
def test_bad_groups(line, at_value, message):
    """The message names the layer, the groups and the channel count, and the caret points at
    the value (or the keyword where the keyword itself is wrong)."""
    text = HEAD + line + "\n" + TAIL
    at, col, msg = error(text)
    assert at == 6 and msg.startswith(message), msg
    assert col == line.index("groups") + 1 + (len("groups ") if at_value else 0)


def test_groups_on_fc_is_unknown():
    at, col, msg = error(HEAD + "fc f outputs 2 groups 2\nsoftmax prob\n")
    assert at == 6 and msg.startswith("f: unknown keyword 'groups'")


GROUPED_THEN_LRN = """network t
input 3x12x12
classes 5
gpus 1
conv c1 filters 8 size 3 pad 1 relu
conv c2 filters 8 size 3 pad 1 relu groups 2
lrn n2 size 5 alpha 1e-2 beta 0.75 k 2
fc f outputs 5
softmax prob
train
  batch 2
"""


def test_an_lrn_after_a_grouped_conv_on_one_gpu_spans_all_its_maps():
    """As Caffe's and torchvision's one-GPU AlexNet: norm2 after the grouped conv2 normalises
    across all of conv2's maps; only GPUs (and the lrn's own `groups`) bound its window. Its
    one part reads both of conv2's group parts."""
    g = build_graph(GROUPED_THEN_LRN)
    n2 = next(l for l in g.layers if l.name == "n2")
    assert [(p.gpu, p.start, p.stop, p.sources) for p in n2.parts] == [
        (0, 0, 8, [Source("c2", 0, 0, 4, 0, 0), Source("c2", 1, 0, 4, 4, 0)])]
    grouped = build_graph(GROUPED_THEN_LRN.replace("k 2", "k 2 groups 2"))
    n2 = next(l for l in grouped.layers if l.name == "n2")
    assert [(p.start, p.stop) for p in n2.parts] == [(0, 4), (4, 8)]


@pytest.mark.parametrize("backend", ["numpy", "cpu", "opencl", "cuda"])
def test_that_lrn_equals_pytorchs_across_all_maps(backend):
    import numpy as np
    import torch

    import netspec

    from layercheck import backend_unavailable
    why = backend_unavailable(backend)
    if why:
        pytest.skip(why)
    g = build_graph(GROUPED_THEN_LRN)
    net = netspec.build(g, backend, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    c2 = torch.from_numpy(net.features(x, "c2").astype(np.float64))
    want = torch.nn.functional.local_response_norm(c2, 5, alpha=1e-2 * 5, beta=0.75, k=2)
    got = net.features(x, "n2")
    assert np.abs(got - want.numpy()).max() <= 1e-6 * np.abs(want.numpy()).max()
