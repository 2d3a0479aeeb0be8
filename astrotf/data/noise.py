"""Synthetic noise for training pairs: AstroPics degradations (§2.2) and physical CCD noise.

Two families, one per data domain:

* stretched data in [0, 1] (AstroPics Lab §2.2): random-variance Gaussian noise, chroma
  blotches, banding, and identity / low-noise variants, combined by
  :func:`add_astropics_noise`;
* linear data in ADU (Astro U-net §2.1, eqs. 1-4): photon, dark and read noise of an
  ``r``-times shorter exposure, :func:`add_physical_noise`; with a detector (gain, read noise,
  ratio, hot pixels, cosmic rays) drawn per tile and the input's σ map, :func:`add_detector_noise`.

Every function is pure TensorFlow, so it runs inside ``tf.data.Dataset.map`` in graph
mode with unknown height and width. Images are (H, W, C); the output dtype follows the
input (computations run in float32). Randomness is stateless: ``seed`` is an int32/int64
tensor of shape [2], as for ``tf.random.stateless_*``; sub-seeds come from
``tf.random.experimental.stateless_split``, so one seed always gives the same output.

References
----------
.. [1] D. Regordosa, "Denoising Pipeline for Deep-Sky Astrophotography", AstroPics Lab, §2.2.
.. [2] A. Vojtekova et al., "Learning to denoise astronomical images with U-nets",
   MNRAS 503 (2021), §2.1, eqs. 1-4.
"""

from __future__ import annotations

import tensorflow as tf

from astrotf.config.data import (  # noqa: F401  (the configs are re-exported here)
    AstroPicsNoiseConfig,
    DetectorNoiseConfig,
    PhysicalNoiseConfig,
    check_nonnegative,
    is_number,
)

# --------------------------------------------------------------------------- helpers


def _to_float32(image) -> tuple[tf.Tensor, tf.DType]:
    image = tf.convert_to_tensor(image)
    return tf.cast(image, tf.float32), image.dtype


def _split(seed, num: int) -> tf.Tensor:
    return tf.random.experimental.stateless_split(tf.convert_to_tensor(seed), num=num)


def _uniform(value_range, seed, dtype=tf.float32) -> tf.Tensor:
    """One scalar drawn uniformly from ``value_range`` (inclusive for ints)."""
    low, high = value_range
    if dtype.is_integer:
        return tf.random.stateless_uniform([], seed, minval=low, maxval=high + 1, dtype=dtype)
    return tf.random.stateless_uniform([], seed, minval=low, maxval=high)


def _coin(prob: float, seed) -> tf.Tensor:
    return tf.random.stateless_uniform([], seed) < prob


# --------------------------------------------------------------------------- AstroPics §2.2


def gaussian_noise(image, sigma, seed) -> tf.Tensor:
    """Add white Gaussian noise, independent per pixel and channel.

    Parameters
    ----------
    image : tf.Tensor
        Any shape, typically (H, W, C); float32, float16 or bfloat16.
    sigma : float or scalar tf.Tensor
        Standard deviation, in the units of ``image``.
    seed : tf.Tensor
        Shape [2], int32 or int64.

    Returns
    -------
    tf.Tensor
        ``image + N(0, sigma)``, same shape and dtype as ``image``.

    Raises
    ------
    ValueError
        If ``sigma`` is a negative Python number.
    """
    check_nonnegative("sigma", sigma)
    x, dtype = _to_float32(image)
    noise = tf.random.stateless_normal(tf.shape(x), seed, stddev=tf.cast(sigma, tf.float32))
    return tf.cast(x + noise, dtype)


