"""Noise in physical units: the noise level of a magnetogram and the background noise of a sky image.

* `noise_level`: sigma of a Gaussian fitted to the histogram of the pixel values in a range (TDR),
  returned as a `NoiseFit`.
* `background_noise`: sigma-clipped median and MAD standard deviation (astropy), returned as a
  `Background`.
* `block_statistics`: median signal and noise variance (from the Laplacian) of each small cell of a
  linear frame, the photon-transfer measure :mod:`astrotf.noise_model` fits and
  :mod:`astrotf.noise_map` checks a σ map against; `BlockStatistics`, `cell_blocks`.

Both handle quantised data (integer ADU, 8/16-bit, BSCALE) through :mod:`astrotf.quantise`.

References
----------
TDR (Self2Self train-denoise-restore), Methods: the noise level of a magnetogram is the
standard deviation of a Gaussian fitted to the histogram of its pixel values in
[-20, 20] G.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from astrotf.constants import MAD_TO_SIGMA, MAGNETOGRAM_NOISE_RANGE_G
from astrotf.errors import AstroTFError
from astrotf.quantise import dither_values, quantisation_variance, value_grid


# ----------------------------------------------------------------------------- noise level (histogram fit)
@dataclasses.dataclass(frozen=True)
class NoiseFit:
    """A Gaussian fitted to a histogram of pixel values.

    Attributes
    ----------
    sigma : float
        Standard deviation of the fitted Gaussian, in data units: the noise level.
    mean : float
        Centre of the fitted Gaussian.
    amplitude : float
        Peak of the fitted Gaussian, in counts per bin.
    n_pixels : int
        Finite pixels inside the fitted value range.
    centers, counts : ndarray
        The histogram that was fitted (bin centres, counts), for plots.
    """

    sigma: float
    mean: float
    amplitude: float
    n_pixels: int
    centers: np.ndarray = dataclasses.field(repr=False)
    counts: np.ndarray = dataclasses.field(repr=False)

    def model(self, x: np.ndarray) -> np.ndarray:
        """The fitted Gaussian evaluated at ``x`` (counts per bin)."""
        return self.amplitude * np.exp(-0.5 * ((np.asarray(x) - self.mean) / self.sigma) ** 2)


def _half_max_sigma(counts: np.ndarray, bin_width: float) -> float:
    """Sigma of a Gaussian with the full width at half maximum of the histogram's highest peak."""
    peak = int(np.argmax(counts))
    above = counts >= counts[peak] / 2.0
    left = peak
    while left > 0 and above[left - 1]:
        left -= 1
    right = peak
    while right < len(counts) - 1 and above[right + 1]:
        right += 1
    return max((right - left + 1) * bin_width / 2.3548, bin_width)


def _grid_edges(quantum: tuple[float, float], low: float, high: float, bins: int, value_range) -> np.ndarray:
    """Bin edges halfway between grid values, the same number of grid values in every bin.

    Edges that fall on the grid split its values between neighbouring bins by rounding, and
    bins narrower than the step leave most bins empty: both turn the histogram into a comb
    that a Gaussian cannot fit (sigma ~ 0.01 for integer data of sigma 1).
    """
    step, origin = quantum
    first = int(np.ceil((low - origin) / step - 1e-6))
    last = int(np.floor((high - origin) / step + 1e-6))
    per_bin = max(1, int(round((high - low) / bins / step)))
    n_bins = (last - first + 1) // per_bin
    if n_bins < 5:
        msg = (f"The data are quantised in steps of {step:g}: only {last - first + 1} distinct values fit in "
               f"value_range={value_range}, too few for a noise fit (widen the range).")
        raise ValueError(msg)
    return origin + (first + per_bin * np.arange(n_bins + 1) - 0.5) * step


