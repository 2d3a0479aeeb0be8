"""The noise σ map a noise-conditioned model is given at inference, checked before it is used.

:func:`frame_noise` makes the σ map of a linear frame from the first of:

* the frame's own per-pixel uncertainty, an :class:`astrotf.io.Uncertainty` (a FITS ``ERR``, ``VAR``
  or ``IVAR`` extension, :func:`astrotf.io.read_uncertainty`; an ``NDData``'s uncertainty in the
  API), unless ``--gain`` or ``--read-noise`` is given or ``--no-uncertainty`` turns it off. Pixels
  it gives no σ for (zero, negative, NaN) take the mean σ of their 5 × 5 neighbours that have one,
  and are counted; with more than :data:`MAX_UNUSABLE` of them it is refused;
* the noise model of each channel, :func:`astrotf.noise_model.resolve_noise_model`
  (``--gain`` / ``--read-noise``, then the header's keywords, ``noise_model.GAIN_KEYS``,
  ``READ_NOISE_KEYS``, ``EXPTIME_KEYS`` and ``BUNIT``, then a fit of the frame for whatever is missing).

Either is compared with the frame's own noise (:func:`check_against_frame`). It never guesses silently:

* a frame whose noise model cannot be resolved (no background to fit, a gain that the frame does
  not show, a ``BUNIT`` that is neither counts nor electrons) fails, with the reason;
* a noise model or uncertainty that the frame contradicts, or a fit that had to assume something
  (:func:`distrust`), is refused with the reason, unless the user vouched for it:
  ``--trust-noise-model``, or both numbers given as options (``--gain`` and ``--read-noise``;
  ``--read-noise`` alone for data in electrons). It is then used, and the disagreement is
  logged, shown and recorded in the HISTORY.

``--force`` is not that override: in ``astrotf infer`` it only lets outputs be overwritten, and a
flag that overwrites files should not also silence a check of the science.

:func:`write_noise_map` writes the σ map used (``--write-noise-map``) as float32 FITS beside the
output, with the input's header and HISTORY cards of the noise model. NumPy and astropy only.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from pathlib import Path

import numpy as np

from astrotf.errors import AstroTFError
from astrotf.io import Uncertainty, inherited_header, read_uncertainty
from astrotf.metrics.noise import block_statistics, cell_blocks
from astrotf.noise_model import NoiseModel, check_override, resolve_noise_model

#: Largest factor between the noise σ measured in the frame's background cells and the model's σ there
#: (median over the cells) for a model to be trusted.
SIGMA_RATIO_LIMIT = 1.25
#: Least fraction of the background cells whose measured noise variance is within a factor 2 of the model's.
AGREEING_FRACTION = 0.5
#: Fewest ``block × block`` background cells for the comparison; with fewer it is not made (and noted).
MIN_CHECK_CELLS = 16
#: Largest fraction of the finite pixels an uncertainty may give no σ for (they are filled) before it is refused.
MAX_UNUSABLE = 0.05


@dataclasses.dataclass(frozen=True)
class NoiseOptions:
    """How ``astrotf infer`` finds the noise of a frame for a noise-conditioned model.

    Parameters
    ----------
    gain : float, optional
        ``--gain``, e⁻/ADU, instead of the header's or a fitted one.
    read_noise : float, optional
        ``--read-noise``, e⁻ rms, instead of the header's or a fitted one.
    write_map : bool
        ``--write-noise-map``: write the σ map used beside the output.
    trust : bool
        ``--trust-noise-model``: use a noise model that :func:`distrust` objects to.
    uncertainty : bool
        Use the frame's own uncertainty (an ``ERR`` / ``VAR`` / ``IVAR`` extension) when it has one;
        False: ``--no-uncertainty``.

    Raises
    ------
    astrotf.errors.AstroTFError
        A gain or read noise that is not a finite number > 0, as a one-line error naming the option.
    """

    gain: float | None = None
    read_noise: float | None = None
    write_map: bool = False
    trust: bool = False
    uncertainty: bool = True

    def __post_init__(self):
        for name in ("gain", "read_noise"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_override(name, getattr(self, name)))

    @property
    def given(self) -> list[str]:
        """The options set, by their command-line names."""
        flags = {"--gain": self.gain is not None, "--read-noise": self.read_noise is not None,
                 "--write-noise-map": self.write_map, "--trust-noise-model": self.trust,
                 "--no-uncertainty": not self.uncertainty}
        return [flag for flag, on in flags.items() if on]


@dataclasses.dataclass(frozen=True)
class NoiseCheck:
    """A noise model against a frame's own noise, over its ``block × block`` background cells.

    Attributes
    ----------
    cells : int
        Usable cells (:func:`astrotf.metrics.noise.block_statistics`).
    sigma_ratio : float
        Median over the cells of measured / predicted variance, square-rooted: the factor between the
        frame's noise and the model's σ. NaN with fewer than :data:`MIN_CHECK_CELLS` cells.
    agreeing : float
        Fraction of the cells whose measured variance is within a factor 2 of the model's (NaN likewise).
    """

    cells: int
    sigma_ratio: float
    agreeing: float
    against: str = "model sigma"

    @property
    def measured(self) -> bool:
        return self.cells >= MIN_CHECK_CELLS

    def line(self) -> str:
        """One line for the HISTORY (one card) and the terminal."""
        if not self.measured:
            return f"not checked against the frame ({self.cells} background cells, need {MIN_CHECK_CELLS})"
        return (f"frame noise {self.sigma_ratio:.3f} x {self.against}, {self.cells} cells, "
                f"{self.agreeing:.0%} agree")


def check_against_frame(noise: NoiseModel | np.ndarray, plane: np.ndarray, block: int = 8) -> NoiseCheck:
    """Compare the σ a noise model or a σ map predicts with the noise measured in a frame's background cells.

    Parameters
    ----------
    noise : NoiseModel or numpy.ndarray, shape (H, W)
        A noise model, or a σ map of ``plane`` (an uncertainty's) in its unit.
    plane : numpy.ndarray, shape (H, W)
        One channel of the linear frame, in the model's unit; NaN cells are skipped.
    block : int
        Side of the cells.

    Returns
    -------
    NoiseCheck
        The model's variance is taken at each cell's median signal (a σ map's is its mean σ² over the
        cell) and compared with the cell's noise variance from its Laplacian (which ignores the sky and
        gradients; star cores are clipped, and the median over cells ignores what clipping leaves).
    """
    stats = block_statistics(np.asarray(plane), block)
    if stats.signal.size < MIN_CHECK_CELLS:
        return NoiseCheck(int(stats.signal.size), math.nan, math.nan)
    if isinstance(noise, NoiseModel):
        predicted, against = noise.variance_map(stats.signal), "model sigma"
    else:
        variance = np.asarray(noise, dtype=np.float64)[1:-1, 1:-1] ** 2
        predicted, against = cell_blocks(variance, block).mean(axis=1)[stats.index], "uncertainty sigma"
    with np.errstate(over="ignore"):  # a model with no read noise predicts ~0 below its offset: inf, disagreeing
        ratio = stats.variance / np.maximum(predicted, np.finfo(np.float64).tiny)
    usable = np.isfinite(ratio)
    if usable.sum() < MIN_CHECK_CELLS:
        return NoiseCheck(int(usable.sum()), math.nan, math.nan, against)
    ratio = ratio[usable]
    agreeing = float(np.mean((ratio >= 0.5) & (ratio <= 2.0)))
    return NoiseCheck(int(ratio.size), float(np.sqrt(np.median(ratio))), agreeing, against)


def distrust(model: NoiseModel | None, check: NoiseCheck) -> list[str]:
    """Why a noise model (None: an uncertainty) should not be used on its frame (empty: nothing against it).

    * A fit that found no read-noise term (a negative intercept) took it for a pedestal: a guess.
    * The frame's background noise differs from the model's σ by more than :data:`SIGMA_RATIO_LIMIT`:
      a wrong gain or read noise, a bias pedestal or subtracted sky the header does not describe,
      a stack of frames, or correlated (resampled, drizzled) noise.
    * Fewer than :data:`AGREEING_FRACTION` of the background cells have the predicted noise.
    """
    reasons = []
    if model is not None and model.read_noise_from.startswith("fit: below precision"):
        reasons.append(f"the fit found no read-noise term and assumed a pedestal of {model.offset:.4g} data units")
    why = ("a wrong gain or read noise, a pedestal or subtracted sky, a stack, or correlated noise" if model is not None
           else "an uncertainty in other units or of other data, or correlated noise")
    if check.measured and not 1.0 / SIGMA_RATIO_LIMIT <= check.sigma_ratio <= SIGMA_RATIO_LIMIT:
        whose = "the model's" if model is not None else "the uncertainty's"
        reasons.append(f"the frame's background noise is {check.sigma_ratio:.2f} x {whose} sigma over "
                       f"{check.cells} cells (trusted: {1 / SIGMA_RATIO_LIMIT:.2f} to {SIGMA_RATIO_LIMIT:.2f}): {why}")
    if check.measured and check.agreeing < AGREEING_FRACTION:
        reasons.append(f"only {check.agreeing:.0%} of {check.cells} background cells have the "
                       f"{'model' if model is not None else 'uncertainty'}'s noise within a factor 2")
    return reasons


def vouched(model: NoiseModel) -> bool:
    """Whether every number of the model came from the user's options (``--gain`` and ``--read-noise``)."""
    return model.read_noise_from == "--read-noise" and (model.gain_from == "--gain"
                                                        or model.unit.startswith("electron"))


