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
