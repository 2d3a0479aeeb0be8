"""Noise model: header parsing and fallbacks, overrides, the photon-transfer fit, the σ map."""

import logging

import numpy as np
import pytest
from astropy.io import fits

from astrotf.errors import AstroTFError
from astrotf.noise_model import NoiseModel, normalise_unit, read_header, resolve_noise_model


def _ramp_electrons(shape=(384, 384)):
    """A smooth illumination from 5 to ~3000 e-, a photon-transfer test frame."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return 5.0 + 3000.0 * (xx / shape[1]) ** 2 * (0.5 + 0.5 * yy / shape[0])


def _observe(electrons, gain, read_noise, seed, pedestal=0.0):
    rng = np.random.default_rng(seed)
    return (rng.poisson(electrons) + rng.normal(0.0, read_noise, electrons.shape)) / gain + pedestal


@pytest.mark.parametrize("gain, read_noise, seed", [(1.5, 5.0, 0), (0.5, 3.0, 1), (4.0, 12.0, 2)])
def test_fit_recovers_gain_and_read_noise_of_a_photon_transfer_frame(gain, read_noise, seed):
    model = NoiseModel.fit_from_frame(_observe(_ramp_electrons(), gain, read_noise, seed))
    assert model.gain == pytest.approx(gain, rel=0.03)
    assert model.read_noise == pytest.approx(read_noise, rel=0.05)
    assert model.gain_from.startswith("fit") and model.read_noise_from == "fit"


def test_fit_recovers_gain_of_a_simulated_star_field_with_a_sky_gradient():
    from astrotf.data.simulate import StarFieldConfig, simulate_star_field

    clean, _ = simulate_star_field(StarFieldConfig(shape=(512, 512), sky=(100.0, 100.0), sky_gradient=0.9), seed=1)
    frame = _observe(clean.astype(np.float64), 2.0, 8.0, seed=3)
    model = NoiseModel.fit_from_frame(frame)
    assert model.gain == pytest.approx(2.0, rel=0.05)
    assert model.read_noise == pytest.approx(8.0, rel=0.05)
    known = NoiseModel.fit_from_frame(frame, gain=2.0)
    assert known.gain == 2.0 and known.read_noise == pytest.approx(8.0, rel=0.03)


def test_fit_with_known_read_noise_finds_the_bias_pedestal():
    frame = _observe(_ramp_electrons(), 1.5, 5.0, seed=4, pedestal=300.0)
    model = NoiseModel.fit_from_frame(frame, read_noise=5.0)
    assert model.gain == pytest.approx(1.5, rel=0.03)
    assert model.offset == pytest.approx(300.0, abs=5.0)


def test_fit_refuses_a_frame_without_background_pixels():
    saturated = np.full((64, 64), 65535.0)
    with pytest.raises(AstroTFError, match="too few background pixels"):
        NoiseModel.fit_from_frame(saturated)
    with pytest.raises(AstroTFError, match="too few background pixels"):
        NoiseModel.fit_from_frame(np.random.default_rng(0).normal(100, 3, (20, 20)))


def test_fit_refuses_to_guess_a_gain_from_a_flat_frame():
    flat = _observe(np.full((256, 256), 500.0), 1.5, 5.0, seed=5)
    with pytest.raises(AstroTFError, match="cannot fit the gain.*--gain"):
        NoiseModel.fit_from_frame(flat)
    model = NoiseModel.fit_from_frame(flat, gain=1.5)  # with the gain given, the read noise is measurable
    assert model.read_noise == pytest.approx(5.0, rel=0.3)


def test_sigma_map_matches_the_spread_of_many_noise_draws():
    electrons = np.linspace(0.0, 2000.0, 64)[None, :].repeat(8, axis=0)
    gain, read_noise, pedestal = 2.5, 6.0, 100.0
    draws = np.stack([_observe(electrons, gain, read_noise, seed, pedestal) for seed in range(2000)])
    model = NoiseModel(gain=gain, read_noise=read_noise, offset=pedestal)
    sigma = model.sigma_map(electrons / gain + pedestal)
    ratio = draws.std(axis=0, ddof=1) / sigma
    # the std of 2000 draws scatters by 1/sqrt(2 * 1999) = 1.6 % per pixel
    assert abs(ratio.mean() - 1.0) < 0.005
    assert 0.012 < ratio.std() < 0.02
    assert np.abs(ratio - 1.0).max() < 0.07
    assert sigma.dtype == np.float64 and model.sigma_map(sigma.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("unit, exptime, k", [("adu", 1.0, 2.0), ("electron", 1.0, 1.0),
                                              ("adu/s", 30.0, 60.0), ("electron/s", 30.0, 30.0)])
def test_sigma_map_follows_the_unit(unit, exptime, k):
    model = NoiseModel(gain=2.0, read_noise=4.0, unit=unit, exptime=exptime)
    assert model.electrons_per_unit == k
    x = np.array([-5.0, 0.0, 100.0, np.nan])
    expected = np.sqrt(np.maximum(x, 0.0) / k + (4.0 / k) ** 2)
    np.testing.assert_allclose(model.sigma_map(x), expected, rtol=1e-6)
    assert np.isnan(model.sigma_map(x)[-1])


def test_header_keys_and_aliases_are_read():
    header = fits.Header({"BUNIT": "ELECTRONS/S", "EGAIN": 1.8, "READNOIS": 3.2, "EXPTIME": 120.0})
    model = NoiseModel.from_header(header)
    assert (model.unit, model.gain, model.read_noise, model.exptime) == ("electron/s", 1.8, 3.2, 120.0)
    assert model.gain_from == "header EGAIN" and model.read_noise_from == "header READNOIS"
    assert NoiseModel.from_header(fits.Header({"GAIN": 1.2, "RDNOISE": 7.0})).notes == ("BUNIT absent: data taken as ADU",)
    assert [normalise_unit(u) for u in ("DN", "counts", "e-", "electrons per sec", "Gauss")] == \
        ["adu", "adu", "electron", "electron/s", None]


@pytest.mark.parametrize("key, value", [("GAIN", 0.0), ("GAIN", -2.0), ("GAIN", 5000.0), ("GAIN", "high"),
                                        ("RDNOISE", 0.0), ("RDNOISE", 1e4)])
def test_implausible_header_values_fall_back_to_the_fit_with_a_logged_line(key, value, caplog):
    header = fits.Header({"GAIN": 1.5, "RDNOISE": 5.0})
    header[key] = value
    frame = _observe(_ramp_electrons(), 1.5, 5.0, seed=6)
    with caplog.at_level(logging.INFO, logger="astrotf.noise_model"):
        model = resolve_noise_model(frame, header)
    assert f"header {key}=" in caplog.text and "fitted" in caplog.text
    assert model.gain == pytest.approx(1.5, rel=0.03) and model.read_noise == pytest.approx(5.0, rel=0.05)
    fitted = "gain_from" if key == "GAIN" else "read_noise_from"
    assert getattr(model, fitted).startswith("fit")


def test_overrides_win_over_the_header_and_are_recorded():
    header = fits.Header({"GAIN": 1.5, "RDNOISE": 5.0})
    model = resolve_noise_model(np.zeros((8, 8)), header, gain=2.0, read_noise=4.0)
    assert (model.gain, model.read_noise, model.gain_from, model.read_noise_from) == (2.0, 4.0, "--gain", "--read-noise")
    assert any("gain 2 e-/ADU (--gain)" in c for c in model.history_cards())


def test_long_history_lines_continue_on_the_next_card():
    from astrotf.noise_map import history_lines

    note = "fit: 3969/4096 cells of 8x8 px, signal 123456.789 to 9876543.21 data units, from the frame's sky"
    model = NoiseModel(gain=2.0, read_noise=4.0, notes=(note,))
    cards = [card for line in model.history_cards() for card in history_lines(line)]
    assert all(len(c) <= 72 for c in cards)
    start = next(i for i, c in enumerate(cards) if c.startswith("noise model: fit:"))
    joined = cards[start] + " " + " ".join(c.removeprefix("noise model:").strip() for c in cards[start + 1:])
    assert joined == f"noise model: {note}"  # nothing is cut


@pytest.mark.parametrize("option, value", [("gain", -1.0), ("gain", 0.0), ("gain", float("nan")),
                                           ("read_noise", -3.0), ("read_noise", 0), ("read_noise", float("nan"))])
def test_bad_overrides_are_refused_in_one_line(option, value):
    flag = "--" + option.replace("_", "-")
    with pytest.raises(AstroTFError, match=rf"^{flag} must be a finite number > 0 .*Received: {option}=") as info:
        resolve_noise_model(np.zeros((8, 8)), None, **{option: value})
    assert "\n" not in str(info.value)


def test_a_rate_without_exptime_and_a_non_count_unit():
    header = fits.Header({"BUNIT": "e-/s", "GAIN": 1.5, "RDNOISE": 5.0})
    assert read_header(header)["exptime"] is None
    frame = _observe(_ramp_electrons(), 1.0, 5.0, seed=7) / 40.0  # e-/s of a 40 s exposure
    model = resolve_noise_model(frame, header)
    assert model.unit == "adu" and model.electrons_per_unit == pytest.approx(40.0, rel=0.03)
    with pytest.raises(AstroTFError, match="BUNIT='Gauss'"):
        read_header(fits.Header({"BUNIT": "Gauss"}))


def test_noise_model_fields_are_validated():
    with pytest.raises(AstroTFError, match="`gain`.*Received: gain=0"):
        NoiseModel(gain=0, read_noise=1.0)
    with pytest.raises(AstroTFError, match="`unit`"):
        NoiseModel(gain=1.0, read_noise=1.0, unit="jansky")
