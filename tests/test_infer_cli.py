"""`astrotf infer` and `astrotf export` from the command line: formats, headers, no overwrite, bad files."""

import numpy as np
import pytest
import tifffile
from astropy.io import fits
from click.testing import CliRunner

from astrotf import io
from astrotf.cli import main
from astrotf.models.resunet import ResUNet


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)  # the same tiny random models whatever ran before
    tmp = tmp_path_factory.mktemp("models")
    rgb = ResUNet(channels=3, depth=2, base_filters=4, head_initializer="glorot_uniform")
    mono = ResUNet(channels=1, depth=2, base_filters=4, normalization="background", head_initializer="glorot_uniform")
    rgb.save(tmp / "rgb.keras")
    mono.save(tmp / "mono.keras")
    return {"rgb": str(tmp / "rgb.keras"), "mono": str(tmp / "mono.keras")}


def invoke(*args):
    return CliRunner().invoke(main, ["infer", "-q", "--tile", "32", *map(str, args)])


def test_16bit_rgb_tiff_round_trip(tmp_path, models):
    src = tmp_path / "m31.tif"
    data = (np.random.default_rng(0).random((45, 61, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(src, data, photometric="rgb")
    result = invoke(src, "--model", models["rgb"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "m31_denoised.tif"
    written = tifffile.imread(out)
    assert written.dtype == np.uint16 and written.shape == data.shape
    np.testing.assert_array_equal(tifffile.imread(src), data)  # the input is untouched


def test_fits_keeps_header_adds_history_and_nan(tmp_path, models):
    src = tmp_path / "frame.fits"
    data = np.random.default_rng(1).normal(300, 10, (40, 50)).astype(np.float32)
    data[:5, :5] = np.nan
    header = fits.Header({"OBJECT": "NGC 1234", "EXPTIME": 120.0, "BUNIT": "electron"})
    fits.PrimaryHDU(data, header).writeto(src)
    result = invoke(src, "--model", models["mono"], "--out-dir", tmp_path / "out")
    assert result.exit_code == 0, result.output
    with fits.open(tmp_path / "out" / "frame_denoised.fits") as hdul:
        out_header, out = hdul[0].header, hdul[0].data
    assert out_header["OBJECT"] == "NGC 1234" and out_header["EXPTIME"] == 120.0
    assert any("astrotf" in str(card) for card in out_header["HISTORY"])
    assert "precision=float32" in list(map(str, out_header["HISTORY"]))[-2]  # linear data: float32, one card
    assert np.isnan(out[:5, :5]).all() and np.isfinite(out[5:, 5:]).all()
    # linear data stay in their units: the file holds the model's output, unscaled
    from astrotf.backends import load_model
    from astrotf.infer import TileOptions, denoise_image

    expected = denoise_image(data[..., None], load_model(models["mono"]), TileOptions(32, 0.25))[..., 0]
    np.testing.assert_allclose(out[5:, 5:], expected[5:, 5:], rtol=1e-5)


@pytest.mark.parametrize("suffix,dtype", [(".png", np.uint8), (".png", np.uint16)])
def test_png_round_trip_keeps_dtype(tmp_path, models, suffix, dtype):
    src = tmp_path / f"sky{suffix}"
    scale = np.iinfo(dtype).max
    data = (np.random.default_rng(2).random((33, 40, 3)) * scale).astype(dtype)
    info = io.ImageInfo(path=src, format="png", dtype=np.dtype(dtype), channels=3, layout="HWC", scale=scale)
    io.write_image(src, data.astype(np.float32) / scale, info)
    assert invoke(src, "--model", models["rgb"]).exit_code == 0
    out, out_info = io.read_image(tmp_path / f"sky_denoised{suffix}")
    assert out_info.dtype == dtype and out.shape == (33, 40, 3)


@pytest.mark.parametrize("args,message", [
    (["--shard", "2/2"], "--shard"),
    (["--shard", "x"], "--shard"),
    (["--skip-existing", "--force"], "--skip-existing"),
    (["--overlap", "0.95"], "--overlap"),
    (["--model", "no-such-model"], "no such model"),
    (["--tile", "4"], "--tile"),
])
def test_bad_options_are_named(tmp_path, models, args, message):
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.zeros((32, 32), np.uint8))
    result = CliRunner().invoke(main, ["infer", "-q", str(src), *args])
    assert result.exit_code == 2 and message in result.output


def test_export_cli_writes_serving_layout(tmp_path):
    from tests.test_export import fake_run

    run, _ = fake_run(tmp_path)
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "sm" / "tiny")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sm" / "tiny" / "1" / "saved_model.pb").exists()


def test_export_strength_becomes_the_models_default_and_infer_applies_it(tmp_path):
    import json

    from tests.test_export import fake_run

    run, _ = fake_run(tmp_path)
    folder = tmp_path / "sm" / "calibrated"
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(folder), "--strength", "0.5"])
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "metadata.json").read_text())["default_strength"] == 0.5
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.random.default_rng(0).uniform(0.1, 0.3, (32, 32, 3)).astype(np.float32),
                     photometric="rgb")
    assert invoke(src, "--model", folder, "-o", tmp_path / "default.tif").exit_code == 0
    assert invoke(src, "--model", folder, "--strength", "1", "-o", tmp_path / "full.tif").exit_code == 0
    data, default, full = (tifffile.imread(p) for p in (src, tmp_path / "default.tif", tmp_path / "full.tif"))
    np.testing.assert_allclose(default, 0.5 * full + 0.5 * data, atol=1e-6)


