"""Winograd's F(m×m, r×r) for stride-1 convs on a GPU (CUDA C and OpenCL C from one template):
the forward, the data gradient and the weight gradient as four launches each, the GEMMs
between the transforms being the blocked GEMM family of kernel/gemm.py, batched over the α²
transformed elements.

A stride-1 correlation of an r×r filter g with an α×α input tile d (α = m + r − 1) gives the
m×m output tile Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A (Lavin & Gray 2016, §4; the matrices are
codegen/winograd.py's, exact rationals, handed in through `WinogradTiles`). So a conv with
O outputs, C inputs and T = N·⌈Ho/m⌉·⌈Wo/m⌉ output tiles is

    U[ξ](O, C) = (G g Gᵀ)[ξ]           wino_filter: one work-item per (o, c)
    V[ξ](C, T) = (Bᵀ d B)[ξ]           wino_input:  one work-item per (c, tile)
    M[ξ](O, T) = U[ξ] @ V[ξ]           α² GEMMs, one launch (grid z = ξ)
    y = Aᵀ M A (+ bias, ReLU)          wino_output: one work-item per (o, tile)

α²·O·C·T multiplies in the GEMMs against the direct conv's m²·r²·O·C·T (2.25× fewer for
F(2×2, 3×3), 4× for F(4×4, 3×3), before the ragged tiles at the edges). The data gradient
of a stride-1 conv with pad P is the same computation on dy, padded by r − 1 − P, with the
filter flipped and its two channel axes swapped: dx[c] = Σ_o flip(w[o, c]) ⋆ dy[o]. The
weight gradient runs the adjoints of these steps ("the weight gradient" below).

Layouts: x, y, dy, dx (C, N, H, W); w (O, C, r, r); U (α², M, K), V (α², K, T), M (α², M, T)
with M, K the GEMM's rows and reduction (O and C forward, C and O for the data gradient);
tile t = (img·TH + ty)·TW + tx. Error against a float64 conv: codegen/winograd.py's
ERROR_BOUND (the same transforms in the same float32 arithmetic, the products summed in
another order); tests/kernel/test_winograd_gpu.py holds them.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from . import Call, Kernel, ceil_div, elementwise_launch, params
from .gemm import (
    _BYTES_PER_CLK_PER_SM,
    TARGET_WAVES,
    GemmTiles,
    Operand,
    _estimate_cycles,
    choose_gemm,
    gemm_calls,
    waves,
)


@dataclass(frozen=True)
class WinogradTiles:
    """The choice to run one conv direction ("fwd", "bwd_data", "bwd_weight") as Winograd's
    F(m×m, r×r):
    its matrices (Aᵀ m×α, G α×r, Bᵀ α×α, rows of Fractions, from codegen/winograd.py's
    `matrices`) and the tiles of its batched GEMM (None: chosen by `choose_gemm`). Stands in
    a PartContext's `tiles` where a GemmTiles would."""

    m: int
    r: int
    at: tuple
    g: tuple
    bt: tuple
    gemm: GemmTiles | None = None
    slices: int = 1            # the weight gradient: its sum over tiles cut into this many

    @property
    def alpha(self) -> int:
        return self.m + self.r - 1


def _lit(v: Fraction) -> str:
    return f"{float(v)!r}f"


def _lincomb(coeffs, names) -> str:
    """Σ coeffs[k]·names[k] as C, zero terms dropped, ±1 as plain adds and subtracts."""
    terms = []
    for c, x in zip(coeffs, names):
        if c == 0:
            continue
        sign = "-" if c < 0 else "+"
        terms.append((sign, x if abs(c) == 1 else f"{_lit(abs(c))} * {x}"))
    if not terms:
        return "0.0f"
    head = ("-" if terms[0][0] == "-" else "") + terms[0][1]
    return " ".join([head] + [f"{s} {x}" for s, x in terms[1:]])


