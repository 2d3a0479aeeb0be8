"""The ``astrotf`` command line (click).

Arguments are validated before TensorFlow is imported, so a typo answers in a
fraction of a second with a one-line error naming the option or file, and every
:class:`~astrotf.errors.AstroTFError` from deeper down is shown the same way
(exit status 2) instead of a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import click

from astrotf.constants import MAGNETOGRAM_NOISE_RANGE_G, SELF2SELF_SAMPLES
from astrotf import __version__
from astrotf.errors import AstroTFError

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def friendly_errors(func):
    """Turn AstroTFError into ``Error: <one line>`` and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except AstroTFError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="astrotf")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Denoise astronomical images without damaging the science in them."""
    _quiet_tensorflow()
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose + 1, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        logging.getLogger("absl").setLevel(logging.WARNING)  # checkpoint sharding chatter


@main.group()
def train() -> None:
    """Train a model (see pipelines/ for recipes)."""


def _resolve_recipe(config: str | None) -> Path | None:
    if config is None:
        return None
    path = Path(config)
    if not path.exists() and not path.suffix and (PIPELINES / f"{config}.toml").exists():
        path = PIPELINES / f"{config}.toml"
    return path


@train.command("resunet")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of training images: DIR/clean (+ DIR/noisy with --paired), or images directly.")
@click.option("--paired/--clean-only", "paired", default=None,
              help="Aligned DIR/noisy + DIR/clean pairs, or clean images with synthetic noise. [recipe]")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory, e.g. runs/NAME (checkpoints, logs, previews).")
@click.option("--config", "config", metavar="TOML",
              help="Recipe: a pipelines/*.toml file or its name (resunet-rgb, resunet-mono-linear).")
@click.option("--epochs", type=click.IntRange(min=1), help="Number of epochs. [recipe: 50]")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), help="Training steps per epoch. [recipe: 200]")
@click.option("--batch-size", type=click.IntRange(min=1), help="Tiles per batch. [recipe: 8]")
@click.option("--tile", type=click.IntRange(min=8), help="Tile size in px. [recipe: 256]")
@click.option("--space-to-depth", type=click.Choice(["1", "2", "4"]),
              help="Fold B x B pixel blocks into channels before the U-Net: 2 runs it at half resolution, "
                   "several times faster. [recipe: 1]")
@click.option("--lr", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              help="Peak learning rate of Adam. [recipe: 1e-4]")
@click.option("--seed", type=int, help="Seed of data split, crops, noise and weights. [recipe: 0]")
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed_bfloat16", "mixed_float16"]),
              help="Keras dtype policy; auto = mixed_bfloat16 where the hardware has native bfloat16 "
                   "(GPU, AVX512-BF16/AMX CPU), else float32. [recipe: auto]")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--init", "init", metavar="MODEL",
              help="Start from the weights of a trained model of the same architecture: a shipped model's name "
                   "(resunet-rgb), a model folder, a .keras file or a run (fine-tuning on your own data).")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]), default="default",
              show_default=True,
              help="tf.distribute: one device; all GPUs of this machine; or the machines of TF_CONFIG. "
                   "--batch-size is the global batch. Checkpoints work across strategies.")
@click.option("-q", "--quiet", is_flag=True, help="One line per epoch instead of a progress bar.")
@friendly_errors
def train_resunet(data, paired, out, config, epochs, steps_per_epoch, batch_size, tile, space_to_depth, lr, seed,
                  precision, resume, init, strategy, quiet):
    """Train the AstroPics ResUNet (star-aware composite loss, synthetic noise).

    Stop with Ctrl-C at any time: the run is checkpointed and continues with --resume.
    """
    from astrotf.recipes import Recipe, load_recipe, override, recipe_from_dict

    recipe_path = _resolve_recipe(config)
    if resume and recipe_path is None:
        from astrotf.train import load_run

        # continue with the run's own settings; options given now still override them
        recipe = recipe_from_dict(load_run(out)["recipe"], str(out / "run.json"))
    else:
        recipe = load_recipe(recipe_path) if recipe_path else Recipe()
    mode = None if paired is None else ("paired" if paired else "clean-only")
    recipe = override(
        recipe, model__space_to_depth=None if space_to_depth is None else int(space_to_depth),
        data__mode=mode, data__batch_size=batch_size, data__tile=tile, data__seed=seed,
        data__noise="none" if paired else None,
        train__epochs=epochs, train__steps_per_epoch=steps_per_epoch, train__lr=lr, train__seed=seed,
        train__precision=precision,
    )
    if not resume and data is None:
        raise AstroTFError("--data is required to start a training run (or pass --resume)")
    if data is not None and not data.is_dir():
        raise AstroTFError(f"{data}: data folder does not exist (--data)")

    if init is not None and not Path(init).exists():
        from astrotf.infer import resolve_model_path

        init = resolve_model_path(init)  # a shipped model's name

    from astrotf.train import TrainingInterrupted
    from astrotf.train import train as run_training

    try:
        state = run_training(recipe, data, out, resume=resume, verbose=2 if quiet else 1, strategy=strategy,
                             init=init)
    except TrainingInterrupted as stop:
        click.echo(f"Interrupted: {stop}", err=True)
        sys.exit(130)
    click.echo(f"Finished {state['epoch']} epoch(s), {state['step']} steps, best validation loss "
               f"{state['best_val_loss']:.5f}; model: {Path(out) / 'model_best.keras'}")



@train.command("self2self")
@click.argument("image", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory, e.g. runs/NAME (checkpoints, history, previews).")
@click.option("--config", "config", metavar="TOML", help="Recipe: a pipelines/*.toml file or its name (self2self-hmi).")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps. [recipe: 2000]")
@click.option("--keep-prob", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Bernoulli probability p that a pixel is given to the network. [recipe: 0.7]")
@click.option("--mask-block", type=click.IntRange(1, 8),
              help="Drop pixels in B x B blocks (for noise correlated between neighbours). [recipe: 1]")
@click.option("--patch", type=click.IntRange(min=16), help="Patch size in px. [recipe: 64]")
@click.option("--batch-size", type=click.IntRange(min=1), help="Patches per step. [recipe: 8]")
@click.option("--lr", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              help="Adam learning rate (cosine decay). [recipe: 1e-3]")
@click.option("--seed", type=int, help="Seed of weights, patches, flips and masks. [recipe: 0]")
@click.option("--init", "init", type=click.Path(exists=True, path_type=Path), metavar="RUN",
              help="Fine-tune from a Self2Self run, exported model folder or .keras file (keeps its normalisation).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("-q", "--quiet", is_flag=True, help="Log lines instead of a progress bar.")
@friendly_errors
def train_self2self_command(image, out, config, steps, keep_prob, mask_block, patch, batch_size, lr, seed, init,
                            resume, quiet):
    """Train Self2Self on the single noisy IMAGE (TDR: train, then denoise others of its kind).

    Loss on the dropped pixels only (eq. 3), random flips, NaN pixels ignored. Stop
    with Ctrl-C at any time: the run is checkpointed and continues with --resume.
    """
    from astrotf.train_self2self import (
        Self2SelfRecipe,
        load_self2self_recipe,
        override_self2self,
        self2self_recipe_from_dict,
    )

    if not resume and image is None:
        raise AstroTFError("IMAGE is required to start a Self2Self run (or pass --resume)")
    if image is not None and not image.is_file():
        raise AstroTFError(f"{image}: no such file (IMAGE)")
    if resume and init is not None:
        raise AstroTFError("--init starts a new run; it cannot be combined with --resume")
    recipe_path = _resolve_recipe(config)
    if resume and recipe_path is None:
        from astrotf.train import load_run

        recipe = self2self_recipe_from_dict(load_run(out)["recipe"], str(out / "run.json"))
    else:
        recipe = load_self2self_recipe(recipe_path) if recipe_path else Self2SelfRecipe()
    recipe = override_self2self(recipe, train__steps=steps, train__keep_prob=keep_prob, train__mask_block=mask_block,
                                train__patch=patch,
                                train__batch_size=batch_size, train__lr=lr, train__seed=seed)

    from astrotf.train import TrainingInterrupted
    from astrotf.train_self2self import train_self2self

    try:
        state = train_self2self(recipe, image, out, init=init, resume=resume, verbose=2 if quiet else 1)
    except TrainingInterrupted as stop:
        click.echo(f"Interrupted: {stop}", err=True)
        sys.exit(130)
    click.echo(f"Finished {state['step']} steps in {state['wall_time_s']:.0f} s; model: {Path(out)} "
               f"(denoise with: astrotf infer IMAGE --model {out}; export with: astrotf export {out} --out ...)")


def _output_path(image: Path, output: Path | None, out_dir: Path | None) -> Path:
    from astrotf import io

    suffix = next((s for s in io.SUPPORTED_SUFFIXES if image.name.lower().endswith(s)), image.suffix)
    stem = image.name[: len(image.name) - len(suffix)]
    if output is not None:
        return output
    return (out_dir or image.parent) / f"{stem}_denoised{image.name[len(stem):]}"


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        index, count = (int(v) for v in value.split("/"))
    except ValueError:
        raise AstroTFError(f"--shard must be I/N, e.g. 0/4. Received: --shard={value}") from None
    if not (count >= 1 and 0 <= index < count):
        raise AstroTFError(f"--shard I/N needs 0 <= I < N. Received: --shard={value}")
    return index, count


def _collect_inputs(images: tuple[Path, ...], from_list: Path | None, shard: tuple[int, int] | None) -> list[Path]:
    """Inputs from the command line and a list file (one path per line, # comments), then this shard's share."""
    paths = list(images)
    if from_list is not None:
        for line in from_list.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                paths.append(Path(line))
    paths = list(dict.fromkeys(paths))
    if not paths:
        raise AstroTFError("no input images: give IMAGE arguments or --from-list FILE")
    if shard is not None:
        index, count = shard
        paths = sorted(paths)[index::count]  # sorted: every shard sees the same order
    return paths


class _Manifest:
    """JSON lines, one per input, appended and flushed at once (a crash loses at most one line)."""

    def __init__(self, path: Path | None):
        self.fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, **record) -> None:
        if self.fh is not None:
            import json
            import time

            record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
            self.fh.write(json.dumps(record, default=str) + "\n")
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def _restore_and_report(data, result, restore_r, restore_sigma, report, noise_range, info=None, domain=None,
                        soft_width=None, restore_mode="input", soft_default=False):
    """Soft restore and TDR restore (both optional) and the noise-level report; returns the result
    and the lines to print. ``soft_width`` (px) turns the soft restore on; ``restore_mode`` is
    :func:`astrotf.restore.restore`'s ``mode``. A soft restore that is on by default
    (``soft_default``, not asked for) is skipped with a line saying why when the input's noise
    level cannot be measured; one that was asked for fails the image.

    Without ``noise_range``: [-20, 20] for magnetograms (the TDR paper's range, in G), else the
    input's sigma-clipped background ± 5 sigma, the same range for input and output.
    """
    import dataclasses

    import numpy as np

    from astrotf.checks import check_restore_threshold
    from astrotf.metrics import background_noise, noise_level
    from astrotf.restore import restore, restore_threshold, soft_restore

    lines = []
    needs_sigma = report or restore_sigma is not None or soft_width is not None

    def sigma(image, what):
        try:
            return noise_level(image, tuple(noise_range)).sigma
        except ValueError as err:
            raise AstroTFError(f"noise level of the {what}: {err} (see --noise-range)") from None

    sigma_in, sky = None, None
    if needs_sigma:
        try:
            if noise_range is None:
                if domain == "magnetogram":
                    noise_range = MAGNETOGRAM_NOISE_RANGE_G
                else:
                    try:
                        sky = background_noise(data)
                    except ValueError as err:
                        raise AstroTFError(f"noise level of the input: {err} (see --noise-range)") from None
                    noise_range = (sky.median - 5 * sky.sigma, sky.median + 5 * sky.sigma)
            sigma_in = sigma(data, "input")
            if soft_width is not None and not sigma_in > 0:
                raise AstroTFError(f"the input's noise level is {sigma_in:g} (see --noise-range)")
        except AstroTFError as err:
            if not (soft_default and not report and restore_sigma is None):
                raise
            # only the default soft restore needed the noise level: skip it rather than fail the image
            soft_width = None
            lines.append(f"soft restore skipped: {err}; --no-soft-restore turns it off")
    denoised_sigma = sigma(result, "denoised output") if report else None
    if soft_width is not None:
        soft = soft_restore(result, data, sigma_in, soft_width)
        finite = np.isfinite(data) & np.isfinite(soft.image)
        mostly_input = float((soft.gain[finite] > 0.5).mean()) if finite.any() else 0.0
        result = soft.image
        lines.append(f"soft restore (noise level {sigma_in:.4g}, window {soft_width:g} px): mean weight of the "
                     f"input {soft.mean_gain:.3f}; {100 * mostly_input:.2f} % of the pixels nearer the input")
    if report:
        line = (f"noise level (Gaussian fit in [{noise_range[0]:g}, {noise_range[1]:g}]): input {sigma_in:.4g}, "
                f"denoised {denoised_sigma:.4g}, ratio {denoised_sigma / sigma_in:.3f}")
        if soft_width is not None:
            sigma_soft = sigma(result, "soft-restored output")
            line += f"; after soft restore {sigma_soft:.4g}, ratio {sigma_soft / sigma_in:.3f}"
        lines.append(line)
    if restore_r is not None or restore_sigma is not None:
        threshold = (restore_threshold(data, threshold=restore_r) if restore_r is not None
                     else restore_sigma * sigma_in)
        check_restore_threshold(threshold, info.step if info is not None else None)
        restored = restore(result, data, threshold, restore_mode)
        step = info.step if info is not None else None
        if step:
            # integer output (FITS BSCALE/BZERO, 8/16-bit TIFF/PNG) is quantised when written: quantise
            # first, so that rounding cannot push a pixel past R. A pixel that rounding would push past R
            # goes to the grid value next to it on the input's side (the input is on the grid)
            fits_out = info.format == "fits"
            step = info.extra["bscale"] if fits_out else step
            zero = info.extra["bzero"] if fits_out else 0.0
            image = restored.image.astype(np.float64)
            grid = np.rint((image - zero) / step) * step + zero
            if not fits_out:
                grid = np.clip(grid, 0.0, 1.0)  # as the writer does; towards the input, which is in [0, 1]
            with np.errstate(invalid="ignore"):
                past = np.abs(grid - data) > threshold
            grid = np.where(past, data + np.trunc((image - data) / step) * step, grid)
            again = restore(grid.astype(result.dtype), data, threshold)
            restored = dataclasses.replace(again, restored=again.restored | restored.restored, mode=restore_mode,
                                           fraction=float((again.restored | restored.restored).sum())
                                           / max(int(np.isfinite(data).sum()), 1))
        result = restored.image
        how = f"R={threshold:.4g}" + (f" ({restore_sigma:g} x noise level {sigma_in:.4g})"
                                      if restore_sigma is not None else "")
        what = "set back to their input value" if restore_mode == "input" else "moved to within R of their input value"
        lines.append(f"restore {how}, mode {restore_mode}: {100 * restored.fraction:.2f} % of the pixels {what}")
        if report:
            sigma_out = sigma(result, "restored output")
            diff = np.abs(result.astype(np.float64) - data.astype(np.float64))
            max_dev = float(np.nanmax(diff)) if np.isfinite(diff).any() else 0.0
            lines.append(f"noise level after restore: {sigma_out:.4g}, ratio {sigma_out / sigma_in:.3f}; "
                         f"max |out - in| = {max_dev:.4g} <= R")
    if report:
        lines += _kept_lines(data, result, domain, with_max=restore_r is None and restore_sigma is None, sky=sky)
    return result, lines


