"""Restore: put back every pixel the denoiser moved by more than a threshold (TDR, "Restoring").

After denoising, pixels whose change exceeds ``R`` are *abnormal*: they are set back
to their input values, so that no pixel of the output differs from the input by more
than ``R`` (data units). ``R`` may be given directly or as ``K`` times the noise level
of the input (:func:`astrotf.metrics.noise_level`). Works with any denoiser's output.

No TensorFlow import.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from astrotf.metrics import noise_level


@dataclasses.dataclass(frozen=True)
class Restored:
    """Result of :func:`restore`.

    Attributes
    ----------
    image : ndarray
        The restored image (dtype of the denoised input).
    restored : ndarray of bool
        True where a pixel was set back to its input value.
    fraction : float
        Restored pixels / finite input pixels.
    threshold : float
        ``R`` in data units.
    """

    image: np.ndarray = dataclasses.field(repr=False)
    restored: np.ndarray = dataclasses.field(repr=False)
    fraction: float
    threshold: float


def restore(denoised: np.ndarray, original: np.ndarray, threshold: float) -> Restored:
    """Set back every pixel with ``|denoised - original| > threshold``.

    Guarantee: ``|result - original| <= threshold`` for every finite pixel of
    ``original`` (differences are computed in float64). A denoised value that is not
    finite where the input is finite is restored as well; pixels that are not finite
    in the input are left as the denoiser returned them.

    Parameters
    ----------
    denoised, original : ndarray, same shape
    threshold : float
        ``R`` >= 0, in data units.

    Returns
    -------
    Restored

    Raises
    ------
    ValueError
        Negative or non-finite threshold, or shapes that differ.
    """
    if not (np.isfinite(threshold) and threshold >= 0):
        msg = f"`threshold` must be a finite number >= 0. Received: threshold={threshold!r}"
        raise ValueError(msg)
    denoised = np.asarray(denoised)
    original = np.asarray(original)
    if denoised.shape != original.shape:
        msg = (f"`denoised` and `original` must have the same shape. "
               f"Received: denoised.shape={denoised.shape}, original.shape={original.shape}")
        raise ValueError(msg)
    finite = np.isfinite(original)
    with np.errstate(invalid="ignore"):
        within = np.abs(denoised.astype(np.float64) - original.astype(np.float64)) <= threshold
    restored = finite & ~within
    image = np.where(restored, original, denoised).astype(denoised.dtype, copy=False)
    # the cast back to the output dtype may round: set back any pixel it pushed past R
    with np.errstate(invalid="ignore"):
        pushed = finite & ~(np.abs(image.astype(np.float64) - original.astype(np.float64)) <= threshold)
    if pushed.any():
        image[pushed] = original[pushed]
        restored |= pushed
    n_finite = int(finite.sum())
    fraction = float(restored.sum()) / n_finite if n_finite else 0.0
    return Restored(image=image, restored=restored, fraction=fraction, threshold=float(threshold))


def restore_threshold(original: np.ndarray, *, threshold: float | None = None, sigmas: float | None = None,
                      value_range: tuple[float, float] = (-20.0, 20.0)) -> float:
    """``R`` from exactly one of ``threshold`` (data units) or ``sigmas`` × the noise level.

    The noise level is :func:`astrotf.metrics.noise_level` of ``original`` over
    ``value_range`` (the paper's Gaussian fit to the value histogram).

    Raises
    ------
    ValueError
        Neither or both given, or a negative value.
    """
    if (threshold is None) == (sigmas is None):
        msg = f"Give exactly one of `threshold` and `sigmas`. Received: threshold={threshold}, sigmas={sigmas}"
        raise ValueError(msg)
    if threshold is not None:
        if not threshold >= 0:
            msg = f"`threshold` must be >= 0. Received: threshold={threshold}"
            raise ValueError(msg)
        return float(threshold)
    if not sigmas >= 0:
        msg = f"`sigmas` must be >= 0. Received: sigmas={sigmas}"
        raise ValueError(msg)
    return float(sigmas) * noise_level(original, value_range).sigma
