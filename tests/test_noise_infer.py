"""Noise-conditioned models end to end: σ-map tiling, the noise model of a frame and its checks, the
`astrotf infer` options, the Python API, and the SavedModel / ONNX / TF Serving paths with two inputs."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from astropy.io import fits
from click.testing import CliRunner

import astrotf
from astrotf.backends import LoadedModel, load_model
from astrotf.cli import main
from astrotf.errors import AstroTFError
from astrotf.infer import TileOptions, adapt_channels, denoise_image, denoise_tiled
from astrotf.models.resunet import ResUNet
from astrotf.noise_map import NoiseOptions, check_against_frame, frame_noise
from astrotf.noise_model import NoiseModel
from astrotf.restore import RestoreOptions, restore_and_report
from astrotf.sky_level import keep_sky_level

GAIN, READ_NOISE = 2.0, 5.0  # e-/ADU, e-


def ccd_frame(seed=0, shape=(96, 112), gain=GAIN, read_noise=READ_NOISE, sky=400.0, pedestal=0.0, ramp=0.0):
    """A linear frame in ADU: sky (+ a ramp along x, e-) and a few stars, Poisson + read noise, + a pedestal."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    electrons = sky + ramp * xx / shape[1]
    for cy, cx in rng.uniform(8, min(shape) - 8, (4, 2)):
        electrons = electrons + 3000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
    counts = rng.poisson(electrons) + rng.normal(0.0, read_noise, shape)
    return (counts / gain + pedestal).astype(np.float32)


