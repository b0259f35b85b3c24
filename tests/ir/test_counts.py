"""Parameter, neuron and MAC counts and shapes, against hand computation from the paper."""
import pytest

from netspec.ir.build import build_graph


def conv_params(out, in_per_group, k):
    return out * in_per_group * k * k + out


def test_alexnet_counts(root):
    g = build_graph(root / "specs/alexnet.net")
    by = {l.name: l for l in g.compute_layers}
    # §3.5: kernels 11x11x3 (96), 5x5x48 (256), 3x3x256 (384), 3x3x192 (384), 3x3x192 (256),
    # fc 4096, 4096, 1000; the input to fc6 is 6x6x256 = 9216.
    expected = {
        "conv1": conv_params(96, 3, 11), "conv2": conv_params(256, 48, 5),
        "conv3": conv_params(384, 256, 3), "conv4": conv_params(384, 192, 3),
        "conv5": conv_params(256, 192, 3), "fc6": 9216 * 4096 + 4096,
        "fc7": 4096 * 4096 + 4096, "fc8": 4096 * 1000 + 1000,
    }
    for name, n in expected.items():
        assert by[name].params == n, name
    assert g.total_params == sum(expected.values()) == 60_965_224
    # Figure 2's neurons per weighted layer; conv1 is 55*55*96 = 290,400 (the caption's
    # 253,440 does not match 55x55x96; see the README)
    neurons = [by[n].neurons for n in ("conv1", "conv2", "conv3", "conv4", "conv5",
                                       "fc6", "fc7", "fc8")]
    assert neurons == [55 * 55 * 96, 27 * 27 * 256, 13 * 13 * 384, 13 * 13 * 384,
                       13 * 13 * 256, 4096, 4096, 1000]
    assert neurons == [290_400, 186_624, 64_896, 64_896, 43_264, 4_096, 4_096, 1_000]
    splits = {n: by[n].gpu_split(2) for n in ("conv1", "conv2", "conv3", "conv4", "conv5",
                                               "fc6", "fc7")}
    assert splits == {"conv1": [48, 48], "conv2": [128, 128], "conv3": [192, 192],
                      "conv4": [192, 192], "conv5": [128, 128], "fc6": [2048, 2048],
                      "fc7": [2048, 2048]}
    assert [by[n].connect for n in ("conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")] \
        == ["same-gpu", "all", "same-gpu", "same-gpu", "all", "all", "all"]
    # MACs: out pixels * out maps * (in maps per group * k * k)
    assert by["conv1"].macs == 55 * 55 * 96 * 3 * 11 * 11
    assert by["conv2"].macs == 27 * 27 * 256 * 48 * 5 * 5
    assert by["conv3"].macs == 13 * 13 * 384 * 256 * 3 * 3
    assert by["fc6"].macs == 9216 * 4096
    assert by["pool5"].out_shape == (256, 6, 6)
    assert by["pool1"].out_shape == (96, 27, 27)
    assert by["pool2"].out_shape == (256, 13, 13)
    # the paper's "650,000 neurons"
    assert 640_000 < sum(neurons) < 670_000


def test_alexnet_parameter_layouts(root):
    g = build_graph(root / "specs/alexnet.net")
    shapes = g.param_shapes()
    assert shapes["conv2.weight"] == (256, 48, 5, 5)
    assert shapes["conv3.weight"] == (384, 256, 3, 3)
    assert shapes["fc6.weight"] == (4096, 9216)
    assert shapes["fc8.bias"] == (1000,)


def test_alexnet_recipe(root):
    r = build_graph(root / "specs/alexnet.net").recipe
    assert (r.batch_size, r.epochs, r.lr, r.momentum, r.weight_decay) == \
        (128, 90, 0.01, 0.9, 0.0005)
    assert (r.crop, r.base, r.flip, r.pca_sigma, r.test_views) == (224, 256, True, 0.1, 10)
    assert (r.schedule, r.factor, r.max_drops) == ("plateau", 0.1, 3)


def test_alexnet_init(root):
    g = build_graph(root / "specs/alexnet.net")
    biases = {l.name: l.init_bias for l in g.weighted_layers}
    # §5: bias 1 in conv2, conv4, conv5, fc6, fc7; 0 elsewhere; every std 0.01
    assert biases == {"conv1": 0, "conv2": 1, "conv3": 0, "conv4": 1, "conv5": 1,
                      "fc6": 1, "fc7": 1, "fc8": 0}
    assert {l.init_std for l in g.weighted_layers} == {0.01}


def test_alexnet_one_gpu(root):
    g = build_graph(root / "specs/alexnet-1gpu.net")
    by = {l.name: l for l in g.compute_layers}
    # §3.2 and footnote 2: half the kernels in each conv layer but the last; fc unchanged
    assert [by[n].out_shape[0] for n in ("conv1", "conv2", "conv3", "conv4", "conv5")] == \
        [48, 128, 192, 192, 256]
    expected = (conv_params(48, 3, 11) + conv_params(128, 48, 5) + conv_params(192, 128, 3)
                + conv_params(192, 192, 3) + conv_params(256, 192, 3)
                + 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000)
    assert g.total_params == expected
    assert g.gpus == 1 and not g.transfers


