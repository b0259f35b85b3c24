"""The tiled GEMM skeleton that conv and fc kernels are made of.

C[m, n] = Σ_k A(m, k) · B(k, n) for m < M, n < N, k < K, where A and B are *load snippets*
(C statements that set `v` from `m, k` or `k, n`): an implicit GEMM reads im2col columns or
transposed weights straight from the activation buffers, and never materialises them.
The `epilogue` snippet sees `m, n, v` (the sum) and writes the result (bias, ReLU, store).

Launch: a 2-D grid of groups, one per BM x BN tile of C (group index 0 along N, 1 along M);
TX x TY = (BN/TN) x (BM/TM) work-items per group, each accumulating a TM x TN micro-tile in
registers. K is walked in BK-wide slabs staged in shared memory: each work-item loads its share
of the A (BM x BK) and B (BK x BN) slabs, a barrier, BK rank-1 updates, a barrier.
Tile sizes are parameters (`GemmTiles`), so a later tuning pass can change them per layer.
`batches` > 1 launches that many independent GEMMs of the same sizes along grid dimension 2;
the snippets see their index as `z` (the conv data gradient's stride phases).

Split-K (`splits` > 1, instead of batches): when M x N has few tiles but K is long (the conv
weight gradient: K = images x pixels), grid dimension 2 cuts K into `splits` slices of KS
(a multiple of BK); group z sums k in [z·KS, min(K, (z+1)·KS)) and its epilogue stores that
partial sum at slice z of a scratch buffer, (splits, M, N); `split_k_reduce_kernel` then adds
the slices in order. No atomics, and the result does not depend on the schedule.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from . import Kernel, Param, ceil_div, elementwise_launch, params


@dataclass(frozen=True)
class GemmTiles:
    """Tile sizes, in the usual names: each work-group (CUDA block) computes a BM x BN tile of
    C, walking K in BK-deep slabs; each of its work-items (threads) a TM x TN tile of that, in
    registers. So a group has (BM/TM) x (BN/TN) work-items."""

    BM: int = 64
    BN: int = 64
    BK: int = 16
    TM: int = 4
    TN: int = 4
    splits: int = 0            # split-K slices (GEMMs that allow it); 0: chosen by default_splits

    def __post_init__(self):
        if self.BM % self.TM or self.BN % self.TN:
            raise ValueError(f"tile {self.BM}x{self.BN} is not a multiple of the "
                             f"per-thread tile {self.TM}x{self.TN}")

    @property
    def TX(self) -> int:
        return self.BN // self.TN

    @property
    def TY(self) -> int:
        return self.BM // self.TM

    @property
    def threads(self) -> int:
        return self.TX * self.TY

    @property
    def shared_bytes(self) -> int:
        return 4 * self.BK * ((self.BM + 1) + self.BN)


def fit_tiles(M: int, N: int, tiles: GemmTiles | None = None, K: int | None = None) -> GemmTiles:
    """The given (or default) tiles, shrunk along an axis much smaller than the tile (fc at
    batch 2 would otherwise compute 64 columns to keep 2, and stage 16-deep slabs of a
    2-deep sum)."""
    t = tiles or GemmTiles()
    BM, BN, TM, TN = t.BM, t.BN, t.TM, t.TN
    while BM > 4 and M <= BM // 2:
        BM //= 2
    while BN > 4 and N <= BN // 2:
        BN //= 2
    BK = t.BK
    while K is not None and BK > 2 and K <= BK // 2:   # fc's weight gradient at batch 2
        BK //= 2
    TM, TN = max(1, min(TM, BM // 4)), max(1, min(TN, BN // 4))
    return GemmTiles(BM, BN, BK, TM, TN, t.splits)


def default_splits(M: int, N: int, K: int, tiles: GemmTiles | None = None) -> int:
    """Split-K slices for a GEMM that allows them: enough to give ~64 work-groups in all (a GPU
    has tens of multiprocessors to fill), at most 16, each slice at least 512 deep (so the
    partial sums' extra traffic, splits x M x N floats, stays small against the K loop)."""
    t = fit_tiles(M, N, tiles, K)
    if t.splits:
        return max(1, min(t.splits, ceil_div(K, t.BK)))
    groups = ceil_div(M, t.BM) * ceil_div(N, t.BN)
    return max(1, min(16, ceil_div(64, groups), K // 512))


def split_slice(K: int, splits: int, BK: int) -> tuple[int, int]:
    """(KS, slices): the K extent of one slice, a multiple of BK, and how many slices that
    makes (at most `splits`, none of them empty)."""
    ks = ceil_div(ceil_div(K, splits), BK) * BK
    return ks, ceil_div(K, ks)


GEMM_TEMPLATE = r"""
$kernel $name($params)
{
    $shared float As[${BK}][${BM} + 1];   /* +1: consecutive loaders hit different banks */
    $shared float Bs[${BK}][${BN}];
    const int tx = $lid0, ty = $lid1;
    const int tid = ty * ${TX} + tx;
    const int m0 = $grp1 * ${BM}, n0 = $grp0 * ${BN};
    const int z = @Z@;
    float acc[${TM}][${TN}];
    for (int i = 0; i < ${TM}; ++i)
        for (int j = 0; j < ${TN}; ++j)
            acc[i][j] = 0.0f;
    const int kb = @KBEGIN@, ke = @KEND@;
    for (int k0 = kb; k0 < ke; k0 += ${BK}) {
        for (int t = tid; t < ${BM} * ${BK}; t += ${THREADS}) {
            const int m = m0 + t / ${BK}, k = k0 + t % ${BK};
            float v = 0.0f;
            if (m < ${M} && k < ke) {
                @LOAD_A@
            }
            As[t % ${BK}][t / ${BK}] = v;
        }
        for (int t = tid; t < ${BK} * ${BN}; t += ${THREADS}) {
            const int k = k0 + t / ${BN}, n = n0 + t % ${BN};
            float v = 0.0f;
            if (k < ke && n < ${N}) {
                @LOAD_B@
            }
            Bs[t / ${BN}][t % ${BN}] = v;
        }
        $barrier
        for (int kk = 0; kk < ${BK}; ++kk) {
            float ra[${TM}], rb[${TN}];
            for (int i = 0; i < ${TM}; ++i)
                ra[i] = As[kk][ty + i * ${TY}];
            for (int j = 0; j < ${TN}; ++j)
                rb[j] = Bs[kk][tx + j * ${TX}];
            for (int i = 0; i < ${TM}; ++i)
                for (int j = 0; j < ${TN}; ++j)
                    acc[i][j] += ra[i] * rb[j];
        }
        $barrier
    }
    for (int i = 0; i < ${TM}; ++i) {
        const int m = m0 + ty + i * ${TY};
        if (m >= ${M})
            continue;
        for (int j = 0; j < ${TN}; ++j) {
            const int n = n0 + tx + j * ${TX};
            if (n >= ${N})
                continue;
            float v = acc[i][j];
            @EPILOGUE@
        }
    }
}
"""


def gemm_kernel(name: str, M: int, N: int, K: int, *, load_a: str, load_b: str,
                epilogue: str, params: tuple[Param, ...], consts: dict | None = None,
                tiles: GemmTiles | None = None, doc: str = "", layer: str = "",
                batches: int = 1, splits: int = 1) -> Kernel:
    """A tiled GEMM kernel with the given load and epilogue snippets (see the module doc).
    `consts` are the snippets' own compile-time constants. `splits` > 1 (with batches 1)
    splits K: the epilogue must store slice z's partial sum (see `split_k_reduce_kernel`);
    pass the number `split_slice` returns."""
    t = fit_tiles(M, N, tiles, K)
    if splits > 1 and batches > 1:
        raise ValueError("a GEMM is either batched or split along K, not both")
    ks = K
    if splits > 1:
        ks, slices = split_slice(K, splits, t.BK)
        if slices != splits:
            raise ValueError(f"K={K} in slices of {ks} makes {slices} slices, not {splits}; "
                             f"pass split_slice's count")
    template = _gemm_template(load_a, load_b, epilogue, batches > 1 or splits > 1, splits > 1)
    c = dict(consts or {})
    c.update(M=M, N=N, K=K, BM=t.BM, BN=t.BN, BK=t.BK, TM=t.TM, TN=t.TN, TX=t.TX, TY=t.TY,
             THREADS=t.threads, KS=ks)
    batches = max(batches, splits)
    groups = (ceil_div(N, t.BN), ceil_div(M, t.BM))
    launch = f"launch: {groups[0]} x {groups[1]}{f' x {batches}' if batches > 1 else ''} " \
             f"groups of {t.TX} x {t.TY} work-items, " \
             f"tile {t.BM}x{t.BN}x{t.BK}, {t.TM}x{t.TN} outputs per work-item"
    gsize, lsize = (groups[0] * t.TX, groups[1] * t.TY), (t.TX, t.TY)
    if batches > 1:
        gsize, lsize = (*gsize, batches), (*lsize, 1)
    what = (f"GEMM split along K into {splits} slices of {ks}" if splits > 1 else
            f"{batches} GEMMs" if batches > 1 else "GEMM")
    return Kernel(name=name, template=template, params=params, consts=c,
                  global_size=gsize, local_size=lsize,
                  doc=f"{doc.strip()}\n{what} M={M} N={N} K={K}; {launch}",
                  flops=2 * M * N * K * (1 if splits > 1 else batches),
                  shared_bytes=t.shared_bytes, layer=layer)


@functools.lru_cache(maxsize=1024)
def _gemm_template(load_a: str, load_b: str, epilogue: str, batched: bool, split: bool) -> str:
    """The GEMM template with its snippets in: one string shared by every kernel that uses
    the same snippets (a network of many layers would otherwise hold one copy per kernel)."""
    return (GEMM_TEMPLATE.replace("@LOAD_A@", _indent(load_a, 16))
            .replace("@LOAD_B@", _indent(load_b, 16))
            .replace("@EPILOGUE@", _indent(epilogue, 12))
            .replace("@Z@", "$grp2" if batched else "0")
            .replace("@KBEGIN@", "z * ${KS}" if split else "0")
            .replace("@KEND@", "(z + 1) * ${KS} < ${K} ? (z + 1) * ${KS} : ${K}"
                     if split else "${K}"))


SPLIT_K_REDUCE = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i >= ${MN})
        return;
    float s = part[i];
    for (int z = 1; z < ${SPLITS}; ++z)
        s += part[z * ${MN} + i];
    out[i] = s;
}
"""


def split_k_reduce_kernel(name: str, elements: int, splits: int, layer: str = "",
                          what: str = "") -> Kernel:
    """out[i] = sum over z < splits of part[z, i], slices added in order."""
    gs, ls = elementwise_launch(elements)
    return Kernel(name=name, template=SPLIT_K_REDUCE, params=params("in part", "out out"),
                  consts=dict(MN=elements, SPLITS=splits), global_size=gs, local_size=ls,
                  flops=elements * (splits - 1), layer=layer,
                  doc=f"{what}split-K reduction: out[i] = sum_z part[z, i] over {splits} "
                      f"slices of {elements}\nlaunch: one work-item per output element")


def _indent(snippet: str, spaces: int) -> str:
    lines = [l.strip() for l in snippet.strip().splitlines()]
    return ("\n" + " " * spaces).join(lines)
