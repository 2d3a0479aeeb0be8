"""Reversible normalisation of linear data, inside the model.

``"background"``: a linear frame (electrons, ADU, Gauss) is mapped per tile to ``(x - a) / s`` with
``a`` the median and ``s`` the MAD-based standard deviation of the tile, and mapped
back exactly after the network: ``y = a + s * f((x - a) / s)``. Flux stays in the
input's units, the background level is kept, and a SavedModel takes raw linear
data, so TF Serving clients need no pre-processing.

``"fixed"``: the same map with one ``(a, s)`` for every tile, chosen from the training data and
stored in the model's config: for data whose noise is the same in every tile, such as a
magnetogram in Gauss (:mod:`astrotf.train.neighbor2neighbor`). Tiles that are mostly blank
(off-disk) then keep the scale of the rest.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from astrotf.constants import MAD_TO_SIGMA
from astrotf.layers.blocks import CropLike


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


@keras.saving.register_keras_serializable(package="astrotf")
class NoiseNormalization(layers.Layer):
    """Scale a noise σ map like its image: ``sigma / s`` with the tile scale ``s`` of :class:`BackgroundNormalization`.

    No offset: σ is a spread, not a level, so under ``y = a + s * f((x - a) / s)`` the network sees
    the noise in the units of its normalised input (≈ 1 on the sky of a background-limited tile).
    """

    def call(self, sigma, scale):
        return ops.cast(sigma, "float32") / scale

    def compute_output_shape(self, sigma_shape, scale_shape):
        return sigma_shape


def denoiser_inputs(channels: int, normalization: str, noise_map: bool, offset: float = 0.0, scale: float = 1.0):
    """The input section shared by the denoisers: inputs, normalisation and the σ-map conditioning.

    Parameters
    ----------
    channels : int
        Image channels; the σ map has as many.
    normalization : {"none", "background", "fixed"}
        ``"background"``: the image goes through :class:`BackgroundNormalization` and the σ map
        through :class:`NoiseNormalization` with the same tile scale. ``"fixed"``: ``(x - offset) / scale``.
    noise_map : bool
        Add a second input ``noise_sigma`` (per-pixel σ in the image's units), concatenated to the
        (normalised) image as extra channels of what the network body sees.
    offset, scale : float
        The map of ``normalization="fixed"``, in the data's units.

    Returns
    -------
    inputs : keras.KerasTensor or list of two
        ``image``, or ``[image, noise_sigma]``.
    x : keras.KerasTensor
        The (normalised) image: what the global residual adds the correction to.
    body : keras.KerasTensor
        What the network body takes: ``x``, or ``x`` and the (scaled) σ map concatenated.
    stats : tuple or None
        ``(offset, scale)`` for :class:`Denormalization` (tensors, or floats for ``"fixed"``), None
        without normalisation.
    """
    image = keras.Input(shape=(None, None, channels), dtype="float32", name="image")
    x, stats = image, None
    # float32 whatever the policy: a bfloat16 autocast would round counts of 20000 to +-64
    if normalization == "background":
        x, offset, scale = BackgroundNormalization(dtype="float32", name="normalize")(x)
        stats = (offset, scale)
    elif normalization == "fixed":
        x = layers.Rescaling(1.0 / scale, offset=-offset / scale, dtype="float32", name="normalize")(x)
        stats = (float(offset), float(scale))
    if not noise_map:
        return image, x, x, stats
    sigma = keras.Input(shape=(None, None, channels), dtype="float32", name="noise_sigma")
    if stats is None:
        scaled = sigma
    elif normalization == "fixed":
        scaled = layers.Rescaling(1.0 / stats[1], dtype="float32", name="normalize_sigma")(sigma)
    else:
        scaled = NoiseNormalization(dtype="float32", name="normalize_sigma")(sigma, stats[1])
    body = layers.Concatenate(dtype="float32", name="condition")([x, scaled])
    return [image, sigma], x, body, stats


def denoiser_output(correction, x, stats):
    """The output section shared by the denoisers: the global residual in float32.

    ``correction`` is cropped to ``x``'s size (the body ran on a padded frame), added to ``x``, and
    with ``stats`` (from :func:`denoiser_inputs`) mapped back to the data's units.
    """
    correction = CropLike(dtype="float32", name="crop")(correction, x)
    out = layers.Add(dtype="float32", name="residual")([x, correction])
    if stats is not None and isinstance(stats[1], float):
        out = layers.Rescaling(stats[1], offset=stats[0], dtype="float32", name="denormalize")(out)
    elif stats is not None:
        out = Denormalization(dtype="float32", name="denormalize")(out, *stats)
    return out

