"""The input's sky level given back to a denoised frame: unbiased sky, untouched sources and fine detail."""

import numpy as np
import pytest

from astrotf.errors import AstroTFError
from astrotf.sky_level import keep_sky_level

SIGMA = 5.0


def field(seed=0, shape=(160, 192), sky=100.0, stars=12):
    """Noise-free frame (sky + Gaussian stars) and a noisy one, (H, W, 1); star positions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    truth = np.full(shape, sky)
    xy = rng.uniform(10, np.array(shape[::-1]) - 10, (stars, 2))
    for x, y in xy:
        truth += 400.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    noisy = truth + rng.normal(0.0, SIGMA, shape)
    return truth[..., None].astype(np.float32), noisy[..., None].astype(np.float32), xy


def sky_pixels(truth, sky=100.0):
    return (truth[..., 0] - sky) < 0.01 * SIGMA


def aperture_sum(image, xy, radius=4.0):
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return np.array([image[..., 0][(xx - x) ** 2 + (yy - y) ** 2 <= radius**2].sum() for x, y in xy])


def test_a_biased_sky_comes_back_to_the_input_level_and_star_fluxes_stay():
    truth, noisy, xy = field()
    rng = np.random.default_rng(1)
    # a denoiser that keeps a tenth of the noise and leaves the sky 0.1 sigma too high
    denoised = truth + 0.1 * (noisy - truth) + 0.1 * SIGMA + rng.normal(0, 0.01 * SIGMA, truth.shape).astype(np.float32)
    kept = keep_sky_level(denoised, noisy, np.full_like(noisy, SIGMA))
    sky = sky_pixels(truth)
    before = np.mean((denoised - truth)[..., 0][sky]) / SIGMA
    after = np.mean((kept.image - truth)[..., 0][sky]) / SIGMA
    assert before == pytest.approx(0.1, abs=0.005)
    assert abs(after) < 0.01
    assert 0.07 < kept.median_shift < 0.13 and kept.max_shift < 0.3
    # star fluxes: the 0.1 sigma offset over the aperture is taken off, nothing else moves
    offset = 0.1 * SIGMA * np.pi * 16
    np.testing.assert_allclose(aperture_sum(kept.image, xy), aperture_sum(denoised, xy) - offset, rtol=0.01)


def test_only_large_scales_change():
    truth, noisy, _ = field(seed=2)
    denoised = truth + 0.05 * SIGMA
    kept = keep_sky_level(denoised, noisy, np.full_like(noisy, SIGMA))
    correction = (kept.image - denoised)[..., 0]
    # the correction (about 0.05 sigma) is smooth: it changes by under 0.01 sigma from pixel to pixel
    assert np.abs(correction).mean() > 0.04 * SIGMA
    for axis in (0, 1):
        assert np.abs(np.diff(correction, axis=axis)).max() < 0.01 * SIGMA


def test_the_output_of_a_denoiser_that_changed_nothing_stays_exactly_as_it_is():
    _, noisy, _ = field(seed=3)
    kept = keep_sky_level(noisy.copy(), noisy, np.full_like(noisy, SIGMA))
    np.testing.assert_array_equal(kept.image, noisy)
    assert kept.max_shift == 0.0


def test_a_removed_cosmic_ray_does_not_spread_into_the_sky():
    truth, noisy, _ = field(seed=4, stars=0)
    hit = noisy.copy()
    hit[80, 90, 0] += 2000 * SIGMA  # the network takes it out; the sky must not get it back
    sigma = np.full_like(noisy, SIGMA)
    clean = keep_sky_level(truth.copy(), noisy, sigma).image
    np.testing.assert_allclose(keep_sky_level(truth.copy(), hit, sigma).image, clean, atol=0.002 * SIGMA)


def test_nan_stays_nan_and_a_colour_frame_is_corrected_per_channel():
    truth, noisy, _ = field(seed=5)
    data = np.concatenate([noisy, noisy + 50.0], axis=-1)
    denoised = np.concatenate([truth + 0.1 * SIGMA, truth + 50.0 - 0.1 * SIGMA], axis=-1)
    data[:8, :8] = np.nan
    denoised[:8, :8] = np.nan
    kept = keep_sky_level(denoised, data, np.full_like(data, SIGMA))
    assert np.isnan(kept.image[:8, :8]).all() and np.isfinite(kept.image[8:, 8:]).all()
    sky = sky_pixels(truth)
    sky[:8, :8] = False
    assert abs(np.mean((kept.image[..., 0] - truth[..., 0])[sky])) < 0.01 * SIGMA
    assert abs(np.mean((kept.image[..., 1] - truth[..., 0] - 50.0)[sky])) < 0.01 * SIGMA


def test_mismatched_shapes_and_a_scale_below_the_block_are_refused():
    _, noisy, _ = field(seed=6)
    with pytest.raises(AstroTFError, match="same"):
        keep_sky_level(noisy[:-1], noisy, noisy)
    with pytest.raises(AstroTFError, match="block"):
        keep_sky_level(noisy, noisy, noisy, scale=4.0)
