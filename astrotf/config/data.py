"""Settings of the data stage: synthetic noise, star masks and training tiles (TensorFlow-free).

:class:`DataConfig` is the ``[data]`` table of a recipe; its ``[data.astropics]``,
``[data.physical]``, ``[data.detector]`` and ``[data.star_mask]`` sub-tables are
:class:`AstroPicsNoiseConfig` (AstroPics Lab §2.2), :class:`PhysicalNoiseConfig` (Astro U-net §2.1,
eqs. 1-4), :class:`DetectorNoiseConfig` (the broad detector prior of the noise-conditioned linear
models) and :class:`StarMaskConfig` (AstroPics Lab §2.3). The stage modules (:mod:`astrotf.data.noise`,
:mod:`astrotf.data.masks`, :mod:`astrotf.data.pipeline`) take them as arguments.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from astrotf.errors import check_fields

# --------------------------------------------------------------------------- validation


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_nonnegative(name: str, value) -> None:
    """Raise for a negative Python number; tensors are not inspected (graph mode)."""
    if is_number(value) and not value >= 0:
        msg = f"`{name}` must be >= 0. Received: {name}={value}"
        raise ValueError(msg)


def _check_range(name: str, value, minimum: float = 0.0) -> None:
    if len(value) != 2 or not all(is_number(v) for v in value):
        msg = f"`{name}` must be a pair of numbers (low, high). Received: {name}={value}"
        raise ValueError(msg)
    if not minimum <= value[0] <= value[1]:
        msg = f"`{name}` must satisfy {minimum} <= low <= high. Received: {name}={value}"
        raise ValueError(msg)


def _check_probability(name: str, value) -> None:
    if not (is_number(value) and 0.0 <= value <= 1.0):
        msg = f"`{name}` must be a probability in [0, 1]. Received: {name}={value}"
        raise ValueError(msg)


def _check_positive(name: str, value) -> None:
    if not (is_number(value) and value > 0):
        msg = f"`{name}` must be > 0. Received: {name}={value}"
        raise ValueError(msg)


# --------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class AstroPicsNoiseConfig:
    """Synthetic degradations of stretched tiles in [0, 1] (AstroPics Lab §2.2).

    Attributes
    ----------
    gaussian_sigma : (float, float)
        Range of the per-tile Gaussian sigma, drawn uniformly ("random-variance Gaussian").
    chroma_prob : float
        Probability that a noisy tile also gets chroma blotches.
    chroma_sigma : (float, float)
        Range of the standard deviation of the low-resolution chroma cells.
    chroma_block : (int, int)
        Range (inclusive) of the cell size in px, drawn per tile.
    banding_prob : float
        Probability of banding; orientation (rows or columns) is drawn 50/50.
    banding_sigma : (float, float)
        Range of the standard deviation of the per-row / per-column offsets.
    identity_prob : float
        Probability that the tile is returned unchanged, so the model learns to leave
        clean data alone.
    low_noise_prob : float
        Probability that the tile only gets a faint Gaussian noise.
    low_noise_sigma : (float, float)
        Range of that faint Gaussian sigma.
    clip : bool
        Clip noisy tiles to [0, 1] (identity tiles are never touched).
    stretch_prob : float
        Probability that the Gaussian is added in linear space instead, under an asinh stretch
        ``y = asinh(a·x) / asinh(a)`` with ``a ~ U(stretch_factor)``: the noise of stretched data,
        largest in the dark sky (its sigma there is the drawn ``gaussian_sigma``).
    stretch_factor : (float, float)
        Range of the stretch strength ``a``.
    hot_pixel_prob : float
        Probability of hot and cold pixels: a fraction ``~ U(hot_pixel_fraction)`` of the pixels
        of one channel set to 1 (70 %) or 0 (30 %).
    hot_pixel_fraction : (float, float)
    quantise_prob : float
        Probability that the noisy tile is rounded to 8 bits (``round(255·x) / 255``).
    jpeg_prob : float
        Probability of JPEG compression at a quality ``~ U(jpeg_quality)`` (after the 8 bits).
    jpeg_quality : (int, int)

    The last six are off by default, so recipes without them make exactly the tiles they made
    before.

    Raises
    ------
    ValueError
        If a range is not ordered or negative, a probability is outside [0, 1], or
        ``identity_prob + low_noise_prob > 1``.
    """

    gaussian_sigma: tuple[float, float] = (0.01, 0.08)
    chroma_prob: float = 0.5
    chroma_sigma: tuple[float, float] = (0.005, 0.04)
    chroma_block: tuple[int, int] = (8, 48)
    banding_prob: float = 0.3
    banding_sigma: tuple[float, float] = (0.002, 0.02)
    identity_prob: float = 0.1
    low_noise_prob: float = 0.1
    low_noise_sigma: tuple[float, float] = (0.0, 0.005)
    clip: bool = True
    stretch_prob: float = 0.0
    stretch_factor: tuple[float, float] = (10.0, 100.0)
    hot_pixel_prob: float = 0.0
    hot_pixel_fraction: tuple[float, float] = (1e-4, 1e-3)
    quantise_prob: float = 0.0
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (70, 95)

    def __post_init__(self):
        for name in ("gaussian_sigma", "chroma_sigma", "banding_sigma", "low_noise_sigma", "hot_pixel_fraction"):
            _check_range(name, getattr(self, name))
        _check_range("stretch_factor", self.stretch_factor, minimum=1e-3)
        _check_range("jpeg_quality", self.jpeg_quality, minimum=1)
        if max(self.jpeg_quality) > 100 or not all(isinstance(v, numbers.Integral) for v in self.jpeg_quality):
            msg = f"`jpeg_quality` must be a pair of ints in [1, 100]. Received: jpeg_quality={self.jpeg_quality}"
            raise ValueError(msg)
        for name in ("stretch_prob", "hot_pixel_prob", "quantise_prob", "jpeg_prob"):
            _check_probability(name, getattr(self, name))
        _check_range("chroma_block", self.chroma_block, minimum=1)
        if not all(isinstance(v, numbers.Integral) for v in self.chroma_block):
            msg = f"`chroma_block` must be a pair of ints. Received: chroma_block={self.chroma_block}"
            raise ValueError(msg)
        for name in ("chroma_prob", "banding_prob", "identity_prob", "low_noise_prob"):
            _check_probability(name, getattr(self, name))
        if self.identity_prob + self.low_noise_prob > 1.0:
            msg = (
                "`identity_prob + low_noise_prob` must be <= 1. Received: "
                f"identity_prob={self.identity_prob}, low_noise_prob={self.low_noise_prob}"
            )
            raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class PhysicalNoiseConfig:
    """CCD noise of a shorter exposure, for linear data (Astro U-net §2.1, eqs. 1-4).

    Attributes
    ----------
    exposure_ratio : (float, float)
        Range of ``r = t_long / t_short``, drawn uniformly per tile; ``1 <= low <= high``.
    exposure_time : float
        Exposure time of the long (clean) image, seconds.
    dark_current : float
        Dark current, e-/s/px.
    read_noise : float
        Read-out noise, e- rms.
    gain : float
        e-/ADU; image values are ADU, converted to electrons and back.

    Raises
    ------
    ValueError
        If a field is out of range (see above; ``exposure_time`` and ``gain`` > 0,
        ``dark_current`` and ``read_noise`` >= 0).
    """

    exposure_ratio: tuple[float, float] = (2.0, 5.0)
    exposure_time: float = 1.0
    dark_current: float = 0.0
    read_noise: float = 3.0
    gain: float = 1.0

    def __post_init__(self):
        _check_range("exposure_ratio", self.exposure_ratio, minimum=1.0)
        _check_positive("exposure_time", self.exposure_time)
        _check_positive("gain", self.gain)
        for name in ("dark_current", "read_noise"):
            if not is_number(getattr(self, name)):
                msg = f"`{name}` must be a number. Received: {name}={getattr(self, name)}"
                raise ValueError(msg)
            check_nonnegative(name, getattr(self, name))


@dataclasses.dataclass(frozen=True)
class DetectorNoiseConfig:
    """A detector and exposure drawn per tile, for noise-conditioned linear models (issue #21).

    A clean tile holds electrons of a long exposure. Per tile a gain ``g``, read noise ``rn`` and
    exposure ratio ``r`` are drawn uniformly from their ranges; the input is the short exposure in ADU,
    ``(Pois(clean / r) + artefacts + N(0, rn)) / g``, the target its expectation ``clean / (r * g)``,
    and the σ map the model is conditioned on is ``NoiseModel(g, rn).sigma_map(input)``
    (:mod:`astrotf.noise_model`), exactly what inference computes from a frame's noise model.
    Hot pixels and cosmic rays (in the input only: the model must neither keep them nor take them for
    stars) fall on a fraction of pixels drawn from ``hot_pixel_rate`` and ``cosmic_ray_rate``, with
    log-uniform charges in ``artefact_electrons``; a cosmic ray is a 3-px track.

    Attributes
    ----------
    gain : (float, float)
        e⁻/ADU, low > 0.
    read_noise : (float, float)
        e⁻ rms.
    exposure_ratio : (float, float)
        ``r >= 1``.
    hot_pixel_rate, cosmic_ray_rate : (float, float)
        Fraction of pixels hit per tile, in [0, 1].
    artefact_electrons : (float, float)
        Charge of a hot pixel or of a cosmic ray's pixels, e⁻, low > 0.

    Raises
    ------
    ValueError
        A range that is not ``(low, high)`` with ``low <= high`` inside its bounds.
    """

    gain: tuple[float, float] = (0.3, 5.0)
    read_noise: tuple[float, float] = (1.0, 15.0)
    exposure_ratio: tuple[float, float] = (1.5, 10.0)
    hot_pixel_rate: tuple[float, float] = (0.0, 3e-4)
    cosmic_ray_rate: tuple[float, float] = (0.0, 2e-4)
    artefact_electrons: tuple[float, float] = (200.0, 50000.0)

    def __post_init__(self):
        _check_range("gain", self.gain, minimum=1e-6)
        _check_range("read_noise", self.read_noise)
        _check_range("exposure_ratio", self.exposure_ratio, minimum=1.0)
        _check_range("hot_pixel_rate", self.hot_pixel_rate)
        _check_range("cosmic_ray_rate", self.cosmic_ray_rate)
        _check_range("artefact_electrons", self.artefact_electrons, minimum=1e-6)
        for name in ("hot_pixel_rate", "cosmic_ray_rate"):
            if getattr(self, name)[1] > 1:
                msg = f"`{name}` must lie in [0, 1]. Received: {name}={getattr(self, name)}"
                raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class StarMaskConfig:
    """How star cores are found and feathered (AstroPics Lab §2.3).

    Attributes
    ----------
    threshold : float
        Absolute luminance threshold for star cores, for stretched data in [0, 1].
    threshold_sigma : float or None
        If set, the absolute ``threshold`` is ignored and each image uses
        ``median(L) + threshold_sigma * 1.4826 * MAD(L)`` over its finite pixels: a
        robust k-sigma rule for linear data of any scale.
    dilation : int
        Radius in px of the square dilation (max-pool kernel ``2 * dilation + 1``).
    blur_sigma : float
        Standard deviation in px of the Gaussian blur (kernel radius ``ceil(3 * blur_sigma)``);
        0 disables the blur.

    Raises
    ------
    ValueError
        If ``threshold`` is not a finite number, ``threshold_sigma`` is not None or > 0,
        ``dilation`` is not an int >= 0, or ``blur_sigma`` < 0.
    """

    threshold: float = 0.6
    threshold_sigma: float | None = None
    dilation: int = 2
    blur_sigma: float = 1.5

    def __post_init__(self):
        if not (isinstance(self.threshold, numbers.Real) and math.isfinite(self.threshold)):
            msg = f"`threshold` must be a finite number. Received: threshold={self.threshold}"
            raise ValueError(msg)
        if self.threshold_sigma is not None and not (
            isinstance(self.threshold_sigma, numbers.Real) and self.threshold_sigma > 0
        ):
            msg = f"`threshold_sigma` must be None or > 0. Received: threshold_sigma={self.threshold_sigma}"
            raise ValueError(msg)
        if not (isinstance(self.dilation, numbers.Integral) and self.dilation >= 0):
            msg = f"`dilation` must be an int >= 0. Received: dilation={self.dilation}"
            raise ValueError(msg)
        if not (isinstance(self.blur_sigma, numbers.Real) and self.blur_sigma >= 0):
            msg = f"`blur_sigma` must be >= 0. Received: blur_sigma={self.blur_sigma}"
            raise ValueError(msg)


MODES = ("paired", "clean-only")
NOISES = ("astropics", "physical", "detector", "none")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How training tiles are made.

    Parameters
    ----------
    mode : {"paired", "clean-only"}
        ``paired``: ``DIR/noisy`` and ``DIR/clean`` matched by file stem.
        ``clean-only``: clean images in ``DIR/clean`` (or ``DIR``) with synthetic noise.
    tile : int
        Square tile size in px (256 in the paper).
    batch_size : int
        Tiles per batch (8 in the paper).
    channels : int
        Expected channels of every image (1 or 3).
    noise : {"astropics", "physical", "detector", "none"}
        Synthetic noise added to the input: AstroPics §2.2 (stretched data in
        [0, 1]), Astro U-net eq. 4 (linear data), a detector drawn per tile with the
        input's σ map (noise-conditioned linear models; clean images in electrons), or
        none (paired data as given).
    crops_per_image : int
        Random tiles cut from an image each time it is read.
    shuffle_buffer : int
        Tiles in the shuffle buffer.
    val_fraction : float
        Share of *files* held out for validation (deterministic per ``split_seed``).
    seed : int
        Seed of the crops, augmentation and noise (``--seed``).
    split_seed : int
        Seed of the file split alone, so that runs with other seeds, later phases of one model
        among them, validate on the same files and never train on the ones an earlier phase
        validated on.
    """

    mode: str = "clean-only"
    tile: int = 256
    batch_size: int = 8
    channels: int = 3
    noise: str = "astropics"
    crops_per_image: int = 8
    shuffle_buffer: int = 64
    val_fraction: float = 0.2
    seed: int = 0
    split_seed: int = 0
    astropics: AstroPicsNoiseConfig = AstroPicsNoiseConfig()
    physical: PhysicalNoiseConfig = PhysicalNoiseConfig()
    detector: DetectorNoiseConfig = DetectorNoiseConfig()
    star_mask: StarMaskConfig = StarMaskConfig()

    def __post_init__(self):
        checks = [
            ("mode", self.mode in MODES, f"one of {MODES}"),
            ("noise", self.noise in NOISES, f"one of {NOISES}"),
            ("tile", isinstance(self.tile, int) and self.tile >= 8, "an integer >= 8"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
            ("channels", self.channels in (1, 3), "1 or 3"),
            ("crops_per_image", isinstance(self.crops_per_image, int) and self.crops_per_image >= 1,
             "an integer >= 1"),
            ("shuffle_buffer", isinstance(self.shuffle_buffer, int) and self.shuffle_buffer >= 1,
             "an integer >= 1"),
            ("val_fraction", 0.0 <= self.val_fraction < 1.0, "in [0, 1)"),
            ("split_seed", isinstance(self.split_seed, int) and self.split_seed >= 0, "an integer >= 0"),
        ]
        check_fields(self, checks)