def straight_line(L, R, src, dst) -> str:
    """C statements for dst(i, j) = Σ_k Σ_l L[i][k]·src(k, l)·R[j][l] (L, R rows of
    Fractions): the loads into s_k_l, the row pass into t_i_l, then one dst(i, j, expr) per
    output. `src(k, l)` and `dst(i, j, e)` return C text."""
    p, q = len(L[0]), len(R[0])
    lines = [f"const float s{k}_{l} = {src(k, l)};" for k in range(p) for l in range(q)]
    lines += [f"const float t{i}_{l} = "
              f"{_lincomb([L[i][k] for k in range(p)], [f's{k}_{l}' for k in range(p)])};"
              for i in range(len(L)) for l in range(q)]
    lines += [dst(i, j, _lincomb([R[j][l] for l in range(q)], [f"t{i}_{l}" for l in range(q)]))
              for i in range(len(L)) for j in range(len(R))]
    return "\n    ".join(lines)


_FILTER = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${MO} * ${KC})
        return;
    const int i = e / ${KC}, j = e % ${KC};
    @BODY@
}
"""

_INPUT = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${KC} * ${T})
        return;
    const int c = e / ${T}, t = e % ${T};
    const int img = t / (${TH} * ${TW}), ty = (t / ${TW}) % ${TH}, tx = t % ${TW};
    const int y0 = ty * ${MT} - ${P}, x0 = tx * ${MT} - ${P};
    const int base = (c * ${NB} + img) * (${H} * ${W});
    @BODY@
}
"""

