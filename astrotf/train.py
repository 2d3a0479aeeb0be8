"""Training runs: fit, checkpoints, resume, TensorBoard, previews (AstroPics §2.6).

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
step counter, per-epoch data seed) and a clean stop on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import platform
import signal
import threading
import time
from pathlib import Path

import numpy as np

from astrotf.errors import AstroTFError
from astrotf.recipes import Recipe, recipe_from_dict, resolve_precision

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


class TrainingInterrupted(Exception):
    """Raised after a clean stop on Ctrl-C; the run can be resumed."""


def append_history(path: Path, row: dict) -> None:
    """Append one row to the run's ``history.csv`` (with the header when the file is new)."""
    new_file = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new_file:
            writer.writeheader()
        writer.writerow(row)


@contextlib.contextmanager
def deferred_interrupt():
    """Ctrl-C stops at the next safe point, not wherever Python happens to be.

    Yields ``stop_requested()``; the training loop calls it between steps and raises
    ``KeyboardInterrupt`` there. A KeyboardInterrupt raised asynchronously inside TensorFlow
    (while tf.data traces a function on another thread, say) can surface as another error
    ("Concurrent access?") and lose the clean stop. A second Ctrl-C stops at once. Outside the
    main thread (where signals cannot be handled) it only yields a function that returns False.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    hits = []
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if hits:
            raise KeyboardInterrupt
        hits.append(time.time())
        log.warning("Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, previous)


def hardware_summary() -> dict:
    """What the run is trained on, for the model's metadata."""
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "gpus": gpus, "tensorflow": tf.__version__,
            "platform": platform.platform()}


def _data_provenance(data_dir: Path, samples) -> dict:
    info = {"data_dir": str(data_dir), "n_images": len(samples), "images": [s.name for s in samples]}
    for extra in ("MANIFEST.json", "CREDITS.json"):
        path = data_dir / extra
        if path.is_file():
            info[extra.split(".")[0].lower()] = extra
    return info


def _stretch(tile: np.ndarray, linear: bool, lo=None, hi=None) -> np.ndarray:
    """Map a tile to [0, 1] for display: clip for stretched data, asinh for linear data."""
    if not linear:
        return np.clip(tile, 0.0, 1.0)
    span = max(hi - lo, 1e-12)
    return np.clip(np.arcsinh(np.clip(tile - lo, 0, None) / span * 10) / np.arcsinh(10), 0, 1)


def write_preview(path: Path, noisy, denoised, clean, mask, linear: bool, max_rows: int = 4) -> None:
    """PNG grid, one row per tile: noisy | denoised | clean | star mask."""
    import cv2

    rows = []
    for i in range(min(max_rows, len(noisy))):
        lo, hi = (np.percentile(clean[i], [1, 99.5]) if linear else (None, None))
        panels = [_stretch(a[i], linear, lo, hi) for a in (noisy, denoised, clean)]
        panels.append(np.clip(mask[i], 0, 1))
        panels = [np.repeat(p, 3, axis=-1) if p.shape[-1] == 1 else p for p in panels]
        sep = np.ones((panels[0].shape[0], 4, 3), np.float32)
        rows.append(np.concatenate(sum(([p, sep] for p in panels), [])[:-1], axis=1))
        rows.append(np.ones((4, rows[-1].shape[1], 3), np.float32))
    grid = (np.concatenate(rows[:-1], axis=0) * 255 + 0.5).astype(np.uint8)
    tmp = path.with_name(f".{path.name}.tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    os.replace(tmp, path)


def _atomic_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def load_run(run_dir: str | os.PathLike) -> dict:
    """The ``run.json`` of a run directory."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise AstroTFError(f"{run_dir}: not a training run (no {RUN_FILE})")
    return json.loads(path.read_text())


STRATEGIES = ("default", "mirrored", "multiworker")


def _scalar(variable) -> float:
    """A Keras / tf.distribute scalar variable as a Python number (``int()`` fails on mirrored ones)."""
    import keras

    return float(keras.ops.convert_to_numpy(variable))


def _steps_done(optimizer) -> int:
    return int(_scalar(optimizer.iterations))


def worker_task() -> tuple[bool, int]:
    """``(is_chief, task_id)`` of this process from ``TF_CONFIG`` (``(True, 0)`` without one).

    The chief is the ``chief`` task or, in a cluster without one, worker 0 (TensorFlow's rule).
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True, 0
    try:
        config = json.loads(raw)
        task_type, task_id = config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError):
        raise AstroTFError(f"TF_CONFIG is not valid JSON with task.type and task.index. Received: {raw!r}") from None
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in config["cluster"])
    return chief, task_id


