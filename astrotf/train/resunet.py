"""Training of image-to-image denoisers (ResUNet, ...) on a data folder (AstroPics §2.6).

A run directory holds everything about one training::

    runs/NAME/
      run.json            recipe, data provenance, progress, wall time, hardware
      checkpoints/        "last" checkpoints: weights + optimizer state + epoch (tf.train)
      model_best.keras    best validation loss so far (what ``astrotf export`` takes)
      model_last.keras    end of the latest epoch
      history.csv         one row per epoch: every loss term, train and validation
      logs/               TensorBoard scalars (train, validation)
      previews/           epoch-NNNN.png: noisy | denoised | clean | star mask
      cache/              decoded training images (float32)

The loop is a custom ``tf.GradientTape`` step rather than ``model.fit`` because the
composite loss needs the star mask as an explicit argument and linear models are
scored in their normalised units; it also gives exact resume (optimizer state,
step counter, per-epoch data seed) and a clean stop on Ctrl-C. The run folder,
checkpoints, Ctrl-C and history are :mod:`astrotf.runs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np

from astrotf import runs
from astrotf.config import ModelConfig, Recipe, TrainConfig, recipe_from_dict, resolve_precision
from astrotf.errors import AstroTFError

log = logging.getLogger(__name__)

NAN_HINT = "lower --lr or use --precision float32"


# ----------------------------------------------------------------------------- settings
def learning_rate(tcfg: TrainConfig):
    """Adam's learning rate: cosine decay to 5 % after a linear warm-up from ``lr / 10``, or constant.

    The warm-up is at most a tenth of the run (``epochs * steps_per_epoch``).
    """
    import keras

    if tcfg.schedule != "cosine":
        return tcfg.lr
    total_steps = tcfg.epochs * tcfg.steps_per_epoch
    warmup = min(tcfg.warmup_steps, total_steps // 10)
    return keras.optimizers.schedules.CosineDecay(
        tcfg.lr / 10 if warmup else tcfg.lr, max(total_steps - warmup, 1), alpha=0.05,
        warmup_target=tcfg.lr if warmup else None, warmup_steps=warmup)


def build_optimizer(tcfg: TrainConfig, precision: str, variables, beta_1: float = 0.9):
    """Adam with :func:`learning_rate` and ``clip_norm``, loss-scaled under ``mixed_float16``, built for ``variables``."""
    import keras

    optimizer = keras.optimizers.Adam(learning_rate=learning_rate(tcfg), beta_1=beta_1,
                                      global_clipnorm=tcfg.clip_norm)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer


def initialise_from(model, init: str | os.PathLike, recipe: Recipe) -> dict:
    """Copy the weights of the model at ``init`` into ``model`` (same architecture); return its provenance."""
    from astrotf.models.registry import load_model

    source = runs.init_model_file(init)
    try:
        base = load_model(source)  # in Keras' safe mode unless --unsafe-model
    except AstroTFError:
        raise
    except Exception as err:  # keras raises many types for a bad archive
        raise AstroTFError(f"{source}: cannot be loaded as a Keras model ({str(err).splitlines()[0]})") from None
    def plain(value):  # a recipe's TOML list and a Keras config's list or tuple compare alike
        return tuple(value) if isinstance(value, (list, tuple)) else value

    from astrotf.models.registry import model_class

    expected = model_class(recipe.model.name).__name__
    if type(base).__name__ != expected:
        raise AstroTFError(f"{source}: is a {type(base).__name__}, the recipe's model is {recipe.model.name} "
                           f"({expected}); --init needs the same model")
    wanted = {k: plain(v) for k, v in recipe.model.kwargs().items()}
    have = {k: plain(base.get_config().get(k)) for k in wanted}
    if have != wanted:
        raise AstroTFError(f"{source}: its architecture {type(base).__name__} {have} differs from the recipe's "
                           f"{recipe.model.name} {wanted} (--init needs the same model)")
    model.set_weights(base.get_weights())
    log.info("starting from the weights of %s", source)
    return runs.init_provenance(source)


def _models(recipe) -> dict:
    """The recipe's model tables (``model``; a GAN's ``discriminator`` too) by field name."""
    return {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)
            if isinstance(getattr(recipe, f.name), ModelConfig)}


def _resolved(recipe: Recipe, where: str) -> Recipe:
    """``recipe`` with every constructor argument of its models spelled out (checks them against the classes)."""
    resolved = {}
    for field, config in _models(recipe).items():
        try:
            resolved[field] = config.resolved()
        except (TypeError, ValueError) as err:
            raise AstroTFError(f"{where}: [{field}] {err}") from None
    return dataclasses.replace(recipe, **resolved)


def run_recipe(recipe: Recipe, record: runs.RunRecord, data_dir, init,
               from_dict=recipe_from_dict) -> tuple[Recipe, Path]:
    """The recipe and data folder of the run: on resume the models must be the run's, and a changed
    recipe opens a new phase (the earlier steps' settings are kept in ``run.json``). ``from_dict``
    reads the run's recorded recipe (:func:`astrotf.config.recipe_from_dict` or a GAN's)."""
    if record.resume and init is not None:
        raise AstroTFError("--init starts a new run; it cannot be combined with --resume")
    if not record.resume and data_dir is None:
        raise AstroTFError("--data is required to start a training run")
    recipe = _resolved(recipe, "recipe")
    state = record.state
    if not record.resume:
        return recipe, Path(data_dir)
    saved = _resolved(from_dict(state["recipe"], str(record.dir / runs.RUN_FILE)), str(record.path))
    for field, config in _models(recipe).items():
        if getattr(saved, field) != config:
            raise AstroTFError(f"{record.dir}: the run's {field} is {getattr(saved, field)}, the recipe asks for "
                               f"{config}")
    if saved != recipe and state.get("step"):  # a later phase: keep what the earlier steps were trained with
        state.setdefault("phases", []).append({"until_step": state.get("step"), "recipe": state["recipe"]})
    return recipe, Path(data_dir or state["data"]["data_dir"])


# ----------------------------------------------------------------------------- the loop's state
@dataclasses.dataclass
class Session:
    """What one training session works with (built by :func:`_build_session`)."""

    recipe: Recipe
    record: runs.RunRecord
    out_dir: Path
    distribution: object
    strategy: str
    model: object
    optimizer: object
    epoch_var: object
    best_var: object
    train_step: object
    eval_step: object
    train_samples: list
    val_ds: object
    writers: dict
    verbose: int
    linear: bool
    ema: object = None
    #: The command that trains it, for the "continue with" hint after Ctrl-C.
    command: str = "astrotf train resunet"

    def step(self) -> int:
        """Optimisation steps done (the optimizer's counter, restored on resume)."""
        return int(runs.scalar(self.optimizer.iterations))

    def counters(self) -> dict:
        """The counters ``run.json`` records besides the step."""
        return {"epoch": int(runs.scalar(self.epoch_var)), "best_val_loss": runs.scalar(self.best_var)}

    def save(self, status: str) -> None:
        """Checkpoint and ``run.json``."""
        self.record.save(status, self.step(), **self.counters())


def make_steps(model, optimizer, loss_fn, distribution, linear: bool, ema=None):
    """The compiled ``train_step(x, y, mask) -> terms`` and ``eval_step(x, y, mask) -> (terms, pred)``.

    Linear models (``normalization="background"``) are scored in their normalised
    units. Under a strategy each replica's mean loss is divided by the replicas: the
    optimizer all-reduces (sums) the gradients. With ``ema`` (a
    :class:`~astrotf.train.ema.WeightAverage`) the averages follow every step.
    """
    import tensorflow as tf

    from astrotf.layers.normalization import background_stats

    replicas = distribution.num_replicas_in_sync

    conditioned = isinstance(model.input, (list, tuple))  # (image, noise_sigma): the science loss

    def loss_terms(x, y, pred, mask):
        """The loss terms, with prediction and target in the units the loss sees: normalised for linear
        data; a noise-conditioned model's target comes with the true σ around it, the loss's unit."""
        if conditioned:
            target, target_sigma = y
            return loss_fn.terms(target, pred, mask, target_sigma)
        if not linear:
            return loss_fn.terms(y, pred, mask)
        offset, scale = background_stats(x)
        return loss_fn.terms((y - offset) / scale, (tf.cast(pred, tf.float32) - offset) / scale, mask)

    def replica_step(x, y, mask):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            terms = loss_terms(x, y, pred, mask)
            scaled = optimizer.scale_loss(terms["loss"] / replicas)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        if ema is not None:
            ema.update(model.trainable_variables)
        return terms

    @tf.function
    def train_step(x, y, mask):
        terms = distribution.run(replica_step, args=(x, y, mask))
        return {k: distribution.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in terms.items()}

    @tf.function
    def eval_step(x, y, mask):
        pred = model(x, training=False)
        return loss_terms(x, y, pred, mask), pred

    return train_step, eval_step


# ----------------------------------------------------------------------------- one epoch
def epoch_dataset(session: Session, epoch: int, remaining: int):
    """The epoch's training batches (seeded by the epoch), ``remaining`` of them, distributed if needed."""
    import tensorflow as tf

    from astrotf.data import pipeline

    ds = pipeline.make_dataset(session.train_samples, session.recipe.data, training=True, epoch=epoch)
    ds = ds.take(remaining)
    if session.strategy == "default":
        return ds
    options = tf.data.Options()  # workers take interleaved tiles of the same seeded stream
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return session.distribution.experimental_distribute_dataset(ds.with_options(options))


def train_epoch(session: Session, epoch: int, step: int, stop_requested) -> tuple[dict, int, int]:
    """Run the epoch's remaining steps from ``step``; return the summed loss terms, the number of
    steps run and the step reached.

    Raises
    ------
    KeyboardInterrupt
        When ``stop_requested()`` (Ctrl-C) between steps.
    AstroTFError
        When the loss becomes NaN or infinite.
    """
    import tensorflow as tf

    tcfg = session.recipe.train
    done_in_epoch = step - epoch * tcfg.steps_per_epoch
    remaining = tcfg.steps_per_epoch - max(done_in_epoch, 0)
    if session.verbose:
        log.info("Epoch %d/%d", epoch + 1, tcfg.epochs)
    bar = runs.progress_bar(tcfg.steps_per_epoch, session.verbose, done_in_epoch)
    sums: dict[str, float] = {}
    for x, y, mask in epoch_dataset(session, epoch, remaining):
        if stop_requested():
            raise KeyboardInterrupt
        terms = {k: float(v) for k, v in session.train_step(x, y, mask).items()}
        runs.check_finite_loss(terms["loss"], step + 1, session.record.dir, NAN_HINT)
        step += 1
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v
        current_lr = runs.scalar(session.optimizer.learning_rate)
        bar.update(step - epoch * tcfg.steps_per_epoch, [("loss", terms["loss"]), ("lr", current_lr)])
        with session.writers["train"].as_default(step=step):
            for k, v in terms.items():
                tf.summary.scalar(k, v)
            tf.summary.scalar("learning_rate", current_lr)
        if step % tcfg.checkpoint_every == 0:
            session.save("running")
    return sums, remaining, step


def validate(session: Session, stop_requested) -> tuple[dict, list]:
    """Mean loss terms over the validation set and the first batch as ``[x, pred, y, mask]`` arrays."""
    val_sums, n_val, first = {}, 0, None
    for x, y, mask in session.val_ds:
        if stop_requested():
            raise KeyboardInterrupt
        terms, pred = session.eval_step(x, y, mask)
        for k, v in terms.items():
            val_sums[k] = val_sums.get(k, 0.0) + float(v)
        n_val += 1
        if first is None:  # a noise-conditioned model's (image, noise_sigma), (target, sigma): images shown
            first = [np.asarray(a[0] if isinstance(a, tuple) else a, np.float32) for a in (x, pred, y, mask)]
    return {k: v / n_val for k, v in val_sums.items()}, first


def history_row(epoch: int, step: int, sums: dict, n_train: int, val: dict, lr: float) -> dict:
    """The ``history.csv`` row of an epoch (1-based): mean train terms over its ``n_train`` steps (NaN when
    they all ran before the checkpoint the run resumed from), validation terms."""
    n_train = max(n_train, 1)
    return {"epoch": epoch, "step": step, **{f"train_{k}": sums.get(k, math.nan) / n_train for k in sums or val},
            **{f"val_{k}": v for k, v in val.items()}, "lr": lr}


def end_epoch(session: Session, epoch: int, step: int, sums: dict, n_train: int, val: dict, first: list) -> None:
    """Validation scalars, preview, history row and best / last models of an epoch (0-based)."""
    import tensorflow as tf

    out = session.out_dir
    with session.writers["validation"].as_default(step=step):
        for k, v in val.items():
            tf.summary.scalar(k, v)
    runs.write_preview(out / "previews" / f"epoch-{epoch + 1:04d}.png", *first, linear=session.linear)
    session.epoch_var.assign(epoch + 1)
    lr = runs.scalar(session.optimizer.learning_rate)
    runs.append_history(out / "history.csv", history_row(epoch + 1, step, sums, n_train, val, lr))
    best = runs.scalar(session.best_var)
    if session.verbose:
        log.info("val_loss %.5f (best %.5f)", val["loss"], min(best, val["loss"]))
    if val["loss"] < best:
        session.best_var.assign(val["loss"])
        runs.save_model(session.model, out / "model_best.keras")
    runs.save_model(session.model, out / "model_last.keras")


def evaluated_weights(session: Session):
    """Context in which the model holds the weights that are validated and saved: the moving
    average with ``train.ema``, else the trained weights themselves."""
    return session.ema.applied(session.model) if session.ema is not None else contextlib.nullcontext()


def run_epochs(session: Session) -> None:
    """Epochs from the restored epoch counter to ``train.epochs``; Ctrl-C checkpoints and raises
    :class:`astrotf.runs.TrainingInterrupted`."""
    with runs.deferred_interrupt() as stop_requested:  # Ctrl-C: a clean stop between steps
        try:
            step = session.step()
            for epoch in range(int(runs.scalar(session.epoch_var)), session.recipe.train.epochs):
                sums, n_train, step = train_epoch(session, epoch, step, stop_requested)
                with evaluated_weights(session):
                    val, first = validate(session, stop_requested)
                    end_epoch(session, epoch, step, sums, n_train, val, first)
                session.save("running")  # the trained weights (and the averages) go to the checkpoint
        except KeyboardInterrupt:
            raise session.record.interrupted(session.step(), session.command, **session.counters()) from None
        finally:
            for w in session.writers.values():
                w.close()


# ----------------------------------------------------------------------------- the run
def check_replicas(recipe: Recipe, strategy: str, replicas: int) -> None:
    """Refuse a global batch that does not split evenly over the strategy's replicas."""
    if recipe.data.batch_size % replicas:
        raise AstroTFError(f"--batch-size {recipe.data.batch_size} (the global batch) must be a multiple of the "
                           f"{replicas} replicas of --strategy {strategy}")
    if replicas > 1 or strategy != "default":
        log.info("strategy %s: %d replica(s), %d tiles per replica and step", strategy, replicas,
                 recipe.data.batch_size // replicas)


def _build_model(config: ModelConfig, precision: str | None = None, field: str = "model"):
    """The model of a recipe's ``[field]`` table; an out-of-range argument is a one-line error naming the table."""
    from astrotf.models.registry import build_model

    try:
        return build_model(config.name, dtype=precision, **config.kwargs())
    except (TypeError, ValueError) as err:
        raise AstroTFError(f"[{field}]: {err}") from None


def _build_session(recipe, record, out_dir, distribution, strategy, init, verbose, samples):
    """Model, optimizer, counters (restored on resume), compiled steps and log writers; returns
    the session, the precision and the ``--init`` provenance."""
    import keras
    import tensorflow as tf

    from astrotf.data import pipeline
    from astrotf.losses import AstroPicsLoss, ScienceLoss

    tcfg = recipe.train
    precision = resolve_precision(tcfg.precision, bool(tf.config.list_physical_devices("GPU")))
    log.info("precision: %s", precision)
    keras.utils.set_random_seed(tcfg.seed)
    check_replicas(recipe, strategy, distribution.num_replicas_in_sync)
    with distribution.scope():  # model, optimizer and counters live on the strategy's devices
        model = _build_model(recipe.model, precision)
        if init is None and record.resume_checkpoint() is None:  # a run killed before its first checkpoint
            init = record.state.get("init_source")
        init_record = initialise_from(model, init, recipe) if init is not None else record.state.get("init")
        optimizer = build_optimizer(tcfg, precision, model.trainable_variables)
        loss_fn = ScienceLoss(recipe.loss) if recipe.loss.kind == "science" else AstroPicsLoss(recipe.loss)
        linear = recipe.model.kwargs().get("normalization") == "background"
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        best_var = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_val_loss")
        ema = None
        if tcfg.ema > 0:
            from astrotf.train.ema import WeightAverage

            ema = WeightAverage(model, tcfg.ema)  # from the initial (or --init) weights
    trackables = {"ema": ema} if ema is not None else {}
    record.attach(model=model, optimizer=optimizer, epoch=epoch_var, best_val_loss=best_var, **trackables)
    runs.trim_history(out_dir / "history.csv", "epoch", int(runs.scalar(epoch_var)))
    train_step, eval_step = make_steps(model, optimizer, loss_fn, distribution, linear, ema)
    val_ds = pipeline.make_dataset(samples[1], recipe.data, training=False)
    writers = runs.log_writers(out_dir)
    session = Session(recipe, record, out_dir, distribution, strategy, model, optimizer, epoch_var, best_var,
                      train_step, eval_step, samples[0], val_ds, writers, verbose, linear, ema)
    return session, precision, init_record


def train(recipe: Recipe, data_dir: str | os.PathLike | None, run_dir: str | os.PathLike, *,
          resume: bool = False, verbose: int = 1, strategy: str = "default",
          init: str | os.PathLike | None = None) -> dict:
    """Train a model on a data folder, or resume a run.

    Parameters
    ----------
    recipe : Recipe
        Model, data, loss and optimisation settings. On resume its ``model`` must
        match the run's; the other sections may differ (e.g. more ``train.epochs`` to
        extend a run).
    data_dir : path or None
        Training images; on resume ``None`` means the folder the run was started on.
    run_dir : path
        Where checkpoints, logs and previews go.
    resume : bool
        Continue from the last checkpoint of ``run_dir``.
    verbose : int
        0 silent, 1 progress bar, 2 one line per epoch.
    strategy : {"default", "mirrored", "multiworker"}
        Distribution (see :func:`astrotf.runs.make_strategy`). The batch is the global
        batch, split over the replicas; checkpoints are the same whatever the strategy, so
        a run can be resumed under another one. With several workers the chief writes
        ``run_dir``; the other workers write their checkpoints and logs to
        ``run_dir/workers/worker-N`` and resume from the chief's checkpoints.
    init : path, optional
        Start a new run from the weights of a trained model of the same architecture
        (a ``.keras`` file, an exported model folder or a run directory): fine-tuning,
        e.g. a shipped model on one's own images. Its training provenance is recorded.

    Returns
    -------
    dict
        The final ``run.json`` content.

    Raises
    ------
    AstroTFError
        Bad data, model arguments or run folder. :class:`astrotf.runs.TrainingInterrupted`
        after a clean Ctrl-C stop.
    """
    return run_training(recipe, data_dir, run_dir, _build_session, recipe_from_dict, resume=resume,
                        verbose=verbose, strategy=strategy, init=init)


def run_training(recipe, data_dir, run_dir, build_session, from_dict, *, resume: bool, verbose: int,
                 strategy: str, init) -> dict:
    """The run of :func:`train` with a trainer's own ``build_session(recipe, record, out_dir, distribution,
    strategy, init, verbose, samples) -> (Session, precision, init_record)``; ``from_dict`` reads
    the recipe a resumed run recorded. Shared by the GAN trainer (:mod:`astrotf.train.pix2pix`)."""
    run_dir = Path(run_dir)
    is_chief, task_id = runs.worker_task() if strategy == "multiworker" else (True, 0)
    out_dir = run_dir if is_chief else run_dir / "workers" / f"worker-{task_id}"
    record = runs.RunRecord(run_dir, resume, out_dir)
    recipe, data_dir = run_recipe(recipe, record, data_dir, init, from_dict)  # checks the models before the data
    distribution = runs.make_strategy(strategy)  # before any other TensorFlow op
    with distribution.scope():  # each model constructed once (no weights): a bad value fails before any write
        for field, config in _models(recipe).items():
            _build_model(config, field=field)
    record.begin(recipe=recipe.to_dict(), data={"data_dir": str(data_dir)},
                 init_source=str(Path(init).resolve()) if init is not None else None)

    from astrotf.data import pipeline

    samples = pipeline.prepare_samples(data_dir, recipe.data, out_dir / "cache")
    split = pipeline.split_samples(samples, recipe.data.val_fraction, recipe.data.split_seed)
    session, precision, init_record = build_session(recipe, record, out_dir, distribution, strategy, init,
                                                    verbose, split)
    record.start(
        recipe=recipe.to_dict(),
        data={**runs.folder_provenance(data_dir, [s.name for s in samples]),
              "train": [s.name for s in split[0]], "validation": [s.name for s in split[1]]},
        precision=precision,
        init=init_record,
        strategy={"name": strategy, "replicas": distribution.num_replicas_in_sync, "chief": is_chief,
                  "task": task_id},
    )
    run_epochs(session)
    session.save("finished")
    return record.state
