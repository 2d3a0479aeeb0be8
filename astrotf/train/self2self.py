"""Self2Self training on one noisy image (TDR method, "Training").

From a single noisy image ``y`` the trainer draws patches (random position, random
horizontal / vertical / diagonal flip), Bernoulli masks ``B`` (keep probability
``keep_prob``) and fits the network to ``F(B·y) ≈ y`` on the dropped pixels only
(eq. 3, :func:`astrotf.losses.self2self_loss`). NaN pixels (off-disk, masked) are
never given to the network and never scored.

The run directory has the same layout and resume behaviour as a ResUNet run
(:class:`astrotf.runs.RunRecord`)::

    runs/NAME/
      run.json            recipe (with the resolved normalisation), image provenance, progress, wall time, hardware
      checkpoints/        weights + optimizer state (tf.train), every ``checkpoint_every`` steps and on Ctrl-C
      model_last.keras    the latest weights; model_best.keras is the same file (no validation set)
      history.csv         step, mean loss since the previous row, learning rate, wall time
      previews/           step-NNNNNN.png: noisy | one dropout sample | 8-sample ensemble | keep mask

``init`` starts from another Self2Self model (a run, an exported model folder or a
``.keras`` file) and keeps its normalisation: the paper's base model + per-image
fine-tuning.

The run machinery here (image, patches, normalisation, checkpoints, resume, Ctrl-C) serves every
one-image method; ``[train] method = "neighbor2neighbor"`` takes its network, train step and
previews from :mod:`astrotf.train.neighbor2neighbor`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from astrotf import runs
from astrotf.config import Self2SelfRecipe, self2self_recipe_from_dict
from astrotf.constants import MAD_TO_SIGMA
from astrotf.errors import AstroTFError

log = logging.getLogger(__name__)

#: The Self2Self constructor arguments that ``init`` takes from its base model (its architecture
#: and normalisation); ``channels`` comes from the image.
INIT_ARGUMENTS = ("depth", "base_filters", "dropout", "space_to_depth", "negative_slope", "offset", "scale")


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


# ----------------------------------------------------------------------------- model
#: What the trainer calls the networks of ``[model] name``, in messages.
NETWORK_NAMES = {"self2self": "Self2Self", "resunet": "ResUNet"}


def method_module(recipe: Self2SelfRecipe):
    """The module that holds a method's ``INIT_ARGUMENTS``, ``make_train_step`` and ``Session``:
    this one for Self2Self, :mod:`astrotf.train.neighbor2neighbor` for Neighbor2Neighbor."""
    if recipe.train.method == "neighbor2neighbor":
        from astrotf.train import neighbor2neighbor

        return neighbor2neighbor
    return sys.modules[__name__]


def _load_init(init: str | os.PathLike, name: str = "self2self"):
    """A Keras model of the registered class ``name`` from a run directory, an exported model folder
    or a .keras file."""
    from astrotf.models.registry import load_model, model_class

    kind = NETWORK_NAMES[name]
    path = Path(init)
    for candidate in (path / "model_last.keras", path / "model.keras", path):
        if candidate.is_file() and candidate.suffix == ".keras":
            break
    else:
        raise AstroTFError(f"{init}: no {kind} model found (--init takes a run, a model folder or a .keras file)")
    model = load_model(candidate, dtype="float32")
    if not isinstance(model, model_class(name)):
        raise AstroTFError(f"{candidate}: is a {type(model).__name__}, not a {kind} model (--init)")
    return model, candidate


def model_arguments(recipe: Self2SelfRecipe, data: np.ndarray, base=None, init=None, image_path="IMAGE") -> dict:
    """The Self2Self constructor arguments of a run on ``data``: the recipe's, or those of the
    ``init`` model ``base``; ``channels`` from the image; ``offset`` / ``scale`` measured on the
    image (:func:`robust_normalization`) where neither gives them.

    Raises
    ------
    AstroTFError
        The recipe's or the base model's channels differ from the image's.
    """
    args = recipe.model.kwargs()
    channels = int(data.shape[-1])
    if base is not None:
        if base.channels != channels:
            raise AstroTFError(f"{init}: model has {base.channels} channel(s), {image_path} has {channels}")
        args.update({k: base.get_config()[k] for k in method_module(recipe).INIT_ARGUMENTS})
    if args.setdefault("channels", channels) != channels:
        raise AstroTFError(f"[model]: channels = {args['channels']}, {image_path} has {channels}")
    if args.get("offset") is None or args.get("scale") is None:
        offset, scale = robust_normalization(data, recipe.model.scale_sigmas)
        args["offset"] = args["offset"] if args.get("offset") is not None else offset
        args["scale"] = args["scale"] if args.get("scale") is not None else scale
    return args


def make_train_step(model, optimizer, tcfg, offset: float, scale: float):
    """The compiled step ``(patches, valid, mask_seed) -> loss``: a seeded Bernoulli keep mask
    (per pixel or per ``mask_block`` block), the loss on the dropped pixels (eq. 3), one Adam update."""
    import tensorflow as tf

    from astrotf.data.masks import bernoulli_mask
    from astrotf.losses import self2self_loss

    offset, scale = np.float32(offset), np.float32(scale)

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

    return train_step


# ----------------------------------------------------------------------------- the loop's state
@dataclasses.dataclass
class Session:
    """What one one-image training session works with (Self2Self's previews)."""

    recipe: Self2SelfRecipe
    record: runs.RunRecord
    model: object
    optimizer: object
    train_step: object
    filled: np.ndarray
    valid: np.ndarray
    preview_x: np.ndarray
    preview_valid: np.ndarray
    verbose: int

    def step(self) -> int:
        return int(self.optimizer.iterations)

    def save(self, status: str) -> None:
        """Checkpoint, ``run.json`` and the model files."""
        run_dir = self.record.dir
        self.record.save(status, self.step())
        runs.save_model(self.model, run_dir / "model_last.keras")
        tmp = run_dir / ".model_best.tmp.keras"
        shutil.copyfile(run_dir / "model_last.keras", tmp)
        os.replace(tmp, run_dir / "model_best.keras")

    def preview(self, step: int) -> None:
        """``previews/step-NNNNNN.png``: noisy | one dropout sample | 8-sample mean | keep mask."""
        from astrotf.ensemble import block_keep_mask

        tcfg = self.recipe.train
        masks = [block_keep_mask(np.random.default_rng([tcfg.seed, step, i]), self.preview_x.shape, tcfg.keep_prob,
                                 tcfg.mask_block) * self.preview_valid for i in range(8)]
        samples = [np.asarray(self.model([self.preview_x, m])) for m in masks]
        runs.write_preview(self.record.dir / "previews" / f"step-{step:06d}.png", self.preview_x, samples[0],
                           np.mean(samples, axis=0), masks[0], linear=True)


def one_step(session: Session, step: int) -> float:
    """Optimisation step ``step`` (0-based): its patches and masks are seeded by ``(seed, step)``."""
    import tensorflow as tf

    tcfg = session.recipe.train
    rng = np.random.default_rng([tcfg.seed, step])
    y, v = sample_patches(session.filled, session.valid, tcfg.patch, tcfg.batch_size, rng, tcfg.min_valid)
    loss = float(session.train_step(tf.constant(y), tf.constant(v), tf.constant([tcfg.seed, step], tf.int64)))
    runs.check_finite_loss(loss, step + 1, session.record.dir, "lower --lr")
    return loss


def run_steps(session: Session) -> int:
    """Steps up to ``train.steps``: history rows, checkpoints and previews; Ctrl-C checkpoints and
    raises :class:`astrotf.runs.TrainingInterrupted`. Returns the last step."""
    tcfg, record = session.recipe.train, session.record
    step = session.step()
    bar = runs.progress_bar(tcfg.steps, 1 if session.verbose == 1 else 0, step)
    losses: list[float] = []
    with runs.deferred_interrupt() as stop_requested:  # Ctrl-C: a clean stop between steps
        try:
            while step < tcfg.steps:
                if stop_requested():
                    raise KeyboardInterrupt
                loss = one_step(session, step)
                step += 1
                losses.append(loss)
                current_lr = float(session.optimizer.learning_rate)
                bar.update(step, [("loss", loss), ("lr", current_lr)])
                if step % tcfg.log_every == 0 or step == tcfg.steps:
                    row = {"step": step, "loss": float(np.mean(losses)), "lr": current_lr,
                           "wall_time_s": round(record.elapsed(), 2)}
                    runs.append_history(record.dir / "history.csv", row)
                    if session.verbose == 2:
                        log.info("step %d/%d loss %.5f lr %.2e", step, tcfg.steps, row["loss"], current_lr)
                    losses = []
                if step % tcfg.checkpoint_every == 0 and step < tcfg.steps:
                    session.save("running")
                    session.preview(step)
        except KeyboardInterrupt:
            err = record.interrupted(session.step(), f"astrotf train {tcfg.method}")
            runs.save_model(session.model, record.dir / "model_last.keras")
            raise err from None
    return step


# ----------------------------------------------------------------------------- the run
def _read_image(image_path: Path, tcfg):
    from astrotf import io

    data, info = io.read_image(image_path)
    data = data.astype(np.float32, copy=False)
    if min(data.shape[:2]) < tcfg.patch:
        raise AstroTFError(f"{image_path}: {data.shape[1]}x{data.shape[0]} px is smaller than --patch {tcfg.patch}")
    finite = np.isfinite(data)
    if finite.mean() < 0.01:
        raise AstroTFError(f"{image_path}: fewer than 1 % of the pixels are finite")
    return data, info, finite


def _build_session(recipe, record, image_path, data, finite, init, verbose):
    """Model (from ``init`` if given), optimizer (restored on resume), step, patches; returns the
    session, the recipe with the resolved model arguments and the dtype policy."""
    import keras
    import tensorflow as tf

    from astrotf.config import resolve_precision
    from astrotf.models.registry import build_model

    tcfg, method = recipe.train, method_module(recipe)
    precision = resolve_precision(tcfg.precision, bool(tf.config.list_physical_devices("GPU")))
    keras.utils.set_random_seed(tcfg.seed)
    base = None
    if init is None and record.resume_checkpoint() is None:  # a run killed before its first checkpoint
        init = record.state.get("init_source")
    if init is not None:
        base, init_path = _load_init(init, recipe.model.name)
    args = model_arguments(recipe, data, base, init, image_path)
    try:
        model = build_model(recipe.model.name, dtype=precision, **args)
        recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, arguments=args).resolved())
    except (TypeError, ValueError) as err:
        raise AstroTFError(f"[model]: {err}") from None
    if base is not None:
        model.set_weights(base.get_weights())
        log.info("fine-tuning from %s", init_path)
    optimizer = keras.optimizers.Adam(learning_rate=keras.optimizers.schedules.CosineDecay(tcfg.lr, tcfg.steps,
                                                                                          alpha=0.05))
    optimizer.build(model.trainable_variables)
    record.attach(model=model, optimizer=optimizer)
    runs.trim_history(record.dir / "history.csv", "step", int(optimizer.iterations))
    filled = np.where(finite, data, np.float32(args["offset"])).astype(np.float32)
    valid = finite.astype(np.float32)
    preview_rng = np.random.default_rng([tcfg.seed, 2**31 - 1])
    preview_x, preview_valid = sample_patches(filled, valid, min(tcfg.patch * 2, min(data.shape[:2])), 2,
                                              preview_rng, tcfg.min_valid)
    train_step = method.make_train_step(model, optimizer, tcfg, args["offset"], args["scale"])
    session = method.Session(recipe, record, model, optimizer, train_step, filled, valid, preview_x, preview_valid,
                             verbose)
    return session, recipe, precision


