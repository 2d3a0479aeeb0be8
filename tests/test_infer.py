"""Tiled inference with Gaussian feathering (AstroPics §3): coverage, exactness, seams, NaN."""

import keras
import numpy as np
import pytest

from astrotf.errors import AstroTFError
from astrotf.backends import LoadedModel
from astrotf.infer import TileOptions, adapt_channels, denoise_tiled, feather_profile, gaussian_weight, tile_starts


def identity(batch):
    return batch


@pytest.mark.parametrize("length,tile,step", [(100, 32, 24), (32, 32, 8), (33, 32, 32), (257, 64, 48)])
def test_tile_starts_cover_every_pixel(length, tile, step):
    covered = np.zeros(length, bool)
    for s in tile_starts(length, tile, step):
        assert 0 <= s <= length - tile
        covered[s:s + tile] = True
    assert covered.all()


@pytest.mark.parametrize("length,tile,step", [(2048, 256, 192), (1000, 64, 48), (300, 256, 192), (97, 32, 3)])
def test_tile_starts_are_few_and_evenly_spread(length, tile, step):
    starts = tile_starts(length, tile, step)
    gaps = np.diff(starts)
    assert starts[0] == 0 and starts[-1] == length - tile
    assert gaps.max() <= step and gaps.max() - gaps.min() <= 1
    assert len(starts) == -(-(length - tile) // step) + 1  # no more tiles than the step needs


def test_feathering_stays_at_its_peak_towards_the_frame_border():
    inner = feather_profile(64, 0.25, edge=4)
    first = feather_profile(64, 0.25, edge=4, first=True)
    last = feather_profile(64, 0.25, edge=4, last=True)
    assert (inner[:4] == 0).all() and (inner[-4:] == 0).all() and 0.2 < inner[4] < 0.25
    assert (first[:32] == 1).all() and (first[32:] == inner[32:]).all()
    assert (last[32:] == 1).all() and (last[:32] == inner[:32]).all()
    assert (feather_profile(64, 0.25, 4, first=True, last=True) == 1).all()


def test_identity_model_returns_input_for_random_shapes_and_overlaps():
    rng = np.random.default_rng(0)
    for _ in range(16):
        h, w = rng.integers(1, 120, 2)
        c = int(rng.choice([1, 3]))
        overlap = float(rng.choice([0.0, 0.1, 0.25, 0.5, 0.9]))
        image = rng.random((h, w, c), dtype=np.float32)
        out = denoise_tiled(image, identity, TileOptions(tile=32, overlap=overlap, batch_size=3))
        # exact up to float32 rounding of sum(w * x) / sum(w)
        np.testing.assert_array_equal(out, image)


def test_tiled_matches_whole_image_prediction_for_a_small_conv_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                              keras.layers.Conv2D(1, 3, padding="same")])
    image = np.random.default_rng(1).random((70, 90, 1), dtype=np.float32)
    whole = np.asarray(model(image[None]))[0]
    tiled = denoise_tiled(image, lambda b: np.asarray(model(b)), TileOptions(tile=32, overlap=0.5, batch_size=4))
    # the thin reflected border differs from the model's zero padding: compare the interior
    inner = (slice(3, -3), slice(3, -3))
    assert np.abs(tiled[inner] - whole[inner]).max() < 0.05 * whole.std()
    assert np.abs(tiled[inner] - whole[inner]).mean() < 0.005 * whole.std()
    # and without it, border tiles see the frame edge exactly as the whole-frame call does
    flush = denoise_tiled(image, lambda b: np.asarray(model(b)), TileOptions(32, 0.5, 4, border=0))
    assert np.abs(flush - whole).max() < 0.05 * whole.std()


def seam_strength(image):
    """Largest jump of the second difference along rows and columns."""
    return max(np.abs(np.diff(image, 2, axis=0)).max(), np.abs(np.diff(image, 2, axis=1)).max())


def test_gaussian_overlap_removes_seams_that_naive_tiling_shows():
    # a model whose output depends on the tile it sees (local contrast boost) makes seams
    def context_dependent(batch):
        return batch + 0.5 * (batch - batch.mean(axis=(1, 2), keepdims=True))

    yy, xx = np.mgrid[0:128, 0:128].astype(np.float32)
    gradient = ((xx + yy) / 256.0)[..., None]
    naive = denoise_tiled(gradient, context_dependent, TileOptions(tile=32, overlap=0.0, border=0))
    feathered = denoise_tiled(gradient, context_dependent, TileOptions(tile=32, overlap=0.25, border=0))
    wide = denoise_tiled(gradient, context_dependent, TileOptions(tile=32, overlap=0.5, border=0))
    assert seam_strength(naive) > 0.05
    # the jump between tiles is spread over the overlap: the wider, the smoother
    assert seam_strength(feathered) < 0.3 * seam_strength(naive)
    assert seam_strength(wide) < 0.6 * seam_strength(feathered)


