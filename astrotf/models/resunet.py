"""ResUNet denoiser of the AstroPics Lab pipeline (§2.4).

Encoder – bottleneck – decoder with residual blocks at every level and skip
connections between levels of equal resolution. Two choices beyond the paper keep
the science intact:

* **Global residual.** The network predicts a correction that is added to its input
  in float32, so a clean tile can pass through unchanged (the identity variant of
  §2.2) and mixed-precision rounding never touches the data path.
* **Starts as the identity.** The last convolution is zero-initialised, so an untrained
  network returns its input and training only has to learn the correction. With a
  random last layer the first steps are spent shrinking a random correction, which
  kills decoder activations: a half-resolution network (``space_to_depth=2``) then
  learns nothing at all (``tools/bench_head_init.py``).
* **Reversible normalisation** (``normalization="background"``) for linear data:
  per-tile median / MAD scaling before the network and its exact inverse after, so
  the model takes and returns data in physical units.

Any H × W is accepted: the input is reflect-padded to a multiple of
``space_to_depth · 2**depth`` and the output is cropped back.

``space_to_depth=2`` folds 2×2 pixel blocks into channels before the U-Net and
unfolds the predicted correction after it (FFDNet's front end): the network runs at
half resolution, about 6× faster on CPUs for the same parameters, with a receptive
field twice as wide. The global residual stays at full resolution.
"""

from __future__ import annotations

import keras
from keras import layers

from astrotf.layers.blocks import (
    BilinearUpsample2x,
    CropLike,
    DepthToSpace,
    PadToMultiple,
    ResidualBlock,
    SpaceToDepth,
)
from astrotf.layers.normalization import BackgroundNormalization, Denormalization

NORMALIZATIONS = ("none", "background")


@keras.saving.register_keras_serializable(package="astrotf")
class ResUNet(keras.Model):
    """ResUNet image-to-image denoiser.

    Parameters
    ----------
    channels : int
        Image channels in and out (1 for mono, 3 for RGB).
    depth : int
        Number of 2× downsamplings; the bottleneck sees ``H / 2**depth``.
    base_filters : int
        Filters at full resolution; doubled at every level.
    activation : str
        Activation of the residual blocks.
    normalization : {"none", "background"}
        ``"none"`` for stretched data in [0, 1]; ``"background"`` for linear data
        (see :mod:`astrotf.layers.normalization`).
    space_to_depth : int
        1: the U-Net works at full resolution; 2: on 2×2 pixel blocks folded into
        channels (faster, see the module docstring).
    head_initializer : str
        Initializer of the last convolution's kernel: ``"zeros"`` (the network starts
        as the identity, see the module docstring) or any Keras initializer name.
    dtype : str or keras.DTypePolicy, optional
        Dtype policy of the network's layers, e.g. ``"mixed_bfloat16"``; None: Keras'
        global policy. Not part of :meth:`get_config`: a saved model is built in the
        policy asked for where it is loaded (:func:`astrotf.models.registry.load_model`).

    Notes
    -----
    Under a ``mixed_bfloat16`` policy the convolutions compute in bfloat16 while the
    last convolution, the residual sum and the (de)normalisation stay in float32.
    """

    def __init__(
        self,
        channels: int = 3,
        depth: int = 3,
        base_filters: int = 32,
        activation: str = "relu",
        normalization: str = "none",
        space_to_depth: int = 1,
        head_initializer: str = "zeros",
        dtype=None,
        **kwargs,
    ):
        if channels < 1:
            msg = f"`channels` must be a positive integer. Received: channels={channels}"
            raise ValueError(msg)
        if not 1 <= depth <= 6:
            msg = f"`depth` must be between 1 and 6. Received: depth={depth}"
            raise ValueError(msg)
        if base_filters < 1:
            msg = f"`base_filters` must be a positive integer. Received: base_filters={base_filters}"
            raise ValueError(msg)
        if normalization not in NORMALIZATIONS:
            msg = f"`normalization` must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
            raise ValueError(msg)

        if space_to_depth not in (1, 2, 4):
            msg = f"`space_to_depth` must be 1, 2 or 4. Received: space_to_depth={space_to_depth}"
            raise ValueError(msg)

        # === Functional model ===
        image = keras.Input(shape=(None, None, channels), dtype="float32", name="image")
        x = image
        if normalization == "background":
            # float32 whatever the policy: a bfloat16 autocast would round counts of 20000 to +-64
            x, offset, scale = BackgroundNormalization(dtype="float32", name="normalize")(x)
        padded = PadToMultiple(space_to_depth * 2**depth, dtype=dtype, name="pad")(x)
        h = padded
        if space_to_depth > 1:
            h = SpaceToDepth(space_to_depth, dtype=dtype, name="unshuffle")(h)
        h = layers.Conv2D(base_filters, 3, padding="same", dtype=dtype, name="stem")(h)
        skips = []
        for level in range(depth):
            h = ResidualBlock(base_filters * 2**level, activation, dtype=dtype, name=f"enc{level}")(h)
            skips.append(h)
            h = layers.MaxPooling2D(2, dtype=dtype, name=f"down{level}")(h)
        h = ResidualBlock(base_filters * 2**depth, activation, dtype=dtype, name="bottleneck")(h)
        for level in reversed(range(depth)):
            h = BilinearUpsample2x(dtype=dtype, name=f"up{level}")(h)
            h = layers.Concatenate(dtype=dtype, name=f"skip{level}")([h, skips[level]])
            h = ResidualBlock(base_filters * 2**level, activation, dtype=dtype, name=f"dec{level}")(h)
        correction = layers.Conv2D(channels * space_to_depth**2, 1, kernel_initializer=head_initializer,
                                   dtype="float32", name="head")(h)
        if space_to_depth > 1:
            correction = DepthToSpace(space_to_depth, dtype="float32", name="shuffle")(correction)
        correction = CropLike(dtype="float32", name="crop")(correction, x)
        out = layers.Add(dtype="float32", name="residual")([x, correction])
        if normalization == "background":
            out = Denormalization(dtype="float32", name="denormalize")(out, offset, scale)
        super().__init__(inputs=image, outputs=out, **kwargs)

        # === Config ===
        self.channels = channels
        self.depth = depth
        self.base_filters = base_filters
        self.activation = activation
        self.normalization = normalization
        self.space_to_depth = space_to_depth
        self.head_initializer = head_initializer

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "channels": self.channels,
            "depth": self.depth,
            "base_filters": self.base_filters,
            "activation": self.activation,
            "normalization": self.normalization,
            "space_to_depth": self.space_to_depth,
            "head_initializer": self.head_initializer,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
