"""Building blocks of the ResUNet (AstroPics §2.4): residual blocks and size adapters.

Everything is written with ``keras.ops`` so the layers run on any Keras backend
(TensorFlow for training and export, JAX for timing on a lent GPU).
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="astrotf")
class ResidualBlock(layers.Layer):
    """Two 3×3 convolutions with an identity (or 1×1 projected) shortcut.

    ``y = act(conv(act(conv(x))) + shortcut(x))``. No batch normalisation: batch
    statistics couple the tiles of a batch and break the exact identity a denoiser
    must be able to learn on clean data.

    Parameters
    ----------
    filters : int
        Output channels.
    activation : str
        Keras activation name.
    """

    def __init__(self, filters: int, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        if filters < 1:
            msg = f"`filters` must be a positive integer. Received: filters={filters}"
            raise ValueError(msg)
        self.filters = filters
        self.activation = activation
        self.conv1 = layers.Conv2D(filters, 3, padding="same", dtype=self.dtype_policy, name="conv1")
        self.conv2 = layers.Conv2D(filters, 3, padding="same", dtype=self.dtype_policy, name="conv2")
        self.act = layers.Activation(activation, dtype=self.dtype_policy)
        self.project = None

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            self.project = layers.Conv2D(
                self.filters, 1, padding="same", dtype=self.dtype_policy, name="project"
            )
            self.project.build(input_shape)
        self.conv1.build(input_shape)
        self.conv2.build(input_shape[:-1] + (self.filters,))

    def call(self, x):
        shortcut = x if self.project is None else self.project(x)
        y = self.act(self.conv1(x))
        y = self.conv2(y)
        return self.act(y + shortcut)

    def compute_output_shape(self, input_shape):
        return input_shape[:-1] + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "activation": self.activation}


@keras.saving.register_keras_serializable(package="astrotf")
class PadToMultiple(layers.Layer):
    """Pad height and width symmetrically at the bottom/right up to a multiple of ``multiple``.

    Lets a U-Net with ``depth`` poolings take any H × W (odd frames, tiles of any
    size); :class:`CropLike` cuts the output back to the input's size.
    """

    def __init__(self, multiple: int, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, x):
        shape = ops.shape(x)
        # (m - n % m) % m rather than (-n) % m: only non-negative operands, so the pad is
        # right under C-style remainders too (ONNX Mod as converted by tf2onnx).
        height, width = shape[1], shape[2]
        pad_h = (self.multiple - height % self.multiple) % self.multiple
        pad_w = (self.multiple - width % self.multiple) % self.multiple
        # Symmetric padding (the edge row repeated, then the rows above it; works on sides down to
        # the pad itself) as a gather of reversed row/column indices: exported to ONNX it is Range +
        # Gather + Concat, which TensorRT parses. ops.pad(mode="symmetric") becomes Pad + Compress
        # there, and Compress has no TensorRT importer.
        x = ops.concatenate([x, ops.take(x, ops.arange(height - 1, height - 1 - pad_h, -1), axis=1)], axis=1)
        return ops.concatenate([x, ops.take(x, ops.arange(width - 1, width - 1 - pad_w, -1), axis=2)], axis=2)

    def compute_output_shape(self, input_shape):
        def up(n):
            return None if n is None else -(-n // self.multiple) * self.multiple

        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="astrotf")
class CropLike(layers.Layer):
    """Crop ``x`` to the height and width of ``reference`` (top-left aligned)."""

    def call(self, x, reference):
        shape = ops.shape(reference)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package="astrotf")
class BilinearUpsample2x(layers.Layer):
    """2× bilinear upsampling (half-pixel centres, edges clamped) for any, even dynamic, H × W.

    Gives the same values as ``UpSampling2D(2, interpolation="bilinear")``, whose
    TensorFlow implementation cannot be traced with unknown height and width (as a
    SavedModel signature for tiles of any size needs): each output pair is
    ``0.75 * x[i] + 0.25 * x[i -/+ 1]``, interleaved with a reshape.
    """

    @staticmethod
    def _up(x, axis):
        first = ops.take(x, ops.convert_to_tensor([0]), axis=axis)
        n = ops.shape(x)[axis]
        last = ops.take(x, ops.reshape(n - 1, (1,)), axis=axis)
        head = ops.take(x, ops.arange(0, n - 1), axis=axis)
        tail = ops.take(x, ops.arange(1, n), axis=axis)
        prev = ops.concatenate([first, head], axis=axis)
        nxt = ops.concatenate([tail, last], axis=axis)
        even = 0.75 * x + 0.25 * prev
        odd = 0.75 * x + 0.25 * nxt
        stacked = ops.stack([even, odd], axis=axis + 1)
        shape = ops.shape(x)
        new_shape = [shape[0], shape[1], shape[2], shape[3]]
        new_shape[axis] = 2 * n
        return ops.reshape(stacked, new_shape)

    def call(self, x):
        return self._up(self._up(x, 1), 2)

    def compute_output_shape(self, input_shape):
        def up(n):
            return None if n is None else 2 * n

        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])


class _PixelBlocks(layers.Layer):
    """Base of the pixel (un)shuffle layers: a ``block`` size, validated and serialised."""

    def __init__(self, block: int = 2, **kwargs):
        super().__init__(**kwargs)
        if block < 1:
            msg = f"`block` must be a positive integer. Received: block={block}"
            raise ValueError(msg)
        self.block = int(block)

    def get_config(self):
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package="astrotf")
class SpaceToDepth(_PixelBlocks):
    """Fold each ``block × block`` patch of pixels into channels (pixel unshuffle).

    ``(B, H, W, C) -> (B, H / block, W / block, block² · C)``, lossless and exactly
    undone by :class:`DepthToSpace`. Used as the front end of a fast denoiser
    (FFDNet, Zhang et al. 2018): the network then works at half resolution, where a
    3×3 convolution costs a quarter as much per input pixel and sees twice as far.
    H and W must be multiples of ``block`` (see :class:`PadToMultiple`).
    """

    def call(self, x):
        b = self.block
        shape = ops.shape(x)
        x = ops.reshape(x, [shape[0], shape[1] // b, b, shape[2] // b, b, shape[3]])
        x = ops.transpose(x, [0, 1, 3, 2, 4, 5])
        return ops.reshape(x, [shape[0], shape[1] // b, shape[2] // b, b * b * shape[3]])

    def compute_output_shape(self, input_shape):
        def down(n):
            return None if n is None else n // self.block

        channels = None if input_shape[3] is None else input_shape[3] * self.block**2
        return (input_shape[0], down(input_shape[1]), down(input_shape[2]), channels)


@keras.saving.register_keras_serializable(package="astrotf")
class DepthToSpace(_PixelBlocks):
    """Unfold channels into ``block × block`` pixel patches: the inverse of :class:`SpaceToDepth`."""

    def call(self, x):
        b = self.block
        shape = ops.shape(x)
        c = shape[3] // (b * b)
        x = ops.reshape(x, [shape[0], shape[1], shape[2], b, b, c])
        x = ops.transpose(x, [0, 1, 3, 2, 4, 5])
        return ops.reshape(x, [shape[0], shape[1] * b, shape[2] * b, c])

    def compute_output_shape(self, input_shape):
        def up(n):
            return None if n is None else n * self.block

        channels = None if input_shape[3] is None else input_shape[3] // self.block**2
        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), channels)
