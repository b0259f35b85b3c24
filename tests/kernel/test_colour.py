"""The colour shift's Philox normals and the device input's header (kernel/colour.py); the
kernel itself runs in tests/runtime/test_gpu_step.py on the CUDA emulator."""
from __future__ import annotations

import numpy as np
import pytest

from netspec.kernel.colour import (
    COLOUR_LAYER,
    colour_normals,
    colour_shifts,
    input_header,
    pca_constants,
)
from netspec.kernel.philox import uniforms


def test_normals_are_box_muller_of_the_philox_uniforms():
    """Image i's three normals from the dropout draw's own uniforms (kernel/philox.uniforms,
    counter (0, image, COLOUR_LAYER, epoch)) by Box-Muller in NumPy."""
    u = uniforms(12345, 3, COLOUR_LAYER, 100, 5, 4).astype(np.float64)
    r0, r1 = np.sqrt(-2 * np.log1p(-u[:, 0])), np.sqrt(-2 * np.log1p(-u[:, 2]))
    want = np.stack([r0 * np.cos(2 * np.pi * u[:, 1]), r0 * np.sin(2 * np.pi * u[:, 1]),
                     r1 * np.cos(2 * np.pi * u[:, 3])], axis=1)
    np.testing.assert_allclose(colour_normals(12345, 3, 100, 5), want, rtol=1e-12, atol=1e-12)
    # an image's normals depend on its own key only, not on the batch it is drawn with
    np.testing.assert_array_equal(colour_normals(7, 0, 0, 6)[3:], colour_normals(7, 0, 3, 3))


def test_normals_are_standard_normal():
    z = colour_normals(2026, 0, 0, 100_000)
    assert np.abs(z.mean(axis=0)).max() < 0.02
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=0.02)
    assert np.abs(np.corrcoef(z, rowvar=False) - np.eye(3)).max() < 0.02


def test_shifts_are_the_pca_formula():
    rng = np.random.default_rng(0)
    lam = np.array([0.2, 0.02, 0.005])
    vec, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    z = rng.standard_normal((10, 3))
    want = 255.0 * (z * 0.1 * lam) @ vec.T
    np.testing.assert_allclose(colour_shifts(z, 0.1, lam, vec), want, rtol=1e-6, atol=1e-5)
    c = pca_constants(0.1, lam, vec)
    assert c[0] == 0.1 and np.array_equal(c[1:4], lam) and np.array_equal(c[4:], vec.ravel())


def test_header_packs_the_views():
    h = input_header((5 << 32) + 9, 2, 300, True, [[1, 2], [4095, 0]], [False, True])
    assert h.dtype == np.uint32
    assert list(h[:5]) == [9, 5, 2, 300, 1]
    assert list(h[5:]) == [1 | 2 << 12, 4095 | 1 << 24]
    with pytest.raises(ValueError, match="0..4095"):
        input_header(0, 0, 0, False, [[4096, 0]], [False])