_OUTPUT = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${MO} * ${T})
        return;
    const int o = e / ${T}, t = e % ${T};
    const int img = t / (${TH} * ${TW}), ty = (t / ${TW}) % ${TH}, tx = t % ${TW};
    const int base = (o * ${NB} + img) * (${OH} * ${OW}) + ty * ${MT} * ${OW} + tx * ${MT};
    @BODY@
}
"""


@dataclass(frozen=True)
class WinogradConv:
    """One stride-1 conv direction as Winograd: GEMM rows MO (outputs), reduction KC
    (inputs), an NB×KC×H×W source padded by P, an NB×MO×OH×OW result."""

    MO: int
    KC: int
    NB: int
    H: int
    W: int
    OH: int
    OW: int
    P: int

    def tiles_hw(self, m: int) -> tuple[int, int]:
        return ceil_div(self.OH, m), ceil_div(self.OW, m)

    def consts(self, m: int) -> dict:
        th, tw = self.tiles_hw(m)
        return dict(MO=self.MO, KC=self.KC, NB=self.NB, H=self.H, W=self.W, OH=self.OH,
                    OW=self.OW, P=self.P, MT=m, TH=th, TW=tw, T=self.NB * th * tw)

    def scratch(self, m: int, r: int, tag: str = "wino") -> dict:
        """Floats of the three scratch buffers U, V, M (roles `tag`_u, _v, _m)."""
        a2 = (m + r - 1) ** 2
        t = self.consts(m)["T"]
        return {f"{tag}_u": a2 * self.MO * self.KC, f"{tag}_v": a2 * self.KC * t,
                f"{tag}_m": a2 * self.MO * t}


def filter_kernel(name: str, conv: WinogradConv, wt: WinogradTiles, flip: bool,
                  layer: str = "") -> Kernel:
    """U[ξ][i][j] = (G g Gᵀ)[ξ] with g = w[i, j] (forward: i = o, j = c) or, `flip`,
    g = w[j, i] rotated by 180° (the data gradient: i = c, j = o)."""
    r, a = wt.r, wt.alpha
    if flip:
        def src(k, l):
            return f"w[(j * ${{MO}} + i) * {r * r} + {(r - 1 - k) * r + (r - 1 - l)}]"
    else:
        def src(k, l):
            return f"w[(i * ${{KC}} + j) * {r * r} + {k * r + l}]"
    body = straight_line(wt.g, wt.g, src,
                         lambda i, j, e: f"wino_u[({i * a + j} * ${{MO}} + i) * ${{KC}} + j] = {e};")
    gs, ls = elementwise_launch(conv.MO * conv.KC)
    return Kernel(name=name, template=_FILTER.replace("@BODY@", body),
                  params=params("in w", "out wino_u"), consts=conv.consts(wt.m), global_size=gs,
                  local_size=ls, layer=layer, flops=conv.MO * conv.KC * 2 * (a * r * r + a * a * r),
                  doc=f"Winograd F({wt.m}x{wt.m},{r}x{r}) filter transform: wino_u[xi, i, j] = "
                      f"(G g G^T)[xi], g = {'flip(w[j, i])' if flip else 'w[i, j]'}\n"
                      f"launch: one work-item per (i, j) of {conv.MO}x{conv.KC}")


def input_kernel(name: str, src_role: str, conv: WinogradConv, wt: WinogradTiles,
                 layer: str = "") -> Kernel:
    """V[ξ][c][t] = (Bᵀ d B)[ξ], d the α×α tile of the padded source at (ty·m − P, tx·m − P)."""
    a, c = wt.alpha, conv.consts(wt.m)

    def src(k, l):
        inside = " && ".join(x for x in (
            f"y0 >= {-k}" if k < conv.P else "", f"y0 < {conv.H - k}",
            f"x0 >= {-l}" if l < conv.P else "", f"x0 < {conv.W - l}") if x)
        return f"({inside}) ? {src_role}[base + (y0 + {k}) * ${{W}} + x0 + {l}] : 0.0f"
    body = straight_line(wt.bt, wt.bt, src,
                         lambda i, j, e: f"wino_v[({i * a + j} * ${{KC}} + c) * ${{T}} + t] = {e};")
    gs, ls = elementwise_launch(conv.KC * c["T"])
    return Kernel(name=name, template=_INPUT.replace("@BODY@", body),
                  params=params(f"in {src_role}", "out wino_v"), consts=c, global_size=gs,
                  local_size=ls, layer=layer, flops=conv.KC * c["T"] * 4 * a * a * a,
                  doc=f"Winograd F({wt.m}x{wt.m},{wt.r}x{wt.r}) input transform: wino_v[xi, c, t] "
                      f"= (B^T d B)[xi], d = {src_role}[c, img, ty*{wt.m} - {conv.P} + "
                      f"(0..{a - 1}), tx*{wt.m} - {conv.P} + (0..{a - 1})] (zero outside)\n"
                      f"launch: one work-item per (c, tile) of {conv.KC}x{c['T']}")


def output_kernel(name: str, dst_role: str, conv: WinogradConv, wt: WinogradTiles,
                  bias: bool, relu: bool, layer: str = "") -> Kernel:
    """dst[o, img, ty·m + i, tx·m + j] = (Aᵀ M A)[i][j] (+ b[o], then ReLU) inside the
    output."""
    a, m, c = wt.alpha, wt.m, conv.consts(wt.m)
    post = (" + b[o]" if bias else "")

    def dst(i, j, e):
        v = f"$fmax({e}{post}, 0.0f)" if relu else f"{e}{post}"
        guard = " && ".join(x for x in (f"ty * {m} + {i} < ${{OH}}" if conv.OH % m else "",
                                        f"tx * {m} + {j} < ${{OW}}" if conv.OW % m else "") if x)
        store = f"{dst_role}[base + {i * conv.OW + j}] = {v};"
        return f"if ({guard}) {store}" if guard else store
    body = straight_line(wt.at, wt.at,
                         lambda k, l: f"wino_m[({k * a + l} * ${{MO}} + o) * ${{T}} + t]", dst)
    gs, ls = elementwise_launch(conv.MO * c["T"])
    reads = ("in wino_m", "in b") if bias else ("in wino_m",)
    return Kernel(name=name, template=_OUTPUT.replace("@BODY@", body),
                  params=params(*reads, f"out {dst_role}"), consts=c, global_size=gs,
                  local_size=ls, layer=layer, flops=conv.MO * c["T"] * 2 * (m * a * a + m * m * a),
                  doc=f"Winograd F({m}x{m},{wt.r}x{wt.r}) output transform: "
                      f"{dst_role}[o, img, ty*{m} + i, tx*{m} + j] = (A^T M A)[i, j]"
                      f"{' + b[o]' if bias else ''}{', then ReLU' if relu else ''}\n"
                      f"launch: one work-item per (o, tile) of {conv.MO}x{c['T']}")


# the batched GEMM's operands: A = U[z] (M × K, contiguous along k), B = V[z] (K × N,
# contiguous along n), each a gather only because its batch offset depends on z
_U = Operand(hoist="h0 = (z * ${M} + m) * ${K};", load="v = wino_u[h0 + k];", fast="k")
_V = Operand(hoist="h0 = z * (${K} * ${N}) + n;", load="v = wino_v[h0 + k * ${N}];", fast="outer")


def winograd_calls(prefix: str, conv: WinogradConv, wt: WinogradTiles, *, src: str, dst: str,
                   flip: bool, bias: bool = False, relu: bool = False, layer: str = "",
                   sm_count: int = 132, what: str = "", tag: str = "wino") -> list[Call]:
    """The four launches of one conv direction (module doc): filter and input transforms, the
    α² GEMMs, the output transform. Buffer roles: w, `src`, `tag`_u, _v, _m (sized by
    `WinogradConv.scratch`), b (with `bias`), `dst`."""
    a2 = wt.alpha ** 2
    t = conv.consts(wt.m)["T"]
    gemm = gemm_calls(f"{prefix}_gemm", conv.MO, t, conv.KC, a=_U, b=_V,
                      epilogue="wino_m[(z * ${M} + m) * ${N} + n] = v;", reads=("wino_u", "wino_v"),
                      writes=("out wino_m",), scratch="wino_m", tiles=wt.gemm, layer=layer,
                      batches=a2, split_ok=False, sm_count=sm_count,
                      doc=f"{what}Winograd F({wt.m}x{wt.m},{wt.r}x{wt.r}): wino_m[xi] = wino_u[xi] @ "
                          f"wino_v[xi] for each of the {a2} transformed elements xi")
    out = [Call(filter_kernel(f"{prefix}_wfilter", conv, wt, flip, layer), ("w", "wino_u")),
           Call(input_kernel(f"{prefix}_winput", src, conv, wt, layer), (src, "wino_v"))]
    out += gemm
    k = output_kernel(f"{prefix}_woutput", dst, conv, wt, bias, relu, layer)
    out.append(Call(k, ("wino_m", "b", dst) if bias else ("wino_m", dst)))
    roles = {f"wino_{x}": f"{tag}_{x}" for x in "uvm"}
    return [Call(c.kernel, tuple(roles.get(a, a) for a in c.args)) for c in out]


# -- when it wins --------------------------------------------------------------------------------
LAUNCH_CYCLES = 2e-6 * 1.98e9      # a launch's overhead (bench/sass.py's LAUNCH_US) in SM clocks


def direct_cycles(M: int, N: int, K: int, sm_count: int = 132) -> float:
    """`choose_gemm`'s estimate of the implicit GEMM this direction would otherwise be."""
    t, s = choose_gemm(M, N, K, sm_count=sm_count)
    return _estimate_cycles(t, M, N, K, 1, s, sm_count) + LAUNCH_CYCLES


