"""Self2Self U-Net of the TDR method (Quan et al. 2020; Liu et al. 2025, Methods).

Input: a noisy image ``y`` and a Bernoulli mask ``B`` (1 = kept pixel); the network
sees ``B·y`` only. Partial convolutions in the encoder ignore the dropped pixels;
the decoder convolutions are preceded by dropout that stays on at test time, so every
call is one member of the dropout ensemble (eq. 4). Trained on the dropped pixels
only (eq. 3, :func:`astrotf.losses.self2self_loss`), the network predicts each pixel
from its neighbours and cannot learn the identity.

Linear data in physical units go in and come out: a fixed affine normalisation
``(x - offset) / scale`` (chosen from the training image and stored in the config, so
in ``metadata.json``) is applied before the network and inverted after it.

``space_to_depth=2`` folds 2×2 pixel blocks (and their masks) into channels, as in
:class:`astrotf.models.resunet.ResUNet`: the U-Net runs at half resolution, about 4×
cheaper, and the partial convolutions then use per-channel masks.
"""

from __future__ import annotations

import keras
from keras import layers

from astrotf.layers.blocks import CropLike, DepthToSpace, PadToMultiple, SpaceToDepth
from astrotf.layers.mc_dropout import MCDropout
from astrotf.layers.partial_conv import PartialConv2D


def _check_arguments(channels, depth, base_filters, dropout, space_to_depth, offset, scale) -> None:
    """Raise ValueError naming the first bad constructor argument of :class:`Self2Self`."""
    if not (isinstance(channels, int) and channels >= 1):
        msg = f"`channels` must be a positive integer. Received: channels={channels!r}"
        raise ValueError(msg)
    if not (isinstance(depth, int) and 1 <= depth <= 6):
        msg = f"`depth` must be an integer between 1 and 6. Received: depth={depth!r}"
        raise ValueError(msg)
    if not (isinstance(base_filters, int) and base_filters >= 1):
        msg = f"`base_filters` must be a positive integer. Received: base_filters={base_filters!r}"
        raise ValueError(msg)
    if not 0.0 <= dropout < 1.0:
        msg = f"`dropout` must be in [0, 1). Received: dropout={dropout!r}"
        raise ValueError(msg)
    if space_to_depth not in (1, 2, 4):
        msg = f"`space_to_depth` must be 1, 2 or 4. Received: space_to_depth={space_to_depth!r}"
        raise ValueError(msg)
    if not (scale > 0 and abs(float(offset)) < float("inf")):
        msg = f"`scale` must be > 0 and `offset` finite. Received: scale={scale!r}, offset={offset!r}"
        raise ValueError(msg)


