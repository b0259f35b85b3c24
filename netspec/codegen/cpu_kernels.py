"""The host kernels of the fast CPU backend (runtime/cpu_backend.py), rendered in the C dialect
(kernel/dialects.py: C99 with OpenMP) and built once by the system C compiler.

The GEMMs are not here: they go to the BLAS sgemm behind NumPy, on views of these kernels'
buffers. What is here is everything around them, each kernel one pass over memory with its
outer loop spread over the cores by `$parallel`:

    im2col        x (N, C, H, W) -> cols (C·k·k, N, Ho·Wo): one contiguous output row per
                  (c, u, v, n), so the conv forward is one GEMM W (O, C·k·k) @ cols; with
                  stride 1 and Wo = W (AlexNet's conv2-5) one shifted copy of the plane
    col2im        the adjoint, per input channel and block of images (no two write one pixel;
                  each tap's rows of the block one stream), taps in the reference's (u, v)
                  order
    bias_act      y[n, o, p] = act(ym[o, n, p] + b[o]): the GEMM's (O, N·P) result back to
                  NCHW with the bias and ReLU fused (conv's epilogue; fc's with P = 1)
    relu_grad_t   dyt[o, n, p] = dy[n, o, p] · [y > 0] and db[o] = Σ dyt[o, :] (in double):
                  ReLU's backward, the transpose for the two GEMMs and the bias gradient in
                  one pass
    lrn_fwd/bwd   the paper's LRN (§3.3, ops/lrn.py), the window sum in the reference's order
    maxpool_fwd/bwd  max and argmax (first in row-major order on ties) per window; the
                  backward adds each output's gradient at its argmax, outputs in row-major order
    sgd           the paper's update (§5) in one pass over w, v and g
    dropout_uniforms  the dropout noise (kernel/philox.py): Philox4x32-10 per (image, 4
                  elements), the reference's bits
    wino_*        Winograd's F(m×m, r×r) transforms of stride-1 convs, forward and adjoint
                  (codegen/winograd.py): the GEMMs between them are α² batched sgemms; a
                  different factorisation of the conv, so these agree with the reference to
                  rounding, not bit for bit

The arithmetic is the NumPy reference's, operation for operation (built with
-ffp-contract=off, no fast-math), so most kernels agree with ops/<layer>.py bit for bit; the
sums the reference leaves to NumPy's pairwise summation (bias gradients) agree to rounding.
"""
from __future__ import annotations

from ..kernel.dialects import C, Dialect
from ..kernel.philox import HOST_UNIFORMS
from .winograd import TB, kernel_templates

# Every kernel: (name, argument types, template). Types: 'f*' float pointer, 'i*' int32 pointer,
# 'l' a 64-bit integer, 'f' a float.
KERNELS: list[tuple[str, tuple[str, ...], str]] = []


def _kernel(name: str, args: str, body: str) -> None:
    KERNELS.append((name, tuple(args.split()), body))