def make_strategy(name: str):
    """A ``tf.distribute`` strategy by name.

    ``default``: one device; ``mirrored``: all GPUs of this machine (one CPU device
    without GPUs); ``multiworker``: synchronous data parallelism over the machines of
    ``TF_CONFIG``, all-reducing gradients with collective ops. Must be called before
    any other TensorFlow op runs (a MultiWorkerMirroredStrategy requirement).
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise AstroTFError("--strategy multiworker needs TF_CONFIG describing the cluster and this task")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise AstroTFError(f"unknown strategy {name!r}; expected one of {list(STRATEGIES)}")


def _init_model_file(init: str | os.PathLike) -> Path:
    """The ``.keras`` file of ``--init``: the file itself, a model folder's ``model.keras`` or a run's best model."""
    path = Path(init)
    for candidate in (path, path / "model.keras", path / "model_best.keras"):
        if candidate.is_file() and candidate.suffix == ".keras":
            return candidate
    raise AstroTFError(f"{init}: no model to start from (--init takes a .keras file, a model folder or a run)")


def _initialise_from(model, init: str | os.PathLike, recipe: Recipe) -> dict:
    """Copy the weights of the model at ``init`` into ``model`` (same architecture); return its provenance."""
    import keras

    source = _init_model_file(init)
    try:
        base = keras.saving.load_model(source, compile=False)
    except Exception as err:  # keras raises many types for a bad archive
        raise AstroTFError(f"{source}: cannot be loaded as a Keras model ({str(err).splitlines()[0]})") from None
    wanted = recipe.model.kwargs()
    have = {k: base.get_config().get(k) for k in wanted}
    if type(base).__name__.lower() != recipe.model.name or have != wanted:
        raise AstroTFError(f"{source}: its architecture {type(base).__name__} {have} differs from the recipe's "
                           f"{recipe.model.name} {wanted} (--init needs the same model)")
    model.set_weights(base.get_weights())
    log.info("starting from the weights of %s", source)
    return init_provenance(source)


def init_provenance(source: Path) -> dict:
    """What ``--init`` started from: the model file, its recipe and training record (with its own
    ``init``, so a chain of fine-tuning runs stays traceable to the first)."""
    try:  # a path inside the working tree is recorded relative to it (the record travels with the model)
        shown = source.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = source
    record = {"model": str(shown)}
    if (source.parent / "metadata.json").is_file():  # an exported model: which export of it
        info = json.loads((source.parent / "metadata.json").read_text())
        record.update(exported=info.get("exported"), training=info.get("training"), recipe=info.get("recipe"))
    elif (source.parent / RUN_FILE).is_file():  # a run directory
        info = json.loads((source.parent / RUN_FILE).read_text())
        record.update(recipe=info.get("recipe"), training={
            "steps": info.get("step"), "wall_time_s": info.get("wall_time_s"), "hardware": info.get("hardware"),
            "precision": info.get("precision"), "data": {k: v for k, v in info.get("data", {}).items()
                                                       if k not in ("train", "validation")},
            "earlier_phases": info.get("phases", []), "init": info.get("init")})
    return record


class RunRecord:
    """``run.json`` and ``tf.train`` checkpoints of a run directory: the resume machinery
    shared by :func:`train` and :mod:`astrotf.train_self2self`.

    Parameters
    ----------
    run_dir : path
        The run directory.
    resume : bool
        Read the existing ``run.json`` (error if absent); otherwise refuse a folder that
        already holds a run.
    out_dir : path, optional
        Where this process writes ``run.json`` and checkpoints, if not ``run_dir``
        (a non-chief worker); it still resumes from ``run_dir``'s.
    """

    def __init__(self, run_dir: str | os.PathLike, resume: bool, out_dir: str | os.PathLike | None = None):
        self.dir = Path(run_dir)
        self.out = Path(out_dir) if out_dir is not None else self.dir
        self.path = self.out / RUN_FILE
        self.resume = resume
        if resume:
            self.state = load_run(self.dir)
        else:
            if self.path.exists():
                raise AstroTFError(f"{self.dir}: already holds a training run; pass --resume or choose another --out")
            self.state = {}
        self.manager = None

    def attach(self, **trackables):
        """Create the checkpoint of ``trackables`` (model, optimizer, counters); restore it on resume."""
        import tensorflow as tf

        ckpt = tf.train.Checkpoint(**trackables)
        self.manager = tf.train.CheckpointManager(ckpt, self.out / "checkpoints", max_to_keep=3)
        if self.resume:
            latest = tf.train.latest_checkpoint(self.dir / "checkpoints")  # every worker resumes from the chief's
            if latest is None:
                raise AstroTFError(f"{self.dir}: no checkpoint to resume from")
            ckpt.restore(latest).assert_existing_objects_matched()
            log.info("resumed from %s", latest)
        return ckpt

    def start(self, **fields) -> None:
        """Record what the run is (recipe, data, hardware) and start the wall clock."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.state.update({**fields, "hardware": hardware_summary(),
                           "astrotf_version": __import__("astrotf").__version__})
        self.state.setdefault("wall_time_s", 0.0)
        self.state.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self._wall_start, self._wall_before = time.time(), self.state["wall_time_s"]

    def elapsed(self) -> float:
        """Training wall time in seconds, earlier sessions of a resumed run included."""
        return self._wall_before + time.time() - self._wall_start

    def save(self, status: str, step: int, **fields) -> None:
        """Checkpoint (numbered by ``step``) and an atomic ``run.json`` update."""
        self.manager.save(checkpoint_number=step)
        self.state.update({"status": status, "step": step, **fields,
                           "wall_time_s": self.elapsed(),
                           "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        _atomic_json(self.path, self.state)

    def interrupted(self, step: int, command: str, **fields) -> TrainingInterrupted:
        """Checkpoint after Ctrl-C; returns the exception that says how to continue."""
        self.save("interrupted", step, **fields)
        return TrainingInterrupted(f"stopped at step {step}; checkpoint saved in {self.dir / 'checkpoints'}; "
                                   f"continue with: {command} --out {self.dir} --resume")


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
        Distribution (see :func:`make_strategy`). The batch is the global batch, split
        over the replicas; checkpoints are the same whatever the strategy, so a run can
        be resumed under another one. With several workers the chief writes
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
        Bad data or run folder. :class:`TrainingInterrupted` after a clean Ctrl-C stop.
    """
    run_dir = Path(run_dir)
    is_chief, task_id = worker_task() if strategy == "multiworker" else (True, 0)
    out_dir = run_dir if is_chief else run_dir / "workers" / f"worker-{task_id}"
    record = RunRecord(run_dir, resume, out_dir)
    state = record.state
    if resume and init is not None:
        raise AstroTFError("--init starts a new run; it cannot be combined with --resume")
    if resume:
        saved = recipe_from_dict(state["recipe"], str(run_dir / RUN_FILE))
        if saved.model != recipe.model:
            raise AstroTFError(f"{run_dir}: the run's model is {saved.model}, the recipe asks for {recipe.model}")
        if saved != recipe:  # e.g. a fine-tuning phase: keep what the earlier steps were trained with
            state.setdefault("phases", []).append({"until_step": state.get("step"), "recipe": state["recipe"]})
        data_dir = Path(data_dir or state["data"]["data_dir"])
    else:
        if data_dir is None:
            raise AstroTFError("--data is required to start a training run")
        data_dir = Path(data_dir)

    # Validate the data before the heavy imports and before anything is written.
    from astrotf.data import pipeline

    samples = pipeline.prepare_samples(data_dir, recipe.data, out_dir / "cache")
    train_samples, val_samples = pipeline.split_samples(samples, recipe.data.val_fraction, recipe.data.seed)

    distribution = make_strategy(strategy)  # before any other TensorFlow op
    import keras
    import tensorflow as tf

    from astrotf.layers.normalization import background_stats
    from astrotf.losses import AstroPicsLoss
    from astrotf.models.registry import build_model

    tcfg = recipe.train
    precision = resolve_precision(tcfg.precision, bool(tf.config.list_physical_devices("GPU")))
    log.info("precision: %s", precision)
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(tcfg.seed)
    replicas = distribution.num_replicas_in_sync
    if recipe.data.batch_size % replicas:
        raise AstroTFError(f"--batch-size {recipe.data.batch_size} (the global batch) must be a multiple of the "
                           f"{replicas} replicas of --strategy {strategy}")
    if replicas > 1 or strategy != "default":
        log.info("strategy %s: %d replica(s), %d tiles per replica and step", strategy, replicas,
                 recipe.data.batch_size // replicas)
    with distribution.scope():  # model, optimizer and counters live on the strategy's devices
        model = build_model(recipe.model.name, **recipe.model.kwargs())
        init_record = _initialise_from(model, init, recipe) if init is not None else state.get("init")
        total_steps = tcfg.epochs * tcfg.steps_per_epoch
        if tcfg.schedule == "cosine":
            warmup = min(tcfg.warmup_steps, total_steps // 10)
            lr = keras.optimizers.schedules.CosineDecay(
                tcfg.lr / 10 if warmup else tcfg.lr, max(total_steps - warmup, 1), alpha=0.05,
                warmup_target=tcfg.lr if warmup else None, warmup_steps=warmup)
        else:
            lr = tcfg.lr
        optimizer = keras.optimizers.Adam(learning_rate=lr, global_clipnorm=tcfg.clip_norm)
        if precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        loss_fn = AstroPicsLoss(recipe.loss)
        linear = recipe.model.normalization == "background"

        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        best_var = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_val_loss")
    record.attach(model=model, optimizer=optimizer, epoch=epoch_var, best_val_loss=best_var)

    def scored(x, y, pred):
        """Prediction and target in the units the loss sees (normalised for linear data)."""
        if not linear:
            return y, pred
        offset, scale = background_stats(x)
        return (y - offset) / scale, (tf.cast(pred, tf.float32) - offset) / scale

    def replica_step(x, y, mask):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            terms = loss_fn.terms(*scored(x, y, pred), mask)
            # each replica's mean loss / replicas: the optimizer all-reduces (sums) the gradients
            scaled = optimizer.scale_loss(terms["loss"] / replicas)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return terms

    @tf.function
    def train_step(x, y, mask):
        terms = distribution.run(replica_step, args=(x, y, mask))
        return {k: distribution.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in terms.items()}

    @tf.function
    def eval_step(x, y, mask):
        pred = model(x, training=False)
        return loss_fn.terms(*scored(x, y, pred), mask), pred

    val_ds = pipeline.make_dataset(val_samples, recipe.data, training=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("previews", "logs"):
        (out_dir / sub).mkdir(exist_ok=True)
    writers = {k: tf.summary.create_file_writer(str(out_dir / "logs" / k)) for k in ("train", "validation")}

    record.start(
        recipe=recipe.to_dict(),
        data={**_data_provenance(data_dir, samples), "train": [s.name for s in train_samples],
              "validation": [s.name for s in val_samples]},
        precision=precision,
        init=init_record,
        strategy={"name": strategy, "replicas": replicas, "chief": is_chief, "task": task_id},
    )

    def save_state(status: str) -> None:
        record.save(status, _steps_done(optimizer), epoch=int(_scalar(epoch_var)), best_val_loss=_scalar(best_var))

    history_path = out_dir / "history.csv"
    step = _steps_done(optimizer)
    with deferred_interrupt() as stop_requested:  # Ctrl-C: a clean stop between steps
        try:
            for epoch in range(int(_scalar(epoch_var)), tcfg.epochs):
                done_in_epoch = step - epoch * tcfg.steps_per_epoch
                remaining = tcfg.steps_per_epoch - max(done_in_epoch, 0)
                if verbose:
                    log.info("Epoch %d/%d", epoch + 1, tcfg.epochs)
                bar = keras.utils.Progbar(tcfg.steps_per_epoch, verbose=verbose if verbose else 0,
                                          stateful_metrics=["lr"])
                if done_in_epoch > 0:
                    bar.update(done_in_epoch)
                sums: dict[str, float] = {}
                train_ds = pipeline.make_dataset(train_samples, recipe.data, training=True, epoch=epoch).take(remaining)
                if strategy != "default":
                    options = tf.data.Options()  # workers take interleaved tiles of the same seeded stream
                    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
                    train_ds = distribution.experimental_distribute_dataset(train_ds.with_options(options))
                for x, y, mask in train_ds:
                    if stop_requested():
                        raise KeyboardInterrupt
                    terms = {k: float(v) for k, v in train_step(x, y, mask).items()}
                    if not np.isfinite(terms["loss"]):
                        raise AstroTFError(f"{run_dir}: loss became {terms['loss']} at step {step + 1}; "
                                           "lower --lr or use --precision float32")
                    step += 1
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + v
                    current_lr = _scalar(optimizer.learning_rate)
                    bar.update(step - epoch * tcfg.steps_per_epoch, [("loss", terms["loss"]), ("lr", current_lr)])
                    with writers["train"].as_default(step=step):
                        for k, v in terms.items():
                            tf.summary.scalar(k, v)
                        tf.summary.scalar("learning_rate", current_lr)
                    if step % tcfg.checkpoint_every == 0:
                        save_state("running")

                # validation, preview, checkpoints
                val_sums, n_val, first = {}, 0, None
                for x, y, mask in val_ds:
                    if stop_requested():
                        raise KeyboardInterrupt
                    terms, pred = eval_step(x, y, mask)
                    for k, v in terms.items():
                        val_sums[k] = val_sums.get(k, 0.0) + float(v)
                    n_val += 1
                    if first is None:
                        first = [np.asarray(a, np.float32) for a in (x, pred, y, mask)]
                val = {k: v / n_val for k, v in val_sums.items()}
                with writers["validation"].as_default(step=step):
                    for k, v in val.items():
                        tf.summary.scalar(k, v)
                write_preview(out_dir / "previews" / f"epoch-{epoch + 1:04d}.png", *first, linear=linear)
                epoch_var.assign(epoch + 1)
                n_train = max(remaining, 1)
                row = {"epoch": epoch + 1, "step": step, **{f"train_{k}": v / n_train for k, v in sums.items()},
                       **{f"val_{k}": v for k, v in val.items()}, "lr": _scalar(optimizer.learning_rate)}
                append_history(history_path, row)
                if verbose:
                    log.info("val_loss %.5f (best %.5f)", val["loss"], min(_scalar(best_var), val["loss"]))
                if val["loss"] < _scalar(best_var):
                    best_var.assign(val["loss"])
                    model.save(out_dir / "model_best.keras")
                model.save(out_dir / "model_last.keras")
                save_state("running")
        except KeyboardInterrupt:
            raise record.interrupted(_steps_done(optimizer), f"astrotf train {recipe.model.name}",
                                     epoch=int(_scalar(epoch_var)), best_val_loss=_scalar(best_var)) from None
        finally:
            for w in writers.values():
                w.close()
    save_state("finished")
    return record.state
