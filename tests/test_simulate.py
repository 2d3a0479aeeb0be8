import numpy as np
import pytest

from astrotf.data.simulate import StarFieldConfig, simulate_star_field

EMPTY = dict(n_galaxies=(0, 0), sky=(0.0, 0.0))


def test_single_star_total_flux_matches_request():
    config = StarFieldConfig(shape=(96, 96), n_stars=(1, 1), flux_range=(1e4, 1e4), fwhm=(2.5, 2.5), **EMPTY)
    image, catalogue = simulate_star_field(config, seed=9)
    x, y = catalogue["x"][0], catalogue["y"][0]
    assert 20 < x < 75 and 20 < y < 75, "test precondition: the star must lie well inside the field"
    assert len(catalogue) == 1 and catalogue["kind"][0] == "star"
    assert image.dtype == np.float32 and image.shape == (96, 96)
    np.testing.assert_allclose(image.sum(dtype=np.float64), 1e4, rtol=0.02)


def test_bright_isolated_stars_peak_at_catalogue_position():
    config = StarFieldConfig(shape=(256, 256), n_stars=(30, 30), flux_range=(1e4, 1e5), **EMPTY)
    image, catalogue = simulate_star_field(config, seed=1)
    xy = np.stack([catalogue["x"], catalogue["y"]], axis=1)
    distance = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy)) * 1e9
    checked = 0
    for (x, y), nearest in zip(xy, distance.min(axis=1)):
        ix, iy = round(x), round(y)
        if nearest < 12 or not (4 <= ix < 252 and 4 <= iy < 252):
            continue
        window = image[iy - 3 : iy + 4, ix - 3 : ix + 4]
        assert np.unravel_index(window.argmax(), window.shape) == (3, 3)
        checked += 1
    assert checked >= 15


def test_same_seed_same_field():
    config = StarFieldConfig(shape=(128, 128))
    image_a, catalogue_a = simulate_star_field(config, seed=7)
    image_b, catalogue_b = simulate_star_field(config, seed=7)
    image_c, _ = simulate_star_field(config, seed=8)
    np.testing.assert_array_equal(image_a, image_b)
    assert all(np.array_equal(catalogue_a[c], catalogue_b[c], equal_nan=c != "kind") for c in catalogue_a.colnames)
    assert not np.array_equal(image_a, image_c)


def test_sky_level_is_median_of_sparse_field():
    config = StarFieldConfig(shape=(256, 256), n_stars=(5, 5), n_galaxies=(0, 0), sky=(50.0, 150.0))
    image, catalogue = simulate_star_field(config, seed=0)
    assert 50.0 <= catalogue.meta["sky"] <= 150.0
    np.testing.assert_allclose(np.median(image), catalogue.meta["sky"], rtol=0.01)


def test_galaxies_are_catalogued_with_sersic_parameters():
    config = StarFieldConfig(shape=(128, 128), n_stars=(0, 0), n_galaxies=(3, 3), sky=(0.0, 0.0))
    image, catalogue = simulate_star_field(config, seed=2)
    assert list(catalogue["kind"]) == ["galaxy"] * 3
    assert np.all((catalogue["sersic_n"] >= 0.5) & (catalogue["sersic_n"] <= 4.0))
    assert np.all((catalogue["r_eff"] >= 2.0) & (catalogue["r_eff"] <= 10.0))
    assert image.sum() <= catalogue["flux"].sum() * (1 + 1e-5)


def test_config_accepts_lists_as_from_toml():
    config = StarFieldConfig(shape=[64, 32], sky=[10, 20])
    assert config.shape == (64, 32) and config.sky == (10, 20)


@pytest.mark.parametrize(
    "field, value",
    [
        ("shape", (0, 64)),
        ("shape", (64,)),
        ("n_stars", (5, 2)),
        ("n_stars", (1.5, 3)),
        ("flux_range", (0.0, 1e3)),
        ("fwhm", (-1.0, 2.0)),
        ("fwhm", (1.0, float("nan"))),
        ("n_galaxies", (-1, 2)),
        ("galaxy_flux", (10.0, 1.0)),
        ("sky", (-5.0, 5.0)),
        ("moffat_beta", 1.0),
        ("flux_slope", float("inf")),
        ("sky_gradient", 1.5),
        ("moffat_beta", (0.5, 3.0)),
        ("psf_ellipticity", (0.0, 1.0)),
        ("gaussian_fraction", 1.5),
        ("saturation", -1.0),
        ("cosmic_rays", (3, 1)),
        ("hot_pixels", (-1, 2)),
    ],
)
def test_config_rejects_invalid_values(field, value):
    with pytest.raises(ValueError, match=rf"`{field}`.*Received: {field}="):
        StarFieldConfig(**{field: value})


