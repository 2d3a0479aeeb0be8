"""What a denoiser kept: the strong signal and the structure it took out with the noise.

* `strong_slope`: output against input over the strong pixels only (TDR: ``|B| > 50 G``), as a
  `StrongSlope`.
* `residual_structure`: structure in ``input - output`` above ~10 px (1 = white noise).
* `source_mask` (pixels of the sources `sep` finds, grown) and `source_flux_ratio` (aperture flux
  of the input's bright sources after / before, a `FluxRatio`): no-truth measures of real frames,
  with :func:`astrotf.metrics.noise.sky_bias` for the sky level.
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


# ----------------------------------------------------------------------------- sources of a frame without truth
def source_mask(image: np.ndarray, k: float = 1.5, grow: int = 3) -> np.ndarray:
    """Pixels of the sources `sep` finds at ``k`` × the image's background σ, grown by ``grow`` px.

    Everything else is sky, for :func:`astrotf.metrics.noise.sky_bias` on a frame without truth.
    Non-finite pixels count as sources (never as sky).
    """
    import sep
    from scipy.ndimage import binary_dilation

    from astrotf.metrics.noise import background_noise
    from astrotf.metrics.stars import subtract_background

    sub = subtract_background(image)
    sigma = background_noise(image).sigma
    if not sigma > 0:
        msg = "The image's background σ is 0: no sky to tell sources from."
        raise ValueError(msg)
    sep.set_extract_pixstack(max(300_000, 2 * sub.size))
    sep.set_sub_object_limit(4096)
    _, segmentation = sep.extract(sub, k * sigma, minarea=5, segmentation_map=True)
    mask = segmentation > 0
    if grow > 0:
        mask = binary_dilation(mask, iterations=int(grow))
    return mask | ~np.isfinite(np.asarray(image, dtype=np.float64))


@dataclasses.dataclass(frozen=True)
class FluxRatio:
    """Aperture flux of the input's bright sources in the output over the input.

    Attributes
    ----------
    ratio : float
        Median over sources of ``F_output / F_input`` (1 = flux kept); NaN without sources.
    n_sources : int
        Sources measured (S/N >= ``min_snr`` in the input, unblended, not truncated).
    aperture : float
        Aperture radius, px.
    n_sharp : int
        Bright sources left out because one pixel holds more than ``max_peak_fraction`` of their flux.
    """

    ratio: float
    n_sources: int
    aperture: float
    #: Sources left out as sharper than any sampled PSF (cosmic rays, hot pixels): see ``max_peak_fraction``.
    n_sharp: int = 0


def source_flux_ratio(inp: np.ndarray, out: np.ndarray, min_snr: float = 20.0,
                      aperture: float | None = None, max_peak_fraction: float = 0.5) -> FluxRatio:
    """How much of its sources' flux a denoiser kept, on a frame without truth.

    Sources are found in the input at 5 × its background σ (`sep`); those unblended and whole
    (`sep` flag 0) with an aperture S/N of at least ``min_snr`` in the input (against the
    empty-aperture noise) are measured in both images, each minus its own `sep` background, in
    circles of ``aperture`` px (default 2.5 × the sources' median FWHM, from 3 to 12 px): a change of
    the sky level does not enter (see :func:`astrotf.metrics.noise.sky_bias`), lost wings and
    cores do. A source whose brightest pixel holds more than ``max_peak_fraction`` of its aperture
    flux is left out (counted in ``n_sharp``): a cosmic ray or hot pixel, sharper than any sampled
    star (a Gaussian star of FWHM 1.2 px holds 0.45 in its central pixel, of FWHM 2 px 0.2), whose
    removal by a denoiser is no loss of flux.
    """
    from astrotf.metrics.noise import background_noise
    from astrotf.metrics.stars import aperture_flux, detect_sources, empty_aperture_noise, subtract_background

    a, b = float_pair(inp, out, ("inp", "out"))
    sub_in, sub_out = subtract_background(a), subtract_background(b)
    objects = detect_sources(sub_in, 5.0 * background_noise(a).sigma)
    clean = objects[objects["flag"] == 0] if np.sum(objects["flag"] == 0) >= 5 else objects
    if len(clean) == 0:
        return FluxRatio(float("nan"), 0, float("nan") if aperture is None else float(aperture))
    if aperture is None:
        fwhm = 2.3548 * float(np.median(np.sqrt(clean["a"] * clean["b"])))
        aperture = float(np.clip(2.5 * fwhm, 3.0, 12.0))
    xy = np.column_stack([clean["x"], clean["y"]])
    f_in = aperture_flux(sub_in, xy[:, 0], xy[:, 1], aperture)
    f_out = aperture_flux(sub_out, xy[:, 0], xy[:, 1], aperture)
    try:
        noise = empty_aperture_noise(sub_in, aperture, np.column_stack([objects["x"], objects["y"]]), 2.0 * aperture)
    except ValueError:  # a small or crowded frame: white-noise estimate instead
        noise = background_noise(sub_in).sigma * np.sqrt(np.pi) * aperture
    bright = (f_in >= min_snr * noise) & np.isfinite(f_out)
    rows = np.clip(np.rint(xy[:, 1]).astype(int), 0, sub_in.shape[0] - 1)
    cols = np.clip(np.rint(xy[:, 0]).astype(int), 0, sub_in.shape[1] - 1)
    padded = np.pad(np.nan_to_num(sub_in, nan=-np.inf), 1, constant_values=-np.inf)
    peak = np.max([padded[rows + 1 + dy, cols + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    sharp = bright & (peak > max_peak_fraction * f_in)
    keep = bright & ~sharp
    ratio = float(np.median(f_out[keep] / f_in[keep])) if keep.any() else float("nan")
    return FluxRatio(ratio, int(keep.sum()), float(aperture), int(sharp.sum()))
