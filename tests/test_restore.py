"""Restore (TDR), clip and soft restore: the guarantees, the options, and the files ``astrotf infer`` writes."""

import re

import keras
import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from astrotf.cli import main
from astrotf.errors import AstroTFError
from astrotf.io import ImageInfo
from astrotf.metrics import noise_level
from astrotf.models.registry import build_model
from astrotf.restore import (RestoreOptions, check_restore_target, restore, restore_and_report, restore_on_grid,
                             restore_threshold)
from astrotf.soft_restore import soft_restore


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


def test_soft_restore_with_a_sigma_map_weighs_each_pixel_by_its_own_noise():
    """A constant map is the scalar level; where the map says a pixel is noisier (a star's Poisson
    noise), less of its change comes back; pixels without a usable sigma keep the denoised value."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:96, :96]
    truth = 400.0 * np.exp(-((yy - 48) ** 2 + (xx - 48) ** 2) / (2 * 1.5**2))
    sigma_map = np.sqrt(4.0 + truth)  # read noise 2 plus Poisson
    noisy = (truth + rng.normal(0, 1, truth.shape) * sigma_map).astype(np.float32)
    denoised = (truth + 0.3 * (noisy - truth)).astype(np.float32)  # cut 70 % of the noise everywhere
    flat = soft_restore(denoised, noisy, noise_sigma=2.0)
    same = soft_restore(denoised, noisy, noise_sigma=np.full(noisy.shape, 2.0))
    np.testing.assert_allclose(same.image, flat.image, rtol=1e-6)
    assert same.noise_sigma == 2.0
    mapped = soft_restore(denoised, noisy, noise_sigma=sigma_map)
    core = truth > 100
    assert mapped.gain[core].mean() < 0.2 < flat.gain[core].mean()  # the core's scatter is its own noise
    holes = sigma_map.copy()
    holes[:4, :4] = np.nan
    holes[4:8, :4] = 0.0
    np.testing.assert_array_equal(soft_restore(denoised, noisy, holes).image[:8, :4], denoised[:8, :4])
    with pytest.raises(ValueError, match="the image's shape"):
        soft_restore(denoised, noisy, sigma_map[:5])


def test_restore_options_are_exclusive(tmp_path):
    result = CliRunner().invoke(main, ["infer", "x.fits", "--restore", "1", "--restore-sigma", "1"])
    assert result.exit_code == 2 and "either --restore or --restore-sigma" in result.output


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


# ----------------------------------------------------------------------------- after inference
@pytest.mark.parametrize("kwargs,message", [
    (dict(threshold=1.0, sigmas=1.0), "either --restore or --restore-sigma"),
    (dict(mode="clip"), "--restore-mode clip needs --restore"),
    (dict(noise_range=(5.0, -5.0)), "LOW must be below HIGH"),
])
def test_restore_options_name_what_cannot_go_together(kwargs, message):
    with pytest.raises(AstroTFError, match=message):
        RestoreOptions(**kwargs)


def info_of(fmt, dtype=np.float32, **extra):
    return ImageInfo(path=None, format=fmt, dtype=dtype, channels=1, layout="HW", scale=1.0, extra=extra)


def test_restore_target_must_keep_the_input_format_and_not_be_jpeg(tmp_path):
    check_restore_target(tmp_path / "out.fits", info_of("fits"))
    with pytest.raises(AstroTFError, match="JPEG is lossy"):
        check_restore_target(tmp_path / "out.jpg", info_of("png"))
    with pytest.raises(AstroTFError, match=r"in the input's format \(fits\)"):
        check_restore_target(tmp_path / "out.tif", info_of("fits"))


def test_restore_on_grid_keeps_r_after_the_writer_rounds_to_the_grid():
    """BSCALE 0.25, R = 0.45: every written value is on the grid and within R of the input."""
    rng = np.random.default_rng(0)
    original = (np.rint(rng.normal(0, 32, (40, 40, 1))) * 0.25).astype(np.float32)
    denoised = (original + rng.normal(0, 1.0, original.shape)).astype(np.float32)
    info = info_of("fits", np.int16, bscale=0.25, bzero=0.0)
    for mode in ("input", "clip"):
        restored = restore_on_grid(denoised, original, 0.45, mode, info)
        assert restored.mode == mode
        assert np.abs(restored.image.astype(np.float64) - original).max() <= 0.45
        np.testing.assert_array_equal(np.rint(restored.image / 0.25) * 0.25, restored.image)
    plain = restore_on_grid(denoised, original, 0.45, "clip", info_of("fits"))  # no grid: restore() itself
    np.testing.assert_array_equal(plain.image, restore(denoised, original, 0.45, "clip").image)


def test_report_lines_say_what_each_step_did():
    rng = np.random.default_rng(1)
    data = rng.normal(100, 8, (64, 64, 1)).astype(np.float32)
    result = np.full_like(data, 100.0)
    out, lines = restore_and_report(data, result, RestoreOptions(sigmas=0.5, report=True, noise_range=(60, 140)),
                                    soft=True)
    assert [line.split(" ")[0] for line in lines] == ["soft", "noise", "restore", "noise", "output"]
    sigma = noise_level(data, (60, 140)).sigma
    assert np.abs(out.astype(np.float64) - data).max() <= 0.5 * sigma
    untouched, none = restore_and_report(data, result, RestoreOptions())
    assert untouched is result and none == []


def test_a_default_soft_restore_is_skipped_when_the_noise_cannot_be_measured_and_one_asked_for_fails():
    data = (600.0 + np.random.default_rng(1).normal(0.0, 8.0, (64, 64, 1))).astype(np.float32)  # all plage
    out, lines = restore_and_report(data, data.copy(), RestoreOptions(), soft=True, domain="magnetogram")
    assert len(lines) == 1 and lines[0].startswith("soft restore skipped: noise level of the input")
    np.testing.assert_array_equal(out, data)
    with pytest.raises(AstroTFError, match="noise level of the input"):
        restore_and_report(data, data.copy(), RestoreOptions(soft=True), soft=True, domain="magnetogram")


def test_blend_is_the_weighted_mean_and_exact_at_its_ends():
    from astrotf.restore import blend

    rng = np.random.default_rng(0)
    data = rng.normal(100, 5, (7, 9, 1)).astype(np.float32)
    data[0, 0] = np.nan
    denoised = (data * 0.5).astype(np.float32)
    np.testing.assert_array_equal(blend(denoised, data, 0.0), data)
    assert blend(denoised, data, 1.0) is denoised
    np.testing.assert_allclose(blend(denoised, data, 0.3), 0.3 * denoised + 0.7 * data, rtol=1e-6)
    assert np.isnan(blend(denoised, data, 0.3)[0, 0])
    with pytest.raises(AstroTFError, match="strength"):
        blend(denoised, data, 1.5)
    with pytest.raises(AstroTFError, match="--strength must be in"):
        RestoreOptions(strength=-0.1)


def test_strength_comes_before_the_restore_whose_bound_stays_exact():
    rng = np.random.default_rng(1)
    data = rng.normal(0, 10, (40, 40, 1)).astype(np.float32)
    denoised = np.zeros_like(data)
    out, lines = restore_and_report(data, denoised, RestoreOptions(threshold=4.0, strength=0.5))
    assert lines[0].startswith("strength 0.5:")
    assert np.abs(out - data).max() <= 4.0
    half = 0.5 * data  # a pixel the blend moved by at most R keeps the blended value
    small = np.abs(data) <= 8.0
    np.testing.assert_allclose(out[small], half[small], atol=1e-6)
