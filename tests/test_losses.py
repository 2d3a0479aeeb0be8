"""Loss terms against NumPy references on small arrays."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from astrotf import losses

REC709 = np.array([0.2126, 0.7152, 0.0722], np.float32)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    y_true = rng.random((2, 24, 32, 3), dtype=np.float32)
    y_pred = np.clip(y_true + rng.normal(0, 0.1, y_true.shape), 0, 1).astype(np.float32)
    mask = rng.random((2, 24, 32, 1), dtype=np.float32)
    return y_true, y_pred, mask


def test_star_weighted_l1_matches_numpy(batch):
    y_true, y_pred, mask = batch
    weight = 1 - 0.3 * mask
    expected = (weight * np.abs(y_pred - y_true)).mean(axis=(1, 2, 3))
    got = np.asarray(losses.star_weighted_l1(y_true, y_pred, mask, star_weight=0.7))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_star_weighted_l1_gives_less_weight_in_stars(batch):
    y_true, y_pred, _ = batch
    no_star = np.zeros_like(y_true[..., :1])
    all_star = np.ones_like(no_star)
    ratio = losses.star_weighted_l1(y_true, y_pred, all_star, 0.25) / losses.star_weighted_l1(
        y_true, y_pred, no_star, 0.25
    )
    np.testing.assert_allclose(np.asarray(ratio), 0.25, rtol=1e-5)


def test_ssim_matches_skimage_on_interior(batch):
    y_true, y_pred, _ = batch
    got = np.asarray(losses.ssim(y_true, y_pred, data_range=1.0))
    for i in range(2):
        _, full = structural_similarity(
            y_true[i], y_pred[i], data_range=1.0, channel_axis=-1, gaussian_weights=True,
            sigma=1.5, use_sample_covariance=False, full=True,
        )
        # skimage pads at the border; compare the windows fully inside the image (radius 5).
        expected = full[5:-5, 5:-5].mean()
        np.testing.assert_allclose(got[i], expected, rtol=1e-4)


def test_ssim_loss_zero_for_identical_images(batch):
    y_true, _, _ = batch
    np.testing.assert_allclose(np.asarray(losses.ssim_loss(y_true, y_true)), 0.0, atol=1e-5)


def test_brightness_consistency_matches_numpy(batch):
    y_true, y_pred, mask = batch
    block = 8

    def cells(a):
        n, h, w, c = a.shape
        return a[:, : h // block * block, : w // block * block].reshape(
            n, h // block, block, w // block, block, c).mean(axis=(2, 4))

    lum_t, lum_p = (y_true @ REC709)[..., None], (y_pred @ REC709)[..., None]
    weight = 1 - cells(mask)
    diff = np.abs(cells(lum_p) - cells(lum_t))
    expected = (weight * diff).sum(axis=(1, 2, 3)) / (weight.sum(axis=(1, 2, 3)) + 1e-6)
    got = np.asarray(losses.brightness_consistency(y_true, y_pred, mask, block))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_brightness_consistency_sees_offset_but_not_zero_mean_noise():
    rng = np.random.default_rng(1)
    y = np.full((1, 32, 32, 1), 0.3, np.float32)
    mask = np.zeros_like(y)
    noise = rng.choice([-0.05, 0.05], size=y.shape).astype(np.float32)
    # checkerboard-balanced noise averages out in 8x8 cells; a global offset does not
    noise = noise - noise.reshape(1, 4, 8, 4, 8, 1).mean(axis=(2, 4), keepdims=True).repeat(
        8, 2).repeat(8, 4).reshape(y.shape)
    assert float(losses.brightness_consistency(y, y + noise, mask)[0]) < 1e-6
    np.testing.assert_allclose(float(losses.brightness_consistency(y, y + 0.02, mask)[0]), 0.02, rtol=1e-4)


def test_star_total_variation_matches_numpy(batch):
    y_true, y_pred, mask = batch
    err = y_pred - y_true
    dx = np.abs(np.diff(err, axis=2)) * mask[:, :, 1:]
    dy = np.abs(np.diff(err, axis=1)) * mask[:, 1:]
    expected = dx.mean(axis=(1, 2, 3)) + dy.mean(axis=(1, 2, 3))
    got = np.asarray(losses.star_total_variation(y_true, y_pred, mask))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_star_total_variation_ignores_sky_and_true_profile():
    y = np.zeros((1, 16, 16, 1), np.float32)
    y[0, 8, 8, 0] = 1.0  # a sharp star in the target
    mask = np.zeros_like(y)
    mask[0, 4:12, 4:12] = 1.0
    # an exact prediction of a sharp star costs nothing; ringing inside the mask does
    assert float(losses.star_total_variation(y, y, mask)[0]) == 0.0
    ring = y.copy()
    ring[0, 6:11, 6:11, 0] += np.array([0.1, -0.1, 0.1, -0.1, 0.1], np.float32)
    assert float(losses.star_total_variation(y, ring, mask)[0]) > 0.0
    # the same ringing far outside the mask is not this term's business
    far = y.copy()
    far[0, 0:3, 13:16, 0] += 0.1
    assert float(losses.star_total_variation(y, far, mask)[0]) == 0.0


def test_composite_combines_terms_with_weights(batch):
    y_true, y_pred, mask = batch
    cfg = losses.LossConfig(beta=0.3, gamma=0.2, delta=0.05, star_weight=0.6)
    terms = {k: float(v) for k, v in losses.AstroPicsLoss(cfg).terms(y_true, y_pred, mask).items()}
    expected = (0.7 * terms["l1_weighted"] + 0.3 * terms["ssim"] + 0.2 * terms["brightness"]
                + 0.05 * terms["tv_stars"])
    np.testing.assert_allclose(terms["loss"], expected, rtol=1e-5)
    l1 = np.mean((1 - 0.4 * mask) * np.abs(y_pred - y_true))
    np.testing.assert_allclose(terms["l1_weighted"], l1, rtol=1e-5)
    assert float(losses.AstroPicsLoss(cfg)(y_true, y_true, mask)) < 1e-5


# --------------------------------------------------------------------------- science terms


@pytest.fixture
def linear_batch():
    rng = np.random.default_rng(3)
    y_true = rng.uniform(50, 500, (2, 40, 48, 1)).astype(np.float32)
    sigma = np.sqrt(y_true / 2.0 + 9.0).astype(np.float32)
    y_pred = (y_true + rng.normal(0, 1, y_true.shape) * sigma * 0.5).astype(np.float32)
    return y_true, y_pred, sigma


@pytest.mark.parametrize("power", [1, 2])
def test_noise_normalized_error_matches_numpy(linear_batch, power):
    y_true, y_pred, sigma = linear_batch
    expected = (np.abs(y_pred - y_true) / sigma) ** power
    got = np.asarray(losses.noise_normalized_error(y_true, y_pred, sigma, power))
    np.testing.assert_allclose(got, expected.mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(float(losses.NoiseNormalizedError(power)(y_true, y_pred, sigma)), got.mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="power"):
        losses.noise_normalized_error(y_true, y_pred, sigma, 3)


def test_noise_normalized_error_is_independent_of_flux_units(linear_batch):
    y_true, y_pred, sigma = linear_batch
    a = losses.noise_normalized_error(y_true, y_pred, sigma)
    b = losses.noise_normalized_error(7 * y_true + 3, 7 * y_pred + 3, 7 * sigma)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4)


def test_aperture_flux_error_matches_numpy(linear_batch):
    from astrotf.data.prior import aperture_labels

    y_true, y_pred, sigma = linear_batch
    labels = np.stack([aperture_labels((40, 48), [10.0, 30.5, 12.0], [8.0, 20.0, 30.0], 3.5),
                       aperture_labels((40, 48), [24.0], [20.0], 5.0)])[..., None]
    expected = []
    for i in range(2):
        errors = []
        for k in range(1, labels[i].max() + 1):
            ap = labels[i, ..., 0] == k
            df = abs(y_pred[i, ..., 0][ap].sum(dtype=np.float64) - y_true[i, ..., 0][ap].sum(dtype=np.float64))
            errors.append(df / np.sqrt((sigma[i, ..., 0][ap].astype(np.float64) ** 2).sum()))
        expected.append(np.mean(errors))
    got = np.asarray(losses.aperture_flux_error(y_true, y_pred, sigma, labels, max_sources=5))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    empty = np.zeros_like(labels)
    np.testing.assert_array_equal(np.asarray(losses.aperture_flux_error(y_true, y_pred, sigma, empty, 5)), [0, 0])
    np.testing.assert_allclose(float(losses.ApertureFluxError(5)(y_true, y_pred, sigma, labels)), np.mean(expected),
                               rtol=1e-4)


def test_aperture_flux_error_sees_a_lost_flux_fraction():
    from astrotf.data.prior import aperture_labels

    yy, xx = np.mgrid[0:32, 0:32]
    star = 100.0 + 5000.0 * np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / (2 * 1.5**2))
    y_true = star[None, ..., None].astype(np.float32)
    sigma = np.sqrt(y_true)
    labels = aperture_labels((32, 32), [16.0], [16.0], 5.0)[None, ..., None]
    dimmer = 100.0 + 0.94 * (y_true - 100.0)  # 6 % of the star's flux lost, as in issue #21
    got = float(losses.aperture_flux_error(y_true, dimmer, sigma, labels, 1)[0])
    lost = 0.06 * (y_true - 100.0)[0, ..., 0][labels[0, ..., 0] == 1].sum()
    np.testing.assert_allclose(got, lost / np.sqrt((sigma[0, ..., 0][labels[0, ..., 0] == 1] ** 2).sum()), rtol=1e-4)
    assert got > 3.0  # many aperture σ: a term that the per-pixel error barely notices


def _smooth_numpy(r, fwhm):
    s = fwhm / 2.3548200450309493
    radius = max(int(np.ceil(3 * s)), 1)
    g = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * s * s))
    g /= g.sum()
    k = np.outer(g, g)
    h, w = r.shape
    out = np.zeros((h - 2 * radius, w - 2 * radius))
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out += k[dy, dx] * r[dy : dy + h - 2 * radius, dx : dx + w - 2 * radius]
    return out, radius, (k**2).sum()


def test_compact_residual_penalty_matches_numpy(linear_batch):
    y_true, y_pred, sigma = linear_batch
    rng = np.random.default_rng(4)
    mask = (rng.random((2, 40, 48, 1)) > 0.3).astype(np.float32)
    fwhm = 2.5
    expected = []
    for i in range(2):
        smooth, radius, white = _smooth_numpy(((y_pred[i] - y_true[i]) / sigma[i])[..., 0].astype(np.float64), fwhm)
        m = mask[i, radius:-radius, radius:-radius, 0]
        expected.append((m * smooth**2).sum() / m.sum() / white)
    got = np.asarray(losses.compact_residual_penalty(y_true, y_pred, sigma, mask, fwhm))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    np.testing.assert_allclose(float(losses.CompactResidualPenalty(fwhm)(y_true, y_pred, sigma, mask)),
                               np.mean(expected), rtol=1e-4)


def test_compact_residual_penalty_scores_white_noise_by_its_variance_and_blobs_far_higher():
    rng = np.random.default_rng(5)
    shape = (1, 128, 128, 1)
    y_true = np.full(shape, 100.0, np.float32)
    sigma = np.full(shape, 10.0, np.float32)
    mask = np.ones(shape, np.float32)
    white = y_true + 0.5 * sigma * rng.normal(size=shape).astype(np.float32)  # residual variance 0.25
    white_score = float(losses.compact_residual_penalty(y_true, white, sigma, mask, 3.0)[0])
    assert white_score == pytest.approx(0.25, rel=0.1)
    blobs = np.zeros(shape[1:3])
    yy, xx = np.mgrid[0:128, 0:128]
    for cy, cx in rng.uniform(10, 118, (30, 2)):
        blobs += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.3**2))
    blobs *= 0.5 / blobs.std()  # the same pixel RMS as the white residual
    blob_score = float(losses.compact_residual_penalty(y_true, y_true + sigma * blobs[None, ..., None], sigma,
                                                       mask, 3.0)[0])
    assert blob_score > 5 * white_score


def test_noise_normalized_huber_is_squared_within_delta_and_linear_beyond(linear_batch):
    y_true, y_pred, sigma = linear_batch
    y_pred = y_pred.copy()
    y_pred[0, 3, 4, 0] = y_true[0, 3, 4, 0] + 300 * sigma[0, 3, 4, 0]  # a cosmic ray left in
    z = np.abs(y_pred - y_true) / sigma
    expected = np.where(z <= 3.0, z**2, 6.0 * z - 9.0).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(losses.noise_normalized_huber(y_true, y_pred, sigma, 3.0)), expected,
                               rtol=1e-5)
    squared = np.asarray(losses.noise_normalized_error(y_true, y_pred, sigma, 2))
    assert squared[0] > 10 * expected[0]  # the squared error is dominated by the one pixel
    with pytest.raises(ValueError, match="delta"):
        losses.noise_normalized_huber(y_true, y_pred, sigma, 0.0)


def test_block_flux_error_matches_numpy_and_sees_a_sky_offset(linear_batch):
    y_true, y_pred, sigma = linear_batch
    d, s2 = (y_pred - y_true)[:, :40, :48], (sigma**2)[:, :40, :48]
    cells = d.reshape(2, 5, 8, 6, 8, 1).sum(axis=(2, 4)) / np.sqrt(s2.reshape(2, 5, 8, 6, 8, 1).sum(axis=(2, 4)))
    got = np.asarray(losses.block_flux_error(y_true, y_pred, sigma, 8))
    np.testing.assert_allclose(got, np.abs(cells).mean(axis=(1, 2, 3)), rtol=1e-4)
    # a sky 0.1 sigma too high: each cell of 64 px is off by 0.1 * 64 / 8 = 0.8 sigma_F
    shifted = np.asarray(losses.block_flux_error(y_true, y_true + 0.1 * sigma, sigma, 8))
    np.testing.assert_allclose(shifted, 0.8, rtol=0.05)


def test_science_loss_sums_its_weighted_terms_and_is_zero_for_the_truth(linear_batch):
    from astrotf.config import LossConfig

    y_true, y_pred, sigma = linear_batch
    mask = np.zeros(y_true.shape, np.float32)
    mask[:, 10:20, 10:20] = 1.0
    config = LossConfig(kind="science", flux_weight=0.3, compact_weight=0.2)
    terms = {k: float(v) for k, v in losses.ScienceLoss(config).terms(y_true, y_pred, mask, sigma).items()}
    sky = (mask <= 1e-3).astype(np.float32)
    np.testing.assert_allclose(terms["compact"], float(np.mean(losses.compact_residual_penalty(
        y_true, y_pred, sigma, sky, 3.0))), rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], terms["sigma_huber"] + 0.3 * terms["flux"] + 0.2 * terms["compact"],
                               rtol=1e-5)
    assert float(losses.ScienceLoss(config)(y_true, y_true, mask, sigma)) < 1e-6
