"""The Python entry point: denoise NumPy arrays and astropy ``NDData`` / ``CCDData`` in one call.

>>> import astrotf
>>> clean = astrotf.denoise(image)                       # doctest: +SKIP
>>> denoiser = astrotf.Denoiser("resunet-mono", strength=0.8)
>>> frames = [denoiser(f) for f in frames]               # doctest: +SKIP

The same steps as ``astrotf infer``: the model for the data (or the one named), overlapping
feathered tiles, then the strength blend, the soft restore and the restore. A result has the type
and shape it was given:

* a NumPy array (H, W) or (H, W, C), C = 1 or 3, comes back as float32 of the same shape;
* an ``NDData`` or ``CCDData`` comes back as the same class: its mask becomes NaN going in and is
  kept coming out, WCS, unit and meta are carried over (meta gains ``HISTORY`` lines). The result
  has no uncertainty, because a denoiser's output has none that could be given honestly; the
  input's is dropped with a warning unless a noise-conditioned model used it (below).

A noise-conditioned model gets the frame's noise σ map as ``astrotf infer`` makes it
(:mod:`astrotf.noise_map`): the ``NDData``'s own uncertainty (``StdDevUncertainty``,
``VarianceUncertainty`` or ``InverseVariance``) unless ``use_uncertainty=False``, ``gain=`` or
``read_noise=`` is given; else a noise model from ``gain=`` (e⁻/ADU) and ``read_noise=`` (e⁻), else
the ``meta`` (``GAIN``, ``RDNOISE``, ``EXPTIME``; its unit as ``BUNIT``), else a fit of the frame.
A σ map the frame contradicts raises unless ``trust_noise_model=True``.

Arrays carry no file format, so the data domain is guessed from the values and the unit (see
:func:`array_domain`); pass ``domain=`` to say it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import warnings

import numpy as np

from astrotf.batch import InferOptions, denoise_frame
from astrotf.constants import MAGNETOGRAM_UNITS
from astrotf.errors import AstroTFError
from astrotf.infer import looks_stretched
from astrotf.io import Uncertainty
from astrotf.noise_map import NoiseOptions
from astrotf.restore import RestoreOptions

log = logging.getLogger(__name__)

DOMAINS = ("stretched", "linear", "magnetogram")


def array_domain(data: np.ndarray, unit=None) -> str:
    """The data domain of an array: ``"magnetogram"`` for a magnetic-field unit (Gauss, Mx/cm²),
    ``"stretched"`` for values in [0, 1] with a bright median (> 0.05, display data), else ``"linear"``."""
    if unit is not None and str(unit).strip().lower() in MAGNETOGRAM_UNITS:
        return "magnetogram"
    return "stretched" if looks_stretched(data) else "linear"


def _as_frame(data) -> np.ndarray:
    array = np.asarray(data, dtype=np.float32)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3) or 0 in array.shape:
        msg = f"expected an image shaped (H, W) or (H, W, C) with C = 1 or 3. Received: shape={np.shape(data)}"
        raise AstroTFError(msg)
    return np.ascontiguousarray(array)


class Denoiser:
    """One loaded model for many calls, with the options of ``astrotf infer``.

    Parameters
    ----------
    model : str, optional
        Shipped model name, model folder, run directory or ``.keras`` file; None: the shipped
        model for each input's data domain.
    domain : {"stretched", "linear", "magnetogram"}, optional
        The data domain of the inputs; None: :func:`array_domain`.
    strength : float, optional
        Output = strength · denoised + (1 − strength) · input, in [0, 1]; None: the model's default
        (1, or the calibrated value its ``metadata.json`` names).
    restore, restore_sigma : float, optional
        TDR restore: no pixel moves by more than R (data units), or R = K × the input's noise level.
    restore_mode : {"input", "clip"}
    soft_restore : bool, optional
        None: on for one-image (Self2Self, Neighbor2Neighbor) and noise-conditioned models.
    gain, read_noise : float, optional
        Noise-conditioned models: the gain in e⁻/ADU and the read noise in e⁻, instead of those of
        the ``NDData``'s meta or a fit of the frame (a finite number > 0; refused for other models).
    trust_noise_model : bool
        Noise-conditioned models: use a noise model (or an uncertainty) that the frame's own noise
        contradicts.
    use_uncertainty : bool
        Noise-conditioned models: take an ``NDData``'s uncertainty as the σ map when it has one.
    sky_level : bool
        Noise-conditioned models: give the output the input's sky level on large scales
        (:func:`astrotf.sky_level.keep_sky_level`).
    **options
        Any other field of :class:`astrotf.batch.InferOptions` (``overlap``, ``tile``,
        ``batch_size``, ``backend``, ``precision``, ``samples``, ``seed``, ``average``).
    """

    def __init__(self, model: str | None = None, *, domain: str | None = None, strength: float | None = None,
                 restore: float | None = None, restore_sigma: float | None = None, restore_mode: str = "input",
                 soft_restore: bool | None = None, gain: float | None = None, read_noise: float | None = None,
                 trust_noise_model: bool = False, sky_level: bool = True, use_uncertainty: bool = True, **options):
        if domain is not None and domain not in DOMAINS:
            msg = f"`domain` must be one of {DOMAINS}. Received: domain={domain!r}"
            raise AstroTFError(msg)
        known = {f.name for f in dataclasses.fields(InferOptions)} - {"model", "restore", "noise"}
        unknown = sorted(set(options) - known)
        if unknown:
            msg = f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            raise AstroTFError(msg)
        after = RestoreOptions(threshold=restore, sigmas=restore_sigma, mode=restore_mode, soft=soft_restore,
                               strength=strength, sky_level=sky_level)
        noise = NoiseOptions(gain=gain, read_noise=read_noise, trust=trust_noise_model, uncertainty=use_uncertainty)
        self.options = InferOptions(model=model, restore=after, noise=noise, **options)
        self.domain = domain
        self._models: dict = {}

    def __call__(self, data):
        """Denoise ``data`` (array, ``NDData`` or ``CCDData``); see the module docstring."""
        from astropy.nddata import NDData

        if isinstance(data, NDData):
            return self._nddata(data)
        array = _as_frame(data)
        return self._run(array, None).data.reshape(np.shape(data))

    def _run(self, frame: np.ndarray, unit, meta=None, uncertainty=None):
        """The :class:`astrotf.batch.Frame` of ``frame``; its restore and report lines are logged."""
        domain = self.domain or array_domain(frame, unit)
        result = denoise_frame(frame, self.options, domain=domain, models=self._models, header=_header(meta, unit),
                               uncertainty=uncertainty)
        for line in result.lines:
            (log.warning if line.startswith("Warning: ") else log.info)("%s", line.removeprefix("Warning: "))
        return result

    def _nddata(self, nd):
        data = np.asarray(nd.data, dtype=np.float32)
        mask = None if nd.mask is None else np.asarray(nd.mask, dtype=bool)
        if mask is not None and mask.shape != data.shape:
            msg = f"the NDData mask is shaped {mask.shape} but its data {data.shape}"
            raise AstroTFError(msg)
        frame = _as_frame(np.where(mask, np.nan, data) if mask is not None else data)
        done = self._run(frame, nd.unit, nd.meta, _uncertainty(nd, frame.shape))
        if nd.uncertainty is not None and (done.noise is None or done.noise.uncertainty is None):
            warnings.warn("the uncertainty is dropped: a denoised image has no per-pixel uncertainty to "
                          "propagate honestly", UserWarning, stacklevel=3)
        result = done.data.reshape(data.shape)
        if mask is not None:
            result = np.where(mask, data, result).astype(np.float32)  # masked pixels come back as they were
        meta = copy.deepcopy(dict(nd.meta)) if nd.meta is not None else {}
        meta.setdefault("HISTORY", [])
        meta["HISTORY"] = [*list(np.atleast_1d(meta["HISTORY"])), *done.history]
        kwargs = {"mask": None if mask is None else mask.copy(), "wcs": nd.wcs, "meta": meta, "unit": nd.unit}
        return type(nd)(result, **kwargs)


def _uncertainty(nd, shape: tuple) -> Uncertainty | None:
    """An ``NDData``'s uncertainty as an :class:`astrotf.io.Uncertainty` laid out like its frame; None
    without one, or for a kind that is not a standard deviation, a variance or an inverse variance."""
    kinds = {"std": "sigma", "var": "variance", "ivar": "inverse variance"}
    kind = kinds.get(getattr(nd.uncertainty, "uncertainty_type", None))
    if kind is None:
        return None
    values = np.asarray(nd.uncertainty.array, dtype=np.float32)
    try:
        values = np.broadcast_to(values, np.shape(nd.data))
    except ValueError:
        msg = f"the NDData uncertainty is shaped {values.shape} but its data {np.shape(nd.data)}"
        raise AstroTFError(msg) from None
    return Uncertainty(values.reshape(shape), kind, f"NDData {type(nd.uncertainty).__name__}")


def _header(meta, unit) -> dict | None:
    """The keywords of an ``NDData``'s meta (upper case; ``HISTORY`` and ``COMMENT`` left out), with its
    unit as ``BUNIT`` unless the meta has one: what the noise model of the frame is read from."""
    if meta is None and unit is None:
        return None
    header = {str(k).upper(): v for k, v in (meta or {}).items() if str(k).upper() not in ("HISTORY", "COMMENT")}
    if unit is not None:
        header.setdefault("BUNIT", unit.to_string())
    return header


def denoise(data, model: str | None = None, **options):
    """Denoise an array, ``NDData`` or ``CCDData`` with the model for its data (or ``model``).

    A shortcut for ``Denoiser(model, **options)(data)``; to denoise many frames, keep one
    :class:`Denoiser`, which loads its model once.
    """
    return Denoiser(model, **options)(data)
