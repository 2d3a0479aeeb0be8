"""Integer grids: step detection and dithering."""

import numpy as np
import pytest

from astrotf.quantise import (dither, dither_values, quantisation_variance, resolve_step, to_fits_integers,
                              to_integers, value_grid)


# ----------------------------------------------------------------------------- step detection
def test_value_grid_finds_the_step_of_integer_data():
    values = np.rint(np.random.default_rng(0).normal(1000.0, 3.0, 50_000))
    step, origin = value_grid(values)
    assert step == pytest.approx(1.0)
    assert (origin - 1000.0) % 1.0 == pytest.approx(0.0)


def test_value_grid_finds_a_bscale_grid_in_float32_values():
    """BSCALE = 0.1 with BZERO = 0.05: float32 rounding of the levels does not hide the grid."""
    raw = np.rint(np.random.default_rng(1).normal(0.0, 40.0, 50_000))
    values = (raw * 0.1 + 0.05).astype(np.float32)
    step, origin = value_grid(values)
    assert step == pytest.approx(0.1, rel=1e-5)
    assert (origin - 0.05) / step == pytest.approx(np.rint((origin - 0.05) / step), abs=1e-3)


def test_value_grid_is_none_for_continuous_data():
    values = np.random.default_rng(2).normal(0.0, 1.0, 50_000).astype(np.float32)
    assert value_grid(values) is None


def test_resolve_step_takes_a_given_step_or_finds_it():
    integers = np.rint(np.random.default_rng(3).normal(100.0, 2.0, (64, 64, 1))).astype(np.float32)
    integers[:4, :4] = np.nan  # non-finite values are left out of the sample
    assert resolve_step(integers) == pytest.approx(1.0)
    assert resolve_step(integers, 0.25) == 0.25
    assert resolve_step(integers, None) is None
    assert resolve_step(integers, 0.0) is None
    continuous = np.random.default_rng(4).normal(100.0, 2.0, (64, 64, 1)).astype(np.float32)
    assert resolve_step(continuous) is None
    assert resolve_step(np.full((8, 8, 1), np.nan, np.float32)) is None


# ----------------------------------------------------------------------------- dithering
def test_dither_spreads_values_over_their_bin_keeps_nan_and_is_seeded():
    frame = np.rint(np.random.default_rng(0).normal(100, 2, (40, 40, 1))).astype(np.float32)
    frame[:3, :3] = np.nan
    spread = dither(frame, 1.0)
    finite = np.isfinite(frame)
    assert spread.dtype == np.float32 and spread.shape == frame.shape
    assert np.isnan(spread[~finite]).all() and np.abs(spread - frame)[finite].max() <= 0.5
    assert (spread - frame)[finite].std() == pytest.approx(1 / np.sqrt(12), rel=0.1)
    np.testing.assert_array_equal(dither(frame, 1.0), spread)  # seeded
    assert not np.array_equal(dither(frame, 1.0, seed=1)[finite], spread[finite])


@pytest.mark.parametrize("step", [1.0, 0.25])
def test_dither_keeps_the_mean_and_adds_a_twelfth_of_the_step_squared(step):
    frame = np.rint(np.random.default_rng(5).normal(0.0, 3.0, (500, 500, 1)) / step) * step
    frame = frame.astype(np.float32)
    added = dither(frame, step).astype(np.float64) - frame
    # 250 000 uniform values: the mean is known to ~step / 1700, the variance to ~0.3 %
    assert abs(added.mean()) < 0.003 * step
    assert added.var() == pytest.approx(quantisation_variance(step), rel=0.01)


def test_dither_values_keeps_the_mean_and_adds_a_twelfth_of_the_step_squared():
    values = np.rint(np.random.default_rng(6).normal(50.0, 2.0, 200_000))
    dithered = dither_values(values, 1.0)
    assert dithered.dtype == np.float64
    np.testing.assert_array_equal(dithered, dither_values(values, 1.0))  # seeded
    added = dithered - values
    assert np.abs(added).max() <= 0.5
    assert abs(added.mean()) < 0.003
    assert added.var() == pytest.approx(1 / 12, rel=0.01)
    assert quantisation_variance(0.5) == 0.5**2 / 12


# ----------------------------------------------------------------------------- quantised writes
def test_to_integers_clips_to_the_unit_range_rounds_and_writes_nan_as_zero():
    data = np.array([[[-0.2], [0.0], [0.4 / 255], [0.6 / 255], [1.0], [1.3], [np.nan]]], np.float32)
    out = to_integers(data, np.dtype(np.uint8), 255.0)
    assert out.dtype == np.uint8 and out.shape == data.shape
    np.testing.assert_array_equal(out.ravel(), [0, 0, 0, 1, 255, 255, 0])


def test_to_fits_integers_inverts_bscale_bzero_clips_and_writes_nan_as_blank():
    stored = np.array([-32768, -5, 0, 7, 32767], np.int16)
    pixels = (stored * 0.25 + 100.0).astype(np.float32)
    np.testing.assert_array_equal(to_fits_integers(pixels, np.dtype(np.int16), 0.25, 100.0, None), stored)
    beyond = np.array([1e9, -1e9, np.nan], np.float32)
    out = to_fits_integers(beyond, np.dtype(np.int16), 0.25, 100.0, -32768)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, [32767, -32768, -32768])


def test_fits_integers_clip_at_the_int64_limits_without_wrapping():
    from astrotf.quantise import to_fits_integers

    pixels = np.array([[9.3e18, -9.3e18, 1.0e19, 5.0]])
    out = to_fits_integers(pixels, np.dtype(np.int64), bscale=1.0, bzero=0.0, blank=None)
    assert out[0, 0] > 9.2e18 and out[0, 2] > 9.2e18  # clipped to the top, not wrapped to -2**63
    assert out[0, 1] == np.iinfo(np.int64).min and out[0, 3] == 5
