"""The tiled GEMM family that conv and fc kernels are made of.

C[m, n] = Σ_k A(m, k) · B(k, n) for m < M, n < N, k < K. Each operand is an `Operand`: either
dense (A(m, k) = buf[m·so + k·sk], one stride 1), which the kernel may read 4 floats at a time,
or a gather written as two C snippets: `hoist` sets the ints h0, h1, h2 from the outer index
alone (m for A, n for B: image and pixel of an im2col column, say), `load` sets `v` from `k`
and those ints. An implicit GEMM reads im2col columns straight from the activations and never
materialises them. The `epilogue` snippet sees `m, n, v` (the sum) and writes the result
(bias, ReLU, store).

Launch: a 2-D grid of groups, one per BM x BN tile of C (group index 0 along N, 1 along M), of
TX x TY = (BN/TN) x (BM/TM) work-items. `batches` > 1 launches that many independent GEMMs of
the same sizes along grid dimension 2; the snippets see their index as `z` (the conv data
gradient's stride phases).

Two layouts of the per-work-item tile (`GemmTiles.layout`):

- "blocked" (the default): work-item (tx, ty) owns TM/4 x TN/4 blocks of 4x4 outputs, block
  (i, j) at rows i·BM/(TM/4) + 4·ty .. +3 and columns j·BN/(TN/4) + 4·tx .. +3, so every
  shared-memory read is one float4 (LDS.128) and a quarter-warp reads 128 contiguous bytes (no
  bank conflicts). Per k-step a work-item reads (TM + TN)/4 float4s for TM·TN FMAs: 16 FMAs per
  shared load at 8x8. Shared memory is double-buffered: slab k0 + BK is fetched from global
  memory into registers while slab k0 is multiplied, then stored to the other buffer, one
  barrier per slab. Each work-item fetches a fixed set of (k, outer) lanes of every slab, so a
  gather's `hoist` runs once before the K loop (when a work-item has at most 8 lanes; else
  per load) and only its `load` (constant divisions of k) runs per slab. A dense operand whose
  contiguous axis is a multiple of 4 long is read as float4s (LDG.128; netspec's buffers are
  4096-byte aligned, codegen/plan/model.py), else as floats. BK must be a multiple of 4.
- "strided": the earlier single-buffered template, kept as an autotune candidate and as the
  baseline of `netspec bench --sass`: per-thread rows ty + i·TY (scalar LDS), one slab staged
  with two barriers, loads recomputing the whole snippet per element.

Split-K (`splits` > 1, batches 1): grid dimension 2 cuts K into `splits` slices of KS (a
multiple of BK); group z sums k in [z·KS, min(K, (z+1)·KS)) and stores that partial sum at
slice z of a scratch buffer (splits, M, N); `split_k_reduce_kernel` then adds the slices in
order and runs the epilogue. No atomics, and the result does not depend on the schedule.
`gemm_calls` builds both launches. How many slices, and which tile, `choose_gemm` decides
from the device's SM count (module constants below; `netspec bench --sass` checks the result
against the machine code).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

from . import Call, Kernel, Param, ceil_div, elementwise_launch, params

# The device the grid is sized for when none is attached: NVIDIA H100 SXM5 / H200, 132 SMs
# (NVIDIA H100 Tensor Core GPU Architecture whitepaper, table 3).
DEFAULT_SM_COUNT = 132
TARGET_WAVES = 2            # at least this many waves of resident blocks per launch
MIN_SLICE = 128             # split-K: no slice shallower than this many k
# what `choose_gemm`'s estimate assumes of one SM (sm_90: 65,536 registers, 2,048 threads,
# 128 FP32 lanes; HBM3 3.35 TB/s over 132 SMs) — only to rank candidates; bench/sass.py models
# the compiled kernels themselves.
_SM_REGS, _SM_THREADS, _SM_BLOCKS, _SM_LANES = 65536, 2048, 32, 128
_BYTES_PER_CLK_PER_SM = 3.35e12 / 1.98e9 / 132


@dataclass(frozen=True)
class GemmTiles:
    """Tile sizes, in the usual names: each work-group (CUDA block) computes a BM x BN tile of
    C, walking K in BK-deep slabs; each of its work-items (threads) a TM x TN tile of that, in
    registers. So a group has (BM/TM) x (BN/TN) work-items. `layout`: "blocked" or "strided"
    (module doc); "blocked" needs TM, TN and BK multiples of 4."""

    BM: int = 128
    BN: int = 128
    BK: int = 8
    TM: int = 8
    TN: int = 8
    splits: int = 0            # split-K slices (GEMMs that allow it); 0: chosen by choose_gemm
    layout: str = "blocked"

    def __post_init__(self):
        if self.BM % self.TM or self.BN % self.TN:
            raise ValueError(f"tile {self.BM}x{self.BN} is not a multiple of the "
                             f"per-thread tile {self.TM}x{self.TN}")
        if self.layout not in ("blocked", "strided", "wmma"):
            raise ValueError(f"GemmTiles.layout is 'blocked', 'strided' or 'wmma', not "
                             f"{self.layout!r}")
        if self.layout == "wmma" and (self.TM % 16 or self.TN % 16 or self.BK % 16):
            raise ValueError(f"a wmma tile needs warp tiles and BK multiples of 16, not "
                             f"{self.TM}x{self.TN}x{self.BK}")
        if self.layout == "blocked" and (self.TM % 4 or self.TN % 4 or self.BK % 4):
            raise ValueError(f"a blocked tile needs TM, TN and BK multiples of 4, not "
                             f"{self.TM}x{self.TN}x{self.BK}")

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
        if self.layout == "strided":
            return 4 * self.BK * ((self.BM + 1) + self.BN)
        return 4 * 2 * self.BK * ((self.BM + 4) + (self.BN + 4))


# The blocked family `choose_gemm` picks from, largest first (the autotuner's candidates add
# these to the strided ones).
VARIANTS = (
    GemmTiles(128, 128, 8, 8, 8),
    GemmTiles(128, 64, 8, 8, 8),
    GemmTiles(64, 128, 8, 8, 8),
    GemmTiles(64, 64, 8, 8, 8),
    GemmTiles(64, 64, 8, 4, 4),
    GemmTiles(32, 64, 8, 4, 4),
    GemmTiles(64, 32, 8, 4, 4),
)


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
    floor = 4 if t.layout == "blocked" else 2
    while K is not None and BK > floor and K <= BK // 2:   # fc's weight gradient at batch 2
        BK //= 2
    if t.layout == "blocked":     # 4x4 blocks; 8 wide only where 8 or more rows of them fit
        TM = min(TM, max(4, BM // 16))
        TN = min(TN, max(4, BN // 16))
        BM, BN = max(BM, TM), max(BN, TN)
    else:
        TM, TN = max(1, min(TM, BM // 4)), max(1, min(TN, BN // 4))
    return GemmTiles(BM, BN, BK, TM, TN, t.splits, t.layout)


def split_slice(K: int, splits: int, BK: int) -> tuple[int, int]:
    """(KS, slices): the K extent of one slice, a multiple of BK, and how many slices that
    makes (at most `splits`, none of them empty)."""
    ks = ceil_div(ceil_div(K, splits), BK) * BK
    return ks, ceil_div(K, ks)


def registers_estimate(t: GemmTiles) -> int:
    """Registers per thread the compiled kernel is expected to need (ptxas reports the real
    count; bench/sass.py): the accumulators, one k-step of operands, staging and addresses."""
    if t.layout == "strided":
        return 56
    return min(255, t.TM * t.TN + t.TM + t.TN + 32)


def resident_blocks(t: GemmTiles, registers: int | None = None) -> int:
    """Blocks of these tiles one sm_90 SM holds at once (registers, threads, shared memory)."""
    regs = registers or registers_estimate(t)
    warps = ceil_div(t.threads, 32)
    per_warp = ceil_div(regs * 32, 256) * 256
    by_regs = (_SM_REGS // per_warp) // warps
    by_smem = (228 * 1024) // (t.shared_bytes + 1024)
    return max(0, min(_SM_BLOCKS, _SM_THREADS // (32 * warps), by_regs, by_smem))


def waves(blocks: int, t: GemmTiles, sm_count: int = DEFAULT_SM_COUNT,
          registers: int | None = None) -> float:
    """Launch `blocks` blocks of tiles `t`: how many times they fill every SM's block slots."""
    return blocks / max(1, sm_count * resident_blocks(t, registers))


