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
from astropy.modeling.models import Sersic2D
from astropy.table import Table

from astrotf.data.psf import PSF, bin_subpixels, subpixel_grid
from astrotf.errors import AstroTFError

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
    moffat_beta : float or tuple of float
        Moffat power index ``beta`` (> 1 for a finite total flux), or a range drawn per field.
    gaussian_fraction : float
        Probability that a field's PSF is Gaussian instead of Moffat.
    psf_ellipticity : tuple of float
        Range of the PSF ellipticity ``1 - b/a`` (in [0, 1)), at a random angle per field.
    n_galaxies : tuple of int
        Range of the number of Sérsic galaxies.
    galaxy_flux : tuple of float
        Range of the total galaxy flux in electrons (log-uniform).
    sky : tuple of float
        Range of the sky level in electrons per pixel (one level per field).
    sky_gradient : float
        Peak-to-peak change of the sky across the field as a fraction of its level, along a random
        direction; 0 gives a flat sky.
    saturation : float or None
        Full-well level in electrons: the field is clipped there and stars whose peak pixel reaches
        it are flagged (``saturated`` column). None: no saturation.
    cosmic_rays, hot_pixels : tuple of int
        Ranges of the numbers of cosmic-ray hits and hot pixels drawn by
        :func:`astrotf.data.artefacts.simulate_artefacts` (not by :func:`simulate_star_field`: they
        belong in the noisy frame, not in the truth).

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
    moffat_beta: float | tuple[float, float] = 3.0
    gaussian_fraction: float = 0.0
    psf_ellipticity: tuple[float, float] = (0.0, 0.0)
    n_galaxies: tuple[int, int] = (0, 15)
    galaxy_flux: tuple[float, float] = (1e3, 5e4)
    sky: tuple[float, float] = (20.0, 200.0)
    sky_gradient: float = 0.0
    saturation: float | None = None
    cosmic_rays: tuple[int, int] = (0, 0)
    hot_pixels: tuple[int, int] = (0, 0)

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
        if isinstance(self.moffat_beta, tuple):
            _check_range("moffat_beta", self.moffat_beta, 1, inclusive=False)
        elif not (isinstance(self.moffat_beta, (int, float)) and 1 < self.moffat_beta < math.inf):
            msg = f"`moffat_beta` must be a finite number > 1. Received: moffat_beta={self.moffat_beta!r}"
            raise AstroTFError(msg)
        _check_range("psf_ellipticity", self.psf_ellipticity, 0)
        _check_range("cosmic_rays", self.cosmic_rays, 0, integer=True)
        _check_range("hot_pixels", self.hot_pixels, 0, integer=True)
        if self.psf_ellipticity[1] >= 1:
            msg = f"`psf_ellipticity` must stay below 1. Received: psf_ellipticity={self.psf_ellipticity!r}"
            raise AstroTFError(msg)
        if not (isinstance(self.gaussian_fraction, (int, float)) and 0 <= self.gaussian_fraction <= 1):
            msg = f"`gaussian_fraction` must be a number in [0, 1]. Received: gaussian_fraction={self.gaussian_fraction!r}"
            raise AstroTFError(msg)
        if self.saturation is not None and not (isinstance(self.saturation, (int, float)) and 0 < self.saturation < math.inf):
            msg = f"`saturation` must be None or a finite number > 0. Received: saturation={self.saturation!r}"
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


def _add_cutout(image: np.ndarray, cutout: np.ndarray, ix: int, iy: int) -> None:
    """Add ``cutout`` centred on pixel (ix, iy) to ``image`` in place, clipped at the field edges."""
    r = cutout.shape[0] // 2
    height, width = image.shape
    y0, y1, x0, x1 = max(iy - r, 0), min(iy + r + 1, height), max(ix - r, 0), min(ix + r + 1, width)
    if y0 < y1 and x0 < x1:
        image[y0:y1, x0:x1] += cutout[y0 - iy + r : y1 - iy + r, x0 - ix + r : x1 - ix + r]


def _draw_psf(config: StarFieldConfig, rng: np.random.Generator, extra: np.random.Generator) -> PSF:
    """The field's PSF: the FWHM from the main stream (as always), the newer choices from ``extra``."""
    fwhm = rng.uniform(*config.fwhm)
    beta = config.moffat_beta
    beta = float(extra.uniform(*beta)) if isinstance(beta, tuple) else float(beta)
    kind = "gaussian" if extra.random() < config.gaussian_fraction else "moffat"
    ellipticity = float(extra.uniform(*config.psf_ellipticity))
    return PSF(kind, float(fwhm), beta, ellipticity, float(extra.uniform(0.0, math.pi)))


