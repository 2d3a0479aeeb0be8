"""Restore: put back every pixel the denoiser moved by more than a threshold (TDR, "Restoring").

After denoising, pixels whose change exceeds ``R`` are *abnormal*: they are set back
to their input values, so that no pixel of the output differs from the input by more
than ``R`` (data units). ``R`` may be given directly or as ``K`` times the noise level
of the input (:func:`astrotf.metrics.noise_level`). Works with any denoiser's output.
``mode="clip"`` is the variant the paper's Discussion recommends looking for ("restoring
to ... other reliable values"): an abnormal pixel moves to the value nearest the
denoiser's that is still within ``R`` of its input (``input ± R``), so the same bound
holds and the change that is allowed is kept.

:func:`astrotf.soft_restore.soft_restore` is the graded counterpart.

:func:`blend` is the strength control; :func:`restore_and_report` is what ``astrotf infer`` does
after the network (:class:`RestoreOptions`), and :func:`restore_on_grid` keeps the guarantee in
integer files. No TensorFlow import.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from astrotf.constants import MAGNETOGRAM_NOISE_RANGE_G
from astrotf.errors import AstroTFError
from astrotf.metrics import noise_level
from astrotf.soft_restore import soft_restore


@dataclasses.dataclass(frozen=True)
class Restored:
    """Result of :func:`restore`.

    Attributes
    ----------
    image : ndarray
        The restored image (dtype of the denoised input).
    restored : ndarray of bool
        True where a pixel was abnormal: set back to its input value (``mode="input"``) or
        moved to within ``R`` of it (``mode="clip"``).
    fraction : float
        Restored pixels / finite input pixels.
    threshold : float
        ``R`` in data units.
    mode : str
        ``"input"`` or ``"clip"``.
    """

    image: np.ndarray = dataclasses.field(repr=False)
    restored: np.ndarray = dataclasses.field(repr=False)
    fraction: float
    threshold: float
    mode: str = "input"


RESTORE_MODES = ("input", "clip")


def restore(denoised: np.ndarray, original: np.ndarray, threshold: float, mode: str = "input") -> Restored:
    """Restore every pixel with ``|denoised - original| > threshold``.

    Guarantee: ``|result - original| <= threshold`` for every finite pixel of
    ``original`` (differences are computed in float64). A denoised value that is not
    finite where the input is finite is set back to the input value in either mode;
    pixels that are not finite in the input are left as the denoiser returned them.

    Parameters
    ----------
    denoised, original : ndarray, same shape
    threshold : float
        ``R`` >= 0, in data units.
    mode : {"input", "clip"}
        ``"input"`` (the TDR paper): an abnormal pixel is set back to its input value.
        ``"clip"``: it becomes ``original ± threshold``, on the side of its denoised
        value, i.e. the change is clipped to ``[-R, R]``.

    Returns
    -------
    Restored

    Raises
    ------
    ValueError
        Negative or non-finite threshold, an unknown mode, or shapes that differ.
    """
    if not (np.isfinite(threshold) and threshold >= 0):
        msg = f"`threshold` must be a finite number >= 0. Received: threshold={threshold!r}"
        raise ValueError(msg)
    if mode not in RESTORE_MODES:
        msg = f"`mode` must be one of {RESTORE_MODES}. Received: mode={mode!r}"
        raise ValueError(msg)
    denoised = np.asarray(denoised)
    original = np.asarray(original)
    if denoised.shape != original.shape:
        msg = (f"`denoised` and `original` must have the same shape. "
               f"Received: denoised.shape={denoised.shape}, original.shape={original.shape}")
        raise ValueError(msg)
    finite = np.isfinite(original)
    original64 = original.astype(np.float64)
    change = denoised.astype(np.float64) - original64
    with np.errstate(invalid="ignore"):
        within = np.abs(change) <= threshold
    restored = finite & ~within
    if mode == "input":
        image = np.where(restored, original, denoised).astype(denoised.dtype, copy=False)
    else:
        clipped = original64 + np.clip(np.nan_to_num(change, nan=0.0, posinf=0.0, neginf=0.0), -threshold, threshold)
        image = np.where(restored, clipped, denoised).astype(denoised.dtype, copy=False)
    # rounding (input ± R, then the cast to the output dtype) may push a pixel past R: in clip mode
    # step it towards its input one representable value at a time; set back whatever is left
    for _ in range(4 if mode == "clip" else 0):
        with np.errstate(invalid="ignore"):
            pushed = finite & ~(np.abs(image.astype(np.float64) - original64) <= threshold)
        if not pushed.any():
            break
        image[pushed] = np.nextafter(image[pushed], original[pushed].astype(image.dtype))
    with np.errstate(invalid="ignore"):
        pushed = finite & ~(np.abs(image.astype(np.float64) - original64) <= threshold)
    if pushed.any():
        image[pushed] = original[pushed]
        restored |= pushed
    n_finite = int(finite.sum())
    fraction = float(restored.sum()) / n_finite if n_finite else 0.0
    return Restored(image=image, restored=restored, fraction=fraction, threshold=float(threshold), mode=mode)


def restore_threshold(original: np.ndarray, *, threshold: float | None = None, sigmas: float | None = None,
                      value_range: tuple[float, float] = MAGNETOGRAM_NOISE_RANGE_G) -> float:
    """``R`` from exactly one of ``threshold`` (data units) or ``sigmas`` × the noise level.

    The noise level is :func:`astrotf.metrics.noise_level` of ``original`` over
    ``value_range`` (the paper's Gaussian fit to the value histogram).

    Raises
    ------
    ValueError
        Neither or both given, or a negative value.
    """
    if (threshold is None) == (sigmas is None):
        msg = f"Give exactly one of `threshold` and `sigmas`. Received: threshold={threshold}, sigmas={sigmas}"
        raise ValueError(msg)
    if threshold is not None:
        if not threshold >= 0:
            msg = f"`threshold` must be >= 0. Received: threshold={threshold}"
            raise ValueError(msg)
        return float(threshold)
    if not sigmas >= 0:
        msg = f"`sigmas` must be >= 0. Received: sigmas={sigmas}"
        raise ValueError(msg)
    return float(sigmas) * noise_level(original, value_range).sigma


# ----------------------------------------------------------------------------- after inference
def blend(denoised: np.ndarray, data: np.ndarray, strength: float) -> np.ndarray:
    """``strength · denoised + (1 − strength) · data``: the strength control of desktop denoisers.

    ``denoised`` and ``data`` have the same shape; ``strength`` is in [0, 1]: 0 returns a float32
    copy of ``data`` exactly, 1 returns ``denoised`` itself.
    """
    if not 0.0 <= strength <= 1.0:
        msg = f"`strength` must be in [0, 1]. Received: strength={strength!r}"
        raise AstroTFError(msg)
    if strength == 1.0:
        return denoised
    if strength == 0.0:
        return np.array(data, dtype=np.float32, copy=True)
    out = np.subtract(denoised, data, dtype=np.float32)
    out *= np.float32(strength)
    out += data
    return out


@dataclasses.dataclass(frozen=True)
class RestoreOptions:
    """What ``astrotf infer`` does to a denoised frame before it is written.

    Parameters
    ----------
    threshold : float, optional
        ``R`` of :func:`restore` in data units (``--restore``).
    sigmas : float, optional
        ``R`` as this many times the input's noise level (``--restore-sigma``).
    mode : {"input", "clip"}
        :func:`restore`'s ``mode``.
    soft : bool, optional
        :func:`~astrotf.soft_restore.soft_restore` on or off; None: on for one-image and noise-conditioned models (then
        skipped with a line saying why when the input's noise level cannot be measured).
    soft_width : float
        :func:`~astrotf.soft_restore.soft_restore`'s window, px.
    report : bool
        Report noise levels and what the output kept of the input.
    noise_range : (float, float), optional
        Value range of the noise-level fit; default: [-20, 20] for magnetograms (the TDR
        paper's range, in G), else the input's sigma-clipped background ± 5 sigma.
    strength : float, optional
        :func:`blend` with the input, in [0, 1], before the restores (``--strength``); None: the
        model's default (:attr:`astrotf.backends.LoadedModel.default_strength`, 1 unless named).
    sky_level : bool
        :func:`astrotf.sky_level.keep_sky_level` on a noise-conditioned model's output, before the blend.

    Raises
    ------
    AstroTFError
        Both ``threshold`` and ``sigmas``, a ``mode`` other than "input" without either, or
        a ``noise_range`` whose low end is not below its high end (named as the CLI options).
    """

    threshold: float | None = None
    sigmas: float | None = None
    mode: str = "input"
    soft: bool | None = None
    soft_width: float = 1.0
    report: bool = False
    noise_range: tuple[float, float] | None = None
    strength: float | None = None
    sky_level: bool = True

    def __post_init__(self):
        if self.strength is not None and not 0.0 <= self.strength <= 1.0:
            raise AstroTFError(f"--strength must be in [0, 1]. Received: {self.strength}")
        if self.threshold is not None and self.sigmas is not None:
            raise AstroTFError("use either --restore or --restore-sigma, not both")
        if self.mode != "input" and not self.restores:
            raise AstroTFError(f"--restore-mode {self.mode} needs --restore R or --restore-sigma K")
        if self.noise_range is not None and not self.noise_range[0] < self.noise_range[1]:
            raise AstroTFError(f"--noise-range: LOW must be below HIGH. "
                               f"Received: {self.noise_range[0]} {self.noise_range[1]}")

    @property
    def restores(self) -> bool:
        """Whether a hard restore (:func:`restore`) is asked for."""
        return self.threshold is not None or self.sigmas is not None


def check_restore_target(target: Path, info) -> None:
    """--restore promises ``max |out - in| <= R`` in the file written: a lossy or re-quantised output breaks it."""
    from astrotf import io

    fmt = io.format_of(target) or info.format
    if fmt == "jpeg":
        raise AstroTFError(f"{target}: JPEG is lossy, so --restore's max |out - in| <= R cannot hold in it; "
                           f"write PNG or TIFF (-o NAME.png)")
    if fmt != info.format:
        raise AstroTFError(f"{target}: --restore keeps max |out - in| <= R in the input's format "
                           f"({info.format}); write the output as {info.format} too")


def restore_on_grid(denoised: np.ndarray, original: np.ndarray, threshold: float, mode: str = "input",
                    info=None) -> Restored:
    """:func:`restore`, with the guarantee kept in a file written on the input's integer grid.

    Integer output (FITS BSCALE/BZERO, 8/16-bit TIFF/PNG; ``info``: the input's
    :class:`astrotf.io.ImageInfo`) is quantised when written: the result is quantised first,
    so that rounding cannot push a pixel past R. A pixel that rounding would push past R goes
    to the grid value next to it on the input's side (the input is on the grid).
    """
    restored = restore(denoised, original, threshold, mode)
    step = info.step if info is not None else None
    if not step:
        return restored
    fits_out = info.format == "fits"
    step = info.extra["bscale"] if fits_out else step
    zero = info.extra["bzero"] if fits_out else 0.0
    image = restored.image.astype(np.float64)
    grid = np.rint((image - zero) / step) * step + zero
    if not fits_out:
        grid = np.clip(grid, 0.0, 1.0)  # as the writer does; towards the input, which is in [0, 1]
    with np.errstate(invalid="ignore"):
        past = np.abs(grid - original) > threshold
    grid = np.where(past, original + np.trunc((image - original) / step) * step, grid)
    again = restore(grid.astype(denoised.dtype), original, threshold)
    return dataclasses.replace(again, restored=again.restored | restored.restored, mode=mode,
                               fraction=float((again.restored | restored.restored).sum())
                               / max(int(np.isfinite(original).sum()), 1))


def _noise_sigma(image: np.ndarray, noise_range: tuple[float, float], what: str) -> float:
    try:
        return noise_level(image, tuple(noise_range)).sigma
    except ValueError as err:
        raise AstroTFError(f"noise level of the {what}: {err} (see --noise-range)") from None


def _input_noise(data: np.ndarray, noise_range, domain: str | None, soft: bool):
    """The noise range, the input's noise level in it and the input's background (None unless measured)."""
    from astrotf.metrics import background_noise

    sky = None
    if noise_range is None:
        if domain == "magnetogram":
            noise_range = MAGNETOGRAM_NOISE_RANGE_G
        else:
            try:
                sky = background_noise(data)
            except ValueError as err:
                raise AstroTFError(f"noise level of the input: {err} (see --noise-range)") from None
            noise_range = (sky.median - 5 * sky.sigma, sky.median + 5 * sky.sigma)
    sigma_in = _noise_sigma(data, noise_range, "input")
    if soft and not sigma_in > 0:
        raise AstroTFError(f"the input's noise level is {sigma_in:g} (see --noise-range)")
    return noise_range, sigma_in, sky


def restore_and_report(data: np.ndarray, result: np.ndarray, options: RestoreOptions, *, soft: bool = False,
                       info=None, domain: str | None = None,
                       noise_sigma: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Soft restore, then restore (both optional), and the ``--report`` lines.

    Parameters
    ----------
    data, result : ndarray
        The input frame and the network's output, same shape.
    options : RestoreOptions
    soft : bool
        Apply :func:`~astrotf.soft_restore.soft_restore` (``options.soft``, or the model's default when that is None).
        A soft restore that is on by default is skipped, with a line saying why, when the input's
        noise level cannot be measured; one that was asked for fails the image.
    info : astrotf.io.ImageInfo, optional
        The input's; an integer grid keeps the restore's guarantee in the file (:func:`restore_on_grid`).
    domain : str, optional
        The data domain (``"magnetogram"`` selects the TDR noise range and strong-pixel level).
    noise_sigma : ndarray, optional
        The input's per-pixel noise σ (a noise-conditioned model's map): the soft restore's noise.

    Returns
    -------
    result : ndarray
    lines : list of str
        What was done and measured, one line each.
    """
    from astrotf.evaluate.infer_report import kept_lines, noise_line

    lines = []
    if options.strength is not None and options.strength != 1.0:
        result = blend(result, data, options.strength)
        lines.append(f"strength {options.strength:g}: output = {options.strength:g} x denoised + "
                     f"{1 - options.strength:g} x input")
    soft_width = options.soft_width if soft else None
    noise_range, sigma_in, sky = options.noise_range, None, None
    by_map = soft_width is not None and noise_sigma is not None
    if options.report or options.sigmas is not None or (soft_width is not None and not by_map):
        try:
            noise_range, sigma_in, sky = _input_noise(data, noise_range, domain, soft_width is not None and not by_map)
        except AstroTFError as err:
            if not (options.soft is None and not options.report and options.sigmas is None):
                raise
            # only the default soft restore needed the noise level: skip it rather than fail the image
            soft_width = None
            lines.append(f"soft restore skipped: {err}; --no-soft-restore turns it off")
    denoised_sigma = _noise_sigma(result, noise_range, "denoised output") if options.report else None
    if soft_width is not None:
        softened = soft_restore(result, data, noise_sigma if by_map else sigma_in, soft_width)
        finite = np.isfinite(data) & np.isfinite(softened.image)
        mostly_input = float((softened.gain[finite] > 0.5).mean()) if finite.any() else 0.0
        result = softened.image
        noise = f"noise sigma map, median {softened.noise_sigma:.4g}" if by_map else f"noise level {sigma_in:.4g}"
        lines.append(f"soft restore ({noise}, window {soft_width:g} px): mean weight of the "
                     f"input {softened.mean_gain:.3f}; {100 * mostly_input:.2f} % of the pixels nearer the input")
    if options.report:
        sigma_soft = _noise_sigma(result, noise_range, "soft-restored output") if soft_width is not None else None
        lines.append(noise_line(noise_range, sigma_in, denoised_sigma, sigma_soft))
    if options.restores:
        result, restore_lines = _restore_with_lines(data, result, options, sigma_in, noise_range, info)
        lines += restore_lines
    if options.report:
        lines += kept_lines(data, result, domain, with_max=not options.restores, sky=sky)
    return result, lines


def _restore_with_lines(data: np.ndarray, result: np.ndarray, options: RestoreOptions, sigma_in: float | None,
                        noise_range, info) -> tuple[np.ndarray, list[str]]:
    """The restore on the output's grid, the line saying what it did and (``--report``) the noise after it."""
    from astrotf.evaluate.infer_report import restored_noise_line

    from astrotf.checks import check_restore_threshold

    threshold = (restore_threshold(data, threshold=options.threshold) if options.threshold is not None
                 else options.sigmas * sigma_in)
    check_restore_threshold(threshold, info.step if info is not None else None)
    restored = restore_on_grid(result, data, threshold, options.mode, info)
    result = restored.image
    how = f"R={threshold:.4g}" + (f" ({options.sigmas:g} x noise level {sigma_in:.4g})"
                                  if options.sigmas is not None else "")
    what = "set back to their input value" if options.mode == "input" else "moved to within R of their input value"
    lines = [f"restore {how}, mode {options.mode}: {100 * restored.fraction:.2f} % of the pixels {what}"]
    if options.report:
        sigma_out = _noise_sigma(result, noise_range, "restored output")
        lines.append(restored_noise_line(data, result, sigma_in, sigma_out))
    return result, lines
