"""The shipped models: metadata complete, identity on clean data, default model choice from the CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from astrotf import io
from astrotf.cli import main
from astrotf.backends import load_model, shipped_model_dirs
from astrotf.infer import TileOptions, denoise_image

SHIPPED = ["resunet-rgb", "resunet-mono", "resunet-linear"]
SAMPLES = io.pathlib.Path(__file__).resolve().parent.parent / "astrotf" / "samples"


def psnr(a, b, data_range):
    return 10 * np.log10(data_range**2 / np.mean((a - b) ** 2))


@pytest.mark.parametrize("name", SHIPPED)
def test_metadata_records_what_the_model_expects_and_how_it_was_made(name):
    folder = next(d / name for d in shipped_model_dirs() if (d / name).is_dir())
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["data_domain"] in ("stretched", "linear") and meta["channels"] in (1, 3)
    training = meta["training"]
    assert training["steps"] > 0 and training["wall_time_s"] > 0
    assert training["hardware"]["cpu"] and training["data"]["n_images"] > 0
    assert (folder / "1" / "saved_model.pb").is_file()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_rgb_model_leaves_a_clean_image_unchanged(precision):
    data, _ = io.read_image(SAMPLES / "hubble_deep_field.tif")
    crop = data[200:456, 300:556]
    out = denoise_image(crop, load_model("resunet-rgb", precision=precision), TileOptions(256, 0.25))
    assert psnr(out, crop, 1.0) >= 40.0


def test_mono_model_lowers_the_noise_and_keeps_the_background(tmp_path):
    data, _ = io.read_image(SAMPLES / "starfield.fits")
    window = data[:256, :256]
    out = denoise_image(window, load_model("resunet-mono"), TileOptions(256, 0.25))
    sky_in, sky_out = np.median(window), np.median(out)
    mad = lambda x: 1.4826 * np.median(np.abs(x - np.median(x)))  # noqa: E731
    assert mad(out) < 0.7 * mad(window)
    assert abs(sky_out - sky_in) < 0.1 * mad(window)


def test_the_linear_default_knows_its_noise_keeps_flux_and_sky_and_leaves_a_calibrated_residual(tmp_path):
    """resunet-linear on the bundled frame (header GAIN 1/4, RDNOISE 5 e-): the σ map from the header,
    the default strength 0.6, the sky level and the flux of bright stars kept, the noise lowered."""
    from astropy.io import fits

    meta = json.loads(next(d / "resunet-linear" for d in shipped_model_dirs()).joinpath("metadata.json").read_text())
    assert meta["noise_map"] is True and meta["signature"]["inputs"] == ["image", "noise_sigma"]
    assert 0 < meta["default_strength"] <= 1 and meta["bench"]["stars"]
    src = tmp_path / "frame.fits"
    src.write_bytes((SAMPLES / "starfield.fits").read_bytes())
    result = CliRunner().invoke(main, ["infer", "-q", str(src)])
    assert result.exit_code == 0, result.output
    history = str(fits.getheader(tmp_path / "frame_denoised.fits")["HISTORY"])
    assert "model=resunet-linear" in history and "gain 0.25 e-/ADU (header GAIN)" in history
    assert f"strength {meta['default_strength']:g}" in history
    data, out = fits.getdata(src).astype(np.float64), fits.getdata(tmp_path / "frame_denoised.fits").astype(np.float64)
    mad = lambda x: 1.4826 * np.median(np.abs(x - np.median(x)))  # noqa: E731
    assert mad(out - np.median(out)) < 0.75 * mad(data)  # the sky's noise lowered at strength 0.6
    assert abs(np.median(out) - np.median(data)) < 0.05 * mad(data)
    truth = fits.getdata(src, "TRUTH")
    bright = truth[truth["flux"] > 2e4]
    yy, xx = np.mgrid[0:data.shape[0], 0:data.shape[1]]
    ratios = []
    for x, y in zip(bright["x"], bright["y"]):
        aperture = (xx - x) ** 2 + (yy - y) ** 2 <= 36
        ratios.append((out[aperture] - np.median(out)).sum() / (data[aperture] - np.median(data)).sum())
    assert len(ratios) >= 5 and abs(np.median(ratios) - 1) < 0.02


def test_cli_picks_the_model_that_fits_the_data(tmp_path):
    rgb, rgb_info = io.read_image(SAMPLES / "hubble_deep_field.tif")
    io.write_image(tmp_path / "rgb.tif", rgb[:200, :300], rgb_info)
    mono, mono_info = io.read_image(SAMPLES / "starfield.fits")
    io.write_image(tmp_path / "mono.fits", mono[:200, :300], mono_info)
    result = CliRunner().invoke(main, ["infer", "-q", str(tmp_path / "rgb.tif"), str(tmp_path / "mono.fits")])
    assert result.exit_code == 0, result.output
    assert "(resunet-rgb-v2, " in result.output and "(resunet-linear, " in result.output
    assert (tmp_path / "rgb_denoised.tif").exists() and (tmp_path / "mono_denoised.fits").exists()


def test_cli_sends_a_magnetogram_to_the_self2self_model_not_the_flux_model(tmp_path):
    """Signed field maps (BUNIT Gauss) must not go through resunet-mono, whose normalisation assumes flux."""
    from astropy.io import fits

    rng = np.random.default_rng(0)
    field = rng.normal(0.0, 8.0, (96, 128)).astype(np.float32)
    field[40:56, 60:80] += 900.0  # a sunspot
    header = fits.Header({"BUNIT": "Gauss", "CONTENT": "MAGNETOGRAM"})
    fits.writeto(tmp_path / "hmi.fits", field, header)
    result = CliRunner().invoke(main, ["infer", "-q", str(tmp_path / "hmi.fits"), "--restore", "20"])
    assert result.exit_code == 0, result.output
    assert "(self2self-hmi, " in result.output
    out = fits.getdata(tmp_path / "hmi_denoised.fits")
    assert np.abs(out - field).max() <= 20.0 + 1e-3


@pytest.mark.parametrize("name", ["resunet-rgb", "resunet-rgb-v2", "resunet-mono"])
def test_shipped_onnx_matches_the_savedmodel(name):
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(3)
    tf_model, onnx_model = load_model(name), load_model(name, backend="onnxruntime")
    for shape in [(2, 64, 64), (1, 75, 41)]:
        x = rng.random(shape + (tf_model.channels,), dtype=np.float32)
        if tf_model.domain == "linear":
            x = 100.0 + 20.0 * x
        np.testing.assert_allclose(onnx_model.predict(x), tf_model.predict(x), atol=1e-4)


def test_default_soft_restore_is_skipped_not_fatal_when_the_noise_cannot_be_measured(tmp_path):
    """A magnetogram with no quiet Sun in [-20, 20] G: the default soft restore says why it is skipped
    (also in the HISTORY) and the image is still denoised; asked for explicitly, it fails that image."""
    from astropy.io import fits

    field = (600.0 + np.random.default_rng(1).normal(0.0, 8.0, (64, 64))).astype(np.float32)  # all plage
    fits.writeto(tmp_path / "plage.fits", field, fits.Header({"BUNIT": "Gauss", "CONTENT": "MAGNETOGRAM"}))
    result = CliRunner().invoke(main, ["infer", "-q", str(tmp_path / "plage.fits"), "--samples", "2"])
    assert result.exit_code == 0, result.output
    assert "soft restore skipped: noise level of the input: Too few pixels" in result.output
    assert "soft restore skipped" in str(fits.getheader(tmp_path / "plage_denoised.fits")["HISTORY"])
    explicit = CliRunner().invoke(main, ["infer", "-q", str(tmp_path / "plage.fits"), "--samples", "2",
                                         "--soft-restore", "-o", str(tmp_path / "x.fits")])
    assert explicit.exit_code == 2 and "Too few pixels" in explicit.output and "Traceback" not in explicit.output


def test_integer_fits_is_dithered_for_resunet_mono_and_says_so(tmp_path):
    """resunet-mono scales each tile by its MAD: an int16 camera frame of low noise is dithered first."""
    from astropy.io import fits

    frame = np.rint(np.random.default_rng(4).normal(200.0, 1.5, (64, 64))).astype(np.int16)
    fits.writeto(tmp_path / "cam.fits", frame)
    result = CliRunner().invoke(main, ["infer", "-q", str(tmp_path / "cam.fits"), "--model", "resunet-mono"])
    assert result.exit_code == 0, result.output
    assert "(resunet-mono, " in result.output
    history = str(fits.getheader(tmp_path / "cam_denoised.fits")["HISTORY"])
    assert "quantised input: dithered by one step (1," in history
    out = fits.getdata(tmp_path / "cam_denoised.fits")
    assert out.dtype.kind == "i" and abs(float(np.mean(out)) - 200.0) < 0.5
    # the same counts saved as float32 (a converted camera frame): the grid is found in the values
    fits.writeto(tmp_path / "camf.fits", frame.astype(np.float32))
    assert CliRunner().invoke(main, ["infer", "-q", str(tmp_path / "camf.fits"), "--model", "resunet-mono"]).exit_code == 0
    assert "dithered by one step (1," in str(fits.getheader(tmp_path / "camf_denoised.fits")["HISTORY"])
    smooth = frame + np.random.default_rng(5).uniform(-0.5, 0.5, frame.shape)
    fits.writeto(tmp_path / "smooth.fits", smooth.astype(np.float32))
    assert CliRunner().invoke(main, ["infer", "-q", str(tmp_path / "smooth.fits"), "--model", "resunet-mono"]).exit_code == 0
    assert "dithered" not in str(fits.getheader(tmp_path / "smooth_denoised.fits")["HISTORY"])
