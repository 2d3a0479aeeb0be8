"""Self2Self / TDR: model contract, eq. 3 loss on dropped pixels only, ensemble masks, restore
guarantee, seeded ensembles, and a tiny train -> denoise -> restore run on a synthetic field."""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from astropy.io import fits
from click.testing import CliRunner

from astrotf.cli import main
from astrotf.ensemble import ensemble_predictor
from astrotf.losses import self2self_loss
from astrotf.metrics import noise_level
from astrotf.models.registry import build_model
from astrotf.models.self2self import Self2Self
from astrotf.restore import restore, restore_threshold, soft_restore
from astrotf.train_self2self import sample_patches

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


def test_patches_flip_and_avoid_invalid_regions():
    image = np.arange(64 * 64, dtype=np.float32).reshape(64, 64, 1)
    valid = np.ones_like(image)
    valid[:, :40] = 0  # only the right part is valid
    patches, v = sample_patches(image, valid, 16, 32, np.random.default_rng(0), min_valid=1.0)
    assert patches.shape == (32, 16, 16, 1) and v.min() == 1.0
    values = set(np.unique(image[:, 40:]))
    assert set(np.unique(patches)) <= values


# ----------------------------------------------------------------------------- restore
@pytest.mark.parametrize("seed", range(5))
def test_restore_guarantee_holds_for_every_pixel(seed):
    """Property: max |out - in| <= R, whatever the denoiser did (NaN, huge errors, float16)."""
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 40, 2)) + (int(rng.integers(1, 4)),)
    original = (rng.normal(size=shape) * 10 ** rng.uniform(-3, 4)).astype(np.float32)
    denoised = original + rng.standard_cauchy(shape).astype(np.float32) * rng.uniform(0, 5)
    denoised[rng.random(shape) < 0.05] = np.nan
    original[rng.random(shape) < 0.05] = np.nan
    r = float(rng.uniform(0, 3))
    for dtype in (np.float32, np.float16):
        for mode in ("input", "clip"):
            result = restore(denoised.astype(dtype), original, r, mode)
            finite = np.isfinite(original)
            assert np.all(np.abs(result.image[finite].astype(np.float64) - original[finite]) <= r)
            assert result.fraction == pytest.approx(result.restored.sum() / finite.sum())
            untouched = finite & ~result.restored
            np.testing.assert_array_equal(result.image[untouched], denoised.astype(dtype)[untouched])
            # off-input pixels are returned as the denoiser gave them
            np.testing.assert_array_equal(result.image[~finite], denoised.astype(dtype)[~finite])


@pytest.mark.parametrize("seed", range(3))
def test_restore_clip_keeps_the_allowed_change(seed):
    """Property of mode="clip": an abnormal pixel lands at input ± R, on its denoised value's side."""
    rng = np.random.default_rng(seed)
    original = rng.normal(0, 5, (30, 40)).astype(np.float64)
    denoised = original + rng.normal(0, 4, original.shape)
    r = float(rng.uniform(0.5, 4))
    clipped = restore(denoised, original, r, "clip")
    hard = restore(denoised, original, r)
    np.testing.assert_array_equal(clipped.restored, hard.restored)  # the same abnormal pixels
    moved = clipped.restored
    assert moved.any() and (~moved).any()
    np.testing.assert_allclose(clipped.image[moved], original[moved] + r * np.sign(denoised - original)[moved],
                               rtol=0, atol=1e-12)
    # each pixel is at least as close to the denoised value as the hard restore puts it
    assert np.all(np.abs(clipped.image - denoised) <= np.abs(hard.image - denoised) + 1e-12)
    with pytest.raises(ValueError, match="mode='wrong'"):
        restore(denoised, original, r, "wrong")


def test_restore_edge_cases_and_threshold():
    x = np.array([0.0, 1.0, 2.0, np.nan], np.float32)
    d = np.array([0.5, 3.0, 2.0, 7.0], np.float32)
    result = restore(d, x, 1.0)
    np.testing.assert_array_equal(result.image[:3], [0.5, 1.0, 2.0])
    assert result.image[3] == 7.0 and result.fraction == pytest.approx(1 / 3)
    np.testing.assert_array_equal(restore(d, x, 0.0).image[:3], x[:3])  # R = 0: the input
    np.testing.assert_array_equal(restore(d, x, 1.0, "clip").image, [0.5, 2.0, 2.0, 7.0])
    np.testing.assert_array_equal(restore(d, x, 0.0, "clip").image[:3], x[:3])
    nan_out = restore(np.array([np.nan, 5.0], np.float32), np.array([1.0, 0.0], np.float32), 1.0, "clip")
    np.testing.assert_array_equal(nan_out.image, [1.0, 1.0])  # a NaN output goes back to the input
    with pytest.raises(ValueError, match="threshold=-1"):
        restore(d, x, -1)
    noise = np.random.default_rng(0).normal(0, 8, (200, 200))
    assert restore_threshold(noise, sigmas=0.5) == pytest.approx(4.0, rel=0.05)
    with pytest.raises(ValueError, match="exactly one"):
        restore_threshold(noise)


