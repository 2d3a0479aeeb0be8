"""Settings of the loss and optimisation stages (TensorFlow-free).

:class:`LossConfig` is the ``[loss]`` table of a ResUNet recipe (AstroPics §2.5),
:class:`TrainConfig` its ``[train]`` table (§2.6), :class:`Self2SelfTrainConfig` the
``[train]`` table of a one-image recipe (TDR, "Training": Self2Self or Neighbor2Neighbor).
"""

from __future__ import annotations

import dataclasses

from astrotf.constants import SELF2SELF_KEEP_PROB
from astrotf.errors import check_fields

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


#: How a one-image (TDR) run learns without clean data: ``[train] method`` of a Self2Self recipe.
ONE_IMAGE_METHODS = ("self2self", "neighbor2neighbor")

#: The losses of ``[loss] kind``.
LOSS_KINDS = ("astropics", "science")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights of the composite loss (§2.5).

    Parameters
    ----------
    beta : float
        Share of the SSIM term, in [0, 1]; L1 gets ``1 - beta``.
    gamma : float
        Weight of brightness consistency outside stars, >= 0.
    delta : float
        Weight of total variation inside stars, >= 0.
    star_weight : float
        L1 weight at the centre of a star, in [0, 1] (1 = no reduction).
    ssim_data_range : float
        Data range for SSIM's constants (1 for [0, 1] data; for normalised linear
        data a few background sigmas).
    brightness_block : int
        Cell size in px of the brightness term.
    kind : {"astropics", "science"}
        ``"astropics"``: the composite loss above (§2.5). ``"science"``: the loss of the
        noise-conditioned linear models (issue #21), every term in units of the input's per-pixel σ:
        the squared error (linear beyond ``huber_delta`` σ, so artefacts do not outweigh a tile), plus ``flux_weight`` times the flux error of ``flux_block``-px cells
        (sources and sky level alike), plus ``compact_weight`` times the residual power at the PSF
        scale (Gaussian of ``compact_fwhm`` px) in source-free sky, what a source finder takes for
        faint sources. The AstroPics weights above are then unused.
    huber_delta : float
        Error in σ where the science loss turns from squared to linear, > 0.
    flux_weight, compact_weight : float
        Weights of the science terms, >= 0.
    flux_block : int
        Cell size in px of the science flux term.
    compact_fwhm : float
        FWHM in px of the matched filter of the compact-residual term, > 0.
    """

    beta: float = 0.2
    gamma: float = 0.5
    delta: float = 0.1
    star_weight: float = 0.5
    ssim_data_range: float = 1.0
    brightness_block: int = 8
    kind: str = "astropics"
    huber_delta: float = 3.0
    flux_weight: float = 0.1
    flux_block: int = 8
    compact_weight: float = 0.1
    compact_fwhm: float = 3.0

    def __post_init__(self):
        if self.kind not in LOSS_KINDS:
            msg = f"`kind` must be one of {LOSS_KINDS}. Received: kind={self.kind!r}"
            raise ValueError(msg)
        for name in ("flux_weight", "compact_weight"):
            if not getattr(self, name) >= 0:
                msg = f"`{name}` must be >= 0. Received: {name}={getattr(self, name)}"
                raise ValueError(msg)
        if not (isinstance(self.flux_block, int) and self.flux_block >= 1):
            msg = f"`flux_block` must be an integer >= 1. Received: flux_block={self.flux_block}"
            raise ValueError(msg)
        if not self.huber_delta > 0:
            msg = f"`huber_delta` must be > 0. Received: huber_delta={self.huber_delta}"
            raise ValueError(msg)
        if not self.compact_fwhm > 0:
            msg = f"`compact_fwhm` must be > 0. Received: compact_fwhm={self.compact_fwhm}"
            raise ValueError(msg)
        if not 0.0 <= self.beta <= 1.0:
            msg = f"`beta` must be in [0, 1]. Received: beta={self.beta}"
            raise ValueError(msg)
        for name in ("gamma", "delta"):
            if getattr(self, name) < 0:
                msg = f"`{name}` must be >= 0. Received: {name}={getattr(self, name)}"
                raise ValueError(msg)
        if not 0.0 <= self.star_weight <= 1.0:
            msg = f"`star_weight` must be in [0, 1]. Received: star_weight={self.star_weight}"
            raise ValueError(msg)
        if self.ssim_data_range <= 0:
            msg = f"`ssim_data_range` must be > 0. Received: ssim_data_range={self.ssim_data_range}"
            raise ValueError(msg)
        if self.brightness_block < 1:
            msg = f"`brightness_block` must be >= 1. Received: brightness_block={self.brightness_block}"
            raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (AstroPics §2.6: Adam, lr 1e-4, batch 8, lr schedule).

    Parameters
    ----------
    epochs, steps_per_epoch : int
        Length of the run; an epoch ends with validation, a preview and a checkpoint.
    lr : float
        Peak learning rate of Adam.
    schedule : {"cosine", "constant"}
        Cosine decay to 5 % of ``lr`` after a linear warm-up, or constant.
    warmup_steps : int
        Steps of linear warm-up from ``lr / 10`` (cosine schedule only).
    precision : {"auto", "float32", "mixed_bfloat16", "mixed_float16"}
        Keras dtype policy; the loss, the last layer and the residual sum always stay
        in float32. ``auto`` (default) picks the fast path for the hardware, see
        :func:`resolve_precision`.
    clip_norm : float or None
        Clip the global gradient norm to this value (None: no clipping). Useful for
        linear data, whose normalised star peaks are thousands of sigma.
    checkpoint_every : int
        Steps between "last" checkpoints (also written at every epoch end and on Ctrl-C).
    seed : int
        Seed of the weights' initialisation.
    ema : float
        Decay of an exponential moving average of the weights (0: none; 0.999 averages over
        about the last thousand steps). With it, validation, ``model_best.keras`` and
        ``model_last.keras`` use the averaged weights: they are what is exported.
    """

    epochs: int = 50
    steps_per_epoch: int = 200
    lr: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 200
    precision: str = "auto"
    clip_norm: float | None = None
    checkpoint_every: int = 100
    seed: int = 0
    ema: float = 0.0

    def __post_init__(self):
        checks = [
            ("epochs", isinstance(self.epochs, int) and self.epochs >= 1, "an integer >= 1"),
            ("steps_per_epoch", isinstance(self.steps_per_epoch, int) and self.steps_per_epoch >= 1,
             "an integer >= 1"),
            ("lr", isinstance(self.lr, (int, float)) and 0 < self.lr < 1, "in (0, 1)"),
            ("schedule", self.schedule in ("cosine", "constant"), "'cosine' or 'constant'"),
            ("warmup_steps", isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "an integer >= 0"),
            ("precision", self.precision in PRECISIONS, f"one of {PRECISIONS}"),
            ("clip_norm", self.clip_norm is None or (isinstance(self.clip_norm, (int, float)) and self.clip_norm > 0),
             "None or > 0"),
            ("checkpoint_every", isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 1,
             "an integer >= 1"),
            ("ema", isinstance(self.ema, (int, float)) and 0 <= self.ema < 1, "in [0, 1)"),
        ]
        check_fields(self, checks)


@dataclasses.dataclass(frozen=True)
class Self2SelfTrainConfig:
    """Optimisation of a one-image run (TDR's rule: train on one noisy image of the kind).

    Parameters
    ----------
    method : {"self2self", "neighbor2neighbor"}
        ``"self2self"``: Bernoulli-masked inputs, a dropout ensemble at test time
        (:mod:`astrotf.train.self2self`). ``"neighbor2neighbor"``: pairs of neighbouring
        sub-images, one deterministic pass at test time (:mod:`astrotf.train.neighbor2neighbor`).
    steps : int
        Total optimisation steps (a resumed run continues up to this number).
    keep_prob : float
        Self2Self: Bernoulli probability ``p`` that a pixel is given to the network (eq. 2).
    mask_block : int
        Self2Self: draw the Bernoulli mask per ``mask_block × mask_block`` block of pixels (1: per
        pixel, as in the paper). Blocks hide a dropped pixel's neighbours too, for noise
        that is correlated between adjacent pixels.
    gamma : float
        Neighbor2Neighbor: weight of the regulariser that closes the half-pixel gap between the
        two sub-images (Huang et al. 2021).
    cell : int
        Neighbor2Neighbor: the sub-images take two pixels ``cell / 2`` apart from every
        ``cell × cell`` cell (2: adjacent pixels, as in the paper; 4, 6 or 8 for noise that is
        correlated between neighbours, like ``mask_block`` for Self2Self).
    patch : int
        Patch size in px (a multiple of ``cell`` for Neighbor2Neighbor, whose sub-images are ``cell``
        times smaller).
    batch_size : int
        Patches per step.
    lr : float
        Adam learning rate, cosine-decayed to 5 % over ``steps``.
    min_valid : float
        Patches with a smaller fraction of finite pixels are redrawn.
    checkpoint_every, log_every : int
        Steps between checkpoints (with previews) and between history rows.
    seed : int
        Seed of weights, patches, flips and masks: a run is reproducible.
    precision : {"float32", "auto", "mixed_bfloat16"}
        Keras dtype policy of the network (:func:`resolve_precision`); Neighbor2Neighbor only, Self2Self
        runs in float32. The normalisation, the last layer and the loss stay float32.
    """

    method: str = "self2self"
    steps: int = 2000
    keep_prob: float = SELF2SELF_KEEP_PROB
    mask_block: int = 1
    gamma: float = 2.0
    cell: int = 2
    patch: int = 64
    batch_size: int = 8
    lr: float = 1e-3
    min_valid: float = 0.5
    checkpoint_every: int = 250
    log_every: int = 50
    seed: int = 0
    precision: str = "float32"

    def __post_init__(self):
        check_fields(self, [
            ("precision", self.precision == "float32" or (self.method == "neighbor2neighbor" and self.precision in
                                                          ("auto", "mixed_bfloat16")),
             "float32 (Self2Self), or auto or mixed_bfloat16 for neighbor2neighbor"),
            ("method", self.method in ONE_IMAGE_METHODS, f"one of {', '.join(ONE_IMAGE_METHODS)}"),
            ("steps", isinstance(self.steps, int) and self.steps >= 1, "an integer >= 1"),
            ("gamma", isinstance(self.gamma, (int, float)) and 0 <= self.gamma <= 100, "in [0, 100]"),
            ("cell", self.cell in (2, 4, 6, 8) and isinstance(self.cell, int), "2, 4, 6 or 8"),
            ("keep_prob", isinstance(self.keep_prob, (int, float)) and 0 < self.keep_prob < 1, "in (0, 1)"),
            ("mask_block", isinstance(self.mask_block, int) and 1 <= self.mask_block <= 8, "an integer in [1, 8]"),
            ("patch", isinstance(self.patch, int) and self.patch >= 16
             and (self.method == "self2self" or self.patch % self.cell == 0),
             "an integer >= 16, for neighbor2neighbor a multiple of cell"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
            ("lr", isinstance(self.lr, (int, float)) and 0 < self.lr < 1, "in (0, 1)"),
            ("min_valid", isinstance(self.min_valid, (int, float)) and 0 < self.min_valid <= 1, "in (0, 1]"),
            ("checkpoint_every", isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 1,
             "an integer >= 1"),
            ("log_every", isinstance(self.log_every, int) and self.log_every >= 1, "an integer >= 1"),
            ("seed", isinstance(self.seed, int), "an integer"),
        ])



def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), set())
    except OSError:
        return set()


def resolve_precision(precision: str, has_gpu: bool) -> str:
    """The dtype policy ``auto`` stands for on this machine.

    ``mixed_bfloat16`` where the hardware computes bfloat16 natively (a GPU, or a CPU
    with AVX512-BF16 / AMX), else ``float32``: on CPUs without it, bfloat16 is
    emulated and a ResUNet training step measured 3.8x *slower* than float32 (AMD
    EPYC, AVX2, TensorFlow 2.21).
    """
    if precision != "auto":
        return precision
    if has_gpu or _cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return "mixed_bfloat16"
    return "float32"
