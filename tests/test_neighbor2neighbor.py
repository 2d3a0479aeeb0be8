"""Neighbor2Neighbor on one image (TDR's rule): the sub-image sampler, the loss on real numbers, the
recipe's checks, the fixed normalisation, and a tiny train -> infer -> export run from the CLI."""

import json

import numpy as np
import pytest
import tensorflow as tf
from astropy.io import fits

from astrotf.config import Self2SelfRecipe, self2self_recipe_from_dict
from astrotf.errors import AstroTFError
from astrotf.metrics import noise_level
from astrotf.models.resunet import ResUNet
from astrotf.train.neighbor2neighbor import make_train_step, subsample_pair
from tests.test_self2self import run, synthetic_field

TINY = dict(channels=1, depth=2, base_filters=8, normalization="fixed")


# ----------------------------------------------------------------------------- sampler
def test_sub_images_take_two_adjacent_pixels_of_every_cell():
    h, w = 8, 12
    index = np.arange(h * w, dtype=np.float32).reshape(1, h, w, 1)
    (g1, g2), (d1, d2) = subsample_pair(tf.constant([3, 4], tf.int64), index, 2 * index)
    g1, g2 = np.asarray(g1)[0, ..., 0].astype(int), np.asarray(g2)[0, ..., 0].astype(int)
    assert g1.shape == g2.shape == (h // 2, w // 2)
    r1, c1, r2, c2 = g1 // w, g1 % w, g2 // w, g2 % w
    cell_r, cell_c = np.mgrid[0:h // 2, 0:w // 2]
    assert (r1 // 2 == cell_r).all() and (c1 // 2 == cell_c).all()  # both from their own cell
    assert (r2 // 2 == cell_r).all() and (c2 // 2 == cell_c).all()
    assert (np.abs(r1 - r2) + np.abs(c1 - c2) == 1).all()  # horizontal or vertical neighbours, never the same
    np.testing.assert_array_equal(np.asarray(d1)[0, ..., 0], 2 * g1)  # one choice for every image given
    np.testing.assert_array_equal(np.asarray(d2)[0, ..., 0], 2 * g2)


def test_larger_cells_pair_pixels_half_a_cell_apart():
    h, w = 16, 24
    index = np.arange(h * w, dtype=np.float32).reshape(1, h, w, 1)
    (g1, g2), = subsample_pair(tf.constant([5, 6], tf.int64), index, cell=4)
    g1, g2 = np.asarray(g1)[0, ..., 0].astype(int), np.asarray(g2)[0, ..., 0].astype(int)
    assert g1.shape == (h // 4, w // 4)
    r1, c1, r2, c2 = g1 // w, g1 % w, g2 // w, g2 % w
    cell_r, cell_c = np.mgrid[0:h // 4, 0:w // 4]
    assert (r1 // 4 == cell_r).all() and (c1 // 4 == cell_c).all() and (r2 // 4 == cell_r).all()
    distance = np.abs(r1 - r2) + np.abs(c1 - c2)
    assert (distance == 2).all() and ((r1 == r2) | (c1 == c2)).all()  # 2 px apart in a row or a column


def test_sub_images_are_seeded_and_use_all_eight_pairs():
    x = np.arange(64 * 64, dtype=np.float32).reshape(1, 64, 64, 1)
    a = np.asarray(subsample_pair(tf.constant([1, 2], tf.int64), x)[0][0])
    b = np.asarray(subsample_pair(tf.constant([1, 2], tf.int64), x)[0][0])
    c = np.asarray(subsample_pair(tf.constant([1, 3], tf.int64), x)[0][0])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    (g1, g2), = subsample_pair(tf.constant([1, 2], tf.int64), x)
    offsets = (np.asarray(g2) - np.asarray(g1)).ravel()  # +-1 horizontal, +-64 vertical
    values, counts = np.unique(offsets, return_counts=True)
    assert set(values) == {-64, -1, 1, 64} and counts.min() > 0.2 * offsets.size


# ----------------------------------------------------------------------------- loss
class _Config:
    def __init__(self, gamma, cell=2):
        self.gamma, self.cell = gamma, cell


@pytest.mark.parametrize("gamma, cell", [(0.0, 2), (5.0, 2), (1.0, 4)])
def test_first_loss_of_an_identity_network_is_twice_the_noise_variance(gamma, cell):
    """ResUNet starts as the identity, so f(g1) - g2 = g1 - g2 and the regulariser's term is exactly 0:
    the loss is mean((g1 - g2)^2) / scale^2 = 2 sigma^2 / scale^2 whatever gamma is."""
    sigma, scale = 8.0, 60.0
    y = np.random.default_rng(0).normal(100.0, sigma, (8, 128, 128, 1)).astype(np.float32)
    valid = np.ones_like(y)
    valid[:, :, :64] = 0.0  # half the pixels do not count, and must not bias the mean
    y[:, :, :64] = 1e4  # (16384 pairs left: the mean is within 1.1 % of its expectation, 1 sigma)
    model = ResUNet(**TINY, offset=100.0, scale=scale)
    step = make_train_step(model, tf.keras.optimizers.SGD(0.0), _Config(gamma, cell), 100.0, scale)
    loss = float(step(tf.constant(y), tf.constant(valid), tf.constant([0, 0], tf.int64)))
    assert loss == pytest.approx(2 * sigma**2 / scale**2, rel=0.05)


# ----------------------------------------------------------------------------- model and recipe
def test_fixed_normalisation_is_exact_in_the_data_units(tmp_path):
    model = ResUNet(**TINY, offset=2.0e4, scale=300.0)
    x = np.random.default_rng(1).normal(2.0e4, 30.0, (1, 37, 45, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), x, atol=2e-3)  # identity at start, in counts of 20000
    config = model.get_config()
    assert (config["normalization"], config["offset"], config["scale"]) == ("fixed", 2.0e4, 300.0)
    assert ResUNet.from_config(config).count_params() == model.count_params()
    with pytest.raises(ValueError, match="`scale`"):
        ResUNet(**TINY, scale=0.0)


def test_recipe_pairs_each_method_with_its_network():
    recipe = self2self_recipe_from_dict({"model": {"name": "resunet", "normalization": "fixed"},
                                         "train": {"method": "neighbor2neighbor", "patch": 64}})
    assert recipe.train.gamma == 2.0 and recipe.model.name == "resunet"
    assert Self2SelfRecipe().train.method == "self2self"
    bad = [
        ({"model": {"name": "resunet", "normalization": "fixed"}}, "trains a 'self2self' network"),
        ({"train": {"method": "neighbor2neighbor"}}, "trains a 'resunet' network"),
        ({"model": {"name": "resunet", "normalization": "background"}, "train": {"method": "neighbor2neighbor"}},
         "normalization = 'fixed'"),
        ({"model": {"name": "resunet", "normalization": "fixed"}, "train": {"method": "neighbor2neighbor",
                                                                            "patch": 33}}, "multiple of cell"),
        ({"model": {"name": "resunet", "normalization": "fixed"}, "train": {"method": "neighbor2neighbor",
                                                                            "cell": 3}}, "2, 4, 6 or 8"),
        ({"train": {"method": "noise2void"}}, "one of self2self, neighbor2neighbor"),
        ({"train": {"precision": "mixed_bfloat16"}}, "float32 \\(Self2Self\\)"),
        ({"model": {"name": "nafnet"}}, "`name` must be one of self2self, resunet"),
    ]
    for values, message in bad:
        with pytest.raises(AstroTFError, match=message):
            self2self_recipe_from_dict(values, "r.toml")


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny Neighbor2Neighbor run on one synthetic noisy field (sigma = 8 'G')."""
    tmp = tmp_path_factory.mktemp("n2n")
    _, noisy = synthetic_field(96, seed=0)
    noisy[:6, :30] = np.nan
    fits.writeto(tmp / "a.fits", noisy, fits.Header([("BUNIT", "Gauss")]))
    recipe = tmp / "tiny.toml"
    recipe.write_text('[model]\nname = "resunet"\nnormalization = "fixed"\ndepth = 2\nbase_filters = 8\n'
                      '[train]\nmethod = "neighbor2neighbor"\ncheckpoint_every = 200\nlog_every = 20\n')
    out = tmp / "run"
    result = run(["train", "neighbor2neighbor", str(tmp / "a.fits"), "--out", str(out), "--config", str(recipe),
                  "--steps", "400", "--patch", "32", "--seed", "1", "--precision", "float32", "-q"])
    assert result.exit_code == 0, result.output
    return tmp, out


@pytest.mark.slow
def test_train_then_denoise_another_field(trained_run):
    tmp, out = trained_run
    state = json.loads((out / "run.json").read_text())
    assert state["step"] == 400 and state["status"] == "finished"
    assert state["recipe"]["model"]["scale"] > 0 and state["recipe"]["train"]["method"] == "neighbor2neighbor"
    assert (out / "previews" / "step-000400.png").exists() and (out / "previews" / "step-000200.png").exists()
    clean, noisy = synthetic_field(96, seed=5)  # a different field of the same kind
    noisy[:8, :20] = np.nan
    fits.writeto(tmp / "b.fits", noisy)
    result = run(["infer", str(tmp / "b.fits"), "--model", str(out), "--no-soft-restore",
                  "-o", str(tmp / "b_raw.fits"), "-q"])
    assert result.exit_code == 0, result.output
    raw = fits.getdata(tmp / "b_raw.fits")
    assert np.isnan(raw[:8, :20]).all() and np.isfinite(raw[8:]).all()
    sigma_in = noise_level(noisy - clean).sigma
    assert noise_level(raw - clean).sigma < 0.6 * sigma_in
    # soft restore on by default (the network sees the pixel it predicts), and --restore keeps its bound
    result = run(["infer", str(tmp / "b.fits"), "--model", str(out), "--restore", "4", "-o", str(tmp / "b_r.fits"),
                  "-q"])
    assert result.exit_code == 0, result.output
    restored = fits.getdata(tmp / "b_r.fits")
    finite = np.isfinite(noisy)
    assert np.max(np.abs(restored[finite] - noisy[finite])) <= 4.0
    assert "soft restore" in str(fits.getheader(tmp / "b_r.fits")["HISTORY"])


@pytest.mark.slow
def test_resume_export_onnx_and_init(trained_run, tmp_path):
    tmp, out = trained_run
    wrong = run(["train", "self2self", "--out", str(out), "--resume", "--steps", "420", "-q"])
    assert wrong.exit_code != 0 and "astrotf train neighbor2neighbor" in wrong.output
    assert "Traceback" not in wrong.output
    resumed = run(["train", "neighbor2neighbor", "--out", str(out), "--resume", "--steps", "420", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "run.json").read_text())["step"] == 420
    exported = run(["export", str(out), "--out", str(tmp_path / "n2n"), "--format", "savedmodel", "--format", "onnx"])
    assert exported.exit_code == 0, exported.output
    meta = json.loads((tmp_path / "n2n" / "metadata.json").read_text())
    assert meta["one_image_method"] == "neighbor2neighbor" and meta["data_domain"] == "linear"
    assert meta["normalization"]["kind"] == "fixed" and meta["training"]["data"]["bunit"] == "Gauss"
    assert meta["training"]["steps"] == 420 and "Neighbor2Neighbor" in meta["training"]["method"]
    _, noisy = synthetic_field(64, seed=3)
    fits.writeto(tmp_path / "c.fits", noisy)
    outputs = {}
    for backend in ("tensorflow", "onnxruntime"):
        result = run(["infer", str(tmp_path / "c.fits"), "--model", str(tmp_path / "n2n"), "--backend", backend,
                      "-o", str(tmp_path / f"c_{backend}.fits"), "-q"])
        assert result.exit_code == 0, result.output
        outputs[backend] = fits.getdata(tmp_path / f"c_{backend}.fits")
    np.testing.assert_allclose(outputs["onnxruntime"], outputs["tensorflow"], atol=1e-3)
    tuned = run(["train", "neighbor2neighbor", str(tmp_path / "c.fits"), "--out", str(tmp_path / "ft"),
                 "--init", str(out), "--steps", "3", "--patch", "32", "-q"])
    assert tuned.exit_code == 0, tuned.output
    base = json.loads((out / "run.json").read_text())["recipe"]["model"]
    model = json.loads((tmp_path / "ft" / "run.json").read_text())["recipe"]["model"]
    assert {k: model[k] for k in ("offset", "scale", "depth", "base_filters")} == \
        {k: base[k] for k in ("offset", "scale", "depth", "base_filters")}


@pytest.mark.slow
def test_bfloat16_training_keeps_the_data_path_in_float32(trained_run, tmp_path):
    tmp, out = trained_run
    result = run(["train", "neighbor2neighbor", str(tmp / "a.fits"), "--out", str(tmp_path / "bf16"), "--init",
                  str(out), "--steps", "4", "--patch", "32", "--precision", "mixed_bfloat16", "-q"])
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "bf16" / "run.json").read_text())
    assert state["precision"] == "mixed_bfloat16" and state["recipe"]["train"]["precision"] == "mixed_bfloat16"
    from astrotf.backends import load_model

    model = load_model(tmp_path / "bf16")  # linear data: float32 at inference
    x = fits.getdata(tmp / "a.fits")[None, 8:40, 8:40, None].astype(np.float32)
    assert model.precision == "float32" and np.isfinite(model.predict(x)).all()