@keras.saving.register_keras_serializable(package="astrotf")
class Self2Self(keras.Model):
    """Self2Self denoiser: partial-convolution encoder, MC-dropout decoder.

    Parameters
    ----------
    channels : int
        Image channels in and out.
    depth : int
        Number of 2× downsamplings (strided partial convolutions).
    base_filters : int
        Filters of the encoder convolutions; the decoder's first convolution of each
        level has twice as many.
    dropout : float
        Dropout rate before every decoder convolution (train and test time).
    space_to_depth : int
        1, 2 or 4: pixel-unshuffle factor of the front end.
    offset, scale : float
        Linear normalisation of the data, ``(x - offset) / scale``, in data units.
    negative_slope : float
        Slope of the leaky ReLU activations.
    dtype : str or keras.DTypePolicy, optional
        Dtype policy of the network's layers; None: Keras' global policy. The last
        convolution and the denormalisation stay float32. Not part of :meth:`get_config`.

    Call arguments
    --------------
    inputs : list [image, mask]
        Both (B, H, W, channels) float32; any H × W. ``mask`` is 1 where a pixel is
        kept, 0 where it is dropped (or invalid, e.g. NaN filled by the caller).

    Notes
    -----
    Every call is stochastic (dropout is always on). For the denoised image average
    many calls over fresh masks: :func:`astrotf.ensemble.self2self_predict`.
    """

    def __init__(
        self,
        channels: int = 1,
        depth: int = 3,
        base_filters: int = 32,
        dropout: float = 0.3,
        space_to_depth: int = 2,
        offset: float = 0.0,
        scale: float = 1.0,
        negative_slope: float = 0.1,
        dtype=None,
        **kwargs,
    ):
        _check_arguments(channels, depth, base_filters, dropout, space_to_depth, offset, scale)

        # === Layers and functional model ===
        image = keras.Input(shape=(None, None, channels), dtype="float32", name="image")
        mask = keras.Input(shape=(None, None, channels), dtype="float32", name="mask")
        x = layers.Rescaling(1.0 / scale, offset=-offset / scale, dtype=dtype, name="normalize")(image)
        multiple = space_to_depth * 2**depth
        h = PadToMultiple(multiple, dtype=dtype, name="pad")(x)
        m = PadToMultiple(multiple, dtype=dtype, name="pad_mask")(mask)
        if space_to_depth > 1:
            h = SpaceToDepth(space_to_depth, dtype=dtype, name="unshuffle")(h)
            m = SpaceToDepth(space_to_depth, dtype=dtype, name="unshuffle_mask")(m)
        act = dict(negative_slope=negative_slope, dtype=dtype)
        h, m = PartialConv2D(base_filters, 3, dtype=dtype, name="enc0a")([h, m])
        h = layers.LeakyReLU(**act, name="enc0a_act")(h)
        h, m = PartialConv2D(base_filters, 3, dtype=dtype, name="enc0b")([h, m])
        h = layers.LeakyReLU(**act, name="enc0b_act")(h)
        skips = [h]
        for level in range(1, depth + 1):
            h, m = PartialConv2D(base_filters, 3, strides=2, dtype=dtype, name=f"enc{level}a")([h, m])
            h = layers.LeakyReLU(**act, name=f"enc{level}a_act")(h)
            h, m = PartialConv2D(base_filters, 3, dtype=dtype, name=f"enc{level}b")([h, m])
            h = layers.LeakyReLU(**act, name=f"enc{level}b_act")(h)
            if level < depth:
                skips.append(h)
        for level in reversed(range(depth)):
            h = layers.UpSampling2D(2, dtype=dtype, name=f"up{level}")(h)
            h = layers.Concatenate(dtype=dtype, name=f"skip{level}")([h, skips[level]])
            h = MCDropout(dropout, dtype=dtype, name=f"dec{level}a_drop")(h)
            h = layers.Conv2D(2 * base_filters, 3, padding="same", dtype=dtype, name=f"dec{level}a")(h)
            h = layers.LeakyReLU(**act, name=f"dec{level}a_act")(h)
            h = MCDropout(dropout, dtype=dtype, name=f"dec{level}b_drop")(h)
            h = layers.Conv2D(base_filters, 3, padding="same", dtype=dtype, name=f"dec{level}b")(h)
            h = layers.LeakyReLU(**act, name=f"dec{level}b_act")(h)
        h = MCDropout(dropout, dtype=dtype, name="head_drop")(h)
        h = layers.Conv2D(channels * space_to_depth**2, 3, padding="same", dtype="float32", name="head")(h)
        if space_to_depth > 1:
            h = DepthToSpace(space_to_depth, dtype="float32", name="shuffle")(h)
        h = CropLike(dtype="float32", name="crop")(h, x)
        out = layers.Rescaling(scale, offset=offset, dtype="float32", name="denormalize")(h)
        super().__init__(inputs=[image, mask], outputs=out, **kwargs)

        # === Config ===
        self.channels = channels
        self.depth = depth
        self.base_filters = base_filters
        self.dropout = float(dropout)
        self.space_to_depth = space_to_depth
        self.offset = float(offset)
        self.scale = float(scale)
        self.negative_slope = float(negative_slope)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "channels": self.channels,
            "depth": self.depth,
            "base_filters": self.base_filters,
            "dropout": self.dropout,
            "space_to_depth": self.space_to_depth,
            "offset": self.offset,
            "scale": self.scale,
            "negative_slope": self.negative_slope,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
