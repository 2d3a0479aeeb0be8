"""Simulated linear mono star fields with a known truth catalogue.

Noise-free fields in electrons: Moffat stars with a power-law flux distribution, PSF-convolved Sérsic
galaxies and a flat (optionally weakly tilted) sky. They stand in for the long-exposure ground truth of
the Astro U-net paper (Vojtekova et al. 2020, §2); the noisy short exposure is made from them by
`astrotf.data.noise`. NumPy and astropy only, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from astropy.convolution import convolve_fft
from astropy.modeling.models import Moffat2D, Sersic2D
from astropy.table import Table

from astrotf.errors import AstroTFError

_OVERSAMPLE = 3  # sub-pixels per pixel side: sources are integrated over pixels, not point-sampled
_WING_LEVEL = 0.01  # electrons/px where a star's cutout is truncated
_MAX_STAR_RADIUS = 64  # px
_MAX_GALAXY_RADIUS = 48  # px, before adding the PSF margin


def _check_range(name: str, value: tuple, low: float, *, inclusive: bool = True, integer: bool = False) -> None:
    """Raise unless ``value`` is a ``(min, max)`` pair with ``low <= min <= max`` (``low < min`` if not inclusive)."""
    ok = isinstance(value, tuple) and len(value) == 2
    if ok:
        kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
        ok = all(isinstance(v, kinds) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        ok = ok and (value[0] >= low if inclusive else value[0] > low) and value[0] <= value[1]
    if not ok:
        bound = f"{low} <= min" if inclusive else f"{low} < min"
        kind = "integers" if integer else "finite numbers"
        msg = f"`{name}` must be a (min, max) tuple of {kind} with {bound} <= max. Received: {name}={value!r}"
        raise AstroTFError(msg)


@dataclasses.dataclass(frozen=True)
class StarFieldConfig:
    """Distributions from which `simulate_star_field` draws one field.

    Every ``(min, max)`` pair is sampled uniformly per field (per source for the galaxy parameters),
    except ``flux_range``, which bounds a power law.

    Parameters
    ----------
    shape : tuple of int
        Field size ``(height, width)`` in pixels.
    n_stars : tuple of int
        Range of the number of stars.
    flux_range : tuple of float
        Range of the total star flux in electrons; fluxes follow ``dN/dF ∝ F**-flux_slope``.
    flux_slope : float
        Power-law index ``alpha`` of the star flux distribution (1 gives a log-uniform distribution).
    fwhm : tuple of float
        Range of the Moffat PSF full width at half maximum in pixels (one PSF per field).
    moffat_beta : float
        Moffat power index ``beta`` (> 1 for a finite total flux).
    n_galaxies : tuple of int
        Range of the number of Sérsic galaxies.
    galaxy_flux : tuple of float
        Range of the total galaxy flux in electrons (log-uniform).
    sky : tuple of float
        Range of the sky level in electrons per pixel (one level per field).
    sky_gradient : float
        Peak-to-peak change of the sky across the field as a fraction of its level, along a random
        direction; 0 gives a flat sky.

    Raises
    ------
    astrotf.errors.AstroTFError
        A ``ValueError`` naming the invalid field and its value.
    """

    shape: tuple[int, int] = (512, 512)
    n_stars: tuple[int, int] = (50, 400)
    flux_range: tuple[float, float] = (200.0, 2e5)
    flux_slope: float = 1.5
    fwhm: tuple[float, float] = (1.8, 4.0)
    moffat_beta: float = 3.0
    n_galaxies: tuple[int, int] = (0, 15)
    galaxy_flux: tuple[float, float] = (1e3, 5e4)
    sky: tuple[float, float] = (20.0, 200.0)
    sky_gradient: float = 0.0

    def __post_init__(self):
        for field in dataclasses.fields(self):  # TOML and JSON give lists
            if isinstance(getattr(self, field.name), list):
                object.__setattr__(self, field.name, tuple(getattr(self, field.name)))
        shape = self.shape
        if not (
            isinstance(shape, tuple)
            and len(shape) == 2
            and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape)
        ):
            msg = f"`shape` must be a (height, width) tuple of positive integers. Received: shape={shape!r}"
            raise AstroTFError(msg)
        _check_range("n_stars", self.n_stars, 0, integer=True)
        _check_range("flux_range", self.flux_range, 0, inclusive=False)
        _check_range("fwhm", self.fwhm, 0, inclusive=False)
        _check_range("n_galaxies", self.n_galaxies, 0, integer=True)
        _check_range("galaxy_flux", self.galaxy_flux, 0, inclusive=False)
        _check_range("sky", self.sky, 0)
        if not (isinstance(self.flux_slope, (int, float)) and math.isfinite(self.flux_slope)):
            msg = f"`flux_slope` must be a finite number. Received: flux_slope={self.flux_slope!r}"
            raise AstroTFError(msg)
        if not (isinstance(self.moffat_beta, (int, float)) and 1 < self.moffat_beta < math.inf):
            msg = f"`moffat_beta` must be a finite number > 1. Received: moffat_beta={self.moffat_beta!r}"
            raise AstroTFError(msg)
        if not (isinstance(self.sky_gradient, (int, float)) and 0 <= self.sky_gradient < 1):
            msg = f"`sky_gradient` must be a number in [0, 1). Received: sky_gradient={self.sky_gradient!r}"
            raise AstroTFError(msg)


def _power_law(rng: np.random.Generator, low: float, high: float, alpha: float, size: int) -> np.ndarray:
    """Draw from ``dN/dF ∝ F**-alpha`` on ``[low, high]`` by inverting the cumulative distribution."""
    u = rng.random(size)
    if abs(alpha - 1.0) < 1e-9:
        return low * (high / low) ** u
    a, b = low ** (1.0 - alpha), high ** (1.0 - alpha)
    return (a + u * (b - a)) ** (1.0 / (1.0 - alpha))


def _subpixel_grid(x: float, y: float, radius: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Oversampled coordinates of the ``(2 * radius + 1)``² pixel cutout centred on the pixel holding (x, y)."""
    ix, iy = int(round(x)), int(round(y))
    offsets = (np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
    fine = (np.arange(-radius, radius + 1)[:, None] + offsets[None, :]).ravel()
    return ix, iy, (ix + fine)[None, :], (iy + fine)[:, None]


def _bin(fine: np.ndarray) -> np.ndarray:
    """Average ``_OVERSAMPLE``² sub-pixels into pixels."""
    n = fine.shape[0] // _OVERSAMPLE
    return fine.reshape(n, _OVERSAMPLE, n, _OVERSAMPLE).mean(axis=(1, 3))


def _add_cutout(image: np.ndarray, cutout: np.ndarray, ix: int, iy: int) -> None:
    """Add ``cutout`` centred on pixel (ix, iy) to ``image`` in place, clipped at the field edges."""
    r = cutout.shape[0] // 2
    height, width = image.shape
    y0, y1, x0, x1 = max(iy - r, 0), min(iy + r + 1, height), max(ix - r, 0), min(ix + r + 1, width)
    if y0 < y1 and x0 < x1:
        image[y0:y1, x0:x1] += cutout[y0 - iy + r : y1 - iy + r, x0 - ix + r : x1 - ix + r]


def simulate_star_field(
    config: StarFieldConfig = StarFieldConfig(), seed: int | None = None
) -> tuple[np.ndarray, Table]:
    """Noise-free field in electrons (float32, (H, W)) and a truth catalogue (x, y, flux, kind='star'|'galaxy', fwhm).

    Stars are Moffat profiles (`astropy.modeling.models.Moffat2D`) with one FWHM per field; galaxies
    are Sérsic profiles (`astropy.modeling.models.Sersic2D`, index 0.5–4, effective radius 2–10 px,
    ellipticity 0–0.7, random angle) convolved with the same PSF. Each source is rendered, integrated
    over pixels (3×3 sub-pixels), only on a cutout around it and scaled so that the cutout sums to the
    catalogue flux; a source near the field edge loses the part of its cutout outside the field.
    Star cutouts end where the profile falls below 0.01 electron/px.

    Parameters
    ----------
    config : StarFieldConfig
        Distributions to draw the field from.
    seed : int or None
        Seed of `numpy.random.default_rng`; the same seed and config give the same field.

    Returns
    -------
    image : numpy.ndarray
        Float32 array of shape ``config.shape``, electrons per pixel, sky included.
    catalogue : astropy.table.Table
        One row per source: ``x`` (column) and ``y`` (row) of the centre in 0-based pixel coordinates
        (pixel centres at integers), ``flux`` (electrons), ``kind`` (``'star'`` or ``'galaxy'``),
        ``fwhm`` (PSF FWHM in px), and for galaxies ``r_eff`` (px), ``sersic_n``, ``ellip`` and
        ``theta`` (radians), NaN for stars. ``meta`` holds the field's ``seed``, ``fwhm``,
        ``moffat_beta``, ``sky`` and ``sky_gradient``.

    References
    ----------
    Vojtekova et al. 2020, "Learning to denoise astronomical images with U-nets", MNRAS 503, 3204, §2.
    """
    rng = np.random.default_rng(seed)
    height, width = config.shape
    beta = float(config.moffat_beta)
    fwhm = rng.uniform(*config.fwhm)
    gamma = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    sky = rng.uniform(*config.sky)
    n_stars = int(rng.integers(config.n_stars[0], config.n_stars[1], endpoint=True))
    n_galaxies = int(rng.integers(config.n_galaxies[0], config.n_galaxies[1], endpoint=True))

    # Sky: flat level, optionally tilted by +-sky_gradient/2 across the field along a random direction.
    angle = rng.uniform(0.0, 2.0 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width]
    ramp = (math.cos(angle) * (xx - (width - 1) / 2) + math.sin(angle) * (yy - (height - 1) / 2)) / max(height, width)
    image = (sky * (1.0 + config.sky_gradient * ramp)).astype(np.float64)

    star_x = rng.uniform(-0.5, width - 0.5, n_stars)
    star_y = rng.uniform(-0.5, height - 0.5, n_stars)
    star_flux = _power_law(rng, *config.flux_range, config.flux_slope, n_stars)
    for x, y, flux in zip(star_x, star_y, star_flux):
        peak = flux * (beta - 1.0) / (math.pi * gamma**2)
        radius = gamma * math.sqrt(max((peak / _WING_LEVEL) ** (1.0 / beta) - 1.0, 0.0))
        radius = int(math.ceil(min(max(radius, 2.0 * fwhm), _MAX_STAR_RADIUS)))
        ix, iy, gx, gy = _subpixel_grid(x, y, radius)
        cutout = _bin(Moffat2D.evaluate(gx, gy, 1.0, x, y, gamma, beta))
        _add_cutout(image, cutout * (flux / cutout.sum()), ix, iy)

    # PSF kernel for the galaxies, pixel-integrated like the stars.
    psf_radius = int(math.ceil(3.0 * fwhm))
    _, _, kx, ky = _subpixel_grid(0.0, 0.0, psf_radius)
    psf = _bin(Moffat2D.evaluate(kx, ky, 1.0, 0.0, 0.0, gamma, beta))
    gal_x = rng.uniform(-0.5, width - 0.5, n_galaxies)
    gal_y = rng.uniform(-0.5, height - 0.5, n_galaxies)
    gal_flux = np.exp(rng.uniform(*np.log(config.galaxy_flux), n_galaxies))
    gal_n = rng.uniform(0.5, 4.0, n_galaxies)
    gal_r_eff = rng.uniform(2.0, 10.0, n_galaxies)
    gal_ellip = rng.uniform(0.0, 0.7, n_galaxies)
    gal_theta = rng.uniform(0.0, math.pi, n_galaxies)
    for x, y, flux, n, r_eff, ellip, theta in zip(gal_x, gal_y, gal_flux, gal_n, gal_r_eff, gal_ellip, gal_theta):
        radius = int(math.ceil(min(5.0 * r_eff, _MAX_GALAXY_RADIUS))) + psf_radius
        ix, iy, gx, gy = _subpixel_grid(x, y, radius)
        cutout = _bin(Sersic2D.evaluate(gx, gy, 1.0, r_eff, n, x, y, ellip, theta))
        cutout = convolve_fft(cutout, psf, normalize_kernel=True)
        _add_cutout(image, cutout * (flux / cutout.sum()), ix, iy)

    nan_stars = np.full(n_stars, np.nan)
    catalogue = Table(
        {
            "x": np.concatenate([star_x, gal_x]),
            "y": np.concatenate([star_y, gal_y]),
            "flux": np.concatenate([star_flux, gal_flux]),
            "kind": np.array(["star"] * n_stars + ["galaxy"] * n_galaxies, dtype="<U6"),
            "fwhm": np.full(n_stars + n_galaxies, fwhm),
            "r_eff": np.concatenate([nan_stars, gal_r_eff]),
            "sersic_n": np.concatenate([nan_stars, gal_n]),
            "ellip": np.concatenate([nan_stars, gal_ellip]),
            "theta": np.concatenate([nan_stars, gal_theta]),
        },
        meta={"seed": seed, "fwhm": fwhm, "moffat_beta": beta, "sky": sky, "sky_gradient": config.sky_gradient},
    )
    return image.astype(np.float32), catalogue
