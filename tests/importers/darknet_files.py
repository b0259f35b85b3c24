"""darknet files written from the format's description (pjreddie/darknet src/parser.c:
load_weights_upto, load_convolutional_weights, load_connected_weights), for the importer's
tests: a .weights file of random arrays for a cfg, and darknet's own alexnet.cfg."""
from __future__ import annotations

import struct

import numpy as np

# pjreddie/darknet cfg/alexnet.cfg (commit 0b4c38f), verbatim
ALEXNET_CFG = """[net]
batch=128
subdivisions=128
height=256
width=256
channels=3
learning_rate=0.01
momentum=0.9
decay=0.0005

[crop]
crop_height=224
crop_width=224
flip=1
angle=0
saturation=1
exposure=1

[convolutional]
filters=64
size=11
stride=4
pad=0
activation=ramp

[maxpool]
size=3
stride=2

[convolutional]
filters=192
size=5
stride=1
pad=1
activation=ramp

[maxpool]
size=3
stride=2

[convolutional]
filters=384
size=3
stride=1
pad=1
activation=ramp

[convolutional]
filters=256
size=3
stride=1
pad=1
activation=ramp

[convolutional]
filters=256
size=3
stride=1
pad=1
activation=ramp

[maxpool]
size=3
stride=2

[connected]
output=4096
activation=ramp

[dropout]
probability=.5

[connected]
output=4096
activation=ramp

[dropout]
probability=.5

[connected]
output=1000
activation=ramp

[softmax]
groups=1

[cost]
type=sse

"""


def header(major: int = 0, minor: int = 2, revision: int = 0, seen: int = 1000) -> bytes:
    """major, minor, revision (int32), then `seen`: int64 from version 0.2 on, else int32."""
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    return struct.pack("<iii", major, minor, revision) + struct.pack("<q" if wide else "<i",
                                                                      seen)


def random_weights(layers, seed: int = 0, last_scale: float = 1.0, opencv: bool = False,
                   **version) -> bytes:
    """A .weights file for `layers`: (kind, outputs, fan_in, batch_normalize) per conv or
    connected section in cfg order. conv: biases, [scales, means, variances], weights;
    connected: biases, weights (outputs x inputs), [scales, means, variances]. opencv: the
    same arrays with a batch-normalized connected's in the order OpenCV 4.14's reader takes
    them (the convolutional's: biases, scales, means, variances, weights)."""
    rng = np.random.default_rng(seed)
    out = [header(**version)]
    for i, (kind, n, fan_in, bn) in enumerate(layers):
        scale = last_scale if i == len(layers) - 1 else 1.0
        biases = rng.normal(0, 0.1, n)
        w = rng.normal(0, np.sqrt(2 / fan_in), n * fan_in) * scale
        stats = [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2, n)] \
            if bn else []
        arrays = [biases, *stats, w] if kind == "conv" or opencv else [biases, w, *stats]
        out += [np.asarray(a, "<f4").tobytes() for a in arrays]
    return b"".join(out)