@pytest.mark.parametrize("seed", range(3))
def test_soft_restore_lies_between_denoised_and_input(seed):
    """Property: every pixel ends between its denoised and input values; NaN stays as denoised."""
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(2, 40, 2)) + ((int(rng.integers(1, 4)),) if seed else ())
    original = (rng.normal(size=shape) * 10 ** rng.uniform(-2, 3)).astype(np.float32)
    denoised = original + rng.standard_cauchy(shape).astype(np.float32) * np.float32(rng.uniform(0, 5))
    denoised[rng.random(shape) < 0.05] = np.nan
    original[rng.random(shape) < 0.05] = np.nan
    result = soft_restore(denoised, original, noise_sigma=float(rng.uniform(0.1, 3)), width=float(rng.uniform(0.5, 3)))
    valid = np.isfinite(original) & np.isfinite(denoised)
    low, high = np.minimum(denoised, original), np.maximum(denoised, original)
    assert np.all((result.image[valid] >= low[valid]) & (result.image[valid] <= high[valid]))
    np.testing.assert_array_equal(np.isnan(result.image), np.isnan(denoised))
    assert result.image.dtype == np.float32 and 0.0 <= result.mean_gain <= 1.0
    strips = soft_restore(denoised, original, result.noise_sigma, result.width, rows=3)  # strips, same result
    np.testing.assert_array_equal(strips.image, result.image)
    np.testing.assert_array_equal(strips.gain, result.gain)


def test_soft_restore_gives_back_cut_structure_and_keeps_noise_removed():
    """A denoiser that removed the noise and also three sharp peaks (50 sigma): the peaks come
    back to within about 2 sigma while the background keeps less than a third of the noise."""
    rng = np.random.default_rng(0)
    sigma = 2.0
    yy, xx = np.mgrid[:128, :128]
    truth = sum(100.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
                for cy, cx in [(30, 30), (64, 90), (100, 40)])
    noisy = (truth + rng.normal(0, sigma, truth.shape)).astype(np.float32)
    flat = np.zeros_like(noisy)
    result = soft_restore(flat, noisy, noise_sigma=sigma)
    background, core = truth < 0.01 * sigma, truth > 10 * sigma
    assert result.image[background].std() < 0.35 * sigma
    assert np.abs(result.image - truth)[core].max() < 3 * sigma  # the denoiser was 50 sigma off
    assert (noisy[core] * result.image[core]).sum() / (noisy[core] ** 2).sum() > 0.99
    # a denoiser that left the data alone is left alone
    np.testing.assert_array_equal(soft_restore(noisy, noisy, sigma).image, noisy)
    for bad in ({"noise_sigma": 0.0}, {"noise_sigma": sigma, "width": -1.0}):
        with pytest.raises(ValueError, match="must be a finite number > 0"):
            soft_restore(flat, noisy, **bad)
    with pytest.raises(ValueError, match="same"):
        soft_restore(flat[:5], noisy, sigma)


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


def test_samples_on_a_deterministic_model_is_an_error(tmp_path):
    model = build_model("resunet", channels=1, depth=1, base_filters=2)
    model.save(tmp_path / "r.keras")
    fits.writeto(tmp_path / "x.fits", np.zeros((32, 32), np.float32))
    result = CliRunner().invoke(main, ["infer", str(tmp_path / "x.fits"), "--model", str(tmp_path / "r.keras"),
                                       "--samples", "4", "-q"])
    assert result.exit_code == 2 and "--samples needs a Self2Self model" in result.output


def test_restore_options_are_exclusive(tmp_path):
    result = CliRunner().invoke(main, ["infer", "x.fits", "--restore", "1", "--restore-sigma", "1"])
    assert result.exit_code == 2 and "either --restore or --restore-sigma" in result.output


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