def train_self2self(recipe: Self2SelfRecipe, image_path: str | os.PathLike | None, run_dir: str | os.PathLike,
                    *, init: str | os.PathLike | None = None, resume: bool = False, verbose: int = 1) -> dict:
    """Train on one image by the recipe's ``[train] method`` (Self2Self or Neighbor2Neighbor), or
    resume such a run.

    Parameters
    ----------
    recipe : Self2SelfRecipe
        On resume, the run's ``model`` section is used (it holds the resolved
        normalisation); ``train`` may differ (e.g. more ``steps`` to extend a run), but not its
        ``method``.
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
        Bad image, recipe or run folder. :class:`astrotf.runs.TrainingInterrupted`
        after a clean Ctrl-C stop.
    """
    record = runs.RunRecord(run_dir, resume)
    if record.resume:
        saved = self2self_recipe_from_dict(record.state["recipe"], str(record.path))
        if saved.train.method != recipe.train.method:
            raise AstroTFError(f"{record.path}: a {saved.train.method} run; continue it with astrotf train "
                               f"{saved.train.method}")
        recipe = dataclasses.replace(recipe, model=saved.model)
        image_path = Path(image_path or record.state["data"]["image"])
        init = None
    elif image_path is None:
        raise AstroTFError(f"{run_dir}: no run to resume (no {runs.RUN_FILE}); IMAGE is required to start one")
    image_path = Path(image_path)
    record.begin(recipe=recipe.to_dict(), data={"image": str(image_path)},
                 init_source=str(Path(init).resolve()) if init is not None else None)
    data, info, finite = _read_image(image_path, recipe.train)
    session, recipe, precision = _build_session(recipe, record, image_path, data, finite, init, verbose)
    record.start(
        recipe=recipe.to_dict(),
        data={"image": str(image_path), "name": image_path.name, "shape": list(data.shape),
              "format": info.format, "finite_fraction": round(float(finite.mean()), 4),
              "bunit": (info.header or {}).get("BUNIT") if info.format == "fits" else None},
        init=str(init) if init is not None else record.state.get("init", record.state.get("init_source")),
        precision=precision,
    )
    (record.dir / "previews").mkdir(exist_ok=True)
    step = run_steps(session)
    session.save("finished")
    session.preview(step)
    return record.state