def write_fits(path, data, **cards):
    fits.PrimaryHDU(data, fits.Header({"OBJECT": "test field", **cards})).writeto(path)
    return path


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory):
    """A tiny random noise-conditioned ResUNet (linear, background normalisation) as a .keras file."""
    keras.utils.set_random_seed(0)
    tmp = tmp_path_factory.mktemp("conditioned")
    model = ResUNet(channels=1, depth=2, base_filters=4, normalization="background", noise_map=True,
                    head_initializer="glorot_uniform")
    model.save(tmp / "nm.keras")
    return tmp / "nm.keras", model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The same kind of model exported from a run: SavedModel, model.keras, model.onnx, metadata.json."""
    pytest.importorskip("tf2onnx")
    from astrotf.export import export_run
    from tests.test_export import fake_run

    keras.utils.set_random_seed(1)
    tmp = tmp_path_factory.mktemp("exported")
    run, model = fake_run(tmp, channels=1, normalization="background", noise_map=True)
    return export_run(run, tmp / "models" / "nm", formats=("savedmodel", "onnx")), model


def invoke(*args):
    return CliRunner().invoke(main, ["infer", "-q", "--tile", "32", *map(str, args)])


# ----------------------------------------------------------------------------- tiling
def test_sigma_tiles_are_cut_padded_and_filled_exactly_like_the_image():
    """σ = 0.5 x + 1 pixel by pixel: every σ tile the network gets must be that of its image tile,
    in the reflected border and where NaN pixels were filled too (median of σ = σ of the median)."""
    image = np.random.default_rng(0).normal(100.0, 10.0, (70, 90, 1)).astype(np.float32)
    image[10:20, 5:30] = np.nan
    image[:, 80:] = np.nan
    sigma = 0.5 * image + 1.0
    pairs = []

    def spy(batch, sigma_batch):
        pairs.append((batch.copy(), sigma_batch.copy()))
        return batch + sigma_batch

    out = denoise_tiled(image, spy, TileOptions(tile=32, overlap=0.5, batch_size=3), noise_sigma=sigma)
    assert len(pairs) > 3
    for batch, sigma_batch in pairs:
        assert np.isfinite(sigma_batch).all()
        np.testing.assert_allclose(sigma_batch, 0.5 * batch + 1.0, rtol=1e-6)
    finite = np.isfinite(image)
    np.testing.assert_array_equal(np.isnan(out), ~finite)
    np.testing.assert_allclose(out[finite], 1.5 * image[finite] + 1.0, rtol=1e-5)


def test_a_mono_model_gets_each_channel_with_its_own_sigma():
    rgb = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
    sigma = np.random.default_rng(2).random((2, 8, 8, 3), dtype=np.float32)
    per_channel = adapt_channels(lambda b, s: b - s, 1, 3)
    np.testing.assert_allclose(per_channel(rgb, sigma), rgb - sigma)


def test_a_sigma_map_goes_only_to_a_model_that_takes_one_and_must_match_the_frame():
    frame = np.ones((40, 40, 1), np.float32)
    plain = LoadedModel("plain", lambda b: b, {"channels": 1})
    conditioned = LoadedModel("cond", lambda b, s: b, {"channels": 1, "noise_map": True})
    with pytest.raises(AstroTFError, match="model cond is noise-conditioned: it needs"):
        denoise_image(frame, conditioned, TileOptions(32))
    with pytest.raises(AstroTFError, match="model plain is not noise-conditioned"):
        denoise_image(frame, plain, TileOptions(32), noise_sigma=frame)
    with pytest.raises(AstroTFError, match=r"`noise_sigma` must have the image's shape \(40, 40, 1\)"):
        denoise_image(frame, conditioned, TileOptions(32), noise_sigma=frame[:30])


def test_tiled_noise_conditioned_unet_matches_the_whole_frame_and_sees_a_shifted_sigma_map():
    """Without tile normalisation the network is translation-equivariant on its pooling grid (tile
    starts at multiples of 4 here): tiled ≈ whole frame; a σ map 3 px off is visibly worse."""
    keras.utils.set_random_seed(0)
    model = ResUNet(channels=1, depth=2, base_filters=4, noise_map=True, head_initializer="glorot_uniform")
    data = ccd_frame(shape=(96, 128))[..., None] / 100.0
    sigma = NoiseModel(GAIN, READ_NOISE).sigma_map(data * 100.0) / 100.0
    whole = np.asarray(model([data[None], sigma[None]]))[0]
    options = TileOptions(tile=64, overlap=0.5, batch_size=4, border=0)  # starts 0, 32, 64

    def predict(batch, sigma_batch):
        return np.asarray(model([batch, sigma_batch]))

    scale = (whole - data).std()
    error = np.abs(denoise_tiled(data, predict, options, noise_sigma=sigma) - whole)
    shifted = np.abs(denoise_tiled(data, predict, options, noise_sigma=np.roll(sigma, 3, axis=1)) - whole)
    assert error.mean() < 0.01 * scale and np.median(error) < 0.002 * scale
    assert shifted.mean() > 2 * error.mean()


def test_a_frame_in_one_tile_gives_the_keras_output_of_the_loaded_model(conditioned):
    path, model = conditioned
    loaded = load_model(path)
    assert loaded.noise_conditioned and loaded.channels == 1 and loaded.domain == "linear"
    data = ccd_frame(shape=(64, 64))[..., None]
    sigma = NoiseModel(GAIN, READ_NOISE).sigma_map(data)
    whole = np.asarray(model([data[None], sigma[None]]))[0]
    out = denoise_image(data, loaded, TileOptions(tile=64, border=0), noise_sigma=sigma)
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-3)


def test_the_sigma_map_reaches_the_network(conditioned):
    path, _ = conditioned
    loaded = load_model(path)
    data = ccd_frame()[..., None]
    sigma = NoiseModel(GAIN, READ_NOISE).sigma_map(data)
    options = TileOptions(tile=32)
    a = denoise_image(data, loaded, options, noise_sigma=sigma)
    b = denoise_image(data, loaded, options, noise_sigma=3 * sigma)
    assert np.abs(a - b).mean() > 0.01 * np.abs(a - data).mean()


# ----------------------------------------------------------------------------- the noise model of a frame
def test_the_header_gives_the_sigma_map_and_the_history():
    data = ccd_frame()[..., None]
    data[:4, :4] = np.nan
    found = frame_noise(data, fits.Header({"GAIN": GAIN, "RDNOISE": READ_NOISE}))
    expected = NoiseModel(GAIN, READ_NOISE).sigma_map(data)
    np.testing.assert_array_equal(found.sigma, expected)
    assert np.isnan(found.sigma[:4, :4]).all() and np.isfinite(found.sigma[4:, 4:]).all()
    assert "noise model: gain 2 e-/ADU (header GAIN)" in found.history
    assert "noise model: read noise 5 e- (header RDNOISE)" in found.history
    assert all(len(card) <= 72 for card in found.history)


@pytest.mark.parametrize("options,gain,read_noise", [
    (NoiseOptions(gain=4.0, read_noise=3.0), 4.0, 3.0),  # both given: the header is not read
    (NoiseOptions(gain=2.5), 2.5, READ_NOISE),  # the gain given, the read noise from the header
])
def test_overrides_change_the_sigma_map_exactly_as_the_formula_says(options, gain, read_noise):
    data = ccd_frame()[..., None]
    found = frame_noise(data, {"GAIN": 1.0, "RDNOISE": READ_NOISE}, options)
    x = data.astype(np.float64)
    expected = np.sqrt(np.maximum(x, 0.0) / gain + (read_noise / gain) ** 2).astype(np.float32)
    np.testing.assert_allclose(found.sigma, expected, rtol=1e-6)
    assert found.models[0].gain_from == "--gain"


@pytest.mark.parametrize("kwargs,flag", [({"gain": -1.0}, "--gain"), ({"gain": 0.0}, "--gain"),
                                         ({"read_noise": float("nan")}, "--read-noise")])
def test_a_negative_zero_or_nan_override_is_a_one_line_error(kwargs, flag):
    with pytest.raises(AstroTFError, match=rf"^{flag} must be a finite number > 0 \(.*\)\. Received: ") as caught:
        NoiseOptions(**kwargs)
    assert "\n" not in str(caught.value)


def test_a_frame_without_background_to_fit_is_refused_and_a_header_needs_no_fit():
    small = ccd_frame(shape=(20, 20))[..., None]
    with pytest.raises(AstroTFError, match="too few background pixels to fit a noise model"):
        frame_noise(small)
    found = frame_noise(small, {"GAIN": GAIN, "RDNOISE": READ_NOISE})  # nothing to fit, nothing to check
    assert "not checked against the frame" in found.lines[0]


@pytest.mark.parametrize("frame,header,reason", [
    (ccd_frame(gain=8.0), {"GAIN": GAIN, "RDNOISE": READ_NOISE}, "background noise is 0.4"),  # a wrong GAIN
    (ccd_frame() - 200.0, {"GAIN": GAIN, "RDNOISE": READ_NOISE}, "background noise is 4.0"),  # sky subtracted
    (ccd_frame(shape=(128, 128), ramp=3000.0, pedestal=500.0), None, "assumed a pedestal of 49"),  # a guess
])
def test_a_noise_model_the_frame_contradicts_is_refused_unless_trusted(frame, header, reason):
    data = frame[..., None]
    with pytest.raises(AstroTFError, match=rf"^noise model not trusted \(.*\): .*{reason}.*--trust-noise-model"):
        frame_noise(data, header)
    found = frame_noise(data, header, NoiseOptions(trust=True))
    assert any(reason in line for line in found.lines) and found.lines[0].startswith("Warning: ")
    assert any("used (--trust-noise-model) although" in card for card in found.history)


def test_gain_and_read_noise_given_by_the_user_are_used_with_a_warning_not_refused():
    data = ccd_frame(gain=8.0)[..., None]
    found = frame_noise(data, None, NoiseOptions(gain=GAIN, read_noise=READ_NOISE))
    assert any("(--gain and --read-noise given) although" in card for card in found.history)
    np.testing.assert_array_equal(found.sigma, NoiseModel(GAIN, READ_NOISE).sigma_map(data))


def test_each_channel_of_a_colour_frame_gets_its_own_noise_model_and_history():
    data = np.stack([ccd_frame(c, (128, 128), gain=g, ramp=3000.0) for c, g in enumerate((1.0, 2.0, 4.0))], axis=-1)
    found = frame_noise(data, None, NoiseOptions(read_noise=READ_NOISE))  # each gain fitted
    assert [m.gain for m in found.models] == pytest.approx([1.0, 2.0, 4.0], rel=0.1)
    for c in range(3):
        np.testing.assert_array_equal(found.sigma[..., c], found.models[c].sigma_map(data[..., c]))
        assert f"ch{c} noise model: read noise 5 e- (--read-noise)" in found.history
        assert found.lines[c].startswith(f"channel {c}: noise model: gain ")
    data[:, :, 1] = data[:, :, 1].mean()  # no noise left to fit in the green channel
    with pytest.raises(AstroTFError, match="^channel 1: too few background pixels"):
        frame_noise(data, None, NoiseOptions(read_noise=READ_NOISE))


def test_the_check_agrees_with_a_right_model_and_not_with_a_wrong_one():
    plane = ccd_frame(shape=(128, 128))
    right = check_against_frame(NoiseModel(GAIN, READ_NOISE), plane)
    wrong = check_against_frame(NoiseModel(GAIN / 2, READ_NOISE), plane)
    assert abs(right.sigma_ratio - 1) < 0.05 and right.agreeing > 0.85
    assert abs(wrong.sigma_ratio - np.sqrt(0.5)) < 0.05


# ----------------------------------------------------------------------------- astrotf infer
def test_cli_writes_the_output_and_the_noise_map_with_the_noise_model_in_both_histories(tmp_path, conditioned):
    path, _ = conditioned
    data = ccd_frame()
    data[:5, :5] = np.nan
    src = write_fits(tmp_path / "ngc.fits", data, GAIN=GAIN, RDNOISE=READ_NOISE, EXPTIME=60.0, BUNIT="ADU")
    result = invoke(src, "--model", path, "--out-dir", tmp_path / "out", "--write-noise-map")
    assert result.exit_code == 0, result.output
    assert "noise model: gain 2 e-/ADU (header GAIN), read noise 5 e- (header RDNOISE)" in result.output
    with fits.open(tmp_path / "out" / "ngc_denoised.fits") as hdul:
        header, out = hdul[0].header, hdul[0].data
    with fits.open(tmp_path / "out" / "ngc_noise.fits") as hdul:
        noise_header, sigma = hdul[0].header, hdul[0].data
    history, noise_history = list(map(str, header["HISTORY"])), list(map(str, noise_header["HISTORY"]))
    for cards in (history, noise_history):
        assert "noise model: gain 2 e-/ADU (header GAIN)" in cards
        assert "noise model: read noise 5 e- (header RDNOISE)" in cards
    assert noise_history[0] == "astrotf noise sigma map of ngc.fits for model nm"
    assert header["OBJECT"] == noise_header["OBJECT"] == "test field" and noise_header["BUNIT"] == "ADU"
    assert sigma.dtype == np.dtype(">f4") and sigma.shape == data.shape
    np.testing.assert_allclose(sigma, NoiseModel(GAIN, READ_NOISE).sigma_map(data), rtol=1e-6)  # NaN at NaN
    assert np.isnan(out[:5, :5]).all() and np.isfinite(out[5:, 5:]).all()
    np.testing.assert_array_equal(fits.getdata(src), data)  # the input is untouched
    loaded = load_model(path)
    network = denoise_image(data[..., None], loaded, TileOptions(32, 0.25), noise_sigma=sigma[..., None])
    kept = keep_sky_level(network, data[..., None], sigma[..., None])
    soft, _ = restore_and_report(data[..., None], kept.image, RestoreOptions(), soft=True,  # on by default, with
                                 noise_sigma=sigma[..., None])                             # the model's sigma map
    np.testing.assert_allclose(out, soft[..., 0], rtol=1e-5)
    assert f"astrotf {kept.line()}" in history and any(card.startswith("astrotf soft restore") for card in history)
    # --no-sky-level --no-soft-restore: the network's output as it is, and neither card
    result = invoke(src, "--model", path, "-o", tmp_path / "raw.fits", "--no-sky-level", "--no-soft-restore")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(fits.getdata(tmp_path / "raw.fits"), network[..., 0], rtol=1e-5)
    cards = [str(card) for card in fits.getheader(tmp_path / "raw.fits")["HISTORY"]]
    assert not any("sky level" in card or "soft restore" in card for card in cards)


def test_cli_overrides_give_the_noise_map_of_the_formula(tmp_path, conditioned):
    path, _ = conditioned
    data = ccd_frame()
    src = write_fits(tmp_path / "f.fits", data, GAIN=9.0, RDNOISE=1.0)
    result = invoke(src, "--model", path, "--gain", "2.5", "--read-noise", "4", "--write-noise-map")
    assert result.exit_code == 0, result.output
    sigma = fits.getdata(tmp_path / "f_noise.fits")
    expected = np.sqrt(np.maximum(data.astype(np.float64), 0) / 2.5 + (4 / 2.5) ** 2)
    np.testing.assert_allclose(sigma, expected, rtol=1e-6)
    history = list(map(str, fits.getheader(tmp_path / "f_denoised.fits")["HISTORY"]))
    assert "noise model: gain 2.5 e-/ADU (--gain)" in history and "noise model: read noise 4 e- (--read-noise)" in history


@pytest.mark.parametrize("args,message", [
    (["--gain", "-1"], "--gain must be a finite number > 0 (e-/ADU). Received: gain=-1.0"),
    (["--gain", "0"], "--gain must be a finite number > 0 (e-/ADU). Received: gain=0.0"),
    (["--read-noise", "nan"], "--read-noise must be a finite number > 0 (e-). Received: read_noise=nan"),
])
def test_cli_bad_overrides_are_one_line_errors_before_any_file_is_read(tmp_path, args, message):
    result = invoke(tmp_path / "missing.fits", *args)
    assert result.exit_code == 2 and result.output == f"Error: {message}\n"


def test_cli_a_frame_without_background_fails_naming_the_file(tmp_path, conditioned):
    path, _ = conditioned
    src = write_fits(tmp_path / "tiny.fits", ccd_frame(shape=(20, 20)))
    result = invoke(src, "--model", path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert line.startswith(f"Error: {src}: too few background pixels to fit a noise model")
    assert not (tmp_path / "tiny_denoised.fits").exists()


def test_cli_refuses_a_contradicted_noise_model_and_runs_it_with_trust_noise_model(tmp_path, conditioned):
    path, _ = conditioned
    src = write_fits(tmp_path / "stack.fits", ccd_frame(gain=8.0), GAIN=GAIN, RDNOISE=READ_NOISE)
    refused = invoke(src, "--model", path)
    assert refused.exit_code == 2 and f"Error: {src}: noise model not trusted" in refused.output
    assert not (tmp_path / "stack_denoised.fits").exists()
    forced = invoke(src, "--model", path, "--force")  # --force overwrites outputs; it trusts nothing
    assert forced.exit_code == 2 and "noise model not trusted" in forced.output
    trusted = invoke(src, "--model", path, "--trust-noise-model")
    assert trusted.exit_code == 0, trusted.output
    assert f"Warning: {src}: noise model used (--trust-noise-model) although" in trusted.output
    history = list(map(str, fits.getheader(tmp_path / "stack_denoised.fits")["HISTORY"]))
    assert "noise model: used (--trust-noise-model) although the frame's background" in history
    assert any(card.startswith("noise model:   noise is 0.46 x the model's sigma") for card in history)


def test_cli_a_model_without_a_noise_input_refuses_the_noise_options(tmp_path):
    keras.utils.set_random_seed(0)
    plain = tmp_path / "plain.keras"
    ResUNet(channels=1, depth=2, base_filters=4, normalization="background").save(plain)
    src = write_fits(tmp_path / "f.fits", ccd_frame(), GAIN=GAIN, RDNOISE=READ_NOISE)
    result = invoke(src, "--model", plain, "--write-noise-map", "--gain", "2")
    assert result.exit_code == 2
    assert f"Error: {src}: --gain, --write-noise-map: model plain is not noise-conditioned" in result.output
    assert not (tmp_path / "f_noise.fits").exists() and not (tmp_path / "f_denoised.fits").exists()


def test_cli_a_noise_map_never_replaces_a_file_it_did_not_write(tmp_path, conditioned):
    path, _ = conditioned
    src = write_fits(tmp_path / "a.fits", ccd_frame(), GAIN=GAIN, RDNOISE=READ_NOISE)
    other = write_fits(tmp_path / "a_noise.fits", np.ones((8, 8), np.float32))  # another input, say
    for extra in ([], ["--force"]):
        result = invoke(src, "--model", path, "--write-noise-map", *extra)
        assert result.exit_code == 2 and f"{other}:" in result.output
    np.testing.assert_array_equal(fits.getdata(other), np.ones((8, 8)))
    other.unlink()
    assert invoke(src, "--model", path, "--write-noise-map").exit_code == 0
    assert invoke(src, "--model", path, "--write-noise-map", "--force").exit_code == 0  # its own map: replaced
    result = invoke(src, "--model", path, "--write-noise-map", "-o", tmp_path / "a_noise.fits", "--force")
    assert result.exit_code == 2 and "would overwrite the output" in result.output


# ----------------------------------------------------------------------------- Python API
def test_the_api_takes_gain_and_read_noise_and_reads_ccddata_meta(conditioned):
    from astropy import units as u
    from astropy.nddata import CCDData

    path, _ = conditioned
    data = ccd_frame()
    loaded = load_model(path)
    sigma = NoiseModel(GAIN, READ_NOISE).sigma_map(data)[..., None]
    network = denoise_image(data[..., None], loaded, TileOptions(32, 0.25), noise_sigma=sigma)
    expected, _ = restore_and_report(data[..., None], keep_sky_level(network, data[..., None], sigma).image,
                                     RestoreOptions(), soft=True, noise_sigma=sigma)
    expected = expected[..., 0]
    out = astrotf.denoise(data, str(path), tile=32, gain=GAIN, read_noise=READ_NOISE)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    raw = astrotf.denoise(data, str(path), tile=32, gain=GAIN, read_noise=READ_NOISE, sky_level=False,
                          soft_restore=False)
    np.testing.assert_allclose(raw, network[..., 0], rtol=1e-5)
    ccd = CCDData(data, unit=u.adu, meta={"GAIN": GAIN, "RDNOISE": READ_NOISE})
    result = astrotf.Denoiser(str(path), tile=32)(ccd)
    np.testing.assert_allclose(result.data, expected, rtol=1e-5)
    assert "noise model: gain 2 e-/ADU (header GAIN)" in list(result.meta["HISTORY"])
    stack = CCDData(ccd_frame(gain=8.0), unit=u.adu, meta={"GAIN": GAIN, "RDNOISE": READ_NOISE})
    with pytest.raises(AstroTFError, match=r"^noise model not trusted \(gain 2 e-/ADU \(header GAIN\)"):
        astrotf.denoise(stack, str(path), tile=32)
    assert astrotf.denoise(stack, str(path), tile=32, trust_noise_model=True).data.shape == data.shape


def test_the_api_refuses_noise_options_for_a_model_without_a_noise_input(tmp_path):
    keras.utils.set_random_seed(0)
    plain = tmp_path / "plain.keras"
    ResUNet(channels=1, depth=2, base_filters=4, normalization="background").save(plain)
    with pytest.raises(AstroTFError, match="^--gain: model plain is not noise-conditioned"):
        astrotf.denoise(ccd_frame(), str(plain), tile=32, gain=2.0)


# ----------------------------------------------------------------------------- export and backends
def test_export_records_the_noise_input_and_the_serving_signature_takes_both(exported):
    out, model = exported
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["noise_map"] is True and "noise_sigma" in meta
    assert meta["signature"] == {"name": "serving_default", "inputs": ["image", "noise_sigma"], "output": "denoised",
                                 "shape": [None, None, None, 1], "dtype": "float32"}
    assert meta["onnx"]["inputs"] == ["image", "noise_sigma"] and meta["onnx"]["output"] == "denoised"
    serve = tf.saved_model.load(str(out / "1")).signatures["serving_default"]
    assert sorted(serve.structured_input_signature[1]) == ["image", "noise_sigma"]
    rng = np.random.default_rng(0)
    for shape in [(1, 32, 32, 1), (3, 37, 29, 1)]:
        x = rng.normal(400.0, 15.0, shape).astype(np.float32)
        s = rng.uniform(10.0, 20.0, shape).astype(np.float32)
        got = serve(image=tf.constant(x), noise_sigma=tf.constant(s))["denoised"].numpy()
        np.testing.assert_allclose(got, model([x, s]), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("backend,where", [("tensorflow", ""), ("tensorflow", "model.keras"), ("onnxruntime", "")])
def test_every_backend_runs_the_noise_conditioned_export_like_keras(exported, backend, where):
    pytest.importorskip("onnxruntime")
    out, model = exported
    loaded = load_model(out / where if where else out, backend=backend)
    assert loaded.noise_conditioned and loaded.channels == 1
    rng = np.random.default_rng(1)
    for shape in [(4, 32, 32, 1), (1, 37, 53, 1)]:  # odd H x W exercises pad + crop
        x = rng.normal(400.0, 15.0, shape).astype(np.float32)
        s = rng.uniform(10.0, 20.0, shape).astype(np.float32)
        np.testing.assert_allclose(loaded.predict(x, s), model([x, s]), rtol=1e-5, atol=2e-3)


def test_infer_gives_the_same_frame_with_onnx_runtime_and_the_saved_model(exported, tmp_path):
    pytest.importorskip("onnxruntime")
    out, _ = exported
    src = write_fits(tmp_path / "f.fits", ccd_frame(), GAIN=GAIN, RDNOISE=READ_NOISE)
    for backend in ("tensorflow", "onnxruntime"):
        result = invoke(src, "--model", out, "--backend", backend, "-o", tmp_path / f"{backend}.fits")
        assert result.exit_code == 0, result.output
    np.testing.assert_allclose(fits.getdata(tmp_path / "onnxruntime.fits"), fits.getdata(tmp_path / "tensorflow.fits"),
                               rtol=1e-5, atol=2e-3)


def test_a_metadata_json_that_the_graph_contradicts_is_refused(exported, tmp_path):
    import shutil

    out, _ = exported
    copy = tmp_path / "nm"
    shutil.copytree(out, copy)
    meta = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**meta, "noise_map": False}))
    with pytest.raises(AstroTFError, match=r"metadata.json says noise_map=False but the model's inputs are "
                                           r"\['image', 'noise_sigma'\]"):
        load_model(copy)


def test_a_re_export_of_the_model_folder_keeps_both_inputs_and_the_model_list_says_so(exported, tmp_path,
                                                                                      monkeypatch):
    pytest.importorskip("onnxruntime")
    from astrotf.backends import shipped_models
    from astrotf.export import export_model

    out, model = exported
    again, _ = export_model(out, tmp_path / "models" / "nm2", formats=("savedmodel", "onnx"))
    x = np.random.default_rng(3).normal(400.0, 15.0, (2, 40, 24, 1)).astype(np.float32)
    s = np.full_like(x, 14.0)
    for backend in ("tensorflow", "onnxruntime"):
        np.testing.assert_allclose(load_model(again, backend=backend).predict(x, s), model([x, s]), rtol=1e-5,
                                   atol=2e-3)
    monkeypatch.setenv("ASTROTF_MODELS", str(tmp_path / "models"))
    (card,) = [c for c in shipped_models() if c.name == "nm2"]
    assert card.noise_conditioned
    listing = CliRunner().invoke(main, ["models"]).output
    assert any(line.startswith("nm2 ") and "noise-conditioned" in line for line in listing.splitlines())


def test_the_fp16_graph_for_tensorrt_keeps_both_inputs_in_float32(exported, tmp_path):
    """The CPU half of the TensorRT path (ONNX Runtime stands in for the engine)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxconverter_common")
    from astrotf.backends.tensorrt import mixed_fp16_onnx

    out, _ = exported
    graph = mixed_fp16_onnx(out / "model.onnx", tmp_path / "fp16.onnx").graph
    assert [(i.name, i.type.tensor_type.elem_type) for i in graph.input] == [("image", 1), ("noise_sigma", 1)]
    x = np.random.default_rng(4).poisson(20000.0, (2, 48, 40, 1)).astype(np.float32)
    s = np.sqrt(x)
    runs = [ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).run(None, {"image": x, "noise_sigma": s})[0]
            for f in (out / "model.onnx", tmp_path / "fp16.onnx")]
    assert np.sqrt(np.mean((runs[0] - runs[1]) ** 2)) <= 0.1 * x.std()


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_tf_serving_gets_both_inputs_and_serves_what_runs_locally(exported, tmp_path, protocol):
    pytest.importorskip("tensorflow_serving.apis")
    pytest.importorskip("grpc")
    from astrotf.backends.serving import ServingClient
    from tests.serving_double import start_grpc, start_rest

    out, model = exported
    handle, address = (start_grpc if protocol == "grpc" else start_rest)(out / "1", "nm")
    try:
        client = ServingClient(address, "nm", protocol)
        assert client.input_names == ["image", "noise_sigma"] and client.channels == 1
        x = np.random.default_rng(5).normal(400.0, 15.0, (2, 24, 40, 1)).astype(np.float32)
        np.testing.assert_allclose(client.predict(x, np.full_like(x, 14.0)), model([x, np.full_like(x, 14.0)]),
                                   rtol=1e-5, atol=2e-3)
        src = write_fits(tmp_path / "f.fits", ccd_frame(), GAIN=GAIN, RDNOISE=READ_NOISE)
        local = invoke(src, "--model", out, "--precision", "float32", "-o", tmp_path / "local.fits")
        served = invoke(src, "--model", "nm", "--server", address, "--protocol", protocol, "--write-noise-map",
                        "-o", tmp_path / "served.fits")
        assert local.exit_code == 0 and served.exit_code == 0, local.output + served.output
        np.testing.assert_allclose(fits.getdata(tmp_path / "served.fits"), fits.getdata(tmp_path / "local.fits"),
                                   rtol=1e-6, atol=1e-3)
        assert (tmp_path / "f_noise.fits").is_file()
    finally:
        handle.stop(None) if protocol == "grpc" else handle.shutdown()


def _cuda():
    try:
        from astrotf.backends.tensorrt import cuda_available
    except ImportError:
        return False
    return cuda_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs an NVIDIA GPU with tensorrt and cuda-python")
def test_a_tensorrt_engine_takes_both_inputs_and_matches_onnx_runtime(exported, tmp_path):
    from astrotf.export import export_model

    out, _ = exported
    engine_folder, _ = export_model(out, tmp_path / "trt", formats=("tensorrt",), trt_tile=64, trt_max_batch=4)
    engine = load_model(engine_folder, backend="tensorrt")
    reference = load_model(engine_folder, backend="onnxruntime")
    assert engine.noise_conditioned
    rng = np.random.default_rng(6)
    for shape in ((4, 64, 64, 1), (1, 72, 48, 1)):
        x = rng.poisson(20000.0, shape).astype(np.float32)
        s = np.sqrt(x)
        a, b = reference.predict(x, s), engine.predict(x, s)
        assert b.shape == x.shape and np.sqrt(np.mean((a - b) ** 2)) <= 0.1 * x.std()
