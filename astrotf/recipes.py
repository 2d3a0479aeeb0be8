"""Training recipes: ``pipelines/*.toml`` mapped onto frozen dataclasses.

A recipe has four tables, one per stage — ``[model]``, ``[data]`` (with
``[data.astropics]``, ``[data.physical]``, ``[data.star_mask]``), ``[loss]`` and
``[train]`` — each mapped onto that stage's config dataclass, which validates it.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from pathlib import Path

from astrotf.data.pipeline import DataConfig
from astrotf.errors import AstroTFError, check_fields
from astrotf.losses import LossConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Model name in :mod:`astrotf.models.registry` and its constructor arguments."""

    name: str = "resunet"
    channels: int = 3
    depth: int = 3
    base_filters: int = 16
    activation: str = "relu"
    normalization: str = "none"
    space_to_depth: int = 1

    def kwargs(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}


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
        ]
        check_fields(self, checks)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything a training run needs besides its data folder."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise AstroTFError(f"{where}: expected a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise AstroTFError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in values.items():
        if dataclasses.is_dataclass(hints[key]):
            value = _build(hints[key], value, f"{where}.{key}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise AstroTFError(f"{where}: {err}") from None


def recipe_from_dict(values: dict, source: str = "recipe") -> Recipe:
    """Build a validated :class:`Recipe` from nested dicts (TOML or JSON)."""
    return _build(Recipe, values, source)


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a ``pipelines/*.toml`` recipe.

    Raises
    ------
    AstroTFError
        Missing file, invalid TOML, unknown keys or invalid values, naming the file.
    """
    return recipe_from_dict(read_toml(path), str(path))


def read_toml(path: str | os.PathLike) -> dict:
    """The tables of a recipe file. Raises AstroTFError naming the file if missing or not TOML."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise AstroTFError(f"{path}: recipe not found") from None
    except tomllib.TOMLDecodeError as err:
        raise AstroTFError(f"{path}: invalid TOML ({err})") from None


def override(recipe: Recipe, **changes) -> Recipe:
    """Apply CLI overrides given as ``section__field=value`` (``None`` values are ignored)."""
    sections: dict[str, dict] = {}
    for key, value in changes.items():
        if value is None:
            continue
        section, field = key.split("__", 1)
        sections.setdefault(section, {})[field] = value
    updated = {}
    for section, fields in sections.items():
        try:
            updated[section] = dataclasses.replace(getattr(recipe, section), **fields)
        except ValueError as err:
            raise AstroTFError(f"bad option value: {err}") from None
    return dataclasses.replace(recipe, **updated)


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
