"""Metrics against known answers."""

import numpy as np
import pytest

from astrotf.metrics import noise_level


@pytest.mark.parametrize("sigma", [2.0, 8.09])
def test_noise_level_recovers_gaussian_sigma_despite_signal_and_nan(sigma):
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, sigma, (512, 512))
    image[:50] = rng.uniform(-3000, 3000, (50, 512))  # strong fields, outside the range
    image[-40:, :100] = np.nan  # off-disk
    fit = noise_level(image, (-20, 20))
    assert fit.sigma == pytest.approx(sigma, rel=0.02)
    assert abs(fit.mean) < 0.05 * sigma
    assert fit.model(fit.mean) == pytest.approx(fit.amplitude)


@pytest.mark.parametrize("sigma, step", [(1.0, 1.0), (2.5, 1.0), (4.0, 0.1), (3.0, 0.25)])
def test_noise_level_of_quantised_data(sigma, step):
    """Integer (ADU) or BSCALE data: bins on the grid, not a comb of empty and split bins."""
    rng = np.random.default_rng(1)
    image = np.round(rng.normal(1000.0, sigma, (400, 400)) / step) * step
    fit = noise_level(image.astype(np.float32), (1000 - 5 * sigma, 1000 + 5 * sigma))
    # binned at the grid values the fit sees the quantised Gaussian: sigma² + step² / 12
    assert fit.sigma == pytest.approx(np.hypot(sigma, step / np.sqrt(12)), rel=0.03)
    core = np.abs(fit.centers - 1000) < 2 * sigma
    assert np.all(fit.counts[core] > 0.5 * fit.model(fit.centers[core]))  # no empty or split bins
    with pytest.raises(ValueError, match="quantised in steps of 1"):
        noise_level(np.round(rng.normal(0, 0.3, (100, 100))), (-1, 1))


def test_noise_level_of_a_half_restored_output_has_no_comb():
    """Half of the pixels back on the input's 0.1 G grid, half continuous (a TDR restore): no aliasing."""
    rng = np.random.default_rng(2)
    noisy = np.round(rng.normal(0, 8, 400_000), 1).astype(np.float32)
    mixed = np.where(rng.random(noisy.size) < 0.5, noisy, rng.normal(0, 8, noisy.size)).astype(np.float32)
    fit = noise_level(mixed)
    core = np.abs(fit.centers) < 10
    roughness = np.abs(np.diff(fit.counts[core])).mean() / fit.counts[core].mean()
    assert roughness < 0.05  # bins with 1 and 3 grid levels made it about 0.3
    assert fit.sigma == pytest.approx(8.0, rel=0.02)


def test_noise_level_errors_name_the_problem():
    with pytest.raises(ValueError, match="value_range"):
        noise_level(np.zeros((20, 20)), (5, -5))
    with pytest.raises(ValueError, match="Too few pixels"):
        noise_level(np.full((20, 20), 1000.0))


# ----------------------------------------------------------------------------- PSNR / SSIM
from astropy.table import Table  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from astrotf import metrics  # noqa: E402
from astrotf.data.simulate import StarFieldConfig, simulate_star_field  # noqa: E402


def test_psnr_hand_computed_and_ignores_nan():
    reference = np.zeros((4, 4))
    image = reference.copy()
    image[0, 0] = 1.0  # MSE = 1/16 -> 10 log10(16)
    assert metrics.psnr(reference, image, data_range=1.0) == pytest.approx(10 * np.log10(16))
    image[3, 3] = np.nan  # 15 finite pixels left: MSE = 1/15
    assert metrics.psnr(reference, image, data_range=1.0) == pytest.approx(10 * np.log10(15))
    assert metrics.psnr(reference, reference, data_range=1.0) == np.inf


def test_psnr_default_data_range_is_reference_peak_to_peak():
    reference = np.array([[0.0, 4.0], [0.0, 0.0]])
    image = reference + np.array([[2.0, 0.0], [0.0, 0.0]])  # MSE = 1, range 4 -> 10 log10(16)
    assert metrics.psnr(reference, image) == pytest.approx(10 * np.log10(16))


