"""The paper's SGD momentum update (§5), one kernel per logical GPU:

    v <- μ·v − λ·ε·w − ε·g ;  w <- w + v

with ε = lr · lr_mult and λ = weight_decay · decay_mult of the tensor's layer (weights and
biases alike). A GPU's parameters, gradients and momenta are three blocks with the same
internal layout (codegen/plan.py), so one launch walks all of them; the tensors' extents and
their layers' multipliers are compiled in as a table, and lr, momentum and weight decay are
arguments, since the schedule changes lr.
"""
from __future__ import annotations

from ..kernel import Kernel, elementwise_launch, params
from ..kernel.dialects import _literal

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
