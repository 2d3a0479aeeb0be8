"""Fidelity to a reference and agreement between two images.

* `psnr`, `ssim`: against a reference, over the pixels finite in both (scikit-image).
* `power_spectrum`, `divergence_frequency`: where two images' spatial power spectra start to
  differ (TDR Fig. 4).
* `correlation`: Pearson r and least-squares slope, as a `LinearFit` (TDR Fig. 2).
* `kl_divergence`: of the pixel-value distributions (Astro U-net eq. 9).

References
----------
Vojtekova et al. 2020, "Learning to denoise astronomical images with U-nets", MNRAS 503, 3204, §4.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from astrotf.metrics._common import float_pair


# ----------------------------------------------------------------------------- helpers
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
    a, b = float_pair(reference, image)
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
    a, b = float_pair(image_a, image_b, ("image_a", "image_b"))
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

    a, b = float_pair(x, y, ("x", "y"))
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
