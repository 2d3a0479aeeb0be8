"""A frame's own per-pixel uncertainty as the σ map of a noise-conditioned model: FITS ERR / VAR / IVAR
extensions (HST, Gemini), an NDData's uncertainty, the fill of pixels without one, the check against the
frame's own noise, and the options that turn it off."""

import logging

import numpy as np
import pytest
from astropy.io import fits

import astrotf
from astrotf import io
from astrotf.batch import denoise_frame
from astrotf.errors import AstroTFError
from astrotf.noise_map import MAX_UNUSABLE, NoiseOptions, check_against_frame, frame_noise
from astrotf.noise_model import NoiseModel
from tests.test_noise_infer import GAIN, READ_NOISE, ccd_frame, conditioned, invoke  # noqa: F401 - a fixture

MODEL = NoiseModel(GAIN, READ_NOISE)


def hst_file(path, data, err, dq=True, **primary):
    """An HST-like file: an empty primary HDU (``primary`` keywords), then SCI/ERR/DQ of EXTVER 1 and a
    second chip (EXTVER 2)."""
    hdus = [fits.PrimaryHDU(header=fits.Header({"TELESCOP": "HST", **primary}))]
    chip2 = ccd_frame(seed=1, shape=data.shape)  # another exposure of the same detector
    for extver, (sci, sigma) in enumerate(((data, err), (chip2, err * MODEL.sigma_map(chip2) / MODEL.sigma_map(data))), 1):
        hdus += [fits.ImageHDU(sci, fits.Header({"BUNIT": "COUNTS"}), name="SCI", ver=extver),
                 fits.ImageHDU(sigma, fits.Header({"BUNIT": "COUNTS"}), name="ERR", ver=extver)]
        if dq:
            hdus.append(fits.ImageHDU(np.zeros(data.shape, np.int16), name="DQ", ver=extver))
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.fixture()
def frame():
    data = ccd_frame(shape=(128, 128))
    return data, MODEL.sigma_map(data)


# ----------------------------------------------------------------------------- reading
@pytest.mark.parametrize("kind,stored", [("sigma", lambda s: s), ("variance", lambda s: s**2),
                                         ("inverse variance", lambda s: 1 / s**2)])
def test_every_kind_of_uncertainty_gives_the_same_sigma_and_none_where_it_has_none(kind, stored):
    sigma = np.array([[1.0, 2.5], [4.0, 0.5]], np.float32)
    values = stored(sigma.astype(np.float64))
    values[0, 0] = {"sigma": 0.0, "variance": -1.0, "inverse variance": 0.0}[kind]  # no sigma there
    values[1, 1] = np.nan
    got = io.Uncertainty(values[..., None], kind, "test").sigma()[..., 0]
    np.testing.assert_allclose(got[0, 1], 2.5, rtol=1e-6)
    np.testing.assert_allclose(got[1, 0], 4.0, rtol=1e-6)
    assert np.isnan(got[0, 0]) and np.isnan(got[1, 1])
    with pytest.raises(AstroTFError, match="`kind` must be one of"):
        io.Uncertainty(values, "weight", "test")


def test_the_err_extension_of_the_image_s_extver_is_read_laid_out_like_the_image(tmp_path, frame):
    data, sigma = frame
    path = hst_file(tmp_path / "flt.fits", data, sigma)
    image, info = io.read_image(path)
    assert info.hdu_index == 1 and image.shape == (128, 128, 1)
    found = io.read_uncertainty(info)
    assert found.kind == "sigma" and found.source == "ERR extension (HDU 2, EXTVER 1)"
    np.testing.assert_array_equal(found.values[..., 0], sigma)  # not chip 2's


def test_a_var_plane_is_read_as_a_variance_and_files_without_one_give_none(tmp_path, frame, caplog):
    data, sigma = frame
    gemini = tmp_path / "gmos.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI"), fits.ImageHDU(sigma**2, name="VAR")]
                 ).writeto(gemini)
    found = io.read_uncertainty(io.read_image(gemini)[1])
    assert found.kind == "variance" and found.source == "VAR extension (HDU 2)"
    np.testing.assert_allclose(found.sigma()[..., 0], sigma, rtol=1e-6)
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(data).writeto(plain)
    assert io.read_uncertainty(io.read_image(plain)[1]) is None
    cropped = tmp_path / "cropped.fits"
    fits.HDUList([fits.PrimaryHDU(data), fits.ImageHDU(sigma[:64], name="ERR")]).writeto(cropped)
    with caplog.at_level(logging.WARNING):
        assert io.read_uncertainty(io.read_image(cropped)[1]) is None
    assert "ERR extension (HDU 1) is shaped (64, 128), the image (128, 128); not used" in caplog.text


