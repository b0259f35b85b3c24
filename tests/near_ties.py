"""Near-ties in a whole network: how close its max-pool and ReLU decisions are to flipping.

A test that compares two implementations (a backend against the NumPy reference, netspec
against PyTorch, float32 against float64, one process against MPI replicas) must not hinge on
a decision that rounding could take either way: a max-pool window whose two largest values are
within rounding of each other routes its gradient to either pixel, a ReLU input within rounding
of zero passes its gradient or not, and one such flip moves a conv weight gradient by percents
(issue 28: a pool5 window's top two 1e-6 apart, 3e-7 of the layer's largest value, decided one
way under AVX2 and the other under AVX-512, moved conv1's gradient by 6.5%).

`decision_margin(graph, params, x)` runs the NumPy reference in float64 on the whole net (the
training forward when `noise_seed` is given, with the dropout masks a net seeded so draws)
and returns the closest decision:

    max-pool window:  (largest − second largest) / max |layer part's input|
    ReLU (fused or a relu layer):  |pre-activation| / max |layer part's pre-activation|

A window whose largest values are all exactly 0 (ReLU'd out) is no decision: whichever pixel
gets the gradient, the ReLU below stops it (every implementation computes max(z, 0) = 0
exactly). A margin is relative to the layer's scale because float32 errors are: a sum of K
products is off by about sqrt(K)·2⁻²⁴ of its terms' size.

How close is too close: float32 implementations of tiny-alexnet (NumPy's and the cpu
backend's, Winograd included) differ from float64 by up to 2e-6 of a layer's largest value,
while its closest decision at batch 8 lies 4e-8 to 1.3e-6 from its tie (ten draws): no
redrawing gets a whole net's float32 decisions clear of rounding. So a float32 comparison
uses `reference_following` (below): the float64 oracle decides as the implementation did.
`assert_no_near_ties` serves float64 comparisons (netspec against PyTorch, both float64,
whose rounding is ~1e-16: a margin of 1e-9 is far beyond it, and draws meet it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netspec.runtime.numpy_backend import NumpyNet


@dataclass(frozen=True)
class Margin:
    """The closest decision: its relative margin, what it is and where."""
    value: float
    kind: str            # "max-pool" or "relu"
    layer: str

    def __str__(self) -> str:
        return f"{self.kind} in {self.layer} {self.value:.3g} of its layer's scale from a tie"


FAR = Margin(float("inf"), "none", "")


def pool_gap(x: np.ndarray, z: int, s: int) -> float:
    """The smallest (largest − second largest) over the z×z windows spaced s apart (no
    padding: ops/maxpool.py) of x (N, C, H, W), relative to max|x|; windows whose two largest
    are both exactly 0 are left out (module doc)."""
    n, c, h, w = x.shape
    ho, wo = (h - z) // s + 1, (w - z) // s + 1
    wins = np.stack([x[:, :, u:u + s * (ho - 1) + 1:s, v:v + s * (wo - 1) + 1:s]
                     for u in range(z) for v in range(z)], axis=-1)
    if wins.shape[-1] < 2:
        return float("inf")
    top2 = np.partition(wins, -2, axis=-1)[..., -2:]
    gap = top2[..., 1] - top2[..., 0]
    gap = gap[~((top2[..., 0] == 0) & (top2[..., 1] == 0))]
    scale = float(np.abs(x).max())
    if gap.size == 0 or scale == 0:
        return float("inf")
    return float(gap.min()) / scale


def relu_gap(z: np.ndarray) -> float:
    """The smallest |z| relative to max|z| (z a ReLU's input)."""
    scale = float(np.abs(z).max())
    return float(np.abs(z).min()) / scale if scale else float("inf")


def decision_margin(graph, params: dict, x: np.ndarray, *,
                    noise_seed: int | None = None) -> Margin:
    """The closest max-pool or ReLU decision of `graph` on input x (N, *input_shape) with
    `params` (name -> array), in float64; the training forward with dropout masks drawn from
    default_rng(noise_seed) when given, the test-time forward otherwise."""
    net = NumpyNet(graph, dtype=np.float64)
    net.load_parameters({k: np.asarray(v, np.float64) for k, v in params.items()})
    closest = [FAR]
    fwd = net.forward_part

    def note(value: float, kind: str, layer: str) -> None:
        if value < closest[0].value:
            closest[0] = Margin(value, kind, layer)

    def forward_part(layer, part, xin, p, *, train, noise):
        if layer.type == "maxpool":
            note(pool_gap(xin, layer.attrs["size"], layer.attrs["stride"]), "max-pool",
                 layer.name)
        elif layer.type == "relu":
            note(relu_gap(xin), "relu", layer.name)
        if layer.relu:
            pre, _ = layer.op.forward(layer.attrs, xin, p, relu=False, train=train,
                                      noise=noise)
            note(relu_gap(pre), "relu", layer.name)
        return fwd(layer, part, xin, p, train=train, noise=noise)

    net.forward_part = forward_part
    if noise_seed is not None:
        net.rng = np.random.default_rng(noise_seed)
    net.forward(np.asarray(x, np.float64), train=noise_seed is not None)
    return closest[0]


def assert_no_near_ties(graph, params: dict, x: np.ndarray, *, margin: float,
                        noise_seed: int | None = None, what: str = "input") -> Margin:
    """AssertionError unless every decision is at least `margin` from its tie."""
    m = decision_margin(graph, params, x, noise_seed=noise_seed)
    assert m.value >= margin, (f"{what}: a {m} (under {margin:g}): a test comparing two "
                               f"implementations would hinge on rounding; draw another")
    return m


# -- an oracle that follows the implementation's decisions ------------------------------------
def _record_parts(net) -> dict:
    """Wrap net.forward_part to keep every layer part's input and output, by (layer, part)."""
    seen: dict = {}
    fwd = net.forward_part

    def forward_part(layer, part, xin, p, *, train, noise):
        y, cache = fwd(layer, part, xin, p, train=train, noise=noise)
        seen[layer.name, part.index] = (np.array(xin, np.float64), np.array(y, np.float64))
        return y, cache

    net.forward_part = forward_part
    return seen


def reference_following(net, x: np.ndarray, labels, *, train: bool = True,
                        noise_seed: int = 0, check=None):
    """The float64 NumPy reference's loss and gradients on `net`'s parameters, deciding every
    max-pool and ReLU as `net` (a Net whose layers run through `forward_part`: numpy, cpu)
    decided it, and `net`'s own loss and gradients on the same step (`follow_decisions`
    says how). Dropout masks: both nets draw from default_rng(noise_seed).

    Returns (loss, grads, ref_loss, ref_grads, followed): followed counts the ReLU outputs
    whose decision was taken from `net`."""
    seen = _record_parts(net)
    net.rng = np.random.default_rng(noise_seed)
    loss, grads = net.loss_and_grads(x, labels, train=train)
    grads = {k: np.array(v) for k, v in grads.items()}
    del net.forward_part                       # the instance's wrapper; the class's is back
    ref_loss, ref_grads, followed = follow_decisions(
        net.graph, net.parameters(), seen, x, labels, train=train, noise_seed=noise_seed,
        check=check)
    return loss, grads, ref_loss, ref_grads, followed


def follow_decisions(graph, params: dict, seen: dict, x: np.ndarray, labels, *,
                     train: bool = True, noise_seed: int = 0, check=None):
    """The float64 NumPy reference's (loss, grads, followed) on `params`, deciding every
    max-pool and ReLU as the implementation that left `seen` did: {(layer, part index):
    (the part's input, its output)}, (N, ...) arrays, from `_record_parts` (numpy, cpu) or
    from a plan backend's trace (tests/runtime/plan_oracle.py).

    Each reference layer part reads the input the implementation's part read (so a max-pool
    picks from the same values, and picks alike: the first largest in row-major order), and
    a ReLU output that is 0 on one side and not on the other takes the implementation's value
    (both are within rounding of 0, so the forward moves by rounding; the gradient then
    passes where the implementation's did). `check(got, want, what)`, if given, is called on
    every part's output (before the ReLU pattern is adopted) so the forward is compared
    layer by layer. The backward is the reference's own, end to end. Dropout masks: drawn
    from default_rng(noise_seed). followed counts the ReLU outputs whose decision was
    taken from the implementation."""
    ref = NumpyNet(graph, dtype=np.float64)
    ref.load_parameters({k: np.asarray(v, np.float64) for k, v in params.items()})
    ref.rng = np.random.default_rng(noise_seed)
    fwd = ref.forward_part
    followed = [0]

    def forward_part(layer, part, xin, p, *, train, noise):
        x_net, y_net = seen[layer.name, part.index]
        y, cache = fwd(layer, part, x_net, p, train=train, noise=noise)
        if check is not None:
            check(y_net, y, f"{layer.name} part {part.index} forward")
        if layer.relu or layer.type == "relu":
            followed[0] += adopt_relu_pattern(y, y_net)
        return y, cache

    ref.forward_part = forward_part
    ref_loss, ref_grads = ref.loss_and_grads(np.asarray(x, np.float64), labels, train=train)
    return ref_loss, ref_grads, followed[0]


def adopt_relu_pattern(y: np.ndarray, y_net: np.ndarray) -> int:
    """Where a ReLU output y is 0 and the implementation's y_net is not, or the other way
    round (both within rounding of 0), take y_net's value, in place (an op's cache holds y
    as its mask); returns how many."""
    differ = (y > 0) != (y_net > 0)
    y[differ] = y_net[differ]
    return int(differ.sum())
