"""Self2Self / TDR: model contract, eq. 3 loss on dropped pixels only, ensemble masks, restore
guarantee, seeded ensembles, and a tiny train -> denoise -> restore run on a synthetic field."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from astropy.io import fits
from click.testing import CliRunner

from astrotf.cli import main
from astrotf.losses import self2self_loss
from astrotf.metrics import noise_level
from astrotf.models.registry import build_model
from astrotf.models.self2self import Self2Self
from astrotf.train.self2self import sample_patches

TINY = dict(channels=1, depth=2, base_filters=4)


def synthetic_field(size=96, sigma=8.0, seed=0):
    """Magnetogram-like field in 'Gauss': bipolar Gaussian blobs of 100-800 G plus white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    clean = np.zeros((size, size))
    for _ in range(6):
        cx, cy = rng.uniform(10, size - 10, 2)
        width, amp = rng.uniform(3, 8), rng.choice([-1, 1]) * rng.uniform(100, 800)
        clean += amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
    return clean.astype(np.float32), (clean + rng.normal(0, sigma, clean.shape)).astype(np.float32)


# ----------------------------------------------------------------------------- model
@pytest.mark.parametrize("kwargs", [TINY, dict(TINY, space_to_depth=1), dict(TINY, channels=2, offset=5.0, scale=80.0)])
def test_model_contract(kwargs, tmp_path):
    model = build_model("self2self", **kwargs)
    rng = np.random.default_rng(0)
    c = kwargs["channels"]
    for shape in [(2, 32, 32), (1, 37, 53), (1, 5, 9)]:
        x = rng.normal(size=shape + (c,)).astype(np.float32)
        assert model([x, np.ones_like(x)]).shape == x.shape
    config = model.get_config()
    assert {k: config[k] for k in kwargs} == kwargs
    assert Self2Self.from_config(config).count_params() == model.count_params()
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    deterministic = [Self2Self(**{**kwargs, "dropout": 0.0}) for _ in range(2)]
    deterministic[1].set_weights(restored.get_weights())
    deterministic[0].set_weights(model.get_weights())
    x = rng.normal(size=(2, 24, 40, c)).astype(np.float32)
    m = (rng.random(x.shape) < 0.7).astype(np.float32)
    np.testing.assert_allclose(deterministic[0]([x, m]), deterministic[1]([x, m]), atol=1e-5)


def test_dropout_is_on_at_test_time():
    model = Self2Self(**TINY, dropout=0.3)
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 1)).astype(np.float32)
    assert not np.allclose(model([x, np.ones_like(x)]), model([x, np.ones_like(x)]))


def test_dropped_pixels_never_reach_the_network():
    """B·y: the value of a dropped pixel cannot influence any output (partial convolutions)."""
    model = Self2Self(**TINY, dropout=0.0)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 32, 32, 1)).astype(np.float32)
    m = (rng.random(x.shape) < 0.7).astype(np.float32)
    changed = np.where(m == 0, 1e4, x).astype(np.float32)
    np.testing.assert_allclose(model([x, m]), model([changed, m]), atol=1e-4)


def test_bad_model_arguments_are_named():
    with pytest.raises(ValueError, match="dropout=1.0"):
        Self2Self(dropout=1.0)
    with pytest.raises(ValueError, match="space_to_depth=3"):
        Self2Self(space_to_depth=3)


