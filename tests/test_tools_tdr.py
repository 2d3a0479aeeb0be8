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


def synthetic_magnetogram(seed=3, size=96):
    """Reference with weak fields and a strong patch, and the same plus white noise of 6 G."""
    rng = np.random.default_rng(seed)
    reference = rng.normal(0, 3, (size, size, 1))
    reference[20:40, 20:40] = 400.0
    reference[60:70, 50:80] = -250.0
    noisy = reference + rng.normal(0, 6, reference.shape)
    return reference, noisy


def test_paper_noise_oracle_scores_zero_error_and_unit_slope():
    bench_tdr = load("bench_tdr")
    reference, noisy = synthetic_magnetogram()
    scores = bench_tdr.paper_noise_scores(reference, noisy, reference, sigma_in=6.7)
    assert scores["rmse"] == 0.0 and scores["rmse_strong"] == 0.0
    assert scores["slope_strong"] == pytest.approx(1.0) and scores["n_strong"] == 400 + 300
    assert scores["max_abs_delta"] == pytest.approx(np.abs(noisy - reference).max())


def test_paper_noise_rmse_and_slope_of_known_outputs():
    bench_tdr = load("bench_tdr")
    reference, noisy = synthetic_magnetogram()
    noise_rms = np.sqrt(np.mean((noisy - reference) ** 2))
    half = reference + 0.5 * (noisy - reference)
    scores = bench_tdr.paper_noise_scores(half, noisy, reference, sigma_in=6.0)
    assert scores["rmse"] == pytest.approx(0.5 * noise_rms)
    strong = np.abs(reference) > 50
    assert scores["rmse_strong"] == pytest.approx(0.5 * np.sqrt(np.mean((noisy - reference)[strong] ** 2)))
    assert bench_tdr.paper_noise_scores(0.9 * reference, noisy, reference, 6.0)["slope_strong"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="one shape"):
        bench_tdr.paper_noise_scores(half[:10], noisy, reference, 6.0)


def test_paper_noise_residual_structure_and_sigma_ratio():
    bench_tdr = load("bench_tdr")
    reference, noisy = synthetic_magnetogram(size=200)
    white = bench_tdr.paper_noise_scores(reference, noisy, reference, sigma_in=6.0)
    assert white["residual_structure"] == pytest.approx(1.0, abs=0.2)  # input - oracle is white noise
    assert white["sigma_ratio"] == pytest.approx(3.0 / 6.0, rel=0.1)  # the reference's 3 G over 6
    blurred = reference.copy()
    blurred[20:40, 20:40] = 300.0  # a cut sunspot leaves a 10 px structure in the residual
    assert bench_tdr.paper_noise_scores(blurred, noisy, reference, 6.0)["residual_structure"] > 1.5


def test_dihedral_transforms_are_undone():
    bench_tdr = load("bench_tdr")
    image = np.arange(5 * 7 * 1, dtype=np.float32).reshape(5, 7, 1)
    seen = set()
    for k, flip in bench_tdr.DIHEDRAL:
        forward = bench_tdr.dihedral_forward(image, k, flip)
        seen.add(forward.tobytes())
        np.testing.assert_array_equal(bench_tdr.dihedral_inverse(forward, k, flip), image)
    assert len(seen) == 8


def test_paper_noise_markdown_is_generated_from_the_report():
    bench_tdr = load("bench_tdr")
    reference, noisy = synthetic_magnetogram()
    methods = {label: bench_tdr.paper_noise_scores(out, noisy, reference, 6.0)
               for label, out in (("noisy input", noisy), ("TDR raw", reference), ("TDR restore", reference),
                                  ("TDR clip", reference), ("TDR soft + restore", reference),
                                  ("TDR soft + clip", reference), ("NLM (fast)", noisy), ("BM3D", noisy))}
    report = {"protocol": "test", "date": "2026-01-01", "machine": {"cpu": "cpu", "cores": 2}, "trained_on": "t",
              "training_steps": 10, "training_wall_time_s": 60.0,
              "settings": {"samples": 16, "transforms": 8, "seed": 0, "soft_width": 1.0, "soft_weight": 1.0,
                           "restore_sigma": 0.6, "fine_tune_steps": 0, "fine_tune_lr": 3e-4, "size": None,
                           "strong_G": 50.0},
              "samples": {"2": {"sigma_in": 6.0, "R": 3.6, "methods": methods, "seconds": {"TDR": 1.0}}}}
    text = bench_tdr.paper_noise_markdown(report)
    assert "| TDR raw | " in text and "x 8 flips/rotations" in text and "do not edit by hand" in text
    met = bench_tdr.targets(report)["2"]
    assert met["TDR raw"]["rmse<=BM3D"] and met["TDR raw"]["ratio<=NLM"]
    assert not met["TDR restore"]["max|d|<=R"]  # the oracle moves pixels by more than R = 3.6 G


HMI_METADATA = {"training": {"data": {"bunit": "Gauss"}}}


@pytest.mark.parametrize("unit", ["Gauss", "G", "Mx/cm^2", " gauss "])
def test_no_unit_warning_for_magnetic_units(unit):
    from astrotf.checks import unit_warning

    assert unit_warning(fits.Header({"BUNIT": unit}), HMI_METADATA, "self2self-hmi") is None


