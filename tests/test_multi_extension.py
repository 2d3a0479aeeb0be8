"""Multi-extension FITS files: every science image is denoised (HST chips, the CCDs of a mosaic camera),
each with its own header, noise and HISTORY, into one output laid out like the input."""

import numpy as np
import pytest
from astropy.io import fits

from astrotf import io
from tests.test_noise_infer import GAIN, READ_NOISE, ccd_frame, conditioned, invoke  # noqa: F401 - a fixture
from tests.test_uncertainty import MODEL, hst_file


def mosaic(path, shape=(96, 112)):
    """A mosaic camera's file: an empty primary HDU with the instrument keywords, three CCDs (EXTNAME of
    their position), a weight map and a catalogue table."""
    hdus = [fits.PrimaryHDU(header=fits.Header({"INSTRUME": "DECam", "GAIN": GAIN, "RDNOISE": READ_NOISE}))]
    for seed, name in enumerate(("S1", "S2", "N1")):
        hdus.append(fits.ImageHDU(ccd_frame(seed=seed, shape=shape), fits.Header({"CCDNUM": seed + 1}), name=name))
    hdus.append(fits.ImageHDU(np.ones(shape, np.float32), name="WEIGHT"))
    hdus.append(fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=[1.0, 2.0])], name="CAT"))
    fits.HDUList(hdus).writeto(path)
    return path


def test_science_hdus_are_the_sci_extensions_or_every_image_that_is_not_an_uncertainty_or_a_map(tmp_path):
    data = ccd_frame()
    hst = hst_file(tmp_path / "flt.fits", data, MODEL.sigma_map(data))
    assert io.science_hdus(io.read_image(hst)[1]) == [1, 4]  # not ERR or DQ
    camera = mosaic(tmp_path / "decam.fits")
    assert io.science_hdus(io.read_image(camera)[1]) == [1, 2, 3]  # not WEIGHT, not the table
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(data).writeto(plain)
    assert io.science_hdus(io.read_image(plain)[1]) == [0]
    chip, info = io.read_image(camera, hdu=3)
    assert info.hdu_index == 3 and info.header["EXTNAME"] == "N1"
    np.testing.assert_array_equal(chip[..., 0], ccd_frame(seed=2))
    with pytest.raises(io.ImageIOError, match=r"decam\.fits: no image data in HDU 5$"):
        io.read_image(camera, hdu=5)


def test_cli_denoises_every_ccd_of_a_mosaic_into_one_file_laid_out_like_the_input(tmp_path, conditioned):
    path, _ = conditioned
    src = mosaic(tmp_path / "decam.fits")
    result = invoke(src, "--model", path, "--write-noise-map")
    assert result.exit_code == 0, result.output
    assert "decam.fits: 3 images, HDUs 1, 2, 3" in result.output
    for index in (1, 2, 3):  # each CCD's noise model from the primary header's keywords
        assert f"decam.fits[{index}]: noise model: gain 2 e-/ADU (header GAIN)" in result.output
    with fits.open(src) as before, fits.open(tmp_path / "decam_denoised.fits") as after:
        assert [(h.name, type(h)) for h in after] == [(h.name, type(h)) for h in before]
        assert after[0].header["INSTRUME"] == "DECam"
        for index in (1, 2, 3):
            noisy, out = before[index].data, after[index].data
            assert after[index].header["CCDNUM"] == index
            assert "astrotf input: decam.fits" in str(after[index].header["HISTORY"])
            assert np.std(out - noisy) > 0.3 * np.median(MODEL.sigma_map(noisy))  # denoised, not copied
        np.testing.assert_array_equal(after["WEIGHT"].data, before["WEIGHT"].data)
        np.testing.assert_array_equal(after["CAT"].data["x"], [1.0, 2.0])
    with fits.open(tmp_path / "decam_noise.fits") as maps:
        assert len(maps) == 4 and maps[0].data is None
        for index in (1, 2, 3):
            np.testing.assert_allclose(maps[index].data, MODEL.sigma_map(fits.getdata(src, index)), rtol=1e-6)
            assert maps[index].header["EXTNAME"] == ("S1", "S2", "N1")[index - 1]
    again = invoke(src, "--model", path, "--write-noise-map", "--force")  # astrotf's own map is replaced
    assert again.exit_code == 0, again.output


def test_a_chip_that_fails_names_its_hdu_and_nothing_is_written(tmp_path, conditioned):
    path, _ = conditioned
    src = mosaic(tmp_path / "decam.fits")
    with fits.open(src, mode="update") as hdul:
        hdul[2].data = ccd_frame(seed=1, gain=8.0)  # a CCD whose noise the header does not describe
    result = invoke(src, "--model", path)
    assert result.exit_code == 2 and f"Error: {src}[2]: noise model not trusted" in result.output
    assert not (tmp_path / "decam_denoised.fits").exists()
