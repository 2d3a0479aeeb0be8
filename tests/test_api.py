"""astrotf.denoise / astrotf.Denoiser: arrays and astropy NDData / CCDData in, the same type out."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.wcs import WCS

import astrotf
from astrotf.api import Denoiser, array_domain
from astrotf.errors import AstroTFError
from tests.test_infer_cli import models  # noqa: F401  (a module fixture: tiny random .keras models)


def sky(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(500.0, 20.0, shape).astype(np.float32)


def test_array_domain_from_values_and_unit():
    assert array_domain(np.full((4, 4, 1), 0.3, np.float32)) == "stretched"
    assert array_domain(sky((4, 4, 1))) == "linear"
    assert array_domain(np.zeros((4, 4, 1), np.float32), unit="Gauss") == "magnetogram"


def test_an_array_comes_back_float32_in_its_shape_and_a_denoiser_loads_its_model_once(models):
    denoiser = Denoiser(models["mono"], tile=32)
    image = sky((40, 50))
    out = denoiser(image)
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.abs(out - image).max() > 0  # the (random) network changed it
    again = denoiser(sky((40, 50), seed=1)[..., None])
    assert again.shape == (40, 50, 1) and len(denoiser._models) == 1
    np.testing.assert_array_equal(astrotf.denoise(image, models["mono"], tile=32), out)


def test_strength_zero_and_restore_hold_in_the_api(models):
    image = sky((32, 32))
    np.testing.assert_array_equal(astrotf.denoise(image, models["mono"], tile=32, strength=0.0), image)
    kept = astrotf.denoise(image, models["mono"], tile=32, restore=5.0)
    assert np.abs(kept - image).max() <= 5.0


def test_nddata_keeps_mask_wcs_unit_and_meta_and_says_what_was_done(models):
    image = sky((36, 40))
    mask = np.zeros(image.shape, bool)
    mask[5:9, 7:12] = True
    image[mask] = 1e6  # a saturated bleed the mask hides
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    nd = CCDData(image, unit=u.adu, mask=mask, wcs=wcs, meta={"OBJECT": "M31"},
                 uncertainty=StdDevUncertainty(np.full(image.shape, 20.0)))
    with pytest.warns(UserWarning, match="uncertainty is dropped"):
        out = Denoiser(models["mono"], tile=32)(nd)
    assert type(out) is CCDData and out.unit == u.adu and out.uncertainty is None
    np.testing.assert_array_equal(out.mask, mask)
    assert out.wcs.wcs.ctype[0] == "RA---TAN" and out.meta["OBJECT"] == "M31"
    assert any("model=mono" in line for line in out.meta["HISTORY"])
    np.testing.assert_array_equal(out.data[mask], image[mask])  # masked pixels come back as they were
    unmasked = np.asarray(Denoiser(models["mono"], tile=32)(NDData(np.where(mask, 500.0, image))).data)
    assert np.abs(out.data[~mask] - unmasked[~mask]).max() > 0  # NaN in: the bleed never reached the network
    assert np.abs(out.data[~mask] - image[~mask]).max() < 1e5


def test_bad_inputs_are_named():
    with pytest.raises(AstroTFError, match=r"mask is shaped \(3, 3\) but its data \(4, 4\)"):
        Denoiser("resunet-mono")(NDData(np.zeros((4, 4)), mask=np.zeros((3, 3), bool)))
    with pytest.raises(AstroTFError, match="shape"):
        astrotf.denoise(np.zeros((4, 4, 5)))
    with pytest.raises(AstroTFError, match="domain"):
        Denoiser(domain="sky")
    with pytest.raises(AstroTFError, match="unknown option"):
        Denoiser(tiles=3)
    with pytest.raises(AstroTFError, match="strength"):
        Denoiser(strength=2.0)
