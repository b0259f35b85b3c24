"""Winograd's minimal filtering F(m×m, r×r) for stride-1 convolutions on the CPU backend
(Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks", §4), and the host C
kernels of its transforms, rendered in the C dialect. Emits matrices and text; never runs.

A stride-1 conv (correlation, as ops/conv.py) of an r×r filter g with an α×α input tile d,
α = m + r − 1, gives an m×m output tile

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A          Aᵀ: m×α,  G: α×r,  Bᵀ: α×α

so a layer is α² independent GEMMs, one per transformed element ξ:
M[ξ] (O, T) = U[ξ] (O, C) @ V[ξ] (C, T), with U = G g Gᵀ per (o, c), V = Bᵀ d B per (c, tile)
and T = N·⌈Ho/m⌉·⌈Wo/m⌉ tiles. Per tile that is α²·O·C multiplies against the direct
conv's m²·r²·O·C: 2.25× fewer for F(2×2, 3×3).

The backward is the adjoint of each linear step, so it runs in the same domain (three
α²-GEMM sets per step, each the size of the forward's):

    dM = A·dY·Aᵀ per output tile            (wino_dout, with ReLU's mask and the bias sum)
    dU[ξ] = dM[ξ] @ V[ξ]ᵀ,  dg = Gᵀ dU G     (the weight gradient; wino_dfilter)
    dV[ξ] = U[ξ]ᵀ @ dM[ξ],  dd = B dV Bᵀ     (the input gradient, tiles summed; wino_din)

The matrices come from interpolation points (0, ±1, ±2, ±1/2 ..., and ∞), computed exactly
in rationals: Aᵀ[i][j] = p_jⁱ, G[j][k] = p_jᵏ / Π_{l≠j}(p_j − p_l), the ∞ point a last
column/row of e_{m−1}/e_{r−1}, and Bᵀ the one matrix that makes the identity above hold for
every g and d (solved here, checked exactly). The numbers are exact in float32 for F(2, 3).

Error bounds (ERROR_BOUND), float32 against a float64 conv, as max |error| / max |value| of
the output, the input gradient and the weight gradient; for C = 48 input channels on a 27×27
plane, N(0, 1) inputs and output gradients (AlexNet's conv2-5 sizes; the error grows about as
√(C·r²), and with the transform's largest coefficients, as larger m and r need points ±2, ±½):

    transform      output   input gradient   weight gradient   (im2col + GEMM: ~1e-6)
    F(2×2, 3×3)    2e-6     2e-6             2e-6
    F(4×4, 3×3)    2e-5     2e-5             2e-5
    F(2×2, 5×5)    2e-5     2e-5             8e-5
    F(3×3, 5×5)    2e-5     2e-5             6e-5

each about three times the largest error seen over three draws at -march native, x86-64-v3
and x86-64 (tests/runtime/test_cpu_backend.py::test_winograd_error_against_float64 holds
them). A weight gradient sums over N·H·W tiles, so it carries the most.
"""
from __future__ import annotations

from fractions import Fraction
from functools import cache

# (m, r) -> bounds on (output, input gradient, weight gradient) errors; see the module doc
ERROR_BOUND = {(2, 3): (2e-6, 2e-6, 2e-6), (4, 3): (2e-5, 2e-5, 2e-5),
               (2, 5): (2e-5, 2e-5, 8e-5), (3, 5): (2e-5, 2e-5, 6e-5)}

POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2),
          Fraction(1, 2), Fraction(-1, 2))


@cache
def matrices(m: int, r: int) -> tuple[tuple, tuple, tuple]:
    """(Aᵀ m×α, G α×r, Bᵀ α×α) of F(m, r) as tuples of Fraction rows.

    ValueError if α − 1 exceeds the interpolation points kept here (α ≤ 8)."""
    a = m + r - 1
    if m < 1 or r < 1 or a - 1 > len(POINTS):
        raise ValueError(f"F({m}, {r}): needs {a - 1} finite points, have {len(POINTS)}")
    p = POINTS[:a - 1]
    at = [[p[j] ** i for j in range(a - 1)] + [Fraction(int(i == m - 1))] for i in range(m)]
    f = [_prod(p[j] - p[k] for k in range(a - 1) if k != j) for j in range(a - 1)]
    g = [[p[j] ** k / f[j] for k in range(r)] for j in range(a - 1)] + \
        [[Fraction(int(k == r - 1)) for k in range(r)]]
    # Bᵀ, column by column: Σ_j Aᵀ[i][j]·G[j][k]·Bᵀ[j][l] = [l == i + k] for all i < m, k < r
    rows = [[at[i][j] * g[j][k] for j in range(a)] for i in range(m) for k in range(r)]
    bt_cols = []
    for col in range(a):
        rhs = [Fraction(int(col == i + k)) for i in range(m) for k in range(r)]
        bt_cols.append(_solve(rows, rhs))
    bt = [[bt_cols[col][j] for col in range(a)] for j in range(a)]
    return tuple(map(tuple, at)), tuple(map(tuple, g)), tuple(map(tuple, bt))


