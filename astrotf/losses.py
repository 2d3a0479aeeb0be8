"""Composite AstroPics loss (§2.5), each term a pure function plus the composite class.

All terms take ``y_true`` and ``y_pred`` shaped (N, H, W, C) and the soft star mask
``star_mask`` shaped (N, H, W, 1) in [0, 1] (1 = star), and return one value per
sample, shape (N,). The mask travels as an explicit argument, never as an extra
channel of ``y_true``. Written with ``keras.ops`` (any backend); inputs are cast to
float32 so mixed-precision predictions are scored in full precision.

    loss = (1 - beta) * L1_weighted + beta * (1 - SSIM) + gamma * Brightness + delta * TV

Also here: the Self2Self loss (TDR eq. 3), the science terms of noise-conditioned linear models,
and the adversarial terms of the enhanced Pix2Pix (Xu §3.1: :class:`Pix2PixLoss`).
"""

from __future__ import annotations

import math

from keras import ops

from astrotf.config.training import LossConfig

REC709 = (0.2126, 0.7152, 0.0722)


def _f32(*tensors):
    return [ops.cast(t, "float32") for t in tensors]


def _luminance(x):
    if x.shape[-1] == 3:
        return ops.sum(x * ops.convert_to_tensor(REC709, "float32"), axis=-1, keepdims=True)
    return ops.mean(x, axis=-1, keepdims=True)


def star_weighted_l1(y_true, y_pred, star_mask, star_weight: float = 0.5):
    """Mean absolute error with weight ``1 - (1 - star_weight) * mask``: less weight in stars.

    Bright point sources carry errors far larger than the sky; a reduced weight keeps
    them from dominating the fit and keeps the network from deforming them (§2.5).
    """
    y_true, y_pred, star_mask = _f32(y_true, y_pred, star_mask)
    weight = 1.0 - (1.0 - star_weight) * star_mask
    return ops.mean(weight * ops.abs(y_pred - y_true), axis=(1, 2, 3))


def _gaussian_window(size: int, sigma: float, channels: int):
    coords = [i - (size - 1) / 2 for i in range(size)]
    g = [math.exp(-(c * c) / (2 * sigma * sigma)) for c in coords]
    total = sum(g)
    g = ops.convert_to_tensor([v / total for v in g], "float32")
    window = ops.reshape(g, (size, 1)) * ops.reshape(g, (1, size))
    return ops.tile(ops.reshape(window, (size, size, 1, 1)), (1, 1, channels, 1))


def ssim(y_true, y_pred, data_range: float = 1.0, window: int = 11, sigma: float = 1.5):
    """Structural similarity per sample (Wang et al. 2004), Gaussian window, valid region.

    Matches ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range)`` up to its border handling:
    here only windows fully inside the image count. Mean over channels.
    """
    y_true, y_pred = _f32(y_true, y_pred)
    channels = y_true.shape[-1]
    kernel = _gaussian_window(window, sigma, channels)

    def blur(x):
        return ops.depthwise_conv(x, kernel, strides=1, padding="valid")

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_t, mu_p = blur(y_true), blur(y_pred)
    var_t = blur(y_true * y_true) - mu_t * mu_t
    var_p = blur(y_pred * y_pred) - mu_p * mu_p
    cov = blur(y_true * y_pred) - mu_t * mu_p
    num = (2 * mu_t * mu_p + c1) * (2 * cov + c2)
    den = (mu_t * mu_t + mu_p * mu_p + c1) * (var_t + var_p + c2)
    return ops.mean(num / den, axis=(1, 2, 3))


def ssim_loss(y_true, y_pred, data_range: float = 1.0):
    """``1 - SSIM`` per sample."""
    return 1.0 - ssim(y_true, y_pred, data_range=data_range)


def _block_mean(x, block: int):
    return ops.average_pool(x, pool_size=block, strides=block, padding="valid")


def brightness_consistency(y_true, y_pred, star_mask, block: int = 8):
    """Local luminance difference outside stars (§2.5, object regions).

    Luminance is averaged over ``block`` × ``block`` cells; the absolute difference of
    the cell means is averaged with weight ``1 - mask`` (cell mean). Galaxies and
    nebulae can then be neither darkened nor brightened, while pixel-scale noise,
    which averages out in a cell, is left to the other terms.
    """
    y_true, y_pred, star_mask = _f32(y_true, y_pred, star_mask)
    diff = ops.abs(_block_mean(_luminance(y_pred), block) - _block_mean(_luminance(y_true), block))
    weight = 1.0 - _block_mean(star_mask, block)
    return ops.sum(weight * diff, axis=(1, 2, 3)) / (ops.sum(weight, axis=(1, 2, 3)) + 1e-6)


