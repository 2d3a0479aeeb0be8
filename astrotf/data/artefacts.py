"""Detector artefacts of a simulated exposure: cosmic-ray hits and hot pixels, with a truth mask.

They belong to the noisy frame, not to the sky: :func:`simulate_artefacts` returns them apart from
:func:`astrotf.data.simulate.simulate_star_field`'s truth, with a mask, so that a training pair can
put them in the input only and a benchmark never counts them as stars (nor a star as one of them).
Both are sharper than any PSF: a cosmic ray deposits its charge along a straight track in the pixels
it crosses, a hot pixel adds a fixed dark signal to one pixel. NumPy only, no TensorFlow.
"""

from __future__ import annotations

import math

import numpy as np

from astrotf.data.simulate import StarFieldConfig

COSMIC_RAY = 1  #: mask bit of a pixel hit by a cosmic ray
HOT_PIXEL = 2  #: mask bit of a hot pixel
COSMIC_RAY_DEPOSIT = (300.0, 2e4)  #: electrons per pixel of track (log-uniform per hit)
COSMIC_RAY_LENGTH = (0.0, 12.0)  #: px, projected track length (0: a single-pixel hit)
HOT_PIXEL_SIGNAL = (50.0, 5e4)  #: electrons (log-uniform)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]), size))


def _add_track(image: np.ndarray, mask: np.ndarray, x: float, y: float, length: float, angle: float,
               deposit: float) -> None:
    """Deposit ``deposit`` electrons per pixel of path along a segment, in place (sampled every 0.1 px)."""
    steps = max(int(math.ceil(length / 0.1)), 1)
    t = (np.arange(steps) + 0.5) / steps - 0.5
    xs = np.round(x + t * length * math.cos(angle)).astype(int)
    ys = np.round(y + t * length * math.sin(angle)).astype(int)
    inside = (xs >= 0) & (xs < image.shape[1]) & (ys >= 0) & (ys < image.shape[0])
    per_sample = deposit * max(length, 1.0) / steps
    np.add.at(image, (ys[inside], xs[inside]), per_sample)
    mask[ys[inside], xs[inside]] |= COSMIC_RAY


def simulate_artefacts(config: StarFieldConfig, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cosmic-ray hits and hot pixels for one exposure of a ``config.shape`` field.

    Parameters
    ----------
    config : StarFieldConfig
        ``shape``, ``cosmic_rays`` and ``hot_pixels`` (ranges of the numbers per field) are used.
    seed : int or None
        Seed of `numpy.random.default_rng`; the same seed gives the same artefacts.

    Returns
    -------
    artefacts : numpy.ndarray
        Float32, ``config.shape``: electrons to add to the exposure (before read noise; the hits carry
        no Poisson noise of their own beyond their random deposits).
    mask : numpy.ndarray
        Uint8, ``config.shape``: :data:`COSMIC_RAY` and :data:`HOT_PIXEL` bits, 0 elsewhere.
    """
    rng = np.random.default_rng(seed)
    height, width = config.shape
    image = np.zeros(config.shape, np.float64)
    mask = np.zeros(config.shape, np.uint8)
    n_rays = int(rng.integers(config.cosmic_rays[0], config.cosmic_rays[1], endpoint=True))
    n_hot = int(rng.integers(config.hot_pixels[0], config.hot_pixels[1], endpoint=True))
    xs, ys = rng.uniform(-0.5, width - 0.5, n_rays), rng.uniform(-0.5, height - 0.5, n_rays)
    lengths = rng.uniform(*COSMIC_RAY_LENGTH, n_rays)
    angles = rng.uniform(0.0, math.pi, n_rays)
    deposits = _log_uniform(rng, COSMIC_RAY_DEPOSIT, n_rays)
    for x, y, length, angle, deposit in zip(xs, ys, lengths, angles, deposits):
        _add_track(image, mask, x, y, length, angle, deposit)
    flat = rng.choice(height * width, size=min(n_hot, height * width), replace=False)
    hot_y, hot_x = np.unravel_index(flat, config.shape)
    image[hot_y, hot_x] += _log_uniform(rng, HOT_PIXEL_SIGNAL, flat.size)
    mask[hot_y, hot_x] |= HOT_PIXEL
    return image.astype(np.float32), mask