def _check_restore_target(target: Path, info) -> None:
    """--restore promises max |out - in| <= R in the file written: a lossy or re-quantised output breaks it."""
    from astrotf import io

    fmt = io.format_of(target) or info.format
    if fmt == "jpeg":
        raise AstroTFError(f"{target}: JPEG is lossy, so --restore's max |out - in| <= R cannot hold in it; "
                           f"write PNG or TIFF (-o NAME.png)")
    if fmt != info.format:
        raise AstroTFError(f"{target}: --restore keeps max |out - in| <= R in the input's format "
                           f"({info.format}); write the output as {info.format} too")


def _kept_lines(data, result, domain, with_max: bool = True, sky=None) -> list[str]:
    """--report: what the output kept of the input: strong-pixel slope, residual structure, largest change.
    ``sky``: the input's ``background_noise`` if it was measured already (it is slow on big frames)."""
    import numpy as np

    from astrotf.metrics import background_noise, residual_structure, strong_slope

    if domain == "magnetogram":
        origin, threshold, what = 0.0, 50.0, "|in| > 50"
    else:
        if sky is None:
            try:
                sky = background_noise(data)
            except ValueError:
                return []
        origin, threshold = sky.median, 10 * sky.sigma
        what = f"|in - background| > 10 x its noise ({threshold:.4g})"
    strong = strong_slope(data, result, threshold, origin)
    diff = np.abs(result.astype(np.float64) - data.astype(np.float64))
    max_change = float(np.nanmax(diff)) if np.isfinite(diff).any() else 0.0
    slope = (f"slope {strong.slope:.4f} over {strong.n_pixels} strong pixels ({what})" if strong.n_pixels >= 10
             else f"too few strong pixels for a slope ({what})")
    line = f"output vs input: {slope}" + (f"; max |out - in| = {max_change:.4g}" if with_max else "")
    try:
        line += f"; residual structure above 10 px {residual_structure(data - result):.2f} (1 = none)"
    except ValueError:
        pass
    return [line]


