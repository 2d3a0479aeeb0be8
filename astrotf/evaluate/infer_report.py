"""The lines of ``astrotf infer --report``: noise level before and after, and what the output kept
of the input (strong-pixel slope, residual structure, largest change)."""

from __future__ import annotations

import numpy as np

from astrotf import metrics


def noise_line(noise_range: tuple[float, float], sigma_in: float, sigma_denoised: float,
               sigma_soft: float | None = None) -> str:
    """The input's and the denoised output's noise level (Gaussian fit in ``noise_range``) and their
    ratio; with ``sigma_soft``, also after the soft restore."""
    line = (f"noise level (Gaussian fit in [{noise_range[0]:g}, {noise_range[1]:g}]): input {sigma_in:.4g}, "
            f"denoised {sigma_denoised:.4g}, ratio {sigma_denoised / sigma_in:.3f}")
    if sigma_soft is not None:
        line += f"; after soft restore {sigma_soft:.4g}, ratio {sigma_soft / sigma_in:.3f}"
    return line


def restored_noise_line(data: np.ndarray, result: np.ndarray, sigma_in: float, sigma_out: float) -> str:
    """The noise level after the restore and the largest change left (at most R)."""
    diff = np.abs(result.astype(np.float64) - data.astype(np.float64))
    max_dev = float(np.nanmax(diff)) if np.isfinite(diff).any() else 0.0
    return (f"noise level after restore: {sigma_out:.4g}, ratio {sigma_out / sigma_in:.3f}; "
            f"max |out - in| = {max_dev:.4g} <= R")


def kept_lines(data: np.ndarray, result: np.ndarray, domain: str | None, with_max: bool = True,
               sky: metrics.Background | None = None) -> list[str]:
    """What the output kept of the input: strong-pixel slope, residual structure, largest change.

    Parameters
    ----------
    data, result : ndarray
        Input and output, same shape.
    domain : str or None
        ``"magnetogram"``: strong pixels are ``|in| > 50`` (G); else more than 10 x the
        background noise from the background level.
    with_max : bool
        Add the largest ``|out - in|``.
    sky : optional
        The input's :func:`astrotf.metrics.background_noise` if it was measured already (it is
        slow on big frames).

    Returns
    -------
    list of str
        One line, or none when the input's background cannot be measured.
    """
    if domain == "magnetogram":
        origin, threshold, what = 0.0, 50.0, "|in| > 50"
    else:
        if sky is None:
            try:
                sky = metrics.background_noise(data)
            except ValueError:
                return []
        origin, threshold = sky.median, 10 * sky.sigma
        what = f"|in - background| > 10 x its noise ({threshold:.4g})"
    strong = metrics.strong_slope(data, result, threshold, origin)
    diff = np.abs(result.astype(np.float64) - data.astype(np.float64))
    max_change = float(np.nanmax(diff)) if np.isfinite(diff).any() else 0.0
    slope = (f"slope {strong.slope:.4f} over {strong.n_pixels} strong pixels ({what})" if strong.n_pixels >= 10
             else f"too few strong pixels for a slope ({what})")
    line = f"output vs input: {slope}" + (f"; max |out - in| = {max_change:.4g}" if with_max else "")
    try:
        line += f"; residual structure above 10 px {metrics.residual_structure(data - result):.2f} (1 = none)"
    except ValueError:
        pass
    return [line]
