"""`astrotf evaluate`: scores of a simulated field through the library and the command line."""

import json
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from click.testing import CliRunner
from scipy.ndimage import gaussian_filter

from astrotf.cli import main
from astrotf.data.simulate import StarFieldConfig, simulate_star_field
from astrotf.evaluate import EvaluationOptions, evaluate, format_table, load_catalogue, write_plots
from astrotf.metrics import Catalogue


@pytest.fixture(scope="module")
def field():
    """A 96² field of 12 bright, resolvable stars: noise-free, noisy (r = 2) and truth."""
    config = StarFieldConfig(shape=(96, 96), n_stars=(12, 12), flux_range=(2e4, 1e5), fwhm=(2.5, 2.5),
                             n_galaxies=(0, 0), sky=(100.0, 100.0))
    clean, truth = simulate_star_field(config, seed=11)
    rng = np.random.default_rng(12)
    noisy = (rng.poisson(clean / 2.0) * 2.0 + rng.normal(0, 6.0, clean.shape)).astype(np.float32)
    return clean, noisy, truth


@pytest.fixture
def files(tmp_path, field):
    clean, noisy, truth = field
    paths = {name: tmp_path / f"{name}.fits" for name in ("clean", "noisy", "output")}
    fits.writeto(paths["clean"], clean)
    fits.writeto(paths["noisy"], noisy)
    fits.writeto(paths["output"], gaussian_filter(noisy, 1.0).astype(np.float32))
    paths["csv"] = tmp_path / "truth.csv"
    columns = truth["x", "y", "flux", "kind", "fwhm"]
    columns.meta.clear()
    columns.write(paths["csv"], format="csv")
    paths["truth_fits"] = tmp_path / "sim.fits"
    table = fits.table_to_hdu(columns["x", "y", "flux", "kind"])
    table.name = "TRUTH"
    fits.HDUList([fits.PrimaryHDU(noisy, header=fits.Header({"FWHM": 2.5, "BETA": 3.0})), table]).writeto(
        paths["truth_fits"])
    return paths


def test_truth_as_output_recovers_every_star_and_a_blur_does_not(field):
    clean, noisy, truth = field
    stars = Catalogue.from_table(truth)
    options = EvaluationOptions(aperture=6.0)
    perfect = evaluate(clean, noisy, clean, stars, options)
    assert perfect.scores["tpr"]["output"] == 1.0
    assert perfect.scores["false_positives"]["output"] == 0
    assert perfect.scores["psnr"]["output"] == np.inf
    assert perfect.scores["snr_gain"]["output"] > 3
    blurred = evaluate(gaussian_filter(noisy, 2.0), noisy, clean, stars, options)
    assert blurred.scores["flux_error_median"]["output"] < perfect.scores["flux_error_median"]["output"] - 0.02
    # star cores: the truth keeps them (slope near 1 over strong pixels), a 2 px blur flattens them
    assert perfect.scores["n_strong"]["output"] > 20
    assert perfect.scores["slope_strong_input"]["output"] > 0.95
    assert blurred.scores["slope_strong_input"]["output"] < 0.8
    assert blurred.scores["residual_structure"]["output"] > perfect.scores["residual_structure"]["output"]
    table = format_table(blurred)
    assert "| TPR (fixed)" in table and "false positives (fixed)" in table
    # the matched view: no image gets more false positives than the input had at its own RMS
    budget = blurred.scores["false_positives_own"]["input"]
    for column in ("input", "output"):
        assert blurred.scores["false_positives_matched"][column] <= budget
        assert blurred.stars["matched"][column].threshold > 0
    assert "TPR (input's FP)" in table


def test_reference_detections_stand_in_for_a_catalogue(field):
    clean, noisy, _ = field
    result = evaluate(noisy, noisy, clean)
    assert result.scores["n_truth"]["reference"] == result.scores["true_positives"]["reference"] > 0
    assert result.scores["max_abs_change"]["output"] == 0.0
    assert result.scores["slope_input"]["output"] == pytest.approx(1.0)


