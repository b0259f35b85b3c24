"""The executor on small networks split over 1–4 logical GPUs, evenly and unevenly: logits and
gradients against an independent PyTorch model written from the same configuration, and
gradients against finite differences of the loss (float64).

The network: conv (every part reads the whole input) -> lrn -> pool per part -> conv
`connect same-gpu` (a grouped convolution with uneven groups) -> relu -> dropout -> fc
`connect all` -> softmax. When the second conv's parts read uneven channel counts its
parameters are per part (`c2.part<i>.weight`), otherwise stacked GPU 0's rows first.
"""
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import netspec
from netspec.kernel.philox import uniforms
from netspec.ops.conv import conv_out


def rel(a, b) -> float:
    """max|a − b| / max|b|; max|a| where b is all zero (a ReLU that never fired)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max())


@st.composite
def configs(draw):
    gpus = draw(st.integers(1, 4))
    split = lambda hi: draw(st.lists(st.integers(1, hi), min_size=gpus, max_size=gpus))
    cfg = dict(gpus=gpus, c=draw(st.integers(1, 3)), hw=draw(st.integers(4, 9)),
               k1=draw(st.integers(1, 3)), st1=draw(st.integers(1, 2)), p1=draw(st.integers(0, 2)),
               s1=split(3), n=draw(st.sampled_from([1, 3, 5])),
               pool=draw(st.sampled_from(["maxpool", "avgpool"])), z=draw(st.integers(1, 3)),
               k2=draw(st.integers(1, 3)), p2=draw(st.integers(0, 1)), s2=split(3),
               s3=split(2), seed=draw(st.integers(0, 2**31)))
    cfg["ps"] = draw(st.sampled_from(sorted({1, 2, cfg["z"]})))
    h1 = conv_out(cfg["hw"], cfg["k1"], cfg["st1"], cfg["p1"])
    assume(cfg["k1"] <= cfg["hw"] + 2 * cfg["p1"] and h1 >= cfg["z"])
    hp = conv_out(h1, cfg["z"], cfg["ps"], 0)
    assume(cfg["k2"] <= hp + 2 * cfg["p2"])
    cfg["classes"] = sum(cfg["s3"])
    assume(cfg["classes"] >= 2)
    return cfg


def spec_text(cfg) -> str:
    j = lambda s: ",".join(map(str, s))
    return f"""network parts
