"""backend="cpu": the fast path for a machine without a GPU. `auto` takes it when no CUDA device
or OpenCL GPU answers; the NumPy backend stays the readable reference it is checked against.

Where the time goes, and what this backend does about it (profile in README "Performance"):
- the GEMMs (conv forward, weight and data gradients; fc) go to BLAS sgemm through NumPy, on
  views of reused buffers, never copies; BLAS runs on one thread (threadpoolctl) and each
  GEMM is cut into blocks that every core's thread takes in turn (runtime/host_gemm.py), so
  on a machine busier than its cores no GEMM waits for a descheduled thread's fixed share;
- everything between them is host C from codegen/cpu_kernels.py (the C dialect, OpenMP over
  every core, built once by the system compiler and cached, loaded with ctypes): im2col as one
  contiguous (C·k·k, N·Ho·Wo) gather instead of a strided 6-D transpose; col2im per input plane;
  the bias + ReLU epilogue fused with the GEMM result's transpose back to NCHW; ReLU's
  backward, that transpose and the bias gradient in one pass; LRN and max pooling in one pass
  each way; the paper's SGD update in place, one pass per parameter (the NumPy path makes about
  eight);
- stride-1 convs with 3×3 and 5×5 filters (AlexNet's conv2-5) run by Winograd's F(2×2, 3×3)
  and F(3×3, 5×5) (codegen/winograd.py; Lavin & Gray 2016) in all three directions: α² batched
  sgemms between rendered transforms, 2.25× (3×3) and 4.6× (5×5) fewer multiplies than the
  im2col GEMM; the
  forward keeps the transformed filters and input tiles (U, V) for the backward. `winograd`
  ({r: m}) picks the tile per filter size; {} turns it off;
- parts of a conv layer that read the same input (conv1's, conv3's with `connect all`) gather
  the columns (or transform the input tiles) once and run one GEMM over all their output
  channels;
- conv keeps the forward's columns for the backward only within a budget (keep_cols_floats;
  first the columns several parts share) and gathers the others again (cheap in C), so the
  step's peak memory stays below PyTorch's.
Layouts are the reference's (NCHW activations, PyTorch's parameter layouts), so parameters,
checkpoints and every other backend agree. Layers without a host kernel (ReLU on its own,
dropout, average pooling, softmax: small next to the GEMMs) run the reference's NumPy code;
dropout's uniforms come from the host C Philox kernel (`HostNoise`), the reference's bits.

Float32 only: a float64 net (gradient checks) runs the NumPy reference throughout. Without a
working C compiler with OpenMP, the backend says so in one line and runs NumPy.
"""
from __future__ import annotations

import sys

import numpy as np

from ..codegen.cpu_kernels import kernel_signatures, render_cpu_module
from ..kernel.dialects import C
from ..kernel.philox import seed_key
from ..ops.maxpool import pool_geometry
from .host_build import build_host_kernels, host_threads, ptr
from .host_gemm import GemmTeam
from .noise import ImageNoise
from .numpy_backend import NumpyNet
from .sgd import layer_multipliers, sgd_step

_BUILT: tuple | None = None


class HostNoise(ImageNoise):
    """The step's noise key, its uniforms drawn by the host C kernel `dropout_uniforms` (the
    NumPy reference's bits, over every core)."""

    def __init__(self, kernels, key: ImageNoise):
        super().__init__(key.seed, key.step, key.first, key.count)
        self.k = kernels

    def uniforms(self, layer: int, elements: int) -> np.ndarray:
        k0, k1 = seed_key(self.seed)
        u = np.empty((self.count, elements), np.float32)
        if u.size:
            if self.step >= 1 << 32 or layer >= 1 << 32 or self.first + self.count > 1 << 32 \
                    or elements > 1 << 34:
                return super().uniforms(layer, elements)    # raises, saying which index
            self.k.dropout_uniforms(ptr(u), self.count, elements, k0, k1, self.step,
                                    self.first, layer)
        return u