def star_total_variation(y_true, y_pred, star_mask):
    """Total variation of the error ``y_pred - y_true`` inside stars (§2.5).

    Penalising the variation of the *error* rather than of the prediction removes
    ringing and blotches around bright cores without flattening the true stellar
    profile, whose steep gradients are part of the target. Mean over pixels of
    ``mask * (|d/dx e| + |d/dy e|)``, channels averaged.
    """
    y_true, y_pred, star_mask = _f32(y_true, y_pred, star_mask)
    err = y_pred - y_true
    dx = ops.abs(err[:, :, 1:, :] - err[:, :, :-1, :]) * star_mask[:, :, 1:, :]
    dy = ops.abs(err[:, 1:, :, :] - err[:, :-1, :, :]) * star_mask[:, 1:, :, :]
    return ops.mean(dx, axis=(1, 2, 3)) + ops.mean(dy, axis=(1, 2, 3))


class AstroPicsLoss:
    """Composite loss ``(1-β)·L1w + β·(1-SSIM) + γ·Brightness + δ·TV``, mean over the batch.

    Call with ``(y_true, y_pred, star_mask)``; :meth:`terms` returns every term for
    logging.
    """

    def __init__(self, config: LossConfig = LossConfig()):
        self.config = config

    def terms(self, y_true, y_pred, star_mask) -> dict:
        """Batch means of every term and of the total, as a dict of scalars."""
        c = self.config
        terms = {"l1_weighted": star_weighted_l1(y_true, y_pred, star_mask, c.star_weight)}
        total = (1.0 - c.beta) * terms["l1_weighted"]
        if c.beta > 0:
            terms["ssim"] = ssim_loss(y_true, y_pred, c.ssim_data_range)
            total = total + c.beta * terms["ssim"]
        if c.gamma > 0:
            terms["brightness"] = brightness_consistency(y_true, y_pred, star_mask, c.brightness_block)
            total = total + c.gamma * terms["brightness"]
        if c.delta > 0:
            terms["tv_stars"] = star_total_variation(y_true, y_pred, star_mask)
            total = total + c.delta * terms["tv_stars"]
        terms["loss"] = total
        return {name: ops.mean(value) for name, value in terms.items()}

    def __call__(self, y_true, y_pred, star_mask):
        return self.terms(y_true, y_pred, star_mask)["loss"]


def self2self_loss(y_true, y_pred, keep_mask, valid=None):
    """Squared error on the dropped pixels only (Self2Self / TDR eq. 3).

    ``sum((1 - B) * valid * (F(B·y) - y)**2) / sum((1 - B) * valid)``: kept pixels
    (``B = 1``) do not enter the loss, so the network is never rewarded for copying
    its input. Normalised by the number of scored pixels so the scale does not depend
    on the keep probability or the patch size.

    Parameters
    ----------
    y_true, y_pred : tensor (B, H, W, C)
        Noisy target ``y`` and prediction ``F(B·y)``, in the network's normalised units.
    keep_mask : tensor (B, H, W, C) or (B, H, W, 1)
        Bernoulli mask ``B``: 1 = pixel given to the network, 0 = dropped (scored).
    valid : tensor, optional
        1 where the target is a real measurement, 0 where it is not (NaN filled).

    Returns
    -------
    Scalar tensor.
    """
    y_true, y_pred, keep_mask = _f32(y_true, y_pred, keep_mask)
    weight = (1.0 - keep_mask) * ops.ones_like(y_true)
    if valid is not None:
        weight = weight * ops.cast(valid, "float32")
    return ops.sum(weight * ops.square(y_pred - y_true)) / ops.maximum(ops.sum(weight), 1.0)


class Self2SelfLoss:
    """Class form of :func:`self2self_loss`: ``loss(y_true, y_pred, keep_mask, valid=None)``."""

    def __call__(self, y_true, y_pred, keep_mask, valid=None):
        return self2self_loss(y_true, y_pred, keep_mask, valid)


# --------------------------------------------------------------------------- science terms (linear data)
#
# For noise-conditioned linear models (issue #21): errors in units of the per-pixel noise σ, the
# aperture flux of true sources, and compact residual structure in source-free sky. Each takes
# ``noise_sigma`` shaped like the images (the σ map the model is conditioned on, in data units), and
# returns one value per sample, shape (N,).


