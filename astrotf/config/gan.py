"""Settings of the GAN stages of a Pix2Pix recipe (TensorFlow-free): the ``[discriminator]`` and
``[gan]`` tables, and the discriminator's geometry checked against the training tile.

References
----------
Xu, M. "Denoising astronomical images using an enhanced Pix2Pix model", §3.1 (losses), §4.2
(optimisation). Isola et al. 2017, §3.2.2 (PatchGAN), §4 (λ = 100, Adam β1 = 0.5).
"""

from __future__ import annotations

import dataclasses

from astrotf.config.model import ModelConfig
from astrotf.errors import check_fields
from astrotf.models import registry

RECONSTRUCTIONS = ("l1", "astropics")


def patch_receptive_field(n_layers: int) -> int:
    """Side in px of the square each logit of :class:`~astrotf.models.patchgan.PatchGANDiscriminator` sees.

    ``n_layers`` 4×4 stride-2 convolutions then two 4×4 stride-1 ones: 16, 34, 70, 142, 286, 574
    px for 1 to 6 layers (70: the 70×70 PatchGAN of Isola et al. 2017).
    """
    field = 7  # the two stride-1 4x4 convolutions
    for _ in range(n_layers):
        field = 2 * (field - 1) + 4
    return field


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig(ModelConfig):
    """The ``[discriminator]`` table: a discriminator of :data:`astrotf.models.registry.DISCRIMINATORS`
    and its constructor arguments (``channels`` defaults to the generator's)."""

    name: str = "patchgan"

    choices = registry.DISCRIMINATORS

    def receptive_field(self) -> int | None:
        """The patch side in px, or None for a discriminator without ``n_layers``."""
        if self.name != "patchgan":
            return None
        default = (registry.constructor_arguments(self.name) or {}).get("n_layers", 3)
        return patch_receptive_field(self.arguments.get("n_layers", default))


@dataclasses.dataclass(frozen=True)
class AdversarialConfig:
    """The ``[gan]`` table: the generator's objective and the discriminator's optimiser.

    Generator loss (Xu eq. 2–3): ``adversarial + l1_weight · reconstruction``; the
    discriminator's (eq. 1) is binary cross-entropy on real and generated pairs, halved.

    Parameters
    ----------
    reconstruction : {"l1", "astropics"}
        ``"l1"``: the paper's mean absolute error; ``"astropics"``: the composite star-aware loss
        of the recipe's ``[loss]`` table (:class:`astrotf.losses.AstroPicsLoss`).
    l1_weight : float
        λ of eq. 2, > 0 (Pix2Pix: 100).
    discriminator_lr : float or None
        Peak learning rate of the discriminator's Adam (None: ``[train] lr``); same schedule.
    beta_1 : float
        Adam's β1 of both optimisers (Pix2Pix: 0.5).
    """

    reconstruction: str = "l1"
    l1_weight: float = 100.0
    discriminator_lr: float | None = None
    beta_1: float = 0.5

    def __post_init__(self):
        check_fields(self, [
            ("reconstruction", self.reconstruction in RECONSTRUCTIONS, f"one of {RECONSTRUCTIONS}"),
            ("l1_weight", isinstance(self.l1_weight, (int, float)) and not isinstance(self.l1_weight, bool)
             and self.l1_weight > 0, "> 0"),
            ("discriminator_lr", self.discriminator_lr is None or (
                isinstance(self.discriminator_lr, (int, float)) and 0 < self.discriminator_lr < 1),
             "None or in (0, 1)"),
            ("beta_1", isinstance(self.beta_1, (int, float)) and 0 <= self.beta_1 < 1, "in [0, 1)"),
        ])