# ----------------------------------------------------------------------------- eq. 3
def test_loss_has_zero_gradient_on_kept_pixels():
    rng = np.random.default_rng(3)
    y = tf.constant(rng.normal(size=(2, 16, 16, 1)), tf.float32)
    keep = tf.constant((rng.random((2, 16, 16, 1)) < 0.7).astype(np.float32))
    pred = tf.Variable(rng.normal(size=(2, 16, 16, 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = self2self_loss(y, pred, keep)
    grad = tape.gradient(loss, pred).numpy()
    kept = keep.numpy() == 1
    assert np.all(grad[kept] == 0) and np.all(grad[~kept] != 0)
    # changing the target on kept pixels changes nothing
    y2 = tf.where(keep == 1, 1e3, y)
    np.testing.assert_allclose(self2self_loss(y2, pred, keep), loss, rtol=1e-6)
    # the value: mean squared error over the dropped pixels
    expected = np.mean((pred.numpy() - y.numpy())[~kept] ** 2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_loss_ignores_invalid_pixels():
    y = tf.zeros((1, 8, 8, 1))
    pred = tf.ones((1, 8, 8, 1))
    keep = tf.zeros((1, 8, 8, 1))
    valid = tf.concat([tf.ones((1, 4, 8, 1)), tf.zeros((1, 4, 8, 1))], axis=1)
    assert float(self2self_loss(y, tf.where(valid == 1, pred, 1e6), keep, valid)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- masks, patches


def test_patches_flip_and_avoid_invalid_regions():
    image = np.arange(64 * 64, dtype=np.float32).reshape(64, 64, 1)
    valid = np.ones_like(image)
    valid[:, :40] = 0  # only the right part is valid
    patches, v = sample_patches(image, valid, 16, 32, np.random.default_rng(0), min_valid=1.0)
    assert patches.shape == (32, 16, 16, 1) and v.min() == 1.0
    values = set(np.unique(image[:, 40:]))
    assert set(np.unique(patches)) <= values


# ----------------------------------------------------------------------------- end to end
def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny Self2Self run on one synthetic noisy field (sigma = 8 'G')."""
    tmp = tmp_path_factory.mktemp("s2s")
    _, noisy = synthetic_field(96, seed=0)
    fits.writeto(tmp / "a.fits", noisy)
    recipe = tmp / "tiny.toml"
    recipe.write_text("[model]\ndepth = 2\nbase_filters = 8\n[train]\ncheckpoint_every = 60\nlog_every = 20\n")
    out = tmp / "run"
    result = run(["train", "self2self", str(tmp / "a.fits"), "--out", str(out), "--config", str(recipe),
                  "--steps", "120", "--patch", "32", "--seed", "1", "-q"])
    assert result.exit_code == 0, result.output
    return tmp, out


@pytest.mark.slow
def test_train_then_denoise_another_field_lowers_the_noise_level(trained_run):
    tmp, out = trained_run
    state = json.loads((out / "run.json").read_text())
    assert state["step"] == 120 and state["status"] == "finished"
    assert state["recipe"]["model"]["scale"] > 0 and state["data"]["finite_fraction"] == 1.0
    assert (out / "model_best.keras").exists() and (out / "previews" / "step-000120.png").exists()
    clean, noisy = synthetic_field(96, seed=5)  # a different field of the same kind
    noisy[:8, :20] = np.nan
    fits.writeto(tmp / "b.fits", noisy)
    result = run(["infer", str(tmp / "b.fits"), "--model", str(out), "--samples", "8", "--report",
                  "--restore", "4", "-o", str(tmp / "b_d.fits"), "-q"])
    assert result.exit_code == 0, result.output
    assert "noise level" in result.output and "restore R=4" in result.output
    denoised = fits.getdata(tmp / "b_d.fits")
    assert np.isnan(denoised[:8, :20]).all() and np.isfinite(denoised[8:]).all()
    finite = np.isfinite(noisy)
    assert np.max(np.abs(denoised[finite] - noisy[finite])) <= 4.0
    hdr = fits.getheader(tmp / "b_d.fits")
    assert "samples=8" in str(hdr["HISTORY"])
    assert "soft restore" in str(hdr["HISTORY"])  # on by default for Self2Self
    # without any restore the network alone must lower the noise level measurably
    result = run(["infer", str(tmp / "b.fits"), "--model", str(out), "--samples", "8", "--no-soft-restore",
                  "-o", str(tmp / "b_raw.fits"), "-q"])
    raw = fits.getdata(tmp / "b_raw.fits")
    assert "soft restore" not in str(fits.getheader(tmp / "b_raw.fits")["HISTORY"])
    sigma_in = noise_level(noisy - clean).sigma
    assert noise_level(raw - clean).sigma < 0.6 * sigma_in
    # the default soft restore keeps most of that and lies between the network's output and the input
    result = run(["infer", str(tmp / "b.fits"), "--model", str(out), "--samples", "8",
                  "-o", str(tmp / "b_soft.fits"), "-q"])
    soft = fits.getdata(tmp / "b_soft.fits")
    assert noise_level(soft - clean).sigma < 0.7 * sigma_in
    ok = finite & (soft >= np.minimum(raw, noisy)) & (soft <= np.maximum(raw, noisy))
    assert ok.sum() == finite.sum() and not np.array_equal(soft[finite], raw[finite])


@pytest.mark.slow
def test_seeded_ensemble_is_reproducible(trained_run):
    from astrotf.backends import load_model
    from astrotf.ensemble import with_ensemble
    from astrotf.infer import TileOptions, denoise_tiled

    _, out = trained_run
    _, noisy = synthetic_field(80, seed=7)
    image = noisy[..., None]
    options = TileOptions(tile=64, overlap=0.25, batch_size=4)
    model = load_model(out)
    a = denoise_tiled(image, with_ensemble(model, 3, seed=11).predict, options)
    b = denoise_tiled(image, with_ensemble(load_model(out), 3, seed=11).predict, options)
    c = denoise_tiled(image, with_ensemble(model, 3, seed=12).predict, options)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.slow
def test_resume_export_and_saved_model_ensemble(trained_run, tmp_path):
    tmp, out = trained_run
    resumed = run(["train", "self2self", "--out", str(out), "--resume", "--steps", "140", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "run.json").read_text())["step"] == 140
    onnx = run(["export", str(out), "--out", str(tmp_path / "s2s-onnx"), "--format", "onnx"])
    assert onnx.exit_code != 0 and "exported as SavedModel and .keras only" in onnx.output
    assert "Traceback" not in onnx.output and not (tmp_path / "s2s-onnx").exists()
    exported = run(["export", str(out), "--out", str(tmp_path / "s2s")])
    assert exported.exit_code == 0, exported.output
    meta = json.loads((tmp_path / "s2s" / "metadata.json").read_text())
    assert meta["normalization"]["kind"] == "fixed" and meta["ensemble"]["keep_prob"] == 0.7
    assert meta["training"]["steps"] == 140 and meta["training"]["data"]["name"] == "a.fits"
    served = tf.saved_model.load(str(tmp_path / "s2s" / "1")).signatures["serving_default"]
    for shape in [(1, 32, 32, 1), (3, 37, 21, 1)]:
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        assert served(image=x, mask=np.ones_like(x))["denoised"].shape == shape
    from astrotf.backends import load_model
    from astrotf.ensemble import with_ensemble
    from astrotf.infer import TileOptions, denoise_tiled

    image = synthetic_field(48, seed=3)[1][..., None]
    options = TileOptions(tile=32, overlap=0.25, batch_size=4)
    saved = load_model(tmp_path / "s2s")  # the SavedModel: its dropout draws are reseeded too
    a, b, c = (denoise_tiled(image, with_ensemble(saved, 2, seed=s).predict, options) for s in (4, 4, 5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    clean, noisy = synthetic_field(96, seed=5)
    fits.writeto(tmp_path / "b.fits", noisy)
    result = run(["infer", str(tmp_path / "b.fits"), "--model", str(tmp_path / "s2s"), "--samples", "4",
                  "--restore-sigma", "0.6", "--report", "-q"])
    assert result.exit_code == 0, result.output
    assert "restore R=" in result.output and "max |out - in|" in result.output


@pytest.mark.slow
def test_init_fine_tunes_from_a_base_model_and_keeps_its_normalisation(trained_run, tmp_path):
    tmp, out = trained_run
    _, other = synthetic_field(64, sigma=20.0, seed=9)  # different noise: the base's scale must still be used
    fits.writeto(tmp_path / "c.fits", other)
    result = run(["train", "self2self", str(tmp_path / "c.fits"), "--out", str(tmp_path / "ft"), "--init", str(out),
                  "--steps", "5", "--patch", "32", "-q"])
    assert result.exit_code == 0, result.output
    base = json.loads((out / "run.json").read_text())["recipe"]["model"]
    tuned = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert tuned["init"] == str(out)
    assert {k: tuned["recipe"]["model"][k] for k in ("offset", "scale", "depth", "base_filters")} == \
        {k: base[k] for k in ("offset", "scale", "depth", "base_filters")}


def test_shipped_self2self_hmi_metadata():
    from astrotf.backends import shipped_model_dirs

    folder = next((d / "self2self-hmi" for d in shipped_model_dirs() if (d / "self2self-hmi").is_dir()), None)
    if folder is None:
        pytest.skip("saved_models/self2self-hmi not present")
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["data_domain"] == "linear" and meta["channels"] == 1
    assert meta["training"]["steps"] > 0 and meta["training"]["wall_time_s"] > 0
    assert meta["training"]["data"]["bunit"] == "Gauss" and "sample_1" in meta["training"]["data"]["name"]
    assert meta["normalization"]["kind"] == "fixed" and meta["ensemble"]["keep_prob"] > 0
    assert (folder / "1" / "saved_model.pb").is_file() and (folder / "model.keras").is_file()


def test_magnetograms_are_recognised_from_the_fits_header():
    from astrotf.backends import DEFAULT_MODELS
    from astrotf.infer import guess_domain
    from astrotf.io import ImageInfo

    def domain(**cards):
        info = ImageInfo(path=None, format="fits", dtype=np.float32, channels=1, layout="HW", scale=1.0,
                         header=fits.Header(cards))
        return guess_domain(np.zeros((8, 8, 1), np.float32), info)

    assert domain(TELESCOP="SDO/HMI", CONTENT="MAGNETOGRAM") == "magnetogram"
    assert domain(BUNIT="Gauss") == "magnetogram"
    assert DEFAULT_MODELS["magnetogram"] == "self2self-hmi"
    assert domain(TELESCOP="SDO/HMI", CONTENT="DOPPLERGRAM", BUNIT="m/s") == "linear"
    assert domain(OBJECT="M31", BUNIT="electron") == "linear"


