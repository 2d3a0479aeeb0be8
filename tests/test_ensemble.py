"""Self2Self ensembles (TDR eq. 4): masks, averages, no-data pixels and the seeded wrapper of a loaded model."""

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from astrotf.backends import LoadedModel
from astrotf.cli import main
from astrotf.ensemble import ensemble_predictor, with_ensemble
from astrotf.errors import AstroTFError
from astrotf.models.registry import build_model


def test_ensemble_masks_have_keep_probability_and_dropped_average():
    """Each member sees B·y with P(B=1) = keep_prob; "dropped" averages only where B = 0."""
    seen = []

    def call(x, mask):
        seen.append(mask.copy())
        return np.where(mask == 1, 100.0, 1.0).astype(np.float32)  # 1 where the pixel was dropped

    batch = np.zeros((4, 64, 64, 1), np.float32)
    out = ensemble_predictor(call, samples=8, keep_prob=0.7, seed=0)(batch)
    masks = np.stack(seen)
    assert set(np.unique(masks)) == {0.0, 1.0}
    assert masks.mean() == pytest.approx(0.7, abs=0.01)
    never_dropped = masks.min(axis=0) == 1
    assert np.all(out[~never_dropped] == 1.0) and np.all(out[never_dropped] == 100.0)
    out_all = ensemble_predictor(call, samples=8, keep_prob=0.7, seed=0, average="all")(batch)
    np.testing.assert_allclose(out_all, np.mean(np.where(masks == 1, 100.0, 1.0), axis=0), rtol=1e-6)


def test_ensemble_keeps_no_data_pixels_out_of_the_network():
    """NaN pixels (off-disk) are dropped in every member's mask and never reach the network as values."""
    seen = []

    def call(x, mask):
        seen.append((x.copy(), mask.copy()))
        return x

    batch = np.random.default_rng(1).normal(size=(2, 32, 32, 1)).astype(np.float32)
    batch[:, :, :10] = np.nan
    out = ensemble_predictor(call, samples=4, keep_prob=0.7, seed=0)(batch)
    for x, mask in seen:
        assert np.isfinite(x).all() and (mask[:, :, :10] == 0).all()
        assert mask[:, :, 10:].mean() == pytest.approx(0.7, abs=0.05)
    np.testing.assert_array_equal(out[:, :, 10:], batch[:, :, 10:])


def test_pixels_beside_no_data_do_not_depend_on_a_fill_value():
    """Tiled Self2Self inference: the limb's neighbours are predicted from data only.

    A stand-in network (mean of the kept pixels in a 3 x 3 window, a partial convolution) gives
    the same limb values whether the rest of the disk, and so the median that used to fill
    the off-disk pixels, is bright or dark.
    """
    from scipy.ndimage import uniform_filter

    from astrotf.backends import LoadedModel
    from astrotf.ensemble import with_ensemble
    from astrotf.infer import TileOptions, denoise_image

    def sample(x, keep):
        total, count = (uniform_filter(v, size=(1, 3, 3, 1)) for v in (x * keep, keep))
        return np.where(count > 1e-6, total / np.maximum(count, 1e-6), 0.0).astype(np.float32)

    def model():  # a fresh seeded ensemble per frame: the same masks for both
        return with_ensemble(LoadedModel("s2s", sample, {"channels": 1, "data_domain": "linear"}, sample=sample),
                             samples=4, seed=0)

    rng = np.random.default_rng(2)
    image = rng.normal(size=(96, 96, 1)).astype(np.float32)
    image[:, :30] = np.nan  # off-disk
    other = image.copy()
    other[:, 60:] += 1000.0  # far from the limb: moves the median, not the limb's neighbourhood
    options = TileOptions(tile=48, overlap=0.25, batch_size=4)
    a, b = denoise_image(image, model(), options), denoise_image(other, model(), options)
    limb = slice(30, 33)
    assert np.isnan(a[:, :30]).all() and np.isfinite(a[:, 30:]).all()
    np.testing.assert_allclose(a[:, limb], b[:, limb], atol=1e-5)


def test_samples_on_a_deterministic_model_is_an_error(tmp_path):
    model = build_model("resunet", channels=1, depth=1, base_filters=2)
    model.save(tmp_path / "r.keras")
    fits.writeto(tmp_path / "x.fits", np.zeros((32, 32), np.float32))
    result = CliRunner().invoke(main, ["infer", str(tmp_path / "x.fits"), "--model", str(tmp_path / "r.keras"),
                                       "--samples", "4", "-q"])
    assert result.exit_code == 2 and "--samples needs a Self2Self model" in result.output


def test_block_masks_drop_whole_blocks_with_keep_probability():
    from astrotf.ensemble import block_keep_mask

    mask = block_keep_mask(np.random.default_rng(0), (4, 63, 65, 1), 0.7, block=2)
    assert mask.shape == (4, 63, 65, 1) and mask.mean() == pytest.approx(0.7, abs=0.02)
    blocks = mask[:, :62, :64, 0].reshape(4, 31, 2, 32, 2)
    assert np.all(blocks.min(axis=(2, 4)) == blocks.max(axis=(2, 4)))


def test_with_ensemble_is_seeded_and_reseeds_the_model():
    calls = []

    def sample(x, keep):
        return (x * keep).astype(np.float32)

    model = LoadedModel("s2s", sample, {"channels": 1, "ensemble": {"keep_prob": 0.5}}, sample=sample,
                        reseed=calls.append)
    batch = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype(np.float32)
    a = with_ensemble(model, samples=3, seed=7).predict(batch)
    b = with_ensemble(model, samples=3, seed=7).predict(batch)
    c = with_ensemble(model, samples=3, seed=8).predict(batch)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and calls == [7, 7, 8]
    assert with_ensemble(model, samples=3).masks_nonfinite


def test_with_ensemble_refuses_a_deterministic_model():
    model = LoadedModel("plain", lambda x: x, {"channels": 1})
    with pytest.raises(AstroTFError, match="needs a Self2Self model"):
        with_ensemble(model, samples=2)
