"""Model contract: build, shapes, config round trip, .keras save/load, any H x W, identity path."""

from pathlib import Path

import keras
import numpy as np
import pytest

from astrotf.models.registry import build_model
from astrotf.models.resunet import ResUNet

CASES = [
    dict(channels=3, depth=2, base_filters=4),
    dict(channels=1, depth=3, base_filters=4, normalization="background"),
    dict(channels=3, depth=2, base_filters=4, space_to_depth=2),
    dict(channels=1, depth=2, base_filters=4, normalization="background", space_to_depth=2),
    dict(channels=1, depth=2, base_filters=4, normalization="background", noise_map=True),
    dict(channels=3, depth=2, base_filters=4, space_to_depth=2, noise_map=True),
    dict(channels=1, depth=2, base_filters=4, normalization="fixed", offset=500.0, scale=300.0),
]
SHIPPED = Path(__file__).resolve().parents[1] / "saved_models"


def model_inputs(kwargs, x):
    """``x``, or ``[x, sigma]`` with a positive σ map of the same shape for a noise-conditioned model."""
    if not kwargs.get("noise_map"):
        return x
    return [x, (0.05 + 0.1 * np.sqrt(np.abs(x))).astype(np.float32)]


@pytest.mark.parametrize("kwargs", CASES)
def test_model_contract(kwargs, tmp_path):
    model = build_model("resunet", **kwargs, head_initializer="glorot_uniform")
    rng = np.random.default_rng(0)
    scale = 1000.0 if kwargs.get("normalization") in ("background", "fixed") else 1.0
    for shape in [(2, 32, 32), (1, 37, 53), (1, 5, 9)]:
        x = (rng.random(shape + (kwargs["channels"],)) * scale).astype(np.float32)
        assert model(model_inputs(kwargs, x)).shape == x.shape
    config = model.get_config()
    assert {k: config[k] for k in kwargs} == kwargs
    clone = ResUNet.from_config(config)
    assert clone.count_params() == model.count_params()
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    x = model_inputs(kwargs, (rng.random((2, 24, 40, kwargs["channels"])) * scale).astype(np.float32))
    np.testing.assert_allclose(restored(x), model(x), rtol=1e-6, atol=1e-6 * scale)


def test_noise_map_is_a_second_named_input_that_changes_the_output():
    model = ResUNet(channels=1, depth=2, base_filters=4, normalization="background", noise_map=True,
                    head_initializer="glorot_uniform")
    assert [t.name for t in model.inputs] == ["image", "noise_sigma"]
    assert model.get_layer("pad").input.shape[-1] == 2  # image and σ map side by side
    x = np.random.default_rng(6).normal(500, 20, (1, 32, 32, 1)).astype(np.float32)
    low, high = np.full_like(x, 10.0), np.full_like(x, 40.0)
    assert np.abs(np.asarray(model([x, low])) - np.asarray(model([x, high]))).max() > 1e-3
    unconditioned = ResUNet(channels=1, depth=2, base_filters=4, normalization="background")
    assert model.count_params() - unconditioned.count_params() == 4 * 3 * 3  # one more input channel in the stem


def test_noise_map_scales_with_the_image_under_background_normalisation():
    """(a*x + b, a*σ) in gives a*f(x, σ) + b out: σ is divided by the same tile scale as the image."""
    model = ResUNet(channels=1, depth=2, base_filters=4, normalization="background", noise_map=True,
                    head_initializer="glorot_uniform")
    rng = np.random.default_rng(2)
    x = rng.normal(500, 20, (2, 32, 32, 1)).astype(np.float32)
    sigma = np.sqrt(np.maximum(x, 0)).astype(np.float32)
    np.testing.assert_allclose(model([3 * x + 100, 3 * sigma]), 3 * np.asarray(model([x, sigma])) + 100, rtol=1e-4)
    new = ResUNet(channels=1, depth=2, base_filters=4, normalization="background", noise_map=True)
    np.testing.assert_allclose(new([x, sigma]), x, rtol=1e-6)  # a new model is still the identity