def test_ssim_of_constant_images_is_the_luminance_term():
    # constant windows: SSIM = (2 mx my + c1) / (mx² + my² + c1), c1 = (0.01 L)²
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.25 + c1) / (0.5**2 + 0.25**2 + c1)
    assert metrics.ssim(np.full((16, 16), 0.5), np.full((16, 16), 0.25), data_range=1.0) == pytest.approx(expected)


def test_ssim_masks_nan_and_handles_channels():
    rng = np.random.default_rng(1)
    reference = rng.random((24, 24, 3))
    image = reference.copy()
    image[5, 5, :] = np.nan
    assert metrics.ssim(reference, image, data_range=1.0, channel_axis=-1) == pytest.approx(1.0)
    noisy = reference + rng.normal(0, 0.2, reference.shape)
    assert metrics.ssim(reference, noisy, data_range=1.0, channel_axis=-1) < 0.9


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"same shape.*\(4, 4\).*\(4, 5\)"):
        metrics.psnr(np.zeros((4, 4)), np.zeros((4, 5)))


# ----------------------------------------------------------------------------- background, spectra
def test_background_noise_hand_computed_clipping():
    # pass 1: median 2, MAD 1 -> sigma 1.4826: 1000 is clipped; pass 2 on 0..4 twice: median 2, MAD 1
    stats = metrics.background_noise(np.array([0.0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 1000, np.nan]))
    assert stats.median == pytest.approx(2.0)
    assert stats.sigma == pytest.approx(1.482602218505602)


def test_power_spectrum_of_a_cosine_has_one_peak_and_obeys_parseval():
    x = np.arange(64)
    image = np.cos(2 * np.pi * 8 / 64 * x)[None, :] * np.ones((64, 1))
    freq, power = metrics.power_spectrum(image, bins=32)
    peak = int(np.argmax(power))
    assert freq[peak] == pytest.approx((8 + 0.5) / 64)  # annulus [0.125, 0.140625)
    others = np.delete(power, peak)
    assert np.allclose(others, 0.0, atol=1e-9)


def test_divergence_frequency_finds_a_low_pass_cutoff():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(128, 128))
    fy, fx = np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij")
    b = np.real(np.fft.ifft2(np.fft.fft2(a) * (np.hypot(fx, fy) < 0.25)))
    f = metrics.divergence_frequency(a, b, bins=64)
    assert 0.25 <= f <= 0.25 + 2 / 128
    assert metrics.divergence_frequency(a, a.copy()) is None


# ----------------------------------------------------------------------------- correlation, KL
def test_correlation_hand_computed():
    x = np.array([1.0, 2, 3, 4])
    exact = metrics.correlation(x, 2 * x + 1)
    assert (exact.pearson, exact.slope, exact.intercept) == pytest.approx((1.0, 2.0, 1.0))
    # dx = (-1.5, -.5, .5, 1.5), dy = (-1.5, .5, -.5, 1.5): cov 4, var 5 -> slope 0.8, r 0.8
    fit = metrics.correlation(np.append(x, np.nan), np.array([1.0, 3, 2, 4, 7]))
    assert (fit.pearson, fit.slope, fit.intercept, fit.n_pixels) == pytest.approx((0.8, 0.8, 0.5, 4))


def test_kl_divergence_hand_computed():
    p = np.array([0.5, 1.5])  # histogram (1/2, 1/2) on bins [0, 1), [1, 2]
    q = np.array([0.5, 1.5, 1.5, 1.5])  # (1/4, 3/4)
    expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert metrics.kl_divergence(p, q, bins=2, value_range=(0, 2)) == pytest.approx(expected)
    assert metrics.kl_divergence(p, p, bins=2, value_range=(0, 2)) == 0.0


