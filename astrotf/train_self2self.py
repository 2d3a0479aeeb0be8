"""Self2Self training on one noisy image (TDR method, "Training").

From a single noisy image ``y`` the trainer draws patches (random position, random
horizontal / vertical / diagonal flip), Bernoulli masks ``B`` (keep probability
``keep_prob``) and fits the network to ``F(B·y) ≈ y`` on the dropped pixels only
(eq. 3, :func:`astrotf.losses.self2self_loss`). NaN pixels (off-disk, masked) are
never given to the network and never scored.

The run directory has the same layout and resume behaviour as a ResUNet run
(:class:`astrotf.train.RunRecord`)::

    runs/NAME/
      run.json            recipe (with the resolved normalisation), image provenance, progress, wall time, hardware
      checkpoints/        weights + optimizer state (tf.train), every ``checkpoint_every`` steps and on Ctrl-C
      model_last.keras    the latest weights; model_best.keras is the same file (no validation set)
      history.csv         step, mean loss since the previous row, learning rate, wall time
      previews/           step-NNNNNN.png: noisy | one dropout sample | 8-sample ensemble | keep mask

``init`` starts from another Self2Self model (a run, an exported model folder or a
``.keras`` file) and keeps its normalisation: the paper's base model + per-image
fine-tuning.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from astrotf.constants import MAD_TO_SIGMA, SELF2SELF_KEEP_PROB
from astrotf.errors import AstroTFError, check_fields

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Self2SelfModelConfig:
    """Architecture of :class:`astrotf.models.self2self.Self2Self` and its data normalisation.

    ``offset`` / ``scale`` of None are measured on the training image: the median of
    its finite pixels and ``scale_sigmas`` times their MAD-sigma.
    """

    name: str = "self2self"
    depth: int = 3
    base_filters: int = 32
    dropout: float = 0.3
    space_to_depth: int = 2
    negative_slope: float = 0.1
    offset: float | None = None
    scale: float | None = None
    scale_sigmas: float = 10.0

    def __post_init__(self):
        check_fields(self, [
            ("name", self.name == "self2self", "'self2self'"),
            ("depth", isinstance(self.depth, int) and 1 <= self.depth <= 6, "an integer in [1, 6]"),
            ("base_filters", isinstance(self.base_filters, int) and self.base_filters >= 1, "an integer >= 1"),
            ("dropout", isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1, "in [0, 1)"),
            ("space_to_depth", self.space_to_depth in (1, 2, 4), "1, 2 or 4"),
            ("scale", self.scale is None or (isinstance(self.scale, (int, float)) and self.scale > 0), "None or > 0"),
            ("scale_sigmas", isinstance(self.scale_sigmas, (int, float)) and self.scale_sigmas > 0, "> 0"),
        ])


@dataclasses.dataclass(frozen=True)
class Self2SelfTrainConfig:
    """Optimisation of a Self2Self run.

    Parameters
    ----------
    steps : int
        Total optimisation steps (a resumed run continues up to this number).
    keep_prob : float
        Bernoulli probability ``p`` that a pixel is given to the network (eq. 2).
    mask_block : int
        Draw the Bernoulli mask per ``mask_block × mask_block`` block of pixels (1: per
        pixel, as in the paper). Blocks hide a dropped pixel's neighbours too, for noise
        that is correlated between adjacent pixels.
    patch : int
        Patch size in px.
    batch_size : int
        Patches per step.
    lr : float
        Adam learning rate, cosine-decayed to 5 % over ``steps``.
    min_valid : float
        Patches with a smaller fraction of finite pixels are redrawn.
    checkpoint_every, log_every : int
        Steps between checkpoints (with previews) and between history rows.
    seed : int
        Seed of weights, patches, flips and masks: a run is reproducible.
    """

    steps: int = 2000
    keep_prob: float = SELF2SELF_KEEP_PROB
    mask_block: int = 1
    patch: int = 64
    batch_size: int = 8
    lr: float = 1e-3
    min_valid: float = 0.5
    checkpoint_every: int = 250
    log_every: int = 50
    seed: int = 0

    def __post_init__(self):
        check_fields(self, [
            ("steps", isinstance(self.steps, int) and self.steps >= 1, "an integer >= 1"),
            ("keep_prob", isinstance(self.keep_prob, (int, float)) and 0 < self.keep_prob < 1, "in (0, 1)"),
            ("mask_block", isinstance(self.mask_block, int) and 1 <= self.mask_block <= 8, "an integer in [1, 8]"),
            ("patch", isinstance(self.patch, int) and self.patch >= 16, "an integer >= 16"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
            ("lr", isinstance(self.lr, (int, float)) and 0 < self.lr < 1, "in (0, 1)"),
            ("min_valid", isinstance(self.min_valid, (int, float)) and 0 < self.min_valid <= 1, "in (0, 1]"),
            ("checkpoint_every", isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 1,
             "an integer >= 1"),
            ("log_every", isinstance(self.log_every, int) and self.log_every >= 1, "an integer >= 1"),
            ("seed", isinstance(self.seed, int), "an integer"),
        ])


@dataclasses.dataclass(frozen=True)
class Self2SelfRecipe:
    """``pipelines/self2self-*.toml``: a ``[model]`` and a ``[train]`` table."""

    model: Self2SelfModelConfig = Self2SelfModelConfig()
    train: Self2SelfTrainConfig = Self2SelfTrainConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def self2self_recipe_from_dict(values: dict, source: str = "recipe") -> Self2SelfRecipe:
    """Validated recipe from nested dicts; unknown keys are errors naming ``source``."""
    from astrotf.recipes import _build

    return _build(Self2SelfRecipe, values, source)


def load_self2self_recipe(path: str | os.PathLike) -> Self2SelfRecipe:
    """Read a Self2Self recipe (TOML). Raises AstroTFError naming the file."""
    from astrotf.recipes import read_toml

    return self2self_recipe_from_dict(read_toml(path), str(path))


def override_self2self(recipe: Self2SelfRecipe, **changes) -> Self2SelfRecipe:
    """Apply CLI overrides ``section__field=value``; ``None`` values are ignored."""
    from astrotf.recipes import override

    return override(recipe, **changes)


# ----------------------------------------------------------------------------- data
def robust_normalization(image: np.ndarray, sigmas: float = 10.0) -> tuple[float, float]:
    """``(offset, scale)``: median of the finite pixels and ``sigmas`` × their MAD-sigma.

    Raises
    ------
    AstroTFError
        If the image has no finite pixel or is constant.
    """
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        raise AstroTFError("the training image has no finite pixel")
    offset = float(np.median(finite))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(finite - offset)))
    if not sigma > 0:
        sigma = float(np.std(finite))
    if not sigma > 0:
        raise AstroTFError("the training image is constant; nothing to learn")
    return offset, sigmas * sigma


def sample_patches(image: np.ndarray, valid: np.ndarray, patch: int, batch: int, rng: np.random.Generator,
                   min_valid: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Random patches with random horizontal, vertical and diagonal flips.

    Parameters
    ----------
    image : ndarray (H, W, C) float32, NaN already filled
    valid : ndarray (H, W, C) float32, 1 = finite pixel
    patch, batch : int
    rng : numpy Generator
    min_valid : float
        Redraw (up to 50 times) patches with fewer finite pixels than this fraction.

    Returns
    -------
    (patches, valid) : ndarrays (batch, patch, patch, C) float32
    """
    height, width = image.shape[:2]
    out, out_valid = [], []
    for _ in range(batch):
        for _attempt in range(50):
            r = int(rng.integers(0, height - patch + 1))
            c = int(rng.integers(0, width - patch + 1))
            v = valid[r:r + patch, c:c + patch]
            if v.mean() >= min_valid:
                break
        p = image[r:r + patch, c:c + patch]
        flips = rng.integers(0, 2, 3)
        if flips[0]:
            p, v = p[:, ::-1], v[:, ::-1]
        if flips[1]:
            p, v = p[::-1], v[::-1]
        if flips[2]:
            p, v = p.transpose(1, 0, 2), v.transpose(1, 0, 2)
        out.append(p)
        out_valid.append(v)
    return np.stack(out).astype(np.float32), np.stack(out_valid).astype(np.float32)


