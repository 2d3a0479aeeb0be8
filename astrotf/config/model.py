"""Settings of the model stage: a registered model's name and its constructor arguments.

There is no second set of defaults: an argument a recipe leaves out takes the default
of the model's constructor (:class:`astrotf.models.resunet.ResUNet`, ...), and a run
records the arguments completed with those defaults
(:func:`astrotf.models.registry.resolve_arguments`). The argument names and the types of
their literal defaults are read from the constructor's source without importing
TensorFlow, so a typo in ``[model]`` is reported before the slow imports; the
constructor checks the values again when the model is built.
"""

from __future__ import annotations

import dataclasses
import numbers

from astrotf.models import registry

#: Checks of arguments many models share, applied wherever a model has the argument:
#: ``name -> (ok(value), expected)``.
COMMON_CHECKS = {
    "channels": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "depth": (lambda v: _is_int(v) and 1 <= v <= 6, "an integer in [1, 6]"),
    "base_filters": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "space_to_depth": (lambda v: v in (1, 2, 4) and _is_int(v), "1, 2 or 4"),
    "dropout": (lambda v: _is_real(v) and 0 <= v < 1, "in [0, 1)"),
}


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _same_kind(value, default) -> bool:
    """Whether ``value`` may replace a literal ``default`` (an int for an int, a number for a float, ...)."""
    if default is registry.UNKNOWN:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return _is_int(value)
    if isinstance(default, float):
        return _is_real(value)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(default))


def check_arguments(name: str, arguments: dict, optional: tuple[str, ...] = ()) -> None:
    """Check argument names and types against the constructor of model ``name``, without TensorFlow.

    Parameters
    ----------
    name : str
        A registered model name.
    arguments : dict
        Constructor arguments from a recipe.
    optional : tuple of str
        Arguments that may be None (a trainer fills them in).

    Raises
    ------
    ValueError
        Unknown argument, or a value of the wrong type or range, in Keras' wording.
    """
    known = registry.constructor_arguments(name)
    if known is not None:
        unknown = sorted(set(arguments) - set(known))
        if unknown:
            msg = (f"unknown argument(s) {', '.join(unknown)} of model {name!r}; known: name, "
                   f"{', '.join(known)}")
            raise ValueError(msg)
    for key, value in arguments.items():
        if value is None and key in optional:
            continue
        ok, expected = COMMON_CHECKS.get(key, (None, None))
        if ok is None and known is not None and not _same_kind(value, known[key]):
            ok, expected = (lambda v: False), f"of the type of its default {known[key]!r}"
        if ok is not None and not ok(value):
            msg = f"`{key}` must be {expected}. Received: {key}={value!r}"
            raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The ``[model]`` table: a model name of :mod:`astrotf.models.registry` and its constructor arguments.

    Parameters
    ----------
    name : str
        Registered model name (``"resunet"``, ``"self2self"``, ...).
    arguments : dict
        Keyword arguments of the model's constructor; the others take its defaults.

    Raises
    ------
    ValueError
        Unknown model name (the message lists the choices), unknown argument, or a
        value of the wrong type.
    """

    name: str = "resunet"
    arguments: dict = dataclasses.field(default_factory=dict)

    #: Arguments that may be None in the recipe (filled in by the trainer).
    optional = ()
    #: The registry table ``name`` is looked up in.
    choices = registry.MODELS

    def __post_init__(self):
        registry.check_name(self.name, self.choices)
        object.__setattr__(self, "arguments", dict(self.arguments))
        check_arguments(self.name, self.arguments, self.optional)

    @classmethod
    def from_table(cls, table: dict) -> ModelConfig:
        """From a flat ``[model]`` table (``name`` and arguments side by side, as in TOML and run.json)."""
        own = {f.name for f in dataclasses.fields(cls)} - {"arguments"}
        return cls(**{k: v for k, v in table.items() if k in own},
                   arguments={k: v for k, v in table.items() if k not in own})

    def to_dict(self) -> dict:
        """The flat ``[model]`` table."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "arguments"}
        return {"name": own.pop("name"), **self.arguments, **own}

    def kwargs(self) -> dict:
        """The constructor arguments."""
        return dict(self.arguments)

    def replace(self, **arguments) -> ModelConfig:
        """A copy with some constructor arguments changed (CLI overrides)."""
        return dataclasses.replace(self, arguments={**self.arguments, **arguments})

    def resolved(self) -> ModelConfig:
        """The same model with every constructor argument spelled out (imports the model class)."""
        return dataclasses.replace(self, arguments=registry.resolve_arguments(self.name, self.arguments))


#: The networks a one-image recipe can train: Self2Self's, and a ResUNet for Neighbor2Neighbor.
ONE_IMAGE_MODELS = ("self2self", "resunet")


@dataclasses.dataclass(frozen=True)
class Self2SelfModelConfig(ModelConfig):
    """The ``[model]`` table of a one-image recipe: the arguments of
    :class:`astrotf.models.self2self.Self2Self` (``method = "self2self"``) or of
    :class:`astrotf.models.resunet.ResUNet` (``method = "neighbor2neighbor"``, with
    ``normalization = "fixed"``), and how the data normalisation is chosen.

    ``offset`` / ``scale`` left out (or None) are measured on the training image: the
    median of its finite pixels and ``scale_sigmas`` times their MAD-sigma.
    ``channels`` is taken from the image.
    """

    name: str = "self2self"
    scale_sigmas: float = 10.0

    optional = ("offset", "scale")

    def __post_init__(self):
        if self.name not in ONE_IMAGE_MODELS:
            msg = f"`name` must be one of {', '.join(ONE_IMAGE_MODELS)}. Received: name={self.name!r}"
            raise ValueError(msg)
        if not (_is_real(self.scale_sigmas) and self.scale_sigmas > 0):
            msg = f"`scale_sigmas` must be > 0. Received: scale_sigmas={self.scale_sigmas!r}"
            raise ValueError(msg)
        scale = self.arguments.get("scale")
        if scale is not None and not (_is_real(scale) and scale > 0):
            msg = f"`scale` must be None or > 0. Received: scale={scale!r}"
            raise ValueError(msg)
        super().__post_init__()
