"""Soft star masks (AstroPics Lab §2.3) and Bernoulli pixel masks for Self2Self.

The star mask follows §2.3: luminance -> threshold on star cores -> dilation to take in
the halos -> Gaussian blur for feathered edges, giving a single-channel float map in
[0, 1] (1 = star) that the losses receive as an explicit argument. Everything is pure
TensorFlow and runs inside ``tf.data.Dataset.map`` with unknown height and width.

References
----------
.. [1] D. Regordosa, "Denoising Pipeline for Deep-Sky Astrophotography", AstroPics Lab, §2.3.
"""

from __future__ import annotations

import math
import numbers

import tensorflow as tf

from astrotf.config.data import StarMaskConfig

REC709 = (0.2126, 0.7152, 0.0722)
MAD_TO_SIGMA = 1.4826  # sigma of a Gaussian = 1.4826 * median absolute deviation


def luminance(image) -> tf.Tensor:
    """Rec. 709 luminance of an RGB image; a single-channel image is returned as is.

    Parameters
    ----------
    image : tf.Tensor
        Shape (..., C) with C = 1 or 3 known statically, e.g. (H, W, C) or (N, H, W, C).

    Returns
    -------
    tf.Tensor
        Shape (..., 1), dtype of ``image``.

    Raises
    ------
    ValueError
        If the channel count is not 1 or 3.
    """
    image = tf.convert_to_tensor(image)
    channels = image.shape[-1]
    if channels == 1:
        return image
    if channels == 3:
        weights = tf.constant(REC709, image.dtype)
        return tf.reduce_sum(image * weights, axis=-1, keepdims=True)
    msg = f"`image` must have 1 or 3 channels (last axis). Received: image.shape={image.shape}"
    raise ValueError(msg)


def _finite_median(values: tf.Tensor, finite: tf.Tensor) -> tf.Tensor:
    """Median of the finite entries of each row of ``values`` (N, P) -> (N,)."""
    ordered = tf.sort(tf.where(finite, values, math.inf), axis=-1)
    count = tf.reduce_sum(tf.cast(finite, tf.int32), axis=-1)
    middle = tf.stack([tf.maximum((count - 1) // 2, 0), count // 2], axis=-1)
    return tf.reduce_mean(tf.gather(ordered, middle, batch_dims=1), axis=-1)


def _sigma_threshold(lum: tf.Tensor, finite: tf.Tensor, k: float) -> tf.Tensor:
    """``median + k * 1.4826 * MAD`` per image of ``lum`` (N, H, W, 1) -> (N, 1, 1, 1)."""
    flat_shape = tf.stack([tf.shape(lum)[0], -1])
    values, finite = tf.reshape(lum, flat_shape), tf.reshape(finite, flat_shape)
    median = _finite_median(values, finite)
    mad = _finite_median(tf.abs(values - median[:, None]), finite)
    return tf.reshape(median + k * MAD_TO_SIGMA * mad, [-1, 1, 1, 1])


#: Side in px of the grey opening that gives a noise-free image's background (wider than any star).
OPENING_SIZE = 25


def _opening(lum: tf.Tensor, size: int) -> tf.Tensor:
    """Grey opening (min filter, then max filter) of (N, H, W, 1): the smooth background under
    sources smaller than ``size`` px, sky gradients included."""
    eroded = -tf.nn.max_pool2d(-lum, ksize=size, strides=1, padding="SAME")
    return tf.nn.max_pool2d(eroded, ksize=size, strides=1, padding="SAME")


def _noise_threshold(lum: tf.Tensor, finite: tf.Tensor, sigma: tf.Tensor, k: float) -> tf.Tensor:
    """``opening(L) + k * median(sigma)`` per pixel (N, H, W, 1): the k-sigma rule for a noise-free
    image, whose own MAD is no measure of the noise and whose sky may be tilted."""
    flat_shape = tf.stack([tf.shape(lum)[0], -1])
    noise = _finite_median(tf.reshape(sigma, flat_shape), tf.reshape(finite, flat_shape))
    background = _opening(tf.where(finite, lum, tf.reduce_min(tf.where(finite, lum, math.inf))), OPENING_SIZE)
    return background + k * tf.reshape(noise, [-1, 1, 1, 1])


def _gaussian_blur(folded: tf.Tensor, sigma: float) -> tf.Tensor:
    """Separable Gaussian blur of masks folded to (1, H, W, N), normalised at the borders.

    Zero padding alone would dim stars at the tile edge; dividing by the blurred
    all-ones image makes every output a weighted mean of in-image pixels.
    """
    radius = math.ceil(3 * sigma)
    taps = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    kernel = tf.constant([t / sum(taps) for t in taps], tf.float32)

    def blur(x):
        n = tf.shape(x)[3]
        rows = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), tf.stack([1, 1, n, 1]))
        cols = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), tf.stack([1, 1, n, 1]))
        x = tf.nn.depthwise_conv2d(x, rows, strides=[1, 1, 1, 1], padding="SAME")
        return tf.nn.depthwise_conv2d(x, cols, strides=[1, 1, 1, 1], padding="SAME")

    return blur(folded) / blur(tf.ones_like(folded[..., :1]))


