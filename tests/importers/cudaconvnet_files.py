"""cuda-convnet layer files written by the tests from the format's documentation (cuda-convnet's
LayerParams wiki and its layer.py), and a PyTorch model that runs such a file as cuda-convnet
computes it, from its own definitions rather than netspec's:

- conv: filters per group, `padding` zeros each side, output 1 + ceil((2·pad + H − k) / s);
- pool: windows [o·s, o·s + sizeX) from `start` 0, outputsX = ceil((H − sizeX) / s) + 1, the
  max or the mean over the cells inside the image (conv_util.cuh, kLocalPool: regionSize);
- rnorm: x · (1 + scale/size² · Σ_win x²)^−pow; cnorm: the same with x − (mean over the
  window's cells in the image) in the sum; cmrnorm: x · (1 + scale/size · Σ_maps x²)^−pow; the
  window starts at −size/2 (conv_util.cu);
- neuron=relu on a layer applies after it; fc flattens channel-major; softmax + cost.logreg.

The files are parsed here with Python's configparser (as cuda-convnet's MyConfigParser is),
not with netspec's reader.
"""
from __future__ import annotations

import configparser
import math

import torch
import torch.nn.functional as F

# cuda-convnet's example-layers/layers-18pct.cfg and layer-params-18pct.cfg, as the layer
# parameters wiki describes each key (written out here, comments ours)
LAYERS_18PCT = """\
# CIFAR-10, 18% error: conv-pool-rnorm x 2, conv-pool, fc
[data]
type=data
dataIdx=0

[labels]
type=data
dataIdx=1

[conv1]
type=conv
inputs=data
channels=3
filters=32
padding=2
stride=1
filterSize=5
initW=0.0001
partialSum=4
sharedBiases=1

[pool1]
type=pool
pool=max
inputs=conv1
start=0
sizeX=3
stride=2
outputsX=0
channels=32
neuron=relu

[rnorm1]
type=rnorm
inputs=pool1
channels=32
size=3

[conv2]
type=conv
inputs=rnorm1
filters=32
padding=2
stride=1
filterSize=5
channels=32
neuron=relu
initW=0.01
partialSum=4
sharedBiases=1

[pool2]
type=pool
pool=avg
inputs=conv2
start=0
sizeX=3
stride=2
outputsX=0
channels=32

[rnorm2]
type=rnorm
inputs=pool2
channels=32
size=3

[conv3]
type=conv
inputs=rnorm2
filters=64
padding=2
stride=1
filterSize=5
channels=32
neuron=relu
initW=0.01
partialSum=4
sharedBiases=1

[pool3]
type=pool
pool=avg
inputs=conv3
start=0
sizeX=3
stride=2
outputsX=0
channels=64

[fc10]
type=fc
outputs=10
inputs=pool3
initW=0.01

[probs]
type=softmax
inputs=fc10

[logprob]
type=cost.logreg
inputs=labels,probs
"""

PARAMS_18PCT = """\
# learning rates: divide by 10 after 120 epochs, and again after 10 more
[conv1]
epsW=0.001
epsB=0.002
momW=0.9
momB=0.9
wc=0.004

[conv2]
epsW=0.001
epsB=0.002
momW=0.9
momB=0.9
wc=0.004

[conv3]
epsW=0.001
epsB=0.002
momW=0.9
momB=0.9
wc=0.004

[fc10]
epsW=0.001
epsB=0.002
momW=0.9
momB=0.9
wc=1

[logprob]
coeff=1

[rnorm1]
scale=0.00005
pow=.75

[rnorm2]
scale=0.00005
pow=.75
"""