@main.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file (one input only). Default: <stem>_denoised.<ext> beside the input.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), help="Folder for the outputs.")
@click.option("--model", "model_name", metavar="NAME_OR_PATH",
              help="Shipped model name, .keras file or SavedModel folder. Default: chosen from the data.")
@click.option("--overlap", type=click.FloatRange(0.0, 0.9), default=0.25, show_default=True,
              help="Fraction of a tile shared with its neighbours; 0 = naive tiling.")
@click.option("--tile", type=click.IntRange(min=16),
              help="Tile size in px. [per frame: the multiple of 16 from 256 (or the model's training tile if "
                   "larger) up to 720 that needs the fewest network pixels]")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Tiles per model call. [as many pixels as 8 tiles of 256 px]")
@click.option("--backend", type=click.Choice(["tensorflow", "onnxruntime", "tensorrt"]), default="tensorflow",
              show_default=True, help="Engine that runs the model (onnxruntime needs the model's model.onnx, "
                                      "tensorrt an engine from `astrotf export --format tensorrt`).")
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True,
              help="Arithmetic of the network: auto = bfloat16 for stretched-data models where the hardware has "
                   "native bfloat16 (GPU, AVX512-BF16/AMX CPU; input, residual and output stay float32), "
                   "else float32. Linear-data models keep float32 unless asked.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs (never the input).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--server", metavar="HOST:PORT",
              help="Run the model on a TF Serving endpoint (gRPC port, or REST with --protocol rest); "
                   "--model names the served model. Tiling and blending stay local.")