def noise_level(
    image: np.ndarray,
    value_range: tuple[float, float] = MAGNETOGRAM_NOISE_RANGE_G,
    bins: int = 200,
) -> NoiseFit:
    """Noise level as the sigma of a Gaussian fitted to the histogram of pixel values.

    The TDR paper's measure for magnetograms: most of the solar disk is quiet Sun, whose
    values in [-20, 20] G are dominated by noise; the Gaussian fitted to their histogram
    gives the noise level. NaN and infinite pixels (off-disk) are ignored.

    Parameters
    ----------
    image : ndarray
        Pixel values in data units (any shape).
    value_range : (float, float)
        Values inside this range are histogrammed; the range should hold the noise
        peak and exclude most of the signal.
    bins : int
        Histogram bins across ``value_range``. Quantised data (integer FITS, BSCALE) are
        binned on their grid instead: edges halfway between grid values, about the same
        bin width but never narrower than one step.

    Returns
    -------
    NoiseFit

    Raises
    ------
    ValueError
        If the range is empty or inverted, ``bins < 5``, or fewer than 100 finite pixels
        fall inside the range.
    """
    from astropy.modeling import fitting, models

    low, high = (float(v) for v in value_range)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        msg = f"`value_range` must be two finite numbers (low < high). Received: value_range={value_range}"
        raise ValueError(msg)
    if bins < 5:
        msg = f"`bins` must be at least 5. Received: bins={bins}"
        raise ValueError(msg)
    values = np.asarray(image, dtype=np.float64).ravel()
    values = values[np.isfinite(values) & (values >= low) & (values <= high)]
    if values.size < 100:
        msg = (f"Too few pixels to fit the noise level: {values.size} finite values in "
               f"value_range={value_range} (at least 100 needed).")
        raise ValueError(msg)
    step = value_grid(values)
    if step is None:
        counts, edges = np.histogram(values, bins=bins, range=(low, high))
    else:
        edges = _grid_edges(step, low, high, bins, value_range)
        counts, edges = np.histogram(values, bins=edges)
    centers = 0.5 * (edges[:-1] + edges[1:])
    # start from the peak's half-maximum width, not the std of all values: after a TDR restore the
    # histogram is a narrow peak on broad wings, and a broad start converges to the wings
    start = models.Gaussian1D(amplitude=counts.max(), mean=float(centers[np.argmax(counts)]),
                              stddev=_half_max_sigma(counts, edges[1] - edges[0]))
    fit = fitting.TRFLSQFitter()(start, centers, counts.astype(np.float64))
    return NoiseFit(sigma=abs(float(fit.stddev.value)), mean=float(fit.mean.value),
                    amplitude=float(fit.amplitude.value), n_pixels=int(values.size),
                    centers=centers, counts=counts)


# ----------------------------------------------------------------------------- background noise
@dataclasses.dataclass(frozen=True)
class Background:
    """Sigma-clipped statistics of an image's background.

    Attributes
    ----------
    median : float
        Background level (median of the clipped pixels), data units.
    sigma : float
        Background noise: MAD standard deviation (1.4826 × MAD) of the clipped pixels, data units.
    """

    median: float
    sigma: float