# ----------------------------------------------------------------------------- stars
def test_matching_is_one_to_one_and_optimal_where_greedy_fails():
    truth = np.array([[0.0, 0.0], [3.0, 0.0]])
    detected = np.array([[1.6, 0.0], [4.9, 0.0]])  # greedy takes (B, d0) at 1.4 px and strands A
    ti, di = metrics.match_sources(truth, detected, radius=2.0)
    assert ti.tolist() == [0, 1] and di.tolist() == [0, 1]
    ti, di = metrics.match_sources(truth, np.array([[1.5, 0.0]]), radius=2.0)  # one detection, one match
    assert len(ti) == 1
    assert len(metrics.match_sources(truth, np.array([[10.0, 10.0]]))[0]) == 0


def test_moffat_enclosed_fraction_hand_computed():
    beta = 2.0
    fwhm = 2 * np.sqrt(2 ** (1 / beta) - 1)  # gamma = 1: fraction(r = 1) = 1 - 2**(1 - beta) = 0.5
    assert metrics.moffat_enclosed_fraction(1.0, fwhm, beta) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def bright_field():
    config = StarFieldConfig(shape=(128, 128), n_stars=(25, 25), flux_range=(2e4, 2e5), fwhm=(2.5, 2.5),
                             n_galaxies=(0, 0), sky=(100.0, 100.0))
    clean, truth = simulate_star_field(config, seed=7)
    rng = np.random.default_rng(8)
    noisy = rng.poisson(clean / 2.0) * 2.0 + rng.normal(0, 6.0, clean.shape)
    return clean, truth, noisy


def test_star_recovery_truth_image_recovers_every_star(bright_field):
    clean, truth, noisy = bright_field
    catalogue = metrics.Catalogue.from_table(truth)
    threshold = 3 * metrics.background_noise(noisy).sigma
    aperture = 2.5 * truth.meta["fwhm"]
    correction = metrics.moffat_enclosed_fraction(aperture, truth.meta["fwhm"], truth.meta["moffat_beta"])
    # stars closer than the matching radius to another star cannot both be resolved
    xy = np.column_stack([truth["x"], truth["y"]])
    separations = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1)) + np.eye(len(xy)) * 1e9
    assert separations.min() > 4.0, "fixture field must have resolvable stars"
    result = metrics.star_recovery(clean, catalogue, threshold, aperture=aperture, aperture_correction=correction)
    assert result.tpr == 1.0 and result.false_positives == 0 and result.precision == 1.0 and result.f1 == 1.0
    assert abs(result.flux_error_median) < 0.01
    blurred = metrics.star_recovery(gaussian_filter(clean, 2.0), catalogue, threshold, aperture=aperture,
                                    aperture_correction=correction)
    assert blurred.flux_error_median < -0.03  # flux spread outside the aperture


def test_snr_gain_is_one_for_the_input_and_above_one_for_a_cleaner_image(bright_field):
    clean, truth, noisy = bright_field
    x, y = np.asarray(truth["x"]), np.asarray(truth["y"])
    assert metrics.snr_gain(noisy, noisy, x, y, 3.0) == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    less_noisy = clean + rng.normal(0, 0.25 * metrics.background_noise(noisy).sigma, clean.shape)
    assert metrics.snr_gain(less_noisy, noisy, x, y, 3.0) == pytest.approx(4.0, rel=0.25)  # noise / 4


def test_catalogue_names_missing_columns():
    with pytest.raises(ValueError, match="missing: flux"):
        metrics.Catalogue.from_table(Table({"x": [1.0], "y": [2.0]}))
    cat = metrics.Catalogue.from_table(Table({"x": [1.0, 2], "y": [2.0, 3], "flux": [5.0, 6],
                                              "kind": ["star", "galaxy"]}))
    assert cat.star.tolist() == [True, False] and len(cat) == 2


