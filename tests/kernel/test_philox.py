"""Philox4x32-10 (netspec/kernel/philox.py): the NumPy reference against Random123's published
known answers, and the C text every dialect renders against the reference, bit for bit: OpenCL
on PoCL, CUDA C on the emulator, host C in the cpu backend's kernels.

Known answers: Random123's tests/kat_vectors (D. E. Shaw Research; Salmon et al., SC 2011),
the "philox4x32 10" and "philox4x32 7" lines: counter (4 words), key (2 words) -> 4 words."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from netspec.kernel import Kernel, elementwise_launch, params
from netspec.kernel.dialects import CUDA, OPENCL
from netspec.kernel.philox import (
    DROPOUT_MASK,
    PHILOX_WORDS,
    keep_threshold,
    mask_launch_consts,
    philox4x32,
    seed_key,
    uniforms,
)

PI_CTR = (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)
PI_KEY = (0xA4093822, 0x299F31D0)
KAT = [  # rounds, counter, key, expected
    (10, (0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (10, (0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (10, PI_CTR, PI_KEY, (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    (7, (0, 0, 0, 0), (0, 0), (0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48)),
    (7, (0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x5207DDC2, 0x45165E59, 0x4D8EE751, 0x8C52F662)),
    (7, PI_CTR, PI_KEY, (0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A)),
]


@pytest.mark.parametrize("rounds,ctr,key,want", KAT)
def test_numpy_reference_gives_random123s_known_answers(rounds, ctr, key, want):
    assert philox4x32(ctr, key, rounds).tolist() == list(want)


def test_numpy_reference_is_elementwise_over_arrays():
    """A batch of counters gives each one's own answer (the vectorised path is the scalar one)."""
    ctr = np.array([c for _, c, _, _ in KAT[:3]], np.uint32).T          # (4, 3)
    got = philox4x32(ctr, (0, 0))
    for i in range(3):
        assert got[:, i].tolist() == philox4x32(ctr[:, i], (0, 0)).tolist()
    assert got[:, 0].tolist() == list(KAT[0][3])


def test_words_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 2\^32\)"):
        philox4x32((1 << 32, 0, 0, 0), (0, 0))
    with pytest.raises(ValueError, match=r"\[0, 2\^64\)"):
        seed_key(1 << 64)
    with pytest.raises(ValueError, match="step"):
        uniforms(0, 1 << 32, 0, 0, 1, 4)


def test_uniforms_are_the_top_24_bits_of_each_word_in_element_order():
    """Element e of image i: word e % 4 of counter (e // 4, i, layer, step), key = the seed's
    two halves, times 2^-24; exact in float32."""
    seed, step, layer = 0x0123456789ABCDEF, 9, 4
    u = uniforms(seed, step, layer, 5, 2, 7)
    assert u.dtype == np.float32 and u.shape == (2, 7)
    for i in range(2):
        for e in range(7):
            w = int(philox4x32((e // 4, 5 + i, layer, step), (0x89ABCDEF, 0x01234567))[e % 4])
            assert u[i, e] == (w >> 8) / 2.0 ** 24


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.5, 0.9, 0.999999])
def test_integer_keep_test_is_the_float32_comparison(p):
    t = keep_threshold(p)
    top = np.arange(1 << 24, dtype=np.int64)              # every possible (word >> 8)
    as_float = top.astype(np.float32) * np.float32(2.0 ** -24)
    np.testing.assert_array_equal(top >= t, as_float >= np.float32(p))


# -- the rendered text on the devices ------------------------------------------------------------
WORDS_PARAMS = params("in_int ctr", "in_int key", "out out")


def words_kernel(count: int) -> Kernel:
    gs, ls = elementwise_launch(count, 64)
    return Kernel("philox_words", PHILOX_WORDS, WORDS_PARAMS, {"COUNT": count}, gs, ls)


def counters():
    """The KATs' counters and keys at 10 rounds, then random ones (all under one key per
    launch: the KAT keys differ, so one launch per KAT)."""
    rng = np.random.default_rng(3)
    extra = rng.integers(0, 1 << 32, (37, 4), dtype=np.uint64).astype(np.uint32)
    cases = [(np.array([c], np.uint32), k) for r, c, k, _ in KAT if r == 10]
    cases.append((extra, (0xDEADBEEF, 0x12345678)))
    return cases


def from_floats(out: np.ndarray, count: int) -> np.ndarray:
    """The kernel's two exact floats per word back to the (4, count) words."""
    f = out.reshape(count, 4, 2).astype(np.uint64)
    return ((f[..., 0] << np.uint64(16)) | f[..., 1]).T.astype(np.uint32)


def run_opencl(kernel: Kernel, arrays: dict, out_elements: int, scalars=()) -> np.ndarray:
    cl = pytest.importorskip("pyopencl", reason="pyopencl is not installed")
    from netspec.runtime.opencl_backend import find_device
    device = find_device()
    if device is None:
        pytest.skip("no OpenCL device (install pocl)")
    ctx = cl.Context([device])
    q = cl.CommandQueue(ctx)
    prog = cl.Program(ctx, OPENCL.prelude + kernel.render(OPENCL)).build()
    mf = cl.mem_flags
    bufs = [cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a) for a in arrays.values()]
    out = np.full(out_elements, np.nan, np.float32)
    ob = cl.Buffer(ctx, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=out)
    args = (*bufs, ob) if not scalars else (ob, *scalars)
    getattr(prog, kernel.name)(q, kernel.global_size, kernel.local_size, *args)
    cl.enqueue_copy(q, out, ob)
    q.finish()
    return out