def winograd_cycles(conv: WinogradConv, m: int, r: int, sm_count: int = 132) -> float:
    """The same estimate of the four Winograd launches: the batched GEMM as `choose_gemm`
    ranks it, each transform its compulsory traffic (read once, written once) at HBM rate."""
    a2 = (m + r - 1) ** 2
    c = conv.consts(m)
    t, _ = choose_gemm(conv.MO, c["T"], conv.KC, batches=a2, split_ok=False, sm_count=sm_count)
    gemm = _estimate_cycles(t, conv.MO, c["T"], conv.KC, a2, 1, sm_count)
    s = conv.scratch(m, r)
    floats = (conv.MO * conv.KC * r * r + s["wino_u"]                       # filter
              + conv.KC * conv.NB * conv.H * conv.W + s["wino_v"]           # input
              + s["wino_m"] + conv.MO * conv.NB * conv.OH * conv.OW)        # output
    return gemm + 4 * floats / (_BYTES_PER_CLK_PER_SM * sm_count) + 4 * LAUNCH_CYCLES


def choose_winograd(conv: WinogradConv, r: int, candidates: tuple[int, ...],
                    sm_count: int = 132) -> int | None:
    """The output tile m of the F(m×m, r×r) among `candidates` with the fewest estimated
    cycles, if fewer than the direct GEMM's; else None."""
    direct = direct_cycles(conv.MO, conv.NB * conv.OH * conv.OW, conv.KC * r * r, sm_count)
    best = min(candidates, key=lambda m: winograd_cycles(conv, m, r, sm_count), default=None)
    if best is None or winograd_cycles(conv, best, r, sm_count) >= direct:
        return None
    return best


