"""Training of the enhanced Pix2Pix (Xu §3.1, §4) on a data folder: ``astrotf train pix2pix``.

The data are the ``(noisy, clean, star_mask)`` tiles of ``astrotf train resunet``
(:mod:`astrotf.data.pipeline`: AstroPics noise, star masks) and the run directory has the same
layout (:mod:`astrotf.train.resunet`): ``run.json``, ``checkpoints/``, ``model_best.keras`` and
``model_last.keras`` (the generator: what is exported and denoises), ``history.csv``, ``logs/``
(TensorBoard), ``previews/``. The checkpoints hold both networks and both optimisers' states, so a
resumed run continues the adversarial game where it stopped.

Each step is :meth:`astrotf.train.gan.ConditionalGAN.alternating_step`; the epochs, validation,
previews, Ctrl-C and NaN checks are the ResUNet trainer's loop
(:func:`astrotf.train.resunet.run_epochs`) over :mod:`astrotf.runs`.

Logged terms (``history.csv``, TensorBoard, train and validation alike): ``loss`` is the
reconstruction term (L1, or the composite star-aware loss) and chooses ``model_best.keras``: the
adversarial terms depend on the discriminator of the moment and do not compare across epochs.
``generator`` is the generator's objective ``adversarial + l1_weight · loss``, ``discriminator``
eq. 1, ``d_real`` / ``d_fake`` the mean probabilities the discriminator gives real and generated
pairs.

``init`` starts the generator from a trained model of the same architecture (a shipped model, a
model folder, a ``.keras`` file or a run); the discriminator starts afresh.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from astrotf import runs
from astrotf.config import Pix2PixRecipe, pix2pix_recipe_from_dict, resolve_precision
from astrotf.errors import AstroTFError
from astrotf.train import resunet

log = logging.getLogger(__name__)

COMMAND = "astrotf train pix2pix"


def make_steps(gan, distribution):
    """The compiled ``train_step(x, y, mask) -> terms`` and ``eval_step(x, y, mask) -> (terms, pred)``
    of :class:`astrotf.train.resunet.Session`, on a :class:`~astrotf.train.gan.ConditionalGAN`."""
    import tensorflow as tf

    @tf.function
    def train_step(x, y, mask):
        terms = distribution.run(gan.alternating_step, args=(x, y, mask))
        return {k: distribution.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in terms.items()}

    @tf.function
    def eval_step(x, y, mask):
        return gan.evaluation_terms(x, y, mask)

    return train_step, eval_step


def _build_networks(recipe: Pix2PixRecipe, precision: str):
    """Generator and discriminator of the recipe in the ``precision`` policy."""
    from astrotf.models.registry import build_model

    built = []
    for table, config in (("model", recipe.model), ("discriminator", recipe.discriminator)):
        try:
            built.append(build_model(config.name, dtype=precision, **config.kwargs()))
        except (TypeError, ValueError) as err:
            raise AstroTFError(f"[{table}]: {err}") from None
    return built


def _objectives(recipe: Pix2PixRecipe):
    from astrotf.losses import AstroPicsLoss, Pix2PixLoss

    composite = AstroPicsLoss(recipe.loss) if recipe.gan.reconstruction == "astropics" else None
    return Pix2PixLoss(recipe.gan.l1_weight, composite)


def _build_gan(recipe: Pix2PixRecipe, record, precision: str, init):
    """Networks, optimisers, counters and the moving average, in the current strategy's scope;
    returns ``(gan, trackables, init_record)``."""
    import tensorflow as tf

    from astrotf.train.gan import ConditionalGAN

    tcfg, gcfg = recipe.train, recipe.gan
    generator, discriminator = _build_networks(recipe, precision)
    init_record = resunet.initialise_from(generator, init, recipe) if init is not None else record.state.get("init")
    g_optimizer = resunet.build_optimizer(tcfg, precision, generator.trainable_variables, gcfg.beta_1)
    d_cfg = dataclasses.replace(tcfg, lr=gcfg.discriminator_lr or tcfg.lr)
    d_optimizer = resunet.build_optimizer(d_cfg, precision, discriminator.trainable_variables, gcfg.beta_1)
    ema = None
    if tcfg.ema > 0:
        from astrotf.train.ema import WeightAverage

        ema = WeightAverage(generator, tcfg.ema)
    linear = recipe.model.kwargs().get("normalization") == "background"
    gan = ConditionalGAN(generator, discriminator, linear=linear, ema=ema)
    gan.compile(g_optimizer=g_optimizer, d_optimizer=d_optimizer, loss=_objectives(recipe))
    trackables = {"model": generator, "optimizer": g_optimizer, "discriminator": discriminator,
                  "discriminator_optimizer": d_optimizer,
                  "epoch": tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"),
                  "best_val_loss": tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_val_loss")}
    if ema is not None:
        trackables["ema"] = ema
    return gan, trackables, init_record


def _build_session(recipe, record, out_dir, distribution, strategy, init, verbose, samples):
    """The :class:`astrotf.train.resunet.Session` of a GAN run (checkpoint restored on resume);
    returns the session, the precision and the ``--init`` provenance."""
    import keras
    import tensorflow as tf

    from astrotf.data import pipeline

    precision = resolve_precision(recipe.train.precision, bool(tf.config.list_physical_devices("GPU")))
    log.info("precision: %s", precision)
    keras.utils.set_random_seed(recipe.train.seed)
    resunet.check_replicas(recipe, strategy, distribution.num_replicas_in_sync)
    with distribution.scope():
        gan, trackables, init_record = _build_gan(recipe, record, precision, init)
    record.attach(**trackables)
    train_step, eval_step = make_steps(gan, distribution)
    val_ds = pipeline.make_dataset(samples[1], recipe.data, training=False)
    writers = runs.log_writers(out_dir)
    session = resunet.Session(recipe, record, out_dir, distribution, strategy, gan.generator, gan.g_optimizer,
                              trackables["epoch"], trackables["best_val_loss"], train_step, eval_step, samples[0],
                              val_ds, writers, verbose, gan.linear, gan.ema, command=COMMAND)
    return session, precision, init_record


def train_pix2pix(recipe: Pix2PixRecipe, data_dir: str | os.PathLike | None, run_dir: str | os.PathLike, *,
                  resume: bool = False, verbose: int = 1, strategy: str = "default",
                  init: str | os.PathLike | None = None) -> dict:
    """Train the enhanced Pix2Pix on a data folder, or resume a run.

    Parameters
    ----------
    recipe : Pix2PixRecipe
        Generator, discriminator, data, losses and optimisation. On resume both networks must be
        the run's; the other tables may change (a new phase is recorded).
    data_dir : path or None
        Training images (as for ``astrotf train resunet``); on resume None: the run's folder.
    run_dir : path
        Where checkpoints, logs, previews and the generator's ``.keras`` files go.
    resume : bool
        Continue from the last checkpoint of ``run_dir`` (both networks and optimisers).
    verbose : int
        0 silent, 1 progress bar, 2 one line per epoch.
    strategy : {"default", "mirrored", "multiworker"}
        Distribution (:func:`astrotf.runs.make_strategy`); ``--batch-size`` is the global batch.
    init : path, optional
        Start the generator from a trained model of the same architecture.

    Returns
    -------
    dict
        The final ``run.json`` content.

    Raises
    ------
    AstroTFError
        Bad data, model arguments or run folder; :class:`astrotf.runs.TrainingInterrupted` after
        a clean Ctrl-C stop.

    References
    ----------
    Xu, §3.1 (losses), §4.1 (training flow), §4.2 (Adam, cosine schedule, gradient clipping).
    """
    return resunet.run_training(recipe, data_dir, run_dir, _build_session, pix2pix_recipe_from_dict, resume=resume,
                                verbose=verbose, strategy=strategy, init=init)
