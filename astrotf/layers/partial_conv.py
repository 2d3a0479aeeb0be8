"""Partial convolution (Liu et al. 2018), the encoder layer of Self2Self (TDR, Methods).

A partial convolution sees only the valid (mask = 1) pixels of its window and
renormalises by the window's coverage, so dropped pixels have no influence on the
output, whatever value they hold::

    out = (W * (x . m)) * sum(1) / sum(m) + b     where sum(m) > 0
    out = 0                                       where the window holds no valid pixel
    m'  = 1 where sum(m) > 0, else 0              (the updated mask)

``sum(1)`` is the window size (kernel area times the mask's channels), ``sum(m)`` the
number of valid entries in the window. Zero padding counts as invalid, so frame borders
are renormalised too.

References
----------
Liu, G. et al. Image inpainting for irregular holes using partial convolutions.
ECCV 2018 (and NVIDIA's reference implementation, "multi-channel" variant).
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="astrotf")
class PartialConv2D(layers.Layer):
    """2-D partial convolution with "same" padding; returns ``(output, updated_mask)``.

    Parameters
    ----------
    filters : int
        Output channels.
    kernel_size : int
        Square kernel size (odd).
    strides : int
        Stride in both directions.
    use_bias : bool
        Add a bias where the window holds at least one valid pixel.
    kernel_initializer, bias_initializer : str or initializer
        As for :class:`keras.layers.Conv2D`.

    Call arguments
    --------------
    inputs : tuple (x, mask)
        ``x`` (B, H, W, C_in); ``mask`` (B, H, W, 1) or (B, H, W, C_in), 1 = valid,
        0 = dropped.

    Returns
    -------
    (output, mask) : tuple of tensors
        ``output`` (B, H', W', filters), zero where no valid pixel was seen; ``mask``
        (B, H', W', 1), the updated mask (1 where the window held a valid pixel).
    """

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 1, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(filters, int) and filters >= 1):
            msg = f"`filters` must be a positive integer. Received: filters={filters!r}"
            raise ValueError(msg)
        if not (isinstance(kernel_size, int) and kernel_size >= 1 and kernel_size % 2 == 1):
            msg = f"`kernel_size` must be a positive odd integer. Received: kernel_size={kernel_size!r}"
            raise ValueError(msg)
        if not (isinstance(strides, int) and strides >= 1):
            msg = f"`strides` must be a positive integer. Received: strides={strides!r}"
            raise ValueError(msg)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        x_shape, mask_shape = input_shape
        channels = x_shape[-1]
        if channels is None:
            msg = f"The channel dimension of the input must be known. Received: input_shape={input_shape}"
            raise ValueError(msg)
        if mask_shape[-1] not in (1, channels):
            msg = (f"The mask must have 1 channel or as many as the input ({channels}). "
                   f"Received: mask_shape={mask_shape}")
            raise ValueError(msg)
        k = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(k, k, channels, self.filters),
                                      initializer=self.kernel_initializer)
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
                     if self.use_bias else None)
        self.mask_channels = int(mask_shape[-1])
        self.window = float(k * k * self.mask_channels)

    def call(self, inputs):
        x, mask = inputs
        mask = ops.cast(mask, self.compute_dtype)
        raw = ops.conv(x * mask, self.kernel, strides=self.strides, padding="same")
        ones = ops.ones((self.kernel_size, self.kernel_size, self.mask_channels, 1), self.compute_dtype)
        coverage = ops.conv(mask, ones, strides=self.strides, padding="same")
        # coverage counts valid entries: an integer, exact in float32 for any realistic window
        updated = ops.cast(coverage > 0.5, self.compute_dtype)
        ratio = self.window / ops.maximum(coverage, 1.0) * updated
        out = raw * ratio
        if self.bias is not None:
            out = (out + self.bias) * updated
        return out, updated

    def compute_output_shape(self, input_shape):
        x_shape, _ = input_shape

        def down(n):
            return None if n is None else -(-n // self.strides)

        spatial = (down(x_shape[1]), down(x_shape[2]))
        return (x_shape[0], *spatial, self.filters), (x_shape[0], *spatial, 1)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
