"""The alternating discriminator / generator step of the enhanced Pix2Pix (Xu §3.1, §4.1).

:class:`ConditionalGAN` follows the ``GAN`` class of the Keras guide "Customizing what happens in
``fit()``" (a ``keras.Model`` holding both networks, its own ``compile`` with one optimiser each,
loss trackers as its ``metrics``, an overridden ``train_step``), so ``gan.fit(dataset)`` works on the
``(noisy, clean, star_mask)`` batches of :mod:`astrotf.data.pipeline`. The trainer
(:mod:`astrotf.train.pix2pix`) calls :meth:`ConditionalGAN.alternating_step` from its own loop, for
checkpoints, resume, Ctrl-C and previews.

One step, on a batch ``(x, y, mask)``:

1. ``G(x)`` is computed once, under the generator's tape.
2. The discriminator is updated on the real pair ``(x, y)`` and the generated pair
   ``(x, G(x))`` (the generator's output held constant): eq. 1.
3. The *updated* discriminator scores ``(x, G(x))`` again and the generator is updated on
   ``adversarial + λ · reconstruction`` (eq. 2–3).

Linear models (``normalization="background"``) are scored, and judged, in their normalised units.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from astrotf.layers.normalization import background_stats
from astrotf.losses import Pix2PixLoss


def loss_units(noisy, clean, pred, linear: bool):
    """``(noisy, clean, pred)`` in the units the losses and the discriminator see: as given for
    stretched data, ``(t - a) / s`` with the noisy tile's median ``a`` and MAD-sigma ``s`` for linear data."""
    noisy, clean, pred = (tf.cast(t, tf.float32) for t in (noisy, clean, pred))
    if not linear:
        return noisy, clean, pred
    offset, scale = background_stats(noisy)
    return tuple((t - offset) / scale for t in (noisy, clean, pred))


class ConditionalGAN(keras.Model):
    """A generator and a conditional discriminator trained against each other (Xu §3.1).

    Parameters
    ----------
    generator : keras.Model
        Denoiser ``G(x)`` (:class:`~astrotf.models.pix2pix.Pix2PixGenerator` or any single-input
        model of the registry).
    discriminator : keras.Model
        ``D([x, candidate]) -> logits`` (:class:`~astrotf.models.patchgan.PatchGANDiscriminator`).
    linear : bool
        Score in the generator's normalised units (``normalization="background"``).
    ema : astrotf.train.ema.WeightAverage, optional
        Moving average of the generator's weights, updated after every generator step.
    """

    def __init__(self, generator, discriminator, linear: bool = False, ema=None, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.linear = linear
        self.ema = ema
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("loss", "generator", "adversarial", "discriminator")}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, g_optimizer, d_optimizer, loss: Pix2PixLoss):
        """One optimiser per network, and the objectives."""
        super().compile()
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.objectives = loss

    def call(self, noisy, training=False):
        return self.generator(noisy, training=training)

    def _discriminator_update(self, x, y, fake, replicas):
        """Eq. 1 on the real and generated pairs; one optimiser step of the discriminator."""
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            real_logits = self.discriminator([x, y], training=True)
            fake_logits = self.discriminator([x, tf.stop_gradient(fake)], training=True)
            terms = self.objectives.discriminator_terms(real_logits, fake_logits)
            scaled = self.d_optimizer.scale_loss(terms["discriminator"] / replicas)
        self.d_optimizer.apply_gradients(zip(tape.gradient(scaled, d_vars), d_vars))
        return terms

    def alternating_step(self, noisy, clean, star_mask) -> dict:
        """One discriminator then one generator update (see the module docstring); the step's terms.

        Under a ``tf.distribute`` strategy each replica's losses are divided by the replicas (the
        optimisers sum the gradients). Returns the batch means of
        :meth:`~astrotf.losses.Pix2PixLoss.generator_terms` and
        :meth:`~astrotf.losses.Pix2PixLoss.discriminator_terms`.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            x, y, fake = loss_units(noisy, clean, self.generator(noisy, training=True), self.linear)
            with tape.stop_recording():
                d_terms = self._discriminator_update(x, y, fake, replicas)
            fake_logits = self.discriminator([x, fake], training=True)
            terms = self.objectives.generator_terms(y, fake, star_mask, fake_logits)
            scaled = self.g_optimizer.scale_loss(terms["generator"] / replicas)
        self.g_optimizer.apply_gradients(zip(tape.gradient(scaled, g_vars), g_vars))
        if self.ema is not None:
            self.ema.update(g_vars)
        return {**terms, **d_terms}

    def evaluation_terms(self, noisy, clean, star_mask):
        """The step's terms without updates, and the generator's output: ``(terms, denoised)``."""
        pred = self.generator(noisy, training=False)
        x, y, fake = loss_units(noisy, clean, pred, self.linear)
        real_logits = self.discriminator([x, y], training=False)
        fake_logits = self.discriminator([x, fake], training=False)
        terms = self.objectives.generator_terms(y, fake, star_mask, fake_logits)
        return {**terms, **self.objectives.discriminator_terms(real_logits, fake_logits)}, pred

    def _report(self, terms) -> dict:
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def train_step(self, data):
        return self._report(self.alternating_step(*data))

    def test_step(self, data):
        return self._report(self.evaluation_terms(*data)[0])