def _render_galaxies(image: np.ndarray, rng: np.random.Generator, config: StarFieldConfig, psf: PSF,
                     n_galaxies: int) -> dict:
    """Add PSF-convolved Sérsic galaxies to ``image`` in place; return their catalogue columns."""
    height, width = image.shape
    kernel, psf_radius = psf.kernel()
    gal = {
        "x": rng.uniform(-0.5, width - 0.5, n_galaxies),
        "y": rng.uniform(-0.5, height - 0.5, n_galaxies),
        "flux": np.exp(rng.uniform(*np.log(config.galaxy_flux), n_galaxies)),
        "sersic_n": rng.uniform(0.5, 4.0, n_galaxies),
        "r_eff": rng.uniform(2.0, 10.0, n_galaxies),
        "ellip": rng.uniform(0.0, 0.7, n_galaxies),
        "theta": rng.uniform(0.0, math.pi, n_galaxies),
    }
    for x, y, flux, n, r_eff, ellip, theta in zip(*(gal[k] for k in ("x", "y", "flux", "sersic_n", "r_eff",
                                                                      "ellip", "theta"))):
        radius = int(math.ceil(min(5.0 * r_eff, _MAX_GALAXY_RADIUS))) + psf_radius
        ix, iy, gx, gy = subpixel_grid(x, y, radius)
        cutout = bin_subpixels(Sersic2D.evaluate(gx, gy, 1.0, r_eff, n, x, y, ellip, theta))
        cutout = convolve_fft(cutout, kernel, normalize_kernel=True)
        _add_cutout(image, cutout * (flux / cutout.sum()), ix, iy)
    return gal


def simulate_star_field(
    config: StarFieldConfig = StarFieldConfig(), seed: int | None = None
) -> tuple[np.ndarray, Table]:
    """Noise-free field in electrons (float32, (H, W)) and a truth catalogue (x, y, flux, kind='star'|'galaxy', fwhm).

    Stars follow one PSF per field (:class:`astrotf.data.psf.PSF`: Moffat or Gaussian, round or
    elliptical); galaxies are Sérsic profiles (`astropy.modeling.models.Sersic2D`, index 0.5–4,
    effective radius 2–10 px, ellipticity 0–0.7, random angle) convolved with the same PSF. Each
    source is rendered, integrated over pixels (3×3 sub-pixels), only on a cutout around it and
    scaled so that the cutout sums to the catalogue flux; a source near the field edge loses the
    part of its cutout outside the field. Star cutouts end where the profile falls below 0.01
    electron/px. The settings added after the first version (β range, Gaussian PSFs, ellipticity)
    draw from a child generator (``rng.spawn``), so a config that leaves them at their defaults gives
    the fields it always gave for a seed.

    Parameters
    ----------
    config : StarFieldConfig
        Distributions to draw the field from.
    seed : int or None
        Seed of `numpy.random.default_rng`; the same seed and config give the same field.

    Returns
    -------
    image : numpy.ndarray
        Float32 array of shape ``config.shape``, electrons per pixel, sky included, clipped at
        ``config.saturation`` if set.
    catalogue : astropy.table.Table
        One row per source: ``x`` (column) and ``y`` (row) of the centre in 0-based pixel coordinates
        (pixel centres at integers), ``flux`` (electrons), ``kind`` (``'star'`` or ``'galaxy'``),
        ``fwhm`` (PSF FWHM in px), and for galaxies ``r_eff`` (px), ``sersic_n``, ``ellip`` and
        ``theta`` (radians), NaN for stars; with ``config.saturation`` set, ``saturated`` (the
        source's pixel reaches it). ``meta`` holds the field's ``seed``, ``fwhm``, ``moffat_beta``,
        ``psf_kind``, ``psf_ellipticity``, ``psf_angle``, ``sky``, ``sky_gradient`` and ``saturation``.

    References
    ----------
    Vojtekova et al. 2020, "Learning to denoise astronomical images with U-nets", MNRAS 503, 3204, §2.
    """
    rng = np.random.default_rng(seed)
    extra = rng.spawn(1)[0]  # leaves rng's own stream as it was
    height, width = config.shape
    psf = _draw_psf(config, rng, extra)
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
        ix, iy, gx, gy = subpixel_grid(x, y, psf.star_radius(flux))
        cutout = bin_subpixels(psf.evaluate(gx, gy, x, y))
        _add_cutout(image, cutout * (flux / cutout.sum()), ix, iy)
    gal = _render_galaxies(image, rng, config, psf, n_galaxies)

    nan_stars = np.full(n_stars, np.nan)
    columns = {"x": np.concatenate([star_x, gal["x"]]), "y": np.concatenate([star_y, gal["y"]]),
               "flux": np.concatenate([star_flux, gal["flux"]]),
               "kind": np.array(["star"] * n_stars + ["galaxy"] * n_galaxies, dtype="<U6"),
               "fwhm": np.full(n_stars + n_galaxies, psf.fwhm)}
    columns.update({k: np.concatenate([nan_stars, gal[k]]) for k in ("r_eff", "sersic_n", "ellip", "theta")})
    if config.saturation is not None:
        iy = np.clip(np.round(columns["y"]).astype(int), 0, height - 1)
        ix = np.clip(np.round(columns["x"]).astype(int), 0, width - 1)
        columns["saturated"] = image[iy, ix] >= config.saturation
        image = np.minimum(image, config.saturation)
    meta = {"seed": seed, "fwhm": psf.fwhm, "moffat_beta": psf.beta, "psf_kind": psf.kind,
            "psf_ellipticity": psf.ellipticity, "psf_angle": psf.angle, "sky": sky,
            "sky_gradient": config.sky_gradient, "saturation": config.saturation}
    return image.astype(np.float32), Table(columns, meta=meta)