def _prod(xs) -> Fraction:
    out = Fraction(1)
    for x in xs:
        out *= x
    return out


def _solve(rows: list[list[Fraction]], rhs: list[Fraction]) -> list[Fraction]:
    """The exact solution of an over-determined consistent system (Gauss-Jordan over the
    rationals). ArithmeticError if it has none or more than one."""
    n = len(rows[0])
    aug = [list(r) + [b] for r, b in zip(rows, rhs)]
    piv_cols, row = [], 0
    for col in range(n):
        pr = next((i for i in range(row, len(aug)) if aug[i][col] != 0), None)
        if pr is None:
            raise ArithmeticError("Winograd: the transform is not determined by these points")
        aug[row], aug[pr] = aug[pr], aug[row]
        inv = 1 / aug[row][col]
        aug[row] = [v * inv for v in aug[row]]
        for i in range(len(aug)):
            if i != row and aug[i][col] != 0:
                f = aug[i][col]
                aug[i] = [v - f * w for v, w in zip(aug[i], aug[row])]
        piv_cols.append(col)
        row += 1
    if any(aug[i][n] != 0 for i in range(row, len(aug))):
        raise ArithmeticError("Winograd: no transform satisfies the identity")
    return [aug[i][n] for i in range(n)]


def _lit(v: Fraction) -> str:
    return f"{float(v)!r}f"


def _lincomb(coeffs, names) -> str:
    """Σ coeffs[k]·names[k] as a C expression, zero terms dropped, ±1 as plain adds."""
    out = ""
    for c, x in zip(coeffs, names):
        if c == 0:
            continue
        if c == 1:
            term = f"+ {x}"
        elif c == -1:
            term = f"- {x}"
        elif c < 0:
            term = f"- {_lit(-c)} * {x}"
        else:
            term = f"+ {_lit(c)} * {x}"
        out += (" " if out else "") + term
    if not out:
        return "0.0f"
    return out[2:] if out.startswith("+ ") else "-" + out[2:]


def _transform(L, R, src, dst, ind: str = "        ") -> str:
    """Straight-line C for dst(i, j) = Σ_k Σ_l L[i][k]·src(k, l)·R[j][l]: the loads
    `const float s_k_l = src(k, l);`, the row pass into t_i_l, then dst(i, j, expr) for each
    output. `src(k, l)` and `dst(i, j, e)` are Python callables returning C text."""
    p, q = len(L[0]), len(R[0])
    lines = [f"const float s{k}_{l} = {src(k, l)};" for k in range(p) for l in range(q)]
    for i in range(len(L)):
        for l in range(q):
            e = _lincomb([L[i][k] for k in range(p)], [f"s{k}_{l}" for k in range(p)])
            lines.append(f"const float t{i}_{l} = {e};")
    for i in range(len(L)):
        for j in range(len(R)):
            e = _lincomb([R[j][l] for l in range(q)], [f"t{i}_{l}" for l in range(q)])
            lines.append(dst(i, j, e))
    return "".join(ind + x + "\n" for x in lines)


def _tr(mat):
    return [list(r) for r in zip(*mat)]


# Tiles per vector block: the transforms run over TB tiles at once, so that each of their
# straight-line statements is one vector instruction over tiles (contiguous in T).
TB = 32
# The loop over one image's TT tiles in blocks of TB (nt in the block), and tile t0 + u's
# position (ty, tx), as every tile kernel below writes them
BLOCKS = ("for (long t0 = 0; t0 < TT; t0 += TB) {\n"
          "                const long nt = TT - t0 < TB ? TT - t0 : TB;")
TILE_AT = "const long ty = (t0 + u) / TW, tx = (t0 + u) % TW;"


