"""Building blocks of NAFNet (Chen et al. 2022, "Simple Baselines for Image Restoration").

A NAFNet block has no non-linear activation: the gate :class:`SimpleGate` (one half of
the channels times the other) supplies the non-linearity, and :class:`ChannelAttention`
(a global average, one 1×1 convolution, a product) is the simplified channel attention.
Both sub-blocks are residual with a learnt per-channel scale that starts at zero, so a
freshly built block is the identity.

Everything is written with ``keras.ops``; the operators are LayerNorm, 1×1 and depthwise
3×3 convolutions, a mean over H × W and products, which ONNX and TensorRT import.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="astrotf")
class SimpleGate(layers.Layer):
    """Split the channels in two halves and return their product: ``x[..., :c] * x[..., c:]``."""

    def call(self, x):
        first, second = ops.split(x, 2, axis=-1)
        return first * second

    def compute_output_shape(self, input_shape):
        return input_shape[:-1] + (input_shape[-1] // 2,)


@keras.saving.register_keras_serializable(package="astrotf")
class ChannelAttention(layers.Layer):
    """Simplified channel attention: ``x * conv1x1(mean_HW(x))``.

    The mean runs over the tile, so the weights depend on what the tile holds; tiled
    inference at the training tile size sees the statistics training saw.

    Parameters
    ----------
    channels : int
        Channels in and out.
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        if channels < 1:
            msg = f"`channels` must be a positive integer. Received: channels={channels}"
            raise ValueError(msg)
        self.channels = channels
        self.conv = layers.Conv2D(channels, 1, dtype=self.dtype_policy, name="conv")

    def build(self, input_shape):
        self.conv.build((input_shape[0], 1, 1, self.channels))

    def call(self, x):
        pooled = ops.mean(x, axis=(1, 2), keepdims=True)
        return x * self.conv(pooled)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="astrotf")
class NAFBlock(layers.Layer):
    """One NAFNet block: a gated depthwise-convolution mixer and a gated feed-forward part.

    ``y = x + β · conv(SCA(gate(dwconv(conv(LN(x))))))`` then
    ``z = y + γ · conv(gate(conv(LN(y))))``, with β and γ per-channel scales initialised
    to zero. No batch normalisation: batch statistics would couple the tiles of a batch.

    Parameters
    ----------
    channels : int
        Channels in and out.
    expand : int
        Channel expansion before each gate (the paper's DW_Expand and FFN_Expand, 2).
    """

    def __init__(self, channels: int, expand: int = 2, **kwargs):
        super().__init__(**kwargs)
        if channels < 1:
            msg = f"`channels` must be a positive integer. Received: channels={channels}"
            raise ValueError(msg)
        if expand < 1:
            msg = f"`expand` must be a positive integer. Received: expand={expand}"
            raise ValueError(msg)
        self.channels = channels
        self.expand = expand
        policy = self.dtype_policy
        wide = channels * expand
        self.norm1 = layers.LayerNormalization(axis=-1, epsilon=1e-6, dtype=policy, name="norm1")
        self.expand1 = layers.Conv2D(wide, 1, dtype=policy, name="expand1")
        self.depthwise = layers.DepthwiseConv2D(3, padding="same", dtype=policy, name="depthwise")
        self.gate = SimpleGate(dtype=policy, name="gate")
        self.attention = ChannelAttention(wide // 2, dtype=policy, name="attention")
        self.project1 = layers.Conv2D(channels, 1, dtype=policy, name="project1")
        self.norm2 = layers.LayerNormalization(axis=-1, epsilon=1e-6, dtype=policy, name="norm2")
        self.expand2 = layers.Conv2D(wide, 1, dtype=policy, name="expand2")
        self.project2 = layers.Conv2D(channels, 1, dtype=policy, name="project2")

    def build(self, input_shape):
        wide_shape = input_shape[:-1] + (self.channels * self.expand,)
        half_shape = input_shape[:-1] + (self.channels * self.expand // 2,)
        self.norm1.build(input_shape)
        self.expand1.build(input_shape)
        self.depthwise.build(wide_shape)
        self.attention.build(half_shape)
        self.project1.build(half_shape)
        self.norm2.build(input_shape)
        self.expand2.build(input_shape)
        self.project2.build(half_shape)
        self.beta = self.add_weight(shape=(self.channels,), initializer="zeros", name="beta")
        self.gamma = self.add_weight(shape=(self.channels,), initializer="zeros", name="gamma")

    def call(self, x):
        h = self.expand1(self.norm1(x))
        h = self.attention(self.gate(self.depthwise(h)))
        y = x + self.project1(h) * ops.cast(self.beta, self.compute_dtype)
        h = self.project2(self.gate(self.expand2(self.norm2(y))))
        return y + h * ops.cast(self.gamma, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "expand": self.expand}