def test_block_masks_drop_whole_blocks_with_keep_probability():
    from astrotf.ensemble import block_keep_mask

    mask = block_keep_mask(np.random.default_rng(0), (4, 63, 65, 1), 0.7, block=2)
    assert mask.shape == (4, 63, 65, 1) and mask.mean() == pytest.approx(0.7, abs=0.02)
    blocks = mask[:, :62, :64, 0].reshape(4, 31, 2, 32, 2)
    assert np.all(blocks.min(axis=(2, 4)) == blocks.max(axis=(2, 4)))


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

def test_restore_works_with_any_model_from_the_cli(tmp_path):
    """TDR restore on a (deterministic) ResUNet output: max |out - in| <= R, fraction and noise reported."""
    keras.utils.set_random_seed(0)
    model = build_model("resunet", channels=1, depth=1, base_filters=2, normalization="background",
                        head_initializer="glorot_uniform")
    model.save(tmp_path / "r.keras")
    noisy = np.random.default_rng(0).normal(0, 8, (48, 48)).astype(np.float32)
    fits.writeto(tmp_path / "x.fits", noisy)
    result = CliRunner().invoke(main, ["infer", str(tmp_path / "x.fits"), "--model", str(tmp_path / "r.keras"),
                                       "--restore", "0.5", "--report", "--tile", "32", "-q"])
    assert result.exit_code == 0, result.output
    assert "restore R=0.5" in result.output and "noise level" in result.output
    assert "output vs input: " in result.output and "residual structure above 10 px" in result.output
    out = fits.getdata(tmp_path / "x_denoised.fits")
    assert np.max(np.abs(out.astype(np.float64) - noisy)) <= 0.5
    # --restore-mode clip: the same bound, abnormal pixels at input ± R instead of the input
    result = CliRunner().invoke(main, ["infer", str(tmp_path / "x.fits"), "--model", str(tmp_path / "r.keras"),
                                       "--restore", "0.5", "--restore-mode", "clip", "--tile", "32", "-q",
                                       "-o", str(tmp_path / "x_clip.fits")])
    assert result.exit_code == 0, result.output
    assert "mode clip" in result.output and "moved to within R" in result.output
    clip = fits.getdata(tmp_path / "x_clip.fits").astype(np.float64)
    change = np.abs(clip - noisy)
    set_back = out == noisy
    assert change.max() <= 0.5 and set_back.mean() > 0.1
    np.testing.assert_allclose(change[set_back], 0.5, atol=1e-5)
    assert "mode clip" in str(fits.getheader(tmp_path / "x_clip.fits")["HISTORY"])
    alone = CliRunner().invoke(main, ["infer", str(tmp_path / "x.fits"), "--model", str(tmp_path / "r.keras"),
                                      "--restore-mode", "clip", "-q", "-o", str(tmp_path / "y.fits")])
    assert alone.exit_code != 0 and "--restore-mode clip needs --restore" in alone.output
    assert not (tmp_path / "y.fits").exists()


def test_clip_restore_into_an_integer_fits_stays_on_the_inputs_side_of_r(tmp_path):
    """int16 BSCALE 0.25 output, R = 0.45: input ± R is off the grid; rounding would reach 0.5 > R and
    set the pixel back to its input. It goes to the grid value on the input's side (|change| 0.25)."""
    from astrotf.backends import load_model
    from astrotf.infer import denoise_image

    keras.utils.set_random_seed(0)
    model = build_model("resunet", channels=1, depth=1, base_filters=2, normalization="background",
                        head_initializer="glorot_uniform")
    model.save(tmp_path / "r.keras")
    raw = np.rint(np.random.default_rng(3).normal(0, 32, (48, 48))).astype(np.int16)  # 8 in data units
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.25, 0.0
    hdu.writeto(tmp_path / "q.fits")
    data = fits.getdata(tmp_path / "q.fits").astype(np.float64)  # scaled: 0.25 * raw
    result = CliRunner().invoke(main, ["infer", str(tmp_path / "q.fits"), "--model", str(tmp_path / "r.keras"),
                                       "--restore", "0.45", "--restore-mode", "clip", "--tile", "32", "-q"])
    assert result.exit_code == 0, result.output
    out = fits.getdata(tmp_path / "q_denoised.fits").astype(np.float64)
    assert fits.getheader(tmp_path / "q_denoised.fits")["BITPIX"] == 16
    change = np.abs(out - data)
    assert change.max() <= 0.45
    loaded = load_model(tmp_path / "r.keras")
    denoised = denoise_image(data.astype(np.float32)[..., None], loaded,
                             loaded.tile_options((48, 48, 1), 0.25, 32))[..., 0]
    abnormal = np.abs(denoised - data) > 0.46
    assert abnormal.mean() > 0.2
    np.testing.assert_allclose(change[abnormal], 0.25)