def test_tiny_alexnet(root):
    g = build_graph(root / "examples/tiny-alexnet.net")
    by = {l.name: l for l in g.compute_layers}
    assert g.input_shape == (3, 64, 64) and g.classes == 10 and g.gpus == 2
    # 64 -> conv 5/2 pad 2 -> 32 -> pool 3/2 -> 15 -> conv 5 pad 2 -> 15 -> pool -> 7 -> 7 -> 3
    assert by["conv1"].out_shape == (32, 32, 32)
    assert by["pool1"].out_shape == (32, 15, 15)
    assert by["pool2"].out_shape == (64, 7, 7)
    assert by["pool5"].out_shape == (64, 3, 3)
    assert by["fc6"].params == 64 * 9 * 256 + 256
    assert by["conv2"].params == 64 * 16 * 25 + 64
    assert [l.connect for l in g.weighted_layers] == \
        ["all", "same-gpu", "all", "same-gpu", "same-gpu", "all", "all", "all"]


def test_alexnet_transfers_hand_computed(root):
    g = build_graph(root / "specs/alexnet.net")
    # GPU 0 sends: its pool2 half (13*13*128) for conv3, its pool5 half (6*6*128) for fc6,
    # its drop6 and drop7 halves (2048 each) for fc7/fc8 -- and in the backward pass the
    # gradients of GPU 1's halves of the same layers, plus fc8's part 1 (500) gathered on
    # GPU 0 for the softmax.
    fwd0 = 13 * 13 * 128 + 6 * 6 * 128 + 2048 + 2048
    bwd0 = fwd0 + 500
    assert g.sent_elements_per_image(0) == fwd0 + bwd0
    fwd1 = fwd0 + 500
    bwd1 = fwd0
    assert g.sent_elements_per_image(1) == fwd1 + bwd1


@pytest.mark.parametrize("gpus,split", [(1, None), (2, "5,3"), (4, None)])
def test_placement_variants(gpus, split):
    filters = 8
    split_txt = f" split {split}" if split else ""
    g = build_graph(f"""network t
input 3x16x16
classes 4
gpus {gpus}
conv c1 filters {filters} size 3{split_txt} relu
conv c2 filters 8 size 3 connect same-gpu{split_txt}
fc f outputs 4 gpu 0
softmax prob
""")
    c1 = g.layer("c1")
    assert sum(c1.gpu_split(gpus)) == filters
    if split:
        assert c1.gpu_split(gpus) == [5, 3]
        # same-gpu with the same split: each part reads its own GPU's part of c1
        c2 = g.layer("c2")
        assert [[s.channels for s in p.sources] for p in c2.parts] == [[5], [3]]
        assert set(c2.param_shapes()) == {"c2.part0.weight", "c2.part0.bias",
                                          "c2.part1.weight", "c2.part1.bias"}
    assert g.layer("f").gpu_split(gpus) == [4] + [0] * (gpus - 1)


def test_alexnet_device_report_through_the_cli(root):
    """`netspec compile --json`'s per-GPU rows against hand computation from the layer shapes
    (the spec's batch, 128, float32)."""
    import json

    from click.testing import CliRunner

    from netspec.cli import main

    def devices(*args):
        r = CliRunner().invoke(main, ["compile", "--json", *args, str(root / "specs/alexnet.net")])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)["devices"]

    rows = devices()
    assert [d["gpu"] for d in rows] == [0, 1]
    for d in rows:
        for key in ("param_bytes", "activation_bytes", "sent_bytes_per_step"):
            assert type(d[key]) is int and d[key] > 0, (key, d)
    batch, f32 = 128, 4
    # each GPU holds half of every layer's kernels: conv1 48 of 11x11x3, conv2 128 of 5x5x48,
    # conv3 192 of 3x3x256 (it reads both GPUs), conv4 192 and conv5 128 of 3x3x192, fc6 2048
    # of 9216 inputs, fc7 2048 of 4096, fc8 500 of 4096, each with its biases
    half = (conv_params(48, 3, 11) + conv_params(128, 48, 5) + conv_params(192, 256, 3)
            + conv_params(192, 192, 3) + conv_params(128, 192, 3)
            + 2048 * 9216 + 2048 + 2048 * 4096 + 2048 + 500 * 4096 + 500)
    assert 2 * half == 60_965_224
    assert [d["param_bytes"] for d in rows] == [half * f32] * 2
    # forward, GPU 0 sends its half of pool2 (128 maps of 13x13) for conv3, of pool5 (128 of
    # 6x6) for fc6, of drop6 and drop7 (2048 each) for fc7 and fc8; backward, it sends back
    # the gradients of what it received: the same from GPU 1, plus fc8's part 1 (500) that
    # GPU 1 sent for the softmax on GPU 0
    fwd0 = 128 * 13 * 13 + 128 * 6 * 6 + 2048 + 2048
    fwd1 = fwd0 + 500
    sent = [fwd0 + fwd1, fwd1 + fwd0]       # (own forward) + (gradients of what came in)
    assert [d["sent_bytes_per_step"] for d in rows] == [n * batch * f32 for n in sent]
    assert sent[0] * batch * f32 == 31_320_064              # about 30 MiB per GPU and step
    # activations after reuse: at least the input and conv1's half, live together in
    # conv1's forward; and they scale with the batch while parameters don't
    assert rows[0]["activation_bytes"] >= (3 * 224 * 224 + 48 * 55 * 55) * batch * f32
    small = devices("--batch-size", "64")
    assert [d["param_bytes"] for d in small] == [d["param_bytes"] for d in rows]
    assert [2 * d["sent_bytes_per_step"] for d in small] == \
        [d["sent_bytes_per_step"] for d in rows]
    assert 0.4 < small[0]["activation_bytes"] / rows[0]["activation_bytes"] < 0.6