_kernel("im2col", "f* f* l l l l l l l l l", r"""
$kernel im2col(const float *$restrict x, float *$restrict cols, long N, long C, long H, long W,
               long K, long S, long P, long Ho, long Wo)
{
    $parallel collapse(2) if (C * K * K * N * Ho * Wo > SERIAL)
    for (long r = 0; r < C * K * K; ++r)
        for (long n = 0; n < N; ++n) {
            const long c = r / (K * K), u = (r / K) % K, v = r % K;
            const float *xp = x + (n * C + c) * H * W;
            float *out = cols + (r * N + n) * Ho * Wo;
            /* ox in [lo, hi) reads inside the row: 0 <= ox·S − P + v < W */
            long lo = P > v ? (P - v + S - 1) / S : 0;
            long hi = W - 1 + P - v >= 0 ? (W - 1 + P - v) / S + 1 : 0;
            if (lo > Wo) lo = Wo;
            if (hi > Wo) hi = Wo;
            if (hi < lo) hi = lo;
            if (S == 1 && Wo == W) {
                /* rows as long as the input's: the tap is the plane shifted by
                   d = (u − P)·W + v − P, so one copy over the rows [y0, y1) inside it, then
                   the columns outside [lo, hi) (wrapped from the next row) set to zero */
                long y0 = P > u ? P - u : 0, y1 = H + P - u;
                if (y1 > Ho) y1 = Ho;
                if (y1 < 0) y1 = 0;
                if (y0 > y1) y0 = y1;
                memset(out, 0, y0 * Wo * sizeof(float));
                memset(out + y1 * Wo, 0, (Ho - y1) * Wo * sizeof(float));
                if (y1 > y0 && hi > lo) {
                    /* one contiguous copy, as a plain loop the compiler vectorises in line */
                    const long a = y0 * Wo + lo, b = (y1 - 1) * Wo + hi;
                    const float *src = xp + (u - P) * W + v - P;
                    for (long j = a; j < b; ++j) out[j] = src[j];
                }
                for (long oy = y0; oy < y1; ++oy) {
                    for (long ox = 0; ox < lo; ++ox) out[oy * Wo + ox] = 0.0f;
                    for (long ox = hi; ox < Wo; ++ox) out[oy * Wo + ox] = 0.0f;
                }
                continue;
            }
            for (long oy = 0; oy < Ho; ++oy) {
                const long iy = oy * S - P + u;
                float *o = out + oy * Wo;
                if (iy < 0 || iy >= H) {
                    memset(o, 0, Wo * sizeof(float));
                    continue;
                }
                const float *row = xp + iy * W - P + v;
                for (long ox = 0; ox < lo; ++ox) o[ox] = 0.0f;
                if (S == 1)
                    for (long ox = lo; ox < hi; ++ox) o[ox] = row[ox];
                else
                    for (long ox = lo; ox < hi; ++ox) o[ox] = row[ox * S];
                for (long ox = hi; ox < Wo; ++ox) o[ox] = 0.0f;
            }
        }
}
""")

_kernel("col2im", "f* f* l l l l l l l l l", r"""
$kernel col2im(const float *$restrict cols, float *$restrict dx, long N, long C, long H,
               long W, long K, long S, long P, long Ho, long Wo)
{
    const long NB = COL2IM_IMAGES, blocks = (N + NB - 1) / NB;
    $parallel collapse(2) if (C * K * K * N * Ho * Wo > SERIAL)
    for (long c = 0; c < C; ++c)
        for (long b = 0; b < blocks; ++b) {
            const long n0 = b * NB, n1 = n0 + NB < N ? n0 + NB : N;
            for (long n = n0; n < n1; ++n)
                memset(dx + (n * C + c) * H * W, 0, H * W * sizeof(float));
            for (long u = 0; u < K; ++u)
                for (long v = 0; v < K; ++v) {
                    long lo = P > v ? (P - v + S - 1) / S : 0;
                    long hi = W - 1 + P - v >= 0 ? (W - 1 + P - v) / S + 1 : 0;
                    if (hi > Wo) hi = Wo;
                    /* rows n0..n1 of tap (c, u, v) lie one after another: one stream */
                    const float *src = cols + (((c * K + u) * K + v) * N + n0) * Ho * Wo;
                    for (long n = n0; n < n1; ++n, src += Ho * Wo) {
                        float *d = dx + (n * C + c) * H * W;
                        for (long oy = 0; oy < Ho; ++oy) {
                            const long iy = oy * S - P + u;
                            if (iy < 0 || iy >= H)
                                continue;
                            float *row = d + iy * W - P + v;
                            const float *s = src + oy * Wo;
                            if (S == 1)
                                for (long ox = lo; ox < hi; ++ox) row[ox] += s[ox];
                            else
                                for (long ox = lo; ox < hi; ++ox) row[ox * S] += s[ox];
                        }
                    }
                }
        }
}
""")

