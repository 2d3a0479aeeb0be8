"""Image-quality and science metrics: the measures astronomers trust, on NumPy arrays.

No TensorFlow import: metrics run on the outputs of any denoiser.

* Fidelity to a reference: `psnr`, `ssim` (scikit-image, data-range and NaN aware),
  `kl_divergence` of the pixel distributions (Astro U-net eq. 9).
* Noise in physical units: `noise_level` (Gaussian fitted to the histogram, TDR) and
  `background_noise` (sigma-clipped MAD, astropy); both handle quantised data
  (`astrotf.quantise.value_grid`).
* What changed: `correlation` (Pearson r and linear-fit slope, TDR Fig. 2), `power_spectrum` and
  `divergence_frequency` (where two spectra start to differ, TDR Fig. 4), `strong_slope` (output
  against input over strong pixels only) and `residual_structure` (structure in input - output above
  ~10 px; 1 = white).
* Stars: `star_recovery` (`sep` detection at a fixed absolute threshold, 1-to-1 matching,
  TPR / false positives / precision / F1, relative flux error; Astro U-net §4.3) and `snr_gain`
  (Astro U-net eq. 28).

References
----------
Vojtekova et al. 2020, "Learning to denoise astronomical images with U-nets", MNRAS 503, 3204, §4.
TDR (Self2Self train-denoise-restore), Methods: the noise level of a magnetogram is the
standard deviation of a Gaussian fitted to the histogram of its pixel values in
[-20, 20] G.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from astrotf.constants import MAGNETOGRAM_NOISE_RANGE_G
from astrotf.quantise import dither_values, quantisation_variance, value_grid


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


# ----------------------------------------------------------------------------- helpers
def _pair(reference, image, names=("reference", "image")) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 arrays of one shape, or a ValueError naming both shapes."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(image, dtype=np.float64)
    if a.shape != b.shape:
        msg = (f"`{names[0]}` and `{names[1]}` must have the same shape. "
               f"Received: {names[0]}.shape={a.shape}, {names[1]}.shape={b.shape}")
        raise ValueError(msg)
    return a, b


def _finite_pixels(*arrays: np.ndarray) -> np.ndarray:
    """Mask of the positions finite in every array (same shapes)."""
    mask = np.ones(arrays[0].shape, dtype=bool)
    for array in arrays:
        mask &= np.isfinite(array)
    if not mask.any():
        msg = "No pixel is finite in every image (all NaN or infinite)."
        raise ValueError(msg)
    return mask


def _scored_pair(reference, image, data_range: float | None):
    """``(reference, image, finite mask, data range)`` for PSNR and SSIM."""
    a, b = _pair(reference, image)
    mask = _finite_pixels(a, b)
    return a, b, mask, _data_range(a, mask, data_range)


def _data_range(reference: np.ndarray, mask: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        values = reference[mask]
        data_range = float(values.max() - values.min())
    if not (np.isfinite(data_range) and data_range > 0):
        msg = f"`data_range` must be a finite number > 0. Received: data_range={data_range}"
        raise ValueError(msg)
    return float(data_range)


# ----------------------------------------------------------------------------- PSNR / SSIM
def psnr(reference: np.ndarray, image: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio of ``image`` against ``reference``, in dB, over the finite pixels.

    ``10 log10(data_range² / MSE)`` (Astro U-net eq. 13), computed by
    `skimage.metrics.peak_signal_noise_ratio` on the pixels finite in both images.

    Parameters
    ----------
    reference, image : ndarray
        Arrays of one shape, e.g. (H, W) or (H, W, C), in data units.
    data_range : float, optional
        Peak-to-peak range of the data: 1 for stretched images in [0, 1]. Default: max - min of
        the reference's finite pixels (linear data has no fixed range; say which one you used).

    Returns
    -------
    float
        PSNR in dB; ``inf`` if the images are equal.

    Raises
    ------
    ValueError
        If the shapes differ, no pixel is finite in both, or ``data_range`` is not > 0.
    """
    from skimage.metrics import peak_signal_noise_ratio

    a, b, mask, rng = _scored_pair(reference, image, data_range)
    if np.array_equal(a[mask], b[mask]):
        return float("inf")
    return float(peak_signal_noise_ratio(a[mask], b[mask], data_range=rng))