def test_nan_pixels_stay_out_of_the_network_and_come_back_as_nan():
    image = np.random.default_rng(2).random((64, 80, 1), dtype=np.float32)
    image[10:20, 5:30] = np.nan
    image[:, 70:] = np.nan
    seen = []

    def spy(batch):
        seen.append(np.isfinite(batch).all())
        return batch

    out = denoise_tiled(image, spy, TileOptions(tile=32, overlap=0.25))
    assert all(seen)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(image))
    np.testing.assert_array_equal(out[np.isfinite(image)], image[np.isfinite(image)])


def test_all_masked_tiles_are_skipped():
    image = np.full((96, 96, 1), np.nan, np.float32)
    image[:20, :20] = 1.0
    calls = []
    denoise_tiled(image, lambda b: calls.append(len(b)) or b, TileOptions(tile=32, overlap=0.0, batch_size=1))
    # a 4 x 4 grid over the 112 px padded frame (starts 0, 27, 53, 80): the data and their reflection
    # in the border fill padded rows and columns 0-27, i.e. the tiles of the first two rows and columns
    assert calls == [1, 1, 1, 1]


def test_gaussian_weight_peaks_in_the_centre_and_never_vanishes():
    w = gaussian_weight(64, 0.25)
    assert w.max() == w[31:33, 31:33].max() and w.min() > 0.01
    assert (gaussian_weight(64, 0.0) == 1).all()


def test_tile_size_for_a_frame_needs_the_fewest_network_pixels():
    # 2048 px + 2 x 8 px border: 11 tiles of 256 (1.38x the side); 4 of 640 (1.25x)
    options = TileOptions.for_frame((2048, 2048, 3), 0.25)
    assert (options.tile, options.batch_size, options.overlap, options.border) == (640, 1, 0.25, 8)
    assert len(tile_starts(2048 + 16, 640, options.step)) == 4
    for shape in [(6000, 4000), (4096, 4096), (1000, 3000), (300, 5000)]:
        chosen = TileOptions.for_frame(shape, 0.25)
        side = [n + 16 for n in shape]
        cost = {t: len(tile_starts(max(side[0], t), t, TileOptions(t).step))
                * len(tile_starts(max(side[1], t), t, TileOptions(t).step)) * t * t for t in range(256, 721, 16)}
        assert cost[chosen.tile] == min(cost.values()) and chosen.tile % 16 == 0
        assert chosen.batch_size * chosen.tile ** 2 <= 8 * 256 ** 2  # no more memory than 8 tiles of 256 px
        assert cost[chosen.tile] < cost[256]
    # small frames get a tile just big enough; a fixed batch size and an engine's limit are kept
    assert TileOptions.for_frame((100, 70, 1), 0.25).tile == 128
    assert TileOptions.for_frame((2048, 2048), 0.25, batch_size=3).batch_size == 3
    assert TileOptions.for_frame((2048, 2048), 0.25, largest=512).tile <= 512
    assert TileOptions.for_frame((2048, 2048), 0.25, largest=192).tile == 192


def test_a_model_tiles_from_its_training_tile_up_to_what_its_engine_takes():
    plain = LoadedModel("m", identity, {"tile": 256})
    assert plain.tile_options((2048, 2048, 3)).tile == 640
    # a model trained on 384 px tiles never gets smaller ones; the budget grows with it
    trained_384 = LoadedModel("m", identity, {"tile": 384}).tile_options((2048, 2048, 3))
    assert trained_384.tile >= 384 and trained_384.batch_size * trained_384.tile ** 2 <= 8 * 384 ** 2
    engine = LoadedModel("trt", identity, {"tile": 256}, largest_tile=512)
    assert engine.tile_options((2048, 2048, 3)).tile <= 512
    fixed = engine.tile_options((2048, 2048, 3), overlap=0.5, tile=320, batch_size=2)
    assert (fixed.tile, fixed.overlap, fixed.batch_size) == (320, 0.5, 2)
    assert plain.tile_options((64, 64, 1), tile=96).batch_size == 8
    with pytest.raises(AstroTFError, match="trt: tile 640 px is larger than the model takes.*512"):
        engine.tile_options((2048, 2048, 3), tile=640)


def test_channel_adaptation():
    rgb = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    per_channel = adapt_channels(lambda b: b * 2, model_channels=1, image_channels=3)
    np.testing.assert_allclose(per_channel(rgb), rgb * 2)
    mono = rgb[..., :1]
    np.testing.assert_allclose(adapt_channels(lambda b: b, 3, 1)(mono), mono)


@pytest.mark.parametrize("kwargs,match", [(dict(tile=8), "tile"), (dict(overlap=0.95), "overlap"),
                                          (dict(batch_size=0), "batch_size"), (dict(border=-1), "border")])
