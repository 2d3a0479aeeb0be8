"""Point-spread functions of the simulated fields: Moffat or Gaussian, round or mildly elliptical.

Profiles are integrated over pixels on a 3×3 sub-pixel grid (:func:`subpixel_grid`, :func:`bin_subpixels`),
so an undersampled core (FWHM down to ~1.5 px) keeps its flux in the right pixels. NumPy and astropy
only, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from astropy.modeling.models import Moffat2D

OVERSAMPLE = 3  # sub-pixels per pixel side: sources are integrated over pixels, not point-sampled
WING_LEVEL = 0.01  # electrons/px where a star's cutout is truncated
MAX_STAR_RADIUS = 64  # px
KINDS = ("moffat", "gaussian")
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def subpixel_grid(x: float, y: float, radius: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Oversampled coordinates of the ``(2 * radius + 1)`` × ``(2 * radius + 1)`` pixel cutout centred on
    the pixel holding (x, y)."""
    ix, iy = int(round(x)), int(round(y))
    offsets = (np.arange(OVERSAMPLE) + 0.5) / OVERSAMPLE - 0.5
    fine = (np.arange(-radius, radius + 1)[:, None] + offsets[None, :]).ravel()
    return ix, iy, (ix + fine)[None, :], (iy + fine)[:, None]


def bin_subpixels(fine: np.ndarray) -> np.ndarray:
    """Average ``OVERSAMPLE`` × ``OVERSAMPLE`` sub-pixels into pixels."""
    n = fine.shape[0] // OVERSAMPLE
    return fine.reshape(n, OVERSAMPLE, n, OVERSAMPLE).mean(axis=(1, 3))


@dataclasses.dataclass(frozen=True)
class PSF:
    """One field's PSF.

    Parameters
    ----------
    kind : {"moffat", "gaussian"}
        Profile: Moffat ``(1 + r²/γ²)**-β`` or Gaussian.
    fwhm : float
        Full width at half maximum in px (geometric mean of the axes when elliptical).
    beta : float
        Moffat index (> 1); ignored for a Gaussian.
    ellipticity : float
        ``1 - b/a`` in [0, 1); the axes are ``fwhm / sqrt(1 - e)`` and ``fwhm * sqrt(1 - e)``.
    angle : float
        Position angle of the major axis, radians from the x axis.
    """

    kind: str
    fwhm: float
    beta: float = 3.0
    ellipticity: float = 0.0
    angle: float = 0.0

    @property
    def gamma(self) -> float:
        """Moffat core radius γ of this FWHM and β."""
        return self.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    @property
    def round(self) -> bool:
        return self.ellipticity == 0.0

    def evaluate(self, gx: np.ndarray, gy: np.ndarray, x: float, y: float) -> np.ndarray:
        """Unnormalised profile centred on (x, y) at the broadcast coordinates ``gx``, ``gy``."""
        if self.kind == "moffat" and self.round:  # astropy's model: the fields made before ellipticity existed
            return Moffat2D.evaluate(gx, gy, 1.0, x, y, self.gamma, self.beta)
        dx, dy = gx - x, gy - y
        cos, sin, squash = math.cos(self.angle), math.sin(self.angle), 1.0 - self.ellipticity
        r2 = (dx * cos + dy * sin) ** 2 * squash + (dy * cos - dx * sin) ** 2 / squash
        if self.kind == "gaussian":
            return np.exp(-0.5 * r2 / (self.fwhm * _FWHM_TO_SIGMA) ** 2)
        return (1.0 + r2 / self.gamma**2) ** -self.beta

    def star_radius(self, flux: float) -> int:
        """Half-size of a star's cutout: where the profile falls below :data:`WING_LEVEL`, at least 2 FWHM."""
        if self.kind == "moffat":
            gamma, beta = self.gamma, self.beta
            peak = flux * (beta - 1.0) / (math.pi * gamma**2)
            radius = gamma * math.sqrt(max((peak / WING_LEVEL) ** (1.0 / beta) - 1.0, 0.0))
        else:
            sigma = self.fwhm * _FWHM_TO_SIGMA
            peak = flux / (2.0 * math.pi * sigma**2)
            radius = sigma * math.sqrt(2.0 * math.log(max(peak / WING_LEVEL, 1.0)))
        if not self.round:
            radius /= math.sqrt(1.0 - self.ellipticity)  # along the major axis
        return int(math.ceil(min(max(radius, 2.0 * self.fwhm), MAX_STAR_RADIUS)))

    def kernel(self) -> tuple[np.ndarray, int]:
        """Pixel-integrated kernel out to 3 FWHM (along the major axis) and its radius in px."""
        radius = int(math.ceil(3.0 * self.fwhm / math.sqrt(1.0 - self.ellipticity)))
        _, _, kx, ky = subpixel_grid(0.0, 0.0, radius)
        return bin_subpixels(self.evaluate(kx, ky, 0.0, 0.0)), radius