def _estimate_cycles(t: GemmTiles, M: int, N: int, K: int, batches: int, splits: int,
                     sm_count: int) -> float:
    """A rough SM-cycle count of one launch (and its reduction), to rank candidates: FMAs at
    the loop's FFMA share of the issue slots, scheduled in waves, against compulsory traffic."""
    blocks = ceil_div(M, t.BM) * ceil_div(N, t.BN) * batches * splits
    ks = split_slice(K, splits, t.BK)[0] if splits > 1 else K
    per_sm = resident_blocks(t)
    if per_sm == 0:
        return math.inf
    # the blocked loop issues ~24 instructions per k-step besides its TM·TN FFMAs (fragment
    # loads, the slab's loads and index arithmetic: bench/sass.py's counts for AlexNet)
    ffma_share = t.TM * t.TN / (t.TM * t.TN + (24 if t.layout == "blocked" else 60))
    warps = ceil_div(t.threads, 32)

    def wave(resident: int) -> float:        # cycles of `resident` blocks sharing one SM
        latency = min(1.0, resident * warps / 8)         # < 8 warps can't hide latency
        return resident * t.BM * t.BN * ks / (_SM_LANES * ffma_share * latency)

    full, rest = divmod(blocks, sm_count * per_sm)
    cycles = full * wave(per_sm) + (wave(ceil_div(rest, sm_count)) if rest else 0.0)
    bandwidth = _BYTES_PER_CLK_PER_SM * sm_count
    traffic = 4 * (M * K + K * N * batches + M * N * batches * splits)
    cycles = max(cycles, traffic / bandwidth)
    if splits > 1:           # the reduction, a launch of its own: partials read, result written
        cycles += 4 * (splits + 1) * M * N / bandwidth + 2e-6 * 1.98e9
    return cycles