input {cfg['c']}x{cfg['hw']}x{cfg['hw']}
classes {cfg['classes']}
gpus {cfg['gpus']}
conv c1 filters {sum(cfg['s1'])} size {cfg['k1']} stride {cfg['st1']} pad {cfg['p1']} relu split {j(cfg['s1'])}
lrn n1 size {cfg['n']} alpha 0.3 beta 0.75 k 2
{cfg['pool']} p1 size {cfg['z']} stride {cfg['ps']}
conv c2 filters {sum(cfg['s2'])} size {cfg['k2']} pad {cfg['p2']} connect same-gpu split {j(cfg['s2'])}
relu r2
dropout d2 p 0.5
fc f3 outputs {cfg['classes']} connect all split {j(cfg['s3'])}
softmax prob
"""


def torch_logits(P, x, cfg, keep=None):
    """The same network from its configuration alone (not from the IR)."""
    bounds = lambda s: np.concatenate([[0], np.cumsum(s)])
    h = F.relu(F.conv2d(x, P["c1.weight"], P["c1.bias"], stride=cfg["st1"], padding=cfg["p1"]))
    b1, b2 = bounds(cfg["s1"]), bounds(cfg["s2"])
    pool = F.max_pool2d if cfg["pool"] == "maxpool" else F.avg_pool2d
    outs = []
    for g in range(cfg["gpus"]):
        part = h[:, b1[g]:b1[g + 1]]
        part = F.local_response_norm(part, cfg["n"], alpha=0.3 * cfg["n"], beta=0.75, k=2.0)
        part = pool(part, cfg["z"], cfg["ps"])
        if len(set(cfg["s1"])) == 1:          # parts read equal channel counts: stacked
            w, b = P["c2.weight"][b2[g]:b2[g + 1]], P["c2.bias"][b2[g]:b2[g + 1]]
        else:
            w, b = P[f"c2.part{g}.weight"], P[f"c2.part{g}.bias"]
        outs.append(F.conv2d(part, w, b, padding=cfg["p2"]))
    h = F.relu(torch.cat(outs, 1))
    if keep is not None:
        h = h * keep / 0.5
    return F.linear(h.flatten(1), P["f3.weight"], P["f3.bias"])


def setup(cfg):
    net = netspec.build(spec_text(cfg), backend="numpy", seed=cfg["seed"] % 1000,
                        dtype=np.float64)
    rng = np.random.default_rng(cfg["seed"])
    params = {k: rng.standard_normal(v.shape) * (0.5 if k.endswith("weight") else 0.1)
              for k, v in net.parameters().items()}
    net.load_parameters(params)
    x = rng.standard_normal((2, cfg["c"], cfg["hw"], cfg["hw"]))
    labels = rng.integers(0, cfg["classes"], 2)
    return net, params, x, labels


@settings(max_examples=40, deadline=None)
@given(configs())
def test_logits_and_gradients_match_torch(cfg):
    net, params, x, labels = setup(cfg)
    names = list(params)
    if len(set(cfg["s1"])) > 1:
        assert "c2.part0.weight" in names and "c2.weight" not in names
    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    logits = torch_logits(P, torch.from_numpy(x), cfg)
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    ref = dict(zip(P, torch.autograd.grad(loss, list(P.values()))))

    assert rel(net.forward(x), logits.detach().numpy()) <= 1e-12
    ours_loss, grads = net.loss_and_grads(x, labels)
    assert abs(ours_loss - loss.item()) <= 1e-12 * max(1.0, abs(loss.item()))
    assert list(grads) == names
    for k in names:
        assert rel(grads[k], ref[k].numpy()) <= 1e-10, k


@settings(max_examples=20, deadline=None)
@given(configs())
def test_train_time_gradients_match_torch_with_the_documented_masks(cfg):
    net, params, x, labels = setup(cfg)
    loss, grads = net.loss_and_grads(x, labels, train=True)
    # the first training step's mask: one uint64 from stream 2 of the seed is the Philox seed;
    # step 0, images 0 and 1, d2's compute-layer index, whole layer (N, C, H, W) at once
    rng = np.random.default_rng(np.random.SeedSequence(cfg["seed"] % 1000).spawn(2)[1])
    key = int(rng.integers(0, 1 << 64, dtype=np.uint64))
    layers = [l.name for l in net.graph.compute_layers]
    shape = net.graph.layer("d2").out_shape
    u = uniforms(key, 0, layers.index("d2"), 0, 2, int(np.prod(shape))).reshape(2, *shape)
    keep = torch.from_numpy(u >= np.float32(0.5))
    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    ref_loss = F.cross_entropy(torch_logits(P, torch.from_numpy(x), cfg, keep),
                               torch.from_numpy(labels))
    ref = dict(zip(P, torch.autograd.grad(ref_loss, list(P.values()))))
    assert abs(loss - ref_loss.item()) <= 1e-12 * max(1.0, abs(ref_loss.item()))
    for k in grads:
        assert rel(grads[k], ref[k].numpy()) <= 1e-10, k


@settings(max_examples=10, deadline=None)
@given(configs())
def test_gradients_match_finite_differences_of_the_loss(cfg):
    net, params, x, labels = setup(cfg)
    loss, grads = net.loss_and_grads(x, labels)
    rng = np.random.default_rng(0)
    h = 1e-6
    # A central difference carries rounding noise of about eps*|loss|/h (4e-10 here): where
    # the gradients themselves are ~1e-5 (hypothesis finds such nets) that noise, not the
    # backward, would set the relative error.
    noise = 10 * np.finfo(np.float64).eps * abs(loss) / h
    for name, value in params.items():
        flat = value.reshape(-1)
        picks = rng.choice(flat.size, size=min(flat.size, 12), replace=False)
        fd = []
        for i in picks:
            old = flat[i]
            flat[i] = old + h
            net.load_parameters(params)
            lp = net.loss_and_grads(x, labels)[0]
            flat[i] = old - h
            net.load_parameters(params)
            lm = net.loss_and_grads(x, labels)[0]
            flat[i] = old
            fd.append((lp - lm) / (2 * h))
        net.load_parameters(params)
        analytic = grads[name].reshape(-1)[picks]
        fd = np.array(fd)
        scale = max(np.abs(fd).max(), 1e-8)
        assert np.abs(analytic - fd).max() <= 1e-6 * scale + noise, name