def _load_init(init: str | os.PathLike):
    """A Self2Self Keras model from a run directory, an exported model folder or a .keras file."""
    import keras

    import astrotf.models.registry  # noqa: F401

    from astrotf.models.self2self import Self2Self

    path = Path(init)
    for candidate in (path / "model_last.keras", path / "model.keras", path):
        if candidate.is_file() and candidate.suffix == ".keras":
            break
    else:
        raise AstroTFError(f"{init}: no Self2Self model found (--init takes a run, a model folder or a .keras file)")
    model = keras.saving.load_model(candidate, compile=False)
    if not isinstance(model, Self2Self):
        raise AstroTFError(f"{candidate}: is a {type(model).__name__}, not a Self2Self model (--init)")
    return model, candidate


# ----------------------------------------------------------------------------- training
def train_self2self(recipe: Self2SelfRecipe, image_path: str | os.PathLike | None, run_dir: str | os.PathLike,
                    *, init: str | os.PathLike | None = None, resume: bool = False, verbose: int = 1) -> dict:
    """Train Self2Self on one image, or resume such a run.

    Parameters
    ----------
    recipe : Self2SelfRecipe
        On resume, the run's ``model`` section is used (it holds the resolved
        normalisation); ``train`` may differ (e.g. more ``steps`` to extend a run).
    image_path : path or None
        The noisy training image (any format :func:`astrotf.io.read_image` reads); on
        resume ``None`` means the run's own image.
    run_dir : path
        Run directory (see the module docstring).
    init : path, optional
        Base model to fine-tune from (ignored on resume).
    resume : bool
        Continue from the last checkpoint of ``run_dir``.
    verbose : int
        0 silent, 1 progress bar, 2 one log line per ``log_every`` steps.

    Returns
    -------
    dict
        The final ``run.json`` content.

    Raises
    ------
    AstroTFError
        Bad image, recipe or run folder. :class:`astrotf.train.TrainingInterrupted`
        after a clean Ctrl-C stop.
    """
    from astrotf import io
    from astrotf.train import RunRecord, append_history, deferred_interrupt, write_preview

    record = RunRecord(run_dir, resume)
    run_dir = record.dir
    if resume:
        saved = self2self_recipe_from_dict(record.state["recipe"], str(record.path))
        recipe = dataclasses.replace(recipe, model=saved.model)
        image_path = Path(image_path or record.state["data"]["image"])
        init = None
    elif image_path is None:
        raise AstroTFError("IMAGE is required to start a Self2Self run")
    image_path = Path(image_path)
    data, info = io.read_image(image_path)
    data = data.astype(np.float32, copy=False)
    tcfg = recipe.train
    if min(data.shape[:2]) < tcfg.patch:
        raise AstroTFError(f"{image_path}: {data.shape[1]}x{data.shape[0]} px is smaller than --patch {tcfg.patch}")
    finite = np.isfinite(data)
    if finite.mean() < 0.01:
        raise AstroTFError(f"{image_path}: fewer than 1 % of the pixels are finite")

    import keras
    import tensorflow as tf

    from astrotf.data.masks import bernoulli_mask
    from astrotf.ensemble import block_keep_mask
    from astrotf.losses import self2self_loss
    from astrotf.models.self2self import Self2Self

    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(tcfg.seed)
    mcfg = recipe.model
    base = None
    if init is not None:
        base, init_path = _load_init(init)
        if base.channels != data.shape[-1]:
            raise AstroTFError(f"{init}: model has {base.channels} channel(s), {image_path} has {data.shape[-1]}")
        mcfg = dataclasses.replace(mcfg, **{k: base.get_config()[k] for k in (
            "depth", "base_filters", "dropout", "space_to_depth", "negative_slope", "offset", "scale")})
    if mcfg.offset is None or mcfg.scale is None:
        offset, scale = robust_normalization(data, mcfg.scale_sigmas)
        mcfg = dataclasses.replace(mcfg, offset=mcfg.offset if mcfg.offset is not None else offset,
                                   scale=mcfg.scale if mcfg.scale is not None else scale)
    recipe = dataclasses.replace(recipe, model=mcfg)
    model = Self2Self(channels=int(data.shape[-1]), depth=mcfg.depth, base_filters=mcfg.base_filters,
                      dropout=mcfg.dropout, space_to_depth=mcfg.space_to_depth, offset=mcfg.offset,
                      scale=mcfg.scale, negative_slope=mcfg.negative_slope)
    if base is not None:
        model.set_weights(base.get_weights())
        log.info("fine-tuning from %s", init_path)
    lr = keras.optimizers.schedules.CosineDecay(tcfg.lr, tcfg.steps, alpha=0.05)
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    optimizer.build(model.trainable_variables)
    record.attach(model=model, optimizer=optimizer)

    filled = np.where(finite, data, np.float32(mcfg.offset)).astype(np.float32)
    valid = finite.astype(np.float32)
    offset, scale = np.float32(mcfg.offset), np.float32(mcfg.scale)

    @tf.function
    def train_step(y, valid_px, mask_seed):
        shape = tf.shape(y)
        b = tcfg.mask_block
        keep = bernoulli_mask([shape[0], -(-shape[1] // b), -(-shape[2] // b), shape[3]], tcfg.keep_prob, mask_seed)
        if b > 1:
            keep = tf.repeat(tf.repeat(keep, b, axis=1), b, axis=2)[:, :shape[1], :shape[2]]
        with tf.GradientTape() as tape:
            pred = model([y, keep * valid_px])
            loss = self2self_loss((y - offset) / scale, (pred - offset) / scale, keep, valid_px)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    preview_rng = np.random.default_rng([tcfg.seed, 2**31 - 1])
    preview_x, preview_valid = sample_patches(filled, valid, min(tcfg.patch * 2, min(data.shape[:2])), 2,
                                              preview_rng, tcfg.min_valid)

    def preview(step: int) -> None:
        masks = [block_keep_mask(np.random.default_rng([tcfg.seed, step, i]), preview_x.shape, tcfg.keep_prob,
                                 tcfg.mask_block) * preview_valid for i in range(8)]
        samples = [np.asarray(model([preview_x, m])) for m in masks]
        write_preview(run_dir / "previews" / f"step-{step:06d}.png", preview_x, samples[0],
                      np.mean(samples, axis=0), masks[0], linear=True)

    record.start(
        recipe=recipe.to_dict(),
        data={"image": str(image_path), "name": image_path.name, "shape": list(data.shape),
              "format": info.format, "finite_fraction": round(float(finite.mean()), 4),
              "bunit": (info.header or {}).get("BUNIT") if info.format == "fits" else None},
        init=str(init) if init is not None else record.state.get("init"),
        precision="float32",
    )
    (run_dir / "previews").mkdir(exist_ok=True)

    def save(status: str) -> None:
        step = int(optimizer.iterations)
        record.save(status, step)
        model.save(run_dir / "model_last.keras")
        shutil.copyfile(run_dir / "model_last.keras", run_dir / "model_best.keras")

    history_path = run_dir / "history.csv"
    step = int(optimizer.iterations)
    bar = keras.utils.Progbar(tcfg.steps, verbose=1 if verbose == 1 else 0, stateful_metrics=["lr"])
    if step:
        bar.update(step)
    losses: list[float] = []
    with deferred_interrupt() as stop_requested:  # Ctrl-C: a clean stop between steps
        try:
            while step < tcfg.steps:
                if stop_requested():
                    raise KeyboardInterrupt
                rng = np.random.default_rng([tcfg.seed, step])
                y, v = sample_patches(filled, valid, tcfg.patch, tcfg.batch_size, rng, tcfg.min_valid)
                loss = float(train_step(tf.constant(y), tf.constant(v), tf.constant([tcfg.seed, step], tf.int64)))
                if not np.isfinite(loss):
                    raise AstroTFError(f"{run_dir}: loss became {loss} at step {step + 1}; lower --lr")
                step += 1
                losses.append(loss)
                current_lr = float(optimizer.learning_rate)
                bar.update(step, [("loss", loss), ("lr", current_lr)])
                if step % tcfg.log_every == 0 or step == tcfg.steps:
                    row = {"step": step, "loss": float(np.mean(losses)), "lr": current_lr,
                           "wall_time_s": round(record.elapsed(), 2)}
                    append_history(history_path, row)
                    if verbose == 2:
                        log.info("step %d/%d loss %.5f lr %.2e", step, tcfg.steps, row["loss"], current_lr)
                    losses = []
                if step % tcfg.checkpoint_every == 0 and step < tcfg.steps:
                    save("running")
                    preview(step)
        except KeyboardInterrupt:
            err = record.interrupted(int(optimizer.iterations), "astrotf train self2self")
            model.save(run_dir / "model_last.keras")
            raise err from None
    save("finished")
    preview(step)
    return record.state