@pytest.mark.parametrize("mode", ["input", "clip"])
def test_restore_guarantee_holds_in_the_written_8bit_png(tmp_path, mode):
    """R = 2.6 DN is off the 8-bit grid: rounding a change of 2.55 DN would give 3 DN > R. The file
    written keeps max |out - in| <= R; a JPEG output or a change of format is refused."""
    import cv2

    blur = keras.Sequential([keras.Input((None, None, 3)), keras.layers.AveragePooling2D(5, 1, padding="same")])
    blur.save(tmp_path / "blur.keras")
    pixels = np.clip(np.random.default_rng(7).normal(60, 12, (48, 48, 3)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), pixels)
    r = 2.6 / 255
    common = ["infer", str(tmp_path / "x.png"), "--model", str(tmp_path / "blur.keras"), "--tile", "32",
              "--restore", str(r), "--restore-mode", mode, "-q"]
    result = CliRunner().invoke(main, [*common, "-o", str(tmp_path / "y.png")])
    assert result.exit_code == 0, result.output
    written = cv2.imread(str(tmp_path / "y.png"), cv2.IMREAD_UNCHANGED).astype(np.int64)
    change = np.abs(written - pixels.astype(np.int64))
    assert change.max() <= 2 and (change == 2).mean() > 0.05  # within R, and the allowed change used
    for target, message in (("y.jpg", "JPEG is lossy"), ("y.fits", "in the input's format (png)")):
        refused = CliRunner().invoke(main, [*common, "-o", str(tmp_path / target)])
        assert refused.exit_code != 0 and message in refused.output and not (tmp_path / target).exists()


def test_soft_restore_from_the_cli_gives_back_a_cut_peak(tmp_path):
    """--soft-restore after a model that smooths: the noise stays lowered, a sharp 400 G spot the
    model flattened comes back, each pixel lies between the plain output and the input, and the
    options are named in the HISTORY."""
    keras.utils.set_random_seed(0)
    blur = keras.Sequential([keras.Input((None, None, 1)), keras.layers.AveragePooling2D(5, 1, padding="same")])
    blur.save(tmp_path / "blur.keras")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64]
    spot = 400.0 * np.exp(-((yy - 30) ** 2 + (xx - 34) ** 2) / (2 * 1.2**2))
    noisy = (spot + rng.normal(0, 8, spot.shape)).astype(np.float32)
    fits.writeto(tmp_path / "m.fits", noisy)
    common = ["infer", str(tmp_path / "m.fits"), "--model", str(tmp_path / "blur.keras"), "--tile", "32",
              "--noise-range", "-20", "20", "-q"]
    plain = CliRunner().invoke(main, [*common, "-o", str(tmp_path / "plain.fits")])
    soft = CliRunner().invoke(main, [*common, "-o", str(tmp_path / "soft.fits"), "--soft-restore", "--report"])
    assert plain.exit_code == 0 and soft.exit_code == 0, plain.output + soft.output
    assert "soft restore (noise level" in soft.output and "after soft restore" in soft.output
    denoised, restored = fits.getdata(tmp_path / "plain.fits"), fits.getdata(tmp_path / "soft.fits")
    assert np.all((restored >= np.minimum(denoised, noisy)) & (restored <= np.maximum(denoised, noisy)))
    assert abs(restored[30, 34] - noisy[30, 34]) < 16 < abs(denoised[30, 34] - noisy[30, 34])
    assert noise_level(restored, (-20, 20)).sigma < 0.6 * noise_level(noisy, (-20, 20)).sigma
    assert any("soft restore" in card for card in fits.getheader(tmp_path / "soft.fits")["HISTORY"])
    # --report prints the slope over the strong pixels (the spot's core): flattened, then given back
    plain = CliRunner().invoke(main, [*common, "-o", str(tmp_path / "plain2.fits"), "--report"])
    slope = {name: float(re.search(r"slope ([0-9.]+) over \d+ strong pixels", run.output).group(1))
             for name, run in (("plain", plain), ("soft", soft))}
    assert slope["plain"] < 0.5 and slope["soft"] > 0.95, slope
