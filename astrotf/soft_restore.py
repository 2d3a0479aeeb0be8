"""Soft restore: give each pixel back the part of its change that is more than noise.

Local Wiener shrinkage of the residual ``input - denoised`` (Lee 1980; the Bayesian combination
of a blind-spot prediction with the noisy pixel in Laine et al. 2019). Where the denoiser removed
only noise the output stays denoised; where it cut a real structure (a sunspot's peak, a star
core) the residual carries far more power than noise and the input comes back. The noise is one
level for the frame or, for a noise-conditioned model, its per-pixel σ map. ``astrotf infer``
applies it after the strength blend (:func:`astrotf.restore.restore_and_report`). No TensorFlow
import.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SoftRestored:
    """Result of :func:`soft_restore`.

    Attributes
    ----------
    image : ndarray
        ``denoised + gain * (original - denoised)`` (dtype of the denoised input).
    gain : ndarray of float32
        Per-pixel weight of the input: 0 = the denoiser's value, 1 = the input value.
    mean_gain : float
        Mean gain over finite pixels.
    noise_sigma, width : float
        The noise level (the median of a σ map) and the window's Gaussian sigma (px) used.
    """

    image: np.ndarray = dataclasses.field(repr=False)
    gain: np.ndarray = dataclasses.field(repr=False)
    mean_gain: float
    noise_sigma: float
    width: float


def soft_restore(denoised: np.ndarray, original: np.ndarray, noise_sigma: float | np.ndarray, width: float = 1.0,
                 rows: int = 512) -> SoftRestored:
    """Give back the part of each pixel's change that is more than noise.

    With the residual ``r = original - denoised`` and its local power
    ``P = <r²>`` (a Gaussian window of sigma ``width`` px, over finite pixels), the
    power the noise cannot explain is ``S = max(P - sigma², 0)`` and each pixel
    becomes ``denoised + g · r`` with the Wiener gain ``g = S / (S + sigma²)``.

    Guarantee: every output pixel lies between its denoised and input values, so
    ``|result - original| <= |denoised - original|``. Linear data stay linear: the
    gain only weighs two estimates of the same pixel. Pixels not finite in either
    input are returned as the denoiser gave them.

    Parameters
    ----------
    denoised, original : ndarray, same shape (H, W) or (H, W, C)
    noise_sigma : float or ndarray
        Noise level of ``original`` (> 0, data units), e.g. :func:`astrotf.metrics.noise_level`, or
        its per-pixel σ map (same shape; the window-averaged variance is used, and pixels without a
        finite σ > 0 keep the denoised value).
    width : float
        Sigma of the Gaussian window, in pixels (> 0). Small windows follow sharp
        structure; larger ones estimate the power with less scatter.
    rows : int
        Rows per strip: the frame is processed in strips (with a halo as wide as the
        window), so a 10k x 10k frame needs a few hundred MB, and the result does not
        depend on ``rows``.

    Returns
    -------
    SoftRestored

    Raises
    ------
    ValueError
        Non-positive ``noise_sigma`` or ``width``, or shapes that differ or are not 2-D / 3-D.
    """
    is_map = np.ndim(noise_sigma) > 0
    if is_map and np.shape(noise_sigma) != np.shape(denoised):
        msg = f"a `noise_sigma` map must have the image's shape {np.shape(denoised)}. Received: {np.shape(noise_sigma)}"
        raise ValueError(msg)
    if not is_map and not (np.isfinite(noise_sigma) and noise_sigma > 0):
        msg = f"`noise_sigma` must be a finite number > 0. Received: noise_sigma={noise_sigma!r}"
        raise ValueError(msg)
    if not (np.isfinite(width) and width > 0):
        msg = f"`width` must be a finite number > 0. Received: width={width!r}"
        raise ValueError(msg)
    if not (isinstance(rows, int) and rows >= 1):
        msg = f"`rows` must be an integer >= 1. Received: rows={rows!r}"
        raise ValueError(msg)
    denoised = np.asarray(denoised)
    original = np.asarray(original)
    if denoised.shape != original.shape or denoised.ndim not in (2, 3):
        msg = (f"`denoised` and `original` must have the same (H, W) or (H, W, C) shape. "
               f"Received: denoised.shape={denoised.shape}, original.shape={original.shape}")
        raise ValueError(msg)
    image = np.array(denoised, copy=True)
    gain = np.zeros(denoised.shape, np.float32)
    halo = int(4.0 * width + 0.5) + 1  # gaussian_filter's kernel radius (truncate=4) and one more
    gain_sum, n_valid = 0.0, 0
    for top in range(0, denoised.shape[0], rows):  # strips with a halo: memory bounded, same result
        lo, hi = max(top - halo, 0), min(top + rows + halo, denoised.shape[0])
        keep = slice(top - lo, top - lo + min(rows, denoised.shape[0] - top))
        var = np.square(noise_sigma[lo:hi], dtype=np.float64) if is_map else float(noise_sigma) ** 2
        g, blended, valid = _soft_strip(denoised[lo:hi], original[lo:hi], var, width)
        out = slice(top, top + rows)
        image[out] = np.where(valid[keep], blended[keep], denoised[out])
        gain[out] = g[keep]
        gain_sum += float(g[keep][valid[keep]].sum())
        n_valid += int(valid[keep].sum())
    mean_gain = gain_sum / n_valid if n_valid else 0.0
    level = float(np.nanmedian(noise_sigma)) if is_map else float(noise_sigma)
    return SoftRestored(image=image, gain=gain, mean_gain=mean_gain, noise_sigma=level, width=float(width))


def _soft_strip(denoised: np.ndarray, original: np.ndarray, noise_var, width: float):
    """Gain, blended values and validity of one strip (see :func:`soft_restore`); ``noise_var`` a
    number or a per-pixel array."""
    from scipy import ndimage

    residual = original.astype(np.float64) - denoised.astype(np.float64)
    valid = np.isfinite(residual) & (np.isfinite(noise_var) & (noise_var > 0))
    residual[~valid] = 0.0
    sigmas = (width, width) + (0.0,) * (residual.ndim - 2)  # spatial window; channels apart
    weight = ndimage.gaussian_filter(valid.astype(np.float64), sigmas, mode="reflect")
    with np.errstate(invalid="ignore", divide="ignore"):
        power = ndimage.gaussian_filter(residual * residual, sigmas, mode="reflect") / weight
        if np.ndim(noise_var):  # the variance over the same window
            noise_var = ndimage.gaussian_filter(np.where(valid, noise_var, 0.0), sigmas, mode="reflect") / weight
    signal = np.maximum(np.nan_to_num(power) - noise_var, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(valid, signal / (signal + noise_var), 0.0)
    blended = np.clip(denoised.astype(np.float64) + gain * residual,  # no rounding past either end
                      np.minimum(denoised, original), np.maximum(denoised, original))
    return gain.astype(np.float32), blended.astype(denoised.dtype), valid
