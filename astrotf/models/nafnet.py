"""NAFNet denoiser: a U-Net of activation-free blocks (Chen et al. 2022).

A 3×3 stem, then per level a stack of :class:`~astrotf.layers.nafnet_blocks.NAFBlock`
and a stride-2 2×2 convolution that doubles the channels; middle blocks at the lowest
resolution; per level on the way up a 1×1 convolution and a pixel shuffle that halve
the channels, the skip added (not concatenated) and a stack of blocks; a 3×3 head.

The contract is ResUNet's (:mod:`astrotf.models.resunet`):

* **Global residual in float32.** The head predicts a correction added to the input in
  float32; under ``mixed_bfloat16`` only the body computes in bfloat16.
* **Starts as the identity.** The head is zero-initialised and every block's residual
  scales start at zero, so an untrained network returns its input exactly.
* **Reversible normalisation** (``normalization="background"``) for linear data.
* **Any H × W**: reflect-padded to a multiple of ``2**len(enc_blocks)`` and cropped back.
* **Noise conditioning** (``noise_map=True``): a second input ``noise_sigma``, the per-pixel σ
  map, scaled like the image and concatenated to it before the stem (why two inputs and not
  one of ``2 · channels``: :mod:`astrotf.models.resunet`).

The simplified channel attention averages over the tile, so the model records its
training tile and tiled inference uses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from astrotf.layers.blocks import DepthToSpace, PadToMultiple
from astrotf.layers.nafnet_blocks import NAFBlock
from astrotf.layers.normalization import denoiser_inputs, denoiser_output

NORMALIZATIONS = ("none", "background")


def _block_counts(name: str, value) -> list[int]:
    counts = [value] if isinstance(value, int) else list(value)
    if not counts or not all(isinstance(n, int) and n >= 0 for n in counts):
        msg = f"`{name}` must be a list of integers >= 0. Received: {name}={value!r}"
        raise ValueError(msg)
    return counts


@keras.saving.register_keras_serializable(package="astrotf")
class NAFNet(keras.Model):
    """NAFNet image-to-image denoiser.

    Parameters
    ----------
    channels : int
        Image channels in and out (1 for mono, 3 for RGB).
    width : int
        Channels at full resolution; doubled at every level.
    enc_blocks : sequence of int
        NAF blocks at each encoder level; its length is the number of 2× downsamplings.
    middle_blocks : int
        NAF blocks at the lowest resolution.
    dec_blocks : sequence of int
        NAF blocks at each decoder level, from the lowest resolution up; same length as
        ``enc_blocks``.
    normalization : {"none", "background"}
        ``"none"`` for stretched data in [0, 1]; ``"background"`` for linear data.
    head_initializer : str
        Initializer of the head's kernel (``"zeros"``: the network starts as the identity).
    noise_map : bool
        Take a second input ``noise_sigma`` (N, H, W, channels), the per-pixel noise σ in the
        image's units; called as ``model([image, noise_sigma])``.
    """

    def __init__(
        self,
        channels: int = 3,
        width: int = 16,
        enc_blocks: Sequence[int] = (1, 1, 1, 4),
        middle_blocks: int = 1,
        dec_blocks: Sequence[int] = (1, 1, 1, 1),
        normalization: str = "none",
        head_initializer: str = "zeros",
        noise_map: bool = False,
        **kwargs,
    ):
        enc_blocks = _block_counts("enc_blocks", enc_blocks)
        dec_blocks = _block_counts("dec_blocks", dec_blocks)
        if channels < 1:
            msg = f"`channels` must be a positive integer. Received: channels={channels}"
            raise ValueError(msg)
        if not (isinstance(width, int) and width >= 2 and width % 2 == 0):
            msg = f"`width` must be an even integer >= 2. Received: width={width!r}"
            raise ValueError(msg)
        if len(dec_blocks) != len(enc_blocks) or not 1 <= len(enc_blocks) <= 6:
            msg = ("`enc_blocks` and `dec_blocks` must have the same length, 1 to 6. "
                   f"Received: enc_blocks={enc_blocks}, dec_blocks={dec_blocks}")
            raise ValueError(msg)
        if not (isinstance(middle_blocks, int) and middle_blocks >= 0):
            msg = f"`middle_blocks` must be an integer >= 0. Received: middle_blocks={middle_blocks!r}"
            raise ValueError(msg)
        if normalization not in NORMALIZATIONS:
            msg = f"`normalization` must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
            raise ValueError(msg)
        if not isinstance(noise_map, bool):
            msg = f"`noise_map` must be True or False. Received: noise_map={noise_map!r}"
            raise ValueError(msg)
        policy = kwargs.pop("dtype", None)

        # === Functional model ===
        inputs, x, body, stats = denoiser_inputs(channels, normalization, noise_map)
        h = PadToMultiple(2 ** len(enc_blocks), name="pad")(body)
        h = layers.Conv2D(width, 3, padding="same", dtype=policy, name="stem")(h)
        skips, filters = [], width
        for level, count in enumerate(enc_blocks):
            for i in range(count):
                h = NAFBlock(filters, dtype=policy, name=f"enc{level}_{i}")(h)
            skips.append(h)
            h = layers.Conv2D(2 * filters, 2, strides=2, dtype=policy, name=f"down{level}")(h)
            filters *= 2
        for i in range(middle_blocks):
            h = NAFBlock(filters, dtype=policy, name=f"middle_{i}")(h)
        for level, count in zip(reversed(range(len(enc_blocks))), dec_blocks):
            h = layers.Conv2D(2 * filters, 1, use_bias=False, dtype=policy, name=f"up{level}")(h)
            h = DepthToSpace(2, dtype=policy, name=f"shuffle{level}")(h)
            filters //= 2
            h = layers.Add(dtype=policy, name=f"skip{level}")([h, skips[level]])
            for i in range(count):
                h = NAFBlock(filters, dtype=policy, name=f"dec{level}_{i}")(h)
        correction = layers.Conv2D(channels, 3, padding="same", kernel_initializer=head_initializer,
                                   dtype="float32", name="head")(h)
        out = denoiser_output(correction, x, stats)
        super().__init__(inputs=inputs, outputs=out, **kwargs)

        # === Config ===
        self.channels = channels
        self.width = width
        self.enc_blocks = enc_blocks
        self.middle_blocks = middle_blocks
        self.dec_blocks = dec_blocks
        self.normalization = normalization
        self.head_initializer = head_initializer
        self.noise_map = noise_map

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "channels": self.channels,
            "width": self.width,
            "enc_blocks": list(self.enc_blocks),
            "middle_blocks": self.middle_blocks,
            "dec_blocks": list(self.dec_blocks),
            "normalization": self.normalization,
            "head_initializer": self.head_initializer,
            "noise_map": self.noise_map,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