def test_plots_are_written(tmp_path, field):
    clean, noisy, truth = field
    result = evaluate(gaussian_filter(noisy, 1.0), noisy, clean, Catalogue.from_table(truth))
    names = sorted(p.name for p in write_plots(result, tmp_path / "plots"))
    assert names == ["flux_error.png", "histograms.png", "power_spectra.png", "residual.png"]
    assert all((tmp_path / "plots" / n).stat().st_size > 1000 for n in names)


def test_cli_prints_the_table_and_writes_json_and_plots(files, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(files["output"]), "--input", str(files["noisy"]),
                                       "--reference", str(files["clean"]), "--stars", str(files["csv"]),
                                       "--json", str(tmp_path / "e.json"), "--plots", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert "TPR (fixed)" in result.output and "SNR gain" in result.output
    assert "aperture 6.25 px" in result.output  # 2.5 x the catalogue's FWHM
    record = json.loads((tmp_path / "e.json").read_text())
    assert record["scores"]["tpr"]["input"] == 1.0
    assert record["options"]["aperture"] == pytest.approx(6.25)
    assert (tmp_path / "p" / "flux_error.png").is_file()


def test_cli_reads_the_truth_extension_of_a_simulated_fits(files):
    result = CliRunner().invoke(main, ["evaluate", str(files["noisy"]), "--input", str(files["noisy"]),
                                       "--stars", str(files["truth_fits"])])
    assert result.exit_code == 0, result.output
    assert "Moffat aperture correction" in result.output


def test_cli_shape_mismatch_is_one_line(files, tmp_path):
    small = tmp_path / "small.fits"
    fits.writeto(small, np.zeros((32, 32), np.float32))
    result = CliRunner().invoke(main, ["evaluate", str(small), "--input", str(files["noisy"])])
    assert result.exit_code == 2
    assert "Error: images differ in shape" in result.output and "Traceback" not in result.output


def test_cli_catalogue_without_flux_is_named(files, tmp_path):
    bad = tmp_path / "bad.csv"
    Table({"x": [1.0], "y": [2.0], "mag": [20.0]}).write(bad, format="csv")
    result = CliRunner().invoke(main, ["evaluate", str(files["output"]), "--input", str(files["noisy"]),
                                       "--stars", str(bad)])
    assert result.exit_code == 2
    assert "bad.csv: Star catalogue must have columns x, y, flux; missing: flux" in result.output


@pytest.mark.parametrize("kind", ["missing", "garbage"])
def test_cli_unreadable_files_are_one_line(files, tmp_path, kind):
    path = tmp_path / "x.fits"
    if kind == "garbage":
        path.write_bytes(b"not a fits file")
    result = CliRunner().invoke(main, ["evaluate", str(path), "--input", str(files["noisy"])])
    assert result.exit_code == 2 and result.output.startswith("Error: ")
    assert "x.fits" in result.output and len(result.output.strip().splitlines()) == 1


def test_unreadable_catalogue(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_bytes(b"\x00\x01 not csv at all\n\x02")
    with pytest.raises(ValueError, match="cat.csv"):
        load_catalogue(path)


def test_evaluate_does_not_import_tensorflow():
    code = ("import sys, numpy as np; from astrotf.evaluate import evaluate; "
            "a = np.random.default_rng(0).normal(size=(64, 64)); evaluate(a, a); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_options_name_the_bad_value():
    with pytest.raises(ValueError, match=r"aperture_correction.*Received: aperture_correction=1.5"):
        EvaluationOptions(aperture_correction=1.5)
    with pytest.raises(ValueError, match=r"noise_range"):
        EvaluationOptions(noise_range=(5.0, -5.0))
    with pytest.raises(ValueError, match=r"strong"):
        EvaluationOptions(strong=-1.0)


def test_json_has_no_nan_or_numpy_values(field):
    clean, noisy, _ = field
    record = evaluate(clean, noisy, clean).to_dict()
    text = json.dumps(record, allow_nan=False)  # inf PSNR of the reference against itself becomes null
    assert '"psnr"' in text
