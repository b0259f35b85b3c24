"""The training input's last mile on the device: uint8 crops in, float32 (C, N, H, W) out.

A training batch can cross PCIe as the uint8 pixels of its crops (4x fewer bytes than float32)
and be finished on the device by one kernel, PREPARE_INPUT, which does what the host path
(data/augment.write_view) does, in the same float32 operations and order:

    x[c, n, y, x] = (float(pixel[n, c, y, x]) - mean[c, top_n + y, X_n(x)]) + shift[n, c]
    X_n(x) = left_n + x, or left_n + crop - 1 - x when image n is flipped

where the pixels are already cropped (and flipped) on the host, `mean` is the planar mean image
(3, base, base) float32, kept on the device, and `shift` the image's PCA colour shift (absent
without one: no addition).

The colour shift's alphas are drawn, on the host and on the device alike, from Philox4x32-10
(kernel/philox.py), so that no per-image float has to cross the bus:

    words  = Philox4x32-10(counter (0, image, COLOUR_LAYER, epoch), key (seed mod 2^32, seed >> 32))
    u_j    = (words[j] >> 8) * 2^-24                        j = 0..3, exact in float64
    r_k    = sqrt(-2 ln(1 - u_2k)),  t_k = 2 pi u_2k+1      (Box-Muller, float64)
    n      = (r_0 cos t_0, r_0 sin t_0, r_1 cos t_1)        three N(0, 1) normals
    a_j    = (n_j * sigma) * lambda_j
    shift_c = float32(255 * ((a_0 V[c,0] + a_1 V[c,1]) + a_2 V[c,2]))

`image` is the image's position in the epoch's order (batch * batch_size + i: the same on
every data-parallel replica), `epoch` the epoch, `seed` the run's seed; COLOUR_LAYER is a
counter word no compute layer's dropout draw uses. Every product and sum above is one IEEE
operation, in that order: the device text asks for them as __dmul_rn/__dadd_rn (no FMA
contraction), and the host uses NumPy's elementwise float64 and Python's `math` (the C
library's log, sin, cos). The CPU emulator compiles the same C library calls, so there the
device's input equals the host's bit for bit; on a GPU, CUDA's double log, sin and cos are
within 1-2 ulp of the C library's, so a shift (float32, rounded from float64) may differ by
one float32 ulp, rarely (about 2^-28 of them).
"""
from __future__ import annotations

import math

import numpy as np

from .philox import PHILOX_ROUNDS, philox4x32, seed_key

COLOUR_LAYER = 0xFFFFFF50           # the counter's third word for the colour shift
COLOUR_DESCRIPTION = ("PCA alphas: Box-Muller normals of Philox4x32-10 key = seed, counter = "
                      "(0, image's position in the epoch's order, 0xFFFFFF50, epoch)")
HEADER_WORDS = 5                    # key0, key1, epoch, first image, flags (bit 0: shift)
_TWO_PI = 6.283185307179586
_MAX_SIDE = 0xFFF                   # a crop offset's field: 12 bits


def colour_normals(seed: int, epoch: int, first: int, count: int) -> np.ndarray:
    """float64 (count, 3): the N(0, 1) normals of images first … first+count−1 of epoch
    `epoch` (positions in the epoch's order), as the module doc draws them. ValueError when an
    index doesn't fit its 32-bit counter word."""
    if epoch < 0 or first < 0 or epoch >= 1 << 32 or first + count > 1 << 32:
        raise ValueError(f"colour shift: epoch {epoch} and images {first}..{first + count - 1} "
                         f"must lie in [0, 2^32)")
    image = np.arange(first, first + count, dtype=np.uint64)
    words = philox4x32((0, image, COLOUR_LAYER, epoch), seed_key(seed))     # (4, count)
    u = (words >> 8).astype(np.float64) * 2.0 ** -24
    out = np.empty((count, 3), np.float64)
    for i in range(count):
        r0 = math.sqrt(-2.0 * math.log(1.0 - u[0, i]))
        r1 = math.sqrt(-2.0 * math.log(1.0 - u[2, i]))
        t0, t1 = _TWO_PI * u[1, i], _TWO_PI * u[3, i]
        out[i] = (r0 * math.cos(t0), r0 * math.sin(t0), r1 * math.cos(t1))
    return out


def colour_shifts(normals: np.ndarray, sigma: float, eigenvalues, eigenvectors) -> np.ndarray:
    """float32 (n, 3): the colour shift in 0..255 units of each row of `normals` (n, 3), PCA
    eigenvalues (3,) and eigenvectors (3, 3) (column j is p_j) in 0..1 units, in the module
    doc's order of operations (PREPARE_INPUT's)."""
    lam = np.asarray(eigenvalues, np.float64)
    vec = np.asarray(eigenvectors, np.float64)
    a = (np.asarray(normals, np.float64) * float(sigma)) * lam[None, :]
    s = (a[:, 0:1] * vec[None, :, 0] + a[:, 1:2] * vec[None, :, 1]) + a[:, 2:3] * vec[None, :, 2]
    return (255.0 * s).astype(np.float32)


def pca_constants(sigma: float, eigenvalues, eigenvectors) -> np.ndarray:
    """float64 (13,): sigma, the three eigenvalues, the eigenvector matrix row-major (V[c, j]
    at 4 + 3c + j): what PREPARE_INPUT reads of the PCA, uploaded once."""
    return np.concatenate([[float(sigma)], np.asarray(eigenvalues, np.float64).reshape(3),
                           np.asarray(eigenvectors, np.float64).reshape(9)])


