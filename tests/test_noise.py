"""Synthetic noise: statistics, reproducibility per seed, graph mode, config validation."""

import numpy as np
import pytest
import tensorflow as tf

from astrotf.data import noise

SEED = tf.constant([12, 34], tf.int64)


def flat(value=0.5, shape=(128, 128, 3)):
    return tf.fill(shape, tf.constant(value, tf.float32))


def lag1_autocorrelation(field):
    a = field - field.mean()
    return float((a[:, 1:] * a[:, :-1]).mean() / a.var())


def map_with_unknown_shapes(fn, sizes=((40, 56), (33, 64))):
    """Run ``fn(image, seed)`` inside Dataset.map over images of varying size."""
    images = [np.full((h, w, 3), 0.5, np.float32) for h, w in sizes]
    spec = tf.TensorSpec([None, None, 3], tf.float32)
    ds = tf.data.Dataset.from_generator(lambda: iter(images), output_signature=spec)
    ds = ds.enumerate().map(lambda i, x: (x, fn(x, tf.stack([i, tf.constant(5, tf.int64)]))))
    return [(x.numpy(), y.numpy()) for x, y in ds]


# --------------------------------------------------------------------------- gaussian


def test_gaussian_noise_mean_and_std():
    sigma = 0.05
    added = (noise.gaussian_noise(flat(), sigma, SEED) - flat()).numpy()
    standard_error = sigma / np.sqrt(added.size)
    assert abs(added.mean()) < 4 * standard_error
    assert added.std() == pytest.approx(sigma, rel=0.03)


def test_gaussian_noise_is_reproducible_per_seed():
    a = noise.gaussian_noise(flat(), 0.05, SEED)
    b = noise.gaussian_noise(flat(), 0.05, SEED)
    c = noise.gaussian_noise(flat(), 0.05, [12, 35])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gaussian_noise_runs_in_dataset_map_with_unknown_shapes():
    for x, y in map_with_unknown_shapes(lambda x, s: noise.gaussian_noise(x, 0.05, s)):
        assert y.shape == x.shape
        assert 0.03 < (y - x).std() < 0.07


def test_gaussian_noise_output_dtype_follows_input():
    out = noise.gaussian_noise(tf.cast(flat(), tf.float16), 0.05, SEED)
    assert out.dtype == tf.float16


def test_gaussian_noise_rejects_negative_sigma():
    with pytest.raises(ValueError, match="sigma=-0.1"):
        noise.gaussian_noise(flat(), -0.1, SEED)


# --------------------------------------------------------------------------- chroma


def test_chroma_noise_std_is_within_bilinear_band():
    # Bilinear upsampling of iid cells keeps ~(2/3) of sigma per pixel for large blocks.
    sigma = 0.05
    ratios = [
        (noise.chroma_noise(flat(), sigma, 16, [k, 1]) - flat()).numpy().std() / sigma
        for k in range(4)
    ]
    assert 0.55 < np.mean(ratios) < 0.8


def test_chroma_noise_is_spatially_correlated_unlike_gaussian():
    chroma = (noise.chroma_noise(flat(), 0.05, 16, SEED) - flat()).numpy()[..., 0]
    white = (noise.gaussian_noise(flat(), 0.05, SEED) - flat()).numpy()[..., 0]
    assert lag1_autocorrelation(chroma) > 0.8
    assert abs(lag1_autocorrelation(white)) < 0.1


def test_chroma_noise_differs_per_channel():
    field = (noise.chroma_noise(flat(), 0.05, 16, SEED) - flat()).numpy().reshape(-1, 3)
    correlation = np.corrcoef(field.T)
    assert np.all(np.abs(correlation[np.triu_indices(3, k=1)]) < 0.5)


def test_chroma_noise_handles_sizes_not_multiple_of_block():
    image = flat(shape=(37, 50, 1))
    out = noise.chroma_noise(image, 0.05, 16, SEED)
    assert out.shape == image.shape


def test_chroma_noise_rejects_block_below_one():
    with pytest.raises(ValueError, match="block=0"):
        noise.chroma_noise(flat(), 0.05, 0, SEED)


# --------------------------------------------------------------------------- banding


def test_horizontal_banding_is_constant_along_rows():
    field = (noise.banding_noise(flat(), 0.02, False, SEED) - flat()).numpy()
    assert np.all(np.ptp(field, axis=(1, 2)) == 0)  # one offset per row, all channels
    assert 0.01 < field[:, 0, 0].std() < 0.03  # rows differ


def test_vertical_banding_is_constant_along_columns():
    field = (noise.banding_noise(flat(), 0.02, True, SEED) - flat()).numpy()
    assert np.all(np.ptp(field, axis=(0, 2)) == 0)
    assert 0.01 < field[0, :, 0].std() < 0.03


