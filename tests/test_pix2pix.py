"""Enhanced Pix2Pix (Xu §3): the generator's model contract, the discriminator's geometry, the blocks and
the GAN losses against NumPy, and one alternating step that changes both networks."""

import keras
import numpy as np
import pytest

from astrotf.config.gan import patch_receptive_field
from astrotf.layers.pix2pix_blocks import InstanceNormalization, LayerNormResidualBlock, SelfAttention2D
from astrotf.losses import (
    AstroPicsLoss,
    Pix2PixLoss,
    discriminator_loss,
    generator_adversarial_loss,
    l1_loss,
    star_weighted_l1,
)
from astrotf.models.patchgan import PatchGANDiscriminator
from astrotf.models.pix2pix import Pix2PixGenerator
from astrotf.models.registry import build_model

SMALL = dict(depth=2, base_filters=4, max_filters=8)
ODD_SHAPES = [(2, 32, 32), (1, 37, 53), (1, 21, 35)]


def _randomise(model, seed=0, sd=0.3):
    """Every weight random, the zero-initialised head and attention scale included."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, sd, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


# ----------------------------------------------------------------------------- generator
@pytest.mark.parametrize("kwargs", [dict(channels=3, **SMALL),
                                    dict(channels=1, normalization="background", **SMALL),
                                    dict(channels=3, residual_blocks=0, attention=False, **SMALL)])
def test_generator_contract(kwargs, tmp_path):
    model = _randomise(build_model("pix2pix", **kwargs))
    scale = 1000.0 if kwargs.get("normalization") == "background" else 1.0
    rng = np.random.default_rng(0)
    for shape in ODD_SHAPES:
        x = (rng.random(shape + (kwargs["channels"],)) * scale).astype(np.float32)
        assert model(x).shape == x.shape
    config = model.get_config()
    assert {k: config[k] for k in kwargs} == kwargs
    assert Pix2PixGenerator.from_config(config).count_params() == model.count_params()
    model.save(tmp_path / "g.keras")
    restored = keras.saving.load_model(tmp_path / "g.keras")
    x = (rng.random((2, 24, 40, kwargs["channels"])) * scale).astype(np.float32)
    np.testing.assert_allclose(restored(x), model(x), rtol=1e-5, atol=1e-5 * scale)


def test_a_new_generator_is_exactly_the_identity_at_any_size():
    rng = np.random.default_rng(1)
    for shape in ODD_SHAPES + [(1, 64, 48)]:
        x = rng.random(shape + (3,)).astype(np.float32)
        np.testing.assert_array_equal(Pix2PixGenerator(channels=3, **SMALL)(x), x)
    random_head = Pix2PixGenerator(channels=3, head_initializer="glorot_uniform", **SMALL)
    assert np.abs(np.asarray(random_head(x)) - x).max() > 1e-3


def test_bfloat16_generator_keeps_the_data_path_in_float32():
    model = Pix2PixGenerator(channels=3, dtype="mixed_bfloat16", **SMALL)
    x = np.random.default_rng(0).random((1, 20, 28, 3)).astype(np.float32)
    out = model(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_array_equal(out, x)
    assert model.get_layer("down0").compute_dtype == "bfloat16"
    assert model.get_layer("head").compute_dtype == "float32"


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=7), "depth"), (dict(base_filters=0), "base_filters"), (dict(residual_blocks=-1), "residual_blocks"),
    (dict(attention=1), "attention"), (dict(normalization="sky"), "normalization"),
])
def test_bad_generator_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Pix2PixGenerator(channels=3, **kwargs)


def test_onnx_export_matches_keras_and_uses_only_operators_tensorrt_imports(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from astrotf.export import export_onnx

    model = _randomise(Pix2PixGenerator(channels=3, **SMALL), seed=6)
    export_onnx(model, tmp_path / "g.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "g.onnx")).graph.node}
    assert not ops & {"Compress", "ReverseSequence", "NonZero", "Unique", "Mod"}, ops
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 32, 32, 3), (2, 21, 35, 3)]:
        x = np.random.default_rng(7).random(shape).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"image": x})[0], model(x), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- discriminator
@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_discriminator_gives_one_logit_per_patch_at_odd_sizes(n_layers):
    model = PatchGANDiscriminator(channels=3, filters=4, n_layers=n_layers)
    rng = np.random.default_rng(2)
    for n, h, w in ODD_SHAPES:
        x = rng.random((n, h, w, 3)).astype(np.float32)
        logits = model([x, x])
        assert logits.shape == (n, -(-h // 2**n_layers), -(-w // 2**n_layers), 1)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"


@pytest.mark.parametrize("n_layers", [1, 2])
def test_discriminator_receptive_field_is_the_one_the_recipe_checks(n_layers):
    """The span of input rows one logit's convolutions reach (instance normalisation, which sees the
    whole tile, left out) is :func:`patch_receptive_field`."""
    import tensorflow as tf

    model = _randomise(PatchGANDiscriminator(channels=1, filters=2, n_layers=n_layers), seed=3)
    convs = [model.get_layer(f"conv{i}") for i in range(n_layers + 1)] + [model.get_layer("logits")]
    x = tf.Variable(np.random.default_rng(3).random((1, 96, 96, 2)).astype(np.float32))
    with tf.GradientTape() as tape:
        h = x
        for conv in convs:
            h = conv(h)
        picked = h[0, h.shape[1] // 2, h.shape[2] // 2, 0]
    rows = np.flatnonzero(np.abs(np.asarray(tape.gradient(picked, x)))[0].sum(axis=(1, 2)) > 0)
    assert rows.max() - rows.min() + 1 == patch_receptive_field(n_layers)


def test_bad_discriminator_arguments_are_named():
    with pytest.raises(ValueError, match="n_layers"):
        PatchGANDiscriminator(channels=3, n_layers=0)


# ----------------------------------------------------------------------------- blocks against NumPy
def test_instance_normalization_matches_numpy():
    layer = InstanceNormalization()
    x = np.random.default_rng(4).normal(3, 2, (2, 5, 7, 3)).astype(np.float32)
    layer(x)
    gamma, beta = np.array([0.5, 2.0, -1.0], np.float32), np.array([0.1, 0.0, 3.0], np.float32)
    layer.set_weights([gamma, beta])
    mean, var = x.mean(axis=(1, 2), keepdims=True), x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(layer(x), (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 3, 5, 8), (1, 7, 4, 8)])
def test_self_attention_matches_numpy_at_any_size(shape):
    layer = SelfAttention2D(2)
    x = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(layer(x), x)  # gamma starts at zero
    _randomise(layer, seed=6, sd=0.5)
    v = {w.path.split("/", 1)[1]: np.asarray(w) for w in layer.weights}
    n, h, w, c = shape

    def conv(name):
        return (x.reshape(n, h * w, c) @ v[f"{name}/kernel"][0, 0]) + v[f"{name}/bias"]

    logits = conv("query") @ conv("key").transpose(0, 2, 1) / np.sqrt(2)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = x + v["gamma"] * (weights @ conv("value")).reshape(shape)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-4, atol=1e-4)


def test_layer_norm_residual_block_starts_as_the_identity():
    x = np.random.default_rng(7).normal(size=(1, 6, 9, 4)).astype(np.float32)
    np.testing.assert_array_equal(LayerNormResidualBlock()(x), x)


# ----------------------------------------------------------------------------- losses against NumPy
def _logits(seed, shape=(3, 4, 5, 1)):
    return np.random.default_rng(seed).normal(0, 3, shape).astype(np.float32)


def test_l1_loss_matches_numpy():
    rng = np.random.default_rng(8)
    y, p = rng.random((3, 6, 7, 3)).astype(np.float32), rng.random((3, 6, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(l1_loss(y, p), np.abs(p - y).mean(axis=(1, 2, 3)), rtol=1e-6)


def test_discriminator_loss_is_halved_binary_cross_entropy():
    real, fake = _logits(9), _logits(10)
    expected = 0.5 * (-np.log(_sigmoid(real)).mean(axis=(1, 2, 3)) - np.log(1 - _sigmoid(fake)).mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(discriminator_loss(real, fake), expected, rtol=1e-5)


def test_generator_adversarial_loss_is_the_non_saturating_cross_entropy():
    fake = _logits(11)
    np.testing.assert_allclose(generator_adversarial_loss(fake), -np.log(_sigmoid(fake)).mean(axis=(1, 2, 3)),
                               rtol=1e-5)
    assert np.isfinite(np.asarray(generator_adversarial_loss(np.full((1, 2, 2, 1), -200.0, np.float32)))).all()


def test_generator_objective_is_adversarial_plus_lambda_times_reconstruction():
    rng = np.random.default_rng(12)
    y, p = rng.random((2, 16, 16, 3)).astype(np.float32), rng.random((2, 16, 16, 3)).astype(np.float32)
    mask, fake = rng.random((2, 16, 16, 1)).astype(np.float32), _logits(13, (2, 4, 4, 1))
    terms = Pix2PixLoss(50.0).generator_terms(y, p, mask, fake)
    adversarial = -np.log(_sigmoid(fake)).mean()
    np.testing.assert_allclose(terms["loss"], np.abs(p - y).mean(), rtol=1e-5)
    np.testing.assert_allclose(terms["generator"], adversarial + 50.0 * np.abs(p - y).mean(), rtol=1e-5)
    composite = Pix2PixLoss(50.0, AstroPicsLoss()).generator_terms(y, p, mask, fake)
    np.testing.assert_allclose(composite["loss"], AstroPicsLoss()(y, p, mask), rtol=1e-5)
    np.testing.assert_allclose(composite["l1_weighted"], np.mean(star_weighted_l1(y, p, mask)), rtol=1e-5)
    with pytest.raises(ValueError, match="l1_weight"):
        Pix2PixLoss(0.0)


# ----------------------------------------------------------------------------- one alternating step
def _tiny_gan(l1_weight=100.0):
    from astrotf.train.gan import ConditionalGAN

    keras.utils.set_random_seed(0)
    generator = Pix2PixGenerator(channels=3, **SMALL)
    discriminator = PatchGANDiscriminator(channels=3, filters=4, n_layers=1)
    gan = ConditionalGAN(generator, discriminator)
    gan.compile(g_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5),
                d_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5), loss=Pix2PixLoss(l1_weight))
    return gan


def _batch(seed=14, size=32):
    rng = np.random.default_rng(seed)
    clean = rng.random((2, size, size, 3)).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)
    return noisy, clean, np.zeros((2, size, size, 1), np.float32)


def test_one_alternating_step_changes_both_networks():
    gan = _tiny_gan()
    g_before = [np.array(w) for w in gan.generator.get_weights()]
    d_before = [np.array(w) for w in gan.discriminator.get_weights()]
    terms = gan.alternating_step(*_batch())
    assert {"loss", "l1", "adversarial", "generator", "discriminator", "d_real", "d_fake"} <= set(terms)
    assert all(np.isfinite(float(v)) for v in terms.values())
    assert int(gan.g_optimizer.iterations) == int(gan.d_optimizer.iterations) == 1
    for before, network in ((g_before, gan.generator), (d_before, gan.discriminator)):
        assert any(not np.array_equal(b, a) for b, a in zip(before, network.get_weights())), network.name
    assert not np.array_equal(np.asarray(gan.generator(_batch()[0])), _batch()[0])  # no longer the identity


def test_the_gan_trains_with_keras_fit_and_reports_its_trackers():
    import tensorflow as tf

    gan = _tiny_gan()
    data = tf.data.Dataset.from_tensors(_batch()).repeat(2)
    history = gan.fit(data, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "generator", "adversarial", "discriminator"}
    assert int(gan.g_optimizer.iterations) == 2
