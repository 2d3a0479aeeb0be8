"""Per-pixel noise of a linear CCD/CMOS frame: a gain and read-noise model and its σ map.

Noise-conditioned models take this σ map beside the image (FFDNet-style; a per-pixel form of
Astro U-net's exposure-ratio input, Vojtekova et al. 2020 §3.3.3). NumPy only, no TensorFlow.

**The model.** A pixel of value ``x`` (data units) holds ``e = (x - offset) * k`` detected
electrons, where ``k`` is the number of electrons per data unit (:attr:`NoiseModel.electrons_per_unit`).
Its variance in electrons is Poisson plus read noise, ``max(e, 0) + read_noise**2``, so in data
units::

    sigma**2 = max(x - offset, 0) / k + (read_noise / k)**2

with ``k`` from the unit of the data (FITS ``BUNIT``):

=============================  =====================  ==========================================
``unit``                       ``BUNIT`` examples     ``k`` (electrons per data unit)
=============================  =====================  ==========================================
``"adu"``                      ADU, DN, COUNTS        ``gain``
``"electron"``                 ELECTRONS, e-          1
``"adu/s"``                    ADU/S, COUNTS/S, DN/S  ``gain * exptime``
``"electron/s"``               ELECTRONS/S, e-/s      ``exptime``
=============================  =====================  ==========================================

``gain`` in e⁻/ADU, ``read_noise`` in e⁻ rms, ``exptime`` in s. ``offset`` is the data value of zero
charge: 0 for a bias-subtracted frame with its sky, the pedestal (> 0) of a raw frame, minus the sky
(< 0) of a sky-subtracted one, where ``sigma**2 = (max(signal, 0) + sky) / gain + (read_noise / gain)**2``.
Dark current counts as sky. A sum or average of frames has an effective gain and read noise (fit them).

**Where the numbers come from** (:func:`resolve_noise_model`): overrides (``--gain``, ``--read-noise``),
then the header (:data:`GAIN_KEYS`, :data:`READ_NOISE_KEYS`, :data:`EXPTIME_KEYS`, ``BUNIT``; values
outside :data:`PLAUSIBLE_GAIN` / :data:`PLAUSIBLE_READ_NOISE` dropped with a logged line), then a fit
of the frame for the rest (:meth:`NoiseModel.fit_from_frame`: ``var = a * signal + b`` over faint
cells gives ``k = 1 / a`` and the read noise from ``b``). A fitted gain is in the frame's own units
(electrons per data unit), which covers rates and drizzled frames (correlated noise: an effective gain).

References
----------
.. [1] K. Zhang, W. Zuo, L. Zhang, "FFDNet: Toward a fast and flexible solution for CNN based image
   denoising", IEEE TIP 27 (2018): a noise-level map as a second input.
.. [2] J. R. Janesick, "Photon Transfer" (SPIE, 2007): variance against signal gives the gain.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from astrotf.constants import MAD_TO_SIGMA
from astrotf.errors import AstroTFError
from astrotf.metrics.noise import block_statistics

log = logging.getLogger(__name__)

#: Header keywords read for the gain (e⁻/ADU), the read noise (e⁻) and the exposure time (s), first found wins.
GAIN_KEYS = ("GAIN", "EGAIN", "CCDGAIN", "ATODGAIN")
READ_NOISE_KEYS = ("RDNOISE", "READNOIS", "RON", "READNSE", "READNSEA")
EXPTIME_KEYS = ("EXPTIME", "EXPOSURE")

#: Header values outside these ranges are taken for wrong and fitted instead (gain e⁻/ADU, read noise e⁻).
PLAUSIBLE_GAIN = (0.01, 100.0)
PLAUSIBLE_READ_NOISE = (0.05, 100.0)

UNITS = ("adu", "electron", "adu/s", "electron/s")
_BUNIT_ALIASES = {
    "adu": ("adu", "dn", "count", "counts", "adus"),
    "electron": ("electron", "electrons", "e", "e-"),
    "adu/s": ("adu/s", "dn/s", "count/s", "counts/s", "adu/sec", "counts/sec"),
    "electron/s": ("electron/s", "electrons/s", "e/s", "e-/s", "electron/sec", "electrons/sec"),
}


def _positive(name: str, value, *, allow_zero: bool = False) -> float:
    """``value`` as a float, or AstroTFError naming ``name`` if it is not a finite number > 0 (>= 0)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        msg = f"`{name}` must be a finite number {bound}. Received: {name}={value!r}"
        raise AstroTFError(msg)
    return number