def kernel_templates(m: int, r: int) -> list[tuple[str, str, str]]:
    """The six transform kernels of F(m×m, r×r) as (name, argument types, C-dialect template),
    suffixed _<m>x<r>. Layouts: x, y, dx NCHW; w (O, C, r, r); U (α², O, C); V (α², C, T);
    M (α², O, T) with plane stride `pm` (so a part can own rows of a group's M);
    t = (n·TH + ty)·TW + tx. Each is straight-line code over a block of TB tiles (channels
    for the filter transforms), zero coefficients dropped."""
    at, g, bt = matrices(m, r)
    a = m + r - 1
    A = _tr(at)                       # α×m
    B = _tr(bt)
    s = f"_{m}x{r}"
    out = []
    filt = _transform(g, g, lambda k, l: f"gp[{k * r + l}]",
                      lambda i, j, e: f"U[((long)({i * a + j}) * O + o) * C + c] = {e};",
                      "            ")
    out.append((f"wino_filter{s}", "f* f* l l", f"""
$kernel wino_filter{s}(const float *$restrict w, float *$restrict U, long O, long C)
{{
    $parallel if (O * C * {a * a} > SERIAL)
    for (long o = 0; o < O; ++o)
        #pragma omp simd
        for (long c = 0; c < C; ++c) {{
            const float *gp = w + (o * C + c) * {r * r};
{filt}        }}
}}
"""))
    dfilt = _transform(_tr(g), _tr(g), lambda k, l: f"dU[((long)({k * a + l}) * O + o) * C + c]",
                       lambda i, j, e: f"gp[{i * r + j}] = {e};", "            ")
    out.append((f"wino_dfilter{s}", "f* f* l l", f"""
$kernel wino_dfilter{s}(const float *$restrict dU, float *$restrict dw, long O, long C)
{{
    $parallel if (O * C * {a * a} > SERIAL)
    for (long o = 0; o < O; ++o)
        #pragma omp simd
        for (long c = 0; c < C; ++c) {{
            float *gp = dw + (o * C + c) * {r * r};
{dfilt}        }}
}}
"""))
    # V[ξ][c][t] = (Bᵀ d B)[ξ], d the α×α input tile at (m·ty − P, m·tx − P), zero outside
    vin = _transform(bt, bt, lambda k, l: f"d[{k * a + l}][u]",
                     lambda i, j, e: f"vp[{i * a + j} * CT + u] = {e};", "                ")
    out.append((f"wino_input{s}", "f* f* l l l l l l l", f"""
$kernel wino_input{s}(const float *$restrict x, float *$restrict V, long N, long C, long H,
                     long W, long P, long TH, long TW)
{{
    const long T = N * TH * TW, TT = TH * TW, CT = C * T;
    $parallel collapse(2) if (N * C * H * W > SERIAL)
    for (long c = 0; c < C; ++c)
        for (long n = 0; n < N; ++n) {{
            const float *xp = x + (n * C + c) * H * W;
            float d[{a * a}][TB];
            {BLOCKS}
                for (long u = 0; u < nt; ++u) {{
                    {TILE_AT}
                    const long y0 = ty * {m} - P, x0 = tx * {m} - P;
                    if (y0 >= 0 && x0 >= 0 && y0 + {a} <= H && x0 + {a} <= W) {{
                        for (int i = 0; i < {a}; ++i)
                            for (int j = 0; j < {a}; ++j)
                                d[i * {a} + j][u] = xp[(y0 + i) * W + x0 + j];
                        continue;
                    }}
                    for (int i = 0; i < {a}; ++i)
                        for (int j = 0; j < {a}; ++j) {{
                            const long iy = y0 + i, ix = x0 + j;
                            d[i * {a} + j][u] = iy >= 0 && iy < H && ix >= 0 && ix < W ?
                                                xp[iy * W + ix] : 0.0f;
                        }}
                }}
                float *vp = V + c * T + n * TT + t0;
                #pragma omp simd
                for (long u = 0; u < nt; ++u) {{
{vin}                }}
            }}
        }}
}}
"""))
    # y = act(Aᵀ M A + b), the m×m tile clipped to Ho×Wo; M[ξ][o][t] at ξ·pm + o·T + t
    vout = _transform(at, at, lambda k, l: f"mp[{k * a + l} * pm + u]",
                      lambda i, j, e: f"q[{i * m + j}][u] = {e};", "                ")
    out.append((f"wino_output{s}", "f* f* f* l l l l l l l l", f"""
$kernel wino_output{s}(const float *$restrict M, const float *$restrict b, float *$restrict y,
                      long N, long O, long Ho, long Wo, long TH, long TW, long pm, long relu)
{{
    const long T = N * TH * TW, TT = TH * TW;
    /* o outer, n inner: each plane of M is then read in one sequential run per o */
    $parallel collapse(2) if (N * O * Ho * Wo > SERIAL)
    for (long o = 0; o < O; ++o)
        for (long n = 0; n < N; ++n) {{
            float *yp = y + (n * O + o) * Ho * Wo;
            const float bo = b[o];
            float q[{m * m}][TB];
            {BLOCKS}
                const float *mp = M + o * T + n * TT + t0;
                #pragma omp simd
                for (long u = 0; u < nt; ++u) {{
{vout}                }}
                for (long u = 0; u < nt; ++u) {{
                    {TILE_AT}
                    for (int i = 0; i < {m}; ++i) {{
                        const long oy = ty * {m} + i;
                        if (oy >= Ho) break;
                        for (int j = 0; j < {m}; ++j) {{
                            const long ox = tx * {m} + j;
                            if (ox >= Wo) break;
                            const float v = q[i * {m} + j][u] + bo;
                            yp[oy * Wo + ox] = relu && v < 0.0f ? 0.0f : v;
                        }}
                    }}
                }}
            }}
        }}
}}
"""))
    # dM = A·g·Aᵀ per tile, g = dy·[y > 0] (zero outside Ho×Wo); db[o] = Σ g, in double
    vdout = _transform(A, A, lambda k, l: f"g[{k * m + l}][u]",
                       lambda i, j, e: f"mp[{i * a + j} * pm + u] = {e};", "                ")
    out.append((f"wino_dout{s}", "f* f* f* f* l l l l l l", f"""
$kernel wino_dout{s}(const float *$restrict dy, const float *$restrict y, float *$restrict dM,
                    float *$restrict db, long N, long O, long Ho, long Wo, long TH, long TW)
{{
    const long T = N * TH * TW, TT = TH * TW, pm = O * T;
    $parallel if (N * O * Ho * Wo > SERIAL)
    for (long o = 0; o < O; ++o) {{
        double s = 0.0;
        for (long n = 0; n < N; ++n) {{
            const float *gp = dy + (n * O + o) * Ho * Wo;
            const float *yp = y ? y + (n * O + o) * Ho * Wo : 0;
            float part = 0.0f;
            for (long i = 0; i < Ho * Wo; ++i)
                part += yp && !(yp[i] > 0.0f) ? 0.0f : gp[i];
            s += part;
            float g[{m * m}][TB];
            {BLOCKS}
                for (long u = 0; u < nt; ++u) {{
                    {TILE_AT}
                    for (int i = 0; i < {m}; ++i)
                        for (int j = 0; j < {m}; ++j) {{
                            const long oy = ty * {m} + i, ox = tx * {m} + j;
                            float v = 0.0f;
                            if (oy < Ho && ox < Wo) {{
                                v = gp[oy * Wo + ox];
                                if (yp && !(yp[oy * Wo + ox] > 0.0f)) v = 0.0f;
                            }}
                            g[i * {m} + j][u] = v;
                        }}
                }}
                float *mp = dM + o * T + n * TT + t0;
                #pragma omp simd
                for (long u = 0; u < nt; ++u) {{
{vdout}                }}
            }}
        }}
        db[o] = (float)s;
    }}
}}
"""))
    # dx: B dV Bᵀ per tile, added into the α×α window (tiles overlap; one plane per thread)
    vdin = _transform(B, B, lambda k, l: f"vp[{k * a + l} * CT + u]",
                      lambda i, j, e: f"d[{i * a + j}][u] = {e};", "                ")
    out.append((f"wino_din{s}", "f* f* l l l l l l l", f"""
$kernel wino_din{s}(const float *$restrict dV, float *$restrict dx, long N, long C, long H,
                   long W, long P, long TH, long TW)
{{
    const long T = N * TH * TW, TT = TH * TW, CT = C * T;
    /* c outer, n inner: each plane of dV is then read in one sequential run per c */
    $parallel collapse(2) if (N * C * H * W > SERIAL)
    for (long c = 0; c < C; ++c)
        for (long n = 0; n < N; ++n) {{
            float *xp = dx + (n * C + c) * H * W;
            memset(xp, 0, H * W * sizeof(float));
            float d[{a * a}][TB];
            {BLOCKS}
                const float *vp = dV + c * T + n * TT + t0;
                #pragma omp simd
                for (long u = 0; u < nt; ++u) {{
{vdin}                }}
                for (long u = 0; u < nt; ++u) {{
                    {TILE_AT}
                    const long y0 = ty * {m} - P, x0 = tx * {m} - P;
                    for (int i = 0; i < {a}; ++i) {{
                        const long iy = y0 + i;
                        if (iy < 0 || iy >= H) continue;
                        for (int j = 0; j < {a}; ++j) {{
                            const long ix = x0 + j;
                            if (ix >= 0 && ix < W) xp[iy * W + ix] += d[i * {a} + j][u];
                        }}
                    }}
                }}
            }}
        }}
}}
"""))
    return out
