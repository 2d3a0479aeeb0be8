"""What every format module of :mod:`astrotf.io` shares: the error type, :class:`ImageInfo` and helpers.

Kept apart from ``astrotf/io/__init__.py`` so that the format modules can import it without a circular
import; :mod:`astrotf.io` re-exports the public names.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import numpy as np
from astropy.io import fits

from astrotf.errors import AstroTFError
from astrotf.quantise import to_integers

logger = logging.getLogger(__name__)


class ImageIOError(AstroTFError):
    """An image file cannot be read or written; the message is one line ``"<path>: <problem>"``."""


@dataclasses.dataclass
class ImageInfo:
    """What :func:`astrotf.io.read_image` learnt about a file: enough to write a result back in the same form.

    Attributes
    ----------
    path : pathlib.Path
        The file that was read.
    format : str
        ``"fits"``, ``"tiff"``, ``"png"``, ``"jpeg"`` or ``"xisf"``.
    dtype : numpy.dtype
        Sample dtype on disk (for FITS the BITPIX type, before BSCALE/BZERO).
    channels : int
        Colour channels in the returned array, 1 or 3; alpha excluded.
    layout : str
        How the colour axis sits on disk: ``"HW"`` (2-D), ``"HWC"`` (interleaved, XISF normal storage)
        or ``"CHW"`` (FITS cube, planar TIFF, XISF planar storage).
    scale : float
        Divisor that mapped integer samples to [0, 1] (255, 65535); 1.0 for float data and for all FITS.
    header : astropy.io.fits.Header or None
        Copy of the FITS header of the image HDU, as stored (before astropy applies BSCALE/BZERO); for
        XISF the image's ``FITSKeyword`` elements.
    hdu_index : int
        Index of the HDU that held the image.
    alpha : numpy.ndarray or None
        Alpha plane, shape (H, W), in its on-disk dtype.
    extra : dict
        Format details needed to write back: FITS ``bitpix``, ``bscale``, ``bzero``, ``blank``,
        ``lead_axes``, ``compression``, ``checksum``; TIFF ``photometric``, ``planarconfig``,
        ``compression``, ``extrasamples``, ``resolution``, ``resolutionunit``, ``iccprofile``; XISF
        ``color_space``, ``bounds``, ``pixel_storage``, ``attributes`` (the Image element's own) and
        ``elements`` (its Property and other child elements, data blocks as bytes).
    """

    path: pathlib.Path
    format: str
    dtype: np.dtype
    channels: int
    layout: str
    scale: float
    header: fits.Header | None = None
    hdu_index: int = 0
    alpha: np.ndarray | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def is_integer(self) -> bool:
        """Whether the samples on disk are integers (FITS: before BSCALE/BZERO)."""
        return bool(np.issubdtype(self.dtype, np.integer))

    @property
    def step(self) -> float | None:
        """Spacing of the values :func:`astrotf.io.read_image` returned, for integer samples: BSCALE
        (FITS) or ``1 / scale`` (8/16-bit); None for float samples."""
        if not self.is_integer:
            return None
        if self.format == "fits":
            return float(abs(self.extra.get("bscale", 1.0))) or None
        return 1.0 / self.scale

    @property
    def is_linear(self) -> bool:
        """Guess of the data domain: True for FITS and float TIFF or XISF (linear physical data), False
        for 8/16-bit display formats (stretched)."""
        return self.format == "fits" or (self.format in ("tiff", "xisf") and not self.is_integer)


#: What a per-pixel uncertainty can hold (:class:`Uncertainty`).
UNCERTAINTY_KINDS = ("sigma", "variance", "inverse variance")


@dataclasses.dataclass(frozen=True)
class Uncertainty:
    """A per-pixel uncertainty that came with an image: a FITS ``ERR`` / ``VAR`` / ``IVAR`` extension
    (:func:`astrotf.io.read_uncertainty`) or the ``uncertainty`` of an astropy ``NDData``.

    Attributes
    ----------
    values : numpy.ndarray, shape (H, W, C)
        As stored, laid out like the image.
    kind : {"sigma", "variance", "inverse variance"}
    source : str
        Where it came from, for messages and the HISTORY (``"ERR extension (HDU 2, EXTVER 1)"``).
    """

    values: np.ndarray
    kind: str
    source: str

    def __post_init__(self):
        if self.kind not in UNCERTAINTY_KINDS:
            msg = f"`kind` must be one of {UNCERTAINTY_KINDS}. Received: kind={self.kind!r}"
            raise AstroTFError(msg)

    def sigma(self) -> np.ndarray:
        """σ in the image's units, float32; NaN where the values give none (non-finite, a σ or variance
        <= 0, an inverse variance of 0: no data)."""
        values = np.asarray(self.values, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            sigma = {"sigma": values, "variance": np.sqrt(values), "inverse variance": 1.0 / np.sqrt(values)}[self.kind]
        return np.where(np.isfinite(sigma) & (sigma > 0), sigma, np.nan).astype(np.float32)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def alpha_for(info: ImageInfo, dtype: np.dtype) -> np.ndarray | None:
    """info.alpha if it can go into a file of sample ``dtype``, else None (with a warning)."""
    if info.alpha is not None and info.alpha.dtype != dtype:
        logger.warning("%s: alpha plane of dtype %s not written (output samples are %s)",
                       info.path, info.alpha.dtype, dtype)
        return None
    return info.alpha


def samples_for(data: np.ndarray, info: ImageInfo, dtype: np.dtype) -> np.ndarray:
    """(H, W, C) float ``data`` as samples of ``dtype`` (unsigned: clipped to [0, 1] and scaled by
    ``info.scale``, or the dtype's maximum for another source dtype), with ``info.alpha`` appended as a
    last channel when it has that dtype."""
    if dtype.kind == "u":
        scale = info.scale if dtype == info.dtype else float(np.iinfo(dtype).max)
        if dtype.itemsize < 4:
            pixels = to_integers(data, dtype, scale)
        else:  # float32 arithmetic (to_integers) rounds 1.0 * (2**32 - 1) to 2**32, which casts to 0
            pixels = np.rint(np.clip(np.nan_to_num(data.astype(np.float64), nan=0.0), 0.0, 1.0) * scale)
            pixels = pixels.astype(dtype)
    else:
        pixels = data.astype(dtype)
    alpha = alpha_for(info, dtype)
    return pixels if alpha is None else np.concatenate([pixels, alpha[..., None]], axis=-1)