# ----------------------------------------------------------------------------- the sigma map
def test_a_right_uncertainty_is_the_sigma_map_and_the_history_names_it(frame):
    data, sigma = frame
    data, sigma = data.copy(), sigma.copy()
    data[:3, :3] = np.nan
    found = frame_noise(data[..., None], None, NoiseOptions(), io.Uncertainty(sigma[..., None], "sigma", "ERR ext"))
    assert found.uncertainty == "ERR ext" and found.models == ()
    np.testing.assert_array_equal(found.sigma[3:, 3:, 0], sigma[3:, 3:])
    assert np.isnan(found.sigma[:3, :3]).all()  # NaN stays NaN
    assert found.history[0] == "noise model: sigma map from the ERR ext, read as sigma"
    check = check_against_frame(sigma, data)
    assert abs(check.sigma_ratio - 1) < 0.05 and check.agreeing > 0.85
    assert f"noise model: {check.line()}" in found.history and "x uncertainty sigma" in check.line()


def test_a_wrong_uncertainty_is_refused_unless_trusted_and_the_options_turn_it_off(frame):
    data, sigma = frame
    wrong = io.Uncertainty(2 * sigma[..., None], "sigma", "ERR extension (HDU 2)")
    with pytest.raises(AstroTFError, match=r"^the ERR extension \(HDU 2\) is not trusted: the frame's background "
                                           r"noise is 0\.5\d x the uncertainty's sigma.*pass --no-uncertainty"):
        frame_noise(data[..., None], None, NoiseOptions(), wrong)
    trusted = frame_noise(data[..., None], None, NoiseOptions(trust=True), wrong)
    np.testing.assert_allclose(trusted.sigma[..., 0], 2 * sigma)
    assert trusted.lines[0].startswith("Warning: noise model used (--trust-noise-model) although the frame's")
    header = {"GAIN": GAIN, "RDNOISE": READ_NOISE}
    for options, flags in ((NoiseOptions(uncertainty=False), "--no-uncertainty"), (NoiseOptions(gain=GAIN), "--gain")):
        found = frame_noise(data[..., None], header, options, wrong)
        np.testing.assert_allclose(found.sigma[..., 0], sigma, rtol=1e-6)  # the gain and read-noise model
        assert found.uncertainty is None and found.models[0].gain == GAIN
        assert found.history[0] == f"noise model: the ERR extension (HDU 2) is not used ({flags} given)"


def test_pixels_without_a_sigma_take_their_neighbours_and_too_many_are_refused(frame):
    data, sigma = frame
    holed = sigma.copy()
    holed[40, 50], holed[41, 50], holed[90, 20] = 0.0, np.nan, -1.0
    found = frame_noise(data[..., None], None, NoiseOptions(), io.Uncertainty(holed[..., None], "sigma", "ERR"))
    for y, x in ((40, 50), (41, 50), (90, 20)):
        near = sigma[y - 2:y + 3, x - 2:x + 3]
        assert near.min() <= found.sigma[y, x, 0] <= near.max()
    assert "read as sigma; 3 pixels without a sigma filled from their neighbours; frame noise" in found.lines[0]
    rows = int(np.ceil(MAX_UNUSABLE * 128)) + 1
    holed[:rows] = 0.0
    with pytest.raises(AstroTFError, match=r"^the ERR gives no sigma \(zero, negative or NaN\) for 6\.3% of the "
                                           r"pixels with data \(at most 5%\); pass --no-uncertainty"):
        frame_noise(data[..., None], None, NoiseOptions(), io.Uncertainty(holed[..., None], "sigma", "ERR"))


def test_an_uncertainty_of_another_shape_is_a_one_line_error(frame):
    data, sigma = frame
    with pytest.raises(AstroTFError, match=r"^the ERR is shaped \(128, 64\) x 1 channel\(s\), the image \(128, 128\)"):
        frame_noise(data[..., None], None, NoiseOptions(), io.Uncertainty(sigma[:, :64, None], "sigma", "ERR"))