def run_cuda_emulated(kernel: Kernel, arrays: dict, out_elements: int,
                      scalars=()) -> np.ndarray:
    from netspec.runtime.cuda_backend import cuda_emulated
    if not cuda_emulated() or shutil.which("g++") is None:
        pytest.skip("needs the CUDA emulator (NETSPEC_CUDA_EMULATE=1, g++ is not on the PATH)")
    from netspec.runtime.cuda_emulator import cupy_model as emu
    grid = tuple(g // b for g, b in zip(kernel.global_size, kernel.local_size))
    with emu.Device(0):
        st = emu.Stream(non_blocking=True)
        devs = []
        for a in arrays.values():
            d = emu.ndarray(a.shape, a.dtype)
            d.set(a, stream=st)
            devs.append(d)
        od = emu.ndarray((out_elements,), np.float32)
        fn = emu.RawModule(code=CUDA.prelude + kernel.render(CUDA)).get_function(kernel.name)
        args = (*devs, od) if not scalars else (od, *scalars)
        fn(grid, tuple(kernel.local_size), args, stream=st)
        out = od.get(stream=st, out=np.empty(out_elements, np.float32))
    st.synchronize()
    return out


RUNNERS = {"opencl": run_opencl, "cuda-emulated": run_cuda_emulated}


@pytest.mark.parametrize("runner", RUNNERS)
def test_rendered_philox_gives_the_known_answers_and_the_references_words(runner):
    for ctr, key in counters():
        n = len(ctr)
        arrays = {"ctr": ctr.reshape(-1).view(np.int32),
                  "key": np.array(key, np.uint32).view(np.int32)}
        out = RUNNERS[runner](words_kernel(n), arrays, 8 * n)
        np.testing.assert_array_equal(from_floats(out, n), philox4x32(ctr.T, key))
    # and the KAT values themselves, not only the reference's
    ctr = np.array([PI_CTR], np.uint32)
    out = RUNNERS[runner](words_kernel(1), {"ctr": ctr.view(np.int32),
                                            "key": np.array(PI_KEY, np.uint32).view(np.int32)}, 8)
    assert from_floats(out, 1)[:, 0].tolist() == list(KAT[2][3])


def mask_kernel(batch, layer, channels, per_channel, p) -> Kernel:
    consts, items = mask_launch_consts(batch=batch, layer=layer, channels=channels,
                                       per_channel=per_channel, p=p)
    gs, ls = elementwise_launch(items, 64)
    return Kernel("drop_mask", DROPOUT_MASK,
                  params("in_int noise", "out mask"),
                  consts, gs, ls)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("channels,per_channel", [((0, 6), 9), ((3, 7), 9), ((5, 11), 1)])
def test_device_mask_is_the_references_draw_of_its_part(runner, channels, per_channel):
    """A part's channels [c0, c1) of a (C, H·W) layer, laid out (C, N, H·W) on the device,
    for images first … first+N−1: equal to the reference's keep = u >= p, sliced. Groups of
    4 elements straddle channels and the part's ends (9 and 1 elements a channel)."""
    seed, step, layer, first, n, p = 0xFEEDFACE12345678, 77, 3, 11, 3, 0.4
    c_all = 12
    ref = uniforms(seed, step, layer, first, n, c_all * per_channel) \
        .reshape(n, c_all, per_channel) >= np.float32(p)
    want = np.moveaxis(ref[:, channels[0]:channels[1]], 1, 0).astype(np.float32).reshape(-1)
    k0, k1 = seed_key(seed)
    noise = np.array([k0, k1, step, first], np.uint32).view(np.int32)
    out = RUNNERS[runner](mask_kernel(n, layer, channels, per_channel, p), {"noise": noise},
                          want.size)
    np.testing.assert_array_equal(out, want)


def test_host_c_uniforms_are_the_references_bits():
    from netspec.runtime.cpu_backend import HostNoise, host_kernels
    from netspec.runtime.noise import ImageNoise
    kernels, note = host_kernels()
    if kernels is None:
        pytest.skip(f"g++ is not on the PATH ({note})")
    for seed, step, first, count in [(7, 5, 3, 6), ((1 << 64) - 1, (1 << 32) - 1, 0, 3),
                                     (123456789012345, 1, (1 << 32) - 4, 4)]:
        ref = ImageNoise(seed, step, first, count)
        host = HostNoise(kernels, ref)
        for layer, elements in [(0, 1), (3, 10), ((1 << 32) - 1, 4099)]:
            np.testing.assert_array_equal(host.uniforms(layer, elements),
                                          ref.uniforms(layer, elements))
