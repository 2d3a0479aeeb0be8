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
    ],
)
def test_config_rejects_invalid_values(field, value):
    with pytest.raises(ValueError, match=rf"`{field}`.*Received: {field}="):
        StarFieldConfig(**{field: value})
