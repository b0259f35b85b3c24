"""Philox4x32-10, the counter-based generator of the dropout noise: once in NumPy (the reference)
and once as C text every dialect renders (CUDA, OpenCL, host C).

Philox4x32-R (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
SC 2011; the generator of cuRAND's `curand_Philox4x32_10`, JAX and PyTorch's CUDA generator)
maps a 128-bit counter c = (c0, c1, c2, c3) and a 64-bit key k = (k0, k1) to 128 random bits.
One round, with M0 = 0xD2511F53, M1 = 0xCD9E8D57 and hi/lo the halves of the 64-bit product:

    (c0, c1, c2, c3) <- (hi(M1·c2) ^ c1 ^ k0,  lo(M1·c2),  hi(M0·c0) ^ c3 ^ k1,  lo(M0·c0))

and between rounds the key is bumped by the Weyl constants (k0 += 0x9E3779B9, k1 += 0xBB67AE85,
mod 2^32). Ten rounds. Checked against Random123's known answers (tests/kernel/test_philox.py).

The dropout noise (runtime/noise.py) keys it so that every value has its own counter:

    key     = (seed mod 2^32, (seed >> 32) mod 2^32)        seed: 0 <= seed < 2^64
    counter = (e // 4, image, layer, step)                  e: element index within an image
    u       = (word[e % 4] >> 8) · 2^-24                     uniform in [0, 1), exact in float32

so an element's uniform depends on (seed, step, layer, image, e) alone, never on which device,
part or process computes it. A unit is kept when u >= p (float32 p); with integers, when
`word >> 8 >= keep_threshold(p)`, which is the same test without a float in it.
"""
from __future__ import annotations

import math

import numpy as np

M0, M1 = 0xD2511F53, 0xCD9E8D57          # the round multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85          # the key schedule's Weyl constants
ROUNDS = 10
_LO = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


def philox4x32(counter, key, rounds: int = ROUNDS) -> np.ndarray:
    """Philox4x32-`rounds` on NumPy arrays.

    counter: four uint32 arrays (or a (4, ...) array), broadcast together; key: two uint32
    words (scalars or arrays broadcasting with the counter). Returns a (4, ...) uint32 array:
    the four output words for every counter. Values outside [0, 2^32) raise ValueError."""
    c = [_words(x, "counter") for x in counter]
    if len(c) != 4:
        raise ValueError(f"Philox4x32 takes a counter of 4 words, not {len(c)}")
    k0, k1 = (_words(x, "key") for x in key)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + np.uint64(W0)) & _LO, (k1 + np.uint64(W1)) & _LO
        p0, p1 = np.uint64(M0) * c[0], np.uint64(M1) * c[2]
        c = [(p1 >> _32) ^ c[1] ^ k0, p1 & _LO, (p0 >> _32) ^ c[3] ^ k1, p0 & _LO]
    return np.stack(np.broadcast_arrays(*c)).astype(np.uint32)


def _words(x, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "ui" or (a.size and (a.min() < 0 or a.max() > 0xFFFFFFFF)):
        raise ValueError(f"Philox {what} words must be integers in [0, 2^32)")
    return a.astype(np.uint64)


def seed_key(seed: int) -> tuple[int, int]:
    """The Philox key of a seed, 0 <= seed < 2^64: its low and high 32 bits. ValueError
    outside that range."""
    seed = int(seed)
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"a noise seed must be in [0, 2^64), not {seed}")
    return seed & 0xFFFFFFFF, seed >> 32