def check_override(option: str, value) -> float:
    """Validate a ``--gain`` / ``--read-noise`` override: a finite number > 0, else a one-line error.

    ``option`` is ``"gain"`` or ``"read_noise"``; the message names the CLI option and the keyword.

    Raises
    ------
    astrotf.errors.AstroTFError
        ``--gain must be a finite number > 0 (e-/ADU). Received: gain=-1.0``.
    """
    unit = "e-/ADU" if option == "gain" else "e-"
    flag = "--" + option.replace("_", "-")
    try:
        return _positive(option, value)
    except AstroTFError:
        msg = f"{flag} must be a finite number > 0 ({unit}). Received: {option}={value!r}"
        raise AstroTFError(msg) from None


def normalise_unit(bunit: str | None) -> str | None:
    """Map a FITS ``BUNIT`` to one of :data:`UNITS`; None for a unit that is not a count or a rate."""
    if bunit is None:
        return None
    text = str(bunit).strip().lower().replace(" ", "").replace("per", "/").replace("sec-1", "/s")
    text = text.replace("s-1", "/s").replace("//", "/").replace("*", "")
    for unit, aliases in _BUNIT_ALIASES.items():
        if text in aliases:
            return unit
    return None


@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """Gain and read-noise model of a linear frame; :meth:`sigma_map` gives its per-pixel σ.

    Parameters
    ----------
    gain : float
        Electrons per ADU (> 0). Not used for data in electrons.
    read_noise : float
        Read noise in electrons rms (>= 0).
    unit : {"adu", "electron", "adu/s", "electron/s"}
        Unit of the data the model describes (see the module docstring for ``k``).
    exptime : float
        Exposure time in seconds (> 0); used for the rate units only.
    offset : float
        Data value of zero detected charge (bias pedestal > 0; minus the subtracted sky < 0).
    gain_from, read_noise_from : str
        Where each number came from (``"header GAIN"``, ``"--gain"``, ``"fit"`` ...), for the HISTORY.
    notes : tuple of str
        Further lines for the HISTORY (fit diagnostics, fallbacks).

    Raises
    ------
    astrotf.errors.AstroTFError
        A field out of range, named with its value.
    """

    gain: float
    read_noise: float
    unit: str = "adu"
    exptime: float = 1.0
    offset: float = 0.0
    gain_from: str = "given"
    read_noise_from: str = "given"
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "gain", _positive("gain", self.gain))
        object.__setattr__(self, "read_noise", _positive("read_noise", self.read_noise, allow_zero=True))
        object.__setattr__(self, "exptime", _positive("exptime", self.exptime))
        if self.unit not in UNITS:
            msg = f"`unit` must be one of {UNITS}. Received: unit={self.unit!r}"
            raise AstroTFError(msg)
        if not (isinstance(self.offset, (int, float, np.floating, np.integer)) and math.isfinite(self.offset)):
            msg = f"`offset` must be a finite number. Received: offset={self.offset!r}"
            raise AstroTFError(msg)
        object.__setattr__(self, "offset", float(self.offset))
        object.__setattr__(self, "notes", tuple(self.notes))

    @classmethod
    def from_header(cls, header, *, gain: float | None = None, read_noise: float | None = None) -> NoiseModel:
        """The model a FITS header gives (see :func:`read_header`), overrides applied.

        Raises
        ------
        astrotf.errors.AstroTFError
            The header and overrides do not give both a gain (unless the data are in electrons) and a
            plausible read noise; :func:`resolve_noise_model` then fits what is missing.
        """
        info, model = _from_header(cls, header, gain, read_noise)
        if model is None:
            missing = " and ".join(name for name in ("gain", "read_noise") if info[name] is None)
            msg = f"the header gives no usable {missing} (keys {GAIN_KEYS + READ_NOISE_KEYS})"
            raise AstroTFError(msg)
        return model

    @classmethod
    def fit_from_frame(cls, data: np.ndarray, *, gain: float | None = None, read_noise: float | None = None,
                       unit: str = "adu", exptime: float = 1.0, block: int = 8, min_cells: int = 64,
                       max_slope_error: float = 0.05) -> NoiseModel:
        """Fit ``var = a * signal + b`` over faint cells of the frame (a photon-transfer fit).

        Parameters
        ----------
        data : numpy.ndarray, shape (H, W) or (H, W, 1)
            Linear frame; NaN pixels are skipped with their cells.
        gain, read_noise : float, optional
            Known values (e⁻/ADU, e⁻): a known gain fixes the slope ``a = 1 / k``; a known read noise
            turns the intercept into the ``offset``.
        unit, exptime : str, float
            Unit of the data and exposure time, for ``k`` when the gain is known (or the unit is electrons).
        block : int
            Side of the cells (:func:`astrotf.metrics.noise.block_statistics`).
        min_cells : int
            Fewest usable cells to fit.
        max_slope_error : float
            Largest relative standard error of the fitted slope that still gives a gain.

        Returns
        -------
        NoiseModel
            With an unknown gain: in the frame's own units (``unit="adu"``, ``gain`` = fitted electrons
            per data unit). Without a known read noise the offset is taken as 0 and
            ``read_noise = k * sqrt(b)``; a negative ``b`` (a pedestal) gives read noise 0 and
            ``offset = -b * k``, with a logged warning.

        Raises
        ------
        astrotf.errors.AstroTFError
            Fewer than ``min_cells`` usable cells (no background to fit); the slope is not measurable
            when the gain is unknown (a flat frame: give the gain).
        """
        return _fit(cls, data, gain, read_noise, unit, exptime, block, min_cells, max_slope_error)

    @property
    def electrons_per_unit(self) -> float:
        """``k``: electrons per data unit (gain, 1, gain * exptime or exptime by :attr:`unit`)."""
        k = self.gain if self.unit.startswith("adu") else 1.0
        return k * self.exptime if self.unit.endswith("/s") else k

    def variance_map(self, data: np.ndarray) -> np.ndarray:
        """``max(x - offset, 0) / k + (read_noise / k)**2`` in data units squared; float64, NaN stays NaN."""
        k = self.electrons_per_unit
        x = np.asarray(data, dtype=np.float64)
        return np.maximum(x - self.offset, 0.0) / k + (self.read_noise / k) ** 2

    def sigma_map(self, data: np.ndarray) -> np.ndarray:
        """Per-pixel noise σ of ``data`` in its units.

        Parameters
        ----------
        data : numpy.ndarray
            Linear frame of any shape in the model's :attr:`unit`. Evaluated on the noisy data itself
            (the best estimate of the signal there is); non-finite pixels give NaN.

        Returns
        -------
        numpy.ndarray
            Same shape; float32 unless ``data`` is float64.
        """
        dtype = np.float64 if np.asarray(data).dtype == np.float64 else np.float32
        return np.sqrt(self.variance_map(data)).astype(dtype)

    def history_cards(self) -> list[str]:
        """HISTORY lines recording the model and its origin, whole (:mod:`astrotf.noise_map` wraps them)."""
        return [
            "noise model: sigma^2 = max(x - offset, 0)/k + (read_noise/k)^2",
            f"noise model: gain {self.gain:.4g} e-/ADU ({self.gain_from})",
            f"noise model: read noise {self.read_noise:.4g} e- ({self.read_noise_from})",
            f"noise model: unit {self.unit}, exptime {self.exptime:.6g} s, k {self.electrons_per_unit:.6g} e-/unit",
            f"noise model: offset {self.offset:.6g} data units",
            *(f"noise model: {note}" for note in self.notes),
        ]


