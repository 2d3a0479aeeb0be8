"""What a denoiser kept: the strong signal and the structure it took out with the noise.

* `strong_slope`: output against input over the strong pixels only (TDR: ``|B| > 50 G``), as a
  `StrongSlope`.
* `residual_structure`: structure in ``input - output`` above ~10 px (1 = white noise).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from astrotf.metrics._common import float_pair


# ----------------------------------------------------------------------------- what a denoiser kept
@dataclasses.dataclass(frozen=True)
class StrongSlope:
    """Slope of output against input over the strong pixels (TDR: ``|B| > 50 G``).

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
    x, y = float_pair(inp, out, ("inp", "out"))
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