def choose_gemm(M: int, N: int, K: int, tiles: GemmTiles | None = None, *, batches: int = 1,
                split_ok: bool = True, sm_count: int = DEFAULT_SM_COUNT) -> tuple[GemmTiles, int]:
    """(tiles, splits) for a GEMM: `tiles` as given (autotuned) fitted to the shape, with their
    own split count or one chosen here; else the VARIANT and split count with the fewest
    estimated cycles on `sm_count` SMs, preferring those that fill TARGET_WAVES waves. Slices
    stay at least MIN_SLICE deep; a batched GEMM is never split."""
    def splits_for(t: GemmTiles) -> list[int]:
        if not split_ok or batches > 1:
            return [1]
        most = max(1, min(256, K // MIN_SLICE, ceil_div(K, t.BK)))
        cands = sorted({1, *(s for s in (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192,
                                         256) if s <= most)})
        return sorted({split_slice(K, s, t.BK)[1] for s in cands})

    if tiles is not None:
        t = fit_tiles(M, N, tiles, K)
        if t.splits:
            s = 1 if not split_ok or batches > 1 else split_slice(K, t.splits, t.BK)[1]
            return t, s
        options = [(t, s) for s in splits_for(t)]
    else:
        options = [(t, s) for t in dict.fromkeys(fit_tiles(M, N, v, K) for v in VARIANTS)
                   for s in splits_for(t)]

    def rank(o):
        t, s = o
        blocks = ceil_div(M, t.BM) * ceil_div(N, t.BN) * batches * s
        filled = waves(blocks, t, sm_count) >= TARGET_WAVES
        return _estimate_cycles(t, M, N, K, batches, s, sm_count) * (1.0 if filled else 1.5)
    return min(options, key=rank)


def default_splits(M: int, N: int, K: int, tiles: GemmTiles | None = None,
                   sm_count: int = DEFAULT_SM_COUNT) -> int:
    """The split-K slice count `choose_gemm` gives a GEMM that allows splitting."""
    return choose_gemm(M, N, K, tiles, sm_count=sm_count)[1]


@dataclass(frozen=True)
class Operand:
    """How a GEMM reads A(m, k) or B(k, n) (module doc). Dense: `buf` with strides
    (`outer_stride`, `k_stride`), the outer index being m for A and n for B, one stride 1.
    Gather: `load` sets `v` from `k`, the outer index, `z` and h0..h2, which `hoist` sets
    from the outer index and `z` alone, and g0..g2, which `per_k` (optional) sets from `k`
    and `z` alone: the im2col index arithmetic (divisions of k) a blocked or wmma loader then
    runs once per slab for all its lanes (module doc), not once per element. `fast` is the axis consecutive work-items walk while
    loading a slab ("outer" or "k"): the one along which the source is contiguous, so reads
    coalesce."""

    load: str = ""
    hoist: str = ""
    fast: str = "outer"
    buf: str = ""
    outer_stride: int = 0
    k_stride: int = 0
    per_k: str = ""
    # an equivalent gather for loaders that hoist once per lane (`_row_lane_code`): its hoist
    # may loop (building a validity bit mask, say), and its load's own test fails outside
    # the GEMM (outer index past the extent, k past the slice: per_k then leaves g0..g2 0),
    # so the loader adds no range test of its own
    guarded: Operand | None = None

    def __post_init__(self):
        if self.per_k and not self.hoist:
            raise ValueError("an operand with a per-k snippet also hoists its outer index")

    @staticmethod
    def dense(buf: str, outer_stride: int, k_stride: int) -> Operand:
        if 1 not in (outer_stride, k_stride):
            raise ValueError("a dense operand is contiguous along one axis")
        return Operand(buf=buf, outer_stride=outer_stride, k_stride=k_stride,
                       fast="k" if k_stride == 1 else "outer")

    def scalar_load(self, outer: str) -> str:
        """The load of one element from `k` and the hoisted h0..h2 (per_k run in place)."""
        if self.buf:
            return f"v = {self.buf}[{outer} * {self.outer_stride} + k * {self.k_stride}];"
        if self.per_k:
            return f"int g0 = 0, g1 = 0, g2 = 0; {_one_line(self.per_k)} {_one_line(self.load)}"
        return self.load

    def vector_axis(self, outer_extent: int, K: int) -> str | None:
        """'k' or 'outer' when this operand can be read as float4s along that axis."""
        if not self.buf:
            return None
        if self.k_stride == 1 and self.outer_stride % 4 == 0 and K % 4 == 0:
            return "k"
        if self.outer_stride == 1 and self.k_stride % 4 == 0 and outer_extent % 4 == 0:
            return "outer"
        return None


def gemm_kernel(name: str, M: int, N: int, K: int, *, a: Operand, b: Operand,
                epilogue: str, params: tuple[Param, ...], consts: dict | None = None,
                tiles: GemmTiles | None = None, doc: str = "", layer: str = "",
                batches: int = 1, splits: int = 1) -> Kernel:
    """A tiled GEMM kernel reading operands `a` and `b` and running `epilogue` (module doc).
    `consts` are the snippets' own compile-time constants; `tiles` are used as given (after
    `fit_tiles`). `splits` > 1 (with batches 1) splits K: the epilogue must store slice z's
    partial sum; pass the number `split_slice` returns (`gemm_calls` does all this)."""
    t = fit_tiles(M, N, tiles, K)
    if splits > 1 and batches > 1:
        raise ValueError("a GEMM is either batched or split along K, not both")
    ks = K
    if splits > 1:
        ks, slices = split_slice(K, splits, t.BK)
        if slices != splits:
            raise ValueError(f"K={K} in slices of {ks} makes {slices} slices, not {splits}; "
                             f"pass split_slice's count")
    staged = batches > 1 or splits > 1
    if t.layout == "strided":
        template = _strided_template(_strided_load(a, "m"), _strided_load(b, "n"), epilogue,
                                     staged, splits > 1)
        local = (t.TX, t.TY)
    else:
        template = _blocked_template(a, b, epilogue, staged, splits > 1, t, M, N, K)
        local = (t.threads, 1)
    c = dict(consts or {})
    c.update(M=M, N=N, K=K, BM=t.BM, BN=t.BN, BK=t.BK, TM=t.TM, TN=t.TN, TX=t.TX, TY=t.TY,
             THREADS=t.threads, KS=ks)
    batches = max(batches, splits)
    groups = (ceil_div(N, t.BN), ceil_div(M, t.BM))
    launch = f"launch: {groups[0]} x {groups[1]}{f' x {batches}' if batches > 1 else ''} " \
             f"groups of {t.threads} work-items, tile {t.BM}x{t.BN}x{t.BK}, " \
             f"{t.TM}x{t.TN} outputs per work-item ({t.layout})"
    gsize, lsize = (groups[0] * local[0], groups[1] * local[1]), local
    if batches > 1:
        gsize, lsize = (*gsize, batches), (*lsize, 1)
    what = (f"GEMM split along K into {splits} slices of {ks}" if splits > 1 else
            f"{batches} GEMMs" if batches > 1 else "GEMM")
    return Kernel(name=name, template=template, params=params, consts=c,
                  global_size=gsize, local_size=lsize,
                  doc=f"{doc.strip()}\n{what} M={M} N={N} K={K}; {launch}",
                  flops=2 * M * N * K * (1 if splits > 1 else batches),
                  shared_bytes=t.shared_bytes, layer=layer)


def gemm_calls(name: str, M: int, N: int, K: int, *, a: Operand, b: Operand, epilogue: str,
               reads: tuple[str, ...], writes: tuple[str, ...], scratch: str,
               consts: dict | None = None, tiles: GemmTiles | None = None, doc: str = "",
               layer: str = "", batches: int = 1, split_ok: bool = True,
               sm_count: int = DEFAULT_SM_COUNT, precision: str = "fp32") -> list[Call]:
    """The launches of one GEMM: the tiles and split count `choose_gemm` gives; split, the
    GEMM stores partial sums in `scratch` (size: `gemm_scratch`) and a reduction adds them
    and runs the epilogue. `reads` are the load snippets' buffers, `writes` the epilogue's
    (param specs, "in b" / "out y"); buffer roles are the parameter names. `precision`
    other than 'fp32' makes a tensor-core GEMM (`tc_gemm_kernel`, `choose_tc_gemm`; FP32
    tiles given for the layer are ignored then)."""
    if precision == "fp32":
        t, splits = choose_gemm(M, N, K, tiles, batches=batches, split_ok=split_ok,
                                sm_count=sm_count)
        make = gemm_kernel
    else:
        t, splits = choose_tc_gemm(M, N, K, precision, tiles, batches=batches,
                                   split_ok=split_ok, sm_count=sm_count)
        make = functools.partial(tc_gemm_kernel, precision=precision)
    load_params = params(*(f"in {r}" for r in reads))
    if splits <= 1:
        k = make(name, M, N, K, a=a, b=b, epilogue=epilogue,
                 params=load_params + params(*writes), consts=consts, tiles=t, doc=doc,
                 layer=layer, batches=batches)
        return [Call(k, (*reads, *(w.split()[1] for w in writes)))]
    gemm = make(name, M, N, K, a=a, b=b, splits=splits,
                epilogue="part[(z * ${M} + m) * ${N} + n] = v;",
                params=load_params + params("out part"), consts=consts, tiles=t,
                doc=f"{doc.strip()}; slice z of K into {scratch}[z]", layer=layer)
    reduce = split_k_reduce_kernel(f"{name}_sum", M, N, splits, layer=layer,
                                   epilogue=epilogue, writes=writes, consts=consts,
                                   what=f"{doc.strip().splitlines()[0]}: ")
    return [Call(gemm, (*reads, scratch)),
            Call(reduce, (scratch, *(w.split()[1] for w in writes)))]


def gemm_scratch(M: int, N: int, K: int, tiles: GemmTiles | None = None, *, batches: int = 1,
                 split_ok: bool = True, sm_count: int = DEFAULT_SM_COUNT,
                 precision: str = "fp32") -> int:
    """Floats of split-K partial sums `gemm_calls` needs for this GEMM (0: not split)."""
    if precision == "fp32":
        _, splits = choose_gemm(M, N, K, tiles, batches=batches, split_ok=split_ok,
                                sm_count=sm_count)
    else:
        _, splits = choose_tc_gemm(M, N, K, precision, tiles, batches=batches,
                                   split_ok=split_ok, sm_count=sm_count)
    return splits * M * N if splits > 1 else 0


# -- the blocked template ----------------------------------------------------------------------
_BLOCKED = r"""
$kernel $name($params)
{
    $shared float As[2][${BK}][${BM} + 4] $align16;
    $shared float Bs[2][${BK}][${BN} + 4] $align16;
    const int tid = $lid0;
    const int tx = tid % ${TX}, ty = tid / ${TX};
    const int m0 = $grp1 * ${BM}, n0 = $grp0 * ${BN};
    const int z = @Z@;
    const int kb = @KBEGIN@, ke = @KEND@;
    float acc[${TM}][${TN}];
    for (int i = 0; i < ${TM}; ++i)
        for (int j = 0; j < ${TN}; ++j)
            acc[i][j] = 0.0f;
@SETUP@
    {
        const int kn = kb;
@FETCH@
@STORE0@
    }
    $barrier
    int buf = 0;
    for (int k0 = kb; k0 < ke; k0 += ${BK}) {
        const int kn = k0 + ${BK};
        if (kn < ke) {
@FETCH@
        }
        #pragma unroll
        for (int kk = 0; kk < ${BK}; ++kk) {
            float ra[${TM}], rb[${TN}];
            for (int c = 0; c < ${TM} / 4; ++c) {
                const $float4 t = $sload4(&As[buf][kk][c * (${BM} * 4 / ${TM}) + ty * 4]);
                ra[4 * c] = t.x; ra[4 * c + 1] = t.y; ra[4 * c + 2] = t.z; ra[4 * c + 3] = t.w;
            }
            for (int c = 0; c < ${TN} / 4; ++c) {
                const $float4 t = $sload4(&Bs[buf][kk][c * (${BN} * 4 / ${TN}) + tx * 4]);
                rb[4 * c] = t.x; rb[4 * c + 1] = t.y; rb[4 * c + 2] = t.z; rb[4 * c + 3] = t.w;
            }
            for (int i = 0; i < ${TM}; ++i)
                for (int j = 0; j < ${TN}; ++j)
                    acc[i][j] += ra[i] * rb[j];
        }
        if (kn < ke) {
@STORE1@
        }
        $barrier
        buf ^= 1;
    }
    for (int i = 0; i < ${TM}; ++i) {
        const int m = m0 + (i / 4) * (${BM} * 4 / ${TM}) + ty * 4 + i % 4;
        if (m >= ${M})
            continue;
        for (int j = 0; j < ${TN}; ++j) {
            const int n = n0 + (j / 4) * (${BN} * 4 / ${TN}) + tx * 4 + j % 4;
            if (n >= ${N})
                continue;
            float v = acc[i][j];
            @EPILOGUE@
        }
    }
}
"""

_HOIST_LANES = 8        # a gather keeps h0..h2 per lane in registers up to this many lanes


@dataclass(frozen=True)
class _Side:
    """One operand's place in the template: A (outer m, tile BM, As) or B (n, BN, Bs)."""
    tag: str        # "a" | "b"
    outer: str      # "m" | "n"
    tile: str       # "${BM}" | "${BN}"
    base: str       # "m0" | "n0"
    extent: str     # "${M}" | "${N}"
    shared: str     # "As" | "Bs"


_A = _Side("a", "m", "${BM}", "m0", "${M}", "As")
_B = _Side("b", "n", "${BN}", "n0", "${N}", "Bs")


def _lane_code(side: _Side, op: Operand, vec: str | None, tile: int, bk: int, threads: int,
               cvt: str = "") -> tuple[str, str, str, str]:
    """(setup, fetch, store to buffer 0, store to buffer buf ^ 1) of one operand's loader.
    `cvt`: a function every value goes through as it is stored (a tensor-core GEMM's operand
    rounding); the stores are then scalar."""
    s, o = side.tag, side.outer

    def conv(x: str) -> str:
        return f"{cvt}({x})" if cvt else x
    if not vec and op.hoist and threads % bk == 0 and tile % (threads // bk) == 0:
        return _row_lane_code(side, op, tile, bk, threads, conv)
    if vec:
        total = tile * bk // 4
    else:
        total = tile * bk
    lanes = ceil_div(total, threads)
    guard = f"if (e < {total}) " if total % threads else ""
    lane = f"const int e = tid + l * {threads};"
    if vec == "k":
        pos = f"const int oo = e / {bk // 4}, kk = (e % {bk // 4}) * 4;"
    elif vec == "outer":
        pos = f"const int kk = e / {tile // 4}, oo = (e % {tile // 4}) * 4;"
    elif op.fast == "k":
        pos = f"const int kk = e % {bk}, oo = e / {bk};"
    else:
        pos = f"const int oo = e % {tile}, kk = e / {tile};"
    head = f"for (int l = 0; l < {lanes}; ++l) {{ {lane} {pos}"
    setup, fetch = "", ""
    hoisted = not vec and op.hoist and lanes <= _HOIST_LANES
    if vec:
        addr = (f"{o} * {op.outer_stride} + k" if vec == "k" else f"k * {op.k_stride} + {o}")
        setup = f"$float4 {s}st[{lanes}];"
        fetch = (f"{head} {guard}{{ const int {o} = {side.base} + oo, k = kn + kk; $float4 t; "
                 f"if ({o} < {side.extent} && k < ke) t = $gload4(&{op.buf}[{addr}]); "
                 f"else {{ t.x = 0.0f; t.y = 0.0f; t.z = 0.0f; t.w = 0.0f; }} "
                 f"{s}st[l] = t; }} }}")
        if vec == "k" or cvt:
            at = (("kk", "oo"), ("kk + 1", "oo"), ("kk + 2", "oo"), ("kk + 3", "oo")) \
                if vec == "k" else (("kk", "oo"), ("kk", "oo + 1"), ("kk", "oo + 2"),
                                    ("kk", "oo + 3"))
            st = (f"{head} {guard}{{ " + " ".join(
                f"{side.shared}[@BUF@][{r}][{c}] = {conv(f'{s}st[l].{x}')};"
                for (r, c), x in zip(at, "xyzw")) + " } }")
        else:
            st = f"{head} {guard}$sstore4(&{side.shared}[@BUF@][kk][oo]) = {s}st[l]; }}"
    else:
        setup = f"float {s}st[{lanes}];"
        if hoisted:
            setup += (f"\nint {s}h0[{lanes}], {s}h1[{lanes}], {s}h2[{lanes}];\n"
                      f"{head} {guard}{{ const int {o} = {side.base} + oo; "
                      f"int h0 = 0, h1 = 0, h2 = 0; {_one_line(op.hoist)} "
                      f"{s}h0[l] = h0; {s}h1[l] = h1; {s}h2[l] = h2; }} }}")
            state = f"const int h0 = {s}h0[l], h1 = {s}h1[l], h2 = {s}h2[l];"
        else:
            state = f"int h0 = 0, h1 = 0, h2 = 0; {_one_line(op.hoist)}" if op.hoist else ""
        fetch = (f"{head} {guard}{{ const int {o} = {side.base} + oo, k = kn + kk; "
                 f"float v = 0.0f; if ({o} < {side.extent} && k < ke) {{ {state} "
                 f"{_one_line(op.scalar_load(o))} }} {s}st[l] = v; }} }}")
        st = f"{head} {guard}{side.shared}[@BUF@][kk][oo] = {conv(f'{s}st[l]')}; }}"
    return setup, fetch, st.replace("@BUF@", "0"), st.replace("@BUF@", "buf ^ 1")


def _row_lane_code(side: _Side, op: Operand, tile: int, bk: int, threads: int,
                   conv) -> tuple[str, str, str, str]:
    """`_lane_code` for a gather whose slab rows are shared: G = threads / bk work-items per k
    row, each with tile / G lanes at outer positions o0 + G·l of one row kk (consecutive
    work-items take consecutive outer positions when the source is contiguous along it, else
    consecutive rows). So a work-item's k is one per slab: the operand's `per_k` (its
    divisions of k) runs once for all lanes, and each lane adds only its hoisted part."""
    s, o = side.tag, side.outer
    g = threads // bk
    lanes = tile // g
    guarded = op.guarded is not None and lanes <= 2 * _HOIST_LANES
    op = op.guarded if guarded else op
    place = (f"const int {s}kk = tid % {bk}, {s}o0 = tid / {bk};" if op.fast == "k" else
             f"const int {s}kk = tid / {g}, {s}o0 = tid % {g};")
    head = f"for (int l = 0; l < {lanes}; ++l) {{"
    setup = f"{place}\nfloat {s}st[{lanes}];"
    if lanes <= 2 * _HOIST_LANES:
        setup += (f"\nint {s}h0[{lanes}], {s}h1[{lanes}], {s}h2[{lanes}];\n"
                  f"{head} const int {o} = {side.base} + {s}o0 + {g} * l; "
                  f"int h0 = 0, h1 = 0, h2 = 0; {_one_line(op.hoist)} "
                  f"{s}h0[l] = h0; {s}h1[l] = h1; {s}h2[l] = h2; }}")
        state = f"const int h0 = {s}h0[l], h1 = {s}h1[l], h2 = {s}h2[l];"
    else:
        state = f"int h0 = 0, h1 = 0, h2 = 0; {_one_line(op.hoist)}"
    per_k = (f"int g0 = 0, g1 = 0, g2 = 0; if (kin) {{ {_one_line(op.per_k)} }} "
             if op.per_k else "")
    test = "" if guarded else (f"const int {o} = {side.base} + {s}o0 + {g} * l; "
                               f"if ({o} < {side.extent} && kin) ")
    fetch = (f"{{ const int k = kn + {s}kk; const bool kin = k < ke; {per_k}"
             f"{head} float v = 0.0f; {test}{{ {state} {_one_line(op.load)} }} "
             f"{s}st[l] = v; }} }}")
    st = f"{head} {side.shared}[@BUF@][{s}kk][{s}o0 + {g} * l] = {conv(f'{s}st[l]')}; }}"
    return setup, fetch, st.replace("@BUF@", "0"), st.replace("@BUF@", "buf ^ 1")


@functools.lru_cache(maxsize=1024)
def _blocked_template(a: Operand, b: Operand, epilogue: str, batched: bool, split: bool,
                      t: GemmTiles, M: int, N: int, K: int) -> str:
    """The blocked template with both loaders and the epilogue in: one string shared by every
    kernel of the same operands, tiles and shape class."""
    la = _lane_code(_A, a, a.vector_axis(M, K), t.BM, t.BK, t.threads)
    lb = _lane_code(_B, b, b.vector_axis(N, K), t.BN, t.BK, t.threads)
    ind = " " * 12
    text = (_BLOCKED.replace("@SETUP@", _indent(la[0] + "\n" + lb[0], 4, first=True))
            .replace("@FETCH@", _indent(la[1] + "\n" + lb[1], 12, first=True))
            .replace("@STORE0@", ind[:8] + la[2] + "\n" + ind[:8] + lb[2])
            .replace("@STORE1@", ind + la[3] + "\n" + ind + lb[3]))
    return _batch_and_split(text, epilogue, batched, split)


# -- the strided template (the earlier kernel) ------------------------------------------------
_STRIDED = r"""
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


def _strided_load(op: Operand, outer: str) -> str:
    if op.buf or not op.hoist:
        return op.scalar_load(outer)
    return f"int h0 = 0, h1 = 0, h2 = 0;\n{op.hoist}\n{op.scalar_load(outer)}"


@functools.lru_cache(maxsize=1024)
def _strided_template(load_a: str, load_b: str, epilogue: str, batched: bool,
                      split: bool) -> str:
    text = (_STRIDED.replace("@LOAD_A@", _indent(load_a, 16))
            .replace("@LOAD_B@", _indent(load_b, 16)))
    return _batch_and_split(text, epilogue, batched, split)


def _batch_and_split(text: str, epilogue: str, batched: bool, split: bool) -> str:
    """What both templates share: the epilogue, the batch index (grid z when batched) and
    the k range (one of the split-K slices of KS when split, else all of K)."""
    return (text.replace("@EPILOGUE@", _indent(epilogue, 12))
            .replace("@Z@", "$grp2" if batched else "0")
            .replace("@KBEGIN@", "z * ${KS}" if split else "0")
            .replace("@KEND@", "(z + 1) * ${KS} < ${K} ? (z + 1) * ${KS} : ${K}"
                     if split else "${K}"))


SPLIT_K_REDUCE = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i >= ${M} * ${N})
        return;
    const int m = i / ${N}, n = i % ${N};
    float v = part[i];
    for (int s = 1; s < ${SPLITS}; ++s)
        v += part[s * (${M} * ${N}) + i];
    @EPILOGUE@
}
"""


def split_k_reduce_kernel(name: str, M: int, N: int, splits: int, layer: str = "",
                          what: str = "", epilogue: str = "out[m * ${N} + n] = v;",
                          writes: tuple[str, ...] = ("out out",),
                          consts: dict | None = None) -> Kernel:
    """v = sum over z < splits of part[z, m, n], slices added in order, then `epilogue`
    (which sees m, n, v) writes it; one work-item per (m, n)."""
    gs, ls = elementwise_launch(M * N)
    c = dict(consts or {})
    c.update(M=M, N=N, SPLITS=splits)
    return Kernel(name=name, template=SPLIT_K_REDUCE.replace("@EPILOGUE@", _indent(epilogue, 4)),
                  params=params("in part", *writes), consts=c, global_size=gs,
                  local_size=ls, flops=M * N * (splits - 1), layer=layer,
                  doc=f"{what}split-K reduction: v[m, n] = sum_z part[z, m, n] over {splits} "
                      f"slices of {M}x{N}, then the epilogue\n"
                      f"launch: one work-item per output element")


def _one_line(snippet: str) -> str:
    return " ".join(l.strip() for l in snippet.strip().splitlines())


def _indent(snippet: str, spaces: int, first: bool = False) -> str:
    lines = [l.strip() for l in snippet.strip().splitlines() if l.strip()]
    out = ("\n" + " " * spaces).join(lines)
    return " " * spaces + out if first else out


def with_layout(t: GemmTiles, layout: str) -> GemmTiles:
    return replace(t, layout=layout)


# -- tensor cores: TF32 / BF16 operands, FP32 accumulation -----------------------------------
# The `precision` recipe statement (dsl/spec.py PRECISIONS). A tensor-core GEMM computes
#   C[m, n] = Σ_k r(A(m, k)) · r(B(k, n)),   accumulated in FP32,
# where r rounds an FP32 operand to the precision's format once, as the loader stores it to
# shared memory:
#   tf32: 10-bit mantissa, 8-bit exponent; round to nearest, ties away from zero, as CUDA's
#         __float_to_tf32 (PTX cvt.rna.tf32.f32) does for finite values; every dialect,
#         CUDA included, calls netspec_round_tf32 below (two integer instructions on sm_90,
#         where __float_to_tf32 compiles to four: it also tests for inf/NaN);
#   bf16: 7-bit mantissa, 8-bit exponent; round to nearest even (__float2bfloat16, cvt.rn).
# Both products are exact in FP32 (11 x 11 and 8 x 8 significand bits fit in 24), so every
# dialect computes the same sum up to the order of its FP32 additions: CUDA renders the wmma
# template below (HMMA on sm_80+), every other dialect the blocked FP32 template with the same
# rounding in its loader (same launch, same tiles' threads). Weights, gradients and the SGD
# update stay FP32; only the GEMMs' operands are rounded.
#
# Tiles (`GemmTiles(..., layout="wmma")`): a block of BM x BN, warps of TM x TN (multiples of
# 16; each warp holds (TM/16) x (TN/16) accumulator fragments of 16 x 16), BK a multiple of 16.
# threads = 32 · (BM/TM) · (BN/TN). Shared memory: A as As[2][BK][BM + pad] (k-major, read as
# col_major matrix_a fragments), B as Bs[2][BK][BN + pad] (row_major matrix_b), double-buffered
# as the blocked template, plus one 16 x 16 FP32 staging tile per warp for the epilogue.
TC_FORMATS = {
    # precision -> (shared type, fragment element type, fragment k, row padding, CUDA rounding)
    "tf32": ("float", "nvcuda::wmma::precision::tf32", 8, 4, "netspec_round_tf32"),
    "bf16": ("__nv_bfloat16", "__nv_bfloat16", 16, 8, "__float2bfloat16"),
}
# The same rounding for the dialects without tensor cores: a static function defined once per
# module (a guard macro), on the float's bits. tf32: add half of the 13 dropped bits' range to
# the magnitude and truncate (ties away from zero; +inf stays, the largest finites round to
# inf as cvt.rna does). bf16: round half to even on the 16 dropped bits. NaNs are not
# preserved bit-exactly (none reaches a GEMM in a finite run).
_ROUND_FUNCS = {
    "tf32": ("netspec_round_tf32",
             "static inline float netspec_round_tf32(float x) { union { float f; unsigned int u; }"
             " c; c.f = x; c.u = (c.u + 0x1000u) & 0xffffe000u; return c.f; }"),
    "bf16": ("netspec_round_bf16",
             "static inline float netspec_round_bf16(float x) { union { float f; unsigned int u; }"
             " c; c.f = x; c.u = (c.u + 0x7fffu + ((c.u >> 16) & 1u)) & 0xffff0000u; "
             "return c.f; }"),
}
_TC_PEAK = {"tf32": 494e12, "bf16": 989e12}     # H100 SXM dense, NVIDIA H100 datasheet

TC_VARIANTS = (
    GemmTiles(128, 128, 16, 64, 32, layout="wmma"),
    GemmTiles(128, 64, 16, 64, 32, layout="wmma"),
    GemmTiles(64, 128, 16, 32, 64, layout="wmma"),
    GemmTiles(128, 64, 16, 32, 32, layout="wmma"),      # 8 warps: half the loads per thread
    GemmTiles(64, 128, 16, 32, 32, layout="wmma"),
    GemmTiles(64, 64, 16, 32, 32, layout="wmma"),
    GemmTiles(64, 32, 16, 32, 16, layout="wmma"),
    GemmTiles(32, 64, 16, 16, 32, layout="wmma"),
)


def tc_threads(t: GemmTiles) -> int:
    """Threads of a wmma block: one warp per TM x TN warp tile."""
    return 32 * (t.BM // t.TM) * (t.BN // t.TN)


def tc_shared_bytes(t: GemmTiles, precision: str) -> int:
    """Static shared memory of a wmma block: both slab buffers and the warps' staging."""
    elem = 4 if TC_FORMATS[precision][0] == "float" else 2
    pad = TC_FORMATS[precision][3]
    return (2 * t.BK * (t.BM + pad + t.BN + pad) * elem
            + (tc_threads(t) // 32) * 256 * 4)


def fit_tc_tiles(M: int, N: int, t: GemmTiles) -> GemmTiles:
    """A wmma tile shrunk along an axis much smaller than it (fc at a small batch), keeping
    warp tiles of at least 16 x 16 and 512 outputs (so the other dialects' blocked template
    has the same threads with 4x4 blocks: `_tc_portable_tiles`)."""
    BM, BN, TM, TN = t.BM, t.BN, t.TM, t.TN
    while BM > 32 and M <= BM // 2:
        BM //= 2
    while BN > 32 and N <= BN // 2:
        BN //= 2
    TM, TN = min(TM, BM), min(TN, BN)
    while TM * TN < 512:
        if TM < BM:
            TM *= 2
        elif TN < BN:
            TN *= 2
        else:
            break
    return GemmTiles(BM, BN, t.BK, TM, TN, t.splits, "wmma")


def _tc_portable_tiles(t: GemmTiles) -> GemmTiles:
    """The blocked tiles that do a wmma tile's work with its thread count (other dialects)."""
    per = t.TM * t.TN // 32                         # outputs per thread
    tm = 8 if per >= 32 and t.BM >= 64 else 4
    tn = per // tm
    return GemmTiles(t.BM, t.BN, t.BK, tm, tn)


# What a warp issues per BK slab of the wmma loop, from bench/sass.py's counts on AlexNet
# (sm_90): per operand element it loads into shared memory (gather or dense, rounding and
# store included; a work-item with more than 8 lanes of one operand gets its hoisted indices
# recomputed by the compiler, about twice that), per fragment element it reads back (the
# generic load and its 64-bit address), per HMMA, and the slab's fixed part (barrier,
# branch, the per-slab k arithmetic).
_TC_ISSUE_PER_ELEMENT = 9
_TC_ISSUE_PER_FRAGMENT_ELEMENT = 2.3
_TC_ISSUE_PER_SLAB = 30


def _tc_issue_per_kstep(t: GemmTiles, precision: str) -> float:
    """Estimated SM clocks of instruction issue per k-step of one block (4 per clock)."""
    fk = TC_FORMATS[precision][2]
    warps = tc_threads(t) // 32
    tiles_m, tiles_n = t.TM // 16, t.TN // 16
    # HMMA.1684 (tf32): 4 per 16x16x8 mma; HMMA.16816 (bf16): 2 per 16x16x16
    hmma = tiles_m * tiles_n * (t.BK // fk) * (4 if fk == 8 else 2)
    # a 16 x fk fragment is 4 registers a thread (tf32: 4 floats; bf16: 8 halves)
    frags = (tiles_m + tiles_n) * (t.BK // fk) * 4 * _TC_ISSUE_PER_FRAGMENT_ELEMENT
    lanes_a, lanes_b = (ceil_div(x * t.BK, tc_threads(t)) for x in (t.BM, t.BN))
    loads = sum(n * _TC_ISSUE_PER_ELEMENT * (2 if n > _HOIST_LANES else 1)
                for n in (lanes_a, lanes_b))
    return warps * (hmma + frags + loads + _TC_ISSUE_PER_SLAB) / t.BK / 4


def _tc_estimate(t: GemmTiles, M: int, N: int, K: int, batches: int, splits: int,
                 precision: str, sm_count: int, traffic: bool = True) -> float:
    """Rough SM cycles of a tensor-core launch, to rank candidates: per k-step a block costs
    the larger of its MMAs at the SM's share of the dense peak and its instructions at 4 per
    clock (bench/sass.py's issue bound; `_tc_issue_per_kstep`), in waves of resident blocks,
    against the compulsory traffic (`traffic`: a gathered operand counted as its K x N
    matrix, which over-counts an im2col gather by the kernel's taps)."""
    blocks = ceil_div(M, t.BM) * ceil_div(N, t.BN) * batches * splits
    ks = split_slice(K, splits, t.BK)[0] if splits > 1 else K
    threads = tc_threads(t)
    regs = min(255, 8 * (t.TM // 16) * (t.TN // 16) + 120)
    warps = threads // 32
    per_warp = ceil_div(regs * 32, 256) * 256
    resident = max(0, min(_SM_BLOCKS, _SM_THREADS // threads, (_SM_REGS // per_warp) // warps,
                          (228 * 1024) // (tc_shared_bytes(t, precision) + 1024)))
    if resident == 0:
        return math.inf
    flop_per_clk = _TC_PEAK[precision] / 1.98e9 / DEFAULT_SM_COUNT
    per_kstep = max(2 * t.BM * t.BN / flop_per_clk, _tc_issue_per_kstep(t, precision))

    def wave(n: int) -> float:                 # n blocks sharing one SM
        return n * ks * per_kstep / min(1.0, n * warps / 8)

    full, rest = divmod(blocks, sm_count * resident)
    cycles = full * wave(resident) + (wave(ceil_div(rest, sm_count)) if rest else 0.0)
    bandwidth = _BYTES_PER_CLK_PER_SM * sm_count
    if traffic:
        cycles = max(cycles, 4 * (M * K + K * N * batches + M * N * batches * splits) / bandwidth)
    if splits > 1:
        cycles += 4 * (splits + 1) * M * N / bandwidth + 2e-6 * 1.98e9
    return cycles


def choose_tc_gemm(M: int, N: int, K: int, precision: str, tiles: GemmTiles | None = None, *,
                   batches: int = 1, split_ok: bool = True,
                   sm_count: int = DEFAULT_SM_COUNT) -> tuple[GemmTiles, int]:
    """(wmma tiles, splits) for a tensor-core GEMM, as `choose_gemm` does for FP32: `tiles`
    (a wmma tile) as given, else the TC_VARIANT and split with the fewest estimated cycles."""
    if precision not in TC_FORMATS:
        raise ValueError(f"precision {precision!r} has no tensor-core format; one of "
                         f"{', '.join(TC_FORMATS)}")
    cands = [tiles] if tiles is not None and tiles.layout == "wmma" else TC_VARIANTS
    options = []
    for v in dict.fromkeys(fit_tc_tiles(M, N, c) for c in cands):
        most = 1 if not split_ok or batches > 1 else max(1, min(256, K // MIN_SLICE,
                                                                ceil_div(K, v.BK)))
        for s in sorted({split_slice(K, s, v.BK)[1] for s in (1, 2, 3, 4, 6, 8, 12, 16, 24,
                                                              32, 48, 64) if s <= most}):
            options.append((v, s))

    def rank(o):
        v, s = o
        blocks = ceil_div(M, v.BM) * ceil_div(N, v.BN) * batches * s
        filled = blocks >= TARGET_WAVES * sm_count
        est = functools.partial(_tc_estimate, v, M, N, K, batches, s, precision, sm_count)
        # where the traffic floor ties candidates, the faster loop wins
        return est() * (1.0 if filled else 1.5), est(traffic=False)
    return min(options, key=rank)


# __launch_bounds__(threads, 1): one resident block is enough (8 warps hide the loop's
# latency, bench/sass.py); without it ptxas caps the wmma kernels at 128 registers and
# recomputes the hoisted gather indices (their divisions) inside the K loop
_WMMA = r"""
$kernel __launch_bounds__(${THREADS}, 1) $name($params)
{
    namespace wmma = nvcuda::wmma;
    __shared__ __align__(32) @T@ As[2][${BK}][${BM} + @PAD@];
    __shared__ __align__(32) @T@ Bs[2][${BK}][${BN} + @PAD@];
    __shared__ __align__(32) float Cs[${WARPS}][16 * 16];
    const int tid = $lid0;
    const int warp = tid / 32, lane = tid % 32;
    const int wm = (warp / ${WCOLS}) * ${WTM}, wn = (warp % ${WCOLS}) * ${WTN};
    const int m0 = $grp1 * ${BM}, n0 = $grp0 * ${BN};
    const int z = @Z@;
    const int kb = @KBEGIN@, ke = @KEND@;
    wmma::fragment<wmma::accumulator, 16, 16, @FK@, float> acc[${WTM} / 16][${WTN} / 16];
    for (int i = 0; i < ${WTM} / 16; ++i)
        for (int j = 0; j < ${WTN} / 16; ++j)
            wmma::fill_fragment(acc[i][j], 0.0f);
@SETUP@
    {
        const int kn = kb;
@FETCH@
@STORE0@
    }
    $barrier
    int buf = 0;
    for (int k0 = kb; k0 < ke; k0 += ${BK}) {
        const int kn = k0 + ${BK};
        if (kn < ke) {
@FETCH@
        }
        #pragma unroll
        for (int kk = 0; kk < ${BK}; kk += @FK@) {
            wmma::fragment<wmma::matrix_a, 16, 16, @FK@, @P@, wmma::col_major> fa[${WTM} / 16];
            wmma::fragment<wmma::matrix_b, 16, 16, @FK@, @P@, wmma::row_major> fb[${WTN} / 16];
            for (int i = 0; i < ${WTM} / 16; ++i)
                wmma::load_matrix_sync(fa[i], &As[buf][kk][wm + 16 * i], ${BM} + @PAD@);
            for (int j = 0; j < ${WTN} / 16; ++j)
                wmma::load_matrix_sync(fb[j], &Bs[buf][kk][wn + 16 * j], ${BN} + @PAD@);
            for (int i = 0; i < ${WTM} / 16; ++i)
                for (int j = 0; j < ${WTN} / 16; ++j)
                    wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
        if (kn < ke) {
@STORE1@
        }
        $barrier
        buf ^= 1;
    }
    for (int i = 0; i < ${WTM} / 16; ++i)
        for (int j = 0; j < ${WTN} / 16; ++j) {
            wmma::store_matrix_sync(Cs[warp], acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32) {
                const int m = m0 + wm + 16 * i + e / 16, n = n0 + wn + 16 * j + e % 16;
                if (m < ${M} && n < ${N}) {
                    float v = Cs[warp][e];
                    @EPILOGUE@
                }
            }
            __syncwarp();
        }
}
"""

_CUDA_TC_HEAD = ("#ifndef NETSPEC_WMMA_HEADERS\n#define NETSPEC_WMMA_HEADERS\n"
                 "#include <mma.h>\n#include <cuda_bf16.h>\n#endif\n")


def _round_head(precision: str, cuda: str = "") -> str:
    """The rounding function's definition, once per module; `cuda`: "__device__ " for CUDA
    C++ (where the emulator's __device__ is itself static inline)."""
    fn, body = _ROUND_FUNCS[precision]
    if cuda:
        body = cuda + body.replace("static inline ", "", 1)
    guard = f"NETSPEC_{fn.upper()}"
    return f"#ifndef {guard}\n#define {guard}\n{body}\n#endif\n"


@functools.lru_cache(maxsize=1024)
def _tc_templates(a: Operand, b: Operand, epilogue: str, batched: bool, split: bool,
                  t: GemmTiles, M: int, N: int, K: int, precision: str) -> tuple[str, str]:
    """(CUDA wmma template, the other dialects' rounded blocked template)."""
    shared_t, frag_t, fk, pad, cvt = TC_FORMATS[precision]
    threads = tc_threads(t)
    la = _lane_code(_A, a, a.vector_axis(M, K), t.BM, t.BK, threads, cvt)
    lb = _lane_code(_B, b, b.vector_axis(N, K), t.BN, t.BK, threads, cvt)
    ind = " " * 12
    cuda = (_WMMA.replace("@SETUP@", _indent(la[0] + "\n" + lb[0], 4, first=True))
            .replace("@FETCH@", _indent(la[1] + "\n" + lb[1], 12, first=True))
            .replace("@STORE0@", ind[:8] + la[2] + "\n" + ind[:8] + lb[2])
            .replace("@STORE1@", ind + la[3] + "\n" + ind + lb[3])
            .replace("@T@", shared_t).replace("@PAD@", str(pad)).replace("@FK@", str(fk))
            .replace("@P@", frag_t))
    head = _CUDA_TC_HEAD + (_round_head(precision, "__device__ ")
                            if cvt == _ROUND_FUNCS[precision][0] else "")
    cuda = head + _batch_and_split(cuda, epilogue, batched, split)
    p = _tc_portable_tiles(t)
    rnd = _ROUND_FUNCS[precision][0]
    pa = _lane_code(_A, a, a.vector_axis(M, K), p.BM, p.BK, threads, rnd)
    pb = _lane_code(_B, b, b.vector_axis(N, K), p.BN, p.BK, threads, rnd)
    portable = (_BLOCKED.replace("@SETUP@", _indent(pa[0] + "\n" + pb[0], 4, first=True))
                .replace("@FETCH@", _indent(pa[1] + "\n" + pb[1], 12, first=True))
                .replace("@STORE0@", ind[:8] + pa[2] + "\n" + ind[:8] + pb[2])
                .replace("@STORE1@", ind + pa[3] + "\n" + ind + pb[3])
                .replace("${TM}", "${PTM}").replace("${TN}", "${PTN}")
                .replace("${TX}", "${PTX}"))
    portable = _round_head(precision) + _batch_and_split(portable, epilogue, batched, split)
    return cuda, portable


def tc_gemm_kernel(name: str, M: int, N: int, K: int, *, a: Operand, b: Operand,
                   epilogue: str, params: tuple[Param, ...], precision: str,
                   consts: dict | None = None, tiles: GemmTiles | None = None, doc: str = "",
                   layer: str = "", batches: int = 1, splits: int = 1) -> Kernel:
    """A tensor-core GEMM (the tensor-core section above): as `gemm_kernel`, with operands
    rounded to `precision` ('tf32' | 'bf16') and FP32 accumulation. The CUDA dialect renders
    wmma (Kernel.dialect_templates), the others the blocked template with the same rounding
    and the same launch. `tiles`: a wmma GemmTiles (fitted here; default TC_VARIANTS[0])."""
    t = fit_tc_tiles(M, N, tiles if tiles is not None and tiles.layout == "wmma"
                     else TC_VARIANTS[0])
    if splits > 1 and batches > 1:
        raise ValueError("a GEMM is either batched or split along K, not both")
    ks = K
    if splits > 1:
        ks, slices = split_slice(K, splits, t.BK)
        if slices != splits:
            raise ValueError(f"K={K} in slices of {ks} makes {slices} slices, not {splits}; "
                             f"pass split_slice's count")
    staged = batches > 1 or splits > 1
    cuda, portable = _tc_templates(a, b, epilogue, staged, splits > 1, t, M, N, K, precision)
    p = _tc_portable_tiles(t)
    threads = tc_threads(t)
    c = dict(consts or {})
    c.update(M=M, N=N, K=K, BM=t.BM, BN=t.BN, BK=t.BK, TM=t.TM, TN=t.TN, KS=ks,
             WTM=t.TM, WTN=t.TN, WCOLS=t.BN // t.TN, WARPS=threads // 32,
             PTM=p.TM, PTN=p.TN, PTX=p.TX, TY=p.TY, THREADS=threads)
    batches = max(batches, splits)
    groups = (ceil_div(N, t.BN), ceil_div(M, t.BM))
    launch = (f"launch: {groups[0]} x {groups[1]}{f' x {batches}' if batches > 1 else ''} "
              f"groups of {threads} work-items ({threads // 32} warps of {t.TM}x{t.TN}), tile "
              f"{t.BM}x{t.BN}x{t.BK}, {precision} operands, fp32 accumulation (CUDA: wmma)")
    gsize, lsize = (groups[0] * threads, groups[1]), (threads, 1)
    if batches > 1:
        gsize, lsize = (*gsize, batches), (*lsize, 1)
    what = (f"GEMM split along K into {splits} slices of {ks}" if splits > 1 else
            f"{batches} GEMMs" if batches > 1 else "GEMM")
    return Kernel(name=name, template=portable, params=params, consts=c,
                  global_size=gsize, local_size=lsize,
                  doc=f"{doc.strip()}\n{what} M={M} N={N} K={K}; {launch}",
                  flops=2 * M * N * K * (1 if splits > 1 else batches),
                  shared_bytes=max(tc_shared_bytes(t, precision), p.shared_bytes), layer=layer,
                  dialect_templates={"cuda": cuda}, precision=precision)