# ----------------------------------------------------------------------------- astrotf infer and the API
def test_cli_takes_the_err_extension_where_the_header_has_no_noise_model(tmp_path, conditioned, frame):
    path, _ = conditioned
    data, sigma = frame
    src = hst_file(tmp_path / "flt.fits", data, sigma)
    result = invoke(src, "--model", path, "--write-noise-map")
    assert result.exit_code == 0, result.output
    assert "flt.fits[1]: noise model: sigma map from the ERR extension (HDU 2, EXTVER 1), read as sigma; frame " \
           "noise" in result.output
    assert "flt.fits[4]: noise model: sigma map from the ERR extension (HDU 5, EXTVER 2)" in result.output
    np.testing.assert_array_equal(fits.getdata(tmp_path / "flt_noise.fits", 1), sigma)
    with fits.open(tmp_path / "flt_denoised.fits") as hdul:  # every HDU where it was, the primary header kept
        assert [(h.name, h.ver) for h in hdul] == [("PRIMARY", 1), ("SCI", 1), ("ERR", 1), ("DQ", 1), ("SCI", 2),
                                                  ("ERR", 2), ("DQ", 2)]
        assert hdul[0].header["TELESCOP"] == "HST" and hdul[0].data is None
        history = " ".join(card.removeprefix("noise model:").strip() for card in map(str, hdul[1].header["HISTORY"]))
        np.testing.assert_array_equal(hdul["ERR", 1].data, sigma)
    assert "sigma map from the ERR extension (HDU 2, EXTVER 1), read as sigma" in history
    # without it, nothing gives the noise: the header has no gain, and this flat sky cannot be fitted
    result = invoke(src, "--model", path, "-o", tmp_path / "fit.fits", "--no-uncertainty")
    assert result.exit_code == 2 and f"Error: {src}[1]: cannot fit the gain" in result.output
    result = invoke(src, "--model", path, "-o", tmp_path / "fit.fits", "--gain", "2", "--read-noise", "5")
    assert result.exit_code == 0, result.output
    assert "the ERR extension (HDU 2, EXTVER 1) is not used (--gain, --read-noise given)" in result.output
    np.testing.assert_array_equal(fits.getdata(src, 1), data)  # the input is untouched


def test_cli_reads_the_noise_model_of_an_extension_from_the_primary_header(tmp_path, conditioned, frame):
    path, _ = conditioned
    data, sigma = frame
    src = hst_file(tmp_path / "flt.fits", data, sigma, CCDGAIN=GAIN, READNSE=READ_NOISE, EXPTIME=150.0)
    result = invoke(src, "--model", path, "--no-uncertainty", "--write-noise-map")
    assert result.exit_code == 0, result.output
    assert "noise model: gain 2 e-/ADU (header CCDGAIN), read noise 5 e- (header READNSE), unit adu" in result.output
    np.testing.assert_allclose(fits.getdata(tmp_path / "flt_noise.fits"), sigma, rtol=1e-6)


def test_cli_refuses_a_wrong_err_extension_naming_the_file_and_the_way_out(tmp_path, conditioned, frame):
    path, _ = conditioned
    data, sigma = frame
    src = hst_file(tmp_path / "flt.fits", data, 3 * sigma)
    result = invoke(src, "--model", path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert line.startswith(f"Error: {src}[1]: the ERR extension (HDU 2, EXTVER 1) is not trusted: the frame's")
    assert not (tmp_path / "flt_denoised.fits").exists()


def test_cli_refuses_no_uncertainty_for_a_model_without_a_noise_input(tmp_path, frame):
    import keras

    from astrotf.models.resunet import ResUNet

    keras.utils.set_random_seed(0)
    plain = tmp_path / "plain.keras"
    ResUNet(channels=1, depth=2, base_filters=4, normalization="background").save(plain)
    src = tmp_path / "f.fits"
    fits.PrimaryHDU(frame[0]).writeto(src)
    result = invoke(src, "--model", plain, "--no-uncertainty")
    assert result.exit_code == 2 and "--no-uncertainty: model plain is not noise-conditioned" in result.output


def test_the_api_takes_an_nddata_uncertainty_of_any_kind_as_the_sigma_map(conditioned, frame):
    import warnings

    from astropy import units as u
    from astropy.nddata import CCDData, InverseVariance, StdDevUncertainty, VarianceUncertainty

    path, _ = conditioned
    data, sigma = frame
    expected = denoise_frame(data[..., None], astrotf.Denoiser(str(path), tile=32).options, domain="linear",
                             uncertainty=io.Uncertainty(sigma[..., None], "sigma", "test"))
    assert expected.noise.uncertainty == "test"
    for uncertainty in (StdDevUncertainty(sigma), VarianceUncertainty(sigma.astype(np.float64) ** 2),
                        InverseVariance(1 / sigma.astype(np.float64) ** 2)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # used, so not "dropped"
            out = astrotf.Denoiser(str(path), tile=32)(CCDData(data, unit=u.adu, uncertainty=uncertainty))
        np.testing.assert_allclose(out.data, expected.data[..., 0], rtol=1e-5)
        assert out.uncertainty is None
        assert any("sigma map from the NDData" in line for line in out.meta["HISTORY"])
    off = astrotf.Denoiser(str(path), tile=32, use_uncertainty=False, gain=GAIN, read_noise=READ_NOISE)
    with pytest.warns(UserWarning, match="uncertainty is dropped"):
        out = off(CCDData(data, unit=u.adu, uncertainty=StdDevUncertainty(3 * sigma)))
    assert not any("NDData" in line and "sigma map from" in line for line in out.meta["HISTORY"])