def test_unit_warning_names_the_unit_and_the_models_units():
    from astrotf.checks import unit_warning

    text = unit_warning(fits.Header({"BUNIT": "T"}), HMI_METADATA, "self2self-hmi")
    assert "'T'" in text and "self2self-hmi expects Gauss" in text
    assert unit_warning(fits.Header({"BUNIT": "T"}), {}, "resunet-mono") is None  # not a magnetogram model
    assert unit_warning(fits.Header(), HMI_METADATA, "self2self-hmi") is None


def test_restore_threshold_below_the_quantisation_step_is_refused():
    from astrotf.checks import check_restore_threshold
    from astrotf.errors import AstroTFError

    check_restore_threshold(0.1, 0.1)
    check_restore_threshold(0.01, None)
    with pytest.raises(AstroTFError, match=r"R=0.05 is below the data's quantisation step 0.1"):
        check_restore_threshold(0.05, 0.1)


def test_infer_refuses_restore_below_the_step_before_any_work(tmp_path):
    from click.testing import CliRunner

    from astrotf.cli import main

    data = np.round(np.random.default_rng(0).normal(0, 8, (64, 64))).astype(np.int16)  # a grid of 1 G
    fits.writeto(tmp_path / "m.fits", data, fits.Header({"BUNIT": "Gauss"}))
    result = CliRunner().invoke(main, ["infer", str(tmp_path / "m.fits"), "--restore", "0.5", "-q"])
    assert result.exit_code != 0 and "R=0.5 is below the data's quantisation step 1:" in result.output
    assert not (tmp_path / "m_denoised.fits").exists()


def test_fill_markers_replaces_only_the_generated_block():
    bench_tdr = load("bench_tdr")
    page = f"intro\n{bench_tdr.BEGIN_MARK} by x -->\nold table\n{bench_tdr.END_MARK}\nafter\n"
    filled = bench_tdr.fill_markers(page, "new table\n")
    assert filled == f"intro\n{bench_tdr.BEGIN_MARK} by x -->\nnew table\n{bench_tdr.END_MARK}\nafter\n"
    assert bench_tdr.fill_markers(filled, "new table\n") == filled
    with pytest.raises(ValueError, match="no '<!-- paper-noise"):
        bench_tdr.fill_markers("no markers", "x")


def test_real_data_markdown_has_one_row_per_method_and_one_column_per_crop():
    bench_tdr = load("bench_tdr")
    row = {"ratio": 0.5, "slope_strong": 0.99, "residual_structure_10px": 1.0, "max_abs_delta": 3.0}
    figures = [{"image": f"d/sample_{i}_crop1024.fits", "model": "m", "trained_on": "t", "samples": 16,
                "soft_width": 1.0, "restore_sigma": 0.6, "sigma_in": 4.0, "denoised": row, "NLM (fast)": row}
               for i in (2, 3)]
    text = bench_tdr.real_data_markdown(figures)
    assert "| denoised | 0.500 | 0.500 | 0.990 |" in text and "| NLM (fast) |" in text
    assert "σ ratio (sample_3_crop1024.fits)" in text


def test_side_crop_is_beside_the_centre_crop_with_its_wcs_shifted(tmp_path):
    hmi_data = load("hmi_data")
    disk = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    fits.writeto(tmp_path / "disk.fits", disk, fits.Header({"BUNIT": "Gauss", "CRPIX1": 32.5, "CRPIX2": 32.5}))
    hmi_data.centre_crop(tmp_path / "disk.fits", tmp_path / "side.fits", 16, shift=16)
    np.testing.assert_array_equal(fits.getdata(tmp_path / "side.fits"), disk[24:40, 40:56])
    assert fits.getheader(tmp_path / "side.fits")["CRPIX1"] == 32.5 - 40


@pytest.mark.slow
def test_infer_with_a_run_warns_about_a_non_magnetic_bunit(tmp_path):
    from click.testing import CliRunner

    from astrotf.cli import main

    rng = np.random.default_rng(0)
    field = rng.normal(0, 8, (64, 64)).astype(np.float32)
    field[20:30, 20:30] += 300.0
    fits.writeto(tmp_path / "train.fits", field, fits.Header({"BUNIT": "Gauss"}))
    (tmp_path / "tiny.toml").write_text("[model]\ndepth = 2\nbase_filters = 4\n[train]\ncheckpoint_every = 5\n")
    runner = CliRunner()
    result = runner.invoke(main, ["train", "self2self", str(tmp_path / "train.fits"), "--out", str(tmp_path / "run"),
                                  "--config", str(tmp_path / "tiny.toml"), "--steps", "5", "--patch", "32", "-q"])
    assert result.exit_code == 0, result.output
    fits.writeto(tmp_path / "tesla.fits", field / 1e4, fits.Header({"BUNIT": "T"}))
    result = runner.invoke(main, ["infer", str(tmp_path / "tesla.fits"), "--model", str(tmp_path / "run"),
                                  "--samples", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert "BUNIT is 'T', neither Gauss nor Mx/cm^2; model" in result.output and "expects Gauss" in result.output