@click.option("--protocol", type=click.Choice(["grpc", "rest"]), default="grpc", show_default=True,
              help="How to talk to --server.")
@click.option("--from-list", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Text file of input paths, one per line (for archives too large for a command line).")
@click.option("--skip-existing", is_flag=True,
              help="Skip inputs whose output exists (outputs are written atomically, so they are complete): "
                   "run the same command again after a crash to resume.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON-lines log of every input's result, timing and error, appended. "
                   "[default with --out-dir: DIR/astrotf-manifest.jsonl]")
@click.option("--shard", metavar="I/N", help="Process only the I-th of N interleaved shares of the sorted inputs "
                                               "(e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).")
@click.option("--samples", type=click.IntRange(min=1),
              help="Self2Self: ensemble members averaged (TDR eq. 4). [model's metadata: 16]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Self2Self masks and dropout.")
@click.option("--average", type=click.Choice(["dropped", "all"]), default="dropped", show_default=True,
              help="Self2Self: average each pixel over the members that dropped it, or over all (eq. 4).")
@click.option("--restore", "restore_r", type=click.FloatRange(min=0), metavar="R",
              help="Set back every pixel that moved by more than R (data units): max |out - in| <= R.")
@click.option("--restore-sigma", type=click.FloatRange(min=0), metavar="K",
              help="As --restore with R = K x the input's noise level (Gaussian fit, see --noise-range).")
@click.option("--restore-mode", type=click.Choice(["input", "clip"]), default="input", show_default=True,
              help="--restore: set an abnormal pixel back to its input value (TDR), or clip its change to "
                   "[-R, R] (input ± R: the same bound, keeping the change that is allowed).")
@click.option("--soft-restore/--no-soft-restore", default=None,
              help="Give each pixel back the part of its change that is more than noise (local Wiener "
                   "shrinkage of input - denoised; applied before --restore). Keeps strong structure the "
                   "network cut, e.g. sunspot peaks; every pixel stays between its denoised and input values. "
                   "[on for Self2Self models, which never see the pixel they predict; off for others]")
@click.option("--soft-width", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              metavar="PX", help="--soft-restore: Gaussian sigma (px) of the window measuring the residual's power.")
@click.option("--report", is_flag=True, help="Print the noise level before and after (and the restored fraction).")
@click.option("--noise-range", type=(float, float), default=None, metavar="LOW HIGH",
              help="Value range whose histogram gives the noise level (--report, --restore-sigma, "
                   "--soft-restore). "
                   "[-20 20 for magnetograms (G), else the input's background ± 5 sigma]")
@friendly_errors
def infer(images, output, out_dir, model_name, overlap, tile, batch_size, backend, precision, force, quiet,
          server, protocol, from_list, skip_existing, manifest, shard, samples, seed, average, restore_r,
          restore_sigma, restore_mode, soft_restore, soft_width, report, noise_range):
    """Denoise IMAGES with overlapping, Gaussian-feathered tiles.

    The result keeps the input's format, dtype, channel layout and header (plus a
    HISTORY card). Over many files, a bad one is reported and the rest go on; the
    exit status is then 1.
    """
    images = _collect_inputs(images, from_list, _parse_shard(shard))
    if output is not None and len(images) > 1:
        raise AstroTFError("-o/--output takes one input image; use --out-dir for several")
    if output is not None and out_dir is not None:
        raise AstroTFError("use either -o/--output or --out-dir, not both")
    if skip_existing and force:
        raise AstroTFError("use either --skip-existing or --force, not both")
    if restore_r is not None and restore_sigma is not None:
        raise AstroTFError("use either --restore or --restore-sigma, not both")
    if restore_mode != "input" and restore_r is None and restore_sigma is None:
        raise AstroTFError(f"--restore-mode {restore_mode} needs --restore R or --restore-sigma K")
    if noise_range is not None and not noise_range[0] < noise_range[1]:
        raise AstroTFError(f"--noise-range: LOW must be below HIGH. Received: {noise_range[0]} {noise_range[1]}")
    import time

    from astrotf import io
    from astrotf.checks import check_restore_threshold, unit_warning
    from astrotf.infer import DEFAULT_MODELS, denoise_image, guess_domain, load_model
    from astrotf.quantise import resolve_step

    if manifest is None and out_dir is not None:
        manifest = out_dir / "astrotf-manifest.jsonl"
    log_file = _Manifest(manifest)
    models: dict = {}
    failures, skipped = [], 0
    for number, image in enumerate(images, 1):
        started = time.perf_counter()
        target = None
        try:
            target = _output_path(image, output, out_dir)
            if target.resolve() == image.resolve():
                raise AstroTFError(f"{target}: output would overwrite the input")
            if target.exists() and skip_existing:
                skipped += 1
                log_file.write(input=image, output=target, status="skipped")
                continue
            if target.exists() and not force:
                raise AstroTFError(f"{target}: output exists; pass --force to overwrite it")
            data, info = io.read_image(image)
            if restore_r is not None or restore_sigma is not None:
                _check_restore_target(target, info)
            if restore_r is not None:
                check_restore_threshold(restore_r, info.step)
            domain = guess_domain(data, info)
            name = model_name or DEFAULT_MODELS[domain]
            if name not in models:
                if server:
                    from astrotf.serving import connect

                    models[name] = connect(server, name, protocol)
                    models[name].metadata.setdefault("data_domain", domain)  # no local metadata.json
                else:
                    models[name] = load_model(name, backend=backend, precision=precision)
            model = models[name]
            if (units := unit_warning(info.header, model.metadata, model.name)) is not None:
                click.echo(f"Warning: {image}: {units}", err=True)
            soft = soft_restore if soft_restore is not None else getattr(model, "sample", None) is not None
            if samples is not None or getattr(model, "sample", None) is not None:
                from astrotf.infer import with_ensemble

                # a fresh, seeded ensemble per image: the result does not depend on the file order
                default_samples = model.metadata.get("ensemble", {}).get("samples", SELF2SELF_SAMPLES)
                model = with_ensemble(model, samples or int(default_samples), seed, average)
            if model_name is None:
                click.echo(f"{image}: {domain} {info.channels}-channel data -> model {model.name} "
                           f"({model.precision})", err=True)
            options = model.tile_options(data.shape, overlap, tile, batch_size)
            # integer samples, or float ones on a grid: dithered for a model that scales tiles by their MAD
            step = resolve_step(data, info.step if info.step is not None else "auto") if model.normalises_tiles \
                else None
            if quiet:
                result = denoise_image(data, model, options, step=step)
            else:
                with click.progressbar(length=1, label=str(image.name), file=sys.stderr) as bar:
                    def progress(done, total, bar=bar):
                        bar.length = total
                        bar.update(done - bar.pos)

                    result = denoise_image(data, model, options, progress, step=step)
            history = [f"astrotf {__version__} infer: model={model.name} v{model.metadata.get('version', '?')}",
                       f"astrotf tile={options.tile} overlap={options.overlap} precision={model.precision}",
                       f"astrotf input: {image.name}"]
            if step is not None:
                history.append(f"astrotf quantised input: dithered by one step ({step:g}, seeded) for the "
                               f"network's tile normalisation")
            if getattr(model, "sample", None) is not None:
                history.append(f"astrotf Self2Self ensemble: samples={samples or model.metadata['ensemble']['samples']}"
                               f" seed={seed} average={average}")
            if restore_r is not None or restore_sigma is not None or report or soft:
                result, lines = _restore_and_report(data, result, restore_r, restore_sigma, report, noise_range,
                                                    info, domain, soft_width if soft else None, restore_mode,
                                                    soft_default=soft_restore is None)
                history += [f"astrotf {line}" for line in lines if line.startswith(("restore", "soft restore"))]
                for line in lines:
                    click.echo(f"{image.name}: {line}")
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
            io.write_image(target, result, info, history=history, overwrite=force)
            seconds = time.perf_counter() - started
            log_file.write(input=image, output=target, status="ok", seconds=round(seconds, 3),
                           model=model.name, shape=list(data.shape))
            counter = f"[{number}/{len(images)}] " if len(images) > 1 else ""
            click.echo(f"{counter}{image} -> {target} ({seconds:.1f} s)", err=True)
        except AstroTFError as err:
            failures.append(str(err))
            log_file.write(input=image, output=target, status="error", error=str(err),
                           seconds=round(time.perf_counter() - started, 3))
            click.echo(f"Error: {err}", err=True)
    log_file.close()
    if skipped:
        click.echo(f"{skipped} of {len(images)} image(s) skipped: output already there", err=True)
    if failures:
        if len(images) > 1:
            click.echo(f"{len(failures)} of {len(images)} image(s) failed:", err=True)
            for line in failures:
                click.echo(f"  {line}", err=True)
        sys.exit(1 if len(failures) < len(images) or len(images) > 1 else 2)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder, e.g. saved_models/NAME (SavedModel goes to NAME/VERSION/).")
@click.option("--version", "version", type=click.IntRange(min=1), default=1, show_default=True,
              help="TF Serving model version.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--credits", "credits_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSON file with data credits and licences to record in metadata.json.")
@click.option("--format", "formats", type=click.Choice(["savedmodel", "onnx", "tensorrt"]), multiple=True,
              help="Also write model.onnx with 'onnx', and a TensorRT engine for this machine's GPU with "
                   "'tensorrt' (repeatable). The SavedModel is always written.")
@click.option("--trt-precision", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True,
              help="TensorRT: FP16 network body with the data path in FP32, or FP32 throughout.")
@click.option("--trt-tile", type=click.IntRange(min=16), default=256, show_default=True,
              help="TensorRT: tile size the engine is tuned for (it takes 16 px up to twice this).")
@click.option("--trt-max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="TensorRT: largest batch of tiles the engine takes (tuned for 8, or this if smaller).")
@click.option("--force", is_flag=True, help="Replace an existing export.")
@friendly_errors
def export(run_dir, out, version, checkpoint, credits_file, formats, trt_precision, trt_tile, trt_max_batch,
           force):
    """Export a training run as a TF Serving SavedModel with metadata.json (ONNX, TensorRT).

    RUN_DIR may also be an exported model folder (a shipped model): it is copied to --out
    with what --format names rebuilt from its model.keras (savedmodel, onnx) or added
    (tensorrt: an engine for this machine's GPU).
    """
    import json

    from astrotf.export import export_model_folder, export_run
    from astrotf.tensorrt_engine import EngineProfile

    credits = json.loads(credits_file.read_text()) if credits_file else None
    profile = None
    if "tensorrt" in formats:
        profile = {"min_tile": 16, "opt_tile": trt_tile, "max_tile": 2 * trt_tile,
                   "opt_batch": min(8, trt_max_batch), "max_batch": trt_max_batch}
    if not (run_dir / "run.json").is_file() and (run_dir / "metadata.json").is_file():
        if not formats:
            raise AstroTFError(f"{run_dir}: an exported model folder, not a training run; name what to rebuild "
                               "from its model.keras with --format (savedmodel, onnx, tensorrt)")
        channels = int(json.loads((run_dir / "metadata.json").read_text()).get("channels", 3))
        path = export_model_folder(run_dir, out, formats=tuple(dict.fromkeys(formats)), force=force,
                                   trt_profile=EngineProfile(channels, **profile) if profile else None,
                                   trt_fp16=trt_precision == "fp16")
        click.echo(f"{run_dir} -> {path} ({', '.join(dict.fromkeys(formats))} rebuilt)")
        return
    formats = tuple(dict.fromkeys(("savedmodel",) + formats))
    if profile is not None:
        from astrotf.train import load_run

        channels = int(load_run(run_dir)["recipe"].get("model", {}).get("channels", 1))
        profile = EngineProfile(channels, **profile)
    path = export_run(run_dir, out, version=version, checkpoint=checkpoint, credits=credits, force=force,
                      formats=formats, trt_profile=profile, trt_fp16=trt_precision == "fp16")
    extra = "".join(f" + {name}" for fmt, name in (("onnx", "model.onnx"), ("tensorrt", "TensorRT engine"))
                    if fmt in formats)
    click.echo(f"exported {run_dir} -> {path} (serving_default: image -> denoised){extra}")


@main.command()
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--input", "noisy", required=True, type=click.Path(path_type=Path),
              help="The noisy image OUTPUT was made from.")
@click.option("--reference", type=click.Path(path_type=Path),
              help="Clean image (long exposure, noise-free simulation): PSNR, SSIM, KL; its detections "
                   "are the star list when --stars is not given.")
@click.option("--stars", type=click.Path(path_type=Path),
              help="Truth catalogue: CSV with columns x, y, flux (0-based pixels; optional kind, fwhm), "
                   "or a FITS file with a TRUTH table (astrotf's simulated fields).")
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Detection threshold in units of the INPUT's background sigma (the same absolute "
                   "value for every image).")