def test_tile_options_validate(kwargs, match):
    with pytest.raises(AstroTFError, match=match):
        TileOptions(**kwargs)


def test_bfloat16_inference_keeps_the_data_path_in_float32(tmp_path):
    import keras

    from astrotf.backends import load_model
    from astrotf.models.resunet import ResUNet

    keras.utils.set_random_seed(0)
    ResUNet(channels=3, depth=2, base_filters=4, head_initializer="glorot_uniform").save(tmp_path / "m.keras")
    fp32 = load_model(tmp_path / "m.keras", precision="float32")
    bf16 = load_model(tmp_path / "m.keras", precision="bfloat16")
    assert (fp32.precision, bf16.precision) == ("float32", "bfloat16")
    assert keras.mixed_precision.global_policy().name == "float32"  # loading leaves the policy alone
    x = np.random.default_rng(0).random((2, 40, 48, 3), dtype=np.float32)
    a, b = fp32.predict(x), bf16.predict(x)
    assert b.dtype == np.float32
    correction = np.abs(a - x).max()
    # only the correction is rounded (bfloat16: 8 significant bits), never the data it is added to
    assert 0 < np.abs(a - b).max() <= 0.02 * correction + 1e-6


def test_auto_precision_keeps_linear_models_and_other_backends_in_float32(tmp_path):
    from astrotf.backends import resolve_inference_precision
    from astrotf.config import resolve_precision

    import tensorflow as tf

    native = resolve_precision("auto", bool(tf.config.list_physical_devices("GPU"))) == "mixed_bfloat16"
    assert resolve_inference_precision("auto", {"data_domain": "linear"}) == "float32"
    assert resolve_inference_precision("auto", {"data_domain": "magnetogram"}) == "float32"
    assert resolve_inference_precision("auto", {"data_domain": "stretched"}, "onnxruntime") == "float32"
    # stretched data: bfloat16 where this machine computes it natively
    expected = "bfloat16" if native else "float32"
    assert resolve_inference_precision("auto", {"data_domain": "stretched"}) == expected
    assert resolve_inference_precision("float32", {"data_domain": "stretched"}) == "float32"
    with pytest.raises(AstroTFError, match="tensorflow backend only"):
        resolve_inference_precision("bfloat16", {}, "onnxruntime")
    with pytest.raises(AstroTFError, match="unknown precision"):
        resolve_inference_precision("fp8", {})


def test_integer_input_is_dithered_only_for_models_that_normalise_tiles_by_their_mad():
    from astrotf.infer import denoise_image

    frame = np.rint(np.random.default_rng(0).normal(100, 2, (40, 40, 1))).astype(np.float32)
    frame[:3, :3] = np.nan
    finite = np.isfinite(frame)
    identity = {"channels": 1, "data_domain": "linear"}
    options = TileOptions(tile=32, overlap=0.25)
    mad_model = LoadedModel("mad", lambda x: x, {**identity, "normalization": {"kind": "background"}})
    fixed_model = LoadedModel("fixed", lambda x: x, {**identity, "normalization": {"kind": "fixed"}})
    assert mad_model.normalises_tiles and not fixed_model.normalises_tiles
    out = denoise_image(frame, mad_model, options, step=1.0)
    assert not np.array_equal(out[finite], frame[finite]) and np.abs(out - frame)[finite].max() <= 0.5
    np.testing.assert_array_equal(denoise_image(frame, mad_model, options, step=None), frame)  # continuous
    found = denoise_image(frame, mad_model, options)  # step="auto": the integer grid is found in the values
    assert not np.array_equal(found[finite], frame[finite]) and np.abs(found - frame)[finite].max() <= 0.5
    smooth = frame + np.random.default_rng(1).uniform(-0.5, 0.5, frame.shape).astype(np.float32)
    np.testing.assert_array_equal(denoise_image(smooth, mad_model, options), smooth)  # no grid: untouched
    np.testing.assert_array_equal(denoise_image(frame, fixed_model, options, step=1.0), frame)


@pytest.mark.parametrize("arch, expected", [("pix2pix", 128), ("nafnet", 128), ("resunet", None)])
def test_models_that_see_the_whole_tile_are_tiled_at_their_training_tile(arch, expected):
    model = LoadedModel("m", lambda x: x, {"architecture": {"name": arch}, "tile": 128, "channels": 3})
    options = model.tile_options((3000, 2000, 3), 0.25)
    if expected is None:  # convolutional: the tile that needs the fewest network pixels
        assert options == TileOptions.for_frame((3000, 2000, 3), 0.25, preferred=256)
    else:
        assert options.tile == expected and options.overlap == 0.25
        assert options.batch_size * expected**2 == 8 * 256**2  # the same pixels per call as 8 tiles of 256
    assert model.tile_options((3000, 2000, 3), 0.25, tile=96).tile == 96  # an explicit --tile wins
