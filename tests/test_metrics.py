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


def test_noise_level_errors_name_the_problem():
    with pytest.raises(ValueError, match="value_range"):
        noise_level(np.zeros((20, 20)), (5, -5))
    with pytest.raises(ValueError, match="Too few pixels"):
        noise_level(np.full((20, 20), 1000.0))