def _header_number(header, keys: tuple[str, ...]) -> tuple[float | None, str | None]:
    """First of ``keys`` in ``header`` whose value is a finite number: (value, key); (None, key) if unreadable."""
    for key in keys:
        if key in header:
            value = header[key]
            try:
                number = float(value)
            except (TypeError, ValueError):
                log.warning("header %s=%r is not a number; ignored", key, value)
                return None, key
            return (number if math.isfinite(number) else None), key
    return None, None


def _plausible(header, keys: tuple[str, ...], bounds: tuple[float, float], what: str):
    """A header value within ``bounds`` as (value, 'header KEY'), or (None, None) with a logged fallback."""
    value, key = _header_number(header, keys)
    if key is None:
        return None, None
    if value is None or not bounds[0] <= value <= bounds[1]:
        log.warning("header %s=%r is not a plausible %s (%g to %g); estimated from the frame instead",
                    key, header[key], what, *bounds)
        return None, None
    return value, f"header {key}"


def read_header(header) -> dict:
    """What a FITS header says about the noise, checked for plausibility.

    Parameters
    ----------
    header : astropy.io.fits.Header or mapping
        Read for ``BUNIT``, :data:`GAIN_KEYS`, :data:`READ_NOISE_KEYS` and :data:`EXPTIME_KEYS`.

    Returns
    -------
    dict
        ``unit`` (:data:`UNITS`; ``"adu"`` without ``BUNIT``), ``exptime``, ``gain``, ``read_noise`` (None
        where absent or implausible, with a logged line) and ``*_from`` naming the keyword used.

    Raises
    ------
    astrotf.errors.AstroTFError
        ``BUNIT`` names a unit that is neither counts nor electrons (e.g. Gauss, Jy/beam): this noise
        model does not apply.
    """
    header = header if header is not None else {}
    bunit = header.get("BUNIT")
    unit = "adu" if bunit is None or not str(bunit).strip() else normalise_unit(bunit)
    if unit is None:
        msg = f"BUNIT={bunit!r} is neither counts nor electrons (or their rates): no Poisson noise model for it"
        raise AstroTFError(msg)
    gain, gain_from = _plausible(header, GAIN_KEYS, PLAUSIBLE_GAIN, "gain in e-/ADU")
    read_noise, read_noise_from = _plausible(header, READ_NOISE_KEYS, PLAUSIBLE_READ_NOISE, "read noise in e-")
    exptime, exptime_key = _header_number(header, EXPTIME_KEYS)
    if exptime is not None and exptime <= 0:
        log.warning("header %s=%r is not a positive exposure time; ignored", exptime_key, exptime)
        exptime = None
    return {"unit": unit, "bunit_given": bunit is not None, "exptime": exptime, "gain": gain,
            "gain_from": gain_from, "read_noise": read_noise, "read_noise_from": read_noise_from}


