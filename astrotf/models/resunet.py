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
  the model takes and returns data in physical units. ``normalization="fixed"`` uses one
  ``(offset, scale)`` for every tile instead, stored in the config (data whose noise is the
  same everywhere, such as magnetograms in Gauss).

Any H × W is accepted: the input is reflect-padded to a multiple of
``space_to_depth · 2**depth`` and the output is cropped back.

``space_to_depth=2`` folds 2×2 pixel blocks into channels before the U-Net and
unfolds the predicted correction after it (FFDNet's front end): the network runs at
half resolution, about 6× faster on CPUs for the same parameters, with a receptive
field twice as wide. The global residual stays at full resolution.

``noise_map=True`` conditions the network on the noise (FFDNet, Zhang et al. 2018; a per-pixel
form of Astro U-net's exposure-ratio input, Vojtekova et al. 2020 §3.3.3): the model takes a
second input, ``noise_sigma``, the per-pixel σ of the image in its units
(:meth:`astrotf.noise_model.NoiseModel.sigma_map`), scaled by the image's tile scale under
``normalization="background"`` and concatenated to the image as extra channels of the U-Net's
input. Two named inputs rather than one input of ``2 · channels`` channels: the SavedModel
signature and the ONNX graph then say which tensor is the σ map, each keeps the image's shape
(``(N, H, W, channels)``, so tiling cuts both alike), the tile statistics are taken over the
image alone, and the output keeps the image's channels: a consumer can never mistake a
σ-conditioned model for a ``2 · channels`` one. The global residual and the float32 data path
are unchanged; ``noise_map=False`` builds exactly the network it always did.
"""

from __future__ import annotations

import keras
from keras import layers

from astrotf.layers.blocks import (
    BilinearUpsample2x,
    DepthToSpace,
    PadToMultiple,
    ResidualBlock,
    SpaceToDepth,
)
from astrotf.layers.normalization import denoiser_inputs, denoiser_output

NORMALIZATIONS = ("none", "background", "fixed")


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
    normalization : {"none", "background", "fixed"}
        ``"none"`` for stretched data in [0, 1]; ``"background"`` for linear data, ``"fixed"`` for
        linear data with ``(x - offset) / scale`` (see :mod:`astrotf.layers.normalization`).
    space_to_depth : int
        1: the U-Net works at full resolution; 2: on 2×2 pixel blocks folded into
        channels (faster, see the module docstring).
    noise_map : bool
        Take a second input ``noise_sigma`` (N, H, W, channels), the per-pixel noise σ in
        the image's units, and condition the network on it (see the module docstring).
        The model is then called as ``model([image, noise_sigma])``.
    offset, scale : float
        The map of ``normalization="fixed"``, in the data's units; unused otherwise.
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
        noise_map: bool = False,
        offset: float = 0.0,
        scale: float = 1.0,
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
        if not isinstance(noise_map, bool):
            msg = f"`noise_map` must be True or False. Received: noise_map={noise_map!r}"
            raise ValueError(msg)
        if not (float(scale) > 0 and abs(float(offset)) < float("inf") and float(scale) < float("inf")):
            msg = f"`scale` must be finite and > 0, `offset` finite. Received: offset={offset!r}, scale={scale!r}"
            raise ValueError(msg)

        # === Functional model ===
        inputs, x, body, stats = denoiser_inputs(channels, normalization, noise_map, float(offset), float(scale))
        padded = PadToMultiple(space_to_depth * 2**depth, dtype=dtype, name="pad")(body)
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
        out = denoiser_output(correction, x, stats)
        super().__init__(inputs=inputs, outputs=out, **kwargs)

        # === Config ===
        self.channels = channels
        self.depth = depth
        self.base_filters = base_filters
        self.activation = activation
        self.normalization = normalization
        self.space_to_depth = space_to_depth
        self.head_initializer = head_initializer
        self.noise_map = noise_map
        self.offset = float(offset)
        self.scale = float(scale)

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
            "noise_map": self.noise_map,
            "offset": self.offset,
            "scale": self.scale,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
