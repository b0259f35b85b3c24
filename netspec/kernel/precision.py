"""The GEMM operand formats of the `precision` recipe statement, on NumPy arrays: the rounding
a tensor-core GEMM applies to its operands (kernel/gemm.py, the tensor-core section), for the
references the kernels are checked against and for the backends without tensor cores.

    round_operands(a, "tf32"): 10-bit mantissa, round to nearest, ties away from zero
                               (CUDA's __float_to_tf32, PTX cvt.rna.tf32.f32)
    round_operands(a, "bf16"): 7-bit mantissa, round to nearest even (__float2bfloat16)
    round_operands(a, "fp32"): a as float32

Shapes: any; returns a new float32 array of a's shape whose values are the rounded ones (the
exponent range is float32's for both formats, so only the mantissa changes; inf stays inf, a
finite beyond the format's largest rounds to inf as the device does).
"""
from __future__ import annotations

import numpy as np

# mantissa bits each format keeps (float32 keeps 23)
MANTISSA_BITS = {"fp32": 23, "tf32": 10, "bf16": 7}


def unit_roundoff(precision: str) -> float:
    """u = 2^-(p+1): the largest relative error of one rounding to `precision`."""
    return 2.0 ** -(MANTISSA_BITS[precision] + 1)


def round_operands(a, precision: str) -> np.ndarray:
    """`a` rounded to the operand format `precision` (module doc), as float32."""
    x = np.array(a, dtype=np.float32, copy=True)
    if precision == "fp32":
        return x
    if precision not in MANTISSA_BITS:
        raise ValueError(f"precision is one of {', '.join(MANTISSA_BITS)}, not {precision!r}")
    u = x.view(np.uint32)
    finite = (u & np.uint32(0x7f800000)) != np.uint32(0x7f800000)
    with np.errstate(over="ignore"):
        if precision == "tf32":
            r = (u + np.uint32(0x1000)) & np.uint32(0xffffe000)
        else:
            r = (u + np.uint32(0x7fff) + ((u >> np.uint32(16)) & np.uint32(1))) \
                & np.uint32(0xffff0000)
    u[...] = np.where(finite, r, u)
    return x