def _80sec() -> tuple[str, str]:
    """layers-80sec.cfg: the 18pct net without its rnorm layers, with fc64 (relu) before fc10;
    its params: wc .03 on both fc layers."""
    layers = LAYERS_18PCT.replace("inputs=rnorm1", "inputs=pool1") \
        .replace("inputs=rnorm2", "inputs=pool2")
    for name in ("rnorm1", "rnorm2"):
        a = layers.index(f"[{name}]")
        layers = layers[:a] + layers[layers.index("\n[", a) + 1:]
    layers = layers.replace("[fc10]\ntype=fc\noutputs=10\ninputs=pool3\ninitW=0.01",
                            "[fc64]\ntype=fc\noutputs=64\ninputs=pool3\ninitW=0.1\n"
                            "neuron=relu\n\n[fc10]\ntype=fc\noutputs=10\ninputs=fc64\n"
                            "initW=0.1")
    params = PARAMS_18PCT[:PARAMS_18PCT.index("[fc10]")] + \
        "".join(f"[{n}]\nepsW=0.001\nepsB=0.002\nmomW=0.9\nmomB=0.9\nwc=.03\n\n"
                for n in ("fc64", "fc10")) + "[logprob]\ncoeff=1\n"
    return layers, params


LAYERS_80SEC, PARAMS_80SEC = _80sec()


def read(layers: str, params: str = "") -> list[dict]:
    """The layers of a cfg pair in order, each {key: value} with the params file's merged in
    (keys lowercased, as ConfigParser does), plus 'name'."""
    cp = configparser.ConfigParser()
    cp.read_string(layers)
    pp = configparser.ConfigParser()
    pp.read_string(params)
    out = []
    for name in cp.sections():
        d = dict(cp[name])
        if pp.has_section(name):
            d.update(pp[name])
        d["name"] = name
        out.append(d)
    return out


def _pool(x, z: int, s: int, how: str):
    h, w = x.shape[-2:]
    oh, ow = math.ceil((h - z) / s) + 1, math.ceil((w - z) / s) + 1
    rows = []
    for i in range(oh):
        cols = []
        for j in range(ow):
            win = x[..., i * s:min(i * s + z, h), j * s:min(j * s + z, w)]
            cols.append(win.amax((-2, -1)) if how == "max" else win.mean((-2, -1)))
        rows.append(torch.stack(cols, -1))
    return torch.stack(rows, -2)


def _window_sum(v, n: int):
    """Σ over the n×n window starting at −n/2 (conv_util.cu's startX = −sizeX/2), clipped."""
    h, w = v.shape[-2:]
    lo = n // 2
    vp = F.pad(v, (lo, n - 1 - lo, lo, n - 1 - lo))
    return sum(vp[..., u:u + h, q:q + w] for u in range(n) for q in range(n))


def _norm(x, d: dict):
    n, scale, power = int(d["size"]), float(d["scale"]), float(d["pow"])
    if d["type"] == "cmrnorm":
        c = x.shape[1]
        sq = x * x
        s = torch.stack([sq[:, max(0, i - n // 2):min(c, i - n // 2 + n)].sum(1)
                         for i in range(c)], 1)
        return x * (1 + scale / n * s) ** -power
    v = x
    if d["type"] == "cnorm":
        v = x - _window_sum(x, n) / _window_sum(torch.ones_like(x), n)
    return x * (1 + scale / n ** 2 * _window_sum(v * v, n)) ** -power


def run(layers: list[dict], params: dict, x):
    """The logits (the softmax's input) of a cfg network on images x (N, C, H, W), with the
    weights `params` (netspec's names and layouts: `<layer>.weight`, `<layer>.bias`)."""
    acts = {}
    logits = None
    for d in layers:
        t, name = d["type"], d["name"]
        if t == "data":
            if d["dataidx"] == "0":
                acts[name] = x
            continue
        if t == "cost.logreg":
            continue
        (src,) = [acts[i.strip()] for i in d["inputs"].split(",")]
        if t == "conv":
            y = F.conv2d(src, params[f"{name}.weight"], params[f"{name}.bias"],
                         stride=int(d.get("stride", 1)), padding=int(d.get("padding", 0)))
        elif t == "pool":
            assert int(d.get("start", 0)) == 0
            y = _pool(src, int(d["sizex"]), int(d["stride"]), d["pool"])
        elif t in ("rnorm", "cnorm", "cmrnorm"):
            y = _norm(src, d)
        elif t == "fc":
            y = src.flatten(1) @ params[f"{name}.weight"].T + params[f"{name}.bias"]
        elif t == "softmax":
            logits = src
            y = torch.softmax(src, 1)
        else:
            raise AssertionError(t)
        if d.get("neuron") == "relu":
            y = torch.relu(y)
        acts[name] = y
    return logits