@click.option("--radius", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="Matching radius in px.")
@click.option("--aperture", type=click.FloatRange(min=0, min_open=True),
              help="Aperture radius in px for fluxes and SNR. [2.5 x the catalogue's FWHM, else 5]")
@click.option("--noise-range", type=(float, float), metavar="LOW HIGH",
              help="Value range of the Gaussian histogram fit, e.g. -20 20 for magnetograms in G. "
                   "[input background ± 5 sigma]")
@click.option("--data-range", type=click.FloatRange(min=0, min_open=True),
              help="Data range of PSNR/SSIM (1 for images in [0, 1]). [max - min of the reference]")
@click.option("--strong", type=click.FloatRange(min=0), metavar="LEVEL",
              help="Pixels more than LEVEL from the input's background are strong: the slope of output vs input "
                   "is fitted over them (50 for magnetograms in G). [10 x the input's background sigma]")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every score to this JSON file.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write residual map, histograms, power spectra and flux-error plots (PNG) here.")
@friendly_errors
def evaluate(output, noisy, reference, stars, threshold, radius, aperture, noise_range, data_range, strong,
             json_path, plots_dir):
    """Score a denoised OUTPUT against its noisy --input: noise, changes, stars.

    Prints a table (input | output | reference columns): background noise (sigma-clipped MAD)
    and Gaussian-fit noise level, max change, correlation and slope (over all pixels and over the
    strong ones), structure in the residual above 10 px, where the power spectra
    start to differ, PSNR/SSIM/KL against --reference, and star recovery at a FIXED threshold
    tied to the input's noise (TPR, false positives, precision, F1, flux error) and at each
    image's own RMS, with the SNR gain (Astro U-net eq. 28).
    """
    import json

    from astrotf import io
    from astrotf.evaluate import EvaluationOptions, format_table, load_catalogue, write_plots
    from astrotf.evaluate import evaluate as run_evaluation
    from astrotf.metrics import moffat_enclosed_fraction

    catalogue, psf = load_catalogue(stars) if stars is not None else (None, {})
    data = {"output": io.read_image(output)[0], "input": io.read_image(noisy)[0]}
    if reference is not None:
        data["reference"] = io.read_image(reference)[0]
    if aperture is None:
        aperture = 2.5 * psf["fwhm"] if "fwhm" in psf else 5.0
    correction = 1.0
    if "fwhm" in psf and "beta" in psf and psf["beta"] > 1:
        correction = moffat_enclosed_fraction(aperture, psf["fwhm"], psf["beta"])
    try:
        options = EvaluationOptions(threshold_sigma=threshold, radius=radius, aperture=aperture,
                                    aperture_correction=correction, noise_range=noise_range,
                                    data_range=data_range, strong=strong)
    except ValueError as err:
        raise AstroTFError(str(err)) from err
    result = run_evaluation(data["output"], data["input"], data.get("reference"), catalogue, options)
    if stars or reference:
        notes = [f"stars: {stars}" if stars else "stars: detections on the reference",
                 f"threshold {threshold:g} x input sigma, match radius {radius:g} px, aperture {aperture:.3g} px"
                 + (f" (Moffat aperture correction {correction:.3f})" if correction != 1.0 else "")]
    else:
        notes = ["no star recovery: give --stars or --reference"]
    click.echo(format_table(result))
    click.echo("; ".join(notes))
    if json_path is not None:
        record = {"output": str(output), "input": str(noisy), "reference": str(reference) if reference else None,
                  "stars": str(stars) if stars else None, **result.to_dict()}
        json_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        click.echo(f"wrote {json_path}", err=True)
    if plots_dir is not None:
        for path in write_plots(result, plots_dir):
            click.echo(f"wrote {path}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
