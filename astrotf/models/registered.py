"""Importing this module imports every model of :data:`astrotf.models.registry.MODELS` (and the
discriminators), which registers them (and their layers) with Keras, so that
``keras.saving.load_model`` finds the classes named in a ``.keras`` file."""

from __future__ import annotations

from astrotf.models.registry import DISCRIMINATORS, MODELS, model_class

CLASSES = {name: model_class(name) for name in {**MODELS, **DISCRIMINATORS}}
