"""Denoise many files: output paths, shards, lists, a manifest, skip-existing and per-file errors.

:func:`denoise_file` reads one image, denoises it with the model its data call for (or
the one given), applies the restores of :mod:`astrotf.restore` and writes the result in
the input's format with a ``HISTORY`` of what was done. :func:`run` does that for many
inputs: a bad file is reported and the others go on, every result is logged in a JSON-lines
manifest, and a run started again with ``skip_existing`` resumes where it stopped. Settings
travel as one :class:`InferOptions`. Messages go to an ``echo(message, err=False)``
callable (``click.echo`` for the command line; by default the log). No TensorFlow import
until a model is loaded. Output paths, shards, input lists and the manifest are in
:mod:`astrotf.batch.inputs` (their names are importable from here too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ContextManager

import numpy as np

from astrotf import __version__
from astrotf.batch.inputs import (Manifest, check_outputs, collect_inputs, output_path,  # noqa: F401 - also
                                  parse_shard, unexpected_error)                              # importable here
from astrotf.constants import SELF2SELF_SAMPLES
from astrotf.errors import AstroTFError
from astrotf.noise_map import NoiseOptions
from astrotf.restore import RestoreOptions

if TYPE_CHECKING:
    from astrotf.backends import LoadedModel
    from astrotf.noise_map import FrameNoise

log = logging.getLogger(__name__)

#: ``progress(label)``: a context manager giving ``update(done_tiles, total_tiles)``.
ProgressFactory = Callable[[str], ContextManager[Callable[[int, int], None]]]


def _log_echo(message: str, err: bool = False) -> None:
    log.info("%s", message)


@dataclasses.dataclass(frozen=True)
class InferOptions:
    """How ``astrotf infer`` runs the model on a frame.

    Parameters
    ----------
    model : str, optional
        Shipped model name, ``.keras`` file or model folder; None: chosen per file from its
        data domain (:data:`astrotf.backends.DEFAULT_MODELS`). With ``server``: the served name.
    overlap : float
        Least fraction of a tile shared with its neighbours.
    tile, batch_size : int, optional
        Tile size and tiles per call; None: picked per frame (:meth:`LoadedModel.tile_options`).
    backend : {"tensorflow", "onnxruntime", "tensorrt"}
    precision : {"auto", "float32", "bfloat16"}
    server : str, optional
        ``HOST:PORT`` of a TF Serving endpoint that runs the model (tiling stays local).
    protocol : {"grpc", "rest"}
    samples : int, optional
        Self2Self ensemble members; None: the model's metadata.
    seed : int
        Seed of the Self2Self masks and dropout.
    average : {"dropped", "all"}
        Self2Self ensemble average (:func:`astrotf.ensemble.ensemble_predictor`).
    restore : RestoreOptions
        Soft restore, restore and report after the network.
    noise : NoiseOptions
        Gain, read noise, σ-map file and trust of a noise-conditioned model (:mod:`astrotf.noise_map`).
    """

    model: str | None = None
    overlap: float = 0.25
    tile: int | None = None
    batch_size: int | None = None
    backend: str = "tensorflow"
    precision: str = "auto"
    server: str | None = None
    protocol: str = "grpc"
    samples: int | None = None
    seed: int = 0
    average: str = "dropped"
    restore: RestoreOptions = RestoreOptions()
    noise: NoiseOptions = NoiseOptions()


@dataclasses.dataclass(frozen=True)
class Denoised:
    """What :func:`denoise_file` did: the file written, the model's name, the (first) image's shape and the
    number of images denoised (the chips of a multi-extension FITS file)."""

    output: Path
    model: str
    shape: tuple[int, ...]
    images: int = 1


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """Outcome of :func:`run`: the inputs, the error of each failed one and how many were skipped."""

    total: int
    failures: tuple[str, ...] = ()
    skipped: int = 0

    @property
    def exit_status(self) -> int:
        """0: all done; 1: some of several inputs failed; 2: the only input failed."""
        if not self.failures:
            return 0
        return 1 if len(self.failures) < self.total or self.total > 1 else 2


# ----------------------------------------------------------------------------- one file
def _load(name: str, options: InferOptions, domain: str) -> LoadedModel:
    if options.server:
        from astrotf.backends.serving import connect

        model = connect(options.server, name, options.protocol)
        model.metadata.setdefault("data_domain", domain)  # no local metadata.json
        return model
    from astrotf.backends import load_model

    return load_model(name, backend=options.backend, precision=options.precision)


def _is_self2self(model: LoadedModel) -> bool:
    return getattr(model, "sample", None) is not None


def _soft_by_default(model: LoadedModel) -> bool:
    """Whether the soft restore runs when neither --soft-restore nor --no-soft-restore is given: for
    one-image models (Self2Self never sees the pixel it predicts; Neighbor2Neighbor learns from
    neighbours) and noise-conditioned ones (on real frames it gives back the flux the network takes
    from sharp stars as from cosmic rays)."""
    return _is_self2self(model) or model.one_image_method is not None or model.noise_conditioned


def _with_options_ensemble(model: LoadedModel, options: InferOptions) -> LoadedModel:
    """A fresh, seeded ensemble per image (the result does not depend on the file order)."""
    if options.samples is None and not _is_self2self(model):
        return model
    from astrotf.ensemble import with_ensemble

    default_samples = model.metadata.get("ensemble", {}).get("samples", SELF2SELF_SAMPLES)
    return with_ensemble(model, options.samples or int(default_samples), options.seed, options.average)


def _history(model: LoadedModel, tiles, step: float | None, options: InferOptions, source: str | None) -> list[str]:
    history = [f"astrotf {__version__} infer: model={model.name} v{model.metadata.get('version', '?')}",
               f"astrotf tile={tiles.tile} overlap={tiles.overlap} precision={model.precision}"]
    if source is not None:
        history.append(f"astrotf input: {source}")
    if step is not None:
        history.append(f"astrotf quantised input: dithered by one step ({step:g}, seeded) for the "
                       f"network's tile normalisation")
    if _is_self2self(model):
        history.append(f"astrotf Self2Self ensemble: samples={options.samples or model.metadata['ensemble']['samples']}"
                       f" seed={options.seed} average={options.average}")
    return history


def denoise_file(image: Path, output: Path, options: InferOptions = InferOptions(), model: LoadedModel | None = None,
                 *, models: dict | None = None, force: bool = False, create_folder: bool = False,
                 echo: Callable[..., None] = _log_echo, progress: ProgressFactory | None = None) -> Denoised:
    """Denoise the file ``image`` into ``output`` (the input's format, dtype, layout and header).

    Parameters
    ----------
    image, output : Path
    options : InferOptions
    model : LoadedModel, optional
        The model to run; None: ``options.model``, or the shipped model for the data's domain.
    models : dict, optional
        Models loaded so far, by name (filled here): a batch loads each model once.
    force : bool
        Overwrite an existing ``output``.
    create_folder : bool
        Create ``output``'s folder (when the image is done) if it is missing.
    echo : callable
        ``echo(message, err=False)`` for the restore and report lines (the model choice is logged).
    progress : callable, optional
        ``progress(label)``, a context manager giving ``update(done, total)`` for the tiles.

    Raises
    ------
    AstroTFError
        Unreadable input, unknown model, a restore into a lossy or other format, a noise model that
        cannot be found or trusted, a failed write.
    """
    from astrotf import io
    from astrotf.checks import check_restore_threshold, unit_warning
    from astrotf.infer import guess_domain
    from astrotf.noise_map import MAP_HISTORY, check_noise_map_target, noise_map_path, write_noise_map
    from astrotf.restore import check_restore_target

    noise_path = noise_map_path(image, output) if options.noise.write_map else None
    if noise_path is not None:
        check_noise_map_target(noise_path, image, output, force)
    data, info = io.read_image(image)
    if options.restore.restores:
        check_restore_target(output, info)
    if options.restore.threshold is not None:
        check_restore_threshold(options.restore.threshold, info.step)
    domain = guess_domain(data, info)
    if options.model is None:
        log.info("%s: %s %d-channel data", image, domain, info.channels)
    model = model if model is not None else pick_model(domain, options, models)
    if (units := unit_warning(io.inherited_header(info), model.metadata, model.name)) is not None:
        echo(f"Warning: {image}: {units}", err=True)
    hdus = io.science_hdus(info) or [info.hdu_index]
    if len(hdus) > 1:
        echo(f"{image.name}: {len(hdus)} images, HDUs {', '.join(map(str, hdus))}")
    parts, maps = [], []
    for index in hdus:  # every chip of a mosaic, each with its own header, noise and HISTORY
        if index != info.hdu_index:
            data, info = io.read_image(image, hdu=index)
        where = "" if len(hdus) == 1 else f"[{index}]"
        try:
            frame = denoise_frame(data, options, domain=domain, model=model, info=info, label=image.name + where,
                                  progress=progress)
        except AstroTFError as err:  # name the chip
            raise AstroTFError(str(err).replace(f"{image}: ", f"{image}{where}: ", 1)) from None
        for line in frame.lines:  # a warning (noise model used despite its check) goes to stderr with the path
            warning = line.startswith("Warning: ")
            echo(f"Warning: {image}{where}: {line[9:]}" if warning else f"{image.name}{where}: {line}", err=warning)
        parts.append((frame.data, info, frame.history))
        if noise_path is not None:
            maps.append((frame.noise.sigma, info, [f"{MAP_HISTORY} of {image.name}{where} for model "
                                                   f"{frame.model.name}", *frame.noise.history]))
    if create_folder:
        output.parent.mkdir(parents=True, exist_ok=True)
    if noise_path is not None:  # before the output, whose presence --skip-existing takes for "done"
        write_noise_map(noise_path, maps, overwrite=force)
    io.write_image(output, *parts[0][:2], history=parts[0][2], overwrite=force, more=tuple(parts[1:]))
    return Denoised(output=output, model=frame.model.name, shape=tuple(parts[0][0].shape), images=len(parts))


@dataclasses.dataclass
class Frame:
    """What :func:`denoise_frame` made: the result, the model that ran, HISTORY lines, report lines and,
    for a noise-conditioned model, the noise model and σ map it was given."""

    data: np.ndarray
    model: LoadedModel
    history: list[str]
    lines: list[str]
    noise: FrameNoise | None = None


def pick_model(domain: str, options: InferOptions, models: dict | None = None) -> LoadedModel:
    """``options.model``, or the shipped model for ``domain``; loaded once into ``models`` (by name)."""
    from astrotf.backends import DEFAULT_MODELS

    models = {} if models is None else models
    name = options.model or DEFAULT_MODELS[domain]
    if name not in models:
        models[name] = _load(name, options, domain)
    return models[name]


def denoise_frame(data: np.ndarray, options: InferOptions = InferOptions(), *, domain: str,
                  model: LoadedModel | None = None, models: dict | None = None, info=None, step="auto",
                  label: str = "frame", progress: ProgressFactory | None = None, header=None,
                  uncertainty=None) -> Frame:
    """The network, then (for a noise-conditioned model) the input's sky level, then the strength blend,
    soft restore and restore of ``options.restore``, on one frame.

    Parameters
    ----------
    data : ndarray, shape (H, W, C), float32
        As :func:`astrotf.io.read_image` returns it; NaN allowed.
    options : InferOptions
    domain : {"stretched", "linear", "magnetogram"}
        The data domain (picks the model when neither ``model`` nor ``options.model`` is given).
    model : LoadedModel, optional
    models : dict, optional
        Models loaded so far, by name (filled here).
    info : astrotf.io.ImageInfo, optional
        The file's: its name (in the HISTORY), grid step and integer grid (restores stay exact in the file).
    step : float, "auto" or None
        Grid step of quantised values when there is no ``info`` (see :func:`astrotf.infer.denoise_image`).
    label, progress
        ``progress(label)`` as in :func:`denoise_file`.
    header, uncertainty : optional
        A noise-conditioned model's: the mapping read for the noise model and the frame's
        :class:`astrotf.io.Uncertainty`, by default ``info``'s (:func:`astrotf.noise_map.noise_for`).
    """
    from astrotf.infer import denoise_image
    from astrotf.noise_map import noise_for
    from astrotf.quantise import resolve_step
    from astrotf.restore import restore_and_report
    from astrotf.sky_level import keep_sky_level

    model = model if model is not None else pick_model(domain, options, models)
    noise = noise_for(model.name, model.noise_conditioned, data, options.noise, info=info, header=header,
                      uncertainty=uncertainty)
    soft = options.restore.soft if options.restore.soft is not None else _soft_by_default(model)
    if options.restore.strength is None:  # the model's own blend with the input (1 for most)
        options = dataclasses.replace(options, restore=dataclasses.replace(options.restore,
                                                                           strength=model.default_strength))
    model = _with_options_ensemble(model, options)
    tiles = model.tile_options(data.shape, options.overlap, options.tile, options.batch_size)
    # integer samples, or float ones on a grid: dithered for a model that scales tiles by their MAD
    step = (info.step if info.step is not None else "auto") if info is not None else step
    step = resolve_step(data, step) if model.normalises_tiles else None
    with progress(f"{label} ({model.name}, {model.precision})") if progress else contextlib.nullcontext() as update:
        result = denoise_image(data, model, tiles, update, step=step, noise_sigma=noise.sigma if noise else None)
    history = _history(model, tiles, step, options, info.path.name if info is not None else None)
    history, lines = history + (noise.history if noise else []), list(noise.lines if noise else [])
    if noise is not None and options.restore.sky_level:
        kept = keep_sky_level(result, data, noise.sigma)
        result = kept.image
        history.append(f"astrotf {kept.line()}")
        lines.append(kept.line())
    if options.restore.restores or options.restore.report or soft or options.restore.strength != 1.0:
        result, restored = restore_and_report(data, result, options.restore, soft=soft, info=info, domain=domain,
                                              noise_sigma=noise.sigma if noise else None)
        history += [f"astrotf {line}" for line in restored if line.startswith(("restore", "soft restore", "strength"))]
        lines += restored
    return Frame(result, model, history, lines, noise)


# ----------------------------------------------------------------------------- many files
def run(images: list[Path], options: InferOptions = InferOptions(), *, output: Path | None = None,
        out_dir: Path | None = None, force: bool = False, skip_existing: bool = False,
        manifest: Path | None = None, echo: Callable[..., None] = _log_echo,
        progress: ProgressFactory | None = None) -> BatchResult:
    """Denoise ``images`` one after the other; a failing file is reported and the rest go on.

    Parameters
    ----------
    images : list of Path
        Inputs (see :func:`collect_inputs`).
    options : InferOptions
    output, out_dir : Path, optional
        One output file (one input only), or the folder for the outputs (see :func:`output_path`).
    force, skip_existing : bool
        Overwrite existing outputs, or skip their inputs (resuming an interrupted run).
    manifest : Path, optional
        JSON-lines log of every input's result; default with ``out_dir``: ``DIR/astrotf-manifest.jsonl``.
    echo, progress
        As :func:`denoise_file`; one line per file, the errors and a summary go to ``echo`` too.

    Returns
    -------
    BatchResult
    """
    if manifest is None and out_dir is not None:
        manifest = out_dir / "astrotf-manifest.jsonl"
    if out_dir is not None:
        from astrotf.io import remove_stale_temporaries

        if removed := remove_stale_temporaries(out_dir):
            log.info("%s: removed %d temporary file(s) of killed runs", out_dir, removed)
    log_file = Manifest(manifest)
    models: dict = {}
    failures, skipped = [], 0
    try:
        for number, image in enumerate(images, 1):
            started = time.perf_counter()
            target = None
            try:
                target = output_path(image, output, out_dir)
                if target.resolve() == image.resolve():
                    raise AstroTFError(f"{target}: output would overwrite the input")
                if target.is_dir():
                    raise AstroTFError(f"{target}: output is a directory")
                if target.exists() and skip_existing:
                    skipped += 1
                    log_file.write(input=image, output=target, status="skipped")
                    continue
                if target.exists() and not force:
                    raise AstroTFError(f"{target}: output exists; pass --force to overwrite it")
                done = denoise_file(image, target, options, models=models, force=force,
                                    create_folder=out_dir is not None, echo=echo, progress=progress)
                seconds = time.perf_counter() - started
                log_file.write(input=image, output=target, status="ok", seconds=round(seconds, 3),
                               model=done.model, shape=list(done.shape), images=done.images)
                counter = f"[{number}/{len(images)}] " if len(images) > 1 else ""
                echo(f"{counter}{image} -> {target} ({done.model}, {seconds:.1f} s)", err=True)
            except Exception as err:  # one file's failure, foreseen or not, never stops the batch
                if skip_existing and not force and target is not None and target.is_file():
                    # another process sharing --out-dir wrote it meanwhile (outputs are written whole)
                    skipped += 1
                    log_file.write(input=image, output=target, status="skipped")
                    continue
                message = str(err) if isinstance(err, AstroTFError) else unexpected_error(image, err)
                failures.append(message)
                log_file.write(input=image, output=target, status="error", error=message,
                               seconds=round(time.perf_counter() - started, 3))
                echo(f"Error: {message}", err=True)
    finally:
        log_file.close()
    result = BatchResult(total=len(images), failures=tuple(failures), skipped=skipped)
    _summary(result, echo)
    return result


def _summary(result: BatchResult, echo: Callable[..., None]) -> None:
    if result.skipped:
        echo(f"{result.skipped} of {result.total} image(s) skipped: output already there", err=True)
    if result.failures and result.total > 1:
        echo(f"{len(result.failures)} of {result.total} image(s) failed:", err=True)
        for line in result.failures:
            echo(f"  {line}", err=True)
