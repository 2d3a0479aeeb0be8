"""Detection depth, the matched-filter limit, sky bias and the no-truth measures, against known answers."""

import numpy as np
import pytest

from astrotf import metrics


def _gaussian_kernel(s: float, radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    k = np.exp(-0.5 * (x**2 + y**2) / s**2)
    return k / k.sum()


def _add_star(image, x, y, flux, s):
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    image += flux * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / s**2) / (2 * np.pi * s**2)


def test_matched_filter_gain_of_a_gaussian_is_sqrt_pi_sigma():
    for s in (1.5, 2.0, 3.0):
        assert metrics.matched_filter_gain(_gaussian_kernel(s, int(6 * s))) == pytest.approx(np.sqrt(np.pi) * s, rel=1e-3)


def test_matched_filter_raises_a_stars_peak_snr_by_the_expected_gain():
    """Many faint stars in white noise: filtered peak S/N over raw peak S/N matches sqrt(ΣP²) / max P."""
    rng = np.random.default_rng(0)
    s, sigma, flux = 2.0, 1.0, 60.0
    image = np.zeros((256, 256))
    centres = [(x, y) for x in range(16, 256, 32) for y in range(16, 256, 32)]
    for x, y in centres:
        _add_star(image, x, y, flux, s)
    noisy = image + rng.normal(0, sigma, image.shape)
    kernel = _gaussian_kernel(s, 12)
    filtered = metrics.psf_matched_filter(noisy, kernel)
    noise_raw = np.std(noisy - image)
    noise_mf = np.std(metrics.psf_matched_filter(noisy - image, kernel))
    peaks_raw = np.mean([image[y, x] for x, y in centres])
    peaks_mf = np.mean([metrics.psf_matched_filter(image, kernel)[y, x] for x, y in centres])
    gain = (peaks_mf / noise_mf) / (peaks_raw / noise_raw)
    assert gain == pytest.approx(metrics.matched_filter_gain(kernel), rel=0.05)
    assert filtered.shape == noisy.shape and np.isclose(filtered.sum(), noisy.sum(), rtol=1e-3)


def test_matched_filter_keeps_nan_where_it_was():
    image = np.ones((32, 32))
    image[5, 7] = np.nan
    out = metrics.psf_matched_filter(image, _gaussian_kernel(1.0, 3))
    assert np.isnan(out[5, 7]) and np.isfinite(np.delete(out.ravel(), 5 * 32 + 7)).all()
    with pytest.raises(ValueError, match="odd sides"):
        metrics.psf_matched_filter(image, np.ones((4, 4)))


def test_point_source_snr_background_and_source_limited():
    kernel = _gaussian_kernel(2.0, 12)
    n_eff = 4 * np.pi * 2.0**2  # noise-equivalent area of a Gaussian PSF
    snr = metrics.point_source_snr(np.array([100.0, 1e6, 0.0]), 25.0, kernel)
    assert snr[0] == pytest.approx(100 / np.sqrt(100 + n_eff * 25), rel=1e-3)
    assert snr[1] == pytest.approx(1e3, rel=0.01)  # source-limited: sqrt(F)
    assert snr[2] == 0.0


def test_sky_bias_of_a_shifted_image_is_the_shift_over_sigma():
    rng = np.random.default_rng(1)
    truth = np.full((100, 100), 50.0)
    noisy = truth + rng.normal(0, 4.0, truth.shape)
    assert abs(metrics.sky_bias(noisy, truth, 4.0)) < 0.03
    assert metrics.sky_bias(truth + 0.8, truth, 4.0) == pytest.approx(0.2)
    mask = np.zeros(truth.shape, bool)
    mask[:50] = True
    shifted = truth.copy()
    shifted[50:] += 100.0  # outside the sky mask: does not count
    assert metrics.sky_bias(shifted, truth, 4.0, mask) == 0.0
    with pytest.raises(ValueError, match="sigma"):
        metrics.sky_bias(truth, truth, 0.0)


def _field(seed=0, n=60, size=192, sigma=1.0, s=1.5, flux=(8.0, 400.0)):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(8, size - 8, n), rng.uniform(8, size - 8, n)
    flux = np.geomspace(*flux, n)
    clean = np.full((size, size), 10.0)
    for xi, yi, fi in zip(x, y, flux):
        _add_star(clean, xi, yi, fi, s)
    return clean, clean + rng.normal(0, sigma, clean.shape), np.column_stack([x, y]), flux