@dataclasses.dataclass(frozen=True)
class FrameNoise:
    """What :func:`frame_noise` found: the σ map, the model of each channel (none when the frame's own
    uncertainty gave the map; ``uncertainty`` then names it) and the lines to record."""

    sigma: np.ndarray
    models: tuple[NoiseModel, ...]
    history: list[str]
    lines: list[str]
    uncertainty: str | None = None


def _summary(model: NoiseModel) -> str:
    return (f"gain {model.gain:.4g} e-/ADU ({model.gain_from}), read noise {model.read_noise:.4g} e- "
            f"({model.read_noise_from}), unit {model.unit}")


def history_lines(text: str, width: int = 72) -> list[str]:
    """``text`` as FITS HISTORY lines of at most ``width`` characters, continued lines indented under
    ``noise model:``: nothing is cut."""
    return textwrap.wrap(text, width, subsequent_indent="noise model:   ", break_on_hyphens=False)


def frame_noise(data: np.ndarray, header=None, options: NoiseOptions = NoiseOptions(),
                uncertainty: Uncertainty | None = None) -> FrameNoise:
    """The σ map of a linear frame, for a noise-conditioned model: from its uncertainty, else its noise model.

    Parameters
    ----------
    data : numpy.ndarray, shape (H, W, C)
        The frame as read (NaN allowed), in the unit its ``BUNIT`` names (ADU if absent).
    header : astropy.io.fits.Header or mapping, optional
        Read for the gain, read noise, exposure time and unit (see the module docstring).
    options : NoiseOptions
    uncertainty : astrotf.io.Uncertainty, optional
        The frame's own (:func:`astrotf.io.read_uncertainty`), in its units; used unless
        ``options`` gives ``--gain``, ``--read-noise`` or ``--no-uncertainty``.

    Returns
    -------
    FrameNoise
        ``sigma`` (H, W, C) float32 in data units, NaN where ``data`` is non-finite; ``history``:
        :meth:`NoiseModel.history_cards` (or the uncertainty's source) and the check of each channel
        (prefixed ``ch<i>`` for colour frames); ``lines``: what to tell the user, warnings first
        (starting ``"Warning: "``).

    Raises
    ------
    astrotf.errors.AstroTFError
        One line with the reason: the noise model cannot be resolved, the uncertainty does not fit
        the frame, or :func:`distrust` objects and the user did not vouch for it.
    """
    data = np.asarray(data)
    ignored = []
    if uncertainty is not None:
        overrides = [flag for flag in options.given if flag in ("--gain", "--read-noise", "--no-uncertainty")]
        if not overrides:
            return _from_uncertainty(data, uncertainty, options)
        ignored = [f"noise model: the {uncertainty.source} is not used ({', '.join(overrides)} given)"]
    sigma = np.empty(data.shape, np.float32)
    models, history, lines = [], list(ignored), list(ignored)
    for c in range(data.shape[-1]):
        plane = data[..., c]
        channel = f"channel {c}: " if data.shape[-1] > 1 else ""
        try:
            model = resolve_noise_model(plane, header, gain=options.gain, read_noise=options.read_noise)
        except AstroTFError as err:
            raise AstroTFError(f"{channel}{err}") from None
        check = check_against_frame(model, plane)
        reasons = distrust(model, check)
        if reasons and not (options.trust or vouched(model)):
            raise AstroTFError(f"{channel}noise model not trusted ({_summary(model)}): {'; '.join(reasons)}; give "
                               "--gain and --read-noise, or pass --trust-noise-model to use it anyway")
        sigma[..., c] = model.sigma_map(plane)
        why = "--trust-noise-model" if options.trust else "--gain and --read-noise given"
        cards = _cards([*model.history_cards(), f"noise model: {check.line()}"], reasons, why, lines, channel)
        history += [(f"ch{c} " if data.shape[-1] > 1 else "") + card for card in cards]
        lines.append(f"{channel}noise model: {_summary(model)}; {check.line()}")
        models.append(model)
    return FrameNoise(sigma, tuple(models), history, lines)


