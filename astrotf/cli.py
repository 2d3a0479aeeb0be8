"""The ``astrotf`` command line (click).

Arguments are validated before TensorFlow is imported, so a typo answers in a
fraction of a second with a one-line error naming the option or file, and every
:class:`~astrotf.errors.AstroTFError` from deeper down is shown the same way
(exit status 2) instead of a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from pathlib import Path

import click

from astrotf import __version__
from astrotf.errors import AstroTFError

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
    """The recipe file of ``--config`` (a path or a shipped recipe's name); TensorFlow-free."""
    from astrotf.config import resolve_recipe_path

    return resolve_recipe_path(config)


@train.command("resunet")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of training images: DIR/clean (+ DIR/noisy with --paired), or images directly.")
@click.option("--paired/--clean-only", "paired", default=None,
              help="Aligned DIR/noisy + DIR/clean pairs, or clean images with synthetic noise. [recipe]")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory, e.g. runs/NAME (checkpoints, logs, previews).")
@click.option("--config", "config", metavar="TOML",
              help="Recipe: a pipelines/*.toml file or its name (resunet-rgb, resunet-mono-linear). "
                   "[default: resunet-rgb]")
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
@click.option("--ema", type=click.FloatRange(min=0, max=1, max_open=True),
              help="Decay of a moving average of the weights, validated and saved instead of them "
                   "(0.999: about the last thousand steps; 0: none). [recipe: 0]")
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
                  ema, precision, resume, init, strategy, quiet):
    """Train an image-to-image denoiser: the AstroPics ResUNet, or the recipe's [model] (nafnet).

    Stop with Ctrl-C at any time: the run is checkpointed and continues with --resume.
    """
    from astrotf.config import DEFAULT_RESUNET_RECIPE, load_recipe, override, recipe_from_dict

    # the recipe is validated before TensorFlow is imported: a typo answers at once
    recipe_path = _resolve_recipe(config)
    if resume and recipe_path is None:
        from astrotf.runs import load_run

        # continue with the run's own settings; options given now still override them
        recipe = recipe_from_dict(load_run(out)["recipe"], str(out / "run.json"))
    else:
        recipe = load_recipe(recipe_path or _resolve_recipe(DEFAULT_RESUNET_RECIPE))
    mode = None if paired is None else ("paired" if paired else "clean-only")
    recipe = override(
        recipe, model__space_to_depth=None if space_to_depth is None else int(space_to_depth),
        data__mode=mode, data__batch_size=batch_size, data__tile=tile, data__seed=seed,
        data__noise="none" if paired else None,
        train__epochs=epochs, train__steps_per_epoch=steps_per_epoch, train__lr=lr, train__seed=seed,
        train__ema=ema, train__precision=precision,
    )
    if not resume and data is None:
        raise AstroTFError("--data is required to start a training run (or pass --resume)")
    if data is not None and not data.is_dir():
        raise AstroTFError(f"{data}: data folder does not exist (--data)")

    if init is not None and not Path(init).exists():
        from astrotf.backends import resolve_model_path

        init = resolve_model_path(init)  # a shipped model's name

    from astrotf.runs import TrainingInterrupted
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
    from astrotf.config import Self2SelfRecipe, load_self2self_recipe, override, self2self_recipe_from_dict

    if not resume and image is None:
        raise AstroTFError("IMAGE is required to start a Self2Self run (or pass --resume)")
    if image is not None and not image.is_file():
        raise AstroTFError(f"{image}: no such file (IMAGE)")
    if resume and init is not None:
        raise AstroTFError("--init starts a new run; it cannot be combined with --resume")
    recipe_path = _resolve_recipe(config)
    if resume and recipe_path is None:
        from astrotf.runs import load_run

        recipe = self2self_recipe_from_dict(load_run(out)["recipe"], str(out / "run.json"))
    else:
        recipe = load_self2self_recipe(recipe_path) if recipe_path else Self2SelfRecipe()
    recipe = override(recipe, train__steps=steps, train__keep_prob=keep_prob, train__mask_block=mask_block,
                      train__patch=patch, train__batch_size=batch_size, train__lr=lr, train__seed=seed)

    from astrotf.runs import TrainingInterrupted
    from astrotf.train import train_self2self

    try:
        state = train_self2self(recipe, image, out, init=init, resume=resume, verbose=2 if quiet else 1)
    except TrainingInterrupted as stop:
        click.echo(f"Interrupted: {stop}", err=True)
        sys.exit(130)
    click.echo(f"Finished {state['step']} steps in {state['wall_time_s']:.0f} s; model: {Path(out)} "
               f"(denoise with: astrotf infer IMAGE --model {out}; export with: astrotf export {out} --out ...)")


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
    from astrotf import batch
    from astrotf.restore import RestoreOptions

    images = batch.collect_inputs(images, from_list, batch.parse_shard(shard))
    batch.check_outputs(len(images), output, out_dir, skip_existing, force)
    restore = RestoreOptions(threshold=restore_r, sigmas=restore_sigma, mode=restore_mode, soft=soft_restore,
                             soft_width=soft_width, report=report, noise_range=noise_range)
    options = batch.InferOptions(model=model_name, overlap=overlap, tile=tile, batch_size=batch_size, backend=backend,
                                 precision=precision, server=server, protocol=protocol, samples=samples, seed=seed,
                                 average=average, restore=restore)
    result = batch.run(images, options, output=output, out_dir=out_dir, force=force, skip_existing=skip_existing,
                       manifest=manifest, echo=click.echo, progress=None if quiet else _progress_bar)
    if result.exit_status:
        sys.exit(result.exit_status)


@contextlib.contextmanager
def _progress_bar(label: str):
    """A click progress bar on stderr, as ``update(done, total)`` for :func:`astrotf.batch.run`."""
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:
        def update(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        yield update


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
@click.option("--force", is_flag=True, help="Replace this --version of an existing export (the others are kept).")
@friendly_errors
def export(run_dir, out, version, checkpoint, credits_file, formats, trt_precision, trt_tile, trt_max_batch,
           force):
    """Export a training run as a TF Serving SavedModel with metadata.json (ONNX, TensorRT).

    RUN_DIR may also be an exported model folder (a shipped model): it is copied to --out
    with what --format names rebuilt from its model.keras (savedmodel, onnx) or added
    (tensorrt: an engine for this machine's GPU).
    """
    import json

    from astrotf.export import export_model

    credits = json.loads(credits_file.read_text()) if credits_file else None
    _, summary = export_model(run_dir, out, formats=formats, version=version, checkpoint=checkpoint, credits=credits,
                              force=force, trt_fp16=trt_precision == "fp16", trt_tile=trt_tile,
                              trt_max_batch=trt_max_batch)
    click.echo(summary)


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
    from astrotf.evaluate import evaluate_files, format_table, write_json, write_plots

    result, notes = evaluate_files(output, noisy, reference, stars, threshold=threshold, radius=radius,
                                   aperture=aperture, noise_range=noise_range, data_range=data_range,
                                   strong=strong)
    click.echo(format_table(result))
    click.echo(notes)
    if json_path is not None:
        click.echo(f"wrote {write_json(result, json_path, output, noisy, reference, stars)}", err=True)
    if plots_dir is not None:
        for path in write_plots(result, plots_dir):
            click.echo(f"wrote {path}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