def noise_normalized_error(y_true, y_pred, noise_sigma, power: int = 1):
    """Mean of ``|y_pred - y_true| / sigma`` (``power=1``) or its square (``power=2``) per sample.

    An error of one σ costs the same on a faint sky and on a bright star, so bright sources neither
    dominate the fit (as in a plain L2) nor are ignored, and frames of any depth weigh alike.
    """
    if power not in (1, 2):
        msg = f"`power` must be 1 or 2. Received: power={power!r}"
        raise ValueError(msg)
    y_true, y_pred, noise_sigma = _f32(y_true, y_pred, noise_sigma)
    z = ops.abs(y_pred - y_true) / ops.maximum(noise_sigma, 1e-12)
    return ops.mean(z if power == 1 else ops.square(z), axis=(1, 2, 3))


def aperture_flux_error(y_true, y_pred, noise_sigma, source_labels, max_sources: int):
    """Mean ``|F_pred - F_true| / sigma_F`` over the apertures of the true sources, per sample.

    Parameters
    ----------
    y_true, y_pred, noise_sigma : tensor (N, H, W, C)
        Truth, prediction and the input's σ map (data units).
    source_labels : int tensor (N, H, W, 1)
        0 outside apertures, ``k`` in 1..``max_sources`` inside the aperture of source ``k``
        (:func:`astrotf.data.prior.aperture_labels`).
    max_sources : int
        Largest label.

    Returns
    -------
    tensor (N,)
        Flux error in units of the aperture's noise ``sigma_F = sqrt(sum sigma**2)``, averaged over
        the labels present (0 for a sample without sources). A denoiser that loses 6 % of a star's
        flux pays for it even where the per-pixel error is small.
    """
    y_true, y_pred, noise_sigma = _f32(y_true, y_pred, noise_sigma)
    apertures = ops.one_hot(ops.cast(source_labels[..., 0], "int32"), max_sources + 1)[..., 1:]  # (N, H, W, K)

    def flux(x):
        return ops.einsum("nhwc,nhwk->nk", x, apertures)

    sigma_f = ops.sqrt(flux(ops.square(noise_sigma)))
    present = ops.cast(ops.sum(apertures, axis=(1, 2)) > 0, "float32")
    error = ops.abs(flux(y_pred) - flux(y_true)) / ops.maximum(sigma_f, 1e-12) * present
    return ops.sum(error, axis=1) / ops.maximum(ops.sum(present, axis=1), 1.0)


def _gaussian_kernel(fwhm: float):
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    radius = max(int(math.ceil(3.0 * sigma)), 1)
    g = [math.exp(-(i * i) / (2.0 * sigma * sigma)) for i in range(-radius, radius + 1)]
    total = sum(g)
    g = [v / total for v in g]
    return g, radius


def compact_residual_penalty(y_true, y_pred, noise_sigma, sky_mask, fwhm: float):
    """Power of the residual at the PSF scale in source-free sky, relative to white noise, per sample.

    The residual ``r = (y_pred - y_true) / sigma`` is smoothed with a Gaussian of the PSF's ``fwhm``
    (a matched filter: what a source finder sees) and the mean of ``(K * r)**2`` over sky pixels is
    divided by ``sum(K**2)``, its value for white noise of unit variance: white residual noise of
    variance ``v`` scores ``v``, residual blobs the size of a star (the false sources of an
    over-smoothing denoiser) score far more than their pixel variance. A sky that keeps PSF-sized
    ripples is penalised even when its pixel RMS is small.

    Parameters
    ----------
    y_true, y_pred, noise_sigma : tensor (N, H, W, C)
    sky_mask : tensor (N, H, W, 1)
        1 on source-free sky, 0 on and around sources (and artefacts).
    fwhm : float
        PSF FWHM in px.
    """
    y_true, y_pred, noise_sigma, sky_mask = _f32(y_true, y_pred, noise_sigma, sky_mask)
    g, radius = _gaussian_kernel(fwhm)
    channels = y_true.shape[-1]
    g1 = ops.convert_to_tensor(g, "float32")
    kernel = ops.tile(ops.reshape(ops.reshape(g1, (-1, 1)) * ops.reshape(g1, (1, -1)),
                                  (2 * radius + 1, 2 * radius + 1, 1, 1)), (1, 1, channels, 1))
    r = (y_pred - y_true) / ops.maximum(noise_sigma, 1e-12)
    smooth = ops.depthwise_conv(r, kernel, strides=1, padding="valid")
    mask = sky_mask[:, radius:-radius, radius:-radius, :]
    white = sum(v * v for v in g) ** 2  # sum of K**2 for the separable kernel
    power = ops.sum(mask * ops.square(smooth), axis=(1, 2, 3)) / (channels * ops.maximum(ops.sum(mask, axis=(1, 2, 3)), 1.0))
    return power / white