def _fit_line(signal: np.ndarray, variance: np.ndarray, slope: float | None):
    """Iteratively clipped, variance-weighted fit of ``variance = a * signal + b``.

    The spread of a cell's variance is proportional to the variance itself, so the weights are
    ``1 / model**2``; cells more than 4 robust σ from the line are dropped, five rounds.
    Returns ``(a, b, a_error, kept)``; ``a`` is ``slope`` when that is given (``a_error`` 0).
    """
    kept = np.ones(signal.size, bool)
    model = np.full(signal.size, np.median(variance))
    a, b, a_error = (slope if slope is not None else 0.0), float(np.median(variance)), 0.0
    for _ in range(5):
        w = 1.0 / np.maximum(model[kept], 1e-30) ** 2
        s, v = signal[kept], variance[kept]
        if slope is None:
            design = np.stack([s, np.ones_like(s)], axis=1) * np.sqrt(w)[:, None]
            (a, b), *_ = np.linalg.lstsq(design, v * np.sqrt(w), rcond=None)
        else:
            b = float(np.sum(w * (v - a * s)) / np.sum(w))
        model = np.maximum(a * signal + b, 1e-30)
        relative = variance / model - 1.0
        spread = MAD_TO_SIGMA * np.median(np.abs(relative[kept]))
        kept = np.abs(relative) <= 4.0 * max(spread, 1e-12)
    if slope is None:
        s, v, w = signal[kept], variance[kept], 1.0 / model[kept] ** 2
        residual = v - (a * s + b)
        design = np.stack([s, np.ones_like(s)], axis=1)
        cov = np.linalg.pinv(design.T @ (design * w[:, None])) * (np.sum(w * residual**2) / max(s.size - 2, 1))
        a_error = float(np.sqrt(max(cov[0, 0], 0.0)))
    return float(a), float(b), a_error, kept