_kernel("bias_act", "f* f* f* l l l l", r"""
$kernel bias_act(const float *$restrict ym, const float *$restrict b, float *$restrict y,
                 long N, long O, long P, long relu)
{
    $parallel collapse(2) if (N * O * P > SERIAL)
    for (long n = 0; n < N; ++n)
        for (long o = 0; o < O; ++o) {
            const float *src = ym + (o * N + n) * P;
            float *dst = y + (n * O + o) * P;
            const float bo = b[o];
            if (relu)
                for (long p = 0; p < P; ++p) {
                    const float v = src[p] + bo;
                    dst[p] = v < 0.0f ? 0.0f : v;
                }
            else
                for (long p = 0; p < P; ++p) dst[p] = src[p] + bo;
        }
}
""")

# fc's forward epilogue, in place on (N, O) rows: y += b, then ReLU.
_kernel("bias_act_rows", "f* f* l l l", r"""
$kernel bias_act_rows(float *$restrict y, const float *$restrict b, long N, long O, long relu)
{
    $parallel if (N * O > SERIAL)
    for (long n = 0; n < N; ++n) {
        float *r = y + n * O;
        for (long o = 0; o < O; ++o) {
            const float v = r[o] + b[o];
            r[o] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}
""")

_kernel("relu_grad_t", "f* f* f* f* l l l", r"""
$kernel relu_grad_t(const float *$restrict dy, const float *$restrict y, float *$restrict dyt,
                    float *$restrict db, long N, long O, long P)
{
    $parallel if (N * O * P > SERIAL)
    for (long o = 0; o < O; ++o) {
        double s = 0.0;
        for (long n = 0; n < N; ++n) {
            const float *g = dy + (n * O + o) * P;
            const float *a = y ? y + (n * O + o) * P : 0;
            float *t = dyt + (o * N + n) * P;
            float part = 0.0f;
            if (a)
                for (long p = 0; p < P; ++p) {
                    const float v = a[p] > 0.0f ? g[p] : 0.0f;
                    t[p] = v;
                    part += v;
                }
            else
                for (long p = 0; p < P; ++p) {
                    t[p] = g[p];
                    part += g[p];
                }
            s += part;
        }
        db[o] = (float)s;
    }
}
""")

# y (C, HW) planes of one image: s = k + α Σ_window x², y = x · s^−β; the window sum adds
# x[c]², x[c−1]², x[c+1]², x[c−2]², ... as ops/lrn.py's window_sum does. Each plane runs in
# chunks of LRN_CHUNK pixels, one tap at a time over the chunk, so every loop is a straight
# vector loop (per pixel the sums are still added in window_sum's order); s^−β is one of the
# row loops of neg_pow_row, chosen once per chunk.
LRN_POW = r"""
static inline void neg_pow_row(const float *$restrict s, float *$restrict r, long n,
                               float beta)
{
    if (beta == 0.75f)
        for (long p = 0; p < n; ++p) { float q = $sqrt(s[p]); q *= $sqrt(q); r[p] = 1.0f / q; }
    else if (beta == 0.5f)
        for (long p = 0; p < n; ++p) r[p] = 1.0f / $sqrt(s[p]);
    else if (beta == 1.0f)
        for (long p = 0; p < n; ++p) r[p] = 1.0f / s[p];
    else
        for (long p = 0; p < n; ++p) r[p] = $pow(s[p], -beta);
}
"""

_kernel("lrn_fwd", "f* f* f* l l l l f f f", LRN_POW + r"""
$kernel lrn_fwd(const float *$restrict x, float *$restrict y, float *$restrict scale, long N,
                long C, long HW, long size, float alpha, float beta, float k)
{
    const long half = size / 2, chunks = (HW + LRN_CHUNK - 1) / LRN_CHUNK;
    $parallel collapse(3) if (N * C * HW > SERIAL)
    for (long n = 0; n < N; ++n)
        for (long c = 0; c < C; ++c)
            for (long b = 0; b < chunks; ++b) {
                const long p0 = b * LRN_CHUNK, len = HW - p0 < LRN_CHUNK ? HW - p0 : LRN_CHUNK;
                const float *xc = x + (n * C + c) * HW + p0;
                float *yc = y + (n * C + c) * HW + p0, *sc = scale + (n * C + c) * HW + p0;
                float r[LRN_CHUNK];
                for (long p = 0; p < len; ++p) sc[p] = xc[p] * xc[p];
                for (long d = 1; d <= half; ++d) {
                    if (c - d >= 0) {
                        const float *a = xc - d * HW;
                        for (long p = 0; p < len; ++p) sc[p] += a[p] * a[p];
                    }
                    if (c + d < C) {
                        const float *a = xc + d * HW;
                        for (long p = 0; p < len; ++p) sc[p] += a[p] * a[p];
                    }
                }
                for (long p = 0; p < len; ++p) sc[p] = sc[p] * alpha + k;
                neg_pow_row(sc, r, len, beta);
                for (long p = 0; p < len; ++p) yc[p] = xc[p] * r[p];
            }
}
""")

