"""TensorFlow backend: a ``.keras`` file (float32 or bfloat16) or a SavedModel, Self2Self included.

A model folder with ``model.keras`` and a SavedModel runs the SavedModel in float32 and
the ``.keras`` file in bfloat16 (Keras' ``mixed_bfloat16`` policy: the input, the global
residual sum and the output stay float32). Self2Self models (image + keep mask inputs,
dropout at test time) come back wrapped in their seeded ensemble
(:func:`astrotf.ensemble.with_ensemble`). Noise-conditioned models (image + noise σ inputs)
predict ``(tiles, sigma_tiles)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from astrotf.backends import LoadedModel, record_inputs
from astrotf.constants import INPUT_NAME, NOISE_INPUT_NAME, SELF2SELF_KEEP_PROB, SELF2SELF_SAMPLES
from astrotf.errors import AstroTFError


def saved_model_dir(path: Path) -> Path | None:
    """``path`` itself if it holds a SavedModel, else its newest numbered version folder that does."""
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted((p for p in path.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if versions and (versions[-1] / "saved_model.pb").is_file():
        return versions[-1]
    return None


def load_tensorflow(path: Path, metadata: dict, precision: str) -> LoadedModel:
    """A model folder, training run, SavedModel or ``.keras`` file run by TensorFlow in ``precision``.

    Parameters
    ----------
    path : Path
        Resolved model path (see :func:`astrotf.backends.resolve_model_path`).
    metadata : dict
        The model's ``metadata.json`` (may be empty); completed with what the model says.
    precision : {"float32", "bfloat16"}

    Raises
    ------
    AstroTFError
        A folder without a model, bfloat16 without a ``.keras`` file, an unreadable archive.
    """
    if path.is_dir() and (path / "model.keras").is_file() and (
            saved_model_dir(path) is None or precision == "bfloat16"):
        path = path / "model.keras"
    if path.is_dir() and (path / "run.json").is_file() and (path / "model_best.keras").is_file():
        path = path / "model_best.keras"  # a training run directory
    if path.is_dir() and precision == "bfloat16":
        raise AstroTFError(f"{path}: bfloat16 needs the model's .keras file (none here); use --precision float32")
    if path.is_dir():
        saved = saved_model_dir(path)
        if saved is None:
            raise AstroTFError(f"{path}: neither a SavedModel (saved_model.pb) nor a folder with model.keras")
        return _load_saved_model(saved, path, metadata)
    return _load_keras_file(path, metadata, precision)


def _load_saved_model(saved: Path, path: Path, metadata: dict) -> LoadedModel:
    """The ``serving_default`` signature of the SavedModel in ``saved`` (``path``: the folder named)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved))
    serve = loaded.signatures["serving_default"]
    if "mask" in serve.structured_input_signature[1]:  # Self2Self: image + keep mask
        return _self2self_saved_model(serve, path, metadata)
    inputs = serve.structured_input_signature[1]
    (output_name,) = serve.structured_outputs.keys()
    image = INPUT_NAME if INPUT_NAME in inputs else next(iter(inputs))  # a lone input, whatever its name
    if record_inputs(metadata, list(inputs) if len(inputs) > 1 else [INPUT_NAME], saved):
        def predict(batch, sigma):
            return serve(**{INPUT_NAME: tf.constant(batch, tf.float32),
                            NOISE_INPUT_NAME: tf.constant(sigma, tf.float32)})[output_name].numpy()
    else:
        def predict(batch):
            return serve(**{image: tf.constant(batch, tf.float32)})[output_name].numpy()

    if "channels" not in metadata:
        metadata["channels"] = int(inputs[image].shape[-1])
    return LoadedModel(metadata.get("name", path.name), predict, metadata)


def _load_keras_file(path: Path, metadata: dict, precision: str) -> LoadedModel:
    """A ``.keras`` file built under the float32 or ``mixed_bfloat16`` policy."""
    import tensorflow as tf

    from astrotf.models.registry import load_model as load_keras_model

    if path.suffix != ".keras":
        raise AstroTFError(f"{path}: not a model (expected a .keras file or a SavedModel folder)")
    try:  # the configs hold no dtype: the model is built with the policy of the precision asked for
        model = load_keras_model(path, dtype="mixed_bfloat16" if precision == "bfloat16" else "float32")
    except AstroTFError:
        raise
    except Exception as err:  # keras raises many types for a bad archive
        raise AstroTFError(f"{path}: cannot be loaded as a Keras model ({str(err).splitlines()[0]})") from None
    if type(model).__name__ == "Self2Self":
        if precision != "float32":
            raise AstroTFError(f"{path}: Self2Self models run in float32 only (--precision)")
        return _self2self_keras(model, path, metadata)
    if record_inputs(metadata, [t.name for t in model.inputs] if len(model.inputs) > 1 else [INPUT_NAME], path):
        fn = tf.function(lambda x, s: model([x, s], training=False), reduce_retracing=True)

        def predict(batch, sigma):
            return fn(tf.constant(batch, tf.float32), tf.constant(sigma, tf.float32)).numpy()
    else:
        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

        def predict(batch):
            return fn(tf.constant(batch, tf.float32)).numpy()

    metadata.setdefault("channels", int(model.inputs[0].shape[-1]))
    _from_run(path, metadata)
    if getattr(model, "normalization", "none") == "background":
        metadata.setdefault("data_domain", "linear")
        metadata.setdefault("normalization", {"kind": "background", "inside_model": True})
    elif getattr(model, "normalization", "none") == "fixed":
        metadata.setdefault("data_domain", "linear")
        metadata.setdefault("normalization", {"kind": "fixed", "inside_model": True, "offset": model.offset,
                                              "scale": model.scale})

    name = metadata.get("name", path.parent.name if path.name == "model.keras" else path.stem)
    return LoadedModel(name, predict, metadata, precision=precision)