# --------------------------------------------------------------------------- broad prior


@pytest.mark.parametrize("seed, config, total, pixels, peak", [
    (7, StarFieldConfig(shape=(128, 128)), 4089153.985610962, [182.34733582, 188.47563171, 183.17120361, 189.42402649],
     7017.73046875),
    (3, StarFieldConfig(shape=(96, 160), n_galaxies=(4, 4), sky_gradient=0.3), 1642171.6981544495,
     [74.31400299, 69.62958527, 77.95966339, 68.51409912], 16856.595703125),
])
def test_default_settings_give_the_fields_made_before_the_broad_prior(seed, config, total, pixels, peak):
    """Recorded from simulate_star_field before the PSF options existed: datasets stay reproducible."""
    image, _ = simulate_star_field(config, seed=seed)
    np.testing.assert_allclose(image.sum(dtype=np.float64), total, rtol=1e-7)
    np.testing.assert_allclose(image.ravel()[[0, 1000, 5000, 9001]], pixels, rtol=1e-6)
    np.testing.assert_allclose(image.max(), peak, rtol=1e-6)


def _moments(image, x, y, radius=12):
    """FWHM (geometric mean, Gaussian-equivalent) and ellipticity from second moments around (x, y)."""
    iy, ix = round(y), round(x)
    cut = image[iy - radius : iy + radius + 1, ix - radius : ix + radius + 1].astype(np.float64)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    w = cut / cut.sum()
    mx, my = (w * xx).sum(), (w * yy).sum()
    cxx, cyy, cxy = (w * (xx - mx) ** 2).sum(), (w * (yy - my) ** 2).sum(), (w * (xx - mx) * (yy - my)).sum()
    eig = np.linalg.eigvalsh([[cxx, cxy], [cxy, cyy]])
    return 2.3548 * (eig[0] * eig[1]) ** 0.25, 1.0 - np.sqrt(eig[0] / eig[1])


def test_gaussian_elliptical_psf_has_the_drawn_width_and_ellipticity():
    config = StarFieldConfig(shape=(64, 64), n_stars=(1, 1), flux_range=(1e5, 1e5), fwhm=(3.0, 3.0),
                             gaussian_fraction=1.0, psf_ellipticity=(0.15, 0.15), **EMPTY)
    image, catalogue = simulate_star_field(config, seed=9)
    assert catalogue.meta["psf_kind"] == "gaussian" and catalogue.meta["psf_ellipticity"] == 0.15
    x, y = catalogue["x"][0], catalogue["y"][0]
    assert 13 < x < 51 and 13 < y < 51, "test precondition: the star must lie well inside the field"
    fwhm, ellipticity = _moments(image, x, y)
    # pixel integration adds 1/12 px² to each axis' variance
    assert fwhm == pytest.approx(2.3548 * np.sqrt((3.0 / 2.3548) ** 2 + 1 / 12), rel=0.02)
    assert ellipticity == pytest.approx(0.15, abs=0.02)
    np.testing.assert_allclose(image.sum(dtype=np.float64), 1e5, rtol=0.01)


def test_moffat_beta_range_and_undersampled_core_keep_the_flux():
    config = StarFieldConfig(shape=(96, 96), n_stars=(1, 1), flux_range=(1e4, 1e4), fwhm=(1.5, 1.5),
                             moffat_beta=(2.0, 6.0), **EMPTY)
    betas = []
    for seed in range(6):
        image, catalogue = simulate_star_field(config, seed=seed)
        betas.append(catalogue.meta["moffat_beta"])
        x, y = catalogue["x"][0], catalogue["y"][0]
        if 20 < x < 75 and 20 < y < 75:
            np.testing.assert_allclose(image.sum(dtype=np.float64), 1e4, rtol=0.03)
            assert image.max() > 0.2 * 1e4  # an undersampled core: a fifth of the flux in one pixel or more
    assert all(2.0 <= b <= 6.0 for b in betas) and len(set(betas)) == 6