def test_recovery_at_false_positives_picks_the_lowest_threshold_within_the_budget(bright_field):
    clean, truth, noisy = bright_field
    catalogue = metrics.Catalogue.from_table(truth)
    sigma = metrics.background_noise(noisy).sigma
    sigmas = np.arange(1.0, 10.01, 0.5)
    strict = metrics.recovery_at_false_positives(noisy, catalogue, 0, sigma, sigmas=sigmas)
    loose = metrics.recovery_at_false_positives(noisy, catalogue, 10, sigma, sigmas=sigmas)
    assert strict.false_positives == 0 and loose.false_positives <= 10
    assert loose.threshold <= strict.threshold and loose.true_positives >= strict.true_positives
    # the chosen threshold is the lowest of the scan that meets the budget: one step lower does not
    lower = strict.threshold / sigma - 0.5
    if lower >= sigmas[0]:
        assert metrics.star_recovery(noisy, catalogue, lower * sigma).false_positives > 0
    # same threshold, same answer as star_recovery
    again = metrics.star_recovery(noisy, catalogue, strict.threshold)
    assert (again.true_positives, again.false_positives) == (strict.true_positives, strict.false_positives)
    with pytest.raises(ValueError, match="max_false_positives"):
        metrics.recovery_at_false_positives(noisy, catalogue, -1, sigma)


# ----------------------------------------------------------------------------- what a denoiser kept
def test_strong_slope_is_not_diluted_by_noise():
    rng = np.random.default_rng(3)
    signal = np.zeros((200, 200))
    signal[50:80, 50:80] = 400.0
    signal[120:140, 20:60] = -250.0
    noisy = signal + rng.normal(0, 8, signal.shape)
    kept = metrics.strong_slope(noisy, signal + 0.0, 50.0)  # a perfect denoiser
    assert kept.slope == pytest.approx(1.0, abs=0.002) and kept.n_pixels == 30 * 30 + 20 * 40
    assert metrics.correlation(noisy, signal).slope < 0.99  # over all pixels: diluted
    assert metrics.strong_slope(noisy, 0.8 * signal, 50.0).slope == pytest.approx(0.8, abs=0.002)
    shifted = metrics.strong_slope(noisy + 1000, 0.5 * signal + 1000, 50.0, origin=1000.0)
    assert shifted.slope == pytest.approx(0.5, abs=0.002)
    assert np.isnan(metrics.strong_slope(noisy, signal, 1e6).slope)


def test_residual_structure_is_one_for_white_noise_and_large_for_a_blob():
    rng = np.random.default_rng(4)
    white = rng.normal(0, 3, (300, 300))
    assert metrics.residual_structure(white) == pytest.approx(1.0, abs=0.08)
    yy, xx = np.mgrid[:300, :300]
    blob = white + 3 * np.exp(-((yy - 150) ** 2 + (xx - 150) ** 2) / (2 * 30.0**2))
    assert metrics.residual_structure(blob) > 1.5  # a blob of one noise sigma, 30 px wide
    white[:20] = np.nan  # incomplete tiles are left out
    assert metrics.residual_structure(white) == pytest.approx(1.0, abs=0.08)
    with pytest.raises(ValueError, match="Too few complete"):
        metrics.residual_structure(white[:15, :15])


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0, 5.0])
def test_background_noise_of_integer_data_does_not_jump_between_levels(sigma):
    """The MAD of integer data of sigma 2 is exactly 1 (1.48 after scaling); dithered, it is right."""
    rng = np.random.default_rng(5)
    frame = np.rint(rng.normal(1000.0, sigma, (500, 500)))
    frame[100:110, 100:110] += 5000.0  # a star the clipping removes
    sky = metrics.background_noise(frame)
    assert sky.sigma == pytest.approx(np.hypot(sigma, 1 / np.sqrt(12)), rel=0.03)
    assert abs(sky.median - 1000.0) < 0.05 * sigma
    assert metrics.background_noise(frame.astype(np.float32) / 255.0).sigma == pytest.approx(sky.sigma / 255, rel=1e-2)


def test_a_few_repeated_values_in_continuous_data_are_no_grid():
    """Masked zeros, a saturation level and a flag value among continuous sky: not quantised."""
    rng = np.random.default_rng(6)
    sky = rng.normal(100.0, 0.01, (500, 500))
    sky[:150], sky[-10:], sky[200:210] = 0.0, 65535.0, 1.0
    assert metrics.background_noise(sky).sigma == pytest.approx(0.01, rel=0.05)
    assert noise_level(sky, (99.95, 100.05)).sigma == pytest.approx(0.01, rel=0.05)