@pytest.mark.parametrize("folder", ["resunet-mono", "resunet-rgb"])
def test_shipped_keras_files_give_the_outputs_of_their_savedmodel(folder):
    """The SavedModels were written before noise_map existed: the .keras files built by today's code
    (noise_map=False) must still compute the same function."""
    import tensorflow as tf

    from astrotf.models.registry import load_model

    model = load_model(SHIPPED / folder / "model.keras", dtype="float32")
    assert model.get_config()["noise_map"] is False and len(model.inputs) == 1
    serve = tf.saved_model.load(str(SHIPPED / folder / "1")).signatures["serving_default"]
    rng = np.random.default_rng(8)
    for shape in [(1, 64, 64), (2, 45, 71)]:
        x = rng.random(shape + (model.channels,), dtype=np.float32)
        if folder == "resunet-mono":
            x = 100.0 + 20.0 * x
        reference = next(iter(serve(tf.constant(x)).values())).numpy()
        np.testing.assert_allclose(np.asarray(model(x)), reference, rtol=1e-5, atol=1e-5 * float(x.max()))


def test_onnx_export_of_a_noise_conditioned_model_has_two_inputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    import tensorflow as tf

    model = ResUNet(channels=1, depth=2, base_filters=4, normalization="background", noise_map=True,
                    head_initializer="glorot_uniform")
    specs = [tf.TensorSpec([None, None, None, 1], tf.float32, name=name) for name in ("image", "noise_sigma")]
    model.export(str(tmp_path / "m.onnx"), format="onnx", input_signature=[specs], verbose=False)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "noise_sigma"]
    rng = np.random.default_rng(9)
    for shape in [(1, 32, 32, 1), (2, 21, 35, 1)]:
        x = rng.normal(300, 15, shape).astype(np.float32)
        sigma = np.sqrt(x).astype(np.float32)
        got = session.run(None, {"image": x, "noise_sigma": sigma})[0]
        np.testing.assert_allclose(got, model([x, sigma]), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("space_to_depth", [1, 2])
def test_zero_head_is_exact_identity(space_to_depth):
    """The global residual: a model whose correction is zero returns its input bit for bit."""
    model = ResUNet(channels=3, depth=2, base_filters=4, space_to_depth=space_to_depth)
    x = np.random.default_rng(1).random((2, 19, 23, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x), x)  # a new model starts as the identity (zero head)
    random_head = ResUNet(channels=3, depth=2, base_filters=4, space_to_depth=space_to_depth, head_initializer="glorot_uniform")
    assert np.abs(np.asarray(random_head(x)) - x).max() > 1e-3


def test_background_normalisation_is_exactly_inverted_and_scale_equivariant():
    model = ResUNet(channels=1, depth=2, base_filters=4, normalization="background")
    x = (np.random.default_rng(2).normal(500, 20, (1, 32, 32, 1))).astype(np.float32)
    np.testing.assert_allclose(model(x), x, rtol=1e-6)
    trained = ResUNet(channels=1, depth=2, base_filters=4, normalization="background", head_initializer="glorot_uniform")
    # a*x + b in gives a*f(x) + b out: flux units do not matter
    np.testing.assert_allclose(trained(3 * x + 100), 3 * np.asarray(trained(x)) + 100, rtol=1e-4)


def test_mixed_precision_keeps_float32_output():
    model = ResUNet(channels=3, depth=2, base_filters=4, head_initializer="glorot_uniform", dtype="mixed_bfloat16")
    out = model(np.random.default_rng(0).random((1, 16, 16, 3)).astype(np.float32))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert model.get_layer("stem").compute_dtype == "bfloat16" and model.get_layer("head").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left alone


def test_mixed_precision_keeps_the_linear_data_path_in_float32():
    """bfloat16 has 8 significant bits: 20000 e- would be rounded to a multiple of 128."""
    keras.utils.set_random_seed(0)
    weights = ResUNet(channels=1, depth=2, base_filters=4, normalization="background").get_weights()
    model = ResUNet(channels=1, depth=2, base_filters=4, normalization="background", dtype="mixed_bfloat16")
    model.set_weights([0 * w for w in weights])  # zero correction: the output must be the input exactly
    x = np.random.default_rng(1).normal(20000.0, 30.0, (2, 24, 24, 1)).astype(np.float32)
    out = np.asarray(model(x))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x, rtol=0, atol=0.01)  # float32 rounding of (x - a) / s * s + a


@pytest.mark.parametrize("name,kwargs", [("resunet", dict(channels=3, depth=2, base_filters=4,
                                                          head_initializer="glorot_uniform")),
                                         ("self2self", dict(channels=1, depth=2, base_filters=4))])
