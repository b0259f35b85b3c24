"""The paper's update rule (§5), stated once for every backend. For every parameter w with
velocity v:

    v ← μ·v − λ·ε·w − ε·⟨∂L/∂w⟩
    w ← w + v

ε is the learning rate times the tensor's layer's lr_mult, λ the weight decay times its
decay_mult, μ the momentum. The paper states the rule for "weight w" without excepting biases,
so netspec applies it to biases too; `decay_mult 0` on a layer turns decay off there.

The kernel (`sgd_kernel`) computes it in this operation order: (1) v ← μ·v, (2) v ← v − (λ·ε)·w,
(3) v ← v − ε·g, (4) w ← w + v, one work-item per value. netspec/runtime/sgd.py runs the same
four steps in the same order on host arrays (`sgd_step`), and tests/codegen/test_sgd.py checks
the kernel against it.

One kernel per logical GPU: a GPU's parameters, gradients and momenta are three blocks with the
same internal layout (codegen/plan/memory.py), so one launch walks all of them; the tensors'
extents and their layers' multipliers are compiled in as a table, and lr, momentum and weight
decay are arguments, since the schedule changes lr.
"""
from __future__ import annotations

from ..kernel import Kernel, elementwise_launch, params
from ..kernel.dialects import _literal


def layer_multipliers(graph) -> tuple[dict[str, float], dict[str, float]]:
    """lr_mult and decay_mult per trainable parameter name, from the IR."""
    lr, decay = {}, {}
    for layer in graph.weighted_layers:
        for _, d, name, _ in layer.param_table():
            if d.trainable:
                lr[name], decay[name] = layer.lr_mult, layer.decay_mult
    return lr, decay


SGD_TEMPLATE = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i >= ${N})
        return;
    float lr_mult, decay_mult;
    @SEGMENTS@
    else
        return;                       /* alignment padding between tensors */
    const float eps = lr * lr_mult, lambda = weight_decay * decay_mult;
    const float wi = w[i];
    const float vi = momentum * v[i] - lambda * eps * wi - eps * g[i];
    v[i] = vi;
    w[i] = wi + vi;
}
"""


def sgd_kernel(name: str, n: int, segments: list[tuple[int, int, float, float, str]],
               layer: str = "") -> Kernel:
    """segments: (start, stop, lr_mult, decay_mult, tensor name) in elements of the block."""
    branches = []
    for k, (a, b, lm, dm, what) in enumerate(segments):
        head = "if" if k == 0 else "else if"
        branches.append(f"{head} (i >= {a} && i < {b}) {{   /* {what} */\n"
                        f"        lr_mult = {_literal(float(lm))}; "
                        f"decay_mult = {_literal(float(dm))};\n    }}")
    gs, ls = elementwise_launch(n)
    return Kernel(name, SGD_TEMPLATE.replace("@SEGMENTS@", "\n    ".join(branches)),
                  params("out w", "out v", "in g", "float lr", "float momentum",
                         "float weight_decay"),
                  dict(N=n), gs, ls, flops=6 * n, layer=layer,
                  doc=f"SGD with momentum (paper section 5) over this GPU's {len(segments)} "
                      f"parameter tensors ({n} values with padding):\n"
                      f"v = momentum*v - (weight_decay*decay_mult)*(lr*lr_mult)*w - "
                      f"(lr*lr_mult)*g; w += v\nlaunch: one work-item per value")
