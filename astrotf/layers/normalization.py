"""Reversible background normalisation for linear data, inside the model.

A linear frame (electrons, ADU, Gauss) is mapped per tile to ``(x - a) / s`` with
``a`` the median and ``s`` the MAD-based standard deviation of the tile, and mapped
back exactly after the network: ``y = a + s * f((x - a) / s)``. Flux stays in the
input's units, the background level is kept, and a SavedModel takes raw linear
data, so TF Serving clients need no pre-processing.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from astrotf.constants import MAD_TO_SIGMA


def background_stats(x, floor: float = 1e-6):
    """Per-sample robust location and scale of a batch of tiles.

    Parameters
    ----------
    x : tensor, shape (N, H, W, C)
        Linear data; must be finite.
    floor : float
        Lower bound of the scale, relative to ``1 + |median|``, so that flat tiles
        (padding, saturation) do not divide by zero.

    Returns
    -------
    offset, scale : tensors, shape (N, 1, 1, 1)
        Median and ``1.4826 * MAD`` over all pixels and channels of each tile.
    """
    x = ops.cast(x, "float32")
    flat = ops.reshape(x, (ops.shape(x)[0], -1))
    med = ops.median(flat, axis=1, keepdims=True)
    mad = ops.median(ops.abs(flat - med), axis=1, keepdims=True)
    scale = ops.maximum(MAD_TO_SIGMA * mad, floor * (1.0 + ops.abs(med)))
    return ops.reshape(med, (-1, 1, 1, 1)), ops.reshape(scale, (-1, 1, 1, 1))


@keras.saving.register_keras_serializable(package="astrotf")
class BackgroundNormalization(layers.Layer):
    """Return ``((x - a) / s, a, s)`` with the statistics of :func:`background_stats`."""

    def call(self, x):
        offset, scale = background_stats(x)
        return (ops.cast(x, "float32") - offset) / scale, offset, scale

    def compute_output_shape(self, input_shape):
        return input_shape, (input_shape[0], 1, 1, 1), (input_shape[0], 1, 1, 1)


@keras.saving.register_keras_serializable(package="astrotf")
class Denormalization(layers.Layer):
    """Exact inverse of :class:`BackgroundNormalization`: ``a + s * y``."""

    def call(self, y, offset, scale):
        return offset + scale * ops.cast(y, "float32")

    def compute_output_shape(self, y_shape, offset_shape, scale_shape):
        return y_shape