def _fit(cls, data, gain, read_noise, unit, exptime, block, min_cells, max_slope_error):
    """Body of :meth:`NoiseModel.fit_from_frame` (see there)."""
    frame = np.asarray(data)
    frame = frame[..., 0] if frame.ndim == 3 and frame.shape[-1] == 1 else frame
    stats = block_statistics(frame, block)
    if stats.signal.size < min_cells:
        msg = (f"too few background pixels to fit a noise model: {stats.signal.size} usable {block}x{block} "
               f"cells of {np.shape(frame)} (need {min_cells}); give --gain and --read-noise")
        raise AstroTFError(msg)
    k_known = gain is not None or unit.startswith("electron")
    if k_known:
        k = cls(gain=gain or 1.0, read_noise=0.0, unit=unit, exptime=exptime).electrons_per_unit
    a, b, a_error, kept = _fit_line(stats.signal, stats.variance, 1.0 / k if k_known else None)
    lo, hi = np.percentile(stats.signal[kept], [1, 99])
    if not k_known and (a <= 0 or a_error > max_slope_error * a):
        msg = (f"cannot fit the gain: the noise variance does not rise measurably with the signal over "
               f"{lo:.4g} to {hi:.4g} data units (slope {a:.3g} +- {a_error:.2g}); give --gain")
        raise AstroTFError(msg)
    notes = [f"fit: {kept.sum()}/{kept.size} cells of {block}x{block} px, signal {lo:.4g} to {hi:.4g}",
             f"fit: var = {a:.5g} * x + {b:.5g}" + ("" if k_known else f" (slope +- {a_error:.2g})")]
    if not k_known:
        k, gain, unit, exptime, gain_from = 1.0 / a, 1.0 / a, "adu", 1.0, "fit, e- per data unit"
    else:
        gain_from = "given" if gain is not None else "not used (data in electrons)"
    if read_noise is not None:
        offset, read_noise_from = read_noise**2 / k - b * k, "given"
    elif b > 0:
        offset, read_noise, read_noise_from = 0.0, k * math.sqrt(b), "fit"
    else:
        offset, read_noise, read_noise_from = -b * k, 0.0, "fit: below precision, pedestal instead"
        log.warning("the fitted noise variance has no read-noise term (intercept %.4g): the frame has a pedestal "
                    "of about %.4g data units or a read noise below the fit's precision; read noise set to 0",
                    b, -b * k)
    return cls(gain=gain or 1.0, read_noise=read_noise, unit=unit, exptime=exptime, offset=offset,
               gain_from=gain_from, read_noise_from=read_noise_from, notes=tuple(notes))


def _from_header(cls, header, gain, read_noise) -> tuple[dict, NoiseModel | None]:
    """Header values merged with overrides, and the model when nothing is left to fit."""
    info = read_header(header)
    notes = [] if info["bunit_given"] else ["BUNIT absent: data taken as ADU"]
    if gain is not None:
        info["gain"], info["gain_from"] = check_override("gain", gain), "--gain"
    if read_noise is not None:
        info["read_noise"], info["read_noise_from"] = check_override("read_noise", read_noise), "--read-noise"
    if info["unit"].endswith("/s") and info["exptime"] is None:
        log.warning("BUNIT %r is a rate but the header has no usable EXPTIME; the noise is fitted in data units",
                    header.get("BUNIT"))
        info.update(unit="adu", gain=None, gain_from=None)
        notes.append("rate without EXPTIME: fitted in data units")
    info["notes"] = notes
    if info["read_noise"] is None or (info["gain"] is None and not info["unit"].startswith("electron")):
        return info, None
    model = cls(gain=info["gain"] or 1.0, read_noise=info["read_noise"], unit=info["unit"],
                exptime=info["exptime"] or 1.0, gain_from=info["gain_from"] or "not used (data in electrons)",
                read_noise_from=info["read_noise_from"], notes=tuple(notes))
    return info, model


def resolve_noise_model(data: np.ndarray, header=None, *, gain: float | None = None,
                        read_noise: float | None = None, block: int = 8) -> NoiseModel:
    """The noise model of a frame: overrides, then the header, then a fit of the frame for the rest.

    Parameters
    ----------
    data : numpy.ndarray, shape (H, W) or (H, W, 1)
        The linear frame, in the unit its header's ``BUNIT`` names (ADU if absent).
    header : astropy.io.fits.Header or mapping, optional
        Read by :func:`read_header`; implausible values are dropped with a logged line.
    gain, read_noise : float, optional
        Overrides (``--gain`` in e⁻/ADU, ``--read-noise`` in e⁻); must be finite and > 0.
    block : int
        Cell size of the fit.

    Returns
    -------
    NoiseModel
        Its ``gain_from`` / ``read_noise_from`` say where each number came from.

    Raises
    ------
    astrotf.errors.AstroTFError
        A bad override; a ``BUNIT`` that is not counts or electrons; a fit that is needed but
        impossible (too few background pixels, or a signal range too narrow to give the gain).
    """
    info, model = _from_header(NoiseModel, header, gain, read_noise)
    if model is not None:
        return model
    missing = [name for name in ("gain", "read_noise") if info[name] is None
               and not (name == "gain" and info["unit"].startswith("electron"))]
    log.info("noise model: %s not in the header or options; fitted from the frame", " and ".join(missing))
    fitted = NoiseModel.fit_from_frame(data, gain=info["gain"], read_noise=info["read_noise"], unit=info["unit"],
                                       exptime=info["exptime"] or 1.0, block=block)
    sources = {"gain_from": info["gain_from"] or fitted.gain_from,
               "read_noise_from": info["read_noise_from"] or fitted.read_noise_from}
    return dataclasses.replace(fitted, **sources, notes=tuple(info["notes"]) + fitted.notes)
