"""Integer grids: finding the step of quantised values, dithering them, and writing values back to integers.

Integer samples (camera ADU, 8/16-bit TIFF and PNG) and FITS BSCALE data hold values on a grid
``origin + k * step``. Statistics that jump from level to level on such data (median, MAD) and
networks that scale each tile by them see the noise at the wrong level; a seeded uniform dither of
one step makes the values continuous again at the cost of ``step² / 12`` more variance.

* Step detection: `value_grid` (``(step, origin)`` from the values themselves) and `resolve_step`
  (a given step, or the one found in a frame).
* Dithering: `dither` (a whole frame, float32, before a network), `dither_values` (float64 values
  for statistics) and `quantisation_variance` (the ``step² / 12`` a dither adds).
* Quantised writes: `to_integers` (display data in [0, 1] to 8/16-bit samples) and
  `to_fits_integers` (physical values to FITS integers through BSCALE/BZERO/BLANK).

NumPy only: :mod:`astrotf.io`, :mod:`astrotf.metrics` and :mod:`astrotf.infer` import this module,
and it imports none of them.
"""

from __future__ import annotations

import numpy as np


# ----------------------------------------------------------------------------- step detection
def value_grid(values: np.ndarray) -> tuple[float, float] | None:
    """``(step, origin)`` if the values that repeat lie on a grid ``origin + k * step``, else None.

    Integer and BSCALE data repeat every value; an output that is partly restored to such an
    input holds those grid values and continuous ones. ``values``: finite values, any shape
    (a strided sample of at most ~200 000 is examined).
    """
    values = np.asarray(values, np.float64).ravel()
    sample = values[:: max(values.size // 200_000, 1)]
    levels, counts = np.unique(sample, return_counts=True)
    common = counts >= 3  # continuous values (float32 too) rarely occur three times
    repeated = levels[common]
    if repeated.size < 3 or counts[common].sum() < 0.2 * sample.size:
        return None
    origin, span = float(repeated[0]), float(repeated[-1] - repeated[0])
    smallest = float(np.min(np.diff(repeated)))
    if not smallest > 1e-9 * max(abs(origin), 1.0):
        return None
    step = span / round(span / smallest)  # over the whole span: float32 rounding of each level averages out
    k = (repeated - origin) / step
    if np.mean(np.abs(k - np.rint(k)) < 0.01) < 0.99:
        return None
    # on a grid the bulk of the values fills it; a few repeated values (masked zeros, saturation) among
    # continuous ones do not
    low, high = np.percentile(sample, [10, 90])
    positions = np.floor((high - low) / step + 1e-6) + 1
    if np.count_nonzero((repeated >= low) & (repeated <= high)) < 0.5 * positions:
        return None
    return step, origin


def resolve_step(data: np.ndarray, step: float | str | None = "auto") -> float | None:
    """The grid step of ``data``'s values: ``step`` itself, or for ``"auto"`` the one found in a sample
    of the values (:func:`value_grid`); None for continuous data."""
    if step == "auto":
        sample = data.ravel()[:: max(data.size // 200_000, 1)]
        sample = sample[np.isfinite(sample)]
        grid = value_grid(sample) if sample.size else None
        return grid[0] if grid is not None else None
    return float(step) if step is not None and step > 0 else None


# ----------------------------------------------------------------------------- dithering
def dither(data: np.ndarray, step: float, seed: int = 0) -> np.ndarray:
    """``data`` plus seeded uniform noise in [-step/2, step/2): quantised values spread over their bins.

    Integer samples (ADU, BSCALE) sit on a grid; the median and MAD of a tile then jump from level to
    level (the MAD of integer data of sigma 2 is exactly 1), and a network that scales each tile by
    them sees the noise at the wrong level. Dithered, the values are continuous again, at the cost of
    ``step² / 12`` more variance, no more than the quantisation added already. NaN stay NaN.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    out = rng.random(data.shape, dtype=np.float32)  # one frame-sized float32 array: the result itself
    out -= 0.5
    out *= np.float32(step)
    out += data
    return out


def dither_values(values: np.ndarray, step: float, seed: int = 0) -> np.ndarray:
    """float64 ``values`` (1-D) plus seeded uniform noise in [-step/2, step/2), for statistics.

    On a grid the median and MAD jump from level to level: the MAD of integer data of sigma 2 is 1,
    of sigma 0.7 it is 0. The dither spreads each level over its bin (the grouped-data median); take
    its own variance, :func:`quantisation_variance`, off a spread measured on the result.
    """
    return values + np.random.default_rng(seed).uniform(-0.5 * step, 0.5 * step, values.size)


def quantisation_variance(step: float) -> float:
    """``step² / 12``: the variance of a uniform dither (or of rounding) over one grid step."""
    return step**2 / 12.0


# ----------------------------------------------------------------------------- quantised writes
def to_integers(data: np.ndarray, dtype: np.dtype, scale: float) -> np.ndarray:
    """``rint(clip(data, 0, 1) * scale)`` as ``dtype``, NaN as 0, in slabs of rows (bounded memory)."""
    out = np.empty(data.shape, dtype)
    rows = max(1, (1 << 22) // max(1, int(np.prod(data.shape[1:]))))
    for start in range(0, data.shape[0], rows):
        slab = np.nan_to_num(data[start:start + rows].astype(np.float32), nan=0.0)
        np.clip(slab, 0.0, 1.0, out=slab)
        slab *= np.float32(scale)
        np.rint(slab, out=slab)
        out[start:start + rows] = slab
    return out


def to_fits_integers(pixels: np.ndarray, dtype: np.dtype, bscale: float, bzero: float, blank) -> np.ndarray:
    """Stored integers ``rint((pixels - bzero) / bscale)``, clipped to ``dtype``, NaN as ``blank``.

    In slabs of about 4 M values along the first axis: the float64 arithmetic never holds more
    than one slab, so a 10000² frame needs its output array and a few tens of MB, not 2 GB.
    """
    out = np.empty(pixels.shape, dtype)
    limits = np.iinfo(dtype)
    high = np.float64(limits.max)
    if int(high) > limits.max:  # int64: float64(2**63 - 1) is 2**63, which the cast would wrap to -2**63
        high = np.nextafter(high, -np.inf)
    rows = max(1, (1 << 22) // max(1, int(np.prod(pixels.shape[1:]))))
    for start in range(0, pixels.shape[0], rows):
        raw = pixels[start:start + rows].astype(np.float64)
        nan = np.isnan(raw)
        raw -= bzero
        raw /= bscale
        np.rint(raw, out=raw)
        np.clip(raw, limits.min, high, out=raw)
        if blank is not None:
            raw[nan] = blank
        out[start:start + rows] = raw
    return out