def chroma_noise(image, sigma, block, seed) -> tf.Tensor:
    """Add low-frequency colour blotches (AstroPics §2.2, "chroma block noise").

    A field of ``ceil(H / block) x ceil(W / block) x C`` independent N(0, sigma) cells is
    upsampled bilinearly to H x W and added: per-channel fields give colour blotches
    for C = 3, luminance blotches for C = 1.

    Parameters
    ----------
    image : tf.Tensor
        Shape (H, W, C).
    sigma : float or scalar tf.Tensor
        Standard deviation of the low-resolution cells. Bilinear interpolation averages
        neighbouring cells, so the per-pixel standard deviation of the added field is
        lower: about ``2/3 * sigma`` for large blocks (``sigma`` for ``block = 1``).
    block : int or scalar int32 tf.Tensor
        Size of one low-resolution cell, px.
    seed : tf.Tensor
        Shape [2], int32 or int64.

    Returns
    -------
    tf.Tensor
        Same shape and dtype as ``image``.

    Raises
    ------
    ValueError
        If ``sigma`` is a negative Python number or ``block`` a Python int < 1.
    """
    check_nonnegative("sigma", sigma)
    if is_number(block) and not block >= 1:
        msg = f"`block` must be >= 1. Received: block={block}"
        raise ValueError(msg)
    x, dtype = _to_float32(image)
    height, width, channels = tf.unstack(tf.shape(x))
    block = tf.cast(block, tf.int32)
    grid = tf.stack([-(-height // block), -(-width // block), channels])
    cells = tf.random.stateless_normal(grid, seed, stddev=tf.cast(sigma, tf.float32))
    field = tf.image.resize(cells, tf.stack([height, width]), method="bilinear")
    return tf.cast(x + field, dtype)


def banding_noise(image, sigma, vertical, seed) -> tf.Tensor:
    """Add fixed-pattern banding: one N(0, sigma) offset per row or per column (§2.2).

    Parameters
    ----------
    image : tf.Tensor
        Shape (H, W, C).
    sigma : float or scalar tf.Tensor
        Standard deviation of the offsets.
    vertical : bool or scalar bool tf.Tensor
        ``False``: horizontal bands (one offset per row); ``True``: vertical bands (one
        offset per column). The same offset applies to all channels.
    seed : tf.Tensor
        Shape [2], int32 or int64.

    Returns
    -------
    tf.Tensor
        Same shape and dtype as ``image``.

    Raises
    ------
    ValueError
        If ``sigma`` is a negative Python number.
    """
    check_nonnegative("sigma", sigma)
    x, dtype = _to_float32(image)
    height, width, _ = tf.unstack(tf.shape(x))
    vertical = tf.convert_to_tensor(vertical, tf.bool)
    one = tf.constant(1, tf.int32)
    shape = tf.where(vertical, tf.stack([one, width, one]), tf.stack([height, one, one]))
    offsets = tf.random.stateless_normal(shape, seed, stddev=tf.cast(sigma, tf.float32))
    return tf.cast(x + offsets, dtype)


def _maybe_chroma(x: tf.Tensor, config: AstroPicsNoiseConfig, seed) -> tf.Tensor:
    seeds = _split(seed, 4)
    sigma = _uniform(config.chroma_sigma, seeds[1])
    block = _uniform(config.chroma_block, seeds[2], tf.int32)
    return tf.cond(
        _coin(config.chroma_prob, seeds[0]),
        lambda: chroma_noise(x, sigma, block, seeds[3]),
        lambda: x,
    )


def _maybe_banding(x: tf.Tensor, config: AstroPicsNoiseConfig, seed) -> tf.Tensor:
    seeds = _split(seed, 4)
    sigma = _uniform(config.banding_sigma, seeds[1])
    vertical = _coin(0.5, seeds[2])
    return tf.cond(
        _coin(config.banding_prob, seeds[0]),
        lambda: banding_noise(x, sigma, vertical, seeds[3]),
        lambda: x,
    )


def stretched_gaussian_noise(image, sigma, factor, seed) -> tf.Tensor:
    """Gaussian noise added in linear space under an asinh stretch ``y = asinh(a·x) / asinh(a)``.

    The stretch is undone, noise of sigma ``sigma · asinh(a) / a`` added, the stretch applied
    again: the sigma is ``sigma`` at black and falls as the data brighten, as in stretched
    astrophotographs, whose dark sky carries the most noise.
    """
    x = tf.cast(image, tf.float32)
    a = tf.cast(factor, tf.float32)
    scale = tf.math.asinh(a)
    linear = tf.math.sinh(tf.clip_by_value(x, 0.0, 1.0) * scale) / a
    linear += tf.random.stateless_normal(tf.shape(x), seed, stddev=tf.cast(sigma, tf.float32) * scale / a)
    return tf.cast(tf.math.asinh(a * linear) / scale, image.dtype)


def hot_pixels(image, fraction, seed) -> tf.Tensor:
    """A ``fraction`` of the pixels of one channel each set to 1 (hot, 70 %) or 0 (cold)."""
    seeds = _split(seed, 2)
    x = tf.cast(image, tf.float32)
    u = tf.random.stateless_uniform(tf.shape(x), seeds[0])
    hit = u < tf.cast(fraction, tf.float32) / tf.cast(tf.shape(x)[-1], tf.float32)
    value = tf.cast(tf.random.stateless_uniform(tf.shape(x), seeds[1]) < 0.7, tf.float32)
    return tf.cast(tf.where(hit, value, x), image.dtype)


def _maybe(prob: float, seed, apply, x: tf.Tensor) -> tf.Tensor:
    if prob <= 0:  # off: no branch in the graph, the tile is untouched
        return x
    return tf.cond(_coin(prob, seed), lambda: apply(x), lambda: x)


def _display_artefacts(x: tf.Tensor, config: AstroPicsNoiseConfig, seed) -> tf.Tensor:
    """Hot/cold pixels, 8-bit rounding and JPEG compression of a noisy tile (each with its probability)."""
    seeds = _split(seed, 6)
    fraction = _uniform(config.hot_pixel_fraction, seeds[1])
    x = _maybe(config.hot_pixel_prob, seeds[0], lambda t: hot_pixels(t, fraction, seeds[2]), x)
    x = _maybe(config.quantise_prob, seeds[3], lambda t: tf.round(tf.clip_by_value(t, 0.0, 1.0) * 255.0) / 255.0, x)
    lo, hi = config.jpeg_quality

    def jpeg(t):
        rgb = tf.image.grayscale_to_rgb(t) if t.shape[-1] == 1 else t
        out = tf.image.stateless_random_jpeg_quality(tf.clip_by_value(rgb, 0.0, 1.0), lo, hi + 1, seeds[5])
        return tf.reduce_mean(out, axis=-1, keepdims=True) if t.shape[-1] == 1 else out

    return _maybe(config.jpeg_prob, seeds[4], jpeg, x)


def add_astropics_noise(image, config: AstroPicsNoiseConfig, seed) -> tf.Tensor:
    """Degrade a clean stretched tile with the AstroPics noise mix (§2.2).

    With ``u ~ U[0, 1)``: ``u < identity_prob`` returns the tile unchanged;
    ``u < identity_prob + low_noise_prob`` adds only a faint Gaussian
    (``sigma ~ U(low_noise_sigma)``); otherwise a Gaussian with ``sigma ~ U(gaussian_sigma)``,
    then chroma blotches with probability ``chroma_prob`` and banding (random orientation)
    with probability ``banding_prob``. Noisy tiles are clipped to [0, 1] if ``config.clip``.
    The switches beyond the paper (off by default): the Gaussian added under a stretch
    (``stretch_prob``), then hot/cold pixels, 8-bit rounding and JPEG compression.

    Parameters
    ----------
    image : tf.Tensor
        Clean tile, shape (H, W, C), values in [0, 1].
    config : AstroPicsNoiseConfig
    seed : tf.Tensor
        Shape [2], int32 or int64.

    Returns
    -------
    tf.Tensor
        Noisy tile, same shape and dtype as ``image``.

    References
    ----------
    AstroPics Lab denoising pipeline, §2.2.
    """
    image = tf.convert_to_tensor(image)
    seeds = _split(seed, 5)
    u = tf.random.stateless_uniform([], seeds[0])

    def finish(x):
        x = tf.clip_by_value(x, 0.0, 1.0) if config.clip else x
        return tf.cast(x, image.dtype)

    def low_noise():
        sigma = _uniform(config.low_noise_sigma, seeds[1])
        return finish(gaussian_noise(tf.cast(image, tf.float32), sigma, seeds[2]))

    switches = _split(tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 7919), 4)

    def gaussian(x, sigma):
        if config.stretch_prob <= 0:
            return gaussian_noise(x, sigma, seeds[2])
        factor = _uniform(config.stretch_factor, switches[1])
        return tf.cond(_coin(config.stretch_prob, switches[0]),
                       lambda: stretched_gaussian_noise(x, sigma, factor, seeds[2]),
                       lambda: gaussian_noise(x, sigma, seeds[2]))

    def full_noise():
        sigma = _uniform(config.gaussian_sigma, seeds[1])
        x = gaussian(tf.cast(image, tf.float32), sigma)
        x = _maybe_chroma(x, config, seeds[3])
        x = finish(_maybe_banding(x, config, seeds[4]))
        return tf.cast(_display_artefacts(tf.cast(x, tf.float32), config, switches[2]), image.dtype)

    return tf.cond(
        u < config.identity_prob,
        lambda: image,
        lambda: tf.cond(u < config.identity_prob + config.low_noise_prob, low_noise, full_noise),
    )


# --------------------------------------------------------------------------- Astro U-net §2.1


def _check_ratio(ratio) -> None:
    if is_number(ratio) and not ratio >= 1:
        msg = f"`ratio` must be >= 1 (the short exposure is r times shorter). Received: ratio={ratio}"
        raise ValueError(msg)


def add_physical_noise(image, config: PhysicalNoiseConfig, seed, ratio=None) -> tf.Tensor:
    """Turn a clean long exposure into one with the noise of an ``r``-times shorter one.

    In electrons ``e = image * gain``, the short exposure ``e / r`` (eq. 3) gets photon,
    dark and read noise (eqs. 1, 2, 4)::

        noisy_e = Pois(e / r) + N(0, sqrt(dark_current * exposure_time / r)) + N(0, read_noise)

    and is scaled back by ``r / gain``: the result has the flux scale of the input
    (unbiased) and the noise of the shorter exposure; its expected standard deviation is
    :func:`physical_noise_sigma`. Negative pixels (sky subtraction) enter the Poisson
    draw as 0 and their negative part is added back unchanged, so the output stays
    unbiased there too. Non-finite pixels are passed through unchanged.

    Parameters
    ----------
    image : tf.Tensor
        Clean long exposure in ADU, any shape (typically (H, W, C)).
    config : PhysicalNoiseConfig
    seed : tf.Tensor
        Shape [2], int32 or int64.
    ratio : float or scalar tf.Tensor, optional
        Exposure ratio ``r >= 1``; drawn from ``config.exposure_ratio`` if None. Draw it
        yourself and pass it when the model needs ``r`` as an input (Astro U-net §3.2).

    Returns
    -------
    tf.Tensor
        Noisy image in ADU, same shape and dtype as ``image``.

    Raises
    ------
    ValueError
        If ``ratio`` is a Python number < 1.

    References
    ----------
    Vojtekova et al. (2021), Astro U-net, §2.1, eqs. 1-4.
    """
    _check_ratio(ratio)
    x, dtype = _to_float32(image)
    seeds = _split(seed, 4)
    r = _uniform(config.exposure_ratio, seeds[0]) if ratio is None else tf.cast(ratio, tf.float32)

    electrons = x * config.gain
    finite = tf.math.is_finite(electrons)
    short = tf.where(finite, electrons / r, 0.0)  # a NaN rate would hang the Poisson sampler
    shape = tf.shape(short)
    photons = tf.random.stateless_poisson(shape, seeds[1], tf.nn.relu(short), dtype=tf.float32)
    dark_sigma = tf.sqrt(config.dark_current * config.exposure_time / r)
    dark = tf.random.stateless_normal(shape, seeds[2], stddev=dark_sigma)
    read = tf.random.stateless_normal(shape, seeds[3], stddev=config.read_noise)
    noisy_e = photons + tf.minimum(short, 0.0) + dark + read
    return tf.cast(tf.where(finite, noisy_e * r / config.gain, x), dtype)


def physical_noise_sigma(image, config: PhysicalNoiseConfig, ratio) -> tf.Tensor:
    """Expected per-pixel standard deviation of :func:`add_physical_noise`, in ADU.

    ``sqrt(max(e, 0) / r + dark_current * exposure_time / r + read_noise**2) * r / gain``
    with ``e = image * gain``.

    Parameters
    ----------
    image : tf.Tensor
        Clean long exposure in ADU, any shape.
    config : PhysicalNoiseConfig
    ratio : float or scalar tf.Tensor
        Exposure ratio ``r >= 1``.

    Returns
    -------
    tf.Tensor
        Same shape and dtype as ``image``.

    Raises
    ------
    ValueError
        If ``ratio`` is a Python number < 1.
    """
    _check_ratio(ratio)
    x, dtype = _to_float32(image)
    r = tf.cast(ratio, tf.float32)
    variance = (
        tf.nn.relu(x * config.gain) / r
        + config.dark_current * config.exposure_time / r
        + config.read_noise**2
    )
    return tf.cast(tf.sqrt(variance) * r / config.gain, dtype)


# --------------------------------------------------------------------------- a detector drawn per tile (issue #21)


def _log_uniform(value_range, shape, seed) -> tf.Tensor:
    low, high = (tf.math.log(tf.constant(v, tf.float32)) for v in value_range)
    return tf.exp(tf.random.stateless_uniform(shape, seed, minval=low, maxval=high))


def detector_artefacts(shape, config: DetectorNoiseConfig, seed) -> tf.Tensor:
    """Electrons of hot pixels and cosmic rays on a (H, W, C) frame (``shape`` a 1-D int tensor).

    Each pixel is a hot pixel with a probability drawn from ``config.hot_pixel_rate`` and the start
    of a cosmic ray with one drawn from ``config.cosmic_ray_rate``; charges are log-uniform in
    ``config.artefact_electrons``. A cosmic ray is a 3-px track, horizontal, vertical or diagonal
    (one direction per frame), far sharper than any PSF.
    """
    seeds = _split(seed, 6)
    hot_rate = _uniform(config.hot_pixel_rate, seeds[0])
    ray_rate = _uniform(config.cosmic_ray_rate, seeds[1])
    hot = tf.cast(tf.random.stateless_uniform(shape, seeds[2]) < hot_rate, tf.float32)
    rays = tf.cast(tf.random.stateless_uniform(shape, seeds[3]) < ray_rate, tf.float32)
    charge = _log_uniform(config.artefact_electrons, shape, seeds[4])
    tracks = tf.constant([[[0, 0, 0], [1, 1, 1], [0, 0, 0]], [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
                          [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 0, 1], [0, 1, 0], [1, 0, 0]]], tf.float32)
    track = tf.gather(tracks, tf.random.stateless_uniform([], seeds[5], maxval=4, dtype=tf.int32))
    channels = shape[-1]
    kernel = tf.tile(tf.reshape(track, [3, 3, 1, 1]), tf.stack([1, 1, channels, 1]))
    spread = tf.nn.depthwise_conv2d((rays * charge)[None], kernel, [1, 1, 1, 1], "SAME")[0]
    return hot * charge + spread


def add_detector_noise(clean, config: DetectorNoiseConfig, seed) -> tuple[tf.Tensor, ...]:
    """A short exposure of a clean long one, on a detector drawn from ``config``, and its σ maps.

    With ``g``, ``rn`` and ``r`` drawn per call (see :class:`~astrotf.config.data.DetectorNoiseConfig`)::

        noisy        = (Pois(clean / r) + artefacts + N(0, rn)) / g     (ADU)
        target       = clean / (r * g)                                  (noise- and artefact-free, ADU)
        sigma        = sqrt(max(noisy, 0) / g + (rn / g)**2)            (ADU)
        target_sigma = sqrt(target / g + (rn / g)**2)                   (ADU)

    ``sigma`` is :meth:`astrotf.noise_model.NoiseModel.sigma_map` of ``noisy`` for ``NoiseModel(g, rn)``:
    the model is given the σ map inference computes, from the noisy data. ``target_sigma`` is the true
    noise around the target, what the science loss measures errors in: on a cosmic ray the input's σ is
    that of the ray's charge, and an error there would cost next to nothing in its units.

    Parameters
    ----------
    clean : tf.Tensor
        (H, W, C) long exposure in electrons, >= 0 and finite.
    config : DetectorNoiseConfig
    seed : tf.Tensor
        Shape [2], int32 or int64.

    Returns
    -------
    noisy, target, sigma, target_sigma : tf.Tensor
        float32, the shape of ``clean``.
    """
    x, _ = _to_float32(clean)
    seeds = _split(seed, 6)
    gain = _uniform(config.gain, seeds[0])
    read_noise = _uniform(config.read_noise, seeds[1])
    ratio = _uniform(config.exposure_ratio, seeds[2])
    short = tf.nn.relu(x) / ratio
    shape = tf.shape(short)
    electrons = tf.random.stateless_poisson(shape, seeds[3], short, dtype=tf.float32)
    electrons += detector_artefacts(shape, config, seeds[4])
    noisy = (electrons + tf.random.stateless_normal(shape, seeds[5], stddev=read_noise)) / gain
    target = short / gain

    def noise_sigma(adu):  # NoiseModel(gain, read_noise).sigma_map, in TensorFlow
        return tf.sqrt(tf.nn.relu(adu) / gain + tf.square(read_noise / gain))

    return noisy, target, noise_sigma(noisy), noise_sigma(target)
