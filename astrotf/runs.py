"""Training scaffolding shared by every trainer: the run folder and what happens around the steps.

A trainer (:mod:`astrotf.train.resunet`, :mod:`astrotf.train.self2self`, ...) is a
small loop on top of this API:

* :class:`RunRecord` — the run folder's ``run.json`` and ``tf.train`` checkpoints
  (:mod:`astrotf.checkpoints`): refuse to overwrite a run, restore on resume, atomic saves,
  resume after a kill at any moment, wall time over sessions, the Ctrl-C checkpoint
  (:meth:`RunRecord.interrupted`).
* :func:`deferred_interrupt` — Ctrl-C stops at the next step boundary.
* :func:`append_history`, :func:`trim_history` — ``history.csv`` rows; :func:`save_model` —
  a ``.keras`` file written atomically; :func:`progress_bar`;
  :func:`check_finite_loss` — stop with a clear error when the loss becomes NaN/inf.
* :func:`hardware_summary`, :func:`folder_provenance`, :func:`init_provenance` — what
  a run records about its machine, data and starting weights (``--init``).
* :func:`write_preview` — the noisy | denoised | clean | mask PNG grid.
* :func:`make_strategy`, :func:`worker_task` — ``tf.distribute`` by name, and who is chief.

Importing this module does not import TensorFlow; the functions that need it do so.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import platform
import signal
import threading
import time
from pathlib import Path

import numpy as np

from astrotf import checkpoints
from astrotf.errors import AstroTFError

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
STRATEGIES = ("default", "mirrored", "multiworker")


class TrainingInterrupted(Exception):
    """Raised after a clean stop on Ctrl-C; the run can be resumed."""


# ----------------------------------------------------------------------------- during the steps
def append_history(path: Path, row: dict) -> None:
    """Append one row to the run's ``history.csv`` (with the header when the file is new; an existing
    file keeps its header's columns, a missing value left empty)."""
    fields = list(row)
    if path.is_file() and path.stat().st_size:
        with path.open(newline="") as fh:
            fields = next(csv.reader(fh), fields)
    new_file = not path.exists() or not path.stat().st_size
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="", extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow(row)


def trim_history(path: Path, column: str, last: float) -> None:
    """Drop the ``history.csv`` rows whose ``column`` is past ``last`` (written after the checkpoint a
    run resumes from; they will be written again) and a torn last line; no rows left: no file."""
    if not path.is_file():
        return
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    rows = list(csv.reader(lines))
    if not rows or column not in rows[0]:
        return
    at = rows[0].index(column)
    kept = [line for line, row in zip(lines[1:], rows[1:]) if len(row) > at and float(row[at]) <= last]
    if not kept:
        path.unlink()
    elif len(kept) < len(lines) - 1 or not text.endswith("\n"):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join([lines[0], *kept]))
        os.replace(tmp, path)


