"""Model names used by recipes and the CLI, mapped to their classes.

Importing this module does not import TensorFlow: :data:`MODELS` names each class as a
``"module:Class"`` string, so a recipe's ``[model]`` table is checked (name, argument
names and types, read from the constructor's source) before the slow imports.
:func:`model_class` imports a class when it is needed; importing
:mod:`astrotf.models.registered` imports (and so registers with Keras) all of them.

Adding a model is one line in :data:`MODELS`; its constructor's named arguments are then
the keys its ``[model]`` table accepts.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import os

#: Model name -> ``"module:Class"`` of a Keras model whose constructor arguments are its settings.
MODELS = {
    "resunet": "astrotf.models.resunet:ResUNet",
    "nafnet": "astrotf.models.nafnet:NAFNet",
    "self2self": "astrotf.models.self2self:Self2Self",
    "pix2pix": "astrotf.models.pix2pix:Pix2PixGenerator",
}

#: Architectures whose output at a pixel depends on the whole tile, with the reason: inference tiles
#: them at their training tile, the context they learned, rather than at the largest tile that pays.
TILE_DEPENDENT = {
    "pix2pix": "self-attention over all positions of the bottleneck",
    "nafnet": "simplified channel attention averages each feature map over the tile",
}

#: Discriminators of the GAN trainer (``[discriminator]`` of a Pix2Pix recipe): not denoisers, so
#: not in :data:`MODELS`, but looked up, checked and built the same way.
DISCRIMINATORS = {
    "patchgan": "astrotf.models.patchgan:PatchGANDiscriminator",
}

#: Constructor keyword arguments that are not settings of the architecture.
NOT_SETTINGS = ("self", "name", "dtype", "trainable", "kwargs")

#: Default of an argument whose default is not a literal (left to the constructor to check).
UNKNOWN = object()


def check_name(name: str, choices: dict | None = None) -> None:
    """Raise ``ValueError`` naming the choices if ``name`` is not in ``choices`` (default :data:`MODELS`)."""
    choices = MODELS if choices is None else choices
    if name not in choices:
        msg = f"`name` must be one of {sorted(choices)}. Received: name={name!r}"
        raise ValueError(msg)


def _target(name: str) -> str:
    """``"module:Class"`` of a registered model or discriminator."""
    check_name(name, {**MODELS, **DISCRIMINATORS})
    return {**MODELS, **DISCRIMINATORS}[name]


def model_class(name: str) -> type:
    """The model (or discriminator) class registered as ``name`` (imports it, and so TensorFlow)."""
    module, cls = _target(name).split(":")
    return getattr(importlib.import_module(module), cls)


@functools.lru_cache(maxsize=None)
def constructor_arguments(name: str) -> dict | None:
    """Named arguments of the model's ``__init__`` and their defaults, read from its source.

    Parameters
    ----------
    name : str
        A registered model name.

    Returns
    -------
    dict or None
        ``{argument: default}`` (:data:`UNKNOWN` where the default is not a literal, or
        the argument has none), without :data:`NOT_SETTINGS`; None if the source has no
        explicit ``__init__`` (then only :func:`resolve_arguments` can check).
    """
    module, cls = _target(name).split(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not os.path.isfile(spec.origin):
        return None
    with open(spec.origin, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
    init = next((n for n in (node.body if node else []) if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
                None)
    if init is None:
        return None
    args = init.args.args + init.args.kwonlyargs
    defaults = [UNKNOWN] * (len(init.args.args) - len(init.args.defaults)) + list(init.args.defaults)
    defaults += list(init.args.kw_defaults)
    found = {}
    for arg, default in zip(args, defaults):
        if arg.arg in NOT_SETTINGS:
            continue
        try:
            found[arg.arg] = UNKNOWN if default in (UNKNOWN, None) else ast.literal_eval(default)
        except ValueError:
            found[arg.arg] = UNKNOWN
    return found


def resolve_arguments(name: str, arguments: dict) -> dict:
    """Every constructor argument of the model: ``arguments`` completed with the defaults.

    Imports the class and binds ``arguments`` to its signature, so this is the final
    check of the argument names. The result is what a run records: a later change of
    a constructor default does not change what an earlier run meant.

    Raises
    ------
    ValueError
        Unknown name or argument, or a missing required argument.
    """
    signature = inspect.signature(model_class(name))
    params = {k: p for k, p in signature.parameters.items()
              if k not in NOT_SETTINGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(arguments) - set(params))
    if unknown:
        msg = f"unknown argument(s) {', '.join(unknown)} of model {name!r}; known: {', '.join(params)}"
        raise ValueError(msg)
    missing = [k for k, p in params.items() if p.default is p.empty and k not in arguments]
    if missing:
        msg = f"model {name!r} needs argument(s) {', '.join(missing)}"
        raise ValueError(msg)
    return {k: arguments.get(k, p.default) for k, p in params.items()}


def build_model(name: str, dtype=None, **kwargs):
    """Instantiate a registered model by name (``"resunet"``) with its constructor arguments.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    dtype : str or keras.DTypePolicy, optional
        Dtype policy of the model's layers (``"mixed_bfloat16"``: bfloat16 compute,
        float32 weights); the models keep their last layer and residual sum in float32.
        None: Keras' global policy.
    **kwargs
        Constructor arguments.
    """
    return model_class(name)(**kwargs, dtype=dtype)


#: Whether ``.keras`` files may hold Python code (Lambda layers), run when they load: Keras'
#: ``safe_mode`` is off only after :func:`allow_unsafe_models` (``--unsafe-model``).
_UNSAFE = []


def allow_unsafe_models() -> None:
    """Let :func:`load_model` load ``.keras`` files that hold Python code (``--unsafe-model``)."""
    _UNSAFE.append(True)


def load_model(path: str | os.PathLike, dtype=None, *, safe_mode: bool | None = None):
    """Load a ``.keras`` model of any registered class, built with the ``dtype`` policy.

    The saved configs hold no dtype (the policy is chosen where the model runs):
    ``dtype=None`` takes Keras' global policy, like :func:`keras.saving.load_model`;
    ``"float32"`` gives a float32 model whatever the global policy is.

    Parameters
    ----------
    path : path
    dtype : str, optional
    safe_mode : bool, optional
        Keras' ``safe_mode``: refuse Python code (a ``Lambda`` layer's bytecode) in the file, which
        would run on load. None: True unless :func:`allow_unsafe_models` was called.

    Raises
    ------
    AstroTFError
        A file holding Python code in safe mode; a model class this version of astrotf does not know.
    """
    import keras

    import astrotf.models.registered  # noqa: F401  (registers the custom classes)
    from astrotf.errors import AstroTFError

    _check_architecture(path)
    safe_mode = not _UNSAFE if safe_mode is None else safe_mode
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except ValueError as err:
        if "safe_mode" not in str(err):
            raise
        raise AstroTFError(f"{path}: holds Python code (a Lambda layer) that would run on load; "
                           "pass --unsafe-model only if you trust where it comes from") from None
    if dtype is None or keras.dtype_policies.get(dtype).name == keras.config.dtype_policy().name:
        return model  # built under the global policy, which is the one asked for
    rebuilt = type(model).from_config({**model.get_config(), "dtype": dtype})
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _check_architecture(path) -> None:
    """Refuse, naming it, a ``.keras`` file whose top-level class is an ``astrotf`` one this version lacks
    (a model of a newer astrotf), before Keras fails on it with its whole config."""
    import json
    import zipfile

    from astrotf.errors import AstroTFError

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return  # not ours to judge: Keras says what is wrong with the file
    registered = str(config.get("registered_name") or "")
    known = {target.split(":")[1] for target in {**MODELS, **DISCRIMINATORS}.values()}
    if registered.startswith("astrotf>") and registered.split(">", 1)[1] not in known:
        from astrotf import __version__

        raise AstroTFError(f"{path}: its architecture {registered.split('>', 1)[1]} is not known to astrotf "
                           f"{__version__} (known: {', '.join(sorted(known))}); a newer astrotf may read it")