def star_mask(image, config: StarMaskConfig = StarMaskConfig(), noise_sigma=None) -> tf.Tensor:
    """Soft star mask: threshold the luminance, dilate, blur (AstroPics Lab §2.3).

    Pixels whose luminance exceeds the threshold are star cores; a square max-pool of
    radius ``config.dilation`` takes in their halos and a Gaussian blur of
    ``config.blur_sigma`` px feathers the edges. The mask is ~1 at cores and exactly 0
    farther than ``dilation + ceil(3 * blur_sigma)`` px from any core. Non-finite
    pixels are never cores and are ignored by the median / MAD of ``threshold_sigma``.

    Parameters
    ----------
    image : tf.Tensor
        Shape (H, W, C) or (N, H, W, C), C = 1 or 3; stretched [0, 1] data for the
        absolute threshold, any linear scale with ``threshold_sigma``.
    config : StarMaskConfig
    noise_sigma : tf.Tensor, optional
        Per-pixel noise σ shaped like ``image``: with ``threshold_sigma`` the threshold is then
        ``opening(L) + threshold_sigma * median(luminance(noise_sigma))`` (a grey opening of
        :data:`OPENING_SIZE` px as the background), so a noise-free target (whose MAD is ~0) gets the
        sources that rise ``threshold_sigma`` times the input's noise above its local sky.

    Returns
    -------
    tf.Tensor
        float32 mask in [0, 1], shape (H, W, 1) or (N, H, W, 1); 1 = star.

    Raises
    ------
    ValueError
        If ``image`` is not rank 3 or 4, or has neither 1 nor 3 channels.

    References
    ----------
    AstroPics Lab denoising pipeline, §2.3.
    """
    image = tf.convert_to_tensor(image)
    rank = image.shape.rank
    if rank not in (3, 4):
        msg = f"`image` must be (H, W, C) or (N, H, W, C). Received: image.shape={image.shape}"
        raise ValueError(msg)
    batch = tf.cast(image if rank == 4 else image[tf.newaxis], tf.float32)
    lum = luminance(batch)
    finite = tf.math.is_finite(lum)
    if config.threshold_sigma is None:
        threshold = tf.constant(config.threshold, tf.float32)
    elif noise_sigma is None:
        threshold = _sigma_threshold(lum, finite, config.threshold_sigma)
    else:
        sigma = tf.cast(noise_sigma if rank == 4 else tf.convert_to_tensor(noise_sigma)[tf.newaxis], tf.float32)
        threshold = _noise_threshold(lum, finite, luminance(sigma), config.threshold_sigma)

    # Fold the batch into channels, (N, H, W, 1) -> (1, H, W, N): TensorFlow's CPU
    # pooling and depthwise kernels vectorise over channels, which makes the separable
    # dilation and blur 15-30x faster than on N single-channel images.
    mask = tf.transpose(tf.cast(finite & (lum > threshold), tf.float32), [3, 1, 2, 0])
    if config.dilation > 0:
        k = 2 * config.dilation + 1
        mask = tf.nn.max_pool2d(mask, ksize=[k, 1], strides=1, padding="SAME")
        mask = tf.nn.max_pool2d(mask, ksize=[1, k], strides=1, padding="SAME")
    if config.blur_sigma > 0:
        mask = _gaussian_blur(mask, config.blur_sigma)
    mask = tf.transpose(tf.clip_by_value(mask, 0.0, 1.0), [3, 1, 2, 0])
    return mask if rank == 4 else mask[0]


def bernoulli_mask(shape, keep_prob: float, seed) -> tf.Tensor:
    """Random 0/1 mask for Self2Self: each entry is 1 (pixel kept) with ``keep_prob``.

    Parameters
    ----------
    shape : sequence of int or 1-D int tf.Tensor
        (H, W, C) or (N, H, W, C).
    keep_prob : float or scalar tf.Tensor
        Probability in [0, 1] that an entry is kept.
    seed : tf.Tensor
        Shape [2], int32 or int64, as for ``tf.random.stateless_uniform``.

    Returns
    -------
    tf.Tensor
        float32 tensor of 0s and 1s with the given shape.

    Raises
    ------
    ValueError
        If ``keep_prob`` is a Python number outside [0, 1].
    """
    if isinstance(keep_prob, numbers.Real) and not 0.0 <= keep_prob <= 1.0:
        msg = f"`keep_prob` must be in [0, 1]. Received: keep_prob={keep_prob}"
        raise ValueError(msg)
    draws = tf.random.stateless_uniform(shape, seed)
    return tf.cast(draws < tf.cast(keep_prob, tf.float32), tf.float32)
