"""PartialConv2D against a NumPy reference (Liu et al. 2018), masks ignored, serialisation, export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from astrotf.layers.partial_conv import PartialConv2D


def partial_conv_reference(x, mask, kernel, bias, strides):
    """Direct loops: "same" padding as TensorFlow pads it, window renormalisation, bias where covered."""
    n, h, w, c_in = x.shape
    k = kernel.shape[0]
    mask = np.broadcast_to(mask, x.shape[:3] + (mask.shape[-1],)).astype(np.float64)
    out_h, out_w = -(-h // strides), -(-w // strides)
    pad_h = max((out_h - 1) * strides + k - h, 0)
    pad_w = max((out_w - 1) * strides + k - w, 0)
    xp = np.pad(x * mask if mask.shape[-1] == c_in else x * mask[..., :1],
                ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    mp = np.pad(mask, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    window = k * k * mask.shape[-1]
    out = np.zeros((n, out_h, out_w, kernel.shape[-1]))
    new_mask = np.zeros((n, out_h, out_w, 1))
    for b in range(n):
        for i in range(out_h):
            for j in range(out_w):
                patch = xp[b, i * strides:i * strides + k, j * strides:j * strides + k]
                covered = mp[b, i * strides:i * strides + k, j * strides:j * strides + k].sum()
                if covered > 0:
                    raw = np.tensordot(patch, kernel, axes=([0, 1, 2], [0, 1, 2]))
                    out[b, i, j] = raw * window / covered + bias
                    new_mask[b, i, j] = 1.0
    return out, new_mask


@pytest.mark.parametrize("strides,mask_channels,kernel_size", [(1, 1, 3), (2, 1, 3), (1, 3, 3), (2, 3, 5)])
def test_matches_numpy_reference(strides, mask_channels, kernel_size):
    rng = np.random.default_rng(strides * 10 + mask_channels)
    x = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    mask = (rng.random((2, 9, 11, mask_channels)) < 0.4).astype(np.float32)
    mask[0, :5, :6] = 0.0  # a hole wider than the kernel: output and mask must be 0 there
    layer = PartialConv2D(4, kernel_size, strides=strides)
    layer.build(((None, None, None, 3), (None, None, None, mask_channels)))
    kernel = rng.normal(size=(kernel_size, kernel_size, 3, 4)).astype(np.float32)
    bias = rng.normal(size=(4,)).astype(np.float32)
    layer.set_weights([kernel, bias])
    out, new_mask = layer((x, mask))
    ref_out, ref_mask = partial_conv_reference(x.astype(np.float64), mask, kernel, bias, strides)
    np.testing.assert_array_equal(new_mask, ref_mask)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-4)
    assert (ref_mask == 0).any()  # the hole is really exercised


def test_dropped_pixels_have_no_influence():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 16, 16, 2)).astype(np.float32)
    mask = (rng.random((1, 16, 16, 1)) < 0.7).astype(np.float32)
    layer = PartialConv2D(3)
    changed = np.where(mask == 0, rng.normal(size=x.shape) * 1e3, x).astype(np.float32)
    np.testing.assert_allclose(layer((x, mask))[0], layer((changed, mask))[0], atol=1e-5)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.reduce_sum(layer((xt, mask))[0] ** 2)
    grad = tape.gradient(y, xt).numpy()
    assert np.all(grad[np.broadcast_to(mask == 0, grad.shape)] == 0)
    assert np.any(grad[np.broadcast_to(mask == 1, grad.shape)] != 0)


def test_full_mask_is_a_plain_convolution():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 12, 12, 2)).astype(np.float32)
    layer = PartialConv2D(3)
    conv = keras.layers.Conv2D(3, 3, padding="same")
    conv.build(x.shape)
    layer.build(((None, None, None, 2), (None, None, None, 1)))
    layer.set_weights(conv.get_weights())
    out, _ = layer((x, np.ones((1, 12, 12, 1), np.float32)))
    # inside (away from the zero-padded border) nothing is renormalised
    np.testing.assert_allclose(out[:, 1:-1, 1:-1], conv(x)[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(filters=0), "filters=0"), (dict(filters=2, kernel_size=2), "kernel_size=2"),
    (dict(filters=2, strides=0), "strides=0"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PartialConv2D(**kwargs)


def test_config_round_trip_and_saved_model(tmp_path):
    image = keras.Input((None, None, 2))
    mask = keras.Input((None, None, 1))
    out, new_mask = PartialConv2D(3, strides=2, name="pc")([image, mask])
    model = keras.Model([image, mask], [out, new_mask])
    config = model.get_layer("pc").get_config()
    assert PartialConv2D.from_config(config).get_config() == config
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 13, 9, 2)).astype(np.float32)
    m = (rng.random((2, 13, 9, 1)) < 0.5).astype(np.float32)
    np.testing.assert_allclose(restored([x, m])[0], model([x, m])[0], atol=1e-6)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=lambda a, b: model([a, b])[0], input_signature=[
        tf.TensorSpec([None, None, None, 2], tf.float32), tf.TensorSpec([None, None, None, 1], tf.float32)])
    archive.write_out(str(tmp_path / "sm"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "sm"))
    for batch, h, w in [(1, 13, 9), (3, 7, 15)]:
        x = rng.normal(size=(batch, h, w, 2)).astype(np.float32)
        m = (rng.random((batch, h, w, 1)) < 0.5).astype(np.float32)
        np.testing.assert_allclose(served.serve(x, m), model([x, m])[0], atol=1e-5)