def test_report_on_a_linear_frame_fits_the_noise_around_its_own_sky(tmp_path, models):
    """--report without --noise-range: the input's background ± 5 sigma, not the magnetogram range."""
    import re

    src = tmp_path / "sky.fits"
    fits.PrimaryHDU(np.random.default_rng(4).normal(300, 10, (64, 64)).astype(np.float32)).writeto(src)
    result = invoke(src, "--model", models["mono"], "--report", "--out-dir", tmp_path / "out")
    assert result.exit_code == 0, result.output
    low, high, sigma_in = map(float, re.search(r"in \[([-\d.e+]+), ([-\d.e+]+)\]\): input ([\d.e+]+)",
                                               result.output).groups())
    assert 240 < low < 260 and 340 < high < 360 and abs(sigma_in - 10) < 1.0


def test_strength_zero_returns_the_input_bit_for_bit_and_is_recorded(tmp_path, models):
    src = tmp_path / "m31.tif"
    data = (np.random.default_rng(3).random((40, 48, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(src, data, photometric="rgb")
    assert invoke(src, "--model", models["rgb"], "--strength", "0").exit_code == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m31_denoised.tif"), data)
    fits_src = tmp_path / "ngc.fits"
    field = np.random.default_rng(4).normal(500, 20, (40, 48)).astype(np.float32)
    fits.writeto(fits_src, field)
    assert invoke(fits_src, "--model", models["mono"], "--strength", "0.4").exit_code == 0
    half = fits.getdata(tmp_path / "ngc_denoised.fits")
    assert invoke(fits_src, "--model", models["mono"], "--strength", "1", "--force").exit_code == 0
    full = fits.getdata(tmp_path / "ngc_denoised.fits")
    np.testing.assert_allclose(half, 0.4 * full + 0.6 * field, rtol=1e-5, atol=1e-3)
    assert invoke(fits_src, "--model", models["mono"], "--strength", "0.4", "--force").exit_code == 0
    assert "strength 0.4" in str(fits.getheader(tmp_path / "ngc_denoised.fits")["HISTORY"])


def test_strength_outside_zero_to_one_is_a_one_line_error(tmp_path, models):
    result = invoke(tmp_path / "any.fits", "--strength", "1.5")
    assert result.exit_code == 2 and "--strength" in result.output and "Traceback" not in result.output


def test_ctrl_c_outside_training_is_one_line_and_status_130(tmp_path, monkeypatch):
    from astrotf import batch

    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.full((32, 32, 3), 0.5, np.float32), photometric="rgb")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "run", interrupted)
    result = CliRunner().invoke(main, ["infer", "-q", str(src)])
    assert result.exit_code == 130
    assert "Traceback" not in result.output and result.output.strip().startswith("Interrupted (Ctrl-C).")
    assert len(result.output.strip().splitlines()) == 1
