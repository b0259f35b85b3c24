"""The mean image and the colour PCA against independent computations."""
import numpy as np

from netspec.data import open_dataset
from netspec.data.augment import draw_train_plan
from netspec.data.stats import ImageStats, estimate_pca

from .imagefiles import random_images, write_folder

# A covariance with known eigenvectors Q and eigenvalues (0..255 units).
_Q, _ = np.linalg.qr(np.array([[1.0, 0.3, -0.2], [0.5, -1.0, 0.4], [0.2, 0.6, 1.0]]))
_VALUES = np.array([900.0, 225.0, 36.0])
_COVARIANCE = _Q @ np.diag(_VALUES) @ _Q.T


def gaussian_pixels(rng, count):
    return rng.multivariate_normal([128, 120, 110], _COVARIANCE, size=count)


def assert_recovers(pca, tolerance):
    np.testing.assert_allclose(pca.eigenvalues, _VALUES / 255**2, rtol=tolerance)
    for i in range(3):
        assert abs(pca.eigenvectors[:, i] @ _Q[:, i]) > 1 - tolerance
    np.testing.assert_allclose(pca.eigenvectors.T @ pca.eigenvectors, np.eye(3), atol=1e-12)


def test_pca_recovers_a_known_covariance():
    pixels = gaussian_pixels(np.random.default_rng(0), 400_000)
    assert_recovers(estimate_pca(pixels), 0.02)


def test_dataset_pca_recovers_the_covariance_of_its_pixels(tmp_path):
    rng = np.random.default_rng(1)
    images = [np.clip(np.rint(gaussian_pixels(rng, 32 * 32)), 0, 255).astype(np.uint8)
              .reshape(32, 32, 3) for _ in range(40)]
    write_folder(tmp_path, {"train": {"a": images[:20], "b": images[20:]}})
    assert_recovers(open_dataset(tmp_path, base=32).pca, 0.05)


def test_colour_shift_statistics():
    # Shift = Σ αᵢλᵢpᵢ, αᵢ ~ N(0, σ): mean 0, covariance Σ σ²λᵢ² pᵢpᵢᵀ (0..1 units).
    pca = estimate_pca(gaussian_pixels(np.random.default_rng(2), 100_000))
    sigma = 0.1
    plan = draw_train_plan(np.random.default_rng(3), 200_000, 8, 8, flip=False, pca=pca,
                           pca_sigma=sigma)
    shifts = plan.shifts.astype(np.float64) / 255
    expected = sum(sigma**2 * pca.eigenvalues[i] ** 2 * np.outer(pca.eigenvectors[:, i],
                                                                 pca.eigenvectors[:, i])
                   for i in range(3))
    scale = np.sqrt(np.diag(expected)).max()
    assert np.abs(shifts.mean(axis=0)).max() < 0.02 * scale
    np.testing.assert_allclose(np.cov(shifts, rowvar=False), expected, atol=0.02 * scale**2)


def test_no_shift_when_sigma_is_zero():
    pca = estimate_pca(gaussian_pixels(np.random.default_rng(4), 1000))
    plan = draw_train_plan(np.random.default_rng(5), 10, 8, 8, flip=False, pca=pca, pca_sigma=0)
    assert plan.shifts is None


def test_mean_image_is_the_mean_of_the_training_images(tmp_path):
    rng = np.random.default_rng(6)
    train = {"a": random_images(rng, 5, 16), "b": random_images(rng, 4, 16)}
    write_folder(tmp_path, {"train": train, "val": {"a": random_images(rng, 3, 16)}})
    (tmp_path / "train" / "b" / "broken.png").write_bytes(b"not a png")
    expected = np.mean(np.stack(train["a"] + train["b"]).astype(np.float64), axis=0)
    mean = open_dataset(tmp_path, base=16).mean
    assert mean.dtype == np.float32 and mean.shape == (16, 16, 3)
    np.testing.assert_allclose(mean, expected, atol=1e-4)


def test_stats_do_not_depend_on_the_order_or_grouping_of_images():
    rng = np.random.default_rng(7)
    images = random_images(rng, 9, 128)
    whole = ImageStats(128)
    for image in images:
        whole.add(image)
    parts = [ImageStats(128) for _ in range(3)]
    for i, image in enumerate(reversed(images)):
        parts[i % 3].add(image)
    merged = ImageStats(128)
    for part in parts:
        merged.merge(part)
    assert np.array_equal(whole.mean(), merged.mean())
    assert np.array_equal(whole.pca().eigenvalues, merged.pca().eigenvalues)
    # The PCA samples every other pixel of a 128-pixel image (a 64×64 grid).
    sample = np.concatenate([i[::2, ::2].reshape(-1, 3) for i in images])
    np.testing.assert_allclose(whole.pca().eigenvalues, estimate_pca(sample).eigenvalues,
                               rtol=1e-9)
