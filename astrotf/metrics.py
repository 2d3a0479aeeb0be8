"""Image-quality and science metrics: noise level, PSNR/SSIM, star recovery.

No TensorFlow import: metrics run on NumPy arrays, on outputs of any denoiser.

References
----------
TDR (Self2Self train-denoise-restore), Methods: the noise level of a magnetogram is the
standard deviation of a Gaussian fitted to the histogram of its pixel values in
[-20, 20] G.
"""

from __future__ import annotations

import dataclasses

import numpy as np


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


def noise_level(
    image: np.ndarray,
    value_range: tuple[float, float] = (-20.0, 20.0),
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
        Histogram bins across ``value_range``.

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
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centers = 0.5 * (edges[:-1] + edges[1:])
    start = models.Gaussian1D(amplitude=counts.max(), mean=float(np.median(values)),
                              stddev=max(float(np.std(values)), edges[1] - edges[0]))
    fit = fitting.TRFLSQFitter()(start, centers, counts.astype(np.float64))
    return NoiseFit(sigma=abs(float(fit.stddev.value)), mean=float(fit.mean.value),
                    amplitude=float(fit.amplitude.value), n_pixels=int(values.size),
                    centers=centers, counts=counts)
