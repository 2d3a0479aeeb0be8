"""tools/bench_quality.py: the star-field case end to end on one tiny field (classical peers only)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quality", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_star_field_case_scores_truth_input_and_peers(bench):
    methods = {"Gaussian blur": lambda x: bench.gaussian_filter(x, 1.0),
               "wavelet": bench.in_noise_units(bench.wavelet, with_sigma=False)}
    report = bench.bench_fields(1, [2.0], 128, methods)
    rows = report["2"]["methods"]
    assert list(rows) == ["noise-free truth", "noisy input", "Gaussian blur", "wavelet"]
    truth, noisy = rows["noise-free truth"], rows["noisy input"]
    assert truth["fixed"]["fp"] == 0 and truth["fixed"]["tp"] >= noisy["fixed"]["tp"] > 0
    assert abs(truth["flux_error_median"]) < 0.02  # aperture correction: the truth measures its own flux
    assert noisy["snr_gain"] == 1.0
    text = bench.fields_markdown(report, 128)
    assert "| noisy input |" in text and "TPR fixed" in text


def test_peers_keep_the_data_in_its_units(bench):
    rng = np.random.default_rng(0)
    frame = 1000.0 + rng.normal(0, 10.0, (64, 64))
    for name, method in bench.peers("linear", use_bm3d=False).items():
        out = method(frame)
        assert out.shape == frame.shape
        assert abs(np.median(out) - 1000.0) < 2.0, name
        assert np.std(out) < 10.0, name


def test_a_model_is_not_scored_on_its_training_magnetogram(bench):
    assert bench.same_magnetogram("sample_1_crop1024.fits", "hmi.sharp_fulldisk_sample_1_TAI.magnetogram.fits")
    assert not bench.same_magnetogram("sample_1_crop1024.fits", "hmi.sharp_fulldisk_sample_2_TAI.magnetogram.fits")
    assert not bench.same_magnetogram(None, "hmi.sharp_fulldisk_sample_1_TAI.magnetogram.fits")
    rng = np.random.default_rng(0)
    crops = [("a", rng.normal(0, 4, (64, 64)).astype(np.float32), "x_sample_1.fits"),
             ("b", rng.normal(0, 4, (64, 64)).astype(np.float32), "x_sample_2.fits")]
    report = bench.bench_hmi(crops, {"blur": lambda x: bench.gaussian_filter(x, 1.0)}, {"blur": "sample_1_crop.fits"})
    assert list(report["methods"]) == ["noisy input", "blur"]
    assert report["methods"]["blur"]["skipped"] == ["a"] and report["methods"]["blur"]["n_crops"] == 1
    assert "(1 of 2 crops; not on its training magnetogram)" in bench.hmi_markdown(report, 64)


def test_invented_sources_check_counts_false_detections_per_method(bench):
    clean, truth = bench.stretched_star_field(0, 96)
    assert clean.shape == (96, 96, 3) and 0.0 <= clean.min() and clean.max() <= 1.0 and len(truth) > 0
    report = bench.bench_invented_sources(1, 96, {"Gaussian blur": lambda x: bench.gaussian_filter(x, (1.0, 1.0, 0))})
    rows = report["methods"]
    assert list(rows) == ["noisy input", "Gaussian blur"]
    for row in rows.values():
        assert row["n_truth"] == len(truth) and row["tp_own"] + row["fp_own"] >= 0
    assert "| Gaussian blur |" in bench.invented_markdown(report)


def test_rgb_case_scores_every_model_and_its_identity(bench):
    rng = np.random.default_rng(0)
    images = [(f"sky{i}", np.clip(rng.normal(0.3, 0.1, (40, 48, 3)), 0, 1).astype(np.float32)) for i in range(2)]
    methods = {"astrotf exact": lambda x: x, "astrotf dim": lambda x: 0.9 * x, "mean": lambda x: np.full_like(x, 0.3)}
    report = bench.bench_rgb(images, methods, ["astrotf dim", "astrotf exact"])
    assert set(report["methods"]) == {"noisy input", *methods}
    assert report["identities"]["astrotf exact"]["min_psnr"] > 90  # the identity itself
    assert report["identity"] == report["identities"]["astrotf dim"] and not report["identity"]["pass"]
    assert "Identity of astrotf exact" in bench.rgb_markdown(report, 40)