def _cards(entries: list[str], reasons: list[str], why: str, lines: list[str], channel: str) -> list[str]:
    """HISTORY cards of ``entries`` and of the objections overridden by ``why``; those also go to ``lines``."""
    cards = [card for line in entries for card in history_lines(line)]
    for reason in reasons:
        lines.append(f"Warning: {channel}noise model used ({why}) although {reason}")
        cards += history_lines(f"noise model: used ({why}) although {reason}")
    return cards


def _from_uncertainty(data: np.ndarray, uncertainty: Uncertainty, options: NoiseOptions) -> FrameNoise:
    """:func:`frame_noise` from the frame's own uncertainty: filled where it gives no σ, checked per channel."""
    sigma = uncertainty.sigma()
    if sigma.shape != data.shape:
        raise AstroTFError(f"the {uncertainty.source} is shaped {sigma.shape[:2]} x {sigma.shape[-1]} channel(s), "
                           f"the image {data.shape[:2]} x {data.shape[-1]}")
    finite = np.isfinite(data)
    unusable = finite & ~np.isfinite(sigma)
    share = unusable.sum() / max(int(finite.sum()), 1)
    if share > MAX_UNUSABLE:
        raise AstroTFError(f"the {uncertainty.source} gives no sigma (zero, negative or NaN) for {share:.1%} of the "
                           f"pixels with data (at most {MAX_UNUSABLE:.0%}); pass --no-uncertainty to use the gain "
                           "and read-noise model instead")
    if unusable.any():
        sigma = _fill(sigma, unusable)
    sigma = np.where(finite, sigma, np.nan).astype(np.float32)
    source = f"noise model: sigma map from the {uncertainty.source}, read as {uncertainty.kind}"
    if unusable.any():
        source += f"; {int(unusable.sum())} pixels without a sigma filled from their neighbours"
    history, lines = [], []
    for c in range(data.shape[-1]):
        channel = f"channel {c}: " if data.shape[-1] > 1 else ""
        check = check_against_frame(sigma[..., c], data[..., c])
        reasons = distrust(None, check)
        if reasons and not options.trust:
            raise AstroTFError(f"{channel}the {uncertainty.source} is not trusted: {'; '.join(reasons)}; pass "
                               "--no-uncertainty to use the gain and read-noise model instead, or "
                               "--trust-noise-model to use it anyway")
        cards = _cards([source, f"noise model: {check.line()}"], reasons, "--trust-noise-model", lines, channel)
        history += [(f"ch{c} " if data.shape[-1] > 1 else "") + card for card in cards]
        lines.append(f"{channel}{source}; {check.line()}")
    return FrameNoise(sigma, (), history, lines, uncertainty.source)


