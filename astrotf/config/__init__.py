"""Settings of every stage as frozen dataclasses, and recipes (``pipelines/*.toml``) mapped onto them.

Importing this package never imports TensorFlow or Keras, so the CLI validates a
recipe in a fraction of a second before the slow imports.

A Pix2Pix recipe (:class:`Pix2PixRecipe`) has a ResUNet recipe's tables plus
``[discriminator]`` (:class:`DiscriminatorConfig`) and ``[gan]`` (:class:`AdversarialConfig`).

A ResUNet recipe (:class:`Recipe`) has four tables, one per stage: ``[model]``
(:class:`ModelConfig`), ``[data]`` (:class:`DataConfig`, with ``[data.astropics]``,
``[data.physical]``, ``[data.detector]``, ``[data.star_mask]``), ``[loss]`` (:class:`LossConfig`) and
``[train]`` (:class:`TrainConfig`). A Self2Self recipe (:class:`Self2SelfRecipe`) has
``[model]`` and ``[train]``. Each table is validated by its dataclass; unknown keys
are errors, so a typo never silently falls back to a default.

The modules: :mod:`astrotf.config.data`, :mod:`astrotf.config.model`,
:mod:`astrotf.config.training`; everything public is importable from here.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from pathlib import Path

from astrotf.config.data import AstroPicsNoiseConfig, DataConfig, DetectorNoiseConfig, PhysicalNoiseConfig, StarMaskConfig
from astrotf.config.gan import AdversarialConfig, DiscriminatorConfig
from astrotf.config.model import ModelConfig, Self2SelfModelConfig
from astrotf.config.training import PRECISIONS, LossConfig, Self2SelfTrainConfig, TrainConfig, resolve_precision
from astrotf.errors import AstroTFError
from astrotf.models import registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "PIPELINES", "PRECISIONS", "AdversarialConfig", "AstroPicsNoiseConfig", "DataConfig", "DetectorNoiseConfig", "DiscriminatorConfig",
    "LossConfig", "ModelConfig", "PhysicalNoiseConfig", "Pix2PixRecipe", "Recipe", "Self2SelfModelConfig", "Self2SelfRecipe", "Self2SelfTrainConfig",
    "StarMaskConfig", "TrainConfig", "load_recipe", "load_pix2pix_recipe", "load_self2self_recipe", "override",
    "pix2pix_recipe_from_dict", "read_toml", "recipe_from_dict", "resolve_precision", "resolve_recipe_path", "self2self_recipe_from_dict",
]

#: The recipes shipped with astrotf.
PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"

#: The recipe of ``astrotf train resunet`` without ``--config``.
DEFAULT_RESUNET_RECIPE = "resunet-rgb"

#: The recipe of ``astrotf train pix2pix`` without ``--config``.
DEFAULT_PIX2PIX_RECIPE = "pix2pix-rgb"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything a ResUNet-style training run needs besides its data folder."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        conditioned = bool(self.model.kwargs().get("noise_map"))
        if conditioned != (self.data.noise == "detector"):
            raise AstroTFError(
                f"[model] noise_map = {str(conditioned).lower()} and [data] noise = '{self.data.noise}' do not go "
                "together: a noise-conditioned model needs the σ map of noise = 'detector', and only it takes one")
        if self.loss.kind == "science" and not conditioned:
            raise AstroTFError("[loss] kind = 'science' measures errors in units of the input's σ map: it needs "
                               "[model] noise_map = true")

    def to_dict(self) -> dict:
        """Nested dicts, as in a recipe file (the ``[model]`` table flat)."""
        return {f.name: _table(getattr(self, f.name)) for f in dataclasses.fields(self)}


#: The network each one-image method trains (``[train] method`` -> ``[model] name``).
ONE_IMAGE_NETWORKS = {"self2self": "self2self", "neighbor2neighbor": "resunet"}


@dataclasses.dataclass(frozen=True)
class Self2SelfRecipe:
    """A one-image (TDR) recipe, ``pipelines/self2self-*.toml`` or ``pipelines/neighbor2neighbor-*.toml``:
    a ``[model]`` and a ``[train]`` table.

    Raises
    ------
    AstroTFError
        A network that the ``[train] method`` cannot train, or a Neighbor2Neighbor ResUNet without
        ``normalization = "fixed"``.
    """

    model: Self2SelfModelConfig = Self2SelfModelConfig()
    train: Self2SelfTrainConfig = Self2SelfTrainConfig()

    def __post_init__(self):
        method, network = self.train.method, ONE_IMAGE_NETWORKS[self.train.method]
        if self.model.name != network:
            raise AstroTFError(f"[train] method = '{method}' trains a '{network}' network, not [model] name = "
                               f"'{self.model.name}'")
        normalization = self.model.arguments.get("normalization")
        if network == "resunet" and (normalization != "fixed" or self.model.arguments.get("noise_map")):
            raise AstroTFError("[model] a Neighbor2Neighbor ResUNet takes linear data with one normalisation for "
                               "every tile: set normalization = 'fixed' (and no noise_map)")

    def to_dict(self) -> dict:
        """Nested dicts, as in a recipe file (the ``[model]`` table flat)."""
        return {f.name: _table(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class Pix2PixRecipe:
    """``pipelines/pix2pix-*.toml``: a ResUNet recipe's tables, ``[discriminator]`` and ``[gan]`` (Xu §3).

    ``[model]`` is the generator: the enhanced Pix2Pix generator by default, or any other
    single-input denoiser of the registry (a ResUNet trained adversarially). ``[loss]`` is used with
    ``[gan] reconstruction = "astropics"`` only.

    Raises
    ------
    AstroTFError
        A generator that is not a single-input denoiser, channels that differ between the
        generator, the discriminator and the data, or a discriminator whose patch does not fit
        in the tile.
    """

    model: ModelConfig = ModelConfig(name="pix2pix")
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    gan: AdversarialConfig = AdversarialConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        args = self.model.kwargs()
        if self.data.noise == "detector" or self.loss.kind == "science":
            raise AstroTFError("[data] noise = 'detector' and [loss] kind = 'science' are for noise-conditioned "
                               "models, which the GAN trainer does not take")
        if self.model.name == "self2self" or args.get("noise_map"):
            setting = "name = 'self2self'" if self.model.name == "self2self" else "noise_map = true"
            raise AstroTFError(f"[model] {setting}: the GAN trainer takes single-input denoisers "
                               "(pix2pix, resunet, nafnet)")
        channels = args.get("channels", (registry.constructor_arguments(self.model.name) or {}).get("channels"))
        if "channels" not in self.discriminator.arguments:  # the discriminator sees the generator's images
            object.__setattr__(self, "discriminator", self.discriminator.replace(channels=channels))
        d_channels = self.discriminator.arguments["channels"]
        if not channels == d_channels == self.data.channels:
            raise AstroTFError(f"[model] channels = {channels}, [discriminator] channels = {d_channels} and "
                               f"[data] channels = {self.data.channels} must be equal")
        field = self.discriminator.receptive_field()
        if field is not None and field > self.data.tile:
            n_layers = self.discriminator.arguments.get("n_layers", 3)
            raise AstroTFError(f"[discriminator] n_layers = {n_layers} judges {field} px patches, larger than the "
                               f"{self.data.tile} px tile ([data] tile / --tile); lower n_layers or raise the tile")

    def to_dict(self) -> dict:
        """Nested dicts, as in a recipe file (the ``[model]`` and ``[discriminator]`` tables flat)."""
        return {f.name: _table(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _table(config) -> dict:
    return config.to_dict() if isinstance(config, ModelConfig) else dataclasses.asdict(config)


def _build(cls, values: dict, where: str):
    """``cls`` from a table, sub-tables built recursively; errors become one-line AstroTFErrors naming ``where``."""
    if not isinstance(values, dict):
        raise AstroTFError(f"{where}: expected a table, got {values!r}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        if issubclass(cls, ModelConfig):
            return cls.from_table(values)
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise AstroTFError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        kwargs = {k: _build(hints[k], v, f"{where}.{k}") if dataclasses.is_dataclass(hints[k]) else v
                  for k, v in values.items()}
        return cls(**kwargs)
    except AstroTFError as err:
        if str(err).startswith(f"{where}."):
            raise
        raise AstroTFError(f"{where}: {err}") from None
    except (TypeError, ValueError) as err:
        raise AstroTFError(f"{where}: {err}") from None


def recipe_from_dict(values: dict, source: str = "recipe") -> Recipe:
    """Build a validated :class:`Recipe` from nested dicts (TOML or a run's ``run.json``)."""
    return _build(Recipe, values, source)


def pix2pix_recipe_from_dict(values: dict, source: str = "recipe") -> Pix2PixRecipe:
    """Build a validated :class:`Pix2PixRecipe`; unknown keys are errors naming ``source``."""
    return _build(Pix2PixRecipe, values, source)


def load_pix2pix_recipe(path: str | os.PathLike) -> Pix2PixRecipe:
    """Read a Pix2Pix recipe (TOML). Raises AstroTFError naming the file."""
    return pix2pix_recipe_from_dict(read_toml(path), str(path))


def self2self_recipe_from_dict(values: dict, source: str = "recipe") -> Self2SelfRecipe:
    """Build a validated :class:`Self2SelfRecipe`; unknown keys are errors naming ``source``."""
    return _build(Self2SelfRecipe, values, source)


def read_toml(path: str | os.PathLike) -> dict:
    """The tables of a recipe file.

    Raises
    ------
    AstroTFError
        Missing file or invalid TOML, naming the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise AstroTFError(f"{path}: recipe not found") from None
    except tomllib.TOMLDecodeError as err:
        raise AstroTFError(f"{path}: invalid TOML ({err})") from None


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a ``pipelines/*.toml`` ResUNet recipe.

    Raises
    ------
    AstroTFError
        Missing file, invalid TOML, unknown keys or invalid values, naming the file.
    """
    return recipe_from_dict(read_toml(path), str(path))


def load_self2self_recipe(path: str | os.PathLike) -> Self2SelfRecipe:
    """Read a Self2Self recipe (TOML). Raises AstroTFError naming the file."""
    return self2self_recipe_from_dict(read_toml(path), str(path))


def resolve_recipe_path(config: str | None) -> Path | None:
    """The file of ``--config``: a path, or the name of a shipped recipe (``resunet-rgb``)."""
    if config is None:
        return None
    path = Path(config)
    if not path.exists() and not path.suffix and (PIPELINES / f"{config}.toml").exists():
        path = PIPELINES / f"{config}.toml"
    return path


def override(recipe, **changes):
    """Apply CLI overrides given as ``section__field=value`` (``None`` values are ignored).

    Works on :class:`Recipe`, :class:`Pix2PixRecipe` and :class:`Self2SelfRecipe`; ``model__x``
    changes the model's constructor argument ``x``.

    Raises
    ------
    AstroTFError
        A value its config rejects.
    """
    sections: dict[str, dict] = {}
    for key, value in changes.items():
        if value is not None:
            section, field = key.split("__", 1)
            sections.setdefault(section, {})[field] = value
    updated = {}
    for section, fields in sections.items():
        config = getattr(recipe, section)
        try:
            if isinstance(config, ModelConfig):
                updated[section] = config.replace(**fields)
            else:
                updated[section] = dataclasses.replace(config, **fields)
        except ValueError as err:
            raise AstroTFError(f"bad option value: {err}") from None
    return dataclasses.replace(recipe, **updated)  # a recipe's own checks raise AstroTFError