def test_precision_at_own_sigma_shows_an_over_smoothed_sky():
    """White noise at 1.5 σ gives few false sources after sep's filter; a smoothed residual sky many."""
    from scipy.ndimage import gaussian_filter

    clean, noisy, xy, _ = _field()
    smooth = clean + gaussian_filter(noisy - clean, 2.0)
    white = metrics.precision_at_sigma(metrics.subtract_background(noisy), xy, metrics.background_noise(noisy).sigma)
    smoothed = metrics.precision_at_sigma(metrics.subtract_background(smooth), xy,
                                          metrics.background_noise(smooth).sigma)
    assert white.n_false <= 5 and white.precision > 0.9
    assert smoothed.n_false > 5 * max(white.n_false, 1) and smoothed.precision < white.precision
    assert smoothed.true_positives == smoothed.found.sum() <= len(xy)


def test_detections_near_artefacts_are_neither_true_nor_false():
    clean, _, xy, _ = _field()
    sub = metrics.subtract_background(clean)
    sub[100, 30] += 500.0  # a hot pixel far from any star
    sub[99:102, 29:32] += 100.0
    hot = np.array([[30.0, 100.0]])
    with_hot = metrics.detect_and_match(sub, xy, 0.5)
    excluded = metrics.detect_and_match(sub, xy, 0.5, exclude_xy=hot)
    assert excluded.n_excluded == 1 and excluded.n_false == with_hot.n_false - 1


def test_matched_contamination_pools_the_allowance_and_ranks_smoothing():
    fields = [_field(seed) for seed in range(2)]
    subs = [metrics.subtract_background(noisy) for _, noisy, _, _ in fields]
    xys = [xy for _, _, xy, _ in fields]
    sigmas = [metrics.background_noise(noisy).sigma for _, noisy, _, _ in fields]
    assert metrics.false_allowance([(192, 192)] * 2) == 0  # 5 per 1024²: 0.35 here
    assert metrics.false_allowance([(1024, 1024), (512, 512)]) == 6
    k, dets = metrics.matched_contamination(subs, xys, sigmas, max_false=2)
    assert 0.5 < k < 2.0 and sum(d.n_false for d in dets) <= 2
    grid = np.geomspace(0.3, 1000.0, 200)  # the default grid
    below = grid[np.searchsorted(grid, k) - 1]
    assert sum(metrics.detect_and_match(s, t, below * sg).n_false for s, t, sg in zip(subs, xys, sigmas)) > 2



def test_the_psf_matched_filter_finds_more_stars_of_a_wide_psf_at_matched_contamination():
    """sep's 3×3 filter is close to optimal for a 1.5 px PSF, far from it for a 3 px one."""
    # sparse (the limit is for isolated stars), fluxes around the input's detection limit
    fields = [_field(seed, n=80, size=384, s=3.0, flux=(30.0, 150.0)) for seed in range(2)]
    xys = [xy for _, _, xy, _ in fields]
    kernel = _gaussian_kernel(3.0, 12)
    found = {}
    for name, images, pre in (("input", [n for _, n, _, _ in fields], False),
                              ("matched filter", [metrics.psf_matched_filter(n, kernel) for _, n, _, _ in fields], True)):
        subs = [metrics.subtract_background(i) for i in images]
        sigmas = [metrics.background_noise(i).sigma for i in images]
        _, dets = metrics.matched_contamination(subs, xys, sigmas, max_false=3, false_radius=7.0, prefiltered=pre)
        found[name] = sum(d.true_positives for d in dets)
    assert found["matched filter"] > 1.3 * found["input"], found


