"""PatchGAN discriminator of the enhanced Pix2Pix (Xu §3; Isola et al. 2017 §3.2.2).

It takes the noisy input and a candidate (the clean target or the generator's output),
concatenates them and returns one logit per patch: ``n_layers`` 4×4 stride-2 convolutions (the
first without normalisation, the others with instance normalisation; LeakyReLU 0.2), a 4×4
stride-1 convolution with normalisation, and a 4×4 stride-1 convolution to one channel. Filters
double per layer up to eight times ``filters``. Each logit judges a square of the tile as wide
as the receptive field (70 px for ``n_layers=3``: the 70×70 PatchGAN of Pix2Pix);
the recipe checks that it fits in the training tile
(:func:`astrotf.config.gan.patch_receptive_field`).

The logits are float32 under a mixed policy; the losses apply the sigmoid
(:func:`astrotf.losses.discriminator_loss`).

References
----------
Xu, M. "Denoising astronomical images using an enhanced Pix2Pix model", §3 (discriminator).
Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks", §3.2.2.
"""

from __future__ import annotations

import keras
from keras import layers

from astrotf.layers.pix2pix_blocks import InstanceNormalization


def _positive_int(name: str, value, high: int = 4096) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high):
        msg = f"`{name}` must be an integer in [1, {high}]. Received: {name}={value!r}"
        raise ValueError(msg)


@keras.saving.register_keras_serializable(package="astrotf")
class PatchGANDiscriminator(keras.Model):
    """Conditional PatchGAN: ``D([noisy, candidate])`` -> logits (N, ceil(H / 2**n_layers), ceil(W / 2**n_layers), 1).

    Parameters
    ----------
    channels : int
        Channels of each image (the network sees ``2 · channels``).
    filters : int
        Filters of the first layer; doubled per layer up to ``8 · filters``.
    n_layers : int
        Stride-2 convolutions (3: the 70×70 PatchGAN of Pix2Pix).
    dtype : str or keras.DTypePolicy, optional
        Dtype policy of the layers; the last convolution (the logits) stays float32.

    References
    ----------
    Xu §3; Isola et al. 2017, §3.2.2 and appendix 6.1.2.
    """

    def __init__(self, channels: int = 3, filters: int = 64, n_layers: int = 3, dtype=None, **kwargs):
        _positive_int("channels", channels)
        _positive_int("filters", filters)
        _positive_int("n_layers", n_layers, 6)

        # === Functional model ===
        noisy = keras.Input(shape=(None, None, channels), dtype="float32", name="noisy")
        candidate = keras.Input(shape=(None, None, channels), dtype="float32", name="candidate")
        h = layers.Concatenate(dtype=dtype, name="pair")([noisy, candidate])
        for i in range(n_layers + 1):
            stride = 2 if i < n_layers else 1
            h = layers.Conv2D(min(filters * 2**i, 8 * filters), 4, strides=stride, padding="same", dtype=dtype,
                          name=f"conv{i}")(h)
            if i > 0:
                h = InstanceNormalization(dtype=dtype, name=f"norm{i}")(h)
            h = layers.LeakyReLU(0.2, dtype=dtype, name=f"act{i}")(h)
        logits = layers.Conv2D(1, 4, padding="same", dtype="float32", name="logits")(h)
        super().__init__(inputs=[noisy, candidate], outputs=logits, **kwargs)

        # === Config ===
        self.channels = channels
        self.filters = filters
        self.n_layers = n_layers

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "channels": self.channels,
                "filters": self.filters, "n_layers": self.n_layers}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