def save_model(model, path: Path) -> None:
    """``model.save(path)`` through a temporary ``.keras`` file: a killed process leaves the previous
    file, never half a new one."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def check_finite_loss(loss: float, step: int, where: str | os.PathLike, hint: str) -> None:
    """Raise if the loss of ``step`` (1-based) is NaN or infinite.

    Raises
    ------
    AstroTFError
        ``"<where>: loss became nan at step <step>; <hint>"``.
    """
    if not math.isfinite(loss):
        raise AstroTFError(f"{where}: loss became {loss} at step {step}; {hint}")


def progress_bar(total: int, verbose: int, done: int = 0):
    """A Keras progress bar over ``total`` steps (``verbose``: 0 none, 1 bar, 2 one line at the end),
    already advanced to ``done``; ``lr`` is shown as its current value, not a mean."""
    import keras

    bar = keras.utils.Progbar(total, verbose=verbose, stateful_metrics=["lr"])
    if done > 0:
        bar.update(done)
    return bar


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


def scalar(variable) -> float:
    """A Keras / tf.distribute scalar variable as a Python number (``int()`` fails on mirrored ones)."""
    import keras

    return float(keras.ops.convert_to_numpy(variable))


# ----------------------------------------------------------------------------- previews
def _stretch(tile: np.ndarray, linear: bool, lo=None, hi=None) -> np.ndarray:
    """Map a tile to [0, 1] for display: clip for stretched data, asinh for linear data."""
    if not linear:
        return np.clip(tile, 0.0, 1.0)
    span = max(hi - lo, 1e-12)
    return np.clip(np.arcsinh(np.clip(tile - lo, 0, None) / span * 10) / np.arcsinh(10), 0, 1)


def write_preview(path: Path, noisy, denoised, clean, mask, linear: bool, max_rows: int = 4) -> None:
    """PNG grid, one row per tile: noisy | denoised | clean | star mask (written atomically)."""
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


# ----------------------------------------------------------------------------- provenance
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


def folder_provenance(data_dir: Path, names: list[str]) -> dict:
    """The data folder, its image names and its MANIFEST.json / CREDITS.json if present."""
    info = {"data_dir": str(data_dir), "n_images": len(names), "images": list(names)}
    for extra in ("MANIFEST.json", "CREDITS.json"):
        if (data_dir / extra).is_file():
            info[extra.split(".")[0].lower()] = extra
    return info


def init_model_file(init: str | os.PathLike) -> Path:
    """The ``.keras`` file of ``--init``: the file itself, a model folder's ``model.keras`` or a run's best model."""
    path = Path(init)
    for candidate in (path, path / "model.keras", path / "model_best.keras"):
        if candidate.is_file() and candidate.suffix == ".keras":
            return candidate
    raise AstroTFError(f"{init}: no model to start from (--init takes a .keras file, a model folder or a run)")


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


# ----------------------------------------------------------------------------- distribution
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


# ----------------------------------------------------------------------------- the run folder
def log_writers(out_dir: Path) -> dict:
    """The run's ``previews/`` and ``logs/`` folders, and TensorBoard writers for ``train`` and ``validation``."""
    import tensorflow as tf

    for sub in ("previews", "logs"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    return {k: tf.summary.create_file_writer(str(out_dir / "logs" / k)) for k in ("train", "validation")}


def atomic_json(path: Path, value: dict) -> None:
    """Write ``value`` as JSON through a temporary file, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def load_run(run_dir: str | os.PathLike) -> dict:
    """The ``run.json`` of a run directory."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise AstroTFError(f"{run_dir}: not a training run (no {RUN_FILE})")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise AstroTFError(f"{path}: not valid JSON ({err})") from None


class RunRecord:
    """``run.json`` and checkpoints of a run directory: the resume machinery every trainer shares.

    A process killed at any moment leaves a folder that ``--resume`` continues: ``run.json``
    is written (atomically) as soon as the run's settings are known, before the data are
    prepared (:meth:`begin`); checkpoints are written atomically and checked before they are
    restored (:mod:`astrotf.checkpoints`), falling back to the previous complete one; a run
    without a checkpoint yet starts again from step 0, whether resumed or started anew.

    Parameters
    ----------
    run_dir : path
        The run directory.
    resume : bool
        Continue the run of ``run_dir`` (a new one when it holds none, with a logged line);
        otherwise refuse a folder whose run has a checkpoint.
    out_dir : path, optional
        Where this process writes ``run.json`` and checkpoints, if not ``run_dir``
        (a non-chief worker); it still resumes from ``run_dir``'s.
    """

    def __init__(self, run_dir: str | os.PathLike, resume: bool, out_dir: str | os.PathLike | None = None):
        self.dir = Path(run_dir)
        self.out = Path(out_dir) if out_dir is not None else self.dir
        self.path = self.out / RUN_FILE
        if resume and not (self.dir / RUN_FILE).is_file():
            log.warning("%s: no run to resume (no %s); starting a new one", self.dir, RUN_FILE)
            resume = False
        self.resume = resume
        if resume:
            self.state = load_run(self.dir)
        else:
            if self.path.exists() and checkpoints.complete_checkpoints(self.out / CHECKPOINTS):
                raise AstroTFError(f"{self.dir}: already holds a training run; pass --resume or choose another --out")
            if self.path.exists():
                log.warning("%s: its run stopped before its first checkpoint; starting it again", self.dir)
            self.state = {}
        self.checkpoint = None
        self._resume_from: list = []

    def begin(self, **fields) -> None:
        """Record what a new run is (recipe, data folder, ``init_source``) in ``run.json`` before
        the slow preparations, so that a process killed during them leaves a run to resume."""
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.resume:
            self.state.update({**fields, "status": "starting", "step": 0})
            atomic_json(self.path, self.state)

    def resume_checkpoint(self) -> Path | None:
        """The newest checkpoint of ``run_dir`` that reads back whole, or None (a new run, or one
        killed before its first checkpoint). Damaged ones are skipped with a logged line (and
        removed from this process's own folder)."""
        if not self.resume:
            return None
        if not self._resume_from:
            folder = self.dir / CHECKPOINTS
            found = None
            for prefix in checkpoints.complete_checkpoints(folder):
                reason = checkpoints.unreadable(prefix)
                if reason is None:
                    found = prefix
                    break
                log.warning("%s: checkpoint is damaged (%s); falling back to the previous one", prefix, reason)
                if self.out == self.dir:
                    checkpoints.remove(prefix)
            self._resume_from = [found]
        return self._resume_from[0]

    def attach(self, **trackables):
        """Create the checkpoint of ``trackables`` (model, optimizer, counters); restore it on resume."""
        import tensorflow as tf

        ckpt = tf.train.Checkpoint(**trackables)
        self.checkpoint = ckpt
        prefix = self.resume_checkpoint()
        if prefix is not None:  # every worker resumes from the chief's
            ckpt.restore(str(prefix)).assert_existing_objects_matched()
            log.info("resumed from %s", prefix)
        elif self.resume:
            log.warning("%s: no checkpoint yet; starting from step 0", self.dir)
        if self.out == self.dir:
            checkpoints.remove_staging(self.out / CHECKPOINTS)
        return ckpt

    def start(self, **fields) -> None:
        """Record what the run is (recipe, data, hardware) in ``run.json`` and start the wall clock."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.state.update({**fields, "hardware": hardware_summary(),
                           "astrotf_version": __import__("astrotf").__version__})
        self.state.setdefault("wall_time_s", 0.0)
        self.state.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if self.state.get("status") == "starting":
            self.state["status"] = "running"
        atomic_json(self.path, self.state)
        self._wall_start, self._wall_before = time.time(), self.state["wall_time_s"]

    def elapsed(self) -> float:
        """Training wall time in seconds, earlier sessions of a resumed run included."""
        return self._wall_before + time.time() - self._wall_start

    def save(self, status: str, step: int, **fields) -> None:
        """Checkpoint (numbered by ``step``, written atomically) and an atomic ``run.json`` update."""
        checkpoints.write(self.checkpoint, self.out / CHECKPOINTS, step)
        self.state.update({"status": status, "step": step, **fields,
                           "wall_time_s": self.elapsed(),
                           "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        atomic_json(self.path, self.state)

    def interrupted(self, step: int, command: str, **fields) -> TrainingInterrupted:
        """Checkpoint after Ctrl-C; returns the exception that says how to continue."""
        self.save("interrupted", step, **fields)
        return TrainingInterrupted(f"stopped at step {step}; checkpoint saved in {self.dir / CHECKPOINTS}; "
                                   f"continue with: {command} --out {self.dir} --resume")
