"""Caffe files written by the tests from the format's documentation, not by Caffe: protobuf's
wire encoding (https://protobuf.dev/programming-guides/encoding/) of caffe.proto's
NetParameter / LayerParameter / V1LayerParameter / BlobProto (BVLC/caffe
src/caffe/proto/caffe.proto), and deploy prototxts in both dialects. OpenCV's
readNetFromCaffe reading these files is what shows the writer follows the format.
"""
from __future__ import annotations

import numpy as np

# V1LayerParameter.LayerType values (caffe.proto)
V1_ENUM = {"CONVOLUTION": 4, "DROPOUT": 6, "INNER_PRODUCT": 14, "LRN": 15, "POOLING": 17,
           "RELU": 18, "SOFTMAX": 20, "CONCAT": 3, "ELTWISE": 25}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(num: int, wire_type: int) -> bytes:
    return varint(num << 3 | wire_type)


def delimited(num: int, payload: bytes) -> bytes:
    return key(num, 2) + varint(len(payload)) + payload


def blob(a: np.ndarray, legacy: bool = False) -> bytes:
    """BlobProto: shape (7, BlobShape with packed int64 dim = 1) or legacy num/channels/
    height/width (1-4, padded with leading 1s); data: packed float (5)."""
    a = np.asarray(a, np.float32)
    if legacy:
        dims = (1,) * (4 - a.ndim) + a.shape
        head = b"".join(key(i + 1, 0) + varint(d) for i, d in enumerate(dims))
    else:
        head = delimited(7, delimited(1, b"".join(varint(d) for d in a.shape)))
    return head + delimited(5, a.astype("<f4").tobytes())


def caffemodel(layers: list[tuple[str, str, list[np.ndarray]]], v1: bool = False,
               legacy: bool = False) -> bytes:
    """NetParameter with one layer per (name, type, blobs): V2 `layer` (100: name 1, type 2,
    blobs 7) or V1 `layers` (2: name 4, type 5 as the enum, blobs 6)."""
    out = bytearray(delimited(1, b"net"))
    for name, type_, blobs in layers:
        if v1:
            msg = delimited(4, name.encode()) + key(5, 0) + varint(V1_ENUM[type_])
            msg += b"".join(delimited(6, blob(b, legacy)) for b in blobs)
            out += delimited(2, msg)
        else:
            msg = delimited(1, name.encode()) + delimited(2, type_.encode())
            msg += b"".join(delimited(7, blob(b, legacy)) for b in blobs)
            out += delimited(100, msg)
    return bytes(out)


def alexnet_v1(fc: int = 4096, classes: int = 1000, size: int = 227) -> str:
    """bvlc_alexnet's deploy.prototxt (V1, as BVLC/caffe models/bvlc_alexnet had it), with the
    fc widths and the input size as parameters."""
    def conv(name, bottom, n, k, stride=1, pad=0, group=1):
        extra = (f"    stride: {stride}\n" if stride != 1 else "") + \
            (f"    pad: {pad}\n" if pad else "") + (f"    group: {group}\n" if group != 1 else "")
        return (f'layers {{\n  name: "{name}"\n  type: CONVOLUTION\n  bottom: "{bottom}"\n'
                f'  top: "{name}"\n  blobs_lr: 1\n  blobs_lr: 2\n  weight_decay: 1\n'
                f'  weight_decay: 0\n  convolution_param {{\n    num_output: {n}\n'
                f'    kernel_size: {k}\n{extra}  }}\n}}\n')

    def simple(name, type_, bottom, top, param=""):
        return (f'layers {{\n  name: "{name}"\n  type: {type_}\n  bottom: "{bottom}"\n'
                f'  top: "{top}"\n{param}}}\n')

    lrn = "  lrn_param {\n    local_size: 5\n    alpha: 0.0001\n    beta: 0.75\n  }\n"
    pool = "  pooling_param {\n    pool: MAX\n    kernel_size: 3\n    stride: 2\n  }\n"
    drop = "  dropout_param {\n    dropout_ratio: 0.5\n  }\n"

    def ip(name, bottom, n):
        return (f'layers {{\n  name: "{name}"\n  type: INNER_PRODUCT\n  bottom: "{bottom}"\n'
                f'  top: "{name}"\n  blobs_lr: 1\n  blobs_lr: 2\n  weight_decay: 1\n'
                f'  weight_decay: 0\n  inner_product_param {{\n    num_output: {n}\n  }}\n}}\n')

    return "".join([
        f'name: "AlexNet"\ninput: "data"\ninput_dim: 10\ninput_dim: 3\ninput_dim: {size}\n'
        f'input_dim: {size}\n',
        conv("conv1", "data", 96, 11, stride=4), simple("relu1", "RELU", "conv1", "conv1"),
        simple("norm1", "LRN", "conv1", "norm1", lrn), simple("pool1", "POOLING", "norm1",
                                                              "pool1", pool),
        conv("conv2", "pool1", 256, 5, pad=2, group=2),
        simple("relu2", "RELU", "conv2", "conv2"),
        simple("norm2", "LRN", "conv2", "norm2", lrn), simple("pool2", "POOLING", "norm2",
                                                              "pool2", pool),
        conv("conv3", "pool2", 384, 3, pad=1), simple("relu3", "RELU", "conv3", "conv3"),
        conv("conv4", "conv3", 384, 3, pad=1, group=2),
        simple("relu4", "RELU", "conv4", "conv4"),
        conv("conv5", "conv4", 256, 3, pad=1, group=2),
        simple("relu5", "RELU", "conv5", "conv5"),
        simple("pool5", "POOLING", "conv5", "pool5", pool),
        ip("fc6", "pool5", fc), simple("relu6", "RELU", "fc6", "fc6"),
        simple("drop6", "DROPOUT", "fc6", "fc6", drop),
        ip("fc7", "fc6", fc), simple("relu7", "RELU", "fc7", "fc7"),
        simple("drop7", "DROPOUT", "fc7", "fc7", drop),
        ip("fc8", "fc7", classes), simple("prob", "SOFTMAX", "fc8", "prob"),
    ])


def random_blobs(shapes: dict[str, tuple[tuple, tuple]], seed: int = 0):
    """He-scaled random weights (std sqrt(2 / fan-in)) and N(0, 0.1) biases per layer, so
    that outputs are far from uniform and a wrong convention shows."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (wshape, bshape) in shapes.items():
        w = rng.standard_normal(wshape).astype(np.float32)
        w *= np.float32(np.sqrt(2.0 / np.prod(wshape[1:])))
        out[name] = [w, rng.normal(0, 0.1, bshape).astype(np.float32)]
    return out
