"""Sky level: give a denoised linear frame back the input's large-scale background level.

The input is an unbiased estimate of the sky (its noise has zero mean), so over a few thousand
pixels of source-free sky its mean is the sky level to well under a hundredth of the per-pixel
noise σ. A denoiser need not be unbiased there: a network trained on Poisson data leaves the sky
0.01-0.1 σ too high, which shifts every aperture's background and the faint end of the flux scale.

:func:`keep_sky_level` measures the mean residual ``input - denoised`` over source-free sky,
smoothed at ``scale`` px, and adds it back: the output's local sky mean then equals the input's
on scales above ``scale`` and nothing finer changes. Pixels that moved by more than ``clip`` σ
(cosmic rays and hot pixels the network removed, star cores) and the pixels of sources (the
output more than ``source`` σ above its smoothed background, grown by 3 px) are left out of the
mean, so neither a removed cosmic ray nor a star's wings spread into the sky. Where the masks
leave little sky under the smoothing window (a large galaxy), the correction fades to zero.

``astrotf infer`` applies it to the output of noise-conditioned models (those given a σ map),
before the strength blend and the restores (``--no-sky-level`` turns it off). No TensorFlow import.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from astrotf.errors import AstroTFError

#: Smoothing scale (Gaussian σ, px) of the correction: the output keeps the input's sky level on
#: scales above it. At 32 px the mean runs over about 13 000 px, so the correction's own noise is
#: under 0.01 σ.
SCALE_PX = 32.0
#: Pixels moved by more than this many σ are left out of the mean (cosmic rays, hot pixels, cores).
CLIP_SIGMAS = 4.0
#: Pixels where the output is more than this many σ above its smoothed background are sources.
SOURCE_SIGMAS = 1.0
#: Block size (px) of the grid on which the smooth correction is computed, then interpolated.
BLOCK_PX = 8
#: Below this fraction of usable sky under the window the correction fades linearly to zero.
MIN_SKY_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class SkyLevel:
    """Result of :func:`keep_sky_level`.

    Attributes
    ----------
    image : ndarray (H, W, C) float32
        The denoised frame with the input's sky level; NaN where the denoised frame is NaN.
    median_shift, max_shift : float
        Median and largest ``|correction| / σ`` over the finite pixels.
    """

    image: np.ndarray
    median_shift: float
    max_shift: float

    def line(self, scale: float = SCALE_PX) -> str:
        return (f"sky level kept above {scale:g} px: median shift {self.median_shift:.3f}, "
                f"max {self.max_shift:.3f} sigma")


def _block_sums(values: np.ndarray, block: int) -> np.ndarray:
    """Sums over ``block`` × ``block`` cells (the frame padded with zeros to whole cells), float64."""
    height, width = values.shape
    rows, cols = -(-height // block), -(-width // block)
    padded = np.zeros((rows * block, cols * block), np.float32)
    padded[:height, :width] = values
    return padded.reshape(rows, block, cols, block).sum(axis=(1, 3), dtype=np.float64)


def _upsample(grid: np.ndarray, shape: tuple[int, int], block: int) -> np.ndarray:
    """Bilinear interpolation of a grid of cell centres back to every pixel, one axis at a time."""
    def weights(n: int, cells: int):
        pos = np.clip((np.arange(n) + 0.5) / block - 0.5, 0, cells - 1)
        low = np.minimum(pos.astype(int), max(cells - 2, 0))
        high = np.minimum(low + 1, cells - 1)
        return low, high, (pos - low).astype(np.float32)

    grid = grid.astype(np.float32)
    low, high, t = weights(shape[0], grid.shape[0])
    rows = grid[low] * (1 - t)[:, None] + grid[high] * t[:, None]
    low, high, t = weights(shape[1], grid.shape[1])
    return rows[:, low] * (1 - t)[None, :] + rows[:, high] * t[None, :]


def _smooth_mean(values: np.ndarray, weight: np.ndarray, scale: float, block: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, support)`` on a grid of ``block`` px cells: the ``weight``-weighted Gaussian mean of
    ``values`` at ``scale`` px and the weight's own smoothed density (1 = every pixel in the window
    counts)."""
    from scipy.ndimage import gaussian_filter

    sums = gaussian_filter(_block_sums(values * weight, block), scale / block, mode="nearest")
    counts = gaussian_filter(_block_sums(weight, block), scale / block, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1e-12), 0.0)
    return mean, counts / block**2


def keep_sky_level(denoised: np.ndarray, data: np.ndarray, noise_sigma: np.ndarray, scale: float = SCALE_PX,
                   clip: float = CLIP_SIGMAS, source: float = SOURCE_SIGMAS, block: int = BLOCK_PX) -> SkyLevel:
    """The denoised frame plus the smoothed residual ``data - denoised`` over source-free sky.

    Parameters
    ----------
    denoised, data : ndarray (H, W, C)
        The network's output and its input, linear, in the same units; NaN allowed.
    noise_sigma : ndarray (H, W, C)
        The input's per-pixel noise σ (:func:`astrotf.noise_map.frame_noise`).
    scale : float
        Gaussian σ (px) of the smoothing; finer structure is not touched.
    clip, source : float
        The outlier and source thresholds in σ (see the module docstring).
    block : int
        Cell size of the grid the correction is computed on (a few times below ``scale``).

    Returns
    -------
    SkyLevel

    Raises
    ------
    AstroTFError
        Shapes that differ, or a ``scale`` not above ``block``.
    """
    from scipy.ndimage import gaussian_filter, maximum_filter

    if not (denoised.shape == data.shape == noise_sigma.shape and denoised.ndim == 3):
        raise AstroTFError(f"sky level: denoised {denoised.shape}, input {data.shape} and sigma {noise_sigma.shape} "
                           "must be the same (H, W, C) shape")
    if not scale > block:
        raise AstroTFError(f"sky level: scale {scale} px must be above the block size {block} px")
    out = np.array(denoised, dtype=np.float32, copy=True)
    shifts = []
    for c in range(data.shape[-1]):
        x, y, s = data[..., c], denoised[..., c], noise_sigma[..., c]
        finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(s) & (s > 0)
        if not finite.any():
            continue
        residual = np.where(finite, x - y, 0.0).astype(np.float32)
        sigma = np.where(finite, s, 1.0).astype(np.float32)
        weight = (finite & (np.abs(residual) <= clip * sigma)).astype(np.float32)
        level = np.where(finite, y, 0.0).astype(np.float32)
        background = _upsample(_smooth_mean(level, weight, scale, block)[0], level.shape, block)
        peaks = (gaussian_filter(level, 1.5) - background > source * sigma).view(np.uint8)
        weight[maximum_filter(peaks, size=7) > 0] = 0.0  # sources, grown by 3 px
        mean, support = _smooth_mean(residual, weight, scale, block)
        correction = _upsample(mean * np.clip(support / MIN_SKY_FRACTION, 0.0, 1.0), level.shape, block)
        out[..., c] = np.where(finite, y + correction, y)
        shifts.append(np.abs(correction[finite]) / sigma[finite])
    shift = np.concatenate(shifts) if shifts else np.zeros(1)
    return SkyLevel(out, float(np.median(shift)), float(np.max(shift)))