def noise_normalized_huber(y_true, y_pred, noise_sigma, delta: float = 3.0):
    """Mean Huber loss of ``z = (y_pred - y_true) / sigma`` per sample: ``z**2`` for ``|z| <= delta``,
    ``2 * delta * |z| - delta**2`` beyond.

    Equal to :func:`noise_normalized_error` squared for errors within ``delta`` σ, so the estimate on
    the sky and on stars is the unbiased mean; linear beyond, so a cosmic ray of a few hundred σ
    that the network has not yet learned to remove does not outweigh the rest of the tile.
    """
    if not delta > 0:
        msg = f"`delta` must be > 0. Received: delta={delta!r}"
        raise ValueError(msg)
    y_true, y_pred, noise_sigma = _f32(y_true, y_pred, noise_sigma)
    z = ops.abs(y_pred - y_true) / ops.maximum(noise_sigma, 1e-12)
    return ops.mean(ops.where(z <= delta, ops.square(z), 2.0 * delta * z - delta**2), axis=(1, 2, 3))


def block_flux_error(y_true, y_pred, noise_sigma, block: int = 8):
    """Mean over ``block``-px cells of ``|sum(y_pred - y_true)| / sqrt(sum(sigma**2))``, per sample.

    The flux of every cell, a star's or the sky's, in units of its noise: a denoiser that dims stars
    or shifts the sky level pays for it even where each pixel's error is small. The cells tile the
    frame from its top-left corner; a partial last row or column of cells is left out.
    """
    y_true, y_pred, noise_sigma = _f32(y_true, y_pred, noise_sigma)
    cells = (block, block)
    flux = ops.average_pool(y_pred - y_true, cells, strides=cells, padding="valid")
    noise = ops.sqrt(ops.average_pool(ops.square(noise_sigma), cells, strides=cells, padding="valid"))
    return ops.mean(ops.abs(flux) * float(block) / ops.maximum(noise, 1e-12), axis=(1, 2, 3))


class ScienceLoss:
    """Loss of the noise-conditioned linear models: ``Huber(Δ/σ) + w_f·flux + w_c·compact``, batch mean.

    Call with ``(y_true, y_pred, star_mask, noise_sigma)``; every term is in units of the per-pixel
    noise σ around ``y_true`` (:func:`noise_normalized_huber`, :func:`block_flux_error`,
    :func:`compact_residual_penalty` on the sky where ``star_mask`` is 0), so frames of any depth
    and units weigh alike. The trainer passes the true σ of the target, not the input's σ map, which
    on a cosmic ray holds the ray's own noise. :meth:`terms` returns every term for logging.
    """

    def __init__(self, config: LossConfig = LossConfig(kind="science")):
        self.config = config

    def terms(self, y_true, y_pred, star_mask, noise_sigma) -> dict:
        """Batch means of every term and of the total, as a dict of scalars."""
        c = self.config
        sky = ops.cast(_f32(star_mask)[0] <= 1e-3, "float32")
        terms = {"sigma_huber": noise_normalized_huber(y_true, y_pred, noise_sigma, c.huber_delta)}
        total = terms["sigma_huber"]
        if c.flux_weight > 0:
            terms["flux"] = block_flux_error(y_true, y_pred, noise_sigma, c.flux_block)
            total = total + c.flux_weight * terms["flux"]
        if c.compact_weight > 0:
            terms["compact"] = compact_residual_penalty(y_true, y_pred, noise_sigma, sky, c.compact_fwhm)
            total = total + c.compact_weight * terms["compact"]
        terms["loss"] = total
        return {name: ops.mean(value) for name, value in terms.items()}

    def __call__(self, y_true, y_pred, star_mask, noise_sigma):
        return self.terms(y_true, y_pred, star_mask, noise_sigma)["loss"]


class NoiseNormalizedError:
    """Class form of :func:`noise_normalized_error`: ``loss(y_true, y_pred, noise_sigma)``, batch mean."""

    def __init__(self, power: int = 1):
        self.power = power

    def __call__(self, y_true, y_pred, noise_sigma):
        return ops.mean(noise_normalized_error(y_true, y_pred, noise_sigma, self.power))