def input_header(seed: int, epoch: int, first: int, shift: bool, offsets: np.ndarray,
                 flips: np.ndarray) -> np.ndarray:
    """uint32 (HEADER_WORDS + n,): the per-step words PREPARE_INPUT reads: the colour draw's
    key, epoch and first image, the flags, then one word per image: top | left << 12 |
    flip << 24. ValueError for an offset past 4095."""
    offsets = np.asarray(offsets, np.int64).reshape(-1, 2)
    if offsets.size and (offsets.min() < 0 or offsets.max() > _MAX_SIDE):
        raise ValueError(f"crop offsets must lie in 0..{_MAX_SIDE} for the device input")
    k0, k1 = seed_key(seed)
    head = np.array([k0, k1, epoch, first, int(bool(shift))], np.uint32)
    views = (offsets[:, 0] | offsets[:, 1] << 12
             | np.asarray(flips, np.int64).reshape(-1) << 24).astype(np.uint32)
    return np.concatenate([head, views])


# One block of THREADS per (image n = blockIdx.y, slice blockIdx.x of its 3·S·S values): thread
# 0 draws the image's shift into shared memory, then every thread writes values i, i + stride, ...
# of the image, read as (c, y, x) from the uint8 crop (N, 3, S, S) and written channel-major.
PREPARE_INPUT = (r"""
#if defined(__CUDA_ARCH__)
#define NETSPEC_DMUL(a, b) __dmul_rn(a, b)
#define NETSPEC_DADD(a, b) __dadd_rn(a, b)
#else
#define NETSPEC_DMUL(a, b) ((a) * (b))
#define NETSPEC_DADD(a, b) ((a) + (b))
#endif
extern "C" __global__ void netspec_prepare_input(
    const unsigned char* __restrict__ pix, const unsigned int* __restrict__ head,
    const float* __restrict__ mean, const double* __restrict__ pca, float* __restrict__ out,
    unsigned int N, unsigned int S, unsigned int B)
{
    __shared__ float shift[3];
    const unsigned int n = blockIdx.y;
    if (threadIdx.x == 0) {
        if (head[4] & 1u) {
            unsigned int c0 = 0u, c1 = head[3] + n, c2 = COLOUR_LAYER_U, c3 = head[2];
            unsigned int k0 = head[0], k1 = head[1];
""" + PHILOX_ROUNDS.replace("$u64", "unsigned long long") + r"""
            const double u0 = (double)(c0 >> 8) * 5.9604644775390625e-08;
            const double u1 = (double)(c1 >> 8) * 5.9604644775390625e-08;
            const double u2 = (double)(c2 >> 8) * 5.9604644775390625e-08;
            const double u3 = (double)(c3 >> 8) * 5.9604644775390625e-08;
            const double r0 = sqrt(-2.0 * log(1.0 - u0)), r1 = sqrt(-2.0 * log(1.0 - u2));
            const double t0 = 6.283185307179586 * u1, t1 = 6.283185307179586 * u3;
            double a[3] = {r0 * cos(t0), r0 * sin(t0), r1 * cos(t1)};
            for (int j = 0; j < 3; ++j)
                a[j] = NETSPEC_DMUL(NETSPEC_DMUL(a[j], pca[0]), pca[1 + j]);
            for (int c = 0; c < 3; ++c) {
                const double s = NETSPEC_DADD(NETSPEC_DADD(NETSPEC_DMUL(a[0], pca[4 + 3 * c]),
                                                           NETSPEC_DMUL(a[1], pca[5 + 3 * c])),
                                              NETSPEC_DMUL(a[2], pca[6 + 3 * c]));
                shift[c] = (float)NETSPEC_DMUL(255.0, s);
            }
        } else {
            shift[0] = shift[1] = shift[2] = 0.0f;
        }
    }
    __syncthreads();
    const bool add = (head[4] & 1u) != 0u;
    const unsigned int view = head[HEADER_WORDS_U + n];
    const unsigned int top = view & 0xFFFu, left = (view >> 12) & 0xFFFu;
    const bool flip = ((view >> 24) & 1u) != 0u;
    const unsigned int plane = S * S, per = 3u * plane;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < per;
         i += gridDim.x * blockDim.x) {
        const unsigned int c = i / plane, r = i % plane, y = r / S, x = r % S;
        const unsigned int mx = flip ? left + S - 1u - x : left + x;
        float v = (float)pix[(unsigned long long)n * per + i]
                  - mean[((unsigned long long)c * B + top + y) * B + mx];
        if (add)
            v = v + shift[c];
        out[((unsigned long long)c * N + n) * plane + r] = v;
    }
}
""").replace("COLOUR_LAYER_U", f"{COLOUR_LAYER:#x}u").replace("HEADER_WORDS_U",
                                                               f"{HEADER_WORDS}u")
PREPARE_THREADS = 256


def prepare_grid(n: int, crop: int) -> tuple[int, int]:
    """PREPARE_INPUT's grid: (slices per image, images), each slice about 16 values a thread."""
    per = 3 * crop * crop
    return max(1, min(64, -(-per // (PREPARE_THREADS * 16)))), n
