"""The broad training prior of the noise-conditioned linear models, and validation settings outside it.

:func:`training_prior` spans what issue #21 asks a science-grade model to know: PSF FWHM 1.5–6 px
(Moffat β 2–6 and Gaussian, mild ellipticity, undersampled cores), sky 10–5000 e⁻, read noise
1–15 e⁻, gains 0.3–5 e⁻/ADU, exposure ratios 1.5–10, sparse to dense fields, Sérsic galaxies,
saturated stars, cosmic rays and hot pixels. :func:`validation_priors` gives settings the training
draws never produce, one axis at a time, so a failure names what the model does not generalise to.
:func:`observe` makes the noisy short exposure from a noise-free field (Astro U-net §2.1, eqs. 1–4).
NumPy only, no TensorFlow.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from astrotf.config.data import DetectorNoiseConfig
from astrotf.data.simulate import StarFieldConfig, _check_range

_REFERENCE_AREA = 512 * 512  # px: the star and artefact counts below are per 512 x 512 field


@dataclasses.dataclass(frozen=True)
class DetectorPrior:
    """Ranges (uniform per exposure) of the detector and exposure settings.

    Parameters
    ----------
    gain : tuple of float
        e⁻/ADU.
    read_noise : tuple of float
        e⁻ rms.
    exposure_ratio : tuple of float
        ``r``: the noisy input is an ``r`` times shorter exposure than the truth (Astro U-net eq. 3).
    """

    gain: tuple[float, float] = DetectorNoiseConfig.gain  # the ranges the trainer draws ([data.detector])
    read_noise: tuple[float, float] = DetectorNoiseConfig.read_noise
    exposure_ratio: tuple[float, float] = DetectorNoiseConfig.exposure_ratio

    def __post_init__(self):
        _check_range("gain", self.gain, 0, inclusive=False)
        _check_range("read_noise", self.read_noise, 0)
        _check_range("exposure_ratio", self.exposure_ratio, 1)

    def draw(self, rng: np.random.Generator) -> dict:
        """One exposure's ``gain``, ``read_noise`` and ``exposure_ratio``."""
        return {name: float(rng.uniform(*getattr(self, name))) for name in ("gain", "read_noise", "exposure_ratio")}


@dataclasses.dataclass(frozen=True)
class Prior:
    """A field prior and a detector prior: everything one simulated training pair is drawn from."""

    field: StarFieldConfig
    detector: DetectorPrior


def _per_area(counts: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    area = shape[0] * shape[1] / _REFERENCE_AREA
    return (int(round(counts[0] * area)), max(int(round(counts[1] * area)), int(round(counts[0] * area))))


def training_prior(shape: tuple[int, int] = (256, 256)) -> Prior:
    """The broad prior of issue #21 for fields of ``shape`` (counts scale with the area)."""
    field = StarFieldConfig(
        shape=shape, n_stars=_per_area((10, 4000), shape), flux_range=(30.0, 3e6), flux_slope=1.5,
        fwhm=(1.5, 6.0), moffat_beta=(2.0, 6.0), gaussian_fraction=0.2, psf_ellipticity=(0.0, 0.15),
        n_galaxies=_per_area((0, 40), shape), galaxy_flux=(300.0, 2e5), sky=(10.0, 5000.0),
        sky_gradient=0.2, saturation=1e5, cosmic_rays=_per_area((0, 60), shape),
        hot_pixels=_per_area((0, 80), shape),
    )
    return Prior(field, DetectorPrior())


#: Per held-out axis: the StarFieldConfig or DetectorPrior field and a range the training never draws.
HELD_OUT = {
    "wide_psf": ("fwhm", (6.5, 9.0)),
    "shallow_wings": ("moffat_beta", (1.5, 1.9)),
    "elongated_psf": ("psf_ellipticity", (0.2, 0.3)),
    "bright_sky": ("sky", (6000.0, 20000.0)),
    "faint_sky": ("sky", (2.0, 8.0)),
    "high_read_noise": ("read_noise", (18.0, 30.0)),
    "long_ratio": ("exposure_ratio", (12.0, 20.0)),
    "low_gain": ("gain", (0.1, 0.25)),
    "crowded": ("n_stars", (6000, 8000)),
}


def validation_priors(shape: tuple[int, int] = (256, 256)) -> dict[str, Prior]:
    """One prior per :data:`HELD_OUT` axis: the training prior with that axis moved outside its range."""
    base = training_prior(shape)
    priors = {}
    for name, (field, values) in HELD_OUT.items():
        if field == "n_stars":
            values = _per_area(values, shape)
        if field in {f.name for f in dataclasses.fields(DetectorPrior)}:
            priors[name] = Prior(base.field, dataclasses.replace(base.detector, **{field: values}))
        else:
            priors[name] = Prior(dataclasses.replace(base.field, **{field: values}), base.detector)
    return priors


def observe(clean: np.ndarray, gain: float, read_noise: float, exposure_ratio: float,
            seed: int | None = None, artefacts: np.ndarray | None = None,
            saturation: float | None = None) -> np.ndarray:
    """The noisy short exposure of a noise-free field, in ADU.

    ``(Pois(clean / r) + artefacts + N(0, read_noise)) / gain``, clipped at ``saturation / gain``: the
    matching truth in the same units is ``clean / (r * gain)`` and the noise model is
    ``NoiseModel(gain, read_noise)`` (:mod:`astrotf.noise_model`).

    Parameters
    ----------
    clean : numpy.ndarray
        Noise-free field in electrons of the long exposure (>= 0, finite).
    gain, read_noise, exposure_ratio : float
        e⁻/ADU, e⁻ rms and ``r`` (see :class:`DetectorPrior`).
    seed : int or None
        Seed of `numpy.random.default_rng`.
    artefacts : numpy.ndarray, optional
        Electrons added to the short exposure (:func:`astrotf.data.artefacts.simulate_artefacts`).
    saturation : float, optional
        Full well in electrons.

    Returns
    -------
    numpy.ndarray
        Float32 ADU, the shape of ``clean``.
    """
    clean = np.asarray(clean, dtype=np.float64)
    if not np.all(np.isfinite(clean)) or clean.min() < 0:
        msg = "`clean` must be finite and >= 0 (electrons). Received: min={:.4g}".format(np.nanmin(clean))
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    electrons = rng.poisson(clean / exposure_ratio).astype(np.float64)
    if artefacts is not None:
        electrons += artefacts
    adu = (electrons + rng.normal(0.0, read_noise, clean.shape)) / gain
    return (adu if saturation is None else np.minimum(adu, saturation / gain)).astype(np.float32)


def aperture_labels(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Int32 label map of circular apertures: ``k`` (1-based, in the order given) within ``radius`` px of
    source ``k``, 0 elsewhere; where apertures overlap, the later source wins. For
    :func:`astrotf.losses.aperture_flux_error`."""
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for k, (cx, cy) in enumerate(zip(x, y), start=1):
        labels[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = k
    return labels