def host_kernels():
    """(kernels or None, note), built on first use and kept for the process."""
    global _BUILT
    if _BUILT is None:
        _BUILT = build_host_kernels(render_cpu_module(), kernel_signatures())
    return _BUILT


def cpu_threads() -> int:
    """The threads this backend runs on: host_build.host_threads() (the cores this process
    may use, within a container's CPU quota and $OMP_NUM_THREADS)."""
    return host_threads()


def limit_blas_threads(n: int):
    """Cap BLAS at n threads (threadpoolctl); returns the limiter, or None without it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n, user_api="blas")


class CpuNet(NumpyNet):
    backend = "cpu"
    dialect = C
    requires = ("NumPy", "a C compiler with OpenMP (without one: the NumPy reference)")
    auto_refusal = "cpu: no C compiler with OpenMP"

    @classmethod
    def available(cls) -> bool:
        return True           # without a compiler it still runs, as NumPy (see the note)

    @classmethod
    def auto_choice(cls) -> str | None:
        if host_kernels()[0] is None:
            return None
        return f"C + OpenMP host kernels and BLAS on {cpu_threads()} cores"

    @property
    def device_name(self) -> str:
        """The host, and what runs there."""
        return self.device_names[0]

    def physical_devices(self) -> list[str]:
        import platform
        runs = "C + OpenMP kernels, NumPy BLAS" if host_kernels()[0] is not None else \
            "the NumPy reference: no C compiler"
        return [f"host CPU ({platform.processor() or platform.machine()}, {cpu_threads()} "
                f"cores; {runs})"]

    def _open_devices(self) -> None:
        k, note = host_kernels()
        self.k = k if self.dtype == np.float32 else None
        self.note = note
        if k is None:
            print(f"netspec: backend 'cpu': {note}; running the NumPy reference instead",
                  file=sys.stderr)
        self.threads = cpu_threads()
        # BLAS on one thread, its GEMMs split over the team's threads (runtime/host_gemm.py);
        # without threadpoolctl BLAS keeps its own threads and the team stays one
        self._blas_limit = limit_blas_threads(1)
        self._gemm = GemmTeam.shared(self.threads if self._blas_limit is not None else 1)
        self._scratch: dict[str, np.ndarray] = {}
        self._grads = None
        self._backward_grads = self._dw_out = None
        self._velocity: dict[str, np.ndarray] | None = None
        self._fwd_stash: dict = {}
        self._kept: frozenset = frozenset()
        self._plans: dict[tuple, frozenset] = {}

    # -- scratch ----------------------------------------------------------------------------
    def _buffer(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """A reused buffer (grown when needed): the array's contents are undefined."""
        n = int(np.prod(shape))
        buf = self._scratch.get(name)
        if buf is None or buf.size < n or buf.dtype != dtype:
            buf = self._scratch[name] = np.empty(n, dtype)
        return buf[:n].reshape(shape)

    def _gradient_buffers(self):
        """The last step's gradient arrays again when nobody but this net holds them (the
        usual train/bench loop: update, then the next step), else fresh ones: fresh arrays as
        large as the parameters are paged in anew every step. The backward writes conv and
        fc weight gradients straight into them (`_grad_view`)."""
        old = self._grads
        if old is not None and sys.getrefcount(old) <= 3 and \
                all(sys.getrefcount(a) <= 3 for a in old.values()):
            grads = old
        else:
            grads = super()._gradient_buffers()
        self._backward_grads = grads
        return grads

    def _grad_view(self, layer, part):
        """This part's rows of its weight gradient in the arrays being filled, or None."""
        if self._backward_grads is None or layer.data_parallel:   # replicas' are summed
            return None
        slot = self._slots[layer.name, part.index]
        # conv's and fc's first tensor is their weight (Op.parameters)
        return self._backward_grads[slot.names[0]][slot.rows[0]]

    def _dw_array(self, shape) -> np.ndarray:
        """Where a weight gradient of `shape` is written: this part's rows of the arrays
        being filled (_grad_view) when they are one C-contiguous block of that shape, else a
        fresh array."""
        dw = self._dw_out
        if dw is None or dw.shape != tuple(shape) or not dw.flags.c_contiguous:
            dw = np.empty(shape, np.float32)
        return dw

    # -- layers -----------------------------------------------------------------------------
    def _step_noise(self, n: int) -> ImageNoise:
        key = super()._step_noise(n)
        return key if self.k is None else HostNoise(self.k, key)

    def forward_part(self, layer, part, x, params, *, train, noise):
        fn = getattr(self, f"_fwd_{layer.type}", None) if self.k is not None else None
        if self.rounds_operands(layer):      # `precision tf32|bf16`: NumPy's rounded GEMMs
            fn = None
        elif fn is None and self.k is not None and self._op_host(layer, "host_forward"):
            y, cache = self._op_host(layer, "host_forward")(
                self._run_host, layer.attrs, np.ascontiguousarray(x), params, relu=layer.relu)
            return y, ("cpu-op", cache)
        if fn is None:
            return super().forward_part(layer, part, x, params, train=train, noise=noise)
        if layer.type == "conv":
            return fn(layer, np.ascontiguousarray(x), params, part, x)
        return fn(layer, np.ascontiguousarray(x), params)

    def backward_part(self, layer, part, dy, cache, *, input_grad):
        if isinstance(cache, tuple) and cache and isinstance(cache[0], str) and \
                cache[0] == "cpu-op":
            return self._op_host(layer, "host_backward")(
                self._run_host, layer.attrs, np.ascontiguousarray(dy), cache[1],
                input_grad=input_grad)
        fn = getattr(self, f"_bwd_{layer.type}", None) if self.k is not None else None
        if fn is None or not (isinstance(cache, tuple) and cache and cache[0] == "cpu"):
            return super().backward_part(layer, part, dy, cache, input_grad=input_grad)
        self._dw_out = self._grad_view(layer, part) if layer.weighted else None
        return fn(layer, np.ascontiguousarray(dy), cache[1:], input_grad)

    # A layer type whose module declares host kernels (HOST_KERNELS, collected by
    # codegen/cpu_kernels.py) runs them through its host_forward/host_backward(run, attrs,
    # ...), `run(name, *args)` calling kernel `name` with arrays by pointer.
    @staticmethod
    def _op_host(layer, name: str):
        return layer.op._module_function(name, required=False)

    def _run_host(self, name: str, *args) -> None:
        getattr(self.k, name)(*(ptr(a) if isinstance(a, np.ndarray) else a for a in args))

    # The columns of at most this many floats at a time: a conv can run image block by image
    # block, so that one block's buffer is all the column memory a step needs. Each block is
    # a GEMM of its own, and smaller GEMMs use BLAS less well (each wakes its threads, each
    # has a thinner N), so by default the whole batch is one block; lower it to trade speed
    # for memory.
    chunk_floats = 1 << 40

    def conv_algorithm(self, layer) -> str:
        """How this backend runs `layer` (a conv): "winograd F(mxm,rxr)" or "im2col+GEMM"."""
        a = layer.attrs
        m = self._wino_tile(layer)
        return f"winograd F({m}x{m},{a['size']}x{a['size']})" if m else "im2col+GEMM"

    def _blocks(self, n: int, per_image: int):
        step = max(1, min(n, self.chunk_floats // max(per_image, 1)))
        return [(i, min(i + step, n)) for i in range(0, n, step)], step

    # Columns kept from the forward for the backward, at most this many floats (192 MB) in a
    # step: the backward then skips the gather. Which ones: `_keep_plan`, shared columns first
    # (one kept buffer saves a gather per part that reads it). Only loss_and_grads keeps any.
    # For AlexNet at batch 32 the budget holds conv1's and conv3's shared columns; a gather
    # is cheap next to its GEMM, so the budget is a memory bound, not a speed knob.
    keep_cols_floats = 48_000_000

    # Stride-1 convs with these filter sizes run by Winograd's F(m×m, r×r), {r: m}
    # (codegen/winograd.py); the others, and every strided conv, by im2col + GEMM.
    # 5×5 by F(3×3, 5×5): α = m + r − 1 = 7, so α² = 49 transformed values per 9 outputs
    # (5.4 each) against F(2×2, 5×5)'s 36 per 4 (9 each): 40% less data through the
    # transforms and GEMMs; AlexNet's and tiny-alexnet's conv2 planes (27×27, 15×15) are whole
    # 3×3 tiles. Its error against float64 stays at F(2×2)'s (about 1e-5 of the largest
    # value). 3×3 by F(2×2): larger tiles on 13×13 planes pad more and gain nothing.
    winograd = {3: 2, 5: 3}
    # ... on output planes of at least this many pixels: on smaller ones the tiles' padding
    # (7×7 -> 8×8 in 2×2 tiles: 31% more work) and the short GEMMs cost more than the fewer
    # multiplies save; AlexNet's 13×13 and 27×27 planes gain.
    winograd_min_pixels = 144
    _keep_wino = False

    def _wino_tile(self, layer) -> int | None:
        """Winograd's output tile m for this conv layer (every part has the layer's output
        plane), or None for im2col + GEMM."""
        a = layer.attrs
        pixels = int(np.prod(layer.out_shape[1:]))
        if a["stride"] != 1 or pixels < self.winograd_min_pixels or self.k is None:
            return None
        return self.winograd.get(a["size"])

    def _forward_pass(self, x, **kw):
        self._fwd_stash = {}
        # columns are kept only when the caches are, i.e. for a backward (loss_and_grads)
        self._kept = self._keep_plan(x.shape[0]) if kw.get("keep_caches") else frozenset()
        self._keep_wino = bool(kw.get("keep_caches"))
        return super()._forward_pass(x, **kw)

    def _keep_plan(self, n: int) -> frozenset:
        """The (conv layer, first part) whose columns a step at batch n keeps, within
        keep_cols_floats: first those several parts share (each saves one gather per part),
        then the smallest (most layers per byte); never ones gathered in image blocks."""
        key = (n, self.keep_cols_floats, self.chunk_floats)
        if key not in self._plans:
            cands = []
            for layer in self.body:
                if layer.type != "conv" or self._wino_tile(layer):     # no columns
                    continue
                for q in layer.parts:
                    group = self._conv_group(layer, q)
                    if group[0] is not q:
                        continue
                    c, h, w = layer.part_in_shape(q)
                    ho, wo = layer.part_out_shape(q)[1:]
                    per_image = c * layer.attrs["size"] ** 2 * ho * wo
                    if n * per_image <= self.chunk_floats:
                        cands.append((-len(group), n * per_image, (layer.name, q.index)))
            chosen, total = set(), 0
            for _, floats, which in sorted(cands):
                if total + floats <= self.keep_cols_floats:
                    chosen.add(which)
                    total += floats
            self._plans[key] = frozenset(chosen)
        return self._plans[key]

    def _conv_group(self, layer, part) -> list:
        """The parts of this conv layer that read the very same input as `part` (conv1's,
        whose input is replicated, or conv3's with `connect all`) and own consecutive rows of
        one weight tensor (an even or uneven `split`), in layer order: they share one im2col
        and one GEMM over all their output channels. [part] when there is no such sibling."""
        def key(q):      # every part of a replicated layer (the input) is one array
            return tuple((s.layer, 0 if self.graph.layer(s.layer).replicated else s.part,
                          s.start, s.channels, s.offset) for s in q.sources)
        k = key(part)
        group = [q for q in layer.parts if key(q) == k]
        slots = [self._slots[layer.name, q.index] for q in group]
        rows = [sl.rows[0] for sl in slots]
        if len(group) < 2 or len({sl.names[0] for sl in slots}) != 1 or \
                any(r.step not in (None, 1) for r in rows) or \
                any(r0.stop != r1.start for r0, r1 in zip(rows, rows[1:])):
            return [part]
        return group

    def _group_weights(self, layer, group) -> np.ndarray:
        """The group's weight rows as one (O, C·k·k) matrix: a view of the tensor."""
        slots = [self._slots[layer.name, q.index] for q in group]
        w = self._params[slots[0].names[0]][slots[0].rows[0].start:slots[-1].rows[0].stop]
        return w.reshape(w.shape[0], -1)

    def _group_params(self, layer, part, params, alone: bool = False):
        """(group, weights, outs): the parts that share this part's input (_conv_group; just
        [part] when `alone` or when `part` is not the group's first, i.e. its output was not
        stashed for this input), their weight rows as one (O, C·k·k) view, and each part's
        (weight, bias)."""
        group = [part] if alone or part is None else self._conv_group(layer, part)
        if group[0] is not part:
            group = [part]
        if len(group) > 1:
            return group, self._group_weights(layer, group), \
                [_with_bias(self.part_params(layer, q)) for q in group]
        w = params[0]
        return group, w.reshape(w.shape[0], -1), [_with_bias(params)]

    def _cols_for(self, layer, part, floats: int) -> tuple[np.ndarray, bool]:
        """A buffer for `floats` columns, and whether they are kept for the backward: a
        buffer of this layer part's own (reused step to step) when the plan keeps them, else
        the shared scratch."""
        if (layer.name, part.index) in self._kept:
            return self._buffer(f"cols:{layer.name}:{part.index}", (floats,)), True
        return self._buffer("cols", (floats,)), False

    def _fwd_conv(self, layer, x, params, part=None, x_in=None):
        stashed = self._fwd_stash.pop((layer.name, part.index), None) if part else None
        if stashed is not None and stashed[0] is x_in:
            return stashed[1]
        a = layer.attrs
        k, s, p = a["size"], a["stride"], a["pad"]
        n, c, h, wd = x.shape
        ho, wo = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
        kk, pix = c * k * k, ho * wo
        m = self._wino_tile(layer)
        if m:
            return self._fwd_wino(layer, x, params, part, x_in, m)
        blocks, step = self._blocks(n, kk * pix)
        group, w2, outs = self._group_params(layer, part, params, alone=len(blocks) > 1)
        o = w2.shape[0]
        ys = [np.empty((n, wq.shape[0], ho, wo), np.float32) for wq, _ in outs]
        cols_buf, kept = self._cols_for(layer, group[0], kk * step * pix) if len(blocks) == 1 \
            else (self._buffer("cols", (kk * step * pix,)), False)
        ym_buf = self._buffer("gemm_out", (o * step * pix,))
        for i, j in blocks:
            cols = cols_buf[:kk * (j - i) * pix].reshape(kk, (j - i) * pix)
            self.k.im2col(ptr(x[i:j]), ptr(cols), j - i, c, h, wd, k, s, p, ho, wo)
            ym = ym_buf[:o * (j - i) * pix].reshape(o, (j - i) * pix)
            self._gemm.matmul(w2, cols, out=ym)
            row = 0
            for (wq, bq), y in zip(outs, ys):
                self.k.bias_act(ptr(ym[row:]), ptr(bq), ptr(y[i:j]), j - i, wq.shape[0], pix,
                                int(layer.relu))
                row += wq.shape[0]
        kept_cols = cols_buf.reshape(kk, n * pix) if kept else None
        results = [(y, ("cpu", x, wq, y if layer.relu else None, kept_cols, None))
                   for (wq, _), y in zip(outs, ys)]
        for q, r in zip(group[1:], results[1:]):
            self._fwd_stash[layer.name, q.index] = (x_in, r)
        return results[0]

    def _fwd_wino(self, layer, x, params, part, x_in, m: int):
        """The conv by Winograd's F(m×m, r×r) (codegen/winograd.py): transform the input
        tiles once for every part that reads this input, the group's filters, α² GEMMs
        M[ξ] = U[ξ] @ V[ξ] over all the group's output channels, then each part's output
        tiles with the bias and ReLU. The backward keeps U and V."""
        r, pad = layer.attrs["size"], layer.attrs["pad"]
        a = m + r - 1
        n, c, h, wd = x.shape
        ho, wo = h + 2 * pad - r + 1, wd + 2 * pad - r + 1
        th, tw = -(-ho // m), -(-wo // m)
        t = n * th * tw
        group, w_all, outs = self._group_params(layer, part, params)
        o = w_all.shape[0]
        first = group[0].index if group[0] is not None else 0
        keep = self._keep_wino
        tag = f"{layer.name}:{first}" if keep else "scratch"
        U = self._buffer(f"wino_U:{tag}", (a * a, o, c))
        V = self._buffer(f"wino_V:{tag}", (a * a, c, t))
        M = self._buffer("wino_M", (a * a, o, t))
        fn = f"_{m}x{r}"
        getattr(self.k, "wino_filter" + fn)(ptr(np.ascontiguousarray(w_all)), ptr(U), o, c)
        getattr(self.k, "wino_input" + fn)(ptr(x), ptr(V), n, c, h, wd, pad, th, tw)
        self._gemm.matmul(U, V, out=M)
        results, row = [], 0
        for wq, bq in outs:
            oq = wq.shape[0]
            y = np.empty((n, oq, ho, wo), np.float32)
            getattr(self.k, "wino_output" + fn)(ptr(M) + 4 * row * t, ptr(bq), ptr(y), n, oq, ho,
                                                wo, th, tw, o * t, int(layer.relu))
            wino = (m, U[:, row:row + oq], V, th, tw) if keep else None
            results.append((y, ("cpu", x, wq, y if layer.relu else None, None, wino)))
            row += oq
        for q, res in zip(group[1:], results[1:]):
            self._fwd_stash[layer.name, q.index] = (x_in, res)
        return results[0]

    def _bwd_wino(self, layer, dy, cache, input_grad):
        x, w, y, _, (m, U, V, th, tw) = cache
        r, pad = layer.attrs["size"], layer.attrs["pad"]
        a = m + r - 1
        n, o, ho, wo = dy.shape
        c, h, wd = x.shape[1:]
        t = n * th * tw
        fn = f"_{m}x{r}"
        dM = self._buffer("wino_M", (a * a, o, t))
        db = np.empty(o, np.float32)
        getattr(self.k, "wino_dout" + fn)(ptr(dy), ptr(y) if y is not None else None, ptr(dM),
                                          ptr(db), n, o, ho, wo, th, tw)
        dU = self._buffer("wino_dU", (a * a, o, c))
        self._gemm.matmul(dM, V.transpose(0, 2, 1), out=dU)
        dw = self._dw_array(w.shape)
        getattr(self.k, "wino_dfilter" + fn)(ptr(dU), ptr(dw), o, c)
        dx = None
        if input_grad:
            dV = self._buffer("wino_dV", (a * a, c, t))
            self._gemm.matmul(U.transpose(0, 2, 1), dM, out=dV)
            dx = np.empty(x.shape, np.float32)
            getattr(self.k, "wino_din" + fn)(ptr(dV), ptr(dx), n, c, h, wd, pad, th, tw)
        return dx, _grads(layer, dw, db)

    def _bwd_conv(self, layer, dy, cache, input_grad):
        if cache[-1] is not None:
            return self._bwd_wino(layer, dy, cache, input_grad)
        x, w, y, kept, _ = cache
        a = layer.attrs
        k, s, p = a["size"], a["stride"], a["pad"]
        n, o, ho, wo = dy.shape
        c = x.shape[1]
        kk, pix = c * k * k, ho * wo
        w2 = w.reshape(o, kk)
        dyt = self._buffer("dyt", (o, n, pix))
        db = np.empty(o, np.float32)
        self.k.relu_grad_t(ptr(dy), ptr(y) if y is not None else None, ptr(dyt), ptr(db),
                           n, o, pix)
        blocks, step = ([(0, n)], n) if kept is not None else self._blocks(n, kk * pix)
        # the gathered columns; dcols go to the scratch (kept columns may serve another part)
        cols_buf = self._buffer("cols", (kk * step * pix,))
        dwt = np.zeros((kk, o), np.float32)                 # dW transposed, summed by block
        part = np.empty((kk, o), np.float32) if len(blocks) > 1 else dwt
        dx = np.empty(x.shape, np.float32) if input_grad else None
        for i, j in blocks:
            dcols = cols_buf[:kk * (j - i) * pix].reshape(kk, (j - i) * pix)
            if kept is not None:
                cols = kept
            else:
                cols = dcols
                self.k.im2col(ptr(x[i:j]), ptr(cols), j - i, c, *x.shape[2:], k, s, p, ho,
                              wo)
            g = dyt[:, i:j].reshape(o, (j - i) * pix)       # a view: rows N·P apart
            self._gemm.matmul(cols, g.T, out=part)
            if part is not dwt:
                dwt += part
            if input_grad:
                self._gemm.matmul(w2.T, g, out=dcols)               # dcols, over the columns
                self.k.col2im(ptr(dcols), ptr(dx[i:j]), j - i, c, *x.shape[2:], k, s, p, ho,
                              wo)
        return dx, _grads(layer, dwt.T.reshape(w.shape), db)

    def _fwd_fc(self, layer, x, params):
        w, b = _with_bias(params)
        n = x.shape[0]
        x2 = x.reshape(n, -1)
        o = w.shape[0]
        ym = self._buffer("gemm_out", (o, n))
        self._gemm.matmul(w, x2.T, out=ym)  # the large operand untransposed (ops/fc)
        y = np.empty((n, o), np.float32)
        self.k.bias_act(ptr(ym), ptr(b), ptr(y), n, o, 1, int(layer.relu))
        return y, ("cpu", x2, w, y if layer.relu else None, x.shape)

    def _bwd_fc(self, layer, dy, cache, input_grad):
        x2, w, y, x_shape = cache
        n, o = dy.shape
        gt = self._buffer("dyt", (o, n))
        db = np.empty(o, np.float32)
        self.k.relu_grad_t(ptr(dy), ptr(y) if y is not None else None, ptr(gt), ptr(db),
                           n, o, 1)
        dw = self._dw_array(w.shape)
        self._gemm.matmul(gt, x2, out=dw)  # fc6: 151 MB, written once, in place
        if not input_grad:
            return None, _grads(layer, dw, db)
        dxt = self._buffer("fc_dxt", (x2.shape[1], n))
        self._gemm.matmul(w.T, gt, out=dxt)
        dx = np.empty((n, x2.shape[1]), np.float32)      # never a view of the scratch
        np.copyto(dx, dxt.T)
        return dx.reshape(x_shape), _grads(layer, dw, db)

    def _fwd_lrn(self, layer, x, params):
        a = layer.attrs
        n, c = x.shape[:2]
        hw = int(np.prod(x.shape[2:]))
        y = np.empty_like(x)
        scale = np.empty_like(x)
        self.k.lrn_fwd(ptr(x), ptr(y), ptr(scale), n, c, hw, a["size"], a["alpha"],
                       a["beta"], a["k"])
        return y, ("cpu", x, scale)

    def _bwd_lrn(self, layer, dy, cache, input_grad):
        if not input_grad:
            return None, ()
        x, scale = cache
        a = layer.attrs
        n, c = x.shape[:2]
        hw = int(np.prod(x.shape[2:]))
        t = self._buffer("lrn_t", x.shape)
        dx = np.empty_like(x)
        self.k.lrn_bwd(ptr(x), ptr(scale), ptr(dy), ptr(t), ptr(dx), n, c, hw, a["size"],
                       a["beta"], float(np.float32(-2.0 * a["alpha"] * a["beta"])))
        return dx, ()

    def _fwd_maxpool(self, layer, x, params):
        n, c, h, w = x.shape
        z, s, p, ho, wo = pool_geometry(layer.attrs, x.shape[1:])
        y = np.empty((n, c, ho, wo), np.float32)
        arg = np.empty((n, c, ho, wo), np.int32)
        self.k.maxpool_fwd(ptr(x), ptr(y), ptr(arg), n * c, h, w, z, s, p, ho, wo)
        return y, ("cpu", x.shape, arg)

    def _bwd_maxpool(self, layer, dy, cache, input_grad):
        if not input_grad:
            return None, ()
        x_shape, arg = cache
        n, c, h, w = x_shape
        dx = np.empty(x_shape, np.float32)
        self.k.maxpool_bwd(ptr(dy), ptr(arg), ptr(dx), n * c, h * w,
                           dy.shape[2] * dy.shape[3])
        return dx, ()

    # -- training ---------------------------------------------------------------------------
    def loss_and_grads(self, x, labels, train=False):
        try:
            loss, grads = super().loss_and_grads(x, labels, train)
        finally:
            self._backward_grads = self._dw_out = None
        self._grads = grads
        return loss, grads

    def _multipliers(self):
        lr, decay = layer_multipliers(self.graph)
        return {name: (lr[name], decay[name]) for name in lr}

    def update(self, lr: float, momentum: float = 0.9, weight_decay: float = 0.0005) -> None:
        """The paper's SGD step (§5), in place, with the gradients of the last
        loss_and_grads: per tensor v <- μ·v − (weight_decay·decay_mult)·(lr·lr_mult)·w −
        (lr·lr_mult)·g ; w <- w + v, one pass over w, v and g; the one rule of
        runtime/sgd.py (`sgd_step`), its four steps rounded alike, its scalars computed as
        `sgd_update` computes them."""
        if self._grads is None:
            raise RuntimeError("update() needs the gradients of a loss_and_grads() call first")
        mults = self._multipliers()          # the trainable tensors; state has none
        if self._velocity is None:
            self._velocity = {k: np.zeros_like(self._params[k]) for k in mults}
        for name, (lr_mult, decay_mult) in mults.items():
            w, v, g = self._params[name], self._velocity[name], self._grads[name]
            if self.k is None or w.dtype != np.float32:
                eps = lr * lr_mult
                if w.dtype == np.float32:
                    eps = np.float32(eps)
                sgd_step(w, v, g, eps, momentum, weight_decay * decay_mult)
                continue
            eps = np.float32(lr * lr_mult)
            wd = weight_decay * decay_mult
            g = np.ascontiguousarray(g, np.float32)
            self.k.sgd(ptr(w), ptr(v), ptr(g), w.size, float(np.float32(momentum)),
                       float(np.float32(wd * eps)), float(eps))

    def velocities(self) -> dict[str, np.ndarray]:
        """The momentum buffers v of the trainable tensors, keyed like parameters() (zeros
        before the first update); state tensors have none, as on the kernel backends."""
        if self._velocity is None:
            return {k: np.zeros_like(self._params[k]) for k in self._multipliers()}
        return {k: v.copy() for k, v in self._velocity.items()}

    def reset_momentum(self) -> None:
        self._velocity = None

    def load_velocities(self, velocities) -> None:
        """Set the momentum buffers v of the trainable tensors (keyed like parameters()), e.g.
        when resuming a run. ValueError names any that are missing."""
        trained = list(self._multipliers())
        missing = [n for n in trained if n not in velocities]
        if missing:
            raise ValueError(f"load_velocities: missing {', '.join(missing)}")
        self._velocity = {n: np.array(velocities[n], dtype=self.dtype, copy=True, order="C")
                          .reshape(self._params[n].shape) for n in trained}


def _with_bias(params: tuple) -> tuple:
    """(w, b) of a conv or fc part; a zero b for one without a bias (`nobias`), so that the
    host kernels' fused epilogue serves both."""
    return params if len(params) == 2 else (params[0], np.zeros(len(params[0]), np.float32))


def _grads(layer, dw, db) -> tuple:
    """The gradients of a conv or fc part's tensors: (dw,) without a bias."""
    return (dw,) if layer.attrs.get("nobias") else (dw, db)
