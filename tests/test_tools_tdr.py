"""tools/hmi_data.py --add-noise and tools/bench_tdr.py's scores, on tiny synthetic magnetograms."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_add_noise_writes_a_seeded_noisier_copy_with_its_history(tmp_path):
    hmi_data = load("hmi_data")
    field = np.random.default_rng(0).normal(0, 4, (128, 128)).astype(np.float32)
    field[40:60, 40:60] = 800.0
    fits.writeto(tmp_path / "m.fits", field, fits.Header({"BUNIT": "Gauss"}))
    out = hmi_data.add_noise(tmp_path / "m.fits", 6.2, np.random.default_rng([0, 1]))
    assert out.name == "m_plus6.2G.fits" and fits.getdata(tmp_path / "m.fits").tolist() == field.tolist()
    added = fits.getdata(out).astype(np.float64) - field
    assert added.std() == pytest.approx(6.2, rel=0.03) and abs(added.mean()) < 0.1
    assert "white Gaussian noise of sigma 6.2 G" in str(fits.getheader(out)["HISTORY"])
    again = hmi_data.add_noise(tmp_path / "m.fits", 6.2, np.random.default_rng([0, 1]))
    np.testing.assert_array_equal(fits.getdata(again), fits.getdata(out))  # seeded


def test_bench_tdr_error_left_and_strong_slope():
    bench_tdr = load("bench_tdr")
    rng = np.random.default_rng(2)
    reference = rng.normal(0, 3, (64, 64))
    reference[10:20, 10:20] = 300.0
    noisy = reference + rng.normal(0, 6, reference.shape)
    half = reference + 0.5 * (noisy - reference)
    scores = bench_tdr.error_left(noisy, half, reference)
    assert scores["error_left"] == pytest.approx(0.5) and scores["error_left_quiet"] == pytest.approx(0.5)
    assert bench_tdr.error_left(noisy, reference, reference)["error_left"] == 0.0
    origin, fit, n = bench_tdr.strong_field_slope(noisy, 0.9 * noisy)
    assert origin == pytest.approx(0.9) and fit == pytest.approx(0.9) and n == 100
