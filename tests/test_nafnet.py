"""NAFNet: the model contract of ResUNet, its blocks against NumPy, and its ONNX graph."""

import keras
import numpy as np
import pytest

from astrotf.layers.nafnet_blocks import ChannelAttention, NAFBlock, SimpleGate
from astrotf.models.nafnet import NAFNet
from astrotf.models.registry import build_model
from tests.test_models import model_inputs

SMALL = dict(width=4, enc_blocks=[1, 2], middle_blocks=1, dec_blocks=[1, 1])


def _randomise(model, seed=0):
    """Give every weight (the zero-initialised residual scales too) a random value."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


@pytest.mark.parametrize("kwargs", [dict(channels=3, **SMALL),
                                    dict(channels=1, normalization="background", **SMALL),
                                    dict(channels=1, normalization="background", noise_map=True, **SMALL),
                                    dict(channels=3, noise_map=True, **SMALL)])
def test_model_contract(kwargs, tmp_path):
    model = _randomise(build_model("nafnet", **kwargs))
    scale = 1000.0 if kwargs.get("normalization") == "background" else 1.0
    rng = np.random.default_rng(0)
    for shape in [(2, 32, 32), (1, 37, 53), (1, 5, 9)]:
        x = (rng.random(shape + (kwargs["channels"],)) * scale).astype(np.float32)
        assert model(model_inputs(kwargs, x)).shape == x.shape
    config = model.get_config()
    assert {k: config[k] for k in kwargs} == kwargs
    assert NAFNet.from_config(config).count_params() == model.count_params()
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    x = model_inputs(kwargs, (rng.random((2, 24, 40, kwargs["channels"])) * scale).astype(np.float32))
    np.testing.assert_allclose(restored(x), model(x), rtol=1e-5, atol=1e-5 * scale)


def test_noise_map_is_scaled_with_the_image_and_changes_the_output():
    model = _randomise(NAFNet(channels=1, normalization="background", noise_map=True, **SMALL), seed=4)
    assert [t.name for t in model.inputs] == ["image", "noise_sigma"]
    rng = np.random.default_rng(5)
    x = rng.normal(500, 20, (1, 32, 32, 1)).astype(np.float32)
    sigma = np.sqrt(x).astype(np.float32)
    np.testing.assert_allclose(model([3 * x + 100, 3 * sigma]), 3 * np.asarray(model([x, sigma])) + 100, rtol=1e-4)
    assert np.abs(np.asarray(model([x, sigma])) - np.asarray(model([x, 2 * sigma]))).max() > 1e-3
    np.testing.assert_allclose(NAFNet(channels=1, normalization="background", noise_map=True, **SMALL)([x, sigma]),
                               x, rtol=1e-6)  # a new model is still the identity


def test_a_new_model_is_exactly_the_identity():
    x = np.random.default_rng(1).random((2, 19, 23, 3)).astype(np.float32)
    np.testing.assert_array_equal(NAFNet(channels=3, **SMALL)(x), x)
    random_head = NAFNet(channels=3, head_initializer="glorot_uniform", **SMALL)
    assert np.abs(np.asarray(random_head(x)) - x).max() > 1e-3


def test_background_normalisation_makes_it_equivariant_to_flux_units():
    model = _randomise(NAFNet(channels=1, normalization="background", **SMALL), seed=3)
    x = np.random.default_rng(2).normal(500, 20, (1, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(model(3 * x + 100), 3 * np.asarray(model(x)) + 100, rtol=1e-4)


def test_bfloat16_body_keeps_the_data_path_in_float32():
    model = NAFNet(channels=3, dtype="mixed_bfloat16", **SMALL)
    x = np.random.default_rng(0).random((1, 16, 16, 3)).astype(np.float32)
    out = model(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_array_equal(out, x)  # zero head: bfloat16 rounding never reaches the data
    assert model.get_layer("stem").compute_dtype == "bfloat16"


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=3), "width"),
    (dict(enc_blocks=[1, 1], dec_blocks=[1]), "same length"),
    (dict(enc_blocks=[1, -1], dec_blocks=[1, 1]), "enc_blocks"),
    (dict(middle_blocks=-1), "middle_blocks"),
    (dict(normalization="sky"), "normalization"),
    (dict(noise_map=1), "noise_map"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NAFNet(channels=3, **kwargs)


def _layer_norm(x, g, b, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


def _conv1x1(x, kernel, bias):
    return x @ kernel[0, 0] + bias


def _depthwise3x3(x, kernel, bias):
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    for dy in range(3):
        for dx in range(3):
            out += padded[:, dy:dy + h, dx:dx + w, :] * kernel[dy, dx, :, 0]
    return out + bias


def test_nafblock_matches_a_numpy_reference_with_random_weights():
    block = NAFBlock(6)
    x = np.random.default_rng(4).normal(size=(2, 7, 9, 6)).astype(np.float32)
    block(x)
    rng = np.random.default_rng(5)
    for w in block.weights:
        w.assign(rng.normal(0, 0.5, w.shape).astype(np.float32))
    v = {w.path.split("/", 1)[1]: np.asarray(w) for w in block.weights}

    h = _conv1x1(_layer_norm(x, v["norm1/gamma"], v["norm1/beta"]), v["expand1/kernel"], v["expand1/bias"])
    h = _depthwise3x3(h, v["depthwise/kernel"], v["depthwise/bias"])
    h = h[..., :6] * h[..., 6:]
    pooled = h.mean(axis=(1, 2), keepdims=True)
    h = h * _conv1x1(pooled, v["attention/conv/kernel"], v["attention/conv/bias"])
    y = x + _conv1x1(h, v["project1/kernel"], v["project1/bias"]) * v["beta"]
    h = _conv1x1(_layer_norm(y, v["norm2/gamma"], v["norm2/beta"]), v["expand2/kernel"], v["expand2/bias"])
    z = y + _conv1x1(h[..., :6] * h[..., 6:], v["project2/kernel"], v["project2/bias"]) * v["gamma"]
    np.testing.assert_allclose(block(x), z, rtol=1e-4, atol=1e-4)


def test_simple_gate_and_channel_attention_shapes():
    x = np.random.default_rng(0).random((1, 5, 7, 8)).astype(np.float32)
    gated = SimpleGate()(x)
    np.testing.assert_allclose(gated, x[..., :4] * x[..., 4:], rtol=1e-6)
    assert ChannelAttention(8)(x).shape == x.shape
    with pytest.raises(ValueError, match="channels"):
        ChannelAttention(0)


def test_onnx_export_matches_keras_and_uses_only_operators_tensorrt_imports(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from astrotf.export import export_onnx

    model = _randomise(NAFNet(channels=3, **SMALL), seed=6)
    export_onnx(model, tmp_path / "m.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert not ops & {"Compress", "ReverseSequence", "NonZero", "Unique", "Mod"}, ops
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 32, 32, 3), (2, 21, 35, 3)]:
        x = np.random.default_rng(7).random(shape).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"image": x})[0], model(x), rtol=1e-4, atol=1e-4)
