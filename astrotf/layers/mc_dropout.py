"""Dropout that stays on at test time (Monte-Carlo dropout), as Self2Self needs (TDR, Methods)."""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="astrotf")
class MCDropout(layers.Layer):
    """Inverted dropout applied on every call, in training and in inference.

    Self2Self uses dropout both to train many sub-networks at once and, at test time,
    to draw the ensemble members whose predictions are averaged (TDR eq. 4). Unlike
    :class:`keras.layers.Dropout` this layer ignores the ``training`` flag. The draws
    come from a :class:`keras.random.SeedGenerator`, so a model built or loaded after
    ``keras.utils.set_random_seed(s)`` gives the same sequence of draws for the same
    sequence of calls.

    Parameters
    ----------
    rate : float
        Probability in [0, 1) that an entry is set to zero; the others are scaled by
        ``1 / (1 - rate)``.
    seed : int, optional
        Seed of the layer's generator (default: drawn from Keras' global seed).
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            msg = f"`rate` must be in [0, 1). Received: rate={rate!r}"
            raise ValueError(msg)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x):
        if self.rate == 0.0:
            return x
        return keras.random.dropout(x, self.rate, seed=self.seed_generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