def ssim(reference: np.ndarray, image: np.ndarray, data_range: float | None = None,
         channel_axis: int | None = None) -> float:
    """Mean structural similarity of ``image`` to ``reference`` (Wang et al. 2004; Astro U-net eq. 21).

    `skimage.metrics.structural_similarity` (7×7 uniform windows) on images whose non-finite
    pixels are replaced by the reference's median; the SSIM map is then averaged over the pixels
    finite in both images, so masked regions count neither for nor against.

    Parameters
    ----------
    reference, image : ndarray
        (H, W) or, with ``channel_axis``, (H, W, C) arrays of one shape; H, W >= 7.
    data_range : float, optional
        As in `psnr`.
    channel_axis : int, optional
        Axis of colour channels (-1 for (H, W, C)); None for single-channel images.

    Returns
    -------
    float
        Mean SSIM in [-1, 1]; 1 for identical images.

    Raises
    ------
    ValueError
        If the shapes differ, no pixel is finite in both, or ``data_range`` is not > 0.
    """
    from skimage.metrics import structural_similarity

    a, b, mask, rng = _scored_pair(reference, image, data_range)
    fill = float(np.median(a[mask]))
    _, smap = structural_similarity(np.where(mask, a, fill), np.where(mask, b, fill), data_range=rng,
                                    channel_axis=channel_axis, full=True)
    return float(np.mean(smap[mask]))


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