@pytest.mark.parametrize("s", [0.64, 1.27, 2.55])  # FWHM 1.5, 3, 6 px
def test_the_matched_filter_limit_sits_at_its_threshold_and_sep_does_not_pass_it(s):
    kernel = _gaussian_kernel(s, int(np.ceil(4 * s)) + 1)
    limit = metrics.matched_filter_limit(kernel, side=384, realisations=3)
    # about 4.5 sigma leaves 5 noise peaks per 1024^2; a star at the threshold's S/N is found half the time
    assert 3.8 < limit.threshold_sigma < 5.0 and limit.n_stars > 60
    assert limit.m50 == pytest.approx(-2.5 * np.log10(limit.threshold_sigma), abs=0.12)
    stricter = metrics.matched_filter_limit(kernel, side=384, realisations=3, per_reference=1.0)
    assert stricter.threshold_sigma > limit.threshold_sigma and stricter.m50 < limit.m50  # fewer false: shallower
    # sep's own detection (3x3 filter, 5 pixels) on isolated stars in white noise, at matched contamination
    rng = np.random.default_rng(5)
    noise = [rng.standard_normal((384, 384)) for _ in range(3)]
    allowed = metrics.false_allowance([(384, 384)] * 3)
    k, _ = metrics.matched_contamination(noise, [np.zeros((0, 2))] * 3, [1.0] * 3, allowed)
    snr, found = [], []
    for image in noise:
        xy = np.array([(x, y) for y in range(20, 370, 24) for x in range(20, 370, 24)], float)
        flux = rng.uniform(1.0, 12.0, len(xy)) / np.sqrt(np.sum(kernel**2))  # S/N = flux sqrt(sum P^2) / sigma
        field = image.copy()
        for (x, y), f in zip(xy, flux):
            _add_star(field, x, y, f, s)
        snr.append(flux * np.sqrt(np.sum(kernel**2)))
        found.append(metrics.detect_and_match(field, xy, k).found)
    m50_sep = metrics.completeness_magnitude(-2.5 * np.log10(np.concatenate(snr)), np.concatenate(found))
    assert m50_sep < limit.m50 + 0.03, (m50_sep, limit.m50)  # the limit is at least as deep


def test_completeness_magnitude_interpolates_the_half_point():
    mag = np.repeat(np.arange(15.0, 25.0, 0.25) + 0.125, 20)
    found = np.zeros(mag.size, bool)
    for i, m in enumerate(np.unique(mag)):
        frac = np.clip((22.0 - m) / 2.0 + 0.5, 0, 1)  # 50 % at 22.0, linear from 21 to 23
        found[i * 20:i * 20 + int(round(frac * 20))] = True
    assert metrics.completeness_magnitude(mag, found) == pytest.approx(22.0, abs=0.1)
    assert metrics.completeness_magnitude(mag, np.ones(mag.size, bool)) == pytest.approx(mag.max())
    assert np.isnan(metrics.completeness_magnitude(np.array([]), np.array([], bool)))
    # a few missed bright (saturated) stars do not end the curve at the bright end
    dipped = found.copy()
    dipped[:30] = False
    assert metrics.completeness_magnitude(mag, dipped) == pytest.approx(22.0, abs=0.15)


def test_source_flux_ratio_and_sky_shift_of_a_frame_without_truth():
    clean, noisy, _, _ = _field(seed=3, n=40, sigma=0.5)
    assert metrics.source_flux_ratio(noisy, noisy).ratio == pytest.approx(1.0)
    kept = metrics.source_flux_ratio(noisy, 10.0 + 0.9 * (noisy - 10.0))
    assert kept.ratio == pytest.approx(0.9, abs=0.01) and kept.n_sources >= 5
    mask = metrics.source_mask(noisy)
    assert 0.01 < mask.mean() < 0.5
    assert metrics.sky_bias(noisy + 0.25, noisy, 0.5, ~mask) == pytest.approx(0.5)


def test_source_flux_ratio_leaves_out_cosmic_rays_a_denoiser_may_remove():
    clean, noisy, _, _ = _field(seed=3, n=40, sigma=0.5)
    hit = noisy.copy()
    rng = np.random.default_rng(8)
    spots = rng.integers(20, min(hit.shape) - 20, (8, 2))
    for y, x in spots:
        hit[y, x] += 400.0  # one-pixel events, far sharper than the stars
    removed = noisy.copy()  # a denoiser that takes the rays out and keeps the stars
    measured = metrics.source_flux_ratio(hit, removed)
    assert measured.n_sharp >= 6 and measured.ratio == pytest.approx(1.0, abs=0.01)
    everything = metrics.source_flux_ratio(hit, removed, max_peak_fraction=np.inf)
    assert everything.n_sharp == 0 and everything.n_sources > measured.n_sources