def _fill(sigma: np.ndarray, unusable: np.ndarray, size: int = 5) -> np.ndarray:
    """``sigma`` with its ``unusable`` pixels set to the mean σ of their ``size × size`` neighbours that have
    one (per channel), or the channel's median σ where none has."""
    from scipy.ndimage import uniform_filter

    filled = np.array(sigma, dtype=np.float64)
    for c in range(sigma.shape[-1]):
        plane, bad = filled[..., c], unusable[..., c]
        good = np.isfinite(plane)
        total = uniform_filter(np.where(good, plane, 0.0), size, mode="nearest")
        count = uniform_filter(good.astype(np.float64), size, mode="nearest")
        with np.errstate(invalid="ignore", divide="ignore"):
            local = np.where(count > 0.5 / size**2, total / count, np.nanmedian(plane))
        plane[bad] = local[bad]
    return filled.astype(np.float32)


def noise_for(model_name: str, conditioned: bool, data: np.ndarray, options: NoiseOptions, *, info=None,
              header=None, uncertainty: Uncertainty | None = None) -> FrameNoise | None:
    """:func:`frame_noise` for a noise-conditioned model; None for another, which refuses the noise options.

    ``info`` (an :class:`astrotf.io.ImageInfo`): the file's header (with what it inherits from the primary
    header, :func:`astrotf.io.inherited_header`), its uncertainty extension
    (:func:`astrotf.io.read_uncertainty`, read for a noise-conditioned model only) and its name, which
    starts the message of any error; ``header`` and ``uncertainty`` are used instead where given.

    Raises
    ------
    astrotf.errors.AstroTFError
        Noise options for a model that takes no σ map, or what :func:`frame_noise` raises.
    """
    prefix = f"{info.path}: " if info is not None else ""
    if not conditioned:
        if options.given:
            raise AstroTFError(f"{prefix}{', '.join(options.given)}: model {model_name} is not noise-conditioned "
                               "(it takes no noise sigma map)")
        return None
    try:
        if info is not None:
            header = header if header is not None else inherited_header(info)
            uncertainty = uncertainty if uncertainty is not None else read_uncertainty(info)
        return frame_noise(data, header, options, uncertainty)
    except AstroTFError as err:
        raise AstroTFError(str(err) if prefix and str(err).startswith(prefix) else f"{prefix}{err}") from None