# dx = dy·r − 2αβ · x · Σ_window(dy · x · r / s), r = s^−β, in ops/lrn.py's order; t is scratch
# the size of x. One work item is a chunk of pixels of one image in every channel: its t is
# written and summed while it is still in cache; s^−β is taken once, dy·r kept in dx until the
# window term is added to it.
_kernel("lrn_bwd", "f* f* f* f* f* l l l l f f", r"""
$kernel lrn_bwd(const float *$restrict x, const float *$restrict scale,
                const float *$restrict dy, float *$restrict t, float *$restrict dx, long N,
                long C, long HW, long size, float beta, float m)
{
    const long half = size / 2, chunks = (HW + LRN_CHUNK - 1) / LRN_CHUNK;
    /* m = −2αβ, rounded once from double as the reference */
    $parallel collapse(2) if (N * C * HW > SERIAL)
    for (long n = 0; n < N; ++n)
        for (long b = 0; b < chunks; ++b) {
            const long p0 = b * LRN_CHUNK, len = HW - p0 < LRN_CHUNK ? HW - p0 : LRN_CHUNK;
            float r[LRN_CHUNK], acc[LRN_CHUNK];
            for (long c = 0; c < C; ++c) {           /* t, and dy·r parked in dx */
                const long o = (n * C + c) * HW + p0;
                neg_pow_row(scale + o, r, len, beta);
                for (long p = 0; p < len; ++p) {
                    float v = dy[o + p] * x[o + p];
                    v *= r[p];
                    t[o + p] = v / scale[o + p];
                    dx[o + p] = dy[o + p] * r[p];
                }
            }
            for (long c = 0; c < C; ++c) {
                const long o = (n * C + c) * HW + p0;
                const float *tc = t + o;
                for (long p = 0; p < len; ++p) acc[p] = tc[p];
                for (long d = 1; d <= half; ++d) {
                    if (c - d >= 0)
                        for (long p = 0; p < len; ++p) acc[p] += tc[p - d * HW];
                    if (c + d < C)
                        for (long p = 0; p < len; ++p) acc[p] += tc[p + d * HW];
                }
                for (long p = 0; p < len; ++p) {
                    float a = acc[p] * x[o + p];
                    a *= m;
                    dx[o + p] = a + dx[o + p];
                }
            }
        }
}
""")

_kernel("maxpool_fwd", "f* f* i* l l l l l l l l", r"""
$kernel maxpool_fwd(const float *$restrict x, float *$restrict y, int *$restrict arg, long NC,
                    long H, long W, long Z, long S, long P, long Ho, long Wo)
{
    /* window (oy, ox): input rows oy·S − P .. + Z − 1, cut to the input (ops/maxpool.py) */
    $parallel if (NC * H * W > SERIAL)
    for (long q = 0; q < NC; ++q) {
        const float *xp = x + q * H * W;
        float *yp = y + q * Ho * Wo;
        int *ap = arg + q * Ho * Wo;
        for (long oy = 0; oy < Ho; ++oy)
            for (long ox = 0; ox < Wo; ++ox) {
                const long ty = oy * S - P, tx = ox * S - P;
                const long y0 = ty > 0 ? ty : 0, x0 = tx > 0 ? tx : 0;
                const long y1 = ty + Z < H ? ty + Z : H, x1 = tx + Z < W ? tx + Z : W;
                long best = y0 * W + x0;
                float m = xp[best];
                for (long u = y0; u < y1; ++u)
                    for (long v = x0; v < x1; ++v) {
                        const long i = u * W + v;
                        if (xp[i] > m) { m = xp[i]; best = i; }
                    }
                yp[oy * Wo + ox] = m;
                ap[oy * Wo + ox] = (int)best;
            }
    }
}
""")