# ----------------------------------------------------------------------------- power spectra
def power_spectrum(image: np.ndarray, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged spatial power spectrum of a 2-D image.

    ``|FFT(image - mean)|² / (H W)`` averaged over annuli of radial frequency
    ``f = sqrt(fx² + fy²)`` in cycles per pixel (TDR Fig. 4). Non-finite pixels are set to the
    mean of the finite ones first.

    Parameters
    ----------
    image : ndarray (H, W)
        Image in data units.
    bins : int, optional
        Number of annuli between 0 and 0.5 cycles/px. Default: ``min(H, W) // 2``.

    Returns
    -------
    frequency : ndarray
        Centre of each annulus, cycles per pixel (annuli without an FFT sample are dropped).
    power : ndarray
        Mean power in each annulus, (data units)² .

    Raises
    ------
    ValueError
        If ``image`` is not 2-D or smaller than 8 × 8.
    """
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2 or min(data.shape) < 8:
        msg = f"`image` must be a 2-D array of at least 8 x 8 pixels. Received: image.shape={data.shape}"
        raise ValueError(msg)
    finite = np.isfinite(data)
    data = np.where(finite, data, data[finite].mean() if finite.any() else 0.0)
    data = data - data.mean()
    power2d = np.abs(np.fft.fft2(data)) ** 2 / data.size
    fy, fx = np.meshgrid(np.fft.fftfreq(data.shape[0]), np.fft.fftfreq(data.shape[1]), indexing="ij")
    radius = np.hypot(fx, fy).ravel()
    nbins = int(bins) if bins else min(data.shape) // 2
    edges = np.linspace(0.0, 0.5, nbins + 1)
    index = np.digitize(radius, edges) - 1
    keep = (index >= 0) & (index < nbins) & (radius > 0)
    counts = np.bincount(index[keep], minlength=nbins)
    sums = np.bincount(index[keep], weights=power2d.ravel()[keep], minlength=nbins)
    has = counts > 0
    return 0.5 * (edges[:-1] + edges[1:])[has], sums[has] / counts[has]


def divergence_frequency(image_a: np.ndarray, image_b: np.ndarray, tolerance: float = 0.1,
                         bins: int | None = None) -> float | None:
    """The spatial frequency where the power spectra of two images start to differ.

    TDR Fig. 4: a denoiser that leaves large scales untouched changes the spectrum only above
    some frequency. Returned is the centre of the first annulus (lowest frequency) at which
    ``|P_b / P_a - 1| > tolerance``.

    Parameters
    ----------
    image_a, image_b : ndarray (H, W)
        E.g. the noisy input and the denoised output.
    tolerance : float
        Relative power difference that counts as "different" (0.1 = 10 %).
    bins : int, optional
        Annuli, as in `power_spectrum`.

    Returns
    -------
    float or None
        Frequency in cycles per pixel; None if the spectra agree within ``tolerance`` up to
        0.5 cycles/px.

    Raises
    ------
    ValueError
        If the shapes differ or ``tolerance <= 0``.
    """
    a, b = _pair(image_a, image_b, ("image_a", "image_b"))
    if not tolerance > 0:
        msg = f"`tolerance` must be > 0. Received: tolerance={tolerance}"
        raise ValueError(msg)
    freq, pa = power_spectrum(a, bins)
    _, pb = power_spectrum(b, bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        differ = np.abs(pb / pa - 1.0) > tolerance
    differ |= (pa == 0) & (pb != 0)
    hits = np.flatnonzero(differ)
    return float(freq[hits[0]]) if hits.size else None


# ----------------------------------------------------------------------------- what a denoiser kept
@dataclasses.dataclass(frozen=True)
class StrongSlope:
    """Slope of output against input over the strong pixels (TDR: |B| > 50 G).

    Attributes
    ----------
    slope : float
        Least squares through the origin, ``sum(x y) / sum(x²)`` with ``x, y`` the input and
        output minus ``origin``: 1 = strong signal kept, < 1 = flattened. NaN for < 10 pixels.
    n_pixels : int
        Strong pixels (finite in both images).
    threshold, origin : float
        Pixels with ``|input - origin| > threshold`` count as strong.
    """

    slope: float
    n_pixels: int
    threshold: float
    origin: float


def strong_slope(inp: np.ndarray, out: np.ndarray, threshold: float, origin: float = 0.0) -> StrongSlope:
    """Slope of ``out`` against ``inp`` where ``|inp - origin| > threshold``, fitted through ``origin``.

    A fit over strong pixels only is not diluted by noise in the input (a fit over all
    pixels of a well-denoised image has a slope below 1 by regression dilution alone).
    For magnetograms ``origin`` is 0 and ``threshold`` 50 G (the TDR issue's strong fields);
    for sky images the background level and a multiple of its noise.
    """
    x, y = _pair(inp, out, ("inp", "out"))
    if not (np.isfinite(threshold) and threshold >= 0):
        msg = f"`threshold` must be a finite number >= 0. Received: threshold={threshold}"
        raise ValueError(msg)
    x = x.astype(np.float64) - origin
    y = y.astype(np.float64) - origin
    with np.errstate(invalid="ignore"):
        sel = np.isfinite(x) & np.isfinite(y) & (np.abs(x) > threshold)
    xs, ys = x[sel], y[sel]
    slope = float((xs * ys).sum() / (xs * xs).sum()) if xs.size >= 10 else float("nan")
    return StrongSlope(slope=slope, n_pixels=int(xs.size), threshold=float(threshold), origin=float(origin))


def residual_structure(residual: np.ndarray, block: int = 10) -> float:
    """Structure in a residual map above ``block`` pixels: 1.0 for white noise, more for structure.

    The standard deviation of the means of ``block x block`` tiles (those with every pixel
    finite) over the ``std / block`` that white noise of the residual's own standard
    deviation would give. Mono (H, W) or the first channel of (H, W, C).

    Raises
    ------
    ValueError
        If fewer than 4 complete tiles fit, or ``block < 2``.
    """
    r = np.asarray(residual, np.float64)
    r = r[..., 0] if r.ndim == 3 else r
    if r.ndim != 2 or block < 2:
        msg = f"`residual` must be (H, W) or (H, W, C) and `block` >= 2. Received: shape={r.shape}, block={block}"
        raise ValueError(msg)
    h, w = (r.shape[0] // block) * block, (r.shape[1] // block) * block
    tiles = r[:h, :w].reshape(h // block, block, w // block, block)
    complete = np.isfinite(tiles).all(axis=(1, 3))
    if complete.sum() < 4:
        msg = f"Too few complete {block}x{block} px tiles in the residual ({int(complete.sum())}; 4 needed)."
        raise ValueError(msg)
    means = tiles.mean(axis=(1, 3))[complete]
    spread = float(np.std(tiles.transpose(0, 2, 1, 3)[complete]))
    return float(np.std(means) / (spread / block)) if spread > 0 else 1.0


# ----------------------------------------------------------------------------- correlation, KL
@dataclasses.dataclass(frozen=True)
class LinearFit:
    """Pixel-to-pixel agreement of two images (TDR Fig. 2: PCC and linear coefficient).

    Attributes
    ----------
    pearson : float
        Pearson correlation coefficient.
    slope, intercept : float
        Least-squares line ``y = slope * x + intercept`` (y: the second image).
    n_pixels : int
        Pixels finite in both images.
    """

    pearson: float
    slope: float
    intercept: float
    n_pixels: int


def correlation(x: np.ndarray, y: np.ndarray) -> LinearFit:
    """Pearson correlation and least-squares slope of ``y`` against ``x`` over the finite pixels.

    Parameters
    ----------
    x, y : ndarray
        Images of one shape, e.g. the input (x) and the denoised output (y).

    Returns
    -------
    LinearFit

    Raises
    ------
    ValueError
        If the shapes differ, fewer than 2 pixels are finite in both, or ``x`` is constant.
    """
    from scipy.stats import linregress

    a, b = _pair(x, y, ("x", "y"))
    mask = _finite_pixels(a, b)
    a, b = a[mask], b[mask]
    if a.size < 2 or np.ptp(a) == 0:
        msg = (f"`x` must have at least 2 distinct finite values (pixels finite in both images). "
               f"Received: {a.size} finite pixel(s), ptp={np.ptp(a) if a.size else 0}")
        raise ValueError(msg)
    fit = linregress(a, b)
    return LinearFit(pearson=float(fit.rvalue), slope=float(fit.slope), intercept=float(fit.intercept),
                     n_pixels=int(a.size))


def kl_divergence(p_image: np.ndarray, q_image: np.ndarray, bins: int = 256,
                  value_range: tuple[float, float] | None = None, eps: float = 1e-10) -> float:
    """Kullback-Leibler divergence ``KL(p || q)`` of two images' pixel-value distributions.

    ``sum_i p_i log(p_i / q_i)`` (Astro U-net eq. 9) over a shared histogram; ``p`` is the
    reference (truth) distribution, ``q`` the one compared with it. Empty ``q`` bins get ``eps``
    so the divergence stays finite. Natural logarithm (nats).

    Parameters
    ----------
    p_image, q_image : ndarray
        Pixel values (any shapes; non-finite values ignored).
    bins : int
        Histogram bins.
    value_range : (float, float), optional
        Histogram range. Default: the 0.5-99.5 percentiles of ``p_image`` (so that a few
        extreme pixels do not squeeze the distribution into one bin).
    eps : float
        Floor for empty bins of ``q``.

    Returns
    -------
    float
        KL divergence in nats, >= 0; 0 for identical distributions.

    Raises
    ------
    ValueError
        If ``bins < 2``, the range is empty, or an image has no finite pixel in the range.
    """
    if bins < 2:
        msg = f"`bins` must be at least 2. Received: bins={bins}"
        raise ValueError(msg)
    p_values = np.asarray(p_image, dtype=np.float64).ravel()
    q_values = np.asarray(q_image, dtype=np.float64).ravel()
    p_values, q_values = p_values[np.isfinite(p_values)], q_values[np.isfinite(q_values)]
    if value_range is None:
        if p_values.size == 0:
            msg = "`p_image` has no finite pixel."
            raise ValueError(msg)
        value_range = tuple(float(v) for v in np.percentile(p_values, [0.5, 99.5]))
    low, high = value_range
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        msg = f"`value_range` must be two finite numbers (low < high). Received: value_range={value_range}"
        raise ValueError(msg)
    p_counts = np.histogram(p_values, bins=bins, range=(low, high))[0].astype(np.float64)
    q_counts = np.histogram(q_values, bins=bins, range=(low, high))[0].astype(np.float64)
    if p_counts.sum() == 0 or q_counts.sum() == 0:
        msg = f"An image has no finite pixel in value_range={value_range}."
        raise ValueError(msg)
    p = p_counts / p_counts.sum()
    q = np.maximum(q_counts / q_counts.sum(), eps)
    nonzero = p > 0
    return float(np.sum(p[nonzero] * np.log(p[nonzero] / q[nonzero])))


# ----------------------------------------------------------------------------- star recovery
@dataclasses.dataclass(frozen=True)
class Catalogue:
    """Source positions and fluxes: a truth list, or detections on a reference image.

    Attributes
    ----------
    x, y : ndarray
        Column and row of each source centre, 0-based pixel coordinates (pixel centres at
        integers, as `sep` and NumPy index them).
    flux : ndarray
        Flux of each source, data units × pixels (electrons for a frame in electrons).
    star : ndarray of bool
        Sources whose flux enters the flux error (stars; False for galaxies, whose flux an
        aperture does not measure).
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    star: np.ndarray

    def __post_init__(self):
        arrays = {name: np.atleast_1d(np.asarray(getattr(self, name))) for name in ("x", "y", "flux", "star")}
        sizes = {name: a.size for name, a in arrays.items()}
        if len(set(sizes.values())) != 1:
            msg = f"`x`, `y`, `flux` and `star` must have one length. Received: lengths {sizes}"
            raise ValueError(msg)
        for name in ("x", "y", "flux"):
            object.__setattr__(self, name, arrays[name].astype(np.float64).ravel())
        object.__setattr__(self, "star", arrays["star"].astype(bool).ravel())

    def __len__(self) -> int:
        return int(self.x.size)

    @classmethod
    def from_table(cls, table) -> Catalogue:
        """From a table with columns ``x``, ``y``, ``flux`` and optionally ``kind`` (``'star'`` rows).

        Raises
        ------
        ValueError
            If a required column is missing.
        """
        names = list(getattr(table, "colnames", None) or getattr(table, "columns", []))
        missing = [c for c in ("x", "y", "flux") if c not in names]
        if missing:
            msg = (f"Star catalogue must have columns x, y, flux; missing: {', '.join(missing)}. "
                   f"Received: columns={names}")
            raise ValueError(msg)
        if "kind" in names:
            star = np.char.strip(np.asarray(table["kind"]).astype(str)) == "star"
        else:
            star = np.ones(len(table["x"]), dtype=bool)
        return cls(np.asarray(table["x"]), np.asarray(table["y"]), np.asarray(table["flux"]), star)


@dataclasses.dataclass(frozen=True)
class StarRecovery:
    """How many catalogued sources an image keeps at a detection threshold, and their fluxes.

    Attributes
    ----------
    threshold : float
        Absolute detection threshold above the background, data units.
    n_truth, n_detected : int
        Catalogue sources; sources `sep` found in the image.
    true_positives, false_positives, false_negatives : int
        1-to-1 matches within the radius; detections without a catalogue source; catalogue
        sources without a detection.
    tpr, precision, f1 : float
        Recall ``TP / n_truth``, ``TP / (TP + FP)`` and their harmonic mean (Astro U-net
        eqs. 22-24); NaN where undefined (0 / 0).
    flux_error_mean, flux_error_median : float
        Mean and median relative flux error ``(F_measured - F_true) / F_true`` of matched stars
        (the negative of Astro U-net eq. 25: negative = flux lost); NaN without matched stars.
    truth_flux, measured_flux : ndarray
        Fluxes of the matched stars behind the flux error (for flux-error-against-flux plots).
    matched : ndarray of int
        Catalogue indices of the true positives.
    """

    threshold: float
    n_truth: int
    n_detected: int
    true_positives: int
    false_positives: int
    false_negatives: int
    tpr: float
    precision: float
    f1: float
    flux_error_mean: float
    flux_error_median: float
    truth_flux: np.ndarray = dataclasses.field(repr=False)
    measured_flux: np.ndarray = dataclasses.field(repr=False)
    matched: np.ndarray = dataclasses.field(repr=False)

    def summary(self) -> dict:
        """The scalar fields, for tables and JSON."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}


def subtract_background(image: np.ndarray, box: int = 64) -> np.ndarray:
    """The image minus a `sep` background map (``box``-pixel mesh); NaN pixels are masked and set to 0.

    Parameters
    ----------
    image : ndarray (H, W)
    box : int
        Background mesh size in pixels (capped at the image size).

    Returns
    -------
    ndarray (H, W), float64, C-contiguous.
    """
    import sep

    data = np.ascontiguousarray(image, dtype=np.float64)
    if data.ndim != 2:
        msg = f"`image` must be 2-D. Received: image.shape={data.shape}"
        raise ValueError(msg)
    bad = ~np.isfinite(data)
    if bad.all():
        msg = "`image` has no finite pixel."
        raise ValueError(msg)
    data = np.where(bad, 0.0, data)
    size = max(8, min(box, *data.shape))
    background = sep.Background(data, mask=bad if bad.any() else None, bw=size, bh=size)
    return np.ascontiguousarray(np.where(bad, 0.0, data - background.back()))


def detect_sources(subtracted: np.ndarray, threshold: float, minarea: int = 5) -> np.ndarray:
    """`sep.extract` at an ABSOLUTE threshold on a background-subtracted image.

    Parameters
    ----------
    subtracted : ndarray (H, W)
        Output of `subtract_background`.
    threshold : float
        Detection threshold in data units above the background (e.g. 3 × the noisy input's
        background sigma, the same for every image compared).
    minarea : int
        Minimum connected pixels above the threshold (after `sep`'s default 3×3 filter).

    Returns
    -------
    ndarray
        `sep`'s structured array of objects (fields ``x``, ``y``, ``flux``, ...).
    """
    import sep

    if not (np.isfinite(threshold) and threshold > 0):
        msg = f"`threshold` must be a finite number > 0. Received: threshold={threshold}"
        raise ValueError(msg)
    sep.set_extract_pixstack(max(300_000, 2 * subtracted.size))
    sep.set_sub_object_limit(4096)
    return sep.extract(np.ascontiguousarray(subtracted, dtype=np.float64), float(threshold), minarea=minarea)


def match_sources(truth_xy: np.ndarray, detected_xy: np.ndarray, radius: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Optimal 1-to-1 matching of detections to catalogue sources within ``radius``.

    Candidate pairs come from a `scipy.spatial.cKDTree`; `scipy.optimize.linear_sum_assignment`
    then picks the largest set of pairs (each source and each detection used at most once) with
    the smallest total distance, so a detection between two sources cannot steal the match of
    the other one as greedy matching can.

    Parameters
    ----------
    truth_xy, detected_xy : ndarray (N, 2), (M, 2)
        Positions (x, y) in pixels.
    radius : float
        Largest distance of a match, pixels.

    Returns
    -------
    truth_index, detected_index : ndarray of int
        Matched pairs, sorted by catalogue index.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    if not radius > 0:
        msg = f"`radius` must be > 0. Received: radius={radius}"
        raise ValueError(msg)
    truth_xy = np.asarray(truth_xy, dtype=np.float64).reshape(-1, 2)
    detected_xy = np.asarray(detected_xy, dtype=np.float64).reshape(-1, 2)
    empty = (np.zeros(0, int), np.zeros(0, int))
    if len(truth_xy) == 0 or len(detected_xy) == 0:
        return empty
    pairs = cKDTree(truth_xy).sparse_distance_matrix(cKDTree(detected_xy), radius, output_type="ndarray")
    if pairs.size == 0:
        return empty
    rows, row_of = np.unique(pairs["i"], return_inverse=True)
    cols, col_of = np.unique(pairs["j"], return_inverse=True)
    # a non-pair costs more than any set of real pairs, so the number of matches is maximised first
    big = (radius + 1.0) * (min(len(rows), len(cols)) + 1)
    cost = np.full((len(rows), len(cols)), big)
    cost[row_of, col_of] = pairs["v"]
    r, c = linear_sum_assignment(cost)
    real = cost[r, c] < big
    ti, di = rows[r[real]], cols[c[real]]
    order = np.argsort(ti)
    return ti[order].astype(int), di[order].astype(int)


def aperture_flux(subtracted: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Sum of a background-subtracted image in circles of ``radius`` px at (x, y) (`sep.sum_circle`)."""
    import sep

    if not radius > 0:
        msg = f"`radius` must be > 0. Received: radius={radius}"
        raise ValueError(msg)
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return np.zeros(0)
    flux, _, _ = sep.sum_circle(np.ascontiguousarray(subtracted, dtype=np.float64), x,
                                np.asarray(y, dtype=np.float64), float(radius), subpix=5)
    return np.asarray(flux, dtype=np.float64)


def moffat_enclosed_fraction(radius: float, fwhm: float, beta: float) -> float:
    """Fraction of a Moffat profile's flux inside a circle: ``1 - (1 + (r / gamma)²)^(1 - beta)``."""
    gamma = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return float(1.0 - (1.0 + (radius / gamma) ** 2) ** (1.0 - beta))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def star_recovery(
    image: np.ndarray,
    truth: Catalogue,
    threshold: float,
    *,
    radius: float = 2.0,
    aperture: float = 5.0,
    aperture_correction: float = 1.0,
    min_flux: float = 0.0,
) -> StarRecovery:
    """Detect sources at a fixed absolute threshold and match them 1-to-1 to a catalogue.

    Astro U-net §4.3 with `sep` in place of SExtractor: the background is subtracted, sources are
    found above ``threshold`` (data units, NOT a multiple of this image's own noise: a smoothed
    image then cannot gain detections by lowering its own noise estimate), matched to ``truth``
    within ``radius``; matched stars get an aperture flux at the detected centre, divided by
    ``aperture_correction`` (the fraction of a star's flux inside the aperture; 1 when
    ``truth`` fluxes were measured with the same aperture).

    Parameters
    ----------
    image : ndarray (H, W)
        Linear image in data units.
    truth : Catalogue
        Sources to recover.
    threshold : float
        Absolute detection threshold above the background, data units.
    radius : float
        Matching radius, pixels.
    aperture : float
        Aperture radius for fluxes, pixels.
    aperture_correction : float
        Enclosed-flux fraction of the aperture, in (0, 1].
    min_flux : float
        Only stars with catalogue flux above this enter the flux error.

    Returns
    -------
    StarRecovery
    """
    if not 0 < aperture_correction <= 1:
        msg = f"`aperture_correction` must be in (0, 1]. Received: aperture_correction={aperture_correction}"
        raise ValueError(msg)
    return _recovery(subtract_background(image), truth, threshold, radius, aperture, aperture_correction, min_flux)


def _recovery(sub: np.ndarray, truth: Catalogue, threshold: float, radius: float, aperture: float,
              aperture_correction: float, min_flux: float) -> StarRecovery:
    """:func:`star_recovery` on an already background-subtracted image."""
    objects = detect_sources(sub, threshold)
    ti, di = match_sources(np.column_stack([truth.x, truth.y]), np.column_stack([objects["x"], objects["y"]]),
                           radius)
    tp, n_truth, n_detected = len(ti), len(truth), len(objects)
    fp, fn = n_detected - tp, n_truth - tp
    tpr, precision = _ratio(tp, n_truth), _ratio(tp, tp + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    use = truth.star[ti] & (truth.flux[ti] > min_flux) & (truth.flux[ti] > 0)
    measured = aperture_flux(sub, objects["x"][di[use]], objects["y"][di[use]], aperture) / aperture_correction
    true_flux = truth.flux[ti[use]]
    errors = measured / true_flux - 1.0
    return StarRecovery(
        threshold=float(threshold), n_truth=n_truth, n_detected=n_detected, true_positives=tp,
        false_positives=fp, false_negatives=fn, tpr=tpr, precision=precision, f1=f1,
        flux_error_mean=float(np.mean(errors)) if errors.size else float("nan"),
        flux_error_median=float(np.median(errors)) if errors.size else float("nan"),
        truth_flux=true_flux, measured_flux=measured, matched=ti)


def recovery_at_false_positives(
    image: np.ndarray,
    truth: Catalogue,
    max_false_positives: int,
    noise_sigma: float,
    *,
    sigmas: np.ndarray | None = None,
    radius: float = 2.0,
    aperture: float = 5.0,
    aperture_correction: float = 1.0,
) -> StarRecovery:
    """Star recovery at the lowest threshold that gives no more than ``max_false_positives``.

    One point of each image's free-response ROC curve: denoisers are compared at a matched
    false-positive count (the noisy input's, say) rather than at one threshold, so a
    method can neither win by detecting deeper into its own noise nor lose by having its
    noise estimate move. Thresholds are ``sigmas × noise_sigma`` (this image's own
    background σ), scanned upwards (default 1σ to 1000σ in 160 geometric steps of 4.4 %:
    a denoiser's own σ can be 30× below its input's, and its artefacts far above it).

    Returns
    -------
    StarRecovery
        At the chosen threshold; ``threshold`` says which. If even the highest threshold
        gives too many false positives, the result at the highest.
    """
    if max_false_positives < 0:
        msg = f"`max_false_positives` must be >= 0. Received: max_false_positives={max_false_positives}"
        raise ValueError(msg)
    if not (np.isfinite(noise_sigma) and noise_sigma > 0):
        msg = f"`noise_sigma` must be a finite number > 0. Received: noise_sigma={noise_sigma}"
        raise ValueError(msg)
    sigmas = np.geomspace(1.0, 1000.0, 160) if sigmas is None else np.sort(np.asarray(sigmas, float))
    sub = subtract_background(image)
    result = None
    for k in sigmas:
        result = _recovery(sub, truth, k * noise_sigma, radius, aperture, aperture_correction, 0.0)
        if result.false_positives <= max_false_positives:
            break
    return result


def reference_catalogue(reference: np.ndarray, threshold: float, aperture: float = 5.0) -> Catalogue:
    """Sources detected on a clean reference image at ``threshold``, with aperture fluxes.

    For `star_recovery` without a truth list: the fluxes are measured with the same aperture as
    the compared image's, so no aperture correction is needed.
    """
    sub = subtract_background(reference)
    objects = detect_sources(sub, threshold)
    flux = aperture_flux(sub, objects["x"], objects["y"], aperture)
    return Catalogue(objects["x"], objects["y"], flux, np.ones(len(objects), dtype=bool))


def empty_aperture_noise(subtracted: np.ndarray, aperture: float, avoid_xy: np.ndarray | None = None,
                         avoid_radius: float = 0.0) -> float:
    """Noise of an aperture sum, from apertures laid on a regular grid over the image.

    The MAD standard deviation of the sums in circles of radius ``aperture`` centred every
    ``2 * aperture + 1`` px (so they do not overlap), leaving out those centred within
    ``avoid_radius`` of a known source; the MAD ignores the few that still fall on sources.
    Unlike ``sigma_pixel * sqrt(N_pixels)`` it includes the pixel-to-pixel correlation that any
    smoothing or denoising leaves in the noise.

    Parameters
    ----------
    subtracted : ndarray (H, W)
        Background-subtracted image (`subtract_background`).
    aperture : float
        Aperture radius, pixels.
    avoid_xy : ndarray (N, 2), optional
        Source positions (x, y) to keep apertures away from.
    avoid_radius : float
        Distance, pixels, from ``avoid_xy`` inside which no aperture is centred.

    Returns
    -------
    float
        Standard deviation of an empty aperture's sum, data units × pixels.

    Raises
    ------
    ValueError
        If fewer than 10 apertures remain.
    """
    from astropy.stats import mad_std
    from scipy.spatial import cKDTree

    step = 2.0 * aperture + 1.0
    height, width = subtracted.shape
    ys, xs = np.meshgrid(np.arange(aperture, height - aperture, step), np.arange(aperture, width - aperture, step),
                         indexing="ij")
    centres = np.column_stack([xs.ravel(), ys.ravel()])
    if avoid_xy is not None and len(avoid_xy) and avoid_radius > 0 and len(centres):
        near = cKDTree(np.asarray(avoid_xy, np.float64).reshape(-1, 2)).query(centres, k=1)[0] < avoid_radius
        centres = centres[~near]
    if len(centres) < 10:
        msg = (f"Too few empty apertures ({len(centres)}, at least 10 needed) for aperture={aperture} px "
               f"in an image of shape {subtracted.shape}.")
        raise ValueError(msg)
    return float(mad_std(aperture_flux(subtracted, centres[:, 0], centres[:, 1], aperture)))


def snr_gain(output: np.ndarray, noisy: np.ndarray, x: np.ndarray, y: np.ndarray, aperture: float = 5.0) -> float:
    """Signal-to-noise gain of the stars at (x, y): ``SNR_output / SNR_input`` (Astro U-net eq. 28).

    Per image, ``SNR = mean_i F_i / sigma_ap`` (eq. 26, background-limited): ``F_i`` the aperture
    flux of star i after background subtraction and ``sigma_ap`` the empty-aperture noise
    (`empty_aperture_noise`) of the same aperture, away from the stars measured (farther than
    3 apertures). The same positions and aperture are used in
    both images. ``sigma_ap`` is measured, not ``sigma_pixel * sqrt(N)``: a denoiser correlates the
    noise it leaves, and the per-pixel formula would then overstate the gain (a Gaussian blur of
    1.5 px would "gain" about 5×).

    Parameters
    ----------
    output, noisy : ndarray (H, W)
        Denoised and noisy images, data units.
    x, y : ndarray
        Star positions, e.g. catalogue stars detected in the noisy input.
    aperture : float
        Aperture radius, pixels.

    Returns
    -------
    float
        The gain; NaN without stars or with a non-positive mean input flux.
    """
    if np.size(x) == 0:
        return float("nan")
    snr = []
    for image in (output, noisy):
        sub = subtract_background(image)
        flux = float(np.mean(aperture_flux(sub, x, y, aperture)))
        noise = empty_aperture_noise(sub, aperture, np.column_stack([x, y]), 3.0 * aperture)
        snr.append(flux / noise if noise > 0 else float("inf"))
    return snr[0] / snr[1] if snr[1] > 0 else float("nan")
