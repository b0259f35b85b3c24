"""Training-set statistics: the per-pixel mean image (§2) and the RGB colour PCA (§4.1).

Pixel scale. The mean image is in the pixels' own units, 0..255. The PCA is computed on pixel
values scaled to 0..1 (value / 255): its eigenvalues are variances in those units (about 0.2,
0.02, 0.005 on ImageNet, the constants most AlexNet re-implementations use), and the colour
shift Σ αᵢλᵢpᵢ is computed in 0..1 units, then multiplied by 255 to be added to 0..255 pixels.
With σ = 0.1 the shift's standard deviation along p₁ is then a few grey levels. (On the 0..255
scale the paper's formula would give eigenvalues 65025 times larger and shifts of hundreds of
levels, which destroys the image.)

Both statistics are sums of integers, so they are exact and don't depend on the order in
which images are added: a folder scanned by 2 processes and a cache prepared by 4 give the
same mean and the same PCA.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The PCA looks at a regular grid of about 64×64 pixels of each training image.
_PCA_GRID = 64


@dataclass(frozen=True)
class PCA:
    """Eigen-decomposition of the 3×3 covariance of RGB pixel values, pixels scaled to 0..1.

    eigenvalues: (3,) float64, descending. eigenvectors: (3, 3) float64, column i is pᵢ
    (unit length; sign chosen so that its largest-magnitude entry is positive).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray

    def shift(self, alphas: np.ndarray) -> np.ndarray:
        """The colour shift [p₁ p₂ p₃][α₁λ₁, α₂λ₂, α₃λ₃]ᵀ for each row of alphas (n, 3).

        Returned in 0..255 pixel units, float32 (n, 3), ready to add to every pixel.
        """
        alphas = np.asarray(alphas, dtype=np.float64).reshape(-1, 3)
        return (255.0 * (alphas * self.eigenvalues) @ self.eigenvectors.T).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "pixel_scale": "0..1",
            "eigenvalues": self.eigenvalues.tolist(),
            "eigenvectors": self.eigenvectors.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> PCA:
        return cls(
            eigenvalues=np.asarray(data["eigenvalues"], dtype=np.float64),
            eigenvectors=np.asarray(data["eigenvectors"], dtype=np.float64),
        )


def statistics_problem(mean, eigenvalues, eigenvectors, base: int) -> str | None:
    """What is wrong with cached statistics for images of side `base`, or None: the mean image
    must be float (base, base, 3) in 0..255, the PCA's eigenvalues (3,) finite and >= 0 (at
    most 0.75: the covariance's trace, three variances of values in 0..1), its eigenvectors (3, 3) finite and unit
    length. A damaged or tampered cache is rebuilt rather than trusted."""
    checks = (("mean image", mean, (base, base, 3), 0.0, 255.0),
              ("PCA eigenvalues", eigenvalues, (3,), 0.0, 0.75),
              ("PCA eigenvectors", eigenvectors, (3, 3), -1.0, 1.0))
    for what, a, shape, lo, hi in checks:
        a = np.asarray(a)
        if a.shape != shape:
            return f"its {what} has shape {a.shape}, expected {shape}"
        if a.dtype.kind not in "fiu":
            return f"its {what} is not numeric ({a.dtype})"
        if not np.isfinite(a).all():
            return f"its {what} holds NaN or infinite values"
        if a.min() < lo - 1e-6 or a.max() > hi + 1e-6:
            return f"its {what} lies outside {lo:g}..{hi:g}"
    if not np.allclose(np.linalg.norm(np.asarray(eigenvectors, np.float64), axis=0), 1, atol=1e-4):
        return "its PCA eigenvectors are not of unit length"
    return None


def estimate_pca(pixels: np.ndarray) -> PCA:
    """PCA of RGB pixels given as (N, 3) values in 0..255."""
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 3)
    return pca_from_covariance(np.cov(pixels, rowvar=False) / 255.0**2)


def pca_from_covariance(covariance: np.ndarray) -> PCA:
    """Eigenvalues (descending) and unit eigenvectors of a 3×3 covariance matrix."""
    values, vectors = np.linalg.eigh(np.asarray(covariance, dtype=np.float64))
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    # eigh's signs are arbitrary; fix them so the same data gives the same vectors everywhere.
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(3)])
    return PCA(eigenvalues=values, eigenvectors=vectors * signs)


class ImageStats:
    """Running sums over uint8 (base, base, 3) images: the mean image and the PCA moments."""

    def __init__(self, base: int):
        self.base = base
        self.count = 0
        self.pixel_sum = np.zeros((base, base, 3), dtype=np.int64)
        self._stride = max(1, base // _PCA_GRID)
        self.pca_count = 0
        self.pca_sum = np.zeros(3, dtype=np.int64)
        self.pca_outer = np.zeros((3, 3), dtype=np.int64)

    def add(self, image: np.ndarray) -> None:
        """Add one uint8 (base, base, 3) image."""
        self.count += 1
        self.pixel_sum += image
        sample = image[:: self._stride, :: self._stride].reshape(-1, 3).astype(np.float64)
        self.pca_count += len(sample)
        self.pca_sum += sample.sum(axis=0).astype(np.int64)
        # Each entry is at most 4096 × 255², far below 2⁵³: the float64 product is exact.
        self.pca_outer += np.rint(sample.T @ sample).astype(np.int64)

    def merge(self, other: ImageStats) -> None:
        self.count += other.count
        self.pixel_sum += other.pixel_sum
        self.pca_count += other.pca_count
        self.pca_sum += other.pca_sum
        self.pca_outer += other.pca_outer

    def mean(self) -> np.ndarray:
        """The mean image, float32 (base, base, 3), in 0..255."""
        if self.count == 0:
            raise ValueError("no images were added")
        return (self.pixel_sum / self.count).astype(np.float32)

    def pca(self) -> PCA:
        if self.pca_count < 2:
            raise ValueError("too few pixels for a covariance")
        n = self.pca_count
        mean = self.pca_sum / n
        covariance = (self.pca_outer - n * np.outer(mean, mean)) / (n - 1)
        return pca_from_covariance(covariance / 255.0**2)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "count": np.array(self.count, dtype=np.int64),
            "pixel_sum": self.pixel_sum,
            "pca_count": np.array(self.pca_count, dtype=np.int64),
            "pca_sum": self.pca_sum,
            "pca_outer": self.pca_outer,
        }

    @classmethod
    def from_arrays(cls, base: int, arrays) -> ImageStats:
        stats = cls(base)
        stats.count = int(arrays["count"])
        stats.pixel_sum = np.array(arrays["pixel_sum"], dtype=np.int64)
        stats.pca_count = int(arrays["pca_count"])
        stats.pca_sum = np.array(arrays["pca_sum"], dtype=np.int64)
        stats.pca_outer = np.array(arrays["pca_outer"], dtype=np.int64)
        return stats