def test_dtype_argument_builds_the_same_network_as_the_global_policy(name, kwargs):
    """Training used to set the global policy; the dtype argument gives the same weights and outputs."""
    x = np.random.default_rng(0).random((2, 24, 20, kwargs["channels"])).astype(np.float32)
    inputs = x if name == "resunet" else [x, np.ones_like(x)]
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    old = build_model(name, **kwargs)
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    new = build_model(name, dtype="mixed_bfloat16", **kwargs)
    for a, b in zip(old.get_weights(), new.get_weights()):
        np.testing.assert_array_equal(a, b)
    for layer in old.layers:
        if not isinstance(layer, keras.layers.InputLayer):
            assert new.get_layer(layer.name).dtype_policy.name == layer.dtype_policy.name
    if name == "resunet":
        np.testing.assert_array_equal(old(inputs), new(inputs))
    assert "dtype" not in new.get_config()  # the precision is chosen where the model is loaded


@pytest.mark.parametrize("folder", ["resunet-rgb", "resunet-mono", "self2self-hmi"])
def test_shipped_keras_files_load_in_float32_and_bfloat16(folder):
    from astrotf.models.registry import load_model

    path = SHIPPED / folder / "model.keras"
    full = load_model(path, dtype="float32")
    half = load_model(path, dtype="mixed_bfloat16")
    assert all(layer.dtype_policy.name == "float32" for layer in full.layers)
    assert half.get_layer("dec0b" if folder == "self2self-hmi" else "stem").compute_dtype == "bfloat16"
    for a, b in zip(full.get_weights(), half.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("kwargs,match", [(dict(channels=0), "channels"), (dict(depth=9), "depth"),
                                          (dict(normalization="minmax"), "normalization"),
                                          (dict(space_to_depth=3), "space_to_depth"),
                                          (dict(noise_map="yes"), "noise_map")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResUNet(**kwargs)


def test_bilinear_upsample_matches_keras_upsampling2d_and_traces_with_dynamic_shape():
    import tensorflow as tf

    from astrotf.layers.blocks import BilinearUpsample2x

    x = np.random.default_rng(3).random((2, 5, 7, 3)).astype(np.float32)
    reference = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
    np.testing.assert_allclose(BilinearUpsample2x()(x), reference, atol=1e-6)
    layer = BilinearUpsample2x()
    fn = tf.function(layer.call, input_signature=[tf.TensorSpec([None, None, None, 3])])
    np.testing.assert_allclose(fn(x), reference, atol=1e-6)


def test_space_to_depth_matches_tensorflow_and_is_inverted_exactly():
    import tensorflow as tf

    from astrotf.layers.blocks import DepthToSpace, SpaceToDepth

    x = np.random.default_rng(4).random((2, 6, 10, 3)).astype(np.float32)
    folded = SpaceToDepth(2)(x)
    np.testing.assert_array_equal(folded, tf.nn.space_to_depth(x, 2))
    np.testing.assert_array_equal(DepthToSpace(2)(folded), x)
    fn = tf.function(lambda t: DepthToSpace(2)(SpaceToDepth(2)(t)),
                     input_signature=[tf.TensorSpec([None, None, None, 3])])
    np.testing.assert_array_equal(fn(x), x)


def test_space_to_depth_model_is_translation_consistent_on_block_grid():
    """Shifting the input by one pooling cell (2 px unshuffle x 2 px pool) shifts the output alike."""
    model = ResUNet(channels=1, depth=1, base_filters=4, space_to_depth=2, head_initializer="glorot_uniform")
    x = np.random.default_rng(5).random((1, 128, 128, 1)).astype(np.float32)
    shifted = np.roll(x, 4, axis=1)
    a = np.asarray(model(x))[0, 56:72, 56:72]
    b = np.asarray(model(shifted))[0, 60:76, 56:72]
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 13, 21, 3), (2, 16, 16, 1), (1, 9, 15, 2), (1, 8, 4, 1)])
def test_pad_to_multiple_is_symmetric_padding(shape):
    from astrotf.layers.blocks import PadToMultiple

    x = np.random.default_rng(0).random(shape).astype(np.float32)
    pad_h, pad_w = (-shape[1]) % 8, (-shape[2]) % 8
    expected = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    np.testing.assert_array_equal(np.asarray(PadToMultiple(8)(x)), expected)
