"""Building blocks of the enhanced Pix2Pix (Xu, §3): instance normalisation, self-attention over
the positions of a feature map, and the residual block with layer normalisation of the bottleneck.

Written with ``keras.ops``; exported to ONNX they are ReduceMean, Sub, Mul, Sqrt, Div, MatMul,
Softmax, Reshape and Transpose, which TensorRT imports.
"""

from __future__ import annotations

import keras
from keras import layers, ops


def _check_positive(name: str, value) -> None:
    if not (isinstance(value, int) and value >= 1):
        msg = f"`{name}` must be a positive integer. Received: {name}={value!r}"
        raise ValueError(msg)


@keras.saving.register_keras_serializable(package="astrotf")
class InstanceNormalization(layers.Layer):
    """Per-sample, per-channel normalisation over H × W with a learnt scale and offset (Xu §3).

    ``y = gamma * (x - mean_HW) / sqrt(var_HW + epsilon) + beta``. Unlike batch normalisation
    it never couples the tiles of a batch; like the attention it sees the whole tile, so a model
    using it is tiled at its training tile size.

    Parameters
    ----------
    epsilon : float
        Added to the variance.
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        if not epsilon > 0:
            msg = f"`epsilon` must be > 0. Received: epsilon={epsilon!r}"
            raise ValueError(msg)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        variance = ops.mean(ops.square(x - mean), axis=(1, 2), keepdims=True)
        scale = ops.cast(self.gamma, x.dtype) / ops.sqrt(variance + self.epsilon)
        return (x - mean) * scale + ops.cast(self.beta, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="astrotf")
class SelfAttention2D(layers.Layer):
    """Self-attention over the H·W positions of a feature map (SAGAN, Zhang et al. 2019; Xu §3).

    ``y = x + gamma * softmax(q kᵀ / sqrt(d)) v`` with ``q, k`` 1×1 convolutions to
    ``key_channels`` and ``v`` a 1×1 convolution to the input's channels. ``gamma`` starts at
    zero, so a new layer is the identity. The positions are read from the tensor's shape at run
    time: any H × W, the attention matrix being (H·W)² per sample. Logits and softmax are
    computed in float32 under a mixed policy.

    Parameters
    ----------
    key_channels : int
        Channels of the queries and keys (SAGAN: a eighth of the input's).
    """

    def __init__(self, key_channels: int, **kwargs):
        super().__init__(**kwargs)
        _check_positive("key_channels", key_channels)
        self.key_channels = key_channels
        self.query = layers.Conv2D(key_channels, 1, dtype=self.dtype_policy, name="query")
        self.key = layers.Conv2D(key_channels, 1, dtype=self.dtype_policy, name="key")
        self.value = None

    def build(self, input_shape):
        channels = input_shape[-1]
        self.value = layers.Conv2D(channels, 1, dtype=self.dtype_policy, name="value")
        for conv in (self.query, self.key, self.value):
            conv.build(input_shape)
        self.gamma = self.add_weight(shape=(), initializer="zeros", name="gamma")

    def call(self, x):
        shape = ops.shape(x)
        positions = shape[1] * shape[2]

        def flat(t, channels):
            return ops.reshape(t, (shape[0], positions, channels))

        q = ops.cast(flat(self.query(x), self.key_channels), "float32")
        k = ops.cast(flat(self.key(x), self.key_channels), "float32")
        v = flat(self.value(x), shape[3])
        logits = ops.matmul(q, ops.transpose(k, (0, 2, 1))) / float(self.key_channels) ** 0.5
        weights = ops.cast(ops.softmax(logits, axis=-1), v.dtype)
        attended = ops.reshape(ops.matmul(weights, v), shape)
        return x + ops.cast(self.gamma, x.dtype) * attended

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "key_channels": self.key_channels}


@keras.saving.register_keras_serializable(package="astrotf")
class LayerNormResidualBlock(layers.Layer):
    """Pre-norm residual block of the bottleneck (Xu §3): ``y = x + conv(act(LN(conv(act(LN(x))))))``.

    Layer normalisation runs over the channels of each position, so the block does not depend on
    the tile. The second convolution starts at zero: a new block is the identity.

    Parameters
    ----------
    activation : str
        Keras activation name.
    """

    def __init__(self, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.activation = activation
        policy = self.dtype_policy
        self.norm1 = layers.LayerNormalization(epsilon=1e-5, dtype=policy, name="norm1")
        self.norm2 = layers.LayerNormalization(epsilon=1e-5, dtype=policy, name="norm2")
        self.act = layers.Activation(activation, dtype=policy)
        self.conv1 = self.conv2 = None

    def build(self, input_shape):
        channels = input_shape[-1]
        policy = self.dtype_policy
        self.conv1 = layers.Conv2D(channels, 3, padding="same", dtype=policy, name="conv1")
        self.conv2 = layers.Conv2D(channels, 3, padding="same", kernel_initializer="zeros", dtype=policy,
                                   name="conv2")
        for layer in (self.norm1, self.conv1, self.norm2, self.conv2):
            layer.build(input_shape)

    def call(self, x):
        h = self.conv1(self.act(self.norm1(x)))
        return x + self.conv2(self.act(self.norm2(h)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}