def conv_direction(ctx, direction: str) -> WinogradConv | None:
    """The Winograd geometry of a conv part's "fwd", "bwd_data" or "bwd_weight" (the forward's
    geometry; a PartContext of ops/conv),
    None where Winograd does not apply: stride > 1, a pad of r or more, no input gradient."""
    a = ctx.attrs
    r, p = a["size"], a["pad"]
    if a["stride"] != 1 or p >= r or (direction == "bwd_data" and not ctx.input_grad):
        return None
    cin, h, w = ctx.in_shape
    o, oh, ow = ctx.out_shape
    if direction in ("fwd", "bwd_weight"):
        return WinogradConv(o, cin, ctx.batch, h, w, oh, ow, p)
    if direction == "bwd_data":
        return WinogradConv(cin, o, ctx.batch, oh, ow, h, w, r - 1 - p)
    return None


# -- the weight gradient ------------------------------------------------------------------------
# The adjoint of each forward step (codegen/winograd.py's module doc), with the forward's
# geometry (MO = O, KC = C):
#     dM[ξ](O, T) = (A dY Aᵀ)[ξ] per output tile      wino_dout: one work-item per (o, tile)
#     V[ξ](C, T)  = (Bᵀ d B)[ξ], as the forward's       wino_input, recomputed
#     dU[ξ, s](O, C) = dM[ξ][:, slice s] @ V[ξ][:, slice s]ᵀ
#                                                     α²·S GEMMs, one launch (z = ξ·S + s)
#     dw[o, c] = Gᵀ (Σ_s dU[ξ, s]) G                    wino_dfilter: one work-item per (o, c)
# The sum over T = N·tiles is cut into S slices so that α²·S·(O/BM)·(C/BN) blocks fill the
# GPU (a batched GEMM is never split along K; the slices are batches), and the slices are
# added in order, so the result does not depend on the schedule.

_DOUT = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${MO} * ${T})
        return;
    const int o = e / ${T}, t = e % ${T};
    const int img = t / (${TH} * ${TW}), ty = (t / ${TW}) % ${TH}, tx = t % ${TW};
    const int base = (o * ${NB} + img) * (${OH} * ${OW}) + ty * ${MT} * ${OW} + tx * ${MT};
    @BODY@
}
"""

_DFILTER = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${MO} * ${KC})
        return;
    const int o = e / ${KC}, c = e % ${KC};
    float u[${A2}];
    for (int q = 0; q < ${A2}; ++q) {
        float s = 0.0f;
        for (int sl = 0; sl < ${NS}; ++sl)
            s += wino_u[((q * ${NS} + sl) * ${MO} + o) * ${KC} + c];
        u[q] = s;
    }
    @BODY@
}
"""


def _tr(mat):
    return tuple(zip(*mat))