_kernel("maxpool_bwd", "f* i* f* l l l", r"""
$kernel maxpool_bwd(const float *$restrict dy, const int *$restrict arg, float *$restrict dx,
                    long NC, long HW, long OHW)
{
    $parallel if (NC * HW > SERIAL)
    for (long q = 0; q < NC; ++q) {
        float *d = dx + q * HW;
        memset(d, 0, HW * sizeof(float));
        for (long i = 0; i < OHW; ++i)
            d[arg[q * OHW + i]] += dy[q * OHW + i];
    }
}
""")

# v <- μ·v − (λε)·w − ε·g ; w <- w + v, each product and difference rounded to float as
# runtime/sgd.py's sgd_step does it, so the two agree bit for bit.
_kernel("sgd", "f* f* f* l f f f", r"""
$kernel sgd(float *$restrict w, float *$restrict v, const float *$restrict g, long n,
            float momentum, float decay_eps, float eps)
{
    #pragma omp parallel for schedule(dynamic, 8192) if (n > SERIAL)
    for (long i = 0; i < n; ++i) {
        float vi = momentum * v[i];
        vi = vi - decay_eps * w[i];
        vi = vi - eps * g[i];
        v[i] = vi;
        w[i] = w[i] + vi;
    }
}
""")


# The dropout noise's uniforms (kernel/philox.py's Philox4x32-10 text, the same bits as the
# NumPy reference): u (N, E), key words and indices as longs
_kernel("dropout_uniforms", "f* l l l l l l l", HOST_UNIFORMS)


# Winograd's F(m×m, r×r) transforms (codegen/winograd.py) for the stride-1 convs with these
# (m, r): the backend picks one per filter size (CpuNet.winograd)
WINOGRAD_TILES = ((2, 3), (4, 3), (2, 5), (3, 5))
for _m, _r in WINOGRAD_TILES:
    for _name, _args, _body in kernel_templates(_m, _r):
        _kernel(_name, _args, _body)


# Host kernels that a layer type's own module declares (HOST_KERNELS: (name, argument types,
# template), run by its host_forward/host_backward through the cpu backend): ops/rnorm.py,
# ops/cnorm.py, ops/local.py. In module order, so the rendered source is the same every run.
def _op_host_kernels() -> None:
    import sys

    from ..ops import OPS
    for module in sorted({type(op).__module__ for op in OPS.values()}):
        for name, args, body in getattr(sys.modules.get(module), "HOST_KERNELS", ()):
            _kernel(name, args, body)


_op_host_kernels()


# Below this many elements a kernel runs on one thread: waking the others costs more than the
# work, and on a loaded machine a region waits for its slowest thread to be scheduled.
SERIAL = 1 << 15
# col2im's images per work item: its rows of one tap are one contiguous stream, and its
# input planes stay in cache while the taps are added
COL2IM_IMAGES = 8
# LRN's pixels per work item (a plane of AlexNet's conv1 has 3025): its row loops' length
LRN_CHUNK = 512


def render_cpu_module(dialect: Dialect = C) -> str:
    """The C source of every host kernel, in `dialect` (a host dialect: C)."""
    return dialect.prelude + f"#define SERIAL {SERIAL}L\n#define TB {TB}L\n" + \
        f"#define COL2IM_IMAGES {COL2IM_IMAGES}L\n" + \
        f"#define LRN_CHUNK {LRN_CHUNK}L\n" + \
        "".join("\n" + dialect.render(t) for _, _, t in KERNELS)


def kernel_signatures() -> dict[str, tuple[str, ...]]:
    """name -> argument types ('f*', 'i*', 'l', 'f') of every host kernel."""
    return {name: args for name, args, _ in KERNELS}