def uniforms(seed: int, step: int, layer: int, first: int, count: int,
             elements: int) -> np.ndarray:
    """The dropout uniforms of images first … first+count−1: float32 array (count, elements),
    row i element e = (word[e % 4] >> 8) · 2^-24 of Philox4x32-10 at counter
    (e // 4, first + i, layer, step) and key `seed_key(seed)`. ValueError when an index
    doesn't fit its 32-bit word."""
    for name, v, top in (("step", step, step), ("layer", layer, layer),
                         ("image", first, first + count - 1),
                         ("element group", 0, (elements - 1) // 4)):
        if v < 0 or top >= 1 << 32:
            raise ValueError(f"the dropout noise's {name} index must be in [0, 2^32)")
    groups = math.ceil(elements / 4)
    g = np.arange(groups, dtype=np.uint64)[None, :]
    image = np.arange(first, first + count, dtype=np.uint64)[:, None]
    words = philox4x32((g, image, layer, step), seed_key(seed))       # (4, count, groups)
    words = np.moveaxis(words, 0, -1).reshape(count, 4 * groups)[:, :elements]
    return ((words >> 8).astype(np.float32) * np.float32(2.0 ** -24))


def keep_threshold(p: float) -> int:
    """The integer t with  (word >> 8) >= t  ⇔  (word >> 8) · 2^-24 >= float32(p): the keep
    test of the kernels, ⌈float32(p) · 2^24⌉ (exact: a float32 times a power of two)."""
    return math.ceil(float(np.float32(p)) * (1 << 24))


# -- the kernel text -----------------------------------------------------------------------------
# One Philox4x32-10 evaluation as a C block, in every dialect: on entry c0..c3 hold the counter
# and k0, k1 the key (unsigned int variables the caller declares); on exit c0..c3 hold the four
# output words. `$u64` is the dialect's 64-bit unsigned type (the 32x32 -> 64 bit product;
# nvcc turns its high half into mul.hi.u32, as __umulhi). Written once, used by every template.
PHILOX_ROUNDS = r"""
        for (int r = 0; r < 10; ++r) {
            const $u64 p0 = ($u64)0xD2511F53u * c0, p1 = ($u64)0xCD9E8D57u * c2;
            const unsigned int n0 = (unsigned int)(p1 >> 32) ^ c1 ^ k0;
            const unsigned int n2 = (unsigned int)(p0 >> 32) ^ c3 ^ k1;
            c1 = (unsigned int)p1;
            c3 = (unsigned int)p0;
            c0 = n0;
            c2 = n2;
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
"""

# The keep mask of one part, on a device: one work-item per (image n, group g of 4 elements),
# images first..first+N-1, the part's elements [LO, HI) of each image's E = C·HW; element e
# lands at ((e / HW − C0) · N + n) · HW + e % HW, the (C, N, H, W) layout of the activations.
DROPOUT_MASK = r"""
$kernel $name($params)
{
    const int t = $gid0;
    if (t >= ${ITEMS})
        return;
    const int n = t / ${GROUPS};
    const unsigned int g = ${G0}u + (unsigned int)(t % ${GROUPS});
    unsigned int c0 = g, c1 = (unsigned int)noise[3] + (unsigned int)n, c2 = ${LAYER}u;
    unsigned int c3 = (unsigned int)noise[2];
    unsigned int k0 = (unsigned int)noise[0], k1 = (unsigned int)noise[1];
""" + PHILOX_ROUNDS + r"""
    const unsigned int w[4] = {c0, c1, c2, c3};
    for (int j = 0; j < 4; ++j) {
        const int e = 4 * (int)g + j;
        if (e >= ${LO} && e < ${HI})
            mask[((e / ${HW} - ${C0}) * ${N} + n) * ${HW} + e % ${HW}] =
                (w[j] >> 8) >= ${THRESHOLD}u ? 1.0f : 0.0f;
    }
}
"""

# Philox words as floats, for the known-answer tests of the rendered text: output i of counter
# (ctr[4i..4i+3]) and key (key[0], key[1]) as two exact floats each, hi = word >> 16 and
# lo = word & 0xFFFF, at out[8i + 2j] and out[8i + 2j + 1]. Counters and key come in as int32
# bit patterns.
PHILOX_WORDS = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i >= ${COUNT})
        return;
    unsigned int c0 = (unsigned int)ctr[4 * i], c1 = (unsigned int)ctr[4 * i + 1];
    unsigned int c2 = (unsigned int)ctr[4 * i + 2], c3 = (unsigned int)ctr[4 * i + 3];
    unsigned int k0 = (unsigned int)key[0], k1 = (unsigned int)key[1];
""" + PHILOX_ROUNDS + r"""
    const unsigned int w[4] = {c0, c1, c2, c3};
    for (int j = 0; j < 4; ++j) {
        out[8 * i + 2 * j] = (float)(w[j] >> 16);
        out[8 * i + 2 * j + 1] = (float)(w[j] & 0xFFFFu);
    }
}
"""


def mask_launch_consts(*, batch: int, layer: int, channels: tuple[int, int], per_channel: int,
                       p: float) -> tuple[dict, int]:
    """The constants of DROPOUT_MASK for one part (channels [c0, c1) of per_channel = H·W
    elements each, `batch` images, key layer `layer`) and its work-item count."""
    c0, c1 = channels
    lo, hi = c0 * per_channel, c1 * per_channel
    g0, groups = lo // 4, math.ceil(hi / 4) - lo // 4
    items = batch * groups
    return dict(ITEMS=items, GROUPS=groups, G0=g0, LAYER=layer, LO=lo, HI=hi,
                HW=per_channel, C0=c0, N=batch, THRESHOLD=keep_threshold(p)), items

# The host C dialect's draw (runtime/cpu_backend.py): the uniforms of a whole layer, (N, E) in
# the reference's layout, one loop iteration per (image, group of 4 elements), `$parallel` over
# the cores. Key words and indices come in as longs (the host kernels' integer type).
HOST_UNIFORMS = r"""
$kernel dropout_uniforms(float *$restrict u, long N, long E, long key0, long key1, long step,
                         long first, long layer)
{
    const long groups = (E + 3) / 4;
    #pragma omp parallel for schedule(dynamic, 256) if (N * E > SERIAL)
    for (long t = 0; t < N * groups; ++t) {
        const long n = t / groups, g = t % groups;
        unsigned int c0 = (unsigned int)g, c1 = (unsigned int)(first + n);
        unsigned int c2 = (unsigned int)layer, c3 = (unsigned int)step;
        unsigned int k0 = (unsigned int)key0, k1 = (unsigned int)key1;
""" + PHILOX_ROUNDS + r"""
        const unsigned int w[4] = {c0, c1, c2, c3};
        for (long j = 0; j < 4 && 4 * g + j < E; ++j)
            u[n * E + 4 * g + j] = (float)(w[j] >> 8) * 5.9604644775390625e-08f;
    }
}
"""