def background_noise(image: np.ndarray, sigma: float = 3.0, maxiters: int = 10) -> Background:
    """Background level and noise by sigma clipping with a MAD standard deviation.

    `astropy.stats.sigma_clip` (median centre, MAD spread) then `astropy.stats.mad_std` of
    the pixels kept: sources are clipped away
    iteratively, and the MAD keeps the estimate robust to what clipping leaves behind. NaN and
    infinite pixels are ignored. Quantised data (integer ADU, 8-bit, BSCALE) are dithered by
    one grid step first (seeded) and the dither's variance is taken off, so the noise comes out
    as that of the quantised data (``hypot(sigma, step / sqrt(12))``), not jumping between
    levels. This is the noise of a real image without truth
    (BENCHMARKS.md, "Real linear images").

    Parameters
    ----------
    image : ndarray
        Pixel values, any shape.
    sigma : float
        Clipping threshold in standard deviations.
    maxiters : int
        Maximum clipping iterations.

    Returns
    -------
    Background

    Raises
    ------
    ValueError
        If ``sigma <= 0`` or the image has fewer than 10 finite pixels.
    """
    from astropy.stats import mad_std, sigma_clip

    if not sigma > 0:
        msg = f"`sigma` must be > 0. Received: sigma={sigma}"
        raise ValueError(msg)
    values = np.asarray(image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 10:
        msg = f"Too few finite pixels for background statistics: {values.size} (at least 10 needed)."
        raise ValueError(msg)
    quantum = value_grid(values)
    if quantum is not None:
        # on a grid (integer ADU, 8-bit, BSCALE) the median and MAD jump from level to level: the MAD of
        # integer data of sigma 2 is 1, of sigma 0.7 it is 0. A seeded uniform dither of one step spreads
        # each level over its bin (the grouped-data median); its own variance step²/12 is taken off below
        values = dither_values(values, quantum[0])
    # sigma_clipped_stats would return the plain std of the clipped pixels: clip, then take the MAD
    kept = sigma_clip(values, sigma=sigma, maxiters=maxiters, cenfunc="median", stdfunc="mad_std", masked=False)
    spread = float(mad_std(kept))
    if quantum is not None:
        spread = float(np.sqrt(max(spread**2 - quantisation_variance(quantum[0]), 0.0)))
    return Background(median=float(np.median(kept)), sigma=spread)


# ----------------------------------------------------------------------------- sky level
def sky_bias(image: np.ndarray, reference: np.ndarray, sigma: float, mask: np.ndarray | None = None) -> float:
    """Shift of the sky level in units of the noise: ``median(image - reference) / sigma`` over sky pixels.

    With a noise-free truth as ``reference`` this is the sky-level bias of a denoised image (a
    noisy input gives about 0); with the noisy input as ``reference`` (no truth) it is the shift a
    denoiser made, since the median of white noise is 0. A denoiser that raises the sky by a
    fraction of σ loses faint extended structure into it and biases every aperture flux.

    Parameters
    ----------
    image, reference : ndarray
        Same shape, data units.
    sigma : float
        Noise standard deviation (e.g. the input's background σ), data units.
    mask : ndarray of bool, optional
        Sky pixels to use (e.g. ``~source_mask(...)``); default every pixel finite in both.

    Returns
    -------
    float
        In units of ``sigma``.

    Raises
    ------
    ValueError
        Shapes differ, ``sigma`` is not a finite number > 0, or fewer than 10 sky pixels are finite.
    """
    a = np.asarray(image, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or (mask is not None and np.shape(mask) != a.shape):
        msg = (f"`image`, `reference` and `mask` must have one shape. Received: image.shape={a.shape}, "
               f"reference.shape={b.shape}, mask.shape={None if mask is None else np.shape(mask)}")
        raise ValueError(msg)
    if not (np.isfinite(sigma) and sigma > 0):
        msg = f"`sigma` must be a finite number > 0. Received: sigma={sigma}"
        raise ValueError(msg)
    diff = a - b
    use = np.isfinite(diff) if mask is None else np.isfinite(diff) & np.asarray(mask, dtype=bool)
    if use.sum() < 10:
        msg = f"Too few sky pixels for the sky bias: {int(use.sum())} (at least 10 needed)."
        raise ValueError(msg)
    return float(np.median(diff[use]) / sigma)


# ----------------------------------------------------------------------------- local noise in cells
#: A pixel's Laplacian ``x - mean(4 neighbours)`` has variance 1.25 σ² for white noise of variance σ².
LAPLACIAN_VARIANCE = 1.25


@dataclasses.dataclass(frozen=True)
class BlockStatistics:
    """Local signal and noise variance of the usable ``block × block`` cells of a frame (data units).

    ``index``: the flat indices of those cells among :func:`cell_blocks` of the frame's inner pixels
    ``[1:-1, 1:-1]``, so that any other map of the frame can be read in the same cells.
    """

    signal: np.ndarray
    variance: np.ndarray
    pixels: int
    index: np.ndarray


def cell_blocks(a: np.ndarray, block: int) -> np.ndarray:
    """``(cells, block * block)``: the whole ``block × block`` cells of a 2-D array, row by row."""
    rows, cols = a.shape[0] // block, a.shape[1] // block
    a = a[: rows * block, : cols * block].reshape(rows, block, cols, block)
    return a.transpose(0, 2, 1, 3).reshape(rows * cols, block * block)


def block_statistics(data: np.ndarray, block: int = 8) -> BlockStatistics:
    """Median signal and noise variance in each ``block × block`` cell.

    The variance comes from the Laplacian ``x - mean(4 neighbours)``, which cancels the sky and
    any linear gradient; a MAD pass finds the scale and a 5σ clip around the median drops star cores
    and cosmic rays before the mean square is taken (unbiased to 0.3 % on white noise).
    Cells with a non-finite pixel or no spread (saturated, padded) are left out.
    """
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2:
        msg = f"`data` must be a 2-D frame. Received: data.shape={x.shape}"
        raise AstroTFError(msg)
    core = x[1:-1, 1:-1]
    lap = core - 0.25 * (x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:])
    if core.shape[0] < block or core.shape[1] < block:
        return BlockStatistics(np.empty(0), np.empty(0), block * block, np.zeros(0, int))
    values, residual = cell_blocks(core, block), cell_blocks(lap, block)
    finite = np.isfinite(values).all(axis=1) & np.isfinite(residual).all(axis=1)
    values, residual = values[finite], residual[finite]
    centre = np.median(residual, axis=1, keepdims=True)
    scale = MAD_TO_SIGMA * np.median(np.abs(residual - centre), axis=1, keepdims=True)
    kept = np.abs(residual - centre) <= 5.0 * scale
    count = kept.sum(axis=1)
    # the mean square about 0, not about the cell's median: the Laplacian of a smooth signal is 0, and
    # subtracting a median estimated from the same 64 correlated values biases the variance by ~2 %
    variance = (np.where(kept, residual, 0.0) ** 2).sum(axis=1) / np.maximum(count, 1)
    usable = (scale[:, 0] > 0) & (count >= block * block // 2)
    return BlockStatistics(np.median(values[usable], axis=1), variance[usable] / LAPLACIAN_VARIANCE,
                           block * block, np.flatnonzero(finite)[usable])