def test_saturation_clips_the_field_and_flags_the_stars():
    config = StarFieldConfig(shape=(128, 128), n_stars=(20, 20), flux_range=(1e3, 1e6), saturation=5e3, **EMPTY)
    image, catalogue = simulate_star_field(config, seed=5)
    assert image.max() == pytest.approx(5e3)
    saturated = np.asarray(catalogue["saturated"])
    assert 0 < saturated.sum() < len(catalogue)
    assert np.all(catalogue["flux"][saturated] > np.median(catalogue["flux"][~saturated]))
    assert "saturated" not in simulate_star_field(StarFieldConfig(shape=(32, 32)), seed=5)[1].colnames


def test_artefacts_are_sharp_masked_and_seeded():
    from astrotf.data.artefacts import COSMIC_RAY, HOT_PIXEL, simulate_artefacts

    config = StarFieldConfig(shape=(128, 128), cosmic_rays=(15, 15), hot_pixels=(10, 10))
    artefacts, mask = simulate_artefacts(config, seed=3)
    again, _ = simulate_artefacts(config, seed=3)
    np.testing.assert_array_equal(artefacts, again)
    assert artefacts.dtype == np.float32 and mask.dtype == np.uint8
    assert np.all((artefacts > 0) == (mask > 0))
    assert ((mask & HOT_PIXEL) > 0).sum() == 10
    assert 15 <= ((mask & COSMIC_RAY) > 0).sum() <= 15 * 14
    # sharper than any PSF: a hot pixel with no other artefact around it has nothing in its 8 neighbours
    isolated = 0
    for y, x in zip(*np.nonzero(mask == HOT_PIXEL)):
        window = np.s_[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
        if mask[window].sum() == HOT_PIXEL:
            assert artefacts[window].sum() == artefacts[y, x] > 0
            isolated += 1
    assert isolated >= 5
    empty, none = simulate_artefacts(StarFieldConfig(shape=(16, 16)), seed=1)
    assert not empty.any() and not none.any()


def test_validation_priors_lie_outside_the_training_draws_on_one_axis_each():
    import dataclasses

    from astrotf.data.prior import HELD_OUT, training_prior, validation_priors

    train = training_prior((256, 256))
    priors = validation_priors((256, 256))
    assert set(priors) == set(HELD_OUT)
    for name, prior in priors.items():
        changed = []
        for part in ("field", "detector"):
            a, b = getattr(train, part), getattr(prior, part)
            for f in dataclasses.fields(a):
                if getattr(a, f.name) != getattr(b, f.name):
                    changed.append((f.name, getattr(a, f.name), getattr(b, f.name)))
        assert len(changed) == 1, (name, changed)
        _, (lo, hi), (vlo, vhi) = changed[0]
        assert vhi < lo or vlo > hi, (name, changed)


def test_training_prior_spans_the_ranges_of_issue_21():
    import dataclasses

    from astrotf.data.prior import training_prior

    prior = training_prior((512, 512))
    assert prior.field.fwhm == (1.5, 6.0) and prior.field.moffat_beta == (2.0, 6.0)
    assert prior.field.sky == (10.0, 5000.0) and prior.detector.read_noise == (1.0, 15.0)
    assert prior.detector.exposure_ratio == (1.5, 10.0) and prior.field.gaussian_fraction > 0
    image, _ = simulate_star_field(dataclasses.replace(prior.field, shape=(96, 96)), seed=0)
    assert image.shape == (96, 96) and np.isfinite(image).all()


def test_observe_has_the_mean_and_variance_of_the_noise_model():
    from astrotf.data.prior import observe
    from astrotf.noise_model import NoiseModel

    clean = np.full((200, 200), 800.0)
    gain, read_noise, ratio = 2.0, 6.0, 4.0
    noisy = observe(clean, gain, read_noise, ratio, seed=1)
    truth = 800.0 / (ratio * gain)
    sigma = float(NoiseModel(gain=gain, read_noise=read_noise).sigma_map(np.array([truth]))[0])
    assert noisy.dtype == np.float32
    assert abs(noisy.mean() - truth) < 4 * sigma / 200
    assert noisy.std() == pytest.approx(sigma, rel=0.02)
    np.testing.assert_array_equal(noisy, observe(clean, gain, read_noise, ratio, seed=1))
    assert observe(clean * 100, gain, read_noise, 1.0, seed=2, saturation=5e4).max() == pytest.approx(2.5e4)
    with pytest.raises(ValueError, match="clean"):
        observe(-clean, gain, read_noise, ratio)