def dout_kernel(name: str, conv: WinogradConv, wt: WinogradTiles, layer: str = "") -> Kernel:
    """dM[ξ][o][t] = (A dY Aᵀ)[ξ], dY the m×m tile of dy at (ty·m, tx·m), zero outside."""
    a, m, c = wt.alpha, wt.m, conv.consts(wt.m)

    def src(k, l):
        guard = " && ".join(x for x in (f"ty * {m} + {k} < ${{OH}}" if conv.OH % m else "",
                                        f"tx * {m} + {l} < ${{OW}}" if conv.OW % m else "") if x)
        load = f"dy[base + {k * conv.OW + l}]"
        return f"({guard}) ? {load} : 0.0f" if guard else load
    body = straight_line(_tr(wt.at), _tr(wt.at), src,
                         lambda i, j, e: f"wino_m[({i * a + j} * ${{MO}} + o) * ${{T}} + t] = {e};")
    gs, ls = elementwise_launch(conv.MO * c["T"])
    return Kernel(name=name, template=_DOUT.replace("@BODY@", body),
                  params=params("in dy", "out wino_m"), consts=c, global_size=gs,
                  local_size=ls, layer=layer, flops=conv.MO * c["T"] * 2 * (a * m * m + a * a * m),
                  doc=f"Winograd F({m}x{m},{wt.r}x{wt.r}) output-gradient transform: "
                      f"wino_m[xi, o, t] = (A dY A^T)[xi], dY = dy[o, img, ty*{m} + (0..{m - 1}), "
                      f"tx*{m} + (0..{m - 1})] (zero outside)\n"
                      f"launch: one work-item per (o, tile) of {conv.MO}x{c['T']}")


def dfilter_kernel(name: str, conv: WinogradConv, wt: WinogradTiles, layer: str = "") -> Kernel:
    """dw[o, c] = Gᵀ (Σ_s dU[ξ, s][o][c]) G, the slices added in order."""
    a, r = wt.alpha, wt.r
    body = straight_line(_tr(wt.g), _tr(wt.g), lambda k, l: f"u[{k * a + l}]",
                         lambda i, j, e: f"dw[e * {r * r} + {i * r + j}] = {e};")
    gs, ls = elementwise_launch(conv.MO * conv.KC)
    c = dict(conv.consts(wt.m), A2=a * a, NS=wt.slices)
    return Kernel(name=name, template=_DFILTER.replace("@BODY@", body),
                  params=params("in wino_u", "out dw"), consts=c, global_size=gs,
                  local_size=ls, layer=layer,
                  flops=conv.MO * conv.KC * (a * a * wt.slices + 2 * (r * a * a + r * r * a)),
                  doc=f"Winograd F({wt.m}x{wt.m},{r}x{r}) filter-gradient transform: dw[o, c] "
                      f"= G^T (sum over {wt.slices} slices of wino_u[xi, s, o, c]) G\n"
                      f"launch: one work-item per (o, c) of {conv.MO}x{conv.KC}")


def wgrad_slices(conv: WinogradConv, m: int, slices: int) -> tuple[int, int]:
    """(SL, S): tiles per slice, a multiple of 8 (the GEMMs' BK), and the slices that makes."""
    t = conv.consts(m)["T"]
    sl = ceil_div(ceil_div(t, slices), 8) * 8
    return sl, ceil_div(t, sl)


def wgrad_scratch(conv: WinogradConv, m: int, r: int, slices: int, tag: str) -> dict:
    """Floats of the weight gradient's dU (slices of it), V and dM (roles `tag`_u, _v, _m)."""
    out = conv.scratch(m, r, tag)
    out[f"{tag}_u"] *= slices
    return out


