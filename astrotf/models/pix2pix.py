"""Generator of the enhanced Pix2Pix (Xu, "Denoising astronomical images using an enhanced Pix2Pix
model", §3, Fig. 1): a U-Net of strided 4×4 convolutions with residual blocks after every encoding
step and self-attention in the bottleneck.

Encoder: per level a 4×4 stride-2 convolution (instance normalisation from the second level on,
LeakyReLU 0.2) followed by ``residual_blocks`` :class:`~astrotf.layers.blocks.ResidualBlock`.
Bottleneck: a residual block with layer normalisation and :class:`SelfAttention2D` over the
bottleneck's H·W positions. Decoder: per level the skip of equal resolution concatenated, a 4×4
stride-2 transposed convolution, instance normalisation and ReLU; the last transposed convolution
is the head. The discriminator is :mod:`astrotf.models.patchgan`.

The house contract of :mod:`astrotf.models.resunet` replaces the paper's Tanh output:

* **Global residual in float32.** The head predicts a correction added to the input in float32
  (the paper's Tanh maps to [-1, 1]; a correction has no such bound on linear data, and a Tanh
  output can never be the exact identity a clean tile needs).
* **Starts as the identity.** The head and the attention's ``gamma`` start at zero, so a new
  generator returns its input exactly and the adversarial game starts from "no change".
* **Reversible normalisation** (``normalization="background"``) for linear data.
* **Any H × W**: reflect-padded to a multiple of ``2**depth`` and cropped back. The attention
  runs over however many positions the bottleneck has; with the instance normalisation it makes
  the output depend on the whole tile, so tiled inference uses the training tile (recorded in the
  model's metadata). Tiles should be at least ``2 · 2**depth`` px: a 1×1 deepest level is erased
  by its instance normalisation.

References
----------
Xu, M. "Denoising astronomical images using an enhanced Pix2Pix model", §3 (model structure).
Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks" (U-Net).
Zhang et al. 2019, "Self-Attention Generative Adversarial Networks" (attention layer).
"""

from __future__ import annotations

import keras
from keras import layers

from astrotf.layers.blocks import PadToMultiple, ResidualBlock
from astrotf.layers.normalization import denoiser_inputs, denoiser_output
from astrotf.layers.pix2pix_blocks import InstanceNormalization, LayerNormResidualBlock, SelfAttention2D

NORMALIZATIONS = ("none", "background")


def _positive_int(name: str, value, low: int = 1, high: int | None = None) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low
            and (high is None or value <= high)):
        span = f"between {low} and {high}" if high is not None else f"an integer >= {low}"
        msg = f"`{name}` must be {span}. Received: {name}={value!r}"
        raise ValueError(msg)


@keras.saving.register_keras_serializable(package="astrotf")
class Pix2PixGenerator(keras.Model):
    """Enhanced Pix2Pix generator (Xu §3) as an image-to-image denoiser.

    Parameters
    ----------
    channels : int
        Image channels in and out (1 for mono, 3 for RGB).
    depth : int
        Number of 2× downsamplings (strided convolutions); the bottleneck sees ``H / 2**depth``.
    base_filters : int
        Filters of the first level; doubled at every level up to ``max_filters``.
    max_filters : int
        Cap of the filters (Pix2Pix: 8 × 64).
    residual_blocks : int
        Residual blocks after each encoding step (0: the standard Pix2Pix encoder).
    attention : bool
        Self-attention over the bottleneck's positions.
    normalization : {"none", "background"}
        ``"none"`` for stretched data in [0, 1]; ``"background"`` for linear data.
    head_initializer : str
        Initializer of the head's kernel (``"zeros"``: a new generator is the identity).
    dtype : str or keras.DTypePolicy, optional
        Dtype policy of the layers (``"mixed_bfloat16"``); the head, the residual sum and the
        (de)normalisation stay float32. Not part of :meth:`get_config`.

    References
    ----------
    Xu, §3 and Fig. 1.
    """

    def __init__(
        self,
        channels: int = 3,
        depth: int = 4,
        base_filters: int = 32,
        max_filters: int = 256,
        residual_blocks: int = 1,
        attention: bool = True,
        normalization: str = "none",
        head_initializer: str = "zeros",
        dtype=None,
        **kwargs,
    ):
        _positive_int("channels", channels)
        _positive_int("depth", depth, 1, 6)
        _positive_int("base_filters", base_filters)
        _positive_int("max_filters", max_filters)
        _positive_int("residual_blocks", residual_blocks, 0)
        if not isinstance(attention, bool):
            msg = f"`attention` must be True or False. Received: attention={attention!r}"
            raise ValueError(msg)
        if normalization not in NORMALIZATIONS:
            msg = f"`normalization` must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
            raise ValueError(msg)

        # === Functional model ===
        inputs, x, body, stats = denoiser_inputs(channels, normalization, False)
        h = PadToMultiple(2**depth, dtype=dtype, name="pad")(body)
        skips = []
        for level in range(depth):
            filters = min(base_filters * 2**level, max_filters)
            h = layers.Conv2D(filters, 4, strides=2, padding="same", dtype=dtype, name=f"down{level}")(h)
            if level > 0:
                h = InstanceNormalization(dtype=dtype, name=f"down{level}_norm")(h)
            h = layers.LeakyReLU(0.2, dtype=dtype, name=f"down{level}_act")(h)
            for i in range(residual_blocks):
                h = ResidualBlock(filters, "relu", dtype=dtype, name=f"down{level}_res{i}")(h)
            skips.append(h)
        h = LayerNormResidualBlock("relu", dtype=dtype, name="bottleneck")(h)
        if attention:
            h = SelfAttention2D(max(filters // 8, 1), dtype=dtype, name="attention")(h)
        for level in reversed(range(1, depth)):
            h = layers.Concatenate(dtype=dtype, name=f"skip{level}")([h, skips[level]])
            filters = min(base_filters * 2 ** (level - 1), max_filters)
            h = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", dtype=dtype, name=f"up{level}")(h)
            h = InstanceNormalization(dtype=dtype, name=f"up{level}_norm")(h)
            h = layers.ReLU(dtype=dtype, name=f"up{level}_act")(h)
        h = layers.Concatenate(dtype=dtype, name="skip0")([h, skips[0]])
        correction = layers.Conv2DTranspose(channels, 4, strides=2, padding="same",
                                            kernel_initializer=head_initializer, dtype="float32", name="head")(h)
        out = denoiser_output(correction, x, stats)
        super().__init__(inputs=inputs, outputs=out, **kwargs)

        # === Config ===
        self.channels = channels
        self.depth = depth
        self.base_filters = base_filters
        self.max_filters = max_filters
        self.residual_blocks = residual_blocks
        self.attention = attention
        self.normalization = normalization
        self.head_initializer = head_initializer

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "channels": self.channels,
            "depth": self.depth,
            "base_filters": self.base_filters,
            "max_filters": self.max_filters,
            "residual_blocks": self.residual_blocks,
            "attention": self.attention,
            "normalization": self.normalization,
            "head_initializer": self.head_initializer,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
