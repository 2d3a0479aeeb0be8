"""Soft star masks (§2.3) and Bernoulli masks on tiny synthetic star fields."""

import numpy as np
import pytest
import tensorflow as tf
from skimage.filters import gaussian
from skimage.morphology import dilation

from astrotf.data import masks

STARS = [(20, 20), (20, 70), (70, 45)]
SIZE = 96


def star_field(background=0.05, noise_sigma=0.01, peak=1.0, psf_sigma=1.5, channels=3, seed=0):
    """Gaussian stars on a noisy flat background, the same in every channel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = background + rng.normal(0, noise_sigma, (SIZE, SIZE))
    for y, x in STARS:
        image += (peak - background) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * psf_sigma**2))
    return np.repeat(image[..., None], channels, axis=-1).astype(np.float32)


def far_from_stars(distance):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.all([np.hypot(yy - y, xx - x) > distance for y, x in STARS], axis=0)


# Cores (L > 0.6) reach ~1.6 px from the centre; the mask ends dilation + ceil(3 sigma) px further.
FAR = 2 + 2 + 5 + 1


def test_luminance_uses_rec709_for_rgb_and_identity_for_gray():
    rgb = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    expected = rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    np.testing.assert_allclose(masks.luminance(rgb)[..., 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(masks.luminance(rgb[..., :1]), rgb[..., :1])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        masks.luminance(rgb[..., :2])


def test_star_mask_is_in_unit_interval_with_one_channel():
    mask = masks.star_mask(star_field()).numpy()
    assert mask.shape == (SIZE, SIZE, 1) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0


def test_star_mask_is_high_on_stars_and_zero_on_far_sky():
    mask = masks.star_mask(star_field()).numpy()[..., 0]
    assert all(mask[y, x] > 0.9 for y, x in STARS)
    assert mask[far_from_stars(FAR)].max() < 1e-3


def test_star_mask_sigma_threshold_on_linear_data():
    image = star_field(background=100.0, noise_sigma=5.0, peak=5000.0, channels=1)
    mask = masks.star_mask(image, masks.StarMaskConfig(threshold_sigma=5.0)).numpy()[..., 0]
    assert all(mask[y, x] > 0.9 for y, x in STARS)
    # Stars of peak 5000 have cores to ~4.9 px above 125 (= 100 + 5 sigma).
    assert mask[far_from_stars(5 + 2 + 5 + 1)].max() < 1e-3


def test_star_mask_of_batch_equals_per_image():
    images = np.stack([star_field(seed=1), 3.0 * star_field(seed=2)])
    for config in (masks.StarMaskConfig(), masks.StarMaskConfig(threshold_sigma=5.0)):
        batch = masks.star_mask(images, config).numpy()
        assert batch.shape == (2, SIZE, SIZE, 1)
        for image, expected in zip(images, batch, strict=True):
            np.testing.assert_allclose(masks.star_mask(image, config), expected, atol=1e-6)


def test_nan_pixels_are_not_stars():
    image = star_field()
    image[40:50, 5:15] = np.nan  # empty sky
    image[70, 45, 1] = np.nan  # centre of a star: that pixel alone is not a core
    for config in (masks.StarMaskConfig(), masks.StarMaskConfig(threshold_sigma=5.0)):
        mask = masks.star_mask(image, config).numpy()[..., 0]
        assert np.all(np.isfinite(mask))
        assert mask[40:50, 5:15].max() < 1e-3
        assert all(mask[y, x] > 0.9 for y, x in STARS)  # neighbours still make it a star


def test_star_at_tile_edge_keeps_a_full_mask():
    yy, xx = np.mgrid[:32, :32]
    image = (0.05 + 0.95 * np.exp(-(yy**2 + (xx - 10) ** 2) / (2 * 1.5**2)))[..., None]
    mask = masks.star_mask(image).numpy()[..., 0]
    assert mask[0, 10] > 0.9


def test_dilation_and_blur_match_skimage_in_the_interior():
    rng = np.random.default_rng(3)
    image = (rng.random((32, 32, 1)) > 0.97).astype(np.float32)  # a few isolated cores
    config = masks.StarMaskConfig(threshold=0.5, dilation=2, blur_sigma=1.5)
    got = masks.star_mask(image, config).numpy()[..., 0]
    dilated = dilation(image[..., 0], np.ones((5, 5), bool))
    expected = gaussian(dilated, sigma=1.5, truncate=3.0, mode="constant", preserve_range=True)
    border = 2 + 5  # dilation + ceil(3 sigma): beyond it the padding is never seen
    interior = np.s_[border:-border, border:-border]
    np.testing.assert_allclose(got[interior], expected[interior], atol=1e-4)


def test_star_mask_runs_in_dataset_map_with_unknown_shapes():
    images = [star_field(), star_field()[:64, :80]]
    spec = tf.TensorSpec([None, None, 3], tf.float32)
    ds = tf.data.Dataset.from_generator(lambda: iter(images), output_signature=spec).map(masks.star_mask)
    for image, mask in zip(images, ds, strict=True):
        assert mask.shape == image.shape[:2] + (1,)


# --------------------------------------------------------------------------- Bernoulli


def test_bernoulli_mask_is_binary_with_mean_keep_prob():
    keep_prob = 0.7
    mask = masks.bernoulli_mask((2, 64, 64, 3), keep_prob, [5, 6]).numpy()
    assert mask.shape == (2, 64, 64, 3) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert abs(mask.mean() - keep_prob) < 4 * np.sqrt(keep_prob * (1 - keep_prob) / mask.size)


def test_bernoulli_mask_is_reproducible_per_seed():
    a = masks.bernoulli_mask((32, 32, 1), 0.5, [5, 6])
    np.testing.assert_array_equal(a, masks.bernoulli_mask((32, 32, 1), 0.5, [5, 6]))
    assert not np.array_equal(a, masks.bernoulli_mask((32, 32, 1), 0.5, [5, 7]))


def test_bernoulli_mask_rejects_bad_keep_prob():
    with pytest.raises(ValueError, match="keep_prob=1.5"):
        masks.bernoulli_mask((8, 8, 1), 1.5, [5, 6])


def test_star_mask_with_a_noise_map_finds_sources_on_a_tilted_noise_free_sky():
    from astrotf.config.data import StarMaskConfig

    yy, xx = np.mgrid[0:96, 0:96]
    sky = 1000.0 + 8.0 * xx  # a gradient of 760 across: far above 0.5 sigma
    star = 40.0 * np.exp(-((xx - 30) ** 2 + (yy - 50) ** 2) / (2 * 1.5**2))
    truth = (sky + star)[..., None].astype(np.float32)
    sigma = np.full_like(truth, 10.0)
    mask = masks.star_mask(truth, StarMaskConfig(threshold_sigma=0.5, dilation=0, blur_sigma=0.0),
                     noise_sigma=sigma).numpy()[..., 0]
    assert mask[50, 30] == 1.0
    # exactly the star above 0.5 sigma and no sky, away from the edges, where the opening cannot see a
    # tilted sky's last half-window (there the sky may be counted as source: the loss then skips it)
    inner = (slice(12, -12), slice(12, -12))
    np.testing.assert_array_equal(mask[inner], (star > 5.0)[inner])