def wgrad_calls(prefix: str, conv: WinogradConv, wt: WinogradTiles, *, layer: str = "",
                sm_count: int = 132, what: str = "", tag: str = "wino") -> list[Call]:
    """The four launches of the weight gradient (above). Buffer roles: x, dy, dw and the
    scratch `tag`_u, _v, _m (`wgrad_scratch`)."""
    a2 = wt.alpha ** 2
    sl, ns = wgrad_slices(conv, wt.m, wt.slices)
    if ns != wt.slices:
        raise ValueError(f"{wt.slices} slices of {conv.consts(wt.m)['T']} tiles make {ns}; "
                         f"pass wgrad_slices' count")
    c = dict(TT=conv.consts(wt.m)["T"], SL=sl, NS=ns)
    # A(o, k) = dM[ξ][o][s·SL + k], B(k, c) = V[ξ][c][s·SL + k], both contiguous along k
    dm = Operand(hoist="h1 = (z % ${NS}) * ${SL}; h0 = ((z / ${NS}) * ${M} + m) * ${TT} + h1;",
                 load="if (h1 + k < ${TT}) v = wino_m[h0 + k];", fast="k")
    v = Operand(hoist="h1 = (z % ${NS}) * ${SL}; h0 = ((z / ${NS}) * ${N} + n) * ${TT} + h1;",
                load="if (h1 + k < ${TT}) v = wino_v[h0 + k];", fast="k")
    gemm = gemm_calls(f"{prefix}_gemm", conv.MO, conv.KC, sl, a=dm, b=v,
                      epilogue="wino_u[(z * ${M} + m) * ${N} + n] = v;",
                      reads=("wino_m", "wino_v"), writes=("out wino_u",), scratch="wino_u",
                      tiles=wt.gemm, layer=layer, batches=a2 * ns, split_ok=False,
                      sm_count=sm_count, consts=c,
                      doc=f"{what}Winograd F({wt.m}x{wt.m},{wt.r}x{wt.r}) weight gradient: "
                          f"wino_u[xi, s] = wino_m[xi][:, slice s] @ wino_v[xi][:, slice s]^T "
                          f"for the {a2} elements xi and {ns} slices s of {sl} tiles")
    out = [Call(input_kernel(f"{prefix}_winput", "x", conv, wt, layer), ("x", "wino_v")),
           Call(dout_kernel(f"{prefix}_wdout", conv, wt, layer), ("dy", "wino_m")),
           *gemm,
           Call(dfilter_kernel(f"{prefix}_wdfilter", conv, wt, layer), ("wino_u", "dw"))]
    roles = {f"wino_{x}": f"{tag}_{x}" for x in "uvm"}
    return [Call(k.kernel, tuple(roles.get(a, a) for a in k.args)) for k in out]


def wgrad_cycles(conv: WinogradConv, m: int, r: int, slices: int, sm_count: int = 132) -> float:
    """`winograd_cycles`' estimate for the weight gradient in `slices` slices."""
    a2 = (m + r - 1) ** 2
    sl, ns = wgrad_slices(conv, m, slices)
    t, _ = choose_gemm(conv.MO, conv.KC, sl, batches=a2 * ns, split_ok=False, sm_count=sm_count)
    gemm = _estimate_cycles(t, conv.MO, conv.KC, sl, a2 * ns, 1, sm_count)
    s = wgrad_scratch(conv, m, r, ns, "w")
    floats = (conv.KC * conv.NB * conv.H * conv.W + s["w_v"]                # input
              + conv.MO * conv.NB * conv.OH * conv.OW + s["w_m"]            # dout
              + s["w_u"] + conv.MO * conv.KC * r * r)                       # dfilter
    return gemm + 4 * floats / (_BYTES_PER_CLK_PER_SM * sm_count) + 4 * LAUNCH_CYCLES


WGRAD_SLICES = (1, 2, 4, 8, 16, 32, 64)


def choose_wgrad(conv: WinogradConv, r: int, candidates: tuple[int, ...],
                 sm_count: int = 132) -> tuple[int, int] | None:
    """(m, slices) of the weight gradient's F(m×m, r×r) with the fewest estimated cycles, if
    fewer than the implicit GEMM's (split along K as `choose_gemm` would); else None."""
    direct = direct_cycles(conv.MO, conv.KC * r * r, conv.NB * conv.OH * conv.OW, sm_count)
    opts = {(m, wgrad_slices(conv, m, s)[1]) for m in candidates for s in WGRAD_SLICES}

    def rank(o):            # choose_gemm's rule: prefer what fills TARGET_WAVES waves
        m, ns = o
        sl = wgrad_slices(conv, m, ns)[0]
        a2 = (m + r - 1) ** 2
        t, _ = choose_gemm(conv.MO, conv.KC, sl, batches=a2 * ns, split_ok=False,
                           sm_count=sm_count)
        blocks = ceil_div(conv.MO, t.BM) * ceil_div(conv.KC, t.BN) * a2 * ns
        filled = waves(blocks, t, sm_count) >= TARGET_WAVES
        return wgrad_cycles(conv, m, r, ns, sm_count) * (1.0 if filled else 1.5)
    best = min(opts, key=rank, default=None)
    if best is None or wgrad_cycles(conv, best[0], r, best[1], sm_count) >= direct:
        return None
    return best