def test_banding_orientation_can_be_a_tensor():
    field = noise.banding_noise(flat(), 0.02, tf.constant(True), SEED) - flat()
    assert np.all(np.ptp(field.numpy(), axis=(0, 2)) == 0)


# --------------------------------------------------------------------------- AstroPics mix


def test_identity_prob_one_returns_input_exactly():
    config = noise.AstroPicsNoiseConfig(identity_prob=1.0, low_noise_prob=0.0)
    image = tf.random.stateless_uniform((32, 32, 3), [1, 2], minval=-0.5, maxval=1.5)
    np.testing.assert_array_equal(noise.add_astropics_noise(image, config, SEED), image)


def test_low_noise_prob_one_adds_only_faint_noise():
    config = noise.AstroPicsNoiseConfig(identity_prob=0.0, low_noise_prob=1.0)
    for k in range(5):
        added = noise.add_astropics_noise(flat(), config, [k, 0]) - flat()
        assert added.numpy().std() <= config.low_noise_sigma[1]


def test_branch_probabilities_are_respected():
    config = noise.AstroPicsNoiseConfig(identity_prob=0.3, low_noise_prob=0.2)
    n = 200
    fn = tf.function(lambda s: noise.add_astropics_noise(flat(shape=(32, 32, 3)), config, s))
    stds = np.array([(fn(tf.constant([k, 9])) - 0.5).numpy().std() for k in range(n)])
    identity = np.mean(stds == 0)
    low = np.mean((stds > 0) & (stds <= config.low_noise_sigma[1]))
    for fraction, p in ((identity, 0.3), (low, 0.2)):
        assert abs(fraction - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_clip_keeps_values_in_unit_interval():
    config = noise.AstroPicsNoiseConfig(gaussian_sigma=(0.3, 0.5), identity_prob=0.0, low_noise_prob=0.0)
    image = tf.random.stateless_uniform((64, 64, 3), [3, 4])
    out = noise.add_astropics_noise(image, config, SEED).numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.min() == 0.0 and out.max() == 1.0  # the noise was strong enough to need it


def test_astropics_noise_runs_in_dataset_map_and_follows_dtype():
    config = noise.AstroPicsNoiseConfig()
    for x, y in map_with_unknown_shapes(lambda x, s: noise.add_astropics_noise(x, config, s)):
        assert y.shape == x.shape and y.dtype == np.float32
    assert noise.add_astropics_noise(tf.cast(flat(), tf.bfloat16), config, SEED).dtype == tf.bfloat16


def test_astropics_noise_is_reproducible_per_seed():
    config = noise.AstroPicsNoiseConfig(
        identity_prob=0.0, low_noise_prob=0.0, chroma_prob=1.0, banding_prob=1.0
    )
    a = noise.add_astropics_noise(flat(), config, SEED)
    np.testing.assert_array_equal(a, noise.add_astropics_noise(flat(), config, SEED))
    assert not np.array_equal(a, noise.add_astropics_noise(flat(), config, [12, 35]))


def test_the_switches_off_by_default_leave_the_tiles_as_before():
    """Recipes without the new switches make the same tiles: no random draw moved."""
    config = noise.AstroPicsNoiseConfig(identity_prob=0.0, low_noise_prob=0.0, chroma_prob=1.0, banding_prob=1.0)
    image = tf.random.stateless_uniform((48, 40, 3), [1, 2])
    seeds = noise._split(SEED, 5)  # add_astropics_noise's own draws, as before the switches existed
    sigma = noise._uniform(config.gaussian_sigma, seeds[1])
    x = noise.gaussian_noise(image, sigma, seeds[2])
    x = noise._maybe_banding(noise._maybe_chroma(x, config, seeds[3]), config, seeds[4])
    np.testing.assert_array_equal(noise.add_astropics_noise(image, config, SEED), tf.clip_by_value(x, 0.0, 1.0))


def test_stretched_noise_is_strongest_in_the_dark():
    image = tf.concat([tf.fill((64, 128, 1), 0.02), tf.fill((64, 128, 1), 0.8)], axis=0)
    out = noise.stretched_gaussian_noise(image, 0.05, 50.0, SEED).numpy()
    dark, bright = (out - image.numpy())[:64].std(), (out - image.numpy())[64:].std()
    assert 0.035 < dark < 0.06 and bright < 0.3 * dark
    assert abs(float(np.median(out[64:])) - 0.8) < 0.01  # unbiased where the noise is small


def test_hot_pixels_hit_the_asked_fraction_with_ones_and_zeros():
    out = noise.hot_pixels(flat(0.5, (200, 200, 3)), 0.01, SEED).numpy()
    changed = out != 0.5
    assert 0.007 < changed.any(axis=-1).mean() < 0.013
    assert set(np.unique(out[changed])) <= {0.0, 1.0} and 0.6 < (out[changed] == 1.0).mean() < 0.8


def test_quantise_and_jpeg_switches():
    base = dict(identity_prob=0.0, low_noise_prob=0.0, chroma_prob=0.0, banding_prob=0.0, gaussian_sigma=(0.02, 0.02))
    eight = noise.add_astropics_noise(flat(0.3), noise.AstroPicsNoiseConfig(**base, quantise_prob=1.0), SEED).numpy()
    np.testing.assert_allclose(eight * 255, np.round(eight * 255), atol=1e-4)
    plain = noise.add_astropics_noise(flat(0.3), noise.AstroPicsNoiseConfig(**base), SEED).numpy()
    jpeg = noise.add_astropics_noise(flat(0.3), noise.AstroPicsNoiseConfig(**base, jpeg_prob=1.0,
                                                                            jpeg_quality=(30, 30)), SEED).numpy()
    assert jpeg.std() < 0.8 * plain.std()  # JPEG at quality 30 smooths the white noise away
    mono = noise.add_astropics_noise(flat(0.3, (32, 32, 1)), noise.AstroPicsNoiseConfig(**base, jpeg_prob=1.0), SEED)
    assert mono.shape == (32, 32, 1)


@pytest.mark.parametrize("field,value", [("jpeg_quality", (50, 101)), ("stretch_prob", 1.5),
                                         ("hot_pixel_fraction", (0.1, 0.01))])
def test_bad_switch_settings_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        noise.AstroPicsNoiseConfig(**{field: value})


# --------------------------------------------------------------------------- physical noise


def physical(gain=1.0, dark=0.0, exposure_time=1.0):
    return noise.PhysicalNoiseConfig(
        read_noise=3.0, dark_current=dark, gain=gain, exposure_time=exposure_time
    )


def test_physical_noise_is_unbiased_with_short_exposure_variance():
    out = noise.add_physical_noise(flat(400.0, (128, 128, 1)), physical(), SEED, ratio=4.0).numpy()
    expected_var = 400 * 4 + (3 * 4) ** 2
    assert abs(out.mean() - 400) < 4 * np.sqrt(expected_var / out.size)
    assert out.var() == pytest.approx(expected_var, rel=0.05)


def test_physical_noise_converts_adu_with_gain():
    # 200 ADU at 2 e-/ADU = 400 e-; the variance in ADU^2 is the e- variance / gain^2.
    image = flat(200.0, (128, 128, 1))
    out = noise.add_physical_noise(image, physical(gain=2.0), SEED, ratio=4.0).numpy()
    expected_var = (400 * 4 + (3 * 4) ** 2) / 2.0**2
    assert abs(out.mean() - 200) < 4 * np.sqrt(expected_var / out.size)
    assert out.var() == pytest.approx(expected_var, rel=0.05)


def test_physical_noise_sigma_matches_empirical_std():
    config = physical(gain=1.5, dark=20.0, exposure_time=3.0)
    image = flat(150.0, (128, 128, 1))
    out = noise.add_physical_noise(image, config, SEED, ratio=2.5).numpy()
    predicted = noise.physical_noise_sigma(image, config, 2.5).numpy()
    assert out.std() == pytest.approx(predicted.mean(), rel=0.03)


def test_physical_noise_is_reproducible_and_draws_ratio_from_config():
    config = noise.PhysicalNoiseConfig()
    image = flat(400.0, (32, 32, 1))
    a = noise.add_physical_noise(image, config, SEED)
    np.testing.assert_array_equal(a, noise.add_physical_noise(image, config, SEED))
    assert not np.array_equal(a, noise.add_physical_noise(image, config, [12, 35]))
    low = noise.physical_noise_sigma(image, config, config.exposure_ratio[0]).numpy().mean()
    high = noise.physical_noise_sigma(image, config, config.exposure_ratio[1]).numpy().mean()
    assert 0.8 * low < a.numpy().std() < 1.2 * high


def test_physical_noise_keeps_negative_pixels_unbiased_and_passes_nan_through():
    image = tf.concat([flat(-50.0, (64, 64, 1)), flat(np.nan, (1, 64, 1))], axis=0)
    out = noise.add_physical_noise(image, physical(), SEED, ratio=4.0).numpy()
    assert abs(out[:64].mean() + 50) < 4 * 12 / 64  # only read noise, 12 ADU rms
    assert np.all(np.isnan(out[64:]))


def test_physical_noise_rejects_ratio_below_one():
    with pytest.raises(ValueError, match="ratio=0.5"):
        noise.add_physical_noise(flat(), noise.PhysicalNoiseConfig(), SEED, ratio=0.5)


# --------------------------------------------------------------------------- a detector drawn per tile


def test_detector_noise_is_the_short_exposure_with_the_noise_model_sigma():
    from astrotf.config.data import DetectorNoiseConfig
    from astrotf.noise_model import NoiseModel

    config = DetectorNoiseConfig(gain=(2.0, 2.0), read_noise=(5.0, 5.0), exposure_ratio=(4.0, 4.0),
                                 hot_pixel_rate=(0.0, 0.0), cosmic_ray_rate=(0.0, 0.0))
    clean = np.full((256, 256, 1), 4000.0, np.float32)
    noisy, target, sigma, target_sigma = (t.numpy() for t in noise.add_detector_noise(clean, config,
                                                                                       tf.constant([1, 2])))
    np.testing.assert_allclose(target, 4000.0 / (4 * 2))  # clean / (r * g), ADU
    np.testing.assert_allclose(target_sigma, np.sqrt(1025.0) / 2, rtol=1e-6)  # the true noise, from the target
    # Poisson(1000 e-) + N(0, 5 e-), in ADU: sd sqrt(1000 + 25) / 2
    assert abs(noisy.mean() - 500.0) < 0.2
    assert abs(noisy.std() - np.sqrt(1025.0) / 2) / (np.sqrt(1025.0) / 2) < 0.02
    np.testing.assert_allclose(sigma, NoiseModel(2.0, 5.0).sigma_map(noisy), rtol=1e-5)


def test_detector_noise_draws_a_detector_per_seed_and_is_reproducible():
    from astrotf.config.data import DetectorNoiseConfig

    config = DetectorNoiseConfig(hot_pixel_rate=(0.0, 0.0), cosmic_ray_rate=(0.0, 0.0))
    clean = np.full((64, 64, 1), 1000.0, np.float32)
    a = noise.add_detector_noise(clean, config, tf.constant([3, 4]))
    b = noise.add_detector_noise(clean, config, tf.constant([3, 4]))
    c = noise.add_detector_noise(clean, config, tf.constant([3, 5]))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    assert float(a[1][0, 0, 0]) != float(c[1][0, 0, 0])  # another gain or ratio: another target level


def test_detector_artefacts_are_sparse_positive_and_cosmic_rays_are_tracks():
    from astrotf.config.data import DetectorNoiseConfig

    config = DetectorNoiseConfig(hot_pixel_rate=(0.0, 0.0), cosmic_ray_rate=(1e-3, 1e-3),
                                 artefact_electrons=(1000.0, 2000.0))
    hits = noise.detector_artefacts(tf.constant([512, 512, 1]), config, tf.constant([0, 9])).numpy()[..., 0]
    assert hits.min() == 0.0
    starts = hits.size * 1e-3
    # about 3 px per ray (fewer where rays overlap or leave the frame), each 1000-2000 e-
    assert 2.5 * starts * 0.8 < np.count_nonzero(hits) < 3 * starts * 1.2
    assert hits[hits > 0].min() >= 1000.0
    lone = (hits > 0) & (np.roll(hits, 1, 0) == 0) & (np.roll(hits, -1, 0) == 0) & (np.roll(hits, 1, 1) == 0) \
        & (np.roll(hits, -1, 1) == 0) & (np.roll(hits, (1, 1), (0, 1)) == 0) & (np.roll(hits, (-1, -1), (0, 1)) == 0) \
        & (np.roll(hits, (1, -1), (0, 1)) == 0) & (np.roll(hits, (-1, 1), (0, 1)) == 0)
    assert lone.sum() < 0.02 * np.count_nonzero(hits)  # tracks, not single pixels
    hot = noise.detector_artefacts(tf.constant([512, 512, 1]),
                                   DetectorNoiseConfig(hot_pixel_rate=(1e-3, 1e-3), cosmic_ray_rate=(0.0, 0.0)),
                                   tf.constant([0, 9])).numpy()
    assert 0.7 * 262 < np.count_nonzero(hot) < 1.3 * 262


def test_detector_noise_config_refuses_bad_ranges():
    from astrotf.config.data import DetectorNoiseConfig

    with pytest.raises(ValueError, match="exposure_ratio"):
        DetectorNoiseConfig(exposure_ratio=(0.5, 2.0))
    with pytest.raises(ValueError, match="hot_pixel_rate"):
        DetectorNoiseConfig(hot_pixel_rate=(0.0, 2.0))
    with pytest.raises(ValueError, match="gain"):
        DetectorNoiseConfig(gain=(0.0, 1.0))