def _from_run(path: Path, metadata: dict) -> None:
    """A training run's ``.keras`` file (no ``metadata.json``): its architecture and training tile from
    the run's ``run.json``, as an export would record them."""
    run_file = path.parent / "run.json"
    if not run_file.is_file():
        return
    try:
        recipe = json.loads(run_file.read_text()).get("recipe", {})
    except (OSError, ValueError):
        return
    if isinstance(recipe.get("model"), dict):
        metadata.setdefault("architecture", recipe["model"])
    if isinstance(recipe.get("train"), dict) and "method" in recipe["train"]:
        metadata.setdefault("one_image_method", recipe["train"]["method"])
    if isinstance(recipe.get("data"), dict) and "tile" in recipe["data"]:
        metadata.setdefault("tile", int(recipe["data"]["tile"]))


# ----------------------------------------------------------------------------- Self2Self
def _self2self_loaded(name: str, sample: Callable, metadata: dict, reseed=None) -> LoadedModel:
    """A Self2Self model wrapped in its seeded ensemble of ``metadata["ensemble"]["samples"]`` passes."""
    from astrotf.ensemble import with_ensemble

    metadata.setdefault("data_domain", "linear")
    loaded = LoadedModel(name, sample, metadata, sample=sample, reseed=reseed)
    return with_ensemble(loaded, samples=int(metadata.get("ensemble", {}).get("samples", SELF2SELF_SAMPLES)))


def _self2self_saved_model(serve, path: Path, metadata: dict) -> LoadedModel:
    import tensorflow as tf

    (output_name,) = serve.structured_outputs.keys()
    metadata.setdefault("channels", int(serve.structured_input_signature[1]["image"].shape[-1]))

    def sample(batch, mask):
        return serve(image=tf.constant(batch, tf.float32), mask=tf.constant(mask, tf.float32))[output_name].numpy()

    states = sorted((v for v in serve.variables if "seed_generator_state" in v.name), key=lambda v: v.name)

    def reseed(seed: int) -> None:
        _reseed_states(states, seed)

    return _self2self_loaded(metadata.get("name", path.name), sample, metadata, reseed if states else None)


def _reseed_states(states, seed: int) -> None:
    """Restart the dropout draws of a Self2Self model: one independent stream per dropout layer.

    A Keras seed generator's state is ``[seed, counter]`` and each draw increments the
    counter, so every layer gets its own first element (drawn from ``seed``) and counter 0.
    """
    firsts = np.random.default_rng(seed).integers(1, 2**31 - 1, len(states))
    for state, first in zip(states, firsts):
        state.assign(np.array([first, 0]).astype(state.dtype.as_numpy_dtype if hasattr(state.dtype, "as_numpy_dtype")
                                                   else state.dtype))


def _self2self_keras(model, path: Path, metadata: dict) -> LoadedModel:
    import tensorflow as tf

    from astrotf.layers.mc_dropout import MCDropout

    metadata.setdefault("channels", model.channels)
    if "ensemble" not in metadata and (path.parent / "run.json").is_file():  # a training run's model
        run = json.loads((path.parent / "run.json").read_text())
        train = run["recipe"].get("train", {})
        metadata.setdefault("training", {"data": run.get("data") or {}})  # its units, for the BUNIT check
        metadata["ensemble"] = {"keep_prob": train.get("keep_prob", SELF2SELF_KEEP_PROB),
                                "mask_block": train.get("mask_block", 1),
                                "samples": SELF2SELF_SAMPLES}
        metadata.setdefault("tile", 256)
    metadata.setdefault("ensemble", {"keep_prob": SELF2SELF_KEEP_PROB, "samples": SELF2SELF_SAMPLES})
    fn = tf.function(lambda x, m: model([x, m]), reduce_retracing=True)

    def sample(batch, mask):
        return fn(tf.constant(batch, tf.float32), tf.constant(mask, tf.float32)).numpy()

    def reseed(seed: int) -> None:
        states = [layer.seed_generator.state for layer in model.layers if isinstance(layer, MCDropout)]
        _reseed_states(states, seed)

    return _self2self_loaded(metadata.get("name", path.stem), sample, metadata, reseed)