def noise_map_path(image: Path, output: Path) -> Path:
    """Where ``--write-noise-map`` writes the σ map of ``image``: ``<image stem>_noise.fits`` beside ``output``."""
    from astrotf.io import SUPPORTED_SUFFIXES

    suffix = next((s for s in SUPPORTED_SUFFIXES if image.name.lower().endswith(s)), image.suffix)
    return output.parent / f"{image.name[: len(image.name) - len(suffix)]}_noise.fits"


#: First HISTORY line of a σ map that :func:`write_noise_map` wrote (how ``--force`` knows it may replace one).
MAP_HISTORY = "astrotf noise sigma map"


def check_noise_map_target(path: Path, image: Path, output: Path, force: bool) -> None:
    """Refuse a σ-map path that is the input or the output, a folder, or an existing file: without
    ``force`` any, with it any file that is not a σ map astrotf wrote (another input of the batch, say).

    Raises
    ------
    astrotf.errors.AstroTFError
        One line naming ``path`` and the problem.
    """
    if path.resolve() == image.resolve():
        raise AstroTFError(f"{path}: the noise map would overwrite the input")
    if path.resolve() == output.resolve():
        raise AstroTFError(f"{path}: the noise map would overwrite the output")
    if path.is_dir():
        raise AstroTFError(f"{path}: the noise map's path is a directory")
    if path.exists() and not force:
        raise AstroTFError(f"{path}: noise map exists; pass --force to overwrite it")
    if path.exists() and not _written_here(path):
        raise AstroTFError(f"{path}: exists and is not a noise map written by astrotf; not overwritten, even with "
                           "--force (move it away)")


def _written_here(path: Path) -> bool:
    """Whether ``path`` is a FITS file whose first image HDU has the HISTORY of a σ map of :func:`write_noise_map`."""
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            header = next((h.header for h in hdul if h.is_image and h.header.get("NAXIS", 0) > 0), hdul[0].header)
            history = [str(line) for line in header.get("HISTORY", [])]
    except (OSError, ValueError, TypeError, IndexError, KeyError):
        return False
    return any(line.startswith(MAP_HISTORY) for line in history)


def write_noise_map(path: Path, maps: list[tuple], overwrite: bool = False) -> Path:
    """Write σ maps as float32 FITS (atomically), each with the header of the image it belongs to.

    Parameters
    ----------
    path : Path
    maps : list of (sigma, info, history)
        ``sigma`` (H, W, C) in the image's units (its ``BUNIT`` is kept); ``info``, the image's
        :class:`astrotf.io.ImageInfo`, whose FITS header (scaling cards dropped) goes to the map and
        nothing else of its file; ``history``, the HISTORY lines (the noise model's). One map is the
        primary HDU; several (the chips of a mosaic) follow an empty primary HDU, in order.
    overwrite : bool

    Raises
    ------
    astrotf.io.ImageIOError
        The write fails (one line naming ``path``).
    """
    from astropy.io import fits

    from astrotf import io

    parts = []
    for index, (sigma, info, history) in enumerate(maps, start=len(maps) > 1):
        channels = sigma.shape[-1]
        header = info.header.copy() if info.header is not None else fits.Header()
        target = io.ImageInfo(path=Path(path), format="fits", dtype=np.dtype(np.float32), channels=channels,
                              layout="CHW" if channels > 1 else "HW", scale=1.0, header=header, hdu_index=index,
                              extra={"standalone": True})
        parts.append((sigma.astype(np.float32, copy=False), target, history))
    (sigma, target, history), *more = parts
    return io.write_image(path, sigma, target, history=history, overwrite=overwrite, more=tuple(more))