class ApertureFluxError:
    """Class form of :func:`aperture_flux_error`: ``loss(y_true, y_pred, noise_sigma, source_labels)``."""

    def __init__(self, max_sources: int):
        self.max_sources = max_sources

    def __call__(self, y_true, y_pred, noise_sigma, source_labels):
        return ops.mean(aperture_flux_error(y_true, y_pred, noise_sigma, source_labels, self.max_sources))


class CompactResidualPenalty:
    """Class form of :func:`compact_residual_penalty`: ``loss(y_true, y_pred, noise_sigma, sky_mask)``."""

    def __init__(self, fwhm: float):
        self.fwhm = fwhm

    def __call__(self, y_true, y_pred, noise_sigma, sky_mask):
        return ops.mean(compact_residual_penalty(y_true, y_pred, noise_sigma, sky_mask, self.fwhm))


# --------------------------------------------------------------------------- adversarial terms (Pix2Pix)
#
# The conditional GAN of the enhanced Pix2Pix (Xu §3.1, eq. 1-3). The discriminator returns logits per
# patch, shape (N, h, w, 1); each term returns one value per sample, shape (N,). Binary cross-entropy is
# written with softplus: -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z), stable for
# logits of any size.


def l1_loss(y_true, y_pred):
    """Mean absolute error per sample: the paper's reconstruction term ``E[||y - G(x)||_1]`` (eq. 2)."""
    y_true, y_pred = _f32(y_true, y_pred)
    return ops.mean(ops.abs(y_pred - y_true), axis=(1, 2, 3))


def discriminator_loss(real_logits, fake_logits):
    """Binary cross-entropy of the discriminator on real and generated pairs, halved (eq. 1).

    ``½ [mean(-log D(x, y)) + mean(-log(1 - D(x, G(x))))]`` per sample: minimising it maximises eq. 1.
    The half slows the discriminator relative to the generator (Isola et al. 2017, §3.3).
    """
    real, fake = _f32(real_logits, fake_logits)
    return 0.5 * (ops.mean(ops.softplus(-real), axis=(1, 2, 3)) + ops.mean(ops.softplus(fake), axis=(1, 2, 3)))


def generator_adversarial_loss(fake_logits):
    """The generator's adversarial term, ``mean(-log D(x, G(x)))`` per sample.

    The non-saturating form of eq. 2's ``log(1 - D(x, G(x)))`` (Goodfellow et al. 2014, §3): the
    same fixed point, with gradients that do not vanish while the discriminator wins.
    """
    (fake,) = _f32(fake_logits)
    return ops.mean(ops.softplus(-fake), axis=(1, 2, 3))


class Pix2PixLoss:
    """The enhanced Pix2Pix objectives (Xu eq. 1–3), batch means.

    Generator: ``adversarial + l1_weight · reconstruction``; discriminator: :func:`discriminator_loss`.
    ``reconstruction`` is :func:`l1_loss` (the paper) or the composite star-aware loss.

    Parameters
    ----------
    l1_weight : float
        λ of eq. 2.
    composite : AstroPicsLoss, optional
        Reconstruction term in place of L1 (then its terms are logged too).
    """

    def __init__(self, l1_weight: float = 100.0, composite: AstroPicsLoss | None = None):
        if not l1_weight > 0:
            msg = f"`l1_weight` must be > 0. Received: l1_weight={l1_weight!r}"
            raise ValueError(msg)
        self.l1_weight = float(l1_weight)
        self.composite = composite

    def reconstruction_terms(self, y_true, y_pred, star_mask) -> dict:
        """The reconstruction term as ``"loss"`` (with the composite's own terms), batch means."""
        if self.composite is not None:
            return self.composite.terms(y_true, y_pred, star_mask)
        l1 = ops.mean(l1_loss(y_true, y_pred))
        return {"l1": l1, "loss": l1}

    def generator_terms(self, y_true, y_pred, star_mask, fake_logits) -> dict:
        """:meth:`reconstruction_terms`, ``"adversarial"`` and the generator's objective ``"generator"``."""
        terms = self.reconstruction_terms(y_true, y_pred, star_mask)
        terms["adversarial"] = ops.mean(generator_adversarial_loss(fake_logits))
        terms["generator"] = terms["adversarial"] + self.l1_weight * terms["loss"]
        return terms

    def discriminator_terms(self, real_logits, fake_logits) -> dict:
        """``"discriminator"`` (eq. 1) and the mean probabilities it gives real and generated pairs."""
        real, fake = _f32(real_logits, fake_logits)
        return {"discriminator": ops.mean(discriminator_loss(real, fake)),
                "d_real": ops.mean(ops.sigmoid(real)), "d_fake": ops.mean(ops.sigmoid(fake))}
